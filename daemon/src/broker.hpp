// The broker: zexecd's single-threaded event loop, beanstalkd-style.
//
//   loop: tick() runs what is due and returns the next deadline -> poll until then -> dispatch.
//
// It never blocks in send(): every send is non-blocking, and a message that would block is held
// (one per destination) and retried when poll reports POLLOUT. It owns every task from `submit`
// until the client acknowledges the task's final event; ZeroMQ delivery is never trusted with it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <zmq.hpp>

#include "id_map.hpp"
#include "metrics.hpp"
#include "notify.hpp"
#include "options.hpp"
#include "task_table.hpp"
#include "zexec/detail/zmq_io.hpp"
#include "zexec/protocol.hpp"

namespace zexecd {

using zexec::detail::recv_now;
using zexec::detail::recv_rest;
using zexec::detail::send_now;
using zexec::detail::send_rest;

// Frames read from one socket per loop turn: batching without starving the other sockets.
inline constexpr int kReadBudget = 256;
// Deaths before hello, in a row, after which a slot counts as broken.
inline constexpr int kFlapping = 3;
// A client not taking its results gets no more tasks run: its undelivered events are bounded.
inline constexpr std::size_t kMaxOutboxEvents = 100000;

using Clock = std::chrono::steady_clock;
using Handle = TaskTable::Handle;

struct Client {
  std::uint64_t id = 0;
  std::string routing_id;  // ROUTER identity of its DEALER
  std::string name;
  std::int64_t pid = 0;
  zmq::socket_t results;  // PUSH bound for this client only
  std::string results_endpoint;
  std::vector<std::deque<Handle>> queues;   // by pool: waiting for a worker of it, oldest first
  std::deque<Handle> unrouted;              // waiting to learn which pool runs their task name
  std::vector<bool> in_ready_list;          // by pool: in that pool's round robin
  IdMap tasks;                              // client task id -> handle, every unfinished task
  std::vector<zexec::proto::Event> outbox;  // events not yet put in an update
  std::optional<std::string> held;          // an encoded update that would have blocked
  std::deque<std::string> replies;          // control replies that would have blocked
  std::deque<std::pair<std::uint64_t, std::string>> unacked;  // seq -> encoded update, until acked
  std::uint64_t next_seq = 1;
  Clock::time_point last_heard;
  Clock::time_point last_sent;
  Clock::time_point oldest_unacked_sent;
  std::size_t queued = 0;  // tasks waiting, over all its queues
  bool doomed = false;     // to be dropped at the next tick (see reply())
};

// Workers started from one command. They all run the same task names, which they announce in
// worker_hello (Gearman's CAN_DO): a task goes only to a pool that runs its name.
struct Pool {
  std::string name;     // "default" is the pool of --workers / --worker-command
  int size = 0;         // workers wanted
  std::string command;  // as configured; "" = zexec-worker beside zexecd
  std::vector<std::string> argv;
  bool names_known = false;    // a worker of it said hello
  bool runs_anything = false;  // its workers announced no names: any task goes (they refuse it)
  std::unordered_set<std::string> names;
  std::deque<std::uint64_t> ready_clients;  // clients with tasks queued for it, round robin
  std::size_t queued = 0;
  double avg_task_us = -1;   // EWMA of task run time on its workers; -1 = not known yet
  bool broken = false;       // no worker of it can start (last seen by tick)
  std::string last_failure;  // how its last worker that died at start-up ended
};

// A place for a worker: its pool, and its restart history.
struct Slot {
  int pool = 0;
  bool wanted = true;  // false: the pool shrank; its worker retires and the slot stays empty
  Clock::time_point respawn_at;
  int fast_deaths = 0;  // deaths before hello, in a row
  std::uint64_t restarts = 0;
};

enum class WorkerState : std::uint8_t { starting, ready, stopping };

// Why the daemon killed a worker, if it did: decides what its tasks become.
enum class KilledBy : std::uint8_t { none, timeout, silence, cancel, shutdown };

struct Worker {
  std::uint64_t id = 0;  // unique over the daemon's life; ZEXEC_WORKER_ID
  int slot = 0;
  int pool = 0;
  pid_t pid = -1;
  WorkerState state = WorkerState::starting;
  zmq::socket_t tasks;  // PUSH bound for this worker only
  std::string tasks_endpoint;
  std::deque<Handle> held;  // sent to it, in the order it will run them
  std::uint32_t capacity = 1;
  std::deque<std::string> pending;   // encoded messages that would have blocked, oldest first
  bool revoke_in_flight = false;     // one revoke at a time, so its answer is unambiguous
  std::vector<Handle> revoke_queue;  // asked for while one was in flight
  Clock::time_point spawned;
  Clock::time_point last_heard;
  Handle running = 0;  // the task it reported started and has not finished; 0 = none
  Clock::time_point running_since;
  Clock::time_point running_deadline = Clock::time_point::max();  // its hard timeout
  KilledBy killed_by = KilledBy::none;
  Handle kill_target = 0;                                      // what was running when we killed it
  Clock::time_point kill_deadline = Clock::time_point::max();  // SIGTERM sent: SIGKILL at this time
  std::optional<int> exit_status;  // reaped; settled a moment later so its last events arrive
  Clock::time_point exited_at;
  bool hello_seen = false;
  std::uint64_t tasks_done = 0;
  std::uint64_t rss_bytes = 0;  // last sampled resident memory
};

struct CancelRequest {
  std::uint64_t client_id = 0;
  std::uint64_t request_id = 0;
  std::vector<std::pair<std::uint64_t, zexec::proto::CancelOutcome>> outcomes;
  int waiting = 0;  // tasks whose revoke (or forced stop) is still in flight
  bool force = false;
  std::string reply_to;  // ROUTER id of an admin who asked (admin_cancel); empty: the owning client
};

struct Counters {
  std::uint64_t submitted = 0, succeeded = 0, failed = 0, cancelled = 0, crashed = 0, timed_out = 0;
  std::uint64_t retried = 0, quarantined = 0, clients_dropped = 0, replies_dropped = 0, loop_errors = 0;
  std::uint64_t bad_client_frames = 0, bad_worker_frames = 0, worker_restarts = 0;
};

class Broker {
 public:
  // `reload` re-reads the settings (SIGHUP); it returns nothing when they are invalid.
  explicit Broker(Options opts, std::function<std::optional<Options>()> reload = {});
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Runs until SIGTERM/SIGINT and the drain that follows; returns the exit code.
  int run();

 private:
  // -- loop (broker.cpp)
  Clock::time_point tick(Clock::time_point now);
  void handle_signals();
  void reap_children();
  void begin_shutdown();
  void reload();
  bool shutdown_complete();
  void sample_rates(Clock::time_point now);

  // -- clients (clients.cpp)
  void read_front();
  void on_client_frame(const std::string& rid, std::string_view frame, std::size_t extra_frames);
  void on_hello(const std::string& rid, const zexec::proto::Hello& m);
  void on_submit(Client& c, zexec::proto::Submit& m);
  // A cancel from the owning client, or (`admin` = the asker's ROUTER id) from anyone else: then the
  // owner learns of each cancelled task through a `cancelled` event.
  void on_cancel(Client& c, const zexec::proto::Cancel& m, const std::string& admin = {});
  void on_ack(Client& c, std::uint64_t seq);
  void drop_client(std::uint64_t client_id, const char* why);
  void reply(const std::string& rid, const zexec::proto::Message& m);
  bool send_reply(const std::string& rid, const std::string& frame);
  bool flush_replies();                               // true while some are still held
  void post_event(Task& t, zexec::proto::Event&& e);  // queue an event for the task's client
  void flush_client(Client& c, Clock::time_point now);
  void flush_clients(Clock::time_point now);
  void client_timers(Clock::time_point now);
  void finish_cancel(int req_index);
  Client* find_client(std::uint64_t id);

  // -- workers (workers.cpp)
  void spawn_worker(int slot);
  void read_events();
  void on_worker_message(zexec::proto::Message& m);
  void on_worker_events(Worker& w, zexec::proto::WorkerEvents& m);
  void on_worker_revoked(Worker& w, const zexec::proto::WorkerRevoked& m);
  void on_worker_exit(Worker& w, int status);
  void dispatch(Clock::time_point now);
  void steal(Clock::time_point now);
  void steal_in(int pool, Clock::time_point now);
  bool idle_worker_in(int pool) const;
  void revoke(Worker& w, const std::vector<Handle>& handles);
  bool send_to_worker(Worker& w, std::string&& msg);
  void flush_worker(Worker& w);
  void worker_timers(Clock::time_point now);
  std::uint32_t window(const Worker& w) const;
  void retire(Worker& w, const std::string& why);
  Worker* find_worker(std::uint64_t worker_id);
  void dispatch_pool(int pool, Clock::time_point now);

  // -- pools (pools.cpp)
  void make_pools();
  void resize_pools(const Options& fresh);
  bool pool_broken(int pool) const;
  bool all_pools_broken() const;
  void check_broken_pools();
  std::string unavailable(int pool) const;  // why the pool's tasks fail: its command cannot start
  void learn_names(Worker& w, const std::vector<std::string>& names);
  static constexpr int kUnrouted = -1;  // some pool's names are not known yet: wait
  static constexpr int kNoPool = -2;    // no pool runs it
  int route(const std::string& name) const;
  // Puts a queued task in its pool's queue (or settles it when no pool runs its name).
  void enqueue(Client& c, Handle h, bool front);
  void reroute_unrouted();
  void unqueued(const Task& t);  // a queued task left its queue (cancelled): fix the counts
  // The next task for `pool`, round robin over clients; `drain` also takes from clients whose
  // results are backlogged (to cancel or fail everything queued).
  std::optional<Handle> next_queued(int pool, bool drain = false);
  std::optional<Handle> next_queued_anywhere();  // from any pool or unrouted, to settle it
  void fail_queued(int pool, const std::string& type, const std::string& message);
  void requeue_front(Handle h);

  // -- outcomes (outcomes.cpp)
  enum class Failure { raised, crashed, timed_out };
  void finish_task(Handle h, zexec::proto::Event&& e);
  void task_failed(Handle h, zexec::proto::Event&& e, Failure why);
  Clock::time_point requeue_due_retries(Clock::time_point now);
  void set_cancel_outcome(Handle h, zexec::proto::CancelOutcome outcome);
  template <class Pred>
  bool any_cancel_request(Handle h, Pred pred) const;
  void cancel_task(Handle h);
  void cancel_missed(Worker& w, Handle h);
  void kill_worker(Worker& w, KilledBy why, int sig);
  void dead_worker_head(Worker& w, Handle h, const std::string& how);

  // -- status (status.cpp)
  std::string status_body() const;
  std::string status_line() const;   // one line for systemd's STATUS= and the logs
  std::string metrics_text() const;  // Prometheus text exposition format
  Clock::time_point notify_systemd(Clock::time_point now);

  Options opts_;
  std::function<std::optional<Options>()> reload_;
  zmq::context_t ctx_;
  zmq::socket_t front_;   // ROUTER: clients
  zmq::socket_t events_;  // PULL: all workers
  std::string run_dir_;   // private directory for worker sockets
  std::string events_endpoint_;
  int signal_fd_ = -1;

  TaskTable tasks_;
  std::unordered_map<std::uint64_t, std::unique_ptr<Client>> clients_;
  std::unordered_map<std::string, std::uint64_t> client_by_rid_;
  std::vector<std::uint64_t> doomed_;             // clients to drop at the next tick
  std::vector<Pool> pools_;                       // [0] is "default"; the set is fixed at start
  std::size_t queued_ = 0;                        // tasks in client queues (not cancelled)
  std::size_t unrouted_ = 0;                      // of which waiting for a pool to announce names
  std::vector<std::unique_ptr<Worker>> workers_;  // by slot
  std::vector<Slot> slots_;
  std::vector<std::optional<CancelRequest>> cancels_;
  std::multimap<Clock::time_point, Handle> retries_;    // tasks waiting out a retry backoff
  std::unordered_multimap<Handle, int> extra_cancels_;  // further cancel requests waiting on one task
  Clock::time_point started_at_ = Clock::now();
  Notifier notify_;
  std::unique_ptr<MetricsServer> metrics_;
  Clock::time_point next_metrics_{};
  bool announced_ready_ = false;
  Clock::time_point next_watchdog_{}, next_status_{};
  std::uint64_t next_client_id_ = 1, next_worker_id_ = 1;
  Clock::time_point next_rss_check_;
  bool stopping_ = false;
  Clock::time_point stop_deadline_;
  Clock::time_point workers_gone_at_{};  // when stopping: the moment the last worker was gone
  Counters counters_;
  // Counters a second apart over the last minute, for the rates in `status`.
  std::deque<std::pair<Clock::time_point, Counters>> rate_samples_;
  Clock::time_point next_second_{};  // rate sample and malloc_trim
  std::string scratch_;              // reused encode buffer
  // Hellos refused by max_clients over the daemon's life (on_hello logs the 1st, 2nd, 4th...).
  std::uint64_t clients_refused_ = 0;
};

}  // namespace zexecd
