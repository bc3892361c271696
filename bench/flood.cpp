// 1,000,000 no-op tasks submitted as fast as one producer can, through an embedded daemon with
// 2 workers: does everything complete, and how much memory does the daemon need for it?
// The client library holds a producer to the daemon's per-client limit (max_pending), so the
// daemon's memory is bounded by that limit, not by the number of tasks.
//
//   zexec-flood [TASKS] [MAX_PENDING]      (defaults: 1000000, 100000)
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>
#include <zexec/zexec.hpp>

namespace {
// Peak and current resident memory of a process, in KiB (VmHWM / VmRSS).
std::pair<long, long> memory_kib(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  long hwm = 0, rss = 0;
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::stol(line.substr(6));
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stol(line.substr(6));
  }
  return {hwm, rss};
}
}  // namespace

int main(int argc, char** argv) {
  long tasks = argc > 1 ? std::stol(argv[1]) : 1000000;
  std::string max_pending = argc > 2 ? argv[2] : "100000";
  zexec::ExecutorOptions opts;
  opts.workers = 2;
  opts.daemon_args = {"--log-level", "warn", "--max-pending-per-client", max_pending};
  opts.client.submit_timeout = std::chrono::seconds(60);
  zexec::Executor ex{opts};
  ex.submit("noop").wait_done();
  auto [hwm0, rss0] = memory_kib(ex.daemon_pid());
  auto t0 = std::chrono::steady_clock::now();
  std::vector<zexec::Future> futures;
  futures.reserve(tasks);
  for (long i = 0; i < tasks; ++i) futures.push_back(ex.submit("noop"));
  bool all = ex.client().wait_all(std::chrono::minutes(10));
  long failed = 0;
  for (auto& f : futures) failed += f.exception(std::chrono::seconds(0)) != nullptr;
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto [hwm, rss] = memory_kib(ex.daemon_pid());
  std::printf("%ld tasks %s in %.2f s (%.0f tasks/s), %ld failed, max_pending %s\n", tasks,
              all ? "completed" : "NOT completed", s, tasks / s, failed, max_pending.c_str());
  std::printf("daemon resident memory: %ld KiB idle, %ld KiB peak, %ld KiB after\n", rss0, hwm, rss);
  std::printf("peak growth per pending task: %.0f bytes\n", (hwm - hwm0) * 1024.0 / std::stod(max_pending));
  return all && failed == 0 ? 0 : 1;
}
