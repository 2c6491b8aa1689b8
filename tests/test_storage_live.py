"""Storage faults against a real `twistd -n chatserv` on a SQLite file, with the default
storage settings: the disk fills up, the file is made immutable, the file is deleted.

The first two need root (a tmpfs to fill, chattr +i: see L{fsfaults}) and are skipped
without it; the deletion runs anywhere.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest_twisted
import test_persistence as persistence
from clients import eventually
from fsfaults import fill, tinyFilesystem
from fsfaults import immutable as immutable  # a fixture
from twisted.internet import defer

LOCAL = "tcp:0:interface=127.0.0.1"
CONFIG = (
    "[limits]\nrate_limit = 1000.0\nrate_burst = 1000\n"
    "ip_rate_limit = 1000.0\nip_rate_burst = 1000\n"
)


class Server(persistence.Server):
    """A twistd run, as in the persistence tests, with flood control out of the way."""

    config = CONFIG

    def __init__(self, directory: Path, database: Path) -> None:
        super().__init__(directory, str(database))

    async def line(self, nick: str):  # named, and in the default room
        client = await super().line(nick)
        await client.until("users (")
        return client

    def alive(self) -> bool:
        return not self.proc.ended.called


async def answeredWithin(client, request: str, expect: str, seconds: float) -> str:
    from twisted.internet import reactor

    client.say(request)
    return await defer.ensureDeferred(client.until(expect)).addTimeout(seconds, reactor)


@pytest_twisted.ensureDeferred
async def test_a_full_disk_leaves_every_session_responsive(tmp_path):
    with tinyFilesystem(tmp_path / "tiny", "1m") as directory:
        server = Server(tmp_path, directory / "chat.db")
        await server.start()
        try:
            alice = await server.line("alice")
            alice.say("/join dev")
            alice.say("before")
            await answeredWithin(alice, "/time", "server time", 5)
            filler = fill(directory)
            for i in range(100):
                alice.say(f"while full {i} " + "x" * 400)
            await answeredWithin(alice, "/time", "server time", 5)
            await eventually(lambda: "cannot commit" in server.proc.output, timeout=10)
            # Both wait on the database: the answer must come within db_timeout (5 s).
            alice.say("/history 200")
            assert "the history is unavailable right now" in await alice.until("error:")
            await answeredWithin(alice, "/time", "server time", 6)
            alice.say("/join lobby")
            bob = await server.line("bob")
            bob.say("/join dev")
            await answeredWithin(bob, "/time", "server time", 6)
            filler.unlink()  # the next retry (within 5 s) commits what waited
            await eventually(lambda: "committed again" in server.proc.output, timeout=20)
            carol = await server.line("carol")
            carol.say("/join dev")  # loads #dev's history: waits for the queue to commit
            await carol.until("#dev users")
            carol.say("/history 200")
            await carol.until("--- history: the last 101 messages ---")
            assert "<alice> while full 99" in "\n".join([await carol.next() for _ in range(101)])
            for client in (alice, bob, carol):
                client.say("/quit")
        finally:
            assert await server.stop() == (None, signal.SIGTERM)
        assert "cannot commit" in server.proc.output


@pytest_twisted.ensureDeferred
async def test_an_immutable_database_does_not_kill_the_server(tmp_path, immutable):
    """With SQLite's -shm file mapped into the process, the first write after chattr +i
    faulted and the server died of SIGBUS without a line. Now it goes on, says why it
    cannot write, and commits what waited once the file is writable again."""
    immutable.check(tmp_path)
    database = tmp_path / "chat.db"
    server = Server(tmp_path, database)
    await server.start()
    try:
        alice = await server.line("alice")
        alice.say("/register alice-password")
        await alice.until("registered alice")
        alice.say("before")
        await answeredWithin(alice, "/time", "server time", 5)
        immutable.freeze(database, f"{database}-wal", f"{database}-shm")
        for i in range(20):
            alice.say(f"while read-only {i}")
        await answeredWithin(alice, "/time", "server time", 5)
        await eventually(lambda: "cannot be written" in server.proc.output, timeout=20)
        assert server.alive()
        await answeredWithin(alice, "/time", "server time", 5)
        immutable.release()
        await eventually(lambda: "committed again" in server.proc.output, timeout=20)
        alice.say("/quit")
    finally:
        immutable.release()
        assert await server.stop() == (None, signal.SIGTERM)
    await server.start()
    try:
        carol = await server.line("carol")
        carol.say("/history 30")
        await carol.until("--- history: the last 21 messages ---")
        said = [(await carol.next()).split("> ", 1)[1] for _ in range(21)]
        assert said == ["before"] + [f"while read-only {i}" for i in range(20)]
        carol.say("/quit")
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_deleted_database_outlives_a_restart(tmp_path):
    database = tmp_path / "chat.db"
    server = Server(tmp_path, database)
    await server.start()
    try:
        alice = await server.line("alice")
        alice.say("/register alice-password")
        await alice.until("registered alice")
        alice.say("before")
        await answeredWithin(alice, "/time", "server time", 5)
        database.unlink()
        alice.say("after")
        await answeredWithin(alice, "/time", "server time", 5)
        alice.say("/quit")
    finally:
        await server.stop()  # within db_check_interval, or at the stop: written anew
    assert "was deleted while the server ran" in server.proc.output
    await server.start()
    try:
        bob = await server.line("bob")
        bob.say("/history 10")
        await bob.until("--- history: the last 2 messages ---")
        assert [(await bob.next()).split("> ", 1)[1] for _ in range(2)] == ["before", "after"]
        bob.say("/nick alice")
        assert 'the nickname "alice" is registered' in await bob.until("error:")
        bob.say("/quit")
    finally:
        await server.stop()
