"""The in-process store: everything in dictionaries, gone at exit.

For tests and for trying chatserv out (C{--db memory}). Every method answers at once,
with an already-fired Deferred, so code written for a database runs unchanged.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable

from twisted.internet import defer
from zope.interface import implementer

from chatserv.events import PrivateMessage, RoomMessage
from chatserv.names import fold
from chatserv.store import Account, IStore, RoomRecord, Sanction, Span, State, StoreError


@implementer(IStore)
class MemoryStore:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.rooms: dict[str, RoomRecord] = {}
        self.sanctions: dict[tuple[str, str], Sanction] = {}
        self.messages: dict[str, list[RoomMessage]] = defaultdict(list)  # by room key
        self.offline: dict[str, list[PrivateMessage]] = defaultdict(list)  # by nick key

    def load(self) -> State:
        lastId = max(
            [m.id for ms in self.messages.values() for m in ms]
            + [m.id for ms in self.offline.values() for m in ms],
            default=0,
        )
        now = time.time()  # start-up code, like the database backends' load()
        live = [s for s in self.sanctions.values() if s.until is None or s.until > now]
        spoken = frozenset(key for key, found in self.messages.items() if found)
        return State(lastId, list(self.rooms.values()), live, frozenset(self.accounts), spoken)

    # -- history -----------------------------------------------------------------------

    def watchNode(self, callback: Callable[[int], object]) -> None:
        pass  # no other process writes here: the slot is always 0

    def addMessage(self, message: RoomMessage) -> None:
        self.messages[fold(message.room)].append(message)

    def flush(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def history(
        self, roomKey: str, limit: int, span: Span | None = None
    ) -> defer.Deferred[list[RoomMessage]]:
        found = self.messages.get(roomKey, [])
        if span is not None:
            found = [m for m in found if span.holds(m)]
        if limit <= 0:
            found = []
        else:
            found = found[:limit] if span is not None and span.oldest else found[-limit:]
        # As a database gives it back: without the IRC source of when it was said.
        return defer.succeed([dataclasses.replace(m, history=True, source=None) for m in found])

    # -- accounts ----------------------------------------------------------------------

    def account(self, key: str) -> defer.Deferred[Account | None]:
        return defer.succeed(self.accounts.get(key))

    def addAccount(self, account: Account) -> defer.Deferred[bool]:
        if account.key in self.accounts:
            return defer.succeed(False)
        self.accounts[account.key] = account
        return defer.succeed(True)

    def _update(self, key: str, **changes) -> defer.Deferred[None]:
        account = self.accounts.get(key)
        if account is not None:
            self.accounts[key] = dataclasses.replace(account, **changes)
        return defer.succeed(None)

    def setPassword(self, key: str, passwordHash: str) -> defer.Deferred[None]:
        return self._update(key, passwordHash=passwordHash)

    def setColor(self, key: str, color: str | None) -> defer.Deferred[None]:
        return self._update(key, color=color)

    def setAdmin(self, key: str, admin: bool) -> defer.Deferred[None]:
        return self._update(key, admin=admin)

    def deleteAccount(self, key: str) -> defer.Deferred[bool]:
        self.offline.pop(key, None)
        return defer.succeed(self.accounts.pop(key, None) is not None)

    def renameAccount(self, key: str, newKey: str, newNick: str) -> defer.Deferred[bool]:
        account = self.accounts.get(key)
        if account is None or (newKey != key and newKey in self.accounts):
            return defer.succeed(False)
        del self.accounts[key]
        self.accounts[newKey] = dataclasses.replace(account, key=newKey, nick=newNick)
        if newKey != key:
            if key in self.offline:
                self.offline[newKey] = self.offline.pop(key)
            for kind, sanctioned in list(self.sanctions):
                if sanctioned == newKey:  # expired: the service refuses one in force
                    del self.sanctions[kind, newKey]
            for kind, sanctioned in list(self.sanctions):
                if sanctioned == key:
                    sanction = self.sanctions.pop((kind, key))
                    self.sanctions[kind, newKey] = dataclasses.replace(
                        sanction, key=newKey, nick=newNick
                    )
        return defer.succeed(True)

    # -- rooms and sanctions -----------------------------------------------------------

    def saveRoom(self, record: RoomRecord) -> defer.Deferred[None]:
        self.rooms[record.key] = record
        return defer.succeed(None)

    def addSanction(self, sanction: Sanction) -> defer.Deferred[None]:
        self.sanctions[sanction.kind, sanction.key] = sanction
        return defer.succeed(None)

    def removeSanction(self, kind: str, key: str) -> defer.Deferred[bool]:
        return defer.succeed(self.sanctions.pop((kind, key), None) is not None)

    # -- offline messages --------------------------------------------------------------

    def addOffline(self, toKey: str, message: PrivateMessage, limit: int) -> defer.Deferred[bool]:
        box = self.offline[toKey]
        if len(box) >= limit:
            return defer.succeed(False)
        box.append(message)
        return defer.succeed(True)

    def takeOffline(self, toKey: str) -> defer.Deferred[list[PrivateMessage]]:
        box = self.offline.pop(toKey, [])
        return defer.succeed([dataclasses.replace(m, offline=True) for m in box])

    # -- upkeep ------------------------------------------------------------------------

    def prune(self, now: float, maxPerRoom: int, maxAge: float) -> defer.Deferred[int]:
        deleted = 0
        for key, found in list(self.messages.items()):
            kept = [m for m in found if not maxAge or m.ts >= now - maxAge]
            if maxPerRoom:
                kept = kept[-maxPerRoom:]
            deleted += len(found) - len(kept)
            self.messages[key] = kept
        if maxAge:
            for key, box in list(self.offline.items()):
                kept = [m for m in box if m.ts >= now - maxAge]
                deleted += len(box) - len(kept)
                self.offline[key] = kept
        return defer.succeed(deleted)

    def backup(self, path: str) -> defer.Deferred[str]:
        return defer.fail(StoreError("the memory store keeps nothing to back up"))

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)
