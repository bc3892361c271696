// Faults with real processes: workers killed at random, stopped, or unable to start. Whatever
// happens, every task gets exactly one final outcome and the pool keeps serving.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "daemon_harness.hpp"

namespace proto = zexec::proto;
using namespace zexec::test;
using namespace std::chrono_literals;

namespace {
class FaultsTest : public ::testing::Test {
 protected:
  zmq::context_t ctx_;
};
}  // namespace

TEST_F(FaultsTest, RandomKillsDuringAStreamLoseNothing) {
  constexpr std::uint64_t kTasks = 20000;
  constexpr int kKills = 200;
  Daemon d(4);
  RawClient c(ctx_, d.endpoint());
  for (std::uint64_t first = 1; first <= kTasks; first += 1000) {
    proto::Submit s;
    for (std::uint64_t id = first; id < first + 1000; ++id)
      s.tasks.push_back({id, id % 4 == 0 ? "sleep" : "echo", id % 4 == 0 ? args(0.002) : args(id), 0});
    c.send(s);
  }
  // The killer paces itself (a pause between kills is the fault rate, not synchronisation).
  std::atomic<bool> stop{false};
  std::atomic<int> kills{0};
  std::thread killer([&] {
    std::mt19937 rng(42);
    while (!stop && kills < kKills) {
      // Running workers, as the OOM killer would pick them (killing ones still starting would
      // look like a worker command that cannot start, a different fault with its own test).
      auto pids = d.ready_worker_pids(ctx_);
      if (!pids.empty() && ::kill(pids[rng() % pids.size()], SIGKILL) == 0) ++kills;
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 20));
    }
  });
  bool all = c.wait_finals(kTasks, 120s);  // collect() throws if any task is settled twice
  stop = true;
  killer.join();
  ASSERT_TRUE(all) << c.finals.size() << " of " << kTasks << " tasks settled";
  std::size_t crashed = 0;
  for (std::uint64_t id = 1; id <= kTasks; ++id) {
    const proto::Event& e = c.finals.at(id);
    if (e.kind == proto::Outcome::error) {
      ASSERT_EQ(e.error_type, "WorkerCrashed") << e.error_message;
      ++crashed;
    } else if (id % 4 == 0) {
      ASSERT_DOUBLE_EQ(value_of<double>(e), 0.002);
    } else {
      ASSERT_EQ(value_of<std::uint64_t>(e), id);
    }
  }
  EXPECT_GE(kills.load(), kKills / 2) << "the stream ended before enough kills happened";
  EXPECT_LE(crashed, static_cast<std::size_t>(kills.load()));  // at most one task per dead worker
  std::printf("%d kills, %zu tasks failed with WorkerCrashed, %zu succeeded\n", kills.load(), crashed,
              static_cast<std::size_t>(kTasks) - crashed);
  // And the pool still serves.
  c.submit(kTasks + 1, "echo", args(1));
  ASSERT_TRUE(c.wait_finals(kTasks + 1, 20s));
}

TEST_F(FaultsTest, StoppedWorkerIsDetectedKilledAndReplaced) {
  Daemon d(1, {}, {"--heartbeat-ms", "100", "--worker-liveness-ms", "1000"});
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "pid", args());
  ASSERT_TRUE(c.wait_finals(1));
  auto first_pid = static_cast<pid_t>(value_of<std::int64_t>(c.finals[1]));
  ASSERT_EQ(::kill(first_pid, SIGSTOP), 0);
  // Queued behind a frozen worker; served by its replacement once the daemon notices.
  c.submit(2, "pid", args());
  ASSERT_TRUE(c.wait_finals(2, 15s));
  ASSERT_EQ(c.finals[2].kind, proto::Outcome::ok) << c.finals[2].error_message;
  EXPECT_NE(value_of<std::int64_t>(c.finals[2]), first_pid);
  EXPECT_TRUE(wait_until([&] { return ::kill(first_pid, 0) != 0; }, 5s)) << "the stopped worker still exists";
}

TEST_F(FaultsTest, StoppedWorkerRunningATaskFailsThatTaskOnly) {
  Daemon d(1, {}, {"--heartbeat-ms", "100", "--worker-liveness-ms", "1000"});
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "pid", args());
  ASSERT_TRUE(c.wait_finals(1));
  auto pid = static_cast<pid_t>(value_of<std::int64_t>(c.finals[1]));
  c.submit(2, "sleep", args(30.0));
  ASSERT_TRUE(c.collect([&] { return c.started.count(2) > 0; }, 10s));
  ASSERT_EQ(::kill(pid, SIGSTOP), 0);
  c.submit(3, "echo", args(3));
  ASSERT_TRUE(c.wait_finals(3, 15s));
  EXPECT_EQ(c.finals[2].error_type, "WorkerCrashed");
  EXPECT_NE(c.finals[2].error_message.find("stopped responding for 1000 ms"), std::string::npos)
      << c.finals[2].error_message;
  EXPECT_EQ(value_of<int>(c.finals[3]), 3);
}

TEST_F(FaultsTest, WorkerCommandThatCannotStartFailsTasksClearly) {
  Daemon d(2, {}, {"--worker-command", "/bin/false"});
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "echo", args(1));
  ASSERT_TRUE(c.wait_finals(1, 20s)) << "a task waited forever for workers that cannot start";
  EXPECT_EQ(c.finals[1].error_type, "WorkerUnavailable");
  EXPECT_NE(c.finals[1].error_message.find(
                "'/bin/false' failed at start-up repeatedly (last: exited with status 1)"),
            std::string::npos)
      << c.finals[1].error_message;
  EXPECT_TRUE(d.process().running());
}

TEST_F(FaultsTest, WorkersAreRecycledAfterNTasksBetweenTasks) {
  Daemon d(1, {}, {"--max-tasks-per-worker", "5"});
  RawClient c(ctx_, d.endpoint());
  std::set<std::int64_t> pids;
  for (std::uint64_t id = 1; id <= 20; ++id) {  // one at a time: each sees the worker of its turn
    c.submit(id, "pid", args());
    ASSERT_TRUE(c.wait_finals(id));
    ASSERT_EQ(c.finals[id].kind, proto::Outcome::ok) << c.finals[id].error_message;
    pids.insert(value_of<std::int64_t>(c.finals[id]));
  }
  EXPECT_EQ(pids.size(), 4u);  // 20 tasks, 5 per worker, no task lost or failed on the way
}

TEST_F(FaultsTest, AWorkerOverItsMemoryLimitIsReplacedBetweenTasks) {
  Daemon d(1, {}, {"--max-memory-per-worker-mb", "64", "--heartbeat-ms", "100"});
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "hog", args(128));
  ASSERT_TRUE(c.wait_finals(1));
  ASSERT_EQ(c.finals[1].kind, proto::Outcome::ok) << c.finals[1].error_message;
  auto fat = value_of<std::int64_t>(c.finals[1]);
  // Within a few RSS samples the fat worker is retired; tasks keep succeeding meanwhile.
  std::uint64_t id = 2;
  ASSERT_TRUE(wait_until(
      [&] {
        c.submit(id, "pid", args());
        if (!c.wait_finals(id)) return false;
        bool replaced =
            c.finals[id].kind == proto::Outcome::ok && value_of<std::int64_t>(c.finals[id]) != fat;
        ++id;
        return replaced;
      },
      15s));
  for (std::uint64_t i = 2; i < id; ++i)
    EXPECT_EQ(c.finals[i].kind, proto::Outcome::ok) << c.finals[i].error_message;
}
