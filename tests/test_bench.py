"""A smoke run of the benchmark (bench/run.py --smoke), so that it does not rot.

No timing is asserted: only that chatserv (line, websocket and IRC listeners) and both
baselines serve the load generator, that nothing is lost, duplicated or misrouted, and that
the table is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

needsCompiler = pytest.mark.skipif(
    shutil.which("gcc") is None and not os.environ.get("CI"),
    reason="the load generator is C: no gcc here (.ci/run installs it in CI)",
)


@needsCompiler
def test_benchmark_smoke_run(tmp_path):
    output = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(output.read_text())
    expected = {
        f"fanout/{proto}/5senders/{server}"
        for proto, baseline in (
            ("line", "baseline_line"),
            ("ws", "baseline_ws"),
            ("irc", "baseline_line"),  # the IRC rows' baseline is the line broadcast
        )
        for server in ("chatserv", baseline)
    }
    assert set(results) == expected
    for key, entry in results.items():
        common = entry["common"]
        assert common["ready"] == common["clients"] == 5, key
        assert common["sent"] > 0 and common["received"] == common["expected"] > 0, key
        problems = {k: common[k] for k in ("lost", "dup", "misrouted", "closed")}
        assert problems == dict.fromkeys(problems, 0), key
    table = run.stdout
    assert table.startswith("measurement") and "line 5senders @5/s p50 ms" in table
    assert "ws 5senders @5/s p99 ms" in table
    assert "irc 5senders @5/s p50 ms" in table and "irc rows: the baseline is" in table
    assert results["fanout/irc/5senders/chatserv"]["common"]["proto"] == "irc"
    assert results["fanout/irc/5senders/baseline_line"]["common"]["proto"] == "line"


def runBench(tmp_path, *args: str) -> tuple[dict, str]:
    output = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--output", str(output), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(output.read_text()), run.stdout


@needsCompiler
def test_connect_storm_smoke_run(tmp_path):
    """Every client of the storm logs in (chatserv) or is greeted (bare Twisted), and stays."""
    results, table = runBench(
        tmp_path, "--quick", "--scenarios", "storm", "--storm-protos", "line",
        "--storm-clients", "100", "--irc-peers", "none",
    )  # fmt: skip
    assert set(results) == {"storm/line/chatserv", "storm/line/baseline_greet"}
    for key, entry in results.items():
        assert entry["ready"] == entry["open"] == entry["clients"] == 100, key
        assert entry["connect_errors"] == 0 and entry["still_open_at_end"] == 100, key
        assert entry["seconds"] > 0 and entry["rss_after_kib"] > 0, key
    assert "connect storm: 100 clients" in table
    assert "chatserv line / bare Twisted accept+greet, seconds:" in table


needsInspircd = pytest.mark.skipif(
    shutil.which("inspircd") is None, reason="InspIRCd is not installed (apt-get install inspircd)"
)


@needsCompiler
@needsInspircd
def test_inspircd_peer_smoke_run(tmp_path):
    """InspIRCd, started from bench/inspircd.conf.in, serves the same IRC load as chatserv."""
    results, table = runBench(
        tmp_path, "--quick", "--scenarios", "rooms", "--room-protos", "irc",
        "--irc-peers", "inspircd",
    )  # fmt: skip
    assert set(results) == {"rooms/irc/chatserv", "rooms/irc/inspircd"}
    for server in ("chatserv", "inspircd"):
        common = results[f"rooms/irc/{server}"]["common"]
        assert common["ready"] == common["clients"] == 40, server
        assert common["received"] == common["expected"] > 0, server
        problems = {k: common[k] for k in ("lost", "dup", "misrouted", "closed")}
        assert problems == dict.fromkeys(problems, 0), server
        assert common["server_cpu_s"] >= 0 and common["window_s"] > 0, server
    assert "inspircd irc" in table and "chatserv irc / inspircd irc" in table


@needsCompiler
def test_cluster_smoke_run(tmp_path):
    """Two nodes through a real Redis, senders on one and receivers on the other, beside
    one node: every message arrives, once; Redis gets at most one PUBLISH a message (a
    turn's publications go in one; the quits between the two runs blur it a little)."""
    import pgserver
    from redisserver import RedisServer

    RedisServer(tmp_path)  # skips (fails on CI) without redis-server
    with pgserver.freshDatabase() as url:
        results, table = runBench(tmp_path, "--quick", "--scenarios", "cluster", "--pg", url)
    # (and the many-rooms load, every client sending, each room over both nodes)
    clients = {"cluster/single": 20, "cluster/two-node": 20,
               "cluster/rooms-single": 40, "cluster/rooms-two-node": 40}  # fmt: skip
    assert set(results) == set(clients)
    for key, entry in results.items():
        common = entry["common"]
        assert common["ready"] == common["clients"] == clients[key], key
        assert common["received"] == common["expected"] > 0, key
        assert (common["lost"], common["dup"], common["misrouted"]) == (0, 0, 0), key
    assert results["cluster/rooms-two-node"]["common"]["senders"] == 40
    assert 0 < results["cluster/two-node"]["redis_calls_per_message"]["publish"] <= 1.2
    assert "cluster: senders on node A, receivers on B" in table
    assert "each room over both nodes" in table


def test_flame_graph_and_summary(tmp_path):
    """bench/flame.py: shares from collapsed stacks; the SVG is well-formed XML."""
    import importlib.util
    import xml.etree.ElementTree as ET

    spec = importlib.util.spec_from_file_location("flame", ROOT / "bench" / "flame.py")
    flame = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flame)
    stacks = flame.parse(
        "main (a.py:1);loop (twisted/b.py:2);send (chatserv/c.py:3) 6\n"
        "main (a.py:1);loop (twisted/b.py:2);parse (chatserv/d.py:4) 3\n"
        "main (a.py:1);loop (twisted/b.py:2) 1\n"
        "work (threading.py:1);Condition.wait (threading.py:295) 50\n"
    )
    summary = flame.summary(stacks)
    assert summary["samples"] == 10  # the thread waiting for work is idle
    assert summary["self"][0] == {"frame": "send (chatserv/c.py:3)", "samples": 6, "share": 0.6}
    assert {"main (a.py:1)", "loop (twisted/b.py:2)"} == set(summary["trunk"])
    assert summary["packages"][0] == {"frame": "chatserv", "samples": 9, "share": 0.9}
    svg = flame.render(stacks, "test <&>")
    root = ET.fromstring(svg)
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert "send (chatserv/c.py:3): 6 samples (60.0%)" in titles
