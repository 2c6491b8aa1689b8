"""The chat domain: users, rooms and the rules. No bytes, no wire formats in here.

Protocols reach the domain only through L{ChatService}'s methods and receive events
through their L{IChatClient}. Methods that a later store will make asynchronous
(choosing a nickname, joining a room) already return Deferreds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from chatserv import events as ev
from chatserv.config import Settings
from chatserv.errors import (
    EmptyText,
    MessageTooLong,
    NickRequired,
    NickTaken,
    NoSuchRoom,
    NoSuchUser,
    NotInRoom,
    TooManyRooms,
)
from chatserv.interfaces import IChatClient, IEventBus
from chatserv.limits import ConnectionLimiter, Deadlines
from chatserv.names import checkNick, checkRoom, fold
from chatserv.stats import Counters
from chatserv.text import sanitize

_log = Logger()


class User:
    """One connected session. It has a nickname once it has chosen one."""

    __slots__ = ("client", "nick", "key", "rooms", "room", "connectedAt")

    def __init__(self, client: IChatClient, connectedAt: float) -> None:
        self.client = client
        self.nick: str | None = None
        self.key: str | None = None  # fold(nick): the name the service knows it by
        self.rooms: dict[str, Room] = {}  # every room joined, by key
        self.room: Room | None = None  # the room plain lines go to
        self.connectedAt = connectedAt

    def __repr__(self) -> str:
        return f"<User {self.nick!r} {self.client.address}>"


class Room:
    __slots__ = ("key", "name", "members")

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = fold(name)
        self.members: dict[str, User] = {}  # by user key, in order of joining

    def __repr__(self) -> str:
        return f"<Room #{self.name} ({len(self.members)})>"


@implementer(IEventBus)
class LocalBus:
    """Delivers events to the users connected to this process."""

    def __init__(self, service: ChatService) -> None:
        self._service = service

    def publish(self, event, rooms: Iterable[str] = (), users: Iterable[str] = (), skip=None):
        service = self._service
        recipients = service.recipients(rooms, users)
        service.counters.deliveries += len(recipients)
        cache = {}
        for user in recipients:
            if user.key == skip:
                continue
            client = user.client
            try:
                wire = client.wire
                payload = cache.get(wire)
                if payload is None:
                    payload = cache[wire] = wire.render(event)
                client.send(payload)
            except Exception:
                # One broken recipient must not cost the others their copy.
                _log.failure("delivery to {address} failed", address=client.address)


class ChatService(Service):
    """Owns users and rooms and enforces the rules; every protocol is an adapter to it."""

    name = "chat"

    def __init__(
        self,
        settings: Settings | None = None,
        clock: IReactorTime | None = None,
        bus: IEventBus | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # only when not injected
        self.settings = settings or Settings()
        self.clock = clock
        self.bus: IEventBus = bus if bus is not None else LocalBus(self)
        self.sessions: set[User] = set()  # every connection, named or not
        self.users: dict[str, User] = {}  # named users by key
        self.rooms: dict[str, Room] = {}
        # Connections counted across every listener, for the per-address limits.
        self.admission = ConnectionLimiter(
            self.settings.max_connections, self.settings.max_connections_per_ip
        )
        self.defaultRoom = self._roomName(self.settings.default_room)
        self._defaultKey = fold(self.defaultRoom)
        self.rooms[self._defaultKey] = Room(self.defaultRoom)  # always listed
        self._lastId = 0
        self.counters = Counters()
        self.startedAt: float | None = None
        # Connections that must choose a nickname in time: one timer for all of them.
        self.nickDeadlines: Deadlines[Callable[[], object]] = Deadlines(
            clock, self.settings.nick_timeout, lambda expire: expire()
        )

    # -- time and ids --------------------------------------------------------------

    def now(self) -> float:
        return self.clock.seconds()

    def isoTime(self) -> str:
        """The server's time, ISO 8601 with its UTC offset."""
        return datetime.fromtimestamp(self.now()).astimezone().isoformat(timespec="seconds")

    def _nextId(self) -> int:
        self._lastId += 1
        return self._lastId

    # -- delivery ------------------------------------------------------------------

    def recipients(self, rooms: Iterable[str], users: Iterable[str]) -> list[User]:
        """The local users in C{rooms} and C{users} (keys), each once, in a stable order."""
        rooms = tuple(rooms)
        users = tuple(users)
        if len(rooms) == 1 and not users:  # the hot path: a message to one room
            room = self.rooms.get(rooms[0])
            return list(room.members.values()) if room is not None else []
        found: dict[str, User] = {}
        for key in rooms:
            room = self.rooms.get(key)
            if room is not None:
                found.update(room.members)
        for key in users:
            user = self.users.get(key)
            if user is not None:
                found[key] = user
        return list(found.values())

    def deliver(self, user: User, event: ev.Event) -> None:
        """Send one event to one local session (replies, errors, private notices)."""
        self.counters.deliveries += 1
        client = user.client
        client.send(client.wire.render(event))

    def notice(self, user: User, text: str) -> None:
        self.deliver(user, ev.Notice(text, self.now()))

    # -- sessions ------------------------------------------------------------------

    def connect(self, client: IChatClient) -> User:
        """A new connection: a session without a nickname yet."""
        user = User(client, self.now())
        self.sessions.add(user)
        return user

    def disconnect(self, user: User, reason: str) -> None:
        """Forget a session, telling its rooms it left. Safe to call twice."""
        if user not in self.sessions:
            return
        self.sessions.discard(user)
        for room in list(user.rooms.values()):
            self._leave(user, room, reason)
        if user.key is not None and self.users.get(user.key) is user:
            del self.users[user.key]

    def findUser(self, nick: str) -> User | None:
        return self.users.get(fold(nick))

    # -- nicknames -----------------------------------------------------------------

    def setNick(self, user: User, nick: str) -> defer.Deferred[None]:
        """Choose or change C{user}'s nickname; a first nickname also joins the default room.

        Fails with L{BadName} or L{NickTaken}.
        """
        return defer.maybeDeferred(self._setNick, user, nick)

    def _setNick(self, user: User, nick: str) -> defer.Deferred[None] | None:
        key = fold(checkNick(nick))
        holder = self.users.get(key)
        if holder is not None and holder is not user:
            raise NickTaken(f'the nickname "{nick}" is taken; choose another')
        old = user.nick
        if old == nick:
            return None
        oldKey = user.key
        if oldKey is not None:
            del self.users[oldKey]
        user.nick, user.key = nick, key
        self.users[key] = user
        if oldKey != key:  # rooms know members by key; keep their join order
            for room in user.rooms.values():
                room.members = {u.key: u for u in room.members.values()}
        if old is None:
            _log.info("{address} is now {nick}", address=user.client.address, nick=nick)
            self.deliver(
                user, ev.Welcome(nick, f"Welcome, {nick}! Type /help for commands.", self.now())
            )
            return self.join(user, self.defaultRoom).addCallback(lambda _: None)
        _log.info(
            "{address} renamed {old} -> {nick}", address=user.client.address, old=old, nick=nick
        )
        self.bus.publish(ev.Renamed(old, nick, self.now()), rooms=tuple(user.rooms), users=(key,))
        return None

    # -- rooms ---------------------------------------------------------------------

    def join(self, user: User, name: str) -> defer.Deferred[Room]:
        """Join (creating if needed) room C{name} and make it C{user}'s current room."""
        return defer.maybeDeferred(self._join, user, name)

    def _join(self, user: User, name: str) -> Room:
        self._requireNick(user)
        name = self._roomName(name)
        key = fold(name)
        room = self.rooms.get(key)
        if room is None:
            if len(self.rooms) >= self.settings.max_rooms:
                raise TooManyRooms(
                    f"there are too many rooms (the limit is {self.settings.max_rooms}); "
                    "join one that exists: /rooms lists them"
                )
            room = self.rooms[key] = Room(name)
        user.room = room
        if key not in user.rooms:
            user.rooms[key] = room
            room.members[user.key] = user
            self.bus.publish(ev.Joined(room.name, user.nick, self.now()), rooms=(key,))
        self.deliver(user, self.who(user, room.name))
        return room

    def part(self, user: User, name: str, reason: str = "left") -> None:
        """Leave room C{name}."""
        room = user.rooms.get(fold(self._roomName(name)))
        if room is None:
            raise NotInRoom(f"you are not in #{name}")
        self._leave(user, room, reason)

    def _leave(self, user: User, room: Room, reason: str) -> None:
        # A quit reason is user text: bound it and make it safe like any message.
        reason = sanitize(reason[: self.settings.max_message_length])
        self.bus.publish(ev.Left(room.name, user.nick, reason, self.now()), rooms=(room.key,))
        del room.members[user.key]
        del user.rooms[room.key]
        if user.room is room:
            user.room = next(reversed(user.rooms.values()), None)
        if not room.members and room.key != self._defaultKey:
            del self.rooms[room.key]

    def who(self, user: User, name: str | None = None) -> ev.WhoReply:
        """Who is in room C{name} (default: C{user}'s current room)."""
        if name is None:
            if user.room is None:
                raise NotInRoom("you are not in a room; /who ROOM names one")
            room = user.room
        else:
            name = self._roomName(name)
            room = self.rooms.get(fold(name))
            if room is None:
                raise NoSuchRoom(f"there is no room #{name}")
        return ev.WhoReply(room.name, tuple(u.nick for u in room.members.values()), self.now())

    def roomList(self) -> ev.RoomsReply:
        rooms = sorted(self.rooms.values(), key=lambda r: r.key)
        return ev.RoomsReply(tuple((r.name, len(r.members)) for r in rooms), self.now())

    # -- talking -------------------------------------------------------------------

    def say(self, user: User, text: str, kind: str = "message") -> ev.RoomMessage:
        """Say C{text} in C{user}'s current room (C{kind} "action" for /me)."""
        self._requireNick(user)
        room = user.room
        if room is None:
            raise NotInRoom("you are not in a room; /join ROOM first")
        text = self._cleanText(text)
        self.counters.messages += 1
        event = ev.RoomMessage(kind, room.name, user.nick, text, self.now(), self._nextId())
        self.bus.publish(event, rooms=(room.key,), skip=None if user.client.echo else user.key)
        return event

    def privmsg(self, user: User, nick: str, text: str) -> ev.PrivateMessage:
        """Send C{text} to C{nick} only; the sender gets a copy marked outgoing."""
        self._requireNick(user)
        target = self.findUser(nick)
        if target is None:
            raise NoSuchUser(f'no user "{sanitize(nick)}" is online')
        text = self._cleanText(text)
        self.counters.messages += 1
        event = ev.PrivateMessage(user.nick, target.nick, text, self.now(), self._nextId())
        self.bus.publish(event, users=(target.key,))
        if target is not user:
            self.deliver(
                user,
                ev.PrivateMessage(event.sender, event.to, text, event.ts, event.id, outgoing=True),
            )
        return event

    # -- administration (the manhole console and, later, admin commands use these) ----

    def roomSummary(self) -> list[tuple[str, int]]:
        """Every room and its member count, by name."""
        return list(self.roomList().rooms)

    def userSummary(self, room: str | None = None) -> list[dict]:
        """The named users (in C{room}, if given), with where they come from."""
        if room is None:
            users = list(self.users.values())
        else:
            found = self.rooms.get(fold(self._roomName(room)))
            if found is None:
                raise NoSuchRoom(f"there is no room #{self._roomName(room)}")
            users = list(found.members.values())
        return [
            {
                "nick": u.nick,
                "address": u.client.address,
                "room": u.room.name if u.room is not None else None,
                "rooms": [r.name for r in u.rooms.values()],
                "connected": u.connectedAt,
            }
            for u in users
        ]

    def broadcast(self, text: str) -> int:
        """A server notice to every connection; returns how many got it."""
        event = ev.Notice(sanitize(text), self.now())
        sessions = list(self.sessions)
        for user in sessions:
            self.deliver(user, event)
        return len(sessions)

    def broadcastRoom(self, room: str, text: str) -> int:
        """A server notice to the members of one room; returns how many got it."""
        name = self._roomName(room)
        found = self.rooms.get(fold(name))
        if found is None:
            raise NoSuchRoom(f"there is no room #{name}")
        members = len(found.members)
        self.bus.publish(ev.Notice(sanitize(text), self.now(), room=found.name), rooms=(found.key,))
        return members

    def tellUser(self, nick: str, text: str) -> None:
        """A server notice to one user."""
        user = self._named(nick)
        self.deliver(user, ev.Notice(sanitize(text), self.now()))

    def kick(self, nick: str, reason: str = "") -> None:
        """Disconnect a user; their rooms see why."""
        user = self._named(nick)
        why = f"kicked: {reason}" if reason else "kicked"
        self.end(user, why, f"you were {why}")

    def closeRoom(self, room: str, reason: str = "room closed") -> int:
        """Disconnect everyone in a room (it then disappears); returns how many."""
        name = self._roomName(room)
        found = self.rooms.get(fold(name))
        if found is None:
            raise NoSuchRoom(f"there is no room #{name}")
        members = list(found.members.values())
        for user in members:
            self.end(user, reason, f"disconnected: #{found.name} was closed ({reason})")
        return len(members)

    def reset(self, reason: str = "server reset") -> int:
        """Disconnect every connection and empty every room; returns how many."""
        sessions = list(self.sessions)
        self._forgetAll()
        for user in sessions:
            self._close(user, f"disconnected: {reason}")
        return len(sessions)

    def end(self, user: User, why: str, farewell: str) -> None:
        """Disconnect one session: C{why} for its rooms and the log, C{farewell} for it."""
        if user not in self.sessions:
            return
        _log.info(
            "ending {address} ({nick}): {why}",
            address=user.client.address,
            nick=user.nick or "-",
            why=why,
        )
        self.disconnect(user, why)
        self._close(user, farewell)

    def stats(self) -> dict:
        """Counters and gauges, as the console and the metrics endpoint show them."""
        byKind: dict[str, int] = {}
        for user in self.sessions:
            kind = getattr(user.client, "kind", "other")
            byKind[kind] = byKind.get(kind, 0) + 1
        return {
            "connections": len(self.sessions),
            "connections_by_protocol": byKind,
            "users": len(self.users),
            "rooms": len(self.rooms),
            **self.counters.asDict(),
            "uptime_seconds": self.now() - self.startedAt if self.startedAt is not None else 0.0,
        }

    def _named(self, nick: str) -> User:
        user = self.findUser(nick)
        if user is None:
            raise NoSuchUser(f'no user "{sanitize(nick)}" is online')
        return user

    def _close(self, user: User, farewell: str) -> None:
        try:
            user.client.close(farewell)
        except Exception:
            _log.failure("closing {address} failed", address=user.client.address)

    def _forgetAll(self) -> None:
        # Silently: announcing each departure to rooms that all empty anyway would cost
        # n²/2 deliveries for n users in one room.
        closing = list(self.sessions)
        self.sessions.clear()
        self.users.clear()
        for room in self.rooms.values():
            room.members.clear()
        self.rooms = {key: room for key, room in self.rooms.items() if key == self._defaultKey}
        for user in closing:
            user.rooms.clear()
            user.room = None

    # -- service -------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.startedAt = self.now()

    def stopService(self):
        """Tell everyone the server is going down and close every session."""
        super().stopService()
        self.nickDeadlines.stop()
        sessions = list(self.sessions)
        self._forgetAll()
        for user in sessions:
            self._close(user, "server shutting down")

    # -- helpers -------------------------------------------------------------------

    def _requireNick(self, user: User) -> None:
        if user.nick is None:
            raise NickRequired("choose a nickname first: type it, or /nick NAME")

    def _roomName(self, name: str) -> str:
        return checkRoom(name, self.settings.max_room_name_length)

    def _cleanText(self, text: str) -> str:
        text = text.strip()
        limit = self.settings.max_message_length
        if len(text) > limit:  # checked before escaping, which only makes text longer
            raise MessageTooLong(f"message too long (the limit is {limit} characters)")
        text = sanitize(text)
        if not text:
            raise EmptyText("nothing to send")
        return text
