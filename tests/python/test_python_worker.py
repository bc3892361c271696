"""zexec.worker: Python workers (tests/python/workers/py_worker.py) run by a real zexecd."""

import concurrent.futures as cf
import os
import subprocess
import time

import pytest

import zexec
from conftest import PACKAGE_DIR, PY_WORKER, PYTHON, wait_for

T = 10


@pytest.fixture
def py_executor(py_daemon):
    ex = zexec.Executor(py_daemon.endpoint)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def test_decorated_tasks(py_executor):
    assert py_executor.submit("add", 2, 3).result(T) == 5
    assert py_executor.submit("greet", "zexec").result(T) == "hello, zexec"  # @task("greet")
    assert py_executor.submit("greet", "zexec", "hi").result(T) == "hi, zexec"
    assert py_executor.submit("echo", {"a": [1, b"\x00"]}).result(T) == {"a": [1, b"\x00"]}
    assert list(py_executor.map("add", [1, 2, 3], [10, 20, 30], chunksize=2)) == [11, 22, 33]


def test_exception_types(py_executor):
    with pytest.raises(zexec.TaskError) as info:
        py_executor.submit("raise_value", "bad value").result(T)
    assert (info.value.type, info.value.message) == ("ValueError", "bad value")
    with pytest.raises(zexec.TaskError) as info:
        py_executor.submit("raise_custom", "mine").result(T)
    assert (info.value.type, info.value.message) == ("CustomError", "mine")
    assert py_executor.submit("add", 1, 1).result(T) == 2  # the worker goes on


def test_a_rerun_task_sees_its_attempt(py_executor):
    import zexec.worker as w
    assert w.attempt() == 0  # outside a task
    assert py_executor.submit("flaky", 1).result(T) == 1
    assert py_executor.task("flaky", retries=2).submit(3).result(T) == 3
    assert py_executor.task("crashy", crash_retries=1).submit(2).result(30) == 2
    with pytest.raises(zexec.TaskError) as info:
        py_executor.task("flaky", retries=1).submit(3).result(T)
    assert info.value.message == "run 2 of 3 (attempt 2)"


def test_bad_arguments(py_executor):
    with pytest.raises(zexec.BadArgumentsError) as info:
        py_executor.submit("add", 1).result(T)
    assert info.value.type == "BadArguments"
    assert "add" in info.value.message and "'b'" in info.value.message
    with pytest.raises(zexec.BadArgumentsError):
        py_executor.submit("add", 1, 2, 3).result(T)


def test_unknown_task(py_executor):
    # The worker announces its names: a daemon that routes by name refuses this one itself
    # ("unknown task 'nope': no worker runs it (...)"), an older one sends it to the worker.
    with pytest.raises(zexec.UnknownTaskError) as info:
        py_executor.submit("nope", 1).result(T)
    assert info.value.message.startswith("unknown task 'nope'")


def test_unknown_task_answered_by_a_worker_that_takes_any_name(start_daemon):
    d = start_daemon(workers=1, python_workers=True, env={"PY_WORKER_ANY": "1"})
    with zexec.Executor(d.endpoint) as ex:
        with pytest.raises(zexec.UnknownTaskError) as info:
            ex.submit("nope", 1).result(T)
        assert info.value.message == "unknown task 'nope'"  # exactly the worker's wording
        assert ex.submit("add", 1, 2).result(T) == 3


def test_unencodable_result(py_executor):
    with pytest.raises(zexec.TaskError) as info:
        py_executor.submit("unencodable").result(T)
    assert info.value.type == "UnencodableResult"
    assert "object" in info.value.message


def test_long_error_message_is_truncated(py_executor):
    with pytest.raises(zexec.TaskError) as info:
        py_executor.submit("long_error", 200_000).result(T)
    assert info.value.type == "RuntimeError"
    assert info.value.message.endswith("... (truncated)")
    assert len(info.value.message) <= (64 << 10) + 20


def test_crash_of_a_python_worker(py_executor):
    with pytest.raises(zexec.WorkerCrashedError):
        py_executor.submit("crash").result(T)
    with pytest.raises(zexec.WorkerCrashedError) as info:
        py_executor.submit("exit_worker", 3).result(T)  # SystemExit is not caught: the worker ends
    assert "status 3" in info.value.message
    assert py_executor.submit("add", 2, 2).result(T) == 4


def test_long_tasks_keep_heartbeating(start_daemon):
    # The daemon kills a worker silent for 300 ms: a 1 s task survives only if the I/O thread
    # heartbeats while the task runs, sleeping or holding the GIL in pure Python.
    d = start_daemon("--worker-liveness-ms", "300", "--heartbeat-ms", "50", workers=2, python_workers=True)
    with zexec.Executor(d.endpoint) as ex:
        sleeper, spinner = ex.submit("sleep", 1.0), ex.submit("spin", 1.0)
        assert sleeper.result(T) == 1.0
        assert spinner.result(T) is True


def _prefetch_behind_a_long_task(ex, long_s, n_short):
    """Submits sleep(long_s) + n_short sleep(0) in ONE submit frame, after a warm-up that makes
    the daemon's prefetch window deep: the short tasks are dealt to workers with the long one
    and some wait in its worker's queue (only revoke can get them back)."""
    assert list(ex.map("add", range(30), range(30), chunksize=30)) == [2 * i for i in range(30)]
    return ex._submit_many("sleep", [(long_s,)] + [(0,)] * n_short, {}, sealed=True)


def test_cancel_prefetched_task_is_revoked_while_a_task_runs(start_daemon):
    d = start_daemon(workers=1, python_workers=True)
    with zexec.Executor(d.endpoint) as ex:
        long, *short = _prefetch_behind_a_long_task(ex, 0.6, 3)
        wait_for(long.running, what="start")
        start = time.monotonic()
        assert short[1].cancel() is True  # the worker answers revoke during the sleep
        assert time.monotonic() - start < 0.5
        assert long.result(T) == 0.6
        assert short[0].result(T) == 0 and short[2].result(T) == 0
        assert short[1].cancelled()


def test_idle_worker_steals_tasks_queued_behind_a_long_one(start_daemon):
    d = start_daemon(workers=2, python_workers=True)
    with zexec.Executor(d.endpoint) as ex:
        long, *short = _prefetch_behind_a_long_task(ex, 1.0, 20)
        done, _ = cf.wait(short, timeout=T)
        assert len(done) == 20 and not long.done(), "short tasks waited for the long one"
        assert long.result(T) == 1.0


def test_graceful_stop_lets_the_running_python_task_finish(start_daemon):
    d = start_daemon(workers=1, python_workers=True)
    ex = zexec.Executor(d.endpoint)
    f = ex.submit("sleep", 0.4)
    wait_for(f.running, what="start")
    d.terminate()  # the worker gets `shutdown`, finishes, exits 0; the daemon exits 0 (teardown)
    assert f.result(T) == 0.4
    ex.shutdown()


def test_python_worker_dies_with_its_daemon(start_daemon):
    d = start_daemon("--heartbeat-ms", "50", workers=1, python_workers=True)
    with zexec.Executor(d.endpoint) as ex:
        pid = ex.submit("pid").result(T)
        d.kill()
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), what="the orphaned worker to exit")


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_run_as_module_with_a_script_path(start_daemon):
    d = start_daemon("--worker-command", f"{PYTHON} -m zexec.worker {PY_WORKER}", workers=1)
    with zexec.Executor(d.endpoint) as ex:
        assert ex.submit("add", 20, 22).result(T) == 42


def test_worker_started_by_hand_explains_itself():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEXEC_")}
    env["PYTHONPATH"] = PACKAGE_DIR
    r = subprocess.run([PYTHON, PY_WORKER], env=env, capture_output=True, text=True, timeout=T)
    assert r.returncode == 2
    assert "ZEXEC_TASKS_ENDPOINT" in r.stderr


def test_embedded_executor_with_a_python_worker_command():
    with zexec.Executor(workers=1, worker_command=f"{PYTHON} {PY_WORKER}",
                        daemon_args=["--log-level", "error"]) as ex:
        assert ex.submit("greet", "embedded").result(T) == "hello, embedded"
