// The shared state behind zexec::Future (internal).
//
// Completion is one path for every outcome (value, error, cancel, lost connection): it sets the
// status under the state's mutex, then wakes result() waiters (a futex on the status word),
// pushes the state to every registered Waiter (as_completed / wait / AsCompleted, like CPython's
// _Waiter), tells the owning client (poll queue, unfinished count) and runs the done callbacks.
// Because cancel goes through the same path, a cancelled future wakes everyone at once (CPython
// bugs #92001 / #136655).
//
// The library (outbox, in-flight table, waiters, completion itself) holds the state through
// plain shared_ptrs. Futures handed to the caller also count in the state's `users` count, so
// "does the caller still hold this future?" is an exact question: Client::poll() asks it and
// never returns a future the caller dropped. (A count, not a second shared_ptr control block:
// that was an allocation per task, bench/RESULTS.md.)
//
// A state is a hot object: one per task, created by submit() at hundreds of thousands per
// second. Its size (one allocation of 176 bytes with the shared_ptr's count) and the locks it
// takes are measured.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "zexec/future.hpp"
#include "zexec/timeout.hpp"

namespace zexec::detail {

enum class Status : std::uint8_t { pending, running, finished, cancelled };
// How a future failed: its task raised (TaskError), or the connection broke (ConnectionError;
// daemon_lost: DaemonLostError, daemon_refused: DaemonError, error_type() its code).
enum class Failure : std::uint8_t { none, task, connection, daemon_lost, daemon_refused };

// The ConnectionError (or subclass) for a connection that failed as `kind` (not none or task).
std::exception_ptr connection_error(Failure kind, const std::string& code, const std::string& text);

// The `error` codes (docs/PROTOCOL.md §6) that end the connection when they come after the
// welcome: every unfinished future fails with DaemonError (before the welcome, any code does).
// The same table as FATAL_ERROR_CODES in client-lib/python/zexec/_connection.py:
//   unknown_client, bad_version, shutting_down: the daemon has no record of this client;
//   too_many_clients, results_socket_failed: refusals of a hello (no welcome follows);
//   backlogged: a whole `submit` refused, and its tasks get no event. A client that keeps to
//     max_pending never gets it; knowing which futures were in that frame would mean keeping
//     the ids of every frame sent on the hot path, so the cheap and safe answer is this one.
// Any other code (bad_message, duplicate_task_id, one a newer daemon invents) stays
// last_error(): forward compatible.
bool is_fatal_error_code(std::string_view code) noexcept;
// What DaemonError says, in both clients: "zexecd at EP reported CODE: MESSAGE".
std::string daemon_error_text(const std::string& endpoint, const std::string& code,
                              const std::string& message);

class FutureState;
using StatePtr = std::shared_ptr<FutureState>;

// The client core a state belongs to; lets a Future cancel without knowing the Client type.
class StateOwner {
 public:
  virtual ~StateOwner() = default;
  // Cancels a task that was pending (or, with force, running) when checked; see Future::cancel().
  virtual bool cancel(const StatePtr& s, bool force) = 0;
  // Called once per state, under the state's lock, when it completed (any outcome), from the
  // completing thread.
  virtual void on_done(const StatePtr& s) noexcept = 0;
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

// Within its scope, completions on this thread reach their Waiters when the scope ends: one
// lock and one wake-up per waiter for the batch instead of one per future. The I/O thread
// opens one around each `update` it applies (up to thousands of events).
class CompletionBatch {
 public:
  CompletionBatch();
  ~CompletionBatch();
  CompletionBatch(const CompletionBatch&) = delete;
  CompletionBatch& operator=(const CompletionBatch&) = delete;

  // Queues the push of `s` to `w` in the batch open on this thread; false if none is.
  static bool add(const std::shared_ptr<Waiter>& w, const StatePtr& s);

 private:
  CompletionBatch* prev_;
  std::vector<std::pair<std::shared_ptr<Waiter>, StatePtr>> items_;
};

// A 4-byte mutex for the states (a std::mutex is 40 bytes, and there is one state per task:
// its size is the client's memory traffic per task). The three-state futex lock of Drepper's
// "Futexes Are Tricky": 0 free, 1 locked, 2 locked and someone may sleep.
class SmallLock {
 public:
  void lock() noexcept {
    std::uint32_t c = 0;
    if (!v_.compare_exchange_strong(c, 1, std::memory_order_acquire)) lock_slow(c);
  }
  void unlock() noexcept {
    if (v_.exchange(0, std::memory_order_release) == 2) wake_one();
  }

 private:
  void lock_slow(std::uint32_t c) noexcept;
  void wake_one() noexcept;
  std::atomic<std::uint32_t> v_{0};
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

  // Lock-free reads of the status word (acquire: a done state's outcome fields are visible).
  Status status() const noexcept { return static_cast<Status>(settled_word() & kStatusMask); }
  bool done() const noexcept { return is_final(settled_word()); }

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
  const std::string& error_type() const noexcept;
  const std::string& error_message() const noexcept;
  // The exception result() throws for this outcome (null for a value).
  std::exception_ptr error_ptr() const;

  // The caller's Futures of this state (see the top of this file).
  void add_user() noexcept { users_.fetch_add(1, std::memory_order_relaxed); }
  void release_user() noexcept { users_.fetch_sub(1, std::memory_order_acq_rel); }
  bool has_user() const noexcept { return users_.load(std::memory_order_acquire) > 0; }
  // Adds a user only if there is one (the caller still holds a Future); false otherwise.
  bool add_user_if_held() noexcept;

  // Guarded by the owning client's outbox mutex (not mu_): true while the task sits unsent in
  // the client's outbox, so cancel() can take it back locally.
  bool queued = false;

 private:
  static constexpr std::uint32_t kStatusMask = 3;
  static constexpr std::uint32_t kSleepers = 4;  // a thread sleeps (futex) in wait()
  // complete() is between the outcome and the client's bookkeeping (it holds mu_): readers
  // wait for it, so whoever sees a state done also sees the client's count updated, and
  // whoever sees the count (client.wait_all()) sees the state done.
  static constexpr std::uint32_t kCompleting = 8;
  std::uint32_t settled_word() const noexcept {
    std::uint32_t w = word_.load(std::memory_order_acquire);
    if (w & kCompleting) [[unlikely]] {
      std::lock_guard lk(mu_);
      w = word_.load(std::memory_order_acquire);
    }
    return w;
  }
  static bool is_final(std::uint32_t word) noexcept {
    auto s = static_cast<Status>(word & kStatusMask);
    return s == Status::finished || s == Status::cancelled;
  }

  template <class Set>
  bool complete(Status final_status, Set&& set);

  struct ErrorText {
    std::string type, message;
  };

  const std::uint64_t id_;
  const std::string task_name_;
  const std::weak_ptr<StateOwner> owner_;

  // Status in the low bits, kSleepers above. Written under mu_, read without it.
  mutable std::atomic<std::uint32_t> word_{static_cast<std::uint32_t>(Status::pending)};
  std::atomic<std::uint32_t> users_{0};
  Failure failure_ = Failure::none;
  mutable SmallLock mu_;
  std::string value_;
  std::unique_ptr<ErrorText> error_;  // only for an error: most tasks succeed
  // Waiters: the first in place (as_completed, wait: the usual and only one), others beside.
  std::shared_ptr<Waiter> waiter_;
  // Rarely needed: more waiters than one, done callbacks. Allocated on first use.
  struct Extras {
    std::vector<std::shared_ptr<Waiter>> waiters;
    std::vector<std::function<void(Future)>> callbacks;
  };
  std::unique_ptr<Extras> extras_;
  Extras& extras() {  // requires mu_
    if (!extras_) extras_ = std::make_unique<Extras>();
    return *extras_;
  }
};

// The bridge between the public Future and its private state.
struct FutureAccess {
  // A Future for the caller (submit, poll, as_completed, wait): counts as the caller holding it.
  static Future make(StatePtr s) { return Future(std::move(s), true); }
  // A Future for a state whose user count the caller already raised (add_user_if_held).
  static Future adopt(StatePtr s) { return Future(std::move(s), true, Future::Adopt{}); }
  // Wraps the state without counting: that is what a done callback gets, so the I/O thread
  // running it never makes a future the caller dropped look held to poll().
  static Future wrap(StatePtr s) { return Future(std::move(s), false); }
  static const StatePtr& state(const Future& f) { return f.state_; }
};

// A set of states for deduplicating the futures of one call (as_completed, wait): open
// addressing over a table sized once for the call, so no allocation per future (a node-based
// set cost as much as the rest of as_completed, bench/RESULTS.md).
class StateSet {
 public:
  explicit StateSet(std::size_t expected);
  bool insert(const FutureState* s);  // false if already there
  bool contains(const FutureState* s) const;
  std::size_t size() const noexcept { return size_; }

 private:
  std::size_t home(const FutureState* s) const noexcept;
  std::vector<const FutureState*> slots_;
  unsigned shift_ = 0;
  std::size_t size_ = 0;
};

// Runs a done callback, swallowing (and logging) whatever it throws.
void run_callback(const std::function<void(Future)>& cb, const StatePtr& s) noexcept;

}  // namespace zexec::detail
