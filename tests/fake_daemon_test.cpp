// The client's task traffic against a scripted fake daemon (test::FakeDaemon, in
// client_support.hpp), following docs/PROTOCOL.md §2-3: handshake, submit and its options,
// results and their order, cancel, resent updates, poll() and the outbox.
// Nothing sleeps to synchronise: every wait is on a condition, with a deadline.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <future>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "client_support.hpp"
#include "zexec/protocol.hpp"
#include "zexec/zexec.hpp"

namespace zexec {
namespace {

using namespace std::chrono_literals;
using test::Clock;
using test::FakeDaemon;
using test::heartbeat_every;
using test::quick;
using test::TempDir;
using test::wait_until;
using test::what_of;
namespace proto = zexec::proto;

std::string packed_args_of(double x) {
  return detail::pack_args(x);
}

TEST(FakeDaemonTest, HandshakeSubmitAndCompletionOrder) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"), heartbeat_every(250));
  Client c(d.endpoint(), quick());
  EXPECT_EQ(c.client_id(), 1u);
  EXPECT_EQ(c.workers(), 4u);
  EXPECT_EQ(c.heartbeat_ms(), 250u);
  EXPECT_EQ(c.results_endpoint(), d.endpoint() + ".r1");
  EXPECT_TRUE(c.connected());
  EXPECT_EQ(d.hellos(), 1);

  Future a = c.submit("sleep", 0.3), b = c.submit("sleep", 0.1), e = c.submit("sleep", 0.2);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 3; }));
  auto tasks = d.tasks();
  EXPECT_EQ(tasks[0].name, "sleep");
  EXPECT_EQ(tasks[0].args, packed_args_of(0.3)) << "args are a msgpack array of the arguments";
  EXPECT_EQ(tasks[0].timeout_ms, 0u);
  std::set<std::uint64_t> ids{tasks[0].id, tasks[1].id, tasks[2].id};
  EXPECT_EQ(ids.size(), 3u) << "task ids are unique";
  EXPECT_EQ(a.id(), tasks[0].id);

  d.update({FakeDaemon::started(b.id()), FakeDaemon::started(e.id())});
  ASSERT_TRUE(wait_until([&] { return b.running(); }));
  AsCompletedRange range = as_completed({a, b, e}, 10s);  // before any completes
  d.update({FakeDaemon::ok_value(b.id(), 0.1), FakeDaemon::ok_value(e.id(), 0.2)});
  d.update({FakeDaemon::ok_value(a.id(), 0.3)});
  std::vector<double> order;
  for (Future& f : range) order.push_back(f.result<double>());
  EXPECT_EQ(order, (std::vector<double>{0.1, 0.2, 0.3}));
  // poll() hands out the same completion order, each future once.
  EXPECT_EQ(c.poll(1s), b);
  EXPECT_EQ(c.poll(1s), e);
  EXPECT_EQ(c.poll(1s), a);
  EXPECT_EQ(c.poll(0ms), std::nullopt);
  ASSERT_TRUE(wait_until([&] { return d.last_ack() == 3; })) << "every update is acknowledged";
  EXPECT_EQ(c.unfinished(), 0u);
}

TEST(FakeDaemonTest, TaskOptionsTravelAsTimeoutMs) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  Future f = c.submit_with(TaskOptions{.timeout = 1500ms}, "sleep", 5.0);
  Future g = c.submit_with({.timeout = 2s}, "noop");
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 2; }));
  EXPECT_EQ(d.tasks()[0].timeout_ms, 1500u);
  EXPECT_EQ(d.tasks()[1].timeout_ms, 2000u);
  EXPECT_EQ(d.tasks()[1].args, detail::pack_args());
  d.update({FakeDaemon::error(f.id(), "TaskTimeout", "ran past 1500 ms")});
  EXPECT_THROW(f.result<double>(10s), TaskTimeoutError);
}

TEST(FakeDaemonTest, RetryOptionsTravelAndAreValidated) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  Future f = c.submit_with({.retries = 2, .crash_retries = 3, .retry_backoff = 250ms}, "fail", "x");
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 1; }));
  proto::TaskSpec t = d.tasks()[0];
  EXPECT_EQ(t.retries, 2u);
  EXPECT_EQ(t.crash_retries, 3u);
  EXPECT_EQ(t.retry_backoff_ms, 250u);
  EXPECT_EQ(t.timeout_ms, 0u);
  EXPECT_THROW(c.submit_with({.retries = -1}, "noop"), Error);
  EXPECT_THROW(c.submit_with({.crash_retries = -2}, "noop"), Error);
  EXPECT_THROW(c.submit_with({.retry_backoff = -1ms}, "noop"), Error);
  EXPECT_THROW(c.submit_with({.retry_backoff = std::chrono::hours(24 * 60)}, "noop"), Error);
  EXPECT_EQ(c.unfinished(), 1u) << "refused submits leave nothing behind";
}

TEST(FakeDaemonTest, SubmitWaitsUnderTheDaemonsMaxPending) {
  TempDir dir;
  FakeDaemon::Options opts;
  opts.max_pending = 2;
  FakeDaemon d(dir.ipc("d.sock"), opts);
  ClientOptions o = quick();
  o.submit_timeout = 20s;
  Client c(d.endpoint(), o);
  EXPECT_EQ(c.max_pending(), 2u);
  Future a = c.submit("echo", 1), b = c.submit("echo", 2);
  auto third = std::async(std::launch::async, [&] { return c.submit("echo", 3); });
  EXPECT_EQ(third.wait_for(100ms), std::future_status::timeout) << "no room until a task finishes";
  EXPECT_EQ(c.unfinished(), 2u);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 2; }));
  d.update({FakeDaemon::ok_value(a.id(), 1)});
  ASSERT_EQ(third.wait_for(10s), std::future_status::ready);
  Future f3 = third.get();
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 3; }));
  EXPECT_EQ(d.tasks()[2].id, f3.id());
  EXPECT_EQ(c.unfinished(), 2u);
  // A lost connection releases a waiting submitter at once (with ConnectionError), not after
  // submit_timeout.
  auto fourth = std::async(std::launch::async, [&] { return what_of([&] { c.submit("echo", 4); }); });
  c.close();
  ASSERT_EQ(fourth.wait_for(10s), std::future_status::ready);
  EXPECT_NE(fourth.get().find("closed"), std::string::npos);
}

TEST(FakeDaemonTest, DaemonQueueFullEventIsAQueueFullError) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  Future f = c.submit("noop");
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 1; }));
  d.update({FakeDaemon::error(f.id(), "QueueFull", "this client already has 100 unfinished tasks")});
  EXPECT_THROW(f.result<void>(10s), QueueFullError);
}

TEST(FakeDaemonTest, ManySubmitsAreBatched) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  std::vector<Future> fs;
  for (int i = 0; i < 5000; ++i) fs.push_back(c.submit("echo", i));
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 5000; }));
  std::set<std::uint64_t> ids;
  for (const auto& t : d.tasks()) ids.insert(t.id);
  EXPECT_EQ(ids.size(), 5000u);
  EXPECT_LT(d.submit_messages(), 5000u) << "the outbox is drained into few submit messages";
  std::printf("5000 tasks arrived in %zu submit messages\n", d.submit_messages());
}

TEST(FakeDaemonTest, TaskErrorsAndDaemonCancelledEvents) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  Future f = c.submit("fail", "boom"), x = c.submit("x"), k = c.submit("sleep", 1.0);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 3; }));
  d.update({FakeDaemon::error(f.id(), "std::runtime_error", "boom"),
            FakeDaemon::error(x.id(), "UnknownTask", "unknown task 'x'"),
            proto::Event{k.id(), proto::Outcome::cancelled, {}, {}, {}}});
  EXPECT_EQ(what_of([&] { f.result<void>(10s); }), "fail: std::runtime_error: boom");
  EXPECT_NE(what_of([&] { x.result<void>(10s); }).find("unknown task 'x'"), std::string::npos);
  ASSERT_TRUE(k.wait_done(10s));
  EXPECT_TRUE(k.cancelled());
}

TEST(FakeDaemonTest, CancelRoundTrip) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  std::set<std::uint64_t> running;  // daemon thread only
  d.on_cancel = [&](const proto::Cancel& c) {
    std::vector<std::pair<std::uint64_t, proto::CancelOutcome>> out;
    for (auto id : c.task_ids)
      out.emplace_back(id,
                       running.count(id) ? proto::CancelOutcome::running : proto::CancelOutcome::cancelled);
    return out;
  };
  Client c(d.endpoint(), quick());
  Future busy = c.submit("sleep", 1.0), queued = c.submit("sleep", 0.1);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 2; }));
  d.post([&] { running.insert(busy.id()); });
  EXPECT_FALSE(busy.cancel()) << "the daemon says it is running";
  EXPECT_FALSE(busy.cancelled());
  EXPECT_TRUE(queued.cancel());
  EXPECT_TRUE(queued.cancelled());
  EXPECT_TRUE(queued.cancel()) << "already cancelled: true, no round trip";
  EXPECT_EQ(d.cancels().size(), 2u);
  EXPECT_THROW(queued.result<double>(), CancelledError);
  // A started event makes running() true; cancel() then answers false locally.
  d.update({FakeDaemon::started(busy.id())});
  ASSERT_TRUE(wait_until([&] { return busy.running(); }));
  EXPECT_FALSE(busy.cancel());
  EXPECT_EQ(d.cancels().size(), 2u);
  d.update({FakeDaemon::ok_value(busy.id(), 1.0)});
  EXPECT_DOUBLE_EQ(busy.result<double>(10s), 1.0);
  EXPECT_FALSE(busy.cancel());
  EXPECT_EQ(c.unfinished(), 0u);
}

TEST(FakeDaemonTest, CancelAllCancelsWhatHasNotStarted) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  d.on_cancel = [](const proto::Cancel& c) {
    std::vector<std::pair<std::uint64_t, proto::CancelOutcome>> out;
    for (auto id : c.task_ids) out.emplace_back(id, proto::CancelOutcome::cancelled);
    return out;
  };
  Client c(d.endpoint(), quick());
  Future a = c.submit("sleep", 1.0), b = c.submit("sleep", 1.0), e = c.submit("sleep", 1.0);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 3; }));
  d.update({FakeDaemon::started(a.id())});
  ASSERT_TRUE(wait_until([&] { return a.running(); }));
  EXPECT_EQ(c.cancel_all(), 2u);
  EXPECT_TRUE(b.cancelled());
  EXPECT_TRUE(e.cancelled());
  EXPECT_FALSE(a.done());
  ASSERT_EQ(d.cancels().size(), 1u);
  EXPECT_EQ(d.cancels()[0].task_ids.size(), 2u) << "only tasks not started are asked for";
}

TEST(FakeDaemonTest, UnansweredCancelIsAConnectionError) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  ClientOptions o = quick();
  o.cancel_timeout = 200ms;
  Client c(d.endpoint(), o);
  Future f = c.submit("sleep", 1.0);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 1; }));
  auto t0 = Clock::now();
  std::string text = what_of([&] { f.cancel(); });
  EXPECT_GE(Clock::now() - t0, 200ms);
  EXPECT_NE(text.find("no cancel_reply from zexecd at " + d.endpoint() + " within 0.2 s"), std::string::npos)
      << text;
  EXPECT_THROW(f.cancel(), ConnectionError);
  EXPECT_FALSE(f.done());
  // A late reply still counts: the daemon cancelled it, no other event will come.
  d.reply(proto::CancelReply{99, {{f.id(), proto::CancelOutcome::cancelled}}});
  ASSERT_TRUE(f.wait_done(10s));
  EXPECT_TRUE(f.cancelled());
}

// The daemon resends what it has no ack for: a resend of an update we acked means our ack was
// lost, so the client acks again (else the daemon's window of unacked updates fills for good).
TEST(FakeDaemonTest, AResendOfAnAckedUpdateIsAckedAgain) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  Future a = c.submit("echo", 1);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 1; }));
  d.update({FakeDaemon::ok_value(a.id(), 1)});
  ASSERT_TRUE(wait_until([&] { return d.last_ack() == 1; }));
  int acks = d.acks();
  d.update({FakeDaemon::ok_value(a.id(), 1)}, 1);
  EXPECT_TRUE(wait_until([&] { return d.acks() > acks; })) << "the lost ack was never sent again";
  EXPECT_EQ(d.last_ack(), 1u);
}

TEST(FakeDaemonTest, ResentAndOutOfOrderUpdatesApplyOnce) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  Future a = c.submit("echo", 1), b = c.submit("echo", 2);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 2; }));
  d.update({FakeDaemon::ok_value(b.id(), 2)}, 2);  // seq 1 "lost" so far
  ASSERT_TRUE(b.wait_done(10s));
  EXPECT_EQ(d.last_ack(), 0u) << "no ack beyond a gap";
  d.update({FakeDaemon::ok_value(a.id(), 1)}, 1);  // the resend fills the gap
  ASSERT_TRUE(wait_until([&] { return d.last_ack() == 2; }));
  d.update({FakeDaemon::ok_value(a.id(), 1)}, 1);  // a duplicate of an applied update
  d.update({FakeDaemon::ok_value(b.id(), 2)}, 2);
  EXPECT_EQ(c.poll(1s), b);
  EXPECT_EQ(c.poll(1s), a);
  EXPECT_EQ(c.poll(50ms), std::nullopt) << "duplicates complete nothing twice";
}

TEST(FakeDaemonTest, PollQueueOnlyKeepsHeldFutures) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  d.on_submit = [](FakeDaemon& self, const proto::Submit& s) {
    std::vector<proto::Event> evs;
    for (const auto& t : s.tasks) evs.push_back(FakeDaemon::ok(t.id, t.args));
    self.update_now(std::move(evs));
  };
  Client c(d.endpoint(), quick());
  Future kept;
  for (int i = 0; i < 3000; ++i) {
    Future f = c.submit("echo", i);
    if (i == 1234) kept = f;
  }
  ASSERT_TRUE(c.wait_all(10s));
  // Dropped futures are never returned, not even the last one, which the I/O thread may still
  // be completing when poll() looks.
  std::vector<Future> got;
  while (auto f = c.poll(0ms)) got.push_back(*f);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], kept);
}

TEST(FakeDaemonTest, PollIgnoresTheFutureADoneCallbackHolds) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  std::optional<Future> f = c.submit("echo", 1);
  const std::uint64_t id = f->id();
  std::promise<void> entered, release;
  auto release_f = release.get_future().share();
  f->add_done_callback([&, release_f](Future held) {
    entered.set_value();
    release_f.wait_for(20s);  // the I/O thread holds `held` while the caller drops its Future
    EXPECT_EQ(held.result<int>(), 1);
  });
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 1; }));
  d.update({FakeDaemon::ok_value(id, 1)});
  ASSERT_EQ(entered.get_future().wait_for(10s), std::future_status::ready);
  f.reset();  // completed and queued for poll() while held; now dropped
  EXPECT_EQ(c.poll(0ms), std::nullopt) << "the callback's Future does not count as the caller's";
  release.set_value();
  EXPECT_EQ(c.poll(50ms), std::nullopt);
}

TEST(FakeDaemonTest, CallbackOnIoThreadCancelsUnsentTaskLocally) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  Future first = c.submit("echo", 1);
  std::promise<std::pair<bool, bool>> outcome;
  std::promise<std::string> blocked_text;
  first.add_done_callback([&](Future) {
    // On the I/O thread: a task submitted here stays in the outbox until the callback returns.
    Future late = c.submit("echo", 2);
    bool cancelled = late.cancel();
    outcome.set_value({cancelled, late.cancelled()});
    Future other = c.submit("echo", 3);
    blocked_text.set_value(what_of([&] { other.result<int>(); }));
  });
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 1; }));
  d.update({FakeDaemon::ok_value(first.id(), 1)});
  auto fut = outcome.get_future();
  ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(fut.get(), std::make_pair(true, true));
  auto text = blocked_text.get_future();
  ASSERT_EQ(text.wait_for(10s), std::future_status::ready);
  EXPECT_NE(text.get().find("would wait forever"), std::string::npos);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 2; }));
  EXPECT_EQ(d.tasks()[1].args, detail::pack_args(3)) << "the cancelled task was never sent";
}

TEST(FakeDaemonTest, FullOutboxThrowsQueueFull) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  ClientOptions o = quick();
  o.max_outbox = 2;
  o.submit_timeout = 100ms;
  Client c(d.endpoint(), o);
  Future gate = c.submit("echo", 0);
  std::promise<void> entered, release;
  auto release_f = release.get_future().share();
  gate.add_done_callback([&, release_f](Future) {
    entered.set_value();
    release_f.wait_for(20s);  // holds the I/O thread: nothing leaves the outbox meanwhile
  });
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 1; }));
  d.update({FakeDaemon::ok_value(gate.id(), 0)});
  entered.get_future().wait();
  Future a = c.submit("echo", 1), b = c.submit("echo", 2);
  auto t0 = Clock::now();
  std::string text = what_of([&] { c.submit("echo", 3); });
  EXPECT_GE(Clock::now() - t0, 100ms);
  EXPECT_NE(text.find("2 tasks waiting to be sent for 0.1 s"), std::string::npos) << text;
  try {
    c.submit("echo", 4);
    ADD_FAILURE() << "a full outbox took a task";
  } catch (const QueueFullError& e) {  // a TaskError of type QueueFull, as in the Python client
    EXPECT_EQ(e.type(), "QueueFull");
    EXPECT_EQ(e.task_name(), "echo");
  }
  EXPECT_TRUE(a.cancel()) << "still in the outbox: cancelled locally";
  release.set_value();
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 2; }));
  EXPECT_EQ(d.tasks()[1].id, b.id());
  EXPECT_EQ(c.unfinished(), 1u);
}

}  // namespace
}  // namespace zexec
