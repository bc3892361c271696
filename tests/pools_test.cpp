// Worker pools: workers announce the task names they run, and each task goes only to a pool that
// runs it. Real daemon, real workers of two different programs (zexec-worker and extra_worker).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <fstream>

#include "daemon_harness.hpp"

namespace proto = zexec::proto;
using namespace zexec::test;
using namespace std::chrono_literals;

namespace {

class PoolsTest : public ::testing::Test {
 protected:
  zmq::context_t ctx_;
  static std::string extra_pool(int workers) {
    return "extra:" + std::to_string(workers) + ":" + bin_path("extra_worker");
  }
};

using Map = std::map<std::string, msgpack::object>;

}  // namespace

TEST_F(PoolsTest, EachTaskGoesToThePoolThatRunsItsName) {
  Daemon d(1, {}, {"--pool", extra_pool(2)});
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "add", args(2, 3));        // only extra_worker has it
  c.submit(2, "echo", args("hi"));       // only zexec-worker has it
  c.submit(3, "pool_name", args());      // extra_worker reports $ZEXEC_POOL
  c.submit(4, "no_such_task", args(1));  // nobody
  ASSERT_TRUE(c.wait_finals(4));
  EXPECT_EQ(value_of<std::int64_t>(c.finals[1]), 5);
  EXPECT_EQ(value_of<std::string>(c.finals[2]), "hi");
  EXPECT_EQ(value_of<std::string>(c.finals[3]), "extra");
  const proto::Event& unknown = c.finals[4];
  EXPECT_EQ(unknown.error_type, "UnknownTask");
  // The message names what each pool runs, so a typo is easy to see.
  EXPECT_NE(unknown.error_message.find("unknown task 'no_such_task': no worker runs it"), std::string::npos)
      << unknown.error_message;
  EXPECT_NE(unknown.error_message.find("default: crash, crashy, echo, fail"), std::string::npos)
      << unknown.error_message;
  EXPECT_NE(unknown.error_message.find("extra: add, nap_ms, pool_name"), std::string::npos)
      << unknown.error_message;
}

TEST_F(PoolsTest, StatusShowsPoolsTheirNamesAndEachWorkersPool) {
  Daemon d(1, {}, {"--pool", extra_pool(2)});
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "add", args(1, 1));  // a task for each pool: both said hello once they ran one
  c.submit(2, "echo", args(1));
  ASSERT_TRUE(c.wait_finals(2));
  auto oh = d.status(ctx_);
  auto st = oh.get().as<Map>();
  auto pools = st.at("pools").as<std::vector<Map>>();
  ASSERT_EQ(pools.size(), 2u);
  EXPECT_EQ(pools[0].at("name").as<std::string>(), "default");
  EXPECT_EQ(pools[0].at("workers").as<int>(), 1);
  EXPECT_EQ(pools[1].at("name").as<std::string>(), "extra");
  EXPECT_EQ(pools[1].at("workers").as<int>(), 2);
  EXPECT_EQ(pools[1].at("task_names").as<std::vector<std::string>>(),
            (std::vector<std::string>{"add", "nap_ms", "pool_name"}));
  EXPECT_NE(pools[1].at("command").as<std::string>().find("extra_worker"), std::string::npos);
  std::map<std::string, int> per_pool;
  for (auto& w : st.at("workers").as<std::vector<Map>>()) {
    per_pool[w.at("pool").as<std::string>()]++;
    EXPECT_EQ(w.at("restarts").as<int>(), 0);
  }
  EXPECT_EQ(per_pool["default"], 1);
  EXPECT_EQ(per_pool["extra"], 2);
  auto settings = st.at("settings").as<std::map<std::string, std::string>>();
  EXPECT_EQ(settings.at("pools"), extra_pool(2));
  auto rates = st.at("rates").as<Map>();
  EXPECT_GT(rates.at("window_s").as<double>(), 0.0);
  EXPECT_GT(rates.at("submitted").as<double>(), 0.0);  // 2 tasks within the window
  EXPECT_GT(rates.at("finished").as<double>(), 0.0);
  EXPECT_EQ(rates.at("failed").as<double>(), 0.0);
}

TEST_F(PoolsTest, StatusCountsRestartsPerSlot) {
  Daemon d(2);
  std::vector<pid_t> pids;
  ASSERT_TRUE(wait_until([&] { return (pids = d.ready_worker_pids(ctx_)).size() == 2; }));
  ASSERT_EQ(::kill(pids[0], SIGKILL), 0);
  std::vector<int> restarts;
  ASSERT_TRUE(wait_until([&] {
    auto oh = d.status(ctx_);
    restarts.clear();
    int ready = 0;
    for (auto& w : oh.get().as<Map>().at("workers").as<std::vector<Map>>()) {
      restarts.push_back(w.at("restarts").as<int>());
      ready += w.at("state").as<std::string>() == "ready";
    }
    return ready == 2 && restarts.size() == 2 && restarts[0] + restarts[1] == 1;
  })) << "the killed worker's slot was not restarted and counted";
}

// Each pool has its own queue: a backlog of slow tasks in one pool does not hold up another's.
TEST_F(PoolsTest, ABusyPoolDoesNotHoldUpAnother) {
  Daemon d(1, {}, {"--pool", extra_pool(1)});
  RawClient c(ctx_, d.endpoint());
  for (std::uint64_t id = 1; id <= 4; ++id) c.submit(id, "nap_ms", args(400));  // 1.6 s for the extra pool
  for (std::uint64_t id = 5; id <= 24; ++id) c.submit(id, "echo", args(id));
  ASSERT_TRUE(c.wait_finals(24, 30s));
  // All 20 echoes came back before the second nap did.
  auto second_nap = std::find_if(c.order.begin(), c.order.end(),
                                 [&, seen = 0](std::uint64_t id) mutable { return id <= 4 && ++seen == 2; });
  std::size_t echoes_before =
      std::count_if(c.order.begin(), second_nap, [](std::uint64_t id) { return id > 4; });
  EXPECT_EQ(echoes_before, 20u);
  for (std::uint64_t id = 5; id <= 24; ++id) EXPECT_EQ(value_of<std::uint64_t>(c.finals[id]), id);
}

// Tasks submitted before any worker said what it runs wait for that, then go to the right pool.
TEST_F(PoolsTest, TasksSubmittedAtStartWaitForTheNamesAndAreNotLost) {
  Daemon d(2, {}, {"--pool", extra_pool(2)});
  RawClient c(ctx_, d.endpoint());  // right away: workers are most likely still starting
  for (std::uint64_t id = 1; id <= 200; ++id)
    c.submit(id, id % 2 ? "add" : "echo", id % 2 ? args(id, 1) : args(id));
  ASSERT_TRUE(c.wait_finals(200));
  for (std::uint64_t id = 1; id <= 200; ++id)
    EXPECT_EQ(value_of<std::uint64_t>(c.finals[id]), id % 2 ? id + 1 : id) << id;
}

// A pool whose command cannot start fails only the tasks that could have gone to it.
TEST_F(PoolsTest, ABrokenPoolFailsItsTasksAndTheOtherPoolServes) {
  Daemon d(1, {}, {"--pool", "broken:1:/bin/false"});
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "echo", args(1));
  ASSERT_TRUE(c.wait_finals(1));
  EXPECT_EQ(value_of<int>(c.finals[1]), 1);
  c.submit(2, "add", args(1, 2));  // the default pool does not run it; the broken pool might have
  ASSERT_TRUE(c.wait_finals(2, 20s));
  EXPECT_EQ(c.finals[2].error_type, "WorkerUnavailable");
  EXPECT_NE(c.finals[2].error_message.find("pool 'broken'"), std::string::npos) << c.finals[2].error_message;
  c.submit(3, "echo", args(3));
  ASSERT_TRUE(c.wait_finals(3));
  EXPECT_EQ(value_of<int>(c.finals[3]), 3);
}

TEST_F(PoolsTest, BadPoolFlagsAreRefusedAtStart) {
  for (auto [flag, why] : std::vector<std::pair<std::string, std::string>>{
           {"nocolons", "is not NAME:WORKERS:COMMAND"},
           {"x:many:/bin/true", "is not a number of workers"},
           {"x:0:/bin/true", "out of range"},
           {"default:1:/bin/true", "pool 'default' is the one of workers"},
           {"bad name:1:/bin/true", "use letters, digits"},
           {"x:1:", "command is empty"}}) {
    TempDir dir;
    Process p({bin_path("zexecd"), "--endpoint", dir.ipc("d.sock"), "--pool", flag}, {}, dir.path() + "/out",
              dir.path() + "/err");
    ASSERT_TRUE(p.wait_exit(10s)) << flag;
    EXPECT_FALSE(p.exited_ok()) << flag;
    std::ifstream err(dir.path() + "/err");
    std::string text((std::istreambuf_iterator<char>(err)), {});
    EXPECT_NE(text.find(why), std::string::npos) << flag << ": " << text;
  }
}

namespace {

// A daemon started from a config file (pools from [pools.NAME] tables), for SIGHUP tests.
struct FileDaemon {
  TempDir dir;
  std::string file = dir.path() + "/zexecd.toml";
  std::unique_ptr<Process> proc;
  void start() {
    proc = std::make_unique<Process>(std::vector<std::string>{bin_path("zexecd"), "--config", file,
                                                              "--endpoint", dir.ipc("d.sock"), "--log-level",
                                                              "error", "--shutdown-grace-ms", "200"});
    if (!wait_until([&] { return std::filesystem::exists(dir.path() + "/d.sock"); }))
      throw std::runtime_error("zexecd did not start");
  }
  std::string endpoint() const { return dir.ipc("d.sock"); }
  // (pool, state) -> number of workers
  std::map<std::pair<std::string, std::string>, int> workers(zmq::context_t& ctx) {
    auto oh = status_at(ctx, endpoint());
    std::map<std::pair<std::string, std::string>, int> n;
    for (auto& w : oh.get().as<Map>().at("workers").as<std::vector<Map>>())
      n[{w.at("pool").as<std::string>(), w.at("state").as<std::string>()}]++;
    return n;
  }
};

}  // namespace

// "The first pool that runs its name" means the first in the file, not in alphabetical order.
TEST_F(PoolsTest, PoolsFromTheFileKeepTheFilesOrder) {
  FileDaemon d;
  std::ofstream(d.file) << "workers = 1\n[pools.zzz]\nworkers = 1\ncommand = \"" << bin_path("extra_worker")
                        << "\"\n[pools.aaa]\nworkers = 1\ncommand = \"" << bin_path("extra_worker") << "\"\n";
  d.start();
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "pool_name", args());
  ASSERT_TRUE(c.wait_finals(1));
  EXPECT_EQ(value_of<std::string>(c.finals[1]), "zzz");
}

// Workers retired by a shrink before they said hello stay retired: they get no tasks (which
// they would take down with them when they exit).
TEST_F(PoolsTest, ShrinkingWhileWorkersStartLosesNoTask) {
  FileDaemon d;
  auto write = [&](int extra) {
    std::ofstream(d.file) << "workers = 1\n[pools.extra]\nworkers = " << extra
                          << "\ncommand = '/bin/sh -c \"sleep 1; exec " << bin_path("extra_worker")
                          << "\"'\n";
  };
  write(4);
  d.start();
  RawClient c(ctx_, d.endpoint());
  for (int i = 1; i <= 12; ++i) c.submit(i, "nap_ms", args(50));
  write(1);
  d.proc->kill(SIGHUP);  // within the second the extra workers take to say hello
  ASSERT_TRUE(c.wait_finals(12, 30s));
  for (int i = 1; i <= 12; ++i)
    EXPECT_EQ(c.finals[i].kind, proto::Outcome::ok) << i << ": " << c.finals[i].error_message;
}

// Shrink, then grow back while the retired worker still finishes a long task: the pool gets a
// fresh worker at once instead of waiting for the retiring one to leave its slot.
TEST_F(PoolsTest, GrowingBackAfterAShrinkRestoresCapacityAtOnce) {
  FileDaemon d;
  auto write = [&](int extra) {
    std::ofstream(d.file) << "workers = 1\n[pools.extra]\nworkers = " << extra << "\ncommand = \""
                          << bin_path("extra_worker") << "\"\n";
  };
  write(2);
  d.start();
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "nap_ms", args(6000));
  c.submit(2, "nap_ms", args(6000));
  ASSERT_TRUE(c.collect([&] { return c.started.size() == 2; }));
  write(1);
  d.proc->kill(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return d.workers(ctx_)[{"extra", "stopping"}] == 1; }));
  write(2);
  d.proc->kill(SIGHUP);
  c.submit(3, "nap_ms", args(10));
  ASSERT_TRUE(c.wait_finals(3, 30s));
  EXPECT_EQ(c.order.front(), 3u) << "task 3 waited for a 6 s task: the grown pool had no free worker";
}
