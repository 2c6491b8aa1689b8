"""Events as IRC messages.

What an IRC client is sent depends on the capabilities it negotiated (server-time adds
a C{time} tag, extended-join a JOIN's account, ...), so there is one L{IrcWire} per
distinct set of the capabilities that change rendering, shared by every connection that
negotiated that set: a room's fan-out is still rendered once per format, not once per
recipient. L{IrcWire.renderTo} renders replies to one connection, which IRC addresses
to the recipient's nickname (C{:server 353 alice = #lobby :...}).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from chatserv import events as ev
from chatserv.interfaces import IWire
from chatserv.names import fold
from chatserv.protocols.ircmessage import MAX_BODY, line, serverTime, split
from chatserv.render import dateTime

# The capabilities that change what is rendered; the others change only behaviour.
RENDERING = frozenset(
    {
        "server-time",
        "message-tags",
        "account-tag",
        "extended-join",
        "echo-message",
        "batch",
        "away-notify",
        "multi-prefix",
        "setname",
    }
)

_VERB = {"message": "PRIVMSG", "action": "PRIVMSG", "notice": "NOTICE"}
# Names per RPL_NAMREPLY line: well under 512 bytes with 32-character nicknames.
_NAMES_PER_LINE = 12


def channel(room: str) -> str:
    return "#" + room


def batchId(room: str) -> str:
    """The id of a room's history batch: made from the room, so that the start and the
    end of one replay (two events) and the messages between agree on it, whatever case
    the room's name had when each was said. A connection replays one room at once."""
    return f"h{zlib.crc32(fold(room).encode('utf-8')):08x}"


@implementer(IWire)
class IrcWire:
    """Renders events for IRC connections with one set of capabilities."""

    def __init__(self, caps: frozenset[str], server: str) -> None:
        self.caps = caps
        self.server = server
        self._time = "server-time" in caps
        self._tags = "message-tags" in caps
        self._account = "account-tag" in caps
        self._extendedJoin = "extended-join" in caps
        self._echo = "echo-message" in caps
        self._batch = "batch" in caps
        self._awayNotify = "away-notify" in caps
        self._setname = "setname" in caps

    # -- IWire -------------------------------------------------------------------------

    def render(self, event: ev.Event) -> bytes:
        """A fan-out: the same bytes for everyone on this wire."""
        fanout = _FANOUT.get(type(event))
        if fanout is None:
            return self.renderTo(event, None)
        return fanout(self, event).encode("utf-8")

    def renderTo(self, event: ev.Event, nick: str | None) -> bytes:
        """A reply to one connection, addressed to C{nick}."""
        reply = _REPLIES.get(type(event))
        if reply is None:
            return self.render(event)
        return reply(self, event, nick or "*").encode("utf-8")

    # -- pieces ------------------------------------------------------------------------

    def tags(self, event: Any, msgid: str | None = None, batch: str | None = None) -> dict:
        tags: dict[str, str] = {}
        if batch is not None:
            tags["batch"] = batch
        if self._time:
            tags["time"] = serverTime(event.ts)
        if self._tags and msgid is not None:
            tags["msgid"] = msgid
        source = getattr(event, "source", None)
        if self._account and source is not None and source.account:
            tags["account"] = source.account
        return tags

    def numeric(self, code: str, nick: str, *params: str) -> str:
        return line(self.server, code, nick, *params)

    def notice(self, target: str, text: str) -> str:
        """A server notice, in as many messages as its length needs (a broadcast, the
        room list)."""
        overhead = len(f":{self.server} NOTICE {target} :".encode())
        pieces = split(text, MAX_BODY - overhead)
        return "".join(line(self.server, "NOTICE", target, piece) for piece in pieces)

    def _said(
        self,
        event: Any,
        mask: str,
        verb: str,
        target: str,
        text: str,
        action: bool,
        batch: str | None = None,
    ) -> str:
        """PRIVMSG or NOTICE, in as many messages as IRC's line limit needs."""
        # What each message spends besides the text: ":mask VERB target :" and CTCP's.
        overhead = len(f":{mask} {verb} {target} :".encode()) + (9 if action else 0)
        pieces = split(text, MAX_BODY - overhead)
        out = []
        for n, piece in enumerate(pieces):
            msgid = str(event.id) if n == 0 else f"{event.id}.{n + 1}"
            body = f"\x01ACTION {piece}\x01" if action else piece
            out.append(line(mask, verb, target, body, tags=self.tags(event, msgid, batch)))
        return "".join(out)

    # -- renderings ----------------------------------------------------------------------

    def roomMessage(self, e: ev.RoomMessage, batch: str | None = None) -> str:
        text = e.text
        if e.history and not self._time:
            text = f"[{dateTime(e.ts)}] {text}"  # said earlier, maybe days ago
        return self._said(
            e,
            _mask(e.source, e.sender),
            _VERB[e.kind],
            channel(e.room),
            text,
            e.kind == "action",
            batch,
        )

    def privateMessage(self, e: ev.PrivateMessage, nick: str | None = None) -> str:
        if e.outgoing:
            if e.offline:
                return self.notice(
                    nick or e.sender, f"{e.to} is offline: the message is kept for their next login"
                )
            if not self._echo:
                return ""  # an IRC client shows what its user sent
        text = e.text
        if e.offline and not self._time:
            text = f"[{dateTime(e.ts)}] {text}"
        verb = "NOTICE" if e.notice else "PRIVMSG"
        return self._said(e, _mask(e.source, e.sender), verb, e.to, text, e.action)

    def joined(self, e: ev.Joined) -> str:
        mask = _mask(e.source, e.nick)
        if self._extendedJoin:
            account = e.source.account if e.source is not None and e.source.account else "*"
            realname = e.source.realname if e.source is not None else e.nick
            out = line(mask, "JOIN", channel(e.room), account, realname, tags=self.tags(e))
        else:
            out = line(mask, "JOIN", channel(e.room), tags=self.tags(e))
        if e.admin:  # chatserv's admins are every channel's operators
            out += line(self.server, "MODE", channel(e.room), "+o", e.nick, tags=self.tags(e))
        return out

    def names(self, e: ev.WhoReply, nick: str) -> str:
        shown = [("@" if n in e.admins else "") + n for n in e.nicks]
        out = [
            self.numeric(
                "353", nick, "=", channel(e.room), " ".join(shown[i : i + _NAMES_PER_LINE])
            )
            for i in range(0, len(shown), _NAMES_PER_LINE)
        ]
        out.append(self.numeric("366", nick, channel(e.room), "End of /NAMES list"))
        return "".join(out)

    def topic(self, e: ev.Topic, nick: str) -> str:
        if e.topic is None:
            return self.numeric("331", nick, channel(e.room), "No topic is set")
        return self.numeric("332", nick, channel(e.room), e.topic) + self.numeric(
            "333", nick, channel(e.room), e.by or self.server, str(int(e.setAt))
        )

    def historyMark(self, e: ev.HistoryMark, nick: str) -> str:
        if self._batch:
            if e.end:
                return line(self.server, "BATCH", "-" + batchId(e.room))
            return line(self.server, "BATCH", "+" + batchId(e.room), "chathistory", channel(e.room))
        if e.end:
            return self.notice(channel(e.room), "--- end of history ---")
        s = "s" if e.count != 1 else ""
        return self.notice(channel(e.room), f"--- history: the last {e.count} message{s} ---")

    def replayed(self, e: ev.RoomMessage, nick: str) -> str:
        """A room message sent to one connection: a history replay."""
        return self.roomMessage(e, batchId(e.room) if self._batch and e.history else None)

    def helpReply(self, e: ev.HelpReply, nick: str) -> str:
        out = [self.numeric("704", nick, "index", "chatserv commands: /quote COMMAND ARGS")]
        for entry in e.entries:
            out.append(self.numeric("705", nick, "index", f"{entry.usage}  {entry.summary}"))
        out.append(self.numeric("706", nick, "index", "End of /HELP"))
        return "".join(out)


def _mask(source: ev.Source | None, nick: str) -> str:
    # A message without a source (one from the store) names its sender alone.
    return source.mask if source is not None else nick


# Fan-outs: rendered once per wire.
_FANOUT: dict[type, Callable[[IrcWire, Any], str]] = {
    ev.RoomMessage: IrcWire.roomMessage,
    ev.PrivateMessage: IrcWire.privateMessage,
    ev.Joined: IrcWire.joined,
    ev.Left: lambda w, e: line(
        _mask(e.source, e.nick), "PART", channel(e.room), e.reason, tags=w.tags(e)
    ),
    ev.Kicked: lambda w, e: line(
        e.source.mask if e.source is not None else w.server,
        "KICK",
        channel(e.room),
        e.nick,
        e.reason or e.by,
        tags=w.tags(e),
    ),
    ev.Quit: lambda w, e: line(_mask(e.source, e.nick), "QUIT", e.reason, tags=w.tags(e)),
    ev.Renamed: lambda w, e: line(_mask(e.source, e.old), "NICK", e.new, tags=w.tags(e)),
    ev.Away: lambda w, e: (
        ""
        if not w._awayNotify
        else line(_mask(e.source, e.nick), "AWAY", *((e.text,) if e.text else ()), tags=w.tags(e))
    ),
    ev.AdminChanged: lambda w, e: line(
        e.source.mask if e.source is not None else w.server,
        "MODE",
        channel(e.room),
        "+o" if e.admin else "-o",
        e.nick,
        tags=w.tags(e),
    ),
    ev.RealnameChanged: lambda w, e: (
        line(_mask(e.source, e.nick), "SETNAME", e.realname, tags=w.tags(e)) if w._setname else ""
    ),
    ev.Topic: lambda w, e: line(
        e.source.mask if e.source is not None else w.server,
        "TOPIC",
        channel(e.room),
        e.topic or "",
        tags=w.tags(e),
    ),
    ev.Notice: lambda w, e: w.notice(channel(e.room) if e.room else "*", e.text),
}

# Replies to one connection.
_REPLIES: dict[type, Callable[[IrcWire, Any, str], str]] = {
    ev.RoomMessage: IrcWire.replayed,
    ev.PrivateMessage: IrcWire.privateMessage,
    ev.Topic: IrcWire.topic,
    ev.WhoReply: IrcWire.names,
    ev.HistoryMark: IrcWire.historyMark,
    ev.HelpReply: IrcWire.helpReply,
    ev.Notice: lambda w, e, nick: w.notice(channel(e.room) if e.room else nick, e.text),
    ev.Error: lambda w, e, nick: w.notice(nick, f"error: {e.text}"),
    ev.Welcome: lambda w, e, nick: "",  # the IRC listener sends the welcome burst itself
    ev.LoggedIn: lambda w, e, nick: w.notice(nick, e.text),
    ev.TimeReply: lambda w, e, nick: w.numeric("391", nick, w.server, e.iso),
    ev.RoomsReply: lambda w, e, nick: w.notice(
        nick, "rooms: " + ", ".join(f"{channel(n)} ({c})" for n, c in e.rooms)
    ),
}


class IrcWires:
    """One L{IrcWire} per set of rendering capabilities, made when first needed."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._wires: dict[frozenset[str], IrcWire] = {}

    def forCaps(self, caps: set[str] | frozenset[str]) -> IrcWire:
        key = frozenset(caps) & RENDERING
        wire = self._wires.get(key)
        if wire is None:
            wire = self._wires[key] = IrcWire(key, self.server)
        return wire
