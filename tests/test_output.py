"""What leaves a connection: one write per reactor turn, in order; slow readers bounded."""

from __future__ import annotations

import pytest
import pytest_twisted
import wsmemory as ws
from clients import eventually
from helpers import LineConnection, makeService, named
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher

from chatserv.protocols.output import Flusher
from chatserv.service import CONSOLE


class CountingTransport(StringTransport):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def counted(conn) -> CountingTransport:
    """Swap a connection's transport for one that counts writes (same buffer so far)."""
    transport = CountingTransport(peerAddress=conn.transport.getPeer())
    transport.producer = conn.transport.producer
    conn.transport = conn.protocol.transport = transport
    return transport


def test_a_turn_of_messages_leaves_in_one_write_in_order():
    service, _ = makeService(rate_limit=1e6, rate_burst=10**6)
    listener = named(service, "listener")
    talker = named(service, "talker", port=5001)
    listener.output()
    transport = counted(listener)
    talker.send("".join(f"message {i}\n" for i in range(50)))
    assert transport.writes == 0  # nothing before the end of the turn
    lines = listener.lines()
    assert transport.writes == 1
    assert lines == [f"[12:00:00] #lobby <talker> message {i}" for i in range(50)]


def test_the_flusher_runs_once_at_the_end_of_the_turn():
    service, clock = makeService()
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    alice.output()
    bob.send("hello\n")
    # The flush is a call for "now" on the clock: the reactor runs it before it polls.
    pending = [c for c in clock.getDelayedCalls() if c.getTime() == clock.seconds()]
    assert len(pending) == 1
    assert alice.transport.value() == b""
    clock.advance(0)
    assert alice.transport.value() == b"[12:00:00] #lobby <bob> hello\r\n"
    assert not [c for c in clock.getDelayedCalls() if c.getTime() == clock.seconds()]


def test_a_farewell_follows_what_was_pending():
    service, _ = makeService()
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    alice.output()
    bob.send("last words\n")
    service.kick(CONSOLE, "alice", "enough")  # closes alice's connection with a farewell notice
    lines = alice.lines()
    assert lines[0] == "[12:00:00] #lobby <bob> last words"
    assert "enough" in lines[-1]
    assert alice.transport.disconnecting


def test_output_for_a_lost_connection_is_dropped():
    service, _ = makeService()
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    alice.output()
    bob.send("are you there?\n")
    alice.drop()
    assert alice.output() == ""


def test_one_failing_connection_does_not_hold_back_the_others():
    service, clock = makeService()
    flusher = Flusher(clock)
    written = []

    class Broken:
        address = "tcp broken"

        def flush(self):
            raise RuntimeError("boom")

    class Fine:
        address = "tcp fine"

        def flush(self):
            written.append("fine")

    logged = []
    observer = logged.append
    globalLogPublisher.addObserver(observer)
    try:
        flusher.add(Broken())
        flusher.add(Fine())
        clock.advance(0)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert written == ["fine"]
    failures = [e for e in logged if e.get("log_level") == LogLevel.critical]
    assert len(failures) == 1 and failures[0]["address"] == "tcp broken"


@pytest.mark.parametrize("isJSON", [False, True])
def test_websocket_turn_leaves_in_one_write(isJSON):
    service, clock = makeService(rate_limit=1e6, rate_burst=10**6)
    factory = ws.makeFactory(service, clock)
    listener = ws.WSConnection(factory, json=isJSON)
    if isJSON:
        listener.request(type="nick", nick="listener")
    else:
        listener.send("listener")
    listener.frames()
    talker = LineConnection(service, port=5001)
    talker.send("talker\n")
    listener.frames()
    transport = counted(listener)
    talker.send("".join(f"message {i}\n" for i in range(20)))
    messages = listener.messages()
    assert transport.writes == 1
    if isJSON:
        assert [m["text"] for m in messages] == [f"message {i}" for i in range(20)]
    else:
        assert messages == [f"[12:00:00] #lobby <talker> message {i}" for i in range(20)]


def test_websocket_pong_and_close_come_after_pending_output():
    """Autobahn writes its own frames at once; what was pending must not be overtaken."""
    service, clock = makeService()
    factory = ws.makeFactory(service, clock)
    listener = ws.WSConnection(factory)
    listener.send("listener")
    listener.frames()
    talker = named(service, "talker", port=5001)
    listener.frames()
    talker.send("before the ping\n")
    listener.sendFrame(ws.PING, b"p1")
    listener.sendFrame(ws.TEXT, b"\xff")  # not UTF-8: Autobahn closes with 1007
    frames = listener.frames()
    kinds = [(f.opcode, f.payload if f.opcode != ws.TEXT else f.text) for f in frames]
    assert kinds[0] == (ws.TEXT, "[12:00:00] #lobby <talker> before the ping")
    assert kinds[1] == (ws.PONG, b"p1")
    assert frames[-1].opcode == ws.CLOSE and frames[-1].code == 1007


def test_slow_reader_limit_is_exact_and_counts_only_while_paused():
    line = b"[12:00:00] #lobby <talker> 0123456789\r\n"
    service, _ = makeService(max_output_buffer=2 * len(line))
    reader = named(service, "reader")
    talker = named(service, "talker", port=5001)
    reader.output()
    for _ in range(5):  # keeping up: nothing counted, however much
        talker.send("0123456789\n")
        reader.output()
    producer = reader.transport.producer
    assert producer is reader.protocol  # the protocol is its transport's producer
    producer.pauseProducing()
    for _ in range(2):  # exactly the limit while paused: still connected
        talker.send("0123456789\n")
        assert reader.outputBytes() == line
    assert not reader.transport.disconnecting
    talker.send("0123456789\n")  # one byte more than the limit
    assert reader.outputBytes() == b""
    assert reader.transport.disconnecting
    assert service.counters.slow_readers == 1


@pytest_twisted.ensureDeferred
async def test_write_now_sends_at_once_and_leaves_the_rest_to_twisted_in_order():
    from twisted.internet import defer, protocol, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

    from chatserv.protocols.output import writeNow

    accepted: defer.Deferred = defer.Deferred()

    class Server(protocol.Protocol):
        def connectionMade(self) -> None:
            accepted.callback(self.transport)

    class Client(protocol.Protocol):
        def __init__(self) -> None:
            self.got = bytearray()

        def dataReceived(self, data: bytes) -> None:
            self.got += data

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(Server)
    )
    client = Client()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    transport = await accepted
    try:
        writeNow(transport, b"hello")
        assert transport not in reactor.getWriters()  # sent, not queued for the next poll
        await eventually(lambda: bytes(client.got) == b"hello")
        # A client that does not read: the kernel takes what it can, Twisted the rest.
        client.transport.pauseProducing()
        chunks = [b"%08d" % i * 128 for i in range(4000)]  # 4 MB, numbered
        for chunk in chunks:
            writeNow(transport, chunk)
        assert transport in reactor.getWriters()  # the rest waits in Twisted's buffer
        client.transport.resumeProducing()
        expected = b"hello" + b"".join(chunks)
        await eventually(lambda: len(client.got) == len(expected), timeout=20)
        assert bytes(client.got) == expected
    finally:
        client.transport.loseConnection()
        transport.loseConnection()
        await port.stopListening()
