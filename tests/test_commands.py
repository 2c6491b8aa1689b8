import json

import pytest
from helpers import FakeClient, makeService

from chatserv.commands import TABLE, parseJSON, parseLine
from chatserv.errors import BadRequest, UnknownCommand, UsageError


@pytest.fixture
def chat():
    service, _ = makeService()
    alice = service.connect(FakeClient())
    service.setNick(alice, "alice")
    bob = service.connect(FakeClient())
    service.setNick(bob, "bob")
    return service, alice


def parsed(line, chat):
    service, user = chat
    request = parseLine(line, service, user)
    return None if request is None else (request.command.name, request.args)


def test_plain_line_is_a_message(chat):
    assert parsed("hello there", chat) == ("say", {"text": "hello there"})


def test_first_plain_line_is_the_nickname():
    service, _ = makeService()
    anon = service.connect(FakeClient())
    assert parsed("  alice ", (service, anon)) == ("nick", {"nick": "alice"})


def test_commands_and_arguments(chat):
    assert parsed("/join dev", chat) == ("join", {"room": "dev"})
    assert parsed("/JOIN #dev", chat) == ("join", {"room": "#dev"})
    assert parsed("/msg bob  see you  later", chat) == (
        "msg",
        {"to": "bob", "text": "see you  later"},
    )
    assert parsed("/who", chat) == ("who", {})
    assert parsed("/who dev", chat) == ("who", {"room": "dev"})
    assert parsed("/quit", chat) == ("quit", {})
    assert parsed("/quit gone fishing", chat) == ("quit", {"reason": "gone fishing"})
    assert parsed("/me waves", chat) == ("me", {"text": "waves"})


def test_shorthands(chat):
    assert parsed("?", chat) == ("who", {})
    assert parsed("/changeRoom/dev", chat) == ("join", {"room": "dev"})
    assert parsed("/changeName/alicia", chat) == ("nick", {"nick": "alicia"})
    assert parsed("//etc/passwd is a file", chat) == ("say", {"text": "/etc/passwd is a file"})


def test_text_to_nick_is_private_only_when_nick_is_online(chat):
    assert parsed("see you > bob", chat) == ("msg", {"to": "bob", "text": "see you"})
    assert parsed("a > b > BOB", chat) == ("msg", {"to": "BOB", "text": "a > b"})
    assert parsed("2 > 1", chat) == ("say", {"text": "2 > 1"})
    assert parsed("see you > nobody", chat) == ("say", {"text": "see you > nobody"})


def test_blank_lines_are_ignored(chat):
    assert parsed("", chat) is None and parsed("   ", chat) is None


def test_unknown_command_and_bad_arguments(chat):
    with pytest.raises(UnknownCommand, match='unknown command "/frobnicate"'):
        parsed("/frobnicate", chat)
    with pytest.raises(UsageError, match="usage: /msg NICK TEXT"):
        parsed("/msg bob", chat)
    with pytest.raises(UsageError, match="usage: /join ROOM"):
        parsed("/join", chat)
    with pytest.raises(UsageError, match="too many arguments"):
        parsed("/join a b", chat)


def test_json_requests_mirror_commands():
    assert vars(parseJSON('{"type":"join","room":"dev"}'))["args"] == {"room": "dev"}
    assert parseJSON('{"type":"join","room":"dev","since":7}').args == {"room": "dev", "since": "7"}
    request = parseJSON(json.dumps({"type": "msg", "to": "bob", "text": "psst", "extra": 1}))
    assert (request.command.name, request.args) == ("msg", {"to": "bob", "text": "psst"})
    assert parseJSON('{"type":"who"}').args == {}


@pytest.mark.parametrize(
    "frame, message",
    [
        ("{nope", "malformed JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"say"', "must be a JSON object"),
        ('{"text":"hi"}', 'needs a "type"'),
        ('{"type":7}', 'needs a "type"'),
        ('{"type":"join"}', '"join" needs a "room"'),
        ('{"type":"join","room":["dev"]}', '"room" must be a string'),
        ('{"type":"say","text":1e999}', '"text" must be a string'),
        ('{"type":"history","count":1e999}', '"count" must be a whole number'),
        ('{"type":"history","count":NaN}', '"count" must be a whole number'),
        ('{"type":"history","count":Infinity}', '"count" must be a whole number'),
        ('{"type":"history","count":-Infinity}', '"count" must be a whole number'),
        ('{"type":"history","count":' + "9" * 400 + "}", '"count" must be a whole number'),
        ('{"type":"history","count":2.5}', '"count" must be a whole number'),
        ("[" * 100000 + "]" * 100000, "malformed JSON"),
        ('{"type":"say","text":' + "9" * 5000 + "}", '"text" must be a string'),
    ],
)
def test_malformed_json_is_a_bad_request(frame, message):
    with pytest.raises(BadRequest, match=message):
        parseJSON(frame)


def test_unknown_json_type():
    with pytest.raises(UnknownCommand, match='unknown request type "changeRoom"'):
        parseJSON('{"type":"changeRoom","room":"x"}')  # aliases are for typing humans


def test_every_command_has_help_and_a_json_form():
    for command in TABLE:
        assert command.summary and command.usage.startswith("/" + command.name)
        fields = {p.name: True if p.flag else "x" for p in command.params}
        request = parseJSON(json.dumps({"type": command.name, **fields}))
        assert request.command is command
        assert all(request.args[p.name] == p.label for p in command.params if p.flag)
