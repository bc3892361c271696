// Faults seen from the C++ client library: the daemon dies or stops under waiting futures.
#include <gtest/gtest.h>

#include <zexec/zexec.hpp>

#include "daemon_harness.hpp"

using namespace zexec::test;
using namespace std::chrono_literals;

TEST(ClientFaults, DaemonKilledUnderAWaitingClientFailsItsFuturesInBoundedTime) {
  Daemon d(1, {}, {"--heartbeat-ms", "100"});
  zexec::Client client{d.endpoint()};
  zexec::Future running = client.submit("sleep", 30.0);
  zexec::Future queued = client.submit("sleep", 30.0);
  ASSERT_TRUE(wait_until([&] { return running.running(); }));
  d.process().kill(SIGKILL);
  ASSERT_TRUE(d.process().wait_exit(10s));
  // 5 heartbeats of silence (0.5 s here) and every pending future fails; nobody hangs.
  EXPECT_THROW(running.result<double>(10s), zexec::ConnectionError);
  EXPECT_THROW(queued.result<double>(10s), zexec::ConnectionError);
  EXPECT_TRUE(running.done());
}

TEST(ClientFaults, SigtermDeliversRunningResultsAndCancelsTheRest) {
  Daemon d(1);
  zexec::Client client{d.endpoint()};
  zexec::Future running = client.submit("sleep", 0.3);
  std::vector<zexec::Future> queued;
  for (int i = 0; i < 5; ++i) queued.push_back(client.submit("echo", i));
  ASSERT_TRUE(wait_until([&] { return running.running(); }));
  d.process().kill(SIGTERM);
  EXPECT_DOUBLE_EQ(running.result<double>(10s), 0.3);
  for (auto& f : queued) {
    ASSERT_TRUE(f.wait_done(10s));
    EXPECT_TRUE(f.cancelled());
  }
  ASSERT_TRUE(d.process().wait_exit(10s));
  EXPECT_TRUE(d.process().exited_ok());
}

TEST(ClientFaults, ExecutorShutdownWithCancelFuturesCancelsWhatHasNotStarted) {
  zexec::ExecutorOptions opts;
  opts.workers = 1;
  zexec::Executor ex{opts};
  zexec::Future running = ex.submit("sleep", 0.3);
  std::vector<zexec::Future> rest;
  for (int i = 0; i < 20; ++i) rest.push_back(ex.submit("sleep", 0.3));
  ASSERT_TRUE(wait_until([&] { return running.running(); }));
  ex.shutdown(/*wait=*/true, /*cancel_futures=*/true);
  EXPECT_DOUBLE_EQ(running.result<double>(1s), 0.3);
  std::size_t cancelled = 0;
  for (auto& f : rest) cancelled += f.cancelled();
  EXPECT_GE(cancelled, 19u);  // the one prefetched behind `running` may already have started
  for (auto& f : rest) EXPECT_TRUE(f.done());
}
