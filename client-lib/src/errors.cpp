#include "zexec/errors.hpp"

#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string_view>
#include <utility>

#include "task_errors.hpp"
#include "zexec/msgpack_kind.hpp"
#include "zexec/pack.hpp"
#include "zexec/timeout.hpp"

namespace zexec {

TaskError::TaskError(std::string task_name, std::string type, std::string message)
    : Error(task_name + ": " + type + ": " + message),
      task_name_(std::move(task_name)),
      type_(std::move(type)),
      message_(std::move(message)) {}

void throw_task_error(const std::string& task_name, const std::string& type, const std::string& message) {
  std::rethrow_exception(detail::make_task_error(task_name, type, message));
}

namespace detail {

namespace {

template <class E>
std::exception_ptr make(const std::string& task_name, const std::string& type, const std::string& message) {
  return std::make_exception_ptr(E(task_name, type, message));
}

}  // namespace

std::exception_ptr make_task_error(const std::string& task_name, const std::string& type,
                                   const std::string& message) {
  // Error type names are the wire contract of docs/PROTOCOL.md §7.
  using Make = std::exception_ptr (*)(const std::string&, const std::string&, const std::string&);
  static const std::pair<std::string_view, Make> by_type[] = {
      {"UnknownTask", make<UnknownTaskError>},       {"BadArguments", make<BadArgumentsError>},
      {"WorkerCrashed", make<WorkerCrashedError>},   {"TaskTimeout", make<TaskTimeoutError>},
      {"ShuttingDown", make<ShuttingDownError>},     {"Quarantined", make<QuarantinedError>},
      {"QueueFull", make<QueueFullError>},           {"WorkerUnavailable", make<WorkerUnavailableError>},
      {"ResultTooLarge", make<ResultTooLargeError>}, {"UnencodableResult", make<UnencodableResultError>},
      {"JournalFull", make<JournalFullError>},       {"JournalFailed", make<JournalFailedError>},
  };
  for (const auto& [name, make_one] : by_type)
    if (type == name) return make_one(task_name, type, message);
  return make<TaskError>(task_name, type, message);
}

std::string format_seconds(std::chrono::nanoseconds d) {
  // Millisecond precision, trailing zeros and a bare point trimmed: "5 s", "0.5 s", "0.25 s".
  // (Trimming zeros alone turned 5.0004 into "5. s".)
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", std::chrono::duration<double>(d).count());
  std::string t = buf;
  while (t.back() == '0') t.pop_back();
  if (t.back() == '.') t.pop_back();
  if (t == "-0") t = "0";
  return t + " s";
}

namespace {

std::string demangle(const std::type_info& t) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(t.name(), nullptr, nullptr, &status),
                                           std::free);
  return status == 0 && p ? std::string(p.get()) : std::string(t.name());
}

}  // namespace

void throw_result_type_error(const std::string& task, const msgpack::object& value,
                             const std::type_info& wanted) {
  std::ostringstream shown;
  shown << value;
  std::string text = shown.str();
  if (text.size() > 200) text = text.substr(0, 200) + "...";
  throw ResultTypeError(task + ": result " + text + " (msgpack " + zexec::proto::kind_name(value.type) +
                        ") cannot be converted to " + demangle(wanted));
}

void throw_bad_result_bytes(const std::string& task, const char* why) {
  throw ResultTypeError(task + ": result is not valid msgpack (" + why + ")");
}

}  // namespace detail
}  // namespace zexec
