"""The error types of docs/PROTOCOL.md section 7, read from the document at test time: each maps to
a TaskError subclass of its own named TYPE + "Error" (as in the C++ client, whose
tests/error_types_test.cpp checks the same), and an error event of that type raises it. Any
other type is a plain TaskError."""

import os
import re

import zexec
from zexec import _errors
from zexec import protocol as p
from scripted_peer import T, ScriptedPeer

PROTOCOL_MD = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "PROTOCOL.md")


def protocol_error_types():
    """The exact type strings of section 7: the first cell of each data row of the tables under the
    heading numbered 7 that speaks of errors (up to the next heading of its level or higher), when
    that cell is one name, in backticks or not ("any name" is not a type)."""
    types, level, in_table = [], 0, False
    with open(PROTOCOL_MD, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            heading = re.match(r"^(#+)\s+(.*)$", line)
            if heading:
                if level and len(heading[1]) <= level:
                    break
                if not level and re.search(r"^(§\s*)?7\b.*[Ee]rror", heading[2]):
                    level = len(heading[1])
                continue
            is_row = level > 0 and line.startswith("|")
            if is_row and in_table:  # the first row of a table is its header
                cell = line.split("|")[1].strip()
                name = re.fullmatch(r"`?([A-Za-z_][A-Za-z0-9_]*)`?", cell)
                if name:
                    types.append(name[1])
            in_table = is_row
    assert len(types) >= 5, "section 7 of docs/PROTOCOL.md was not found or not parsed"
    return types


def test_every_protocol_type_has_a_class_of_its_own_with_its_name():
    types = protocol_error_types()
    classes = set()
    for t in types:
        cls = getattr(zexec, t + "Error", None)
        assert cls is not None, f"no zexec.{t}Error for error type {t}"
        assert issubclass(cls, zexec.TaskError) and cls is not zexec.TaskError
        assert cls.__name__ in zexec.__all__
        e = _errors.task_error(t, "m", "t")
        assert type(e) is cls, (t, type(e))
        assert (e.type, e.message, e.task_name) == (t, "m", "t")
        classes.add(cls)
    assert len(classes) == len(types)


def test_other_types_are_a_plain_task_error():
    for t in ("ValueError", "std::runtime_error", "NoSuchType", "", "queuefull"):
        assert type(_errors.task_error(t, "m", "t")) is zexec.TaskError, t


def test_an_error_event_raises_the_class_of_its_type():
    types = protocol_error_types() + ["ValueError"]  # and a task's own exception

    def script(peer):
        peer.welcome()
        ids = []
        while len(ids) < len(types):
            _, submit = peer.recv(p.Submit)
            ids += [t.id for t in submit.tasks]
        events = [p.Event(i, p.FAILED, error_type=t, error_message="from the daemon")
                  for i, t in zip(ids, types)]
        peer.push.send(p.encode_update(1, events))

    peer = ScriptedPeer(script)
    with zexec.Executor(peer.endpoint, connect_timeout=T) as ex:
        futures = [ex.submit("task") for _ in types]
        for f, t in zip(futures, types):
            exc = f.exception(T)
            want = zexec.TaskError if t == "ValueError" else getattr(zexec, t + "Error")
            assert type(exc) is want, (t, type(exc))
            assert exc.type == t and exc.message == "from the daemon" and exc.task_name == "task"
    peer.close()
