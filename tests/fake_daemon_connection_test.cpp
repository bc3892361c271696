// The client's connection to a scripted fake daemon (test::FakeDaemon, in client_support.hpp),
// following docs/PROTOCOL.md §2-3: heartbeats and silence, errors from the daemon, a refused or
// unanswered handshake, tcp result endpoints, and closing (frames it cannot decode:
// fake_daemon_bad_peer_test.cpp).
// Nothing sleeps to synchronise: every wait is on a condition, with a deadline.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <regex>
#include <string>

#include "client_support.hpp"
#include "zexec/protocol.hpp"
#include "zexec/zexec.hpp"

namespace zexec {
namespace {

using namespace std::chrono_literals;
using test::Clock;
using test::FakeDaemon;
using test::free_tcp_port;
using test::heartbeat_every;
using test::no_welcome;
using test::quick;
using test::refusing;
using test::results_at;
using test::TempDir;
using test::wait_until;
using test::what_of;
namespace proto = zexec::proto;

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
  EXPECT_THROW(f.result<double>(), DaemonLostError);  // a ConnectionError
  EXPECT_FALSE(c.connected());
  EXPECT_NE(c.last_error().find("lost connection"), std::string::npos);
  EXPECT_THROW(c.submit("sleep", 1.0), DaemonLostError);
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
  try {
    f.result<double>();
    ADD_FAILURE() << "no exception";
  } catch (const DaemonError& e) {  // a ConnectionError
    EXPECT_EQ(e.code(), "unknown_client");
  }
  EXPECT_NE(c.last_error().find("unknown_client"), std::string::npos);
  EXPECT_FALSE(c.connected());
  EXPECT_THROW(c.submit("sleep", 1.0), DaemonError);
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
  EXPECT_THROW(Client(d.endpoint(), o), DaemonError);
  EXPECT_NE(text.find("shutting_down: zexecd is stopping"), std::string::npos) << text;
}

// A welcome this client cannot decode, and other bad frames: fake_daemon_bad_peer_test.cpp.

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

}  // namespace
}  // namespace zexec
