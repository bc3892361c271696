"""bench_smoke: `bench/run.sh BUILD --quick` must produce the whole table, a figure in every row.

    /usr/bin/python3 tests/bench_smoke_check.py bench/run.sh BUILD_DIR

The --quick figures mean nothing (tiny counts, one repetition), so none is compared with a
target; what is checked is that every measurement still runs and still reports what its row
reads: the exact set of rows (a renamed or lost row fails), each with a positive median and a
min - max range, the ratio and target columns filled where they belong, and no "failed" note.
run.py itself exits non-zero when a mandatory measurement produced no run at all; this also
catches a run that succeeded but no longer prints the field the table reads (an empty "—" cell).

Gearman and Celery (section 4) are not run with --quick (run.py: peers only without --quick or
with --peers), so their rows must be absent and the note must say why.
"""
import os
import re
import subprocess
import sys

SIZES = ("8 B", "1 KiB", "1 MiB")
ZX_WHAT = ("no-op", "echo 1 KiB", "echo 1 MiB")
COLUMNS = ["§", "measurement", "median", "min – max", "unit", "zexec/raw", "zexec/PPE", "target", "met",
           "notes"]


def expected_rows():
    """The rows in table order, each ((section, label), the optional columns it must fill:
    'raw' (zexec/raw), 'ppe' (zexec/PPE), 'target' (target + met)). A list, not a map: the
    2-worker 1-client run appears twice in section 7, once per series."""
    rows = []
    for tr in ("ipc", "tcp"):
        for size in SIZES:
            for what in ("pipelined round trips", "round trip median", "round trip p99"):
                rows.append((("1", "raw relay %s, %s: %s" % (tr, size, what)), set()))
    for tr in ("ipc", "tcp"):
        for what in ZX_WHAT:
            noop = what == "no-op"
            ppe = {"ppe"} if noop else set()
            # run.py's targets: throughput for ipc no-op, round trip median for no-op.
            tput_target = {"target"} if noop and tr == "ipc" else set()
            rtt_target = {"target"} if noop else set()
            rows.append((("2", "zexec %s, %s: submit + as_completed" % (tr, what)), {"raw"} | ppe | tput_target))
            rows.append((("2", "zexec %s, %s: round trip median" % (tr, what)), {"raw"} | ppe | rtt_target))
            rows.append((("2", "zexec %s, %s: round trip p99" % (tr, what)), {"raw"} | ppe))
    for what in ("submit + as_completed", "submit().result() median", "submit().result() p99"):
        rows.append((("3", "ProcessPoolExecutor, no-op: %s" % what), set()))
    rows.append((("5", "scheduling efficiency: 16 workers × 20 ms sleep, 100 tasks"), {"target"}))
    rows.append((("5", "  achieved wall time (ideal 0.12 s)"), set()))
    rows.append((("6", "daemon memory per queued task (10,000 queued)"), {"target"}))
    rows.append((("6", "  peak (VmHWM) growth per queued task"), set()))
    for w in (1, 2, 4, 8):
        rows.append((("7", "zexec ipc no-op, %d worker%s, 1 client" % (w, "s" if w > 1 else "")), set()))
    for c in (1, 4, 16):
        rows.append((("7", "zexec ipc no-op, 2 workers, %d client%s" % (c, "s" if c > 1 else "")), set()))
    # The journal: its full rows carry the targets (against the in-memory §2 rows).
    for sync in ("full", "normal"):
        target = {"target"} if sync == "full" else set()
        rows.append((("8", "zexec ipc no-op, journal_sync = %s: submit + as_completed" % sync), target))
        rows.append((("8", "zexec ipc no-op, journal_sync = %s: round trip median" % sync), target))
        rows.append((("8", "zexec ipc no-op, journal_sync = %s: round trip p99" % sync), set()))
    rows.append((("8", "the journal's disk: 4 KiB write + fdatasync, median"), set()))
    rows.append((("8", "the journal's disk: 4 KiB write + fdatasync, p99"), set()))
    return rows


NUMBER = re.compile(r"^-?[0-9][0-9,]*(\.[0-9]+)?$")
RATIO = re.compile(r"^[0-9][0-9,]*(\.[0-9]+)?×$")


def number(cell):
    return float(cell.replace(",", "")) if NUMBER.match(cell) else None


def check(table_text):
    """The problems with the table, [] if none."""
    problems = []
    lines = table_text.splitlines()
    header = [i for i, l in enumerate(lines) if l.startswith("| § |")]
    if len(header) != 1:
        return ["expected one table header line, found %d" % len(header)]
    h = header[0]
    cols = [c.strip() for c in lines[h].strip().strip("|").split("|")]
    if cols != COLUMNS:
        problems.append("columns %r, expected %r" % (cols, COLUMNS))
    body = []
    for l in lines[h + 2:]:
        if not l.startswith("|"):
            break
        # run.py writes "| " + " | ".join(cells) + " |"; no cell contains " | ", so the split is
        # exact, and the label keeps its leading spaces (the indented sub-rows).
        cells = l[2:-2].split(" | ") if l.startswith("| ") and l.endswith(" |") else []
        if len(cells) != len(COLUMNS):
            problems.append("malformed row (want %d cells): %s" % (len(COLUMNS), l))
            continue
        cells = [c if i == 1 else c.strip() for i, c in enumerate(cells)]
        body.append(cells)
    want = expected_rows()
    got = [(c[0], c[1]) for c in body]
    if got != [key for key, _ in want]:
        for key in [k for k, _ in want if k not in got]:
            problems.append("missing row: § %s %r" % key)
        for key in [k for k in got if k not in dict(want)]:
            problems.append("unexpected row: § %s %r" % key)
        if not problems:
            problems.append("rows out of order or repeated: %r" % got)
        return problems
    for cells, (key, need) in zip(body, want):
        sec, label, med, rng, unit, r_raw, r_ppe, target, met, notes = cells
        where = "§ %s %r" % key
        v = number(med)
        if v is None or v <= 0:
            problems.append("%s: median %r is not a positive figure (notes: %s)" % (where, med, notes or "-"))
        parts = rng.split(" – ")
        if len(parts) != 2 or any(number(x) is None for x in parts):
            problems.append("%s: min – max %r is not two figures" % (where, rng))
        if not unit:
            problems.append("%s: no unit" % where)
        if "failed" in notes:
            problems.append("%s: %s" % (where, notes))
        for name, cell in (("raw", r_raw), ("ppe", r_ppe)):
            if (name in need) != bool(cell) or (cell and not RATIO.match(cell)):
                problems.append("%s: zexec/%s cell %r (%s)" % (where, name, cell, "expected a ratio" if name in need else "expected none"))
        if "target" in need:
            if not target or met not in ("**met**", "**NOT met**"):
                problems.append("%s: target %r / met %r: expected a target and a verdict" % (where, target, met))
        elif target or met:
            problems.append("%s: unexpected target %r / met %r" % (where, target, met))
    if "Gearman, Celery + Redis: not run (--quick)." not in table_text:
        problems.append("the note saying Gearman and Celery were not run (--quick) is missing")
    return problems


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: bench_smoke_check.py bench/run.sh BUILD_DIR")
    run_sh, build = argv[1], argv[2]
    out = os.path.join(build, "bench-smoke.md")
    if os.path.exists(out):
        os.remove(out)  # a table left by an earlier run must not pass for this one
    p = subprocess.run([run_sh, build, "--quick", "--out", out])
    problems = []
    if p.returncode != 0:
        problems.append("bench/run.sh --quick exited with %d" % p.returncode)
    if not os.path.exists(out):
        problems.append("no table written to %s" % out)
    else:
        with open(out) as f:
            problems += check(f.read())
    for pr in problems:
        print("bench_smoke: FAIL: " + pr, file=sys.stderr)
    if problems:
        return 1
    print("bench_smoke: %d rows, every one with a figure" % len(expected_rows()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
