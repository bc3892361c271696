#include "records.hpp"

namespace zexec::proto::records {
namespace {

using namespace wire;

// The task options map: one table drives encoding and decoding. Keys are written in this
// order and only when nonzero (the vectors hold every encoder to it).
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

// An event's length by kind: [id, kind], plus the value (ok) or type and message (error).
std::uint32_t event_size(Outcome kind) {
  return kind == Outcome::ok ? 3 : kind == Outcome::error ? 4 : 2;
}

}  // namespace

// [id, name, args], then the options map when an option is set or an attempt follows, then the
// attempt from 2 on: a first run, the common case, keeps the short form (and the fast decoder).
void pack_task(Packer& pk, std::uint64_t id, std::string_view name, std::string_view args,
               const TaskOptionFields& t, std::uint32_t attempt) {
  std::uint32_t options = 0;
  for (const auto& o : kTaskOptions) options += t.*o.field != 0;
  bool with_attempt = attempt > 1;
  pk.pack_array(with_attempt ? 5 : options ? 4 : 3);
  pk.pack(id);
  pack_str(pk, name);
  pack_bin(pk, args);
  if (options || with_attempt) {
    pk.pack_map(options);
    for (const auto& o : kTaskOptions)
      if (t.*o.field) {
        pack_str(pk, o.key);
        pk.pack(t.*o.field);
      }
  }
  if (with_attempt) pk.pack(attempt);
}

void pack_event(Packer& pk, const Event& e) {
  pk.pack_array(event_size(e.kind));
  pk.pack(e.task_id);
  pk.pack(static_cast<std::uint8_t>(e.kind));
  if (e.kind == Outcome::ok) pack_bin(pk, e.value);
  if (e.kind == Outcome::error) {
    pack_str(pk, e.error_type);
    pack_str(pk, e.error_message);
  }
}

TaskSpec get_task(const Obj& o) {
  // [id, name, args, options?, attempt?, ...]: elements after those are a newer peer's, skipped.
  const auto& a = get_array(o, "task", 3);
  TaskSpec t;
  t.id = get_uint(a.ptr[0], "task id");
  // A name is any non-empty str (at most limits::kMaxStr bytes); its bytes are not checked
  // further, here or in the daemon: it only has to equal a name a worker registered.
  t.name = get_str(a.ptr[1], "task name");
  if (t.name.empty()) refuse("task name: empty");
  t.args = get_bytes(a.ptr[2], "task args");
  if (a.size >= 4) {
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
  if (a.size >= 5) t.attempt = static_cast<std::uint32_t>(get_uint(a.ptr[4], "task attempt", UINT32_MAX));
  return t;
}

Event get_event(const Obj& o) {
  const auto& a = get_array(o, "event", 2);
  Event e;
  e.task_id = get_uint(a.ptr[0], "event task id");
  auto kind = get_uint(a.ptr[1], "event kind", 3);
  e.kind = static_cast<Outcome>(kind);
  std::uint32_t expected = event_size(e.kind);
  if (a.size < expected)  // more: a newer peer's trailing elements, skipped
    refuse("event of kind " + std::to_string(kind) + ": " + std::to_string(a.size) + " elements, expected " +
           std::to_string(expected));
  if (e.kind == Outcome::ok) e.value = get_bytes(a.ptr[2], "event value");
  if (e.kind == Outcome::error) {
    e.error_type = get_str(a.ptr[2], "error type");
    e.error_message = get_str(a.ptr[3], "error message");
  }
  return e;
}

}  // namespace zexec::proto::records
