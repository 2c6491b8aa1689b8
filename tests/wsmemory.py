"""A websocket client in memory: the real server protocol over a StringTransport.

The client side is written out by hand (RFC 6455): an HTTP upgrade request, then masked
frames of any shape, including invalid ones. What the server writes back is parsed
strictly, so a test notices a malformed or masked server frame, a text frame that is
not UTF-8, or a write after the connection was closed.

Autobahn schedules its timers (open and close handshake timeouts, pings) through a
batched timer bound to the global reactor, whatever reactor the factory is given;
L{makeFactory} rebinds it to the test's clock, so nothing is left on the real reactor.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from helpers import endTurn
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from txaio._common import _BatchedTimer

from chatserv.protocols.ws import JSON_SUBPROTOCOL, WebSocketChatFactory
from chatserv.service import ChatService

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10
MASK = b"\x37\xfa\x21\x3d"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key


def makeFactory(service: ChatService, clock: Clock) -> WebSocketChatFactory:
    """The server's websocket factory, with every timer of Autobahn's on C{clock}."""
    return onClock(WebSocketChatFactory(service, reactor=clock), clock)


def onClock(factory: WebSocketChatFactory, clock: Clock) -> WebSocketChatFactory:
    """Put every timer of Autobahn's for C{factory}'s protocols on C{clock}."""
    # Same bucket and chunk sizes as Autobahn's own (WebSocketServerFactory.__init__).
    factory._batched_timer = _BatchedTimer(
        200.0, 1000, seconds_provider=clock.seconds, delayed_call_creator=clock.callLater
    )
    return factory


def upgradeRequest(protocols: list[str] | None = None, path: str = "/") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: localhost:8765",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if protocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def encodeFrame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
) -> bytes:
    """A client frame: C{mask=None} sends it unmasked (a protocol violation)."""
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)])
    maskBit = 0x80 if mask is not None else 0
    size = len(payload)
    if size < 126:
        head += bytes([maskBit | size])
    elif size < 1 << 16:
        head += bytes([maskBit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([maskBit | 127]) + struct.pack("!Q", size)
    if mask is None:
        return head + payload
    return head + mask + _xor(payload, mask)


def _xor(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return b""
    key = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
        len(payload), "big"
    )


def closePayload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass(frozen=True)
class Frame:
    """A frame the server sent."""

    opcode: int
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    @property
    def code(self) -> int | None:
        """A close frame's status code."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


class ProtocolError(AssertionError):
    """The server wrote something that is not a valid server-to-client frame."""


def parseFrames(data: bytes) -> tuple[list[Frame], bytes]:
    """Split server output into frames; returns the frames and an incomplete tail."""
    frames = []
    while len(data) >= 2:
        first, second = data[0], data[1]
        if first & 0x70:
            raise ProtocolError(f"server frame with RSV bits: {data[:16]!r}")
        if second & 0x80:
            raise ProtocolError("masked server frame")
        if not first & 0x80:
            raise ProtocolError("fragmented server frame")
        size, at = second & 0x7F, 2
        if size == 126:
            if len(data) < 4:
                break
            size, at = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            if len(data) < 10:
                break
            size, at = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < at + size:
            break
        opcode = first & 0x0F
        if opcode not in (TEXT, BINARY, CLOSE, PING, PONG):
            raise ProtocolError(f"server frame with opcode {opcode}")
        if opcode >= CLOSE and size > 125:
            raise ProtocolError(f"server control frame of {size} bytes")
        frames.append(Frame(opcode, data[at : at + size]))
        data = data[at + size :]
    return frames, data


class WSConnection:
    """One websocket client connected in memory to C{factory}'s protocol."""

    def __init__(
        self,
        factory: WebSocketChatFactory,
        json: bool = False,
        host: str = "10.0.0.9",
        port: int = 4000,
        handshake: bool = True,
    ) -> None:
        address = IPv4Address("TCP", host, port)
        self.isJSON = json
        self.protocol = factory.buildProtocol(address)
        self.transport = StringTransport(peerAddress=address)
        self.protocol.makeConnection(self.transport)
        self.response: bytes | None = None  # the HTTP response head, once received
        self.closeFrame: Frame | None = None  # the server's close frame, if it sent one
        self.lost = False
        self._tail = b""
        self._unread: list[Frame] = []
        if handshake:
            self.sendRaw(upgradeRequest([JSON_SUBPROTOCOL] if json else None))
            self._read()
            assert self.response is not None and self.response.startswith(b"HTTP/1.1 101 "), (
                f"handshake refused: {self.response!r}"
            )

    # -- sending ---------------------------------------------------------------------

    def sendRaw(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def sendFrame(self, opcode: int, payload: bytes = b"", **options) -> None:
        self.sendRaw(encodeFrame(opcode, payload, **options))

    def send(self, text: str) -> None:
        """One text frame."""
        self.sendFrame(TEXT, text.encode("utf-8"))

    def request(self, **fields) -> None:
        """One JSON request frame."""
        self.send(json.dumps(fields))

    # -- receiving -------------------------------------------------------------------

    def _read(self) -> None:
        endTurn(self.protocol.factory.service)
        self.protocol.factory.flusher.flush()  # what the reactor would do at the turn's end
        data = self._tail + self.transport.value()
        self.transport.clear()
        if self.response is None:
            head, sep, rest = data.partition(b"\r\n\r\n")
            if not sep:
                self._tail = data
                return
            self.response, data = head + sep, rest
        frames, self._tail = parseFrames(data)
        for frame in frames:
            if self.closeFrame is not None:
                raise ProtocolError(f"server sent a frame after its close frame: {frame}")
            if frame.opcode == CLOSE:
                self.closeFrame = frame
                frame.payload[2:].decode("utf-8")  # the reason must be UTF-8 too
            elif frame.opcode == TEXT:
                frame.text  # noqa: B018 - raises if the server sent invalid UTF-8
        self._unread.extend(frames)

    def frames(self) -> list[Frame]:
        """The frames received since the last call."""
        self._read()
        got, self._unread = self._unread, []
        return got

    def messages(self) -> list:
        """The text frames received since the last call: JSON objects, or lines."""
        texts = [f.text for f in self.frames() if f.opcode == TEXT]
        return [json.loads(t) for t in texts] if self.isJSON else texts

    @property
    def closeCode(self) -> int | None:
        self._read()
        return self.closeFrame.code if self.closeFrame is not None else None

    # -- closing ---------------------------------------------------------------------

    def finishClose(self) -> None:
        """Answer the server's close frame, as a client must, and let the TCP close."""
        self._read()
        if self.closeFrame is not None and not self.transport.disconnecting:
            self.sendFrame(CLOSE, self.closeFrame.payload[:2])
        if self.transport.disconnecting and not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def drop(self) -> None:
        """The client vanishes without a close handshake."""
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionLost()))
