// Shared test vectors: tests/vectors/protocol.txt holds the exact bytes of one message of every
// type (and frames every decoder must refuse). This suite and the Python one
// (tests/python/test_vectors.py) each build the same messages with their own encoder and must
// produce those bytes, so the two implementations agree byte for byte.
//
// The file is the contract, not this test: change it only with the protocol version in mind.
// After a deliberate change, regenerate it with ZEXEC_WRITE_VECTORS=1 ./protocol_vectors_test.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <map>
#include <msgpack.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "zexec/protocol.hpp"

namespace proto = zexec::proto;

namespace {

const std::string kVectorFile = std::string(ZEXEC_SOURCE_DIR) + "/tests/vectors/protocol.txt";

struct Vector {
  const char* name;
  const char* literal;  // the message as a Python literal, for readers of the file
  std::string bytes;
};

// msgpack of [1, "a"] and of [0.25]: task arguments are opaque bytes on every hop.
const std::string kArgs = std::string(
    "\x92\x01\xa1"
    "a",
    4);
const std::string kToken =
    std::string("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f", 16);
const std::string kArgsFloat = std::string("\x91\xcb\x3f\xd0\x00\x00\x00\x00\x00\x00", 10);

proto::TaskSpec task(std::uint64_t id, std::string name, std::string args) {
  proto::TaskSpec t;
  t.id = id;
  t.name = std::move(name);
  t.args = std::move(args);
  return t;
}

proto::Event event(std::uint64_t id, proto::Outcome kind, std::string value = {}, std::string type = {},
                   std::string message = {}) {
  return proto::Event{id, kind, std::move(value), std::move(type), std::move(message)};
}

template <class... A>
std::string raw(const A&... a) {  // an arbitrary msgpack array, for frames no encoder makes
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(sizeof...(a));
  (pk.pack(a), ...);
  return std::string(buf.data(), buf.size());
}

std::vector<Vector> good_vectors() {
  using O = proto::Outcome;
  proto::TaskSpec with_options = task(2, "sleep", kArgsFloat);
  with_options.timeout_ms = 5000;
  with_options.retries = 2;
  proto::TaskSpec all_options = task(3, "echo", kArgs);
  all_options.timeout_ms = 1;
  all_options.retries = 2;
  all_options.crash_retries = 3;
  all_options.retry_backoff_ms = 100000;
  msgpack::sbuffer body;
  msgpack::packer<msgpack::sbuffer> pk(body);
  pk.pack_map(1);
  pk.pack(std::string("uptime_ms"));
  pk.pack(5);
  std::string status_body(body.data(), body.size());

  const std::uint64_t handle = (1ULL << 32) | 1;  // daemon handles: generation << 32 | slot
  return {
      {"hello", R"([1, 1, "demo", 4242])", proto::encode(proto::Hello{"demo", 4242})},
      {"hello_session", R"([1, 1, "demo", 4242, 77, b"\x00\x01...\x0f"])",
       proto::encode(proto::Hello{"demo", 4242, 77, kToken})},
      {"welcome", R"([1, 2, 7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000])",
       proto::encode(proto::Welcome{7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000})},
      {"welcome_session",
       R"([1, 2, 7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000, 77, b"\x00...\x0f", True])",
       proto::encode(proto::Welcome{7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000, 77,
                                    kToken, true})},
      {"submit", R"([1, 3, [[1, "echo", b"\x92\x01\xa1a"]]])",
       proto::encode(proto::Submit{{task(1, "echo", kArgs)}})},
      {"submit_options",
       R"([1, 3, [[1, "echo", b"\x92\x01\xa1a"], [2, "sleep", b"\x91\xcb\x3f\xd0\x00\x00\x00\x00\x00\x00", {"timeout_ms": 5000, "retries": 2}]]])",
       proto::encode(proto::Submit{{task(1, "echo", kArgs), with_options}})},
      {"submit_all_options",
       R"([1, 3, [[3, "echo", b"\x92\x01\xa1a", {"timeout_ms": 1, "retries": 2, "crash_retries": 3, "retry_backoff_ms": 100000}]]])",
       proto::encode(proto::Submit{{all_options}})},
      {"cancel", R"([1, 4, 9, [1, 2, 3], False])", proto::encode(proto::Cancel{9, {1, 2, 3}, false})},
      {"cancel_force", R"([1, 4, 10, [18446744073709551615], True])",
       proto::encode(proto::Cancel{10, {UINT64_MAX}, true})},
      {"cancel_reply", R"([1, 5, 9, [[1, 0], [2, 1], [3, 2]]])",
       proto::encode(proto::CancelReply{9,
                                        {{1, proto::CancelOutcome::cancelled},
                                         {2, proto::CancelOutcome::running},
                                         {3, proto::CancelOutcome::finished}}})},
      {"ack", R"([1, 6, 5])", proto::encode(proto::Ack{5})},
      {"ack_large", R"([1, 6, 4294967296])", proto::encode(proto::Ack{1ULL << 32})},
      {"heartbeat", R"([1, 7])", proto::encode(proto::Heartbeat{})},
      {"bye", R"([1, 8])", proto::encode(proto::Bye{})},
      {"error", R"([1, 9, "bad_message", "task args: expected bin, got int"])",
       proto::encode(proto::Error{"bad_message", "task args: expected bin, got int"})},
      {"update",
       R"([1, 10, 1, [[1, 0], [2, 1, b"\x2a"], [3, 2, "ValueError", "bad value"], [4, 3], [5, 2, "WorkerCrashed", "worker killed by signal 9"]]])",
       proto::encode(proto::Update{
           1,
           {event(1, O::started), event(2, O::ok, "\x2a"), event(3, O::error, {}, "ValueError", "bad value"),
            event(4, O::cancelled), event(5, O::error, {}, "WorkerCrashed", "worker killed by signal 9")}})},
      {"update_accepted", R"([1, 10, 2, [[1, 1, b"*"]], 41])",
       proto::encode(proto::Update{2, {event(1, O::ok, "*")}, 41})},
      {"status", R"([1, 11])", proto::encode(proto::Status{})},
      {"status_reply", R"([1, 12, b"\x81\xa9uptime_ms\x05"])",
       proto::encode(proto::StatusReply{status_body})},
      {"drain", R"([1, 13])", proto::encode(proto::Drain{})},
      {"admin_cancel", R"([1, 14, 3, 7, [42], True])", proto::encode(proto::AdminCancel{3, 7, {42}, true})},
      {"worker_hello", R"([1, 20, 3, 1234, 64, ["add", "echo"]])",
       proto::encode(proto::WorkerHello{3, 1234, 64, {"add", "echo"}})},
      {"worker_hello_no_names", R"([1, 20, 3, 1234, 1, []])",
       proto::encode(proto::WorkerHello{3, 1234, 1, {}})},
      {"worker_events", R"([1, 21, 3, 1500, [[4294967297, 0], [4294967297, 1, b"\xc0"]]])",
       proto::encode(
           proto::WorkerEvents{3, 1500, {event(handle, O::started), event(handle, O::ok, "\xc0")}})},
      {"worker_heartbeat", R"([1, 21, 3, 0, []])", proto::encode(proto::WorkerEvents{3, 0, {}})},
      {"worker_revoked", R"([1, 22, 3, [4294967297, 8589934594]])",
       proto::encode(proto::WorkerRevoked{3, {handle, (2ULL << 32) | 2}})},
      {"tasks", R"([1, 30, [[4294967297, "echo", b"\x92\x01\xa1a"]]])",
       proto::encode(proto::Tasks{{task(handle, "echo", kArgs)}})},
      {"tasks_attempt", R"([1, 30, [[4294967297, "echo", b"\x92\x01\xa1a", {}, 3]]])",
       [&] {
         proto::TaskSpec t = task(handle, "echo", kArgs);
         t.attempt = 3;
         return proto::encode(proto::Tasks{{t}});
       }()},
      {"tasks_options",
       R"([1, 30, [[4294967297, "echo", b"\x92\x01\xa1a", {"timeout_ms": 5000, "retries": 2}]]])",
       [&] {
         proto::TaskSpec t = task(handle, "echo", kArgs);
         t.timeout_ms = 5000;
         t.retries = 2;
         return proto::encode(proto::Tasks{{t}});
       }()},
      {"revoke", R"([1, 31, [4294967297]])", proto::encode(proto::Revoke{{handle}})},
      {"shutdown", R"([1, 32])", proto::encode(proto::Shutdown{})},
  };
}

// A frame in another form than the encoder's: older and shorter (before trailing fields were
// added), or newer and longer (with additions this version does not know). Every decoder
// accepts it as the message `as`.
struct FormVector {
  const char* name;
  const char* literal;
  std::string bytes;
  proto::Message as;  // what it decodes to
};

using Packer = msgpack::packer<msgpack::sbuffer>;

// [1, head..., [one]]: a frame whose last field is a list of one task or event, written by `one`
// (for shapes the encoder never makes).
template <class F>
std::string list_frame(std::initializer_list<int> head, F one) {
  msgpack::sbuffer b;
  Packer pk(b);
  pk.pack_array(static_cast<std::uint32_t>(head.size() + 2));
  pk.pack(1);
  for (int h : head) pk.pack(h);
  pk.pack_array(1);
  one(pk);
  return std::string(b.data(), b.size());
}

// Frames in an older, shorter form of a message: every decoder accepts them, with the added
// fields 0, and re-encode as they came (added fields that are 0 are left out at the end).
std::vector<FormVector> older_vectors() {
  return {
      {"welcome_5_fields", R"([1, 2, 7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000])",
       raw(1, 2, 7, std::string("ipc:///run/zexec/zexecd.sock.r7"), 4, 1000, 100000),
       proto::Welcome{7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 0, 0}},
  };
}

// Frames from a newer peer, with fields (or task or event elements) added after the ones this
// version knows: every decoder reads them as the message without the additions.
std::vector<FormVector> newer_vectors() {
  std::string task = list_frame({3}, [](Packer& pk) {
    pk.pack_array(6);
    pk.pack(1);
    pk.pack(std::string("echo"));
    pk.pack_bin(4);
    pk.pack_bin_body(kArgs.data(), 4);
    pk.pack_map(1);
    pk.pack(std::string("retries"));
    pk.pack(2);
    pk.pack(0);  // attempt: not said
    pk.pack(std::string("later"));
  });
  proto::TaskSpec spec{1, "echo", kArgs};
  spec.retries = 2;
  std::string event = list_frame({10, 1}, [](Packer& pk) {
    pk.pack_array(4);
    pk.pack(1);
    pk.pack(1);
    pk.pack_bin(1);
    pk.pack_bin_body("*", 1);
    pk.pack(0);
  });
  // The session welcome (fixarray of 12) with one more field, the int 1.
  std::string welcome_with_a_field = proto::encode(
      proto::Welcome{7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000, 77, kToken, true});
  welcome_with_a_field[0] = static_cast<char>(0x9d);
  welcome_with_a_field += '\x01';
  return {
      {"heartbeat_with_a_field", R"([1, 7, 0])", raw(1, 7, 0), proto::Heartbeat{}},
      {"welcome_with_a_field",
       R"([1, 2, 7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000, 77, TOKEN, True, 1])",
       welcome_with_a_field,
       proto::Welcome{7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000, 77, kToken, true}},
      {"task_with_an_element", R"([1, 3, [[1, "echo", b"\x92\x01\xa1a", {"retries": 2}, 0, "later"]]])", task,
       proto::Submit{{spec}}},
      {"event_with_an_element", R"([1, 10, 1, [[1, 1, b"*", 0]]])", event,
       proto::Update{1, {proto::Event{1, proto::Outcome::ok, "*", "", ""}}}},
  };
}

std::vector<Vector> bad_vectors() {
  std::string unknown_option = list_frame({3}, [](Packer& pk) {
    pk.pack_array(4);
    pk.pack(1);
    pk.pack(std::string("echo"));
    pk.pack_bin(1);
    pk.pack_bin_body("\x90", 1);
    pk.pack_map(1);
    pk.pack(std::string("bogus"));
    pk.pack(1);
  });
  std::string bad_event_kind = list_frame({10, 1}, [](Packer& pk) {
    pk.pack_array(2);
    pk.pack(1);
    pk.pack(9);
  });
  return {
      {"empty", R"(b"")", std::string()},
      {"not_an_array", R"(1)", std::string("\x01", 1)},
      {"version_2", R"([2, 7])", raw(2, 7)},
      {"unknown_type", R"([1, 99])", raw(1, 99)},
      {"missing_field", R"([1, 1, "demo"])", raw(1, 1, std::string("demo"))},
      {"wrong_field_type", R"([1, 6, "5"])", raw(1, 6, std::string("5"))},
      {"negative_id", R"([1, 6, -1])", raw(1, 6, -1)},
      {"trailing_bytes", R"([1, 7] + b"\x00")", raw(1, 7) + std::string("\x00", 1)},
      {"args_not_bytes", R"([1, 3, [[1, "echo", 5]]])",
       raw(1, 3, std::vector<std::tuple<int, std::string, int>>{{1, "echo", 5}})},
      {"unknown_option", R"([1, 3, [[1, "echo", b"\x90", {"bogus": 1}]]])", unknown_option},
      {"unknown_event_kind", R"([1, 10, 1, [[1, 9]]])", bad_event_kind},
      {"welcome_4_fields", R"([1, 2, 7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000])",
       raw(1, 2, 7, std::string("ipc:///run/zexec/zexecd.sock.r7"), 4, 1000)},
  };
}

std::string hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string write_file() {
  std::ostringstream out;
  out << "# zexec protocol version 1: shared test vectors (see tests/protocol_vectors_test.cpp and\n"
         "# tests/python/test_vectors.py). Each vector is a comment with the message as a Python literal,\n"
         "# then `NAME HEX`: the exact bytes every encoder must produce for it. `bad NAME HEX` lines are\n"
         "# frames every decoder must refuse. `old NAME HEX` lines are a message in an older, shorter form\n"
         "# (before trailing fields were added): every decoder accepts them, the added fields 0.\n"
         "# `new NAME HEX` lines are a frame from a newer peer, with fields or elements after the ones\n"
         "# version 1 defines so far: every decoder accepts them and skips the additions.\n"
         "# Map keys are written in the order shown, zero options omitted.\n";
  for (const auto& v : good_vectors())
    out << "# " << v.name << ": " << v.literal << "\n" << v.name << " " << hex(v.bytes) << "\n";
  for (const auto& [form, vectors] : {std::pair{"old ", older_vectors()}, std::pair{"new ", newer_vectors()}})
    for (const auto& v : vectors)
      out << "# " << form << v.name << ": " << v.literal << "\n"
          << form << v.name << " " << hex(v.bytes) << "\n";
  for (const auto& v : bad_vectors())
    out << "# bad " << v.name << ": " << v.literal << "\nbad " << v.name << " " << hex(v.bytes) << "\n";
  return out.str();
}

// name -> hex, from the file; "bad NAME" keys for the refused frames, "old NAME" for the older
// forms, "new NAME" for the newer ones.
std::map<std::string, std::string> read_file() {
  std::ifstream in(kVectorFile);
  EXPECT_TRUE(in) << "cannot read " << kVectorFile;
  std::map<std::string, std::string> v;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string name, bytes;
    words >> name;
    if (name == "bad" || name == "old" || name == "new") {
      std::string kind = name;
      words >> name;
      name = kind + " " + name;
    }
    words >> bytes;
    EXPECT_TRUE(v.emplace(name, bytes).second) << "vector listed twice: " << name;
  }
  return v;
}

}  // namespace

TEST(ProtocolVectors, FileMatchesTheEncoder) {
  if (std::getenv("ZEXEC_WRITE_VECTORS")) {
    std::ofstream(kVectorFile) << write_file();
    GTEST_SKIP() << "wrote " << kVectorFile;
  }
  auto file = read_file();
  std::size_t expected = 0;
  for (const auto& v : good_vectors()) {
    ++expected;
    auto it = file.find(v.name);
    ASSERT_NE(it, file.end()) << "missing from the file: " << v.name;
    EXPECT_EQ(it->second, hex(v.bytes)) << "encoder and file disagree on " << v.name;
    proto::Decoded d = proto::decode(v.bytes);
    ASSERT_TRUE(d) << v.name << ": " << d.error;
    EXPECT_EQ(proto::encode(*d.message), v.bytes) << v.name << " does not survive decode + encode";
  }
  // Older and newer forms: each decodes as the message it stands for.
  for (const auto& [form, vectors] :
       {std::pair{"old ", older_vectors()}, std::pair{"new ", newer_vectors()}}) {
    for (const auto& v : vectors) {
      ++expected;
      std::string key = form + std::string(v.name);
      auto it = file.find(key);
      ASSERT_NE(it, file.end()) << "missing from the file: " << key;
      EXPECT_EQ(it->second, hex(v.bytes));
      proto::Decoded d = proto::decode(v.bytes);
      ASSERT_TRUE(d) << key << ": " << d.error;
      EXPECT_EQ(proto::encode(*d.message), proto::encode(v.as)) << key << " decodes otherwise";
    }
  }
  for (const auto& v : bad_vectors()) {
    ++expected;
    auto it = file.find(std::string("bad ") + v.name);
    ASSERT_NE(it, file.end()) << "missing from the file: bad " << v.name;
    EXPECT_EQ(it->second, hex(v.bytes));
    proto::Decoded d = proto::decode(v.bytes);
    EXPECT_FALSE(d) << "bad " << v.name << " was accepted";
  }
  EXPECT_EQ(file.size(), expected) << "the file has vectors this test does not know";
}

// The file, not only this test's list, holds a message of every type in the message list.
TEST(ProtocolVectors, TheFileHasAMessageOfEveryType) {
  std::set<proto::Type> seen;
  for (const auto& [name, hexs] : read_file()) {
    if (name.rfind("bad ", 0) == 0 || name.rfind("old ", 0) == 0 || name.rfind("new ", 0) == 0) continue;
    std::string bytes;
    for (std::size_t i = 0; i + 1 < hexs.size(); i += 2)
      bytes += static_cast<char>(std::stoi(hexs.substr(i, 2), nullptr, 16));
    proto::Decoded d = proto::decode(bytes);
    ASSERT_TRUE(d) << name << ": " << d.error;
    seen.insert(proto::type_of(*d.message));
  }
  std::set<proto::Type> all;
#define ZEXEC_PROTO_TYPE(Struct, name, number) all.insert(proto::Type::name);
  ZEXEC_PROTO_MESSAGES(ZEXEC_PROTO_TYPE)
#undef ZEXEC_PROTO_TYPE
  EXPECT_EQ(all.size(), std::variant_size_v<proto::Message>);
  EXPECT_EQ(seen, all);
}
