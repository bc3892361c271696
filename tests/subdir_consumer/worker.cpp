// A custom worker program built on zexec::worker from the subproject: one task, "triple".
#include <cstdint>
#include <zexec/worker.hpp>

int main() {
  zexec::Worker worker;
  worker.add("triple", [](std::int64_t x) { return 3 * x; });
  return worker.run();
}
