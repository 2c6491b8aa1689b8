"""The chat domain: users, rooms and the rules. No bytes, no wire formats in here.

Protocols reach the domain only through L{ChatService}'s methods and receive events
through their L{IChatClient}. What is kept across restarts (accounts, permanent rooms,
bans and mutes, history, offline messages) goes through an L{IStore}; methods that may
wait on it return Deferreds.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatserv import events as ev
from chatserv.accounts import LoginThrottle, Passwords, Throttle, checkColor
from chatserv.addresses import TrustedProxies, isLoopback
from chatserv.bus import (
    AddressFound,
    AddressWanted,
    AdminGranted,
    Attempt,
    Broadcast,
    CloseRoom,
    EndSession,
    LocalBus,
    Reset,
    SanctionAdded,
    SanctionLifted,
)
from chatserv.config import Settings
from chatserv.errors import (
    Banned,
    ChatError,
    EmptyText,
    LoginFailed,
    LoginThrottled,
    MailboxFull,
    MessageTooLong,
    Muted,
    NickRegistered,
    NickRequired,
    NickTaken,
    NoSuchRoom,
    NoSuchUser,
    NotInRoom,
    NotLoggedIn,
    NotPermitted,
    NotSanctioned,
    RegisterThrottled,
    StoreUnavailable,
    TooManyRooms,
    UsageError,
    WeakPassword,
)
from chatserv.hostmasks import Hostmasks
from chatserv.ids import MessageIds
from chatserv.interfaces import IChatClient, IDirectory, IEventBus
from chatserv.limits import AddressBuckets, ConnectionLimiter, Deadlines, LogLimiter
from chatserv.lookups import Lookups
from chatserv.moderation import Sanctions, describeDuration, describeSanction
from chatserv.names import checkNick, checkRoom, fold
from chatserv.people import (  # (the service's names for them, too)
    CONSOLE,
    Actor,
    Console,
    Room,
    User,
    cleanRealname,
)
from chatserv.roster import ClusterPresence, Identified, ProfileFound, ProfileWanted
from chatserv.stats import Counters
from chatserv.store import Account, IStore, RoomRecord, Sanction, Span
from chatserv.store.guard import GuardedStore
from chatserv.text import invisible, looksLikeSecret, sanitize

_log = Logger()

_FORMER_NICKS = 8  # earlier nicknames of a connection that bans and mutes still find


class ChatService(Lookups, Service):
    """Owns users and rooms and enforces the rules; every protocol is an adapter to it."""

    name = "chat"

    def __init__(
        self,
        settings: Settings | None = None,
        clock: IReactorTime | None = None,
        bus: IEventBus | None = None,
        store: IStore | None = None,
        passwords: Passwords | None = None,
        directory: IDirectory | None = None,
    ) -> None:
        """C{store} defaults to an in-memory one. Its L{IStore.load} is called here: make the
        service before the reactor runs (as the twistd plugin does)."""
        if clock is None:
            from twisted.internet import reactor as clock  # only when not injected
        if store is None:
            from chatserv.store.memory import MemoryStore

            store = MemoryStore()
        self.settings = settings or Settings()
        self.clock = clock
        self.bus: IEventBus = bus if bus is not None else LocalBus()
        self.store = store
        # A cluster's directory of nicknames (None on a single node: self.users is all),
        # and who is where on the other nodes.
        self.directory = directory
        self.presence = (
            ClusterPresence(self, directory, clock, self.settings.cluster_presence_timeout / 3)
            if directory is not None
            else None
        )
        if directory is not None:
            directory.serve(lambda: list(self.users), self._nickLost)
        self.passwords = passwords or Passwords(maxWaiting=self.settings.max_password_queue)
        self.throttle = LoginThrottle(
            self.settings.max_login_failures,
            self.settings.max_login_failures_per_ip,
            self.settings.login_failure_decay,
        )
        self.registrations = Throttle(
            self.settings.max_registrations_per_ip, self.settings.registration_decay
        )
        self.adminKeys = frozenset(fold(nick) for nick in self.settings.admins)
        self.sessions: set[User] = set()  # every connection, named or not
        self.users: dict[str, User] = {}  # named users by key
        self.rooms: dict[str, Room] = {}
        # Connections counted across every listener, for the per-address limits.
        self.trustedProxies = TrustedProxies(self.settings.trusted_proxies)
        self.admission = ConnectionLimiter(
            self.settings.max_connections,
            self.settings.max_connections_per_ip,
            AddressBuckets(self.settings.ip_connect_rate, self.settings.ip_connect_burst),
            clock,
        )
        # What each address may send, over all of its connections (see FloodGuard).
        self.addressRequests = AddressBuckets(
            self.settings.ip_rate_limit, self.settings.ip_rate_burst
        )
        self.defaultRoom = self._roomName(self.settings.default_room)
        self._defaultKey = fold(self.defaultRoom)
        self.rooms[self._defaultKey] = Room(self.defaultRoom)  # always listed
        state = store.load()
        # Ids go on above the stored ones, with this process's slot: see chatserv.ids.
        self.ids = MessageIds(clock, state.node, state.lastId)
        store.watchNode(self.ids.setSlot)
        self.sanctions = Sanctions(state.sanctions)
        # A configured key, or the database's: cloaks then stay the same after a restart
        # and on every node of a cluster (a mask ban holds everywhere).
        cloakKey = self.settings.irc_cloak_key or state.cloakKey
        self.hostmasks = Hostmasks(self.settings.irc_hostmask, cloakKey)
        # Which nicknames are registered and which rooms have history: a guest's nickname
        # and the first join of a new room ask the database nothing (a reconnect storm of
        # thousands would queue as many queries). This process makes every change to
        # either, so the view stays true; the store is still asked about the names in it.
        self._registered: set[str] = set(state.accounts)
        self._pendingJoins: list[User] = []  # first nicknames' default-room joins
        self._pendingCall: IDelayedCall | None = None
        self._spoken: set[str] = set(state.spoken)
        for record in state.rooms:
            room = self.rooms.get(record.key) or Room(record.name)
            room.topic, room.topicBy, room.topicTs = record.topic, record.topicBy, record.topicTs
            self.rooms[record.key] = room
        self._pruner = LoopingCall(self._prune)
        self._pruner.clock = clock
        self._closed: defer.Deferred[None] | None = None
        self.counters = Counters()
        # What clients can make the server log (connects, refusals, limits hit) is capped.
        self.logLimit = LogLimiter(clock, self.settings.log_rate_limit, self.settings.log_burst)
        # Every wait on the store ends within db_timeout, answered or refused.
        if not isinstance(store, GuardedStore):
            self.store = GuardedStore(store, clock, self.settings.db_timeout, self.logLimit)
        self.startedAt: float | None = None
        # What an event published on the bus changes, applied on receipt on every process
        # (this one included): the state every node must agree on follows the bus.
        self._appliers: dict[type, Callable[[object, tuple[str, ...]], None]] = {
            ev.RoomMessage: self._applyMessage,
            ev.Topic: self._applyTopic,
            EndSession: self._applyEnd,
            SanctionAdded: self._applySanction,
            SanctionLifted: self._applyLift,
            AdminGranted: self._applyAdmin,
            Broadcast: self._applyBroadcast,
            CloseRoom: self._applyCloseRoom,
            Reset: self._applyReset,
            Attempt: self._applyAttempt,
            AddressWanted: self._applyAddressWanted,
            AddressFound: self._applyAddressFound,
            ProfileWanted: self._applyProfileWanted,
            ProfileFound: self._applyProfileFound,
        }
        # What this node asked another (an address to ban, who someone is), by request
        # number.
        self._asked: dict[int, defer.Deferred] = {}
        self._requests = 0
        self.bus.subscribe(self.received)
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

    def received(
        self,
        event,
        rooms: tuple[str, ...],
        users: tuple[str, ...],
        skip: str | None,
        node: str | None = None,
    ) -> None:
        """An event from the bus (published here, or by node C{node}): apply what it
        changes, then deliver it to the local members of C{rooms} and to C{users}."""
        apply = self._appliers.get(type(event))
        if apply is not None:
            apply(event, rooms)
        if node is not None and self.presence is not None:
            self.presence.follow(event, rooms, node)  # who is where, on the other nodes
        self.deliverHere(event, rooms, users, skip)

    def deliverHere(
        self, event, rooms: Iterable[str], users: Iterable[str] = (), skip: str | None = None
    ) -> None:
        """Deliver C{event} to this process's members of C{rooms} and C{users}, once each."""
        recipients = self.recipients(rooms, users)
        self.counters.deliveries += len(recipients)
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

    def _applyMessage(self, event: ev.RoomMessage, rooms: tuple[str, ...]) -> None:
        key = rooms[0]
        self._spoken.add(key)
        room = self.rooms.get(key)
        if room is not None and room.recent is not None:
            # Replayed later, maybe to a wire that names people by mask: without one.
            room.recent.append(
                ev.RoomMessage(
                    event.kind,
                    event.room,
                    event.sender,
                    event.text,
                    event.ts,
                    event.id,
                    event.color,
                    True,
                )
            )

    def _applyTopic(self, event: ev.Topic, rooms: tuple[str, ...]) -> None:
        room = self.rooms.get(rooms[0])
        if room is None:  # a topic makes a room permanent on every node (the limit on
            room = self.rooms[rooms[0]] = Room(event.room)  # rooms was checked where set)
        room.topic, room.topicBy, room.topicTs = event.topic, event.by, event.setAt

    def busResumed(self) -> None:
        """The bus between nodes is back after an outage, in which messages from other
        nodes were missed: each room's recent history is read from the store again
        when it is next needed, rather than replayed with a gap."""
        for room in self.rooms.values():
            if room.loading is None:
                room.recent = None

    def _nickLost(self, key: str, holder: str) -> None:
        user = self.users.get(key)
        if user is not None:
            self.end(
                user,
                f"nickname given out on {holder} while this node was cut off",
                "disconnected: while this server was cut off from the others, your nickname"
                " was given to someone else; connect again and choose one",
            )

    def _applyEnd(self, event: EndSession, rooms: tuple[str, ...]) -> None:
        if self.directory is not None and event.unless == self.directory.node:
            return
        user = self.users.get(event.key)
        if user is not None:
            self.end(user, event.why, event.farewell)

    def _applySanction(self, event: SanctionAdded, rooms: tuple[str, ...]) -> None:
        sanction, now = event.sanction, self.now()
        self.sanctions.add(sanction)
        target = self._personByKey(sanction.key)
        if target is None:
            return
        if sanction.kind == "ban":
            why = f"banned by {sanction.by}" + (f": {sanction.reason}" if sanction.reason else "")
            self.end(target, why, f"disconnected: you are banned {describeSanction(sanction, now)}")
        else:
            self.notice(target, f"{sanction.by} muted you {describeSanction(sanction, now)}")

    def _applyLift(self, event: SanctionLifted, rooms: tuple[str, ...]) -> None:
        self.sanctions.remove(event.kind, event.key)
        target = self.users.get(event.key)
        if target is not None and event.kind == "mute":
            self.notice(target, f"{event.by} unmuted you")

    def deliver(self, user: User, event: ev.Event) -> None:
        """Send one event to one local session (replies, errors, private notices)."""
        self.counters.deliveries += 1
        client = user.client
        client.send(client.wire.renderTo(event, user.nick))

    def notice(self, user: User, text: str) -> None:
        self.deliver(user, ev.Notice(text, self.now()))

    # -- sessions ------------------------------------------------------------------

    def sourceOf(self, user: User) -> ev.Source:
        """C{user} as an IRC prefix names them (C{nick!user@host})."""
        return user.source(self.hostmasks)

    def connect(self, client: IChatClient, autojoin: bool = True) -> User:
        """A new connection: a session without a nickname yet. C{autojoin}: its first
        nickname joins the default room."""
        user = User(client, self.now(), autojoin)
        self.sessions.add(user)
        return user

    def disconnect(self, user: User, reason: str) -> None:
        """Forget a session, telling its rooms it quit (one L{ev.Quit} for them all).
        Safe to call twice."""
        if user not in self.sessions:
            return
        self.sessions.discard(user)
        rooms = list(user.rooms.values())
        if rooms:
            quit = ev.Quit(
                user.nick,
                self._reason(reason),
                tuple(r.name for r in rooms),
                self.now(),
                self.sourceOf(user),
            )
            self.bus.publish(quit, rooms=tuple(r.key for r in rooms), skip=user.key)
            for room in rooms:
                self._forget(user, room)
        if user.key is not None and self.users.get(user.key) is user:
            del self.users[user.key]
            if self.directory is not None:
                self.directory.release(user.key)

    def findUser(self, nick: str) -> User | None:
        return self.users.get(fold(nick))

    # -- nicknames -----------------------------------------------------------------

    def setNick(self, user: User, nick: str) -> defer.Deferred[None]:
        """Choose or change C{user}'s nickname; a first nickname also joins the default room.

        Fails with L{BadName}, L{NickTaken}, L{NickRegistered} (someone's account: log in)
        or L{Banned}.
        """
        return defer.ensureDeferred(self._setNick(user, nick))

    async def _setNick(self, user: User, nick: str) -> None:
        key = fold(checkNick(nick))
        if user.nick == nick:
            return
        if user.key is not None:
            # A mute is kept by nickname: renaming must not be a way out of it.
            mute = self.sanctions.active("mute", user.key, self.now())
            if mute is not None:
                raise Muted(
                    f"you are muted {describeSanction(mute, self.now())}; "
                    "you cannot change your nickname until then"
                )
        self._refuseBanned(key)
        self._refuseTaken(user, key, nick)
        if user.account is None or user.account.key != key:
            if await self._isRegistered(key):
                raise NickRegistered(
                    f'the nickname "{nick}" is registered: /login {nick} PASSWORD, '
                    "or choose another"
                )
            self._refuseReserved(key, nick)
            if user not in self.sessions:
                return
            self._refuseTaken(user, key, nick)  # someone may have taken it meanwhile
        if self.directory is not None:
            holder = await self.directory.claim(key)
            if user not in self.sessions or holder is not None:
                if holder is None and key not in self.users:
                    self.directory.release(key)
                if holder is not None:
                    raise NickTaken(f'the nickname "{nick}" is taken; choose another')
                return
            self._refuseTaken(user, key, nick)
        await self._applyNick(user, nick, key)

    async def _isRegistered(self, key: str) -> bool:
        if key not in self._registered:
            return False
        if await self.store.account(key) is not None:
            return True
        self._registered.discard(key)  # (gone from the database some other way)
        return False

    def _refuseReserved(self, key: str, nick: str) -> None:
        # An admin named in the config file who has no account yet: whoever took the name
        # first would otherwise be taken for them (and, by registering it, become admin).
        if key in self.adminKeys:
            raise NickRegistered(
                f'the nickname "{nick}" is reserved for an admin of this server; choose another'
            )

    def _refuseTaken(self, user: User, key: str, nick: str) -> None:
        holder = self.users.get(key)
        if holder is not None and holder is not user:
            raise NickTaken(f'the nickname "{nick}" is taken; choose another')

    def _refuseBanned(self, key: str) -> None:
        ban = self.sanctions.active("ban", key, self.now())
        if ban is not None:
            raise Banned(f'the nickname "{ban.nick}" is banned {describeSanction(ban, self.now())}')

    def _applyNick(self, user: User, nick: str, key: str) -> defer.Deferred[None]:
        """Give C{user} the nickname (checks done); the first one joins the default room."""
        old = user.nick
        if old == nick:
            return defer.succeed(None)
        if user.account is not None and user.account.key != key:
            self.notice(user, f"you are no longer logged in as {user.account.nick}")
            user.account = None
            self._identify(user)
        oldKey = user.key
        before = self.sourceOf(user) if old is not None else None
        if oldKey is not None:
            del self.users[oldKey]
            if self.directory is not None and oldKey != key:
                self.directory.release(oldKey)
            kept = tuple(k for k in user.formerKeys if k != key and k != oldKey)
            user.formerKeys = (kept + (oldKey,))[-_FORMER_NICKS:]
        user.nick, user.key = nick, key
        self.users[key] = user
        if self.presence is not None:
            # Held here now: whoever held it on another node (one that died, say) is gone.
            self.presence.remote.dropUser(key)
        if oldKey != key:  # rooms know members by key; keep their join order
            for room in user.rooms.values():
                room.members = {u.key: u for u in room.members.values()}
        if old is None:
            self.logLimit.info(
                _log, "{address} is now {nick}", address=user.client.address, nick=nick
            )
            self.deliver(
                user, ev.Welcome(nick, f"Welcome, {nick}! Type /help for commands.", self.now())
            )
            if user.autojoin:
                # At the end of this turn, or before the client's next request that is not
                # a join: "alice" and "/join dev" sent together go to #dev without passing
                # through the default room (whose members would see a join and a part;
                # after a restart, one of each for everyone reconnecting).
                user.joinPending = True
                self._pendingJoins.append(user)
                if self._pendingCall is None:
                    self._pendingCall = self.clock.callLater(0, self._joinPending)
            return defer.succeed(None)
        self.logLimit.info(
            _log,
            "{address} renamed {old} -> {nick}",
            address=user.client.address,
            old=old,
            nick=nick,
        )
        renamed = ev.Renamed(old, nick, self.now(), before)
        self.bus.publish(renamed, rooms=tuple(user.rooms), users=(key,))
        return defer.succeed(None)

    # -- accounts ------------------------------------------------------------------

    def isAdmin(self, user: User) -> bool:
        """Logged in to an account that an admin promoted or the config file names."""
        account = user.account
        return account is not None and (account.admin or account.key in self.adminKeys)

    async def register(self, user: User, password: str) -> None:
        """Claim C{user}'s current nickname with C{password}; they are then logged in."""
        self._requireNick(user)
        if user.account is not None:
            raise NickRegistered(f"you are already logged in as {user.account.nick}")
        self._refuseReserved(user.key, user.nick)
        self._checkPassword(password)
        nick, key, host = user.nick, user.key, user.host
        wait = self.registrations.wait(host, self.now())
        if wait > 0:
            raise RegisterThrottled(
                "too many registrations from your address; "
                f"try again in {describeDuration(math.ceil(wait))}"
            )
        # Counted now, not once hashed, so that a burst cannot all get through; a
        # registration that fails is given back.
        self._registration(host)
        try:
            hashed = await self.passwords.hash(password)
            account = Account(key, nick, hashed, user.color, False, self.now())
            added = await self.store.addAccount(account)
        except Exception:
            self._registration(host, refund=True)
            raise
        self._registered.add(key)  # (by someone else, if not added: the view learns it)
        if not added:
            self._registration(host, refund=True)
            raise NickRegistered(f'"{nick}" is already registered: /login {nick} PASSWORD')
        if user not in self.sessions or user.key != key:
            return
        user.account = account
        self.logLimit.info(
            _log, "{address} registered {nick}", address=user.client.address, nick=nick
        )
        self._loggedIn(user, f"registered {nick}; next time, /login {nick} PASSWORD")

    async def login(self, user: User, nick: str, password: str) -> None:
        """Log in to the account C{nick}, taking that nickname (and ending any other
        connection logged in to it). Failures are throttled per address and nickname, and
        per address (see L{LoginThrottle})."""
        key = fold(checkNick(nick))
        if user.account is not None and user.account.key == key:
            raise UsageError(f"you are already logged in as {user.account.nick}")
        host = user.host
        self._admitCheck(host, key, nick, "failed logins")
        failed = False
        try:
            account = await self.store.account(key)
            hashed = account.passwordHash if account is not None else None
            failed = not await self.passwords.verify(hashed, password)
        finally:
            # Only a wrong password counts: not an error, nor the server being busy.
            self._finishCheck(host, key, failed)
        if failed or account is None:
            self.logLimit.info(
                _log, "{address}: failed login as {nick}", address=user.client.address, nick=nick
            )
            raise LoginFailed("wrong nickname or password")
        if user not in self.sessions:
            return
        self._refuseBanned(key)
        holder = self.users.get(key)
        if holder is not None and holder is not user:
            self.end(holder, "logged in elsewhere", "disconnected: you logged in from elsewhere")
        if self.directory is not None:
            # The owner takes the name (ending the session above let go of it), and its
            # session on any other node ends.
            await self.directory.take(key)
            self.bus.publish(
                EndSession(
                    key,
                    "logged in elsewhere",
                    "disconnected: you logged in from elsewhere",
                    self.directory.node,
                )
            )
            if user not in self.sessions:
                if key not in self.users:
                    self.directory.release(key)
                return
        user.account, user.color = account, account.color
        self.logLimit.info(
            _log, "{address} logged in as {nick}", address=user.client.address, nick=account.nick
        )
        self._loggedIn(user, f"you are logged in as {account.nick}")
        await self._applyNick(user, account.nick, key)
        await self._deliverOffline(user)

    def _admitCheck(self, host: str, key: str, nick: str, what: str) -> None:
        """Count a password check for account C{key} from C{host}, or raise
        L{LoginThrottled}: one is already in flight, or too many failed lately. The caller
        must call L{_finishCheck} once the check is over."""
        if self.throttle.checking(host, key):
            raise LoginThrottled(
                f"another password for {nick} from your address is being checked; "
                "wait for its answer"
            )
        wait = self.throttle.wait(host, key, self.now())
        if wait > 0:
            raise LoginThrottled(
                f"too many {what}; try again in {describeDuration(math.ceil(wait))}"
            )
        self.throttle.admit(host, key, self.now())
        self._share("login", host, key, refund=False)

    def _finishCheck(self, host: str, key: str, failed: bool) -> None:
        """A password check admitted by L{_admitCheck} is over (C{failed}: it counts)."""
        self.throttle.finish(host, key, self.now(), failed)
        if not failed:
            self._share("login", host, key, refund=True)

    def _registration(self, host: str, refund: bool = False) -> None:
        """Count (or give back) one registration from C{host}, on every node."""
        (self.registrations.refund if refund else self.registrations.add)(host, self.now())
        self._share("register", host, "", refund)

    def _share(self, kind: str, host: str, account: str, refund: bool) -> None:
        # The others count what this node counted; a single node has no one to tell.
        if self.directory is not None:
            self.bus.publish(Attempt(kind, host, account, refund, self.directory.node))

    def _applyAttempt(self, event: Attempt, rooms: tuple[str, ...]) -> None:
        if self.directory is None or event.node == self.directory.node:
            return  # (counted when it was made)
        now = self.now()
        if event.kind == "login":
            change = self.throttle.refund if event.refund else self.throttle.count
            change(event.host, event.account, now)
        elif event.kind == "register":
            change = self.registrations.refund if event.refund else self.registrations.add
            change(event.host, now)

    def _loggedIn(self, user: User, text: str, marked: bool = True) -> None:
        """Tell C{user} of their account; C{marked}: say "(admin)" if they are one."""
        if marked and self.isAdmin(user):
            text += " (admin)"
        self.deliver(
            user, ev.LoggedIn(user.account.nick, self.isAdmin(user), user.color, text, self.now())
        )
        self._identify(user)

    def _identify(self, user: User) -> None:
        """Tell the other nodes of a cluster who C{user} is now (logged in, or no longer),
        for their WHOIS and NAMES."""
        if self.directory is not None and user.rooms:
            identified = Identified(self.directory.node, self.sourceOf(user), self.isAdmin(user))
            self.bus.publish(identified)

    async def _deliverOffline(self, user: User) -> None:
        kept = await self.store.takeOffline(user.key)
        if kept:
            s = "s" if len(kept) != 1 else ""
            self.notice(user, f"{len(kept)} private message{s} arrived while you were away:")
            for message in kept:
                self.deliver(user, message)

    async def changePassword(self, user: User, old: str, new: str) -> None:
        account = self._requireAccount(user)
        self._checkPassword(new)
        host = user.host
        self._admitCheck(host, account.key, account.nick, "wrong passwords")
        failed = False
        try:
            # Not a login: it waits behind them, as the new password's hash will.
            failed = not await self.passwords.verify(account.passwordHash, old, login=False)
        finally:
            self._finishCheck(host, account.key, failed)
        if failed:
            raise LoginFailed("wrong password; your password is unchanged")
        hashed = await self.passwords.hash(new)
        await self.store.setPassword(account.key, hashed)
        if user.account is not None and user.account.key == account.key:
            user.account = dataclasses.replace(user.account, passwordHash=hashed)
        _log.info(
            "{address} changed the password of {nick}",
            address=user.client.address,
            nick=account.nick,
        )
        self.notice(user, "password changed")

    async def setColor(self, user: User, color: str | None) -> None:
        """Show (C{color} None) or set C{user}'s colour; an account keeps it."""
        if color is None:
            shown = user.color or "none (/color #RRGGBB sets one)"
            self.notice(user, f"your colour: {shown}")
            return
        user.color = checkColor(color)
        if user.account is not None:
            await self.store.setColor(user.account.key, user.color)
            user.account = dataclasses.replace(user.account, color=user.color)
        self.notice(
            user, f"your colour is now {user.color}" if user.color else "you have no colour now"
        )

    def _requireAccount(self, user: User) -> Account:
        if user.account is None:
            raise NotLoggedIn("log in first: /login NICK PASSWORD (or /register PASSWORD)")
        return user.account

    def _checkPassword(self, password: str) -> None:
        least = self.settings.min_password_length
        if len(password) < least:
            raise WeakPassword(f"a password needs at least {least} characters")

    # -- rooms ---------------------------------------------------------------------

    def join(
        self, user: User, name: str, since: int | None = None, replay: bool = True
    ) -> defer.Deferred[Room]:
        """Join (creating if needed) room C{name}.

        A newcomer sees the room's topic, who is there and its recent history: the messages
        it has not seen, those after C{since} (the id of the newest message of the room
        the client has seen, say before it reconnected) or after what this connection saw
        when it left the room. Not the history if C{replay} is false: a client that asks
        for the history it lacks (IRC's CHATHISTORY).
        """
        return defer.ensureDeferred(self._join(user, name, since, replay))

    async def _join(
        self, user: User, name: str, since: int | None = None, replay: bool = True
    ) -> Room:
        self._requireNick(user)
        # A room of its own choosing: not the default one too (unless this one is refused).
        pending, user.joinPending = user.joinPending, False
        try:
            room = self._roomOrNew(name)
        except ChatError:
            user.joinPending = pending
            raise
        key = room.key
        if since is not None:
            self._sawUpTo(user, key, since)
        if room.recent is None:
            await self._loadRecent(room, user)
            if user not in self.sessions:  # gone while the history loaded
                self._dropIfUnused(room)
                return room
        if key not in user.rooms:
            user.rooms[key] = room
            room.members[user.key] = user
            joined = ev.Joined(
                room.name, user.nick, self.now(), self.isAdmin(user), self.sourceOf(user)
            )
            self.bus.publish(joined, rooms=(key,))
            if room.topic is not None:
                self.deliver(user, self._topicEvent(room))
            self.deliver(user, self.who(user, room.name))
            if replay:
                seen = user.seen.get(key, 0) if user.seen is not None else 0
                self._replay(user, room, [m for m in room.recent or () if m.id > seen])
        else:
            self.deliver(user, self.who(user, room.name))
        return room

    def settleJoin(self, user: User) -> defer.Deferred[None] | None:
        """Join the default room now if C{user}'s first nickname is still to (see
        L{setNick}); None if there is nothing to join."""
        if not user.joinPending:
            return None
        user.joinPending = False
        if user not in self.sessions or user.rooms:
            return None
        return self.join(user, self.defaultRoom).addCallback(lambda _: None)

    def _joinPending(self) -> None:
        self._pendingCall = None
        waiting, self._pendingJoins = self._pendingJoins, []
        for user in waiting:
            joined = self.settleJoin(user)
            if joined is not None:
                joined.addErrback(self._joinFailed, user)

    @staticmethod
    def _joinFailed(failure, user: User) -> None:
        _log.failure("joining {nick} to the default room failed", failure, nick=user.nick)

    def markSeen(self, user: User, name: str, since: int) -> None:
        """Note, before C{user} joins room C{name}, that its client has seen it up to message
        C{since}: for the default room, which a first nickname joins before the client
        could say so in a join (see L{join})."""
        self._sawUpTo(user, fold(self._roomName(name)), since)

    def _sawUpTo(self, user: User, key: str, since: int) -> None:
        """Note that C{user}'s client has seen room C{key} up to message C{since}: joining
        it replays only newer ones. An id above any this server has given out is none of
        its own (it kept nothing and restarted): it is ignored."""
        if since > self.ids.last:
            return
        if user.seen is None:
            user.seen = {}
        user.seen[key] = max(user.seen.get(key, 0), since)

    async def _loadRecent(self, room: Room, user: User | None = None) -> None:
        """Fill C{room.recent} from the store, once, however many join at the same time."""
        if room.loading is not None:
            waiting: defer.Deferred[None] = defer.Deferred()
            room.loading.append(waiting)
            await waiting
            return
        room.loading = []
        limit = self.settings.history_on_join
        rows: list[ev.RoomMessage] | None = []
        try:
            if limit and room.key in self._spoken:
                await self.store.flush()  # what the room said before it was last emptied
                rows = await self.store.history(room.key, limit)
        except StoreUnavailable as e:
            # Joining must still work with the database down. The history is missing, and
            # left unloaded: a later join loads it once the database answers again.
            rows = None
            if user is not None and user in self.sessions:
                self.notice(user, f"#{room.name}: {e}")
        except Exception:
            _log.failure("loading the history of #{room} failed", room=room.name)
        room.recent = deque(rows, maxlen=limit) if rows is not None else None
        waiting, room.loading = room.loading, None
        for d in waiting:
            d.callback(None)

    def _replay(self, user: User, room: Room, messages: list[ev.RoomMessage]) -> None:
        if not messages:
            return
        now = self.now()
        self.deliver(user, ev.HistoryMark(room.name, len(messages), False, now))
        for message in messages:
            self.deliver(user, message)
        self.deliver(user, ev.HistoryMark(room.name, len(messages), True, now))

    async def history(self, user: User, name: str, count: int | None = None) -> None:
        """Replay the last C{count} messages of room C{name}, which C{user} is in (older
        ones from the store)."""
        room = self._memberRoom(user, name)
        most = self.settings.max_history_request
        count = count or self.settings.history_on_join or most
        if count > most:
            raise UsageError(f"at most {most} messages at once")
        recent = list(room.recent or ())
        if count > len(recent):
            await self.store.flush()  # the tail is all in the store, or queued before it
            span = Span(before=recent[0].id) if recent else None
            recent = await self.store.history(room.key, count - len(recent), span) + recent
        found = recent[-count:]
        if not found:
            self.notice(user, f"#{room.name} has no history")
        self._replay(user, room, found)

    def historySpan(
        self, user: User, name: str, limit: int, span: Span
    ) -> defer.Deferred[list[ev.RoomMessage]]:
        """Deferred list of at most C{limit} of the messages of room C{name}, which C{user}
        is in, that C{span} takes, oldest first: a client paging through history by id
        or time (IRC's CHATHISTORY). The caller delivers them, framed as its wire needs."""
        return defer.ensureDeferred(self._historySpan(user, name, limit, span))

    async def _historySpan(
        self, user: User, name: str, limit: int, span: Span
    ) -> list[ev.RoomMessage]:
        room = self._memberRoom(user, name)
        most = self.settings.max_history_request
        if not 0 < limit <= most:
            raise UsageError(f"from 1 to {most} messages at once")
        await self.store.flush()  # what was said a moment ago is asked for too
        return await self.store.history(room.key, limit, span)

    def part(self, user: User, name: str, reason: str = "left") -> None:
        """Leave room C{name}."""
        self._leave(user, self._memberRoom(user, name), reason)

    def _memberRoom(self, user: User, name: str) -> Room:
        """Room C{name}, which C{user} must be in."""
        room = user.rooms.get(fold(name))
        if room is not None:  # (a room's key is a valid name: nothing to check)
            return room
        name = self._roomName(name)
        room = user.rooms.get(fold(name))
        if room is None:
            raise NotInRoom(f"you are not in #{name}")
        return room

    def _leave(self, user: User, room: Room, reason: str) -> None:
        left = ev.Left(room.name, user.nick, self._reason(reason), self.now(), self.sourceOf(user))
        self.bus.publish(left, rooms=(room.key,))
        self._forget(user, room)

    def _reason(self, reason: str) -> str:
        # A quit or part reason is user text: bound it and make it safe like any message.
        return sanitize(reason[: self.settings.max_message_length])

    def _forget(self, user: User, room: Room) -> None:
        """Take C{user} out of C{room}, remembering how far it had seen."""
        del room.members[user.key]
        del user.rooms[room.key]
        if room.recent:
            if user.seen is None:
                user.seen = {}
            user.seen[room.key] = room.recent[-1].id
        self._dropIfUnused(room)

    def _dropIfUnused(self, room: Room) -> None:
        # Permanent rooms (with a topic) and the default room stay; their history is kept.
        if (
            not room.members
            and room.loading is None
            and room.topic is None
            and room.key != self._defaultKey
            and self.rooms.get(room.key) is room
        ):
            del self.rooms[room.key]

    # -- talking -------------------------------------------------------------------

    def say(self, user: User, name: str, text: str, kind: str = "message") -> ev.RoomMessage:
        """Say C{text} in room C{name}, which C{user} is in (C{kind} "action" for /me,
        "notice" for IRC's NOTICE); it is stored."""
        self._requireNick(user)
        room = self._memberRoom(user, name)
        self._refuseMuted(user)
        text = self._cleanText(text)
        self.counters.messages += 1
        event = ev.RoomMessage(
            kind,
            room.name,
            user.nick,
            text,
            self.now(),
            self.ids.next(),
            user.color,
            source=self.sourceOf(user),
        )
        self.store.addMessage(event)
        self.bus.publish(event, rooms=(room.key,), skip=None if user.client.echo else user.key)
        return event

    def privmsg(self, user: User, nick: str, text: str, notice: bool = False, action: bool = False):
        """Send C{text} to C{nick} only; the sender gets a copy marked outgoing.

        To an offline registered nickname the message is kept for their next login
        (a Deferred then); to anyone else offline it fails with L{NoSuchUser}. A
        C{notice} (IRC's NOTICE) is never kept. An C{action} (C{text} says what the
        sender does) is kept as the text "* sender text".
        """
        self._requireNick(user)
        self._refuseMuted(user)
        target = self.findUser(nick)
        if target is None:
            if self.directory is not None:  # on another node, perhaps
                return defer.ensureDeferred(
                    self._privmsgElsewhere(user, nick, text, notice, action)
                )
            return self._privmsgNobodyHere(user, nick, text, notice, action)
        return self._sendPrivate(user, target.nick, target.key, text, notice, action)

    def _sendPrivate(
        self, user: User, to: str, key: str, text: str, notice: bool, action: bool
    ) -> ev.PrivateMessage:
        """Send to the user C{key} (called C{to}) wherever the bus finds them; the sender
        gets a copy marked outgoing."""
        text = self._cleanText(text)
        self.counters.messages += 1
        event = ev.PrivateMessage(
            user.nick,
            to,
            text,
            self.now(),
            self.ids.next(),
            color=user.color,
            notice=notice,
            source=self.sourceOf(user),
            action=action,
        )
        self.bus.publish(event, users=(key,))
        if key != user.key:
            self.deliver(user, dataclasses.replace(event, outgoing=True))
        return event

    def _privmsgNobodyHere(self, user: User, nick: str, text: str, notice: bool, action: bool):
        if notice:
            raise NoSuchUser(f'no user "{sanitize(nick)}" is online')
        if action:
            text = f"* {user.nick} {text}"
        return defer.ensureDeferred(self._privmsgOffline(user, nick, text))

    async def _privmsgElsewhere(
        self, user: User, nick: str, text: str, notice: bool, action: bool
    ) -> ev.PrivateMessage:
        """To C{nick} on whichever node of the cluster they are on, or as to someone
        offline (kept for later, or L{NoSuchUser})."""
        try:
            nick = checkNick(nick)
        except ChatError:
            raise NoSuchUser(f'no user "{sanitize(nick)}" is online') from None
        key = fold(nick)
        assert self.directory is not None
        holder = await self.directory.locate(key)
        if holder is None or holder == self.directory.node or key in self.users:
            target = self.users.get(key)  # (one may have arrived here meanwhile)
            if target is None:
                return await self._privmsgNobodyHere(user, nick, text, notice, action)
            sent = self.privmsg(user, target.nick, text, notice, action)
            return await sent if isinstance(sent, defer.Deferred) else sent
        # As the sender spelled the name: the directory keeps keys, not spellings.
        return self._sendPrivate(user, nick, key, text, notice, action)

    async def _privmsgOffline(self, user: User, nick: str, text: str) -> ev.PrivateMessage:
        offline = NoSuchUser(f'no user "{sanitize(nick)}" is online')
        limit = self.settings.max_offline_messages
        try:
            key = fold(checkNick(nick))
        except ChatError:
            raise offline from None
        text = self._cleanText(text)
        account = await self.store.account(key) if limit and key in self._registered else None
        if account is None:
            raise offline
        event = ev.PrivateMessage(
            user.nick, account.nick, text, self.now(), self.ids.next(), color=user.color
        )
        if not await self.store.addOffline(key, event, limit):
            raise MailboxFull(f"{account.nick} has {limit} messages waiting; try again later")
        self.counters.messages += 1
        self.deliver(user, dataclasses.replace(event, outgoing=True, offline=True))
        target = self.users.get(key)
        if target is not None and target.account is not None and target.account.key == key:
            await self._deliverOffline(target)  # they logged in while it was being kept
        return event

    # -- administration (the manhole console and, later, admin commands use these) ----

    def broadcast(self, actor: Actor, text: str) -> int:
        """A server notice to every connection (on every node of a cluster); returns how
        many got it here."""
        count = len(self.sessions)
        self.bus.publish(Broadcast(sanitize(self._signed(actor, "broadcast", text))))
        return count

    def _applyBroadcast(self, event: Broadcast, rooms: tuple[str, ...]) -> None:
        notice = ev.Notice(event.text, self.now())
        for user in list(self.sessions):
            self.deliver(user, notice)

    def broadcastRoom(self, actor: Actor, room: str, text: str) -> int:
        """A server notice to the members of one room; returns how many got it."""
        text = self._signed(actor, "rbroadcast", text)
        name = self._roomName(room)
        found = self.rooms.get(fold(name))
        if found is None:
            raise NoSuchRoom(f"there is no room #{name}")
        members = len(found.members)
        self.bus.publish(ev.Notice(sanitize(text), self.now(), room=found.name), rooms=(found.key,))
        return members

    def tellUser(self, actor: Actor, nick: str, text: str) -> None:
        """A server notice to one user."""
        self.authorize(actor, "tell")
        user = self._named(nick)
        self.deliver(user, ev.Notice(sanitize(text), self.now()))

    def kick(self, actor: Actor, nick: str, reason: str = "") -> defer.Deferred[None] | None:
        """Disconnect a user; their rooms see why. (A Deferred for a cluster's user who
        may be on another node.)"""
        by = self.authorize(actor, "kick")
        who = "kicked" if actor is CONSOLE else f"kicked by {by}"
        why = f"{who}: {sanitize(reason)}" if reason else who
        farewell = f"disconnected: you were {why}"
        user = self.findUser(nick)
        if user is None and self.directory is not None:  # on another node, perhaps
            return defer.ensureDeferred(self._kickElsewhere(nick, why, farewell))
        self.end(self._named(nick), why, farewell)
        return None

    async def _kickElsewhere(self, nick: str, why: str, farewell: str) -> None:
        assert self.directory is not None
        key = fold(checkNick(nick))
        holder = await self.directory.locate(key)
        if holder is None or holder == self.directory.node:
            self.end(self._named(nick), why, farewell)  # (or NoSuchUser)
            return
        self.bus.publish(EndSession(key, why, farewell))

    def kickFromRoom(self, actor: Actor, room: str, nick: str, reason: str = "") -> ev.Kicked:
        """Put C{nick} out of one room (IRC's KICK); they stay connected, and may come
        back (a ban keeps someone out)."""
        by = self.authorize(actor, "kick")
        found = self._existingRoom(room)
        user = self._named(nick)
        if found.key not in user.rooms:
            raise NotInRoom(f"{user.nick} is not in #{found.name}")
        source = self.sourceOf(actor) if isinstance(actor, User) else None
        kicked = ev.Kicked(found.name, user.nick, by, self._reason(reason), self.now(), source)
        _log.info("{by} kicked {nick} from #{room}", by=by, nick=user.nick, room=found.name)
        self.bus.publish(kicked, rooms=(found.key,))
        self._forget(user, found)
        return kicked

    def setAway(self, user: User, text: str | None) -> None:
        """Mark C{user} away, saying why (C{text}), or back (C{None}); whoever shares a
        room with them hears it on wires that show it."""
        self._requireNick(user)
        if text is not None:
            text = sanitize(text.strip()[: self.settings.max_message_length]) or None
        if text == user.away:
            return
        user.away = text
        event = ev.Away(user.nick, text, self.now(), self.sourceOf(user))
        self.bus.publish(event, rooms=tuple(user.rooms), skip=user.key)

    def setRealname(self, user: User, text: str) -> str:
        """Change C{user}'s "real name" (IRC's SETNAME), made safe and cut to
        C{REALNAME_LENGTH}; whoever shares a room with them, and they, hear of it on
        wires that show it. Returns the name as kept."""
        self._requireNick(user)
        realname = cleanRealname(text)
        if not realname:
            raise EmptyText("a real name cannot be blank")
        if realname != (user.realname or user.nick):
            user.realname = realname
            event = ev.RealnameChanged(user.nick, realname, self.now(), self.sourceOf(user))
            self.bus.publish(event, rooms=tuple(user.rooms), users=(user.key,))
        return realname

    def authorize(self, actor: Actor, command: str) -> str:
        """The name C{actor} does an admin's C{command} under; refuses anyone else.

        Every privileged operation asks here, whatever wire it came from, so that no
        wire's grammar or command table can forget the check.
        """
        if isinstance(actor, Console):
            return actor.nick
        if not self.isAdmin(actor):
            raise NotPermitted(f"not permitted: /{command} is for admins")
        return actor.nick or "?"

    def _signed(self, actor: Actor, command: str, text: str) -> str:
        by = self.authorize(actor, command)
        return text if actor is CONSOLE else f"{text} (from {by})"

    async def ban(
        self,
        actor: Actor,
        nick: str,
        duration: float | None = None,
        reason: str = "",
        address: bool = False,
    ) -> Sanction:
        """Ban a nickname for C{duration} seconds or until lifted; a user online under it is
        disconnected. With C{address}, also the address that user is online from: never
        implied, since everyone behind that address (a NAT, a proxy) is banned with it."""
        by = self.authorize(actor, "ban")
        target = self._person(nick)
        key = target.key if target is not None else fold(checkNick(nick))
        host = None
        if address:
            host = target.host if target is not None else await self._addressElsewhere(key)
            if host is None:
                raise NoSuchUser(f'no user "{sanitize(nick)}" is online: no address to ban')
            if isLoopback(host):
                raise NotPermitted(
                    f"{host} is a loopback address: banning it would ban everyone who "
                    "connects from this machine (or through a proxy on it)"
                )
            if host in self.trustedProxies:
                raise NotPermitted(
                    f"{host} is a trusted proxy (trusted_proxies): banning it would ban "
                    "everyone who connects through it"
                )
        now = self.now()
        ban = Sanction(
            "ban",
            key,
            target.nick if target is not None else nick,
            host,
            now + duration if duration else None,
            sanitize(reason[: self.settings.max_message_length]),
            by,
            now,
        )
        _log.info(
            "{by} banned {nick} ({host}) {span}",
            by=by,
            nick=ban.nick,
            host=ban.host or "-",
            span=describeSanction(ban, now),
        )
        self.bus.publish(SanctionAdded(ban))  # in force everywhere: _applySanction
        await self.store.addSanction(ban)
        return ban

    async def _addressElsewhere(self, key: str) -> str | None:
        """The address user C{key} is connected from on another node of the cluster
        (asked of that node), or C{None}: on no node, or no answer in time."""
        _, host = await self.askHolder(key, lambda node, n: AddressWanted(key, node, n))
        return host

    async def askHolder(
        self, key: str, question: Callable[[str, int], object]
    ) -> tuple[str | None, Any]:
        """Ask the node where user C{key} is connected C{question(this node, request
        number)}, if that is another node of the cluster: C{(that node, its answer)}
        (the value of the request's L{AddressFound} or L{ProfileFound}); the answer is
        None if none came within a third of C{cluster_presence_timeout}, and both are
        None if C{key} is on no other node."""
        if self.directory is None:
            return None, None
        holder = await self.directory.locate(key)
        if holder is None or holder == self.directory.node:
            return None, None
        self._requests += 1
        request = self._requests
        answer: defer.Deferred = defer.Deferred()
        self._asked[request] = answer
        answer.addTimeout(self.settings.cluster_presence_timeout / 3, self.clock)
        self.bus.publish(question(self.directory.node, request))
        try:
            return holder, await answer
        except defer.TimeoutError:
            return holder, None
        finally:
            self._asked.pop(request, None)

    def _applyAddressWanted(self, event: AddressWanted, rooms: tuple[str, ...]) -> None:
        user = self._askedAbout(event.key, event.asker)
        if user is not None:
            self.bus.publish(AddressFound(event.request, event.asker, user.host))

    def _applyProfileWanted(self, event: ProfileWanted, rooms: tuple[str, ...]) -> None:
        user = self._askedAbout(event.key, event.asker)
        if user is not None:
            self.bus.publish(ProfileFound(event.request, event.asker, self.profileOf(user)))

    def _askedAbout(self, key: str, asker: str) -> User | None:
        """The user another node's question (see L{askHolder}) is about, if they are
        here: this node answers it."""
        if self.directory is None or asker == self.directory.node:
            return None
        return self.users.get(key)

    def _applyAddressFound(self, event: AddressFound, rooms: tuple[str, ...]) -> None:
        self._answered(event.asker, event.request, event.host)

    def _applyProfileFound(self, event: ProfileFound, rooms: tuple[str, ...]) -> None:
        self._answered(event.asker, event.request, event.profile)

    def _answered(self, asker: str, request: int, value: object) -> None:
        if self.directory is not None and asker == self.directory.node:
            answer = self._asked.pop(request, None)
            if answer is not None:
                answer.callback(value)

    async def mute(self, actor: Actor, nick: str, duration: float | None = None) -> Sanction:
        """Refuse what a nickname says (rooms and private messages) for a while."""
        by = self.authorize(actor, "mute")
        target = self._person(nick)
        key = target.key if target is not None else fold(checkNick(nick))
        now = self.now()
        name = target.nick if target is not None else nick
        mute = Sanction("mute", key, name, None, now + duration if duration else None, "", by, now)
        _log.info("{by} muted {nick} {span}", by=by, nick=name, span=describeSanction(mute, now))
        self.bus.publish(SanctionAdded(mute))  # in force everywhere: _applySanction
        await self.store.addSanction(mute)
        return mute

    async def lift(self, actor: Actor, kind: str, nick: str) -> None:
        """Lift a ban (C{kind} "ban") or a mute ("mute")."""
        by = self.authorize(actor, f"un{kind}")
        key = fold(checkNick(nick))
        held = self.sanctions.remove(kind, key)
        stored = await self.store.removeSanction(kind, key)
        if held is None and not stored:
            raise NotSanctioned(f'"{nick}" is not {"banned" if kind == "ban" else "muted"}')
        _log.info("{by} lifted the {kind} of {nick}", by=by, kind=kind, nick=nick)
        self.bus.publish(SanctionLifted(kind, key, by))  # lifted everywhere: _applyLift

    async def createAccount(
        self, actor: Actor, nick: str, password: str, admin: bool = False
    ) -> Account:
        """Register C{nick} with C{password} for someone (the console's way to make the
        first admin, or an account whose name the config file reserves)."""
        by = self.authorize(actor, "createaccount")
        nick = checkNick(nick)
        self._checkPassword(password)
        hashed = await self.passwords.hash(password)
        account = Account(fold(nick), nick, hashed, None, admin, self.now())
        added = await self.store.addAccount(account)
        self._registered.add(account.key)
        if not added:
            raise NickRegistered(f'"{nick}" is already registered')
        _log.info(
            "{by} created the account {nick}{admin}",
            by=by,
            nick=nick,
            admin=" (admin)" if admin else "",
        )
        return account

    async def resetPassword(self, actor: Actor, nick: str, password: str) -> Account:
        """Give the account C{nick} a new password (its owner forgot theirs)."""
        by = self.authorize(actor, "resetpassword")
        account = await self._existingAccount(nick)
        self._checkPassword(password)
        hashed = await self.passwords.hash(password)
        await self.store.setPassword(account.key, hashed)
        account = dataclasses.replace(account, passwordHash=hashed)
        _log.info("{by} reset the password of {nick}", by=by, nick=account.nick)
        return account

    async def deleteAccount(self, actor: Actor, nick: str) -> Account:
        """Delete the account C{nick} and the private messages kept for it; whoever is
        logged in to it stays connected, as a guest."""
        by = self.authorize(actor, "deleteaccount")
        account = await self._existingAccount(nick)
        await self.store.deleteAccount(account.key)
        self._registered.discard(account.key)
        _log.info("{by} deleted the account {nick}", by=by, nick=account.nick)
        for user in list(self.sessions):
            if user.account is not None and user.account.key == account.key:
                user.account = None
                self.notice(user, f"{by} deleted your account {account.nick}")
        return account

    async def renameAccount(self, actor: Actor, nick: str, newNick: str) -> Account:
        """Give the account C{nick} the name C{newNick}, with the private messages kept
        for it and its bans and mutes. Whoever is logged in to it is renamed too; what
        the old name said in rooms stays said by it."""
        by = self.authorize(actor, "renameaccount")
        newNick = checkNick(newNick)
        account = await self._existingAccount(nick)
        newKey = fold(newNick)
        if newKey != account.key:
            holder = self.users.get(newKey)
            if holder is not None and (holder.account is None or holder.account.key != account.key):
                raise NickTaken(f'the nickname "{newNick}" is in use by someone online')
            self._refuseReserved(newKey, newNick)
            now = self.now()
            for kind, what in (("ban", "banned"), ("mute", "muted")):
                if self.sanctions.active(kind, newKey, now) is not None:
                    raise NotPermitted(f'the nickname "{newNick}" is {what}: /un{kind} it first')
        claimed = self.directory is not None and newKey != account.key
        if claimed and await self.directory.claim(newKey) is not None:
            raise NickTaken(f'the nickname "{newNick}" is in use by someone online')
        try:
            return await self._renameAccount(by, account, newKey, newNick)
        finally:
            if claimed and newKey not in self.users:
                self.directory.release(newKey)  # nobody here took it

    async def _renameAccount(self, by: str, account: Account, newKey: str, newNick: str):
        if not await self.store.renameAccount(account.key, newKey, newNick):
            self._registered.add(newKey)  # it is: another account's
            raise NickRegistered(f'the nickname "{newNick}" is registered to another account')
        renamed = dataclasses.replace(account, key=newKey, nick=newNick)
        self._registered.discard(account.key)
        self._registered.add(newKey)
        self.sanctions.rename(account.key, newKey, newNick)
        _log.info("{by} renamed the account {old} to {new}", by=by, old=account.nick, new=newNick)
        for user in list(self.sessions):
            if user.account is not None and user.account.key == account.key:
                user.account = renamed
                self.notice(user, f"{by} renamed your account {account.nick} to {newNick}")
                await self._applyNick(user, newNick, newKey)
        return renamed

    async def _existingAccount(self, nick: str) -> Account:
        account = await self.store.account(fold(checkNick(nick)))
        if account is None:
            raise NoSuchUser(f'"{sanitize(nick)}" is not registered')
        return account

    async def setAdmin(self, actor: Actor, nick: str, admin: bool) -> Account:
        """Promote a registered nickname to admin, or demote it."""
        by = self.authorize(actor, "promote" if admin else "demote")
        key = fold(checkNick(nick))
        if not admin and key in self.adminKeys:
            raise NotPermitted(f"{nick} is an admin in the config file; remove them there")
        account = await self._existingAccount(nick)
        await self.store.setAdmin(key, admin)
        account = dataclasses.replace(account, admin=admin)
        _log.info(
            "{by} {did} {nick}", by=by, did="promoted" if admin else "demoted", nick=account.nick
        )
        source = self.sourceOf(actor) if isinstance(actor, User) else None
        self.bus.publish(AdminGranted(key, admin, by, source))  # wherever they are logged in
        return account

    def _applyAdmin(self, event: AdminGranted, rooms: tuple[str, ...]) -> None:
        target = self.users.get(event.key)
        if target is None or target.account is None or target.account.key != event.key:
            return
        target.account = dataclasses.replace(target.account, admin=event.admin)
        by = event.by
        self._loggedIn(
            target,
            f"{by} made you an admin" if event.admin else f"{by} took your admin rights away",
            marked=False,  # the text says it
        )
        for room in list(target.rooms.values()):
            changed = ev.AdminChanged(
                room.name, target.nick, event.admin, by, self.now(), event.source
            )
            self.bus.publish(changed, rooms=(room.key,))

    def topicOf(self, room: str) -> ev.Topic:
        return self._topicEvent(self._existingRoom(room))

    def _existingRoom(self, room: str) -> Room:
        name = self._roomName(room)
        found = self.rooms.get(fold(name))
        if found is None:
            raise NoSuchRoom(f"there is no room #{name}")
        return found

    async def setTopic(self, actor: Actor, room: str, topic: str) -> ev.Topic:
        """Set a room's topic (creating the room); the room becomes permanent."""
        by = self.authorize(actor, "topic")
        topic = self._cleanText(topic)  # before the room exists: a refusal leaves none
        found = self._roomOrNew(room)
        source = self.sourceOf(actor) if isinstance(actor, User) else None
        now = self.now()
        event = ev.Topic(found.name, topic, by, now, now, source)
        self.bus.publish(event, rooms=(found.key,))  # which sets it (_applyTopic)
        await self.store.saveRoom(
            RoomRecord(found.key, found.name, found.topic, found.topicBy, found.topicTs)
        )
        return event

    def _topicEvent(self, room: Room) -> ev.Topic:
        return ev.Topic(room.name, room.topic, room.topicBy, room.topicTs, self.now())

    def _refuseMuted(self, user: User) -> None:
        mute = self.sanctions.active("mute", user.key, self.now())
        if mute is not None:
            raise Muted(f"you are muted {describeSanction(mute, self.now())}")

    def bannedAddress(self, user: User) -> str | None:
        """Why a new connection must be refused (its address is banned), or C{None}."""
        ban = self.sanctions.bannedHost(user.host, self.now())
        if ban is None:
            return None
        return f"this address is banned {describeSanction(ban, self.now())}"

    def closeRoom(self, actor: Actor, room: str, reason: str = "room closed") -> int:
        """Disconnect everyone in a room (it then disappears; on every node of a
        cluster); returns how many were disconnected here."""
        self.authorize(actor, "closeroom")
        name = self._roomName(room)
        found = self.rooms.get(fold(name))
        if found is None:
            raise NoSuchRoom(f"there is no room #{name}")
        count = len(found.members)
        self.bus.publish(CloseRoom(found.key, found.name, reason))  # on every node
        return count

    def _applyCloseRoom(self, event: CloseRoom, rooms: tuple[str, ...]) -> None:
        found = self.rooms.get(event.key)
        for user in list(found.members.values()) if found is not None else ():
            self.end(user, event.reason, f"disconnected: #{event.name} was closed ({event.reason})")

    def reset(self, actor: Actor, reason: str = "server reset") -> int:
        """Disconnect every connection and empty every room (on every node of a
        cluster); returns how many were disconnected here."""
        self.authorize(actor, "reset")
        count = len(self.sessions)
        self.bus.publish(Reset(reason))
        return count

    def _applyReset(self, event: Reset, rooms: tuple[str, ...]) -> None:
        sessions = list(self.sessions)
        self._forgetAll()
        for user in sessions:
            self._close(user, f"disconnected: {event.reason}")

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

    def _person(self, nick: str) -> User | None:
        """Who a ban or mute of C{nick} is for: its holder, or else whoever held it last
        on a connection still open (someone who renamed to get out of the way)."""
        return self._personByKey(fold(checkNick(nick)))

    def _personByKey(self, key: str) -> User | None:
        holder = self.users.get(key)
        if holder is not None:
            return holder
        return next((u for u in self.users.values() if key in u.formerKeys), None)

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
        self.rooms = {
            key: room
            for key, room in self.rooms.items()
            if key == self._defaultKey or room.topic is not None
        }
        for user in closing:
            user.rooms.clear()

    # -- service -------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.startedAt = self.now()
        self._pruner.start(self.settings.retention_interval, now=True)
        if self.presence is not None:
            self.presence.start()
        self.checkedAdmins = defer.ensureDeferred(self._warnAdminsWithoutAccounts())

    async def _warnAdminsWithoutAccounts(self) -> None:
        for nick in self.settings.admins:
            try:
                found = await self.store.account(fold(nick))
            except StoreUnavailable as e:
                _log.warn("admins: cannot check the accounts of the admins: {why}", why=str(e))
                return
            if found is None:
                _log.warn(
                    "admins: {nick} has no account yet, so the name is reserved: nobody can "
                    "use or register it; make the account on the console with "
                    "create_account({nick!r}, PASSWORD)",
                    nick=nick,
                )

    def stopService(self) -> defer.Deferred[None]:
        """Tell everyone the server is going down, close every session, and store what
        is queued: the Deferred fires once it is committed."""
        super().stopService()
        self.nickDeadlines.stop()
        if self._pruner.running:
            self._pruner.stop()
        if self.presence is not None:
            self.presence.stop()
        sessions = list(self.sessions)
        self._forgetAll()
        for user in sessions:
            self._close(user, "server shutting down")
        self.logLimit.stop()
        if self._closed is None:
            self._closed = self.store.close()
        return self._closed

    def _prune(self) -> defer.Deferred[None] | None:
        """Apply the retention settings, in the store's threads."""
        most, days = self.settings.retention_max_messages, self.settings.retention_days
        if not most and not days:
            return None

        def done(deleted: int) -> None:
            if deleted:
                _log.info("retention: deleted {count} old messages", count=deleted)

        def failed(failure) -> None:
            if failure.check(StoreUnavailable):
                _log.error("retention: pruning old messages failed: {why}", why=failure.value)
            else:
                _log.failure("pruning old messages failed", failure)

        d = self.store.prune(self.now(), most, days * 86400)
        # A failed prune is logged and tried again next time; it must not stop the loop.
        return d.addCallbacks(done, failed)

    # -- helpers -------------------------------------------------------------------

    def _requireNick(self, user: User) -> None:
        if user.nick is None:
            raise NickRequired("choose a nickname first: type it, or /nick NAME")

    def _roomOrNew(self, name: str) -> Room:
        """Room C{name}, created (within C{max_rooms}) if it does not exist."""
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
        return room

    def _roomName(self, name: str) -> str:
        return checkRoom(name, self.settings.max_room_name_length)

    def _cleanText(self, text: str) -> str:
        text = text.strip()
        limit = self.settings.max_message_length
        if len(text) > limit:  # checked before escaping, which only makes text longer
            raise MessageTooLong(f"message too long (the limit is {limit} characters)")
        if looksLikeSecret(text):
            # Whatever the wire, a password typed as a command never reaches a room, a
            # person, the history or the log by way of a message.
            raise UsageError(
                "that looks like a command with a password, so it was not sent; "
                "commands start with / at the beginning of the line"
            )
        text = sanitize(text, formatting=True)  # IRC's bold, colours...: see text.plain
        if invisible(text):  # (all() of nothing is true: empty text too)
            raise EmptyText("nothing to send")
        return text
