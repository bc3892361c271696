"""What the client does with frames it cannot decode (PROTOCOL.md section 1, Versions: peers never
guess; the operation that expected the answer fails, naming the reason): a handshake fails at once;
after it, every unfinished future fails with ConnectionError and later submits raise. A real
zexecd never sends such frames, so a scripted peer plays the daemon here; every functional test
uses the real daemon. The C++ client is held to the same cases: tests/fake_daemon_bad_peer_test.cpp.
So are the `error` codes that end the connection (PROTOCOL.md section 6; FATAL_ERROR_CODES in
_connection.py, is_fatal_error_code() in client-lib/src/future_state.cpp)."""

import threading
import time

import msgpack
import pytest

import zexec
from zexec import protocol as p
from scripted_peer import T, ScriptedPeer


def expect_broken(ex, peer, f, what, why):
    """`f` failed naming the bad frame, and the connection refuses new work at once."""
    exc = f.exception(T)
    assert isinstance(exc, zexec.ConnectionError)
    assert f"{what} from zexecd at {peer.endpoint}" in str(exc) and why in str(exc), str(exc)
    assert why in ex.last_error
    start = time.monotonic()
    with pytest.raises(zexec.ConnectionError):
        ex.submit("echo", 2)
    assert time.monotonic() - start < 1


def test_undecodable_welcome_fails_the_handshake_naming_the_reason():
    def script(peer):
        rid, _ = peer.recv(p.Hello)
        peer.router.send_multipart([rid, msgpack.packb([2, 2, 1, peer.results, 1, 1000, 10])])

    peer = ScriptedPeer(script)
    start = time.monotonic()
    with pytest.raises(zexec.ConnectionError) as info:
        zexec.Executor(peer.endpoint, connect_timeout=T)
    assert "unsupported protocol version 2" in str(info.value)
    assert time.monotonic() - start < T - 1  # at once, not after the connect timeout
    peer.close()


def test_refused_hello_raises_the_daemons_reason():
    def script(peer):
        rid, _ = peer.recv(p.Hello)
        peer.router.send_multipart([rid, p.encode_error("bad_version", "this daemon speaks 7")])

    peer = ScriptedPeer(script)
    with pytest.raises(zexec.DaemonError) as info:
        zexec.Executor(peer.endpoint, connect_timeout=T)
    assert info.value.code == "bad_version" and "speaks 7" in str(info.value)
    peer.close()


def test_undecodable_update_fails_the_unfinished_futures_naming_the_reason():
    def script(peer):
        peer.welcome()
        _, submit = peer.recv(p.Submit)
        tid = submit.tasks[0].id
        peer.push.send(msgpack.packb([2, 10, 1, [[tid, 1, b"\xc0"]]], use_bin_type=True))

    peer = ScriptedPeer(script)
    ex = zexec.Executor(peer.endpoint, connect_timeout=T)
    f = ex.submit("echo", 1)
    expect_broken(ex, peer, f, "undecodable update", "unsupported protocol version 2")
    ex.shutdown()
    peer.close()


def bad_after_submit(send):
    """A peer that welcomes the client, waits for its first task, then calls send(peer, rid, tid)."""
    def script(peer):
        rid = peer.welcome()
        _, submit = peer.recv(p.Submit)
        send(peer, rid, submit.tasks[0].id)

    return ScriptedPeer(script)


def test_an_update_of_two_frames_fails_the_futures():
    def send(peer, rid, tid):
        update = p.encode_update(1, [p.Event(tid, p.OK, msgpack.packb(1))])
        peer.push.send_multipart([update, update])

    peer = bad_after_submit(send)
    with zexec.Executor(peer.endpoint, connect_timeout=T) as ex:
        expect_broken(ex, peer, ex.submit("echo", 1), "undecodable update", "a message of 2 frames (expected 1)")
    peer.close()


def test_another_message_on_the_results_socket_fails_the_futures():
    peer = bad_after_submit(lambda peer, rid, tid: peer.push.send(p.encode_heartbeat()))
    with zexec.Executor(peer.endpoint, connect_timeout=T) as ex:
        expect_broken(ex, peer, ex.submit("echo", 1), "undecodable update",
                      "a heartbeat message (only update is sent there)")
    peer.close()


def test_undecodable_control_frame_fails_the_futures_and_a_waiting_cancel():
    # It may have been the cancel_reply a cancel() waits for (whose cancelled tasks get no other
    # event), or an error saying the daemon forgot us: nothing can be assumed about the tasks.
    sent = threading.Event()

    def script(peer):
        rid = peer.welcome()
        peer.recv(p.Submit)
        sent.set()
        peer.recv(p.Cancel)
        peer.router.send_multipart([rid, msgpack.packb([2, 5, 1, []])])

    peer = ScriptedPeer(script)
    with zexec.Executor(peer.endpoint, connect_timeout=T, cancel_timeout=3 * T) as ex:
        f = ex.submit("echo", 1)
        assert sent.wait(T)  # sent: cancel() must ask the daemon
        outcome = []

        def cancel():
            try:
                outcome.append(f.cancel())
            except zexec.ConnectionError as e:
                outcome.append(e)

        canceller = threading.Thread(target=cancel)
        canceller.start()
        expect_broken(ex, peer, f, "undecodable message", "unsupported protocol version 2")
        canceller.join(T)
        assert not canceller.is_alive(), "cancel() still waits for its reply"
        assert outcome == [False], outcome  # not cancelled (as in C++): f failed with the reason
    peer.close()


def test_a_control_message_of_two_frames_fails_the_futures():
    def send(peer, rid, tid):
        peer.router.send_multipart([rid, p.encode_heartbeat(), p.encode_heartbeat()])

    peer = bad_after_submit(send)
    with zexec.Executor(peer.endpoint, connect_timeout=T) as ex:
        expect_broken(ex, peer, ex.submit("echo", 1), "undecodable message", "a message of 2 frames (expected 1)")
    peer.close()


FATAL_CODES = ["unknown_client", "bad_version", "shutting_down", "too_many_clients",
               "results_socket_failed", "backlogged"]


@pytest.mark.parametrize("code", FATAL_CODES)
def test_fatal_error_codes_fail_every_unfinished_future(code):
    # No event settles this client's tasks after these: the end of the connection, each future
    # failing with a DaemonError naming the code and the daemon's message.
    peer = bad_after_submit(lambda peer, rid, tid: peer.router.send_multipart(
        [rid, p.encode_error(code, "refused: (ids 1..1)")]))
    with zexec.Executor(peer.endpoint, connect_timeout=T) as ex:
        f = ex.submit("echo", 1)
        exc = f.exception(T)
        assert isinstance(exc, zexec.DaemonError), repr(exc)
        assert exc.code == code and exc.message == "refused: (ids 1..1)"
        assert f"zexecd at {peer.endpoint} reported {code}: refused: (ids 1..1)" in str(exc), str(exc)
        assert code in ex.last_error
        with pytest.raises(zexec.DaemonError) as info:
            ex.submit("echo", 2)
        assert info.value.code == code
    peer.close()


@pytest.mark.parametrize("code", ["bad_message", "duplicate_task_id", "some_future_code"])
def test_other_error_codes_are_only_the_last_error(code):
    # Forward compatible: the connection and its futures go on.
    def send(peer, rid, tid):
        peer.router.send_multipart([rid, p.encode_error(code, "just so")])
        time.sleep(0.2)  # the error first (another socket: no order between them otherwise)
        peer.push.send(p.encode_update(1, [p.Event(tid, p.OK, msgpack.packb(7))]))

    peer = bad_after_submit(send)
    with zexec.Executor(peer.endpoint, connect_timeout=T) as ex:
        f = ex.submit("echo", 1)
        assert f.result(T) == 7
        assert ex.last_error == f"zexecd at {peer.endpoint} reported {code}: just so"
    peer.close()


@pytest.mark.parametrize("code", ["shutting_down", "too_many_clients", "results_socket_failed"])
def test_every_refused_hello_is_a_daemon_error_with_the_code_and_message(code):
    def script(peer):
        rid, _ = peer.recv(p.Hello)
        peer.router.send_multipart([rid, p.encode_error(code, "not now")])

    peer = ScriptedPeer(script)
    start = time.monotonic()
    with pytest.raises(zexec.DaemonError) as info:
        zexec.Executor(peer.endpoint, connect_timeout=T)
    assert info.value.code == code and info.value.message == "not now"
    assert str(info.value) == f"zexecd at {peer.endpoint} reported {code}: not now"
    assert time.monotonic() - start < T - 1  # at once, not after the connect timeout
    peer.close()


def test_cancel_on_a_broken_connection_says_not_cancelled():
    peer = bad_after_submit(lambda peer, rid, tid: peer.router.send_multipart(
        [rid, p.encode_error("unknown_client", "forgot you")]))
    with zexec.Executor(peer.endpoint, connect_timeout=T) as ex:
        f = ex.submit("echo", 1)
        assert isinstance(f.exception(T), zexec.DaemonError)
        assert f.cancel() is False and f.cancel(force=True) is False
    peer.close()


def test_close_fails_leftover_futures_with_a_connection_error():
    # As C++: a ConnectionError (the task may still run; its outcome will never be heard).
    sent = threading.Event()

    def script(peer):
        peer.welcome()
        peer.recv(p.Submit)
        sent.set()

    peer = ScriptedPeer(script)
    ex = zexec.Executor(peer.endpoint, connect_timeout=T)
    f = ex.submit("echo", 1)
    assert sent.wait(T)
    ex._core.close()  # what the C++ Client::close() does; Executor.shutdown() waits instead
    exc = f.exception(T)
    assert isinstance(exc, zexec.ConnectionError), repr(exc)
    assert "closed before the task finished" in str(exc)
    assert f.cancel() is False
    ex.shutdown()
    peer.close()


def test_shutdown_cancel_futures_cancels_what_no_worker_started():
    # ProcessPoolExecutor's contract, in both clients: those futures end CANCELLED.
    sent = threading.Event()

    def script(peer):
        rid = peer.welcome()
        peer.recv(p.Submit)
        sent.set()
        _, cancel = peer.recv(p.Cancel)
        peer.router.send_multipart([rid, p.encode_cancel_reply(
            cancel.request_id, [(tid, p.OUTCOME_CANCELLED) for tid in cancel.task_ids])])

    peer = ScriptedPeer(script)
    ex = zexec.Executor(peer.endpoint, connect_timeout=T)
    f = ex.submit("echo", 1)
    assert sent.wait(T)  # sent: the daemon must cancel it
    ex.shutdown(cancel_futures=True)
    assert f.cancelled()
    peer.close()
