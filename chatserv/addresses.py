"""Client addresses: loopback, trusted reverse proxies, and who is behind a proxy.

Limits, bans and logs go by a client's IP address. Behind a reverse proxy (nginx,
HAProxy, a load balancer) every connection comes from the proxy's address; the proxy
says who the client is, in a PROXY protocol header (line listeners) or in
C{X-Forwarded-For} / C{Forwarded} (the web port). Only proxies listed in
C{trusted_proxies} are believed: anyone else could claim any address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parseAddress(text: str) -> Address | None:
    """C{text} as an IP address (an IPv4-mapped IPv6 one as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return address


def isLoopback(host: str) -> bool:
    address = parseAddress(host)
    return address is not None and address.is_loopback


class TrustedProxies:
    """The networks whose connections may say who the client really is."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        """@raise ValueError: if one of C{networks} is not an address or a network."""
        self.networks = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: object) -> bool:
        address = parseAddress(host) if isinstance(host, str) else None
        return address is not None and any(address in n for n in self.networks)

    def client(self, peer: str, forwarded: list[str]) -> str:
        """Who a request from C{peer} is from, given the addresses its proxies forwarded
        (oldest first, as in C{X-Forwarded-For}).

        From the right, each hop that is a trusted proxy vouches for the one before it;
        the first hop that is not trusted is the client. A hop that is not an address
        (C{unknown}, an obfuscated name) ends the walk at the last trusted one.
        """
        if peer not in self:
            return peer  # anyone else's headers are the client's to invent
        client = peer
        for hop in reversed(forwarded):
            address = parseAddress(hop)
            if address is None:
                break
            client = str(address)
            if client not in self:
                break
        return client


def forwardedFor(xForwardedFor: list[str], forwarded: list[str]) -> list[str]:
    """The client addresses a request's proxies forwarded, oldest first.

    C{Forwarded} (RFC 7239) wins when present, C{X-Forwarded-For} otherwise; several
    lines of one header are one list, in order. Ports and IPv6 brackets are removed.
    """
    if forwarded:
        hops = []
        for element in ",".join(forwarded).split(","):
            value = next(
                (
                    pair.split("=", 1)[1]
                    for pair in element.split(";")
                    if pair.strip().lower().startswith("for=")
                ),
                None,
            )
            hops.append(_withoutPort(value.strip().strip('"')) if value is not None else "")
        return hops
    return [_withoutPort(hop.strip()) for hop in ",".join(xForwardedFor).split(",")]


def _withoutPort(node: str) -> str:
    if node.startswith("["):  # [2001:db8::1]:4711
        return node[1 : node.find("]")] if "]" in node else node
    if node.count(":") == 1:  # 192.0.2.43:47011 (an IPv6 address has more colons)
        return node.split(":", 1)[0]
    return node
