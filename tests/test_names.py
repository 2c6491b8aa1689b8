import pytest

from chatserv.errors import BadName
from chatserv.names import checkNick, checkRoom, fold


@pytest.mark.parametrize(
    "nick", ["alice", "a", "A" * 32, "_x", "[away]", "{x}", "a-b", "b9", "x|y^z`", "Zoë"[:2]]
)
def test_valid_nicks(nick):
    assert checkNick(nick) == nick


@pytest.mark.parametrize(
    "nick", ["", "A" * 33, "9lives", "-dash", "a b", "zoë", "a.b", "a\x1b", "#room", "a\n"]
)
def test_invalid_nicks_say_why(nick):
    with pytest.raises(BadName, match="invalid nickname.*1-32 characters"):
        checkNick(nick)


def test_rfc1459_case_mapping():
    assert fold("Alice") == fold("ALICE") == "alice"
    assert fold("[x]") == fold("{X}") == "{x}"
    assert fold("a|b") == fold("A\\b")


def test_room_names_take_an_optional_hash():
    assert checkRoom("#dev") == "dev"
    assert checkRoom("dev") == "dev"
    for bad in ("#", "##dev", "", "a b", "#" + "x" * 33):
        with pytest.raises(BadName, match="invalid room name"):
            checkRoom(bad)


def test_error_message_escapes_what_was_sent():
    with pytest.raises(BadName) as info:
        checkNick("evil\x1b[2J")
    assert "\x1b" not in str(info.value)
