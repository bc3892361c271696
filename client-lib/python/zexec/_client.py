"""The zexec client: ``Executor`` (a ``concurrent.futures.Executor``) and its ``Future``.

Threading model. pyzmq sockets are not thread-safe, so one background I/O thread owns both
sockets (the DEALER to the daemon and the PULL for this client's results). User threads never
touch a socket: they put work (tasks to submit, cancel requests) into lock-protected queues and
wake the I/O thread through an eventfd that its poll watches like a socket. The I/O thread
completes futures (and so runs done callbacks) while holding none of our locks, so a callback may
submit more work.
"""

import atexit
import collections
import concurrent.futures
import concurrent.futures._base as _cf
import itertools
import logging
import math
import os
import shutil
import sys
import threading
import time
import weakref

import msgpack
import zmq

from . import protocol as proto
from ._daemon import DaemonProcess, find_daemon, make_private_dir
from ._errors import (ConnectionError, DaemonError, DaemonLostError, Error, ProtocolError,
                      QueueFullError, task_error)

__all__ = ["Executor", "Future", "TaskHandle", "status", "resolve_results_endpoint"]

log = logging.getLogger("zexec")

_MAX_TASK_NAME_BYTES = 64 * 1024
_MAX_ARGS_BYTES = proto.MAX_MESSAGE_BYTES - 64 * 1024  # a submit frame must stay under the limit
_MAX_BATCH_TASKS = 4096  # coalesced single submits per `submit` frame
_MAX_BATCH_BYTES = 4 << 20
_MAX_HELD_FRAMES = 4  # take more from the outbox only while fewer frames wait to go
_READ_BUDGET = 256  # frames per socket per turn: batching without starving the other socket
_U32 = (1 << 32) - 1


def resolve_results_endpoint(results, daemon_endpoint):
    """The endpoint to connect to for a results endpoint announced in ``welcome``: a tcp wildcard
    host (``*``, ``0.0.0.0``, ``[::]``) means "the host you used to reach the daemon"."""
    def split(ep):
        if not ep.startswith("tcp://"):
            return None
        host, sep, port = ep[6:].rpartition(":")
        return (host, port) if sep else None

    wild = ("*", "0.0.0.0", "[::]", "::")
    r = split(results)
    if not r or r[0] not in wild:
        return results
    d = split(daemon_endpoint)
    host = d[0] if d and d[0] and d[0] not in wild else "127.0.0.1"
    host = host.rpartition(";")[2]  # a connect endpoint may carry a source address
    return f"tcp://{host}:{r[1]}"


def status(endpoint=None, timeout=5.0):
    """Asks a daemon for its ``status`` (no hello needed) and returns the decoded map."""
    endpoint = endpoint or os.environ.get("ZEXEC_ENDPOINT") or proto.default_endpoint()
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
            raise DaemonError(msg.code, msg.message)
        if not isinstance(msg, proto.StatusReply):
            raise ProtocolError(f"expected status_reply, got {msg.NAME}")
        return msgpack.unpackb(msg.body, raw=False, strict_map_key=False)
    finally:
        sock.close()


class Future(concurrent.futures.Future):
    """A zexec task's future: a real ``concurrent.futures.Future``, so ``as_completed``, ``wait``,
    ``result(timeout)``, ``exception()`` and ``add_done_callback`` work unchanged.

    It is PENDING until a worker starts the task, then RUNNING. ``cancel()`` asks the daemon and
    returns True only if the daemon cancelled it (as ProcessPoolExecutor: False once running).
    """

    def __init__(self, core, task_id, task_name, spec):
        super().__init__()
        self._core = core
        self.task_id = task_id  # this client's id of the task (unique per executor)
        self.task_name = task_name
        self._spec = spec  # the wire task, until the I/O thread takes it
        self._queued = False  # in the outbox, not sent yet (guarded by core.lock)

    def __repr__(self):
        return f"<zexec.Future {self.task_name}#{self.task_id} {self._state.lower()}>"

    def cancel(self, force=False):
        """Asks the daemon to cancel the task; True only if it was (then this future is
        CANCELLED). ``force=True`` also stops a running task by stopping its worker (the daemon
        replaces it). Waits for the daemon's answer up to the executor's ``cancel_timeout``."""
        with self._condition:
            if self._state in (_cf.CANCELLED, _cf.CANCELLED_AND_NOTIFIED):
                return True
            if self._state == _cf.FINISHED or (self._state == _cf.RUNNING and not force):
                return False
        self._core.cancel([self], force=force)
        return self.cancelled()

    # ---- used by the I/O thread ----
    def _settle_cancelled(self):
        # As the stdlib's cancel(), but also from RUNNING (a forced cancel stopped the task), then
        # set_running_or_notify_cancel() tells wait()/as_completed() waiters, which only count
        # CANCELLED_AND_NOTIFIED as done.
        with self._condition:
            if self._state not in (_cf.PENDING, _cf.RUNNING):
                return
            self._state = _cf.CANCELLED
            self._condition.notify_all()
        self._invoke_callbacks()
        self.set_running_or_notify_cancel()

    def _settle_running(self):
        with self._condition:
            if self._state != _cf.PENDING:
                return
        self.set_running_or_notify_cancel()

    def _settle(self, result=None, exc=None):
        try:
            if exc is not None:
                self.set_exception(exc)
            else:
                self.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass  # already settled (cancelled); a final event never settles a future twice


class _CancelRequest:
    __slots__ = ("request_id", "futures", "force", "all", "done", "failure")

    def __init__(self, request_id, futures, force, all_pending=False):
        self.request_id = request_id
        self.futures = futures
        self.force = force
        self.all = all_pending
        self.done = threading.Event()
        self.failure = None


class _Core:
    """The connection to one daemon: shared queues (user side) and the I/O thread."""

    CONNECTING, READY, BROKEN, CLOSED = "connecting", "ready", "broken", "closed"

    def __init__(self, endpoint, name, submit_timeout, cancel_timeout, daemon=None):
        self.endpoint = endpoint
        self.name = name
        self.submit_timeout = submit_timeout
        self.cancel_timeout = cancel_timeout
        self.daemon = daemon  # DaemonProcess of an embedded executor (watched for death)

        # ---- shared, guarded by lock ----
        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)  # room under max_pending / phase changed
        self.changed = threading.Condition(self.lock)  # handshake / unfinished count
        self.outbox = collections.deque()  # batches (lists of futures); sealed ones keep their size
        self.cancels = collections.deque()
        self.phase = self.CONNECTING
        self.failure = None  # exception factory once broken/closed
        self.welcome = None
        self.results_endpoint = None
        self.unfinished = 0  # submitted (outbox included), not final yet
        self.max_pending = 0
        self.stop = False
        self.stop_when_idle = False
        self.last_error = None
        self.stats = collections.Counter()  # frames sent per type (for tests and curiosity)
        self._ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self.on_exit = None  # run by the I/O thread when it ends (shutdown(wait=False))

        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.wake_lock = threading.Lock()
        self.thread = None

        # ---- I/O thread only ----
        self.ctx = zmq.Context()
        self.inflight = {}  # task id -> Future, sent and not final
        self.awaiting = {}  # request id -> _CancelRequest
        self.sendq = collections.deque()
        self.acked_upto = 0
        self.ack_sent = 0
        self.seen_ahead = set()
        self.heartbeat = 0.0
        self.hello_sent = False
        self.io_phase = self.CONNECTING
        self.next_daemon_check = 0.0

    # ================= user threads =================

    def start(self, connect_timeout):
        self.dealer = self.ctx.socket(zmq.DEALER)
        # immediate: hello waits in our sendq until a connection exists and is sent exactly once
        # (a second hello would make the daemon start a new client, PROTOCOL.md section 2).
        self.dealer.setsockopt(zmq.IMMEDIATE, 1)
        self.dealer.setsockopt(zmq.RECONNECT_IVL, 10)
        self.dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self.dealer.setsockopt(zmq.LINGER, 1000)
        self.dealer.setsockopt(zmq.MAXMSGSIZE, proto.MAX_MESSAGE_BYTES)
        try:
            self.dealer.connect(self.endpoint)
        except zmq.ZMQError as e:
            self.dealer.close(0)
            self.ctx.term()
            with self.wake_lock:
                os.close(self.wake_fd)
                self.wake_fd = -1
            raise ConnectionError(f"cannot connect to zexecd at {self.endpoint}: {e}") from None
        self.results = None
        self.sendq.append(proto.encode_hello(self.name, os.getpid()))
        self.thread = threading.Thread(target=self._run, name=f"zexec-io {self.endpoint}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + connect_timeout
        with self.lock:
            while self.phase == self.CONNECTING:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, 0.05))
                if self.phase == self.CONNECTING and self.daemon is not None:
                    how = self.daemon.exited()
                    if how:
                        self.failure = lambda: ConnectionError(f"zexecd {how} before accepting clients")
                        break
            phase, failure = self.phase, self.failure
        if phase == self.READY:
            return
        self.close()
        if failure is not None:
            raise failure()
        raise ConnectionError(f"zexecd not reachable at {self.endpoint} after {connect_timeout:g} s "
                              "(no welcome; is zexecd running and serving that endpoint?)")

    def on_io_thread(self):
        return threading.current_thread() is self.thread

    def wake(self):
        # Under wake_lock: the I/O thread closes the fd at exit, and a write to a closed (maybe
        # reused) fd number would hit some other file.
        with self.wake_lock:
            if self.wake_fd < 0:
                return
            try:
                os.eventfd_write(self.wake_fd, 1)
            except OSError:
                pass  # saturated counter: a wake-up is pending anyway

    def _raise_unusable(self):  # lock held
        if self.failure is not None:
            raise self.failure()
        raise RuntimeError("cannot schedule new futures after shutdown")

    def submit(self, entries, sealed):
        """Queues tasks: ``entries`` = [(name, args_bytes, options_dict)]. Blocks (up to
        submit_timeout) while this client has max_pending unfinished tasks. ``sealed`` keeps
        the entries together as one ``submit`` frame (map's chunksize)."""
        n = len(entries)
        on_io = self.on_io_thread()
        deadline = time.monotonic() + self.submit_timeout
        with self.lock:
            if self.phase != self.READY or self.stop or self.stop_when_idle:
                self._raise_unusable()
            limit = self.max_pending
            if limit and n > limit:
                raise ValueError(f"{n} tasks in one chunk, more than max_pending ({limit})")
            while limit and self.unfinished + n > limit:
                left = deadline - time.monotonic()
                if on_io or left <= 0:
                    why = ("a done callback cannot wait for room" if on_io else
                           f"no room came within {self.submit_timeout:g} s")
                    raise QueueFullError("QueueFull", f"this client already has {self.unfinished} unfinished "
                                         f"tasks, the most zexecd at {self.endpoint} accepts (max_pending "
                                         f"{limit}); {why}", entries[0][0])
                self.space.wait(left)
                if self.phase != self.READY or self.stop or self.stop_when_idle:
                    self._raise_unusable()
            self.unfinished += n
            futures = []
            for name, args, options in entries:
                tid = next(self._ids)
                f = Future(self, tid, name, proto.Task(tid, name, args, options))
                f._queued = True
                futures.append(f)
            was_empty = not self.outbox
            if not sealed and self.outbox and self.outbox[-1][0] is False \
                    and len(self.outbox[-1][1]) < _MAX_BATCH_TASKS:
                self.outbox[-1][1].extend(futures)
            else:
                self.outbox.append([sealed, futures])
        if was_empty:
            self.wake()
        return futures

    def cancel(self, futures, force=False, all_pending=False):
        """Cancels futures (or, with all_pending, every unstarted one). Tasks still in the outbox
        are cancelled here; the others need one daemon round trip (bounded by cancel_timeout).
        Returns how many were cancelled."""
        local = []
        with self.lock:
            if all_pending:
                for batch in self.outbox:
                    for f in batch[1]:
                        if f._queued:
                            f._queued = False
                            local.append(f)
                self.outbox.clear()
            else:
                for f in futures:
                    if f._queued:
                        f._queued = False
                        local.append(f)
            if local:
                self.unfinished -= len(local)
                self.space.notify_all()
                self.changed.notify_all()
            ready = self.phase == self.READY
        for f in local:
            f._settle_cancelled()
        local_ids = {id(f) for f in local}
        remote = [] if all_pending else [
            f for f in futures if id(f) not in local_ids and
            (f._state == _cf.PENDING or (force and f._state == _cf.RUNNING))]
        if not ready or not (remote or all_pending):
            return len(local)
        if self.on_io_thread():
            raise Error("cancel() of a sent task cannot run on the zexec I/O thread (in a done "
                        "callback): the daemon's answer would never be read")
        req = _CancelRequest(next(self._request_ids), remote, force, all_pending)
        with self.lock:
            if self.phase != self.READY:
                return len(local)
            self.cancels.append(req)
        self.wake()
        if not req.done.wait(self.cancel_timeout):
            log.warning("zexec: no cancel_reply from zexecd at %s within %g s", self.endpoint,
                        self.cancel_timeout)
        elif req.failure is not None:
            raise ConnectionError(f"cancel failed: {req.failure}")
        n = len(local)
        n += sum(1 for f in (req.futures or []) if f.cancelled())
        return n

    def wait_all(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while self.unfinished > 0:
                if self.on_io_thread():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.changed.wait(left)
            return True

    def close(self, when_idle=False):
        """Stops the I/O thread (at once, or once nothing is unfinished) and joins it unless
        called from it (a done callback) or when_idle."""
        with self.lock:
            if when_idle:
                self.stop_when_idle = True
            else:
                self.stop = True
            self.changed.notify_all()  # a broken I/O thread waits on it, not on the eventfd
        self.wake()
        if when_idle or self.thread is None or self.on_io_thread():
            return
        self.thread.join()

    # ================= I/O thread =================

    def _run(self):
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - the thread must always settle every future
            log.exception("zexec I/O thread failed")
            reason = f"zexec client I/O thread failed: {type(e).__name__}: {e}"
            self._fail_everything(lambda: ConnectionError(reason), self.BROKEN)
        self._say_bye()
        ep = self.endpoint
        self._fail_everything(lambda: Error(f"zexec Executor for {ep} was shut down before the task "
                                            "finished"), self.CLOSED)
        for s in (self.dealer, self.results):
            if s is not None:
                s.close()
        self.ctx.term()
        with self.wake_lock:
            os.close(self.wake_fd)
            self.wake_fd = -1
        if self.on_exit is not None:
            try:
                self.on_exit()
            except Exception:  # noqa: BLE001
                log.exception("zexec: cleanup after shutdown failed")

    def _loop(self):
        self.last_send = self.last_recv = time.monotonic()
        poller = zmq.Poller()
        poller.register(self.wake_fd, zmq.POLLIN)
        poller.register(self.dealer, zmq.POLLIN)
        results_registered = False
        while True:
            if self._take_work():
                return
            self._flush()
            now = time.monotonic()
            self._timers(now)
            if self.io_phase == self.BROKEN:
                # Nothing will come any more; wait for close() to end the thread.
                with self.lock:
                    while not (self.stop or self.stop_when_idle):
                        self.changed.wait()
                return
            if self.results is not None and not results_registered:
                poller.register(self.results, zmq.POLLIN)
                results_registered = True
            want_out = bool(self.sendq) or (self.io_phase == self.READY and self.acked_upto > self.ack_sent)
            poller.register(self.dealer, zmq.POLLIN | (zmq.POLLOUT if want_out else 0))
            events = dict(poller.poll(self._poll_timeout_ms(now)))
            if self.wake_fd in events:
                try:
                    os.eventfd_read(self.wake_fd)
                except BlockingIOError:
                    pass
            if events.get(self.dealer, 0) & zmq.POLLIN:
                self._read_dealer()
            if self.results is not None and self.results in events:
                self._read_results()

    def _poll_timeout_ms(self, now):
        nxt = now + 1.0
        if self.io_phase == self.READY and self.heartbeat > 0:
            nxt = min(nxt, self.last_send + self.heartbeat, self.last_recv + 5 * self.heartbeat + 0.001)
        return max(0, math.ceil((nxt - now) * 1000))

    def _take_work(self):
        """Moves queued tasks and cancel requests into frames. Returns True to stop."""
        batches = []
        with self.lock:
            if self.stop:
                return True
            if self.stop_when_idle and self.unfinished == 0 and not self.outbox and not self.sendq:
                return True
            if self.io_phase == self.READY and len(self.sendq) < _MAX_HELD_FRAMES and self.outbox:
                # Claimed under the lock: from here on cancel() must ask the daemon.
                for sealed, futures in self.outbox:
                    live = [f for f in futures if f._queued]
                    for f in live:
                        f._queued = False
                    if live:
                        batches.append((sealed, live))
                self.outbox.clear()
            cancels = list(self.cancels)
            self.cancels.clear()
        # Submits go before the cancels taken in the same turn: a cancel never overtakes its task.
        tasks, size = [], 0

        def emit():
            nonlocal tasks, size
            if tasks:
                self.sendq.append(proto.encode_submit(tasks))
                self.stats["submit_frames"] += 1
                tasks, size = [], 0

        for sealed, futures in batches:
            if sealed:
                emit()
            for f in futures:
                self.inflight[f.task_id] = f
                tasks.append(f._spec)
                size += len(f._spec.args) + len(f._spec.name) + 24
                f._spec = None
                if not sealed and (len(tasks) >= _MAX_BATCH_TASKS or size >= _MAX_BATCH_BYTES):
                    emit()
            if sealed:
                emit()
        emit()
        for req in cancels:
            self._send_cancel(req)
        return False

    def _send_cancel(self, req):
        if req.all:
            ids = [tid for tid, f in self.inflight.items() if req.force or f._state == _cf.PENDING]
            req.futures = [self.inflight[i] for i in ids]
        else:
            ids = [f.task_id for f in req.futures if f.task_id in self.inflight]
        if not ids:  # all already final: nothing to ask
            req.done.set()
            return
        self.awaiting[req.request_id] = req
        self.sendq.append(proto.encode_cancel(req.request_id, ids, req.force))
        self.stats["cancel_frames"] += 1

    def _send(self, frame):
        try:
            self.dealer.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as e:
            self._set_last_error(f"send to zexecd failed: {e}")
            return True  # dropped: holding it would retry forever
        self.hello_sent = True
        self.last_send = time.monotonic()
        return True

    def _flush(self):
        # The ack jumps the queue: it is tiny and lets the daemon send more updates.
        if self.io_phase == self.READY and self.acked_upto > self.ack_sent:
            if not self._send(proto.encode_ack(self.acked_upto)):
                return
            self.ack_sent = self.acked_upto
        while self.sendq:
            if not self._send(self.sendq[0]):
                return
            self.sendq.popleft()

    def _timers(self, now):
        if self.io_phase != self.READY:
            return
        if self.daemon is not None and now >= self.next_daemon_check:
            self.next_daemon_check = now + 0.05
            how = self.daemon.exited()
            if how:
                reason = f"the private zexecd {how}"
                self._fail_everything(lambda: DaemonLostError(reason), self.BROKEN)
                return
        if self.heartbeat > 0:
            silent = now - self.last_recv
            # (Frames already waiting mean a slow turn of ours, e.g. a long done callback.)
            if silent > 5 * self.heartbeat and not self._input_waiting():
                reason = (f"lost connection to zexecd at {self.endpoint}: nothing heard for "
                          f"{silent:.3f} s (heartbeat {self.heartbeat * 1000:.0f} ms)")
                self._fail_everything(lambda: DaemonLostError(reason), self.BROKEN)
                return
            if now - self.last_send >= self.heartbeat and not self.sendq:
                self.sendq.append(proto.encode_heartbeat())
                self._flush()

    def _input_waiting(self):
        return bool(self.dealer.poll(0) or (self.results is not None and self.results.poll(0)))

    def _say_bye(self):
        if self.io_phase == self.BROKEN or not self.hello_sent:
            self.dealer.setsockopt(zmq.LINGER, 0)  # nobody would take it
            return
        self.sendq.clear()
        try:
            self.dealer.send(proto.encode_bye(), zmq.NOBLOCK)
        except zmq.ZMQError:
            self.dealer.setsockopt(zmq.LINGER, 0)  # the daemon drops a silent client anyway

    def _recv_frames(self, sock, on_bad):
        for _ in range(_READ_BUDGET):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.last_recv = time.monotonic()
            if len(parts) != 1:
                on_bad(f"a message of {len(parts)} frames (expected 1)")
            else:
                try:
                    msg = proto.decode(parts[0])
                except ProtocolError as e:
                    on_bad(str(e))
                else:
                    yield msg
            if self.io_phase == self.BROKEN:
                return

    def _bad_dealer_frame(self, why):
        # Peers never guess (PROTOCOL.md section 1, Versions): the operation that expected the
        # answer fails, naming the reason. Before welcome that is the connection itself.
        text = f"undecodable message from zexecd at {self.endpoint}: {why}"
        if self.io_phase == self.CONNECTING:
            self._fail_everything(lambda: ConnectionError(text), self.BROKEN)
            return
        self._set_last_error(text)
        # A cancel_reply we cannot read may be the one a cancel() waits for.
        for req in self.awaiting.values():
            req.failure = text
            req.done.set()
        self.awaiting.clear()

    def _bad_update(self, why):
        # An update we cannot read cannot be applied nor acknowledged, and the daemon would resend
        # it forever: every unfinished future would hang. Fail them, naming the reason.
        text = f"undecodable update from zexecd at {self.endpoint}: {why}"
        self._fail_everything(lambda: ConnectionError(text), self.BROKEN)

    def _read_dealer(self):
        for m in self._recv_frames(self.dealer, self._bad_dealer_frame):
            if isinstance(m, proto.Welcome):
                if self.io_phase == self.CONNECTING:
                    self._on_welcome(m)
            elif isinstance(m, proto.CancelReply):
                self._on_cancel_reply(m)
            elif isinstance(m, proto.Heartbeat):
                pass
            elif isinstance(m, proto.Error):
                self._on_error(m)
            else:
                self._set_last_error(f"unexpected {m.NAME} from zexecd at {self.endpoint}")
            if self.io_phase == self.BROKEN:
                return

    def _read_results(self):
        acked = self.acked_upto
        for m in self._recv_frames(self.results, self._bad_update):
            if isinstance(m, proto.Update):
                self._on_update(m)
            else:
                self._bad_update(f"a {m.NAME} message (only update is sent there)")
        if self.acked_upto > acked:
            self._flush()

    def _on_welcome(self, w):
        ep = resolve_results_endpoint(w.results_endpoint, self.endpoint)
        try:
            self.results = self.ctx.socket(zmq.PULL)
            self.results.setsockopt(zmq.LINGER, 0)
            self.results.setsockopt(zmq.MAXMSGSIZE, proto.MAX_MESSAGE_BYTES)
            self.results.connect(ep)
        except zmq.ZMQError as e:
            reason = f"cannot connect to the results endpoint {ep} announced by zexecd at {self.endpoint}: {e}"
            self._fail_everything(lambda: ConnectionError(reason), self.BROKEN)
            return
        self.heartbeat = w.heartbeat_ms / 1000.0
        self.io_phase = self.READY
        with self.lock:
            self.welcome = w
            self.results_endpoint = ep
            self.max_pending = w.max_pending
            self.phase = self.READY
            self.changed.notify_all()

    def _on_error(self, e):
        text = f"zexecd at {self.endpoint} reported {e.code}: {e.message}"
        # These mean the daemon has no record of this client: none of our tasks will report.
        if self.io_phase == self.CONNECTING or e.code in ("unknown_client", "bad_version", "shutting_down"):
            code, message = e.code, e.message
            self._fail_everything(lambda: DaemonError(code, message), self.BROKEN)
        else:
            # An error names no request: with nothing to attribute it to, keep and log it.
            self._set_last_error(text)

    def _on_update(self, u):
        # The daemon resends updates whose ack is late: apply each seq once, never ack past a gap.
        if u.seq <= self.acked_upto or u.seq in self.seen_ahead:
            return
        finals = []
        for e in u.events:
            f = self.inflight.get(e.task_id)
            if f is None:
                continue  # already final (cancelled, or failed locally)
            if e.kind == proto.STARTED:
                f._settle_running()
                continue
            del self.inflight[e.task_id]
            finals.append((f, e))
        if u.seq == self.acked_upto + 1:
            self.acked_upto = u.seq
            while self.acked_upto + 1 in self.seen_ahead:
                self.acked_upto += 1
                self.seen_ahead.discard(self.acked_upto)
        else:
            self.seen_ahead.add(u.seq)
        self._finish(finals)

    def _finish(self, finals):
        if not finals:
            return
        with self.lock:
            self.unfinished -= len(finals)
            self.space.notify_all()
            self.changed.notify_all()
        for f, e in finals:  # no lock held: callbacks may submit
            if e.kind == proto.OK:
                try:
                    value = msgpack.unpackb(e.value, raw=False, strict_map_key=False)
                except Exception as exc:  # noqa: BLE001
                    f._settle(exc=Error(f"{f.task_name}: result is not valid msgpack ({exc})"))
                else:
                    f._settle(value)
            elif e.kind == proto.FAILED:
                f._settle(exc=task_error(e.error_type, e.error_message, f.task_name))
            else:
                f._settle_cancelled()

    def _on_cancel_reply(self, r):
        # Applied even if the asker gave up waiting: a task the daemon cancelled gets no other
        # event, so its future must be settled here or it would stay pending forever.
        cancelled = []
        for tid, outcome in r.outcomes:
            if outcome == proto.OUTCOME_CANCELLED and tid in self.inflight:
                cancelled.append((self.inflight.pop(tid), proto.Event(tid, proto.CANCELLED)))
        self._finish(cancelled)
        req = self.awaiting.pop(r.request_id, None)
        if req is not None:
            req.done.set()

    def _fail_everything(self, make_exc, phase):
        failed = list(self.inflight.values())
        self.inflight.clear()
        with self.lock:
            for batch in self.outbox:
                for f in batch[1]:
                    if f._queued:
                        f._queued = False
                        failed.append(f)
            self.outbox.clear()
            if self.phase not in (self.BROKEN, self.CLOSED) or phase == self.CLOSED:
                if self.phase != self.BROKEN:
                    self.failure = make_exc
                self.phase = phase
            if phase == self.BROKEN:
                self.last_error = str(make_exc())
            self.unfinished -= len(failed)
            requests = list(self.awaiting.values()) + list(self.cancels)
            self.cancels.clear()
            self.space.notify_all()
            self.changed.notify_all()
        self.awaiting.clear()
        report = phase == self.BROKEN and self.io_phase != self.BROKEN
        self.io_phase = phase
        for req in requests:
            req.done.set()
        if report:
            log.warning("zexec: %s", make_exc())
        failed.sort(key=lambda f: f.task_id)  # deterministic order for waiters
        for f in failed:
            f._settle(exc=make_exc())

    def _set_last_error(self, text):
        log.warning("zexec: %s", text)
        with self.lock:
            self.last_error = text


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
    if retry_backoff:
        if not isinstance(retry_backoff, (int, float)) or retry_backoff < 0 or not math.isfinite(retry_backoff):
            raise ValueError(f"retry_backoff must be a non-negative number of seconds, got {retry_backoff!r}")
        backoff = round(retry_backoff * 1000)
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

    def __init__(self, executor, name, options):
        _check_name(name)
        self._executor = executor
        self.name = name
        self.options = options  # the wire options map (nonzero keys only)

    def submit(self, *args):
        return self._executor._submit_many(self.name, [args], self.options, sealed=False)[0]

    def map(self, *iterables, timeout=None, chunksize=1):
        return self._executor._map(self.name, self.options, iterables, timeout, chunksize)

    def __repr__(self):
        return f"<zexec.TaskHandle {self.name} {self.options}>"


def _default_name():
    base = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return base or "python"


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
        with self.live_lock:
            self.live.add(self)

    def release(self):
        """Now: stop the I/O thread (bye), then the daemon (SIGTERM, SIGKILL after stop_timeout)."""
        try:
            self.core.close()
        finally:
            self._after_io()

    def release_when_idle(self):
        """Once every task has finished (shutdown(wait=False), garbage collection)."""
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
            if self.daemon is not None:
                self.daemon.stop(self.stop_timeout)
        finally:
            if self.run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            with self.live_lock:
                self.live.discard(self)

    @classmethod
    def release_all(cls):
        """At interpreter exit: whatever is left is released now, finished or not."""
        with cls.live_lock:
            left = list(cls.live)
        for r in left:
            try:
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
    """

    def __init__(self, endpoint=None, *, workers=None, worker_command=None, name=None, daemon=None,
                 daemon_args=(), connect_timeout=10.0, submit_timeout=10.0, cancel_timeout=5.0,
                 stop_timeout=10.0):
        self._daemon = None
        self._run_dir = None
        self._shutdown_lock = threading.Lock()
        self._shut = False
        embedded = endpoint is None and (workers is not None or worker_command is not None or daemon is not None)
        if endpoint is not None and (workers is not None or worker_command is not None or daemon_args):
            raise ValueError("workers/worker_command/daemon_args configure a private daemon; "
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
            endpoint = os.environ.get("ZEXEC_ENDPOINT") or proto.default_endpoint()
        self.endpoint = endpoint
        self._stop_timeout = stop_timeout
        self._core = _Core(endpoint, name or _default_name(), submit_timeout, cancel_timeout, self._daemon)
        try:
            self._core.start(connect_timeout)
        except BaseException:
            if self._daemon is not None:
                self._daemon.stop(stop_timeout)
            if self._run_dir:
                shutil.rmtree(self._run_dir, ignore_errors=True)
            raise
        self._resources = _Resources(self._core, self._daemon, self._run_dir, stop_timeout)
        # Dropped without shutdown(): like shutdown(wait=False). (Interpreter exit: release_all.)
        self._finalizer = weakref.finalize(self, self._resources.release_when_idle)
        self._finalizer.atexit = False

    # ---- information ----
    @property
    def welcome(self):
        """The daemon's ``welcome`` (client_id, results_endpoint, workers, heartbeat_ms, max_pending)."""
        return self._core.welcome

    @property
    def daemon_pid(self):
        """The private daemon's pid (embedded mode), else None."""
        return self._daemon.pid if self._daemon else None

    @property
    def last_error(self):
        """The last problem reported by or about the daemon that no future could carry."""
        with self._core.lock:
            return self._core.last_error

    def status(self, timeout=5.0):
        """The daemon's status map (PROTOCOL.md section 3, ``status``)."""
        return status(self.endpoint, timeout)

    # ---- submitting ----
    def submit(self, task_name, /, *args, **kwargs):
        """Runs ``task_name(*args)`` in a worker; returns a :class:`Future`. Blocks while this
        client has ``max_pending`` unfinished tasks, up to ``submit_timeout`` (then QueueFullError)."""
        if kwargs:
            raise TypeError("zexec tasks take positional arguments only (options: Executor.task(...))")
        _check_name(task_name)
        return self._submit_many(task_name, [args], {}, sealed=False)[0]

    def task(self, name, *, timeout=None, retries=0, crash_retries=0, retry_backoff=0.0):
        """A handle for ``name`` with options: ``timeout`` (s; past it the worker is killed and the
        task fails with TaskTimeoutError), ``retries`` (after it raised), ``crash_retries`` (after
        its worker died), ``retry_backoff`` (s before the first retry, doubling)."""
        return TaskHandle(self, name, _options(timeout, retries, crash_retries, retry_backoff))

    def map(self, task_name, *iterables, timeout=None, chunksize=1):
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
    def shutdown(self, wait=True, *, cancel_futures=False):
        """No new tasks; ``cancel_futures`` cancels those no worker started; ``wait`` waits for
        the rest, then says bye and stops the private daemon (if any). With ``wait=False`` that
        happens in the background once every task has finished."""
        with self._shutdown_lock:
            self._shut = True
        core = self._core
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
