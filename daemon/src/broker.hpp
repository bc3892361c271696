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
#include "recent_ids.hpp"
#include "run_queues.hpp"
#include "supervisor.hpp"
#include "task_log.hpp"
#include "task_table.hpp"
#include "zexec/detail/zmq_io.hpp"
#include "zexec/protocol.hpp"

namespace zexecd {

// A fresh, secret results endpoint for a client of the daemon at `front` (clients.cpp).
std::string results_endpoint_for(const std::string& front, const std::string& results_dir);

using zexec::detail::recv_now;
using zexec::detail::recv_rest;
using zexec::detail::send_now;
using zexec::detail::send_rest;

// Frames read from one socket per loop turn: batching without starving the other sockets.
inline constexpr int kReadBudget = 256;
// A client not taking its results gets no more tasks run: its undelivered events are bounded.
inline constexpr std::size_t kMaxOutboxEvents = 100000;
// With a journal: how long an acceptance waits for an update with events to carry it before an
// update of its own tells it (one message less each way per round trip of a short task).
inline constexpr auto kTellAcceptedAfter = std::chrono::milliseconds(10);
// With a journal: how long records that nothing waits for (final events) wait for the next
// group commit (durability.cpp).
inline constexpr auto kCommitWindow = std::chrono::milliseconds(2);
// Cancelled tasks a client's later cancel still answers `cancelled` for (recent_ids.hpp), at least.
inline constexpr std::size_t kRecentCancels = 1024;

struct Client {
  std::uint64_t id = 0;
  std::string routing_id;  // ROUTER identity of its DEALER
  std::string name;
  std::int64_t pid = 0;
  zmq::socket_t results;  // PUSH bound for this client only
  std::string results_endpoint;
  IdMap tasks;  // client task id -> handle, every unfinished task
  // Ids of its tasks cancelled lately and forgotten: as many as it may have unfinished (on_hello).
  RecentIds cancelled{kRecentCancels};
  std::vector<zexec::proto::Event> outbox;  // events not yet put in an update
  std::optional<std::string> held;          // an encoded update that would have blocked
  std::deque<std::string> replies;          // control replies that would have blocked
  struct Sent {
    std::uint64_t seq;
    std::string frame;                   // the encoded update
    std::vector<std::uint32_t> batches;  // with a journal: the batch of each final event in it
  };
  std::deque<Sent> unacked;  // sent updates, until acked
  std::uint64_t next_seq = 1;
  Clock::time_point last_heard;
  Clock::time_point last_sent;
  Clock::time_point oldest_unacked_sent;
  bool doomed = false;  // to be dropped at the next tick (see reply())
  // What its `welcome` said, kept for its whole connection: a reload that changes heartbeat_ms
  // or client_timeout_ms applies to clients that connect afterwards.
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds timeout{5000};
  // Its submits refused as a whole with `backlogged` (on_submit, refuse_backlogged).
  std::uint64_t submits_backlogged = 0;
  // The ZAP address ("localhost:UID:GID:PID" on ipc, the IP on tcp) of the first peer that
  // connected to `results`: the only peer let in later (read_zap, results_guard.cpp).
  std::string results_peer;

  // -- sessions (with a journal: durability.cpp, PROTOCOL.md §3 "Sessions")
  std::uint64_t session = 0;  // 0: no journal, no session
  std::string token;
  bool connected = true;  // false: its connection timed out, or it came back from the journal
  bool resumed = false;   // this connection resumed the session: it may send tasks again
  // Parallel to `outbox` with a journal: the batch of each event (kNoBatch: started, or none).
  std::vector<std::uint32_t> outbox_batches;
  std::size_t journaled = 0;           // events at the front of `outbox` already in the journal
  std::size_t sent_unjournaled = 0;    // the last this many of `unacked` are not in it yet
  std::uint64_t accepted_through = 0;  // highest task id of a committed batch
  std::uint64_t told_accepted = 0;     // the accepted_through its last update said
  Clock::time_point accepted_moved{};  // when accepted_through went past told_accepted
};

// A pool as routing sees it: the task names its workers run (Gearman's CAN_DO). A task goes only
// to a pool that runs its name. (How its workers start: the Supervisor's WorkerPool.)
struct Pool {
  std::string name;
  bool names_known = false;    // a worker of it said hello
  bool runs_anything = false;  // its workers announced no names: any task goes (they refuse it)
  std::unordered_set<std::string> names;
  double avg_task_us = -1;  // EWMA of task run time on its workers; -1 = not known yet
  bool broken = false;      // no worker of it can start (last seen by tick)
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
  std::uint64_t bad_client_frames = 0, bad_worker_frames = 0;
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
  void begin_shutdown();
  void reload();
  bool move_metrics(const std::string& address, int port);  // reload: metrics_ to a new address
  bool shutdown_complete();
  void sample_rates(Clock::time_point now);

  // -- clients (clients.cpp; what goes back to them: delivery.cpp)
  void read_front();
  void on_client_frame(const std::string& rid, std::string_view frame, std::size_t extra_frames);
  void on_hello(const std::string& rid, const zexec::proto::Hello& m);
  // `batch`: its record in the journal (none without one); `skip_through`: a resumed session's
  // resend, whose tasks up to that id are accepted already.
  bool open_results(Client& c, const std::string& rid);  // its results socket; false: rid was told why
  Handle new_task(Client& c, zexec::proto::TaskSpec& spec, std::uint32_t batch);  // queued next
  void on_submit(Client& c, zexec::proto::Submit& m, std::uint32_t batch = kNoBatch,
                 std::uint64_t skip_through = 0);
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
  static bool tell_accepted_due(const Client& c, Clock::time_point now) {
    return c.accepted_through > c.told_accepted && now - c.accepted_moved >= kTellAcceptedAfter;
  }
  Clock::time_point client_timers(Clock::time_point now);  // returns its next deadline
  void finish_cancel(int req_index);
  Client* find_client(std::uint64_t id);

  // -- workers (workers.cpp): their messages, dispatch, revoke and steal
  void read_events();
  void refused_worker_frame(std::optional<std::uint64_t> sender, const std::string& what);
  void on_worker_message(zexec::proto::Message& m);
  void on_worker_events(Worker& w, zexec::proto::WorkerEvents& m);
  void on_worker_revoked(Worker& w, const zexec::proto::WorkerRevoked& m);
  void on_worker_exit(Worker& w, int status);
  void dispatch(Clock::time_point now);
  void steal(Clock::time_point now);
  void steal_in(int pool, Clock::time_point now);
  bool idle_worker_in(int pool) const;
  void revoke(Worker& w, const std::vector<Handle>& handles);
  Clock::time_point task_timers(Clock::time_point now);  // running tasks past their timeout
  std::uint32_t window(const Worker& w) const;
  void dispatch_pool(int pool, Clock::time_point now);

  // -- routing by task name (routing.cpp)
  void resize_pools(const Options& fresh);
  void check_broken_pools();
  void learn_names(Worker& w, const std::vector<std::string>& names);
  static constexpr int kUnrouted = RunQueues::kUnrouted;  // some pool's names are not known yet: wait
  static constexpr int kNoPool = -2;                      // no pool runs it
  int route(const std::string& name) const;
  // Puts a queued task in its pool's queue (or settles it when no pool runs its name).
  void enqueue(Client& c, Handle h, bool front);
  void reroute_unrouted();
  void unqueued(const Task& t);  // a queued task left its queue (cancelled)
  bool still_queued(Handle h);   // false for a stale handle in a run queue
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
  void dead_worker_head(Worker& w, Handle h, const std::string& how);

  // -- the journal and sessions (durability.cpp)
  void open_journal();
  void replay_journal();
  void stash_submit(Client& c, zexec::proto::Submit& m, std::string_view frame);
  void commit_journal();  // once per loop turn: then the stashed submits are accepted
  void refuse_stashed(const std::string& type, const std::string& why);
  // Into the open group: its updates sent and not yet acknowledged nor journaled, and the final
  // events of its outbox not yet journaled (at each commit: what was acknowledged before is not
  // written at all).
  void journal_events(Client& c);
  void push_event(Client& c, zexec::proto::Event&& e, std::uint32_t batch);
  void new_session(Client& c);
  bool resume_session(const std::string& rid, const zexec::proto::Hello& m);
  void detach_client(Client& c, const char* why);
  void end_session(Client& c);
  void acked(Client& c, const Client::Sent& s);
  void note_cancelled(Client& c, const std::vector<std::uint64_t>& ids,
                      const std::vector<std::uint32_t>& batches);
  void note_retry(const Task& t);
  std::unique_ptr<TaskLog> log_;
  std::unordered_map<std::uint64_t, std::uint64_t> client_by_session_;
  struct Stashed {
    std::uint64_t client_id;
    zexec::proto::Submit submit;
    std::uint32_t batch;
    std::uint64_t skip_through;  // a resend: its tasks up to this id are accepted already
  };
  std::vector<Stashed> stashed_;  // submits journaled in the open group, accepted at its commit
  bool journal_failed_ = false;
  bool commit_soon_ = false;  // something waits for the next commit (a submit, a cancel_reply)
  int exit_code_ = 0;
  bool journal_due(Clock::time_point now) const {
    return log_ && log_->pending() && (commit_soon_ || now - log_->pending_since() >= kCommitWindow);
  }
  Clock::time_point next_maintain_{};

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
  std::vector<std::uint64_t> doomed_;  // clients to drop at the next tick
  Supervisor workers_;                 // every worker process
  std::vector<Pool> pools_;            // by pool index, as workers_.pool(p)
  RunQueues queues_;                   // every queued task, by pool and client
  std::vector<std::optional<CancelRequest>> cancels_;
  std::multimap<Clock::time_point, Handle> retries_;    // tasks waiting out a retry backoff
  std::unordered_multimap<Handle, int> extra_cancels_;  // further cancel requests waiting on one task
  Clock::time_point started_at_ = Clock::now();
  Notifier notify_;
  std::unique_ptr<MetricsServer> metrics_;
  Clock::time_point next_metrics_{};
  bool announced_ready_ = false;
  Clock::time_point next_watchdog_{}, next_status_{};
  std::uint64_t next_client_id_ = 1;
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
  // A submit whose events at once would pile up past the client's bound is refused whole (on_submit).
  bool refuse_backlogged(Client& c, const zexec::proto::Submit& m);

  // -- who may connect to a client's results socket (results_guard.cpp, PROTOCOL.md §2)
  // Results sockets of ipc endpoints: "ENDPOINT.r-XXXXXX/TOKEN", a directory of this daemon run
  // (mode 0711: nobody can list it) and a random 64-bit token per client; empty for tcp.
  std::string results_dir_;
  // The ZAP handler (inproc://zeromq.zap.01): every peer of a results socket asks it first.
  zmq::socket_t zap_;
  std::uint64_t results_intruders_ = 0;  // peers refused on a results socket (status totals)
  void open_results_guard();
  void read_zap();
  static std::string results_zap_domain(std::uint64_t client_id);

 public:
  static std::uint64_t random_u64();  // getrandom(): tokens, the first client id of a run
};

}  // namespace zexecd
