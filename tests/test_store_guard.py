"""Every wait on the database ends (chatserv.store.guard): a store that does not answer,
or fails, gives the client a clear error within db_timeout, and the connection's next
requests are answered.

The stores here are memory stores whose answers are held back (the database hangs) or
that fail as SQLite does when its disk is full; tests/test_store_faults.py has the real
files.
"""

from __future__ import annotations

import sqlite3

from fuzzing import no_unhandled_errors  # noqa: F401 (an autouse fixture)
from helpers import FAST_HASHER, NOON, LineConnection, failureOf, makeService, named, resultOf
from twisted.internet import defer
from twisted.logger import formatEvent

from chatserv.events import PrivateMessage
from chatserv.service import CONSOLE
from chatserv.store import Account, StoreError
from chatserv.store.memory import MemoryStore

# chatserv.errors.StoreUnavailable and chatserv.store.guard are imported where used, so
# that the rest of this module also runs against a chatserv without them.

DB_TIMEOUT = 5.0  # the default: Settings().db_timeout


class HangingStore(MemoryStore):
    """A memory store whose calls named in C{hanging} do their work at once but answer
    only when the test L{release}s them: a database that is slow to reply."""

    def __init__(self) -> None:
        super().__init__()
        self.hanging: set[str] = set()
        self.held: list[tuple[str, defer.Deferred, defer.Deferred]] = []

    def __getattribute__(self, name: str):
        attribute = super().__getattribute__(name)
        if name not in object.__getattribute__(self, "hanging"):
            return attribute

        def held(*args):
            answer = attribute(*args)
            later: defer.Deferred = defer.Deferred()
            self.held.append((name, answer, later))
            return later

        return held

    def release(self) -> None:
        held, self.held = self.held, []
        for _, answer, later in held:
            answer.chainDeferred(later)


class FullDiskStore(MemoryStore):
    """A memory store whose calls named in C{failing} fail as SQLite's do on a full disk."""

    errors = (sqlite3.Error, StoreError)

    def __init__(self, *failing: str) -> None:
        super().__init__()
        self.failingCalls = set(failing)

    def __getattribute__(self, name: str):
        if name in object.__getattribute__(self, "failingCalls"):
            return lambda *a: defer.fail(sqlite3.OperationalError("database or disk is full"))
        return super().__getattribute__(name)


def texts(events: list[dict]) -> list[str]:
    return [formatEvent(e) for e in events]


def lastLines(connection: LineConnection, n: int) -> list[str]:
    return connection.lines()[-n:]


# -- reads ----------------------------------------------------------------------------------


def test_history_then_time_while_the_database_does_not_answer():
    store = HangingStore()
    service, clock = makeService(store=store)
    alice = named(service, "alice")
    for i in range(3):
        alice.send(f"line {i}\n")
    alice.output()
    store.hanging = {"flush"}
    alice.send("/history 10\n")  # three are in memory: the rest must come from the store
    alice.send("/time\n")
    assert alice.lines() == []  # both wait: requests run in order
    clock.advance(DB_TIMEOUT)
    answered = alice.lines()
    assert answered[0] == (
        "[12:00:05] error: the history is unavailable right now: the database did not"
        " answer within 5 s"
    )
    assert "server time" in answered[1]
    store.release()  # the answer that comes late is dropped
    assert alice.lines() == []


def test_an_answer_in_time_cancels_the_deadline():
    store = HangingStore()
    service, clock = makeService(store=store)
    store.hanging = {"history"}
    d = service.store.history("lobby", 10)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(DB_TIMEOUT - 0.1)
    store.release()
    assert resultOf(d) == []
    assert clock.getDelayedCalls() == []


def test_joining_a_room_whose_history_cannot_be_loaded(logged):
    store = HangingStore()
    service, clock = makeService(store=store)
    alice = named(service, "alice")
    alice.send("/join dev\n")
    alice.send("said in dev\n")
    alice.send("/join lobby\n")  # #dev is empty: its history is loaded by the next join
    assert "dev" not in service.rooms
    store.hanging = {"history"}
    bob = named(service, "bob", port=5001)
    bob.send("/join dev\n")
    bob.send("/time\n")
    assert bob.lines() == []
    clock.advance(DB_TIMEOUT)
    shown = bob.lines()
    assert (
        "[12:00:05] -!- #dev: the history is unavailable right now: the database did not"
        " answer within 5 s"
    ) in shown
    assert any("#dev users (1): bob" in line for line in shown)  # joined all the same
    assert "server time" in shown[-1]
    bob.send("hello\n")  # said while #dev's history is not loaded: the store has it
    # The database answers again: the next join loads the history that was missing.
    store.release()
    store.hanging = set()
    carol = named(service, "carol", port=5002)
    carol.send("/join dev\n")
    replayed = carol.lines()
    assert "[2026-11-21 12:00:00] #dev <alice> said in dev" in replayed
    assert "[2026-11-21 12:00:05] #dev <bob> hello" in replayed
    assert any("history got no answer within 5 s" in t for t in texts(logged))
    assert not any("log_failure" in e for e in logged)


def test_choosing_a_nickname_while_account_lookups_fail(logged):
    store = FullDiskStore("account")
    # A registered name: the one kind of nickname whose choice asks the database.
    store.accounts["alice"] = Account("alice", "alice", "hash", created=NOON)
    service, clock = makeService(store=store)
    conn = LineConnection(service)
    conn.output()
    conn.send("alice\n")
    conn.send("/time\n")
    shown = conn.lines()
    assert shown[0] == (
        "[12:00:00] error: account lookups are unavailable right now: the database failed"
        " (the server logged why); try again in a moment"
    )
    assert any("server time" in line for line in shown)
    assert "database: account failed: database or disk is full" in texts(logged)
    assert not any("log_failure" in e for e in logged)  # one line, no traceback
    assert "internal error" not in "\n".join(shown)


def test_a_flush_is_refused_at_once_while_the_store_cannot_commit():
    store = MemoryStore()
    service, clock = makeService(store=store)
    alice = named(service, "alice")
    store.failing = "room messages cannot be committed (OperationalError: disk full)"
    alice.send("/history 10\n")
    assert alice.lines() == [
        "[12:00:00] error: the history is unavailable right now: the database cannot store"
        " anything at the moment (the server logged why); try again later"
    ]
    assert service.store.unavailable == 1


# -- writes ---------------------------------------------------------------------------------


def test_a_registration_given_up_on_says_it_may_still_be_stored():
    store = HangingStore()
    service, clock = makeService(store=store)
    alice = named(service, "alice")
    store.hanging = {"addAccount"}
    alice.send("/register wonderland-42\n")
    alice.send("/time\n")
    clock.advance(DB_TIMEOUT)
    shown = alice.lines()
    assert shown[0] == (
        "[12:00:05] error: the account may not be registered: the database did not answer"
        " within 5 s (it may still be registered later)"
    )
    assert "server time" in shown[1]
    assert service.users["alice"].account is None  # not logged in on a maybe
    store.release()  # it was stored after all: the password works
    store.hanging = set()
    other = LineConnection(service, port=5001)
    other.send("/login alice wonderland-42\n")
    assert any("you are logged in as alice" in line for line in other.lines())


def test_a_ban_that_cannot_be_stored_is_in_force_and_says_so():
    from chatserv.errors import StoreUnavailable

    service, clock = makeService(store=FullDiskStore("addSanction"))
    mallory = named(service, "mallory")
    failure = failureOf(
        defer.ensureDeferred(service.ban(CONSOLE, "mallory", reason="spam")), StoreUnavailable
    )
    assert str(failure.value) == (
        "the ban could not be stored: the database failed (the server logged why); it"
        " stands until the server restarts"
    )
    assert mallory.protocol.transport.disconnecting
    assert service.sanctions.active("ban", "mallory", service.now()) is not None


def test_private_messages_taken_too_late_are_kept_for_the_next_login():
    store = HangingStore()
    service, clock = makeService(store=store)
    store.accounts["bob"] = Account("bob", "bob", FAST_HASHER.hash("bob-password"))
    store.offline["bob"].append(PrivateMessage("alice", "bob", "while you were out", 1.0, 7))
    store.hanging = {"takeOffline"}
    bob = LineConnection(service)
    bob.send("/login bob bob-password\n")
    clock.advance(DB_TIMEOUT)
    shown = bob.lines()
    assert any("you are logged in as bob" in line for line in shown)
    assert shown[-1].endswith(
        "error: the private messages kept for you are unavailable right now: the database"
        " did not answer within 5 s; they stay kept"
    )
    assert store.offline["bob"] == []  # the store did take them...
    store.release()
    assert [m.text for m in store.offline["bob"]] == ["while you were out"]  # ...and back
    store.hanging = set()
    bob.send("/quit\n")
    again = LineConnection(service, port=5001)
    again.send("/login bob bob-password\n")
    assert any("while you were out" in line for line in again.lines())


# -- the wrapper itself ---------------------------------------------------------------------


def test_answered_calls_arm_no_timer_and_the_rest_of_the_store_shows_through():
    from chatserv.service import ChatService
    from chatserv.store.guard import GuardedStore

    service, clock = makeService()
    assert isinstance(service.store, GuardedStore)
    before = len(clock.getDelayedCalls())
    assert resultOf(service.store.account("nobody")) is None
    assert len(clock.getDelayedCalls()) == before
    assert service.store.accounts == {}  # the memory store's own attribute
    again = ChatService(service.settings, clock=clock, store=service.store)
    assert again.store is service.store  # wrapped once only


def test_a_late_failure_is_logged_not_left_unhandled(logged):
    from chatserv.errors import StoreUnavailable

    store = HangingStore()
    service, clock = makeService(store=store)
    guarded = service.store
    store.hanging = {"setColor"}
    d = guarded.setColor("alice", "#112233")
    d.addErrback(lambda f: f.trap(StoreUnavailable))
    clock.advance(DB_TIMEOUT)
    assert d.called
    _, _, later = store.held.pop()
    later.errback(sqlite3.OperationalError("database is locked"))
    assert any(
        "setColor, given up on after 5 s, failed later: database is locked" in t
        for t in texts(logged)
    )


def test_the_metrics_say_when_the_database_is_in_trouble():
    from chatserv.metrics import ChatCollector

    store = MemoryStore()
    service, clock = makeService(store=store)
    collector = ChatCollector(service, lag=type("Lag", (), {"last": 0.0, "takeWorst": float})())

    def sample(name):
        for family in collector.collect():
            for s in family.samples:
                if s.name == name:
                    return s.value
        raise KeyError(name)

    assert sample("chatserv_database_ok") == 1
    alice = named(service, "alice")
    store.problem = "room messages cannot be committed (OperationalError: disk full)"
    store.failing = store.problem
    alice.send("/history 5\n")
    assert sample("chatserv_database_ok") == 0
    assert sample("chatserv_database_unavailable_total") == 1
