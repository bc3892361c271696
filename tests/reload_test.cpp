// SIGHUP keeps its word: each setting does what its row in the settings table (options.cpp) says,
// live, for new clients, or only after a restart, and `status` shows what is in force.
// A real zexecd with --config FILE; the file is rewritten, SIGHUP sent, and the test polls for the
// change with a deadline (nothing sleeps to synchronise).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <fstream>
#include <sstream>

#include "client_support.hpp"
#include "daemon_harness.hpp"
#include "zexec/zexec.hpp"

using namespace zexec::test;
using namespace std::chrono_literals;

namespace {

// zexecd run from a config file only (a flag would override the file on every reload), its log
// (stderr) kept for the test to read.
class ReloadDaemon {
 public:
  // `file` is the first config; the endpoint is the file's when it names one, else d.sock.
  explicit ReloadDaemon(const std::string& file) {
    write(file);
    std::vector<std::string> argv = {bin_path("zexecd"), "--config", config(), "--print-endpoint"};
    if (file.find("endpoint") == std::string::npos)
      argv.insert(argv.end(), {"--endpoint", dir_.ipc("d.sock")});
    proc_ = std::make_unique<Process>(argv, std::vector<std::string>{}, dir_.path() + "/out", log_path());
    bool up = wait_until([&] {
      std::ifstream f(dir_.path() + "/out");
      return (std::getline(f, endpoint_) && !endpoint_.empty()) || !proc_->running();
    });
    if (!up || !proc_->running()) throw std::runtime_error("zexecd did not start: " + log());
  }
  const TempDir& dir() const { return dir_; }
  std::string config() const { return dir_.path() + "/zexecd.toml"; }
  const std::string& endpoint() const { return endpoint_; }
  std::string log_path() const { return dir_.path() + "/err"; }
  std::string log() const { return read_file(log_path()); }
  void write(const std::string& file) const { std::ofstream(config()) << file; }
  // Rewrites the file and sends SIGHUP.
  void reload(const std::string& file) const {
    write(file);
    proc_->kill(SIGHUP);
  }
  std::map<std::string, std::string> settings(zmq::context_t& ctx) const {
    auto oh = status_at(ctx, endpoint_);
    return oh.get()
        .as<std::map<std::string, msgpack::object>>()
        .at("settings")
        .as<std::map<std::string, std::string>>();
  }
  // Waits until `status` shows setting `name` = `value`.
  bool shows(zmq::context_t& ctx, const std::string& name, const std::string& value) const {
    return wait_until([&] { return settings(ctx).at(name) == value; });
  }
  Process& process() { return *proc_; }

 private:
  TempDir dir_;
  std::string endpoint_;
  std::unique_ptr<Process> proc_;
};

// GET /metrics on a loopback port: the body, or "" when nothing answers.
std::string metrics_at(int port) {
  httplib::Client http("127.0.0.1", port);
  http.set_connection_timeout(1s);
  auto res = http.Get("/metrics");
  return res && res->status == 200 ? res->body : "";
}

}  // namespace

// (a) A live setting: in force, and in `status`, as soon as the daemon has read the file again.
TEST(Reload, ALiveSettingTakesEffectAndShowsInStatus) {
  zmq::context_t ctx;
  ReloadDaemon d("workers = 1\nlog_level = \"warn\"\nmax_prefetch = 256\ntask_timeout_ms = 0\n");
  EXPECT_EQ(d.settings(ctx).at("max_prefetch"), "256");
  d.reload("workers = 1\nlog_level = \"warn\"\nmax_prefetch = 7\ntask_timeout_ms = 300\n");
  ASSERT_TRUE(d.shows(ctx, "max_prefetch", "7")) << d.log();
  EXPECT_EQ(d.settings(ctx).at("task_timeout_ms"), "300");
  // task_timeout_ms is in force for tasks submitted from now on: a long sleep is stopped.
  RawClient c(ctx, d.endpoint());
  c.submit(1, "sleep", args(30.0));
  ASSERT_TRUE(c.wait_finals(1));
  EXPECT_EQ(c.finals[1].kind, zexec::proto::Outcome::error);
  EXPECT_EQ(c.finals[1].error_type, "TaskTimeout");
  EXPECT_EQ(d.log().find("needs a restart"), std::string::npos) << d.log();
}

// (b) heartbeat_ms is agreed in `welcome`: a client connected before the reload keeps getting
// heartbeats at the rate it was told (it declares the daemon lost after 5 missed ones), and one
// that connects afterwards is told the new rate.
TEST(Reload, AConnectedClientKeepsTheHeartbeatItWasWelcomedWith) {
  zmq::context_t ctx;
  const std::string common = "workers = 1\nlog_level = \"warn\"\nworker_liveness_ms = 20000\n";
  ReloadDaemon d(common + "heartbeat_ms = 200\n");
  zexec::ClientOptions o;
  o.connect_timeout = 10s;
  zexec::Client before(d.endpoint(), o);
  ASSERT_EQ(before.heartbeat_ms(), 200u);
  EXPECT_EQ(before.submit("echo", 1).result<int>(20s), 1);
  d.reload(common + "heartbeat_ms = 5000\n");
  ASSERT_TRUE(d.shows(ctx, "heartbeat_ms", "5000")) << d.log();
  EXPECT_EQ(d.settings(ctx).at("client_timeout_ms"), "25000");
  // A task spanning more than the 1 s (5 x 200 ms) the old client waits for a heartbeat.
  zexec::Future f = before.submit("sleep", 2.0);
  EXPECT_DOUBLE_EQ(f.result<double>(20s), 2.0) << before.last_error();
  EXPECT_TRUE(before.connected()) << before.last_error();
  EXPECT_EQ(before.submit("echo", 2).result<int>(20s), 2);
  zexec::Client after(d.endpoint(), o);
  EXPECT_EQ(after.heartbeat_ms(), 5000u);
  EXPECT_EQ(after.submit("echo", 3).result<int>(20s), 3);
}

// A heartbeat_ms a worker cannot keep within worker_liveness_ms is refused: at start, and on a
// reload (logged; the settings in force stay). So is an unknown log level.
TEST(Reload, AHeartbeatWorkersCannotKeepOrAnUnknownLogLevelIsRefused) {
  zmq::context_t ctx;
  ReloadDaemon d("workers = 1\nlog_level = \"warn\"\nheartbeat_ms = 200\n");
  d.reload("workers = 1\nlog_level = \"warn\"\nheartbeat_ms = 5000\n");
  ASSERT_TRUE(wait_until([&] {
    return d.log().find("heartbeat_ms 5000 must be below worker_liveness_ms 3000") != std::string::npos;
  })) << d.log();
  EXPECT_EQ(d.settings(ctx).at("heartbeat_ms"), "200");
  // So is a log level spdlog does not know (it would have read it as "off").
  d.reload("workers = 1\nlog_level = \"loud\"\n");
  ASSERT_TRUE(wait_until([&] { return d.log().find("unknown level 'loud'") != std::string::npos; }))
      << d.log();
  EXPECT_EQ(d.settings(ctx).at("log_level"), "warn");
  TempDir dir;
  Process p({bin_path("zexecd"), "--heartbeat-ms", "3000", "--endpoint", dir.ipc("x.sock")}, {},
            dir.path() + "/out", dir.path() + "/err");
  ASSERT_TRUE(p.wait_exit(10s));
  EXPECT_EQ(WEXITSTATUS(p.status()), 2);
  EXPECT_NE(read_file(dir.path() + "/err").find("heartbeat_ms 3000 must be below worker_liveness_ms 3000"),
            std::string::npos);
}

// (c) Restart-only settings: not applied, `status` shows the value in force, the log names each.
TEST(Reload, ARestartOnlySettingKeepsItsValueWithAWarning) {
  TempDir other;
  std::string first = "ipc://" + other.path() + "/first.sock",
              second = "ipc://" + other.path() + "/second.sock";
  zmq::context_t ctx;
  ReloadDaemon d("endpoint = \"" + first + "\"\nworkers = 1\nlog_level = \"warn\"\n");
  ASSERT_EQ(d.endpoint(), first);
  d.reload("endpoint = \"" + second +
           "\"\nworkers = 1\nlog_level = \"warn\"\nmax_pending_per_client = 10\nmax_prefetch = 9\n");
  ASSERT_TRUE(d.shows(ctx, "max_prefetch", "9")) << d.log();  // the reload happened
  auto settings = d.settings(ctx);
  EXPECT_EQ(settings.at("endpoint"), first);
  EXPECT_EQ(settings.at("max_pending_per_client"), "100000");
  EXPECT_FALSE(std::filesystem::exists(other.path() + "/second.sock"));
  ASSERT_TRUE(wait_until([&] {
    std::string log = d.log();
    return log.find("endpoint change to '" + second + "' needs a restart") != std::string::npos &&
           log.find("max_pending_per_client change to '10' needs a restart") != std::string::npos;
  })) << d.log();
  RawClient c(ctx, first);
  EXPECT_EQ(c.welcome().max_pending, 100000u);
  c.submit(1, "echo", args(1));
  ASSERT_TRUE(c.wait_finals(1));
  // A reload that changes nothing restart-only warns of nothing (the endpoint as given, not as bound).
  std::size_t warnings = d.log().size();
  d.reload("endpoint = \"" + first + "\"\nworkers = 1\nlog_level = \"warn\"\nmax_prefetch = 11\n");
  ASSERT_TRUE(d.shows(ctx, "max_prefetch", "11"));
  EXPECT_EQ(d.log().size(), warnings) << d.log();
}

TEST(Reload, ATcpWildcardEndpointDoesNotWarnOnEveryReload) {
  zmq::context_t ctx;
  ReloadDaemon d("endpoint = \"tcp://127.0.0.1:*\"\nworkers = 1\nlog_level = \"warn\"\n");
  d.reload("endpoint = \"tcp://127.0.0.1:*\"\nworkers = 1\nlog_level = \"warn\"\nmax_prefetch = 5\n");
  ASSERT_TRUE(d.shows(ctx, "max_prefetch", "5"));
  EXPECT_EQ(d.log().find("needs a restart"), std::string::npos) << d.log();
}

// (d) metrics_port moves the metrics server: the new port serves, the old one stops; a port that
// cannot be had is logged and the old one goes on serving.
TEST(Reload, MetricsMoveToTheNewPortOrStayWhereTheyAre) {
  int port1 = free_tcp_port(), port2 = free_tcp_port(), port3 = free_tcp_port();
  auto file = [](int port) {
    return "workers = 1\nlog_level = \"warn\"\nmetrics_port = " + std::to_string(port) + "\n";
  };
  zmq::context_t ctx;
  ReloadDaemon d(file(port1));
  ASSERT_TRUE(wait_until([&] { return metrics_at(port1).find("zexec_") != std::string::npos; }));
  d.reload(file(port2));
  ASSERT_TRUE(wait_until([&] { return metrics_at(port2).find("zexec_") != std::string::npos; })) << d.log();
  EXPECT_TRUE(wait_until([&] { return metrics_at(port1).empty(); })) << "the old port still serves";
  EXPECT_EQ(d.settings(ctx).at("metrics_port"), std::to_string(port2));

  // port3 taken by another program (a plain socket: httplib's would share it, SO_REUSEPORT).
  int squatter = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port3));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(squatter, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(squatter, 1), 0);
  d.reload(file(port3));
  ASSERT_TRUE(wait_until([&] {
    return d.log().find("cannot listen on 127.0.0.1:" + std::to_string(port3)) != std::string::npos;
  })) << d.log();
  EXPECT_EQ(d.settings(ctx).at("metrics_port"), std::to_string(port2));
  EXPECT_NE(metrics_at(port2).find("zexec_"), std::string::npos);

  ::close(squatter);
  d.reload("workers = 1\nlog_level = \"warn\"\nmetrics_port = 0\n");
  ASSERT_TRUE(d.shows(ctx, "metrics_port", "0"));
  EXPECT_TRUE(metrics_at(port2).empty());
}

// --help and the man page say which settings need a restart and which apply to new clients.
TEST(Reload, HelpAndManPageMarkEachSettingsReloadClass) {
  TempDir dir;
  // The flag's entry: its line in --help, its .BI line and text in the man page.
  auto entry = [&](const char* opt, const std::string& flag) {
    Process p({bin_path("zexecd"), opt}, {}, dir.path() + "/out");
    EXPECT_TRUE(p.wait_exit(10s));
    std::string text = read_file(dir.path() + "/out");
    auto at = text.find(flag + " ");
    if (at == std::string::npos) return std::string();
    return text.substr(at, text.find('\n', text.find('\n', at) + 1) - at);
  };
  EXPECT_NE(entry("--help", "--endpoint").find("(restart)"), std::string::npos);
  EXPECT_NE(entry("--help", "--heartbeat-ms").find("(new clients)"), std::string::npos);
  EXPECT_EQ(entry("--help", "--max-prefetch").find("(re"), std::string::npos);
  EXPECT_NE(entry("--manpage", "\\-\\-endpoint").find("(restart)"), std::string::npos);
  EXPECT_NE(entry("--manpage", "\\-\\-heartbeat\\-ms").find("(new clients)"), std::string::npos);
  EXPECT_NE(entry("--manpage", "\\-\\-max\\-prefetch").find("Default"), std::string::npos);
  EXPECT_EQ(entry("--manpage", "\\-\\-max\\-prefetch").find("(re"), std::string::npos);
}
