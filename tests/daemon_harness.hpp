// A real zexecd for tests, and a minimal client that speaks docs/PROTOCOL.md over raw ZeroMQ
// (no client library), so tests see the daemon's own behaviour.
#pragma once

#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <msgpack.hpp>
#include <set>
#include <zmq.hpp>

#include "support.hpp"
#include "zexec/protocol.hpp"

namespace zexec::test {

namespace proto = zexec::proto;

template <class... A>
std::string args(const A&... a) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(sizeof...(a));
  (pk.pack(a), ...);
  return std::string(buf.data(), buf.size());
}

template <class T>
T value_of(const proto::Event& e) {
  auto oh = msgpack::unpack(e.value.data(), e.value.size());
  return oh.get().as<T>();
}

// The answer to `status` (docs/PROTOCOL.md) of the daemon at `endpoint`, as a msgpack object
// owned by the handle.
inline msgpack::object_handle status_at(zmq::context_t& ctx, const std::string& endpoint) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(endpoint);
  std::string frame = proto::encode(proto::Status{});
  s.send(zmq::buffer(frame), zmq::send_flags::none);
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  for (;;) {
    if (zmq::poll(&item, 1, std::chrono::seconds(10)) == 0) throw std::runtime_error("no status reply");
    zmq::message_t msg;
    (void)s.recv(msg);
    auto d = proto::decode(msg.to_string_view());
    if (d && std::holds_alternative<proto::StatusReply>(*d.message)) {
      const std::string& body = std::get<proto::StatusReply>(*d.message).body;
      return msgpack::unpack(body.data(), body.size());
    }
  }
}

class Daemon {
 public:
  // ZEXEC_TEST_LOG_LEVEL=debug shows the daemon's view of a failing test.
  static std::string log_level() {
    const char* l = std::getenv("ZEXEC_TEST_LOG_LEVEL");
    return l && *l ? l : "warn";
  }
  explicit Daemon(int workers, std::string endpoint = {}, std::vector<std::string> extra = {}) {
    endpoint_ = endpoint.empty() ? dir_.ipc("d.sock") : endpoint;
    std::vector<std::string> argv = {bin_path("zexecd"),      "--endpoint",  endpoint_,   "--workers",
                                     std::to_string(workers), "--log-level", log_level(), "--print-endpoint"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    out_ = dir_.path() + "/stdout";
    proc_ = std::make_unique<Process>(argv, std::vector<std::string>{}, out_);
    // Serving once it printed its endpoint (tcp://127.0.0.1:* resolves to the real port).
    bool up = wait_until([&] {
      std::ifstream f(out_);
      std::string line;
      if (std::getline(f, line) && !line.empty()) {
        endpoint_ = line;
        return true;
      }
      return !proc_->running();
    });
    if (!up || !proc_->running()) throw std::runtime_error("zexecd did not start");
  }
  const std::string& endpoint() const { return endpoint_; }
  // The daemon's answer to `status` (docs/PROTOCOL.md), as a msgpack object owned by the handle.
  msgpack::object_handle status(zmq::context_t& ctx) const { return status_at(ctx, endpoint_); }
  // One of status's totals (counters over the daemon's life).
  std::uint64_t total(zmq::context_t& ctx, const std::string& key) const {
    auto oh = status(ctx);
    using Map = std::map<std::string, msgpack::object>;
    return oh.get().as<Map>().at("totals").as<Map>().at(key).as<std::uint64_t>();
  }
  // Pids of the workers that said hello and take tasks.
  std::vector<pid_t> ready_worker_pids(zmq::context_t& ctx) const {
    auto oh = status(ctx);
    auto st = oh.get().as<std::map<std::string, msgpack::object>>();
    std::vector<pid_t> pids;
    for (auto& w : st.at("workers").as<std::vector<std::map<std::string, msgpack::object>>>())
      if (w.at("state").as<std::string>() == "ready") pids.push_back(w.at("pid").as<pid_t>());
    return pids;
  }
  // The daemon's worker processes right now (its children).
  std::vector<pid_t> worker_pids() const {
    std::vector<pid_t> pids;
    std::ifstream f("/proc/" + std::to_string(proc_->pid()) + "/task/" + std::to_string(proc_->pid()) +
                    "/children");
    for (pid_t p; f >> p;) pids.push_back(p);
    return pids;
  }
  Process& process() { return *proc_; }

 private:
  TempDir dir_;
  std::string endpoint_, out_;
  std::unique_ptr<Process> proc_;
};

// A minimal protocol-level client.
class RawClient {
 public:
  explicit RawClient(zmq::context_t& ctx, const std::string& endpoint)
      : dealer_(ctx, zmq::socket_type::dealer) {
    dealer_.set(zmq::sockopt::linger, 0);
    dealer_.connect(endpoint);
    send(proto::Hello{"raw-test", getpid()});
    auto m = recv_control(10s);
    if (!m || !std::holds_alternative<proto::Welcome>(*m)) throw std::runtime_error("no welcome");
    welcome_ = std::get<proto::Welcome>(*m);
    results_ = zmq::socket_t(ctx, zmq::socket_type::pull);
    results_.set(zmq::sockopt::linger, 0);
    std::string ep = welcome_.results_endpoint;
    if (ep.rfind("tcp://0.0.0.0:", 0) == 0) ep = "tcp://127.0.0.1:" + ep.substr(14);
    results_.connect(ep);
  }
  const proto::Welcome& welcome() const { return welcome_; }
  void send(const proto::Message& m) { send_raw(proto::encode(m)); }
  void send_raw(const std::string& frame) {
    dealer_.send(zmq::buffer(frame), zmq::send_flags::none);
    last_sent_ = Clock::now();
  }
  void submit(std::uint64_t id, const std::string& name, const std::string& a) {
    send(proto::Submit{{{id, name, a, 0}}});
  }

  std::optional<proto::Message> recv_control(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      zmq::pollitem_t item{dealer_.handle(), 0, ZMQ_POLLIN, 0};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0 || zmq::poll(&item, 1, left) == 0) return std::nullopt;
      zmq::message_t msg;
      (void)dealer_.recv(msg);
      auto d = proto::decode(msg.to_string_view());
      if (!d) throw std::runtime_error("daemon sent garbage: " + d.error);
      if (std::holds_alternative<proto::Heartbeat>(*d.message)) continue;
      return std::move(*d.message);
    }
  }

  // Collects events until `done(events)` holds or the deadline passes; acks every update.
  bool collect(const std::function<bool()>& done, std::chrono::milliseconds timeout = 20s) {
    auto deadline = Clock::now() + timeout;
    while (!done()) {
      zmq::pollitem_t item{results_.handle(), 0, ZMQ_POLLIN, 0};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      // Stay alive in the daemon's eyes while waiting (it drops clients silent for 5 heartbeats).
      auto beat = std::chrono::milliseconds(std::max<std::uint32_t>(welcome_.heartbeat_ms / 2, 1));
      if (Clock::now() - last_sent_ >= beat) send(proto::Heartbeat{});
      if (zmq::poll(&item, 1, std::min(left, beat)) == 0) continue;
      zmq::message_t msg;
      (void)results_.recv(msg);
      auto d = proto::decode(msg.to_string_view());
      if (!d) throw std::runtime_error("bad update: " + d.error);
      auto& u = std::get<proto::Update>(*d.message);
      for (auto& e : u.events) {
        if (e.kind == proto::Outcome::started)
          started.insert(e.task_id);
        else {
          ASSERT_TRUE_OR_THROW(!finals.count(e.task_id), "two final events for one task");
          order.push_back(e.task_id);
          finals.emplace(e.task_id, e);
        }
      }
      send(proto::Ack{u.seq});
    }
    return true;
  }
  bool wait_finals(std::size_t n, std::chrono::milliseconds timeout = 20s) {
    return collect([&] { return finals.size() >= n; }, timeout);
  }

  std::map<std::uint64_t, proto::Event> finals;
  std::vector<std::uint64_t> order;  // completion order
  std::set<std::uint64_t> started;

 private:
  using Clock = std::chrono::steady_clock;
  static void ASSERT_TRUE_OR_THROW(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(what);
  }
  zmq::socket_t dealer_;
  zmq::socket_t results_;
  proto::Welcome welcome_;
  Clock::time_point last_sent_ = Clock::now();
};

}  // namespace zexec::test
