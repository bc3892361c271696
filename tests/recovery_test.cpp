// What the daemon does about failures it is asked to handle: retries, quarantine, forced
// cancel, cancel races, oversized payloads, clients that vanish, garbage, and shutdown.
// Real daemon, real workers, raw protocol clients (tests/daemon_harness.hpp).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "daemon_harness.hpp"

namespace proto = zexec::proto;
using namespace zexec::test;
using namespace std::chrono_literals;

namespace {

class RecoveryTest : public ::testing::Test {
 protected:
  zmq::context_t ctx_;
};

proto::TaskSpec task(std::uint64_t id, const std::string& name, std::string a) {
  return {id, name, std::move(a)};
}

std::map<std::string, msgpack::object> as_map(const msgpack::object& o) {
  return o.as<std::map<std::string, msgpack::object>>();
}

proto::CancelReply cancel_reply(RawClient& c) {
  auto m = c.recv_control(15s);
  if (!m || !std::holds_alternative<proto::CancelReply>(*m)) throw std::runtime_error("no cancel_reply");
  return std::get<proto::CancelReply>(*m);
}

}  // namespace

TEST_F(RecoveryTest, RetriesAreOptInAndCountedSeparately) {
  Daemon d(2);
  RawClient c(ctx_, d.endpoint());
  auto crash_once = task(1, "crash", args());
  crash_once.crash_retries = 1;
  auto fail_twice = task(2, "fail", args(std::string("nope")));
  fail_twice.retries = 2;
  fail_twice.retry_backoff_ms = 10;
  auto fail_no_retry = task(3, "fail", args(std::string("once")));
  fail_no_retry.crash_retries = 5;  // crash retries do not apply to an exception
  auto unknown = task(4, "no_such_task", args());
  unknown.retries = 3;  // a retry cannot fix a missing task: not retried
  // The crasher runs alone: a task that finished just before a crash on the same worker may not
  // have had its result leave the worker, and would then be the one blamed (see PROTOCOL.md §4).
  c.send(proto::Submit{{crash_once}});
  ASSERT_TRUE(c.wait_finals(1, 30s));
  c.send(proto::Submit{{fail_twice, fail_no_retry, unknown}});
  ASSERT_TRUE(c.wait_finals(4, 30s));
  EXPECT_EQ(c.finals[1].error_type, "WorkerCrashed");
  EXPECT_NE(c.finals[1].error_message.find("(attempt 2)"), std::string::npos) << c.finals[1].error_message;
  EXPECT_EQ(c.finals[2].error_message, "nope (attempt 3)");
  EXPECT_EQ(c.finals[3].error_message, "once");
  EXPECT_EQ(c.finals[4].error_message.rfind("unknown task 'no_such_task': no worker runs it (default: ", 0),
            0u)
      << c.finals[4].error_message;
  EXPECT_EQ(d.total(ctx_, "retried"), 3u);  // 1 crash retry + 2 exception retries
}

TEST_F(RecoveryTest, APoisonTaskIsQuarantinedNotCrashLooped) {
  Daemon d(2, {}, {"--quarantine-after", "3"});
  RawClient c(ctx_, d.endpoint());
  auto poison = task(1, "crash", args());
  poison.crash_retries = 100;  // asks for far more than the daemon allows
  c.send(proto::Submit{{poison}});
  ASSERT_TRUE(c.wait_finals(1, 30s));
  EXPECT_EQ(c.finals[1].error_type, "Quarantined");
  EXPECT_NE(c.finals[1].error_message.find("crashed its worker 3 times"), std::string::npos)
      << c.finals[1].error_message;
  EXPECT_EQ(d.total(ctx_, "quarantined"), 1u);
  c.submit(2, "echo", args(2));  // the pool is fine
  ASSERT_TRUE(c.wait_finals(2));
  EXPECT_EQ(value_of<int>(c.finals[2]), 2);
}

TEST_F(RecoveryTest, ForcedCancelStopsARunningTaskAndThePoolGoesOn) {
  Daemon d(1, {}, {"--cancel-grace-ms", "500"});
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "sleep", args(30.0));
  ASSERT_TRUE(c.collect([&] { return c.started.count(1) > 0; }, 10s));
  c.send(proto::Cancel{5, {1}, false});
  EXPECT_EQ(cancel_reply(c).outcomes.at(0).second, proto::CancelOutcome::running);  // a plain cancel can't
  c.send(proto::Cancel{6, {1}, true});
  auto r = cancel_reply(c);
  EXPECT_EQ(r.request_id, 6u);
  EXPECT_EQ(r.outcomes.at(0).second, proto::CancelOutcome::cancelled);
  c.submit(2, "echo", args(2));
  ASSERT_TRUE(c.wait_finals(1, 20s));
  EXPECT_EQ(value_of<int>(c.finals[2]), 2);
  EXPECT_FALSE(c.finals.count(1));  // a cancelled task gets no event
  EXPECT_EQ(d.total(ctx_, "cancelled"), 1u);
  EXPECT_EQ(d.total(ctx_, "crashed"), 0u);
}

TEST_F(RecoveryTest, EveryCancelRequestIsAnsweredEvenForRepeatedIds) {
  Daemon d(1, {}, {"--max-prefetch", "8"});
  RawClient c(ctx_, d.endpoint());
  for (int i = 100; i < 110; ++i) c.submit(i, "noop", args());  // learn that tasks are short
  ASSERT_TRUE(c.wait_finals(10));
  c.finals.clear();
  c.send(proto::Submit{{task(1, "sleep", args(1.0)), task(2, "echo", args(2)), task(3, "echo", args(3))}});
  ASSERT_TRUE(c.collect([&] { return c.started.count(1) > 0; }, 10s));
  // The same id twice in one request, and the same task in two requests in flight at once.
  c.send(proto::Cancel{7, {2, 2, 3}, false});
  c.send(proto::Cancel{8, {3}, false});
  std::map<std::uint64_t, proto::CancelReply> replies;
  for (int i = 0; i < 2; ++i) {
    auto r = cancel_reply(c);
    replies[r.request_id] = r;
  }
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[7].outcomes.size(), 2u);  // 2 once, 3 once
  for (auto& [id, outcome] : replies[7].outcomes) EXPECT_EQ(outcome, proto::CancelOutcome::cancelled);
  EXPECT_EQ(replies[8].outcomes.at(0).second, proto::CancelOutcome::cancelled);
  ASSERT_TRUE(c.wait_finals(1, 10s));
  EXPECT_FALSE(c.collect([&] { return c.finals.size() > 1; }, 300ms));
}

// The race the test above can hit either way, taken out: tasks 2 and 3 wait in the daemon's queue
// (the only worker holds one task, a long one), so request 7 cancels them at once and the daemon
// forgets them before request 8 arrives. Request 8 still hears the truth: cancelled.
TEST_F(RecoveryTest, ACancelOfATaskAlreadyCancelledAnswersCancelled) {
  Daemon d(1, {}, {"--max-prefetch", "1"});
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "sleep", args(30.0));
  ASSERT_TRUE(c.collect([&] { return c.started.count(1) > 0; }, 10s));
  c.send(proto::Submit{{task(2, "echo", args(2)), task(3, "echo", args(3)), task(4, "echo", args(4))}});
  c.send(proto::Cancel{7, {2, 3}, false});
  auto r7 = cancel_reply(c);
  ASSERT_EQ(r7.request_id, 7u);
  for (auto& [id, outcome] : r7.outcomes) EXPECT_EQ(outcome, proto::CancelOutcome::cancelled) << id;
  c.send(proto::Cancel{8, {3, 2, 99}, false});
  auto r8 = cancel_reply(c);
  ASSERT_EQ(r8.request_id, 8u);
  ASSERT_EQ(r8.outcomes.size(), 3u);
  EXPECT_EQ(r8.outcomes[0].second, proto::CancelOutcome::cancelled);
  EXPECT_EQ(r8.outcomes[1].second, proto::CancelOutcome::cancelled);
  EXPECT_EQ(r8.outcomes[2].second, proto::CancelOutcome::finished) << "an id the daemon never had";
  // Stop the long task; task 4 then runs and finishes, and a cancel of it says finished.
  c.send(proto::Cancel{9, {1}, true});
  EXPECT_EQ(cancel_reply(c).outcomes.at(0).second, proto::CancelOutcome::cancelled);
  ASSERT_TRUE(c.wait_finals(1, 15s));
  EXPECT_EQ(value_of<int>(c.finals.at(4)), 4);
  c.send(proto::Cancel{10, {4}, false});
  EXPECT_EQ(cancel_reply(c).outcomes.at(0).second, proto::CancelOutcome::finished);
  // An id used again for a new task is that task's, not the cancelled one's: once it finished,
  // a cancel of it says finished.
  c.submit(3, "echo", args(33));
  ASSERT_TRUE(c.collect([&] { return c.finals.count(3) > 0; }, 15s));
  EXPECT_EQ(value_of<int>(c.finals.at(3)), 33);
  c.send(proto::Cancel{11, {3}, false});
  EXPECT_EQ(cancel_reply(c).outcomes.at(0).second, proto::CancelOutcome::finished);
}

TEST_F(RecoveryTest, PayloadsNearTheFrameLimitAreNotLost) {
  Daemon d(1);
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "sleep", args(0.3));
  // Three 20 MiB arguments: a batch of all three would pass the 64 MiB frame limit.
  std::string big(20 << 20, 'x');
  c.send(proto::Submit{{task(2, "echo", args(big))}});
  c.send(proto::Submit{{task(3, "echo", args(big))}});
  c.send(proto::Submit{{task(4, "echo", args(big))}});
  ASSERT_TRUE(c.wait_finals(4, 60s));
  for (int i = 2; i <= 4; ++i) EXPECT_EQ(value_of<std::string>(c.finals[i]).size(), big.size());
}

TEST_F(RecoveryTest, AVanishedClientIsForgottenWithItsTasks) {
  Daemon d(1, {}, {"--heartbeat-ms", "100"});
  {
    RawClient gone(ctx_, d.endpoint());
    for (int i = 1; i <= 500; ++i) gone.submit(i, "sleep", args(0.05));
    // Leaves without bye and never heartbeats again: as if killed.
  }
  ASSERT_TRUE(wait_until(
      [&] {
        auto oh = d.status(ctx_);
        auto st = as_map(oh.get());
        return st.at("clients").via.array.size == 0 && st.at("queued").as<std::uint64_t>() == 0;
      },
      10s));
  EXPECT_EQ(d.total(ctx_, "clients_dropped"), 1u);
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "echo", args(1));
  ASSERT_TRUE(c.wait_finals(1, 10s));
}

TEST_F(RecoveryTest, GarbageOnTheTcpPortIsSurvived) {
  Daemon d(1, "tcp://127.0.0.1:*");
  int port = std::stoi(d.endpoint().substr(d.endpoint().rfind(':') + 1));
  for (int i = 0; i < 20; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    std::string junk = "GET / HTTP/1.1\r\n\r\n" + std::string(1000, static_cast<char>(i * 37));
    (void)!::write(fd, junk.data(), junk.size());
    ::close(fd);
  }
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "echo", args(1));
  ASSERT_TRUE(c.wait_finals(1));
  EXPECT_TRUE(d.process().running());
}

TEST_F(RecoveryTest, ASecondSigtermStopsAtOnce) {
  Daemon d(1, {}, {"--shutdown-grace-ms", "60000"});
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "sleep", args(30.0));
  ASSERT_TRUE(c.collect([&] { return c.started.count(1) > 0; }, 10s));
  d.process().kill(SIGTERM);
  ASSERT_TRUE(wait_until([&] {
    auto oh = d.status(ctx_);
    return as_map(oh.get()).at("stopping").as<bool>();
  }));
  d.process().kill(SIGTERM);
  ASSERT_TRUE(d.process().wait_exit(10s)) << "the second SIGTERM did not stop the daemon";
  EXPECT_TRUE(d.process().exited_ok());
}

TEST_F(RecoveryTest, OneClientFloodingDoesNotStarveAnother) {
  Daemon d(2);
  RawClient flood(ctx_, d.endpoint()), small(ctx_, d.endpoint());
  for (std::uint64_t first = 1; first <= 20000; first += 1000) {
    proto::Submit s;
    for (std::uint64_t id = first; id < first + 1000; ++id)
      s.tasks.push_back(task(id, "sleep", args(0.0005)));
    flood.send(s);
  }
  // Wait until the daemon holds the whole flood, then ask for a little.
  auto unfinished_of = [&](const RawClient& who) -> std::uint64_t {
    auto oh = d.status(ctx_);
    for (auto& c : as_map(oh.get()).at("clients").as<std::vector<std::map<std::string, msgpack::object>>>())
      if (c.at("id").as<std::uint64_t>() == who.welcome().client_id)  // ids start anywhere (§2)
        return c.at("unfinished").as<std::uint64_t>();
    return 0;
  };
  ASSERT_TRUE(wait_until([&] { return unfinished_of(flood) > 15000; }, 10s));
  for (int i = 1; i <= 10; ++i) small.submit(i, "noop", args());
  ASSERT_TRUE(small.wait_finals(10, 20s));
  // Served in turn, not after the 20,000 tasks queued before them.
  EXPECT_GT(unfinished_of(flood), 10000u);
}

TEST_F(RecoveryTest, GarbageFromAWorkerIsCountedAndSurvived) {
  Daemon d(1, {},
           {"--worker-command",
            "/usr/bin/python3 " + std::string(ZEXEC_SOURCE_DIR) + "/tests/workers/rogue_worker.py"});
  RawClient c(ctx_, d.endpoint());
  for (int i = 1; i <= 10; ++i) c.submit(i, "echo", args(i));
  ASSERT_TRUE(c.wait_finals(10, 30s));
  for (int i = 1; i <= 10; ++i) EXPECT_EQ(value_of<int>(c.finals[i]), i);
  EXPECT_GE(d.total(ctx_, "bad_worker_frames"), 4u);  // the two-frame message may count once or twice
  EXPECT_TRUE(d.process().running());
}

TEST_F(RecoveryTest, AnOversizeFrameIsDroppedByZeroMqAndTheDaemonGoesOn) {
  Daemon d(1);
  {
    zmq::socket_t raw(ctx_, zmq::socket_type::dealer);
    raw.set(zmq::sockopt::linger, 5000);
    raw.connect(d.endpoint());
    std::string huge(static_cast<std::size_t>(proto::kMaxMessageBytes) + 1, '\x90');
    raw.send(zmq::buffer(huge), zmq::send_flags::none);
  }  // ZMQ_MAXMSGSIZE: the daemon's side closes that connection; nothing reaches the loop
  RawClient c(ctx_, d.endpoint());
  c.submit(1, "echo", args(1));
  ASSERT_TRUE(c.wait_finals(1));
  EXPECT_TRUE(d.process().running());
}
