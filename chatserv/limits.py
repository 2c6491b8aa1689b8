"""Limits that keep one client from hurting the others.

Pure bookkeeping driven by the caller's clock: a token bucket for request rates, a
per-address connection counter, and an output guard that notices a client that stops
reading. Each limit's value is a named setting (see L{chatserv.config.Settings}).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


class TokenBucket:
    """Allows C{rate} events a second on average and C{burst} at once."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend a token if there is one."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


class Verdict(Enum):
    ACCEPT = "accept"
    WARN = "warn"  # dropped, and the client should be told once
    DROP = "drop"  # dropped silently (already warned)
    DISCONNECT = "disconnect"  # a sustained flood


# A dropped request is forgiven at this pace, so a flood of more than this many requests
# a second above the rate limit ends in a disconnect, while an occasional paste does not.
FORGIVE_PER_SECOND = 1.0


class FloodGuard:
    """Rate limit for one connection: accept, then warn and drop, then disconnect.

    Requests beyond C{rate} a second (after a C{burst}) are dropped; the client is warned
    once per episode. More than C{maxDropped} drops, forgiven at L{FORGIVE_PER_SECOND},
    mean a sustained flood.
    """

    __slots__ = ("_allowed", "_patience", "_warned")

    def __init__(self, rate: float, burst: int, maxDropped: int, now: float) -> None:
        self._allowed = TokenBucket(rate, burst, now)
        self._patience = TokenBucket(FORGIVE_PER_SECOND, maxDropped, now)
        self._warned = False

    def check(self, now: float) -> Verdict:
        if self._allowed.take(now):
            self._warned = False
            return Verdict.ACCEPT
        if not self._patience.take(now):
            return Verdict.DISCONNECT
        if self._warned:
            return Verdict.DROP
        self._warned = True
        return Verdict.WARN


class ConnectionLimiter:
    """Counts open connections in total and per address, across every listener."""

    def __init__(self, maxTotal: int, maxPerAddress: int) -> None:
        self.maxTotal = maxTotal
        self.maxPerAddress = maxPerAddress
        self.total = 0
        self.byAddress: dict[str, int] = {}

    def admit(self, address: str) -> str | None:
        """Count a new connection from C{address}, or return why it is refused."""
        if self.total >= self.maxTotal:
            return f"the server is full ({self.maxTotal} connections); try again later"
        count = self.byAddress.get(address, 0)
        if count >= self.maxPerAddress:
            return f"too many connections from your address (the limit is {self.maxPerAddress})"
        self.total += 1
        self.byAddress[address] = count + 1
        return None

    def release(self, address: str) -> None:
        count = self.byAddress.get(address, 0)
        if count <= 0:
            return
        self.total -= 1
        if count == 1:
            del self.byAddress[address]
        else:
            self.byAddress[address] = count - 1


@implementer(IPushProducer)
class OutputGuard:
    """Notices a client that stops reading, using Twisted's producer/consumer signals.

    Registered as the transport's producer, it is paused when the transport's own buffer
    fills (the client is not keeping up) and resumed when it drains. Bytes written while
    paused are counted; past C{limit}, C{overflow} is called once, so the connection can be
    dropped instead of letting its buffer grow without bound. Nobody else waits: writes
    to other clients never depend on this one.
    """

    __slots__ = ("limit", "overflow", "paused", "backlog", "tripped")

    def __init__(self, limit: int, overflow: Callable[[int], object]) -> None:
        self.limit = limit
        self.overflow = overflow
        self.paused = False
        self.backlog = 0
        self.tripped = False

    def written(self, size: int) -> bool:
        """Count C{size} bytes about to be written; C{True} if they overflow the limit."""
        if self.paused:
            self.backlog += size
            if self.backlog > self.limit and not self.tripped:
                self.tripped = True
                self.overflow(self.backlog)
        return self.tripped

    # IPushProducer
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.backlog = 0

    def stopProducing(self) -> None:
        self.paused = True
