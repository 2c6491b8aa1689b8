"""Wire protocols: thin adapters between bytes and a L{chatserv.session.Session}."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address


def peerText(kind: str, address: object) -> str:
    """A peer as logs show it: C{"tcp 127.0.0.1:50312"}, C{"ws [::1]:50313"}."""
    if isinstance(address, IPv4Address):
        return f"{kind} {address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"{kind} [{address.host}]:{address.port}"
    return f"{kind} {address}"
