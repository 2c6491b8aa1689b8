"""What each IRC verb does: the command table of the IRC listener.

Every verb runs as a request of the connection's L{Session} (so it is counted by the
flood guard and runs in order); its refusals become the numerics IRC clients expect
(L{_failed}). The registration verbs (CAP, NICK, USER, PASS, AUTHENTICATE) drive
L{chatserv.protocols.irc.IrcProtocol}'s registration.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.internet import defer

from chatserv import __version__
from chatserv.commands import TABLE, Command, parseLine
from chatserv.errors import (
    BadName,
    Banned,
    ChatError,
    EmptyText,
    LineTooLong,
    LoginFailed,
    LoginThrottled,
    Muted,
    NoSuchRoom,
    NoSuchUser,
    NotInRoom,
    NotPermitted,
    NotSanctioned,
    TooManyRooms,
    UnknownCommand,
)
from chatserv.names import fold
from chatserv.people import REALNAME_LENGTH, cleanRealname
from chatserv.protocols import irchistory
from chatserv.protocols.ircmessage import Message, line
from chatserv.protocols.ircwire import channel
from chatserv.roster import Profile
from chatserv.session import Session

if TYPE_CHECKING:
    from chatserv.protocols.irc import IrcProtocol

# What a client may negotiate. cap-notify is implied by CAP LS 302 (and the list never
# changes while the server runs); sasl offers PLAIN, a chatserv account's password.
CAPS = {
    "account-tag": None,
    "away-notify": None,
    "batch": None,
    "cap-notify": None,
    irchistory.CAP: None,
    "labeled-response": None,
    "echo-message": None,
    "extended-join": None,
    "message-tags": None,
    "multi-prefix": None,
    "sasl": "PLAIN",
    "server-time": None,
    "setname": None,
}

TARGMAX = 4  # targets of one PRIVMSG, NOTICE, JOIN, PART, KICK, ...
AWAYLEN = 300
KICKLEN = 300
_SASL_CHUNK = 400  # AUTHENTICATE carries base64 in pieces of 400 bytes

# Verbs allowed before registration completes.
_REGISTRATION = {"CAP", "NICK", "USER", "PASS", "AUTHENTICATE", "PING", "PONG", "QUIT"}
_SERVICES = {"nickserv"}  # PRIVMSG NickServ :IDENTIFY ... is how many clients log in


# -- the verbs ---------------------------------------------------------------------------

Handler = Callable[["IrcProtocol", Message], Any]
_VERBS: dict[str, Handler] = {}


def verb(*names: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for name in names:
            _VERBS[name] = handler
        return handler

    return register


def _run(handler: Handler, name: str) -> Callable[[Any, dict], Any]:
    """A verb as a command of the session: errors become IRC's numerics."""

    def run(ctx: Session, args: dict) -> Any:
        irc: IrcProtocol = ctx.client  # type: ignore[assignment]
        message: Message = args["message"]
        if not irc.registered and name not in _REGISTRATION:
            irc.numeric("451", "You have not registered")
            return None
        try:
            result = handler(irc, message)
        except ChatError as e:
            _failed(irc, message, e)
            return None
        if isinstance(result, defer.Deferred):
            return result.addErrback(lambda f: _failed(irc, message, f.trap(ChatError) and f.value))
        return result

    return run


def _failed(irc: IrcProtocol, message: Message, error: ChatError) -> None:
    """A refusal as the numeric an IRC client expects for it, or a notice."""
    irc.service.counters.errors += 1
    target = message.param(0)
    if isinstance(error, NoSuchUser):
        irc.numeric("401", target, "No such nick/channel")
    elif isinstance(error, (NoSuchRoom, TooManyRooms)) or (
        isinstance(error, BadName) and target.startswith("#")
    ):
        irc.numeric("403", target, str(error))
    elif isinstance(error, NotInRoom):
        irc.numeric("442", target, "You're not on that channel")
    elif isinstance(error, Muted):
        irc.numeric("404", target, str(error))
    elif isinstance(error, EmptyText):
        irc.numeric("412", "No text to send")
    elif isinstance(error, NotPermitted):
        if target.startswith("#"):
            irc.numeric("482", target, "You're not channel operator")
        else:
            irc.numeric("481", "Permission Denied- You're not an IRC operator")
    elif isinstance(error, UnknownCommand):
        irc.numeric("421", message.verb, "Unknown command")
    elif isinstance(error, LineTooLong):
        irc.numeric("417", "Input line was too long")
    else:
        irc.serverNotice(f"{message.verb}: {error}")


def _needs(irc: IrcProtocol, message: Message, count: int) -> bool:
    if len(message.params) < count or not all(message.params[:count]):
        irc.numeric("461", message.verb, "Not enough parameters")
        return False
    return True


def _targets(text: str) -> list[str]:
    return [t for t in text.split(",") if t][:TARGMAX]


def _room(target: str) -> str:
    """A channel's room name; a target without its # is no channel."""
    if not target.startswith("#"):
        raise NoSuchRoom(f"{target} is not a channel")
    return target[1:]


def _each(irc: IrcProtocol, message: Message, targets: list[str], act) -> Any:
    """Run C{act(target)} for each target in turn, each one's refusal a numeric of its own.

    A Deferred only once a target waits (most PRIVMSGs wait on nothing: no coroutine)."""

    def refused(target: str, error: ChatError) -> None:
        _failed(irc, Message(message.verb, [target] + message.params[1:]), error)

    async def rest(waiting: defer.Deferred, target: str, others: list[str]) -> None:
        for n, current in enumerate([target, *others]):
            try:
                result = waiting if n == 0 else act(current)
                if isinstance(result, defer.Deferred):
                    await result
            except ChatError as e:
                refused(current, e)

    for n, target in enumerate(targets):
        try:
            result = act(target)
        except ChatError as e:
            refused(target, e)
            continue
        if isinstance(result, defer.Deferred):
            return defer.ensureDeferred(rest(result, target, targets[n + 1 :]))
    return None


# -- registration and connection ---------------------------------------------------------


@verb("CAP")
def _cap(irc: IrcProtocol, message: Message) -> None:
    sub = message.param(0).upper()
    nick = irc.nick
    if sub == "LS":
        irc._negotiating = not irc.registered
        v302 = message.param(1).isdigit() and int(message.param(1)) >= 302
        offered = " ".join(
            f"{name}={value}" if value and v302 else name for name, value in sorted(CAPS.items())
        )
        irc.write(line(irc.wire.server, "CAP", nick, "LS", offered))
    elif sub == "LIST":
        irc.write(line(irc.wire.server, "CAP", nick, "LIST", " ".join(sorted(irc.caps))))
    elif sub == "REQ":
        irc._negotiating = not irc.registered
        asked = message.param(1).split()
        caps = set(irc.caps)
        for name in asked:
            off = name.startswith("-")
            if name.lstrip("-") not in CAPS:
                irc.write(line(irc.wire.server, "CAP", nick, "NAK", message.param(1)))
                return
            (caps.discard if off else caps.add)(name.lstrip("-"))
        irc.setCaps(caps)
        irc.write(line(irc.wire.server, "CAP", nick, "ACK", message.param(1)))
    elif sub == "END":
        irc._negotiating = False
        return irc.maybeRegister()
    else:
        irc.numeric("410", sub or "*", "Invalid CAP command")
    return None


@verb("NICK")
def _nickVerb(irc: IrcProtocol, message: Message) -> Any:
    if not message.params or not message.params[0]:
        irc.numeric("431", "No nickname given")
        return None
    wanted = message.params[0]
    if not irc.registered:
        irc._pendingNick = wanted
        return irc.maybeRegister()

    def refused(failure):
        failure.trap(ChatError)
        if isinstance(failure.value, Muted):
            irc.numeric("400", "NICK", str(failure.value))
        else:
            irc.nickRefused(failure.value, wanted)

    return irc.service.setNick(irc.user, wanted).addErrback(refused)


@verb("USER")
def _userVerb(irc: IrcProtocol, message: Message) -> Any:
    if irc.registered or irc._username is not None:
        irc.numeric("462", "You may not reregister")
        return None
    if not _needs(irc, message, 4):
        return None
    # The user part of nick!user@host: "~" says no ident server vouched for it.
    name = "".join(c for c in message.params[0] if c.isascii() and (c.isalnum() or c in "-_."))
    irc._username = name[:10] or "user"
    irc.user.ident = "~" + irc._username
    # Shown to others (WHO, WHOIS, extended-join): made safe like any text of a user's.
    irc.user.realname = cleanRealname(message.params[3]) or None
    return irc.maybeRegister()


@verb("PASS")
def _pass(irc: IrcProtocol, message: Message) -> None:
    if irc.registered:
        irc.numeric("462", "You may not reregister")
    elif _needs(irc, message, 1):
        irc._password = message.params[0]


@verb("AUTHENTICATE")
def _authenticate(irc: IrcProtocol, message: Message) -> Any:
    arg = message.param(0)
    if irc.registered or irc.user.account is not None:
        irc.numeric("907", "You have already authenticated")
        return None
    if "sasl" not in irc.caps:
        irc.numeric("904", "SASL authentication failed: request the sasl capability first")
        return None
    if arg == "*":
        irc._sasl = None
        irc.numeric("906", "SASL authentication aborted")
        return irc.maybeRegister()
    if irc._sasl is None:
        if arg.upper() != "PLAIN":
            irc.numeric("908", "PLAIN", "are available SASL mechanisms")
            irc.numeric("904", "SASL authentication failed")
            return None
        irc._sasl = []
        irc.write(line(None, "AUTHENTICATE", "+"))
        return None
    if arg != "+":
        irc._sasl.append(arg)
    if len(arg) == _SASL_CHUNK and sum(map(len, irc._sasl)) < 4 * _SASL_CHUNK:
        return None  # more to come
    pieces, irc._sasl = irc._sasl, None
    try:
        _, account, password = (
            base64.b64decode("".join(pieces), validate=True).decode("utf-8").split("\0")
        )
    except (ValueError, binascii.Error, UnicodeDecodeError):
        irc.numeric("904", "SASL authentication failed: malformed PLAIN message")
        return irc.maybeRegister()
    return defer.ensureDeferred(_saslLogin(irc, account, password))


async def _saslLogin(irc: IrcProtocol, account: str, password: str) -> None:
    try:
        await irc.service.login(irc.user, account, password)
    except (LoginFailed, LoginThrottled, BadName, Banned) as e:
        irc.numeric("904", f"SASL authentication failed: {e}")
    else:
        user = irc.user
        nick = user.nick or "*"
        irc.write(
            irc.wire.numeric(
                "900", nick, irc.mask(), user.account.nick, f"You are now logged in as {nick}"
            )
        )
        irc.write(irc.wire.numeric("903", nick, "SASL authentication successful"))
    result = irc.maybeRegister()
    if result is not None:
        await result


@verb("PING")
def _ping(irc: IrcProtocol, message: Message) -> None:
    if _needs(irc, message, 1):
        server = irc.wire.server
        irc.write(line(server, "PONG", server, message.params[0]))


@verb("PONG")
def _pong(irc: IrcProtocol, message: Message) -> None:
    pass  # anything received counts as alive (see idleCheck)


@verb("QUIT")
def _quitVerb(irc: IrcProtocol, message: Message) -> None:
    irc.session.quit(message.param(0))


# -- rooms ---------------------------------------------------------------------------------


@verb("JOIN")
def _joinVerb(irc: IrcProtocol, message: Message) -> Any:
    if not _needs(irc, message, 1):
        return None
    service, user = irc.service, irc.user
    if message.params[0] == "0":  # leave every channel
        for room in list(user.rooms.values()):
            service.part(user, room.name, "left all channels")
        return None
    # A client that asks for the history it lacks gets none replayed.
    replay = irchistory.CAP not in irc.caps
    return _each(
        irc,
        message,
        _targets(message.params[0]),
        lambda t: service.join(user, _room(t), replay=replay),
    )


@verb("PART")
def _partVerb(irc: IrcProtocol, message: Message) -> Any:
    if not _needs(irc, message, 1):
        return None
    service, user = irc.service, irc.user
    reason = message.param(1) or "left"
    return _each(
        irc, message, _targets(message.params[0]), lambda t: service.part(user, _room(t), reason)
    )


@verb("NAMES")
def _names(irc: IrcProtocol, message: Message) -> Any:
    if not message.params:
        irc.numeric("366", "*", "End of /NAMES list")
        return None
    service, user = irc.service, irc.user

    def names(target: str) -> None:
        try:
            irc.session.reply(service.who(user, _room(target)))
        except (NoSuchRoom, BadName):
            irc.numeric("366", target, "End of /NAMES list")

    return _each(irc, message, _targets(message.params[0])[:1], names)


@verb("LIST")
def _list(irc: IrcProtocol, message: Message) -> None:
    service = irc.service
    keep = _listFilter(message.param(0), service.now())
    irc.numeric("321", "Channel", "Users  Name")
    for name, count in service.roomList().rooms:  # (a cluster's: every node's rooms)
        room = service.rooms.get(fold(name))
        topic, topicTs = (room.topic, room.topicTs) if room is not None else (None, 0.0)
        listed = _Listed(fold(name), count, topic, topicTs)
        if keep(listed):
            irc.numeric("322", channel(name), str(count), listed.topic or "")
    irc.numeric("323", "End of /LIST")


class _Listed(NamedTuple):
    """A room as LIST's filters see it."""

    key: str
    count: int
    topic: str | None
    topicTs: float


def globMatch(mask: str, text: str) -> bool:
    """Whether C{text} matches C{mask}, where C{*} is any run and C{?} any one character.
    In at most len(mask) * len(text) steps (a regular expression of many stars can take
    exponential time)."""
    m = t = 0
    star, resume = -1, 0
    while t < len(text):
        if m < len(mask) and mask[m] in ("?", text[t]):
            m, t = m + 1, t + 1
        elif m < len(mask) and mask[m] == "*":
            star, resume = m, t
            m += 1
        elif star >= 0:  # let the last star take one more character
            resume += 1
            m, t = star + 1, resume
        else:
            return False
    return all(c == "*" for c in mask[m:])


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 9


ELIST = "MNTU"  # LIST's filters: masks, negated masks, topic age, user counts


def _listFilter(text: str, now: float) -> Callable[[_Listed], bool]:
    """What C{LIST a,b,...} keeps: channels named, matching a mask (C{*dev*}), not matching
    one (C{!*test*}), with more or fewer users than N (C{>5}, C{<100}), or a topic set
    less or more than N minutes ago (C{T<60}, C{T>1440}). Every filter must hold."""
    names: set[str] = set()
    tests: list[Callable[[_Listed], bool]] = []
    for item in text.split(",")[:8] if text else ():
        if item[:1] in ("<", ">") and _number(item[1:]):
            n, more = int(item[1:]), item[0] == ">"
            tests.append(lambda r, n=n, more=more: r.count > n if more else r.count < n)
        elif item[:2] in ("T<", "T>") and _number(item[2:]):
            age, newer = int(item[2:]) * 60, item[1] == "<"
            tests.append(
                lambda r, age=age, newer=newer: (
                    r.topic is not None
                    and ((now - r.topicTs < age) if newer else (now - r.topicTs > age))
                )
            )
        elif "*" in item or "?" in item:
            negated, mask = item.startswith("!"), fold(item.lstrip("!"))
            tests.append(lambda r, m=mask, neg=negated: globMatch(m, "#" + r.key) != neg)
        elif item:
            names.add(fold(item.lstrip("#")))
    if names:
        tests.append(lambda r: r.key in names)
    return lambda room: all(test(room) for test in tests)


@verb("TOPIC")
def _topicVerb(irc: IrcProtocol, message: Message) -> Any:
    if not _needs(irc, message, 1):
        return None
    args = {"room": _room(message.params[0])}
    if len(message.params) > 1:
        args["text"] = message.params[1]
    return _CHATSERV["TOPIC"].run(irc.session, args)  # /topic's, as on every wire


@verb("KICK")
def _kickVerb(irc: IrcProtocol, message: Message) -> Any:
    if not _needs(irc, message, 2):
        return None
    service, user = irc.service, irc.user
    room = _room(message.params[0])
    reason = message.param(2)[:KICKLEN]
    for nick in _targets(message.params[1])[:1]:
        try:
            service.kickFromRoom(user, room, nick, reason)
        except NotInRoom:
            if fold(room) in user.rooms:
                irc.numeric("441", nick, message.params[0], "They aren't on that channel")
            else:
                raise
    return None


# -- talking -------------------------------------------------------------------------------


@verb("PRIVMSG", "NOTICE")
def _privmsg(irc: IrcProtocol, message: Message) -> Any:
    notice = message.verb == "NOTICE"
    if not message.params or not message.params[0]:
        if not notice:
            irc.numeric("411", f"No recipient given ({message.verb})")
        return None
    if len(message.params) < 2 or not message.params[1]:
        if not notice:
            irc.numeric("412", "No text to send")
        return None
    text = message.params[1]
    kind = "notice" if notice else "message"
    if text.startswith("\x01"):  # CTCP
        ctcp = text.strip("\x01")
        command, _, rest = ctcp.partition(" ")
        if command.upper() != "ACTION":
            return None  # CTCP requests (VERSION, PING, ...) are not relayed
        text, kind = rest, "action"
    service, user = irc.service, irc.user

    def send(target: str) -> Any:
        if target.startswith("#"):
            return service.say(user, target[1:], text, kind)
        if fold(target) in _SERVICES:
            return _nickserv(irc, text)
        result = service.privmsg(user, target, text, notice=notice, action=kind == "action")
        recipient = service.findUser(target)
        if not notice and recipient is not None and recipient.away:
            irc.numeric("301", recipient.nick, recipient.away)
        return result

    if notice:  # a NOTICE is never answered with an error (RFC 2812, 3.3.2)

        async def quietly() -> None:
            for target in _targets(message.params[0]):
                try:
                    result = send(target)
                    if isinstance(result, defer.Deferred):
                        await result
                except ChatError:
                    pass

        return defer.ensureDeferred(quietly())
    return _each(irc, message, _targets(message.params[0]), send)


def _nickserv(irc: IrcProtocol, text: str) -> Any:
    """The few NickServ commands clients send by themselves: IDENTIFY and REGISTER."""
    words = text.split()
    command = words[0].upper() if words else ""
    service, user = irc.service, irc.user
    if command == "IDENTIFY" and len(words) in (2, 3):
        nick, password = (words[1], words[2]) if len(words) == 3 else (user.nick, words[1])
        return defer.ensureDeferred(service.login(user, nick, password))
    if command == "REGISTER" and len(words) >= 2:
        return defer.ensureDeferred(service.register(user, words[1]))
    irc.serverNotice("NickServ: IDENTIFY [NICK] PASSWORD, or REGISTER PASSWORD")
    return None


verb("CHATHISTORY")(irchistory.chathistory)


# -- who is who ---------------------------------------------------------------------------


def _flags(profile: Profile) -> str:
    return ("G" if profile.away else "H") + ("@" if profile.admin else "")


@verb("WHO")
async def _who(irc: IrcProtocol, message: Message) -> None:
    service = irc.service
    mask = message.param(0) or "*"
    server = service.settings.irc_server_name
    if mask.startswith("#"):
        name, members = service.roomProfiles(mask[1:])
        shown = channel(name) if members or fold(name) in service.rooms else mask
    else:
        found = await service.findProfile(mask)  # (anyone, on any node: WHO nick)
        members = [found] if found is not None else []
        shown = "*"
    fields, _, token = message.param(1).partition(",")
    whox = fields.startswith("%")
    for member in members:
        source = member.source
        if whox:
            irc.numeric("354", *_whox(irc, member, shown, fields[1:], token))
            continue
        irc.numeric(
            "352",
            shown,
            source.user,
            source.host,
            server,
            source.nick,
            _flags(member),
            f"0 {source.realname}",
        )
    irc.numeric("315", mask, "End of /WHO list")


def _whox(irc: IrcProtocol, member: Profile, shown: str, fields: str, token: str):
    """WHOX: the fields asked for (C{WHO #room %tcuhnfar,42}), in IRC's order, as 354."""
    source = member.source
    values = {
        "t": token[:3] if token.isdigit() else "0",
        "c": shown,
        "u": source.user,
        "i": "255.255.255.255",  # the address is not shown, only the host's cloak
        "h": source.host,
        "s": irc.service.settings.irc_server_name,
        "n": source.nick,
        "f": _flags(member),
        "d": "0",
        "l": "0",
        "a": source.account or "0",
        "o": "n/a",
        "r": source.realname,
    }
    return [values[f] for f in "tcuihsnfdlaor" if f in fields]


@verb("WHOWAS")
def _whowas(irc: IrcProtocol, message: Message) -> None:
    # No record of who went by a name is kept: the answer for a name no one has now.
    if not message.params:
        irc.numeric("431", "No nickname given")
        return
    nick = message.params[0].split(",")[0]
    irc.numeric("406", nick, "There was no such nickname")
    irc.numeric("369", nick, "End of WHOWAS")


@verb("WHOIS")
async def _whois(irc: IrcProtocol, message: Message) -> None:
    if not message.params:
        irc.numeric("431", "No nickname given")
        return
    service = irc.service
    nick = message.params[-1].split(",")[0]
    target = await service.findProfile(nick)
    if target is None:
        irc.numeric("401", nick, "No such nick/channel")
        irc.numeric("318", nick, "End of /WHOIS list")
        return
    source = target.source
    irc.numeric("311", target.nick, source.user, source.host, "*", source.realname)
    if target.rooms:
        prefix = "@" if target.admin else ""
        rooms = [prefix + channel(name) for name in target.rooms]
        for i in range(0, len(rooms), 8):  # 8 channels of 51 characters fit in a line
            irc.numeric("319", target.nick, " ".join(rooms[i : i + 8]))
    settings = service.settings
    where = settings.irc_network
    if target.node is not None:
        where = f"node {target.node} of {where}"
    irc.numeric("312", target.nick, settings.irc_server_name, where)
    if target.away:
        irc.numeric("301", target.nick, target.away)
    if target.admin:
        irc.numeric("313", target.nick, "is a chatserv admin")
    if source.account is not None:
        irc.numeric("330", target.nick, source.account, "is logged in as")
    if target.connectedAt is not None:
        idle = int(service.now() - target.connectedAt)
        irc.numeric(
            "317",
            target.nick,
            str(idle),
            str(int(target.connectedAt)),
            "seconds connected, signon time",
        )
    irc.numeric("318", target.nick, "End of /WHOIS list")


@verb("SETNAME")
def _setname(irc: IrcProtocol, message: Message) -> None:
    if "setname" not in irc.caps:
        irc.numeric("421", "SETNAME", "Unknown command: request the setname capability first")
        return
    if not _needs(irc, message, 1):
        return
    text = message.params[0]
    if len(text) > REALNAME_LENGTH or not cleanRealname(text):
        irc.fail(
            "SETNAME",
            "INVALID_REALNAME",
            f"Realname is not valid: 1 to {REALNAME_LENGTH} characters",
        )
        return
    irc.service.setRealname(irc.user, text)  # the SETNAME echoed confirms it


@verb("AWAY")
def _away(irc: IrcProtocol, message: Message) -> None:
    text = message.param(0)[:AWAYLEN] or None
    irc.service.setAway(irc.user, text)
    if irc.user.away:
        irc.numeric("306", "You have been marked as being away")
    else:
        irc.numeric("305", "You are no longer marked as being away")


@verb("ISON")
def _ison(irc: IrcProtocol, message: Message) -> None:
    service = irc.service
    words = " ".join(message.params).split()
    found = [u.nick for u in map(service.findUser, words[:64]) if u is not None]
    # One 303, as clients expect: as many of the nicks as fit in it.
    while len(" ".join(found)) > 400:
        found.pop()
    irc.numeric("303", " ".join(found))


@verb("USERHOST")
def _userhost(irc: IrcProtocol, message: Message) -> None:
    service = irc.service
    replies = []
    for nick in message.params[:5]:
        user = service.findUser(nick)
        if user is not None:
            source = service.sourceOf(user)
            op = "*" if service.isAdmin(user) else ""
            away = "-" if user.away else "+"
            replies.append(f"{user.nick}{op}={away}{source.user}@{source.host}")
    irc.numeric("302", " ".join(replies))


# -- modes ---------------------------------------------------------------------------------


@verb("MODE")
def _mode(irc: IrcProtocol, message: Message) -> Any:
    if not _needs(irc, message, 1):
        return None
    service, user = irc.service, irc.user
    target = message.params[0]
    if not target.startswith("#"):
        if fold(target) != user.key:
            irc.numeric("502", "Can't change mode for other users")
        else:
            irc.numeric("221", "+o" if service.isAdmin(user) else "+")
        return None
    room = service.rooms.get(fold(_room(target)))
    if room is None:
        irc.numeric("403", target, "No such channel")
        return None
    changes = message.params[1:]
    if not changes:
        irc.numeric("324", channel(room.name), "+nt")
        return None
    if changes[0].lstrip("+") == "b" and len(changes) == 1:
        now = service.now()
        bans = [b for b in service.sanctions if b.kind == "ban" and (b.until or now + 1) > now]
        for ban in bans:
            irc.numeric("367", channel(room.name), f"{ban.nick}!*@*", ban.by, str(int(ban.ts)))
        irc.numeric("368", channel(room.name), "End of channel ban list")
        return None
    return defer.ensureDeferred(_changeModes(irc, room.name, changes))


async def _changeModes(irc: IrcProtocol, room: str, changes: list[str]) -> None:
    """+o/-o (admin rights: chatserv's admins are every channel's operators), +b/-b (a
    ban of the nickname in a mask; chatserv's bans hold on the whole server)."""
    service, user = irc.service, irc.user
    modes, args = changes[0], changes[1:]
    adding = True
    for char in modes[:8]:
        if char in "+-":
            adding = char == "+"
            continue
        if char not in "ob":
            if char not in "nt":
                irc.numeric("472", char, "is unknown mode char to me")
            continue
        if not args:
            irc.numeric("461", "MODE", "Not enough parameters")
            return
        arg = args.pop(0)
        nick = arg.split("!", 1)[0]
        try:
            if char == "o":
                await service.setAdmin(user, nick, adding)
            elif adding:
                await service.ban(user, nick, None, "banned on IRC")
            else:
                await service.lift(user, "ban", nick)
        except NotSanctioned:
            continue
        except ChatError as e:
            _failed(irc, Message("MODE", [channel(room)]), e)
            return
        target = service.findUser(nick)
        if char == "o" and target is not None and fold(room) in target.rooms:
            continue  # the room is told (ev.AdminChanged), the one who asked too
        sign = "+" if adding else "-"
        irc.write(line(irc.mask(), "MODE", channel(room), sign + char, arg))


@verb("KILL")
def _kill(irc: IrcProtocol, message: Message) -> defer.Deferred[None] | None:
    if _needs(irc, message, 1):
        return irc.service.kick(irc.user, message.params[0], message.param(1))
    return None


# -- about the server ----------------------------------------------------------------------


@verb("MOTD")
def _motdVerb(irc: IrcProtocol, message: Message) -> None:
    irc.motd()


@verb("LUSERS")
def _lusersVerb(irc: IrcProtocol, message: Message) -> None:
    irc.lusers()


@verb("VERSION")
def _version(irc: IrcProtocol, message: Message) -> None:
    irc.numeric("351", f"chatserv-{__version__}", irc.service.settings.irc_server_name, "")
    irc.isupport()


@verb("TIME")
def _timeVerb(irc: IrcProtocol, message: Message) -> None:
    irc.numeric("391", irc.service.settings.irc_server_name, irc.service.isoTime())


@verb("HELP", "HELPOP")
def _helpVerb(irc: IrcProtocol, message: Message) -> None:
    irc.numeric("704", "index", "IRC commands: " + " ".join(sorted(_VERBS)))
    irc.numeric("705", "index", "chatserv's own commands, e.g. /quote REGISTER PASSWORD:")
    for command in TABLE:
        if command.name.upper() not in _VERBS:
            irc.numeric("705", "index", f"  {command.usage[1:].upper()}  {command.summary}")
    irc.numeric("706", "index", "End of /HELP")


def _refuse(ctx: Session, args: dict) -> None:
    irc: IrcProtocol = ctx.client  # type: ignore[assignment]
    error = args["error"]
    if isinstance(error, LineTooLong):
        irc.numeric("417", "Input line was too long")
    else:
        irc.serverNotice(str(error))


REFUSE = Command("refuse", (), "", _refuse, anonymous=True)
COMMANDS: dict[str, Command] = {
    name: Command(name.lower(), (), "", _run(handler, name), anonymous=True)
    for name, handler in _VERBS.items()
}
_CHATSERV = {c.name.upper(): c for c in TABLE}


def fallback(message: Message) -> Command:
    """A verb IRC does not have: one of chatserv's commands (C{/quote REGISTER pw}, or
    C{/ban}, C{/mute} ... as clients pass unknown commands on), with the line grammar."""
    if message.verb not in _CHATSERV:
        return _UNKNOWN

    def run(ctx: Session, args: dict) -> Any:
        irc: IrcProtocol = ctx.client  # type: ignore[assignment]
        if not irc.registered:
            irc.numeric("451", "You have not registered")
            return None
        words = " ".join([f"/{message.verb.lower()}"] + message.params)
        request = parseLine(words, irc.service, irc.user)
        return request.command.run(ctx, request.args) if request is not None else None

    return Command(message.verb.lower(), (), "", run, anonymous=True)


def _unknown(ctx: Session, args: dict) -> None:
    irc: IrcProtocol = ctx.client  # type: ignore[assignment]
    if not irc.registered:
        irc.numeric("451", "You have not registered")
    else:
        irc.numeric("421", args["message"].verb, "Unknown command")


_UNKNOWN = Command("unknown", (), "", _unknown, anonymous=True)
