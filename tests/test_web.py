"""The websocket port's web site: the browser client's files, and websockets on any path."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import pytest_twisted
from clients import connectWS, eventually
from helpers import makeService
from tlshelpers import _trust, makeCert
from twisted.internet import defer, protocol, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web import static

from chatserv.config import Settings
from chatserv.protocols.web import CONTENT_SECURITY_POLICY, WEB_CLIENT, ChatSite
from chatserv.service import ChatService
from chatserv.tls import TLSCredentials, tlsEndpoint

LOCAL = "tcp:0:interface=127.0.0.1"


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class _Collect(protocol.Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = b""
        self.done = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason=None) -> None:
        self.done.callback(self.data)


async def fetch(port: int, path: str, method: str = "GET", tls=None, **headers) -> Response:
    """One HTTP/1.1 request, written by hand so that any path (even ../) goes out as is."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import SSL4ClientEndpoint

    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    client = _Collect(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    if tls is None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    else:
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port, tls, timeout=5)
    await connectProtocol(endpoint, client)
    raw = await client.done.addTimeout(5, reactor)
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *fields = head.decode("latin-1").split("\r\n")
    parsed = {}
    for field in fields:
        name, _, value = field.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return Response(int(status.split()[1]), parsed, body)


@pytest_twisted.async_yield_fixture
async def site():
    """A chat service with its web site listening on a free loopback port."""
    yield await _serve()
    await _stopAll()


_running: list = []


async def _serve(**settings) -> tuple[ChatService, int]:
    from twisted.internet import reactor

    chat = ChatService(Settings(db="memory", **settings), clock=reactor)
    chat.startService()
    port = await serverFromString(reactor, LOCAL).listen(ChatSite(chat, reactor=reactor))
    _running.append((chat, port))
    return chat, port.getHost().port


async def _stopAll() -> None:
    while _running:
        await _stop(*_running.pop())


async def _stop(chat: ChatService, port) -> None:
    await port.stopListening()
    await chat.stopService()  # says goodbye and closes every connection ...
    await eventually(lambda: chat.admission.total == 0)  # ... and they are gone


@pytest_twisted.ensureDeferred
async def test_the_root_is_the_web_client(site):
    _, port = site
    response = await fetch(port, "/")
    assert response.status == 200
    assert response.body == (WEB_CLIENT / "index.html").read_bytes()
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"


@pytest_twisted.ensureDeferred
async def test_every_file_of_the_client_is_served_with_its_type(site):
    _, port = site
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
    files = sorted(p for p in WEB_CLIENT.iterdir() if p.suffix in types)
    assert {".html", ".js", ".css"} <= {p.suffix for p in files}
    for path in files:
        response = await fetch(port, "/" + path.name)
        assert response.status == 200, path.name
        assert response.body == path.read_bytes()
        assert response.headers["content-type"] == f"{types[path.suffix]}; charset=utf-8"


@pytest_twisted.ensureDeferred
async def test_unchanged_files_are_not_sent_again(site):
    _, port = site
    first = await fetch(port, "/")
    again = await fetch(port, "/", If_Modified_Since=first.headers["last-modified"])
    assert (again.status, again.body) == (304, b"")
    head = await fetch(port, "/", method="HEAD")
    assert (head.status, head.body) == (200, b"")


@pytest.mark.parametrize(
    "path",
    ["/nosuch.js", "/../protocols/web.py", "/%2e%2e/tap.py", "/..%2ftap.py", "/index.html/x"],
)
@pytest_twisted.ensureDeferred
async def test_nothing_outside_the_client_is_served(site, path):
    _, port = site
    response = await fetch(port, path)
    assert response.status in (403, 404), (path, response)
    assert b"import" not in response.body


HOSTILE_PATHS = [
    "/index.html%00.js",
    "/%00",
    "/app.js%0a",
    "/%0d%0aSet-Cookie:%20x=1",
    "/%1b%5b31m",
    "/%7f",
    "/%c2%85",  # NEL, a C1 control
    "/%ff",  # not UTF-8
    "/caf%e9.js",
    "/" + "a" * 10000,
    "/index.html/" + "b" * 300,
    "/%2f",
    "/..%2f..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/setup.py",
    "/\\..\\tap.py",
    "/..\\web.py",
    "/" + "x/" * 3000,
    "/" + "/" * 3000,
    "/index.html" + "/." * 3000,
]


@pytest.mark.parametrize("path", HOSTILE_PATHS, ids=lambda path: path[:30])
@pytest_twisted.ensureDeferred
async def test_a_hostile_path_is_not_found_without_a_traceback(site, logged, path):
    _, port = site
    response = await fetch(port, path)
    assert response.status in (400, 404), (path, response)
    assert b"Traceback" not in response.body
    assert _problems(logged) == []


@pytest_twisted.ensureDeferred
async def test_a_lookup_that_fails_anyway_is_not_found_with_one_line(site, logged, monkeypatch):
    def broken(self, path, request):
        raise ValueError("embedded null byte")  # what os.stat says of a NUL

    monkeypatch.setattr(static.File, "getChild", broken)
    _, port = site
    response = await fetch(port, "/index.html")
    assert response.status == 404
    assert [e for e in logged if "log_failure" in e] == []
    [line] = _ours(logged)
    assert line.startswith("ws 127.0.0.1:")
    assert line.endswith(
        ": answered 404 to a path that could not be looked up: b'/index.html': "
        "ValueError('embedded null byte')"
    )


@pytest.mark.parametrize("path", ["/", "/ws", "/any/path?x=1"])
@pytest_twisted.ensureDeferred
async def test_a_websocket_upgrade_works_on_any_path(site, path):
    _, port = site
    text = await connectWS(port, path=path)
    assert "Welcome to chatserv" in await text.next()
    jsonClient = await connectWS(port, json_=True, path=path)
    assert (await jsonClient.next())["type"] == "notice"
    jsonClient.request(type="nick", nick="alice")
    assert (await jsonClient.next())["type"] == "welcome"
    text.say("bob")
    assert await jsonClient.until(lambda e: e["type"] == "join" and e["from"] == "bob")
    await text.hangUp()
    await jsonClient.hangUp()


@pytest_twisted.ensureDeferred
async def test_line_requests_carry_the_command_language():
    _, port = await _serve()
    try:
        client = await connectWS(port, json_=True, path="/ws")
        await client.next()
        client.request(type="line", text="alice")  # a first plain line is the nickname
        assert (await client.next())["type"] == "welcome"
        client.request(type="line", text="/join dev")
        assert await client.until(lambda e: e["type"] == "join" and e["room"] == "dev")
        client.request(type="line", text="/me waves")
        action = await client.until(lambda e: e["type"] == "action")
        assert (action["from"], action["text"]) == ("alice", "waves")
        client.request(type="line", text="hello > alice")  # shorthands work too
        assert (await client.until(lambda e: e["type"] == "msg"))["to"] == "alice"
        client.request(type="line", text="/frobnicate")
        assert (await client.next())["code"] == "unknown-command"
        client.request(type="line", text="two\nlines")
        assert (await client.next())["code"] == "bad-request"
        client.request(type="line")
        assert (await client.next())["code"] == "bad-request"
        client.request(type="line", text="   ")  # blank: nothing, like a blank line
        client.request(type="time")
        assert (await client.next())["type"] == "time"
        await client.hangUp()
    finally:
        await _stopAll()


@pytest_twisted.ensureDeferred
async def test_without_the_web_client_the_port_is_websocket_only():
    _, port = await _serve(web_client=False)
    try:
        response = await fetch(port, "/")
        assert response.status == 404
        assert b"websocket only" in response.body
        client = await connectWS(port, path="/ws")
        assert "Welcome" in await client.next()
        await client.hangUp()
    finally:
        await _stopAll()


@pytest_twisted.ensureDeferred
async def test_connection_limits_count_web_connections_and_websockets_once():
    chat, port = await _serve(max_connections_per_ip=1)
    admission = chat.admission
    try:
        # An idle HTTP connection holds the address's one slot ...
        idle = _Collect(b"")
        from twisted.internet import reactor

        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), idle)
        await eventually(lambda: admission.total == 1)
        refused = await fetch(port, "/")
        assert refused.status == 503
        assert b"too many connections from your address" in refused.body
        idle.transport.loseConnection()
        await eventually(lambda: admission.total == 0)
        # ... a websocket is the same connection: one slot, given back when it closes.
        client = await connectWS(port, json_=True, path="/ws")
        assert admission.total == 1
        assert (await fetch(port, "/")).status == 503
        await client.hangUp()
        await eventually(lambda: admission.total == 0)
        assert (await fetch(port, "/")).status == 200
        assert admission.total == 0
    finally:
        await _stopAll()


def _problems(events: list[dict]) -> list[str]:
    """What was logged as a failure, or at warning level and above."""
    return [
        formatEvent(e)
        for e in events
        if "log_failure" in e or e.get("log_level", LogLevel.info) >= LogLevel.warn
    ]


def _ours(events: list[dict]) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_namespace") == "chatserv.protocols.web"]


def _connect(site: ChatSite, host: str = "10.0.0.7", port: int = 5000):
    address = IPv4Address("TCP", host, port)
    channel = site.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    channel.makeConnection(transport)
    return channel, transport


def _trickle(channel, clock, data: bytes, every: float) -> None:
    """Send C{data} one byte at a time, a byte every C{every} seconds."""
    for byte in data:
        clock.advance(every)
        channel.dataReceived(bytes([byte]))


def test_a_request_trickled_in_is_closed_at_http_timeout_after_the_connect(logged):
    service, clock = makeService(http_timeout=30)
    channel, transport = _connect(ChatSite(service, reactor=clock))
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    # A byte every 3 s keeps resetting an idle timeout: it would never fire.
    _trickle(channel, clock, b"X-Slowly:", every=3)  # until 27 s
    clock.advance(2)
    assert not transport.disconnecting
    clock.advance(1)  # 30 s after the connect
    assert transport.disconnecting and transport.value() == b""
    assert _ours(logged) == ["closing ws 10.0.0.7:5000: no complete HTTP request in 30 s"]
    # A peer that does not read either is aborted after Twisted's grace period.
    clock.advance(channel.abortTimeout - 1)
    assert not transport.disconnected
    clock.advance(1)
    assert transport.disconnected
    channel.connectionLost(Failure(ConnectionAborted()))
    assert service.admission.total == 0
    assert clock.getDelayedCalls() == []


def test_the_next_request_on_a_kept_alive_connection_counts_from_the_response():
    service, clock = makeService(http_timeout=30, web_client=False)  # answered at once
    channel, transport = _connect(ChatSite(service, reactor=clock))
    clock.advance(20)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 404 ")
    assert not transport.disconnecting  # kept alive
    transport.clear()
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    _trickle(channel, clock, b"X-Slowly:", every=3)  # until 47 s
    clock.advance(2)  # long past 30 s after the connect: the first request was in time
    assert not transport.disconnecting
    clock.advance(1)  # 30 s after the first response
    assert transport.disconnecting and transport.value() == b""
    channel.connectionLost(Failure(ConnectionDone()))
    assert service.admission.total == 0
    assert clock.getDelayedCalls() == []


class _Trickle(protocol.Protocol):
    """Sends a request line, then one more header byte every C{interval} seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.received = b""
        self.closed: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"GET / HTTP/1.1\r\n")
        self.sender = task.LoopingCall(self.transport.write, b"x")
        self.sender.start(self.interval, now=False)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        self.sender.stop()
        self.closed.callback(self.received)


@pytest_twisted.ensureDeferred
async def test_a_trickling_client_is_closed_in_time_over_tcp():
    from twisted.internet import reactor

    _, port = await _serve(http_timeout=1)
    client = _Trickle(0.2)
    try:
        started = reactor.seconds()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        received = await client.closed.addTimeout(5, reactor)
        assert received == b""
        assert 0.9 < reactor.seconds() - started < 3
    finally:
        if not client.closed.called:
            client.transport.loseConnection()
            await client.closed
        await _stopAll()


class _KeepAlive(protocol.Protocol):
    """One connection for several requests; responses are split by Content-Length."""

    def __init__(self) -> None:
        self.buffer = b""
        self.responses: defer.DeferredQueue[Response] = defer.DeferredQueue()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.port = self.transport.getHost().port  # as the server logs it

    def get(self, path: str) -> defer.Deferred[Response]:
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        from twisted.internet import reactor

        return self.responses.get().addTimeout(5, reactor)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            status, *fields = head.decode("latin-1").split("\r\n")
            headers = {}
            for field in fields:
                name, _, value = field.partition(":")
                headers[name.strip().lower()] = value.strip()
            size = int(headers.get("content-length", "0"))
            if len(rest) < size:
                return
            self.buffer = rest[size:]
            self.responses.put(Response(int(status.split()[1]), headers, rest[:size]))

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)


@pytest_twisted.ensureDeferred
async def test_page_loads_and_websockets_are_not_cut_short(logged):
    from twisted.internet import reactor

    _, port = await _serve(http_timeout=1)
    try:
        # Three page loads on one connection, over more than http_timeout in all: each
        # request has its own http_timeout.
        browser = _KeepAlive()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), browser)
        for name in ("index.html", "app.js", "style.css"):
            response = await browser.get("/" + name)
            assert (response.status, response.body) == (200, (WEB_CLIENT / name).read_bytes())
            await task.deferLater(reactor, 0.6)
        # Idle between page loads: closed after http_timeout, as before.
        await browser.closed.addTimeout(3, reactor)
        # An open websocket is not an HTTP request any more: it outlives http_timeout.
        client = await connectWS(port, json_=True, path="/ws")
        assert (await client.next())["type"] == "notice"
        await task.deferLater(reactor, 1.5)
        client.request(type="time")
        assert (await client.next())["type"] == "time"
        await client.hangUp()
    finally:
        await _stopAll()
    assert _problems(logged) == []
    idle = f"closing ws 127.0.0.1:{browser.port}: no complete HTTP request in 1 s"
    assert _ours(logged) == [idle]


def test_an_idle_web_connection_is_closed_after_http_timeout():
    service, clock = makeService(http_timeout=10)
    site = ChatSite(service, reactor=clock)
    address = IPv4Address("TCP", "10.0.0.7", 5000)
    channel = site.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    channel.makeConnection(transport)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a request that never ends
    assert service.admission.total == 1
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting
    channel.connectionLost(None)
    assert service.admission.total == 0


@pytest_twisted.ensureDeferred
async def test_https_on_the_wss_port(tmp_path):
    from twisted.internet import reactor
    from twisted.internet.ssl import optionsForClientTLS

    certPath, keyPath = makeCert(tmp_path)
    chat = ChatService(Settings(db="memory"), clock=reactor)
    chat.startService()
    endpoint = tlsEndpoint(reactor, LOCAL, TLSCredentials(certPath, keyPath))
    listening = await endpoint.listen(ChatSite(chat, reactor=reactor, kind="wss"))
    _running.append((chat, listening))
    try:
        tls = optionsForClientTLS("localhost", trustRoot=_trust(certPath))
        port = listening.getHost().port
        response = await fetch(port, "/", tls=tls)
        assert response.status == 200
        assert response.body == (WEB_CLIENT / "index.html").read_bytes()
        client = await connectWS(port, json_=True, tls=tls, path="/ws")
        assert json.dumps(await client.next())
        await client.hangUp()
    finally:
        await _stopAll()


@pytest.mark.parametrize(
    ("host", "kind", "settings", "url"),
    [
        ("0.0.0.0", "ws", {}, "http://localhost:8765/"),
        ("127.0.0.1", "wss", {}, "https://127.0.0.1:8765/"),
        ("::1", "ws", {}, "http://[::1]:8765/"),
        ("0.0.0.0", "ws", {"web_client": False}, None),
    ],
)
def test_the_web_client_address_is_announced(host, kind, settings, url):
    from twisted.internet.address import IPv6Address

    service, clock = makeService(**settings)
    address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 8765)
    assert ChatSite(service, reactor=clock, kind=kind).webAddress(address) == url


@pytest_twisted.ensureDeferred
async def test_access_log_lines_are_within_the_log_rate_limit():
    from twisted.logger import formatEvent

    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        chat, port = await _serve(log_rate_limit=0.1, log_burst=3)
        for _ in range(10):
            assert (await fetch(port, "/")).status == 200
        await _stopAll()  # reports what was left out
    finally:
        globalLogPublisher.removeObserver(logged.append)
    lines = [formatEvent(e) for e in logged]
    access = [line for line in lines if '"GET / HTTP/1.1" 200' in line]
    assert len(access) == 3
    assert "7 more log lines like '{request}' were left out" in " ".join(lines)


@pytest_twisted.ensureDeferred
async def test_many_ranges_get_the_file_once_not_a_multipart_amplification(site):
    _, port = site
    size = (WEB_CLIENT / "app.js").stat().st_size
    many = "bytes=" + ",".join(["0-"] * 2000)  # a 6 KB header asking for app.js 2000 times
    response = await fetch(port, "/app.js", Range=many)
    assert response.status == 200
    assert len(response.body) == size
    assert "multipart" not in response.headers.get("content-type", "")
    overlapping = await fetch(port, "/app.js", Range="bytes=0-99,50-149")
    assert overlapping.status == 200 and len(overlapping.body) == size
    # One range is still served as one: resuming a download works.
    one = await fetch(port, "/app.js", Range="bytes=10-19")
    assert one.status == 206 and one.body == (WEB_CLIENT / "app.js").read_bytes()[10:20]


def test_autobahn_formats_its_debug_details_only_while_debug_lines_are_logged():
    import txaio
    from autobahn.websocket import protocol

    import chatserv.protocols.ws  # noqa: F401  (replaces Autobahn's pformat)

    options = [("autoPingInterval", 0, "factory")]
    assert "not formatted" in protocol.pformat(options)  # txaio logs from "info" up
    level = txaio.get_global_log_level()
    txaio.set_global_log_level("debug")
    try:
        assert protocol.pformat(options) == "[('autoPingInterval', 0, 'factory')]"
    finally:
        txaio.set_global_log_level(level)
