// Shared by the client library's tests (future_test, fake_daemon_test,
// fake_daemon_connection_test, real_daemon_test): small helpers and FakeDaemon, a scripted zexecd
// (ROUTER + per-client PUSH in a thread of the test) following docs/PROTOCOL.md §2-3.
// Nothing sleeps to synchronise: every wait is on a condition, with a deadline.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <msgpack.hpp>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>
#include <vector>
#include <zmq.hpp>

#include "support.hpp"
#include "zexec/protocol.hpp"
#include "zexec/zexec.hpp"

namespace zexec::test {

using Clock = std::chrono::steady_clock;
namespace proto = zexec::proto;

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
inline int free_tcp_port() {
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

// A scripted zexecd: ROUTER on the endpoint, one PUSH results socket for the (single) client,
// all on its own thread. Tests script it through handlers (run on that thread) and post()
// (runs a function there), and read what the client sent through the accessors.
class FakeDaemon {
 public:
  struct Options {
    std::uint32_t heartbeat_ms = 1000;
    bool welcome = true;                     // answer hello (with welcome, or `refuse`)
    std::optional<proto::Error> refuse;      // answer hello with this error instead
    std::string results_bind;                // default: ENDPOINT.r1 (ipc) / tcp://127.0.0.1:* (tcp)
    std::uint32_t max_pending = 0;           // Welcome::max_pending (0 = no limit)
    std::optional<std::string> raw_welcome;  // answer hello with these bytes instead
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
  // Raw bytes, one message of these frames, on the results socket / to the client (for peers
  // that send what the client cannot decode).
  void push_raw(std::vector<std::string> frames) {
    post([&] { send_frames(results_, frames); });
  }
  void reply_raw(std::vector<std::string> frames) {
    post([&] { reply_raw_now(frames); });
  }
  void reply_raw_now(const std::vector<std::string>& frames) {
    router_.send(zmq::buffer(rid_), zmq::send_flags::sndmore);
    send_frames(router_, frames);
  }

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
  int acks() const { return acks_; }  // ack messages received
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

  static void send_frames(zmq::socket_t& s, const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i)
      s.send(zmq::buffer(frames[i]),
             i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
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
      if (opts_.refuse || opts_.raw_welcome) {
        if (opts_.refuse)
          reply_now(*opts_.refuse);
        else
          reply_raw_now({*opts_.raw_welcome});
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
      ++acks_;
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
  std::atomic<int> acks_{0};
  mutable std::mutex mu_;
  std::vector<std::function<void()>> commands_;
  std::vector<proto::TaskSpec> tasks_;
  std::vector<proto::Cancel> cancels_;
  std::size_t submits_ = 0;
};

inline FakeDaemon::Options heartbeat_every(std::uint32_t ms) {
  FakeDaemon::Options o;
  o.heartbeat_ms = ms;
  return o;
}
inline FakeDaemon::Options no_welcome() {
  FakeDaemon::Options o;
  o.welcome = false;
  return o;
}
inline FakeDaemon::Options refusing(proto::Error e) {
  FakeDaemon::Options o;
  o.refuse = std::move(e);
  return o;
}
inline FakeDaemon::Options results_at(std::string bind) {
  FakeDaemon::Options o;
  o.results_bind = std::move(bind);
  return o;
}

inline ClientOptions quick() {
  ClientOptions o;
  o.connect_timeout = 5s;
  o.cancel_timeout = 5s;
  return o;
}

}  // namespace zexec::test
