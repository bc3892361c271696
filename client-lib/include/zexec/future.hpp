// zexec::Future: the handle to one submitted task, like concurrent.futures.Future.
//
// A Future is a cheap copyable handle: copies share one state (like std::shared_future), so it
// can be stored in containers, passed to as_completed()/wait(), and captured in callbacks.
//
// States: pending -> running (a worker started it) -> finished (value or error), or
// pending -> cancelled (running -> cancelled only through cancel(force = true)). done() is true
// for finished and cancelled. A cancelled future counts as completed everywhere: it wakes
// result(), wait(), as_completed() and runs done callbacks.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>

#include "zexec/errors.hpp"
#include "zexec/export.hpp"
#include "zexec/pack.hpp"
#include "zexec/timeout.hpp"

namespace zexec {

class Future;
namespace detail {
class FutureState;
struct FutureAccess;
}  // namespace detail

class ZEXEC_API Future {
 public:
  // An empty handle: valid() is false, everything else throws zexec::Error.
  Future() = default;
  Future(const Future& other) noexcept;
  Future(Future&& other) noexcept;
  Future& operator=(const Future& other) noexcept;
  Future& operator=(Future&& other) noexcept;
  ~Future();

  bool valid() const noexcept { return state_ != nullptr; }
  std::uint64_t id() const;              // the task id (per client, from a counter)
  const std::string& task_name() const;  // the name given to submit()

  bool done() const;     // finished (value or error) or cancelled
  bool running() const;  // a worker is running it now
  bool cancelled() const;

  // Cancels the task if no worker has started it. Returns true if it is now cancelled (also when
  // it already was), false if it is running or finished. A task still in the client's outbox is
  // cancelled locally; otherwise this asks the daemon (cancel -> cancel_reply) and throws
  // ConnectionError if no answer comes within ClientOptions::cancel_timeout. On a broken or
  // closed connection (also one that breaks while cancel() waits) it returns false, as
  // Python's cancel() returns False: the future has failed with the connection's error.
  //
  // force = true also stops a task a worker is running: the daemon kills the worker process
  // running it (SIGTERM, SIGKILL after its --cancel-grace-ms) and starts a new one, so the task
  // may have had side effects up to that point; anything else that worker held prefetched is
  // given to other workers, not lost. The answer waits until that worker is gone, so the
  // cancel_timeout must allow for the grace. Returns true when the task was cancelled, false if
  // it finished first (its outcome arrives as usual).
  bool cancel(bool force = false);

  // Waits for the outcome and converts the returned value to T (msgpack convert).
  //   - TimeoutError if not done when `timeout` passes (the future is left untouched);
  //   - CancelledError if cancelled; the TaskError subclass if the task failed;
  //   - ConnectionError if the outcome was lost with the daemon connection;
  //   - ResultTypeError if the value does not convert to T (the message shows the value).
  // result<void>() just waits and rethrows.
  template <class T = void>
  T result(Timeout timeout = std::nullopt) const {
    const std::string& bytes = wait_value(timeout);
    if constexpr (std::is_void_v<T>) {
      (void)bytes;
    } else {
      return detail::unpack_as<T>(bytes, task_name());
    }
  }

  // Like result(), but returns the value's raw msgpack bytes.
  std::string raw_result(Timeout timeout = std::nullopt) const;

  // Waits for the outcome; returns the task's exception, or null if it succeeded.
  // Throws TimeoutError if not done in time, CancelledError if cancelled (as Python does).
  std::exception_ptr exception(Timeout timeout = std::nullopt) const;

  // Waits until done or `timeout` passes; returns done(). Never throws on timeout.
  bool wait_done(Timeout timeout = std::nullopt) const;

  // Runs cb(*this) once when the future is done: at once in the caller's thread if it already
  // is, else in the thread that completes it (the client's I/O thread, or a thread calling
  // cancel()). Exceptions from cb are caught and logged to stderr. cb must not block waiting for
  // other tasks of the same client: it runs on the thread that delivers their results.
  void add_done_callback(std::function<void(Future)> cb) const;

  friend bool operator==(const Future& a, const Future& b) noexcept { return a.state_ == b.state_; }
  std::size_t hash() const noexcept { return std::hash<const void*>{}(state_.get()); }

 private:
  friend struct detail::FutureAccess;
  struct Adopt {};
  // `user`: this Future counts as the caller holding the task (Client::poll() returns only
  // those); the Future a done callback gets does not.
  Future(std::shared_ptr<detail::FutureState> s, bool user) noexcept;
  Future(std::shared_ptr<detail::FutureState> s, bool user, Adopt) noexcept
      : state_(std::move(s)), user_(user && state_) {}
  void release() noexcept;
  const detail::FutureState& state() const;
  // Waits and returns the value bytes (valid while *this lives), or throws the outcome.
  const std::string& wait_value(const Timeout& timeout) const;

  std::shared_ptr<detail::FutureState> state_;
  bool user_ = false;
};

}  // namespace zexec

template <>
struct std::hash<zexec::Future> {
  std::size_t operator()(const zexec::Future& f) const noexcept { return f.hash(); }
};
