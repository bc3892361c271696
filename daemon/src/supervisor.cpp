#include "supervisor.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "spawn.hpp"
#include "zexec/detail/zmq_io.hpp"
#include "zexec/protocol.hpp"

namespace zexecd {

namespace proto = zexec::proto;

namespace {
constexpr auto kMaxRespawnDelay = std::chrono::seconds(10);
constexpr auto kExitSettle = std::chrono::milliseconds(50);  // events of a dead worker still in flight
constexpr auto kStartupGrace = std::chrono::seconds(10);     // exec + connect, generous for sanitizer builds

std::vector<std::string> argv_of(const std::string& command) {
  return command.empty() ? std::vector<std::string>{self_dir() + "/zexec-worker"} : split_command(command);
}

int resolved_workers(int configured) {
  return configured > 0 ? configured : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::uint64_t resident_bytes(pid_t pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/statm").c_str(), "r");
  if (!f) return 0;
  unsigned long size = 0, resident = 0;
  int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return n == 2 ? resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
}
}  // namespace

Supervisor::Supervisor(const Options& opts, zmq::context_t& ctx, ExitHook on_exit)
    : opts_(opts), ctx_(ctx), on_exit_(std::move(on_exit)) {
  auto add = [&](const std::string& name, int size, const std::string& command) {
    pools_.push_back(WorkerPool{name, size, command, argv_of(command), {}});
  };
  add("default", resolved_workers(opts.workers), opts.worker_command);
  for (const auto& spec : opts.pools) add(spec.name, spec.workers, spec.command);
  for (int p = 0; p < pools(); ++p)
    for (int i = 0; i < pools_[p].size; ++i) slots_.push_back(Slot{p, true, Clock::now(), 0, 0});
  workers_.resize(slots_.size());
}

Supervisor::~Supervisor() {
  for (auto& w : workers_)
    if (w && w->pid > 0) {
      ::kill(w->pid, SIGKILL);
      waitpid(w->pid, nullptr, 0);
    }
}

void Supervisor::start(const std::string& run_dir, const std::string& events_endpoint) {
  run_dir_ = run_dir;
  events_endpoint_ = events_endpoint;
  for (int i = 0; i < static_cast<int>(slots_.size()); ++i) spawn(i);
}

std::chrono::milliseconds Supervisor::backoff(const Slot& s) const {
  // Exponential for a worker command that keeps dying at start: 100 ms, 200 ms, ... 10 s.
  if (s.fast_deaths <= 0) return std::chrono::milliseconds(0);
  return std::min<std::chrono::milliseconds>(std::chrono::milliseconds(100L << std::min(s.fast_deaths, 8)),
                                             kMaxRespawnDelay);
}

void Supervisor::spawn(int slot) {
  auto w = std::make_unique<Worker>();
  w->id = next_worker_id_++;
  w->slot = slot;
  w->pool = slots_[slot].pool;
  WorkerPool& pool = pools_[w->pool];
  w->tasks = zmq::socket_t(ctx_, zmq::socket_type::push);
  w->tasks.set(zmq::sockopt::sndhwm, 1000);
  w->tasks.set(zmq::sockopt::linger, 0);
  w->tasks_endpoint = "ipc://" + run_dir_ + "/w" + std::to_string(w->id);
  w->spawned = w->last_heard = Clock::now();
  w->heartbeat = std::chrono::milliseconds(opts_.heartbeat_ms);
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
    pool.last_failure = e.what();
    s.respawn_at = Clock::now() + backoff(s);
    return;
  }
  spdlog::debug("worker {} (id {}) of pool '{}' started, pid {}", slot, w->id, pool.name, w->pid);
  workers_[slot] = std::move(w);
}

Worker* Supervisor::find(std::uint64_t worker_id) {
  for (auto& w : workers_)
    if (w && w->id == worker_id) return w.get();
  return nullptr;
}

bool Supervisor::any_alive() const {
  return std::any_of(workers_.begin(), workers_.end(), [](const auto& w) { return w != nullptr; });
}

std::uint32_t Supervisor::wanted_workers() const {
  std::uint32_t n = 0;
  for (const auto& p : pools_) n += static_cast<std::uint32_t>(p.size);
  return n;
}

void Supervisor::hello(Worker& w, std::uint32_t capacity) {
  // Only a starting worker becomes ready: one retired meanwhile (its pool shrank) stays stopping.
  if (w.state == WorkerState::starting) w.state = stopping_ ? WorkerState::stopping : WorkerState::ready;
  w.hello_seen = true;
  w.capacity = std::max<std::uint32_t>(1, capacity);
  w.last_heard = Clock::now();
}

void Supervisor::finished_tasks(Worker& w, std::size_t n) {
  w.tasks_done += n;
  if (opts_.max_tasks_per_worker > 0 && w.state == WorkerState::ready &&
      w.tasks_done >= static_cast<std::uint64_t>(opts_.max_tasks_per_worker))
    retire(w, "it ran " + std::to_string(w.tasks_done) + " tasks");
}

bool Supervisor::send(Worker& w, std::string&& msg) {
  if (w.pending.empty() && zexec::detail::send_now(w.tasks, zmq::buffer(msg))) return true;
  w.pending.push_back(std::move(msg));
  return false;
}

void Supervisor::flush(Worker& w) {
  while (!w.pending.empty()) {
    if (!zexec::detail::send_now(w.tasks, zmq::buffer(w.pending.front()))) return;
    w.pending.pop_front();
  }
}

void Supervisor::retire(Worker& w, const std::string& why) {
  spdlog::info("replacing worker {} (pid {}): {}", w.slot, w.pid, why);
  w.state = WorkerState::stopping;
  send(w, proto::encode(proto::Shutdown{}));
}

void Supervisor::kill(Worker& w, KilledBy why, int sig) {
  if (w.pid <= 0 || w.exit_status) return;
  if (w.killed_by == KilledBy::none) {
    w.killed_by = why;
    w.kill_target = w.running;
  }
  if (why == KilledBy::cancel) {
    spdlog::info("worker {} (pid {}): stopping it to cancel its running task", w.slot, w.pid);
    w.state = WorkerState::stopping;  // nothing more for it
    if (w.kill_deadline == Clock::time_point::max())
      w.kill_deadline = Clock::now() + std::chrono::milliseconds(opts_.cancel_grace_ms);
  }
  ::kill(w.pid, sig);
}

void Supervisor::reject(Worker& w, const std::string& why) {
  if (w.exit_status || w.killed_by == KilledBy::bad_frame) return;  // once is enough
  spdlog::warn("worker {} (pid {}) sent an invalid frame ({}): killing and replacing it", w.slot, w.pid, why);
  rejected_++;
  w.kill_reason = "sent an invalid frame: " + why;
  kill(w, KilledBy::bad_frame, SIGKILL);
  w.state = WorkerState::stopping;  // nothing more for it while it dies
}

void Supervisor::reap() {
  int status = 0;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (auto& w : workers_)
      if (w && w->pid == pid) {
        w->exit_status = status;
        w->exited_at = Clock::now();
        break;
      }
  }
}

void Supervisor::stop(Clock::time_point deadline) {
  stopping_ = true;
  stop_deadline_ = deadline;
  std::string bye = proto::encode(proto::Shutdown{});
  for (auto& w : workers_)
    if (w) {
      w->state = WorkerState::stopping;
      send(*w, std::string(bye));
    }
}

void Supervisor::kill_all_now() {
  stopping_ = true;
  stop_deadline_ = Clock::now();
  for (auto& w : workers_)
    if (w) kill(*w, KilledBy::shutdown, SIGKILL);
}

// The worker's tasks are settled (by the hook); now its slot: a worker that died before saying
// hello failed to start, and its slot backs off; one that served is just replaced.
void Supervisor::exited(int slot) {
  Worker& w = *workers_[slot];
  Slot& s = slots_[slot];
  if (!w.hello_seen) {
    s.fast_deaths++;
    pools_[w.pool].last_failure =
        w.kill_reason.empty() ? describe_wait_status(*w.exit_status) : "it " + w.kill_reason;
  } else {
    s.fast_deaths = 0;
  }
  auto delay = backoff(s);
  if (s.fast_deaths >= kFlapping)
    spdlog::error("worker command '{}' keeps dying at start ({} in a row, last: {}); retrying in {} ms",
                  pools_[w.pool].argv[0], s.fast_deaths, pools_[w.pool].last_failure, delay.count());
  s.respawn_at = Clock::now() + delay;
  if (!stopping_ && s.wanted) {
    s.restarts++;
    restarts_++;
  }
  workers_[slot].reset();  // closes its socket; late events from it no longer match a worker
}

Clock::time_point Supervisor::tick(Clock::time_point now) {
  Clock::time_point next = Clock::time_point::max();
  bool sample_rss = now >= next_rss_check_;
  if (sample_rss) next_rss_check_ = now + std::chrono::milliseconds(opts_.heartbeat_ms);
  for (int i = 0; i < static_cast<int>(workers_.size()); ++i) {
    auto& w = workers_[i];
    if (!w) {
      if (!slots_[i].wanted || stopping_) continue;
      if (now >= slots_[i].respawn_at) spawn(i);
      if (!workers_[i]) next = std::min(next, slots_[i].respawn_at);
      continue;
    }
    if (w->exit_status) {
      // Reaped a moment ago: its last events had time to arrive; now settle what it held.
      if (now >= w->exited_at + kExitSettle) {
        on_exit_(*w, *w->exit_status);
        exited(i);
        // Its successor is due now, or after the backoff: the loop must wake up then.
        if (slots_[i].wanted && !stopping_) next = std::min(next, slots_[i].respawn_at);
      } else {
        next = std::min(next, w->exited_at + kExitSettle);
      }
      continue;
    }
    if (stopping_ && now >= stop_deadline_) {
      kill(*w, KilledBy::shutdown, SIGKILL);
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
      ::kill(w->pid, SIGKILL);  // it did not stop within cancel_grace_ms
      w->kill_deadline = Clock::time_point::max();
    }
    // A worker heartbeats at the rate it was started with; a reload may since have lowered the
    // liveness limit below a few of its heartbeats: it is not silent for that.
    Clock::duration limit = std::max(std::chrono::milliseconds(opts_.worker_liveness_ms), 3 * w->heartbeat);
    if (w->state == WorkerState::starting) limit = std::max<Clock::duration>(limit, kStartupGrace);
    if (now - w->last_heard > limit && w->pid > 0) {
      spdlog::warn("worker {} (pid {}) silent for {} ms: killing it", w->slot, w->pid,
                   std::chrono::duration_cast<std::chrono::milliseconds>(now - w->last_heard).count());
      kill(*w, KilledBy::silence, SIGKILL);
      w->last_heard = now;  // don't kill it again every turn while it dies
    }
  }
  // After the loop: the exit hook may have started a kill's grace on a worker already passed.
  for (const auto& w : workers_)
    if (w && !w->exit_status) next = std::min(next, w->kill_deadline);
  if (stopping_) next = std::min(next, stop_deadline_);
  return next;
}

bool Supervisor::pool_broken(int pool) const {
  bool any = false;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].pool != pool || !slots_[i].wanted) continue;
    any = true;
    if (workers_[i] && workers_[i]->state != WorkerState::starting) return false;
    if (slots_[i].fast_deaths < kFlapping) return false;
  }
  return any;
}

std::string Supervisor::unavailable(int pool) const {
  return "no worker of pool '" + pools_[pool].name + "' can start: the worker command '" +
         pools_[pool].argv[0] + "' failed at start-up repeatedly (last: " + pools_[pool].last_failure +
         "); zexecd keeps retrying it";
}

void Supervisor::resize(const Options& fresh) {
  for (const auto& spec : fresh.pools)
    if (std::none_of(pools_.begin(), pools_.end(), [&](const WorkerPool& p) { return p.name == spec.name; }))
      spdlog::warn("SIGHUP: new pool '{}' needs a restart of zexecd", spec.name);
  for (int p = 0; p < pools(); ++p) {
    WorkerPool& pool = pools_[p];
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
}

}  // namespace zexecd
