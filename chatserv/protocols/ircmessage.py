"""IRC messages as text: parsing what clients send, formatting what they are sent.

The grammar is RFC 1459's, as modern IRC documents it (https://modern.ircdocs.horse/),
with IRCv3 message tags (https://ircv3.net/specs/extensions/message-tags): an optional
C{@tags}, an optional C{:source}, a verb and up to fifteen parameters, the last of which
may contain spaces when it starts with a colon.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from chatserv.text import sanitize
from chatserv.text import unsafe as _unsafe

# Without tags, a message is at most 512 bytes with its CRLF (RFC 1459, 2.3).
MAX_BODY = 510
MAX_PARAMS = 15

_TAG_ESCAPES = {";": r"\:", " ": r"\s", "\\": "\\\\", "\r": r"\r", "\n": r"\n"}
_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


@dataclass(frozen=True, slots=True)
class Message:
    verb: str  # upper-cased
    params: list[str]
    tags: dict[str, str] = field(default_factory=dict)
    source: str | None = None

    def param(self, index: int, default: str = "") -> str:
        return self.params[index] if index < len(self.params) else default


class BadMessage(ValueError):
    """Not an IRC message (blank, or a verb missing)."""


def parse(line: str) -> Message:
    """One line from a client, its ending removed. Raises L{BadMessage} for a blank one."""
    tags: dict[str, str] = {}
    rest = line.lstrip(" ")
    if rest.startswith("@"):
        raw, _, rest = rest[1:].partition(" ")
        for item in raw.split(";"):
            if item:
                key, _, value = item.partition("=")
                tags[key] = unescapeTag(value)
        rest = rest.lstrip(" ")
    source = None
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    params: list[str] = []
    while rest:
        if rest.startswith(":") or len(params) == MAX_PARAMS:
            params.append(rest[1:] if rest.startswith(":") else rest)
            break
        word, _, rest = rest.partition(" ")
        params.append(word)
        rest = rest.lstrip(" ")
    if not params:
        raise BadMessage("no command")
    verb = params.pop(0).upper()
    return Message(verb, params, tags, source)


def body(line: str) -> str:
    """The part of a line that IRC's 512-byte limit counts: all but its tags."""
    if line.startswith("@"):
        return line.partition(" ")[2]
    return line


def unescapeTag(value: str) -> str:
    if "\\" not in value:
        return value
    out = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append(_TAG_UNESCAPES.get(nxt, nxt))
        else:
            out.append(char)
    return "".join(out)


def escapeTag(value: str) -> str:
    if not any(c in value for c in _TAG_ESCAPES):
        return value
    return "".join(_TAG_ESCAPES.get(c, c) for c in value)


def tagText(tags: dict[str, str] | None) -> str:
    """C{@a=b;c=d } (with its space), or nothing."""
    if not tags:
        return ""
    return "@" + ";".join(f"{k}={escapeTag(v)}" if v else k for k, v in tags.items()) + " "


_MAX_MIDDLE = 100  # characters in one middle parameter: nicks, channels, hosts, tokens


def _middle(param: str) -> str:
    """A middle parameter as it may be sent: one word, not starting with a colon, no
    control characters. What a client sent is echoed back in replies (a nick it asked
    for), so this is where that text is made harmless."""
    if not param:
        return "*"
    if _unsafe(param) or " " in param:
        param = sanitize(param).replace(" ", "_")
    if param.startswith(":"):
        param = "_" + param[1:]
    return param[:_MAX_MIDDLE]


def _trailing(param: str) -> str:
    # IRC's formatting codes stay; a CTCP message keeps its \x01 framing.
    if not _unsafe(param, formatting=True):
        return param
    if len(param) > 1 and param.startswith("\x01") and param.endswith("\x01"):
        return "\x01" + sanitize(param[1:-1], formatting=True) + "\x01"
    return sanitize(param, formatting=True)


def cut(text: str, size: int) -> str:
    """C{text} in at most C{size} UTF-8 bytes, never ending inside a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= size:
        return text
    return encoded[: max(size, 0)].decode("utf-8", "ignore")


def line(source: str | None, verb: str, *params: str, tags: dict[str, str] | None = None) -> str:
    """One message, CRLF-terminated. The last parameter gets its colon when it needs one,
    and is cut so that the message keeps to IRC's 512 bytes (long texts that must arrive
    whole are split before: L{split})."""
    head = f":{source} {verb}" if source else verb
    if params:
        *middle, last = params
        if middle:
            head += " " + " ".join(map(_middle, middle))
        last = _trailing(last)
        room = MAX_BODY - len(head.encode("utf-8")) - 2  # the space and the colon
        if len(last) > room // 4 and len(last.encode("utf-8")) > room:
            last = cut(last, room)
        if not last or " " in last or last.startswith(":"):
            last = ":" + last
        head += " " + last
    return tagText(tags) + head + "\r\n"


def serverTime(ts: float) -> str:
    """The C{time} tag's value: UTC, milliseconds (IRCv3 server-time)."""
    millis = int(ts * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{millis:03d}Z"


def split(text: str, budget: int) -> list[str]:
    """C{text} in pieces of at most C{budget} UTF-8 bytes, cut at spaces where it can be
    and never inside a character: a long message becomes several IRC messages."""
    encoded = text.encode("utf-8")
    if len(encoded) <= budget:
        return [text]
    budget = max(budget, 16)
    pieces = []
    while len(encoded) > budget:
        cut = encoded.rfind(b" ", budget // 2, budget + 1)
        if cut <= 0:
            cut = budget
            while cut > 0 and (encoded[cut] & 0xC0) == 0x80:  # inside a character
                cut -= 1
        pieces.append(encoded[:cut].decode("utf-8"))
        encoded = encoded[cut:].lstrip(b" ")
    if encoded:
        pieces.append(encoded.decode("utf-8"))
    return pieces
