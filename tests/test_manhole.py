"""The SSH manhole over real sockets, logged into with real SSH clients.

paramiko (in threads, so the reactor keeps serving) runs helpers in the console and the
effects are checked on line clients; OpenSSH's ssh, where installed, checks the everyday
way in.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest
import pytest_twisted
from argon2 import PasswordHasher
from clients import connectLine, eventually
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher

from chatserv import manhole
from chatserv.config import Settings
from chatserv.manhole import ManholeConfigError, makeManholeService
from chatserv.protocols.line import LineChatFactory
from chatserv.service import ChatService

TIMEOUT = 5.0
PASSWORD = "correct horse battery staple"
# Cheap parameters: the server verifies with whatever parameters the hash names.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|[A-Za-z])")


def makeKey(directory: Path, name: str) -> tuple[Path, bytes]:
    """An Ed25519 key pair: the private key file (OpenSSH format) and the public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = directory / name
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return path, public + f" {name}@test".encode()


class Console:
    """One interactive manhole session over paramiko; every call runs in a thread."""

    def __init__(self, client: paramiko.SSHClient, channel: paramiko.Channel) -> None:
        self.client = client
        self.channel = channel
        self.hostKey = client.get_transport().get_remote_server_key()
        self._n = 0
        self._data = b""

    def _readUntil(self, done) -> str:
        deadline = time.monotonic() + TIMEOUT
        while True:
            text = _ANSI.sub("", self._data.decode("utf-8", "replace"))
            if done(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"console never answered; got {text!r}")
            chunk = self.channel.recv(65536)
            if not chunk:
                raise ConnectionError(f"console closed; got {text!r}")
            self._data += chunk

    def _greeting(self) -> str:
        text = self._readUntil(lambda t: t.endswith(">>> "))
        self._data = b""
        return text

    def _run(self, line: str) -> str:
        self._n += 1
        marker = f"--done-{self._n}--"
        # The marker is printed, not typed, so the echo of what was typed cannot match.
        self.channel.sendall(f'{line}\rprint("--done-" + "{self._n}--")\r'.encode())
        text = self._readUntil(lambda t: marker in t and t.endswith(">>> "))
        self._data = b""
        lines = text[: text.index(marker)].removesuffix("\r\n").split("\r\n")
        # lines[0] echoes the command, lines[-1] the print; the output is in between.
        return "\n".join(lines[1:-1])

    async def greeting(self) -> str:
        return await deferToThread(self._greeting)

    async def run(self, line: str) -> str:
        """Type C{line}; its output, without terminal escapes or the echo."""
        return await deferToThread(self._run, line)

    async def leave(self, keys: bytes = b"\x04") -> None:
        """Type C{keys} (Ctrl-D) and wait for the server to end the session."""

        def leave():
            self.channel.sendall(keys)
            deadline = time.monotonic() + TIMEOUT
            while self.channel.recv(65536):
                assert time.monotonic() < deadline, "the session did not end"

        await deferToThread(leave)

    def close(self) -> None:
        self.client.close()


def _open(port, user, keyFile, password, pty) -> Console:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            "127.0.0.1",
            port,
            username=user,
            key_filename=str(keyFile) if keyFile else None,
            password=password,
            look_for_keys=False,
            allow_agent=False,
            timeout=TIMEOUT,
            banner_timeout=TIMEOUT,
            auth_timeout=TIMEOUT,
        )
        channel = client.get_transport().open_session(timeout=TIMEOUT)
        if pty:
            channel.get_pty(width=100, height=30)
        channel.invoke_shell()
        channel.settimeout(TIMEOUT)
    except BaseException:
        client.close()
        raise
    return Console(client, channel)


@dataclass
class Manhole:
    chat: ChatService
    tcp: int
    service: object
    dir: Path
    keyFile: Path
    otherKeyFile: Path
    authorizedKeys: Path
    passwords: Path
    hostKey: Path
    logs: list
    clients: list = field(default_factory=list)
    consoles: list = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.service.port.getHost().port

    async def line(self, nick: str, room: str | None = None):
        client = await connectLine(self.tcp)
        self.clients.append(client)
        await client.until("Type a nickname")
        client.say(nick)
        await client.until("#lobby users")
        if room:
            client.say(f"/join {room}")
            await client.until(f"#{room} users")
        return client

    async def console(
        self, user="admin", keyFile=None, password=None, pty=True, port=None
    ) -> Console:
        if keyFile is None and password is None:
            keyFile = self.keyFile
        console = await deferToThread(_open, port or self.port, user, keyFile, password, pty)
        self.consoles.append(console)
        assert "manhole" in await console.greeting()
        return console

    def logged(self, level: str | None = None) -> list[str]:
        return [text for lvl, text in self.logs if level is None or lvl == level]


@pytest.fixture
def logs():
    lines: list[tuple[str, str]] = []

    def observe(event):
        if event.get("log_namespace") == "chatserv.manhole":
            lines.append((event["log_level"].name, formatEvent(event)))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest_twisted.async_yield_fixture
async def server(tmp_path, logs):
    from twisted.internet import reactor

    keyFile, public = makeKey(tmp_path, "admin_key")
    otherKeyFile, _ = makeKey(tmp_path, "other_key")
    authorizedKeys = tmp_path / "authorized_keys"
    authorizedKeys.write_bytes(b"# the admins\n" + public + b"\n")
    passwords = tmp_path / "passwords"
    passwords.write_text(f"# user:hash\nroot:{manhole.hashPassword(PASSWORD, FAST_HASHER)}\n")
    hostKey = tmp_path / "host_key"

    chat = ChatService(Settings(), clock=reactor)
    chat.startService()
    tcpPort = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        LineChatFactory(chat)
    )
    service = makeManholeService(
        reactor, chat, "tcp:0:interface=127.0.0.1", authorizedKeys, passwords, hostKey
    )
    service.privilegedStartService()
    service.startService()
    srv = Manhole(
        chat,
        tcpPort.getHost().port,
        service,
        tmp_path,
        keyFile,
        otherKeyFile,
        authorizedKeys,
        passwords,
        hostKey,
        logs,
    )
    yield srv
    for console in srv.consoles:
        await deferToThread(console.close)
    await service.stopService()
    await tcpPort.stopListening()
    for client in srv.clients:
        await client.hangUp()
    await eventually(lambda: not chat.sessions)
    await chat.stopService()


# -- the helpers, with their effect on chat users --------------------------------------


@pytest_twisted.ensureDeferred
async def test_key_login_sees_the_chat_users(server):
    await server.line("alice")
    console = await server.console()
    out = await console.run("users()")
    assert re.search(r"^alice\s+#lobby\s+-\s+tcp 127\.0\.0\.1:\d+\s+\d+s$", out, re.M), out
    assert out.endswith("(1 user)")
    assert await console.run("rooms()") == "room    users\n#lobby  1"
    # The value is returned; what the helper printed is not printed a second time.
    assert await console.run("r = rooms()") == "room    users\n#lobby  1"
    assert await console.run("r") == "[('lobby', 1)]"
    assert (await console.run("[u['nick'] for u in users()]")).endswith("['alice']")
    assert await console.run("chat.findUser('alice').nick") == "'alice'"
    (login,) = server.logged("info")[-1:]
    assert re.fullmatch(
        r"manhole login: admin from 127\.0\.0\.1:\d+ by key SHA256:[A-Za-z0-9+/]{43}", login
    )


@pytest_twisted.ensureDeferred
async def test_tell_reaches_the_user(server):
    alice = await server.line("alice")
    console = await server.console()
    assert await console.run('tell("alice", "hi from the console")') == "told alice"
    assert (await alice.until("console")).endswith("-!- hi from the console")


@pytest_twisted.ensureDeferred
async def test_kick_disconnects_and_the_room_sees_why(server):
    alice = await server.line("alice")
    bob = await server.line("bob")
    console = await server.console()
    assert await console.run('kick("alice", "bye")') == "kicked alice: bye"
    assert (await alice.until("you were")).endswith("-!- disconnected: you were kicked: bye")
    await alice.closed
    assert (await bob.until("has left")).endswith("#lobby <-- alice has left (kicked: bye)")
    assert server.chat.findUser("alice") is None


@pytest_twisted.ensureDeferred
async def test_close_room_disconnects_its_members(server):
    alice = await server.line("alice", room="dev")
    carol = await server.line("carol", room="dev")
    bob = await server.line("bob")
    console = await server.console()
    out = await console.run('close_room("dev")')
    assert out == "closed #dev: 2 users disconnected"
    for member in (alice, carol):
        assert (await member.until("was closed")).endswith(
            "-!- disconnected: #dev was closed (room closed)"
        )
        await member.closed
    assert await console.run("rooms()") == "room    users\n#lobby  1"
    bob.say("/who")
    assert (await bob.until("users (")).endswith("#lobby users (1): bob")


@pytest_twisted.ensureDeferred
async def test_broadcast_and_room_broadcast(server):
    alice = await server.line("alice")
    bob = await server.line("bob", room="dev")
    console = await server.console()
    assert await console.run('rbroadcast("dev", "dev only")') == "sent to 1 member of #dev"
    assert await console.run('broadcast("maintenance at five")') == "sent to 2 connections"
    assert (await bob.until("dev only")).endswith("dev only")
    assert (await bob.until("maintenance")).endswith("-!- maintenance at five")
    # alice's next notice is the broadcast: the room one never reached her.
    assert (await alice.until("-!-")).endswith("-!- maintenance at five")
    assert not any("dev only" in line for line in alice.history)


@pytest_twisted.ensureDeferred
async def test_reset_closes_everyone_and_stats_count(server):
    alice = await server.line("alice")
    bob = await server.line("bob", room="dev")
    console = await server.console()
    out = await console.run('s = stats(); s["users"], s["rooms"], s["connections_by_protocol"]')
    assert re.search(r"^connections_by_protocol\s+tcp 2$", out, re.M), out
    assert out.splitlines()[-1] == "(2, 2, {'tcp': 2})"
    assert await console.run("reset()") == "reset: 2 connections closed"
    for client in (alice, bob):
        assert (await client.until("-!- disconnected")).endswith("-!- disconnected: server reset")
        await client.closed
    assert await console.run("rooms()") == "room    users\n#lobby  0"
    assert (await console.run('stats()["users"]')).endswith("\n0")


@pytest_twisted.ensureDeferred
async def test_service_refusals_are_one_line_and_the_session_goes_on(server):
    console = await server.console()
    assert await console.run('kick("nobody")') == 'NoSuchUser: no user "nobody" is online'
    assert await console.run('users("nowhere")') == "NoSuchRoom: there is no room #nowhere"
    assert "ZeroDivisionError" in await console.run("1/0")  # other errors: a traceback
    out = await console.run("help(tell)")
    assert "tell(nick: 'str', text: 'str') -> 'None'" in out
    assert "Send a server notice to one user." in out
    assert "close_room(room, reason=...)" in await console.run("help()")
    assert await console.run("1 + 1") == "2"


@pytest_twisted.ensureDeferred
async def test_leaving_and_a_session_without_a_pty(server):
    console = await server.console(pty=False)
    assert await console.run("rooms()") == "room    users\n#lobby  0"
    await console.leave(b"exit()\r")
    console = await server.console()
    await console.leave()  # Ctrl-D
    for console in server.consoles:  # the channels are closed; now the connections
        await deferToThread(console.close)
    await eventually(lambda: not server.service.factory.connections)
    assert sum("manhole session ended: admin" in line for line in server.logged()) == 2


# -- authentication ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_wrong_key_is_refused_and_logged(server):
    with pytest.raises(paramiko.AuthenticationException):
        await server.console(user="mallory", keyFile=server.otherKeyFile)
    (refusal,) = server.logged("warn")
    assert re.fullmatch(
        r"manhole login refused: mallory from 127\.0\.0\.1:\d+ by key SHA256:\S+: "
        r"key not authorized",
        refusal,
    )
    assert not any(line.startswith("manhole login:") for line in server.logged())


@pytest_twisted.ensureDeferred
async def test_password_login_and_a_wrong_password(server):
    with pytest.raises(paramiko.AuthenticationException):
        await server.console(user="root", password="hunter2-not-it")
    with pytest.raises(paramiko.AuthenticationException):
        await server.console(user="nobody", password=PASSWORD)
    refusals = server.logged("warn")
    assert len(refusals) == 2
    assert re.fullmatch(
        r"manhole login refused: root from 127\.0\.0\.1:\d+ by password: wrong password",
        refusals[0],
    )
    assert "nobody from" in refusals[1] and refusals[1].endswith("unknown user")

    console = await server.console(user="root", password=PASSWORD)
    assert await console.run("rooms()") == "room    users\n#lobby  0"
    assert re.fullmatch(
        r"manhole login: root from 127\.0\.0\.1:\d+ by password", server.logged("info")[-1]
    )
    assert not any("hunter2" in line or PASSWORD in line for line in server.logged())


@pytest_twisted.ensureDeferred
async def test_keys_and_passwords_are_reread_when_the_files_change(server):
    with pytest.raises(paramiko.AuthenticationException):
        await server.console(keyFile=server.otherKeyFile)
    public = paramiko.Ed25519Key.from_private_key_file(str(server.otherKeyFile))
    with open(server.authorizedKeys, "a") as f:
        f.write(f"{public.get_name()} {public.get_base64()} other\n")
    console = await server.console(keyFile=server.otherKeyFile)
    assert await console.run("1") == "1"

    server.passwords.write_text(f"admin:{manhole.hashPassword('new', FAST_HASHER)}\n")
    with pytest.raises(paramiko.AuthenticationException):
        await server.console(user="root", password=PASSWORD)
    await server.console(user="admin", password="new")


@pytest_twisted.ensureDeferred
async def test_stopping_the_service_closes_open_consoles(server):
    console = await server.console()
    await server.service.stopService()
    await deferToThread(lambda: console.channel.recv(65536))  # returns at the close
    assert not server.service.factory.connections


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_stops_start_up_with_one_line(server):
    from twisted.internet import reactor

    taken = f"tcp:{server.tcp}:interface=127.0.0.1"
    service = makeManholeService(
        reactor, server.chat, taken, server.authorizedKeys, None, server.hostKey
    )
    with pytest.raises(SystemExit) as info:
        service.privilegedStartService()
    assert str(info.value) == (
        f"chatserv: error: cannot listen for the manhole on {taken}: Address already in use"
    )


# -- host key and listening ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_host_key_is_made_once_and_kept(server, tmp_path):
    from twisted.internet import reactor

    mode = stat.S_IMODE(os.stat(server.hostKey).st_mode)
    assert mode == 0o600
    onFile = paramiko.Ed25519Key.from_private_key_file(str(server.hostKey))
    first = await server.console()
    assert first.hostKey.fingerprint == onFile.fingerprint
    assert first.hostKey.get_name() == "ssh-ed25519"
    created = [line for line in server.logged() if line.startswith("created")]
    assert created == [
        f"created manhole host key {server.hostKey}: ssh-ed25519 {onFile.fingerprint}"
    ]

    # A second server with the same file: the same key, and no new one made.
    again = makeManholeService(
        reactor,
        server.chat,
        "tcp:0:interface=127.0.0.1",
        server.authorizedKeys,
        None,
        server.hostKey,
    )
    again.privilegedStartService()
    again.startService()
    try:
        second = await server.console(port=again.port.getHost().port)
        assert second.hostKey.fingerprint == onFile.fingerprint
        await second.leave()
    finally:
        await again.stopService()
    assert len([line for line in server.logged() if line.startswith("created")]) == 1


@pytest_twisted.ensureDeferred
async def test_a_bare_port_listens_on_localhost_only(tmp_path, logs):
    from twisted.internet import reactor

    assert manhole.manholeEndpointDescription("2222") == "tcp:2222:interface=127.0.0.1"
    assert manhole.manholeEndpointDescription(2222) == "tcp:2222:interface=127.0.0.1"
    _, public = makeKey(tmp_path, "k")
    (tmp_path / "keys").write_bytes(public + b"\n")
    service = makeManholeService(
        reactor, ChatService(clock=reactor), "0", tmp_path / "keys", None, tmp_path / "hk"
    )
    service.privilegedStartService()
    service.startService()
    try:
        assert service.port.getHost().host == "127.0.0.1"
        port = service.port.getHost().port

        # Only keys are configured: passwords are not even offered.
        def withPassword():
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            try:
                client.connect(
                    "127.0.0.1", port, username="admin", password="x", look_for_keys=False,
                    allow_agent=False, timeout=TIMEOUT, auth_timeout=TIMEOUT,
                )  # fmt: skip
            finally:
                client.close()

        with pytest.raises(paramiko.BadAuthenticationType) as info:
            await deferToThread(withPassword)
        assert info.value.allowed_types == ["publickey"]

        # A connection that does not log in in time is closed.
        service.factory.loginTimeout = 0.2
        idle = await connectLine(port)
        assert (await idle.next()).startswith("SSH-2.0-")
        await idle.closed
    finally:
        await service.stopService()
    lines = [line for _, line in logs]
    assert any(line.startswith("manhole (SSH) listening on 127.0.0.1:") for line in lines)
    assert any(line.endswith("by password: method not enabled") for line in lines), lines
    assert any(line.endswith("not logged in after 0.2 s") for line in lines), lines


# -- OpenSSH, the client admins will use ---------------------------------------------------


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH's ssh is not installed")
@pytest_twisted.ensureDeferred
async def test_openssh_client(server):
    alice = await server.line("alice")
    known = server.dir / "known_hosts"
    onFile = paramiko.Ed25519Key.from_private_key_file(str(server.hostKey))
    known.write_text(f"[127.0.0.1]:{server.port} {onFile.get_name()} {onFile.get_base64()}\n")
    command = [
        "ssh", "-tt", "-p", str(server.port), "-i", str(server.keyFile),
        "-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
        "admin@127.0.0.1",
    ]  # fmt: skip

    def run():
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            # One keystroke batch at a time, as a person types.
            for keys in (b'tell("alice", "via openssh")\r', b"users()\r", b"\x04"):
                time.sleep(0.2)
                process.stdin.write(keys)
                process.stdin.flush()
            out, _ = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        return process.returncode, _ANSI.sub("", out.decode("utf-8", "replace"))

    code, out = await deferToThread(run)
    assert code == 0, out
    assert "told alice" in out
    assert re.search(r"^alice\s+#lobby", out, re.M), out
    assert (await alice.until("via openssh")).endswith("-!- via openssh")


# -- configuration errors: one line each ---------------------------------------------------


def _make(tmp_path, keys=None, passwords=None, hostKey=None, endpoint="0"):
    from twisted.internet.testing import MemoryReactor

    return makeManholeService(
        MemoryReactor(),
        ChatService(clock=MemoryReactor()),
        endpoint,
        keys,
        passwords,
        hostKey or tmp_path / "host_key",
    )


def _error(tmp_path, **kwargs) -> str:
    with pytest.raises(ManholeConfigError) as info:
        _make(tmp_path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_no_credentials_no_manhole(tmp_path):
    assert _error(tmp_path) == "the manhole needs --manhole-keys FILE or --manhole-passwords FILE"
    assert not (tmp_path / "host_key").exists()


def test_authorized_keys_errors(tmp_path, logs):
    missing = tmp_path / "nope"
    assert (
        _error(tmp_path, keys=missing) == f"manhole authorized keys file {missing} does not exist"
    )
    assert (
        _error(tmp_path, keys=tmp_path) == f"manhole authorized keys file {tmp_path} is a directory"
    )
    bad = tmp_path / "bad_keys"
    _, public = makeKey(tmp_path, "k")
    bad.write_bytes(
        b'# only\n\nnot a key\nfrom="10.0.0.1" ' + public + b"\nssh-ed25519 AAAAbroken\n"
    )
    assert (
        _error(tmp_path, keys=bad) == f"manhole authorized keys file {bad} has no usable public key"
    )
    warnings = [line for level, line in logs if level == "warn"]
    assert f"manhole authorized keys {bad}, line 3 is not a public key; ignored" in warnings
    assert any("line 4 has options" in w for w in warnings)
    assert any("line 5: unusable key" in w for w in warnings)
    # One good line is enough; the bad ones are skipped.
    bad.write_bytes(bad.read_bytes() + public + b"\n")
    assert len(manhole.readAuthorizedKeys(str(bad))) == 1


def test_password_file_errors(tmp_path):
    good = manhole.hashPassword("pw", FAST_HASHER)
    path = tmp_path / "passwords"
    for text, reason in [
        ("# just a comment\n\n", f"manhole password file {path} has no USER:HASH line"),
        (
            f"admin:{good}\njust-a-name\n",
            f"manhole password file {path}, line 2: expected USER:HASH "
            "(make one with: chatserv-manhole-passwd USER)",
        ),
        (
            "admin:plaintext\n",
            f"manhole password file {path}, line 1: not an argon2 hash "
            "(make one with: chatserv-manhole-passwd USER)",
        ),
        (
            f"admin:{good}\nadmin:{good}\n",
            f"manhole password file {path}, line 2: user admin is listed twice",
        ),
    ]:
        path.write_text(text)
        assert _error(tmp_path, passwords=path) == reason
    path.write_bytes(b"\xff\xfe")
    assert _error(tmp_path, passwords=path) == f"manhole password file {path} is not UTF-8 text"
    path.write_text(f"# admins\nadmin:{good}\n  other:{good}  \n")
    assert manhole.readPasswordFile(str(path)) == {"admin": good, "other": good}


def test_host_key_errors(tmp_path):
    keys = tmp_path / "keys"
    _, public = makeKey(tmp_path, "k")
    keys.write_bytes(public + b"\n")
    bad = tmp_path / "bad_host_key"
    bad.write_text("hello")
    assert _error(tmp_path, keys=keys, hostKey=bad) == (
        f"manhole host key {bad} is not an SSH private key"
    )
    bad.write_bytes(public)
    assert _error(tmp_path, keys=keys, hostKey=bad) == (
        f"manhole host key {bad} is a public key; it must be the private key"
    )
    encrypted = tmp_path / "encrypted"
    encrypted.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert _error(tmp_path, keys=keys, hostKey=encrypted) == (
        f"manhole host key {encrypted} is encrypted; the manhole needs an unencrypted key"
    )
    nowhere = tmp_path / "no" / "such" / "dir" / "key"
    assert _error(tmp_path, keys=keys, hostKey=nowhere) == (
        f"cannot create manhole host key {nowhere}: No such file or directory"
    )
    assert _error(tmp_path, keys=keys, endpoint="99999") == (
        "manhole port 99999 is out of range (0-65535)"
    )
    assert _error(tmp_path, keys=keys, endpoint="bogus:1").startswith(
        "bad manhole endpoint 'bogus:1': "
    )


# -- chatserv-manhole-passwd ------------------------------------------------------------


def test_passwd_command_prints_a_line_that_verifies(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret words here\n"))
    assert manhole.passwdMain(["admin"]) == 0
    line = capsys.readouterr().out.strip()
    user, _, hashed = line.partition(":")
    assert user == "admin" and hashed.startswith("$argon2id$")
    assert PasswordHasher().verify(hashed, "s3cret words here")
    (tmp_path / "pw").write_text(line + "\n")
    assert manhole.readPasswordFile(str(tmp_path / "pw")) == {"admin": hashed}

    for weak in ("", "x", "elevenchars"):  # full control of the server: 12 at least
        monkeypatch.setattr("sys.stdin", io.StringIO(weak + "\n"))
        assert manhole.passwdMain(["admin"]) == 1
        assert "needs at least 12 characters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        manhole.passwdMain(["ad:min"])


def test_account_helpers_run_and_show_what_came_of_it():
    from helpers import makeService, resultOf

    from chatserv.manhole import namespace

    service, _ = makeService(admins=("alice",))
    helpers = namespace(service)
    made = helpers["create_account"]("alice", "a long passphrase")
    assert resultOf(made) == "created the account alice"
    assert resultOf(helpers["create_account"]("alice", "another one")) == (
        'refused: "alice" is already registered'
    )
    assert resultOf(helpers["promote"]("nobody")) == 'refused: "nobody" is not registered'
    assert resultOf(helpers["create_account"]("bob", "a long passphrase", admin=True)) == (
        "created the account bob"
    )
    assert resultOf(helpers["demote"]("bob")) == "bob is no longer an admin"
    assert resultOf(helpers["promote"]("bob")) == "bob is an admin now"
    assert resultOf(helpers["rename_account"]("bob", "robert")) == (
        "renamed the account bob to robert"
    )
    assert resultOf(helpers["rename_account"]("bob", "bobby")) == 'refused: "bob" is not registered'
    assert resultOf(service.store.account("robert")).admin is True
