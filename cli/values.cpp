#include "values.hpp"

#include <cctype>
#include <charconv>
#include <cstdio>
#include <stdexcept>

namespace zexec::cli {
namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

// A small JSON reader that packs as it parses: enough for command-line arguments.
class JsonPacker {
 public:
  JsonPacker(std::string_view text, Packer& pk, msgpack::sbuffer& buf) : s_(text), pk_(pk), buf_(buf) {}
  bool run() {
    try {
      value();
      ws();
      return i_ == s_.size();
    } catch (const std::invalid_argument&) {
      return false;
    }
  }

 private:
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  [[noreturn]] static void bad() { throw std::invalid_argument("not JSON"); }
  bool eat(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  void value() {
    ws();
    if (i_ >= s_.size()) bad();
    char c = s_[i_];
    if (c == '"') {
      pk_.pack(string());
    } else if (c == '[') {
      array();
    } else if (c == '{') {
      object();
    } else if (eat("true")) {
      pk_.pack(true);
    } else if (eat("false")) {
      pk_.pack(false);
    } else if (eat("null")) {
      pk_.pack_nil();
    } else {
      number();
    }
  }
  std::string string() {
    std::string out;
    ++i_;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c == '\\' && i_ < s_.size()) {
        char e = s_[i_++];
        out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
      } else {
        out += c;
      }
    }
    if (i_ >= s_.size()) bad();
    ++i_;
    return out;
  }
  // Reads the elements of a [list] or {map} up to `close`, calling `element` for each; returns
  // their count. msgpack wants the count first, so callers pack elements aside and append them.
  template <class Element>
  std::uint32_t elements(char close, Element element) {
    ++i_;
    std::uint32_t n = 0;
    ws();
    if (i_ < s_.size() && s_[i_] == close) {
      ++i_;
      return n;
    }
    for (;; ++n) {
      element();
      ws();
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < s_.size() && s_[i_] == close) {
        ++i_;
        return n + 1;
      }
      bad();
    }
  }
  void nested_value(Packer& inner, msgpack::sbuffer& body) {
    JsonPacker sub(s_.substr(i_), inner, body);
    sub.value();
    i_ += sub.i_;
  }
  void array() {
    msgpack::sbuffer body;
    Packer inner(body);
    std::uint32_t n = elements(']', [&] { nested_value(inner, body); });
    pk_.pack_array(n);
    buf_.write(body.data(), body.size());
  }
  void object() {
    msgpack::sbuffer body;
    Packer inner(body);
    std::uint32_t n = elements('}', [&] {
      ws();
      if (i_ >= s_.size() || s_[i_] != '"') bad();
      inner.pack(string());
      ws();
      if (i_ >= s_.size() || s_[i_++] != ':') bad();
      nested_value(inner, body);
    });
    pk_.pack_map(n);
    buf_.write(body.data(), body.size());
  }
  void number() {
    std::size_t start = i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) ||
                              std::string_view("+-.eE").find(s_[i_]) != std::string_view::npos))
      ++i_;
    std::string_view t = s_.substr(start, i_ - start);
    if (t.empty()) bad();
    long long n = 0;
    auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
    if (ec == std::errc() && p == t.data() + t.size()) {
      pk_.pack(n);
      return;
    }
    double d = 0;
    auto [q, ec2] = std::from_chars(t.data(), t.data() + t.size(), d);
    if (ec2 != std::errc() || q != t.data() + t.size()) bad();
    pk_.pack(d);
  }

  std::string_view s_;
  Packer& pk_;
  msgpack::sbuffer& buf_;  // what pk_ writes to: nested containers are appended here
  std::size_t i_ = 0;
};

void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

void json(std::string& out, const msgpack::object& o) {
  using namespace msgpack::type;
  switch (o.type) {
    case NIL:
      out += "null";
      break;
    case BOOLEAN:
      out += o.via.boolean ? "true" : "false";
      break;
    case POSITIVE_INTEGER:
      out += std::to_string(o.via.u64);
      break;
    case NEGATIVE_INTEGER:
      out += std::to_string(o.via.i64);
      break;
    case FLOAT32:
    case FLOAT64: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", o.via.f64);
      out += buf;
      break;
    }
    case STR:
      json_string(out, std::string_view(o.via.str.ptr, o.via.str.size));
      break;
    case BIN:
      json_string(out, std::string_view(o.via.bin.ptr, o.via.bin.size));
      break;
    case ARRAY:
      out += '[';
      for (std::uint32_t i = 0; i < o.via.array.size; ++i) {
        if (i) out += ", ";
        json(out, o.via.array.ptr[i]);
      }
      out += ']';
      break;
    case MAP:
      out += '{';
      for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
        if (i) out += ", ";
        const auto& kv = o.via.map.ptr[i];
        if (kv.key.type == STR)
          json(out, kv.key);
        else
          json_string(out, to_json(kv.key));
        out += ": ";
        json(out, kv.val);
      }
      out += '}';
      break;
    case EXT:
      out += "null";
      break;
  }
}

}  // namespace

std::string pack_words(const std::vector<std::string>& words) {
  msgpack::sbuffer buf;
  Packer pk(buf);
  pk.pack_array(static_cast<std::uint32_t>(words.size()));
  for (const auto& w : words) {
    msgpack::sbuffer one;
    Packer p1(one);
    if (JsonPacker(w, p1, one).run())
      buf.write(one.data(), one.size());
    else
      pk.pack(w);
  }
  return std::string(buf.data(), buf.size());
}

std::string to_json(const msgpack::object& o) {
  std::string out;
  json(out, o);
  return out;
}

}  // namespace zexec::cli
