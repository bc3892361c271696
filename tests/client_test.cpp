// libzexec (the client library) in three layers:
//   1. Future / as_completed / wait / AsCompleted semantics on hand-resolved futures
//      (zexec::testing), and ConnectionError against endpoints nobody serves;
//   2. the client's protocol handling against a scripted fake daemon (ROUTER + per-client PUSH
//      in a thread of this test), following docs/PROTOCOL.md §2-3;
//   3. integration against the real zexecd + zexec-worker (skipped when they are not built).
// Nothing sleeps to synchronise: every wait is on a condition, with a deadline.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "support.hpp"
#include "zexec/protocol.hpp"
#include "zexec/testing.hpp"
#include "zexec/zexec.hpp"

namespace zexec {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::TempDir;
using test::wait_until;
namespace ztest = zexec::testing;

std::vector<std::string> names_of(const std::vector<Future>& fs) {
  std::vector<std::string> out;
  for (const auto& f : fs) out.push_back(f.task_name());
  return out;
}

template <class F>
std::string what_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

// A TCP port nothing listens on now. Candidates are spread by pid rather than taken from the
// kernel's ephemeral allocator, which readily hands the same just-released port to two test
// processes running in parallel.
int free_tcp_port() {
  static std::atomic<int> counter{0};
  zmq::context_t ctx;
  for (int attempt = 0; attempt < 200; ++attempt) {
    int port = 20000 + static_cast<int>((::getpid() * 131L + counter++ * 7919L) % 30000);
    zmq::socket_t s(ctx, zmq::socket_type::rep);
    s.set(zmq::sockopt::linger, 0);
    try {
      s.bind("tcp://127.0.0.1:" + std::to_string(port));
      return port;
    } catch (const zmq::error_t&) {
    }
  }
  throw std::runtime_error("no free TCP port found");
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

// ============================== 2. against a fake daemon ===================================

namespace proto = zexec::proto;

// A scripted zexecd: ROUTER on the endpoint, one PUSH results socket for the (single) client,
// all on its own thread. Tests script it through handlers (run on that thread) and post()
// (runs a function there), and read what the client sent through the accessors.
class FakeDaemon {
 public:
  struct Options {
    std::uint32_t heartbeat_ms = 1000;
    bool welcome = true;                 // answer hello (with welcome, or `refuse`)
    std::optional<proto::Error> refuse;  // answer hello with this error instead
    std::string results_bind;            // default: ENDPOINT.r1 (ipc) / tcp://127.0.0.1:* (tcp)
    std::uint32_t max_pending = 0;       // Welcome::max_pending (0 = no limit)
  };
  using CancelHandler =
      std::function<std::vector<std::pair<std::uint64_t, proto::CancelOutcome>>(const proto::Cancel&)>;

  explicit FakeDaemon(std::string endpoint) : FakeDaemon(std::move(endpoint), Options{}) {}
  FakeDaemon(std::string endpoint, Options o) : endpoint_(std::move(endpoint)), opts_(std::move(o)) {
    router_ = zmq::socket_t(ctx_, zmq::socket_type::router);
    router_.set(zmq::sockopt::linger, 0);
    router_.bind(endpoint_);
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { loop(); });
  }
  ~FakeDaemon() {
    stop_ = true;
    thread_.join();
  }

  const std::string& endpoint() const { return endpoint_; }

  // Handlers run on the daemon thread; set them before the client connects.
  std::function<void(FakeDaemon&, const proto::Submit&)> on_submit;
  CancelHandler on_cancel;  // unset: cancel requests are ignored (never answered)

  // Runs fn on the daemon thread, returns when it ran.
  void post(std::function<void()> fn) {
    std::promise<void> done;
    {
      std::lock_guard lk(mu_);
      commands_.push_back([&] {
        fn();
        done.set_value();
      });
    }
    ASSERT_EQ(done.get_future().wait_for(10s), std::future_status::ready);
  }

  // Daemon thread only: one update with the next seq (or `seq`).
  void update_now(std::vector<proto::Event> events, std::optional<std::uint64_t> seq = {}) {
    proto::Update u{seq.value_or(next_seq_), std::move(events)};
    if (!seq) ++next_seq_;
    results_.send(zmq::buffer(proto::encode(u)), zmq::send_flags::none);
  }
  void update(std::vector<proto::Event> events, std::optional<std::uint64_t> seq = {}) {
    post([&] { update_now(std::move(events), seq); });
  }
  void reply_now(const proto::Message& m) {
    router_.send(zmq::buffer(rid_), zmq::send_flags::sndmore);
    router_.send(zmq::buffer(proto::encode(m)), zmq::send_flags::none);
  }
  void reply(proto::Message m) {
    post([&] { reply_now(m); });
  }
  void set_mute(bool mute) { mute_ = mute; }  // stop heartbeats

  std::vector<proto::TaskSpec> tasks() const {
    std::lock_guard lk(mu_);
    return tasks_;
  }
  std::size_t task_count() const {
    std::lock_guard lk(mu_);
    return tasks_.size();
  }
  std::size_t submit_messages() const {
    std::lock_guard lk(mu_);
    return submits_;
  }
  std::uint64_t last_ack() const { return last_ack_; }
  bool got_bye() const { return bye_; }
  int hellos() const { return hellos_; }
  int heartbeats() const { return heartbeats_; }
  std::vector<proto::Cancel> cancels() const {
    std::lock_guard lk(mu_);
    return cancels_;
  }

  static proto::Event ok(std::uint64_t id, const std::string& packed_value) {
    return proto::Event{id, proto::Outcome::ok, packed_value, {}, {}};
  }
  template <class T>
  static proto::Event ok_value(std::uint64_t id, const T& v) {
    msgpack::sbuffer b;
    msgpack::pack(b, v);
    return ok(id, std::string(b.data(), b.size()));
  }
  static proto::Event started(std::uint64_t id) {
    return proto::Event{id, proto::Outcome::started, {}, {}, {}};
  }
  static proto::Event error(std::uint64_t id, std::string type, std::string msg) {
    return proto::Event{id, proto::Outcome::error, {}, std::move(type), std::move(msg)};
  }

 private:
  void loop() {
    auto last_hb = Clock::now();
    while (!stop_) {
      zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 2ms);
      for (;;) {
        zmq::message_t rid, frame;
        if (!router_.recv(rid, zmq::recv_flags::dontwait)) break;
        (void)router_.recv(frame, zmq::recv_flags::none);
        handle(rid.to_string(), frame.to_string_view());
      }
      std::vector<std::function<void()>> cmds;
      {
        std::lock_guard lk(mu_);
        cmds.swap(commands_);
      }
      for (auto& c : cmds) c();
      if (!rid_.empty() && !mute_ &&
          Clock::now() - last_hb >= std::chrono::milliseconds(opts_.heartbeat_ms)) {
        reply_now(proto::Heartbeat{});
        last_hb = Clock::now();
      }
    }
  }

  void handle(const std::string& rid, std::string_view frame) {
    proto::Decoded d = proto::decode(frame);
    ASSERT_TRUE(d) << d.error;
    proto::Message& m = *d.message;
    if (auto* h = std::get_if<proto::Hello>(&m)) {
      ++hellos_;
      EXPECT_EQ(h->pid, getpid());
      if (!opts_.welcome) return;
      rid_ = rid;
      if (opts_.refuse) {
        reply_now(*opts_.refuse);
        rid_.clear();
        return;
      }
      results_ = zmq::socket_t(ctx_, zmq::socket_type::push);
      results_.set(zmq::sockopt::linger, 0);
      std::string bind = opts_.results_bind;
      if (bind.empty())
        bind = endpoint_.rfind("ipc://", 0) == 0 ? endpoint_ + ".r1" : std::string("tcp://127.0.0.1:*");
      results_.bind(bind);
      reply_now(proto::Welcome{1, results_.get(zmq::sockopt::last_endpoint), 4, opts_.heartbeat_ms,
                               opts_.max_pending});
      return;
    }
    if (auto* sub = std::get_if<proto::Submit>(&m)) {
      {
        std::lock_guard lk(mu_);
        ++submits_;
        tasks_.insert(tasks_.end(), sub->tasks.begin(), sub->tasks.end());
      }
      if (on_submit) on_submit(*this, *sub);
      return;
    }
    if (auto* c = std::get_if<proto::Cancel>(&m)) {
      {
        std::lock_guard lk(mu_);
        cancels_.push_back(*c);
      }
      if (on_cancel) reply_now(proto::CancelReply{c->request_id, on_cancel(*c)});
      return;
    }
    if (auto* a = std::get_if<proto::Ack>(&m)) {
      EXPECT_GE(a->seq, last_ack_.load()) << "acks are cumulative";
      last_ack_ = a->seq;
      return;
    }
    if (std::holds_alternative<proto::Heartbeat>(m)) ++heartbeats_;
    if (std::holds_alternative<proto::Bye>(m)) bye_ = true;
  }

  std::string endpoint_;
  Options opts_;
  zmq::context_t ctx_;
  zmq::socket_t router_, results_;
  std::string rid_;
  std::uint64_t next_seq_ = 1;
  std::thread thread_;
  std::atomic<bool> stop_{false}, mute_{false}, bye_{false};
  std::atomic<int> hellos_{0}, heartbeats_{0};
  std::atomic<std::uint64_t> last_ack_{0};
  mutable std::mutex mu_;
  std::vector<std::function<void()>> commands_;
  std::vector<proto::TaskSpec> tasks_;
  std::vector<proto::Cancel> cancels_;
  std::size_t submits_ = 0;
};

FakeDaemon::Options heartbeat_every(std::uint32_t ms) {
  FakeDaemon::Options o;
  o.heartbeat_ms = ms;
  return o;
}
FakeDaemon::Options no_welcome() {
  FakeDaemon::Options o;
  o.welcome = false;
  return o;
}
FakeDaemon::Options refusing(proto::Error e) {
  FakeDaemon::Options o;
  o.refuse = std::move(e);
  return o;
}
FakeDaemon::Options results_at(std::string bind) {
  FakeDaemon::Options o;
  o.results_bind = std::move(bind);
  return o;
}

ClientOptions quick() {
  ClientOptions o;
  o.connect_timeout = 5s;
  o.cancel_timeout = 5s;
  return o;
}

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

TEST(FakeDaemonTest, DaemonSilenceFailsPendingFutures) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"), heartbeat_every(40));
  Client c(d.endpoint(), quick());
  Future f = c.submit("sleep", 10.0);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 1; }));
  // Heartbeats keep it alive well past 5 x heartbeat_ms...
  EXPECT_FALSE(f.wait_done(400ms));
  EXPECT_TRUE(c.connected());
  // ...silence does not.
  d.set_mute(true);
  auto t0 = Clock::now();
  ASSERT_TRUE(f.wait_done(10s));
  EXPECT_GE(Clock::now() - t0, 150ms);
  std::string text = what_of([&] { f.result<double>(); });
  EXPECT_NE(text.find("lost connection to zexecd at " + d.endpoint()), std::string::npos) << text;
  // "0.2 s", never "0. s" or "5. s".
  EXPECT_TRUE(std::regex_search(text, std::regex("nothing heard for [0-9]+(\\.[0-9]*[1-9])? s \\(heartbeat")))
      << text;
  EXPECT_THROW(f.result<double>(), ConnectionError);
  EXPECT_FALSE(c.connected());
  EXPECT_NE(c.last_error().find("lost connection"), std::string::npos);
  EXPECT_THROW(c.submit("sleep", 1.0), ConnectionError);
}

TEST(FakeDaemonTest, ClientHeartbeatsWhenIdle) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"), heartbeat_every(30));
  Client c(d.endpoint(), quick());
  ASSERT_TRUE(wait_until([&] { return d.heartbeats() >= 3; })) << "an idle client heartbeats";
  EXPECT_TRUE(c.connected());
  EXPECT_FALSE(d.got_bye());
}

TEST(FakeDaemonTest, UnknownClientErrorFailsEverything) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  Future f = c.submit("sleep", 1.0);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 1; }));
  d.reply(proto::Error{"unknown_client", "send hello before submit"});
  ASSERT_TRUE(f.wait_done(10s));
  EXPECT_THROW(f.result<double>(), ConnectionError);
  EXPECT_NE(c.last_error().find("unknown_client"), std::string::npos);
  EXPECT_FALSE(c.connected());
}

TEST(FakeDaemonTest, OtherErrorsAreKeptAndFuturesUntouched) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Client c(d.endpoint(), quick());
  Future f = c.submit("sleep", 1.0);
  d.reply(proto::Error{"bad_message", "task args: expected bin, got int"});
  ASSERT_TRUE(wait_until([&] { return !c.last_error().empty(); }));
  EXPECT_NE(c.last_error().find("bad_message: task args: expected bin, got int"), std::string::npos);
  EXPECT_FALSE(f.done());
  EXPECT_TRUE(c.connected());
}

TEST(FakeDaemonTest, RefusedHandshakeIsAConnectionError) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"), refusing(proto::Error{"shutting_down", "zexecd is stopping"}));
  ClientOptions o = quick();
  o.connect_timeout = 10s;
  auto t0 = Clock::now();
  std::string text = what_of([&] { Client c(d.endpoint(), o); });
  EXPECT_LT(Clock::now() - t0, 5s) << "a refusal ends the wait at once";
  EXPECT_NE(text.find("shutting_down: zexecd is stopping"), std::string::npos) << text;
}

TEST(FakeDaemonTest, HelloIsSentOnceAndByeOnGivingUp) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"), no_welcome());
  ClientOptions o = quick();
  o.connect_timeout = 200ms;
  EXPECT_THROW(Client(d.endpoint(), o), ConnectionError);
  EXPECT_EQ(d.hellos(), 1);
  ASSERT_TRUE(wait_until([&] { return d.got_bye(); })) << "the daemon may have registered us: say bye";
}

TEST(FakeDaemonTest, AbortConnectHookEndsTheWait) {
  TempDir dir;
  ClientOptions o = quick();
  o.connect_timeout = 10s;
  o.abort_connect = [] { return std::optional<std::string>("the daemon died"); };
  auto t0 = Clock::now();
  EXPECT_EQ(what_of([&] { Client c(dir.ipc("nobody.sock"), o); }), "the daemon died");
  EXPECT_LT(Clock::now() - t0, 5s);
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

TEST(FakeDaemonTest, TcpWildcardResultsHostIsReplaced) {
  int port = free_tcp_port();
  FakeDaemon d("tcp://127.0.0.1:" + std::to_string(port), results_at("tcp://0.0.0.0:*"));
  Client c(d.endpoint(), quick());
  std::string r = c.results_endpoint();
  EXPECT_EQ(r.rfind("tcp://127.0.0.1:", 0), 0u) << r;
  Future f = c.submit("echo", 5);
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 1; }));
  d.update({FakeDaemon::ok_value(f.id(), 5)});
  EXPECT_EQ(f.result<int>(10s), 5);
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
  EXPECT_THROW(c.submit("echo", 4), QueueFull);
  EXPECT_TRUE(a.cancel()) << "still in the outbox: cancelled locally";
  release.set_value();
  ASSERT_TRUE(wait_until([&] { return d.task_count() == 2; }));
  EXPECT_EQ(d.tasks()[1].id, b.id());
  EXPECT_EQ(c.unfinished(), 1u);
}

TEST(FakeDaemonTest, CloseSaysByeAndFailsUnfinished) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"));
  Future f;
  {
    Client c(d.endpoint(), quick());
    f = c.submit("sleep", 5.0);
    ASSERT_TRUE(wait_until([&] { return d.task_count() == 1; }));
  }
  ASSERT_TRUE(wait_until([&] { return d.got_bye(); }));
  ASSERT_TRUE(f.done());
  EXPECT_THROW(f.result<double>(), ConnectionError);
  EXPECT_NE(what_of([&] { f.result<double>(); }).find("closed"), std::string::npos);
  EXPECT_FALSE(f.cancel());
}

// ============================== 3. against the real zexecd =================================

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
  } catch (const QueueFull& e) {
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
