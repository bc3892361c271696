"""The user threads' side of a connection (``_Core``): start and the handshake wait, queueing
tasks under ``max_pending``, cancelling (locally while a task is still in the outbox, else through
the daemon), waiting for every task, closing. Once start() has handed the DEALER to the I/O thread
(``_connection.Connection``, the base class), none of it touches a socket: it fills the queues
that the I/O thread empties, and wakes it."""

import concurrent.futures._base as _cf
import logging
import os
import threading
import time

import zmq

from . import protocol as proto
from ._connection import MAX_BATCH_TASKS, CancelRequest, Connection
from ._errors import ConnectionError, Error, QueueFullError
from ._future import Future, claim_queued

__all__ = ["_Core"]

log = logging.getLogger("zexec")


class _Core(Connection):
    """The connection to one daemon, as the user threads (Executor, Future.cancel) use it."""

    def start(self, connect_timeout):
        self.dealer = self._new_dealer(10)
        try:
            self.dealer.connect(self.endpoint)
        except zmq.ZMQError as e:
            self._close_sockets(linger=0)
            raise ConnectionError(f"cannot connect to zexecd at {self.endpoint}: {e}") from None
        self.hello_pid = os.getpid()  # a reconnect's hello says the same
        self.sendq.append(proto.encode_hello(self.name, self.hello_pid))
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

    def _check_usable(self):  # lock held
        if self.phase == self.READY and not (self.stop or self.stop_when_idle):
            return
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
            self._check_usable()
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
                self._check_usable()
            self.unfinished += n
            futures = []
            for name, args, options in entries:
                tid = next(self._ids)
                f = Future(self, tid, name, proto.Task(tid, name, args, options))
                f._queued = True
                futures.append(f)
            was_empty = not self.outbox
            if not sealed and self.outbox and self.outbox[-1][0] is False \
                    and len(self.outbox[-1][1]) < MAX_BATCH_TASKS:
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
        with self.lock:
            local = self._take_outbox() if all_pending else claim_queued(futures)
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
        req = CancelRequest(next(self._request_ids), remote, force, all_pending)
        with self.lock:
            if self.phase != self.READY:
                return len(local)
            self.cancels.append(req)
        self.wake()
        if self.on_io_thread():
            # In a done callback ("cancel the rest once one is done"): the daemon's answer can
            # only be read once we return, so ask without waiting. As with the stdlib, cancel()
            # says False for what it could not cancel at once; the futures still end cancelled.
            return len(local)
        if not req.done.wait(self.cancel_timeout):
            log.warning("zexec: no cancel_reply from zexecd at %s within %g s", self.endpoint,
                        self.cancel_timeout)
        # req.failure: the connection broke while we waited; every future it held has failed
        # with the reason, so they count as not cancelled (as in C++: no exception).
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
