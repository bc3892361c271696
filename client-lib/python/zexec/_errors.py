"""Every exception the zexec Python package raises.

All derive from :class:`Error`, so ``except zexec.Error`` catches anything zexec-specific.
Remote task failures are :class:`TaskError` (or a subclass picked by the wire type name of
docs/PROTOCOL.md section 7), so callers can tell "my task raised" from "the plumbing broke".
"""

import builtins

__all__ = [
    "Error",
    "ProtocolError",
    "ConnectionError",
    "DaemonLostError",
    "DaemonError",
    "TaskError",
    "WorkerCrashedError",
    "TaskTimeoutError",
    "QuarantinedError",
    "QueueFullError",
    "UnknownTaskError",
    "BadArgumentsError",
    "ShuttingDownError",
    "WorkerUnavailableError",
    "ResultTooLargeError",
    "UnencodableResultError",
    "JournalFullError",
    "JournalFailedError",
    "task_error",
]


class Error(Exception):
    """Base class of every zexec exception."""


class ProtocolError(Error, ValueError):
    """A frame that is not a valid zexec protocol v1 message (peers never guess, they refuse)."""


class ConnectionError(Error, builtins.ConnectionError):  # noqa: A001 - deliberate, like zexec::ConnectionError
    """The daemon could not be reached, or the connection to it is unusable."""


class DaemonLostError(ConnectionError):
    """The daemon went silent for 5 x heartbeat_ms (or forgot this client), or, for a daemon
    that keeps sessions, could not be reached again within the executor's reconnect_timeout:
    every unfinished future fails with this, since none of them will ever hear from the daemon
    again."""


class DaemonError(ConnectionError):
    """The daemon refused this client with an ``error`` message: a refused hello (``code`` e.g.
    ``too_many_clients``, ``results_socket_failed``, ``shutting_down``), or later one that leaves
    the client's tasks no way to settle (``unknown_client``, ``bad_version``, ``shutting_down``,
    ``backlogged``); every unfinished future fails with it. ``str()`` reads "zexecd at EP
    reported CODE: MESSAGE", as C++'s what(); ``message`` is the daemon's own text."""

    def __init__(self, code, message, endpoint=None):
        where = f" at {endpoint}" if endpoint else ""
        super().__init__(f"zexecd{where} reported {code}: {message}")
        self.code = code
        self.message = message
        self.endpoint = endpoint

    def __reduce__(self):  # picklable despite the custom __init__
        return (self.__class__, (self.code, self.message, self.endpoint))


class TaskError(Error):
    """The task failed remotely: it raised, or the daemon/worker reported an error for it.

    ``type`` is the remote type name (``ValueError``, ``std::runtime_error``, ``UnknownTask``...),
    ``message`` its text, ``task_name`` the task that failed.
    """

    def __init__(self, type, message, task_name=""):  # noqa: A002 - 'type' is the protocol's word
        super().__init__(f"{task_name + ': ' if task_name else ''}{type}: {message}")
        self.type = type
        self.message = message
        self.task_name = task_name

    def __reduce__(self):  # picklable despite the custom __init__
        return (self.__class__, (self.type, self.message, self.task_name))


class WorkerCrashedError(TaskError):
    """``WorkerCrashed``: the worker process died while running the task."""


class TaskTimeoutError(TaskError):
    """``TaskTimeout``: the task ran past its ``timeout`` option (its worker was killed).

    Deliberately not a builtin TimeoutError: that one means "your own wait ran out"."""


class QuarantinedError(TaskError):
    """``Quarantined``: the task crashed its worker ``quarantine_after`` times."""


class QueueFullError(TaskError):
    """``QueueFull``: this client had ``max_pending`` unfinished tasks. Raised by ``submit()``
    itself when no room came within ``submit_timeout`` (then ``type`` is also ``QueueFull``)."""


class UnknownTaskError(TaskError):
    """``UnknownTask``: no worker task of that name is registered."""


class BadArgumentsError(TaskError):
    """``BadArguments``: the arguments do not fit the task's parameters."""


class ShuttingDownError(TaskError):
    """``ShuttingDown``: submitted while the daemon was stopping."""


class WorkerUnavailableError(TaskError):
    """``WorkerUnavailable``: no worker can start (the worker command keeps failing)."""


class ResultTooLargeError(TaskError):
    """``ResultTooLarge``: the return value does not fit in one frame."""


class UnencodableResultError(TaskError):
    """``UnencodableResult``: the return value cannot be encoded as msgpack (e.g. a set)."""


class JournalFullError(TaskError):
    """``JournalFull``: the daemon's journal is on a full file system; the task was not accepted."""


class JournalFailedError(TaskError):
    """``JournalFailed``: the daemon could not write its journal; the task was not accepted."""


# PROTOCOL.md section 7's type names, each with its class named TYPE + "Error" (as in the C++
# client); test_errors.py checks this against the document.
_BY_TYPE = {cls.__name__[:-len("Error")]: cls for cls in (
    UnknownTaskError, BadArgumentsError, WorkerCrashedError, TaskTimeoutError, ShuttingDownError,
    QuarantinedError, QueueFullError, WorkerUnavailableError, ResultTooLargeError,
    UnencodableResultError, JournalFullError, JournalFailedError)}


def task_error(type, message, task_name=""):  # noqa: A002
    """The exception for a remote error event: the subclass named by PROTOCOL.md section 7's
    type names, else a plain TaskError (a task's own exception type, e.g. ``ValueError``)."""
    return _BY_TYPE.get(type, TaskError)(type, message, task_name)
