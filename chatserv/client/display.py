"""Recognised lines as coloured text, and the scroll-back that holds them.

Fragments are prompt_toolkit's C{(style, text)} pairs, but nothing here needs a terminal:
L{MessageLog} wraps lines to a width and picks the rows to show, so scrolling is tested
with plain lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth

from chatserv.client import lines as ln
from chatserv.names import fold

STYLE = Style.from_dict(
    {
        "time": "#808080",
        "notice": "#9e9e9e",
        "error": "#ff5f5f bold",
        "client": "#9e9e9e italic",
        "client-error": "#ff5f5f italic",
        "own": "#87afd7",
        "private": "#d7afff",
        "status": "reverse",
        "status.bad": "reverse #ff5f5f",
        "more": "reverse #ffd75f",
        "prompt": "bold",
    }
)

# Base style of each kind of line; the nicknames in it get their own colour on top.
_KIND_STYLE = {
    ln.ERROR: "class:error",
    ln.CLIENT: "class:client",
    ln.CLIENT_ERROR: "class:client-error",
    ln.NOTICE: "class:notice",
    ln.WELCOME: "class:notice",
    ln.LOGIN: "class:notice",
    ln.JOIN: "class:notice",
    ln.LEAVE: "class:notice",
    ln.QUIT: "class:notice",
    ln.RENAME: "class:notice",
    ln.WHO: "class:notice",
    ln.INFO: "class:notice",
    ln.HISTORY_END: "class:notice",
    ln.PRIVATE: "class:private",
    ln.PRIVATE_SENT: "class:private",
}

MAX_LINES = 100_000  # scroll-back kept: a day in a busy room, a few tens of MB at most


# Nickname colours: distinct hues, all exact xterm-256 colours (most terminals get 256
# colours, and a colour between the cube's steps would be rounded into a neighbour's), none
# the red of errors, all readable on dark backgrounds and most on light ones.
PALETTE = (
    "#ff875f", "#ffaf00", "#d7d700", "#87d700", "#5fd75f", "#00d787", "#00d7d7", "#00afaf",
    "#5fafff", "#8787ff", "#af87ff", "#d75fd7", "#ff87af", "#d7af87", "#afd75f",
)  # fmt: skip


def nickColor(nick: str) -> str:
    """A stable C{#rrggbb} for a nickname, the same for every spelling the server treats
    as the same nickname (rfc1459 case folding)."""
    # blake2b, not crc32: a CRC is linear, so similar nicknames (user1, user2) cluster.
    digest = hashlib.blake2b(fold(nick).encode("utf-8"), digest_size=4).digest()
    return PALETTE[int.from_bytes(digest, "big") % len(PALETTE)]


def fragments(line: ln.Line) -> StyleAndTextTuples:
    """The line as styled fragments: time, then the text with its nicknames coloured."""
    base = "class:own" if line.own else _KIND_STYLE.get(line.kind, "")
    out: StyleAndTextTuples = []
    if line.stamp:
        out.append(("class:time", f"[{line.stamp}] "))
    at = 0
    for start, end in line.spans:
        nick = line.text[start:end]
        # The sender's own colour is theirs alone: not for the other names on the line.
        color = line.color if line.color and nick == line.nick else nickColor(nick)
        if at < start:
            out.append((base, line.text[at:start]))
        out.append((f"{base} fg:{color}" + (" bold" if line.own else ""), nick))
        at = end
    if at < len(line.text) or not out:
        out.append((base, line.text[at:]))
    return out


def _width(text: str) -> int:
    return get_cwidth(text)


def wrap(fragments: StyleAndTextTuples, width: int, indent: int = 0) -> list[StyleAndTextTuples]:
    """Split styled text into rows of at most C{width} cells, breaking after a space where
    one is near, and starting continuation rows with C{indent} spaces (under the text, past
    the time stamp)."""
    width = max(width, 1)
    if indent >= width // 2:
        indent = 0
    cells = [(style, char) for style, text, *_ in fragments for char in text]
    rows: list[StyleAndTextTuples] = []
    row: list[tuple[str, str]] = []
    used = 0
    lastSpace = -1  # index in row after which a break is allowed
    for style, char in cells:
        w = _width(char)
        if used + w > width and row:
            if 0 <= lastSpace < len(row) - 1 and lastSpace > indent:
                carry, row = row[lastSpace + 1 :], row[: lastSpace + 1]
            else:
                carry = []
            rows.append(_merge(row))
            row = [("", " ")] * indent + carry
            used = sum(_width(c) for _, c in row)
            lastSpace = -1
        row.append((style, char))
        used += w
        if char == " ":
            lastSpace = len(row) - 1
    rows.append(_merge(row))
    return rows


def _merge(cells: Iterable[tuple[str, str]]) -> StyleAndTextTuples:
    """Join neighbouring cells of the same style back into fragments."""
    merged: StyleAndTextTuples = []
    for style, char in cells:
        if merged and merged[-1][0] == style:
            merged[-1] = (style, merged[-1][1] + char)
        else:
            merged.append((style, char))
    return merged


class MessageLog:
    """Everything received this session, and which part of it is on screen.

    The view is either following the newest line (C{anchor} None) or pinned so that line
    C{anchor} is the bottom one shown: new lines then arrive below without moving what the
    user is reading, and are counted in C{unseen}.
    """

    def __init__(self, limit: int = MAX_LINES) -> None:
        self.lines: list[StyleAndTextTuples] = []
        self.indents: list[int] = []
        self.limit = limit
        self.anchor: int | None = None
        self.unseen = 0
        self._top = 0  # first line index on screen at the last render
        self._height = 10
        self._cache: dict[int, list[StyleAndTextTuples]] = {}  # wrapped rows by line index
        self._cacheWidth = 0

    @property
    def scrolled(self) -> bool:
        return self.anchor is not None

    def add(self, line: ln.Line) -> None:
        self.lines.append(fragments(line))
        self.indents.append(len(line.stamp) + 3 if line.stamp else 0)
        if self.anchor is not None:
            self.unseen += 1
        if len(self.lines) > self.limit:
            drop = len(self.lines) - self.limit
            del self.lines[:drop], self.indents[:drop]
            self._cache.clear()
            if self.anchor is not None:
                self.anchor = max(self.anchor - drop, 0)

    def _rows(self, index: int, width: int) -> list[StyleAndTextTuples]:
        if width != self._cacheWidth:
            self._cache.clear()
            self._cacheWidth = width
        rows = self._cache.get(index)
        if rows is None:
            rows = self._cache[index] = wrap(self.lines[index], width, self.indents[index])
        return rows

    def visible(self, width: int, height: int) -> list[StyleAndTextTuples]:
        """The rows to draw, top to bottom, exactly C{height} of them (blank rows above when
        there is little to show, so the newest line sits just over the status bar)."""
        self._height = height
        if height <= 0:
            return []
        room = height - 1 if self.scrolled else height  # the last row says more is below
        rows: list[StyleAndTextTuples] = []
        bottom = len(self.lines) - 1 if self.anchor is None else self.anchor
        index = bottom
        while index >= 0 and len(rows) < room:
            rows[:0] = self._rows(index, width)
            index -= 1
        if len(rows) < room and self.scrolled and bottom < len(self.lines) - 1:
            # Scrolled to the very top: fill the page downwards rather than leave it blank.
            forward = bottom + 1
            while forward < len(self.lines) and len(rows) < room:
                rows.extend(self._rows(forward, width))
                forward += 1
            rows = rows[:room]
            self.anchor = forward - 1
        self._top = index + 1
        rows = rows[-room:] if room else []
        rows = [[]] * (room - len(rows)) + rows
        if self.scrolled:
            rows.append(self._moreRow(width))
        return rows

    def _moreRow(self, width: int) -> StyleAndTextTuples:
        below = len(self.lines) - 1 - (self.anchor or 0)
        new = f", {self.unseen} new" if self.unseen else ""
        text = f" -- more below: {below} line{'s' if below != 1 else ''}{new}; End returns -- "
        return [("class:more", text[:width].ljust(width))]

    def pageUp(self) -> None:
        """Show the page above; the top line of this page stays on screen, at the bottom."""
        if not self.lines:
            return
        bottom = len(self.lines) - 1 if self.anchor is None else self.anchor
        self.anchor = max(min(self._top, bottom - 1), 0)

    def pageDown(self) -> None:
        """Show the page below, or follow the newest line again at the end."""
        if self.anchor is None:
            return
        # Roughly a page of lines: the exact count depends on wrapping, which the next
        # render recomputes; one line of the old page stays on screen for context.
        self.anchor += max(self.anchor - self._top, 1)
        if self.anchor >= len(self.lines) - 1:
            self.toBottom()

    def toBottom(self) -> None:
        self.anchor = None
        self.unseen = 0
