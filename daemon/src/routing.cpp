// Routing by task name: which pool runs a task, and its place in the run queues.
//
// Each pool is a set of worker slots started from one command. A worker's hello lists the task
// names it runs (Gearman's CAN_DO); the first hello of a pool teaches the daemon that pool's
// names. A task goes to the first pool, in configuration order, that runs its name, and waits in
// that pool's queue; so a pool of slow Python workers never holds up a C++ task. While a pool
// earlier in the order has not said what it runs, tasks wait unrouted rather than guess; a name
// no pool runs fails at once with UnknownTask.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "broker.hpp"

namespace zexecd {

namespace proto = zexec::proto;

namespace {

// The names a pool runs, for an error message: enough to spot a typo, bounded in length.
std::string some_names(const Pool& p) {
  if (p.runs_anything) return "any";
  std::vector<std::string> sorted(p.names.begin(), p.names.end());
  std::sort(sorted.begin(), sorted.end());
  std::string s;
  for (std::size_t i = 0; i < sorted.size() && i < 20; ++i) s += (i ? ", " : "") + sorted[i];
  if (sorted.size() > 20) s += ", ...";
  return s.empty() ? "nothing" : s;
}

}  // namespace

// SIGHUP: the supervisor resizes the pools (a pool added or removed needs a restart: tasks may
// be queued for it); the settings then say what is in force.
void Broker::resize_pools(const Options& fresh) {
  workers_.resize(fresh);
  opts_.workers = workers_.pool(0).size;
  opts_.worker_command = workers_.pool(0).command;
  opts_.pools.clear();
  for (int p = 1; p < workers_.pools(); ++p)
    opts_.pools.push_back(PoolSpec{workers_.pool(p).name, workers_.pool(p).size, workers_.pool(p).command});
}

void Broker::check_broken_pools() {
  for (int p = 0; p < static_cast<int>(pools_.size()); ++p) {
    bool broken = workers_.pool_broken(p);
    if (broken && queues_.queued(p) > 0) fail_queued(p, "WorkerUnavailable", workers_.unavailable(p));
    if (broken != pools_[p].broken) {
      pools_[p].broken = broken;
      if (broken) reroute_unrouted();  // tasks waiting to hear from this pool wait no more
    }
  }
}

void Broker::learn_names(Worker& w, const std::vector<std::string>& names) {
  Pool& pool = pools_[w.pool];
  std::unordered_set<std::string> fresh(names.begin(), names.end());
  bool changed = !pool.names_known || pool.runs_anything != names.empty() || fresh != pool.names;
  if (!changed) return;
  if (pool.names_known)
    spdlog::info("pool '{}' now runs {} task names (its worker command changed?)", pool.name, fresh.size());
  pool.names_known = true;
  pool.runs_anything = names.empty();
  pool.names = std::move(fresh);
  reroute_unrouted();
}

int Broker::route(const std::string& name) const {
  for (int p = 0; p < static_cast<int>(pools_.size()); ++p) {
    const Pool& pool = pools_[p];
    if (!pool.names_known) {
      if (pool.broken) continue;
      return kUnrouted;  // it may run this name: wait for its hello rather than guess
    }
    if (pool.runs_anything || pool.names.count(name)) return p;
  }
  return kNoPool;
}

void Broker::enqueue(Client& c, Handle h, bool front) {
  Task* t = tasks_.get(h);
  int p = route(t->name->text);
  if (p == kNoPool) {
    counters_.failed++;
    // A pool that never started might have run it: say that, not "unknown".
    for (int q = 0; q < static_cast<int>(pools_.size()); ++q)
      if (!pools_[q].names_known && pools_[q].broken) {
        finish_task(h,
                    proto::Event{0, proto::Outcome::error, {}, "WorkerUnavailable", workers_.unavailable(q)});
        return;
      }
    std::string pools;
    for (const auto& q : pools_) pools += (pools.empty() ? "" : "; ") + q.name + ": " + some_names(q);
    finish_task(h, proto::Event{0,
                                proto::Outcome::error,
                                {},
                                "UnknownTask",
                                "unknown task '" + t->name->text + "': no worker runs it (" + pools + ")"});
    return;
  }
  t->state = TaskState::queued;
  t->worker = -1;
  t->pool = static_cast<std::int16_t>(p);
  queues_.push(c.id, p, h, front);
}

bool Broker::still_queued(Handle h) {
  const Task* t = tasks_.get(h);
  return t && t->state == TaskState::queued;
}

void Broker::reroute_unrouted() {
  for (auto [cid, h] : queues_.take_unrouted([this](Handle x) { return still_queued(x); }))
    if (Client* c = find_client(cid)) enqueue(*c, h, false);
}

void Broker::unqueued(const Task& t) {
  queues_.forget(t.client_id, t.pool);
}

std::optional<Handle> Broker::next_queued(int pool, bool drain) {
  auto live = [this](Handle h) { return still_queued(h); };
  if (drain) return queues_.pop(pool, live);
  // A client not taking its results is passed over: its undelivered events stay bounded.
  return queues_.pop(pool, live, [this](std::uint64_t cid) {
    const Client* c = find_client(cid);
    return c && c->outbox.size() >= kMaxOutboxEvents;
  });
}

std::optional<Handle> Broker::next_queued_anywhere() {
  return queues_.pop_any([this](Handle h) { return still_queued(h); });
}

void Broker::fail_queued(int pool, const std::string& type, const std::string& message) {
  while (auto h = next_queued(pool, true)) {
    counters_.failed++;
    finish_task(*h, proto::Event{0, proto::Outcome::error, {}, type, message});
  }
}

void Broker::requeue_front(Handle h) {
  Task* t = tasks_.get(h);
  Client* c = t ? find_client(t->client_id) : nullptr;
  if (!c) {  // its client is gone: nobody wants the result
    tasks_.release(h);
    return;
  }
  if (stopping_ && !log_) {  // it will never run now (with a journal: in the next run)
    counters_.cancelled++;
    finish_task(h, proto::Event{0, proto::Outcome::cancelled, {}, {}, {}});
    return;
  }
  enqueue(*c, h, true);
}

}  // namespace zexecd
