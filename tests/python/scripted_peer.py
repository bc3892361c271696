"""A scripted peer playing zexecd for the client tests that need frames a real daemon never sends
(test_bad_peer, test_errors): a bare ROUTER and a PUSH for results, driven by a script in a
thread. The C++ suite's counterpart is test::FakeDaemon (tests/client_support.hpp)."""

import threading
import time

import zmq

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

    def welcome(self):
        """Answers the client's hello; returns its routing id."""
        rid, _ = self.recv(p.Hello)
        self.router.send_multipart([rid, p.encode_welcome(1, self.results, 1, 1000, 100)])
        return rid

    def close(self):
        self.thread.join(T)
        self.router.close()
        self.push.close()
        self.ctx.term()
        assert self.error is None, self.error
