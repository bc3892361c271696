// Worker supervision: slots, spawning with backoff, reaping, kills and their escalation,
// liveness, and recycling by memory or task count. The one owner of every worker process.
//
// The broker dispatches to workers through this interface and hears back through one hook:
// a worker's process has ended (and its last events were read), settle what it held. Nothing
// in it assumes the workers are children of this process but spawn and reap; a group of
// workers on another host can stand behind the same calls (find / for_each / send / retire /
// kill / tick, and the exit hook when the node says a worker is gone).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "options.hpp"
#include "worker.hpp"

namespace zexecd {

// Deaths before hello, in a row, after which a slot counts as broken.
inline constexpr int kFlapping = 3;

class Supervisor {
 public:
  // Called once per worker that ended, after its last events had time to arrive: the broker
  // settles the tasks it held. The worker is freed when the hook returns.
  using ExitHook = std::function<void(Worker&, int status)>;

  // The pools of `opts` (their commands are checked here: a bad one throws before anything
  // starts). `opts` must outlive the supervisor; its current values are read at each use.
  Supervisor(const Options& opts, zmq::context_t& ctx, ExitHook on_exit);
  ~Supervisor();  // kills and reaps every worker still there
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts every slot's worker; they connect back to `events_endpoint`.
  void start(const std::string& run_dir, const std::string& events_endpoint);
  // SIGHUP: each pool takes its new size and command (for workers started from then on).
  // The pools in force are then pool(p): the broker writes them back into its settings.
  void resize(const Options& fresh);

  Worker* find(std::uint64_t worker_id);
  Worker* at(int slot) { return workers_[slot].get(); }
  const Worker* at(int slot) const { return workers_[slot].get(); }
  template <class F>
  void for_each(F&& f) {
    for (auto& w : workers_)
      if (w) f(*w);
  }
  template <class F>
  void for_each(F&& f) const {
    for (const auto& w : workers_)
      if (w) f(static_cast<const Worker&>(*w));
  }
  bool any_alive() const;
  int pools() const { return static_cast<int>(pools_.size()); }
  const WorkerPool& pool(int p) const { return pools_[p]; }
  const std::vector<Slot>& slots() const { return slots_; }
  std::uint32_t wanted_workers() const;                 // over all pools
  std::uint64_t restarts() const { return restarts_; }  // workers replaced after they ended

  // What a worker said or did.
  void hello(Worker& w, std::uint32_t capacity);  // a starting worker becomes ready
  void heard_from(Worker& w, Clock::time_point now) { w.last_heard = now; }
  void finished_tasks(Worker& w, std::size_t n);  // recycles it after max_tasks_per_worker

  // The link: never blocks; a message that would block is held and sent on flush().
  bool send(Worker& w, std::string&& msg);
  void flush(Worker& w);

  // Replaces a worker between tasks: it gets no more, finishes the one it runs, and exits.
  void retire(Worker& w, const std::string& why);
  // Stops a worker on purpose, remembering why and what it ran then (the first reason sticks).
  // A cancel gets cancel_grace_ms to stop after SIGTERM, then SIGKILL.
  void kill(Worker& w, KilledBy why, int sig);
  // A worker that sent a frame the daemon cannot read: its answers cannot be trusted, and the
  // tasks it holds would wait on answers that never come. Killed now (SIGKILL) and replaced.
  void reject(Worker& w, const std::string& why);
  std::uint64_t rejected() const { return rejected_; }

  // SIGCHLD: note which workers ended (settled by tick() a moment later).
  void reap();
  // Shutdown: every worker is told to finish its task and exit; none is started again, and
  // whatever still runs at `deadline` is killed.
  void stop(Clock::time_point deadline);
  void kill_all_now();  // the second stop signal

  // Spawns what is due, watches liveness and memory, escalates kills, settles exits. Returns
  // the next moment it has something to do.
  Clock::time_point tick(Clock::time_point now);

  // True when no worker of the pool runs and each of its slots failed to start several times
  // in a row: its tasks would wait for ever.
  bool pool_broken(int pool) const;
  std::string unavailable(int pool) const;  // why: its command cannot start

 private:
  void spawn(int slot);
  void exited(int slot);
  std::chrono::milliseconds backoff(const Slot& s) const;

  const Options& opts_;
  zmq::context_t& ctx_;
  ExitHook on_exit_;
  std::string run_dir_, events_endpoint_;
  std::vector<WorkerPool> pools_;                 // [0] is "default"; the set is fixed at start
  std::vector<Slot> slots_;                       // a pool's slots are not contiguous (growth)
  std::vector<std::unique_ptr<Worker>> workers_;  // by slot
  std::uint64_t next_worker_id_ = 1;
  std::uint64_t restarts_ = 0;
  std::uint64_t rejected_ = 0;  // workers killed for a frame the daemon refused
  Clock::time_point next_rss_check_{};
  bool stopping_ = false;
  Clock::time_point stop_deadline_ = Clock::time_point::max();
};

}  // namespace zexecd
