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

Sessions (PROTOCOL.md section 3, Sessions and Acceptance). When the welcome names a session (a
daemon with a journal) and ``reconnect_timeout`` > 0, losing the daemon (heartbeat silence, or
the DEALER's monitor reporting a disconnect) is not the end: the I/O thread closes both sockets,
keeps every unfinished future pending (user threads keep queueing) and says ``hello`` again with
the session and its token on a fresh DEALER until a daemon answers or the timeout passes. The
submit frames the daemon has not accepted yet (``update.accepted_through``) are kept, and sent
again, in order, after a resume, before anything new.
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
from zmq.utils.monitor import recv_monitor_message

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
_RECONNECT_IVL = 0.05  # a reconnect's backoff: 50 ms doubling to 1 s (also the DEALER's own)
_RECONNECT_IVL_MAX = 1.0

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


class _Kept:
    """A submit frame sent in a session and not accepted yet (kept to send again after a resume)."""

    __slots__ = ("high", "ids", "left", "frame")

    def __init__(self, ids, frame):
        self.high = ids[-1]  # ids grow: the frame's highest
        self.ids = ids
        self.left = len(ids)  # those not known accepted yet (a final event accepts its task)
        self.frame = frame


class Connection:
    """The connection to one daemon: shared queues (user side, see ``_Core``) and the I/O thread.

    ``reconnect_timeout`` (seconds): how long to keep reconnecting after losing a daemon that
    keeps sessions (``welcome.session`` != 0), unfinished futures pending meanwhile; 0 = fail
    them at once, as with a daemon that keeps no sessions."""

    CONNECTING, READY, BROKEN, CLOSED = "connecting", "ready", "broken", "closed"
    RECONNECTING = "reconnecting"  # io_phase only: the user side stays READY meanwhile

    def __init__(self, endpoint, name, submit_timeout, cancel_timeout, daemon=None, reconnect_timeout=60.0):
        self.endpoint = endpoint
        self.name = name
        self.submit_timeout = submit_timeout
        self.cancel_timeout = cancel_timeout
        self.reconnect_timeout = reconnect_timeout
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
        self.poller = None
        self.monitor = None  # PAIR: the DEALER's disconnects (only while a session can resume)
        self._monitors = itertools.count(1)
        self.hello_pid = os.getpid()
        self.session = 0  # from the last welcome
        self.token = b""
        self.kept = collections.OrderedDict()  # frame number -> _Kept, in sending order
        self.kept_of = {}  # task id -> frame number, for the tasks not known accepted
        self._frame_numbers = itertools.count(1)
        self.lost_why = None  # reconnecting: why the daemon was lost
        self.refusal = None  # reconnecting: the last error that answered a hello
        self.reconnect_deadline = 0.0
        self.next_attempt = 0.0
        self.attempt_deadline = None  # the welcome to the hello of this attempt is due by then
        self.backoff = _RECONNECT_IVL

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
        self._close_monitor()
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
            self._unpoll(self.results)
            self.results.close(0)
            self.results = None

    def _unpoll(self, sock):
        if self.poller is not None:
            try:
                self.poller.unregister(sock)
            except KeyError:
                pass

    def _new_dealer(self, reconnect_ivl):
        """A DEALER to the daemon (not connected yet)."""
        dealer = self.ctx.socket(zmq.DEALER)
        # immediate: hello waits in our sendq until a connection exists and is sent exactly once
        # (a second hello would make the daemon start a new client, PROTOCOL.md section 2).
        dealer.setsockopt(zmq.IMMEDIATE, 1)
        dealer.setsockopt(zmq.RECONNECT_IVL, reconnect_ivl)
        dealer.setsockopt(zmq.RECONNECT_IVL_MAX, int(_RECONNECT_IVL_MAX * 1000))
        dealer.setsockopt(zmq.LINGER, 1000)
        dealer.setsockopt(zmq.MAXMSGSIZE, proto.MAX_MESSAGE_BYTES)
        return dealer

    def _watch_dealer(self):
        """Monitors the DEALER for disconnects: the quickest sign of a daemon gone (a restart)."""
        if self.monitor is None and self.dealer is not None:
            self.monitor = self.dealer.get_monitor_socket(
                zmq.EVENT_DISCONNECTED, f"inproc://zexec-monitor-{id(self):x}-{next(self._monitors)}")

    def _close_monitor(self):
        if self.monitor is not None:
            self._unpoll(self.monitor)
            try:
                self.dealer.disable_monitor()
            except zmq.ZMQError:
                pass
            self.monitor.close(0)
            self.monitor = None

    def _drop_dealer(self):
        """Closes the DEALER (and its monitor) at once: nothing queued on it is wanted any more."""
        self._close_monitor()
        if self.dealer is not None:
            self._unpoll(self.dealer)
            self.dealer.close(0)
            self.dealer = None
        self.sendq.clear()
        self.hello_sent = False
        self.attempt_deadline = None

    def _can_resume(self):
        # An embedded executor's daemon is ours: once it is gone nobody starts it again.
        return self.session != 0 and self.reconnect_timeout > 0 and self.daemon is None

    def _loop(self):
        self.last_send = self.last_recv = time.monotonic()
        poller = self.poller = zmq.Poller()
        poller.register(self.wake_fd, zmq.POLLIN)
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
            # (Registering a registered socket again only changes its flags.)
            if self.results is not None:
                poller.register(self.results, zmq.POLLIN)
            if self.monitor is not None:
                poller.register(self.monitor, zmq.POLLIN)
            dealer = self.dealer  # None while reconnecting, between two attempts
            if dealer is not None:
                want_out = bool(self.sendq) or (self.io_phase == self.READY and self.acked_upto > self.ack_sent)
                poller.register(dealer, zmq.POLLIN | (zmq.POLLOUT if want_out else 0))
            events = dict(poller.poll(self._poll_timeout_ms(now)))
            if self.wake_fd in events:
                try:
                    os.eventfd_read(self.wake_fd)
                except BlockingIOError:
                    pass
            if dealer is not None and dealer is self.dealer and events.get(dealer, 0) & zmq.POLLIN:
                self._read_dealer()
            if self.results is not None and self.results in events:
                self._read_results()
            if self.monitor is not None and self.monitor in events:
                self._read_monitor()

    def _poll_timeout_ms(self, now):
        nxt = now + 1.0
        if self.io_phase == self.READY and self.heartbeat > 0:
            nxt = min(nxt, self.last_send + self.heartbeat, self.last_recv + 5 * self.heartbeat + 0.001)
        elif self.io_phase == self.RECONNECTING:
            nxt = min(nxt, self.reconnect_deadline + 0.001)
            if self.dealer is None:
                nxt = min(nxt, self.next_attempt)
            elif self.attempt_deadline is not None:
                nxt = min(nxt, self.attempt_deadline)
            elif self.hello_sent:
                nxt = now  # the hello went out: its deadline starts now (_reconnect_timers)
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
            # While reconnecting, cancels wait here: they go once a welcome says where.
            cancels = list(self.cancels) if self.io_phase == self.READY else []
            if cancels:
                self.cancels.clear()
        # Submits go before the cancels taken in the same turn: a cancel never overtakes its task.
        tasks, size = [], 0

        def emit():
            nonlocal tasks, size
            if tasks:
                frame = proto.encode_submit(tasks)
                self.sendq.append(frame)
                self.stats["submit_frames"] += 1
                if self.session:
                    self._keep(tuple(t.id for t in tasks), frame)
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

    # ---- sessions: kept submits (PROTOCOL.md section 3, Acceptance) ----

    def _keep(self, ids, frame):
        n = next(self._frame_numbers)
        self.kept[n] = _Kept(ids, frame)
        for tid in ids:
            self.kept_of[tid] = n

    def _accepted_task(self, tid):
        """A final outcome came for task ``tid``: the daemon had it on disk (acceptance never
        overtakes results), so its frame need not be sent again for its sake."""
        n = self.kept_of.pop(tid, None)
        if n is not None:
            kept = self.kept[n]
            kept.left -= 1
            if kept.left == 0:
                del self.kept[n]

    def _accepted_through(self, upto):
        """``update.accepted_through``: every task with an id up to ``upto`` is accepted."""
        while self.kept:
            n, kept = next(iter(self.kept.items()))
            if kept.high > upto:
                return
            self.kept.popitem(last=False)
            for tid in kept.ids:
                self.kept_of.pop(tid, None)

    def _forget_kept(self):
        self.kept.clear()
        self.kept_of.clear()

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
        if self.dealer is None:
            return  # reconnecting, between two attempts (nothing is queued then)
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
        if self.io_phase == self.RECONNECTING:
            self._reconnect_timers(now)
            return
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
                if self._can_resume():
                    self._start_reconnecting(reason)
                else:
                    self._fail_everything(lambda: DaemonLostError(reason), self.BROKEN)
                return
            if now - self.last_send >= self.heartbeat and not self.sendq:
                self.sendq.append(proto.encode_heartbeat())
                self._flush()

    # ---- reconnecting (a session that can be resumed) ----

    def _start_reconnecting(self, why):
        """The daemon is lost but the session may live on: drop both sockets (a stale PULL must
        never reconnect to whatever binds its path next), keep every future, say hello again."""
        log.warning("zexec: %s; reconnecting to resume the session (for up to %g s)", why,
                    self.reconnect_timeout)
        self._close_results()
        self._drop_dealer()  # with whatever waited to be sent: the kept frames and cancels go again
        self.io_phase = self.RECONNECTING
        now = time.monotonic()
        self.lost_why = why
        self.refusal = None
        self.reconnect_deadline = now + self.reconnect_timeout
        self.next_attempt = now
        self.backoff = _RECONNECT_IVL
        self.stats["reconnects"] += 1
        with self.lock:
            self.last_error = why
        self._reconnect_timers(now)

    def _reconnect_timers(self, now):
        if now >= self.reconnect_deadline:
            ep, why, n = self.endpoint, self.lost_why, self.reconnect_timeout
            refused = f" (its last answer: {self.refusal})" if self.refusal else ""
            reason = f"{why}; could not reconnect to zexecd at {ep} within {n:g} s{refused}"
            self._fail_everything(lambda: DaemonLostError(reason), self.BROKEN)
            return
        if self.dealer is None:
            if now >= self.next_attempt:
                self._attempt_hello()
        elif self.hello_sent:
            if self.attempt_deadline is None:
                # As long as a silent daemon is given (5 heartbeats), at least half a second.
                self.attempt_deadline = now + max(0.5, 5 * self.heartbeat)
            elif now >= self.attempt_deadline:
                self._give_up_attempt("no welcome to the hello")

    def _attempt_hello(self):
        """A fresh DEALER and a hello asking for the session. Until the daemon is there again
        the DEALER retries connecting by itself (50 ms doubling to 1 s); the hello goes once it
        is connected (ZMQ_IMMEDIATE)."""
        self.dealer = self._new_dealer(int(_RECONNECT_IVL * 1000))
        self.hello_sent = False
        self.attempt_deadline = None
        try:
            self._watch_dealer()
            self.dealer.connect(self.endpoint)
        except zmq.ZMQError as e:
            self._give_up_attempt(f"cannot connect: {e}")
            return
        self.stats["reconnect_hellos"] += 1
        self.sendq.append(proto.encode_hello(self.name, self.hello_pid, self.session, self.token))

    def _give_up_attempt(self, why):
        """This attempt's hello got no welcome: the next one, on a fresh DEALER, after a backoff."""
        log.info("zexec: reconnecting to zexecd at %s: %s", self.endpoint, why)
        self._drop_dealer()
        self.next_attempt = time.monotonic() + self.backoff
        self.backoff = min(2 * self.backoff, _RECONNECT_IVL_MAX)

    def _read_monitor(self):
        disconnected = False
        while self.monitor is not None:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            if event["event"] == zmq.EVENT_DISCONNECTED:
                disconnected = True
        if not disconnected:
            return
        if self.io_phase == self.READY and self._can_resume():
            self._start_reconnecting(f"lost connection to zexecd at {self.endpoint}: disconnected")
        elif self.io_phase == self.RECONNECTING and self.hello_sent:
            self._give_up_attempt("disconnected before the welcome")

    def _input_waiting(self):
        return bool(self.dealer.poll(0) or (self.results is not None and self.results.poll(0)))

    def _say_bye(self):
        if self.dealer is None:
            return  # reconnecting, between two attempts
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
            if self.io_phase == self.BROKEN or sock.closed:
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
        dealer = self.dealer
        for m in self._recv_frames(dealer, self._bad_dealer_frame):
            if isinstance(m, proto.Welcome):
                if self.io_phase in (self.CONNECTING, self.RECONNECTING):
                    self._on_welcome(m)
            elif isinstance(m, proto.CancelReply):
                self._on_cancel_reply(m)
            elif isinstance(m, proto.Heartbeat):
                pass
            elif isinstance(m, proto.Error):
                self._on_error(m)
            else:
                self._set_last_error(f"unexpected {m.NAME} from zexecd at {self.endpoint}")
            if self.io_phase == self.BROKEN or self.dealer is not dealer:
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
        again = self.io_phase == self.RECONNECTING
        lost, requests = [], []
        if again:
            # A new connection: its update.seq starts again at 1.
            self.acked_upto = self.ack_sent = 0
            self.seen_ahead.clear()
            if w.resumed:
                self._resend()
            else:
                lost = sorted(self.inflight.values(), key=lambda f: f.task_id)
                self.inflight.clear()
                self._forget_kept()
                requests = list(self.awaiting.values())
                self.awaiting.clear()
        self.session, self.token = w.session, w.token
        self.heartbeat = w.heartbeat_ms / 1000.0
        self.io_phase = self.READY
        with self.lock:
            self.welcome = w
            self.results_endpoint = ep
            self.max_pending = w.max_pending
            self.phase = self.READY
            self.unfinished -= len(lost)
            self.space.notify_all()
            self.changed.notify_all()
        if self._can_resume():
            self._watch_dealer()
        if not again:
            return
        if w.resumed:
            log.warning("zexec: reconnected to zexecd at %s: session resumed, %d tasks unfinished",
                        self.endpoint, len(self.inflight))
            return
        reason = (f"zexecd at {self.endpoint} did not resume this client's session (it keeps no journal, "
                  "or the session expired): the task is lost")
        self._set_last_error(f"{reason} ({len(lost)} tasks)")
        for req in requests:
            req.failure = reason
            req.done.set()
        for f in lost:
            f._settle(exc=ConnectionError(reason))

    def _resend(self):
        """After a resume, before anything new: the submits not accepted yet, in their order,
        then the cancel requests still awaiting their reply (same request id)."""
        frames = [kept.frame for kept in self.kept.values()]
        for req in list(self.awaiting.values()):
            ids = [f.task_id for f in req.futures if f.task_id in self.inflight]
            if ids:
                frames.append(proto.encode_cancel(req.request_id, ids, req.force))
            else:
                del self.awaiting[req.request_id]
                req.done.set()
        self.stats["resent_frames"] += len(frames)
        self.sendq.extendleft(reversed(frames))

    def _on_error(self, e):
        # Any refusal of the hello, or a code that leaves tasks no other way to settle: the end
        # of the connection. Any other code (bad_message, duplicate_task_id, one from a newer
        # daemon) names no request: with nothing to attribute it to, keep and log it.
        code, message, ep = e.code, e.message, self.endpoint
        if self.io_phase == self.RECONNECTING:
            # A refused hello (stopping, too many clients...): maybe not from the next daemon.
            text = str(DaemonError(code, message, ep))
            self.refusal = text
            self._give_up_attempt(text)
            return
        if self.io_phase == self.READY and code == "unknown_client" and self._can_resume():
            # The daemon forgot this connection (or a restarted one never knew it), not
            # necessarily the session.
            self._start_reconnecting(str(DaemonError(code, message, ep)))
            return
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
                continue  # already final (cancelled, failed locally, or a final event again)
            if e.kind == proto.STARTED:
                f._settle_running()
                continue
            del self.inflight[e.task_id]
            finals.append((f, e))
            if self.kept_of:
                self._accepted_task(e.task_id)
        if u.accepted_through and self.kept:
            self._accepted_through(u.accepted_through)
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
                if self.kept_of:
                    self._accepted_task(tid)
        self._finish(cancelled)
        req = self.awaiting.pop(r.request_id, None)
        if req is not None:
            req.done.set()

    def _fail_everything(self, make_exc, phase):
        failed = list(self.inflight.values())
        self.inflight.clear()
        self._forget_kept()
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

