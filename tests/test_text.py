from chatserv.text import invisible, sanitize


def test_plain_text_is_unchanged():
    assert sanitize("héllo wörld ✓ 你好") == "héllo wörld ✓ 你好"


def test_escape_sequences_are_made_visible():
    assert sanitize("\x1b[31mred\x1b[0m") == "^[[31mred^[[0m"
    assert sanitize("bell\x07 nul\x00 del\x7f") == "bell^G nul^@ del^?"
    assert sanitize("a\r\nb") == "a^M^Jb"


def test_c1_controls_and_bidi_overrides_are_made_visible():
    assert sanitize("\x9b31m") == "<U+009B>31m"
    assert sanitize("abc\u202edef") == "abc<U+202E>def"


def test_tab_becomes_space():
    assert sanitize("a\tb") == "a b"


def test_nothing_unsafe_survives():
    everything = "".join(chr(c) for c in range(0x00, 0xA0)) + "\u2028\u2066"
    out = sanitize(everything)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)
    assert "\u2028" not in out and "\u2066" not in out


def test_lone_surrogates_are_made_visible_and_encodable():
    out = sanitize("a\ud800b\udfff")
    assert out == "a<U+D800>b<U+DFFF>"
    out.encode("utf-8")  # would raise UnicodeEncodeError if one survived


def test_a_byte_order_mark_is_removed_and_other_format_characters_kept():
    assert sanitize("\ufeffhello\ufeff there") == "hello there"
    # Deliberately kept: emoji sequences, scripts that need joiners, Thai word breaks.
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert sanitize(family) == family
    assert sanitize("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645") == (
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    )
    assert sanitize("\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u200b\u0e04\u0e23\u0e31\u0e1a") == (
        "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u200b\u0e04\u0e23\u0e31\u0e1a"
    )


def test_invisible_text():
    assert invisible("") and invisible(" \u200b\u200d\ufeff\u2060 ")
    assert not invisible("\u200bx") and not invisible("\U0001f600")


def test_message_text_keeps_irc_formatting_that_other_wires_never_see():
    from chatserv.text import plain

    text = "\x02bold\x02 \x0304,12red\x03 \x1ditalic\x1d \x1funder\x0f \x04ff8800hex\x04"
    assert sanitize(text, formatting=True) == text  # kept, for IRC users
    assert sanitize(text) == sanitize(text, formatting=False)  # elsewhere: made visible
    assert "^B" in sanitize(text)
    assert plain(text) == "bold red italic under hex"
    assert plain("\x0312345") == "345" and plain("\x03,5x") == ",5x"  # at most 2 digits
    # Everything else is still escaped when formatting is kept, before plain() runs.
    dangerous = sanitize("\x02hi\x1b[2J\x07\x01ACTION\x01\u202e", formatting=True)
    assert dangerous == "\x02hi^[[2J^G^AACTION^A<U+202E>"
    assert plain(dangerous) == "hi^[[2J^G^AACTION^A<U+202E>"
    assert plain("nothing to strip") == "nothing to strip"


def test_formatting_reaches_the_room_history_but_not_a_terminal_or_a_page():
    import json

    from helpers import makeService, named

    from chatserv.render import jsonText, lineBytes

    service, _ = makeService()
    alice = named(service, "alice")
    bob = named(service, "bob", port=5001)
    alice.send("\x02important\x02 \x0304news\x03\n")
    (said,) = service.rooms["lobby"].recent
    assert said.text == "\x02important\x02 \x0304news\x03"  # what IRC users will be sent
    assert bob.lines()[-1].endswith("<alice> important news")
    assert json.loads(jsonText(said))["text"] == "important news"
    assert lineBytes(said).endswith(b"<alice> important news\r\n")
    alice.send("\x02\x0f\x1d\n")  # formatting and nothing else: nothing to send
    assert "nothing to send" in alice.output()
