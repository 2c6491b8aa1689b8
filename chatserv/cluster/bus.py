"""The cluster's bus: one Redis channel that every node publishes to and listens on.

A publication goes to this node's receivers at once (so a node's own users never wait
on Redis, and a sender's messages stay in order), then, encoded (L{chatserv.codec}), to
the channel; each other node decodes it and hands it to its receivers, which apply and
deliver it as if it had been published there. A node ignores what it published itself.
Redis delivers one connection's publications in order: per sender, per room, every
node sees the same order.

While Redis is unreachable nothing is queued: cross-node publications are dropped and
counted (C{dropped}), so an outage costs memory nothing; room messages are in the
shared database all the same, and history shows them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from chatserv import codec
from chatserv.bus import Delivery, LocalBus
from chatserv.interfaces import IEventBus

log = Logger()

CHANNEL = "chatserv:bus"


@implementer(IEventBus)
class RedisBus(LocalBus):
    def __init__(self, node: str, channel: str = CHANNEL) -> None:
        super().__init__()
        self.node = node
        self.channel = channel
        self.link: Any = None  # a RedisLink, set by attach()
        self.sent = 0  # publications handed to Redis
        self.received = 0  # publications from other nodes, applied here
        self.dropped = 0  # publications not carried: Redis was unreachable
        self.refused = 0  # messages from Redis that could not be decoded

    def attach(self, link: Any) -> None:
        self.link = link

    def publish(
        self,
        event: object,
        rooms: Iterable[str] = (),
        users: Iterable[str] = (),
        skip: str | None = None,
    ) -> None:
        rooms, users = tuple(rooms), tuple(users)
        for receiver in self._receivers:
            receiver(event, rooms, users, skip)
        link = self.link
        if link is None or not link.up:
            self.dropped += 1
            return
        data = codec.encode(Delivery(event, rooms, users, skip, self.node))
        self.sent += 1
        d = link.commands.publish(self.channel, data)
        d.addErrback(self._notCarried)

    def _notCarried(self, failure: Any) -> None:
        self.dropped += 1  # the link logs the outage itself

    def messageFromRedis(self, channel: Any, data: Any) -> None:
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
        for receiver in self._receivers:
            try:
                receiver(delivery.event, delivery.rooms, delivery.users, delivery.skip)
            except Exception:
                log.failure(
                    "cluster: applying a publication from {node} failed", node=delivery.node
                )
