// Results in the order tasks finish: 10 tasks that each sleep a random fraction of `scale`
// seconds run on a private zexecd with 10 workers; as_completed() hands back each future as its
// task finishes. The C++ twin of the ProcessPoolExecutor + as_completed() tutorial.
//
//   as_completed [scale]      (scale defaults to 10, as in the tutorial: up to 10 s per task)
#include <iostream>
#include <string>
#include <vector>
#include <zexec/zexec.hpp>

int main(int argc, char** argv) {
  double scale = argc > 1 ? std::stod(argv[1]) : 10.0;
  // start the pool: a private daemon with ten worker processes
  zexec::Executor executor{10};
  // submit tasks and collect futures
  std::vector<zexec::Future> futures;
  for (int i = 0; i < 10; ++i) futures.push_back(executor.submit("random_sleep", i, scale));
  // process task results as they are available
  for (zexec::Future& future : zexec::as_completed(futures)) {
    std::cout << future.result<std::string>() << std::endl;
  }
}
