"""How long to wait before reconnecting."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Exponential back-off: 1, 2, 4, 8, 16, 30, 30 ... seconds, each shortened by up to
    C{jitter} of itself at random, so that the clients a restart dropped do not all come
    back in the same instant. Jitter only shortens a delay: the cap is never exceeded.
    """

    def __init__(
        self,
        first: float = 1.0,
        cap: float = 30.0,
        jitter: float = 0.2,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.random = random
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt; each call counts one attempt."""
        delay = min(self.cap, self.first * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return delay * (1 - self.jitter * self.random())

    def reset(self) -> None:
        """Start again from the first delay (after a connection that worked)."""
        self.attempt = 0
