"""What the client does with frames it cannot decode (PROTOCOL.md section 1, Versions: peers never
guess; the operation that expected the answer fails, naming the reason). A real zexecd never sends
such frames, so a scripted peer (a bare ROUTER/PUSH in a thread) plays the daemon here; every
functional test uses the real daemon."""

import threading
import time

import msgpack
import pytest
import zmq

import zexec
from zexec import protocol as p

T = 5


class ScriptedPeer:
    """A ROUTER (and a PUSH for results) on ephemeral tcp ports, driven by `script` in a thread."""

    def __init__(self, script):
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.push = self.ctx.socket(zmq.PUSH)
        for s in (self.router, self.push):
            s.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self.router.bind_to_random_port('tcp://127.0.0.1')}"
        self.results = f"tcp://127.0.0.1:{self.push.bind_to_random_port('tcp://127.0.0.1')}"
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script):
        try:
            script(self)
        except Exception as e:  # noqa: BLE001 - reported by close()
            self.error = e

    def recv(self, want):
        """The next message of class `want` from the client (heartbeats skipped)."""
        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            if not self.router.poll(100):
                continue
            rid, frame = self.router.recv_multipart()
            msg = p.decode(frame)
            if isinstance(msg, want):
                return rid, msg
        raise AssertionError(f"no {want.NAME} from the client")

    def close(self):
        self.thread.join(T)
        self.router.close()
        self.push.close()
        self.ctx.term()
        assert self.error is None, self.error


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
        rid, _ = peer.recv(p.Hello)
        peer.router.send_multipart([rid, p.encode_welcome(1, peer.results, 1, 1000, 100)])
        _, submit = peer.recv(p.Submit)
        tid = submit.tasks[0].id
        peer.push.send(msgpack.packb([2, 10, 1, [[tid, 1, b"\xc0"]]], use_bin_type=True))

    peer = ScriptedPeer(script)
    ex = zexec.Executor(peer.endpoint, connect_timeout=T)
    f = ex.submit("echo", 1)
    exc = f.exception(T)
    assert isinstance(exc, zexec.ConnectionError)
    assert "undecodable update" in str(exc) and "unsupported protocol version 2" in str(exc)
    with pytest.raises(zexec.ConnectionError):
        ex.submit("echo", 2)
    ex.shutdown()
    peer.close()
