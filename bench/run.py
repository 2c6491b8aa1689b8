"""Benchmark chatserv against bare Twisted, bare Autobahn and C++/C IRC servers.

    python bench/run.py                 # every scenario (about 25 minutes)
    python bench/run.py --quick         # every scenario, small (about a minute)
    python bench/run.py --scenarios fanout --protos line
    python bench/run.py --scenarios rooms,storm --profile docs/profiles

Every server runs pinned to core 0 (taskset -c 0), the load generator (bench/loadgen.c,
compiled with gcc -O2 into bench/build/) on core 1. Scenarios:

  fanout    100 clients in one room; 100 and 10 senders; at 5 msg/s per sender and at the
            highest rate sustained with nothing lost and p99 under --p99-limit (doubling,
            then bisecting). line: chatserv vs baseline_line.py; ws: chatserv text mode vs
            baseline_ws.py; wsjson: chatserv's JSON subprotocol vs baseline_ws.py; irc:
            chatserv's IRC listener (channel #lobby) vs baseline_line.py driven as a line
            server (IRC is a line protocol; the bare broadcast has no registration).
  rooms     1000 clients in 100 rooms of 10, every client sending, on --room-protos
            (line, irc, ws, wsjson): at 5 msg/s per client and at the highest rate that
            passes. On irc, InspIRCd and ngIRCd (--irc-peers, where installed) run the
            same scenario as peers, started with a generated config (bench/*.conf.in).
            Server CPU seconds are taken over the measured window only (first message
            sent to the last delivered), and given per incoming message.
  storm     --storm-clients (10,000) connect as fast as the server takes them, choose a
            nickname and join one of 100 rooms (chatserv on --storm-protos, InspIRCd on
            irc: --storm-peers); seconds until every one is in, server CPU seconds, RSS per
            logged-in user. Baseline: bare Twisted accepting and greeting the same number
            (baseline_line.py --greet). At most --storm-inflight (1000) clients are
            connecting or logging in at a time, under the listen backlog (1024): an
            overflowing accept queue costs a client a SYN retransmit (1 s, then 3 s, ...),
            which measures the kernel's timers, not the server (0: all 10,000 at once).
            The kernel's listen-overflow and SYN-retransmit counters are reported.
  capacity  10,000 idle connections held; server RSS per connection (VmRSS before/after).
  cluster   two nodes sharing rooms through Redis (bench/cluster.py): senders on one,
            receivers on the other; then the rooms load, each room's members alternating
            between the nodes; each against one node with the same load. Needs --pg
            (or CHATSERV_TEST_PG) and redis-server. Not in the default set.

--profile DIR records py-spy profiles of chatserv (an extra run of each rooms wire at the
common rate, and an extra storm per storm wire, neither of them counted in the tables):
raw collapsed stacks (NAME.txt), a flame graph (NAME.svg) and the top frames (NAME.top.txt).

Prints a table (chatserv, baseline, ratio) and writes every raw result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from string import Template

import cluster as clusterbench
import flame

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
SERVER_CORE = "0"
GEN_CORE = "1"
# With one core there is nothing to pin to: the numbers are then only a smoke test.
PIN = len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") is not None


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if PIN else argv


TICKS = os.sysconf("SC_CLK_TCK")
BACKLOG = 1024  # every server's listen backlog: chatserv's default, as the baselines have
IRC_PEERS = ("inspircd", "ngircd")  # C++ and C IRC servers, run where installed


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def buildLoadgen() -> Path:
    source = HERE / "loadgen.c"
    out = HERE / "build" / "loadgen"
    if not out.exists() or out.stat().st_mtime < source.stat().st_mtime:
        out.parent.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(source)], check=True)
    return out


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitForPort(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Server:
    """A server process pinned to the server core."""

    def __init__(self, name: str, argv: list[str], ports: dict[str, int], workdir: str):
        self.name = name
        self.ports = ports
        self.logfile = open(Path(workdir) / f"{name}.log", "wb")
        self.proc = subprocess.Popen(
            pinned(SERVER_CORE, argv),
            cwd=workdir,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
        )
        for port in ports.values():
            waitForPort(port, self.proc)
        # The connection probes above must be gone before anything is measured.
        time.sleep(0.2)

    def cpuSeconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rssKiB(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()


def peerConfig(kind: str, port: int, workdir: str, maxConnections: int) -> Path:
    """An IRC peer's config from its template: this port, files in the work directory."""
    template = Template((HERE / f"{kind}.conf.in").read_text())
    conf = Path(workdir) / f"{kind}-{port}.conf"
    conf.write_text(
        template.substitute(
            port=port,
            pidfile=Path(workdir) / f"{kind}-{port}.pid",
            maxconn=maxConnections,
            backlog=BACKLOG,
        )
    )
    return conf


def startServer(kind: str, workdir: str, maxConnections: int = 20000) -> Server:
    py = sys.executable
    if kind in IRC_PEERS:
        port = freePort()
        conf = peerConfig(kind, port, workdir, maxConnections)
        if kind == "inspircd":
            argv = ["inspircd", "--nofork", f"--config={conf}"]
            if os.geteuid() == 0:
                argv.append("--runasroot")  # it refuses to start as root otherwise
        else:
            argv = ["ngircd", "--nodaemon", "--config", str(conf)]
        return Server(kind, argv, {"irc": port}, workdir)
    if kind == "baseline_greet":  # the connect storm's baseline: accept and greet
        port = freePort()
        argv = [py, str(HERE / "baseline_line.py"), str(port), "--greet"]
        return Server(kind, argv, {"line": port}, workdir)
    if kind == "chatserv":
        tcp, ws, irc = freePort(), freePort(), freePort()
        twistd = shutil.which("twistd", path=str(BIN)) or "twistd"
        argv = [
            twistd, "-n", "--pidfile=", "chatserv",
            "--config", str(ROOT / "etc" / "bench.toml"),
            "--db", str(Path(workdir) / f"chatserv-{tcp}.db"),
            "--tcp", f"tcp:{tcp}:interface=127.0.0.1:backlog={BACKLOG}",
            "--ws", f"tcp:{ws}:interface=127.0.0.1:backlog={BACKLOG}",
            "--irc", f"tcp:{irc}:interface=127.0.0.1:backlog={BACKLOG}",
        ]  # fmt: skip
        ports = {"line": tcp, "ws": ws, "wsjson": ws, "irc": irc}
        return Server(kind, argv, ports, workdir)
    port = freePort()
    script = HERE / f"{kind}.py"
    proto = "line" if kind == "baseline_line" else "ws"
    return Server(kind, [py, str(script), str(port)], {proto: port}, workdir)


class Profiler:
    """py-spy recording one server process, pinned to the generator's core."""

    def __init__(self, directory: Path, rate: int):
        self.directory = directory
        self.rate = rate
        self.pyspy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
        if not self.pyspy:
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        directory.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def start(self, pid: int, name: str) -> None:
        self.name = name
        self.raw = self.directory / f"{name}.txt"
        argv = [
            self.pyspy, "record", "--pid", str(pid), "--rate", str(self.rate),
            "--format", "raw", "--function", "--output", str(self.raw),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            pinned(GEN_CORE, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.started = time.monotonic()

    def stop(self) -> dict:
        """Stop recording; write the flame graph and the top frames; return the summary."""
        assert self.proc is not None
        seconds = time.monotonic() - self.started
        self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has, then exits
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.proc = None
        if not self.raw.exists():
            raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
        stacks = flame.parse(self.raw.read_text())
        title = f"chatserv {self.name}, py-spy {self.rate}/s over {seconds:.1f} s"
        (self.directory / f"{self.name}.svg").write_text(flame.render(stacks, title))
        summary = flame.summary(stacks)
        summary["seconds"] = round(seconds, 2)
        # Samples are taken only while the server runs Python code (idle ones are left out).
        summary["busy_share"] = round(summary["samples"] / (seconds * self.rate), 3)
        (self.directory / f"{self.name}.top.txt").write_text(
            f"{title}\nnon-idle samples / (seconds x rate): {summary['busy_share']:.0%}\n"
            + flame.formatSummary(summary)
            + "\n"
        )
        log(f"  profile {self.name}: {self.directory / self.name}.svg")
        return summary


class Runner:
    def __init__(self, args, workdir: str):
        self.args = args
        self.workdir = workdir
        self.loadgen = buildLoadgen()
        self.servers: dict[str, Server] = {}
        self.profiler = Profiler(Path(args.profile), args.profile_rate) if args.profile else None
        self.genErrors = open(Path(workdir) / "loadgen.stderr", "w+")

    def server(self, kind: str) -> Server:
        if kind not in self.servers:
            self.servers[kind] = startServer(kind, self.workdir, self.args.max_connections)
        return self.servers[kind]

    def restart(self, kind: str) -> Server:
        if kind in self.servers:
            self.servers.pop(kind).stop()
        return self.server(kind)

    def stopAll(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()
        if self.profiler and self.profiler.proc:
            self.profiler.proc.kill()
            self.profiler.proc.wait()

    def genArgs(self, server: Server, proto: str, clients: int, rooms: int) -> list[str]:
        argv = [
            str(self.loadgen),
            "--port", str(server.ports[proto]), "--proto", proto,
            "--clients", str(clients), "--rooms", str(rooms),
        ]  # fmt: skip
        if proto == "irc":
            # Registers, joins #lobby (#rN with --join) once welcomed; ready at its 366.
            if rooms > 1:
                argv.append("--join")
            if server.name == "ngircd":
                # Its listen backlog is 10 (hard-coded): a burst of connects would overflow it.
                argv += ["--max-unready", "8"]
        elif server.name == "baseline_greet":
            argv += ["--ready-match", "hello"]
        elif server.name.startswith("chatserv"):  # (the cluster's nodes too)
            argv += ["--nick", "--ready-match", '"type":"who"' if proto == "wsjson" else "users ("]
            if rooms > 1:
                argv.append("--join")  # ready at its own room's list (see loadgen.c)
            if proto == "wsjson":
                argv.append("--echo")  # JSON clients get their own messages back
        return pinned(GEN_CORE, argv)

    def generate(self, argv: list[str], onMeasuring=None) -> dict:
        """Run the load generator to its end; its last line is the result."""
        self.genErrors.seek(0)
        self.genErrors.truncate()
        gen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.genErrors, text=True)
        lines = []
        for line in gen.stdout:  # the generator's phases are bounded in time
            lines.append(line)
            if onMeasuring and line.startswith('{"phase":"measuring"'):
                onMeasuring()
        gen.wait(60)
        if gen.returncode != 0 or not lines:
            self.genErrors.seek(0)
            errors = self.genErrors.read()[-2000:]
            raise RuntimeError(f"loadgen failed ({gen.returncode}): {errors}")
        return json.loads(lines[-1])

    def measure(self, kind, proto, clients, senders, rate, duration, rooms=1, profile=None) -> dict:
        server = self.server(kind)
        argv = self.genArgs(server, proto, clients, rooms)
        argv += ["--senders", str(senders), "--rate", str(rate), "--duration", str(duration)]
        argv += ["--drain", str(self.args.drain), "--settle", str(self.args.settle)]
        argv += ["--server-pid", str(server.proc.pid)]
        cpu0, t0 = server.cpuSeconds(), time.monotonic()
        onMeasuring = None
        if profile:
            assert self.profiler is not None
            onMeasuring = lambda: self.profiler.start(server.proc.pid, profile)  # noqa: E731
        result = self.generate(argv, onMeasuring)
        if profile:
            result["profile"] = self.profiler.stop()
        # Server CPU over the whole generator run (connect, settle, send, drain).
        result["server_cpu_share"] = round(
            (server.cpuSeconds() - cpu0) / (time.monotonic() - t0), 3
        )
        # And over the measured window alone (first message sent to the last delivered).
        if result["server_cpu_s"] >= 0 and result["sent"]:
            result["cpu_us_per_msg"] = round(result["server_cpu_s"] / result["sent"] * 1e6, 1)
        result["server"] = kind
        result["ok"] = self.passed(result)
        log(
            f"  {kind:14} {proto:6} c={clients} s={senders} rate={rate:g}/s "
            f"-> {result['deliveries_per_s']:.0f} deliveries/s p50={result['p50_ms']:.1f} "
            f"p99={result['p99_ms']:.1f} ms lost={result['lost']} dup={result['dup']} "
            f"gen_cpu={result['gen_cpu_share']:.2f} {'ok' if result['ok'] else 'FAIL'}"
        )
        return result

    def passed(self, r: dict) -> bool:
        scheduled = r["senders"] * r["rate"] * r["duration_s"]
        return (
            r["ready"] == r["clients"]
            and r["lost"] == 0
            and r["dup"] == 0
            and r["misrouted"] == 0
            and r["closed"] == 0
            and r["p99_ms"] <= self.args.p99_limit
            and r["sent"] >= 0.98 * scheduled
        )

    def maxRate(self, kind, proto, clients, senders, rooms=1) -> dict:
        """Highest per-sender rate that passes: double from the start rate, then bisect."""
        a = self.args
        # The start rate is given for 100 senders: fewer senders start proportionally higher.
        return searchRate(
            lambda rate: self.measure(kind, proto, clients, senders, rate, a.step_duration, rooms),
            round(a.start_rate * 100 / senders, 2),
            a.max_steps,
        )


def searchRate(step, rate: float, maxSteps: int) -> dict:
    """The highest rate at which C{step(rate)} passes: double from C{rate}, then bisect."""
    best, failed, steps = None, None, []
    while len(steps) < maxSteps:
        r = step(rate)
        steps.append(r)
        if r["ok"]:
            best = r
            if failed is None:
                rate *= 2
                continue
        else:
            failed = rate
        low = best["rate"] if best else 0.0
        if failed - low <= max(0.08 * failed, 0.5):
            break
        rate = round((low + failed) / 2, 2)
    return {"best": best, "steps": steps}


def fanout(run: Runner, protos, results: dict) -> None:
    a = run.args
    for proto in protos:
        for senders in a.senders:
            for kind in ("chatserv", BASELINE[proto]):
                bproto = {"baseline_ws": "ws", "baseline_line": "line"}.get(kind, proto)
                key = f"fanout/{proto}/{senders}senders/{kind}"
                log(f"{key}")
                entry = {
                    "common": run.measure(
                        kind, bproto, a.clients, senders, a.common_rate, a.duration
                    )
                }
                if not a.quick:
                    entry["max"] = run.maxRate(kind, bproto, a.clients, senders)
                results[key] = entry


def ircPeers(names: list[str], results: dict) -> list[str]:
    """The IRC peers asked for that are installed; the others are noted in the results."""
    found = []
    for name in names:
        if shutil.which(name):
            found.append(name)
        else:
            log(f"{name} is not installed (Debian package {name}): no {name} rows")
            results.setdefault("missing", []).append(name)
    return found


def rooms(run: Runner, results: dict) -> None:
    a = run.args
    for proto in a.room_protos:
        for kind in ["chatserv", *(run.peers if proto == "irc" else [])]:
            key = f"rooms/{proto}/{kind}"
            log(key)
            # Fresh server: the previous scenario's users are gone, but start from scratch.
            run.restart(kind)
            entry = {
                "common": run.measure(
                    kind, proto, a.room_clients, a.room_clients, a.common_rate,
                    a.duration, rooms=a.rooms,
                )
            }  # fmt: skip
            if not a.quick:
                entry["max"] = run.maxRate(
                    kind, proto, a.room_clients, a.room_clients, rooms=a.rooms
                )
            if run.profiler and kind == "chatserv":
                run.restart(kind)
                entry["profiled"] = run.measure(
                    kind, proto, a.room_clients, a.room_clients, a.common_rate,
                    a.profile_duration, rooms=a.rooms, profile=f"rooms-{proto}",
                )  # fmt: skip
            results[key] = entry
            run.servers.pop(kind).stop()


def netCounters() -> dict[str, int]:
    """The kernel's TCP counters of listen-queue overflows and SYN retransmits."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
            return {k: table.get(k, 0) for k in ("ListenOverflows", "ListenDrops", "TCPSynRetrans")}
    return {}


def stormOnce(run: Runner, kind: str, proto: str, profile: str | None = None) -> dict:
    """N clients connect at once and log in; held until RSS is read, then let go."""
    a = run.args
    server = run.restart(kind)
    rss0, cpu0, net0 = server.rssKiB(), server.cpuSeconds(), netCounters()
    argv = run.genArgs(server, proto, a.storm_clients, a.storm_rooms)
    argv += [
        "--hold", "--settle", "0", "--connect-timeout", str(a.storm_timeout),
        "--max-pending", str(a.storm_clients),
    ]  # fmt: skip
    if a.storm_inflight:
        argv += ["--max-unready", str(a.storm_inflight)]
    if profile:
        run.profiler.start(server.proc.pid, profile)
        time.sleep(0.5)  # py-spy has attached
    run.genErrors.seek(0)
    run.genErrors.truncate()
    gen = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=run.genErrors, text=True
    )
    try:
        line = gen.stdout.readline()
        cpu1, net1 = server.cpuSeconds(), netCounters()
        if not line:
            run.genErrors.seek(0)
            raise RuntimeError(f"loadgen failed: {run.genErrors.read()[-2000:]}")
        ready = json.loads(line)
        entry = {"profile": run.profiler.stop()} if profile else {}
        time.sleep(1.0)  # what the logins left to do (timers, writes) is done
        rss1 = server.rssKiB()
    finally:
        gen.stdin.close()
        done = gen.stdout.readline()
        gen.wait(60)
    entry.update({
        "server": kind,
        "proto": proto,
        "clients": a.storm_clients,
        "rooms": a.storm_rooms,
        "inflight": min(a.storm_inflight or a.storm_clients, a.storm_clients),
        "ready": ready["ready"],
        "open": ready["open"],
        "connect_errors": ready["connect_errors"],
        "seconds": ready["connect_s"],
        "bytes_in_per_client": round(ready["bytes_in"] / max(ready["ready"], 1)),
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "kib_per_user": round((rss1 - rss0) / max(ready["ready"], 1), 2),
        "still_open_at_end": json.loads(done)["open"] if done else None,
        "net": {k: net1[k] - net0[k] for k in net0},
    })  # fmt: skip
    log(
        f"  {kind:14} {proto:6} {entry['ready']}/{entry['clients']} ready in "
        f"{entry['seconds']:.2f} s, server CPU {entry['server_cpu_s']:.2f} s, "
        f"{entry['kib_per_user']:.2f} KiB per user, {entry['net']}"
    )
    run.servers.pop(kind).stop()
    return entry


def storm(run: Runner, results: dict) -> None:
    a = run.args
    plan = [("chatserv", proto) for proto in a.storm_protos]
    plan.append(("baseline_greet", "line"))
    if "irc" in a.storm_protos:
        plan += [(peer, "irc") for peer in run.peers if peer in a.storm_peers]
    for kind, proto in plan:
        key = f"storm/{proto}/{kind}"
        log(key)
        results[key] = stormOnce(run, kind, proto)
        if run.profiler and kind == "chatserv":
            results[key]["profiled"] = stormOnce(run, kind, proto, profile=f"storm-{proto}")


def capacity(run: Runner, results: dict) -> None:
    a = run.args
    for kind, proto in (
        ("chatserv", "line"),
        ("baseline_line", "line"),
        ("chatserv", "ws"),
        ("baseline_ws", "ws"),
    ):
        key = f"capacity/{proto}/{kind}"
        log(key)
        server = run.restart(kind)
        before = server.rssKiB()
        argv = [
            str(run.loadgen), "--port", str(server.ports[proto]),
            "--proto", proto, "--clients", str(a.idle), "--hold", "--settle", "1",
        ]  # fmt: skip
        gen = subprocess.Popen(
            pinned(GEN_CORE, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        ready = json.loads(gen.stdout.readline())
        time.sleep(1.0)
        after = server.rssKiB()
        gen.stdin.close()
        done = gen.stdout.readline()
        gen.wait(30)
        entry = {
            "connections": ready["open"],
            "connect_s": ready["connect_s"],
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": round((after - before) / max(ready["open"], 1), 2),
            "still_open_at_end": json.loads(done)["open"] if done else None,
        }
        log(f"  {entry}")
        results[key] = entry
        run.servers.pop(kind).stop()


BASELINE = {
    "line": "baseline_line",
    "ws": "baseline_ws",
    "wsjson": "baseline_ws",
    "irc": "baseline_line",  # IRC is a line protocol: bare Twisted's line broadcast
}
ORDER = ("line", "irc", "ws", "wsjson")  # rows of the table, by wire


def ratio(a, b) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def best(entry: dict | None) -> dict | None:
    """The fastest passing step of a maximum-rate search."""
    return ((entry or {}).get("max") or {}).get("best")


def fanoutRows(results: dict, proto: str, senders: str) -> list[tuple[str, str, str, str]]:
    mine = results.get(f"fanout/{proto}/{senders}/chatserv")
    base = results.get(f"fanout/{proto}/{senders}/{BASELINE[proto]}")
    if not (mine and base):
        return []
    c, b = mine["common"], base["common"]
    what = f"{proto} {senders} @{c['rate']:g}/s"
    rows = [
        (f"{what} {label}", f"{c[field]:.2f}", f"{b[field]:.2f}", ratio(c[field], b[field]))
        for label, field in (("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"),
                             ("server CPU", "server_cpu_share"))
    ]  # fmt: skip
    cb, bb = best(mine), best(base)
    if cb or bb:
        cd = cb["deliveries_per_s"] if cb else 0
        bd = bb["deliveries_per_s"] if bb else 0
        rows.append(
            (f"{proto} {senders} max deliveries/s", f"{cd:.0f}", f"{bd:.0f}", ratio(cd, bd))
        )
        rows.append((
            f"{proto} {senders} p99 ms at max",
            f"{cb['p99_ms']:.1f}" if cb else "-",
            f"{bb['p99_ms']:.1f}" if bb else "-",
            "",
        ))  # fmt: skip
    return rows


def columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as aligned text: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def roomTable(results: dict) -> str:
    """Many rooms: every server and wire in one table, then the ratios of this run."""
    keys = [k for k in results if k.startswith("rooms/")]
    if not keys:
        return ""
    order = {kind: i for i, kind in enumerate(("chatserv", *IRC_PEERS))}
    keys.sort(key=lambda k: (ORDER.index(k.split("/")[1]), order[k.split("/")[2]]))
    c0 = results[keys[0]]["common"]
    rows = [(
        "server / wire", f"p50 ms @{c0['rate']:g}/s", "p99 ms", "CPU s", "CPU us/msg",
        "max msg/s in", "deliveries/s", "p99 ms at max", "CPU share at max",
    )]  # fmt: skip
    for key in keys:
        _, proto, kind = key.split("/")
        c, b = results[key]["common"], best(results[key])
        rows.append((
            f"{kind} {proto}", f"{c['p50_ms']:.2f}", f"{c['p99_ms']:.2f}",
            f"{c['server_cpu_s']:.2f}", f"{c.get('cpu_us_per_msg', 0):.1f}",
            f"{b['offered_msgs_per_s']:.0f}" if b else "-",
            f"{b['deliveries_per_s']:.0f}" if b else "-",
            f"{b['p99_ms']:.1f}" if b else "-",
            f"{b['server_cpu_s'] / b['window_s']:.2f}" if b and b["window_s"] else "-",
        ))  # fmt: skip
    lines = [
        f"many rooms: {c0['clients']} clients in {c0['rooms']} rooms, every client sending; "
        f"CPU s over the {c0['duration_s']:.0f} s window at {c0['rate']:g}/s"
    ]
    lines += columns(rows)

    def entry(proto, kind):
        return results.get(f"rooms/{proto}/{kind}")

    ratios = []
    for peer in IRC_PEERS:
        mine, theirs = entry("irc", "chatserv"), entry("irc", peer)
        if mine and theirs:
            m, t = mine["common"], theirs["common"]
            ratios.append((
                f"chatserv irc / {peer} irc", "CPU per msg",
                ratio(m.get("cpu_us_per_msg"), t.get("cpu_us_per_msg")),
            ))  # fmt: skip
            mb, tb = best(mine), best(theirs)
            if mb and tb:
                ratios.append((
                    f"chatserv irc / {peer} irc", "max msg/s",
                    ratio(mb["offered_msgs_per_s"], tb["offered_msgs_per_s"]),
                ))  # fmt: skip
    for proto in ("irc", "ws", "wsjson"):
        mine, line = entry(proto, "chatserv"), entry("line", "chatserv")
        if proto != "irc" and mine and line:
            ratios.append((
                f"chatserv {proto} / line", "CPU per msg",
                ratio(mine["common"].get("cpu_us_per_msg"), line["common"].get("cpu_us_per_msg")),
            ))  # fmt: skip
            if best(mine) and best(line):
                ratios.append((
                    f"chatserv {proto} / line", "max msg/s",
                    ratio(best(mine)["offered_msgs_per_s"], best(line)["offered_msgs_per_s"]),
                ))  # fmt: skip
    if ratios:
        lines += ["", *columns([("ratio (this run)", "of", "ratio"), *ratios])]
    return "\n".join(lines)


def stormTable(results: dict) -> str:
    keys = [k for k in results if k.startswith("storm/")]
    if not keys:
        return ""
    first = results[keys[0]]
    rows = [(
        "server / wire", "ready", "seconds", "server CPU s", "KiB per user",
        "listen overflows", "SYN retransmits",
    )]  # fmt: skip
    for key in keys:
        e = results[key]
        what = "bare Twisted accept+greet" if e["server"] == "baseline_greet" else e["server"]
        rows.append((
            f"{what} {e['proto']}", f"{e['ready']}/{e['clients']}", f"{e['seconds']:.2f}",
            f"{e['server_cpu_s']:.2f}", f"{e['kib_per_user']:.2f}",
            str(e["net"].get("ListenOverflows", "-")), str(e["net"].get("TCPSynRetrans", "-")),
        ))  # fmt: skip
    lines = [
        f"connect storm: {first['clients']} clients, {first['inflight']} at a time; each "
        f"connects, chooses a nickname and joins one of {first['rooms']} rooms "
        "(bare Twisted: accepted and greeted)"
    ]
    lines += columns(rows)
    base = results.get("storm/line/baseline_greet")
    for key in keys:
        e = results[key]
        if base and e["server"] == "chatserv" and base["seconds"]:
            lines.append(
                f"chatserv {e['proto']} / bare Twisted accept+greet, seconds: "
                f"{ratio(e['seconds'], base['seconds'])}"
            )
    return "\n".join(lines)


def capacityRows(results: dict, proto: str) -> list[tuple[str, str, str, str]]:
    mine = results.get(f"capacity/{proto}/chatserv")
    base = results.get(f"capacity/{proto}/{BASELINE[proto]}")
    if not (mine and base):
        return []
    return [(
        f"{proto} KiB per idle connection ({mine['connections']} held)",
        f"{mine['kib_per_connection']:.2f}",
        f"{base['kib_per_connection']:.2f}",
        ratio(mine["kib_per_connection"], base["kib_per_connection"]),
    )]  # fmt: skip


def table(results: dict) -> str:
    rows = [("measurement", "chatserv", "baseline", "ratio")]
    fanouts = dict.fromkeys(tuple(k.split("/")[1:3]) for k in results if k.startswith("fanout/"))
    for proto, senders in sorted(fanouts, key=lambda f: ORDER.index(f[0])):
        rows += fanoutRows(results, proto, senders)
    for proto in ("line", "ws"):
        rows += capacityRows(results, proto)
    lines = columns(rows) if len(rows) > 1 else []
    wires = {k.split("/")[1] for k in results if k.startswith("fanout/")}
    if "irc" in wires:
        lines.append(
            "irc rows: the baseline is baseline_line.py (bare Twisted line broadcast), "
            "as for line rows"
        )
    clusters = clusterbench.clusterTable(results, columns, ratio, best)
    for extra in (roomTable(results), stormTable(results), clusters):
        if extra:
            lines += ["", extra] if lines else [extra]
    return "\n".join(lines)


def parseArgs(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every scenario, small (about a minute)")
    p.add_argument(
        "--smoke", action="store_true",
        help="fan-out on line, ws and irc, 5 clients, 1 s: checks that it works (the test suite)",
    )  # fmt: skip
    p.add_argument("--scenarios", default="fanout,rooms,storm,capacity")
    p.add_argument("--protos", default="line,ws,wsjson,irc", help="for fanout")
    p.add_argument("--output", default=str(HERE / "results.json"))
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--senders", default="100,10")
    p.add_argument("--common-rate", type=float, default=5.0, help="msg/s per sender")
    p.add_argument("--duration", type=float, default=5.0, help="seconds at the common rate")
    p.add_argument("--step-duration", type=float, default=3.0, help="seconds per search step")
    p.add_argument(
        "--start-rate", type=float, default=10.0,
        help="first rate of the search (msg/s per sender, for 100 senders)",
    )  # fmt: skip
    p.add_argument("--max-steps", type=int, default=10)
    p.add_argument("--p99-limit", type=float, default=50.0, help="ms; above it a step fails")
    p.add_argument("--drain", type=float, default=3.0, help="seconds to wait for stragglers")
    p.add_argument("--settle", type=float, default=0.5, help="seconds between joining and sending")
    p.add_argument("--room-clients", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--room-protos", default="line,irc,ws,wsjson")
    p.add_argument(
        "--irc-peers", default=",".join(IRC_PEERS),
        help="IRC servers run beside chatserv on irc (rooms, storm) where installed; 'none'",
    )  # fmt: skip
    p.add_argument("--storm-clients", type=int, help="10,000 (300 with --quick)")
    p.add_argument("--storm-rooms", type=int, default=100)
    p.add_argument("--storm-protos", default="line,irc", help="chatserv's wires for storm")
    p.add_argument(
        "--storm-inflight", type=int, default=BACKLOG - 24,
        help="clients connecting or logging in at once (under the listen backlog, so that\n"
        "the accept queue cannot overflow); 0: every client at once",
    )  # fmt: skip
    p.add_argument(
        "--storm-peers", default="inspircd",
        help="IRC peers in the storm too (ngIRCd's listen backlog is 10: it overflows)",
    )  # fmt: skip
    p.add_argument("--storm-timeout", type=float, default=60.0, help="seconds to be ready")
    p.add_argument(
        "--max-connections", type=int, default=20000,
        help="the IRC peers' connection limits (chatserv's are in etc/bench.toml)",
    )  # fmt: skip
    p.add_argument("--idle", type=int, default=10000, help="connections for capacity")
    p.add_argument("--pg", help="PostgreSQL URL for cluster [default: $CHATSERV_TEST_PG]")
    p.add_argument("--cluster-rooms", type=int, default=20, help="rooms, one sender each")
    p.add_argument("--cluster-room-size", type=int, default=10, help="clients per room")
    p.add_argument(
        "--cluster-start-rate", type=float, default=20.0, help="msg/s per sender, first step"
    )
    p.add_argument("--profile", metavar="DIR", help="record py-spy profiles of chatserv here")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples a second")
    p.add_argument(
        "--profile-duration", type=float, default=10.0,
        help="seconds of sending in each profiled rooms run",
    )  # fmt: skip
    a = p.parse_args(argv)
    if a.smoke:
        a.quick, a.scenarios, a.protos = True, "fanout", "line,ws,irc"
    if a.quick:
        a.clients, a.duration, a.drain, a.settle = 20, 1.0, 0.5, 0.1
        a.clients = 5 if a.smoke else a.clients
        a.senders = str(a.clients)
        a.room_clients, a.rooms, a.idle = 40, 4, 200
        a.cluster_rooms, a.cluster_room_size = 4, 5
        a.profile_duration = 2.0
    if a.storm_clients is None:
        a.storm_clients = 300 if a.quick else 10000
    a.senders = sorted({min(int(s), a.clients) for s in a.senders.split(",")}, reverse=True)
    a.scenarios = a.scenarios.split(",")
    a.room_protos = a.room_protos.split(",")
    a.storm_protos = a.storm_protos.split(",")
    a.storm_peers = [] if a.storm_peers == "none" else a.storm_peers.split(",")
    a.irc_peers = [] if a.irc_peers == "none" else a.irc_peers.split(",")
    unknown = (set(a.irc_peers) | set(a.storm_peers)) - set(IRC_PEERS)
    if unknown:
        p.error(
            f"--irc-peers, --storm-peers: unknown {', '.join(sorted(unknown))}; "
            f"known: {', '.join(IRC_PEERS)}"
        )
    return a


def raiseFileLimit() -> None:
    """The servers and the generator hold up to 10,000 connections each: they inherit this."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv=None) -> int:
    a = parseArgs(argv)
    raiseFileLimit()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="chatserv-bench-") as workdir:
        run = Runner(a, workdir)
        run.peers = ircPeers(a.irc_peers, results) if {"rooms", "storm"} & set(a.scenarios) else []
        try:
            if "fanout" in a.scenarios:
                fanout(run, a.protos.split(","), results)
            if "rooms" in a.scenarios:
                rooms(run, results)
            if "storm" in a.scenarios:
                storm(run, results)
            if "capacity" in a.scenarios:
                capacity(run, results)
            if "cluster" in a.scenarios:
                clusterbench.clusterScenario(run, results, sys.modules[__name__])
        finally:
            run.stopAll()
    Path(a.output).write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(f"\nraw results: {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
