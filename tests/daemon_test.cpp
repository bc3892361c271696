// zexecd end to end at the wire level: a real daemon, real zexec-worker processes, and test
// clients that speak docs/PROTOCOL.md over raw ZeroMQ sockets (no client library), so the
// daemon's own behaviour is what is tested: routing, bad input, stealing, crashes, shutdown.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "daemon_harness.hpp"

namespace proto = zexec::proto;
using namespace zexec::test;
using namespace std::chrono_literals;

namespace {

class DaemonTest : public ::testing::Test {
 protected:
  zmq::context_t ctx_;
};

std::string error_code_of(const std::optional<proto::Message>& m) {
  if (!m || !std::holds_alternative<proto::Error>(*m)) return "<no error>";
  return std::get<proto::Error>(*m).code + ": " + std::get<proto::Error>(*m).message;
}

}  // namespace

TEST_F(DaemonTest, RunsTasksAndReportsErrors) {
  Daemon d(2);
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "echo", args(std::string("hello")));
  c.submit(2, "sleep", args(0.01));
  c.submit(3, "fail", args(std::string("boom")));
  c.submit(4, "no_such_task", args());
  c.submit(5, "sleep", args(std::string("not a number")));
  ASSERT_TRUE(c.wait_finals(5));
  EXPECT_EQ(value_of<std::string>(c.finals[1]), "hello");
  EXPECT_DOUBLE_EQ(value_of<double>(c.finals[2]), 0.01);
  EXPECT_EQ(c.finals[3].kind, proto::Outcome::error);
  EXPECT_EQ(c.finals[3].error_type, "std::runtime_error");
  EXPECT_EQ(c.finals[3].error_message, "boom");
  EXPECT_EQ(c.finals[4].error_type, "UnknownTask");
  EXPECT_EQ(c.finals[4].error_message.rfind("unknown task 'no_such_task': no worker runs it (default: ", 0),
            0u)
      << c.finals[4].error_message;
  EXPECT_EQ(c.finals[5].error_type, "BadArguments");
}

TEST_F(DaemonTest, WelcomeSaysTheLimitsInForce) {
  Daemon d(2, {},
           {"--max-unacked-updates", "17", "--heartbeat-ms", "150", "--max-pending-per-client", "999"});
  RawClient c(ctx_, d.endpoint());
  EXPECT_EQ(c.welcome().workers, 2u);
  EXPECT_EQ(c.welcome().heartbeat_ms, 150u);
  EXPECT_EQ(c.welcome().max_pending, 999u);
  EXPECT_EQ(c.welcome().max_unacked_updates, 17u);
  EXPECT_EQ(c.welcome().client_timeout_ms, 750u) << "client_timeout_ms defaults to 5 heartbeats";
}

TEST_F(DaemonTest, BadInputGetsAClearErrorAndTheDaemonGoesOn) {
  Daemon d(1);
  zmq::socket_t raw(ctx_, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect(d.endpoint());
  auto ask = [&](const std::string& frame) {
    raw.send(zmq::buffer(frame), zmq::send_flags::none);
    zmq::pollitem_t item{raw.handle(), 0, ZMQ_POLLIN, 0};
    for (;;) {
      if (zmq::poll(&item, 1, 10s) == 0) return std::string("<no answer>");
      zmq::message_t msg;
      (void)raw.recv(msg);
      auto m = proto::decode(msg.to_string_view());
      if (m && std::holds_alternative<proto::Heartbeat>(*m.message)) continue;
      return error_code_of(m.message);
    }
  };
  EXPECT_EQ(ask("garbage!"), "bad_message: 7 trailing bytes after the message");
  EXPECT_EQ(ask(""), "bad_message: empty frame");
  EXPECT_EQ(ask(args(2, 1)), "bad_version: unsupported protocol version 2 (this peer speaks 1)");
  EXPECT_EQ(
      ask(proto::encode(proto::Submit{{{1, "echo", args(1), 0}}})),
      "unknown_client: send hello before submit (or the daemon forgot this client after it went silent)");
  EXPECT_EQ(ask(proto::encode(proto::WorkerRevoked{1, {}})),
            "unknown_client: send hello before worker_revoked "
            "(or the daemon forgot this client after it went silent)");
  // Two frames in one message.
  raw.send(zmq::buffer(std::string("a")), zmq::send_flags::sndmore);
  EXPECT_EQ(ask("b"), "bad_message: expected 1 frame per message, got 2");

  // A registered client sending a bad task gets told which field was wrong, and still works.
  RawClient c(ctx_, d.endpoint());
  c.send_raw(args(1, 3, std::vector<std::vector<int>>{{1, 2, 3}}));
  EXPECT_EQ(error_code_of(c.recv_control(10s)), "bad_message: task name: expected str, got int");
  c.send(proto::Tasks{});
  EXPECT_EQ(error_code_of(c.recv_control(10s)), "bad_message: a client may not send tasks");
  // A duplicate id in flight is refused on the control socket; the first task is unaffected.
  c.send(proto::Submit{{{7, "echo", args(7), 0}, {7, "echo", args(8), 0}}});
  EXPECT_EQ(error_code_of(c.recv_control(10s)),
            "duplicate_task_id: task id 7 is already in flight; this submit of it was refused");
  ASSERT_TRUE(c.wait_finals(1));
  EXPECT_EQ(value_of<int>(c.finals[7]), 7);
  EXPECT_FALSE(c.collect([&] { return c.finals.size() > 1; }, 300ms));
  EXPECT_TRUE(d.process().running());
}

TEST_F(DaemonTest, EachClientGetsExactlyItsOwnResults) {
  Daemon d(2);
  RawClient a(ctx_, d.endpoint()), b(ctx_, d.endpoint());
  // The same task ids from both: routing must be by client, not by id.
  for (int i = 1; i <= 200; ++i) {
    a.submit(i, "echo", args(std::string("a") + std::to_string(i)));
    b.submit(i, "echo", args(std::string("b") + std::to_string(i)));
  }
  ASSERT_TRUE(a.wait_finals(200));
  ASSERT_TRUE(b.wait_finals(200));
  for (int i = 1; i <= 200; ++i) {
    EXPECT_EQ(value_of<std::string>(a.finals[i]), "a" + std::to_string(i));
    EXPECT_EQ(value_of<std::string>(b.finals[i]), "b" + std::to_string(i));
  }
  // Nothing extra arrives for either.
  EXPECT_FALSE(a.collect([&] { return a.finals.size() > 200; }, 300ms));
  EXPECT_EQ(a.finals.size(), 200u);
}

TEST_F(DaemonTest, CompletionOrderFollowsDuration) {
  Daemon d(4);
  RawClient c(ctx_, d.endpoint());
  std::vector<double> sleeps = {0.4, 0.1, 0.3, 0.2};
  for (std::size_t i = 0; i < sleeps.size(); ++i) c.submit(i + 1, "sleep", args(sleeps[i]));
  ASSERT_TRUE(c.wait_finals(4));
  EXPECT_EQ(c.order, (std::vector<std::uint64_t>{2, 4, 3, 1}));
}

TEST_F(DaemonTest, LongTaskDoesNotHoldShortOnesHostage) {
  Daemon d(2);
  RawClient c(ctx_, d.endpoint());
  // Warm up: once tiny tasks were seen the prefetch window is deep, so the short tasks below
  // are first handed out behind the long one, and only stealing can rescue them.
  for (int i = 100; i < 200; ++i) c.submit(i, "noop", args());
  ASSERT_TRUE(c.wait_finals(100));
  c.finals.clear();
  c.order.clear();
  c.submit(1, "sleep", args(3.0));
  for (int i = 2; i <= 21; ++i) c.submit(i, "sleep", args(0.01));
  // All 20 short tasks finish while the long one still runs, even those first prefetched
  // behind it: the idle worker takes them back.
  ASSERT_TRUE(c.collect([&] { return c.finals.size() >= 20 || c.finals.count(1); }, 10s));
  EXPECT_FALSE(c.finals.count(1)) << "a short task waited for the long one";
  EXPECT_TRUE(c.started.count(1));
  ASSERT_TRUE(c.wait_finals(21));
  EXPECT_EQ(c.order.back(), 1u);
}

TEST_F(DaemonTest, CancelQueuedPrefetchedAndRunningTasks) {
  Daemon d(1, {}, {"--max-prefetch", "4"});
  RawClient c(ctx_, d.endpoint());
  for (int i = 100; i < 110; ++i) c.submit(i, "noop", args());  // learn that tasks are short: deep window
  ASSERT_TRUE(c.wait_finals(10));
  c.finals.clear();
  c.send(proto::Submit{{{1, "sleep", args(1.0), 0}}});
  proto::Submit rest;
  for (std::uint64_t i = 2; i <= 10; ++i) rest.tasks.push_back({i, "echo", args(i), 0});
  c.send(rest);
  ASSERT_TRUE(c.collect([&] { return c.started.count(1) > 0; }, 10s));
  // Task 1 runs; a few more sit prefetched in the worker, the rest queued in the daemon.
  c.send(proto::Cancel{77, {1, 2, 10, 999}});
  auto reply = c.recv_control(10s);
  ASSERT_TRUE(reply && std::holds_alternative<proto::CancelReply>(*reply));
  auto& r = std::get<proto::CancelReply>(*reply);
  EXPECT_EQ(r.request_id, 77u);
  std::map<std::uint64_t, proto::CancelOutcome> got(r.outcomes.begin(), r.outcomes.end());
  EXPECT_EQ(got[1], proto::CancelOutcome::running);
  EXPECT_EQ(got[2], proto::CancelOutcome::cancelled);   // prefetched at the worker: revoked
  EXPECT_EQ(got[10], proto::CancelOutcome::cancelled);  // still queued in the daemon
  EXPECT_EQ(got[999], proto::CancelOutcome::finished);  // never existed
  ASSERT_TRUE(c.wait_finals(8));                        // 1 and 3..9; never 2 or 10
  EXPECT_FALSE(c.collect([&] { return c.finals.size() > 8; }, 300ms));
  EXPECT_FALSE(c.finals.count(2));
  EXPECT_FALSE(c.finals.count(10));
  EXPECT_EQ(c.finals[1].kind, proto::Outcome::ok);
}

TEST_F(DaemonTest, WorkerCrashFailsOnlyItsTaskAndThePoolRecovers) {
  Daemon d(2);
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "crash", args());
  for (int i = 2; i <= 50; ++i) c.submit(i, "echo", args(i));
  ASSERT_TRUE(c.wait_finals(50));
  EXPECT_EQ(c.finals[1].error_type, "WorkerCrashed");
  EXPECT_NE(c.finals[1].error_message.find("killed by signal 6 (SIGABRT)"), std::string::npos)
      << c.finals[1].error_message;
  for (int i = 2; i <= 50; ++i) EXPECT_EQ(value_of<int>(c.finals[i]), i);
  // The replacement worker serves new tasks.
  for (int i = 51; i <= 60; ++i) c.submit(i, "echo", args(i));
  ASSERT_TRUE(c.wait_finals(60));
}

TEST_F(DaemonTest, TenThousandTasksOverTcpNoneLost) {
  Daemon d(2, "tcp://127.0.0.1:*");
  ASSERT_EQ(d.endpoint().rfind("tcp://127.0.0.1:", 0), 0u) << d.endpoint();
  RawClient c(ctx_, d.endpoint());
  for (int batch = 0; batch < 10; ++batch) {
    proto::Submit s;
    for (int i = 0; i < 1000; ++i) {
      std::uint64_t id = batch * 1000 + i + 1;
      s.tasks.push_back({id, "echo", args(id), 0});
    }
    c.send(s);
  }
  ASSERT_TRUE(c.wait_finals(10000, 60s));
  for (std::uint64_t id = 1; id <= 10000; ++id) ASSERT_EQ(value_of<std::uint64_t>(c.finals[id]), id);
}

TEST_F(DaemonTest, SigtermLetsRunningTasksFinishThenExitsZero) {
  Daemon d(1);
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "sleep", args(0.5));
  c.submit(2, "echo", args(2));  // prefetched or queued: never starts once stopping
  ASSERT_TRUE(c.collect([&] { return c.started.count(1) > 0; }, 10s));
  d.process().kill(SIGTERM);
  ASSERT_TRUE(c.wait_finals(2, 15s));
  EXPECT_EQ(c.finals[1].kind, proto::Outcome::ok);
  EXPECT_EQ(c.finals[2].kind, proto::Outcome::cancelled);
  ASSERT_TRUE(d.process().wait_exit(15s));
  EXPECT_TRUE(d.process().exited_ok()) << d.process().status();
}

TEST_F(DaemonTest, HardTimeoutKillsTheWorkerAndFailsOnlyThatTask) {
  Daemon d(1);
  RawClient c(ctx_, d.endpoint());
  auto t0 = std::chrono::steady_clock::now();
  c.send(proto::Submit{{{1, "sleep", args(30.0), 200}, {2, "echo", args(2), 0}}});
  ASSERT_TRUE(c.wait_finals(2, 20s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);  // not the 30 s sleep
  EXPECT_EQ(c.finals[1].error_type, "TaskTimeout");
  EXPECT_NE(c.finals[1].error_message.find("ran past its 200 ms timeout"), std::string::npos)
      << c.finals[1].error_message;
  EXPECT_EQ(value_of<int>(c.finals[2]), 2);  // queued behind it, run by the replacement worker
}

TEST_F(DaemonTest, TheDaemonsDefaultTimeoutAppliesToTasksWithoutTheirOwn) {
  Daemon d(1, {}, {"--task-timeout-ms", "200"});
  RawClient c(ctx_, d.endpoint());
  c.send(proto::Submit{{{1, "sleep", args(30.0), 0}, {2, "sleep", args(0.4), 5000}}});
  ASSERT_TRUE(c.wait_finals(2, 20s));
  EXPECT_EQ(c.finals[1].error_type, "TaskTimeout");
  EXPECT_NE(c.finals[1].error_message.find("ran past its 200 ms timeout"), std::string::npos);
  EXPECT_EQ(c.finals[2].kind, proto::Outcome::ok);  // its own, longer limit wins
}

// README: `log_level = "debug"` shows per-task lines, CLIENT:TASK as status and `zexec cancel` say.
TEST_F(DaemonTest, DebugLogsOneLinePerTask) {
  TempDir dir;
  std::string err = dir.path() + "/stderr", endpoint = dir.ipc("d.sock");
  Process daemon({bin_path("zexecd"), "--endpoint", endpoint, "--workers", "1", "--log-level", "debug"}, {},
                 {}, err);
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(endpoint.substr(6)); }));
  std::uint64_t client_id = 0;
  {
    RawClient c(ctx_, endpoint);
    client_id = c.welcome().client_id;
    c.submit(41, "echo", args(1));
    c.submit(42, "fail", args(std::string("boom")));
    ASSERT_TRUE(c.wait_finals(2));
  }
  daemon.kill(SIGTERM);
  ASSERT_TRUE(daemon.wait_exit(15s));
  std::string log = read_file(err), id = std::to_string(client_id);
  EXPECT_NE(log.find("task " + id + ":41 'echo' succeeded"), std::string::npos) << log;
  EXPECT_NE(log.find("task " + id + ":42 'fail' failed: std::runtime_error: boom"), std::string::npos);
}
