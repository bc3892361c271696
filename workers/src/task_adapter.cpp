// The type-independent half of Worker::add(): unpacking arguments and wording BadArguments.
#include <cxxabi.h>

#include <cstdlib>
#include <memory>

#include "zexec/msgpack_kind.hpp"
#include "zexec/worker.hpp"

namespace zexec::detail {
namespace {

// Deep nesting would make msgpack recurse when converting or packing; real arguments are flat.
constexpr std::size_t kMaxArgsDepth = 256;

bool is_int(const msgpack::object& o) {
  return o.type == msgpack::type::POSITIVE_INTEGER || o.type == msgpack::type::NEGATIVE_INTEGER;
}

std::string int_value(const msgpack::object& o) {
  return o.type == msgpack::type::POSITIVE_INTEGER ? std::to_string(o.via.u64) : std::to_string(o.via.i64);
}

}  // namespace

std::string int_name(bool is_signed, std::size_t bytes) {
  return (is_signed ? "int" : "uint") + std::to_string(bytes * 8);
}

std::string demangled_name(const std::type_info& type) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> name(
      abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), &std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(type.name());
}

msgpack::object_handle unpack_args(std::string_view task, std::string_view bytes) {
  msgpack::object_handle handle;
  try {
    std::size_t offset = 0;
    msgpack::unpack_limit limit(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, kMaxArgsDepth);
    handle = msgpack::unpack(bytes.data(), bytes.size(), offset, nullptr, nullptr, limit);
    if (offset != bytes.size())
      throw BadArguments(std::string(task) + ": " + std::to_string(bytes.size() - offset) +
                         " trailing bytes after the argument array");
  } catch (const msgpack::depth_size_overflow&) {
    throw BadArguments(std::string(task) + ": arguments nested deeper than " + std::to_string(kMaxArgsDepth) +
                       " levels");
  } catch (const msgpack::unpack_error& e) {
    throw BadArguments(std::string(task) + ": arguments are not valid msgpack (" + e.what() + ")");
  }
  if (handle.get().type != msgpack::type::ARRAY)
    throw BadArguments(std::string(task) + ": arguments must be a msgpack array, got " +
                       zexec::proto::kind_name(handle.get().type));
  return handle;
}

void throw_bad_arity(std::string_view task, std::size_t expected, std::size_t got) {
  throw BadArguments(std::string(task) + ": expected " + std::to_string(expected) +
                     (expected == 1 ? " argument" : " arguments") + ", got " + std::to_string(got));
}

void throw_bad_argument(std::string_view task, std::size_t index, const std::string& expected,
                        const msgpack::object& got) {
  std::string where = std::string(task) + ": argument " + std::to_string(index + 1) + ": ";
  // An int that msgpack refused for an integer parameter can only be out of range; saying
  // "expected uint8, got int" would be a riddle.
  if (is_int(got) && (expected.starts_with("int") || expected.starts_with("uint")))
    throw BadArguments(where + int_value(got) + " is out of range for " + expected);
  throw BadArguments(where + "expected " + expected + ", got " + zexec::proto::kind_name(got.type));
}

std::string packed_nil() {
  return std::string(1, '\xc0');
}

}  // namespace zexec::detail
