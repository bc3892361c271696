// The answer to `status`: what the daemon is doing, as one msgpack map (docs/PROTOCOL.md §3).
#include <msgpack.hpp>

#include "broker.hpp"

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
  pk.pack_map(8);
  kv(pk, "uptime_ms", std::chrono::duration_cast<std::chrono::milliseconds>(now - started_at_).count());
  kv(pk, "endpoint", opts_.endpoint);
  kv(pk, "stopping", stopping_);
  kv(pk, "queued", static_cast<std::uint64_t>(queued_));
  kv(pk, "tasks", static_cast<std::uint64_t>(tasks_.live()));

  pk.pack(std::string_view("workers"));
  std::uint32_t n = 0;
  for (const auto& w : workers_) n += w != nullptr;
  pk.pack_array(n);
  for (const auto& w : workers_) {
    if (!w) continue;
    pk.pack_map(8);
    kv(pk, "slot", w->slot);
    kv(pk, "pid", static_cast<std::int64_t>(w->pid));
    kv(pk, "state", std::string_view(state_name(w->state)));
    kv(pk, "held", static_cast<std::uint64_t>(w->held.size()));
    kv(pk, "tasks_done", w->tasks_done);
    kv(pk, "rss_bytes", w->rss_bytes);
    kv(pk, "running_ms",
       w->running ? std::chrono::duration_cast<std::chrono::milliseconds>(now - w->running_since).count()
                  : -1);
    kv(pk, "uptime_ms", std::chrono::duration_cast<std::chrono::milliseconds>(now - w->spawned).count());
  }

  pk.pack(std::string_view("clients"));
  pk.pack_array(static_cast<std::uint32_t>(clients_.size()));
  for (const auto& [id, c] : clients_) {
    pk.pack_map(5);
    kv(pk, "id", id);
    kv(pk, "name", c->name);
    kv(pk, "pid", c->pid);
    kv(pk, "queued", static_cast<std::uint64_t>(c->queue.size()));
    kv(pk, "unfinished", static_cast<std::uint64_t>(c->tasks.size()));
  }
  pk.pack(std::string_view("totals"));
  const Counters& t = counters_;
  pk.pack_map(12);
  kv(pk, "submitted", t.submitted);
  kv(pk, "succeeded", t.succeeded);
  kv(pk, "failed", t.failed);
  kv(pk, "cancelled", t.cancelled);
  kv(pk, "crashed", t.crashed);
  kv(pk, "timed_out", t.timed_out);
  kv(pk, "retried", t.retried);
  kv(pk, "quarantined", t.quarantined);
  kv(pk, "worker_restarts", t.worker_restarts);
  kv(pk, "bad_client_frames", t.bad_client_frames);
  kv(pk, "bad_worker_frames", t.bad_worker_frames);
  kv(pk, "clients_dropped", t.clients_dropped);
  return std::string(buf.data(), buf.size());
}

}  // namespace zexecd
