"""Who takes part: a connected user, a room, and the console (the admin's SSH shell).

Plain state, owned and changed by L{chatserv.service.ChatService}; the rules are there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatserv import events as ev
from chatserv.names import fold
from chatserv.text import sanitize

if TYPE_CHECKING:
    from twisted.internet import defer

    from chatserv.interfaces import IChatClient
    from chatserv.store import Account


class User:
    """One connected session. It has a nickname once it has chosen one."""

    __slots__ = (
        "client",
        "nick",
        "key",
        "rooms",
        "connectedAt",
        "account",
        "color",
        "seen",
        "formerKeys",
        "autojoin",
        "joinPending",
        "ident",
        "realname",
        "away",
        "_source",
    )

    def __init__(self, client: IChatClient, connectedAt: float, autojoin: bool = True) -> None:
        self.client = client
        # A first nickname joins the default room (line and web clients); IRC clients
        # join the channels they ask for, and none by default.
        self.autojoin = autojoin
        # Chose a first nickname this reactor turn and is to join the default room unless
        # the client, in what it sent with the nickname, asks for another (see setNick).
        self.joinPending = False
        self.ident: str | None = None  # the user part of IRC's nick!user@host, if not nick
        self.realname: str | None = None  # IRC's "real name", if not the nickname
        self.away: str | None = None  # why they are away (IRC's AWAY), if they are
        self._source: ev.Source | None = None
        self.nick: str | None = None
        self.key: str | None = None  # fold(nick): the name the service knows it by
        # Every room joined, by key, in the order joined. Which of them a wire's plain
        # lines go to is that wire's business (Session.room), not the domain's.
        self.rooms: dict[str, Room] = {}
        self.connectedAt = connectedAt
        self.account: Account | None = None  # set once logged in (or registered)
        self.color: str | None = None  # "#rrggbb", shown by clients that can
        # The newest message id of each room this connection left, or that its client said
        # it had seen (a since): coming back replays only what it missed. Made when first
        # needed.
        self.seen: dict[str, int] | None = None
        # Nicknames this connection went by before, newest last: a ban or mute of one
        # still finds the person who renamed.
        self.formerKeys: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        """The peer's IP address, which login throttling and bans go by."""
        return getattr(self.client, "host", None) or self.client.address

    def source(self, hostmasks: Callable[[str], str]) -> ev.Source:
        """Who this user is in an IRC prefix; made again only when it changes."""
        source = self._source
        account = self.account.nick if self.account is not None else None
        nick = self.nick or "*"
        if (
            source is None
            or source.nick != nick
            or source.account != account
            or source.user != (self.ident or nick)  # IRC's USER came after (with a realname)
            or source.realname != (self.realname or nick)
        ):
            realname = self.realname or nick
            source = self._source = ev.Source(
                nick, self.ident or nick, hostmasks(self.host), account, realname
            )
        return source

    def __repr__(self) -> str:
        return f"<User {self.nick!r} {self.client.address}>"


REALNAME_LENGTH = 100  # characters of a "real name": WHOIS and WHO show it on one line


def cleanRealname(text: str) -> str:
    """A "real name" as others may see it: IRC formatting kept, controls gone, bounded."""
    return sanitize(text[:REALNAME_LENGTH], formatting=True).strip()


class Console:
    """The admin console (the SSH manhole): an actor with every right."""

    nick = "console"  # what rooms and logs call it

    def __repr__(self) -> str:
        return "<Console>"


CONSOLE = Console()
# Who does a privileged thing: a user (whose rights the service checks) or the console.
Actor = User | Console


class Room:
    __slots__ = ("key", "name", "members", "topic", "topicBy", "topicTs", "recent", "loading")

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = fold(name)
        self.members: dict[str, User] = {}  # by user key, in order of joining
        # A room with a topic is permanent: it stays listed when empty, across restarts.
        self.topic: str | None = None
        self.topicBy = ""
        self.topicTs = 0.0
        # The newest messages, replayed to each joiner without asking the store; None
        # until loaded, which happens when the room is first joined.
        self.recent: deque[ev.RoomMessage] | None = None
        self.loading: list[defer.Deferred[None]] | None = None  # joiners waiting for it

    def __repr__(self) -> str:
        return f"<Room #{self.name} ({len(self.members)})>"
