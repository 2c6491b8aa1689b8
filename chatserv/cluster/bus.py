"""The cluster's bus: one Redis channel that every node publishes to and listens on.

A publication goes to this node's receivers at once (so a node's own users never wait
on Redis, and a sender's messages stay in order), then, encoded (L{chatserv.codec}), to
the channel; each other node decodes it and hands it to its receivers, which apply and
deliver it as if it had been published there. A node ignores what it published itself.
Redis delivers one connection's publications in order: per sender, per room, every
node sees the same order.

What one reactor turn publishes goes to Redis as one PUBLISH (a first line naming the
node, then the encoded publications, one per line, in order; at most L{BATCH_BYTES} in
one): at a high rate of messages a node then sends, and every other node parses, one
Redis message per turn rather than one per publication. Redis sends each node its own
PUBLISHes too (every node listens on the channel): the first line lets it skip them
without decoding a publication.

While Redis is unreachable nothing is queued: cross-node publications are dropped and
counted (C{dropped}), so an outage costs memory nothing; room messages are in the
shared database all the same, and history shows them.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from chatserv import codec
from chatserv.bus import Delivery, LocalBus
from chatserv.interfaces import IEventBus

log = Logger()

CHANNEL = "chatserv:bus"
BATCH_BYTES = 256 * 1024  # a turn's publications beyond this go in another PUBLISH
HEADER = b"from "  # a batch's first line: "from NODE" (never JSON, which starts with "{")


@implementer(IEventBus)
class RedisBus(LocalBus):
    def __init__(self, node: str, clock: Any, channel: str = CHANNEL) -> None:
        super().__init__()
        self.node = node
        self._header = HEADER + node.encode("utf-8")  # (a node name is ASCII: see config)
        self.channel = channel
        self._clock = clock
        self._batch: list[bytes] = []  # encoded, waiting for the end of the turn
        self._batchBytes = 0
        self._flushCall: Any = None
        self.link: Any = None  # a RedisLink, set by attach()
        self.sent = 0  # publications handed to Redis
        self.received = 0  # publications from other nodes, applied here
        self.dropped = 0  # publications not carried: Redis was unreachable
        self.refused = 0  # messages from Redis that could not be decoded

    def attach(self, link: Any) -> None:
        self.link = link

    def stats(self) -> dict[str, Any]:
        """For the metrics: this node's name, whether Redis is reachable, the counters."""
        up = self.link is not None and self.link.up
        return {
            "node": self.node,
            "redis_up": int(up),
            "published": self.sent,
            "received": self.received,
            "dropped": self.dropped,
            "refused": self.refused,
        }

    def _carry(
        self, event: object, rooms: tuple[str, ...], users: tuple[str, ...], skip: str | None
    ) -> None:
        link = self.link
        if link is None or not link.up:
            self.dropped += 1
            return
        data = codec.encode(Delivery(event, rooms, users, skip, self.node))
        self.sent += 1
        self._batch.append(data)
        self._batchBytes += len(data) + 1
        if self._batchBytes >= BATCH_BYTES:
            self.flush()
        elif self._flushCall is None:
            self._flushCall = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Publish what waits for the end of the turn now."""
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        batch, self._batch, self._batchBytes = self._batch, [], 0
        if not batch:
            return
        if not self.link.up:
            self.dropped += len(batch)
            return
        d = self.link.commands.publish(self.channel, b"\n".join([self._header, *batch]))
        d.addErrback(self._notCarried, len(batch))

    def _notCarried(self, failure: Any, count: int) -> None:
        self.dropped += count  # the link logs the outage itself

    def messageFromRedis(self, channel: Any, data: Any) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        lines = data.split(b"\n")  # (JSON escapes every newline in a string)
        if lines[0].startswith(HEADER):
            if lines[0] == self._header:
                return  # this node's own: applied when published
            del lines[0]
        for line in lines:
            self._received(line)

    def _received(self, data: bytes) -> None:
        try:
            delivery = codec.decode(data)
            if not isinstance(delivery, Delivery):
                raise codec.CodecError(f"a {type(delivery).__name__}, not a Delivery")
        except codec.CodecError as e:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.error(
                    "cluster: {count} message(s) on the bus could not be read: {why}",
                    count=self.refused,
                    why=str(e)[:200],
                )
            return
        if delivery.node == self.node:
            return  # applied when it was published
        self.received += 1
        try:
            self._here(delivery.event, delivery.rooms, delivery.users, delivery.skip, delivery.node)
        except Exception:
            log.failure("cluster: applying a publication from {node} failed", node=delivery.node)
