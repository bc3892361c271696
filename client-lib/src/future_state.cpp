#include "future_state.hpp"

#include <cstdio>

#include "task_errors.hpp"

namespace zexec::detail {

Status FutureState::status() const {
  std::lock_guard lk(mu_);
  return status_;
}

bool FutureState::done() const {
  std::lock_guard lk(mu_);
  return status_ == Status::finished || status_ == Status::cancelled;
}

StatePtr FutureState::user_ref() {
  // The handle owns the state; Futures point at the state through it (aliasing constructor).
  struct UserHandle {
    StatePtr state;
  };
  std::lock_guard lk(mu_);
  if (StatePtr h = user_.lock()) return h;
  auto handle = std::make_shared<UserHandle>(UserHandle{shared_from_this()});
  StatePtr ref(handle, handle->state.get());
  user_ = ref;
  return ref;
}

bool FutureState::set_running() {
  std::lock_guard lk(mu_);
  if (status_ != Status::pending) return false;
  status_ = Status::running;
  return true;
}

template <class Set>
bool FutureState::complete(Set&& set) {
  // Keeps the state alive through the notifications even if the caller held the last reference.
  StatePtr self = shared_from_this();
  std::vector<std::shared_ptr<Waiter>> waiters;
  std::vector<std::function<void(Future)>> callbacks;
  {
    std::lock_guard lk(mu_);
    if (status_ == Status::finished || status_ == Status::cancelled) return false;
    set();
    waiters.swap(waiters_);
    callbacks.swap(callbacks_);
    // The client's bookkeeping (poll queue, unfinished count) is updated before anyone can see
    // the state done, so e.g. `f.result(); client.unfinished()` never reads a stale count.
    // on_done only takes the client's leaf lock, so holding mu_ here cannot deadlock.
    if (auto o = owner_.lock()) o->on_done(self, user_);
  }
  cv_.notify_all();
  for (auto& w : waiters) w->push(self);
  for (auto& cb : callbacks) run_callback(cb, self);
  return true;
}

bool FutureState::set_value(std::string bytes) {
  return complete([&] {
    value_ = std::move(bytes);
    status_ = Status::finished;
  });
}

bool FutureState::set_error(Failure kind, std::string type, std::string message) {
  return complete([&] {
    failure_ = kind == Failure::none ? Failure::task : kind;
    error_type_ = std::move(type);
    error_message_ = std::move(message);
    status_ = Status::finished;
  });
}

bool FutureState::set_cancelled() {
  return complete([&] { status_ = Status::cancelled; });
}

bool FutureState::wait(const Deadline& deadline) const {
  std::unique_lock lk(mu_);
  auto is_done = [this] { return status_ == Status::finished || status_ == Status::cancelled; };
  if (!deadline) {
    cv_.wait(lk, is_done);
    return true;
  }
  return cv_.wait_until(lk, *deadline, is_done);
}

bool FutureState::add_waiter(const std::shared_ptr<Waiter>& w) {
  std::lock_guard lk(mu_);
  if (status_ == Status::finished || status_ == Status::cancelled) return false;
  waiters_.push_back(w);
  return true;
}

void FutureState::remove_waiter(const Waiter* w) {
  std::lock_guard lk(mu_);
  std::erase_if(waiters_, [w](const std::shared_ptr<Waiter>& x) { return x.get() == w; });
}

void FutureState::add_callback(std::function<void(Future)> cb) {
  {
    std::lock_guard lk(mu_);
    if (status_ != Status::finished && status_ != Status::cancelled) {
      callbacks_.push_back(std::move(cb));
      return;
    }
  }
  run_callback(cb, shared_from_this());
}

std::exception_ptr FutureState::error_ptr() const {
  switch (failure_) {
    case Failure::none:
      return nullptr;
    case Failure::connection:
      return std::make_exception_ptr(ConnectionError(task_name_ + ": " + error_message_));
    case Failure::task:
      break;
  }
  return make_task_error(task_name_, error_type_, error_message_);
}

void run_callback(const std::function<void(Future)>& cb, const StatePtr& s) noexcept {
  try {
    cb(FutureAccess::wrap(s));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zexec: done callback of task %llu (%s) threw: %s\n",
                 static_cast<unsigned long long>(s->id()), s->task_name().c_str(), e.what());
  } catch (...) {
    std::fprintf(stderr, "zexec: done callback of task %llu (%s) threw a non-std exception\n",
                 static_cast<unsigned long long>(s->id()), s->task_name().c_str());
  }
}

}  // namespace zexec::detail
