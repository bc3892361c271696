// The answer to `status`: what the daemon is doing, as one msgpack map (docs/PROTOCOL.md §3).
#include <algorithm>
#include <cstdio>
#include <msgpack.hpp>

#include "broker.hpp"
#include "options.hpp"

namespace zexecd {

namespace {
const char* state_name(WorkerState s) {
  switch (s) {
    case WorkerState::starting:
      return "starting";
    case WorkerState::ready:
      return "ready";
    case WorkerState::stopping:
      return "stopping";
  }
  return "?";
}
using Packer = msgpack::packer<msgpack::sbuffer>;
template <class V>
void kv(Packer& pk, const char* key, const V& value) {
  pk.pack(std::string_view(key));
  pk.pack(value);
}
}  // namespace

std::string Broker::status_body() const {
  auto now = Clock::now();
  msgpack::sbuffer buf;
  Packer pk(buf);
  pk.pack_map(12);
  pk.pack(std::string_view("journal"));
  if (!log_) {
    pk.pack_nil();  // in memory only
  } else {
    JournalStats js = log_->stats();
    pk.pack_map(8);
    kv(pk, "path", log_->path());
    kv(pk, "uncommitted", log_->pending());  // records waiting for the next group commit
    kv(pk, "records", js.records);
    kv(pk, "commits", js.commits);
    kv(pk, "commit_failures", js.commit_failures);
    kv(pk, "file_bytes", js.file_bytes);
    kv(pk, "wal_bytes", js.wal_bytes);
    kv(pk, "failed", journal_failed_);
  }
  pk.pack(std::string_view("settings"));
  auto settings = settings_of(opts_);
  pk.pack_map(static_cast<std::uint32_t>(settings.size()));
  for (const auto& [name, value] : settings) kv(pk, name.c_str(), value);
  kv(pk, "uptime_ms", std::chrono::duration_cast<std::chrono::milliseconds>(now - started_at_).count());
  kv(pk, "endpoint", opts_.endpoint);
  kv(pk, "stopping", stopping_);
  kv(pk, "queued", static_cast<std::uint64_t>(queues_.queued()));
  kv(pk, "tasks", static_cast<std::uint64_t>(tasks_.live()));

  pk.pack(std::string_view("workers"));
  std::uint32_t n = 0;
  workers_.for_each([&](const Worker&) { ++n; });
  pk.pack_array(n);
  workers_.for_each([&](const Worker& worker) {
    const Worker* w = &worker;
    pk.pack_map(11);
    kv(pk, "slot", w->slot);
    kv(pk, "pool", pools_[w->pool].name);
    kv(pk, "restarts", workers_.slots()[w->slot].restarts);
    // What it runs, as "CLIENT:TASK name": the id `zexec cancel` takes.
    std::string running;
    if (const Task* t = w->running ? const_cast<TaskTable&>(tasks_).get(w->running) : nullptr)
      running = std::to_string(t->client_id) + ":" + std::to_string(t->client_task_id) + " " + t->name->text;
    kv(pk, "running_task", running);
    kv(pk, "pid", static_cast<std::int64_t>(w->pid));
    kv(pk, "state", std::string_view(state_name(w->state)));
    kv(pk, "held", static_cast<std::uint64_t>(w->held.size()));
    kv(pk, "tasks_done", w->tasks_done);
    kv(pk, "rss_bytes", w->rss_bytes);
    kv(pk, "running_ms",
       w->running ? std::chrono::duration_cast<std::chrono::milliseconds>(now - w->running_since).count()
                  : -1);
    kv(pk, "uptime_ms", std::chrono::duration_cast<std::chrono::milliseconds>(now - w->spawned).count());
  });

  pk.pack(std::string_view("clients"));
  pk.pack_array(static_cast<std::uint32_t>(clients_.size()));
  for (const auto& [id, c] : clients_) {
    pk.pack_map(6);
    kv(pk, "id", id);
    kv(pk, "connected", c->connected);
    kv(pk, "name", c->name);
    kv(pk, "pid", c->pid);
    kv(pk, "queued", static_cast<std::uint64_t>(queues_.queued_by(id)));
    kv(pk, "unfinished", static_cast<std::uint64_t>(c->tasks.size()));
  }
  pk.pack(std::string_view("pools"));
  pk.pack_array(static_cast<std::uint32_t>(pools_.size()));
  for (int i = 0; i < static_cast<int>(pools_.size()); ++i) {
    const Pool& p = pools_[i];
    pk.pack_map(6);
    kv(pk, "name", p.name);
    kv(pk, "workers", workers_.pool(i).size);
    std::string command;
    for (const auto& a : workers_.pool(i).argv) command += (command.empty() ? "" : " ") + a;
    kv(pk, "command", command);
    kv(pk, "queued", static_cast<std::uint64_t>(queues_.queued(i)));
    // What its workers said they run; nil until one said hello, [] = anything.
    pk.pack(std::string_view("task_names"));
    if (!p.names_known) {
      pk.pack_nil();
    } else {
      std::vector<std::string> names(p.names.begin(), p.names.end());
      std::sort(names.begin(), names.end());
      pk.pack(names);
    }
    kv(pk, "broken", p.broken);
  }

  // Per second, over the last minute (or since start, when that is shorter).
  pk.pack(std::string_view("rates"));
  pk.pack_map(4);
  double seconds = 0;
  Counters from{}, to = counters_;
  if (!rate_samples_.empty()) {
    from = rate_samples_.front().second;
    seconds = std::chrono::duration<double>(now - rate_samples_.front().first).count();
  }
  auto rate = [&](std::uint64_t a, std::uint64_t b) {
    return seconds > 0 ? static_cast<double>(b - a) / seconds : 0.0;
  };
  kv(pk, "window_s", seconds);
  kv(pk, "submitted", rate(from.submitted, to.submitted));
  kv(pk, "finished",
     rate(from.succeeded + from.failed + from.cancelled + from.crashed + from.timed_out,
          to.succeeded + to.failed + to.cancelled + to.crashed + to.timed_out));
  kv(pk, "failed", rate(from.failed + from.crashed + from.timed_out, to.failed + to.crashed + to.timed_out));

  pk.pack(std::string_view("totals"));
  const Counters& t = counters_;
  // A table, so the map's size is counted, not written by hand.
  const std::pair<const char*, std::uint64_t> totals[] = {
      {"submitted", t.submitted},
      {"succeeded", t.succeeded},
      {"failed", t.failed},
      {"cancelled", t.cancelled},
      {"crashed", t.crashed},
      {"timed_out", t.timed_out},
      {"retried", t.retried},
      {"quarantined", t.quarantined},
      {"worker_restarts", workers_.restarts()},
      {"bad_client_frames", t.bad_client_frames},
      {"bad_worker_frames", t.bad_worker_frames},
      {"workers_rejected", workers_.rejected()},
      {"clients_dropped", t.clients_dropped},
      {"results_intruders", results_intruders_},  // peers refused on a results socket
  };
  pk.pack_map(static_cast<std::uint32_t>(std::size(totals)));
  for (const auto& [key, value] : totals) kv(pk, key, value);
  return std::string(buf.data(), buf.size());
}

std::string Broker::metrics_text() const {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto sample = [&](const std::string& name, double value) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " %.17g\n", value);
    out += name + buf;
  };
  const Counters& t = counters_;
  metric("zexec_tasks_total", "counter", "Tasks by final outcome.");
  for (auto [outcome, n] : {std::pair{"submitted", t.submitted},
                            {"succeeded", t.succeeded},
                            {"failed", t.failed},
                            {"cancelled", t.cancelled},
                            {"crashed", t.crashed},
                            {"timed_out", t.timed_out},
                            {"quarantined", t.quarantined}})
    sample(std::string("zexec_tasks_total{outcome=\"") + outcome + "\"}", static_cast<double>(n));
  metric("zexec_task_retries_total", "counter", "Task attempts run again after a failure.");
  sample("zexec_task_retries_total", static_cast<double>(t.retried));
  metric("zexec_tasks_queued", "gauge", "Tasks waiting for a worker.");
  sample("zexec_tasks_queued", static_cast<double>(queues_.queued()));
  metric("zexec_tasks_owned", "gauge", "Tasks the daemon owns (queued, at workers, or unacknowledged).");
  sample("zexec_tasks_owned", static_cast<double>(tasks_.live()));
  metric("zexec_workers", "gauge", "Worker processes by state.");
  int by_state[3] = {0, 0, 0};
  workers_.for_each([&](const Worker& w) { by_state[static_cast<int>(w.state)]++; });
  sample("zexec_workers{state=\"starting\"}", by_state[0]);
  sample("zexec_workers{state=\"ready\"}", by_state[1]);
  sample("zexec_workers{state=\"stopping\"}", by_state[2]);
  metric("zexec_worker_restarts_total", "counter", "Workers replaced after they died or were recycled.");
  sample("zexec_worker_restarts_total", static_cast<double>(workers_.restarts()));
  metric("zexec_clients", "gauge", "Connected clients.");
  sample("zexec_clients", static_cast<double>(clients_.size()));
  metric("zexec_bad_frames_total", "counter", "Frames refused, by sender.");
  sample("zexec_bad_frames_total{from=\"client\"}", static_cast<double>(t.bad_client_frames));
  sample("zexec_bad_frames_total{from=\"worker\"}", static_cast<double>(t.bad_worker_frames));
  metric("zexec_uptime_seconds", "gauge", "Seconds since zexecd started.");
  sample("zexec_uptime_seconds", std::chrono::duration<double>(Clock::now() - started_at_).count());
  return out;
}

std::string Broker::status_line() const {
  int ready = 0, running = 0;
  workers_.for_each([&](const Worker& w) {
    if (w.state != WorkerState::ready) return;
    ++ready;
    running += w.running != 0;
  });
  std::uint32_t wanted = workers_.wanted_workers();
  return std::to_string(ready) + "/" + std::to_string(wanted) + " workers ready, " + std::to_string(running) +
         " running, " + std::to_string(queues_.queued()) + " queued, " + std::to_string(clients_.size()) +
         " clients, " + std::to_string(counters_.succeeded + counters_.failed) + " done";
}

// READY=1 once serving: sockets are bound (the constructor did that) and every worker said hello,
// or start-up took 10 s (the status line then says how many are up), so a slow or broken worker
// command does not hold systemd's start job forever.
Clock::time_point Broker::notify_systemd(Clock::time_point now) {
  if (!notify_.enabled()) return Clock::time_point::max();
  if (!announced_ready_) {
    // Every wanted worker up, except in pools that cannot start any.
    bool all_up = true;
    const auto& slots = workers_.slots();
    for (std::size_t i = 0; i < slots.size(); ++i)
      if (slots[i].wanted && !pools_[slots[i].pool].broken) {
        const Worker* w = workers_.at(static_cast<int>(i));
        all_up &= w && w->hello_seen;
      }
    if (all_up || now - started_at_ > std::chrono::seconds(10)) {
      notify_.ready(status_line());
      announced_ready_ = true;
    }
  }
  if (now >= next_status_) {
    if (announced_ready_ && !stopping_) notify_.status(status_line());
    next_status_ = now + std::chrono::seconds(1);
  }
  auto next = announced_ready_ ? next_status_ : now + std::chrono::milliseconds(10);
  if (announced_ready_ && notify_.watchdog_interval().count() > 0) {  // systemd watches from READY on
    if (now >= next_watchdog_) {
      notify_.watchdog();
      next_watchdog_ = now + std::chrono::duration_cast<Clock::duration>(notify_.watchdog_interval());
    }
    next = std::min(next, next_watchdog_);
  }
  return next;
}

}  // namespace zexecd
