"""The two wires (TCP lines, websocket JSON) and the loop that keeps one connected.

Both wires carry what the user typed as a line of the command language, so the client
needs no knowledge of the commands: the line wire sends it as is, the JSON wire wraps it
in C{{"type": "line", "text": ...}}, which the server runs exactly as a typed line. What
the client asks by itself to get its session back (a L{Request}) goes over the JSON wire
as the JSON request, which can say more than the line.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from chatserv.client import lines as ln
from chatserv.client.backoff import Backoff

SUBPROTOCOL = "chatserv.v1.json"
CONNECT_TIMEOUT = 10.0
# A connection that lasted this long worked: the next drop starts the back-off afresh.
# (One that fails sooner, e.g. refused for too many connections, keeps backing off.)
STABLE_AFTER = 10.0
MAX_LINE = 1 << 20  # longest server line accepted; the server's own limits are far below


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    websocket: bool = False
    tls: bool = False
    ca: str | None = None  # PEM file to trust instead of the system's CAs
    insecure: bool = False  # no certificate check at all

    @property
    def wire(self) -> str:
        return ("websocket" if self.websocket else "line") + ("+tls" if self.tls else "")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}/ws"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def tlsContext(target: Target) -> ssl.SSLContext | None:
    """Verify against the system's CAs, or only C{--ca}'s file; or not at all."""
    if not target.tls:
        return None
    context = ssl.create_default_context(cafile=target.ca)
    if target.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class Request:
    """A request the client makes by itself after a reconnect: the line of the command
    language that asks it, and the JSON request that asks the same and can say more
    (C{since}: the newest message of the room already shown)."""

    line: str
    fields: dict[str, object]


class Wire(Protocol):
    def send(self, text: str | Request) -> None: ...

    def receive(self, me: Callable[[], str | None]) -> AsyncIterator[list[ln.Line]]: ...

    async def close(self) -> None: ...


class LineWire:
    """The TCP line protocol: UTF-8 lines out, time-stamped lines back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, target: Target) -> LineWire:
        context = tlsContext(target)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context else None,
                limit=MAX_LINE,
            ),
            CONNECT_TIMEOUT,
        )
        _keepAlive(writer.get_extra_info("socket"))
        return cls(reader, writer)

    def send(self, text: str | Request) -> None:
        if isinstance(text, Request):
            text = text.line
        if not self.writer.is_closing():
            self.writer.write(text.encode("utf-8") + b"\r\n")

    async def receive(self, me: Callable[[], str | None]) -> AsyncIterator[list[ln.Line]]:
        while True:
            try:
                raw = await self.reader.readline()
            except ValueError:  # a line over MAX_LINE: not a chatserv server
                raise ConnectionError("the server sent an overlong line") from None
            if not raw:
                return
            yield [ln.parseLine(raw.decode("utf-8", "replace"))]

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (OSError, TimeoutError, ssl.SSLError):
            pass


def _keepAlive(sock: socket.socket | None) -> None:
    """Notice a dead network within about a minute on an idle line connection (the
    websocket wire has pings for that)."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class JSONWire:
    """The websocket with the C{chatserv.v1.json} subprotocol: a C{line} request per typed
    line out, JSON events back. Sends go through a queue so they keep their order."""

    def __init__(self, websocket) -> None:
        self.websocket = websocket
        self.outgoing: asyncio.Queue[str] = asyncio.Queue()
        self.sender = asyncio.ensure_future(self._send())

    @classmethod
    async def open(cls, target: Target) -> JSONWire:
        websocket = await connect(
            target.url,
            subprotocols=[SUBPROTOCOL],
            ssl=tlsContext(target),
            open_timeout=CONNECT_TIMEOUT,
            max_size=MAX_LINE,
        )
        if websocket.subprotocol != SUBPROTOCOL:
            await websocket.close()
            raise ConnectionError(f"the server does not speak {SUBPROTOCOL}")
        return cls(websocket)

    def send(self, text: str | Request) -> None:
        request = text.fields if isinstance(text, Request) else {"type": "line", "text": text}
        self.outgoing.put_nowait(json.dumps(request, ensure_ascii=False))

    async def _send(self) -> None:
        try:
            while True:
                await self.websocket.send(await self.outgoing.get())
                self.outgoing.task_done()
        except ConnectionClosed:
            pass  # receive() sees the close too and ends the connection

    async def receive(self, me: Callable[[], str | None]) -> AsyncIterator[list[ln.Line]]:
        """C{me} is asked per event: our nickname marks our own messages.

        Ends at a clean close; an abnormal one (no close frame, unanswered pings) raises
        websockets' ConnectionClosedError, which the L{Connector} reports as a loss."""
        async for message in self.websocket:
            if isinstance(message, bytes):
                continue  # the protocol has none
            try:
                event = json.loads(message)
            except ValueError:
                yield [ln.clientLine("the server sent malformed JSON", error=True)]
                continue
            yield ln.eventLines(event, me())

    async def close(self) -> None:
        # What was queued (a /quit) goes out before the close frame, unless the
        # connection is already gone (the sender has stopped) or stuck.
        sent = asyncio.ensure_future(self.outgoing.join())
        await asyncio.wait([sent, self.sender], timeout=2, return_when=asyncio.FIRST_COMPLETED)
        sent.cancel()
        self.sender.cancel()
        await self.websocket.close()


def describe(error: BaseException) -> str:
    """A connection failure in a few words, with the fix for the common TLS one."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"certificate not trusted: {error.verify_message} "
            "(--ca FILE trusts a certificate, --insecure skips the check)"
        )
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return str(error) or type(error).__name__


class Connector:
    """Keeps the client connected: connect, read until the connection ends, then wait
    (L{Backoff}) and connect again, unless the user quit or the server ended the session
    on purpose.

    It knows nothing of the screen: it reports through C{onLines} (what the server
    said; returns requests to send in reply), C{onStatus}, C{onNote} and C{disconnected},
    and asks C{greeting} what to send on connecting, C{reconnect} whether to try again
    and C{me} for our nickname (the JSON wire marks our own messages by it).
    """

    def __init__(
        self,
        target: Target,
        onLines: Callable[[list[ln.Line]], list[Request]],
        onStatus: Callable[[str], None],
        onNote: Callable[[str, bool], None],
        greeting: Callable[[], list[Request]],
        reconnect: Callable[[], bool],
        me: Callable[[], str | None],
        disconnected: Callable[[], None],
        backoff: Backoff | None = None,
    ) -> None:
        self.target = target
        self.onLines = onLines
        self.onStatus = onStatus
        self.onNote = onNote
        self.greeting = greeting
        self.reconnect = reconnect
        self.me = me
        self.disconnected = disconnected
        self.backoff = backoff or Backoff()
        self.wire: Wire | None = None
        self.closed = asyncio.Event()  # set once the loop has stopped for good

    @property
    def connected(self) -> bool:
        return self.wire is not None

    def send(self, text: str) -> bool:
        if self.wire is None:
            return False
        self.wire.send(text)
        return True

    async def _open(self) -> Wire:
        if self.target.websocket:
            return await JSONWire.open(self.target)
        return await LineWire.open(self.target)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self.onStatus("connecting")
                try:
                    wire = await self._open()
                except (OSError, TimeoutError, ConnectionError, WebSocketException) as e:
                    self.onNote(f"could not connect to {self.target.address}: {describe(e)}", True)
                    if isinstance(e, ssl.SSLCertVerificationError):
                        # Retrying cannot fix it, and every try would say the same.
                        self.onStatus("certificate not trusted")
                        return
                else:
                    started = loop.time()
                    await self._session(wire)
                    if loop.time() - started >= STABLE_AFTER:
                        self.backoff.reset()
                if not self.reconnect():
                    self.onStatus("disconnected")
                    return
                await self._wait(self.backoff.next())
        finally:
            self.closed.set()

    async def _session(self, wire: Wire) -> None:
        self.wire = wire
        self.onStatus("connected")
        self.onNote(f"connected to {self.target.address} ({self.target.wire})", False)
        for line in self.greeting():
            wire.send(line)
        why = "connection closed by the server"
        try:
            async for lines in wire.receive(self.me):
                for line in self.onLines(lines):
                    wire.send(line)
        except (OSError, ConnectionError, WebSocketException) as e:
            why = f"connection lost: {describe(e)}"
        finally:
            self.wire = None
            self.disconnected()
            await wire.close()
        self.onNote(why, False)

    async def _wait(self, delay: float) -> None:
        """Sleep before the next attempt, counting down in the status bar."""
        loop = asyncio.get_running_loop()
        self.onNote(f"reconnecting in {delay:.0f} s", False)
        end = loop.time() + delay
        while (left := end - loop.time()) > 0:
            self.onStatus(f"reconnecting in {left:.0f} s")
            await asyncio.sleep(min(left, 1.0))

    async def stop(self) -> None:
        """Close the connection for good (the user quit)."""
        wire, self.wire = self.wire, None
        if wire is not None:
            await wire.close()
