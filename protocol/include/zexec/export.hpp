// ZEXEC_API marks what the shared libzexec.so and libzexec-worker.so export: the public API and
// the few detail functions that the public headers' inline code calls. Everything else is built
// hidden (CXX_VISIBILITY_PRESET in CMake), so the protocol code linked into both libraries stays
// private to each, and the ABI a package promises is only what include/zexec/ declares.
// Exception classes carry it too: one typeinfo per class across the program, so a `catch` in a
// producer matches what the library threw.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define ZEXEC_API __attribute__((visibility("default")))
#else
#define ZEXEC_API
#endif
