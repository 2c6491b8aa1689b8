"""Prometheus metrics: C{--metrics PORT} serves them at C{/metrics}.

Nothing is counted here: a collector reads the service's counters and gauges when
Prometheus scrapes, so the hot paths pay for plain integer increments only. The one
thing measured here is event-loop lag: how late a timer that should fire every second
actually fires, which is how long the reactor was busy with something else.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.application.service import MultiService, Service
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import Site

from chatserv.config import LISTENER_KINDS
from chatserv.listening import listener
from chatserv.service import ChatService

LAG_INTERVAL = 1.0  # seconds between event-loop lag probes

# Counter name -> help text, for every counter of chatserv.stats.Counters.
_COUNTERS = {
    "requests": "Lines or frames accepted for processing.",
    "messages": "Room and private messages sent by users (messages in).",
    "deliveries": "Events delivered to connections, one per recipient (messages out).",
    "bytes_out": "Bytes written to client connections.",
    "errors": "Error replies sent to clients.",
    "rate_limited": "Requests dropped by flood control.",
    "floods": "Connections ended for flooding.",
    "slow_readers": "Connections dropped for not reading their output.",
    "refused_connections": "Connections refused by the connection limits.",
}


class LagMonitor(Service):
    """Measures how late the reactor runs a timer due every L{LAG_INTERVAL} seconds."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.last = 0.0  # seconds late, at the latest probe
        self.worst = 0.0  # the worst since the last scrape
        self._expected: float | None = None
        self._loop = LoopingCall(self._probe)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._expected = self.clock.seconds() + LAG_INTERVAL
        self._loop.start(LAG_INTERVAL, now=False)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _probe(self) -> None:
        now = self.clock.seconds()
        self.last = max(0.0, now - self._expected)
        self.worst = max(self.worst, self.last)
        self._expected = now + LAG_INTERVAL

    def takeWorst(self) -> float:
        worst, self.worst = self.worst, self.last
        return worst


class ChatCollector:
    """Reads the service's state at scrape time."""

    def __init__(self, chat: ChatService, lag: LagMonitor) -> None:
        self.chat = chat
        self.lag = lag

    def collect(self):
        stats = self.chat.stats()
        connections = GaugeMetricFamily(
            "chatserv_connections", "Open client connections.", labels=["protocol"]
        )
        # Every kind of listener, at 0 too: a series that vanishes cannot be graphed.
        counts = {kind: 0 for kind in LISTENER_KINDS} | stats["connections_by_protocol"]
        for protocol, count in sorted(counts.items()):
            connections.add_metric([protocol], count)
        yield connections
        yield GaugeMetricFamily("chatserv_users", "Users with a nickname.", value=stats["users"])
        yield GaugeMetricFamily("chatserv_rooms", "Rooms that exist.", value=stats["rooms"])
        for name, text in _COUNTERS.items():
            yield CounterMetricFamily(f"chatserv_{name}", text, value=stats[name])
        yield GaugeMetricFamily(
            "chatserv_event_loop_lag_seconds",
            f"How late a timer due every {LAG_INTERVAL:g} s last ran.",
            value=self.lag.last,
        )
        yield GaugeMetricFamily(
            "chatserv_event_loop_lag_max_seconds",
            "The worst event-loop lag since the previous scrape.",
            value=self.lag.takeWorst(),
        )
        store = self.chat.store
        yield GaugeMetricFamily(
            "chatserv_database_ok",
            "1 while nothing is known to be wrong with the database; 0 while commits fail,"
            " the SQLite file is missing, replaced or read-only, or calls time out.",
            value=0 if getattr(store, "problem", None) else 1,
        )
        yield CounterMetricFamily(
            "chatserv_database_unavailable",
            "Requests refused because the database did not answer within db_timeout, or failed.",
            value=getattr(store, "unavailable", 0),
        )
        yield GaugeMetricFamily(
            "chatserv_uptime_seconds",
            "Seconds since the service started.",
            value=stats["uptime_seconds"],
        )
        yield from self._cluster()

    def _cluster(self):
        """A cluster's node: its name (as a label of an info metric, to join on) and bus."""
        bus = getattr(self.chat.bus, "stats", None)
        if bus is None:
            return
        bus = bus()
        info = GaugeMetricFamily(
            "chatserv_cluster_node_info", "This node of a cluster, by name.", labels=["node"]
        )
        info.add_metric([bus["node"]], 1)
        yield info
        yield GaugeMetricFamily(
            "chatserv_cluster_redis_up", "1 while Redis is reachable.", value=bus["redis_up"]
        )
        for name, text in (
            ("published", "Publications this node sent to the other nodes."),
            ("received", "Publications from other nodes applied here."),
            ("dropped", "Publications not carried to the other nodes (Redis unreachable)."),
            ("refused", "Messages on the bus that could not be read."),
        ):
            yield CounterMetricFamily(f"chatserv_cluster_{name}", text, value=bus[name])


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class NodeLabelled:
    """Every sample of C{collectors}, labelled C{node="NAME"}: a cluster's nodes are
    told apart in one Prometheus, whatever its scrape configuration adds."""

    def __init__(self, collectors: list, node: str) -> None:
        self.collectors = collectors
        self.node = node

    def collect(self):
        for collector in self.collectors:
            for family in collector.collect():
                family.samples = [
                    sample._replace(labels={**sample.labels, "node": self.node})
                    for sample in family.samples
                ]
                yield family


def makeRegistry(chat: ChatService, lag: LagMonitor) -> CollectorRegistry:
    """A registry of its own (not the global one), so several services can coexist."""
    registry = CollectorRegistry()
    collectors = [ChatCollector(chat, lag), ProcessCollector(registry=None)]  # (/proc's)
    node = chat.directory.node if chat.directory is not None else None
    if node is None:
        for collector in collectors:
            registry.register(collector)
    else:
        registry.register(NodeLabelled(collectors, node))
    return registry


class _ScrapeSite(Site):
    noisy = False

    def log(self, request) -> None:
        # No access line per scrape: Prometheus asks every few seconds, forever.
        pass


def metricsSite(chat: ChatService, lag: LagMonitor) -> Site:
    root = Resource()
    root.putChild(b"metrics", MetricsResource(makeRegistry(chat, lag)))
    return _ScrapeSite(root)


def makeMetricsService(reactor, chat: ChatService, endpoint, description: str) -> MultiService:
    """The lag monitor and the HTTP listener serving C{/metrics} on C{endpoint}."""
    top = MultiService()
    lag = LagMonitor(reactor)
    lag.setServiceParent(top)
    listener(endpoint, description, metricsSite(chat, lag), "metrics scrapes").setServiceParent(top)
    return top
