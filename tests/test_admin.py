"""The administration methods on the service (used by the manhole console)."""

import pytest
from helpers import LineConnection, makeService, named

from chatserv.errors import NoSuchRoom, NoSuchUser
from chatserv.service import CONSOLE


@pytest.fixture
def chat():
    service, clock = makeService()
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    carol = named(service, "carol", port=5002)
    carol.send("/join dev\n")
    for conn in (alice, bob, carol):
        conn.output()
    return service, clock, alice, bob, carol


def test_summaries(chat):
    service, _, *_ = chat
    assert service.roomSummary() == [("dev", 1), ("lobby", 2)]
    users = {u["nick"]: u for u in service.userSummary()}
    assert set(users) == {"alice", "bob", "carol"}
    assert users["carol"]["room"] == "dev" and users["carol"]["address"] == "tcp 10.0.0.1:5002"
    assert [u["nick"] for u in service.userSummary("#lobby")] == ["alice", "bob"]
    with pytest.raises(NoSuchRoom):
        service.userSummary("nowhere")


def test_broadcasts(chat):
    service, _, alice, bob, carol = chat
    anonymous = LineConnection(service, port=6000)
    anonymous.output()
    assert service.broadcast(CONSOLE, "maintenance at noon") == 4
    for conn in (alice, bob, carol, anonymous):
        assert conn.lines() == ["[12:00:00] -!- maintenance at noon"]
    assert service.broadcastRoom(CONSOLE, "dev", "dev folks: hi\x1b[2J") == 1
    assert carol.lines() == ["[12:00:00] #dev -!- dev folks: hi^[[2J"]  # escaped like any text
    assert alice.lines() == []


def test_tell_user(chat):
    service, _, alice, bob, _ = chat
    service.tellUser(CONSOLE, "ALICE", "please stop")
    assert alice.lines() == ["[12:00:00] -!- please stop"] and bob.lines() == []
    with pytest.raises(NoSuchUser):
        service.tellUser(CONSOLE, "nobody", "hello?")


def test_kick(chat):
    service, _, alice, bob, _ = chat
    service.kick(CONSOLE, "bob", "spamming")
    assert bob.lines()[-1] == "[12:00:00] -!- disconnected: you were kicked: spamming"
    assert bob.transport.disconnecting
    assert alice.lines() == ["[12:00:00] #lobby <-- bob has left (kicked: spamming)"]
    bob.send("I am still here\n")  # arrives before the connection is gone: ignored
    assert alice.lines() == []
    bob.drop()
    assert alice.lines() == [] and service.findUser("bob") is None


def test_close_room(chat):
    service, _, alice, bob, carol = chat
    assert service.closeRoom(CONSOLE, "lobby", "cleanup") == 2
    for conn in (alice, bob):
        assert conn.lines()[-1] == "[12:00:00] -!- disconnected: #lobby was closed (cleanup)"
        assert conn.transport.disconnecting
    assert carol.lines() == [] and not carol.transport.disconnecting
    assert service.roomSummary() == [("dev", 1), ("lobby", 0)]


def test_reset(chat):
    service, _, alice, bob, carol = chat
    assert service.reset(CONSOLE) == 3
    for conn in (alice, bob, carol):
        assert conn.lines() == ["[12:00:00] -!- disconnected: server reset"]  # no leave spam
        assert conn.transport.disconnecting
    assert service.roomSummary() == [("lobby", 0)] and not service.users
    fresh = named(service, "alice", port=7000)  # the server carries on
    assert service.findUser("alice") is fresh.protocol.session.user


def test_stats(chat):
    service, clock, alice, *_ = chat
    service.startService()
    clock.advance(5)
    alice.send("hello\n/bogus\n")
    stats = service.stats()
    assert stats["connections"] == 3 and stats["connections_by_protocol"] == {"tcp": 3}
    assert (stats["users"], stats["rooms"]) == (3, 2)
    assert stats["messages"] == 1 and stats["errors"] == 1
    assert stats["requests"] >= 5 and stats["deliveries"] > 10 and stats["bytes_out"] > 500
    assert stats["uptime_seconds"] == 5


def _privileged(service, actor):
    """Every privileged operation of the service, done by C{actor}: (name, call)."""
    from twisted.internet import defer

    def later(method, *args):  # a coroutine made only when called
        return lambda: defer.ensureDeferred(method(actor, *args))

    return [
        ("kick", lambda: service.kickFromRoom(actor, "lobby", "carol", "out")),
        ("kick", lambda: service.kick(actor, "carol")),
        ("broadcast", lambda: service.broadcast(actor, "hi")),
        ("rbroadcast", lambda: service.broadcastRoom(actor, "lobby", "hi")),
        ("tell", lambda: service.tellUser(actor, "carol", "hi")),
        ("closeroom", lambda: service.closeRoom(actor, "dev")),
        ("reset", lambda: service.reset(actor)),
        ("ban", later(service.ban, "carol")),
        ("mute", later(service.mute, "carol")),
        ("unban", later(service.lift, "ban", "carol")),
        ("unmute", later(service.lift, "mute", "carol")),
        ("topic", later(service.setTopic, "lobby", "new")),
        ("promote", later(service.setAdmin, "carol", True)),
        ("demote", later(service.setAdmin, "carol", False)),
        ("createaccount", later(service.createAccount, "dave", "a long passphrase")),
        ("resetpassword", later(service.resetPassword, "carol", "a long passphrase")),
        ("deleteaccount", later(service.deleteAccount, "carol")),
        ("renameaccount", later(service.renameAccount, "carol", "carla")),
    ]


def _outcome(call) -> BaseException | None:
    """What a call ended in: None, or the error it raised or its Deferred failed with."""
    from helpers import resultOf

    try:
        result = call()
        if hasattr(result, "addBoth"):
            resultOf(result)
    except Exception as e:
        return e
    return None


def test_the_service_checks_every_privileged_operation_itself(chat):
    """Whatever wire asks (a command table, IRC's KICK or MODE +b, code), a user who is
    no admin is refused by the service, and nothing happens."""
    from chatserv.errors import NotPermitted

    service, _, alice, bob, carol = chat
    user = service.findUser("bob")
    for name, call in _privileged(service, user):
        refusal = _outcome(call)
        assert isinstance(refusal, NotPermitted), (name, refusal)
        assert str(refusal) == f"not permitted: /{name} is for admins", name
    assert len(service.users) == 3 and service.sanctions.active("ban", "carol", 0) is None
    assert service.rooms["lobby"].topic is None
    assert "hi" not in carol.output()


def test_the_console_may_do_all_of_it(chat):
    from chatserv.errors import ChatError, NotPermitted

    service, _, alice, bob, carol = chat
    for name, call in _privileged(service, CONSOLE):
        outcome = _outcome(call)
        # Done, or refused for what it is about (carol was kicked first, has no account):
        # never for who asked.
        assert outcome is None or isinstance(outcome, ChatError), (name, outcome)
        assert not isinstance(outcome, NotPermitted), (name, outcome)
    assert service.rooms["lobby"].topic == "new"
