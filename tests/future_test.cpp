// libzexec's Future / as_completed / wait / AsCompleted semantics on hand-resolved futures
// (zexec::testing), and ConnectionError against endpoints nobody serves. No daemon involved.
// Nothing sleeps to synchronise: every wait is on a condition, with a deadline.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <future>
#include <msgpack.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "client_support.hpp"
#include "zexec/testing.hpp"
#include "zexec/zexec.hpp"

namespace zexec {
namespace {

using namespace std::chrono_literals;
using test::Clock;
using test::free_tcp_port;
using test::TempDir;
using test::what_of;
namespace ztest = zexec::testing;

std::vector<std::string> names_of(const std::vector<Future>& fs) {
  std::vector<std::string> out;
  for (const auto& f : fs) out.push_back(f.task_name());
  return out;
}

// ============================== 1. futures without a daemon ==============================

TEST(FutureTest, ValueRunningAndDone) {
  Future f = ztest::make_future("sleep", 7);
  EXPECT_TRUE(f.valid());
  EXPECT_EQ(f.id(), 7u);
  EXPECT_FALSE(f.done());
  EXPECT_FALSE(f.running());
  EXPECT_TRUE(ztest::set_running(f));
  EXPECT_TRUE(f.running());
  EXPECT_FALSE(f.cancel()) << "a running task cannot be cancelled";
  EXPECT_TRUE(ztest::set_result(f, 0.25));
  EXPECT_FALSE(ztest::set_result(f, 1.0)) << "a future completes once";
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.running());
  EXPECT_DOUBLE_EQ(f.result<double>(), 0.25);
  EXPECT_DOUBLE_EQ(f.result<double>(100ms), 0.25);
  EXPECT_EQ(f.exception(), nullptr);
  EXPECT_FALSE(f.cancel()) << "a finished task cannot be cancelled";
  Future copy = f;
  EXPECT_EQ(copy, f);
  EXPECT_EQ(std::hash<Future>{}(copy), std::hash<Future>{}(f));
  f.result<void>();
}

TEST(FutureTest, RawResultIsTheMsgpackValue) {
  Future f = ztest::make_future("echo");
  ztest::set_result(f, std::string("hi"));
  std::string raw = f.raw_result();
  msgpack::object_handle oh = msgpack::unpack(raw.data(), raw.size());
  EXPECT_EQ(oh.get().as<std::string>(), "hi");
  EXPECT_EQ(f.result<std::string>(), "hi");
}

TEST(FutureTest, ResultTimeoutLeavesTheFutureAlone) {
  Future f = ztest::make_future("sleep");
  auto t0 = Clock::now();
  EXPECT_THROW(f.result<double>(50ms), TimeoutError);
  EXPECT_GE(Clock::now() - t0, 50ms);
  EXPECT_THROW(f.exception(10ms), TimeoutError);
  EXPECT_FALSE(f.wait_done(1ms));
  EXPECT_FALSE(f.done());
  EXPECT_FALSE(f.cancelled());
  ztest::set_result(f, 1.5);
  EXPECT_DOUBLE_EQ(f.result<double>(0ms), 1.5);
}

TEST(FutureTest, TimeoutTextNamesTaskAndWait) {
  Future f = ztest::make_future("sleep", 3);
  std::string text = what_of([&] { f.result<double>(100ms); });
  EXPECT_NE(text.find("sleep"), std::string::npos) << text;
  EXPECT_NE(text.find("0.1 s"), std::string::npos) << text;
}

TEST(FutureTest, ResultWakesWhenCompletedFromAnotherThread) {
  Future f = ztest::make_future("sleep");
  std::thread t([f] { ztest::set_result(f, 2.0); });
  EXPECT_DOUBLE_EQ(f.result<double>(10s), 2.0);
  t.join();
}

TEST(FutureTest, TaskErrorCarriesTypeMessageAndTask) {
  Future f = ztest::make_future("sleep");
  ztest::set_exception(f, "ValueError", "negative");
  try {
    f.result<double>();
    FAIL() << "no exception";
  } catch (const TaskError& e) {
    EXPECT_STREQ(e.what(), "sleep: ValueError: negative");
    EXPECT_EQ(e.type(), "ValueError");
    EXPECT_EQ(e.message(), "negative");
    EXPECT_EQ(e.task_name(), "sleep");
  }
  std::exception_ptr p = f.exception();
  ASSERT_NE(p, nullptr);
  EXPECT_THROW(std::rethrow_exception(p), TaskError);
  EXPECT_THROW(f.result<void>(), Error);
}

TEST(FutureTest, WorkerCrashAndTimeoutHaveTheirOwnTypes) {
  Future crashed = ztest::make_future("crash");
  ztest::set_exception(crashed, "WorkerCrashed", "killed by signal 6");
  EXPECT_THROW(crashed.result<void>(), WorkerCrashedError);
  Future slow = ztest::make_future("sleep");
  ztest::set_exception(slow, "TaskTimeout", "ran past 100 ms");
  EXPECT_THROW(slow.result<void>(), TaskTimeoutError);
  EXPECT_THROW(std::rethrow_exception(slow.exception()), TaskError);
}

TEST(FutureTest, QuarantineAndDaemonQueueFullHaveTheirOwnTypes) {
  Future poison = ztest::make_future("crash");
  ztest::set_exception(poison, "Quarantined", "task 'crash' crashed its worker 3 times");
  EXPECT_THROW(poison.result<void>(), QuarantinedError);
  EXPECT_THROW(poison.result<void>(), TaskError);
  Future refused = ztest::make_future("noop");
  ztest::set_exception(refused, "QueueFull", "this client already has 100 unfinished tasks");
  EXPECT_THROW(refused.result<void>(), QueueFullError);
  try {
    refused.result<void>();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.type(), "QueueFull");
  }
}

TEST(FutureTest, DurationsAreFormattedConsistently) {
  using detail::format_seconds;
  EXPECT_EQ(format_seconds(5s), "5 s");
  EXPECT_EQ(format_seconds(500ms), "0.5 s");
  EXPECT_EQ(format_seconds(250ms), "0.25 s");
  EXPECT_EQ(format_seconds(1ms), "0.001 s");
  EXPECT_EQ(format_seconds(0s), "0 s");
  // Sub-millisecond remainders used to leave a bare point: "5. s".
  EXPECT_EQ(format_seconds(5000400us), "5 s");
  EXPECT_EQ(format_seconds(std::chrono::nanoseconds(1500000001)), "1.5 s");
  EXPECT_EQ(format_seconds(200us), "0 s");
}

TEST(FutureTest, ConnectionLossSurfacesAsConnectionError) {
  Future f = ztest::make_future("sleep");
  ztest::set_connection_error(f, "lost connection to zexecd");
  EXPECT_THROW(f.result<double>(), ConnectionError);
  EXPECT_NE(what_of([&] { f.result<double>(); }).find("lost connection"), std::string::npos);
  EXPECT_NE(f.exception(), nullptr);
}

TEST(FutureTest, CancelPendingFuture) {
  Future f = ztest::make_future("sleep");
  EXPECT_TRUE(f.cancel());
  EXPECT_TRUE(f.cancelled());
  EXPECT_TRUE(f.done());
  EXPECT_TRUE(f.cancel()) << "cancelling again still reports true";
  EXPECT_THROW(f.result<double>(), CancelledError);
  EXPECT_THROW(f.exception(), CancelledError);
  EXPECT_FALSE(ztest::set_result(f, 1.0));
}

TEST(FutureTest, TypeMismatchShowsTheValue) {
  Future f = ztest::make_future("echo");
  ztest::set_result(f, std::string("abc"));
  std::string text = what_of([&] { f.result<int>(); });
  EXPECT_NE(text.find("\"abc\""), std::string::npos) << text;
  EXPECT_NE(text.find("int"), std::string::npos) << text;
  EXPECT_THROW(f.result<int>(), ResultTypeError);
  Future n = ztest::make_future("echo");
  ztest::set_result(n, 3);
  EXPECT_DOUBLE_EQ(n.result<double>(), 3.0) << "ints convert to double like msgpack does";
}

TEST(FutureTest, EmptyHandleThrows) {
  Future f;
  EXPECT_FALSE(f.valid());
  EXPECT_THROW(f.done(), Error);
  EXPECT_THROW(f.result<int>(), Error);
}

TEST(FutureTest, CallbacksRunOnceAndSurviveExceptions) {
  Future f = ztest::make_future("sleep");
  int calls = 0, after = 0;
  std::thread::id ran_on;
  f.add_done_callback([&](Future g) {
    ++calls;
    ran_on = std::this_thread::get_id();
    EXPECT_EQ(g, f);
  });
  f.add_done_callback([](Future) { throw std::runtime_error("callback failure is logged, not propagated"); });
  f.add_done_callback([&](Future) { ++after; });
  std::thread t([f] { ztest::set_result(f, 1.0); });
  t.join();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(after, 1) << "a throwing callback does not stop the next one";
  EXPECT_NE(ran_on, std::this_thread::get_id()) << "runs in the completing thread";
  f.add_done_callback([&](Future) {
    ++calls;
    ran_on = std::this_thread::get_id();
  });
  EXPECT_EQ(calls, 2) << "already done: runs at once";
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(FutureTest, CancelRunsCallbacks) {
  Future f = ztest::make_future("sleep");
  bool saw_cancelled = false;
  f.add_done_callback([&](Future g) { saw_cancelled = g.cancelled(); });
  f.cancel();
  EXPECT_TRUE(saw_cancelled);
}

// ---- as_completed -------------------------------------------------------------------------

TEST(AsCompletedTest, FinishedFirstThenCompletionOrder) {
  Future a = ztest::make_future("a"), b = ztest::make_future("b"), c = ztest::make_future("c"),
         d = ztest::make_future("d");
  ztest::set_result(c, 0);
  ztest::set_result(a, 0);
  std::vector<Future> fs{a, b, c, d};
  std::vector<std::string> order;
  for (Future& f : as_completed(fs, 10s)) {
    order.push_back(f.task_name());
    if (order.size() == 2) {  // the already-done ones came first, in the order given
      ztest::set_result(d, 0);
      ztest::set_result(b, 0);
    }
  }
  EXPECT_EQ(order, (std::vector<std::string>{"a", "c", "d", "b"}));
}

TEST(AsCompletedTest, CompletionsFromAnotherThreadInTheirOrder) {
  std::vector<Future> fs;
  for (int i = 0; i < 50; ++i) fs.push_back(ztest::make_future("t" + std::to_string(i)));
  std::vector<std::string> expected;
  for (int i = 49; i >= 0; i -= 2) expected.push_back("t" + std::to_string(i));
  for (int i = 0; i < 50; i += 2) expected.push_back("t" + std::to_string(i));
  AsCompletedRange range = as_completed(fs, 10s);  // registers on all 50 before any completes
  std::thread t([&] {
    for (int i = 49; i >= 0; i -= 2) ztest::set_result(fs[i], i);
    for (int i = 0; i < 50; i += 2) ztest::set_result(fs[i], i);
  });
  std::vector<std::string> order;
  for (Future& f : range) order.push_back(f.task_name());
  t.join();
  EXPECT_EQ(order, expected);
}

TEST(AsCompletedTest, DuplicatesYieldedOnce) {
  Future a = ztest::make_future("a"), b = ztest::make_future("b");
  ztest::set_result(a, 1);
  std::thread t([b] { ztest::set_result(b, 2); });
  std::vector<std::string> order;
  for (Future& f : as_completed({a, b, a, b, Future(a)}, 10s)) order.push_back(f.task_name());
  t.join();
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b"}));
}

TEST(AsCompletedTest, OneDeadlineThenTimeoutErrorWithCounts) {
  Future a = ztest::make_future("a"), b = ztest::make_future("b"), c = ztest::make_future("c");
  ztest::set_result(a, 1);
  std::vector<std::string> yielded;
  auto t0 = Clock::now();
  std::string text;
  try {
    for (Future& f : as_completed({a, b, c, b}, 100ms)) yielded.push_back(f.task_name());
  } catch (const TimeoutError& e) {
    text = e.what();
  }
  EXPECT_GE(Clock::now() - t0, 100ms);
  EXPECT_EQ(yielded, (std::vector<std::string>{"a"}));
  EXPECT_NE(text.find("2 (of 3) futures unfinished"), std::string::npos) << text;
  // The unfinished ones are untouched and can still be waited for.
  EXPECT_FALSE(b.done());
  EXPECT_FALSE(b.cancelled());
  EXPECT_FALSE(c.cancelled());
  ztest::set_result(c, 3);
  ztest::set_result(b, 2);
  std::vector<std::string> later;
  for (Future& f : as_completed({b, c}, 10s)) later.push_back(f.task_name());
  EXPECT_EQ(later, (std::vector<std::string>{"b", "c"}));
}

TEST(AsCompletedTest, IteratorEndsAfterTimeout) {
  Future a = ztest::make_future("a");
  AsCompletedRange r = as_completed({a}, 10ms);
  auto it = CompletionIterator();
  EXPECT_THROW(it = r.begin(), TimeoutError);
  EXPECT_TRUE(r.begin() == r.end()) << "the iteration is over";
}

TEST(AsCompletedTest, EmptyInputAndNoTimeout) {
  int n = 0;
  for (Future& f : as_completed({})) {
    (void)f;
    ++n;
  }
  EXPECT_EQ(n, 0);
  Future a = ztest::make_future("a");
  std::thread t([a] { ztest::set_result(a, 1); });
  for (Future& f : as_completed({a})) EXPECT_EQ(f.result<int>(), 1);  // no timeout: waits
  t.join();
}

// CPython #92001 / #136655: a waiter must be woken when a future it waits for is cancelled.
TEST(AsCompletedTest, CancelWakesEveryWaiter) {
  Future a = ztest::make_future("a"), b = ztest::make_future("b");
  std::promise<void> waiting1, waiting2;
  auto first = std::async(std::launch::async, [&] {
    waiting1.set_value();
    for (Future& f : as_completed({a, b}, 20s)) return f.task_name();
    return std::string();
  });
  auto second = std::async(std::launch::async, [&] {
    waiting2.set_value();
    return wait({a, b}, 20s, ReturnWhen::FirstCompleted).done.size();
  });
  waiting1.get_future().wait();
  waiting2.get_future().wait();
  auto t0 = Clock::now();
  EXPECT_TRUE(b.cancel());
  ASSERT_EQ(first.wait_for(10s), std::future_status::ready);
  ASSERT_EQ(second.wait_for(10s), std::future_status::ready);
  EXPECT_LT(Clock::now() - t0, 10s);
  EXPECT_EQ(first.get(), "b");
  EXPECT_EQ(second.get(), 1u);
}

TEST(AsCompletedTest, GrowableWhileIterating) {
  Future a = ztest::make_future("a"), b = ztest::make_future("b");
  ztest::set_result(a, 1);
  AsCompleted ac{{a, a}};
  EXPECT_EQ(ac.count(), 1u);
  std::vector<std::string> order;
  std::thread completer;
  for (Future& f : ac) {
    order.push_back(f.task_name());
    if (f.task_name() == "a") {
      ac.add(b);
      ac.add(b);  // tracked already: ignored
      Future c = ztest::make_future("c");
      ac.add(c);
      ztest::set_result(c, 3);
      completer = std::thread([b] { ztest::set_result(b, 2); });
    }
  }
  completer.join();
  EXPECT_EQ(order, (std::vector<std::string>{"a", "c", "b"}));
  EXPECT_TRUE(ac.empty());
  EXPECT_EQ(ac.next(0ms), std::nullopt);
}

TEST(AsCompletedTest, IteratorsCompareWithNotEqual) {
  Future a = ztest::make_future("a"), b = ztest::make_future("b");
  ztest::set_result(a, 1);
  ztest::set_result(b, 2);
  AsCompletedRange range = as_completed({a, b});
  std::vector<std::string> names;
  for (auto it = range.begin(), end = range.end(); operator!=(it, end); ++it)
    names.push_back(it->task_name());
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b"}));
}

TEST(AsCompletedTest, GrowableDeadline) {
  Future a = ztest::make_future("a");
  AsCompleted ac{{a}, 50ms};
  std::string text = what_of([&] {
    for (Future& f : ac) (void)f;
  });
  EXPECT_NE(text.find("1 (of 1) futures unfinished"), std::string::npos) << text;
  EXPECT_THROW(ac.next(10ms), TimeoutError);
  EXPECT_FALSE(a.cancelled());
}

// ---- wait -----------------------------------------------------------------------------------

TEST(WaitTest, FirstCompletedReturnsAtOnceWhenSomethingIsDone) {
  Future a = ztest::make_future("a"), b = ztest::make_future("b");
  ztest::set_result(b, 1);
  auto t0 = Clock::now();
  auto [done, not_done] = wait({a, b, b}, 10s, ReturnWhen::FirstCompleted);
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_EQ(names_of(done), (std::vector<std::string>{"b"}));
  EXPECT_EQ(names_of(not_done), (std::vector<std::string>{"a"}));
}

TEST(WaitTest, FirstCompletedWaitsForOne) {
  Future a = ztest::make_future("a"), b = ztest::make_future("b");
  std::thread t([a] { ztest::set_result(a, 1); });
  auto r = wait({a, b}, 10s, ReturnWhen::FirstCompleted);
  t.join();
  EXPECT_EQ(names_of(r.done), (std::vector<std::string>{"a"}));
  EXPECT_EQ(names_of(r.not_done), (std::vector<std::string>{"b"}));
}

TEST(WaitTest, TimeoutNeverThrows) {
  Future a = ztest::make_future("a");
  auto t0 = Clock::now();
  WaitResult r;
  EXPECT_NO_THROW(r = wait({a}, 30ms));
  EXPECT_GE(Clock::now() - t0, 30ms);
  EXPECT_TRUE(r.done.empty());
  EXPECT_EQ(r.not_done.size(), 1u);
  EXPECT_FALSE(a.cancelled());
}

TEST(WaitTest, FirstExceptionIgnoresCancelAndReturnsOnError) {
  Future a = ztest::make_future("a"), b = ztest::make_future("b"), c = ztest::make_future("c");
  std::thread t([=] {
    ztest::set_cancelled(a);
    ztest::set_result(b, 1);
    ztest::set_exception(c, "ValueError", "x");
  });
  Future d = ztest::make_future("d");  // never completes: only the error can end the wait
  auto r = wait({a, b, c, d}, 20s, ReturnWhen::FirstException);
  t.join();
  EXPECT_EQ(r.done.size(), 3u);
  EXPECT_EQ(names_of(r.not_done), (std::vector<std::string>{"d"}));
}

TEST(WaitTest, FirstExceptionWithoutErrorsIsAllCompleted) {
  Future a = ztest::make_future("a"), b = ztest::make_future("b");
  std::thread t([=] {
    ztest::set_result(a, 1);
    ztest::set_cancelled(b);
  });
  auto r = wait({a, b}, 20s, ReturnWhen::FirstException);
  t.join();
  EXPECT_EQ(r.done.size(), 2u);
  EXPECT_TRUE(r.not_done.empty());
}

TEST(WaitTest, AllCompleted) {
  std::vector<Future> fs;
  for (int i = 0; i < 20; ++i) fs.push_back(ztest::make_future("t"));
  std::thread t([fs] {
    for (auto& f : fs) ztest::set_result(f, 0);
  });
  auto r = wait(fs);  // no timeout
  t.join();
  EXPECT_EQ(r.done.size(), 20u);
  EXPECT_TRUE(r.not_done.empty());
}

// ---- connecting to nobody -------------------------------------------------------------------

void expect_unreachable(const std::string& endpoint) {
  ClientOptions o;
  o.connect_timeout = 300ms;
  auto t0 = Clock::now();
  std::string text;
  try {
    Client c(endpoint, o);
    FAIL() << "connected to nobody";
  } catch (const ConnectionError& e) {
    text = e.what();
  }
  auto took = Clock::now() - t0;
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 5s);
  EXPECT_NE(text.find("zexecd not reachable at " + endpoint + " after 0.3 s"), std::string::npos) << text;
}

TEST(ConnectTest, IpcEndpointNobodyServes) {
  TempDir dir;
  expect_unreachable(dir.ipc("nobody.sock"));
}

TEST(ConnectTest, TcpEndpointNobodyServes) {
  expect_unreachable("tcp://127.0.0.1:" + std::to_string(free_tcp_port()));
}

TEST(ConnectTest, MalformedEndpoint) {
  ClientOptions o;
  o.connect_timeout = 100ms;
  EXPECT_THROW(Client("bogus://x", o), ConnectionError);
}

}  // namespace
}  // namespace zexec
