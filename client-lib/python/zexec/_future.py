"""A zexec task's ``Future``: the stdlib's, plus a ``cancel()`` that asks the daemon and the
settling the I/O thread does (also from RUNNING, when a forced cancel stopped the task)."""

from __future__ import annotations  # `X | None` in annotations on Python 3.9

import concurrent.futures
import concurrent.futures._base as _cf

__all__ = ["Future", "claim_queued"]


class Future(concurrent.futures.Future):
    """A zexec task's future: a real ``concurrent.futures.Future``, so ``as_completed``, ``wait``,
    ``result(timeout)``, ``exception()`` and ``add_done_callback`` work unchanged.

    It is PENDING until a worker starts the task, then RUNNING. ``cancel()`` asks the daemon and
    returns True only if the daemon cancelled it (as ProcessPoolExecutor: False once running).
    """

    task_id: int
    task_name: str

    def __init__(self, core, task_id, task_name, spec):
        super().__init__()
        self._core = core
        self.task_id = task_id  # this client's id of the task (unique per executor)
        self.task_name = task_name
        self._spec = spec  # the wire task, until the I/O thread takes it
        self._queued = False  # in the outbox, not sent yet (guarded by core.lock)

    def __repr__(self):
        return f"<zexec.Future {self.task_name}#{self.task_id} {self._state.lower()}>"

    def cancel(self, force: bool = False) -> bool:
        """Asks the daemon to cancel the task; True only if it was (then this future is
        CANCELLED). ``force=True`` also stops a running task by stopping its worker (the daemon
        replaces it). Waits for the daemon's answer up to the executor's ``cancel_timeout``.
        On a broken or closed connection (also one that breaks while this waits) it returns
        False, as C++'s Future::cancel() does: the future has failed with the reason."""
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


def claim_queued(futures):
    """Those of ``futures`` still in the outbox (not sent yet), claimed (core.lock held): the
    claimer sends them or settles them itself, and nobody else will."""
    claimed = [f for f in futures if f._queued]
    for f in claimed:
        f._queued = False
    return claimed
