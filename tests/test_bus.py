"""The bus: state every node must know follows it, and the publisher is one receiver
among others. Two services joined by an in-memory hub that carries each publication
encoded, as a cluster's transport does."""

from __future__ import annotations

import pytest
from helpers import FakeClient, endTurn, failureOf, makeService, resultOf
from twisted.internet import defer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chatserv import codec
from chatserv import events as ev
from chatserv.bus import Delivery, LocalBus
from chatserv.errors import (
    Banned,
    ClusterUnavailable,
    LoginFailed,
    LoginThrottled,
    Muted,
    NickTaken,
    NoSuchUser,
    RegisterThrottled,
)
from chatserv.interfaces import IDirectory, IEventBus
from chatserv.roster import NodeGone
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
                    receiver(got.event, got.rooms, got.users, got.skip, self.node)


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
    assert got == [
        ("one", "event", ("r",), ("u",), "s", None),
        ("two", "event", ("r",), ("u",), "s", None),
    ]


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


# -- the directory: one holder per nickname across nodes --------------------------------


@implementer(IDirectory)
class SharedDirectory:
    """The directory's contract, in memory, for the nodes of one test."""

    def __init__(self, names: dict[str, str], node: str) -> None:
        self.names, self.node = names, node  # key -> node, shared by every node's copy
        self.reachable = True
        self.localKeys = self.lost = None
        self.dead: set[str] = set()

    def claim(self, key):
        if not self.reachable:
            return defer.fail(ClusterUnavailable("the cluster cannot be reached"))
        holder = self.names.setdefault(key, self.node)
        return defer.succeed(None if holder == self.node else holder)

    def take(self, key):
        self.names[key] = self.node
        return defer.succeed(None)

    def release(self, key):
        if self.names.get(key) == self.node:
            del self.names[key]

    def serve(self, localKeys, lost):
        self.localKeys, self.lost = localKeys, lost

    def locate(self, key):
        return defer.succeed(self.names.get(key))

    def alive(self, node):
        return defer.succeed(node not in self.dead)


def clustered(**settings):
    hub, names = Hub(), {}
    services = []
    for node in ("a", "b"):
        directory = SharedDirectory(names, node)
        service, _ = makeService(bus=hub.bus(node), directory=directory, **settings)
        services.append(service)
    return names, services


def test_a_nickname_held_on_one_node_is_refused_on_the_other_and_freed_on_quit():
    names, (a, b) = clustered()
    alice, _ = connect(a, "alice")
    assert verifyObject(IDirectory, a.directory)
    other = b.connect(FakeClient(name="x"))
    assert isinstance(failureOf(b.setNick(other, "ALICE"), NickTaken).value, NickTaken)
    resultOf(a.setNick(alice, "alicia"))  # a rename lets the old name go
    assert names == {"alicia": "a"}
    resultOf(b.setNick(other, "alice"))
    a.disconnect(alice, "bye")
    assert names == {"alice": "b"}


def test_while_the_directory_is_unreachable_no_nickname_is_given_out():
    names, (a, b) = clustered()
    a.directory.reachable = False
    user = a.connect(FakeClient(name="x"))
    assert "cannot be reached" in str(failureOf(a.setNick(user, "zed"), ClusterUnavailable).value)
    assert names == {} and a.findUser("zed") is None


def test_a_name_given_out_elsewhere_during_an_outage_ends_the_local_session():
    names, (a, b) = clustered()
    erin, erins = connect(a, "erin")
    assert a.directory.localKeys() == ["erin"]
    a.directory.lost("erin", "b")  # what the directory reports after resynchronising
    assert erin not in a.sessions and "your nickname was given" in erins.closedWith


def test_a_login_takes_the_name_and_ends_the_accounts_session_on_the_other_node():
    names, (a, b) = clustered()
    owner, owners = connect(a, "frank")
    resultOf(defer.ensureDeferred(a.register(owner, "wonderland-42")))
    b._registered.add("frank")  # (b learns of accounts from the shared database)
    b.store = a.store
    again = b.connect(FakeClient(name="y"))
    resultOf(defer.ensureDeferred(b.login(again, "frank", "wonderland-42")))
    assert names == {"frank": "b"} and b.findUser("frank") is again
    assert owner not in a.sessions and "logged in from elsewhere" in owners.closedWith


def test_a_login_on_the_same_node_keeps_the_name_claimed():
    names, (a, b) = clustered()
    owner, owners = connect(a, "frank")
    resultOf(defer.ensureDeferred(a.register(owner, "wonderland-42")))
    again = a.connect(FakeClient(name="y"))
    resultOf(defer.ensureDeferred(a.login(again, "frank", "wonderland-42")))
    assert owner not in a.sessions and a.findUser("frank") is again
    assert names == {"frank": "a"}  # the ended session's release did not free it


def test_an_account_is_not_renamed_to_a_name_held_on_another_node():
    names, (a, b) = clustered()
    owner, _ = connect(a, "frank")
    resultOf(defer.ensureDeferred(a.register(owner, "wonderland-42")))
    connect(b, "grace")
    renaming = defer.ensureDeferred(a.renameAccount(CONSOLE, "frank", "grace"))
    assert "in use by someone online" in str(failureOf(renaming, NickTaken).value)
    resultOf(defer.ensureDeferred(a.renameAccount(CONSOLE, "frank", "francis")))
    assert names == {"francis": "a", "grace": "b"}


def test_failed_logins_and_registrations_are_counted_on_every_node():
    names, (a, b) = clustered(max_login_failures=2, max_registrations_per_ip=1)
    b.store = a.store  # one database
    owner, _ = connect(a, "frank")
    resultOf(defer.ensureDeferred(a.register(owner, "wonderland-42")))
    b._registered.add("frank")

    def guess(service, password):
        guesser = service.connect(FakeClient(name="mallory"))  # one address on both nodes
        return defer.ensureDeferred(service.login(guesser, "frank", password))

    failureOf(guess(a, "guess-one"), LoginFailed)
    failureOf(guess(b, "guess-two"), LoginFailed)
    # Two wrong guesses, one on each node: the third is refused on both.
    for service in (a, b):
        refused = failureOf(guess(service, "guess-three"), LoginThrottled)
        assert "too many failed logins" in str(refused.value)
    # A right password is given back on every node: it never counted.
    for service in (a, b):  # one guess forgiven
        service.clock.advance(service.settings.login_failure_decay)
    resultOf(guess(b, "wonderland-42"))
    failureOf(guess(a, "guess-four"), LoginFailed)  # (one more wrong: the limit again)
    failureOf(guess(b, "guess-five"), LoginThrottled)
    # Registrations from one address: one per decay, across the nodes.
    carol, _ = connect(b, "carol")
    dave = a.connect(FakeClient(name="carol"))
    resultOf(a.setNick(dave, "dave"))
    resultOf(defer.ensureDeferred(b.register(carol, "carols-secret")))
    failureOf(defer.ensureDeferred(a.register(dave, "daves-secret")), RegisterThrottled)
    # A single node tells no one.
    alone, _ = makeService(max_login_failures=2)
    sent = []
    alone.bus.subscribe(lambda event, *rest: sent.append(event))
    failureOf(defer.ensureDeferred(alone.login(alone.connect(FakeClient()), "x", "y")), LoginFailed)
    assert not [e for e in sent if type(e).__name__ == "Attempt"]


def test_a_private_message_reaches_its_recipient_on_the_other_node():
    names, (a, b) = clustered()
    alice, alices = connect(a, "alice")
    bob, bobs = connect(b, "bob")
    sent = resultOf(a.privmsg(alice, "BOB", "psst"))
    assert [(e.sender, e.to, e.text) for e in bobs.take(ev.PrivateMessage)] == [
        ("alice", "BOB", "psst")
    ]
    assert [e.outgoing for e in alices.take(ev.PrivateMessage)] == [True]
    assert sent.id > 0
    # Nobody anywhere: as on one node.
    assert isinstance(failureOf(a.privmsg(alice, "nobody", "hi?"), NoSuchUser).value, NoSuchUser)
    with_notice = a.privmsg(alice, "nobody", "hi?", notice=True)
    assert isinstance(failureOf(with_notice, NoSuchUser).value, NoSuchUser)


def test_a_message_to_an_account_offline_everywhere_waits_for_its_login_on_any_node():
    names, (a, b) = clustered()
    b.store = a.store  # one database, as a cluster has
    owner, _ = connect(a, "frank")
    resultOf(defer.ensureDeferred(a.register(owner, "wonderland-42")))
    a.disconnect(owner, "gone")
    b._registered.add("frank")  # (b learns of accounts from the shared database)
    alice, _ = connect(b, "alice")
    kept = resultOf(b.privmsg(alice, "frank", "while you were out"))
    assert kept.text == "while you were out" and names == {"alice": "b"}
    back = FakeClient(name="f")
    resultOf(defer.ensureDeferred(a.login(a.connect(back), "frank", "wonderland-42")))
    got = [(e.sender, e.text, e.offline) for e in back.take(ev.PrivateMessage)]
    assert got == [("alice", "while you were out", True)]


# -- moderation across nodes --------------------------------------------------------------


def test_a_kick_and_a_ban_on_one_node_end_the_session_on_the_other():
    names, (a, b) = clustered()
    mallory, mallorys = connect(b, "mallory")
    trudy, trudys = connect(b, "trudy")
    resultOf(a.kick(CONSOLE, "mallory", "spamming"))
    assert mallory not in b.sessions and "you were kicked: spamming" in mallorys.closedWith
    ban = resultOf(defer.ensureDeferred(a.ban(CONSOLE, "trudy", 3600, "again")))
    assert trudy not in b.sessions and "you are banned" in trudys.closedWith
    for service in (a, b):  # in force on both: the name cannot be taken back anywhere
        assert service.sanctions.active("ban", "trudy", service.now()) == ban
        user = service.connect(FakeClient(name="t"))
        assert isinstance(failureOf(service.setNick(user, "trudy"), Banned).value, Banned)
    assert isinstance(failureOf(a.kick(CONSOLE, "nobody"), NoSuchUser).value, NoSuchUser)
    resultOf(defer.ensureDeferred(a.lift(CONSOLE, "ban", "trudy")))
    assert b.sanctions.active("ban", "trudy", b.now()) is None


def test_a_ban_with_the_address_of_a_user_on_the_other_node_asks_that_node():
    names, (a, b) = clustered()
    trudy, trudys = connect(b, "trudy")
    ban = resultOf(defer.ensureDeferred(a.ban(CONSOLE, "trudy", 3600, "again", address=True)))
    assert ban.host == "fake-trudy"  # as node b knows it: node a never saw her connect
    assert trudy not in b.sessions and "you are banned" in trudys.closedWith
    for service in (a, b):  # a new connection from her address is refused on both
        newcomer = service.connect(FakeClient(name="trudy"))
        assert "this address is banned" in service.bannedAddress(newcomer)
    refused = defer.ensureDeferred(a.ban(CONSOLE, "nobody", address=True))
    assert "no address to ban" in str(failureOf(refused, NoSuchUser).value)
    # The node the directory names does not answer (cut off): no address, in time.
    victor, _ = connect(b, "victor")
    a.bus.hub.buses.remove(b.bus)
    asking = defer.ensureDeferred(a.ban(CONSOLE, "victor", address=True))
    a.clock.advance(a.settings.cluster_presence_timeout / 3)
    assert "no address to ban" in str(failureOf(asking, NoSuchUser).value)
    assert not a._asked


def test_a_mute_on_one_node_holds_on_the_other_until_lifted():
    names, (a, b) = clustered()
    bob, bobs = connect(b, "bob")
    resultOf(defer.ensureDeferred(a.mute(CONSOLE, "bob", 600)))
    assert any("console muted you" in e.text for e in bobs.take(ev.Notice))
    with pytest.raises(Muted):
        b.say(bob, "lobby", "let me speak")
    resultOf(defer.ensureDeferred(a.lift(CONSOLE, "mute", "bob")))
    assert any("console unmuted you" in e.text for e in bobs.take(ev.Notice))
    b.say(bob, "lobby", "thanks")


# -- who is where, across nodes ---------------------------------------------------------


def test_who_and_rooms_show_every_nodes_members_as_their_events_say():
    names, (a, b) = clustered()
    alice, alices = connect(a, "alice")
    bob, _ = connect(b, "bob")
    resultOf(b.join(bob, "dev"))
    assert a.who(alice, "lobby").nicks == ("alice", "bob")
    assert a.who(alice, "dev").nicks == ("bob",)  # a room only node b has
    assert dict(a.roomList().rooms) == {"dev": 1, "lobby": 2}
    resultOf(b.setNick(bob, "robert"))
    assert a.who(alice, "lobby").nicks == ("alice", "robert")
    b.part(bob, "dev")
    assert dict(a.roomList().rooms) == {"lobby": 2}
    # A node that joins later asks; the others answer with who they have.
    hub = a.bus.hub
    c, _ = makeService(bus=hub.bus("c"), directory=SharedDirectory(names, "c"))
    c.presence.askEveryone()
    carol, _ = connect(c, "carol")
    assert set(c.who(carol, "lobby").nicks) == {"alice", "robert", "carol"}


def test_who_whois_and_the_console_see_who_each_user_on_another_node_is():
    names, (a, b) = clustered()
    alice, _ = connect(a, "alice")
    bob = b.connect(FakeClient(name="bob"))
    bob.ident, bob.realname = "bobby", "Bob Builder"  # as IRC's USER gives them
    resultOf(b.setNick(bob, "bob"))
    endTurn(b)
    them = a.profile("bob")
    assert (them.nick, them.node, them.rooms, them.admin, them.away) == (
        "bob",
        "b",
        ("lobby",),
        False,
        None,
    )
    assert (them.source.user, them.source.host) == ("bobby", b.sourceOf(bob).host)
    assert them.source.realname == "Bob Builder"
    b.setAway(bob, "at lunch")
    b.setRealname(bob, "Robert Builder")
    resultOf(b.setNick(bob, "robert"))
    resultOf(b.join(bob, "dev"))
    assert a.profile("bob") is None
    them = a.profile("robert")
    assert (them.source.nick, them.source.user, them.source.realname) == (
        "robert",
        "bobby",
        "Robert Builder",
    )
    assert (them.away, them.rooms) == ("at lunch", ("lobby", "dev"))
    shown, members = a.roomProfiles("DEV")
    assert shown == "dev" and [m.nick for m in members] == ["robert"]
    shown, members = a.roomProfiles("lobby")
    assert [(m.nick, m.node) for m in members] == [("alice", None), ("robert", "b")]
    # The console lists everyone, saying where the others are.
    summary = {u["nick"]: u for u in a.userSummary()}
    assert summary["robert"]["node"] == "b" and summary["robert"]["address"] is None
    assert summary["alice"]["node"] is None
    assert [u["nick"] for u in a.userSummary("dev")] == ["robert"]
    # WHOIS asks the user's node, which knows more: when they connected, and who
    # someone in no room is (the roster here knows only those in rooms).
    b.clock.advance(60)
    signon = b.now()
    carol = b.connect(FakeClient(name="carol"))
    carol.ident, carol.realname = "cc", "Carol C"
    resultOf(b.setNick(carol, "carol"))
    endTurn(b)
    b.part(carol, "lobby")
    assert a.profile("carol") is None
    found = resultOf(defer.ensureDeferred(a.findProfile("Carol")))
    assert (found.nick, found.node, found.rooms, found.connectedAt) == ("carol", "b", (), signon)
    assert (found.source.user, found.source.realname) == ("cc", "Carol C")
    assert found.source.host == b.sourceOf(carol).host
    found = resultOf(defer.ensureDeferred(a.findProfile("robert")))
    assert (found.node, found.rooms, found.away) == ("b", ("lobby", "dev"), "at lunch")
    assert found.connectedAt == signon - 60
    assert resultOf(defer.ensureDeferred(a.findProfile("nobody"))) is None
    assert resultOf(defer.ensureDeferred(a.findProfile("alice"))).connectedAt is not None
    assert not a._asked
    # A node that does not answer in time: what the roster knows, or where they are.
    a.bus.hub.buses.remove(b.bus)
    asking = defer.ensureDeferred(a.findProfile("carol"))
    a.clock.advance(a.settings.cluster_presence_timeout / 3)
    found = resultOf(asking)
    assert (found.nick, found.node, found.source.host, found.connectedAt) == (
        "carol",
        "b",
        "*",
        None,
    )
    asking = defer.ensureDeferred(a.findProfile("robert"))
    a.clock.advance(a.settings.cluster_presence_timeout / 3)
    assert resultOf(asking).rooms == ("lobby", "dev")
    a.bus.hub.buses.append(b.bus)
    # A node that joins later learns all of it from the others' answers.
    c, _ = makeService(bus=a.bus.hub.bus("c"), directory=SharedDirectory(names, "c"))
    c.presence.askEveryone()
    them = c.profile("robert")
    assert (them.source.user, them.away, them.rooms) == ("bobby", "at lunch", ("lobby", "dev"))
    # Logging in to an account (an admin's, here) shows on the other nodes too, and
    # so does letting it go.
    b.store = a.store
    resultOf(defer.ensureDeferred(b.register(bob, "builders-42")))
    assert a.profile("robert").source.account == "robert"
    resultOf(defer.ensureDeferred(b.setAdmin(CONSOLE, "robert", True)))
    resultOf(b.setNick(bob, "bobby"))
    them = a.profile("bobby")
    assert (them.source.account, them.admin) == (None, False)
    resultOf(defer.ensureDeferred(b.login(bob, "robert", "builders-42")))
    them = a.profile("robert")
    assert (them.source.account, them.admin) == ("robert", True)
    assert a.who(alice, "lobby").admins == frozenset({"robert"})
    # Leaving the last room forgets them here (the directory still finds them).
    b.part(bob, "lobby"), b.part(bob, "dev")
    assert a.profile("robert") is None and "robert" not in a.presence.remote.users


def test_a_nodes_users_quit_where_they_were_when_it_is_gone():
    names, (a, b) = clustered()
    alice, alices = connect(a, "alice")
    bob, _ = connect(b, "bob")
    alices.take()
    a.directory.dead.add("b")  # b's heartbeat ended (SIGKILL)
    a.presence._checkNodes()
    quits = alices.take(ev.Quit)
    assert [(q.nick, q.reason) for q in quits] == [("bob", "node b is gone")]
    assert a.who(alice, "lobby").nicks == ("alice",)
    # A node that stops says so, and its users quit at once.
    carol, _ = connect(b, "carol")
    b.bus.publish(NodeGone("b"))
    assert [q.nick for q in alices.take(ev.Quit)] == ["carol"]


def test_a_dead_nodes_user_back_on_this_node_is_not_seen_to_quit():
    names, (a, b) = clustered()
    alice, alices = connect(a, "alice")
    connect(b, "gina")
    a.directory.dead.add("b")  # b is killed; its heartbeat expires, freeing her name
    del names["gina"]
    gina, _ = connect(a, "gina")  # she reconnects here before a has looked at b
    assert a.who(alice, "lobby").nicks == ("alice", "gina")  # once: this node's gina
    assert a.profile("gina").node is None
    alices.take()
    a.presence._checkNodes()
    assert alices.take(ev.Quit) == []  # the gina who quit is not the one who is here


def test_the_consoles_broadcast_close_room_and_reset_act_on_every_node():
    names, (a, b) = clustered()
    alice, alices = connect(a, "alice")
    bob, bobs = connect(b, "bob")
    carol, carols = connect(b, "carol")
    resultOf(b.join(carol, "dev"))
    assert a.broadcast(CONSOLE, "maintenance at noon") == 1  # (counted here)
    assert [e.text for e in bobs.take(ev.Notice)] == ["maintenance at noon"]
    resultOf(a.join(alice, "dev"))
    a.closeRoom(CONSOLE, "dev", "cleaning")
    assert carol not in b.sessions and "#dev was closed (cleaning)" in carols.closedWith
    a.reset(CONSOLE, "restarting")
    assert not a.sessions and not b.sessions and "restarting" in bobs.closedWith


def test_a_promotion_on_one_node_reaches_the_user_on_the_other():
    names, (a, b) = clustered()
    b.store = a.store  # one database
    frank = b.connect(FakeClient(name="f"))
    resultOf(b.setNick(frank, "frank"))
    endTurn(b)
    resultOf(defer.ensureDeferred(b.register(frank, "wonderland-42")))
    a._registered.add("frank")
    alice, alices = connect(a, "alice")
    resultOf(defer.ensureDeferred(a.setAdmin(CONSOLE, "frank", True)))
    assert frank.account.admin and b.isAdmin(frank)
    assert any("console made you an admin" in e.text for e in frank.client.take(ev.LoggedIn))
    changed = alices.take(ev.AdminChanged)  # alice, on node a, sees it in the lobby
    assert [(e.nick, e.admin) for e in changed] == [("frank", True)]


def test_a_node_that_comes_back_under_its_name_replaces_what_the_others_knew():
    names, (a, b) = clustered()
    alice, alices = connect(a, "alice")
    bob, _ = connect(b, "bob")
    alices.take()
    # b is killed and started again at once (its heartbeat never lapsed): a new b.
    hub = a.bus.hub
    hub.buses.remove(b.bus)
    again, _ = makeService(bus=hub.bus("b"), directory=SharedDirectory(names, "b"))
    again.presence.askEveryone()
    assert [(q.nick, q.reason) for q in alices.take(ev.Quit)] == [("bob", "node b is gone")]
    assert a.who(alice, "lobby").nicks == ("alice",)
    assert again.who(again.connect(FakeClient()), "lobby").nicks == ("alice",)


def test_the_redis_bus_reads_batches_skips_its_own_and_refuses_garbage():
    from twisted.internet.task import Clock

    from chatserv.cluster.bus import RedisBus

    bus = RedisBus("a", Clock())
    got = []
    bus.subscribe(lambda *args: got.append(args))
    joined = ev.Joined("lobby", "bob", 1.0)
    mine = codec.encode(Delivery(ev.Notice("x", 1.0), node="a"))
    theirs = codec.encode(Delivery(joined, ("lobby",), node="b"))
    bus.messageFromRedis("chatserv:bus", b"\n".join([mine, theirs, b"{not json", theirs]))
    assert got == [(joined, ("lobby",), (), None, "b")] * 2  # its own skipped, in order
    assert (bus.received, bus.refused) == (2, 1)
    bus.messageFromRedis("chatserv:bus", codec.encode(ev.Notice("not a delivery", 1.0)))
    assert bus.refused == 2 and len(got) == 2
    # A batch as a node publishes it: its first line names the node. This node's own
    # batches come back from Redis too, and are skipped unread.
    bus.messageFromRedis("chatserv:bus", b"from a\n{not json\n" + mine)
    assert bus.refused == 2 and len(got) == 2
    bus.messageFromRedis("chatserv:bus", b"from b\n" + theirs)
    assert len(got) == 3 and bus.received == 3


def test_the_redis_bus_publishes_a_turns_publications_as_one_batch_naming_the_node():
    from twisted.internet.task import Clock

    from chatserv.cluster.bus import RedisBus

    published = []

    class Commands:
        def publish(self, channel, data):
            published.append((channel, data))
            return defer.succeed(1)

    class Link:
        up = True
        commands = Commands()

    clock = Clock()
    bus = RedisBus("node-a", clock)
    bus.attach(Link())
    for text in ("one", "two"):
        bus.publish(ev.Notice(text, 1.0), users=("bob",))
    assert published == []  # at the end of the turn
    clock.advance(0)
    [(channel, data)] = published
    header, *lines = data.split(b"\n")
    assert channel == "chatserv:bus" and header == b"from node-a"
    assert [codec.decode(line).event.text for line in lines] == ["one", "two"]
    receiver = RedisBus("node-b", clock)
    got = []
    receiver.subscribe(lambda *args: got.append(args[0].text))
    receiver.messageFromRedis(channel, data)
    assert got == ["one", "two"]


def test_after_an_outage_the_directory_lets_go_of_everything_then_claims_its_users():
    from twisted.internet.task import Clock

    from chatserv.cluster import directory as redis_directory

    sent = []

    class Commands:
        def eval(self, script, keys, args):
            sent.append((script, keys))
            return defer.succeed(None)

        def execute_command(self, *words):
            sent.append(words[:2])
            return defer.succeed(None)

    class Link:
        up, onUp, commands = True, [], Commands()

    clock = Clock()
    found = redis_directory.RedisDirectory(Link(), "a", clock, 15.0)
    found.serve(lambda: ["alice", "bob"], lambda key, holder: None)
    resultOf(found.start())
    del sent[:]
    for callback in Link.onUp:
        callback()  # Redis is back
    scripts = [entry[0] for entry in sent if len(entry) == 2 and isinstance(entry[1], list)]
    assert scripts == [redis_directory._RESET, redis_directory._CLAIM, redis_directory._CLAIM]
    found.stop()
