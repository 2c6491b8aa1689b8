"""Test doubles and clients shared by the test modules."""

from __future__ import annotations

import json

from argon2 import PasswordHasher
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
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


class ManualPool:
    """A thread pool that runs nothing until told to, oldest job first: what waits for a
    thread can be counted and answered by hand, without threads."""

    def __init__(self) -> None:
        self.jobs: list[tuple] = []
        self.started = 0  # jobs ever handed to the pool

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs) -> None:
        self.jobs.append((onResult, f, args, kwargs))
        self.started += 1

    def runNext(self) -> None:
        onResult, f, args, kwargs = self.jobs.pop(0)
        try:
            result = f(*args, **kwargs)
        except Exception:
            onResult(False, Failure())
        else:
            onResult(True, result)

    def runAll(self) -> None:
        """Run jobs until none is left, including those that finished ones started."""
        while self.jobs:
            self.runNext()


class ManualReactor:
    """What L{Passwords} asks of a reactor, over a L{ManualPool}."""

    def __init__(self) -> None:
        self.pool = ManualPool()

    def getThreadPool(self) -> ManualPool:
        return self.pool

    def callFromThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)  # the "thread" is the test itself


def manualPasswords(**kwargs) -> tuple[Passwords, ManualPool]:
    """Cheap hashing through the real queue, into a pool the test runs by hand."""
    reactor = ManualReactor()
    return Passwords(reactor=reactor, hasher=FAST_HASHER, **kwargs), reactor.pool


def manualService(passwords=None, **settings) -> tuple[ChatService, Clock, ManualPool]:
    """A service whose password checks wait until the test runs them (see L{ManualPool});
    C{passwords} are keyword arguments for L{Passwords}."""
    clock = Clock()
    clock.advance(NOON)
    _oneAddress(settings)
    settings.setdefault("max_connections_per_ip", 10_000)
    hashing, pool = manualPasswords(**(passwords or {}))
    return ChatService(Settings(**settings), clock=clock, passwords=hashing), clock, pool


def _oneAddress(settings: dict) -> None:
    # Most tests' connections come from one address, on a clock that stands still: the
    # per-address limits would otherwise be what they test. Tests of those set them.
    settings.setdefault("ip_connect_burst", 10_000)
    settings.setdefault("ip_rate_burst", 10_000)


def endTurn(service: ChatService) -> None:
    """Run what the service left for the end of the reactor turn (a first nickname's
    join of the default room), as the reactor would, on a test's clock."""
    if isinstance(service.clock, Clock):
        service.clock.advance(0)


def makeService(store=None, bus=None, directory=None, **settings) -> tuple[ChatService, Clock]:
    clock = Clock()
    clock.advance(NOON)
    _oneAddress(settings)
    service = ChatService(
        Settings(**settings),
        clock=clock,
        bus=bus,
        store=store,
        passwords=fastPasswords(),
        directory=directory,
    )
    return service, clock


@implementer(IWire)
class RecordingWire:
    """Renders nothing: the payload is the event itself. Counts renders."""

    def __init__(self) -> None:
        self.renders = 0

    def render(self, event):
        self.renders += 1
        return event

    def renderTo(self, event, nick):
        return self.render(event)


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

    def __init__(
        self, service: ChatService | None = None, host: str = "10.0.0.1", port: int = 5000,
        factory=None,
    ):  # fmt: skip
        from twisted.internet.address import IPv4Address

        if factory is None:
            factory = self.makeFactory(service)
        peer = IPv4Address("TCP", host, port)
        self.factory = factory
        self.protocol = factory.buildProtocol(peer)  # or a Refusal, past a limit
        self.transport = StringTransport(peerAddress=peer)
        self.protocol.makeConnection(self.transport)

    def makeFactory(self, service: ChatService):
        return LineChatFactory(service)

    def send(self, data: bytes | str) -> None:
        self.protocol.dataReceived(data.encode() if isinstance(data, str) else data)

    def outputBytes(self) -> bytes:
        """Everything written since the last call."""
        endTurn(self.factory.service)
        self.factory.flusher.flush()  # what the reactor does at the end of a turn
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


class IrcConnection(LineConnection):
    """An IRC client's connection over a StringTransport, as irssi or a bot would drive
    it. Connections made with one C{factory} share its wires and its ping deadlines, as
    the clients of one listener do."""

    def __init__(
        self, service: ChatService | None = None, factory=None, host: str = "10.0.0.1",
        port: int = 6667,
    ):  # fmt: skip
        super().__init__(service, host, port, factory)

    def makeFactory(self, service: ChatService):
        from chatserv.protocols.irc import IrcFactory

        return IrcFactory(service, kind="irc")

    def sendLine(self, text: str) -> None:
        self.send(text.encode("utf-8", "surrogatepass") + b"\r\n")

    def register(self, nick: str, caps: str = "") -> list[str]:
        """Register as C{nick} (negotiating C{caps} first, if any); return what came."""
        if caps:
            self.sendLine("CAP LS 302")
            self.sendLine(f"CAP REQ :{caps}")
        self.sendLine(f"NICK {nick}")
        self.sendLine("USER u 0 * :a test client")
        if caps:
            self.sendLine("CAP END")
        return self.lines()


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


def resultOf(d: defer.Deferred):
    """What C{d} has already succeeded with; fails the test if it has not."""
    got: list = []
    d.addBoth(got.append)
    assert got, f"{d!r} has not fired"
    if isinstance(got[0], Failure):
        got[0].raiseException()
    return got[0]


def failureOf(d: defer.Deferred, *kinds: type[BaseException]) -> Failure:
    """The L{Failure} C{d} has already failed with, of one of C{kinds}."""
    got: list = []
    d.addBoth(got.append)
    assert got and isinstance(got[0], Failure), f"{d!r} has not failed: {got!r}"
    assert got[0].check(*kinds), got[0]
    return got[0]


async def within(d: defer.Deferred, seconds: float = 5.0):
    """Await C{d}, failing the test if it takes longer than C{seconds}."""
    from twisted.internet import reactor

    return await d.addTimeout(seconds, reactor)
