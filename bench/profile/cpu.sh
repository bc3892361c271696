#!/usr/bin/env bash
# CPU time per task of each process kind in a no-op throughput run, sampled with perf over the
# whole machine: on 2 cores, throughput is total CPU per task, so this shows who spends it.
#   bench/profile/cpu.sh BUILD [TASKS]
set -euo pipefail
build=$(cd "${1:?usage: cpu.sh BUILD [TASKS]}" && pwd)
tasks=${2:-1000000}
command -v perf >/dev/null || { echo "perf not installed (apt-get install linux-perf)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
perf record -q -a -F 4000 -o "$work/perf.data" -- \
  "$build/bin/zexec-bench" throughput --transport ipc --workers 2 --tasks "$tasks" 2>/dev/null
perf report -i "$work/perf.data" --sort comm --stdio -F sample,comm 2>/dev/null |
  awk -v n="$tasks" '!/^#/ && NF >= 2 && $1 > 0 {printf "%-16s %6.3f us/task\n", $2, $1 / 4000 / n * 1e6}'
