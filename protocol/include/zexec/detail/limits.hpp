// The size limits of protocol version 1: the one place they are written down.
//
// Both decoders read them: the general one hands them to msgpack::unpack_limit, the fast path
// (fast_decode.cpp) leaves any frame that reaches one to the general decoder, so both refuse
// the same frames. docs/PROTOCOL.md §1 states them for other implementations, and the Python
// decoder (client-lib/python/zexec/protocol.py, _UNPACK_LIMITS) copies them.
#pragma once

#include <cstdint>

namespace zexec::proto {

// Largest frame any zexec socket accepts (ZMQ_MAXMSGSIZE); bigger ones never reach decode().
inline constexpr std::int64_t kMaxMessageBytes = 64LL << 20;

namespace limits {
// They keep a small hostile frame from asking for huge allocations or deep recursion.
inline constexpr std::uint32_t kMaxArray = 1u << 20;  // elements of one array
inline constexpr std::uint32_t kMaxMap = 64;          // entries of one map (task options: 4)
inline constexpr std::uint32_t kMaxStr = 1u << 20;    // bytes of one str
inline constexpr std::uint64_t kMaxBin = static_cast<std::uint64_t>(kMaxMessageBytes);  // one bin
// Nesting of the whole frame; the deepest message (update: envelope, events, event) uses 3, so
// this is what is left for anything else, and why `args` is opaque bytes, not nested msgpack.
inline constexpr std::uint32_t kMaxDepth = 16;
}  // namespace limits

}  // namespace zexec::proto
