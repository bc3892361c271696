// A private zexecd child process for zexec::Executor (internal).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace zexec::detail {

// The zexecd to run: `explicit_path`, $ZEXEC_DAEMON, beside the running program, the configured
// bindir, the build tree, then $PATH (the order documented in zexec/executor.hpp). Throws
// zexec::Error naming every place it looked.
std::string find_daemon(const std::string& explicit_path);

class DaemonProcess {
 public:
  // fork/exec `argv` (argv[0] = program path); throws zexec::Error if it cannot be executed.
  explicit DaemonProcess(std::vector<std::string> argv);
  ~DaemonProcess();  // stop(10 s) if still running
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  pid_t pid() const noexcept { return pid_; }
  // Reaps without blocking; returns a description ("exited with status 2", "killed by signal 9")
  // once the process has exited.
  std::optional<std::string> exited();
  // SIGTERM, wait up to `timeout`, then SIGKILL; always reaps.
  void stop(std::chrono::milliseconds timeout) noexcept;

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string program_;
};

// A fresh private directory (mkdtemp) for the daemon's ipc socket; removed by remove_tree().
std::string make_private_dir();
void remove_tree(const std::string& dir) noexcept;

}  // namespace zexec::detail
