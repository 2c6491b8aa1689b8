"""The websocket endpoint (Autobahn).

Without a subprotocol, text frames carry the line language: one command or message per
frame, one rendered line per frame back. With the C{chatserv.v1.json} subprotocol each
frame is one JSON object (docs/protocol.md).

Outgoing frames are built once per fan-out with Autobahn's prepared messages: the wire
object renders an event into ready frames that every recipient on that wire shares.
"""

from __future__ import annotations

from collections.abc import Callable

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from zope.interface import implementer

from chatserv import __version__, render
from chatserv import events as ev
from chatserv.errors import BinaryRefused, LineTooLong
from chatserv.interfaces import IChatClient, IWire
from chatserv.protocols import AdmissionMixin, noDelay, peerText, released
from chatserv.protocols.output import ConnectionOutput, Flusher
from chatserv.service import ChatService
from chatserv.session import Session

JSON_SUBPROTOCOL = "chatserv.v1.json"
CLOSE_HANDSHAKE_TIMEOUT = 5  # seconds (effectively 4-5)


@implementer(IWire)
class FrameWire:
    """Renders an event into prepared text frames, shared by all clients on this wire."""

    def __init__(self, factory: WebSocketServerFactory, texts: Callable[[ev.Event], list[str]]):
        self._prepare = factory.prepareMessage
        self._texts = texts

    def render(self, event: ev.Event) -> tuple[PreparedMessage, ...]:
        return tuple(self._prepare(text.encode("utf-8")) for text in self._texts(event))


@implementer(IChatClient)
class WebSocketChatProtocol(ConnectionOutput, WebSocketServerProtocol):
    # Note: no `log` attribute here; it would replace Autobahn's own filtered logger.
    factory: WebSocketChatFactory
    session: Session | None = None
    address = "ws (not connected)"
    wire: FrameWire
    echo = False
    isJSON = False
    kind = "ws"
    _lostBecause = "connection lost"

    @property
    def host(self) -> str:
        """The peer's IP address (bans and login throttling go by it)."""
        return str(getattr(self.transport.getPeer(), "host", "")) if self.transport else ""

    def onConnect(self, request):
        self.kind = self.factory.kind
        self.address = peerText(self.kind, self.transport.getPeer())
        if JSON_SUBPROTOCOL in request.protocols:
            self.isJSON = True
            self.echo = True  # JSON clients draw their own messages from the server's copy
            self.wire = self.factory.jsonWire
            self.address += " json"
            return JSON_SUBPROTOCOL
        self.wire = self.factory.textWire
        return None

    def connectionMade(self) -> None:
        super().connectionMade()
        # Autobahn means to set TCP_NODELAY here, but reads the option before copying it
        # from the factory and swallows the AttributeError; Nagle plus delayed ACKs then
        # hold frames back for up to 40 ms. Set it ourselves.
        noDelay(self.transport)
        self.startOutput()

    def connectionLost(self, reason) -> None:
        released(self)
        super().connectionLost(reason)  # Autobahn calls onClose, which ends the session
        self.discardOutput()

    def dropSlowReader(self) -> None:
        self._lostBecause = "not reading"
        self.transport.abortConnection()

    def onOpen(self) -> None:
        self.session = Session(self.factory.service, self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if isBinary:
            return session.refuse(BinaryRefused("binary frames are not accepted; send text"))
        limit = self.factory.service.settings.max_line_length
        if len(payload) > limit:
            return session.refuse(
                LineTooLong(f"message too long (the limit is {limit} bytes); it was not sent")
            )
        text = payload.decode("utf-8")  # Autobahn has already validated it
        if self.isJSON:
            session.receiveJSON(text)
        else:
            for line in text.split("\n"):
                session.receiveLine(line.removesuffix("\r"))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.session is not None:
            self.session.connectionLost(self._lostBecause)

    # -- IChatClient -------------------------------------------------------------------

    # send() and flush() come from ConnectionOutput: a payload is a tuple of prepared frames.

    def _joined(self, pending: list[tuple[PreparedMessage, ...]]) -> bytes:
        # A prepared message's payloadHybi is its whole frame, ready for the wire (what
        # sendPreparedMessage writes when, as here, no compression was negotiated).
        return b"".join([frame.payloadHybi for payload in pending for frame in payload])

    def _write(self, data: bytes) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            super().sendData(data)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Autobahn writes its own frames (pongs, closes) through here: what this connection
        # was sent before them goes first, so the wire keeps the order things happened in.
        if self._pending is not None:
            self.flush()
        super().sendData(data, sync, chopsize)

    def close(self, reason: str) -> None:
        self.send(self.wire.render(ev.Notice(reason, self.factory.service.now())))
        self.flush()
        self.sendClose(1000)


class WebSocketChatFactory(AdmissionMixin, WebSocketServerFactory):
    protocol = WebSocketChatProtocol
    noisy = False

    def __init__(self, service: ChatService, reactor=None, kind: str = "ws") -> None:
        super().__init__(
            server=f"chatserv/{__version__}", protocols=[JSON_SUBPROTOCOL], reactor=reactor
        )
        settings = service.settings
        # Autobahn's own limits are off by default; set them. Frames between
        # max_line_length and ws_max_message_size get an error reply, larger ones a close.
        self.setProtocolOptions(
            maxFramePayloadSize=settings.ws_max_message_size,
            maxMessagePayloadSize=settings.ws_max_message_size,
            allowedOrigins=list(settings.ws_allowed_origins),
            webStatus=False,
            failByDrop=False,  # refuse with a close frame (e.g. 1009, 1007), not a bare drop
            # Autobahn's timers are rounded down to whole seconds, so its default 1 s close
            # handshake timeout can fire at once and abort the connection, discarding the
            # goodbye notice and close frame before the client reads them.
            closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
            # Ping idle connections; no pong in time closes them. (Rounded down to whole
            # seconds by Autobahn, like every timer of its.)
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout,
        )
        self.service = service
        self.flusher = Flusher(service.clock)
        self.kind = kind
        self.textWire = FrameWire(self, render.lines)
        self._refusal = f"HTTP/1.1 503 Service Unavailable\r\nServer: {self.server}\r\n"
        self.jsonWire = FrameWire(self, lambda event: [render.jsonText(event)])

    def refusal(self, reason: str) -> bytes:
        body = (reason + "\n").encode("utf-8")
        head = (
            f"{self._refusal}Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return head.encode("ascii") + body
