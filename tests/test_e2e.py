"""End to end: `twistd -n chatserv` as a user starts it, talked to over both ports."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest_twisted
from clients import connectLine, connectWS
from twisted.internet import defer, protocol

TWISTD = Path(sys.executable).with_name("twistd")


class TwistdProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = ""
        self.ports: dict[str, int] = {}
        self.listening = defer.Deferred()
        self.ended = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        for what, port in re.findall(r"listening for (\w+) clients on [\d.]+:(\d+)", self.output):
            self.ports[what] = int(port)
        if len(self.ports) == 2 and not self.listening.called:
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
    args = [str(TWISTD), "-n", "--pidfile=", "chatserv", "--tcp", local, "--ws", local]
    reactor.spawnProcess(proc, args[0], args, env=dict(os.environ), path=str(tmp_path))
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
        "connect from tcp 127.0.0.1:",
        "is now alice",
        "is now bob",
        "disconnect tcp 127.0.0.1:",
    ):
        assert expected in proc.output
