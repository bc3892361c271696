// A message field: its name in refusals, the struct member it lives in, and how it travels.
// How a value is written and read follows from the member's C++ type (the overloads below);
// only a std::string needs telling whether it is text (str) or opaque bytes (bin).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "records.hpp"
#include "wire.hpp"

namespace zexec::proto::fields {

struct FieldInfo {
  const char* what;            // in refusals: "client id: expected a non-negative int, got str"
  const char* item = nullptr;  // a list's elements, in refusals (nullptr: as `what`)
  bool bytes = false;          // a std::string sent as bin (opaque bytes) rather than str (text)
  bool added = false;          // added to the message later: a frame from an older peer lacks it
};

template <class M, class T>
struct Field {
  FieldInfo info;
  T M::*member;
};

template <class M, class T>
constexpr Field<M, T> field(const char* what, T M::*member) {
  return {{what}, member};
}
template <class M>
constexpr Field<M, std::string> bytes_field(const char* what, std::string M::*member) {
  return {{what, nullptr, true}, member};
}
template <class M, class T>
constexpr Field<M, T> list_field(const char* what, const char* item, T M::*member) {
  return {{what, item}, member};
}
// A field added after its message was first defined. Only trailing fields may be added (a
// reader knows a field by its position), and readers take the older, shorter frame with the
// added fields 0: docs/PROTOCOL.md §1 "Versions".
template <class M, class T>
constexpr Field<M, T> added_field(const char* what, T M::*member) {
  return {{what, nullptr, false, true}, member};
}
template <class M>
constexpr Field<M, std::string> added_bytes_field(const char* what, std::string M::*member) {
  return {{what, nullptr, true, true}, member};
}

// ---- writing, by member type ----

using wire::Packer;

inline void pack_value(Packer& pk, std::uint64_t v, const FieldInfo&) {
  pk.pack(v);
}
inline void pack_value(Packer& pk, std::int64_t v, const FieldInfo&) {
  pk.pack(v);
}
inline void pack_value(Packer& pk, std::uint32_t v, const FieldInfo&) {
  pk.pack(v);
}
inline void pack_value(Packer& pk, bool v, const FieldInfo&) {
  pk.pack(v);
}
inline void pack_value(Packer& pk, const std::string& v, const FieldInfo& f) {
  f.bytes ? wire::pack_bin(pk, v) : wire::pack_str(pk, v);
}
inline void pack_value(Packer& pk, const TaskSpec& t, const FieldInfo&) {
  records::pack_task(pk, t.id, t.name, t.args, t.options(), t.attempt);
}
inline void pack_value(Packer& pk, const Event& e, const FieldInfo&) {
  records::pack_event(pk, e);
}
inline void pack_value(Packer& pk, const std::pair<std::uint64_t, CancelOutcome>& p, const FieldInfo&) {
  pk.pack_array(2);
  pk.pack(p.first);
  pk.pack(static_cast<std::uint8_t>(p.second));
}
// (Lists last: a call inside a template only sees the overloads declared before it.)
template <class T>
void pack_value(Packer& pk, const std::vector<T>& v, const FieldInfo& f) {
  pk.pack_array(static_cast<std::uint32_t>(v.size()));
  for (const auto& x : v) pack_value(pk, x, f);
}

// ---- reading, by member type ----

using wire::Obj;

inline void read_value(const Obj& o, const FieldInfo& f, std::uint64_t& v) {
  v = wire::get_uint(o, f.what);
}
inline void read_value(const Obj& o, const FieldInfo& f, std::int64_t& v) {
  v = wire::get_int(o, f.what);
}
inline void read_value(const Obj& o, const FieldInfo& f, std::uint32_t& v) {
  v = static_cast<std::uint32_t>(wire::get_uint(o, f.what, UINT32_MAX));
}
inline void read_value(const Obj& o, const FieldInfo& f, bool& v) {
  v = wire::get_bool(o, f.what);
}
inline void read_value(const Obj& o, const FieldInfo& f, std::string& v) {
  v = f.bytes ? wire::get_bytes(o, f.what) : wire::get_str(o, f.what);
}
inline void read_value(const Obj& o, const FieldInfo&, TaskSpec& t) {
  t = records::get_task(o);
}
inline void read_value(const Obj& o, const FieldInfo&, Event& e) {
  e = records::get_event(o);
}
inline void read_value(const Obj& o, const FieldInfo&, std::pair<std::uint64_t, CancelOutcome>& p) {
  const auto& a = wire::get_array(o, "outcome", 2, 2);
  p.first = wire::get_uint(a.ptr[0], "task id");
  p.second = static_cast<CancelOutcome>(wire::get_uint(a.ptr[1], "cancel outcome", 2));
}
// (Lists last, as for writing.)
template <class T>
void read_value(const Obj& o, const FieldInfo& f, std::vector<T>& v) {
  const auto& a = wire::get_array(o, f.what);
  const FieldInfo each{f.item ? f.item : f.what, nullptr, f.bytes};
  v.resize(a.size);
  for (std::uint32_t i = 0; i < a.size; ++i) read_value(a.ptr[i], each, v[i]);
}

}  // namespace zexec::proto::fields
