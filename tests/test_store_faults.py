"""Real SQLite files in trouble: a full disk, a file made read-only, a file deleted or
replaced under the running store, another process wanting the file.

A full disk is a tmpfs of 512 KiB where the machine lets the test mount one (see
L{fsfaults}), and a store whose commits fail as SQLite's do on one everywhere. A
read-only file is C{chattr +i} (root only; the log's wording is also checked with a
simulated one). tests/test_storage_live.py runs the same faults against a real twistd.
"""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest
import pytest_twisted
from clients import eventually
from fsfaults import fill, tinyFilesystem
from fsfaults import immutable as immutable  # a fixture
from helpers import LineConnection, fastPasswords
from twisted.internet import task
from twisted.logger import LogLevel, formatEvent

from chatserv.config import Settings
from chatserv.events import RoomMessage
from chatserv.service import ChatService
from chatserv.store import Account, StoreError, openStore
from chatserv.store import sql as sqlstore

DISK_FULL = "database or disk is full"


def lines(events: list[dict], level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e.get("log_level") == level]


def noTracebacks(events: list[dict]) -> None:
    assert not [e for e in events if "log_failure" in e], lines(events)


def message(i: int, room: str = "lobby", text: str | None = None) -> RoomMessage:
    return RoomMessage("message", room, "alice", text or f"line {i}", 1795262400.0 + i, i)


def opened(path, **kwargs):
    from twisted.internet import reactor

    kwargs.setdefault("flushInterval", 0.01)
    kwargs.setdefault("batchSize", 100)
    return openStore(str(path), reactor, **kwargs)


async def historyIds(store, room: str = "lobby") -> list[int]:
    return [m.id for m in await store.history(room, 10_000)]


def commitsFail(store) -> list[int]:
    """Make every batch commit fail as on a full disk, until L{commitsWork}; the sizes
    of the batches tried."""
    calls: list[int] = []

    def insert(txn, batch):
        calls.append(len(batch))
        raise sqlite3.OperationalError(DISK_FULL)

    store._insertBatch = insert
    return calls


def commitsWork(store) -> None:
    store.__dict__.pop("_insertBatch", None)


# -- a full disk ----------------------------------------------------------------------------


class Served:
    """A ChatService on the real reactor over a real SQLite store, and line connections
    to it in memory."""

    def __init__(self, store) -> None:
        from twisted.internet import reactor

        self.store = store
        self.service = ChatService(
            Settings(rate_limit=1000.0, rate_burst=1000, ip_rate_limit=1000.0, ip_rate_burst=1000),
            clock=reactor,
            store=store,
            passwords=fastPasswords(),
        )
        self.output: dict[LineConnection, str] = {}

    async def connect(self, nick: str, port: int) -> LineConnection:
        conn = LineConnection(self.service, port=port)
        self.output[conn] = ""
        conn.send(f"{nick}\r\n")
        await self.until(conn, "users (")
        return conn

    async def until(self, conn: LineConnection, text: str, timeout: float = 10.0) -> str:
        def seen() -> bool:
            self.output[conn] += conn.output()
            return text in self.output[conn]

        await eventually(seen, timeout)
        found, self.output[conn] = self.output[conn].split(text, 1)
        rest, _, after = self.output[conn].partition("\r\n")
        self.output[conn] = after
        return found + text + rest

    async def stop(self) -> None:
        await self.service.stopService()
        from twisted.internet import reactor

        for conn in self.output:
            conn.drop()  # the close the server asked for completes (no timer left waiting)
        await task.deferLater(reactor, 0)  # and the farewells' writes, due at once, run


@pytest.fixture(params=["tmpfs", "simulated"])
def fullDisk(request, tmp_path):
    """(store, fill, free): a SQLite store on a disk that C{fill()} makes full (a real
    tmpfs of 512 KiB, or commits that fail as on one) and C{free()} makes room on. The
    test closes the store."""
    if request.param == "simulated":
        store = opened(tmp_path / "chat.db", checkInterval=0)
        yield store, lambda: commitsFail(store), lambda: commitsWork(store)
        return
    with tinyFilesystem(tmp_path / "tiny") as directory:
        store = opened(directory / "chat.db", checkInterval=0)
        filler = []
        yield store, lambda: filler.append(fill(directory)), lambda: os.unlink(filler.pop())


@pytest_twisted.ensureDeferred
async def test_a_full_disk_refuses_history_at_once_and_loses_no_message(fullDisk, logged):
    store, fillDisk, freeDisk = fullDisk
    served = Served(store)
    try:
        alice = await served.connect("alice", 5000)
        alice.send("/join dev\r\n")
        alice.send("before the disk filled\r\n")
        alice.send("/time\r\n")
        await served.until(alice, "server time")
        await store.flush()
        fillDisk()
        said = [f"said while the disk is full {i} " + "x" * 400 for i in range(100)]
        for text in said:
            alice.send(text + "\r\n")
        await eventually(lambda: any("cannot commit" in t for t in lines(logged)))
        # A connection's requests run in order: neither /history nor joining a room whose
        # history is not loaded may hold back what it asks next.
        alice.send("/history 200\r\n")
        alice.send("/time\r\n")
        answered = await served.until(alice, "server time", timeout=3.0)
        assert "error: the history is unavailable right now" in answered
        alice.send("/join lobby\r\n")  # #dev is empty: the next join loads its history
        bob = await served.connect("bob", 5001)
        bob.send("/join dev\r\n")
        bob.send("/time\r\n")
        joined = await served.until(bob, "server time", timeout=3.0)
        assert "#dev: the history is unavailable right now" in joined
        assert "#dev users (1): bob" in joined
        freeDisk()
        await eventually(lambda: store.failing is None, timeout=15)
        carol = await served.connect("carol", 5002)
        carol.send("/join dev\r\n")
        carol.send("/history 200\r\n")
        carol.send("/time\r\n")
        replayed = await served.until(carol, "server time")
        for text in ["before the disk filled", *said]:
            assert f"<alice> {text}\r\n" in replayed  # accepted, so kept until committed
        noTracebacks(logged)
    finally:
        await served.stop()


@pytest_twisted.ensureDeferred
async def test_failed_commits_back_off_and_log_once_a_minute(tmp_path, logged, monkeypatch):
    from twisted.internet import reactor

    monkeypatch.setattr(sqlstore, "MAX_RETRY_DELAY", 0.08)
    monkeypatch.setattr(sqlstore, "ALARM_REPEAT", 0.5)  # a minute, scaled down
    store = opened(tmp_path / "chat.db", checkInterval=0)
    try:
        attempts = commitsFail(store)
        store.addMessage(message(1))
        await task.deferLater(reactor, 1.2, lambda: None)
        said = [t for t in lines(logged, LogLevel.error) if "cannot commit" in t]
        # 0.01 s doubling up to 0.08 s: about 17 attempts in 1.2 s (no back-off: 120).
        assert 8 <= len(attempts) <= 25
        assert 2 <= len(said) <= 4  # the first at once, then every 0.5 s however many tries
        assert (
            "cannot commit 1 room messages (OperationalError: database or disk is full)"
            in (said[0])
        )
        assert store.failing == f"room messages cannot be committed (OperationalError: {DISK_FULL})"
        commitsWork(store)
        await store.flush()
        assert await historyIds(store) == [1]
        assert store.failing is None
        assert any("committed again after" in t for t in lines(logged))
    finally:
        await store.close()


# -- read-only ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_immutable_database_is_reported_and_commits_wait(tmp_path, immutable, logged):
    immutable.check(tmp_path)
    path = tmp_path / "chat.db"
    store = opened(path, checkInterval=0.05)
    try:
        store.load()
        await store.addAccount(Account("alice", "alice", "$argon2id$x"))
        store.addMessage(message(1))
        await store.flush()
        immutable.freeze(path, f"{path}-wal", f"{path}-shm")
        for i in range(2, 12):
            store.addMessage(message(i))
        await eventually(lambda: store.failing is not None)
        await eventually(lambda: store._watch.state.kind == "read-only")
        assert await historyIds(store) == [1]  # reads still work
        with pytest.raises(sqlite3.OperationalError):
            await store.addAccount(Account("bob", "bob", "$argon2id$x"))
        errors = lines(logged, LogLevel.error)
        assert any(
            "cannot commit 10 room messages (OperationalError: disk I/O error)" in t for t in errors
        )
        assert any(
            f"the SQLite database {path} cannot be written: the file {path} is read-only" in t
            for t in errors
        )
        immutable.release()
        await store.flush()
        assert await historyIds(store) == list(range(1, 12))
        await eventually(lambda: store.problem is None)
        assert any("is in order again" in t for t in lines(logged))
        noTracebacks(logged)
    finally:
        immutable.release()
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_read_only_file_is_reported_in_the_log(tmp_path, logged, monkeypatch):
    """The same detection without chattr: os.access says no, as it does for a file made
    immutable or on a file system remounted read-only."""
    from chatserv.store import sqlitefile

    path = tmp_path / "chat.db"
    store = opened(path, checkInterval=0.05, exclusive=False)
    try:
        store.load()
        real = os.access
        monkeypatch.setattr(
            sqlitefile.os, "access", lambda p, mode: False if str(p) == str(path) else real(p, mode)
        )
        await eventually(lambda: store.problem is not None)
        (said,) = [t for t in lines(logged) if "cannot be written" in t]
        assert said.startswith(f"the SQLite database {path} cannot be written: the file {path}")
        assert "SIGBUS" in said  # shared memory: the log says what is at stake
        assert [e["log_level"] for e in logged if "cannot be written" in formatEvent(e)] == [
            LogLevel.critical
        ]
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_read_only_database_stops_start_up_with_one_line(tmp_path, immutable):
    path = tmp_path / "chat.db"
    await opened(path).close()
    if os.geteuid() == 0:
        immutable.check(tmp_path)
        immutable.freeze(path)
    else:
        path.chmod(0o444)
    with pytest.raises(StoreError) as raised:
        opened(path)
    text = str(raised.value)
    assert text == (
        f"cannot write to SQLite database {path}: the file {path} is read-only"
        " (permissions, chattr +i, or a file system mounted read-only)"
    )


# -- deleted, replaced ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_deleted_database_file_is_written_anew_with_nothing_lost(tmp_path, logged):
    from chatserv.store import sqlitefile

    path = tmp_path / "chat.db"
    store = opened(path, checkInterval=0.05)
    try:
        store.load()
        await store.addAccount(Account("alice", "alice", "$argon2id$x"))
        for i in range(1, 6):
            store.addMessage(message(i))
        await store.flush()
        path.unlink()
        for i in range(6, 11):
            store.addMessage(message(i))  # written to the deleted file, until it is back
        await store.addAccount(Account("bob", "bob", "$argon2id$x"))
        await eventually(lambda: path.exists() and store.problem is None)
        for i in range(11, 16):
            store.addMessage(message(i))  # and to the new one
        await store.flush()
        said = lines(logged, LogLevel.error)
        assert (
            f"the SQLite database file {path} was deleted while the server ran; it has been"
            " written anew from the open database, and nothing stored was lost"
        ) in said
        assert not os.path.exists(f"{path}{sqlitefile.RESTORING}")
    finally:
        await store.close()
    with sqlite3.connect(path) as connection:  # what the next start finds
        ids = [i for (i,) in connection.execute("SELECT id FROM messages ORDER BY id")]
        nicks = [n for (n,) in connection.execute("SELECT nick FROM accounts ORDER BY nick")]
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()
    assert ids == list(range(1, 16))
    assert nicks == ["alice", "bob"]
    noTracebacks(logged)


@pytest_twisted.ensureDeferred
async def test_a_file_deleted_just_before_a_graceful_stop_is_written_anew(tmp_path):
    path = tmp_path / "chat.db"
    store = opened(path, checkInterval=3600)  # no periodic check in time: close() looks
    store.load()
    store.addMessage(message(1))
    await store.flush()
    path.unlink()
    store.addMessage(message(2))
    await store.close()
    reopened = opened(path)
    try:
        assert reopened.load().lastId == 2
        assert await historyIds(reopened) == [1, 2]
    finally:
        await reopened.close()


@pytest_twisted.ensureDeferred
async def test_a_replaced_file_is_reported_and_left_alone(tmp_path, logged, monkeypatch):
    from chatserv.store import sqlitefile

    monkeypatch.setattr(sqlitefile, "ALARM_REPEAT", 0.3)
    path = tmp_path / "chat.db"
    store = opened(path, checkInterval=0.05)
    try:
        store.load()
        store.addMessage(message(1))
        await store.flush()
        other = tmp_path / "other.db"
        other.write_bytes(b"somebody else's file")
        os.replace(other, path)
        from twisted.internet import reactor

        await task.deferLater(reactor, 1.0)
        said = [t for t in lines(logged, LogLevel.error) if "is not the one the server opened" in t]
        assert 2 <= len(said) <= 5  # repeated, every ALARM_REPEAT, not at every check
        assert path.read_bytes() == b"somebody else's file"  # never touched
        assert "not the one the server opened" in store.problem  # the problem is said...
        path.rename(tmp_path / "moved-away")  # ...and moving it away brings ours back
        await eventually(lambda: store.problem is None and path.exists())
        assert await historyIds(store) == [1]
    finally:
        await store.close()


# -- one process at a time, and backups -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_exclusive_database_keeps_other_processes_out(tmp_path):
    path = tmp_path / "chat.db"
    store = opened(path)
    try:
        store.load()
        store.addMessage(message(1))
        await store.flush()  # the pool's connection now holds the file
        assert not os.path.exists(f"{path}-shm")  # no shared memory mapped
        with pytest.raises(StoreError) as raised:
            openStore(str(path))
        assert "database is locked (another process has it open" in str(raised.value)
        assert "sqlite_exclusive" in str(raised.value)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_shared_database_can_be_read_by_others(tmp_path):
    path = tmp_path / "chat.db"
    store = opened(path, exclusive=False)
    try:
        store.load()
        store.addMessage(message(1))
        await store.flush()
        with sqlite3.connect(path, timeout=1) as connection:
            assert connection.execute("SELECT COUNT(*) FROM messages").fetchone() == (1,)
        connection.close()
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_backup_copies_the_running_database(tmp_path):
    path = tmp_path / "chat.db"
    store = opened(path)
    try:
        store.load()
        await store.addAccount(Account("alice", "alice", "$argon2id$x"))
        for i in range(1, 201):
            store.addMessage(message(i))
        copy = tmp_path / "backups" / "chat-copy.db"
        copy.parent.mkdir()
        await store.flush()
        assert await store.backup(str(copy)) == str(copy)
        store.addMessage(message(201))  # the store goes on
        await store.flush()
        with pytest.raises(StoreError, match="exists: back up to a new file"):
            await store.backup(str(copy))
    finally:
        await store.close()
    with sqlite3.connect(copy) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("SELECT COUNT(*) FROM messages").fetchone() == (200,)
        assert connection.execute("SELECT nick FROM accounts").fetchall() == [("alice",)]
    connection.close()
    # Restoring: with the server stopped, the copy takes the database's place.
    shutil.copy(copy, path)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.unlink(f"{path}{suffix}")
    restored = opened(path)
    try:
        assert restored.load().lastId == 200
    finally:
        await restored.close()


@pytest_twisted.ensureDeferred
async def test_the_console_backs_up_the_running_database(tmp_path):
    from chatserv.manhole import namespace

    store = opened(tmp_path / "chat.db")
    served = Served(store)
    try:
        store.addMessage(message(1))
        backup = namespace(served.service)["backup"]
        copy = tmp_path / "copy.db"
        assert await backup(str(copy)) == f"backed up to {copy}"
        assert (
            await backup(str(copy))
            == f"refused: the backup failed: {copy} exists: back up to a new file"
        )
    finally:
        await served.stop()
    with sqlite3.connect(copy) as connection:
        assert connection.execute("SELECT id FROM messages").fetchall() == [(1,)]
    connection.close()


def test_a_memory_store_has_nothing_to_back_up():
    from helpers import failureOf

    failure = failureOf(openStore("memory").backup("x.db"), StoreError)
    assert "nothing to back up" in str(failure.value)
