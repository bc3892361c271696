"""One daemon, two languages: the Python client against a pool of C++ zexec-workers beside a
pool of Python workers. Each task goes to the pool whose workers run its name."""

import concurrent.futures as cf

import pytest

import zexec
from conftest import PY_WORKER, PYTHON


@pytest.fixture
def mixed(start_daemon):
    d = start_daemon("--pool", f"py:2:{PYTHON} {PY_WORKER}", workers=1)
    with zexec.Executor(d.endpoint, name="pools") as ex:
        yield d, ex


def test_tasks_go_to_the_pool_that_runs_their_name(mixed):
    _, ex = mixed
    greet = [ex.submit("greet", str(i)) for i in range(30)]  # only the Python workers run it
    stock = [ex.submit("random_sleep", str(i), 0.0) for i in range(30)]  # only zexec-worker
    done, not_done = cf.wait(greet + stock, timeout=20, return_when=cf.ALL_COMPLETED)
    assert not not_done
    assert [f.result() for f in greet] == [f"hello, {i}" for i in range(30)]
    assert all(f.result().startswith(f"Task={i}: ") for i, f in enumerate(stock))


def test_a_name_both_pools_run_goes_to_the_first_pool(mixed):
    d, ex = mixed
    pid = ex.submit("pid").result(20)
    pools = {w["pid"]: w["pool"] for w in ex.status()["workers"]}
    assert pools[pid] == "default"


def test_a_name_no_pool_runs_fails_fast_naming_what_each_runs(mixed):
    _, ex = mixed
    with pytest.raises(zexec.UnknownTaskError) as info:
        ex.submit("no_such_task").result(20)
    text = str(info.value)
    assert "unknown task 'no_such_task': no worker runs it" in text
    assert "py: " in text and "greet" in text and "default: " in text


def test_status_lists_both_pools_and_their_names(mixed):
    _, ex = mixed
    ex.submit("greet", "x").result(20)
    ex.submit("echo", 1).result(20)
    pools = {p["name"]: p for p in ex.status()["pools"]}
    assert set(pools) == {"default", "py"}
    assert pools["py"]["workers"] == 2
    assert "greet" in pools["py"]["task_names"] and "raise_value" in pools["py"]["task_names"]
    assert "random_sleep" in pools["default"]["task_names"]
