"""Deadlines for the store: every wait on the database ends, with an answer or a refusal.

A request may wait on the store (is this nickname registered? the history of a room?),
and a connection's requests run in order: a call that never returns would hold back
everything that connection asks after it, C{/time} included. L{GuardedStore}, the view
of its L{IStore} that the service uses, gives every Deferred a deadline (C{[storage]
db_timeout}) and turns a timeout or a database failure into L{StoreUnavailable}: the
client gets one error saying what cannot be done right now, the log one line (through the
service's L{LogLimiter}: clients cause these) saying why.

Nothing is cancelled in the store: a write given up on may still be committed later, and
its error says so. What comes late is dropped (a failure, logged), except the private
messages taken for a login, which are put back to be delivered at the next one. While
the store says room messages cannot be committed (L{SQLStore.failing}), waiting for them
to be (C{flush}, before history is read) is refused at once instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatserv.errors import StoreUnavailable
from chatserv.limits import LogLimiter
from chatserv.store import IStore, StoreError

__all__ = ["GuardedStore"]

_log = Logger()

KEEP_FOREVER = 2**31 - 1  # a mailbox limit no mailbox reaches: putting messages back


@dataclass(frozen=True)
class _What:
    """What a call is, for the error text."""

    subject: str  # "the history", "your colour", ...
    done: str = ""  # writes: "stored", "registered", ...; reads: ""
    verb: str = "is"  # reads: "is" or "are" (unavailable)
    note: str = ""  # said after the reason

    def timedOut(self, timeout: float) -> str:
        why = f"the database did not answer within {timeout:g} s"
        if self.done:
            return (
                f"{self.subject} may not be {self.done}: {why} (it may still be {self.done}"
                f" later){self.note}"
            )
        return f"{self.subject} {self.verb} unavailable right now: {why}{self.note}"

    def failed(self) -> str:
        why = "the database failed (the server logged why)"
        if self.done:
            return f"{self.subject} could not be {self.done}: {why}{self.note}"
        return (
            f"{self.subject} {self.verb} unavailable right now: {why}; try again in a"
            f" moment{self.note}"
        )

    def refused(self) -> str:
        return (
            f"{self.subject} {self.verb} unavailable right now: the database cannot store"
            f" anything at the moment (the server logged why); try again later{self.note}"
        )


HISTORY = _What("the history")
ACCOUNTS = _What("account lookups", verb="are")
KEPT = _What("the private messages kept for you", verb="are", note="; they stay kept")
UNTIL_RESTART = "; it stands until the server restarts"


def _text(failure: Failure) -> str:
    return " ".join(str(failure.value).split())[:300] or failure.type.__name__


@implementer(IStore)
class GuardedStore:
    """L{IStore} C{store}, with a deadline of C{timeout} seconds on every Deferred.

    Anything else (C{store.accounts} of a memory store, ...) is C{store}'s.
    """

    def __init__(
        self, store: IStore, clock: IReactorTime, timeout: float, logLimit: LogLimiter
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.unavailable = 0  # requests refused because of the database
        self.timeouts = 0  # of those, for want of an answer in time
        self._clock = clock
        self._logLimit = logLimit
        self._errors: tuple[type[BaseException], ...] = getattr(store, "errors", (StoreError,))
        self._lastTimeout: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def __repr__(self) -> str:
        return f"<GuardedStore {self.store!r} {self.timeout:g} s>"

    @property
    def problem(self) -> str | None:
        """What is known to be wrong with the database now, in one line, or C{None}."""
        problem = getattr(self.store, "problem", None)
        if problem is not None:
            return problem
        last = self._lastTimeout
        if last is not None and self._clock.seconds() - last < 60:
            return f"the database did not answer within {self.timeout:g} s lately"
        return None

    # -- the deadline ----------------------------------------------------------------------

    def _guard(
        self,
        d: defer.Deferred,
        call: str,
        what: _What,
        late: Callable[[Any], object] | None = None,
    ) -> defer.Deferred:
        if d.called:  # a memory store: answered already, no timer needed
            return d.addErrback(self._converted, call, what)
        outer: defer.Deferred = defer.Deferred()

        def expire() -> None:
            self.unavailable += 1
            self.timeouts += 1
            self._lastTimeout = self._clock.seconds()
            self._logLimit.warn(
                _log,
                "database: {call} got no answer within {timeout:g} s (db_timeout)",
                call=call,
                timeout=self.timeout,
            )
            outer.errback(StoreUnavailable(what.timedOut(self.timeout)))

        timer = self._clock.callLater(self.timeout, expire)

        def settle(result: Any) -> None:
            if timer.active():
                timer.cancel()
                if isinstance(result, Failure):
                    outer.errback(self._converted(result, call, what))
                else:
                    outer.callback(result)
            else:
                self._late(result, call, late)

        d.addBoth(settle)
        return outer

    def _converted(self, failure: Failure, call: str, what: _What) -> Failure:
        if not failure.check(*self._errors):
            return failure  # not the database: a bug, reported as one
        self.unavailable += 1
        self._logLimit.warn(_log, "database: {call} failed: {why}", call=call, why=_text(failure))
        return Failure(StoreUnavailable(what.failed()))

    def _late(self, result: Any, call: str, late: Callable[[Any], object] | None) -> None:
        if isinstance(result, Failure):
            self._logLimit.warn(
                _log,
                "database: {call}, given up on after {timeout:g} s, failed later: {why}",
                call=call,
                timeout=self.timeout,
                why=_text(result),
            )
            return
        self._logLimit.info(
            _log,
            "database: {call}, given up on after {timeout:g} s, was done after all",
            call=call,
            timeout=self.timeout,
        )
        if late is not None:
            late(result)

    # -- IStore ----------------------------------------------------------------------------

    def load(self):
        return self.store.load()

    def watchNode(self, callback) -> None:
        self.store.watchNode(callback)

    def addMessage(self, message) -> None:
        self.store.addMessage(message)

    def flush(self) -> defer.Deferred[None]:
        failing = getattr(self.store, "failing", None)
        if failing is not None:
            # Waiting would last as long as the outage: say so at once.
            self.unavailable += 1
            return defer.fail(StoreUnavailable(HISTORY.refused()))
        return self._guard(self.store.flush(), "flush", HISTORY)

    def history(self, roomKey, limit, span=None):
        return self._guard(self.store.history(roomKey, limit, span), "history", HISTORY)

    def account(self, key):
        return self._guard(self.store.account(key), "account", ACCOUNTS)

    def addAccount(self, account):
        what = _What("the account", "registered")
        return self._guard(self.store.addAccount(account), "addAccount", what)

    def setPassword(self, key, passwordHash):
        what = _What("the new password", "stored")
        return self._guard(self.store.setPassword(key, passwordHash), "setPassword", what)

    def setColor(self, key, color):
        what = _What("your colour", "stored", note="; it is yours until you disconnect")
        return self._guard(self.store.setColor(key, color), "setColor", what)

    def setAdmin(self, key, admin):
        what = _What("the admin change", "stored", note=UNTIL_RESTART)
        return self._guard(self.store.setAdmin(key, admin), "setAdmin", what)

    def deleteAccount(self, key):
        what = _What("the account", "deleted")
        return self._guard(self.store.deleteAccount(key), "deleteAccount", what)

    def renameAccount(self, key, newKey, newNick):
        what = _What("the account", "renamed")
        d = self.store.renameAccount(key, newKey, newNick)
        return self._guard(d, "renameAccount", what)

    def saveRoom(self, record):
        what = _What("the topic", "stored", note=UNTIL_RESTART)
        return self._guard(self.store.saveRoom(record), "saveRoom", what)

    def addSanction(self, sanction):
        what = _What(f"the {sanction.kind}", "stored", note=UNTIL_RESTART)
        return self._guard(self.store.addSanction(sanction), "addSanction", what)

    def removeSanction(self, kind, key):
        what = _What(f"lifting the {kind}", "stored", note=UNTIL_RESTART)
        return self._guard(self.store.removeSanction(kind, key), "removeSanction", what)

    def addOffline(self, toKey, message, limit):
        what = _What("your message", "kept for them")
        return self._guard(self.store.addOffline(toKey, message, limit), "addOffline", what)

    def takeOffline(self, toKey):
        def putBack(messages) -> None:
            # Taken (deleted) after the login was told they are unavailable: keep them again,
            # for the next login, rather than lose them.
            for message in messages:
                d = self.store.addOffline(toKey, message, KEEP_FOREVER)
                d.addErrback(self._late, "takeOffline (putting back)", None)
            if messages:
                self._logLimit.info(
                    _log,
                    "database: {count} kept private messages, fetched too late, are kept again",
                    count=len(messages),
                )

        return self._guard(self.store.takeOffline(toKey), "takeOffline", KEPT, late=putBack)

    def prune(self, now, maxPerRoom, maxAge):
        # In the background, in chunks: no deadline, but a failure is one line, not a
        # traceback.
        def failed(failure: Failure) -> Failure:
            if not failure.check(*self._errors):
                return failure
            return Failure(StoreUnavailable(f"the database failed: {_text(failure)}"))

        return self.store.prune(now, maxPerRoom, maxAge).addErrback(failed)

    def backup(self, path):
        # For the operator, on the console: no deadline (a big file takes a while), and the
        # reason in full.
        def failed(failure: Failure) -> Failure:
            if not failure.check(*self._errors):
                return failure
            return Failure(StoreUnavailable(f"the backup failed: {_text(failure)}"))

        return self.store.backup(path).addErrback(failed)

    def close(self):
        return self.store.close()
