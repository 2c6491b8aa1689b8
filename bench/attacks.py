"""Attack harness: a real chatserv under hostile clients, measured from the outside.

Each scenario starts a fresh C{twistd -n chatserv} on free loopback ports, connects two
line clients that keep chatting (the bystander), attacks the server over real sockets and
stops it with SIGTERM. It reports what an operator would see: the server's memory (VmRSS)
and CPU use from /proc, the bystander's message latency, how many attacking connections
the server ended, and how much the server logged. Only observable behaviour is used
(sockets, /proc, the log), so the same run compares two versions of the server.

    python bench/attacks.py                          # every scenario, 20 s of attack each
    python bench/attacks.py --only pingflood,nulpath --seconds 10 --json out.json
    python bench/attacks.py --twistd OTHER/.venv/bin/twistd --config OTHER/etc/chatserv.toml

The attacking side is plain sockets and threads, not Twisted, so that it does not share
the server's weaknesses. Sources 127.0.0.2-127.0.0.255 are loopback addresses too; they
stand in for other machines where a scenario needs another address.
"""

from __future__ import annotations

import argparse
import base64
import errno
import fcntl
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import select
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_LISTENING = re.compile(r"listening for ([\w ]+) on [\d.]+:(\d+)")
_STAMP = re.compile(r"^\[[^\]]*\] ")
# Defer the choice of a source port to connect(): bound with port 0, every socket from an
# address would need a port of its own, and TIME_WAIT ones would run out during churn.
_BIND_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

# The bystander sends 10 messages a second; the default flood control allows 5. The
# derived config raises rate_limit to this so that the bystander itself is never limited;
# every attack here is far beyond it either way.
BYSTANDER_RATE_LIMIT = 20.0
# Parts of the given config that would listen on fixed ports, or need files beside it.
DROPPED_SECTIONS = ("listen", "metrics", "manhole", "tls")


# -- sockets ----------------------------------------------------------------------------


def connectFrom(port: int, source: str | None = None, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the server's C{port}, from the loopback address C{source}."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, _BIND_NO_PORT, 1)
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    return sock


def peerState(sock: socket.socket) -> str:
    """C{"open"}, C{"eof"} (the server closed) or C{"reset"}, without reading anything:
    a FIN that has arrived shows as POLLRDHUP even with unread data before it. (One that
    the server's kernel still holds behind data this side never read has not: see
    L{finalStates}.)"""
    poller = select.poll()
    try:
        poller.register(
            sock.fileno(), select.POLLIN | select.POLLRDHUP | select.POLLERR | select.POLLHUP
        )
    except (ValueError, OSError):
        return "closed here"
    events = poller.poll(0)
    if not events:
        return "open"
    mask = events[0][1]
    if mask & select.POLLERR:
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return "reset" if code in (errno.ECONNRESET, errno.EPIPE, 0) else errno.errorcode[code]
    if mask & (select.POLLRDHUP | select.POLLHUP):
        return "eof"
    return "open"  # only data waiting


class LineClient:
    """A blocking line-protocol client, like nc: send lines, wait for matching ones."""

    def __init__(self, port: int, source: str | None = None, timeout: float = 10.0) -> None:
        self.sock = connectFrom(port, source, timeout)
        self._buffer = b""
        self.lines: list[bytes] = []  # every line received, in order (raw, CRLF removed)
        self.closed: str | None = None  # "eof" or an error, once the server has closed

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode("utf-8") + b"\r\n")

    def readLines(self, timeout: float) -> list[bytes]:
        """The complete lines that arrive within C{timeout} (at least one, unless none
        came or the connection ended)."""
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready or self.closed:
            return []
        try:
            data = self.sock.recv(65536)
        except OSError as e:
            self.closed = errno.errorcode.get(e.errno, str(e))
            return []
        if not data:
            self.closed = "eof"
            return []
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\n")
        lines = [line.removesuffix(b"\r") for line in complete]
        self.lines.extend(lines)
        return lines

    def waitFor(self, pattern: str | re.Pattern[str], timeout: float) -> str | None:
        """The first line (its text after the time stamp) matching C{pattern}, or None."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            for raw in self.readLines(remaining):
                text = _STAMP.sub("", raw.decode("utf-8", "replace"))
                if regex.search(text):
                    return text
        return None

    def chooseNick(self, nick: str, timeout: float = 10.0) -> bool:
        self.send(nick)
        return self.waitFor(rf"Welcome, {re.escape(nick)}!", timeout) is not None

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


# -- websocket, written by hand ---------------------------------------------------------


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(payload), "big")


def wsFrame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients)."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head.append(0x80 | size)
    elif size < 65536:
        head.append(0x80 | 126)
        head += struct.pack("!H", size)
    else:
        head.append(0x80 | 127)
        head += struct.pack("!Q", size)
    key = os.urandom(4)
    return bytes(head) + key + _mask(payload, key)


OP_CONT, OP_TEXT, OP_CLOSE, OP_PING = 0x0, 0x1, 0x8, 0x9


class FrameParser:
    """Splits what a server sends into (opcode, payload) frames."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data
        frames = []
        at = 0
        while len(buffer) - at >= 2:
            opcode, size, pos = buffer[at] & 0x0F, buffer[at + 1] & 0x7F, at + 2
            masked = buffer[at + 1] & 0x80
            if size == 126:
                if len(buffer) - at < 4:
                    break
                (size,) = struct.unpack_from("!H", buffer, at + 2)
                pos = at + 4
            elif size == 127:
                if len(buffer) - at < 10:
                    break
                (size,) = struct.unpack_from("!Q", buffer, at + 2)
                pos = at + 10
            key = buffer[pos : pos + 4] if masked else b""
            pos += len(key)
            if len(buffer) < pos + size:
                break
            payload = buffer[pos : pos + size]
            frames.append((opcode, _mask(payload, key) if key else payload))
            at = pos + size
        self._buffer = buffer[at:]
        return frames


def wsConnect(port: int, source: str | None = None, timeout: float = 10.0) -> WsClient:
    """Open a websocket (RFC 6455 handshake, checked: 101 and the right accept key)."""
    sock = connectFrom(port, source, timeout)
    try:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (port, key)
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"websocket handshake: connection closed: {response!r}")
            response += chunk
        head, _, rest = response.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"websocket handshake refused: {status!r}")
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        if not re.search(rb"(?im)^sec-websocket-accept: *" + re.escape(accept) + rb" *$", head):
            raise ConnectionError("websocket handshake: wrong Sec-WebSocket-Accept")
    except BaseException:
        sock.close()
        raise
    return WsClient(sock, rest)


@dataclass
class WsClient:
    """An open websocket; records what the server sent and when it ended the connection."""

    sock: socket.socket
    pending: bytes = b""  # frames received with the handshake response
    parser: FrameParser = field(default_factory=FrameParser)
    texts: list[str] = field(default_factory=list)
    closeFrame: tuple[float, int | None, str] | None = None  # (when, code, reason)
    ended: tuple[float, str] | None = None  # (when, "eof"/"reset"/...) seen by this side
    bytesSent: int = 0

    def __post_init__(self) -> None:
        if self.pending:
            self._frames(self.pending)

    def _frames(self, data: bytes) -> None:
        for opcode, payload in self.parser.feed(data):
            if opcode == OP_TEXT:
                self.texts.append(payload.decode("utf-8", "replace"))
            elif opcode == OP_CLOSE and self.closeFrame is None:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.closeFrame = (time.monotonic(), code, payload[2:].decode("utf-8", "replace"))

    def endedBecause(self, how: str) -> None:
        if self.ended is None:
            self.ended = (time.monotonic(), how)

    def readAvailable(self, limit: int = 1 << 20) -> None:
        """Read what is waiting, without blocking (at most C{limit} bytes)."""
        got = 0
        # select, not MSG_DONTWAIT: on a socket with a timeout Python waits for data first.
        while got < limit and self.ended is None and select.select([self.sock], [], [], 0)[0]:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.endedBecause(_errname(e))
                return
            if not data:
                self.endedBecause("eof")
                return
            got += len(data)
            self._frames(data)

    def waitText(self, pattern: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for text in self.texts[seen:]:
                if re.search(pattern, text):
                    return text
            seen = len(self.texts)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.ended:
                return None
            select.select([self.sock], [], [], min(remaining, 0.2))
            self.readAvailable()

    def state(self) -> str:
        """What the server did to this connection, as far as this side can tell now."""
        if self.ended is not None:
            return self.ended[1]
        return peerState(self.sock)

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


def _errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e)).lower().removeprefix("e")


def pump(
    clients: list[WsClient],
    batch: bytes,
    until: float,
    read: bool,
    onIdle: Callable[[], None] | None = None,
) -> None:
    """Send C{batch} over and over on every client until C{until}, never blocking: a
    socket that cannot take more is waited on with select and tried again. With C{read}
    false nothing is ever read (the attacker plays a client that never reads)."""
    views = {c.sock.fileno(): (c, memoryview(batch)) for c in clients}
    for c in clients:
        c.sock.setblocking(False)
    while time.monotonic() < until:
        live = [c for c in clients if c.ended is None]
        if not live:
            return
        writable = [c.sock for c in live]
        readable = writable if read else []
        try:
            rs, ws, _ = select.select(readable, writable, [], 0.2)
        except (OSError, ValueError):
            return
        for sock in rs:
            views[sock.fileno()][0].readAvailable()
        for sock in ws:
            client, view = views[sock.fileno()]
            if client.ended is not None:
                continue
            try:
                sent = sock.send(view)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                client.endedBecause(_errname(e))
                continue
            client.bytesSent += sent
            view = view[sent:] if sent < len(view) else memoryview(batch)
            views[sock.fileno()] = (client, view)
        if onIdle is not None:
            onIdle()


def finalStates(clients: list[WsClient], read: bool, drain: float = 5.0) -> list[str]:
    """Each client's state at the end of an attack; readers first take what is waiting.

    A client that never read is looked at without reading first; if it looks open, what
    the server sent is then read for up to C{drain} seconds, since a server that closed
    gracefully queues its FIN behind the data that the client never took.
    """
    states = []
    for client in clients:
        if read:
            client.readAvailable()
        state = client.state()
        if state == "open" and not read:
            state = _drained(client, drain)
        states.append(state)
    return states


def _drained(client: WsClient, seconds: float) -> str:
    got = 0
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if not select.select([client.sock], [], [], min(remaining, 0.2))[0]:
            continue
        try:
            data = client.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as e:
            return f"{_errname(e)} after reading {got / 2**20:.1f} MiB"
        if not data:
            return f"eof after reading {got / 2**20:.1f} MiB"
        got += len(data)
    return f"open (read {got / 2**20:.1f} MiB in {seconds:g} s)"


def countClosed(states: list[str]) -> int:
    return sum(not state.startswith("open") for state in states)


# -- the server under test --------------------------------------------------------------


class LogCounter:
    """Reads the server's output as it comes (the pipe must never fill) and counts it."""

    def __init__(self, stream) -> None:
        self._fd = stream.fileno()
        self.lines = 0
        self.bytes = 0
        self.tracebacks = 0
        self.recent: deque[str] = deque(maxlen=400)
        self.text = ""  # everything until the listening lines have been seen
        self._partial = ""
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self._fd, 65536):
            text = self._partial + chunk.decode("utf-8", "replace")
            *lines, self._partial = text.split("\n")
            with self._lock:
                self.bytes += len(chunk)
                self.lines += len(lines)
                self.tracebacks += sum("Traceback" in line for line in lines)
                self.recent.extend(lines)
                if not self.ready.is_set():
                    self.text += text
        self.ready.set()

    def mark(self) -> tuple[int, int, int]:
        with self._lock:
            return self.lines, self.bytes, self.tracebacks

    def since(self, mark: tuple[int, int, int]) -> dict[str, int]:
        lines, size, tracebacks = self.mark()
        return {
            "log_lines": lines - mark[0],
            "log_bytes": size - mark[1],
            "tracebacks": tracebacks - mark[2],
        }

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def writeToml(data: dict[str, Any]) -> str:
    """TOML text for C{data} (tables of strings, numbers, booleans and lists of them)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)  # JSON's escapes are valid in TOML basic strings
        if isinstance(v, list):
            return "[" + ", ".join(value(item) for item in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    out: list[str] = []

    def table(name: str, entries: dict[str, Any]) -> None:
        scalars = {k: v for k, v in entries.items() if not isinstance(v, dict)}
        if name and (scalars or not entries):
            out.append(f"[{name}]")
        for key, v in scalars.items():
            out.append(f"{json.dumps(key)} = {value(v)}")
        for key, v in entries.items():
            if isinstance(v, dict):
                table(f"{name}.{json.dumps(key)}" if name else json.dumps(key), v)

    table("", data)
    return "\n".join(out) + "\n"


def derivedConfig(
    configPath: Path | None, overrides: dict[str, dict[str, Any]]
) -> tuple[str, dict[str, Any]]:
    """The given config without fixed listeners, with the bystander's rate limit and the
    scenario's C{overrides}; returns its TOML text and the settings changed."""
    data: dict[str, Any] = {}
    if configPath is not None:
        with open(configPath, "rb") as f:
            data = tomllib.load(f)
    for section in DROPPED_SECTIONS:
        data.pop(section, None)
    limits = data.setdefault("limits", {})
    changed: dict[str, Any] = {}
    if float(limits.get("rate_limit", 5.0)) < BYSTANDER_RATE_LIMIT:
        limits["rate_limit"] = BYSTANDER_RATE_LIMIT
        changed["limits.rate_limit"] = BYSTANDER_RATE_LIMIT
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
        changed.update({f"{section}.{k}": v for k, v in values.items()})
    return writeToml(data), changed


def processCpuSeconds(pid: int) -> float | None:
    """User plus system time of every thread of process C{pid}."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields 14 and 15 (utime, stime); the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machineCpuSeconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(n) for n in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = sum(ticks[:8]) - ticks[3] - ticks[4] - ticks[7]
    return busy / os.sysconf("SC_CLK_TCK"), ticks[7] / os.sysconf("SC_CLK_TCK")


class ChatServer:
    """C{twistd -n chatserv} in a subprocess, in a fresh directory, on free loopback ports."""

    def __init__(
        self, twistd: Path, configText: str, backlog: int = 1024, cpus: set[int] | None = None
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="chatserv-attack-")
        cwd = Path(self._dir.name)
        config = cwd / "attacks.toml"
        config.write_text(configText)
        argv = [str(twistd), "-n", "--pidfile=", "chatserv", "--config", str(config)]
        # An endpoint string gets Twisted's backlog of 50, which a quick succession of
        # connects overflows even one at a time (1 s SYN retries); chatserv gives a bare
        # port 1024, and so does this by default.
        endpoint = f"tcp:0:interface={HOST}" + (f":backlog={backlog}" if backlog else "")
        argv += ["--tcp", endpoint, "--ws", endpoint]
        argv += ["--db", "memory"]
        if cpus:  # taskset before exec: every thread the server starts stays there
            argv = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv]
        self.process = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
        self.pid = self.process.pid
        # A pipe of 1 MiB rather than 64 KiB: a moment's delay in the drain thread (this
        # process is busy attacking) must not block the server on writing its log.
        with suppress(OSError):
            fcntl.fcntl(self.process.stdout.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
        self.log = LogCounter(self.process.stdout)
        self.log.start()
        self.ports = self._waitForPorts(30.0)

    def _waitForPorts(self, timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = {what: int(port) for what, port in _LISTENING.findall(self.log.text)}
            if "line clients" in ports and "websocket clients" in ports:
                self.log.ready.set()  # stop keeping all the text
                return ports
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("chatserv did not start:\n" + "\n".join(self.log.recent))

    @property
    def tcp(self) -> int:
        return self.ports["line clients"]

    @property
    def ws(self) -> int:
        return self.ports["websocket clients"]

    def alive(self) -> bool:
        return self.process.poll() is None

    def rssKiB(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def cpuSeconds(self) -> float | None:
        """User plus system time of every thread of the server."""
        return processCpuSeconds(self.pid)

    def stop(self) -> int | None:
        """SIGTERM, a graceful stop; killed if still running after 15 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.join(5)
        self.process.stdout.close()
        self._dir.cleanup()
        return self.process.returncode


class ResourceMonitor:
    """Samples the server's RSS every 0.5 s; CPU is read at the start and end.

    The machine's CPU use by anything but the server, this harness and the bystander is
    reported too (as other_cpu_percent, with the hypervisor's steal): on a machine that is
    busy with something else, latency figures mean little.
    """

    INTERVAL = 0.5

    def __init__(self, server: ChatServer, bystanderPid: int | None = None) -> None:
        self.server = server
        self.bystanderPid = bystanderPid
        self.start = self.end = time.monotonic()
        self._known = self._ourCpu()
        self._machine = machineCpuSeconds()
        self.rssStart = server.rssKiB()
        self.rssPeak = self.rssStart or 0
        self.rssEnd: int | None = None
        self.cpuStart = server.cpuSeconds()
        self._ended: tuple[float | None, tuple[float, float], float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            rss = self.server.rssKiB()
            if rss is not None:
                self.rssPeak = max(self.rssPeak, rss)

    def _ourCpu(self) -> float:
        """CPU seconds of the server, this process and the bystander's."""
        pids = [self.server.pid, os.getpid()] + ([self.bystanderPid] if self.bystanderPid else [])
        return sum(processCpuSeconds(pid) or 0.0 for pid in pids)

    def cpuSince(self, cpu: float | None, since: float) -> float | None:
        """The server's CPU use since (C{cpu} seconds, at C{since}), in % of one core."""
        now, elapsed = self.server.cpuSeconds(), time.monotonic() - since
        if cpu is None or now is None or elapsed <= 0:
            return None
        return round(100 * (now - cpu) / elapsed, 1)

    def attackEnded(self) -> None:
        """Take the end figures now, before a scenario's clean-up (reading what the server
        queued, closing) lets the server recover."""
        if self._ended is None:
            self.end = time.monotonic()
            self.rssEnd = self.server.rssKiB()
            self._ended = (
                self.cpuSince(self.cpuStart, self.start),
                machineCpuSeconds(),
                self._ourCpu(),
            )

    def finish(self) -> dict[str, Any]:
        self.attackEnded()
        cpu, (busy, stolen), ours = self._ended
        elapsed = self.end - self.start
        other = (busy - self._machine[0]) - (ours - self._known)
        self._stop.set()
        self._thread.join(2)
        if self.rssEnd is not None:
            self.rssPeak = max(self.rssPeak, self.rssEnd)
        mib = lambda kib: None if kib is None else round(kib / 1024, 1)  # noqa: E731
        return {
            "seconds": round(self.end - self.start, 2),
            "rss_start_mib": mib(self.rssStart),
            "rss_end_mib": mib(self.rssEnd),
            "rss_peak_mib": mib(self.rssPeak),
            "rss_growth_mib": (
                None
                if self.rssEnd is None or self.rssStart is None
                else round((self.rssEnd - self.rssStart) / 1024, 1)
            ),
            "cpu_percent": cpu,
            "other_cpu_percent": round(100 * max(0.0, other) / elapsed, 1),
            "steal_percent": round(100 * (stolen - self._machine[1]) / elapsed, 1),
        }


# -- the bystander ----------------------------------------------------------------------


class Watchers:
    """Two line clients in the default room: watcher1 says a numbered message every
    C{interval} seconds and the time until watcher2 has it is its latency. Runs in the
    bystander's own process (L{Bystander})."""

    SENDER, RECEIVER = "watcher1", "watcher2"
    _TICK = re.compile(rb"<watcher1> tick (\d+)")

    def __init__(self, port: int, interval: float) -> None:
        self.port = port
        self.interval = interval
        self.sent: dict[int, float] = {}
        self.received: dict[int, float] = {}
        self.sendErrors: list[str] = []
        self.notes: list[str] = []  # errors and disconnects the watchers were told of
        self._stop = threading.Event()
        self._stopSending = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.sender = LineClient(self.port)
        self.receiver = LineClient(self.port)
        for client, nick in ((self.sender, self.SENDER), (self.receiver, self.RECEIVER)):
            if not client.chooseNick(nick):
                raise RuntimeError(f"bystander {nick} was not welcomed")
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _send(self) -> None:
        begin = time.monotonic()
        for seq in range(10**7):
            due = begin + seq * self.interval
            if self._stopSending.wait(max(0.0, due - time.monotonic())):
                return
            self.sent[seq] = time.monotonic()
            try:
                self.sender.sock.sendall(b"tick %d\r\n" % seq)
            except OSError as e:
                self.sendErrors.append(f"{time.monotonic() - begin:.1f}s: {e}")
                return

    def _read(self) -> None:
        # watcher1 is read too, or the server would drop it for not reading.
        buffers = {self.sender.sock: b"", self.receiver.sock: b""}
        while not self._stop.is_set() and buffers:
            ready, _, _ = select.select(list(buffers), [], [], 0.1)
            now = time.monotonic()
            for sock in ready:
                try:
                    data = sock.recv(65536)
                except OSError as e:
                    data, why = b"", _errname(e)
                else:
                    why = "eof"
                who = self.SENDER if sock is self.sender.sock else self.RECEIVER
                if not data:
                    self.notes.append(f"{who}: connection ended ({why})")
                    del buffers[sock]
                    continue
                *lines, buffers[sock] = (buffers[sock] + data).split(b"\n")
                for line in lines:
                    if sock is self.receiver.sock and (match := self._TICK.search(line)):
                        self.received.setdefault(int(match.group(1)), now)
                    elif b"error:" in line or b"disconnected" in line:
                        self.notes.append(f"{who}: {line.decode('utf-8', 'replace').strip()}")

    def stop(self, grace: float) -> None:
        """Stop sending, give what is in flight C{grace} seconds to arrive, disconnect."""
        self._stopSending.set()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and len(self.received) < len(self.sent):
            time.sleep(0.05)
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        for client in (self.sender, self.receiver):
            with suppress(OSError):
                client.sock.shutdown(socket.SHUT_RDWR)
            client.close()


def _bystanderMain(port: int, interval: float, grace: float, conn) -> None:
    try:
        watchers = Watchers(port, interval)
        watchers.start()
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    conn.recv()  # told to stop (or the harness went away: EOFError ends us too)
    watchers.stop(grace)
    conn.send(("done", (watchers.sent, watchers.received, watchers.notes, watchers.sendErrors)))


class Bystander:
    """The watchers in a process of their own: attacker threads in this one would hold
    the GIL and delay the watchers' time stamps (tens of ms with ten busy threads). Times
    are CLOCK_MONOTONIC, the same in both processes."""

    def __init__(self, port: int, interval: float = 0.1, grace: float = 2.0) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_bystanderMain, args=(port, interval, grace, child), daemon=True
        )
        self.sent: dict[int, float] = {}
        self.received: dict[int, float] = {}
        self.notes: list[str] = []
        self.sendErrors: list[str] = []

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self) -> None:
        self._process.start()
        if not self._conn.poll(30):
            self._process.kill()
            raise RuntimeError("the bystander did not start")
        what, detail = self._conn.recv()
        if what != "ready":
            self._process.join(5)
            raise RuntimeError(f"bystander: {detail}")

    def stop(self) -> None:
        """Stop it and collect what it measured."""
        try:
            self._conn.send("stop")
            if self._conn.poll(30):
                _, (self.sent, self.received, self.notes, self.sendErrors) = self._conn.recv()
        except (OSError, EOFError) as e:
            self.notes.append(f"bystander process: {e}")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def stats(self, start: float | None = None, end: float | None = None) -> dict[str, Any]:
        """Latency of the messages sent between C{start} and C{end} (monotonic times)."""
        seqs = [
            seq
            for seq, at in sorted(self.sent.items())
            if (start is None or at >= start) and (end is None or at <= end)
        ]
        latencies = sorted(
            1000 * (self.received[seq] - self.sent[seq]) for seq in seqs if seq in self.received
        )
        lost = sum(seq not in self.received for seq in seqs)

        def pct(p: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, math.ceil(p * len(latencies)) - 1)], 1)

        return {
            "sent": len(seqs),
            "received": len(latencies),
            "lost": lost,
            "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "p99_ms": pct(0.99),
            "max_ms": round(latencies[-1], 1) if latencies else None,
        }

    def timeline(self, start: float, end: float) -> list[float | str | None]:
        """The worst latency (ms) of the messages sent in each second from C{start}."""
        worst: list[float | None] = [None] * max(1, math.ceil(end - start))
        for seq, at in self.sent.items():
            slot = int(at - start)
            if 0 <= slot < len(worst):
                late = (self.received.get(seq, math.inf) - at) * 1000
                worst[slot] = max(worst[slot] or 0.0, late)
        return [None if w is None else ("lost" if w == math.inf else round(w, 1)) for w in worst]


# -- scenarios --------------------------------------------------------------------------


@dataclass
class Run:
    """What a scenario works with."""

    server: ChatServer
    monitor: ResourceMonitor
    seconds: float
    # Named spans of time whose bystander latency is reported besides the whole run's; a
    # summary may quote one's worst latency as <NAME>. (The figures exist only once the
    # bystander has stopped.)
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class Scenario:
    name: str
    run: Callable[[Run], dict[str, Any]]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


def wsAttackers(run: Run, count: int, source: str | None = None) -> list[WsClient]:
    return [wsConnect(run.server.ws, source) for _ in range(count)]


def pingflood(run: Run) -> dict[str, Any]:
    """4 websockets send 125-byte pings as fast as they can and never read the pongs."""
    clients = wsAttackers(run, 4)
    ping = wsFrame(OP_PING, b"p" * 125)
    until = time.monotonic() + run.seconds
    pump(clients, ping * 512, until, read=False)
    run.monitor.attackEnded()
    states = finalStates(clients, read=False)
    for client in clients:
        client.close()
    return {
        "attackers": len(clients),
        "dropped": countClosed(states),
        "states": states,
        "mib_sent": [round(c.bytesSent / 2**20, 1) for c in clients],
        "summary": f"{countClosed(states)}/4 dropped; sent "
        f"{sum(c.bytesSent for c in clients) / 2**20:.0f} MiB of pings",
    }


def fragments(run: Run) -> dict[str, Any]:
    """3 websockets start a text message and never finish it: empty continuation frames."""
    clients = wsAttackers(run, 3)
    for client in clients:
        client.sock.sendall(wsFrame(OP_TEXT, b"abc", fin=False))
    cpu, since = run.server.cpuSeconds(), time.monotonic()
    until = since + run.seconds
    pump(clients, wsFrame(OP_CONT, b"", fin=False) * 10000, until, read=True)
    attackCpu = run.monitor.cpuSince(cpu, since)
    run.monitor.attackEnded()
    states = finalStates(clients, read=True)
    for client in clients:
        client.close()
    frames = sum(c.bytesSent for c in clients) // 6
    return {
        "attackers": len(clients),
        "dropped": countClosed(states),
        "states": states,
        "close_frames": [c.closeFrame[1:] if c.closeFrame else None for c in clients],
        "frames_sent": frames,
        "attack_cpu_percent": attackCpu,
        "summary": f"{countClosed(states)}/3 dropped; {frames / 1e6:.1f}M frames; "
        f"CPU {attackCpu}% while attacked",
    }


def slowloris(run: Run) -> dict[str, Any]:
    """300 HTTP requests to the websocket port that never end: a header byte every 10 s."""
    duration = max(run.seconds, 60.0)
    sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    socks: list[socket.socket] = []
    refused = 0
    start = time.monotonic()
    for i in range(300):
        try:
            sock = connectFrom(run.server.ws, sources[i // 100])
            sock.sendall(b"GET / HTTP/1.1\r\n")
            sock.setblocking(False)
            socks.append(sock)
        except OSError:
            refused += 1
    header = b"X-a: " + b"b" * 100
    answers: dict[int, bytes] = {}
    ended: dict[int, str] = {}

    def check() -> None:
        for sock in socks:
            if sock.fileno() in ended:
                continue
            try:
                data = sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                ended[sock.fileno()] = _errname(e)
                continue
            if not data:
                ended[sock.fileno()] = "eof"
            else:
                answers.setdefault(sock.fileno(), data.split(b"\r\n", 1)[0])

    openAt: dict[str, int] = {}
    step = 0
    while (now := time.monotonic() - start) < duration:
        if now >= 35 and "35s" not in openAt:
            check()
            openAt["35s"] = len(socks) - len(ended)
        due = 10.0 * (step + 1)
        if now >= due:
            step += 1
            for sock in socks:
                if sock.fileno() not in ended:
                    try:
                        sock.send(header[(step - 1) % len(header) : (step - 1) % len(header) + 1])
                    except OSError as e:
                        ended[sock.fileno()] = _errname(e)
        check()
        time.sleep(0.2)
    check()
    openAt["end"] = len(socks) - len(ended)
    for sock in socks:
        sock.close()
    statuses: dict[str, int] = {}
    for line in answers.values():
        key = line.decode("latin-1")
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "connections": len(socks),
        "refused_at_connect": refused,
        "open_at_35s": openAt.get("35s"),
        "open_at_end": openAt["end"],
        "duration_s": round(duration, 1),
        "responses": statuses,
        "dropped": len(ended),
        "attackers": len(socks),
        "summary": f"open at 35 s: {openAt.get('35s')}/{len(socks)}, "
        f"at {duration:.0f} s: {openAt['end']}/{len(socks)}",
    }


_TRY_AGAIN = re.compile(r"try again in ([^;.)]+)")


def loginrace(run: Run) -> dict[str, Any]:
    """100 wrong passwords for one account, sent at the same instant."""
    owner = LineClient(run.server.tcp)
    password = "correct-horse-battery"
    if not owner.chooseNick("boss"):
        raise RuntimeError("boss was not welcomed")
    owner.send(f"/register {password}")
    if owner.waitFor(r"registered boss|error:", 30) is None:
        raise RuntimeError("no reply to /register")
    owner.send("/quit")
    owner.waitFor("Goodbye", 5)
    owner.close()

    guessers = []
    for i in range(1, 101):
        client = LineClient(run.server.tcp, "127.0.0.2")
        if not client.chooseNick(f"guesser{i}"):
            raise RuntimeError(f"guesser{i} was not welcomed")
        guessers.append(client)
    for client in guessers:  # what arrived while the others joined
        client.readLines(0)
    payloads = [b"/login boss wrongguess%d\r\n" % i for i in range(1, 101)]
    start = time.monotonic()
    for client, payload in zip(guessers, payloads, strict=True):
        client.sock.sendall(payload)
    replies: dict[int, tuple[float, str]] = {}
    wrong = re.compile(r"wrong nickname or password")
    # Refused unchecked: throttled, or another guess from this address is being checked.
    throttled = re.compile(r"too many failed logins|is being checked")
    selector = selectors.DefaultSelector()
    for i, client in enumerate(guessers):
        selector.register(client.sock, selectors.EVENT_READ, i)
    deadline = start + 120
    while len(replies) < len(guessers) and time.monotonic() < deadline:
        for key, _ in selector.select(0.5):
            i = key.data
            for raw in guessers[i].readLines(0):
                text = _STAMP.sub("", raw.decode("utf-8", "replace"))
                if i not in replies and (
                    wrong.search(text) or throttled.search(text) or "logged in" in text
                ):
                    replies[i] = (time.monotonic() - start, text)
            if guessers[i].closed:
                selector.unregister(guessers[i].sock)
    selector.close()
    for client in guessers:
        client.close()
    checked = [at for at, text in replies.values() if wrong.search(text)]
    refused = [at for at, text in replies.values() if throttled.search(text)]
    lastReply = max((at for at, _ in replies.values()), default=None)
    checkedSpan = max(checked, default=None)

    ownerClient = LineClient(run.server.tcp, "127.0.0.3")
    ownerClient.send(f"/login boss {password}")
    outcome = ownerClient.waitFor(r"logged in as boss|error:", 30)
    ownerClient.close()
    wait = _TRY_AGAIN.search(outcome or "")
    result = (
        "no reply"
        if outcome is None
        else "logged in"
        if "logged in as boss" in outcome
        else "throttled"
        if "too many" in outcome
        else "refused"
    )
    rate = round(len(checked) / checkedSpan, 1) if checked and checkedSpan else None
    return {
        "guesses": len(guessers),
        "replies": len(replies),
        "checked": len(checked),
        "throttled": len(refused),
        "seconds_to_all_replies": None if lastReply is None else round(lastReply, 2),
        "guesses_checked_per_second": rate,
        "owner_from_other_address": result,
        "owner_reply": outcome,
        "owner_wait": wait.group(1) if wait else None,
        "summary": f"{len(checked)} checked, {len(refused)} throttled, {rate}/s; owner: {result}"
        + (f" (wait {wait.group(1)})" if wait else ""),
    }


REPLY_WAIT = 120.0  # seconds to wait for the answer to one request in registerflood


def registerflood(run: Run) -> dict[str, Any]:
    """100 connections register new nicknames nonstop while the owner of one logs in."""
    victimPassword = "victim-password-1"
    victim = LineClient(run.server.tcp, "127.0.0.3")
    if not victim.chooseNick("victim"):
        raise RuntimeError("victim was not welcomed")
    victim.send(f"/register {victimPassword}")
    if victim.waitFor(r"registered victim|error:", 30) is None:
        raise RuntimeError("no reply to /register")
    victim.send("/quit")
    victim.waitFor("Goodbye", 5)
    victim.close()

    until = time.monotonic() + run.seconds
    lock = threading.Lock()
    counts = {"registered": 0, "errors": 0, "timeouts": 0, "disconnected": 0}
    errors: dict[str, int] = {}

    def count(what: str, text: str | None = None) -> None:
        with lock:
            counts[what] += 1
            if text is not None:
                kind = re.sub(r"\d+|r\d+_\w+", "N", text)[:80]
                errors[kind] = errors.get(kind, 0) + 1

    def flooder(i: int) -> None:
        try:
            client = LineClient(run.server.tcp, "127.0.0.2")
        except OSError as e:
            count("errors", f"connect: {e}")
            return
        try:
            if not client.chooseNick(f"r{i}_{random.getrandbits(32):08x}"):
                count("errors", "not welcomed")
                return
            while time.monotonic() < until and not client.closed:
                nick = f"r{i}_{random.getrandbits(32):08x}"
                client.send(f"/nick {nick}")
                # Replies may take long (that is the finding): wait, so that each
                # connection has exactly one request in flight.
                reply = client.waitFor(rf"known as {nick}$|^error:", REPLY_WAIT)
                if reply is None:
                    count("disconnected" if client.closed else "timeouts")
                    continue
                if reply.startswith("error:"):
                    count("errors", reply)
                    continue
                client.send("/register password123")
                reply = client.waitFor(rf"registered {nick};|^error:", REPLY_WAIT)
                if reply is None:
                    count("disconnected" if client.closed else "timeouts")
                elif reply.startswith("error:"):
                    count("errors", reply)
                else:
                    count("registered")
        except OSError:
            count("disconnected")
        finally:
            client.close()

    logins: list[dict[str, Any]] = []

    def probe(n: int) -> None:
        try:
            client = LineClient(run.server.tcp, "127.0.0.3")
        except OSError as e:
            logins.append({"n": n, "result": f"connect: {e}"})
            return
        try:
            if not client.chooseNick(f"probe{n}", 30):
                logins.append({"n": n, "result": "not welcomed"})
                return
            sent = time.monotonic()
            client.send(f"/login victim {victimPassword}")
            reply = client.waitFor(r"logged in as victim|^error:", REPLY_WAIT)
            took = round(time.monotonic() - sent, 3)
            ok = reply is not None and "logged in as victim" in reply
            logins.append({"n": n, "seconds": took, "ok": ok, "reply": reply})
        except OSError as e:
            logins.append({"n": n, "result": str(e)})
        finally:
            client.close()

    flooders = [threading.Thread(target=flooder, args=(i,), daemon=True) for i in range(100)]
    for thread in flooders:
        thread.start()
    probes = []
    n = 0
    while time.monotonic() < until:
        n += 1
        thread = threading.Thread(target=probe, args=(n,), daemon=True)
        thread.start()
        probes.append(thread)
        time.sleep(1.0)
    for thread in flooders + probes:
        thread.join(2 * REPLY_WAIT + 10)
    times = sorted(entry["seconds"] for entry in logins if "seconds" in entry)
    failed = [entry for entry in logins if not entry.get("ok")]
    p50 = round(statistics.median(times), 3) if times else None
    return {
        **counts,
        "error_kinds": errors,
        "logins": len(logins),
        "logins_failed": len(failed),
        "login_p50_s": p50,
        "login_max_s": times[-1] if times else None,
        "login_failures": failed[:5],
        "summary": f"{counts['registered']} accounts; victim login p50 {p50} s, "
        f"max {times[-1] if times else None} s, {len(failed)}/{len(logins)} failed",
    }


def closestall(run: Run) -> dict[str, Any]:
    """A websocket floods text until flood control closes it, and keeps sending."""
    client = wsConnect(run.server.ws)
    client.sock.sendall(wsFrame(OP_TEXT, b"flooder"))
    if client.waitText(r"Welcome, flooder", 10) is None:
        raise RuntimeError("flooder was not welcomed")
    batch = b"".join(wsFrame(OP_TEXT, b"flood message %d" % i) for i in range(1000))
    start = time.monotonic()
    farewell: list[float] = []

    def watch() -> None:
        if not farewell and any("too much, too fast" in text for text in client.texts):
            farewell.append(time.monotonic())

    # Until the server ends the connection (or the time is up), whatever it says.
    pump([client], batch, start + max(run.seconds, 10.0), read=True, onIdle=watch)
    watch()
    state = client.state()
    client.close()
    # The window is the 10 s from the start, however soon the flooder was gone; what was
    # sent at its end gets a second to arrive before it is counted as lost.
    time.sleep(max(0.0, start + 11.0 - time.monotonic()))
    closeAt = client.closeFrame[0] - start if client.closeFrame else None
    endAt = client.ended[0] - start if client.ended else None
    keptOpen = (
        round(client.ended[0] - client.closeFrame[0], 2)
        if client.ended and client.closeFrame
        else None
    )
    run.windows["first_10s"] = (start, start + 10)
    return {
        "farewell_at_s": round(farewell[0] - start, 2) if farewell else None,
        "close_frame_at_s": None if closeAt is None else round(closeAt, 2),
        "close_code": client.closeFrame[1] if client.closeFrame else None,
        "ended_at_s": None if endAt is None else round(endAt, 2),
        "ended_how": client.ended[1] if client.ended else state,
        "kept_open_after_close_s": keptOpen,
        "mib_sent": round(client.bytesSent / 2**20, 1),
        "attackers": 1,
        "dropped": int(client.ended is not None or state != "open"),
        "summary": f"close frame at {None if closeAt is None else round(closeAt, 2)} s, "
        f"kept open {keptOpen} s after it; bystander max <first_10s> ms in first 10 s",
    }


def fragburst(run: Run) -> dict[str, Any]:
    """One sendall: a text frame and 100,000 one-byte continuation frames."""
    client = wsConnect(run.server.ws)
    time.sleep(1.0)
    parts = [wsFrame(OP_TEXT, b"a", fin=False)]
    for _ in range(100_000):
        key = os.urandom(4)
        parts.append(b"\x00\x81" + key + bytes([ord("a") ^ key[0]]))
    burst = b"".join(parts)
    client.sock.settimeout(60)
    start = time.monotonic()
    try:
        client.sock.sendall(burst)
    except OSError as e:
        client.endedBecause(_errname(e))
    sendTook = time.monotonic() - start
    # Read what comes for up to 15 s: a close frame, maybe, and the end of the connection
    # (Autobahn waits up to 5 s for the client's answering close frame).
    client.waitText(r"$^", 15.0)
    state = client.state()
    client.close()
    run.windows["around_burst"] = (start - 0.5, start + 2.5)
    closed = client.closeFrame is not None or state != "open"
    return {
        "burst_bytes": len(burst),
        "sendall_s": round(sendTook, 3),
        "close_frame": client.closeFrame[1:] if client.closeFrame else None,
        "state": state,
        "closed": closed,
        "close_frame_at_s": round(client.closeFrame[0] - start, 2) if client.closeFrame else None,
        "ended_at_s": round(client.ended[0] - start, 2) if client.ended else None,
        "attackers": 1,
        "dropped": int(state != "open"),
        "summary": f"{len(burst) // 1000} KB; bystander max <around_burst> ms around it; "
        f"closed: {'yes' if closed else 'no'}"
        + (
            f" (code {client.closeFrame[1]} at {client.closeFrame[0] - start:.1f} s)"
            if client.closeFrame
            else ""
        )
        + (f", connection ended at {client.ended[0] - start:.1f} s" if client.ended else ""),
    }


def nulpath(run: Run) -> dict[str, Any]:
    """A request for a path with an encoded NUL in it."""
    mark = run.server.log.mark()
    sock = connectFrom(run.server.ws)
    sock.sendall(b"GET /index.html%00.js HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    response = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.5)
        if ready:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            response += chunk
    sock.close()
    time.sleep(1.0)
    log = run.server.log.since(mark)
    status = response.split(b"\r\n", 1)[0].decode("latin-1") if response else "(no response)"
    return {
        "status": status,
        **{f"request_{k}": v for k, v in log.items()},
        "summary": f"{status!r}; {log['log_lines']} log lines, {log['tracebacks']} Tracebacks",
    }


def churn(run: Run) -> dict[str, Any]:
    """Line connections opened and closed as fast as possible from five addresses."""
    duration = max(run.seconds, 30.0)
    sources = [f"127.0.0.{n}" for n in range(1, 6)]
    mark = run.server.log.mark()
    until = time.monotonic() + duration
    lock = threading.Lock()
    done = [0]
    failures: dict[str, int] = {}

    def loop(source: str) -> None:
        connects, errs = 0, {}
        while time.monotonic() < until:
            try:
                sock = connectFrom(run.server.tcp, source, timeout=5)
            except OSError as e:
                name = _errname(e) if e.errno else type(e).__name__
                errs[name] = errs.get(name, 0) + 1
                time.sleep(0.01)
                continue
            sock.close()
            connects += 1
        with lock:
            done[0] += connects
            for name, n in errs.items():
                failures[name] = failures.get(name, 0) + n

    threads = [threading.Thread(target=loop, args=(s,), daemon=True) for s in sources * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 30)
    time.sleep(1.0)  # the server logs the last disconnects
    log = run.server.log.since(mark)
    return {
        "duration_s": duration,
        "connects": done[0],
        "connects_per_second": round(done[0] / duration),
        "connect_errors": failures,
        **{f"churn_{k}": v for k, v in log.items()},
        "summary": f"{done[0]} connects ({done[0] / duration:.0f}/s); "
        f"{log['log_lines']} log lines, {log['log_bytes'] / 2**20:.1f} MiB logged",
    }


def reconnectflood(run: Run) -> dict[str, Any]:
    """20 line connections from one address flood the room; each one dropped reconnects
    at once. Counts what reached a listener in the room."""
    listener = LineClient(run.server.tcp, "127.0.0.2")
    if not listener.chooseNick("listener"):
        raise RuntimeError("the listener was not welcomed")
    until = time.monotonic() + run.seconds
    lock = threading.Lock()
    totals = {"connects": 0}
    burst = b"spam spam spam spam spam spam spam spam\n" * 200

    def flooder(n: int) -> None:
        connects = 0
        while time.monotonic() < until:
            try:
                sock = connectFrom(run.server.tcp, "127.0.0.66", timeout=5)
            except OSError:
                time.sleep(0.01)
                continue
            connects += 1
            try:
                sock.sendall(f"fl{n}x{connects}\r\n".encode())
                sock.setblocking(False)
                while time.monotonic() < until:
                    with suppress(BlockingIOError):
                        if sock.recv(65536) == b"":
                            break  # dropped (or refused): straight back
                    with suppress(BlockingIOError):
                        sock.send(burst)
                    time.sleep(0.005)
            except OSError:
                pass
            finally:
                sock.close()
        with lock:
            totals["connects"] += connects

    threads = [threading.Thread(target=flooder, args=(n,), daemon=True) for n in range(20)]
    for thread in threads:
        thread.start()
    while time.monotonic() < until:
        listener.readLines(0.1)
    for thread in threads:
        thread.join(30)
    run.monitor.attackEnded()
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        listener.readLines(0.1)
    spam = sum(1 for line in listener.lines if b"> spam" in line)
    listener.close()
    return {
        "duration_s": run.seconds,
        "delivered": spam,
        "delivered_per_second": round(spam / run.seconds),
        "connects": totals["connects"],
        "summary": f"{spam} flood lines reached the room ({spam / run.seconds:.0f}/s) "
        f"over {totals['connects']} connections",
    }


def linestall(run: Run) -> dict[str, Any]:
    """20 line connections (one address each) flood lines and never read; each one the
    server cuts off goes on sending until its connection fails, then reconnects. What the
    server took from them shows whether it goes on reading a connection it has closed."""
    until = time.monotonic() + run.seconds
    lock = threading.Lock()
    totals = {"connects": 0, "bytes": 0, "ended": 0}
    burst = b"spam spam spam spam spam spam spam spam\n" * 500

    def flooder(n: int) -> None:
        connects = sent = ended = 0
        while time.monotonic() < until:
            try:
                sock = connectFrom(run.server.tcp, f"127.0.0.{100 + n}", timeout=5)
            except OSError:
                time.sleep(0.01)
                continue
            connects += 1
            sock.settimeout(0.2)  # (a send the server no longer reads waits, then fails)
            try:
                sock.sendall(f"st{n}x{connects}\r\n".encode())
                while time.monotonic() < until:
                    with suppress(TimeoutError):
                        sent += sock.send(burst)
            except OSError:
                ended += 1  # reset: the server's close_grace is over
            finally:
                sock.close()
        with lock:
            totals["connects"] += connects
            totals["bytes"] += sent
            totals["ended"] += ended

    threads = [threading.Thread(target=flooder, args=(n,), daemon=True) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(run.seconds + 30)
    run.monitor.attackEnded()
    mib = totals["bytes"] / 2**20
    return {
        "duration_s": run.seconds,
        "connects": totals["connects"],
        "mib_sent": round(mib, 1),
        "attackers": totals["connects"],
        "dropped": totals["ended"],
        "summary": f"the server took {mib:.0f} MiB from {totals['connects']} connections "
        f"in {run.seconds:.0f} s",
    }


def rangeamp(run: Run) -> dict[str, Any]:
    """Ten requests at once, each asking for /app.js in 2,000 overlapping ranges."""
    header = "bytes=" + ",".join(["0-"] * 2000)
    request = (
        f"GET /app.js HTTP/1.1\r\nHost: localhost\r\nRange: {header}\r\nConnection: close\r\n\r\n"
    ).encode()
    received = [0] * 10
    started = time.monotonic()

    def fetch(i: int) -> None:
        with suppress(OSError), connectFrom(run.server.ws, f"127.0.0.{10 + i}", 30) as sock:
            sock.sendall(request)
            while chunk := sock.recv(1 << 20):
                received[i] += len(chunk)

    threads = [threading.Thread(target=fetch, args=(i,), daemon=True) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    run.monitor.attackEnded()
    sent, answer = len(request) * 10, sum(received)
    return {
        "request_bytes": sent,
        "response_bytes": answer,
        "amplification": round(answer / sent, 1),
        "seconds": round(elapsed, 2),
        "summary": f"{sent / 1e3:.0f} KB asked, {answer / 1e6:.1f} MB answered "
        f"(x{answer / sent:.1f}) in {elapsed:.1f} s",
    }


def pingsilent(run: Run) -> dict[str, Any]:
    """3 websockets never read and send an empty text frame every 2 s; ping_interval and
    ping_timeout are 5 s, so each should be closed about 10 s in."""
    clients = wsAttackers(run, 3, "127.0.0.77")
    blank = wsFrame(OP_TEXT, b"")
    started = time.monotonic()
    until = started + max(run.seconds, 20.0)
    closedAt: dict[int, float] = {}
    while time.monotonic() < until and len(closedAt) < len(clients):
        for i, client in enumerate(clients):
            if i in closedAt:
                continue
            try:
                client.sock.sendall(blank)
            except OSError:
                closedAt[i] = time.monotonic() - started
        time.sleep(2.0)
    run.monitor.attackEnded()
    for client in clients:
        client.close()
    times = sorted(round(t, 1) for t in closedAt.values())
    return {
        "closed_after_s": times,
        "summary": f"{len(closedAt)}/3 closed"
        + (f", after {times[0]:g}-{times[-1]:g} s" if times else f" in {until - started:.0f} s"),
    }


def invisible(run: Run) -> dict[str, Any]:
    """Zero-width characters in a message and in a nickname."""
    speaker, listener = LineClient(run.server.tcp), LineClient(run.server.tcp)
    if not (speaker.chooseNick("inv1") and listener.chooseNick("inv2")):
        raise RuntimeError("inv1/inv2 were not welcomed")
    listener.readLines(0.2)
    before = len(listener.lines)
    speaker.send("hi\u200bthere\ufeff")
    listener.waitFor(r"<inv1>", 5)
    received = [line for line in listener.lines[before:] if b"<inv1>" in line]
    speaker.send("/nick in\u200bvis")
    reply = speaker.waitFor(r"^error:|known as", 5)
    speaker.close()
    listener.close()
    got = _STAMP.sub("", received[0].decode("utf-8", "replace")) if received else None
    shown = reply if reply is not None and reply.isascii() else ascii(reply)
    return {
        "received_line": repr(received[0]) if received else None,
        "nick_reply": reply,
        "summary": f"received {ascii(got)}; nick: {shown}",
    }


SCENARIOS = [
    Scenario("pingflood", pingflood),
    Scenario("fragments", fragments),
    Scenario("slowloris", slowloris),
    Scenario("loginrace", loginrace),
    Scenario("registerflood", registerflood),
    Scenario("closestall", closestall),
    Scenario("fragburst", fragburst),
    Scenario("nulpath", nulpath),
    Scenario("churn", churn),
    Scenario("invisible", invisible),
    Scenario("reconnectflood", reconnectflood),
    Scenario("linestall", linestall),
    Scenario("rangeamp", rangeamp),
    Scenario("pingsilent", pingsilent, {"timeouts": {"ping_interval": 5.0, "ping_timeout": 5.0}}),
]


# -- running and reporting --------------------------------------------------------------


@contextmanager
def bystanderOn(server: ChatServer) -> Iterator[Bystander]:
    bystander = Bystander(server.tcp)
    bystander.start()
    try:
        yield bystander
    finally:
        bystander.stop()


def runScenario(scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    configText, changed = derivedConfig(args.config, scenario.overrides)
    server = ChatServer(args.twistd, configText, args.backlog, args.serverCpus)
    result: dict[str, Any] = {"scenario": scenario.name, "settings_changed": changed}
    try:
        with bystanderOn(server) as bystander:
            time.sleep(1.0)  # the bystander settles before anything is measured
            mark = server.log.mark()
            monitor = ResourceMonitor(server, bystander.pid)
            run = Run(server, monitor, args.seconds)
            try:
                result["attack"] = scenario.run(run)
            except Exception as e:  # one broken scenario must not hide the others
                result["error"] = f"{type(e).__name__}: {e}"
            time.sleep(0.5)
            result["server"] = monitor.finish() | server.log.since(mark)
            result["server"]["alive"] = server.alive()
            window = (monitor.start, monitor.end)
        result["bystander"] = bystander.stats(*window)
        result["bystander"]["per_second_max_ms"] = bystander.timeline(*window)
        attack = result.get("attack", {})
        for name, span in run.windows.items():
            stats = bystander.stats(*span)
            result["bystander"][name] = stats
            if "summary" in attack:
                attack["summary"] = attack["summary"].replace(f"<{name}>", _fmt(stats["max_ms"]))
        result["bystander"]["notes"] = bystander.notes[:20]
        result["bystander"]["send_errors"] = bystander.sendErrors
    except Exception as e:
        result.setdefault("error", f"{type(e).__name__}: {e}")
    finally:
        result.setdefault("server", {})["exit_code"] = server.stop()
        if "error" in result or result["server"].get("alive") is False:
            result["server"]["last_log_lines"] = list(server.log.recent)[-20:]
    return result


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'scenario':<14} {'RSS MiB start>end (peak)':<25} {'CPU%':>6} "
        f"{'bystander p50/p99/max ms':<25} {'lost':>5} {'drop':>7} {'log':>8} {'tb':>3} "
        f"{'noise':>5}  result"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        s, b, a = r.get("server", {}), r.get("bystander", {}), r.get("attack", {})
        rss = (
            f"{_fmt(s.get('rss_start_mib'))}>{_fmt(s.get('rss_end_mib'))} "
            f"({_fmt(s.get('rss_peak_mib'))})"
        )
        latency = f"{_fmt(b.get('p50_ms'))}/{_fmt(b.get('p99_ms'))}/{_fmt(b.get('max_ms'))}"
        lost = f"{_fmt(b.get('lost'))}"
        dropped = f"{a['dropped']}/{a['attackers']}" if "attackers" in a else "-"
        key = r["error"] if "error" in r else a.get("summary", "")
        rows.append(
            f"{r['scenario']:<14} {rss:<25} {_fmt(s.get('cpu_percent')):>6} {latency:<25} "
            f"{lost:>5} {dropped:>7} {_fmt(s.get('log_lines')):>8} {_fmt(s.get('tracebacks')):>3}"
            f" {_fmt(s.get('other_cpu_percent'), '.0f'):>5}  {key}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--twistd",
        type=Path,
        default=Path(sys.executable).with_name("twistd"),
        help="the twistd that runs chatserv [default: next to this Python]",
    )
    parser.add_argument("--config", type=Path, help="chatserv config file to start from")
    parser.add_argument("--seconds", type=float, default=20.0, help="attack duration [20]")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument(
        "--backlog",
        type=int,
        default=1024,
        help="listen backlog of the server's ports [1024, as chatserv gives a bare port; "
        "0: Twisted's default, 50]",
    )
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin: by default, with two CPUs or more, the server runs on the first "
        "and this harness (and the bystander) on the others, as bench/run.py does, so that "
        "the attack's own CPU use does not show as server latency",
    )
    args = parser.parse_args(argv)
    args.serverCpus = None
    cpus = sorted(os.sched_getaffinity(0))
    args.pin = args.pin and len(cpus) >= 2 and shutil.which("taskset") is not None
    if args.pin:
        args.serverCpus = {cpus[0]}
        os.sched_setaffinity(0, set(cpus[1:]))  # the bystander's process inherits this
    chosen = SCENARIOS
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        known = {s.name: s for s in SCENARIOS}
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(known)})")
        chosen = [known[n] for n in names]
    results = []
    for scenario in chosen:
        print(f"-- {scenario.name} ...", flush=True)
        result = runScenario(scenario, args)
        results.append(result)
        summary = result.get("error") or result.get("attack", {}).get("summary", "")
        print(f"   {summary}", flush=True)
    print()
    print(table(results))
    if args.json:
        meta = {
            "twistd": str(args.twistd),
            "config": str(args.config) if args.config else None,
            "seconds": args.seconds,
            "backlog": args.backlog,
            "pinned": args.pin,
            "cpus": os.cpu_count(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
