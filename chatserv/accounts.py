"""What registered nicknames need besides the store: password hashing, throttling of
logins and registrations, and colours. Nothing here touches the reactor thread with slow work.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet import defer, threads

from chatserv.errors import Busy, UsageError

_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
NO_COLOR = ("none", "off", "-")
BUSY = "the server is busy; try again in a moment"


def checkColor(text: str) -> str | None:
    """C{"#rrggbb"} (lower case), or C{None} for "no colour"; else L{UsageError}."""
    if text.lower() in NO_COLOR:
        return None
    if not _COLOR.fullmatch(text):
        raise UsageError("a colour is #RRGGBB, e.g. /color #1e90ff (or /color none)")
    return text.lower()


class Passwords:
    """argon2id hashing and checking in the reactor's thread pool, a few at a time.

    Each hash costs tens of milliseconds of CPU and C{memory_cost} KiB of memory: run on
    the reactor thread it would stall every connection, and run without a bound a burst
    of logins would exhaust memory. So at most C{atOnce} run; at most C{maxWaiting} more
    wait, the rest are refused with L{Busy}. Login checks wait in a queue of their own that
    goes first: new hashes (registrations, password changes) cannot make logins slow.
    """

    def __init__(
        self,
        reactor=None,
        hasher: PasswordHasher | None = None,
        atOnce: int = 2,
        maxWaiting: int = 64,
        inThread: bool = True,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._hasher = hasher or PasswordHasher()
        self.atOnce = atOnce
        self.maxWaiting = maxWaiting
        self._running = 0
        # Logins, then everything else; each in order of arrival.
        self._logins: deque[_Job] = deque()
        self._others: deque[_Job] = deque()
        self._inThread = inThread  # False only in tests that must run synchronously
        self._unknown: str | None = None

    @property
    def waiting(self) -> int:
        return len(self._logins) + len(self._others)

    def hash(self, password: str) -> defer.Deferred[str]:
        return self._submit(False, self._hasher.hash, password)

    def verify(self, hashed: str | None, password: str, login: bool = True) -> defer.Deferred[bool]:
        """Whether C{password} matches C{hashed}. C{None} (no such account) costs the same
        time as a real check, so that timing does not tell which nicknames exist.
        C{login}: a login's check, which goes before queued hashes."""
        return self._submit(login, self._verify, hashed, password)

    def _submit(self, login: bool, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        job = _Job(defer.Deferred(), f, args)
        if self._running < self.atOnce:
            self._start(job)
            return job.result
        bumped = None
        if self.waiting >= self.maxWaiting:
            if not (login and self._others):
                return defer.fail(Busy(BUSY))
            # A login takes the place of the newest hash: a flood of registrations must
            # not keep people out of the accounts they have.
            bumped = self._others.pop()
        (self._logins if login else self._others).append(job)
        if bumped is not None:
            bumped.result.errback(Busy(BUSY))
        return job.result

    def _start(self, job: _Job) -> None:
        self._running += 1
        self._work(job.f, *job.args).addBoth(self._release).chainDeferred(job.result)

    def _release(self, result: object) -> object:
        self._running -= 1
        queue = self._logins or self._others
        if queue:
            self._start(queue.popleft())
        return result

    def _work(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        if not self._inThread:
            return defer.maybeDeferred(f, *args)
        pool = self._reactor.getThreadPool()
        return threads.deferToThreadPool(self._reactor, pool, f, *args)

    def _verify(self, hashed: str | None, password: str) -> bool:
        # Runs in a thread.
        if hashed is None:
            if self._unknown is None:
                self._unknown = self._hasher.hash(os.urandom(16))
            hashed, password = self._unknown, ""  # never matches: a hash of random bytes
        try:
            return self._hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False


class _Job(NamedTuple):
    result: defer.Deferred
    f: Callable[..., Any]
    args: tuple


class Throttle:
    """Attempts counted per key, forgiven one at a time, one every C{decay} seconds. A key
    with C{limit} attempts counted must wait; it never counts more than C{limit}, so no
    wait is longer than C{decay}."""

    # Keys whose attempts are all forgiven are dropped when the table grows past this,
    # so that guessing at many nicknames cannot grow it without bound.
    SWEEP_AT = 10_000

    def __init__(self, limit: int, decay: float) -> None:
        self.limit = limit
        self.decay = decay
        # key -> (attempts, when the oldest of them started counting down)
        self._counts: dict[Hashable, tuple[int, float]] = {}

    def _state(self, key: Hashable, now: float) -> tuple[int, float]:
        count, stamp = self._counts.get(key, (0, now))
        forgiven = min(count, int((now - stamp) // self.decay))
        return count - forgiven, stamp + forgiven * self.decay if count > forgiven else now

    def wait(self, key: Hashable, now: float) -> float:
        """Seconds until C{key} may try again (0: now)."""
        count, stamp = self._state(key, now)
        if count < self.limit:
            return 0.0
        return stamp + (count - self.limit + 1) * self.decay - now

    def add(self, key: Hashable, now: float) -> None:
        count, stamp = self._state(key, now)
        self._counts[key] = (min(count + 1, self.limit), stamp)
        if len(self._counts) > self.SWEEP_AT:
            self._counts = {k: v for k, v in self._counts.items() if self._state(k, now)[0]}

    def refund(self, key: Hashable, now: float) -> None:
        """Forget one attempt of C{key} (one that turned out not to count)."""
        count, stamp = self._state(key, now)
        if count > 1:
            self._counts[key] = (count - 1, stamp)
        else:
            self._counts.pop(key, None)


class LoginThrottle:
    """Password checks (logins, /passwd) counted per address and account, and per address.

    A check counts when it is admitted, before the slow hash, and is refunded if the
    password was right: simultaneous guesses cannot all get through. One address may have
    one check in flight per account. Nothing is counted per account alone, so guessing
    from one address cannot lock the owner out elsewhere.
    """

    def __init__(self, perAccount: int, perAddress: int, decay: float) -> None:
        self.pairs = Throttle(perAccount, decay)
        self.addresses = Throttle(perAddress, decay)
        self._checking: set[tuple[str, str]] = set()

    def checking(self, host: str, account: str) -> bool:
        """Whether a check for C{account} from C{host} is in flight."""
        return (host, account) in self._checking

    def wait(self, host: str, account: str, now: float) -> float:
        """Seconds until C{host} may try C{account} (0: now)."""
        return max(self.pairs.wait((host, account), now), self.addresses.wait(host, now))

    def admit(self, host: str, account: str, now: float) -> None:
        """Count a check that starts now (after L{checking} and L{wait} allowed it)."""
        self._checking.add((host, account))
        self.count(host, account, now)

    def finish(self, host: str, account: str, now: float, failed: bool) -> None:
        """The check is over; unless C{failed} (a wrong password) it does not count."""
        self._checking.discard((host, account))
        if not failed:
            self.refund(host, account, now)

    def count(self, host: str, account: str, now: float) -> None:
        """Count one check (admitted here, or on another node of a cluster)."""
        self.pairs.add((host, account), now)
        self.addresses.add(host, now)

    def refund(self, host: str, account: str, now: float) -> None:
        """Give back one check that did not count."""
        self.pairs.refund((host, account), now)
        self.addresses.refund(host, now)
