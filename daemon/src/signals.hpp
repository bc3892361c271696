// Signals, redis-style: the handler only records the signal and wakes the loop through a
// self-pipe; the loop does the work.
#pragma once

namespace zexecd {

struct SignalFlags {
  bool terminate = false;  // SIGTERM / SIGINT
  int terminate_count = 0;
  bool child = false;   // SIGCHLD: reap
  bool reload = false;  // SIGHUP
};

// Installs the handlers; returns the read end of the wake-up pipe (poll it for POLLIN).
int install_signal_handlers();
// Drains the pipe and returns what arrived since the last call.
SignalFlags take_signals();

}  // namespace zexecd
