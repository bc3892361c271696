// ClientCore, the user-thread side: connect, submit, poll, close (cancel: cancel.cpp).
#include "client_core.hpp"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

namespace zexec::detail {

namespace {

// Largest task we accept: its `submit` frame must stay under the protocol's frame limit.
constexpr std::size_t kMaxTaskArgsBytes = static_cast<std::size_t>(proto::kMaxMessageBytes) - 64 * 1024;
constexpr std::size_t kMaxTaskNameBytes = 64 * 1024;

std::string default_client_name() {
  std::string name = program_invocation_short_name ? program_invocation_short_name : "";
  return name.empty() ? std::string("zexec-client") : name;
}

}  // namespace

ClientCore::ClientCore(std::string endpoint, ClientOptions options)
    : endpoint_(std::move(endpoint)), options_(std::move(options)), ctx_(1) {
  client_name_ = options_.name.empty() ? default_client_name() : options_.name;
}

ClientCore::~ClientCore() {
  close();
}

void ClientCore::connect() {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw Error(std::string("zexec::Client: eventfd failed: ") + std::strerror(errno));
  try {
    open_dealer();
  } catch (const zmq::error_t& e) {
    throw ConnectionError("cannot connect to zexecd at " + endpoint_ + ": " + e.what());
  }
  sendq_.push_back(proto::encode(proto::Hello{client_name_, static_cast<std::int64_t>(getpid())}));
  io_ = std::thread([this] { run(); });
  io_id_ = io_.get_id();

  const auto deadline = Clock::now() + options_.connect_timeout;
  std::string aborted;
  std::unique_lock lk(mu_);
  while (phase_ == Phase::connecting) {
    auto now = Clock::now();
    if (now >= deadline) break;
    auto until = options_.abort_connect ? std::min(deadline, now + std::chrono::milliseconds(50)) : deadline;
    reply_cv_.wait_until(lk, until);
    if (phase_ == Phase::connecting && options_.abort_connect) {
      lk.unlock();
      auto why = options_.abort_connect();
      lk.lock();
      if (why) {
        aborted = *why;
        break;
      }
    }
  }
  if (phase_ == Phase::ready) return;
  std::exception_ptr why =
      phase_ != Phase::connecting ? connection_error(phase_failure_, phase_code_, phase_reason_)
      : !aborted.empty()          ? std::make_exception_ptr(ConnectionError(aborted))
                                  : std::make_exception_ptr(ConnectionError(
                                        "zexecd not reachable at " + endpoint_ + " after " +
                                        format_seconds(options_.connect_timeout) +
                                        " (no welcome; is zexecd running and serving that endpoint?)"));
  lk.unlock();
  close();
  std::rethrow_exception(why);
}

void ClientCore::close() noexcept {
  std::lock_guard close_lk(close_mu_);
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  if (wake_fd_ >= 0) wake();
  if (io_.joinable()) {
    if (on_io_thread()) return;  // close() from a done callback: the loop ends after the callback
    io_.join();
  }
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
    wake_fd_ = -1;
  }
}

void ClientCore::wake() noexcept {
  std::uint64_t one = 1;
  // EAGAIN only if the counter is saturated, i.e. a wake-up is pending anyway.
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void ClientCore::throw_unusable() const {
  if (phase_ == Phase::closed) throw ConnectionError("zexec::Client for " + endpoint_ + " is closed");
  std::rethrow_exception(connection_error(phase_failure_, phase_code_, phase_reason_));
}

namespace {

// TaskOptions -> the uint32 options of the wire; throws zexec::Error naming what is out of range.
std::uint32_t option_value(std::int64_t v, std::string_view name, const char* what) {
  if (v < 0 || v > UINT32_MAX) [[unlikely]]
    throw Error("submit " + std::string(name) + ": " + what + " out of range (" + std::to_string(v) + ")");
  return static_cast<std::uint32_t>(v);
}

}  // namespace

// Takes one of the max_pending slots (the daemon's limit on this client's unfinished tasks),
// waiting for a finishing task to free one until `deadline`. unfinished_ counts the task from
// here on, before the I/O thread can see it (it may finish it at once).
// The slot is taken with a compare-and-swap: no lock unless it has to wait.
bool ClientCore::try_reserve() noexcept {
  const std::uint32_t limit = max_pending_.load(std::memory_order_relaxed);
  std::size_t n = unfinished_.load(std::memory_order_relaxed);
  while (limit == 0 || n < limit)
    if (unfinished_.compare_exchange_weak(n, n + 1)) return true;
  return false;
}

void ClientCore::reserve_pending(std::string_view name, SubmitDeadline& deadline) {
  if (try_reserve()) return;
  // Slots are given back under done_mu_ (on_done, unreserve_pending), so waiting under it
  // cannot miss one.
  std::unique_lock lk(done_mu_);
  const std::uint32_t limit = max_pending_;
  auto room = [&] { return try_reserve(); };
  if (!room()) {
    // Tasks finish on the I/O thread: a done callback waiting for one would wait forever.
    if (on_io_thread())
      throw QueueFullError(std::string(name), "QueueFull",
                           "this client already has " + std::to_string(limit) +
                               " unfinished tasks, the most zexecd at " + endpoint_ +
                               " accepts, and a done callback cannot wait for room");
    // A lost connection fails every unfinished task, which wakes this wait too.
    if (!done_cv_.wait_until(lk, deadline.get(), room))
      throw QueueFullError(std::string(name), "QueueFull",
                           "this client had " + std::to_string(limit) +
                               " unfinished tasks, the most zexecd at " + endpoint_ +
                               " accepts (max_pending), for " + format_seconds(options_.submit_timeout));
  }
}

void ClientCore::unreserve_pending() noexcept {
  {
    std::lock_guard lk(done_mu_);
    --unfinished_;
  }
  done_cv_.notify_all();  // a submit() may be waiting for exactly this slot
}

Future ClientCore::submit(std::string_view name, std::string args, const TaskOptions& options) {
  if (name.empty()) throw Error("submit: empty task name");
  if (name.size() > kMaxTaskNameBytes)
    throw Error("submit " + std::string(name) + ": task name of " + std::to_string(name.size()) + " bytes");
  if (args.size() > kMaxTaskArgsBytes)
    throw Error("submit " + std::string(name) + ": arguments of " + std::to_string(args.size()) +
                " bytes exceed the 64 MiB message limit");
  proto::TaskOptionFields wire;
  wire.timeout_ms = option_value(options.timeout.count(), name, "timeout");
  wire.retries = option_value(options.retries, name, "retries");
  wire.crash_retries = option_value(options.crash_retries, name, "crash_retries");
  wire.retry_backoff_ms = option_value(options.retry_backoff.count(), name, "retry_backoff");

  // One deadline for both waits (a slot under max_pending, then room in the outbox), read off
  // the clock only if one of them has to wait.
  SubmitDeadline deadline{options_.submit_timeout};
  reserve_pending(name, deadline);
  const std::uint64_t id = next_task_id_++;
  auto state = std::make_shared<FutureState>(id, std::string(name), weak_from_this());
  // The caller's handle exists before the I/O thread can see the task: a task that finishes at
  // once must find it alive, or poll() would never return it.
  Future future = FutureAccess::make(state);

  bool was_empty = false;
  {
    std::unique_lock lk(mu_);
    auto full = [this] { return outbox_.size() >= options_.max_outbox; };
    if (accepting(phase_) && full()) {
      // The I/O thread is the one that empties the outbox: it must never wait for room.
      bool ok = false;
      if (!on_io_thread()) {
        ++space_waiters_;
        ok = space_cv_.wait_until(lk, deadline.get(), [&] { return !accepting(phase_) || !full(); });
        --space_waiters_;
      }
      if (!ok) {
        lk.unlock();
        unreserve_pending();
        throw QueueFullError(std::string(name), "QueueFull",
                             std::to_string(options_.max_outbox) + " tasks waiting to be sent for " +
                                 format_seconds(options_.submit_timeout) + " (zexecd at " + endpoint_ +
                                 " is not taking them)");
      }
    }
    if (!accepting(phase_)) {  // reconnecting: queued until the session is resumed
      lk.unlock();
      unreserve_pending();
      std::lock_guard relock(mu_);
      throw_unusable();
    }
    was_empty = outbox_.empty();
    state->queued = true;
    outbox_.push_back(OutEntry{std::move(state), std::move(args), wire});
  }
  // Waking only on empty -> non-empty keeps a burst of submits at one eventfd write; the I/O
  // thread drains the whole outbox into one `submit` message.
  if (was_empty) wake();
  return future;
}

void ClientCore::on_done(const StatePtr& s) noexcept {
  {
    std::lock_guard lk(done_mu_);
    if (unfinished_ > 0) --unfinished_;
    // Only futures the caller holds are queued; poll() checks again when it takes one, so a
    // future dropped after completing is skipped there.
    if (s->has_user()) poll_queue_.push_back(s);
    // Dropped after completing: prune dead entries whenever the queue has doubled since the last
    // prune (amortised O(1) per completion).
    if (poll_queue_.size() >= prune_at_) {
      std::erase_if(poll_queue_, [](const std::weak_ptr<FutureState>& w) {
        auto x = w.lock();
        return !x || !x->has_user();
      });
      prune_at_ = std::max<std::size_t>(1024, 2 * poll_queue_.size());
    }
  }
  done_cv_.notify_all();
}

std::optional<Future> ClientCore::poll(const Timeout& timeout) {
  const Deadline deadline = deadline_from(timeout);
  std::unique_lock lk(done_mu_);
  for (;;) {
    while (!poll_queue_.empty()) {
      auto w = std::move(poll_queue_.front());
      poll_queue_.pop_front();
      // Returned only while the caller holds a Future of this task.
      if (auto s = w.lock(); s && s->add_user_if_held()) return FutureAccess::adopt(std::move(s));
    }
    if (on_io_thread()) return std::nullopt;  // nothing can complete while we block this thread
    if (!deadline) {
      done_cv_.wait(lk);
    } else if (done_cv_.wait_until(lk, *deadline) == std::cv_status::timeout) {
      if (poll_queue_.empty()) return std::nullopt;
    }
  }
}

bool ClientCore::wait_all(const Timeout& timeout) {
  const Deadline deadline = deadline_from(timeout);
  std::unique_lock lk(done_mu_);
  auto none = [this] { return unfinished_ == 0; };
  if (none()) return true;
  if (on_io_thread()) return false;
  if (!deadline) {
    done_cv_.wait(lk, none);
    return true;
  }
  return done_cv_.wait_until(lk, *deadline, none);
}

std::size_t ClientCore::unfinished() const {
  std::lock_guard lk(done_mu_);
  return unfinished_;
}

void ClientCore::set_last_error(std::string text) {
  std::fprintf(stderr, "zexec: %s\n", text.c_str());
  std::lock_guard lk(mu_);
  last_error_ = std::move(text);
}

std::string ClientCore::last_error() const {
  std::lock_guard lk(mu_);
  return last_error_;
}

bool ClientCore::connected() const {
  std::lock_guard lk(mu_);
  return phase_ == Phase::ready;
}

proto::Welcome ClientCore::welcome() const {
  std::lock_guard lk(mu_);
  return welcome_;
}

std::string ClientCore::results_endpoint() const {
  std::lock_guard lk(mu_);
  return results_endpoint_;
}

}  // namespace zexec::detail
