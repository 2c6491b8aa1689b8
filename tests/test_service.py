import pytest
from helpers import FakeClient, RecordingWire, endTurn, failureOf, makeService, resultOf
from twisted.internet import defer

from chatserv import events as ev
from chatserv.errors import (
    BadName,
    EmptyText,
    NickRequired,
    NickTaken,
    NoSuchRoom,
    NoSuchUser,
    NotInRoom,
    UsageError,
)
from chatserv.store import Span


def connect(service, nick=None, **kw):
    client = FakeClient(name=nick or "anon", **kw)
    user = service.connect(client)
    if nick is not None:
        service.setNick(user, nick)
        endTurn(service)  # a first nickname joins the default room at the turn's end
        client.take()
    return user, client


def failure(d):
    """The exception a fired Deferred failed with."""
    failures = []
    d.addErrback(failures.append)
    assert failures, "expected the Deferred to fail"
    return failures[0].value


def test_first_nick_welcomes_and_joins_default_room():
    service, _ = makeService()
    user, client = connect(service)
    service.setNick(user, "alice")
    (welcome,) = client.take()  # the default room at the end of the turn
    assert isinstance(welcome, ev.Welcome) and welcome.nick == "alice"
    endTurn(service)
    joined, who = client.take()
    assert joined == ev.Joined("lobby", "alice", joined.ts)
    assert who.nicks == ("alice",)
    assert list(user.rooms.values()) == [service.rooms["lobby"]]


def test_a_first_nick_sent_with_a_join_does_not_pass_through_the_default_room():
    service, _ = makeService()
    watcher, seen = connect(service, "watcher")
    user, client = connect(service)
    service.setNick(user, "alice")
    resultOf(service.join(user, "dev"))  # in the same turn: the client sent both at once
    endTurn(service)
    assert list(user.rooms) == ["dev"]
    assert seen.take() == []  # the lobby saw nobody come and go
    # A join refused in that turn leaves the default room to be joined.
    bob, _ = connect(service)
    service.setNick(bob, "bob")
    assert isinstance(failure(service.join(bob, "bad room!")), BadName)
    endTurn(service)
    assert list(bob.rooms) == ["lobby"]


def test_nick_taken_case_insensitively():
    service, _ = makeService()
    connect(service, "Alice")
    user, _ = connect(service)
    assert isinstance(failure(service.setNick(user, "aLICE")), NickTaken)
    assert user.nick is None


def test_invalid_nick_is_refused():
    service, _ = makeService()
    user, _ = connect(service)
    assert isinstance(failure(service.setNick(user, "9x")), BadName)


def test_rename_notifies_room_once_and_frees_old_nick():
    service, _ = makeService()
    alice, aliceClient = connect(service, "alice")
    bob, bobClient = connect(service, "bob")
    aliceClient.take()
    service.setNick(alice, "alicia")
    assert aliceClient.take() == [ev.Renamed("alice", "alicia", bobClient.received[0].ts)]
    assert bobClient.take(ev.Renamed)[0].new == "alicia"
    assert service.findUser("ALICIA") is alice and service.findUser("alice") is None
    assert list(service.rooms["lobby"].members) == ["alicia", "bob"]  # join order kept
    carol, _ = connect(service, "alice")  # the old nick is free again
    assert carol.nick == "alice"


def test_case_only_rename_is_allowed():
    service, _ = makeService()
    alice, _ = connect(service, "alice")
    service.setNick(alice, "Alice")
    assert alice.nick == "Alice" and service.findUser("alice") is alice


def test_message_fans_out_to_room_without_echo_and_renders_once_per_wire():
    service, _ = makeService()
    shared = RecordingWire()
    alice, a = connect(service, "alice", wire=shared)
    bob, b = connect(service, "bob", wire=shared)
    carol, c = connect(service, "carol", wire=shared)
    service.join(carol, "elsewhere")
    service.part(carol, "lobby")
    for client in (a, b, c):
        client.take()
    shared.renders = 0
    event = service.say(alice, "lobby", "hello")
    assert a.take() == []  # line clients get no echo
    assert b.take() == [event]
    assert c.take() == []  # another room
    assert shared.renders == 1


def test_echo_clients_get_their_own_messages():
    service, _ = makeService()
    alice, a = connect(service, "alice", echo=True)
    event = service.say(alice, "lobby", "hi")
    assert a.take() == [event] and event.id == service.ids.last


def test_message_ids_increase():
    service, _ = makeService()
    alice, _ = connect(service, "alice")
    ids = [service.say(alice, "lobby", str(i)).id for i in range(3)]
    assert ids == sorted(set(ids)) and ids[-1] == service.ids.last


def test_text_is_sanitised_and_blank_refused():
    service, _ = makeService()
    alice, _ = connect(service, "alice")
    assert service.say(alice, "lobby", " \x1b[2Jboo ").text == "^[[2Jboo"
    with pytest.raises(EmptyText):
        service.say(alice, "lobby", "   ")


def test_private_message_and_copy_for_sender():
    service, _ = makeService()
    alice, a = connect(service, "alice")
    bob, b = connect(service, "bob")
    a.take()
    service.privmsg(alice, "BOB", "psst")
    (received,) = b.take()
    (copy,) = a.take()
    assert (received.sender, received.to, received.text, received.outgoing) == (
        "alice",
        "bob",
        "psst",
        False,
    )
    assert copy.outgoing and copy.id == received.id
    assert isinstance(failure(service.privmsg(alice, "nobody", "hello?")), NoSuchUser)


def test_join_switch_rooms_and_empty_rooms_vanish():
    service, _ = makeService()
    alice, a = connect(service, "alice")
    service.join(alice, "#Dev")
    assert set(alice.rooms) == {"lobby", "dev"} and service.rooms["dev"].name == "Dev"
    service.part(alice, "dev")
    assert "dev" not in service.rooms and set(alice.rooms) == {"lobby"}
    service.part(alice, "lobby")
    assert "lobby" in service.rooms  # the default room stays
    with pytest.raises(NotInRoom):
        service.say(alice, "lobby", "anyone?")


def test_joining_a_room_twice_is_harmless():
    service, _ = makeService()
    alice, a = connect(service, "alice")
    service.join(alice, "lobby")
    assert len(service.rooms["lobby"].members) == 1
    assert a.take(ev.Joined) == []


def replayed(client: FakeClient) -> tuple[list[int], int]:
    """The ids of the messages replayed to C{client} since the last look, and how many
    history marks (start, end) came with them."""
    got = client.take()
    ids = [e.id for e in got if isinstance(e, ev.RoomMessage) and e.history]
    return ids, sum(isinstance(e, ev.HistoryMark) for e in got)


def test_join_since_replays_only_the_newer_messages():
    service, _ = makeService(history_on_join=3)
    alice, _ = connect(service, "alice")
    resultOf(service.join(alice, "dev"))
    m = [service.say(alice, "dev", f"m{i}").id for i in range(5)]  # recent: m[2:]

    def joiner(nick, since):
        user, client = connect(service, nick)
        resultOf(service.join(user, "dev", since))
        return user, replayed(client)

    assert joiner("bob", m[2])[1] == (m[3:], 2)
    carol, seen = joiner("carol", m[4])  # nothing newer: no history marks at all
    assert seen == ([], 0)
    # Older than the buffer (more than history_on_join missed): the newest ones, as for
    # a join without since.
    assert joiner("dave", m[0])[1] == (m[2:], 2)
    assert joiner("erin", 0)[1] == (m[2:], 2)
    # Not an id this server gave out (a server that keeps nothing restarted): ignored.
    assert joiner("frank", m[4] + 1)[1] == (m[2:], 2)
    # A since older than what this connection saw when it left replays nothing again.
    service.part(carol, "dev")
    newer = service.say(alice, "dev", "m5").id
    resultOf(service.join(carol, "dev", m[1]))
    assert replayed(carol.client) == ([newer], 2)


def test_history_spans_need_membership_and_a_bounded_limit_and_join_may_skip_replay():
    service, _ = makeService(history_on_join=3, max_history_request=4)
    alice, _ = connect(service, "alice")
    resultOf(service.join(alice, "dev"))
    m = [service.say(alice, "dev", f"m{i}").id for i in range(6)]
    bob, client = connect(service, "bob")
    assert isinstance(failure(service.historySpan(bob, "dev", 2, Span())), NotInRoom)
    resultOf(service.join(bob, "dev", replay=False))
    assert replayed(client) == ([], 0)  # none replayed: this client asks for what it lacks
    found = resultOf(service.historySpan(bob, "dev", 2, Span(after=m[0], oldest=True)))
    assert [x.id for x in found] == m[1:3] and all(x.history for x in found)
    for limit in (0, 5):
        assert isinstance(failure(service.historySpan(bob, "dev", limit, Span())), UsageError)


def test_since_for_the_default_room_counts_for_the_join_of_a_first_nickname():
    service, _ = makeService()
    alice, _ = connect(service, "alice")
    m = [service.say(alice, "lobby", f"m{i}").id for i in range(3)]  # in the lobby

    def back(nick, since):
        client = FakeClient(name=nick)
        user = service.connect(client)
        service.markSeen(user, "#LOBBY", since)
        resultOf(service.setNick(user, nick))
        endTurn(service)
        return replayed(client)

    assert back("bob", m[1]) == ([m[2]], 2)
    assert back("carol", m[2]) == ([], 0)


def test_who_and_rooms():
    service, _ = makeService()
    alice, _ = connect(service, "alice")
    bob, _ = connect(service, "bob")
    service.join(bob, "dev")
    assert service.who(alice, "lobby").nicks == ("alice", "bob")
    assert service.who(alice, "#dev").nicks == ("bob",)
    with pytest.raises(NoSuchRoom):
        service.who(alice, "nowhere")
    assert service.roomList().rooms == (("dev", 1), ("lobby", 2))


def test_disconnect_tells_rooms_and_frees_nick():
    service, _ = makeService()
    alice, a = connect(service, "alice")
    bob, b = connect(service, "bob")
    b.take()
    service.disconnect(alice, "connection lost")
    service.disconnect(alice, "again")  # idempotent
    assert [e.reason for e in b.take(ev.Quit)] == ["connection lost"]
    assert service.findUser("alice") is None and alice not in service.sessions


def test_a_disconnect_is_one_quit_for_every_room_shared():
    from chatserv.render import jsonText, lines

    service, _ = makeService()
    alice, a = connect(service, "alice")
    bob, b = connect(service, "bob")
    carol, c = connect(service, "carol")
    for user in (alice, bob):
        resultOf(service.join(user, "dev"))
    b.take(), c.take()
    service.disconnect(alice, "gone fishing")
    (quit,) = b.take()  # bob shares both rooms: one event, not a leave per room
    assert quit == ev.Quit("alice", "gone fishing", ("lobby", "dev"), quit.ts)
    assert c.take() == [quit]  # carol, in the lobby only, gets the same one
    assert "alice" not in service.rooms["lobby"].members
    assert list(service.rooms["dev"].members) == ["bob"]
    # Line and JSON clients name no room for a quit from several.
    assert lines(quit)[0].endswith("] <-- alice has quit (gone fishing)")
    assert '"type":"quit"' in jsonText(quit) and "dev" not in jsonText(quit)
    # From one room, it reads as leaving it, as before.
    service.disconnect(carol, "bye")
    (single,) = b.take()
    assert lines(single)[0].endswith("] #lobby <-- carol has left (bye)")
    assert '"type":"leave","room":"lobby"' in jsonText(single)


def test_anonymous_user_cannot_talk():
    service, _ = makeService()
    user, _ = connect(service)
    with pytest.raises(NickRequired):
        service.say(user, "lobby", "hi")
    assert isinstance(failure(service.join(user, "dev")), NickRequired)


def test_one_failing_recipient_does_not_stop_the_others():
    service, _ = makeService()
    alice, _ = connect(service, "alice")
    bob, b = connect(service, "bob")
    carol, c = connect(service, "carol")

    def broken(payload):
        raise OSError("boom")

    b.send = broken
    event = service.say(alice, "lobby", "still here?")
    assert c.take() == [event]


def test_stop_service_closes_every_session():
    service, _ = makeService()
    service.startService()
    _, a = connect(service, "alice")
    _, anon = connect(service)
    _, b = connect(service, "bob")
    service.join(service.findUser("bob"), "dev")
    a.take()
    b.take()
    service.stopService()
    assert a.closedWith == anon.closedWith == b.closedWith == "server shutting down"
    assert a.take() == [] and b.take() == []  # no leave notices to rooms that all close
    assert not service.sessions and not service.users
    assert list(service.rooms) == ["lobby"] and not service.rooms["lobby"].members


def test_time_is_iso_with_zone():
    service, _ = makeService()
    assert service.isoTime() == "2026-11-21T12:00:00+00:00"


def test_rooms_are_named_by_who_acts_not_kept_as_a_current_room():
    """The domain has no current room: a user in several rooms (as IRC users will be)
    says, asks for history and who in the one named, and only in rooms they are in."""
    service, _ = makeService()
    alice, a = connect(service, "alice")
    bob, b = connect(service, "bob")
    resultOf(service.join(alice, "dev"))
    resultOf(service.join(bob, "dev"))
    a.take(), b.take()
    service.say(alice, "lobby", "in the lobby")
    service.say(alice, "#dev", "in dev")
    said = [(e.room, e.text) for e in b.take(ev.RoomMessage)]
    assert said == [("lobby", "in the lobby"), ("dev", "in dev")]
    assert service.who(alice, "dev").nicks == ("alice", "bob")
    resultOf(defer.ensureDeferred(service.history(bob, "lobby", 5)))
    assert [e.text for e in b.take(ev.RoomMessage)] == ["in the lobby"]
    with pytest.raises(NotInRoom, match="you are not in #elsewhere"):
        service.say(alice, "elsewhere", "hello?")
    service.part(bob, "lobby")
    with pytest.raises(NotInRoom, match="you are not in #lobby"):
        service.say(bob, "lobby", "still here?")
    failureOf(defer.ensureDeferred(service.history(bob, "lobby")), NotInRoom)


def test_replies_are_rendered_for_their_recipient_and_fan_outs_once_per_wire():
    """A wire may address a reply to its recipient (IRC numerics carry the nick); what a
    room is sent is rendered once for every client on that wire."""
    from zope.interface import implementer

    from chatserv.interfaces import IWire

    @implementer(IWire)
    class AddressingWire:
        def __init__(self):
            self.calls = []

        def render(self, event):
            self.calls.append((type(event).__name__, None))
            return event

        def renderTo(self, event, nick):
            self.calls.append((type(event).__name__, nick))
            return event

    wire = AddressingWire()
    service, _ = makeService()
    users = [connect(service, nick, wire=wire)[0] for nick in "abc"]
    wire.calls.clear()
    service.say(users[0], "lobby", "hi")
    assert wire.calls == [("RoomMessage", None)]  # three recipients, one rendering
    wire.calls.clear()
    service.deliver(users[1], service.who(users[1], "lobby"))
    assert wire.calls == [("WhoReply", "b")]


def test_kick_from_one_room_keeps_the_user_connected():
    from chatserv.service import CONSOLE

    service, _ = makeService()
    alice, aliceClient = connect(service, "alice")
    bob, bobClient = connect(service, "bob")
    aliceClient.take()
    kicked = service.kickFromRoom(CONSOLE, "lobby", "bob", "behave")
    assert (kicked.room, kicked.nick, kicked.by, kicked.reason) == (
        "lobby",
        "bob",
        "console",
        "behave",
    )
    assert aliceClient.take() == [kicked] and bobClient.take() == [kicked]  # bob sees it too
    assert bob in service.sessions and bob.rooms == {}
    assert list(service.rooms["lobby"].members) == ["alice"]
    assert isinstance(
        failure(defer.maybeDeferred(service.kickFromRoom, CONSOLE, "lobby", "bob")), NotInRoom
    )
    assert isinstance(
        failure(defer.maybeDeferred(service.kickFromRoom, CONSOLE, "nowhere", "bob")), NoSuchRoom
    )


def test_away_is_told_to_who_shares_a_room():
    service, _ = makeService()
    alice, aliceClient = connect(service, "alice")
    bob, bobClient = connect(service, "bob")
    aliceClient.take()
    service.setAway(bob, "  lunch\x1b[31m ")
    assert bob.away == "lunch^[[31m"  # made safe, like any text of a user's
    (away,) = aliceClient.take()
    assert (away.nick, away.text) == ("bob", "lunch^[[31m")
    assert bobClient.take() == []  # not told of itself
    service.setAway(bob, "lunch^[[31m")  # no change: nothing to tell
    assert aliceClient.take() == []
    service.setAway(bob, None)
    assert bob.away is None and aliceClient.take()[0].text is None
