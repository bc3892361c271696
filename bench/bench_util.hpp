// Small helpers shared by the benchmark programs in bench/ (not part of libzexec): child
// processes, a private temporary directory, statistics, /proc memory figures, one-line JSON.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

[[noreturn]] inline void die(const std::string& why) {
  std::fprintf(stderr, "bench: %s\n", why.c_str());
  std::exit(2);
}

// `--name value` options after the mode word; flags without a value get "1".
class Args {
 public:
  Args(int argc, char** argv, int first) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) die("unexpected argument '" + a + "'");
      const char* value = "1";
      if (i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0) value = argv[++i];
      values_.insert_or_assign(a.substr(2), std::string(value));
    }
  }
  std::string str(const std::string& k, const std::string& def) const {
    auto it = values_.find(k);
    return it == values_.end() ? def : it->second;
  }
  long num(const std::string& k, long def) const {
    auto it = values_.find(k);
    return it == values_.end() ? def : std::stol(it->second);
  }
  double real(const std::string& k, double def) const {
    auto it = values_.find(k);
    return it == values_.end() ? def : std::stod(it->second);
  }

 private:
  std::map<std::string, std::string> values_;
};

// The directory holding the running program (build-bench/bin): zexecd and friends live there.
inline std::string self_dir() {
  return std::filesystem::canonical("/proc/self/exe").parent_path().string();
}

inline std::string make_temp_dir(const char* tag) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/" + tag + "-XXXXXX";
  if (!mkdtemp(tmpl.data())) die("mkdtemp failed");
  return tmpl;
}

// A child process, optionally with its stdout on a pipe we read lines from.
struct Child {
  pid_t pid = -1;
  int out_fd = -1;
  std::string buffered;

  // The next stdout line, or nullopt on EOF or when nothing comes within `timeout`.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      if (auto nl = buffered.find('\n'); nl != std::string::npos) {
        std::string line = buffered.substr(0, nl);
        buffered.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return std::nullopt;
      pollfd p{out_fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char buf[4096];
      ssize_t n = ::read(out_fd, buf, sizeof buf);
      if (n <= 0) return std::nullopt;
      buffered.append(buf, static_cast<std::size_t>(n));
    }
  }

  // SIGTERM (then SIGKILL after `grace`), and reap.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000), int sig = SIGTERM) {
    if (pid <= 0) return;
    ::kill(pid, sig);
    auto deadline = Clock::now() + grace;
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      ::usleep(2000);
    }
    pid = -1;
    if (out_fd >= 0) ::close(out_fd);
    out_fd = -1;
  }
};

inline Child spawn(const std::vector<std::string>& argv, bool capture_stdout,
                   const std::vector<std::string>& extra_env = {}) {
  std::vector<char*> av;
  for (auto& a : argv) av.push_back(const_cast<char*>(a.c_str()));
  av.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.emplace_back(*e);
  for (auto& e : extra_env) env_store.push_back(e);
  std::vector<char*> ev;
  for (auto& e : env_store) ev.push_back(e.data());
  ev.push_back(nullptr);

  int fds[2] = {-1, -1};
  if (capture_stdout && ::pipe2(fds, O_CLOEXEC) != 0) die("pipe failed");
  pid_t parent = ::getpid();
  Child c;
  c.pid = ::fork();
  if (c.pid < 0) die("fork failed");
  if (c.pid == 0) {
    // Dies with the benchmark: nothing it started outlives a benchmark that crashed or was killed.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    if (capture_stdout) ::dup2(fds[1], 1);
    ::execve(av[0], av.data(), ev.data());
    std::fprintf(stderr, "bench: cannot start %s: %s\n", av[0], std::strerror(errno));
    ::_exit(127);
  }
  if (capture_stdout) {
    ::close(fds[1]);
    c.out_fd = fds[0];
  }
  return c;
}

// Percentile by nearest rank (p in [0, 100]) of unsorted samples.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  std::size_t rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size()) + 0.5);
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return v[rank - 1];
}

// Resident memory of a process in KiB: {VmRSS, VmHWM}.
inline std::pair<long, long> rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  long rss = 0, hwm = 0;
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stol(line.substr(6));
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::stol(line.substr(6));
  }
  return {rss, hwm};
}

// One flat JSON object on one line: what the driver (bench/run.py) reads.
class Json {
 public:
  Json& num(const std::string& k, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    add(k, buf);
    return *this;
  }
  Json& str(const std::string& k, const std::string& v) {
    std::string q = "\"";
    for (char c : v) q += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
    add(k, q + "\"");
    return *this;
  }
  void print() const { std::printf("{%s}\n", body_.c_str()), std::fflush(stdout); }

 private:
  void add(const std::string& k, const std::string& v) {
    if (!body_.empty()) body_ += ", ";
    body_ += "\"" + k + "\": " + v;
  }
  std::string body_;
};

}  // namespace bench
