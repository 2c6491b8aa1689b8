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


def sanitize(text: str) -> str:
    """Return C{text} with every control or direction-override character made visible.

    Tabs become a space, since they are the one control users type on purpose.
    """
    text = text.replace("\t", " ")
    if _UNSAFE.search(text) is None:  # the common case costs one scan
        return text
    return _UNSAFE.sub(_escape, text)


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
