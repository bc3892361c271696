"""Fixtures: a real zexecd per test (no mocks), found via $ZEXEC_DAEMON.

Run: ZEXEC_DAEMON=build/bin/zexecd PYTHONPATH=client-lib/python /usr/bin/python3 -m pytest -q tests/python
"""

import ctypes
import faulthandler
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PY_WORKER = os.path.join(HERE, "workers", "py_worker.py")
PYTHON = "/usr/bin/python3"  # the interpreter with python3-zmq and python3-msgpack

# The package under test: from PYTHONPATH, else the source tree.
try:
    import zexec  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(REPO, "client-lib", "python"))
    import zexec  # noqa: F401

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(zexec.__file__)))

TEST_GUARD_S = 30  # the most one test may take (see _hang_guard)
HANG_DUMP = f"/tmp/zexec-pytest-hang-{os.getpid()}.txt"


def daemon_path():
    return os.environ.get("ZEXEC_DAEMON") or os.path.join(REPO, "build", "bin", "zexecd")


def wait_for(predicate, timeout=5.0, what="condition"):
    """Polls predicate() until true or the deadline passes (never a bare sleep to synchronise)."""
    deadline = time.monotonic() + timeout
    step = 0.002
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
        step = min(step * 2, 0.05)


@pytest.fixture(scope="session", autouse=True)
def _binaries():
    zexecd = daemon_path()
    if not os.access(zexecd, os.X_OK):
        pytest.exit(f"zexecd not found at {zexecd}: set ZEXEC_DAEMON=<build>/bin/zexecd", returncode=2)
    worker = os.path.join(os.path.dirname(zexecd), "zexec-worker")
    if not os.access(worker, os.X_OK):
        pytest.exit(f"zexec-worker not found beside {zexecd}", returncode=2)
    os.environ["ZEXEC_DAEMON"] = zexecd  # embedded executors in the tests use the same binary


class TestHung(Exception):
    """Raised in the main thread by the hang guard."""


@pytest.fixture(autouse=True)
def _hang_guard(_hang_dump):
    """Nothing may hang: past TEST_GUARD_S a SIGALRM raises TestHung wherever the test (or a
    teardown) waits, so it fails with a traceback and the run goes on. Should even that not get
    through, faulthandler dumps every thread to HANG_DUMP and exits."""

    def on_alarm(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, 15)  # teardowns get another chance
        raise TestHung(f"still running after the {TEST_GUARD_S} s hang guard")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TEST_GUARD_S)
    faulthandler.dump_traceback_later(3 * TEST_GUARD_S, exit=True, file=_hang_dump)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def _hang_dump():
    """The last resort's output (pytest captures stderr): kept only if something was written."""
    with open(HANG_DUMP, "w") as f:
        yield f
    if os.path.getsize(HANG_DUMP) == 0:
        os.remove(HANG_DUMP)


_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent():
    _prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG (daemons are started from the main thread)


class Daemon:
    """A zexecd child process started with --print-endpoint."""

    def __init__(self, *args, workers=2, endpoint=None, python_workers=False, env=None):
        self.dir = tempfile.mkdtemp(prefix="zxt-", dir="/tmp")  # ipc paths must stay short
        endpoint = endpoint or f"ipc://{self.dir}/zexecd.sock"
        argv = [daemon_path(), "--endpoint", endpoint, "--print-endpoint", "--workers", str(workers),
                "--log-level", "error", "--shutdown-grace-ms", "3000"]
        if python_workers:
            argv += ["--worker-command", f"{PYTHON} {PY_WORKER}"]
        argv += list(args)
        full_env = dict(os.environ)
        # Workers inherit the daemon's environment: make the package importable for Python ones.
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_DIR, full_env.get("PYTHONPATH")) if p)
        # The daemon's run directory (worker sockets) inside ours: removed even after a SIGKILL.
        full_env["RUNTIME_DIRECTORY"] = self.dir
        full_env.update(env or {})
        self.argv = argv
        # PR_SET_PDEATHSIG: no daemon outlives a pytest that was killed (e.g. by a ctest timeout).
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=full_env,
                                     preexec_fn=_die_with_parent)
        self.expect_killed = False
        line = self._read_line(10.0)
        if not line:
            self.proc.kill()
            raise AssertionError(f"zexecd printed no endpoint: {' '.join(argv)} (status {self.proc.wait()})")
        self.endpoint = line

    def _read_line(self, timeout):
        import selectors
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
            return self.proc.stdout.readline().decode().strip()

    @property
    def pid(self):
        return self.proc.pid

    def terminate(self):
        """SIGTERM: graceful stop (the daemon's exit status is checked at teardown)."""
        self.proc.send_signal(signal.SIGTERM)

    def kill(self):
        self.expect_killed = True
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout=15.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"zexecd did not stop within {timeout} s of SIGTERM")
        finally:
            self.proc.stdout.close()
            shutil.rmtree(self.dir, ignore_errors=True)
        return status


@pytest.fixture
def start_daemon():
    """Factory: start_daemon(*flags, workers=2, python_workers=False, endpoint=None) -> Daemon.
    Every daemon is stopped with SIGTERM at the end of the test and must exit 0 (unless the
    test killed it on purpose)."""
    daemons = []

    def start(*args, **kw):
        d = Daemon(*args, **kw)
        daemons.append(d)
        return d

    yield start
    failures = []
    for d in daemons:
        status = d.stop()
        if not d.expect_killed and status != 0:
            failures.append(f"zexecd ({' '.join(d.argv)}) exited with status {status}")
    assert not failures, "; ".join(failures)


@pytest.fixture
def daemon(start_daemon):
    """A daemon with 4 stock C++ workers."""
    return start_daemon(workers=4)


@pytest.fixture
def executor(daemon):
    """An Executor connected to `daemon`; shut down (waiting) at the end of the test."""
    ex = zexec.Executor(daemon.endpoint, name="pytest")
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def py_daemon(start_daemon):
    """A daemon whose 2 workers are tests/python/workers/py_worker.py."""
    return start_daemon(workers=2, python_workers=True)
