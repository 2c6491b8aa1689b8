"""Wire protocols: thin adapters between bytes and a L{chatserv.session.Session}.

What every wire shares lives here: how peers are named in logs, the connection limits
applied when a connection is accepted, and TCP keepalive; what leaves a connection
(coalescing, the slow-reader guard) is in L{chatserv.protocols.output}.
"""

from __future__ import annotations

import socket

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

_log = Logger()


def peerText(kind: str, address: object) -> str:
    """A peer as logs show it: C{"tcp 127.0.0.1:50312"}, C{"ws [::1]:50313"}; a client
    whose port a proxy did not say (X-Forwarded-For) as C{"ws 203.0.113.7"}."""
    if isinstance(address, IPv4Address):
        return f"{kind} {address.host}" + (f":{address.port}" if address.port else "")
    if isinstance(address, IPv6Address):
        if not address.port:
            return f"{kind} {address.host}"
        return f"{kind} [{address.host}]:{address.port}"
    return f"{kind} {address}"


class Refusal(Protocol):
    """Says why a connection is refused, then closes it."""

    def __init__(self, message: bytes) -> None:
        self.message = message

    def connectionMade(self) -> None:
        self.transport.write(self.message)
        self.transport.loseConnection()


class AdmissionMixin:
    """For factories: apply the service's connection limits in C{buildProtocol}.

    The factory provides C{service}, C{kind} and C{refusal(reason) -> bytes}; a protocol
    it builds must call L{released} when its connection is lost.
    """

    # A factory that learns who a trusted proxy's clients are later (the web site, from
    # each request's X-Forwarded-For) admits them then, not the proxy's connection.
    admitsProxiedLater = False

    def buildProtocol(self, addr):
        host = str(getattr(addr, "host", addr))
        if self.admitsProxiedLater and host in self.service.trustedProxies:
            return super().buildProtocol(addr)
        why = admit(self, host)
        if why is not None:
            return Refusal(self.refusal(why))
        protocol = super().buildProtocol(addr)
        protocol.admittedFrom = host
        return protocol


def admit(factory, host: str) -> str | None:
    """Take a connection slot for C{host}, or say (and log) why there is none."""
    service = factory.service
    why = service.admission.admit(host)
    if why is not None:
        service.counters.refused_connections += 1
        service.logLimit.info(
            _log,
            "refused {kind} connection from {host}: {why}",
            kind=factory.kind,
            host=host,
            why=why,
        )
    return why


def closedBecause(farewell: str) -> str:
    """What the log says of a connection the server closed with C{farewell}: not
    "connection lost", which is for the client's doing."""
    return "closed: " + farewell.removeprefix("disconnected: ")


def released(protocol) -> None:
    """Give back the connection slot a protocol was admitted with (once)."""
    host = protocol.__dict__.pop("admittedFrom", None)
    if host is not None:
        protocol.factory.service.admission.release(host)


def noDelay(transport) -> None:
    """Turn Nagle off: a chat line must leave at once, not wait for the peer's delayed ACK."""
    setNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setNoDelay is not None:  # not TCP (tests' in-memory transports, UNIX sockets)
        setNoDelay(True)


def keepAlive(transport, idle: float, timeout: float) -> None:
    """Have the kernel probe an idle TCP connection and close it when the peer is gone.

    Invisible to nc and telnet users, unlike a keepalive line would be. Probes start after
    C{idle} seconds of silence; three unanswered probes spread over C{timeout} end it.
    """
    setKeepAlive = getattr(transport, "setTcpKeepAlive", None)
    if setKeepAlive is None:  # not TCP (tests' in-memory transports, UNIX sockets)
        return
    setKeepAlive(True)
    sock = _socketOf(transport)
    if sock is None or not hasattr(socket, "TCP_KEEPIDLE"):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(idle)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(timeout / 3)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def _socketOf(transport) -> socket.socket | None:
    # A TLS transport wraps the TCP one; the socket belongs to the innermost.
    for _ in range(4):
        sock = getattr(transport, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None
