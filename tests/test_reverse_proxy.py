"""The reverse-proxy examples in etc/proxy/, run for real in front of a real server.

nginx terminates TLS for the web port (X-Forwarded-For) and for line clients (its stream
module, with a PROXY v1 header); HAProxy passes line clients on with a PROXY v2 header.
Clients connect from 127.0.0.2 and 127.0.0.3 (any 127.x.y.z is this machine), the proxies
reach chatserv from 127.0.0.1, which is the one trusted proxy: the server's log must name
the clients, not the proxies.

nginx (with libnginx-mod-stream) and HAProxy are Debian's packages; without them these
tests are skipped, saying so, except under CI=true, where they fail.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from servers import Server, readUntil, runServer
from tlshelpers import makeCert

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "etc" / "proxy"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
TIMEOUT = 10.0


def _need(program: str, *files: Path) -> str:
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}",) if os.access(p, os.X_OK)), None
    )
    missing = [str(f) for f in files if not f.exists()]
    if path is None or missing:
        message = f"no {program} ({', '.join(missing) or 'not installed'}): see .ci/run"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _example(name: str, replacements: dict[str, str]) -> str:
    """An example file as shipped, with its ports and paths replaced, IPv6 listens left
    out (this machine may have no IPv6)."""
    text = (EXAMPLES / name).read_text()
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in etc/proxy/{name}"
        text = text.replace(old, new)
    return "\n".join(line for line in text.splitlines() if "[::]" not in line)


@contextmanager
def _running(argv: list[str], ready: int, log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", ready), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text()}") from None
                time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(TIMEOUT)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _logSays(server: Server, text: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while text not in "".join(server.output):
        assert time.monotonic() < deadline, f"the log never said {text!r}:\n" + "".join(
            server.output
        )
        time.sleep(0.05)


def _textFrame(text: str) -> bytes:
    """A client's (masked) websocket text frame, short enough for a 7-bit length."""
    payload = text.encode("utf-8")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


@pytest.fixture
def chatserv(tmp_path) -> Iterator[tuple[Server, dict[str, int], tuple[Path, Path]]]:
    cert, key = makeCert(tmp_path)
    config = tmp_path / "chatserv.toml"
    config.write_text('[proxy]\ntrusted = ["127.0.0.1"]\nprotocol = ["tcp"]\n')
    local = "tcp:0:interface=127.0.0.1"
    args = ("--config", str(config), "--tcp", local, "--ws", local, "--db", "memory")
    with runServer(tmp_path, *args) as server:
        yield server, {"tcp": server.tcp, "ws": server.ws}, (cert, key)


def test_nginx_in_front_of_the_web_port_and_the_line_protocol(chatserv, tmp_path):
    nginx = _need("nginx", STREAM_MODULE)
    server, ports, (cert, key) = chatserv
    https, tlsLine = _freePort(), _freePort()
    certs = {
        "/etc/letsencrypt/live/chat.example.org/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/chat.example.org/privkey.pem": str(key),
    }
    web = _example(
        "nginx-web.conf",
        {"127.0.0.1:8765": f"127.0.0.1:{ports['ws']}", "listen 443": f"listen {https}", **certs},
    )
    stream = _example(
        "nginx-stream.conf",
        {
            "127.0.0.1:10001": f"127.0.0.1:{ports['tcp']}",
            "listen 10443": f"listen {tlsLine}",
            **certs,
        },
    )
    temp = tmp_path / "nginx"
    temp.mkdir()
    paths = " ".join(
        f"{kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"load_module {STREAM_MODULE};\n"
        f"daemon off; master_process off; pid {tmp_path / 'nginx.pid'};\n"
        f"error_log {tmp_path / 'nginx-error.log'} info;\n"
        "events {}\n"
        f"http {{ access_log off; {paths}\n{web}\n}}\n"
        f"{stream}\n"
    )
    argv = [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    context = ssl.create_default_context(cafile=str(cert))
    with _running(argv, https, tmp_path / "nginx.log"):
        # The browser client's page, through nginx, with TLS ended there.
        with context.wrap_socket(_connect(https, "127.0.0.2"), server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert readUntil(s, b"</html>").startswith(b"HTTP/1.1 200 OK")
        _logSays(server, '"127.0.0.2" - - [')  # the access log names the client
        # A websocket through nginx, as the web client opens it.
        key = base64.b64encode(os.urandom(16)).decode()
        with context.wrap_socket(_connect(https, "127.0.0.2"), server_hostname="localhost") as s:
            s.sendall(
                (
                    "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\nOrigin: https://localhost\r\n\r\n"
                ).encode()
            )
            assert readUntil(s, b"\r\n\r\n").startswith(b"HTTP/1.1 101")
            s.sendall(_textFrame("dave"))
            readUntil(s, b"Welcome, dave!")
            _logSays(server, "connect from ws 127.0.0.2 via proxy 127.0.0.1:")
        # A TLS line client through nginx's stream module (PROXY v1).
        with context.wrap_socket(_connect(tlsLine, "127.0.0.3"), server_hostname="localhost") as s:
            s.sendall(b"erin\r\n")
            readUntil(s, b"Welcome, erin!")
        _logSays(server, "connect from tcp 127.0.0.3:")
    assert "connect from tcp 127.0.0.1:" not in "".join(server.output)


def test_haproxy_in_front_of_the_line_protocol(chatserv, tmp_path):
    haproxy = _need("haproxy")
    server, ports, _ = chatserv
    front = _freePort()
    config = _example(
        "haproxy.cfg",
        {
            "maxconn 10000": "maxconn 100",
            "bind :10000": f"bind 127.0.0.1:{front}",
            "127.0.0.1:10001": f"127.0.0.1:{ports['tcp']}",
        },
    )
    (tmp_path / "haproxy.cfg").write_text(config + "\n")
    argv = [haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")]
    with _running(argv, front, tmp_path / "haproxy.log"):
        with _connect(front, "127.0.0.3") as s:
            s.sendall(b"frank\r\n")
            readUntil(s, b"Welcome, frank!")
        _logSays(server, "connect from tcp 127.0.0.3:")
