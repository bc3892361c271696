"""The client's bookkeeping, driven directly through the I/O thread's handlers (no daemon
involved): updates (PROTOCOL.md section 3, Acknowledgement: each seq applied once, duplicates
ignored, acks cumulative and never past a gap), cancel replies, tasks cancelled before they were
sent; plus one end-to-end check that real resends are applied once."""

import concurrent.futures as cf
import os

import msgpack

import zexec
from zexec import _client
from zexec import protocol as p
from conftest import wait_for

T = 10


def make_core():
    core = _client._Core("ipc:///nonexistent", "unit", 1.0, 0.1)
    core.phase = core.io_phase = core.READY
    return core


def dispose(core):
    core.ctx.term()
    os.close(core.wake_fd)


def add_future(core, tid, name="t"):
    f = _client.Future(core, tid, name, None)
    core.inflight[tid] = f
    core.unfinished += 1
    return f


def ok(tid, value):
    return p.Event(tid, p.OK, msgpack.packb(value))


def test_each_seq_applied_once_and_acks_never_pass_a_gap():
    core = make_core()
    fs = {i: add_future(core, i) for i in range(1, 6)}
    calls = []
    for f in fs.values():
        f.add_done_callback(calls.append)

    core._on_update(p.Update(1, [p.Event(1, p.STARTED), p.Event(2, p.STARTED)]))
    assert core.acked_upto == 1 and fs[1].running()
    core._on_update(p.Update(3, [ok(2, "b")]))  # 2 was lost in transit: a gap
    assert fs[2].result(0) == "b"
    assert core.acked_upto == 1, "acked past a gap"
    core._on_update(p.Update(3, [ok(2, "again")]))  # a resend of 3: ignored
    core._on_update(p.Update(1, [ok(1, "stale")]))  # an old seq resent: ignored
    assert not fs[1].done()
    core._on_update(p.Update(2, [ok(1, "a"), p.Event(3, p.FAILED, b"", "ValueError", "v")]))
    assert core.acked_upto == 3 and not core.seen_ahead  # the gap closed: cumulative ack to 3
    assert fs[1].result(0) == "a"
    assert isinstance(fs[3].exception(0), zexec.TaskError) and fs[3].exception(0).type == "ValueError"
    core._on_update(p.Update(4, [p.Event(4, p.CANCELLED), ok(5, None), ok(99, "unknown id")]))
    assert fs[4].cancelled() and fs[5].result(0) is None
    assert core.acked_upto == 4 and core.unfinished == 0
    assert sorted(f.task_id for f in calls) == [1, 2, 3, 4, 5]  # every future settled exactly once
    done, _ = cf.wait(fs.values(), timeout=0)
    assert len(done) == 5
    dispose(core)


def test_a_resend_of_acked_updates_makes_the_ack_due_again():
    core = make_core()
    f = add_future(core, 1)
    core._on_update(p.Update(1, [ok(1, "a")]))
    core.ack_sent = core.acked_upto  # as if the ack went out (and was lost on the way)
    core._on_update(p.Update(1, [ok(1, "a")]))  # the daemon resends: it never got that ack
    assert core.acked_upto > core.ack_sent, "no ack due: the daemon would resend for ever"
    assert f.result(0) == "a"
    dispose(core)


def test_cancel_reply_settles_cancelled_futures_only():
    core = make_core()
    a, b, c = (add_future(core, i) for i in (1, 2, 3))
    core._on_cancel_reply(p.CancelReply(7, [(1, p.OUTCOME_CANCELLED), (2, p.OUTCOME_RUNNING),
                                            (3, p.OUTCOME_FINISHED)]))
    assert a.cancelled() and not b.done() and not c.done()
    assert list(cf.as_completed([a], timeout=0)) == [a]  # CANCELLED_AND_NOTIFIED: waiters see it
    dispose(core)


def test_cancel_of_a_task_not_sent_yet_is_local_and_it_is_never_sent():
    core = make_core()
    core.max_pending = 10
    f1, f2 = core.submit([("echo", b"\x90", {}), ("echo", b"\x91\x01", {})], sealed=False)
    assert core.unfinished == 2 and not f1.running()
    assert f1.cancel() is True and f1.cancelled()
    assert core.unfinished == 1
    assert core._take_work() is False  # the I/O thread's turn: only f2 goes out
    assert list(core.inflight) == [f2.task_id]
    (frame,) = core.sendq
    assert p.decode(frame) == p.Submit([p.Task(f2.task_id, "echo", b"\x91\x01")])
    assert f2.cancel() is False  # sent, and this core has no daemon answering: not cancelled
    dispose(core)


def test_daemon_resends_unacknowledged_updates(start_daemon):
    # A client that does not ack gets the same update again after 5 x heartbeat_ms; the client
    # applies it once. Here acks are held back by hiding them from the daemon for a while.
    d = start_daemon("--heartbeat-ms", "20", workers=1)
    ex = zexec.Executor(d.endpoint)
    core = ex._core
    seen = []
    original = core._on_update

    def spy(u):
        seen.append(u.seq)
        original(u)

    core._on_update = spy
    core.ack_sent = 10**9  # the I/O thread believes everything is acked: no ack goes out
    f = ex.submit("echo", "once")
    calls = []
    f.add_done_callback(calls.append)
    assert f.result(T) == "once"

    def resent():
        return seen.count(seen[0]) >= 2 if seen else False

    wait_for(resent, what="the daemon to resend an unacknowledged update")
    core.ack_sent = 0  # let acks flow again
    assert calls == [f]  # applied once despite the resend
    ex.shutdown()
