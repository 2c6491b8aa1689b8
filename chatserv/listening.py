"""Listeners that log where they listen, fail start-up with one clear line, and accept a
burst of connections in few reactor turns."""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService
from twisted.internet import tcp
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

_log = Logger()


@implementer(IStreamServerEndpoint)
class AnnouncedEndpoint:
    """An endpoint that logs the address it listens on (port 0 becomes a real port)."""

    def __init__(
        self, endpoint: IStreamServerEndpoint, what: str, acceptBatch: int | None = None
    ) -> None:
        self._endpoint = endpoint
        self._what = what
        self._acceptBatch = acceptBatch

    def listen(self, factory):
        def announce(port):
            if self._acceptBatch is not None:
                acceptInBatches(port, self._acceptBatch)
            address = port.getHost()
            _log.info(
                "listening for {what} on {host}:{port}",
                what=self._what,
                host=getattr(address, "host", address),
                port=getattr(address, "port", ""),
            )
            webAddress = getattr(factory, "webAddress", None)  # a site: say where to browse
            url = webAddress(address) if webAddress is not None else None
            if url is not None:
                _log.info("the web client is at {url}", url=url)
            return port

        return self._endpoint.listen(factory).addCallback(announce)


def acceptInBatches(port, batch: int) -> None:
    """Have a listening TCP port accept up to C{batch} waiting connections a reactor turn.

    Twisted's port accepts at most 100 in its first turn, grows that by 20 each turn its
    queue stays full, and falls back to the number it found otherwise. In a reconnect
    storm the queue then drains over dozens of turns, and each turn ends with a write to
    every member of every room someone joined: 10,000 line clients joining 100 rooms
    took 35 turns and 139,000 sends, and 18 turns and 68,000 sends with a batch of 1,000
    (docs/performance.md). The accept loop still stops as soon as no connection waits.
    """
    if not isinstance(port, tcp.Port):  # (a UNIX socket, or a test's fake)
        return
    doRead = port.doRead

    def accept():
        port.numberAccepts = batch  # (doRead adapts it afterwards: set it again each time)
        return doRead()

    port.doRead = accept  # the reactor looks it up on each read


class Listener(StreamServerEndpointService):
    """Listens at start-up, failing start-up with one clear line if it cannot."""

    _raiseSynchronously = True  # as strports.service does

    def __init__(self, endpoint, factory, description: str, what: str) -> None:
        super().__init__(endpoint, factory)
        self._description = description
        self._what = what

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            raise SystemExit(
                f"chatserv: error: cannot listen for {self._what} on {self._description}: {reason}"
            ) from None


def listener(
    endpoint, description: str, factory, what: str, acceptBatch: int | None = None
) -> IService:
    """C{endpoint} listening for C{factory}; C{acceptBatch}: see L{acceptInBatches}."""
    announced = AnnouncedEndpoint(endpoint, what, acceptBatch)
    return Listener(announced, factory, description, what)
