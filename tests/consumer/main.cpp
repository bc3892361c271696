// Built against the installed zexec only: an embedded executor, a few tasks, results checked.
#include <chrono>
#include <iostream>
#include <vector>
#include <zexec/zexec.hpp>

int main() {
  zexec::Executor executor{2};
  std::vector<zexec::Future> futures;
  for (int i = 0; i < 5; ++i) futures.push_back(executor.submit("echo", i * 10));
  int sum = 0;
  for (zexec::Future& f : zexec::as_completed(futures, std::chrono::seconds(30))) sum += f.result<int>();
  try {
    executor.submit("fail", "boom").result<int>(std::chrono::seconds(30));
    std::cerr << "expected a TaskError\n";
    return 1;
  } catch (const zexec::TaskError& e) {
    std::cout << "task error: " << e.what() << "\n";
  }
  std::cout << "sum " << sum << "\n";
  return sum == 100 ? 0 : 1;
}
