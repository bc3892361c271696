"""The connection to one daemon: its shared state and the background I/O thread.

Threading model. pyzmq sockets are not thread-safe, so one background I/O thread owns both
sockets (the DEALER to the daemon and the PULL for this client's results). User threads never
touch a socket: they put work (tasks to submit, cancel requests) into lock-protected queues and
wake the I/O thread through an eventfd that its poll watches like a socket. The I/O thread
completes futures (and so runs done callbacks) while holding none of our locks, so a callback may
submit more work.

``Connection`` holds both sides' state and runs the I/O thread: handshake, submit and cancel
frames, updates (each seq applied once, cumulative acks), heartbeats, failure. The user threads'
side is its subclass ``_core._Core``.
"""

import collections
import concurrent.futures._base as _cf
import itertools
import logging
import math
import os
import threading
import time

import msgpack
import zmq

from . import protocol as proto
from ._errors import ConnectionError, DaemonError, DaemonLostError, Error, ProtocolError, task_error
from ._future import claim_queued

__all__ = ["Connection", "CancelRequest", "resolve_results_endpoint", "MAX_BATCH_TASKS"]

log = logging.getLogger("zexec")

MAX_BATCH_TASKS = 4096  # coalesced single submits per `submit` frame
_MAX_BATCH_BYTES = 4 << 20
# No submit frame may pass ZMQ_MAXMSGSIZE: the daemon would drop the connection, and with it
# every task of this client. A map chunk bigger than this goes as several frames.
_MAX_FRAME_BYTES = proto.MAX_MESSAGE_BYTES - (64 << 10)
_MAX_HELD_FRAMES = 4  # take more from the outbox only while fewer frames wait to go
_READ_BUDGET = 256  # frames per socket per turn: batching without starving the other socket

# The `error` codes (PROTOCOL.md section 6) that end the connection when they come after the
# welcome: every unfinished future fails with DaemonError (before the welcome, any code does).
# The same table as is_fatal_error_code() in client-lib/src/future_state.cpp:
#   unknown_client, bad_version, shutting_down: the daemon has no record of this client;
#   too_many_clients, results_socket_failed: refusals of a hello (no welcome follows);
#   backlogged: a whole `submit` refused, and its tasks get no event. A client that keeps to
#     max_pending never gets it; knowing which futures were in that frame would mean keeping the
#     ids of every frame sent on the hot path, so the cheap and safe answer is this one.
# Any other code (bad_message, duplicate_task_id, one a newer daemon invents) stays last_error:
# forward compatible.
FATAL_ERROR_CODES = frozenset({"unknown_client", "bad_version", "shutting_down", "too_many_clients",
                               "results_socket_failed", "backlogged"})


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


class CancelRequest:
    """A ``cancel`` to send (``_Core.cancel`` queues it, the I/O thread sends it and sets ``done``
    at the daemon's ``cancel_reply``, or at failure)."""

    __slots__ = ("request_id", "futures", "force", "all", "done", "failure")

    def __init__(self, request_id, futures, force, all_pending=False):
        self.request_id = request_id
        self.futures = futures
        self.force = force
        self.all = all_pending
        self.done = threading.Event()
        self.failure = None


class Connection:
    """The connection to one daemon: shared queues (user side, see ``_Core``) and the I/O thread."""

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
        self.dealer = None  # created by start()
        self.results = None  # created at welcome
        self.awaiting = {}  # request id -> CancelRequest
        self.sendq = collections.deque()
        self.acked_upto = 0
        self.ack_sent = 0
        self.seen_ahead = set()
        self.heartbeat = 0.0
        self.hello_sent = False
        self.io_phase = self.CONNECTING
        self.next_daemon_check = 0.0

    def _take_outbox(self):  # lock held; by either side
        """Empties the outbox; returns the futures that were still waiting in it."""
        taken = [f for _, futures in self.outbox for f in claim_queued(futures)]
        self.outbox.clear()
        return taken

    # ================= I/O thread =================

    def _run(self):
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - the thread must always settle every future
            log.exception("zexec I/O thread failed")
            reason = f"zexec client I/O thread failed: {type(e).__name__}: {e}"
            self._fail_everything(lambda: ConnectionError(reason), self.BROKEN)
        self._close_results()  # the session is over: nothing more is read there
        self._say_bye()
        ep = self.endpoint
        # A ConnectionError, as in C++: the task may still run, its outcome will never be heard.
        # (What shutdown(cancel_futures=True) cancelled is CANCELLED before this.)
        self._fail_everything(lambda: ConnectionError(f"zexec Executor for {ep} was closed before the task "
                                                      "finished"), self.CLOSED)
        self._close_sockets()
        if self.on_exit is not None:
            try:
                self.on_exit()
            except Exception:  # noqa: BLE001
                log.exception("zexec: cleanup after shutdown failed")

    def _close_sockets(self, linger=None):
        """Closes the sockets (``linger`` None: as each socket's LINGER), the context and the
        eventfd: the end of the I/O thread, or of a ``start()`` that could not connect."""
        for s in (self.dealer, self.results):
            if s is not None:
                s.close(linger)
        self.ctx.term()
        # Under wake_lock: see _Core.wake().
        with self.wake_lock:
            os.close(self.wake_fd)
            self.wake_fd = -1

    def _close_results(self):
        """Closes the results PULL at the session's end (broken, daemon lost, closed). Left open
        it would reconnect to its endpoint for ever (ZMQ_RECONNECT_IVL) and, after a daemon
        restart, take a share of whichever client's results are pushed from that path."""
        if self.results is not None:
            self.results.close(0)
            self.results = None

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
                self._close_results()
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
                    live = claim_queued(futures)
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
                n = len(f._spec.args) + len(f._spec.name.encode()) + 64  # + envelope and options
                if tasks and size + n > _MAX_FRAME_BYTES:
                    emit()
                self.inflight[f.task_id] = f
                tasks.append(f._spec)
                size += n
                f._spec = None
                if not sealed and (len(tasks) >= MAX_BATCH_TASKS or size >= _MAX_BATCH_BYTES):
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

    def _bad_frame(self, what, why):
        # Peers never guess (PROTOCOL.md section 1, Versions): the operation that expected the
        # answer fails, naming the reason. A frame we cannot read may have been any answer: the
        # welcome (a daemon of another protocol version), an update (neither applied nor
        # acknowledged, so resent forever), a cancel_reply (its cancelled tasks get no other
        # event), an error saying the daemon forgot us. Every unfinished future would hang:
        # fail them all and call the connection broken.
        text = f"{what} from zexecd at {self.endpoint}: {why}"
        self._fail_everything(lambda: ConnectionError(text), self.BROKEN)

    def _bad_dealer_frame(self, why):
        self._bad_frame("undecodable message", why)

    def _bad_update(self, why):
        self._bad_frame("undecodable update", why)

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
        # Any refusal of the hello, or a code that leaves tasks no other way to settle: the end
        # of the connection. Any other code (bad_message, duplicate_task_id, one from a newer
        # daemon) names no request: with nothing to attribute it to, keep and log it.
        code, message, ep = e.code, e.message, self.endpoint
        if self.io_phase == self.CONNECTING or code in FATAL_ERROR_CODES:
            self._fail_everything(lambda: DaemonError(code, message, ep), self.BROKEN)
        else:
            self._set_last_error(str(DaemonError(code, message, ep)))

    def _on_update(self, u):
        # The daemon resends updates whose ack is late: apply each seq once, never ack past a gap.
        if u.seq <= self.acked_upto or u.seq in self.seen_ahead:
            if u.seq <= self.ack_sent:
                # A resend of what we acked: our ack may have been lost. Say it again, or the
                # daemon keeps resending and, its window full, stops sending us anything new.
                self.ack_sent = min(self.ack_sent, u.seq - 1)
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
            failed += self._take_outbox()
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
            if phase == self.BROKEN and req.failure is None:
                req.failure = str(make_exc())  # no answer will come: cancel() says not cancelled
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

