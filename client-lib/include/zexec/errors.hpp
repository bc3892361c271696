// Every exception the client library throws. All derive from zexec::Error (a std::runtime_error),
// so `catch (const zexec::Error&)` catches anything zexec-specific.
#pragma once

#include <string>

#include "zexec/error.hpp"

namespace zexec {

// A deadline given to result()/exception()/as_completed()/... passed first.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// result()/exception() on a cancelled future (Python's concurrent.futures.CancelledError).
class CancelledError : public Error {
 public:
  using Error::Error;
};

// The daemon could not be reached, stopped answering, or forgot this client. Also what result()
// throws for a task whose outcome was lost that way.
class ConnectionError : public Error {
 public:
  using Error::Error;
};

// submit() could not queue the task within ClientOptions::submit_timeout: the client already had
// the daemon's limit of unfinished tasks (Welcome::max_pending), or its outbox was full.
// Thrown by submit(), before any future exists; compare QueueFullError below.
class QueueFull : public Error {
 public:
  using Error::Error;
};

// result<T>() could not convert the task's return value to T; what() shows the value.
class ResultTypeError : public Error {
 public:
  using Error::Error;
};

// The task failed remotely: it threw, or the daemon/worker reported an error for it.
// what() reads "TASK: TYPE: MESSAGE", e.g. "sleep: ValueError: negative".
class TaskError : public Error {
 public:
  TaskError(std::string task_name, std::string type, std::string message);
  const std::string& task_name() const noexcept { return task_name_; }
  const std::string& type() const noexcept { return type_; }  // e.g. "ValueError", "UnknownTask"
  const std::string& message() const noexcept { return message_; }

 private:
  std::string task_name_, type_, message_;
};

// Error type "WorkerCrashed": the worker process died while running the task.
class WorkerCrashedError : public TaskError {
 public:
  using TaskError::TaskError;
};

// Error type "TaskTimeout": the task ran past TaskOptions::timeout.
class TaskTimeoutError : public TaskError {
 public:
  using TaskError::TaskError;
};

// Error type "Quarantined": the task crashed its worker so often (the daemon's
// --quarantine-after, default 3) that the daemon refuses to run it again, whatever its
// crash_retries say. The message names the count and the last crash.
class QuarantinedError : public TaskError {
 public:
  using TaskError::TaskError;
};

// Error type "QueueFull": the daemon refused the task because this client already had
// max_pending unfinished tasks there. submit() waits for room so this does not happen through
// this library; it is here for completeness (a daemon restarted with a lower limit, say).
class QueueFullError : public TaskError {
 public:
  using TaskError::TaskError;
};

// Throws the TaskError subclass that matches `type` (WorkerCrashed, TaskTimeout, Quarantined,
// QueueFull, else TaskError).
[[noreturn]] void throw_task_error(const std::string& task_name, const std::string& type,
                                   const std::string& message);

}  // namespace zexec
