// The journal in the broker (--journal): what is written when, what a restart reads back, and
// sessions, which outlive connections and daemon runs (PROTOCOL.md §3 "Sessions", "Acceptance").
//
// When. A submit is journaled as received and accepted at the next commit: its tasks exist only
// from then on, so nothing runs that a crash could forget, and `accepted_through` never runs
// ahead of the disk. A cancel_reply waits for the commit of its cancelled record. Final events
// are sent at once, and journaled at the next commit as the updates that carried them (the
// frame as sent), unless the client acknowledged them first: then nothing is written for them
// but the forgetting of their batch. A result that reached the client before its record did is
// harmless (the task runs again after a crash, and the client applies one final event per
// task), so results cost no sync of their own; their records wait for the next commit, at most
// kCommitWindow: the group commit.
//
// Replay. The records of each session rebuild it as the daemon had it, detached until its
// client comes back: tasks not settled are queued again (their attempt counts a run that may
// have happened), settled ones are delivered again, cancelled ones stay cancelled.
#include <spdlog/spdlog.h>

#include <cstring>
#include <msgpack.hpp>
#include <unordered_map>
#include <unordered_set>

#include "broker.hpp"

namespace zexecd {

namespace proto = zexec::proto;

namespace {

template <class... A>
std::string pack_array(const A&... a) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(sizeof...(A));
  (pk.pack(a), ...);
  return std::string(b.data(), b.size());
}

std::string pack_ids(const std::vector<std::uint64_t>& ids) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack(ids);
  return std::string(b.data(), b.size());
}

std::string random_token() {
  std::string t(16, '\0');
  for (int i = 0; i < 2; ++i) {
    std::uint64_t r = Broker::random_u64();
    std::memcpy(t.data() + 8 * i, &r, 8);
  }
  return t;
}

}  // namespace

void Broker::open_journal() {
  if (opts_.journal.empty()) return;
  JournalSync sync;
  if (opts_.journal_sync == "full")
    sync = JournalSync::full;
  else if (opts_.journal_sync == "normal")
    sync = JournalSync::normal;
  else
    throw std::invalid_argument("journal_sync: '" + opts_.journal_sync + "' is not full or normal");
  log_ = std::make_unique<TaskLog>(opts_.journal, sync);
  replay_journal();
}

// ---- writing -------------------------------------------------------------------------------

void Broker::push_event(Client& c, proto::Event&& e, std::uint32_t batch) {
  c.outbox.push_back(std::move(e));
  if (log_) c.outbox_batches.push_back(batch);
}

void Broker::new_session(Client& c) {
  c.session = random_u64() | 1;  // never 0 ("no session")
  c.token = random_token();
  log_->add_session(c.session,
                    pack_array(msgpack::type::raw_ref(c.token.data(), c.token.size()), c.name, c.pid));
  client_by_session_[c.session] = c.id;
  commit_soon_ = true;  // its welcome waits for the commit
}

void Broker::stash_submit(Client& c, proto::Submit& m, std::string_view frame) {
  if (refuse_backlogged(c, m)) return;
  if (log_->failure()) {  // refused at the commit point with the rest of the group
    stashed_.push_back(Stashed{c.id, std::move(m), kNoBatch, 0});
    commit_soon_ = true;
    return;
  }
  // A resumed connection sends again what it was not told is accepted: tasks up to what is
  // (skip_through) are skipped, now and on replay, so that a resend never runs a task twice.
  std::uint64_t skip_through = c.resumed ? c.accepted_through : 0;
  std::string record(8, '\0');
  std::memcpy(record.data(), &skip_through, 8);
  record.append(frame);
  std::uint32_t batch = log_->add_batch(c.session, record);
  stashed_.push_back(Stashed{c.id, std::move(m), batch, skip_through});
  commit_soon_ = true;
}

void Broker::journal_events(Client& c) {
  if (!log_) return;
  // Updates as sent: the frame is the record (replay reads its final events).
  for (std::size_t i = c.unacked.size() - c.sent_unjournaled; i < c.unacked.size(); ++i)
    log_->add_note(LogKind::settled, c.session, c.unacked[i].frame, c.unacked[i].batches);
  c.sent_unjournaled = 0;
  if (c.journaled >= c.outbox.size()) return;
  proto::Update u;
  std::vector<std::uint32_t> batches;
  for (std::size_t i = c.journaled; i < c.outbox.size(); ++i) {
    const proto::Event& e = c.outbox[i];
    if (e.kind == proto::Outcome::started || c.outbox_batches[i] == kNoBatch) continue;
    u.events.push_back(e);
    batches.push_back(c.outbox_batches[i]);
  }
  c.journaled = c.outbox.size();
  if (u.events.empty()) return;
  log_->add_note(LogKind::settled, c.session, proto::encode(u), batches);
}

void Broker::note_cancelled(Client& c, const std::vector<std::uint64_t>& ids,
                            const std::vector<std::uint32_t>& batches) {
  if (!log_ || ids.empty()) return;
  log_->add_note(LogKind::cancelled, c.session, pack_ids(ids), batches);
  commit_soon_ = true;                                 // its cancel_reply waits for the commit
  for (std::uint32_t b : batches) log_->task_done(b);  // nothing to deliver: done once committed
}

void Broker::note_retry(const Task& t) {
  Client* c = log_ ? find_client(t.client_id) : nullptr;
  if (!c || t.batch == kNoBatch) return;
  log_->add_note(LogKind::retry, c->session,
                 pack_array(t.client_task_id, t.attempts, t.errors_seen, t.crashes_seen), {t.batch});
  commit_soon_ = true;  // rare, and a restart must not hand it a retry it already had
}

void Broker::acked(Client& c, const Client::Sent& s) {
  (void)c;
  if (!log_) return;
  for (std::uint32_t b : s.batches)
    if (b != kNoBatch) log_->task_done(b);  // (started events, and events of tasks never accepted)
}

// Once per loop turn, after the client socket was read: the stashed submits become tasks.
void Broker::commit_journal() {
  if (!log_) return;
  for (auto& [id, c] : clients_) journal_events(*c);
  commit_soon_ = false;
  if (!log_->pending() && !log_->failure()) return;
  if (!log_->commit()) {
    // The group is gone, and with it what this turn wrote: the journal is now behind what the
    // daemon holds. Its submits are refused (never accepted, never run), and zexecd stops
    // rather than go on with a journal it cannot trust to match: what was committed before
    // is intact and is what the next run starts from.
    const JournalError& e = *log_->failure();
    if (!journal_failed_) spdlog::critical("{}; zexecd stops", e.what());
    journal_failed_ = true;
    refuse_stashed(e.kind() == JournalError::Kind::full ? "JournalFull" : "JournalFailed", e.what());
    if (!stopping_) {
      exit_code_ = 1;
      begin_shutdown();
    }
    return;
  }
  std::vector<Stashed> stashed = std::move(stashed_);
  stashed_.clear();
  for (auto& s : stashed) {
    Client* c = find_client(s.client_id);
    if (!c) continue;  // dropped in the same turn: its session's records went with it
    on_submit(*c, s.submit, s.batch, s.skip_through);
    log_->forget_if_idle(s.batch);  // every task of it skipped (a resend) or refused without an event
  }
  flush_replies();
}

void Broker::refuse_stashed(const std::string& type, const std::string& why) {
  for (auto& s : stashed_) {
    Client* c = find_client(s.client_id);
    if (!c) continue;
    for (const auto& spec : s.submit.tasks)
      push_event(*c, proto::Event{spec.id, proto::Outcome::error, {}, type, "task not accepted: " + why},
                 kNoBatch);
  }
  stashed_.clear();
}

// ---- sessions --------------------------------------------------------------------------------

bool Broker::resume_session(const std::string& rid, const proto::Hello& m) {
  auto it = client_by_session_.find(m.session);
  Client* c = it == client_by_session_.end() ? nullptr : find_client(it->second);
  if (!c || c->token != m.token) return false;
  if (c->connected) detach_client(*c, "its session was resumed by another connection");
  if (!open_results(*c, rid)) return true;  // (told why; its session waits for another try)
  c->routing_id = rid;
  c->connected = true;
  c->resumed = true;
  c->results_peer.clear();
  c->last_heard = c->last_sent = Clock::now();
  c->heartbeat = std::chrono::milliseconds(opts_.heartbeat_ms);
  c->timeout = std::chrono::milliseconds(opts_.client_timeout_ms);
  // Updates the last connection never saw acknowledged go again, first, as new updates (all
  // in the journal from here on: the outbox knows a journaled front only).
  journal_events(*c);
  std::vector<proto::Event> again;
  std::vector<std::uint32_t> again_batches;
  for (auto& s : c->unacked) {
    proto::Decoded d = proto::decode(s.frame);
    auto* u = d ? std::get_if<proto::Update>(&*d.message) : nullptr;
    if (!u) continue;
    for (std::size_t k = 0; k < u->events.size(); ++k) {
      again_batches.push_back(k < s.batches.size() ? s.batches[k] : kNoBatch);
      again.push_back(std::move(u->events[k]));
    }
  }
  c->unacked.clear();
  c->held.reset();
  c->next_seq = 1;
  c->told_accepted = 0;
  c->outbox.insert(c->outbox.begin(), std::make_move_iterator(again.begin()),
                   std::make_move_iterator(again.end()));
  c->outbox_batches.insert(c->outbox_batches.begin(), again_batches.begin(), again_batches.end());
  c->journaled += again.size();  // they are in the journal already
  client_by_rid_[rid] = c->id;
  spdlog::info("client {} resumed its session: '{}' pid {}, {} unfinished tasks, {} events to deliver", c->id,
               m.client_name, m.pid, c->tasks.size(), c->outbox.size());
  reply(rid, proto::Welcome{c->id, c->results_endpoint, workers_.wanted_workers(),
                            static_cast<std::uint32_t>(c->heartbeat.count()),
                            static_cast<std::uint32_t>(opts_.max_pending_per_client),
                            static_cast<std::uint32_t>(opts_.max_unacked_updates),
                            static_cast<std::uint32_t>(c->timeout.count()), c->session, c->token, true});
  return true;
}

// Its connection is over (silent past client_timeout_ms, or replaced); its session goes on:
// tasks run, events wait for it (bounded: kMaxOutboxEvents stops its dispatch).
void Broker::detach_client(Client& c, const char* why) {
  spdlog::info("client {} ('{}') disconnected: {}; its session waits {} ms for it", c.id, c.name, why,
               opts_.session_timeout_ms);
  client_by_rid_.erase(c.routing_id);
  c.routing_id.clear();
  c.replies.clear();
  if (c.results_endpoint.rfind("ipc://", 0) == 0) std::remove(c.results_endpoint.c_str() + 6);
  c.results.close();
  c.results_endpoint.clear();
  c.held.reset();
  c.connected = false;
}

void Broker::end_session(Client& c) {
  if (!log_ || c.session == 0) return;
  log_->end_session(c.session);
  client_by_session_.erase(c.session);
}

// ---- replay ----------------------------------------------------------------------------------

void Broker::replay_journal() {
  struct Note {
    std::int64_t record;
    LogKind kind;
    std::uint64_t session;
    std::vector<std::uint64_t> ids;  // the tasks it speaks of
  };
  struct Batch {
    std::int64_t record;
    std::uint64_t session;
    std::string frame;
  };
  std::vector<Batch> batches;
  std::vector<Note> notes;
  std::unordered_map<std::uint64_t, std::unordered_map<std::uint64_t, proto::Event>> settled;
  std::unordered_map<std::uint64_t, std::unordered_set<std::uint64_t>> cancelled;
  struct Retry {
    std::uint32_t attempts, errors, crashes;
  };
  std::unordered_map<std::uint64_t, std::unordered_map<std::uint64_t, Retry>> retried;
  std::vector<std::int64_t> unreadable;
  auto now = Clock::now();

  log_->read_all([&](const TaskLog::Replayed& r) {
    try {
      if (r.kind == LogKind::session) {
        auto oh = msgpack::unpack(r.bytes.data(), r.bytes.size());
        auto a = oh.get().as<std::tuple<msgpack::type::raw_ref, std::string, std::int64_t>>();
        auto c = std::make_unique<Client>();
        c->id = next_client_id_++;
        c->session = r.session;
        c->token.assign(std::get<0>(a).ptr, std::get<0>(a).size);
        c->name = std::get<1>(a);
        c->pid = std::get<2>(a);
        c->connected = false;
        c->last_heard = c->last_sent = now;
        c->cancelled = RecentIds(std::max<std::size_t>(kRecentCancels, opts_.max_pending_per_client));
        client_by_session_[c->session] = c->id;
        clients_.emplace(c->id, std::move(c));
      } else if (r.kind == LogKind::batch) {
        batches.push_back(Batch{r.id, r.session, std::string(r.bytes)});
      } else if (r.kind == LogKind::settled) {
        proto::Decoded d = proto::decode(r.bytes);
        auto& u = std::get<proto::Update>(*d.message);
        Note n{r.id, r.kind, r.session, {}};
        for (auto& e : u.events) {
          if (e.kind == proto::Outcome::started) continue;  // (an update as sent has them)
          n.ids.push_back(e.task_id);
          settled[r.session].emplace(e.task_id, std::move(e));
        }
        notes.push_back(std::move(n));
      } else if (r.kind == LogKind::cancelled) {
        auto oh = msgpack::unpack(r.bytes.data(), r.bytes.size());
        Note n{r.id, r.kind, r.session, oh.get().as<std::vector<std::uint64_t>>()};
        for (auto id : n.ids) cancelled[r.session].insert(id);
        notes.push_back(std::move(n));
      } else if (r.kind == LogKind::retry) {
        auto oh = msgpack::unpack(r.bytes.data(), r.bytes.size());
        auto a = oh.get().as<std::tuple<std::uint64_t, std::uint32_t, std::uint32_t, std::uint32_t>>();
        retried[r.session][std::get<0>(a)] = Retry{std::get<1>(a), std::get<2>(a), std::get<3>(a)};
        notes.push_back(Note{r.id, r.kind, r.session, {std::get<0>(a)}});
      } else {
        unreadable.push_back(r.id);
      }
    } catch (const std::exception& e) {
      throw JournalError(JournalError::Kind::unusable,
                         "journal " + log_->path() + ": record " + std::to_string(r.id) +
                             " cannot be read (" + e.what() +
                             "); restore it from a backup, or move it aside to start empty");
    }
  });

  // task id -> its batch slot, per session: which batches each note speaks of.
  std::unordered_map<std::uint64_t, std::unordered_map<std::uint64_t, std::uint32_t>> batch_of;
  std::size_t requeued = 0, to_deliver = 0, orphans = 0;
  for (auto& b : batches) {
    auto it = client_by_session_.find(b.session);
    Client* c = it == client_by_session_.end() ? nullptr : find_client(it->second);
    if (!c) {  // its session ended in a group that did not forget this (cannot happen) or is gone
      log_->forget_record(b.record);
      ++orphans;
      continue;
    }
    std::uint32_t slot = log_->adopt_batch(b.record, b.session);
    std::uint64_t skip_through = 0;
    if (b.frame.size() >= 8) std::memcpy(&skip_through, b.frame.data(), 8);
    proto::Decoded d =
        proto::decode(std::string_view(b.frame).substr(std::min<std::size_t>(8, b.frame.size())));
    auto* m = d ? std::get_if<proto::Submit>(&*d.message) : nullptr;
    if (!m)
      throw JournalError(JournalError::Kind::unusable, "journal " + log_->path() + ": record " +
                                                           std::to_string(b.record) + " is not a submit (" +
                                                           d.error +
                                                           "); restore it from a backup, or move it aside");
    auto& done = settled[b.session];
    auto& gone = cancelled[b.session];
    auto& tries = retried[b.session];
    for (auto& spec : m->tasks) {
      c->accepted_through = std::max(c->accepted_through, spec.id);
      if (spec.id <= skip_through) continue;  // a resend: on_submit skipped it too
      if (c->tasks.find(spec.id) || batch_of[b.session].count(spec.id)) continue;  // a duplicate
      batch_of[b.session][spec.id] = slot;
      if (gone.count(spec.id)) {
        c->cancelled.insert(spec.id);  // a cancel sent again (its reply lost) still hears `cancelled`
        continue;
      }
      if (auto e = done.find(spec.id); e != done.end()) {
        push_event(*c, std::move(e->second), slot);
        done.erase(e);
        log_->batch_task(slot);
        ++to_deliver;
        continue;
      }
      Handle h = new_task(*c, spec, slot);
      Task* t = tasks_.get(h);
      // It may have been running when the daemon stopped: this run counts as another attempt.
      t->attempts = 2;
      if (auto r = tries.find(spec.id); r != tries.end()) {
        t->attempts = r->second.attempts + 1;
        t->errors_seen = static_cast<std::uint16_t>(r->second.errors);
        t->crashes_seen = static_cast<std::uint16_t>(r->second.crashes);
      }
      log_->batch_task(slot);
      enqueue(*c, h, false);
      ++requeued;
    }
  }
  for (auto& n : notes) {
    std::vector<std::uint32_t> slots;
    auto& of = batch_of[n.session];
    for (auto id : n.ids)
      if (auto it = of.find(id); it != of.end()) slots.push_back(it->second);
    log_->adopt_note(n.record, slots);
  }
  for (auto id : unreadable) log_->forget_record(id);
  for (auto& [id, c] : clients_) {
    c->journaled = c->outbox.size();
    c->told_accepted = 0;
  }
  log_->forget_idle_batches();
  if (!log_->commit()) throw *log_->failure();
  if (!clients_.empty() || orphans)
    spdlog::info("journal {}: {} sessions back, {} tasks queued again, {} results to deliver{}", log_->path(),
                 clients_.size(), requeued, to_deliver,
                 orphans ? ", " + std::to_string(orphans) + " records of no session forgotten" : "");
  else
    spdlog::info("journal {}: empty", log_->path());
}

}  // namespace zexecd
