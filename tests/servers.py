"""A real `twistd -n chatserv` in a subprocess, for tests that are not reactor-driven.

The browser and terminal-client tests drive programs of their own (Chromium, a terminal in
tmux) with blocking calls, so the server runs beside them as a user would start it.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TWISTD = Path(sys.executable).with_name("twistd")
_LISTENING = re.compile(r"listening for ([\w ]+) on [\d.]+:(\d+)")


@dataclass
class Server:
    process: subprocess.Popen
    ports: dict[str, int] = field(default_factory=dict)  # "line clients" -> 40123, ...
    output: list[str] = field(default_factory=list)

    @property
    def tcp(self) -> int:
        return self.ports["line clients"]

    @property
    def ws(self) -> int:
        return self.ports["websocket clients"]

    @property
    def wss(self) -> int:
        return self.ports["TLS websocket clients"]

    @property
    def tls(self) -> int:
        return self.ports["TLS line clients"]

    @property
    def irc(self) -> int:
        return self.ports["IRC clients"]


@contextmanager
def runServer(cwd: Path, *args: str, listeners: int = 2, timeout: float = 30) -> Iterator[Server]:
    """Start C{twistd -n chatserv ARGS} in C{cwd}, wait until C{listeners} listen, and stop
    it (SIGTERM, a graceful shutdown) afterwards.

    With no ARGS it listens for line and websocket clients on free loopback ports and keeps
    nothing (C{--db memory}).
    """
    if not args:
        args = ("--tcp", "tcp:0:interface=127.0.0.1", "--ws", "tcp:0:interface=127.0.0.1")
        args += ("--db", "memory")
    argv = [str(TWISTD), "-n", "--pidfile=", "chatserv", *args]
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, TZ="UTC"),
    )
    server = Server(process)
    fd = process.stdout.fileno()
    seen = ""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while len(server.ports) < listeners:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                rest = process.stdout.read().decode("utf-8", "replace")
                raise RuntimeError(f"chatserv did not start:\n{seen}{rest}")
            # os.read, not readline: a buffered reader could hold back lines that select()
            # then never reports.
            if selector.select(0.2):
                seen += os.read(fd, 65536).decode("utf-8", "replace")
                server.ports.update((what, int(port)) for what, port in _LISTENING.findall(seen))
    server.output.append(seen)
    # Keep reading, or a chatty server would block once the pipe (64 KiB) is full.
    drainer = threading.Thread(target=_drain, args=(fd, server.output), daemon=True)
    drainer.start()
    try:
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        drainer.join(5)  # the pipe ends with the server (or with a child it left behind)
        process.stdout.close()


def _drain(fd: int, output: list[str]) -> None:
    while chunk := os.read(fd, 65536):
        output.append(chunk.decode("utf-8", "replace"))


def readUntil(sock, marker: bytes, timeout: float = 10.0, have: bytes = b"") -> bytes:
    """Read a blocking socket until C{marker} arrives (failing the test if it does not
    within C{timeout} seconds, or the peer closes first); everything read, after C{have}:
    what was read before, which may hold the marker already."""
    data = have
    deadline = time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert marker in data, data[-500:]
    return data
