"""The real service on real sockets (port 0), with real line and websocket clients."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest_twisted
from clients import connectLine, connectWS, eventually
from twisted.internet.endpoints import serverFromString

from chatserv.config import Settings
from chatserv.protocols.line import LineChatFactory
from chatserv.protocols.web import ChatSite
from chatserv.service import ChatService


@dataclass
class Server:
    chat: ChatService
    tcp: int
    ws: int
    clients: list = field(default_factory=list)

    async def line(self, nick: str | None = None):
        client = await connectLine(self.tcp)
        self.clients.append(client)
        await client.until("Type a nickname")
        if nick:
            client.say(nick)
            await client.until("#lobby users")
        return client

    async def websocket(self, nick: str | None = None, json_: bool = False):
        client = await connectWS(self.ws, json_=json_)
        self.clients.append(client)
        if json_:
            await client.until(lambda e: e["type"] == "notice")
            if nick:
                client.request(type="nick", nick=nick)
                await client.until(lambda e: e["type"] == "who")
        else:
            await client.until("Type a nickname")
            if nick:
                client.say(nick)
                await client.until("#lobby users")
        return client


@pytest_twisted.async_yield_fixture
async def server():
    from twisted.internet import reactor

    chat = ChatService(Settings(max_line_length=256, ws_max_message_size=4096), clock=reactor)
    chat.startService()
    local = "tcp:0:interface=127.0.0.1"
    tcpPort = await serverFromString(reactor, local).listen(LineChatFactory(chat))
    wsPort = await serverFromString(reactor, local).listen(ChatSite(chat, reactor=reactor))
    srv = Server(chat, tcpPort.getHost().port, wsPort.getHost().port)
    yield srv
    await tcpPort.stopListening()
    await wsPort.stopListening()
    for client in srv.clients:
        await client.hangUp()
    await eventually(lambda: not chat.sessions)  # server side has seen every close
    await chat.stopService()


@pytest_twisted.ensureDeferred
async def test_line_websocket_and_json_users_share_a_room(server):
    alice = await server.line("alice")
    bob = await server.websocket("bob")
    carol = await server.websocket("carol", json_=True)
    await alice.until("carol has joined")
    await bob.until("carol has joined")

    alice.say("hello from nc")
    assert (await bob.until("<alice>")).endswith("#lobby <alice> hello from nc")
    event = await carol.until(lambda e: e["type"] == "message")
    assert (event["room"], event["from"], event["text"]) == ("lobby", "alice", "hello from nc")
    assert isinstance(event["id"], int) and isinstance(event["ts"], int)

    bob.say("hello from a websocket")
    assert (await alice.until("<bob>")).endswith("#lobby <bob> hello from a websocket")
    assert (await carol.until(lambda e: e["type"] == "message"))["from"] == "bob"

    carol.request(type="say", text="hello from JSON")
    assert (await alice.until("<carol>")).endswith("hello from JSON")
    assert (await bob.until("<carol>")).endswith("hello from JSON")
    echo = await carol.until(lambda e: e["type"] == "message")
    assert echo["from"] == "carol"  # JSON clients get their own message back

    carol.request(type="me", text="waves")
    assert (await alice.until("* carol")).endswith("#lobby * carol waves")


@pytest_twisted.ensureDeferred
async def test_private_messages_across_protocols(server):
    alice = await server.line("alice")
    bob = await server.websocket("bob")
    carol = await server.websocket("carol", json_=True)

    alice.say("/msg carol psst")
    event = await carol.until(lambda e: e["type"] == "msg")
    assert (event["from"], event["to"], event["text"]) == ("alice", "carol", "psst")
    assert (await alice.until("-> *")).endswith("-> *carol* psst")

    carol.request(type="msg", to="bob", text="secret")
    assert (await bob.until("*carol*")).endswith("*carol* secret")

    bob.say("see you at 5 > alice")
    assert (await alice.until("*bob*")).endswith("*bob* see you at 5")

    carol.request(type="msg", to="nobody", text="hello?")
    error = await carol.until(lambda e: e["type"] == "error")
    assert error["code"] == "no-such-user"


@pytest_twisted.ensureDeferred
async def test_rename_room_switch_and_who(server):
    alice = await server.line("alice")
    bob = await server.websocket("bob")
    carol = await server.websocket("carol", json_=True)

    carol.request(type="nick", nick="caroline")
    assert (await alice.until("now known as")).endswith("--- carol is now known as caroline")
    rename = await carol.until(lambda e: e["type"] == "rename")
    assert (rename["from"], rename["to"]) == ("carol", "caroline")

    bob.say("/join dev")
    assert (await bob.until("#dev users")).endswith("#dev users (1): bob")
    assert (await alice.until("has left")).endswith("#lobby <-- bob has left (went to #dev)")
    carol.request(type="join", room="#dev")
    assert (await bob.until("has joined")).endswith("#dev --> caroline has joined")
    who = await carol.until(lambda e: e["type"] == "who")
    assert who["users"] == ["bob", "caroline"]

    alice.say("/who dev")
    assert (await alice.until("#dev users")).endswith("#dev users (2): bob, caroline")
    alice.say("/rooms")
    assert (await alice.until("rooms (")).endswith("rooms (2): #dev (2), #lobby (1)")

    bob.say("only dev hears this")
    await carol.until(lambda e: e.get("text") == "only dev hears this")
    alice.say("?")
    assert (await alice.until("users")).endswith("#lobby users (1): alice")  # nothing from dev


@pytest_twisted.ensureDeferred
async def test_disconnect_without_quit_is_announced(server):
    alice = await server.line("alice")
    bob = await server.websocket("bob")
    carol = await server.websocket("carol", json_=True)

    await alice.hangUp()
    assert (await bob.until("has left")).endswith("#lobby <-- alice has left (connection lost)")
    leave = await carol.until(lambda e: e["type"] == "leave")
    assert (leave["from"], leave["reason"]) == ("alice", "connection lost")

    bob.transport.abortConnection()  # a websocket that vanishes without a close frame
    leave = await carol.until(lambda e: e["type"] == "leave")
    assert leave["from"] == "bob"
    await eventually(lambda: server.chat.findUser("bob") is None)

    carol.request(type="quit", reason="bye")
    await carol.closed
    assert carol.closeCode == 1000


@pytest_twisted.ensureDeferred
async def test_websocket_refusals_keep_the_connection(server):
    bob = await server.websocket("bob")
    carol = await server.websocket("carol", json_=True)

    bob.sendMessage(b"\x00\x01\x02", isBinary=True)
    assert (await bob.until("error")).endswith("error: binary frames are not accepted; send text")
    bob.say("x" * 300)  # over max_line_length (256), under ws_max_message_size
    assert "message too long (the limit is 256 bytes)" in await bob.until("error")
    carol.sendMessage(b"{not json")
    assert (await carol.until(lambda e: e["type"] == "error"))["code"] == "bad-request"
    carol.sendMessage(b'{"type":"join","room":{"deep":[[[[1]]]]}}')
    error = await carol.until(lambda e: e["type"] == "error")
    assert error["text"] == '"room" must be a string'

    bob.say("still here")
    assert (await carol.until(lambda e: e["type"] == "message"))["text"] == "still here"


@pytest_twisted.ensureDeferred
async def test_oversized_websocket_message_is_closed_with_1009(server):
    bob = await server.websocket("bob")
    bob.say("x" * 5000)  # over ws_max_message_size (4096)
    await bob.closed
    assert bob.closeCode == 1009


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_text_frame_is_closed_with_1007(server):
    bob = await server.websocket("bob")
    bob.sendMessage(b"caf\xe9")  # a text frame that is not UTF-8: RFC 6455 says close
    await bob.closed
    assert bob.closeCode == 1007


@pytest_twisted.ensureDeferred
async def test_line_client_errors_over_the_wire(server):
    alice = await server.line("alice")
    alice.say(b"\xc3\x28 broken")
    assert "not valid UTF-8" in await alice.until("error")
    alice.say("y" * 1000)
    assert "line too long" in await alice.until("error")
    alice.say("/time")
    assert "server time:" in await alice.until("server time")


@pytest_twisted.ensureDeferred
async def test_stopping_the_service_says_goodbye(server):
    alice = await server.line("alice")
    carol = await server.websocket("carol", json_=True)
    server.chat.stopService()
    assert (await alice.until("shutting down")).endswith("-!- server shutting down")
    notice = await carol.until(lambda e: e["type"] == "notice")
    assert notice["text"] == "server shutting down"
    await alice.closed
    await carol.closed


@pytest_twisted.ensureDeferred
async def test_lone_surrogates_in_json_are_escaped_not_fatal(server):
    alice = await server.line("alice")
    carol = await server.websocket("carol", json_=True)
    carol.sendMessage(b'{"type":"say","text":"bad \\ud800 half"}')
    assert (await alice.until("<carol>")).endswith("#lobby <carol> bad <U+D800> half")
    carol.sendMessage(b'{"type":"\\udfff"}')
    error = await carol.until(lambda e: e["type"] == "error")
    assert error["text"] == 'unknown request type "<U+DFFF>"'
    carol.sendMessage(b'{"type":"msg","to":"\\ud800","text":"hi"}')
    error = await carol.until(lambda e: e["type"] == "error")
    assert error["code"] == "no-such-user" and "<U+D800>" in error["text"]
