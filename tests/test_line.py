"""The line protocol over an in-memory transport: what nc and telnet users see."""

from helpers import LineConnection, makeService, named
from twisted.internet import defer

from chatserv.service import CONSOLE


def inLobby(**settings):
    """A service with alice and bob in the lobby, all output so far read."""
    service, _ = makeService(**settings)
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    alice.output()
    return service, alice, bob


def test_greeting_nickname_and_landing_in_lobby():
    service, _ = makeService()
    conn = LineConnection(service)
    assert conn.lines() == [
        "[12:00:00] -!- Welcome to chatserv! Type a nickname to begin, or /help."
    ]
    conn.send("alice\r\n")
    assert conn.lines() == [
        "[12:00:00] -!- Welcome, alice! Type /help for commands.",
        "[12:00:00] #lobby --> alice has joined",
        "[12:00:00] #lobby users (1): alice",
    ]


def test_motd_is_shown_first():
    service, _ = makeService(motd="Be nice.")
    assert LineConnection(service).lines()[0] == "[12:00:00] -!- Be nice."


def test_taken_or_invalid_nickname_asks_again():
    service, _ = makeService()
    named(service, "alice")
    conn = LineConnection(service)
    conn.output()
    conn.send("ALICE\n")
    assert conn.lines() == [
        '[12:00:00] error: the nickname "ALICE" is taken; choose another',
        "[12:00:00] -!- Choose a nickname: type it, or /nick NAME.",
    ]
    conn.send("9lives\n")
    assert "invalid nickname" in conn.lines()[0]
    conn.send("bob\n")
    assert conn.lines()[0].endswith("Welcome, bob! Type /help for commands.")


def test_commands_that_need_a_nickname_say_so():
    service, _ = makeService()
    conn = LineConnection(service)
    conn.output()
    conn.send("/join dev\n")
    assert conn.lines()[0] == "[12:00:00] error: choose a nickname first: type it, or /nick NAME"
    conn.send("/rooms\n")
    assert conn.lines() == ["[12:00:00] rooms (1): #lobby (0)"]


def test_two_users_talk_lf_and_crlf():
    service, clock = makeService()
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    assert alice.lines() == ["[12:00:00] #lobby --> bob has joined"]
    clock.advance(61)
    alice.send("hi bob\n")
    bob.send("hi alice\r\n")
    assert bob.lines() == ["[12:01:01] #lobby <alice> hi bob"]
    assert alice.lines() == ["[12:01:01] #lobby <bob> hi alice"]


def test_private_messages_both_forms():
    service, alice, bob = inLobby()
    alice.send("/msg bob psst\n")
    assert bob.lines() == ["[12:00:00] *alice* psst"]
    assert alice.lines() == ["[12:00:00] -> *bob* psst"]
    alice.send("lunch? > bob\n")
    assert bob.lines() == ["[12:00:00] *alice* lunch?"]
    alice.output()
    alice.send("/msg nobody hello\n")
    assert alice.lines() == ['[12:00:00] error: no user "nobody" is online']


def test_me_rename_join_and_who():
    service, alice, bob = inLobby()
    bob.send("/me waves\n")
    assert alice.lines() == ["[12:00:00] #lobby * bob waves"]
    bob.send("/nick robert\n")
    assert alice.lines() == ["[12:00:00] --- bob is now known as robert"]
    assert bob.lines() == ["[12:00:00] --- bob is now known as robert"]
    bob.send("/changeRoom/dev\n")
    assert alice.lines() == ["[12:00:00] #lobby <-- robert has left (went to #dev)"]
    assert bob.lines() == [
        "[12:00:00] #dev --> robert has joined",
        "[12:00:00] #dev users (1): robert",
        "[12:00:00] #lobby <-- robert has left (went to #dev)",
    ]
    alice.send("?\n")
    assert alice.lines() == ["[12:00:00] #lobby users (1): alice"]
    alice.send("/who #dev\n")
    assert alice.lines() == ["[12:00:00] #dev users (1): robert"]
    alice.send("/rooms\n")
    assert alice.lines() == ["[12:00:00] rooms (2): #dev (1), #lobby (1)"]


def test_time_and_help():
    service, _ = makeService()
    alice = named(service, "alice")
    alice.send("/time\n")
    assert alice.lines() == ["[12:00:00] server time: 2026-11-21T12:00:00+00:00"]
    alice.send("/help\n")
    lines = alice.lines()
    assert lines[0] == "[12:00:00] commands (/help COMMAND for one):"
    assert any("/join ROOM" in line and "/changeRoom/ROOM" in line for line in lines)
    alice.send("/help msg\n")
    assert alice.lines() == [
        "[12:00:00] /msg NICK TEXT         send a private message (also TEXT > NICK)"
    ]
    alice.send("/help nothing\n")
    assert "unknown command" in alice.lines()[0]


def test_errors_are_one_line_and_change_nothing():
    service, alice, bob = inLobby()
    for line, error in [
        ("/bogus", 'error: unknown command "/bogus"; /help lists the commands'),
        ("/msg", "error: usage: /msg NICK TEXT"),
        ("/join", "error: usage: /join ROOM"),
        ("/join bad room", "error: too many arguments; usage: /join ROOM"),
        ("/join #", "error: invalid room name"),
        ("/nick ALICE", 'error: the nickname "ALICE" is taken; choose another'),
    ]:
        bob.send(line + "\n")
        (got,) = bob.lines()
        assert got.startswith(f"[12:00:00] {error}")
    assert alice.lines() == []
    assert bob.protocol.session.room == "lobby"


def test_escape_sequences_never_reach_other_terminals():
    service, alice, bob = inLobby()
    bob.send(b"\x1b]0;pwned\x07\x1b[2Jgotcha\x9b\n".decode("latin-1").encode("utf-8"))
    (line,) = alice.lines()
    assert "\x1b" not in line and "\x07" not in line
    assert line.endswith("^[]0;pwned^G^[[2Jgotcha<U+009B>")


def test_invalid_utf8_is_an_error_and_the_connection_stays():
    service, alice, bob = inLobby()
    bob.send(b"caf\xe9\nstill here\n")
    assert bob.lines() == ["[12:00:00] error: that line was not valid UTF-8 and was not sent"]
    assert alice.lines() == ["[12:00:00] #lobby <bob> still here"]
    assert not bob.transport.disconnecting


def test_multibyte_character_split_across_reads():
    service, alice, bob = inLobby()
    data = "naïve ✓\n".encode()
    for i in range(len(data)):
        bob.send(data[i : i + 1])
    assert alice.lines() == ["[12:00:00] #lobby <bob> naïve ✓"]


def test_overlong_line_is_refused_and_following_lines_survive():
    service, alice, bob = inLobby(max_line_length=100)
    bob.send(b"x" * 101 + b"\nafter\n" + b"y" * 100 + b"\r\n")
    assert bob.lines() == [
        "[12:00:00] error: line too long (the limit is 100 bytes); it was not sent"
    ]
    assert alice.lines() == [
        "[12:00:00] #lobby <bob> after",
        "[12:00:00] #lobby <bob> " + "y" * 100,
    ]


def test_overlong_line_arriving_in_pieces_is_refused_once_and_dropped():
    service, alice, bob = inLobby(max_line_length=100)
    for _ in range(50):  # 5 KB without a newline: never buffered beyond the limit
        bob.send(b"z" * 100)
        assert len(bob.protocol._framer._buffer) <= 101
    bob.send(b"zzz\nok\n")
    assert bob.lines() == [
        "[12:00:00] error: line too long (the limit is 100 bytes); it was not sent"
    ]
    assert alice.lines() == ["[12:00:00] #lobby <bob> ok"]


def test_telnet_commands_are_ignored():
    service, alice, bob = inLobby()
    bob.send(b"\xff\xfd\x03\xff\xfb\x18hello\xff\xf4\n")  # DO SGA, WILL TTYPE, IP
    assert alice.lines() == ["[12:00:00] #lobby <bob> hello"]


def test_quit_and_lost_connection_both_announce_a_leave():
    service, _ = makeService()
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    carol = named(service, "carol", port=5002)
    alice.output()
    bob.send("/quit off to lunch\nthis is never sent\n")
    assert bob.lines()[-1] == "[12:00:00] -!- Goodbye."
    assert bob.transport.disconnecting
    bob.drop()
    carol.drop()
    assert alice.lines() == [
        "[12:00:00] #lobby <-- bob has left (quit: off to lunch)",
        "[12:00:00] #lobby <-- carol has left (connection lost)",
    ]
    assert service.findUser("bob") is None and service.findUser("carol") is None


def test_requests_run_in_order_when_one_waits():
    """A command that waits holds back the lines after it, so nothing is reordered."""
    service, _ = makeService()
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    gate = defer.Deferred()
    realJoin = service.join
    service.join = lambda *args: gate.addCallback(lambda _: realJoin(*args))
    alice.output()
    bob.send("/join dev\nhello dev\n")
    assert alice.lines() == []  # nothing yet: the join is waiting, "hello dev" too
    gate.callback(None)
    service.join = realJoin
    assert alice.lines() == ["[12:00:00] #lobby <-- bob has left (went to #dev)"]
    assert bob.protocol.session.room == "dev"
    carol = named(service, "carol", port=5002)
    carol.send("/join dev\n")
    bob.output()
    carol.send("/who\n")
    assert carol.lines()[-1] == "[12:00:00] #dev users (2): bob, carol"


def test_unexpected_failure_is_reported_and_logged_not_fatal():
    service, _ = makeService()
    alice = named(service, "alice")

    def broken(*args):
        raise RuntimeError("bug")

    service.roomList = broken
    alice.send("/rooms\n/time\n")
    assert alice.lines() == [
        "[12:00:00] error: internal error; the server logged it",
        "[12:00:00] server time: 2026-11-21T12:00:00+00:00",
    ]


def test_a_flood_in_one_read_is_not_parsed_past_its_disconnect():
    service, alice, bob = inLobby()
    parsed = []
    framer = bob.protocol._framer
    parse = framer._line  # each decoded line, to the session
    framer._line = lambda line: (parsed.append(line), parse(line))
    bob.send(b"spam\n" * 10_000)  # one read: flood control ends it within the first 100
    assert "disconnected: you sent too much, too fast" in bob.lines()[-1]
    assert len(parsed) < 100
    bob.send(b"spam\n" * 10_000)  # the connection is closing: nothing more is read
    assert len(parsed) < 100
    assert alice.lines()[-1].endswith("bob has left (flooding)")


def test_after_the_close_a_line_is_still_read_then_nothing():
    service, alice, bob = inLobby(max_line_length=100)
    halfClosed = []  # as TCP's transport does: the farewell, our FIN, and reading on
    bob.transport.loseWriteConnection = lambda: halfClosed.append(True)
    bob.send(b"spam\n" * 10_000)  # cut off for flooding
    assert halfClosed and bob.protocol.session.closed
    assert bob.transport.producerState == "producing"  # (what that read held was dropped)
    bob.send(b"x" * 100)  # one that closes on the farewell is still seen to go at once
    assert bob.transport.producerState == "producing"
    bob.send(b"x")  # one that goes on sending is not closing: nothing more is read
    assert bob.transport.producerState == "paused"


def test_invisible_characters_in_messages():
    service, alice, bob = inLobby()
    bob.send("hi\u200bthere\ufeff\n".encode())
    assert alice.lines() == ["[12:00:00] #lobby <bob> hi\u200bthere"]  # the BOM is dropped
    bob.send("\u200b\ufeff\u200d \n".encode())  # shows nothing: not sent
    assert bob.lines() == ["[12:00:00] error: nothing to send"]
    assert alice.lines() == []
    bob.send("/nick bo\u200bb\n".encode())
    assert "error:" in bob.lines()[0]  # nicknames refuse them


def test_a_command_after_spaces_or_invisible_characters_is_a_command():
    service, alice, bob = inLobby(min_password_length=8)
    for start in (" ", "\t", "\f", "\v", "\u3000", "\u00a0", "\u200b", "\ufeff", "\x00", " \t"):
        bob.send(f"{start}/time\n".encode())
        assert bob.lines()[-1].startswith("[12:00:00] server time: "), repr(start)
    bob.send(" /register hunter2secret\n\t/passwd hunter2secret n3wsecret!\n")
    assert "registered bob" in bob.output()
    bob.send("\f/login bob n3wsecret!\n")
    assert "already logged in as bob" in bob.output()
    assert "hunter2" not in alice.output() and "n3wsecret" not in alice.output()
    assert list(service.rooms["lobby"].recent) == []  # nothing was kept as history


def test_a_message_that_starts_like_a_password_command_is_refused_on_every_wire():
    import wsmemory as ws

    service, clock = makeService()
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    alice.output()
    for line in ("//login alice hunter2", "/me /register hunter2", "/msg alice /passwd a b"):
        bob.send(line + "\n")
        assert "looks like a command with a password" in bob.output(), line
    json = ws.WSConnection(ws.makeFactory(service, clock), json=True)
    json.request(type="nick", nick="carol")
    json.messages()
    json.request(type="say", text=" /LOGIN carol hunter2secret")
    assert [m["code"] for m in json.messages() if m["type"] == "error"] == ["usage"]
    assert "hunter2" not in alice.output()
    assert list(service.rooms["lobby"].recent) == []


def test_a_connection_the_server_closed_is_logged_with_why():
    from twisted.logger import formatEvent, globalLogPublisher

    service, alice, bob = inLobby()
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        service.kick(CONSOLE, "bob", "enough")
        bob.drop()  # the TCP connection then ends
        service.stopService()
        assert "server shutting down" in alice.lines()[-1]
        alice.drop()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    lines = [formatEvent(e) for e in logged if e["log_namespace"] == "chatserv.session"]
    assert lines == [
        "disconnect tcp 10.0.0.1:5001 (bob): closed: you were kicked: enough",
        "disconnect tcp 10.0.0.1:5000 (alice): closed: server shutting down",
    ]


def test_coming_back_to_a_room_replays_only_what_was_missed():
    service, alice, bob = inLobby()
    alice.send("before\n")
    bob.send("/join dev\n")
    bob.output()
    bob.send("/join lobby\n")  # nothing was said meanwhile: no history again
    assert not [line for line in bob.lines() if "history" in line or "<alice>" in line]
    bob.send("/join dev\n")
    alice.send("while you were away\n")
    bob.output()
    bob.send("/join lobby\n")
    assert [line for line in bob.lines() if "history" in line or "<alice>" in line] == [
        "[12:00:00] #lobby --- history: the last 1 message ---",
        "[2026-11-21 12:00:00] #lobby <alice> while you were away",
        "[12:00:00] #lobby --- end of history ---",
    ]
    carol = LineConnection(service, port=5002)  # a new connection gets the room's history
    carol.send("carol\n")
    assert "[2026-11-21 12:00:00] #lobby <alice> before" in carol.output()


def test_a_nickname_sent_with_a_join_goes_straight_to_that_room():
    service, _ = makeService()
    watcher = named(service, "watcher")
    watcher.output()
    alice = LineConnection(service, port=5001)
    alice.output()
    alice.send("alice\n/join dev\n")  # one packet, as a client reconnecting sends them
    shown = alice.lines()
    assert not [line for line in shown if "#lobby" in line]
    assert shown[-2:] == [
        "[12:00:00] #dev --> alice has joined",
        "[12:00:00] #dev users (1): alice",
    ]
    assert watcher.lines() == []  # the lobby saw nobody come and go
    # A plain line sent with the nickname is said in the default room, joined first.
    bob = LineConnection(service, port=5002)
    bob.send("bob\nhello\n")
    assert watcher.lines()[-2:] == [
        "[12:00:00] #lobby --> bob has joined",
        "[12:00:00] #lobby <bob> hello",
    ]
