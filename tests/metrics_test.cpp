// Prometheus metrics: off by default, on a loopback port when asked, counting what happened.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <sstream>

#include "daemon_harness.hpp"

namespace proto = zexec::proto;
using namespace zexec::test;
using namespace std::chrono_literals;

namespace {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// GET /metrics over a plain socket; "" when nothing listens.
std::string scrape(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    std::string req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    (void)!::write(fd, req.data(), req.size());
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace

TEST(Metrics, CountOutcomesInThePrometheusTextFormat) {
  int port = free_port();
  Daemon d(2, {}, {"--metrics-port", std::to_string(port)});
  zmq::context_t ctx;
  RawClient c(ctx, d.endpoint());
  c.submit(1, "echo", args(1));
  c.submit(2, "echo", args(2));
  c.submit(3, "fail", args(std::string("x")));
  ASSERT_TRUE(c.wait_finals(3));
  std::string text;
  ASSERT_TRUE(wait_until([&] {
    text = scrape(port);
    return text.find("zexec_tasks_total{outcome=\"succeeded\"} 2\n") != std::string::npos;
  })) << text;
  EXPECT_NE(text.find("HTTP/1.1 200"), std::string::npos);
  EXPECT_NE(text.find("# TYPE zexec_tasks_total counter"), std::string::npos);
  EXPECT_NE(text.find("zexec_tasks_total{outcome=\"failed\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("zexec_workers{state=\"ready\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("zexec_clients 1\n"), std::string::npos) << text;
}

TEST(Metrics, OffByDefault) {
  Daemon d(1);  // ipc endpoint, no metrics port: zexecd must listen on no TCP port at all
  std::set<std::string> inodes;
  std::string fd_dir = "/proc/" + std::to_string(d.process().pid()) + "/fd";
  for (const auto& e : std::filesystem::directory_iterator(fd_dir)) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec).string();
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  ASSERT_FALSE(inodes.empty());
  std::ifstream tcp("/proc/net/tcp");
  std::string line;
  std::getline(tcp, line);  // header
  int listening = 0;
  while (std::getline(tcp, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, state, queues, timer, retr, uid, timeout, inode;
    f >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode;
    if (state == "0A" && inodes.count(inode)) ++listening;
  }
  EXPECT_EQ(listening, 0);
}
