"""Writing zexec workers in Python (docs/PROTOCOL.md section 4).

A worker script::

    import zexec.worker as w

    @w.task
    def add(a, b):
        return a + b

    w.run()

and ``zexecd --worker-command "/usr/bin/python3 /path/to/script.py"``. ``python3 -m zexec.worker
SCRIPT.py`` (or a module name) loads the tasks from SCRIPT and runs them the same way.

Tasks run one at a time, in the order they arrive, on the thread that called ``run()`` (the main
thread, so tasks may use signals and thread-unsafe libraries). A second thread owns the sockets:
it sends heartbeats every ``$ZEXEC_HEARTBEAT_MS`` even during a long task, answers ``revoke`` at
once and batches events. (A task that holds the GIL without ever releasing it, e.g. inside a C
extension, delays heartbeats too; the daemon then takes the worker for hung.)

Errors a task reports (error event ``type``/``message``):

- the task raised: ``type(exc).__name__`` and ``str(exc)`` (e.g. ``ValueError``);
- the arguments do not bind to the function's signature: ``BadArguments``;
- no task of that name: ``UnknownTask`` with ``unknown task 'NAME'``;
- the return value cannot be encoded with msgpack: ``UnencodableResult``;
- the encoded result does not fit in a frame: ``ResultTooLarge``.

Only ``Exception`` is caught: a task raising ``SystemExit`` or ``KeyboardInterrupt`` ends the
worker (the daemon reports ``WorkerCrashed`` and replaces it).
"""

from __future__ import annotations  # `X | None` in annotations on Python 3.9

import collections
import inspect
import os
import sys
import threading
import time
from typing import Any, Callable, NoReturn, TypeVar, overload

import msgpack
import zmq

from . import protocol as proto
from ._errors import Error

__all__ = ["task", "run", "serve", "registered", "command", "attempt", "WorkerError"]

_MAX_RESULT_BYTES = proto.MAX_MESSAGE_BYTES - (64 << 10)
_MAX_ERROR_TEXT = 64 << 10  # receivers refuse str fields over 1 MiB: one long text would cost a batch
_MAX_BATCH_EVENTS = 4096
_MAX_BATCH_BYTES = 16 << 20
_MAX_FRAMES_PER_WAKE = 256
_CLOSE_LINGER_MS = 1000

_registry = {}
_signatures = {}


class WorkerError(Error):
    """The worker cannot run: missing environment, bad registration, sockets failed."""


_F = TypeVar("_F", bound=Callable[..., Any])


# `@task` returns the function itself; `@task("name")` and `@task(name=...)` return the decorator.
@overload
def task(fn: _F, /) -> _F: ...
@overload
def task(fn: str, /) -> Callable[[_F], _F]: ...
@overload
def task(fn: None = None, /, name: str | None = None) -> Callable[[_F], _F]: ...
def task(fn: Any = None, /, name: str | None = None) -> Any:
    """Registers a task: ``@task``, ``@task("name")`` or ``@task(name="name")``."""
    if isinstance(fn, str):
        fn, name = None, fn

    def register(f):
        if not callable(f):
            raise WorkerError(f"task {name or f!r}: not callable")
        n = name or getattr(f, "__name__", None)
        if not n or not isinstance(n, str):
            raise WorkerError(f"task {f!r} needs a name")
        if n in _registry and _registry[n] is not f:
            raise WorkerError(f"task '{n}' is already registered")
        _registry[n] = f
        return f

    return register(fn) if fn is not None else register


def registered() -> list[str]:
    """The registered task names, in registration order."""
    return list(_registry)


def _truncated(text):
    # Always valid UTF-8 on the wire: a message may hold lone surrogates (os.fsdecode of a file
    # name, a name decoded with surrogateescape), which msgpack cannot encode as str.
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= _MAX_ERROR_TEXT:
        return data.decode("utf-8")
    return data[:_MAX_ERROR_TEXT].decode("utf-8", "ignore") + "... (truncated)"


def _describe(exc):
    """str(exc), or what can be said when its __str__ itself raises."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001
        try:
            return repr(exc)
        except Exception:  # noqa: BLE001
            return f"<unprintable {type(exc).__name__}>"


def _error(handle, etype, message):
    return proto.Event(handle, proto.FAILED, b"", _truncated(etype), _truncated(message))


def _kind(o):
    return {list: "array", dict: "map", str: "str", bytes: "bin", bool: "bool", int: "int",
            float: "float", type(None): "nil"}.get(type(o), type(o).__name__)


_attempt = 0  # the attempt of the task running now (0: none); tasks run on one thread


def attempt() -> int:
    """Inside a task: which run of this task it is. 1 the first time; 2 and up when zexecd runs it
    again after it raised (``retries``) or its worker died under it (``crash_retries``), so a
    task with side effects it must not repeat can tell. 0 outside a task."""
    return _attempt


def _run_task(spec):
    """Runs one task; returns its final event. Never raises an Exception."""
    global _attempt
    _attempt = spec.attempt or 1
    try:
        return _run_task_once(spec)
    finally:
        _attempt = 0


def _run_task_once(spec):
    fn = _registry.get(spec.name)
    if fn is None:
        return _error(spec.id, "UnknownTask", f"unknown task '{spec.name}'")
    try:
        args = msgpack.unpackb(spec.args, raw=False, strict_map_key=False)
    except Exception as e:  # noqa: BLE001
        return _error(spec.id, "BadArguments", f"{spec.name}: arguments are not valid msgpack ({e})")
    if not isinstance(args, list):
        return _error(spec.id, "BadArguments", f"{spec.name}: arguments must be a msgpack array, got {_kind(args)}")
    sig = _signatures.get(fn, False)
    if sig is False:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None  # some builtins have none: let the call itself decide
        _signatures[fn] = sig
    if sig is not None:
        try:
            sig.bind(*args)
        except TypeError as e:
            return _error(spec.id, "BadArguments", f"{spec.name}: {e}")
    try:
        result = fn(*args)
    except Exception as e:  # noqa: BLE001 - every task error is reported, the worker goes on
        return _error(spec.id, type(e).__name__, _describe(e))
    try:
        value = msgpack.packb(result, use_bin_type=True)
    except Exception as e:  # noqa: BLE001
        return _error(spec.id, "UnencodableResult",
                      f"{spec.name}: the result ({type(result).__name__}) cannot be encoded with msgpack: {e}")
    if len(value) > _MAX_RESULT_BYTES:
        return _error(spec.id, "ResultTooLarge", f"{spec.name}: result of {len(value)} bytes exceeds the "
                      f"{_MAX_RESULT_BYTES} bytes a message can carry")
    return proto.Event(spec.id, proto.OK, value)


class _Mailbox:
    """What the task thread and the I/O thread share: the task queue and the event outbox.

    A task is either still queued (revocable) or reported started, never both and never neither:
    next_task() and revoke() take the same lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.queue = collections.deque()
        self.outbox = []  # (event, busy_us)
        self.stopped = False
        self.busy = False
        self.exited = False
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def wake(self):
        try:
            os.eventfd_write(self.wake_fd, 1)
        except OSError:
            pass

    def clear_wake(self):
        try:
            os.eventfd_read(self.wake_fd)
        except OSError:
            pass

    def push_tasks(self, tasks):
        with self.lock:
            self.queue.extend(tasks)
            self.ready.notify()

    def revoke(self, ids):
        wanted = set(ids)
        with self.lock:
            removed = [t.id for t in self.queue if t.id in wanted]
            if removed:
                self.queue = collections.deque(t for t in self.queue if t.id not in wanted)
            return removed

    def stop(self):
        with self.lock:
            self.stopped = True
            self.ready.notify_all()

    def take_events(self):
        with self.lock:
            events, self.outbox = self.outbox, []
            return events

    def unfinished(self):
        with self.lock:
            return len(self.queue) + (1 if self.busy else 0)

    def next_task(self):
        with self.lock:
            while not self.stopped and not self.queue:
                self.ready.wait()
            if self.stopped:
                return None
            t = self.queue.popleft()
            self.busy = True
            # Only empty -> non-empty wakes the I/O thread; later events join the same batch.
            wake = not self.outbox
            self.outbox.append((proto.Event(t.id, proto.STARTED), 0))
        if wake:
            self.wake()
        return t

    def finish(self, event, busy_us):
        with self.lock:
            self.busy = False
            wake = not self.outbox
            self.outbox.append((event, busy_us))
        if wake:
            self.wake()

    def mark_exited(self):
        with self.lock:
            self.exited = True
            self.busy = False
        self.wake()


class _Session:
    """The I/O thread: the two sockets, frames waiting to go, heartbeats, the parent check."""

    def __init__(self, config, mailbox, hello, parent_pid):
        self.config = config
        self.mailbox = mailbox
        self.hello = hello
        self.parent_pid = parent_pid
        self.ctx = zmq.Context()
        self.tasks = self.ctx.socket(zmq.PULL)
        self.events = self.ctx.socket(zmq.PUSH)
        self.tasks.setsockopt(zmq.MAXMSGSIZE, proto.MAX_MESSAGE_BYTES)
        self.tasks.setsockopt(zmq.LINGER, 0)
        self.events.setsockopt(zmq.LINGER, _CLOSE_LINGER_MS)
        for sock, var, ep in ((self.tasks, "ZEXEC_TASKS_ENDPOINT", config["tasks"]),
                              (self.events, "ZEXEC_EVENTS_ENDPOINT", config["events"])):
            try:
                sock.connect(ep)
            except zmq.ZMQError as e:
                self.close()
                raise WorkerError(f"cannot connect to {var}={ep!r}: {e}") from None
        self.pending = collections.deque()
        self.last_queued = time.monotonic()
        self.exit_code = 1

    def close(self):
        self.tasks.close()
        self.events.close()
        self.ctx.term()

    def run(self):
        try:
            self.exit_code = self.serve()
        except Exception as e:  # noqa: BLE001
            _warn(f"I/O thread failed: {type(e).__name__}: {e}")
            self.exit_code = 1
        finally:
            # Whatever ended the I/O, tasks must stop: nobody would hear of their results.
            self.mailbox.stop()

    def serve(self):
        hb = self.config["heartbeat_ms"] / 1000.0
        self.queue(self.hello)
        self.send_pending()
        next_parent_check = time.monotonic() + hb
        poller = zmq.Poller()
        poller.register(self.tasks, zmq.POLLIN)
        poller.register(self.mailbox.wake_fd, zmq.POLLIN)
        while True:
            # Read the flag before collecting: the task thread posts its last event first.
            if self.mailbox.exited:
                self.collect_events()
                break
            now = time.monotonic()
            wake_at = min(self.last_queued + hb, next_parent_check)
            poller.register(self.events, zmq.POLLOUT if self.pending else 0)
            ready = dict(poller.poll(max(0, int((wake_at - now) * 1000 + 0.999))))
            if self.mailbox.wake_fd in ready:
                self.mailbox.clear_wake()
            if self.tasks in ready:
                self.receive_frames()
            self.collect_events()
            now = time.monotonic()
            if now >= next_parent_check:
                if os.getppid() != self.parent_pid:
                    return self.exit_orphaned()
                next_parent_check = now + hb
            if now - self.last_queued >= hb:
                # An empty worker_events is the heartbeat. If earlier frames are still stuck the
                # daemon is not reading; piling heartbeats behind them would tell it nothing.
                if not self.pending:
                    self.queue(proto.WorkerEvents(self.config["worker_id"], 0, []))
                else:
                    self.last_queued = now
            self.send_pending()
        self.drain_pending()
        return 0

    def receive_frames(self):
        for _ in range(_MAX_FRAMES_PER_WAKE):
            try:
                parts = self.tasks.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) != 1:
                _warn("dropped a multipart message from the daemon")
                continue
            try:
                msg = proto.decode(parts[0])
            except proto.ProtocolError as e:
                _warn(f"dropped a bad frame from the daemon: {e}")
                continue
            if isinstance(msg, proto.Tasks):
                self.mailbox.push_tasks(msg.tasks)
            elif isinstance(msg, proto.Revoke):
                revoked = self.mailbox.revoke(msg.task_ids)
                # Events first: every task left out of the answer because it started then has its
                # started event ahead of the answer (PROTOCOL.md section 4).
                self.collect_events()
                self.queue(proto.WorkerRevoked(self.config["worker_id"], revoked))
            elif isinstance(msg, proto.Shutdown):
                self.mailbox.stop()
            else:
                _warn(f"ignored a {msg.NAME} message, which daemons do not send to workers")

    def collect_events(self):
        events = self.mailbox.take_events()
        if not events:
            return
        batch, busy, size = [], 0, 0
        for event, busy_us in events:
            n = 32 + len(event.value) + len(event.error_type) + len(event.error_message)
            if batch and (size + n > _MAX_BATCH_BYTES or len(batch) >= _MAX_BATCH_EVENTS):
                self.queue(proto.WorkerEvents(self.config["worker_id"], busy, batch))
                batch, busy, size = [], 0, 0
            batch.append(event)
            busy += busy_us
            size += n
        self.queue(proto.WorkerEvents(self.config["worker_id"], busy, batch))

    def queue(self, msg):
        self.pending.append(proto.encode(msg))
        self.last_queued = time.monotonic()

    def send_pending(self):
        while self.pending:
            try:
                self.events.send(self.pending[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            self.pending.popleft()

    def drain_pending(self):
        deadline = time.monotonic() + _CLOSE_LINGER_MS / 1000.0
        self.send_pending()
        while self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                _warn(f"the daemon is not reading; dropped {len(self.pending)} messages at exit")
                return
            self.events.poll(int(left * 1000) + 1, zmq.POLLOUT)
            self.send_pending()

    def exit_orphaned(self):
        _warn(f"parent process {self.parent_pid} is gone; exiting")
        self.events.setsockopt(zmq.LINGER, 0)  # nobody is left to deliver to
        with self.mailbox.lock:
            busy = self.mailbox.busy
        if busy:
            # The running task cannot be interrupted and nobody wants its result.
            os._exit(1)
        self.mailbox.stop()
        return 1


def _warn(text):
    print(f"zexec worker {os.getpid()}: {text}", file=sys.stderr, flush=True)


def _config_from_env():
    env = os.environ
    missing = [v for v in ("ZEXEC_TASKS_ENDPOINT", "ZEXEC_EVENTS_ENDPOINT", "ZEXEC_WORKER_ID") if not env.get(v)]
    if missing:
        raise WorkerError(f"missing environment variable(s) {', '.join(missing)}: a zexec worker is "
                          "started by zexecd, which sets them (docs/PROTOCOL.md section 4)")
    wid = env["ZEXEC_WORKER_ID"]
    if not wid.isdigit() or int(wid) >= 1 << 64:
        raise WorkerError(f"ZEXEC_WORKER_ID={wid!r} is not a decimal unsigned integer")
    hb = env.get("ZEXEC_HEARTBEAT_MS") or "1000"
    if not hb.isdigit() or int(hb) == 0:
        raise WorkerError(f"ZEXEC_HEARTBEAT_MS={hb!r} is not a positive number of milliseconds")
    return {"tasks": env["ZEXEC_TASKS_ENDPOINT"], "events": env["ZEXEC_EVENTS_ENDPOINT"],
            "worker_id": int(wid), "heartbeat_ms": int(hb)}


def serve(*, capacity: int = 64, advertise: bool = True) -> int:
    """Runs the registered tasks for the daemon that started this process; returns the exit
    status: 0 after the daemon's ``shutdown``, 1 when the daemon died or the I/O failed.

    ``capacity``: the most tasks held at once (running + prefetched). ``advertise``: announce the
    registered names in ``worker_hello`` so the daemon routes only those here; False announces
    none ("any name": unknown names then get ``UnknownTask`` from this worker)."""
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity < 1 << 32:
        raise WorkerError("capacity must be an int >= 1")
    config = _config_from_env()
    hello = proto.WorkerHello(config["worker_id"], os.getpid(), capacity, list(_registry) if advertise else [])
    mailbox = _Mailbox()
    session = _Session(config, mailbox, hello, os.getppid())
    io = threading.Thread(target=session.run, name="zexec-worker-io", daemon=True)
    io.start()
    try:
        while True:
            spec = mailbox.next_task()
            if spec is None:
                break
            begin = time.perf_counter()
            event = _run_task(spec)
            mailbox.finish(event, int((time.perf_counter() - begin) * 1e6))
    finally:
        # However the loop ends (even by SystemExit from a task), the I/O thread must flush and stop.
        mailbox.mark_exited()
        io.join(_CLOSE_LINGER_MS / 1000.0 + 5)
    if io.is_alive():
        return 1  # stuck sockets: leave them to process exit
    session.close()
    return session.exit_code


def run(*, capacity: int = 64, advertise: bool = True) -> NoReturn:
    """``serve()`` and exit with its status (the usual last line of a worker script)."""
    try:
        code = serve(capacity=capacity, advertise=advertise)
    except WorkerError as e:
        print(f"zexec worker: {e}", file=sys.stderr, flush=True)
        code = 2
    sys.stdout.flush()
    sys.exit(code)


def command(script: str, *functions: str) -> str:
    """The ``worker_command`` that serves ``functions`` (names of plain functions) and the
    ``@task`` functions of ``script`` with this Python: e.g.
    ``zexec.Executor(workers=4, worker_command=zexec.worker.command(__file__, "task"))`` runs the
    program's own ``def task(...)`` in zexecd's workers, unchanged."""
    import shlex

    target = os.path.abspath(script)
    if functions:
        target += ":" + ",".join(functions)
    return f"{shlex.quote(sys.executable)} -m zexec.worker {shlex.quote(target)}"


def _main(argv):
    """``python3 -m zexec.worker SCRIPT.py|MODULE[:FUNC,...]``: load the tasks, then run()."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python3 -m zexec.worker SCRIPT.py|MODULE[:FUNCTION,...]\n"
              "Loads the @zexec.worker.task functions of SCRIPT or MODULE, and the plain functions named\n"
              "after ':', and serves them to the zexecd that started this process.",
              file=sys.stderr if len(argv) != 1 else sys.stdout)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    target, _, names = argv[0].partition(":")
    if target.endswith(".py") or os.sep in target:
        import runpy
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
        # Not "__main__": the script's `if __name__ == "__main__":` part (the producer) stays off.
        namespace = runpy.run_path(target, run_name="__zexec_worker__")
    else:
        import importlib
        sys.path.insert(0, os.getcwd())
        namespace = vars(importlib.import_module(target))
    for name in filter(None, names.split(",")):
        fn = namespace.get(name)
        if not callable(fn):
            print(f"zexec worker: {target} has no function '{name}'", file=sys.stderr, flush=True)
            sys.exit(2)
        if _registry.get(name) is not fn:
            task(fn, name=name)
    run()


if __name__ == "__main__":
    # Run as `python3 -m zexec.worker`, this file is __main__, a different module object than the
    # `zexec.worker` the tasks register with: hand over to that one.
    from zexec.worker import _main as _real_main

    _real_main(sys.argv[1:])
