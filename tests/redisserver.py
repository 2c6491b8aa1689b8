"""A real redis-server on a free loopback port, for the cluster tests.

Without the program the tests are skipped, saying why, except when C{CI=true} (C{.ci/run}
installs it): CI must not pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """C{tls}: (CA, certificate chain, key) paths to serve TLS only, asking clients for a
    certificate the CA signed."""

    def __init__(self, directory: Path, tls: tuple[Path, Path, Path] | None = None) -> None:
        program = shutil.which("redis-server")
        if program is None:
            message = "redis-server is not installed (apt-get install redis-server, or .ci/run)"
            if os.environ.get("CI") == "true":
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        self.program = program
        self.directory = directory
        self.port = _freePort()
        self.tls = tls
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://localhost:{self.port}/0"  # (the name in its certificate)
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        listen = ["--port", str(self.port)]
        if self.tls:
            ca, chain, key = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-ca-cert-file", str(ca),
                      "--tls-cert-file", str(chain), "--tls-key-file", str(key),
                      "--tls-auth-clients", "yes"]  # fmt: skip
        self.process = subprocess.Popen(
            [self.program, *listen, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while self.command("PING") != "+PONG":
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def command(self, *words: str) -> str:
        """One command, in RESP; the first line of its reply ("" if Redis is not there)."""
        request = f"*{len(words)}\r\n" + "".join(f"${len(w.encode())}\r\n{w}\r\n" for w in words)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                if self.tls:
                    s = self._tlsContext().wrap_socket(s, server_hostname="localhost")
                s.sendall(request.encode())
                return s.recv(65536).decode().split("\r\n")[0]
        except OSError:
            return ""

    def _tlsContext(self) -> ssl.SSLContext:
        ca, chain, key = self.tls
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(chain), str(key))  # (the server's own: the CA signed it)
        return context
