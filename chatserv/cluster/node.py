"""One node's membership of a cluster, as a Twisted service: it connects to Redis when
started, and on stopping releases this node's nicknames and heartbeat, then hangs up."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from chatserv.cluster.address import parseRedisURL
from chatserv.cluster.bus import RedisBus
from chatserv.cluster.directory import RedisDirectory
from chatserv.cluster.link import RedisLink, clientTLS
from chatserv.config import Settings
from chatserv.roster import NodeGone

log = Logger()


class ClusterNode(Service):
    """The bus and the directory of node C{name}; give both to the L{ChatService}."""

    name = "cluster"

    def __init__(self, settings: Settings, nodeName: str, clock: Any) -> None:
        self.nodeName = nodeName
        address = parseRedisURL(settings.cluster, settings.cluster_password or None)
        self.bus = RedisBus(nodeName, clock)
        tls = None
        if address.tls:
            tls = clientTLS(address.host, settings.cluster_tls_ca, settings.cluster_tls_cert,
                            settings.cluster_tls_key)  # fmt: skip
        self.link = RedisLink(address, (self.bus.channel,), self.bus.messageFromRedis, clock, tls)
        self.bus.attach(self.link)
        self.directory = RedisDirectory(
            self.link, nodeName, clock, settings.cluster_presence_timeout
        )

    def startService(self) -> None:
        super().startService()
        log.info("cluster: node {node} joining through {address}", node=self.nodeName,
                 address=str(self.link.address))  # fmt: skip
        d = self.link.start()
        d.addCallback(lambda _: self.directory.start())
        d.addErrback(log.failure, "cluster: starting the directory failed")

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        self.bus.publish(NodeGone(self.nodeName))  # the others forget this node's users
        self.bus.flush()  # with the quits of the users the chat service just let go
        d = self.directory.stop()
        d.addBoth(lambda _: self.link.stop())
        d.addErrback(lambda failure: None)
        return d
