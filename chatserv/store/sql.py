"""SQLite and PostgreSQL behind L{IStore}: one store class, two dialects.

Start-up (L{openSQLite}, L{openPostgreSQL}, L{SQLStore.load}) is blocking and uses one
plain DB-API connection: it runs before the reactor, and a database that cannot be used
stops the server there with one line (L{StoreError}). At run time every call goes through
a L{twisted.enterprise.adbapi.ConnectionPool} and returns a Deferred. (How long the
service waits for one is L{chatserv.store.guard}'s business.)

SQL is written once with C{?} placeholders; PostgreSQL (psycopg 3) gets them as C{%s}.

Room messages are batched: L{SQLStore.addMessage} only queues; a timer commits the queue
in one transaction (C{executemany}) C{flushInterval} after the first message, or at once
when C{batchSize} wait. While the database cannot commit (down, disk full, read-only),
batches are kept and retried (with a growing delay, at most L{MAX_RETRY_DELAY}), and the
log says so at once and then every L{ALARM_REPEAT} seconds while it lasts; the queue is
bounded (see L{QUEUE_LIMIT_BATCHES}) so that a long outage cannot exhaust memory.

SQLite runs in WAL mode, by default with C{locking_mode=EXCLUSIVE}: the WAL index is then
kept in this process's memory instead of a memory-mapped C{-shm} file, whose pages fault
(SIGBUS, which kills the process without a word) once the file cannot be written. The
price is that no other process can open the database while the server runs
(L{SQLStore.backup} copies it). L{chatserv.store.sqlitefile} watches the file itself.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import unquote

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from chatserv.events import PrivateMessage, RoomMessage
from chatserv.names import fold
from chatserv.store import Account, IStore, RoomRecord, Sanction, Span, State, StoreError
from chatserv.store.nodes import NodeLease
from chatserv.store.schema import MIGRATIONS, SCHEMA_VERSION_TABLE, VERSION
from chatserv.store.sqlitefile import ALARM_REPEAT, FileWatch, fsync, identity, remove, unwritable

__all__ = ["SQLStore", "openPostgreSQL", "openSQLite"]

log = Logger()

PRUNE_CHUNK = 5000  # rows per prune transaction: short enough never to hold the database long
MAX_RETRY_DELAY = 5.0  # seconds between attempts to commit while the database is down
# While the database is down (or cannot keep up), messages wait in memory. Beyond this many
# batches the oldest are dropped, logged as critical: losing old history beats running out
# of memory and losing the whole server. 100 batches is far more than a healthy database
# ever has waiting (bench/store.py: a burst of 50,000 in well under a second is absorbed).
QUEUE_LIMIT_BATCHES = 100
CLOSE_GIVE_UP = 10.0  # close() stops retrying a down database after this many seconds
SQLITE_BUSY_TIMEOUT = 5.0  # seconds a write waits for another process's lock
CONNECT_TIMEOUT = 10  # seconds, PostgreSQL


@dataclass(frozen=True)
class Dialect:
    """What differs between the two databases; everything else is shared."""

    name: str
    module: ModuleType  # the DB-API module
    qmark: bool  # placeholders are "?" (else "%s")
    begin: str | None  # statement opening a read transaction (None: implicit)
    beginWrite: str | None  # ... and a write transaction
    lockSchema: str | None  # serialises concurrent start-ups' migrations
    lockMailbox: str | None  # serialises addOffline per recipient (limit check + insert)

    def sql(self, text: str) -> str:
        return text if self.qmark else text.replace("?", "%s")

    def rowError(self, error: BaseException) -> bool:
        """Whether C{error} is about the rows written (retrying the same rows cannot help),
        not about the database being unreachable, locked or broken."""
        m = self.module
        return isinstance(error, (m.DataError, m.IntegrityError, ValueError, TypeError))


# Python's sqlite3 runs in autocommit mode here (isolation_level=None) and every
# interaction opens its own transaction: a write takes the write lock at once (IMMEDIATE),
# so a read-then-write interaction cannot fail half-way on a lock.
SQLITE = Dialect("SQLite", sqlite3, True, "BEGIN", "BEGIN IMMEDIATE", None, None)


def _postgresqlDialect(psycopg: ModuleType) -> Dialect:
    return Dialect(
        "PostgreSQL",
        psycopg,
        False,
        None,
        None,
        "SELECT pg_advisory_xact_lock(hashtext('chatserv.schema'))",
        "SELECT pg_advisory_xact_lock(hashtext('chatserv.offline:' || ?))",
    )


# -- SQL ---------------------------------------------------------------------------------

_INSERT_MESSAGE = (
    "INSERT INTO messages (id, room_key, room, kind, sender, text, ts, color)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    # No ON CONFLICT: an id already taken is an error, found and logged row by row (see
    # _insertCarefully), never a message dropped without a word.
)
_MESSAGE_ROW = "SELECT id, room_key, room, kind, sender, text, ts, color FROM messages WHERE id = ?"
_HISTORY = "SELECT id, room, kind, sender, text, ts, color FROM messages WHERE room_key = ?"
# A Span's bounds, each a condition of the query when given.
_SPAN = (("after", " AND id > ?"), ("before", " AND id < ?"), ("since", " AND ts >= ?"),
         ("until", " AND ts < ?"))  # fmt: skip
_ACCOUNT = (
    "SELECT nick_key, nick, password_hash, color, admin, created FROM accounts WHERE nick_key = ?"
)
_ADD_ACCOUNT = (
    "INSERT INTO accounts (nick_key, nick, password_hash, color, admin, created)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (nick_key) DO NOTHING"
)
_SAVE_ROOM = (
    "INSERT INTO rooms (room_key, name, topic, topic_by, topic_ts) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (room_key) DO UPDATE SET name = excluded.name, topic = excluded.topic,"
    " topic_by = excluded.topic_by, topic_ts = excluded.topic_ts"
)
_ROOMS = "SELECT room_key, name, topic, topic_by, topic_ts FROM rooms ORDER BY room_key"
_ADD_SANCTION = (
    "INSERT INTO sanctions (kind, nick_key, nick, host, until_ts, reason, by_nick, ts)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (kind, nick_key) DO UPDATE SET nick = excluded.nick, host = excluded.host,"
    " until_ts = excluded.until_ts, reason = excluded.reason, by_nick = excluded.by_nick,"
    " ts = excluded.ts"
)
_SANCTIONS = (
    "SELECT kind, nick_key, nick, host, until_ts, reason, by_nick, ts FROM sanctions"
    " WHERE until_ts IS NULL OR until_ts >= ? ORDER BY kind, nick_key"
)
# The limit check and the insert are one statement: no window between them.
_ADD_OFFLINE = (
    "INSERT INTO offline_messages (id, to_key, sender, recipient, text, ts, color)"
    " SELECT ?, ?, ?, ?, ?, ?, ?"
    " WHERE (SELECT COUNT(*) FROM offline_messages WHERE to_key = ?) < ?"
)
_TAKE_OFFLINE = (
    "DELETE FROM offline_messages WHERE to_key = ? RETURNING id, sender, recipient, text, ts, color"
)
_CROWDED_ROOMS = "SELECT room_key FROM messages GROUP BY room_key HAVING COUNT(*) > ?"
_NEWEST_TO_PRUNE = "SELECT id FROM messages WHERE room_key = ? ORDER BY id DESC LIMIT 1 OFFSET ?"
_PRUNE_ROOM = (
    "DELETE FROM messages WHERE id IN"
    " (SELECT id FROM messages WHERE room_key = ? AND id <= ? LIMIT ?)"
)
_PRUNE_OLD = "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE ts < ? LIMIT ?)"
# The first process to start makes the key; one starting at the same moment keeps it.
_MAKE_KEY = "INSERT INTO server_keys (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
_KEY = "SELECT value FROM server_keys WHERE name = ?"


def _serverKey(cursor: Any, sql: Callable[[str], str], name: str) -> str:
    """The shared key C{name}, made (32 random bytes, in hex) if there is none yet."""
    cursor.execute(sql(_MAKE_KEY), (name, os.urandom(32).hex()))
    cursor.execute(sql(_KEY), (name,))
    return cursor.fetchone()[0]


def _messageRow(m: RoomMessage) -> tuple:
    return (m.id, fold(m.room), m.room, m.kind, m.sender, m.text, m.ts, m.color)


def _oneLine(error: BaseException, secrets: Sequence[str] = ()) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


# -- start-up ------------------------------------------------------------------------------


def _migrate(connection: Any, dialect: Dialect) -> None:
    """Bring the schema to L{VERSION}, one migration per transaction.

    Each step re-reads the version under a lock, so two servers starting at once against
    one database do not both apply a migration.
    """
    cursor = connection.cursor()
    while True:
        if dialect.beginWrite:
            cursor.execute(dialect.beginWrite)
        if dialect.lockSchema:
            cursor.execute(dialect.lockSchema)
        cursor.execute(SCHEMA_VERSION_TABLE)
        cursor.execute("SELECT MAX(version) FROM schema_version")
        current = cursor.fetchone()[0] or 0
        if current > VERSION:
            connection.rollback()
            raise StoreError(
                f"the {dialect.name} database has schema version {current}, newer than the"
                f" {VERSION} this chatserv knows: upgrade chatserv (or use another database)"
            )
        if current == VERSION:
            connection.commit()
            return
        for statement in MIGRATIONS[current]:
            cursor.execute(statement)
        cursor.execute(
            dialect.sql("INSERT INTO schema_version (version, applied) VALUES (?, ?)"),
            (current + 1, time.time()),
        )
        connection.commit()
        log.info(
            "{database} schema migrated to version {version}",
            database=dialect.name,
            version=current + 1,
        )


def _checkBatching(flushInterval: float, batchSize: int) -> None:
    if not flushInterval >= 0:
        raise StoreError(f"the flush interval must be 0 or more seconds, not {flushInterval!r}")
    if not isinstance(batchSize, int) or batchSize < 1:
        raise StoreError(f"the batch size must be a positive whole number, not {batchSize!r}")


def _sqliteSession(connection: sqlite3.Connection, exclusive: bool) -> None:
    if exclusive:
        # Set before the first read: the WAL index then lives in this process's heap, not
        # in a -shm file mapped into memory (see the module docstring).
        connection.execute("PRAGMA locking_mode=EXCLUSIVE")
    # Readers do not block the writer nor the writer readers; persistent in the file (and
    # set again on every connection: a file written anew from a copy starts without it).
    connection.execute("PRAGMA journal_mode=WAL")
    # With WAL, NORMAL syncs at checkpoints, not at every commit: a power cut may lose the
    # last commits but never corrupts the file.
    connection.execute("PRAGMA synchronous=NORMAL")


def _sqliteReason(error: BaseException, exclusive: bool) -> str:
    text = _oneLine(error)
    if exclusive and "locked" in text:
        text += (
            " (another process has it open; while chatserv runs it keeps its SQLite"
            " database to itself: see [storage] sqlite_exclusive)"
        )
    return text


def openSQLite(
    path: str,
    reactor: Any = None,
    flushInterval: float = 0.1,
    batchSize: int = 1000,
    exclusive: bool = True,
    checkInterval: float = 0.0,
) -> SQLStore:
    """Open (creating or migrating) the SQLite database file C{path}. Blocking.

    C{exclusive}: hold the database for this process alone (C{locking_mode=EXCLUSIVE}).
    C{checkInterval}: seconds between two checks of the file (see L{FileWatch}); 0: none.

    @raise StoreError: the file cannot be opened, written or used, or its schema is too new.
    """
    _checkBatching(flushInterval, batchSize)
    if not path or path == ":memory:":
        raise StoreError(
            f"{path!r} is not a SQLite file name (for a store in memory, use 'memory')"
        )
    if sqlite3.sqlite_version_info < (3, 35, 0):
        raise StoreError(
            f"chatserv needs SQLite 3.35 or newer; Python has {sqlite3.sqlite_version}"
        )
    # The pool connects later, maybe after twistd has changed directory.
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise StoreError(f"cannot open SQLite database {path}: no directory {directory}")
    if os.path.isdir(path):
        raise StoreError(f"cannot open SQLite database {path}: it is a directory")
    problem = unwritable(path)
    if problem is not None:
        raise StoreError(f"cannot write to SQLite database {path}: {problem}")
    options = dict(timeout=SQLITE_BUSY_TIMEOUT, check_same_thread=False, isolation_level=None)

    def connect() -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(path, **options)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite database {path}: {_oneLine(e)}") from None
        try:
            _sqliteSession(connection, exclusive)
        except sqlite3.Error as e:
            connection.close()
            reason = _sqliteReason(e, exclusive)
            raise StoreError(f"cannot use SQLite database {path}: {reason}") from None
        return connection

    connection = connect()
    try:
        _migrate(connection, SQLITE)
    except sqlite3.Error as e:
        raise StoreError(
            f"cannot use SQLite database {path}: {_sqliteReason(e, exclusive)}"
        ) from None
    finally:
        # load() opens its own: an exclusive lock must not be held by a connection that
        # the pool never uses.
        connection.close()
    opened = identity(path)
    # One connection: SQLite has one writer anyway, and a single thread keeps commits in order.
    pool = adbapi.ConnectionPool(
        "sqlite3",
        path,
        cp_min=1,
        cp_max=1,
        cp_openfun=functools.partial(_sqliteSession, exclusive=exclusive),
        cp_reactor=reactor,
        **options,
    )
    store = SQLStore(SQLITE, pool, None, connect, reactor, flushInterval, batchSize)
    if reactor is None:
        from twisted.internet import reactor
    store._watch = FileWatch(reactor, pool, path, opened, checkInterval, exclusive)
    return store


def _redact(url: str) -> str:
    """C{url} with its password (in the authority or as a parameter) replaced by C{***}."""
    url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)


def _secrets(url: str) -> list[str]:
    found = re.findall(r"://[^/@:]*:([^/@]*)@", url) + re.findall(r"(?i)password=([^&\s]*)", url)
    return [s for raw in found if raw for s in {raw, unquote(raw)}]


def openPostgreSQL(
    url: str, reactor: Any = None, flushInterval: float = 0.1, batchSize: int = 1000
) -> SQLStore:
    """Connect to the PostgreSQL database at C{url}, creating or migrating its schema.

    Blocking. Needs psycopg 3 (C{pip install 'chatserv[postgresql]'}).

    @raise StoreError: psycopg is missing, the server is unreachable or refuses the login,
        or the schema is too new. The message never contains the password.
    """
    _checkBatching(flushInterval, batchSize)
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "PostgreSQL needs the psycopg package: pip install 'chatserv[postgresql]'"
        ) from None
    dialect = _postgresqlDialect(psycopg)
    shown, secrets = _redact(url), _secrets(url)

    def connect() -> Any:
        try:
            return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as e:
            reason = _oneLine(e, secrets)
            raise StoreError(f"cannot connect to PostgreSQL at {shown}: {reason}") from None

    connection = connect()
    try:
        _migrate(connection, dialect)
    except psycopg.Error as e:
        connection.close()
        raise StoreError(
            f"cannot use the PostgreSQL database at {shown}: {_oneLine(e, secrets)}"
        ) from None
    except BaseException:
        connection.close()
        raise
    pool = adbapi.ConnectionPool(
        "psycopg",
        url,
        connect_timeout=CONNECT_TIMEOUT,
        cp_min=1,
        cp_max=3,
        cp_reconnect=True,
        cp_reactor=reactor,
    )
    return SQLStore(dialect, pool, connection, connect, reactor, flushInterval, batchSize)


# -- the store -----------------------------------------------------------------------------


@implementer(IStore)
class SQLStore:
    """L{IStore} over a DB-API database; see the module docstring.

    Use L{openSQLite} or L{openPostgreSQL} (or L{chatserv.store.openStore}) to make one.
    """

    pruneChunk = PRUNE_CHUNK
    _watch: FileWatch | None = None  # SQLite: the file under the server (see openSQLite)

    def __init__(
        self,
        dialect: Dialect,
        pool: adbapi.ConnectionPool,
        connection: Any,
        connect: Callable[[], Any],
        reactor: Any,
        flushInterval: float,
        batchSize: int,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._dialect = dialect
        self._sql = dialect.sql
        self._pool = pool
        self._startup = connection  # until load() or close()
        self._connect = connect
        self._reactor = reactor
        self._flushInterval = flushInterval
        self._batchSize = batchSize
        self._queueLimit = QUEUE_LIMIT_BATCHES * batchSize
        # Batching state, touched only in the reactor thread.
        self._queue: deque[tuple] = deque()
        self._added = 0  # messages ever queued
        self._done = 0  # of those, committed (or dropped)
        self._waiters: list[tuple[int, defer.Deferred[None]]] = []  # (target, flush)
        self._timer: Any = None
        self._busy = False  # a batch is being committed
        self._failures = 0  # consecutive failed commits (non-zero: a retry is scheduled)
        self._dropped = 0  # dropped for the queue limit since the last commit
        self._lastError = ""  # why the latest commit failed, in one line
        self._alarmAt = 0.0  # when the log last said that commits fail
        self._closing = False
        self._closed = False
        self._closeDeadline = 0.0
        self._onClosed: list[defer.Deferred[None]] = []
        self.lease = NodeLease(self._sql, reactor)

    def __repr__(self) -> str:
        return f"<SQLStore {self._dialect.name}>"

    # -- what is wrong -----------------------------------------------------------------------

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What this store's Deferreds fail with when the database is the problem."""
        return (self._dialect.module.Error, adbapi.ConnectionLost, StoreError, OSError)

    @property
    def failing(self) -> str | None:
        """Why room messages cannot be committed at the moment, or C{None}: a flush would
        wait until the database is back."""
        if not self._failures:
            return None
        return f"room messages cannot be committed ({self._lastError})"

    @property
    def problem(self) -> str | None:
        """What is known to be wrong with the database now, in one line, or C{None}."""
        failing = self.failing
        if failing is not None:
            return failing
        if self._watch is not None and self._watch.state.kind != "ok":
            return self._watch.state.text
        return None

    # -- running SQL in the pool -------------------------------------------------------------

    def _run(self, interaction: Callable[..., Any], *args: Any, write: bool = True):
        if self._closed:
            return defer.fail(StoreError("the store is closed"))
        d = self._pool.runInteraction(self._transaction, interaction, write, args)
        if not write:
            # A pooled connection the server dropped (restart, failover) fails once, and the
            # pool then replaces it: a read can simply be asked again. (Writes are not
            # repeated: whether the first attempt committed is unknown.)
            d.addErrback(self._readAgain, interaction, args)
        return d

    def _readAgain(self, failure: Any, interaction: Callable[..., Any], args: tuple):
        m = self._dialect.module
        failure.trap(m.OperationalError, m.InterfaceError, adbapi.ConnectionLost)
        if self._closed:
            return failure
        return self._pool.runInteraction(self._transaction, interaction, False, args)

    def _transaction(self, txn: Any, interaction: Callable[..., Any], write: bool, args: tuple):
        begin = self._dialect.beginWrite if write else self._dialect.begin
        if begin:
            txn.execute(begin)
        return interaction(txn, *args)

    # -- start-up ----------------------------------------------------------------------------

    def load(self) -> State:
        """The L{State} to start with (unexpired sanctions only). Blocking.

        On its own connection: a SQLite database held exclusively can be read here only
        until the pool's connection has opened it (at start-up, as L{IStore.load} says).
        """
        connection, self._startup = self._startup, None
        if connection is None:
            connection = self._connect()  # raises StoreError
        try:
            cursor = connection.cursor()
            if self._dialect.begin:
                cursor.execute(self._dialect.begin)
            cursor.execute(
                "SELECT MAX(m) FROM (SELECT MAX(id) AS m FROM messages"
                " UNION ALL SELECT MAX(id) AS m FROM offline_messages) AS ids"
            )
            lastId = cursor.fetchone()[0] or 0
            cursor.execute(_ROOMS)
            rooms = [RoomRecord(*row) for row in cursor.fetchall()]
            cursor.execute(self._sql(_SANCTIONS), (time.time(),))
            sanctions = [Sanction(*row) for row in cursor.fetchall()]
            cursor.execute("SELECT nick_key FROM accounts")
            accounts = frozenset(key for (key,) in cursor.fetchall())
            cursor.execute("SELECT DISTINCT room_key FROM messages")
            spoken = frozenset(key for (key,) in cursor.fetchall())
            connection.rollback()  # nothing was written
            if self._dialect.beginWrite:
                cursor.execute(self._dialect.beginWrite)
            node = self.lease.claim(cursor)
            cloakKey = _serverKey(cursor, self._sql, "cloak_key")
            connection.commit()
        except self._dialect.module.Error as e:
            raise StoreError(
                f"cannot read the {self._dialect.name} database: {_oneLine(e)}"
            ) from None
        finally:
            connection.close()
        if not self._closing:
            self.lease.start(self._run)
            if self._watch is not None:
                self._watch.start()  # the server is committed to this database now
        return State(lastId, rooms, sanctions, accounts, spoken, node, cloakKey)

    def watchNode(self, callback: Callable[[int], object]) -> None:
        self.lease.watch(callback)

    # -- room messages: the batch ------------------------------------------------------------

    def addMessage(self, message: RoomMessage) -> None:
        if self._closing:
            log.warn("room message {id} added while the store closes: not stored", id=message.id)
            return
        self._queue.append(_messageRow(message))
        self._added += 1
        if len(self._queue) > self._queueLimit:
            self._queue.popleft()
            self._done += 1
            self._dropped += 1
            if self._dropped == 1:
                log.critical(
                    "{database}: {limit} room messages wait for the database (down, or"
                    " too slow); dropping the oldest until it catches up",
                    database=self._dialect.name,
                    limit=self._queueLimit,
                )
        self._kick()

    def flush(self) -> defer.Deferred[None]:
        target = self._added
        if self._done >= target:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append((target, d))
        self._kick()
        return d

    def _kick(self) -> None:
        """Commit now if a batch is due, else make sure the timer is armed."""
        if self._busy or not self._queue or self._failures:
            return  # the running commit, or the scheduled retry, comes back here
        if len(self._queue) >= self._batchSize or self._waiters:
            self._cancelTimer()
            self._commit()
        elif self._timer is None:
            self._timer = self._reactor.callLater(self._flushInterval, self._timerFired)

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timerFired(self) -> None:
        # Both the batch timer and, after a failed commit, the retry timer.
        self._timer = None
        if self._busy:
            return
        if self._queue:
            self._commit()
        else:
            self._failures = 0

    def _commit(self, careful: bool = False) -> None:
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._batchSize))]
        self._busy = True
        interaction = self._insertCarefully if careful else self._insertBatch
        d = self._run(interaction, batch)
        d.addCallbacks(
            self._committed,
            self._commitFailed,
            callbackArgs=(batch,),
            errbackArgs=(batch, careful),
        )

    def _insertBatch(self, txn: Any, batch: list[tuple]) -> list[tuple[int, str]]:
        txn.executemany(self._sql(_INSERT_MESSAGE), batch)
        return []

    def _insertCarefully(self, txn: Any, batch: list[tuple]) -> list[tuple[int, str]]:
        """Insert row by row, each in a savepoint, leaving out the rows refused.

        A row already stored as it is was committed by an earlier attempt whose commit
        was reported failed (the connection was lost during COMMIT): it is not refused.
        Another message under its id is: ids are unique (L{chatserv.ids}), so that is a
        fault to log, such as two processes sharing one node slot.
        """
        insert = self._sql(_INSERT_MESSAGE)
        refused = []
        for row in batch:
            txn.execute("SAVEPOINT one_message")
            try:
                txn.execute(insert, row)
            except Exception as e:
                if not self._dialect.rowError(e):
                    raise
                txn.execute("ROLLBACK TO SAVEPOINT one_message")
                txn.execute(self._sql(_MESSAGE_ROW), (row[0],))
                stored = txn.fetchone()
                if stored is None or tuple(stored) != tuple(row):
                    reason = "its id is another message's" if stored else _oneLine(e)[:200]
                    refused.append((row[0], reason))
            txn.execute("RELEASE SAVEPOINT one_message")
        return refused

    def _committed(self, refused: list[tuple[int, str]], batch: list[tuple]) -> None:
        self._busy = False
        for messageId, reason in refused:
            log.error(
                "{database} refused room message {id}, left out of history: {reason}",
                database=self._dialect.name,
                id=messageId,
                reason=reason,
            )
        if self._failures:
            log.info(
                "{database}: room messages committed again after {failures} failed attempts",
                database=self._dialect.name,
                failures=self._failures,
            )
            self._failures = 0
        if self._dropped:
            log.critical(
                "{database}: {dropped} room messages were dropped while it was behind",
                database=self._dialect.name,
                dropped=self._dropped,
            )
            self._dropped = 0
        self._done += len(batch)
        self._fireWaiters()
        self._kick()

    def _commitFailed(self, failure: Any, batch: list[tuple], careful: bool) -> None:
        self._busy = False
        self._queue.extendleft(reversed(batch))  # back in front, in order
        error = failure.value
        if not careful and self._dialect.rowError(error):
            # Something in these rows, not the database: find the culprits now rather than
            # retrying (and blocking every later message) for ever.
            self._commit(careful=True)
            return
        self._failures += 1
        self._lastError = f"{type(error).__name__}: {_oneLine(error)[:200]}"
        delay = self._flushInterval * 2 ** min(self._failures - 1, 16)
        delay = max(self._flushInterval, min(delay, MAX_RETRY_DELAY))
        # Once at once, then once every ALARM_REPEAT seconds however often it is retried.
        # The message text is not logged: only what went wrong.
        now = self._reactor.seconds()
        if self._failures == 1 or now - self._alarmAt >= ALARM_REPEAT:
            self._alarmAt = now
            log.error(
                "{database}: cannot commit {count} room messages ({error}); keeping them"
                " in memory and retrying, every {most:g} s at most (attempt {failures})",
                database=self._dialect.name,
                count=len(self._queue),
                error=self._lastError,
                most=MAX_RETRY_DELAY,
                failures=self._failures,
            )
        if self._failures == 1 and self._watch is not None:
            self._watch.check()  # deleted, or made read-only? The log will say which.
        if self._closing and now >= self._closeDeadline:
            self._giveUp()
            return
        self._cancelTimer()
        self._timer = self._reactor.callLater(delay, self._timerFired)

    def _giveUp(self) -> None:
        log.critical(
            "{database} still unreachable while closing: {count} room messages are lost",
            database=self._dialect.name,
            count=len(self._queue),
        )
        self._done += len(self._queue)
        self._queue.clear()
        self._failures = 0
        self._fireWaiters()

    def _fireWaiters(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._done:
            self._waiters.pop(0)[1].callback(None)

    # -- history -----------------------------------------------------------------------------

    def history(
        self, roomKey: str, limit: int, span: Span | None = None
    ) -> defer.Deferred[list[RoomMessage]]:
        if limit <= 0:
            return defer.succeed([])
        query, params = _HISTORY, [roomKey]
        for name, condition in _SPAN if span is not None else ():
            bound = getattr(span, name)
            if bound is not None:
                query += condition
                params.append(bound)
        oldest = span is not None and span.oldest
        query += " ORDER BY id ASC LIMIT ?" if oldest else " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return self._run(self._history, self._sql(query), tuple(params), oldest, write=False)

    @staticmethod
    def _history(txn: Any, query: str, params: tuple, oldest: bool) -> list[RoomMessage]:
        txn.execute(query, params)
        rows = txn.fetchall()
        return [
            RoomMessage(kind, room, sender, text, ts, id, color, history=True)
            for id, room, kind, sender, text, ts, color in (rows if oldest else reversed(rows))
        ]

    # -- accounts ----------------------------------------------------------------------------

    def account(self, key: str) -> defer.Deferred[Account | None]:
        return self._run(self._account, self._sql(_ACCOUNT), key, write=False)

    @staticmethod
    def _account(txn: Any, query: str, key: str) -> Account | None:
        txn.execute(query, (key,))
        row = txn.fetchone()
        if row is None:
            return None
        key, nick, passwordHash, color, admin, created = row
        return Account(key, nick, passwordHash, color, bool(admin), created)

    def addAccount(self, account: Account) -> defer.Deferred[bool]:
        a = account
        row = (a.key, a.nick, a.passwordHash, a.color, int(a.admin), a.created)
        return self._run(self._changed, self._sql(_ADD_ACCOUNT), row)

    @staticmethod
    def _changed(txn: Any, statement: str, params: tuple) -> bool:
        txn.execute(statement, params)
        return txn.rowcount > 0

    def _updateAccount(self, column: str, value: Any, key: str) -> defer.Deferred[None]:
        statement = self._sql(f"UPDATE accounts SET {column} = ? WHERE nick_key = ?")
        return self._run(self._changed, statement, (value, key)).addCallback(lambda _: None)

    def setPassword(self, key: str, passwordHash: str) -> defer.Deferred[None]:
        return self._updateAccount("password_hash", passwordHash, key)

    def setColor(self, key: str, color: str | None) -> defer.Deferred[None]:
        return self._updateAccount("color", color, key)

    def setAdmin(self, key: str, admin: bool) -> defer.Deferred[None]:
        return self._updateAccount("admin", int(admin), key)

    def deleteAccount(self, key: str) -> defer.Deferred[bool]:
        return self._run(self._deleteAccount, key)

    def _deleteAccount(self, txn: Any, key: str) -> bool:
        txn.execute(self._sql("DELETE FROM offline_messages WHERE to_key = ?"), (key,))
        txn.execute(self._sql("DELETE FROM accounts WHERE nick_key = ?"), (key,))
        return txn.rowcount > 0

    def renameAccount(self, key: str, newKey: str, newNick: str) -> defer.Deferred[bool]:
        return self._run(self._renameAccount, key, newKey, newNick)

    def _renameAccount(self, txn: Any, key: str, newKey: str, newNick: str) -> bool:
        if newKey != key:
            txn.execute(self._sql("SELECT 1 FROM accounts WHERE nick_key = ?"), (newKey,))
            if txn.fetchone() is not None:
                return False
        txn.execute(
            self._sql("UPDATE accounts SET nick_key = ?, nick = ? WHERE nick_key = ?"),
            (newKey, newNick, key),
        )
        if txn.rowcount == 0:
            return False
        if newKey != key:
            txn.execute(
                self._sql("UPDATE offline_messages SET to_key = ? WHERE to_key = ?"), (newKey, key)
            )
            # The service refuses a new name with a ban or mute of its own; one left over
            # from long ago (expired) must not stop the rename.
            txn.execute(self._sql("DELETE FROM sanctions WHERE nick_key = ?"), (newKey,))
            txn.execute(
                self._sql("UPDATE sanctions SET nick_key = ?, nick = ? WHERE nick_key = ?"),
                (newKey, newNick, key),
            )
        return True

    # -- rooms and sanctions -----------------------------------------------------------------

    def saveRoom(self, record: RoomRecord) -> defer.Deferred[None]:
        r = record
        row = (r.key, r.name, r.topic, r.topicBy, r.topicTs)
        return self._run(self._changed, self._sql(_SAVE_ROOM), row).addCallback(lambda _: None)

    def addSanction(self, sanction: Sanction) -> defer.Deferred[None]:
        s = sanction
        row = (s.kind, s.key, s.nick, s.host, s.until, s.reason, s.by, s.ts)
        d = self._run(self._changed, self._sql(_ADD_SANCTION), row)
        return d.addCallback(lambda _: None)

    def removeSanction(self, kind: str, key: str) -> defer.Deferred[bool]:
        statement = self._sql("DELETE FROM sanctions WHERE kind = ? AND nick_key = ?")
        return self._run(self._changed, statement, (kind, key))

    # -- offline messages --------------------------------------------------------------------

    def addOffline(self, toKey: str, message: PrivateMessage, limit: int) -> defer.Deferred[bool]:
        m = message
        row = (m.id, toKey, m.sender, m.to, m.text, m.ts, m.color, toKey, limit)
        d = self._run(self._addOffline, toKey, row)
        d.addErrback(self._offlineRefused, m.id)
        return d

    def _addOffline(self, txn: Any, toKey: str, row: tuple) -> bool:
        if self._dialect.lockMailbox:
            txn.execute(self._sql(self._dialect.lockMailbox), (toKey,))
        txn.execute(self._sql(_ADD_OFFLINE), row)
        return txn.rowcount > 0

    def _offlineRefused(self, failure: Any, messageId: int) -> Any:
        failure.trap(self._dialect.module.IntegrityError)
        log.error(
            "{database} refused private message {id} kept for later: its id is another message's",
            database=self._dialect.name,
            id=messageId,
        )
        raise StoreError(f"message id {messageId} is taken")

    def takeOffline(self, toKey: str) -> defer.Deferred[list[PrivateMessage]]:
        return self._run(self._takeOffline, self._sql(_TAKE_OFFLINE), toKey)

    @staticmethod
    def _takeOffline(txn: Any, statement: str, toKey: str) -> list[PrivateMessage]:
        txn.execute(statement, (toKey,))
        return [
            PrivateMessage(sender, to, text, ts, id, color=color, offline=True)
            for id, sender, to, text, ts, color in sorted(txn.fetchall())
        ]

    # -- backups -----------------------------------------------------------------------------

    def backup(self, path: str) -> defer.Deferred[str]:
        if self._closed:
            return defer.fail(StoreError("the store is closed"))
        if self._dialect is not SQLITE:
            return defer.fail(
                StoreError(f"back up {self._dialect.name} with its own tools (pg_dump)")
            )
        # VACUUM INTO on the pool's connection: a consistent copy, made in the database's
        # thread between two commits (which wait for it), whatever the locking mode. The
        # messages queued so far are committed first, unless commits fail at the moment.
        target = os.path.abspath(path)
        flushed = self.flush() if not self._failures else defer.succeed(None)
        return flushed.addCallback(lambda _: self._pool.runWithConnection(self._backup, target))

    @staticmethod
    def _backup(connection: Any, target: str) -> str:
        if os.path.lexists(target):
            raise StoreError(f"{target} exists: back up to a new file")
        try:
            connection.cursor().execute("VACUUM INTO ?", (target,))
            fsync(target)
        except BaseException:
            remove(target)
            raise
        return target

    # -- upkeep ------------------------------------------------------------------------------

    def prune(self, now: float, maxPerRoom: int, maxAge: float) -> defer.Deferred[int]:
        return defer.Deferred.fromCoroutine(self._prune(now, maxPerRoom, maxAge))

    async def _prune(self, now: float, maxPerRoom: int, maxAge: float) -> int:
        if not await self._run(self._prunesHere, self._reactor.seconds(), write=False):
            return 0  # another process on this database does it (see _prunesHere)
        deleted = 0
        if maxPerRoom > 0:
            # Each room's cut-off id is fixed first: messages arriving meanwhile are safe.
            for roomKey, cutoff in await self._run(self._crowded, maxPerRoom, write=False):
                deleted += await self._deleteInChunks(_PRUNE_ROOM, (roomKey, cutoff))
        if maxAge > 0:
            for table in ("messages", "offline_messages"):
                statement = _PRUNE_OLD.format(table=table)
                deleted += await self._deleteInChunks(statement, (now - maxAge,))
        return deleted

    def _prunesHere(self, txn: Any, now: float) -> bool:
        """Whether this process is the one of those writing to the database that prunes
        it: the one holding the lowest live node slot (so one at a time, however many
        nodes share it; another takes over when that one's lease ends)."""
        txn.execute(self._sql("SELECT MIN(slot) FROM node_slots WHERE expires >= ?"), (now,))
        lowest = txn.fetchone()[0]
        return lowest is None or lowest == self.lease.slot

    def _crowded(self, txn: Any, maxPerRoom: int) -> list[tuple[str, int]]:
        txn.execute(self._sql(_CROWDED_ROOMS), (maxPerRoom,))
        found = []
        for (roomKey,) in txn.fetchall():
            txn.execute(self._sql(_NEWEST_TO_PRUNE), (roomKey, maxPerRoom))
            row = txn.fetchone()
            if row is not None:
                found.append((roomKey, row[0]))
        return found

    async def _deleteInChunks(self, statement: str, params: tuple) -> int:
        # One transaction per chunk, so that other writes get their turn in between.
        statement = self._sql(statement)
        total = 0
        while not self._closing:
            count = await self._run(self._count, statement, (*params, self.pruneChunk))
            total += count
            if count < self.pruneChunk:
                break
        return total

    @staticmethod
    def _count(txn: Any, statement: str, params: tuple) -> int:
        txn.execute(statement, params)
        return txn.rowcount

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> defer.Deferred[None]:
        if self._closed:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._onClosed.append(d)
        if not self._closing:
            self._closing = True
            self._closeDeadline = self._reactor.seconds() + CLOSE_GIVE_UP
            flushed = self.flush()
            flushed.addBoth(lambda _: self.lease.stop(self._run))
            if self._watch is not None:
                # A last look at the file, once everything is committed: one deleted since
                # the last check is written anew before the connection lets go of it.
                self._watch.stop()
                flushed.addBoth(lambda _: self._watch.check())
            flushed.addBoth(self._finishClosing)
        return d

    def _finishClosing(self, result: Any) -> None:
        self._cancelTimer()
        self._closed = True
        self._pool.close()
        if self._startup is not None:
            self._startup.close()
            self._startup = None
        waiters, self._onClosed = self._onClosed, []
        for d in waiters:
            d.callback(None)
