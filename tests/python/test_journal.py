"""zexecd --journal, seen from the wire (PROTOCOL.md section 3, Sessions and Acceptance): a
real daemon killed with SIGKILL and started again on the same journal, and a raw client that
resumes its session. (The stock clients' reconnecting is tested in their own suites.)"""

import os
import shutil
import stat
import subprocess
import tempfile
import time

import msgpack
import pytest
import zmq

from conftest import daemon_path, wait_for
from zexec import protocol as p

STARTED, OK, FAILED = p.STARTED, p.OK, p.FAILED


@pytest.fixture
def place():
    """A short folder for the endpoint and the journal, shared by the daemons of one test."""
    d = tempfile.mkdtemp(prefix="zxj-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def status_of(endpoint):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.connect(endpoint)
    s.send(p.encode(p.Status()))
    assert s.poll(5000), "no status reply"
    reply = p.decode(s.recv())
    s.close()
    return msgpack.unpackb(reply.body, raw=False)


class Raw:
    """A client speaking the protocol by hand: hello (maybe resuming), submit, read, ack."""

    def __init__(self, endpoint, session=0, token=b""):
        self.ctx = zmq.Context.instance()
        self.endpoint = endpoint
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.linger = 0
        self.dealer.connect(endpoint)
        self.dealer.send(p.encode(p.Hello("raw", os.getpid(), session, token)))
        assert self.dealer.poll(10000), "no welcome"
        self.welcome = p.decode(self.dealer.recv())
        assert isinstance(self.welcome, p.Welcome), self.welcome
        self.results = self.ctx.socket(zmq.PULL)
        self.results.linger = 0
        self.results.connect(self.welcome.results_endpoint)
        self.accepted = 0
        self.final = {}  # task id -> list of final events (more than one: delivered again)
        self.started = set()

    def submit(self, tasks):
        self.dealer.send(p.encode(p.Submit(tasks)))

    def read(self, timeout=0.2, ack=True):
        if not self.results.poll(int(timeout * 1000)):
            return False
        u = p.decode(self.results.recv())
        self.accepted = max(self.accepted, u.accepted_through)
        for e in u.events:
            if e.kind == STARTED:
                self.started.add(e.task_id)
            else:
                self.final.setdefault(e.task_id, []).append(e)
        if ack:
            self.dealer.send(p.encode(p.Ack(u.seq)))
        return True

    def read_until(self, predicate, timeout=20.0, ack=True, what="condition"):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.read(ack=ack)

    def status(self):
        return status_of(self.endpoint)

    def close(self, bye=False):
        if bye:
            self.dealer.send(p.encode(p.Bye()))
        self.results.close()
        self.dealer.close()


def committed(endpoint):
    """Waits until the daemon has nothing waiting for its next group commit (which comes within
    a few ms): what it did so far is on disk, so a SIGKILL now loses none of it."""
    wait_for(lambda: not status_of(endpoint)["journal"]["uncommitted"], timeout=10, what="the group commit")


def sleep_args(seconds):
    return msgpack.packb([seconds])


def start(start_daemon, place, *flags, workers=2):
    return start_daemon("--journal", os.path.join(place, "journal"), *flags, workers=workers,
                        endpoint=f"ipc://{place}/d.sock")


def test_welcome_names_a_session_only_with_a_journal(start_daemon, place):
    plain = start_daemon(workers=1)
    c = Raw(plain.endpoint, session=77, token=b"x" * 16)  # asking to resume what it cannot know
    assert (c.welcome.session, c.welcome.token, c.welcome.resumed) == (0, b"", False)
    c.close(bye=True)
    d = start(start_daemon, place, workers=1)
    c = Raw(d.endpoint)
    assert c.welcome.session != 0 and len(c.welcome.token) == 16 and not c.welcome.resumed
    # A wrong token is a new session, never someone else's.
    other = Raw(d.endpoint, c.welcome.session, b"y" * 16)
    assert not other.welcome.resumed and other.welcome.session != c.welcome.session
    other.close(bye=True)
    c.close(bye=True)


def test_accepted_tasks_survive_sigkill_and_the_session_resumes(start_daemon, place):
    d = start(start_daemon, place, workers=2)
    c = Raw(d.endpoint)
    n = 40
    c.submit([p.Task(i, "sleep", sleep_args(0.02)) for i in range(1, n + 1)])
    c.read_until(lambda: c.accepted >= n, what="accepted_through")
    c.read_until(lambda: len(c.final) >= 3, what="a few results")
    d.kill()
    c.close()
    d2 = start(start_daemon, place, workers=2)
    r = Raw(d2.endpoint, c.welcome.session, c.welcome.token)
    assert r.welcome.resumed and r.welcome.session == c.welcome.session
    r.final = dict(c.final)
    r.read_until(lambda: len(r.final) == n, what="every result after the restart")
    assert all(e[0].kind == OK for e in r.final.values())
    assert all(msgpack.unpackb(e[0].value) == 0.02 for e in r.final.values())
    assert r.accepted == n  # the replayed session knows how far it had accepted
    r.close(bye=True)


def test_a_resend_after_resuming_runs_nothing_twice(start_daemon, place):
    d = start(start_daemon, place, workers=1)
    c = Raw(d.endpoint)
    c.submit([p.Task(i, "echo", msgpack.packb([i])) for i in range(1, 6)])
    c.read_until(lambda: len(c.final) == 5 and c.accepted == 5, what="five results")
    c.close()  # gone without bye: the session waits
    r = Raw(d.endpoint, c.welcome.session, c.welcome.token)
    assert r.welcome.resumed
    # The client did not see its acceptance (say): it sends 1..5 again, then 6.
    r.submit([p.Task(i, "echo", msgpack.packb([i])) for i in range(1, 7)])
    r.read_until(lambda: 6 in r.final, what="task 6")
    r.read(timeout=0.3)
    assert set(r.final) == {6}, "tasks 1..5 ran again"
    assert r.status()["totals"]["submitted"] == 6
    r.close(bye=True)


def test_a_cancelled_task_stays_cancelled_across_a_restart(start_daemon, place):
    d = start(start_daemon, place, workers=1)
    c = Raw(d.endpoint)
    c.submit([p.Task(1, "sleep", sleep_args(0.5))] + [p.Task(i, "echo", msgpack.packb([i])) for i in (2, 3)])
    c.read_until(lambda: 1 in c.started, what="task 1 running")
    c.dealer.send(p.encode(p.Cancel(9, [3], False)))
    assert c.dealer.poll(5000)
    reply = p.decode(c.dealer.recv())
    while not isinstance(reply, p.CancelReply):
        assert c.dealer.poll(5000)
        reply = p.decode(c.dealer.recv())
    assert reply.outcomes == [(3, p.OUTCOME_CANCELLED)]
    d.kill()
    c.close()
    d2 = start(start_daemon, place, workers=1)
    r = Raw(d2.endpoint, c.welcome.session, c.welcome.token)
    assert r.welcome.resumed
    r.read_until(lambda: {1, 2} <= set(r.final), what="tasks 1 and 2")
    r.read(timeout=0.3)
    assert 3 not in r.final and 3 not in r.started
    r.close(bye=True)


def test_a_quarantined_task_stays_quarantined(start_daemon, place):
    d = start(start_daemon, place, "--quarantine-after", "2", workers=1)
    c = Raw(d.endpoint)
    c.submit([p.Task(1, "crashy", msgpack.packb([10]), {"crash_retries": 5})])
    c.read_until(lambda: 1 in c.final, ack=False, what="the quarantine")  # never acknowledged
    assert c.final[1][0].error_type == "Quarantined"
    committed(d.endpoint)  # (a result's record rides with the next group: a kill before may lose it)
    d.kill()
    c.close()
    d2 = start(start_daemon, place, "--quarantine-after", "2", workers=1)
    r = Raw(d2.endpoint, c.welcome.session, c.welcome.token)
    r.read_until(lambda: 1 in r.final, what="the quarantine delivered again")
    assert r.final[1][0].error_type == "Quarantined" and 1 not in r.started
    r.close(bye=True)


def test_sigterm_keeps_queued_tasks_for_the_next_run(start_daemon, place):
    d = start(start_daemon, place, workers=1)
    c = Raw(d.endpoint)
    c.submit([p.Task(i, "sleep", sleep_args(0.2)) for i in range(1, 11)])
    c.read_until(lambda: c.accepted == 10, what="acceptance")
    d.terminate()
    assert d.proc.wait(15) == 0
    c.close()
    d2 = start(start_daemon, place, workers=2)
    r = Raw(d2.endpoint, c.welcome.session, c.welcome.token)
    assert r.welcome.resumed
    r.final = dict(c.final)
    r.read_until(lambda: len(r.final) == 10, what="every task, in the next run")
    assert all(e[0].kind == OK for e in r.final.values())
    r.close(bye=True)


def test_a_finished_session_leaves_the_journal_near_empty(start_daemon, place):
    d = start(start_daemon, place, workers=2)
    c = Raw(d.endpoint)
    n = 5000
    for first in range(1, n + 1, 500):
        c.submit([p.Task(i, "echo", msgpack.packb([b"x" * 200])) for i in range(first, first + 500)])
    c.read_until(lambda: len(c.final) == n, timeout=60, what="every result")
    c.close(bye=True)
    wait_for(lambda: c.status()["journal"]["records"] == 0, timeout=10, what="the journal to empty")
    wait_for(lambda: c.status()["journal"]["file_bytes"] < 64 * 1024, timeout=10, what="compaction")


def test_a_journal_zexecd_cannot_read_stops_it_at_start(place):
    bad = os.path.join(place, "journal")
    with open(bad, "wb") as f:
        f.write(b"not a database" * 100)
    run = subprocess.run([daemon_path(), "--endpoint", f"ipc://{place}/d.sock", "--journal", bad, "--workers", "1"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode != 0
    assert bad in run.stderr and "move it aside" in run.stderr, run.stderr


def test_a_read_only_journal_folder_stops_it_at_start(place):
    ro = os.path.join(place, "ro")
    os.mkdir(ro)
    os.chmod(ro, stat.S_IRUSR | stat.S_IXUSR)
    mounted = False
    if os.geteuid() == 0:  # root writes anywhere a mode says it may not: a read-only bind mount
        if subprocess.run(["mount", "--bind", ro, ro], capture_output=True).returncode != 0:
            pytest.skip("cannot bind-mount here (no privilege for mounts)")
        mounted = True
        subprocess.run(["mount", "-o", "remount,bind,ro", ro], check=True)
    try:
        run = subprocess.run([daemon_path(), "--endpoint", f"ipc://{place}/d.sock", "--journal", f"{ro}/j",
                              "--workers", "1"], capture_output=True, text=True, timeout=30)
    finally:
        if mounted:
            subprocess.run(["umount", ro], check=True)
    assert run.returncode != 0 and "cannot write" in run.stderr and f"{ro}/j" in run.stderr, run.stderr


def test_the_python_client_rides_through_three_sigkills(start_daemon, place):
    """20,000 short tasks through one Executor; zexecd is killed with SIGKILL at a random moment
    three times and started again on the same journal. Every future resolves exactly once, with
    its own value, and no call fails."""
    import random
    import threading

    import zexec

    n = 20000
    d = start(start_daemon, place, workers=2)
    ex = zexec.Executor(d.endpoint, name="kill-test", reconnect_timeout=60)
    resolved = [0] * n
    lock = threading.Lock()

    def done(i):
        def on_done(f):
            with lock:
                resolved[i] += 1
        return on_done

    futures = []
    rng = random.Random()
    kills = sorted(rng.sample(range(n // 10, n - n // 10), 3))  # after this many results, each
    finished = 0
    for i in range(n):
        f = ex.submit("echo", i)
        f.add_done_callback(done(i))
        futures.append(f)
    for at in kills:
        wait_for(lambda: sum(1 for f in futures if f.done()) >= at, timeout=120, what=f"{at} results")
        d.kill()
        d = start(start_daemon, place, workers=2)
        # The next kill comes once the client is back (else two kills would count as one).
        wait_for(lambda: any(c["connected"] for c in status_of(d.endpoint)["clients"]), timeout=30,
                 what="the client to resume")
    values = [f.result(timeout=120) for f in futures]
    assert values == list(range(n))
    wait_for(lambda: sum(resolved) == n, timeout=10, what="every callback")
    assert resolved == [1] * n, "a future resolved more than once"
    ex.shutdown(wait=True)


def wal_syncs(start_daemon, place, sync, round_trips):
    """fsync/fdatasync calls on the journal's WAL while a client makes `round_trips` one after
    another (each a submit, so a commit), counted with strace attached to the running daemon."""
    d = start(start_daemon, place, "--journal-sync", sync, workers=1)
    c = Raw(d.endpoint)
    c.submit([p.Task(1, "echo", msgpack.packb([0]))])  # the session's first commits, before tracing
    c.read_until(lambda: 1 in c.final, what="a first result")
    log = os.path.join(place, f"strace-{sync}")
    tracer = subprocess.Popen(["strace", "-f", "-y", "-e", "trace=fsync,fdatasync", "-o", log, "-p", str(d.pid)],
                              stderr=subprocess.PIPE, text=True)
    try:
        # strace says "Process N attached" on stderr once it traces the daemon (all its threads).
        line = tracer.stderr.readline()
        assert "attached" in line, f"strace did not attach: {line!r}"
        for i in range(2, 2 + round_trips):
            c.submit([p.Task(i, "echo", msgpack.packb([i]))])
            c.read_until(lambda: i in c.final, what=f"result {i}")
    finally:
        tracer.terminate()
        tracer.wait(10)
    c.close(bye=True)
    assert d.stop() == 0
    with open(log) as f:
        return sum(1 for line in f if "-wal>" in line)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (make test installs it)")
def test_journal_sync_full_syncs_every_commit_and_normal_none(start_daemon, place):
    # Power loss cannot be tested here; what each setting claims to call can.
    n = 40
    os.mkdir(os.path.join(place, "full"))
    os.mkdir(os.path.join(place, "normal"))
    full = wal_syncs(start_daemon, os.path.join(place, "full"), "full", n)
    normal = wal_syncs(start_daemon, os.path.join(place, "normal"), "normal", n)
    print(f"WAL syncs in {n} round trips: full {full}, normal {normal}")
    assert full >= n, f"journal_sync = full synced the WAL {full} times in {n} committed round trips"
    assert normal <= 2, f"journal_sync = normal synced the WAL {normal} times in {n} round trips"


def test_a_full_disk_refuses_submits_and_loses_nothing_accepted(start_daemon, place):
    disk = os.path.join(place, "disk")
    os.mkdir(disk)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (no privilege for mounts)")
    try:
        journal = os.path.join(disk, "journal")
        flags = ("--journal", journal, "--log-level", "critical")
        d = start_daemon(*flags, workers=1, endpoint=f"ipc://{place}/d.sock")
        c = Raw(d.endpoint)
        blob = msgpack.packb([b"x" * 16384])
        refused, i = [], 0
        while not refused:
            assert i < 2000, "the journal never filled its 1 MiB"
            ids = list(range(i + 1, i + 9))
            i += 8
            c.submit([p.Task(t, "echo", blob) for t in ids])
            # Never acknowledged: every result stays in the journal, which fills.
            c.read_until(lambda: c.accepted >= ids[-1] or ids[0] in c.final, ack=False, what="accepted or refused")
            refused = [t for t in ids if t in c.final and c.final[t][0].error_type == "JournalFull"]
        assert refused == ids, "a submit is refused whole"
        assert "not accepted" in c.final[ids[0]][0].error_message
        accepted = c.accepted
        print(f"1 MiB tmpfs: {accepted} tasks accepted, then {len(refused)} refused with JournalFull")
        assert accepted >= 8
        d.expect_killed = True
        assert d.proc.wait(20) == 1, "zexecd stops (status 1) on a journal it cannot write"
        c.close()
        # Room again: the next run has every accepted task, and none of the refused.
        subprocess.run(["mount", "-o", "remount,size=64m", disk], check=True)
        d2 = start_daemon(*flags, workers=1, endpoint=f"ipc://{place}/d.sock")
        r = Raw(d2.endpoint, c.welcome.session, c.welcome.token)
        assert r.welcome.resumed
        r.read_until(lambda: all(t in r.final for t in range(1, accepted + 1)), timeout=30,
                     what="every accepted task's result")
        assert all(r.final[t][0].kind == OK for t in range(1, accepted + 1))
        r.read(timeout=0.3)
        assert not any(t in r.final for t in refused)
        r.close(bye=True)
        d2.stop()
    finally:
        subprocess.run(["umount", "-l", disk])


def test_a_task_that_may_have_run_sees_a_higher_attempt_after_a_restart(start_daemon, place):
    d = start(start_daemon, place, workers=1)
    c = Raw(d.endpoint)
    # flaky(1) returns the run's attempt number at once: it is the one that may run twice.
    c.submit([p.Task(1, "flaky", msgpack.packb([1]))])
    c.read_until(lambda: 1 in c.started or 1 in c.final, what="task 1 at a worker")
    d.kill()
    c.close()
    d2 = start(start_daemon, place, workers=1)
    r = Raw(d2.endpoint, c.welcome.session, c.welcome.token)
    r.read_until(lambda: 1 in r.final, what="task 1 again")
    if 1 not in c.final:  # the first result never left: the run after the restart is the second
        assert msgpack.unpackb(r.final[1][0].value) == 2
    r.close(bye=True)


def test_retry_counts_survive_a_restart(start_daemon, place):
    d = start(start_daemon, place, workers=1)
    c = Raw(d.endpoint)
    # flaky(4) raises on runs 1-3. One retry, with a long backoff: killed while it waits for it.
    c.submit([p.Task(1, "flaky", msgpack.packb([4]), {"retries": 1, "retry_backoff_ms": 60000})])
    wait_for(lambda: c.status()["totals"]["retried"] == 1, timeout=10, what="the retry")
    committed(d.endpoint)
    d.kill()
    c.close()
    d2 = start(start_daemon, place, workers=1)
    r = Raw(d2.endpoint, c.welcome.session, c.welcome.token)
    r.read_until(lambda: 1 in r.final, timeout=30, what="task 1's outcome")
    # Its one retry is spent, so the run after the restart (its third: the restart counts a run
    # that may have happened) is its last, and its error is final. Had the restart forgotten
    # the retry, it would wait out another backoff of minutes instead.
    e = r.final[1][0]
    assert e.kind == FAILED and "(attempt 3)" in e.error_message, e
    assert r.status()["totals"]["retried"] == 0
    r.close(bye=True)


def test_one_session_ending_leaves_the_others_records_alone(start_daemon, place):
    # The journal's slots for batches are reused: A's first batch is done and forgotten, B's
    # takes its place; A's bye must forget A's records only, and B's count goes on.
    d = start(start_daemon, place, workers=1)
    a = Raw(d.endpoint)
    a.submit([p.Task(1, "echo", msgpack.packb([1]))])
    a.read_until(lambda: 1 in a.final, what="A's task")
    committed(d.endpoint)
    b = Raw(d.endpoint)
    b.submit([p.Task(1, "sleep", sleep_args(0.3))] + [p.Task(i, "echo", msgpack.packb([i])) for i in (2, 3)])
    b.read_until(lambda: b.accepted == 3, what="B's acceptance")
    a.close(bye=True)
    b.read_until(lambda: {1, 2, 3} <= set(b.final), what="B's results")
    # B's batch is forgotten once its tasks are acknowledged: only B's session record is left.
    wait_for(lambda: status_of(d.endpoint)["journal"]["records"] == 1, timeout=10,
             what="B's batch forgotten after its acks")
    b.close(bye=True)
    wait_for(lambda: status_of(d.endpoint)["journal"]["records"] == 0, timeout=10, what="an empty journal")



def test_updates_of_started_events_leave_no_record(start_daemon, place):
    # An update with only `started` events speaks of no task's outcome: never acknowledged,
    # it must still not stay in the journal (nothing would forget it before the session ends).
    d = start(start_daemon, place, workers=1)
    c = Raw(d.endpoint)
    c.submit([p.Task(1, "sleep", sleep_args(2.0))])  # (task 2 waits behind it: one worker)
    c.read_until(lambda: 1 in c.started, ack=False, what="task 1 started")  # not acknowledged
    c.submit([p.Task(2, "echo", msgpack.packb([2]))])  # a commit while that update is unacknowledged
    c.read_until(lambda: c.accepted == 2, ack=False, what="task 2 accepted")
    committed(d.endpoint)
    assert status_of(d.endpoint)["journal"]["records"] == 3  # the session and the two batches
    c.read_until(lambda: {1, 2} <= set(c.final), what="the results")
    wait_for(lambda: status_of(d.endpoint)["journal"]["records"] == 1, timeout=10, what="the batch forgotten")
    c.close(bye=True)
