// zexec::Worker: configuration from the environment and the executor loop. The executor is the
// thread that calls run(); it runs one task at a time, and between tasks does the I/O itself
// (link.hpp: a watchdog thread takes the sockets while a task runs long).
#include "zexec/worker.hpp"

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <optional>

#include "link.hpp"
#include "task_registry.hpp"

namespace zexec {
namespace {

constexpr const char* kTasksEndpointVar = "ZEXEC_TASKS_ENDPOINT";
constexpr const char* kEventsEndpointVar = "ZEXEC_EVENTS_ENDPOINT";
constexpr const char* kWorkerIdVar = "ZEXEC_WORKER_ID";
constexpr const char* kHeartbeatVar = "ZEXEC_HEARTBEAT_MS";

std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value) return std::nullopt;
  return std::string(value);
}

template <class T>
std::optional<T> parse_uint(const std::string& s) {
  T value{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

}  // namespace

WorkerConfig WorkerConfig::from_env() {
  WorkerConfig config;
  std::string missing;
  auto required = [&](const char* name) {
    auto value = env(name);
    if (!value) missing += (missing.empty() ? "" : ", ") + std::string(name);
    return value.value_or("");
  };
  config.tasks_endpoint = required(kTasksEndpointVar);
  config.events_endpoint = required(kEventsEndpointVar);
  std::string id = required(kWorkerIdVar);
  if (!missing.empty())
    throw WorkerError("missing environment variable(s) " + missing +
                      ": a zexec worker is started by zexecd, which sets them (docs/PROTOCOL.md §4); "
                      "it is not meant to be run by hand");

  auto worker_id = parse_uint<std::uint64_t>(id);
  if (!worker_id)
    throw WorkerError(std::string(kWorkerIdVar) + "='" + id + "' is not a decimal unsigned integer");
  config.worker_id = *worker_id;

  if (auto hb = env(kHeartbeatVar)) {
    auto ms = parse_uint<std::uint32_t>(*hb);
    if (!ms || *ms == 0)
      throw WorkerError(std::string(kHeartbeatVar) + "='" + *hb +
                        "' is not a positive number of milliseconds");
    config.heartbeat_ms = *ms;
  }
  return config;
}

struct Worker::Impl {
  WorkerOptions options;
  worker_internal::TaskRegistry registry;
  bool running = false;
};

Worker::Worker() : Worker(WorkerOptions{}) {}

Worker::Worker(WorkerOptions options) : impl_(std::make_unique<Impl>()) {
  if (options.capacity == 0) throw WorkerError("WorkerOptions::capacity must be at least 1");
  impl_->options = options;
}

Worker::~Worker() = default;

Worker& Worker::add_raw(std::string name, RawTask task) {
  // The registry is read without a lock while tasks run, so it is frozen once run() starts.
  if (impl_->running) throw WorkerError("task '" + name + "' added while the worker is running");
  impl_->registry.add(std::move(name), std::move(task));
  return *this;
}

std::vector<std::string> Worker::task_names() const {
  return impl_->registry.names();
}

int Worker::run() {
  return run(WorkerConfig::from_env());
}

namespace {
thread_local std::uint32_t t_attempt = 0;  // the attempt of the task this thread runs, 0 = none
}  // namespace

std::uint32_t current_attempt() noexcept {
  return t_attempt;
}

int Worker::run(const WorkerConfig& config) {
  if (impl_->running) throw WorkerError("Worker::run() is already running");
  if (config.heartbeat_ms == 0) throw WorkerError("WorkerConfig::heartbeat_ms must be positive");
  impl_->running = true;
  struct ResetRunning {
    bool& flag;
    ~ResetRunning() { flag = false; }
  } reset{impl_->running};

  proto::WorkerHello hello{config.worker_id, static_cast<std::int64_t>(::getpid()), impl_->options.capacity,
                           impl_->registry.names()};
  worker_internal::Link link(config, hello, ::getppid());
  proto::Event event;
  bool ran = false;
  while (auto task = link.next(ran ? &event : nullptr)) {
    t_attempt = task->attempt ? task->attempt : 1;
    event = impl_->registry.run(*task);
    t_attempt = 0;
    ran = true;
  }
  return link.close();
}

}  // namespace zexec
