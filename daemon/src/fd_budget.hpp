// zexecd's open-file budget: raise RLIMIT_NOFILE at start, and derive from it how many clients the
// daemon can take without running out of descriptors. libzmq aborts the process (an assertion,
// e.g. src/ipc_listener.cpp:325) when accept() or its resolver hits EMFILE, so the client cap is
// what really protects the daemon, and it is kept conservative.
#pragma once

#include <spdlog/common.h>

#include <string>

#include "options.hpp"

namespace zexecd {

// Descriptors the daemon holds, measured on zexecd (ipc and tcp alike: count /proc/PID/fd before
// and after; tests/limits_test.cpp measures them again, FdsPerClientAndWorkerAreAsBudgeted):
//   a client: its results PUSH socket (libzmq mailbox eventfd + listening socket), the accepted
//     connection of the client's PULL, and the client's DEALER connection to the ROUTER = 4;
//   a worker: its tasks PUSH (mailbox + listening socket), the accepted connection of the worker's
//     PULL, and the worker's PUSH connection to the events socket = 4 (no pipes: a worker
//     inherits stdin/stdout/stderr).
inline constexpr int kFdsPerClient = 4;
inline constexpr int kFdsPerWorker = 4;
// The daemon's own, besides what main() counted as open at start: the libzmq context (reaper
// and I/O thread: 2 epoll + 3 mailbox eventfds), the ROUTER and the events PULL (mailbox +
// listener each), the signalfd: 11 measured; 14 with the metrics port; 16 leaves room for the
// socket that probes a stale ipc endpoint at start.
inline constexpr int kFdsDaemonBase = 16;
// Left over for what is not a client: `status` and `zexec` CLI connections, refused peers (each
// holds its ROUTER connection until it disconnects), metrics scrapes, libzmq's resolver, a worker
// being replaced while its successor starts. 32 plus a tenth of the limit.
inline int fd_safety_margin(long soft_limit) {
  return 32 + static_cast<int>(soft_limit / 10);
}
// libzmq's default ZMQ_MAX_SOCKETS (1023) bounds the sockets of the broker's context: one per
// client and per worker, the ROUTER, the events PULL and the start-up probe, and a few spare.
inline constexpr int kZmqSocketsSpare = 8;

// A line for the log, written later: zexecd's first line is "zexecd listening on ..." (journal
// readers and tests look for it), and these figures are known before the broker starts.
struct Note {
  spdlog::level::level_enum level = spdlog::level::off;
  std::string text;
  void log() const;
};

struct FdBudget {
  long soft = 0;            // RLIMIT_NOFILE soft limit, after raise_fd_limit()
  long hard = 0;            // its hard limit
  long soft_before = 0;     // the soft limit zexecd was started with
  int open_at_start = 0;    // descriptors open before the broker started (inherited, stdio)
  int zmq_max_sockets = 0;  // sockets one libzmq context may have
  Note note;                // the limit, raised or not (info), or why it could not be (warn)
};

// Raises the soft limit to the hard one (capped at fs.nr_open) and counts the open descriptors.
// Never throws: a limit it cannot raise is used as it is (and said so in the note).
FdBudget raise_fd_limit();

// The clients `budget` allows with the workers of `o`: (soft - open - base - workers x
// kFdsPerWorker - margin) / kFdsPerClient, and no more than the libzmq socket limit allows. May
// be < 1 when the limit is too low even for the workers.
int clients_allowed(const FdBudget& budget, const Options& o);

// Resolves o.max_clients: 0 (auto) becomes clients_allowed(); a number above it is lowered to it
// (with a warning: more clients would abort the daemon); at least 1. Returns what to log; `at`
// starts it ("start", "SIGHUP").
Note apply_client_cap(const FdBudget& budget, Options& o, const char* at);

}  // namespace zexecd
