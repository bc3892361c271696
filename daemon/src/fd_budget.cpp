#include "fd_budget.hpp"

#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

namespace zexecd {

namespace {

int count_open_fds() {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return 3;  // no /proc: stdin, stdout and stderr
  int n = 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n - 1;  // the directory being read
}

long nr_open() {
  std::ifstream f("/proc/sys/fs/nr_open");
  long n = 0;
  return f >> n && n > 0 ? n : 1048576;
}

std::string workers_text(int n) {
  return std::to_string(n) + (n == 1 ? " worker" : " workers");
}

int total_workers(const Options& o) {
  // As make_pools() resolves it: 0 = one per core.
  long n = o.workers > 0 ? o.workers : std::max(1u, std::thread::hardware_concurrency());
  for (const auto& p : o.pools) n += p.workers;
  return static_cast<int>(n);
}

}  // namespace

void Note::log() const {
  if (level != spdlog::level::off) spdlog::log(level, "{}", text);
}

FdBudget raise_fd_limit() {
  FdBudget b;
  rlimit rl{};
  std::string failed;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    failed = fmt::format("getrlimit(RLIMIT_NOFILE): {}; assuming 1024", std::strerror(errno));
    rl.rlim_cur = rl.rlim_max = 1024;
  }
  b.soft_before = static_cast<long>(rl.rlim_cur);
  rlim_t target = rl.rlim_max;
  if (target == RLIM_INFINITY || target > static_cast<rlim_t>(nr_open())) target = nr_open();
  if (rl.rlim_cur < target) {
    rlimit raised{target, rl.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
      rl.rlim_cur = target;
    else
      failed = fmt::format("cannot raise it to {}: {}", target, std::strerror(errno));
  }
  b.soft = static_cast<long>(rl.rlim_cur);
  b.hard = rl.rlim_max == RLIM_INFINITY ? nr_open() : static_cast<long>(rl.rlim_max);
  b.open_at_start = count_open_fds();
  b.zmq_max_sockets = ZMQ_MAX_SOCKETS_DFLT;  // the broker's context keeps libzmq's default
  if (!failed.empty())
    b.note = {spdlog::level::warn, fmt::format("open-file limit {} (hard {}), {} open at start: {}", b.soft,
                                               b.hard, b.open_at_start, failed)};
  else if (b.soft != b.soft_before)
    b.note = {spdlog::level::info,
              fmt::format("open-file limit raised from {} to {} (the hard limit), {} open "
                          "at start",
                          b.soft_before, b.soft, b.open_at_start)};
  else
    b.note = {spdlog::level::info,
              fmt::format("open-file limit {} (hard {}), {} open at start", b.soft, b.hard, b.open_at_start)};
  return b;
}

namespace {
struct Bounds {
  long by_fds, by_sockets;
};
Bounds bounds(const FdBudget& b, const Options& o) {
  long workers = total_workers(o);
  long fds = b.soft - b.open_at_start - kFdsDaemonBase - workers * kFdsPerWorker - fd_safety_margin(b.soft);
  return {std::max(0L, fds / kFdsPerClient),
          std::max(0L, b.zmq_max_sockets - 3 - workers - kZmqSocketsSpare)};
}
}  // namespace

int clients_allowed(const FdBudget& b, const Options& o) {
  Bounds n = bounds(b, o);
  return static_cast<int>(std::min(n.by_fds, n.by_sockets));
}

Note apply_client_cap(const FdBudget& b, Options& o, const char* at) {
  int allowed = clients_allowed(b, o);
  int asked = o.max_clients;
  std::string workers = workers_text(total_workers(o));
  if (allowed < 1) {
    o.max_clients = 1;
    return {spdlog::level::err,
            fmt::format("{}: the open-file limit {} leaves no room for clients besides {}; serving at most 1 "
                        "(raise LimitNOFILE= or ulimit -n)",
                        at, b.soft, workers)};
  }
  if (asked > allowed) {
    o.max_clients = allowed;
    return {
        spdlog::level::warn,
        fmt::format("{}: max_clients {} is more than the open-file limit {} allows with {}; serving at most "
                    "{} (raise LimitNOFILE= or ulimit -n)",
                    at, asked, b.soft, workers, allowed)};
  }
  if (asked > 0) return {spdlog::level::info, fmt::format("{}: max_clients {} (as set)", at, asked)};
  o.max_clients = allowed;
  Bounds n = bounds(b, o);
  if (n.by_fds <= n.by_sockets)
    return {spdlog::level::info,
            fmt::format("{}: max_clients {} (from the open-file limit {}, {}, {} descriptors per client)", at,
                        allowed, b.soft, workers, kFdsPerClient)};
  return {spdlog::level::info,
          fmt::format("{}: max_clients {} (libzmq's limit of {} sockets, {}; the open-file limit {} would "
                      "allow {})",
                      at, allowed, b.zmq_max_sockets, workers, b.soft, n.by_fds)};
}

}  // namespace zexecd
