"""Websocket input counted frame by frame, and protocol frames counted as output.

Every frame a client sends takes a token (ws_frame_rate, ws_frame_burst), a message has
at most ws_max_fragments frames, a client that keeps sending after the close handshake
began is no longer read, and pongs and close frames count against max_output_buffer.
In memory, with the test's clock.
"""

from __future__ import annotations

import pytest
import wsmemory as ws
from helpers import makeService, named

from chatserv.service import CONSOLE


@pytest.fixture
def chat():
    """A service, its clock, and a bystander on a line connection in #lobby."""
    service, clock = makeService()
    bystander = named(service, "bystander")
    return service, clock, bystander


def wsNamed(service, clock, nick: str, **options) -> ws.WSConnection:
    conn = ws.WSConnection(ws.makeFactory(service, clock), **options)
    conn.send(nick)
    conn.frames()
    return conn


def notices(frames: list[ws.Frame]) -> list[str]:
    return [f.text for f in frames if f.opcode == ws.TEXT]


def countDataFrames(conn: ws.WSConnection) -> list[int]:
    """Count the data frames Autobahn goes on to parse for C{conn}."""
    seen = [0]
    parse = conn.protocol._onMessageFrameBegin

    def counting(length):
        seen[0] += 1
        return parse(length)

    conn.protocol._onMessageFrameBegin = counting
    return seen


def test_a_ping_flood_is_closed_at_the_frame_burst(chat):
    service, clock, bystander = chat
    flooder = wsNamed(service, clock, "flooder")
    burst = service.settings.ws_frame_burst
    flooder.sendRaw(ws.encodeFrame(ws.PING, b"x" * 125) * (burst - 1))  # (+ the nickname)
    frames = flooder.frames()
    assert [f.opcode for f in frames] == [ws.PONG] * (burst - 1)  # within the burst: answered
    assert not flooder.transport.disconnecting
    flooder.sendRaw(ws.encodeFrame(ws.PING, b"x" * 125) * 1000)
    frames = flooder.frames()
    assert ws.PONG not in [f.opcode for f in frames]  # no pong for what broke the limit
    assert notices(frames)[-1].endswith("disconnected: you sent too many websocket frames")
    assert flooder.closeCode == 1008
    assert flooder.transport.disconnecting
    assert flooder.transport.producerState == "paused"  # and nothing more is read
    assert service.findUser("flooder") is None
    assert service.counters.floods == 1
    assert "flooder has left (too many frames)" in bystander.output()


def test_frames_within_the_rate_are_never_refused(chat):
    service, clock, _ = chat
    client = wsNamed(service, clock, "client")
    rate = service.settings.ws_frame_rate
    for _ in range(30):  # 30 s at the sustained rate, well past the burst
        for _ in range(int(rate)):
            client.sendFrame(ws.PING, b"p")
        clock.advance(1)
    assert client.closeFrame is None and not client.transport.disconnecting
    assert len([f for f in client.frames() if f.opcode == ws.PONG]) == 30 * int(rate)


def test_a_message_that_never_ends_is_closed_at_ws_max_fragments(chat):
    service, clock, bystander = chat
    flooder = wsNamed(service, clock, "flooder")
    most = service.settings.ws_max_fragments
    seen = countDataFrames(flooder)
    flooder.sendFrame(ws.TEXT, b"hel", fin=False)
    for _ in range(most - 2):
        flooder.sendFrame(ws.CONTINUATION, b"", fin=False)
        clock.advance(0.1)  # slowly: the frame rate is not what stops it
    flooder.sendFrame(ws.CONTINUATION, b"lo")  # the message's last allowed frame
    assert bystander.lines()[-1].endswith("<flooder> hello")
    flooder.sendFrame(ws.TEXT, b"", fin=False)
    for _ in range(most * 10):
        flooder.sendFrame(ws.CONTINUATION, b"", fin=False)
        clock.advance(0.1)
    assert seen[0] == 2 * most  # each message parsed up to its limit, no frame further
    assert notices(flooder.frames())[-1].endswith(
        f"disconnected: a message may come in at most {most} fragments"
    )
    assert flooder.closeCode == 1009
    assert service.findUser("flooder") is None
    assert "flooder has left (message in too many fragments)" in bystander.output()


def test_a_burst_of_fragments_in_one_read_is_not_parsed_past_the_limit(chat):
    service, clock, _ = chat
    flooder = wsNamed(service, clock, "flooder")
    seen = countDataFrames(flooder)
    burst = ws.encodeFrame(ws.TEXT, b"x", fin=False)
    burst += ws.encodeFrame(ws.CONTINUATION, b"x", fin=False) * 100_000
    flooder.sendRaw(burst)  # about 700 KB, all in one read
    assert seen[0] == service.settings.ws_max_fragments
    assert flooder.protocol.data == b""  # the rest was thrown away, not kept to parse
    assert flooder.closeCode == 1009


def test_a_flooder_still_sending_after_its_close_is_no_longer_read(chat):
    service, clock, _ = chat
    flooder = wsNamed(service, clock, "flooder")
    seen = countDataFrames(flooder)
    message = ws.encodeFrame(ws.TEXT, b"spam")
    for _ in range(500):  # flood control ends it: a close handshake with code 1000
        flooder.sendRaw(message)
    assert flooder.closeCode == 1000
    assert "disconnected: you sent too much, too fast" in notices(flooder.frames())[-1]
    closedAt = seen[0]
    limit = service.settings.ws_max_message_size
    flooder.sendRaw(message * (limit // len(message) + 1))  # more than can be in flight
    flooder.sendRaw(message * 10_000)
    assert seen[0] - closedAt <= limit // len(message)
    assert flooder.transport.producerState == "paused"
    assert flooder.transport.disconnecting


def test_a_client_answering_the_close_handshake_closes_cleanly(chat):
    service, clock, _ = chat
    client = wsNamed(service, clock, "client")
    service.kick(CONSOLE, "client", "bye")
    assert client.closeCode == 1000
    client.finishClose()  # its close frame is read: the handshake completes
    assert client.lost and client.transport.producerState == "producing"
    assert client.protocol.wasClean


def test_pongs_count_against_the_output_buffer_of_a_client_that_does_not_read():
    service, clock = makeService(ws_frame_rate=1e9, ws_frame_burst=10**9, max_output_buffer=4096)
    reader = wsNamed(service, clock, "reader")
    reader.protocol.pauseProducing()  # its transport's buffer is full: it stopped reading
    ping = ws.encodeFrame(ws.PING, b"x" * 125)
    for _ in range(4096 // 127):  # the pongs, 127 bytes each, fit within the limit
        reader.sendRaw(ping)
    assert not reader.transport.disconnecting
    reader.sendRaw(ping * 2)
    assert reader.transport.disconnected  # dropped as a slow reader, not left to grow
    assert service.counters.slow_readers == 1
    written = len(reader.transport.value())
    reader.sendRaw(ping * 100)
    assert len(reader.transport.value()) == written  # nothing more is written to it


def test_frame_limits_are_settings():
    service, clock = makeService(ws_frame_burst=5, ws_max_fragments=3)
    client = wsNamed(service, clock, "client")  # the nickname was frame 1
    for _ in range(4):
        client.sendFrame(ws.PONG, b"")  # unsolicited pongs count too
    assert client.closeFrame is None
    client.sendFrame(ws.PONG, b"")
    assert client.closeCode == 1008


def test_a_refused_frame_or_handshake_is_one_line_of_ours(chat):
    from twisted.logger import formatEvent, globalLogPublisher

    service, clock, bystander = chat
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        client = wsNamed(service, clock, "client")
        client.sendFrame(ws.TEXT, b"hi", mask=None)  # unmasked: Autobahn closes with 1002
        client.finishClose()
        refused = ws.WSConnection(ws.makeFactory(service, clock), handshake=False)
        refused.sendRaw(ws.upgradeRequest().replace(b"Version: 13", b"Version: 7"))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert client.closeCode == 1002
    assert refused.transport.value().startswith(b"HTTP/1.1 400 ")
    lines = [formatEvent(e) for e in logged]
    assert [n for n in (e.get("log_namespace", "") for e in logged) if "autobahn" in n] == []
    assert lines == [
        "connect from ws 10.0.0.9:4000",
        "ws 10.0.0.9:4000 is now client",
        "disconnect ws 10.0.0.9:4000 (client): protocol error: unmasked client-to-server frame",
        "ws 10.0.0.9:4000: websocket handshake refused: "
        "WebSocket version 7 not supported (supported versions: 13,8)",
    ]
    assert "client has left (protocol error: unmasked client-to-server frame)" in bystander.output()


def test_connections_share_the_factory_options_instead_of_copying_them():
    """Autobahn copies each option missing from a connection onto it: this factory's
    protocol class has them all, so a connection's dict holds none of them, and options
    set later reach the connections made after."""
    service, clock = makeService()
    factory = ws.makeFactory(service, clock)
    conn = ws.WSConnection(factory, json=True, port=4001)
    assert set(vars(conn.protocol)) & set(factory.protocol.CONFIG_ATTRS) == set()
    assert conn.protocol.maxMessagePayloadSize == service.settings.ws_max_message_size
    assert conn.protocol.autoPingInterval == service.settings.ping_interval
    factory.setProtocolOptions(autoPingInterval=7)
    later = ws.WSConnection(factory, json=True, port=4002)
    assert later.protocol.autoPingInterval == 7
    assert later.protocol.perMessageCompressionAccept is factory.perMessageCompressionAccept
