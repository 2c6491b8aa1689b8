"""The encoding of events between processes: every type round-trips; bad input is refused."""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatserv import codec
from chatserv import events as ev
from chatserv.codec import CodecError, decode, encode

# Any text, floats as time stamps are (finite), ints as ids are (below 2**53 and beyond).
st.register_type_strategy(float, st.floats(allow_nan=False, allow_infinity=False))
st.register_type_strategy(int, st.integers(-(2**63), 2**63 - 1))

EVENT_TYPES = sorted(
    (cls for _, cls in inspect.getmembers(ev, inspect.isclass) if dataclasses.is_dataclass(cls)),
    key=lambda cls: cls.__name__,
)


def fullyEqual(a, b) -> bool:
    """Equal including the fields left out of ==, such as an event's source."""
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(
            fullyEqual(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(fullyEqual, a, b))
    return type(a) is type(b) and a == b


def test_every_event_type_is_registered():
    assert {cls.__name__ for cls in EVENT_TYPES} <= set(codec.registered())


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_every_event_type_round_trips(data):
    for cls in EVENT_TYPES:  # each example draws one of every type
        event = data.draw(st.builds(cls), label=cls.__name__)
        if "source" in {f.name for f in dataclasses.fields(cls)}:
            source = data.draw(st.none() | st.builds(ev.Source), label="source")
            event = dataclasses.replace(event, source=source)
        assert fullyEqual(decode(encode(event)), event)


def test_an_encoded_event_is_versioned_and_tagged_json():
    source = ev.Source("alice", "alice", "cloak.example", "alice", "Alice A.")
    event = ev.RoomMessage("message", "lobby", "alice", "héllo", 1795262400.5, 7, source=source)
    message = json.loads(encode(event))
    assert message["v"] == codec.VERSION
    assert message["m"]["t"] == "RoomMessage" and message["m"]["source"]["t"] == "Source"
    reply = ev.WhoReply("lobby", ("bob", "alice"), 1.0, frozenset({"bob", "alice"}))
    assert json.loads(encode(reply))["m"]["admins"] == ["alice", "bob"]  # sets, sorted
    assert decode(encode(reply)) == reply


def test_a_newer_senders_extra_field_is_ignored_and_a_missing_default_is_taken():
    message = json.loads(encode(ev.Joined("lobby", "bob", 1.0)))
    message["m"]["mood"] = "cheerful"  # a field of a later release
    del message["m"]["admin"]  # a field this one has, with a default
    assert decode(json.dumps(message)) == ev.Joined("lobby", "bob", 1.0)


BAD = [
    (b"\xff", "not a JSON message"),
    (b"[1, 2]", "not a chatserv message"),
    (b'{"v": 2, "m": {"t": "Notice", "text": "x", "ts": 1}}', "version 2, not 1"),
    (b'{"v": 1, "m": {"t": "Rumour", "text": "x"}}', "unknown type 'Rumour'"),
    (b'{"v": 1, "m": {"t": "Notice", "text": "x"}}', "Notice without its ts"),
    (b'{"v": 1, "m": {"t": "Notice", "text": 5, "ts": 1}}', "5 is not a str"),
    (b'{"v": 1, "m": {"t": "HistoryMark", "room": "a", "count": true, "end": true, "ts": 1}}',
     "True is not a int"),
    (b'{"v": 1, "m": {"t": "Quit", "nick": "a", "reason": "", "rooms": "ab", "ts": 1}}',
     "'ab' is not a list"),
    (b'{"v": 1, "m": {"t": "RoomsReply", "rooms": [["a", 1, 2]], "ts": 1}}',
     "is not a list of 2"),
    (b'{"v": 1, "m": {"t": "Joined", "room": "a", "nick": "b", "ts": 1, "source": 3}}',
     "3 is none of the types allowed"),
    (b'{"v": 1, "m": "Notice"}', "a value without its type"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "why"), BAD)
def test_what_cannot_be_read_is_refused_in_one_line(data, why):
    with pytest.raises(CodecError) as raised:
        decode(data)
    assert why in str(raised.value) and "\n" not in str(raised.value)


def test_only_registered_dataclasses_are_encoded():
    @dataclasses.dataclass(frozen=True)
    class Stranger:
        x: int

    with pytest.raises(CodecError):
        encode(Stranger(1))
    with pytest.raises(CodecError):
        encode(ev.Notice(object(), 1.0))  # type: ignore[arg-type]
    assert typing.get_args(ev.Event)  # the union the registry is built from


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_every_control_message_round_trips(data):
    import chatserv.bus
    import chatserv.roster  # noqa: F401  (registers its messages)

    controls = [cls for name, cls in sorted(codec.registered().items())
                if cls.__module__ in ("chatserv.bus", "chatserv.roster", "chatserv.store")
                and cls is not chatserv.bus.Delivery]  # fmt: skip
    assert {c.__name__ for c in controls} >= {"EndSession", "SanctionAdded", "Members", "Reset"}
    for cls in controls:
        message = data.draw(st.builds(cls), label=cls.__name__)
        assert fullyEqual(decode(encode(message)), message)
    event = data.draw(st.builds(ev.RoomMessage))
    delivery = chatserv.bus.Delivery(event, ("lobby",), ("bob",), "alice", "node-a")
    assert fullyEqual(decode(encode(delivery)), delivery)
