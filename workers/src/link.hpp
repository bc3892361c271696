// The worker's connection to the daemon, shared by its two threads: whoever is not running a
// task does the I/O.
//
// The executor (the thread in Worker::run) runs tasks and, between them, does the I/O itself:
// it takes tasks off the PULL socket, answers revoke, sends events. So a result leaves the
// worker from the thread that computed it, with no hand-off to an I/O thread and back (two
// thread wake-ups per round trip, bench/RESULTS.md), and a burst of tiny tasks is run and
// answered in batches without a lock or a wake-up per task.
//
// While one task runs longer than kTakeOver, the watchdog thread takes the sockets: it sends
// the task's started event and heartbeats, answers revoke at once, queues new tasks and
// notices a dead parent. When the task ends the executor takes them back (waking the watchdog
// through an eventfd it polls beside the sockets).
//
// One mutex, io_mu_, guards the sockets and everything marked "I/O state": only its holder
// touches them. (ZeroMQ sockets may move between threads with a full memory barrier, which
// taking a mutex is.)
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "zexec/protocol.hpp"
#include "zexec/worker.hpp"

namespace zexec::worker_internal {

using Clock = std::chrono::steady_clock;

// Events on their way to the daemon, encoded as they happen and sent as one worker_events
// frame built in place around them. `busy_us` is the run time of exactly the tasks whose final
// events are in the batch.
struct EventBatch {
  static constexpr std::size_t kHeaderRoom = 32;  // room for the frame's header in front
  // A batch is closed at these sizes: well under the 64 MiB frame limit and the daemon
  // decoder's 1M-element arrays, and small enough to keep latency low.
  static constexpr std::size_t kMaxBytes = 16u << 20;
  static constexpr std::uint32_t kMaxEvents = 4096;

  std::string bytes = std::string(kHeaderRoom, '\0');
  std::uint32_t count = 0;
  std::uint64_t busy_us = 0;

  bool full() const { return count >= kMaxEvents || bytes.size() >= kMaxBytes; }
};

class Link {
 public:
  // Connects both sockets and queues worker_hello; throws WorkerError when the sockets cannot
  // be set up (e.g. a malformed endpoint). `parent_pid` is the daemon's pid as seen at start:
  // when getppid() changes, the daemon died and the worker exits.
  Link(const WorkerConfig& config, const proto::WorkerHello& hello, pid_t parent_pid);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Executor: reports the task it ran last (`finished`, null the first time; its run time is
  // measured here) and waits for the next, doing the I/O meanwhile. nullopt when the worker must stop
  // (shutdown, I/O failure, parent gone).
  std::optional<proto::TaskSpec> next(const proto::Event* finished);

  // Executor, at the end: stops the watchdog, sends what is left (for at most a second) and
  // returns the exit code: 0 after a shutdown from the daemon, 1 otherwise.
  int close();

 private:
  // ---- with io_mu_ held ----
  void take_io();              // executor: get the sockets back from the watchdog
  void pump(long timeout_ms);  // poll once, read what came, run the timers, send what waits
  void receive_frames();
  void handle_frame(std::string_view frame);
  void append_event(const proto::Event& e, std::uint64_t busy_us);
  void flush(Clock::time_point now);  // the current batch -> a frame in pending_
  void queue(const proto::Message& m);
  void send_pending();  // never blocks: the rest waits for POLLOUT
  void timers(Clock::time_point now);
  long timer_timeout_ms(Clock::time_point now) const;
  void fail(const std::string& why);  // I/O failed: stop

  // ---- watchdog ----
  void watch();
  void stop_watchdog();  // joins it; the sockets are then the caller's alone
  void serve_during_task(std::uint64_t task);
  void wake();  // the eventfd both poll

  const WorkerConfig& config_;
  const pid_t parent_pid_;
  const std::uint32_t capacity_;
  int wake_fd_ = -1;

  std::mutex io_mu_;
  // I/O state (io_mu_):
  zmq::context_t ctx_;
  zmq::socket_t tasks_;
  zmq::socket_t events_;
  std::deque<proto::TaskSpec> queue_;   // received, not started, in order
  std::deque<zmq::message_t> pending_;  // frames the socket has not taken yet
  EventBatch batch_;                    // events not yet framed
  Clock::time_point last_queued_, last_flush_, last_pump_, next_parent_check_;
  Clock::time_point task_start_;  // executor only: when the task it runs started
  bool stop_ = false;
  int exit_code_ = 1;
  bool discarding_parts_ = false;
  bool warned_capacity_ = false;

  // Executor <-> watchdog (atomics, seq_cst: running_/has_io_ and running_/deep_ are each a
  // store-then-load handshake on both sides).
  std::atomic<bool> running_{false};        // the executor is running a task
  std::atomic<std::uint64_t> task_gen_{0};  // +1 per task started
  std::atomic<bool> has_io_{false};         // the watchdog holds io_mu_
  std::atomic<bool> deep_{false};           // the watchdog sleeps until a task starts
  std::atomic<std::int64_t> last_busy_ns_{0};
  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool stop_watch_ = false;  // watch_mu_
  std::thread watchdog_;
};

}  // namespace zexec::worker_internal
