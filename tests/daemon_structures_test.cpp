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
