#include "daemon_process.hpp"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "zexec/errors.hpp"

namespace zexec::detail {

namespace {

bool executable(const std::string& p) {
  return !p.empty() && ::access(p.c_str(), X_OK) == 0;
}

std::string describe_status(int st) {
  if (WIFEXITED(st)) return "exited with status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return std::string("was killed by signal ") + std::to_string(WTERMSIG(st));
  return "stopped";
}

}  // namespace

std::string find_daemon(const std::string& explicit_path) {
  // An explicit choice that is wrong is an error, not a reason to run some other zexecd.
  if (!explicit_path.empty()) {
    if (!executable(explicit_path))
      throw Error("zexecd not found: '" + explicit_path + "' is not an executable file");
    return explicit_path;
  }
  if (const char* env = std::getenv("ZEXEC_DAEMON"); env && *env) {
    if (!executable(env))
      throw Error(std::string("zexecd not found: $ZEXEC_DAEMON='") + env + "' is not executable");
    return env;
  }
  std::vector<std::string> candidates;
  // Beside the program: survives `cmake --install --prefix` elsewhere and moving the tree, which
  // the configured bindir (baked in at build time) does not.
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec && self.has_parent_path()) candidates.push_back((self.parent_path() / "zexecd").string());
  candidates.push_back(ZEXEC_INSTALLED_DAEMON);
  if (*ZEXEC_BUILD_DAEMON) candidates.push_back(ZEXEC_BUILD_DAEMON);  // "" in distribution packages
  for (const auto& c : candidates)
    if (executable(c)) return c;
  if (const char* path = std::getenv("PATH")) {
    std::string dirs = path;
    std::size_t start = 0;
    while (start <= dirs.size()) {
      auto end = dirs.find(':', start);
      if (end == std::string::npos) end = dirs.size();
      std::string dir = dirs.substr(start, end - start);
      std::string candidate = (dir.empty() ? std::string(".") : dir) + "/zexecd";
      if (executable(candidate)) return candidate;
      start = end + 1;
    }
  }
  std::string looked;
  for (const auto& c : candidates) looked += c + ", ";
  throw Error("zexecd not found: set $ZEXEC_DAEMON or ExecutorOptions::daemon_path (looked at " + looked +
              "and $PATH)");
}

DaemonProcess::DaemonProcess(std::vector<std::string> argv) : program_(argv.at(0)) {
  // Everything the child needs is prepared before fork(): after it, only async-signal-safe calls.
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  int pipefd[2];  // close-on-exec: EOF means exec succeeded, an errno means it failed
  if (::pipe2(pipefd, O_CLOEXEC) != 0) throw Error(std::string("pipe2: ") + std::strerror(errno));
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) {
    int err = errno;
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    throw Error("cannot start zexecd: fork: " + std::string(std::strerror(err)));
  }
  if (pid_ == 0) {
    // No PR_SET_PDEATHSIG: it fires when the forking *thread* ends. The daemon watches its parent
    // itself (--parent-pid, which the Executor passes).
    if (::getppid() != parent) ::_exit(1);  // the parent is already gone
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // do not inherit our blocked signals
    ::close(pipefd[0]);
    ::execv(args[0], args.data());
    int err = errno;
    [[maybe_unused]] auto n = ::write(pipefd[1], &err, sizeof err);
    ::_exit(127);
  }
  ::close(pipefd[1]);
  int err = 0;
  ssize_t n;
  do {
    n = ::read(pipefd[0], &err, sizeof err);
  } while (n < 0 && errno == EINTR);
  ::close(pipefd[0]);
  if (n > 0) {
    int st = 0;
    ::waitpid(pid_, &st, 0);
    status_ = st;
    throw Error("cannot run zexecd '" + program_ + "': " + std::strerror(err));
  }
}

DaemonProcess::~DaemonProcess() {
  stop(std::chrono::seconds(10));
}

std::optional<std::string> DaemonProcess::exited() {
  if (!status_ && pid_ > 0) {
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) status_ = st;
  }
  if (!status_) return std::nullopt;
  return describe_status(*status_);
}

void DaemonProcess::stop(std::chrono::milliseconds timeout) noexcept {
  if (pid_ <= 0 || exited()) return;
  ::kill(pid_, SIGTERM);
  // Polls the child: there is no portable way to wait for one pid with a deadline.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto step = std::chrono::milliseconds(1);
  while (!exited()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
      status_ = st;
      return;
    }
    std::this_thread::sleep_for(step);
    step = std::min(step * 2, std::chrono::milliseconds(20));
  }
}

std::string make_private_dir() {
  // ipc paths are limited to ~107 bytes: fall back to /tmp when $TMPDIR is deep.
  std::string base;
  std::error_code ec;
  auto tmp = std::filesystem::temp_directory_path(ec);
  base = ec || tmp.string().size() > 60 ? std::string("/tmp") : tmp.string();
  std::string tmpl = base + "/zexec-XXXXXX";
  if (!::mkdtemp(tmpl.data()))
    throw Error("cannot create a private directory in " + base + ": " + std::strerror(errno));
  return tmpl;
}

void remove_tree(const std::string& dir) noexcept {
  std::error_code ec;
  if (!dir.empty()) std::filesystem::remove_all(dir, ec);
}

}  // namespace zexec::detail
