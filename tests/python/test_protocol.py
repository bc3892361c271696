"""zexec.protocol on its own: every message round-trips, the decoder is strict, the encoder
validates what it is given."""

import msgpack
import pytest

from zexec import protocol as p

ALL = [
    p.Hello("client", -1), p.Welcome(1, "tcp://127.0.0.1:5555", 2, 1000, 10, 64, 5000),
    p.Submit([p.Task(1, "n", b"\x90"), p.Task(2, "m", b"\x91\x01", {"crash_retries": 4})]),
    p.Cancel(1, [], True), p.CancelReply(2, [(5, 1)]), p.Ack(0), p.Heartbeat(), p.Bye(),
    p.Error("c", "m"), p.Update(2**64 - 1, []), p.Status(), p.StatusReply(b""), p.Drain(),
    p.AdminCancel(1, 2, [3], False), p.WorkerHello(1, 2, 2**32 - 1, ["ü"]),
    p.WorkerEvents(1, 0, [p.Event(1, p.CANCELLED)]), p.WorkerRevoked(1, []), p.Tasks([]),
    p.Revoke([1, 2]), p.Shutdown(),
]


@pytest.mark.parametrize("msg", ALL, ids=lambda m: m.NAME)
def test_round_trip(msg):
    frame = p.encode(msg)
    assert p.decode(frame) == msg
    assert msgpack.unpackb(frame, raw=False)[:2] == [1, msg.TYPE]


def test_every_message_type_has_one_class_from_the_table():
    # The table is the one source: each type number has its class, named after it, which
    # round-trips (ALL above holds one of each) and refuses a frame one required field short.
    classes = [p.message_class(t) for t in range(256) if p.type_name(t) != f"unknown type {t}"]
    assert sorted(c.NAME for c in classes) == sorted(m.NAME for m in ALL)
    for cls in classes:
        assert getattr(p, cls.__name__) is cls and cls.__name__ in p.__all__
        assert callable(getattr(p, f"encode_{cls.NAME}"))
        assert [f.attr for f in cls.FIELDS] == list(cls.__dataclass_fields__)
    for msg in ALL:
        frame = msgpack.unpackb(p.encode(msg), raw=False)
        if len(frame) > 2 and msg.NAME != "welcome":
            with pytest.raises(p.ProtocolError, match=f"{msg.NAME}: {len(frame) - 3} fields"):
                p.decode(msgpack.packb(frame[:-1], use_bin_type=True))


def test_welcome_in_its_older_five_field_form_is_accepted():
    # A newer client meets an older daemon: the fields added since are 0 (unknown).
    old = p.decode(pk(1, 2, 7, "ipc:///x.r7", 4, 1000, 100))
    assert old == p.Welcome(7, "ipc:///x.r7", 4, 1000, 100)
    assert (old.max_unacked_updates, old.client_timeout_ms) == (0, 0)
    assert p.decode(pk(1, 2, 7, "ep", 4, 1000, 100, 64)).max_unacked_updates == 64
    new = p.decode(pk(1, 2, 7, "ep", 4, 1000, 100, 64, 5000))
    assert (new.max_unacked_updates, new.client_timeout_ms) == (64, 5000)
    # Added fields that are 0 are left out at the end, as the C++ encoder does.
    assert p.encode_welcome(7, "ep", 4, 1000, 100) == pk(1, 2, 7, "ep", 4, 1000, 100)
    assert p.encode_welcome(7, "ep", 4, 1000, 100, 0, 5000) == pk(1, 2, 7, "ep", 4, 1000, 100, 0, 5000)
    # A newer daemon's welcome, with a field this module does not know: read, the field skipped.
    assert (p.decode(pk(1, 2, 7, "ep", 4, 1000, 100, 64, 5000, 9, b"tok", True, 1))
            == p.Welcome(7, "ep", 4, 1000, 100, 64, 5000, 9, b"tok", True))
    for frame, why in [(pk(1, 2, 7, "ep", 4, 1000), "welcome: 4 fields, expected at least 5"),
                       (pk(1, 2, 7, "ep", 4, 1000, 100, "64"), "max_unacked_updates: expected a non-negative int"),
                       (pk(1, 2, 7, "ep", 4, 1000, 100, 64, 2**32), "client_timeout_ms: 4294967296 is out of range")]:
        with pytest.raises(p.ProtocolError) as info:
            p.decode(frame)
        assert why in str(info.value)


def test_messages_of_different_types_never_compare_equal():
    assert p.Heartbeat() != p.Bye()
    assert p.decode(p.encode_bye()) != p.Heartbeat()


def pk(*obj):
    return msgpack.packb(list(obj), use_bin_type=True)


@pytest.mark.parametrize("frame, why", [
    (b"", "empty frame"),
    (b"\x93\x01", "truncated"),
    (b"\xc1", "malformed"),
    (pk(1), "envelope"),
    (pk(1, 7) + b"\x01", "trailing"),
    (pk(1, True), "message type: expected a non-negative int, got bool"),
    (pk(1, 6, True), "seq: expected a non-negative int, got bool"),
    (pk(1, 6, 1.0), "seq: expected a non-negative int, got float"),
    (pk(1, 6), "ack: 0 fields, expected at least 1"),
    (pk(1, 2, 1, "ep", 2**32, 1, 1), "workers: 4294967296 is out of range"),
    (pk(1, 1, "x", 2**63), "pid"),
    (pk(1, 4, 1, [1], 1), "force: expected bool, got int"),
    (pk(1, 3, [[1, "", b""]]), "task name: empty"),
    (pk(1, 3, [[1, b"echo", b""]]), "task name: expected str, got bin"),
    (pk(1, 3, [[1, "echo"]]), "task: array of 2 elements"),
    (pk(1, 3, [[1, "echo", b"", {"retries": -1}]]), "retries"),
    (pk(1, 3, [[1, "echo", b"", {"retries": 2**32}]]), "out of range"),
    (pk(1, 3, [[1, "echo", b"", {1: 2}]]), "task option name: expected str"),
    (pk(1, 3, [[1, "echo", b"", [1]]]), "task options: expected map"),
    (pk(1, 10, 1, [[1, 1]]), "event of kind 1: 2 elements, expected 3"),
    (pk(1, 10, 1, [[1, 2, "T"]]), "event of kind 2: 3 elements, expected 4"),
    (pk(1, 5, 1, [[1, 3]]), "cancel outcome: 3 is out of range"),
    (pk(1, 20, 1, 1, 1, ["a", 1]), "task name: expected str, got int"),
    (msgpack.packb([1, 12, "x" * ((1 << 20) + 1)]), "exceeds max_str_len"),
    (msgpack.packb([1, 3, [[1, "echo", b"", {f"k{i}": 1 for i in range(65)}]]]), "exceeds max_map_len"),
    (b"\x93\x01\x06" + b"\x91" * 40 + b"\x01", "seq: expected a non-negative int"),  # deep nesting
])
def test_decoder_refuses(frame, why):
    with pytest.raises(p.ProtocolError) as info:
        p.decode(frame)
    assert why in str(info.value)


def test_opaque_fields_accept_str_too():
    # PROTOCOL.md section 1: receivers also accept str for args/value.
    msg = p.decode(msgpack.packb([1, 10, 1, [[3, 1, "\x2a"]]], use_bin_type=True))
    assert msg.events[0].value == b"*"


def test_options_zero_values_are_dropped_and_order_is_canonical():
    frame = p.encode_submit([(1, "a", b"\x90", {"retries": 0, "retry_backoff_ms": 5, "timeout_ms": 9})])
    task = msgpack.unpackb(frame, raw=False)[2][0]
    assert list(task[3].items()) == [("timeout_ms", 9), ("retry_backoff_ms", 5)]
    assert len(msgpack.unpackb(p.encode_submit([(1, "a", b"\x90", {"retries": 0})]))[2][0]) == 3


@pytest.mark.parametrize("call, exc", [
    (lambda: p.encode_ack(-1), ValueError),
    (lambda: p.encode_ack(2**64), ValueError),
    (lambda: p.encode_ack(True), TypeError),
    (lambda: p.encode_submit([(1, "", b"")]), ValueError),
    (lambda: p.encode_submit([(1, "a", "not bytes")]), TypeError),
    (lambda: p.encode_submit([(1, "a", b"", {"bogus": 1})]), ValueError),
    (lambda: p.encode_submit([(1, "a", b"", {"retries": 2**32})]), ValueError),
    (lambda: p.encode_cancel(1, [1], 1), TypeError),
    (lambda: p.encode_update(1, [(1, 1)]), ValueError),
    (lambda: p.encode(("not", "a message")), TypeError),
])
def test_encoder_validates(call, exc):
    with pytest.raises(exc):
        call()
