// The engine behind zexec::Client (internal): the user-facing side (submit, poll) in
// client_core.cpp, the I/O thread that owns the sockets in io_loop.cpp, cancellation (both
// sides) in cancel.cpp, losing the daemon and resuming the session (I/O thread) in session.cpp.
//
// Sharing rule: user threads never touch a ZeroMQ socket. They hand work to the I/O thread
// through mu_-guarded queues (outbox_, cancels_) and wake it through an eventfd, which zmq::poll
// watches like a socket. Everything under "I/O thread only" is touched by that thread alone.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "future_state.hpp"
#include "window_map.hpp"
#include "zexec/client.hpp"
#include "zexec/protocol.hpp"

namespace zexec::detail {

class ClientCore final : public StateOwner, public std::enable_shared_from_this<ClientCore> {
 public:
  ClientCore(std::string endpoint, ClientOptions options);
  ~ClientCore() override;

  // Starts the I/O thread and blocks until `welcome` (or throws ConnectionError).
  void connect();
  void close() noexcept;

  Future submit(std::string_view name, std::string args, const TaskOptions& options);
  std::optional<Future> poll(const Timeout& timeout);
  std::size_t cancel_all(bool force);
  bool wait_all(const Timeout& timeout);
  std::size_t unfinished() const;
  std::string last_error() const;
  bool connected() const;
  proto::Welcome welcome() const;
  std::string results_endpoint() const;

  const std::string& endpoint() const noexcept { return endpoint_; }

  // StateOwner
  bool cancel(const StatePtr& s, bool force) override;
  void on_done(const StatePtr& s) noexcept override;
  bool on_io_thread() const noexcept override { return std::this_thread::get_id() == io_id_.load(); }

 private:
  // reconnecting: the daemon was lost but the session may be resumed (session.cpp): futures stay
  // pending and submit() keeps queueing, as in ready.
  enum class Phase { connecting, ready, reconnecting, broken, closed };
  static bool accepting(Phase p) noexcept { return p == Phase::ready || p == Phase::reconnecting; }

  struct OutEntry {  // a submitted task not yet sent (its id and name are in the state)
    StatePtr state;
    std::string args;
    proto::TaskOptionFields options;
  };

  // One cancel round trip. The user thread waits on reply_cv_ for `answered` (guarded by mu_).
  struct CancelRequest {
    std::uint64_t request_id = 0;
    std::vector<StatePtr> states;  // empty + all: every task not started (with force: every task)
    bool all = false;
    bool force = false;  // also stop running tasks (Cancel::force)
    Clock::time_point deadline;
    // results, guarded by mu_
    bool answered = false;
    std::string failure;  // set instead of an answer when the connection went away
    std::size_t cancelled = 0;
    std::string frame;  // I/O thread only: the encoded `cancel`, sent again after a resume
  };

  // submit()'s deadline, read off the clock when first needed.
  class SubmitDeadline {
   public:
    explicit SubmitDeadline(std::chrono::nanoseconds timeout) : timeout_(timeout) {}
    Clock::time_point get() {
      // (Capped at a century, which is forever, so that now + timeout cannot overflow.)
      if (!at_) at_ = Clock::now() + std::min<Clock::duration>(timeout_, std::chrono::hours(24 * 365 * 100));
      return *at_;
    }

   private:
    std::chrono::nanoseconds timeout_;
    std::optional<Clock::time_point> at_;
  };

  std::size_t await_cancel(const std::shared_ptr<CancelRequest>& req);
  bool try_reserve() noexcept;
  void reserve_pending(std::string_view name, SubmitDeadline& deadline);
  void unreserve_pending() noexcept;
  void wake() noexcept;
  void set_last_error(std::string text);
  [[noreturn]] void throw_unusable() const;  // requires mu_ held

  // ---- I/O thread (io_loop.cpp) --------------------------------------------------------
  void run() noexcept;
  void loop();
  void open_results_socket(const proto::Welcome& w);
  void read_dealer();
  void read_results();
  void close_results() noexcept;  // at the session's end: a stale PULL must not reconnect
  // The next message on `s` into `out` (false: none waits, or the connection is broken). A
  // frame that does not decode leaves `out` empty and fails everything (bad_frame).
  bool receive(zmq::socket_t& s, const char* what, std::optional<proto::Message>& out);
  void bad_frame(const char* what, const std::string& why);  // fails everything
  void drain_wake_fd() noexcept;
  void wait_for_wake();
  void on_dealer_message(proto::Message& m);
  void on_update(proto::Update& u);
  void on_cancel_reply(const proto::CancelReply& r);
  void take_work(bool& stop);  // outbox + cancel requests -> frames
  void send_cancel(const std::shared_ptr<CancelRequest>& req);
  void flush();
  bool send_frame(const std::string& frame);
  void apply_event(proto::Event& e);
  void timers(Clock::time_point now);
  int poll_timeout_ms(Clock::time_point now) const;
  void fail_everything(const std::string& reason, Phase phase, Failure kind = Failure::connection,
                       const std::string& code = {}) noexcept;
  void say_bye() noexcept;

  // ---- I/O thread: losing the daemon, resuming the session (session.cpp) -----------------
  void open_dealer();  // a fresh DEALER connecting to endpoint_, with its monitor (throws zmq)
  void close_dealer(bool drop_unsent) noexcept;  // and its monitor
  void read_monitor();
  // The daemon is gone (silence, or its end of the DEALER closed): reconnect, or fail everything.
  void daemon_lost(const std::string& why);
  void reconnect_timers(Clock::time_point now);
  void start_attempt();
  void end_attempt(Clock::time_point now);  // give this DEALER up, try again after a backoff
  void on_rewelcome(const proto::Welcome& w);
  void note_accepted(std::uint64_t through) noexcept;
  // The session outlives a lost connection: the daemon keeps a journal and we may reconnect.
  bool keeps_session() const noexcept { return session_ != 0 && options_.reconnect_timeout.count() > 0; }

  const std::string endpoint_;
  const ClientOptions options_;
  std::string client_name_;

  // ---- shared, guarded by mu_ ------------------------------------------------------------
  mutable std::mutex mu_;
  std::condition_variable space_cv_;  // room in the outbox / phase changed
  std::condition_variable reply_cv_;  // handshake progressed / a cancel request was answered
  std::vector<OutEntry> outbox_;      // entries whose state->queued is false were cancelled
  std::deque<std::shared_ptr<CancelRequest>> cancels_;  // waiting for the I/O thread to send
  Phase phase_ = Phase::connecting;
  std::string phase_reason_;                     // why broken/closed
  Failure phase_failure_ = Failure::connection;  // and how (the exception to throw), once broken
  std::string phase_code_;                       // the daemon's error code (daemon_refused)
  std::string last_error_;
  proto::Welcome welcome_;
  std::string results_endpoint_;
  bool stop_ = false;
  std::size_t space_waiters_ = 0;

  // ---- poll queue and unfinished count, guarded by done_mu_ (a leaf lock) -------------------
  mutable std::mutex done_mu_;
  std::condition_variable done_cv_;  // a task finished (poll, wait_all, submit backpressure)
  std::deque<std::weak_ptr<FutureState>> poll_queue_;
  std::size_t prune_at_ = 1024;
  // Submitted (outbox included) and not yet done. Taken without the lock (try_reserve), given
  // back under it.
  std::atomic<std::size_t> unfinished_{0};
  std::atomic<std::uint32_t> max_pending_{0};  // the daemon's limit on unfinished_ (welcome); 0 = none

  std::atomic<std::uint64_t> next_task_id_{1};
  std::atomic<std::uint64_t> next_request_id_{1};
  std::atomic<std::thread::id> io_id_{};
  int wake_fd_ = -1;
  std::mutex close_mu_;  // serialises close() (explicit close + destructor)
  std::thread io_;

  // ---- I/O thread only ---------------------------------------------------------------------
  zmq::context_t ctx_;
  zmq::socket_t dealer_;
  zmq::socket_t results_;
  bool hello_sent_ = false;
  Phase io_phase_ = Phase::connecting;  // the I/O thread's copy, to skip locking per message
  WindowMap<StatePtr> inflight_;        // sent, no final event yet
  std::unordered_map<std::uint64_t, std::shared_ptr<CancelRequest>> awaiting_reply_;
  std::vector<OutEntry> batch_;         // the outbox as taken by the last take_work (kept for its capacity)
  std::deque<std::string> sendq_;       // encoded frames for the DEALER, in order
  std::uint64_t acked_upto_ = 0;        // every update up to here is applied (contiguous)
  std::set<std::uint64_t> seen_ahead_;  // applied updates beyond a gap (a lost update)
  std::uint64_t ack_sent_ = 0;
  Clock::time_point last_send_, last_recv_;
  std::chrono::milliseconds heartbeat_{0};

  // sessions (session.cpp)
  zmq::socket_t monitor_;  // PAIR: the DEALER's ZMQ_EVENT_DISCONNECTED (zmq_socket_monitor)
  std::uint64_t monitor_seq_ = 0;
  std::uint64_t session_ = 0;  // the last welcome's; 0 = the daemon keeps no journal
  std::string token_;
  struct SentSubmit {
    std::uint64_t highest;  // its last (highest) task id
    std::string frame;
  };
  // Submit frames sent and not yet covered by accepted_through, in order: sent again after a
  // resume. Every one holds an unfinished task, so max_pending and max_outbox bound it.
  std::deque<SentSubmit> unaccepted_;
  std::uint64_t accepted_through_ = 0;  // this session's (update.accepted_through, final events)
  std::string lost_why_;                // why the daemon was lost (reconnecting)
  std::string attempt_error_;           // the daemon's last `error` answering a reconnect hello
  Clock::time_point give_up_at_, next_attempt_at_;
  Clock::time_point welcome_by_{};  // the attempt's hello went out: give it up without welcome by then
  std::chrono::milliseconds backoff_{0};
  bool attempt_open_ = false;  // dealer_ is a reconnect attempt's
};

}  // namespace zexec::detail
