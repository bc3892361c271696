#include "future_state.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstdio>
#include <ctime>

#include "task_errors.hpp"

namespace zexec::detail {

namespace {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
              std::atomic<std::uint32_t>::is_always_lock_free);

std::uint32_t* futex_word(std::atomic<std::uint32_t>& a) {
  return reinterpret_cast<std::uint32_t*>(&a);
}

// Sleeps while *word == expected, until woken or the deadline (absolute, CLOCK_MONOTONIC, which
// is what std::chrono::steady_clock reads on Linux). Spurious returns are fine: callers loop.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, const Deadline& deadline) {
  timespec ts{};
  if (deadline) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline->time_since_epoch()).count();
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
  }
  ::syscall(SYS_futex, futex_word(word), FUTEX_WAIT_BITSET_PRIVATE, expected, deadline ? &ts : nullptr,
            nullptr, FUTEX_BITSET_MATCH_ANY);
}

void futex_wake(std::atomic<std::uint32_t>& word, int threads) {
  ::syscall(SYS_futex, futex_word(word), FUTEX_WAKE_PRIVATE, threads, nullptr, nullptr, 0);
}

const std::string kNoText;

thread_local CompletionBatch* t_batch = nullptr;

}  // namespace

CompletionBatch::CompletionBatch() : prev_(t_batch) {
  t_batch = this;
}

CompletionBatch::~CompletionBatch() {
  t_batch = prev_;
  // In completion order; consecutive items for one waiter go in under one lock.
  for (std::size_t i = 0; i < items_.size();) {
    Waiter& w = *items_[i].first;
    {
      std::lock_guard lk(w.mu);
      for (; i < items_.size() && items_[i].first.get() == &w; ++i)
        w.completed.push_back(std::move(items_[i].second));
    }
    w.cv.notify_all();
  }
}

bool CompletionBatch::add(const std::shared_ptr<Waiter>& w, const StatePtr& s) {
  if (!t_batch) return false;
  t_batch->items_.emplace_back(w, s);
  return true;
}

void SmallLock::lock_slow(std::uint32_t c) noexcept {
  if (c != 2) c = v_.exchange(2, std::memory_order_acquire);
  while (c != 0) {
    futex_wait(v_, 2, std::nullopt);
    c = v_.exchange(2, std::memory_order_acquire);
  }
}

void SmallLock::wake_one() noexcept {
  futex_wake(v_, 1);
}

bool FutureState::add_user_if_held() noexcept {
  std::uint32_t n = users_.load(std::memory_order_acquire);
  while (n > 0)
    if (users_.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel)) return true;
  return false;
}

bool FutureState::set_running() {
  std::lock_guard lk(mu_);
  std::uint32_t w = word_.load(std::memory_order_relaxed);
  if (static_cast<Status>(w & kStatusMask) != Status::pending) return false;
  // Keep kSleepers: a thread asleep in wait() must still be woken at completion.
  while (!word_.compare_exchange_weak(w, (w & ~kStatusMask) | static_cast<std::uint32_t>(Status::running),
                                      std::memory_order_release, std::memory_order_relaxed)) {
  }
  return true;
}

template <class Set>
bool FutureState::complete(Status final_status, Set&& set) {
  // Keeps the state alive through the notifications even if the caller held the last reference.
  StatePtr self = shared_from_this();
  std::shared_ptr<Waiter> waiter;
  std::unique_ptr<Extras> extras;
  std::uint32_t old;
  {
    std::lock_guard lk(mu_);
    if (is_final(word_.load(std::memory_order_relaxed))) return false;
    set();
    waiter.swap(waiter_);
    extras.swap(extras_);
    // The client's bookkeeping (poll queue, unfinished count) and the status change as one
    // step for readers (kCompleting), so neither `f.result(); client.unfinished()` reads a stale
    // count nor does `client.wait_all(); f.done()` see a pending state. on_done only takes the
    // client's leaf lock, so holding mu_ here cannot deadlock.
    old = word_.exchange(static_cast<std::uint32_t>(final_status) | kCompleting, std::memory_order_acq_rel);
    if (auto o = owner_.lock()) o->on_done(self);
    word_.store(static_cast<std::uint32_t>(final_status), std::memory_order_release);
  }
  if (old & kSleepers) futex_wake(word_, INT_MAX);
  if (waiter && !CompletionBatch::add(waiter, self)) waiter->push(self);
  if (extras) {
    for (auto& w : extras->waiters)
      if (!CompletionBatch::add(w, self)) w->push(self);
    for (auto& cb : extras->callbacks) run_callback(cb, self);
  }
  return true;
}

bool FutureState::set_value(std::string bytes) {
  return complete(Status::finished, [&] { value_ = std::move(bytes); });
}

bool FutureState::set_error(Failure kind, std::string type, std::string message) {
  return complete(Status::finished, [&] {
    failure_ = kind == Failure::none ? Failure::task : kind;
    error_ = std::make_unique<ErrorText>(ErrorText{std::move(type), std::move(message)});
  });
}

bool FutureState::set_cancelled() {
  return complete(Status::cancelled, [] {});
}

const std::string& FutureState::error_type() const noexcept {
  return error_ ? error_->type : kNoText;
}

const std::string& FutureState::error_message() const noexcept {
  return error_ ? error_->message : kNoText;
}

bool FutureState::wait(const Deadline& deadline) const {
  for (;;) {
    std::uint32_t w = settled_word();
    if (is_final(w)) return true;
    if (!(w & kSleepers)) {
      if (!word_.compare_exchange_weak(w, w | kSleepers, std::memory_order_acq_rel)) continue;
      w |= kSleepers;
    }
    if (deadline && Clock::now() >= *deadline) return done();
    futex_wait(word_, w, deadline);
  }
}

bool FutureState::add_waiter(const std::shared_ptr<Waiter>& w) {
  std::lock_guard lk(mu_);
  if (is_final(word_.load(std::memory_order_relaxed))) return false;
  if (!waiter_)
    waiter_ = w;
  else
    extras().waiters.push_back(w);
  return true;
}

void FutureState::remove_waiter(const Waiter* w) {
  std::lock_guard lk(mu_);
  if (waiter_.get() == w) {
    waiter_.reset();
    return;
  }
  if (extras_)
    std::erase_if(extras_->waiters, [w](const std::shared_ptr<Waiter>& x) { return x.get() == w; });
}

void FutureState::add_callback(std::function<void(Future)> cb) {
  {
    std::lock_guard lk(mu_);
    if (!is_final(word_.load(std::memory_order_relaxed))) {
      extras().callbacks.push_back(std::move(cb));
      return;
    }
  }
  run_callback(cb, shared_from_this());
}

std::exception_ptr FutureState::error_ptr() const {
  switch (failure_) {
    case Failure::none:
      return nullptr;
    case Failure::task:
      return make_task_error(task_name_, error_type(), error_message());
    default:
      return connection_error(failure_, error_type(), task_name_ + ": " + error_message());
  }
}

std::exception_ptr connection_error(Failure kind, const std::string& code, const std::string& text) {
  if (kind == Failure::daemon_lost) return std::make_exception_ptr(DaemonLostError(text));
  if (kind == Failure::daemon_refused) {
    // text ends with daemon_error_text(): what follows "reported CODE: " is the daemon's own.
    const std::string marker = " reported " + code + ": ";
    auto at = text.find(marker);
    std::string message = at == std::string::npos ? std::string() : text.substr(at + marker.size());
    return std::make_exception_ptr(DaemonError(code, std::move(message), text));
  }
  return std::make_exception_ptr(ConnectionError(text));
}

bool is_fatal_error_code(std::string_view code) noexcept {
  static constexpr std::string_view kFatal[] = {"unknown_client",   "bad_version",           "shutting_down",
                                                "too_many_clients", "results_socket_failed", "backlogged"};
  return std::find(std::begin(kFatal), std::end(kFatal), code) != std::end(kFatal);
}

std::string daemon_error_text(const std::string& endpoint, const std::string& code,
                              const std::string& message) {
  return "zexecd at " + endpoint + " reported " + code + ": " + message;
}

StateSet::StateSet(std::size_t expected) {
  std::size_t capacity = std::bit_ceil(std::max<std::size_t>(16, expected * 2));
  slots_.assign(capacity, nullptr);
  shift_ = 64 - static_cast<unsigned>(std::countr_zero(capacity));
}

std::size_t StateSet::home(const FutureState* s) const noexcept {
  // Fibonacci hashing: heap addresses share their low bits, the product's top bits do not.
  return static_cast<std::size_t>((reinterpret_cast<std::uintptr_t>(s) * 0x9E3779B97F4A7C15ull) >> shift_);
}

bool StateSet::insert(const FutureState* s) {
  const std::size_t mask = slots_.size() - 1;
  if ((size_ + 1) * 2 > slots_.size()) {  // more than expected: grow (never for as_completed)
    StateSet bigger(slots_.size());
    for (const FutureState* x : slots_)
      if (x) bigger.insert(x);
    *this = std::move(bigger);
    return insert(s);
  }
  for (std::size_t i = home(s);; i = (i + 1) & mask) {
    if (slots_[i] == s) return false;
    if (!slots_[i]) {
      slots_[i] = s;
      ++size_;
      return true;
    }
  }
}

bool StateSet::contains(const FutureState* s) const {
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = home(s);; i = (i + 1) & mask) {
    if (slots_[i] == s) return true;
    if (!slots_[i]) return false;
  }
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
