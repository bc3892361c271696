// zexec::Executor: an embedded zexecd with its own workers, like a ProcessPoolExecutor.
//
//   zexec::Executor ex{4};                       // starts a private zexecd with 4 stock workers
//   auto f = ex.submit("sleep", 0.25);
//   for (auto& g : zexec::as_completed({f})) ...
//   // ~Executor() == shutdown(wait=true): waits for every task, then stops the daemon.
//
// The daemon is the first of these that is an executable file:
//   1. ExecutorOptions::daemon_path, if not empty (if it is not executable: Error, no search);
//   2. $ZEXEC_DAEMON, if set and not empty (likewise: Error if not executable);
//   3. `zexecd` in the directory of the running program (/proc/self/exe): a program installed
//      beside zexecd uses that one, wherever the tree was installed or moved to;
//   4. `zexecd` in the bindir libzexec was configured for (CMAKE_INSTALL_FULL_BINDIR): right
//      only if it was installed with that prefix (`cmake --install --prefix X` elsewhere makes
//      this miss, or find an older daemon there: use 1-3 then);
//   5. `zexecd` in the build tree libzexec was built in (not for the Debian packages);
//   6. `zexecd` in each directory of $PATH, in order.
// When none is, the constructor throws zexec::Error naming every place it looked.
// It listens on ipc://<private temporary directory>/zexecd.sock and gets SIGTERM if the thread
// that created the Executor exits (PR_SET_PDEATHSIG), so no daemon outlives its program.
#pragma once

#include <chrono>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "zexec/client.hpp"
#include "zexec/export.hpp"

namespace zexec {

namespace detail {
class DaemonProcess;
}

struct ExecutorOptions {
  static ClientOptions default_client_options() {
    ClientOptions o;
    o.connect_timeout = std::chrono::seconds(10);
    return o;
  }

  int workers = 0;             // worker processes; 0 = one per core
  std::string worker_command;  // "PATH ARGS..." for --worker-command; empty = the stock zexec-worker
  std::string daemon_path;     // empty = search (see above)
  std::vector<std::string> daemon_args{"--log-level", "warn"};  // appended to the command line
  // The connect timeout also covers the daemon's start-up (default 10 s here).
  ClientOptions client = default_client_options();
  // shutdown(): after SIGTERM, how long the daemon may take to exit before SIGKILL.
  std::chrono::milliseconds stop_timeout{10000};
};

class ZEXEC_API Executor {
 public:
  explicit Executor(int workers);
  explicit Executor(ExecutorOptions options = {});
  ~Executor();  // shutdown(wait = true)
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // As Client::submit(); throws zexec::Error after shutdown().
  template <class... Args>
  Future submit(std::string_view name, const Args&... args) {
    return submit_raw(name, detail::pack_args(args...));
  }
  template <class... Args>
  Future submit_with(const TaskOptions& options, std::string_view name, const Args&... args) {
    return submit_raw(name, detail::pack_args(args...), options);
  }
  Future submit_raw(std::string_view name, std::string args, const TaskOptions& options = {});

  // Stops accepting tasks. cancel_futures: cancel every task no worker has started (running
  // ones are never stopped here; use client().cancel_all(true) before shutdown() for that).
  // wait: block until every task submitted through this executor is done, then stop the daemon
  // (SIGTERM; SIGKILL after stop_timeout) and release everything. With wait = false this returns
  // at once; running tasks go on and the daemon is stopped by the destructor, which waits for
  // them. Idempotent; safe to call from any thread.
  void shutdown(bool wait = true, bool cancel_futures = false);

  // The client the executor submits through (for poll(), cancel_all(), ...); throws after the
  // daemon was stopped.
  Client& client();
  const std::string& endpoint() const { return endpoint_; }
  int daemon_pid() const;

 private:
  void teardown() noexcept;

  ExecutorOptions options_;
  std::string run_dir_;  // private directory holding the daemon's socket
  std::string endpoint_;
  std::unique_ptr<detail::DaemonProcess> daemon_;
  std::shared_ptr<Client> client_;  // shared: a concurrent shutdown(wait) may still use it
  mutable std::shared_mutex mu_;    // submit (shared) vs. teardown (exclusive)
  bool accepting_ = true;
  bool torn_down_ = false;
};

}  // namespace zexec
