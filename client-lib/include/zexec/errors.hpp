// Every exception the client library throws. All derive from zexec::Error (a std::runtime_error),
// so `catch (const zexec::Error&)` catches anything zexec-specific.
#pragma once

#include <string>

#include "zexec/error.hpp"
#include "zexec/export.hpp"

namespace zexec {

// A deadline given to result()/exception()/as_completed()/... passed first.
class ZEXEC_API TimeoutError : public Error {
 public:
  using Error::Error;
};

// result()/exception() on a cancelled future (Python's concurrent.futures.CancelledError).
class ZEXEC_API CancelledError : public Error {
 public:
  using Error::Error;
};

// The daemon could not be reached, stopped answering, or forgot this client. Also what result()
// throws for a task whose outcome was lost that way.
class ZEXEC_API ConnectionError : public Error {
 public:
  using Error::Error;
};

// The daemon went silent for 5 x heartbeat_ms: every unfinished future fails with this, since
// none of them will hear from the daemon again (Python: zexec.DaemonLostError).
class ZEXEC_API DaemonLostError : public ConnectionError {
 public:
  using ConnectionError::ConnectionError;
};

// The daemon refused this client with an `error` message: a refused hello (code() e.g.
// "too_many_clients", "results_socket_failed", "shutting_down"), or later one that leaves the
// client's tasks no way to settle ("unknown_client", "bad_version", "shutting_down",
// "backlogged"). Every unfinished future fails with it. what() reads "zexecd at EP reported
// CODE: MESSAGE" (a future's: "TASK: " first); message() is the daemon's own text
// (Python: zexec.DaemonError, .code and .message).
class ZEXEC_API DaemonError : public ConnectionError {
 public:
  DaemonError(std::string code, const std::string& what) : ConnectionError(what), code_(std::move(code)) {}
  DaemonError(std::string code, std::string message, const std::string& what)
      : ConnectionError(what), code_(std::move(code)), message_(std::move(message)) {}
  const std::string& code() const noexcept { return code_; }        // e.g. "shutting_down"
  const std::string& message() const noexcept { return message_; }  // the daemon's, may be empty

 private:
  std::string code_, message_;
};

// result<T>() could not convert the task's return value to T; what() shows the value.
class ZEXEC_API ResultTypeError : public Error {
 public:
  using Error::Error;
};

// The task failed remotely: it threw, or the daemon/worker reported an error for it.
// what() reads "TASK: TYPE: MESSAGE", e.g. "sleep: ValueError: negative".
class ZEXEC_API TaskError : public Error {
 public:
  TaskError(std::string task_name, std::string type, std::string message);
  const std::string& task_name() const noexcept { return task_name_; }
  const std::string& type() const noexcept { return type_; }  // e.g. "ValueError", "UnknownTask"
  const std::string& message() const noexcept { return message_; }

 private:
  std::string task_name_, type_, message_;
};

// One subclass per error type of docs/PROTOCOL.md §7 (the wire contract), named TYPE + "Error",
// as in the Python client; any other type (a task's own exception, e.g. "ValueError") is a plain
// TaskError. error_types_test checks this list against the document.
#define ZEXEC_TASK_ERROR(name)    \
  class name : public TaskError { \
   public:                        \
    using TaskError::TaskError;   \
  };

// "UnknownTask": no task of that name is registered in a worker (or no pool runs it).
ZEXEC_TASK_ERROR(UnknownTaskError)
// "BadArguments": the arguments do not match the task's parameters.
ZEXEC_TASK_ERROR(BadArgumentsError)
// "WorkerCrashed": the worker process died while running the task (crash_retries re-run it).
ZEXEC_TASK_ERROR(WorkerCrashedError)
// "TaskTimeout": the task ran past TaskOptions::timeout (its worker was killed).
ZEXEC_TASK_ERROR(TaskTimeoutError)
// "ShuttingDown": the task was submitted while the daemon was stopping.
ZEXEC_TASK_ERROR(ShuttingDownError)
// "Quarantined": the task crashed its worker so often (the daemon's --quarantine-after, default
// 3) that the daemon refuses to run it again, whatever its crash_retries say. The message names
// the count and the last crash.
ZEXEC_TASK_ERROR(QuarantinedError)
// "QueueFull": this client already had max_pending unfinished tasks (Welcome::max_pending), or
// its outbox was full. Thrown by submit() itself, before any future exists, when no room came
// within ClientOptions::submit_timeout (task_name() is the task, type() "QueueFull"); as an
// event only from a daemon whose limit is below what this client was told.
ZEXEC_TASK_ERROR(QueueFullError)
// "WorkerUnavailable": no worker can start (the worker command fails at start-up repeatedly).
ZEXEC_TASK_ERROR(WorkerUnavailableError)
// "JournalFull": the daemon's journal (zexecd --journal) is on a full file system; the task was
// not accepted.
ZEXEC_TASK_ERROR(JournalFullError)
// "JournalFailed": the daemon could not write its journal (an I/O error, a failed sync); the task
// was not accepted.
ZEXEC_TASK_ERROR(JournalFailedError)
// "ResultTooLarge": the return value does not fit in a frame.
ZEXEC_TASK_ERROR(ResultTooLargeError)
// "UnencodableResult": the return value cannot be encoded as msgpack.
ZEXEC_TASK_ERROR(UnencodableResultError)

#undef ZEXEC_TASK_ERROR

// Deprecated: submit()'s backpressure error was a separate class; it is QueueFullError now (a
// TaskError of type "QueueFull", as in Python). catch (const QueueFull&) still catches it.
using QueueFull [[deprecated("use zexec::QueueFullError")]] = QueueFullError;

// Throws the TaskError subclass that matches `type` (the list above), else a TaskError.
[[noreturn]] ZEXEC_API void throw_task_error(const std::string& task_name, const std::string& type,
                                             const std::string& message);

}  // namespace zexec
