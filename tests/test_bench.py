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
