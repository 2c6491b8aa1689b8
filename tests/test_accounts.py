"""Accounts, admin commands, history and offline messages, as line and JSON users see them.

The service runs on the in-memory store with cheap, synchronous password hashing (see
helpers.makeService); the store itself has its own suite over every backend
(test_store.py), and test_persistence.py restarts real servers.
"""

import pytest
from helpers import LineConnection, makeService, named
from twisted.logger import formatEvent, globalLogPublisher
from wsmemory import WSConnection, makeFactory

from chatserv.accounts import LoginThrottle, checkColor
from chatserv.errors import UsageError
from chatserv.moderation import describeDuration, parseDuration
from chatserv.store.memory import MemoryStore

PASSWORD = "correct-horse"


def registered(service, nick, port, password=PASSWORD):
    conn = named(service, nick, port, host=f"10.0.1.{port % 256}")  # own address: bans
    conn.send(f"/register {password}\n")
    assert f"registered {nick}" in conn.output()
    return conn


def test_register_then_login_from_a_new_connection():
    service, _ = makeService()
    alice = named(service, "alice")
    alice.send(f"/register {PASSWORD}\n")
    assert alice.lines() == ["[12:00:00] -!- registered alice; next time, /login alice PASSWORD"]
    alice.send("/quit\n")
    again = LineConnection(service, port=5001)
    again.output()
    again.send(f"/login ALICE {PASSWORD}\n")
    assert again.lines() == [
        "[12:00:00] -!- you are logged in as alice",
        "[12:00:00] -!- Welcome, alice! Type /help for commands.",
        "[12:00:00] #lobby --> alice has joined",
        "[12:00:00] #lobby users (1): alice",
    ]
    assert service.findUser("alice").account.nick == "alice"


def test_a_guest_cannot_take_a_registered_nickname():
    service, _ = makeService()
    registered(service, "alice", 5000).send("/quit\n")
    guest = LineConnection(service, port=5001)
    guest.output()
    guest.send("alice\n")
    assert guest.lines() == [
        '[12:00:00] error: the nickname "alice" is registered: /login alice PASSWORD, '
        "or choose another",
        "[12:00:00] -!- Choose a nickname: type it, or /nick NAME.",
    ]
    guest.send("bob\n")
    guest.output()
    guest.send("/nick Alice\n")
    assert "is registered" in guest.output()
    assert service.findUser("bob") is not None


def test_wrong_password_and_unknown_nick_read_the_same():
    service, _ = makeService()
    registered(service, "alice", 5000).send("/quit\n")
    conn = LineConnection(service, port=5001)
    conn.output()
    conn.send("/login alice wrong-password\n")
    wrong = conn.lines()[0]
    conn.send("/login nobody wrong-password\n")
    assert conn.lines()[0] == wrong == "[12:00:00] error: wrong nickname or password"


def test_failed_logins_are_throttled_per_nick_and_per_address():
    service, clock = makeService(max_login_failures=3, login_failure_decay=60, nick_timeout=600)
    registered(service, "alice", 5000).send("/quit\n")
    attacker = LineConnection(service, host="10.0.0.9", port=6000)
    attacker.output()
    for _ in range(3):
        attacker.send("/login alice guess\n")
        assert "wrong nickname or password" in attacker.output()
    attacker.send(f"/login alice {PASSWORD}\n")  # right, but too late
    assert attacker.lines()[0] == "[12:00:00] error: too many failed logins; try again in 1 minute"
    # The nick is throttled for everyone, not only for the guessing address...
    elsewhere = LineConnection(service, host="10.0.0.10", port=6001)
    elsewhere.output()
    elsewhere.send(f"/login alice {PASSWORD}\n")
    assert "too many failed logins" in elsewhere.output()
    # ... and the guessing address for every nick.
    attacker.send("/login bob guess\n")
    assert "too many failed logins" in attacker.output()
    clock.advance(61)  # one failure forgotten: one more try
    elsewhere.send(f"/login alice {PASSWORD}\n")
    assert "you are logged in as alice" in elsewhere.output()


def test_throttle_forgets_and_sweeps():
    throttle = LoginThrottle(maxFailures=2, decay=10)
    throttle.failed(["a"], 0)
    assert throttle.wait(["a"], 0) == 0
    throttle.failed(["a"], 0)
    assert throttle.wait(["a"], 0) == 10
    assert throttle.wait(["a", "b"], 5) == 5
    assert throttle.wait(["a"], 10) == 0
    throttle.failed(["a"], 12)  # one forgotten at 10, one more now: 2 again, until 20
    assert throttle.wait(["a"], 12) == 8
    throttle.SWEEP_AT = 3
    for key in "bcde":
        throttle.failed([key], 100)
    assert set(throttle._failures) == set("bcde")  # "a" was forgiven and swept


def test_passwords_never_reach_the_logs():
    service, _ = makeService()
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        alice = named(service, "alice")
        alice.send("/register sekrit-one-1\n")
        alice.send("/passwd sekrit-one-1 sekrit-two-2\n")
        alice.send("/passwd wrong-one-3 sekrit-four-4\n")
        alice.send("/quit\n")
        guest = LineConnection(service, port=5001)
        guest.send("/login alice sekrit-wrong-5\n")
        guest.send("/login alice sekrit-two-2\n")
        guest.send("/register short\n")
        assert "logged in as alice" in guest.output()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    text = " ".join(repr(event) for event in logged)
    shown = " ".join(formatEvent(event) for event in logged)
    assert "failed login as alice" in shown and "registered alice" in shown
    for secret in ("sekrit", "short"):
        assert secret not in text and secret not in shown


def test_passwd_and_minimum_length():
    service, _ = makeService(min_password_length=10)
    alice = named(service, "alice")
    alice.send("/register short\n")
    assert alice.lines() == ["[12:00:00] error: a password needs at least 10 characters"]
    alice.send("/passwd a b\n")
    assert "log in first" in alice.output()
    alice.send(f"/register {PASSWORD}\n")
    alice.send(f"/register {PASSWORD}\n")
    assert "already logged in as alice" in alice.output()
    alice.send("/passwd wrong-password new-password\n")
    assert "wrong password; your password is unchanged" in alice.output()
    alice.send(f"/passwd {PASSWORD} new-password\n")
    assert alice.lines() == ["[12:00:00] -!- password changed"]
    alice.send("/quit\n")
    again = LineConnection(service, port=5001)
    again.send(f"/login alice {PASSWORD}\n")
    assert "wrong nickname or password" in again.output()
    again.send("/login alice new-password\n")
    assert "logged in as alice" in again.output()


def test_logging_in_elsewhere_ends_the_old_connection():
    service, _ = makeService()
    old = registered(service, "alice", 5000)
    new = named(service, "guest", port=5001)
    new.send(f"/login alice {PASSWORD}\n")
    assert old.lines()[-1] == "[12:00:00] -!- disconnected: you logged in from elsewhere"
    assert "--- guest is now known as alice" in new.output()
    assert service.findUser("alice").client is new.protocol


def test_renaming_away_logs_out():
    service, _ = makeService()
    alice = registered(service, "alice", 5000)
    alice.send("/nick Alice\n")  # a change of case keeps the account
    assert service.findUser("alice").account is not None
    alice.send("/nick ally\n")
    assert "you are no longer logged in as alice" in alice.output()
    assert service.findUser("ally").account is None


def test_color_is_kept_by_the_account_and_sent_to_json_clients():
    service, clock = makeService()
    alice = registered(service, "alice", 5000)
    alice.send("/color\n")
    assert alice.lines() == ["[12:00:00] -!- your colour: none (/color #RRGGBB sets one)"]
    alice.send("/color red\n")
    assert "a colour is #RRGGBB" in alice.output()
    alice.send("/color #1E90FF\n")
    assert alice.lines() == ["[12:00:00] -!- your colour is now #1e90ff"]
    alice.send("/quit\n")
    again = LineConnection(service, port=5001)
    again.send(f"/login alice {PASSWORD}\n")
    assert service.findUser("alice").color == "#1e90ff"
    bob = jsonClient(service, clock)
    bob.request(type="nick", nick="bob")
    bob.take()
    again.send("hello\n")
    (message,) = [e for e in bob.take() if e["type"] == "message"]
    assert message["color"] == "#1e90ff" and message["from"] == "alice"
    assert "history" not in message  # only replayed messages say so


def test_check_color():
    assert checkColor("#AbCdEf") == "#abcdef"
    assert checkColor("none") is None
    for bad in ("abcdef", "#abc", "#abcdeg", "#abcdef0"):
        with pytest.raises(UsageError):
            checkColor(bad)


# -- admins ---------------------------------------------------------------------------


@pytest.fixture
def chat():
    """alice (admin by the config), bob (registered), carol (a guest), all in the lobby."""
    service, clock = makeService(admins=("alice",), nick_timeout=3600)
    alice = registered(service, "alice", 5000)
    bob = registered(service, "bob", 5001)
    carol = LineConnection(service, host="10.0.0.3", port=5002)
    carol.send("carol\n")
    for conn in (alice, bob, carol):
        conn.output()
    return service, clock, alice, bob, carol


def test_admin_commands_are_refused_to_others(chat):
    service, _, alice, bob, carol = chat
    for line in (
        "/kick alice",
        "/ban alice",
        "/unban alice",
        "/mute alice",
        "/unmute alice",
        "/broadcast hi",
        "/rbroadcast lobby hi",
        "/promote bob",
        "/demote alice",
        "/topic new topic",
    ):
        bob.send(line + "\n")
        name = line.split()[0]
        assert bob.lines() == [f"[12:00:00] error: not permitted: {name} is for admins"], line
    assert len(service.users) == 3


def test_kick(chat):
    service, _, alice, bob, carol = chat
    alice.send("/kick carol spamming the room\n")
    assert (
        carol.lines()[-1]
        == "[12:00:00] -!- disconnected: you were kicked by alice: spamming the room"
    )
    assert bob.lines() == [
        "[12:00:00] #lobby <-- carol has left (kicked by alice: spamming the room)"
    ]
    alice.send("/kick nobody\n")
    assert alice.lines()[-1] == '[12:00:00] error: no user "nobody" is online'


def test_ban_with_duration_refuses_nick_and_address_until_it_ends(chat):
    service, clock, alice, bob, carol = chat
    alice.send("/ban carol 10m flooding\n")
    assert "banned carol for 10 minutes (flooding)" in alice.output()
    assert (
        carol.lines()[-1] == "[12:00:00] -!- disconnected: you are banned for 10 minutes (flooding)"
    )
    back = LineConnection(service, host="10.0.0.3", port=5003)  # same address
    assert back.lines() == [
        "[12:00:00] -!- disconnected: this address is banned for 10 minutes (flooding)"
    ]
    other = LineConnection(service, host="10.0.0.4", port=5004)
    other.output()
    other.send("Carol\n")
    assert 'the nickname "carol" is banned for 10 minutes' in other.output()
    clock.advance(601)
    other.send("carol\n")
    assert "Welcome, carol!" in other.output()


def test_ban_without_duration_and_unban(chat):
    service, _, alice, bob, carol = chat
    alice.send("/ban bob being rude\n")  # "being" is not a duration: it starts the reason
    assert "banned bob until lifted (being rude)" in alice.output()
    gone = LineConnection(service, port=5005)
    gone.send(f"/login bob {PASSWORD}\n")
    assert "banned until lifted" in gone.output()
    alice.send("/unban bob\n")
    assert alice.lines() == ["[12:00:00] -!- unbanned bob"]
    alice.send("/unban bob\n")
    assert alice.lines() == ['[12:00:00] error: "bob" is not banned']
    gone.send(f"/login bob {PASSWORD}\n")
    assert "logged in as bob" in gone.output()


def test_mute(chat):
    service, clock, alice, bob, carol = chat
    alice.send("/mute carol 30s\n")
    assert carol.lines() == ["[12:00:00] -!- alice muted you for 30 seconds"]
    carol.send("can anyone hear me\n")
    carol.send("/msg bob psst\n")
    assert carol.lines() == [
        "[12:00:00] error: you are muted for 30 seconds",
        "[12:00:00] error: you are muted for 30 seconds",
    ]
    assert bob.lines() == []
    alice.send("/unmute carol\n")
    assert carol.lines() == ["[12:00:00] -!- alice unmuted you"]
    carol.send("back\n")
    assert bob.lines() == ["[12:00:00] #lobby <carol> back"]
    alice.send("/mute carol 1s\n")
    clock.advance(2)
    carol.send("expired\n")
    assert bob.lines()[-1].endswith("#lobby <carol> expired")


def test_topic_is_shown_on_join_and_makes_the_room_permanent(chat):
    service, _, alice, bob, carol = chat
    alice.send("/topic #dev Builds and deploys\n")
    bob.send("/join dev\n")
    assert bob.lines()[:3] == [
        "[12:00:00] #dev --> bob has joined",
        "[12:00:00] #dev topic: Builds and deploys (set by alice, 2026-11-21 12:00:00)",
        "[12:00:00] #dev users (1): bob",
    ]
    bob.send("/topic\n")
    assert bob.lines() == [
        "[12:00:00] #dev topic: Builds and deploys (set by alice, 2026-11-21 12:00:00)"
    ]
    bob.send("/join lobby\n")
    assert ("dev", 0) in service.roomSummary()  # still listed, empty
    carol.output()
    carol.send("/topic\n")
    assert carol.lines() == ["[12:00:00] #lobby has no topic"]
    alice.send("/topic Welcome!\n")  # no #ROOM: the current room
    assert carol.lines() == [
        "[12:00:00] #lobby topic: Welcome! (set by alice, 2026-11-21 12:00:00)"
    ]


def test_broadcasts(chat):
    service, _, alice, bob, carol = chat
    carol.send("/join dev\n")
    carol.output()
    bob.output()
    alice.send("/broadcast restarting at noon\n")
    assert alice.lines()[-1] == "[12:00:00] -!- sent to 3 connections"
    for conn in (bob, carol):
        assert conn.lines() == ["[12:00:00] -!- restarting at noon (from alice)"]
    alice.send("/rbroadcast #dev standup now\n")
    assert carol.lines() == ["[12:00:00] #dev -!- standup now (from alice)"]
    assert bob.lines() == []


def test_promote_and_demote(chat):
    service, _, alice, bob, carol = chat
    alice.send("/promote carol\n")
    assert alice.lines() == ['[12:00:00] error: "carol" is not registered']
    alice.send("/promote bob\n")
    assert bob.lines() == ["[12:00:00] -!- alice made you an admin (admin)"]
    bob.send("/kick carol\n")
    assert service.findUser("carol") is None
    bob.send("/demote alice\n")
    assert "alice is an admin in the config file" in bob.output()
    alice.send("/demote bob\n")
    bob.output()
    bob.send("/broadcast hi\n")
    assert "not permitted" in bob.output()


def test_durations():
    assert parseDuration("30s") == 30 and parseDuration("10") == 600
    assert parseDuration("2H") == 7200 and parseDuration("1w") == 604800
    for bad in ("0m", "soon", "-5m", "1y"):
        with pytest.raises(UsageError):
            parseDuration(bad)
    assert describeDuration(1) == "1 second" and describeDuration(7200) == "2 hours"


# -- history --------------------------------------------------------------------------


def test_late_joiners_see_history_marked(chat):
    service, clock, alice, bob, carol = chat
    alice.send("first\n")
    clock.advance(60)
    bob.send("/me second\n")
    late = named(service, "dave", port=5010)  # named() reads the welcome...
    late.send("/join lobby\n")
    late.output()
    late.send("/history\n")
    assert late.lines() == [
        "[12:01:00] #lobby --- history: the last 2 messages ---",
        "[2026-11-21 12:00:00] #lobby <alice> first",
        "[2026-11-21 12:01:00] #lobby * bob second",
        "[12:01:00] #lobby --- end of history ---",
    ]


def test_history_on_join_is_limited_and_history_n_asks_the_store_for_more():
    store = MemoryStore()
    service, _ = makeService(store=store, history_on_join=3, max_history_request=10)
    alice = named(service, "alice")
    for i in range(8):
        alice.send(f"message {i}\n")
    service.store.flush()
    bob = LineConnection(service, port=5001)
    bob.output()
    bob.send("bob\n")
    shown = bob.lines()
    assert shown[-5:] == [
        "[12:00:00] #lobby --- history: the last 3 messages ---",
        "[2026-11-21 12:00:00] #lobby <alice> message 5",
        "[2026-11-21 12:00:00] #lobby <alice> message 6",
        "[2026-11-21 12:00:00] #lobby <alice> message 7",
        "[12:00:00] #lobby --- end of history ---",
    ]
    bob.send("/history 6\n")
    assert [line.split("> ")[-1] for line in bob.lines()[1:-1]] == [
        f"message {i}" for i in range(2, 8)
    ]
    bob.send("/history 11\n")
    assert bob.lines() == ["[12:00:00] error: at most 10 messages at once"]
    bob.send("/history lots\n")
    assert "usage: /history [N]" in bob.output()


def test_a_room_emptied_and_joined_again_replays_its_history():
    service, _ = makeService()
    alice = named(service, "alice")
    alice.send("/join dev\n")
    alice.send("in dev\n")
    alice.send("/join lobby\n")
    assert "dev" not in service.rooms  # gone from the list...
    alice.output()
    alice.send("/join dev\n")  # ... but not forgotten
    assert "[2026-11-21 12:00:00] #dev <alice> in dev" in alice.lines()


def test_json_history_and_topic_events():
    service, clock = makeService(admins=("alice",))
    alice = registered(service, "alice", 5000)
    alice.send("/topic Be kind\n")
    alice.send("hello\n")
    bob = jsonClient(service, clock)
    bob.request(type="nick", nick="bob")
    events = bob.take()
    kinds = [e["type"] for e in events]
    assert kinds == [
        "notice",
        "welcome",
        "join",
        "topic",
        "who",
        "history-start",
        "message",
        "history-end",
    ]
    topic, start, message, end = events[3], events[5], events[6], events[7]
    assert topic["topic"] == "Be kind" and topic["by"] == "alice"
    assert start["count"] == end["count"] == 1
    assert message["history"] is True and message["text"] == "hello"
    bob.request(type="history", count=5)
    assert [e["type"] for e in bob.take()] == ["history-start", "message", "history-end"]


# -- offline messages -------------------------------------------------------------------


def test_private_messages_wait_for_an_offline_account():
    service, clock = makeService(max_offline_messages=2)
    registered(service, "bob", 5001).send("/quit\n")
    alice = named(service, "alice")
    alice.send("/msg bob see you at 5\n")
    assert alice.lines() == [
        "[12:00:00] -> *bob* (offline; kept for their next login) see you at 5"
    ]
    clock.advance(60)
    alice.send("/msg Bob bring the keys\n")
    alice.send("/msg bob one too many\n")
    assert alice.lines()[-1] == "[12:01:00] error: bob has 2 messages waiting; try again later"
    alice.send("/msg nobody hello\n")
    assert alice.lines() == ['[12:01:00] error: no user "nobody" is online']
    bob = LineConnection(service, port=5002)
    bob.output()
    bob.send(f"/login bob {PASSWORD}\n")
    assert bob.lines()[-3:] == [
        "[12:01:00] -!- 2 private messages arrived while you were away:",
        "[2026-11-21 12:00:00] *alice* see you at 5",
        "[2026-11-21 12:01:00] *alice* bring the keys",
    ]
    bob.send("/quit\n")
    again = LineConnection(service, port=5003)
    again.send(f"/login bob {PASSWORD}\n")
    assert "while you were away" not in again.output()  # delivered once


def test_retention_prunes_on_its_interval():
    store = MemoryStore()
    service, clock = makeService(
        store=store, retention_max_messages=3, retention_interval=60, history_on_join=0
    )
    service.startService()
    alice = named(service, "alice")
    for i in range(5):
        alice.send(f"m{i}\n")
    assert len(store.messages["lobby"]) == 5
    clock.advance(60)
    assert [m.text for m in store.messages["lobby"]] == ["m2", "m3", "m4"]
    service.stopService()


# -- JSON requests -----------------------------------------------------------------------


def jsonClient(service, clock, port=4000) -> WSConnection:
    client = WSConnection(makeFactory(service, clock), json=True, port=port)
    client.take = client.messages
    return client


def test_json_account_requests():
    service, clock = makeService(admins=("alice",))
    alice = jsonClient(service, clock)
    alice.request(type="nick", nick="alice")
    alice.request(type="register", password=PASSWORD)
    (login,) = [e for e in alice.take() if e["type"] == "login"]
    assert login == {
        "type": "login",
        "nick": "alice",
        "admin": True,
        "color": None,
        "text": "registered alice; next time, /login alice PASSWORD (admin)",
        "ts": login["ts"],
    }
    alice.request(type="color", color="#ff8800")
    alice.request(type="ban", nick="mallory", duration="1h", reason="spam")
    alice.request(type="ban", nick="eve", duration="soon")
    notices = [e["text"] for e in alice.take()]
    assert notices[:2] == ["your colour is now #ff8800", "banned mallory for 1 hour (spam)"]
    assert "is not a duration" in notices[2]
    alice.request(type="login", nick="alice", password="nope")
    (error,) = alice.take()
    assert error["code"] == "usage"  # already logged in as alice


def test_a_refused_topic_creates_no_room():
    service, clock = makeService(admins=("alice",))
    alice = jsonClient(service, clock)
    alice.request(type="nick", nick="alice")
    alice.request(type="register", password=PASSWORD)
    alice.take()
    alice.request(type="topic", room="new", text="   ")
    (error,) = alice.take()
    assert error["code"] == "empty-text"
    assert "new" not in service.rooms
