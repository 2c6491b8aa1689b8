"""Prometheus metrics: the lag probe, and a real scrape after real chat traffic."""

from __future__ import annotations

import pytest_twisted
from clients import connectLine, eventually
from prometheus_client.parser import text_string_to_metric_families
from test_tap import parse
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from chatserv.config import Settings
from chatserv.metrics import LagMonitor, metricsSite
from chatserv.protocols.line import LineChatFactory
from chatserv.service import ChatService

LOCAL = "tcp:0:interface=127.0.0.1"


def test_lag_monitor_measures_how_late_the_timer_runs():
    clock = Clock()
    lag = LagMonitor(clock)
    lag.startService()
    clock.advance(1.0)
    assert lag.last == 0.0
    clock.advance(3.5)  # the reactor was busy: the probe due at 2.0 runs at 4.5
    assert lag.last == 2.5
    assert lag.takeWorst() == 2.5
    clock.advance(1.0)
    assert lag.last == 0.0 and lag.takeWorst() == 2.5  # last value at the previous take
    assert lag.takeWorst() == 0.0
    lag.stopService()
    assert not clock.getDelayedCalls()


def test_metrics_listen_on_localhost_by_default():
    assert parse("--metrics", "9100")["metrics"] == "tcp:9100:interface=127.0.0.1:backlog=1024"
    assert parse("--metrics", "tcp:9100")["metrics"] == "tcp:9100"  # as given
    assert parse()["metrics"] is None  # no metrics unless asked for


async def scrape(port: int) -> dict:
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    body = (await readBody(response)).decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            key = sample.name + "".join(f"[{v}]" for v in sample.labels.values())
            samples[key] = sample.value
    return samples


@pytest_twisted.ensureDeferred
async def test_scrape_after_chat_traffic():
    from twisted.internet import reactor

    chat = ChatService(Settings(rate_burst=3, flood_max_dropped=1000), clock=reactor)
    chat.startService()
    lag = LagMonitor(reactor)
    lag.startService()
    chatPort = await serverFromString(reactor, LOCAL).listen(LineChatFactory(chat))
    webPort = await serverFromString(reactor, LOCAL).listen(metricsSite(chat, lag))
    alice = await connectLine(chatPort.getHost().port)
    bob = await connectLine(chatPort.getHost().port)
    alice.say("alice")
    bob.say("bob")
    await eventually(lambda: len(chat.users) == 2)
    alice.say("hello bob")
    await bob.until("<alice> hello bob")
    bob.say("/nosuchcommand")
    await bob.until("unknown command")
    alice.transport.write(b"x\n" * 10)  # past the burst of 3: rate limited
    await alice.until("slow down")

    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        samples = await scrape(webPort.getHost().port)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert [formatEvent(e) for e in logged if "GET /metrics" in formatEvent(e)] == []
    assert samples["chatserv_connections[tcp]"] == 2
    assert samples["chatserv_connections[ws]"] == 0  # every kind, none connected too
    assert samples["chatserv_users"] == 2 and samples["chatserv_rooms"] == 1
    assert samples["chatserv_messages_total"] >= 1
    assert samples["chatserv_deliveries_total"] >= 8  # greetings, joins, who, the message
    assert samples["chatserv_bytes_out_total"] > 300
    assert samples["chatserv_errors_total"] >= 1
    assert samples["chatserv_rate_limited_total"] >= 1
    assert samples["chatserv_refused_connections_total"] == 0
    assert samples["chatserv_event_loop_lag_seconds"] >= 0
    assert "chatserv_event_loop_lag_max_seconds" in samples
    assert samples["chatserv_uptime_seconds"] >= 0
    assert samples["process_resident_memory_bytes"] > 0

    await alice.hangUp()
    await bob.hangUp()
    await eventually(lambda: not chat.sessions)
    samples = await scrape(webPort.getHost().port)
    assert samples["chatserv_users"] == 0 and samples["chatserv_connections[tcp]"] == 0
    await chatPort.stopListening()
    await webPort.stopListening()
    lag.stopService()
    await chat.stopService()
    chat.stopService()


def test_a_cluster_nodes_metrics_name_it_and_count_its_bus():
    from helpers import FakeClient, endTurn, makeService

    from chatserv.cluster.bus import RedisBus
    from chatserv.metrics import ChatCollector

    bus = RedisBus("chat-7", Clock())
    chat, _ = makeService(bus=bus)
    user = chat.connect(FakeClient(name="a"))
    chat.setNick(user, "alice")
    endTurn(chat)
    chat.say(user, "lobby", "while Redis is away")  # not carried: no link yet
    got = {f.name: f for f in ChatCollector(chat, LagMonitor(Clock())).collect()}
    assert [s.labels for s in got["chatserv_cluster_node_info"].samples] == [{"node": "chat-7"}]
    assert got["chatserv_cluster_redis_up"].samples[0].value == 0
    dropped = got["chatserv_cluster_dropped"].samples[0].value
    assert dropped == bus.dropped >= 2  # the join and the message
    assert got["chatserv_cluster_published"].samples[0].value == 0
    single, _ = makeService()
    names = {f.name for f in ChatCollector(single, LagMonitor(Clock())).collect()}
    assert not any(name.startswith("chatserv_cluster") for name in names)


def test_every_metric_of_a_cluster_node_carries_its_name():
    from helpers import makeService
    from prometheus_client import generate_latest
    from test_bus import SharedDirectory

    from chatserv.metrics import makeRegistry

    def scraped(chat):
        text = generate_latest(makeRegistry(chat, LagMonitor(Clock()))).decode()
        return [s for f in text_string_to_metric_families(text) for s in f.samples]

    node, _ = makeService(directory=SharedDirectory({}, "chat-7"))
    samples = scraped(node)
    names = {s.name for s in samples}
    assert {"chatserv_users", "chatserv_connections", "process_open_fds"} <= names
    assert all(s.labels.get("node") == "chat-7" for s in samples)
    protocols = {s.labels["protocol"] for s in samples if s.name == "chatserv_connections"}
    assert "tcp" in protocols  # the labels a metric had are kept
    single, _ = makeService()
    assert not any("node" in s.labels for s in scraped(single))
