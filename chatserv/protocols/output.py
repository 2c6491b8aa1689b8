"""What leaves a connection: coalesced once per reactor turn, bounded for slow readers.

Coalescing. A message to a room of N members is N calls to C{send}. Handing each straight
to its transport costs a C{transport.write} per recipient per message: buffer
bookkeeping, a producer check, a writer registration and, for websockets, Autobahn's
per-frame logging and statistics. Under load a connection is sent several messages per
reactor turn, so C{send} only appends to a list, and one call scheduled for the end of
the turn (C{callLater(0)}, L{Flusher}) writes each connection's pending output, joined,
in one go. That adds no latency: a transport writes nothing before the reactor next
polls its socket anyway, and the scheduled call runs just before that poll. Anything
that must leave before a close (a farewell notice) is flushed at once.

Straight to the socket. With many small rooms nothing coalesces: a connection gets one
message per turn, and C{transport.write} registers the socket as a writer for the next
poll, which writes it and unregisters it (two C{epoll_ctl} calls, and Twisted's buffer
bookkeeping, around the one C{send}). When a plain TCP transport holds nothing
unwritten, L{writeNow} calls C{send} at once instead; whatever the kernel does not take
is handed to C{transport.write}, so order, slow-reader pauses and errors stay Twisted's.

Slow readers. The protocol registers itself as its transport's streaming producer, so
Twisted pauses it when the transport's buffer fills (the client is not reading) and
resumes it when the buffer drains. Bytes sent while paused are counted, whatever
they are (chat output, or a protocol's own frames such as websocket pongs); past
C{max_output_buffer} the connection is dropped rather than let its buffer grow without
bound. Nobody else waits: writes to other clients never depend on this one. The state
lives in class defaults until it changes, so an idle connection pays nothing for it.
"""

from __future__ import annotations

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

_log = Logger()


def writeNow(transport, data: bytes) -> None:
    """C{transport.write(data)}, but sent at once when the transport is a plain TCP
    connection with nothing waiting to be written (see the module docstring)."""
    if (
        isinstance(transport, tcp.Connection)
        and transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        and not getattr(transport, "_tempDataBuffer", True)
        and not getattr(transport, "TLS", False)
    ):
        try:
            sent = transport.socket.send(data)  # (Python retries it when interrupted)
        except OSError:
            # Full (it would block), or the connection is lost: Twisted writes it or
            # finds the error, as for any write.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class Flusher:
    """Writes out, once per reactor turn, every connection that has pending output."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._dirty: list[ConnectionOutput] = []
        self._call: IDelayedCall | None = None

    def add(self, connection: ConnectionOutput) -> None:
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


@implementer(IPushProducer)
class ConnectionOutput:
    """Mixin for protocols: C{send} collects payloads, L{flush} writes them.

    The protocol calls L{startOutput} once connected; it provides C{factory.flusher} (a
    L{Flusher}), C{factory.service}, C{address} and C{dropSlowReader()}, and implements
    C{_joined} (pending payloads as one byte string) and C{_write}.
    """

    # Class defaults: an idle connection holds none of this in its instance.
    _pending: list | None = None
    _paused = False  # the transport's buffer is full: the client is behind
    _backlog = 0  # bytes sent while paused
    _tripped = False  # past the limit: being dropped

    def startOutput(self) -> None:
        self.transport.registerProducer(self, True)

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
        if self._tripped:  # being dropped: nothing more for it
            return
        data = self._joined(pending)
        if self.mayWrite(len(data)):
            self._write(data)

    def mayWrite(self, size: int) -> bool:
        """Count C{size} bytes about to be written; False if the client gets no more.

        Everything written to the transport passes here, protocol frames (websocket pongs
        and close frames) as well as chat output, so that none of it escapes the limit.
        """
        if self._tripped:
            return False
        if self._paused and self._overflows(size):
            return False
        self.factory.service.counters.bytes_out += size
        return True

    def discardOutput(self) -> None:
        """Forget pending output (the connection is gone)."""
        self._pending = None

    def _overflows(self, size: int) -> bool:
        self._backlog += size
        service = self.factory.service
        limit = service.settings.max_output_buffer
        if self._backlog <= limit:
            return False
        self._tripped = True
        service.counters.slow_readers += 1
        service.logLimit.info(
            _log,
            "dropping {address}: not reading ({backlog} bytes waiting, the limit is {limit})",
            address=self.address,
            backlog=self._backlog,
            limit=limit,
        )
        self.dropSlowReader()
        return True

    def _joined(self, pending: list) -> bytes:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    # IPushProducer: Twisted's signals about the transport's buffer.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._backlog = 0

    def stopProducing(self) -> None:
        self._paused = True
