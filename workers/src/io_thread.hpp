// The worker's I/O thread: the only thread that touches the ZeroMQ context and sockets
// (ZeroMQ sockets are not thread-safe). It forwards tasks from the daemon into the Mailbox and
// events from the Mailbox to the daemon, answers revoke, and heartbeats while a task runs.
#pragma once

#include <sys/types.h>

#include <thread>

#include "mailbox.hpp"
#include "zexec/protocol.hpp"
#include "zexec/worker.hpp"

namespace zexec::worker_internal {

class IoThread {
 public:
  // `parent_pid` is the daemon's pid as seen when the worker started; the thread exits the
  // process when it changes (the daemon died and we were re-parented).
  IoThread(WorkerConfig config, Mailbox& mailbox, proto::WorkerHello hello, pid_t parent_pid);
  ~IoThread();  // joins; by then the executor must have called Mailbox::mark_executor_exited()
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  // Starts the thread and returns once the sockets are connected and worker_hello is queued.
  // Throws WorkerError when the sockets cannot be set up (e.g. a malformed endpoint).
  void start();
  void join();

  // 0 after a shutdown from the daemon; 1 when the daemon went away or the I/O failed.
  int exit_code() const { return exit_code_; }

 private:
  WorkerConfig config_;
  Mailbox& mailbox_;
  proto::WorkerHello hello_;
  pid_t parent_pid_;
  std::thread thread_;
  int exit_code_ = 1;
};

}  // namespace zexec::worker_internal
