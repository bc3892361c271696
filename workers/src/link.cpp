#include "link.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <unordered_set>

#include "log.hpp"
#include "zexec/detail/zmq_io.hpp"

namespace zexec::worker_internal {
namespace {

using std::chrono::milliseconds;

// A task running longer than this has the watchdog take the sockets: its started event goes
// out, revoke is answered, heartbeats continue. Shorter ones are answered when they end.
constexpr auto kTakeOver = milliseconds(1);
// Between tasks the executor looks at the sockets and sends waiting results this often, so a
// long queue of short tasks still hears revoke and reports results as it goes.
constexpr auto kBetweenTasks = milliseconds(1);
// The watchdog stops its kTakeOver rounds when no task has run for this long.
constexpr auto kDeepSleepAfter = milliseconds(200);
// How long closing may wait for the last events to reach the daemon (our drain and
// ZMQ_LINGER): bounded, so a worker never hangs on exit because the daemon stopped reading.
constexpr int kCloseLingerMs = 1000;
// Frames read per poll, so a flood of tasks cannot starve heartbeats and events.
constexpr int kMaxFramesPerPoll = 256;

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

// zmq_poll, retried on EINTR (a signal must not end the worker's I/O).
void poll_items(zmq_pollitem_t* items, int count, long timeout_ms) {
  while (zmq_poll(items, count, timeout_ms) < 0) {
    if (zmq_errno() != EINTR) throw zmq::error_t();
  }
}

void connect(zmq::socket_t& socket, const char* variable, const std::string& endpoint) {
  try {
    socket.connect(endpoint);
  } catch (const zmq::error_t& e) {
    throw WorkerError(std::string("cannot connect to ") + variable + "='" + endpoint + "': " + e.what());
  }
}

std::int64_t ns_of(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

Link::Link(const WorkerConfig& config, const proto::WorkerHello& hello, pid_t parent_pid)
    : config_(config),
      parent_pid_(parent_pid),
      capacity_(hello.capacity),
      ctx_(1),
      tasks_(ctx_, zmq::socket_type::pull),
      events_(ctx_, zmq::socket_type::push) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw WorkerError(std::string("eventfd: ") + std::strerror(errno));
  try {
    tasks_.set(zmq::sockopt::maxmsgsize, proto::kMaxMessageBytes);
    tasks_.set(zmq::sockopt::linger, 0);  // nothing we would still want to read at exit
    events_.set(zmq::sockopt::linger, kCloseLingerMs);
    connect(tasks_, "ZEXEC_TASKS_ENDPOINT", config.tasks_endpoint);
    connect(events_, "ZEXEC_EVENTS_ENDPOINT", config.events_endpoint);
  } catch (const zmq::error_t& e) {
    ::close(wake_fd_);
    throw WorkerError(std::string("cannot set up sockets: ") + e.what());
  } catch (...) {
    ::close(wake_fd_);
    throw;
  }
  auto now = Clock::now();
  last_flush_ = last_pump_ = now;
  next_parent_check_ = now + milliseconds(config_.heartbeat_ms);
  queue(hello);
  send_pending();
  watchdog_ = std::thread([this] { watch(); });
}

Link::~Link() {
  stop_watchdog();
  ::close(wake_fd_);
}

void Link::stop_watchdog() {
  {
    std::lock_guard lk(watch_mu_);
    stop_watch_ = true;
  }
  watch_cv_.notify_all();
  wake();  // out of its poll, if it is serving a long task
  if (watchdog_.joinable()) watchdog_.join();
}

void Link::wake() {
  std::uint64_t one = 1;
  // Can only fail with EAGAIN when the counter is saturated, which still means "readable".
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

// ---- the executor ------------------------------------------------------------------------------

void Link::take_io() {
  running_ = false;
  if (has_io_) wake();  // the watchdog is polling the sockets: ask for them back
  io_mu_.lock();
}

std::optional<proto::TaskSpec> Link::next(const proto::Event* finished) {
  take_io();
  std::unique_lock io(io_mu_, std::adopt_lock);
  // One clock read per task: it ends the task that ran (its busy time) and, unless we wait for
  // work, starts the next. (On this VM reading the clock cost as much as a no-op task's I/O.)
  auto now = Clock::now();
  try {
    if (finished) {
      auto busy = std::chrono::duration_cast<std::chrono::microseconds>(now - task_start_);
      append_event(*finished, static_cast<std::uint64_t>(std::max<std::int64_t>(0, busy.count())));
    }
    if (now - last_pump_ >= kBetweenTasks) pump(0);
    // With more tasks queued, results wait for a fuller frame, up to kBetweenTasks; with none,
    // the loop sends them before it waits.
    if (batch_.full() || now - last_flush_ >= kBetweenTasks) flush(now);
    while (!stop_ && queue_.empty()) {
      flush(now);
      pump(timer_timeout_ms(now));
      now = Clock::now();
    }
    if (stop_) flush(now);
  } catch (const zmq::error_t& e) {
    fail(std::string("I/O failed: ") + e.what());
  }
  if (stop_) return std::nullopt;
  proto::TaskSpec task = std::move(queue_.front());
  queue_.pop_front();
  // Reported when the task ends, or by the watchdog if it runs past kTakeOver.
  proto::Event started;
  started.task_id = task.id;
  started.kind = proto::Outcome::started;
  append_event(started, 0);

  task_start_ = now;
  last_busy_ns_ = ns_of(now);
  ++task_gen_;
  running_ = true;
  if (deep_) {
    std::lock_guard lk(watch_mu_);
    watch_cv_.notify_one();
  }
  return task;
}

int Link::close() {
  running_ = false;
  stop_watchdog();
  std::lock_guard io(io_mu_);
  flush(Clock::now());
  auto deadline = Clock::now() + milliseconds(kCloseLingerMs);
  try {
    send_pending();
    while (!pending_.empty()) {
      auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) break;
      zmq_pollitem_t item{events_.handle(), 0, ZMQ_POLLOUT, 0};
      poll_items(&item, 1, left);
      send_pending();
    }
  } catch (const std::exception& e) {
    log_warning(std::string("sending the last events failed: ") + e.what());
  }
  if (!pending_.empty())
    log_warning("the daemon is not reading; dropped " + std::to_string(pending_.size()) +
                " messages at exit");
  // What is sent but not yet transmitted gets ZMQ_LINGER (kCloseLingerMs) when the sockets close.
  return exit_code_;
}

// ---- the watchdog --------------------------------------------------------------------------------

void Link::watch() {
  std::uint64_t seen = task_gen_;
  for (;;) {
    {
      std::unique_lock lk(watch_mu_);
      if (stop_watch_) return;
      auto idle_for = std::chrono::nanoseconds(ns_of(Clock::now()) - last_busy_ns_);
      if (!running_ && idle_for > kDeepSleepAfter) {
        // Nothing to watch: sleep until a task starts (the executor wakes us then).
        deep_ = true;
        watch_cv_.wait(lk, [&] { return stop_watch_ || running_; });
        deep_ = false;
        if (stop_watch_) return;
        seen = task_gen_;
      }
      watch_cv_.wait_for(lk, kTakeOver, [&] { return stop_watch_; });
      if (stop_watch_) return;
    }
    // The same task, still running after a whole round: it is a long one.
    std::uint64_t gen = task_gen_;
    if (running_ && gen == seen) serve_during_task(gen);
    seen = task_gen_;
  }
}

void Link::serve_during_task(std::uint64_t task) {
  std::lock_guard io(io_mu_);
  has_io_ = true;
  try {
    flush(Clock::now());  // the started event, at least
    while (running_ && task_gen_ == task && !stop_) {
      {
        std::lock_guard lk(watch_mu_);
        if (stop_watch_) break;
      }
      pump(timer_timeout_ms(Clock::now()));
    }
  } catch (const std::exception& e) {
    fail(std::string("I/O failed: ") + e.what());
  }
  has_io_ = false;
}

// ---- I/O (io_mu_ held) ---------------------------------------------------------------------------

void Link::fail(const std::string& why) {
  log_warning(why);
  stop_ = true;
  exit_code_ = 1;
}

void Link::pump(long timeout_ms) {
  try {
    zmq_pollitem_t items[] = {
        {tasks_.handle(), 0, ZMQ_POLLIN, 0},
        {nullptr, wake_fd_, ZMQ_POLLIN, 0},
        {events_.handle(), 0, static_cast<short>(pending_.empty() ? 0 : ZMQ_POLLOUT), 0},
    };
    poll_items(items, 3, timeout_ms);
    if (items[1].revents & ZMQ_POLLIN) {
      std::uint64_t count;
      [[maybe_unused]] auto n = ::read(wake_fd_, &count, sizeof count);
    }
    if (items[0].revents & ZMQ_POLLIN) receive_frames();
    auto now = Clock::now();
    last_pump_ = now;
    timers(now);
    send_pending();
  } catch (const zmq::error_t& e) {
    fail(std::string("I/O failed: ") + e.what());
  }
}

long Link::timer_timeout_ms(Clock::time_point now) const {
  auto wake_at = std::min(last_queued_ + milliseconds(config_.heartbeat_ms), next_parent_check_);
  return std::max<long>(0, std::chrono::ceil<milliseconds>(wake_at - now).count());
}

void Link::timers(Clock::time_point now) {
  const milliseconds heartbeat(config_.heartbeat_ms);
  if (now >= next_parent_check_) {
    if (::getppid() != parent_pid_) {
      log_warning("parent process " + std::to_string(parent_pid_) + " is gone; exiting");
      // A running task cannot be interrupted and nobody wants its result: leave now rather
      // than linger as an orphan for as long as it takes.
      if (running_) std::_Exit(1);
      events_.set(zmq::sockopt::linger, 0);  // nobody is left to deliver to
      stop_ = true;
      exit_code_ = 1;
      return;
    }
    next_parent_check_ = now + heartbeat;
  }
  if (now - last_queued_ >= heartbeat) {
    // An empty worker_events is the heartbeat. If earlier frames are still stuck, the daemon
    // is not reading; piling heartbeats behind them would tell it nothing.
    if (pending_.empty())
      queue(proto::WorkerEvents{config_.worker_id, 0, {}});
    else
      last_queued_ = now;
  }
}

void Link::receive_frames() {
  for (int i = 0; i < kMaxFramesPerPoll; ++i) {
    zmq::message_t msg;
    if (!zexec::detail::recv_now(tasks_, msg)) return;
    // Every zexec message is one frame; a multipart message is refused as a whole.
    if (discarding_parts_ || msg.more()) {
      if (!discarding_parts_) log_warning("dropped a multipart message from the daemon");
      discarding_parts_ = msg.more();
      continue;
    }
    handle_frame(msg.to_string_view());
  }
}

void Link::handle_frame(std::string_view frame) {
  proto::Decoded decoded = proto::decode(frame);
  if (!decoded) {
    log_warning("dropped a bad frame from the daemon: " + decoded.error);
    return;
  }
  std::visit(Overloaded{
                 [&](proto::Tasks& m) {
                   for (auto& t : m.tasks) queue_.push_back(std::move(t));
                   if (!warned_capacity_ && queue_.size() + (running_ ? 1 : 0) > capacity_) {
                     warned_capacity_ = true;
                     log_warning("the daemon sent more tasks than our capacity; running them anyway");
                   }
                 },
                 [&](proto::Revoke& m) {
                   // Every queued task is unstarted (the running one has left the queue), so
                   // this takes exactly the listed ones that have not started, in queue order.
                   std::unordered_set<std::uint64_t> wanted(m.task_ids.begin(), m.task_ids.end());
                   std::vector<std::uint64_t> removed;
                   std::erase_if(queue_, [&](const proto::TaskSpec& t) {
                     if (!wanted.count(t.id)) return false;
                     removed.push_back(t.id);
                     return true;
                   });
                   // Events first: every task left out of the answer because it started then
                   // has its started event in front of the answer.
                   flush(Clock::now());
                   queue(proto::WorkerRevoked{config_.worker_id, std::move(removed)});
                 },
                 [&](proto::Shutdown&) { stop_ = true, exit_code_ = 0; },
                 [&](auto& other) {
                   log_warning(std::string("ignored a ") + proto::type_name(proto::type_of(other)) +
                               " message, which daemons do not send to workers");
                 },
             },
             *decoded.message);
}

void Link::append_event(const proto::Event& e, std::uint64_t busy_us) {
  if (batch_.full()) flush(Clock::now());
  proto::append_event(batch_.bytes, e);
  ++batch_.count;
  batch_.busy_us += busy_us;
}

void Link::flush(Clock::time_point now) {
  last_flush_ = now;
  if (batch_.count == 0) return;
  // The header goes into the room left in front of the events, ending where they begin: the
  // frame is the batch's own bytes.
  std::string header;
  proto::append_worker_events_header(header, config_.worker_id, batch_.busy_us, batch_.count);
  const std::size_t start = EventBatch::kHeaderRoom - header.size();
  batch_.bytes.replace(start, header.size(), header);
  auto* bytes = new std::string(std::move(batch_.bytes));
  pending_.emplace_back(
      bytes->data() + start, bytes->size() - start,
      [](void*, void* hint) { delete static_cast<std::string*>(hint); }, bytes);
  batch_ = EventBatch{};
  last_queued_ = last_flush_;
  send_pending();
}

void Link::queue(const proto::Message& m) {
  // The frame owns its bytes, so a big message is not copied again on its way into ZeroMQ.
  auto* bytes = new std::string(proto::encode(m));
  pending_.emplace_back(
      bytes->data(), bytes->size(), [](void*, void* hint) { delete static_cast<std::string*>(hint); }, bytes);
  last_queued_ = Clock::now();
}

void Link::send_pending() {
  while (!pending_.empty()) {
    if (!zexec::detail::send_now(events_, pending_.front())) return;  // EAGAIN: HWM reached (or EINTR)
    pending_.pop_front();
  }
}

}  // namespace zexec::worker_internal
