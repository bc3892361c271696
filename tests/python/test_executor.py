"""zexec.Executor against a real zexecd with the stock C++ workers, through the stdlib's
concurrent.futures functions."""

import concurrent.futures as cf
import threading
import time

import pytest

import zexec
from conftest import wait_for

T = 10  # seconds: the most any single result may take (a guard, never reached when all is well)


def test_is_a_stdlib_executor_and_future(executor):
    assert isinstance(executor, cf.Executor)
    f = executor.submit("echo", {"k": [1, 2.5, "s", b"b", None, True]})
    assert isinstance(f, cf.Future)
    assert f.result(T) == {"k": [1, 2.5, "s", b"b", None, True]}
    assert f.done() and not f.cancelled() and f.exception(T) is None


def test_as_completed_yields_in_completion_order(executor):
    fs = {executor.submit("sleep", s): s for s in (0.3, 0.1, 0.2)}
    order = [fs[f] for f in cf.as_completed(fs, timeout=T)]
    assert order == [0.1, 0.2, 0.3]
    assert sorted(f.result() for f in fs) == [0.1, 0.2, 0.3]


def test_as_completed_timeout_is_one_deadline_for_the_whole_loop(daemon):
    ex = zexec.Executor(daemon.endpoint)
    fs = [ex.submit("sleep", s) for s in (0.05, 0.15, 3.0)]
    seen = []
    start = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        for f in cf.as_completed(fs, timeout=0.6):
            seen.append(f.result())
    elapsed = time.monotonic() - start
    assert seen == [0.05, 0.15]
    assert 0.55 <= elapsed < 2.0, elapsed  # 0.6 s from the call, not per yielded future
    assert fs[2].cancel(force=True)  # stop the 3 s task (its worker is replaced)
    assert fs[2].cancelled()
    ex.shutdown()


def test_running_state(executor):
    f = executor.submit("sleep", 0.3)
    wait_for(f.running, what="the started event")
    assert not f.done()
    assert f.result(T) == 0.3
    assert not f.running() and f.done()


def test_wait_first_completed(executor):
    slow, fast = executor.submit("sleep", 0.5), executor.submit("sleep", 0.05)
    done, not_done = cf.wait([slow, fast], timeout=T, return_when=cf.FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}
    assert slow.result(T) == 0.5


def test_wait_first_exception(executor):
    slow = executor.submit("sleep", 0.5)
    ok = executor.submit("sleep", 0.01)
    bad = executor.submit("fail", "boom")
    done, not_done = cf.wait([slow, ok, bad], timeout=T, return_when=cf.FIRST_EXCEPTION)
    assert bad in done and slow in not_done
    assert isinstance(bad.exception(), zexec.TaskError)
    slow.result(T)


def test_wait_all_completed_and_timeout(executor):
    fs = [executor.submit("sleep", 0.05 * i) for i in range(4)]
    done, not_done = cf.wait(fs, timeout=T, return_when=cf.ALL_COMPLETED)
    assert done == set(fs) and not not_done
    slow = executor.submit("sleep", 0.5)
    start = time.monotonic()
    done, not_done = cf.wait([slow], timeout=0.1)
    assert not done and not_done == {slow}
    assert 0.09 <= time.monotonic() - start < 0.5
    slow.result(T)


def test_map_returns_input_order(executor):
    assert list(executor.map("sleep", [0.3, 0.05, 0.15, 0.0])) == [0.3, 0.05, 0.15, 0.0]
    assert list(executor.map("echo", [])) == []


def test_map_chunksize_sets_tasks_per_submit_message(executor):
    before = executor._core.stats["submit_frames"]
    assert list(executor.map("echo", range(100), chunksize=25)) == list(range(100))
    assert executor._core.stats["submit_frames"] - before == 4
    with pytest.raises(ValueError):
        executor.map("echo", [1], chunksize=0)


def test_map_timeout_counts_from_the_call(executor):
    start = time.monotonic()
    results = executor.map("sleep", [0.05, 0.6, 0.05], timeout=0.3)
    assert next(results) == 0.05
    with pytest.raises(cf.TimeoutError):
        next(results)
    assert 0.25 <= time.monotonic() - start < 0.6


def test_map_raises_the_task_error(executor):
    it = executor.map("echo", [1, 2])
    assert list(it) == [1, 2]
    with pytest.raises(zexec.TaskError) as info:
        list(executor.map("sleep", [0.01, "not a number"]))
    assert info.value.type == "BadArguments"


def test_cancel_queued_task_and_running_task(start_daemon):
    d = start_daemon(workers=1)
    with zexec.Executor(d.endpoint) as ex:
        running = ex.submit("sleep", 0.4)
        queued = ex.submit("sleep", 0.01)  # probably prefetched by the one worker: a revoke
        wait_for(running.running, what="the first task to start")
        assert queued.cancel() is True
        assert queued.cancelled() and queued.done()
        with pytest.raises(cf.CancelledError):
            queued.result(T)
        assert running.cancel() is False
        assert not running.cancelled()
        # as_completed/wait see the cancelled future as done
        assert set(cf.as_completed([queued, running], timeout=T)) == {queued, running}
        assert running.result(T) == 0.4
        assert running.cancel() is False  # finished


def test_cancel_after_finish_is_false(executor):
    f = executor.submit("echo", 1)
    assert f.result(T) == 1
    assert f.cancel() is False


def test_force_cancel_of_a_running_task(executor):
    f = executor.submit("sleep", 5.0)
    wait_for(f.running, what="start")
    start = time.monotonic()
    assert f.cancel(force=True) is True
    assert f.cancelled() and time.monotonic() - start < 3
    assert executor.submit("echo", "still works").result(T) == "still works"


def test_task_errors(executor):
    with pytest.raises(zexec.TaskError) as info:
        executor.submit("fail", "boom").result(T)
    e = info.value
    assert (e.type, e.message, e.task_name) == ("std::runtime_error", "boom", "fail")
    assert type(e) is zexec.TaskError

    with pytest.raises(zexec.UnknownTaskError) as info:
        executor.submit("no_such_task", 1).result(T)
    assert info.value.type == "UnknownTask" and info.value.message.startswith("unknown task 'no_such_task'")

    with pytest.raises(zexec.BadArgumentsError) as info:
        executor.submit("sleep", "x").result(T)
    assert info.value.type == "BadArguments"


def test_worker_crash(executor):
    f = executor.submit("crash")
    with pytest.raises(zexec.WorkerCrashedError) as info:
        f.result(T)
    assert info.value.type == "WorkerCrashed" and "SIGABRT" in info.value.message
    assert isinstance(f.exception(), zexec.TaskError)
    assert executor.submit("echo", 2).result(T) == 2  # the worker was replaced


def test_task_options_timeout_and_retries(executor):
    with pytest.raises(zexec.TaskTimeoutError) as info:
        executor.task("sleep", timeout=0.2).submit(3.0).result(T)
    assert info.value.type == "TaskTimeout"
    assert not isinstance(info.value, TimeoutError)

    with pytest.raises(zexec.TaskError) as info:
        executor.task("fail", retries=2).submit("again").result(T)
    assert info.value.message.endswith("(attempt 3)")

    assert list(executor.task("echo", timeout=5, retries=1).map([1, 2], chunksize=2)) == [1, 2]
    with pytest.raises(ValueError):
        executor.task("echo", timeout=0)
    with pytest.raises(ValueError):
        executor.task("echo", retries=-1)


def test_quarantine(start_daemon):
    d = start_daemon("--quarantine-after", "2", workers=1)
    with zexec.Executor(d.endpoint) as ex:
        with pytest.raises(zexec.QuarantinedError) as info:
            ex.task("crash", crash_retries=5).submit().result(T)
        assert info.value.type == "Quarantined"


def test_shutdown_cancel_futures_cancels_queued_ones(start_daemon):
    d = start_daemon(workers=1)
    ex = zexec.Executor(d.endpoint)
    first = ex.submit("sleep", 0.5)
    rest = [ex.submit("sleep", 0.3) for _ in range(5)]
    wait_for(first.running, what="the first task to start")
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result(0) == 0.5
    assert all(f.cancelled() for f in rest), [f._state for f in rest]
    with pytest.raises(RuntimeError):
        ex.submit("echo", 1)


def test_shutdown_without_wait(daemon):
    ex = zexec.Executor(daemon.endpoint)
    f = ex.submit("sleep", 0.2)
    ex.shutdown(wait=False)
    with pytest.raises(RuntimeError):
        ex.submit("echo", 1)
    assert f.result(T) == 0.2
    wait_for(lambda: not ex._core.thread.is_alive(), what="the I/O thread to end once idle")


def test_done_callbacks(executor):
    called = threading.Event()
    seen = []
    chained = []

    def callback(f):
        seen.append((f, threading.current_thread().name))
        # a callback may submit (it runs on the I/O thread, holding none of the client's locks)
        chained.append(executor.submit("echo", f.result() * 2))
        called.set()

    f = executor.submit("echo", 21)
    f.add_done_callback(callback)
    assert called.wait(T)
    assert seen[0][0] is f
    assert chained[0].result(T) == 42
    late = []
    f.add_done_callback(late.append)  # already done: runs at once, in this thread
    assert late == [f]


def test_many_tasks_none_lost(executor):
    n = 5000
    fs = [executor.submit("noop") for _ in range(n)]
    done, not_done = cf.wait(fs, timeout=30)
    assert not not_done
    assert len(done) == n and all(f.result() is None for f in fs)
    assert len({f.task_id for f in fs}) == n


def test_many_tasks_through_map_with_chunks(executor):
    assert list(executor.map("echo", range(3000), chunksize=500)) == list(range(3000))


def test_backpressure_blocks_then_raises_queue_full(start_daemon):
    d = start_daemon("--max-pending-per-client", "3", workers=3)
    with zexec.Executor(d.endpoint, submit_timeout=0.2) as ex:
        assert ex.welcome.max_pending == 3
        fs = [ex.submit("sleep", 0.6) for _ in range(3)]
        start = time.monotonic()
        with pytest.raises(zexec.QueueFullError) as info:
            ex.submit("echo", 1)
        assert time.monotonic() - start >= 0.19
        assert info.value.type == "QueueFull"
        cf.wait(fs, timeout=T)
        assert ex.submit("echo", 1).result(T) == 1  # room again


def test_backpressure_waits_for_room(start_daemon):
    d = start_daemon("--max-pending-per-client", "2", workers=2)
    with zexec.Executor(d.endpoint, submit_timeout=T) as ex:
        start = time.monotonic()
        fs = [ex.submit("sleep", 0.3) for _ in range(2)]
        third = ex.submit("echo", 3)  # blocks until one of the two finished
        assert time.monotonic() - start >= 0.25
        assert third.result(T) == 3
        assert [f.result(T) for f in fs] == [0.3, 0.3]


def test_daemon_lost_fails_every_unfinished_future(start_daemon):
    d = start_daemon("--heartbeat-ms", "50", workers=1)
    ex = zexec.Executor(d.endpoint)
    assert ex.welcome.heartbeat_ms == 50
    running = ex.submit("sleep", 5.0)
    queued = ex.submit("sleep", 5.0)
    wait_for(running.running, what="start")
    d.kill()
    start = time.monotonic()
    for f in (running, queued):
        with pytest.raises(zexec.DaemonLostError):
            f.result(T)
    assert time.monotonic() - start < 2.0  # 5 x 50 ms of silence, plus scheduling
    assert isinstance(running.exception(), ConnectionError)
    with pytest.raises(zexec.DaemonLostError):
        ex.submit("echo", 1)
    ex.shutdown()


def test_stopping_daemon_refuses_new_clients_and_tasks(start_daemon):
    d = start_daemon(workers=1)
    ex = zexec.Executor(d.endpoint)
    running = ex.submit("sleep", 1.2)  # keeps the stopping daemon alive long enough
    queued = ex.submit("sleep", 0.1)
    wait_for(running.running, what="start")
    d.terminate()  # graceful stop: the running task finishes, queued ones are cancelled

    def refused():
        try:
            zexec.Executor(d.endpoint, connect_timeout=2).shutdown()
        except zexec.DaemonError as e:
            return e
        return None

    e = wait_for(refused, what="the daemon to refuse hello")
    assert e.code == "shutting_down"
    late = ex.submit("echo", 1)
    with pytest.raises(zexec.ShuttingDownError):
        late.result(T)
    assert running.result(T) == 1.2
    with pytest.raises(cf.CancelledError):
        queued.result(T)
    ex.shutdown()


def test_connect_timeout_names_the_endpoint():
    start = time.monotonic()
    with pytest.raises(zexec.ConnectionError) as info:
        zexec.Executor("ipc:///tmp/zexec-no-such-daemon.sock", connect_timeout=0.3)
    assert "zexec-no-such-daemon" in str(info.value)
    assert time.monotonic() - start < 2


def test_tcp_endpoint_with_wildcard_results(start_daemon):
    d = start_daemon(workers=1, endpoint="tcp://*:*")
    assert d.endpoint.startswith("tcp://0.0.0.0:")
    with zexec.Executor(d.endpoint) as ex:
        assert ex._core.results_endpoint.startswith("tcp://127.0.0.1:")
        assert ex.submit("echo", "over tcp").result(T) == "over tcp"


def test_status(executor, daemon):
    executor.submit("echo", 1).result(T)
    st = zexec.status(daemon.endpoint)
    assert len(st["workers"]) == 4
    assert any(c["name"] == "pytest" for c in st["clients"])
    assert st["totals"]["succeeded"] >= 1


def test_submit_validates_before_sending(executor):
    with pytest.raises(TypeError):
        executor.submit("echo", object())
    with pytest.raises(TypeError):
        executor.submit("", 1)
    with pytest.raises(TypeError):
        executor.submit("echo", x=1)
    assert executor.submit("echo", "fine").result(T) == "fine"


def test_slow_done_callback_is_not_taken_for_a_lost_daemon(start_daemon):
    # A callback blocks the I/O thread for 12 heartbeats; the daemon's frames wait in the socket
    # meanwhile, and the client must read them rather than declare the daemon lost.
    d = start_daemon("--heartbeat-ms", "50", "--client-timeout-ms", "5000", workers=1)
    ran_on = []

    def slow(_):
        ran_on.append(threading.current_thread().name)
        time.sleep(0.6)

    with zexec.Executor(d.endpoint) as ex:
        f = ex.submit("sleep", 0.2)  # still running when the callback is added
        f.add_done_callback(slow)
        assert f.result(T) == 0.2
        assert ex.submit("echo", 2).result(T) == 2
        assert ex._core.phase == "ready"
    assert ran_on and ran_on[0].startswith("zexec-io")
