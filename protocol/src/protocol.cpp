#include "zexec/protocol.hpp"

#include <unistd.h>

#include <cstdlib>
#include <msgpack.hpp>

#include "zexec/msgpack_kind.hpp"

namespace zexec::proto {
namespace {

// msgpack's packer writes into anything with write(const char*, size_t).
struct StringSink {
  std::string& out;
  void write(const char* p, std::size_t n) { out.append(p, n); }
};
using Packer = msgpack::packer<StringSink>;

void pack_str(Packer& pk, std::string_view s) {
  pk.pack_str(static_cast<std::uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}
void pack_bin(Packer& pk, std::string_view s) {
  pk.pack_bin(static_cast<std::uint32_t>(s.size()));
  pk.pack_bin_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

// The task options map: one table drives encoding and decoding.
struct TaskOption {
  const char* key;
  std::uint32_t TaskOptionFields::*field;
  std::uint32_t TaskSpec::*spec_field;
};
constexpr TaskOption kTaskOptions[] = {
    {"timeout_ms", &TaskOptionFields::timeout_ms, &TaskSpec::timeout_ms},
    {"retries", &TaskOptionFields::retries, &TaskSpec::retries},
    {"crash_retries", &TaskOptionFields::crash_retries, &TaskSpec::crash_retries},
    {"retry_backoff_ms", &TaskOptionFields::retry_backoff_ms, &TaskSpec::retry_backoff_ms},
};

void pack_task(Packer& pk, std::uint64_t id, std::string_view name, std::string_view args,
               const TaskOptionFields& t) {
  std::uint32_t options = 0;
  for (const auto& o : kTaskOptions) options += t.*o.field != 0;
  pk.pack_array(options ? 4 : 3);
  pk.pack(id);
  pack_str(pk, name);
  pack_bin(pk, args);
  if (options) {
    pk.pack_map(options);
    for (const auto& o : kTaskOptions)
      if (t.*o.field) {
        pack_str(pk, o.key);
        pk.pack(t.*o.field);
      }
  }
}

void pack_spec(Packer& pk, const TaskSpec& t) {
  pack_task(pk, t.id, t.name, t.args, t.options());
}

void pack_event(Packer& pk, const Event& e) {
  switch (e.kind) {
    case Outcome::ok:
      pk.pack_array(3);
      break;
    case Outcome::error:
      pk.pack_array(4);
      break;
    default:
      pk.pack_array(2);
  }
  pk.pack(e.task_id);
  pk.pack(static_cast<std::uint8_t>(e.kind));
  if (e.kind == Outcome::ok) pack_bin(pk, e.value);
  if (e.kind == Outcome::error) {
    pack_str(pk, e.error_type);
    pack_str(pk, e.error_message);
  }
}

void pack_ids(Packer& pk, const std::vector<std::uint64_t>& ids) {
  pk.pack_array(static_cast<std::uint32_t>(ids.size()));
  for (auto id : ids) pk.pack(id);
}

template <class T, class F>
void pack_list(Packer& pk, const std::vector<T>& v, F each) {
  pk.pack_array(static_cast<std::uint32_t>(v.size()));
  for (const auto& x : v) each(pk, x);
}

// Packs the fields after [version, type]; returns the number of fields.
struct BodyPacker {
  Packer& pk;
  void header(Type t, std::uint32_t nfields) {
    pk.pack_array(2 + nfields);
    pk.pack(kVersion);
    pk.pack(static_cast<std::uint8_t>(t));
  }
  void operator()(const Hello& m) {
    header(Type::hello, 2);
    pack_str(pk, m.client_name);
    pk.pack(m.pid);
  }
  void operator()(const Welcome& m) {
    header(Type::welcome, 5);
    pk.pack(m.client_id);
    pack_str(pk, m.results_endpoint);
    pk.pack(m.workers);
    pk.pack(m.heartbeat_ms);
    pk.pack(m.max_pending);
  }
  void operator()(const Submit& m) {
    header(Type::submit, 1);
    pack_list(pk, m.tasks, pack_spec);
  }
  void operator()(const Cancel& m) {
    header(Type::cancel, 3);
    pk.pack(m.request_id);
    pack_ids(pk, m.task_ids);
    pk.pack(m.force);
  }
  void operator()(const CancelReply& m) {
    header(Type::cancel_reply, 2);
    pk.pack(m.request_id);
    pk.pack_array(static_cast<std::uint32_t>(m.outcomes.size()));
    for (const auto& [id, outcome] : m.outcomes) {
      pk.pack_array(2);
      pk.pack(id);
      pk.pack(static_cast<std::uint8_t>(outcome));
    }
  }
  void operator()(const Ack& m) {
    header(Type::ack, 1);
    pk.pack(m.seq);
  }
  void operator()(const Heartbeat&) { header(Type::heartbeat, 0); }
  void operator()(const Bye&) { header(Type::bye, 0); }
  void operator()(const Error& m) {
    header(Type::error, 2);
    pack_str(pk, m.code);
    pack_str(pk, m.message);
  }
  void operator()(const Status&) { header(Type::status, 0); }
  void operator()(const Drain&) { header(Type::drain, 0); }
  void operator()(const AdminCancel& m) {
    header(Type::admin_cancel, 4);
    pk.pack(m.request_id);
    pk.pack(m.client_id);
    pack_ids(pk, m.task_ids);
    pk.pack(m.force);
  }
  void operator()(const StatusReply& m) {
    header(Type::status_reply, 1);
    pack_bin(pk, m.body);
  }
  void operator()(const Update& m) {
    header(Type::update, 2);
    pk.pack(m.seq);
    pack_list(pk, m.events, pack_event);
  }
  void operator()(const WorkerHello& m) {
    header(Type::worker_hello, 4);
    pk.pack(m.worker_id);
    pk.pack(m.pid);
    pk.pack(m.capacity);
    pack_list(pk, m.tasks, [](Packer& p, const std::string& s) { pack_str(p, s); });
  }
  void operator()(const WorkerEvents& m) {
    header(Type::worker_events, 3);
    pk.pack(m.worker_id);
    pk.pack(m.busy_us);
    pack_list(pk, m.events, pack_event);
  }
  void operator()(const WorkerRevoked& m) {
    header(Type::worker_revoked, 2);
    pk.pack(m.worker_id);
    pack_ids(pk, m.task_ids);
  }
  void operator()(const Tasks& m) {
    header(Type::tasks, 1);
    pack_list(pk, m.tasks, pack_spec);
  }
  void operator()(const Revoke& m) {
    header(Type::revoke, 1);
    pack_ids(pk, m.task_ids);
  }
  void operator()(const Shutdown&) { header(Type::shutdown, 0); }
};

// ---- decoding -------------------------------------------------------------------------------

struct Refused {
  std::string why;
};
[[noreturn]] void refuse(std::string why) {
  throw Refused{std::move(why)};
}

using Obj = msgpack::object;

std::uint64_t get_uint(const Obj& o, const char* what, std::uint64_t max = UINT64_MAX) {
  if (o.type != msgpack::type::POSITIVE_INTEGER)
    refuse(std::string(what) + ": expected a non-negative int, got " + kind_name(o.type));
  if (o.via.u64 > max) refuse(std::string(what) + ": " + std::to_string(o.via.u64) + " is out of range");
  return o.via.u64;
}
std::int64_t get_int(const Obj& o, const char* what) {
  if (o.type == msgpack::type::NEGATIVE_INTEGER) return o.via.i64;
  return static_cast<std::int64_t>(get_uint(o, what, INT64_MAX));
}
bool get_bool(const Obj& o, const char* what) {
  if (o.type != msgpack::type::BOOLEAN)
    refuse(std::string(what) + ": expected bool, got " + kind_name(o.type));
  return o.via.boolean;
}
std::string get_str(const Obj& o, const char* what) {
  if (o.type != msgpack::type::STR) refuse(std::string(what) + ": expected str, got " + kind_name(o.type));
  return std::string(o.via.str.ptr, o.via.str.size);
}
// Opaque byte fields accept bin (preferred) or str, so peers in languages without a clear
// bytes/text split can still talk to us.
std::string get_bytes(const Obj& o, const char* what) {
  if (o.type == msgpack::type::BIN) return std::string(o.via.bin.ptr, o.via.bin.size);
  if (o.type == msgpack::type::STR) return std::string(o.via.str.ptr, o.via.str.size);
  refuse(std::string(what) + ": expected bin, got " + kind_name(o.type));
}
const msgpack::object_array& get_array(const Obj& o, const char* what, std::uint32_t min_size = 0,
                                       std::uint32_t max_size = UINT32_MAX) {
  if (o.type != msgpack::type::ARRAY)
    refuse(std::string(what) + ": expected array, got " + kind_name(o.type));
  if (o.via.array.size < min_size || o.via.array.size > max_size)
    refuse(std::string(what) + ": array of " + std::to_string(o.via.array.size) + " elements, expected " +
           (min_size == max_size ? std::to_string(min_size)
                                 : std::to_string(min_size) + ".." + std::to_string(max_size)));
  return o.via.array;
}

std::vector<std::uint64_t> get_ids(const Obj& o, const char* what) {
  const auto& a = get_array(o, what);
  std::vector<std::uint64_t> ids;
  ids.reserve(a.size);
  for (std::uint32_t i = 0; i < a.size; ++i) ids.push_back(get_uint(a.ptr[i], what));
  return ids;
}

TaskSpec get_task(const Obj& o) {
  const auto& a = get_array(o, "task", 3, 4);
  TaskSpec t;
  t.id = get_uint(a.ptr[0], "task id");
  t.name = get_str(a.ptr[1], "task name");
  if (t.name.empty()) refuse("task name: empty");
  t.args = get_bytes(a.ptr[2], "task args");
  if (a.size == 4) {
    const Obj& opts = a.ptr[3];
    if (opts.type != msgpack::type::MAP)
      refuse(std::string("task options: expected map, got ") + kind_name(opts.type));
    for (std::uint32_t i = 0; i < opts.via.map.size; ++i) {
      const auto& kv = opts.via.map.ptr[i];
      std::string key = get_str(kv.key, "task option name");
      const TaskOption* option = nullptr;
      for (const auto& o : kTaskOptions)
        if (key == o.key) option = &o;
      if (!option) refuse("task options: unknown option '" + key + "'");
      t.*option->spec_field = static_cast<std::uint32_t>(get_uint(kv.val, option->key, UINT32_MAX));
    }
  }
  return t;
}
std::vector<TaskSpec> get_tasks(const Obj& o) {
  const auto& a = get_array(o, "tasks");
  std::vector<TaskSpec> v;
  v.reserve(a.size);
  for (std::uint32_t i = 0; i < a.size; ++i) v.push_back(get_task(a.ptr[i]));
  return v;
}

Event get_event(const Obj& o) {
  const auto& a = get_array(o, "event", 2, 4);
  Event e;
  e.task_id = get_uint(a.ptr[0], "event task id");
  auto kind = get_uint(a.ptr[1], "event kind", 3);
  e.kind = static_cast<Outcome>(kind);
  std::uint32_t expected = e.kind == Outcome::ok ? 3 : e.kind == Outcome::error ? 4 : 2;
  if (a.size != expected)
    refuse("event of kind " + std::to_string(kind) + ": " + std::to_string(a.size) + " elements, expected " +
           std::to_string(expected));
  if (e.kind == Outcome::ok) e.value = get_bytes(a.ptr[2], "event value");
  if (e.kind == Outcome::error) {
    e.error_type = get_str(a.ptr[2], "error type");
    e.error_message = get_str(a.ptr[3], "error message");
  }
  return e;
}
std::vector<Event> get_events(const Obj& o) {
  const auto& a = get_array(o, "events");
  std::vector<Event> v;
  v.reserve(a.size);
  for (std::uint32_t i = 0; i < a.size; ++i) v.push_back(get_event(a.ptr[i]));
  return v;
}

Message decode_body(Type type, const Obj* f, std::uint32_t n) {
  auto need = [&](std::uint32_t count) {
    if (n != count)
      refuse(std::string(type_name(type)) + ": " + std::to_string(n) + " fields, expected " +
             std::to_string(count));
  };
  switch (type) {
    case Type::hello:
      need(2);
      return Hello{get_str(f[0], "client name"), get_int(f[1], "pid")};
    case Type::welcome:
      need(5);
      return Welcome{get_uint(f[0], "client id"), get_str(f[1], "results endpoint"),
                     static_cast<std::uint32_t>(get_uint(f[2], "workers", UINT32_MAX)),
                     static_cast<std::uint32_t>(get_uint(f[3], "heartbeat_ms", UINT32_MAX)),
                     static_cast<std::uint32_t>(get_uint(f[4], "max_pending", UINT32_MAX))};
    case Type::submit:
      need(1);
      return Submit{get_tasks(f[0])};
    case Type::cancel:
      need(3);
      return Cancel{get_uint(f[0], "request id"), get_ids(f[1], "task ids"), get_bool(f[2], "force")};
    case Type::cancel_reply: {
      need(2);
      CancelReply r{get_uint(f[0], "request id"), {}};
      const auto& a = get_array(f[1], "outcomes");
      for (std::uint32_t i = 0; i < a.size; ++i) {
        const auto& p = get_array(a.ptr[i], "outcome", 2, 2);
        r.outcomes.emplace_back(get_uint(p.ptr[0], "task id"),
                                static_cast<CancelOutcome>(get_uint(p.ptr[1], "cancel outcome", 2)));
      }
      return r;
    }
    case Type::ack:
      need(1);
      return Ack{get_uint(f[0], "seq")};
    case Type::heartbeat:
      need(0);
      return Heartbeat{};
    case Type::bye:
      need(0);
      return Bye{};
    case Type::error:
      need(2);
      return Error{get_str(f[0], "error code"), get_str(f[1], "error message")};
    case Type::status:
      need(0);
      return Status{};
    case Type::drain:
      need(0);
      return Drain{};
    case Type::admin_cancel:
      need(4);
      return AdminCancel{get_uint(f[0], "request id"), get_uint(f[1], "client id"), get_ids(f[2], "task ids"),
                         get_bool(f[3], "force")};
    case Type::status_reply:
      need(1);
      return StatusReply{get_bytes(f[0], "status body")};
    case Type::update:
      need(2);
      return Update{get_uint(f[0], "seq"), get_events(f[1])};
    case Type::worker_hello: {
      need(4);
      WorkerHello h{get_uint(f[0], "worker id"),
                    get_int(f[1], "pid"),
                    static_cast<std::uint32_t>(get_uint(f[2], "capacity", UINT32_MAX)),
                    {}};
      const auto& a = get_array(f[3], "task names");
      for (std::uint32_t i = 0; i < a.size; ++i) h.tasks.push_back(get_str(a.ptr[i], "task name"));
      return h;
    }
    case Type::worker_events:
      need(3);
      return WorkerEvents{get_uint(f[0], "worker id"), get_uint(f[1], "busy_us"), get_events(f[2])};
    case Type::worker_revoked:
      need(2);
      return WorkerRevoked{get_uint(f[0], "worker id"), get_ids(f[1], "task ids")};
    case Type::tasks:
      need(1);
      return Tasks{get_tasks(f[0])};
    case Type::revoke:
      need(1);
      return Revoke{get_ids(f[0], "task ids")};
    case Type::shutdown:
      need(0);
      return Shutdown{};
  }
  refuse("unknown message type " + std::to_string(static_cast<int>(type)));
}

bool known_type(std::uint64_t t) {
  return (t >= 1 && t <= 14) || (t >= 20 && t <= 22) || (t >= 30 && t <= 32);
}

}  // namespace

std::string default_endpoint() {
  if (geteuid() == 0) return "ipc:///run/zexec/zexecd.sock";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  std::string dir = xdg && *xdg ? xdg : "/tmp";
  return "ipc://" + dir + "/zexec/zexecd.sock";
}

Type type_of(const Message& m) {
  static constexpr Type kTypes[] = {
      Type::hello,         Type::welcome,        Type::submit,       Type::cancel, Type::cancel_reply,
      Type::ack,           Type::heartbeat,      Type::bye,          Type::error,  Type::status,
      Type::status_reply,  Type::drain,          Type::admin_cancel, Type::update, Type::worker_hello,
      Type::worker_events, Type::worker_revoked, Type::tasks,        Type::revoke, Type::shutdown};
  return kTypes[m.index()];
}

const char* type_name(Type t) {
  switch (t) {
    case Type::hello:
      return "hello";
    case Type::welcome:
      return "welcome";
    case Type::submit:
      return "submit";
    case Type::cancel:
      return "cancel";
    case Type::cancel_reply:
      return "cancel_reply";
    case Type::ack:
      return "ack";
    case Type::heartbeat:
      return "heartbeat";
    case Type::bye:
      return "bye";
    case Type::error:
      return "error";
    case Type::status:
      return "status";
    case Type::status_reply:
      return "status_reply";
    case Type::drain:
      return "drain";
    case Type::admin_cancel:
      return "admin_cancel";
    case Type::update:
      return "update";
    case Type::worker_hello:
      return "worker_hello";
    case Type::worker_events:
      return "worker_events";
    case Type::worker_revoked:
      return "worker_revoked";
    case Type::tasks:
      return "tasks";
    case Type::revoke:
      return "revoke";
    case Type::shutdown:
      return "shutdown";
  }
  return "unknown";
}

void encode(const Message& m, std::string& out) {
  out.clear();
  StringSink sink{out};
  Packer pk(sink);
  std::visit(BodyPacker{pk}, m);
}

TaskListWriter::TaskListWriter(std::string& out, Type type, std::uint32_t count) : out_(out) {
  out_.clear();
  StringSink sink{out_};
  Packer pk(sink);
  BodyPacker{pk}.header(type, 1);
  pk.pack_array(count);
}

void TaskListWriter::add(std::uint64_t id, std::string_view name, std::string_view args,
                         const TaskOptionFields& options) {
  StringSink sink{out_};
  Packer pk(sink);
  pack_task(pk, id, name, args, options);
}

void append_worker_events_header(std::string& out, std::uint64_t worker_id, std::uint64_t busy_us,
                                 std::uint32_t count) {
  StringSink sink{out};
  Packer pk(sink);
  BodyPacker{pk}.header(Type::worker_events, 3);
  pk.pack(worker_id);
  pk.pack(busy_us);
  pk.pack_array(count);
}

void append_event(std::string& out, const Event& e) {
  StringSink sink{out};
  Packer pk(sink);
  pack_event(pk, e);
}

std::string encode(const Message& m) {
  std::string out;
  encode(m, out);
  return out;
}

Decoded decode(std::string_view frame) {
  Decoded d;
  d.message.emplace();
  if (detail::decode_fast(frame, *d.message)) return d;
  return detail::decode_generic(frame);
}

Decoded detail::decode_generic(std::string_view frame) {
  Decoded d;
  try {
    // Limits keep a small hostile frame from asking for huge allocations or deep recursion.
    msgpack::unpack_limit limit(/*array*/ 1u << 20, /*map*/ 64, /*str*/ 1u << 20,
                                /*bin*/ static_cast<std::size_t>(kMaxMessageBytes), /*ext*/ 0, /*depth*/ 16);
    std::size_t offset = 0;
    msgpack::object_handle oh = msgpack::unpack(frame.data(), frame.size(), offset, nullptr, nullptr, limit);
    if (offset != frame.size())
      refuse(std::to_string(frame.size() - offset) + " trailing bytes after the message");
    const Obj& root = oh.get();
    if (root.type != msgpack::type::ARRAY)
      refuse(std::string("envelope: expected array, got ") + kind_name(root.type));
    const auto& a = root.via.array;
    if (a.size < 2)
      refuse("envelope: array of " + std::to_string(a.size) + " elements, need [version, type, ...]");
    auto version = get_uint(a.ptr[0], "version");
    if (version != kVersion)
      refuse("unsupported protocol version " + std::to_string(version) + " (this peer speaks " +
             std::to_string(kVersion) + ")");
    auto type = get_uint(a.ptr[1], "message type");
    if (!known_type(type)) refuse("unknown message type " + std::to_string(type));
    d.message = decode_body(static_cast<Type>(type), a.ptr + 2, a.size - 2);
  } catch (const Refused& r) {
    d.error = r.why;
  } catch (const msgpack::insufficient_bytes&) {
    d.error = frame.empty() ? "empty frame" : "truncated msgpack";
  } catch (const std::exception& e) {
    d.error = std::string("malformed msgpack: ") + e.what();
  }
  if (!d.error.empty()) d.message.reset();
  return d;
}

}  // namespace zexec::proto
