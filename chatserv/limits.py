"""Limits that keep one client from hurting the others.

Pure bookkeeping driven by the caller's clock: a token bucket for request rates, a
per-address connection counter, fixed-delay deadlines (the nickname timeout), and a cap on
the log lines clients can cause. The
slow-reader guard is in L{chatserv.protocols.output}, next to the writes it watches.
Each limit's value is a named setting (see L{chatserv.config.Settings}).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_log = Logger()
T = TypeVar("T")


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


class AddressBuckets:
    """One L{TokenBucket} per address, shared by all of its connections.

    A bucket that has filled up again is the same as none, so they are forgotten then
    (looked for at most once every L{SWEEP_EVERY} seconds): memory follows the addresses
    active lately, not every address ever seen.
    """

    SWEEP_EVERY = 10.0

    __slots__ = ("rate", "burst", "_buckets", "_swept")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._swept = 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, address: str, now: float) -> bool:
        """Spend one of C{address}'s tokens if it has one."""
        if now - self._swept >= self.SWEEP_EVERY:
            self._sweep(now)
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def _sweep(self, now: float) -> None:
        self._swept = now
        full = [
            address
            for address, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * b.rate >= b.burst
        ]
        for address in full:
            del self._buckets[address]


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

    __slots__ = ("_allowed", "_patience", "_warned", "_shared", "_address", "byAddress")

    def __init__(
        self,
        rate: float,
        burst: int,
        maxDropped: int,
        now: float,
        shared: AddressBuckets | None = None,
        address: str = "",
    ) -> None:
        self._allowed = TokenBucket(rate, burst, now)
        self._patience = TokenBucket(FORGIVE_PER_SECOND, maxDropped, now)
        self._warned = False
        # What the connection's address may send, over all its connections: a flooder
        # that is dropped and reconnects does not come back with a full allowance.
        self._shared = shared
        self._address = address
        self.byAddress = False  # the last refusal was the address's limit, not its own

    def check(self, now: float) -> Verdict:
        own = self._allowed.take(now)
        shared = self._shared
        if own and (shared is None or shared.take(self._address, now)):
            self._warned = False
            return Verdict.ACCEPT
        self.byAddress = own
        if not self._patience.take(now):
            return Verdict.DISCONNECT
        if self._warned:
            return Verdict.DROP
        self._warned = True
        return Verdict.WARN


class ConnectionLimiter:
    """Counts open connections in total and per address, across every listener."""

    def __init__(
        self,
        maxTotal: int,
        maxPerAddress: int,
        connects: AddressBuckets | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.maxTotal = maxTotal
        self.maxPerAddress = maxPerAddress
        self.total = 0
        self.byAddress: dict[str, int] = {}
        self._connects = connects  # new connections an address may open, over time
        self._clock = clock

    def admit(self, address: str) -> str | None:
        """Count a new connection from C{address}, or return why it is refused."""
        if self.total >= self.maxTotal:
            return f"the server is full ({self.maxTotal} connections); try again later"
        count = self.byAddress.get(address, 0)
        if count >= self.maxPerAddress:
            return f"too many connections from your address (the limit is {self.maxPerAddress})"
        connects = self._connects
        if connects is not None and not connects.take(address, self._clock.seconds()):
            return (
                "too many new connections from your address (more than "
                f"{connects.rate:g} a second); try again in a few seconds"
            )
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


class Deadline(Generic[T]):
    """One item's place in L{Deadlines}; cancelled by L{Deadlines.cancel}."""

    __slots__ = ("due", "item")

    def __init__(self, due: float, item: T) -> None:
        self.due = due
        self.item: T | None = item


class Deadlines(Generic[T]):
    """The same timeout for many items, with one timer for all of them.

    Every item waits the same C{delay}, so items come due in the order they were added:
    a queue and a single delayed call do what a delayed call per item would, for a
    fraction of the memory (a Twisted DelayedCall is about 0.6 KiB; an idle connection
    has about 3 KiB to spend in all). C{expire(item)} is called for each item whose time
    has come and was not cancelled.
    """

    def __init__(self, clock: IReactorTime, delay: float, expire: Callable[[T], object]) -> None:
        self._clock = clock
        self._delay = delay
        self._expire = expire
        self._queue: deque[Deadline[T]] = deque()
        self._call: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item: T) -> Deadline[T]:
        deadline = Deadline(self._clock.seconds() + self._delay, item)
        self._queue.append(deadline)
        if self._call is None:
            self._schedule()
        return deadline

    def cancel(self, deadline: Deadline[T]) -> None:
        deadline.item = None  # stays queued (harmless) unless it is at the front
        self._dropCancelled()
        if not self._queue:
            self.stop()

    def stop(self) -> None:
        """Forget every item; nothing will expire."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        self._queue.clear()

    def _dropCancelled(self) -> None:
        queue = self._queue
        while queue and queue[0].item is None:
            queue.popleft()

    def _schedule(self) -> None:
        delay = max(0.0, self._queue[0].due - self._clock.seconds())
        self._call = self._clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        queue = self._queue
        while queue and queue[0].due <= now:
            item = queue.popleft().item
            if item is not None:
                try:
                    self._expire(item)
                except Exception:
                    _log.failure("a deadline's expiry failed")
        self._dropCancelled()
        if queue and self._call is None:
            self._schedule()


class LogLimiter:
    """At most C{rate} log lines a second of each kind, after a burst of C{burst}.

    Clients can make the server log at will: every connection, refusal and limit hit is a
    line. Unbounded, that fills the disk and buries what matters, so such lines go
    through here. Lines are told apart by their format string; those left out are
    counted, and said so in one line per kind L{REPORT_EVERY} seconds after the first was
    left out. Once L{stop}ped (the server is shutting down) every line is written.
    """

    REPORT_EVERY = 10.0

    def __init__(self, clock: IReactorTime, rate: float, burst: int) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, TokenBucket] = {}  # by format: a few dozen at most
        self._left: dict[str, int] = {}  # lines left out since the last report
        self._report: IDelayedCall | None = None
        self._stopped = False

    def info(self, logger: Logger, format: str, **kwargs: object) -> None:
        """C{logger.info(format, **kwargs)}, unless lines of this format are over the limit."""
        if self._admit(format):
            logger.info(format, **kwargs)

    def warn(self, logger: Logger, format: str, **kwargs: object) -> None:
        """C{logger.warn(format, **kwargs)}, unless lines of this format are over the limit."""
        if self._admit(format):
            logger.warn(format, **kwargs)

    def _admit(self, format: str) -> bool:
        if self._stopped:
            return True
        now = self._clock.seconds()
        bucket = self._buckets.get(format)
        if bucket is None:
            bucket = self._buckets[format] = TokenBucket(self._rate, self._burst, now)
        if bucket.take(now):
            return True
        self._left[format] = self._left.get(format, 0) + 1
        if self._report is None:
            self._report = self._clock.callLater(self.REPORT_EVERY, self.report)
        return False

    def report(self) -> None:
        """Say how many lines of each kind were left out since the last report."""
        if self._report is not None and self._report.active():
            self._report.cancel()
        self._report = None
        left, self._left = self._left, {}
        for format, count in left.items():
            _log.info(
                "{count} more log lines like '{like}' were left out "
                "(over log_rate_limit, {rate:g} a second)",
                count=count,
                like=format,
                rate=self._rate,
            )

    def stop(self) -> None:
        self.report()
        self._stopped = True
