// as_completed() and AsCompleted: completion-ordered iteration over futures.
#include "zexec/as_completed.hpp"

#include <unordered_map>

#include "future_state.hpp"

namespace zexec {

using detail::FutureAccess;
using detail::StatePtr;
using detail::Waiter;

void CompletionIterator::advance() {
  if (!src_) return;
  std::optional<Future> f;
  try {
    f = src_->next(std::nullopt);
  } catch (...) {
    src_.reset();  // a timeout ends the iteration
    throw;
  }
  if (f)
    current_ = std::move(*f);
  else
    src_.reset();
}

namespace {

std::string unfinished_text(std::size_t pending, std::size_t total) {
  return std::to_string(pending) + " (of " + std::to_string(total) + ") futures unfinished";
}

// The source behind as_completed(): a fixed set of futures and one deadline.
class FixedSource final : public detail::CompletionSource {
 public:
  FixedSource(const std::vector<Future>& futures, Timeout timeout)
      : deadline_(detail::deadline_from(timeout)), waiter_(std::make_shared<Waiter>()) {
    detail::StateSet seen(futures.size());
    registered_.reserve(futures.size());
    for (const Future& f : futures) {
      const StatePtr& s = FutureAccess::state(f);
      if (!s) throw Error("as_completed: empty zexec::Future in the list");
      if (!seen.insert(s.get())) continue;
      if (s->add_waiter(waiter_))
        registered_.push_back(s);
      else
        ready_.push_back(s);  // already done: yielded first, in the order given
    }
    total_ = seen.size();
    pending_ = registered_.size();
  }
  ~FixedSource() override {
    // A state that completed dropped its waiters itself: only an iteration left early (a
    // timeout, a break) has registrations to take back.
    if (pending_ == 0) return;
    for (const auto& s : registered_) s->remove_waiter(waiter_.get());
  }

  std::optional<Future> next(const Timeout&) override {
    if (ready_pos_ < ready_.size()) return FutureAccess::make(ready_[ready_pos_++]);
    if (over_ || pending_ == 0) return std::nullopt;
    if (taken_.empty()) {
      // Everything completed so far at once: one lock per batch, not per future.
      std::unique_lock lk(waiter_->mu);
      auto has_one = [this] { return !waiter_->completed.empty(); };
      bool got =
          deadline_ ? waiter_->cv.wait_until(lk, *deadline_, has_one) : (waiter_->cv.wait(lk, has_one), true);
      if (!got) {
        over_ = true;
        throw TimeoutError(unfinished_text(pending_, total_));
      }
      taken_.swap(waiter_->completed);
    }
    StatePtr s = std::move(taken_.front());
    taken_.pop_front();
    --pending_;
    return FutureAccess::make(std::move(s));
  }

 private:
  detail::Deadline deadline_;
  std::shared_ptr<Waiter> waiter_;
  std::vector<StatePtr> ready_;  // done at the call
  std::size_t ready_pos_ = 0;
  std::vector<StatePtr> registered_;  // pending at the call; the waiter is registered on each
  std::deque<StatePtr> taken_;        // completed, taken from the waiter, not yet yielded
  std::size_t total_ = 0, pending_ = 0;
  bool over_ = false;
};

}  // namespace

AsCompletedRange as_completed(const std::vector<Future>& futures, Timeout timeout) {
  return AsCompletedRange(std::make_shared<FixedSource>(futures, timeout));
}

// ---- AsCompleted ---------------------------------------------------------------------------

class AsCompleted::Impl final : public detail::CompletionSource {
 public:
  explicit Impl(Timeout timeout)
      : deadline_(detail::deadline_from(timeout)), waiter_(std::make_shared<Waiter>()) {}
  ~Impl() override {
    for (const auto& [ptr, f] : tracked_) FutureAccess::state(f)->remove_waiter(waiter_.get());
  }

  void add(const Future& f) {
    const StatePtr& s = FutureAccess::state(f);
    if (!s) throw Error("AsCompleted::add: empty zexec::Future");
    {
      std::lock_guard lk(waiter_->mu);
      if (!tracked_.emplace(s.get(), f).second) return;
    }
    // Registered outside waiter_->mu: completion takes the state's lock, then the waiter's.
    if (!s->add_waiter(waiter_)) waiter_->push(s);
  }

  std::optional<Future> next(const Timeout& timeout) override {
    detail::Deadline deadline = deadline_;
    if (auto d = detail::deadline_from(timeout); d && (!deadline || *d < *deadline)) deadline = d;
    std::unique_lock lk(waiter_->mu);
    // Woken by a completion, or by add() of an already-done future (which also pushes).
    auto ready = [this] { return !waiter_->completed.empty() || tracked_.empty(); };
    bool got = deadline ? waiter_->cv.wait_until(lk, *deadline, ready) : (waiter_->cv.wait(lk, ready), true);
    if (!got) throw TimeoutError(unfinished_text(tracked_.size(), tracked_.size() + yielded_));
    if (waiter_->completed.empty()) return std::nullopt;  // everything added was yielded
    StatePtr s = std::move(waiter_->completed.front());
    waiter_->completed.pop_front();
    // The caller's Future as it was added (counting as the caller's, see future_state.hpp).
    Future f = FutureAccess::wrap(std::move(s));
    if (auto it = tracked_.find(FutureAccess::state(f).get()); it != tracked_.end()) {
      f = std::move(it->second);
      tracked_.erase(it);
    }
    ++yielded_;
    return f;
  }

  std::size_t count() const {
    std::lock_guard lk(waiter_->mu);
    return tracked_.size();
  }

 private:
  detail::Deadline deadline_;
  std::shared_ptr<Waiter> waiter_;  // waiter_->mu also guards tracked_ and yielded_
  std::unordered_map<const detail::FutureState*, Future> tracked_;  // added, not yet yielded
  std::size_t yielded_ = 0;
};

AsCompleted::AsCompleted(const std::vector<Future>& futures, Timeout timeout)
    : impl_(std::make_shared<Impl>(timeout)) {
  update(futures);
}

AsCompleted::~AsCompleted() = default;

void AsCompleted::add(const Future& f) {
  impl_->add(f);
}

void AsCompleted::update(const std::vector<Future>& fs) {
  for (const auto& f : fs) impl_->add(f);
}

std::optional<Future> AsCompleted::next(Timeout timeout) {
  return impl_->next(timeout);
}

std::size_t AsCompleted::count() const {
  return impl_->count();
}

CompletionIterator AsCompleted::begin() {
  return CompletionIterator(impl_);
}

}  // namespace zexec
