// The loop itself: start-up, tick, poll, signals, shutdown.
#include "broker.hpp"

#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "signals.hpp"
#include "spawn.hpp"

namespace zexecd {

namespace proto = zexec::proto;

namespace {

// Creates the directory holding an ipc endpoint's socket file, if it is missing.
void ensure_ipc_dir(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) != 0) return;
  std::filesystem::path p = endpoint.substr(6);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
}

std::string make_run_dir() {
  // Under systemd, RuntimeDirectory= gives us $RUNTIME_DIRECTORY; by hand, the user's runtime dir.
  const char* base = std::getenv("RUNTIME_DIRECTORY");
  if (!base || !*base) base = std::getenv("XDG_RUNTIME_DIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/zexecd-XXXXXX";
  if (!mkdtemp(tmpl.data())) {
    tmpl = "/tmp/zexecd-XXXXXX";
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("cannot create a private run directory");
  }
  return tmpl;
}

// The directory of this run's results sockets, next to the ipc endpoint (so a client reaches it
// wherever it reaches the endpoint): mkdtemp's random name, then mode 0711, so any peer can open
// a socket in it whose name it was told but nobody can list the names. The directories of
// earlier runs (a daemon killed before it could remove its own) go first: no daemon serves the
// endpoint any more when this runs.
std::string make_results_dir(const std::string& endpoint) {
  std::filesystem::path ep = endpoint.substr(6);
  std::string prefix = ep.filename().string() + ".r-";
  std::error_code ec;
  std::filesystem::path parent = ep.has_parent_path() ? ep.parent_path() : std::filesystem::path(".");
  for (const auto& e : std::filesystem::directory_iterator(parent, ec)) {
    struct stat st {};
    std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || name.size() != prefix.size() + 6) continue;
    if (lstat(e.path().c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) continue;
    // Only a dead daemon's: one that did not answer the probe in time may still serve its clients.
    pid_t owner = 0;
    if (std::ifstream(e.path() / "pid") >> owner && owner > 0 && (kill(owner, 0) == 0 || errno == EPERM))
      continue;
    std::filesystem::remove_all(e.path(), ec);
  }
  std::string tmpl = (parent / (prefix + "XXXXXX")).string();
  if (!mkdtemp(tmpl.data()) || chmod(tmpl.c_str(), 0711) != 0)
    throw std::runtime_error("cannot create the results directory " + tmpl + ": " + std::strerror(errno));
  std::ofstream(tmpl + "/pid") << getpid() << "\n";
  return tmpl;
}

}  // namespace

Broker::Broker(Options opts, std::function<std::optional<Options>()> reload)
    : opts_(std::move(opts)),
      reload_(std::move(reload)),
      ctx_(1),
      // Before anything is bound: a bad worker command is an error at start.
      workers_(opts_, ctx_, [this](Worker& w, int status) { on_worker_exit(w, status); }) {
  if (opts_.client_timeout_ms <= 0) opts_.client_timeout_ms = 5 * opts_.heartbeat_ms;
  opts_.workers = workers_.pool(0).size;  // 0 = one per core, resolved
  for (int p = 0; p < workers_.pools(); ++p) pools_.emplace_back().name = workers_.pool(p).name;
  queues_ = RunQueues(workers_.pools());

  signal_fd_ = install_signal_handlers();

  front_ = zmq::socket_t(ctx_, zmq::socket_type::router);
  front_.set(zmq::sockopt::router_mandatory, 1);  // unroutable replies fail loudly, never vanish
  front_.set(zmq::sockopt::maxmsgsize, proto::kMaxMessageBytes);
  front_.set(zmq::sockopt::linger, 0);
  ensure_ipc_dir(opts_.endpoint);
  if (opts_.endpoint.rfind("ipc://", 0) == 0) {
    // A socket file left by a daemon that died is harmless to replace, but a live daemon's is
    // not: refuse to steal the endpoint from a running zexecd.
    std::string path = opts_.endpoint.substr(6);
    if (std::filesystem::exists(path)) {
      zmq::socket_t probe(ctx_, zmq::socket_type::dealer);
      probe.set(zmq::sockopt::linger, 0);
      probe.connect(opts_.endpoint);
      std::string hello = proto::encode(proto::Hello{"zexecd-probe", getpid()});
      probe.send(zmq::buffer(hello), zmq::send_flags::dontwait);
      zmq::pollitem_t item{probe.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, std::chrono::milliseconds(300)) > 0)
        throw std::runtime_error("another zexecd is already serving " + opts_.endpoint);
      std::filesystem::remove(path);
    }
  }
  front_.bind(opts_.endpoint);
  opts_.endpoint = front_.get(zmq::sockopt::last_endpoint);
  if (opts_.endpoint.rfind("ipc://", 0) == 0) results_dir_ = make_results_dir(opts_.endpoint);
  open_results_guard();
  // Ids are never reused by a later run (an old client's id must not name a new client): a
  // random start, 2^20 ids apart at least, below 2^53 (exact in a JSON number, a double).
  next_client_id_ = ((random_u64() & 0xffffffffu) << 20) + 1;

  run_dir_ = make_run_dir();
  events_endpoint_ = "ipc://" + run_dir_ + "/events";
  events_ = zmq::socket_t(ctx_, zmq::socket_type::pull);
  events_.set(zmq::sockopt::maxmsgsize, proto::kMaxMessageBytes);
  events_.set(zmq::sockopt::linger, 0);
  events_.bind(events_endpoint_);

  if (opts_.metrics_port > 0)
    metrics_ = std::make_unique<MetricsServer>(opts_.metrics_address, opts_.metrics_port);
  open_journal();  // a journal it cannot use stops the start here, before any worker runs
  workers_.start(run_dir_, events_endpoint_);
  for (int p = 0; p < workers_.pools(); ++p)
    spdlog::info("zexecd listening on {}: pool '{}' of {} workers ({})", opts_.endpoint,
                 workers_.pool(p).name, workers_.pool(p).size, workers_.pool(p).argv[0]);
  if (opts_.print_endpoint) {
    std::printf("%s\n", opts_.endpoint.c_str());
    std::fflush(stdout);
  }
}

Broker::~Broker() {
  std::error_code ec;
  std::filesystem::remove_all(run_dir_, ec);
  clients_.clear();  // their results sockets first, then the directory that holds them
  if (!results_dir_.empty()) std::filesystem::remove_all(results_dir_, ec);
  if (opts_.endpoint.rfind("ipc://", 0) == 0) std::filesystem::remove(opts_.endpoint.substr(6), ec);
}

int Broker::run() {
  std::vector<zmq::pollitem_t> items;
  // Ids, not pointers: handling one socket may drop a client or reap a worker before the
  // next socket's turn.
  std::vector<std::pair<int, std::uint64_t>> poll_workers;  // (slot, worker id)
  std::vector<std::uint64_t> poll_clients;
  for (;;) {
    auto now = Clock::now();
    Clock::time_point next;
    try {
      next = tick(now);
    } catch (const std::exception& e) {
      counters_.loop_errors++;
      spdlog::error("event loop: {} (going on)", e.what());
      next = now + std::chrono::milliseconds(10);
    }
    if (stopping_ && shutdown_complete()) break;

    items.clear();
    poll_workers.clear();
    poll_clients.clear();
    // No POLLOUT on the ROUTER: it reports writable when ANY peer has room, so waiting on it for
    // one slow peer would spin. Held replies are retried on a short timer instead (tick).
    items.push_back({front_.handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({events_.handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({nullptr, signal_fd_, ZMQ_POLLIN, 0});
    items.push_back({zap_.handle(), 0, ZMQ_POLLIN, 0});  // peers of results sockets (results_guard.cpp)
    workers_.for_each([&](Worker& w) {
      if (w.pending.empty()) return;
      items.push_back({w.tasks.handle(), 0, ZMQ_POLLOUT, 0});
      poll_workers.emplace_back(w.slot, w.id);
    });
    for (auto& [id, c] : clients_)
      if (c->held) {
        items.push_back({c->results.handle(), 0, ZMQ_POLLOUT, 0});
        poll_clients.push_back(id);
      }

    // At least 1 ms: a deadline already past must not turn the loop into a spin. (A commit
    // that something waits for is not a deadline to sleep towards: no wait.)
    auto wait = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(next - now),
                         std::chrono::milliseconds(0)) +
                std::chrono::milliseconds(1);
    if (commit_soon_) wait = std::chrono::milliseconds(0);
    try {
      zmq::poll(items.data(), items.size(), wait);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      for (auto& item : items) item.revents = 0;  // a signal: handled through the pipe below
      items[2].revents = ZMQ_POLLIN;
    }

    // The loop outlives anything a handler throws: log it, count it, go on.
    try {
      // Events before exits: a worker's last results must be read before its death is handled.
      if (items[1].revents & ZMQ_POLLIN) read_events();
      if (items[2].revents) handle_signals();
      if (items[0].revents & ZMQ_POLLIN) read_front();
      // Submits read just now are accepted once on disk; records of results wait for the next
      // group, up to kCommitWindow (journal_due).
      if (commit_soon_ || journal_due(Clock::now())) commit_journal();
      if (items[3].revents & ZMQ_POLLIN) read_zap();
      std::size_t k = 4;
      for (auto [slot, id] : poll_workers)
        if (Worker* w = workers_.at(slot); (items[k++].revents & ZMQ_POLLOUT) && w && w->id == id)
          workers_.flush(*w);
      now = Clock::now();
      for (auto id : poll_clients)
        if (items[k++].revents & ZMQ_POLLOUT)
          if (Client* c = find_client(id)) flush_client(*c, now);
      dispatch(now);
      flush_clients(now);
    } catch (const std::exception& e) {
      counters_.loop_errors++;
      spdlog::error("event loop: {} (going on)", e.what());
    }
  }
  if (log_) {
    for (auto& [id, c] : clients_) journal_events(*c);
    if (!log_->commit() && !journal_failed_) {
      spdlog::critical("{}", log_->failure()->what());
      exit_code_ = 1;
    }
  }
  // Give the last frames (final events, cancel replies) a moment to leave: linger, bounded.
  front_.set(zmq::sockopt::linger, 1000);
  for (auto& [id, c] : clients_) c->results.set(zmq::sockopt::linger, 1000);
  spdlog::info(
      "zexecd stopped: {} submitted, {} succeeded, {} failed, {} cancelled, {} crashed, {} timed out",
      counters_.submitted, counters_.succeeded, counters_.failed, counters_.cancelled, counters_.crashed,
      counters_.timed_out);
  return exit_code_;
}

Clock::time_point Broker::tick(Clock::time_point now) {
  // Nothing here may wait: each part does what is due and the loop sleeps until the soonest
  // next deadline. The fallback bounds the sleep so a lost wake-up costs at most a heartbeat.
  Clock::time_point next = now + std::chrono::milliseconds(opts_.heartbeat_ms);
  for (std::uint64_t id : std::exchange(doomed_, {})) drop_client(id, "not reading its replies");
  next = std::min(next, client_timers(now));  // a client may have a shorter heartbeat (reload)
  next = std::min(next, workers_.tick(now));
  next = std::min(next, task_timers(now));
  if (flush_replies()) next = std::min(next, now + std::chrono::milliseconds(5));
  next = std::min(next, requeue_due_retries(now));
  next = std::min(next, notify_systemd(now));
  if (metrics_ && now >= next_metrics_) {
    metrics_->publish(metrics_text());
    next_metrics_ = now + std::chrono::milliseconds(500);
  }
  if (metrics_) next = std::min(next, next_metrics_);
  check_broken_pools();
  if (opts_.parent_pid > 0 && !stopping_) {
    // Polled, not a death signal: PR_SET_PDEATHSIG fires when the *thread* that forked us ends,
    // which in a multithreaded program is not the program ending.
    if (getppid() != opts_.parent_pid) {
      spdlog::info("process {} that started zexecd is gone: stopping", opts_.parent_pid);
      begin_shutdown();
    } else {
      next = std::min(next, now + std::chrono::milliseconds(200));
    }
  }
  if (now >= next_second_) {
    sample_rates(now);
    // Frames arrive in buffers that ZeroMQ's I/O thread allocates from its own malloc arena;
    // freed here, they stay in that arena. After a burst (a million tasks submitted faster than
    // they are read) that is tens of MiB held for nothing: hand free pages back once a second.
    malloc_trim(0);
    next_second_ = now + std::chrono::seconds(1);
  }
  next = std::min(next, next_second_);
  if (stopping_) next = std::min(next, stop_deadline_);
  if (log_) {
    if (journal_due(now)) commit_journal();
    if (log_->pending()) next = std::min(next, log_->pending_since() + kCommitWindow);
    // Compaction in small steps once the journal has been quiet for a second (Journal::maintain:
    // a busy journal reuses its free pages anyway, and SQLite bounds its WAL by itself). Only
    // then: a checkpoint syncs, and with journal_sync = normal no other write does.
    if (!log_->pending() && !log_->failure() && now >= next_maintain_ &&
        now - log_->pending_since() >= std::chrono::seconds(1)) {
      try {
        log_->maintain(std::chrono::milliseconds(2));
      } catch (const JournalError& e) {
        spdlog::error("{}", e.what());
      }
      next_maintain_ = now + std::chrono::milliseconds(100);
    }
  }
  steal(now);
  // A worker whose head task runs long may need stealing soon: wake up then, if stealing would
  // have anyone to give the tasks to.
  for (int p = 0; p < static_cast<int>(pools_.size()); ++p) {
    if (queues_.queued(p) > 0 || !idle_worker_in(p)) continue;
    workers_.for_each([&](const Worker& w) {
      if (w.pool != p || !w.running || w.held.size() < 2 || w.revoke_in_flight) return;
      auto due = w.running_since + std::chrono::milliseconds(opts_.steal_after_ms);
      if (due > now) next = std::min(next, due);
    });
  }
  return next;
}

void Broker::handle_signals() {
  SignalFlags f = take_signals();
  if (f.child) workers_.reap();
  if (f.terminate) {
    if (stopping_ || f.terminate_count > 1) {
      spdlog::warn("second stop signal: stopping now");
      workers_.kill_all_now();
      stop_deadline_ = Clock::now();
      stopping_ = true;
    } else {
      begin_shutdown();
    }
  }
  if (f.reload && !stopping_) reload();
}

void Broker::begin_shutdown() {
  if (stopping_) return;
  stopping_ = true;
  stop_deadline_ = Clock::now() + std::chrono::milliseconds(opts_.shutdown_grace_ms);
  spdlog::info("stopping: running tasks may finish within {} ms", opts_.shutdown_grace_ms);
  notify_.stopping("stopping: " + status_line());
  if (log_) {
    // Queued tasks are on disk: the next run runs them. Running ones may finish in the grace;
    // those still running then run again in the next run.
    workers_.stop(stop_deadline_);
    return;
  }
  // Queued tasks will never run now: tell their clients instead of leaving futures hanging.
  while (auto h = next_queued_anywhere()) {
    Task* t = tasks_.get(*h);
    counters_.cancelled++;
    finish_task(*h, proto::Event{t->client_task_id, proto::Outcome::cancelled, {}, {}, {}});
  }
  for (auto& [due, h] : retries_)
    if (Task* t = tasks_.get(h); t && t->state == TaskState::retry_wait) {
      counters_.cancelled++;
      finish_task(h, proto::Event{t->client_task_id, proto::Outcome::cancelled, {}, {}, {}});
    }
  retries_.clear();
  workers_.stop(stop_deadline_);
}

// SIGHUP: read the settings again (file and flags) and apply what can change while serving,
// as each setting's row in options.cpp says (Reload). The pool grows or shrinks between tasks;
// nothing queued or running is lost; a connected client keeps the heartbeat and timeout of its
// welcome (client_timers); a restart-only setting keeps its value, with a warning; the metrics
// server moves to its new address, or stays where it is if it cannot. `opts_` is then what is in
// force, which is what `status` shows.
void Broker::reload() {
  std::optional<Options> fresh = reload_ ? reload_() : std::nullopt;
  if (!fresh) {
    spdlog::warn("SIGHUP: settings not reloaded (no --config, or they are invalid: see above)");
    return;
  }
  for (const auto& k : keep_restart_only(opts_, *fresh))
    spdlog::warn("SIGHUP: {} change to '{}' needs a restart of zexecd; keeping '{}'", k.name, k.wanted,
                 k.kept);
  if (fresh->client_timeout_ms <= 0) fresh->client_timeout_ms = 5 * fresh->heartbeat_ms;
  if (fresh->heartbeat_ms != opts_.heartbeat_ms || fresh->client_timeout_ms != opts_.client_timeout_ms)
    spdlog::info(
        "SIGHUP: heartbeat_ms {} and client_timeout_ms {} apply to clients that connect from now on "
        "(and heartbeat_ms to workers started from now on); {} connected keep theirs",
        fresh->heartbeat_ms, fresh->client_timeout_ms, clients_.size());
  if (fresh->metrics_port != opts_.metrics_port || fresh->metrics_address != opts_.metrics_address) {
    if (!move_metrics(fresh->metrics_address, fresh->metrics_port)) {
      fresh->metrics_port = metrics_ ? opts_.metrics_port : 0;  // 0: not even the old one came back
      fresh->metrics_address = opts_.metrics_address;
    }
  }
  spdlog::set_level(spdlog::level::from_str(fresh->log_level));
  opts_ = *fresh;
  // Pools keep their slots and workers, and grow or shrink to what the settings now say.
  resize_pools(*fresh);
  spdlog::info("SIGHUP: settings reloaded; {}", status_line());
}

// The metrics server on address:port (0 = off), for reload: false, with an error logged, when it
// cannot listen there (the old one then goes on serving, if there was one).
bool Broker::move_metrics(const std::string& address, int port) {
  auto open = [&]() -> std::unique_ptr<MetricsServer> {
    if (port <= 0) return nullptr;
    return std::make_unique<MetricsServer>(address, port);
  };
  try {
    std::unique_ptr<MetricsServer> next;
    try {
      next = open();
    } catch (const std::exception&) {
      // Same port, another address (127.0.0.1 -> 0.0.0.0): the old server may hold the port
      // (httplib sets SO_REUSEPORT, which Linux honours only for the same user).
      if (!metrics_ || port != opts_.metrics_port) throw;
      metrics_.reset();
      try {
        next = open();
      } catch (...) {
        try {
          metrics_ = std::make_unique<MetricsServer>(opts_.metrics_address, opts_.metrics_port);
        } catch (const std::exception& e) {
          spdlog::error("SIGHUP: metrics: cannot listen on the old address again either: {}", e.what());
        }
        throw;
      }
    }
    metrics_ = std::move(next);
    if (metrics_) metrics_->publish(metrics_text());  // a new server starts empty
    if (metrics_)
      spdlog::info("SIGHUP: metrics now on http://{}:{}/metrics", address, port);
    else
      spdlog::info("SIGHUP: metrics off");
    return true;
  } catch (const std::exception& e) {
    spdlog::error(
        "SIGHUP: {}; metrics stay on {}", e.what(),
        metrics_ ? opts_.metrics_address + ":" + std::to_string(opts_.metrics_port) : "nothing (off)");
    return false;
  }
}

// Counters once a second, a minute back: `status` shows rates over the last minute.
void Broker::sample_rates(Clock::time_point now) {
  rate_samples_.emplace_back(now, counters_);
  while (rate_samples_.size() > 61) rate_samples_.pop_front();
}

bool Broker::shutdown_complete() {
  if (workers_.any_alive()) return false;
  // Live clients ack within milliseconds; one that is gone would hold us until it times out.
  auto now = Clock::now();
  if (workers_gone_at_ == Clock::time_point{}) workers_gone_at_ = now;
  if (now > std::min(stop_deadline_, workers_gone_at_) + std::chrono::seconds(1)) return true;
  // Deliver the last results, and see them acknowledged, before going away.
  for (const auto& [id, c] : clients_)
    if (c->connected && (c->held || !c->outbox.empty() || !c->unacked.empty() || !c->replies.empty()))
      return false;
  return log_ || queues_.queued() == 0;  // (with a journal, queued tasks wait on disk)
}

}  // namespace zexecd
