// zexec::Client: submits named tasks to a running zexecd and hands back Futures whose outcomes
// arrive in the order the tasks finish.
//
//   zexec::Client client{"ipc:///run/zexec/zexecd.sock"};   // or "tcp://host:port"
//   zexec::Future f = client.submit("sleep", 0.25);          // any msgpack-able arguments
//   double v = f.result<double>();
//
// Threads: every public member may be called from any thread. One background I/O thread per
// client owns both ZeroMQ sockets (they are not thread-safe): submit() only packs the arguments
// and appends to a bounded outbox; the I/O thread sends everything queued as ONE `submit`
// message, applies result updates, acks them, and heartbeats (docs/PROTOCOL.md §2-3).
// Done callbacks run on that I/O thread: keep them short and never block in them on another
// task of the same client (result()/exception() of an unfinished task and cancel() of a sent
// one throw zexec::Error there instead of deadlocking). Do not destroy the Client from one of
// its own callbacks.
//
// Liveness: the daemon heartbeats; if nothing arrives for 5 x heartbeat_ms every unfinished
// future fails with ConnectionError ("lost connection to zexecd ..."), so no waiter hangs.
// A daemon that keeps a journal (zexecd --journal) gives the client a session that survives a
// restart (docs/PROTOCOL.md §3, Sessions): on losing it (silence, or the daemon closing the
// connection) the client reconnects for up to ClientOptions::reconnect_timeout, futures staying
// pending and submit() queueing meanwhile (connected() is false), resumes the session and sends
// again the tasks the daemon had not yet accepted. Without a journal it does not reconnect:
// create a new Client.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "zexec/export.hpp"
#include "zexec/future.hpp"
#include "zexec/pack.hpp"
#include "zexec/timeout.hpp"

namespace zexec {

namespace detail {
class ClientCore;
}

struct ClientOptions {
  // client_name sent in `hello` (shows in the daemon's logs); empty = this program's name.
  std::string name;
  // The constructor waits this long for the daemon's `welcome`, then throws ConnectionError.
  std::chrono::milliseconds connect_timeout{5000};
  // Most tasks waiting in the outbox (packed, not yet handed to ZeroMQ). A full outbox makes
  // submit() block up to submit_timeout, then throw QueueFullError.
  std::size_t max_outbox = 65536;
  // The longest one submit() blocks for room: in the outbox, and under the daemon's limit of
  // unfinished tasks per client (see Client::submit()). Then it throws QueueFullError.
  std::chrono::milliseconds submit_timeout{10000};
  // cancel() waits this long for the daemon's cancel_reply, then throws ConnectionError. A forced
  // cancel of a running task is answered once its worker is gone: keep this above the daemon's
  // --cancel-grace-ms (default 2 s).
  std::chrono::milliseconds cancel_timeout{5000};
  // On close: how long `bye` and other unsent frames may take to leave (ZMQ_LINGER).
  std::chrono::milliseconds linger{1000};
  // Called about every 50 ms while the constructor waits for `welcome`; returning a message
  // aborts the wait at once with ConnectionError(message). (Executor uses it to notice a daemon
  // that exited during start-up instead of waiting out the whole connect_timeout.)
  std::function<std::optional<std::string>()> abort_connect;
  // With a daemon that keeps sessions (a journal): how long to keep reconnecting after losing
  // it before every unfinished future fails with ConnectionError ("... could not reconnect
  // within N s"). Meanwhile futures stay pending and submit() queues into the outbox. A daemon
  // that answers but no longer knows the session fails the tasks it had been sent
  // (ConnectionError "... did not resume this client's session ...") and the client goes on
  // with a new session. 0 = do not reconnect: fail at once, as without a journal.
  std::chrono::milliseconds reconnect_timeout{60000};
};

// Per-task options, sent in the task's options map (docs/PROTOCOL.md §3); 0 = the default.
// submit() throws zexec::Error for a negative value or one over 2^32 - 1 (ms).
struct TaskOptions {
  // Wall-time limit for running the task (timeout_ms); when it passes, the future fails with
  // TaskTimeoutError. 0 = no limit.
  std::chrono::milliseconds timeout{0};
  // Run the task again after it raised, up to this many times (retries). Not after UnknownTask,
  // BadArguments or ResultTooLarge (the same call would fail the same way), nor after a
  // TaskTimeout. The error of the last attempt is the outcome; after a retry its message ends
  // with " (attempt N)".
  int retries = 0;
  // Run the task again after its worker died under it (WorkerCrashed), up to this many times
  // (crash_retries). The daemon still fails a task that crashed its worker --quarantine-after
  // times (default 3) with QuarantinedError, whatever this says.
  int crash_retries = 0;
  // Wait before a retry: this before the first, doubled for each further one (retry_backoff_ms).
  std::chrono::milliseconds retry_backoff{0};
};

class ZEXEC_API Client {
 public:
  // Connects and completes the handshake (hello/welcome). Throws ConnectionError
  // "zexecd not reachable at ENDPOINT after 5 s" when no welcome comes within connect_timeout.
  explicit Client(std::string endpoint, ClientOptions options = {});
  // close(): sends `bye`, stops the I/O thread; unfinished futures fail with ConnectionError.
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Submits task `name` with positional arguments (packed as one msgpack array).
  // Backpressure: the daemon accepts at most Welcome::max_pending unfinished tasks per client
  // (zexecd --max-pending-per-client). While this client has that many (submitted, including
  // those still in the outbox, and not yet done), submit() blocks until one finishes, up to
  // ClientOptions::submit_timeout, then throws QueueFullError; so a fast producer is slowed down
  // rather than refused. It also blocks while the outbox is full (max_outbox). On the I/O
  // thread (a done callback) it cannot wait and throws QueueFullError at once instead.
  // Otherwise it never waits for the daemon. Throws QueueFullError, ConnectionError (connection
  // lost/closed) or zexec::Error (empty name, arguments too large, bad TaskOptions).
  template <class... Args>
  Future submit(std::string_view name, const Args&... args) {
    return submit_raw(name, detail::pack_args(args...));
  }
  // submit() with per-task options: client.submit_with({.timeout = 2s}, "sleep", 5.0).
  template <class... Args>
  Future submit_with(const TaskOptions& options, std::string_view name, const Args&... args) {
    return submit_raw(name, detail::pack_args(args...), options);
  }
  // `args` must already be a msgpack ARRAY of positional arguments.
  Future submit_raw(std::string_view name, std::string args, const TaskOptions& options = {});

  // The next future of this client to finish, in completion order, or nullopt when none does
  // within `timeout`. Each completed future is returned once, and only while the caller still
  // holds a Future of it (the one submit() returned, a copy, or one from poll()/as_completed()/
  // wait()): a future whose Futures were all dropped is never returned, whether it was dropped
  // before or after it completed, so the queue never outgrows what the caller keeps. (The
  // Future a done callback receives does not count: keep a copy of the submitted one instead.)
  std::optional<Future> poll(Timeout timeout = std::nullopt);

  // Cancels every task of this client that no worker has started (one round trip); returns how
  // many were cancelled. force = true also stops the running ones, as Future::cancel(true)
  // does: their worker processes are killed (the tasks may have had side effects). On a broken
  // or closed connection it counts only the unsent tasks it cancelled locally (no exception).
  std::size_t cancel_all(bool force = false);

  // Waits until every task submitted through this client is done; false on timeout.
  bool wait_all(Timeout timeout = std::nullopt);
  std::size_t unfinished() const;  // submitted and not yet done

  // The latest problem reported by the daemon (`error` message) or the connection, "" if none.
  std::string last_error() const;
  // False once the connection was lost or the client was closed. Lost includes a frame from the
  // daemon this client cannot decode (another protocol version, garbage): every unfinished
  // future fails with ConnectionError naming it, and later submits throw ConnectionError.
  // Also false while reconnecting to resume a session (ClientOptions::reconnect_timeout).
  bool connected() const;

  const std::string& endpoint() const;
  std::string results_endpoint() const;  // the PULL endpoint announced in welcome (resolved)
  std::uint64_t client_id() const;       // assigned by the daemon
  std::uint32_t workers() const;         // the daemon's configured pool size
  std::uint32_t heartbeat_ms() const;
  // The most unfinished tasks the daemon accepts from this client (see submit()); 0 = no limit.
  std::uint32_t max_pending() const;

  // Sends bye and stops; idempotent. Further submits throw ConnectionError.
  void close();

 private:
  detail::ClientCore& core() const;
  std::shared_ptr<detail::ClientCore> core_;
};

}  // namespace zexec
