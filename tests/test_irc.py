"""The IRC listener on real sockets, with IRC, line and JSON websocket users in the same rooms.

Most tests speak raw IRC lines (so that every numeric is checked as sent); one drives
twisted.words' IRCClient, a real IRC client library, through registration and a
conversation.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from dataclasses import dataclass, field

import pytest
import pytest_twisted
from clients import TIMEOUT, connectLine, connectWS, eventually
from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.words.protocols import irc as twirc

from chatserv.config import ConfigError, Settings, makeSettings
from chatserv.hostmasks import Hostmasks
from chatserv.protocols import ircmessage
from chatserv.protocols.irc import IrcFactory
from chatserv.protocols.line import LineChatFactory
from chatserv.protocols.web import ChatSite
from chatserv.service import CONSOLE, ChatService
from chatserv.store.memory import MemoryStore

LOCAL = "tcp:0:interface=127.0.0.1"
_NUMERIC = re.compile(r"^(?:@\S+ )?:irc\.chatserv (\d{3}) ")


@dataclass
class Server:
    chat: ChatService
    tcp: int
    ws: int
    irc: int
    clients: list = field(default_factory=list)

    async def line(self, nick: str):
        client = await connectLine(self.tcp)
        self.clients.append(client)
        await client.until("Type a nickname")
        client.say(nick)
        await client.until("#lobby users")
        return client

    async def json(self, nick: str):
        client = await connectWS(self.ws, json_=True)
        self.clients.append(client)
        await client.until(lambda e: e["type"] == "notice")
        client.request(type="nick", nick=nick)
        await client.until(lambda e: e["type"] == "who")
        return client

    async def raw(self):
        client = await connectLine(self.irc)
        self.clients.append(client)
        return client

    async def irc_(self, nick: str, caps: str = "", join: str = "", password: str = ""):
        """An IRC client, registered (with CAPs if given), in C{join}'s channels."""
        client = await self.raw()
        if caps:
            client.say("CAP LS 302")
        if password:
            client.say(f"PASS {password}")
        client.say(f"NICK {nick}")
        client.say(f"USER {nick.lower()} 0 * :{nick} Realname")
        if caps:
            await client.until(" LS ")
            client.say(f"CAP REQ :{caps}")
            await client.until(" ACK ")
            client.say("CAP END")
        await client.until(" 422 ")  # the end of the welcome: no MOTD
        if join:
            client.say(f"JOIN {join}")
            for name in join.split(","):
                await client.until(f" 366 {nick} {name} ")
        return client


async def _serve(settings: Settings, store=None):
    from twisted.internet import reactor

    chat = ChatService(settings, clock=reactor, store=store)
    chat.startService()
    ports = [
        await serverFromString(reactor, LOCAL).listen(factory)
        for factory in (
            LineChatFactory(chat),
            ChatSite(chat, reactor=reactor),
            IrcFactory(chat),
        )
    ]
    srv = Server(chat, *(p.getHost().port for p in ports))
    return srv, ports


async def _stop(srv: Server, ports) -> None:
    for port in ports:
        await port.stopListening()
    for client in srv.clients:
        await client.hangUp()
    await eventually(lambda: not srv.chat.sessions)
    await srv.chat.stopService()


@pytest_twisted.async_yield_fixture
async def server():
    srv, ports = await _serve(Settings(admins=("root",)))
    yield srv
    await _stop(srv, ports)


def numerics(lines: list[str]) -> list[str]:
    return [m.group(1) for m in map(_NUMERIC.match, lines) if m]


# -- registration ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_registration_burst_and_isupport(server):
    client = await server.raw()
    client.say("CAP LS 302")
    ls = await client.until(" LS ")
    for cap in ("server-time", "message-tags", "echo-message", "sasl=PLAIN", "batch"):
        assert cap in ls.split(":", 2)[2].split()
    client.say("NICK Dora")
    client.say("USER dora 0 * :Dora the Explorer")
    assert client.pending() == []  # waits for CAP END
    client.say("CAP END")
    await client.until(" 422 ")
    got = numerics(client.history)
    for code in ("001", "002", "003", "004", "005", "251", "252", "253", "254", "255", "265"):
        assert code in got, code
    assert got.index("001") < got.index("005") < got.index("251") < got.index("422")
    welcome = next(line for line in client.history if " 001 " in line)
    assert welcome.startswith(":irc.chatserv 001 Dora :Welcome to the chatserv IRC network, ")
    assert "Dora!~dora@" in welcome and "127.0.0.1" not in welcome  # cloaked
    tokens = " ".join(line for line in client.history if " 005 " in line).split()
    for token in (
        "CASEMAPPING=rfc1459",
        "CHANTYPES=#",
        "PREFIX=(o)@",
        "CHANMODES=b,,,nt",
        "NICKLEN=32",
        "CHANNELLEN=33",
        "TOPICLEN=390",
        "NETWORK=chatserv",
        "MODES=4",
        "AWAYLEN=300",
        "KICKLEN=300",
        "UTF8ONLY",
    ):
        assert token in tokens, token
    assert any(t.startswith("TARGMAX=") and "PRIVMSG:4" in t for t in tokens)
    assert server.chat.findUser("Dora").rooms == {}  # IRC users join what they ask for


@pytest_twisted.ensureDeferred
async def test_commands_before_registration_are_refused(server):
    client = await server.raw()
    client.say("JOIN #lobby")
    assert " 451 * :You have not registered" in await client.until(" 451 ")
    client.say("PING :x")
    assert (await client.until("PONG")).endswith("PONG irc.chatserv x")


@pytest_twisted.ensureDeferred
async def test_motd_file(tmp_path):
    motd = tmp_path / "motd.txt"
    motd.write_text("Be nice.\nNo spam.\n")
    srv, ports = await _serve(Settings(irc_motd_file=str(motd)))
    try:
        client = await srv.raw()
        client.say("NICK m")
        client.say("USER m 0 * :m")
        await client.until(" 376 ")
        assert [line for line in client.history if " 372 " in line] == [
            ":irc.chatserv 372 m :- Be nice.",
            ":irc.chatserv 372 m :- No spam.",
        ]
        assert numerics(client.history)[-4:] == ["375", "372", "372", "376"]
    finally:
        await _stop(srv, ports)


@pytest_twisted.ensureDeferred
async def test_taken_and_bad_nicknames(server):
    await server.line("alice")
    client = await server.raw()
    client.say("NICK alice")
    client.say("USER a 0 * :a")
    assert ":irc.chatserv 433 * alice :Nickname is already in use" in await client.until(" 433 ")
    client.say("NICK 9lives")
    assert " 432 * 9lives " in await client.until(" 432 ")
    client.say("NICK")
    assert " 431 * " in await client.until(" 431 ")
    client.say("NICK alice2")
    await client.until(" 001 alice2 ")
    client.say("USER again 0 * :x")
    assert " 462 alice2 " in await client.until(" 462 ")


@pytest_twisted.ensureDeferred
async def test_a_registered_nick_needs_sasl_or_pass(server):
    await server.chat.createAccount(CONSOLE, "carla", "secret-pw1")
    client = await server.raw()
    client.say("NICK carla")
    client.say("USER c 0 * :c")
    assert "433 * carla :Nickname is registered" in await client.until(" 433 ")
    await client.hangUp()

    # PASS logs in to the nickname's account.
    withPass = await server.irc_("carla", password="secret-pw1")
    assert server.chat.findUser("carla").account is not None
    await withPass.hangUp()
    await eventually(lambda: server.chat.findUser("carla") is None)

    # A wrong PASS: 464, then the connection is closed with ERROR.
    wrong = await server.raw()
    wrong.say("PASS nope")
    wrong.say("NICK carla")
    wrong.say("USER c 0 * :c")
    assert " 464 * " in await wrong.until(" 464 ")
    assert (await wrong.until("ERROR")).startswith("ERROR :Closing link")
    await wrong.closed


@pytest_twisted.ensureDeferred
async def test_messages_kept_while_offline_follow_the_welcome(server):
    await server.chat.createAccount(CONSOLE, "carla", "secret-pw1")
    bob = await server.line("bob")
    bob.say("/msg carla while you were out")
    await bob.until("kept for their next login")
    carla = await server.irc_("carla", password="secret-pw1")
    said = await carla.until("while you were out")
    # Kept in the store: no mask, and the date it was sent (no server-time asked for).
    assert re.fullmatch(r":bob PRIVMSG carla :\[.+\] while you were out", said)
    first = next(i for i, line in enumerate(carla.history) if " 001 " in line)
    assert carla.history.index(said) > first


@pytest_twisted.ensureDeferred
async def test_a_flood_warning_is_not_held_back_during_registration():
    srv, ports = await _serve(Settings(rate_limit=1, irc_rate_burst=3))
    try:
        client = await srv.raw()
        for n in range(6):
            client.say(f"PING :{n}")
        assert "slow down" in await client.until("slow down")
    finally:
        await _stop(srv, ports)


@pytest_twisted.ensureDeferred
async def test_sasl_plain(server):
    await server.chat.createAccount(CONSOLE, "sam", "secret-pw1")
    client = await server.raw()
    client.say("CAP LS 302")
    client.say("NICK whoever")
    client.say("USER s 0 * :s")
    client.say("CAP REQ :sasl")
    await client.until(" ACK ")
    client.say("AUTHENTICATE PLAIN")
    assert await client.until("AUTHENTICATE") == "AUTHENTICATE +"
    bad = base64.b64encode(b"\0sam\0wrong").decode()
    client.say(f"AUTHENTICATE {bad}")
    assert " 904 " in await client.until(" 904 ")
    client.say("AUTHENTICATE PLAIN")
    await client.until("AUTHENTICATE +")
    good = base64.b64encode(b"sam\0sam\0secret-pw1").decode()
    client.say(f"AUTHENTICATE {good}")
    logged = await client.until(" 900 ")
    assert re.search(r" 900 sam sam!~s@\S+ sam :You are now logged in as sam", logged)
    await client.until(" 903 ")
    client.say("CAP END")
    assert " 001 sam " in await client.until(" 001 ")
    assert server.chat.findUser("sam").account.nick == "sam"


# -- across wires -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_line_json_and_irc_users_talk(server):
    alice = await server.line("alice")
    carol = await server.json("carol")
    dave = await server.irc_("dave", join="#lobby")
    names = next(line for line in dave.history if " 353 " in line)
    assert names.endswith(":alice carol dave")
    await alice.until("dave has joined")

    alice.say("hello from nc")
    said = await dave.until("PRIVMSG")
    assert re.fullmatch(r":alice!alice@\w+\.\w+\.cloak PRIVMSG #lobby :hello from nc", said)

    dave.say("PRIVMSG #lobby :hello from \x02irc\x02")
    assert (await alice.until("<dave>")).endswith("#lobby <dave> hello from irc")
    event = await carol.until(lambda e: e["type"] == "message" and e["from"] == "dave")
    assert event["text"] == "hello from irc"

    alice.say("/me waves")
    assert (await dave.until("ACTION")).endswith("PRIVMSG #lobby :\x01ACTION waves\x01")
    dave.say("PRIVMSG #lobby :\x01ACTION dances\x01")
    assert (await alice.until("* dave")).endswith("#lobby * dave dances")
    action = await carol.until(lambda e: e["type"] == "action" and e["from"] == "dave")
    assert action["text"] == "dances"

    dave.say("NOTICE #lobby :a notice")
    assert (await alice.until("-dave-")).endswith("#lobby -dave- a notice")
    event = await carol.until(lambda e: e.get("notice"))
    assert (event["type"], event["text"]) == ("message", "a notice")

    # CTCP other than ACTION is not relayed, and nothing else reached IRC from itself.
    dave.say("PRIVMSG #lobby :\x01VERSION\x01")
    dave.say("PING :sync")
    await dave.until("PONG")
    assert not any("VERSION" in line for line in alice.history)
    assert not any(":dave!" in line and "PRIVMSG" in line for line in dave.history)


@pytest_twisted.ensureDeferred
async def test_formatting_reaches_irc_and_is_stripped_elsewhere(server):
    alice = await server.line("alice")
    erin = await server.irc_("erin", join="#lobby")
    frank = await server.irc_("frank", join="#lobby")
    erin.say("PRIVMSG #lobby :\x02bold\x02 \x0304red\x03 \x1ditalic\x1d\x0f")
    got = await frank.until("PRIVMSG")
    assert got.endswith(":\x02bold\x02 \x0304red\x03 \x1ditalic\x1d\x0f")
    line = await alice.until("<erin>")
    assert line.endswith("<erin> bold red italic")
    assert not re.search("[\x00-\x1f]", line)


@pytest_twisted.ensureDeferred
async def test_private_messages_and_away(server):
    alice = await server.line("alice")
    dave = await server.irc_("dave", caps="echo-message")
    dave.say("PRIVMSG alice :psst")
    assert (await alice.until("*dave*")).endswith("*dave* psst")
    echoed = await dave.until("PRIVMSG")
    assert echoed.endswith("PRIVMSG alice psst")  # echo-message: its own copy
    alice.say("/msg dave hi back")
    assert re.search(r":alice!alice@\S+ PRIVMSG dave :hi back$", await dave.until("hi back"))

    erin = await server.irc_("erin")
    # An action in a query: CTCP ACTION for IRC, "* dave waves" for the others.
    dave.say("PRIVMSG erin,alice :\x01ACTION waves\x01")
    assert re.fullmatch(
        r":dave!~dave@\S+ PRIVMSG erin :\x01ACTION waves\x01", await erin.until("waves")
    )
    assert (await alice.until("waves")).endswith("*dave* * dave waves")
    json_ = await server.json("jo")
    dave.say("PRIVMSG jo :\x01ACTION nods\x01")
    got = await json_.until(lambda e: e["type"] == "msg")
    assert got["text"] == "* dave nods" and got["action"] is True
    dave.say("AWAY :at lunch")
    assert " 306 dave " in await dave.until(" 306 ")
    erin.say("PRIVMSG dave :are you there?")
    assert (await erin.until(" 301 ")).endswith(" 301 erin dave :at lunch")
    erin.say("WHOIS dave")
    await erin.until(" 318 ")
    assert any(line.endswith(" 301 erin dave :at lunch") for line in erin.history)
    dave.say("AWAY")
    assert " 305 dave " in await dave.until(" 305 ")


@pytest_twisted.ensureDeferred
async def test_one_quit_for_several_channels(server):
    alice = await server.line("alice")
    dave = await server.irc_("dave", join="#lobby,#dev")
    erin = await server.irc_("erin", caps="away-notify", join="#lobby,#dev")
    await alice.until("erin has joined")
    dave.say("QUIT :see you")
    assert (await dave.until("ERROR")).startswith("ERROR :Closing link")
    assert (await alice.until("dave")).endswith("<-- dave has quit (quit: see you)")
    quits = [await erin.until("QUIT")]
    assert re.fullmatch(r":dave!~dave@\S+ QUIT :quit: see you", quits[0])
    erin.say("PING :sync")
    await erin.until("PONG")
    assert sum("QUIT" in line for line in erin.history) == 1  # not one per channel
    assert not any(" PART " in line for line in erin.history)

    alice.say("/quit bye")
    assert re.search(r":alice!alice@\S+ QUIT :quit: bye$", await erin.until("alice!"))


@pytest_twisted.ensureDeferred
async def test_extended_join_and_who_show_the_realname(server):
    watcher = await server.irc_("watcher", caps="extended-join", join="#lobby")
    await server.irc_("bbb", join="#lobby")  # USER bbb 0 * :bbb Realname
    joined = await watcher.until("JOIN #lobby")
    assert re.fullmatch(r":bbb!~bbb@\S+ JOIN #lobby \* :bbb Realname", joined)
    watcher.say("WHO #lobby")
    await watcher.until(" 315 ")
    assert any(line.endswith(" bbb H :0 bbb Realname") for line in watcher.history)
    # WHOX, as WeeChat and HexChat ask for accounts and away states.
    watcher.say("WHO #lobby %tcuhnfar,42")
    whox = await watcher.until(" bbb ")
    assert re.fullmatch(
        r":irc\.chatserv 354 watcher 42 #lobby ~bbb \S+\.cloak bbb H 0 :bbb Realname", whox
    )
    watcher.say("WHO bbb %na")
    assert await watcher.until(" 354 ") == ":irc.chatserv 354 watcher bbb 0"


@pytest_twisted.ensureDeferred
async def test_setname_changes_the_realname_for_those_who_see_it(server):
    alice = await server.line("alice")
    dave = await server.irc_("dave", caps="setname", join="#lobby")
    erin = await server.irc_("erin", caps="setname extended-join", join="#lobby")
    frank = await server.irc_("frank", join="#lobby")  # without the capability
    dave.say("SETNAME :Dave \x02Bold\x02 \x1b[31mRed")
    told = await dave.until("SETNAME")  # the confirmation
    assert re.fullmatch(r":dave!~dave@\S+ SETNAME :Dave \x02Bold\x02 \S+Red", told)
    assert "\x1b" not in told
    assert await erin.until("SETNAME") == told
    frank.say("WHOIS dave")
    assert (await frank.until(" 311 ")).endswith(told.split(" :", 1)[1])
    assert not [line for line in frank.history if "SETNAME" in line]
    alice.say("/who")
    await alice.until("users (")
    assert not [line for line in alice.history if "Bold" in line]
    dave.say("SETNAME :" + "x" * 101)
    assert (await dave.until("FAIL")).startswith(":irc.chatserv FAIL SETNAME INVALID_REALNAME :")
    frank.say("SETNAME :Frank")
    assert await frank.until(" 421 ") == (
        ":irc.chatserv 421 frank SETNAME :Unknown command: request the setname capability first"
    )
    erin.say("JOIN #dev")
    dave.say("JOIN #dev")
    joined = await erin.until("JOIN #dev * :Dave")  # extended-join: the new realname
    assert "\x02Bold\x02" in joined


@pytest_twisted.ensureDeferred
async def test_join_part_names_topic_list(server):
    alice = await server.line("alice")
    dave = await server.irc_("dave", join="#lobby,#dev")
    await alice.until("dave has joined")
    dave.say("PART #dev :bye dev")
    assert re.search(r":dave!~dave@\S+ PART #dev :bye dev$", await dave.until("PART"))
    dave.say("NAMES #lobby")
    assert (await dave.until(" 353 ")).endswith(" 353 dave = #lobby :alice dave")
    dave.say("TOPIC #lobby")
    assert (await dave.until(" 331 ")).endswith(" 331 dave #lobby :No topic is set")
    dave.say("LIST")
    await dave.until(" 323 ")
    assert any(line.endswith(" 322 dave #lobby 2 :") for line in dave.history)
    await server.chat.setTopic(CONSOLE, "devops", "deploys")  # permanent, empty
    for request, listed in (
        ("LIST >1", ["#lobby"]),
        ("LIST <1", ["#devops"]),
        ("LIST *dev*", ["#devops"]),
        ("LIST !*dev*", ["#lobby"]),
        ("LIST #LOBBY,#devops", ["#devops", "#lobby"]),
        ("LIST T<60", ["#devops"]),  # its topic is a minute old at most
        ("LIST T>60", []),
        ("LIST *o*,<1", ["#devops"]),
        ("LIST " + "*a" * 200, []),  # a mask that would take a regular expression ages
    ):
        dave.say(request)
        got = []
        while " 323 " not in (reply := await dave.until(lambda _: True)):
            if " 322 " in reply:
                got.append(reply.split()[3])
        assert got == listed, request
    dave.say("JOIN 0")
    assert " PART #lobby " in await dave.until("PART #lobby")
    assert (await alice.until("dave")).endswith("<-- dave has left (left all channels)")
    dave.say("NICK davey")
    assert re.search(r":dave!~dave@\S+ NICK davey$", await dave.until("NICK"))


@pytest_twisted.ensureDeferred
async def test_error_numerics(server):
    await server.line("alice")
    dave = await server.irc_("dave", join="#lobby")
    cases = [
        ("PRIVMSG nobody :x", " 401 dave nobody "),
        ("PRIVMSG #nowhere :x", " 442 dave #nowhere "),
        ("PRIVMSG", " 411 dave "),
        ("PRIVMSG #lobby", " 412 dave "),
        ("FROBNICATE", " 421 dave FROBNICATE "),
        ("PART #nowhere", " 442 dave #nowhere "),
        ("JOIN", " 461 dave JOIN "),
        ("JOIN #bad!name", " 403 dave #bad!name "),
        ("NICK alice", " 433 dave alice "),
        ("NICK 1bad", " 432 dave 1bad "),
        ("TOPIC #lobby :new topic", " 482 dave #lobby "),
        ("KICK #lobby alice", " 482 dave #lobby "),
        ("KILL alice", " 481 dave "),
        ("MODE alice", " 502 dave "),
        ("WHOIS nobody", " 401 dave nobody "),
        ("WHOWAS alice", " 406 dave alice "),  # (nothing is kept of who had a name)
        ("WHOWAS", " 431 dave "),
        ("TOPIC #nowhere", " 403 dave #nowhere "),
        ("USER x 0 * :x", " 462 dave "),
        ("PRIVMSG #lobby :" + "x" * 600, " 417 dave "),
    ]
    for sent, expected in cases:
        dave.say(sent)
        assert expected in await dave.until(expected.split()[0]), sent
    dave.say("NOTICE nobody :x")  # a NOTICE gets no error back
    dave.say("PING :sync")
    await dave.until("PONG")
    assert not any(" 401 dave nobody" in line for line in dave.history[-3:])


@pytest_twisted.ensureDeferred
async def test_admins_are_channel_operators(server):
    await server.chat.createAccount(CONSOLE, "root", "secret-pw1", admin=True)
    alice = await server.line("alice")
    dave = await server.irc_("dave", join="#lobby")
    root = await server.irc_("root", join="#lobby", password="secret-pw1")
    names = next(line for line in root.history if " 353 " in line)
    assert names.endswith(":alice dave @root")
    assert re.search(r":irc\.chatserv MODE #lobby \+o root$", await dave.until("MODE"))

    await server.chat.createAccount(CONSOLE, "erin", "secret-pw2")
    erin = await server.irc_("erin", join="#lobby,#dev", password="secret-pw2")
    root.say("MODE #lobby +o erin")
    promoted = await dave.until("+o erin")
    assert re.fullmatch(r":root!~root@\S+ MODE #lobby \+o erin", promoted)
    assert await erin.until("+o erin") == promoted
    assert await root.until("+o erin") == promoted
    root.say("PING :sync")
    await root.until("PONG")
    assert [line for line in root.history if "+o erin" in line] == [promoted]  # once
    assert not [line for line in alice.history if "erin" in line and "admin" in line]
    root.say("MODE #lobby -o erin")
    assert re.search(r" MODE #dev -o erin$", await erin.until("#dev -o"))  # every room of hers

    root.say("TOPIC #lobby :Welcome, everyone")
    assert re.search(r":root!~root@\S+ TOPIC #lobby :Welcome, everyone$", await dave.until("TOPIC"))
    assert "#lobby topic: Welcome, everyone" in await alice.until("topic")

    root.say("KICK #lobby alice :behave")
    assert re.search(r":root!~root@\S+ KICK #lobby alice :?behave$", await dave.until("KICK"))
    assert (await alice.until("kicked")).endswith("#lobby <-- alice was kicked by root: behave")
    assert server.chat.findUser("alice").rooms == {}  # out of the room, still connected
    root.say("KICK #lobby alice")
    assert " 441 root alice #lobby " in await root.until(" 441 ")

    root.say("MODE #lobby +b dave!*@*")
    assert re.search(r"MODE #lobby \+b dave!\*@\*$", await root.until("+b"))
    await dave.closed  # banned: disconnected
    root.say("MODE #lobby b")
    assert " 367 root #lobby dave!*@* root " in await root.until(" 367 ")
    root.say("MODE #lobby -b dave")
    await root.until("-b")
    assert server.chat.sanctions.active("ban", "dave", server.chat.now()) is None


@pytest_twisted.ensureDeferred
async def test_history_on_join_as_a_batch_with_server_time(server):
    alice = await server.line("alice")
    alice.say("first")
    alice.say("second")
    lobby = server.chat.rooms["lobby"]
    await eventually(lambda: len(lobby.recent) == 2)
    tagged = await server.irc_("tagged", caps="batch server-time message-tags")
    tagged.say("JOIN #lobby")
    start = await tagged.until("BATCH +")
    batch = re.fullmatch(r":irc\.chatserv BATCH \+(\S+) chathistory #lobby", start).group(1)
    first = await tagged.until("first")
    assert re.fullmatch(
        rf"@batch={batch};time=\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z;msgid=\d+ "
        r":alice PRIVMSG #lobby :?first",
        first,
    )
    await tagged.until("second")
    assert (await tagged.until("BATCH -")) == f":irc.chatserv BATCH -{batch}"

    plain = await server.irc_("plain")
    plain.say("JOIN #lobby")
    said = await plain.until("first")
    assert re.fullmatch(r":alice PRIVMSG #lobby :\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] first", said)


async def _batch(client, request: str) -> list[tuple[str, str, str]]:
    """Send a CHATHISTORY request; its batch's messages as (msgid, time, text)."""
    client.say(request)
    start = await client.until("BATCH +")
    batch = re.fullmatch(r":irc\.chatserv BATCH \+(\S+) chathistory \S+", start).group(1)
    found = []
    while (line := await client.until(lambda _: True)) != f":irc.chatserv BATCH -{batch}":
        tags = dict(t.split("=", 1) for t in line[1:].split(" ", 1)[0].split(";"))
        assert tags["batch"] == batch, line
        found.append((tags["msgid"], tags["time"], ircmessage.parse(line).params[-1]))
    return found


@pytest_twisted.ensureDeferred
async def test_chathistory_pages_by_msgid_and_timestamp(server):
    alice = await server.line("alice")
    for n in range(1, 11):
        alice.say(f"m{n}")
    await eventually(lambda: len(server.chat.rooms["lobby"].recent) == 10)
    caps = "batch server-time message-tags draft/chathistory"
    hist = await server.irc_("hist", caps=caps)
    isupport = " ".join(line for line in hist.history if " 005 " in line)
    assert "CHATHISTORY=500" in isupport and "MSGREFTYPES=msgid,timestamp" in isupport
    hist.say("JOIN #lobby")
    await hist.until(" 366 hist #lobby ")
    hist.say("PING :sync")
    await hist.until("PONG")
    assert not [line for line in hist.history if "BATCH" in line or "m1" in line]  # it asks

    every = await _batch(hist, "CHATHISTORY LATEST #lobby * 100")
    assert [text for _, _, text in every] == [f"m{n}" for n in range(1, 11)]
    ids = {text: msgid for msgid, _, text in every}
    times = {text: at for _, at, text in every}

    async def texts(request: str) -> list[str]:
        return [text for _, _, text in await _batch(hist, request)]

    assert await texts("CHATHISTORY LATEST #lobby * 3") == ["m8", "m9", "m10"]
    assert await texts(f"CHATHISTORY LATEST #LOBBY msgid={ids['m8']} 10") == ["m9", "m10"]
    assert await texts(f"CHATHISTORY BEFORE #lobby msgid={ids['m8']} 2") == ["m6", "m7"]
    assert await texts(f"CHATHISTORY AFTER #lobby msgid={ids['m6']} 2") == ["m7", "m8"]
    assert await texts(f"CHATHISTORY AROUND #lobby msgid={ids['m5']} 3") == ["m4", "m5", "m6"]
    between = f"CHATHISTORY BETWEEN #lobby msgid={ids['m2']} msgid={ids['m6']}"
    assert await texts(between + " 10") == ["m3", "m4", "m5"]
    backwards = f"CHATHISTORY BETWEEN #lobby msgid={ids['m6']} msgid={ids['m2']} 2"
    assert await texts(backwards) == ["m4", "m5"]
    assert await texts(f"CHATHISTORY BEFORE #lobby msgid={ids['m1']} 5") == []  # an empty batch
    huge = "9" * 30  # past any id a database holds
    assert await texts(f"CHATHISTORY AROUND #lobby msgid={huge} 3") == ["m9", "m10"]
    assert await texts(f"CHATHISTORY AFTER #lobby msgid={huge} 2") == []
    # By time, to the millisecond the time tag shows: messages of the same millisecond
    # are all on one side.
    at = times["m8"]
    before = await texts(f"CHATHISTORY BEFORE #lobby timestamp={at} 100")
    assert before == [text for _, t, text in every if t < at]
    after = await texts(f"CHATHISTORY AFTER #lobby timestamp={at} 100")
    assert after == [text for _, t, text in every if t > at]
    older = [text for _, t, text in every if t <= at][-2:]  # half, the time's own included
    newer = [text for _, t, text in every if t > at][: 4 - len(older)]
    assert await texts(f"CHATHISTORY AROUND #lobby timestamp={at} 4") == older + newer
    mixed = f"CHATHISTORY BETWEEN #lobby timestamp={times['m1']} msgid={ids['m4']} 10"
    assert await texts(mixed) == [text for _, t, text in every[:3] if t > times["m1"]]
    assert await texts("CHATHISTORY LATEST alice * 10") == []  # private messages are not kept

    hist.say(
        "CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z timestamp=2100-01-01T00:00:00Z 5"
    )
    assert await hist.until("TARGETS #lobby") == (
        f"@batch=targets :irc.chatserv CHATHISTORY TARGETS #lobby {times['m10']}"
    )
    for request, reply in (
        ("CHATHISTORY FETCH #lobby * 5", "FAIL CHATHISTORY UNKNOWN_COMMAND FETCH :"),
        ("CHATHISTORY LATEST #lobby", "FAIL CHATHISTORY NEED_MORE_PARAMS LATEST :"),
        ("CHATHISTORY BEFORE #lobby id=3 5", "FAIL CHATHISTORY INVALID_PARAMS BEFORE :"),
        ("CHATHISTORY LATEST #lobby * none", "FAIL CHATHISTORY INVALID_PARAMS LATEST :"),
        ("CHATHISTORY LATEST #lobby * ²", "FAIL CHATHISTORY INVALID_PARAMS LATEST :"),
        ("CHATHISTORY AFTER #lobby timestamp=2026-13-45T99:99:99Z 5", "FAIL CHATHISTORY INVALID_"),
        ("CHATHISTORY LATEST #dev * 5", "FAIL CHATHISTORY INVALID_TARGET LATEST #dev :"),
    ):
        hist.say(request)
        assert (await hist.until("FAIL")).startswith(f":irc.chatserv {reply}"), request

    # Without the capability, a join still replays the history.
    plain = await server.irc_("plain", caps="batch server-time")
    plain.say("JOIN #lobby")
    await plain.until("m10")


@pytest_twisted.ensureDeferred
async def test_labeled_responses_one_line_a_batch_or_an_ack(server):
    alice = await server.line("alice")
    caps = "batch labeled-response message-tags echo-message"
    dave = await server.irc_("dave", caps=caps, join="#lobby")

    async def reply(request: str) -> list[str]:
        """What the server sent up to its reply to C{request}, from the labelled line on."""
        dave.say(request)
        label = request.split(" ", 1)[0][len("@label=") :]
        first = await dave.until(f"label={label}")
        if " BATCH +" not in first:
            return [first]
        ref = re.search(r" BATCH \+(\S+) labeled-response$", first).group(1)
        lines = [first]
        while not lines[-1].endswith(f"BATCH -{ref}"):
            lines.append(await dave.until(lambda _: True))
        inner = lines[1:-1]
        assert inner and all(re.match(rf"@(\S*;)?batch=({ref}|h\w+)[; ]", x) for x in inner)
        return lines

    assert await reply("@label=p1 PING :x") == ["@label=p1 :irc.chatserv PONG irc.chatserv x"]
    assert await reply("@label=a1 PONG :x") == ["@label=a1 :irc.chatserv ACK"]
    said = await reply("@label=m1 PRIVMSG #lobby :hello")  # the echo is the reply
    assert re.fullmatch(r"@label=m1;msgid=\d+ :dave!~dave@\S+ PRIVMSG #lobby hello", said[0])
    await alice.until("<dave> hello")
    assert await reply("@label=e1 PRIVMSG nobody :hi") == [
        "@label=e1 :irc.chatserv 401 dave nobody :No such nick/channel"
    ]
    whois = await reply("@label=w1 WHOIS alice")
    assert [m.group(1) for m in (re.search(r" (\d{3}) ", x) for x in whois[1:-1])] == [
        "311", "319", "312", "317", "318"
    ]  # fmt: skip
    joined = await reply("@label=j1 JOIN #dev")
    assert " JOIN #dev" in joined[1] and " 366 dave #dev " in joined[-2]
    assert await reply("@label=a\\sb PONG :x") == ["@label=a\\sb :irc.chatserv ACK"]
    # A chatserv command through the line grammar, refused: the refusal is the reply.
    refused = await reply("@label=r1 MUTE alice 10m")
    assert len(refused) == 1 and refused[0].startswith("@label=r1 :irc.chatserv NOTICE dave :")
    # A label longer than 64 bytes is none; nor is one from a client without the capability.
    dave.say(f"@label={'x' * 65} PING :long")
    assert "label" not in await dave.until("PONG")
    plain = await server.irc_("plain")
    plain.say("@label=z PING :plain")
    assert (await plain.until("PONG")).startswith(":irc.chatserv PONG")


class SlowHistory(MemoryStore):
    """A store whose history takes a moment, as a database's does."""

    def history(self, roomKey, limit, span=None):
        from twisted.internet import reactor

        found = super().history(roomKey, limit, span)
        return task.deferLater(reactor, 0.05, lambda: found).addCallback(lambda d: d)


@pytest_twisted.ensureDeferred
async def test_a_labeled_request_that_waits_is_labeled_when_done():
    srv, ports = await _serve(Settings(), store=SlowHistory())
    try:
        dave = await srv.irc_("dave", caps="batch labeled-response")
        dave.say("@label=j1 JOIN #slow")
        dave.say("@label=p1 PING :after")
        start = await dave.until("label=j1")
        ref = re.fullmatch(r"@label=j1 :irc\.chatserv BATCH \+(\S+) labeled-response", start)
        assert ref is not None, start
        assert f"@batch={ref.group(1)} " in await dave.until(" 366 dave #slow ")
        assert await dave.until("BATCH -") == f":irc.chatserv BATCH -{ref.group(1)}"
        assert (await dave.until("label=")).startswith("@label=p1 :irc.chatserv PONG")
    finally:
        await _stop(srv, ports)


@pytest_twisted.ensureDeferred
async def test_long_messages_are_split_for_irc(server):
    alice = await server.line("alice")
    dave = await server.irc_("dave", join="#lobby")
    words = " ".join(f"word{n:03d}" for n in range(110))  # 879 characters
    alice.say(words)
    received = []
    while " ".join(received) != words:
        line = await dave.until("PRIVMSG")
        assert len(line.encode()) <= 510
        received.append(line.split(" :", 1)[1])
    assert len(received) == 2


@pytest_twisted.ensureDeferred
async def test_a_client_joining_ten_channels_is_not_throttled(server):
    dave = await server.irc_("dave")
    # What irssi sends after registering: the JOIN, then MODE and WHO for each channel.
    channels = [f"#c{n}" for n in range(10)]
    lines = [f"JOIN {','.join(channels[:4])}", f"JOIN {','.join(channels[4:8])}"]
    lines += [f"JOIN {','.join(channels[8:])}"]
    for name in channels:
        lines += [f"MODE {name}", f"WHO {name}", f"MODE {name} b"]
    dave.transport.write("".join(f"{line}\r\n" for line in lines).encode())
    for name in channels:
        await dave.until(f" 368 dave {name} ")
    assert not any("slow down" in line for line in dave.history)


@pytest_twisted.ensureDeferred
async def test_the_server_pings_a_silent_client_and_drops_it():
    srv, ports = await _serve(Settings(ping_interval=1, ping_timeout=1))
    try:
        client = await srv.irc_("quiet")
        assert (await client.until("PING")) == "PING irc.chatserv"
        client.say("PONG irc.chatserv")
        assert (await client.until("PING")) == "PING irc.chatserv"  # alive: asked again
        error = await client.until("ERROR")  # this time no answer
        assert "Ping timeout" in error
        await client.closed
    finally:
        await _stop(srv, ports)


@pytest_twisted.ensureDeferred
async def test_irc_over_tls(tmp_path):
    from tlshelpers import connectTLSLine, makeCert
    from twisted.internet import reactor

    from chatserv.tls import TLSCredentials, tlsEndpoint

    certPath, keyPath = makeCert(tmp_path)
    srv, ports = await _serve(Settings())
    factory = IrcFactory(srv.chat, kind="ircs")
    endpoint = tlsEndpoint(reactor, LOCAL, TLSCredentials(certPath, keyPath), 10)
    ports.append(await endpoint.listen(factory))
    try:
        line = await srv.line("alice")
        client = await connectTLSLine(ports[-1].getHost().port, certPath)
        srv.clients.append(client)
        client.say("NICK secure")
        client.say("USER s 0 * :s")
        await client.until(" 422 ")
        client.say("JOIN #lobby")
        await client.until(" 366 ")
        client.say("PRIVMSG #lobby :over TLS")
        assert (await line.until("<secure>")).endswith("#lobby <secure> over TLS")
        assert srv.chat.stats()["connections_by_protocol"]["ircs"] == 1
    finally:
        await _stop(srv, ports)


@pytest_twisted.ensureDeferred
async def test_sasl_before_user_still_gets_the_username_in_its_mask(server):
    await server.chat.createAccount(CONSOLE, "sam", "secret-pw1")
    client = await server.raw()
    client.say("CAP LS 302")
    client.say("CAP REQ :sasl")
    client.say("AUTHENTICATE PLAIN")
    await client.until("AUTHENTICATE +")
    client.say("AUTHENTICATE " + base64.b64encode(b"sam\0sam\0secret-pw1").decode())
    assert "sam!sam@" in await client.until(" 900 ")  # no USER yet: the nick stands in
    client.say("NICK sam")
    client.say("USER samuser 0 * :Sam")
    client.say("CAP END")
    await client.until(" 422 ")
    client.say("JOIN #lobby")
    assert re.match(r":sam!~samuser@\S+ JOIN #lobby", await client.until("JOIN"))


@pytest_twisted.ensureDeferred
async def test_registration_must_end_in_time():
    srv, ports = await _serve(Settings(nick_timeout=1))
    try:
        await srv.chat.createAccount(CONSOLE, "sam", "secret-pw1")
        client = await srv.raw()
        client.say("CAP LS 302")
        client.say("CAP REQ :sasl")
        client.say("AUTHENTICATE PLAIN")
        await client.until("AUTHENTICATE +")
        client.say("AUTHENTICATE " + base64.b64encode(b"sam\0sam\0secret-pw1").decode())
        await client.until(" 903 ")  # logged in, with a nickname, but never CAP END
        error = await client.until("ERROR")
        assert "registration not completed in 1 seconds" in error
        await client.closed
    finally:
        await _stop(srv, ports)


# -- a real IRC client library ----------------------------------------------------------


class _Bot(twirc.IRCClient):
    nickname = "twbot"

    def __init__(self) -> None:
        self.signed = defer.Deferred()
        self.joinedRooms = defer.Deferred()
        self.said: defer.DeferredQueue = defer.DeferredQueue()

    def signedOn(self) -> None:
        self.signed.callback(None)

    def joined(self, channel: str) -> None:
        self.joinedRooms.callback(channel)

    def privmsg(self, user: str, channel: str, message: str) -> None:
        self.said.put((user.split("!")[0], channel, message))

    def action(self, user: str, channel: str, data: str) -> None:
        self.said.put((user.split("!")[0], channel, "* " + data))


@pytest_twisted.ensureDeferred
async def test_twisted_words_irc_client(server):
    from twisted.internet import reactor

    alice = await server.line("alice")
    factory = protocol.Factory.forProtocol(_Bot)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.irc, timeout=TIMEOUT)
    bot = await endpoint.connect(factory)
    try:
        await bot.signed.addTimeout(TIMEOUT, reactor)
        bot.join("lobby")
        assert await bot.joinedRooms.addTimeout(TIMEOUT, reactor) == "#lobby"
        # It read the ISUPPORT that followed the welcome.
        assert bot.supported.getFeature("CHANTYPES") == ("#",)
        assert bot.supported.getFeature("PREFIX") == {"o": ("@", 0)}
        alice.say("hi bot")
        assert await bot.said.get().addTimeout(TIMEOUT, reactor) == ("alice", "#lobby", "hi bot")
        alice.say("/me pokes the bot")
        said = await bot.said.get().addTimeout(TIMEOUT, reactor)
        assert said == ("alice", "#lobby", "* pokes the bot")
        bot.say("#lobby", "beep boop")
        assert (await alice.until("<twbot>")).endswith("#lobby <twbot> beep boop")
        bot.describe("#lobby", "whirrs")
        assert (await alice.until("* twbot")).endswith("#lobby * twbot whirrs")
        bot.msg("alice", "a secret")
        assert (await alice.until("*twbot*")).endswith("*twbot* a secret")
    finally:
        bot.transport.loseConnection()


# -- pieces -------------------------------------------------------------------------------


def test_parse_and_format_messages():
    m = ircmessage.parse("@time=x;a=b\\sc :nick!u@h PRIVMSG #room :hello  there")
    assert (m.verb, m.params, m.source) == ("PRIVMSG", ["#room", "hello  there"], "nick!u@h")
    assert m.tags == {"time": "x", "a": "b c"}
    assert ircmessage.parse("privmsg a b c").params == ["a", "b", "c"]
    with pytest.raises(ircmessage.BadMessage):
        ircmessage.parse("   ")
    assert ircmessage.line("s", "PRIVMSG", "#r", "hi") == ":s PRIVMSG #r hi\r\n"
    assert ircmessage.line("s", "PRIVMSG", "#r", "hi there") == ":s PRIVMSG #r :hi there\r\n"
    assert ircmessage.line(None, "PING", "") == "PING :\r\n"
    assert ircmessage.line("s", "X", "a\r\nQUIT") == ":s X a^M^JQUIT\r\n"  # no second command
    assert ircmessage.line("s", "401", "me", "no body", "x") == ":s 401 me no_body x\r\n"
    assert 500 < len(ircmessage.line("s", "PART", "#r", "x" * 600).encode()) <= 512
    assert ircmessage.tagText({"a": "b c;d"}) == "@a=b\\sc\\:d "


def test_split_keeps_characters_whole():
    text = "é" * 300  # 600 bytes
    pieces = ircmessage.split(text, 101)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= 101 for p in pieces)


def test_cloaks_are_stable_and_hide_the_address():
    masks = Hostmasks("cloak", "key")
    assert masks("203.0.113.7") == Hostmasks("cloak", "key")("203.0.113.7")
    assert masks("203.0.113.7") != masks("203.0.113.8")
    assert "203" not in masks("203.0.113.7") and masks("203.0.113.7").endswith(".cloak")
    assert Hostmasks("cloak", "other")("203.0.113.7") != masks("203.0.113.7")
    assert Hostmasks("address")("::1") == "0::1"  # never a parameter that starts with ":"


def test_the_cloak_key_is_the_configured_one_or_else_the_databases():
    class Kept(MemoryStore):  # as the SQL stores do: a key made once and kept
        def load(self):
            return dataclasses.replace(super().load(), cloakKey="kept")

    address = "203.0.113.7"
    service = ChatService(Settings(), store=Kept())
    assert service.hostmasks(address) == Hostmasks("cloak", "kept")(address)
    configured = ChatService(Settings(irc_cloak_key="mine"), store=Kept())
    assert configured.hostmasks(address) == Hostmasks("cloak", "mine")(address)
    # The memory store keeps none: a random key for each run.
    once, again = ChatService(Settings()), ChatService(Settings())
    assert once.hostmasks(address) != again.hostmasks(address)


def test_irc_settings_are_checked():
    with pytest.raises(ConfigError, match="irc.hostmask"):
        makeSettings({"irc_hostmask": "real"})
    with pytest.raises(ConfigError, match="irc.server_name needs a dot"):
        makeSettings({"irc_server_name": "chatserv"})
    with pytest.raises(ConfigError, match="irc.network"):
        makeSettings({"irc_network": "two words"})


def test_lusers_counts_the_admins_at_most_once_a_second():
    from helpers import IrcConnection, makeService

    service, clock = makeService(irc_rate_burst=100)
    factory = IrcFactory(service)
    counted = []
    isAdmin = service.isAdmin
    service.isAdmin = lambda user: counted.append(user) or isAdmin(user)
    for n in range(50):  # a storm of registrations: one pass over the users, not fifty
        conn = IrcConnection(factory=factory, host=f"10.1.0.{n}", port=6000 + n)
        assert any(" 252 " in line for line in conn.register(f"user{n}"))
    assert len(counted) <= 1
    clock.advance(1)
    conn.sendLine("LUSERS")
    assert any(" 252 user49 0 " in line for line in conn.lines())
    assert len(counted) == 1 + 50


def test_the_welcome_burst_fits_512_bytes_whatever_the_nickname(tmp_path):
    from helpers import IrcConnection, makeService

    motd = tmp_path / "motd.txt"
    motd.write_text("é" * 400 + "\nshort line\n", encoding="utf-8")  # 800 bytes: cut
    service, _ = makeService(irc_motd_file=str(motd))
    factory = IrcFactory(service)
    for n, nick in enumerate(["a", "b" * 32]):
        conn = IrcConnection(factory=factory, host=f"10.2.0.{n}", port=6000 + n)
        burst = conn.register(nick)
        assert any(f" 376 {nick} " in line for line in burst)
        assert any(line.endswith(f" 372 {nick} :- short line") for line in burst)
        for line in burst:
            assert len(line.encode("utf-8")) <= 510, line
            assert line.split(" ")[2] in (nick, "*") or not line.startswith(":irc"), line
