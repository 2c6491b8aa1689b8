"""The store: one suite run against every backend (memory, SQLite, PostgreSQL).

SQLite runs twice: held exclusively (the default) and shared with other processes
(C{sqlite_exclusive = false}). PostgreSQL needs a server (see L{pgserver}): without one
its tests are skipped, or fail when C{CI=true}. Tests about surviving a restart run on the
databases only.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from urllib.parse import urlsplit

import pgserver
import pytest
import pytest_twisted
from twisted.internet import defer, task

from chatserv.names import fold
from chatserv.store import (
    Account,
    PrivateMessage,
    RoomMessage,
    RoomRecord,
    Sanction,
    Span,
    State,
    StoreError,
    openStore,
)
from chatserv.store import sql as sqlstore
from chatserv.store.schema import VERSION

ALL = ["memory", "sqlite", "sqlite-shared", "postgresql"]
DATABASES = ["sqlite", "postgresql"]
NOW = time.time()
TRICKY = [
    "héllo wörld ✓ 日本語 🎉",
    "quotes ' \" `; DROP TABLE messages; --",
    "placeholders ? %s %(x)s %% $1 :name @p",
    "back\\slash and NUL-free\tcontrol-free text",
    "x" * 100_000,
]


class Backend:
    """Opens stores of one kind; closes whatever a test left open."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.opened: list = []

    @property
    def exclusive(self) -> bool:
        """A SQLite file that no other connection can open while its store is open."""
        return self.name == "sqlite"

    def open(self, flushInterval: float = 0.01, batchSize: int = 100):
        from twisted.internet import reactor

        shared = self.name == "sqlite-shared"
        store = openStore(self.url, reactor, flushInterval, batchSize, exclusive=not shared)
        self.opened.append(store)
        return store

    async def reopen(self, store, **kwargs):
        await store.close()
        return self.open(**kwargs)

    async def state(self, store):
        """C{(store, store.load())}. A SQLite file held exclusively can be read only by
        its pool's connection once that is open: the store is closed and opened again
        (L{IStore.load} is for start-up, before anything else)."""
        if self.exclusive:
            store = await self.reopen(store)
        return store, store.load()

    def raw(self, statement: str, params: tuple = ()) -> list:
        """Run one statement on the database directly, committed; its rows, if any."""
        if self.name.startswith("sqlite"):
            with sqlite3.connect(self.url) as connection:
                cursor = connection.execute(statement, params)
                rows = cursor.fetchall()
            connection.close()
            return rows
        import psycopg

        with psycopg.connect(self.url) as connection:
            cursor = connection.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=ALL)
def backend(request, tmp_path):
    # A plain fixture, not an async one: pytest.skip() inside pytest-twisted's async
    # fixtures breaks the tests that follow.
    if request.param == "postgresql":
        with pgserver.freshDatabase() as url:
            found = Backend("postgresql", url)
            yield found
            pytest_twisted.blockon(defer.ensureDeferred(closeAll(found)))
    else:
        url = "memory" if request.param == "memory" else str(tmp_path / "chat.db")
        found = Backend(request.param, url)
        yield found
        pytest_twisted.blockon(defer.ensureDeferred(closeAll(found)))


async def closeAll(backend: Backend) -> None:
    for store in backend.opened:
        await store.close()


databases = pytest.mark.parametrize("backend", DATABASES, indirect=True)
sqlite = pytest.mark.parametrize("backend", ["sqlite", "sqlite-shared"], indirect=True)


def message(i: int, room: str = "Lobby", text: str | None = None, **kw) -> RoomMessage:
    kw.setdefault("ts", NOW - 1000 + i)
    return RoomMessage("message", room, f"nick{i % 3}", text or f"line {i}", id=i, **kw)


def private(i: int, to: str = "Bob", text: str | None = None, **kw) -> PrivateMessage:
    kw.setdefault("ts", NOW - 1000 + i)
    return PrivateMessage("alice", to, text or f"psst {i}", id=i, **kw)


def account(nick: str = "Alice", **kw) -> Account:
    kw.setdefault("created", 1700000000.25)
    return Account(fold(nick), nick, "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", **kw)


def sanction(kind: str, nick: str, until: float | None, **kw) -> Sanction:
    kw.setdefault("host", "192.0.2.7")
    kw.setdefault("reason", "spam")
    return Sanction(kind, fold(nick), nick, until=until, by="root", ts=NOW - 5, **kw)


async def until(fetch, check, timeout: float = 5.0):
    """Call the async C{fetch} until C{check(result)}; return the result."""
    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while True:
        result = await fetch()
        if check(result) or time.monotonic() > deadline:
            return result
        await task.deferLater(reactor, 0.01)


def texts(messages) -> list[str]:
    return [m.text for m in messages]


# -- history and batching ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_empty_store(backend):
    store = backend.open()
    state = store.load()
    assert state == State(0, [], [], cloakKey=state.cloakKey)  # (its own test: below)
    assert await store.history("lobby", 10) == []
    assert await store.takeOffline("bob") == []
    assert await store.flush() is None


@pytest_twisted.ensureDeferred
async def test_history_newest_oldest_first_and_paged_by_id(backend):
    store = backend.open()
    for i in range(1, 21):
        room = "Lobby" if i % 4 else "Other[1]"  # every 4th elsewhere; keys fold case
        store.addMessage(message(i, room, color="#A0B1C2" if i % 2 else None))
    await store.flush()
    lobby = [i for i in range(1, 21) if i % 4]
    page = await store.history("lobby", 5)
    assert [m.id for m in page] == lobby[-5:]
    assert page[-1] == message(19, color="#A0B1C2", history=True)
    assert page[-2] == message(18, history=True)
    earlier = await store.history("lobby", 5, Span(before=page[0].id))
    assert [m.id for m in earlier] == lobby[-10:-5]
    assert [m.id for m in await store.history("lobby", 100, Span(before=earlier[0].id))] == (
        lobby[:-10]
    )
    assert await store.history("lobby", 5, Span(before=1)) == []
    assert await store.history("lobby", 0) == []
    other = await store.history(fold("Other[1]"), 10)
    assert [(m.room, m.id) for m in other] == [("Other[1]", i) for i in (4, 8, 12, 16, 20)]
    assert await store.history("nowhere", 10) == []


@pytest_twisted.ensureDeferred
async def test_history_spans_by_id_and_time_newest_or_oldest(backend):
    store = backend.open()
    for i in range(1, 31):  # message i was said at NOW - 1000 + i; every 3rd elsewhere
        store.addMessage(message(i, "Lobby" if i % 3 else "Other"))
    await store.flush()
    lobby = [i for i in range(1, 31) if i % 3]

    async def ids(limit: int, **span) -> list[int]:
        return [m.id for m in await store.history("lobby", limit, Span(**span))]

    assert await ids(3, after=20) == [26, 28, 29]  # the newest of them
    assert await ids(3, after=20, oldest=True) == [22, 23, 25]  # the oldest, oldest first
    assert await ids(100, after=4, before=11) == [5, 7, 8, 10]
    assert await ids(2, after=4, before=11, oldest=True) == [5, 7]
    assert await ids(100, since=NOW - 1000 + 25) == [25, 26, 28, 29]  # inclusive
    assert await ids(100, until=NOW - 1000 + 5) == [1, 2, 4]  # exclusive
    assert await ids(100, since=NOW - 1000 + 5, until=NOW - 1000 + 11) == [5, 7, 8, 10]
    assert await ids(100, after=7, since=NOW - 1000 + 5, until=NOW - 1000 + 11) == [8, 10]
    assert await ids(100) == lobby
    assert await ids(100, after=29) == []
    assert await ids(100, since=NOW) == []
    assert await ids(0, after=1) == []
    found = await store.history("lobby", 1, Span(after=1, oldest=True))
    assert found == [message(2, history=True)]


@pytest_twisted.ensureDeferred
async def test_text_survives_unicode_quotes_placeholders_and_length(backend):
    store = backend.open()
    for i, text in enumerate(TRICKY, 1):
        store.addMessage(message(i, text=text))
        assert await store.addOffline("bob", private(100 + i, text=text), 10)
    action = RoomMessage("action", "Lobby", "a'b", "waves %s ?", NOW, 50, "#FFFFFF")
    store.addMessage(action)
    await store.flush()
    assert texts(await store.history("lobby", 10)) == [*TRICKY, "waves %s ?"]
    assert (await store.history("lobby", 1))[0] == RoomMessage(
        "action", "Lobby", "a'b", "waves %s ?", NOW, 50, "#FFFFFF", history=True
    )
    assert texts(await store.takeOffline("bob")) == TRICKY


@pytest_twisted.ensureDeferred
async def test_flush_commits_everything_queued(backend):
    store = backend.open(flushInterval=3600, batchSize=1000)  # only flush() commits
    for i in range(1, 251):
        store.addMessage(message(i))
    await store.flush()
    assert [m.id for m in await store.history("lobby", 1000)] == list(range(1, 251))


@pytest_twisted.ensureDeferred
async def test_messages_arrive_without_flush_after_the_interval(backend):
    store = backend.open(flushInterval=0.01)
    for i in range(1, 6):
        store.addMessage(message(i))
    found = await until(lambda: store.history("lobby", 10), lambda ms: len(ms) == 5)
    assert [m.id for m in found] == [1, 2, 3, 4, 5]


@pytest_twisted.ensureDeferred
async def test_a_full_batch_is_committed_at_once(backend):
    store = backend.open(flushInterval=3600, batchSize=10)
    for i in range(1, 26):
        store.addMessage(message(i))
    found = await until(lambda: store.history("lobby", 100), lambda ms: len(ms) >= 20)
    assert [m.id for m in found][:20] == list(range(1, 21))
    await store.flush()
    assert len(await store.history("lobby", 100)) == 25


@pytest_twisted.ensureDeferred
async def test_flush_waits_for_messages_added_during_a_commit(backend):
    store = backend.open(flushInterval=3600, batchSize=4)
    flushes = []
    for i in range(1, 31):
        store.addMessage(message(i))
        if i % 7 == 0:
            flushes.append(store.flush())
    await defer.gatherResults(flushes)
    assert len(await store.history("lobby", 100)) >= 28  # memory stores at once
    await store.flush()
    assert len(await store.history("lobby", 100)) == 30


@pytest_twisted.ensureDeferred
async def test_load_last_id_counts_room_and_offline_messages(backend):
    store = backend.open()
    store.addMessage(message(7))
    store.addMessage(message(3, room="elsewhere"))
    await store.flush()
    store, state = await backend.state(store)
    assert state.lastId == 7
    assert await store.addOffline("bob", private(12), 5)
    if not backend.exclusive:  # a second store beside the first
        assert backend.open().load().lastId in (0, 12)  # memory: a new, empty store
    store, state = await backend.state(store)
    assert state.lastId == 12


# -- accounts ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_accounts(backend):
    store = backend.open()
    assert await store.account("alice") is None
    alice = account("Alice", color="#123456")
    assert await store.addAccount(alice) is True
    assert await store.account("alice") == alice
    assert await store.addAccount(account("ALICE", admin=True)) is False  # same key
    assert await store.account("alice") == alice
    await store.setPassword("alice", "$argon2id$new")
    await store.setColor("alice", None)
    await store.setAdmin("alice", True)
    changed = await store.account("alice")
    assert changed == Account("alice", "Alice", "$argon2id$new", None, True, alice.created)
    assert changed.admin is True
    await store.setAdmin("alice", False)
    assert (await store.account("alice")).admin is False
    await store.setColor("nobody", "#FFFFFF")  # no such account: nothing happens
    assert await store.account("nobody") is None
    bob = account("Bob[away]")
    assert await store.addAccount(bob) is True
    assert await store.account(fold("BOB{AWAY}")) == bob


@pytest_twisted.ensureDeferred
async def test_deleting_an_account_takes_its_kept_messages_with_it(backend):
    store = backend.open()
    assert await store.addAccount(account("bob")) is True
    assert await store.addAccount(account("carol")) is True
    assert await store.addOffline("bob", private(1), 5)
    assert await store.addOffline("carol", private(2), 5)
    assert await store.deleteAccount("bob") is True
    assert await store.deleteAccount("bob") is False
    assert await store.account("bob") is None
    assert await store.takeOffline("bob") == []
    assert [m.id for m in await store.takeOffline("carol")] == [2]  # others keep theirs
    assert await store.addAccount(account("bob")) is True  # the name is free again


@pytest_twisted.ensureDeferred
async def test_renaming_an_account_takes_its_messages_and_sanctions_along(backend):
    store = backend.open()
    assert await store.addAccount(account("bob")) is True
    assert await store.addAccount(account("carol")) is True
    assert await store.addOffline("bob", private(1), 5)
    mute = Sanction("mute", "bob", "bob", None, None, "", "alice", 1.0)
    await store.addSanction(mute)
    old = Sanction("ban", "robert", "robert", "10.0.0.9", 2.0, "", "alice", 1.0)  # expired
    await store.addSanction(old)
    assert await store.renameAccount("bob", "carol", "Carol") is False  # carol's
    assert await store.renameAccount("nobody", "zed", "zed") is False
    assert await store.renameAccount("bob", "robert", "Robert") is True
    assert await store.account("bob") is None
    renamed = await store.account("robert")
    assert (renamed.key, renamed.nick) == ("robert", "Robert")
    assert renamed.passwordHash == account("bob").passwordHash
    assert [m.id for m in await store.takeOffline("robert")] == [1]
    assert await store.takeOffline("bob") == []
    assert await store.removeSanction("mute", "robert") is True  # the mute went along
    assert await store.removeSanction("mute", "bob") is False
    assert await store.removeSanction("ban", "robert") is False  # the stale ban is gone
    assert await store.renameAccount("robert", "robert", "ROBERT") is True  # a new case
    assert (await store.account("robert")).nick == "ROBERT"


@pytest_twisted.ensureDeferred
async def test_registering_one_nick_at_once_lets_exactly_one_win(backend):
    store = backend.open()
    results = await defer.gatherResults(
        [store.addAccount(account("Carol", color=f"#00000{i}")) for i in range(6)]
    )
    assert sorted(results) == [False] * 5 + [True]


# -- rooms and sanctions -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_rooms_are_saved_and_replaced(backend):
    store = backend.open()
    await store.saveRoom(RoomRecord("lobby", "Lobby", "welcome", "root", NOW - 10))
    await store.saveRoom(RoomRecord("dev", "dev", "code 'n' %s", "root", NOW - 5))
    await store.saveRoom(RoomRecord("lobby", "LOBBY", "new topic", "admin2", NOW))
    store, state = await backend.state(store)
    rooms = sorted(state.rooms, key=lambda r: r.key)
    assert rooms == [
        RoomRecord("dev", "dev", "code 'n' %s", "root", NOW - 5),
        RoomRecord("lobby", "LOBBY", "new topic", "admin2", NOW),
    ]


@pytest_twisted.ensureDeferred
async def test_sanctions_upsert_remove_and_expire(backend):
    store = backend.open()
    await store.addSanction(sanction("ban", "Mallory", None))
    await store.addSanction(sanction("mute", "Mallory", NOW + 3600, host=None))
    await store.addSanction(sanction("ban", "Old", NOW - 60))  # expired: not loaded
    await store.addSanction(sanction("mute", "Trudy", NOW + 60, reason="first"))
    await store.addSanction(sanction("mute", "Trudy", NOW + 600, reason="again"))  # replaces
    store, state = await backend.state(store)
    found = sorted(state.sanctions, key=lambda s: (s.kind, s.key))
    assert found == [
        sanction("ban", "Mallory", None),
        sanction("mute", "Mallory", NOW + 3600, host=None),
        sanction("mute", "Trudy", NOW + 600, reason="again"),
    ]
    assert await store.removeSanction("ban", "mallory") is True
    assert await store.removeSanction("ban", "mallory") is False
    assert await store.removeSanction("ban", "old") is True  # expired ones can be lifted
    store, state = await backend.state(store)
    left = sorted((s.kind, s.key) for s in state.sanctions)
    assert left == [("mute", "mallory"), ("mute", "trudy")]


# -- offline messages --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_offline_mailbox_limit_take_and_delete(backend):
    store = backend.open()
    for i in range(1, 4):
        assert await store.addOffline("bob", private(i, color="#ABCDEF" if i == 2 else None), 3)
    assert await store.addOffline("bob", private(4), 3) is False  # full
    assert await store.addOffline("carol", private(5, to="Carol"), 3) is True
    assert await store.addOffline("dave", private(6, to="Dave"), 0) is False
    taken = await store.takeOffline("bob")
    assert taken == [
        private(1, offline=True),
        private(2, color="#ABCDEF", offline=True),
        private(3, offline=True),
    ]
    assert await store.takeOffline("bob") == []  # deleted
    assert await store.addOffline("bob", private(7), 3) is True  # room again
    assert texts(await store.takeOffline("carol")) == ["psst 5"]
    assert [m.id for m in await store.takeOffline("bob")] == [7]


@pytest_twisted.ensureDeferred
async def test_offline_limit_holds_under_concurrent_senders(backend):
    store = backend.open()
    results = await defer.gatherResults(
        [store.addOffline("bob", private(i), 3) for i in range(1, 11)]
    )
    assert results.count(True) == 3
    assert len(await store.takeOffline("bob")) == 3


# -- pruning -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_prune_keeps_the_newest_per_room(backend):
    store = backend.open()
    for i in range(1, 11):
        store.addMessage(message(i, "a"))
    for i in range(11, 14):
        store.addMessage(message(i, "b"))
    await store.flush()
    assert await store.addOffline("bob", private(20, ts=NOW - 10**6), 5)
    assert await store.prune(NOW, 4, 0) == 6
    assert [m.id for m in await store.history("a", 100)] == [7, 8, 9, 10]
    assert [m.id for m in await store.history("b", 100)] == [11, 12, 13]
    assert len(await store.takeOffline("bob")) == 1  # the age rule is off


@pytest_twisted.ensureDeferred
async def test_prune_by_age_room_and_offline(backend):
    store = backend.open()
    for i in range(1, 11):
        store.addMessage(message(i, "a", ts=NOW - 1000 if i <= 6 else NOW - 10))
    await store.flush()
    assert await store.addOffline("bob", private(20, ts=NOW - 1000), 5)
    assert await store.addOffline("bob", private(21, ts=NOW - 10), 5)
    assert await store.prune(NOW, 0, 100) == 7
    assert [m.id for m in await store.history("a", 100)] == [7, 8, 9, 10]
    assert [m.id for m in await store.takeOffline("bob")] == [21]


@pytest_twisted.ensureDeferred
async def test_prune_both_rules_and_neither(backend):
    store = backend.open()
    for i in range(1, 21):
        store.addMessage(message(i, "a", ts=NOW - 1000 if i <= 5 else NOW))
    await store.flush()
    assert await store.prune(NOW, 0, 0) == 0
    assert await store.prune(NOW, 12, 100) == 8  # 1-5 too old, 6-8 beyond the newest 12
    assert [m.id for m in await store.history("a", 100)] == list(range(9, 21))
    assert await store.prune(NOW, 12, 100) == 0


@databases
@pytest_twisted.ensureDeferred
async def test_prune_deletes_in_chunks(backend):
    store = backend.open()
    store.pruneChunk = 3
    chunks = []
    original = store._count
    store._count = lambda *a: chunks.append(original(*a)) or chunks[-1]
    for i in range(1, 61):
        store.addMessage(message(i, "a" if i % 2 else "b", ts=NOW - 1000 if i <= 20 else NOW))
    await store.flush()
    assert await store.prune(NOW, 25, 100) == 20  # 1-10 beyond the newest 25, 11-20 too old
    assert max(chunks) == 3 and sum(chunks) == 20 and len(chunks) >= 20 // 3
    assert [m.id for m in await store.history("a", 100)] == list(range(21, 61, 2))


# -- surviving a restart -----------------------------------------------------------------


@databases
@pytest_twisted.ensureDeferred
async def test_everything_survives_a_restart(backend):
    store = backend.open(flushInterval=3600)
    alice = account("Alice", color="#FF0000", admin=True)
    await store.addAccount(alice)
    room = RoomRecord("lobby", "Lobby", "topic ✓", "root", NOW)
    await store.saveRoom(room)
    ban = sanction("ban", "Mallory", None)
    await store.addSanction(ban)
    await store.addSanction(sanction("mute", "Gone", NOW - 1))
    for i, text in enumerate(TRICKY, 1):
        store.addMessage(message(i, text=text, color="#00FF00"))
    await store.addOffline("alice", private(40, to="Alice", color="#0000FF"), 5)
    store = await backend.reopen(store)  # close() commits the queued messages
    state = store.load()
    kept = frozenset({"alice"}), frozenset({"lobby"})
    assert state == State(40, [room], [ban], *kept, cloakKey=state.cloakKey)
    assert await store.account("alice") == alice
    history = await store.history("lobby", 100)
    assert texts(history) == TRICKY
    assert {m.color for m in history} == {"#00FF00"}
    assert await store.takeOffline("alice") == [
        private(40, to="Alice", color="#0000FF", offline=True)
    ]


@databases
@pytest_twisted.ensureDeferred
async def test_close_commits_the_queue(backend):
    store = backend.open(flushInterval=3600, batchSize=1000)
    for i in range(1, 101):
        store.addMessage(message(i))
    await store.close()
    await store.close()  # twice is fine
    store.addMessage(message(101))  # after close: ignored, and no timer armed
    store = backend.open()
    assert store.load().lastId == 100
    assert len(await store.history("lobby", 1000)) == 100


@databases
@pytest_twisted.ensureDeferred
async def test_migrations_apply_once(backend):
    for _ in range(3):
        store = backend.open()
        store.load()
        await store.close()
    versions = backend.raw("SELECT version FROM schema_version ORDER BY version")
    assert [v for (v,) in versions] == list(range(1, VERSION + 1))


@databases
@pytest_twisted.ensureDeferred
async def test_the_cloak_key_is_made_once_and_kept_for_every_process(backend):
    store = backend.open()
    key = store.load().cloakKey
    assert len(key) == 64 and int(key, 16) >= 0  # 32 random bytes, in hex
    if not backend.exclusive:  # another process on the same database, at the same time
        assert backend.open().load().cloakKey == key
    store = await backend.reopen(store)
    assert store.load().cloakKey == key  # and after a restart
    assert backend.raw("SELECT name FROM server_keys") == [("cloak_key",)]


@databases
@pytest_twisted.ensureDeferred
async def test_a_newer_schema_is_refused(backend):
    await backend.open().close()
    backend.raw("INSERT INTO schema_version (version, applied) VALUES (?, ?)", (VERSION + 5, 0.0))
    with pytest.raises(StoreError) as raised:
        backend.open()
    assert f"schema version {VERSION + 5}" in str(raised.value)
    assert "upgrade chatserv" in str(raised.value)
    assert "\n" not in str(raised.value)


# -- when the database misbehaves ----------------------------------------------------------


def failing(store, times: int):
    """Make the next C{times} batch commits fail as if the database were down."""
    original = store._insertBatch
    calls = []

    def insert(txn, batch):
        calls.append(len(batch))
        if len(calls) <= times:
            raise store._dialect.module.OperationalError("database is down (test)")
        return original(txn, batch)

    store._insertBatch = insert
    return calls


@databases
@pytest_twisted.ensureDeferred
async def test_a_failed_commit_is_retried_with_nothing_lost(backend):
    store = backend.open(flushInterval=0.01, batchSize=5)
    calls = failing(store, 3)
    for i in range(1, 13):
        store.addMessage(message(i))
    await store.flush()
    assert [m.id for m in await store.history("lobby", 100)] == list(range(1, 13))
    assert len(calls) > 3


@databases
@pytest_twisted.ensureDeferred
async def test_rows_the_database_refuses_do_not_block_the_rest(backend):
    store = backend.open()
    store.addMessage(message(1))
    store.addMessage(message(2, text="lone surrogate \ud800"))  # cannot be encoded
    store.addMessage(message(3))
    await store.flush()
    assert [m.id for m in await store.history("lobby", 100)] == [1, 3]


@databases
@pytest_twisted.ensureDeferred
async def test_the_queue_is_bounded_while_the_database_is_down(backend):
    store = backend.open(flushInterval=0.01, batchSize=2)  # holds 100 batches: 200
    failing(store, 10**9)
    for i in range(1, 301):
        store.addMessage(message(i))
    assert len(store._queue) <= 200
    store._insertBatch = type(store)._insertBatch.__get__(store)  # the database is back
    await store.flush()
    ids = [m.id for m in await store.history("lobby", 1000)]
    assert 200 <= len(ids) <= 202 and ids[-1] == 300  # the oldest went


@databases
@pytest_twisted.ensureDeferred
async def test_close_gives_up_on_a_database_that_stays_down(backend, monkeypatch):
    monkeypatch.setattr(sqlstore, "CLOSE_GIVE_UP", 0.1)
    store = backend.open(flushInterval=0.01)
    failing(store, 10**9)
    store.addMessage(message(1))
    await store.close()  # returns (the message is lost, and logged), leaves no timer
    with pytest.raises(StoreError):
        await store.history("lobby", 10)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_postgresql_connections_killed_then_reconnected(backend):
    store = backend.open(flushInterval=0.01)
    store.addMessage(message(1))
    await store.flush()
    killed = backend.raw(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert killed
    assert [m.id for m in await store.history("lobby", 10)] == [1]  # a read is retried once
    store.addMessage(message(2))
    await store.flush()
    assert [m.id for m in await store.history("lobby", 10)] == [1, 2]


# -- refusing to start ---------------------------------------------------------------------


def oneLine(error: StoreError) -> str:
    text = str(error)
    assert text and "\n" not in text
    return text


def test_sqlite_unopenable_paths_are_refused(tmp_path):
    with pytest.raises(StoreError) as raised:
        openStore(str(tmp_path / "missing" / "chat.db"))
    assert "no directory" in oneLine(raised.value)
    with pytest.raises(StoreError) as raised:
        openStore(f"sqlite:{tmp_path}")
    assert "directory" in oneLine(raised.value)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just some text" * 100)
    with pytest.raises(StoreError) as raised:
        openStore(str(garbage))
    assert "not a database" in oneLine(raised.value)
    with pytest.raises(StoreError):
        openStore(":memory:")


@pytest_twisted.ensureDeferred
async def test_sqlite_file_is_created_in_wal_mode(tmp_path):
    path = tmp_path / "new.db"
    store = openStore(f"sqlite:{path}")
    store.load()
    await store.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()


def test_postgresql_bad_password_is_refused_without_showing_it():
    url = pgserver.serverURL()
    parts = urlsplit(url)
    secret = "Wr0ng-s3cret-%40x"  # percent-encoded in the URL: "Wr0ng-s3cret-@x"
    bad = parts._replace(netloc=f"{parts.username}:{secret}@{parts.hostname}:{parts.port}")
    with pytest.raises(StoreError) as raised:
        openStore(bad.geturl())
    text = oneLine(raised.value)
    assert "password authentication failed" in text
    assert "Wr0ng" not in text and "s3cret" not in text
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_postgresql_unreachable_is_refused():
    with pytest.raises(StoreError) as raised:
        openStore("postgresql://someone:hunter2@127.0.0.1:9/nowhere")
    text = oneLine(raised.value)
    assert "cannot connect to PostgreSQL at postgresql://someone:***@127.0.0.1:9/nowhere" in text
    assert "hunter2" not in text


def test_postgresql_without_psycopg_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    with pytest.raises(StoreError) as raised:
        openStore("postgresql://u:p@127.0.0.1/db")
    assert "chatserv[postgresql]" in oneLine(raised.value)


def test_batching_settings_are_checked(tmp_path):
    with pytest.raises(StoreError, match="batch size"):
        openStore(str(tmp_path / "a.db"), batchSize=0)
    with pytest.raises(StoreError, match="flush interval"):
        openStore(str(tmp_path / "a.db"), flushInterval=-1)


# -- ids and node slots: several processes on one database ---------------------------------

shareable = pytest.mark.parametrize("backend", ["sqlite-shared", "postgresql"], indirect=True)


def errors(events: list[dict]) -> list[str]:
    from twisted.logger import LogLevel, formatEvent

    return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.error]


@shareable
@pytest_twisted.ensureDeferred
async def test_each_store_on_one_database_leases_a_node_slot_of_its_own(backend):
    first, second = backend.open(), backend.open()
    assert (first.load().node, second.load().node) == (0, 1)
    await first.close()  # gives slot 0 back
    assert backend.open().load().node == 0
    names = backend.raw("SELECT slot, name FROM node_slots ORDER BY slot")
    assert [slot for slot, _ in names] == [0, 1] and all(":" in name for _, name in names)


@shareable
@pytest_twisted.ensureDeferred
async def test_a_lost_lease_is_taken_again_with_another_slot(backend, logged):
    killed = backend.open()
    assert killed.load().node == 0
    backend.raw("UPDATE node_slots SET expires = 0")  # as if its process died long ago
    survivor = backend.open()
    assert survivor.load().node == 0  # the expired lease is free
    moved: list[int] = []
    killed.watchNode(moved.append)
    await killed.lease._renew(killed._run)  # it was not dead after all: it renews
    assert moved == [1] and killed.lease.slot == 1
    expires = dict(backend.raw("SELECT slot, expires FROM node_slots"))
    assert sorted(expires) == [0, 1] and min(expires.values()) > time.time()
    await survivor.lease._renew(survivor._run)
    assert survivor.lease.slot == 0  # renewed in place


@databases
@pytest_twisted.ensureDeferred
async def test_a_batch_committed_though_reported_failed_is_stored_once(backend, logged):
    store = backend.open(flushInterval=0.01, batchSize=5)
    original, calls = store._insertBatch, []

    def insert(txn, batch):  # commits, then the connection "fails" before saying so
        calls.append(len(batch))
        original(txn, batch)
        if len(calls) == 1:
            txn._connection.commit()
            raise store._dialect.module.OperationalError("connection lost (test)")

    store._insertBatch = insert
    for i in range(1, 6):
        store.addMessage(message(i))
    await store.flush()
    assert [m.id for m in await store.history("lobby", 100)] == [1, 2, 3, 4, 5]
    assert len(calls) == 2  # then row by row, where each is found stored as it is
    assert [e for e in errors(logged) if "refused" in e] == []


@databases
@pytest_twisted.ensureDeferred
async def test_another_message_under_a_taken_id_is_an_error_in_the_log(backend, logged):
    store = backend.open()
    store.addMessage(message(1))
    await store.flush()
    store.addMessage(message(1, text="someone else's"))
    store.addMessage(message(2))
    await store.flush()
    assert [m.text for m in await store.history("lobby", 100)] == ["line 1", "line 2"]
    assert errors(logged) == [
        f"{store._dialect.name} refused room message 1, left out of history:"
        " its id is another message's"
    ]
    assert await store.addOffline("bob", private(7), 5)
    with pytest.raises(StoreError):
        await store.addOffline("bob", private(7, text="another"), 5)
    assert "private message 7" in errors(logged)[-1]


@shareable
@pytest_twisted.ensureDeferred
async def test_two_services_on_one_database_lose_no_message(backend, logged):
    # Each process used to count ids from the largest stored one: both made the same
    # id, and one of the two messages was dropped without a word.
    from helpers import FakeClient, endTurn, makeService
    from twisted.internet import reactor

    talkers = []
    for nick in ("alice", "bob"):  # both start before either speaks
        service, _ = makeService(store=backend.open())  # the same moment on both clocks
        user = service.connect(FakeClient(name=nick))
        service.setNick(user, nick)
        endTurn(service)
        talkers.append((service, user))
    said = []
    for service, user in talkers:
        for _ in range(500):  # the join waits for the room's history from the database
            if "lobby" in user.rooms:
                break
            await task.deferLater(reactor, 0.01)
        said.append(service.say(user, "lobby", f"hello from {user.nick}"))
        await service.store.flush()
    assert said[0].id != said[1].id
    history = await backend.open().history("lobby", 10)
    assert [m.text for m in history] == ["hello from alice", "hello from bob"]
    assert errors(logged) == []


@shareable
@pytest_twisted.ensureDeferred
async def test_a_process_beyond_the_last_slot_refuses_to_start(backend):
    backend.open().load()  # migrated, with slot 0 leased
    for slot in range(1, 64):
        backend.raw(
            "INSERT INTO node_slots (slot, holder, name, expires) VALUES (?, ?, ?, ?)",
            (slot, f"h{slot}", f"other:{slot}", time.time() + 60),
        )
    with pytest.raises(StoreError) as raised:
        backend.open().load()
    assert "all 64 node slots of this database are leased" in oneLine(raised.value)


@shareable
@pytest_twisted.ensureDeferred
async def test_of_several_processes_on_one_database_one_prunes(backend):
    first, second = backend.open(), backend.open()
    assert (first.load().node, second.load().node) == (0, 1)
    for i in range(1, 11):
        first.addMessage(message(i))
    await first.flush()
    assert await second.prune(NOW, 4, 0) == 0  # slot 1: the process on slot 0 prunes
    assert await first.prune(NOW, 4, 0) == 6
    await first.close()  # its lease ends: the next lowest takes over
    for i in range(11, 15):
        second.addMessage(message(i))
    await second.flush()
    assert await second.prune(NOW, 4, 0) == 4
