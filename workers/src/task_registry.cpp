#include "task_registry.hpp"

#include <cxxabi.h>

#include <exception>
#include <typeinfo>

namespace zexec::worker_internal {
namespace {

// A result must fit in one worker_events frame, with room for the envelope around it.
constexpr std::size_t kMaxResultBytes = static_cast<std::size_t>(proto::kMaxMessageBytes) - (64 << 10);

// Receivers refuse str fields over 1 MiB (protocol decode limits), which would lose the whole
// batch; an error text needs far less anyway.
constexpr std::size_t kMaxErrorTextBytes = 64 << 10;

std::string truncated(std::string s) {
  if (s.size() <= kMaxErrorTextBytes) return s;
  std::size_t cut = kMaxErrorTextBytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // keep UTF-8 whole
  s.resize(cut);
  return s + "... (truncated)";
}

proto::Event error_event(std::uint64_t id, std::string type, std::string message) {
  proto::Event e;
  e.task_id = id;
  e.kind = proto::Outcome::error;
  e.error_type = truncated(std::move(type));
  e.error_message = truncated(std::move(message));
  return e;
}

}  // namespace

void TaskRegistry::add(std::string name, Worker::RawTask task) {
  if (name.empty()) throw WorkerError("a task name must not be empty");
  if (!task) throw WorkerError("task '" + name + "': empty function");
  if (tasks_.count(name)) throw WorkerError("task '" + name + "' is already registered");
  names_.push_back(name);
  tasks_.emplace(std::move(name), std::move(task));
}

proto::Event TaskRegistry::run(const proto::TaskSpec& task) const {
  if (!last_ || last_->first != task.name) {
    auto it = tasks_.find(task.name);
    if (it == tasks_.end()) return error_event(task.id, "UnknownTask", "unknown task '" + task.name + "'");
    last_ = &*it;
  }
  try {
    proto::Event e;
    e.task_id = task.id;
    e.kind = proto::Outcome::ok;
    e.value = last_->second(task.args);
    if (e.value.size() > kMaxResultBytes)
      return error_event(task.id, "ResultTooLarge",
                         task.name + ": result of " + std::to_string(e.value.size()) + " bytes exceeds the " +
                             std::to_string(kMaxResultBytes) + " bytes a message can carry");
    return e;
  } catch (const BadArguments& e) {
    return error_event(task.id, "BadArguments", e.what());
  } catch (const std::exception& e) {
    // The dynamic type, so a task throwing std::invalid_argument is reported as such.
    return error_event(task.id, detail::demangled_name(typeid(e)), e.what());
  } catch (...) {
    // Not a std::exception: still say what was thrown (e.g. "int") if the ABI can tell us.
    const std::type_info* thrown = abi::__cxa_current_exception_type();
    return error_event(task.id, "unknown",
                       "exception of type " + (thrown ? detail::demangled_name(*thrown) : std::string("?")));
  }
}

}  // namespace zexec::worker_internal
