"""The cluster scenario of bench/run.py: senders on node A, receivers on node B.

    python bench/run.py --scenarios cluster --pg postgresql://USER:PASS@127.0.0.1/DB

--cluster-rooms rooms (20) of --cluster-room-size line clients (10) each: in every room
one sender, on node A, and the others, on node B, so every delivery crosses from one
node to the other through Redis. The same load is run in the same run against one
chatserv (no cluster, the same PostgreSQL database), with every client on it: that is
the baseline. Each is measured at --common-rate msg/s per sender and at the highest
rate that passes (doubling, then bisecting, as elsewhere). Both nodes, Redis and the
single server share the server core: the figures are those of the cross-node path, not
of scaling out (one core cannot show that).

Then the rooms scenario's load (--room-clients clients in --rooms rooms, every client
sending) with each room's members alternating between node A and node B (loadgen
--spread), against one node with the same load: the many-rooms scenario spread over two
nodes.

Also reported: Redis commands per room message (from INFO commandstats, the difference
between a run at the common rate and one at twice that rate, over the extra messages).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _resp(port: int, *words: str) -> str:
    request = f"*{len(words)}\r\n" + "".join(f"${len(w.encode())}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request.encode())
        data = b""
        s.settimeout(0.5)
        try:
            while chunk := s.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    return data.decode(errors="replace")


def redisCommands(port: int) -> dict[str, int]:
    """Calls per Redis command since the server started (INFO commandstats)."""
    calls: dict[str, int] = {}
    for line in _resp(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, stats = line[len("cmdstat_") :].split(":", 1)
            name = "eval" if name == "evalsha" else name  # one script, by text or by hash
            count = int(dict(kv.split("=") for kv in stats.split(","))["calls"])
            calls[name] = calls.get(name, 0) + count
    return calls


class ClusterBench:
    def __init__(self, run, pg: str, runner) -> None:
        self.r = runner  # bench/run.py, for its Server and helpers
        self.run = run
        self.pg = pg
        self.servers: list = []

    def start(self, name: str, argv: list[str], ports: dict[str, int]):
        server = self.r.Server(name, argv, ports, self.run.workdir)
        self.servers.append(server)
        return server

    def stopAll(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()

    def redis(self):
        port = self.r.freePort()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.run.workdir]  # fmt: skip
        server = self.start("redis", argv, {"redis": port})
        return server, port

    def chatserv(self, name: str, *extra: str):
        tcp = self.r.freePort()
        twistd = shutil.which("twistd", path=str(Path(sys.executable).parent)) or "twistd"
        argv = [
            twistd, "-n", "--pidfile=", "chatserv",
            "--config", str(ROOT / "etc" / "bench.toml"), "--db", self.pg,
            "--tcp", f"tcp:{tcp}:interface=127.0.0.1:backlog={self.r.BACKLOG}", *extra,
        ]  # fmt: skip
        server = self.start(name, argv, {"line": tcp})
        if extra:  # a node: in the cluster before anything is measured
            deadline = time.monotonic() + 20
            while b"connected to Redis" not in Path(server.logfile.name).read_bytes():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not join the cluster")
                time.sleep(0.05)
        return server

    def measure(self, a, b, rate: float, duration: float, manyRooms: bool = False) -> dict:
        """One step: senders on C{a}, receivers on C{b} (the same server for the baseline).
        C{manyRooms}: the rooms scenario's load instead (every client sending, in many
        small rooms), each room's members alternating between C{a} and C{b}."""
        args = self.run.args
        if manyRooms:
            clients, rooms = args.room_clients, args.rooms
            senders = clients
        else:
            rooms, size = args.cluster_rooms, args.cluster_room_size
            clients, senders = rooms * size, rooms
        argv = self.run.genArgs(a, "line", clients, rooms)
        if b is not a:
            argv += ["--port2", str(b.ports["line"])] + (["--spread"] if manyRooms else [])
        argv += ["--senders", str(senders), "--rate", str(rate), "--duration", str(duration)]
        argv += ["--drain", str(args.drain), "--settle", str(args.settle)]
        cpu0 = {s.name: s.cpuSeconds() for s in {a, b}}
        result = self.run.generate(argv)
        window = max(result["window_s"], 1e-9)
        result["server_cpu_share"] = {
            s.name: round((s.cpuSeconds() - cpu0[s.name]) / window, 3) for s in {a, b}
        }
        result["ok"] = self.run.passed(result)
        self.r.log(
            f"  {a.name}->{b.name} rate={rate:g}/s -> {result['deliveries_per_s']:.0f}"
            f" deliveries/s p50={result['p50_ms']:.1f} p99={result['p99_ms']:.1f} ms"
            f" lost={result['lost']} {'ok' if result['ok'] else 'FAIL'}"
        )
        return result

    def maxRate(self, a, b, manyRooms: bool = False) -> dict:
        args = self.run.args
        # (The rooms scenario's start rate is given for 100 senders, as in bench/run.py.)
        start = round(args.start_rate * 100 / args.room_clients, 2) if manyRooms else None
        return self.r.searchRate(
            lambda rate: self.measure(a, b, rate, args.step_duration, manyRooms),
            start or args.cluster_start_rate,
            args.max_steps,
        )

    def manyRooms(self, a, b, key: str, results: dict) -> None:
        """The rooms scenario's load on C{a} and C{b} (one server: the baseline)."""
        args = self.run.args
        entry = {"common": self.measure(a, b, args.common_rate, args.duration, True)}
        if not args.quick:
            entry["max"] = self.maxRate(a, b, True)
        results[key] = entry

    def scenario(self, results: dict) -> None:
        args = self.run.args
        try:
            single = self.chatserv("chatserv")
            entry = {"common": self.measure(single, single, args.common_rate, args.duration)}
            if not args.quick:
                entry["max"] = self.maxRate(single, single)
            results["cluster/single"] = entry
            self.stopAll()
            single = self.chatserv("chatserv")  # afresh: no one left from the above
            self.manyRooms(single, single, "cluster/rooms-single", results)
            self.stopAll()
            _, port = self.redis()
            url = f"redis://127.0.0.1:{port}/0"
            a = self.chatserv("chatserv-a", "--cluster", url, "--node-name", "bench-a")
            b = self.chatserv("chatserv-b", "--cluster", url, "--node-name", "bench-b")
            # Redis commands per message: the difference between two runs that differ only
            # in their rate (the same logins, joins and quits), over the difference in
            # messages sent.
            calls0 = redisCommands(port)
            entry = {"common": self.measure(a, b, args.common_rate, args.duration)}
            time.sleep(1.0)  # the clients' quits (names released, quits published) land
            calls1 = redisCommands(port)
            double = self.measure(a, b, 2 * args.common_rate, args.duration)
            time.sleep(1.0)
            calls2 = redisCommands(port)
            extra = double["sent"] - entry["common"]["sent"]
            perMessage = {}
            for name in calls2:
                first = calls1.get(name, 0) - calls0.get(name, 0)
                second = calls2[name] - calls1.get(name, 0)
                if name != "info" and second != first and extra > 0:
                    perMessage[name] = round((second - first) / extra, 3)
            entry["redis_calls_per_message"] = perMessage
            if not args.quick:
                entry["max"] = self.maxRate(a, b)
            results["cluster/two-node"] = entry
            self.stopAll()
            _, port = self.redis()
            url = f"redis://127.0.0.1:{port}/0"
            a = self.chatserv("chatserv-a", "--cluster", url, "--node-name", "bench-a")
            b = self.chatserv("chatserv-b", "--cluster", url, "--node-name", "bench-b")
            self.manyRooms(a, b, "cluster/rooms-two-node", results)
        finally:
            self.stopAll()


def clusterScenario(run, results: dict, runner) -> None:
    pg = run.args.pg or os.environ.get("CHATSERV_TEST_PG", "")
    if not pg or not shutil.which("redis-server"):
        why = "no --pg database" if not pg else "redis-server is not installed"
        print(f"cluster scenario skipped: {why}", flush=True)
        results.setdefault("missing", []).append("cluster")
        return
    ClusterBench(run, pg, runner).scenario(results)


def clusterTable(results: dict, columns, ratio, best) -> str:
    single, two = results.get("cluster/single"), results.get("cluster/two-node")
    if not single or not two:
        return ""
    rows = [("cluster: senders on node A, receivers on B", "two nodes", "one node", "ratio")]
    for label, field in (("p50 ms", "p50_ms"), ("p99 ms", "p99_ms")):
        x, y = two["common"][field], single["common"][field]
        rows.append((f"line @{two['common']['rate']:g}/s per sender {label}", f"{x:.2f}",
                     f"{y:.2f}", ratio(x, y)))  # fmt: skip
    bx, by = best(two), best(single)
    if bx and by:
        rows.append(("max deliveries/s", f"{bx['deliveries_per_s']:.0f}",
                     f"{by['deliveries_per_s']:.0f}",
                     ratio(bx["deliveries_per_s"], by["deliveries_per_s"])))  # fmt: skip
        rows.append(("p99 ms at max", f"{bx['p99_ms']:.1f}", f"{by['p99_ms']:.1f}", ""))
    rooms = _roomsRows(results, ratio, best)
    calls = ", ".join(f"{k} {v:g}" for k, v in two.get("redis_calls_per_message", {}).items())
    return "\n".join(
        [*columns(rows + rooms), f"Redis commands per room message: {calls or 'none'}"]
    )


def _roomsRows(results: dict, ratio, best) -> list[tuple]:
    single, two = results.get("cluster/rooms-single"), results.get("cluster/rooms-two-node")
    if not single or not two:
        return []
    common = two["common"]
    rows = [(f"many rooms ({common['clients']} clients in {common['rooms']} rooms, "
             "every client sending), each room over both nodes", "", "", "")]  # fmt: skip
    for label, field in (("p50 ms", "p50_ms"), ("p99 ms", "p99_ms")):
        x, y = common[field], single["common"][field]
        rows.append((f"line @{common['rate']:g}/s each {label}", f"{x:.2f}", f"{y:.2f}",
                     ratio(x, y)))  # fmt: skip
    bx, by = best(two), best(single)
    if bx and by:
        rows.append(("max msg/s in (every client)", f"{bx['rate'] * bx['senders']:.0f}",
                     f"{by['rate'] * by['senders']:.0f}",
                     ratio(bx["rate"] * bx["senders"], by["rate"] * by["senders"])))  # fmt: skip
        rows.append(("p99 ms at max", f"{bx['p99_ms']:.1f}", f"{by['p99_ms']:.1f}", ""))
    return rows
