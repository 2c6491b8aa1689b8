"""What the client knows about its session, learnt from what the server says.

The nickname, room and room members come from the server's own lines (welcome, join,
leave, quit, rename, who), never from what the user typed, so they stay right whatever
command produced them. They are what a reconnect needs to restore, what the status bar
shows and what Tab completes.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace

from chatserv.client import lines as ln
from chatserv.client.connection import Request
from chatserv.names import fold

# "TEXT > NICK" is a private message when NICK is online (chatserv.commands._PRIVATE).
_PRIVATE = re.compile(r"(?P<text>.*\S)\s*>\s*(?P<nick>[^\s>]+)\s*")
# "/me waves", and the "/me/waves" form the server accepts for any command.
_COMMAND = re.compile(r"/(?P<name>[^\s/]*)(?:[ /](?P<rest>.*))?", re.DOTALL)


class ChatState:
    def __init__(self, nick: str | None = None) -> None:
        self.nick: str | None = None  # the server has confirmed it on this connection
        self.wantedNick = nick  # what to ask for on (re)connecting
        self.room: str | None = None
        self.members: dict[str, str] = {}  # folded -> as spelled, the current room's users
        self.partners: dict[str, str] = {}  # people we exchanged private messages with
        # /login NICK PASSWORD (or /register) that worked, to log in again after a
        # reconnect. Kept in memory only, for this session.
        self.credentials: tuple[str, str] | None = None
        self._pendingLogin: tuple[str, str] | None = None
        self._pendingRegister: str | None = None
        self._pendingPassword: str | None = None
        self.rejoin: str | None = None  # the room to go back to after a reconnect
        self._autoLogin = False  # connected() sent the /login: its error is ours to handle
        self.quitting = False  # the user asked to leave
        # Ids of messages shown (JSON): a room's history replayed on joining it again
        # shows only what the user has not seen yet (the server replays it all when the
        # connection is new and no since was sent, or the server predates since).
        self.shownIds: set[int] = set()
        # The newest message id shown of each room (folded name): after a reconnect the
        # client sends it as "since", and the server replays only what was missed.
        self.newest: dict[str, int] = {}
        self.home: str | None = None  # the server's default room, where a welcome lands
        self._welcomed = False  # welcomed, and not yet in the default room
        self._historyAsked = False  # /history: the user wants to see it all again
        self._skipped = 0
        self.ended = False  # the server ended the connection on purpose (kick, ban...)

    # -- connection events -------------------------------------------------------------

    @property
    def reconnect(self) -> bool:
        return not (self.quitting or self.ended)

    def connected(self) -> list[Request]:
        """What to send on a new connection to get the session back: a login, or the
        nickname (the room follows once the server welcomes us, see L{observe})."""
        self._autoLogin = self.credentials is not None
        if self.credentials is not None:
            nick, password = self.credentials
            fields = {"type": "login", "nick": nick, "password": password}
            return [self._request(f"/login {nick} {password}", fields, self.home)]
        if self.wantedNick:
            return [self._nickRequest(self.wantedNick)]
        return []

    def _nickRequest(self, nick: str) -> Request:
        # A first nickname lands in the default room: its since goes with the nickname.
        return self._request(f"/nick {nick}", {"type": "nick", "nick": nick}, self.home)

    def _request(self, line: str, fields: dict[str, object], room: str | None) -> Request:
        """C{line}, and as JSON the same with C{since}: the newest message of C{room}
        shown, if any, so that the server replays only newer ones."""
        since = self.newest.get(fold(room)) if room is not None else None
        if since is not None:
            fields = {**fields, "since": since}
        return Request(line, fields)

    def disconnected(self) -> None:
        if self.room is not None:
            self.rejoin = self.room
        self.nick = None
        self.room = None
        self.members.clear()

    # -- what the user typed -----------------------------------------------------------

    def typed(self, text: str) -> None:
        """Note what a typed line will do to the session, before it is sent."""
        match = _COMMAND.fullmatch(text) if text.startswith("/") else None
        if match is None:
            return
        name, words = match["name"].lower(), (match["rest"] or "").split()
        if name == "quit":
            self.quitting = True
        elif name == "history":
            self._historyAsked = True
        elif name == "login" and len(words) == 2:
            self._pendingLogin = (words[0], words[1])
        elif name == "register" and len(words) == 1:
            self._pendingRegister = words[0]
        elif name == "passwd" and len(words) == 2:
            self._pendingPassword = words[1]

    def echo(self, text: str) -> ln.Line | None:
        """What a line client should show for a line its user sent: the room message it
        makes, as others see it. The line wire echoes nothing (a terminal shows what was
        typed); a full-screen client has to. None when the line is not a room message."""
        if self.nick is None or self.room is None or not text.strip() or text.strip() == "?":
            return None
        kind = ln.MESSAGE
        body = text
        if text.startswith("//"):
            body = text[1:]
        elif text.startswith("/"):
            match = _COMMAND.fullmatch(text)
            if match is None or match["name"].lower() not in ("say", "me"):
                return None
            kind = ln.MESSAGE if match["name"].lower() == "say" else ln.ACTION
            body = match["rest"] or ""
        else:
            private = _PRIVATE.fullmatch(text)
            if private and self.knows(private["nick"]):
                return None  # the server turns it into a private message and sends a copy
        body = body.strip()
        if not body:
            return None  # the server refuses it, and says so
        if kind == ln.MESSAGE:
            line = f"#{self.room} <{self.nick}> {body}"
        else:
            line = f"#{self.room} * {self.nick} {body}"
        return replace(ln.recognise(line, time.strftime("%H:%M:%S")), own=True)

    # -- what the server said ----------------------------------------------------------

    def toShow(self, lines: list[ln.Line]) -> list[ln.Line]:
        """The lines worth drawing: replayed messages already on screen are left out,
        and counted in a note at the end of the replay."""
        shown = []
        for line in lines:
            if line.id is not None:
                if line.history and line.id in self.shownIds and not self._historyAsked:
                    self._skipped += 1
                    continue
                self.shownIds.add(line.id)
            shown.append(line)
            if line.kind == ln.HISTORY_END:
                if self._skipped:
                    s = "s" if self._skipped != 1 else ""
                    shown.append(ln.clientLine(f"({self._skipped} message{s} already shown)"))
                self._historyAsked = False
                self._skipped = 0
        return shown

    def knows(self, nick: str) -> bool:
        key = fold(nick)
        return key in self.members or key in self.partners

    def nicknames(self) -> list[str]:
        """Nicknames to complete: the room's users, then private-message partners."""
        mine = fold(self.nick) if self.nick else None
        names = dict(self.partners)
        names.update(self.members)
        return sorted((v for k, v in names.items() if k != mine), key=str.lower)

    def _isMe(self, nick: str | None) -> bool:
        return nick is not None and self.nick is not None and fold(nick) == fold(self.nick)

    def _inRoom(self, room: str | None) -> bool:
        return room is not None and self.room is not None and fold(room) == fold(self.room)

    def observe(self, line: ln.Line) -> list[Request]:
        """Update from one line of server output; returns what to send in reply (the
        C{/join} that takes a reconnected client back to its room)."""
        kind = line.kind
        if line.id is not None and line.room and kind in (ln.MESSAGE, ln.ACTION):
            room = fold(line.room)
            self.newest[room] = max(self.newest.get(room, 0), line.id)
        if kind == ln.WELCOME and line.nick:
            self.nick = self.wantedNick = line.nick
            self._welcomed = True
        elif kind == ln.LOGIN and line.nick:
            self._loggedIn(line)
        elif kind == ln.RENAME and line.nick and line.other:
            if self._isMe(line.nick):
                self.nick = self.wantedNick = line.other
            if self.members.pop(fold(line.nick), None) is not None:
                self.members[fold(line.other)] = line.other
        elif kind == ln.JOIN and line.nick and line.room:
            if self._isMe(line.nick):
                return self._arrived(line.room)
            if self._inRoom(line.room):
                self.members[fold(line.nick)] = line.nick
        elif kind == ln.LEAVE and line.nick and self._inRoom(line.room):
            if self._isMe(line.nick):
                self.room = None  # quit; a /join's leave names the old room, not this one
                self.members.clear()
            else:
                self.members.pop(fold(line.nick), None)
        elif kind == ln.QUIT and line.nick:
            # Gone from all their rooms at once; the line names none, but ours was one.
            self.members.pop(fold(line.nick), None)
        elif kind == ln.WHO and self._inRoom(line.room):
            self.members = {fold(u): u for u in line.users}
        elif kind in (ln.PRIVATE, ln.PRIVATE_SENT) and line.nick:
            self.partners[fold(line.nick)] = line.nick
        elif kind == ln.NOTICE:
            self._notice(line)
        elif kind == ln.ERROR and self._autoLogin and self.nick is None and self.credentials:
            # The account is gone or its password changed (a server restarted without
            # its database): come back as a guest under the same name rather than none.
            self._autoLogin = False
            return [self._nickRequest(self.credentials[0])]
        return []

    def _arrived(self, room: str) -> list[Request]:
        self.room = room
        if self._welcomed:  # the join a first nickname makes
            self.home, self._welcomed = room, False
        self.members = {fold(self.nick or ""): self.nick or ""}
        back, self.rejoin = self.rejoin, None
        if back is not None and fold(back) != fold(room):
            return [self._request(f"/join {back}", {"type": "join", "room": back}, back)]
        return []

    def _loggedIn(self, line: ln.Line) -> None:
        self._autoLogin = False
        nick = line.nick or ""
        if self._pendingLogin and fold(self._pendingLogin[0]) == fold(nick):
            self.credentials = (nick, self._pendingLogin[1])
        elif self._pendingRegister and line.text.startswith("-!- registered"):
            self.credentials = (nick, self._pendingRegister)
        self._pendingLogin = self._pendingRegister = None
        self.wantedNick = nick

    def _notice(self, line: ln.Line) -> None:
        if line.final:
            self.ended = True
        elif line.body == "password changed" and self.credentials and self._pendingPassword:
            self.credentials = (self.credentials[0], self._pendingPassword)
            self._pendingPassword = None
        elif line.body.startswith("you are no longer logged in as"):
            self.credentials = None
