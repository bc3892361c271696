// zexecd under a low open-file limit: it raises its soft limit to the hard one, caps clients at
// what the limit allows (max_clients), refuses the rest with `too_many_clients`, and never runs out
// of descriptors (libzmq aborts the process on EMFILE). A real daemon started through
// `sh -c 'ulimit -n N; exec zexecd ...'`, and raw DEALER clients as in daemon_test.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "daemon_harness.hpp"
#include "fd_budget.hpp"

namespace proto = zexec::proto;
using namespace zexec::test;
using namespace std::chrono_literals;

namespace {

int open_fds(pid_t pid) {
  int n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

// "Max open files" of /proc/PID/limits: {soft, hard}.
// The descriptor count once it stays the same for 50 reads in a row (a peer that just left, such as
// a `status` connection, is closed by the daemon a moment later).
int settled_fds(pid_t pid) {
  int n = -1, same = 0;
  wait_until([&] {
    int now = open_fds(pid);
    same = now == n ? same + 1 : 0;
    n = now;
    return same >= 50;
  });
  return n;
}

std::pair<long, long> fd_limits(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/limits");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("Max open files", 0) == 0) {
      std::istringstream in(line.substr(14));
      long soft = 0, hard = 0;
      in >> soft >> hard;
      return {soft, hard};
    }
  return {-1, -1};
}

// zexecd under `ulimit` (e.g. "-n 128"), serving on an ipc endpoint in its own directory; `workers`
// < 0: no --workers flag (the pool size comes from a --config file in `extra`).
class LimitedDaemon {
 public:
  LimitedDaemon(const std::string& ulimit, int workers, std::vector<std::string> extra = {}) {
    endpoint_ = dir_.ipc("d.sock");
    std::vector<std::string> argv = {"/bin/sh",
                                     "-c",
                                     "ulimit " + ulimit + " && exec \"$0\" \"$@\"",
                                     bin_path("zexecd"),
                                     "--endpoint",
                                     endpoint_,
                                     "--log-level",
                                     Daemon::log_level(),
                                     "--print-endpoint"};
    if (workers >= 0) argv.insert(argv.end(), {"--workers", std::to_string(workers)});
    argv.insert(argv.end(), extra.begin(), extra.end());
    std::string out = dir_.path() + "/stdout";
    proc_ = std::make_unique<Process>(argv, std::vector<std::string>{}, out);
    bool up = wait_until([&] {
      std::ifstream f(out);
      std::string line;
      return (std::getline(f, line) && !line.empty()) || !proc_->running();
    });
    if (!up || !proc_->running()) throw std::runtime_error("zexecd did not start");
  }
  const std::string& endpoint() const { return endpoint_; }
  Process& process() { return *proc_; }
  pid_t pid() const { return proc_->pid(); }

 private:
  TempDir dir_;
  std::string endpoint_;
  std::unique_ptr<Process> proc_;
};

std::map<std::string, msgpack::object> status_map(zmq::context_t& ctx, const std::string& endpoint,
                                                  msgpack::object_handle& keep) {
  keep = status_at(ctx, endpoint);
  return keep.get().as<std::map<std::string, msgpack::object>>();
}

std::string setting(zmq::context_t& ctx, const std::string& endpoint, const std::string& name) {
  msgpack::object_handle oh;
  return status_map(ctx, endpoint, oh).at("settings").as<std::map<std::string, std::string>>().at(name);
}

std::size_t clients_connected(zmq::context_t& ctx, const std::string& endpoint) {
  msgpack::object_handle oh;
  return status_map(ctx, endpoint, oh).at("clients").as<std::vector<msgpack::object>>().size();
}

int ready_workers(zmq::context_t& ctx, const std::string& endpoint) {
  msgpack::object_handle oh;
  int n = 0;
  for (auto& w :
       status_map(ctx, endpoint, oh).at("workers").as<std::vector<std::map<std::string, msgpack::object>>>())
    n += w.at("state").as<std::string>() == "ready";
  return n;
}

// A client at the wire level: a DEALER that said hello, the daemon's first control answer (nothing
// if none came) and, when welcomed, its results PULL.
struct Peer {
  zmq::socket_t dealer, results;
  std::optional<proto::Message> answer;

  bool welcomed() const { return answer && std::holds_alternative<proto::Welcome>(*answer); }
  void send(const proto::Message& m) { dealer.send(zmq::buffer(proto::encode(m)), zmq::send_flags::none); }
  // Runs echo(value) and returns its final event (acking every update), or nothing by the deadline.
  std::optional<proto::Event> echo(std::uint64_t id, int value, std::chrono::milliseconds timeout = 20s) {
    send(proto::Submit{{{id, "echo", args(value), 0}}});
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      zmq::pollitem_t item{results.handle(), 0, ZMQ_POLLIN, 0};
      if (left.count() <= 0 || zmq::poll(&item, 1, left) == 0) return std::nullopt;
      zmq::message_t msg;
      (void)results.recv(msg);
      auto d = proto::decode(msg.to_string_view());
      if (!d) return std::nullopt;
      auto& u = std::get<proto::Update>(*d.message);
      send(proto::Ack{u.seq});
      for (auto& e : u.events)
        if (e.task_id == id && e.kind != proto::Outcome::started) return e;
    }
  }
};

Peer say_hello(zmq::context_t& ctx, const std::string& endpoint, std::chrono::milliseconds timeout = 10s) {
  Peer p{zmq::socket_t(ctx, zmq::socket_type::dealer), zmq::socket_t(), std::nullopt};
  p.dealer.set(zmq::sockopt::linger, 0);
  p.dealer.connect(endpoint);
  p.send(proto::Hello{"limits-test", getpid()});
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    zmq::pollitem_t item{p.dealer.handle(), 0, ZMQ_POLLIN, 0};
    if (left.count() <= 0 || zmq::poll(&item, 1, left) == 0) return p;
    zmq::message_t msg;
    (void)p.dealer.recv(msg);
    auto d = proto::decode(msg.to_string_view());
    if (d && std::holds_alternative<proto::Heartbeat>(*d.message)) continue;
    if (d) p.answer = std::move(*d.message);
    break;
  }
  if (p.welcomed()) {
    p.results = zmq::socket_t(ctx, zmq::socket_type::pull);
    p.results.set(zmq::sockopt::linger, 0);
    p.results.connect(std::get<proto::Welcome>(*p.answer).results_endpoint);
  }
  return p;
}

std::string error_of(const std::optional<proto::Message>& m) {
  if (!m) return "<no answer>";
  if (!std::holds_alternative<proto::Error>(*m))
    return std::string("<") + proto::type_name(proto::type_of(*m)) + ">";
  return std::get<proto::Error>(*m).code + ": " + std::get<proto::Error>(*m).message;
}

}  // namespace

// The figures fd_budget.hpp budgets with, measured on the real daemon: 4 descriptors per client
// (results PUSH: mailbox + listener; the accepted PULL connection; the DEALER's connection to the
// ROUTER) and 4 per worker.
TEST(Limits, FdsPerClientAndWorkerAreAsBudgeted) {
  zmq::context_t ctx;
  Daemon one(1), three(3);
  ASSERT_TRUE(wait_until([&] { return ready_workers(ctx, one.endpoint()) == 1; }));
  ASSERT_TRUE(wait_until([&] { return ready_workers(ctx, three.endpoint()) == 3; }));
  // Workers connect both ways after hello; settled once the difference is what is budgeted.
  int per_worker = 0;
  EXPECT_TRUE(wait_until([&] {
    per_worker = (open_fds(three.process().pid()) - open_fds(one.process().pid())) / 2;
    return per_worker == zexecd::kFdsPerWorker;
  })) << "descriptors per worker: "
      << per_worker;

  constexpr int kClients = 20;
  int before = settled_fds(one.process().pid());
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < kClients; ++i) clients.push_back(std::make_unique<RawClient>(ctx, one.endpoint()));
  int after = 0;
  EXPECT_TRUE(wait_until([&] {
    after = open_fds(one.process().pid());
    return after - before == kClients * zexecd::kFdsPerClient;
  })) << kClients
      << " clients cost " << after - before << " descriptors";
  // ...and they all come back when the clients leave.
  for (auto& c : clients) c->send(proto::Bye{});
  clients.clear();
  EXPECT_TRUE(wait_until([&] { return open_fds(one.process().pid()) == before; }))
      << open_fds(one.process().pid()) << " open, " << before << " before the clients";
}

// The soft limit goes up to the hard one at start.
TEST(Limits, RaisesTheSoftLimitToTheHardOne) {
  LimitedDaemon d("-Sn 64 && ulimit -Hn 512", 1);
  auto [soft, hard] = fd_limits(d.pid());
  EXPECT_EQ(soft, 512);
  EXPECT_EQ(hard, 512);
  zmq::context_t ctx;
  int cap = std::stoi(setting(ctx, d.endpoint(), "max_clients"));
  EXPECT_GT(cap, 64 / zexecd::kFdsPerClient) << "derived from the soft limit zexecd started with";
  // Its workers start with the limit zexecd was started with: task code that uses select()
  // breaks on descriptors past 1024.
  std::vector<pid_t> workers;
  ASSERT_TRUE(wait_until([&] {
    std::ifstream f("/proc/" + std::to_string(d.pid()) + "/task/" + std::to_string(d.pid()) + "/children");
    for (pid_t p; f >> p;) workers.push_back(p);
    return !workers.empty();
  }));
  auto [worker_soft, worker_hard] = fd_limits(workers.front());
  EXPECT_EQ(worker_soft, 64);
  EXPECT_EQ(worker_hard, 512);
}

// Under 128 open files a flood of hellos (more than 128 / 4 clients could ever fit) used to abort
// zexecd inside libzmq (before max_clients: SIGABRT at the 27th hello, "Too many open files
// (src/ipc_listener.cpp:325)"). Now the clients past max_clients are refused, the daemon lives, the first
// clients keep working, and a client leaving makes room for a new one.
TEST(Limits, HellosPastTheCapAreRefusedAndTheDaemonLives) {
  LimitedDaemon d("-n 128", 1);
  zmq::context_t ctx;
  ASSERT_TRUE(wait_until([&] { return ready_workers(ctx, d.endpoint()) == 1; }));

  constexpr int kFlood = 128 / zexecd::kFdsPerClient;  // more than fit, whatever the daemon's own use
  std::vector<Peer> welcomed, refused;
  for (int i = 0; i < kFlood; ++i) {
    Peer p = say_hello(ctx, d.endpoint());
    ASSERT_TRUE(p.answer) << "hello " << i << " got no answer; zexecd "
                          << (d.process().running() ? "is running" : "died");
    if (p.welcomed()) {
      welcomed.push_back(std::move(p));
      continue;
    }
    EXPECT_EQ(error_of(p.answer).rfind("too_many_clients: zexecd serves at most ", 0), 0u)
        << error_of(p.answer);
    refused.push_back(std::move(p));
  }
  ASSERT_TRUE(d.process().running());
  std::string cap_text = setting(ctx, d.endpoint(), "max_clients");
  int cap = std::stoi(cap_text);
  EXPECT_GE(cap, 4);
  EXPECT_EQ(static_cast<int>(welcomed.size()), cap);
  ASSERT_FALSE(refused.empty());
  EXPECT_NE(error_of(refused.front().answer).find("at most " + cap_text + " clients"), std::string::npos);
  EXPECT_NE(error_of(refused.front().answer).find("max_clients"), std::string::npos);
  EXPECT_NE(error_of(refused.front().answer).find("ulimit -n"), std::string::npos);
  EXPECT_EQ(clients_connected(ctx, d.endpoint()), welcomed.size());

  // Every client already connected still works.
  for (std::size_t i = 0; i < welcomed.size(); ++i) {
    auto e = welcomed[i].echo(1, static_cast<int>(i));
    ASSERT_TRUE(e) << "client " << i << " got no result";
    EXPECT_EQ(value_of<int>(*e), static_cast<int>(i));
  }

  // A refused peer costs the daemon nothing once it disconnects.
  int with_refused = settled_fds(d.pid());
  int n_refused = static_cast<int>(refused.size());
  refused.clear();
  EXPECT_TRUE(wait_until([&] { return open_fds(d.pid()) == with_refused - n_refused; }))
      << open_fds(d.pid()) << " open; " << with_refused << " with " << n_refused
      << " refused peers connected";

  // Two leave: two new clients get in and work, the next is refused again.
  for (int i = 0; i < 2; ++i) {
    welcomed.back().send(proto::Bye{});
    welcomed.pop_back();
  }
  ASSERT_TRUE(wait_until([&] { return clients_connected(ctx, d.endpoint()) == welcomed.size(); }));
  for (int i = 0; i < 2; ++i) {
    welcomed.push_back(say_hello(ctx, d.endpoint()));
    ASSERT_TRUE(welcomed.back().welcomed()) << error_of(welcomed.back().answer);
    auto e = welcomed.back().echo(7, 70 + i);
    ASSERT_TRUE(e);
    EXPECT_EQ(value_of<int>(*e), 70 + i);
  }
  EXPECT_EQ(error_of(say_hello(ctx, d.endpoint()).answer).rfind("too_many_clients", 0), 0u);
  EXPECT_TRUE(d.process().running());
}

// An explicit cap is honoured exactly and shows in `status`.
TEST(Limits, MaxClientsIsHonouredExactly) {
  zmq::context_t ctx;
  Daemon d(1, {}, {"--max-clients", "3"});
  EXPECT_EQ(setting(ctx, d.endpoint(), "max_clients"), "3");
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(std::make_unique<RawClient>(ctx, d.endpoint()));
  Peer fourth = say_hello(ctx, d.endpoint());
  EXPECT_EQ(error_of(fourth.answer).rfind("too_many_clients: zexecd serves at most 3 clients", 0), 0u)
      << error_of(fourth.answer);
  EXPECT_EQ(clients_connected(ctx, d.endpoint()), 3u);
  clients[0]->submit(1, "echo", args(1));
  ASSERT_TRUE(clients[0]->wait_finals(1));
  clients[1]->send(proto::Bye{});
  ASSERT_TRUE(wait_until([&] { return clients_connected(ctx, d.endpoint()) == 2; }));
  Peer again = say_hello(ctx, d.endpoint());
  EXPECT_TRUE(again.welcomed()) << error_of(again.answer);
}

// A cap above what the open-file limit allows is lowered to it (with a warning), not trusted.
TEST(Limits, ACapAboveTheFdBudgetIsLowered) {
  zmq::context_t ctx;
  LimitedDaemon autod("-n 128", 1);
  LimitedDaemon asked("-n 128", 1, {"--max-clients", "1000"});
  std::string derived = setting(ctx, autod.endpoint(), "max_clients");
  EXPECT_LT(std::stoi(derived), 128 / zexecd::kFdsPerClient);
  EXPECT_EQ(setting(ctx, asked.endpoint(), "max_clients"), derived);
}

// A results socket that cannot be bound (here: the ipc path is too long for a Unix socket once
// ".r<id>" is added) is answered with an error to that client; the daemon goes on.
TEST(Limits, AResultsSocketThatCannotBeBoundIsAnErrorNotACrash) {
  TempDir dir;
  // sun_path holds 107 characters: the endpoint itself fits, its results endpoint does not.
  std::string path = dir.path() + "/";
  path += std::string(105 - path.size(), 's');
  zmq::context_t ctx;
  Daemon d(1, "ipc://" + path);
  Peer h = say_hello(ctx, d.endpoint());
  EXPECT_EQ(error_of(h.answer).rfind("results_socket_failed: zexecd cannot open a results socket", 0), 0u)
      << error_of(h.answer);
  EXPECT_TRUE(d.process().running());
  EXPECT_EQ(clients_connected(ctx, d.endpoint()), 0u);
}

// SIGHUP derives the cap again: more workers leave fewer descriptors for clients.
TEST(Limits, SighupDerivesTheCapForTheNewPoolSize) {
  TempDir dir;
  std::string file = dir.path() + "/zexecd.toml";
  std::ofstream(file) << "workers = 1\n";
  LimitedDaemon d("-n 256", -1, {"--config", file});
  zmq::context_t ctx;
  int before = std::stoi(setting(ctx, d.endpoint(), "max_clients"));
  std::ofstream(file) << "workers = 5\n";
  d.process().kill(SIGHUP);
  EXPECT_TRUE(
      wait_until([&] { return setting(ctx, d.endpoint(), "max_clients") != std::to_string(before); }));
  EXPECT_EQ(std::stoi(setting(ctx, d.endpoint(), "max_clients")),
            before - 4 * zexecd::kFdsPerWorker / zexecd::kFdsPerClient);
}
