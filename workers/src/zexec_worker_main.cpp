// zexec-worker: the stock worker zexecd starts when no custom worker binary is configured.
// It also serves the examples, tests and benchmarks, hence tasks like crash and noop.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "zexec/worker.hpp"

namespace {

struct TaskHelp {
  const char* signature;
  const char* description;
};

constexpr TaskHelp kTaskHelp[] = {
    {"sleep(seconds) -> seconds", "sleeps, returns its argument (a float)"},
    {"echo(x) -> x", "returns its argument, any msgpack value"},
    {"fail(message)", "throws std::runtime_error(message)"},
    {"crash()", "aborts the worker process (SIGABRT)"},
    {"random_sleep(name, scale) -> str",
     "sleeps v*scale s, v uniform in [0,1); returns \"Task=<name>: <v:.2f>\""},
    {"noop() -> nil", "does nothing (for benchmarks)"},
    {"pid() -> int", "the worker's process id (for tests of supervision)"},
    {"hog(megabytes) -> pid", "keeps that much more memory for good (for tests of recycling)"},
    {"flaky(n) -> attempt", "raises on runs before the n-th, then returns the run's number (retries)"},
    {"crashy(n) -> attempt", "aborts the worker on runs before the n-th, then returns the number"},
};

void print_help() {
  std::printf(
      "zexec-worker: the stock zexec worker process.\n"
      "\n"
      "It is started by zexecd, not by hand: zexecd passes ZEXEC_TASKS_ENDPOINT,\n"
      "ZEXEC_EVENTS_ENDPOINT, ZEXEC_WORKER_ID and ZEXEC_HEARTBEAT_MS in the environment\n"
      "(docs/PROTOCOL.md section 4) and the worker runs the tasks it is sent, one at a time.\n"
      "\n"
      "Tasks:\n");
  for (const auto& t : kTaskHelp) std::printf("  %-34s %s\n", t.signature, t.description);
}

// Arguments in seconds come from clients: reject what std::chrono cannot represent.
std::chrono::duration<double> checked_seconds(const char* what, double seconds) {
  constexpr double kMaxSeconds = 1e9;  // ~31 years; beyond that nanosecond counts overflow
  if (!std::isfinite(seconds) || seconds < 0 || seconds > kMaxSeconds)
    throw std::invalid_argument(std::string(what) + " must be a number of seconds in [0, 1e9]");
  return std::chrono::duration<double>(seconds);
}

std::mt19937_64& rng() {
  // One generator per process, seeded so that sibling workers do not sleep in lockstep.
  static std::mt19937_64 engine(std::random_device{}() ^ static_cast<std::uint64_t>(::getpid()));
  return engine;
}

// The name as the client gave it: a str without quotes, anything else as msgpack prints it.
std::string plain(const msgpack::object& o) {
  if (o.type == msgpack::type::STR) return std::string(o.via.str.ptr, o.via.str.size);
  std::ostringstream out;
  out << o;
  return out.str();
}

void add_stock_tasks(zexec::Worker& worker) {
  worker.add("sleep", [](double seconds) {
    std::this_thread::sleep_for(checked_seconds("seconds", seconds));
    return seconds;
  });
  worker.add("echo", [](msgpack::object x) { return x; });
  worker.add("fail", [](std::string message) -> void { throw std::runtime_error(message); });
  worker.add("crash", []() -> void { std::abort(); });
  worker.add("random_sleep", [](msgpack::object name, double scale) {
    double v = std::uniform_real_distribution<double>(0.0, 1.0)(rng());
    std::this_thread::sleep_for(checked_seconds("scale", v * scale));
    char value[32];
    std::snprintf(value, sizeof value, "%.2f", v);
    return "Task=" + plain(name) + ": " + value;
  });
  worker.add("noop", [] {});
  worker.add("pid", [] { return static_cast<std::int64_t>(::getpid()); });
  // Grows this worker's memory for good (a leak on purpose), to exercise recycling by RSS.
  worker.add("hog", [](std::uint32_t megabytes) {
    static std::vector<std::vector<char>> kept;
    if (megabytes > 4096) throw std::invalid_argument("hog: at most 4096 MiB");
    kept.emplace_back(static_cast<std::size_t>(megabytes) << 20, '\1');  // touched: resident
    return static_cast<std::int64_t>(::getpid());
  });
  // Which run of a task this is (zexec::current_attempt()), for tests of retries and re-runs.
  worker.add("flaky", [](std::uint32_t n) {
    if (zexec::current_attempt() < n)
      throw std::runtime_error("flaky: run " + std::to_string(zexec::current_attempt()) + " of " +
                               std::to_string(n));
    return zexec::current_attempt();
  });
  worker.add("crashy", [](std::uint32_t n) {
    if (zexec::current_attempt() < n) std::abort();
    return zexec::current_attempt();
  });
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      print_help();
      return 0;
    }
    std::fprintf(stderr, "zexec-worker: unknown argument '%s' (try --help)\n", argv[i]);
    return 2;
  }
  try {
    zexec::Worker worker;
    add_stock_tasks(worker);
    return worker.run();
  } catch (const zexec::WorkerError& e) {
    std::fprintf(stderr, "zexec-worker: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zexec-worker: fatal: %s\n", e.what());
    return 1;
  }
}
