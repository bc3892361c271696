// Values on the command line and on the terminal: JSON-ish text -> msgpack, msgpack -> JSON.
#pragma once

#include <msgpack.hpp>
#include <string>
#include <vector>

namespace zexec::cli {

// Packs command-line words as a msgpack array of task arguments. Each word is read as JSON when
// it parses as JSON (numbers, true/false/null, "quoted", [lists], {maps}), else as a plain string,
// so `zexec submit sleep 0.5` and `zexec submit echo hello` both do what they look like.
std::string pack_words(const std::vector<std::string>& words);

// Renders a msgpack value as JSON (bin as a string of its bytes, escaped).
std::string to_json(const msgpack::object& o);

}  // namespace zexec::cli
