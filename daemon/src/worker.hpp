// A worker as the broker sees it: a process of some pool, the link to it, and the tasks sent to it.
//
// The Supervisor owns every Worker (it spawns, watches, kills and reaps them); the broker reads
// and updates the dispatch fields (held, running, revokes) as the worker's events come in.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

namespace zexecd {

using Clock = std::chrono::steady_clock;
using Handle = std::uint64_t;  // TaskTable::Handle

enum class WorkerState : std::uint8_t { starting, ready, stopping };

// Why the daemon killed a worker, if it did: decides what its tasks become.
enum class KilledBy : std::uint8_t { none, timeout, silence, cancel, shutdown, bad_frame };

struct Worker {
  // -- the process (Supervisor)
  std::uint64_t id = 0;  // unique over the daemon's life; ZEXEC_WORKER_ID
  int slot = 0;
  int pool = 0;
  pid_t pid = -1;
  WorkerState state = WorkerState::starting;
  Clock::time_point spawned;
  Clock::time_point last_heard;
  std::chrono::milliseconds heartbeat{0};  // ZEXEC_HEARTBEAT_MS it was started with
  bool hello_seen = false;
  std::uint64_t tasks_done = 0;
  std::uint64_t rss_bytes = 0;  // last sampled resident memory
  KilledBy killed_by = KilledBy::none;
  Handle kill_target = 0;                                      // what was running when we killed it
  std::string kill_reason;                                     // bad_frame: what was wrong with it
  Clock::time_point kill_deadline = Clock::time_point::max();  // SIGTERM sent: SIGKILL at this time
  std::optional<int> exit_status;  // reaped; settled a moment later so its last events arrive
  Clock::time_point exited_at;

  // -- the link (Supervisor): sends never block, what would block waits here
  zmq::socket_t tasks;  // PUSH bound for this worker only
  std::string tasks_endpoint;
  std::deque<std::string> pending;  // encoded messages that would have blocked, oldest first

  // -- dispatch (Broker)
  std::uint32_t capacity = 1;
  std::deque<Handle> held;           // sent to it, in the order it will run them
  bool revoke_in_flight = false;     // one revoke at a time, so its answer is unambiguous
  std::vector<Handle> revoke_queue;  // asked for while one was in flight
  Handle running = 0;                // the task it reported started and has not finished; 0 = none
  Clock::time_point running_since;
  Clock::time_point running_deadline = Clock::time_point::max();  // its hard timeout

  // Takes tasks: said hello, not stopping, not dead, nothing waiting to be sent to it.
  bool open() const { return state == WorkerState::ready && !exit_status && pending.empty(); }
};

// A place for a worker: its pool, and its restart history.
struct Slot {
  int pool = 0;
  bool wanted = true;  // false: the pool shrank; its worker retires and the slot stays empty
  Clock::time_point respawn_at;
  int fast_deaths = 0;  // deaths before hello, in a row
  std::uint64_t restarts = 0;
};

// How a pool's workers are started (its task names are the broker's: routing).
struct WorkerPool {
  std::string name;     // "default" is the pool of --workers / --worker-command
  int size = 0;         // workers wanted
  std::string command;  // as configured; "" = zexec-worker beside zexecd
  std::vector<std::string> argv;
  std::string last_failure;  // how its last worker that died at start-up ended
};

}  // namespace zexecd
