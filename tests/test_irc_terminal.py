"""irssi, Debian's terminal IRC client, in tmux against a real server, read off the screen.

irssi runs in a tmux pane with a throwaway home (its own config, nothing saved, no other
network), keys are typed with C{tmux send-keys} and the screen is read with
C{tmux capture-pane}, as in L{test_client_terminal}. The other party in C{#lobby} is a plain
TCP socket speaking the line protocol, as nc would.

Needs tmux and irssi (apt-get install tmux irssi). Without them the test is skipped, saying
so, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import runServer
from test_client_terminal import TIMEOUT, Terminal

NICK = "ircy"
LISTEN = "tcp:0:interface=127.0.0.1"

# irssi's settings: no autosave, so the home stays as written. Its flood protection
# (cmd_queue_speed, 2.2 s between commands once five have gone) is turned off: with it, the
# JOIN alone waits 5 s behind the commands irssi sends on connecting.
CONFIG = f"""\
settings = {{
  core = {{
    nick = "{NICK}";
    user_name = "{NICK}";
    real_name = "irssi in tmux";
    settings_autosave = "no";
  }};
  "irc/core" = {{ cmd_queue_speed = "0"; }};
  "fe-common/core" = {{ autolog = "no"; }};
}};
"""


@pytest.fixture(autouse=True)
def needTmuxAndIrssi() -> None:
    missing = [program for program in ("tmux", "irssi") if shutil.which(program) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        reason = f"{' and '.join(missing)} {verb} not installed (apt-get install tmux irssi)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def irssi() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def startIrssi(opened: list[Terminal], home: Path, port: int) -> Terminal:
    home.mkdir()
    (home / "config").write_text(CONFIG)
    terminal = Terminal("irssi", f"--home={home}", "-n", NICK, "-c", "127.0.0.1", "-p", str(port))
    opened.append(terminal)
    return terminal


class LineClient:
    """A line-protocol connection, as nc would make; keeps every line it received, and
    shows them (and the irssi screen) when what it waits for does not come."""

    def __init__(self, port: int, nick: str, term: Terminal) -> None:
        self.term = term
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.lines: list[str] = []
        self.read = 0  # lines before this one have been looked at
        self.buffer = b""
        self.say(nick)

    def say(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def expect(self, pattern: str) -> str:
        """Read until a line matches the regex C{pattern}; return that line."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            while self.read < len(self.lines):
                line = self.lines[self.read]
                self.read += 1
                if re.search(pattern, line):
                    return line
            if time.monotonic() > deadline:
                pytest.fail(self.failure(f"the line client never received {pattern!r}"))
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                pytest.fail(self.failure(f"connection closed while waiting for {pattern!r}"))
            self.buffer += data
            *complete, self.buffer = self.buffer.split(b"\n")
            self.lines += [line.decode().rstrip("\r") for line in complete]

    def failure(self, what: str) -> str:
        received = "\n".join(self.lines[-15:])
        return f"{what}; it received:\n{received}\nirssi's screen:\n{self.term.screen()}"

    def close(self) -> None:
        self.sock.close()


def test_irssi_talks_with_a_line_client_in_lobby(tmp_path, irssi):
    args = ("--tcp", LISTEN, "--irc", LISTEN, "--db", "memory")
    with runServer(tmp_path, *args, listeners=2) as server:
        term = startIrssi(irssi, tmp_path / "irssi", server.irc)
        term.waitFor(rf"-!- Welcome to the chatserv IRC network, {NICK}!")

        # The server puts an IRC client in no channel: irssi joins one, then asks for its modes,
        # its members and its ban list, and says when all three have been answered.
        term.type("/join #lobby")
        term.press("Enter")
        term.waitFor(rf"-!- {NICK} \[~{NICK}@\S+\] has joined #lobby$")
        term.waitFor(r"-!- Irssi: Join to #lobby was synced in \d+ secs$")
        term.waitFor(r"\[\d+:127/#lobby\(\+nt\)\]")  # the status bar: window, channel, modes

        nelly = LineClient(server.tcp, "nelly", term)
        try:
            nelly.expect(r"Welcome, nelly!")
            assert nelly.expect(r"#lobby users \(").endswith(f"#lobby users (2): {NICK}, nelly")
            term.waitFor(r"-!- nelly \[\S+\] has joined #lobby$")

            nelly.say("hello from netcat")
            term.waitFor(r"^\d\d:\d\d <[ @+]?nelly> hello from netcat$")

            term.type("hello from irssi")
            term.press("Enter")
            term.type("/me waves")
            term.press("Enter")
            said = nelly.expect(r"hello from irssi")
            assert said.endswith(f"#lobby <{NICK}> hello from irssi"), nelly.failure(said)
            waved = nelly.expect(r"waves")
            assert waved.endswith(f"#lobby * {NICK} waves"), nelly.failure(waved)
            # irssi shows what it sent itself and asks for no echo-message: the server must
            # not send a copy back. Anything sent to irssi before nelly's next line would
            # arrive before it, so once that line is on the screen, each is there once.
            nelly.say("nice")
            term.waitFor(r"<[ @+]?nelly> nice$")
            screen = term.screen()
            assert len(re.findall(rf"<[ @+]?{NICK}> hello from irssi$", screen, re.M)) == 1, screen
            assert len(re.findall(rf"^\d\d:\d\d +\* {NICK} waves$", screen, re.M)) == 1, screen

            term.type("/quit bye")
            term.press("Enter")
            gone = nelly.expect(rf"<-- {NICK} has")
            left = rf"#lobby <-- {NICK} has (left|quit) \(.*bye\)$"
            assert re.search(left, gone), nelly.failure(gone)
            term.waitFor(r"\[exited 0\]")
        finally:
            nelly.close()

    output = "".join(server.output)
    assert "Traceback" not in output, output[-3000:]
