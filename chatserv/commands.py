"""The command language: one table, shared by every protocol.

A request is a command and its arguments. Line clients write C{/join dev}; JSON clients
send C{{"type": "join", "room": "dev"}}; both become the same L{Request} and run the
same handler. Parsing knows the wire grammar; handlers know only the service.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer

from chatserv import events as ev
from chatserv.errors import BadRequest, NotInRoom, UnknownCommand, UsageError
from chatserv.moderation import DURATION, UNIT_WORDS, describeSanction, parseDuration
from chatserv.names import fold
from chatserv.service import ChatService, User
from chatserv.store import Sanction
from chatserv.text import sanitize, visibleStart


class Context(Protocol):
    """What a handler may use: the session running it."""

    service: ChatService
    user: User
    room: str | None  # the room plain lines go to on this wire (None: not in one)

    def reply(self, event: ev.Event) -> None: ...

    def quit(self, reason: str) -> None: ...

    def notice(self, text: str) -> None: ...


@dataclass(frozen=True)
class Param:
    name: str  # also the JSON field
    rest: bool = False  # takes the rest of the line, spaces included
    optional: bool = False
    label: str = ""  # how usage shows it, if not the upper-cased name
    # Line grammar: an optional word that is this parameter only if it matches (e.g. a
    # duration), else it is left for the next parameter.
    match: re.Pattern[str] | None = None
    number: bool = False  # JSON may send a number
    # A switch: in a line, the word that C{match} matches (C{--address}); in JSON, true.
    flag: bool = False
    # A JSON field only: the line grammar has no word for it, and usage does not show it.
    jsonOnly: bool = False

    def usage(self) -> str:
        word = self.label or self.name.upper()
        return f"[{word}]" if self.optional else word


@dataclass(frozen=True)
class Command:
    name: str
    params: tuple[Param, ...]
    summary: str
    handler: Callable[[Context, dict[str, str]], Any]
    aliases: tuple[str, ...] = ()  # other /names; /alias/ARG works too
    shorthand: tuple[str, ...] = ()  # other ways to write it, for /help
    anonymous: bool = False  # allowed before a nickname is chosen
    admin: bool = False  # for admins only (listed under "admin commands" in /help)

    @property
    def usage(self) -> str:
        shown = [p.usage() for p in self.params if not p.jsonOnly]
        return " ".join([f"/{self.name}"] + shown)

    def helpEntry(self) -> ev.HelpEntry:
        shown = tuple(f"/{a}/{self.params[0].usage()}" for a in self.aliases)
        summary = f"{self.summary} (admins)" if self.admin else self.summary
        return ev.HelpEntry(self.name, self.usage, summary, shown + self.shorthand)

    def run(self, ctx: Context, args: dict[str, str]) -> Any:
        if self.admin:  # before its arguments are read ("/ban x 1x": not permitted first)
            ctx.service.authorize(ctx.user, self.name)
        return self.handler(ctx, args)


@dataclass(frozen=True)
class Request:
    command: Command
    args: dict[str, str]


# -- handlers ---------------------------------------------------------------------------


def _nick(ctx: Context, args: dict[str, str]) -> defer.Deferred[None]:
    _sawDefaultRoom(ctx, args)
    return ctx.service.setNick(ctx.user, args["nick"])


def _sawDefaultRoom(ctx: Context, args: dict[str, str]) -> None:
    """The C{since} of nick and login (JSON) is for the default room, which a first
    nickname joins before a client could send a join with its C{since}."""
    since = _since(args)
    if since is not None:
        ctx.service.markSeen(ctx.user, ctx.service.defaultRoom, since)


# Message ids are 64-bit integers in every store.
_MAX_ID = 2**63 - 1


def _since(args: dict[str, str]) -> int | None:
    """A JSON C{since}: the id of the newest message of a room the client has seen."""
    since = args.get("since")
    if since is None:
        return None
    # isascii: isdigit() takes "²" and other Unicode digits, which int() refuses; the
    # length check spares int() thousands of digits.
    if not (since.isascii() and since.isdigit() and len(since) <= 19 and int(since) <= _MAX_ID):
        raise UsageError('"since" must be a message id: a whole number, e.g. 1234')
    return int(since)


async def _join(ctx: Context, args: dict[str, str]) -> None:
    previous = ctx.room
    room = await ctx.service.join(ctx.user, args["room"], _since(args))
    ctx.room = room.name
    # Line and JSON clients have one current room: joining another one is a switch.
    left = fold(previous) if previous is not None else room.key
    if left != room.key and left in ctx.user.rooms:
        ctx.service.part(ctx.user, previous, f"went to #{room.name}")


def _here(ctx: Context, otherwise: str) -> str:
    """The room a command without one is about: the wire's current room."""
    room = ctx.room
    if room is None:
        raise NotInRoom(f"you are not in a room; {otherwise}")
    return room


def _rooms(ctx: Context, args: dict[str, str]) -> None:
    ctx.reply(ctx.service.roomList())


def _who(ctx: Context, args: dict[str, str]) -> None:
    room = args.get("room") or _here(ctx, "/who ROOM names one")
    ctx.reply(ctx.service.who(ctx.user, room))


def _msg(ctx: Context, args: dict[str, str]):
    return ctx.service.privmsg(ctx.user, args["to"], args["text"])


def _me(ctx: Context, args: dict[str, str]) -> None:
    ctx.service.say(ctx.user, _here(ctx, "/join ROOM first"), args["text"], "action")


def _say(ctx: Context, args: dict[str, str]) -> None:
    ctx.service.say(ctx.user, _here(ctx, "/join ROOM first"), args["text"])


def _time(ctx: Context, args: dict[str, str]) -> None:
    ctx.reply(ev.TimeReply(ctx.service.isoTime(), ctx.service.now()))


def _help(ctx: Context, args: dict[str, str]) -> None:
    name = args.get("command")
    if name is None:
        entries = tuple(c.helpEntry() for c in TABLE)
    else:
        entries = (_lookup(name.lstrip("/")).helpEntry(),)
    ctx.reply(ev.HelpReply(entries, ctx.service.now()))


def _quit(ctx: Context, args: dict[str, str]) -> None:
    ctx.quit(args.get("reason", ""))


def _history(ctx: Context, args: dict[str, str]):
    count = args.get("count")
    # isdigit() alone lets "²" and other Unicode digits through to int(), which refuses them.
    if count is not None and not (count.isascii() and count.isdigit() and int(count) > 0):
        raise UsageError("usage: /history [N], N a number of messages, e.g. /history 100")
    room = _here(ctx, "/join ROOM first")
    return ctx.service.history(ctx.user, room, int(count) if count is not None else None)


# -- accounts ---------------------------------------------------------------------------


def _register(ctx: Context, args: dict[str, str]):
    return ctx.service.register(ctx.user, args["password"])


def _login(ctx: Context, args: dict[str, str]):
    _sawDefaultRoom(ctx, args)
    return ctx.service.login(ctx.user, args["nick"], args["password"])


def _passwd(ctx: Context, args: dict[str, str]):
    return ctx.service.changePassword(ctx.user, args["old"], args["new"])


def _color(ctx: Context, args: dict[str, str]):
    return ctx.service.setColor(ctx.user, args.get("color"))


# -- admin commands ---------------------------------------------------------------------


def _kick(ctx: Context, args: dict[str, str]) -> defer.Deferred[None] | None:
    return ctx.service.kick(ctx.user, args["nick"], args.get("reason", ""))


def _sanctionTerms(args: dict[str, str]) -> tuple[float | None, str]:
    """A ban's or mute's seconds (None: until lifted) and reason. "10 minutes": a bare
    number takes its unit from the word after it."""
    duration, reason = args.get("duration"), args.get("reason", "")
    if duration is not None and duration.isascii() and duration.isdigit():
        unit, _, rest = reason.partition(" ")
        if unit.lower() in UNIT_WORDS:
            duration, reason = duration + unit, rest.lstrip()
    return (parseDuration(duration) if duration is not None else None), reason


async def _ban(ctx: Context, args: dict[str, str]) -> None:
    seconds, reason = _sanctionTerms(args)
    ban = await ctx.service.ban(ctx.user, args["nick"], seconds, reason, address="address" in args)
    ctx.notice(f"banned {_sanctioned(ban, args)} {describeSanction(ban, ctx.service.now())}")


async def _unban(ctx: Context, args: dict[str, str]) -> None:
    await ctx.service.lift(ctx.user, "ban", args["nick"])
    ctx.notice(f"unbanned {args['nick']}")


async def _mute(ctx: Context, args: dict[str, str]) -> None:
    seconds, _ = _sanctionTerms(args)  # (a mute has no reason: no word follows)
    mute = await ctx.service.mute(ctx.user, args["nick"], seconds)
    ctx.notice(f"muted {_sanctioned(mute, args)} {describeSanction(mute, ctx.service.now())}")


def _sanctioned(sanction: Sanction, args: dict[str, str]) -> str:
    """Who was banned or muted, saying so when they had renamed from the name given."""
    if fold(sanction.nick) == fold(args["nick"]):
        return sanction.nick
    return f"{sanction.nick} (who was {args['nick']})"


async def _unmute(ctx: Context, args: dict[str, str]) -> None:
    await ctx.service.lift(ctx.user, "mute", args["nick"])
    ctx.notice(f"unmuted {args['nick']}")


def _topic(ctx: Context, args: dict[str, str]):
    room = args.get("room") or _here(ctx, "/topic #ROOM names one")
    if "text" not in args:  # anyone may look
        ctx.reply(ctx.service.topicOf(room))
        return None
    return defer.ensureDeferred(_setTopic(ctx, room, args["text"]))


async def _setTopic(ctx: Context, room: str, text: str) -> None:
    event = await ctx.service.setTopic(ctx.user, room, text)
    if fold(event.room) not in ctx.user.rooms:
        # The room's members see the new topic; one set from outside it is confirmed.
        ctx.reply(event)


def _broadcast(ctx: Context, args: dict[str, str]) -> None:
    count = ctx.service.broadcast(ctx.user, args["text"])
    ctx.notice(f"sent to {count} connections")


def _rbroadcast(ctx: Context, args: dict[str, str]) -> None:
    count = ctx.service.broadcastRoom(ctx.user, args["room"], args["text"])
    ctx.notice(f"sent to {count} users")


async def _promote(ctx: Context, args: dict[str, str]) -> None:
    account = await ctx.service.setAdmin(ctx.user, args["nick"], True)
    ctx.notice(f"{account.nick} is now an admin")


async def _resetPassword(ctx: Context, args: dict[str, str]) -> None:
    account = await ctx.service.resetPassword(ctx.user, args["nick"], args["password"])
    ctx.notice(f"{account.nick} has a new password")


async def _deleteAccount(ctx: Context, args: dict[str, str]) -> None:
    account = await ctx.service.deleteAccount(ctx.user, args["nick"])
    ctx.notice(f"deleted the account {account.nick}")


async def _renameAccount(ctx: Context, args: dict[str, str]) -> None:
    account = await ctx.service.renameAccount(ctx.user, args["nick"], args["new"])
    ctx.notice(f"renamed the account {args['nick']} to {account.nick}")


async def _demote(ctx: Context, args: dict[str, str]) -> None:
    account = await ctx.service.setAdmin(ctx.user, args["nick"], False)
    ctx.notice(f"{account.nick} is no longer an admin")


_ROOM = Param("room")
# What the client has seen of the room (JSON only): joining replays only newer messages.
# For nick and login, of the default room.
_SINCE = Param("since", optional=True, number=True, jsonOnly=True)
_TEXT = Param("text", rest=True)
_NICK = Param("nick")
_ROOM_WORD = re.compile(r"#\S+")  # /topic's optional room must be written with its #
_DURATION = Param("duration", optional=True, match=DURATION)
_REASON = Param("reason", rest=True, optional=True)
# Banning an address bans everyone behind it (a NAT, a proxy): only when asked for.
_ADDRESS = Param(
    "address", optional=True, label="--address", match=re.compile("--address"), flag=True
)

TABLE: tuple[Command, ...] = (
    Command(
        "nick",
        (Param("nick"), _SINCE),
        "choose or change your nickname",
        _nick,
        aliases=("changeName",),
        anonymous=True,
    ),
    Command(
        "join",
        (_ROOM, _SINCE),
        "go to a room, creating it if it does not exist",
        _join,
        aliases=("changeRoom",),
    ),
    Command("rooms", (), "list the rooms and how many are in each", _rooms, anonymous=True),
    Command(
        "who",
        (Param("room", optional=True),),
        "list the users in a room",
        _who,
        shorthand=("?",),
        anonymous=True,
    ),
    Command(
        "msg",
        (Param("to", label="NICK"), _TEXT),
        "send a private message",
        _msg,
        shorthand=("TEXT > NICK",),
    ),
    Command("me", (_TEXT,), "describe an action: /me waves", _me),
    Command(
        "say",
        (_TEXT,),
        "say something in the room (for text starting with /)",
        _say,
        shorthand=("TEXT", "//TEXT"),
    ),
    Command("time", (), "the server's time", _time, anonymous=True),
    Command(
        "help",
        (Param("command", optional=True),),
        "list commands, or explain one",
        _help,
        anonymous=True,
    ),
    Command(
        "history",
        (Param("count", optional=True, label="N", number=True),),
        "show the last N messages of your room",
        _history,
    ),
    Command("quit", (_REASON,), "leave the server", _quit, anonymous=True),
    Command(
        "register",
        (Param("password"),),
        "register your nickname with a password of one word (you are then logged in)",
        _register,
    ),
    Command(
        "login",
        (_NICK, Param("password"), _SINCE),
        "log in to a registered nickname",
        _login,
        anonymous=True,
    ),
    Command(
        "passwd",
        (Param("old", label="OLD"), Param("new", label="NEW")),
        "change your password",
        _passwd,
    ),
    Command(
        "color",
        (Param("color", optional=True, label="#RRGGBB"),),
        "show or set the colour of your nickname (none: no colour)",
        _color,
    ),
    Command(
        "topic",
        (
            Param("room", optional=True, label="#ROOM", match=_ROOM_WORD),
            Param("text", rest=True, optional=True),
        ),
        "show a room's topic; admins set it (the room then stays when empty)",
        _topic,
    ),
    Command("kick", (_NICK, _REASON), "disconnect a user", _kick, admin=True),
    Command(
        "ban",
        (_NICK, _DURATION, _ADDRESS, _REASON),
        "ban a nickname (--address: and the address it is online from; DURATION: 30s, "
        "10m, 2h, 7d; none: until /unban)",
        _ban,
        admin=True,
    ),
    Command("unban", (_NICK,), "lift a ban", _unban, admin=True),
    Command(
        "mute",
        (_NICK, _DURATION),
        "stop a nickname from talking (DURATION as for /ban)",
        _mute,
        admin=True,
    ),
    Command("unmute", (_NICK,), "lift a mute", _unmute, admin=True),
    Command("broadcast", (_TEXT,), "a notice to everyone connected", _broadcast, admin=True),
    Command(
        "rbroadcast",
        (_ROOM, _TEXT),
        "a notice to everyone in one room",
        _rbroadcast,
        admin=True,
    ),
    Command("promote", (_NICK,), "make a registered nickname an admin", _promote, admin=True),
    Command("demote", (_NICK,), "take a nickname's admin rights away", _demote, admin=True),
    Command(
        "resetpassword",
        (_NICK, Param("password")),
        "give an account a new password (its owner forgot theirs)",
        _resetPassword,
        admin=True,
    ),
    Command(
        "deleteaccount",
        (_NICK,),
        "delete an account and the messages kept for it",
        _deleteAccount,
        admin=True,
    ),
    Command(
        "renameaccount",
        (_NICK, Param("new", label="NEWNICK")),
        "give an account another name, with its kept messages, bans and mutes",
        _renameAccount,
        admin=True,
    ),
)

_BY_NAME: dict[str, Command] = {c.name: c for c in TABLE}
_BY_ALIAS: dict[str, Command] = {name.lower(): c for c in TABLE for name in (c.name,) + c.aliases}


def _lookup(name: str) -> Command:
    command = _BY_ALIAS.get(name.lower())
    if command is None:
        raise UnknownCommand(f'unknown command "/{_shown(name)}"; /help lists the commands')
    return command


def _shown(text: str) -> str:
    return sanitize(text[:40])


# -- the line grammar -------------------------------------------------------------------

# "TEXT > NICK": a private message when NICK is online.
_PRIVATE = re.compile(r"(?P<text>.*\S)\s*>\s*(?P<nick>[^\s>]+)\s*")


# The JSON request that carries a line of the command language (clients whose users type).
LINE_REQUEST = "line"


def parseLine(line: str, service: ChatService, user: User) -> Request | None:
    """Turn one line from a line client into a request; C{None} for a blank line.

    Raises L{ChatError} subclasses for unknown commands and bad arguments.
    """
    stripped = line.strip()
    if not stripped:
        return None
    if stripped == "?":
        return Request(_BY_NAME["who"], {})
    # What a line starts with, past anything that shows nothing (spaces, tabs, form feeds,
    # controls, zero-width characters): " /login NICK PASSWORD" is a command, and must
    # never become a message that shows a password to the room and its history.
    start = visibleStart(line)
    if start.startswith("//"):
        return Request(_BY_NAME["say"], {"text": start[1:]})
    if start.startswith("/"):
        head, _, rest = start[1:].partition(" ")
        if "/" in head:  # /changeRoom/dev
            head, _, inline = head.partition("/")
            rest = f"{inline} {rest}"
        command = _lookup(head)
        return Request(command, _splitArgs(command, rest))
    if user.nick is None:  # the first plain line names the user
        return Request(_BY_NAME["nick"], {"nick": stripped})
    match = _PRIVATE.fullmatch(line)
    if match and service.findUser(match["nick"]) is not None:
        return Request(_BY_NAME["msg"], {"to": match["nick"], "text": match["text"]})
    return Request(_BY_NAME["say"], {"text": line})


def _splitArgs(command: Command, rest: str) -> dict[str, str]:
    args: dict[str, str] = {}
    rest = rest.strip()
    for param in command.params:
        if param.jsonOnly:
            continue
        if param.rest:
            value, rest = rest, ""
        else:
            value, _, after = rest.partition(" ")
            if param.match is not None and not param.match.fullmatch(value):
                continue  # not this optional parameter: the word belongs to the next one
            rest = after.lstrip()
        if value:
            args[param.name] = value
        elif not param.optional:
            raise UsageError(f"usage: {command.usage}")
    if rest:
        raise UsageError(f"too many arguments; usage: {command.usage}")
    return args


# -- the JSON grammar -------------------------------------------------------------------


def parseJSON(text: str, readLine: Callable[[str], Request | None] | None = None) -> Request | None:
    """Turn one JSON request (see docs/protocol.md) into a request.

    A C{line} request carries a line of the command language, as a person typed it into a
    client; C{readLine} (L{parseLine} for this user) reads it. C{None} for a blank line.
    Raises L{BadRequest} or L{UnknownCommand} for anything malformed.
    """
    try:
        # Numbers are never used as values; parse_int=float keeps a 5000-digit one in an
        # ignored field from tripping int()'s digit limit.
        obj = json.loads(text, parse_int=float)
    except (ValueError, RecursionError):  # deep nesting raises RecursionError
        raise BadRequest("malformed JSON: send one JSON object per frame") from None
    if not isinstance(obj, dict):
        raise BadRequest("a request must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise BadRequest('a request needs a "type" string, e.g. {"type":"say","text":"hi"}')
    if kind == LINE_REQUEST and readLine is not None:
        line = obj.get("text")
        if not isinstance(line, str):
            raise BadRequest('"line" needs a "text" string: {"type":"line","text":"/me waves"}')
        if "\n" in line or "\r" in line:
            raise BadRequest('a "line" request carries one line; send one request per line')
        return readLine(line)
    command = _BY_NAME.get(kind)
    if command is None:
        raise UnknownCommand(f'unknown request type "{_shown(kind)}"')
    args: dict[str, str] = {}
    for param in command.params:
        value = obj.get(param.name)
        if param.number and isinstance(value, float):  # every JSON number, parse_int=float
            # 1e999, a 400-digit number (both inf), NaN and Infinity reach int() as floats
            # it cannot convert; fractions are no count of anything either.
            if not (math.isfinite(value) and value.is_integer()):
                raise BadRequest(f'"{param.name}" must be a whole number, e.g. 100')
            value = str(int(value))
        if param.flag and value is not None:
            if not isinstance(value, bool):
                raise BadRequest(f'"{param.name}" must be true or false')
            if value:
                args[param.name] = param.label
            continue
        if value is None:
            if not param.optional:
                raise BadRequest(f'"{kind}" needs a "{param.name}" string')
        elif not isinstance(value, str):
            raise BadRequest(f'"{param.name}" must be a string')
        else:
            args[param.name] = value
    return Request(command, args)
