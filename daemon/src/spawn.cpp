#include "spawn.hpp"

#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string_view>
#include <system_error>

namespace zexecd {

std::vector<std::string> split_command(const std::string& line) {
  std::vector<std::string> words;
  std::string cur;
  bool in_word = false;
  char quote = 0;
  for (std::size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quote) {
      if (c == quote)
        quote = 0;
      else if (c == '\\' && quote == '"' && i + 1 < line.size())
        cur += line[++i];
      else
        cur += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < line.size()) {
      cur += line[++i];
      in_word = true;
    } else if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) words.push_back(std::move(cur));
      cur.clear();
      in_word = false;
    } else {
      cur += c;
      in_word = true;
    }
  }
  if (quote) throw std::invalid_argument("worker command: unterminated quote in '" + line + "'");
  if (in_word) words.push_back(std::move(cur));
  if (words.empty()) throw std::invalid_argument("worker command is empty");
  return words;
}

namespace {
long worker_fd_limit = 0;  // set once at start, before any worker is spawned
}  // namespace

void set_worker_fd_limit(long soft) {
  worker_fd_limit = soft;
}

pid_t spawn_process(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  // Build everything before fork: only async-signal-safe calls are allowed in the child.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // The environment is inherited plus `env`; a variable set in `env` wins.
  std::vector<std::string> env_all;
  for (char** e = environ; *e; ++e) {
    std::string_view kv = *e;
    bool overridden = false;
    for (const auto& x : env)
      if (kv.substr(0, kv.find('=') + 1) == std::string_view(x).substr(0, x.find('=') + 1)) overridden = true;
    if (!overridden) env_all.emplace_back(kv);
  }
  env_all.insert(env_all.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& e : env_all) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);  // the daemon died between fork and prctl
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGTERM, SIGINT, SIGCHLD, SIGHUP, SIGPIPE}) signal(sig, SIG_DFL);
    if (worker_fd_limit > 0) {
      rlimit r{};
      if (getrlimit(RLIMIT_NOFILE, &r) == 0 && static_cast<rlim_t>(worker_fd_limit) < r.rlim_cur) {
        r.rlim_cur = static_cast<rlim_t>(worker_fd_limit);
        setrlimit(RLIMIT_NOFILE, &r);
      }
    }
    execvpe(args[0], args.data(), envp.data());
    const char* msg = "zexecd: cannot execute worker command\n";
    [[maybe_unused]] auto n = write(2, msg, strlen(msg));
    _exit(127);
  }
  return pid;
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) + (abbrev ? std::string(" (SIG") + abbrev + ")" : "");
  }
  return "ended with wait status " + std::to_string(status);
}

std::string self_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

}  // namespace zexecd
