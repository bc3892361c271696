// Nobody but its client takes a client's results (docs/PROTOCOL.md §2, "Client handshake and the
// per-client results socket"): not a stale client of an earlier daemon run on the same endpoint,
// not a PULL that guesses the path, not one that learnt the real endpoint.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <zexec/zexec.hpp>

#include "daemon_harness.hpp"

namespace proto = zexec::proto;
using namespace zexec::test;
using namespace std::chrono_literals;

namespace {

std::map<std::string, msgpack::object> as_map(const msgpack::object& o) {
  return o.as<std::map<std::string, msgpack::object>>();
}

std::uint64_t total(Daemon& d, zmq::context_t& ctx, const std::string& key) {
  auto oh = d.status(ctx);
  return as_map(as_map(oh.get()).at("totals")).at(key).as<std::uint64_t>();
}

// A PULL that reconnects fast: if anything is pushed at its path, it is there to take it.
zmq::socket_t spy(zmq::context_t& ctx, const std::string& endpoint) {
  zmq::socket_t s(ctx, zmq::socket_type::pull);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::reconnect_ivl, 10);
  s.connect(endpoint);
  return s;
}

// Messages waiting on `s` (it is read till empty).
int drain(zmq::socket_t& s) {
  int n = 0;
  for (zmq::message_t m; s.recv(m, zmq::recv_flags::dontwait);) ++n;
  return n;
}

// N echo tasks in rounds (so a PULL that reconnects in between would be served), all collected.
void run_tasks(RawClient& c, int rounds, int per_round) {
  std::uint64_t id = 0;
  for (int r = 0; r < rounds; ++r) {
    proto::Submit s;
    for (int i = 0; i < per_round; ++i) {
      ++id;
      s.tasks.push_back({id, "echo", args(static_cast<int>(id)), 0});
    }
    c.send(s);
    ASSERT_TRUE(c.wait_finals(id, 30s)) << "round " << r << ": " << c.finals.size() << " of " << id;
  }
}

// A spy PULL in another process (the daemon tells peers apart by their process, SO_PEERCRED):
// count() stops it and returns what it received.
class SpyProcess {
 public:
  explicit SpyProcess(const std::string& endpoint) {
    if (pipe(to_) != 0 || pipe(from_) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      int n = 0;
      {
        zmq::context_t ctx;  // the parent's context is not touched here
        zmq::socket_t s = spy(ctx, endpoint);
        zmq::pollitem_t items[2] = {{s.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, to_[0], ZMQ_POLLIN, 0}};
        for (;;) {
          zmq::poll(items, 2, std::chrono::milliseconds(-1));
          if (items[0].revents & ZMQ_POLLIN) n += drain(s);
          if (items[1].revents & ZMQ_POLLIN) break;
        }
        n += drain(s);
      }
      [[maybe_unused]] auto w = write(from_[1], &n, sizeof n);
      _exit(0);
    }
  }
  ~SpyProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    for (int fd : {to_[0], to_[1], from_[0], from_[1]}) close(fd);
  }
  int count() {
    char c = 1;
    int n = -1;
    if (write(to_[1], &c, 1) != 1 || read(from_[0], &n, sizeof n) != static_cast<ssize_t>(sizeof n))
      return -1;
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return n;
  }

 private:
  int to_[2]{-1, -1}, from_[2]{-1, -1};
  pid_t pid_ = -1;
};

std::string ipc_path(const std::string& endpoint) {
  return endpoint.substr(6);
}

}  // namespace

// The reported attack: a client of daemon A outlives it; daemon B on the same endpoint gives the
// same id to a new client (and used to bind the same results path): the old PULL reconnected
// and ZeroMQ split the new client's results between them.
TEST(ResultsSecurity, StaleClientOfAKilledDaemonTakesNoneOfTheNextRunsResults) {
  TempDir dir;
  const std::string ep = dir.ipc("d.sock");
  zmq::context_t ctx;
  auto a = std::make_unique<Daemon>(1, ep, std::vector<std::string>{"--heartbeat-ms", "100"});
  // A PULL that is never closed (a client library that keeps it, a wedged process), of A's first
  // client: the old scheme gave the next run's first client the same id and path.
  RawClient stale_raw(ctx, ep);
  const proto::Welcome old = stale_raw.welcome();
  zmq::socket_t stale_pull = spy(ctx, old.results_endpoint);
  zexec::Client stale_lib{ep};
  zexec::Future pending = stale_lib.submit("sleep", 30.0);
  std::string lib_results = stale_lib.results_endpoint();
  ASSERT_TRUE(wait_until([&] { return pending.running(); }));
  a->process().kill(SIGKILL);
  ASSERT_TRUE(a->process().wait_exit(10s));

  // The client library closes its PULL once the daemon is lost: bound again at the old path, a
  // PUSH never sees it come back (a PUSH with no peer cannot take a message).
  EXPECT_THROW(pending.result<double>(10s), zexec::ConnectionError);
  {
    std::filesystem::create_directories(std::filesystem::path(ipc_path(lib_results)).parent_path());
    zmq::socket_t probe(ctx, zmq::socket_type::push);
    probe.set(zmq::sockopt::linger, 0);
    probe.bind(lib_results);
    EXPECT_FALSE(wait_until(
        [&] { return probe.send(zmq::str_buffer("x"), zmq::send_flags::dontwait).has_value(); }, 1s))
        << "the closed client's PULL reconnected to " << lib_results;
  }

  Daemon b(1, ep);
  RawClient fresh(ctx, ep);
  EXPECT_NE(fresh.welcome().client_id, old.client_id) << "client id reused across daemon runs";
  EXPECT_NE(fresh.welcome().results_endpoint, old.results_endpoint);
  const int rounds = 5, per_round = 200;
  run_tasks(fresh, rounds, per_round);
  EXPECT_EQ(fresh.finals.size(), static_cast<std::size_t>(rounds * per_round));
  EXPECT_EQ(drain(stale_pull), 0) << "the stale client's PULL took some of the new client's results";
}

// A PULL at the path a results socket used to have (ENDPOINT.r<id>, the id from `status`), and
// one at the real endpoint (a leaked token), get nothing; the client gets everything; the daemon
// counts the second peer; `status` never shows the endpoint.
TEST(ResultsSecurity, SpiesOnGuessedAndLeakedResultsEndpointsGetNothing) {
  Daemon d(1);
  zmq::context_t ctx;
  zmq::socket_t guess_first = spy(ctx, d.endpoint() + ".r1");  // before the client exists
  RawClient c(ctx, d.endpoint());
  const proto::Welcome& w = c.welcome();

  auto oh = d.status(ctx);
  std::ostringstream shown;
  shown << oh.get();
  std::uint64_t listed = 0;
  for (auto& cl : as_map(oh.get()).at("clients").as<std::vector<std::map<std::string, msgpack::object>>>())
    listed = cl.at("id").as<std::uint64_t>();
  ASSERT_EQ(listed, w.client_id);
  zmq::socket_t guess_id = spy(ctx, d.endpoint() + ".r" + std::to_string(listed));

  // ipc://ENDPOINT.r-XXXXXX/TOKEN: 16 hex digits, in a directory nobody can list.
  const std::filesystem::path real = ipc_path(w.results_endpoint);
  const std::string token = real.filename().string();
  EXPECT_EQ(token.size(), 16u) << w.results_endpoint;
  EXPECT_EQ(token.find_first_not_of("0123456789abcdef"), std::string::npos) << w.results_endpoint;
  struct stat st {};
  ASSERT_EQ(stat(real.parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0711u);
  EXPECT_EQ(shown.str().find(token), std::string::npos) << "status shows the results endpoint";

  // One task first: the client's own PULL has finished its handshake when its result is in.
  c.submit(1000000, "echo", args(0));
  ASSERT_TRUE(c.wait_finals(1, 30s));
  c.finals.clear();
  SpyProcess leaked(w.results_endpoint);
  // Refused at its handshake, before the first task: it never holds a share of the pipe.
  ASSERT_TRUE(wait_until([&] { return total(d, ctx, "results_intruders") >= 1; }, 10s));

  const int rounds = 5, per_round = 200;
  run_tasks(c, rounds, per_round);
  EXPECT_EQ(c.finals.size(), static_cast<std::size_t>(rounds * per_round));
  EXPECT_EQ(drain(guess_first), 0);
  EXPECT_EQ(drain(guess_id), 0);
  EXPECT_EQ(leaked.count(), 0);
}
