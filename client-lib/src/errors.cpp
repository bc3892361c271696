#include "zexec/errors.hpp"

#include <cxxabi.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>

#include "task_errors.hpp"
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

std::exception_ptr make_task_error(const std::string& task_name, const std::string& type,
                                   const std::string& message) {
  // Error type names are the wire contract of docs/PROTOCOL.md §7.
  if (type == "WorkerCrashed") return std::make_exception_ptr(WorkerCrashedError(task_name, type, message));
  if (type == "TaskTimeout") return std::make_exception_ptr(TaskTimeoutError(task_name, type, message));
  return std::make_exception_ptr(TaskError(task_name, type, message));
}

std::string format_seconds(std::chrono::nanoseconds d) {
  double s = std::chrono::duration<double>(d).count();
  char buf[64];
  if (s == std::floor(s)) {
    std::snprintf(buf, sizeof buf, "%.0f s", s);
  } else {
    std::snprintf(buf, sizeof buf, "%.3f", s);
    // Trim trailing zeros: 0.250 -> 0.25.
    std::string t = buf;
    while (t.back() == '0') t.pop_back();
    return t + " s";
  }
  return buf;
}

namespace {

std::string demangle(const std::type_info& t) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(t.name(), nullptr, nullptr, &status),
                                           std::free);
  return status == 0 && p ? std::string(p.get()) : std::string(t.name());
}

const char* msgpack_kind(msgpack::type::object_type t) {
  using namespace msgpack::type;
  switch (t) {
    case NIL:
      return "nil";
    case BOOLEAN:
      return "bool";
    case POSITIVE_INTEGER:
    case NEGATIVE_INTEGER:
      return "int";
    case FLOAT32:
    case FLOAT64:
      return "float";
    case STR:
      return "str";
    case BIN:
      return "bin";
    case ARRAY:
      return "array";
    case MAP:
      return "map";
    case EXT:
      return "ext";
  }
  return "?";
}

}  // namespace

void throw_result_type_error(const std::string& task, const msgpack::object& value,
                             const std::type_info& wanted) {
  std::ostringstream shown;
  shown << value;
  std::string text = shown.str();
  if (text.size() > 200) text = text.substr(0, 200) + "...";
  throw ResultTypeError(task + ": result " + text + " (msgpack " + msgpack_kind(value.type) +
                        ") cannot be converted to " + demangle(wanted));
}

void throw_bad_result_bytes(const std::string& task, const char* why) {
  throw ResultTypeError(task + ": result is not valid msgpack (" + why + ")");
}

}  // namespace detail
}  // namespace zexec
