"""The PROXY protocol (v1 and v2): a TCP proxy in front says who the client is.

HAProxy, nginx's stream module and most cloud load balancers can send, before the
client's first byte, a header naming the client's address
(U{https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt}). On the listener kinds
named in C{proxy_protocol}, a connection from one of C{trusted_proxies} must start with
one; the chat protocol is only built once it has arrived, with the client's address, so
connection limits, bans, login throttling and logs all see the client, not the proxy.
Connections from anyone else are served as they are: their header, if they sent one,
would be a claim nobody vouches for, and is not read as one.

Under TLS the header comes first, in the clear, so this wraps the TCP endpoint that TLS
is layered on.
"""

from __future__ import annotations

import ipaddress
import struct

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import directlyProvides, implementer, providedBy

from chatserv.addresses import parseAddress
from chatserv.protocols import peerText

_log = Logger()

V1_PREFIX = b"PROXY "
V1_MAX = 107  # bytes in the longest v1 header, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX = 4096  # bytes: addresses plus the TLVs proxies add (AWS, GCP), with room to spare


class ProxyHeaderError(ValueError):
    """What came first is not a well-formed PROXY header."""


def parseProxyHeader(data: bytes) -> tuple[IAddress | None, int] | None:
    """Read a PROXY header at the start of C{data}.

    @return: None if more bytes are needed; else the client's address (None when the
        proxy speaks for itself: v2 LOCAL, v1 UNKNOWN, or an address family other than
        TCP over IPv4 or IPv6) and the header's length in bytes.
    @raise ProxyHeaderError: if C{data} does not start with a valid header.
    """
    if data[:12] == V2_SIGNATURE[: len(data)] and len(data) < 16:
        return None
    if data.startswith(V2_SIGNATURE):
        return _parseV2(data)
    if data[:6] == V1_PREFIX[: len(data)]:
        return _parseV1(data)
    raise ProxyHeaderError("not a PROXY protocol header")


def _parseV1(data: bytes) -> tuple[IAddress | None, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("v1 header longer than 107 bytes")
        return None
    try:
        fields = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("v1 header is not ASCII") from None
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return None, end + 2  # the proxy's own connection (a health check)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("v1 header is not PROXY TCP4|TCP6 SRC DST SPORT DPORT")
    _, family, source, _destination, port, _destinationPort = fields
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        address = None
    if address is None or address.version != (4 if family == "TCP4" else 6):
        raise ProxyHeaderError(f"v1 header has a bad {family} source address")
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ProxyHeaderError("v1 header has a bad source port")
    return _address(source, int(port)), end + 2


def _parseV2(data: bytes) -> tuple[IAddress | None, int] | None:
    versionCommand, family, length = struct.unpack("!BBH", data[12:16])
    if versionCommand >> 4 != 2 or versionCommand & 0xF > 1:
        raise ProxyHeaderError("v2 header has an unknown version or command")
    if 16 + length > V2_MAX:
        raise ProxyHeaderError(f"v2 header longer than {V2_MAX} bytes")
    end = 16 + length
    if len(data) < end:
        return None
    body = data[16:end]
    if versionCommand & 0xF == 0:  # LOCAL: the proxy's own connection
        return None, end
    if family == 0x11:  # TCP over IPv4
        if length < 12:
            raise ProxyHeaderError("v2 header too short for IPv4 addresses")
        source = ipaddress.IPv4Address(body[:4])
        (port,) = struct.unpack("!H", body[8:10])
    elif family == 0x21:  # TCP over IPv6
        if length < 36:
            raise ProxyHeaderError("v2 header too short for IPv6 addresses")
        source = ipaddress.IPv6Address(body[:16])
        (port,) = struct.unpack("!H", body[32:34])
    else:  # UNSPEC, UDP, UNIX: no TCP client address to go by
        return None, end
    return _address(str(source), port), end


def _address(host: str, port: int) -> IAddress:
    address = parseAddress(host)  # an IPv4-mapped IPv6 client is an IPv4 one
    if isinstance(address, ipaddress.IPv6Address):
        return IPv6Address("TCP", str(address), port)
    return IPv4Address("TCP", str(address), port)


class ProxyHeaderReader(ProtocolWrapper):
    """Reads the PROXY header of a connection from a trusted proxy, then hands the
    connection, with the client's address, to a protocol of the wrapped factory."""

    wrappedProtocol: Protocol | None
    factory: ProxyProtocolFactory

    def __init__(self, factory: ProxyProtocolFactory) -> None:
        super().__init__(factory, None)  # type: ignore[arg-type]  # built with the header
        self._buffer = b""
        self._client: IAddress | None = None
        self._timer: IDelayedCall | None = None

    def makeConnection(self, transport) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self._timer = self.factory.clock.callLater(self.factory.timeout, self._tooSlow)

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self.disconnecting:
            return
        self._buffer += data
        try:
            parsed = parseProxyHeader(self._buffer)
        except ProxyHeaderError as e:
            self._refuse(f"bad PROXY header: {e}")
            return
        if parsed is None:
            return
        self._stopTimer()
        client, length = parsed
        rest, self._buffer = self._buffer[length:], b""
        self._client = client
        protocol = self.factory.wrappedFactory.buildProtocol(self.getPeer())
        if protocol is None:
            self.loseConnection()
            return
        self.wrappedProtocol = protocol
        protocol.makeConnection(self)
        if rest and not self.disconnecting:
            protocol.dataReceived(rest)

    def getPeer(self) -> IAddress:
        return self._client or self.transport.getPeer()

    def connectionLost(self, reason) -> None:
        self._stopTimer()
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.connectionLost(reason)
            self.wrappedProtocol = None

    def logPrefix(self) -> str:
        return "ProxyHeaderReader"

    def _refuse(self, why: str) -> None:
        self._stopTimer()
        self.factory.service.logLimit.info(
            _log,
            "closing {peer} (a trusted proxy): {why}",
            peer=peerText(self.factory.kind, self.transport.getPeer()),
            why=why,
        )
        self.disconnecting = 1
        self.transport.abortConnection()

    def _tooSlow(self) -> None:
        self._timer = None
        self._refuse(f"no PROXY header in {self.factory.timeout:g} s")

    def _stopTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None


class ProxyProtocolFactory(Factory):
    """Wraps a listener's factory: connections from the service's trusted proxies start
    with a PROXY header; everyone else's go straight to C{wrappedFactory}."""

    noisy = False

    def __init__(self, wrappedFactory: Factory, service, kind: str) -> None:
        self.wrappedFactory = wrappedFactory
        self.trusted = service.trustedProxies
        self.service = service
        self.kind = kind
        self.clock = service.clock
        self.timeout = service.settings.proxy_header_timeout

    def doStart(self) -> None:
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        self.wrappedFactory.doStop()

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        if str(getattr(addr, "host", "")) not in self.trusted:
            return self.wrappedFactory.buildProtocol(addr)
        return ProxyHeaderReader(self)


@implementer(IStreamServerEndpoint)
class ProxyProtocolEndpoint:
    """An endpoint whose listeners read PROXY headers from trusted proxies."""

    def __init__(self, endpoint: IStreamServerEndpoint, service, kind: str) -> None:
        self.endpoint = endpoint
        self.service = service
        self.kind = kind

    def listen(self, protocolFactory):
        wrapped = ProxyProtocolFactory(protocolFactory, self.service, self.kind)
        return self.endpoint.listen(wrapped)
