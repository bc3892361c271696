// Waiting for many futures: as_completed(), wait() and the growable AsCompleted.
//
// Semantics (the contract, tested in tests/client_test.cpp):
//   * Duplicates are removed: each distinct future (copies of one Future are the same future) is
//     yielded / reported once.
//   * A cancelled future counts as completed, and its cancellation wakes every waiter at once
//     (CPython bugs #92001 / #136655, waiters not woken on cancel, do not exist here).
//   * `timeout` may be omitted: wait forever. It is ONE deadline measured from the call, not a
//     per-item timeout.
//   * Nothing here cancels or otherwise touches the futures it waits for.
// Cost: each pending future pushes itself to the waiter when it completes (like CPython's
// _Waiter), so taking a completion is O(1), never a scan of all futures.
#pragma once

#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <vector>

#include "zexec/export.hpp"
#include "zexec/future.hpp"
#include "zexec/timeout.hpp"

namespace zexec {

namespace detail {
// Something that hands out completed futures one at a time (as_completed, AsCompleted).
class ZEXEC_API CompletionSource {
 public:
  virtual ~CompletionSource() = default;
  // The next completed future, nullopt when nothing is left; throws TimeoutError.
  virtual std::optional<Future> next(const Timeout& timeout) = 0;
};
}  // namespace detail

// Input iterator over a CompletionSource; ++ blocks until the next future completes.
class ZEXEC_API CompletionIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = Future;
  using difference_type = std::ptrdiff_t;
  using pointer = Future*;
  using reference = Future&;

  CompletionIterator() = default;  // the end iterator
  Future& operator*() { return current_; }
  Future* operator->() { return &current_; }
  CompletionIterator& operator++() {
    advance();
    return *this;
  }
  void operator++(int) { advance(); }
  friend bool operator==(const CompletionIterator& a, const CompletionIterator& b) {
    return a.src_ == b.src_;
  }
  // C++20 derives != from ==; spelled out for code that calls operator!= by name.
  friend bool operator!=(const CompletionIterator& a, const CompletionIterator& b) { return !(a == b); }

 private:
  friend class AsCompletedRange;
  friend class AsCompleted;
  explicit CompletionIterator(std::shared_ptr<detail::CompletionSource> src) : src_(std::move(src)) {
    advance();
  }
  void advance();

  std::shared_ptr<detail::CompletionSource> src_;  // null = end
  Future current_;
};

// What as_completed() returns: iterate it once with range-for.
class ZEXEC_API AsCompletedRange {
 public:
  explicit AsCompletedRange(std::shared_ptr<detail::CompletionSource> src) : src_(std::move(src)) {}
  // Each call continues where the previous iteration stopped (the range is single-pass).
  CompletionIterator begin() { return CompletionIterator(src_); }
  CompletionIterator end() { return {}; }

 private:
  std::shared_ptr<detail::CompletionSource> src_;
};

// Yields the futures as they complete, like concurrent.futures.as_completed():
//   * futures already done at the call come first (in the order given), the rest in the order
//     they finish; duplicates once;
//   * when the deadline passes with futures still pending, the iterator throws TimeoutError
//     whose what() contains "N (of M) futures unfinished" (M = distinct futures given); those N
//     are left pending and not cancelled, and the iteration is over. Futures that completed
//     before the deadline are always yielded first, even if the caller was slow to ask.
//
//   for (zexec::Future& f : zexec::as_completed(futures, 5s)) use(f.result<double>());
ZEXEC_API AsCompletedRange as_completed(const std::vector<Future>& futures, Timeout timeout = std::nullopt);

enum class ReturnWhen {
  FirstCompleted,  // return as soon as any future is done (at once if one already is)
  FirstException,  // return when any future fails with an error (cancel is not an error);
                   // if none does, the same as AllCompleted
  AllCompleted,    // return when every future is done
};

struct WaitResult {
  std::vector<Future> done;      // done ones: already-done in the order given, then completion order
  std::vector<Future> not_done;  // the rest, in the order given
};

// Like concurrent.futures.wait(): never throws on timeout, just returns what is done by then.
//   auto [done, not_done] = zexec::wait(futures, 2s, zexec::ReturnWhen::FirstCompleted);
ZEXEC_API WaitResult wait(const std::vector<Future>& futures, Timeout timeout = std::nullopt,
                          ReturnWhen return_when = ReturnWhen::AllCompleted);

// A growable as_completed (like dask.distributed.as_completed): futures can be added while
// iterating. Iteration yields each added future once when it completes and ends as soon as
// every added future has been yielded. Adding a future that is already tracked (added, not yet
// yielded) does nothing; adding one that was already yielded yields it again. add()/update()/
// next() are thread-safe.
//
// Add follow-up futures from the loop body (before the loop asks for the next one), as below:
// then they are tracked before the iteration can run out. Do NOT add from a done callback or
// another thread to keep an iteration going: the iteration may already have ended (it does not
// know more is coming), and a callback that outlives a stack-allocated AsCompleted would touch a
// destroyed object. Something that completes elsewhere can hand its follow-up to the loop
// instead, e.g. as the result of the future the loop yields.
//
//   zexec::AsCompleted ac{futures};
//   for (zexec::Future& f : ac) if (more_work(f)) ac.add(client.submit("step", ...));
class ZEXEC_API AsCompleted {
 public:
  // `timeout` is one deadline for the whole iteration, measured from construction; when it
  // passes with tracked futures pending, iteration throws TimeoutError (like as_completed()).
  explicit AsCompleted(const std::vector<Future>& futures = {}, Timeout timeout = std::nullopt);
  ~AsCompleted();
  AsCompleted(const AsCompleted&) = delete;
  AsCompleted& operator=(const AsCompleted&) = delete;

  void add(const Future& f);
  void update(const std::vector<Future>& fs);

  // The next completed future, or nullopt when every added future has been yielded. Throws
  // TimeoutError if `timeout` (or the constructor's deadline) passes first.
  std::optional<Future> next(Timeout timeout = std::nullopt);

  std::size_t count() const;  // added and not yet yielded
  bool empty() const { return count() == 0; }

  // Single-pass: each begin() continues where the previous iteration stopped.
  CompletionIterator begin();
  CompletionIterator end() { return {}; }

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace zexec
