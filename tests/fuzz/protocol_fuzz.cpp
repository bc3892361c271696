// libFuzzer target for the protocol decoder: whatever bytes arrive, decode() returns a message
// or a reason and never crashes, hangs or leaks; whatever it accepts re-encodes and decodes to
// the same bytes; and it gives the same answer as the general decoder alone (the fast path for
// task and result batches never accepts what the general one refuses, nor decodes otherwise).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "zexec/protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view frame(reinterpret_cast<const char*>(data), size);
  zexec::proto::Decoded d = zexec::proto::decode(frame);
  zexec::proto::Decoded g = zexec::proto::detail::decode_generic(frame);
  if (!d != !g || d.error != g.error) std::abort();
  if (d && zexec::proto::encode(*d.message) != zexec::proto::encode(*g.message)) std::abort();
  if (!d) {
    if (d.error.empty()) std::abort();  // a refusal always says why
    return 0;
  }
  std::string again = zexec::proto::encode(*d.message);
  zexec::proto::Decoded d2 = zexec::proto::decode(again);
  if (!d2 || zexec::proto::encode(*d2.message) != again) std::abort();
  return 0;
}
