// Internals of zexec::Worker::add(): turns a typed C++ callable into a "raw" task that takes the
// msgpack bytes of the argument array and returns the msgpack bytes of the result.
//
// Only templates live here; everything that does not depend on the callable's types is in
// workers/src/task_adapter.cpp so that each registered task costs as little code as possible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <msgpack.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

#include "zexec/export.hpp"

namespace zexec::detail {

// ---- function traits: parameter and return types of a callable --------------------------------

template <class R, class... A>
struct signature {
  using result = R;
  using args = std::tuple<A...>;
};

template <class T>
struct callable_traits;  // primary: class types, see the partial specialization below

template <class R, class... A>
struct callable_traits<R(A...)> : signature<R, A...> {};
template <class R, class... A>
struct callable_traits<R(A...) noexcept> : signature<R, A...> {};
template <class R, class... A>
struct callable_traits<R (*)(A...)> : signature<R, A...> {};
template <class R, class... A>
struct callable_traits<R (*)(A...) noexcept> : signature<R, A...> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...)> : signature<R, A...> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...) const> : signature<R, A...> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...) noexcept> : signature<R, A...> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...) const noexcept> : signature<R, A...> {};

// A class type with exactly one operator(): lambdas, std::function, hand-written functors.
template <class T>
requires requires {
  &T::operator();
}
struct callable_traits<T> : callable_traits<decltype(&T::operator())> {};

template <class T>
concept deducible_callable = requires {
  typename callable_traits<T>::args;
};

// ---- names used in BadArguments messages --------------------------------------------------------

template <class T, template <class...> class Template>
inline constexpr bool is_specialization_v = false;
template <template <class...> class Template, class... A>
inline constexpr bool is_specialization_v<Template<A...>, Template> = true;

// Name of the fixed-width integer type, e.g. "uint8"; the range a client must respect.
ZEXEC_API std::string int_name(bool is_signed, std::size_t bytes);
// "std::runtime_error" rather than "St13runtime_error".
ZEXEC_API std::string demangled_name(const std::type_info& type);

// What a parameter of type T accepts, in the vocabulary of msgpack users ("double", "str", ...).
template <class T>
std::string expected_name() {
  if constexpr (std::is_same_v<T, bool>) {
    return "bool";
  } else if constexpr (std::is_integral_v<T>) {
    return int_name(std::is_signed_v<T>, sizeof(T));
  } else if constexpr (std::is_same_v<T, double>) {
    return "double";
  } else if constexpr (std::is_same_v<T, float>) {
    return "float";
  } else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, std::string_view>) {
    return "str";
  } else if constexpr (std::is_same_v<T, std::vector<char>> ||
                       std::is_same_v<T, std::vector<unsigned char>>) {
    return "bin";
  } else if constexpr (is_specialization_v<T, std::optional>) {
    return "nil or " + expected_name<typename T::value_type>();
  } else if constexpr (is_specialization_v<T, std::vector>) {
    return "array of " + expected_name<typename T::value_type>();
  } else if constexpr (is_specialization_v<T, std::map> || is_specialization_v<T, std::unordered_map>) {
    return "map of " + expected_name<typename T::key_type>() + " to " +
           expected_name<typename T::mapped_type>();
  } else if constexpr (is_specialization_v<T, std::tuple>) {
    return "array of " + std::to_string(std::tuple_size_v<T>) + " elements";
  } else {
    return demangled_name(typeid(T));
  }
}

// ---- non-template helpers (task_adapter.cpp) ----------------------------------------------------

// Unpacks the argument bytes; throws zexec::BadArguments unless they hold a msgpack array.
ZEXEC_API msgpack::object_handle unpack_args(std::string_view task, std::string_view bytes);

[[noreturn]] ZEXEC_API void throw_bad_arity(std::string_view task, std::size_t expected, std::size_t got);
[[noreturn]] ZEXEC_API void throw_bad_argument(std::string_view task, std::size_t index,
                                               const std::string& expected, const msgpack::object& got);

// msgpack writes into anything with write(const char*, size_t); this appends to a std::string.
struct StringSink {
  std::string* out;
  void write(const char* p, std::size_t n) { out->append(p, n); }
};

ZEXEC_API std::string packed_nil();

template <class T>
std::string pack_value(const T& value) {
  std::string out;
  StringSink sink{&out};
  msgpack::packer<StringSink> packer(sink);
  packer.pack(value);
  return out;
}

// ---- the adapter ---------------------------------------------------------------------------------

// Converts argument `index` (0-based) to T, turning msgpack's bare type_error into a message that
// names the task, the argument and both types.
template <class T>
T convert_arg(std::string_view task, std::size_t index, const msgpack::object& arg) {
  try {
    return arg.as<T>();
  } catch (const std::bad_cast&) {  // msgpack::type_error derives from std::bad_cast
    throw_bad_argument(task, index, expected_name<T>(), arg);
  }
}

template <class F, class R, class... A, std::size_t... I>
std::string call_with_array([[maybe_unused]] std::string_view task, F& fn,
                            [[maybe_unused]] const msgpack::object_array& array, std::index_sequence<I...>) {
  // Braced initialisation evaluates left to right, so the first bad argument is the one reported.
  std::tuple<std::decay_t<A>...> values{convert_arg<std::decay_t<A>>(task, I, array.ptr[I])...};
  // forward<A> hands each value over the way the parameter wants it: by value params get a move,
  // reference params bind to the tuple element.
  if constexpr (std::is_void_v<R>) {
    std::invoke(fn, std::forward<A>(std::get<I>(values))...);
    return packed_nil();
  } else {
    return pack_value(std::invoke(fn, std::forward<A>(std::get<I>(values))...));
  }
}

template <class F, class R, class... A>
std::string call_packed(std::string_view task, F& fn, std::string_view bytes, std::tuple<A...>*) {
  // The handle owns the unpacked objects; msgpack::object / string_view parameters point into it,
  // so it outlives the call and the packing of the result.
  msgpack::object_handle handle = unpack_args(task, bytes);
  const msgpack::object_array& array = handle.get().via.array;
  if (array.size != sizeof...(A)) throw_bad_arity(task, sizeof...(A), array.size);
  return call_with_array<F, R, A...>(task, fn, array, std::index_sequence_for<A...>{});
}

using RawTask = std::function<std::string(std::string_view args)>;

template <class F>
RawTask make_raw_task(std::string name, F fn) {
  using Traits = callable_traits<F>;
  using Args = typename Traits::args;
  using Result = typename Traits::result;
  // shared_ptr keeps the RawTask copyable (std::function needs that) even for move-only callables.
  auto holder = std::make_shared<F>(std::move(fn));
  return [name = std::move(name), holder](std::string_view bytes) -> std::string {
    return call_packed<F, Result>(name, *holder, bytes, static_cast<Args*>(nullptr));
  };
}

}  // namespace zexec::detail
