"""concurrent.futures.ProcessPoolExecutor doing zexec's no-op work: the tool zexec replaces.

    /usr/bin/python3 bench/ppe_bench.py [--workers 2] [--tasks 20000] [--latency 2000]

throughput: submit() x tasks, then as_completed(); latency: sequential submit().result().
Prints one JSON line (same keys as zexec-bench).
"""
import argparse
import concurrent.futures as cf
import json
import time


def noop():
    return None


def percentile(values, p):
    v = sorted(values)
    rank = min(max(int(p / 100.0 * len(v) + 0.5), 1), len(v))
    return v[rank - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--latency", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=1000)
    a = ap.parse_args()
    with cf.ProcessPoolExecutor(max_workers=a.workers) as ex:
        for f in cf.as_completed([ex.submit(noop) for _ in range(max(a.warmup, a.workers))]):
            f.result()  # every worker process started
        t0 = time.perf_counter()
        futures = [ex.submit(noop) for _ in range(a.tasks)]
        for f in cf.as_completed(futures):
            f.result()
        seconds = time.perf_counter() - t0
        rtts = []
        for i in range(a.latency + a.latency // 10):
            t = time.perf_counter()
            ex.submit(noop).result()
            if i >= a.latency // 10:
                rtts.append((time.perf_counter() - t) * 1e6)
    print(json.dumps({"workers": a.workers, "tasks": a.tasks, "seconds": seconds,
                      "tasks_per_s": a.tasks / seconds, "rtt_median_us": percentile(rtts, 50),
                      "rtt_p99_us": percentile(rtts, 99)}), flush=True)


if __name__ == "__main__":
    main()
