"""End to end: `twistd -n chatserv` as a user starts it, talked to over both ports."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest_twisted
from clients import connectLine, connectWS, eventually
from tlshelpers import connectTLSLine, connectWSS, makeCert
from twisted.internet import defer, protocol

TWISTD = Path(sys.executable).with_name("twistd")


def spawnTwistd(proc: protocol.ProcessProtocol, cwd: Path, *args: str) -> None:
    """Start C{twistd ARGS} in C{cwd} as a user would, its output going to C{proc}."""
    from twisted.internet import reactor

    argv = [str(TWISTD), *args]
    reactor.spawnProcess(proc, argv[0], argv, env=dict(os.environ), path=str(cwd))


class TwistdProcess(protocol.ProcessProtocol):
    def __init__(self, expected: int = 2) -> None:
        self.expected = expected  # listeners to wait for
        self.output = ""
        self.ports: dict[str, int] = {}
        self.listening = defer.Deferred()
        self.ended = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        found = re.findall(r"listening for ([\w ]+) clients on [\d.]+:(\d+)", self.output)
        for what, port in found:
            self.ports[what] = int(port)
        if len(self.ports) == self.expected and not self.listening.called:
            self.listening.callback(self.ports)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError(f"twistd exited early:\n{self.output}"))
        self.ended.callback((reason.value.exitCode, reason.value.signal))


@pytest_twisted.ensureDeferred
async def test_twistd_chatserv_serves_both_ports(tmp_path):
    from twisted.internet import reactor

    proc = TwistdProcess()
    local = "tcp:0:interface=127.0.0.1"
    spawnTwistd(proc, tmp_path, "-n", "--pidfile=", "chatserv", "--tcp", local, "--ws", local)
    try:
        ports = await proc.listening.addTimeout(30, reactor)
        alice = await connectLine(ports["line"])
        await alice.until("Type a nickname")
        alice.say("alice")
        await alice.until("#lobby users (1): alice")
        bob = await connectWS(ports["websocket"], json_=True)
        bob.request(type="nick", nick="bob")
        await bob.until(lambda e: e["type"] == "who")
        assert (await alice.until("has joined")).endswith("#lobby --> bob has joined")

        alice.say("hi bob")
        event = await bob.until(lambda e: e["type"] == "message")
        assert (event["from"], event["text"]) == ("alice", "hi bob")
        bob.request(type="say", text="hi alice")
        assert (await alice.until("<bob>")).endswith("#lobby <bob> hi alice")
    finally:
        if not proc.ended.called:
            proc.transport.signalProcess("TERM")
    # SIGTERM: a clean stop that tells connected users why they are being dropped.
    assert (await alice.until("shutting down")).endswith("-!- server shutting down")
    await alice.closed
    await bob.closed
    # twistd stops the reactor cleanly, then re-raises SIGTERM so its parent (systemd, a
    # shell) sees how it ended: terminated by signal 15, not a crash.
    assert await proc.ended.addTimeout(30, reactor) == (None, 15)
    assert "Main loop terminated." in proc.output
    assert "Traceback" not in proc.output
    for expected in (
        f"the web client is at http://127.0.0.1:{ports['websocket']}/",
        "connect from tcp 127.0.0.1:",
        "is now alice",
        "is now bob",
        "disconnect tcp 127.0.0.1:",
    ):
        assert expected in proc.output


@pytest_twisted.ensureDeferred
async def test_twistd_chatserv_over_tls(tmp_path):
    from twisted.internet import reactor

    cert, key = makeCert(tmp_path)
    proc = TwistdProcess(expected=3)
    local = "tcp:0:interface=127.0.0.1"
    spawnTwistd(
        proc,
        tmp_path,
        "-n",
        "--pidfile=",
        "chatserv",
        "--tcp",
        local,
        "--tls",
        local,
        "--wss",
        local,
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    try:
        ports = await proc.listening.addTimeout(30, reactor)
        alice = await connectTLSLine(ports["TLS line"], cert)
        await alice.until("Type a nickname")
        alice.say("alice")
        await alice.until("#lobby users (1): alice")
        bob = await connectWSS(ports["TLS websocket"], cert, json_=True)
        bob.request(type="nick", nick="bob")
        await bob.until(lambda e: e["type"] == "who")
        carol = await connectLine(ports["line"])
        carol.say("carol")
        await carol.until("users (3)")
        carol.say("hello encrypted world")
        assert (await alice.until("<carol>")).endswith("<carol> hello encrypted world")
        event = await bob.until(lambda e: e["type"] == "message")
        assert event["text"] == "hello encrypted world"
    finally:
        if not proc.ended.called:
            proc.transport.signalProcess("TERM")
    for client in (alice, bob, carol):
        await client.closed
    assert await proc.ended.addTimeout(30, reactor) == (None, 15)
    assert "Traceback" not in proc.output


def test_tls_without_a_certificate_is_one_error_line(tmp_path):
    import subprocess

    result = subprocess.run(
        [str(TWISTD), "-n", "--pidfile=", "chatserv", "--tls", "10443"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "chatserv: error: --tls and --wss need a certificate: --tls-cert FILE"
    )


class JSONLogProcess(protocol.ProcessProtocol):
    """twistd with --logger chatserv.logs.json: every output line must be a JSON event."""

    def __init__(self) -> None:
        self.buffer = b""
        self.events: list[dict] = []
        self.port = defer.Deferred()
        self.ended = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        import json

        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            event = json.loads(line)  # fails the test on anything that is not JSON
            self.events.append(event)
            if event.get("what") == "line clients" and not self.port.called:
                self.port.callback(event["port"])

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


@pytest_twisted.ensureDeferred
async def test_json_log_lines(tmp_path):
    from twisted.internet import reactor

    proc = JSONLogProcess()
    spawnTwistd(
        proc,
        tmp_path,
        "-n",
        "--pidfile=",
        "--logger",
        "chatserv.logs.json",
        "chatserv",
        "--tcp",
        "tcp:0:interface=127.0.0.1",
    )
    try:
        port = await proc.port.addTimeout(30, reactor)
        alice = await connectLine(port)
        alice.say("alice")
        await alice.until("users (1)")
        await alice.hangUp()
    finally:
        proc.transport.signalProcess("TERM")
    await proc.ended.addTimeout(30, reactor)
    named = [e for e in proc.events if e.get("log_namespace") == "chatserv.service"]
    assert named and named[0]["nick"] == "alice"
    assert named[0]["address"].startswith("tcp 127.0.0.1:")
    assert named[0]["log_level"]["name"] == "info"
    # The rendered line and a flat level, for shippers that do not know Twisted's format.
    assert named[0]["level"] == "info"
    assert named[0]["text"] == f"{named[0]['address']} is now alice"
    assert any(e.get("log_format", "").startswith("disconnect") for e in proc.events)


@pytest_twisted.ensureDeferred
async def test_twistd_chatserv_with_the_manhole_console(tmp_path):
    from test_manhole import _open, makeKey
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    keyFile, public = makeKey(tmp_path, "admin")
    (tmp_path / "authorized_keys").write_bytes(public + b"\n")
    proc = TwistdProcess(expected=1)
    local = "tcp:0:interface=127.0.0.1"
    spawnTwistd(
        proc,
        tmp_path,
        "-n",
        "--pidfile=",
        "chatserv",
        "--tcp",
        local,
        "--manhole",
        "0",
        "--manhole-keys",
        "authorized_keys",
    )
    try:
        ports = await proc.listening.addTimeout(30, reactor)
        await eventually(lambda: "manhole (SSH) listening on" in proc.output)
        sshPort = int(
            re.search(r"manhole \(SSH\) listening on 127\.0\.0\.1:(\d+)", proc.output).group(1)
        )
        assert (tmp_path / "chatserv_host_key").stat().st_mode & 0o777 == 0o600
        alice = await connectLine(ports["line"])
        alice.say("alice")
        await alice.until("users (1)")
        console = await deferToThread(_open, sshPort, "admin", keyFile, None, True)
        try:
            await console.greeting()
            assert "alice" in await console.run("users()")
            await console.run('tell("alice", "hello from the console")')
            assert (await alice.until("console")).endswith("-!- hello from the console")
        finally:
            console.close()
    finally:
        proc.transport.signalProcess("TERM")
    await alice.closed
    assert await proc.ended.addTimeout(30, reactor) == (None, 15)
    assert "manhole login: admin from 127.0.0.1:" in proc.output
