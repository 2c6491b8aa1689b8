"""Node slots: each process writing to one SQL database leases a slot of its own.

The slot goes into every message id the process makes (L{chatserv.ids}), so that any
number of processes can share a database (several nodes on one PostgreSQL, or a second
server on a shared SQLite file) without two of them ever making the same id.

A process takes the lowest slot that no unexpired lease in the C{node_slots} table
holds, when it loads its state; renews its lease every third of L{LEASE}; and deletes
it when it closes. A process killed without closing holds its slot until the lease
expires. If a renewal finds the lease gone (the database was unreachable for longer
than the lease and another process took the slot meanwhile), the process takes a free
slot again and says so in the log.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatserv.ids import SLOTS
from chatserv.store import StoreError

log = Logger()

LEASE = 60.0  # seconds a slot stays taken after its holder's last renewal

_EXPIRE = "DELETE FROM node_slots WHERE expires < ?"
_TAKEN = "SELECT slot FROM node_slots"
_TAKE = (
    "INSERT INTO node_slots (slot, holder, name, expires) VALUES (?, ?, ?, ?)"
    # Another process taking the same free slot at the same moment: try the next one.
    " ON CONFLICT (slot) DO NOTHING"
)
_RENEW = "UPDATE node_slots SET expires = ? WHERE slot = ? AND holder = ?"
_RELEASE = "DELETE FROM node_slots WHERE slot = ? AND holder = ?"


class NodeLease:
    """One process's lease on a slot, for a store whose interactions run through C{run}
    (a Deferred-returning C{run(interaction, *args)} in a write transaction)."""

    def __init__(
        self,
        sql: Callable[[str], str],
        reactor: Any,
        lease: float = LEASE,
        name: str | None = None,
    ) -> None:
        self._sql = sql
        self._reactor = reactor
        self.lease = lease
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.holder = uuid.uuid4().hex  # the name may repeat (a restart); this does not
        self.slot: int | None = None
        self._watchers: list[Callable[[int], object]] = []
        self._renewer: LoopingCall | None = None
        self._failing = False

    def watch(self, callback: Callable[[int], object]) -> None:
        """Call C{callback(slot)} whenever the slot changes after the first claim."""
        self._watchers.append(callback)

    def claim(self, cursor: Any) -> int:
        """Take the lowest free slot in the transaction that C{cursor} is in (unless this
        lease holds one already). Blocking."""
        if self.slot is None:
            self.slot = self._take(cursor, self._reactor.seconds())
        return self.slot

    def _take(self, cursor: Any, now: float) -> int:
        cursor.execute(self._sql(_EXPIRE), (now,))
        cursor.execute(_TAKEN)
        taken = {slot for (slot,) in cursor.fetchall()}
        for slot in range(SLOTS):
            if slot in taken:
                continue
            cursor.execute(self._sql(_TAKE), (slot, self.holder, self.name, now + self.lease))
            if cursor.rowcount == 1:
                return slot
        raise StoreError(
            f"all {SLOTS} node slots of this database are leased: {SLOTS} chatserv processes"
            f" use it already (a process that was killed frees its slot {self.lease:g} s"
            " after it last renewed it)"
        )

    def start(self, run: Callable[..., Any]) -> None:
        """Renew the lease every third of its length, through C{run}."""
        if self._renewer is not None:
            return
        self._renewer = LoopingCall(self._renew, run)
        self._renewer.clock = self._reactor
        self._renewer.start(self.lease / 3, now=False)

    def stop(self, run: Callable[..., Any]) -> Any:
        """Stop renewing and give the slot back; a Deferred that never fails."""
        if self._renewer is not None and self._renewer.running:
            self._renewer.stop()
        d = run(self._release, self.slot)
        d.addErrback(lambda failure: None)  # the lease then simply expires
        return d

    # -- in the reactor ----------------------------------------------------------------------

    def _renew(self, run: Callable[..., Any]) -> Any:
        d = run(self._renewOrTake, self.slot, self._reactor.seconds())
        d.addCallbacks(self._renewed, self._renewFailed)
        return d

    def _renewed(self, slot: int) -> None:
        if self._failing:
            self._failing = False
            log.info("node slot {slot}: lease renewed again", slot=slot)
        if slot != self.slot:
            log.warn(
                "node slot {old} was taken by another process while this one could not"
                " renew its lease; message ids now use slot {slot}",
                old=self.slot,
                slot=slot,
            )
            self.slot = slot
            for callback in self._watchers:
                callback(slot)

    def _renewFailed(self, failure: Any) -> None:
        if not self._failing:
            self._failing = True
            log.warn(
                "node slot {slot}: cannot renew its lease ({why}); trying again every {every:g} s",
                slot=self.slot,
                why=failure.getErrorMessage(),
                every=self.lease / 3,
            )

    # -- in the database's thread ---------------------------------------------------------------

    def _renewOrTake(self, txn: Any, slot: int, now: float) -> int:
        txn.execute(self._sql(_RENEW), (now + self.lease, slot, self.holder))
        if txn.rowcount == 1:
            return slot
        return self._take(txn, now)

    def _release(self, txn: Any, slot: int | None) -> None:
        if slot is not None:
            txn.execute(self._sql(_RELEASE), (slot, self.holder))
