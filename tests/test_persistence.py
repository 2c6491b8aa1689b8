"""Restarts over real sockets: `twistd -n chatserv --db ...` stopped (gracefully, or with
kill -9) and started again on the same database, SQLite and PostgreSQL alike."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import pytest_twisted
from clients import connectLine, connectWS
from test_e2e import TwistdProcess, spawnTwistd

LOCAL = "tcp:0:interface=127.0.0.1"
CONFIG = """
[limits]
rate_limit = 10000.0
rate_burst = 10000
ip_rate_limit = 10000.0
ip_rate_burst = 10000
[storage]
flush_interval = 0.05
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "chat.db")
        return
    from pgserver import freshDatabase

    with freshDatabase() as url:
        yield url


class Server:
    """One twistd run on C{database}; several runs share the directory and the database."""

    config = CONFIG  # the settings of its chat.toml

    def __init__(self, directory: Path, database: str) -> None:
        self.directory = directory
        self.database = database
        (directory / "chat.toml").write_text(self.config)

    async def appoint(self, nick: str, password: str) -> None:
        """Register C{nick} on a first run, then name it an admin in the config file (a
        listed name without an account is reserved: nobody could register it)."""
        await self.start()
        client = await self.line(nick)
        client.say(f"/register {password}")
        await client.until(f"registered {nick}")
        await client.hangUp()
        await self.stop()
        admins = f'[accounts]\nadmins = ["{nick}"]\n'
        (self.directory / "chat.toml").write_text(admins + self.config)

    async def start(self) -> None:
        from twisted.internet import reactor

        self.proc = TwistdProcess(expected=2)
        spawnTwistd(
            self.proc,
            self.directory,
            "-n",
            "--pidfile=",
            "chatserv",
            "--config",
            "chat.toml",
            "--db",
            self.database,
            "--tcp",
            LOCAL,
            "--ws",
            LOCAL,
        )
        self.ports = await self.proc.listening.addTimeout(30, reactor)

    async def line(self, first: str | None = None):
        client = await connectLine(self.ports["line"])
        await client.until("Type a nickname")
        if first is not None:
            client.say(first)
        return client

    async def stop(self, how: int = signal.SIGTERM):
        from twisted.internet import reactor

        self.proc.transport.signalProcess(how)
        ended = await self.proc.ended.addTimeout(30, reactor)
        assert "Traceback" not in self.proc.output, self.proc.output
        return ended


@pytest_twisted.ensureDeferred
async def test_a_graceful_restart_keeps_everything(tmp_path, database):
    server = Server(tmp_path, database)
    await server.appoint("alice", "alice-password")
    await server.start()
    alice = await server.line("/login alice alice-password")
    await alice.until("users (1): alice")
    alice.say("/topic Welcome back")
    await alice.until("topic: Welcome back")
    alice.say("/join dev")
    alice.say("/topic Builds and deploys")
    await alice.until("#dev topic: Builds and deploys")
    alice.say("/join lobby")
    await alice.until("#lobby users")
    bob = await connectWS(server.ports["websocket"], json_=True)
    bob.request(type="nick", nick="bob")
    bob.request(type="register", password="bob-password")
    bob.request(type="color", color="#1e90ff")
    await bob.until(lambda e: e["type"] == "notice" and "colour is now" in e["text"])
    bob.request(type="quit")
    await bob.closed
    said = [f"message {i}" for i in range(20)]
    for text in said:
        alice.say(text)
    alice.say("/msg bob while you were out")
    await alice.until("kept for their next login")
    alice.say("/ban mallory 1h spam")
    await alice.until("banned mallory")
    alice.say("/mute carol")
    await alice.until("muted carol")
    alice.say("the last word")
    alice.say("/time")  # answered once the line before it was accepted
    await alice.until("server time")
    # Right after the last message: a graceful stop must store what is still queued.
    assert await server.stop() == (None, 15)
    await alice.closed

    await server.start()
    carol = await server.line("carol")
    await carol.until("#lobby topic: Welcome back (set by alice")
    await carol.until("--- history: the last 21 messages ---")
    replayed = [(await carol.next()).split("> ", 1)[1] for _ in range(21)]
    assert replayed == said + ["the last word"]
    await carol.until("--- end of history ---")
    carol.say("can I talk?")
    assert "you are muted until lifted" in await carol.until("error:")
    carol.say("/rooms")
    assert "#dev (0)" in await carol.until("rooms (")  # permanent: listed while empty

    bob = await connectWS(server.ports["websocket"], json_=True)
    bob.request(type="login", nick="bob", password="bob-password")
    login = await bob.until(lambda e: e["type"] == "login")
    assert (login["nick"], login["admin"], login["color"]) == ("bob", False, "#1e90ff")
    kept = await bob.until(lambda e: e["type"] == "msg")
    assert (kept["from"], kept["text"], kept["offline"]) == ("alice", "while you were out", True)

    alice = await server.line("/login alice wrong-password")
    await alice.until("wrong nickname or password")
    alice.say("/login alice alice-password")
    assert (await alice.until("logged in")).endswith("you are logged in as alice (admin)")
    alice.say("fresh after the restart")
    fresh = await bob.until(lambda e: e["type"] == "message")
    assert fresh["id"] > kept["id"]  # ids go on from the stored ones

    mallory = await server.line("mallory")
    assert 'the nickname "mallory" is banned' in await mallory.until("error:")
    for client in (carol, alice, mallory):
        client.say("/quit")
    bob.request(type="quit")
    await server.stop()


@pytest_twisted.ensureDeferred
async def test_after_kill_9_only_the_last_flush_interval_can_be_lost(tmp_path, database):
    """With flush_interval 0.05 s, every message accepted more than that before a kill -9
    is there after the restart (here: all 300, the kill coming 1 s after the last)."""
    from twisted.internet import reactor, task

    server = Server(tmp_path, database)
    await server.start()
    alice = await server.line("alice")
    await alice.until("users (1): alice")
    bob = await server.line("bob")
    await bob.until("users (2)")
    count = 300
    for i in range(count):
        alice.say(f"burst {i}")
    for i in range(count):  # delivered to bob: accepted and queued for the store
        await bob.until(f"<alice> burst {i}")
    await task.deferLater(reactor, 1.0, lambda: None)  # 20 flush intervals
    assert await server.stop(signal.SIGKILL) == (None, signal.SIGKILL)

    await server.start()
    carol = await server.line("carol")
    await carol.until("users (1): carol")
    carol.say(f"/history {count}")
    await carol.until(f"--- history: the last {count} messages ---")
    replayed = [(await carol.next()).split("> ", 1)[1] for _ in range(count)]
    assert replayed == [f"burst {i}" for i in range(count)]
    carol.say("/quit")
    await server.stop()
