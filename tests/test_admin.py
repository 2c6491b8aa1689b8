"""The administration methods on the service (used by the manhole console)."""

import pytest
from helpers import LineConnection, makeService, named

from chatserv.errors import NoSuchRoom, NoSuchUser


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
    assert service.broadcast("maintenance at noon") == 4
    for conn in (alice, bob, carol, anonymous):
        assert conn.lines() == ["[12:00:00] -!- maintenance at noon"]
    assert service.broadcastRoom("dev", "dev folks: hi\x1b[2J") == 1
    assert carol.lines() == ["[12:00:00] #dev -!- dev folks: hi^[[2J"]  # escaped like any text
    assert alice.lines() == []


def test_tell_user(chat):
    service, _, alice, bob, _ = chat
    service.tellUser("ALICE", "please stop")
    assert alice.lines() == ["[12:00:00] -!- please stop"] and bob.lines() == []
    with pytest.raises(NoSuchUser):
        service.tellUser("nobody", "hello?")


def test_kick(chat):
    service, _, alice, bob, _ = chat
    service.kick("bob", "spamming")
    assert bob.lines()[-1] == "[12:00:00] -!- disconnected: you were kicked: spamming"
    assert bob.transport.disconnecting
    assert alice.lines() == ["[12:00:00] #lobby <-- bob has left (kicked: spamming)"]
    bob.send("I am still here\n")  # arrives before the connection is gone: ignored
    assert alice.lines() == []
    bob.drop()
    assert alice.lines() == [] and service.findUser("bob") is None


def test_close_room(chat):
    service, _, alice, bob, carol = chat
    assert service.closeRoom("lobby", "cleanup") == 2
    for conn in (alice, bob):
        assert conn.lines()[-1] == "[12:00:00] -!- disconnected: #lobby was closed (cleanup)"
        assert conn.transport.disconnecting
    assert carol.lines() == [] and not carol.transport.disconnecting
    assert service.roomSummary() == [("dev", 1), ("lobby", 0)]


def test_reset(chat):
    service, _, alice, bob, carol = chat
    assert service.reset() == 3
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
