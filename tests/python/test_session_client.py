"""The client's side of sessions (PROTOCOL.md section 3, Sessions and Acceptance): a daemon that
keeps sessions may be lost and come back; the client keeps its futures, says hello again with
the session and token, sends again the submits not accepted yet (then cancels still awaiting a
reply, then new work), and applies each task's final event once. A daemon that does not resume
the session fails the sent tasks; one that never comes back fails them after reconnect_timeout;
without a session nothing changes. A scripted peer plays the daemon (and its restart)."""

import os
import threading
import time

import msgpack
import pytest

import zexec
from zexec import protocol as p
from conftest import wait_for
from scripted_peer import T, SessionPeer

SESSION = 7
TOKEN = bytes(range(16))


def ok(tid, value):
    return p.Event(tid, p.OK, msgpack.packb(value))


def task_ids(submit):
    return [t.id for t in submit.tasks]


def script_done(peer):
    """The peer's script ended without an error (its sockets stay open until peer.close(): closing
    them first would be a daemon loss the client reacts to)."""
    peer.thread.join(T)
    assert not peer.thread.is_alive(), "the peer's script did not end"
    assert peer.error is None, peer.error


def count_calls(futures):
    calls = []
    for f in futures:
        f.add_done_callback(calls.append)
    return calls


def test_resume_resends_only_unaccepted_submits_and_applies_each_final_once():
    seen = {"submits": [], "after": []}
    go = threading.Event()  # the test queued a task while the client was reconnecting

    def script(peer):
        _, seen["hello"] = peer.welcome_session(SESSION, TOKEN)
        while len(seen["submits"]) < 3:
            _, msg, frame = peer.recv_frame(p.Submit)
            seen["submits"].append((msg, frame))
        ids = [i for msg, _ in seen["submits"] for i in task_ids(msg)]
        peer.push_update(1, [], accepted_through=ids[1])  # the first two are on disk, not the third
        _, ack = peer.recv(p.Ack)
        assert ack.seq == 1
        peer.restart()
        rid, seen["hello2"] = peer.recv(p.Hello)
        assert go.wait(T)
        peer.router.send_multipart([rid, p.encode_welcome(2, peer.results, 1, 1000, 100, 0, 0,
                                                          SESSION, TOKEN, True)])
        _, msg, seen["resent"] = peer.recv_frame(p.Submit, seen["after"])
        _, seen["new"], _ = peer.recv_frame(p.Submit, seen["after"])
        new = task_ids(seen["new"])
        # Every result, twice for some (the daemon resends what it had not seen acknowledged).
        peer.push_update(1, [ok(ids[0], "a"), ok(ids[1], "b"), ok(ids[2], "c"), ok(ids[2], "dup")],
                         accepted_through=ids[2])
        peer.push_update(2, [ok(ids[0], "dup"), ok(new[0], "d")], accepted_through=new[0])
        while True:
            _, ack, _ = peer.recv_frame(p.Ack, seen["after"])
            if ack.seq >= 2:
                break

    peer = SessionPeer(script)
    ex = zexec.Executor(peer.endpoint, connect_timeout=T, reconnect_timeout=T)
    core = ex._core
    assert ex.welcome.session == SESSION
    fs = []
    for i, value in enumerate("abc"):  # one submit frame each
        fs.append(ex.submit("echo", value))
        wait_for(lambda: len(seen["submits"]) > i, what=f"submit {i + 1} at the peer")
    wait_for(lambda: core.io_phase == core.RECONNECTING, what="the client to notice the restart")
    assert not any(f.done() for f in fs), "a future failed with the daemon gone"
    fs.append(ex.submit("echo", "d"))  # queued while reconnecting
    calls = count_calls(fs)
    go.set()
    assert [f.result(T) for f in fs] == ["a", "b", "c", "d"]
    script_done(peer)

    hello, hello2 = seen["hello"], seen["hello2"]
    assert (hello.session, hello.token) == (0, b"")
    assert (hello2.session, hello2.token) == (SESSION, TOKEN)
    assert (hello2.client_name, hello2.pid) == (hello.client_name, hello.pid)
    assert seen["resent"] == seen["submits"][2][1], "not the unaccepted submit, byte for byte"
    assert task_ids(seen["new"]) == [fs[3].task_id], "new work before (or within) the resend"
    assert seen["after"] == [], f"sent more than the one unaccepted submit: {seen['after']}"
    wait_for(lambda: len(calls) == 4, what="every done callback")
    assert sorted(f.task_id for f in calls) == sorted(f.task_id for f in fs), "a future resolved twice"
    assert core.stats["reconnects"] == 1
    assert ex.welcome.client_id == 2 and core.results_endpoint == peer.results
    assert not core.kept and not core.kept_of, "accepted submits still kept"
    ex.shutdown()
    peer.close()


def test_session_not_resumed_fails_the_sent_tasks_and_the_executor_goes_on():
    seen = {}
    go = threading.Event()

    def script(peer):
        peer.welcome_session(SESSION, TOKEN)
        ids = []
        while len(ids) < 2:
            ids += task_ids(peer.recv(p.Submit)[1])
        peer.restart()
        rid, seen["hello2"] = peer.recv(p.Hello)
        assert go.wait(T)
        peer.router.send_multipart([rid, p.encode_welcome(2, peer.results, 1, 1000, 100, 0, 0,
                                                          SESSION + 1, b"\1" * 16, False)])
        _, seen["queued"] = peer.recv(p.Submit)
        peer.push_update(1, [ok(i, "queued") for i in task_ids(seen["queued"])])
        _, seen["later"] = peer.recv(p.Submit)
        peer.push_update(2, [ok(i, "later") for i in task_ids(seen["later"])])
        peer.recv(p.Ack)

    peer = SessionPeer(script)
    ex = zexec.Executor(peer.endpoint, connect_timeout=T, reconnect_timeout=T)
    core = ex._core
    sent = [ex.submit("echo", 1), ex.submit("echo", 2)]
    wait_for(lambda: core.io_phase == core.RECONNECTING, what="the client to notice the restart")
    queued = ex.submit("echo", 3)  # not sent yet: it goes to the new session
    go.set()
    for f in sent:
        exc = f.exception(T)
        assert isinstance(exc, zexec.ConnectionError), repr(exc)
        assert f"zexecd at {peer.endpoint} did not resume this client's session" in str(exc), str(exc)
        assert "the task is lost" in str(exc)
    assert queued.result(T) == "queued"
    later = ex.submit("echo", 4)
    assert later.result(T) == "later"
    script_done(peer)
    assert task_ids(seen["queued"]) == [queued.task_id], "a lost task was sent to the new session"
    assert task_ids(seen["later"]) == [later.task_id]
    assert seen["hello2"].session == SESSION
    assert ex.welcome.session == SESSION + 1 and "did not resume" in ex.last_error
    ex.shutdown()
    peer.close()


def test_no_daemon_within_reconnect_timeout_fails_everything():
    def script(peer):
        peer.welcome_session(SESSION, TOKEN)
        peer.recv(p.Submit)
        peer.stop()  # gone for good

    peer = SessionPeer(script)
    ex = zexec.Executor(peer.endpoint, connect_timeout=T, reconnect_timeout=1.0)
    core = ex._core
    f = ex.submit("echo", 1)
    wait_for(lambda: core.io_phase == core.RECONNECTING, what="the client to notice the loss")
    start = time.monotonic()
    assert not f.done()
    exc = f.exception(T)
    assert time.monotonic() - start < 3
    assert isinstance(exc, zexec.DaemonLostError) and isinstance(exc, zexec.ConnectionError)
    assert f"could not reconnect to zexecd at {peer.endpoint} within 1 s" in str(exc), str(exc)
    assert "disconnected" in str(exc)
    with pytest.raises(zexec.ConnectionError):
        ex.submit("echo", 2)
    assert core.stats["reconnect_hellos"] >= 1
    ex.shutdown()
    peer.close()


def test_cancel_awaiting_its_reply_is_sent_again_after_a_resume_from_silence():
    # Loss by heartbeat silence (the peer stays bound but says nothing): the new DEALER reaches
    # the same ROUTER; after the resume the unaccepted submit and the unanswered cancel go again.
    seen = {"after": []}

    def script(peer):
        rid, _ = peer.welcome_session(SESSION, TOKEN, heartbeat_ms=50)
        _, _, seen["submit"] = peer.recv_frame(p.Submit)
        deadline = time.monotonic() + T
        while "cancel" not in seen:  # alive (heartbeats) until the cancel came
            assert time.monotonic() < deadline, "no cancel from the client"
            peer.router.send_multipart([rid, p.encode_heartbeat()])
            if peer.router.poll(20):
                msg = p.decode(peer.router.recv_multipart()[1])
                if isinstance(msg, p.Cancel):
                    seen["cancel"] = msg
        rid, seen["hello2"] = peer.recv(p.Hello)  # silent meanwhile: the client gave up on us
        peer.router.send_multipart([rid, p.encode_welcome(2, peer.results, 1, 50, 100, 0, 0,
                                                          SESSION, TOKEN, True)])
        _, _, seen["resent"] = peer.recv_frame(p.Submit, seen["after"])
        _, seen["cancel2"], _ = peer.recv_frame(p.Cancel, seen["after"])
        tid = seen["cancel2"].task_ids[0]
        peer.router.send_multipart([rid, p.encode_cancel_reply(seen["cancel2"].request_id,
                                                               [(tid, p.OUTCOME_CANCELLED)])])

    peer = SessionPeer(script)
    ex = zexec.Executor(peer.endpoint, connect_timeout=T, reconnect_timeout=T, cancel_timeout=T)
    f = ex.submit("sleep", 10)
    wait_for(lambda: "submit" in seen, what="the submit at the peer")
    assert f.cancel() is True  # answered only after the resume
    assert f.cancelled()
    script_done(peer)
    assert seen["hello2"].session == SESSION
    assert seen["resent"] == seen["submit"]
    assert seen["cancel2"] == seen["cancel"], "not the same cancel request"
    assert seen["after"] == []
    assert ex._core.stats["reconnects"] == 1
    assert "nothing heard" in ex.last_error
    ex.shutdown()
    peer.close()


@pytest.mark.parametrize("session,reconnect_timeout", [(0, 60.0), (SESSION, 0)],
                         ids=["no-session", "reconnect-timeout-0"])
def test_without_resumable_session_a_lost_daemon_fails_everything_as_before(session, reconnect_timeout):
    seen = []
    done = threading.Event()

    def script(peer):
        peer.welcome_session(session, TOKEN if session else b"", heartbeat_ms=50)
        peer.recv(p.Submit)
        peer.restart()  # back at once, but the client must not say hello again
        while not done.is_set():
            if peer.router.poll(20):
                seen.append(p.decode(peer.router.recv_multipart()[1]))

    peer = SessionPeer(script)
    ex = zexec.Executor(peer.endpoint, connect_timeout=T, reconnect_timeout=reconnect_timeout)
    f = ex.submit("echo", 1)
    exc = f.exception(T)
    done.set()
    assert isinstance(exc, zexec.DaemonLostError)
    assert f"lost connection to zexecd at {peer.endpoint}: nothing heard for" in str(exc), str(exc)
    with pytest.raises(zexec.DaemonLostError):
        ex.submit("echo", 2)
    peer.close()
    assert not [m for m in seen if isinstance(m, (p.Hello, p.Submit))], seen
    assert ex._core.monitor is None and ex._core.stats["reconnects"] == 0
    ex.shutdown()


def test_reconnect_timeout_is_checked():
    for bad in (-1, float("nan"), "1", True):
        with pytest.raises(ValueError):
            zexec.Executor("tcp://127.0.0.1:1", reconnect_timeout=bad)


def test_kept_submits_go_once_accepted_or_final_and_only_in_a_session():
    # The I/O thread's bookkeeping, driven directly (as test_client_core does): a submit frame is
    # kept until accepted_through covers it or every task of it had its final outcome.
    from zexec import _client
    for session in (SESSION, 0):
        core = _client._Core("ipc:///nonexistent", "unit", 1.0, 0.1)
        core.phase = core.io_phase = core.READY
        core.session, core.max_pending = session, 100
        f1, f2 = core.submit([("echo", b"\x90", {}), ("echo", b"\x90", {})], sealed=True)  # one frame
        (f3,) = core.submit([("echo", b"\x90", {})], sealed=True)
        (f4,) = core.submit([("echo", b"\x90", {})], sealed=True)
        (f5,) = core.submit([("echo", b"\x90", {})], sealed=True)
        assert core._take_work() is False
        assert len(core.sendq) == 4
        if not session:
            assert not core.kept and not core.kept_of, "frames kept without a session"
        else:
            assert [k.ids for k in core.kept.values()] == [(1, 2), (3,), (4,), (5,)]
            assert [k.frame for k in core.kept.values()] == list(core.sendq)
            core._on_update(p.Update(1, [ok(f3.task_id, 3)]))  # a final event accepts its task
            assert [k.ids for k in core.kept.values()] == [(1, 2), (4,), (5,)]
            core._on_update(p.Update(2, [ok(f1.task_id, 1)]))  # f2 of that frame is not accepted yet
            assert [k.ids for k in core.kept.values()] == [(1, 2), (4,), (5,)]
            core._on_update(p.Update(3, [], accepted_through=f4.task_id))
            assert [k.ids for k in core.kept.values()] == [(5,)] and list(core.kept_of) == [f5.task_id]
            core._on_update(p.Update(4, [ok(f5.task_id, 5), ok(f5.task_id, "again")]))
            assert not core.kept and not core.kept_of
            assert f5.result(0) == 5 and f3.result(0) == 3
        core.ctx.term()
        os.close(core.wake_fd)
