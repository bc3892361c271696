// The daemon's own containers: the client id -> handle map and the task name table. Checked
// against the standard library over long random runs (they sit on every submit and result).
#include <gtest/gtest.h>

#include <random>
#include <unordered_map>

#include "id_map.hpp"
#include "task_table.hpp"

using zexecd::IdMap;

TEST(IdMap, AgreesWithUnorderedMapOverRandomOperations) {
  std::mt19937_64 rng(7);
  IdMap map;
  std::unordered_map<std::uint64_t, std::uint64_t> ref;
  for (int round = 0; round < 200000; ++round) {
    // Ids from a small range collide and cluster; phases of growth and of shrinking.
    std::uint64_t id = rng() % (round % 40000 < 20000 ? 5000 : 500);
    switch (rng() % 3) {
      case 0: {
        std::uint64_t h = (rng() | 1);
        bool inserted = map.insert(id, h);
        ASSERT_EQ(inserted, ref.emplace(id, h).second) << round;
        break;
      }
      case 1:
        ASSERT_EQ(map.erase(id), ref.erase(id) == 1) << round;
        break;
      default: {
        auto it = ref.find(id);
        ASSERT_EQ(map.find(id), it == ref.end() ? 0 : it->second) << round;
      }
    }
    ASSERT_EQ(map.size(), ref.size());
  }
  std::size_t seen = 0;
  map.for_each([&](std::uint64_t id, std::uint64_t h) {
    ++seen;
    EXPECT_EQ(ref.at(id), h);
  });
  EXPECT_EQ(seen, ref.size());
}

TEST(IdMap, CountersAndExtremeIdsAndShrinkingBack) {
  IdMap map;
  for (std::uint64_t id = 0; id < 100000; ++id) ASSERT_TRUE(map.insert(id, id + 1));
  EXPECT_TRUE(map.insert(UINT64_MAX, 7));
  EXPECT_FALSE(map.insert(0, 9)) << "an id already there is refused";
  EXPECT_EQ(map.find(0), 1u);
  EXPECT_EQ(map.find(UINT64_MAX), 7u);
  EXPECT_EQ(map.find(100000), 0u);
  for (std::uint64_t id = 0; id < 100000; ++id) ASSERT_TRUE(map.erase(id));
  EXPECT_EQ(map.size(), 1u);
  EXPECT_EQ(map.find(UINT64_MAX), 7u);
  EXPECT_FALSE(map.erase(5));
}

TEST(TaskTable, NamesAreSharedAndFreedWithTheirLastTask) {
  zexecd::TaskTable tasks;
  auto a = tasks.alloc("resize_image"), b = tasks.alloc("resize_image"),
       c = tasks.alloc("a_rather_long_task_name");
  EXPECT_EQ(tasks.get(a)->name, tasks.get(b)->name) << "one copy of a name";
  EXPECT_EQ(tasks.get(c)->name->text, "a_rather_long_task_name");
  EXPECT_EQ(tasks.names(), 2u);
  tasks.release(a);
  EXPECT_EQ(tasks.get(b)->name->text, "resize_image");
  tasks.release(b);
  tasks.release(c);
  EXPECT_EQ(tasks.names(), 0u);
  auto d = tasks.alloc("x");  // reuses a freed name slot
  EXPECT_EQ(tasks.get(d)->name->text, "x");
  EXPECT_EQ(tasks.names(), 1u);
  EXPECT_EQ(tasks.get(a), nullptr) << "a released handle misses";
}

// ---- RunQueues: every queued task by pool and client -------------------------------------------

#include <deque>
#include <map>
#include <set>

#include "run_queues.hpp"

namespace {
using zexecd::RunQueues;
constexpr int kPools = 3;
constexpr int kLanes = kPools + 1;  // lane 0 = unrouted, lane p + 1 = pool p

// The obvious model: each (client, lane) a deque of the live handles, oldest first.
struct Model {
  std::map<std::uint64_t, std::deque<std::uint64_t>> lanes[kLanes];
  std::set<std::uint64_t> live;

  std::size_t count(int lane) const {
    std::size_t n = 0;
    for (const auto& [c, q] : lanes[lane]) n += q.size();
    return n;
  }
  std::size_t of(std::uint64_t client) const {
    std::size_t n = 0;
    for (const auto& l : lanes)
      if (auto it = l.find(client); it != l.end()) n += it->second.size();
    return n;
  }
  // Removes `h` from the front of a lane of pool `lane`; false if it is no client's oldest there.
  bool take_front(int lane, std::uint64_t h) {
    for (auto& [c, q] : lanes[lane])
      if (!q.empty() && q.front() == h) {
        q.pop_front();
        live.erase(h);
        return true;
      }
    return false;
  }
  void erase(std::uint64_t h) {
    for (auto& l : lanes)
      for (auto& [c, q] : l) std::erase(q, h);
    live.erase(h);
  }
};

void expect_same_counts(const RunQueues& rq, const Model& m, int round) {
  std::size_t all = 0;
  for (int l = 0; l < kLanes; ++l) all += m.count(l);
  ASSERT_EQ(rq.queued(), all) << round;
  ASSERT_EQ(rq.unrouted(), m.count(0)) << round;
  for (int p = 0; p < kPools; ++p) ASSERT_EQ(rq.queued(p), m.count(p + 1)) << round;
  for (std::uint64_t c = 1; c <= 6; ++c) ASSERT_EQ(rq.queued_by(c), m.of(c)) << round;
}
}  // namespace

TEST(RunQueues, AgreesWithAModelOverRandomOperations) {
  std::mt19937_64 rng(11);
  RunQueues rq(kPools);
  Model m;
  std::map<std::uint64_t, std::pair<std::uint64_t, int>> where;  // live handle -> (client, pool)
  std::uint64_t next = 1;
  auto live = [&](std::uint64_t h) { return m.live.count(h) > 0; };
  for (int round = 0; round < 100000; ++round) {
    std::uint64_t client = 1 + rng() % 6;
    int pool = static_cast<int>(rng() % kLanes) - 1;  // -1 = unrouted
    switch (rng() % 10) {
      case 0:
      case 1:
      case 2: {  // push, mostly at the back
        std::uint64_t h = next++;
        bool front = rng() % 5 == 0;
        rq.push(client, pool, h, front);
        auto& q = m.lanes[pool + 1][client];
        front ? q.push_front(h) : q.push_back(h);
        m.live.insert(h);
        where[h] = {client, pool};
        break;
      }
      case 3: {  // cancel a queued task: forget it, its handle goes stale
        if (m.live.empty()) break;
        auto it = m.live.lower_bound(rng() % next);
        if (it == m.live.end()) it = m.live.begin();
        auto [c, p] = where.at(*it);
        rq.forget(c, p);
        m.erase(*it);
        break;
      }
      case 4:
      case 5:
      case 6: {  // pop for a pool, sometimes passing a client over
        if (pool < 0) pool = 0;
        std::uint64_t skipped = rng() % 3 == 0 ? client : 0;
        auto h = rq.pop(pool, live, [&](std::uint64_t c) { return c == skipped; });
        if (!h) {
          // Nothing: every client with tasks for it was skipped.
          for (auto& [c, q] : m.lanes[pool + 1]) ASSERT_TRUE(q.empty() || c == skipped) << round;
          break;
        }
        ASSERT_NE(where.at(*h).first, skipped) << round;
        ASSERT_TRUE(m.take_front(pool + 1, *h)) << "not the oldest task of its client, round " << round;
        break;
      }
      case 7: {  // the pools learn names: route every unrouted task again
        if (rng() % 4) break;
        auto taken = rq.take_unrouted(live);
        std::size_t expected = m.count(0);
        ASSERT_EQ(taken.size(), expected) << round;
        for (auto [c, h] : taken) {
          auto& q = m.lanes[0][c];
          ASSERT_FALSE(q.empty());
          ASSERT_EQ(q.front(), h) << "unrouted tasks come back in queue order";
          q.pop_front();
          int to = static_cast<int>(rng() % kPools);
          rq.push(c, to, h, false);
          m.lanes[to + 1][c].push_back(h);
          where[h] = {c, to};
        }
        break;
      }
      case 8: {  // a client leaves
        if (rng() % 20) break;
        rq.drop_client(client);
        for (auto& l : m.lanes)
          if (auto it = l.find(client); it != l.end()) {
            for (auto h : it->second) m.live.erase(h);
            l.erase(it);
          }
        break;
      }
      default: {  // settle one task of anything (shutdown)
        auto h = rq.pop_any(live);
        if (!h) {
          ASSERT_TRUE(m.live.empty()) << round;
          break;
        }
        bool found = false;
        for (int l = 1; l < kLanes && !found; ++l) found = m.take_front(l, *h);
        if (!found) {
          ASSERT_EQ(m.count(1) + m.count(2) + m.count(3), 0u) << "pools before unrouted, round " << round;
          ASSERT_TRUE(m.take_front(0, *h)) << round;
        }
      }
    }
    expect_same_counts(rq, m, round);
  }
  while (rq.pop_any(live)) {
  }
  EXPECT_EQ(rq.queued(), 0u);
}

TEST(RunQueues, RoundRobinOverClientsOneTaskAtATime) {
  RunQueues rq(1);
  auto live = [](std::uint64_t) { return true; };
  for (std::uint64_t h = 1; h <= 100; ++h) rq.push(1, 0, h, false);  // a flood from client 1
  rq.push(2, 0, 1001, false);
  rq.push(3, 0, 2001, false);
  rq.push(3, 0, 2002, false);
  std::vector<std::uint64_t> order;
  for (int i = 0; i < 7; ++i) order.push_back(*rq.pop(0, live));
  EXPECT_EQ(order, (std::vector<std::uint64_t>{1, 1001, 2001, 2, 2002, 3, 4}));
  rq.push(2, 0, 1002, true);  // given back by a worker: its client's turn comes first
  EXPECT_EQ(*rq.pop(0, live), 1002u);
}

TEST(RunQueues, CancelledTasksDoNotPileUpBehindTheQueue) {
  RunQueues rq(1);
  std::set<std::uint64_t> live;
  auto is_live = [&](std::uint64_t h) { return live.count(h) > 0; };
  for (std::uint64_t h = 1; h <= 1000; ++h) {
    rq.push(7, 0, h, false);
    live.insert(h);
  }
  for (std::uint64_t h = 1; h <= 1000; ++h) {
    rq.forget(7, 0);
    live.erase(h);
  }
  EXPECT_EQ(rq.queued(), 0u);
  EXPECT_EQ(rq.pop(0, [](std::uint64_t) { return true; }), std::nullopt)
      << "the stale handles went when the last live one did";
  rq.push(7, 0, 5000, false);
  live.insert(5000);
  EXPECT_EQ(rq.pop(0, is_live), 5000u);
}

#include "recent_ids.hpp"

TEST(RecentIds, RemembersTheLastNAndForgetsAnIdUsedAgain) {
  zexecd::RecentIds ids(3);
  for (std::uint64_t id : {1, 2, 3}) ids.insert(id);
  EXPECT_TRUE(ids.contains(1) && ids.contains(2) && ids.contains(3));
  ids.insert(4);  // 1 falls out
  EXPECT_FALSE(ids.contains(1));
  EXPECT_TRUE(ids.contains(4));
  ids.insert(2);  // again: its older entry falling out later must not take the new one with it
  ids.insert(5);  // pushes out the old 2 (and 3 is next)
  EXPECT_TRUE(ids.contains(2));
  ids.erase(5);
  EXPECT_FALSE(ids.contains(5));
  EXPECT_LE(ids.size(), 3u);
  zexecd::RecentIds none(0);
  none.insert(1);
  EXPECT_FALSE(none.contains(1));
}
