#include "io_thread.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <future>
#include <memory>
#include <string>
#include <zmq.hpp>

#include "log.hpp"
#include "zexec/detail/zmq_io.hpp"

namespace zexec::worker_internal {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How long closing may wait for the last events to reach the daemon (ZMQ_LINGER and our own
// drain): bounded, so a worker never hangs on exit because the daemon stopped reading.
constexpr int kCloseLingerMs = 1000;
// Frames handled per wake-up, so a flood of tasks cannot starve heartbeats and events.
constexpr int kMaxFramesPerWake = 256;

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

// One connection to the daemon: the sockets, the frames waiting to be sent, the timers.
// Lives on the I/O thread's stack, so the sockets never leave that thread.
class Session {
 public:
  Session(const WorkerConfig& config, Mailbox& mailbox, pid_t parent_pid)
      : config_(config),
        mailbox_(mailbox),
        parent_pid_(parent_pid),
        ctx_(1),
        tasks_(ctx_, zmq::socket_type::pull),
        events_(ctx_, zmq::socket_type::push) {
    tasks_.set(zmq::sockopt::maxmsgsize, proto::kMaxMessageBytes);
    tasks_.set(zmq::sockopt::linger, 0);  // nothing we would still want to read at exit
    events_.set(zmq::sockopt::linger, kCloseLingerMs);
    connect(tasks_, "ZEXEC_TASKS_ENDPOINT", config.tasks_endpoint);
    connect(events_, "ZEXEC_EVENTS_ENDPOINT", config.events_endpoint);
  }

  // Returns the exit code; may _Exit the process if the daemon died during a task.
  int serve(const proto::WorkerHello& hello);

 private:
  void receive_frames();
  void handle_frame(std::string_view frame);
  void collect_events();  // Mailbox outbox -> queued worker_events frames
  void queue(const proto::Message& m);
  void send_pending();  // never blocks: what the socket does not take now waits for POLLOUT
  void drain_pending();
  int exit_orphaned();

  const WorkerConfig& config_;
  Mailbox& mailbox_;
  pid_t parent_pid_;
  zmq::context_t ctx_;
  zmq::socket_t tasks_;
  zmq::socket_t events_;
  std::deque<zmq::message_t> pending_;
  Clock::time_point last_queued_ = Clock::now();
  std::uint32_t capacity_ = 0;  // as announced in worker_hello
  bool discarding_parts_ = false;
  bool warned_capacity_ = false;
};

int Session::serve(const proto::WorkerHello& hello) {
  const milliseconds heartbeat(config_.heartbeat_ms);
  capacity_ = hello.capacity;
  queue(hello);
  send_pending();
  auto next_parent_check = Clock::now() + heartbeat;
  while (true) {
    // Read the flag before collecting: the executor posts its last event before setting it.
    if (mailbox_.executor_exited()) {
      collect_events();
      break;
    }
    auto now = Clock::now();
    auto wake_at = std::min(last_queued_ + heartbeat, next_parent_check);
    long timeout_ms = std::max<long>(0, std::chrono::ceil<milliseconds>(wake_at - now).count());
    zmq_pollitem_t items[] = {
        {tasks_.handle(), 0, ZMQ_POLLIN, 0},
        {nullptr, mailbox_.wake_fd(), ZMQ_POLLIN, 0},
        {events_.handle(), 0, static_cast<short>(pending_.empty() ? 0 : ZMQ_POLLOUT), 0},
    };
    poll_items(items, 3, timeout_ms);
    if (items[1].revents & ZMQ_POLLIN) mailbox_.clear_wake();
    if (items[0].revents & ZMQ_POLLIN) receive_frames();
    collect_events();

    now = Clock::now();
    if (now >= next_parent_check) {
      if (::getppid() != parent_pid_) return exit_orphaned();
      next_parent_check = now + heartbeat;
    }
    if (now - last_queued_ >= heartbeat) {
      // An empty worker_events is the heartbeat. If earlier frames are still stuck, the daemon
      // is not reading; piling heartbeats behind them would tell it nothing.
      if (pending_.empty())
        queue(proto::WorkerEvents{config_.worker_id, 0, {}});
      else
        last_queued_ = now;
    }
    send_pending();
  }
  drain_pending();
  return 0;
}

void Session::receive_frames() {
  for (int i = 0; i < kMaxFramesPerWake; ++i) {
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

void Session::handle_frame(std::string_view frame) {
  proto::Decoded decoded = proto::decode(frame);
  if (!decoded) {
    log_warning("dropped a bad frame from the daemon: " + decoded.error);
    return;
  }
  std::visit(Overloaded{
                 [&](proto::Tasks& m) {
                   mailbox_.push_tasks(std::move(m.tasks));
                   if (!warned_capacity_ && mailbox_.unfinished() > capacity_) {
                     warned_capacity_ = true;
                     log_warning("the daemon sent more tasks than our capacity; running them anyway");
                   }
                 },
                 [&](proto::Revoke& m) {
                   auto revoked = mailbox_.revoke(m.task_ids);
                   // Flush the outbox first: every task left out of the answer because it has
                   // started then has its started event in front of the answer, so the daemon
                   // knows where each task is the moment it reads worker_revoked.
                   collect_events();
                   queue(proto::WorkerRevoked{config_.worker_id, std::move(revoked)});
                 },
                 [&](proto::Shutdown&) { mailbox_.stop(); },
                 [&](auto& other) {
                   log_warning(std::string("ignored a ") + proto::type_name(proto::type_of(other)) +
                               " message, which daemons do not send to workers");
                 },
             },
             *decoded.message);
}

void Session::collect_events() {
  for (EventBatch& b : mailbox_.take_events()) {
    // The header goes into the room left in front of the events, ending where they begin.
    std::string header;
    proto::append_worker_events_header(header, config_.worker_id, b.busy_us, b.count);
    const std::size_t start = EventBatch::kHeaderRoom - header.size();
    b.bytes.replace(start, header.size(), header);
    auto* bytes = new std::string(std::move(b.bytes));
    pending_.emplace_back(
        bytes->data() + start, bytes->size() - start,
        [](void*, void* hint) { delete static_cast<std::string*>(hint); }, bytes);
    last_queued_ = Clock::now();
  }
}

void Session::queue(const proto::Message& m) {
  // The frame owns its bytes, so a big result is not copied again on its way into ZeroMQ.
  auto* bytes = new std::string(proto::encode(m));
  pending_.emplace_back(
      bytes->data(), bytes->size(), [](void*, void* hint) { delete static_cast<std::string*>(hint); }, bytes);
  last_queued_ = Clock::now();
}

void Session::send_pending() {
  while (!pending_.empty()) {
    if (!zexec::detail::send_now(events_, pending_.front())) return;  // EAGAIN: HWM reached (or EINTR)
    pending_.pop_front();
  }
}

void Session::drain_pending() {
  auto deadline = Clock::now() + milliseconds(kCloseLingerMs);
  send_pending();
  while (!pending_.empty()) {
    auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    zmq_pollitem_t item{events_.handle(), 0, ZMQ_POLLOUT, 0};
    poll_items(&item, 1, left);
    send_pending();
  }
  if (!pending_.empty())
    log_warning("the daemon is not reading; dropped " + std::to_string(pending_.size()) +
                " messages at exit");
  // What is sent but not yet transmitted gets ZMQ_LINGER (kCloseLingerMs) when the sockets close.
}

int Session::exit_orphaned() {
  log_warning("parent process " + std::to_string(parent_pid_) + " is gone; exiting");
  mailbox_.stop();
  events_.set(zmq::sockopt::linger, 0);  // nobody is left to deliver to
  if (mailbox_.executor_busy()) {
    // The running task cannot be interrupted and nobody wants its result: leave now rather
    // than linger as an orphan for as long as the task takes.
    std::_Exit(1);
  }
  return 1;
}

}  // namespace

IoThread::IoThread(WorkerConfig config, Mailbox& mailbox, proto::WorkerHello hello, pid_t parent_pid)
    : config_(std::move(config)), mailbox_(mailbox), hello_(std::move(hello)), parent_pid_(parent_pid) {}

IoThread::~IoThread() {
  join();
}

void IoThread::start() {
  // Shared with the thread: set_value() may still be finishing when start() has returned.
  auto ready = std::make_shared<std::promise<void>>();
  auto connected = ready->get_future();
  thread_ = std::thread([this, ready] {
    bool started = false;
    try {
      Session session(config_, mailbox_, parent_pid_);
      started = true;
      ready->set_value();
      exit_code_ = session.serve(hello_);
    } catch (const std::exception& e) {
      if (!started) {
        ready->set_exception(
            dynamic_cast<const WorkerError*>(&e)
                ? std::current_exception()
                : std::make_exception_ptr(WorkerError(std::string("cannot set up sockets: ") + e.what())));
        return;
      }
      log_warning(std::string("I/O thread failed: ") + e.what());
      exit_code_ = 1;
    }
    // Whatever ended the I/O, tasks must stop: nobody would hear of their results.
    mailbox_.stop();
  });
  try {
    connected.get();
  } catch (...) {
    thread_.join();
    throw;
  }
}

void IoThread::join() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace zexec::worker_internal
