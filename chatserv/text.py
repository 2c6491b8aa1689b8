"""Making user text safe to relay to other people's terminals and pages."""

from __future__ import annotations

import re
import unicodedata

# C0 controls (incl. ESC, CR, LF, TAB), DEL, C1 controls (0x80-0x9F: 0x9B is a one-byte
# CSI that some terminals obey), the bidirectional overrides/isolates that can make text
# display differently from what it is, and lone surrogates (JSON's "\ud800" decodes to
# one; it cannot be encoded as UTF-8 for anybody). And U+FEFF, which is removed: inside text
# it is a byte-order mark carried over from a file or a paste, and means nothing.
#
# Other invisible format characters are passed on as they are, deliberately: ZWJ and ZWNJ
# (U+200D, U+200C) build emoji sequences and shape Arabic, Persian and Indic scripts, and
# U+200B marks word breaks in Thai, Khmer, Lao and Burmese. In a message they cannot pass
# anyone off as someone else: the server names the sender, and nicknames refuse them.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029\ufeff\ud800-\udfff]"
)

# IRC's formatting codes: bold ^B, colour ^C (with up to two digits, a comma and two
# more), hex colour ^D, reset ^O, monospace ^Q, reverse ^V, italics ^], strikethrough ^^
# and underline ^_. Message text keeps them, so that IRC users see each other's
# formatting; every other wire gets the text without them (L{plain}), never the raw code.
FORMATTING = "\x02\x03\x04\x0f\x11\x16\x1d\x1e\x1f"
_UNSAFE_BUT_FORMATTING = re.compile(
    "[\x00\x01\x05-\x0e\x10\x12-\x15\x17-\x1c\x7f-\x9f"
    "\u202a-\u202e\u2066-\u2069\u2028\u2029\ufeff\ud800-\udfff]"
)
_FORMAT_CODE = re.compile(
    "\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?"
    "|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    "|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)
_ANY_FORMAT = re.compile(f"[{FORMATTING}]")


# Commands that carry a password, as someone might type them at the start of a message.
_SECRET_COMMAND = re.compile(
    r"/+(?:login|register|passwd|resetpassword|identify|auth)\b", re.IGNORECASE
)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if code < 0x20:
        return "^" + chr(code + 0x40)  # caret notation: ESC -> ^[ , NUL -> ^@
    if code == 0x7F:
        return "^?"
    if code == 0xFEFF:
        return ""
    return f"<U+{code:04X}>"


def sanitize(text: str, formatting: bool = False) -> str:
    """Return C{text} with every control or direction-override character made visible.

    Tabs become a space, since they are the one control users type on purpose. With
    C{formatting}, IRC's formatting codes are kept (for message text: see L{plain}).
    """
    text = text.replace("\t", " ")
    unsafe = _UNSAFE_BUT_FORMATTING if formatting else _UNSAFE
    if unsafe.search(text) is None:  # the common case costs one scan
        return text
    return unsafe.sub(_escape, text)


def unsafe(text: str, formatting: bool = False) -> bool:
    """Whether L{sanitize} would change C{text} (tabs aside)."""
    return (_UNSAFE_BUT_FORMATTING if formatting else _UNSAFE).search(text) is not None


def plain(text: str) -> str:
    """Message text without IRC's formatting codes: what terminals and pages are sent."""
    if _ANY_FORMAT.search(text) is None:  # the common case costs one scan
        return text
    return _FORMAT_CODE.sub("", text)


def invisible(text: str) -> bool:
    """Whether C{text} shows nothing: only spaces and invisible format characters."""
    return not any(map(_shows, text))


def _shows(char: str) -> bool:
    return not char.isspace() and unicodedata.category(char) not in ("Cc", "Cf")


def visibleStart(text: str) -> str:
    """C{text} from its first character that shows: past spaces (Unicode's too), controls
    and invisible format characters, so that a C{/} after a tab is at the start."""
    for at, char in enumerate(text):
        if _shows(char):
            return text[at:]
    return ""


def looksLikeSecret(text: str) -> bool:
    """Whether C{text} starts like a command that carries a password (C{/login ...})."""
    return _SECRET_COMMAND.match(visibleStart(text)) is not None
