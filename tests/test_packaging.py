"""A regular (non-editable) install ships the twistd plugin where Twisted finds it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a clean copy: setuptools reuses build/ in the source tree, where a stale
    # file from an earlier build would end up in the wheel.
    source = tmp_path_factory.mktemp("source") / "chatserv"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "dropin.cache"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        timeout=300,
    )
    (found,) = out.glob("chatserv-*.whl")
    return found


def test_wheel_has_the_plugin_and_no_twisted_init(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/chatserv_plugin.py" in names
    # An __init__.py here would shadow or, on uninstall, delete Twisted's own.
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert "chatserv/tap.py" in names and "chatserv/protocols/ws.py" in names
    # The browser client's files, served from the installed package.
    assert {"chatserv/webclient/index.html", "chatserv/webclient/app.js"} <= names
    assert "chatserv/webclient/style.css" in names


def test_installed_plugin_is_found_by_twistd(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    # The installed copy comes first on the path, ahead of this source tree.
    env = dict(os.environ, PYTHONPATH=str(target))
    probe = (
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "import twisted.plugins.chatserv_plugin as p, chatserv\n"
        "print([m.tapname for m in getPlugins(IServiceMaker)].count('chatserv'))\n"
        "print(p.__file__)\nprint(chatserv.__file__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out[0] == "1"
    assert out[1].startswith(str(target)) and out[2].startswith(str(target))
    help_ = subprocess.run(
        [str(Path(sys.executable).with_name("twistd")), "chatserv", "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_.returncode == 0, help_.stderr
    assert "--tcp=" in help_.stdout and "--ws=" in help_.stdout
