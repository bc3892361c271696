// libzexec against the real zexecd + zexec-worker (skipped when they are not built), and the
// embedded Executor that starts its own zexecd.
// Nothing sleeps to synchronise: every wait is on a condition, with a deadline.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "client_support.hpp"
#include "support.hpp"
#include "zexec/zexec.hpp"

namespace zexec {
namespace {

using namespace std::chrono_literals;
using test::Clock;
using test::free_tcp_port;
using test::TempDir;
using test::wait_until;
using test::what_of;

bool daemon_built() {
  return ::access(test::bin_path("zexecd").c_str(), X_OK) == 0 &&
         ::access(test::bin_path("zexec-worker").c_str(), X_OK) == 0;
}

#define SKIP_WITHOUT_DAEMON()                                                                  \
  if (!daemon_built()) GTEST_SKIP() << "zexecd / zexec-worker not built in " << ZEXEC_BIN_DIR; \
  static_assert(true)

// A real zexecd (with the stock workers) on an ipc or tcp endpoint, stopped at the end.
class RealDaemon {
 public:
  explicit RealDaemon(int workers, std::string endpoint = {}, std::vector<std::string> extra = {}) {
    endpoint_ = endpoint.empty() ? dir_.ipc("d.sock") : endpoint;
    std::vector<std::string> argv{test::bin_path("zexecd"), "--endpoint",  endpoint_, "--workers",
                                  std::to_string(workers),  "--log-level", "warn"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    process_ = std::make_unique<test::Process>(argv);
  }
  ~RealDaemon() {
    process_->kill(SIGTERM);
    EXPECT_TRUE(process_->wait_exit(20s));
    EXPECT_TRUE(process_->exited_ok()) << "zexecd exits 0 on SIGTERM, status " << process_->status();
  }
  const std::string& endpoint() const { return endpoint_; }
  Client client() const { return client(ClientOptions{}); }
  Client client(ClientOptions o) const {
    o.connect_timeout = 10s;  // covers the daemon's start-up
    return Client(endpoint_, o);
  }

 private:
  TempDir dir_;
  std::string endpoint_;
  std::unique_ptr<test::Process> process_;
};

TEST(RealDaemonTest, ResultsComeBackInCompletionOrder) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(3);
  Client c = d.client();
  EXPECT_EQ(c.workers(), 3u);
  std::vector<Future> fs{c.submit("sleep", 0.3), c.submit("sleep", 0.1), c.submit("sleep", 0.2)};
  std::vector<double> order;
  for (Future& f : as_completed(fs, 20s)) order.push_back(f.result<double>());
  EXPECT_EQ(order, (std::vector<double>{0.1, 0.2, 0.3}));
  std::vector<double> polled;
  while (auto f = c.poll(0ms)) polled.push_back(f->result<double>());
  EXPECT_EQ(polled, (std::vector<double>{0.1, 0.2, 0.3}));
}

TEST(RealDaemonTest, AsCompletedDeadlineLeavesTheRestDeliverable) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(3);
  Client c = d.client();
  Future quick_one = c.submit("sleep", 0.05), slow1 = c.submit("sleep", 1.5), slow2 = c.submit("sleep", 1.5);
  std::vector<Future> fs{slow1, quick_one, slow2, slow1};
  std::vector<Future> got;
  std::string text;
  auto t0 = Clock::now();
  try {
    for (Future& f : as_completed(fs, 700ms)) got.push_back(f);
  } catch (const TimeoutError& e) {
    text = e.what();
  }
  auto took = Clock::now() - t0;
  EXPECT_GE(took, 700ms);
  EXPECT_LT(took, 1400ms) << "one deadline for the whole call";
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], quick_one);
  EXPECT_NE(text.find("2 (of 3) futures unfinished"), std::string::npos) << text;
  EXPECT_FALSE(slow1.cancelled());
  EXPECT_FALSE(slow1.done());
  std::vector<Future> rest;
  for (Future& f : as_completed(fs, 20s)) rest.push_back(f);
  EXPECT_EQ(rest.size(), 3u) << "quick_one (already done) first, then the two slow ones";
  EXPECT_EQ(rest[0], quick_one);
  EXPECT_DOUBLE_EQ(slow1.result<double>(), 1.5);
}

TEST(RealDaemonTest, AlreadyFinishedComeFirstAndDuplicatesOnce) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(2);
  Client c = d.client();
  Future done = c.submit("echo", std::string("first"));
  EXPECT_EQ(done.result<std::string>(20s), "first");
  Future later = c.submit("sleep", 0.2);
  std::vector<Future> order;
  for (Future& f : as_completed({later, done, later, done}, 20s)) order.push_back(f);
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], done);
  EXPECT_EQ(order[1], later);
}

TEST(RealDaemonTest, ExceptionsPropagateWithTypeAndMessage) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(2);
  Client c = d.client();
  Future f = c.submit("fail", std::string("boom"));
  try {
    f.result<int>(20s);
    FAIL() << "no exception";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.type(), "std::runtime_error");
    EXPECT_EQ(e.message(), "boom");
    EXPECT_STREQ(e.what(), "fail: std::runtime_error: boom");
  }
  Future unknown = c.submit("x");
  EXPECT_NE(what_of([&] { unknown.result<void>(20s); }).find("unknown task 'x'"), std::string::npos);
  Future bad = c.submit("sleep", std::string("not a number"));
  EXPECT_THROW(bad.result<double>(20s), TaskError);
  Future crashed = c.submit("crash");
  EXPECT_THROW(crashed.result<void>(30s), WorkerCrashedError);
  EXPECT_EQ(c.submit("echo", 7).result<int>(30s), 7) << "the pool recovers from the crash";
}

TEST(RealDaemonTest, PerTaskTimeout) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(1);
  Client c = d.client();
  Future f = c.submit_with({.timeout = 200ms}, "sleep", 30.0);
  auto t0 = Clock::now();
  EXPECT_THROW(f.result<double>(20s), TaskTimeoutError);
  EXPECT_LT(Clock::now() - t0, 10s);
  EXPECT_EQ(c.submit("echo", 1).result<int>(20s), 1) << "the pool recovers from the killed worker";
}

TEST(RealDaemonTest, CancelQueuedSucceedsCancelRunningFails) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(1);
  Client c = d.client();
  Future busy = c.submit("sleep", 1.0);
  ASSERT_TRUE(wait_until([&] { return busy.running(); }, 20s));
  Future queued = c.submit("sleep", 0.01);
  EXPECT_TRUE(queued.cancel());
  EXPECT_TRUE(queued.cancelled());
  EXPECT_TRUE(queued.cancel());
  EXPECT_FALSE(busy.cancel());
  EXPECT_THROW(queued.result<double>(), CancelledError);
  EXPECT_DOUBLE_EQ(busy.result<double>(20s), 1.0);
  EXPECT_FALSE(busy.cancel());
  EXPECT_FALSE(queued.running());
}

TEST(RealDaemonTest, WaitInThreeModes) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(3);
  Client c = d.client();
  std::vector<Future> fs{c.submit("sleep", 0.6), c.submit("sleep", 0.05), c.submit("sleep", 0.6)};
  auto first = wait(fs, 20s, ReturnWhen::FirstCompleted);
  ASSERT_EQ(first.done.size(), 1u);
  EXPECT_EQ(first.done[0], fs[1]);
  EXPECT_EQ(first.not_done.size(), 2u);

  std::vector<Future> gs{c.submit("sleep", 3.0), c.submit("fail", std::string("x")), c.submit("sleep", 0.05)};
  auto t0 = Clock::now();
  auto exc = wait(gs, 20s, ReturnWhen::FirstException);
  EXPECT_LT(Clock::now() - t0, 2500ms) << "returns on the error, not after the 3 s task";
  bool saw_error = false;
  for (auto& f : exc.done) saw_error |= f == gs[1];
  EXPECT_TRUE(saw_error);
  EXPECT_FALSE(exc.not_done.empty());

  auto all = wait(fs, 20s, ReturnWhen::AllCompleted);
  EXPECT_EQ(all.done.size(), 3u);
  EXPECT_TRUE(all.not_done.empty());
  auto none = wait({gs[0]}, 10ms);
  EXPECT_EQ(none.not_done.size(), 1u);
}

TEST(RealDaemonTest, TwoClientsEachGetTheirOwnResults) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(2);
  Client c1 = d.client(), c2 = d.client();
  EXPECT_NE(c1.client_id(), c2.client_id());
  std::vector<Future> f1, f2;
  for (int i = 0; i < 200; ++i) {
    f1.push_back(c1.submit("echo", i));
    f2.push_back(c2.submit("echo", 1000 + i));
  }
  ASSERT_TRUE(c1.wait_all(30s));
  ASSERT_TRUE(c2.wait_all(30s));
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(f1[i].result<int>(), i);
    EXPECT_EQ(f2[i].result<int>(), 1000 + i);
  }
  std::set<int> seen1, seen2;
  while (auto f = c1.poll(0ms)) seen1.insert(f->result<int>());
  while (auto f = c2.poll(0ms)) seen2.insert(f->result<int>());
  EXPECT_EQ(seen1.size(), 200u);
  EXPECT_EQ(seen2.size(), 200u);
  EXPECT_EQ(*seen1.rbegin(), 199);
  EXPECT_EQ(*seen2.begin(), 1000);
}

TEST(RealDaemonTest, TenThousandTasksThroughFourWorkers) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(4);
  Client c = d.client();
  std::vector<Future> fs;
  fs.reserve(10000);
  auto t0 = Clock::now();
  for (int i = 0; i < 10000; ++i) fs.push_back(c.submit("echo", i));
  std::set<int> results;
  for (Future& f : as_completed(fs, 60s)) results.insert(f.result<int>());
  auto took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(results.size(), 10000u);
  EXPECT_EQ(*results.begin(), 0);
  EXPECT_EQ(*results.rbegin(), 9999);
  std::printf("10000 echo tasks through 4 workers: %.3f s (%.0f tasks/s)\n", took, 10000 / took);
}

TEST(RealDaemonTest, TcpEndpoint) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(2, "tcp://127.0.0.1:" + std::to_string(free_tcp_port()));
  Client c = d.client();
  EXPECT_EQ(c.results_endpoint().rfind("tcp://127.0.0.1:", 0), 0u) << c.results_endpoint();
  EXPECT_EQ(c.submit("echo", std::string("over tcp")).result<std::string>(20s), "over tcp");
}

TEST(RealDaemonTest, DaemonDeathFailsPendingFutures) {
  SKIP_WITHOUT_DAEMON();
  TempDir dir;
  test::Process daemon({test::bin_path("zexecd"), "--endpoint", dir.ipc("d.sock"), "--workers", "1",
                        "--log-level", "off", "--heartbeat-ms", "50"});
  ClientOptions o;
  o.connect_timeout = 10s;
  Client c(dir.ipc("d.sock"), o);
  Future f = c.submit("sleep", 30.0);
  ASSERT_TRUE(wait_until([&] { return f.running(); }, 20s));
  daemon.kill(SIGKILL);
  ASSERT_TRUE(f.wait_done(20s)) << "no waiter hangs when the daemon dies";
  EXPECT_THROW(f.result<double>(), ConnectionError);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

TEST(RealDaemonTest, RetriesRerunTheTaskAndCrashesAreQuarantined) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(2);
  Client c = d.client();
  Future once = c.submit_with({.crash_retries = 1}, "crash");
  try {
    once.result<void>(60s);
    ADD_FAILURE() << "no exception";
  } catch (const WorkerCrashedError& e) {
    EXPECT_TRUE(ends_with(e.message(), "(attempt 2)")) << e.what();
  }
  // More crash retries than the daemon's --quarantine-after (3): quarantined on the 3rd crash.
  Future poison = c.submit_with({.crash_retries = 5}, "crash");
  try {
    poison.result<void>(60s);
    ADD_FAILURE() << "no exception";
  } catch (const QuarantinedError& e) {
    EXPECT_EQ(e.type(), "Quarantined");
    EXPECT_NE(e.message().find("3 times"), std::string::npos) << e.what();
  }
  auto t0 = Clock::now();
  Future flaky = c.submit_with({.retries = 2, .retry_backoff = 100ms}, "fail", std::string("boom"));
  try {
    flaky.result<void>(60s);
    ADD_FAILURE() << "no exception";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.type(), "std::runtime_error");
    EXPECT_TRUE(ends_with(e.message(), "(attempt 3)")) << e.what();
  }
  EXPECT_GE(Clock::now() - t0, 300ms) << "backoff 100 ms, then 200 ms";
  Future unknown = c.submit_with({.retries = 3}, "x");
  EXPECT_EQ(what_of([&] { unknown.result<void>(30s); }).find("(attempt"), std::string::npos)
      << "an unknown task is not retried";
  EXPECT_EQ(c.submit("echo", 7).result<int>(30s), 7) << "the pool recovers";
}

// A task run again sees which run it is (zexec::current_attempt(), from the tasks message's
// attempt): after raising (retries) and after its worker died under it (crash_retries).
TEST(RealDaemonTest, ARerunTaskSeesItsAttempt) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(2);
  Client c = d.client();
  EXPECT_EQ(c.submit("flaky", 1).result<int>(30s), 1) << "a first run is attempt 1";
  EXPECT_EQ(c.submit_with({.retries = 2}, "flaky", 3).result<int>(30s), 3);
  EXPECT_EQ(c.submit_with({.crash_retries = 1}, "crashy", 2).result<int>(60s), 2);
  try {
    c.submit_with({.retries = 1}, "flaky", 3).result<int>(30s);
    ADD_FAILURE() << "no exception";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.message(), "flaky: run 2 of 3 (attempt 2)") << e.what();
  }
}

TEST(RealDaemonTest, ForceCancelStopsARunningTask) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(1);
  ClientOptions o;
  o.cancel_timeout = 30s;  // the answer waits for the worker to exit (SIGKILL after 2 s at worst)
  Client c = d.client(o);
  Future f = c.submit("sleep", 30.0);
  ASSERT_TRUE(wait_until([&] { return f.running(); }, 20s));
  // Waiters of every kind, blocked on the running task.
  auto by_result = std::async(std::launch::async, [f] { return what_of([&] { f.result<double>(); }); });
  auto by_wait = std::async(std::launch::async, [f] { return wait({f}, 60s).done.size(); });
  auto by_as_completed = std::async(std::launch::async, [f] {
    std::size_t n = 0;
    for (Future& g : as_completed({f}, 60s)) n += g.cancelled();
    return n;
  });
  std::promise<bool> by_callback;
  f.add_done_callback([&](Future g) { by_callback.set_value(g.cancelled()); });
  EXPECT_FALSE(f.cancel()) << "a plain cancel leaves a running task alone";
  auto t0 = Clock::now();
  EXPECT_TRUE(f.cancel(true));
  EXPECT_LT(Clock::now() - t0, 20s) << "did not wait for the 30 s task";
  EXPECT_TRUE(f.cancelled());
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.running());
  EXPECT_THROW(f.result<double>(), CancelledError);
  ASSERT_EQ(by_result.wait_for(10s), std::future_status::ready);
  EXPECT_NE(by_result.get().find("was cancelled"), std::string::npos);
  ASSERT_EQ(by_wait.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(by_wait.get(), 1u);
  ASSERT_EQ(by_as_completed.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(by_as_completed.get(), 1u);
  auto cb = by_callback.get_future();
  ASSERT_EQ(cb.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(cb.get());
  EXPECT_TRUE(f.cancel(true)) << "already cancelled";
  EXPECT_EQ(c.unfinished(), 0u);
  EXPECT_EQ(c.submit("echo", 5).result<int>(30s), 5) << "a new worker runs the next task";
  Future done = c.submit("echo", 6);
  EXPECT_EQ(done.result<int>(30s), 6);
  EXPECT_FALSE(done.cancel(true)) << "a finished task cannot be cancelled";
}

TEST(RealDaemonTest, CancelAllForceStopsRunningToo) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(1);
  ClientOptions o;
  o.cancel_timeout = 30s;
  Client c = d.client(o);
  Future busy = c.submit("sleep", 30.0);
  std::vector<Future> queued;
  for (int i = 0; i < 3; ++i) queued.push_back(c.submit("sleep", 30.0));
  ASSERT_TRUE(wait_until([&] { return busy.running(); }, 20s));
  EXPECT_EQ(c.cancel_all(), 3u) << "without force the running one stays";
  EXPECT_FALSE(busy.done());
  EXPECT_EQ(c.cancel_all(true), 1u);
  EXPECT_TRUE(busy.cancelled());
  for (auto& q : queued) EXPECT_TRUE(q.cancelled());
  EXPECT_TRUE(c.wait_all(0ms));
  EXPECT_EQ(c.submit("echo", 1).result<int>(30s), 1);
}

TEST(RealDaemonTest, BackpressureKeepsUnderMaxPending) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(2, {}, {"--max-pending-per-client", "100"});
  Client c = d.client();
  ASSERT_EQ(c.max_pending(), 100u);
  std::vector<Future> fs;
  std::size_t most = 0;
  for (int i = 0; i < 1000; ++i) {
    fs.push_back(c.submit("noop"));
    most = std::max(most, c.unfinished());
  }
  EXPECT_LE(most, 100u);
  std::size_t ok = 0;
  for (Future& f : as_completed(fs, 60s)) {
    EXPECT_NO_THROW(f.result<void>()) << "the daemon never refused one (QueueFull)";
    ++ok;
  }
  EXPECT_EQ(ok, 1000u);
}

TEST(RealDaemonTest, SubmitThrowsQueueFullAtMaxPending) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(1, {}, {"--max-pending-per-client", "100"});
  ClientOptions o;
  o.submit_timeout = 200ms;
  o.cancel_timeout = 30s;
  Client c = d.client(o);
  std::vector<Future> fs;
  for (int i = 0; i < 100; ++i) fs.push_back(c.submit("sleep", 5.0));
  std::string text;
  try {
    c.submit("sleep", 5.0);
    ADD_FAILURE() << "the 101st submit was accepted";
  } catch (const QueueFullError& e) {
    text = e.what();
  }
  EXPECT_NE(text.find("100 unfinished tasks"), std::string::npos) << text;
  EXPECT_NE(text.find("0.2 s"), std::string::npos) << text;
  EXPECT_EQ(c.unfinished(), 100u);
  EXPECT_EQ(c.cancel_all(true), 100u);
  EXPECT_EQ(c.submit("echo", 1).result<int>(30s), 1) << "room again";
}

TEST(RealDaemonTest, PollNeverReturnsADroppedFuture) {
  SKIP_WITHOUT_DAEMON();
  RealDaemon d(2);
  Client c = d.client();
  int leaked = 0;
  for (int i = 0; i < 200; ++i) {
    { Future dropped = c.submit("noop"); }
    if (c.poll(100ms)) ++leaked;
  }
  EXPECT_EQ(leaked, 0);
  ASSERT_TRUE(c.wait_all(30s));
  Future kept = c.submit("noop");
  auto got = c.poll(30s);
  ASSERT_TRUE(got.has_value()) << "a held future is returned";
  EXPECT_EQ(*got, kept);
}

// ---- embedded Executor ----------------------------------------------------------------------

ExecutorOptions built_executor(int workers) {
  ExecutorOptions o;
  o.workers = workers;
  o.daemon_path = test::bin_path("zexecd");  // this build's daemon, not an installed one
  return o;
}

TEST(ExecutorTest, RunsTasksAndShutsDown) {
  SKIP_WITHOUT_DAEMON();
  int pid = -1;
  Future f;
  {
    Executor ex{built_executor(3)};
    pid = ex.daemon_pid();
    EXPECT_GT(pid, 0);
    EXPECT_EQ(ex.client().workers(), 3u);
    std::vector<Future> fs{ex.submit("sleep", 0.3), ex.submit("sleep", 0.1), ex.submit("sleep", 0.2)};
    std::vector<double> order;
    for (Future& g : as_completed(fs, 20s)) order.push_back(g.result<double>());
    EXPECT_EQ(order, (std::vector<double>{0.1, 0.2, 0.3}));
    f = ex.submit("sleep", 0.3);
  }  // ~Executor: waits for f, stops the daemon
  EXPECT_TRUE(f.done());
  EXPECT_DOUBLE_EQ(f.result<double>(), 0.3);
  EXPECT_NE(::kill(pid, 0), 0) << "the daemon is gone";
}

// The private daemon lives as long as the program, not as long as the thread that created the
// Executor (a parent-death signal would be tied to that thread).
TEST(ExecutorTest, OutlivesTheThreadThatCreatedIt) {
  SKIP_WITHOUT_DAEMON();
  std::unique_ptr<Executor> ex;
  std::thread([&] { ex = std::make_unique<Executor>(built_executor(1)); }).join();
  EXPECT_EQ(ex->submit("echo", 7).result<int>(20s), 7);
  int pid = ex->daemon_pid();
  ex.reset();
  EXPECT_NE(::kill(pid, 0), 0) << "the daemon is gone after the Executor";
}

// --parent-pid: an embedded daemon whose program died stops by itself.
TEST(ExecutorTest, DaemonStopsWhenItsParentIsGone) {
  SKIP_WITHOUT_DAEMON();
  TempDir dir;
  std::string pidfile = dir.path() + "/pid", stopfile = dir.path() + "/stop";
  // A shell plays the program: it starts zexecd as its child, then exits when told to.
  std::string script = "\"$0\" --endpoint " + dir.ipc("d.sock") +
                       " --workers 1 --log-level warn --parent-pid $$ & echo $! > " + pidfile +
                       "; while [ ! -e " + stopfile + " ]; do sleep 0.02; done";
  test::Process sh({"/bin/sh", "-c", script, test::bin_path("zexecd")});
  pid_t daemon = 0;
  ASSERT_TRUE(wait_until([&] {
    std::ifstream f(pidfile);
    return static_cast<bool>(f >> daemon);
  }));
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir.path() + "/d.sock"); }));
  std::ofstream(stopfile) << "";
  ASSERT_TRUE(sh.wait_exit(10s));
  auto alive = [&] {  // a zombie waiting for its new parent to reap it counts as gone
    std::ifstream stat("/proc/" + std::to_string(daemon) + "/stat");
    std::string pid, comm, state;
    return static_cast<bool>(stat >> pid >> comm >> state) && state != "Z";
  };
  EXPECT_TRUE(wait_until([&] { return !alive(); }, 20s)) << "zexecd outlived its parent";
}

TEST(ExecutorTest, ShutdownCancelFuturesAndSubmitAfterShutdown) {
  SKIP_WITHOUT_DAEMON();
  Executor ex{built_executor(1)};
  Future busy = ex.submit("sleep", 0.5);
  std::vector<Future> queued;
  for (int i = 0; i < 5; ++i) queued.push_back(ex.submit("sleep", 0.5));
  ASSERT_TRUE(wait_until([&] { return busy.running(); }, 20s));
  ex.shutdown(true, true);
  EXPECT_DOUBLE_EQ(busy.result<double>(), 0.5);
  for (auto& q : queued) EXPECT_TRUE(q.cancelled());
  EXPECT_THROW(ex.submit("echo", 1), Error);
  ex.shutdown();  // idempotent
}

TEST(ExecutorTest, IntConstructorFindsTheDaemonThroughTheEnvironment) {
  SKIP_WITHOUT_DAEMON();
  ::setenv("ZEXEC_DAEMON", test::bin_path("zexecd").c_str(), 1);
  Executor ex{2};
  EXPECT_EQ(ex.submit("echo", 41).result<int>(20s), 41);
  ::unsetenv("ZEXEC_DAEMON");
}

// The daemon beside the running program wins over the configured bindir and the build tree: this
// test copies itself, zexecd and zexec-worker into a fresh directory and runs the copy, which
// reports which zexecd its Executor started.
TEST(ExecutorTest, FindsTheDaemonBesideTheProgram) {
  SKIP_WITHOUT_DAEMON();
  if (const char* out = std::getenv("ZEXEC_TEST_REPORT_DAEMON")) {  // the copy
    Executor ex{1};
    EXPECT_EQ(ex.submit("echo", 3).result<int>(20s), 3);
    std::error_code ec;
    auto exe = std::filesystem::read_symlink("/proc/" + std::to_string(ex.daemon_pid()) + "/exe", ec);
    std::FILE* f = std::fopen(out, "w");
    ASSERT_NE(f, nullptr);
    std::fprintf(f, "%s", exe.string().c_str());
    std::fclose(f);
    return;
  }
  TempDir dir;
  namespace fs = std::filesystem;
  fs::copy_file("/proc/self/exe", dir.path() + "/client_test");
  fs::permissions(dir.path() + "/client_test", fs::perms::owner_all);
  for (const char* name : {"zexecd", "zexec-worker"})
    fs::copy_file(test::bin_path(name), dir.path() + "/" + name);
  std::string report = dir.path() + "/daemon-path";
  test::Process copy(
      {dir.path() + "/client_test", "--gtest_filter=ExecutorTest.FindsTheDaemonBesideTheProgram"},
      {"ZEXEC_TEST_REPORT_DAEMON=" + report, "ZEXEC_DAEMON="}, dir.path() + "/out");
  ASSERT_TRUE(copy.wait_exit(60s));
  EXPECT_TRUE(copy.exited_ok()) << "status " << copy.status();
  std::FILE* f = std::fopen(report.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[4096] = {};
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  EXPECT_EQ(std::string(buf, n), dir.path() + "/zexecd");
}

TEST(ExecutorTest, DaemonThatCannotStartFailsFast) {
  SKIP_WITHOUT_DAEMON();
  ExecutorOptions o = built_executor(1);
  o.daemon_args = {"--no-such-flag"};
  auto t0 = Clock::now();
  std::string text = what_of([&] { Executor ex{o}; });
  EXPECT_LT(Clock::now() - t0, 5s) << text;
  EXPECT_NE(text.find("before accepting connections"), std::string::npos) << text;
  o.daemon_path = "/nonexistent/zexecd";
  EXPECT_THROW(Executor{o}, Error);
}

}  // namespace
}  // namespace zexec
