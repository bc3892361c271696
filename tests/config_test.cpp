// zexecd's settings: one table drives the TOML file, the flags, --help and `status`.
#include <gtest/gtest.h>

#include <sstream>

#include "daemon_harness.hpp"

using namespace zexec::test;
using namespace std::chrono_literals;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs zexecd to completion (it refuses to start or prints help) and returns its exit status and stderr.
std::pair<int, std::string> run_zexecd(const TempDir& dir, std::vector<std::string> args) {
  args.insert(args.begin(), bin_path("zexecd"));
  Process p(args, {}, dir.path() + "/out", dir.path() + "/err");
  if (!p.wait_exit(10s)) return {-1, "did not exit"};
  return {WEXITSTATUS(p.status()), read_file(dir.path() + "/err") + read_file(dir.path() + "/out")};
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
    EXPECT_NE(help.find(flag), std::string::npos) << flag << " missing from --help";
  }
}
