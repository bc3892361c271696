// Built with zexec as a subdirectory: an embedded Executor with the stock workers, then one with
// this project's own worker (subdir_worker, on zexec::worker). Prints the daemon it started, so
// the script can check which zexecd the search found.
#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>
#include <zexec/zexec.hpp>

int main() {
  using namespace std::chrono_literals;
  int sum = 0;
  {
    zexec::Executor executor{2};
    std::cout
        << "daemon "
        << std::filesystem::read_symlink("/proc/" + std::to_string(executor.daemon_pid()) + "/exe").string()
        << "\n";
    std::vector<zexec::Future> futures;
    for (int i = 0; i < 5; ++i) futures.push_back(executor.submit("echo", i * 10));
    for (zexec::Future& f : zexec::as_completed(futures, 30s)) sum += f.result<int>();
  }
  zexec::ExecutorOptions options;
  options.workers = 1;
  options.worker_command = SUBDIR_WORKER;
  zexec::Executor custom{options};
  const auto tripled = custom.submit("triple", 14).result<std::int64_t>(30s);
  std::cout << "sum " << sum << " triple " << tripled << "\n";
  return sum == 100 && tripled == 42 ? 0 : 1;
}
