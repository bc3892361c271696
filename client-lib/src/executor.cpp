#include "zexec/executor.hpp"

#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <thread>

#include "daemon_process.hpp"

namespace zexec {

namespace {
ExecutorOptions with_workers(int workers) {
  ExecutorOptions o;
  o.workers = workers;
  return o;
}
}  // namespace

Executor::Executor(int workers) : Executor(with_workers(workers)) {}

Executor::Executor(ExecutorOptions options) : options_(std::move(options)) {
  if (options_.workers < 0) throw Error("Executor: workers must be >= 0");
  int workers = options_.workers > 0 ? options_.workers
                                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::string> argv{detail::find_daemon(options_.daemon_path)};
  run_dir_ = detail::make_private_dir();
  endpoint_ = "ipc://" + run_dir_ + "/zexecd.sock";
  // The daemon stops when this process ends, whichever thread created the Executor.
  argv.insert(argv.end(), {"--endpoint", endpoint_, "--workers", std::to_string(workers), "--parent-pid",
                           std::to_string(::getpid())});
  if (!options_.worker_command.empty())
    argv.insert(argv.end(), {"--worker-command", options_.worker_command});
  argv.insert(argv.end(), options_.daemon_args.begin(), options_.daemon_args.end());
  try {
    daemon_ = std::make_unique<detail::DaemonProcess>(argv);
    ClientOptions copts = options_.client;
    // A daemon that dies during start-up (bad flag, bad worker command) fails the constructor
    // at once, not after the whole connect timeout.
    auto* daemon = daemon_.get();
    std::string program = argv[0];
    copts.abort_connect = [daemon, program,
                           user = options_.client.abort_connect]() -> std::optional<std::string> {
      if (auto how = daemon->exited())
        return "zexecd (" + program + ") " + *how + " before accepting connections";
      return user ? user() : std::nullopt;
    };
    client_ = std::make_shared<Client>(endpoint_, std::move(copts));
  } catch (...) {
    if (daemon_) daemon_->stop(options_.stop_timeout);
    daemon_.reset();
    detail::remove_tree(run_dir_);
    throw;
  }
}

Executor::~Executor() {
  shutdown(true);
}

Future Executor::submit_raw(std::string_view name, std::string args, const TaskOptions& options) {
  std::shared_lock lk(mu_);
  if (!accepting_) throw Error("Executor: cannot submit '" + std::string(name) + "' after shutdown()");
  return client_->submit_raw(name, std::move(args), options);
}

void Executor::shutdown(bool wait, bool cancel_futures) {
  std::shared_ptr<Client> client;
  {
    std::unique_lock lk(mu_);
    accepting_ = false;
    if (torn_down_) return;
    client = client_;
  }
  // Not under mu_: another thread's shutdown(wait) may be waiting for tasks at the same time.
  if (cancel_futures) {
    try {
      client->cancel_all(/*force=*/false);  // not-started ones only: running tasks finish
    } catch (const Error& e) {
      std::fprintf(stderr, "zexec: Executor::shutdown: cancel failed: %s\n", e.what());
    }
  }
  if (!wait) return;
  client->wait_all();  // bounded: a daemon that dies fails every task after 5 heartbeats
  client.reset();      // teardown() must be able to close the client (bye) before the daemon stops
  teardown();
}

void Executor::teardown() noexcept {
  std::unique_lock lk(mu_);
  if (torn_down_) return;
  torn_down_ = true;
  client_.reset();  // bye
  if (daemon_) daemon_->stop(options_.stop_timeout);
  daemon_.reset();
  detail::remove_tree(run_dir_);
}

Client& Executor::client() {
  std::shared_lock lk(mu_);
  if (torn_down_) throw Error("Executor: the daemon was stopped by shutdown()");
  return *client_;
}

int Executor::daemon_pid() const {
  std::shared_lock lk(mu_);
  return daemon_ ? daemon_->pid() : -1;
}

}  // namespace zexec
