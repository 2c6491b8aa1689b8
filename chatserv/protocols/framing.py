"""Line framing for every line-based wire (the line protocol now, IRC next).

A chat server needs three things from its framing that LineReceiver does not do: accept
both LF and CRLF, answer an overlong line with an error and carry on with the lines
after it (so one paste does not cost the session), and split a large burst in one pass
rather than one line at a time. Each line is decoded as UTF-8 on its own, so one bad
line is refused and the next is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from chatserv.errors import BadEncoding, ChatError, LineTooLong

# Telnet commands (IAC ...), which telnet clients may send, e.g. for Ctrl-C. 0xFF never
# occurs in UTF-8, so removing them cannot damage text.
_TELNET = re.compile(rb"\xff(?:\xfa.*?\xff\xf0|[\xfb-\xfe].|[\x00-\xff])", re.DOTALL)


class _Closable(Protocol):
    closed: bool


class LineFramer:
    """Turns received bytes into lines of text, or refusals.

    C{limit} is the longest line in bytes, its ending not counted. C{line} gets each
    decoded line, C{refuse} a L{ChatError} for each line that is too long or not UTF-8,
    and C{session.closed} says when to read no further (the session has ended: what a
    read still holds is for nobody). (The session itself, not a function asking it: one
    object less for each of thousands of connections.)
    """

    __slots__ = ("limit", "_line", "_refuse", "_session", "_telnet", "_buffer", "_discarding")

    def __init__(
        self,
        limit: int,
        line: Callable[[str], object],
        refuse: Callable[[ChatError], object],
        session: _Closable,
        telnet: bool = False,
    ) -> None:
        self.limit = limit
        self._line = line
        self._refuse = refuse
        self._session = session
        self._telnet = telnet  # strip telnet commands (a line wire that telnet reaches)
        self._buffer = b""  # the start of a line whose end has not arrived
        self._discarding = False  # inside an overlong line, dropping up to its end

    def feed(self, data: bytes) -> None:
        if b"\n" not in data:  # common for interactive typing: no complete line yet
            self._buffer += data
        else:
            lines = (self._buffer + data).split(b"\n")
            self._buffer = lines.pop()
            for raw in lines:
                if self._session.closed:
                    return
                if self._discarding:
                    self._discarding = False  # this was the tail of the overlong line
                    continue
                self._received(raw[:-1] if raw.endswith(b"\r") else raw)
        # +1: a CR may be waiting for its LF.
        if len(self._buffer) > self.limit + 1:
            self._buffer = b""
            if not self._discarding:
                self._discarding = True
                self._tooLong()

    def _received(self, raw: bytes) -> None:
        if len(raw) > self.limit:
            return self._tooLong()
        if self._telnet and b"\xff" in raw:
            raw = _TELNET.sub(b"", raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._refuse(BadEncoding("that line was not valid UTF-8 and was not sent"))
            return
        self._line(line)

    def _tooLong(self) -> None:
        self._refuse(
            LineTooLong(f"line too long (the limit is {self.limit} bytes); it was not sent")
        )
