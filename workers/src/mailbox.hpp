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
#include <vector>

#include "zexec/protocol.hpp"

namespace zexec::worker_internal {

// An event on its way to the daemon, with the run time of its task (final events only), so
// each worker_events message can carry the busy time of exactly the tasks it reports.
struct OutgoingEvent {
  proto::Event event;
  std::uint64_t busy_us = 0;
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
  std::vector<OutgoingEvent> take_events();
  bool executor_exited() const;
  bool executor_busy() const;
  std::size_t unfinished() const;  // queued + running

  // ---- executor side ----
  // Blocks until a task is queued (returns it, and reports it started) or stop() was called.
  std::optional<proto::TaskSpec> next_task();
  void finish(proto::Event final_event, std::uint64_t busy_us);
  void mark_executor_exited();

 private:
  void post_locked(OutgoingEvent e, bool& wake);
  void wake();

  int wake_fd_ = -1;
  mutable std::mutex mutex_;
  std::condition_variable task_ready_;
  std::deque<proto::TaskSpec> queue_;
  std::vector<OutgoingEvent> outbox_;
  bool stopped_ = false;
  bool busy_ = false;
  bool executor_exited_ = false;
};

}  // namespace zexec::worker_internal
