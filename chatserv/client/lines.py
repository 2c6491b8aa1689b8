"""Server output, from either wire, as recognised L{Line}s.

Both wires end up here: a line-protocol line is matched against the documented formats
(docs/protocol.md, "The line format"); a JSON event is turned into the same line text
(its C{text} field, or for messages the line built from C{from}, C{room} and C{text}) and
then matched the same way, with its structured fields taking precedence. One recogniser
means the two wires cannot drift apart on screen.

Everything shown is passed through L{sanitize} first: the server already escapes user
text, but a client should not let any server write escape sequences to its terminal.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import Any

from chatserv.names import fold
from chatserv.text import sanitize

# What a line is, for colouring and for tracking the session.
MESSAGE = "message"  # #room <nick> text
ACTION = "action"  # #room * nick text
PRIVATE = "private"  # *nick* text
PRIVATE_SENT = "private-sent"  # -> *nick* text
JOIN = "join"
LEAVE = "leave"
QUIT = "quit"  # <-- nick has quit (reason): someone in several rooms, ours among them
RENAME = "rename"
WELCOME = "welcome"
LOGIN = "login"
NOTICE = "notice"  # -!- text, or #room -!- text
ERROR = "error"
WHO = "who"
HISTORY_END = "history-end"  # #room --- end of history ---
INFO = "info"  # everything else the server says: topic, rooms, time, help, history start
CLIENT = "client"  # the client's own notes: connecting, reconnecting
CLIENT_ERROR = "client-error"

_NICK = r"[A-Za-z_\[\]{}|^`][A-Za-z0-9_\-\[\]{}|^`]*"  # docs/protocol.md, Nicknames
_N = f"(?P<nick>{_NICK})"
_R = f"#(?P<room>{_NICK})"  # room names follow the nickname rules

_STAMP = re.compile(r"\[(\d\d:\d\d:\d\d|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] ")

# Tried in order; the first match decides. Each names the nickname to colour "nick".
_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        (MESSAGE, rf"{_R} <{_N}> (?P<body>.*)"),
        (ACTION, rf"{_R} \* {_N} (?P<body>.*)"),
        (PRIVATE_SENT, rf"-> \*{_N}\* (?P<body>.*)"),
        (PRIVATE, rf"\*{_N}\* (?P<body>.*)"),
        (JOIN, rf"{_R} --> {_N} has joined"),
        (LEAVE, rf"{_R} <-- {_N} has left \((?P<body>.*)\)"),
        (QUIT, rf"<-- {_N} has quit \((?P<body>.*)\)"),
        (RENAME, rf"--- {_N} is now known as (?P<other>{_NICK})"),
        (WELCOME, rf"-!- Welcome, {_N}! Type /help for commands\."),
        (LOGIN, rf"-!- (?:you are logged in as {_N}|registered (?P<reg>{_NICK});).*"),
        (NOTICE, r"-!- (?P<body>.*)"),
        (NOTICE, rf"{_R} -!- (?P<body>.*)"),
        (ERROR, r"error: (?P<body>.*)"),
        (WHO, rf"{_R} users \(\d+\): (?P<body>.*)"),
        (HISTORY_END, rf"{_R} --- end of history ---"),
    )
)

# Notices after which the server closes the connection on purpose: reconnecting would
# undo a kick or ban, or fight the user's own login elsewhere (docs/protocol.md,
# "Connection lifecycle").
_FINAL_NOTICES = ("disconnected:", "Goodbye.")

_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


@dataclass(frozen=True)
class Line:
    """One line of output, with what the client needs to know about it."""

    kind: str
    text: str  # as the server wrote it (sanitised), without the time stamp
    stamp: str = ""  # "12:58:25", or "2026-11-21 14:14:33" for history
    room: str | None = None
    nick: str | None = None  # whose line: sender, joiner, leaver, quitter, old nickname
    other: str | None = None  # rename's new nickname
    body: str = ""  # the message text, leave or quit reason, notice or error text
    spans: tuple[tuple[int, int], ...] = ()  # where nicknames are in text, to colour
    color: str | None = None  # the sender's chosen colour (JSON), validated
    users: tuple[str, ...] = ()  # who
    own: bool = False  # sent by this client's user
    id: int | None = None  # a message's server id (JSON), to recognise it when replayed
    history: bool = False  # a replayed message (JSON)

    @property
    def final(self) -> bool:
        """The server is about to end this connection on purpose: do not reconnect."""
        return self.kind == NOTICE and self.room is None and self.body.startswith(_FINAL_NOTICES)


def validColor(value: object) -> str | None:
    """C{#rrggbb} in lower case, or None for anything else (the field is untrusted)."""
    if isinstance(value, str) and _COLOR.fullmatch(value):
        return value.lower()
    return None


def recognise(text: str, stamp: str = "") -> Line:
    """Recognise one line of the line format, without its time stamp."""
    text = sanitize(text)
    for kind, pattern in _FORMATS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        found = match.groupdict()
        nick = found.get("nick") or found.get("reg")
        spans = [match.span(name) for name in ("nick", "reg", "other") if found.get(name)]
        users: tuple[str, ...] = ()
        if kind == WHO:
            users = tuple(u for u in found["body"].split(", ") if u)
            spans = _userSpans(text, match.start("body"), users)
        return Line(
            kind,
            text,
            stamp,
            room=found.get("room"),
            nick=nick,
            other=found.get("other"),
            body=found.get("body") or "",
            spans=tuple(spans),
            users=users,
            own=kind == PRIVATE_SENT,  # our copy of what we sent
        )
    return Line(INFO, text, stamp)


def _userSpans(text: str, start: int, users: tuple[str, ...]) -> list[tuple[int, int]]:
    spans = []
    for user in users:
        spans.append((start, start + len(user)))
        start += len(user) + 2
    return spans


def parseLine(raw: str) -> Line:
    """Recognise one line as received on the line wire (time stamp and all)."""
    raw = raw.rstrip("\r\n")
    match = _STAMP.match(raw)
    if match is None:
        return recognise(raw)
    return recognise(raw[match.end() :], match.group(1))


def stampOf(ms: object, dated: bool = False) -> str:
    """The local time of a JSON C{ts}; with the date for history, which may be old."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return ""
    try:
        when = time.localtime(ms / 1000)
    except (OverflowError, OSError, ValueError):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S" if dated else "%H:%M:%S", when)


def _str(event: dict[str, Any], name: str) -> str:
    value = event.get(name)
    return value if isinstance(value, str) else ""


def eventLines(event: object, me: str | None) -> list[Line]:
    """The display lines of one JSON event. C{me} is our nickname, which marks our own
    messages (the server echoes them) and private messages we sent."""
    if not isinstance(event, dict):
        return [Line(CLIENT_ERROR, "the server sent something that is not a JSON object")]
    kind = _str(event, "type")
    text = _str(event, "text")
    sender = _str(event, "from")
    mine = me is not None and bool(sender) and fold(sender) == fold(me)
    dated = event.get("history") is True or (event.get("offline") is True and not mine)
    stamp = stampOf(event.get("ts"), dated)
    room = _str(event, "room")
    if kind == "message":
        texts = [f"#{room} <{sender}> {text}"]
    elif kind == "action":
        texts = [f"#{room} * {sender} {text}"]
    elif kind == "msg":
        to = _str(event, "to")
        if mine and fold(to) != fold(sender):
            kept = "(offline; kept for their next login) " if event.get("offline") is True else ""
            texts = [f"-> *{to}* {kept}{text}"]
        else:
            texts = [f"*{sender}* {text}"]
    elif kind in ("notice", "welcome", "login"):
        texts = [f"#{room} -!- {text}" if room else f"-!- {text}"]
    elif kind == "error":
        texts = [f"error: {text}"]
    else:  # the other events' text is already the line format; help spans lines
        texts = text.split("\n")
    lines = [recognise(t, stamp) for t in texts]
    first = lines[0]
    if kind in ("message", "action", "msg"):
        number = event.get("id")
        first = replace(
            first,
            color=validColor(event.get("color")),
            own=mine,
            id=number if isinstance(number, int) and not isinstance(number, bool) else None,
            history=event.get("history") is True,
        )
    elif kind in ("welcome", "login") and _str(event, "nick"):
        # The structured field is the truth; the text is for people.
        first = replace(first, kind=WELCOME if kind == "welcome" else LOGIN, nick=event["nick"])
    elif kind == "who" and isinstance(event.get("users"), list):
        users = tuple(u for u in event["users"] if isinstance(u, str))
        first = replace(first, users=users)
    return [first, *lines[1:]]


def clientLine(text: str, error: bool = False) -> Line:
    """A note from the client itself (not the server), stamped with the local time."""
    return Line(CLIENT_ERROR if error else CLIENT, sanitize(text), time.strftime("%H:%M:%S"))
