#!/usr/bin/env bash
# Builds the protocol decoder's libFuzzer target with clang and runs it for a while.
#   tests/fuzz/run_fuzz.sh [SECONDS]      (make test runs it for 15 s; by hand, as long as you like)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${1:-15}
if ! command -v clang++ >/dev/null; then
  echo "clang++ not found (apt-get install clang): protocol fuzzing skipped"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -DMSGPACK_NO_BOOST -I"$root/protocol/include" \
  "$here/protocol_fuzz.cpp" "$root"/protocol/src/*.cpp -o "$work/protocol_fuzz"
mkdir -p "$work/corpus"
cp "$here"/corpus/*.bin "$work/corpus/"
"$work/protocol_fuzz" -max_total_time="$seconds" -rss_limit_mb=1024 -print_final_stats=1 "$work/corpus" \
  >"$work/log" 2>&1 || { tail -40 "$work/log"; exit 1; }
grep -E "^(Done|stat::number_of_executed_units)" "$work/log"
