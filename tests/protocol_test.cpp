// The protocol module: every message round-trips, every kind of malformed frame is refused
// with a reason, and nothing hostile crashes the decoder.
#include "zexec/protocol.hpp"

#include <gtest/gtest.h>

#include <msgpack.hpp>
#include <random>
#include <set>
#include <utility>

namespace proto = zexec::proto;

namespace {

template <class T>
T round_trip(const T& m) {
  std::string bytes = proto::encode(m);
  proto::Decoded d = proto::decode(bytes);
  EXPECT_TRUE(d) << d.error;
  EXPECT_TRUE(std::holds_alternative<T>(*d.message));
  // Encoding is deterministic: decoding and re-encoding gives the same bytes.
  EXPECT_EQ(proto::encode(*d.message), bytes);
  return std::get<T>(*d.message);
}

// Packs an arbitrary msgpack value, for building frames the encoder would never produce.
template <class... A>
std::string pack(const A&... a) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(sizeof...(a));
  (pk.pack(a), ...);
  return std::string(buf.data(), buf.size());
}

std::string refused(std::string_view frame) {
  proto::Decoded d = proto::decode(frame);
  EXPECT_FALSE(d) << "accepted a malformed frame";
  EXPECT_FALSE(d.error.empty());
  return d.error;
}

}  // namespace

TEST(Protocol, ClientMessagesRoundTrip) {
  auto h = round_trip(proto::Hello{"producer", 4242});
  EXPECT_EQ(h.client_name, "producer");
  EXPECT_EQ(h.pid, 4242);

  auto w = round_trip(proto::Welcome{7, "ipc:///run/zexec/zexecd.sock.r7", 10, 1000, 50000, 64, 5000});
  EXPECT_EQ(w.max_pending, 50000u);
  EXPECT_EQ(w.max_unacked_updates, 64u);
  EXPECT_EQ(w.client_timeout_ms, 5000u);
  EXPECT_EQ(w.client_id, 7u);
  EXPECT_EQ(w.results_endpoint, "ipc:///run/zexec/zexecd.sock.r7");
  EXPECT_EQ(w.workers, 10u);
  EXPECT_EQ(w.heartbeat_ms, 1000u);

  std::string args = pack(0.25, std::string("x"));
  auto s = round_trip(proto::Submit{{{1, "sleep", args, 0}, {UINT64_MAX, "echo", "", 1500, 2, 1, 50}}});
  ASSERT_EQ(s.tasks.size(), 2u);
  EXPECT_EQ(s.tasks[0].name, "sleep");
  EXPECT_EQ(s.tasks[0].args, args);
  EXPECT_EQ(s.tasks[0].timeout_ms, 0u);
  EXPECT_EQ(s.tasks[1].id, UINT64_MAX);
  EXPECT_EQ(s.tasks[1].timeout_ms, 1500u);
  EXPECT_EQ(s.tasks[1].retries, 2u);
  EXPECT_EQ(s.tasks[1].crash_retries, 1u);
  EXPECT_EQ(s.tasks[1].retry_backoff_ms, 50u);

  auto c = round_trip(proto::Cancel{9, {1, 2, 3}, true});
  EXPECT_TRUE(c.force);
  EXPECT_EQ(c.request_id, 9u);
  EXPECT_EQ(c.task_ids, (std::vector<std::uint64_t>{1, 2, 3}));

  auto r = round_trip(
      proto::CancelReply{9, {{1, proto::CancelOutcome::cancelled}, {2, proto::CancelOutcome::running}}});
  ASSERT_EQ(r.outcomes.size(), 2u);
  EXPECT_EQ(r.outcomes[1].second, proto::CancelOutcome::running);

  EXPECT_EQ(round_trip(proto::Ack{55}).seq, 55u);
  round_trip(proto::Heartbeat{});
  round_trip(proto::Bye{});
  round_trip(proto::Status{});
  round_trip(proto::Drain{});
  auto ac = round_trip(proto::AdminCancel{3, 9, {4, 5}, true});
  EXPECT_EQ(ac.client_id, 9u);
  EXPECT_TRUE(ac.force);
  EXPECT_EQ(round_trip(proto::StatusReply{pack(1, 2)}).body, pack(1, 2));
  auto e = round_trip(proto::Error{"bad_message", "what went wrong"});
  EXPECT_EQ(e.code, "bad_message");
  EXPECT_EQ(e.message, "what went wrong");
}

TEST(Protocol, EventsRoundTrip) {
  std::string value = pack(1, 2, 3);
  proto::Update u{3,
                  {{1, proto::Outcome::started, {}, {}, {}},
                   {1, proto::Outcome::ok, value, {}, {}},
                   {2, proto::Outcome::error, {}, "ValueError", "bad value"},
                   {3, proto::Outcome::cancelled, {}, {}, {}}}};
  auto got = round_trip(u);
  EXPECT_EQ(got.seq, 3u);
  ASSERT_EQ(got.events.size(), 4u);
  EXPECT_EQ(got.events[0].kind, proto::Outcome::started);
  EXPECT_EQ(got.events[1].value, value);
  EXPECT_EQ(got.events[2].error_type, "ValueError");
  EXPECT_EQ(got.events[2].error_message, "bad value");
  EXPECT_EQ(got.events[3].kind, proto::Outcome::cancelled);
}

TEST(Protocol, WorkerMessagesRoundTrip) {
  auto h = round_trip(proto::WorkerHello{12, 999, 256, {"sleep", "echo"}});
  EXPECT_EQ(h.worker_id, 12u);
  EXPECT_EQ(h.capacity, 256u);
  EXPECT_EQ(h.tasks, (std::vector<std::string>{"sleep", "echo"}));
  auto ev = round_trip(
      proto::WorkerEvents{12, 1234, {{5, proto::Outcome::ok, pack(msgpack::type::nil_t()), {}, {}}}});
  EXPECT_EQ(ev.busy_us, 1234u);
  ASSERT_EQ(ev.events.size(), 1u);
  auto hb = round_trip(proto::WorkerEvents{12, 0, {}});
  EXPECT_TRUE(hb.events.empty());
  EXPECT_EQ(round_trip(proto::WorkerRevoked{12, {4, 5}}).task_ids.size(), 2u);
  EXPECT_EQ(round_trip(proto::Tasks{{{(7ull << 32) | 3, "noop", pack(), 0}}}).tasks[0].id, (7ull << 32) | 3);
  EXPECT_EQ(round_trip(proto::Revoke{{1}}).task_ids, (std::vector<std::uint64_t>{1}));
  round_trip(proto::Shutdown{});
}

// A newer client meets an older daemon: its 5-field welcome is taken, the fields added since
// are 0 (unknown). Fewer fields than the first form, or more than this version knows, are not.
TEST(Protocol, WelcomeIsReadInItsOlderShorterFormToo) {
  const std::string ep = "ipc:///x.r1";
  proto::Decoded old = proto::decode(pack(1, 2, 7, ep, 4, 1000, 100));
  ASSERT_TRUE(old) << old.error;
  auto w = std::get<proto::Welcome>(*old.message);
  EXPECT_EQ(w.client_id, 7u);
  EXPECT_EQ(w.max_pending, 100u);
  EXPECT_EQ(w.max_unacked_updates, 0u);
  EXPECT_EQ(w.client_timeout_ms, 0u);
  // It re-encodes as it came: added fields that are 0 are left out at the end.
  EXPECT_EQ(proto::encode(w), pack(1, 2, 7, ep, 4, 1000, 100));
  w.client_timeout_ms = 5000;
  EXPECT_EQ(proto::encode(w), pack(1, 2, 7, ep, 4, 1000, 100, 0, 5000));

  proto::Decoded six = proto::decode(pack(1, 2, 7, ep, 4, 1000, 100, 64));
  ASSERT_TRUE(six) << six.error;
  EXPECT_EQ(std::get<proto::Welcome>(*six.message).max_unacked_updates, 64u);
  EXPECT_EQ(std::get<proto::Welcome>(*six.message).client_timeout_ms, 0u);

  proto::Decoded now = proto::decode(pack(1, 2, 7, ep, 4, 1000, 100, 64, 5000));
  ASSERT_TRUE(now) << now.error;
  EXPECT_EQ(std::get<proto::Welcome>(*now.message).client_timeout_ms, 5000u);

  EXPECT_EQ(refused(pack(1, 2, 7, ep, 4, 1000)), "welcome: 4 fields, expected at least 5");
  // A newer daemon's welcome, with a field this build does not know: read, the field skipped.
  const std::vector<char> token{'t', 'o', 'k'};  // (msgpack-c packs a vector<char> as bin)
  proto::Decoded newer = proto::decode(pack(1, 2, 7, ep, 4, 1000, 100, 64, 5000, 9, token, true, 1));
  ASSERT_TRUE(newer) << newer.error;
  EXPECT_EQ(proto::encode(*newer.message),
            proto::encode(proto::Welcome{7, ep, 4, 1000, 100, 64, 5000, 9, "tok", true}));
  EXPECT_EQ(refused(pack(1, 2, 7, ep, 4, 1000, 100, std::string("64"))),
            "max_unacked_updates: expected a non-negative int, got str");
  EXPECT_EQ(refused(pack(1, 2, 7, ep, 4, 1000, 100, 64, std::uint64_t{1} << 32)),
            "client_timeout_ms: 4294967296 is out of range");
}

// The message list is the one source: every alternative of Message has its own Type and name,
// encodes with that type number and decodes back to itself, and a frame one field short of it
// is refused (so no message silently lost its field table).
TEST(Protocol, EveryMessageOfTheListEncodesAndDecodesAsItself) {
  std::set<std::string> names;
  std::set<proto::Type> types;
  auto check = [&](const proto::Message& m) {
    proto::Type t = proto::type_of(m);
    std::string name = proto::type_name(t);
    EXPECT_NE(name, "unknown");
    EXPECT_TRUE(names.insert(name).second) << "two messages named " << name;
    EXPECT_TRUE(types.insert(t).second) << name << ": its type number is taken";
    std::string bytes = proto::encode(m);
    msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
    const auto& a = oh.get().via.array;
    ASSERT_GE(a.size, 2u);
    EXPECT_EQ(a.ptr[1].as<int>(), static_cast<int>(t)) << name;
    proto::Decoded d = proto::decode(bytes);
    ASSERT_TRUE(d) << name << ": " << d.error;
    EXPECT_EQ(d.message->index(), m.index()) << name;
    EXPECT_EQ(proto::encode(*d.message), bytes) << name;
    if (a.size > 2) {  // the frame without its last field
      msgpack::sbuffer buf;
      msgpack::packer<msgpack::sbuffer> pk(buf);
      pk.pack_array(a.size - 1);
      for (std::uint32_t i = 0; i + 1 < a.size; ++i) pk.pack(a.ptr[i]);
      bool shortened_ok = proto::decode(std::string_view(buf.data(), buf.size())).message.has_value();
      // (Added fields that are 0 are left out, so what is left is the first form: one short is refused.)
      EXPECT_FALSE(shortened_ok) << name;
    }
  };
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (check(proto::Message{std::in_place_index<I>}), ...);
  }
  (std::make_index_sequence<std::variant_size_v<proto::Message>>());
  EXPECT_EQ(names.size(), std::variant_size_v<proto::Message>);
  // Type numbers the list does not name are refused, as unknown.
  for (int n = 0; n < 256; ++n)
    if (!types.count(static_cast<proto::Type>(n))) {
      EXPECT_EQ(refused(pack(1, n)), "unknown message type " + std::to_string(n));
    }
}

TEST(Protocol, TypeNames) {
  EXPECT_STREQ(proto::type_name(proto::type_of(proto::Submit{})), "submit");
  EXPECT_STREQ(proto::type_name(proto::type_of(proto::Shutdown{})), "shutdown");
  EXPECT_EQ(proto::type_of(proto::WorkerRevoked{}), proto::Type::worker_revoked);
}

TEST(Protocol, RefusesMalformedEnvelopes) {
  EXPECT_EQ(refused(""), "empty frame");
  EXPECT_EQ(refused(std::string("\x93\x01", 2)), "truncated msgpack");
  EXPECT_NE(refused("\xc1").find("malformed msgpack"), std::string::npos);  // 0xc1 is never used
  EXPECT_EQ(refused(std::string("\x01", 1)), "envelope: expected array, got int");
  EXPECT_NE(refused(pack(1)).find("need [version, type"), std::string::npos);
  EXPECT_EQ(refused(pack(2, 7)), "unsupported protocol version 2 (this peer speaks 1)");
  EXPECT_EQ(refused(pack(-1, 7)), "version: expected a non-negative int, got int");
  EXPECT_EQ(refused(pack(1, 99)), "unknown message type 99");
  EXPECT_EQ(refused(pack(1, std::string("submit"))), "message type: expected a non-negative int, got str");
  std::string two = proto::encode(proto::Heartbeat{}) + proto::encode(proto::Heartbeat{});
  EXPECT_EQ(refused(two), "3 trailing bytes after the message");
}

TEST(Protocol, RefusesWrongFieldsWithTheFieldNamed) {
  EXPECT_EQ(refused(pack(1, 1, std::string("x"))), "hello: 1 fields, expected at least 2");
  EXPECT_EQ(refused(pack(1, 1, 5, 5)), "client name: expected str, got int");
  EXPECT_EQ(refused(pack(1, 6, -3)), "seq: expected a non-negative int, got int");
  EXPECT_EQ(refused(pack(1, 3, 5)), "tasks: expected array, got int");

  // A task with args that are not bytes, an empty name, or an unknown option.
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  auto task_frame = [&](auto fill) {
    buf.clear();
    pk.pack_array(3);
    pk.pack(1);
    pk.pack(3);
    pk.pack_array(1);
    fill();
    return std::string(buf.data(), buf.size());
  };
  EXPECT_EQ(refused(task_frame([&] {
              pk.pack_array(3);
              pk.pack(1);
              pk.pack(std::string("echo"));
              pk.pack(5);
            })),
            "task args: expected bin, got int");
  EXPECT_EQ(refused(task_frame([&] {
              pk.pack_array(3);
              pk.pack(1);
              pk.pack(std::string(""));
              pk.pack_bin(0);
            })),
            "task name: empty");
  EXPECT_EQ(refused(task_frame([&] {
              pk.pack_array(4);
              pk.pack(1);
              pk.pack(std::string("echo"));
              pk.pack_bin(0);
              pk.pack_map(1);
              pk.pack(std::string("priority"));
              pk.pack(1);
            })),
            "task options: unknown option 'priority'");
  EXPECT_EQ(refused(task_frame([&] {
              pk.pack_array(2);
              pk.pack(1);
              pk.pack(std::string("echo"));
            })),
            "task: array of 2 elements, expected at least 3");
}

TEST(Protocol, RefusesBadEvents) {
  EXPECT_EQ(refused(pack(1, 10, 1, std::vector<std::vector<int>>{{1, 7}})), "event kind: 7 is out of range");
  EXPECT_EQ(refused(pack(1, 10, 1, std::vector<std::vector<int>>{{1, 1}})),
            "event of kind 1: 2 elements, expected 3");
  EXPECT_EQ(refused(pack(1, 21, 1, 0, std::vector<std::vector<int>>{{1, 2, 3, 4}})),
            "error type: expected str, got int");
}

TEST(Protocol, LimitsStopHostileSizesAndDepth) {
  // An array header claiming 2^32-1 elements must not allocate them.
  std::string huge = pack(1, 3);
  huge[0] = static_cast<char>(0x93);
  huge += std::string("\xdd\xff\xff\xff\xff", 5);
  EXPECT_FALSE(proto::decode(huge));
  // Deep nesting is refused, not recursed into.
  std::string deep(1000, '\x91');
  deep += '\x01';
  EXPECT_FALSE(proto::decode(deep));
}

TEST(Protocol, RandomBytesNeverCrash) {
  std::mt19937 rng(1234);
  std::string valid = proto::encode(proto::Submit{{{1, "sleep", pack(0.5), 0}, {2, "echo", pack("x"), 10}}});
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string frame = valid;
    // Mutate a few bytes of a valid frame: close to real, so the decoder goes deep.
    for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k)
      frame[rng() % frame.size()] = static_cast<char>(rng());
    if (rng() % 4 == 0) frame.resize(rng() % frame.size());
    proto::Decoded d = proto::decode(frame);
    if (d) {
      ++accepted;
    } else {
      EXPECT_FALSE(d.error.empty());
    }
  }
  EXPECT_LT(accepted, 20000);
}

// The batches of tasks and results take the decoder's fast path; it must give exactly the
// general decoder's answer, for the frames it takes and for every damaged copy of them.
TEST(Protocol, FastPathDecodesBatchesAsTheGeneralDecoderDoes) {
  std::string big(70000, 'x');  // str16/bin32-sized fields
  proto::TaskSpec t1{1, "noop", pack(), 0};
  proto::TaskSpec t2{UINT64_MAX, "echo", big, 0};
  proto::Event ok{7, proto::Outcome::ok, pack(1.5), "", ""};
  proto::Event err{8, proto::Outcome::error, "", "ValueError", "bad " + big};
  proto::Event started{9, proto::Outcome::started, "", "", ""};
  proto::Event cancelled{300000, proto::Outcome::cancelled, "", "", ""};
  std::vector<std::string> frames = {
      proto::encode(proto::Submit{{t1, t2}}),
      proto::encode(proto::Tasks{{t1}}),
      proto::encode(proto::Update{std::uint64_t{1} << 40, {ok, err, started, cancelled}}),
      proto::encode(proto::WorkerEvents{3, 123456789, {ok, started}}),
      proto::encode(proto::Update{2, {}}),
  };
  for (const std::string& f : frames) {
    proto::Message m;
    ASSERT_TRUE(proto::detail::decode_fast(f, m)) << "not on the fast path: " << f.size() << " bytes";
    EXPECT_EQ(proto::encode(m), f);
  }
  // A task with options is left to the general decoder, which takes it.
  proto::TaskSpec with_options{2, "sleep", pack(), 1500, 2, 0, 0};
  std::string f = proto::encode(proto::Submit{{t1, with_options}});
  proto::Message m;
  EXPECT_FALSE(proto::detail::decode_fast(f, m));
  EXPECT_TRUE(proto::decode(f));

  auto same = [](const std::string& frame) {
    proto::Decoded d = proto::decode(frame), g = proto::detail::decode_generic(frame);
    ASSERT_EQ(bool(d), bool(g)) << d.error << " / " << g.error;
    EXPECT_EQ(d.error, g.error);
    if (d) {
      EXPECT_EQ(proto::encode(*d.message), proto::encode(*g.message));
    }
  };
  // Frames near the fast path's shapes that the general decoder refuses, each for its reason.
  std::vector<std::string> hostile = {
      pack(1, 3,
           std::vector<msgpack::type::tuple<int, std::string, std::string>>{{1, "", ""}}),  // empty name
      pack(1, 10, 1, std::vector<std::vector<int>>{{1, 5}}),                                // kind 5
      pack(1, 10, 1, std::vector<std::vector<int>>{{1, 1}}),                                // ok, no value
      pack(2, 10, 1, std::vector<int>{}),                                                   // version 2
      pack(1, 10, -1, std::vector<int>{}),                                                  // negative seq
      pack(1, 30, std::vector<int>{1}),                        // task not an array
      pack(1, 256 + 21, 1, 2, std::vector<int>{}),             // worker_events in its low 8 bits only
      std::string("\x94\x01\x0a\x01\xdd\x00\x10\x00\x00", 9),  // 1M events, no bytes
  };
  for (const std::string& frame : hostile) {
    EXPECT_FALSE(proto::decode(frame)) << "accepted hostile frame " << &frame - hostile.data();
    same(frame);
  }
  // A `started` event with an element a newer peer added: taken by both, the element skipped.
  std::string newer = pack(1, 21, 1, 2, std::vector<std::vector<int>>{{1, 0, 0}});
  EXPECT_TRUE(proto::decode(newer));
  same(newer);
  std::mt19937 rng(42);
  for (const std::string& frame : frames) {
    if (frame.size() > 1000) continue;  // the small ones: every cut and many bytes changed
    for (std::size_t cut = 0; cut < frame.size(); ++cut) same(frame.substr(0, cut));
    for (std::size_t i = 0; i < frame.size(); ++i)
      for (int k = 0; k < 8; ++k) {
        std::string bad = frame;
        bad[i] = static_cast<char>(rng());
        same(bad);
      }
    same(frame + '\0');
  }
}

TEST(Protocol, TaskListWriterWritesWhatEncodeWrites) {
  proto::TaskSpec a{1, "noop", pack(), 0};
  proto::TaskSpec b{2, "sleep", pack(0.5), 1500, 2, 1, 50};
  for (auto type : {proto::Type::submit, proto::Type::tasks}) {
    std::string out = "stale bytes";
    proto::TaskListWriter w(out, type, 2);
    for (const auto& t : {a, b}) w.add(t.id, t.name, t.args, t.options());
    EXPECT_EQ(out, type == proto::Type::submit ? proto::encode(proto::Submit{{a, b}})
                                               : proto::encode(proto::Tasks{{a, b}}));
  }
}

TEST(Protocol, WorkerEventsPiecesMakeWhatEncodeWrites) {
  std::vector<proto::Event> events = {{5, proto::Outcome::started, "", "", ""},
                                      {5, proto::Outcome::ok, pack(42), "", ""},
                                      {6, proto::Outcome::error, "", "ValueError", "no"}};
  std::string out;
  proto::append_worker_events_header(out, 9, 1234567, static_cast<std::uint32_t>(events.size()));
  for (const auto& e : events) proto::append_event(out, e);
  EXPECT_EQ(out, proto::encode(proto::WorkerEvents{9, 1234567, events}));
}

TEST(Protocol, TheSenderOfARefusedWorkerFrameIsReadFromItsStart) {
  using proto::sender_worker_id;
  std::string events = proto::encode(
      proto::WorkerEvents{42, 0, {proto::Event{1ULL << 32, proto::Outcome::started, {}, {}, {}}}});
  EXPECT_EQ(sender_worker_id(events), 42u);
  EXPECT_EQ(sender_worker_id(events.substr(0, events.size() - 1)), 42u) << "cut short: still names it";
  EXPECT_EQ((sender_worker_id(proto::encode(proto::WorkerHello{7, 1, 1, {}}))), 7u);
  EXPECT_EQ((sender_worker_id(proto::encode(proto::WorkerRevoked{9, {}}))), 9u);
  EXPECT_EQ(sender_worker_id(proto::encode(proto::Ack{5})), std::nullopt) << "not a worker's message";
  EXPECT_EQ(sender_worker_id(proto::encode(proto::Tasks{})), std::nullopt);
  std::string other_version = events;
  other_version[1] = 9;  // [version, ...]: a layout nobody can vouch for
  EXPECT_EQ(sender_worker_id(other_version), std::nullopt);
  EXPECT_EQ(sender_worker_id(events.substr(0, 3)), std::nullopt) << "no worker id yet";
  EXPECT_EQ(sender_worker_id(""), std::nullopt);
  EXPECT_EQ((sender_worker_id(proto::encode(proto::WorkerEvents{0, 0, {}}))), std::nullopt) << "0 is nobody";
}
