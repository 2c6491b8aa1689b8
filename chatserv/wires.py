"""Every kind of listener, declared once.

The command-line options (C{--tcp}, C{--ws}, ...), the C{[listen]} keys of the config
file, the metrics' C{protocol} label and the listeners L{chatserv.tap.makeService}
starts are all made from L{WIRES}: adding a wire is its protocol module plus one row
here. Protocol modules are imported only when a listener of theirs is built, so the
configuration code can read this table without loading Autobahn or twisted.web.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _lineFactory(service: Any, reactor: Any, kind: str) -> Any:
    from chatserv.protocols.line import LineChatFactory

    return LineChatFactory(service, kind=kind)


def _webFactory(service: Any, reactor: Any, kind: str) -> Any:
    from chatserv.protocols.web import ChatSite

    return ChatSite(service, reactor=reactor, kind=kind)


def _ircFactory(service: Any, reactor: Any, kind: str) -> Any:
    from chatserv.protocols.irc import IrcFactory

    return IrcFactory(service, kind=kind)


@dataclass(frozen=True)
class Wire:
    kind: str  # option name, [listen] key, metrics label, log prefix
    what: str  # whom it serves, as the log says ("listening for line clients on ...")
    help: str  # the command-line option's help
    factory: Callable[[Any, Any, str], Any]  # (service, reactor, kind) -> protocol factory
    tls: bool = False  # wrapped in chatserv's TLS (needs --tls-cert)
    default: str | None = None  # listened on when no listener at all is asked for


WIRES: tuple[Wire, ...] = (
    Wire(
        "tcp",
        "line clients",
        "Listen for line clients (nc, telnet) on ENDPOINT; repeatable.",
        _lineFactory,
        default="10001",
    ),
    Wire(
        "ws",
        "websocket clients",
        "Listen for websocket clients, and serve the browser client, on ENDPOINT; repeatable.",
        _webFactory,
        default="8765",
    ),
    Wire(
        "tls",
        "TLS line clients",
        "Listen for line clients over TLS on ENDPOINT (needs --tls-cert); repeatable.",
        _lineFactory,
        tls=True,
    ),
    Wire(
        "wss",
        "TLS websocket clients",
        "The same as --ws over TLS: wss:// and https:// (needs --tls-cert); repeatable.",
        _webFactory,
        tls=True,
    ),
    Wire(
        "irc",
        "IRC clients",
        "Listen for IRC clients (irssi, WeeChat, HexChat, bots) on ENDPOINT, e.g. 6667; "
        "repeatable.",
        _ircFactory,
    ),
    Wire(
        "ircs",
        "TLS IRC clients",
        "The same as --irc over TLS, e.g. 6697 (needs --tls-cert); repeatable.",
        _ircFactory,
        tls=True,
    ),
)

KINDS: tuple[str, ...] = tuple(w.kind for w in WIRES)
BY_KIND: dict[str, Wire] = {w.kind: w for w in WIRES}
