#!/usr/bin/env bash
# Builds the protocol decoder's libFuzzer target with clang and runs it for a while.
#   tests/fuzz/run_fuzz.sh [SECONDS]      (make test runs it for 15 s; by hand, as long as you like)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${1:-15}
# Exit status 77 is "skipped" (SKIP_RETURN_CODE in tests/CMakeLists.txt): a machine without the
# tools says so in ctest's summary instead of passing a test that ran nothing. `make test`
# installs both (clang and libclang-rt-14-dev are in the Makefile's APT_PACKAGES). Anything after
# these checks -- a compile error, a crash or leak the fuzzer finds -- exits 1 and fails.
skip=77
cxx=${ZEXEC_FUZZ_CXX:-clang++}
if ! command -v "$cxx" >/dev/null; then
  echo "SKIPPED: $cxx not found (apt-get install clang): protocol fuzzing not run"
  exit $skip
fi
# libFuzzer's runtime is a separate package (libclang-rt-N-dev), which must match this clang's
# version: without it the link fails with a message that reads like a code error.
runtime_dir=$("$cxx" --print-runtime-dir 2>/dev/null || true)
if [ ! -f "$runtime_dir/libclang_rt.fuzzer-$(uname -m).a" ]; then
  echo "SKIPPED: libFuzzer runtime of $("$cxx" --version | head -1) not found in '$runtime_dir'" \
       "(apt-get install libclang-rt-$("$cxx" -dumpversion | cut -d. -f1)-dev): protocol fuzzing not run"
  exit $skip
fi
echo "fuzzing with $(command -v "$cxx") ($("$cxx" --version | head -1)), runtime $runtime_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$cxx" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -DMSGPACK_NO_BOOST \
  -I"$root/protocol/include" "$here/protocol_fuzz.cpp" "$root"/protocol/src/*.cpp -o "$work/protocol_fuzz"
mkdir -p "$work/corpus"
cp "$here"/corpus/*.bin "$work/corpus/"
"$work/protocol_fuzz" -max_total_time="$seconds" -rss_limit_mb=1024 -print_final_stats=1 "$work/corpus" \
  >"$work/log" 2>&1 || { tail -40 "$work/log"; exit 1; }
grep -E "^(Done|stat::number_of_executed_units)" "$work/log"
