"""twistd plugin: options and the service tree.

C{twistd -n chatserv --tcp 10001 --ws 8765} builds, via L{makeService}, a MultiService
holding the L{ChatService} and one listener per endpoint.
"""

from __future__ import annotations

import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from chatserv import __version__
from chatserv.config import (
    DEFAULT_TCP,
    DEFAULT_WS,
    Config,
    ConfigError,
    loadConfig,
    makeSettings,
    normaliseEndpoint,
)

_log = Logger()


def _wholeNumber(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a chat server. Line clients (nc, telnet) connect to --tcp, websocket clients "
        "to --ws; all share the same rooms. With no listener given on the command line or "
        f"in the config file, it listens on tcp {DEFAULT_TCP} and ws {DEFAULT_WS}. "
        "ENDPOINT is a port number or a Twisted server endpoint description, e.g. "
        "tcp:10001:interface=127.0.0.1. Command-line options override the config file."
    )
    optParameters = [
        ["config", "c", None, "Read settings from this TOML file (sample: etc/chatserv.toml)."],
        ["default-room", None, None, "The room users land in [default: lobby]."],
        [
            "max-line-length",
            None,
            None,
            "Longest line or text frame accepted, in bytes [default: 2048].",
            _wholeNumber,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["tcp"] = []
        self["ws"] = []

    def parseOptions(self, options=None) -> None:
        # One line instead of twistd's full usage dump; --help still prints the usage.
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"chatserv: error: {e} (see: twistd chatserv --help)") from None

    def opt_tcp(self, endpoint: str) -> None:
        """Listen for line clients (nc, telnet) on ENDPOINT; repeatable."""
        self["tcp"].append(endpoint)

    def opt_ws(self, endpoint: str) -> None:
        """Listen for websocket clients on ENDPOINT; repeatable."""
        self["ws"].append(endpoint)

    def opt_version(self) -> None:
        """Print the chatserv version and exit."""
        print(f"chatserv {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        try:
            config = loadConfig(self["config"]) if self["config"] else Config()
            tcp = [normaliseEndpoint(e) for e in self["tcp"]] or config.tcp
            ws = [normaliseEndpoint(e) for e in self["ws"]] or config.ws
            if not tcp and not ws:
                tcp, ws = [normaliseEndpoint(DEFAULT_TCP)], [normaliseEndpoint(DEFAULT_WS)]
            overrides = dict(config.settings)
            if self["default-room"] is not None:
                overrides["default_room"] = self["default-room"]
            if self["max-line-length"] is not None:
                overrides["max_line_length"] = self["max-line-length"]
            self["settings"] = makeSettings(overrides)
        except ConfigError as e:
            # One line, no usage dump: the value is wrong, not the way options are written.
            raise SystemExit(f"chatserv: error: {e}") from None
        self["tcp"], self["ws"] = tcp, ws


@implementer(IStreamServerEndpoint)
class _AnnouncedEndpoint:
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
            return port

        return self._endpoint.listen(factory).addCallback(announce)


class _Listener(StreamServerEndpointService):
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


def listener(reactor, description: str, factory, what: str) -> IService:
    from twisted.internet.endpoints import serverFromString

    endpoint = _AnnouncedEndpoint(serverFromString(reactor, description), what)
    return _Listener(endpoint, factory, description, what)


def makeService(options: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    from chatserv.protocols.line import LineChatFactory
    from chatserv.protocols.ws import WebSocketChatFactory
    from chatserv.service import ChatService

    top = MultiService()
    chat = ChatService(options["settings"], clock=reactor)
    # First child: stops last, after the listeners, so it can say goodbye to everyone.
    chat.setServiceParent(top)
    if options["tcp"]:
        lineFactory = LineChatFactory(chat)
        for description in options["tcp"]:
            listener(reactor, description, lineFactory, "line clients").setServiceParent(top)
    if options["ws"]:
        wsFactory = WebSocketChatFactory(chat, reactor=reactor)
        for description in options["ws"]:
            listener(reactor, description, wsFactory, "websocket clients").setServiceParent(top)
    return top
