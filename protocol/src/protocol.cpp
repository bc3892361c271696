// encode() and decode() of every message, driven by the message list (detail/message_list.hpp)
// and each message's field table (message_fields.hpp): nothing here is written per message.
#include "zexec/protocol.hpp"

#include <unistd.h>

#include <cstdlib>
#include <msgpack.hpp>
#include <type_traits>

#include "message_fields.hpp"
#include "records.hpp"
#include "wire.hpp"

namespace zexec::proto {
namespace {

using namespace wire;
using fields::kFieldCount;
using fields::kFields;
using fields::kRequiredCount;

// The Type of each alternative of Message, by variant index.
constexpr Type kTypes[] = {
#define ZEXEC_PROTO_TYPE(Struct, name, number) Type::name,
    ZEXEC_PROTO_MESSAGES(ZEXEC_PROTO_TYPE)
#undef ZEXEC_PROTO_TYPE
};
static_assert(std::size(kTypes) == std::variant_size_v<Message>);

template <class T>
bool is_zero(const T& v) {
  if constexpr (std::is_arithmetic_v<T>)
    return v == T{};
  else
    return v.empty();
}

// Trailing added fields that are 0 (or empty, false) are left out: a reader takes them as 0
// anyway, and a message keeps the bytes it had before they were added (docs/PROTOCOL.md §1).
template <class M>
std::uint32_t fields_to_write(const M& m) {
  std::uint32_t n = 0, i = 0;
  std::apply(
      [&](const auto&... f) {
        ((++i, (!f.info.added || !is_zero(m.*f.member)) ? void(n = i) : void()), ...);
      },
      kFields<M>);
  return n;
}

template <class M>
void pack_message(Packer& pk, Type type, const M& m) {
  const std::uint32_t n = fields_to_write(m);
  pack_header(pk, type, n);
  std::uint32_t i = 0;
  std::apply(
      [&](const auto&... f) { ((i++ < n ? fields::pack_value(pk, m.*f.member, f.info) : void()), ...); },
      kFields<M>);
}

// Reads the fields in order, so the first bad one is the one a refusal names. A frame from an
// older peer may stop before the fields added since: they stay 0. One from a newer peer may go
// on after the fields known here: those are skipped (docs/PROTOCOL.md §1 "Growing a message").
template <class M>
M read_message(Type type, const Obj* f, std::uint32_t n) {
  static_assert(fields::kAddedFieldsTrail<M>, "an added field must come after all the others");
  constexpr std::uint32_t lo = kRequiredCount<M>;
  if (n < lo)
    refuse(std::string(type_name(type)) + ": " + std::to_string(n) + " fields, expected at least " +
           std::to_string(lo));
  M m{};
  std::uint32_t i = 0;
  std::apply(
      [&](const auto&... field) {
        ((i < n ? fields::read_value(f[i], field.info, m.*field.member) : void(), ++i), ...);
      },
      kFields<M>);
  return m;
}

Message read_body(Type type, const Obj* f, std::uint32_t n) {
  switch (type) {
#define ZEXEC_PROTO_READ(Struct, name, number) \
  case Type::name:                             \
    return read_message<Struct>(type, f, n);
    ZEXEC_PROTO_MESSAGES(ZEXEC_PROTO_READ)
#undef ZEXEC_PROTO_READ
  }
  refuse("unknown message type " + std::to_string(static_cast<int>(type)));
}

bool known_type(std::uint64_t t) {
  switch (t) {
#define ZEXEC_PROTO_KNOWN(Struct, name, number) case number:
    ZEXEC_PROTO_MESSAGES(ZEXEC_PROTO_KNOWN)
#undef ZEXEC_PROTO_KNOWN
    return true;
  }
  return false;
}

}  // namespace

std::string default_endpoint() {
  if (geteuid() == 0) return "ipc:///run/zexec/zexecd.sock";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  std::string dir = xdg && *xdg ? xdg : "/tmp";
  return "ipc://" + dir + "/zexec/zexecd.sock";
}

Type type_of(const Message& m) {
  return kTypes[m.index()];
}

const char* type_name(Type t) {
  switch (t) {
#define ZEXEC_PROTO_NAME(Struct, name, number) \
  case Type::name:                             \
    return #name;
    ZEXEC_PROTO_MESSAGES(ZEXEC_PROTO_NAME)
#undef ZEXEC_PROTO_NAME
  }
  return "unknown";
}

void encode(const Message& m, std::string& out) {
  out.clear();
  StringSink sink{out};
  Packer pk(sink);
  std::visit([&](const auto& msg) { pack_message(pk, type_of(m), msg); }, m);
}

std::string encode(const Message& m) {
  std::string out;
  encode(m, out);
  return out;
}

// The writers below produce the frames of encode() piece by piece; protocol_test holds them to
// encode()'s bytes. Submit and Tasks have their one field, the list of tasks.
static_assert(kFieldCount<Submit> == 1 && kFieldCount<Tasks> == 1);

TaskListWriter::TaskListWriter(std::string& out, Type type, std::uint32_t count) : out_(out) {
  out_.clear();
  StringSink sink{out_};
  Packer pk(sink);
  pack_header(pk, type, 1);
  pk.pack_array(count);
}

void TaskListWriter::add(std::uint64_t id, std::string_view name, std::string_view args,
                         const TaskOptionFields& options, std::uint32_t attempt) {
  StringSink sink{out_};
  Packer pk(sink);
  records::pack_task(pk, id, name, args, options, attempt);
}

void append_worker_events_header(std::string& out, std::uint64_t worker_id, std::uint64_t busy_us,
                                 std::uint32_t count) {
  static_assert(kFieldCount<WorkerEvents> == 3);  // worker_id, busy_us, events
  StringSink sink{out};
  Packer pk(sink);
  pack_header(pk, Type::worker_events, 3);
  pk.pack(worker_id);
  pk.pack(busy_us);
  pk.pack_array(count);
}

void append_event(std::string& out, const Event& e) {
  StringSink sink{out};
  Packer pk(sink);
  records::pack_event(pk, e);
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
    msgpack::unpack_limit limit(limits::kMaxArray, limits::kMaxMap, limits::kMaxStr,
                                static_cast<std::size_t>(limits::kMaxBin), /*ext*/ 0, limits::kMaxDepth);
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
    d.message = read_body(static_cast<Type>(type), a.ptr + 2, a.size - 2);
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
