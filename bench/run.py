"""Benchmark chatserv against bare Twisted and bare Autobahn broadcast servers.

    python bench/run.py                 # every scenario (about 10 minutes)
    python bench/run.py --quick         # a smoke run of a few seconds
    python bench/run.py --scenarios fanout --protos line

Every server runs pinned to core 0 (taskset -c 0), the load generator (bench/loadgen.c,
compiled with gcc -O2 into bench/build/) on core 1. Scenarios:

  fanout    100 clients in one room; 100 and 10 senders; at 5 msg/s per sender and at the
            highest rate sustained with nothing lost and p99 under --p99-limit (doubling,
            then bisecting). line: chatserv vs baseline_line.py; ws: chatserv text mode vs
            baseline_ws.py; wsjson: chatserv's JSON subprotocol vs baseline_ws.py; irc:
            chatserv's IRC listener (channel #lobby) vs baseline_line.py driven as a line
            server (IRC is a line protocol; the bare broadcast has no registration).
  rooms     1000 clients in 100 rooms of 10, every client sending, on line and irc
            (chatserv only; the baselines have no rooms, so the comparison is
            deliveries/s against the one-room maximum of each server).
  capacity  10,000 idle connections held; server RSS per connection (VmRSS before/after).

Prints a table (chatserv, baseline, ratio) and writes every raw result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def startServer(kind: str, workdir: str) -> Server:
    py = sys.executable
    if kind == "chatserv":
        tcp, ws, irc = freePort(), freePort(), freePort()
        twistd = shutil.which("twistd", path=str(BIN)) or "twistd"
        argv = [
            twistd, "-n", "--pidfile=", "chatserv",
            "--config", str(ROOT / "etc" / "bench.toml"),
            "--db", str(Path(workdir) / f"chatserv-{tcp}.db"),
            "--tcp", f"tcp:{tcp}:interface=127.0.0.1:backlog=1024",
            "--ws", f"tcp:{ws}:interface=127.0.0.1:backlog=1024",
            "--irc", f"tcp:{irc}:interface=127.0.0.1:backlog=1024",
        ]  # fmt: skip
        ports = {"line": tcp, "ws": ws, "wsjson": ws, "irc": irc}
        return Server(kind, argv, ports, workdir)
    port = freePort()
    script = HERE / f"{kind}.py"
    proto = "line" if kind == "baseline_line" else "ws"
    return Server(kind, [py, str(script), str(port)], {proto: port}, workdir)


class Runner:
    def __init__(self, args, workdir: str):
        self.args = args
        self.workdir = workdir
        self.loadgen = buildLoadgen()
        self.servers: dict[str, Server] = {}

    def server(self, kind: str) -> Server:
        if kind not in self.servers:
            self.servers[kind] = startServer(kind, self.workdir)
        return self.servers[kind]

    def restart(self, kind: str) -> Server:
        if kind in self.servers:
            self.servers.pop(kind).stop()
        return self.server(kind)

    def stopAll(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()

    def genArgs(self, server: Server, proto: str, clients: int, rooms: int) -> list[str]:
        argv = [
            str(self.loadgen),
            "--port", str(server.ports[proto]), "--proto", proto,
            "--clients", str(clients), "--rooms", str(rooms),
        ]  # fmt: skip
        if server.name == "chatserv" and proto == "irc":
            # Registers and joins #lobby (#rN with --join); ready at that channel's 366.
            if rooms > 1:
                argv.append("--join")
        elif server.name == "chatserv":
            argv += ["--nick", "--ready-match", '"type":"who"' if proto == "wsjson" else "users ("]
            if rooms > 1:
                argv += ["--join", "--ready-count", "2"]
            if proto == "wsjson":
                argv.append("--echo")  # JSON clients get their own messages back
        return pinned(GEN_CORE, argv)

    def measure(self, kind, proto, clients, senders, rate, duration, rooms=1) -> dict:
        server = self.server(kind)
        argv = self.genArgs(server, proto, clients, rooms)
        argv += ["--senders", str(senders), "--rate", str(rate), "--duration", str(duration)]
        argv += ["--drain", str(self.args.drain), "--settle", str(self.args.settle)]
        cpu0, t0 = server.cpuSeconds(), time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        # Server CPU over the whole generator run (connect, settle, send, drain).
        result["server_cpu_share"] = round(
            (server.cpuSeconds() - cpu0) / (time.monotonic() - t0), 3
        )
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
        rate, best, failed, steps = round(a.start_rate * 100 / senders, 2), None, None, []
        while len(steps) < a.max_steps:
            r = self.measure(kind, proto, clients, senders, rate, a.step_duration, rooms)
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


def rooms(run: Runner, results: dict) -> None:
    a = run.args
    for proto in a.room_protos:
        key = f"rooms/{proto}/chatserv"
        log(key)
        # Fresh server: the previous scenario's users are gone, but start from scratch.
        run.restart("chatserv")
        entry = {
            "common": run.measure(
                "chatserv", proto, a.room_clients, a.room_clients, a.common_rate,
                a.duration, rooms=a.rooms,
            )
        }  # fmt: skip
        if not a.quick:
            entry["max"] = run.maxRate(
                "chatserv", proto, a.room_clients, a.room_clients, rooms=a.rooms
            )
        results[key] = entry


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


def roomRows(results: dict, proto: str) -> list[tuple[str, str, str, str]]:
    entry = results[f"rooms/{proto}/chatserv"]
    c = entry["common"]
    rooms = f"rooms {proto} ({c['clients']} in {c['rooms']} rooms)"
    latency = f"{c['p50_ms']:.2f}/{c['p99_ms']:.2f}"
    rows = [(f"{rooms} @{c['rate']:g}/s p50/p99 ms", latency, "", "")]
    cb = best(entry)
    if cb:
        mine = best(results.get(f"fanout/{proto}/100senders/chatserv"))
        base = best(results.get(f"fanout/{proto}/100senders/{BASELINE[proto]}"))
        rows.append((f"{rooms} max deliveries/s", f"{cb['deliveries_per_s']:.0f}", "", ""))
        if mine:
            rows.append((
                "  ... vs chatserv, one room of 100",
                f"{mine['deliveries_per_s']:.0f}",
                "",
                ratio(cb["deliveries_per_s"], mine["deliveries_per_s"]),
            ))  # fmt: skip
        if base:
            rows.append((
                "  ... vs baseline, one room of 100",
                "",
                f"{base['deliveries_per_s']:.0f}",
                ratio(cb["deliveries_per_s"], base["deliveries_per_s"]),
            ))  # fmt: skip
    return rows


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
    roomProtos = [k.split("/")[1] for k in results if k.startswith("rooms/")]
    for proto in sorted(roomProtos, key=ORDER.index):
        rows += roomRows(results, proto)
    for proto in ("line", "ws"):
        rows += capacityRows(results, proto)
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    wires = {k.split("/")[1] for k in results if k.startswith(("fanout/", "rooms/"))}
    if "irc" in wires:
        lines.append(
            "irc rows: the baseline is baseline_line.py (bare Twisted line broadcast), "
            "as for line rows"
        )
    return "\n".join(lines)


def parseArgs(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every scenario, small (about 40 s)")
    p.add_argument(
        "--smoke", action="store_true",
        help="fan-out on line, ws and irc, 5 clients, 1 s: checks that it works (the test suite)",
    )  # fmt: skip
    p.add_argument("--scenarios", default="fanout,rooms,capacity")
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
    p.add_argument("--room-protos", default="line,irc")
    p.add_argument("--idle", type=int, default=10000, help="connections for capacity")
    a = p.parse_args(argv)
    if a.smoke:
        a.quick, a.scenarios, a.protos = True, "fanout", "line,ws,irc"
    if a.quick:
        a.clients, a.duration, a.drain, a.settle = 20, 1.0, 0.5, 0.1
        a.clients = 5 if a.smoke else a.clients
        a.senders = str(a.clients)
        a.room_clients, a.rooms, a.idle = 40, 4, 200
    a.senders = sorted({min(int(s), a.clients) for s in a.senders.split(",")}, reverse=True)
    a.scenarios = a.scenarios.split(",")
    a.room_protos = a.room_protos.split(",")
    return a


def main(argv=None) -> int:
    a = parseArgs(argv)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="chatserv-bench-") as workdir:
        run = Runner(a, workdir)
        try:
            if "fanout" in a.scenarios:
                fanout(run, a.protos.split(","), results)
            if "rooms" in a.scenarios:
                rooms(run, results)
            if "capacity" in a.scenarios:
                capacity(run, results)
        finally:
            run.stopAll()
    Path(a.output).write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(f"\nraw results: {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
