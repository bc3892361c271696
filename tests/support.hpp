// Test support: real child processes, temporary directories, and polling with a deadline.
// Tests never sleep to synchronise: they wait for a condition with wait_until().
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace zexec::test {

using namespace std::chrono_literals;

// A whole file (a log, a captured stdout) as one string; "" when it cannot be read.
inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::string bin_path(const std::string& name) {
  return std::string(ZEXEC_BIN_DIR) + "/" + name;
}

// Polls `pred` until it holds or `timeout` passes. Returns whether it held.
inline bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);  // poll interval, not synchronisation
  }
  return true;
}

// A directory removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "zexec-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string ipc(const std::string& name) const { return "ipc://" + path_ + "/" + name; }

 private:
  std::string path_;
};

// A child process; SIGTERM + reaped at destruction if still running.
class Process {
 public:
  // argv[0] is the program path. `env` entries ("K=V") are added to the inherited environment.
  // `stdout_path`, when given, receives the child's stdout.
  Process(std::vector<std::string> argv, std::vector<std::string> env = {}, std::string stdout_path = {},
          std::string stderr_path = {}) {
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      for (auto& e : env) putenv(e.data());
      if (!stdout_path.empty()) {
        int fd = open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 1);
      }
      if (!stderr_path.empty()) {
        int fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2);
      }
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~Process() {
    if (running()) {
      kill(SIGTERM);
      if (!wait_exit(10s)) {
        kill(SIGKILL);
        wait_exit(10s);
      }
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void kill(int sig) const {
    if (pid_ > 0 && !status_) ::kill(pid_, sig);
  }
  bool running() {
    reap(WNOHANG);
    return !status_.has_value();
  }
  // Waits for the process to exit; returns false if it did not within `timeout`.
  bool wait_exit(std::chrono::milliseconds timeout) {
    return wait_until([this] { return !running(); }, timeout);
  }
  // Raw wait status (valid after exit).
  int status() const { return status_.value_or(-1); }
  bool exited_ok() const { return status_ && WIFEXITED(*status_) && WEXITSTATUS(*status_) == 0; }

 private:
  void reap(int flags) {
    if (status_ || pid_ <= 0) return;
    int st = 0;
    if (waitpid(pid_, &st, flags) == pid_) status_ = st;
  }
  pid_t pid_ = -1;
  std::optional<int> status_;
};

}  // namespace zexec::test
