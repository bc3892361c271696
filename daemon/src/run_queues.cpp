#include "run_queues.hpp"

#include <algorithm>

namespace zexecd {

void RunQueues::push(ClientId c, int pool, Handle h, bool front) {
  auto [it, fresh] = clients_.try_emplace(c);
  Lanes& l = it->second;
  if (fresh) l.by_pool.resize(pools_.size());
  Lane& q = lane(l, pool);
  front ? q.handles.push_front(h) : q.handles.push_back(h);
  count(l, q, pool, +1);
  if (pool != kUnrouted && !q.ready) {
    q.ready = true;
    // A task given back goes first, and so does its client's turn.
    front ? pools_[pool].ready.push_front(c) : pools_[pool].ready.push_back(c);
  }
}

void RunQueues::forget(ClientId c, int pool) {
  auto it = clients_.find(c);
  if (it == clients_.end()) return;
  count(it->second, lane(it->second, pool), pool, -1);
}

void RunQueues::drop_client(ClientId c) {
  auto it = clients_.find(c);
  if (it == clients_.end()) return;
  Lanes& l = it->second;
  for (int p = 0; p < pools(); ++p) pools_[p].queued -= l.by_pool[p].live;
  unrouted_ -= l.unrouted.live;
  queued_ -= l.queued;
  clients_.erase(it);
  // Out of the round robins too: a client leaves rarely, and an id left behind would give a
  // later client of the same id (the unit test reuses ids) two turns.
  for (auto& p : pools_) std::erase(p.ready, c);
}

std::size_t RunQueues::queued_by(ClientId c) const {
  auto it = clients_.find(c);
  return it == clients_.end() ? 0 : it->second.queued;
}

void RunQueues::count(Lanes& l, Lane& q, int pool, int delta) {
  auto d = static_cast<std::size_t>(delta);  // wraps for -1: unsigned arithmetic is modular
  q.live += d;
  l.queued += d;
  queued_ += d;
  if (pool == kUnrouted)
    unrouted_ += d;
  else
    pools_[pool].queued += d;
  // Nothing live is left behind the stale handles: drop them now rather than when popped.
  if (q.live == 0) q.handles.clear();
}

}  // namespace zexecd
