"""Flame graphs and top-cost summaries from py-spy's raw (collapsed) stacks.

    python bench/flame.py PROFILE.txt [OUT.svg]   # writes the SVG, prints the summary

py-spy's `--format raw` writes one line per distinct stack, outermost frame first:

    main (chatserv/tap.py:12);run (twisted/internet/base.py:1310);... 42

`render` turns such a file into a self-contained SVG flame graph (no scripts: each frame's
tooltip says its samples and share); `summary` gives the frames that cost the most, both
on their own (the innermost frame of a sample: where the CPU was) and with what they call.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from html import escape
from pathlib import Path

WIDTH = 1200
FRAME_H = 16
FONT_W = 6.6  # average width of a character at font-size 11, for cutting labels


# A thread blocked in one of these waits for work (the database's thread pool): idle, even
# when py-spy does not see it so.
WAITING = ("Condition.wait (threading.py:", "Event.wait (threading.py:")


def parse(text: str) -> Counter:
    """Collapsed stacks: {(frame, frame, ...): samples}, without threads waiting for work."""
    stacks: Counter = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = tuple(stack.split(";"))
            if not frames[-1].startswith(WAITING):
                stacks[frames] += int(count)
    return stacks


def package(frame: str) -> str:
    """Which code a frame is in, by its file: chatserv, twisted, autobahn or other."""
    where = frame.rpartition("(")[2]
    for name in ("chatserv", "twisted", "autobahn"):
        if f"{name}/" in where:
            return name
    return "python and other"


def trunk(stacks: Counter, share: float = 0.8) -> set[str]:
    """The frames nearly every sample passes through (twistd's start-up, the reactor loop):
    from the main thread's first frame, down the biggest callee while it holds `share` of
    its caller's samples."""
    node, frames = _tree(stacks), set()
    while node["kids"]:
        biggest = max(node["kids"].values(), key=lambda k: k["n"])
        if biggest["n"] < (share if frames else 0.5) * node["n"]:
            break
        frames.add(biggest["name"])
        node = biggest
    return frames


def summary(stacks: Counter, top: int = 12) -> dict:
    """The costliest frames, self (innermost) and inclusive, with their share of samples.
    The inclusive list leaves out the trunk (see `trunk`), which would head it with 90%."""
    total = sum(stacks.values())
    skip = trunk(stacks)
    selfTime: Counter = Counter()
    inclusive: Counter = Counter()
    packages: Counter = Counter()
    for stack, n in stacks.items():
        selfTime[stack[-1]] += n
        packages[package(stack[-1])] += n
        for frame in set(stack) - skip:
            inclusive[frame] += n

    def share(counter: Counter, limit: int) -> list[dict]:
        return [
            {"frame": frame, "samples": n, "share": round(n / total, 4)}
            for frame, n in counter.most_common(limit)
        ]

    return {
        "samples": total,
        "self": share(selfTime, top),
        "inclusive": share(inclusive, top * 2),
        "trunk": sorted(skip),
        "packages": share(packages, 4),
    }


def formatSummary(s: dict) -> str:
    lines = [f"{s['samples']} samples"]
    titles = (("self (where the CPU was)", "self"), ("inclusive, below the reactor", "inclusive"))
    for title, key in titles:
        lines.append(f"\n{title}:")
        lines += [f"  {e['share']:6.1%}  {e['frame']}" for e in s[key]]
    lines.append("\nself time by package:")
    lines += [f"  {e['share']:6.1%}  {e['frame']}" for e in s["packages"]]
    return "\n".join(lines)


def _tree(stacks: Counter) -> dict:
    root: dict = {"name": "all", "n": 0, "kids": {}}
    for stack, n in stacks.items():
        root["n"] += n
        node = root
        for frame in stack:
            node = node["kids"].setdefault(frame, {"name": frame, "n": 0, "kids": {}})
            node["n"] += n
    return root


def _colour(name: str) -> str:
    h = hashlib.md5(name.encode()).digest()
    base = {"chatserv": (215, 95, 60), "twisted": (225, 160, 50), "autobahn": (200, 120, 170)}
    r, g, b = base.get(package(name), (190, 175, 110))
    return f"rgb({r + h[0] % 30},{g + h[1] % 40},{b + h[2] % 30})"


def render(stacks: Counter, title: str) -> str:
    """An SVG flame graph: the root at the bottom, callees above their callers."""
    root = _tree(stacks)
    total = root["n"] or 1
    depth = 1 + max((len(s) for s in stacks), default=0)
    height = (depth + 3) * FRAME_H
    scale = (WIDTH - 20) / total
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="#fdfbf5"/>',
        f'<text x="10" y="14" font-size="13">{escape(title)} ({total} samples)</text>',
    ]
    # Depth-first with an explicit stack: (node, x in samples, level from the bottom).
    todo = [(root, 0, 0)]
    while todo:
        node, x, level = todo.pop()
        w = node["n"] * scale
        if w < 0.3:
            continue
        px, py = 10 + x * scale, height - (level + 1) * FRAME_H - 4
        label = node["name"]
        tip = f"{label}: {node['n']} samples ({node['n'] / total:.1%})"
        out.append(
            f'<g><title>{escape(tip)}</title><rect x="{px:.1f}" y="{py}" width="{w:.1f}" '
            f'height="{FRAME_H - 1}" fill="{_colour(label)}" rx="2"/>'
        )
        chars = int((w - 4) / FONT_W)
        if chars >= 3:
            text = label if len(label) <= chars else label[: chars - 2] + ".."
            out.append(f'<text x="{px + 2:.1f}" y="{py + FRAME_H - 4}">{escape(text)}</text>')
        out.append("</g>")
        kx = x
        for kid in sorted(node["kids"].values(), key=lambda k: k["name"]):
            todo.append((kid, kx, level + 1))
            kx += kid["n"]
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    source = Path(argv[0])
    target = Path(argv[1]) if len(argv) > 1 else source.with_suffix(".svg")
    stacks = parse(source.read_text())
    target.write_text(render(stacks, source.stem))
    print(formatSummary(summary(stacks)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
