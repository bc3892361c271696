// How long a blocking call may wait. Omitted (std::nullopt) means "forever"; any integral
// std::chrono duration converts implicitly (100ms, 2s, ...). Zero or negative means "do not wait".
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "zexec/export.hpp"

namespace zexec {

using Timeout = std::optional<std::chrono::nanoseconds>;

namespace detail {

using Clock = std::chrono::steady_clock;
using Deadline = std::optional<Clock::time_point>;  // nullopt = never

// One deadline for a whole call, measured from now. Absurdly long timeouts count as forever so
// that now + timeout cannot overflow.
inline Deadline deadline_from(const Timeout& timeout) {
  if (!timeout) return std::nullopt;
  if (*timeout > std::chrono::hours(24 * 365 * 100)) return std::nullopt;
  return Clock::now() + std::max(*timeout, std::chrono::nanoseconds::zero());
}

// "5 s", "0.25 s", "1.5 s": how long something waited, for error messages.
ZEXEC_API std::string format_seconds(std::chrono::nanoseconds d);

}  // namespace detail
}  // namespace zexec
