"""The shared protocol vectors (tests/vectors/protocol.txt): the Python encoder must produce the
exact bytes the C++ one does, and decode them back; every `bad` frame must be refused."""

import os

import pytest

from zexec import protocol as p

VECTORS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vectors", "protocol.txt")

ARGS = b"\x92\x01\xa1a"  # msgpack [1, "a"]
TOKEN = bytes(range(16))  # a session token (opaque bytes)
BIG = 4294967297  # 2**32 + 1: needs uint64

# Our own description of every vector, keyed by name (independent of the file's comments).
EXPECTED = {
    "hello": p.Hello("demo", 4242),
    "hello_session": p.Hello("demo", 4242, 77, TOKEN),
    "welcome": p.Welcome(7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000),
    "welcome_session": p.Welcome(7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000, 77, TOKEN, True),
    "submit": p.Submit([p.Task(1, "echo", ARGS)]),
    "submit_options": p.Submit([
        p.Task(1, "echo", ARGS),
        p.Task(2, "sleep", b"\x91\xcb\x3f\xd0\x00\x00\x00\x00\x00\x00", {"timeout_ms": 5000, "retries": 2}),
    ]),
    "submit_all_options": p.Submit([p.Task(3, "echo", ARGS, {
        "timeout_ms": 1, "retries": 2, "crash_retries": 3, "retry_backoff_ms": 100000})]),
    "cancel": p.Cancel(9, [1, 2, 3], False),
    "cancel_force": p.Cancel(10, [18446744073709551615], True),
    "cancel_reply": p.CancelReply(9, [(1, p.OUTCOME_CANCELLED), (2, p.OUTCOME_RUNNING), (3, p.OUTCOME_FINISHED)]),
    "ack": p.Ack(5),
    "ack_large": p.Ack(4294967296),
    "heartbeat": p.Heartbeat(),
    "bye": p.Bye(),
    "error": p.Error("bad_message", "task args: expected bin, got int"),
    "update": p.Update(1, [
        p.Event(1, p.STARTED),
        p.Event(2, p.OK, b"\x2a"),
        p.Event(3, p.FAILED, b"", "ValueError", "bad value"),
        p.Event(4, p.CANCELLED),
        p.Event(5, p.FAILED, b"", "WorkerCrashed", "worker killed by signal 9"),
    ]),
    "update_accepted": p.Update(2, [p.Event(1, p.OK, b"*")], 41),
    "status": p.Status(),
    "status_reply": p.StatusReply(b"\x81\xa9uptime_ms\x05"),
    "drain": p.Drain(),
    "admin_cancel": p.AdminCancel(3, 7, [42], True),
    "worker_hello": p.WorkerHello(3, 1234, 64, ["add", "echo"]),
    "worker_hello_no_names": p.WorkerHello(3, 1234, 1, []),
    "worker_events": p.WorkerEvents(3, 1500, [p.Event(BIG, p.STARTED), p.Event(BIG, p.OK, b"\xc0")]),
    "worker_heartbeat": p.WorkerEvents(3, 0, []),
    "worker_revoked": p.WorkerRevoked(3, [BIG, 8589934594]),
    "tasks": p.Tasks([p.Task(BIG, "echo", ARGS)]),
    "tasks_attempt": p.Tasks([p.Task(BIG, "echo", ARGS, {}, 3)]),
    "tasks_options": p.Tasks([p.Task(BIG, "echo", ARGS, {"timeout_ms": 5000, "retries": 2})]),
    "revoke": p.Revoke([BIG]),
    "shutdown": p.Shutdown(),
}

# The same messages through the explicit encode_* functions (the API a client/worker calls).
BUILD = {
    "hello": lambda: p.encode_hello("demo", 4242),
    "hello_session": lambda: p.encode_hello("demo", 4242, 77, TOKEN),
    "welcome": lambda: p.encode_welcome(7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000),
    "welcome_session": lambda: p.encode_welcome(7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000,
                                                77, TOKEN, True),
    "submit": lambda: p.encode_submit([(1, "echo", ARGS)]),
    "submit_options": lambda: p.encode_submit([
        (1, "echo", ARGS),
        # given in another key order, with a zero option: the encoder normalises both
        (2, "sleep", b"\x91\xcb\x3f\xd0\x00\x00\x00\x00\x00\x00", {"retries": 2, "crash_retries": 0, "timeout_ms": 5000}),
    ]),
    "submit_all_options": lambda: p.encode_submit([(3, "echo", ARGS, {
        "retry_backoff_ms": 100000, "crash_retries": 3, "retries": 2, "timeout_ms": 1})]),
    "cancel": lambda: p.encode_cancel(9, [1, 2, 3], False),
    "cancel_force": lambda: p.encode_cancel(10, [2**64 - 1], True),
    "cancel_reply": lambda: p.encode_cancel_reply(9, [(1, 0), (2, 1), (3, 2)]),
    "ack": lambda: p.encode_ack(5),
    "ack_large": lambda: p.encode_ack(2**32),
    "heartbeat": p.encode_heartbeat,
    "bye": p.encode_bye,
    "error": lambda: p.encode_error("bad_message", "task args: expected bin, got int"),
    "update": lambda: p.encode_update(1, [(1, 0), (2, 1, b"*"), (3, 2, "ValueError", "bad value"), (4, 3),
                                          (5, 2, "WorkerCrashed", "worker killed by signal 9")]),
    "update_accepted": lambda: p.encode_update(2, [(1, 1, b"*")], 41),
    "status": p.encode_status,
    "status_reply": lambda: p.encode_status_reply(b"\x81\xa9uptime_ms\x05"),
    "drain": p.encode_drain,
    "admin_cancel": lambda: p.encode_admin_cancel(3, 7, [42], True),
    "worker_hello": lambda: p.encode_worker_hello(3, 1234, 64, ["add", "echo"]),
    "worker_hello_no_names": lambda: p.encode_worker_hello(3, 1234, 1, []),
    "worker_events": lambda: p.encode_worker_events(3, 1500, [(BIG, 0), (BIG, 1, b"\xc0")]),
    "worker_heartbeat": lambda: p.encode_worker_events(3, 0, []),
    "worker_revoked": lambda: p.encode_worker_revoked(3, [BIG, 8589934594]),
    "tasks": lambda: p.encode_tasks([(BIG, "echo", ARGS)]),
    "tasks_attempt": lambda: p.encode_tasks([p.Task(BIG, "echo", ARGS, {}, 3)]),
    "tasks_options": lambda: p.encode_tasks([(BIG, "echo", ARGS, {"timeout_ms": 5000, "retries": 2})]),
    "revoke": lambda: p.encode_revoke([BIG]),
    "shutdown": p.encode_shutdown,
}

# `old` vectors: older, shorter forms of a message, which decode with the added fields 0.
OLDER = {
    "welcome_5_fields": p.Welcome(7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 0, 0),
}

# `new` vectors: a newer peer's frames, with fields or elements after the known ones, which
# decode as the message without them.
NEWER = {
    "heartbeat_with_a_field": p.Heartbeat(),
    "welcome_with_a_field": p.Welcome(7, "ipc:///run/zexec/zexecd.sock.r7", 4, 1000, 100000, 64, 5000, 77, TOKEN,
                                      True),
    "task_with_an_element": p.Submit([p.Task(1, "echo", ARGS, {"retries": 2})]),
    "event_with_an_element": p.Update(1, [p.Event(1, p.OK, b"*")]),
}


def load():
    # The file is part of the tree (the C++ side reads it too): without it these tests would
    # check nothing, so its absence is a failure, never a skip.
    if not os.path.exists(VECTORS):
        pytest.fail(f"shared protocol vectors not found at {VECTORS}: nothing to check against")
    good, bad, old, new = {}, {}, {}, {}
    with open(VECTORS) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            words = line.split()
            if words[0] in ("bad", "old", "new"):
                assert len(words) in (2, 3), f"{VECTORS}:{n}: bad line: {line!r}"
                table = {"bad": bad, "old": old, "new": new}[words[0]]
                name, hexs = words[1], words[2] if len(words) == 3 else ""
            else:
                assert len(words) == 2, f"{VECTORS}:{n}: bad line: {line!r}"
                table, (name, hexs) = good, words
            assert name not in table, f"{VECTORS}:{n}: duplicate vector {name}"
            table[name] = bytes.fromhex(hexs)
    assert good, f"{VECTORS} holds no vectors"
    return good, bad, old, new


def test_vector_names_match_our_table():
    good, _, _, _ = load()
    assert sorted(set(good) - set(EXPECTED)) == [], "vectors our table lacks (add them to EXPECTED/BUILD)"
    assert sorted(set(EXPECTED) - set(good)) == [], "our table has vectors the file lacks"
    assert set(BUILD) == set(EXPECTED)


def test_encode_matches_vectors_byte_for_byte():
    good, _, _, _ = load()
    for name, frame in good.items():
        assert p.encode(EXPECTED[name]) == frame, f"encode({name}) differs from the vector"
        assert BUILD[name]() == frame, f"encode_{name}(...) differs from the vector"


def test_decode_vectors():
    good, _, _, _ = load()
    for name, frame in good.items():
        msg = p.decode(frame)
        assert msg == EXPECTED[name], f"decode({name}) = {msg!r}"
        assert msg.TYPE == frame[2]  # [fixarray, version 1, type, ...]


def test_bad_frames_are_refused():
    _, bad, _, _ = load()
    assert bad, "the vector file has no bad frames"
    accepted = []
    for name, frame in bad.items():
        try:
            msg = p.decode(frame)
        except p.ProtocolError as e:
            assert str(e), f"refusing {name} should say why"
        else:
            accepted.append(f"{name} -> {msg!r}")
    assert not accepted, f"bad frames accepted: {accepted}"


def test_older_forms_are_accepted_with_the_added_fields_zero():
    _, _, old, _ = load()
    assert set(old) == set(OLDER)
    for name, frame in old.items():
        msg = p.decode(frame)
        assert msg == OLDER[name], f"decode(old {name}) = {msg!r}"
        # Added fields that are 0 are left out at the end: it re-encodes as it came.
        assert p.encode(msg) == frame


def test_newer_forms_are_accepted_without_their_additions():
    _, _, _, new = load()
    assert set(new) == set(NEWER)
    for name, frame in new.items():
        msg = p.decode(frame)
        assert msg == NEWER[name], f"decode(new {name}) = {msg!r}"
        assert len(p.encode(msg)) < len(frame), "re-encoded without the additions"


def test_the_file_has_a_message_of_every_type():
    good, _, _, _ = load()
    types = {p.decode(frame).TYPE for frame in good.values()}
    every = {p.HELLO, p.WELCOME, p.SUBMIT, p.CANCEL, p.CANCEL_REPLY, p.ACK, p.HEARTBEAT, p.BYE, p.ERROR,
             p.UPDATE, p.STATUS, p.STATUS_REPLY, p.DRAIN, p.ADMIN_CANCEL, p.WORKER_HELLO, p.WORKER_EVENTS,
             p.WORKER_REVOKED, p.TASKS, p.REVOKE, p.SHUTDOWN}
    assert types == every
