// Test seam: futures with no client behind them, resolved by hand. Lets tests (ours and yours)
// exercise code built on Future / as_completed / wait without a daemon.
//
//   auto f = zexec::testing::make_future("sleep");
//   zexec::testing::set_result(f, 0.25);            // or set_exception / set_running / ...
#pragma once

#include <string>

#include "zexec/export.hpp"
#include "zexec/future.hpp"
#include "zexec/pack.hpp"

namespace zexec::testing {

// A pending future owned by no client; cancel() on it succeeds while it is pending.
ZEXEC_API Future make_future(std::string task_name = "test", std::uint64_t id = 0);

// Each returns false (changing nothing) if the future was already done.
ZEXEC_API bool set_running(const Future& f);
ZEXEC_API bool set_result_bytes(const Future& f, std::string msgpack_value);
template <class T>
bool set_result(const Future& f, const T& value) {
  std::string bytes;
  detail::StringSink sink{bytes};
  msgpack::packer<detail::StringSink> pk(sink);
  pk.pack(value);
  return set_result_bytes(f, std::move(bytes));
}
ZEXEC_API bool set_exception(const Future& f, std::string type, std::string message);  // a remote task error
ZEXEC_API bool set_connection_error(const Future& f, std::string message);             // lost connection
ZEXEC_API bool set_cancelled(const Future& f);

}  // namespace zexec::testing
