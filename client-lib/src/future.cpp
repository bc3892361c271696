#include "zexec/future.hpp"

#include "future_state.hpp"

namespace zexec {

using detail::Status;

Future::Future(std::shared_ptr<detail::FutureState> s, bool user) noexcept
    : state_(std::move(s)), user_(user && state_) {
  if (user_) state_->add_user();
}

Future::Future(const Future& other) noexcept : state_(other.state_), user_(other.user_) {
  if (user_) state_->add_user();
}

Future::Future(Future&& other) noexcept : state_(std::move(other.state_)), user_(other.user_) {
  other.user_ = false;
}

Future& Future::operator=(const Future& other) noexcept {
  if (this != &other) *this = Future(other);
  return *this;
}

Future& Future::operator=(Future&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
    user_ = other.user_;
    other.user_ = false;
  }
  return *this;
}

Future::~Future() {
  release();
}

void Future::release() noexcept {
  if (user_) state_->release_user();
  user_ = false;
}

const detail::FutureState& Future::state() const {
  if (!state_) throw Error("zexec::Future: empty handle (default-constructed, not from submit())");
  return *state_;
}

std::uint64_t Future::id() const {
  return state().id();
}
const std::string& Future::task_name() const {
  return state().task_name();
}
bool Future::done() const {
  return state().done();
}
bool Future::running() const {
  return state().status() == Status::running;
}
bool Future::cancelled() const {
  return state().status() == Status::cancelled;
}

bool Future::cancel(bool force) {
  switch (state().status()) {
    case Status::cancelled:
      return true;
    case Status::finished:
      return false;
    case Status::running:
      if (!force) return false;
      break;
    case Status::pending:
      break;
  }
  if (auto owner = state_->owner()) return owner->cancel(state_, force);
  // No client behind it (test seam, or the client is gone): nobody else will run or settle it.
  state_->set_cancelled();
  return state_->status() == Status::cancelled;
}

namespace {

// Waits for `s` or throws TimeoutError. Blocking on the thread that delivers results would wait
// forever, so that is refused with a clear message instead.
void wait_or_throw(const detail::FutureState& s, const Timeout& timeout, const char* what) {
  if (s.done()) return;
  if (auto owner = s.owner(); owner && owner->on_io_thread())
    throw Error(s.task_name() + ": " + what +
                " called from the client's I/O thread (a done callback) on a task that is not done; it "
                "would wait forever");
  if (!s.wait(detail::deadline_from(timeout)))
    throw TimeoutError(s.task_name() + ": task " + std::to_string(s.id()) + " not done after " +
                       detail::format_seconds(*timeout));
}

[[noreturn]] void throw_cancelled(const detail::FutureState& s) {
  throw CancelledError(s.task_name() + ": task " + std::to_string(s.id()) + " was cancelled");
}

}  // namespace

const std::string& Future::wait_value(const Timeout& timeout) const {
  const auto& s = state();
  wait_or_throw(s, timeout, "result()");
  if (s.status() == Status::cancelled) throw_cancelled(s);
  if (auto e = s.error_ptr()) std::rethrow_exception(e);
  return s.value();
}

std::string Future::raw_result(Timeout timeout) const {
  return wait_value(timeout);
}

std::exception_ptr Future::exception(Timeout timeout) const {
  const auto& s = state();
  wait_or_throw(s, timeout, "exception()");
  if (s.status() == Status::cancelled) throw_cancelled(s);
  return s.error_ptr();
}

bool Future::wait_done(Timeout timeout) const {
  const auto& s = state();
  if (s.done()) return true;
  return s.wait(detail::deadline_from(timeout));
}

void Future::add_done_callback(std::function<void(Future)> cb) const {
  if (!cb) return;
  state();  // throws for an empty handle
  state_->add_callback(std::move(cb));
}

}  // namespace zexec
