#!/usr/bin/env bash
# Instructions per task, counted by callgrind (repeatable on a noisy machine, where times are
# not): a no-op throughput run of zexec-bench with the client, zexecd and each zexec-worker
# each under callgrind. bench/RESULTS.md quotes these figures.
#   bench/profile/callgrind.sh BUILD [TASKS]      (BUILD: a Release tree, e.g. build-bench)
# Prints, per process, its instructions divided by TASKS (a worker runs about half of them).
# Of the two zexec-bench lines, the larger is the client (the other is the parent's set-up).
set -euo pipefail
build=$(cd "${1:?usage: callgrind.sh BUILD [TASKS]}" && pwd)
tasks=${2:-50000}
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# zexec-bench starts the zexecd beside it, which starts the zexec-worker beside itself: wrap both.
mkdir -p "$work/bin" "$work/daemon" "$work/worker" "$work/out"
cp "$build/bin/zexec-bench" "$work/bin/"
cp "$build/bin/zexecd" "$work/daemon/"
cp "$build/bin/zexec-worker" "$work/worker/"
printf '#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file=%s/out/zexecd.%%p %s/daemon/zexecd "$@"\n' \
  "$work" "$work" >"$work/bin/zexecd"
printf '#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file=%s/out/zexec-worker.%%p %s/worker/zexec-worker "$@"\n' \
  "$work" "$work" >"$work/daemon/zexec-worker"
chmod +x "$work/bin/zexecd" "$work/daemon/zexec-worker"
valgrind -q --tool=callgrind --callgrind-out-file="$work/out/zexec-bench.%p" \
  "$work/bin/zexec-bench" throughput --transport ipc --workers 2 --tasks "$tasks" --warmup 1000 >/dev/null
sleep 1  # the daemon's and workers' profiles are written as they exit
for f in "$work"/out/*; do
  ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  [ -n "$ir" ] || continue
  printf '%-22s %12s instructions, %6d per task\n' "$(basename "$f")" "$ir" $((ir / tasks))
done
