"""Corners a ProcessPoolExecutor user runs into: printing tasks, exceptions that cannot be
printed, frames past the size limit, cancel and shutdown from a done callback, os.fork(), and
work left running at interpreter exit."""

import concurrent.futures as cf
import os
import subprocess
import textwrap

import pytest

import zexec
from conftest import PACKAGE_DIR, PY_WORKER, PYTHON, wait_for


@pytest.fixture
def py_executor(py_daemon):
    with zexec.Executor(py_daemon.endpoint) as ex:
        yield ex


def test_exceptions_whose_text_cannot_be_sent_still_arrive_as_task_errors(py_executor):
    with pytest.raises(zexec.TaskError) as info:
        py_executor.submit("raise_unprintable").result(20)
    assert info.value.type == "Unprintable"
    with pytest.raises(zexec.TaskError) as info:
        py_executor.submit("raise_surrogate").result(20)
    assert info.value.type == "ValueError" and "file-\\udcff" in info.value.message
    assert py_executor.submit("add", 1, 2).result(20) == 3  # the same workers, still there


def test_a_task_may_print_more_than_a_pipe_holds_in_embedded_mode(capfd):
    with zexec.Executor(workers=1, worker_command=f"{PYTHON} {PY_WORKER}") as ex:
        assert ex.submit("noisy", 2000).result(20) == 2000
    wait_for(lambda: "x" * 100 + " 1999" in capfd.readouterr().out, 10, "the task's output on our stdout")


def test_a_map_chunk_larger_than_a_frame_is_split_not_fatal(executor):
    big = b"a" * (33 << 20)
    out = list(executor.map("echo", [big, big], chunksize=2, timeout=60))
    assert [len(x) for x in out] == [len(big), len(big)]
    assert executor.submit("echo", 1).result(20) == 1


def test_cancel_from_a_done_callback_cancels_the_rest_without_raising(executor):
    first = executor.submit("sleep", 0.05)
    rest = [executor.submit("sleep", 5) for _ in range(8)]  # 4 workers: some run, some queue
    answers = []
    first.add_done_callback(lambda _: answers.extend(f.cancel() for f in rest))
    first.result(20)
    wait_for(lambda: len(answers) == len(rest), 10, "the callback")
    # When the cancels reach the daemon at most 4 of `rest` run (one per worker); every other
    # one is cancelled. (Which ones run cannot be read off running() here: a started event may
    # still be on its way, so the count is what is certain.)
    wait_for(lambda: sum(f.cancelled() for f in rest) >= 4, 10, "at least 4 of the 8 cancelled")
    wait_for(lambda: all(f.cancelled() or f.running() or f.done() for f in rest), 10, "the others running")


def test_shutdown_wait_in_a_done_callback_is_refused_and_harms_nothing(executor):
    errors = []

    def stop(_):
        try:
            executor.shutdown(wait=True)
        except RuntimeError as e:
            errors.append(e)

    other = executor.submit("sleep", 0.3)
    executor.submit("sleep", 0.01).add_done_callback(stop)
    assert other.result(20) == 0.3
    assert errors and "done callback" in str(errors[0])


def _run(script):
    env = dict(os.environ, PYTHONPATH=PACKAGE_DIR, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([PYTHON, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_forked_child_leaves_the_parents_private_daemon_alone():
    r = _run("""
        import os, zexec
        ex = zexec.Executor(workers=1)
        pid = os.fork()
        if pid == 0:
            raise SystemExit(0)  # a normal exit: atexit handlers run in the child
        os.waitpid(pid, 0)
        print(ex.submit("echo", 5).result(20))
        print(zexec.Executor(ex.endpoint).submit("echo", 6).result(20))
        ex.shutdown()
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["5", "6"]


def test_work_left_running_at_exit_finishes_first(tmp_path):
    r = _run(f"""
        import zexec
        ex = zexec.Executor(workers=2)
        for i in range(4):
            ex.submit("sleep", 0.2)
        ex.submit("echo", 1).add_done_callback(lambda f: open({str(tmp_path / 'done')!r}, "w").close())
        ex.shutdown(wait=False)
    """)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "done").exists(), "interpreter exit threw submitted work away"
