"""The zexec wire protocol, version 1 (docs/PROTOCOL.md), in Python.

Every message is one ZeroMQ frame holding one msgpack array ``[version, type, field...]``.
Messages are small frozen dataclasses (equality includes the class, so a ``Bye()`` never equals
a ``Heartbeat()``), each made from its field table below (the same shape as the C++ one,
protocol/src/message_fields.hpp): the table is the one place a message's fields are written, and
``encode(msg)``, the ``encode_<name>(...)`` functions and ``decode(frame)`` all walk it. The
bytes agree with the C++ encoder (tests/vectors/protocol.txt holds both to it): minimal-width
ints, ``str`` for text, ``bin`` for opaque bytes, task options in a fixed key order and only when
nonzero. ``decode(frame)`` is strict: a wrong version, type, field count, field
type or size limit raises :class:`ProtocolError` saying what was wrong, as the C++ decoder does.
"""

from dataclasses import dataclass, field, make_dataclass
from typing import NamedTuple

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

# The C++ decoder's limits (protocol/include/zexec/detail/limits.hpp). Python's msgpack has no depth
# limit below its own stack size, but no valid message nests deeper than 4 levels, and a deeper
# frame always fails a field type check below, so the outcome (refused) is the same.
_UNPACK_LIMITS = dict(
    max_str_len=1 << 20,
    max_bin_len=MAX_MESSAGE_BYTES,
    max_array_len=1 << 20,
    max_map_len=64,
    max_ext_len=0,
)


# ---- records ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """A task on the wire. ``id`` is the client's id (client hop) or the daemon's handle (worker
    hop); ``args`` the msgpack bytes of an array of positional arguments; ``options`` a dict of
    the nonzero options among OPTION_KEYS; ``attempt`` (worker hop) which run of the task this
    is, 2 and up when the daemon runs it again after a failure, 0 = not said (the first)."""
    id: int
    name: str
    args: bytes
    options: dict = field(default_factory=dict)
    attempt: int = 0


@dataclass(frozen=True)
class Event:
    """A task event: kind STARTED, OK (``value`` = msgpack bytes), FAILED (``error_type``,
    ``error_message``) or CANCELLED."""
    task_id: int
    kind: int
    value: bytes = b""
    error_type: str = ""
    error_message: str = ""


def default_endpoint():
    """Where zexecd listens unless told otherwise (zexecd --help): ipc:///run/zexec/zexecd.sock
    as root, else ipc://$XDG_RUNTIME_DIR/zexec/zexecd.sock (/tmp without it)."""
    import os
    if os.geteuid() == 0:
        return "ipc:///run/zexec/zexecd.sock"
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return f"ipc://{base}/zexec/zexecd.sock"


# ---- checking values on the way out ---------------------------------------------------------
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
    attempt = 0
    if isinstance(t, Task):
        tid, name, args, options, attempt = t.id, t.name, t.args, t.options, t.attempt
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
    # From 2 on only, after the options map (empty if need be): a first run keeps the short form.
    if _uint(attempt, "task attempt", _U32) > 1:
        if len(out) == 3:
            out.append({})
        out.append(attempt)
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


# ---- reading values on the way in -----------------------------------------------------------

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
        expected = str(lo) if lo == hi else f"at least {lo}" if hi is None else f"{lo}..{hi}"
        _refuse(f"{what}: array of {len(o)} elements, expected {expected}")
    return o


def _get_ids(o, what):
    return [_get_uint(i, what) for i in _get_array(o, what)]


def _get_task(o):
    a = _get_array(o, "task", 3)  # elements after options and attempt: a newer peer's, skipped
    tid = _get_uint(a[0], "task id")
    name = _get_str(a[1], "task name")
    if not name:
        _refuse("task name: empty")
    args = _get_bytes(a[2], "task args")
    options = {}
    if len(a) >= 4:
        if not isinstance(a[3], dict):
            _refuse(f"task options: expected map, got {_kind(a[3])}")
        raw = {}
        for k, v in a[3].items():
            k = _get_str(k, "task option name")
            if k not in OPTION_KEYS:
                _refuse(f"task options: unknown option '{k}'")
            raw[k] = _get_uint(v, k, _U32)
        options = {k: raw[k] for k in OPTION_KEYS if raw.get(k)}
    attempt = _get_uint(a[4], "task attempt", _U32) if len(a) >= 5 else 0
    return Task(tid, name, args, options, attempt)


def _get_tasks(o):
    return [_get_task(t) for t in _get_array(o, "tasks")]


def _get_event(o):
    a = _get_array(o, "event", 2)
    tid = _get_uint(a[0], "event task id")
    kind = _get_uint(a[1], "event kind", 3)
    expected = 3 if kind == OK else 4 if kind == FAILED else 2
    if len(a) < expected:  # more: a newer peer's trailing elements, skipped
        _refuse(f"event of kind {kind}: {len(a)} elements, expected {expected}")
    if kind == OK:
        return Event(tid, kind, _get_bytes(a[2], "event value"))
    if kind == FAILED:
        return Event(tid, kind, b"", _get_str(a[2], "error type"), _get_str(a[3], "error message"))
    return Event(tid, kind)


def _get_events(o):
    return [_get_event(e) for e in _get_array(o, "events")]


def _get_outcomes(o, what):
    outcomes = []
    for pair in _get_array(o, what):
        pair = _get_array(pair, "outcome", 2, 2)
        outcomes.append((_get_uint(pair[0], "task id"), _get_uint(pair[1], "cancel outcome", 2)))
    return outcomes


# ---- kinds of field value ---------------------------------------------------------------------
# A kind says how a value is checked and written (pack) and how it is read back (get); both take
# the field's name for their error messages.

class _Kind(NamedTuple):
    pack: object  # (value, what) -> the value to msgpack; TypeError/ValueError when it is wrong
    get: object   # (msgpack object, what) -> the value; ProtocolError when it is wrong


def _list(kind, item=None):
    """A list of ``kind`` values; ``item`` names one element in errors (default: the list's name)."""
    return _Kind(lambda v, what: [kind.pack(x, item or what) for x in v],
                 lambda o, what: [kind.get(x, item or what) for x in _get_array(o, what)])


_UINT64 = _Kind(_uint, _get_uint)
_UINT32 = _Kind(lambda v, what: _uint(v, what, _U32), lambda o, what: _get_uint(o, what, _U32))
_INT64 = _Kind(_int, _get_int)
_BOOL = _Kind(_bool, _get_bool)
_TEXT = _Kind(_str, _get_str)  # text: msgpack str
_BYTES = _Kind(_bytes, _get_bytes)  # opaque bytes: msgpack bin
_IDS = _list(_UINT64)
_TASKS = _Kind(lambda v, what: [_task_obj(t) for t in v],
               lambda o, what: [_get_task(t) for t in _get_array(o, what)])
_EVENTS = _Kind(lambda v, what: [_event_obj(e) for e in v],
                lambda o, what: [_get_event(e) for e in _get_array(o, what)])
_OUTCOMES = _Kind(lambda v, what: [[_uint(i, "task id"), _uint(x, "cancel outcome", 2)] for i, x in v],
                  _get_outcomes)


# ---- the messages ----------------------------------------------------------------------------

_REQUIRED = object()  # a field's default: none, the caller must give it


class _F(NamedTuple):
    """One field of a message, in wire order."""
    attr: str            # the message object's attribute
    kind: _Kind
    what: str = ""       # its name in errors (default: attr), as the C++ decoder says it
    default: object = _REQUIRED
    added: bool = False  # added to the message later: older peers' frames lack it (then 0)


def _added(attr, kind, what="", default=0):
    """A field added after its message was first defined: trailing only, and a reader takes the
    older, shorter frame with it 0 (or b"", False: PROTOCOL.md section 1, Versions)."""
    return _F(attr, kind, what, default, True)


def _message(type_id, name, *fields, doc=None):
    """A frozen dataclass for one message: attributes from its fields, TYPE, NAME, FIELDS."""
    spec = []
    for f in fields:
        spec.append((f.attr, object) if f.default is _REQUIRED else (f.attr, object, field(default=f.default)))
    cls = make_dataclass("".join(w.title() for w in name.split("_")), spec, frozen=True)
    cls.__module__ = __name__
    cls.__doc__ = doc or f"The {name} message (PROTOCOL.md)."
    cls.TYPE, cls.NAME = type_id, name
    cls.FIELDS = tuple(f._replace(what=f.what or f.attr) for f in fields)
    required = [f for f in fields if not f.added]
    assert fields[:len(required)] == tuple(required), f"{name}: an added field must come last"
    cls.REQUIRED = len(required)
    return cls


# client <-> daemon
Hello = _message(HELLO, "hello", _F("client_name", _TEXT, "client name"), _F("pid", _INT64),
                 _added("session", _UINT64), _added("token", _BYTES, "session token", b""))
Welcome = _message(
    WELCOME, "welcome",
    _F("client_id", _UINT64, "client id"),
    _F("results_endpoint", _TEXT, "results endpoint"),
    _F("workers", _UINT32),
    _F("heartbeat_ms", _UINT32),
    _F("max_pending", _UINT32),
    _added("max_unacked_updates", _UINT32),
    _added("client_timeout_ms", _UINT32),
    _added("session", _UINT64),
    _added("token", _BYTES, "session token", b""),
    _added("resumed", _BOOL, default=False))
Submit = _message(SUBMIT, "submit", _F("tasks", _TASKS))
Cancel = _message(CANCEL, "cancel", _F("request_id", _UINT64, "request id"), _F("task_ids", _IDS, "task ids"),
                  _F("force", _BOOL, default=False))
CancelReply = _message(CANCEL_REPLY, "cancel_reply", _F("request_id", _UINT64, "request id"),
                       _F("outcomes", _OUTCOMES), doc="outcomes: [(task_id, outcome), ...]")
Ack = _message(ACK, "ack", _F("seq", _UINT64))
Heartbeat = _message(HEARTBEAT, "heartbeat")
Bye = _message(BYE, "bye")
Error = _message(ERROR, "error", _F("code", _TEXT, "error code"), _F("message", _TEXT, "error message"))
Status = _message(STATUS, "status")
StatusReply = _message(STATUS_REPLY, "status_reply", _F("body", _BYTES, "status body"),
                       doc="body: a msgpack map; msgpack.unpackb(body, raw=False) to read it")
Drain = _message(DRAIN, "drain")
AdminCancel = _message(ADMIN_CANCEL, "admin_cancel", _F("request_id", _UINT64, "request id"),
                       _F("client_id", _UINT64, "client id"), _F("task_ids", _IDS, "task ids"),
                       _F("force", _BOOL, default=False))
# daemon -> client, on the results socket
Update = _message(UPDATE, "update", _F("seq", _UINT64), _F("events", _EVENTS), _added("accepted_through", _UINT64))
# worker <-> daemon
WorkerHello = _message(WORKER_HELLO, "worker_hello", _F("worker_id", _UINT64, "worker id"), _F("pid", _INT64),
                       _F("capacity", _UINT32), _F("task_names", _list(_TEXT, "task name"), "task names"))
WorkerEvents = _message(WORKER_EVENTS, "worker_events", _F("worker_id", _UINT64, "worker id"),
                        _F("busy_us", _UINT64), _F("events", _EVENTS))
WorkerRevoked = _message(WORKER_REVOKED, "worker_revoked", _F("worker_id", _UINT64, "worker id"),
                         _F("task_ids", _IDS, "task ids"))
Tasks = _message(TASKS, "tasks", _F("tasks", _TASKS))
Revoke = _message(REVOKE, "revoke", _F("task_ids", _IDS, "task ids"))
Shutdown = _message(SHUTDOWN, "shutdown")

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


# ---- encoding --------------------------------------------------------------------------------
# Values are checked before packing: a client validates what it sends, so that a refused frame
# can never leave futures without an outcome (PROTOCOL.md section 6).

def _pack(cls, values):
    fields = [f.kind.pack(v, f.what) for f, v in zip(cls.FIELDS, values)]
    # Trailing added fields that are 0 (b"", False) are left out, as the C++ encoder does: a
    # reader takes them as 0, and the message keeps its bytes from before they were added.
    n = len(fields)
    while n > cls.REQUIRED and not fields[n - 1]:
        n -= 1
    return msgpack.packb([VERSION, cls.TYPE, *fields[:n]], use_bin_type=True)


def encode(msg):
    """Encodes a message object (one of the classes above) into one frame."""
    cls = type(msg)
    if _CLASSES.get(getattr(cls, "TYPE", None)) is not cls:
        raise TypeError(f"not a zexec message: {cls.__name__}")
    return _pack(cls, [getattr(msg, f.attr) for f in cls.FIELDS])


def _encoder(cls):
    count = len(cls.FIELDS)

    def encode_message(*args, **kwargs):
        # Every field given in order (the usual call) skips building the message object.
        if kwargs or len(args) != count:
            return encode(cls(*args, **kwargs))
        return _pack(cls, args)
    encode_message.__name__ = encode_message.__qualname__ = f"encode_{cls.NAME}"
    encode_message.__doc__ = f"encode({cls.__name__}(...)): {', '.join(f.attr for f in cls.FIELDS) or 'no fields'}."
    return encode_message


encode_hello, encode_welcome, encode_submit, encode_cancel, encode_cancel_reply = map(
    _encoder, (Hello, Welcome, Submit, Cancel, CancelReply))
encode_ack, encode_heartbeat, encode_bye, encode_error, encode_update = map(
    _encoder, (Ack, Heartbeat, Bye, Error, Update))
encode_status, encode_status_reply, encode_drain, encode_admin_cancel = map(
    _encoder, (Status, StatusReply, Drain, AdminCancel))
encode_worker_hello, encode_worker_events, encode_worker_revoked = map(
    _encoder, (WorkerHello, WorkerEvents, WorkerRevoked))
encode_tasks, encode_revoke, encode_shutdown = map(_encoder, (Tasks, Revoke, Shutdown))


# ---- decoding --------------------------------------------------------------------------------

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
    cls = _CLASSES.get(type_id)
    if cls is None:
        _refuse(f"unknown message type {type_id}")
    fields = root[2:]
    if len(fields) < cls.REQUIRED:
        _refuse(f"{cls.NAME}: {len(fields)} fields, expected at least {cls.REQUIRED}")
    # In order, so the first bad field is the one named; fields an older peer did not send
    # (added since) keep their default, 0, and those a newer peer added after ours are skipped
    # (zip stops at the fields this module knows).
    return cls(*(f.kind.get(o, f.what) for f, o in zip(cls.FIELDS, fields)))
