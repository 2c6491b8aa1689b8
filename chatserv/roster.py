"""Who is in which room on the other nodes of a cluster, as their events say.

State follows the bus: every node publishes its users' joins, parts, kicks, quits,
renames and operator changes anyway (their rooms' members on other nodes see them), so
each node keeps, from those events, the members its rooms have elsewhere. A node that
joins the cluster asks for everyone's members once (L{MembersWanted}); each answers
with its own (L{Members}). A node that stops, or whose heartbeat ends, is forgotten
(L{forget}), and its users leave the rooms they were in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from twisted.internet.task import LoopingCall

from chatserv import codec
from chatserv import events as ev
from chatserv.names import fold


@dataclass(frozen=True, slots=True)
class MembersWanted:
    """A control message: node C{node} (new, or back after an outage) wants to know who
    is where; every other node answers with L{Members}."""

    node: str


@dataclass(frozen=True, slots=True)
class Members:
    """A control message: everyone on node C{node}, as C{(room, nick, admin)}s, and who
    each of them is (C{users}: their IRC source and away text, for WHO and WHOIS)."""

    node: str
    members: tuple[tuple[str, str, bool], ...]
    users: tuple[tuple[ev.Source, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class NodeGone:
    """A control message: node C{node} stopped; forget its users."""

    node: str


@dataclass(frozen=True, slots=True)
class Identified:
    """A control message: a user of node C{node} logged in to an account (or registered
    one, or let one go by renaming): who they are now, and whether they are an admin."""

    node: str
    source: ev.Source
    admin: bool


@dataclass(frozen=True, slots=True)
class Profile:
    """What WHO, WHOIS and the console show of one user, on this node or another."""

    nick: str
    source: ev.Source
    away: str | None
    admin: bool
    rooms: tuple[str, ...]  # the names of the rooms they are in
    node: str | None = None  # None: this node
    connectedAt: float | None = None  # None: not known here


@dataclass(frozen=True, slots=True)
class ProfileWanted:
    """A control message: node C{asker} wants to know who user C{key} is (for WHOIS and
    WHO: what the roster does not keep, such as when they connected, or anything of
    someone in no room); the node where they are answers with L{ProfileFound}."""

    key: str
    asker: str
    request: int


@dataclass(frozen=True, slots=True)
class ProfileFound:
    """A control message: the answer to node C{asker}'s L{ProfileWanted} C{request}
    (C{profile.node} is None: the node that answered)."""

    request: int
    asker: str
    profile: Profile


codec.register(MembersWanted, Members, NodeGone, Identified, Profile, ProfileWanted, ProfileFound)


@dataclass(slots=True)
class Member:
    """A user on another node, as its events tell."""

    nick: str
    node: str
    admin: bool
    source: ev.Source | None = None
    away: str | None = None
    rooms: dict[str, None] = field(default_factory=dict)  # room keys, in order joined


class RemoteRoster:
    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, Member]] = {}  # room key -> user key -> member
        self.users: dict[str, Member] = {}  # user key -> member
        self.names: dict[str, str] = {}  # room key -> the room's name

    def apply(self, event: object, rooms: tuple[str, ...], node: str) -> None:
        """Follow one event published by node C{node} for C{rooms}."""
        kind = type(event)
        if kind is ev.RoomMessage:  # the common case: nothing changes
            return
        if kind is ev.Joined:
            self._add(event.room, event.nick, node, event.admin, event.source)
        elif kind in (ev.Left, ev.Kicked):
            self._drop(fold(event.room), fold(event.nick))
        elif kind is ev.Quit:
            for key in rooms:
                self._drop(key, fold(event.nick))
        elif kind is ev.Renamed:
            self._rename(event.old, event.new, event.source)
        elif kind is Identified:
            member = self.users.get(fold(event.source.nick))
            if member is not None and member.node == node:
                member.source, member.admin = event.source, event.admin
        elif kind in (ev.AdminChanged, ev.Away, ev.RealnameChanged):
            member = self.users.get(fold(event.nick))
            if member is None:
                return
            if kind is ev.AdminChanged:
                member.admin = event.admin
            elif kind is ev.Away:
                member.away = event.text
            elif kind is ev.RealnameChanged and member.source is not None:
                member.source = dataclasses.replace(member.source, realname=event.realname)

    def replace(self, node: str, members: Members) -> list:
        """Everyone on C{node} is C{members} (what it says when it asks, or answers, who
        is where); the C{(room key, nick)}s it no longer has."""
        before = set(self.forget(node))
        who = {fold(source.nick): (source, away) for source, away in members.users}
        for room, nick, admin in members.members:
            source, away = who.get(fold(nick), (None, None))
            self._add(room, nick, node, admin, source).away = away
            before.discard((fold(room), nick))
        return sorted(before)

    def forget(self, node: str) -> list[tuple[str, str]]:
        """Forget node C{node}'s users: their C{(room key, nick)}s."""
        gone = []
        for key, members in list(self.rooms.items()):
            for userKey, member in list(members.items()):
                if member.node == node:
                    del members[userKey]
                    gone.append((key, member.nick))
            if not members:
                del self.rooms[key]
        self.users = {k: m for k, m in self.users.items() if m.node != node}
        return gone

    def nodes(self) -> set[str]:
        return {m.node for m in self.users.values()}

    def members(self, roomKey: str) -> list[Member]:
        return list(self.rooms.get(roomKey, {}).values())

    def profile(self, userKey: str) -> Profile | None:
        """What is known here of another node's user C{userKey} (in a room)."""
        member = self.users.get(userKey)
        if member is None:
            return None
        source = member.source or ev.Source(member.nick, member.nick, "*")
        rooms = tuple(self.names.get(key, key) for key in member.rooms)
        return Profile(member.nick, source, member.away, member.admin, rooms, member.node)

    def dropUser(self, userKey: str) -> None:
        """Forget another node's user C{userKey}, saying nothing (the name is held
        elsewhere now)."""
        member = self.users.get(userKey)
        if member is not None:
            for key in list(member.rooms):
                self._drop(key, userKey)

    def _add(self, room: str, nick: str, node: str, admin: bool, source) -> Member:
        roomKey, userKey = fold(room), fold(nick)
        self.names[roomKey] = room
        member = self.users.get(userKey)
        if member is None or member.node != node:  # (the name moved: a new user)
            self.dropUser(userKey)
            member = self.users[userKey] = Member(nick, node, admin)
        member.nick, member.admin = nick, admin
        if source is not None:
            member.source = source
        member.rooms[roomKey] = None
        self.rooms.setdefault(roomKey, {})[userKey] = member
        return member

    def _rename(self, old: str, new: str, before: ev.Source | None) -> None:
        oldKey, newKey = fold(old), fold(new)
        member = self.users.pop(oldKey, None)
        if member is None:
            return
        member.nick = new
        source = before or member.source  # (the event's is the newer: an account let go)
        if source is not None:
            user = new if source.user == source.nick else source.user
            member.source = dataclasses.replace(source, nick=new, user=user)
        self.users[newKey] = member
        for key in member.rooms:
            members = self.rooms[key]
            members.pop(oldKey, None)
            members[newKey] = member

    def _drop(self, roomKey: str, userKey: str) -> None:
        members = self.rooms.get(roomKey)
        if members is not None:
            member = members.pop(userKey, None)
            if not members:
                del self.rooms[roomKey]
            if member is not None:
                member.rooms.pop(roomKey, None)
                if not member.rooms:
                    self.users.pop(userKey, None)


class ClusterPresence:
    """A node's knowledge of the other nodes' users, kept for its L{ChatService}.

    C{directory} tells which nodes live (L{IDirectory.alive}); every C{every} seconds the
    nodes that have users here are checked, and one that is gone is forgotten: its users
    quit the rooms this node's users are in, with the reason saying why.
    """

    def __init__(self, service, directory, clock, every: float) -> None:
        self.service = service
        self.directory = directory
        self.remote = RemoteRoster()
        self._checker = LoopingCall(self._checkNodes)
        self._checker.clock = clock
        self._every = every

    def start(self) -> None:
        self._checker.start(self._every, now=False)

    def stop(self) -> None:
        if self._checker.running:
            self._checker.stop()

    def askEveryone(self) -> None:
        """Ask every node who is where (this node is new, or back after an outage), and
        say who is here: what the others knew of an earlier run of this node, or from
        before the outage, is replaced."""
        self.service.bus.publish(self._here())
        self.service.bus.publish(MembersWanted(self.directory.node))

    def follow(self, event: object, rooms: tuple[str, ...], node: str) -> None:
        """An event from node C{node}."""
        kind = type(event)
        if kind is MembersWanted:
            self.service.bus.publish(self._here())
        elif kind is Members:
            self._quit(self.remote.replace(event.node, event), event.node, "is gone")
        elif kind is NodeGone:
            self.nodeLost(event.node, "left the cluster")
        else:
            self.remote.apply(event, rooms, node)

    def _here(self) -> Members:
        members, users = self.service.localMembers()
        return Members(self.directory.node, members, users)

    def nodeLost(self, node: str, why: str) -> None:
        self._quit(self.remote.forget(node), node, why)

    def _quit(self, gone: list[tuple[str, str]], node: str, why: str) -> None:
        """Tell this node's users that C{gone} (room key, nick) left, with C{why}."""
        byNick: dict[str, list[str]] = {}
        for roomKey, nick in gone:
            byNick.setdefault(nick, []).append(roomKey)
        now = self.service.now()
        for nick, keys in byNick.items():
            names = tuple(self.remote.names.get(k, k) for k in keys)
            self.service.deliverHere(ev.Quit(nick, f"node {node} {why}", names, now), keys)

    def _checkNodes(self) -> None:
        for node in self.remote.nodes():
            d = self.directory.alive(node)
            d.addCallback(lambda alive, node=node: alive or self.nodeLost(node, "is gone"))
            d.addErrback(lambda failure: None)  # unknown while Redis is away: keep them
