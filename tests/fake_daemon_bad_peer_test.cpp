// What the client does with frames it cannot decode (docs/PROTOCOL.md §1, Versions: peers never
// guess; the operation that expected the answer fails, naming the reason). The same cases as
// tests/python/test_bad_peer.py, so both clients are held to the same behaviour: a handshake
// fails at once; after it, every unfinished future fails with ConnectionError, connected()
// turns false and later submits throw. A real zexecd never sends such frames, so the scripted
// test::FakeDaemon plays the daemon.
// The `error` codes that end the connection (docs/PROTOCOL.md §6; the table of
// client-lib/src/future_state.cpp and _connection.py's FATAL_ERROR_CODES) are held to the same
// cases as tests/python/test_bad_peer.py too.
// Nothing sleeps to synchronise: every wait is on a condition, with a deadline.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <msgpack.hpp>
#include <string>
#include <vector>

#include "client_support.hpp"
#include "zexec/protocol.hpp"
#include "zexec/zexec.hpp"

namespace zexec {
namespace {

using namespace std::chrono_literals;
using test::Clock;
using test::FakeDaemon;
using test::quick;
using test::refusing;
using test::TempDir;
using test::wait_until;
using test::what_of;
namespace proto = zexec::proto;

constexpr auto T = 5s;

// A version 2 frame: [2, TYPE, fields...] (this client speaks version 1).
template <class... Fields>
std::string v2_frame(int type, const Fields&... fields) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(2 + sizeof...(fields));
  pk.pack(2);
  pk.pack(type);
  (pk.pack(fields), ...);
  return std::string(b.data(), b.size());
}

// A version 2 update of one ok event for `task_id` (value: msgpack nil).
std::string v2_update(std::uint64_t task_id) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(4);
  pk.pack(2).pack(10).pack(1);
  pk.pack_array(1).pack_array(3).pack(task_id).pack(1);
  pk.pack_bin(1).pack_bin_body("\xc0", 1);
  return std::string(b.data(), b.size());
}

// A connected client with one task sent to the fake daemon.
struct Connected {
  TempDir dir;
  FakeDaemon daemon{dir.ipc("d.sock")};
  Client client{daemon.endpoint(), quick()};
  Future task = client.submit("echo", 1);
  Connected() {
    EXPECT_TRUE(wait_until([&] { return daemon.task_count() == 1; }));
  }
};

// The client after a bad frame: `task` failed with a ConnectionError naming `what` and `why`,
// the connection is broken, a new submit fails at once.
void expect_broken(Connected& c, const std::string& what, const std::string& why) {
  ASSERT_TRUE(c.task.wait_done(T)) << "the future still waits after the bad frame";
  std::string text = what_of([&] { c.task.result<int>(); });
  EXPECT_THROW(c.task.result<int>(), ConnectionError);
  EXPECT_NE(text.find(what + " from zexecd at " + c.daemon.endpoint()), std::string::npos) << text;
  EXPECT_NE(text.find(why), std::string::npos) << text;
  EXPECT_FALSE(c.client.connected());
  EXPECT_NE(c.client.last_error().find(why), std::string::npos) << c.client.last_error();
  auto t0 = Clock::now();
  EXPECT_THROW(c.client.submit("echo", 2), ConnectionError);
  EXPECT_LT(Clock::now() - t0, 1s) << "a broken connection refuses at once";
}

TEST(BadPeerTest, UndecodableWelcomeFailsTheHandshakeNamingTheReason) {
  TempDir dir;
  FakeDaemon::Options o;
  o.raw_welcome = v2_frame(2, 1, "ipc://nowhere", 1, 1000, 10);
  FakeDaemon d(dir.ipc("d.sock"), o);
  ClientOptions co = quick();
  co.connect_timeout = T;
  auto t0 = Clock::now();
  std::string text = what_of([&] { Client c(d.endpoint(), co); });
  EXPECT_THROW(Client(d.endpoint(), co), ConnectionError);
  EXPECT_NE(text.find("undecodable message from zexecd"), std::string::npos) << text;
  EXPECT_NE(text.find("unsupported protocol version 2"), std::string::npos) << text;
  EXPECT_LT(Clock::now() - t0, T - 1s) << "at once, not after the connect timeout";
}

TEST(BadPeerTest, RefusedHelloRaisesTheDaemonsReason) {
  TempDir dir;
  FakeDaemon d(dir.ipc("d.sock"), refusing(proto::Error{"bad_version", "this daemon speaks 7"}));
  try {
    Client c(d.endpoint(), quick());
    ADD_FAILURE() << "connected to a daemon that refused the hello";
  } catch (const DaemonError& e) {  // a ConnectionError
    EXPECT_EQ(e.code(), "bad_version");
    EXPECT_NE(std::string(e.what()).find("speaks 7"), std::string::npos) << e.what();
  }
}

TEST(BadPeerTest, UndecodableUpdateFailsTheUnfinishedFuturesNamingTheReason) {
  Connected c;
  Future unsent_yet = c.client.submit("echo", 3);
  c.daemon.push_raw({v2_update(c.task.id())});
  expect_broken(c, "undecodable update", "unsupported protocol version 2");
  ASSERT_TRUE(unsent_yet.wait_done(T));
  EXPECT_THROW(unsent_yet.result<int>(), ConnectionError);
  EXPECT_EQ(c.client.unfinished(), 0u);
}

TEST(BadPeerTest, AnUpdateOfTwoFramesFailsTheFutures) {
  Connected c;
  std::string update = proto::encode(proto::Update{1, {FakeDaemon::ok_value(c.task.id(), 1)}});
  c.daemon.push_raw({update, update});
  expect_broken(c, "undecodable update", "a message of 2 frames (expected 1)");
}

TEST(BadPeerTest, AnotherMessageOnTheResultsSocketFailsTheFutures) {
  Connected c;
  c.daemon.push_raw({proto::encode(proto::Heartbeat{})});
  expect_broken(c, "undecodable update", "a heartbeat message (only update is sent there)");
}

// It may have been the cancel_reply a cancel() waits for (whose cancelled tasks get no other
// event), or an error saying the daemon forgot us: nothing can be assumed about the tasks.
TEST(BadPeerTest, UndecodableControlFrameFailsTheFuturesAndAWaitingCancel) {
  Connected c;
  auto cancel = std::async(std::launch::async, [&]() -> std::string {
    try {
      return c.task.cancel() ? "true" : "false";
    } catch (const std::exception& e) {
      return e.what();
    }
  });
  ASSERT_TRUE(wait_until([&] { return c.daemon.cancels().size() == 1; }));
  c.daemon.reply_raw({v2_frame(5, 1, std::vector<int>{})});
  expect_broken(c, "undecodable message", "unsupported protocol version 2");
  ASSERT_EQ(cancel.wait_for(T), std::future_status::ready) << "cancel() still waits for its reply";
  EXPECT_EQ(cancel.get(), "false") << "cancel() on a connection that broke says false, as Python's";
}

// cancel() and cancel_all() of a broken connection say "not cancelled" (Python's cancel()
// returns False); the future's own error tells why.
TEST(BadPeerTest, CancelOnABrokenConnectionSaysNotCancelled) {
  Connected c;
  c.daemon.reply(proto::Error{"unknown_client", "forgot you"});
  ASSERT_TRUE(c.task.wait_done(T));
  bool cancelled = true;
  EXPECT_NO_THROW(cancelled = c.task.cancel());
  EXPECT_FALSE(cancelled);
  EXPECT_NO_THROW(cancelled = c.task.cancel(true));
  EXPECT_FALSE(cancelled);
  std::size_t n = 1;
  EXPECT_NO_THROW(n = c.client.cancel_all());
  EXPECT_EQ(n, 0u);
}

// The codes after which no event settles this client's tasks: the end of the connection, each
// future failing with a DaemonError naming the code and the daemon's message.
const char* const kFatalCodes[] = {"unknown_client",   "bad_version",           "shutting_down",
                                   "too_many_clients", "results_socket_failed", "backlogged"};

TEST(BadPeerTest, FatalErrorCodesFailEveryUnfinishedFuture) {
  for (const char* code : kFatalCodes) {
    SCOPED_TRACE(code);
    Connected c;
    c.daemon.reply(proto::Error{code, "refused: (ids 1..1)"});
    ASSERT_TRUE(c.task.wait_done(T)) << "the future still waits after " << code;
    try {
      c.task.result<int>();
      ADD_FAILURE() << "no error";
    } catch (const DaemonError& e) {  // a ConnectionError
      EXPECT_EQ(e.code(), code);
      EXPECT_EQ(e.message(), "refused: (ids 1..1)");
      EXPECT_NE(std::string(e.what()).find("zexecd at " + c.daemon.endpoint() + " reported " + code +
                                           ": refused: (ids 1..1)"),
                std::string::npos)
          << e.what();
    }
    EXPECT_FALSE(c.client.connected());
    EXPECT_NE(c.client.last_error().find(code), std::string::npos) << c.client.last_error();
    try {
      c.client.submit("echo", 2);
      ADD_FAILURE() << "a broken connection took a task";
    } catch (const DaemonError& e) {
      EXPECT_EQ(e.code(), code);
    }
  }
}

// Any other code (bad_message, duplicate_task_id, or one this client does not know) is kept as
// last_error(): the connection and its futures go on (forward compatible).
TEST(BadPeerTest, OtherErrorCodesAreOnlyTheLastError) {
  for (const char* code : {"bad_message", "duplicate_task_id", "some_future_code"}) {
    SCOPED_TRACE(code);
    Connected c;
    c.daemon.reply(proto::Error{code, "just so"});
    ASSERT_TRUE(wait_until([&] { return !c.client.last_error().empty(); }));
    EXPECT_EQ(c.client.last_error(), "zexecd at " + c.daemon.endpoint() + " reported " + code + ": just so");
    EXPECT_TRUE(c.client.connected());
    EXPECT_FALSE(c.task.done());
    c.daemon.update({FakeDaemon::ok_value(c.task.id(), 7)});
    ASSERT_TRUE(c.task.wait_done(T));
    EXPECT_EQ(c.task.result<int>(), 7);
  }
}

// Each refusal of a hello fails the constructor at once with a DaemonError naming the code and
// the daemon's message.
TEST(BadPeerTest, EveryRefusedHelloIsADaemonErrorWithTheCodeAndMessage) {
  for (const char* code : {"shutting_down", "too_many_clients", "results_socket_failed"}) {
    SCOPED_TRACE(code);
    TempDir dir;
    FakeDaemon d(dir.ipc("d.sock"), refusing(proto::Error{code, "not now"}));
    ClientOptions co = quick();
    co.connect_timeout = T;
    auto t0 = Clock::now();
    try {
      Client c(d.endpoint(), co);
      ADD_FAILURE() << "connected to a daemon that refused the hello";
    } catch (const DaemonError& e) {
      EXPECT_EQ(e.code(), code);
      EXPECT_EQ(e.message(), "not now");
      EXPECT_EQ(std::string(e.what()), "zexecd at " + d.endpoint() + " reported " + code + ": not now");
    }
    EXPECT_LT(Clock::now() - t0, T - 1s) << "at once, not after the connect timeout";
  }
}

// A closed client fails what is left with a ConnectionError (Python: the same class).
TEST(BadPeerTest, CloseFailsLeftoverFuturesWithAConnectionError) {
  Connected c;
  c.client.close();
  ASSERT_TRUE(c.task.wait_done(T));
  std::string text = what_of([&] { c.task.result<int>(); });
  EXPECT_THROW(c.task.result<int>(), ConnectionError);
  EXPECT_NE(text.find("closed before the task finished"), std::string::npos) << text;
  bool cancelled = true;
  EXPECT_NO_THROW(cancelled = c.task.cancel());
  EXPECT_FALSE(cancelled);
}

TEST(BadPeerTest, AControlMessageOfTwoFramesFailsTheFutures) {
  Connected c;
  std::string heartbeat = proto::encode(proto::Heartbeat{});
  c.daemon.reply_raw({heartbeat, heartbeat});
  expect_broken(c, "undecodable message", "a message of 2 frames (expected 1)");
}

}  // namespace
}  // namespace zexec
