// ClientCore, the I/O thread: the only code that touches the client's two sockets.
//
//   loop: take queued work (outbox -> `submit` frames, cancel requests) -> flush what ZeroMQ
//         accepts without blocking -> timers (heartbeat, daemon silence) -> poll
//         (DEALER, results PULL, wake eventfd) -> read everything that arrived.
//
// Nothing here blocks in send(): frames wait in sendq_ and go when poll reports POLLOUT, and
// the outbox is only drained while sendq_ is short, so a daemon that stops reading makes
// submit() block and then throw QueueFullError instead of growing memory without bound.
//
// The connection breaks (fail_everything) when the daemon goes silent, refuses this client, or
// sends a frame the client cannot decode: every unfinished future fails, submit() throws, and
// the loop reads nothing more, waiting for close(). A daemon with sessions (a journal) that
// goes silent or closes the connection is reconnected to instead (session.cpp).
#include <errno.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "client_core.hpp"
#include "endpoint.hpp"
#include "zexec/detail/zmq_io.hpp"

namespace zexec::detail {

namespace {

constexpr int kReadBudget = 256;               // frames per socket per turn: batching without starvation
constexpr std::size_t kMaxHeldFrames = 4;      // drain the outbox only while fewer frames wait to go
constexpr std::size_t kMaxBatchTasks = 16384;  // tasks per `submit` frame
constexpr std::size_t kMaxBatchBytes = 4 << 20;
constexpr auto kForgetCancelAfter = std::chrono::seconds(60);  // unanswered cancel requests

}  // namespace

void ClientCore::run() noexcept {
  io_id_ = std::this_thread::get_id();
  try {
    loop();
  } catch (const std::exception& e) {
    fail_everything(std::string("zexec client I/O thread failed: ") + e.what(), Phase::broken);
  }
  close_results();  // the session is over: nothing more is read there
  say_bye();
  fail_everything("zexec::Client for " + endpoint_ + " was closed before the task finished", Phase::closed);
  // Whatever is still queued (bye included) may wait up to `linger` for the daemon to take it.
  close_dealer(false);
}

void ClientCore::loop() {
  last_send_ = last_recv_ = Clock::now();
  for (;;) {
    bool stop = false;
    take_work(stop);
    if (stop) return;
    flush();
    auto now = Clock::now();
    timers(now);

    if (io_phase_ == Phase::broken) {
      // Every future has failed and nothing more will be read: wait for close() (a wake-up).
      close_results();
      wait_for_wake();
      continue;
    }
    bool want_out = !sendq_.empty() || (io_phase_ == Phase::ready && acked_upto_ > ack_sent_);
    // Each socket that is open (between reconnect attempts there is no DEALER). A handler may
    // close or replace a socket: one is read only if it is still the one polled.
    zmq::pollitem_t items[4];
    int n = 0;
    items[n++] = {nullptr, wake_fd_, ZMQ_POLLIN, 0};
    auto add = [&](zmq::socket_t& s, short events) {
      if (!s.handle()) return -1;
      items[n] = {s.handle(), 0, events, 0};
      return n++;
    };
    const int i_dealer = add(dealer_, static_cast<short>(ZMQ_POLLIN | (want_out ? ZMQ_POLLOUT : 0)));
    const int i_results = add(results_, ZMQ_POLLIN);
    const int i_monitor = add(monitor_, ZMQ_POLLIN);
    try {
      zmq::poll(items, n, std::chrono::milliseconds(poll_timeout_ms(now)));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    auto ready = [&](int i, zmq::socket_t& s) {
      return i >= 0 && (items[i].revents & ZMQ_POLLIN) && s.handle() == items[i].socket;
    };
    if (items[0].revents & ZMQ_POLLIN) drain_wake_fd();
    if (ready(i_dealer, dealer_)) read_dealer();
    if (ready(i_results, results_)) read_results();
    if (ready(i_monitor, monitor_)) read_monitor();
  }
}

// A PULL left open reconnects to its endpoint for ever (ZMQ_RECONNECT_IVL): after a daemon
// restart it would join whichever socket is bound at that path and take a share of another
// client's results. So the session's end (broken, daemon lost, closed) closes it at once.
void ClientCore::close_results() noexcept {
  try {
    results_.close();  // no-op once closed
  } catch (...) {
  }
}

void ClientCore::drain_wake_fd() noexcept {
  std::uint64_t v;
  [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
}

void ClientCore::wait_for_wake() {
  zmq::pollitem_t item{nullptr, wake_fd_, ZMQ_POLLIN, 0};
  try {
    if (zmq::poll(&item, 1, std::chrono::seconds(1)) > 0) drain_wake_fd();
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
  }
}

int ClientCore::poll_timeout_ms(Clock::time_point now) const {
  auto next = now + std::chrono::seconds(1);  // stop and new work come with a wake-up anyway
  if (io_phase_ == Phase::ready && heartbeat_.count() > 0) {
    next = std::min(next, last_send_ + heartbeat_);
    next = std::min(next, last_recv_ + 5 * heartbeat_ + std::chrono::milliseconds(1));
  }
  if (io_phase_ == Phase::reconnecting) {
    next = std::min(next, give_up_at_);
    if (!attempt_open_)
      next = std::min(next, next_attempt_at_);
    else if (welcome_by_ != Clock::time_point{})
      next = std::min(next, welcome_by_);
  }
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
  return static_cast<int>(std::max<std::int64_t>(ms, 0));
}

// ---- sending ---------------------------------------------------------------------------------

void ClientCore::take_work(bool& stop) {
  batch_.clear();
  std::deque<std::shared_ptr<CancelRequest>> cancels;
  {
    std::lock_guard lk(mu_);
    stop = stop_;
    if (stop) return;
    if (io_phase_ == Phase::ready && sendq_.size() < kMaxHeldFrames && !outbox_.empty()) {
      // Claim the tasks while holding mu_: from here on cancel() must ask the daemon. (A swap,
      // so both vectors keep their capacity: no allocation per turn.)
      for (auto& e : outbox_) {
        if (e.state->queued)
          e.state->queued = false;
        else
          e.state.reset();  // cancelled locally while queued
      }
      batch_.swap(outbox_);
      if (space_waiters_) space_cv_.notify_all();
    }
    // Reconnecting: they wait, and go once the session is resumed (after its resent submits).
    if (io_phase_ != Phase::reconnecting) cancels.swap(cancels_);
  }
  // Submits go before the cancels taken in the same turn: a cancel never overtakes its task.
  std::size_t begin = 0;
  while (begin < batch_.size()) {
    // One frame: as many tasks as the limits allow (at least one).
    std::size_t end = begin, count = 0, bytes = 0;
    for (; end < batch_.size() && (count == 0 || (count < kMaxBatchTasks && bytes < kMaxBatchBytes)); ++end) {
      const OutEntry& e = batch_[end];
      if (!e.state) continue;
      bytes += e.args.size() + e.state->task_name().size() + 24;
      ++count;
    }
    if (count > 0) {
      std::string frame;
      proto::TaskListWriter w(frame, proto::Type::submit, static_cast<std::uint32_t>(count));
      std::uint64_t highest = 0;
      for (std::size_t i = begin; i < end; ++i) {
        OutEntry& e = batch_[i];
        if (!e.state) continue;
        const std::uint64_t id = e.state->id();
        w.add(id, e.state->task_name(), e.args, e.options);
        inflight_.insert(id, std::move(e.state));
        highest = std::max(highest, id);
      }
      // Kept until the daemon says it is on disk, to send again after a resume (PROTOCOL.md §3,
      // Acceptance). Without a session nothing is ever accepted: nothing is kept.
      if (keeps_session()) unaccepted_.push_back(SentSubmit{highest, frame});
      sendq_.push_back(std::move(frame));
    }
    begin = end;
  }
  batch_.clear();
  if (batch_.capacity() > 65536) std::vector<OutEntry>().swap(batch_);  // after a burst: give it back
  for (auto& req : cancels) send_cancel(req);
}

bool ClientCore::send_frame(const std::string& frame) {
  try {
    if (!detail::send_now(dealer_, zmq::buffer(frame))) return false;
  } catch (const zmq::error_t& e) {
    set_last_error(std::string("send to zexecd failed: ") + e.what());
    return true;  // dropped: holding it would retry forever
  }
  hello_sent_ = true;  // hello is the first frame ever queued
  last_send_ = Clock::now();
  return true;
}

void ClientCore::flush() {
  // The ack jumps the queue: it is tiny and lets the daemon send more updates.
  if (io_phase_ == Phase::ready && acked_upto_ > ack_sent_) {
    if (!send_frame(proto::encode(proto::Ack{acked_upto_}))) return;
    ack_sent_ = acked_upto_;
  }
  while (!sendq_.empty()) {
    if (!send_frame(sendq_.front())) return;
    sendq_.pop_front();
  }
}

void ClientCore::timers(Clock::time_point now) {
  if (io_phase_ == Phase::reconnecting) return reconnect_timers(now);
  if (io_phase_ != Phase::ready) return;
  if (heartbeat_.count() > 0) {
    if (now - last_recv_ > 5 * heartbeat_) {
      daemon_lost("lost connection to zexecd at " + endpoint_ + ": nothing heard for " +
                  format_seconds(now - last_recv_) + " (heartbeat " + std::to_string(heartbeat_.count()) +
                  " ms)");
      return;
    }
    if (now - last_send_ >= heartbeat_ && sendq_.empty()) {
      sendq_.push_back(proto::encode(proto::Heartbeat{}));
      flush();
    }
  }
  std::erase_if(awaiting_reply_,
                [&](const auto& kv) { return now > kv.second->deadline + kForgetCancelAfter; });
}

void ClientCore::say_bye() noexcept {
  // Reconnecting with no hello out on this DEALER: nobody would take a bye either.
  if (io_phase_ == Phase::broken ||
      (io_phase_ == Phase::reconnecting && (!dealer_.handle() || !hello_sent_))) {
    // The daemon is gone or forgot us: nobody would take a bye, so do not linger for it.
    try {
      dealer_.set(zmq::sockopt::linger, 0);
    } catch (...) {
    }
    return;
  }
  if (!hello_sent_) return;  // the daemon never heard of us
  try {
    sendq_.clear();
    std::string bye = proto::encode(proto::Bye{});
    auto deadline = Clock::now() + options_.linger;
    for (;;) {
      if (detail::send_now(dealer_, zmq::buffer(bye))) return;
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return;
      zmq::pollitem_t item{dealer_.handle(), 0, ZMQ_POLLOUT, 0};
      zmq::poll(&item, 1, left);
    }
  } catch (...) {
    // The daemon drops a silent client on its own after 5 heartbeats.
  }
}

// ---- receiving -------------------------------------------------------------------------------

bool ClientCore::receive(zmq::socket_t& s, const char* what, std::optional<proto::Message>& out) {
  out.reset();
  if (io_phase_ == Phase::broken) return false;  // nothing more is read
  zmq::message_t msg;
  if (!detail::recv_now(s, msg)) return false;
  last_recv_ = Clock::now();
  std::size_t frames = 1;
  for (bool more = msg.more(); more; ++frames) {  // read the whole message, whatever its size
    zmq::message_t extra;
    if (!detail::recv_rest(s, extra)) break;
    more = extra.more();
  }
  if (frames != 1) {  // the protocol has one frame per message
    bad_frame(what, "a message of " + std::to_string(frames) + " frames (expected 1)");
    return true;
  }
  proto::Decoded d = proto::decode(msg.to_string_view());
  if (!d)
    bad_frame(what, d.error);
  else
    out = std::move(d.message);
  return true;
}

void ClientCore::read_dealer() {
  std::optional<proto::Message> m;
  // (A reconnect attempt refused by the daemon closes the DEALER.)
  for (int i = 0; i < kReadBudget && dealer_.handle() && receive(dealer_, "undecodable message", m); ++i)
    if (m) on_dealer_message(*m);
}

void ClientCore::read_results() {
  std::optional<proto::Message> m;
  for (int i = 0; i < kReadBudget && receive(results_, "undecodable update", m); ++i) {
    if (!m) continue;
    if (auto* u = std::get_if<proto::Update>(&*m))
      on_update(*u);
    else
      bad_frame("undecodable update", std::string("a ") + proto::type_name(proto::type_of(*m)) +
                                          " message (only update is sent there)");
  }
}

void ClientCore::bad_frame(const char* what, const std::string& why) {
  // Peers never guess (PROTOCOL.md §1, Versions): the operation that expected the answer fails.
  // A frame we cannot read may have been any answer: the welcome (a daemon of another protocol
  // version), an update (not applied nor acknowledged, so resent for ever), a cancel_reply (its
  // cancelled tasks get no other event), an error saying the daemon forgot us. Every unfinished
  // future would hang: fail them all, naming the reason, and call the connection broken.
  fail_everything(std::string(what) + " from zexecd at " + endpoint_ + ": " + why, Phase::broken);
}

void ClientCore::open_results_socket(const proto::Welcome& w) {
  std::string ep = resolve_results_endpoint(w.results_endpoint, endpoint_);
  results_ = zmq::socket_t(ctx_, zmq::socket_type::pull);
  results_.set(zmq::sockopt::linger, 0);
  results_.set(zmq::sockopt::maxmsgsize, proto::kMaxMessageBytes);
  results_.connect(ep);
  heartbeat_ = std::chrono::milliseconds(w.heartbeat_ms);
  session_ = w.session;
  token_ = w.token;
  io_phase_ = Phase::ready;
  {
    std::lock_guard lk(done_mu_);
    max_pending_ = w.max_pending;
  }
  {
    std::lock_guard lk(mu_);
    welcome_ = w;
    results_endpoint_ = ep;
    phase_ = Phase::ready;
  }
  reply_cv_.notify_all();
}

void ClientCore::on_dealer_message(proto::Message& m) {
  if (auto* w = std::get_if<proto::Welcome>(&m)) {
    if (io_phase_ == Phase::reconnecting) return on_rewelcome(*w);
    if (io_phase_ != Phase::connecting) return;  // we said hello once; a stray welcome changes nothing
    try {
      open_results_socket(*w);
    } catch (const zmq::error_t& e) {
      fail_everything("cannot connect to the results endpoint " + w->results_endpoint +
                          " announced by zexecd at " + endpoint_ + ": " + e.what(),
                      Phase::broken);
    }
    return;
  }
  if (auto* r = std::get_if<proto::CancelReply>(&m)) return on_cancel_reply(*r);
  if (std::holds_alternative<proto::Heartbeat>(m)) return;
  if (auto* e = std::get_if<proto::Error>(&m)) {
    std::string text = daemon_error_text(endpoint_, e->code, e->message);
    if (io_phase_ == Phase::reconnecting) {  // a refused reconnect hello: try again, until the timeout
      set_last_error(text);
      attempt_error_ = std::move(text);
      end_attempt(Clock::now());
      return;
    }
    if (io_phase_ == Phase::ready && e->code == "unknown_client" && keeps_session()) {
      // The daemon forgot this connection (it did not hear from us for client_timeout_ms), not
      // necessarily the session (PROTOCOL.md §3, Client timeout, Sessions): resume it.
      daemon_lost(text);
      return;
    }
    // Any refusal of the hello, or a code that leaves tasks no other way to settle: the end of
    // the connection. Any other code (bad_message, duplicate_task_id, one from a newer daemon)
    // is kept as last_error: forward compatible, and nothing to attribute it to.
    if (io_phase_ == Phase::connecting || is_fatal_error_code(e->code))
      fail_everything(text, Phase::broken, Failure::daemon_refused, e->code);
    else
      set_last_error(text);
    return;
  }
  set_last_error(std::string("unexpected ") + proto::type_name(proto::type_of(m)) + " from zexecd at " +
                 endpoint_);
}

void ClientCore::on_update(proto::Update& u) {
  note_accepted(u.accepted_through);
  // The daemon resends unacknowledged updates when an ack is late: apply each seq once.
  if (u.seq <= acked_upto_ || seen_ahead_.count(u.seq)) {
    // A resend of what we acked: that ack may have been lost. Say it again, or the daemon keeps
    // resending and, once its window of unacknowledged updates is full, sends us nothing new.
    if (u.seq <= ack_sent_) ack_sent_ = std::min(ack_sent_, u.seq - 1);
    return;
  }
  {
    CompletionBatch batch;  // waiters hear of the whole update at once
    for (auto& e : u.events) apply_event(e);
  }
  if (u.seq == acked_upto_ + 1) {
    acked_upto_ = u.seq;
    while (!seen_ahead_.empty() && *seen_ahead_.begin() == acked_upto_ + 1) {
      ++acked_upto_;
      seen_ahead_.erase(seen_ahead_.begin());
    }
  } else {
    // A gap (an update lost while the PULL reconnected): acks are cumulative, so we keep acking
    // only up to the gap until the daemon's resend fills it.
    seen_ahead_.insert(u.seq);
  }
}

void ClientCore::apply_event(proto::Event& e) {
  if (e.kind == proto::Outcome::started) {
    if (StatePtr* s = inflight_.find(e.task_id)) (*s)->set_running();
    return;
  }
  note_accepted(e.task_id);  // a final event: its submit was accepted (and every earlier one)
  StatePtr s;
  if (!inflight_.take(e.task_id, s)) return;  // already final (a resent update, or failed locally)
  switch (e.kind) {
    case proto::Outcome::ok:
      s->set_value(std::move(e.value));
      break;
    case proto::Outcome::error:
      s->set_error(Failure::task, std::move(e.error_type), std::move(e.error_message));
      break;
    default:
      s->set_cancelled();
  }
}

// ---- failure ---------------------------------------------------------------------------------

void ClientCore::fail_everything(const std::string& reason, Phase phase, Failure kind,
                                 const std::string& code) noexcept {
  std::vector<StatePtr> states;
  states.reserve(inflight_.size());
  inflight_.for_each([&](std::uint64_t, StatePtr& s) { states.push_back(std::move(s)); });
  inflight_.clear();
  unaccepted_.clear();
  bool report = false;
  {
    std::lock_guard lk(mu_);
    for (auto& e : outbox_)
      if (e.state->queued) {
        e.state->queued = false;
        states.push_back(std::move(e.state));
      }
    outbox_.clear();
    report = phase == Phase::broken && phase_ != Phase::broken;
    if (phase_ != Phase::broken || phase == Phase::closed) {
      phase_ = phase;
      if (phase == Phase::broken) {
        phase_reason_ = reason;
        phase_failure_ = kind;
        phase_code_ = code;
      }
    }
    if (phase == Phase::broken) last_error_ = reason;
    for (auto& [id, req] : awaiting_reply_) req->failure = reason;
    for (auto& req : cancels_) req->failure = reason;
    cancels_.clear();
  }
  awaiting_reply_.clear();
  io_phase_ = phase;
  space_cv_.notify_all();
  reply_cv_.notify_all();
  if (report) std::fprintf(stderr, "zexec: %s\n", reason.c_str());
  // In submission order, so waiters see a deterministic sequence.
  std::sort(states.begin(), states.end(),
            [](const StatePtr& a, const StatePtr& b) { return a->id() < b->id(); });
  for (auto& s : states) s->set_error(kind, code, reason);
}

}  // namespace zexec::detail
