// The client's own containers: the in-flight table (a ring over the task counter with a side
// map for stragglers), checked against the standard library over long random runs shaped like
// a client's traffic: a counter of ids, most finishing soon, a few staying for a long time.
#include <gtest/gtest.h>

#include <random>
#include <unordered_map>

#include "window_map.hpp"

using zexec::detail::WindowMap;

TEST(WindowMap, AgreesWithUnorderedMapWithStragglersAndBursts) {
  std::mt19937_64 rng(11);
  WindowMap<std::uint64_t> map;
  std::unordered_map<std::uint64_t, std::uint64_t> ref;
  std::vector<std::uint64_t> live;
  std::uint64_t next_id = 1;
  for (int round = 0; round < 300000; ++round) {
    // Bursts of submits, then drains; some tasks (1 in 500) are never finished by the drain.
    bool submitting = (round / 20000) % 2 == 0 ? rng() % 4 != 0 : rng() % 4 == 0;
    if (submitting || live.empty()) {
      std::uint64_t id = next_id++;
      std::uint64_t v = rng() | 1;
      ASSERT_TRUE(map.insert(id, v)) << round;
      ASSERT_FALSE(map.insert(id, v + 2)) << "an id already there is refused";
      ref.emplace(id, v);
      live.push_back(id);
    } else {
      std::size_t i = rng() % std::min<std::size_t>(live.size(), 64);  // mostly the oldest ones
      std::uint64_t id = live[i];
      if (id % 500 == 0 && rng() % 100 != 0) continue;  // a straggler: finishes much later
      std::uint64_t got = 0;
      ASSERT_TRUE(map.take(id, got)) << round;
      ASSERT_EQ(got, ref.at(id));
      ref.erase(id);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      ASSERT_FALSE(map.take(id, got)) << "taken twice";
    }
    if (round % 97 == 0) {
      std::uint64_t probe = rng() % (next_id + 10);
      auto it = ref.find(probe);
      auto* v = map.find(probe);
      ASSERT_EQ(v != nullptr, it != ref.end()) << round;
      if (v) ASSERT_EQ(*v, it->second);
    }
    ASSERT_EQ(map.size(), ref.size());
  }
  std::size_t seen = 0;
  map.for_each([&](std::uint64_t id, std::uint64_t& v) {
    ++seen;
    EXPECT_EQ(ref.at(id), v);
  });
  EXPECT_EQ(seen, ref.size());
  map.clear();
  EXPECT_TRUE(map.empty());
}

TEST(WindowMap, AnIdARingAheadMovesTheOlderTaskAside) {
  WindowMap<std::uint64_t> map;
  ASSERT_TRUE(map.insert(1, 10));
  // Far more ids than any ring: each lands on slots the straggler's may share.
  for (std::uint64_t id = 2; id < 200000; ++id) {
    ASSERT_TRUE(map.insert(id, id));
    std::uint64_t v;
    ASSERT_TRUE(map.take(id, v));
  }
  ASSERT_TRUE(map.insert(1 + 64, 65));  // the first ring's size apart
  std::uint64_t v = 0;
  ASSERT_TRUE(map.take(1, v));
  EXPECT_EQ(v, 10u);
  ASSERT_TRUE(map.take(65, v));
  EXPECT_EQ(v, 65u);
  EXPECT_TRUE(map.empty());
}
