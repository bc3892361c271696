// The decoder's fast path for the four messages that carry tasks and results: submit, tasks,
// update and worker_events, one of each per batch of up to thousands of tasks.
//
// The general decoder (protocol.cpp) unpacks a frame into a msgpack object tree and then
// converts it; for these messages that was the largest single cost of the client and a large
// one of the daemon (bench/RESULTS.md). Here the bytes are read once, straight into the
// message. This path only ever accepts the plain encodings every zexec encoder writes; on
// anything else (another type, an options map, an unusual integer format, a limit, an error)
// it says "not mine" and decode() runs the general decoder, which accepts what it accepts and
// words the refusal. So both paths accept exactly the same frames with the same result (the
// fuzz target and protocol_test check that against the general decoder alone).
#include <cstring>

#include "zexec/protocol.hpp"

namespace zexec::proto::detail {

namespace {

// The general decoder's limits: beyond them, it decides.
using limits::kMaxArray;
using limits::kMaxBin;
using limits::kMaxStr;

class Reader {
 public:
  explicit Reader(std::string_view s)
      : p_(reinterpret_cast<const unsigned char*>(s.data())), end_(p_ + s.size()) {}

  bool at_end() const { return p_ == end_; }
  std::size_t left() const { return static_cast<std::size_t>(end_ - p_); }

  bool array(std::uint32_t& n) {
    if (p_ == end_) return false;
    unsigned char c = *p_;
    if ((c & 0xf0) == 0x90) {
      n = c & 0x0f;
      ++p_;
    } else if (c == 0xdc) {
      if (!be(1, 2, n)) return false;
    } else if (c == 0xdd) {
      if (!be(1, 4, n)) return false;
    } else {
      return false;
    }
    return n <= kMaxArray;
  }

  bool uint(std::uint64_t& v) {
    if (p_ == end_) return false;
    unsigned char c = *p_;
    if (c < 0x80) {
      v = c;
      ++p_;
      return true;
    }
    if (c < 0xcc || c > 0xcf) return false;
    return be(1, std::size_t{1} << (c - 0xcc), v);
  }

  bool str(std::string_view& s) {
    if (p_ == end_) return false;
    unsigned char c = *p_;
    std::uint32_t n;
    if ((c & 0xe0) == 0xa0) {
      n = c & 0x1f;
      ++p_;
    } else if (c >= 0xd9 && c <= 0xdb) {
      if (!be(1, std::size_t{1} << (c - 0xd9), n)) return false;
    } else {
      return false;
    }
    return n <= kMaxStr && take(n, s);
  }

  // Opaque bytes: bin, or str (as the general decoder's get_bytes).
  bool bytes(std::string_view& s) {
    if (p_ == end_) return false;
    unsigned char c = *p_;
    if (c < 0xc4 || c > 0xc6) return str(s);
    std::uint32_t n;
    return be(1, std::size_t{1} << (c - 0xc4), n) && n <= kMaxBin && take(n, s);
  }

 private:
  // Reads a big-endian integer of `size` bytes after `skip` bytes of format.
  template <class T>
  bool be(std::size_t skip, std::size_t size, T& out) {
    if (static_cast<std::size_t>(end_ - p_) < skip + size) return false;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < size; ++i) v = (v << 8) | p_[skip + i];
    p_ += skip + size;
    out = static_cast<T>(v);
    return true;
  }
  bool take(std::uint32_t n, std::string_view& s) {
    if (static_cast<std::size_t>(end_ - p_) < n) return false;
    s = std::string_view(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }

  const unsigned char* p_;
  const unsigned char* end_;
};

bool read_tasks(Reader& r, std::vector<TaskSpec>& out) {
  std::uint32_t n;
  // Each task takes at least 4 bytes: a count beyond that is not allocated for here.
  if (!r.array(n) || n > r.left() / 4) return false;
  out.resize(n);
  for (TaskSpec& t : out) {
    std::uint32_t fields;
    std::string_view name, args;
    // [id, name, args] only: a task with options goes the general way.
    if (!r.array(fields) || fields != 3 || !r.uint(t.id) || !r.str(name) || name.empty() || !r.bytes(args))
      return false;
    t.name.assign(name);
    t.args.assign(args);
  }
  return true;
}

bool read_events(Reader& r, std::vector<Event>& out) {
  std::uint32_t n;
  // Each event takes at least 3 bytes: a count beyond that is not allocated for here.
  if (!r.array(n) || n > r.left() / 3) return false;
  out.resize(n);
  for (Event& e : out) {
    std::uint32_t fields;
    std::uint64_t kind;
    if (!r.array(fields) || !r.uint(e.task_id) || !r.uint(kind) || kind > 3) return false;
    e.kind = static_cast<Outcome>(kind);
    std::string_view a, b;
    switch (e.kind) {
      case Outcome::ok:
        if (fields != 3 || !r.bytes(a)) return false;
        e.value.assign(a);
        break;
      case Outcome::error:
        if (fields != 4 || !r.str(a) || !r.str(b)) return false;
        e.error_type.assign(a);
        e.error_message.assign(b);
        break;
      default:
        if (fields != 2) return false;
    }
  }
  return true;
}

}  // namespace

bool decode_fast(std::string_view frame, Message& out) {
  Reader r(frame);
  std::uint32_t fields;
  std::uint64_t version, type;
  // (type is checked for range before the cast: Type is 8 bits wide, 8469 is not worker_events)
  if (!r.array(fields) || !r.uint(version) || version != kVersion || !r.uint(type) || type > 0xff)
    return false;
  bool ok = false;
  switch (static_cast<Type>(type)) {
    case Type::submit:
    case Type::tasks: {
      std::vector<TaskSpec> tasks;
      ok = fields == 3 && read_tasks(r, tasks);
      if (ok) {
        if (static_cast<Type>(type) == Type::submit)
          out = Submit{std::move(tasks)};
        else
          out = Tasks{std::move(tasks)};
      }
      break;
    }
    case Type::update: {
      Update u;
      ok = (fields == 4 || fields == 5) && r.uint(u.seq) && read_events(r, u.events) &&
           (fields == 4 || r.uint(u.accepted_through));
      if (ok) out = std::move(u);
      break;
    }
    case Type::worker_events: {
      WorkerEvents w;
      ok = fields == 5 && r.uint(w.worker_id) && r.uint(w.busy_us) && read_events(r, w.events);
      if (ok) out = std::move(w);
      break;
    }
    default:
      return false;
  }
  return ok && r.at_end();
}

}  // namespace zexec::proto::detail

namespace zexec::proto {

std::optional<std::uint64_t> sender_worker_id(std::string_view frame) {
  detail::Reader r(frame);
  std::uint32_t fields = 0;
  std::uint64_t version = 0, type = 0, worker_id = 0;
  if (!r.array(fields) || fields < 3 || !r.uint(version) || version != kVersion || !r.uint(type) ||
      type > 0xff)
    return {};
  switch (static_cast<Type>(type)) {
    case Type::worker_hello:
    case Type::worker_events:
    case Type::worker_revoked:
      break;
    default:
      return {};
  }
  if (!r.uint(worker_id) || worker_id == 0) return {};
  return worker_id;
}

}  // namespace zexec::proto
