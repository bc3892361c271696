// Worker pools and routing by task name.
//
// Each pool is a set of worker slots started from one command. A worker's hello lists the task
// names it runs (Gearman's CAN_DO); the first hello of a pool teaches the daemon that pool's
// names. A task goes to the first pool, in configuration order, that runs its name, and waits in
// that pool's queue; so a pool of slow Python workers never holds up a C++ task. While a pool
// earlier in the order has not said what it runs, tasks wait unrouted rather than guess; a name
// no pool runs fails at once with UnknownTask.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "broker.hpp"
#include "spawn.hpp"

namespace zexecd {

namespace proto = zexec::proto;

namespace {

std::vector<std::string> argv_of(const std::string& command) {
  return command.empty() ? std::vector<std::string>{self_dir() + "/zexec-worker"} : split_command(command);
}

int resolved_workers(int configured) {
  return configured > 0 ? configured : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

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

void Broker::make_pools() {
  opts_.workers = resolved_workers(opts_.workers);
  pools_.clear();
  auto add = [&](const std::string& name, int size, const std::string& command) {
    Pool& p = pools_.emplace_back();
    p.name = name;
    p.size = size;
    p.command = command;
    p.argv = argv_of(command);
  };
  add("default", opts_.workers, opts_.worker_command);
  for (const auto& spec : opts_.pools) add(spec.name, spec.workers, spec.command);
  queues_ = RunQueues(static_cast<int>(pools_.size()));
  for (int p = 0; p < static_cast<int>(pools_.size()); ++p)
    for (int i = 0; i < pools_[p].size; ++i) slots_.push_back(Slot{p, true, Clock::now(), 0, 0});
  workers_.resize(slots_.size());
}

// SIGHUP: each pool takes its new size and command (for workers started from now on). A pool
// added or removed in the settings needs a restart: tasks may be queued for it.
void Broker::resize_pools(const Options& fresh) {
  for (const auto& spec : fresh.pools)
    if (std::none_of(pools_.begin(), pools_.end(), [&](const Pool& p) { return p.name == spec.name; }))
      spdlog::warn("SIGHUP: new pool '{}' needs a restart of zexecd", spec.name);
  for (int p = 0; p < static_cast<int>(pools_.size()); ++p) {
    Pool& pool = pools_[p];
    int size = 0;
    std::string command;
    if (p == 0) {
      size = resolved_workers(fresh.workers);
      command = fresh.worker_command;
    } else {
      auto it = std::find_if(fresh.pools.begin(), fresh.pools.end(),
                             [&](const PoolSpec& s) { return s.name == pool.name; });
      if (it == fresh.pools.end()) {
        spdlog::warn("SIGHUP: removing pool '{}' needs a restart of zexecd; it keeps running", pool.name);
        continue;
      }
      size = it->workers;
      command = it->command;
    }
    if (command != pool.command) {
      try {
        pool.argv = argv_of(command);
        pool.command = command;
        spdlog::info("SIGHUP: pool '{}': new worker command, for workers started from now on: {}", pool.name,
                     command);
      } catch (const std::exception& e) {
        spdlog::error("SIGHUP: pool '{}': {}; keeping the old worker command", pool.name, e.what());
      }
    }
    if (size != pool.size) spdlog::info("pool '{}': {} -> {} workers", pool.name, pool.size, size);
    pool.size = size;
    // Grow into the pool's empty slots first, then new ones; shrink from the last slot: those
    // workers retire between tasks, what they held goes back to the queue.
    int wanted = 0;
    for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
      Slot& s = slots_[i];
      if (s.pool != p) continue;
      if (s.wanted && wanted < size) {
        ++wanted;
      } else if (!s.wanted && wanted < size && !workers_[i]) {
        // An empty slot comes back; one whose worker is still retiring (it may finish a long
        // task first) does not: a fresh slot is added below, so capacity returns at once.
        s = Slot{p, true, Clock::now(), 0, s.restarts};
        ++wanted;
      } else if (s.wanted) {
        s.wanted = false;
        if (workers_[i] && workers_[i]->state != WorkerState::stopping)
          retire(*workers_[i], "the pool shrinks");
      }
    }
    for (; wanted < size; ++wanted) {
      slots_.push_back(Slot{p, true, Clock::now(), 0, 0});
      workers_.emplace_back();
    }
  }
  opts_.workers = pools_[0].size;
  opts_.worker_command = pools_[0].command;
  opts_.pools.clear();
  for (std::size_t p = 1; p < pools_.size(); ++p)
    opts_.pools.push_back(PoolSpec{pools_[p].name, pools_[p].size, pools_[p].command});
}

// True when no worker of the pool runs and each of its slots failed to start several times in a
// row: its queued tasks would wait forever, so they fail instead (the daemon keeps retrying).
bool Broker::pool_broken(int pool) const {
  bool any = false;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].pool != pool || !slots_[i].wanted) continue;
    any = true;
    if (workers_[i] && workers_[i]->state != WorkerState::starting) return false;
    if (slots_[i].fast_deaths < kFlapping) return false;
  }
  return any;
}

std::string Broker::unavailable(int pool) const {
  return "no worker of pool '" + pools_[pool].name + "' can start: the worker command '" +
         pools_[pool].argv[0] + "' failed at start-up repeatedly (last: " + pools_[pool].last_failure +
         "); zexecd keeps retrying it";
}

void Broker::check_broken_pools() {
  for (int p = 0; p < static_cast<int>(pools_.size()); ++p) {
    bool broken = pool_broken(p);
    if (broken && queues_.queued(p) > 0) fail_queued(p, "WorkerUnavailable", unavailable(p));
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
        finish_task(h, proto::Event{0, proto::Outcome::error, {}, "WorkerUnavailable", unavailable(q)});
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
  if (stopping_) {  // it will never run now
    counters_.cancelled++;
    finish_task(h, proto::Event{0, proto::Outcome::cancelled, {}, {}, {}});
    return;
  }
  enqueue(*c, h, true);
}

}  // namespace zexecd
