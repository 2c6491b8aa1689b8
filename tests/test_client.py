"""chatserv-client's logic, without a terminal: recognising server output on both wires,
colours, wrapping and scroll-back, session state, back-off and the reconnect loop.

The recognisers are fed what the server's own renderer (chatserv.render) produces, so a
change of the line format on the server fails here rather than on someone's screen.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from helpers import NOON, makeService, named
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from wsmemory import TEXT as WS_TEXT
from wsmemory import WSConnection, makeFactory

from chatserv import commands, render
from chatserv import events as ev
from chatserv.client import lines as ln
from chatserv.client.app import parseArgs
from chatserv.client.backoff import Backoff
from chatserv.client.completion import COMMANDS, ChatCompleter
from chatserv.client.connection import Connector, JSONWire, Request, Target
from chatserv.client.display import PALETTE, MessageLog, fragments, nickColor, wrap
from chatserv.client.state import ChatState


def lineOf(event: object) -> ln.Line:
    """What the client makes of an event on the line wire."""
    (text,) = render.lines(event)
    return ln.parseLine(text + "\r\n")


def jsonOf(event: object, me: str | None = "alice") -> list[ln.Line]:
    """... and on the JSON wire."""
    return ln.eventLines(json.loads(render.jsonText(event)), me)


def spanned(line: ln.Line) -> list[str]:
    return [line.text[a:b] for a, b in line.spans]


# -- recognising the line format ------------------------------------------------------------

WELCOME = ev.Welcome("bob", "Welcome, bob! Type /help for commands.", NOON)
CASES = [
    # event, kind, room, nick, body, the nicknames to colour
    (ev.RoomMessage("message", "lobby", "bob", "hi <all>", NOON, 1), ln.MESSAGE, "lobby", "bob",
     "hi <all>", ["bob"]),
    (ev.RoomMessage("action", "dev", "Zed[1]", "waves", NOON, 2), ln.ACTION, "dev", "Zed[1]",
     "waves", ["Zed[1]"]),
    (ev.PrivateMessage("bob", "alice", "*psst*", NOON, 3), ln.PRIVATE, None, "bob", "*psst*",
     ["bob"]),
    (ev.PrivateMessage("alice", "bob", "hi", NOON, 4, outgoing=True), ln.PRIVATE_SENT, None,
     "bob", "hi", ["bob"]),
    (ev.Joined("lobby", "carol", NOON), ln.JOIN, "lobby", "carol", "", ["carol"]),
    (ev.Left("lobby", "carol", "went to #dev", NOON), ln.LEAVE, "lobby", "carol",
     "went to #dev", ["carol"]),
    (ev.Quit("dora", "connection lost", ("lobby", "dev"), NOON), ln.QUIT, None, "dora",
     "connection lost", ["dora"]),
    (ev.Renamed("bob", "robert", NOON), ln.RENAME, None, "bob", "", ["bob", "robert"]),
    (WELCOME, ln.WELCOME, None, "bob", "", ["bob"]),
    (ev.LoggedIn("bob", False, None, "you are logged in as bob", NOON), ln.LOGIN, None, "bob",
     "", ["bob"]),
    (ev.LoggedIn("al", True, None, "registered al; next time, /login al PASSWORD (admin)", NOON),
     ln.LOGIN, None, "al", "", ["al"]),
    (ev.Notice("server shutting down", NOON), ln.NOTICE, None, None, "server shutting down", []),
    (ev.Notice("standup (from al)", NOON, room="dev"), ln.NOTICE, "dev", None,
     "standup (from al)", []),
    (ev.Error("no-such-room", "there is no room #x", NOON), ln.ERROR, None, None,
     "there is no room #x", []),
    (ev.WhoReply("dev", ("robert", "alice"), NOON), ln.WHO, "dev", None, "robert, alice",
     ["robert", "alice"]),
    (ev.RoomsReply((("dev", 2),), NOON), ln.INFO, None, None, "", []),
    (ev.TimeReply("2026-11-21T12:00:00+00:00", NOON), ln.INFO, None, None, "", []),
    (ev.HistoryMark("dev", 2, False, NOON), ln.INFO, None, None, "", []),
    (ev.HistoryMark("dev", 2, True, NOON), ln.HISTORY_END, "dev", None, "", []),
]  # fmt: skip


@pytest.mark.parametrize("event, kind, room, nick, body, nicks", CASES)
def test_line_formats_recognised(event, kind, room, nick, body, nicks):
    line = lineOf(event)
    assert (line.kind, line.room, line.nick, line.body) == (kind, room, nick, body)
    assert spanned(line) == nicks
    assert line.stamp == "12:00:00"
    assert line.text == render.lines(event)[0].removeprefix("[12:00:00] ")


@pytest.mark.parametrize("event, kind, room, nick, body, nicks", CASES)
def test_json_events_read_like_lines(event, kind, room, nick, body, nicks):
    """The JSON wire shows the same text, recognised the same way."""
    if isinstance(event, ev.PrivateMessage) and event.outgoing:
        me = event.sender  # a JSON client knows its copy by "from"
    else:
        me = "someone"
    (line,) = jsonOf(event, me)
    assert (line.kind, line.room, line.nick, line.body) == (kind, room, nick, body)
    assert spanned(line) == nicks
    assert line.text == lineOf(event).text
    assert line.stamp == "12:00:00"


def test_history_keeps_its_date():
    event = ev.RoomMessage("message", "lobby", "bob", "old news", NOON, 1, history=True)
    assert lineOf(event).stamp == "2026-11-21 12:00:00"
    (line,) = jsonOf(event)
    assert line.stamp == "2026-11-21 12:00:00" and line.kind == ln.MESSAGE


def test_who_users():
    assert lineOf(ev.WhoReply("dev", ("a", "b[1]"), NOON)).users == ("a", "b[1]")
    (line,) = jsonOf(ev.WhoReply("dev", ("a", "b[1]"), NOON))
    assert line.users == ("a", "b[1]")


def test_message_text_cannot_pose_as_another_format():
    line = ln.parseLine("[12:00:00] #lobby <bob> --- alice is now known as bob")
    assert (line.kind, line.nick) == (ln.MESSAGE, "bob")
    assert ln.parseLine("[12:00:00] #lobby <bob> x").kind == ln.MESSAGE
    assert ln.parseLine("#lobby <not a nick> x").kind == ln.INFO
    assert ln.parseLine("no stamp at all").stamp == ""


def test_escape_sequences_from_the_server_are_shown_not_obeyed():
    line = ln.parseLine("[12:00:00] -!- \x1b[2J\x07 gotcha\u202e")
    assert "\x1b" not in line.text and "\x07" not in line.text
    assert line.text == "-!- ^[[2J^G gotcha<U+202E>"
    (event,) = ln.eventLines({"type": "notice", "text": "a\x1bb", "ts": 0}, None)
    assert event.text == "-!- a^[b"


def test_final_notices():
    final = [
        "disconnected: you logged in from elsewhere",
        "disconnected: you sent too much, too fast",
        "disconnected: you were kicked by alice: spam",
        "disconnected: you are banned for 2 hours (spam)",
        "Goodbye.",
    ]
    for text in final:
        assert lineOf(ev.Notice(text, NOON)).final, text
    for text in ("server shutting down", "Welcome to chatserv! Type a nickname to begin."):
        assert not lineOf(ev.Notice(text, NOON)).final
    # A room notice is an admin talking, not the server hanging up.
    assert not lineOf(ev.Notice("disconnected: joke", NOON, room="dev")).final


# -- JSON specifics ---------------------------------------------------------------------------


def test_json_own_messages_and_colours():
    said = ev.RoomMessage("message", "lobby", "Alice", "hi", NOON, 1, color="#FF8800")
    (line,) = jsonOf(said, me="alice")
    assert line.own and line.color == "#ff8800"
    (line,) = jsonOf(said, me="bob")
    assert not line.own
    bad = {"type": "message", "room": "x", "from": "m", "text": "t", "ts": 0, "color": "red;x"}
    assert ln.eventLines(bad, None)[0].color is None


def test_json_private_messages_by_direction():
    sent = ev.PrivateMessage("alice", "bob", "psst", NOON, 4, color="#00ff00")
    (mine,) = jsonOf(sent, me="alice")
    assert (mine.kind, mine.text, mine.own) == (ln.PRIVATE_SENT, "-> *bob* psst", True)
    (theirs,) = jsonOf(sent, me="bob")
    assert (theirs.kind, theirs.text, theirs.color) == (ln.PRIVATE, "*alice* psst", "#00ff00")
    toSelf = ev.PrivateMessage("alice", "alice", "note", NOON, 5)
    assert jsonOf(toSelf, me="alice")[0].text == "*alice* note"  # it arrives once
    kept = ev.PrivateMessage("alice", "bob", "tea", NOON, 6, offline=True)
    (mine,) = jsonOf(kept, me="alice")
    assert mine.text == "-> *bob* (offline; kept for their next login) tea"
    (theirs,) = jsonOf(kept, me="bob")
    assert theirs.stamp == "2026-11-21 12:00:00"  # delivered at login, sent earlier


def test_json_help_spans_lines():
    entries = (ev.HelpEntry("a", "/a", "does a"), ev.HelpEntry("b", "/b X", "does b"))
    lines = jsonOf(ev.HelpReply(entries, NOON))
    assert [line.text for line in lines] == [
        t.removeprefix("[12:00:00] ") for t in render.lines(ev.HelpReply(entries, NOON))
    ]


def test_json_rubbish_is_shown_not_fatal():
    assert ln.eventLines([1, 2], None)[0].kind == ln.CLIENT_ERROR
    (line,) = ln.eventLines({"type": 5, "text": None, "ts": "soon", "from": []}, None)
    assert line.kind == ln.INFO and line.stamp == ""
    (line,) = ln.eventLines({"type": "welcome", "nick": "x", "text": "hello"}, None)
    assert (line.kind, line.nick) == (ln.WELCOME, "x")


# -- colours and fragments ------------------------------------------------------------------


def test_nick_colour_is_stable_and_folds_case():
    assert re.fullmatch(r"#[0-9a-f]{6}", nickColor("alice"))
    assert nickColor("Zed[1]") == nickColor("zed{1}") == nickColor("ZED[1]")
    assert {nickColor(f"user{i}") for i in range(100)} == set(PALETTE)  # all in use


def test_fragments_colour_the_nicknames():
    line = lineOf(ev.Renamed("bob", "robert", NOON))
    out = fragments(line)
    assert "".join(text for _, text in out) == "[12:00:00] --- bob is now known as robert"
    styles = dict((text, style) for style, text in out)
    assert f"fg:{nickColor('bob')}" in styles["bob"]
    assert f"fg:{nickColor('robert')}" in styles["robert"]
    assert "class:notice" in styles["--- "]


def test_fragments_use_the_senders_colour_and_mark_own_lines():
    said = ev.RoomMessage("message", "lobby", "bob", "hi", NOON, 1, color="#123456")
    (line,) = jsonOf(said, me="alice")
    assert "fg:#123456" in dict((t, s) for s, t in fragments(line))["bob"]
    (own,) = jsonOf(said, me="bob")
    assert all("class:own" in s for s, t in fragments(own) if t and not t.startswith("["))
    error = lineOf(ev.Error("x", "nope", NOON))
    assert fragments(error)[-1] == ("class:error", "error: nope")


# -- wrapping and scroll-back --------------------------------------------------------------


def plain(rows) -> list[str]:
    return ["".join(text for _, text in row) for row in rows]


def test_wrap_breaks_at_spaces_and_indents():
    rows = plain(wrap([("", "[12:00:00] "), ("x", "alpha beta gamma delta")], 24, indent=11))
    assert rows == ["[12:00:00] alpha beta ", "           gamma delta"]
    # No hanging indent on a narrow screen, where it would leave little room for text.
    assert plain(wrap([("", "[12:00:00] alpha beta")], 20, indent=11))[1] == "beta"
    assert plain(wrap([("", "abcdefghij")], 4)) == ["abcd", "efgh", "ij"]
    assert plain(wrap([("", "日本語テキスト")], 6)) == ["日本語", "テキス", "ト"]
    assert all(len(r) <= 20 for r in plain(wrap([("", "word " * 50)], 20, indent=3)))


def logOf(count: int) -> MessageLog:
    log = MessageLog()
    for i in range(count):
        log.add(ln.Line(ln.INFO, f"line {i}"))
    return log


def test_log_follows_the_newest_line():
    log = logOf(3)
    assert plain(log.visible(20, 5)) == ["", "", "line 0", "line 1", "line 2"]
    log.add(ln.Line(ln.INFO, "line 3"))
    assert plain(log.visible(20, 5))[-1] == "line 3" and not log.scrolled


def test_log_pages_up_and_down():
    log = logOf(30)
    assert plain(log.visible(40, 10))[-1] == "line 29"
    log.pageUp()
    shown = plain(log.visible(40, 10))
    # The old top line (20) is now at the bottom, above the "more below" row.
    assert shown[:9] == [f"line {i}" for i in range(12, 21)]
    assert "more below: 9 lines" in shown[9]
    log.add(ln.Line(ln.INFO, "line 30"))  # arriving while scrolled up: the view stays
    shown = plain(log.visible(40, 10))
    assert shown[8] == "line 20" and "10 lines, 1 new" in shown[9]
    for _ in range(5):
        log.pageUp()
        log.visible(40, 10)
    assert plain(log.visible(40, 10))[0] == "line 0"  # the top, kept full
    log.pageDown()
    assert plain(log.visible(40, 10))[0] == "line 8"
    for _ in range(5):
        log.pageDown()
        log.visible(40, 10)
    assert not log.scrolled and plain(log.visible(40, 10))[-1] == "line 30"
    log.pageUp()
    log.toBottom()
    assert not log.scrolled and log.unseen == 0


def test_log_keeps_a_bounded_history():
    log = MessageLog(limit=10)
    for i in range(25):
        log.add(ln.Line(ln.INFO, f"line {i}"))
    assert len(log.lines) == 10 and plain(log.visible(20, 3))[-1] == "line 24"


# -- back-off -----------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap():
    backoff = Backoff(random=lambda: 0.0)
    assert [backoff.next() for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    backoff.reset()
    assert backoff.next() == 1


def test_backoff_jitter_only_shortens():
    low = Backoff(jitter=0.2, random=lambda: 1.0)
    assert [low.next() for _ in range(6)] == pytest.approx([0.8, 1.6, 3.2, 6.4, 12.8, 24])
    many = Backoff()
    for _ in range(100):
        assert 0 < many.next() <= 30


# -- session state ------------------------------------------------------------------------


def joinedState(nick: str = "alice", room: str = "lobby") -> ChatState:
    state = ChatState()
    state.observe(ln.parseLine(f"-!- Welcome, {nick}! Type /help for commands."))
    state.observe(ln.parseLine(f"#{room} --> {nick} has joined"))
    state.observe(ln.parseLine(f"#{room} users (2): bob, {nick}"))
    return state


def test_state_tracks_nick_room_and_members():
    state = joinedState()
    assert (state.nick, state.room, state.nicknames()) == ("alice", "lobby", ["bob"])
    state.observe(ln.parseLine("#lobby --> carol has joined"))
    state.observe(ln.parseLine("--- bob is now known as Robert"))
    assert state.nicknames() == ["carol", "Robert"]
    state.observe(ln.parseLine("#lobby <-- carol has left (quit)"))
    state.observe(ln.parseLine("--- ALICE is now known as al"))
    assert (state.nick, state.nicknames()) == ("al", ["Robert"])
    state.observe(ln.parseLine("#dev --> al has joined"))
    state.observe(ln.parseLine("#dev users (1): al"))
    state.observe(ln.parseLine("#lobby <-- al has left (went to #dev)"))
    assert (state.room, state.nicknames()) == ("dev", [])
    state.observe(ln.parseLine("*zed* hi"))
    assert state.nicknames() == ["zed"]  # a private-message partner completes too


def test_state_drops_who_quit_from_the_members():
    """A quit from several rooms names none of them: it is about ours, if they were in it."""
    quit = ev.Quit("bob", "connection lost", ("lobby", "dev"), NOON)
    for wire in (lambda: [lineOf(quit)], lambda: jsonOf(quit)):
        state = joinedState()
        state.observe(ln.parseLine("#lobby --> carol has joined"))
        (line,) = wire()
        assert state.toShow([line]) == [line]  # shown once, as the server wrote it
        assert line.text == "<-- bob has quit (connection lost)"
        state.observe(line)
        assert (state.room, state.nicknames()) == ("lobby", ["carol"])
        styles = dict((text, style) for style, text in fragments(line))
        assert f"fg:{nickColor('bob')}" in styles["bob"] and "class:notice" in styles["<-- "]
    # One room: a leave of it, as before.
    (line,) = jsonOf(ev.Quit("carol", "connection lost", ("lobby",), NOON))
    assert (line.kind, line.room, line.nick) == (ln.LEAVE, "lobby", "carol")


def test_state_echoes_room_messages_for_line_clients():
    state = joinedState()

    def echo(text):
        line = state.echo(text)
        return line and (line.kind, line.text, line.own)

    assert echo("hello  ") == (ln.MESSAGE, "#lobby <alice> hello", True)
    assert echo("/me waves") == (ln.ACTION, "#lobby * alice waves", True)
    assert echo("/ME/waves") == (ln.ACTION, "#lobby * alice waves", True)
    assert echo("/say /etc is full") == (ln.MESSAGE, "#lobby <alice> /etc is full", True)
    assert echo("//etc is full") == (ln.MESSAGE, "#lobby <alice> /etc is full", True)
    assert echo("2 > 1") == (ln.MESSAGE, "#lobby <alice> 2 > 1", True)
    assert echo("hi > BOB") is None  # the server sends it to bob, and a copy back
    for silent in ("/join dev", "/msg bob x", "?", "   ", "/me   ", "/nosuch x"):
        assert echo(silent) is None, silent
    assert ChatState().echo("alice") is None  # before a nickname it is the nickname


def lineRequests(requests: list[Request]) -> list[str]:
    """What the line wire sends of C{requests}."""
    return [r.line for r in requests]


def test_state_reconnects_with_nick_and_room():
    state = ChatState(nick="alice")
    assert state.connected() == [Request("/nick alice", {"type": "nick", "nick": "alice"})]
    state.observe(ln.parseLine("-!- Welcome, alice! Type /help for commands."))
    state.observe(ln.parseLine("#dev --> alice has joined"))
    state.disconnected()
    assert (state.nick, state.room, state.rejoin) == (None, None, "dev")
    assert state.reconnect and lineRequests(state.connected()) == ["/nick alice"]
    assert state.observe(ln.parseLine("-!- Welcome, alice! Type /help for commands.")) == []
    assert state.observe(ln.parseLine("#lobby --> alice has joined")) == [
        Request("/join dev", {"type": "join", "room": "dev"})  # (no ids on the line wire)
    ]
    assert state.rejoin is None
    assert state.observe(ln.parseLine("#dev --> alice has joined")) == []


def test_state_reconnects_with_the_newest_ids_shown():
    state = ChatState(nick="alice")
    state.observe(ln.parseLine("-!- Welcome, alice! Type /help for commands."))
    state.observe(ln.parseLine("#lobby --> alice has joined"))
    for event in (
        ev.RoomMessage("message", "lobby", "bob", "old", NOON, 4, history=True),
        ev.RoomMessage("action", "lobby", "bob", "waves", NOON, 9),
        ev.PrivateMessage("bob", "alice", "psst", NOON, 12),  # no room's
    ):
        for line in jsonOf(event):
            state.observe(line)
    state.observe(ln.parseLine("#Dev --> alice has joined"))
    for line in jsonOf(ev.RoomMessage("message", "Dev", "alice", "mine", NOON, 11), "alice"):
        state.observe(line)
    assert state.newest == {"lobby": 9, "dev": 11}
    state.disconnected()
    (nick,) = state.connected()
    assert nick.fields == {"type": "nick", "nick": "alice", "since": 9}  # the default room's
    state.observe(ln.parseLine("-!- Welcome, alice! Type /help for commands."))
    (join,) = state.observe(ln.parseLine("#lobby --> alice has joined"))
    assert join == Request("/join Dev", {"type": "join", "room": "Dev", "since": 11})
    state.credentials = ("alice", "wonderland-42")
    (login,) = state.connected()
    assert login.fields == {
        "type": "login",
        "nick": "alice",
        "password": "wonderland-42",
        "since": 9,
    }


def test_state_remembers_a_login_for_reconnecting():
    state = ChatState()
    state.typed("/login Bob builder-99")
    state.observe(ln.parseLine("-!- you are logged in as bob"))
    assert state.credentials == ("bob", "builder-99")
    assert state.connected() == [
        Request("/login bob builder-99", {"type": "login", "nick": "bob", "password": "builder-99"})
    ]
    state.typed("/passwd builder-99 looking-glass-7")
    state.observe(ln.parseLine("-!- password changed"))
    assert lineRequests(state.connected()) == ["/login bob looking-glass-7"]
    # After a reconnect to a server that lost the account, it comes back as a guest.
    assert lineRequests(state.observe(ln.parseLine("error: wrong nickname or password"))) == [
        "/nick bob"
    ]
    assert state.observe(ln.parseLine("error: the nickname is taken")) == []
    state.observe(ln.parseLine("-!- you are no longer logged in as bob"))
    assert state.credentials is None
    fresh = joinedState("carol")
    fresh.typed("/register wonderland-42")
    fresh.observe(ln.parseLine("-!- registered carol; next time, /login carol PASSWORD"))
    assert fresh.credentials == ("carol", "wonderland-42")
    wrong = ChatState()
    wrong.typed("/login bob nope")
    wrong.observe(ln.parseLine("-!- you are logged in as mallory"))
    assert wrong.credentials is None


def test_state_shows_a_replayed_message_once():
    state = joinedState()
    live = jsonOf(ev.RoomMessage("message", "lobby", "bob", "new", NOON, 7))
    assert state.toShow(live) == live
    replay = [
        *jsonOf(ev.HistoryMark("lobby", 2, False, NOON)),
        *jsonOf(ev.RoomMessage("message", "lobby", "bob", "old", NOON, 6, history=True)),
        *jsonOf(ev.RoomMessage("message", "lobby", "bob", "new", NOON, 7, history=True)),
        *jsonOf(ev.HistoryMark("lobby", 2, True, NOON)),
    ]
    assert [line.text for line in state.toShow(replay)] == [
        "#lobby --- history: the last 2 messages ---",
        "#lobby <bob> old",
        "#lobby --- end of history ---",
        "(1 message already shown)",
    ]
    state.typed("/history 2")  # asked for: all of it, once
    assert state.toShow(replay) == replay
    assert len(state.toShow(replay)) == 3


def test_state_knows_when_not_to_reconnect():
    kicked = joinedState()
    kicked.observe(ln.parseLine("-!- disconnected: you were kicked by bob"))
    assert not kicked.reconnect
    quitting = joinedState()
    quitting.typed("/quit bye")
    assert not quitting.reconnect
    restarted = joinedState()
    restarted.observe(ln.parseLine("-!- server shutting down"))
    assert restarted.reconnect


# -- completion and the command line ---------------------------------------------------------


def complete(text: str, nicks=("alice", "Albert", "bob")) -> list[str]:
    completer = ChatCompleter(lambda: list(nicks))
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent(True))]


def test_completion():
    assert complete("/jo") == ["/join "]
    assert complete("/m") == ["/msg ", "/me ", "/mute "]
    assert complete("al") == ["alice: ", "Albert: "]
    assert complete("/msg b") == ["bob "]
    assert complete("hi ") == []


def test_completion_knows_every_server_command():
    assert set(COMMANDS) == {c.name for c in commands.TABLE}
    assert COMMANDS == {c.name: c.usage for c in commands.TABLE}


def test_arguments():
    args = parseArgs(["example.org"])
    assert (args.port, args.ws, args.tls) == (10001, False, False)
    assert parseArgs(["h", "--tls"]).port == 10443
    assert parseArgs(["h", "--ws"]).port == 8765
    assert parseArgs(["h", "--ws", "--tls", "9000", "--nick", "al"]).port == 9000
    both = ["h", "--tls", "--ca", "x", "--insecure"]
    for bad in (["h", "--insecure"], ["h", "--ca", "x.pem"], ["h", "0"], both):
        with pytest.raises(SystemExit):
            parseArgs(bad)
    assert Target("::1", 8765, websocket=True, tls=True).url == "wss://[::1]:8765/ws"


# -- the reconnect loop ---------------------------------------------------------------------


class FakeWire:
    """A connection that says some lines and then ends."""

    def __init__(self, said: list[str]) -> None:
        self.said = said
        self.sent: list[str] = []

    def send(self, text: str) -> None:
        self.sent.append(text)

    async def receive(self, me):
        for text in self.said:
            yield [ln.parseLine(text)]

    async def close(self) -> None:
        pass


def runConnector(scripts: list[list[str] | OSError]) -> tuple[ChatState, list, list[str]]:
    """Run a Connector over scripted connections (a failed connect for an OSError)."""
    state = ChatState(nick="alice")
    wires: list[FakeWire] = []
    notes: list[str] = []

    class Scripted(Connector):
        async def _open(self):
            if not scripts:
                state.quitting = True  # nothing more to say: stop the loop
                raise OSError("no more")
            script = scripts.pop(0)
            if isinstance(script, OSError):
                raise script
            wires.append(FakeWire(script))
            return wires[-1]

    def received(lines):
        return [reply for line in lines for reply in state.observe(line)]

    connector = Scripted(
        Target("h", 1),
        onLines=received,
        onStatus=lambda s: None,
        onNote=lambda text, error: notes.append(text),
        greeting=state.connected,
        reconnect=lambda: state.reconnect,
        me=lambda: state.nick,
        disconnected=state.disconnected,
        backoff=Backoff(first=0.001, jitter=0),
    )
    asyncio.run(connector.run())
    return state, wires, notes


def test_connector_reconnects_and_restores_the_session():
    first = ["-!- Welcome, alice! Type /help for commands.", "#dev --> alice has joined"]
    second = ["-!- Welcome, alice! Type /help for commands.", "#lobby --> alice has joined"]
    state, wires, notes = runConnector([first, ConnectionRefusedError(), second])
    assert lineRequests(wires[0].sent) == ["/nick alice"]
    assert lineRequests(wires[1].sent) == ["/nick alice", "/join dev"]
    assert "could not connect to h:1: connection refused" in notes
    assert sum(n.startswith("reconnecting in") for n in notes) == 3


def test_connector_stops_when_the_server_ends_the_session():
    kicked = [
        "-!- Welcome, alice! Type /help for commands.",
        "-!- disconnected: you were kicked by bob",
    ]
    state, wires, notes = runConnector([kicked, ["never reached"]])
    assert len(wires) == 1 and not state.reconnect
    assert not any(n.startswith("reconnecting") for n in notes)


# -- reconnecting to the real server ----------------------------------------------------------


class MemorySocket:
    """What JSONWire uses of a websockets connection, over the server's own websocket
    protocol in memory (tests/wsmemory.py). Whenever the server has nothing more to say,
    the next of C{actions} runs (someone talks, the user types); when none is left, the
    connection ends as a dropped one does."""

    def __init__(self, conn: WSConnection, actions: list) -> None:
        self.conn = conn
        self.actions = list(actions)
        self.sent: list[dict] = []  # the JSON requests, as the server got them
        self.received: list[dict] = []

    async def send(self, frame: str) -> None:
        self.sent.append(json.loads(frame))
        self.conn.send(frame)

    def __aiter__(self):
        return self._messages()

    async def _messages(self):
        while True:
            for _ in range(3):
                await asyncio.sleep(0)  # JSONWire's sender hands over what is queued
            texts = [frame.text for frame in self.conn.frames() if frame.opcode == WS_TEXT]
            if not texts:
                if not self.actions:
                    return
                self.actions.pop(0)()
                continue
            for text in texts:
                self.received.append(json.loads(text))
                yield text

    async def close(self) -> None:
        self.conn.drop()


HISTORY = ("history-start", "history-end")


def replayed(socket: MemorySocket) -> list[str]:
    """The history the server sent on one connection: marks and messages."""
    return [e["text"] for e in socket.received if e.get("history") or e["type"] in HISTORY]


def test_after_a_reconnect_the_server_sends_only_what_was_missed():
    service, clock = makeService()
    bob = named(service, "bob", port=5001)  # line users
    carol = named(service, "carol", port=5002)
    said: dict[str, int] = {}  # message id by text

    def say(client, text: str) -> None:
        client.send(text + "\n")
        said[text] = service.ids.last

    say(bob, "lobby 1")
    carol.send("/join dev\n")
    say(carol, "dev 1")
    state = ChatState(nick="alice")
    sockets: list[MemorySocket] = []

    def typed(text: str):
        return lambda: (state.typed(text), connector.send(text))

    # Per connection: what happens before it (alice is away), and while it is quiet.
    script = [
        ([], [typed("/join dev"), lambda: say(carol, "dev 2")]),
        ([], []),  # nothing said while alice was away
        ([lambda: say(bob, "lobby 2"), lambda: say(carol, "dev 3")], []),
    ]

    class Reconnecting(Connector):
        async def _open(self):
            if not script:
                state.quitting = True  # the end of the script: stop the loop
                raise OSError("no more")
            before, during = script.pop(0)
            for action in before:
                action()
            sockets.append(MemorySocket(WSConnection(makeFactory(service, clock), True), during))
            return JSONWire(sockets[-1])

    shown: list[ln.Line] = []

    def received(lines):  # as the app does
        shown.extend(state.toShow(lines))
        return [reply for line in lines for reply in state.observe(line)]

    connector = Reconnecting(
        Target("h", 1, websocket=True),
        onLines=received,
        onStatus=lambda s: None,
        onNote=lambda text, error: None,
        greeting=state.connected,
        reconnect=lambda: state.reconnect,
        me=lambda: state.nick,
        disconnected=state.disconnected,
        backoff=Backoff(first=0.001, jitter=0),
    )
    asyncio.run(connector.run())
    first, second, third = sockets
    assert replayed(first) == [
        "#lobby --- history: the last 1 message ---",
        "lobby 1",
        "#lobby --- end of history ---",
        "#dev --- history: the last 1 message ---",
        "dev 1",
        "#dev --- end of history ---",
    ]
    assert second.sent == [
        {"type": "nick", "nick": "alice", "since": said["lobby 1"]},
        {"type": "join", "room": "dev", "since": said["dev 2"]},
    ]
    assert replayed(second) == []  # nothing was said meanwhile: no history at all
    assert replayed(third) == [  # only what was said while alice was away
        "#lobby --- history: the last 1 message ---",
        "lobby 2",
        "#lobby --- end of history ---",
        "#dev --- history: the last 1 message ---",
        "dev 3",
        "#dev --- end of history ---",
    ]
    assert not [line.text for line in shown if "already shown" in line.text]
    assert state.rejoin == "dev"
    assert state.newest == {"lobby": said["lobby 2"], "dev": said["dev 3"]}
