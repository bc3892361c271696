#!/usr/bin/python3
"""The Python worker the tests run (zexecd --worker-command "/usr/bin/python3 py_worker.py")."""
import os
import sys
import time

import zexec.worker as w


@w.task
def add(a, b):
    return a + b


@w.task("greet")
def say_hello(name, greeting="hello"):
    return f"{greeting}, {name}"


@w.task
def echo(x):
    return x


@w.task
def raise_value(message):
    raise ValueError(message)


class CustomError(Exception):
    pass


@w.task
def raise_custom(message):
    raise CustomError(message)


@w.task
def long_error(n):
    raise RuntimeError("x" * n)


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")


@w.task
def raise_unprintable():
    raise Unprintable()


@w.task
def raise_surrogate():
    name = os.fsdecode(b"file-\xff")  # a lone surrogate, as undecodable file names give
    raise ValueError("cannot open " + name)


@w.task
def noisy(lines):
    """Prints more than a pipe holds: the daemon's stdout must be drained by someone."""
    for i in range(lines):
        print("x" * 100, i)
    return lines


@w.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@w.task
def spin(seconds):
    """Busy for `seconds` holding the GIL in pure Python: heartbeats must still go out."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n > 0


@w.task
def pid():
    return os.getpid()


@w.task
def unencodable():
    return object()


@w.task
def crash():
    os.abort()


@w.task
def exit_worker(code):
    sys.exit(code)


@w.task
def flaky(n):
    """Raises on the runs before the n-th, then returns the run's number (w.attempt())."""
    if w.attempt() < n:
        raise RuntimeError(f"run {w.attempt()} of {n}")
    return w.attempt()


@w.task
def crashy(n):
    if w.attempt() < n:
        os.abort()
    return w.attempt()


if __name__ == "__main__":
    # PY_WORKER_ANY=1: announce no task names ("any name"), so unknown names reach this worker.
    w.run(advertise=os.environ.get("PY_WORKER_ANY") != "1")
