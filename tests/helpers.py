"""Test doubles and clients shared by the test modules."""

from __future__ import annotations

import json

from argon2 import PasswordHasher
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from chatserv.accounts import Passwords
from chatserv.config import Settings
from chatserv.interfaces import IChatClient, IWire
from chatserv.protocols.line import LineChatFactory
from chatserv.service import ChatService

# Noon, 2026-11-21 UTC: rendered as [12:00:00] with TZ=UTC (see conftest).
NOON = 1795262400.0


# Cheap argon2 parameters: tests check behaviour, not the cost of a guess.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def fastPasswords(inThread: bool = False) -> Passwords:
    """Password hashing for tests: cheap, and synchronous unless C{inThread}."""
    return Passwords(hasher=FAST_HASHER, inThread=inThread)


def makeService(store=None, **settings) -> tuple[ChatService, Clock]:
    clock = Clock()
    clock.advance(NOON)
    service = ChatService(Settings(**settings), clock=clock, store=store, passwords=fastPasswords())
    return service, clock


@implementer(IWire)
class RecordingWire:
    """Renders nothing: the payload is the event itself. Counts renders."""

    def __init__(self) -> None:
        self.renders = 0

    def render(self, event):
        self.renders += 1
        return event


@implementer(IChatClient)
class FakeClient:
    def __init__(self, wire: RecordingWire | None = None, echo: bool = False, name: str = "x"):
        self.wire = wire or RecordingWire()
        self.echo = echo
        self.address = f"fake {name}"
        self.host = f"fake-{name}"
        self.received: list = []
        self.closedWith: str | None = None

    def send(self, payload) -> None:
        self.received.append(payload)

    def close(self, reason: str) -> None:
        self.closedWith = reason

    def take(self, kind=None) -> list:
        """Return and forget what was received (only events of type C{kind}, if given)."""
        got, self.received = self.received, []
        return [e for e in got if kind is None or isinstance(e, kind)]


class LineConnection:
    """A line protocol over a StringTransport, as a netcat user would drive it."""

    def __init__(self, service: ChatService, host: str = "10.0.0.1", port: int = 5000):
        from twisted.internet.address import IPv4Address

        factory = LineChatFactory(service)
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes | str) -> None:
        self.protocol.dataReceived(data.encode() if isinstance(data, str) else data)

    def outputBytes(self) -> bytes:
        """Everything written since the last call."""
        self.protocol.factory.flusher.flush()  # what the reactor does at the end of a turn
        value = self.transport.value()
        self.transport.clear()
        return value

    def output(self) -> str:
        """Everything written since the last call, decoded."""
        return self.outputBytes().decode("utf-8")

    def lines(self) -> list[str]:
        text = self.output()
        assert text == "" or text.endswith("\r\n"), f"partial line written: {text!r}"
        return text.split("\r\n")[:-1]

    def drop(self) -> None:
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.protocol.connectionLost(Failure(ConnectionLost()))


def named(
    service: ChatService, nick: str, port: int = 5000, host: str = "10.0.0.1"
) -> LineConnection:
    """A line connection that has chosen C{nick} and whose output so far is read."""
    conn = LineConnection(service, host=host, port=port)
    conn.send(nick + "\r\n")
    conn.output()
    return conn


def jsonLoads(payload: bytes | str) -> dict:
    return json.loads(payload)


async def within(d: defer.Deferred, seconds: float = 5.0):
    """Await C{d}, failing the test if it takes longer than C{seconds}."""
    from twisted.internet import reactor

    return await d.addTimeout(seconds, reactor)
