"""Output coalescing: what a connection is sent during one reactor turn leaves in one write.

A message to a room of N members is N calls to C{send}. Handing each straight to its
transport costs a C{transport.write} per recipient per message: buffer bookkeeping, a
producer check, a writer registration and, for websockets, Autobahn's per-frame logging
and statistics. Under load a connection is sent several messages per reactor turn, so
C{send} only appends to a list, and one call scheduled for the end of the turn
(C{callLater(0)}) writes each connection's pending output, joined, in one go.

This adds no latency: a transport writes nothing before the reactor next polls its socket
anyway, and the scheduled call runs just before that poll. Anything that must leave
before a close (a farewell notice) is flushed by the protocol at once.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from chatserv.limits import OutputGuard

_log = Logger()


class Flusher:
    """Writes out, once per reactor turn, every connection that has pending output."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._dirty: list[BatchedOutput] = []
        self._call: IDelayedCall | None = None

    def add(self, connection: BatchedOutput) -> None:
        self._dirty.append(connection)
        if self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Write out every pending connection now."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            try:
                connection.flush()
            except Exception:
                # One broken connection must not hold back everyone else's output.
                _log.failure("writing to {address} failed", address=connection.address)


class BatchedOutput:
    """Mixin for protocols: C{send} collects payloads, L{flush} writes them.

    The protocol provides C{factory.flusher} (a L{Flusher}), C{_guard} (its slow-reader
    L{OutputGuard}), C{_counters} and C{address}, and implements C{_joined} (the pending
    payloads as one byte string) and C{_write}.
    """

    _pending: list | None = None  # a class default: an idle connection holds no list
    _guard: OutputGuard

    def send(self, payload) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [payload]
            self.factory.flusher.add(self)
        else:
            pending.append(payload)

    def flush(self) -> None:
        """Write what is pending now (the flusher calls this; so does a close)."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        data = self._joined(pending)
        guard = self._guard
        # A client that is behind: count what it is sent, and stop once it is dropped.
        if guard.tripped or (guard.paused and guard.written(len(data))):
            return
        self._write(data)
        self._counters.bytes_out += len(data)

    def discardOutput(self) -> None:
        """Forget pending output (the connection is gone)."""
        self._pending = None

    def _joined(self, pending: list) -> bytes:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError
