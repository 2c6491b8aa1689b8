"""The IRC listener: irssi, WeeChat, HexChat and IRC bots in chatserv's rooms.

Room C{lobby} is channel C{#lobby}. The connection is a L{Session} like every other
wire's, so flood control, limits, accounts, bans and mutes are the same. This module
frames and parses the grammar (modern IRC, https://modern.ircdocs.horse/), registers the
client and keeps it alive; what each verb does, and the IRCv3 capabilities offered, are
in L{chatserv.protocols.ircverbs}; events become IRC messages in
L{chatserv.protocols.ircwire}.

Registration (C{CAP}, C{NICK}, C{USER}, C{PASS}, C{AUTHENTICATE}) completes when the
client has a nickname and a username and has ended capability negotiation; until then
what the service sends it is held back and follows the welcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserv import __version__
from chatserv.commands import Command, Request
from chatserv.errors import (
    BadName,
    Banned,
    ChatError,
    LineTooLong,
    LoginFailed,
    LoginThrottled,
    NickRegistered,
    NickTaken,
)
from chatserv.limits import Deadlines
from chatserv.names import MAX_NAME_LENGTH
from chatserv.people import REALNAME_LENGTH, User
from chatserv.protocols import keepAlive, noDelay
from chatserv.protocols.framing import LineFramer
from chatserv.protocols.ircmessage import MAX_BODY, BadMessage, body, escapeTag, line, parse
from chatserv.protocols.ircverbs import (
    AWAYLEN,
    COMMANDS,
    ELIST,
    KICKLEN,
    REFUSE,
    TARGMAX,
    fallback,
)
from chatserv.protocols.ircwire import IrcWires
from chatserv.protocols.line import LineChatFactory, LineChatProtocol
from chatserv.service import ChatService
from chatserv.session import Session
from chatserv.text import sanitize

_log = Logger()

# A line is at most 512 bytes, tags aside; with tags, at most 8191 (IRCv3 message-tags).
MAX_LINE = 8191
# What of a topic fits in a TOPIC or 332 line (a longer one, set on another wire, is cut).
TOPICLEN = 390
_NO_CAPS: frozenset[str] = frozenset()
LABEL_MAX = 64  # bytes of a labeled-response label; a longer one is not a label


class IrcProtocol(LineChatProtocol):
    """One IRC client's connection."""

    echo = False  # until echo-message is negotiated

    factory: IrcFactory
    registered = False
    _negotiating = False  # between CAP LS/REQ and CAP END
    _pendingNick: str | None = None
    _username: str | None = None
    _password: str | None = None
    _sasl: list[str] | None = None  # base64 pieces of an AUTHENTICATE PLAIN under way
    _held: list | None = None  # private messages the service sent before the welcome
    _heldBytes = 0
    _heard = 0.0  # when the client last sent anything
    _pinged: float | None = None  # when we sent a PING that is not answered yet
    _idleDeadline = None  # (the Deadlines it is queued in, its Deadline)
    _label: str | None = None  # of the labeled request running (labeled-response)
    _labelled: list[bytes] | None = None  # what it has sent so far
    _labelledBytes = 0
    _batches = 0

    def connectionMade(self) -> None:
        factory = self.factory
        service = factory.service
        settings = service.settings
        noDelay(self.transport)
        keepAlive(self.transport, settings.ping_interval, settings.ping_timeout)
        self.startOutput()
        self.caps: frozenset[str] = _NO_CAPS  # shared until a client negotiates some
        self.wire = factory.wires.forCaps(self.caps)
        self._held = []
        self._heard = service.now()
        session = self.session = Session(
            service, self, greet=False, burst=settings.irc_rate_burst, autojoin=False
        )
        self._framer = LineFramer(MAX_LINE, self._lineReceived, self._refused, session)
        if not session.closed:
            # First the time registration may take; after it, pings (idleCheck).
            self._idleDeadline = (factory.registering, factory.registering.add(self))

    def dataReceived(self, data: bytes) -> None:
        self._heard = self.factory.service.now()
        super().dataReceived(data)

    def connectionLost(self, reason=None) -> None:
        self._cancelTimers()
        super().connectionLost(reason)

    def _cancelTimers(self) -> None:
        if self._idleDeadline is not None:
            queue, deadline = self._idleDeadline
            queue.cancel(deadline)
            self._idleDeadline = None

    # -- output --------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        if not payload:
            return
        # Before the welcome, messages from people (private ones kept for a login by PASS
        # or SASL) wait for it: a client takes none before 001. The server's notices and
        # errors (a flood warning) are valid before it and go at once.
        if self._held is not None and b" PRIVMSG " in payload:
            self._held.append(payload)
            self._heldBytes += len(payload)
            if self._heldBytes > self.factory.service.settings.max_output_buffer:
                # (A client logged in by SASL that never ends CAP negotiation.)
                self._held = None
                self.session.end("not registering", "disconnected: registration never ended")
            return
        self._out(payload)

    def write(self, text: str) -> None:
        """Send what this module made (registration replies, numerics), never held."""
        if text:
            self._out(text.encode("utf-8"))

    def _out(self, payload: bytes) -> None:
        if self._labelled is not None:
            self._capture(payload)  # part of a labeled request's reply
        else:
            super().send(payload)

    def numeric(self, code: str, *params: str) -> None:
        self.write(self.wire.numeric(code, self.nick, *params))

    def fail(self, verb: str, code: str, *context: str) -> None:
        """An IRCv3 standard reply: C{FAIL VERB CODE [CONTEXT...] :description}, the
        description last in C{context}."""
        self.write(line(self.wire.server, "FAIL", verb, code, *context))

    def serverNotice(self, text: str) -> None:
        self.write(self.wire.notice(self.nick, text))

    def farewell(self, reason: str) -> bytes:
        return line(None, "ERROR", f"Closing link: {self.host} ({reason})").encode("utf-8")

    def close(self, reason: str) -> None:
        self._cancelTimers()
        self._endLabel()  # what the request said, then the farewell
        if self._held is not None:  # a refusal during registration needs no backlog
            self._held = None
        super().close(reason)

    @property
    def nick(self) -> str:
        user = self.session.user
        return user.nick if user.nick is not None and self.registered else "*"

    @property
    def user(self) -> User:
        return self.session.user

    @property
    def service(self) -> ChatService:
        return self.factory.service

    def mask(self) -> str:
        return self.service.sourceOf(self.user).mask

    def setCaps(self, caps: set[str]) -> None:
        self.caps = frozenset(caps)
        self.wire = self.factory.wires.forCaps(caps)
        self.echo = "echo-message" in caps

    # -- labeled-response ------------------------------------------------------------------
    # A request tagged with a label gets its reply tagged with it: one line, a batch of
    # them, or an ACK when it had nothing to say (https://ircv3.net/specs/extensions/
    # labeled-response). The reply is what the connection is sent while the request runs,
    # held back until it is done; a request that waits (on the database) may therefore
    # include what others said meanwhile.

    def labelled(self, label: str, request: Request) -> Any:
        self._label, self._labelled, self._labelledBytes = label, [], 0
        try:
            result = request.command.run(self.session, request.args)
            if hasattr(result, "__await__"):
                result = defer.ensureDeferred(result)
        except Exception:
            self.session.report(Failure())
            self._endLabel()
            return None
        if isinstance(result, defer.Deferred) and not result.called:
            # Its refusal is part of the reply: reported before the label ends.
            return result.addErrback(self.session.report).addBoth(self._endLabelAfter)
        if isinstance(result, defer.Deferred):
            result.addErrback(self.session.report)
        self._endLabel()
        return None

    def _endLabelAfter(self, result: Any) -> Any:
        self._endLabel()
        return result

    def _capture(self, payload: bytes) -> None:
        assert self._labelled is not None
        self._labelled.append(payload)
        self._labelledBytes += len(payload)
        if self._labelledBytes > self.service.settings.max_output_buffer:
            # Too much to hold: sent as it is, without the label (it is "where feasible").
            self._label = None
            self._endLabel()

    def _endLabel(self) -> None:
        label, captured = self._label, self._labelled
        self._label = self._labelled = None
        if captured is None:
            return
        data = b"".join(captured)
        if label is None:
            super().send(data)
            return
        tag = b"label=" + escapeTag(label).encode("utf-8")
        lines = data.split(b"\r\n")[:-1]
        if not lines:
            out = b"@" + tag + b" :" + self.wire.server.encode("utf-8") + b" ACK\r\n"
        elif len(lines) == 1:
            out = _tagged(lines[0], tag) + b"\r\n"
        else:
            self._batches += 1
            ref = f"L{self._batches}".encode()
            server = b":" + self.wire.server.encode("utf-8")
            inner = b"batch=" + ref
            out = b"".join(
                [b"@", tag, b" ", server, b" BATCH +", ref, b" labeled-response\r\n"]
                + [(line if _inBatch(line) else _tagged(line, inner)) + b"\r\n" for line in lines]
                + [server, b" BATCH -", ref, b"\r\n"]
            )
        super().send(out)

    # -- input -----------------------------------------------------------------------------

    def _lineReceived(self, text: str) -> None:
        self.session.submit(lambda: self._request(text))

    def _refused(self, error: ChatError) -> None:
        def refuse() -> Request:
            return Request(REFUSE, {"error": error})

        self.session.submit(refuse)

    def _request(self, text: str) -> Request | None:
        try:
            message = parse(text)
        except BadMessage:
            return None  # a blank line: nothing, as on every IRC server
        if len(body(text).encode("utf-8")) > MAX_BODY:
            return Request(REFUSE, {"error": LineTooLong("Input line was too long")})
        command = COMMANDS.get(message.verb)
        if command is None:
            command = fallback(message)
        request = Request(command, {"message": message})
        label = message.tags.get("label")
        if label and "labeled-response" in self.caps and len(label.encode("utf-8")) <= LABEL_MAX:
            return Request(_LABELLED, {"label": label, "request": request})
        return request

    # -- registration --------------------------------------------------------------------

    def maybeRegister(self) -> Any:
        if self.registered or self._negotiating or self._sasl is not None:
            return None
        if self._username is None or (self._pendingNick is None and self.user.nick is None):
            return None
        return defer.ensureDeferred(self._register())

    async def _register(self) -> None:
        service, user = self.service, self.user
        password, self._password = self._password, None
        if password is not None and user.account is None:
            account, _, secret = password.rpartition(":")
            try:
                await service.login(user, account or self._pendingNick or "", secret)
            except (LoginFailed, LoginThrottled, BadName) as e:
                self.numeric("464", f"Password incorrect: {e}")
                self.session.end("wrong password", "wrong password")
                return
        if user.nick is None:
            wanted = self._pendingNick or ""
            try:
                await service.setNick(user, wanted)
            except ChatError as e:
                self._pendingNick = None
                self.nickRefused(e, wanted)
                return
        if self.session.closed:
            return
        self.registered = True
        self._cancelTimers()  # registered in time: from now on, pings
        self._idleDeadline = (self.factory.idle, self.factory.idle.add(self))
        self._pendingNick = None
        service.logLimit.info(
            _log, "{address} registered as {nick}", address=self.address, nick=user.nick
        )
        self.welcome()

    def nickRefused(self, error: ChatError, wanted: str) -> None:
        if isinstance(error, BadName):
            self.numeric("432", wanted or "*", "Erroneous nickname")
        elif isinstance(error, NickRegistered):
            self.numeric(
                "433", wanted, "Nickname is registered: log in with SASL or PASS, or choose another"
            )
        elif isinstance(error, NickTaken):
            self.numeric("433", wanted, "Nickname is already in use")
        elif isinstance(error, Banned):
            self.numeric("432", wanted, str(error))
        else:
            self.numeric("400", "NICK", str(error))

    def welcome(self) -> None:
        service, settings = self.service, self.service.settings
        network, server = settings.irc_network, settings.irc_server_name
        created = time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(service.startedAt or service.now())
        )
        self.numeric("001", f"Welcome to the {network} IRC network, {self.mask()}")
        self.write(
            self.factory.fixed(
                "welcome",
                lambda: [
                    ("002", f"Your host is {server}, running version chatserv-{__version__}"),
                    ("003", f"This server was created {created}"),
                    ("004", server, f"chatserv-{__version__}", "o", "bnt"),
                    *self._isupport(),
                ],
                self.nick,
            )
        )
        self.lusers()
        self.motd()
        held, self._held = self._held, None
        for payload in held or ():
            self._out(payload)

    def isupport(self) -> None:
        self.write(self.factory.fixed("isupport", self._isupport, self.nick))

    def _isupport(self) -> list[tuple[str, ...]]:
        settings = self.service.settings
        tokens = [
            f"AWAYLEN={AWAYLEN}",
            "CASEMAPPING=rfc1459",
            "CHANLIMIT=#:",
            "CHANMODES=b,,,nt",
            f"CHANNELLEN={settings.max_room_name_length + 1}",
            "CHANTYPES=#",
            f"CHATHISTORY={settings.max_history_request}",
            f"ELIST={ELIST}",
            f"KICKLEN={KICKLEN}",
            f"MAXTARGETS={TARGMAX}",
            "MODES=4",
            "MSGREFTYPES=msgid,timestamp",
            f"NAMELEN={REALNAME_LENGTH}",
            f"NETWORK={settings.irc_network}",
            f"NICKLEN={MAX_NAME_LENGTH}",
            "PREFIX=(o)@",
            "STATUSMSG=",
            f"TARGMAX=JOIN:{TARGMAX},KICK:1,NAMES:1,NOTICE:{TARGMAX},PART:{TARGMAX},PRIVMSG:{TARGMAX},"
            "WHOIS:1",
            f"TOPICLEN={TOPICLEN}",
            "UTF8ONLY",
            "WHOX",
        ]
        return [
            ("005", *tokens[i : i + 12], "are supported by this server")
            for i in range(0, len(tokens), 12)
        ]

    def lusers(self) -> None:
        service = self.service
        users = len(service.users)
        everyone, nodes, rooms = service.census()  # (a cluster's, as far as known here)
        admins = self.factory.adminsOnline()
        unknown = len(service.sessions) - users
        self.numeric("251", f"There are {everyone} users and 0 invisible on {nodes} servers")
        self.numeric("252", str(admins), "operator(s) online")
        self.numeric("253", str(unknown), "unknown connection(s)")
        self.numeric("254", str(rooms), "channels formed")
        self.numeric("255", f"I have {users} clients and {nodes - 1} servers")
        self.numeric("265", str(users), str(users), f"Current local users {users}")
        self.numeric("266", str(everyone), str(everyone), f"Current global users {everyone}")

    def motd(self) -> None:
        self.write(self.factory.fixed("motd", self._motd, self.nick))

    def _motd(self) -> list[tuple[str, ...]]:
        lines = self.factory.motdLines
        if not lines:
            return [("422", "MOTD File is missing")]
        server = self.service.settings.irc_server_name
        return [
            ("375", f"- {server} Message of the day - "),
            *(("372", f"- {text}") for text in lines),
            ("376", "End of /MOTD command."),
        ]

    # -- liveness ------------------------------------------------------------------------

    def idleCheck(self) -> None:
        """The idle deadline came: ping a silent client; close one that did not answer."""
        self._idleDeadline = None
        if self.session.closed:
            return
        factory, now = self.factory, self.service.now()
        settings = self.service.settings
        if not self.registered:
            # A nickname chosen by SASL stops the session's own nickname deadline.
            self.session.end(
                "registration timed out",
                f"disconnected: registration not completed in {settings.nick_timeout:g} seconds",
            )
            return
        if self._pinged is not None and self._heard <= self._pinged:
            self.session.end("ping timeout", f"Ping timeout: {settings.ping_timeout:g} seconds")
            return
        if now - self._heard >= settings.ping_interval:
            self._pinged = now
            self.write(line(None, "PING", settings.irc_server_name))
            self._idleDeadline = (factory.pongs, factory.pongs.add(self))
        else:
            self._pinged = None
            self._idleDeadline = (factory.idle, factory.idle.add(self))


def _tagged(line: bytes, tag: bytes) -> bytes:
    """C{line} with one more tag."""
    if line.startswith(b"@"):
        return b"@" + tag + b";" + line[1:]
    return b"@" + tag + b" " + line


def _inBatch(line: bytes) -> bool:
    """Whether C{line} belongs to a batch already (history within a labeled reply)."""
    if not line.startswith(b"@"):
        return False
    tags = line[1:].split(b" ", 1)[0]
    return any(t.startswith(b"batch=") for t in tags.split(b";"))


def _runLabelled(ctx: Session, args: dict) -> Any:
    irc: IrcProtocol = ctx.client  # type: ignore[assignment]
    return irc.labelled(args["label"], args["request"])


_LABELLED = Command("labelled", (), "", _runLabelled, anonymous=True)


class IrcFactory(LineChatFactory):
    protocol = IrcProtocol

    def __init__(self, service: ChatService, kind: str = "irc") -> None:
        super().__init__(service, kind)
        settings = service.settings
        self.wires = IrcWires(settings.irc_server_name)
        self._fixed: dict[str, list[tuple[str, str]]] = {}
        self.motdLines = _readMotd(settings)
        clock = service.clock
        self.registering: Deadlines[IrcProtocol] = Deadlines(
            clock, settings.nick_timeout, IrcProtocol.idleCheck
        )
        self.idle: Deadlines[IrcProtocol] = Deadlines(
            clock, settings.ping_interval, IrcProtocol.idleCheck
        )
        self.pongs: Deadlines[IrcProtocol] = Deadlines(
            clock, settings.ping_timeout, IrcProtocol.idleCheck
        )

    def refusal(self, reason: str) -> bytes:
        return line(None, "ERROR", f"Closing link: {reason}").encode("utf-8")

    def fixed(self, name: str, numerics: Callable[[], list[tuple[str, ...]]], nick: str) -> str:
        """Numerics that are the same for everyone but for the nickname they are sent to
        (the welcome burst, ISUPPORT, the MOTD): formatted once, then only addressed."""
        template = self._fixed.get(name)
        if template is None:
            server = self.service.settings.irc_server_name
            template = self._fixed[name] = []
            # Made for the longest nickname, so that no line is cut too little for it.
            longest = "x" * MAX_NAME_LENGTH
            for code, *params in numerics():
                text = line(server, code, longest, *params)
                head = f":{server} {code} "
                template.append((head, text[len(head) + len(longest) + 1 :]))
        return "".join([f"{head}{nick} {rest}" for head, rest in template])

    _admins: tuple[int, int] = (-1, 0)  # (the second counted, how many)

    def adminsOnline(self) -> int:
        """How many admins are online (LUSERS' 252), counted at most once a second: each
        registration shows it, and counting is a pass over every user (a storm of logins
        would make it quadratic)."""
        second = int(self.service.now())
        if self._admins[0] != second:
            service = self.service
            self._admins = (second, sum(1 for u in service.users.values() if service.isAdmin(u)))
        return self._admins[1]


def _readMotd(settings) -> list[str]:
    # At start-up, before the reactor runs: reading a file here blocks nobody.
    text = settings.motd
    if settings.irc_motd_file:
        text = Path(settings.irc_motd_file).read_text(encoding="utf-8")
    return [sanitize(t, formatting=True)[:400] for t in text.splitlines()]
