// ClientCore, cancellation: the user-thread side (cancel, cancel_all and the wait for the
// daemon's answer) and the I/O-thread side (the `cancel` frame, applying `cancel_reply`). One
// request is one round trip; force (Cancel::force) makes the daemon also stop running tasks.
#include "client_core.hpp"

namespace zexec::detail {

// ---- user threads ----------------------------------------------------------------------------

bool ClientCore::cancel(const StatePtr& s, bool force) {
  bool local = false;
  {
    std::lock_guard lk(mu_);
    if (s->queued) {  // never sent: nobody else knows about it
      s->queued = false;
      local = true;
    }
  }
  if (local) {
    s->set_cancelled();
    return true;
  }
  switch (s->status()) {
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
  if (on_io_thread())
    throw Error(s->task_name() +
                ": cancel() of a sent task cannot run on the client's I/O thread (a done "
                "callback): the daemon's answer would never be read");
  auto req = std::make_shared<CancelRequest>();
  // The state itself, not the caller's handle: the request may outlive this call (an answer
  // that comes late) and must not keep the caller's Future alive for poll().
  req->states.push_back(s->shared_from_this());
  req->force = force;
  await_cancel(req);
  // On a `cancelled` outcome the I/O thread completed the state before answering.
  return s->status() == Status::cancelled;
}

std::size_t ClientCore::cancel_all(bool force) {
  std::vector<StatePtr> local;
  {
    std::lock_guard lk(mu_);
    for (auto& e : outbox_)
      if (e.state->queued) {
        e.state->queued = false;
        local.push_back(std::move(e.state));
      }
    outbox_.clear();
    if (space_waiters_) space_cv_.notify_all();
  }
  for (auto& s : local) s->set_cancelled();
  {
    std::lock_guard lk(mu_);
    if (!accepting(phase_)) return local.size();
  }
  if (on_io_thread()) throw Error("cancel_all() cannot run on the client's I/O thread (a done callback)");
  auto req = std::make_shared<CancelRequest>();
  req->all = true;
  req->force = force;
  return local.size() + await_cancel(req);
}

std::size_t ClientCore::await_cancel(const std::shared_ptr<CancelRequest>& req) {
  req->request_id = next_request_id_++;
  req->deadline = Clock::now() + options_.cancel_timeout;
  std::unique_lock lk(mu_);
  // A broken or closed connection has failed (or is failing) every unfinished future with its
  // reason: nothing is cancelled, as Python's cancel() says False. Not an exception: the
  // future's own error tells why.
  // Reconnecting: queued, sent once the session is resumed.
  if (!accepting(phase_)) return 0;
  cancels_.push_back(req);
  wake();
  bool answered =
      reply_cv_.wait_until(lk, req->deadline, [&] { return req->answered || !req->failure.empty(); });
  if (!answered)
    throw ConnectionError("no cancel_reply from zexecd at " + endpoint_ + " within " +
                          format_seconds(options_.cancel_timeout));
  if (!req->failure.empty()) return 0;  // broke while we waited: the futures failed with it
  return req->cancelled;
}

// ---- I/O thread ------------------------------------------------------------------------------

void ClientCore::send_cancel(const std::shared_ptr<CancelRequest>& req) {
  proto::Cancel msg{req->request_id, {}, req->force};
  if (req->all) {
    inflight_.for_each([&](std::uint64_t id, const StatePtr& s) {
      if (req->force || s->status() == Status::pending) msg.task_ids.push_back(id);
    });
  } else {
    for (const auto& s : req->states)
      if (inflight_.contains(s->id())) msg.task_ids.push_back(s->id());
  }
  if (msg.task_ids.empty()) {  // all already finished: nothing to ask
    {
      std::lock_guard lk(mu_);
      req->answered = true;
    }
    reply_cv_.notify_all();
    return;
  }
  req->frame = proto::encode(msg);
  sendq_.push_back(req->frame);
  awaiting_reply_.emplace(req->request_id, req);
}

void ClientCore::on_cancel_reply(const proto::CancelReply& r) {
  // Applied even when the asker gave up waiting: a task the daemon cancelled gets no other
  // event, so its future must be completed here or it would stay pending forever.
  std::size_t n = 0;
  for (const auto& [id, outcome] : r.outcomes) {
    if (outcome != proto::CancelOutcome::cancelled) continue;
    note_accepted(id);  // the daemon knew it
    StatePtr s;
    if (!inflight_.take(id, s)) continue;
    s->set_cancelled();
    ++n;
  }
  auto it = awaiting_reply_.find(r.request_id);
  if (it == awaiting_reply_.end()) return;
  {
    std::lock_guard lk(mu_);
    it->second->answered = true;
    it->second->cancelled = n;
  }
  awaiting_reply_.erase(it);
  reply_cv_.notify_all();
}

}  // namespace zexec::detail
