"""The zexec wire protocol, version 1 (docs/PROTOCOL.md), in Python.

Every message is one ZeroMQ frame holding one msgpack array ``[version, type, field...]``.
Messages are small frozen dataclasses (equality includes the class, so a ``Bye()`` never equals
a ``Heartbeat()``); ``encode_<name>(...)`` functions build frames directly and ``encode(msg)``
encodes a message object. The bytes agree with the C++ encoder (protocol/src/protocol.cpp):
minimal-width ints, ``str`` for text, ``bin`` for opaque bytes, task options in a fixed key order
and only when nonzero. ``decode(frame)`` is strict: a wrong version, type, field count, field
type or size limit raises :class:`ProtocolError` saying what was wrong, as the C++ decoder does.
"""

from dataclasses import dataclass, field
import msgpack

from ._errors import ProtocolError

__all__ = [
    "VERSION", "MAX_MESSAGE_BYTES", "ProtocolError",
    "HELLO", "WELCOME", "SUBMIT", "CANCEL", "CANCEL_REPLY", "ACK", "HEARTBEAT", "BYE", "ERROR",
    "UPDATE", "STATUS", "STATUS_REPLY", "DRAIN", "ADMIN_CANCEL", "WORKER_HELLO", "WORKER_EVENTS",
    "WORKER_REVOKED", "TASKS", "REVOKE", "SHUTDOWN",
    "STARTED", "OK", "FAILED", "CANCELLED", "OUTCOME_CANCELLED", "OUTCOME_RUNNING", "OUTCOME_FINISHED",
    "OPTION_KEYS", "Task", "Event",
    "Hello", "Welcome", "Submit", "Cancel", "CancelReply", "Ack", "Heartbeat", "Bye", "Error",
    "Update", "Status", "StatusReply", "Drain", "AdminCancel", "WorkerHello", "WorkerEvents",
    "WorkerRevoked", "Tasks", "Revoke", "Shutdown",
    "encode", "decode", "message_class", "type_name",
    "encode_hello", "encode_welcome", "encode_submit", "encode_cancel", "encode_cancel_reply",
    "encode_ack", "encode_heartbeat", "encode_bye", "encode_error", "encode_update", "encode_status",
    "encode_status_reply", "encode_drain", "encode_admin_cancel", "encode_worker_hello",
    "encode_worker_events", "encode_worker_revoked", "encode_tasks", "encode_revoke",
    "encode_shutdown", "default_endpoint",
]

VERSION = 1
MAX_MESSAGE_BYTES = 64 << 20  # ZMQ_MAXMSGSIZE on every zexec socket

# Message types (PROTOCOL.md sections 3 and 4).
HELLO, WELCOME, SUBMIT, CANCEL, CANCEL_REPLY, ACK, HEARTBEAT, BYE, ERROR = range(1, 10)
UPDATE, STATUS, STATUS_REPLY, DRAIN, ADMIN_CANCEL = 10, 11, 12, 13, 14
WORKER_HELLO, WORKER_EVENTS, WORKER_REVOKED = 20, 21, 22
TASKS, REVOKE, SHUTDOWN = 30, 31, 32

# Event kinds.
STARTED, OK, FAILED, CANCELLED = 0, 1, 2, 3
# cancel_reply outcomes.
OUTCOME_CANCELLED, OUTCOME_RUNNING, OUTCOME_FINISHED = 0, 1, 2

# Task option keys in the order the C++ encoder writes them (byte-for-byte agreement).
OPTION_KEYS = ("timeout_ms", "retries", "crash_retries", "retry_backoff_ms")

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1

# The C++ decoder's limits (protocol.cpp: msgpack::unpack_limit). Python's msgpack has no depth
# limit below its own stack size, but no valid message nests deeper than 4 levels, and a deeper
# frame always fails a field type check below, so the outcome (refused) is the same.
_UNPACK_LIMITS = dict(
    max_str_len=1 << 20,
    max_bin_len=MAX_MESSAGE_BYTES,
    max_array_len=1 << 20,
    max_map_len=64,
    max_ext_len=0,
)


# ---- message classes ------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """A task on the wire. ``id`` is the client's id (client hop) or the daemon's handle (worker
    hop); ``args`` the msgpack bytes of an array of positional arguments; ``options`` a dict of
    the nonzero options among OPTION_KEYS."""
    id: int
    name: str
    args: bytes
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """A task event: kind STARTED, OK (``value`` = msgpack bytes), FAILED (``error_type``,
    ``error_message``) or CANCELLED."""
    task_id: int
    kind: int
    value: bytes = b""
    error_type: str = ""
    error_message: str = ""


def _message(type_id, name):
    def wrap(cls):
        cls = dataclass(frozen=True)(cls)
        cls.TYPE = type_id
        cls.NAME = name
        return cls
    return wrap


@_message(HELLO, "hello")
class Hello:
    client_name: str
    pid: int


@_message(WELCOME, "welcome")
class Welcome:
    client_id: int
    results_endpoint: str
    workers: int
    heartbeat_ms: int
    max_pending: int


@_message(SUBMIT, "submit")
class Submit:
    tasks: list


@_message(CANCEL, "cancel")
class Cancel:
    request_id: int
    task_ids: list
    force: bool


@_message(CANCEL_REPLY, "cancel_reply")
class CancelReply:
    request_id: int
    outcomes: list  # [(task_id, outcome), ...]


@_message(ACK, "ack")
class Ack:
    seq: int


@_message(HEARTBEAT, "heartbeat")
class Heartbeat:
    pass


@_message(BYE, "bye")
class Bye:
    pass


@_message(ERROR, "error")
class Error:
    code: str
    message: str


@_message(UPDATE, "update")
class Update:
    seq: int
    events: list


@_message(STATUS, "status")
class Status:
    pass


@_message(STATUS_REPLY, "status_reply")
class StatusReply:
    body: bytes  # msgpack map; msgpack.unpackb(body, raw=False) to read it


@_message(DRAIN, "drain")
class Drain:
    pass


@_message(ADMIN_CANCEL, "admin_cancel")
class AdminCancel:
    request_id: int
    client_id: int
    task_ids: list
    force: bool


@_message(WORKER_HELLO, "worker_hello")
class WorkerHello:
    worker_id: int
    pid: int
    capacity: int
    task_names: list


@_message(WORKER_EVENTS, "worker_events")
class WorkerEvents:
    worker_id: int
    busy_us: int
    events: list


@_message(WORKER_REVOKED, "worker_revoked")
class WorkerRevoked:
    worker_id: int
    task_ids: list


@_message(TASKS, "tasks")
class Tasks:
    tasks: list


@_message(REVOKE, "revoke")
class Revoke:
    task_ids: list


@_message(SHUTDOWN, "shutdown")
class Shutdown:
    pass


_CLASSES = {c.TYPE: c for c in (
    Hello, Welcome, Submit, Cancel, CancelReply, Ack, Heartbeat, Bye, Error, Update, Status,
    StatusReply, Drain, AdminCancel, WorkerHello, WorkerEvents, WorkerRevoked, Tasks, Revoke,
    Shutdown)}


def message_class(type_id):
    """The message class of a type number (KeyError for an unknown one)."""
    return _CLASSES[type_id]


def type_name(type_id):
    cls = _CLASSES.get(type_id)
    return cls.NAME if cls else f"unknown type {type_id}"


def default_endpoint():
    """Where zexecd listens unless told otherwise (zexecd --help): ipc:///run/zexec/zexecd.sock
    as root, else ipc://$XDG_RUNTIME_DIR/zexec/zexecd.sock (/tmp without it)."""
    import os
    if os.geteuid() == 0:
        return "ipc:///run/zexec/zexecd.sock"
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return f"ipc://{base}/zexec/zexecd.sock"


# ---- encoding -------------------------------------------------------------------------------
# Values are checked before packing: a client validates what it sends, so that a refused frame
# can never leave futures without an outcome (PROTOCOL.md section 6).

def _uint(v, what, limit=_U64):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what}: expected an unsigned int, got {type(v).__name__}")
    if v < 0 or v > limit:
        raise ValueError(f"{what}: {v} is out of range [0, {limit}]")
    return int(v)


def _int(v, what):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what}: expected an int, got {type(v).__name__}")
    if v < _I64_MIN or v > _I64_MAX:
        raise ValueError(f"{what}: {v} is out of the int64 range")
    return int(v)


def _str(v, what):
    if not isinstance(v, str):
        raise TypeError(f"{what}: expected str, got {type(v).__name__}")
    return v


def _bytes(v, what):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{what}: expected bytes, got {type(v).__name__}")


def _bool(v, what):
    if not isinstance(v, bool):
        raise TypeError(f"{what}: expected bool, got {type(v).__name__}")
    return v


def _task_obj(t):
    if isinstance(t, Task):
        tid, name, args, options = t.id, t.name, t.args, t.options
    else:
        if not isinstance(t, (tuple, list)) or len(t) not in (3, 4):
            raise TypeError("task: expected (id, name, args[, options])")
        tid, name, args = t[0], t[1], t[2]
        options = t[3] if len(t) == 4 else None
    out = [_uint(tid, "task id"), _str(name, "task name"), _bytes(args, "task args")]
    if not name:
        raise ValueError("task name: empty")
    if options:
        unknown = set(options) - set(OPTION_KEYS)
        if unknown:
            raise ValueError(f"task options: unknown option {sorted(unknown)[0]!r}")
        opts = {}
        for key in OPTION_KEYS:
            value = _uint(options.get(key, 0), key, _U32)
            if value:
                opts[key] = value
        if opts:
            out.append(opts)
    return out


def _event_obj(e):
    if isinstance(e, Event):
        tid, kind, value, etype, emsg = e.task_id, e.kind, e.value, e.error_type, e.error_message
    else:
        if not isinstance(e, (tuple, list)) or len(e) < 2:
            raise TypeError("event: expected (task_id, kind, ...)")
        tid, kind = e[0], e[1]
        want = {STARTED: 2, OK: 3, FAILED: 4, CANCELLED: 2}.get(kind)
        if want is None or len(e) != want:
            raise ValueError(f"event of kind {kind!r}: {len(e)} elements")
        value = e[2] if kind == OK else b""
        etype, emsg = (e[2], e[3]) if kind == FAILED else ("", "")
    out = [_uint(tid, "event task id"), _uint(kind, "event kind", 3)]
    if kind == OK:
        out.append(_bytes(value, "event value"))
    elif kind == FAILED:
        out += [_str(etype, "error type"), _str(emsg, "error message")]
    return out


def _ids(v, what):
    return [_uint(i, what) for i in v]


def _frame(type_id, *fields):
    return msgpack.packb([VERSION, type_id, *fields], use_bin_type=True)


def encode_hello(client_name, pid):
    return _frame(HELLO, _str(client_name, "client name"), _int(pid, "pid"))


def encode_welcome(client_id, results_endpoint, workers, heartbeat_ms, max_pending):
    return _frame(WELCOME, _uint(client_id, "client id"), _str(results_endpoint, "results endpoint"),
                  _uint(workers, "workers", _U32), _uint(heartbeat_ms, "heartbeat_ms", _U32),
                  _uint(max_pending, "max_pending", _U32))


def encode_submit(tasks):
    """``tasks``: Task objects or ``(id, name, args_bytes[, options_dict])`` tuples."""
    return _frame(SUBMIT, [_task_obj(t) for t in tasks])


def encode_cancel(request_id, task_ids, force=False):
    return _frame(CANCEL, _uint(request_id, "request id"), _ids(task_ids, "task ids"), _bool(force, "force"))


def encode_cancel_reply(request_id, outcomes):
    return _frame(CANCEL_REPLY, _uint(request_id, "request id"),
                  [[_uint(i, "task id"), _uint(o, "cancel outcome", 2)] for i, o in outcomes])


def encode_ack(seq):
    return _frame(ACK, _uint(seq, "seq"))


def encode_heartbeat():
    return _frame(HEARTBEAT)


def encode_bye():
    return _frame(BYE)


def encode_error(code, message):
    return _frame(ERROR, _str(code, "error code"), _str(message, "error message"))


def encode_update(seq, events):
    return _frame(UPDATE, _uint(seq, "seq"), [_event_obj(e) for e in events])


def encode_status():
    return _frame(STATUS)


def encode_status_reply(body):
    return _frame(STATUS_REPLY, _bytes(body, "status body"))


def encode_drain():
    return _frame(DRAIN)


def encode_admin_cancel(request_id, client_id, task_ids, force=False):
    return _frame(ADMIN_CANCEL, _uint(request_id, "request id"), _uint(client_id, "client id"),
                  _ids(task_ids, "task ids"), _bool(force, "force"))


def encode_worker_hello(worker_id, pid, capacity, task_names):
    return _frame(WORKER_HELLO, _uint(worker_id, "worker id"), _int(pid, "pid"),
                  _uint(capacity, "capacity", _U32), [_str(n, "task name") for n in task_names])


def encode_worker_events(worker_id, busy_us, events):
    return _frame(WORKER_EVENTS, _uint(worker_id, "worker id"), _uint(busy_us, "busy_us"),
                  [_event_obj(e) for e in events])


def encode_worker_revoked(worker_id, task_ids):
    return _frame(WORKER_REVOKED, _uint(worker_id, "worker id"), _ids(task_ids, "task ids"))


def encode_tasks(tasks):
    return _frame(TASKS, [_task_obj(t) for t in tasks])


def encode_revoke(task_ids):
    return _frame(REVOKE, _ids(task_ids, "task ids"))


def encode_shutdown():
    return _frame(SHUTDOWN)


_ENCODERS = {
    Hello: lambda m: encode_hello(m.client_name, m.pid),
    Welcome: lambda m: encode_welcome(m.client_id, m.results_endpoint, m.workers, m.heartbeat_ms,
                                      m.max_pending),
    Submit: lambda m: encode_submit(m.tasks),
    Cancel: lambda m: encode_cancel(m.request_id, m.task_ids, m.force),
    CancelReply: lambda m: encode_cancel_reply(m.request_id, m.outcomes),
    Ack: lambda m: encode_ack(m.seq),
    Heartbeat: lambda m: encode_heartbeat(),
    Bye: lambda m: encode_bye(),
    Error: lambda m: encode_error(m.code, m.message),
    Update: lambda m: encode_update(m.seq, m.events),
    Status: lambda m: encode_status(),
    StatusReply: lambda m: encode_status_reply(m.body),
    Drain: lambda m: encode_drain(),
    AdminCancel: lambda m: encode_admin_cancel(m.request_id, m.client_id, m.task_ids, m.force),
    WorkerHello: lambda m: encode_worker_hello(m.worker_id, m.pid, m.capacity, m.task_names),
    WorkerEvents: lambda m: encode_worker_events(m.worker_id, m.busy_us, m.events),
    WorkerRevoked: lambda m: encode_worker_revoked(m.worker_id, m.task_ids),
    Tasks: lambda m: encode_tasks(m.tasks),
    Revoke: lambda m: encode_revoke(m.task_ids),
    Shutdown: lambda m: encode_shutdown(),
}


def encode(msg):
    """Encodes a message object (one of the classes above) into one frame."""
    try:
        enc = _ENCODERS[type(msg)]
    except KeyError:
        raise TypeError(f"not a zexec message: {type(msg).__name__}") from None
    return enc(msg)


# ---- decoding -------------------------------------------------------------------------------

def _kind(o):
    if o is None:
        return "nil"
    if isinstance(o, bool):
        return "bool"
    if isinstance(o, int):
        return "int"
    if isinstance(o, float):
        return "float"
    if isinstance(o, str):
        return "str"
    if isinstance(o, bytes):
        return "bin"
    if isinstance(o, (list, tuple)):
        return "array"
    if isinstance(o, dict):
        return "map"
    return "ext"


def _refuse(why):
    raise ProtocolError(why)


def _get_uint(o, what, limit=_U64):
    if isinstance(o, bool) or not isinstance(o, int) or o < 0:
        _refuse(f"{what}: expected a non-negative int, got {_kind(o)}")
    if o > limit:
        _refuse(f"{what}: {o} is out of range")
    return o


def _get_int(o, what):
    if isinstance(o, bool) or not isinstance(o, int):
        _refuse(f"{what}: expected a non-negative int, got {_kind(o)}")
    if o > _I64_MAX:
        _refuse(f"{what}: {o} is out of range")
    return o


def _get_bool(o, what):
    if not isinstance(o, bool):
        _refuse(f"{what}: expected bool, got {_kind(o)}")
    return o


def _get_str(o, what):
    if not isinstance(o, str):
        _refuse(f"{what}: expected str, got {_kind(o)}")
    return o


def _get_bytes(o, what):
    # Opaque byte fields accept bin (preferred) or str, as the C++ decoder does.
    if isinstance(o, bytes):
        return o
    if isinstance(o, str):
        return o.encode("utf-8", "surrogateescape")
    _refuse(f"{what}: expected bin, got {_kind(o)}")


def _get_array(o, what, lo=0, hi=None):
    if not isinstance(o, list):
        _refuse(f"{what}: expected array, got {_kind(o)}")
    if len(o) < lo or (hi is not None and len(o) > hi):
        expected = str(lo) if lo == hi else f"{lo}..{hi}"
        _refuse(f"{what}: array of {len(o)} elements, expected {expected}")
    return o


def _get_ids(o, what):
    return [_get_uint(i, what) for i in _get_array(o, what)]


def _get_task(o):
    a = _get_array(o, "task", 3, 4)
    tid = _get_uint(a[0], "task id")
    name = _get_str(a[1], "task name")
    if not name:
        _refuse("task name: empty")
    args = _get_bytes(a[2], "task args")
    options = {}
    if len(a) == 4:
        if not isinstance(a[3], dict):
            _refuse(f"task options: expected map, got {_kind(a[3])}")
        raw = {}
        for k, v in a[3].items():
            k = _get_str(k, "task option name")
            if k not in OPTION_KEYS:
                _refuse(f"task options: unknown option '{k}'")
            raw[k] = _get_uint(v, k, _U32)
        options = {k: raw[k] for k in OPTION_KEYS if raw.get(k)}
    return Task(tid, name, args, options)


def _get_tasks(o):
    return [_get_task(t) for t in _get_array(o, "tasks")]


def _get_event(o):
    a = _get_array(o, "event", 2, 4)
    tid = _get_uint(a[0], "event task id")
    kind = _get_uint(a[1], "event kind", 3)
    expected = 3 if kind == OK else 4 if kind == FAILED else 2
    if len(a) != expected:
        _refuse(f"event of kind {kind}: {len(a)} elements, expected {expected}")
    if kind == OK:
        return Event(tid, kind, _get_bytes(a[2], "event value"))
    if kind == FAILED:
        return Event(tid, kind, b"", _get_str(a[2], "error type"), _get_str(a[3], "error message"))
    return Event(tid, kind)


def _get_events(o):
    return [_get_event(e) for e in _get_array(o, "events")]


def _cancel_reply(f):
    outcomes = []
    for p in _get_array(f[1], "outcomes"):
        p = _get_array(p, "outcome", 2, 2)
        outcomes.append((_get_uint(p[0], "task id"), _get_uint(p[1], "cancel outcome", 2)))
    return CancelReply(_get_uint(f[0], "request id"), outcomes)


def _worker_hello(f):
    return WorkerHello(_get_uint(f[0], "worker id"), _get_int(f[1], "pid"),
                       _get_uint(f[2], "capacity", _U32),
                       [_get_str(n, "task name") for n in _get_array(f[3], "task names")])


# type -> (field count, builder). Fields are checked in order, as the C++ decoder does.
_DECODERS = {
    HELLO: (2, lambda f: Hello(_get_str(f[0], "client name"), _get_int(f[1], "pid"))),
    WELCOME: (5, lambda f: Welcome(_get_uint(f[0], "client id"), _get_str(f[1], "results endpoint"),
                                   _get_uint(f[2], "workers", _U32), _get_uint(f[3], "heartbeat_ms", _U32),
                                   _get_uint(f[4], "max_pending", _U32))),
    SUBMIT: (1, lambda f: Submit(_get_tasks(f[0]))),
    CANCEL: (3, lambda f: Cancel(_get_uint(f[0], "request id"), _get_ids(f[1], "task ids"),
                                 _get_bool(f[2], "force"))),
    CANCEL_REPLY: (2, _cancel_reply),
    ACK: (1, lambda f: Ack(_get_uint(f[0], "seq"))),
    HEARTBEAT: (0, lambda f: Heartbeat()),
    BYE: (0, lambda f: Bye()),
    ERROR: (2, lambda f: Error(_get_str(f[0], "error code"), _get_str(f[1], "error message"))),
    UPDATE: (2, lambda f: Update(_get_uint(f[0], "seq"), _get_events(f[1]))),
    STATUS: (0, lambda f: Status()),
    STATUS_REPLY: (1, lambda f: StatusReply(_get_bytes(f[0], "status body"))),
    DRAIN: (0, lambda f: Drain()),
    ADMIN_CANCEL: (4, lambda f: AdminCancel(_get_uint(f[0], "request id"), _get_uint(f[1], "client id"),
                                            _get_ids(f[2], "task ids"), _get_bool(f[3], "force"))),
    WORKER_HELLO: (4, _worker_hello),
    WORKER_EVENTS: (3, lambda f: WorkerEvents(_get_uint(f[0], "worker id"), _get_uint(f[1], "busy_us"),
                                              _get_events(f[2]))),
    WORKER_REVOKED: (2, lambda f: WorkerRevoked(_get_uint(f[0], "worker id"), _get_ids(f[1], "task ids"))),
    TASKS: (1, lambda f: Tasks(_get_tasks(f[0]))),
    REVOKE: (1, lambda f: Revoke(_get_ids(f[0], "task ids"))),
    SHUTDOWN: (0, lambda f: Shutdown()),
}


def decode(frame):
    """Decodes one frame into a message object; raises ProtocolError (with the reason) for
    anything that is not exactly a valid protocol v1 message."""
    data = bytes(frame)
    if not data:
        _refuse("empty frame")
    try:
        root = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True,
                               unicode_errors="surrogateescape", **_UNPACK_LIMITS)
    except msgpack.ExtraData as e:
        raise ProtocolError(f"{len(e.extra)} trailing bytes after the message") from None
    except ValueError as e:
        text = str(e)
        if "incomplete input" in text:
            raise ProtocolError("truncated msgpack") from None
        raise ProtocolError(f"malformed msgpack: {text}") from None
    except Exception as e:  # FormatError, StackError, anything the unpacker raises
        raise ProtocolError(f"malformed msgpack: {type(e).__name__} {e}".rstrip()) from None
    if not isinstance(root, list):
        _refuse(f"envelope: expected array, got {_kind(root)}")
    if len(root) < 2:
        _refuse(f"envelope: array of {len(root)} elements, need [version, type, ...]")
    version = _get_uint(root[0], "version")
    if version != VERSION:
        _refuse(f"unsupported protocol version {version} (this peer speaks {VERSION})")
    type_id = _get_uint(root[1], "message type")
    entry = _DECODERS.get(type_id)
    if entry is None:
        _refuse(f"unknown message type {type_id}")
    count, build = entry
    fields = root[2:]
    if len(fields) != count:
        _refuse(f"{type_name(type_id)}: {len(fields)} fields, expected {count}")
    return build(fields)
