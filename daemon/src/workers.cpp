// The worker side of the broker: spawning, credit-based dispatch, events, revoke/steal, deaths.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "broker.hpp"
#include "spawn.hpp"

namespace zexecd {

namespace proto = zexec::proto;

namespace {
constexpr auto kMaxRespawnDelay = std::chrono::seconds(10);
constexpr std::size_t kMaxBatchBytes = 8 << 20;              // well under ZMQ_MAXMSGSIZE, whatever the args
constexpr auto kExitSettle = std::chrono::milliseconds(50);  // events of a dead worker still in flight
constexpr auto kStartupGrace = std::chrono::seconds(10);     // exec + connect, generous for sanitizer builds
constexpr double kWorkInFlightUs = 2000;  // keep about this much work queued at each worker
}  // namespace

Worker* Broker::find_worker(std::uint64_t worker_id) {
  for (auto& w : workers_)
    if (w && w->id == worker_id) return w.get();
  return nullptr;
}

void Broker::spawn_worker(int slot) {
  auto w = std::make_unique<Worker>();
  w->id = next_worker_id_++;
  w->slot = slot;
  w->pool = slots_[slot].pool;
  const Pool& pool = pools_[w->pool];
  w->tasks = zmq::socket_t(ctx_, zmq::socket_type::push);
  w->tasks.set(zmq::sockopt::sndhwm, 1000);
  w->tasks.set(zmq::sockopt::linger, 0);
  w->tasks_endpoint = "ipc://" + run_dir_ + "/w" + std::to_string(w->id);
  w->spawned = w->last_heard = Clock::now();
  try {
    w->tasks.bind(w->tasks_endpoint);
    std::vector<std::string> env = {
        "ZEXEC_TASKS_ENDPOINT=" + w->tasks_endpoint, "ZEXEC_EVENTS_ENDPOINT=" + events_endpoint_,
        "ZEXEC_WORKER_ID=" + std::to_string(w->id),
        "ZEXEC_HEARTBEAT_MS=" + std::to_string(opts_.heartbeat_ms), "ZEXEC_POOL=" + pool.name};
    w->pid = spawn_process(pool.argv, env);
  } catch (const std::exception& e) {
    // Counted as a death at start: a pool that cannot even be spawned is broken, like one whose
    // command dies at once, and its tasks fail instead of waiting forever.
    spdlog::error("cannot start worker {} of pool '{}': {}", slot, pool.name, e.what());
    Slot& s = slots_[slot];
    s.fast_deaths++;
    pools_[w->pool].last_failure = e.what();
    s.respawn_at =
        Clock::now() + std::min<std::chrono::milliseconds>(
                           std::chrono::milliseconds(100L << std::min(s.fast_deaths, 8)), kMaxRespawnDelay);
    return;
  }
  spdlog::debug("worker {} (id {}) of pool '{}' started, pid {}", slot, w->id, pool.name, w->pid);
  workers_[slot] = std::move(w);
}

void Broker::read_events() {
  for (int n = 0; n < kReadBudget; ++n) {
    zmq::message_t frame;
    if (!recv_now(events_, frame)) return;
    if (frame.more()) {  // a zexec message is one frame: drop the whole multipart message
      std::size_t parts = 1;
      for (zmq::message_t rest; frame.more() && recv_rest(events_, rest); ++parts) frame = std::move(rest);
      counters_.bad_worker_frames++;
      spdlog::warn("refused a worker message of {} frames (expected 1)", parts);
      continue;
    }
    proto::Decoded d = proto::decode(frame.to_string_view());
    if (!d) {
      counters_.bad_worker_frames++;
      spdlog::warn("refused a worker frame of {} bytes: {}", frame.size(), d.error);
      continue;
    }
    try {
      on_worker_message(*d.message);
    } catch (const std::exception& e) {
      counters_.bad_worker_frames++;
      spdlog::error("error handling a worker message: {}", e.what());
    }
  }
}

void Broker::on_worker_message(proto::Message& m) {
  auto now = Clock::now();
  if (auto* h = std::get_if<proto::WorkerHello>(&m)) {
    Worker* w = find_worker(h->worker_id);
    if (!w) return;  // a worker we already replaced
    // Only a starting worker becomes ready: one retired meanwhile (its pool shrank) stays stopping.
    if (w->state == WorkerState::starting) w->state = stopping_ ? WorkerState::stopping : WorkerState::ready;
    w->hello_seen = true;
    w->capacity = std::max<std::uint32_t>(1, h->capacity);
    w->last_heard = now;
    spdlog::debug("worker {} ready: pid {}, capacity {}, {} task names", w->slot, h->pid, h->capacity,
                  h->tasks.size());
    learn_names(*w, h->tasks);
    return;
  }
  if (auto* e = std::get_if<proto::WorkerEvents>(&m)) {
    if (Worker* w = find_worker(e->worker_id)) on_worker_events(*w, *e);
    return;
  }
  if (auto* r = std::get_if<proto::WorkerRevoked>(&m)) {
    if (Worker* w = find_worker(r->worker_id)) on_worker_revoked(*w, *r);
    return;
  }
  counters_.bad_worker_frames++;
  spdlog::warn("a worker sent a {} message, which only clients send", proto::type_name(proto::type_of(m)));
}

void Broker::on_worker_events(Worker& w, proto::WorkerEvents& m) {
  auto now = Clock::now();
  w.last_heard = now;
  std::size_t finals = 0;
  for (std::size_t i = 0; i < m.events.size(); ++i) {
    proto::Event& e = m.events[i];
    Handle h = e.task_id;
    Task* t = tasks_.get(h);
    if (!t || t->worker != w.slot) continue;  // stale: revoked and moved, or already settled
    if (e.kind == proto::Outcome::started) {
      t->state = TaskState::running;
      w.running = h;
      w.running_since = now;
      w.running_deadline =
          t->timeout_ms ? now + std::chrono::milliseconds(t->timeout_ms) : Clock::time_point::max();
      if (t->cancel_req >= 0) cancel_missed(w, h);  // the cancel lost the race
      // The final event right behind it says more; don't send the client both.
      bool final_follows = i + 1 < m.events.size() && m.events[i + 1].task_id == e.task_id;
      if (!final_follows) post_event(*t, proto::Event{0, proto::Outcome::started, {}, {}, {}});
      continue;
    }
    ++finals;
    auto it = std::find(w.held.begin(), w.held.end(), h);
    if (it != w.held.end()) w.held.erase(it);
    if (w.running == h) {
      w.running = 0;
      w.running_deadline = Clock::time_point::max();
    }
    w.tasks_done++;
    set_cancel_outcome(h, proto::CancelOutcome::finished);
    if (e.kind == proto::Outcome::error) {
      task_failed(h, std::move(e), Failure::raised);
    } else {
      counters_.succeeded++;
      finish_task(h, std::move(e));
    }
  }
  if (opts_.max_tasks_per_worker > 0 && w.state == WorkerState::ready &&
      w.tasks_done >= static_cast<std::uint64_t>(opts_.max_tasks_per_worker))
    retire(w, "it ran " + std::to_string(w.tasks_done) + " tasks");
  if (finals && m.busy_us) {
    double per_task = static_cast<double>(m.busy_us) / static_cast<double>(finals);
    double& avg = pools_[w.pool].avg_task_us;
    avg = avg < 0 ? per_task : 0.8 * avg + 0.2 * per_task;
  }
}

void Broker::on_worker_revoked(Worker& w, const proto::WorkerRevoked& m) {
  w.last_heard = Clock::now();
  // Requeue in reverse so push_front keeps the original order.
  for (auto it = m.task_ids.rbegin(); it != m.task_ids.rend(); ++it) {
    Handle h = *it;
    Task* t = tasks_.get(h);
    if (!t || t->worker != w.slot) continue;
    auto pos = std::find(w.held.begin(), w.held.end(), h);
    if (pos != w.held.end()) w.held.erase(pos);
    t->revoking = false;
    if (t->cancel_req >= 0)
      cancel_task(h);
    else
      requeue_front(h);
  }
  // Whatever was asked for and not given back had started.
  for (Handle h : std::deque<Handle>(w.held)) {
    Task* t = tasks_.get(h);
    if (t && t->revoking) cancel_missed(w, h);
  }
  w.revoke_in_flight = false;
  if (!w.revoke_queue.empty()) revoke(w, std::exchange(w.revoke_queue, {}));
}

void Broker::on_worker_exit(Worker& w, int status) {
  std::string how = describe_wait_status(status);
  bool clean = w.state == WorkerState::stopping && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (clean)
    spdlog::debug("worker {} (pid {}) {}", w.slot, w.pid, how);
  else
    spdlog::warn("worker {} (pid {}) {} holding {} tasks", w.slot, w.pid, how, w.held.size());
  // The worker runs its tasks in order, so only the first one held can have been running;
  // dead_worker_head() decides its fate. The rest never started.
  std::deque<Handle> held = std::move(w.held);
  for (std::size_t i = 0; i < held.size(); ++i) {
    Task* t = tasks_.get(held[i]);
    if (!t) continue;
    if (i == 0 && !clean && w.hello_seen) {
      dead_worker_head(w, held[i], how);
    } else if (t->cancel_req >= 0) {
      cancel_task(held[i]);
    } else {
      t->revoking = false;
      requeue_front(held[i]);  // or cancelled, when stopping
    }
  }
  int slot = w.slot;
  auto now = Clock::now();
  // Dying before saying hello is a start failure (bad command, crash at start-up): back off.
  // A worker that served and then died is just replaced.
  Slot& s = slots_[slot];
  if (!w.hello_seen) {
    s.fast_deaths++;
    pools_[w.pool].last_failure = how;
  } else {
    s.fast_deaths = 0;
  }
  // Exponential backoff for a worker command that keeps dying at start: 100 ms, 200 ms, ... 10 s.
  std::chrono::milliseconds delay(0);
  if (s.fast_deaths > 0)
    delay = std::min<std::chrono::milliseconds>(std::chrono::milliseconds(100L << std::min(s.fast_deaths, 8)),
                                                kMaxRespawnDelay);
  if (s.fast_deaths >= kFlapping)
    spdlog::error("worker command '{}' keeps dying at start ({} in a row, last: {}); retrying in {} ms",
                  pools_[w.pool].argv[0], s.fast_deaths, how, delay.count());
  s.respawn_at = now + delay;
  workers_[slot].reset();  // closes its socket; late events from it no longer match a worker
  if (!stopping_ && s.wanted) {
    counters_.worker_restarts++;
    s.restarts++;
  }
}

// Replaces a worker between tasks: it gets no more, finishes the one it runs, and exits; what it
// held unstarted goes back to the queue when it exits, and a fresh worker takes its slot.
void Broker::retire(Worker& w, const std::string& why) {
  spdlog::info("replacing worker {} (pid {}): {}", w.slot, w.pid, why);
  w.state = WorkerState::stopping;
  send_to_worker(w, proto::encode(proto::Shutdown{}));
}

std::uint32_t Broker::window(const Worker& w) const {
  std::uint32_t cap = std::min<std::uint32_t>(w.capacity, static_cast<std::uint32_t>(opts_.max_prefetch));
  // Until a task has finished nothing is known: one each, so the first tasks spread out.
  double avg = pools_[w.pool].avg_task_us;
  if (avg < 0) return 1;
  // Long tasks: the running one plus one ready behind it (stealing fixes imbalance).
  // Tiny tasks: enough to cover a round trip to the daemon many times over.
  double n = 1 + std::ceil(kWorkInFlightUs / std::max(avg, 1.0));
  return std::clamp<std::uint32_t>(static_cast<std::uint32_t>(std::min(n, 1e6)), 1, cap);
}

void Broker::dispatch(Clock::time_point now) {
  if (queues_.queued() == 0 || stopping_) return;
  for (int p = 0; p < static_cast<int>(pools_.size()); ++p)
    if (queues_.queued(p) > 0) dispatch_pool(p, now);
}

void Broker::dispatch_pool(int pool, Clock::time_point now) {
  auto stuck_after = std::chrono::milliseconds(opts_.steal_after_ms);
  std::vector<Worker*> room;
  for (auto& w : workers_) {
    if (!w || w->pool != pool || w->state != WorkerState::ready || w->exit_status || !w->pending.empty() ||
        w->held.size() >= window(*w))
      continue;
    // A worker deep in a long task gets nothing more: it would only hold it hostage.
    if (w->running && now - w->running_since >= stuck_after) continue;
    room.push_back(w.get());
  }
  if (room.empty()) return;
  // Emptiest first, and an even share each, so a short queue goes to idle workers rather than
  // all to the first worker with room.
  std::stable_sort(room.begin(), room.end(),
                   [](Worker* a, Worker* b) { return a->held.size() < b->held.size(); });
  struct Batch {
    Worker* w;
    std::size_t room;
    std::size_t bytes = 0;
    std::vector<Handle> handles;
  };
  std::vector<Batch> batches;
  std::size_t share = (queues_.queued(pool) + room.size() - 1) / room.size();
  for (Worker* w : room)
    batches.push_back({w, std::min<std::size_t>(window(*w) - w->held.size(), share), 0, {}});
  // Deal one task at a time round the workers, like cards: a short queue starts on as many
  // workers as possible, in submission order, instead of in chunks behind each other.
  bool dealt = true;
  while (dealt) {
    dealt = false;
    for (auto& b : batches) {
      if (b.room == 0) continue;
      auto h = next_queued(pool);
      if (!h) break;
      Task* t = tasks_.get(*h);
      std::size_t size = t->name->text.size() + t->args.size() + 32;
      if (!b.handles.empty() && b.bytes + size > kMaxBatchBytes) {  // the next frame takes it
        requeue_front(*h);
        b.room = 0;
        continue;
      }
      t->state = TaskState::assigned;
      t->worker = b.w->slot;
      b.w->held.push_back(*h);
      b.handles.push_back(*h);
      b.bytes += size;
      b.room--;
      dealt = true;
    }
  }
  for (auto& b : batches) {
    if (b.handles.empty()) continue;
    // Encoded from the task table itself: no copy of each name and argument list on the way.
    proto::TaskListWriter out(scratch_, proto::Type::tasks, static_cast<std::uint32_t>(b.handles.size()));
    for (Handle h : b.handles) {
      const Task* t = tasks_.get(h);
      out.add(h, t->name->text, t->args);
    }
    send_to_worker(*b.w, std::move(scratch_));
    scratch_.clear();
  }
}

bool Broker::idle_worker_in(int pool) const {
  for (const auto& w : workers_)
    if (w && w->pool == pool && w->state == WorkerState::ready && w->held.empty()) return true;
  return false;
}

void Broker::steal(Clock::time_point now) {
  if (stopping_) return;
  for (int p = 0; p < static_cast<int>(pools_.size()); ++p)
    if (queues_.queued(p) == 0 && idle_worker_in(p)) steal_in(p, now);
}

// An idle worker of the pool and nothing queued for it: take back the unstarted tasks of its
// peers that are stuck behind a long one, so the idle worker gets them.
void Broker::steal_in(int pool, Clock::time_point now) {
  auto after = std::chrono::milliseconds(opts_.steal_after_ms);
  for (auto& w : workers_) {
    if (!w || w->pool != pool || w->state != WorkerState::ready || w->exit_status || !w->running ||
        w->held.size() < 2)
      continue;
    if (w->revoke_in_flight || now - w->running_since < after) continue;
    std::vector<Handle> unstarted(w->held.begin() + 1, w->held.end());
    spdlog::debug("worker {} busy for {} ms: taking back {} queued tasks", w->slot,
                  std::chrono::duration_cast<std::chrono::milliseconds>(now - w->running_since).count(),
                  unstarted.size());
    revoke(*w, unstarted);
  }
}

void Broker::revoke(Worker& w, const std::vector<Handle>& handles) {
  auto wanted = [&](Handle h) {
    Task* t = tasks_.get(h);
    return t && t->worker == w.slot && t->state == TaskState::assigned && !t->revoking;
  };
  if (w.revoke_in_flight) {
    for (Handle h : handles)
      if (wanted(h) && std::find(w.revoke_queue.begin(), w.revoke_queue.end(), h) == w.revoke_queue.end())
        w.revoke_queue.push_back(h);
    return;
  }
  proto::Revoke msg;
  for (Handle h : handles) {
    if (!wanted(h)) continue;
    tasks_.get(h)->revoking = true;
    msg.task_ids.push_back(h);
  }
  if (msg.task_ids.empty()) return;
  w.revoke_in_flight = true;
  send_to_worker(w, proto::encode(msg));
}

bool Broker::send_to_worker(Worker& w, std::string&& msg) {
  if (w.pending.empty() && send_now(w.tasks, zmq::buffer(msg))) return true;
  w.pending.push_back(std::move(msg));
  return false;
}

void Broker::flush_worker(Worker& w) {
  while (!w.pending.empty()) {
    if (!send_now(w.tasks, zmq::buffer(w.pending.front()))) return;
    w.pending.pop_front();
  }
}

namespace {
std::uint64_t resident_bytes(pid_t pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/statm").c_str(), "r");
  if (!f) return 0;
  unsigned long size = 0, resident = 0;
  int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return n == 2 ? resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
}
}  // namespace

void Broker::worker_timers(Clock::time_point now) {
  bool sample_rss = now >= next_rss_check_;
  if (sample_rss) next_rss_check_ = now + std::chrono::milliseconds(opts_.heartbeat_ms);
  for (int i = 0; i < static_cast<int>(workers_.size()); ++i) {
    auto& w = workers_[i];
    if (!w) {
      if (slots_[i].wanted && !stopping_ && now >= slots_[i].respawn_at) spawn_worker(i);
      continue;
    }
    if (w->exit_status) {
      // Reaped a moment ago: its last events had time to arrive; now settle what it held.
      if (now >= w->exited_at + kExitSettle) {
        read_events();
        if (workers_[i]) on_worker_exit(*workers_[i], *workers_[i]->exit_status);
      }
      continue;
    }
    if (stopping_ && now >= stop_deadline_) {
      kill_worker(*w, KilledBy::shutdown, SIGKILL);
      continue;
    }
    if (sample_rss && w->pid > 0) {
      w->rss_bytes = resident_bytes(w->pid);
      auto limit = static_cast<std::uint64_t>(opts_.max_memory_per_worker_mb) << 20;
      if (limit && w->rss_bytes > limit && w->state == WorkerState::ready)
        retire(*w, "resident memory " + std::to_string(w->rss_bytes >> 20) + " MiB is over the limit of " +
                       std::to_string(opts_.max_memory_per_worker_mb) + " MiB");
    }
    if (now >= w->kill_deadline) {
      kill(w->pid, SIGKILL);  // it did not stop within cancel_grace_ms
      w->kill_deadline = Clock::time_point::max();
    }
    if (w->running && now >= w->running_deadline) {
      // A task cannot be interrupted safely inside a worker: the process is the unit of isolation.
      spdlog::warn("worker {} (pid {}): task past its timeout, killing the worker", w->slot, w->pid);
      kill_worker(*w, KilledBy::timeout, SIGKILL);
      w->running_deadline = Clock::time_point::max();
    }
    auto limit =
        w->state == WorkerState::starting
            ? std::max<Clock::duration>(kStartupGrace, std::chrono::milliseconds(opts_.worker_liveness_ms))
            : Clock::duration(std::chrono::milliseconds(opts_.worker_liveness_ms));
    if (now - w->last_heard > limit && w->pid > 0) {
      spdlog::warn("worker {} (pid {}) silent for {} ms: killing it", w->slot, w->pid,
                   std::chrono::duration_cast<std::chrono::milliseconds>(now - w->last_heard).count());
      kill_worker(*w, KilledBy::silence, SIGKILL);
      w->last_heard = now;  // don't kill it again every turn while it dies
    }
  }
}

}  // namespace zexecd
