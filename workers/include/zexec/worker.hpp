// The zexec worker runtime: register tasks, then run() serves them for zexecd.
//
//     zexec::Worker worker;
//     worker.add("sleep", [](double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s));
//     return s; }); worker.add("echo", [](msgpack::object x) { return x; }); return worker.run();
//
// A worker is a process started by zexecd (docs/PROTOCOL.md §4). run() reads the ZEXEC_*
// environment, connects to the daemon and executes tasks one at a time on the calling thread,
// which also talks to the daemon between tasks; during a long task an internal thread takes
// over (heartbeats, revoke, the started event).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include <zexec/detail/task_adapter.hpp>
#include <zexec/error.hpp>

#include "zexec/export.hpp"

namespace zexec {

// The worker could not start: missing/invalid environment, unusable endpoint, bad registration.
class ZEXEC_API WorkerError : public Error {
 public:
  using Error::Error;
};

// Reported to the client as error type "BadArguments". add() throws it when the arguments do
// not match the callable's parameters; tasks (typed or raw) may throw it themselves too.
class ZEXEC_API BadArguments : public Error {
 public:
  using Error::Error;
};

struct WorkerOptions {
  // Most tasks the worker accepts at once, running + queued (worker_hello.capacity, >= 1).
  std::uint32_t capacity = 1024;
};

// Where the daemon is and who we are; normally read from the environment zexecd sets.
struct ZEXEC_API WorkerConfig {
  std::string tasks_endpoint;         // ZEXEC_TASKS_ENDPOINT: our PULL connects here
  std::string events_endpoint;        // ZEXEC_EVENTS_ENDPOINT: our PUSH connects here
  std::uint64_t worker_id = 0;        // ZEXEC_WORKER_ID
  std::uint32_t heartbeat_ms = 1000;  // ZEXEC_HEARTBEAT_MS (optional)

  // Throws WorkerError naming every missing or malformed variable.
  static WorkerConfig from_env();
};

class ZEXEC_API Worker {
 public:
  // Takes the msgpack bytes of the argument array, returns the msgpack bytes of the result.
  using RawTask = detail::RawTask;

  Worker();
  explicit Worker(WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Registers a typed task. The parameter types are deduced from `fn` (a lambda, functor or
  // function with a single, non-template operator()); each msgpack argument is converted with
  // msgpack's convert (ints convert to double parameters, msgpack::object accepts anything)
  // and the return value is packed (void -> nil). Throws WorkerError for an empty or duplicate
  // name. Register everything before run().
  template <class F>
  Worker& add(std::string name, F fn) {
    static_assert(detail::deducible_callable<F>,
                  "zexec::Worker::add: cannot deduce the parameter types of this callable (a generic "
                  "lambda or an overloaded operator()?); give the parameters concrete types or use add_raw");
    auto raw = detail::make_raw_task(name, std::move(fn));
    return add_raw(std::move(name), std::move(raw));
  }

  // Registers a task working on raw msgpack bytes. It must return valid msgpack.
  Worker& add_raw(std::string name, RawTask task);

  // Registered names, in registration order (what worker_hello announces).
  std::vector<std::string> task_names() const;

  // Serves tasks until the daemon sends shutdown (returns 0) or goes away (returns 1).
  // run() reads the configuration from the environment and throws WorkerError when it is
  // missing (workers are started by zexecd); the second form takes it explicitly.
  int run();
  int run(const WorkerConfig& config);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Inside a task function: which run of this task it is. 1 the first time; 2 and up when zexecd
// runs it again after it raised (TaskOptions::retries) or its worker died under it
// (crash_retries), so a task with side effects it must not repeat can tell. 0 outside a task.
// (A zexecd older than this runtime never says, and every run reads 1.)
ZEXEC_API std::uint32_t current_attempt() noexcept;

}  // namespace zexec
