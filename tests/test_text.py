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
