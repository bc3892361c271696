// The shared state behind zexec::Future (internal).
//
// Completion is one path for every outcome (value, error, cancel, lost connection): it sets the
// status under the state's mutex, then wakes result() waiters (condvar), pushes the state to every
// registered Waiter (as_completed / wait / AsCompleted, like CPython's _Waiter), tells the owning
// client (poll queue, unfinished count) and runs the done callbacks. Because cancel goes through
// the same path, a cancelled future wakes everyone at once (CPython bugs #92001 / #136655).
//
// Two kinds of reference: the library (outbox, in-flight table, waiters, completion itself) holds
// the state directly; every Future handed to the caller shares one "user handle" that owns the
// state (an aliasing shared_ptr). The handle dies with the caller's last Future, whoever else
// still holds the state, so "does the caller still hold this future?" is an exact question:
// Client::poll() asks it (weak_ptr::lock on the handle) and never returns a dropped future.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "zexec/future.hpp"
#include "zexec/timeout.hpp"

namespace zexec::detail {

enum class Status : std::uint8_t { pending, running, finished, cancelled };
enum class Failure : std::uint8_t { none, task, connection };

class FutureState;
using StatePtr = std::shared_ptr<FutureState>;

// The client core a state belongs to; lets a Future cancel without knowing the Client type.
class StateOwner {
 public:
  virtual ~StateOwner() = default;
  // Cancels a task that was pending (or, with force, running) when checked; see Future::cancel().
  virtual bool cancel(const StatePtr& s, bool force) = 0;
  // Called once per state, under the state's lock, when it completed (any outcome), from the
  // completing thread. `user` is the caller's handle (expired if the caller holds no Future).
  virtual void on_done(const StatePtr& s, const std::weak_ptr<FutureState>& user) noexcept = 0;
  // True on the thread that delivers this owner's results: blocking there would deadlock.
  virtual bool on_io_thread() const noexcept = 0;
};

// A completion inbox for one as_completed()/wait()/AsCompleted: each registered state pushes
// itself here when it completes, so the consumer takes completions in O(1) instead of scanning.
struct Waiter {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<StatePtr> completed;

  void push(StatePtr s) {
    {
      std::lock_guard lk(mu);
      completed.push_back(std::move(s));
    }
    cv.notify_all();
  }
};

class FutureState : public std::enable_shared_from_this<FutureState> {
 public:
  FutureState(std::uint64_t id, std::string task_name, std::weak_ptr<StateOwner> owner = {})
      : id_(id), task_name_(std::move(task_name)), owner_(std::move(owner)) {}
  FutureState(const FutureState&) = delete;
  FutureState& operator=(const FutureState&) = delete;

  std::uint64_t id() const noexcept { return id_; }
  const std::string& task_name() const noexcept { return task_name_; }
  std::shared_ptr<StateOwner> owner() const { return owner_.lock(); }

  // The caller's handle: an aliasing pointer whose control block is the user handle (see the
  // top of this file), created if none is alive.
  StatePtr user_ref();

  Status status() const;
  bool done() const;

  // Transitions. Each returns false (and changes nothing) if the state is already final.
  bool set_running();  // pending -> running
  bool set_value(std::string bytes);
  bool set_error(Failure kind, std::string type, std::string message);
  bool set_cancelled();

  // Blocks until done or the deadline; returns done().
  bool wait(const Deadline& deadline) const;

  // Registers `w` to receive this state when it completes. Returns false, without registering,
  // if the state is already done (the caller treats it as completed).
  bool add_waiter(const std::shared_ptr<Waiter>& w);
  void remove_waiter(const Waiter* w);

  // Runs cb now (caller's thread) if done, else at completion.
  void add_callback(std::function<void(Future)> cb);

  // Outcome accessors: only meaningful once done(); the fields never change after that, so
  // they are read without the lock by threads that observed done() (which synchronised).
  Failure failure() const noexcept { return failure_; }
  const std::string& value() const noexcept { return value_; }
  const std::string& error_type() const noexcept { return error_type_; }
  const std::string& error_message() const noexcept { return error_message_; }
  // The exception result() throws for this outcome (null for a value).
  std::exception_ptr error_ptr() const;

  // Guarded by the owning client's outbox mutex (not mu_): true while the task sits unsent in
  // the client's outbox, so cancel() can take it back locally.
  bool queued = false;

 private:
  template <class Set>
  bool complete(Set&& set);

  const std::uint64_t id_;
  const std::string task_name_;
  const std::weak_ptr<StateOwner> owner_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Status status_ = Status::pending;
  Failure failure_ = Failure::none;
  std::string value_, error_type_, error_message_;
  std::vector<std::shared_ptr<Waiter>> waiters_;
  std::vector<std::function<void(Future)>> callbacks_;
  std::weak_ptr<FutureState> user_;  // the caller's handle (see user_ref())
};

// The bridge between the public Future and its private state.
struct FutureAccess {
  // A Future for the caller (submit, poll, as_completed, wait): shares the user handle.
  static Future make(const StatePtr& s) { return Future(s->user_ref()); }
  // Wraps the pointer as it is. Given the state itself (not a handle), the Future does not count
  // as the caller holding the task: that is what a done callback gets, so the I/O thread running
  // it never keeps a future the caller dropped alive for poll().
  static Future wrap(StatePtr s) { return Future(std::move(s)); }
  // The Future's pointer (the user handle's aliasing pointer for caller-held Futures).
  static const StatePtr& state(const Future& f) { return f.state_; }
};

// Runs a done callback, swallowing (and logging) whatever it throws.
void run_callback(const std::function<void(Future)>& cb, const StatePtr& s) noexcept;

}  // namespace zexec::detail
