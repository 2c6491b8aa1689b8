"""Who is in which room on the other nodes of a cluster, as their events say.

State follows the bus: every node publishes its users' joins, parts, kicks, quits,
renames and operator changes anyway (their rooms' members on other nodes see them), so
each node keeps, from those events, the members its rooms have elsewhere. A node that
joins the cluster asks for everyone's members once (L{MembersWanted}); each answers
with its own (L{Members}). A node that stops, or whose heartbeat ends, is forgotten
(L{forget}), and its users leave the rooms they were in.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """A control message: everyone on node C{node}, as C{(room, nick, admin)}s."""

    node: str
    members: tuple[tuple[str, str, bool], ...]


@dataclass(frozen=True, slots=True)
class NodeGone:
    """A control message: node C{node} stopped; forget its users."""

    node: str


codec.register(MembersWanted, Members, NodeGone)


@dataclass(slots=True)
class Member:
    nick: str
    node: str
    admin: bool


class RemoteRoster:
    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, Member]] = {}  # room key -> user key -> member
        self.names: dict[str, str] = {}  # room key -> the room's name

    def apply(self, event: object, rooms: tuple[str, ...], node: str) -> None:
        """Follow one event published by node C{node} for C{rooms}."""
        kind = type(event)
        if kind is ev.Joined:
            key = fold(event.room)
            self.names[key] = event.room
            self.rooms.setdefault(key, {})[fold(event.nick)] = Member(event.nick, node, event.admin)
        elif kind in (ev.Left, ev.Kicked):
            self._drop(fold(event.room), fold(event.nick))
        elif kind is ev.Quit:
            for key in rooms:
                self._drop(key, fold(event.nick))
        elif kind is ev.Renamed:
            old, new = fold(event.old), fold(event.new)
            for key in rooms:
                member = self.rooms.get(key, {}).pop(old, None)
                if member is not None:
                    member.nick = event.new
                    self.rooms[key][new] = member
        elif kind is ev.AdminChanged:
            member = self.rooms.get(fold(event.room), {}).get(fold(event.nick))
            if member is not None:
                member.admin = event.admin

    def replace(self, node: str, members: tuple[tuple[str, str, bool], ...]) -> list:
        """Everyone on C{node} is C{members} (what it says when it asks, or answers, who
        is where); the C{(room key, nick)}s it no longer has."""
        before = set(self.forget(node))
        for room, nick, admin in members:
            key = fold(room)
            self.names[key] = room
            self.rooms.setdefault(key, {})[fold(nick)] = Member(nick, node, admin)
            before.discard((key, nick))
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
        return gone

    def nodes(self) -> set[str]:
        return {m.node for members in self.rooms.values() for m in members.values()}

    def members(self, roomKey: str) -> list[Member]:
        return list(self.rooms.get(roomKey, {}).values())

    def _drop(self, roomKey: str, userKey: str) -> None:
        members = self.rooms.get(roomKey)
        if members is not None:
            members.pop(userKey, None)
            if not members:
                del self.rooms[roomKey]


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
        me = self.directory.node
        self.service.bus.publish(Members(me, self.service.localMembers()))
        self.service.bus.publish(MembersWanted(me))

    def follow(self, event: object, rooms: tuple[str, ...], node: str) -> None:
        """An event from node C{node}."""
        kind = type(event)
        if kind is MembersWanted:
            self.service.bus.publish(Members(self.directory.node, self.service.localMembers()))
        elif kind is Members:
            self._quit(self.remote.replace(event.node, event.members), event.node, "is gone")
        elif kind is NodeGone:
            self.nodeLost(event.node, "left the cluster")
        else:
            self.remote.apply(event, rooms, node)

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
