"""Nickname and room-name rules.

The rules are IRC-compatible on purpose, so that a later IRC listener can expose the very
same users and rooms: nicknames use IRC's character set, and comparison uses IRC's
``rfc1459`` case mapping, in which ``[]\\~`` are the upper-case forms of ``{}|^``.
"""

from __future__ import annotations

import re

from chatserv.errors import BadName

MAX_NAME_LENGTH = 32  # nicknames; room names default to this too
MAX_ROOM_NAME_LENGTH = 50  # the most a room-name setting may allow (IRC's CHANNELLEN)

# Letters, digits and _-[]{}|^` ; not starting with a digit or '-'.
_FIRST = r"A-Za-z_\[\]{}|^`"
_NEXT = _FIRST + r"0-9\-"
_NAME = re.compile(f"[{_FIRST}][{_NEXT}]*")
_RFC1459 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")


def rules(maxLength: int = MAX_NAME_LENGTH) -> str:
    return (
        f"1-{maxLength} characters: letters, digits and _-[]{{}}|^` "
        "(not starting with a digit or '-')"
    )


def fold(name: str) -> str:
    """The case-folded key two names are compared by (IRC's rfc1459 mapping)."""
    return name.translate(_RFC1459)


def _valid(name: str, maxLength: int) -> bool:
    return len(name) <= maxLength and _NAME.fullmatch(name) is not None


def checkNick(nick: str) -> str:
    """Return C{nick} if it is a valid nickname, else raise L{BadName}."""
    if not _valid(nick, MAX_NAME_LENGTH):
        raise BadName(f"invalid nickname {_quote(nick)}: {rules()}")
    return nick


def checkRoom(room: str, maxLength: int = MAX_NAME_LENGTH) -> str:
    """Return the room name without its optional leading '#', or raise L{BadName}."""
    name = room[1:] if room.startswith("#") else room
    if not _valid(name, maxLength):
        raise BadName(f"invalid room name {_quote(room)}: {rules(maxLength)}")
    return name


def _quote(name: str) -> str:
    # Echo at most a little of what was sent, escaped: the error goes back on the wire.
    shown = name if len(name) <= 40 else name[:40] + "..."
    return ascii(shown) if not shown.isprintable() else f'"{shown}"'
