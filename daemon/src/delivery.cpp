// Delivery to clients: control replies on the ROUTER, task events batched into updates on each
// client's results socket, acknowledgements, heartbeats and the client timeout. Nothing here
// blocks: what would block is held per client and retried (POLLOUT, or the loop's timer).
#include <spdlog/spdlog.h>

#include "broker.hpp"

namespace zexecd {

namespace proto = zexec::proto;

namespace {
constexpr std::size_t kMaxHeldReplies = 1024;  // replies held for a client before it is given up
constexpr std::size_t kMaxEventsPerUpdate = 8192;
constexpr std::size_t kMaxUpdateBytes = 4 << 20;
}  // namespace

// Replies on the ROUTER. A registered client's replies wait in its own queue when its pipe is
// full, so one slow client delays nobody else; a peer that never said hello gets one attempt.
void Broker::reply(const std::string& rid, const proto::Message& m) {
  std::string frame = proto::encode(m);
  auto it = client_by_rid_.find(rid);
  Client* c = it == client_by_rid_.end() ? nullptr : find_client(it->second);
  // With a journal, what a reply says (a cancel, above all) must be on disk before it leaves:
  // it waits for this turn's commit (commit_journal), as held replies do.
  if (c && (!c->replies.empty() || (log_ && log_->pending()))) {
    if (c->replies.size() >= kMaxHeldReplies) {
      // Not reading its control socket at all: it would only grow. Forget it (it can say hello),
      // at the next tick: callers of reply() may still hold the client or iterate over clients_.
      if (!c->doomed) doomed_.push_back(c->id);
      c->doomed = true;
      return;
    }
    c->replies.push_back(std::move(frame));
    return;
  }
  if (send_reply(rid, frame)) {
    if (c) c->last_sent = Clock::now();
  } else if (c) {
    c->replies.push_back(std::move(frame));
  } else {
    counters_.replies_dropped++;
  }
}

// One attempt to send on the ROUTER; false when the peer's pipe is full (EAGAIN). A peer that
// is gone (EHOSTUNREACH) counts as sent: nobody is left to tell.
bool Broker::send_reply(const std::string& rid, const std::string& frame) {
  try {
    if (!send_now(front_, zmq::buffer(rid), zmq::send_flags::sndmore)) return false;
    send_rest(front_, zmq::buffer(frame));
  } catch (const zmq::error_t& e) {
    spdlog::debug("reply to a departed client dropped: {}", e.what());
  }
  return true;
}

bool Broker::flush_replies() {
  bool pending = false;
  if (log_ && log_->pending()) return true;  // they wait for the commit
  for (auto& [id, c] : clients_) {
    while (!c->replies.empty() && send_reply(c->routing_id, c->replies.front())) c->replies.pop_front();
    pending |= !c->replies.empty();
  }
  return pending;
}

void Broker::post_event(Task& t, proto::Event&& e) {
  if (Client* c = find_client(t.client_id)) {
    e.task_id = t.client_task_id;
    std::uint32_t batch = e.kind == proto::Outcome::started ? kNoBatch : t.batch;
    push_event(*c, std::move(e), batch);
  }
}

void Broker::flush_client(Client& c, Clock::time_point now) {
  if (!c.connected) return;  // its session waits for it to come back
  for (;;) {
    if (c.held) {
      if (!send_now(c.results, zmq::buffer(*c.held))) return;
      c.held.reset();
      c.last_sent = now;
    }
    if ((c.outbox.empty() && !tell_accepted_due(c, now)) ||
        c.unacked.size() >= static_cast<std::size_t>(opts_.max_unacked_updates))
      return;
    // One update carries as many events as fit, so a burst of results costs one message. (With
    // a journal, one with none tells the client how far its submits are accepted.)
    proto::Update u{c.next_seq++, {}, c.accepted_through};
    c.told_accepted = c.accepted_through;
    std::size_t bytes = 0, n = 0;
    while (n < c.outbox.size() && n < kMaxEventsPerUpdate) {
      std::size_t size = c.outbox[n].value.size() + c.outbox[n].error_message.size() + 32;
      if (n > 0 && bytes + size > kMaxUpdateBytes) break;  // the next update takes it
      bytes += size;
      ++n;
    }
    std::vector<std::uint32_t> batches;  // per event in it, for the ack (acked(), resume_session)
    bool unjournaled = false;            // it has events the journal has not had yet
    if (log_) {
      batches.assign(c.outbox_batches.begin(), c.outbox_batches.begin() + n);
      c.outbox_batches.erase(c.outbox_batches.begin(), c.outbox_batches.begin() + n);
      unjournaled = n > c.journaled;
      c.journaled -= std::min(c.journaled, n);
    }
    if (n == c.outbox.size()) {
      u.events = std::move(c.outbox);
      c.outbox.clear();
    } else {
      u.events.assign(std::make_move_iterator(c.outbox.begin()),
                      std::make_move_iterator(c.outbox.begin() + n));
      c.outbox.erase(c.outbox.begin(), c.outbox.begin() + n);
    }
    std::string frame = proto::encode(u);
    if (c.unacked.empty()) c.oldest_unacked_sent = now;
    c.unacked.push_back(Client::Sent{u.seq, frame, std::move(batches)});
    if (unjournaled) ++c.sent_unjournaled;  // (always the last ones: journal_events)
    c.held = std::move(frame);
  }
}

void Broker::flush_clients(Clock::time_point now) {
  for (auto& [id, c] : clients_)
    if ((!c->outbox.empty() || tell_accepted_due(*c, now)) && !c->held) flush_client(*c, now);
}

// Each client on the heartbeat and timeout its welcome gave it: a reload changes them only for
// clients that connect afterwards (it expects a heartbeat every c->heartbeat).
Clock::time_point Broker::client_timers(Clock::time_point now) {
  Clock::time_point next = Clock::time_point::max();
  std::vector<std::uint64_t> gone;
  std::vector<std::uint64_t> silent;  // with a journal: their connection goes, their session stays
  const auto session_timeout = std::chrono::milliseconds(opts_.session_timeout_ms);
  for (auto& [id, c] : clients_) {
    const auto heartbeat = c->heartbeat;
    if (!c->connected) {
      if (now - c->last_heard > session_timeout)
        gone.push_back(id);
      else
        next = std::min(next, c->last_heard + session_timeout + std::chrono::milliseconds(1));
      continue;
    }
    if (now - c->last_heard > c->timeout) {
      (log_ ? silent : gone).push_back(id);
      continue;
    }
    if (now - c->last_sent >= heartbeat) {
      c->last_sent = now;  // set first: a held heartbeat must not be queued again every turn
      reply(c->routing_id, proto::Heartbeat{});
    }
    // An update not acknowledged for long may have been lost in transit (a reconnecting PULL):
    // send the unacknowledged ones again; the client ignores sequence numbers it already has.
    if (!c->unacked.empty() && !c->held && now - c->oldest_unacked_sent > 5 * heartbeat) {
      spdlog::debug("client {}: resending {} unacknowledged updates", id, c->unacked.size());
      for (auto& s : c->unacked)
        if (!send_now(c->results, zmq::buffer(s.frame))) break;
      c->oldest_unacked_sent = now;
    }
    if (c->accepted_through > c->told_accepted) {
      if (tell_accepted_due(*c, now) && !c->held) flush_client(*c, now);
      next = std::min(next, c->accepted_moved + kTellAcceptedAfter);
    }
    // Its next heartbeat and its timeout: the loop's own fallback is the heartbeat_ms in force,
    // which may be longer than this client's.
    next = std::min(
        next, std::min(c->last_sent + heartbeat, c->last_heard + c->timeout + std::chrono::milliseconds(1)));
  }
  for (auto id : silent)
    if (Client* c = find_client(id)) detach_client(*c, "silent for too long");
  for (auto id : gone) {
    counters_.clients_dropped++;
    drop_client(id, "silent for too long");
  }
  return next;
}

void Broker::on_ack(Client& c, std::uint64_t seq) {
  while (!c.unacked.empty() && c.unacked.front().seq <= seq) {
    acked(c, c.unacked.front());
    c.unacked.pop_front();
    c.sent_unjournaled = std::min(c.sent_unjournaled, c.unacked.size());
  }
  if (!c.unacked.empty()) c.oldest_unacked_sent = Clock::now();
}

}  // namespace zexecd
