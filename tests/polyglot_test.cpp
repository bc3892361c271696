// The protocol as a contract between languages: the C++ client against Python workers
// (tests/python/workers/py_worker.py on the zexec.worker runtime), alone and in a mixed daemon
// beside a pool of C++ zexec-workers. (Python client -> C++ and Python workers: tests/python.)
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>

#include "client_support.hpp"
#include "daemon_harness.hpp"
#include "zexec/zexec.hpp"

using namespace zexec::test;
using namespace std::chrono_literals;

namespace {

const std::string kPyWorker =
    std::string("/usr/bin/python3 ") + ZEXEC_SOURCE_DIR + "/tests/python/workers/py_worker.py";

class PolyglotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/python3";
    // The daemon passes its environment on to its workers: this is how they find zexec.worker.
    ::setenv("PYTHONPATH", ZEXEC_SOURCE_DIR "/client-lib/python", 1);
  }
  zmq::context_t ctx_;
};

}  // namespace

TEST_F(PolyglotTest, CppClientRunsPythonTasks) {
  Daemon d(2, {}, {"--worker-command", kPyWorker});
  zexec::Client client{d.endpoint()};
  EXPECT_EQ(client.submit("add", 2, 3).result<int>(20s), 5);
  EXPECT_EQ(client.submit("greet", "ada").result<std::string>(20s), "hello, ada");
  EXPECT_EQ(client.submit("greet", "ada", "hi").result<std::string>(20s), "hi, ada");
  std::vector<int> list{1, 2, 3};
  EXPECT_EQ(client.submit("echo", list).result<std::vector<int>>(20s), list);
  EXPECT_DOUBLE_EQ(client.submit("echo", 0.25).result<double>(20s), 0.25);

  zexec::Future bad = client.submit("raise_value", "no good");
  try {
    bad.result<void>(20s);
    ADD_FAILURE() << "a Python exception did not reach the C++ client";
  } catch (const zexec::TaskError& e) {
    EXPECT_EQ(e.type(), "ValueError");
    EXPECT_EQ(e.message(), "no good");
    EXPECT_EQ(e.task_name(), "raise_value");
  }
  zexec::Future wrong_args = client.submit("add", 1);
  EXPECT_NE(what_of([&] { wrong_args.result<int>(20s); }).find("BadArguments"), std::string::npos);
  zexec::Future crash = client.submit("crash");
  EXPECT_THROW(crash.result<void>(20s), zexec::WorkerCrashedError);
  // Still serving after a crash: the daemon replaced the Python worker.
  EXPECT_EQ(client.submit("add", 40, 2).result<int>(20s), 42);
}

TEST_F(PolyglotTest, CppClientAsCompletedOverPythonWorkers) {
  Daemon d(3, {}, {"--worker-command", kPyWorker});
  // All three up first: with fewer, the tasks would queue behind each other.
  ASSERT_TRUE(wait_until([&] { return d.ready_worker_pids(ctx_).size() == 3; }, 30s));
  zexec::Client client{d.endpoint()};
  std::vector<zexec::Future> futures;
  for (double s : {0.6, 0.2, 0.4}) futures.push_back(client.submit("sleep", s));
  std::vector<double> order;
  for (zexec::Future& f : zexec::as_completed(futures, 20s)) order.push_back(f.result<double>());
  EXPECT_EQ(order, (std::vector<double>{0.2, 0.4, 0.6}));
}

// One daemon, two languages: each task goes to the pool whose workers run its name, and a name
// both run goes to the first pool (the C++ default pool).
TEST_F(PolyglotTest, MixedPoolsServeCppAndPythonTasksSideBySide) {
  Daemon d(1, {}, {"--pool", "py:2:" + kPyWorker});
  zexec::Client client{d.endpoint()};
  std::vector<zexec::Future> futures;
  for (int i = 0; i < 50; ++i) {
    futures.push_back(client.submit("greet", std::to_string(i)));              // Python only
    futures.push_back(client.submit("random_sleep", std::to_string(i), 0.0));  // C++ only
  }
  auto [done, not_done] = zexec::wait(futures, 30s, zexec::ReturnWhen::AllCompleted);
  ASSERT_TRUE(not_done.empty());
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(futures[2 * i].result<std::string>(), "hello, " + std::to_string(i));
    EXPECT_EQ(futures[2 * i + 1].result<std::string>().rfind("Task=" + std::to_string(i) + ": ", 0), 0u);
  }
  // "pid" is run by both: it goes to the default pool, whose worker is a zexec-worker.
  auto pid = client.submit("pid").result<std::int64_t>(20s);
  auto oh = d.status(ctx_);
  using Map = std::map<std::string, msgpack::object>;
  std::string pool_of_pid;
  for (auto& w : oh.get().as<Map>().at("workers").as<std::vector<Map>>())
    if (w.at("pid").as<std::int64_t>() == pid) pool_of_pid = w.at("pool").as<std::string>();
  EXPECT_EQ(pool_of_pid, "default");
}
