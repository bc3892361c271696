// zexecd --journal under SIGKILL, seen through the C++ client: a real daemon killed at a
// random moment and started again on the same journal and endpoint, and one zexec::Client
// that rides through every restart (ClientOptions::reconnect_timeout).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <memory>
#include <random>
#include <zexec/zexec.hpp>

#include "daemon_harness.hpp"

namespace zexec::test {
namespace {

using Map = std::map<std::string, msgpack::object>;

// Whether the daemon at `endpoint` has a client connected (a resumed session shows as one).
bool client_connected(zmq::context_t& ctx, const std::string& endpoint) {
  auto oh = status_at(ctx, endpoint);
  for (auto& c : oh.get().as<Map>().at("clients").as<std::vector<Map>>())
    if (c.at("connected").as<bool>()) return true;
  return false;
}

TEST(JournalRestart, TwentyThousandTasksRideThroughThreeSigkills) {
  TempDir place;
  const std::string endpoint = place.ipc("d.sock");
  const std::vector<std::string> flags{"--journal", place.path() + "/journal"};
  auto daemon = std::make_unique<Daemon>(2, endpoint, flags);

  ClientOptions o;
  o.reconnect_timeout = std::chrono::seconds(60);
  o.submit_timeout = std::chrono::seconds(60);
  Client client(endpoint, o);
  constexpr int kTasks = 20000;
  std::vector<Future> futures;
  futures.reserve(kTasks);
  std::vector<std::atomic<int>> resolved(kTasks);
  for (int i = 0; i < kTasks; ++i) {
    futures.push_back(client.submit("echo", i));
    futures.back().add_done_callback([&resolved, i](Future) { resolved[i]++; });
  }
  std::mt19937 rng(std::random_device{}());
  std::vector<int> kills;
  std::uniform_int_distribution<int> at(kTasks / 10, kTasks - kTasks / 10);
  for (int k = 0; k < 3; ++k) kills.push_back(at(rng));
  std::sort(kills.begin(), kills.end());
  zmq::context_t ctx;
  auto done = [&] {
    int n = 0;
    for (auto& f : futures) n += f.done();
    return n;
  };
  for (int k : kills) {
    ASSERT_TRUE(wait_until([&] { return done() >= k; }, 120s)) << done() << " of " << k << " results";
    daemon->process().kill(SIGKILL);
    ASSERT_TRUE(wait_until([&] { return !daemon->process().running(); }, 10s));
    daemon = std::make_unique<Daemon>(2, endpoint, flags);
    // The next kill once the client is back: two kills before it returns would count as one.
    ASSERT_TRUE(wait_until([&] { return client_connected(ctx, daemon->endpoint()); }, 30s))
        << "the client did not resume its session";
  }
  for (int i = 0; i < kTasks; ++i) {
    ASSERT_TRUE(futures[i].wait_done(std::chrono::seconds(120))) << "task " << i;
    ASSERT_EQ(futures[i].result<int>(), i) << "task " << i;
  }
  ASSERT_TRUE(wait_until([&] {
    for (auto& r : resolved)
      if (r.load() == 0) return false;
    return true;
  }));
  for (int i = 0; i < kTasks; ++i)
    EXPECT_EQ(resolved[i].load(), 1) << "task " << i << " resolved more than once";
  EXPECT_EQ(client.unfinished(), 0u);
}

}  // namespace
}  // namespace zexec::test
