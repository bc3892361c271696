// zexecd's settings: one table drives the TOML file, the flags, --help and `status`.
#include <gtest/gtest.h>

#include <sstream>

#include "daemon_harness.hpp"

using namespace zexec::test;
using namespace std::chrono_literals;
namespace proto = zexec::proto;

namespace {

// Runs zexecd to completion (it refuses to start or prints help) and returns its exit status and stderr.
std::pair<int, std::string> run_zexecd(const TempDir& dir, std::vector<std::string> args) {
  args.insert(args.begin(), bin_path("zexecd"));
  Process p(args, {}, dir.path() + "/out", dir.path() + "/err");
  if (!p.wait_exit(10s)) return {-1, "did not exit"};
  return {WEXITSTATUS(p.status()), read_file(dir.path() + "/err") + read_file(dir.path() + "/out")};
}

// Ready workers per pool, from `status`; empty when the daemon does not answer.
std::map<std::string, int> ready_by_pool(zmq::context_t& ctx, const std::string& endpoint) {
  auto oh = status_at(ctx, endpoint);
  std::map<std::string, int> ready;
  for (auto& w : oh.get()
                     .as<std::map<std::string, msgpack::object>>()
                     .at("workers")
                     .as<std::vector<std::map<std::string, msgpack::object>>>())
    ready[w.at("pool").as<std::string>()] += w.at("state").as<std::string>() == "ready";
  return ready;
}

}  // namespace

TEST(Config, FileSetsAndFlagsOverride) {
  TempDir dir;
  std::ofstream(dir.path() + "/zexecd.toml")
      << "# test\nworkers = 3\nheartbeat_ms = 250\nlog_level = \"warn\"\n";
  zmq::context_t ctx;
  Daemon d(2, {}, {"--config", dir.path() + "/zexecd.toml"});  // the harness passes --workers 2 first
  auto oh = d.status(ctx);
  auto st = oh.get().as<std::map<std::string, msgpack::object>>();
  auto settings = st.at("settings").as<std::map<std::string, std::string>>();
  EXPECT_EQ(settings.at("workers"), "2");  // the flag wins over the file's 3
  EXPECT_EQ(settings.at("heartbeat_ms"), "250");
  EXPECT_EQ(st.at("workers").via.array.size, 2u);
}

TEST(Config, UnknownKeysAndBadValuesAreRefusedWithFileLineAndKey) {
  TempDir dir;
  std::string file = dir.path() + "/zexecd.toml";
  std::ofstream(file) << "workers = 2\nbogus = 1\n";
  auto [rc, err] = run_zexecd(dir, {"--config", file});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find(file + ":2:9: bogus: unknown setting"), std::string::npos) << err;

  std::ofstream(file) << "\nworkers = 99999\n";
  std::tie(rc, err) = run_zexecd(dir, {"--config", file});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find(file + ":2:11: workers: 99999 is out of range [0, 4096]"), std::string::npos) << err;

  std::ofstream(file) << "endpoint = 5\n";
  std::tie(rc, err) = run_zexecd(dir, {"--config", file});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("endpoint: expected a string"), std::string::npos) << err;

  std::ofstream(file) << "workers = \n";
  std::tie(rc, err) = run_zexecd(dir, {"--config", file});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find(file + ":1:"), std::string::npos) << err;

  std::tie(rc, err) = run_zexecd(dir, {"--workers", "many"});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("--workers: 'many' is not an integer"), std::string::npos) << err;
}

TEST(Config, HelpListsEverySettingThatStatusReports) {
  TempDir dir;
  auto [rc, help] = run_zexecd(dir, {"--help"});
  EXPECT_EQ(rc, 0);
  zmq::context_t ctx;
  Daemon d(1);
  auto oh = d.status(ctx);
  auto settings = oh.get()
                      .as<std::map<std::string, msgpack::object>>()
                      .at("settings")
                      .as<std::map<std::string, std::string>>();
  EXPECT_GE(settings.size(), 15u);
  for (auto& [name, value] : settings) {
    std::string flag = "--" + name;
    for (auto& c : flag)
      if (c == '_') c = '-';
    if (name == "pools") flag = "--pool ";  // a list: one repeatable flag per entry
    EXPECT_NE(help.find(flag), std::string::npos) << flag << " missing from --help";
  }
}

TEST(Config, SighupReloadsTheFileAndResizesThePoolWithoutLosingTasks) {
  TempDir dir;
  std::string file = dir.path() + "/zexecd.toml";
  std::ofstream(file) << "workers = 1\n";
  zmq::context_t ctx;
  // The pool size comes from the file only (a flag would win over the file on every reload).
  Process daemon(
      {bin_path("zexecd"), "--config", file, "--endpoint", dir.ipc("d.sock"), "--log-level", "warn"});
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir.path() + "/d.sock"); }));
  auto ready_workers = [&] { return ready_by_pool(ctx, dir.ipc("d.sock"))["default"]; };
  ASSERT_TRUE(wait_until([&] { return ready_workers() == 1; }));
  RawClient c(ctx, dir.ipc("d.sock"));
  for (int i = 1; i <= 200; ++i) c.submit(i, "sleep", args(0.005));
  std::ofstream(file) << "workers = 3\n";
  daemon.kill(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return ready_workers() == 3; })) << "the pool did not grow";
  std::ofstream(file) << "workers = 1\n";
  daemon.kill(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return ready_workers() == 1; })) << "the pool did not shrink";
  ASSERT_TRUE(c.wait_finals(200, 30s));
  for (int i = 1; i <= 200; ++i) EXPECT_EQ(c.finals[i].kind, proto::Outcome::ok) << i;
  std::ofstream(file) << "workers = \"many\"\n";  // invalid: logged, the old settings stay
  daemon.kill(SIGHUP);
  c.submit(201, "echo", args(1));
  ASSERT_TRUE(c.wait_finals(201));
  EXPECT_TRUE(daemon.running());
}

TEST(Config, TheShippedConfigFileIsValid) {
  TempDir dir;
  auto [rc, out] =
      run_zexecd(dir, {"--config", std::string(ZEXEC_SOURCE_DIR) + "/systemd/zexecd.toml", "--help"});
  EXPECT_EQ(rc, 0) << out;
}

TEST(Config, PoolsComeFromTablesInTheFile) {
  TempDir dir;
  std::string file = dir.path() + "/zexecd.toml";
  std::ofstream(file) << "[pools.extra]\nworkers = 2\ncommand = \"" << bin_path("extra_worker") << "\"\n";
  zmq::context_t ctx;
  Daemon d(1, {}, {"--config", file});
  auto oh = d.status(ctx);
  auto st = oh.get().as<std::map<std::string, msgpack::object>>();
  auto pools = st.at("pools").as<std::vector<std::map<std::string, msgpack::object>>>();
  ASSERT_EQ(pools.size(), 2u);
  EXPECT_EQ(pools[1].at("name").as<std::string>(), "extra");
  EXPECT_EQ(pools[1].at("workers").as<int>(), 2);
  EXPECT_EQ(st.at("workers").via.array.size, 3u);

  std::ofstream(file) << "workers = 1\n[pools.extra]\nworkers = 1\ncolour = \"red\"\n";
  auto [rc, err] = run_zexecd(dir, {"--config", file});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find(file + ":4:10: pools.extra.colour: expected workers = N or command"), std::string::npos)
      << err;
  std::ofstream(file) << "[pools.extra]\nworkers = 1\n";
  std::tie(rc, err) = run_zexecd(dir, {"--config", file});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find(file + ":1:1: pools.extra: pool 'extra': command is empty"), std::string::npos) << err;
}

TEST(Config, SighupResizesANamedPoolWithoutLosingItsTasks) {
  TempDir dir;
  std::string file = dir.path() + "/zexecd.toml";
  auto write = [&](int extra) {
    std::ofstream(file) << "workers = 1\n[pools.extra]\nworkers = " << extra << "\ncommand = \""
                        << bin_path("extra_worker") << "\"\n";
  };
  write(1);
  zmq::context_t ctx;
  Process daemon(
      {bin_path("zexecd"), "--config", file, "--endpoint", dir.ipc("d.sock"), "--log-level", "warn"});
  ASSERT_TRUE(wait_until([&] { return ready_by_pool(ctx, dir.ipc("d.sock"))["extra"] == 1; }));
  RawClient c(ctx, dir.ipc("d.sock"));
  for (int i = 1; i <= 100; ++i) c.submit(i, "nap_ms", args(5));
  write(3);
  daemon.kill(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return ready_by_pool(ctx, dir.ipc("d.sock"))["extra"] == 3; }))
      << "the extra pool did not grow";
  write(1);
  daemon.kill(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return ready_by_pool(ctx, dir.ipc("d.sock"))["extra"] == 1; }))
      << "the extra pool did not shrink";
  ASSERT_TRUE(c.wait_finals(100, 30s));
  for (int i = 1; i <= 100; ++i) EXPECT_EQ(c.finals[i].kind, proto::Outcome::ok) << i;
  EXPECT_EQ(ready_by_pool(ctx, dir.ipc("d.sock"))["default"], 1);
}

TEST(Config, APoolFlagOverridesTheFilesPoolOfThatName) {
  TempDir dir;
  std::string file = dir.path() + "/zexecd.toml";
  std::ofstream(file) << "[pools.extra]\nworkers = 3\ncommand = \"" << bin_path("extra_worker") << "\"\n";
  zmq::context_t ctx;
  Daemon d(1, {}, {"--config", file, "--pool", "extra:1:" + bin_path("extra_worker")});
  auto oh = d.status(ctx);
  auto pools = oh.get()
                   .as<std::map<std::string, msgpack::object>>()
                   .at("pools")
                   .as<std::vector<std::map<std::string, msgpack::object>>>();
  ASSERT_EQ(pools.size(), 2u);
  EXPECT_EQ(pools[1].at("workers").as<int>(), 1);

  std::ofstream(file) << "[pools.extra]\nworkers = 100000000000\ncommand = \"x\"\n";
  auto [rc, err] = run_zexecd(dir, {"--config", file});
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find(file + ":2:11: pools.extra.workers: 100000000000 is out of range [1, 4096]"),
            std::string::npos)
      << err;
}
