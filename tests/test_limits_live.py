"""Limits over real sockets: floods, slow readers, many connections, dead peers."""

from __future__ import annotations

import select
import socket
import time

import pytest_twisted
import wsmemory as ws
from clients import connectLine, connectWS, eventually
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString

from chatserv.config import Settings
from chatserv.protocols.line import LineChatFactory
from chatserv.protocols.web import ChatSite
from chatserv.service import ChatService

LOCAL = "tcp:0:interface=127.0.0.1:backlog=1024"
LINE_CLOSE_GRACE = 1.0  # close_grace of the test of it


async def startServer(**settings):
    from twisted.internet import reactor

    # Every client here comes from 127.0.0.1: the per-address limits are tested apart.
    for name, value in (("ip_rate_limit", 1e6), ("ip_rate_burst", 10**6)):
        settings.setdefault(name, value)
    settings.setdefault("ip_connect_burst", 10**6)
    chat = ChatService(Settings(**settings), clock=reactor)
    chat.startService()
    tcp = await serverFromString(reactor, LOCAL).listen(LineChatFactory(chat))
    ws = await serverFromString(reactor, LOCAL).listen(ChatSite(chat, reactor=reactor))
    return chat, tcp, ws


async def stopServer(chat, *ports, clients=()):
    for port in ports:
        await port.stopListening()
    for client in clients:
        if client.transport.connected:
            await client.hangUp()
    chat.stopService()
    await eventually(lambda: chat.admission.total == 0)


async def named(port: int, nick: str, source: str | None = None):
    client = await connectLine(port, source=source)
    await client.until("Type a nickname")
    client.say(nick)
    await client.until("users (")
    return client


@pytest_twisted.ensureDeferred
async def test_flood_is_throttled_then_dropped_while_others_chat():
    from twisted.internet import reactor

    chat, tcp, ws = await startServer()
    port = tcp.getHost().port
    alice = await named(port, "alice")
    bob = await named(port, "bob")
    flooder = await named(port, "flooder")
    await alice.until("flooder has joined")
    await bob.until("flooder has joined")

    def flood():
        if flooder.transport.connected:
            flooder.transport.write(b"spam spam spam spam spam spam spam spam\n" * 200)

    pump = task.LoopingCall(flood)
    pump.start(0.01)
    latencies = []
    try:
        for i in range(10):
            sent = time.monotonic()
            alice.say(f"ping {i}")
            await bob.until(f"<alice> ping {i}")
            latencies.append(time.monotonic() - sent)
            await task.deferLater(reactor, 0.05)
        assert "error: slow down: you are sending more than 5 requests a second" in (
            await flooder.until("slow down")
        )
        assert "disconnected: you sent too much, too fast" in await flooder.until("disconnected")
        await flooder.closed
        await eventually(lambda: chat.findUser("flooder") is None)
        assert any("#lobby <-- flooder has left (flooding)" in line for line in bob.history)
    finally:
        pump.stop()
    # Generous: on a loaded CI machine a few ms become tens; a starved room would be seconds.
    assert max(latencies) < 1.0, latencies
    await stopServer(chat, tcp, ws, clients=[alice, bob])


@pytest_twisted.ensureDeferred
async def test_slow_reader_in_a_busy_room():
    from twisted.internet import reactor

    # Default output cap (256 KiB); flood control off so that one talker can be busy.
    chat, tcp, ws = await startServer(rate_limit=1e6, rate_burst=10**6, flood_max_dropped=10**6)
    port = tcp.getHost().port
    # A reader that never reads, with small buffers so the server notices soon.
    slow = socket.create_connection(("127.0.0.1", port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(b"slow\n")
    await eventually(lambda: chat.findUser("slow") is not None)
    server_side = chat.findUser("slow").client.transport
    server_side.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reader = await named(port, "reader")
    talker = await named(port, "talker")
    total, line = 4000, "x" * 200
    for i in range(0, total, 100):  # about 1 MB/s to each member
        talker.say("\n".join(f"{line} {j}" for j in range(i, i + 100)).encode())
        await task.deferLater(reactor, 0.02)
    got = 0
    while got < total:
        if f"{line} " in await reader.next():
            got += 1
    assert got == total  # every message reached the member who reads
    await eventually(lambda: chat.findUser("slow") is None)
    assert any("#lobby <-- slow has left (not reading)" in item for item in reader.history)
    assert any("#lobby <-- slow has left (not reading)" in item for item in talker.history)
    slow.close()
    await stopServer(chat, tcp, ws, clients=[reader, talker])


@pytest_twisted.ensureDeferred
async def test_200_connections_from_one_address_against_a_limit_of_100():
    chat, tcp, ws = await startServer(max_connections_per_ip=100, nick_timeout=30)
    port = tcp.getHost().port
    clients = await defer.gatherResults(
        [defer.ensureDeferred(connectLine(port)) for _ in range(200)]
    )
    first = await defer.gatherResults([defer.ensureDeferred(c.next()) for c in clients])
    greeted = [c for c, line in zip(clients, first, strict=True) if "Type a nickname" in line]
    refused = [c for c, line in zip(clients, first, strict=True) if "too many connections" in line]
    assert (len(greeted), len(refused)) == (100, 100)
    assert first[clients.index(refused[0])].endswith(
        "error: too many connections from your address (the limit is 100)"
    )
    await defer.gatherResults([c.closed for c in refused])  # the server closed them
    assert chat.admission.byAddress == {"127.0.0.1": 100}
    await greeted[0].hangUp()
    again = await connectLine(port)
    assert "Type a nickname" in await again.next()  # a freed slot is usable again
    await stopServer(chat, tcp, ws, clients=greeted[1:] + [again])


@pytest_twisted.ensureDeferred
async def test_line_connections_get_tuned_tcp_keepalive():
    chat, tcp, ws = await startServer(ping_interval=45, ping_timeout=15)
    alice = await named(tcp.getHost().port, "alice")
    sock = chat.findUser("alice").client.transport.getHandle()
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 45
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    await stopServer(chat, tcp, ws, clients=[alice])


@pytest_twisted.ensureDeferred
async def test_both_wires_turn_off_nagle():
    """Small chat frames must leave at once, not wait for the peer's delayed ACK."""
    chat, tcp, ws = await startServer()
    alice = await named(tcp.getHost().port, "alice")
    bob = await connectWS(ws.getHost().port)
    await bob.until("Type a nickname")
    bob.say("bob")
    await eventually(lambda: chat.findUser("bob") is not None)
    for nick in ("alice", "bob"):
        sock = chat.findUser(nick).client.transport.getHandle()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1, nick
    await stopServer(chat, tcp, ws, clients=[alice, bob])


@pytest_twisted.ensureDeferred
async def test_dead_websocket_is_closed_after_unanswered_pings():
    from twisted.internet import reactor

    chat, tcp, ws = await startServer(ping_interval=1, ping_timeout=1)
    # A client that completes the handshake and then never answers anything.
    dead = socket.create_connection(("127.0.0.1", ws.getHost().port))
    dead.sendall(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await eventually(lambda: len(chat.sessions) == 1)
    started = time.monotonic()
    dead.setblocking(False)
    received = bytearray()

    def readAndCheck() -> bool:
        try:
            received.extend(dead.recv(65536))
        except (BlockingIOError, ConnectionResetError):
            pass
        return not chat.sessions

    await eventually(readAndCheck, timeout=10)
    assert time.monotonic() - started < 5  # pinged within ~1 s, given up ~1 s later
    assert b"\x89" in received  # it was pinged: a ping frame (FIN + opcode 0x9)
    dead.close()
    await task.deferLater(reactor, 0)
    await stopServer(chat, tcp, ws)


@pytest_twisted.ensureDeferred
async def test_a_websocket_that_sends_but_never_answers_pings_is_closed():
    """Traffic from the client is no answer to a ping: only a pong is."""
    from twisted.internet import reactor

    chat, tcp, ws = await startServer(ping_interval=1, ping_timeout=1)
    chatty = socket.create_connection(("127.0.0.1", ws.getHost().port))
    chatty.sendall(UPGRADE)
    await eventually(lambda: len(chat.sessions) == 1)
    started = time.monotonic()
    # Every 0.2 s an empty text frame (masked, no payload), and never a pong: before,
    # any data frame restarted the wait for a pong, for ever.
    while chat.sessions and time.monotonic() - started < 8:
        try:
            chatty.sendall(b"\x81\x80" + b"\x00\x00\x00\x00")
        except OSError:
            break
        await task.deferLater(reactor, 0.2)
    assert not chat.sessions, "still connected after 8 s"
    assert time.monotonic() - started < 4  # pinged after ~1 s, given up ~1 s later
    chatty.close()
    await task.deferLater(reactor, 0)
    await stopServer(chat, tcp, ws)


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def rawWebSocket(chat, port: int, nick: str) -> socket.socket:
    """A websocket client on a plain socket, named C{nick}, that reads nothing more."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(UPGRADE)
    sock.setblocking(False)
    head = bytearray()

    def upgraded() -> bool:
        try:
            head.extend(sock.recv(4096))
        except BlockingIOError:
            pass
        return b"\r\n\r\n" in head

    await eventually(upgraded)  # a client may send frames only after the 101
    assert head.startswith(b"HTTP/1.1 101 ")
    sock.send(ws.encodeFrame(ws.TEXT, nick.encode()))
    await eventually(lambda: chat.findUser(nick) is not None)
    return sock


async def pump(sock: socket.socket, chunk: bytes, until, seconds: float = 20) -> None:
    """Send C{chunk} as fast as the socket takes it, letting the reactor run, until
    C{until()} (bounded: at most C{seconds})."""
    from twisted.internet import reactor

    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "the server never stopped the flood"
        try:
            sock.send(chunk)
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            break
        await task.deferLater(reactor, 0)
    await eventually(until)


async def chatLatency(alice, bob, rounds: int = 5) -> float:
    """The slowest of C{rounds} messages from alice to bob, in seconds."""
    worst = 0.0
    for i in range(rounds):
        sent = time.monotonic()
        alice.say(f"latency {i}")
        await bob.until(f"<alice> latency {i}")
        worst = max(worst, time.monotonic() - sent)
    return worst


async def floodWhileOthersChat(
    first: bytes, chunk: bytes, why: str, smallBuffer: bool = False, **settings
) -> ChatService:
    """A websocket client that never reads sends C{first}, then C{chunk} as fast as it
    can; the server must end it (bystanders see it leave with C{why}) while alice and bob
    chat on at once. C{smallBuffer}: shrink the server's send buffer to it, so that what
    the server writes to it backs up soon."""
    chat, tcp, ws_ = await startServer(**settings)
    alice, bob = await named(tcp.getHost().port, "alice"), await named(tcp.getHost().port, "bob")
    flooder = await rawWebSocket(chat, ws_.getHost().port, "flooder")
    if smallBuffer:
        server_side = chat.findUser("flooder").client.transport
        server_side.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    flooder.send(first)
    await pump(flooder, chunk, lambda: chat.findUser("flooder") is None)
    await bob.until(f"flooder has left ({why})")
    assert await chatLatency(alice, bob) < 1.0
    flooder.close()
    await stopServer(chat, tcp, ws_, clients=[alice, bob])
    return chat


PINGS = ws.encodeFrame(ws.PING, b"x" * 125) * 100


@pytest_twisted.ensureDeferred
async def test_a_ping_flood_is_closed_by_the_frame_limit():
    chat = await floodWhileOthersChat(b"", PINGS, "too many frames")
    assert chat.counters.floods == 1


@pytest_twisted.ensureDeferred
async def test_pongs_to_a_client_that_never_reads_count_as_its_output():
    # The frame limit out of the way: only the output limit can stop this one.
    chat = await floodWhileOthersChat(
        b"", PINGS, "not reading", smallBuffer=True, ws_frame_rate=1e9, ws_frame_burst=10**9
    )
    assert chat.counters.slow_readers == 1


@pytest_twisted.ensureDeferred
async def test_a_message_that_never_ends_is_closed_while_others_chat():
    start = ws.encodeFrame(ws.TEXT, b"x", fin=False)
    empty = ws.encodeFrame(ws.CONTINUATION, b"", fin=False) * 10
    await floodWhileOthersChat(start, empty, "message in too many fragments")


@pytest_twisted.ensureDeferred
async def test_connection_churn_writes_a_bounded_log():
    from twisted.logger import formatEvent, globalLogPublisher

    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        chat, tcp, ws_ = await startServer(log_rate_limit=5, log_burst=20, max_connections_per_ip=5)
        port = tcp.getHost().port
        started = time.monotonic()
        for _ in range(20):  # 300 connects, 200 of them refused by the per-address limit
            clients = await defer.gatherResults(
                [defer.ensureDeferred(connectLine(port)) for _ in range(15)]
            )
            await defer.gatherResults([defer.ensureDeferred(c.next()) for c in clients])
            for client in clients:
                client.transport.abortConnection()
            await eventually(lambda: chat.admission.total == 0)
        elapsed = time.monotonic() - started
        await stopServer(chat, tcp, ws_)  # reports what was left out
    finally:
        globalLogPublisher.removeObserver(logged.append)
    lines = [formatEvent(e) for e in logged]
    allowed = 20 + 5 * elapsed  # per kind: the burst, then the rate
    for kind in ("connect from", "disconnect tcp", "refused tcp connection"):
        written = [line for line in lines if line.startswith(kind)]
        assert 0 < len(written) <= allowed, (kind, len(written), allowed)
    reports = [line for line in lines if "more log lines like 'refused" in line]
    assert len(reports) == 1 and int(reports[0].split()[0]) == 200 - len(
        [line for line in lines if line.startswith("refused tcp connection")]
    )


@pytest_twisted.ensureDeferred
async def test_simultaneous_guesses_check_at_most_five_passwords():
    """40 connections from one address guess at once, three times each, with real argon2
    in the thread pool: 5 guesses are checked, the rest refused unchecked, and neither the
    owner (another address) nor a bystander (the same address) is locked out."""
    chat, tcp, ws = await startServer()
    port = tcp.getHost().port
    for nick, source in (("boss", "127.0.0.2"), ("carol", "127.0.0.3")):
        owner = await named(port, nick, source=source)
        owner.say("/register correct-horse")
        await owner.until(f"registered {nick}")
        await owner.hangUp()
    guessers = await defer.gatherResults(
        [defer.ensureDeferred(connectLine(port)) for _ in range(40)]
    )
    for client in guessers:
        await client.until("Type a nickname")
    for client in guessers:  # all in one reactor turn: they arrive together
        client.say(b"/login boss guess\n/login boss guess\n/login boss guess")
    answers = []
    for client in guessers:
        for _ in range(3):
            answers.append(await client.until("error: "))
    wrong = [a for a in answers if a.endswith("error: wrong nickname or password")]
    refused = [a for a in answers if "too many failed logins" in a or "being checked" in a]
    assert 1 <= len(wrong) <= 5, wrong
    assert len(wrong) + len(refused) == 120, answers
    owner = await connectLine(port, source="127.0.0.2")
    owner.say("/login boss correct-horse")
    assert "you are logged in as boss" in await owner.until("logged in")
    bystander = await connectLine(port)
    bystander.say("/login carol correct-horse")
    assert "you are logged in as carol" in await bystander.until("logged in")
    await stopServer(chat, tcp, ws, clients=[*guessers, owner, bystander])


@pytest_twisted.ensureDeferred
async def test_a_client_that_ignores_the_servers_close_is_reset():
    """OpenBSD's nc keeps its end open after the server's FIN until its user types again:
    after close_grace the server resets the connection, which makes nc exit."""
    chat, tcp, ws_ = await startServer(close_grace=LINE_CLOSE_GRACE)
    sock = socket.create_connection(("127.0.0.1", tcp.getHost().port))
    sock.sendall(b"alice\n/quit\n")  # and then never closes its end
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    got, outcome = bytearray(), []

    def ended() -> bool:
        for _, events in poller.poll(0):
            if events & (select.POLLERR | select.POLLHUP):  # a reset: both ends closed
                outcome.append("reset")
                return True
            data = sock.recv(65536)
            got.extend(data)
            if not data and "eof" not in outcome:
                outcome.append("eof")  # the FIN, after the farewell
        return False

    started = time.monotonic()
    await eventually(ended, timeout=LINE_CLOSE_GRACE + 3)
    assert outcome == ["eof", "reset"]
    assert b"Goodbye." in got  # the farewell arrived before the reset
    assert LINE_CLOSE_GRACE - 0.5 < time.monotonic() - started < LINE_CLOSE_GRACE + 3
    sock.close()
    await stopServer(chat, tcp, ws_)


@pytest_twisted.ensureDeferred
async def test_a_listener_accepts_up_to_accept_batch_waiting_connections_a_turn():
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    from chatserv.listening import AnnouncedEndpoint

    built = []

    class Counting(Factory):
        def buildProtocol(self, addr):
            built.append(addr)
            return Protocol()

    async def waiting(batch, count):
        """How many of C{count} waiting connections each of two turns accepts."""
        built.clear()
        endpoint = AnnouncedEndpoint(serverFromString(reactor, LOCAL), "a test", batch)
        port = await endpoint.listen(Counting())
        clients = [
            socket.create_connection(("127.0.0.1", port.getHost().port)) for _ in range(count)
        ]
        time.sleep(0.1)  # the kernel has queued them all (nothing accepted them yet)
        accepted = []
        for _ in range(2):  # two reactor turns' reads of the listening socket
            port.doRead()
            accepted.append(len(built) - sum(accepted))
        await port.stopListening()
        for sock in clients:
            sock.close()
        return accepted

    assert await waiting(150, 200) == [150, 50]
    assert await waiting(1, 3) == [1, 1]
    assert await waiting(None, 200) == [100, 100]  # Twisted's own: 100, then 20 more
