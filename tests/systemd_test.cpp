// zexecd under systemd: the test plays systemd's side of Type=notify (a datagram socket in
// $NOTIFY_SOCKET, a watchdog in $WATCHDOG_USEC) and checks what arrives, in order; and the unit
// file passes `systemd-analyze verify`.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "support.hpp"

using namespace zexec::test;
using namespace std::chrono_literals;

namespace {

class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw std::runtime_error("bind");
  }
  ~NotifySocket() { ::close(fd_); }
  // Every datagram so far, one notification line each.
  void drain(std::vector<std::string>& lines) {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd_, buf, sizeof buf, 0)) > 0;) {
      std::istringstream in(std::string(buf, static_cast<std::size_t>(n)));
      for (std::string line; std::getline(in, line);) lines.push_back(line);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
};

std::size_t first(const std::vector<std::string>& lines, const std::string& prefix) {
  for (std::size_t i = 0; i < lines.size(); ++i)
    if (lines[i].rfind(prefix, 0) == 0) return i;
  return std::string::npos;
}

}  // namespace

TEST(Systemd, NotifiesReadyStatusWatchdogAndStoppingInOrder) {
  TempDir dir;
  NotifySocket notify(dir.path() + "/notify");
  Process daemon(
      {bin_path("zexecd"), "--endpoint", dir.ipc("d.sock"), "--workers", "2", "--log-level", "warn"},
      {"NOTIFY_SOCKET=" + dir.path() + "/notify", "WATCHDOG_USEC=200000"});
  std::vector<std::string> lines;
  ASSERT_TRUE(wait_until([&] {
    notify.drain(lines);
    return first(lines, "WATCHDOG=1") != std::string::npos && first(lines, "READY=1") != std::string::npos;
  }));
  daemon.kill(SIGTERM);
  ASSERT_TRUE(daemon.wait_exit(15s));
  EXPECT_TRUE(daemon.exited_ok());
  notify.drain(lines);
  auto ready = first(lines, "READY=1"), status = first(lines, "STATUS="),
       watchdog = first(lines, "WATCHDOG=1"), stopping = first(lines, "STOPPING=1");
  ASSERT_NE(ready, std::string::npos);
  ASSERT_NE(status, std::string::npos);
  ASSERT_NE(watchdog, std::string::npos);
  ASSERT_NE(stopping, std::string::npos);
  EXPECT_LT(ready, status);  // READY=1 and its STATUS= come in one datagram, READY first
  EXPECT_LT(ready, watchdog);
  EXPECT_LT(watchdog, stopping);
  EXPECT_EQ(lines[status], "STATUS=2/2 workers ready, 0 running, 0 queued, 0 clients, 0 done");
  EXPECT_EQ(lines.back().rfind("STATUS=stopping", 0), 0u) << lines.back();
}

TEST(Systemd, RunsWithoutSystemd) {
  TempDir dir;
  Process daemon(
      {bin_path("zexecd"), "--endpoint", dir.ipc("d.sock"), "--workers", "1", "--log-level", "warn"},
      {"NOTIFY_SOCKET="});
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir.path() + "/d.sock"); }));
  daemon.kill(SIGTERM);
  ASSERT_TRUE(daemon.wait_exit(15s));
  EXPECT_TRUE(daemon.exited_ok());
}

TEST(Systemd, UnitFilePassesSystemdAnalyzeVerify) {
  if (std::system("command -v systemd-analyze >/dev/null") != 0)
    GTEST_SKIP() << "systemd-analyze not installed";
  TempDir dir;
  // The unit as installed, pointing at the zexecd just built (verify checks that it exists).
  std::ifstream in(std::string(ZEXEC_SOURCE_DIR) + "/systemd/zexecd.service");
  std::stringstream unit;
  unit << in.rdbuf();
  std::string text = unit.str();
  for (auto pos = text.find("/usr/bin/zexecd"); pos != std::string::npos; pos = text.find("/usr/bin/zexecd"))
    text.replace(pos, 15, bin_path("zexecd"));
  std::ofstream(dir.path() + "/zexecd.service") << text;
  std::string out = dir.path() + "/verify.out";
  int rc = std::system(
      ("systemd-analyze verify --man=no " + dir.path() + "/zexecd.service >" + out + " 2>&1").c_str());
  std::ifstream result(out);
  std::stringstream msgs;
  msgs << result.rdbuf();
  EXPECT_EQ(rc, 0) << msgs.str();
  EXPECT_EQ(msgs.str().find("zexecd.service"), std::string::npos)
      << msgs.str();  // nothing said about our unit
}

TEST(Systemd, LogsForTheJournalCarryPrioritiesAndNoTimestamps) {
  TempDir dir;
  std::string err = dir.path() + "/stderr";
  Process daemon({bin_path("zexecd"), "--endpoint", dir.ipc("d.sock"), "--workers", "1"},
                 {"JOURNAL_STREAM=8:12345"}, {}, err);
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir.path() + "/d.sock"); }));
  daemon.kill(SIGTERM);
  ASSERT_TRUE(daemon.wait_exit(15s));
  std::ifstream in(err);
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(first.rfind("<6>zexecd listening on ipc://", 0), 0u) << first;  // info = 6, no time stamp
}

// The unit's ExecReload= must work on a minimal Debian: only Essential programs (/bin/kill is
// procps, which such a system lacks; "Failed to locate executable /bin/kill"). Its command line
// is run here as systemd runs it, $MAINPID in the environment, against a real zexecd.
TEST(Systemd, ExecReloadNeedsOnlyEssentialProgramsAndReloads) {
  std::string unit = read_file(std::string(ZEXEC_SOURCE_DIR) + "/systemd/zexecd.service");
  auto at = unit.find("\nExecReload=");
  ASSERT_NE(at, std::string::npos);
  std::string line = unit.substr(at + 12, unit.find('\n', at + 1) - at - 12);
  EXPECT_EQ(line.rfind("/bin/sh ", 0), 0u) << line;  // dash is Essential; procps is not
  for (auto pos = line.find("$$"); pos != std::string::npos; pos = line.find("$$", pos + 1))
    line.replace(pos, 2, "$");  // systemd's escape for a literal $
  TempDir dir;
  std::string config = dir.path() + "/zexecd.toml", err = dir.path() + "/stderr";
  std::ofstream(config) << "workers = 1\n";
  Process daemon({bin_path("zexecd"), "--endpoint", dir.ipc("d.sock"), "--config", config}, {}, {}, err);
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(dir.path() + "/d.sock"); }));
  // The same quoting rules as systemd's for this line: words, '...' and "..." groups.
  Process reload({"/bin/sh", "-c", line}, {"MAINPID=" + std::to_string(daemon.pid())});
  ASSERT_TRUE(reload.wait_exit(10s));
  EXPECT_EQ(WEXITSTATUS(reload.status()), 0);
  EXPECT_TRUE(wait_until([&] {
    return read_file(err).find("SIGHUP: settings reloaded") != std::string::npos;
  })) << read_file(err);
  daemon.kill(SIGTERM);
  ASSERT_TRUE(daemon.wait_exit(15s));
}
