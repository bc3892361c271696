#include "signals.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <system_error>

namespace zexecd {
namespace {

int g_pipe[2] = {-1, -1};
std::atomic<int> g_term{0};
std::atomic<bool> g_child{false};
std::atomic<bool> g_hup{false};

void on_signal(int sig) {
  int saved = errno;
  if (sig == SIGCHLD)
    g_child = true;
  else if (sig == SIGHUP)
    g_hup = true;
  else
    g_term.fetch_add(1);
  char c = 1;
  [[maybe_unused]] auto n = write(g_pipe[1], &c, 1);  // full pipe = a wake-up is already pending
  errno = saved;
}

}  // namespace

int install_signal_handlers() {
  if (g_pipe[0] < 0) {
    if (pipe2(g_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
      throw std::system_error(errno, std::generic_category(), "pipe2");
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGCHLD, SIGHUP}) sigaction(sig, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return g_pipe[0];
}

SignalFlags take_signals() {
  char buf[64];
  while (read(g_pipe[0], buf, sizeof buf) > 0) {
  }
  SignalFlags f;
  f.terminate_count = g_term.exchange(0);
  f.terminate = f.terminate_count > 0;
  f.child = g_child.exchange(false);
  f.reload = g_hup.exchange(false);
  return f;
}

}  // namespace zexecd
