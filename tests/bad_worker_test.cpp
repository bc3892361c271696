// A worker whose frames the daemon refuses (PROTOCOL.md §6, "Workers"): every task it was given
// still gets a final outcome, the worker is replaced, and status counts it. Real daemon, real
// worker processes (tests/workers/bad_frame_worker.py, one kind of mistake each), raw clients.
#include <gtest/gtest.h>

#include "daemon_harness.hpp"

namespace proto = zexec::proto;
using namespace zexec::test;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> bad_pool(const std::string& mode) {
  return {"--worker-command",
          "/usr/bin/python3 " + std::string(ZEXEC_SOURCE_DIR) + "/tests/workers/bad_frame_worker.py " + mode};
}

class BadWorkerTest : public ::testing::TestWithParam<std::string> {
 protected:
  zmq::context_t ctx_;
};

}  // namespace

// Found from outside: a worker that encoded a task id of 2^32 as a float held its task for ever
// (after 12 s all 5 tasks unfinished, the worker "ready", no error, no replacement).
TEST_P(BadWorkerTest, EachTaskItWasGivenFailsNamingTheFrame) {
  Daemon d(1, {}, bad_pool(GetParam()));
  RawClient c(ctx_, d.endpoint());
  for (int i = 1; i <= 5; ++i) c.submit(i, "echo", args(i));
  ASSERT_TRUE(c.wait_finals(5, 60s)) << "tasks still without an outcome: " << 5 - c.finals.size();
  for (int i = 1; i <= 5; ++i) {
    const proto::Event& e = c.finals.at(i);
    EXPECT_EQ(e.kind, proto::Outcome::error) << i;
    EXPECT_EQ(e.error_type, "WorkerCrashed") << i;
    EXPECT_NE(e.error_message.find("sent an invalid frame: "), std::string::npos) << e.error_message;
  }
  EXPECT_GE(d.total(ctx_, "workers_rejected"), 5u) << "one worker per task it was sent";
  EXPECT_GE(d.total(ctx_, "bad_worker_frames"), 5u);
  EXPECT_TRUE(d.process().running());
}

INSTANTIATE_TEST_SUITE_P(EveryKindOfBadFrame, BadWorkerTest,
                         ::testing::Values("float_id", "short", "truncated", "multipart"));

// A worker whose very hello is refused never becomes ready: it counts as a start failure, and
// once its pool is broken its tasks fail saying why, instead of waiting.
TEST(BadWorkerHello, APoolThatOnlyStartsBadWorkersFailsItsTasksSayingWhy) {
  zmq::context_t ctx;
  Daemon d(1, {}, bad_pool("hello"));
  RawClient c(ctx, d.endpoint());
  c.submit(1, "echo", args(1));
  ASSERT_TRUE(c.wait_finals(1, 60s));
  const proto::Event& e = c.finals.at(1);
  EXPECT_EQ(e.error_type, "WorkerUnavailable");
  EXPECT_NE(e.error_message.find("sent an invalid frame: "), std::string::npos) << e.error_message;
  EXPECT_GE(d.total(ctx, "workers_rejected"), 3u);
}
