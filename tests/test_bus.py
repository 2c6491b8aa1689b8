"""The bus: state every node must know follows it, and the publisher is one receiver
among others. Two services joined by an in-memory hub that carries each publication
encoded, as a cluster's transport does."""

from __future__ import annotations

from helpers import FakeClient, endTurn, makeService, resultOf
from twisted.internet import defer
from zope.interface.verify import verifyObject

from chatserv import codec
from chatserv import events as ev
from chatserv.bus import Delivery, LocalBus
from chatserv.interfaces import IEventBus
from chatserv.service import CONSOLE


class Hub:
    """Carries every publication, as bytes, to the receivers of every bus on it."""

    def __init__(self) -> None:
        self.buses: list[HubBus] = []
        self.carried: list[bytes] = []

    def bus(self, node: str) -> HubBus:
        bus = HubBus(self, node)
        self.buses.append(bus)
        return bus


class HubBus(LocalBus):
    def __init__(self, hub: Hub, node: str) -> None:
        super().__init__()
        self.hub, self.node = hub, node

    def publish(self, event, rooms=(), users=(), skip=None) -> None:
        super().publish(event, rooms, users, skip)  # here first, as a real bus does
        data = codec.encode(Delivery(event, tuple(rooms), tuple(users), skip, self.node))
        self.hub.carried.append(data)
        for other in self.hub.buses:
            if other is not self:
                got = codec.decode(data)
                for receiver in other._receivers:
                    receiver(got.event, got.rooms, got.users, got.skip)


def twoNodes(**settings):
    hub = Hub()
    a, _ = makeService(bus=hub.bus("a"), **settings)
    b, _ = makeService(bus=hub.bus("b"), **settings)
    return hub, a, b


def connect(service, nick):
    client = FakeClient(name=nick)
    user = service.connect(client)
    resultOf(service.setNick(user, nick))
    endTurn(service)
    client.take()
    return user, client


def test_the_local_bus_is_an_event_bus_and_calls_every_receiver():
    bus = LocalBus()
    got: list = []
    bus.subscribe(lambda *args: got.append(("one", *args)))
    bus.subscribe(lambda *args: got.append(("two", *args)))
    bus.publish("event", rooms=["r"], users=iter(["u"]), skip="s")
    assert verifyObject(IEventBus, bus)
    assert got == [("one", "event", ("r",), ("u",), "s"), ("two", "event", ("r",), ("u",), "s")]


def test_a_room_message_reaches_the_rooms_members_on_the_other_node_once():
    hub, a, b = twoNodes()
    alice, _ = connect(a, "alice")
    bob, bobs = connect(b, "bob")
    carol, carols = connect(b, "carol")
    b.part(carol, "lobby")
    carols.take(), bobs.take()
    said = a.say(alice, "lobby", "hello from a")
    assert bobs.take() == [said]  # once, as it was said (its id and source with it)
    assert carols.take() == []  # not in the lobby
    assert len(hub.carried) >= 1


def test_what_a_message_changes_is_applied_on_every_node_the_senders_included():
    hub, a, b = twoNodes(history_on_join=5)
    alice, _ = connect(a, "alice")
    bob, _ = connect(b, "bob")  # b's lobby is loaded: its recent history is kept
    said = [a.say(alice, "lobby", f"m{i}").id for i in range(3)]
    for service in (a, b):
        recent = service.rooms["lobby"].recent
        assert [m.id for m in recent] == said and all(m.history for m in recent)
        assert "lobby" in service._spoken
    daves = FakeClient(name="dave")  # joins b's lobby: replayed from b's own buffer
    resultOf(b.setNick(b.connect(daves), "dave"))
    endTurn(b)
    replayed = [e.id for e in daves.take() if isinstance(e, ev.RoomMessage) and e.history]
    assert replayed == said


def test_a_topic_set_on_one_node_holds_on_the_other():
    hub, a, b = twoNodes()
    erin, erins = connect(b, "erin")
    # A room only a has, so far.
    resultOf(defer.ensureDeferred(a.setTopic(CONSOLE, "plans", "the roadmap")))
    topic = b.topicOf("plans")
    assert (topic.room, topic.topic, topic.by) == ("plans", "the roadmap", "console")
    assert ("plans", 0) in b.roomList().rooms  # permanent: listed while empty
    resultOf(b.join(erin, "#plans"))
    shown = [e for e in erins.take() if isinstance(e, ev.Topic)]
    assert [t.topic for t in shown] == ["the roadmap"]
