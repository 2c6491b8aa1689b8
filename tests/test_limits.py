"""Each limit: its default, what the client sees when it is hit, and that others go on."""

import pytest
from helpers import LineConnection, makeService, named
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from chatserv.config import Settings
from chatserv.limits import (
    AddressBuckets,
    ConnectionLimiter,
    Deadlines,
    FloodGuard,
    LogLimiter,
    TokenBucket,
    Verdict,
)
from chatserv.protocols.line import LineChatFactory
from chatserv.protocols.ws import WebSocketChatFactory


def test_defaults_are_the_documented_ones():
    s = Settings()
    assert (s.max_line_length, s.ws_max_message_size, s.max_message_length) == (2048, 65536, 1024)
    assert (s.max_room_name_length, s.max_rooms) == (32, 1000)
    assert (s.max_connections, s.max_connections_per_ip, s.max_output_buffer) == (
        10000,
        100,
        262144,
    )
    assert (s.rate_limit, s.rate_burst, s.flood_max_dropped) == (5.0, 20, 50)
    assert (s.nick_timeout, s.ping_interval, s.ping_timeout) == (60.0, 60.0, 30.0)
    assert (s.ws_frame_rate, s.ws_frame_burst, s.ws_max_fragments) == (50.0, 200, 64)
    assert (s.log_rate_limit, s.log_burst) == (20.0, 200)
    assert s.close_grace == 2.0


# -- the building blocks -----------------------------------------------------------------


def test_token_bucket_allows_burst_then_rate():
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.take(0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) is True and bucket.take(0.5) is False
    assert [bucket.take(100) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_flood_guard_warns_once_drops_then_disconnects():
    guard = FloodGuard(rate=1, burst=2, maxDropped=3, now=0)
    verdicts = [guard.check(0) for _ in range(6)]
    assert verdicts == [
        Verdict.ACCEPT,
        Verdict.ACCEPT,
        Verdict.WARN,
        Verdict.DROP,
        Verdict.DROP,
        Verdict.DISCONNECT,
    ]


def test_flood_guard_forgives_an_occasional_burst():
    guard = FloodGuard(rate=1, burst=2, maxDropped=3, now=0)
    assert [guard.check(0) for _ in range(4)][-1] is Verdict.DROP
    assert guard.check(10) is Verdict.ACCEPT  # ten seconds later: all forgiven
    assert [guard.check(10) for _ in range(4)] == [
        Verdict.ACCEPT,
        Verdict.WARN,  # a new episode is warned about again
        Verdict.DROP,
        Verdict.DROP,
    ]


def test_connection_limiter_per_address_and_total():
    limiter = ConnectionLimiter(maxTotal=3, maxPerAddress=2)
    assert limiter.admit("a") is None and limiter.admit("a") is None
    assert "too many connections from your address (the limit is 2)" in limiter.admit("a")
    assert limiter.admit("b") is None
    assert "the server is full (3 connections)" in limiter.admit("c")
    limiter.release("a")
    assert limiter.admit("c") is None
    limiter.release("nobody")  # harmless
    assert limiter.total == 3 and limiter.byAddress == {"a": 1, "b": 1, "c": 1}


# -- on the line protocol ----------------------------------------------------------------


def test_flooding_client_is_warned_throttled_then_disconnected():
    service, clock = makeService(rate_limit=5, rate_burst=20, flood_max_dropped=50)
    alice = named(service, "alice")
    flooder = named(service, "flood", port=5001)
    alice.output()
    flooder.send("".join(f"spam {i}\n" for i in range(30)))
    assert len(alice.lines()) == 19  # the burst of 20, less the nickname line
    (warning,) = flooder.lines()
    assert warning == (
        "[12:00:00] error: slow down: you are sending more than 5 requests a second; "
        "what you send is dropped until you do"
    )
    clock.advance(1)
    flooder.send("".join(f"more {i}\n" for i in range(10)))
    assert [line.split("> ")[1] for line in alice.lines()] == [f"more {i}" for i in range(5)]
    assert flooder.lines() == [
        "[12:00:01] error: slow down: you are sending more than 5 "
        "requests a second; what you send is dropped until you do"
    ]
    assert not flooder.transport.disconnecting
    flooder.send("x\n" * 60)  # a sustained flood
    assert flooder.lines()[-1] == "[12:00:01] -!- disconnected: you sent too much, too fast"
    assert flooder.transport.disconnecting
    assert alice.lines() == ["[12:00:01] #lobby <-- flood has left (flooding)"]
    alice.send("/who\n")
    assert alice.lines() == ["[12:00:01] #lobby users (1): alice"]


def test_an_address_has_one_allowance_over_all_its_connections():
    service, clock = makeService(
        rate_limit=5, rate_burst=20, ip_rate_limit=10, ip_rate_burst=30, flood_max_dropped=50
    )
    alice = named(service, "alice", host="10.0.0.9")
    flooders = [named(service, f"flood{i}", port=5001 + i, host="10.0.0.66") for i in range(3)]
    alice.output()
    for flooder in flooders:
        flooder.output()
    for flooder in flooders:  # each within its own burst of 20 (less its nickname line)
        flooder.send("".join(f"spam {i}\n" for i in range(15)))
    said = [line for line in alice.lines() if "> spam" in line]
    assert len(said) == 30 - 3  # the address's burst, less the three nicknames
    errors = [[line for line in f.lines() if "error:" in line] for f in flooders]
    assert errors[0] == []  # the first 15 were within the address's burst; then not
    assert (
        errors[1]
        == errors[2]
        == [
            "[12:00:00] error: slow down: your address (all its connections) is sending more "
            "than 10 requests a second; what you send is dropped until you do"
        ]
    )
    clock.advance(1)
    for flooder in flooders:
        flooder.send("again\n" * 5)
    assert len(alice.lines()) == 10  # the address's rate, not three connections' rates
    flooders[0].output()
    alice.send("".join(f"mine {i}\n" for i in range(15)))  # another address: unaffected
    assert len(flooders[0].lines()) == 15


def test_an_address_can_open_only_so_many_connections_so_fast():
    service, clock = makeService(ip_connect_rate=1, ip_connect_burst=3)
    first = [LineConnection(service, host="10.0.0.66", port=6000 + i) for i in range(3)]
    assert all("Type a nickname" in c.output() for c in first)
    refused = LineConnection(service, host="10.0.0.66", port=6003)
    assert refused.output() == (
        "[12:00:00] error: too many new connections from your address (more than 1 a second); "
        "try again in a few seconds\r\n"
    )
    other = LineConnection(service, host="10.0.0.7", port=6004)
    assert "Type a nickname" in other.output()
    for conn in first:
        conn.drop()  # closing gives no new allowance: only time does
    assert "too many new connections" in LineConnection(service, host="10.0.0.66").output()
    clock.advance(1)
    assert "Type a nickname" in LineConnection(service, host="10.0.0.66").output()
    assert service.counters.refused_connections == 2


def test_address_buckets_forget_addresses_that_have_been_quiet():
    buckets = AddressBuckets(rate=1.0, burst=2)
    assert buckets.take("a", 0.0) and buckets.take("b", 0.0) and buckets.take("b", 0.0)
    assert not buckets.take("b", 0.5)
    assert len(buckets) == 2
    assert buckets.take("c", 11.0)  # the sweep: a and b have filled up again
    assert len(buckets) == 1
    assert buckets.take("b", 11.0) and buckets.take("b", 11.0) and not buckets.take("b", 11.0)


def test_garbage_counts_against_the_rate_too():
    service, _ = makeService(rate_limit=1, rate_burst=2, flood_max_dropped=2)
    conn = named(service, "alice")
    conn.send(b"\xff\xfe\x80\n" * 10)
    assert conn.transport.disconnecting


def test_nickname_must_be_chosen_in_time():
    service, clock = makeService(nick_timeout=30)
    idle = LineConnection(service, port=6000)
    prompt = LineConnection(service, port=6001)
    prompt.send("bob\n")
    idle.output()
    clock.advance(29)
    assert not idle.transport.disconnecting
    clock.advance(1)
    assert idle.lines() == ["[12:00:30] -!- disconnected: no nickname chosen in 30 seconds"]
    assert idle.transport.disconnecting
    assert not prompt.transport.disconnecting  # had chosen one
    idle.drop()  # the close completes
    assert not clock.getDelayedCalls()  # bob's timer was cancelled when he chose


def test_nick_timer_is_cancelled_when_the_connection_goes():
    service, clock = makeService()
    conn = LineConnection(service)
    conn.output()  # and the greeting's flush is done
    conn.drop()
    assert not clock.getDelayedCalls()


def test_message_length_limit():
    service, _ = makeService(max_message_length=10)
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    alice.output()
    bob.send("0123456789\n01234567890\n/msg alice 01234567890\n")
    assert bob.lines() == [
        "[12:00:00] error: message too long (the limit is 10 characters)",
        "[12:00:00] error: message too long (the limit is 10 characters)",
    ]
    assert alice.lines() == ["[12:00:00] #lobby <bob> 0123456789"]


def test_room_limits():
    service, _ = makeService(max_rooms=3, max_room_name_length=8)
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    alice.output()
    alice.send("/join abcdefghi\n")
    assert "invalid room name" in alice.lines()[0]
    alice.send("/join one\n")
    bob.send("/join two\n")
    alice.output()
    alice.send("/join three\n")
    assert alice.lines() == [
        "[12:00:00] error: there are too many rooms (the limit is 3); "
        "join one that exists: /rooms lists them"
    ]
    assert sorted(service.rooms) == ["lobby", "one", "two"]
    alice.send("/join two\n")  # existing rooms can still be joined
    assert alice.lines()[0] == "[12:00:00] #two --> alice has joined"


def test_room_names_may_be_longer_when_configured():
    service, _ = makeService(max_room_name_length=50)
    alice = named(service, "alice")
    alice.send("/join " + "r" * 50 + "\n")
    assert alice.lines()[0].endswith("r" * 50 + " --> alice has joined")


@pytest.mark.parametrize("factoryClass", [LineChatFactory, WebSocketChatFactory])
def test_connection_limits_apply_across_listeners(factoryClass):
    service, clock = makeService(max_connections_per_ip=2, max_connections=3)
    lines = LineChatFactory(service)
    other = (
        factoryClass(service, reactor=clock)
        if factoryClass is WebSocketChatFactory
        else (factoryClass(service))
    )

    opened = []

    def connect(factory, host):
        address = IPv4Address("TCP", host, 1234)
        protocol = factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        opened.append(protocol)
        return protocol, transport

    first, _ = connect(lines, "1.1.1.1")
    connect(other, "1.1.1.1")
    _, refused = connect(lines, "1.1.1.1")
    assert refused.value() == (
        b"[12:00:00] error: too many connections from your address (the limit is 2)\r\n"
    )
    assert refused.disconnecting
    connect(lines, "2.2.2.2")
    _, full = connect(other, "3.3.3.3")
    assert b"the server is full (3 connections)" in full.value()
    first.connectionLost(None)
    _, again = connect(lines, "1.1.1.1")
    assert not again.disconnecting
    for protocol in opened[1:]:  # stops Autobahn's handshake timers
        protocol.connectionLost(Failure(ConnectionDone()))


def test_websocket_refusal_is_an_http_503():
    service, clock = makeService(max_connections_per_ip=1)
    factory = WebSocketChatFactory(service, reactor=clock)
    address = IPv4Address("TCP", "1.1.1.1", 1)
    admitted = factory.buildProtocol(address)
    admitted.makeConnection(StringTransport(peerAddress=address))
    refused = StringTransport(peerAddress=address)
    factory.buildProtocol(address).makeConnection(refused)
    admitted.connectionLost(Failure(ConnectionDone()))
    assert refused.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert refused.value().endswith(
        b"\r\n\r\ntoo many connections from your address (the limit is 1)\n"
    )


def test_slow_reader_is_dropped_and_others_keep_receiving():
    service, _ = makeService(max_output_buffer=2000, rate_limit=1e6, rate_burst=10**6)
    slow = named(service, "slow")
    fast = named(service, "fast", port=5001)
    talker = named(service, "talker", port=5002)
    slow.output()
    fast.output()
    # The transport asks its producer to pause when its buffer is full, i.e. the client
    # is not reading; StringTransport never does that by itself, so say it here.
    slow.transport.producer.pauseProducing()
    talker.send("".join(f"message number {i:04}\n" for i in range(100)))
    slow.protocol.factory.flusher.flush()  # the end of the reactor turn
    assert slow.transport.disconnecting  # aborted, not waiting for a flush
    assert len(slow.transport.value()) < 2000 + 200  # the backlog stopped at the limit
    slow.drop()  # what the reactor does after an abort
    received = fast.lines()
    assert sum("<talker> message number" in line for line in received) == 100
    assert received[-1] == "[12:00:00] #lobby <-- slow has left (not reading)"
    assert service.findUser("slow") is None


def test_reader_that_catches_up_is_not_dropped():
    service, _ = makeService(max_output_buffer=2000, rate_limit=1e6, rate_burst=10**6)
    reader = named(service, "reader")
    talker = named(service, "talker", port=5001)
    for _ in range(10):
        reader.transport.producer.pauseProducing()
        talker.send("".join(f"message number {i:04}\n" for i in range(30)))
        reader.protocol.factory.flusher.flush()
        reader.transport.producer.resumeProducing()  # it read everything
    assert not reader.transport.disconnecting


def test_a_close_that_never_completes_is_aborted():
    service, clock = makeService(nick_timeout=10, ping_timeout=30)
    stuck = LineConnection(service)  # e.g. stalled in a TLS handshake: nothing drains
    clock.advance(10)
    assert stuck.transport.disconnecting and not stuck.transport.disconnected  # asked politely
    clock.advance(30)
    assert stuck.transport.disconnected  # what abortConnection sets


def test_deadlines_expire_in_order_with_one_timer():
    clock = Clock()
    expired = []
    deadlines = Deadlines(clock, 10, expired.append)
    first = deadlines.add("first")
    clock.advance(3)
    deadlines.add("second")
    third = deadlines.add("third")
    assert len(clock.getDelayedCalls()) == 1  # one timer, however many items
    deadlines.cancel(third)
    clock.advance(6.9)
    assert expired == []
    clock.advance(0.1)  # first is due at 10
    assert expired == ["first"]
    deadlines.cancel(first)  # too late: no effect
    clock.advance(3)  # second and (cancelled) third are due at 13
    assert expired == ["first", "second"]
    assert not clock.getDelayedCalls() and len(deadlines) == 0


def test_deadlines_leave_no_timer_once_everything_is_cancelled():
    clock = Clock()
    deadlines = Deadlines(clock, 60, lambda item: None)
    handles = [deadlines.add(i) for i in range(5)]
    for handle in reversed(handles):  # the front last: the queue empties only then
        deadlines.cancel(handle)
    assert not clock.getDelayedCalls() and len(deadlines) == 0
    deadlines.add("again")
    assert len(clock.getDelayedCalls()) == 1
    deadlines.stop()
    assert not clock.getDelayedCalls()


def test_a_failing_expiry_is_logged_and_the_rest_still_expire():
    clock = Clock()
    expired = []

    def expire(item):
        if item == "bad":
            raise RuntimeError("boom")
        expired.append(item)

    deadlines = Deadlines(clock, 1, expire)
    for item in ("bad", "good"):
        deadlines.add(item)
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        clock.advance(1)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert expired == ["good"]
    assert [e["log_format"] for e in logged if "log_failure" in e] == ["a deadline's expiry failed"]


def test_an_item_added_while_expiring_gets_the_full_delay():
    clock = Clock()
    expired = []
    deadlines = Deadlines(clock, 5, lambda item: (expired.append(item), deadlines.add("next")))
    deadlines.add("first")
    clock.advance(5)
    clock.advance(4.9)
    assert expired == ["first"]
    clock.advance(0.1)
    assert expired == ["first", "next"]
    deadlines.stop()


def test_log_lines_of_each_kind_are_capped_and_what_is_left_out_is_counted():
    from twisted.logger import Logger, formatEvent

    clock = Clock()
    limiter = LogLimiter(clock, rate=2, burst=5)
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        log = Logger(namespace="test")
        for i in range(50):
            limiter.info(log, "connect from {address}", address=f"tcp 10.0.0.{i}:1")
        limiter.info(log, "refused {why}", why="full")  # another kind: its own allowance
        clock.advance(1)  # one second: two more of the first kind
        for i in range(50, 53):
            limiter.info(log, "connect from {address}", address=f"tcp 10.0.0.{i}:1")
        assert [formatEvent(e) for e in logged] == [
            *[f"connect from tcp 10.0.0.{i}:1" for i in range(5)],
            "refused full",
            "connect from tcp 10.0.0.50:1",
            "connect from tcp 10.0.0.51:1",
        ]
        clock.advance(LogLimiter.REPORT_EVERY)  # the report is due
        assert formatEvent(logged[-1]) == (
            "46 more log lines like 'connect from {address}' were left out "
            "(over log_rate_limit, 2 a second)"
        )
        assert not clock.getDelayedCalls()  # nothing more to report: no timer
        limiter.info(log, "connect from {address}", address="x")  # refilled (5) meanwhile
        for _ in range(10):
            limiter.info(log, "connect from {address}", address="y")
        limiter.stop()  # shutting down: report now, then let everything through
        assert formatEvent(logged[-1]).startswith("6 more log lines like 'connect from")
        assert not clock.getDelayedCalls()
        before = len(logged)
        for _ in range(10):
            limiter.info(log, "disconnect {why}", why="server shutting down")
        assert len(logged) == before + 10
    finally:
        globalLogPublisher.removeObserver(logged.append)
