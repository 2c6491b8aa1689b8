"""One connection's conversation with the service, whatever its wire.

A protocol hands the session what its client sent (a line, or a JSON frame); the
session parses it with the command table, runs it, and reports errors back as events.
Requests run one at a time, in order: a command that waits (on a store, later) holds back
the ones after it, so "/join dev" followed by "hello" always says hello in #dev.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserv import events as ev
from chatserv.commands import Request, parseJSON, parseLine
from chatserv.errors import ChatError, NickRequired, RateLimited
from chatserv.interfaces import IChatClient
from chatserv.limits import Deadline, FloodGuard, Verdict
from chatserv.names import fold
from chatserv.service import ChatService

_log = Logger()

# Requests that go before a first nickname's default room is joined (a join of another
# room instead; a quit, which needs none).
_BEFORE_THE_DEFAULT_ROOM = frozenset({"join", "quit"})

GREETING = "Welcome to chatserv! Type a nickname to begin, or /help."


class Session:
    """Runs a client's requests against the service, in order."""

    __slots__ = (
        "service",
        "client",
        "user",
        "_pending",
        "_busy",
        "closed",
        "_flood",
        "_nickDeadline",
        "_room",
        "_greets",
    )

    def __init__(
        self,
        service: ChatService,
        client: IChatClient,
        *,
        greet: bool = True,
        burst: int | None = None,
        autojoin: bool = True,
    ) -> None:
        """C{greet}: send the MOTD and the "type a nickname" greeting (a wire with a
        welcome of its own, IRC, does not); C{burst}: requests accepted at once, if not
        the C{rate_burst} setting; C{autojoin}: a first nickname joins the default room."""
        self.service = service
        self.client = client
        self.user = service.connect(client, autojoin)
        self._greets = greet
        self._pending: deque[Callable[[], Request | None]] | None = None
        self._room: str | None = None  # key of the room last joined from this session
        self._busy = False
        self.closed = False
        settings = service.settings
        self._flood = FloodGuard(
            settings.rate_limit,
            burst if burst is not None else settings.rate_burst,
            settings.flood_max_dropped,
            service.now(),
            service.addressRequests,
            self.user.host,
        )
        self._nickDeadline: Deadline | None = service.nickDeadlines.add(self._noNick)
        service.logLimit.info(_log, "connect from {address}", address=client.address)
        banned = service.bannedAddress(self.user)
        if banned is not None:
            self.end("banned address", f"disconnected: {banned}")
            return
        if greet:
            if service.settings.motd:
                service.notice(self.user, service.settings.motd)
            service.notice(self.user, GREETING)

    # -- input from the protocol ---------------------------------------------------

    def receiveLine(self, line: str) -> None:
        """A line from a line client (TCP, websocket text mode)."""
        self.submit(lambda: self._readLine(line))

    def receiveJSON(self, text: str) -> None:
        """A frame from a JSON client."""
        self.submit(lambda: parseJSON(text, self._readLine))

    def _readLine(self, line: str) -> Request | None:
        return parseLine(line, self.service, self.user)

    def refuse(self, error: ChatError) -> None:
        """Report input the protocol could not accept (too long, not UTF-8, ...)."""

        def fail() -> None:
            raise error

        self.submit(fail)

    def connectionLost(self, why: str = "connection lost") -> None:
        if self.closed:
            return
        self.closed = True
        self._pending = None
        self._stopNickTimer()
        self.service.disconnect(self.user, why)
        self.service.logLimit.info(
            _log,
            "disconnect {address} ({nick}): {why}",
            address=self.client.address,
            nick=self.user.nick or "-",
            why=why,
        )

    # -- what handlers use (commands.Context) ----------------------------------------

    @property
    def room(self) -> str | None:
        """The room this wire's plain lines go to: the one last joined here while the
        user is in it, else the room the user joined last (the default room, joined by
        a first nickname). The domain has no "current room"; IRC names one every time."""
        rooms = self.user.rooms
        chosen = rooms.get(self._room) if self._room is not None else None
        if chosen is None:
            chosen = next(reversed(rooms.values()), None)
        return chosen.name if chosen is not None else None

    @room.setter
    def room(self, name: str | None) -> None:
        self._room = fold(name) if name is not None else None

    def reply(self, event: ev.Event) -> None:
        self.service.deliver(self.user, event)

    def notice(self, text: str) -> None:
        self.service.notice(self.user, text)

    def quit(self, reason: str) -> None:
        self.end(f"quit: {reason}" if reason else "quit", "Goodbye.")

    def end(self, why: str, farewell: str) -> None:
        """Close the session: C{why} is for the room and the log, C{farewell} for the client."""
        self.connectionLost(why)
        self.client.close(farewell)

    # -- limits --------------------------------------------------------------------------

    def _admit(self) -> bool:
        verdict = self._flood.check(self.service.now())
        if verdict is Verdict.ACCEPT:
            return True
        self.service.counters.rate_limited += 1
        if verdict is Verdict.WARN:
            settings = self.service.settings
            who, rate = "you are", settings.rate_limit
            if self._flood.byAddress:
                who, rate = "your address (all its connections) is", settings.ip_rate_limit
            self.reply(
                ev.Error(
                    RateLimited.code,
                    f"slow down: {who} sending more than {rate:g} requests a second; "
                    "what you send is dropped until you do",
                    self.service.now(),
                )
            )
            self.service.logLimit.info(
                _log,
                "{address} ({nick}): rate limited",
                address=self.client.address,
                nick=self.user.nick or "-",
            )
        elif verdict is Verdict.DISCONNECT:
            self.service.counters.floods += 1
            self.end("flooding", "disconnected: you sent too much, too fast")
        return False

    def _noNick(self) -> None:
        self._nickDeadline = None
        if self.user.nick is None and not self.closed:
            timeout = self.service.settings.nick_timeout
            self.end("no nickname", f"disconnected: no nickname chosen in {timeout:g} seconds")

    def _stopNickTimer(self) -> None:
        if self._nickDeadline is not None:
            self.service.nickDeadlines.cancel(self._nickDeadline)
            self._nickDeadline = None

    # -- running requests in order -----------------------------------------------------

    def submit(self, parse: Callable[[], Request | None]) -> None:
        """Run a request, counted by the flood guard, after those before it. C{parse}
        makes it when its turn comes (a wire with a grammar of its own, IRC, brings it)."""
        # The session may have been ended by the service (kick, reset) before the
        # protocol noticed: what the client sent after that is not for anyone.
        if self.closed or self.user not in self.service.sessions or not self._admit():
            return
        self.service.counters.requests += 1
        if self._busy:  # an earlier request waits: queue behind it
            if self._pending is None:
                self._pending = deque()  # made only when needed: most sessions never wait
            self._pending.append(parse)
        else:
            self._runOne(parse)

    def _runOne(self, parse: Callable[[], Request | None]) -> None:
        # Most requests finish at once; only one that returns a Deferred costs one.
        try:
            result = self._run(parse)
        except Exception:
            self.report(Failure())
        else:
            if isinstance(result, defer.Deferred):
                result.addErrback(self.report)
                if not result.called:  # it waits: hold back the rest until it is done
                    self._busy = True
                    result.addBoth(self._resume)
        if self._nickDeadline is not None and self.user.nick is not None:
            self._stopNickTimer()

    def _run(self, parse: Callable[[], Request | None]):
        # Parse now, not on arrival: what a line means depends on the state left by the
        # requests before it (the first plain line is a nickname).
        request = parse()
        if request is None:
            return None
        command = request.command
        if self.user.nick is None and not command.anonymous:
            raise NickRequired("choose a nickname first: type it, or /nick NAME")
        if self.user.joinPending and command.name not in _BEFORE_THE_DEFAULT_ROOM:
            # A first nickname's default room, before anything else that may need a room.
            joined = self.service.settleJoin(self.user)
            if joined is not None and not joined.called:
                return joined.addCallback(lambda _: self._runCommand(request))
        return self._runCommand(request)

    def _runCommand(self, request: Request):
        result = request.command.run(self, request.args)
        return defer.ensureDeferred(result) if hasattr(result, "__await__") else result

    def _resume(self, _: object) -> None:
        self._busy = False
        pending = self._pending
        while pending and not self._busy and not self.closed:
            self._runOne(pending.popleft())

    def report(self, failure: Failure) -> None:
        """Tell the client why its request failed (and log what is not a refusal)."""
        try:
            self._report(failure)
        except Exception:
            # Reporting must never leave an unhandled error in the request chain.
            _log.failure("reporting an error to {address} failed", address=self.client.address)

    def _report(self, failure: Failure) -> None:
        self.service.counters.errors += 1
        if failure.check(ChatError):
            error = failure.value
            self.service.logLimit.info(
                _log,
                "{address} ({nick}) refused ({code}): {text}",
                address=self.client.address,
                nick=self.user.nick or "-",
                code=error.code,
                text=str(error),
            )
            self.reply(ev.Error(error.code, str(error), self.service.now()))
        else:
            _log.failure("request from {address} failed", failure, address=self.client.address)
            self.reply(
                ev.Error("internal", "internal error; the server logged it", self.service.now())
            )
        if self.user.nick is None and not self.closed and self._greets:
            self.service.notice(self.user, "Choose a nickname: type it, or /nick NAME.")
