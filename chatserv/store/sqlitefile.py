"""The SQLite file under a running server: is it still there, and can it be written?

SQLite keeps its file open, so it does not notice when the file is deleted or another is
renamed over it: everything stays readable and writable, in a file nothing names any
more, and is lost when the server stops. A file made read-only (C{chattr +i}, a read-only
remount) fails every write instead.

L{FileWatch} looks every C{db_check_interval} seconds (and after a commit fails), in a
thread: does the path still name the file the server opened, and can it be written? When
not, the log says so at error level, at once and then every L{ALARM_REPEAT} seconds while
it lasts. A deleted file is written anew from the open database (C{VACUUM INTO}, in the
database's own thread, between two commits), so that nothing is lost; a file that took
its place is never touched (see docs/operating.md, "The database").

Nothing here opens the database file: closing any descriptor of a file drops every POSIX
lock the process holds on it, SQLite's included. C{os.stat} and C{os.access} only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["ALARM_REPEAT", "FileState", "FileWatch", "examine", "identity", "unwritable"]

log = Logger()

ALARM_REPEAT = 60.0  # seconds between two log lines about a database problem that lasts
RESTORING = ".restoring"  # suffix of the copy being written while the file is missing
_SIDE_FILES = ("-wal", "-shm")


def identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) the path names now, or C{None} if nothing is there."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return (found.st_dev, found.st_ino)


def unwritable(path: str, directory: bool = True) -> str | None:
    """Why the SQLite database at C{path} cannot be written, or C{None} if, as far as the
    file system says, it can (it does not know about a full disk). With C{directory},
    the directory too (SQLite makes its -wal file there when it opens the database).
    Blocking: a few C{access} calls. Root passes permission checks, but not
    C{chattr +i} or a read-only file system."""
    where = [(path, "the file"), *((path + s, f"its {s} file") for s in _SIDE_FILES)]
    if directory:
        where.append((os.path.dirname(path), "its directory"))
    for name, what in where:
        if os.path.exists(name) and not os.access(name, os.W_OK):
            return (
                f"{what} {name} is read-only"
                " (permissions, chattr +i, or a file system mounted read-only)"
            )
    return None


def fsync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class FileState:
    kind: str  # "ok", "missing", "replaced" or "read-only"
    text: str = ""  # for the log: what is wrong and what it means


OK = FileState("ok")


def examine(path: str, opened: tuple[int, int] | None) -> FileState:
    """What the file at C{path} is to the server, which opened C{opened}. Blocking."""
    now = identity(path)
    if now is None:
        return FileState(
            "missing",
            f"the SQLite database file {path} was deleted while the server runs: what it"
            " holds is still readable and writable through the open file, and is lost when"
            " the server stops unless the file is written anew",
        )
    if opened is not None and now != opened:
        return FileState(
            "replaced",
            f"the SQLite database file {path} is not the one the server opened (another"
            " file was put in its place): the server goes on with the one it opened,"
            " whose contents are lost when it stops; the next start uses the new file."
            " To keep the open one, move the new file away: the server then writes the"
            " open database back to that path",
        )
    problem = unwritable(path, directory=False)
    if problem is not None:
        return FileState(
            "read-only",
            f"the SQLite database {path} cannot be written: {problem}; room messages wait"
            " in memory and accounts, bans and topics cannot be stored until it can",
        )
    return OK


class FileWatch:
    """Checks the database file now and then; see the module docstring.

    C{pool} is the store's L{twisted.enterprise.adbapi.ConnectionPool}, of one thread
    and one connection: rewriting a deleted file runs there, on that connection.
    """

    def __init__(
        self,
        reactor: Any,
        pool: Any,
        path: str,
        opened: tuple[int, int] | None,
        interval: float,
        exclusive: bool,
    ) -> None:
        self.path = path
        self.state = OK
        self._reactor = reactor
        self._pool = pool
        self._opened = opened
        self._interval = interval
        self._exclusive = exclusive
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor
        self._checking: defer.Deferred[None] | None = None
        self._alarmAt = 0.0

    def start(self) -> None:
        if self._interval > 0 and not self._loop.running:
            self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> defer.Deferred[None]:
        """Look at the file now (once at a time); the Deferred never fails."""
        if self._checking is None:
            pool = self._reactor.getThreadPool()
            d = threads.deferToThreadPool(self._reactor, pool, examine, self.path, self._opened)
            d.addCallback(self._examined)
            d.addErrback(lambda f: log.failure("checking the database file failed", f))
            d.addBoth(self._checked)
            self._checking = d
        waiting: defer.Deferred[None] = defer.Deferred()
        self._checking.addBoth(lambda result: waiting.callback(None) or result)
        return waiting

    def _checked(self, _: object) -> None:
        self._checking = None

    def _examined(self, state: FileState):
        if state.kind == "missing":
            return self._rewrite(state)
        self._report(state)
        return None

    # -- writing a deleted file anew -----------------------------------------------------

    def _rewrite(self, missing: FileState) -> defer.Deferred[None]:
        d = threads.deferToThreadPool(self._reactor, self._pool.threadpool, self._copyBack)
        return d.addCallbacks(self._rewritten, self._notRewritten, errbackArgs=(missing,))

    def _copyBack(self) -> tuple[int, int] | None:
        """In the pool's thread: the open database, copied to its path; then the pool's
        connection is the copy's. Every commit waits meanwhile, so none is lost."""
        path, pool = self.path, self._pool
        connection = pool.connections.get(pool.threadID())
        if connection is None:
            raise OSError("the server has no connection open to the deleted file")
        if os.path.lexists(path):
            return identity(path)  # put back meanwhile: the next check says what it is
        copy = path + RESTORING
        remove(copy)
        try:
            connection.execute("VACUUM INTO ?", (copy,))
            fsync(copy)
        except BaseException:
            remove(copy)
            raise
        # Let go of the deleted file. Its -wal and -shm are still named after the path: a
        # copy put beside them would be read through them, so they go first.
        pool.disconnect(connection)
        for suffix in _SIDE_FILES:
            remove(path + suffix)
        try:
            os.link(copy, path)  # never over a file that appeared meanwhile
        except FileExistsError:
            raise OSError(
                f"a file appeared at {path} meanwhile: the server now uses that one, and"
                f" what it had stored is in {copy}"
            ) from None
        except OSError:  # no hard links on this file system
            os.rename(copy, path)
        else:
            os.unlink(copy)
        directory = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        pool.connect()  # the copy, in WAL mode again (the pool's openfun)
        return identity(path)

    def _rewritten(self, opened: tuple[int, int] | None) -> None:
        if opened is not None and opened != self._opened:
            self._opened = opened
            log.error(
                "the SQLite database file {path} was deleted while the server ran; it has"
                " been written anew from the open database, and nothing stored was lost",
                path=self.path,
            )
        self.state = OK

    def _notRewritten(self, failure: Any, missing: FileState) -> None:
        why = " ".join(str(failure.value).split()) or type(failure.value).__name__
        self._report(FileState(missing.kind, f"{missing.text}; writing it anew failed: {why}"))

    # -- the log ----------------------------------------------------------------------------

    def _report(self, state: FileState) -> None:
        before, self.state = self.state, state
        if state.kind == "ok":
            if before.kind != "ok":
                log.info("the SQLite database file {path} is in order again", path=self.path)
            return
        now = self._reactor.seconds()
        if state.kind != before.kind or now - self._alarmAt >= ALARM_REPEAT:
            self._alarmAt = now
            if state.kind == "read-only" and not self._exclusive:
                log.critical(
                    "{text}. With sqlite_exclusive = false its shared-memory file is mapped"
                    " into the process, which a write can then kill (SIGBUS)",
                    text=state.text,
                )
            else:
                log.error("{text}", text=state.text)
