"""The one place where events become text for a wire.

Two renderings exist: human-readable lines (the TCP line protocol and websocket text
mode) and JSON objects (the C{chatserv.v1.json} websocket subprotocol, documented in
docs/protocol.md). Both are pure functions of the event, so a fan-out renders once per
wire, however many recipients share it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from chatserv import events as ev
from chatserv.text import plain

_clock: tuple[int, str] = (-1, "")  # the last second shown, and how


def clockTime(ts: float) -> str:
    """HH:MM:SS in the server's local time zone (made once a second: every line shows it)."""
    global _clock
    second = int(ts)
    if _clock[0] != second:
        _clock = (second, time.strftime("%H:%M:%S", time.localtime(second)))
    return _clock[1]


def dateTime(ts: float) -> str:
    """YYYY-MM-DD HH:MM:SS in the server's local time zone: for history, which may be old."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _room(name: str) -> str:
    return "#" + name


def _helpLine(entry: ev.HelpEntry) -> str:
    aliases = f" (also {', '.join(entry.aliases)})" if entry.aliases else ""
    return f"  {entry.usage:<22} {entry.summary}{aliases}"


def _describeHelp(event: ev.HelpReply) -> list[str]:
    if len(event.entries) == 1:
        return [_helpLine(event.entries[0]).strip()]
    return ["commands (/help COMMAND for one):"] + [_helpLine(e) for e in event.entries]


# How each event reads as text, without the time stamp. A list, since help spans lines.
# How a room message of each kind reads: <alice> hi, * alice waves, -alice- (a notice).
_SAID = {"message": "<{}>", "action": "* {}", "notice": "-{}-"}


def _privateText(e: ev.PrivateMessage) -> str:
    return plain(f"* {e.sender} {e.text}" if e.action else e.text)


def _private(e: ev.PrivateMessage) -> str:
    name = "-{}-" if e.notice else "*{}*"
    if not e.outgoing:
        return f"{name.format(e.sender)} {_privateText(e)}"
    kept = "(offline; kept for their next login) " if e.offline else ""
    return f"-> {name.format(e.to)} {kept}{_privateText(e)}"


def _kicked(e: ev.Kicked) -> str:
    return f"kicked by {e.by}: {e.reason}" if e.reason else f"kicked by {e.by}"


_DESCRIBE: dict[type, Callable[[Any], list[str]]] = {
    ev.RoomMessage: lambda e: [f"{_room(e.room)} {_SAID[e.kind].format(e.sender)} {plain(e.text)}"],
    ev.PrivateMessage: lambda e: [_private(e)],
    ev.Joined: lambda e: [f"{_room(e.room)} --> {e.nick} has joined"],
    ev.Left: lambda e: [f"{_room(e.room)} <-- {e.nick} has left ({e.reason})"],
    ev.Kicked: lambda e: [f"{_room(e.room)} <-- {e.nick} was {_kicked(e)}"],
    ev.Away: lambda e: [],  # IRC's: line and web clients are not told
    ev.RealnameChanged: lambda e: [],  # IRC's too
    ev.AdminChanged: lambda e: [],  # IRC's operator mode; the user is told by a notice
    # Here a user is in one room at a time: a quit from one room reads as leaving it. A
    # quit from several (an IRC user's) names none, so as not to tell where else they were.
    ev.Quit: lambda e: [
        f"{_room(e.rooms[0])} <-- {e.nick} has left ({e.reason})"
        if len(e.rooms) == 1
        else f"<-- {e.nick} has quit ({e.reason})"
    ],
    ev.Renamed: lambda e: [f"--- {e.old} is now known as {e.new}"],
    ev.Notice: lambda e: [f"{_room(e.room)} -!- {e.text}" if e.room else f"-!- {e.text}"],
    ev.Welcome: lambda e: [f"-!- {e.text}"],
    ev.LoggedIn: lambda e: [f"-!- {e.text}"],
    ev.Topic: lambda e: [
        f"{_room(e.room)} topic: {plain(e.topic)} (set by {e.by}, {dateTime(e.setAt)})"
        if e.topic is not None
        else f"{_room(e.room)} has no topic"
    ],
    ev.HistoryMark: lambda e: [
        f"{_room(e.room)} --- end of history ---"
        if e.end
        else f"{_room(e.room)} --- history: the last {e.count} "
        f"message{'s' if e.count != 1 else ''} ---"
    ],
    ev.Error: lambda e: [f"error: {e.text}"],
    ev.WhoReply: lambda e: [f"{_room(e.room)} users ({len(e.nicks)}): {', '.join(e.nicks)}"],
    ev.RoomsReply: lambda e: [
        f"rooms ({len(e.rooms)}): " + ", ".join(f"{_room(n)} ({c})" for n, c in e.rooms)
    ],
    ev.TimeReply: lambda e: [f"server time: {e.iso}"],
    ev.HelpReply: _describeHelp,
}


def lines(event: ev.Event) -> list[str]:
    """The event as one or more display lines, each starting with its time."""
    if getattr(event, "history", False) or (
        getattr(event, "offline", False) and not event.outgoing
    ):
        stamp = f"[{dateTime(event.ts)}] "  # said earlier, maybe days ago
    else:
        stamp = f"[{clockTime(event.ts)}] "
    return [stamp + line for line in _DESCRIBE[type(event)](event)]


def lineBytes(event: ev.Event) -> bytes:
    """The event as CRLF-terminated UTF-8 lines for the TCP line protocol."""
    return "".join(line + "\r\n" for line in lines(event)).encode("utf-8")


def _text(event: ev.Event) -> str:
    return "\n".join(_DESCRIBE[type(event)](event))


def _ms(ts: float) -> int:
    return int(ts * 1000)


def _marked(fields: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """Add the optional fields that are set (a colour, C{"history": true}), only those:
    the common message stays as small as it was."""
    for name, value in optional.items():
        if value:
            fields[name] = value
    return fields


# The JSON fields of each event, besides "type" and "ts" (milliseconds since the epoch).
_FIELDS: dict[type, Callable[[Any], dict[str, Any]]] = {
    ev.RoomMessage: lambda e: _marked(
        {
            # An IRC NOTICE is a message marked as one: a client that does not know the
            # mark still shows it.
            "type": "message" if e.kind == "notice" else e.kind,
            "id": e.id,
            "room": e.room,
            "from": e.sender,
            "text": plain(e.text),
        },
        color=e.color,
        history=e.history,
        notice=e.kind == "notice",
    ),
    ev.PrivateMessage: lambda e: _marked(
        {"type": "msg", "id": e.id, "from": e.sender, "to": e.to, "text": _privateText(e)},
        color=e.color,
        offline=e.offline,
        notice=e.notice,
        action=e.action,
    ),
    ev.Kicked: lambda e: {
        "type": "leave",
        "room": e.room,
        "from": e.nick,
        "reason": _kicked(e),
        "kicked": True,
        "by": e.by,
        "text": _text(e),
    },
    ev.Away: lambda e: None,
    ev.RealnameChanged: lambda e: None,
    ev.AdminChanged: lambda e: None,
    ev.Joined: lambda e: {"type": "join", "room": e.room, "from": e.nick, "text": _text(e)},
    ev.Left: lambda e: {
        "type": "leave",
        "room": e.room,
        "from": e.nick,
        "reason": e.reason,
        "text": _text(e),
    },
    ev.Quit: lambda e: (
        {"type": "leave", "room": e.rooms[0], "from": e.nick, "reason": e.reason, "text": _text(e)}
        if len(e.rooms) == 1
        else {"type": "quit", "from": e.nick, "reason": e.reason, "text": _text(e)}
    ),
    ev.Renamed: lambda e: {"type": "rename", "from": e.old, "to": e.new, "text": _text(e)},
    ev.Notice: lambda e: {"type": "notice", "room": e.room, "text": e.text},
    ev.Welcome: lambda e: {"type": "welcome", "nick": e.nick, "text": e.text},
    ev.LoggedIn: lambda e: {
        "type": "login",
        "nick": e.nick,
        "admin": e.admin,
        "color": e.color,
        "text": e.text,
    },
    ev.Topic: lambda e: {
        "type": "topic",
        "room": e.room,
        "topic": plain(e.topic) if e.topic is not None else None,
        "by": e.by or None,
        "set": _ms(e.setAt) if e.topic is not None else None,
        "text": _text(e),
    },
    ev.HistoryMark: lambda e: {
        "type": "history-end" if e.end else "history-start",
        "room": e.room,
        "count": e.count,
        "text": _text(e),
    },
    ev.Error: lambda e: {"type": "error", "code": e.code, "text": e.text},
    ev.WhoReply: lambda e: {
        "type": "who",
        "room": e.room,
        "users": list(e.nicks),
        "text": _text(e),
    },
    ev.RoomsReply: lambda e: {
        "type": "rooms",
        "rooms": [{"name": n, "users": c} for n, c in e.rooms],
        "text": _text(e),
    },
    ev.TimeReply: lambda e: {"type": "time", "time": e.iso, "text": _text(e)},
    ev.HelpReply: lambda e: {
        "type": "help",
        "commands": [
            {"name": h.name, "usage": h.usage, "summary": h.summary, "aliases": list(h.aliases)}
            for h in e.entries
        ],
        "text": _text(e),
    },
}

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def jsonText(event: ev.Event) -> str | None:
    """The event as one JSON object (see docs/protocol.md); None for an event that JSON
    clients are not sent."""
    fields = _FIELDS[type(event)](event)
    if fields is None:
        return None
    fields["ts"] = _ms(event.ts)
    return _encoder.encode(fields)


def jsonTexts(event: ev.Event) -> list[str]:
    """The event as the JSON objects sent for it: one, or none."""
    text = jsonText(event)
    return [text] if text is not None else []
