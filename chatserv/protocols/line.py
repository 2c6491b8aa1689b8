"""The line protocol, for nc and telnet: one command or message per line.

Input: UTF-8 lines ending in LF or CRLF, framed by L{chatserv.protocols.framing}.
Output: one event per line, CRLF endings, in the format of L{chatserv.render.lines}.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from chatserv import events as ev
from chatserv import render
from chatserv.errors import TooManyConnections
from chatserv.interfaces import IChatClient, IWire
from chatserv.protocols import (
    AdmissionMixin,
    closedBecause,
    keepAlive,
    noDelay,
    peerText,
    released,
)
from chatserv.protocols.framing import LineFramer
from chatserv.protocols.output import ConnectionOutput, Flusher, writeNow
from chatserv.service import ChatService
from chatserv.session import Session
from chatserv.wires import BY_KIND


@implementer(IWire)
class LineWire:
    """Renders events as CRLF-terminated UTF-8 lines."""

    def render(self, event: ev.Event) -> bytes:
        return render.lineBytes(event)

    def renderTo(self, event: ev.Event, nick: str | None) -> bytes:
        return render.lineBytes(event)  # the same for everyone


LINE_WIRE = LineWire()


@implementer(IChatClient)
class LineChatProtocol(ConnectionOutput, Protocol):
    wire = LINE_WIRE
    echo = False  # a terminal already shows what its user typed

    factory: LineChatFactory
    _abortLater = None
    _framer: LineFramer
    _lostBecause = "connection lost"
    _afterClose = 0  # bytes received after the session ended

    @property
    def kind(self) -> str:
        """The listener's kind: tcp, or tls."""
        return self.factory.kind

    @property
    def address(self) -> str:
        """The peer as logs show it; made when logged, not held by every connection."""
        if self.transport is None:
            return "tcp (not connected)"
        return peerText(self.kind, self.transport.getPeer())

    @property
    def host(self) -> str:
        """The peer's IP address (bans and login throttling go by it)."""
        return str(getattr(self.transport.getPeer(), "host", "")) if self.transport else ""

    def connectionMade(self) -> None:
        settings = self.factory.service.settings
        noDelay(self.transport)
        keepAlive(self.transport, settings.ping_interval, settings.ping_timeout)
        self.startOutput()
        session = self.session = Session(self.factory.service, self)
        self._framer = LineFramer(
            settings.max_line_length,
            session.receiveLine,
            session.refuse,
            session,
            telnet=True,
        )

    def dataReceived(self, data: bytes) -> None:
        if self.session.closed:  # ended (a flood, a kick): what it still sends is for nobody
            # Still read (a client that closes on the farewell is then gone at once), but
            # one that keeps sending is not closing: reading its flood until close_grace
            # would cost everyone else the time. Past a line's worth, read no more.
            # (Only a half-closed transport still reads: loseConnection stops reading.)
            self._afterClose += len(data)
            limit = self.factory.service.settings.max_line_length
            if self._afterClose > limit and not self.transport.disconnecting:
                self.transport.pauseProducing()
            return
        self._framer.feed(data)

    def connectionLost(self, reason=None) -> None:
        if self._abortLater is not None and self._abortLater.active():
            self._abortLater.cancel()
        released(self)
        session = getattr(self, "session", None)
        if session is not None:
            session.connectionLost(self._lostBecause)
        self.discardOutput()  # nobody to read it, including the user's own leave notice

    def dropSlowReader(self) -> None:
        self._lostBecause = "not reading"
        self.transport.abortConnection()

    # -- IChatClient -------------------------------------------------------------------

    # send() and flush() come from ConnectionOutput.

    def _joined(self, pending: list[bytes]) -> bytes:
        return pending[0] if len(pending) == 1 else b"".join(pending)

    def _write(self, data: bytes) -> None:
        writeNow(self.transport, data)

    def farewell(self, reason: str) -> bytes:
        """What the client is told as the server closes its connection."""
        return self.wire.render(ev.Notice(reason, self.factory.service.now()))

    def close(self, reason: str) -> None:
        self._lostBecause = closedBecause(reason)
        service = self.factory.service
        self.send(self.farewell(reason))
        self.flush()
        # A registered producer holds back a TLS close_notify; it has no more to say.
        self.transport.unregisterProducer()
        # (Only on plain TCP: under TLS it would reach past the TLS layer to the socket.)
        halfClose = getattr(self.transport, "loseWriteConnection", None)
        if not self.factory.encrypted and halfClose is not None:
            # Half-close: the farewell, then our FIN. A client that closes on it is gone at
            # once; OpenBSD's nc does not (it waits for its user's next line), so after
            # close_grace, when the farewell has long arrived, a reset ends it.
            halfClose()
            grace = service.settings.close_grace
        else:
            # TLS closes with close_notify. loseConnection waits for the buffer to drain,
            # which a stalled peer (or one stuck in a handshake) never lets happen.
            self.transport.loseConnection()
            grace = service.settings.ping_timeout
        if self._abortLater is None:
            self._abortLater = service.clock.callLater(grace, self.transport.abortConnection)


class LineChatFactory(AdmissionMixin, Factory):
    protocol = LineChatProtocol
    noisy = False  # connects are logged by the session, with the peer

    def __init__(self, service: ChatService, kind: str = "tcp") -> None:
        self.service = service
        self.flusher = Flusher(service.clock)
        self.kind = kind  # how logs name this listener's peers: tcp, tls
        self.encrypted = BY_KIND[kind].tls if kind in BY_KIND else False

    def refusal(self, reason: str) -> bytes:
        return render.lineBytes(ev.Error(TooManyConnections.code, reason, self.service.now()))
