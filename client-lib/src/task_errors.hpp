// Building exceptions from wire outcomes (internal).
#pragma once

#include <exception>
#include <string>

namespace zexec::detail {

// The TaskError subclass matching a remote error type (docs/PROTOCOL.md §7), else TaskError.
std::exception_ptr make_task_error(const std::string& task_name, const std::string& type,
                                   const std::string& message);

}  // namespace zexec::detail
