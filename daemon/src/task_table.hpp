// Every task the daemon owns lives in one slab, addressed by a handle = generation << 32 | slot.
// A handle outlives its task safely: once the slot is reused the generation differs, so stale
// handles (in a queue after a cancel, in a late event from a dead worker) simply miss.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "names.hpp"

namespace zexecd {

// More retries than this count as this many (PROTOCOL.md, task options).
inline constexpr std::uint32_t kMaxRetries = 65535;

enum class TaskState : std::uint8_t { free, queued, assigned, running, retry_wait };

struct Task {
  std::uint64_t client_id = 0;
  std::uint64_t client_task_id = 0;
  TaskName* name = nullptr;  // interned (names.hpp); name->text is the name
  std::string args;
  // Fields are ordered and sized to keep a queued task small (bench/RESULTS.md, memory).
  std::uint32_t timeout_ms = 0;
  std::uint32_t retry_backoff_ms = 0;
  std::uint32_t attempts = 1;
  std::uint32_t generation = 1;                  // never 0, so no live task has handle 0 ("none")
  std::int32_t worker = -1;                      // slot of the worker holding it (assigned/running)
  std::int32_t cancel_req = -1;                  // pending cancel request waiting on a revoke
  std::uint16_t retries = 0, crash_retries = 0;  // the client's options, at most kMaxRetries
  std::uint16_t errors_seen = 0, crashes_seen = 0;
  std::int16_t pool = -1;  // the pool it is queued for or runs in; -1 = not routed yet
  TaskState state = TaskState::free;
  bool revoking = false;             // a revoke for it is in flight
  std::uint32_t batch = UINT32_MAX;  // its submit's record in the journal (task_log.hpp); none
};

class TaskTable {
 public:
  using Handle = std::uint64_t;

  // A new task of that name, in state queued.
  Handle alloc(std::string_view name) {
    std::uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      slot = static_cast<std::uint32_t>(tasks_.size());
      tasks_.emplace_back();
    }
    Task& t = tasks_[slot];
    t.state = TaskState::queued;
    t.name = names_.intern(name);
    ++live_;
    return (static_cast<Handle>(t.generation) << 32) | slot;
  }

  // The live task behind `h`, or nullptr if it finished (or never existed).
  Task* get(Handle h) {
    std::uint32_t slot = static_cast<std::uint32_t>(h);
    if (slot >= tasks_.size()) return nullptr;
    Task& t = tasks_[slot];
    if (t.state == TaskState::free || t.generation != static_cast<std::uint32_t>(h >> 32)) return nullptr;
    return &t;
  }

  void release(Handle h) {
    Task* t = get(h);
    if (!t) return;
    std::uint32_t gen = t->generation + 1 == 0 ? 1 : t->generation + 1;
    names_.release(t->name);
    *t = Task{};
    t->generation = gen;
    free_.push_back(static_cast<std::uint32_t>(h));
    --live_;
  }

  std::size_t live() const { return live_; }
  std::size_t names() const { return names_.size(); }

 private:
  std::vector<Task> tasks_;
  std::vector<std::uint32_t> free_;
  std::size_t live_ = 0;
  NameTable names_;
};

}  // namespace zexecd
