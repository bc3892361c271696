// msgpack glue between C++ values and the opaque `args` / `value` bytes of the wire protocol.
// Task arguments travel as ONE msgpack array of positional arguments; a result is the msgpack
// encoding of one value (docs/PROTOCOL.md §1). Any type msgpack-cxx can pack/convert works,
// including user types with MSGPACK_DEFINE.
#pragma once

#include <msgpack.hpp>
#include <string>
#include <typeinfo>

#include "zexec/errors.hpp"
#include "zexec/export.hpp"

namespace zexec::detail {

// msgpack's packer writes into anything with write(const char*, size_t); this appends to a
// std::string so the bytes need no further copy on their way into a TaskSpec.
struct StringSink {
  std::string& out;
  void write(const char* p, std::size_t n) { out.append(p, n); }
};

template <class... Args>
std::string pack_args(const Args&... args) {
  std::string out;
  StringSink sink{out};
  msgpack::packer<StringSink> pk(sink);
  pk.pack_array(static_cast<std::uint32_t>(sizeof...(Args)));
  (pk.pack(args), ...);
  return out;
}

// Throws ResultTypeError: "TASK: result VALUE (msgpack TYPE) cannot be converted to T".
[[noreturn]] ZEXEC_API void throw_result_type_error(const std::string& task, const msgpack::object& value,
                                                    const std::type_info& wanted);
[[noreturn]] ZEXEC_API void throw_bad_result_bytes(const std::string& task, const char* why);

template <class T>
T unpack_as(const std::string& bytes, const std::string& task) {
  msgpack::object_handle oh;
  try {
    oh = msgpack::unpack(bytes.data(), bytes.size());
  } catch (const std::exception& e) {
    throw_bad_result_bytes(task, e.what());
  }
  try {
    return oh.get().as<T>();
  } catch (const std::exception&) {  // msgpack::type_error and container overflows
    throw_result_type_error(task, oh.get(), typeid(T));
  }
}

}  // namespace zexec::detail
