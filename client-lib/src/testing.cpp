#include "zexec/testing.hpp"

#include "future_state.hpp"

namespace zexec::testing {

namespace {
detail::FutureState& state_of(const Future& f) {
  const auto& s = detail::FutureAccess::state(f);
  if (!s) throw Error("zexec::testing: empty zexec::Future");
  return *s;
}
}  // namespace

Future make_future(std::string task_name, std::uint64_t id) {
  return detail::FutureAccess::make(std::make_shared<detail::FutureState>(id, std::move(task_name)));
}

bool set_running(const Future& f) {
  return state_of(f).set_running();
}
bool set_result_bytes(const Future& f, std::string msgpack_value) {
  return state_of(f).set_value(std::move(msgpack_value));
}
bool set_exception(const Future& f, std::string type, std::string message) {
  return state_of(f).set_error(detail::Failure::task, std::move(type), std::move(message));
}
bool set_connection_error(const Future& f, std::string message) {
  return state_of(f).set_error(detail::Failure::connection, "ConnectionError", std::move(message));
}
bool set_cancelled(const Future& f) {
  return state_of(f).set_cancelled();
}

}  // namespace zexec::testing
