// The stock zexec-worker binary against a fake daemon: the test binds the daemon's sockets
// (PUSH for tasks, PULL for events), starts the real worker with the ZEXEC_* environment and
// checks what it says, as docs/PROTOCOL.md §4 prescribes. Every receive has a deadline.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <msgpack.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "support.hpp"
#include "zexec/protocol.hpp"

namespace zexec {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using test::bin_path;
using test::Process;
using test::TempDir;

// ---- msgpack helpers ----------------------------------------------------------------------------

using Packer = msgpack::packer<msgpack::sbuffer>;

// The msgpack bytes of one value, written by `write`.
std::string packed(const std::function<void(Packer&)>& write) {
  msgpack::sbuffer buf;
  Packer pk(buf);
  write(pk);
  return std::string(buf.data(), buf.size());
}
template <class T>
std::string packed_value(const T& v) {
  return packed([&](Packer& pk) { pk.pack(v); });
}
// An argument array made of already packed elements.
std::string args_of(const std::vector<std::string>& elements) {
  std::string out = packed([&](Packer& pk) { pk.pack_array(static_cast<std::uint32_t>(elements.size())); });
  for (const auto& e : elements) out += e;
  return out;
}
template <class... T>
std::string args(const T&... values) {
  return args_of({packed_value(values)...});
}

proto::TaskSpec task(std::uint64_t id, std::string name, std::string arg_bytes) {
  return proto::TaskSpec{id, std::move(name), std::move(arg_bytes), 0};
}

template <class T>
T unpack_as(const std::string& bytes) {
  return msgpack::unpack(bytes.data(), bytes.size())->as<T>();
}

bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  // Re-parented orphans may stay zombies if nobody reaps them: dead all the same.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close == std::string::npos || (close + 2 < line.size() && line[close + 2] == 'Z');
}

// ---- the fake daemon ----------------------------------------------------------------------------

// What the worker said, in arrival order.
struct Log {
  std::vector<proto::Event> events;
  std::map<std::uint64_t, std::uint64_t> busy_us_of_final;  // task -> busy_us of its message
  std::vector<std::vector<std::uint64_t>> revoked;
  std::vector<Clock::time_point> heartbeats;
  std::vector<Clock::time_point> arrivals;  // every message
  int event_messages = 0;

  const proto::Event* final_of(std::uint64_t id) const {
    for (const auto& e : events)
      if (e.task_id == id && e.kind != proto::Outcome::started) return &e;
    return nullptr;
  }
  bool started(std::uint64_t id) const {
    for (const auto& e : events)
      if (e.task_id == id && e.kind == proto::Outcome::started) return true;
    return false;
  }
  std::size_t finals() const {
    std::size_t n = 0;
    for (const auto& e : events) n += e.kind != proto::Outcome::started;
    return n;
  }
  bool mentions(std::uint64_t id) const {
    for (const auto& e : events)
      if (e.task_id == id) return true;
    return false;
  }
};

class WorkerTest : public ::testing::Test {
 protected:
  static constexpr std::uint64_t kWorkerId = 42;

  WorkerTest() : tasks_(ctx_, zmq::socket_type::push), events_(ctx_, zmq::socket_type::pull) {
    tasks_.set(zmq::sockopt::linger, 0);
    tasks_.set(zmq::sockopt::sndtimeo, 10000);  // a worker that never connects fails the send
    events_.set(zmq::sockopt::linger, 0);
    tasks_.bind(dir_.ipc("tasks"));
    events_.bind(dir_.ipc("events"));
  }

  std::vector<std::string> worker_env(int heartbeat_ms) const {
    return {"ZEXEC_TASKS_ENDPOINT=" + dir_.ipc("tasks"), "ZEXEC_EVENTS_ENDPOINT=" + dir_.ipc("events"),
            "ZEXEC_WORKER_ID=" + std::to_string(kWorkerId),
            "ZEXEC_HEARTBEAT_MS=" + std::to_string(heartbeat_ms)};
  }

  // Starts the worker and returns its worker_hello (which must be the first message).
  proto::WorkerHello start(int heartbeat_ms = 1000) {
    worker_ = std::make_unique<Process>(std::vector<std::string>{bin_path("zexec-worker")},
                                        worker_env(heartbeat_ms));
    return expect_hello();
  }

  proto::WorkerHello expect_hello() {
    auto m = recv(10s);
    if (!m) {
      ADD_FAILURE() << "no worker_hello within 10 s";
      return {};
    }
    auto* hello = std::get_if<proto::WorkerHello>(&*m);
    if (!hello) {
      ADD_FAILURE() << "first message is " << proto::type_name(proto::type_of(*m)) << ", not worker_hello";
      return {};
    }
    return *hello;
  }

  void send(const proto::Message& m) {
    std::string frame = proto::encode(m);
    ASSERT_TRUE(tasks_.send(zmq::buffer(frame))) << "the worker did not take a message within 10 s";
  }

  // The next message from the worker, or nullopt when none arrives in time.
  std::optional<proto::Message> recv(milliseconds timeout) {
    zmq_pollitem_t item{events_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
    zmq::message_t msg;
    if (!events_.recv(msg, zmq::recv_flags::dontwait)) return std::nullopt;
    EXPECT_FALSE(msg.more()) << "a zexec message is one frame";
    auto decoded = proto::decode(msg.to_string_view());
    if (!decoded) {
      ADD_FAILURE() << "worker sent an undecodable frame: " << decoded.error;
      return std::nullopt;
    }
    return std::move(*decoded.message);
  }

  void record(proto::Message m) {
    auto now = Clock::now();
    log_.arrivals.push_back(now);
    if (auto* ev = std::get_if<proto::WorkerEvents>(&m)) {
      EXPECT_EQ(ev->worker_id, kWorkerId);
      if (ev->events.empty()) {
        log_.heartbeats.push_back(now);
        EXPECT_EQ(ev->busy_us, 0u) << "a heartbeat reports no finished task";
        return;
      }
      ++log_.event_messages;
      for (auto& e : ev->events) {
        if (e.kind != proto::Outcome::started) log_.busy_us_of_final[e.task_id] = ev->busy_us;
        log_.events.push_back(std::move(e));
      }
    } else if (auto* rv = std::get_if<proto::WorkerRevoked>(&m)) {
      EXPECT_EQ(rv->worker_id, kWorkerId);
      log_.revoked.push_back(rv->task_ids);
    } else {
      ADD_FAILURE() << "unexpected " << proto::type_name(proto::type_of(m)) << " from the worker";
    }
  }

  // Records messages until `done` holds; false if the deadline passes first.
  bool pump_until(const std::function<bool()>& done, milliseconds timeout = 10s) {
    auto deadline = Clock::now() + timeout;
    while (!done()) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left <= 0ms) return false;
      auto m = recv(left);
      if (!m) return done();
      record(std::move(*m));
    }
    return true;
  }

  // Runs one task and returns its final event (a failed expectation if none comes in time).
  proto::Event run_one(const std::string& name, const std::string& arg_bytes) {
    std::uint64_t id = next_id_++;
    send(proto::Tasks{{task(id, name, arg_bytes)}});
    EXPECT_TRUE(pump_until([&] { return log_.final_of(id) != nullptr; })) << "no final event for " << name;
    const proto::Event* e = log_.final_of(id);
    return e ? *e : proto::Event{};
  }

  TempDir dir_;
  zmq::context_t ctx_{1};
  zmq::socket_t tasks_;
  zmq::socket_t events_;
  std::unique_ptr<Process> worker_;
  Log log_;
  std::uint64_t next_id_ = 1000;
};

void expect_error(const proto::Event& e, const std::string& type, const std::string& message) {
  EXPECT_EQ(e.kind, proto::Outcome::error);
  EXPECT_EQ(e.error_type, type);
  EXPECT_EQ(e.error_message, message);
}

// ---- tests --------------------------------------------------------------------------------------

TEST_F(WorkerTest, HelloComesFirstWithPidCapacityAndTaskNames) {
  auto hello = start();
  EXPECT_EQ(hello.worker_id, kWorkerId);
  EXPECT_EQ(hello.pid, worker_->pid());
  EXPECT_EQ(hello.capacity, 1024u);
  std::set<std::string> names(hello.tasks.begin(), hello.tasks.end());
  EXPECT_EQ(names, (std::set<std::string>{"sleep", "echo", "fail", "crash", "random_sleep", "noop", "pid",
                                          "hog", "flaky", "crashy"}));
}

TEST_F(WorkerTest, EchoReturnsEveryKindOfValueUnchanged) {
  start();
  std::vector<std::string> values = {
      packed_value(42),
      packed_value(-7),
      packed_value(std::numeric_limits<std::uint64_t>::max()),
      packed_value(2.5),
      packed_value(true),
      packed([](Packer& pk) { pk.pack_nil(); }),
      packed_value(std::string("héllo")),
      packed_value(std::string(100000, 'x')),
      packed_value(std::vector<char>{0, 1, 2, '\xff'}),  // bin
      packed([](Packer& pk) {
        pk.pack_array(3);
        pk.pack(1);
        pk.pack(std::string("a"));
        pk.pack_nil();
      }),
      packed_value(std::map<std::string, std::vector<bool>>{{"k", {true, false}}, {"", {}}}),
  };
  for (const auto& v : values) {
    auto e = run_one("echo", args_of({v}));
    ASSERT_EQ(e.kind, proto::Outcome::ok) << e.error_type << ": " << e.error_message;
    EXPECT_EQ(e.value, v);
  }
}

TEST_F(WorkerTest, ThousandNoopsAreBatchedAndReportedInOrder) {
  start();
  constexpr std::uint64_t kCount = 1000;
  proto::Tasks batch;
  for (std::uint64_t id = 1; id <= kCount; ++id) batch.tasks.push_back(task(id, "noop", args()));
  send(batch);
  ASSERT_TRUE(pump_until([&] { return log_.finals() == kCount; }, 30s)) << log_.finals() << " finals";

  std::map<std::uint64_t, std::size_t> started_at, finished_at;
  std::vector<std::uint64_t> started_order, finished_order;
  for (std::size_t i = 0; i < log_.events.size(); ++i) {
    const auto& e = log_.events[i];
    if (e.kind == proto::Outcome::started) {
      EXPECT_TRUE(started_at.emplace(e.task_id, i).second) << "started twice: " << e.task_id;
      started_order.push_back(e.task_id);
    } else {
      EXPECT_EQ(e.kind, proto::Outcome::ok);
      EXPECT_EQ(e.value, "\xc0") << "noop returns nil";
      EXPECT_TRUE(finished_at.emplace(e.task_id, i).second) << "finished twice: " << e.task_id;
      finished_order.push_back(e.task_id);
    }
  }
  ASSERT_EQ(finished_order.size(), kCount);
  ASSERT_EQ(started_order.size(), kCount);
  for (std::uint64_t id = 1; id <= kCount; ++id) {
    EXPECT_EQ(finished_order[id - 1], id) << "tasks run in the order they were received";
    EXPECT_EQ(started_order[id - 1], id);
    EXPECT_LT(started_at[id], finished_at[id]) << "task " << id << " finished before it started";
  }
  // Batching is an optimisation whose degree depends on scheduling; it must at least not be
  // worse than one message per event.
  EXPECT_LE(log_.event_messages, static_cast<int>(2 * kCount));
  RecordProperty("worker_events_messages", log_.event_messages);
}

TEST_F(WorkerTest, ThrownExceptionBecomesErrorWithItsTypeName) {
  start();
  expect_error(run_one("fail", args(std::string("boom"))), "std::runtime_error", "boom");
  // The worker survives its tasks' exceptions.
  auto e = run_one("echo", args(1));
  EXPECT_EQ(e.kind, proto::Outcome::ok);
}

TEST_F(WorkerTest, UnknownTaskIsReportedByName) {
  start();
  expect_error(run_one("no_such_task", args(1, 2)), "UnknownTask", "unknown task 'no_such_task'");
}

TEST_F(WorkerTest, MismatchedArgumentsAreBadArguments) {
  start();
  expect_error(run_one("sleep", args(std::string("x"))), "BadArguments",
               "sleep: argument 1: expected double, got str");
  expect_error(run_one("sleep", args(1, 2)), "BadArguments", "sleep: expected 1 argument, got 2");
  expect_error(run_one("sleep", args()), "BadArguments", "sleep: expected 1 argument, got 0");
  expect_error(run_one("random_sleep", args(std::string("a"), std::string("b"))), "BadArguments",
               "random_sleep: argument 2: expected double, got str");
  expect_error(run_one("fail", args(3)), "BadArguments", "fail: argument 1: expected str, got int");
  expect_error(run_one("sleep", packed_value(0.5)), "BadArguments",
               "sleep: arguments must be a msgpack array, got float");
  EXPECT_EQ(run_one("sleep", "\xc1").error_type, "BadArguments");         // never-used msgpack byte
  EXPECT_EQ(run_one("sleep", "\x91").error_type, "BadArguments");         // truncated array
  EXPECT_EQ(run_one("sleep", args(0) + "x").error_type, "BadArguments");  // trailing bytes

  // An int converts to a double parameter.
  auto ok = run_one("sleep", args(0));
  ASSERT_EQ(ok.kind, proto::Outcome::ok) << ok.error_message;
  EXPECT_EQ(unpack_as<double>(ok.value), 0.0);
}

// "Task=<name>: d.dd" with d.dd in [0, 1].
bool is_random_sleep_result(const std::string& s, const std::string& name) {
  std::string prefix = "Task=" + name + ": ";
  if (s.size() != prefix.size() + 4 || s.compare(0, prefix.size(), prefix) != 0) return false;
  std::string v = s.substr(prefix.size());
  return (v[0] == '0' || v == "1.00") && v[1] == '.' && std::isdigit(static_cast<unsigned char>(v[2])) &&
         std::isdigit(static_cast<unsigned char>(v[3]));
}

TEST_F(WorkerTest, RandomSleepNamesItsTask) {
  start();
  auto by_str = run_one("random_sleep", args(std::string("job"), 0.01));
  ASSERT_EQ(by_str.kind, proto::Outcome::ok) << by_str.error_message;
  EXPECT_TRUE(is_random_sleep_result(unpack_as<std::string>(by_str.value), "job"))
      << unpack_as<std::string>(by_str.value);
  auto by_int = run_one("random_sleep", args(7, 0));
  ASSERT_EQ(by_int.kind, proto::Outcome::ok) << by_int.error_message;
  EXPECT_TRUE(is_random_sleep_result(unpack_as<std::string>(by_int.value), "7"))
      << unpack_as<std::string>(by_int.value);
}

TEST_F(WorkerTest, RevokeIsAnsweredWhileATaskRuns) {
  start();
  send(proto::Tasks{{task(1, "sleep", args(2.0)), task(2, "noop", args()), task(3, "noop", args()),
                     task(4, "echo", args(4))}});
  ASSERT_TRUE(pump_until([&] { return log_.started(1); }));

  auto revoked_at = Clock::now();
  // 1 is running and 99 unknown: neither is given back.
  send(proto::Revoke{{1, 2, 3, 99}});
  ASSERT_TRUE(pump_until([&] { return !log_.revoked.empty(); }, 1500ms))
      << "no worker_revoked during the sleep";
  auto latency = Clock::now() - revoked_at;
  EXPECT_LT(latency, 1000ms);
  EXPECT_EQ(log_.final_of(1), nullptr) << "the revoke was answered only after the sleep ended";
  EXPECT_EQ(log_.revoked.front(), (std::vector<std::uint64_t>{2, 3}));

  ASSERT_TRUE(pump_until([&] { return log_.final_of(1) && log_.final_of(4); }));
  EXPECT_EQ(log_.final_of(1)->kind, proto::Outcome::ok);
  EXPECT_EQ(unpack_as<int>(log_.final_of(4)->value), 4);
  EXPECT_FALSE(log_.mentions(2));
  EXPECT_FALSE(log_.mentions(3));
  EXPECT_EQ(log_.revoked.size(), 1u) << "exactly one answer per revoke";
  // busy_us covers the two seconds of the sleep.
  EXPECT_GE(log_.busy_us_of_final[1], 2'000'000u);
}

TEST_F(WorkerTest, HeartbeatsKeepComingDuringALongTask) {
  start(/*heartbeat_ms=*/100);
  ASSERT_TRUE(pump_until([&] { return log_.heartbeats.size() >= 2; }, 5s)) << "no heartbeats while idle";

  send(proto::Tasks{{task(1, "sleep", args(1.2))}});
  ASSERT_TRUE(pump_until([&] { return log_.started(1); }));
  std::size_t before = log_.heartbeats.size();
  std::size_t first_arrival = log_.arrivals.size() - 1;
  ASSERT_TRUE(pump_until([&] { return log_.final_of(1) != nullptr; }));

  EXPECT_GE(log_.heartbeats.size() - before, 6u) << "expected ~11 heartbeats at 100 ms during a 1.2 s task";
  auto max_gap = Clock::duration::zero();
  for (std::size_t i = first_arrival + 1; i < log_.arrivals.size(); ++i)
    max_gap = std::max(max_gap, log_.arrivals[i] - log_.arrivals[i - 1]);
  // 100 ms nominal; generous for sanitizer builds on a loaded machine.
  EXPECT_LT(max_gap, 500ms);
}

TEST_F(WorkerTest, ShutdownFinishesTheRunningTaskAndExitsZero) {
  start();
  send(proto::Tasks{{task(1, "sleep", args(0.5)), task(2, "noop", args()), task(3, "noop", args())}});
  ASSERT_TRUE(pump_until([&] { return log_.started(1); }));
  send(proto::Shutdown{});
  ASSERT_TRUE(pump_until([&] { return log_.final_of(1) != nullptr; })) << "the running task's event was lost";
  EXPECT_EQ(log_.final_of(1)->kind, proto::Outcome::ok);
  ASSERT_TRUE(worker_->wait_exit(10s)) << "the worker did not exit after shutdown";
  EXPECT_TRUE(worker_->exited_ok()) << "wait status " << worker_->status();
  // Whatever is still in flight arrives within ZeroMQ's linger; the queued tasks never started.
  pump_until([] { return false; }, 300ms);
  EXPECT_FALSE(log_.mentions(2));
  EXPECT_FALSE(log_.mentions(3));
}

TEST_F(WorkerTest, ShutdownWhileIdleExitsZero) {
  start();
  send(proto::Shutdown{});
  ASSERT_TRUE(worker_->wait_exit(10s));
  EXPECT_TRUE(worker_->exited_ok()) << "wait status " << worker_->status();
}

TEST_F(WorkerTest, CrashKillsTheProcessWithSigabrt) {
  start();
  send(proto::Tasks{{task(1, "crash", args())}});
  ASSERT_TRUE(worker_->wait_exit(10s));
  ASSERT_TRUE(WIFSIGNALED(worker_->status())) << "wait status " << worker_->status();
  EXPECT_EQ(WTERMSIG(worker_->status()), SIGABRT);
}

TEST_F(WorkerTest, GarbageFromTheDaemonIsIgnored) {
  start();
  std::string junk = "\x01\x02\x03";
  ASSERT_TRUE(tasks_.send(zmq::buffer(junk)));
  ASSERT_TRUE(tasks_.send(zmq::buffer(proto::encode(proto::Heartbeat{}))));  // not for workers
  ASSERT_TRUE(tasks_.send(zmq::str_buffer("part 1"), zmq::send_flags::sndmore));
  ASSERT_TRUE(tasks_.send(zmq::buffer(proto::encode(proto::Shutdown{}))));  // second part: dropped too
  auto e = run_one("echo", args(std::string("still here")));
  ASSERT_EQ(e.kind, proto::Outcome::ok);
  EXPECT_EQ(unpack_as<std::string>(e.value), "still here");
  EXPECT_TRUE(worker_->running());
}

// The worker is started by a shell which then dies: the worker must notice (getppid changes)
// and exit by itself, idle or in the middle of a task.
class OrphanTest : public WorkerTest, public ::testing::WithParamInterface<bool> {};

TEST_P(OrphanTest, WorkerExitsWhenItsParentDies) {
  bool busy = GetParam();
  Process parent({"/bin/sh", "-c", "\"$0\" & wait", bin_path("zexec-worker")}, worker_env(100));
  auto hello = expect_hello();
  ASSERT_GT(hello.pid, 0);
  if (busy) {
    send(proto::Tasks{{task(1, "sleep", args(60))}});
    ASSERT_TRUE(pump_until([&] { return log_.started(1); }));
  }
  parent.kill(SIGKILL);
  ASSERT_TRUE(parent.wait_exit(10s));
  EXPECT_TRUE(test::wait_until([&] { return process_gone(static_cast<pid_t>(hello.pid)); }, 10s))
      << "orphaned worker " << hello.pid << " is still running";
  if (!process_gone(static_cast<pid_t>(hello.pid))) ::kill(static_cast<pid_t>(hello.pid), SIGKILL);
}

INSTANTIATE_TEST_SUITE_P(WorkerIdleAndBusy, OrphanTest, ::testing::Bool());

TEST(WorkerBinary, WithoutEnvironmentExplainsAndExitsTwo) {
  TempDir dir;
  std::string out = dir.path() + "/out";
  Process p(
      {"/bin/sh", "-c", "unset ZEXEC_TASKS_ENDPOINT ZEXEC_EVENTS_ENDPOINT ZEXEC_WORKER_ID; exec \"$0\" 2>&1",
       bin_path("zexec-worker")},
      {}, out);
  ASSERT_TRUE(p.wait_exit(10s));
  ASSERT_TRUE(WIFEXITED(p.status()));
  EXPECT_EQ(WEXITSTATUS(p.status()), 2);
  std::string text = zexec::test::read_file(out);
  EXPECT_NE(text.find("ZEXEC_TASKS_ENDPOINT"), std::string::npos) << text;
  EXPECT_NE(text.find("zexecd"), std::string::npos) << text;
}

TEST(WorkerBinary, HelpDescribesTheWorkerAndItsTasks) {
  TempDir dir;
  std::string out = dir.path() + "/out";
  Process p({bin_path("zexec-worker"), "--help"}, {}, out);
  ASSERT_TRUE(p.wait_exit(10s));
  EXPECT_TRUE(p.exited_ok());
  std::string text = zexec::test::read_file(out);
  EXPECT_NE(text.find("zexecd"), std::string::npos) << text;
  for (const char* name : {"sleep", "echo", "fail", "crash", "random_sleep", "noop"})
    EXPECT_NE(text.find(name), std::string::npos) << name;
}

}  // namespace
}  // namespace zexec
