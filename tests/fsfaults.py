"""Real file-system faults for the storage tests: a tiny file system that fills up, and
files made immutable (C{chattr +i}), which even root cannot write.

Both need root and a capability (CAP_SYS_ADMIN to mount, CAP_LINUX_IMMUTABLE for chattr).
Where the machine does not give them, or the file system does not support the flag, the
test is skipped, saying why, and the simulated variant beside it still runs. With
C{CI=true}, a machine that has root, the capability and the tool is expected to manage:
a failure there fails the test rather than skipping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CAP_LINUX_IMMUTABLE = 9
CAP_SYS_ADMIN = 21
# What chattr says on a file system without the flag: the machine's limit, not a failure.
_UNSUPPORTED = ("Operation not supported", "Inappropriate ioctl")


def _capable(bit: int) -> bool:
    if os.geteuid() != 0:
        return False
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def _unable(what: str, reason: str, expected: bool) -> None:
    """Skip: C{what} cannot be done here. Fail instead on CI if it C{expected} to work."""
    message = f"{what} not possible here: {reason}"
    if expected and os.environ.get("CI") == "true":
        pytest.fail(f"{message} (root, the capability and the tool are there)", pytrace=False)
    pytest.skip(message)


def _run(argv: list[str]) -> str | None:
    """Run C{argv}; why it failed, or C{None}."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode == 0:
        return None
    return " ".join((done.stderr or done.stdout or f"exit {done.returncode}").split())


@contextmanager
def tinyFilesystem(directory: Path, size: str = "512k") -> Iterator[Path]:
    """A tmpfs of C{size} mounted on C{directory} (made if needed) for the test's duration."""
    directory.mkdir(exist_ok=True)
    what = f"a {size} tmpfs"
    if os.geteuid() != 0 or not _capable(CAP_SYS_ADMIN):
        _unable(what, "needs root with CAP_SYS_ADMIN", False)
    if shutil.which("mount") is None:
        _unable(what, "no mount command", False)
    problem = _run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)])
    if problem is not None:
        _unable(what, problem, True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of C{directory} to the last block; the filler's path."""
    filler = directory / "filler"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
    with open(filler, "ab", buffering=0) as f:  # and the last bytes of a partial block
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return filler


class Immutable:
    """C{chattr +i} on files, undone by L{release} (and always at the end of the test)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def check(self, directory: Path) -> None:
        """Skip (or fail: see the module docstring) unless chattr works in C{directory}."""
        what = "chattr +i"
        if not _capable(CAP_LINUX_IMMUTABLE):
            _unable(what, "needs root with CAP_LINUX_IMMUTABLE", False)
        if shutil.which("chattr") is None:
            _unable(what, "no chattr command", False)
        probe = directory / "chattr-probe"
        probe.write_bytes(b"")
        problem = _run(["chattr", "+i", str(probe)])
        _run(["chattr", "-i", str(probe)])
        probe.unlink()
        if problem is not None:
            unsupported = any(text in problem for text in _UNSUPPORTED)
            _unable(what, problem, not unsupported)

    def freeze(self, *paths: Path | str) -> None:
        names = [str(p) for p in paths if os.path.exists(p)]
        problem = _run(["chattr", "+i", *names])
        assert problem is None, problem
        self.paths += names

    def release(self) -> None:
        if self.paths:
            _run(["chattr", "-i", *self.paths])
            self.paths = []


@pytest.fixture
def immutable():
    frozen = Immutable()
    yield frozen
    frozen.release()
