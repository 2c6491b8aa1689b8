"""Events: what happened, as plain values.

The service creates them; each wire renders them (see L{chatserv.render}). They know
nothing about bytes, frames or terminals. C{ts} is POSIX time in seconds (float).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Source:
    """Who did something, as IRC's message prefix needs it: C{nick!user@host}.

    C{host} is as the server is configured to show it (a cloak, or the address);
    C{account} is the account name if logged in. Wires that name people by nickname only
    ignore it; history kept in the store has none.
    """

    nick: str
    user: str
    host: str
    account: str | None = None
    realname: str = ""  # IRC's "real name" (USER, WHOIS); the nickname for other wires

    @property
    def mask(self) -> str:
        return f"{self.nick}!{self.user}@{self.host}"


# An event's source is how one wire shows who did it, not what happened: events that
# differ only in it are equal (history read back from the store has none).
def _source():
    return field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class RoomMessage:
    """A line said in a room; C{kind} is C{"message"}, C{"action"} (C{/me}) or
    C{"notice"} (IRC's NOTICE: a message that must never be answered automatically).

    C{color} is the sender's chosen colour (C{"#RRGGBB"}) if any; C{history} marks a
    message replayed from the store rather than said just now.
    """

    kind: str
    room: str
    sender: str
    text: str
    ts: float
    id: int
    color: str | None = None
    history: bool = False
    source: Source | None = _source()


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """A private message; C{outgoing} marks the copy shown to its sender.

    C{offline} marks one kept for its registered recipient while they were away and
    delivered when they logged in. C{notice}: sent as IRC's NOTICE. C{action}: an
    action (IRC's CTCP ACTION, C{/me}), which C{text} describes without the sender.
    """

    sender: str
    to: str
    text: str
    ts: float
    id: int
    outgoing: bool = False
    color: str | None = None
    offline: bool = False
    notice: bool = False
    source: Source | None = _source()
    action: bool = False


@dataclass(frozen=True, slots=True)
class Joined:
    room: str
    nick: str
    ts: float
    admin: bool = False  # an admin: IRC shows them as a channel operator
    source: Source | None = _source()


@dataclass(frozen=True, slots=True)
class Left:
    room: str
    nick: str
    reason: str
    ts: float
    source: Source | None = _source()


@dataclass(frozen=True, slots=True)
class Kicked:
    """An admin put C{nick} out of one room (IRC's KICK); they stay connected."""

    room: str
    nick: str
    by: str
    reason: str
    ts: float
    source: Source | None = _source()  # the admin's; None for the console


@dataclass(frozen=True, slots=True)
class Quit:
    """Someone disconnected: one event for every room they were in, so that whoever
    shares several of them hears it once (IRC's QUIT)."""

    nick: str
    reason: str
    rooms: tuple[str, ...]  # the rooms they were in (wires may not show them all)
    ts: float
    source: Source | None = _source()


@dataclass(frozen=True, slots=True)
class Renamed:
    old: str
    new: str
    ts: float
    source: Source | None = _source()  # as it was before the rename


@dataclass(frozen=True, slots=True)
class Away:
    """Someone is away (C{text} says why) or back (C{text} None): for the users who
    share a room with them, on wires that show it (IRC's away-notify)."""

    nick: str
    text: str | None
    ts: float
    source: Source | None = _source()


@dataclass(frozen=True, slots=True)
class AdminChanged:
    """C{by} made C{nick} an admin (C{admin}) or took the rights away: for room C{room},
    one of theirs (an admin is every room's operator: IRC's MODE +o)."""

    room: str
    nick: str
    admin: bool
    by: str
    ts: float
    source: Source | None = _source()  # of the admin who did it


@dataclass(frozen=True, slots=True)
class RealnameChanged:
    """Someone's "real name" (IRC's USER and SETNAME) is now C{realname}: for the users
    who share a room with them and for themselves, on wires that show it."""

    nick: str
    realname: str
    ts: float
    source: Source | None = _source()


@dataclass(frozen=True, slots=True)
class Notice:
    """A message from the server itself, optionally about one room."""

    text: str
    ts: float
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Welcome:
    """Sent once a connection has its first nickname."""

    nick: str
    text: str
    ts: float


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """The connection is now logged in to the account C{nick} (after /login or /register)."""

    nick: str
    admin: bool
    color: str | None
    text: str
    ts: float


@dataclass(frozen=True, slots=True)
class Topic:
    """A room's topic: shown on join, on /topic, and to the room when an admin sets it."""

    room: str
    topic: str | None  # None: the room has none
    by: str
    setAt: float
    ts: float
    source: Source | None = _source()  # who set it just now (a change, not a lookup)


@dataclass(frozen=True, slots=True)
class HistoryMark:
    """Brackets replayed messages: C{end} False before them, True after."""

    room: str
    count: int
    end: bool
    ts: float


@dataclass(frozen=True, slots=True)
class Error:
    """A request failed; C{code} is a stable machine-readable name."""

    code: str
    text: str
    ts: float


@dataclass(frozen=True, slots=True)
class WhoReply:
    room: str
    nicks: tuple[str, ...]
    ts: float
    admins: frozenset[str] = frozenset()  # which of C{nicks} are admins


@dataclass(frozen=True, slots=True)
class RoomsReply:
    rooms: tuple[tuple[str, int], ...]
    ts: float


@dataclass(frozen=True, slots=True)
class TimeReply:
    iso: str
    ts: float


@dataclass(frozen=True, slots=True)
class HelpEntry:
    name: str
    usage: str
    summary: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HelpReply:
    entries: tuple[HelpEntry, ...]
    ts: float


Event = (
    RoomMessage
    | PrivateMessage
    | Joined
    | Left
    | Kicked
    | Quit
    | Renamed
    | Away
    | RealnameChanged
    | AdminChanged
    | Notice
    | Welcome
    | LoggedIn
    | Topic
    | HistoryMark
    | Error
    | WhoReply
    | RoomsReply
    | TimeReply
    | HelpReply
)
