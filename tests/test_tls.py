"""TLS listeners over real sockets: handshakes, refusals, reload, start-up errors."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import ssl
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_twisted
from clients import connectLine, eventually
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from tlshelpers import (
    certificateIn,
    clientHello,
    connectTLSLine,
    connectWSS,
    makeCert,
    makeChain,
    peerCertificate,
    pythonHandshake,
)
from twisted.internet import protocol
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    serverFromString,
)
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher

from chatserv import makecert
from chatserv.config import Settings
from chatserv.protocols.line import LineChatFactory
from chatserv.protocols.web import ChatSite
from chatserv.service import ChatService
from chatserv.tls import (
    HANDSHAKE_TIMEOUT,
    TLS12_CIPHERS,
    TLSConfigError,
    TLSCredentials,
    TLSReloadService,
    TLSWrappedEndpoint,
    tlsEndpoint,
)

LOCAL = "tcp:0:interface=127.0.0.1"


@dataclass
class Server:
    chat: ChatService
    credentials: TLSCredentials
    certPath: Path
    keyPath: Path
    tls: int
    wss: int
    tcp: int
    clients: list = field(default_factory=list)
    raw: list = field(default_factory=list)

    async def _named(self, client, nick):
        self.clients.append(client)
        await client.until("Type a nickname")
        if nick:
            client.say(nick)
            await client.until("#lobby users")
        return client

    async def tlsLine(self, nick: str | None = None, cafile: Path | None = None):
        return await self._named(await connectTLSLine(self.tls, cafile or self.certPath), nick)

    async def plainLine(self, nick: str | None = None):
        return await self._named(await connectLine(self.tcp), nick)

    async def websocket(self, nick: str | None = None):
        return await self._named(await connectWSS(self.wss, self.certPath), nick)

    def handshake(self, **kwargs):
        """A Python ssl client's handshake, in a thread (see L{pythonHandshake})."""
        kwargs.setdefault("cafile", self.certPath)
        return deferToThread(pythonHandshake, self.tls, **kwargs)


async def _serve(directory: Path, *makecertArgs: str, handshakeTimeout=HANDSHAKE_TIMEOUT):
    from twisted.internet import reactor

    certPath, keyPath = makeCert(directory, *makecertArgs)
    credentials = TLSCredentials(certPath, keyPath)
    chat = ChatService(Settings(), clock=reactor)
    chat.startService()
    lines = LineChatFactory(chat, kind="tls")
    ports = [
        await tlsEndpoint(reactor, LOCAL, credentials, handshakeTimeout).listen(lines),
        await tlsEndpoint(reactor, LOCAL, credentials, handshakeTimeout).listen(
            ChatSite(chat, reactor=reactor, kind="wss")
        ),
        await serverFromString(reactor, LOCAL).listen(LineChatFactory(chat)),
    ]
    tls, wss, tcp = (p.getHost().port for p in ports)
    server = Server(chat, credentials, certPath, keyPath, tls, wss, tcp)
    return server, ports


async def _stop(server: Server, ports) -> None:
    for port in ports:
        await port.stopListening()
    for transport in server.raw:
        transport.abortConnection()
    for client in server.clients:
        await client.hangUp()
    await eventually(lambda: not server.chat.sessions)  # the server has seen every close
    await server.chat.stopService()


@pytest_twisted.async_yield_fixture
async def server(tmp_path):
    srv, ports = await _serve(tmp_path)
    yield srv
    await _stop(srv, ports)


@pytest_twisted.async_yield_fixture
async def rsaServer(tmp_path):
    srv, ports = await _serve(tmp_path, "--key-type", "rsa")
    yield srv
    await _stop(srv, ports)


@pytest.fixture
def tlsLog():
    """Formatted log lines from chatserv.tls while the test runs."""
    lines: list[tuple[str, str]] = []

    def observe(event):
        if event.get("log_namespace") == "chatserv.tls":
            lines.append((event["log_level"].name, formatEvent(event)))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def _rotate(server: Server) -> x509.Certificate:
    """Replace the certificate and key files with a new pair, as a renewal would."""
    makeCert(server.certPath.parent, "--force")
    return certificateIn(server.certPath)


# -- talking over TLS ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tls_line_client_talks_with_plain_client(server):
    alice = await server.tlsLine("alice")
    bob = await server.plainLine("bob")
    await alice.until("bob has joined")
    handle = alice.transport.getHandle()
    assert handle.get_protocol_version_name() == "TLSv1.3"
    assert peerCertificate(alice) == server.credentials.certificate

    alice.say("hello over TLS")
    assert (await bob.until("<alice>")).endswith("#lobby <alice> hello over TLS")
    bob.say("hello in plain text")
    assert (await alice.until("<bob>")).endswith("#lobby <bob> hello in plain text")
    alice.say("/msg bob psst")
    assert (await bob.until("*alice*")).endswith("*alice* psst")


@pytest_twisted.ensureDeferred
async def test_wss_client_talks_with_tls_line_client(server):
    alice = await server.tlsLine("alice")
    bob = await server.websocket("bob")
    await alice.until("bob has joined")
    bob.say("hi from wss")
    assert (await alice.until("<bob>")).endswith("#lobby <bob> hi from wss")
    alice.say("hi back")
    assert (await bob.until("<alice>")).endswith("#lobby <alice> hi back")
    assert peerCertificate(bob) == server.credentials.certificate


def _converse(command: list[str], lines: bytes, until: bytes, timeout: float = 5.0):
    """Run C{command}, type C{lines}, read its output until C{until} appears, then close
    its stdin and read to the end. Blocking: run it in a thread."""
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out = b""
    try:
        process.stdin.write(lines)
        process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            if until in out and not process.stdin.closed:
                process.stdin.close()  # end of input: the client says goodbye and exits
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
                raise AssertionError(f"no end of output in {timeout} s: {out!r}")
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
        process.wait(timeout=timeout)
        err = process.stderr.read()
        return process.returncode, out.decode("utf-8", "replace"), err.decode()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()


@pytest_twisted.ensureDeferred
async def test_openssl_s_client_handshake(server):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (apt-get install openssl)")
    command = [
        openssl, "s_client", "-connect", f"127.0.0.1:{server.tls}",
        "-servername", "localhost", "-verify_hostname", "localhost",
        "-CAfile", str(server.certPath), "-verify_return_error",
    ]  # fmt: skip
    code, out, err = await deferToThread(_converse, command, b"alice\n/quit\n", b"Goodbye.")
    assert code == 0, out + err
    assert "Verify return code: 0 (ok)" in out
    assert re.search(r"Protocol *: TLSv1\.[23]\b", out), out
    assert "Welcome, alice!" in out and "Goodbye." in out


# -- protocol versions, ciphers, compression ---------------------------------------------


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"]
)
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")  # on purpose
@pytest_twisted.ensureDeferred
async def test_tls10_and_tls11_are_refused(server, version):
    with pytest.raises(ssl.SSLError) as refused:
        # SECLEVEL=0 lets this client offer the old versions; the server must refuse.
        await server.handshake(minimum=version, maximum=version, ciphers="DEFAULT:@SECLEVEL=0")
    assert "PROTOCOL_VERSION" in str(refused.value).upper()  # the server's alert


def test_context_disables_old_versions_and_compression(tmp_path):
    credentials = TLSCredentials(*makeCert(tmp_path))
    options = SSL.Connection(credentials.getContext()).set_options(0)  # adds nothing; reads
    for flag in (SSL.OP_NO_SSLv3, SSL.OP_NO_TLSv1, SSL.OP_NO_TLSv1_1, SSL.OP_NO_RENEGOTIATION):
        assert options & flag
    assert options & SSL.OP_NO_COMPRESSION
    assert not options & SSL.OP_NO_TLSv1_2 and not options & SSL.OP_NO_TLSv1_3


@pytest_twisted.ensureDeferred
async def test_tls13_default_no_compression(server):
    got = await server.handshake()
    assert got["version"] == "TLSv1.3"
    assert got["cipher"] in ("TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                             "TLS_AES_128_GCM_SHA256")  # fmt: skip
    assert got["compression"] is None
    assert "Welcome to chatserv" in got["first"]


@pytest.mark.parametrize(
    "cipher",
    ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
     "ECDHE-ECDSA-CHACHA20-POLY1305"],
)  # fmt: skip
@pytest_twisted.ensureDeferred
async def test_tls12_with_each_allowed_cipher_ecdsa(server, cipher):
    assert cipher in TLS12_CIPHERS.split(":")
    got = await server.handshake(maximum=ssl.TLSVersion.TLSv1_2, ciphers=cipher)
    assert (got["version"], got["cipher"]) == ("TLSv1.2", cipher)
    assert "Welcome to chatserv" in got["first"]


@pytest.mark.parametrize(
    "cipher",
    ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
     "ECDHE-RSA-CHACHA20-POLY1305"],
)  # fmt: skip
@pytest_twisted.ensureDeferred
async def test_tls12_with_each_allowed_cipher_rsa(rsaServer, cipher):
    got = await rsaServer.handshake(maximum=ssl.TLSVersion.TLSv1_2, ciphers=cipher)
    assert (got["version"], got["cipher"]) == ("TLSv1.2", cipher)


@pytest.mark.parametrize(
    "cipher",
    [
        "AES128-SHA",  # RSA key exchange (no forward secrecy), CBC
        "AES256-GCM-SHA384",  # RSA key exchange
        "ECDHE-RSA-AES128-SHA",  # CBC with SHA-1
        "ECDHE-RSA-AES256-SHA384",  # CBC
        "DHE-RSA-AES128-GCM-SHA256",  # finite-field DH
    ],
)
@pytest_twisted.ensureDeferred
async def test_tls12_weak_ciphers_are_refused(rsaServer, cipher):
    # An RSA certificate: with Twisted's default cipher list the first two would work.
    with pytest.raises(ssl.SSLError) as refused:
        await rsaServer.handshake(maximum=ssl.TLSVersion.TLSv1_2, ciphers=f"{cipher}:@SECLEVEL=0")
    assert "HANDSHAKE_FAILURE" in str(refused.value).upper()  # the server's alert


# -- reload ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reload_new_connections_get_new_certificate_old_ones_keep_going(server, tlsLog):
    alice = await server.tlsLine("alice")
    bob = await server.plainLine("bob")
    old = server.credentials.certificate

    new = _rotate(server)
    assert new.serial_number != old.serial_number
    assert server.credentials.reload() is True
    assert server.credentials.certificate == new
    assert tlsLog == [
        ("info", f"TLS certificate reloaded from {server.certPath}: "
                 f"CN=localhost,O=chatserv test certificate, serial {new.serial_number:x}, "
                 f"valid until {new.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    ]  # fmt: skip

    carol = await server.tlsLine("carol")  # trusts only the new certificate
    assert peerCertificate(carol).serial_number == new.serial_number
    got = await server.handshake()
    assert got["certificate"] == new
    await alice.until("carol has joined")

    # alice's connection, made with the old certificate, carries on.
    assert peerCertificate(alice).serial_number == old.serial_number
    alice.say("still here")
    assert (await bob.until("<alice>")).endswith("<alice> still here")
    assert (await carol.until("<alice>")).endswith("<alice> still here")
    carol.say("hi alice")
    assert (await alice.until("<carol>")).endswith("<carol> hi alice")


def _garbageCert(server):
    server.certPath.write_bytes(b"this is not a certificate\n")
    return "is not a PEM certificate"


def _otherKey(server):
    other = ec.generate_private_key(ec.SECP256R1())
    server.keyPath.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return "does not match the certificate"


def _missingKey(server):
    server.keyPath.unlink()
    return "does not exist"


@pytest.mark.parametrize("damage", [_garbageCert, _otherKey, _missingKey])
@pytest_twisted.ensureDeferred
async def test_failed_reload_keeps_the_old_certificate(server, tlsLog, damage):
    alice = await server.tlsLine("alice")
    old = server.credentials.certificate
    trusted = server.certPath.with_name("old.crt")
    trusted.write_bytes(server.certPath.read_bytes())
    expected = damage(server)

    assert server.credentials.reload() is False
    assert len(tlsLog) == 1
    level, line = tlsLog[0]
    assert level == "error"
    assert line.startswith("TLS certificate not reloaded, still using the previous one: ")
    assert expected in line and "\n" not in line
    assert server.credentials.certificate == old

    got = await server.handshake(cafile=trusted)  # new connections get the old certificate
    assert got["certificate"] == old
    bob = await server.tlsLine("bob", cafile=trusted)
    await alice.until("bob has joined")
    bob.say("fine")
    assert (await alice.until("<bob>")).endswith("<bob> fine")


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_and_stopping_restores_the_handler(server, tlsLog):
    from twisted.internet import reactor

    calls = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: calls.append(signum))
    try:
        reloader = TLSReloadService(reactor, [server.credentials, server.credentials])
        reloader.startService()
        new = _rotate(server)
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: server.credentials.certificate == new)
        assert calls == [signal.SIGHUP]  # the handler installed before still runs
        assert [level for level, _ in tlsLog] == ["info"]  # reloaded once, not twice
        carol = await server.tlsLine("carol")
        assert peerCertificate(carol) == new

        installed = signal.getsignal(signal.SIGHUP)
        reloader.stopService()
        assert signal.getsignal(signal.SIGHUP) is not installed
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: len(calls) == 2)
        assert len(tlsLog) == 1
    finally:
        signal.signal(signal.SIGHUP, previous)


# -- a stalled handshake ---------------------------------------------------------------


class _Hello(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(b"hello\n")


class _Silent(protocol.Protocol):
    lostAt = None

    def connectionLost(self, reason=None):
        self.lostAt = time.monotonic()


@pytest_twisted.ensureDeferred
async def test_half_handshake_does_not_hold_up_anyone_and_is_dropped(tmp_path, tlsLog):
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    server, ports = await _serve(tmp_path, handshakeTimeout=1.0)
    try:
        hello = clientHello()
        assert hello[:3] == b"\x16\x03\x01" and len(hello) > 100  # a real ClientHello
        stalled = []
        for _ in range(3):
            proto = _Silent()
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.tls), proto)
            proto.transport.write(hello[:20])
            server.raw.append(proto.transport)
            stalled.append(proto)
        stalledAt = time.monotonic()
        await eventually(lambda: len(server.chat.sessions) == 3)

        # Meanwhile everyone else connects, completes handshakes and chats.
        alice = await server.tlsLine("alice")
        bob = await server.plainLine("bob")
        carol = await server.websocket("carol")
        got = await server.handshake()
        assert got["version"] == "TLSv1.3"
        await alice.until("carol has joined")
        alice.say("anyone stuck?")
        assert (await bob.until("<alice>")).endswith("<alice> anyone stuck?")
        assert (await carol.until("<alice>")).endswith("<alice> anyone stuck?")

        # The stalled ones are dropped when their handshake time is up, not before.
        await eventually(lambda: all(p.lostAt for p in stalled))
        assert min(p.lostAt for p in stalled) - stalledAt >= 0.9
        assert [level for level, _ in tlsLog] == ["info"] * 3
        assert all("no handshake in 1 s" in line for _, line in tlsLog)
        await eventually(lambda: len(server.chat.sessions) == 3)

        # Connections that did finish their handshake are not touched by the timer.
        carol.say("still here")
        assert (await alice.until("<carol>")).endswith("<carol> still here")
        assert (await bob.until("<carol>")).endswith("<carol> still here")
    finally:
        await _stop(server, ports)


# -- endpoints ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bare_port_listens_with_tls_and_a_big_backlog(tmp_path):
    from twisted.internet import reactor

    certPath, keyPath = makeCert(tmp_path)
    credentials = TLSCredentials(certPath, keyPath)
    endpoint = tlsEndpoint(reactor, "0", credentials)
    assert isinstance(endpoint, TLSWrappedEndpoint)
    assert isinstance(endpoint.endpoint, TCP4ServerEndpoint)
    assert endpoint.endpoint._backlog == 1024 and endpoint.endpoint._interface == ""
    assert endpoint.handshakeTimeout == HANDSHAKE_TIMEOUT
    port = await endpoint.listen(protocol.Factory.forProtocol(_Hello))
    try:
        got = await deferToThread(pythonHandshake, port.getHost().port, certPath)
        assert got["certificate"] == credentials.certificate
    finally:
        await port.stopListening()


# Twisted's ssl: endpoint parser still hands pyOpenSSL objects to pyOpenSSL.
@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
@pytest_twisted.ensureDeferred
async def test_ssl_description_is_used_as_given(tmp_path):
    from twisted.internet import reactor

    certPath, keyPath = makeCert(tmp_path)
    description = f"ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}"
    endpoint = tlsEndpoint(reactor, description, None)
    assert isinstance(endpoint, SSL4ServerEndpoint)
    port = await endpoint.listen(protocol.Factory.forProtocol(_Hello))
    try:
        got = await deferToThread(pythonHandshake, port.getHost().port, certPath)
        assert got["certificate"] == certificateIn(certPath)
    finally:
        await port.stopListening()


def test_plain_transport_descriptions_get_tls(tmp_path):
    from twisted.internet.testing import MemoryReactor

    credentials = TLSCredentials(*makeCert(tmp_path))
    for description in ("tcp:10443:interface=127.0.0.1", "tcp6:10443", f"unix:{tmp_path}/s"):
        endpoint = tlsEndpoint(MemoryReactor(), description, credentials)
        assert isinstance(endpoint, TLSWrappedEndpoint), description
    with pytest.raises(TLSConfigError, match="needs a certificate and key"):
        tlsEndpoint(MemoryReactor(), "tcp:10443", None)
    with pytest.raises(TLSConfigError, match="needs a certificate and key"):
        tlsEndpoint(MemoryReactor(), "10443", None)
    with pytest.raises(TLSConfigError, match="^bad endpoint 'bogus:1': "):
        tlsEndpoint(MemoryReactor(), "bogus:1", credentials)
    with pytest.raises(TLSConfigError, match=r"^port 70000 is out of range \(0-65535\)$"):
        tlsEndpoint(MemoryReactor(), "70000", credentials)


@pytest_twisted.ensureDeferred
async def test_certificate_chain_is_sent(tmp_path):
    from twisted.internet import reactor

    rootPath, chainPath, keyPath = makeChain(tmp_path)
    credentials = TLSCredentials(chainPath, keyPath)
    assert len(credentials.chain) == 1
    port = await tlsEndpoint(reactor, LOCAL, credentials).listen(
        protocol.Factory.forProtocol(_Hello)
    )
    try:
        # The client trusts only the root: this works only if the intermediate is sent.
        got = await deferToThread(pythonHandshake, port.getHost().port, rootPath)
        assert got["certificate"] == credentials.certificate
    finally:
        await port.stopListening()


def test_key_and_certificate_in_one_file(tmp_path):
    certPath, keyPath = makeCert(tmp_path)
    combined = tmp_path / "combined.pem"
    combined.write_bytes(keyPath.read_bytes() + certPath.read_bytes())
    credentials = TLSCredentials(combined)
    assert credentials.certificate == certificateIn(certPath)
    assert credentials.chain == ()


# -- start-up errors ---------------------------------------------------------------------


def _pemKey(key, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c, k: c.unlink(), r"^TLS certificate file {cert} does not exist$"),
        (lambda c, k: k.unlink(), r"^TLS key file {key} does not exist$"),
        (
            lambda c, k: (c.unlink(), c.mkdir()),
            r"^TLS certificate file {cert} is a directory$",
        ),
        (
            lambda c, k: c.write_bytes(b"garbage\n"),
            r"^TLS certificate file {cert} is not a PEM certificate \(expected -----BEGIN",
        ),
        (
            lambda c, k: c.write_bytes(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            ),
            r"^TLS certificate file {cert} is not a PEM certificate",
        ),
        (
            lambda c, k: c.write_bytes(k.read_bytes()),
            r"^TLS certificate file {cert} is not a PEM certificate",
        ),
        (
            lambda c, k: k.write_bytes(c.read_bytes()),
            r"^TLS key file {key} has no PEM private key",
        ),
        (
            lambda c, k: k.write_bytes(
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            r"^TLS key file {key} is not a valid PEM private key$",
        ),
        (
            lambda c, k: k.write_bytes(_pemKey(ec.generate_private_key(ec.SECP256R1()))),
            r"^TLS key {key} does not match the certificate in {cert} \(the first",
        ),
        (
            lambda c, k: k.write_bytes(
                _pemKey(ec.generate_private_key(ec.SECP256R1()), b"secret")
            ),
            r"^TLS key file {key} is encrypted; chatserv needs an unencrypted key",
        ),
    ],
    ids=["no-cert", "no-key", "dir", "garbage", "bad-der", "key-as-cert", "cert-as-key",
         "bad-key", "mismatch", "encrypted"],
)  # fmt: skip
def test_start_up_errors_are_one_clear_line(tmp_path, damage, message):
    certPath, keyPath = makeCert(tmp_path)
    damage(certPath, keyPath)
    with pytest.raises(TLSConfigError) as error:
        TLSCredentials(certPath, keyPath)
    text = str(error.value)
    assert "\n" not in text
    assert re.search(
        message.format(cert=re.escape(str(certPath)), key=re.escape(str(keyPath))), text
    ), text


def test_unreadable_key_is_a_clear_error(tmp_path, monkeypatch):
    from chatserv import tls

    certPath, keyPath = makeCert(tmp_path)
    real = open

    def guarded(path, *args, **kwargs):  # as chmod 000 would, even for root
        if str(path) == str(keyPath):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tls, "open", guarded, raising=False)
    with pytest.raises(TLSConfigError) as error:
        TLSCredentials(certPath, keyPath)
    assert str(error.value) == f"cannot read TLS key file {keyPath}: Permission denied"


# -- chatserv-makecert -------------------------------------------------------------------


def test_makecert_writes_a_usable_certificate_and_a_private_key(tmp_path, capsys):
    certPath, keyPath = makeCert(tmp_path, "--host", "chat.example.test", "--days", "3")
    out = capsys.readouterr().out
    assert f"wrote {certPath}" in out and f"wrote {keyPath}" in out
    assert f"--tls-cert {certPath} --tls-key {keyPath}" in out
    assert stat.S_IMODE(keyPath.stat().st_mode) == 0o600
    assert stat.S_IMODE(certPath.stat().st_mode) == 0o644

    certificate = certificateIn(certPath)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "chat.example.test"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert 3 * 86400 <= lifetime.total_seconds() <= 3 * 86400 + 600
    TLSCredentials(certPath, keyPath)  # the pair loads


def test_makecert_refuses_to_overwrite_without_force(tmp_path, capsys):
    certPath, keyPath = makeCert(tmp_path)
    before = certPath.read_bytes(), keyPath.read_bytes()
    capsys.readouterr()

    assert makecert.main(["--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"chatserv-makecert: error: refusing to overwrite {certPath} and {keyPath}; use --force\n"
    )
    assert (certPath.read_bytes(), keyPath.read_bytes()) == before

    keyPath.chmod(0o644)
    assert makecert.main(["--out", str(tmp_path), "--force"]) == 0
    assert certPath.read_bytes() != before[0] and keyPath.read_bytes() != before[1]
    assert stat.S_IMODE(keyPath.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chatserv.crt", "chatserv.key"]


def test_makecert_rejects_a_bad_host(tmp_path, capsys):
    assert makecert.main(["--out", str(tmp_path), "--host", "not a host"]) == 1
    assert "not a host name or IP address: 'not a host'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_makecert_defaults_and_rsa(tmp_path):
    assert makecert.main(["--out", str(tmp_path), "--key-type", "rsa"]) == 0
    certificate = certificateIn(tmp_path / "chatserv.crt")
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert certificate.public_key().key_size == 2048


# -- known issue -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_quit_over_tls_closes_the_connection(server):
    from twisted.internet import reactor

    alice = await server.tlsLine("alice")
    alice.say("/quit")
    await alice.until("Goodbye.")
    await alice.closed.addTimeout(1.0, reactor)  # the server hangs up


@pytest_twisted.ensureDeferred
async def test_a_failed_handshake_is_logged_with_its_reason(server, tlsLog):
    from twisted.internet import reactor
    from twisted.internet.protocol import Protocol

    connected = await TCP4ClientEndpoint(reactor, "127.0.0.1", server.tls).connect(
        Factory.forProtocol(Protocol)
    )
    connected.transport.write(b"hello, this is not TLS\r\n")
    await eventually(lambda: any("TLS handshake with" in line for _, line in tlsLog))
    [(level, line)] = [entry for entry in tlsLog if "TLS handshake with" in entry[1]]
    assert level == "info"
    assert re.fullmatch(r"TLS handshake with 127\.0\.0\.1:\d+ failed: .*\w.*", line), line
    assert "[(" not in line  # OpenSSL's reason, not its tuple of tuples
    connected.transport.abortConnection()
    await eventually(lambda: not server.chat.sessions)


def test_makecert_names_the_loopback_defaults_and_prints_commands_that_work(tmp_path, capsys):
    assert makecert.main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "self-signed for localhost, 127.0.0.1, ::1;" in out
    certPath = tmp_path / "chatserv.crt"
    assert f"twistd -n chatserv --tcp 10001 --tls 10443 --wss 8766 --tls-cert {certPath}" in out
    assert f"openssl s_client -quiet -connect localhost:10443 -CAfile {certPath}" in out
