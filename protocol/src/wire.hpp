// The msgpack primitives every message is made of: writing str/bin into a frame, and reading
// each kind of value with a refusal that names the field ("seq: expected a non-negative int,
// got str"). Shared by the records (records.cpp) and the messages (protocol.cpp).
#pragma once

#include <cstdint>
#include <msgpack.hpp>
#include <string>
#include <string_view>

#include "zexec/msgpack_kind.hpp"
#include "zexec/protocol.hpp"

namespace zexec::proto::wire {

// msgpack's packer writes into anything with write(const char*, size_t).
struct StringSink {
  std::string& out;
  void write(const char* p, std::size_t n) { out.append(p, n); }
};
using Packer = msgpack::packer<StringSink>;
using Obj = msgpack::object;

inline void pack_str(Packer& pk, std::string_view s) {
  pk.pack_str(static_cast<std::uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}
inline void pack_bin(Packer& pk, std::string_view s) {
  pk.pack_bin(static_cast<std::uint32_t>(s.size()));
  pk.pack_bin_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

// Every message starts [version, type, ...]: the array header counts those two.
inline void pack_header(Packer& pk, Type type, std::uint32_t nfields) {
  pk.pack_array(2 + nfields);
  pk.pack(kVersion);
  pk.pack(static_cast<std::uint8_t>(type));
}

// A decoding refusal: thrown deep in a frame, caught once in decode_generic() as its reason.
struct Refused {
  std::string why;
};
[[noreturn]] inline void refuse(std::string why) {
  throw Refused{std::move(why)};
}

inline std::uint64_t get_uint(const Obj& o, const char* what, std::uint64_t max = UINT64_MAX) {
  if (o.type != msgpack::type::POSITIVE_INTEGER)
    refuse(std::string(what) + ": expected a non-negative int, got " + kind_name(o.type));
  if (o.via.u64 > max) refuse(std::string(what) + ": " + std::to_string(o.via.u64) + " is out of range");
  return o.via.u64;
}
inline std::int64_t get_int(const Obj& o, const char* what) {
  if (o.type == msgpack::type::NEGATIVE_INTEGER) return o.via.i64;
  return static_cast<std::int64_t>(get_uint(o, what, INT64_MAX));
}
inline bool get_bool(const Obj& o, const char* what) {
  if (o.type != msgpack::type::BOOLEAN)
    refuse(std::string(what) + ": expected bool, got " + kind_name(o.type));
  return o.via.boolean;
}
inline std::string get_str(const Obj& o, const char* what) {
  if (o.type != msgpack::type::STR) refuse(std::string(what) + ": expected str, got " + kind_name(o.type));
  return std::string(o.via.str.ptr, o.via.str.size);
}
// Opaque byte fields accept bin (preferred) or str, so peers in languages without a clear
// bytes/text split can still talk to us.
inline std::string get_bytes(const Obj& o, const char* what) {
  if (o.type == msgpack::type::BIN) return std::string(o.via.bin.ptr, o.via.bin.size);
  if (o.type == msgpack::type::STR) return std::string(o.via.str.ptr, o.via.str.size);
  refuse(std::string(what) + ": expected bin, got " + kind_name(o.type));
}
inline const msgpack::object_array& get_array(const Obj& o, const char* what, std::uint32_t min_size = 0,
                                              std::uint32_t max_size = UINT32_MAX) {
  if (o.type != msgpack::type::ARRAY)
    refuse(std::string(what) + ": expected array, got " + kind_name(o.type));
  if (o.via.array.size < min_size || o.via.array.size > max_size)
    refuse(std::string(what) + ": array of " + std::to_string(o.via.array.size) + " elements, expected " +
           (min_size == max_size     ? std::to_string(min_size)
            : max_size == UINT32_MAX ? "at least " + std::to_string(min_size)
                                     : std::to_string(min_size) + ".." + std::to_string(max_size)));
  return o.via.array;
}

}  // namespace zexec::proto::wire
