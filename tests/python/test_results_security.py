"""Nobody but its client takes a client's results (docs/PROTOCOL.md §2, "Client handshake and the
per-client results socket"): a stale Executor of an earlier daemon run on the same endpoint gets
none of a new client's results, and closes its PULL once the session is over."""

import os
import shutil
import tempfile

import pytest
import zmq

import zexec

from conftest import wait_for

T = 30.0


def _spy(ctx, endpoint):
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RECONNECT_IVL, 10)  # reconnects fast: anything pushed at its path is taken
    s.connect(endpoint)
    return s


def _drain(s):
    n = 0
    while s.poll(0):
        s.recv()
        n += 1
    return n


def _peer_connects(ctx, endpoint, timeout):
    """Binds a PUSH at ``endpoint`` and waits up to ``timeout`` s for a peer: a PUSH with none
    cannot take a message."""
    os.makedirs(os.path.dirname(endpoint[len("ipc://"):]), exist_ok=True)
    probe = ctx.socket(zmq.PUSH)
    probe.setsockopt(zmq.LINGER, 0)
    probe.bind(endpoint)

    def sent():
        try:
            probe.send(b"x", zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    try:
        wait_for(sent, timeout=timeout, what="a peer")
        return True
    except AssertionError:
        return False
    finally:
        probe.close(0)


def test_stale_executor_takes_none_of_the_next_runs_results(start_daemon):
    ctx = zmq.Context()
    where = tempfile.mkdtemp(prefix="zxs-", dir="/tmp")  # ipc paths must stay short
    endpoint = f"ipc://{where}/zexecd.sock"
    executors = []
    try:
        a = start_daemon("--heartbeat-ms", "50", workers=1, endpoint=endpoint)
        stale = zexec.Executor(a.endpoint)
        executors.append(stale)
        old = stale.welcome
        stale_results = stale._core.results_endpoint
        pending = stale.submit("sleep", 5.0)
        wait_for(pending.running, what="start")
        a.kill()
        with pytest.raises(zexec.DaemonLostError):
            pending.result(T)
        # The Executor closed its PULL with the session: it never comes back to its old path.
        assert not _peer_connects(ctx, stale_results, 1.0), "the stale Executor's PULL reconnected"
        # A PULL that is never closed (an old client library, a wedged process) at that path.
        stale_pull = _spy(ctx, old.results_endpoint)

        b = start_daemon(workers=1, endpoint=endpoint)
        fresh = zexec.Executor(b.endpoint)
        executors.append(fresh)
        assert fresh.welcome.client_id != old.client_id, "client id reused across daemon runs"
        assert fresh.welcome.results_endpoint != old.results_endpoint
        # A PULL guessing the pre-token path of the new client's results socket.
        guess = _spy(ctx, f"{b.endpoint}.r{fresh.welcome.client_id}")
        n = 0
        for _ in range(5):  # rounds: a PULL reconnecting in between would be served
            futures = [fresh.submit("echo", n + i) for i in range(200)]
            assert [f.result(T) for f in futures] == list(range(n, n + 200))
            n += 200
        assert _drain(stale_pull) == 0, "the stale client's PULL took some of the new client's results"
        assert _drain(guess) == 0
    finally:
        for ex in executors:
            ex.shutdown()
        ctx.destroy(0)
        shutil.rmtree(where, ignore_errors=True)
