"""The zexec client's API: ``Executor`` (a ``concurrent.futures.Executor``), ``TaskHandle``
(``Executor.task(...)``) and ``status()``.

The connection behind an Executor is ``_core._Core`` (user side) over ``_connection.Connection``
(the I/O thread); its futures are ``_future.Future``.
"""

from __future__ import annotations  # `X | None` in annotations on Python 3.9

import atexit
import concurrent.futures
import logging
import math
import os
import shutil
import sys
import threading
import time
import weakref
from typing import Any, Iterable, Iterator, Sequence

import msgpack
import zmq

from . import protocol as proto
from ._core import _Core
from ._daemon import DaemonProcess, find_daemon, make_private_dir
from ._errors import ConnectionError, DaemonError, Error, ProtocolError
from ._future import Future

__all__ = ["Executor", "Future", "TaskHandle", "status"]

log = logging.getLogger("zexec")

_MAX_TASK_NAME_BYTES = 64 * 1024
# A submit frame of one task must stay under the limit with the longest name and the envelope.
_MAX_ARGS_BYTES = proto.MAX_MESSAGE_BYTES - 2 * _MAX_TASK_NAME_BYTES
_U32 = (1 << 32) - 1


def _default_endpoint():
    return os.environ.get("ZEXEC_ENDPOINT") or proto.default_endpoint()


def status(endpoint: str | None = None, timeout: float = 5.0) -> dict[Any, Any]:
    """Asks a daemon for its ``status`` (no hello needed) and returns the decoded map."""
    endpoint = endpoint or _default_endpoint()
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(proto.encode_status())
        if not sock.poll(int(timeout * 1000)):
            raise ConnectionError(f"no status_reply from zexecd at {endpoint} within {timeout:g} s")
        msg = proto.decode(sock.recv())
        if isinstance(msg, proto.Error):
            raise DaemonError(msg.code, msg.message, endpoint)
        if not isinstance(msg, proto.StatusReply):
            raise ProtocolError(f"expected status_reply, got {msg.NAME}")
        return msgpack.unpackb(msg.body, raw=False, strict_map_key=False)
    finally:
        sock.close()



def _timeout_ms(seconds, what):
    if seconds is None:
        return 0
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or seconds <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {seconds!r}")
    ms = math.ceil(seconds * 1000)
    if ms > _U32:
        raise ValueError(f"{what} of {seconds} s is too long")
    return ms


def _count(n, what):
    if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n > _U32:
        raise ValueError(f"{what} must be an int in [0, {_U32}], got {n!r}")
    return n


def _options(timeout=None, retries=0, crash_retries=0, retry_backoff=0.0):
    """The protocol's options map: only nonzero keys (PROTOCOL.md section 3)."""
    backoff = 0
    if isinstance(retry_backoff, bool) or not isinstance(retry_backoff, (int, float)) or retry_backoff < 0 \
            or not math.isfinite(retry_backoff):
        raise ValueError(f"retry_backoff must be a non-negative number of seconds, got {retry_backoff!r}")
    if retry_backoff:
        backoff = math.ceil(retry_backoff * 1000)  # as timeouts: a tiny backoff is 1 ms, not none
        if backoff > _U32:
            raise ValueError(f"retry_backoff of {retry_backoff} s is too long")
    opts = {"timeout_ms": _timeout_ms(timeout, "timeout"), "retries": _count(retries, "retries"),
            "crash_retries": _count(crash_retries, "crash_retries"), "retry_backoff_ms": backoff}
    return {k: v for k, v in opts.items() if v}


def _check_name(task_name):
    if not isinstance(task_name, str) or not task_name:
        raise TypeError(f"the task name must be a non-empty str, got {task_name!r}")
    if len(task_name.encode("utf-8")) > _MAX_TASK_NAME_BYTES:
        raise ValueError(f"task name of {len(task_name)} characters is too long")


def _pack_args(task_name, args):
    try:
        packed = msgpack.packb(list(args), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise TypeError(f"{task_name}: arguments cannot be encoded with msgpack: {e}") from None
    if len(packed) > _MAX_ARGS_BYTES:
        raise ValueError(f"{task_name}: arguments of {len(packed)} bytes exceed the 64 MiB message limit")
    return packed


class TaskHandle:
    """A task name plus per-task options (``Executor.task(...)``): ``.submit(*args)`` and
    ``.map(*iterables)`` without options stealing positional argument names."""

    def __init__(self, executor: Executor, name: str, options: dict[str, int]):
        _check_name(name)
        self._executor = executor
        self.name = name
        self.options = options  # the wire options map (nonzero keys only)

    def submit(self, *args: Any) -> Future:
        return self._executor._submit_many(self.name, [args], self.options, sealed=False)[0]

    def map(self, *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        return self._executor._map(self.name, self.options, iterables, timeout, chunksize)

    def __repr__(self):
        return f"<zexec.TaskHandle {self.name} {self.options}>"


def _default_name():
    base = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return base or "python"


def _stop_private(daemon, run_dir, stop_timeout):
    """Stops an embedded executor's daemon (SIGTERM, SIGKILL after stop_timeout), if any, and
    removes its run directory, if any."""
    try:
        if daemon is not None:
            daemon.stop(stop_timeout)
    finally:
        if run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


class _Resources:
    """What an Executor must release: its connection (core) and, embedded, its daemon and run
    directory. Kept apart from the Executor so that garbage collection and interpreter exit can
    release them without it."""

    live = set()  # not yet released (interpreter exit releases them)
    live_lock = threading.Lock()

    def __init__(self, core, daemon, run_dir, stop_timeout):
        self.core, self.daemon, self.run_dir, self.stop_timeout = core, daemon, run_dir, stop_timeout
        self.lock = threading.Lock()
        self.released = False
        self.pid = os.getpid()  # a child made by os.fork() inherits this object, not its daemon
        with self.live_lock:
            self.live.add(self)

    def release(self):
        """Now: stop the I/O thread (bye), then the daemon (SIGTERM, SIGKILL after stop_timeout)."""
        if os.getpid() != self.pid:
            return
        try:
            self.core.close()
        finally:
            self._after_io()

    def release_when_idle(self):
        """Once every task has finished (shutdown(wait=False), garbage collection)."""
        if os.getpid() != self.pid:
            return
        core = self.core
        with core.lock:
            alive = core.thread is not None and core.thread.is_alive()
            if alive and core.on_exit is None:
                core.on_exit = self._after_io
        if alive:
            core.close(when_idle=True)
        else:
            self._after_io()

    def _after_io(self):
        with self.lock:
            if self.released:
                return
            self.released = True
        try:
            _stop_private(self.daemon, self.run_dir, self.stop_timeout)
        finally:
            with self.live_lock:
                self.live.discard(self)

    @classmethod
    def release_all(cls):
        """At interpreter exit, as ProcessPoolExecutor does: submitted work finishes first (the
        wait is bounded by the daemon's liveness: a lost daemon fails every task), then each
        executor is released. Executors of the process that forked us are not ours to release."""
        with cls.live_lock:
            left = [r for r in cls.live if r.pid == os.getpid()]
        for r in left:
            try:
                if not r.core.on_io_thread():
                    r.core.wait_all()
                r.release()
            except Exception:  # noqa: BLE001
                log.exception("zexec: cleanup at exit failed")


atexit.register(_Resources.release_all)


class Executor(concurrent.futures.Executor):
    """Runs named tasks in zexecd worker processes; results come back in completion order.

    ``Executor(endpoint)`` connects to a running daemon (default: ``$ZEXEC_ENDPOINT``, else the
    daemon's default endpoint). ``Executor(workers=N)`` (or ``worker_command=...``) with no
    endpoint starts a private zexecd for this executor and stops it at shutdown.

    ``submit(task_name, *args)`` returns a :class:`Future`; arguments and results travel as
    msgpack. ``task(name, timeout=..., retries=...)`` gives per-task options.

    ``reconnect_timeout`` (s): a daemon that keeps sessions (``zexecd --journal``; then
    ``welcome.session`` != 0) may be lost for this long, e.g. while it restarts: the executor
    reconnects and resumes its session, its futures stay pending and ``submit()`` keeps queueing.
    Past it, or when the daemon did not resume the session, the unfinished futures fail with
    ConnectionError. 0 = fail them at once; a daemon without sessions (and an embedded
    executor's private daemon) always fails them at once.
    """

    def __init__(self, endpoint: str | None = None, *, workers: int | None = None,
                 worker_command: str | None = None, name: str | None = None, daemon: str | None = None,
                 daemon_args: Sequence[str] = (), connect_timeout: float = 10.0, submit_timeout: float = 10.0,
                 cancel_timeout: float = 5.0, stop_timeout: float = 10.0, reconnect_timeout: float = 60.0) -> None:
        if isinstance(reconnect_timeout, bool) or not isinstance(reconnect_timeout, (int, float)) \
                or not math.isfinite(reconnect_timeout) or reconnect_timeout < 0:
            raise ValueError(f"reconnect_timeout must be a non-negative number of seconds, got {reconnect_timeout!r}")
        self._daemon = None
        self._run_dir = None
        self._shutdown_lock = threading.Lock()
        self._shut = False
        embedded = endpoint is None and (workers is not None or worker_command is not None or daemon is not None
                                         or bool(daemon_args))
        if endpoint is not None and (workers is not None or worker_command is not None or daemon is not None
                                     or daemon_args):
            raise ValueError("workers/worker_command/daemon/daemon_args configure a private daemon; "
                             "they do not apply with an endpoint")
        if embedded:
            if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
                raise ValueError(f"workers must be an int >= 0, got {workers!r}")
            argv = [find_daemon(daemon)]
            self._run_dir = make_private_dir()
            argv += ["--endpoint", f"ipc://{self._run_dir}/zexecd.sock", "--print-endpoint",
                     "--log-level", "warn", "--workers", str(workers or 0)]
            if worker_command:
                argv += ["--worker-command", worker_command]
            argv += list(daemon_args)
            try:
                # The daemon's own run directory (worker sockets) goes inside ours too, so that
                # removing ours cleans up even after a daemon that had to be SIGKILLed.
                env = dict(os.environ, RUNTIME_DIRECTORY=self._run_dir)
                self._daemon = DaemonProcess(argv, start_timeout=connect_timeout, env=env)
            except BaseException:
                shutil.rmtree(self._run_dir, ignore_errors=True)
                raise
            endpoint = self._daemon.endpoint
        elif endpoint is None:
            endpoint = _default_endpoint()
        self.endpoint = endpoint
        self._stop_timeout = stop_timeout
        self._core = _Core(endpoint, name or _default_name(), submit_timeout, cancel_timeout, self._daemon,
                           reconnect_timeout)
        try:
            self._core.start(connect_timeout)
        except BaseException:
            _stop_private(self._daemon, self._run_dir, stop_timeout)
            raise
        self._resources = _Resources(self._core, self._daemon, self._run_dir, stop_timeout)
        # Dropped without shutdown(): like shutdown(wait=False). (Interpreter exit: release_all.)
        self._finalizer = weakref.finalize(self, self._resources.release_when_idle)
        self._finalizer.atexit = False

    # ---- information ----
    @property
    def welcome(self) -> proto.Welcome:
        """The daemon's ``welcome`` (client_id, results_endpoint, workers, heartbeat_ms, max_pending,
        session...): the latest one, since a reconnect (``reconnect_timeout``) brings a new one."""
        return self._core.welcome

    @property
    def daemon_pid(self) -> int | None:
        """The private daemon's pid (embedded mode), else None."""
        return self._daemon.pid if self._daemon else None

    @property
    def last_error(self) -> str | None:
        """The last problem reported by or about the daemon that no future could carry."""
        with self._core.lock:
            return self._core.last_error

    def status(self, timeout: float = 5.0) -> dict[Any, Any]:
        """The daemon's status map (PROTOCOL.md section 3, ``status``)."""
        return status(self.endpoint, timeout)

    # ---- submitting ----
    def submit(self, task_name: str, /, *args: Any, **kwargs: Any) -> Future:
        """Runs ``task_name(*args)`` in a worker; returns a :class:`Future`. Blocks while this
        client has ``max_pending`` unfinished tasks, up to ``submit_timeout`` (then QueueFullError)."""
        if kwargs:
            raise TypeError("zexec tasks take positional arguments only (options: Executor.task(...))")
        _check_name(task_name)
        return self._submit_many(task_name, [args], {}, sealed=False)[0]

    def task(self, name: str, *, timeout: float | None = None, retries: int = 0, crash_retries: int = 0,
             retry_backoff: float = 0.0) -> TaskHandle:
        """A handle for ``name`` with options: ``timeout`` (s; past it the worker is killed and the
        task fails with TaskTimeoutError), ``retries`` (after it raised), ``crash_retries`` (after
        its worker died), ``retry_backoff`` (s before the first retry, doubling)."""
        return TaskHandle(self, name, _options(timeout, retries, crash_retries, retry_backoff))

    def map(self, task_name: str, *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Results of ``task_name(*args)`` for args in ``zip(*iterables)``, in input order.

        All tasks are submitted at once; ``timeout`` counts from this call (TimeoutError from the
        iterator); ``chunksize`` tasks travel per ``submit`` message."""
        _check_name(task_name)
        return self._map(task_name, {}, iterables, timeout, chunksize)

    def _submit_many(self, task_name, argsets, options, sealed):
        with self._shutdown_lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
        entries = [(task_name, _pack_args(task_name, a), options) for a in argsets]
        return self._core.submit(entries, sealed)

    def _map(self, task_name, options, iterables, timeout, chunksize):
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else time.monotonic() + timeout
        argsets = list(zip(*iterables))
        fs = []
        try:
            for i in range(0, len(argsets), chunksize):
                fs += self._submit_many(task_name, argsets[i:i + chunksize], options, sealed=True)
        except BaseException:
            if fs:
                self._core.cancel(fs)
            raise
        core = self._core

        def result_iterator():
            try:
                fs.reverse()  # pop() from the end keeps input order
                while fs:
                    # A future whose result() raised stays in fs and is cancelled below.
                    f = fs[-1]
                    value = f.result() if end_time is None else f.result(end_time - time.monotonic())
                    del f
                    fs.pop()
                    yield value
            finally:
                if fs:
                    core.cancel(fs)  # one cancel request for all that remain

        return result_iterator()

    # ---- stopping ----
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; ``cancel_futures`` cancels those no worker started; ``wait`` waits for
        the rest, then says bye and stops the private daemon (if any). With ``wait=False`` that
        happens in the background once every task has finished."""
        core = self._core
        if wait and core.on_io_thread():
            # As ThreadPoolExecutor ("cannot join current thread"): waiting here would wait for
            # the thread that is running this very callback.
            raise RuntimeError("shutdown(wait=True) cannot run in a done callback; use wait=False")
        with self._shutdown_lock:
            self._shut = True
        if cancel_futures:
            try:
                core.cancel([], all_pending=True)
            except Error as e:
                log.warning("zexec: shutdown: cancel failed: %s", e)
        if not wait:
            self._finalizer.detach()
            self._resources.release_when_idle()
            return
        core.wait_all()  # bounded: a lost daemon fails every task after 5 heartbeats
        self._finalizer.detach()
        self._resources.release()
