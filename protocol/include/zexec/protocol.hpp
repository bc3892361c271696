// The zexec wire protocol: message types, the versioned envelope, encode/decode.
//
// Every zexec message is ONE ZeroMQ frame holding ONE msgpack array:
//     [version, type, field...]
// docs/PROTOCOL.md describes every socket, message and field; this header is the C++ view of it
// and is shared by the daemon, the worker runtime and the client library.
//
// decode() never throws and never crashes on hostile input: it returns the message or a reason.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "zexec/detail/limits.hpp"
#include "zexec/detail/message_list.hpp"

namespace zexec::proto {

inline constexpr std::uint32_t kVersion = 1;

// Message types, from the one list of messages (detail/message_list.hpp, which says what each is).
enum class Type : std::uint8_t {
#define ZEXEC_PROTO_ENUMERATOR(Struct, name, number) name = number,
  ZEXEC_PROTO_MESSAGES(ZEXEC_PROTO_ENUMERATOR)
#undef ZEXEC_PROTO_ENUMERATOR
};

// What happened to a task. `started` is an event, the others are final (exactly one per task).
enum class Outcome : std::uint8_t { started = 0, ok = 1, error = 2, cancelled = 3 };

// Result of cancelling one task.
enum class CancelOutcome : std::uint8_t {
  cancelled = 0,  // it had not started and never will run; the future is cancelled
  running = 1,    // a worker already started it: not cancelled
  finished = 2,   // it already has a final outcome (or the daemon no longer knows it)
};

// A task's options (its optional options map; 0 = absent = default).
struct TaskOptionFields {
  std::uint32_t timeout_ms = 0;        // hard limit on running time
  std::uint32_t retries = 0;           // run again after it raised, up to this many times
  std::uint32_t crash_retries = 0;     // run again after its worker died under it, up to this many times
  std::uint32_t retry_backoff_ms = 0;  // wait before a retry: this, doubled each further retry
};

struct TaskSpec {
  std::uint64_t id = 0;  // client: the client's task id; worker hop: the daemon's handle
  std::string name;      // registered task name
  std::string args;      // msgpack-encoded ARRAY of positional arguments (opaque bytes)
  // Options, as in TaskOptionFields:
  std::uint32_t timeout_ms = 0;
  std::uint32_t retries = 0;
  std::uint32_t crash_retries = 0;
  std::uint32_t retry_backoff_ms = 0;
  // Worker hop: which run of the task this is, 2 and up when the daemon runs it again after a
  // failure (retries, crash_retries); 0 = not said, the first. Sent only from 2 on.
  std::uint32_t attempt = 0;

  TaskOptionFields options() const { return {timeout_ms, retries, crash_retries, retry_backoff_ms}; }
};

struct Event {
  std::uint64_t task_id = 0;
  Outcome kind = Outcome::ok;
  std::string value;          // ok: msgpack-encoded return value (opaque bytes)
  std::string error_type;     // error: e.g. "ValueError", "UnknownTask", "WorkerCrashed"
  std::string error_message;  // error: human-readable text
};

struct Hello {
  std::string client_name;
  std::int64_t pid = 0;
  // Added to version 1 later (issue 13, sessions): the session to resume and its token, as an
  // earlier `welcome` gave them; 0 and empty = start a new one.
  std::uint64_t session = 0;
  std::string token{};  // opaque bytes
};
struct Welcome {
  std::uint64_t client_id = 0;
  std::string results_endpoint;  // where to connect the PULL socket for `update` messages
  std::uint32_t workers = 0;     // configured pool size
  std::uint32_t heartbeat_ms = 0;
  std::uint32_t max_pending = 0;  // most unfinished tasks the daemon accepts from this client
  // Added to version 1 later: 0 when the daemon is older and did not send them (unknown).
  std::uint32_t max_unacked_updates = 0;  // most updates it sends before it waits for an ack
  std::uint32_t client_timeout_ms = 0;    // silence after which it forgets this client
  // Sessions (added later): the session this connection belongs to and the token that resumes
  // it; 0 = the daemon keeps no sessions (no journal, or older). `resumed`: the hello asked for
  // this session and the daemon knew it (false with a new session: the old one is gone).
  std::uint64_t session = 0;
  std::string token{};  // opaque bytes
  bool resumed = false;
};
struct Submit {
  std::vector<TaskSpec> tasks;
};
struct Cancel {
  std::uint64_t request_id = 0;
  std::vector<std::uint64_t> task_ids;
  bool force = false;  // also stop tasks that are running (their worker is killed and replaced)
};
struct CancelReply {
  std::uint64_t request_id = 0;
  std::vector<std::pair<std::uint64_t, CancelOutcome>> outcomes;
};
struct Ack {
  std::uint64_t seq = 0;
};
struct Heartbeat {};
struct Bye {};
struct Error {
  std::string code;     // machine-readable, e.g. "bad_message", "unknown_client"
  std::string message;  // human-readable
};
struct Status {};
struct Drain {};
struct AdminCancel {
  std::uint64_t request_id = 0;
  std::uint64_t client_id = 0;  // whose tasks (see `status`)
  std::vector<std::uint64_t> task_ids;
  bool force = false;
};
struct StatusReply {
  std::string body;  // msgpack map (opaque to the protocol module); see PROTOCOL.md
};
struct Update {
  std::uint64_t seq = 0;  // per client, starts at 1, +1 per update message
  std::vector<Event> events;
  // Added later (issue 13): every task this session submitted with an id up to this one is
  // accepted (on disk, with a journal), so the client need not keep it to send again. 0 = not said.
  std::uint64_t accepted_through = 0;
};
struct WorkerHello {
  std::uint64_t worker_id = 0;  // from $ZEXEC_WORKER_ID
  std::int64_t pid = 0;
  std::uint32_t capacity = 0;      // most tasks it accepts at once (running + queued)
  std::vector<std::string> tasks;  // task names it can run (empty = unknown/any)
};
struct WorkerEvents {
  std::uint64_t worker_id = 0;
  std::uint64_t busy_us = 0;  // time spent running the tasks finished in this batch
  std::vector<Event> events;  // task_id = daemon handle
};
struct WorkerRevoked {
  std::uint64_t worker_id = 0;
  std::vector<std::uint64_t> task_ids;
};
struct Tasks {
  std::vector<TaskSpec> tasks;  // id = daemon handle
};
struct Revoke {
  std::vector<std::uint64_t> task_ids;
};
struct Shutdown {};

namespace detail {
// The list below leaves a leading comma; this drops the placeholder in front of it.
template <class Placeholder, class... Messages>
using VariantOf = std::variant<Messages...>;
}  // namespace detail

// One alternative per message, in the list's order.
#define ZEXEC_PROTO_ALTERNATIVE(Struct, name, number) , Struct
using Message = detail::VariantOf<void ZEXEC_PROTO_MESSAGES(ZEXEC_PROTO_ALTERNATIVE)>;
#undef ZEXEC_PROTO_ALTERNATIVE

// Where zexecd listens unless told otherwise, and where clients look first:
// ipc:///run/zexec/zexecd.sock as root, else ipc://$XDG_RUNTIME_DIR/zexec/zexecd.sock (/tmp without it).
std::string default_endpoint();

Type type_of(const Message& m);
const char* type_name(Type t);

// Appends the encoded message to `out` (which is cleared first).
void encode(const Message& m, std::string& out);
std::string encode(const Message& m);

// Encodes a `submit` (client) or `tasks` (daemon) message straight from the caller's own
// records, without building a TaskSpec per task: the hot path of both (bench/RESULTS.md). The
// bytes equal encode() of the same message.
//   TaskListWriter w(out, Type::submit, n);   // clears `out`; then exactly n calls of
//   w.add(id, name, args, options, attempt);
class TaskListWriter {
 public:
  TaskListWriter(std::string& out, Type type, std::uint32_t count);
  void add(std::uint64_t id, std::string_view name, std::string_view args,
           const TaskOptionFields& options = {}, std::uint32_t attempt = 0);

 private:
  std::string& out_;
};

// Pieces of a worker_events frame, for a worker that encodes each event as it happens and sends
// a batch without re-encoding it: the header (appended to `out`) followed by `count` events
// appended with append_event() is what encode() writes for the same WorkerEvents.
void append_worker_events_header(std::string& out, std::uint64_t worker_id, std::uint64_t busy_us,
                                 std::uint32_t count);
void append_event(std::string& out, const Event& e);

struct Decoded {
  std::optional<Message> message;
  std::string error;  // set when message is empty: why the frame was refused
  explicit operator bool() const { return message.has_value(); }
};
Decoded decode(std::string_view frame);

// Who sent a worker frame that decode() refused, if its start still says: a version-1 array whose
// type is a worker's (worker_hello, worker_events, worker_revoked) and whose first field, the
// worker id, is an unsigned integer. The daemon retires such a worker rather than leave the
// tasks it holds waiting on answers it cannot read.
std::optional<std::uint64_t> sender_worker_id(std::string_view frame);

namespace detail {
// decode() is decode_fast() (submit, tasks, update, worker_events in their plain encodings:
// the hot path) falling back to decode_generic() (everything, with the reason for a refusal).
// Both are here for the tests that hold them to the same answers.
bool decode_fast(std::string_view frame, Message& out);
Decoded decode_generic(std::string_view frame);
}  // namespace detail

}  // namespace zexec::proto
