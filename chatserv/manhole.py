"""The manhole: an SSH console into the running server, for its administrators.

    twistd -n chatserv --tcp 10001 --manhole 2222 --manhole-keys ~/.ssh/authorized_keys
    ssh -p 2222 admin@localhost

gives a Python prompt inside the server. Its namespace holds the running L{ChatService}
as C{chat} and the helpers listed in C{_HELP} below (C{help_chat()} shows them in the
console): thin wrappers over the service's administration methods, the same ones tests
and admin commands call.

Each helper prints what it found or did and returns the value, so C{n = stats()} can be
used in code. A refusal from the service (no such user, no such room) is shown as one
line and the session goes on.

Security: no manhole unless asked for; it listens on 127.0.0.1 when given a bare port;
every login needs a key listed in an authorized_keys file or a password whose argon2
hash is in a password file; there is no unauthenticated access and no other way in.
Both files are read at start (a problem stops start-up with one line) and re-read when
they change, checked at each login attempt, so keys and passwords can be added or
removed without a restart. Every login and every refused attempt is logged with the
user name, the peer address and the method. The host key is generated on first start
(Ed25519, mode 0600) and kept.

Everything typed at the prompt runs on the reactor thread, inside the server: a slow
statement stalls every user.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import io
import os
import pydoc
import re
import struct
import sys
from collections.abc import Callable
from itertools import chain
from typing import Any

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application.service import IService
from twisted.conch import error as conch_error
from twisted.conch.insults import insults
from twisted.conch.manhole import ColoredManhole, ManholeInterpreter
from twisted.conch.manhole_ssh import TerminalRealm, TerminalSession
from twisted.conch.ssh import keys
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.transport import (
    DISCONNECT_BY_APPLICATION,
    DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
    SSHServerTransport,
)
from twisted.conch.ssh.userauth import SSHUserAuthServer
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from chatserv import __version__
from chatserv.errors import ChatError
from chatserv.listening import Listener
from chatserv.service import CONSOLE
from chatserv.text import sanitize

_log = Logger()


def _warningsAndWorse(event: dict) -> None:
    if event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical):
        globalLogPublisher(event)


# For conch's SSH classes, which log every key exchange, service and disconnect: their
# warnings and errors are kept; logins and logouts are logged here, one line each.
_quietLog = Logger(observer=_warningsAndWorse)

DEFAULT_INTERFACE = "127.0.0.1"
DEFAULT_HOST_KEY = "chatserv_host_key"
# A connection must log in within this many seconds (conch's own limit is 10 hours).
LOGIN_TIMEOUT = 60.0
# Password checks (argon2, ~50 ms of CPU and 64 MiB each) run in the reactor's thread
# pool, at most this many at once, so guessing cannot take all of its threads.
PASSWORD_CHECKS_AT_ONCE = 2

_METHODS = {b"publickey": "key", b"password": "password"}
_KEY_TYPE = re.compile(rb"^(?:ssh-|ecdsa-sha2-|sk-)")


class ManholeConfigError(ValueError):
    """The manhole cannot be set up; the message is one line saying why."""


# -- files ----------------------------------------------------------------------------


def _unreadable(path: str, what: str, e: OSError) -> ManholeConfigError:
    if isinstance(e, FileNotFoundError):
        return ManholeConfigError(f"manhole {what} file {path} does not exist")
    if isinstance(e, IsADirectoryError):
        return ManholeConfigError(f"manhole {what} file {path} is a directory")
    return ManholeConfigError(f"cannot read manhole {what} file {path}: {e.strerror}")


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _unreadable(path, what, e) from None


class _WatchedFile:
    """A file parsed at start and again whenever it changes (checked on each use)."""

    def __init__(self, path: str, what: str, parse: Callable[[str], Any]) -> None:
        self.path = path
        self._what = what
        self._parse = parse
        self._stamp: tuple | None = None
        self._value: Any = None
        self.current()  # a problem at start is a ManholeConfigError for the caller

    def current(self) -> Any:
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise _unreadable(self.path, self._what, e) from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            self._value = self._parse(self.path)
            self._stamp = stamp
        return self._value


def fingerprint(key: keys.Key) -> str:
    """The key's SHA256 fingerprint as OpenSSH shows it (C{ssh-keygen -lf FILE})."""
    digest = hashlib.sha256(key.blob()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def readAuthorizedKeys(path: str) -> list[keys.Key]:
    """The public keys in an OpenSSH authorized_keys file.

    Lines that are not usable keys are logged and skipped, and so are keys with options
    (C{from=...}, C{command=...}): the manhole cannot honour them, so it does not accept
    those keys at all. Raises L{ManholeConfigError} if the file cannot be read or holds
    no usable key.
    """
    found: list[keys.Key] = []
    for number, raw in enumerate(_read(path, "authorized keys").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        fields = line.split()
        if not _KEY_TYPE.match(fields[0]):
            if any(_KEY_TYPE.match(f) for f in fields[1:]):
                why = "has options (from=, command=, ...), which the manhole does not support"
            else:
                why = "is not a public key"
            _log.warn(
                "manhole authorized keys {path}, line {number} {why}; ignored",
                path=path,
                number=number,
                why=why,
            )
            continue
        try:
            key = keys.Key.fromString(b" ".join(fields[:2]))
        except Exception as e:  # conch raises several types for bad key data
            _log.warn(
                "manhole authorized keys {path}, line {number}: unusable key ({error}); ignored",
                path=path,
                number=number,
                error=e,
            )
            continue
        found.append(key if key.isPublic() else key.public())
    if not found:
        raise ManholeConfigError(f"manhole authorized keys file {path} has no usable public key")
    return found


def readPasswordFile(path: str) -> dict[str, str]:
    """The C{user: argon2 hash} entries of a password file (C{USER:HASH} lines).

    Blank lines and lines starting with C{#} are ignored. Raises L{ManholeConfigError}
    for an unreadable file, a malformed line or a file with no entry.
    """
    data = _read(path, "password")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManholeConfigError(f"manhole password file {path} is not UTF-8 text") from None
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"manhole password file {path}, line {number}"
        user, sep, hashed = line.partition(":")
        if not sep or not user or any(c.isspace() for c in user):
            raise ManholeConfigError(
                f"{where}: expected USER:HASH (make one with: chatserv-manhole-passwd USER)"
            )
        try:
            extract_parameters(hashed)
        except InvalidHashError:
            raise ManholeConfigError(
                f"{where}: not an argon2 hash (make one with: chatserv-manhole-passwd USER)"
            ) from None
        if user in users:
            raise ManholeConfigError(f"{where}: user {user} is listed twice")
        users[user] = hashed
    if not users:
        raise ManholeConfigError(f"manhole password file {path} has no USER:HASH line")
    return users


def loadHostKey(path: str) -> keys.Key:
    """The SSH host key in C{path}; if there is no such file, a new Ed25519 key saved there.

    A new key is written in OpenSSH format with mode 0600; its fingerprint is logged.
    Raises L{ManholeConfigError} if the file is unreadable, not an unencrypted private
    key, or cannot be created.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return _createHostKey(path)
    except IsADirectoryError:
        raise ManholeConfigError(f"manhole host key {path} is a directory") from None
    except OSError as e:
        raise ManholeConfigError(f"cannot read manhole host key {path}: {e.strerror}") from None
    try:
        key = keys.Key.fromString(data)
    except keys.EncryptedKeyError:
        raise ManholeConfigError(
            f"manhole host key {path} is encrypted; the manhole needs an unencrypted key"
        ) from None
    except Exception:  # conch raises several types for bad key data
        raise ManholeConfigError(f"manhole host key {path} is not an SSH private key") from None
    if key.isPublic():
        raise ManholeConfigError(
            f"manhole host key {path} is a public key; it must be the private key"
        )
    if os.stat(path).st_mode & 0o077:
        _log.warn("manhole host key {path} is readable by others: chmod 600 it", path=path)
    return key


def _createHostKey(path: str) -> keys.Key:
    data = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made one just now: use it
        return loadHostKey(path)
    except OSError as e:
        raise ManholeConfigError(f"cannot create manhole host key {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        os.unlink(path)
        raise ManholeConfigError(f"cannot write manhole host key {path}: {e.strerror}") from None
    key = keys.Key.fromString(data)
    _log.info(
        "created manhole host key {path}: {type} {fingerprint}",
        path=path,
        type=key.sshType().decode("ascii"),
        fingerprint=fingerprint(key),
    )
    return key


# -- passwords ------------------------------------------------------------------------

_hasher = PasswordHasher()
_unknownUserHash: str | None = None


def hashPassword(password: str | bytes, hasher: PasswordHasher | None = None) -> str:
    """The argon2id hash of C{password}, for a password file line C{USER:HASH}."""
    return (hasher or _hasher).hash(password)


def _verifyPassword(hashed: str | None, password: bytes) -> bool:
    """Blocking: run in a thread."""
    global _unknownUserHash
    if hashed is None:
        # Spend the same time on an unknown user as on a known one.
        if _unknownUserHash is None:
            _unknownUserHash = _hasher.hash(os.urandom(16))
        hashed = _unknownUserHash
        password = b""  # never matches: the hash is of random bytes
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


# The console runs any Python inside the server: its passwords must resist guessing.
MIN_CONSOLE_PASSWORD = 12


def passwdMain(argv: list[str] | None = None) -> int:
    """C{chatserv-manhole-passwd USER}: print a password file line for USER."""
    parser = argparse.ArgumentParser(
        prog="chatserv-manhole-passwd",
        description=(
            "Ask for a password (twice) and print a line for the manhole password file "
            "(--manhole-passwords): USER:ARGON2-HASH. Append it to the file, e.g. "
            "chatserv-manhole-passwd admin >> manhole_passwords. Without a terminal, the "
            "password is the first line of standard input."
        ),
    )
    parser.add_argument("user", metavar="USER", help="the name to log in with")
    args = parser.parse_args(argv)
    if not args.user or ":" in args.user or any(c.isspace() for c in args.user):
        parser.error("USER must be non-empty, without ':' or spaces")
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("chatserv-manhole-passwd: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_CONSOLE_PASSWORD:
        print(
            f"chatserv-manhole-passwd: a console password needs at least "
            f"{MIN_CONSOLE_PASSWORD} characters (it gives full control of the server)",
            file=sys.stderr,
        )
        return 1
    print(f"{args.user}:{hashPassword(password)}")
    return 0


# -- checkers: the only ways in ------------------------------------------------------


@implementer(ICredentialsChecker)
class AuthorizedKeysChecker:
    """Accepts a key listed in an authorized_keys file, for any user name.

    The file is read now (L{ManholeConfigError} if it is unusable) and again whenever it
    changes. Unlike conch's C{SSHPublicKeyChecker}, an unlisted key is refused already
    when the client asks whether it would be accepted.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, path: str, reactor) -> None:
        self._file = _WatchedFile(path, "authorized keys", readAuthorizedKeys)
        self._reactor = reactor

    def requestAvatarId(self, credentials) -> defer.Deferred[bytes]:
        # Looking at the file is disk I/O: done in the thread pool, not the reactor.
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._file.current)
        d.addCallbacks(self._check, self._unusable, callbackArgs=(credentials,))
        return d

    def _unusable(self, failure: Failure):
        failure.trap(ManholeConfigError)
        _log.error("manhole key logins refused: {error}", error=failure.value)
        raise UnauthorizedLogin("authorized keys file unusable")

    def _check(self, authorized: list, credentials) -> bytes:
        try:
            key = keys.Key.fromString(credentials.blob)
        except Exception:
            raise UnauthorizedLogin("unusable key") from None
        if key not in authorized:
            raise UnauthorizedLogin("key not authorized")
        if not credentials.signature:
            raise conch_error.ValidPublicKey()  # "would you take this key?" - yes
        try:
            if key.verify(credentials.signature, credentials.sigData):
                return credentials.username
        except Exception:
            pass
        raise UnauthorizedLogin("bad signature")


@implementer(ICredentialsChecker)
class PasswordFileChecker:
    """Accepts a user name and password matching an argon2 hash in a password file.

    The file is read now (L{ManholeConfigError} if it is unusable) and again whenever it
    changes. Hashes are checked in the reactor's thread pool, never on the reactor
    thread.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: str, reactor) -> None:
        self._file = _WatchedFile(path, "password", readPasswordFile)
        self._reactor = reactor
        self._limit = defer.DeferredSemaphore(PASSWORD_CHECKS_AT_ONCE)

    def requestAvatarId(self, credentials) -> defer.Deferred[bytes]:
        # Reading the file and hashing are both done in the thread pool.
        pool = self._reactor.getThreadPool()
        d = deferToThreadPool(self._reactor, pool, self._file.current)

        def unusable(failure: Failure):
            failure.trap(ManholeConfigError)
            _log.error("manhole password logins refused: {error}", error=failure.value)
            raise UnauthorizedLogin("password file unusable")

        def verify(users: dict):
            nonlocal hashed
            hashed = users.get(credentials.username.decode("utf-8", "replace"))
            return self._limit.run(
                deferToThreadPool,
                self._reactor,
                pool,
                _verifyPassword,
                hashed,
                credentials.password,
            )

        hashed = None
        d.addCallbacks(verify, unusable)

        def checked(ok: bool) -> bytes:
            if not ok:
                raise UnauthorizedLogin("wrong password" if hashed else "unknown user")
            return credentials.username

        return d.addCallback(checked)


# -- the console ------------------------------------------------------------------------

_HELP = """\
The running ChatService is `chat`; its admin methods take the actor first, here
`console` (chat.kick(console, "bob")). Helpers (each prints, and returns the value):
  rooms()                         every room and its member count
  users(room=None)                who is online, or who is in one room
  broadcast(text)                 a server notice to every connection
  rbroadcast(room, text)          a server notice to the members of one room
  tell(nick, text)                a server notice to one user
  kick(nick, reason="")           disconnect a user; their rooms see why
  close_room(room, reason=...)    disconnect everyone in a room
  reset(reason=...)               disconnect everyone and empty every room
  stats()                         counters and gauges
  create_account(nick, password, admin=False)   register an account (the first admin)
  promote(nick), demote(nick)     give or take a registered nickname's admin rights
  reset_password(nick, password), delete_account(nick)   a forgotten password, an account
  rename_account(nick, new_nick)  an account's new name, with its messages and sanctions
  ban(nick, duration=None, reason="", address=False), unban(nick)   (duration in seconds)
  mute(nick, duration=None), unmute(nick)
  backup(path)                    a consistent copy of the SQLite database, made while it runs
  help(users)                     more about one helper; exit() or Ctrl-D leaves
Everything typed here runs inside the server: a slow statement stalls every user."""


class _Shown:
    """The value a helper has just printed, so that the console does not print it again."""

    value: Any = None
    set = False

    def put(self, value: Any) -> Any:
        self.value, self.set = value, True
        return value

    def clear(self) -> None:
        self.value, self.set = None, False


def _report(work, done: str) -> defer.Deferred[str]:
    """Run a service coroutine. The console shows the Deferred and, once it fires, what
    came of it: C{done}, or the refusal in one line."""

    def failed(failure) -> str:
        failure.trap(ChatError)
        return f"refused: {failure.value}"

    return defer.ensureDeferred(work).addCallbacks(lambda _: done, failed)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def namespace(chat) -> dict[str, Any]:
    """The console's namespace: C{chat} (the service) and the helpers over it."""
    shown = _Shown()

    def show(value: Any, text: str) -> Any:
        print(text)
        return shown.put(value)

    def rooms() -> list[tuple[str, int]]:
        """Every room and its member count, as [(name, members), ...]."""
        summary = chat.roomSummary()
        rows = [[f"#{name}", str(members)] for name, members in summary]
        return show(summary, _table(["room", "users"], rows))

    def users(room: str | None = None) -> list[dict]:
        """Who is online (or in room), on every node: a dict per user with nick, address,
        rooms (and node: None here, else the node they are on)."""
        found = chat.userSummary(room)
        now = chat.now()
        rows = [
            [
                u["nick"],
                f"#{u['room']}" if u["room"] else "-",
                " ".join(f"#{r}" for r in u["rooms"] if r != u["room"]) or "-",
                # Another node's user: their address and time online stay on that node.
                u["address"] if u["node"] is None else f"(node {u['node']})",
                _duration(now - u["connected"]) if u["connected"] is not None else "-",
            ]
            for u in found
        ]
        text = _table(["nick", "room", "also in", "address", "online"], rows)
        where = f" in #{room.lstrip('#')}" if room is not None else ""
        return show(found, f"{text}\n({_plural(len(found), 'user')}{where})")

    def broadcast(text: str) -> int:
        """Send a server notice to every connection; returns how many got it."""
        n = chat.broadcast(CONSOLE, text)
        return show(n, f"sent to {_plural(n, 'connection')}{_elsewhere()}")

    def rbroadcast(room: str, text: str) -> int:
        """Send a server notice to the members of room; returns how many got it."""
        n = chat.broadcastRoom(CONSOLE, room, text)
        return show(n, f"sent to {_plural(n, 'member')} of #{room.lstrip('#')}")

    def tell(nick: str, text: str) -> None:
        """Send a server notice to one user."""
        chat.tellUser(CONSOLE, nick, text)
        print(f"told {nick}")

    def kick(nick: str, reason: str = ""):
        """Disconnect a user; their rooms see "kicked: reason"."""
        done = chat.kick(CONSOLE, nick, reason)  # (a Deferred for a cluster's other nodes)
        print(f"kicked {nick}" + (f": {reason}" if reason else ""))
        return done

    def close_room(room: str, reason: str = "room closed") -> int:
        """Disconnect everyone in room (which then disappears); returns how many."""
        n = chat.closeRoom(CONSOLE, room, reason)
        done = f"closed #{room.lstrip('#')}: {_plural(n, 'user')} disconnected{_elsewhere()}"
        return show(n, done)

    def reset(reason: str = "server reset") -> int:
        """Disconnect every connection and empty every room; returns how many."""
        n = chat.reset(CONSOLE, reason)
        return show(n, f"reset: {_plural(n, 'connection')} closed{_elsewhere()}")

    def _elsewhere() -> str:
        # In a cluster the counts are this node's; the other nodes do the same.
        return " here, and on the other nodes" if chat.directory is not None else ""

    def stats() -> dict:
        """Counters and gauges: connections, users, rooms, messages, uptime, ..."""
        values = chat.stats()
        rows = []
        for name, value in values.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in sorted(value.items())) or "-"
            elif isinstance(value, float):
                value = f"{value:.1f}"
            rows.append([name, str(value)])
        return show(values, _table(["stat", "value"], rows))

    def create_account(nick: str, password: str, admin: bool = False) -> defer.Deferred:
        """Register nick with password (admin=True: an admin); shows when it is done."""
        return _report(
            chat.createAccount(CONSOLE, nick, password, admin), f"created the account {nick}"
        )

    def promote(nick: str) -> defer.Deferred:
        """Make a registered nickname an admin; shows when it is done."""
        return _report(chat.setAdmin(CONSOLE, nick, True), f"{nick} is an admin now")

    def demote(nick: str) -> defer.Deferred:
        """Take a registered nickname's admin rights away; shows when it is done."""
        return _report(chat.setAdmin(CONSOLE, nick, False), f"{nick} is no longer an admin")

    def reset_password(nick: str, password: str) -> defer.Deferred:
        """Give an account a new password; shows when it is done."""
        return _report(chat.resetPassword(CONSOLE, nick, password), f"{nick} has a new password")

    def delete_account(nick: str) -> defer.Deferred:
        """Delete an account (and its kept messages); shows when it is done."""
        return _report(chat.deleteAccount(CONSOLE, nick), f"deleted the account {nick}")

    def rename_account(nick: str, new_nick: str) -> defer.Deferred:
        """Give an account another name (its kept messages, bans and mutes go with it)."""
        return _report(
            chat.renameAccount(CONSOLE, nick, new_nick), f"renamed the account {nick} to {new_nick}"
        )

    def ban(
        nick: str, duration: float | None = None, reason: str = "", address: bool = False
    ) -> defer.Deferred:
        """Ban a nickname for duration seconds (None: until lifted); address=True bans the
        address it is online from too."""
        return _report(chat.ban(CONSOLE, nick, duration, reason, address=address), f"banned {nick}")

    def unban(nick: str) -> defer.Deferred:
        """Lift a ban; shows when it is done."""
        return _report(chat.lift(CONSOLE, "ban", nick), f"unbanned {nick}")

    def mute(nick: str, duration: float | None = None) -> defer.Deferred:
        """Mute a nickname for duration seconds (None: until lifted)."""
        return _report(chat.mute(CONSOLE, nick, duration), f"muted {nick}")

    def unmute(nick: str) -> defer.Deferred:
        """Lift a mute; shows when it is done."""
        return _report(chat.lift(CONSOLE, "mute", nick), f"unmuted {nick}")

    def backup(path: str) -> defer.Deferred:
        """Copy the SQLite database, whole and consistent, to the new file path while the
        server runs (other programs cannot open it meanwhile); shows when it is done."""
        return _report(chat.store.backup(path), f"backed up to {os.path.abspath(path)}")

    def help_chat() -> None:
        """List the chat helpers."""
        print(_HELP)

    def help(*args) -> None:
        """help() lists the chat helpers; help(thing) explains thing."""
        if not args:
            help_chat()
            return
        # pydoc's interactive help would read the server's standard input: never.
        pydoc.Helper(io.StringIO(), sys.stdout).help(args[0])

    def exit() -> None:
        """Leave the console (Ctrl-D does the same)."""
        raise SystemExit()

    return {
        "chat": chat,
        "console": CONSOLE,  # the actor chat's admin methods take first: chat.kick(console, ...)
        "rooms": rooms,
        "users": users,
        "broadcast": broadcast,
        "rbroadcast": rbroadcast,
        "tell": tell,
        "kick": kick,
        "close_room": close_room,
        "reset": reset,
        "stats": stats,
        "create_account": create_account,
        "reset_password": reset_password,
        "delete_account": delete_account,
        "rename_account": rename_account,
        "promote": promote,
        "demote": demote,
        "ban": ban,
        "unban": unban,
        "mute": mute,
        "unmute": unmute,
        "backup": backup,
        "help_chat": help_chat,
        "help": help,
        "exit": exit,
        "quit": exit,
        "__shown__": shown,
        "__doc__": _HELP,
    }


class _ChatInterpreter(ManholeInterpreter):
    """Shows a chat refusal as one line, and does not repeat what a helper printed."""

    def __init__(self, handler, locals) -> None:
        super().__init__(handler, locals)
        self._shown = locals.get("__shown__")

    def runsource(self, source, filename="<console>", symbol="single"):
        if self._shown is not None:
            self._shown.clear()
        return super().runsource(source, filename, symbol)

    def runcode(self, code) -> None:
        try:
            super().runcode(code)
        except SystemExit:
            self.handler.leaving = True

    def displayhook(self, obj) -> None:
        shown = self._shown
        if shown is not None and shown.set and obj is shown.value:
            self.locals["_"] = obj
            return
        super().displayhook(obj)

    def excepthook(self, excType, excValue, excTraceback) -> None:
        if issubclass(excType, ChatError):
            self.write(f"{excType.__name__}: {excValue}\n")
        else:
            super().excepthook(excType, excValue, excTraceback)


class ChatManhole(ColoredManhole):
    """The Python prompt, with a greeting; the screen is not cleared on entry or exit."""

    leaving = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.interpreter = _ChatInterpreter(self, self.namespace)

    def terminalSize(self, width: int, height: int) -> None:
        # RecvLine clears the screen here (the greeting with it); only note the size.
        self.width, self.height = width, height

    def initializeScreen(self) -> None:
        self.terminal.write(
            f"chatserv {__version__} manhole. The server is `chat`; help() lists the "
            "helpers; Ctrl-D leaves.\n"
        )
        self.terminal.write(self.ps[self.pn])
        self.setInsertMode()

    def lineReceived(self, line: bytes) -> None:
        more = self.interpreter.push(line)
        if self.leaving:
            self.terminal.loseConnection()
            return
        self.pn = bool(more)
        if self._needsNewline():
            self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])


class _Terminal(insults.ServerProtocol):
    def loseConnection(self) -> None:
        # insults resets the whole terminal here, wiping the session from the screen;
        # undo only what the prompt changed.
        self.resetModes([insults.modes.IRM])
        self.write(b"\n")
        self.transport.loseConnection()


class _Pipe:
    """One side's view of the other: where the channel and the terminal write."""

    def __init__(self, write: Callable[[bytes], None], close: Callable[[], None]) -> None:
        self.write = write
        self.loseConnection = close

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))


class _ConsoleSession(TerminalSession):
    """conch's TerminalSession, also working without a pty, on EOF and on resizes, and
    ending the shell with an exit status (OpenSSH's ssh exits 255 without one)."""

    width, height = 80, 24  # when the client asks for no pty
    _channel = None
    _terminal = None

    def openShell(self, proto) -> None:
        self._channel = proto.session
        terminal = self._terminal = self.chainedProtocolFactory()
        proto.makeConnection(_Pipe(terminal.dataReceived, self._end))
        terminal.makeConnection(_Pipe(proto.write, self._end))
        terminal.terminalProtocol.terminalSize(self.width, self.height)

    def _end(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.conn.sendRequest(channel, b"exit-status", struct.pack(">L", 0))
            channel.loseConnection()

    def windowChanged(self, newWindowSize) -> None:
        self.height, self.width = newWindowSize[:2]
        if self._terminal is not None and self._terminal.terminalProtocol is not None:
            self._terminal.terminalProtocol.terminalSize(self.width, self.height)

    def eofReceived(self) -> None:
        self._end()

    def closed(self) -> None:
        self._channel = None
        terminal, self._terminal = self._terminal, None
        if terminal is not None:
            terminal.connectionLost(Failure(ConnectionDone("the SSH channel was closed")))


class _ConsoleRealm(TerminalRealm):
    sessionFactory = _ConsoleSession

    def __init__(self, names: dict[str, Any]) -> None:
        super().__init__()
        self.chainedProtocolFactory = lambda: _Terminal(ChatManhole, names)


# -- SSH ------------------------------------------------------------------------------


def _peer(transport) -> str:
    address = transport.getPeer()
    host = getattr(address, "host", None)
    return f"{host}:{address.port}" if host is not None else str(address)


def _keyOf(data: bytes) -> str:
    """The fingerprint of the key in a publickey auth request, for the log."""
    try:
        _algorithm, blob, _rest = getNS(data[1:], 2)
        return fingerprint(keys.Key.fromString(blob))
    except Exception:
        return "(unreadable key)"


class _UserAuth(SSHUserAuthServer):
    """Logs every login and every refused attempt: user, peer, method."""

    _log = _quietLog

    def serviceStarted(self) -> None:
        self.clock = self.transport.factory.clock
        self.loginTimeout = self.transport.factory.loginTimeout
        super().serviceStarted()

    def tryAuth(self, kind: bytes, user: bytes, data: bytes):
        d = super().tryAuth(kind, user, data)
        method = _METHODS.get(kind)
        if method is None:  # "none": the client asking which methods there are
            return d
        who = sanitize(user.decode("utf-8", "replace"))[:64]
        peer = _peer(self.transport.transport)
        detail = f" {_keyOf(data)}" if kind == b"publickey" else ""

        def loggedIn(result):
            _log.info(
                "manhole login: {user} from {peer} by {method}{detail}",
                user=who,
                peer=peer,
                method=method,
                detail=detail,
            )
            self.transport.loggedIn(f"{who} from {peer}")
            return result

        def refused(failure):
            if failure.check(conch_error.IgnoreAuthentication, conch_error.NotEnoughAuthentication):
                return failure  # a key the client may use, asked about before signing
            reason = failure.getErrorMessage()
            if failure.check(conch_error.ConchError) and kind not in self.supportedAuthentications:
                reason = "method not enabled"
            _log.warn(
                "manhole login refused: {user} from {peer} by {method}{detail}: {reason}",
                user=who,
                peer=peer,
                method=method,
                detail=detail,
                reason=reason,
            )
            return failure

        return d.addCallbacks(loggedIn, refused)


class _Connection(SSHConnection):
    _log = _quietLog


class _Transport(SSHServerTransport):
    """Tracked by its factory, and closed if it has not logged in in time."""

    _log = _quietLog
    _deadline = None
    _who: str | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.connections.add(self)
        self._deadline = self.factory.clock.callLater(self.factory.loginTimeout, self._tooSlow)

    def loggedIn(self, who: str) -> None:
        self._who = who
        self._cancelDeadline()

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        if reasonCode != DISCONNECT_BY_APPLICATION:  # the usual way to leave
            super().receiveError(reasonCode, description)

    def _tooSlow(self) -> None:
        self._deadline = None
        _log.info(
            "manhole: closing {peer}, not logged in after {timeout:g} s",
            peer=_peer(self.transport),
            timeout=self.factory.loginTimeout,
        )
        self.sendDisconnect(DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, b"you took too long")

    def _cancelDeadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def connectionLost(self, reason) -> None:
        self._cancelDeadline()
        try:
            super().connectionLost(reason)
        finally:
            self.factory.lost(self)
            if self._who is not None:
                _log.info("manhole session ended: {who}", who=self._who)


class ManholeFactory(SSHFactory):
    """An SSH server for the console: one host key, a portal, tracked connections."""

    protocol = _Transport
    services = {b"ssh-userauth": _UserAuth, b"ssh-connection": _Connection}
    noisy = False  # no "Starting factory <...>" lines

    def __init__(
        self, portal: Portal, hostKey: keys.Key, clock, loginTimeout: float = LOGIN_TIMEOUT
    ) -> None:
        # Per instance: conch's ConchFactory keeps these dicts on the class.
        self.portal = portal
        self.publicKeys = {hostKey.sshType(): hostKey.public()}
        self.privateKeys = {hostKey.sshType(): hostKey}
        self.primes = None  # no moduli file: fixed DH groups and curves only
        self.clock = clock
        self.loginTimeout = loginTimeout
        self.connections: set[_Transport] = set()
        self._allClosed: list[defer.Deferred] = []

    def buildProtocol(self, addr):
        # SSHFactory.buildProtocol, without its log line on every connection about the
        # missing moduli file.
        t = Factory.buildProtocol(self, addr)
        t.supportedPublicKeys = list(
            chain.from_iterable(k.supportedSignatureAlgorithms() for k in self.privateKeys.values())
        )
        t.supportedKeyExchanges = [k for k in t.supportedKeyExchanges if b"group-exchange" not in k]
        return t

    def lost(self, transport: _Transport) -> None:
        self.connections.discard(transport)
        if not self.connections:
            waiting, self._allClosed = self._allClosed, []
            for d in waiting:
                d.callback(None)

    def disconnectAll(self) -> defer.Deferred[None]:
        """Close every connection; fires when they are all gone."""
        if not self.connections:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._allClosed.append(d)
        for t in list(self.connections):
            t.loseConnection()
        return d


@implementer(IStreamServerEndpoint)
class _Announced:
    def __init__(self, endpoint: IStreamServerEndpoint, service: ManholeService) -> None:
        self._endpoint = endpoint
        self._service = service

    def listen(self, factory):
        def announce(port):
            self._service.port = port
            address = port.getHost()
            host = getattr(address, "host", None)
            key = self._service.hostKey
            _log.info(
                "manhole (SSH) listening on {address}, host key {type} {fingerprint}",
                address=f"{host}:{address.port}" if host is not None else address,
                type=key.sshType().decode("ascii"),
                fingerprint=fingerprint(key),
            )
            if host is not None and not (host.startswith("127.") or host == "::1"):
                _log.warn(
                    "the manhole listens on {host}, not only on this machine; prefer "
                    "127.0.0.1 and an SSH tunnel",
                    host=host,
                )
            return port

        return self._endpoint.listen(factory).addCallback(announce)


class ManholeService(Listener):
    """The manhole's listener; stopping it also closes the consoles still open."""

    name = "manhole"
    port = None  # the listening port, once listening

    def __init__(self, endpoint, factory: ManholeFactory, description: str, hostKey) -> None:
        super().__init__(_Announced(endpoint, self), factory, description, "the manhole")
        self.description = description
        self.hostKey = hostKey

    def stopService(self):
        stopped = super().stopService()
        return defer.gatherResults([stopped, self.factory.disconnectAll()])


def manholeEndpointDescription(value: str | int) -> str:
    """A bare port becomes C{tcp:PORT:interface=127.0.0.1}; anything else is kept."""
    text = str(value).strip()
    if text.isascii() and text.isdigit():
        port = int(text)
        if port > 65535:
            raise ManholeConfigError(f"manhole port {port} is out of range (0-65535)")
        return f"tcp:{port}:interface={DEFAULT_INTERFACE}"
    return text


def makeManholeService(
    reactor,
    chat,
    endpointDescription: str | int,
    authorizedKeys: str | None,
    passwords: str | None,
    hostKey: str = DEFAULT_HOST_KEY,
) -> IService:
    """The SSH manhole: a console into C{chat} at C{endpointDescription}.

    @param endpointDescription: a port (listens on 127.0.0.1 only) or a Twisted server
        endpoint description, e.g. C{tcp:2222:interface=127.0.0.1}.
    @param authorizedKeys: an OpenSSH authorized_keys file; any key in it logs in, under
        any user name. C{None}: no key logins.
    @param passwords: a file of C{USER:ARGON2-HASH} lines (see L{passwdMain}).
        C{None}: no password logins.
    @param hostKey: the server's SSH private key file; created (Ed25519, mode 0600) if
        it does not exist.

    Both credential files are read now and re-read when they change. Everything is
    checked here, before anything listens.

    @raise ManholeConfigError: with a one-line reason: no credential file, a missing,
        unreadable or unusable file, a bad endpoint.
    """
    from twisted.internet.endpoints import serverFromString

    if authorizedKeys is None and passwords is None:
        raise ManholeConfigError(
            "the manhole needs --manhole-keys FILE or --manhole-passwords FILE"
        )
    description = manholeEndpointDescription(endpointDescription)
    try:
        endpoint = serverFromString(reactor, description)
    except Exception as e:  # serverFromString raises several types for bad input
        raise ManholeConfigError(f"bad manhole endpoint {description!r}: {e}") from None
    checkers: list[ICredentialsChecker] = []
    if authorizedKeys is not None:
        checkers.append(AuthorizedKeysChecker(str(authorizedKeys), reactor))
    if passwords is not None:
        checkers.append(PasswordFileChecker(str(passwords), reactor))
    key = loadHostKey(str(hostKey))
    portal = Portal(_ConsoleRealm(namespace(chat)), checkers)
    factory = ManholeFactory(portal, key, clock=reactor)
    return ManholeService(endpoint, factory, description, key)


__all__ = [
    "DEFAULT_HOST_KEY",
    "AuthorizedKeysChecker",
    "ManholeConfigError",
    "ManholeFactory",
    "ManholeService",
    "PasswordFileChecker",
    "fingerprint",
    "hashPassword",
    "loadHostKey",
    "makeManholeService",
    "manholeEndpointDescription",
    "namespace",
    "passwdMain",
    "readAuthorizedKeys",
    "readPasswordFile",
]

if __name__ == "__main__":
    sys.exit(passwdMain())
