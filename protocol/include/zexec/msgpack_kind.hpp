// The short name of a msgpack value's kind ("int", "str", ...), for error messages that say what
// was found instead of what was expected. Shared by the decoder, the worker's argument
// conversion and the client's result conversion, so they all speak alike.
#pragma once

#include <msgpack.hpp>

namespace zexec::proto {

inline const char* kind_name(msgpack::type::object_type t) {
  using namespace msgpack::type;
  switch (t) {
    case NIL:
      return "nil";
    case BOOLEAN:
      return "bool";
    case POSITIVE_INTEGER:
    case NEGATIVE_INTEGER:
      return "int";
    case FLOAT32:
    case FLOAT64:
      return "float";
    case STR:
      return "str";
    case BIN:
      return "bin";
    case ARRAY:
      return "array";
    case MAP:
      return "map";
    case EXT:
      return "ext";
  }
  return "?";
}

}  // namespace zexec::proto
