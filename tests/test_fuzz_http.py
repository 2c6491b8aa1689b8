"""Hostile HTTP clients on the websocket port's web site, generated.

Every example builds a fresh service and its L{ChatSite} on a task.Clock, with
C{http_timeout} at 10 s, and plays a script against it in memory: one or more clients,
each connecting at some moment and sending a byte stream (requests valid or not, pipelined,
cut short, or garbage) in chunks at chosen times, and then perhaps hanging up; a client
either reads what it is sent or does not, so that a close only completes by an abort. The
clock is moved from one event to the next, stopping at every moment a deadline falls due,
and at each stop the example checks that:

1. nothing raised, and nothing was logged as a failure or at error level (a Traceback);
2. an HTTP connection without a complete request within http_timeout of its start (the
   connect, or the end of the previous response) is closing by then, and gone Twisted's
   grace period later even when its peer does not read;
3. a complete, valid request delivered in time is answered, in order (its own property);
4. once every connection is gone, the connection slots are all given back
   (C{service.admission.total} is 0) and no timer of the server is left on the clock.

A client's bytes are delivered to whatever protocol has its transport, like a reactor
does: the channel, or the websocket protocol once an upgrade has taken it over (from then
on the HTTP properties do not apply; the websocket fuzz in test_fuzz.py covers it).
twisted.web sends a file with a pull producer driven by the global cooperator; here a
cooperator on the example's clock drives it, so nothing touches the real reactor.
Examples are derandomized, so a run is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from unittest import mock
from urllib.parse import quote

import wsmemory as ws
from fuzzing import describeFailures, fuzz, isFailure, no_unhandled_errors  # noqa: F401
from helpers import makeService
from hypothesis import event, given
from hypothesis import strategies as st
from twisted.internet import _producer_helpers, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from chatserv.protocols.web import WEB_CLIENT, ChatSite

TIMEOUT = 10.0  # http_timeout of the fuzzed sites
GRACE = HTTPChannel.abortTimeout  # after a timeout, until a peer that does not read is cut
FILES = [b"/"] + sorted(b"/" + p.name.encode() for p in WEB_CLIENT.iterdir())


# -- the harness ---------------------------------------------------------------------------


class _Transport(StringTransport):
    """A StringTransport as forgiving as TCP and TLS transports are: unregistering when no
    producer is registered, or pausing a closing connection, is not an error."""

    def __init__(self, peer: IPv4Address) -> None:
        super().__init__(peerAddress=peer, lenient=True)

    def unregisterProducer(self) -> None:
        self.producer = self.streaming = None


@dataclass
class Client:
    """One client's script."""

    connectAt: float
    steps: list[tuple[float, bytes]]  # (seconds after the previous step, bytes to send)
    reads: bool  # a peer that does not read lets a close complete only by an abort
    hangUpAfter: float | None = None  # the peer closes this long after its last step


class Connection:
    def __init__(self, world: World, port: int, reads: bool) -> None:
        address = IPv4Address("TCP", "10.0.0.9", port)
        self.reads = reads
        self.channel = world.site.buildProtocol(address)
        self.transport = _Transport(address)
        self.transport.protocol = self.channel  # what a reactor delivers to; an upgrade changes it
        world.channels[self.channel] = self
        self.start = world.clock.seconds()  # the connect, or the end of the latest response
        self.codes: list[int] = []  # of the responses, in order
        self.lost = False
        self.channel.makeConnection(self.transport)

    @property
    def websocket(self) -> bool:
        """Has a websocket taken the connection over?"""
        return self.channel.transport is None

    @property
    def http(self) -> bool:
        """Is this still an HTTP connection the server has to close in time?"""
        return not self.lost and not self.websocket

    def send(self, data: bytes) -> None:
        # A closing connection reads no more (Twisted stops reading on loseConnection).
        if not self.lost and not self.transport.disconnecting:
            self.transport.protocol.dataReceived(data)

    def hangUp(self) -> None:
        self._lose(ConnectionDone())

    def closeIfDone(self) -> None:
        """Complete a close the server began: at once if the peer reads, else on an abort."""
        if self.transport.disconnected:
            self._lose(ConnectionAborted())
        elif self.transport.disconnecting and self.reads:
            self._lose(ConnectionDone())

    def _lose(self, reason: Exception) -> None:
        if not self.lost:
            self.lost = True
            self.transport.protocol.connectionLost(Failure(reason))


class World:
    """A service and its site on a clock; use it as a context manager."""

    def __init__(self) -> None:
        self.service, self.clock = makeService(http_timeout=TIMEOUT)
        self.site = ChatSite(self.service, reactor=self.clock)
        ws.onClock(self.site.websocket, self.clock)
        self.site.log = self._finished  # the access log: called as each response ends
        self.channels: dict[HTTPChannel, Connection] = {}
        self.connections: list[Connection] = []
        self._cooperator = task.Cooperator(scheduler=lambda work: self.clock.callLater(0, work))
        self._logged: list[dict] = []

    def __enter__(self) -> World:
        globalLogPublisher.addObserver(self._observe)
        self._patch = mock.patch.object(_producer_helpers, "cooperate", self._cooperator.cooperate)
        self._patch.start()
        return self

    def __exit__(self, kind, value, tb) -> None:
        self._patch.stop()
        self._cooperator.stop()
        globalLogPublisher.removeObserver(self._observe)
        if kind is None:  # per example, so that hypothesis can shrink to the culprit
            assert not self._logged, "logged: " + describeFailures(self._logged)

    def _observe(self, event: dict) -> None:
        if isFailure(event):
            self._logged.append(event)

    def _finished(self, request) -> None:
        connection = self.channels[request.channel]
        connection.start = self.clock.seconds()
        connection.codes.append(request.code)

    # -- time ------------------------------------------------------------------------

    def settle(self) -> None:
        """Run what is due now: the file producer's turns, output flushes."""
        for _ in range(10_000):
            now = self.clock.seconds()
            if not any(call.getTime() <= now for call in self.clock.getDelayedCalls()):
                return
            self.clock.advance(0)
        raise AssertionError("zero-delay calls keep coming")

    def advanceTo(self, target: float) -> None:
        """Move the clock to C{target}, checking at every deadline on the way.

        Every time is a multiple of 0.5 s, so these sums are exact.
        """
        while True:
            now = self.clock.seconds()
            deadlines = [
                moment
                for c in self.connections
                if c.http
                for moment in (c.start + TIMEOUT, c.start + TIMEOUT + GRACE)
                if now < moment < target
            ]
            stop = min(deadlines, default=target)
            self.clock.advance(stop - now)
            self.check()
            if stop == target:
                return

    # -- the properties --------------------------------------------------------------

    def check(self) -> None:
        """Closes complete as the peers allow; no HTTP connection outlives its time."""
        self.settle()
        for connection in self.connections:
            connection.closeIfDone()
        self.settle()
        now = self.clock.seconds()
        for c in self.connections:
            if not c.http:
                continue
            waited = now - c.start
            assert waited < TIMEOUT or c.transport.disconnecting, (
                f"open {waited} s after the connect or the last response"
            )
            assert waited < TIMEOUT + GRACE, f"still there {waited} s after its start"

    def play(self, clients: list[Client]) -> list[Connection]:
        base = self.clock.seconds()
        timeline = []
        for index, client in enumerate(clients):
            at = client.connectAt
            timeline.append((at, index, "connect", b""))
            for delay, data in client.steps:
                at += delay
                timeline.append((at, index, "send", data))
            if client.hangUpAfter is not None:
                timeline.append((at + client.hangUpAfter, index, "hang up", b""))
        timeline.sort(key=lambda item: item[0])  # stable: each client's own order is kept
        connections: dict[int, Connection] = {}
        for at, index, what, data in timeline:
            self.advanceTo(base + at)
            if what == "connect":
                connections[index] = Connection(self, 5000 + index, clients[index].reads)
                self.connections.append(connections[index])
            elif what == "send":
                connections[index].send(data)
            else:
                connections[index].hangUp()
            self.check()
        return [connections[index] for index in range(len(clients))]

    def finish(self) -> None:
        """Wait out every HTTP connection's time, then hang up the websockets; check that
        nothing is left: no HTTP connection, no connection slot, no timer of the server."""
        self.advanceTo(self.clock.seconds() + TIMEOUT + GRACE)
        assert not [c for c in self.connections if c.http]
        for connection in self.connections:
            connection.hangUp()
        self.settle()
        assert self.service.admission.total == 0
        # Autobahn batches its timers in buckets; a cancelled one stays in its bucket,
        # whose call goes off in due course and finds nothing to do.
        buckets = self.site.websocket._batched_timer
        left = [
            call
            for call in self.clock.getDelayedCalls()
            if getattr(call.func, "__self__", None) is not buckets
        ]
        assert left == [], f"timers left behind: {left}"


# -- what clients send ---------------------------------------------------------------------

# Multiples of 0.5 s (exact sums), from back-to-back to past http_timeout.
delays = st.sampled_from([0, 0, 0, 0.5, 1, 2, 4.5, 9.5, 10, 13])

METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT"]
ODD_METHODS = [b"get", b"BREW", b"G\x00T", b"GET /", b"", b"\xff" * 3]
HOSTILE_PATHS = [
    b"/nosuch.js",
    b"/ws",
    b"*",
    b"http://localhost/index.html",
    b"/index.html%00.js",
    b"/%00",
    b"/%ff",
    b"/caf%e9",
    b"/%0d%0aSet-Cookie:%20x",
    b"/%1b[31m",
    b"/" + b"a" * 300,
    b"/" + b"a" * 10_000,
    b"/..%2f..%2fsetup.py",
    b"/%2e%2e/%2e%2e/setup.py",
    b"/\\..\\tap.py",
    b"/index.html/x",
    b"/?" + b"q" * 200,
    b"/" + b"x/" * 2000,
    b"/index.html" + b"/." * 1000,
    b"",
    b"/\x00",
    b"/\xc3\xa9",
]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 x", b""]
HARMLESS = [
    b"Accept: */*",
    b"User-Agent: fuzz/1.0",
    b"Accept-Encoding: gzip, br",
    b"Accept-Language: en",
    b"Cookie: a=b",
    b"Connection: keep-alive",
    b"Cache-Control: no-cache",
    b"X-Padding: " + b"p" * 3000,
]
HEADERS = [
    b"Host: localhost",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: Upgrade",
    b"Upgrade: websocket",
    b"Sec-WebSocket-Version: 13",
    b"Sec-WebSocket-Key: " + ws.KEY.encode(),
    b"Expect: 100-continue",
    b"Range: bytes=0-9",
    b"Range: bytes=9-1,x-",
    b"If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
    b"If-Modified-Since: yesterday",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip",
    b"Content-Length: 5",
    b"Content-Length: 0",
    b"Content-Length: -1",
    b"Content-Length: 99999999999999999999",
    b"Cookie: a=\xff; b",
    b"X-Nul: \x00",
    b"X-Folded: a",
    b" continued",
    b"no colon",
    b": no name",
    b"X-Long: " + b"h" * 5000,
    b"X-Too-Long: " + b"h" * 17_000,
]
ASCII = st.characters(min_codepoint=0, max_codepoint=0x7F)

known = st.sampled_from(FILES + HOSTILE_PATHS)
paths = st.one_of(
    known,
    known,
    st.text(max_size=20).map(lambda text: ("/" + quote(text, safe="/")).encode("ascii")),
    st.binary(max_size=30).map(lambda raw: b"/" + raw),  # raw: spaces, CR, LF, NUL, ...
)
headers = st.sampled_from(HEADERS) | st.builds(
    lambda name, value: name + b": " + value,
    st.text(ASCII, max_size=12).map(str.encode),
    st.binary(max_size=40),
)


@st.composite
def hostileRequests(draw) -> bytes:
    """One request of any shape: well formed or not, with a body or not, or garbage."""
    kind = draw(st.sampled_from(["request", "request", "request", "upgrade", "garbage"]))
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    if kind == "upgrade":
        return ws.upgradeRequest(path=draw(st.sampled_from(["/", "/ws", "/index.html"])))
    # Mostly well formed up to the path, so that hostile paths are looked up.
    method = draw(st.sampled_from([b"GET"] * 8 + METHODS + ODD_METHODS))
    line = b" ".join([method, draw(paths), draw(st.sampled_from([b"HTTP/1.1"] * 8 + VERSIONS))])
    fields = draw(st.lists(st.sampled_from(HARMLESS), max_size=3))
    fields += draw(st.lists(headers, max_size=draw(st.sampled_from([0, 0, 1, 4]))))
    fields += [b"X-Many: m"] * draw(st.sampled_from([0] * 6 + [20, 490, 501]))
    eol = draw(st.sampled_from([b"\r\n"] * 5 + [b"\n"]))  # a bare LF never ends a line
    body = draw(st.sampled_from([b"", b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"12345678"]))
    return eol.join([line, *fields, b"", b""]) + body


@st.composite
def chunked(draw, stream: bytes, pace=delays) -> list[tuple[float, bytes]]:
    """C{stream} cut into pieces, each sent after a delay."""
    if not stream:
        return []
    cuts = sorted(set(draw(st.lists(st.integers(1, len(stream)), max_size=6)))) + [len(stream)]
    pieces, at = [], 0
    for cut in cuts:
        if cut > at:
            pieces.append((draw(pace), stream[at:cut]))
            at = cut
    return pieces


@st.composite
def hostileClients(draw) -> Client:
    stream = b"".join(draw(st.lists(hostileRequests(), max_size=4)))
    how = draw(st.sampled_from(["whole", "abandoned", "trickled"]))
    if how == "abandoned" and stream:
        stream = stream[: draw(st.integers(0, len(stream) - 1))]
    if how == "trickled":  # slowloris: a byte every few seconds
        every = draw(st.sampled_from([0.5, 1.0, 3.0, 4.5]))
        steps = [(every, stream[i : i + 1]) for i in range(min(len(stream), 40))]
    else:
        steps = draw(chunked(stream))
    return Client(
        connectAt=draw(delays),
        steps=steps,
        reads=draw(st.booleans()),
        hangUpAfter=draw(st.none() | delays),
    )


@fuzz(300)
@given(clients=st.lists(hostileClients(), min_size=1, max_size=3))
def test_hostile_http_clients(clients):
    """Whatever clients send, and however slowly, nothing breaks and nothing stays."""
    with World() as world:
        connections = world.play(clients)
        for connection in connections:
            event("websocket" if connection.websocket else f"{len(connection.codes)} answered")
        world.finish()


# -- valid requests, in time or not --------------------------------------------------------

MISSING = [b"/nosuch.js", b"/index.html/x", b"/%00", b"/..%2fsetup.py", b"/" + b"a" * 1000]


@st.composite
def validRequests(draw) -> tuple[bytes, int]:
    """A well-formed GET or HEAD on a kept-alive connection, and the status it must get."""
    method = draw(st.sampled_from([b"GET", b"HEAD"]))
    path = draw(st.sampled_from(FILES + MISSING))
    fields = [b"Host: localhost", *draw(st.lists(st.sampled_from(HARMLESS), max_size=3))]
    request = b"\r\n".join([method + b" " + path + b" HTTP/1.1", *fields, b"", b""])
    return request, 200 if path in FILES else 404


@st.composite
def validScripts(draw) -> tuple[Client, list[int], list[int]]:
    """Requests, pipelined or one by one, cut anywhere and sent at chosen times; the
    statuses they must get, and where each one ends in the stream."""
    requests = draw(st.lists(validRequests(), min_size=1, max_size=5))
    stream, ends = b"", []
    for request, _ in requests:
        stream += request
        ends.append(len(stream))
    steps = draw(chunked(stream))
    return Client(0, steps, reads=True), [code for _, code in requests], ends


@fuzz(150)
@given(script=validScripts())
def test_valid_requests_in_time_are_answered(script):
    """Each request whose last byte arrives within http_timeout of the previous response
    (or of the connect) is answered, in order; the first one late ends the connection."""
    client, codes, ends = script
    # When does each request's last byte arrive?
    arrivals, at, sent = [], 0.0, 0
    for delay, data in client.steps:
        at += delay
        sent += len(data)
        while len(arrivals) < len(ends) and ends[len(arrivals)] <= sent:
            arrivals.append(at)
    inTime, previous = 0, 0.0
    for arrival in arrivals:
        if arrival - previous >= TIMEOUT:
            break
        inTime, previous = inTime + 1, arrival
    event(f"{inTime} of {len(codes)} in time")
    with World() as world:
        [connection] = world.play([client])
        assert connection.codes == codes[:inTime]
        if inTime < len(codes):
            assert connection.lost
        output = connection.transport.value()
        assert output.count(b"HTTP/1.1 ") == inTime
        world.finish()
