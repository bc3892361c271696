"""zexec for Python: a client and a worker runtime for the zexec task daemon (zexecd).

``zexec.Executor`` is a ``concurrent.futures.Executor`` whose tasks run in zexecd's supervised
worker processes (any language), with results in completion order; its futures work with the
stdlib's ``as_completed``/``wait``. ``zexec.worker`` turns a Python script into a zexecd worker.
Only the standard library, pyzmq and msgpack are needed; the wire protocol is
docs/PROTOCOL.md (``zexec.protocol``).
"""

from typing import TYPE_CHECKING, Any

from ._client import Executor, Future, TaskHandle, status
from ._errors import (BadArgumentsError, ConnectionError, DaemonError, DaemonLostError, Error,
                      JournalFailedError, JournalFullError, ProtocolError, QuarantinedError, QueueFullError, ResultTooLargeError,
                      ShuttingDownError, TaskError, TaskTimeoutError, UnknownTaskError,
                      UnencodableResultError, WorkerCrashedError, WorkerUnavailableError)
from . import protocol

if TYPE_CHECKING:  # what __getattr__ below returns, for type checkers
    from . import worker

__all__ = [
    "Executor", "Future", "TaskHandle", "status", "protocol",
    "Error", "ProtocolError", "ConnectionError", "DaemonLostError", "DaemonError",
    "TaskError", "WorkerCrashedError", "TaskTimeoutError", "QuarantinedError", "QueueFullError",
    "UnknownTaskError", "BadArgumentsError", "ShuttingDownError", "WorkerUnavailableError",
    "ResultTooLargeError", "UnencodableResultError", "JournalFullError", "JournalFailedError",
]


def __getattr__(name: str) -> Any:
    # `zexec.worker` without importing it eagerly: `python3 -m zexec.worker` would otherwise find
    # it already imported and warn.
    if name == "worker":
        import importlib

        return importlib.import_module("zexec.worker")
    raise AttributeError(f"module 'zexec' has no attribute {name!r}")
