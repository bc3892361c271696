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


class SessionPeer(ScriptedPeer):
    """A scripted peer that plays a daemon keeping sessions (PROTOCOL.md section 3, Sessions):
    its welcome names a session, and it can "restart" (close both sockets, then bind a new
    ROUTER on the same endpoint and a new results PUSH), as a zexecd with a journal would."""

    def welcome_session(self, session, token, resumed=False, heartbeat_ms=1000, max_pending=100):
        """Answers the client's next hello with a welcome naming `session`; returns (rid, hello)."""
        rid, hello = self.recv(p.Hello)
        self.router.send_multipart([rid, p.encode_welcome(1, self.results, 1, heartbeat_ms, max_pending, 0, 0,
                                                          session, token, resumed)])
        return rid, hello

    def recv_frame(self, want, seen=None):
        """As recv(), but returns (rid, msg, frame); other messages than heartbeats go to `seen`."""
        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            if not self.router.poll(100):
                continue
            rid, frame = self.router.recv_multipart()
            msg = p.decode(frame)
            if isinstance(msg, want):
                return rid, msg, frame
            if seen is not None and not isinstance(msg, p.Heartbeat):
                seen.append(msg)
        raise AssertionError(f"no {want.NAME} from the client")

    def push_update(self, seq, events, accepted_through=0):
        """Sends an update on the results PUSH once the client's PULL is connected (bounded)."""
        if not self.push.poll(T * 1000, zmq.POLLOUT):
            raise AssertionError("the client's results PULL never connected")
        self.push.send(p.encode_update(seq, events, accepted_through))

    def restart(self):
        """Plays a daemon restart on the same endpoint: the client's results endpoint changes."""
        self.router.close(0)
        self.push.close(0)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        deadline = time.monotonic() + T
        while True:
            try:
                self.router.bind(self.endpoint)
                break
            except zmq.ZMQError:  # the port may take a moment to be free again
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.results = f"tcp://127.0.0.1:{self.push.bind_to_random_port('tcp://127.0.0.1')}"

    def stop(self):
        """Plays a daemon that is gone for good: both sockets closed, nothing bound again."""
        self.router.close(0)
        self.push.close(0)
