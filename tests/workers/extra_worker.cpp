// A second kind of worker, for pool tests: other task names than the stock zexec-worker, and a
// task that says which pool it runs in.
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <zexec/worker.hpp>

int main() {
  zexec::Worker worker;
  worker.add("add", [](std::int64_t a, std::int64_t b) { return a + b; });
  worker.add("pool_name", [] {
    const char* p = std::getenv("ZEXEC_POOL");
    return std::string(p ? p : "");
  });
  worker.add("nap_ms", [](std::int64_t ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
  });
  return worker.run();
}
