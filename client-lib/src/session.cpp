// ClientCore, I/O thread: losing the daemon and resuming the session (docs/PROTOCOL.md §3,
// Sessions and Acceptance).
//
// A daemon that keeps a journal names a session in `welcome` (session != 0). When it is lost
// (5 x heartbeat_ms of silence, or ZMQ_EVENT_DISCONNECTED on the DEALER, which on ipc is the
// moment a killed daemon's socket closes) the client does not fail its futures: it closes the
// results PULL and the DEALER, keeps every unfinished future pending and the outbox queueing
// (submit()'s backpressure applies), and tries again with a fresh DEALER and a `hello` naming
// the session and its token, backing off from 50 ms to 1 s between attempts, until
// ClientOptions::reconnect_timeout has passed since the loss; then everything fails as it
// would have at once without a session.
//
// `welcome` resumed: a new results PULL, update seqs start again at 1, and before anything new
// the `submit` frames not yet covered by accepted_through go again in their order, then the
// cancel requests still unanswered (same request_id), then the outbox. Events the daemon had
// not seen acknowledged come again; a final event of a task already final is ignored
// (apply_event), so each future completes once.
// `welcome` not resumed (the daemon lost the session): the sent tasks fail, the rest go on in
// the new session.
//
// Without a session (or reconnect_timeout 0) none of this happens: a lost daemon fails
// everything (io_loop.cpp, fail_everything), and no frame is kept.
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "client_core.hpp"
#include "zexec/detail/zmq_io.hpp"

namespace zexec::detail {

namespace {

constexpr auto kFirstBackoff = std::chrono::milliseconds(50);
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);
// An attempt whose hello went out and got no welcome in this long is given up (the daemon it
// reached may have died before answering): a fresh DEALER says hello again. A quarter of
// reconnect_timeout, within these bounds.
constexpr auto kMinWelcomeWait = std::chrono::milliseconds(100);
constexpr auto kMaxWelcomeWait = std::chrono::milliseconds(2000);

}  // namespace

void ClientCore::open_dealer() {
  dealer_ = zmq::socket_t(ctx_, zmq::socket_type::dealer);
  // immediate: frames are only queued on a completed connection, so `hello` waits in our
  // sendq_ (POLLOUT-gated) until the daemon is really there, and is sent exactly once: a
  // second hello would make the daemon drop the first client (docs/PROTOCOL.md §2).
  dealer_.set(zmq::sockopt::immediate, 1);
  // Retry a missing daemon every 10 ms at first (an Executor's daemon is starting up), backing
  // off to 1 s so a long-gone daemon is not hammered.
  dealer_.set(zmq::sockopt::reconnect_ivl, 10);
  dealer_.set(zmq::sockopt::reconnect_ivl_max, 1000);
  dealer_.set(zmq::sockopt::linger, static_cast<int>(options_.linger.count()));
  dealer_.set(zmq::sockopt::maxmsgsize, proto::kMaxMessageBytes);
  if (options_.reconnect_timeout.count() > 0) {
    // The daemon's end of the connection closing (a killed daemon on ipc): noticed at once
    // rather than after 5 heartbeats. Only with sessions is anything done about it.
    std::string ep = "inproc://zexec-client-monitor-" + std::to_string(++monitor_seq_);
    if (zmq_socket_monitor(dealer_.handle(), ep.c_str(), ZMQ_EVENT_DISCONNECTED) != 0) throw zmq::error_t();
    monitor_ = zmq::socket_t(ctx_, zmq::socket_type::pair);
    monitor_.set(zmq::sockopt::linger, 0);
    monitor_.connect(ep);
  }
  dealer_.connect(endpoint_);
}

void ClientCore::close_dealer(bool drop_unsent) noexcept {
  try {
    if (monitor_.handle()) {
      if (dealer_.handle()) zmq_socket_monitor(dealer_.handle(), nullptr, 0);
      monitor_.close();
    }
    if (dealer_.handle()) {
      if (drop_unsent) dealer_.set(zmq::sockopt::linger, 0);
      dealer_.close();
    }
  } catch (...) {
  }
}

void ClientCore::read_monitor() {
  bool disconnected = false;
  for (int i = 0; i < 64; ++i) {
    zmq::message_t ev;
    if (!detail::recv_now(monitor_, ev)) break;
    if (ev.size() >= sizeof(std::uint16_t)) {
      std::uint16_t id;
      std::memcpy(&id, ev.data(), sizeof id);
      if (id == ZMQ_EVENT_DISCONNECTED) disconnected = true;
    }
    while (ev.more()) {  // the endpoint
      if (!detail::recv_rest(monitor_, ev)) break;
    }
  }
  if (!disconnected) return;
  if (io_phase_ == Phase::ready && keeps_session())
    daemon_lost("lost connection to zexecd at " + endpoint_ + ": it closed the connection");
  else if (io_phase_ == Phase::reconnecting && attempt_open_)
    end_attempt(Clock::now());  // reached something that went away again
  // Otherwise as without a monitor: connecting (ZeroMQ retries), or no session (heartbeats tell).
}

void ClientCore::daemon_lost(const std::string& why) {
  if (!keeps_session()) {
    fail_everything(session_ == 0 ? why +
                                        "; zexecd keeps no journal (no session), so its tasks cannot "
                                        "survive a restart"
                                  : why,
                    Phase::broken, Failure::daemon_lost);
    return;
  }
  // A stale PULL must never reconnect (close_results()); the DEALER is replaced by a fresh one.
  close_results();
  close_dealer(true);
  sendq_.clear();  // every submit in it is in unaccepted_, every cancel in awaiting_reply_
  const auto now = Clock::now();
  io_phase_ = Phase::reconnecting;
  lost_why_ = why;
  attempt_error_.clear();
  give_up_at_ = now + options_.reconnect_timeout;
  next_attempt_at_ = now;  // the first attempt at once
  backoff_ = kFirstBackoff;
  attempt_open_ = false;
  std::string text = why + "; reconnecting (for up to " + format_seconds(options_.reconnect_timeout) + ")";
  {
    std::lock_guard lk(mu_);
    phase_ = Phase::reconnecting;
    last_error_ = text;
  }
  std::fprintf(stderr, "zexec: %s\n", text.c_str());
}

void ClientCore::reconnect_timers(Clock::time_point now) {
  if (now >= give_up_at_) {
    std::string reason =
        lost_why_ + "; could not reconnect within " + format_seconds(options_.reconnect_timeout);
    if (!attempt_error_.empty()) reason += " (last answer: " + attempt_error_ + ")";
    close_dealer(true);
    fail_everything(reason, Phase::broken, Failure::daemon_lost);
    return;
  }
  if (attempt_open_) {
    if (hello_sent_ && welcome_by_ == Clock::time_point{})
      welcome_by_ = now + std::clamp<std::chrono::milliseconds>(options_.reconnect_timeout / 4,
                                                                kMinWelcomeWait, kMaxWelcomeWait);
    if (welcome_by_ != Clock::time_point{} && now >= welcome_by_) end_attempt(now);
    return;
  }
  if (now >= next_attempt_at_) start_attempt();
}

void ClientCore::start_attempt() {
  try {
    open_dealer();
  } catch (const zmq::error_t& e) {
    attempt_error_ = std::string("cannot open a socket: ") + e.what();
    close_dealer(true);
    attempt_open_ = true;  // so that end_attempt backs off
    end_attempt(Clock::now());
    return;
  }
  attempt_open_ = true;
  welcome_by_ = {};
  hello_sent_ = false;  // set once the hello (first in sendq_) is handed to ZeroMQ
  sendq_.clear();
  sendq_.push_back(
      proto::encode(proto::Hello{client_name_, static_cast<std::int64_t>(getpid()), session_, token_}));
}

void ClientCore::end_attempt(Clock::time_point now) {
  close_dealer(true);
  sendq_.clear();
  attempt_open_ = false;
  welcome_by_ = {};
  next_attempt_at_ = now + backoff_;
  backoff_ = std::min<std::chrono::milliseconds>(2 * backoff_, kMaxBackoff);
}

void ClientCore::on_rewelcome(const proto::Welcome& w) {
  attempt_open_ = false;
  welcome_by_ = {};
  const bool resumed = w.resumed && session_ != 0 && w.session == session_;
  // A new connection: its update seqs start again at 1.
  acked_upto_ = ack_sent_ = 0;
  seen_ahead_.clear();
  if (!resumed) {
    // The daemon does not know the session: what it had been sent is lost. What is still in
    // the outbox goes on in the new session.
    const std::string reason = "zexecd at " + endpoint_ +
                               " did not resume this client's session (it keeps no journal, or "
                               "the session expired): the task is lost";
    std::vector<StatePtr> lost;
    lost.reserve(inflight_.size());
    inflight_.for_each([&](std::uint64_t, StatePtr& s) { lost.push_back(std::move(s)); });
    inflight_.clear();
    unaccepted_.clear();
    accepted_through_ = 0;
    {
      std::lock_guard lk(mu_);
      for (auto& [id, req] : awaiting_reply_) req->failure = reason;
      last_error_ = reason;
    }
    awaiting_reply_.clear();
    reply_cv_.notify_all();
    std::fprintf(stderr, "zexec: %s (%zu tasks)\n", reason.c_str(), lost.size());
    std::sort(lost.begin(), lost.end(),
              [](const StatePtr& a, const StatePtr& b) { return a->id() < b->id(); });
    {
      CompletionBatch batch;
      for (auto& s : lost) s->set_error(Failure::connection, {}, reason);
    }
  }
  try {
    open_results_socket(w);  // ready again, with this welcome's session
  } catch (const zmq::error_t& e) {
    fail_everything("cannot connect to the results endpoint " + w.results_endpoint +
                        " announced by zexecd at " + endpoint_ + ": " + e.what(),
                    Phase::broken);
    return;
  }
  last_recv_ = last_send_ = Clock::now();
  space_cv_.notify_all();
  if (!resumed) return;
  // Before anything new: the submits not known to be on disk, in order (the daemon skips the
  // tasks it has), then the cancel requests still unanswered.
  for (const auto& s : unaccepted_) sendq_.push_back(s.frame);
  std::vector<std::shared_ptr<CancelRequest>> cancels;
  for (const auto& [id, req] : awaiting_reply_) cancels.push_back(req);
  std::sort(cancels.begin(), cancels.end(),
            [](const auto& a, const auto& b) { return a->request_id < b->request_id; });
  for (const auto& req : cancels) sendq_.push_back(req->frame);
}

void ClientCore::note_accepted(std::uint64_t through) noexcept {
  if (through <= accepted_through_) return;
  accepted_through_ = through;
  while (!unaccepted_.empty() && unaccepted_.front().highest <= accepted_through_) unaccepted_.pop_front();
}

}  // namespace zexec::detail
