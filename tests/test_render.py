import json

from helpers import NOON

from chatserv import events as ev
from chatserv import render

# conftest pins TZ=UTC, so NOON renders as 12:00:00.


def test_message_line():
    e = ev.RoomMessage("message", "lobby", "alice", "hello", NOON, 7)
    assert render.lineBytes(e) == b"[12:00:00] #lobby <alice> hello\r\n"


def test_each_event_reads_as_documented():
    cases = {
        ev.RoomMessage("action", "dev", "bob", "waves", NOON, 1): "#dev * bob waves",
        ev.PrivateMessage("alice", "bob", "psst", NOON, 2): "*alice* psst",
        ev.PrivateMessage("alice", "bob", "psst", NOON, 2, outgoing=True): "-> *bob* psst",
        ev.Joined("lobby", "carol", NOON): "#lobby --> carol has joined",
        ev.Left("lobby", "carol", "quit: bye", NOON): "#lobby <-- carol has left (quit: bye)",
        ev.Renamed("carol", "caz", NOON): "--- carol is now known as caz",
        ev.Notice("hello", NOON): "-!- hello",
        ev.Error("nick-taken", "taken", NOON): "error: taken",
        ev.WhoReply("lobby", ("a", "b"), NOON): "#lobby users (2): a, b",
        ev.RoomsReply((("dev", 1), ("lobby", 3)), NOON): "rooms (2): #dev (1), #lobby (3)",
        ev.TimeReply("2026-11-21T12:00:00+00:00", NOON): "server time: 2026-11-21T12:00:00+00:00",
    }
    for event, text in cases.items():
        assert render.lines(event) == [f"[12:00:00] {text}"]


def test_help_spans_lines_each_stamped():
    entries = (ev.HelpEntry("a", "/a", "does a"), ev.HelpEntry("b", "/b X", "does b", ("/bee",)))
    out = render.lines(ev.HelpReply(entries, NOON))
    assert len(out) == 3 and all(line.startswith("[12:00:00] ") for line in out)
    assert "(also /bee)" in out[2]


def test_json_message_fields():
    e = ev.RoomMessage("message", "lobby", "alice", "hi", NOON + 0.25, 7)
    assert json.loads(render.jsonText(e)) == {
        "type": "message",
        "id": 7,
        "room": "lobby",
        "from": "alice",
        "text": "hi",
        "ts": int(NOON * 1000) + 250,
    }


def test_every_event_renders_to_json_with_type_text_and_ts():
    samples = [
        ev.RoomMessage("action", "dev", "bob", "waves", NOON, 1),
        ev.PrivateMessage("alice", "bob", "psst", NOON, 2),
        ev.Joined("lobby", "carol", NOON),
        ev.Left("lobby", "carol", "quit", NOON),
        ev.Renamed("carol", "caz", NOON),
        ev.Notice("hello", NOON, room="dev"),
        ev.Welcome("carol", "hi carol", NOON),
        ev.Error("usage", "usage: /join ROOM", NOON),
        ev.WhoReply("lobby", ("a",), NOON),
        ev.RoomsReply((("dev", 1),), NOON),
        ev.TimeReply("2026-11-21T12:00:00+00:00", NOON),
        ev.HelpReply((ev.HelpEntry("a", "/a", "does a"),), NOON),
    ]
    types = []
    for event in samples:
        obj = json.loads(render.jsonText(event))
        assert isinstance(obj["text"], str) and obj["ts"] == int(NOON * 1000)
        types.append(obj["type"])
    assert types == [
        "action",
        "msg",
        "join",
        "leave",
        "rename",
        "notice",
        "welcome",
        "error",
        "who",
        "rooms",
        "time",
        "help",
    ]


def test_json_keeps_unicode_readable():
    e = ev.RoomMessage("message", "lobby", "alice", "héllo ✓", NOON, 1)
    assert "héllo ✓" in render.jsonText(e)


def test_every_event_type_renders_on_every_wire():
    """A new event type needs a rendering on every wire: the IRC wire's two tables fall
    back on each other, and the line and JSON tables on nothing."""
    import typing

    from chatserv.protocols.ircmessage import MAX_BODY
    from chatserv.protocols.ircwire import RENDERING, IrcWire

    source = ev.Source("carol", "~carol", "cloak", "carol", "Carol C")
    samples = [
        ev.RoomMessage("action", "dev", "bob", "waves", NOON, 1, source=source),
        ev.PrivateMessage("alice", "bob", "psst", NOON, 2),
        ev.Joined("lobby", "carol", NOON, True, source),
        ev.Left("lobby", "carol", "bye", NOON, source),
        ev.Kicked("lobby", "carol", "root", "behave", NOON),
        ev.Quit("carol", "quit", ("lobby", "dev"), NOON, source),
        ev.Renamed("carol", "caz", NOON, source),
        ev.Away("carol", "lunch", NOON, source),
        ev.RealnameChanged("carol", "Carol C", NOON, source),
        ev.AdminChanged("dev", "carol", True, "root", NOON, source),
        ev.AdminChanged("dev", "carol", False, "console", NOON),
        ev.Notice("hello", NOON, room="dev"),
        ev.Welcome("carol", "hi carol", NOON),
        ev.LoggedIn("carol", False, None, "logged in", NOON),
        ev.Topic("lobby", "news", "root", NOON, NOON),
        ev.HistoryMark("lobby", 2, False, NOON),
        ev.Error("usage", "usage: /join ROOM", NOON),
        ev.WhoReply("lobby", ("a", "b"), NOON, frozenset({"a"})),
        ev.RoomsReply((("dev", 1),), NOON),
        ev.TimeReply("2026-11-21T12:00:00+00:00", NOON),
        ev.HelpReply((ev.HelpEntry("a", "/a", "does a"),), NOON),
    ]
    assert {type(e) for e in samples} == set(typing.get_args(ev.Event))
    irc = [IrcWire(frozenset(), "irc.test"), IrcWire(RENDERING, "irc.test")]
    for event in samples:
        assert isinstance(render.lineBytes(event), bytes)
        for text in render.jsonTexts(event):
            assert isinstance(json.loads(text)["type"], str)
        for wire in irc:
            for payload in (wire.render(event), wire.renderTo(event, "dave")):
                assert isinstance(payload, bytes), (event, wire.caps)
                lines = payload.split(b"\r\n")
                assert lines[-1] == b"", payload  # nothing without its CRLF
                for line in lines[:-1]:
                    assert len(line.partition(b" ")[2] if line[:1] == b"@" else line) <= MAX_BODY
