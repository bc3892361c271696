// Worker diagnostics go to stderr, which zexecd captures with the worker's output.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <string>

namespace zexec::worker_internal {

inline void log_warning(const std::string& message) {
  std::fprintf(stderr, "zexec-worker[%d]: %s\n", static_cast<int>(::getpid()), message.c_str());
  std::fflush(stderr);
}

}  // namespace zexec::worker_internal
