"""IRCv3 CHATHISTORY: a client pages through a channel's history by message id or time.

https://ircv3.net/specs/extensions/chathistory (capability C{draft/chathistory}). A
reference is C{msgid=ID} (the C{msgid} tag chatserv sent: a message's id, C{ID.N} for
the N-th piece of a long one) or C{timestamp=YYYY-MM-DDThh:mm:ss.sssZ}; a timestamp is
compared at the millisecond, as the C{time} tag shows it. The messages come from the
store (L{chatserv.service.ChatService.historySpan}) and are sent as a C{chathistory}
batch, empty if there are none. Private messages are not kept, so a nickname's history
is an empty batch.
"""

from __future__ import annotations

import calendar
import re
import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from chatserv import events as ev
from chatserv.errors import ChatError, NotInRoom, StoreUnavailable
from chatserv.names import fold
from chatserv.protocols.ircmessage import Message, line, serverTime
from chatserv.protocols.ircwire import channel
from chatserv.store import Span

if TYPE_CHECKING:
    from chatserv.protocols.irc import IrcProtocol

CAP = "draft/chathistory"
_MAX_ID = 2**63 - 1  # ids are a database's BIGINT: a larger one is past them all
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,3})\d*)?Z?$")


class _Invalid(ValueError):
    """A parameter that is not what the subcommand takes."""


class Ref:
    """A reference: a message id, or a time in milliseconds."""

    __slots__ = ("id", "millis")

    def __init__(self, text: str) -> None:
        kind, _, value = text.partition("=")
        self.id: int | None = None
        self.millis: int | None = None
        number = value.split(".", 1)[0]
        if kind == "msgid" and number.isascii() and number.isdigit():
            self.id = min(int(number[:20]), _MAX_ID)
            return
        m = _TIMESTAMP.match(value) if kind == "timestamp" else None
        whole = _seconds(m.group(1)) if m is not None else None
        if m is None or whole is None:
            raise _Invalid(
                f"{text[:40]!r} is neither msgid=ID nor timestamp=YYYY-MM-DDThh:mm:ss.sssZ"
            )
        self.millis = whole * 1000 + int((m.group(2) or "0").ljust(3, "0"))

    def after(self, inclusive: bool = False) -> dict[str, Any]:
        """The bound of a span that starts here."""
        if self.id is not None:
            return {"after": self.id - 1 if inclusive else self.id}
        assert self.millis is not None
        return {"since": (self.millis if inclusive else self.millis + 1) / 1000}

    def before(self, inclusive: bool = False) -> dict[str, Any]:
        """The bound of a span that ends here."""
        if self.id is not None:
            return {"before": min(self.id + 1, _MAX_ID) if inclusive else self.id}
        assert self.millis is not None
        return {"until": (self.millis + 1 if inclusive else self.millis) / 1000}

    def precedes(self, other: Ref) -> bool | None:
        """Whether this one is earlier; C{None} when an id is compared with a time."""
        if self.id is not None and other.id is not None:
            return self.id < other.id
        if self.millis is not None and other.millis is not None:
            return self.millis < other.millis
        return None


def _seconds(text: str) -> int | None:
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:  # the 45th of the 13th month
        return None


def chathistory(irc: IrcProtocol, message: Message) -> Any:
    sub = message.param(0).upper()
    handler = _SUBCOMMANDS.get(sub)
    if handler is None:
        _fail(irc, "UNKNOWN_COMMAND", [sub or "*"], "Unknown command")
        return None
    params = message.params[1:]
    if len(params) < (4 if sub == "BETWEEN" else 3) or not all(params):
        _fail(irc, "NEED_MORE_PARAMS", [sub], "Missing parameters")
        return None
    try:
        return handler(irc, params)
    except _Invalid as e:
        _fail(irc, "INVALID_PARAMS", [sub], str(e))
        return None


def _fail(irc: IrcProtocol, code: str, context: list[str], text: str) -> None:
    irc.fail("CHATHISTORY", code, *context, text)


def _limit(irc: IrcProtocol, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text[:9]) < 1:
        raise _Invalid(f"the limit must be a number of messages, not {text[:20]!r}")
    return min(int(text[:9]), irc.service.settings.max_history_request)


def _latest(irc: IrcProtocol, params: list[str]) -> Any:
    target, ref, limit = params[0], params[1], _limit(irc, params[2])
    bound = {} if ref == "*" else Ref(ref).after()
    return _send(irc, "LATEST", target, [(limit, Span(**bound))])


def _before(irc: IrcProtocol, params: list[str]) -> Any:
    span = Span(**Ref(params[1]).before())
    return _send(irc, "BEFORE", params[0], [(_limit(irc, params[2]), span)])


def _after(irc: IrcProtocol, params: list[str]) -> Any:
    span = Span(**Ref(params[1]).after(), oldest=True)
    return _send(irc, "AFTER", params[0], [(_limit(irc, params[2]), span)])


def _around(irc: IrcProtocol, params: list[str]) -> Any:
    ref, limit = Ref(params[1]), _limit(irc, params[2])
    # The referenced message and those before it take half; those after, the rest.
    older = Span(**ref.before(inclusive=True))
    newer = Span(**ref.after(), oldest=True)
    return _send(irc, "AROUND", params[0], [((limit + 1) // 2, older), (limit, newer)])


def _between(irc: IrcProtocol, params: list[str]) -> Any:
    start, end, limit = Ref(params[1]), Ref(params[2]), _limit(irc, params[3])
    forward = Span(**start.after(), **end.before(), oldest=True)
    backward = Span(**start.before(), **end.after())
    earlier = start.precedes(end)
    if earlier is None:  # an id and a time: one of the two spans is empty
        spans = [(limit, forward), (limit, backward)]
    else:
        spans = [(limit, forward if earlier else backward)]
    return _send(irc, "BETWEEN", params[0], spans, either=earlier is None)


def _send(
    irc: IrcProtocol,
    sub: str,
    target: str,
    spans: list[tuple[int, Span]],
    either: bool = False,
) -> Any:
    """Query each span in turn and send what they found as one batch, oldest first.
    C{either}: stop at the first span that finds anything (BETWEEN an id and a time).
    With two spans and not C{either}, the second takes what the first left of its limit
    (AROUND)."""
    if not target.startswith("#"):
        _batch(irc, target, [])  # private messages are not kept
        return None
    room = target[1:]
    if fold(room) not in irc.user.rooms:
        _fail(irc, "INVALID_TARGET", [sub, target], "You're not on that channel")
        return None

    async def run() -> None:
        found: list[ev.RoomMessage] = []
        try:
            for limit, span in spans:
                if not either:
                    limit -= len(found)
                if limit <= 0:
                    break
                page = await irc.service.historySpan(irc.user, room, limit, span)
                found += page
                if either and page:
                    break
        except (StoreUnavailable, NotInRoom) as e:
            _fail(irc, "MESSAGE_ERROR", [sub, target], f"Messages could not be retrieved: {e}")
            return
        except ChatError as e:
            _fail(irc, "INVALID_PARAMS", [sub], str(e))
            return
        found.sort(key=lambda m: m.id)
        joined = irc.user.rooms.get(fold(room))
        _batch(irc, channel(joined.name) if joined is not None else target, found)

    return defer.ensureDeferred(run())


def _batch(irc: IrcProtocol, target: str, found: list[ev.RoomMessage]) -> None:
    if "batch" not in irc.caps:
        # A client that cannot tell history from what is said now: notices around it.
        if not found:
            irc.serverNotice(f"{target}: no history in that span")
            return
    room = target[1:] if target.startswith("#") else target
    now = irc.service.now()
    irc.session.reply(ev.HistoryMark(room, len(found), False, now))
    for message in found:
        irc.session.reply(message)
    irc.session.reply(ev.HistoryMark(room, len(found), True, now))


def _targets(irc: IrcProtocol, params: list[str]) -> None:
    """The channels the client is in that were spoken in between two times, with the
    time of their latest message (from what the server holds of each in memory)."""
    first, second, limit = Ref(params[0]), Ref(params[1]), _limit(irc, params[2])
    if first.millis is None or second.millis is None:
        raise _Invalid("TARGETS takes two timestamps")
    low, high = sorted((first.millis / 1000, second.millis / 1000))
    latest = []
    for room in irc.user.rooms.values():
        recent = [m for m in room.recent or () if low <= m.ts < high]
        if recent:
            latest.append((recent[-1].ts, room.name))
    latest.sort()
    server = irc.wire.server
    tag = "targets"  # one reply at a time per connection: requests run in turn
    irc.write(line(server, "BATCH", "+" + tag, "draft/chathistory-targets"))
    for ts, name in latest[-limit:]:
        found = line(server, "CHATHISTORY", "TARGETS", channel(name), serverTime(ts))
        irc.write(f"@batch={tag} {found}")
    irc.write(line(server, "BATCH", "-" + tag))


_SUBCOMMANDS = {
    "LATEST": _latest,
    "BEFORE": _before,
    "AFTER": _after,
    "AROUND": _around,
    "BETWEEN": _between,
    "TARGETS": _targets,
}
