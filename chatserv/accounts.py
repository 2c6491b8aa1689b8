"""What registered nicknames need besides the store: password hashing, login throttling
and colours. Nothing here touches the reactor thread with slow work.
"""

from __future__ import annotations

import os
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet import defer, threads

from chatserv.errors import UsageError

_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
NO_COLOR = ("none", "off", "-")


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
    of logins would exhaust memory. Waiting requests queue, in order.
    """

    def __init__(
        self,
        reactor=None,
        hasher: PasswordHasher | None = None,
        atOnce: int = 2,
        inThread: bool = True,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._hasher = hasher or PasswordHasher()
        self._slots = defer.DeferredSemaphore(atOnce)
        self._inThread = inThread  # False only in tests that must run synchronously
        self._unknown: str | None = None

    def _run(self, f, *args) -> defer.Deferred:
        if not self._inThread:
            return self._slots.run(defer.maybeDeferred, f, *args)
        pool = self._reactor.getThreadPool()
        return self._slots.run(threads.deferToThreadPool, self._reactor, pool, f, *args)

    def hash(self, password: str) -> defer.Deferred[str]:
        return self._run(self._hasher.hash, password)

    def verify(self, hashed: str | None, password: str) -> defer.Deferred[bool]:
        """Whether C{password} matches C{hashed}. C{None} (no such account) costs the same
        time as a real check, so that timing does not tell which nicknames exist."""
        return self._run(self._verify, hashed, password)

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


class LoginThrottle:
    """Counts failed logins per key (a nickname, an address). Failures are forgotten one
    at a time, one every C{decay} seconds; a key with C{maxFailures} must wait."""

    # Keys whose failures are all forgotten are dropped when the table grows past this,
    # so that guessing at many nicknames cannot grow it without bound.
    SWEEP_AT = 10_000

    def __init__(self, maxFailures: int, decay: float) -> None:
        self.maxFailures = maxFailures
        self.decay = decay
        # key -> (failures, when the oldest of them started counting down)
        self._failures: dict[str, tuple[int, float]] = {}

    def _state(self, key: str, now: float) -> tuple[int, float]:
        count, stamp = self._failures.get(key, (0, now))
        forgiven = min(count, int((now - stamp) // self.decay))
        return count - forgiven, stamp + forgiven * self.decay if count > forgiven else now

    def wait(self, keys: list[str], now: float) -> float:
        """Seconds until a login for C{keys} may be tried (0: now)."""
        waits = []
        for key in keys:
            count, stamp = self._state(key, now)
            if count >= self.maxFailures:
                waits.append(stamp + (count - self.maxFailures + 1) * self.decay - now)
        return max(waits, default=0.0)

    def failed(self, keys: list[str], now: float) -> None:
        for key in keys:
            count, stamp = self._state(key, now)
            self._failures[key] = (count + 1, stamp)
        if len(self._failures) > self.SWEEP_AT:
            self._failures = {
                key: value for key, value in self._failures.items() if self._state(key, now)[0]
            }

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
