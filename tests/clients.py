"""Real network clients for the integration tests: a line client and websocket clients."""

from __future__ import annotations

import json

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.protocols.basic import LineOnlyReceiver

TIMEOUT = 5.0


class _Inbox:
    """What a client received, awaited one item or one match at a time."""

    def __init__(self) -> None:
        self.queue: defer.DeferredQueue = defer.DeferredQueue()
        self.closed: defer.Deferred = defer.Deferred()
        self.history: list = []  # everything received, skipped or not

    async def next(self):
        from twisted.internet import reactor

        return await self.queue.get().addTimeout(TIMEOUT, reactor)

    async def until(self, match):
        """Skip items until one for which C{match} (a substring or predicate) is true."""
        seen = []
        test = match if callable(match) else (lambda item: match in item)
        while True:
            try:
                item = await self.next()
            except defer.TimeoutError:
                raise AssertionError(f"never received {match!r}; got {seen!r}") from None
            if test(item):
                return item
            seen.append(item)

    def pending(self) -> list:
        return list(self.queue.pending)


class LineClient(LineOnlyReceiver, _Inbox):
    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        _Inbox.__init__(self)

    def lineReceived(self, line: bytes) -> None:
        self.history.append(line.decode("utf-8"))
        self.queue.put(self.history[-1])

    def say(self, text: str | bytes) -> None:
        self.transport.write((text.encode() if isinstance(text, str) else text) + b"\n")

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)

    def hangUp(self) -> defer.Deferred:
        self.transport.loseConnection()
        return self.closed


class WSClient(WebSocketClientProtocol, _Inbox):
    def __init__(self) -> None:
        WebSocketClientProtocol.__init__(self)
        _Inbox.__init__(self)
        self.closeCode = None

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        text = payload.decode("utf-8")
        self.history.append(json.loads(text) if self.factory.isJSON else text)
        self.queue.put(self.history[-1])

    def onClose(self, wasClean, code, reason) -> None:
        self.closeCode = code
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"closed: {code} {reason}"))
        self.closed.callback(code)

    def say(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"))

    def request(self, **fields) -> None:
        self.sendMessage(json.dumps(fields).encode("utf-8"))

    def hangUp(self) -> defer.Deferred:
        if self.state == self.STATE_OPEN:
            self.sendClose(1000)
        return self.closed


def _endpoint(port: int, tls=None, source: str | None = None):
    """A client endpoint to 127.0.0.1:C{port}, over TLS when C{tls} (client options) is given,
    from the loopback address C{source} if given (any 127.x.y.z is this machine)."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import SSL4ClientEndpoint

    bind = (source, 0) if source else None
    if tls is None:
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT, bindAddress=bind)
    return SSL4ClientEndpoint(reactor, "127.0.0.1", port, tls, timeout=TIMEOUT, bindAddress=bind)


async def connectLine(port: int, tls=None, source: str | None = None) -> LineClient:
    from twisted.internet.endpoints import connectProtocol

    client = LineClient()
    await connectProtocol(_endpoint(port, tls, source), client)
    return client


async def connectWS(port: int, json_: bool = False, tls=None, path: str = "/") -> WSClient:
    from twisted.internet import reactor

    factory = WebSocketClientFactory(
        f"{'wss' if tls else 'ws'}://localhost:{port}{path}",
        protocols=["chatserv.v1.json"] if json_ else None,
        reactor=reactor,
    )
    factory.protocol = WSClient
    factory.isJSON = json_
    factory.opened = defer.Deferred()
    factory.setProtocolOptions(closeHandshakeTimeout=2, openHandshakeTimeout=TIMEOUT)
    await _endpoint(port, tls).connect(factory)
    return await factory.opened.addTimeout(TIMEOUT, reactor)


async def eventually(predicate, timeout: float = TIMEOUT) -> None:
    """Wait until C{predicate()} is true, checking every 10 ms."""
    from twisted.internet import reactor

    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await task.deferLater(reactor, 0.01)
    raise AssertionError("condition never became true")
