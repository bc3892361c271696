// The client side of the broker: handshake, submit, cancel, leaving. (Answers and results going
// back to clients: delivery.cpp.)
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <unordered_set>

#include "broker.hpp"

namespace zexecd {

namespace proto = zexec::proto;

// A results socket's endpoint must be a secret only its client learns (welcome): ipc, a random
// 64-bit token in the daemon run's results directory, which nobody can list (results_dir_);
// tcp, an ephemeral port. Never a name that can be derived, like the client id: a stale client
// of an earlier daemon run would reconnect to it and share the new client's results.
std::string results_endpoint_for(const std::string& front, const std::string& results_dir) {
  if (front.rfind("ipc://", 0) == 0) {
    char token[17];
    std::snprintf(token, sizeof token, "%016llx", static_cast<unsigned long long>(Broker::random_u64()));
    return "ipc://" + results_dir + "/" + token;
  }
  // tcp://HOST:PORT -> tcp://HOST:* (ephemeral port, read back after bind)
  auto colon = front.rfind(':');
  return front.substr(0, colon) + ":*";
}

Client* Broker::find_client(std::uint64_t id) {
  auto it = clients_.find(id);
  return it == clients_.end() ? nullptr : it->second.get();
}

void Broker::read_front() {
  for (int n = 0; n < kReadBudget; ++n) {
    zmq::message_t rid, frame;
    if (!recv_now(front_, rid)) return;
    if (!rid.more()) continue;  // ROUTER always prefixes the identity; nothing to answer
    if (!recv_rest(front_, frame)) return;
    std::size_t extra = 0;
    while (frame.more()) {  // a well-behaved client sends exactly one frame
      zmq::message_t skip;
      if (!recv_rest(front_, skip)) break;
      ++extra;
      if (!skip.more()) break;
    }
    try {
      on_client_frame(rid.to_string(), frame.to_string_view(), extra);
    } catch (const std::exception& e) {
      // The loop must survive anything one client sends.
      counters_.bad_client_frames++;
      spdlog::error("error handling a client message: {}", e.what());
    }
  }
}

void Broker::on_client_frame(const std::string& rid, std::string_view frame, std::size_t extra_frames) {
  if (extra_frames) {
    counters_.bad_client_frames++;
    reply(rid, proto::Error{"bad_message",
                            "expected 1 frame per message, got " + std::to_string(1 + extra_frames)});
    return;
  }
  proto::Decoded d = proto::decode(frame);
  if (!d) {
    counters_.bad_client_frames++;
    spdlog::warn("refused a client frame of {} bytes: {}", frame.size(), d.error);
    bool version = d.error.rfind("unsupported protocol version", 0) == 0;
    reply(rid, proto::Error{version ? "bad_version" : "bad_message", d.error});
    return;
  }
  proto::Message& m = *d.message;
  if (auto* hello = std::get_if<proto::Hello>(&m)) return on_hello(rid, *hello);
  if (std::holds_alternative<proto::Status>(m)) return reply(rid, proto::StatusReply{status_body()});
  if (auto* a = std::get_if<proto::AdminCancel>(&m)) {
    Client* owner = find_client(a->client_id);
    if (!owner)
      return reply(rid, proto::Error{"unknown_client", "no client " + std::to_string(a->client_id)});
    return on_cancel(*owner, proto::Cancel{a->request_id, a->task_ids, a->force}, rid);
  }
  if (std::holds_alternative<proto::Drain>(m)) {
    spdlog::info("drain requested by a client");
    begin_shutdown();
    return reply(rid, proto::StatusReply{status_body()});
  }

  auto it = client_by_rid_.find(rid);
  Client* c = it == client_by_rid_.end() ? nullptr : find_client(it->second);
  if (!c) {
    counters_.bad_client_frames++;
    reply(rid, proto::Error{"unknown_client",
                            std::string("send hello before ") + proto::type_name(proto::type_of(m)) +
                                " (or the daemon forgot this client after it went silent)"});
    return;
  }
  c->last_heard = Clock::now();
  if (auto* s = std::get_if<proto::Submit>(&m)) {
    if (log_) return stash_submit(*c, *s, frame);  // accepted at the commit (durability.cpp)
    return on_submit(*c, *s);
  }
  if (auto* x = std::get_if<proto::Cancel>(&m)) return on_cancel(*c, *x);
  if (auto* a = std::get_if<proto::Ack>(&m)) return on_ack(*c, a->seq);
  if (std::holds_alternative<proto::Heartbeat>(m)) return;
  if (std::holds_alternative<proto::Bye>(m)) return drop_client(c->id, "said bye");
  counters_.bad_client_frames++;
  reply(rid, proto::Error{"bad_message",
                          std::string("a client may not send ") + proto::type_name(proto::type_of(m))});
}

void Broker::on_hello(const std::string& rid, const proto::Hello& m) {
  if (auto it = client_by_rid_.find(rid); it != client_by_rid_.end())
    drop_client(it->second, "said hello again");
  // With a journal a session outlives this run: the client resumes it with the next one.
  if (log_ && m.session != 0 && resume_session(rid, m)) return;
  if (stopping_ && !log_) {
    reply(rid, proto::Error{"shutting_down", "zexecd is stopping and accepts no new clients"});
    return;
  }
  // Each client costs the daemon about 4 descriptors, and libzmq aborts the process on EMFILE:
  // max_clients (fd_budget.hpp) keeps it inside the open-file limit. A refused peer gets no
  // record here; its ROUTER connection lasts only as long as it stays connected.
  if (opts_.max_clients > 0 && clients_.size() >= static_cast<std::size_t>(opts_.max_clients)) {
    ++clients_refused_;
    if ((clients_refused_ & (clients_refused_ - 1)) == 0)  // the 1st, 2nd, 4th...: a flood logs little
      spdlog::warn(
          "refused client '{}' pid {}: {} clients connected, the most max_clients allows ({} refused)",
          m.client_name, m.pid, clients_.size(), clients_refused_);
    reply(rid, proto::Error{"too_many_clients",
                            "zexecd serves at most " + std::to_string(opts_.max_clients) +
                                " clients at once (max_clients) and has them all; try again later, or "
                                "raise --max-clients / max_clients (its default follows the open-file "
                                "limit: LimitNOFILE= in the unit, ulimit -n)"});
    return;
  }
  auto c = std::make_unique<Client>();
  c->id = next_client_id_++;
  c->routing_id = rid;
  c->name = m.client_name;
  c->pid = m.pid;
  if (!open_results(*c, rid)) return;
  c->last_heard = c->last_sent = Clock::now();
  spdlog::info("client {} connected: '{}' pid {}", c->id, c->name, c->pid);
  std::uint32_t workers = workers_.wanted_workers();
  c->heartbeat = std::chrono::milliseconds(opts_.heartbeat_ms);  // this client's for good (reload)
  c->timeout = std::chrono::milliseconds(opts_.client_timeout_ms);
  // A cancel repeated for anything the client could have had unfinished still hears the truth.
  c->cancelled = RecentIds(std::max<std::size_t>(kRecentCancels, opts_.max_pending_per_client));
  if (log_) {
    new_session(*c);
    if (m.session != 0)
      spdlog::info("client {}: session {:x} asked for is not known here: a new one", c->id, m.session);
  }
  proto::Welcome w{c->id,
                   c->results_endpoint,
                   workers,
                   static_cast<std::uint32_t>(c->heartbeat.count()),
                   static_cast<std::uint32_t>(opts_.max_pending_per_client),
                   static_cast<std::uint32_t>(opts_.max_unacked_updates),
                   static_cast<std::uint32_t>(c->timeout.count()),
                   c->session,
                   c->token,
                   false};
  client_by_rid_[rid] = c->id;
  clients_.emplace(c->id, std::move(c));
  reply(rid, w);
}

bool Broker::open_results(Client& c, const std::string& rid) {
  try {
    c.results = zmq::socket_t(ctx_, zmq::socket_type::push);
    c.results.set(zmq::sockopt::sndhwm, 1000);
    c.results.set(zmq::sockopt::linger, 0);
    // Every peer is vetted by read_zap (results_guard.cpp) before its handshake completes.
    c.results.set(zmq::sockopt::zap_domain, results_zap_domain(c.id));
    c.results.bind(results_endpoint_for(opts_.endpoint, results_dir_));
    c.results_endpoint = c.results.get(zmq::sockopt::last_endpoint);
    return true;
  } catch (const std::exception& e) {
    // EMFILE (fds, or libzmq's socket limit) or anything else: this client is told, the rest go on.
    auto* z = dynamic_cast<const zmq::error_t*>(&e);
    bool exhausted = z && (z->num() == EMFILE || z->num() == ENFILE);
    spdlog::error("client '{}' pid {}: cannot open its results socket: {}", c.name, c.pid, e.what());
    reply(rid, proto::Error{exhausted ? "too_many_clients" : "results_socket_failed",
                            std::string("zexecd cannot open a results socket for this client: ") + e.what() +
                                (exhausted ? " (raise the open-file limit: LimitNOFILE= in the unit, "
                                             "ulimit -n; or lower max_clients)"
                                           : "")});
    return false;
  }
}

Handle Broker::new_task(Client& c, proto::TaskSpec& spec, std::uint32_t batch) {
  Handle h = tasks_.alloc(spec.name);
  Task* t = tasks_.get(h);
  t->client_id = c.id;
  t->client_task_id = spec.id;
  t->args = std::move(spec.args);
  t->timeout_ms = spec.timeout_ms ? spec.timeout_ms : static_cast<std::uint32_t>(opts_.task_timeout_ms);
  t->retries = static_cast<std::uint16_t>(std::min(spec.retries, kMaxRetries));
  t->crash_retries = static_cast<std::uint16_t>(std::min(spec.crash_retries, kMaxRetries));
  t->retry_backoff_ms = spec.retry_backoff_ms;
  t->batch = batch;
  c.tasks.insert(spec.id, h);
  counters_.submitted++;
  return h;
}

void Broker::on_submit(Client& c, proto::Submit& m, std::uint32_t batch, std::uint64_t skip_through) {
  if (batch == kNoBatch && refuse_backlogged(c, m)) return;  // (with a journal: stash_submit did)
  for (auto& spec : m.tasks) {
    if (batch != kNoBatch && spec.id > c.accepted_through) {
      if (c.accepted_through == c.told_accepted) c.accepted_moved = Clock::now();  // (tell_accepted_due)
      c.accepted_through = spec.id;
    }
    if (spec.id <= skip_through) continue;  // sent again after a resume: accepted already
    if (c.tasks.find(spec.id)) {
      // Not an event: an event for this id would settle the first task's future.
      reply(c.routing_id,
            proto::Error{"duplicate_task_id", "task id " + std::to_string(spec.id) +
                                                  " is already in flight; this submit of it was refused"});
      continue;
    }
    c.cancelled.erase(spec.id);  // whatever becomes of this id now, it is not that cancelled task
    if (batch != kNoBatch) log_->batch_task(batch);  // it gets a task or an event below
    if (stopping_ && !log_) {                        // (with a journal it is on disk: the next run runs it)
      proto::Event e{
          spec.id, proto::Outcome::error, {}, "ShuttingDown", "zexecd is stopping: task not accepted"};
      push_event(c, std::move(e), batch);
      continue;
    }
    if (c.tasks.size() >= static_cast<std::size_t>(opts_.max_pending_per_client)) {
      // The client library never gets here (it waits for room); a raw client learns per task.
      push_event(c,
                 proto::Event{spec.id,
                              proto::Outcome::error,
                              {},
                              "QueueFull",
                              "this client already has " + std::to_string(c.tasks.size()) +
                                  " unfinished tasks, the most zexecd accepts (max_pending_per_client)"},
                 batch);
      continue;
    }
    enqueue(c, new_task(c, spec, batch), false);
  }
}

void Broker::on_cancel(Client& c, const proto::Cancel& m, const std::string& admin) {
  CancelRequest req{c.id, m.request_id, {}, 0, m.force, admin};
  // Revokes and kills go out once all ids are looked at, so one request costs one revoke per worker.
  std::unordered_map<int, std::vector<Handle>> to_revoke;
  std::vector<int> to_kill;  // workers running a force-cancelled task
  std::vector<Handle> waits_on;
  std::unordered_set<std::uint64_t> seen;
  std::vector<std::uint64_t> noted;  // cancelled here, with nothing to deliver: journaled
  std::vector<std::uint32_t> noted_batches;
  for (auto id : m.task_ids) {
    if (!seen.insert(id).second) continue;  // asked twice in one request: answered once
    Handle h = c.tasks.find(id);
    Task* t = h ? tasks_.get(h) : nullptr;
    if (!t) {
      // Cancelled by an earlier request (which may still be on its way back): say so.
      req.outcomes.emplace_back(
          id, c.cancelled.contains(id) ? proto::CancelOutcome::cancelled : proto::CancelOutcome::finished);
      continue;
    }
    bool can_wait = t->state == TaskState::assigned || (t->state == TaskState::running && m.force);
    if (t->state == TaskState::queued || t->state == TaskState::retry_wait) {
      // A queued handle stays in its queue, stale: the run queues pass over it.
      if (t->state == TaskState::queued) unqueued(*t);
      if (!admin.empty()) {
        post_event(*t, proto::Event{0, proto::Outcome::cancelled, {}, {}, {}});
      } else if (t->batch != kNoBatch) {
        noted.push_back(id);
        noted_batches.push_back(t->batch);
      }
      req.outcomes.emplace_back(id, proto::CancelOutcome::cancelled);
      counters_.cancelled++;
      c.tasks.erase(id);
      c.cancelled.insert(id);
      tasks_.release(h);
    } else if (!can_wait) {
      req.outcomes.emplace_back(id, proto::CancelOutcome::running);
    } else {
      req.outcomes.emplace_back(id, proto::CancelOutcome::running);  // decided when the worker answers
      req.waiting++;
      waits_on.push_back(h);
      if (t->cancel_req >= 0) continue;  // another request already waits on it: wait along
      if (t->state == TaskState::running)
        to_kill.push_back(t->worker);
      else if (!t->revoking)
        to_revoke[t->worker].push_back(h);
    }
  }
  note_cancelled(c, noted, noted_batches);  // the reply waits for its commit (reply())
  if (req.waiting == 0) {
    reply(admin.empty() ? c.routing_id : admin, proto::CancelReply{req.request_id, std::move(req.outcomes)});
    return;
  }
  int req_index = static_cast<int>(cancels_.size());
  for (std::size_t i = 0; i < cancels_.size(); ++i)
    if (!cancels_[i]) req_index = static_cast<int>(i);
  if (req_index == static_cast<int>(cancels_.size())) cancels_.emplace_back();
  cancels_[req_index] = std::move(req);
  for (Handle h : waits_on) {
    Task* t = tasks_.get(h);
    if (t->cancel_req < 0)
      t->cancel_req = req_index;
    else
      extra_cancels_.emplace(h, req_index);
  }
  for (auto& [slot, handles] : to_revoke) revoke(*workers_.at(slot), handles);
  for (int slot : to_kill) workers_.kill(*workers_.at(slot), KilledBy::cancel, SIGTERM);
}

// Called when a task of a pending cancel request got its answer (revoked, started or finished).
void Broker::finish_cancel(int req_index) {
  auto& req = cancels_[req_index];
  if (!req || --req->waiting > 0) return;
  if (!req->reply_to.empty())
    reply(req->reply_to, proto::CancelReply{req->request_id, std::move(req->outcomes)});
  else if (Client* c = find_client(req->client_id))
    reply(c->routing_id, proto::CancelReply{req->request_id, std::move(req->outcomes)});
  req.reset();
}

void Broker::drop_client(std::uint64_t client_id, const char* why) {
  auto it = clients_.find(client_id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  spdlog::info("client {} ('{}') gone: {}; dropping {} unfinished tasks", c.id, c.name, why, c.tasks.size());
  queues_.drop_client(c.id);
  c.tasks.for_each([&](std::uint64_t, Handle h) {
    Task* t = tasks_.get(h);
    if (!t) return;
    if (t->state == TaskState::queued || t->state == TaskState::retry_wait) {
      tasks_.release(h);
    } else {
      t->client_id = 0;  // still at a worker: its result will be discarded
    }
  });
  for (auto& req : cancels_)
    if (req && req->client_id == client_id) req->client_id = 0;
  end_session(c);  // with a journal: every record of its session goes
  client_by_rid_.erase(c.routing_id);
  if (c.results_endpoint.rfind("ipc://", 0) == 0) std::remove(c.results_endpoint.c_str() + 6);
  clients_.erase(it);  // closes its results socket (linger 0)
}

// Tasks refused at submit (QueueFull, ShuttingDown) and tasks no pool runs (settled at once, so
// their slot is free again at once) become events without any task running: max_pending does not
// bound them, and the run queues' kMaxOutboxEvents only stops dispatch. A client that never takes
// its results could pile them up without bound. So a submit that would push the client's
// undelivered events past kMaxOutboxEvents + 2 * max_pending is refused as a whole: one `error`
// `backlogged` names it, none of its tasks is accepted and none gets an event. A client within
// max_pending never gets here: its undelivered events are at most the kMaxOutboxEvents that stop
// dispatch, plus a started and a final event for each of its (at most max_pending) tasks.
bool Broker::refuse_backlogged(Client& c, const proto::Submit& m) {
  const auto pending = static_cast<std::size_t>(opts_.max_pending_per_client);
  const std::size_t bound = kMaxOutboxEvents + 2 * pending;
  if (c.outbox.size() + m.tasks.size() <= bound) return false;  // even one event per task fits
  // The events this submit would add at once, as the loop in on_submit would make them.
  std::size_t at_once = 0, unfinished = c.tasks.size();
  std::unordered_set<std::uint64_t> accepted;  // ids of this frame that would stay unfinished
  for (const auto& spec : m.tasks) {
    if (c.tasks.find(spec.id) || accepted.count(spec.id)) continue;  // duplicate_task_id: no event
    if (stopping_ || unfinished >= pending || route(spec.name) == kNoPool) {
      ++at_once;
      continue;
    }
    ++unfinished;
    accepted.insert(spec.id);
  }
  if (at_once == 0 || c.outbox.size() + at_once <= bound) return false;
  counters_.bad_client_frames++;
  ++c.submits_backlogged;
  if ((c.submits_backlogged & (c.submits_backlogged - 1)) == 0)  // the 1st, 2nd, 4th...
    spdlog::warn(
        "client {} ('{}' pid {}) takes no results: {} events undelivered, {} unacknowledged updates; "
        "refused its submit of {} tasks as a whole ({} submits refused so far)",
        c.id, c.name, c.pid, c.outbox.size(), c.unacked.size(), m.tasks.size(), c.submits_backlogged);
  // at_once > 0: the frame has tasks. Its first and last ids name it (a client numbers its tasks).
  std::string ids = std::to_string(m.tasks.front().id) + ".." + std::to_string(m.tasks.back().id);
  reply(c.routing_id,
        proto::Error{"backlogged",
                     "submit of " + std::to_string(m.tasks.size()) + " tasks (ids " + ids +
                         ") refused as a whole, none accepted: this client takes no results and has " +
                         std::to_string(c.outbox.size()) + " events undelivered; the " +
                         std::to_string(at_once) + " events this submit makes at once would pass the " +
                         std::to_string(bound) + " zexecd holds for a client (" +
                         std::to_string(kMaxOutboxEvents) +
                         " + 2 x max_pending). Take results and ack "
                         "them, and keep within max_pending (" +
                         std::to_string(pending) + ")"});
  return true;
}

}  // namespace zexecd
