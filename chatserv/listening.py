"""Listeners that log where they listen and fail start-up with one clear line."""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

_log = Logger()


@implementer(IStreamServerEndpoint)
class AnnouncedEndpoint:
    """An endpoint that logs the address it listens on (port 0 becomes a real port)."""

    def __init__(self, endpoint: IStreamServerEndpoint, what: str) -> None:
        self._endpoint = endpoint
        self._what = what

    def listen(self, factory):
        def announce(port):
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


def listener(endpoint, description: str, factory, what: str) -> IService:
    return Listener(AnnouncedEndpoint(endpoint, what), factory, description, what)
