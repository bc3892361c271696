// The same 10 tasks, but we only wait 0.05 s for the first result: every task sleeps longer
// than that (most of them), so as_completed() throws zexec::TimeoutError. Leaving the scope
// still waits for the tasks, like ProcessPoolExecutor's `with` block.
//
//   as_completed_timeout [scale]
#include <chrono>
#include <iostream>
#include <string>
#include <vector>
#include <zexec/zexec.hpp>

int main(int argc, char** argv) {
  double scale = argc > 1 ? std::stod(argv[1]) : 10.0;
  zexec::Executor executor{10};
  std::vector<zexec::Future> futures;
  for (int i = 0; i < 10; ++i) futures.push_back(executor.submit("random_sleep", i, scale));
  // handle a timeout waiting for the first result
  try {
    for (zexec::Future& future : zexec::as_completed(futures, std::chrono::milliseconds(50))) {
      std::cout << future.result<std::string>() << std::endl;
    }
  } catch (const zexec::TimeoutError&) {
    std::cout << "Timed out waiting for a result" << std::endl;
  }
}
