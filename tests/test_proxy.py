"""Clients behind a reverse proxy: the PROXY protocol on listeners, X-Forwarded-For and
Forwarded on the web port, believed only from trusted_proxies."""

from __future__ import annotations

import socket
import ssl
import struct
import time

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory
from clients import TIMEOUT, WSClient, eventually
from helpers import makeService
from servers import readUntil, runServer
from tlshelpers import makeCert
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher

from chatserv.addresses import TrustedProxies, forwardedFor
from chatserv.config import ConfigError, Settings, makeSettings
from chatserv.protocols.line import LineChatFactory
from chatserv.protocols.proxy import (
    V2_SIGNATURE,
    ProxyHeaderError,
    ProxyHeaderReader,
    ProxyProtocolFactory,
    parseProxyHeader,
)
from chatserv.protocols.web import ChatSite
from chatserv.service import CONSOLE, ChatService

V1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 10001\r\n"
PROXY = IPv4Address("TCP", "127.0.0.1", 40000)


def v2(command: int = 1, family: int = 0x11, body: bytes | None = None) -> bytes:
    if body is None:
        body = bytes([203, 0, 113, 7, 192, 0, 2, 1]) + struct.pack("!HH", 5555, 10001)
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


# -- the header ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, host, port",
    [
        (V1, "203.0.113.7", 5555),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 10001\r\n", "2001:db8::7", 4711),
        (b"PROXY TCP6 ::ffff:203.0.113.8 ::1 1 2\r\n", "203.0.113.8", 1),  # a dual-stack view
        (v2(), "203.0.113.7", 5555),
        (v2(family=0x21, body=bytes(range(32)) + struct.pack("!HH", 4711, 1)), None, 4711),
        (v2(body=bytes([198, 51, 100, 9, 10, 0, 0, 1, 0, 80, 0, 81]) + b"\x04\x00\x01x"), None, 80),
    ],
)
def test_headers_name_the_client(header, host, port):
    for cut in range(len(header)):  # however the bytes arrive, a part is not enough
        assert parseProxyHeader(header[:cut]) is None, cut
    address, length = parseProxyHeader(header + b"alice\r\n")
    assert length == len(header)
    assert address.port == port
    if host is not None:
        assert address.host == host
    kind = IPv6Address if header.startswith(V2_SIGNATURE) and header[13] == 0x21 else None
    if kind is not None:
        assert isinstance(address, kind)


@pytest.mark.parametrize(
    "header",
    [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN 1 2 3 4\r\n", v2(command=0, body=b""), v2(family=0x31)],
)
def test_a_proxy_may_speak_for_itself(header):
    assert parseProxyHeader(header) == (None, len(header))


@pytest.mark.parametrize(
    "data, why",
    [
        (b"alice\r\n", "not a PROXY protocol header"),
        (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
        (b"PROXY TCP4 <script> 192.0.2.1 1 2\r\n", "bad TCP4 source address"),
        (b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n", "bad TCP4 source address"),
        (b"PROXY TCP6 203.0.113.7 ::1 1 2\r\n", "bad TCP6 source address"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 70000 2\r\n", "bad source port"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 -1 2\r\n", "bad source port"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 1\r\n", "not PROXY TCP4|TCP6"),
        (b"PROXY UDP4 203.0.113.7 192.0.2.1 1 2\r\n", "not PROXY TCP4|TCP6"),
        (b"PROXY TCP4 203.0.113.\xff 192.0.2.1 1 2\r\n", "not ASCII"),
        (b"PROXY " + b"1" * 120, "longer than 107 bytes"),
        (V2_SIGNATURE + b"\x31\x11\x00\x0c", "unknown version or command"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c", "unknown version or command"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "longer than 4096 bytes"),
        (v2(body=b"\x01\x02"), "too short for IPv4"),
        (v2(family=0x21, body=bytes(12)), "too short for IPv6"),
    ],
)
def test_anything_else_is_refused(data, why):
    with pytest.raises(ProxyHeaderError, match=why.replace("|", r"\|")):
        parseProxyHeader(data)


# -- whom to believe -----------------------------------------------------------------


def test_forwarded_addresses_are_read_from_either_header():
    assert forwardedFor(["203.0.113.7, 10.0.0.2", "10.0.0.3"], []) == [
        "203.0.113.7",
        "10.0.0.2",
        "10.0.0.3",
    ]
    assert forwardedFor(
        ["198.51.100.1"], ['for=203.0.113.7;proto=https, for="[2001:db8::7]:4711"']
    ) == [
        "203.0.113.7",
        "2001:db8::7",
    ]
    assert forwardedFor([], ['For="203.0.113.7:47011";by=10.0.0.1', "proto=http"]) == [
        "203.0.113.7",
        "",
    ]


def test_only_trusted_proxies_vouch_for_the_hop_before_them():
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1"])
    assert trusted.client("127.0.0.1", ["203.0.113.7"]) == "203.0.113.7"
    # Hops are believed from the right while they are trusted proxies: a client can put
    # anything at the start of X-Forwarded-For, but not past the proxy that saw it.
    assert trusted.client("127.0.0.1", ["6.6.6.6", "203.0.113.7", "10.1.2.3"]) == "203.0.113.7"
    assert trusted.client("198.51.100.1", ["203.0.113.7"]) == "198.51.100.1"  # not trusted
    assert trusted.client("127.0.0.1", []) == "127.0.0.1"  # no header: the proxy itself
    assert trusted.client("127.0.0.1", ["unknown"]) == "127.0.0.1"
    assert trusted.client("127.0.0.1", ["203.0.113.7", "_hidden", "10.0.0.5"]) == "10.0.0.5"
    assert trusted.client("::1", ["::ffff:203.0.113.7"]) == "203.0.113.7"
    assert trusted.client("127.0.0.1", ["10.0.0.2", "10.0.0.1"]) == "10.0.0.2"  # all proxies
    assert "10.255.0.1" in trusted and "11.0.0.1" not in trusted and "nonsense" not in trusted


def test_settings_check_the_proxy_table():
    with pytest.raises(ConfigError, match="trusted_proxies: .*'10.0.0.0/33'"):
        makeSettings({"trusted_proxies": ("10.0.0.0/33",)})
    with pytest.raises(ConfigError, match="proxy_protocol: unknown listener kind 'gopher'"):
        makeSettings({"trusted_proxies": ("127.0.0.1",), "proxy_protocol": ("gopher",)})
    with pytest.raises(ConfigError, match="proxy_protocol needs trusted_proxies"):
        makeSettings({"proxy_protocol": ("tcp",)})
    with pytest.raises(ConfigError, match="proxy_header_timeout must be at least 1"):
        makeSettings({"proxy_header_timeout": 0})


# -- line connections through a proxy, in memory ---------------------------------------


@pytest.fixture
def proxied():
    service, clock = makeService(
        trusted_proxies=("127.0.0.0/8",), max_connections_per_ip=1, proxy_header_timeout=10
    )
    factory = ProxyProtocolFactory(LineChatFactory(service), service, "tcp")
    lines = factory.wrappedFactory

    def connect(peer: IPv4Address = PROXY):
        protocol = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def output(transport) -> str:
        lines.flusher.flush()
        value = transport.value().decode()
        transport.clear()
        return value

    return service, clock, connect, output


def test_a_proxied_client_is_known_by_its_own_address(proxied):
    service, clock, connect, output = proxied
    protocol, transport = connect()
    assert isinstance(protocol, ProxyHeaderReader)
    assert service.sessions == set() and output(transport) == ""  # nothing before the header
    for byte in V1 + b"alice\r\n":  # the header split anywhere
        protocol.dataReceived(bytes([byte]))
    assert "Welcome, alice!" in output(transport)
    alice = service.findUser("alice")
    assert alice.host == "203.0.113.7"
    assert alice.client.address == "tcp 203.0.113.7:5555"
    assert service.admission.byAddress == {"203.0.113.7": 1}
    protocol.connectionLost(None)
    assert service.findUser("alice") is None and service.admission.total == 0


def test_connection_limits_count_each_client_behind_the_proxy(proxied):
    service, clock, connect, output = proxied
    first, firstTransport = connect()
    first.dataReceived(V1)
    second, secondTransport = connect()
    second.dataReceived(v2(body=bytes([203, 0, 113, 8, 10, 0, 0, 1, 0, 1, 0, 2])))
    third, thirdTransport = connect()
    third.dataReceived(V1.replace(b"5555", b"5556"))  # 203.0.113.7 again
    assert "Type a nickname" in output(firstTransport)
    assert "Type a nickname" in output(secondTransport)
    assert "too many connections from your address" in output(thirdTransport)
    assert service.admission.byAddress == {"203.0.113.7": 1, "203.0.113.8": 1}


def test_an_address_ban_bans_the_client_not_the_proxy(proxied):
    service, clock, connect, output = proxied
    protocol, transport = connect()
    protocol.dataReceived(V1 + b"mallory\r\n")
    assert service.findUser("mallory").host == "203.0.113.7"
    d = defer.ensureDeferred(service.ban(CONSOLE, "mallory", address=True))
    assert d.called and service.findUser("mallory") is None
    protocol.connectionLost(None)  # the server closed it
    back, backTransport = connect()
    back.dataReceived(V1)
    assert "this address is banned" in output(backTransport)
    other, otherTransport = connect()
    other.dataReceived(V1.replace(b"203.0.113.7", b"203.0.113.9"))
    assert "Type a nickname" in output(otherTransport)


def test_others_are_served_as_they_are_and_their_header_is_not_believed(proxied):
    service, clock, connect, output = proxied
    stranger = IPv4Address("TCP", "198.51.100.1", 40001)
    protocol, transport = connect(stranger)
    assert not isinstance(protocol, ProxyHeaderReader)
    assert "Type a nickname" in output(transport)
    protocol.dataReceived(V1 + b"eve\r\n")
    assert "Welcome, eve!" in output(transport)
    assert service.findUser("eve").host == "198.51.100.1"


def test_a_trusted_proxy_that_sends_no_header_is_turned_away(proxied):
    service, clock, connect, output = proxied
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        protocol, transport = connect()
        protocol.dataReceived(b"alice\r\n")
        assert transport.disconnected and service.sessions == set()
        protocol.connectionLost(None)
        slow, slowTransport = connect()
        slow.dataReceived(V1[:10])
        clock.advance(9.9)
        assert not slowTransport.disconnected
        clock.advance(0.1)
        assert slowTransport.disconnected and service.sessions == set()
        slow.connectionLost(None)
        assert clock.getDelayedCalls() == []
    finally:
        globalLogPublisher.removeObserver(logged.append)
    text = [formatEvent(e) for e in logged]
    assert "closing tcp 127.0.0.1:40000 (a trusted proxy): bad PROXY header: not a PROXY " in (
        "\n".join(text)
    )
    assert any("(a trusted proxy): no PROXY header in 10 s" in t for t in text)
    assert service.admission.total == 0


# -- the web port behind a proxy, over real sockets --------------------------------------


async def _site(**settings) -> tuple[ChatService, object]:
    from twisted.internet import reactor

    chat = ChatService(Settings(db="memory", **settings), clock=reactor)
    chat.startService()
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        ChatSite(chat, reactor=reactor)
    )
    return chat, port


async def _connectWS(port: int, **headers: str) -> WSClient:
    from twisted.internet import reactor

    factory = WebSocketClientFactory(f"ws://localhost:{port}/", headers=headers, reactor=reactor)
    factory.protocol = WSClient
    factory.isJSON = False
    factory.opened = defer.Deferred()
    factory.setProtocolOptions(closeHandshakeTimeout=2, openHandshakeTimeout=TIMEOUT)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5).connect(factory)
    return await factory.opened.addTimeout(TIMEOUT, reactor)


@pytest_twisted.ensureDeferred
async def test_the_web_port_believes_a_trusted_proxy_about_its_clients():
    chat, port = await _site(trusted_proxies=("127.0.0.1",), max_connections_per_ip=1)
    number = port.getHost().port
    try:
        dave = await _connectWS(number, **{"X-Forwarded-For": "6.6.6.6, 203.0.113.7"})
        await dave.until("Type a nickname")
        dave.say("dave")
        await dave.until("Welcome, dave!")
        user = chat.findUser("dave")
        assert user.host == "203.0.113.7"
        assert user.client.address.startswith("ws 203.0.113.7 via proxy 127.0.0.1:")
        # Each client behind the proxy has its own connection slots.
        erin = await _connectWS(number, Forwarded='for="[2001:db8::9]:1234"')
        await erin.until("Type a nickname")
        assert chat.admission.byAddress == {"203.0.113.7": 1, "2001:db8::9": 1}
        # The same client again is past max_connections_per_ip: refused with a 503.
        with pytest.raises(Exception, match="503"):
            await _connectWS(number, **{"X-Forwarded-For": "203.0.113.7"})
        assert chat.admission.byAddress == {"203.0.113.7": 1, "2001:db8::9": 1}
        dave.transport.loseConnection()
        erin.transport.loseConnection()
        await eventually(lambda: chat.admission.total == 0)
    finally:
        await port.stopListening()
        await chat.stopService()


@pytest_twisted.ensureDeferred
async def test_the_web_port_ignores_forwarded_headers_from_anyone_else():
    chat, port = await _site(trusted_proxies=("10.0.0.0/8",))
    try:
        eve = await _connectWS(port.getHost().port, **{"X-Forwarded-For": "203.0.113.7"})
        await eve.until("Type a nickname")
        eve.say("eve")
        await eve.until("Welcome, eve!")
        assert chat.findUser("eve").host == "127.0.0.1"
        assert "via" not in chat.findUser("eve").client.address  # ws 127.0.0.1:PORT
        assert chat.admission.byAddress == {"127.0.0.1": 1}
        eve.transport.loseConnection()
        await eventually(lambda: chat.admission.total == 0)
    finally:
        await port.stopListening()
        await chat.stopService()


# -- the whole server, as deployed behind HAProxy --------------------------------------


def test_twistd_reads_proxy_headers_on_tcp_and_under_tls(tmp_path):
    cert, key = makeCert(tmp_path)
    config = tmp_path / "chatserv.toml"
    config.write_text('[proxy]\ntrusted = ["127.0.0.1"]\nprotocol = ["tcp", "tls"]\n')
    local = "tcp:0:interface=127.0.0.1"
    args = ("--config", str(config), "--tcp", local, "--tls", local, "--ws", local)
    args += ("--tls-cert", str(cert), "--tls-key", str(key), "--db", "memory")
    with runServer(tmp_path, *args, listeners=3) as server:
        with socket.create_connection(("127.0.0.1", server.tcp), timeout=TIMEOUT) as plain:
            plain.sendall(V1 + b"alice\r\n")
            readUntil(plain, b"Welcome, alice!")
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", server.tls), timeout=TIMEOUT) as raw:
            raw.sendall(v2(family=0x21, body=bytes(15) + b"\x09" + bytes(16) + b"\x04\xd2\x00\x01"))
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"bob\r\n")
                readUntil(tls, b"Welcome, bob!")
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and "::9" not in "".join(server.output):
            time.sleep(0.05)
    log = "".join(server.output)
    assert "connect from tcp 203.0.113.7:5555" in log
    assert "connect from tls [::9]:1234" in log
