// Every task waiting for a worker, by pool and by client: the one owner of the run queues.
//
// A task waits in the queue of the pool that runs its name (or "unrouted" while the pools have
// not all said what they run), behind the other tasks of its client. A pool takes the next task
// round robin over its clients, one task at a time, so a flood from one client never starves
// another. The counts (all, per pool, unrouted, per client) are kept here and nowhere else.
//
// Cancelling a queued task is O(1): forget() fixes the counts and leaves the handle in its queue,
// where it is stale; pop() passes over stale handles, asking the caller's `live` predicate (the
// task table knows which handles are still queued). A queue whose count falls to zero is emptied
// at once, so stale handles never pile up behind cancelled work.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace zexecd {

class RunQueues {
 public:
  using Handle = std::uint64_t;
  using ClientId = std::uint64_t;
  static constexpr int kUnrouted = -1;  // the pool of a task whose pool is not known yet

  // The set of pools is fixed for the daemon's life (a new pool needs a restart).
  explicit RunQueues(int pools = 0) : pools_(static_cast<std::size_t>(pools)) {}

  // Queues `h` for `pool` (or kUnrouted) behind the client's other tasks, or ahead of them
  // (`front`: a task given back by a worker keeps its place).
  void push(ClientId c, int pool, Handle h, bool front);

  // A task that was pushed for (c, pool) and not popped left the queue (cancelled): counts only.
  void forget(ClientId c, int pool);

  // The next live task for `pool`, round robin over its clients. `skip(c)` passes a client over
  // for this call (its results are backlogged); each client is looked at once per call.
  template <class Live, class Skip>
  std::optional<Handle> pop(int pool, Live&& live, Skip&& skip);
  template <class Live>
  std::optional<Handle> pop(int pool, Live&& live) {
    return pop(pool, live, [](ClientId) { return false; });
  }

  // The next live task of any pool, then of the unrouted ones (to settle them all: shutdown).
  template <class Live>
  std::optional<Handle> pop_any(Live&& live);

  // Every live unrouted task, client by client in queue order, taken out (to route them again).
  template <class Live>
  std::vector<std::pair<ClientId, Handle>> take_unrouted(Live&& live);

  // Forgets a client's queues; its tasks are the caller's to release.
  void drop_client(ClientId c);

  std::size_t queued() const { return queued_; }  // every pool and unrouted
  std::size_t queued(int pool) const { return pool == kUnrouted ? unrouted_ : pools_[pool].queued; }
  std::size_t unrouted() const { return unrouted_; }
  std::size_t queued_by(ClientId c) const;
  int pools() const { return static_cast<int>(pools_.size()); }

 private:
  struct Lane {                  // one client's tasks for one pool
    std::deque<Handle> handles;  // oldest first; may hold stale handles
    std::size_t live = 0;        // handles still queued (counts forget())
    bool ready = false;          // in the pool's round robin
  };
  struct Lanes {  // one client's
    std::vector<Lane> by_pool;
    Lane unrouted;
    std::size_t queued = 0;
  };
  struct PoolQueue {
    std::deque<ClientId> ready;  // clients with tasks for it, round robin
    std::size_t queued = 0;
  };

  Lane& lane(Lanes& l, int pool) { return pool == kUnrouted ? l.unrouted : l.by_pool[pool]; }
  void count(Lanes& l, Lane& lane, int pool, int delta);

  std::vector<PoolQueue> pools_;
  std::unordered_map<ClientId, Lanes> clients_;
  std::size_t queued_ = 0, unrouted_ = 0;
};

template <class Live, class Skip>
std::optional<RunQueues::Handle> RunQueues::pop(int pool, Live&& live, Skip&& skip) {
  PoolQueue& p = pools_[pool];
  for (std::size_t turns = p.ready.size(); turns > 0 && !p.ready.empty(); --turns) {
    ClientId cid = p.ready.front();
    p.ready.pop_front();
    auto it = clients_.find(cid);
    if (it == clients_.end()) continue;  // dropped
    Lane& q = it->second.by_pool[pool];
    if (q.live > 0 && skip(cid)) {
      p.ready.push_back(cid);
      continue;
    }
    while (!q.handles.empty()) {
      Handle h = q.handles.front();
      q.handles.pop_front();
      if (!live(h)) continue;  // cancelled while queued
      count(it->second, q, pool, -1);
      if (q.live > 0)
        p.ready.push_back(cid);
      else
        q.ready = false;
      return h;
    }
    q.ready = false;
  }
  return std::nullopt;
}

template <class Live>
std::optional<RunQueues::Handle> RunQueues::pop_any(Live&& live) {
  for (int p = 0; p < pools(); ++p)
    if (pools_[p].queued > 0)
      if (auto h = pop(p, live)) return h;
  if (unrouted_ == 0) return std::nullopt;
  for (auto& [cid, l] : clients_) {
    while (!l.unrouted.handles.empty()) {
      Handle h = l.unrouted.handles.front();
      l.unrouted.handles.pop_front();
      if (!live(h)) continue;
      count(l, l.unrouted, kUnrouted, -1);
      return h;
    }
  }
  return std::nullopt;
}

template <class Live>
std::vector<std::pair<RunQueues::ClientId, RunQueues::Handle>> RunQueues::take_unrouted(Live&& live) {
  std::vector<std::pair<ClientId, Handle>> out;
  if (unrouted_ == 0) return out;
  for (auto& [cid, l] : clients_) {
    for (Handle h : std::exchange(l.unrouted.handles, {}))
      if (live(h)) out.emplace_back(cid, h);
    std::size_t n = l.unrouted.live;
    l.unrouted.live = 0;
    l.queued -= n;
    queued_ -= n;
    unrouted_ -= n;
  }
  return out;
}

}  // namespace zexecd
