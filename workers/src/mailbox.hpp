// The hand-off between the executor (the thread in Worker::run, running tasks) and the I/O
// thread (owning the ZeroMQ sockets). Everything shared between the two lives here, behind one
// mutex; the executor blocks on a condition variable, the I/O thread on an eventfd it polls next
// to its sockets.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "zexec/protocol.hpp"

namespace zexec::worker_internal {

// Events on their way to the daemon, encoded as they happen: the I/O thread sends a batch as
// one worker_events frame without moving or re-encoding each event (which cost more than
// running a no-op task, bench/RESULTS.md). `busy_us` is the run time of exactly the tasks
// whose final events are in the batch.
struct EventBatch {
  // Room for the frame's header in front of the events, so the frame is the batch's own bytes.
  static constexpr std::size_t kHeaderRoom = 32;
  // A batch is closed at these sizes: well under the 64 MiB frame limit and the daemon
  // decoder's 1M-element arrays, and small enough to keep latency low.
  static constexpr std::size_t kMaxBytes = 16u << 20;
  static constexpr std::uint32_t kMaxEvents = 4096;

  std::string bytes = std::string(kHeaderRoom, '\0');  // header room, then the encoded events
  std::uint32_t count = 0;
  std::uint64_t busy_us = 0;

  bool full() const { return count >= kMaxEvents || bytes.size() >= kMaxBytes; }
};

class Mailbox {
 public:
  Mailbox();  // throws WorkerError if no eventfd can be created
  ~Mailbox();
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  // ---- I/O thread side ----
  // Readable when there is something for the I/O thread: events, or the executor has exited.
  int wake_fd() const { return wake_fd_; }
  void clear_wake();  // consume the eventfd's readiness; call before take_events()
  void push_tasks(std::vector<proto::TaskSpec> tasks);
  // Removes the listed tasks that have not started; returns them in queue order.
  std::vector<std::uint64_t> revoke(const std::vector<std::uint64_t>& ids);
  // No task starts after this; the executor finishes the running one and leaves.
  void stop();
  std::vector<EventBatch> take_events();
  bool executor_exited() const;
  bool executor_busy() const;
  std::size_t unfinished() const;  // queued + running

  // ---- executor side ----
  // Blocks until a task is queued (returns it, and reports it started) or stop() was called.
  std::optional<proto::TaskSpec> next_task();
  void finish(const proto::Event& final_event, std::uint64_t busy_us);
  void mark_executor_exited();

 private:
  EventBatch& open_batch_locked(bool& wake);
  void wake();

  int wake_fd_ = -1;
  mutable std::mutex mutex_;
  std::condition_variable task_ready_;
  std::deque<proto::TaskSpec> queue_;
  std::vector<EventBatch> outbox_;  // the last one is filling
  bool stopped_ = false;
  bool busy_ = false;
  bool executor_exited_ = false;
};

}  // namespace zexec::worker_internal
