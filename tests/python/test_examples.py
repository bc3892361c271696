"""The seed's two programs on zexec (examples/python): they run as the README shows and print
what the ProcessPoolExecutor originals print. Both run at once (each sleeps up to 10 s)."""

import os
import re
import subprocess

from conftest import PACKAGE_DIR, PYTHON, REPO

EXAMPLES = os.path.join(REPO, "examples", "python")


def _start(name):
    env = dict(os.environ, PYTHONPATH=PACKAGE_DIR, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.Popen([PYTHON, os.path.join(EXAMPLES, name)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)


def test_seed_programs_print_results_in_completion_order_and_the_timeout():
    plain, timeout = _start("as_completed.py"), _start("as_completed_timeout.py")
    out, err = plain.communicate(timeout=25)
    assert plain.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 10, out
    parsed = [re.fullmatch(r"Task=(\d): (\d\.\d\d)", line) for line in lines]
    assert all(parsed), out
    assert sorted(int(m.group(1)) for m in parsed) == list(range(10))
    # Completion order: by sleep (10 x value), give or take when each task started. The ten
    # workers are Python interpreters started at once, and on two loaded cores the last one has
    # been seen to start 1.1 s after the first (Task=0: 0.99 before Task=6: 0.88, with a package
    # build and a booting container beside the suite). So two tasks may swap only when their
    # sleeps differ by under 3 s; exact completion order, with workers already up, is
    # test_executor.py's test_as_completed_yields_in_completion_order.
    values = [float(m.group(2)) for m in parsed]
    assert all(b >= a - 0.3 for a, b in zip(values, values[1:])), out
    out, err = timeout.communicate(timeout=25)
    assert timeout.returncode == 0, err
    assert out.splitlines()[-1] == "Timed out waiting for a result", out
