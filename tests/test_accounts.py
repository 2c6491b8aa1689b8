"""Accounts, admin commands, history and offline messages, as line and JSON users see them.

The service runs on the in-memory store with cheap, synchronous password hashing (see
helpers.makeService); the store itself has its own suite over every backend
(test_store.py), and test_persistence.py restarts real servers.
"""

import pytest
from helpers import (
    FAST_HASHER,
    LineConnection,
    failureOf,
    makeService,
    manualPasswords,
    manualService,
    named,
    resultOf,
)
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from wsmemory import WSConnection, makeFactory

from chatserv.accounts import Throttle, checkColor
from chatserv.config import Settings
from chatserv.errors import Busy, NickRegistered, UsageError, WeakPassword
from chatserv.moderation import describeDuration, parseDuration
from chatserv.names import fold
from chatserv.service import CONSOLE, ChatService
from chatserv.store import Account
from chatserv.store.memory import MemoryStore

PASSWORD = "correct-horse"


def registered(service, nick, port, password=PASSWORD):
    host = f"10.0.1.{port % 256}"  # an address of its own: bans
    if fold(nick) in service.adminKeys:  # reserved: the console makes the account
        resultOf(defer.ensureDeferred(service.createAccount(CONSOLE, nick, password)))
        conn = LineConnection(service, host=host, port=port)
        conn.send(f"/login {nick} {password}\n")
        assert f"logged in as {nick}" in conn.output()
        return conn
    conn = named(service, nick, port, host=host)
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


class CountingStore(MemoryStore):
    """Counts the account lookups and history reads the service makes."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[str] = []
        self.reads: list[str] = []

    def account(self, key):
        self.lookups.append(key)
        return super().account(key)

    def history(self, roomKey, limit, span=None):
        self.reads.append(roomKey)
        return super().history(roomKey, limit, span)


def test_guests_and_new_rooms_ask_the_database_nothing_registered_names_still_do():
    store = CountingStore()
    service, _ = makeService(store=store)
    guest = named(service, "guest")
    guest.send("/join fresh\n/msg nobody hi\n")
    assert store.lookups == [] and store.reads == []  # nothing registered, nothing said
    guest.send("first words\n/join lobby\n")
    alice = registered(service, "alice", 5001)
    deleted = registered(service, "dora", 5002)
    for conn in (alice, deleted):
        conn.send("/quit\n")
    resultOf(defer.ensureDeferred(service.deleteAccount(CONSOLE, "dora")))
    store.lookups.clear()
    late = LineConnection(service, port=5003)
    late.send("/join fresh\n")  # no nickname yet: refused, nothing read
    late.send("alice\n")
    assert "is registered" in late.output() and store.lookups == ["alice"]
    late.send("dora\n")  # deleted: free again, and not asked about
    assert "Welcome, dora" in late.output() and store.lookups == ["alice"]
    late.send("/join fresh\n")
    assert store.reads == ["fresh"]  # spoken in since it was made
    # A restart knows the same from the store.
    again, _ = makeService(store=store)
    store.lookups.clear()
    other = LineConnection(again, port=5004)
    other.send("alice\n")
    assert "is registered" in other.output() and store.lookups == ["alice"]
    other.send("erin\n")
    assert "Welcome, erin" in other.output() and store.lookups == ["alice"]


def test_wrong_password_and_unknown_nick_read_the_same():
    service, _ = makeService()
    registered(service, "alice", 5000).send("/quit\n")
    conn = LineConnection(service, port=5001)
    conn.output()
    conn.send("/login alice wrong-password\n")
    wrong = conn.lines()[0]
    conn.send("/login nobody wrong-password\n")
    assert conn.lines()[0] == wrong == "[12:00:00] error: wrong nickname or password"


def test_failed_logins_are_throttled_per_address_and_nick():
    service, clock = makeService(max_login_failures=3, login_failure_decay=60, nick_timeout=600)
    registered(service, "alice", 5000).send("/quit\n")
    attacker = LineConnection(service, host="10.0.0.9", port=6000)
    attacker.output()
    for _ in range(3):
        attacker.send("/login alice guess\n")
        assert "wrong nickname or password" in attacker.output()
    attacker.send(f"/login alice {PASSWORD}\n")  # right, but too late
    assert attacker.lines()[0] == "[12:00:00] error: too many failed logins; try again in 1 minute"
    # Only from that address: alice herself, elsewhere, is not locked out...
    elsewhere = LineConnection(service, host="10.0.0.10", port=6001)
    elsewhere.output()
    elsewhere.send(f"/login alice {PASSWORD}\n")
    assert "you are logged in as alice" in elsewhere.output()
    # ... and the address may still try other nicknames (up to max_login_failures_per_ip).
    attacker.send("/login bob guess\n")
    assert "wrong nickname or password" in attacker.output()
    clock.advance(61)  # one failure forgotten: one more try
    attacker.send(f"/login alice {PASSWORD}\n")
    assert "you are logged in as alice" in attacker.output()


def test_throttle_forgets_caps_refunds_and_sweeps():
    throttle = Throttle(limit=2, decay=10)
    throttle.add("a", 0)
    assert throttle.wait("a", 0) == 0
    throttle.add("a", 0)
    assert throttle.wait("a", 0) == 10
    assert throttle.wait("a", 5) == 5
    assert throttle.wait("a", 10) == 0
    throttle.add("a", 12)  # one forgotten at 10, one more now: 2 again, until 20
    assert throttle.wait("a", 12) == 8
    throttle.add("a", 12)  # never more than the limit: the wait stays within one decay
    assert throttle.wait("a", 12) == 8
    throttle.refund("a", 12)
    assert throttle.wait("a", 12) == 0
    throttle.SWEEP_AT = 3
    for key in "bcde":
        throttle.add(key, 100)
    assert set(throttle._counts) == set("bcde")  # "a" was forgiven and swept


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
    alice.send("/ban carol 10m --address flooding\n")
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


def test_a_nickname_ban_does_not_ban_the_address_unless_asked(chat):
    service, clock, alice, bob, carol = chat
    alice.send("/ban carol\n")
    assert "banned carol until lifted" in alice.output()
    neighbour = LineConnection(service, host="10.0.0.3", port=5003)  # carol's address
    assert "Type a nickname" in neighbour.output()
    neighbour.send("dave\n")
    assert "Welcome, dave!" in neighbour.output()
    alice.send("/ban nobody --address\n")
    assert 'no user "nobody" is online: no address to ban' in alice.output()
    local = LineConnection(service, host="127.0.0.1", port=5004)
    local.send("local\n")
    alice.send("/ban local --address\n")
    assert "127.0.0.1 is a loopback address" in alice.output()
    assert service.findUser("local") is not None
    assert service.sanctions.bannedHost("127.0.0.1", clock.seconds()) is None


def test_a_ban_or_mute_of_a_nickname_finds_who_renamed_away_from_it(chat):
    service, clock, alice, bob, carol = chat
    carol.send("/nick carla\n")
    for conn in (alice, bob, carol):
        conn.output()
    alice.send("/mute carol 10m\n")
    assert "muted carla (who was carol) for 10 minutes" in alice.output()
    carol.send("still here\n")
    assert "you are muted for 10 minutes" in carol.output()
    assert bob.output() == ""
    alice.send("/ban carol\n")
    assert "banned carla (who was carol) until lifted" in alice.output()
    assert "you are banned until lifted" in carol.lines()[-1]
    assert service.findUser("carla") is None
    again = LineConnection(service, host="10.0.0.5", port=5006)
    again.output()
    again.send("carla\n")
    assert 'the nickname "carla" is banned until lifted' in again.output()


def test_a_nickname_held_now_goes_before_one_held_before(chat):
    service, clock, alice, bob, carol = chat
    carol.send("/nick carla\n")
    dave = LineConnection(service, host="10.0.0.6", port=5006)
    dave.send("carol\n")  # the name carol left
    alice.send("/ban carol\n")
    assert "banned carol until lifted" in alice.output()
    assert service.findUser("carol") is None
    assert service.findUser("carla") is not None


def test_a_trusted_proxy_address_is_never_banned():
    service, clock = makeService(admins=("alice",), trusted_proxies=("10.9.0.0/16",))
    alice = registered(service, "alice", 5000)
    alice.output()
    proxied = LineConnection(service, host="10.9.0.2", port=5001)  # no PROXY header
    proxied.send("eve\n")
    alice.send("/ban eve --address\n")
    assert "10.9.0.2 is a trusted proxy (trusted_proxies)" in alice.output()
    assert service.findUser("eve") is not None
    assert service.sanctions.bannedHost("10.9.0.2", clock.seconds()) is None


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


def test_a_muted_user_cannot_rename_out_of_the_mute(chat):
    service, clock, alice, bob, carol = chat
    alice.send("/mute carol 30s\n")
    carol.output()
    carol.send("/nick carol2\ncarol3\n")
    assert carol.lines() == [
        "[12:00:00] error: you are muted for 30 seconds; you cannot change your nickname "
        "until then",
        "[12:00:00] error: you are muted for 30 seconds",
    ]
    assert service.findUser("carol") is not None and bob.lines() == []
    clock.advance(31)
    carol.send("/nick carol2\n")
    assert bob.lines() == ["[12:00:31] --- carol is now known as carol2"]


def test_topic_is_shown_on_join_and_makes_the_room_permanent(chat):
    service, _, alice, bob, carol = chat
    alice.send("/topic #dev Builds and deploys\n")  # from outside #dev: confirmed
    assert alice.lines() == [
        "[12:00:00] #dev topic: Builds and deploys (set by alice, 2026-11-21 12:00:00)"
    ]
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
    alice.output()
    alice.send("/topic Welcome!\n")  # no #ROOM: the current room
    assert carol.lines() == [
        "[12:00:00] #lobby topic: Welcome! (set by alice, 2026-11-21 12:00:00)"
    ]
    assert alice.lines() == [  # a member: the room's copy, once
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
    assert bob.lines() == ["[12:00:00] -!- alice made you an admin"]
    bob.send("/kick carol\n")
    assert service.findUser("carol") is None
    bob.send("/demote alice\n")
    assert "alice is an admin in the config file" in bob.output()
    alice.send("/demote bob\n")
    bob.output()
    bob.send("/broadcast hi\n")
    assert "not permitted" in bob.output()


def test_admins_reset_a_forgotten_password_and_delete_accounts(chat):
    service, clock, alice, bob, carol = chat
    alice.send("/resetpassword bob n3w-passphrase\n")
    assert alice.lines() == ["[12:00:00] -!- bob has a new password"]
    again = LineConnection(service, host="10.0.0.9", port=5009)
    again.send("/login bob n3w-passphrase\n")
    assert "you are logged in as bob" in again.output()
    carol.send("/msg bob while you sleep\n")  # bob is online: delivered, nothing kept
    alice.send("/deleteaccount bob\n")
    assert alice.lines()[-1] == "[12:00:00] -!- deleted the account bob"
    assert "alice deleted your account bob" in again.output()
    assert service.findUser("bob").account is None  # still connected, as a guest
    assert resultOf(service.store.account("bob")) is None
    carol.send("/resetpassword alice x\n/deleteaccount alice\n")
    assert carol.lines()[-2:] == [
        "[12:00:00] error: not permitted: /resetpassword is for admins",
        "[12:00:00] error: not permitted: /deleteaccount is for admins",
    ]
    alice.send("/deleteaccount nobody\n")
    assert alice.lines() == ['[12:00:00] error: "nobody" is not registered']


def test_admins_rename_an_account_and_whoever_is_logged_in_to_it(chat):
    service, clock, alice, bob, carol = chat
    alice.send("/msg carol are you there?\n")
    carol.send("/mute bob 10m\n")  # not an admin
    assert "not permitted: /mute is for admins" in carol.output()
    alice.send("/mute bob 10m\n")
    alice.output()
    alice.send("/renameaccount bob carol\n")  # a guest online is called that
    assert alice.lines() == ['[12:00:00] error: the nickname "carol" is in use by someone online']
    registered(service, "dave", 5010).send("/quit\n")  # an account nobody is logged in to
    alice.send("/renameaccount bob Dave\n")
    assert 'the nickname "Dave" is registered to another account' in alice.output()
    alice.send("/renameaccount bob Robert\n")
    assert alice.lines() == [
        "[12:00:00] --- bob is now known as Robert",  # the room sees it like a /nick
        "[12:00:00] -!- renamed the account bob to Robert",
    ]
    assert "alice renamed your account bob to Robert" in bob.output()
    robert = service.findUser("robert")
    assert robert is not None and robert.account.nick == "Robert"
    assert "bob is now known as Robert" in carol.output()
    bob.send("still muted?\n")
    assert "you are muted for 10 minutes" in bob.output()  # the mute went along
    assert resultOf(service.store.account("bob")) is None
    bob.send("/quit\n")
    back = LineConnection(service, host="10.0.0.9", port=5009)
    back.send(f"/login Robert {PASSWORD}\n")
    assert "you are logged in as Robert" in back.output()
    again = LineConnection(service, host="10.0.0.8", port=5008)
    again.send("bob\n")  # the old name is free for anyone
    assert "Welcome, bob!" in again.output()


def test_durations():
    assert parseDuration("30s") == 30 and parseDuration("10") == 600
    assert parseDuration("2H") == 7200 and parseDuration("1w") == 604800
    for bad in ("0m", "soon", "-5m", "1y", "²m", "٣h", "１０"):  # Unicode digits too
        with pytest.raises(UsageError):
            parseDuration(bad)
    assert describeDuration(1) == "1 second" and describeDuration(7200) == "2 hours"
    assert parseDuration("10min") == 600 and parseDuration("2hours") == 7200


def test_a_mistyped_ban_duration_is_refused_not_a_ban_until_lifted(chat):
    service, _, alice, bob, carol = chat
    alice.send("/ban carol 1x\n/mute carol 5q\n")
    assert alice.lines() == [
        '[12:00:00] error: "1x" is not a duration; write e.g. 30s, 10m, 2h, 7d or 1w',
        '[12:00:00] error: "5q" is not a duration; write e.g. 30s, 10m, 2h, 7d or 1w',
    ]
    assert service.findUser("carol") is not None
    alice.send("/ban carol 10 minutes spamming\n")
    assert alice.lines()[-1] == "[12:00:00] -!- banned carol for 10 minutes (spamming)"
    alice.send("/ban zed 2 hours\n/ban yan 3 strikes and out\n")
    assert alice.lines() == [
        "[12:00:00] -!- banned zed for 2 hours",
        "[12:00:00] -!- banned yan for 3 minutes (strikes and out)",  # a bare number: minutes
    ]


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
    for digits in ("²", "٣", "１２", "-1", "0"):  # Unicode digits are not numbers here
        bob.send(f"/history {digits}\n")
        assert bob.lines() == [
            "[12:00:00] error: usage: /history [N], N a number of messages, e.g. /history 100"
        ], digits


def test_a_room_emptied_and_joined_again_replays_its_history():
    service, _ = makeService()
    alice = named(service, "alice")
    alice.send("/join dev\n")
    alice.send("in dev\n")
    alice.send("/join lobby\n")
    assert "dev" not in service.rooms  # gone from the list...
    bob = named(service, "bob", port=5001)
    bob.send("/join dev\n")  # ... but not forgotten
    assert "[2026-11-21 12:00:00] #dev <alice> in dev" in bob.lines()
    alice.output()
    alice.send("/join dev\n")  # (alice saw it there: not replayed to her again)
    assert "[2026-11-21 12:00:00] #dev <alice> in dev" not in alice.lines()


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


def test_json_join_since():
    # Room for 5000 digits, and for many requests at once.
    service, clock = makeService(max_line_length=8192, rate_burst=100, ip_rate_burst=100)
    alice = named(service, "alice")
    alice.send("/join dev\n")
    m = []
    for i in range(3):
        alice.send(f"m{i}\n")
        m.append(service.ids.last)
    bob = jsonClient(service, clock)
    bob.request(type="nick", nick="bob")
    bob.take()

    def joined(**fields) -> list[tuple[str, str]]:
        bob.request(type="join", room="dev", **fields)
        got = [(e["type"], e.get("code") or e["text"]) for e in bob.take()]
        bob.request(type="join", room="lobby")  # away again, for the next try
        bob.take()
        return [(kind, text) for kind, text in got if kind not in ("join", "who", "leave")]

    assert joined(since=m[1]) == [
        ("history-start", "#dev --- history: the last 1 message ---"),
        ("message", "m2"),
        ("history-end", "#dev --- end of history ---"),
    ]
    assert joined(since=str(m[2])) == []  # nothing newer: no history at all
    assert joined(since=None) == []  # (what this connection saw when it left counts too)
    # Not a message id: refused, and bob stays where he is.
    for since in ("x", "", " 1", "-1", "1.0", "²", "1e3", str(2**63), "9" * 5000, -1):
        assert joined(since=since) == [("error", "usage")], since
        assert list(service.findUser("bob").rooms) == ["lobby"]
    # As for history's count: a value of the wrong type is a bad request.
    for since in (True, 2.5, ["3"], {"id": 3}, float("nan"), float("inf")):
        assert joined(since=since) == [("error", "bad-request")], since
    bob.send('{"type":"join","room":"dev","since":1e999}')
    assert [e["code"] for e in bob.take() if e["type"] == "error"] == ["bad-request"]


def test_json_nick_and_login_since_are_for_the_default_room():
    service, clock = makeService()
    registered(service, "bob", 5001).send("/quit\n")
    alice = named(service, "alice")
    m = []
    for i in range(3):
        alice.send(f"m{i}\n")  # in the lobby
        m.append(service.ids.last)

    def replayed(client) -> list[str]:
        return [e["text"] for e in client.take() if e.get("history") or "count" in e]

    carol = jsonClient(service, clock, port=4001)
    carol.request(type="nick", nick="carol", since=m[1])
    assert replayed(carol) == [
        "#lobby --- history: the last 1 message ---",
        "m2",
        "#lobby --- end of history ---",
    ]
    bob = jsonClient(service, clock, port=4002)
    bob.request(type="login", nick="bob", password=PASSWORD, since=str(m[2]))
    assert replayed(bob) == []
    dave = jsonClient(service, clock, port=4003)
    dave.request(type="nick", nick="dave", since="soon")
    assert [e["code"] for e in dave.take() if e["type"] == "error"] == ["usage"]
    assert service.findUser("dave") is None


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
    shown = bob.lines()
    kept = shown.index("[12:01:00] -!- 2 private messages arrived while you were away:")
    assert shown[kept + 1 : kept + 3] == [
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
    resultOf(defer.ensureDeferred(service.createAccount(CONSOLE, "alice", PASSWORD)))
    alice = jsonClient(service, clock)
    alice.request(type="login", nick="alice", password=PASSWORD)
    (login,) = [e for e in alice.take() if e["type"] == "login"]
    assert login == {
        "type": "login",
        "nick": "alice",
        "admin": True,
        "color": None,
        "text": "you are logged in as alice (admin)",
        "ts": login["ts"],
    }
    bob = jsonClient(service, clock)
    bob.request(type="nick", nick="bob")
    bob.request(type="register", password=PASSWORD)
    (registered,) = [e for e in bob.take() if e["type"] == "login"]
    assert (registered["nick"], registered["admin"], registered["text"]) == (
        "bob",
        False,
        "registered bob; next time, /login bob PASSWORD",
    )
    alice.take()  # (bob has joined)
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
    resultOf(defer.ensureDeferred(service.createAccount(CONSOLE, "alice", PASSWORD)))
    alice = jsonClient(service, clock)
    alice.request(type="login", nick="alice", password=PASSWORD)
    alice.take()
    alice.request(type="topic", room="new", text="   ")
    (error,) = alice.take()
    assert error["code"] == "empty-text"
    assert "new" not in service.rooms


# -- password checks under attack --------------------------------------------------------
#
# These use helpers.manualService: password checks queue for a thread pool that only runs
# when the test says so, so "at the same instant" and "still being checked" are exact.

WRONG = "error: wrong nickname or password"
THROTTLED = "error: too many failed logins; try again in "
CHECKING = "from your address is being checked; wait for its answer"


def registerNow(service, pool, nick, host, password=PASSWORD):
    """Register C{nick} from C{host}, answer the hash, and hang up."""
    conn = named(service, nick, host=host)
    conn.send(f"/register {password}\n")
    pool.runAll()
    assert f"registered {nick}" in conn.output()
    conn.send("/quit\n")


def connections(service, count, host="10.0.0.9"):
    conns = [LineConnection(service, host=host, port=7000 + i) for i in range(count)]
    for conn in conns:
        conn.output()
    return conns


def errors(conns):
    """The error lines each connection got since the last call, without timestamps."""
    return [line[11:] for conn in conns for line in conn.lines() if line[11:].startswith("error")]


def waitOf(error: str) -> float:
    """Seconds in "... try again in 1 minute" (or "42 seconds")."""
    amount, unit = error.rsplit(" in ", 1)[1].split()
    sizes = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
    return int(amount) * sizes[unit.removesuffix("s")]


def test_simultaneous_guesses_from_one_address_check_at_most_max_login_failures():
    service, _, pool = manualService(max_login_failures=5)
    registerNow(service, pool, "boss", host="10.0.2.1")
    conns = connections(service, 100)
    before, got = pool.started, []
    for _ in range(10):  # waves: 100 guesses at once, then the checks are answered
        for conn in conns:
            conn.send("/login boss guess\n")
        pool.runAll()
        got += errors(conns)
    assert pool.started - before == 5
    assert got.count(WRONG) == 5
    assert len(got) == 1000
    assert all(e == WRONG or e.startswith(THROTTLED) or e.endswith(CHECKING) for e in got), got


def test_one_check_at_a_time_per_address_and_account():
    service, _, pool = manualService(passwords={"atOnce": 4})
    registerNow(service, pool, "boss", host="10.0.2.1")
    first, second, other = connections(service, 3)
    elsewhere = LineConnection(service, host="10.0.0.10", port=6000)
    first.send("/login boss guess\n")
    second.send("/login BOSS guess\n")  # the same account, while the first is checked
    assert errors([second]) == [f"error: another password for BOSS {CHECKING}"]
    other.send("/login carol guess\n")  # another account: checked
    elsewhere.send("/login boss guess\n")  # another address: checked
    assert len(pool.jobs) == 3
    pool.runAll()
    assert errors([first, other, elsewhere]) == [WRONG] * 3
    second.send("/login boss guess\n")  # the first is answered: its turn now
    assert len(pool.jobs) == 1
    pool.runAll()
    assert errors([second]) == [WRONG]


def test_a_login_counts_while_it_is_checked_and_a_right_one_is_refunded():
    service, _, pool = manualService(max_login_failures_per_ip=2)
    for i, nick in enumerate(("alice", "bob", "carol")):
        registerNow(service, pool, nick, host=f"10.0.2.{i}")
    alice, bob, carol = connections(service, 3)
    alice.send(f"/login alice {PASSWORD}\n")
    bob.send(f"/login bob {PASSWORD}\n")
    carol.send(f"/login carol {PASSWORD}\n")  # two logins from here are being checked
    assert errors([carol]) == [THROTTLED + "1 minute"]
    pool.runAll()
    assert "logged in as alice" in alice.output() and "logged in as bob" in bob.output()
    carol.send(f"/login carol {PASSWORD}\n")  # right ones cost nothing once answered
    pool.runAll()
    assert "you are logged in as carol" in carol.output()


def test_guessing_does_not_lock_the_owner_out_from_another_address():
    service, _, pool = manualService()
    registerNow(service, pool, "boss", host="10.0.2.1")
    conns = connections(service, 100)
    for _ in range(5):
        for conn in conns:
            conn.send("/login boss guess\n")
        pool.runAll()
    errors(conns)
    owner = LineConnection(service, host="10.0.0.10", port=6000)
    owner.send(f"/login boss {PASSWORD}\n")
    pool.runAll()
    assert "you are logged in as boss" in owner.output()


def test_one_users_failures_do_not_throttle_another_user_at_the_same_address():
    service, _, pool = manualService()
    registerNow(service, pool, "alice", host="10.0.2.1")
    registerNow(service, pool, "bob", host="10.0.2.2")
    mallory, bob = connections(service, 2)  # behind the same NAT
    for _ in range(6):
        mallory.send("/login alice guess\n")
        pool.runAll()
    assert errors([mallory]) == [WRONG] * 5 + [THROTTLED + "1 minute"]
    bob.send(f"/login bob {PASSWORD}\n")
    pool.runAll()
    assert "you are logged in as bob" in bob.output()


def test_the_longest_wait_is_login_failure_decay():
    service, clock, pool = manualService(nick_timeout=3600)
    registerNow(service, pool, "boss", host="10.0.2.1")
    conns = connections(service, 100)
    got = []
    for _ in range(60):  # ten minutes of guessing as fast as 100 connections can
        for conn in conns:
            conn.send("/login boss guess\n")
        pool.runAll()
        got += errors(conns)
        clock.advance(10)
    waits = [waitOf(e) for e in got if e.startswith(THROTTLED)]
    assert waits and max(waits) <= 60
    assert got.count(WRONG) == 5 + 9  # five, then one a minute as each is forgotten
    owner = LineConnection(service, port=6000)  # from the guessing address itself
    clock.advance(60)
    owner.send(f"/login boss {PASSWORD}\n")
    pool.runAll()
    assert "you are logged in as boss" in owner.output()


def test_one_address_cannot_guess_across_many_accounts_quickly():
    service, _, pool = manualService()  # max_login_failures_per_ip: 20
    conns = connections(service, 30)
    for i, conn in enumerate(conns):
        conn.send(f"/login user{i} guess\n")
        pool.runAll()
    got = errors(conns)
    assert got[:20] == [WRONG] * 20
    assert got[20:] == [THROTTLED + "1 minute"] * 10
    elsewhere = LineConnection(service, host="10.0.0.10", port=6000)
    elsewhere.send("/login user0 guess\n")
    pool.runAll()
    assert errors([elsewhere]) == [WRONG]


def test_registrations_are_throttled_per_address():
    service, clock, pool = manualService()  # 3 per address, one forgiven every 10 minutes
    conns = [named(service, f"user{i}", port=7000 + i, host="10.0.0.9") for i in range(4)]
    for conn in conns:
        conn.send(f"/register {PASSWORD}\n")
        pool.runAll()
    answers = [[line[11:] for line in conn.lines() if "regist" in line] for conn in conns]
    assert answers == [
        ["-!- registered user0; next time, /login user0 PASSWORD"],
        ["-!- registered user1; next time, /login user1 PASSWORD"],
        ["-!- registered user2; next time, /login user2 PASSWORD"],
        ["error: too many registrations from your address; try again in 10 minutes"],
    ]
    registerNow(service, pool, "other", host="10.0.0.10")  # another address may
    clock.advance(600)
    conns[3].send(f"/register {PASSWORD}\n")
    pool.runAll()
    assert "registered user3" in conns[3].output()


def test_a_failed_registration_is_not_counted():
    service, _, pool = manualService(max_registrations_per_ip=1)
    alice = named(service, "alice", host="10.0.0.9")
    alice.send(f"/register {PASSWORD}\n")
    # Registered meanwhile through another server sharing the database.
    assert resultOf(service.store.addAccount(Account("alice", "alice", "x", None, False, 0.0)))
    pool.runAll()
    assert errors([alice]) == ['error: "alice" is already registered: /login alice PASSWORD']
    bob = named(service, "bob", port=5001, host="10.0.0.9")
    bob.send(f"/register {PASSWORD}\n")
    pool.runAll()
    assert "registered bob" in bob.output()
    carol = named(service, "carol", port=5002, host="10.0.0.9")
    carol.send(f"/register {PASSWORD}\n")
    assert errors([carol]) == [
        "error: too many registrations from your address; try again in 10 minutes"
    ]


def test_a_full_password_queue_refuses_with_busy_and_costs_no_attempt():
    service, _, pool = manualService(
        max_registrations_per_ip=1, passwords={"atOnce": 1, "maxWaiting": 2}
    )
    registerNow(service, pool, "boss", host="10.0.2.1")
    hashing = [named(service, f"user{i}", port=7000 + i, host=f"10.0.3.{i}") for i in range(3)]
    for conn in hashing:
        conn.send(f"/register {PASSWORD}\n")  # one hashing, two waiting: the queue is full
    logins = [LineConnection(service, host=f"10.0.0.{i}", port=6000 + i) for i in range(3)]
    for conn in logins:
        conn.output()
    busy = "error: the server is busy; try again in a moment"
    logins[0].send("/login boss guess\n")  # takes the place of the newest hash...
    assert errors(hashing) == [busy]
    logins[1].send("/login boss guess\n")  # ... and of the next
    assert errors(hashing) == [busy]
    logins[2].send("/login boss guess\n")  # a queue full of logins refuses logins too
    assert errors(logins) == [busy]
    pool.runAll()
    assert errors(logins) == [WRONG, WRONG]
    assert "registered user0" in hashing[0].output()
    # Neither the refused login nor the refused registrations counted.
    for _ in range(5):
        logins[2].send("/login boss guess\n")
        pool.runAll()
    assert errors(logins) == [WRONG] * 5
    for conn in hashing[1:]:
        conn.send(f"/register {PASSWORD}\n")
        pool.runAll()
        assert "registered user" in conn.output()


def test_passwd_uses_the_same_throttle():
    service, _, pool = manualService(max_login_failures=2)
    alice = named(service, "alice", host="10.0.0.9")
    alice.send(f"/register {PASSWORD}\n")
    pool.runAll()
    alice.output()
    for _ in range(3):
        alice.send("/passwd wrong-password new-password\n")
        pool.runAll()
    assert errors([alice]) == [
        "error: wrong password; your password is unchanged",
        "error: wrong password; your password is unchanged",
        "error: too many wrong passwords; try again in 1 minute",
    ]


# -- Passwords: a few hashes at a time, logins first --------------------------------------


def test_the_service_bounds_its_password_queue_by_the_setting():
    service = ChatService(Settings(max_password_queue=7), clock=Clock())
    assert service.passwords.maxWaiting == 7


def test_passwords_run_at_most_at_once_and_refuse_past_the_queue():
    passwords, pool = manualPasswords(atOnce=2, maxWaiting=3)
    results = [passwords.hash(f"pw{i}") for i in range(6)]
    assert len(pool.jobs) == 2  # in the thread pool; three wait; the sixth is refused
    assert passwords.waiting == 3
    refused = failureOf(results[5], Busy)
    assert str(refused.value) == "the server is busy; try again in a moment"
    pool.runNext()
    assert len(pool.jobs) == 2 and passwords.waiting == 2  # the next one took the slot
    pool.runAll()
    assert all(resultOf(d).startswith("$argon2id$") for d in results[:5])


def test_login_checks_go_before_queued_hashes():
    passwords, pool = manualPasswords(atOnce=1, maxWaiting=10)
    hashed = FAST_HASHER.hash(PASSWORD)
    done = []
    for name in ("hash 1", "hash 2", "hash 3"):
        passwords.hash(name).addCallback(lambda _, name=name: done.append(name))
    passwords.verify(hashed, "wrong", login=False).addCallback(lambda _: done.append("passwd"))
    passwords.verify(hashed, PASSWORD).addCallback(lambda ok: done.append(f"login {ok}"))
    passwords.verify(None, PASSWORD).addCallback(lambda ok: done.append(f"unknown {ok}"))
    assert len(pool.jobs) == 1
    pool.runAll()
    assert done == ["hash 1", "login True", "unknown False", "hash 2", "hash 3", "passwd"]


def test_a_login_bumps_the_newest_hash_from_a_full_queue():
    passwords, pool = manualPasswords(atOnce=1, maxWaiting=2)
    hashes = [passwords.hash(f"pw{i}") for i in range(3)]  # one running, two waiting
    login = passwords.verify(None, "guess")
    failureOf(hashes[2], Busy)
    second = passwords.verify(None, "guess")  # bumps the next newest
    failureOf(hashes[1], Busy)
    failureOf(passwords.verify(None, "guess"), Busy)  # no hash left to bump
    pool.runAll()
    assert resultOf(hashes[0]).startswith("$argon2id$")
    assert resultOf(login) is False and resultOf(second) is False


def test_an_admin_name_without_an_account_is_reserved():
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        service, clock = makeService(admins=("alice",))
        service.startService()
        resultOf(service.checkedAdmins)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    warnings = [formatEvent(e) for e in logged if e["log_level"].name == "warn"]
    assert warnings == [
        "admins: alice has no account yet, so the name is reserved: nobody can use or "
        "register it; make the account on the console with create_account('alice', PASSWORD)"
    ]
    mallory = LineConnection(service, host="10.6.6.6")
    mallory.send("alice\n/nick ALICE\n")
    assert [line for line in mallory.lines() if "error:" in line] == [
        '[12:00:00] error: the nickname "alice" is reserved for an admin of this server; '
        "choose another",
        '[12:00:00] error: the nickname "ALICE" is reserved for an admin of this server; '
        "choose another",
    ]
    # The console makes the account; its owner then logs in and is an admin.
    account = resultOf(defer.ensureDeferred(service.createAccount(CONSOLE, "alice", PASSWORD)))
    assert account.nick == "alice" and not account.admin
    alice = LineConnection(service, host="10.0.0.1")
    alice.send(f"/login alice {PASSWORD}\n")
    assert "you are logged in as alice (admin)" in alice.output()
    failure = failureOf(
        defer.ensureDeferred(service.createAccount(CONSOLE, "alice", PASSWORD)), NickRegistered
    )
    assert "already registered" in str(failure.value)
    service.stopService()


def test_an_account_made_on_the_console_can_be_an_admin():
    service, clock = makeService()
    resultOf(defer.ensureDeferred(service.createAccount(CONSOLE, "root", PASSWORD, admin=True)))
    root = LineConnection(service)
    root.send(f"/login root {PASSWORD}\n")
    assert "you are logged in as root (admin)" in root.output()
    weak = failureOf(
        defer.ensureDeferred(service.createAccount(CONSOLE, "x", "short")), WeakPassword
    )
    assert "at least 8 characters" in str(weak.value)
