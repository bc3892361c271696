"""zexec benchmark driver: runs every measurement of `make bench` and prints one Markdown table.

    /usr/bin/python3 bench/run.py --build BUILD_DIR [--quick] [--reps N] [--out FILE] [--no-peers]

(bench/run.sh is the entry point; it checks the Debian packages first.)

Everything is measured on this machine in this run, and every figure is the median of several
repetitions with their min-max. The repetitions are interleaved: round 1 runs every measurement
once, round 2 again, and so on, so a burst of load from something else on the machine spreads
over all of them instead of falling on one; the ratios (zexec/raw, zexec/PPE) are ratios of
those medians. Each repetition starts fresh processes (broker or daemon, workers, clients).

--quick is a smoke run (tiny counts, one repetition, no Gearman/Celery) that checks that every
part of the harness works; its figures mean nothing. Targets are reported, never enforced: the
exit status is non-zero only when a mandatory measurement could not be made.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"

KIB, MIB = 1024, 1024 * 1024


def sizes_label(size):
    return {0: "no-op", 8: "8 B", KIB: "1 KiB", MIB: "1 MiB"}.get(size, "%d B" % size)


class Measurement:
    """One command, run `reps` times; each run prints one JSON line."""

    def __init__(self, key, cmd, reps, optional=False, timeout=300):
        self.key, self.cmd, self.reps, self.optional, self.timeout = key, cmd, reps, optional, timeout
        self.runs = []     # parsed JSON of each successful run
        self.errors = []   # why runs failed

    def run_once(self):
        t0 = time.time()
        try:
            p = subprocess.run(self.cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.errors.append("timed out after %d s" % self.timeout)
            return
        except OSError as e:
            self.errors.append(str(e))
            return
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        if p.returncode != 0 or not lines:
            tail = (p.stderr.strip().splitlines() or ["exit status %d" % p.returncode])[-1]
            self.errors.append(tail)
            return
        r = json.loads(lines[-1])
        r["_wall"] = time.time() - t0
        self.runs.append(r)

    def values(self, field):
        return [r[field] for r in self.runs if field in r]


def median_min_max(values):
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt(v, unit):
    if v is None:
        return "—"
    if unit in ("tasks/s", "round trips/s"):
        return "{:,.0f}".format(v) if v >= 100 else "{:,.1f}".format(v)
    if unit == "µs":
        return "{:,.0f}".format(v) if v >= 100 else "{:.1f}".format(v)
    if unit == "%":
        return "{:.1f}".format(v)
    if unit == "bytes":
        return "{:.0f}".format(v)
    if unit == "s":
        return "{:.3f}".format(v)
    return "{:.3g}".format(v)


def fmt_ratio(r):
    if r is None:
        return ""
    if r >= 10:
        return "{:.0f}×".format(r)
    return "{:.2f}×".format(r)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def machine():
    model = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return {
        "nproc": sh("nproc"),
        "cpu": model,
        "lscpu": sh("lscpu | head -n 15"),
        "kernel": platform.release(),
        "os": sh(". /etc/os-release && echo \"$PRETTY_NAME\""),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "mem": sh("free -g | awk '/^Mem:/ {print $2 \" GiB\"}'"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="build tree holding bin/zexecd, bin/zexec-bench, ...")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny counts, one repetition")
    ap.add_argument("--reps", type=int, default=0, help="repetitions (default 7, 3 for §4-6; --quick: 1)")
    ap.add_argument("--out", default="", help="also write the table here (default BUILD/bench-results.md)")
    ap.add_argument("--no-peers", action="store_true", help="skip Gearman and Celery")
    ap.add_argument("--peers", action="store_true", help="run Gearman and Celery even with --quick")
    a = ap.parse_args()

    bindir = os.path.join(os.path.abspath(a.build), "bin")
    need = ["zexecd", "zexec-worker", "zexec-bench", "zexec-raw-relay"]
    missing = [b for b in need if not os.access(os.path.join(bindir, b), os.X_OK)]
    if missing:
        sys.exit("bench: %s missing in %s (build with ZEXEC_BUILD_EXAMPLES=ON)" % (", ".join(missing), bindir))
    out_path = a.out or os.path.join(os.path.abspath(a.build), "bench-results.md")
    q = a.quick
    reps = a.reps or (1 if q else 7)
    few = a.reps or (1 if q else 3)  # for the slow, steady ones
    peers = (not q or a.peers) and not a.no_peers

    def b(name):
        return os.path.join(bindir, name)

    # ---- what to run ------------------------------------------------------------------------
    M = {}
    order = []

    def add(key, cmd, n, **kw):
        M[key] = Measurement(key, cmd, n, **kw)
        order.append(key)

    # The raw relay's window: 10,000 in flight, where it stops getting faster on this machine
    # (zexec's own window is its per-client limit, 100,000 by default).
    raw_count = {0: 20000 if q else 1000000, KIB: 5000 if q else 300000, MIB: 20 if q else 1000}
    raw_window = {0: 10000, KIB: 10000, MIB: 16}
    raw_lat = {0: 200 if q else 5000, KIB: 200 if q else 3000, MIB: 10 if q else 200}
    zx_tasks = {0: 5000 if q else 500000, KIB: 2000 if q else 100000, MIB: 10 if q else 300}
    zx_lat = {0: 200 if q else 3000, KIB: 200 if q else 2000, MIB: 10 if q else 200}
    zx_warm = {0: 500 if q else 20000, KIB: 200 if q else 5000, MIB: 2 if q else 20}
    for tr in ("ipc", "tcp"):
        for size in (0, KIB, MIB):
            rsize = max(size, 8)
            add("raw_%s_%d" % (tr, size),
                [b("zexec-raw-relay"), "--transport", tr, "--size", str(rsize), "--count", str(raw_count[size]),
                 "--window", str(raw_window[size]), "--latency", str(raw_lat[size]),
                 "--warmup", str(max(raw_count[size] // 10, 10))], reps)
            add("zx_tput_%s_%d" % (tr, size),
                [b("zexec-bench"), "throughput", "--transport", tr, "--workers", "2", "--tasks",
                 str(zx_tasks[size]), "--payload", str(size), "--warmup", str(zx_warm[size])], reps)
            add("zx_lat_%s_%d" % (tr, size),
                [b("zexec-bench"), "latency", "--transport", tr, "--workers", "2", "--count", str(zx_lat[size]),
                 "--payload", str(size)], reps)
        if tr == "ipc":
            add("ppe", [PY, os.path.join(HERE, "ppe_bench.py"), "--workers", "2",
                        "--tasks", str(500 if q else 20000), "--latency", str(100 if q else 2000),
                        "--warmup", str(50 if q else 1000)], reps)
    scale_tasks = str(3000 if q else 300000)
    for w in (1, 2, 4, 8):
        add("scale_w%d" % w, [b("zexec-bench"), "throughput", "--workers", str(w), "--clients", "1",
                              "--tasks", scale_tasks, "--warmup", str(500 if q else 10000)], reps)
    for c in (4, 16):
        add("scale_c%d" % c, [b("zexec-bench"), "throughput", "--workers", "2", "--clients", str(c),
                              "--tasks", scale_tasks, "--warmup", str(500 if q else 10000)], reps)
    # The journal (zexecd --journal), beside the in-memory no-op rows of the same rounds.
    for sync in ("full", "normal"):
        add("zx_tput_journal_%s" % sync, [b("zexec-bench"), "throughput", "--transport", "ipc", "--workers", "2",
                                          "--tasks", str(zx_tasks[0]), "--warmup", str(zx_warm[0]),
                                          "--journal", sync], reps)
        add("zx_lat_journal_%s" % sync, [b("zexec-bench"), "latency", "--transport", "ipc", "--workers", "2",
                                         "--count", str(zx_lat[0]), "--journal", sync], reps)
    add("fsync", [b("zexec-bench"), "fsync", "--count", str(50 if q else 500)], reps)
    add("sched", [b("zexec-bench"), "sched", "--workers", "16", "--tasks", str(100 if q else 2000),
                  "--sleep", "0.02"], few)
    add("memory", [b("zexec-bench"), "memory", "--tasks", str(10000 if q else 1000000)], few)

    notes = []
    if peers:
        gearmand = shutil.which("gearmand") or ("/usr/sbin/gearmand" if os.access("/usr/sbin/gearmand", os.X_OK) else None)
        if not gearmand:
            notes.append("Gearman: skipped, gearmand is not installed (Debian: gearman-job-server).")
        elif not os.access(b("zexec-gearman-bench"), os.X_OK):
            notes.append("Gearman: skipped, zexec-gearman-bench was not built (Debian: libgearman-dev, then re-run cmake).")
        else:
            add("gearman", [b("zexec-gearman-bench"), "--gearmand", gearmand, "--workers", "2",
                            "--tasks", str(2000 if q else 20000), "--latency", str(200 if q else 2000),
                            "--warmup", str(200 if q else 2000)], few, optional=True, timeout=120)
        redis = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)
        have_celery = subprocess.run([PY, "-c", "import celery, redis"], capture_output=True).returncode == 0
        if not redis or not have_celery:
            notes.append("Celery + Redis: skipped, %s not installed (Debian: redis-server, python3-celery, python3-redis)."
                         % " and ".join(x for x, ok in (("redis-server", redis), ("python3-celery/python3-redis", have_celery)) if not ok))
        else:
            add("celery", [PY, os.path.join(HERE, "celery_bench.py"), "--redis-server", redis, "--workers", "2",
                           "--tasks", str(200 if q else 2000), "--latency", str(30 if q else 300),
                           "--warmup", str(20 if q else 200)], few, optional=True, timeout=180)
    else:
        notes.append("Gearman, Celery + Redis: not run (%s)." % ("--quick" if q else "--no-peers"))

    # ---- run ----------------------------------------------------------------------------------
    info = machine()
    load_before = os.getloadavg()
    t_start = time.time()
    rounds = max(m.reps for m in M.values())
    for i in range(rounds):
        for key in order:
            m = M[key]
            if i < m.reps:
                print("bench: round %d/%d: %s" % (i + 1, rounds, key), file=sys.stderr, flush=True)
                m.run_once()
                if m.errors and not m.runs and m.optional and i == 0:
                    m.reps = 0  # a peer that failed once is not retried
    elapsed = time.time() - t_start
    load_after = os.getloadavg()

    # ---- the table ----------------------------------------------------------------------------
    rows = []

    def stat(key, field, scale=1.0):
        m = M.get(key)
        if not m:
            return None
        r = median_min_max([v * scale for v in m.values(field)])
        return r

    def row(section, label, key, field, unit, scale=1.0, raw=None, ppe=None, target=None, note=""):
        """raw/ppe: (key, field) of the figure this one is divided by; target: (text, predicate on
        the ratio or the value)."""
        s = stat(key, field, scale)
        med = s[0] if s else None
        r_raw = r_ppe = None
        if s and raw:
            d = stat(raw[0], raw[1], scale)
            r_raw = med / d[0] if d and d[0] else None
        if s and ppe:
            d = stat(ppe[0], ppe[1], scale)
            r_ppe = med / d[0] if d and d[0] else None
        met = ""
        if target:
            text, check = target
            ok = check(med, r_raw, r_ppe) if s else None
            met = "—" if ok is None else ("**met**" if ok else "**NOT met**")
            # How far the ratio moves between rounds (each zexec run against the run of the same
            # round): shows whether a target is met by a margin or by the noise.
            for other, name in ((raw, "raw"), (ppe, "PPE")):
                if not other or other[0] not in M:
                    continue
                mine, theirs = M[key].values(field), M[other[0]].values(other[1])
                if len(mine) == len(theirs) > 1:
                    rs = [x / y for x, y in zip(mine, theirs) if y]
                    note = (note + "; " if note else "") + "zexec/%s by round %s – %s" % (
                        name, fmt_ratio(min(rs)), fmt_ratio(max(rs)))
        else:
            text = ""
        m = M.get(key)
        if m and m.errors and not m.runs:
            note = (note + "; " if note else "") + "failed: " + m.errors[-1][:120]
        elif m and m.errors:
            note = (note + "; " if note else "") + "%d of %d runs failed: %s" % (
                len(m.errors), len(m.errors) + len(m.runs), m.errors[-1][:80])
        rows.append([section, label, fmt(med, unit), "%s – %s" % (fmt(s[1], unit), fmt(s[2], unit)) if s else "—",
                     unit, fmt_ratio(r_raw), fmt_ratio(r_ppe), text, met, note, len(m.runs) if m else 0])

    tput_unit = "tasks/s"
    for tr in ("ipc", "tcp"):
        for size in (0, KIB, MIB):
            rk = "raw_%s_%d" % (tr, size)
            row("1", "raw relay %s, %s: pipelined round trips" % (tr, sizes_label(max(size, 8))), rk,
                "round_trips_per_s", "round trips/s", note="window %d" % raw_window[size])
            row("1", "raw relay %s, %s: round trip median" % (tr, sizes_label(max(size, 8))), rk, "rtt_median_us", "µs")
            row("1", "raw relay %s, %s: round trip p99" % (tr, sizes_label(max(size, 8))), rk, "rtt_p99_us", "µs")
    for tr in ("ipc", "tcp"):
        for size in (0, KIB, MIB):
            tk, lk, rk = "zx_tput_%s_%d" % (tr, size), "zx_lat_%s_%d" % (tr, size), "raw_%s_%d" % (tr, size)
            what = "no-op" if size == 0 else "echo %s" % sizes_label(size)
            tgt = None
            if size == 0 and tr == "ipc":
                tgt = ("≥ 0.5× raw, ≥ 50× PPE",
                       lambda v, rr, rp: None if rr is None or rp is None else rr >= 0.5 and rp >= 50)
            row("2", "zexec %s, %s: submit + as_completed" % (tr, what), tk, "tasks_per_s", tput_unit,
                raw=(rk, "round_trips_per_s"), ppe=("ppe", "tasks_per_s") if size == 0 else None, target=tgt,
                note="1 client, 2 workers")
            tgt = None
            if size == 0:
                tgt = ("≤ 1.25× raw", lambda v, rr, rp: None if rr is None else rr <= 1.25)
            row("2", "zexec %s, %s: round trip median" % (tr, what), lk, "rtt_median_us", "µs",
                raw=(rk, "rtt_median_us"), ppe=("ppe", "rtt_median_us") if size == 0 else None, target=tgt,
                note="submit().result(), one at a time")
            row("2", "zexec %s, %s: round trip p99" % (tr, what), lk, "rtt_p99_us", "µs",
                raw=(rk, "rtt_p99_us"), ppe=("ppe", "rtt_p99_us") if size == 0 else None)
    row("3", "ProcessPoolExecutor, no-op: submit + as_completed", "ppe", "tasks_per_s", tput_unit,
        note="/usr/bin/python3 %s, 2 workers" % platform.python_version())
    row("3", "ProcessPoolExecutor, no-op: submit().result() median", "ppe", "rtt_median_us", "µs")
    row("3", "ProcessPoolExecutor, no-op: submit().result() p99", "ppe", "rtt_p99_us", "µs")
    zx = stat("zx_tput_ipc_0", "tasks_per_s")
    zl = stat("zx_lat_ipc_0", "rtt_median_us")
    for key, name in (("gearman", "Gearman (gearmand + libgearman)"), ("celery", "Celery + Redis")):
        if key not in M:
            continue
        g = stat(key, "tasks_per_s")
        gl = stat(key, "rtt_median_us")
        row("4", "%s, no-op: submit + as_completed" % name, key, "tasks_per_s", tput_unit,
            note=("zexec ipc does %s of this" % fmt_ratio(zx[0] / g[0])) if g and zx else "")
        row("4", "%s, no-op: round trip median" % name, key, "rtt_median_us", "µs",
            note=("zexec ipc takes %s of this" % fmt_ratio(zl[0] / gl[0])) if gl and zl else "")
        row("4", "%s, no-op: round trip p99" % name, key, "rtt_p99_us", "µs")
    row("5", "scheduling efficiency: 16 workers × 20 ms sleep, %s tasks" % ("100" if q else "2,000"), "sched",
        "efficiency", "%", scale=100.0, target=("≥ 95 %", lambda v, rr, rp: v >= 95),
        note="ideal / achieved wall time")
    row("5", "  achieved wall time (ideal %.2f s)" % ((100 if q else 2000) * 0.02 / 16), "sched", "seconds", "s")
    row("6", "daemon memory per queued task (%s queued)" % ("10,000" if q else "1,000,000"), "memory",
        "bytes_per_task", "bytes", target=("≤ 150 bytes", lambda v, rr, rp: v <= 150),
        note="RSS growth while queued")
    row("6", "  peak (VmHWM) growth per queued task", "memory", "peak_bytes_per_task", "bytes")
    for w in (1, 2, 4, 8):
        row("7", "zexec ipc no-op, %d worker%s, 1 client" % (w, "s" if w > 1 else ""), "scale_w%d" % w,
            "tasks_per_s", tput_unit)
    for c in (1, 4, 16):
        key = "scale_w2" if c == 1 else "scale_c%d" % c
        row("7", "zexec ipc no-op, 2 workers, %d client%s" % (c, "s" if c > 1 else ""), key, "tasks_per_s",
            tput_unit, note="clients are processes" if c > 1 else "the 2-worker run above")
    mem_t = stat("zx_tput_ipc_0", "tasks_per_s")
    mem_l = stat("zx_lat_ipc_0", "rtt_median_us")
    sync_l = stat("fsync", "fsync_median_us")
    for sync in ("full", "normal"):
        t = stat("zx_tput_journal_%s" % sync, "tasks_per_s")
        ratio = t[0] / mem_t[0] if t and mem_t and mem_t[0] else None
        row("8", "zexec ipc no-op, journal_sync = %s: submit + as_completed" % sync, "zx_tput_journal_%s" % sync,
            "tasks_per_s", tput_unit,
            target=("≥ 0.7× in memory", lambda v, rr, rp, ratio=ratio: None if ratio is None else ratio >= 0.7)
            if sync == "full" else None,
            note=("%s of in memory (§2, same rounds)" % fmt_ratio(ratio)) if ratio else "")
        l = stat("zx_lat_journal_%s" % sync, "rtt_median_us")
        extra = l[0] - mem_l[0] if l and mem_l else None
        row("8", "zexec ipc no-op, journal_sync = %s: round trip median" % sync, "zx_lat_journal_%s" % sync,
            "rtt_median_us", "µs",
            target=("≤ in memory + one fsync",
                    lambda v, rr, rp, extra=extra: None if extra is None or not sync_l else extra <= sync_l[0])
            if sync == "full" else None,
            note=("in memory + %.0f µs" % extra) if extra is not None else "")
        row("8", "zexec ipc no-op, journal_sync = %s: round trip p99" % sync, "zx_lat_journal_%s" % sync,
            "rtt_p99_us", "µs")
    row("8", "the journal's disk: 4 KiB write + fdatasync, median", "fsync", "fsync_median_us", "µs",
        note="in $ZEXEC_BENCH_JOURNAL_DIR, default /var/tmp")
    row("8", "the journal's disk: 4 KiB write + fdatasync, p99", "fsync", "fsync_p99_us", "µs")

    # ---- print and write ----------------------------------------------------------------------
    cmd = " ".join(["bench/run.sh", a.build] + (["--quick"] if q else []) + (["--reps", str(a.reps)] if a.reps else [])
                   + (["--no-peers"] if a.no_peers else []) + (["--peers"] if a.peers else []))
    lines = []
    lines.append("Measured %s on %s (%s CPUs: %s; %s; kernel %s; %s RAM), %d repetitions (%d for §4-6), "
                 "%.0f s in all; load average %.2f before, %.2f after."
                 % (info["date"], platform.node(), info["nproc"], info["cpu"], info["os"], info["kernel"],
                    info["mem"], reps, few, elapsed, load_before[0], load_after[0]))
    if q:
        lines.append("")
        lines.append("**--quick smoke run: tiny counts, one repetition; the figures mean nothing.**")
    lines.append("")
    lines.append("| § | measurement | median | min – max | unit | zexec/raw | zexec/PPE | target | met | notes |")
    lines.append("|---|---|--:|--:|---|--:|--:|---|---|---|")
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in r[:10]) + " |")
    lines.append("")
    lines.append("Ratios are ratios of medians (the notes of the target rows show the range of the ratio "
                 "between each zexec run and the other run of the same round). For throughput higher is better (zexec/raw 0.5× = half the "
                 "relay's rate); for round trips lower is better (zexec/raw 1.25× = 25 % slower than the relay). "
                 "The raw relay is bench/raw_relay.cpp (client → broker → worker → broker → client, "
                 "PUSH/PULL, separate processes, single-threaded POLLOUT-gated broker, 2 echo workers); "
                 "its payload rows compare with zexec's `echo` rows of the same size (payload both ways). "
                 "zexec rows: a fresh zexecd with stock `zexec-worker`s per repetition, the C++ client; "
                 "throughput counts from the first submit to the last completion taken from as_completed().")
    for n in notes:
        lines.append("")
        lines.append(n)
    failed_mandatory = [k for k, m in M.items() if not m.optional and not m.runs]
    failed_optional = [k for k, m in M.items() if m.optional and not m.runs]
    for k in failed_optional:
        lines.append("")
        lines.append("%s: skipped, it failed: %s" % (k, M[k].errors[-1] if M[k].errors else "?"))
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    try:
        with open(out_path, "w") as f:
            f.write("# zexec benchmark\n\n`%s`\n\n" % cmd)
            f.write("```\n%s\n```\n\n" % info["lscpu"])
            f.write(text)
        print("bench: table written to %s" % out_path, file=sys.stderr)
    except OSError as e:
        print("bench: cannot write %s: %s" % (out_path, e), file=sys.stderr)
    if failed_mandatory:
        print("bench: FAILED: %s" % ", ".join(failed_mandatory), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
