"""Hostile input, generated: the line protocol and both websocket modes under fuzz.

Every example builds a fresh service with two observers in the lobby (a line client,
"lineobs", and a JSON websocket client, "jsonobs") and one attacker on the wire under
test. After the attack, every example checks that:

1. the service is consistent and still works: each observer says a marker and the
   other one receives it, correctly rendered;
2. nothing anybody received contains ESC or another C0 control (outside the CRLF line
   endings), DEL, a C1 control, a bidi override or a lone surrogate; all of it is UTF-8,
   and JSON output is one valid JSON object per frame;
3. the attacker got only documented responses (error lines, error events with a known
   code, ordinary events) or, where RFC 6455 requires it, a close frame with the right
   code; no request failed with an internal error, nothing was logged as a failure,
   and no connection was dropped without a notice or a close frame;
4. once the attacker's connection is gone, it left no trace: its user is gone from the
   service, the observers saw it leave, and the connection slot is released.

Everything runs in memory (StringTransport, task.Clock): no sockets, no real timers.
Examples are derandomized, so a run is reproducible; ``--hypothesis-show-statistics``
shows how many each property ran.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import struct
import unicodedata

import pytest
import wsmemory as ws
from fuzzing import Watched, describeFailures, fuzz, isFailure, no_unhandled_errors  # noqa: F401
from helpers import LineConnection, makeService
from hypothesis import assume, event, given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from chatserv import errors
from chatserv.limits import TokenBucket
from chatserv.names import fold
from chatserv.protocols.ws import CLOSE_HANDSHAKE_TIMEOUT

LIMIT = 256  # max_line_length of the fuzzed services
WS_MAX = 1024  # their ws_max_message_size
# Flood control would answer most examples with rate-limited; it has its own property.
GENEROUS = dict(
    rate_limit=1e6,
    rate_burst=10**6,
    flood_max_dropped=10**6,
    ip_rate_limit=1e6,
    ip_rate_burst=10**6,
    max_line_length=LIMIT,
    ws_max_message_size=WS_MAX,
)


def _codes(cls: type) -> set[str]:
    return {cls.code}.union(*(_codes(sub) for sub in cls.__subclasses__()))


# Every code a refusal may carry. "internal" is deliberately missing: it means a request
# raised something unexpected, which is a bug whatever the input.
CODES = _codes(errors.ChatError)
ATTACKER = "mallory"


# -- what may be received -----------------------------------------------------------------

# docs/protocol.md, "Text sanitising": what must never reach anybody unescaped.
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
UNSAFE = re.compile(f"[\x00-\x1f\x7f\x80-\x9f{BIDI}\ud800-\udfff]")


# IRC's formatting codes, which message text keeps for IRC users and every other wire
# shows without (docs/protocol.md, "Text sanitising").
FORMAT_CODES = "\x02\x03\x04\x0f\x11\x16\x1d\x1e\x1f"
_COLOUR = re.compile(r"\x03([0-9]{1,2}(,[0-9]{1,2})?)?|\x04([0-9a-fA-F]{6}(,[0-9a-fA-F]{6})?)?")


def unformatted(text: str) -> str:
    """Message text as a terminal or a page gets it: without the formatting codes."""
    text = _COLOUR.sub("", text)
    return "".join(char for char in text if char not in FORMAT_CODES)


def escaped(text: str, keep: str = "") -> str:
    """The documented rendering of text (the table in docs/protocol.md), leaving the
    characters in C{keep} as they are."""
    out = []
    for char in text:
        code = ord(char)
        if char in keep:
            out.append(char)
        elif char == "\t":
            out.append(" ")
        elif code < 0x20:
            out.append("^" + chr(code + 0x40))
        elif code == 0x7F:
            out.append("^?")
        elif 0x80 <= code <= 0x9F or char in BIDI or 0xD800 <= code <= 0xDFFF:
            out.append(f"<U+{code:04X}>")
        elif char != "\ufeff":  # a byte-order mark is removed
            out.append(char)
    return "".join(out)


def shownFrom(text: str) -> str:
    """C{text} from its first character that shows (past spaces, controls and format
    characters): a line that starts with C{/} there is a command."""
    while text and (text[0].isspace() or unicodedata.category(text[0]) in ("Cc", "Cf")):
        text = text[1:]
    return text


# A message may not start like a command that carries a password (docs/protocol.md).
SECRET = re.compile(r"/+(?:login|register|passwd|resetpassword|identify|auth)\b", re.IGNORECASE)


def showsNothing(text: str) -> bool:
    """Only spaces and invisible format characters (Unicode's category Cf): such a
    message is refused (docs/protocol.md, "Text sanitising")."""
    return all(
        char.isspace() or unicodedata.category(char) == "Cf" or char in FORMAT_CODES
        for char in text
    )


NAME = r"[A-Za-z_\[\]{}|^`][A-Za-z0-9_\[\]{}|^`-]*"
# Replayed history and kept private messages carry their date as well.
STAMP = re.compile(r"\[(?:\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d\] ")
# The line format (docs/protocol.md), after the time stamp.
LINE_FORMS = [
    re.compile(form)
    for form in (
        r"-!- .+",
        rf"#{NAME} --> {NAME} has joined",
        rf"#{NAME} <-- {NAME} has left \(.+\)",
        rf"--- {NAME} is now known as {NAME}",
        rf"#{NAME} <{NAME}> .+",
        rf"#{NAME} \* {NAME} .+",
        rf"\*{NAME}\* .+",
        rf"-> \*{NAME}\* .+",
        rf"#{NAME} users \(\d+\): (?:{NAME}(?:, {NAME})*)?",
        rf"rooms \(\d+\): (?:#{NAME} \(\d+\)(?:, #{NAME} \(\d+\))*)?",
        r"server time: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d",
        r"commands \(/help COMMAND for one\):",
        r" {0,2}/[a-z]+ .+",
        r"error: .+",
        rf"#{NAME} -!- .+",
        rf"#{NAME} topic: .+ \(set by {NAME}, \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\)",
        rf"#{NAME} has no topic",
        rf"#{NAME} --- history: the last \d+ messages? ---",
        rf"#{NAME} --- end of history ---",
    )
]
INTERNAL = "error: internal error; the server logged it"


def checkLine(line: str) -> str:
    """A line of line-wire output, without its time stamp."""
    assert STAMP.match(line), f"no time stamp: {line!r}"
    assert not UNSAFE.search(line), f"unescaped control character: {line!r}"
    body = line[STAMP.match(line).end() :]
    assert any(form.fullmatch(body) for form in LINE_FORMS), f"undocumented line: {body!r}"
    assert body != INTERNAL, "a request failed with an internal error"
    return body


def lineOutput(raw: bytes) -> list[str]:
    """Check TCP output (UTF-8, CRLF lines) and return its lines without time stamps."""
    text = raw.decode("utf-8")
    assert text == "" or text.endswith("\r\n"), f"partial line written: {text[-80:]!r}"
    return [checkLine(line) for line in text.split("\r\n")[:-1]]


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


_S, _I, _N = str, int, type(None)
# The JSON events (docs/protocol.md, "JSON events"): field -> type(s).
EVENT_FIELDS = {
    "notice": {"room": (_S, _N)},
    "welcome": {"nick": _S},
    "join": {"room": _S, "from": _S},
    "leave": {"room": _S, "from": _S, "reason": _S},
    "rename": {"from": _S, "to": _S},
    "message": {"id": _I, "room": _S, "from": _S},
    "action": {"id": _I, "room": _S, "from": _S},
    "msg": {"id": _I, "from": _S, "to": _S},
    "who": {"room": _S, "users": list},
    "rooms": {"rooms": list},
    "time": {"time": _S},
    "help": {"commands": list},
    "error": {"code": _S},
    "login": {"nick": _S, "admin": bool, "color": (_S, _N)},
    "topic": {"room": _S, "topic": (_S, _N), "by": (_S, _N), "set": (_I, _N)},
    "history-start": {"room": _S, "count": _I},
    "history-end": {"room": _S, "count": _I},
}


def checkEvent(text: str) -> dict:
    """One JSON-mode frame: a single documented event, with nothing unescaped in it."""
    assert not UNSAFE.search(text), f"raw control character in JSON text: {text!r}"
    event = json.loads(text)
    assert isinstance(event, dict), text
    kind = event.get("type")
    assert kind in EVENT_FIELDS, f"undocumented event: {text}"
    assert isinstance(event.get("ts"), int) and isinstance(event.get("text"), str), text
    for name, types in EVENT_FIELDS[kind].items():
        assert isinstance(event.get(name), types), f"{kind}.{name}: {text}"
    checked = event
    if kind == "help":  # the full list is several lines joined by \n (documented)
        checked = {**event, "text": event["text"].replace("\n", " ")}
    for value in _strings(checked):
        assert not UNSAFE.search(value), f"unescaped control character: {value!r} in {text}"
    if kind == "error":
        assert event["code"] in CODES, f"undocumented error code: {text}"
    return event


# -- the clients ----------------------------------------------------------------------------


class LineAttacker:
    """An attacker on the TCP line protocol."""

    wire = "line"

    def __init__(self, service) -> None:
        self.conn = LineConnection(service, host="10.6.6.6", port=6666)
        self.lost = False
        self.insideMessage = False  # (websocket only)

    @property
    def session(self):
        return self.conn.protocol.session

    def sendBytes(self, data: bytes) -> None:
        self.conn.send(data)

    def sendLine(self, text: str) -> None:
        self.conn.send(text.encode("utf-8", "surrogatepass") + b"\n")

    def take(self) -> list[str]:
        return lineOutput(self.conn.outputBytes())

    @property
    def closed(self) -> bool:
        return self.conn.transport.disconnecting

    def checkClose(self) -> None:
        assert not self.conn.transport.disconnected, "the line connection was aborted"

    def probe(self) -> None:
        """Show that the connection still answers (after ending any partial line)."""
        self.sendBytes(b"\r\n")
        self.take()
        if not self.closed:
            self.sendBytes(b"/time\r\n")
            assert self.take()[-1].startswith("server time: ")

    def finish(self) -> None:
        if not self.lost:
            self.lost = True
            self.conn.protocol.connectionLost(Failure(ConnectionLost()))


class WSAttacker:
    """An attacker on the websocket port, in text or JSON mode."""

    def __init__(self, factory, clock, isJSON: bool, handshake: bool = True) -> None:
        self.wire = "json" if isJSON else "text"
        self.clock = clock
        self.conn = ws.WSConnection(
            factory, json=isJSON, host="10.6.6.6", port=6666, handshake=handshake
        )
        self.insideMessage = False  # a fragmented message was left unfinished

    @property
    def session(self):
        return self.conn.protocol.session

    @property
    def lost(self) -> bool:
        return self.conn.lost

    def sendBytes(self, data: bytes) -> None:
        self.conn.sendRaw(data)

    def sendLine(self, text: str) -> None:
        """A line of the command language, or a JSON text in JSON mode."""
        self.conn.sendFrame(ws.TEXT, text.encode("utf-8", "surrogatepass"))

    def take(self) -> list:
        """Documented events (JSON) or lines (text mode); pongs and close are kept apart."""
        got = []
        for frame in self.conn.frames():
            if frame.opcode == ws.TEXT:
                if self.wire == "json":
                    got.append(checkEvent(frame.text))
                else:
                    got.append(checkLine(frame.text))
            else:
                assert frame.opcode in (ws.PONG, ws.CLOSE), f"unexpected frame {frame}"
        return got

    def takeFrames(self) -> list[ws.Frame]:
        return self.conn.frames()

    @property
    def closed(self) -> bool:
        return self.conn.closeCode is not None or self.conn.transport.disconnecting

    def checkClose(self) -> None:
        """Closed with a close frame, or with an HTTP error if the handshake failed."""
        if self.conn.transport.disconnecting:
            response = self.conn.response or b""
            if response.startswith(b"HTTP/1.1 101 "):
                assert self.conn.closeFrame is not None, "dropped without a close frame"
            else:
                assert re.match(rb"HTTP/1.1 [45]\d\d ", response), f"dropped: {response!r}"

    def probe(self) -> None:
        if self.wire == "json":
            self.conn.request(type="time")
            assert self.take()[-1]["type"] == "time"
        else:
            self.conn.send("/time")
            assert self.take()[-1].startswith("server time: ")

    def finish(self) -> None:
        self.conn.finishClose()
        if self.conn.closeFrame is not None and not self.conn.transport.disconnecting:
            # The server closed while a frame it refused was still arriving, so it takes
            # our close frame for more of that frame: its close handshake timeout ends it.
            self.clock.advance(CLOSE_HANDSHAKE_TIMEOUT + 1)
            assert self.conn.transport.disconnecting, "the server never closed the TCP"
            self.conn.finishClose()
        self.conn.drop()


def isError(event, code: str | None = None) -> bool:
    if isinstance(event, dict):
        return event["type"] == "error" and (code is None or event["code"] == code)
    return event.startswith("error: ")


def noticeText(event) -> str | None:
    if isinstance(event, dict):
        return event["text"] if event["type"] == "notice" else None
    return event.removeprefix("-!- ") if event.startswith("-!- ") else None


def isNotice(event, text: str) -> bool:
    return noticeText(event) == text


CHOOSE = "Choose a nickname: type it, or /nick NAME."


class World(Watched):
    """A fresh service, two observers in the lobby and an attacker on C{wire}.

    Use it as a context manager (L{Watched}), from its creation on.
    """

    def __init__(
        self,
        wire: str,
        named: bool = True,
        handshake: bool = True,
        settings: dict | None = None,
    ) -> None:
        self.watch()
        self.service, self.clock = makeService(**(GENEROUS if settings is None else settings))
        self.factory = ws.makeFactory(self.service, self.clock)
        self.line = LineConnection(self.service, port=5000)
        self.line.send(b"lineobs\r\n")
        self.json = ws.WSConnection(self.factory, json=True, port=4000)
        self.json.request(type="nick", nick="jsonobs")
        self.markers = 0
        if wire == "line":
            self.attacker = LineAttacker(self.service)
        else:
            self.attacker = WSAttacker(self.factory, self.clock, wire == "json", handshake)
        if named and handshake:
            if wire == "json":
                self.attacker.conn.request(type="nick", nick=ATTACKER)
            else:
                self.attacker.sendLine(ATTACKER)
        self.observed()
        if handshake:
            self.attacker.take()

    # -- observers -------------------------------------------------------------------

    def observed(self) -> tuple[list[str], list[dict]]:
        """What the observers received since the last call (checked)."""
        lines = lineOutput(self.line.outputBytes())
        events = [checkEvent(f.text) for f in self.json.frames() if f.opcode == ws.TEXT]
        for item in lines + events:  # the observers did nothing wrong
            assert not isError(item), item
        assert not self.line.transport.disconnecting and self.json.closeCode is None
        return lines, events

    def checkHealthy(self) -> None:
        """The service is consistent, the observers can talk, and the attacker can too."""
        checkConsistent(self.service)
        assert list(self.service.findUser("lineobs").rooms) == ["lobby"]
        assert list(self.service.findUser("jsonobs").rooms) == ["lobby"]
        self.observed()
        self.markers += 1
        marker = f"marker {self.markers}"
        self.line.send(f"{marker} from nc\n")
        self.json.request(type="say", text=f"{marker} from json")
        lines, events = self.observed()
        assert lines == [f"#lobby <jsonobs> {marker} from json"]
        assert [(e["type"], e["from"], e["text"]) for e in events] == [
            ("message", "lineobs", f"{marker} from nc"),
            ("message", "jsonobs", f"{marker} from json"),
        ]
        attacker = self.attacker
        if not attacker.lost and not attacker.closed:
            attacker.take()
            if not attacker.insideMessage:
                attacker.probe()
        elif not attacker.lost:
            attacker.checkClose()

    def finish(self) -> None:
        """End the attacker's connection; check it left nothing behind."""
        attacker = self.attacker
        session = attacker.session
        user = session.user if session is not None else None
        shared = user is not None and fold("lobby") in user.rooms
        nick = user.nick if user is not None else None
        self.observed()
        if not attacker.lost:
            if attacker.closed:
                attacker.checkClose()
            attacker.finish()
        lines, events = self.observed()
        if shared:
            # A websocket that Autobahn closed for a bad frame leaves with the reason.
            left = re.fullmatch(
                rf"#lobby <-- {re.escape(nick)} has left \((connection lost|protocol error: .+)\)",
                lines[0] if len(lines) == 1 else "",
            )
            assert left is not None, lines
            if left.group(1) != "connection lost":
                assert attacker.wire != "line" and attacker.conn.closeCode in (1002, 1007, 1009)
            assert [(e["type"], e["from"]) for e in events] == [("leave", nick)]
        else:
            assert lines == [] and events == []
        if user is not None:
            assert user not in self.service.sessions and user.rooms == {} and session.closed
            assert getattr(session, "_nickTimer", None) is None  # no timer left running
        assert {u.nick for u in self.service.sessions} == {"lineobs", "jsonobs"}
        assert set(self.service.users) == {"lineobs", "jsonobs"}
        assert self.service.admission.total == 2
        checkConsistent(self.service)
        self.checkHealthy()


def checkConsistent(service) -> None:
    """The service's indexes agree with each other (an IRC user may be in many rooms)."""
    from chatserv.protocols.irc import IrcProtocol

    default = fold(service.defaultRoom)
    for key, user in service.users.items():
        assert user in service.sessions and user.key == key == fold(user.nick)
    for user in service.sessions:
        if user.nick is None:
            assert not user.rooms
        else:
            assert service.users[user.key] is user
        for key, room in user.rooms.items():
            assert service.rooms.get(key) is room and room.members.get(user.key) is user
        if not isinstance(user.client, IrcProtocol):
            assert len(user.rooms) <= 1  # a line or JSON session: /join is a switch
    for key, room in service.rooms.items():
        # Rooms without members: the default one, and permanent ones (an admin's topic).
        assert room.key == key and (room.members or key == default or room.topic is not None)
        for member in room.members.values():
            assert member in service.sessions and member.rooms.get(key) is room


# -- strategies ------------------------------------------------------------------------------

TERMINAL = [
    "\x1b[31m",
    "\x1b[2J\x1b[H",
    "\x1b]0;pwned\x07",  # OSC ended by BEL
    "\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\",  # OSC 8 link, ended by ST
    "\x1bP+q544e\x1b\\",  # DCS
    "\x1b[?1049h",
    "\x1bc",
    "\x9b6n",  # 8-bit CSI
    "\x9d0;title\x9c",  # 8-bit OSC and ST
    "\x90q\x9c",  # 8-bit DCS
    "\x07",
    "\x08\x08\x08",
    "\x00",
    "\x7f",
    "\x85",
    "\r",
    "\t",
    "\x0b\x0c",
    "\x1c\x1d\x1e\x1f",
]
OTHER = ["\u200e", "\u200f", "\u061c", "\ufeff", "\ufffd", "\u200b", "é", "✓", "😀", "a\u0301"]
PIECES = TERMINAL + list(BIDI) + OTHER

hostile = st.lists(
    st.one_of(
        st.sampled_from(PIECES),
        st.text(max_size=8),
        st.characters(max_codepoint=0xA0),
    ),
    max_size=10,
).map("".join)

INVALID_UTF8 = [
    b"\x80",
    b"\xbf",
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",
    b"\xe0\x80\xaf",  # overlong "/"
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xf5\x80",
    b"\xfe",
    b"\xc3\x28",
    b"\xe2\x82",  # truncated
    b"\xf0\x9f\x98",  # truncated emoji
]
TELNET = [b"\xff\xfd\x03", b"\xff\xfb\x18", b"\xff\xf4", b"\xff\xfa\x18\x01\xff\xf0", b"\xff"]

NICKS = ["lineobs", "JSONOBS", ATTACKER, "Mallory", "nobody", "zed[1]", "ZED{1}", "9lives", "é"]
ROOMS = ["dev", "#dev", "lobby", "#LOBBY", "#", "x" * 33, "bad room", "{dev}", "-dev"]
COMMAND_NAMES = ["nick", "join", "rooms", "who", "msg", "me", "say", "time", "help", "quit"]
# Accounts, history and the admin commands (refused: the attacker is no admin).
COMMAND_NAMES += ["history", "register", "login", "passwd", "color", "topic"]
ADMIN_COMMANDS = ["kick", "ban", "unban", "mute", "unmute", "broadcast", "rbroadcast"]
ADMIN_COMMANDS += ["resetpassword", "deleteaccount", "renameaccount"]
ADMIN_COMMANDS += ["promote", "demote"]
COMMAND_NAMES += ADMIN_COMMANDS
ALIASES = ["changeName", "changeRoom"]


def anyCase(word: str):
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda ups: "".join(c.upper() if up else c for c, up in zip(word, ups, strict=True))
    )


arg = st.one_of(st.sampled_from(NICKS + ROOMS), hostile, st.just(""))


@st.composite
def commandLines(draw, quit: bool = True) -> str:
    """A line of the command language: valid, malformed, unknown or tricky."""
    names = COMMAND_NAMES + ALIASES if quit else [n for n in COMMAND_NAMES if n != "quit"]
    form = draw(st.sampled_from(["command", "slash-arg", "unknown", "to-nick", "plain"]))
    if form == "command":
        name = draw(st.sampled_from(names).flatmap(anyCase))
        args = draw(st.lists(arg, max_size=3))
        return "/" + name + "".join(" " * draw(st.integers(1, 2)) + a for a in args)
    if form == "slash-arg":  # /changeRoom/dev and friends
        name = draw(st.sampled_from(names).flatmap(anyCase))
        return f"/{name}/{draw(arg)}" + draw(st.sampled_from(["", " ", " extra", "/more"]))
    if form == "unknown":
        return "/" + draw(st.one_of(hostile, st.sampled_from(["", "/", "//x", "?", "nick_"])))
    if form == "to-nick":  # TEXT > NICK
        text, nick = draw(hostile), draw(st.sampled_from(NICKS + ["", ">"]))
        spaces = draw(st.sampled_from(["", " ", "  ", "\t"]))
        return f"{text}{spaces}>{spaces}{nick}" + draw(st.sampled_from(["", " ", " > x"]))
    prefix = draw(st.sampled_from(["", " ", "//", "?", " ? ", "/ ", " /nick x"]))
    return prefix + draw(hostile)


@st.composite
def byteSoup(draw) -> bytes:
    """Bytes for the line protocol: anything, with the interesting parts likely."""
    parts = draw(
        st.lists(
            st.one_of(
                st.binary(max_size=40),
                hostile.map(lambda s: s.encode("utf-8")),
                commandLines(quit=False).map(lambda s: s.encode("utf-8") + b"\n"),
                st.sampled_from(INVALID_UTF8 + TELNET),
                st.sampled_from(INVALID_UTF8).map(lambda b: b"caf" + b + b"\n"),
                st.sampled_from([b"\n", b"\r\n", b"\r", b"\r\r\n", b"\n\n"]),
                st.integers(LIMIT - 2, LIMIT + 3).map(lambda n: b"y" * n),
                st.integers(LIMIT + 4, LIMIT * 12).map(lambda n: b"z" * n),
                st.integers(1, 40).map(lambda n: b"\x00" * n),
            ),
            max_size=12,
        )
    )
    return b"".join(parts)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)], strict=True)]


cuts = st.lists(st.integers(0, LIMIT * 13), max_size=8)


# -- the line protocol ---------------------------------------------------------------------


def lineModel(data: bytes) -> tuple[int, int, int]:
    """Errors the documented line rules predict: (too long, not UTF-8, unsure).

    Unsure: lines with telnet bytes (0xFF), whose fate depends on what is removed.
    """
    *complete, tail = data.split(b"\n")
    tooLong = badEncoding = unsure = 0
    for raw in complete:
        raw = raw.removesuffix(b"\r")
        if len(raw) > LIMIT:
            tooLong += 1
        elif b"\xff" in raw:
            unsure += 1
        else:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                badEncoding += 1
    if len(tail) > LIMIT + 1:  # a CR may still be waiting for its LF
        tooLong += 1
    return tooLong, badEncoding, unsure


TOO_LONG = f"error: line too long (the limit is {LIMIT} bytes); it was not sent"
NOT_UTF8 = "error: that line was not valid UTF-8 and was not sent"
WS_TOO_LONG = f"error: message too long (the limit is {LIMIT} bytes); it was not sent"
BINARY_REFUSED = "error: binary frames are not accepted; send text"


def tooLong(item, wire: str) -> bool:
    if wire == "json":
        return isError(item, "line-too-long")
    return item == (TOO_LONG if wire == "line" else WS_TOO_LONG)


@fuzz(150)
@given(data=byteSoup(), cuts=cuts, named=st.booleans())
def test_line_protocol_takes_any_bytes(data, cuts, named):
    """Random bytes, invalid UTF-8, NULs, escapes, overlong lines, in random chunks."""
    with World("line", named=named) as world:
        attacker = world.attacker
        for chunk in chunked(data, cuts):
            attacker.sendBytes(chunk)
        got = attacker.take()
        assert not attacker.closed  # nothing in the soup asks to quit
        tooLong, badEncoding, unsure = lineModel(data)
        event(f"line too long: {min(tooLong, 2)}; not UTF-8: {min(badEncoding, 2)}")
        assert got.count(TOO_LONG) == tooLong
        assert badEncoding <= got.count(NOT_UTF8) <= badEncoding + unsure
        assert len(attacker.conn.protocol._framer._buffer) <= LIMIT + 1
        world.checkHealthy()
        world.finish()


@fuzz(60)
@given(data=byteSoup(), cuts=cuts)
def test_line_chunking_does_not_change_the_result(data, cuts):
    """The same bytes, whole or split anywhere, give everybody the same output."""
    outputs = []
    for pieces in ([data], chunked(data, cuts)):
        with World("line") as world:
            for piece in pieces:
                world.attacker.sendBytes(piece)
            outputs.append((world.attacker.take(), world.observed()))
    assert outputs[0] == outputs[1]


# pytest-twisted cannot run a parametrized hypothesis test (it wraps the shared inner
# test once per parameter), so each wire has its own test function.

commandScripts = dict(lines=st.lists(commandLines(), min_size=1, max_size=8), named=st.booleans())


@fuzz(100)
@given(**commandScripts)
def test_command_language_line(lines, named):
    checkCommandLanguage("line", lines, named)


@fuzz(100)
@given(**commandScripts)
def test_command_language_ws_text(lines, named):
    checkCommandLanguage("text", lines, named)


def checkCommandLanguage(wire, lines, named):
    """Unknown and malformed commands, aliases, TEXT > NICK: one clear answer each."""
    with World(wire, named=named) as world:
        attacker = world.attacker
        for line in lines:
            if attacker.closed:
                break
            attacker.sendLine(line)
            got = attacker.take()
            refusals = [item for item in got if isError(item)]
            assert len(refusals) <= len(line.split("\n")), got  # one at most per line
            if refusals and attacker.session.user.nick is None:
                assert isNotice(got[-1], CHOOSE)
            if attacker.closed:  # only /quit ends a connection here
                assert isNotice(got[-1], "Goodbye."), got
                assert re.match(r"/quit([\s/]|$)", line, re.IGNORECASE), line
                if wire == "text":
                    assert attacker.conn.closeCode == 1000
        world.observed()
        world.checkHealthy()
        world.finish()


plainText = hostile.filter(lambda s: "\n" not in s and ">" not in s)


textScripts = dict(text=plainText, how=st.sampled_from(["say", "me", "msg-line", "msg-json"]))
# JSON text may hold anything a JSON string can: line breaks, lone surrogates ("\ud800").
jsonText = st.lists(
    st.one_of(hostile, st.sampled_from(["\n", "\r\n", ">", "\ud800", "\udfff", "\ud83d"]))
).map("".join)


@fuzz(80)
@given(**textScripts)
def test_text_reaches_others_escaped_line(text, how):
    checkTextEscaped("line", text, how)


@fuzz(80)
@given(**textScripts)
def test_text_reaches_others_escaped_ws_text(text, how):
    checkTextEscaped("text", text, how)


@fuzz(80)
@given(**{**textScripts, "text": jsonText})
def test_text_reaches_others_escaped_ws_json(text, how):
    checkTextEscaped("json", text, how)


def checkTextEscaped(wire, text, how):
    """Message text arrives exactly as sent, with controls and overrides made visible."""
    assume(text.strip())
    if wire != "json":  # a plain line, not a command
        assume(not shownFrom(text).startswith("/") and text.strip() != "?")
    with World(wire) as world:
        attacker = world.attacker
        if wire == "json":
            request = {"say": {"type": "say"}, "me": {"type": "me"}}.get(how)
            request = request or {"type": "msg", "to": how.removeprefix("msg-") + "obs"}
            sent = json.dumps({**request, "text": text})
        else:
            sent = {
                "say": text,
                "me": f"/me {text}",
                "msg-line": f"/msg lineobs {text}",
                "msg-json": f"{text} > JSONOBS",
            }[how]
        attacker.sendLine(sent)
        got = attacker.take()
        lines, events = world.observed()
        kept = escaped(text.strip(), keep=FORMAT_CODES)  # what the room's history holds
        shown = unformatted(kept)
        if len(sent.encode("utf-8")) > LIMIT:
            assert len(got) == 1 and tooLong(got[0], wire), got
            assert lines == [] and events == []
        elif SECRET.match(shownFrom(text)):
            assert len(got) == 1 and isError(got[0]), got
            assert lines == [] and events == []
            event("looks like a password command")
        elif showsNothing(kept):
            assert len(got) == 1 and isError(got[0]), got
            assert got[0]["code"] == "empty-text" if wire == "json" else "nothing to send" in got[0]
            assert lines == [] and events == []
            event("shows nothing")
        else:
            expected = {
                "say": ([f"#lobby <{ATTACKER}> {shown}"], [("message", shown)]),
                "me": ([f"#lobby * {ATTACKER} {shown}"], [("action", shown)]),
                "msg-line": ([f"*{ATTACKER}* {shown}"], []),
                "msg-json": ([], [("msg", shown)]),
            }[how]
            assert (lines, [(e["type"], e["text"]) for e in events]) == expected
            assert all(e["from"] == ATTACKER for e in events)
        world.checkHealthy()
        world.finish()


HOSTILE_REASONS = [
    ("line", "\x1b]0;pwned\x07\x1b[2J"),
    ("line", "\u202eevil\u202c \x9b31m \rgone"),
    ("json", "\x1b]0;pwned\x07\x1b[2J"),
    ("json", "bye)\r\n[12:00:00] #lobby <lineobs> I owe mallory $100\r\n[12:00:00] -!- (ok"),
]


@pytest.mark.parametrize("wire, reason", HOSTILE_REASONS)
def test_quit_reason_is_escaped(wire, reason):
    """A quit reason is text from a user: the others must get it escaped, on one line.

    (Found by this module's properties: quit reasons once reached the room raw, so a JSON
    client could forge whole lines on every TCP client's terminal.)
    """
    with World(wire) as world:
        if wire == "json":
            world.attacker.conn.request(type="quit", reason=reason)
        else:
            world.attacker.sendLine(f"/quit {reason}")
        lines, events = world.observed()  # checks that nothing arrives unescaped
        assert len(lines) == 1 and lines[0].startswith("#lobby <-- mallory has left (quit: ")
        assert [(e["type"], e["from"]) for e in events] == [("leave", ATTACKER)]


# -- websocket frames ------------------------------------------------------------------------

VALID_CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, *range(3000, 5000)}
CLOSE_CODES = [1000, 1001, 1003, 1008, 1011, 3000, 4999, 0, 999, 1004, 1005, 1006, 1015, 2999, 5000]


def _invalidText(draw) -> bytes:
    """Text that is not UTF-8 (RFC 6455 wants it closed with 1007)."""
    head = draw(hostile).encode("utf-8")[:60]
    tail = draw(hostile).encode("utf-8")[:60]
    payload = head + draw(st.sampled_from(INVALID_UTF8 + [b"\xff"])) + tail
    assume(not _isUTF8(payload))
    return payload


def _isUTF8(data: bytes) -> bool:
    try:
        codecs.decode(data, "utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _sized(draw, base: bytes, pad: bytes) -> bytes:
    """C{base}, padded up to a size drawn around the interesting limits."""
    near = draw(st.sampled_from(["small", "small", "small", "line", "frame", "message", "over"]))
    target = draw(
        {
            "small": st.just(0),
            "line": st.integers(LIMIT - 1, LIMIT + 1),
            "frame": st.integers(LIMIT + 2, WS_MAX - 2),
            "message": st.integers(WS_MAX - 1, WS_MAX + 1),
            "over": st.integers(WS_MAX + 2, WS_MAX * 3),
        }[near]
    )
    return base + pad * max(0, target - len(base))


def _fragments(draw, payload: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
    return [payload[a:b] for a, b in zip([0] + cuts, cuts + [len(payload)], strict=True)]


def _violations(draw) -> bytes:
    """A frame (or two) that breaks RFC 6455 framing: the server must close with 1002."""
    kind = draw(
        st.sampled_from(
            [
                "unmasked",
                "rsv",
                "data opcode",
                "control opcode",
                "fragmented ping",
                "long ping",
                "orphan continuation",
                "text inside a message",
                "close of 1 byte",
                "non-minimal length",
            ]
        )
    )
    frame = ws.encodeFrame
    if kind == "unmasked":
        return frame(ws.TEXT, b"hi", mask=None)
    if kind == "rsv":
        return frame(ws.TEXT, b"hi", rsv=draw(st.integers(1, 7)))
    if kind == "data opcode":
        return frame(draw(st.integers(3, 7)), b"hi")
    if kind == "control opcode":
        return frame(draw(st.integers(11, 15)), b"hi")
    if kind == "fragmented ping":
        return frame(ws.PING, b"hi", fin=False)
    if kind == "long ping":
        return frame(ws.PING, b"p" * draw(st.integers(126, 300)))
    if kind == "orphan continuation":
        return frame(ws.CONTINUATION, b"hi")
    if kind == "text inside a message":
        return frame(ws.TEXT, b"a", fin=False) + frame(draw(st.sampled_from([1, 2])), b"b")
    if kind == "close of 1 byte":
        return frame(ws.CLOSE, b"\x03")
    size = draw(st.integers(0, 125))  # "non-minimal length": 16 bits for a short payload
    return bytes([0x81, 0x80 | 126]) + struct.pack("!H", size) + ws.MASK + b"x" * size


@st.composite
def frameScripts(draw, isJSON: bool):
    """Frames for one connection, and what the server must answer, in order.

    The answers that matter here: a pong per ping, a binary-frame or line-too-long error
    per refused message, and the close code where RFC 6455 or docs/protocol.md require a
    close (after which nothing more is sent).
    """
    data, expected = b"", []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(
            st.sampled_from(
                ["text", "text", "binary", "invalid", "ping", "pong", "close", "violation", "huge"]
            )
        )
        if kind in ("text", "binary"):
            if kind == "binary":
                opcode, payload = ws.BINARY, _sized(draw, draw(st.binary(max_size=40)), b"\0")
            elif isJSON:
                text = json.dumps({"type": "say", "text": draw(hostile)}, ensure_ascii=False)
                text = draw(st.one_of(st.just(text), st.text(max_size=30)))
                opcode, payload = ws.TEXT, _sized(draw, text.encode("utf-8"), b" ")
            else:
                opcode, payload = ws.TEXT, _sized(draw, draw(hostile).encode("utf-8"), b"x")
            fragments, total = _fragments(draw, payload), 0
            for i, fragment in enumerate(fragments):
                last = i == len(fragments) - 1
                data += ws.encodeFrame(opcode if i == 0 else ws.CONTINUATION, fragment, fin=last)
                total += len(fragment)
                if total > WS_MAX:
                    expected.append(("close", 1009))
                    return data, expected
                if not last and draw(st.booleans()):  # a ping between fragments
                    ping = draw(st.binary(max_size=125))
                    data += ws.encodeFrame(ws.PING, ping)
                    expected.append(("pong", ping))
            if opcode == ws.BINARY:
                expected.append(("error", "binary-frame"))
            elif total > LIMIT:
                expected.append(("error", "line-too-long"))
        elif kind == "invalid":
            for i, fragment in enumerate(fragments := _fragments(draw, _invalidText(draw))):
                last = i == len(fragments) - 1
                data += ws.encodeFrame(ws.TEXT if i == 0 else ws.CONTINUATION, fragment, fin=last)
            expected.append(("close", 1007))
            return data, expected
        elif kind in ("ping", "pong"):
            payload = draw(st.binary(max_size=125))
            data += ws.encodeFrame(ws.PING if kind == "ping" else ws.PONG, payload)
            if kind == "ping":
                expected.append(("pong", payload))
        elif kind == "close":
            code = draw(st.one_of(st.none(), st.sampled_from(CLOSE_CODES)))
            if code is None:
                data += ws.encodeFrame(ws.CLOSE)
                expected.append(("close", 1000))
            else:
                reason = draw(st.one_of(hostile.map(str.encode), st.sampled_from(INVALID_UTF8)))
                reason = reason[:100]
                data += ws.encodeFrame(ws.CLOSE, ws.closePayload(code, reason))
                if code not in VALID_CLOSE_CODES:
                    expected.append(("close", 1002))
                elif not _isUTF8(reason):
                    expected.append(("close", 1007))
                else:
                    expected.append(("close", 1000))
            return data, expected
        elif kind == "violation":
            data += _violations(draw)
            expected.append(("close", 1002))
            return data, expected
        else:  # "huge": a header announcing far more than ws_max_message_size
            size = draw(st.sampled_from([WS_MAX + 1, 1 << 16, 1 << 40, (1 << 63) - 1]))
            head = bytes([0x82, 0x80 | 127]) if size >= 1 << 16 else bytes([0x82, 0x80 | 126])
            head += struct.pack("!Q" if size >= 1 << 16 else "!H", size)
            data += head + ws.MASK + b"\0" * draw(st.integers(0, 64))
            expected.append(("close", 1009))
            return data, expected
    return data, expected


def significant(attacker: WSAttacker) -> list[tuple]:
    """The pongs, frame-level refusals and close the attacker got, in order."""
    found = []
    for frame in attacker.takeFrames():
        if frame.opcode == ws.PONG:
            found.append(("pong", frame.payload))
        elif frame.opcode == ws.CLOSE:
            found.append(("close", frame.code))
        elif attacker.wire == "json":
            got = checkEvent(frame.text)
            if got["type"] == "error" and got["code"] in ("binary-frame", "line-too-long"):
                found.append(("error", got["code"]))
        else:
            line = checkLine(frame.text)
            if line in (BINARY_REFUSED, WS_TOO_LONG):
                code = "binary-frame" if line == BINARY_REFUSED else "line-too-long"
                found.append(("error", code))
    return found


def checkFrames(wire, script, named, data):
    """Frames of every kind, valid or not, in random chunks."""
    frames, expected = script
    with World(wire, named=named) as world:
        attacker = world.attacker
        cuts = data.draw(st.lists(st.integers(0, len(frames)), max_size=6))
        for chunk in chunked(frames, cuts):
            attacker.sendBytes(chunk)
        assert significant(attacker) == expected
        for outcome in {kind if kind == "pong" else f"{kind} {code}" for kind, code in expected}:
            event(outcome)
        closes = bool(expected) and expected[-1][0] == "close"
        assert attacker.closed == closes
        world.checkHealthy()
        world.finish()


@fuzz(150)
@given(script=frameScripts(isJSON=False), named=st.booleans(), data=st.data())
def test_ws_text_frames(script, named, data):
    checkFrames("text", script, named, data)


@fuzz(150)
@given(script=frameScripts(isJSON=True), named=st.booleans(), data=st.data())
def test_ws_json_frames(script, named, data):
    checkFrames("json", script, named, data)


@fuzz(60)
@given(isJSON=st.booleans(), data=st.binary(max_size=300), named=st.booleans())
def test_ws_random_bytes_after_the_handshake(isJSON, data, named):
    """Bytes that are not frames at all: at worst a close with 1002, 1007 or 1009."""
    with World("json" if isJSON else "text", named=named) as world:
        world.attacker.sendBytes(data)
        found = significant(world.attacker)
        closes = [code for kind, code in found if kind == "close"]
        assert closes in ([], [1000], [1002], [1007], [1009]), found
        event(f"close {closes}")
        if not closes:
            world.attacker.insideMessage = True  # it may be inside a frame: no probe
        world.checkHealthy()
        world.finish()


# -- disconnects -------------------------------------------------------------------------------


@st.composite
def partialFrames(draw) -> bytes:
    """Complete frames, then a frame or a fragmented message left unfinished."""
    data = b"".join(
        draw(
            st.lists(
                st.one_of(
                    hostile.map(lambda s: ws.encodeFrame(ws.TEXT, s.encode("utf-8"))),
                    st.binary(max_size=20).map(lambda b: ws.encodeFrame(ws.PING, b)),
                ),
                max_size=3,
            )
        )
    )
    if draw(st.booleans()):  # a fragmented message that never ends
        data += ws.encodeFrame(ws.TEXT, b"part", fin=False)
        return data + ws.encodeFrame(ws.CONTINUATION, b"more", fin=False) * draw(st.integers(0, 2))
    last = ws.encodeFrame(
        draw(st.sampled_from([ws.TEXT, ws.BINARY, ws.PING])),
        draw(hostile).encode("utf-8")[:125] or b"x",
    )
    return data + last[: draw(st.integers(1, len(last) - 1))]  # cut short


def partialLine(data: bytes) -> bytes:
    return data.replace(b"\n", b"") or b"x"


@fuzz(60)
@given(lines=byteSoup(), partial=byteSoup().map(partialLine), named=st.booleans())
def test_partial_line_then_disconnect_line(lines, partial, named):
    """Half a line, then the connection drops: the user is gone, the others are told."""
    with World("line", named=named) as world:
        world.attacker.sendBytes(lines + b"\n" + partial)
        world.attacker.take()
        world.finish()


@fuzz(40)
@given(data=partialFrames(), named=st.booleans())
def test_partial_frame_then_disconnect_ws_text(data, named):
    with World("text", named=named) as world:
        world.attacker.sendBytes(data)
        world.attacker.take()
        world.finish()


@fuzz(40)
@given(data=partialFrames(), named=st.booleans())
def test_partial_frame_then_disconnect_ws_json(data, named):
    with World("json", named=named) as world:
        world.attacker.sendBytes(data)
        world.attacker.take()
        world.finish()


@st.composite
def upgradeRequests(draw) -> bytes:
    """Upgrade requests, whole or cut short, mangled or replaced by garbage."""
    request = ws.upgradeRequest(
        draw(
            st.one_of(
                st.none(),
                st.lists(
                    st.sampled_from(
                        ["chatserv.v1.json", "CHATSERV.V1.JSON", "chat", "", "x" * 300, "a b"]
                    ),
                    max_size=3,
                ),
            )
        )
    )
    how = draw(st.sampled_from(["whole", "cut", "mangled", "garbage", "extra headers"]))
    if how == "cut":
        return request[: draw(st.integers(0, len(request) - 1))]
    if how == "mangled":
        at = draw(st.integers(0, len(request) - 1))
        return request[:at] + draw(st.binary(min_size=1, max_size=20)) + request[at + 1 :]
    if how == "garbage":
        return draw(st.binary(max_size=200)) + b"\r\n\r\n"
    if how == "extra headers":
        headers = draw(
            st.lists(
                st.sampled_from(
                    [
                        b"Origin: http://evil.example\r\n",
                        b"Sec-WebSocket-Version: 8\r\n",
                        b"Sec-WebSocket-Extensions: permessage-deflate\r\n",
                        b"Content-Length: 5\r\n",
                        b"X-Nul: \x00\x1b[31m\r\n",
                        b"X-Latin: caf\xe9\r\n",
                        b"X-Long: " + b"h" * 5000 + b"\r\n",
                        b"Host: second\r\n",
                    ]
                ),
                max_size=3,
            )
        )
        return request[:-2] + b"".join(headers) + b"\r\n"
    return request


@fuzz(60)
@given(request=upgradeRequests(), more=st.binary(max_size=20))
def test_ws_handshake_garbage_then_disconnect(request, more):
    """Whatever precedes a websocket session: a session or none, and never a leftover."""
    with World("text", named=False, handshake=False) as world:
        conn = world.attacker.conn
        conn.sendRaw(request)
        conn.sendRaw(more)
        head = conn.transport.value().partition(b"\r\n\r\n")[0]
        opened = head.startswith(b"HTTP/1.1 101 ")
        assert (conn.protocol.session is not None) == opened, head
        event("opened" if opened else head[:12].decode("latin-1") or "waiting")
        if not opened:
            assert world.service.admission.total == 3 and len(world.service.sessions) == 2
        world.finish()


# -- JSON requests -------------------------------------------------------------------------------

# docs/protocol.md, "JSON requests": each type's fields, and whether each is optional.
REQUEST_FIELDS = {
    "nick": {"nick": False, "since": True},
    "join": {"room": False, "since": True},
    "rooms": {},
    "who": {"room": True},
    "msg": {"to": False, "text": False},
    "me": {"text": False},
    "say": {"text": False},
    "time": {},
    "help": {"command": True},
    "quit": {"reason": True},
    "history": {"count": True},
    "register": {"password": False},
    "login": {"nick": False, "password": False, "since": True},
    "passwd": {"old": False, "new": False},
    "color": {"color": True},
    "topic": {"room": True, "text": True},
    "kick": {"nick": False, "reason": True},
    "ban": {"nick": False, "duration": True, "address": True, "reason": True},
    "unban": {"nick": False},
    "mute": {"nick": False, "duration": True},
    "unmute": {"nick": False},
    "broadcast": {"text": False},
    "rbroadcast": {"room": False, "text": False},
    "promote": {"nick": False},
    "demote": {"nick": False},
    "resetpassword": {"nick": False, "password": False},
    "deleteaccount": {"nick": False},
    "renameaccount": {"nick": False, "new": False},
}
NUMBER_FIELDS = {"count", "since"}  # may be a JSON number too
FLAG_FIELDS = {"address"}  # true or false, not a string
ANONYMOUS = {"nick", "rooms", "who", "time", "help", "quit", "login"}
# The refusals each request may get once it is well formed (docs/protocol.md, "Errors").
MAY_REFUSE = {
    "nick": {"invalid-name", "nick-taken", "usage"},
    "join": {"invalid-name", "too-many-rooms", "usage"},
    "rooms": set(),
    "who": {"invalid-name", "no-such-room", "not-in-room"},
    "msg": {"no-such-user", "empty-text", "message-too-long"},
    "me": {"empty-text", "message-too-long", "not-in-room"},
    "say": {"empty-text", "message-too-long", "not-in-room"},
    "time": set(),
    "help": {"unknown-command"},
    "quit": set(),
    "history": {"usage", "not-in-room"},
    "register": {"weak-password", "nick-registered", "register-throttled", "busy"},
    "login": {"invalid-name", "login-failed", "login-throttled", "usage", "busy"},
    "passwd": {"not-logged-in", "weak-password", "login-failed", "login-throttled", "busy"},
    "color": {"usage"},
    "topic": {"invalid-name", "no-such-room", "not-in-room", "not-permitted", "empty-text"},
    **{name: {"not-permitted"} for name in ADMIN_COMMANDS},
}
GOOD_VALUES = {
    "address": st.booleans(),
    "nick": st.sampled_from(NICKS + ["Mallory2", "x" * 33, "bad name"]),
    "room": st.sampled_from(ROOMS),
    "to": st.sampled_from(NICKS),
    "text": hostile,
    "command": st.sampled_from(COMMAND_NAMES + ["/join", "changeRoom", "bogus", "?", ""]),
    "reason": hostile,
    "password": hostile,
    "old": hostile,
    "new": hostile,
    "count": st.sampled_from(["1", "50", "501", "0", "x", 7, 2.5, -3]),
    "since": st.sampled_from(["0", "3", "x", "-1", 7, 2.5, -3, 2**63, 10**30]),
    "color": st.sampled_from(["#ff8800", "none", "red", "#FFF"]),
    "duration": st.sampled_from(["10m", "1h", "0m", "soon"]),
}

jsonScalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
jsonValues = st.recursive(
    jsonScalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
# Anything but a string or null.
wrongTypes = (
    st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(jsonValues, max_size=3)
    | st.dictionaries(st.text(max_size=6), jsonValues, max_size=3)
)


@st.composite
def jsonRequests(draw) -> str:
    """A JSON text: a request, a malformed one, or no JSON at all."""
    shape = draw(st.sampled_from(["request"] * 6 + ["not an object", "broken", "text"]))
    if shape == "text":
        return draw(st.one_of(hostile, st.text(max_size=40)))
    if shape == "not an object":
        return json.dumps(draw(jsonScalars | st.lists(jsonValues, max_size=3)))
    kind = draw(
        st.sampled_from(["command"] * 7 + ["alias", "text", "other"]).flatmap(
            lambda how: {
                "command": st.sampled_from(COMMAND_NAMES + ["say", "msg", "me"] * 2),
                "alias": st.sampled_from(
                    ALIASES + ["SAY", "Nick", "?", "", " say", "say\n", "msg\u0000"]
                ),
                "text": st.text(max_size=8),
                "other": jsonValues,
            }[how]
        )
    )
    request = {} if draw(st.integers(0, 9)) == 0 else {"type": kind}
    fields = REQUEST_FIELDS.get(kind, {}) if isinstance(kind, str) else {}
    for name in fields or draw(st.sets(st.sampled_from(sorted(GOOD_VALUES)), max_size=2)):
        how = draw(st.sampled_from(["good"] * 5 + ["missing", "null", "wrong", "wrong"]))
        if how == "good":
            request[name] = draw(GOOD_VALUES[name])
        elif how == "null":
            request[name] = None
        elif how == "wrong":
            request[name] = draw(wrongTypes)
    request.update(draw(st.dictionaries(st.text(max_size=6), jsonValues, max_size=2)))
    text = json.dumps(
        request,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, None, 0, 2])),
    )
    if shape == "broken":
        return text[: draw(st.integers(0, len(text) - 1))]
    return draw(st.sampled_from(["", "", "", "", " ", "\n", "\ufeff"])) + text


def refusalFor(text: str) -> str | None:
    """The refusal docs/protocol.md predicts for a JSON text, or None if well formed."""
    if len(text.encode("utf-8")) > LIMIT:
        return "line-too-long"
    try:
        request = json.loads(text)
    except ValueError:
        return "bad-request"
    if not isinstance(request, dict) or not isinstance(request.get("type"), str):
        return "bad-request"
    fields = REQUEST_FIELDS.get(request["type"])
    if fields is None:
        return "unknown-command"
    for name, optional in fields.items():
        value = request.get(name)
        if name in NUMBER_FIELDS and type(value) in (int, float):
            try:
                number = float(value)
            except OverflowError:  # more than 308 digits
                return "bad-request"
            if not (math.isfinite(number) and number.is_integer()):
                return "bad-request"
            continue
        if name in FLAG_FIELDS:
            if value is not None and not isinstance(value, bool):
                return "bad-request"
            continue
        if (value is None and not optional) or (value is not None and not isinstance(value, str)):
            return "bad-request"
    return None


@fuzz(200)
@given(texts=st.lists(jsonRequests(), min_size=1, max_size=6), named=st.booleans())
def test_json_requests(texts, named):
    """Malformed JSON, wrong types for every field: the documented refusal, nothing else."""
    with World("json", named=named) as world:
        attacker = world.attacker
        for text in texts:
            if attacker.closed:
                break
            before = attacker.session.user.nick
            attacker.sendLine(text)
            got = attacker.take()
            others = world.observed()
            refusal = refusalFor(text)
            choose = [] if before else [CHOOSE]
            errors = [e["code"] for e in got if e["type"] == "error"]
            if refusal is not None:
                event(f"refused: {refusal}")
                assert [(e["type"], e.get("code") or e["text"]) for e in got] == [
                    ("error", refusal)
                ] + [("notice", c) for c in choose]
                assert others == ([], [])
                continue
            kind = json.loads(text)["type"]
            event(f"accepted: {kind}")
            if before is None and kind not in ANONYMOUS:
                assert errors == ["nick-required"], got
            else:
                assert len(errors) <= 1 and set(errors) <= MAY_REFUSE[kind], got
            if kind == "quit":
                assert got[-1] == {
                    "type": "notice",
                    "room": None,
                    "text": "Goodbye.",
                    "ts": got[-1]["ts"],
                }
                assert attacker.conn.closeCode == 1000
        world.checkHealthy()
        world.finish()


# -- huge numbers and deep nesting ---------------------------------------------------------------

BIG = 1 << 20
HUGE = {**GENEROUS, "max_line_length": BIG, "ws_max_message_size": BIG}

MONSTERS = {
    "digits": lambda n: "9" * n,  # an integer of n digits
    "negative": lambda n: "-" + "1" * n,
    "exponent": lambda n: "1e" + "9" * min(n, 50),  # a float that overflows to infinity
    "fraction": lambda n: "0." + "0" * n + "1",
    "arrays": lambda n: "[" * n + "]" * n,
    "objects": lambda n: '{"a":' * n + "0" + "}" * n,
    "unclosed": lambda n: "[" * n,
}
PLACES = {
    "ignored": '{"type":"say","text":"still here","extra":%s}',
    "text": '{"type":"say","text":%s}',
    "type": '{"type":%s}',
    "whole": "%s",
}


@fuzz(60)
@given(
    kind=st.sampled_from(sorted(MONSTERS)),
    size=st.sampled_from([10, 900, 1000, 4300, 4301, 5000, 20_000, 100_000]),
    where=st.sampled_from(sorted(PLACES)),
)
def test_json_huge_numbers_and_deep_nesting(kind, size, where):
    """Either handled or refused as a bad request: the server stays up, nobody else notices."""
    text = PLACES[where] % MONSTERS[kind](size)
    with World("json", settings=HUGE) as world:
        world.attacker.sendLine(text)
        got = world.attacker.take()
        others = world.observed()
        numeric = kind in ("digits", "negative", "exponent", "fraction")
        if where == "ignored" and (numeric or got[0]["type"] == "message"):
            event("accepted")
            assert [(e["type"], e["text"]) for e in got] == [("message", "still here")]
        else:  # a value of the wrong type; or nesting deeper than the parser's limit
            event(f"refused: {kind}" if where == "ignored" else "refused")
            assert [(e["type"], e["code"]) for e in got] == [("error", "bad-request")], got
            assert others == ([], [])
        world.checkHealthy()
        world.finish()


def test_huge_integer_in_an_ignored_field_is_ignored():
    """Unknown fields are ignored (docs/protocol.md), however large the number in them.

    Python refuses to convert integers of more than 4300 digits to int (sys.int_info
    .str_digits_check_threshold); parsed naively, such a request was refused as
    "malformed JSON". (The default max_line_length, 2048, hides this; a larger one
    exposes it.)
    """
    with World("json", settings=HUGE) as world:
        world.attacker.sendLine('{"type":"say","text":"hi","n":%s}' % ("9" * 5000))
        assert [(e["type"], e["text"]) for e in world.attacker.take()] == [("message", "hi")]


# -- the default limits ------------------------------------------------------------------------

# -- websocket frames under the frame limits -------------------------------------------------

# Small frame limits, so that examples reach them; flood control of messages stays generous.
MOST = 8  # ws_max_fragments
FRAME_LIMITS = {**GENEROUS, "ws_frame_rate": 10.0, "ws_frame_burst": 30, "ws_max_fragments": MOST}
TOO_MANY_FRAMES = "disconnected: you sent too many websocket frames"
TOO_MANY_FRAGMENTS = f"disconnected: a message may come in at most {MOST} fragments"


@st.composite
def frameFloods(draw) -> list[tuple[float, list[tuple]]]:
    """Bursts of frames of every kind, each burst after a pause: pings and unsolicited
    pongs, messages in 1 to 3 * ws_max_fragments fragments (empty ones, or with a ping
    between fragments), repeated to reach the frame rate or not."""
    script = []
    for _ in range(draw(st.integers(1, 5))):
        pause = draw(st.sampled_from([0, 0, 0.05, 0.5, 1, 3]))
        items: list[tuple] = []
        for _ in range(draw(st.integers(1, 6))):
            kind = draw(st.sampled_from(["ping", "pong", "message", "message"]))
            if kind == "message":
                pieces = draw(st.sampled_from([1, 2, MOST - 1, MOST, MOST + 1, MOST * 3]))
                items.append((kind, pieces, draw(st.booleans()), draw(st.booleans())))
            else:
                items.append((kind, draw(st.binary(max_size=125))))
        script.append((pause, items * draw(st.sampled_from([1, 1, 3, 10]))))
    return script


def _messageFrames(text: str, pieces: int, empty: bool, pinged: bool) -> list[tuple]:
    """One message as (opcode, payload, fin) frames: C{pieces} fragments, all of the text
    in the first one if C{empty}, and a ping after every fragment but the last if
    C{pinged}."""
    data = text.encode("utf-8")
    if empty:
        parts = [data] + [b""] * (pieces - 1)
    else:
        data += b" " * max(0, pieces - len(data))  # (a line's trailing space is dropped)
        size = -(-len(data) // pieces)
        parts = [data[i * size : (i + 1) * size] for i in range(pieces)]
    frames = []
    for i, part in enumerate(parts):
        last = i == pieces - 1
        frames.append((ws.TEXT if i == 0 else ws.CONTINUATION, part, last))
        if pinged and not last:
            frames.append((ws.PING, b"between", True))
    return frames


def checkFrameFloods(wire: str, script, data) -> None:
    """Every frame counts against the frame limits, whatever its kind; a message has at
    most ws_max_fragments frames. The server answers exactly what a model of the limits
    allows, closes with 1008 or 1009 at exactly the frame that breaks one, and then reads
    nothing more; the others notice only the attacker leaving."""
    with World(wire, settings=FRAME_LIMITS) as world:
        attacker = world.attacker
        bucket = TokenBucket(10.0, 30, world.clock.seconds())
        bucket.take(world.clock.seconds())  # the attacker's nickname was a frame too
        expected, said, closed, number = [], [], None, 0
        for pause, items in script:
            world.clock.advance(pause)
            now, frames = world.clock.seconds(), []
            for item in items:
                if item[0] == "message":
                    number += 1
                    text = f"said {number}"
                    if wire == "json":
                        text = json.dumps({"type": "say", "text": text})
                    frames.append((text, _messageFrames(text, *item[1:])))
                else:
                    opcode = ws.PING if item[0] == "ping" else ws.PONG
                    frames.append((None, [(opcode, item[1], True)]))
            raw = b""
            for text, parts in frames:
                for fragment, (opcode, payload, fin) in enumerate(parts):
                    raw += ws.encodeFrame(opcode, payload, fin=fin)
                    if closed is not None:
                        continue
                    if not bucket.take(now):
                        closed = (1008, TOO_MANY_FRAMES)
                    elif opcode == ws.CONTINUATION and _continuations(parts, fragment) >= MOST:
                        closed = (1009, TOO_MANY_FRAGMENTS)
                    elif opcode == ws.PING:
                        expected.append(("pong", payload))
                    elif fin and text is not None:
                        said.append(json.loads(text)["text"] if wire == "json" else text)
                    if closed is not None:
                        expected.append(("close", closed[0]))
            for chunk in chunked(raw, data.draw(st.lists(st.integers(0, len(raw)), max_size=4))):
                attacker.sendBytes(chunk)
            got = attacker.takeFrames()
            assert pongsAndClose(got) == expected
            expected = []
            if closed is not None:
                last = [f.text for f in got if f.opcode == ws.TEXT][-1]
                assert (
                    noticeText(checkEvent(last) if wire == "json" else checkLine(last))
                    == (closed[1])
                )
                break
        lines, _ = world.observed()
        assert [line for line in lines if line.startswith("#lobby <mallory> ")] == [
            f"#lobby <mallory> {text}" for text in said
        ]
        if closed is None:
            event("not closed")
            world.clock.advance(10)  # time for the probe's frames to be allowed
            world.checkHealthy()
            world.finish()
            return
        event(f"closed {closed[0]}")
        assert attacker.conn.transport.disconnecting and attacker.session.closed
        reason = "too many frames" if closed[0] == 1008 else "message in too many fragments"
        assert lines[-1] == f"#lobby <-- mallory has left ({reason})"
        # It goes on sending: nothing more is parsed or answered.
        attacker.sendBytes(ws.encodeFrame(ws.PING, b"after") * data.draw(st.integers(0, 300)))
        assert attacker.takeFrames() == []
        world.checkHealthy()
        world.finish()


def _continuations(parts: list[tuple], upTo: int) -> int:
    """How many continuation frames of this message have come, up to frame C{upTo}."""
    return sum(1 for opcode, _, _ in parts[: upTo + 1] if opcode == ws.CONTINUATION)


def pongsAndClose(frames: list[ws.Frame]) -> list[tuple]:
    return [
        ("pong", f.payload) if f.opcode == ws.PONG else ("close", f.code)
        for f in frames
        if f.opcode in (ws.PONG, ws.CLOSE)
    ]


@fuzz(80)
@given(script=frameFloods(), data=st.data())
def test_ws_text_frame_floods(script, data):
    checkFrameFloods("text", script, data)


@fuzz(60)
@given(script=frameFloods(), data=st.data())
def test_ws_json_frame_floods(script, data):
    checkFrameFloods("json", script, data)


FLOODED = "disconnected: you sent too much, too fast"
SLOW_DOWN = re.compile(r"slow down: you are sending more than \S+ requests a second; .+")


@st.composite
def bursts(draw) -> list[tuple[float, list[str]]]:
    """Bursts of lines, each after a pause (30 seconds at most in all: less than
    nick_timeout and ping_interval)."""
    script = []
    for _ in range(draw(st.integers(1, 6))):
        pause = draw(st.sampled_from([0, 0, 0, 0.1, 0.5, 1, 5]))
        lines = draw(st.lists(st.one_of(commandLines(quit=False), hostile), max_size=6))
        script.append((pause, lines * draw(st.integers(1, 15))))
    return script


def checkDefaultLimits(wire, script, named):
    """Under the default limits a fuzzing client gets clear errors and, at worst, a clean
    disconnect with a notice; the others notice nothing but its departure."""
    with World(wire, named=named, settings={}) as world:  # the defaults
        attacker, got = world.attacker, []
        sent = 1 if named else 0  # choosing the nickname was a request too
        for pause, lines in script:
            world.clock.advance(pause)
            for line in lines:
                if attacker.closed:
                    break
                if wire == "json":
                    attacker.conn.request(type="say", text=line)
                else:
                    attacker.sendLine(line.replace("\n", " "))
                sent += 1
                got += attacker.take()
        world.observed()
        notices = [noticeText(g) for g in got if noticeText(g) is not None]
        errors = [g for g in got if isError(g)]
        slowDowns = [
            e for e in errors if SLOW_DOWN.fullmatch(e["text"] if wire == "json" else e[7:])
        ]
        if wire == "json":
            assert all(e["code"] == "rate-limited" for e in slowDowns)
        if sent <= 20:  # the default burst
            assert not slowDowns and FLOODED not in notices
        if attacker.closed:
            assert noticeText(got[-1]) == FLOODED, got[-3:]
            attacker.checkClose()
            if wire != "line":
                assert attacker.conn.closeCode == 1000
            event("disconnected")
        else:
            event("rate limited" if slowDowns else "not limited")
            if all(pause == 0 for pause, _ in script):
                assert sent <= 20 + 50  # the burst, then 50 dropped requests at most
        world.clock.advance(10)  # time to be allowed to speak again
        world.checkHealthy()
        world.finish()


@fuzz(40)
@given(script=bursts(), named=st.booleans())
def test_default_limits_line(script, named):
    checkDefaultLimits("line", script, named)


@fuzz(30)
@given(script=bursts(), named=st.booleans())
def test_default_limits_ws_text(script, named):
    checkDefaultLimits("text", script, named)


@fuzz(30)
@given(script=bursts(), named=st.booleans())
def test_default_limits_ws_json(script, named):
    checkDefaultLimits("json", script, named)
