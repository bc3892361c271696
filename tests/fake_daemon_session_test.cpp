// The client across a daemon restart (docs/PROTOCOL.md §3, Sessions and Acceptance), against
// SessionDaemon: a scripted zexecd (ROUTER + per-connection results PUSH on a thread of the
// test) that names a session in `welcome`, resumes it on a `hello` that carries it, and can be
// stopped and started again on the same ipc endpoint, as a restarted daemon would be.
// Nothing sleeps to synchronise: every wait is on a condition, with a deadline.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <variant>
#include <vector>
#include <zmq.hpp>

#include "client_support.hpp"
#include "zexec/protocol.hpp"
#include "zexec/zexec.hpp"

namespace zexec {
namespace {

using namespace std::chrono_literals;
using test::Clock;
using test::FakeDaemon;
using test::quick;
using test::TempDir;
using test::wait_until;
using test::what_of;
namespace proto = zexec::proto;

const std::string kToken =
    std::string("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x00", 16);

class SessionDaemon {
 public:
  struct Options {
    std::uint32_t heartbeat_ms = 50;
    std::uint64_t session = 7;  // 0: a daemon without a journal
  };
  // What one daemon run (a "generation": 1, then +1 per start()) received, in order.
  struct Received {
    std::vector<proto::Hello> hellos;
    std::vector<proto::Welcome> welcomes;             // the answers
    std::vector<std::vector<std::uint64_t>> submits;  // the task ids of each submit frame
    std::vector<proto::Cancel> cancels;
    std::vector<proto::Type> order;  // hello, submit, cancel (no heartbeat, ack)
    std::uint64_t last_ack = 0;
  };

  SessionDaemon(std::string endpoint, Options o) : endpoint_(std::move(endpoint)), opts_(o) {
    session_ = opts_.session;
    token_ = opts_.session ? kToken : std::string();
    bind();
    thread_ = std::thread([this] { loop(); });
  }
  ~SessionDaemon() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }

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

  // The daemon goes away: both its sockets close.
  void stop() {
    post([&] {
      router_.close();
      results_.close();
      rid_.clear();
    });
  }
  // A new daemon run on the same endpoint; `forget`: it does not know the session any more.
  void start(bool forget) {
    post([&] {
      if (forget) {
        session_ = opts_.session ? session_ + 1 : 0;
        token_ = opts_.session ? std::string(16, 'n') : std::string();
        known_ = false;
      }
      bind();
    });
  }
  void update(std::vector<proto::Event> events, std::uint64_t accepted_through = 0) {
    post([&] {
      proto::Update u{next_seq_++, std::move(events), accepted_through};
      results_.send(zmq::buffer(proto::encode(u)), zmq::send_flags::none);
    });
  }
  void reply(proto::Message m) {
    post([&] { reply_now(m); });
  }
  void set_mute(bool mute) { mute_ = mute; }  // no heartbeats, until the next hello
  void answer_cancels(bool on) { answer_cancels_ = on; }
  // The next n hellos get no answer / `error` shutting_down.
  void ignore_hellos(int n) { ignore_hellos_ = n; }
  void refuse_hellos(int n) { refuse_hellos_ = n; }

  Received received(int generation) const {
    std::lock_guard lk(mu_);
    auto it = got_.find(generation);
    return it == got_.end() ? Received{} : it->second;
  }
  int generation() const { return generation_; }
  std::size_t hellos() const {
    std::lock_guard lk(mu_);
    std::size_t n = 0;
    for (const auto& [g, r] : got_) n += r.hellos.size();
    return n;
  }
  std::uint64_t session() const { return session_; }

 private:
  void bind() {
    ++generation_;
    router_ = zmq::socket_t(ctx_, zmq::socket_type::router);
    router_.set(zmq::sockopt::linger, 0);
    router_.bind(endpoint_);
  }

  void loop() {
    auto last_hb = Clock::now();
    while (!stop_) {
      if (router_.handle()) {
        zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, 2ms);
        for (;;) {
          zmq::message_t rid, frame;
          if (!router_.recv(rid, zmq::recv_flags::dontwait)) break;
          (void)router_.recv(frame, zmq::recv_flags::none);
          handle(rid.to_string(), frame.to_string_view());
        }
      } else {
        std::this_thread::sleep_for(2ms);  // the daemon is down: a loop tick, not synchronisation
      }
      std::vector<std::function<void()>> cmds;
      {
        std::lock_guard lk(mu_);
        cmds.swap(commands_);
      }
      for (auto& c : cmds) c();
      if (router_.handle() && !rid_.empty() && !mute_ &&
          Clock::now() - last_hb >= std::chrono::milliseconds(opts_.heartbeat_ms)) {
        reply_now(proto::Heartbeat{});
        last_hb = Clock::now();
      }
    }
  }

  void reply_now(const proto::Message& m) {
    router_.send(zmq::buffer(rid_), zmq::send_flags::sndmore);
    router_.send(zmq::buffer(proto::encode(m)), zmq::send_flags::none);
  }

  void handle(const std::string& rid, std::string_view frame) {
    proto::Decoded d = proto::decode(frame);
    ASSERT_TRUE(d) << d.error;
    proto::Message& m = *d.message;
    std::unique_lock lk(mu_);
    Received& r = got_[generation_];
    if (auto* h = std::get_if<proto::Hello>(&m)) {
      EXPECT_EQ(h->pid, getpid());
      r.hellos.push_back(*h);
      r.order.push_back(proto::Type::hello);
      lk.unlock();
      if (ignore_hellos_ > 0) {
        --ignore_hellos_;
        return;
      }
      if (refuse_hellos_ > 0) {
        --refuse_hellos_;
        router_.send(zmq::buffer(rid), zmq::send_flags::sndmore);
        router_.send(zmq::buffer(proto::encode(proto::Error{"shutting_down", "zexecd is stopping"})),
                     zmq::send_flags::none);
        return;
      }
      rid_ = rid;
      mute_ = false;
      next_seq_ = 1;  // per connection
      proto::Welcome w;
      w.client_id = ++client_id_;
      w.workers = 4;
      w.heartbeat_ms = opts_.heartbeat_ms;
      w.session = session_;
      w.token = token_;
      w.resumed = opts_.session != 0 && known_ && h->session == session_ && h->token == token_;
      known_ = opts_.session != 0;
      results_ = zmq::socket_t(ctx_, zmq::socket_type::push);
      results_.set(zmq::sockopt::linger, 0);
      results_.bind(endpoint_ + ".r" + std::to_string(client_id_));
      w.results_endpoint = results_.get(zmq::sockopt::last_endpoint);
      {
        std::lock_guard relock(mu_);  // recorded before the client can see it
        got_[generation_].welcomes.push_back(w);
      }
      reply_now(w);
      return;
    }
    if (rid != rid_) return;  // a DEALER that said no hello here (one ZeroMQ reconnected)
    if (auto* s = std::get_if<proto::Submit>(&m)) {
      std::vector<std::uint64_t> ids;
      for (const auto& t : s->tasks) ids.push_back(t.id);
      r.submits.push_back(std::move(ids));
      r.order.push_back(proto::Type::submit);
      return;
    }
    if (auto* c = std::get_if<proto::Cancel>(&m)) {
      r.cancels.push_back(*c);
      r.order.push_back(proto::Type::cancel);
      lk.unlock();
      if (answer_cancels_) {
        proto::CancelReply reply{c->request_id, {}};
        for (auto id : c->task_ids) reply.outcomes.emplace_back(id, proto::CancelOutcome::cancelled);
        reply_now(reply);
      }
      return;
    }
    if (auto* a = std::get_if<proto::Ack>(&m)) r.last_ack = std::max(r.last_ack, a->seq);
  }

  std::string endpoint_;
  Options opts_;
  zmq::context_t ctx_;
  zmq::socket_t router_, results_;
  std::string rid_;
  std::uint64_t next_seq_ = 1;
  std::uint64_t client_id_ = 0;
  std::atomic<std::uint64_t> session_{0};
  std::string token_;
  bool known_ = false;  // the session has been handed out by this daemon (run) or an earlier one
  std::atomic<int> generation_{0};
  std::thread thread_;
  std::atomic<bool> stop_{false}, mute_{false}, answer_cancels_{false};
  std::atomic<int> ignore_hellos_{0}, refuse_hellos_{0};
  mutable std::mutex mu_;
  std::vector<std::function<void()>> commands_;
  std::map<int, Received> got_;
};

SessionDaemon::Options with_session(std::uint64_t session) {
  SessionDaemon::Options o;
  o.session = session;
  return o;
}

ClientOptions reconnecting(std::chrono::milliseconds timeout = 5s) {
  ClientOptions o = quick();
  o.reconnect_timeout = timeout;
  return o;
}

// Counts a future's completions (a done callback runs once per completion).
struct DoneCounter {
  std::atomic<int> n{0};
  void watch(const Future& f) {
    f.add_done_callback([this](Future) { ++n; });
  }
};

TEST(SessionTest, ResumeResendsOnlyUnacceptedSubmitsAndResolvesOnce) {
  TempDir dir;
  SessionDaemon d(dir.ipc("d.sock"), with_session(7));
  Client c(d.endpoint(), reconnecting());
  ASSERT_EQ(d.received(1).welcomes.size(), 1u);
  EXPECT_EQ(d.received(1).welcomes[0].session, 7u);

  // Three submit frames, one task each.
  Future f1 = c.submit("echo", 1);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 1; }));
  Future f2 = c.submit("echo", 2);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 2; }));
  Future f3 = c.submit("echo", 3);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 3; }));
  DoneCounter done1, done2, done3, done4;
  done1.watch(f1);
  done2.watch(f2);
  done3.watch(f3);

  // The first two are on disk; the client has seen it once it acks the update.
  d.update({}, f2.id());
  ASSERT_TRUE(wait_until([&] { return d.received(1).last_ack >= 1; }));

  // The daemon dies. The client notices at once (its DEALER disconnects) and keeps going.
  d.stop();
  ASSERT_TRUE(wait_until([&] { return !c.connected(); }));
  EXPECT_FALSE(f1.done());
  EXPECT_FALSE(f3.done());
  Future f4 = c.submit("echo", 4);  // queued while reconnecting
  done4.watch(f4);

  // It comes back and knows the session: the client resumes it.
  d.start(false);
  ASSERT_TRUE(wait_until([&] { return c.connected(); }));
  ASSERT_TRUE(wait_until([&] { return d.received(2).submits.size() >= 2; }));
  SessionDaemon::Received r = d.received(2);
  ASSERT_EQ(r.hellos.size(), 1u);
  EXPECT_EQ(r.hellos[0].session, 7u);
  EXPECT_EQ(r.hellos[0].token, kToken);
  ASSERT_EQ(r.welcomes.size(), 1u);
  EXPECT_TRUE(r.welcomes[0].resumed);
  // The unaccepted submit first, then what was queued meanwhile; the accepted ones never.
  ASSERT_EQ(r.order.size(), 3u);
  EXPECT_EQ(r.order[0], proto::Type::hello);
  EXPECT_EQ(r.submits[0], std::vector<std::uint64_t>{f3.id()});
  EXPECT_EQ(r.submits[1], std::vector<std::uint64_t>{f4.id()});

  // Results on the new connection (seq from 1 again), with a final event delivered twice.
  d.update({FakeDaemon::ok_value(f1.id(), 10), FakeDaemon::ok_value(f2.id(), 20)});
  d.update({FakeDaemon::ok_value(f3.id(), 30), FakeDaemon::ok_value(f4.id(), 40),
            FakeDaemon::ok_value(f2.id(), 99)});
  EXPECT_EQ(f1.result<int>(10s), 10);
  EXPECT_EQ(f2.result<int>(10s), 20);
  EXPECT_EQ(f3.result<int>(10s), 30);
  EXPECT_EQ(f4.result<int>(10s), 40);
  ASSERT_TRUE(wait_until([&] { return d.received(2).last_ack >= 2; })) << "seq tracking restarted";
  EXPECT_EQ(f2.result<int>(), 20) << "the duplicate final event is ignored";
  EXPECT_TRUE(c.wait_all(10s));
  EXPECT_EQ(c.unfinished(), 0u);
  EXPECT_EQ(done1.n, 1);
  EXPECT_EQ(done2.n, 1);
  EXPECT_EQ(done3.n, 1);
  EXPECT_EQ(done4.n, 1);
  EXPECT_EQ(d.received(2).submits.size(), 2u) << "nothing sent twice";

  // And the client goes on as usual.
  Future f5 = c.submit("echo", 5);
  ASSERT_TRUE(wait_until([&] { return d.received(2).submits.size() == 3; }));
  d.update({FakeDaemon::ok_value(f5.id(), 50)});
  EXPECT_EQ(f5.result<int>(10s), 50);
}

TEST(SessionTest, NotResumedFailsSentTasksAndGoesOnInANewSession) {
  TempDir dir;
  SessionDaemon d(dir.ipc("d.sock"), with_session(7));
  Client c(d.endpoint(), reconnecting());
  Future f1 = c.submit("echo", 1);
  Future f2 = c.submit("echo", 2);
  ASSERT_TRUE(wait_until([&] {
    return d.received(1).submits.size() >= 1 && [&] {
      std::size_t n = 0;
      for (const auto& s : d.received(1).submits) n += s.size();
      return n == 2;
    }();
  }));

  d.stop();
  ASSERT_TRUE(wait_until([&] { return !c.connected(); }));
  Future f3 = c.submit("echo", 3);  // still in the outbox: survives into the new session
  d.start(true);                    // a daemon that lost the session

  ASSERT_TRUE(f1.wait_done(10s));
  ASSERT_TRUE(f2.wait_done(10s));
  for (Future* f : {&f1, &f2}) {
    EXPECT_THROW(f->result<int>(), ConnectionError);
    std::string text = what_of([&] { f->result<int>(); });
    EXPECT_NE(text.find("did not resume this client's session"), std::string::npos) << text;
    EXPECT_NE(text.find(d.endpoint()), std::string::npos) << text;
  }
  ASSERT_TRUE(wait_until([&] { return c.connected(); }));
  SessionDaemon::Received r = d.received(2);
  ASSERT_EQ(r.hellos.size(), 1u);
  EXPECT_EQ(r.hellos[0].session, 7u);
  ASSERT_EQ(r.welcomes.size(), 1u);
  EXPECT_EQ(r.welcomes[0].session, 8u);
  EXPECT_FALSE(r.welcomes[0].resumed);

  ASSERT_TRUE(wait_until([&] { return d.received(2).submits.size() == 1; }));
  EXPECT_EQ(d.received(2).submits[0], std::vector<std::uint64_t>{f3.id()}) << "lost tasks are not resent";
  Future f4 = c.submit("echo", 4);
  ASSERT_TRUE(wait_until([&] { return d.received(2).submits.size() == 2; }));
  EXPECT_EQ(d.received(2).submits[1], std::vector<std::uint64_t>{f4.id()});
  d.update({FakeDaemon::ok_value(f3.id(), 30), FakeDaemon::ok_value(f4.id(), 40)});
  EXPECT_EQ(f3.result<int>(10s), 30);
  EXPECT_EQ(f4.result<int>(10s), 40);
  EXPECT_TRUE(c.connected());
}

TEST(SessionTest, ReconnectTimeoutFailsEverything) {
  TempDir dir;
  SessionDaemon d(dir.ipc("d.sock"), with_session(7));
  Client c(d.endpoint(), reconnecting(1s));
  Future f1 = c.submit("sleep", 1.0);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 1; }));

  auto t0 = Clock::now();
  d.stop();  // and never comes back
  ASSERT_TRUE(wait_until([&] { return !c.connected(); }));
  Future f2 = c.submit("sleep", 2.0);  // queued while reconnecting
  ASSERT_TRUE(f1.wait_done(10s));
  EXPECT_GE(Clock::now() - t0, 900ms);
  ASSERT_TRUE(f2.wait_done(10s));
  for (Future* f : {&f1, &f2}) {
    EXPECT_THROW(f->result<double>(), DaemonLostError);  // a ConnectionError
    std::string text = what_of([&] { f->result<double>(); });
    EXPECT_NE(text.find("lost connection to zexecd at " + d.endpoint()), std::string::npos) << text;
    EXPECT_NE(text.find("could not reconnect within 1 s"), std::string::npos) << text;
  }
  EXPECT_FALSE(c.connected());
  EXPECT_THROW(c.submit("sleep", 1.0), ConnectionError);
  EXPECT_EQ(d.hellos(), 1u);
}

TEST(SessionTest, WithoutASessionALostDaemonFailsEverythingAndNothingReconnects) {
  TempDir dir;
  SessionDaemon d(dir.ipc("d.sock"), with_session(0));
  Client c(d.endpoint(), reconnecting(10s));
  Future f = c.submit("sleep", 1.0);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 1; }));

  d.stop();
  d.start(true);  // a new daemon is there: the client must not say hello to it
  ASSERT_TRUE(f.wait_done(10s));
  EXPECT_THROW(f.result<double>(), DaemonLostError);
  std::string text = what_of([&] { f.result<double>(); });
  EXPECT_NE(text.find("lost connection to zexecd at " + d.endpoint() + ": nothing heard for"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("keeps no journal"), std::string::npos) << text;
  EXPECT_FALSE(c.connected());
  EXPECT_THROW(c.submit("sleep", 1.0), DaemonLostError);
  EXPECT_EQ(d.received(2).hellos.size(), 0u);
}

TEST(SessionTest, SilenceAlsoReconnectsAndResumes) {
  TempDir dir;
  SessionDaemon d(dir.ipc("d.sock"), with_session(7));
  Client c(d.endpoint(), reconnecting());
  Future f1 = c.submit("echo", 1);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 1; }));
  d.update({}, f1.id());
  ASSERT_TRUE(wait_until([&] { return d.received(1).last_ack >= 1; }));
  Future f2 = c.submit("echo", 2);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 2; }));

  d.set_mute(true);  // alive but silent: after 5 heartbeats the client says hello again
  ASSERT_TRUE(wait_until([&] { return d.received(1).hellos.size() == 2; }));
  EXPECT_EQ(d.received(1).hellos[1].session, 7u);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 3; }));
  EXPECT_EQ(d.received(1).submits[2], std::vector<std::uint64_t>{f2.id()});
  ASSERT_TRUE(wait_until([&] { return c.connected(); }));
  d.update({FakeDaemon::ok_value(f1.id(), 10), FakeDaemon::ok_value(f2.id(), 20)});
  EXPECT_EQ(f1.result<int>(10s), 10);
  EXPECT_EQ(f2.result<int>(10s), 20);
}

TEST(SessionTest, UnansweredCancelIsSentAgainAfterTheSubmits) {
  TempDir dir;
  SessionDaemon d(dir.ipc("d.sock"), with_session(7));
  Client c(d.endpoint(), reconnecting());
  Future f = c.submit("sleep", 10.0);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 1; }));
  auto cancelled = std::async(std::launch::async, [&] { return f.cancel(); });
  ASSERT_TRUE(wait_until([&] { return d.received(1).cancels.size() == 1; }));
  const std::uint64_t request_id = d.received(1).cancels[0].request_id;

  d.answer_cancels(true);
  d.stop();
  d.start(false);
  ASSERT_EQ(cancelled.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(cancelled.get());
  EXPECT_TRUE(f.cancelled());
  SessionDaemon::Received r = d.received(2);
  ASSERT_EQ(r.order.size(), 3u);
  EXPECT_EQ(r.order[1], proto::Type::submit);
  EXPECT_EQ(r.order[2], proto::Type::cancel);
  EXPECT_EQ(r.cancels[0].request_id, request_id);
  EXPECT_EQ(r.cancels[0].task_ids, std::vector<std::uint64_t>{f.id()});
}

TEST(SessionTest, AnUnansweredOrRefusedHelloIsTriedAgain) {
  TempDir dir;
  SessionDaemon d(dir.ipc("d.sock"), with_session(7));
  Client c(d.endpoint(), reconnecting(2s));  // a hello waits 0.5 s for its welcome
  Future f = c.submit("echo", 1);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 1; }));

  d.stop();
  ASSERT_TRUE(wait_until([&] { return !c.connected(); }));
  d.ignore_hellos(1);
  d.refuse_hellos(1);
  auto t0 = Clock::now();
  d.start(false);
  ASSERT_TRUE(wait_until([&] { return c.connected(); }));
  EXPECT_GE(Clock::now() - t0, 400ms) << "the unanswered hello was waited for";
  SessionDaemon::Received r = d.received(2);
  ASSERT_EQ(r.hellos.size(), 3u);  // unanswered, refused, welcomed: each from a fresh DEALER
  for (const auto& h : r.hellos) EXPECT_EQ(h.session, 7u);
  ASSERT_EQ(r.welcomes.size(), 1u);
  EXPECT_TRUE(r.welcomes[0].resumed);
  ASSERT_TRUE(wait_until([&] { return d.received(2).submits.size() == 1; }));
  d.update({FakeDaemon::ok_value(f.id(), 10)});
  EXPECT_EQ(f.result<int>(10s), 10);
}

TEST(SessionTest, ZeroReconnectTimeoutFailsAtOnceAsWithoutASession) {
  TempDir dir;
  SessionDaemon d(dir.ipc("d.sock"), with_session(7));
  Client c(d.endpoint(), reconnecting(0ms));
  Future f = c.submit("sleep", 1.0);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 1; }));
  d.stop();
  ASSERT_TRUE(f.wait_done(10s));
  EXPECT_THROW(f.result<double>(), DaemonLostError);
  std::string text = what_of([&] { f.result<double>(); });
  EXPECT_NE(text.find("nothing heard for"), std::string::npos) << text;
  EXPECT_EQ(text.find("journal"), std::string::npos) << text;
  EXPECT_EQ(d.hellos(), 1u);
}

TEST(SessionTest, AForgottenConnectionResumesItsSession) {
  TempDir dir;
  SessionDaemon d(dir.ipc("d.sock"), with_session(7));
  Client c(d.endpoint(), reconnecting());
  Future f = c.submit("echo", 1);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 1; }));
  // The daemon forgot this connection (client timeout), not the session.
  d.reply(proto::Error{"unknown_client", "send hello before submit"});
  ASSERT_TRUE(wait_until([&] { return d.received(1).hellos.size() == 2; }));
  EXPECT_EQ(d.received(1).hellos[1].session, 7u);
  ASSERT_TRUE(wait_until([&] { return d.received(1).submits.size() == 2; }));
  EXPECT_EQ(d.received(1).submits[1], std::vector<std::uint64_t>{f.id()});
  d.update({FakeDaemon::ok_value(f.id(), 10)});
  EXPECT_EQ(f.result<int>(10s), 10);
  EXPECT_TRUE(c.connected());
}

TEST(SessionTest, ABurstResendsExactlyTheFramesWithUnacceptedTasks) {
  TempDir dir;
  SessionDaemon d(dir.ipc("d.sock"), with_session(7));
  Client c(d.endpoint(), reconnecting());
  auto count = [&](int gen) {
    std::size_t n = 0;
    for (const auto& f : d.received(gen).submits) n += f.size();
    return n;
  };
  // Ten bursts of 300: at least ten frames (a burst may go in several).
  std::vector<Future> fs;
  for (int burst = 0; burst < 10; ++burst) {
    for (int i = 0; i < 300; ++i) fs.push_back(c.submit("echo", burst * 300 + i));
    ASSERT_TRUE(wait_until([&] { return count(1) == fs.size(); }));
  }
  ASSERT_GE(d.received(1).submits.size(), 10u);
  const std::uint64_t accepted = fs[1700].id();
  d.update({}, accepted);
  ASSERT_TRUE(wait_until([&] { return d.received(1).last_ack >= 1; }));

  d.stop();
  ASSERT_TRUE(wait_until([&] { return !c.connected(); }));
  d.start(false);
  ASSERT_TRUE(wait_until([&] { return count(2) >= fs.size() - 1701; }));
  // Every frame sent again holds an unaccepted task; together they hold all of them, in order.
  std::vector<std::uint64_t> resent;
  for (const auto& frame : d.received(2).submits) {
    ASSERT_FALSE(frame.empty());
    EXPECT_GT(frame.back(), accepted);
    resent.insert(resent.end(), frame.begin(), frame.end());
  }
  EXPECT_TRUE(std::is_sorted(resent.begin(), resent.end()));
  for (std::size_t i = 1701; i < fs.size(); ++i)
    EXPECT_TRUE(std::binary_search(resent.begin(), resent.end(), fs[i].id())) << i;

  std::vector<proto::Event> events;
  for (std::size_t i = 0; i < fs.size(); ++i)
    events.push_back(FakeDaemon::ok_value(fs[i].id(), static_cast<int>(i)));
  d.update(std::move(events));
  for (std::size_t i = 0; i < fs.size(); ++i) ASSERT_EQ(fs[i].result<int>(10s), static_cast<int>(i));
}

TEST(SessionTest, SubmitBackpressureAppliesWhileReconnecting) {
  TempDir dir;
  SessionDaemon d(dir.ipc("d.sock"), with_session(7));
  ClientOptions o = reconnecting();
  o.max_outbox = 2;
  o.submit_timeout = 100ms;
  Client c(d.endpoint(), o);
  d.stop();
  ASSERT_TRUE(wait_until([&] { return !c.connected(); }));
  Future f1 = c.submit("echo", 1);
  Future f2 = c.submit("echo", 2);
  EXPECT_THROW(c.submit("echo", 3), QueueFullError);
  d.start(false);
  ASSERT_TRUE(wait_until([&] { return d.received(2).submits.size() >= 1; }));
  ASSERT_TRUE(wait_until([&] {
    std::size_t n = 0;
    for (const auto& f : d.received(2).submits) n += f.size();
    return n == 2;
  }));
  d.update({FakeDaemon::ok_value(f1.id(), 1), FakeDaemon::ok_value(f2.id(), 2)});
  EXPECT_EQ(f1.result<int>(10s), 1);
  EXPECT_EQ(f2.result<int>(10s), 2);
}

}  // namespace
}  // namespace zexec
