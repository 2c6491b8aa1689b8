"""Who is where: the queries behind /who, /rooms, NAMES, WHO, WHOIS, LIST, LUSERS and
the console's users() and rooms(), over this node's users and rooms and, in a cluster,
what this node knows of the others' (L{chatserv.roster}).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from chatserv import events as ev
from chatserv.errors import ChatError, NoSuchRoom
from chatserv.names import checkNick, fold
from chatserv.roster import Profile, ProfileWanted

if TYPE_CHECKING:
    from chatserv.interfaces import IDirectory
    from chatserv.people import Room, User
    from chatserv.roster import ClusterPresence


class Lookups:
    """A part of L{chatserv.service.ChatService}: it reads the service's C{users},
    C{rooms}, C{presence} and C{directory}, and changes nothing."""

    users: dict[str, User]
    rooms: dict[str, Room]
    presence: ClusterPresence | None
    directory: IDirectory | None

    def who(self, user: User, name: str) -> ev.WhoReply:
        """Who is in room C{name} (on every node of a cluster)."""
        name = self._roomName(name)
        key = fold(name)
        room = self.rooms.get(key)
        remote = self._remoteMembers(key)
        if room is None and not remote:
            raise NoSuchRoom(f"there is no room #{name}")
        members = room.members.values() if room is not None else ()
        nicks = tuple(u.nick for u in members) + tuple(m.nick for m in remote)
        admins = frozenset(u.nick for u in members if u.account is not None and self.isAdmin(u))
        admins |= {m.nick for m in remote if m.admin}
        return ev.WhoReply(self._shownName(key, name), nicks, self.now(), admins)

    def roomList(self) -> ev.RoomsReply:
        """Every room and how many are in it (on every node of a cluster)."""
        counts = {key: (room.name, len(room.members)) for key, room in self.rooms.items()}
        if self.presence is not None:
            remote = self.presence.remote
            for key, members in remote.rooms.items():
                name, count = counts.get(key, (remote.names.get(key, key), 0))
                counts[key] = (name, count + len(members))
        rooms = tuple(counts[key] for key in sorted(counts))
        return ev.RoomsReply(rooms, self.now())

    def census(self) -> tuple[int, int, int]:
        """Named users, nodes and rooms: on every node of a cluster, as far as this node
        knows (another node's users who are in no room are not known here)."""
        users, nodes, rooms = len(self.users), 1, len(self.rooms)
        if self.presence is not None:
            remote = self.presence.remote
            users += len(remote.users)
            nodes += len(remote.nodes() - {self.directory.node})
            rooms += len(remote.rooms.keys() - self.rooms.keys())
        return users, nodes, rooms

    def localMembers(self) -> tuple[tuple, tuple]:
        """Who is in which room on this node, as C{(room, nick, admin)}s, and who each
        of them is, as C{(source, away)}s (what L{roster.Members} tells the others)."""
        members = tuple(
            (room.name, u.nick, self.isAdmin(u))
            for room in self.rooms.values()
            for u in room.members.values()
        )
        users = tuple((self.sourceOf(u), u.away) for u in self.users.values() if u.rooms)
        return members, users

    def profileOf(self, user: User) -> Profile:
        """What WHO and WHOIS show of this node's C{user}."""
        rooms = tuple(r.name for r in user.rooms.values())
        admin = self.isAdmin(user)
        return Profile(
            user.nick, self.sourceOf(user), user.away, admin, rooms, None, user.connectedAt
        )

    def profile(self, nick: str) -> Profile | None:
        """Who C{nick} is, on this node or (in a room) on another; None if not known."""
        key = fold(nick)
        user = self.users.get(key)
        if user is not None:
            return self.profileOf(user)
        return self.presence.remote.profile(key) if self.presence is not None else None

    async def findProfile(self, nick: str) -> Profile | None:
        """Who C{nick} is, wherever they are connected: in a cluster, another node's
        user is asked of their node (which knows more than the roster here: when they
        connected, and anything of someone in no room); if it does not answer in time,
        what is known here. None if no one has the name."""
        user = self.users.get(fold(nick))
        if user is not None or self.directory is None:
            return self.profile(nick)
        try:
            key = fold(checkNick(nick))
        except ChatError:
            return None
        holder, found = await self.askHolder(key, lambda node, n: ProfileWanted(key, node, n))
        if found is not None:
            return dataclasses.replace(found, node=holder)
        if holder is None:  # on no other node: here (arrived meanwhile), or nowhere
            user = self.users.get(key)
            return self.profileOf(user) if user is not None else None
        # No answer in time: what the roster knows, or at least where they are.
        unknown = Profile(nick, ev.Source(nick, nick, "*"), None, False, (), holder)
        return self.profile(nick) or unknown

    def roomProfiles(self, name: str) -> tuple[str, list[Profile]]:
        """Room C{name}'s shown name and its members on every node (none if no such room)."""
        key = fold(name)
        room = self.rooms.get(key)
        found = [self.profileOf(u) for u in room.members.values()] if room is not None else []
        if self.presence is not None:
            remote = self.presence.remote
            found += [remote.profile(fold(m.nick)) for m in remote.members(key)]
        return self._shownName(key, name), found

    def _shownName(self, key: str, name: str) -> str:
        """Room C{key}'s name as its creator spelled it (here, or on another node)."""
        room = self.rooms.get(key)
        if room is not None:
            return room.name
        return self.presence.remote.names.get(key, name) if self.presence is not None else name

    def roomSummary(self) -> list[tuple[str, int]]:
        """Every room and its member count, by name."""
        return list(self.roomList().rooms)

    def userSummary(self, room: str | None = None) -> list[dict]:
        """The named users (in C{room}, if given), with where they come from: on every
        node of a cluster, those of other nodes (in a room) with C{node} set and no
        address or connection time (those stay on their node)."""
        key = fold(self._roomName(room)) if room is not None else None
        if key is None:
            users = list(self.users.values())
        else:
            found = self.rooms.get(key)
            if found is None and not self._remoteMembers(key):
                raise NoSuchRoom(f"there is no room #{self._roomName(room)}")
            users = list(found.members.values()) if found is not None else []
        summary = [
            {
                "nick": u.nick,
                "address": u.client.address,
                # The room joined last: where a line or web user is now.
                "room": next(reversed(u.rooms.values())).name if u.rooms else None,
                "rooms": [r.name for r in u.rooms.values()],
                "connected": u.connectedAt,
                "node": None,
            }
            for u in users
        ]
        if self.presence is not None:
            remote = self.presence.remote
            keys = remote.users if key is None else [fold(m.nick) for m in remote.members(key)]
            for userKey in list(keys):
                them = remote.profile(userKey)
                summary.append(
                    {
                        "nick": them.nick,
                        "address": None,
                        "room": them.rooms[-1] if them.rooms else None,
                        "rooms": list(them.rooms),
                        "connected": None,
                        "node": them.node,
                    }
                )
        return summary

    def _remoteMembers(self, roomKey: str) -> list:
        return self.presence.remote.members(roomKey) if self.presence is not None else []
