"""Embedded mode (a private zexecd per Executor) and how an Executor finds its daemon."""

import os
import shutil
import signal
import subprocess
import textwrap
import threading

import pytest

import zexec
from conftest import PACKAGE_DIR, PYTHON, wait_for

T = 10


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_embedded_executor_starts_and_stops_its_daemon():
    with zexec.Executor(workers=2) as ex:
        pid = ex.daemon_pid
        assert pid and not _gone(pid)
        assert ex.endpoint.startswith("ipc://") and ex.welcome.workers == 2
        assert sorted(f.result(T) for f in [ex.submit("sleep", 0.1), ex.submit("sleep", 0.05)]) == [0.05, 0.1]
        run_dir = os.path.dirname(ex.endpoint[len("ipc://"):])
        assert os.path.isdir(run_dir)
    assert _gone(pid), "the private zexecd outlived shutdown()"
    assert not os.path.exists(run_dir)


def test_embedded_daemon_dies_with_the_python_process():
    script = textwrap.dedent("""
        import sys, zexec
        ex = zexec.Executor(workers=1)
        assert ex.submit("echo", 1).result(10) == 1
        print(ex.daemon_pid, ex.endpoint, flush=True)
        sys.stdin.read()  # until killed
    """)
    env = dict(os.environ, PYTHONPATH=PACKAGE_DIR)
    child = subprocess.Popen([PYTHON, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        line = child.stdout.readline().split()
        assert len(line) == 2 and line[0].isdigit(), line
        daemon_pid, run_dir = int(line[0]), os.path.dirname(line[1].decode()[len("ipc://"):])
        assert not _gone(daemon_pid)
        child.send_signal(signal.SIGKILL)  # no atexit, no finalizers: only PR_SET_PDEATHSIG is left
        child.wait(T)
        wait_for(lambda: _gone(daemon_pid), timeout=T, what="the orphaned zexecd to exit")
        shutil.rmtree(run_dir)  # the killed process could not
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stdin.close()


def test_embedded_daemon_stops_at_interpreter_exit_without_shutdown():
    script = textwrap.dedent("""
        import zexec
        ex = zexec.Executor(workers=1)
        print(ex.daemon_pid, ex.submit("echo", "x").result(10), flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=PACKAGE_DIR)
    r = subprocess.run([PYTHON, "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    pid, value = r.stdout.split()
    assert value == "x"
    wait_for(lambda: _gone(int(pid)), timeout=T, what="zexecd to stop at exit")


def test_daemon_not_found_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("ZEXEC_DAEMON", "/nonexistent/zexecd")
    with pytest.raises(zexec.Error) as info:
        zexec.Executor(workers=1)
    assert "ZEXEC_DAEMON" in str(info.value) and "/nonexistent/zexecd" in str(info.value)


def test_daemon_that_fails_to_start_is_reported():
    with pytest.raises(zexec.Error) as info:
        zexec.Executor(workers=1, daemon_args=["--no-such-flag"])
    assert "exited with status 2" in str(info.value)


def test_endpoint_from_the_environment(daemon, monkeypatch):
    monkeypatch.setenv("ZEXEC_ENDPOINT", daemon.endpoint)
    with zexec.Executor() as ex:
        assert ex.endpoint == daemon.endpoint and ex.daemon_pid is None
        assert ex.submit("echo", 5).result(T) == 5


def test_endpoint_and_workers_are_exclusive(daemon):
    with pytest.raises(ValueError):
        zexec.Executor(daemon.endpoint, workers=2)


def test_default_endpoint_follows_the_daemon(monkeypatch):
    monkeypatch.delenv("ZEXEC_ENDPOINT", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    expected = "ipc:///run/zexec/zexecd.sock" if os.geteuid() == 0 else "ipc:///run/user/4242/zexec/zexecd.sock"
    assert zexec.protocol.default_endpoint() == expected


def test_embedded_daemon_outlives_the_thread_that_created_it():
    # PR_SET_PDEATHSIG fires when the forking *thread* ends: the daemon must survive that.
    box = []
    t = threading.Thread(target=lambda: box.append(zexec.Executor(workers=1)))
    t.start()
    t.join(T)
    ex = box[0]
    try:
        assert ex.submit("sleep", 0.2).result(T) == 0.2  # the daemon got past the thread's end
        assert not _gone(ex.daemon_pid)
    finally:
        ex.shutdown()


def test_dropped_executor_finishes_its_tasks_then_stops_its_daemon():
    ex = zexec.Executor(workers=1)
    pid = ex.daemon_pid
    f = ex.submit("sleep", 0.2)
    del ex  # garbage: behaves as shutdown(wait=False)
    import gc
    gc.collect()
    assert f.result(T) == 0.2
    wait_for(lambda: _gone(pid), timeout=T, what="the private zexecd to stop once idle")


def test_private_daemon_options_do_not_mix_with_an_endpoint_and_options_are_checked(daemon):
    for kw in ({"workers": 1}, {"worker_command": "x"}, {"daemon": "/bin/true"}, {"daemon_args": ["--x"]}):
        with pytest.raises(ValueError, match="do not apply with an endpoint"):
            zexec.Executor(daemon.endpoint, **kw)
    with zexec.Executor(daemon.endpoint) as ex:
        for bad in (True, -1.0, float("nan"), "1"):
            with pytest.raises(ValueError, match="retry_backoff"):
                ex.task("echo", retry_backoff=bad)
        # A backoff under a millisecond is still a backoff (rounded up, as timeouts are).
        assert ex.task("echo", retries=1, retry_backoff=0.0001).submit(3).result(20) == 3
