"""The event bus: how what happens reaches every process that serves its recipients.

Everything the service publishes goes to every receiver subscribed to the bus, on this
process and, in a cluster (L{chatserv.cluster}), on the others. The service is one such
receiver: it applies what an event changes (a room's recent history, its topic) and
delivers the event to its local recipients. Because the process that made the change
applies it the same way as every other process, room state that every node must know
stays the same on all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from zope.interface import implementer

from chatserv import codec
from chatserv import events as ev
from chatserv.interfaces import IEventBus
from chatserv.store import Sanction

# receiver(event, rooms, users, skip, node): rooms and users are case-folded keys; node
# is the process that published it, None for this one.
Receiver = Callable[[object, tuple[str, ...], tuple[str, ...], str | None, str | None], None]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One publication, as it travels between processes."""

    event: object  # an event of chatserv.events (or a control message)
    rooms: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    skip: str | None = None
    node: str = ""  # the process that published it


@dataclass(frozen=True, slots=True)
class EndSession:
    """A control message: the node where user C{key} is connected ends that session
    (C{why} for its rooms and the log, C{farewell} for the user). C{unless} is a node
    whose session to keep (the one a login took the name for)."""

    key: str
    why: str
    farewell: str
    unless: str = ""


@dataclass(frozen=True, slots=True)
class SanctionAdded:
    """A control message: a ban or mute is in force, on every node (which ends a banned
    user's session, or tells a muted one, wherever they are connected)."""

    sanction: Sanction


@dataclass(frozen=True, slots=True)
class SanctionLifted:
    """A control message: the ban or mute (C{kind}) of C{key} is lifted, by C{by}."""

    kind: str
    key: str
    by: str


@dataclass(frozen=True, slots=True)
class AdminGranted:
    """A control message: the account C{key} is now an admin, or no longer (by C{by});
    the node where it is logged in tells it and its rooms."""

    key: str
    admin: bool
    by: str
    source: ev.Source | None = None  # the admin who did it, as IRC shows them


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A control message: a server notice to every connection on every node."""

    text: str


@dataclass(frozen=True, slots=True)
class CloseRoom:
    """A control message: everyone in room C{key} is disconnected, on every node."""

    key: str
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Reset:
    """A control message: every connection on every node is disconnected."""

    reason: str


@dataclass(frozen=True, slots=True)
class Attempt:
    """A control message: node C{node} counted one throttled attempt from address
    C{host} (or, C{refund}, gave one back: it turned out not to count). C{kind} is
    "login" (a password check for the account C{account}) or "register"; every other
    node counts it too, so that guesses spread over the nodes are throttled as one."""

    kind: str
    host: str
    account: str
    refund: bool
    node: str


@dataclass(frozen=True, slots=True)
class AddressWanted:
    """A control message: node C{asker} wants the address user C{key} is connected from
    (for C{/ban --address}); the node where they are answers with L{AddressFound}."""

    key: str
    asker: str
    request: int


@dataclass(frozen=True, slots=True)
class AddressFound:
    """A control message: the answer to node C{asker}'s L{AddressWanted} C{request}."""

    request: int
    asker: str
    host: str


codec.register(
    AddressWanted,
    AddressFound,
    Attempt,
    Delivery,
    EndSession,
    Sanction,
    SanctionAdded,
    SanctionLifted,
    AdminGranted,
    Broadcast,
    CloseRoom,
    Reset,
)


@implementer(IEventBus)
class LocalBus:
    """One process: every publication goes straight to this process's receivers."""

    def __init__(self) -> None:
        self._receivers: list[Receiver] = []

    def subscribe(self, receiver: Receiver) -> None:
        self._receivers.append(receiver)

    def publish(
        self,
        event: object,
        rooms: Iterable[str] = (),
        users: Iterable[str] = (),
        skip: str | None = None,
    ) -> None:
        rooms, users = tuple(rooms), tuple(users)
        self._here(event, rooms, users, skip)  # first: this process's users never wait
        self._carry(event, rooms, users, skip)

    def _carry(
        self, event: object, rooms: tuple[str, ...], users: tuple[str, ...], skip: str | None
    ) -> None:
        """To the other processes: there are none here (see L{chatserv.cluster.bus})."""

    def _here(
        self,
        event: object,
        rooms: tuple[str, ...],
        users: tuple[str, ...],
        skip: str | None,
        node: str | None = None,
    ) -> None:
        """To this process's receivers (C{node}: the one that published it elsewhere)."""
        for receiver in self._receivers:
            receiver(event, rooms, users, skip, node)
