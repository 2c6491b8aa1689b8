"""The websocket endpoint (Autobahn).

Without a subprotocol, text frames carry the line language: one command or message per
frame, one rendered line per frame back. With the C{chatserv.v1.json} subprotocol each
frame is one JSON object (docs/protocol.md).

Outgoing frames are built once per fan-out with Autobahn's prepared messages: the wire
object renders an event into ready frames that every recipient on that wire shares.
"""

from __future__ import annotations

from collections.abc import Callable

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from zope.interface import implementer

from chatserv import __version__, render
from chatserv import events as ev
from chatserv.errors import BinaryRefused, LineTooLong
from chatserv.interfaces import IChatClient, IWire
from chatserv.limits import TokenBucket
from chatserv.protocols import AdmissionMixin, closedBecause, noDelay, peerText, released
from chatserv.protocols.output import ConnectionOutput, Flusher, writeNow
from chatserv.service import ChatService
from chatserv.session import Session

_log = Logger()


def _formatOnlyForDebug() -> None:
    """Autobahn pretty-prints its ~40 options, and each handshake's transport details,
    for debug lines on every connection whether or not debug lines are logged: 13% of
    the CPU of a websocket reconnect storm (docs/performance.md). Its module's
    C{pformat} becomes one that formats only while txaio logs debug lines (what is
    logged does not change; Autobahn's timing reports, which chatserv does not turn on,
    read as a placeholder otherwise)."""
    from pprint import pformat

    from autobahn.websocket import protocol

    if getattr(protocol.pformat, "onlyForDebug", False):
        return

    def formatIfDebugging(value, *args, **kwargs):
        if txaio.get_global_log_level() in ("debug", "trace"):
            return pformat(value, *args, **kwargs)
        return "(not formatted: debug lines are not logged)"

    formatIfDebugging.onlyForDebug = True  # type: ignore[attr-defined]
    protocol.pformat = formatIfDebugging


_formatOnlyForDebug()

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

    def renderTo(self, event: ev.Event, nick: str | None) -> tuple[PreparedMessage, ...]:
        return self.render(event)  # the same for everyone


@implementer(IChatClient)
class WebSocketChatProtocol(ConnectionOutput, WebSocketServerProtocol):
    # Autobahn's own per-connection lines (a refused handshake, a failed connection, a stray
    # pong) would let any client write to the log at will: keep only its errors (a
    # txaio logger, level-filtered like Autobahn's own; a twisted Logger here would log
    # every frame). What ended a connection is logged by the session, within
    # log_rate_limit, and refused handshakes by failHandshake below.
    log = txaio.make_logger(level="error")
    factory: WebSocketChatFactory
    session: Session | None = None
    address = "ws (not connected)"
    wire: FrameWire
    echo = False
    isJSON = False
    kind = "ws"
    _lostBecause = "connection lost"
    _frames: TokenBucket  # every frame the client sends takes a token
    _fragments = 0  # continuation frames of the message being received
    _afterClose = 0  # bytes received since the close handshake began
    _inputStopped = False  # nothing more is read from this client

    # The client's address when it is not the peer's: a trusted proxy's client, named in
    # the upgrade request's X-Forwarded-For (set by the web site before the handshake).
    clientAddress: IAddress | None = None

    @property
    def host(self) -> str:
        """The client's IP address (bans and login throttling go by it)."""
        return str(getattr(self._client(), "host", "")) if self.transport else ""

    def _client(self) -> IAddress:
        return self.clientAddress or self.transport.getPeer()

    def onConnect(self, request):
        self.kind = self.factory.kind
        self.address = peerText(self.kind, self._client())
        if JSON_SUBPROTOCOL in request.protocols:
            self.isJSON = True
            self.echo = True  # JSON clients draw their own messages from the server's copy
            self.wire = self.factory.jsonWire
            self.address += " json"
        else:
            self.wire = self.factory.textWire
        if self.clientAddress is not None:
            self.address += " via " + peerText("proxy", self.transport.getPeer())
        return JSON_SUBPROTOCOL if self.isJSON else None

    def connectionMade(self) -> None:
        super().connectionMade()
        # Autobahn means to set TCP_NODELAY here, but reads the option before copying it
        # from the factory and swallows the AttributeError; Nagle plus delayed ACKs then
        # hold frames back for up to 40 ms. Set it ourselves.
        noDelay(self.transport)
        self.startOutput()

    def connectionLost(self, reason) -> None:
        released(self)
        if self.closeHandshakeTimeoutCall is not None:
            # Autobahn leaves it running when the connection ends before the handshake
            # does (a client we stopped reading never completes it).
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        super().connectionLost(reason)  # Autobahn calls onClose, which ends the session
        self.discardOutput()

    def dropSlowReader(self) -> None:
        self._lostBecause = "not reading"
        self.transport.abortConnection()

    def onOpen(self) -> None:
        service = self.factory.service
        settings = service.settings
        self._frames = TokenBucket(settings.ws_frame_rate, settings.ws_frame_burst, service.now())
        self.session = Session(service, self)

    # -- what a client may send, counted frame by frame ------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._inputStopped:
            return
        if self.state == WebSocketServerProtocol.STATE_CLOSING:
            # Once closing, a client has only what was already in flight left to send; one
            # that keeps sending is not closing, and parsing its backlog would cost
            # everyone else the time.
            self._afterClose += len(data)
            if self._afterClose > self.factory.service.settings.ws_max_message_size:
                self._stopInput()
                self.transport.loseConnection()
                return
        super().dataReceived(data)

    def onFrameBegin(self) -> None:
        # Autobahn calls this for every frame header it parses: data, continuation and
        # control frames alike. Flood control counts complete messages; this counts what
        # they are made of, and what is no message at all (pings, pongs, a message whose
        # fragments never end), so that no kind of frame is free to send.
        settings = self.factory.service.settings
        if not self._frames.take(self.factory.service.now()):
            return self._refuseInput(
                1008, "too many frames", "disconnected: you sent too many websocket frames"
            )
        opcode = self.current_frame.opcode
        if opcode == 0:  # a continuation frame
            self._fragments += 1
            if self._fragments >= settings.ws_max_fragments:
                return self._refuseInput(
                    1009,
                    "message in too many fragments",
                    "disconnected: a message may come in at most "
                    f"{settings.ws_max_fragments} fragments",
                )
        elif opcode < 8:  # the first frame of a message
            self._fragments = 0
        super().onFrameBegin()

    def _refuseInput(self, code: int, why: str, farewell: str) -> None:
        """End the connection of a client whose frames broke a limit: read no more of it."""
        self._stopInput()
        self.factory.service.counters.floods += 1
        if self.session is not None:
            self.session.connectionLost(why)
        self.close(farewell, code)
        # The close handshake is not waited for (its reply would not be read): the TCP
        # connection closes once the farewell is written, or at the close handshake
        # timeout if the client does not read it.
        self.transport.loseConnection()

    def _stopInput(self) -> None:
        self._inputStopped = True
        # Forget what is buffered, including the frame being parsed, so that Autobahn's
        # loop over buffered frames ends at once; and stop reading from the socket.
        self.data = b""
        self.current_frame = None
        if not self.transport.disconnecting:  # (a closing transport reads no more anyway)
            self.transport.pauseProducing()

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
            why = self._lostBecause
            if self.failedByMe and self.localCloseReason:  # Autobahn refused a frame
                why = "protocol error: " + self.localCloseReason.decode("utf-8", "replace")
            self.session.connectionLost(why)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders=None) -> None:
        self.factory.service.logLimit.info(
            _log,
            "{address}: websocket handshake refused: {why}",
            address=peerText(self.factory.kind, self._client()),
            why=reason,
        )
        super().failHandshake(reason, code, responseHeaders)

    # -- IChatClient -------------------------------------------------------------------

    # send() and flush() come from ConnectionOutput: a payload is a tuple of prepared frames.

    def _joined(self, pending: list[tuple[PreparedMessage, ...]]) -> bytes:
        # A prepared message's payloadHybi is its whole frame, ready for the wire (what
        # sendPreparedMessage writes when, as here, no compression was negotiated).
        return b"".join([frame.payloadHybi for payload in pending for frame in payload])

    def _write(self, data: bytes) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            if self.send_queue:  # Autobahn's own chopped or synchronous writes go first
                super().sendData(data)
            else:
                # What Autobahn's sendData would do, without its per-write debug log and
                # statistics, straight to the socket when nothing waits (see output.py).
                writeNow(self.transport, data)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Autobahn writes its own frames (pongs, closes) through here: what this connection
        # was sent before them goes first, so the wire keeps the order things happened in,
        # and they count against the slow-reader limit like any output.
        if self._pending is not None:
            self.flush()
        if self.mayWrite(len(data)):
            super().sendData(data, sync, chopsize)

    def close(self, reason: str, code: int = 1000) -> None:
        self._lostBecause = closedBecause(reason)
        self.send(self.wire.render(ev.Notice(reason, self.factory.service.now())))
        self.flush()
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            # sendCloseFrame, unlike sendClose, takes the protocol's own codes (1008, 1009).
            self.sendCloseFrame(code, _closeReason(reason), isReply=False)


def _closeReason(text: str) -> bytes:
    """A close frame's reason: UTF-8, at most 123 bytes, never cut inside a character."""
    return text.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")


def _withOptions(base: type, factory: WebSocketServerFactory) -> type:
    """A protocol class that carries C{factory}'s Autobahn options.

    Autobahn copies each option a new connection lacks from its factory onto it: 29
    attributes in every connection's dict (1.8 KiB of a websocket user's memory). With
    them on the class, a connection holds none. Functions among them (the compression
    offer's acceptor) stay plain functions, not methods. The factory makes the class
    again whenever its options are set.
    """
    options = {
        name: staticmethod(value) if callable(value) else value
        for name in base.CONFIG_ATTRS
        if hasattr(factory, name)
        for value in (getattr(factory, name),)
    }
    return type(base.__name__, (base,), options)


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
            # Only a pong answers a ping: a client that sends but never reads (so never
            # answers) must time out, however much it sends.
            autoPingRestartOnAnyTraffic=False,
        )
        self.service = service
        self.flusher = Flusher(service.clock)
        self.kind = kind
        self.textWire = FrameWire(self, render.lines)
        self._refusal = f"HTTP/1.1 503 Service Unavailable\r\nServer: {self.server}\r\n"
        self.jsonWire = FrameWire(self, render.jsonTexts)

    def setProtocolOptions(self, *args, **kwargs) -> None:
        super().setProtocolOptions(*args, **kwargs)
        self.protocol = _withOptions(type(self).protocol, self)  # connections made from now on

    def refusal(self, reason: str) -> bytes:
        body = (reason + "\n").encode("utf-8")
        head = (
            f"{self._refusal}Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return head.encode("ascii") + body
