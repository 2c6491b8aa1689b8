"""Persistence: accounts, permanent rooms, sanctions, history and offline messages.

One small interface (L{IStore}) and three backends:

- C{memory}: dictionaries in this process; nothing survives a restart (tests, trials).
- SQLite (the default): a file, created with its schema on first start.
- PostgreSQL: a C{postgresql://} URL, for a database shared beyond one machine.

Every method that touches a database returns a Deferred and runs in a thread pool
(L{twisted.enterprise.adbapi}); none blocks the reactor. The exception is L{IStore.load},
which runs once at start-up, before the reactor starts, so that a server never accepts
connections before it knows its bans and rooms (and a broken database stops start-up
with one line, like a port in use).

How long the service waits for the store is bounded: L{chatserv.store.guard} puts a
deadline (C{db_timeout}) on every Deferred and turns database failures into a clear
refusal (L{chatserv.errors.StoreUnavailable}).

Room messages are not written one by one: L{IStore.addMessage} queues them and a batch
is committed every C{flush_interval} seconds (or sooner when C{batch_size} wait). After a
graceful stop everything is written; after C{kill -9} at most the messages accepted in
the last C{flush_interval} (plus a batch being committed at that instant) are lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zope.interface import Interface

from chatserv.events import PrivateMessage, RoomMessage

__all__ = [
    "Account",
    "IStore",
    "PrivateMessage",
    "RoomMessage",
    "RoomRecord",
    "Sanction",
    "Span",
    "State",
    "StoreError",
    "openStore",
]


class StoreError(Exception):
    """The store cannot be opened or used; C{str()} is one line saying why."""


@dataclass(frozen=True, slots=True)
class Account:
    """A registered nickname. C{key} is C{names.fold(nick)}."""

    key: str
    nick: str  # as written when registered
    passwordHash: str  # argon2id, never the password
    color: str | None = None  # "#rrggbb"
    admin: bool = False  # promoted by an admin (admins named in the config are not stored)
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """A permanent room: one an admin gave a topic. It outlives restarts and emptiness."""

    key: str
    name: str
    topic: str
    topicBy: str
    topicTs: float


@dataclass(frozen=True, slots=True)
class Sanction:
    """A ban or a mute of a nickname (and, for bans, the address it was used from)."""

    kind: str  # "ban" or "mute"
    key: str  # fold(nick)
    nick: str
    host: str | None  # IP address banned along with the nick, if the user was online
    until: float | None  # POSIX time it ends; None: until lifted
    reason: str
    by: str  # the admin's nick
    ts: float


@dataclass(frozen=True, slots=True)
class State:
    """What the service needs before it accepts anyone (see L{IStore.load})."""

    lastId: int = 0  # the highest message id ever stored (room and offline messages)
    rooms: list[RoomRecord] = field(default_factory=list)
    sanctions: list[Sanction] = field(default_factory=list)  # unexpired only
    # The keys of every account, and of every room with messages stored: choosing a
    # nickname nobody registered, or first joining a room nobody spoke in, then asks
    # the database nothing.
    accounts: frozenset[str] = frozenset()
    spoken: frozenset[str] = frozenset()
    node: int = 0  # the slot this process's message ids carry (chatserv.ids)
    # The key of IRC's host cloaks, made once and kept ("": none kept, the memory store).
    cloakKey: str = ""


@dataclass(frozen=True, slots=True)
class Span:
    """Which of a room's messages a history query takes: those with an id above C{after}
    and below C{before}, sent at or after C{since} and before C{until} (POSIX times).
    Any bound may be C{None}. Of those, the newest ones are taken, or the oldest if
    C{oldest}: paging back (C{/history}, CHATHISTORY BEFORE) or forward (AFTER)."""

    after: int | None = None
    before: int | None = None
    since: float | None = None
    until: float | None = None
    oldest: bool = False

    def holds(self, message: RoomMessage) -> bool:
        return (
            (self.after is None or message.id > self.after)
            and (self.before is None or message.id < self.before)
            and (self.since is None or message.ts >= self.since)
            and (self.until is None or message.ts < self.until)
        )


class IStore(Interface):
    """What the chat service keeps. Room and nick keys are C{names.fold()}ed."""

    def load():
        """Return the L{State} to start with. Blocking: called once, before the reactor runs.

        A store that other processes may write to leases its node slot here."""

    def watchNode(callback):
        """Call C{callback(slot)} whenever this process's node slot changes after
        L{load} (its lease was lost while the database was unreachable, and another
        process took the slot)."""

    def addMessage(message):
        """Queue a L{RoomMessage} (never C{history}) for the next batch. Never fails."""

    def flush():
        """Deferred firing once every message added so far is committed."""

    def history(roomKey, limit, span=None):
        """Deferred list of at most C{limit} L{RoomMessage}s of a room, oldest first.

        The newest ones, or those the L{Span} C{span} takes. Messages still queued are
        not included: L{flush} first when they must be.
        """

    def account(key):
        """Deferred L{Account} or C{None}."""

    def addAccount(account):
        """Deferred C{True}, or C{False} if the key is already registered."""

    def setPassword(key, passwordHash):
        """Deferred C{None}."""

    def setColor(key, color):
        """Deferred C{None}; C{color} may be C{None} (no colour)."""

    def setAdmin(key, admin):
        """Deferred C{None}."""

    def deleteAccount(key):
        """Deferred C{True} if the account existed; it and the private messages kept for
        it are gone."""

    def renameAccount(key, newKey, newNick):
        """Deferred C{True} once the account C{key} is C{newNick} (key C{newKey}), with
        the private messages kept for it and its bans and mutes; C{False} (nothing
        changed) if there is no such account or C{newKey} is another account's."""

    def saveRoom(record):
        """Deferred C{None}: insert or replace the L{RoomRecord} with its key."""

    def addSanction(sanction):
        """Deferred C{None}: insert or replace the L{Sanction} of that kind and key."""

    def removeSanction(kind, key):
        """Deferred C{True} if there was one to remove."""

    def addOffline(toKey, message, limit):
        """Keep a L{PrivateMessage} for an offline account.

        Deferred C{True}, or C{False} (nothing stored) when C{limit} already wait for it.
        """

    def takeOffline(toKey):
        """Deferred list of the L{PrivateMessage}s kept for C{toKey}, oldest first (with
        C{offline} set); they are deleted."""

    def prune(now, maxPerRoom, maxAge):
        """Delete room messages beyond the newest C{maxPerRoom} of each room and any
        (room or offline) older than C{maxAge} seconds; 0 disables either rule.
        Deferred count of rows deleted. Deletes in small chunks."""

    def backup(path):
        """Deferred: a consistent copy of the whole database written to the new file
        C{path} while the server runs, room messages queued until then included (unless
        commits are failing); fires with the copy's absolute path. Fails with
        L{StoreError} for a store that cannot (memory, PostgreSQL: use pg_dump)."""

    def close():
        """Deferred firing once everything queued is committed and connections are closed."""


def openStore(
    url: str,
    reactor=None,
    flushInterval: float = 0.1,
    batchSize: int = 1000,
    exclusive: bool = True,
    checkInterval: float = 0.0,
) -> IStore:
    """Open the store named by C{url}, creating or migrating its schema.

    C{"memory"}: in this process only. C{"postgresql://..."} (or C{"postgres://"}):
    a PostgreSQL database. Anything else: the path of a SQLite file (or
    C{"sqlite:PATH"}), held by this process alone if C{exclusive}, its file checked every
    C{checkInterval} seconds (0: never; see L{chatserv.store.sqlitefile}). Blocking;
    raises L{StoreError} with one line on failure.
    """
    if url == "memory":
        from chatserv.store.memory import MemoryStore

        return MemoryStore()
    from chatserv.store import sql

    if url.startswith(("postgresql://", "postgres://")):
        return sql.openPostgreSQL(url, reactor, flushInterval, batchSize)
    path = url.removeprefix("sqlite:")
    return sql.openSQLite(path, reactor, flushInterval, batchSize, exclusive, checkInterval)
