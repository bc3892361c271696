// The worker side of the broker: workers' messages, credit-based dispatch, revoke/steal, and what
// a dead worker's tasks become. (Their processes are the Supervisor's.)
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
constexpr std::size_t kMaxBatchBytes = 8 << 20;  // well under ZMQ_MAXMSGSIZE, whatever the args
constexpr double kWorkInFlightUs = 2000;         // keep about this much work queued at each worker
}  // namespace

void Broker::read_events() {
  for (int n = 0; n < kReadBudget; ++n) {
    zmq::message_t frame;
    if (!recv_now(events_, frame)) return;
    if (frame.more()) {  // a zexec message is one frame: drop the whole multipart message
      std::size_t parts = 1;
      auto sender = proto::sender_worker_id(frame.to_string_view());
      for (zmq::message_t rest; frame.more() && recv_rest(events_, rest); ++parts) frame = std::move(rest);
      refused_worker_frame(sender, "a message of " + std::to_string(parts) + " frames (expected 1)");
      continue;
    }
    proto::Decoded d = proto::decode(frame.to_string_view());
    if (!d) {
      refused_worker_frame(proto::sender_worker_id(frame.to_string_view()),
                           std::to_string(frame.size()) + " bytes: " + d.error);
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

// A frame no reader can trust. When it still names its worker, that worker goes (its tasks move
// on: the one it ran fails, the rest go back to the queue); otherwise only counted, and a worker
// that sends nothing readable is caught by its silence (worker_liveness_ms).
void Broker::refused_worker_frame(std::optional<std::uint64_t> sender, const std::string& what) {
  counters_.bad_worker_frames++;
  Worker* w = sender ? workers_.find(*sender) : nullptr;
  if (!w) {
    spdlog::warn("refused a worker frame from no known worker: {}", what);
    return;
  }
  workers_.reject(*w, what);
}

void Broker::on_worker_message(proto::Message& m) {
  if (auto* h = std::get_if<proto::WorkerHello>(&m)) {
    Worker* w = workers_.find(h->worker_id);
    if (!w) return;  // a worker we already replaced
    workers_.hello(*w, h->capacity);
    spdlog::debug("worker {} ready: pid {}, capacity {}, {} task names", w->slot, h->pid, h->capacity,
                  h->tasks.size());
    learn_names(*w, h->tasks);
    return;
  }
  if (auto* e = std::get_if<proto::WorkerEvents>(&m)) {
    if (Worker* w = workers_.find(e->worker_id)) on_worker_events(*w, *e);
    return;
  }
  if (auto* r = std::get_if<proto::WorkerRevoked>(&m)) {
    if (Worker* w = workers_.find(r->worker_id)) on_worker_revoked(*w, *r);
    return;
  }
  counters_.bad_worker_frames++;
  spdlog::warn("a worker sent a {} message, which only clients send", proto::type_name(proto::type_of(m)));
}

void Broker::on_worker_events(Worker& w, proto::WorkerEvents& m) {
  auto now = Clock::now();
  workers_.heard_from(w, now);
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
    set_cancel_outcome(h, proto::CancelOutcome::finished);
    if (e.kind == proto::Outcome::error) {
      task_failed(h, std::move(e), Failure::raised);
    } else {
      counters_.succeeded++;
      finish_task(h, std::move(e));
    }
  }
  workers_.finished_tasks(w, finals);
  if (finals && m.busy_us) {
    double per_task = static_cast<double>(m.busy_us) / static_cast<double>(finals);
    double& avg = pools_[w.pool].avg_task_us;
    avg = avg < 0 ? per_task : 0.8 * avg + 0.2 * per_task;
  }
}

void Broker::on_worker_revoked(Worker& w, const proto::WorkerRevoked& m) {
  workers_.heard_from(w, Clock::now());
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

// The supervisor's hook: a worker's process ended a moment ago. Its last events are read first
// (they settle tasks it finished), then what it still held is settled here.
void Broker::on_worker_exit(Worker& w, int status) {
  read_events();
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
  workers_.for_each([&](Worker& w) {
    if (w.pool != pool || !w.open() || w.held.size() >= window(w)) return;
    // A worker deep in a long task gets nothing more: it would only hold it hostage.
    if (w.running && now - w.running_since >= stuck_after) return;
    room.push_back(&w);
  });
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
      out.add(h, t->name->text, t->args, {}, t->attempts);  // the attempt: sent from 2 on
    }
    workers_.send(*b.w, std::move(scratch_));
    scratch_.clear();
  }
}

bool Broker::idle_worker_in(int pool) const {
  bool idle = false;
  workers_.for_each(
      [&](const Worker& w) { idle |= w.pool == pool && w.state == WorkerState::ready && w.held.empty(); });
  return idle;
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
  workers_.for_each([&](Worker& w) {
    if (w.pool != pool || w.state != WorkerState::ready || w.exit_status || !w.running || w.held.size() < 2)
      return;
    if (w.revoke_in_flight || now - w.running_since < after) return;
    std::vector<Handle> unstarted(w.held.begin() + 1, w.held.end());
    spdlog::debug("worker {} busy for {} ms: taking back {} queued tasks", w.slot,
                  std::chrono::duration_cast<std::chrono::milliseconds>(now - w.running_since).count(),
                  unstarted.size());
    revoke(w, unstarted);
  });
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
  workers_.send(w, proto::encode(msg));
}

// A task cannot be interrupted safely inside a worker: the process is the unit of isolation, so a
// task past its timeout costs its worker.
Clock::time_point Broker::task_timers(Clock::time_point now) {
  Clock::time_point next = Clock::time_point::max();
  workers_.for_each([&](Worker& w) {
    if (w.running && !w.exit_status && now >= w.running_deadline) {
      spdlog::warn("worker {} (pid {}): task past its timeout, killing the worker", w.slot, w.pid);
      workers_.kill(w, KilledBy::timeout, SIGKILL);
      w.running_deadline = Clock::time_point::max();
    }
    next = std::min(next, w.running_deadline);
  });
  return next;
}

}  // namespace zexecd
