"""chatserv-client in a real terminal (tmux), against a real server, read off the screen.

A person's view: the client is started in a tmux pane, keys are typed with
C{tmux send-keys}, and what the screen shows is read with C{tmux capture-pane}. The other
party is a plain TCP socket speaking the line protocol, as nc would.

Needs tmux (apt-get install tmux). Without it these tests are skipped, saying so, except
under CI=true, where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import runServer

CLIENT = Path(sys.executable).with_name("chatserv-client")
TIMEOUT = 10.0  # seconds to wait for anything to appear
# ... and for the client to come back: the server's start-up plus up to one back-off delay
# (1, 2, 4, 8 s: a server slow to start can make the client wait for the next attempt).
RECONNECT = 20.0
WIDTH, HEIGHT = 100, 24
STATUS = re.compile(
    r"^ 127\.0\.0\.1:\d+ \| .* \| (?P<state>[^|]+) \| (?P<nick>\S+) \| (?P<room>\S+)"
)


@pytest.fixture(autouse=True)
def needTmux() -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is not installed (apt-get install tmux)")
        pytest.skip("tmux is not installed (apt-get install tmux)")


class Terminal:
    """One program running in a tmux pane of a private tmux server."""

    def __init__(self, *argv: str) -> None:
        self.socket = f"chatserv-test-{uuid.uuid4().hex[:12]}"
        # The shell stays after the client ends, to show how it exited.
        command = " ".join(_quote(a) for a in argv) + '; echo "[exited $?]"; sleep 60'
        self.tmux(
            "new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT),
            "-e", "no_proxy=*", "-e", "LANG=C.UTF-8", "sh", "-c", command,
        )  # fmt: skip

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert result.returncode == 0, f"tmux {args[0]}: {result.stderr}"
        return result.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def rows(self) -> list[str]:
        return self.screen().rstrip("\n").split("\n")

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-l", text)  # -l: the characters themselves, no key names

    def press(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def waitFor(
        self, pattern: str, gone: bool = False, timeout: float = TIMEOUT
    ) -> re.Match | None:
        """Wait until the screen matches the regex C{pattern} (or stops matching it, with
        C{gone}); fail with the screen as it is then."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            match = re.search(pattern, screen, re.MULTILINE)
            if (match is None) == gone:
                return match
            if time.monotonic() > deadline:
                pytest.fail(f"{'still' if gone else 'never'} saw {pattern!r} on:\n{screen}")
            time.sleep(0.05)

    def status(self) -> re.Match:
        """The status bar (the row above the input line), parsed."""
        match = STATUS.match(self.rows()[-2])
        assert match, self.screen()
        return match

    def inputLine(self) -> str:
        return self.rows()[-1]

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def client(terminals: list[Terminal], *args: str) -> Terminal:
    terminal = Terminal(str(CLIENT), "127.0.0.1", *args)
    terminals.append(terminal)
    return terminal


class LineUser:
    """The other party: a line-protocol connection, as nc would make."""

    def __init__(self, port: int, nick: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""
        self.say(nick)
        self.expect(f"Welcome, {nick}!")

    def say(self, *lines: str) -> None:
        self.sock.sendall(b"".join(line.encode() + b"\r\n" for line in lines))

    def expect(self, text: str) -> str:
        """Read lines until one contains C{text}; return it."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                if text in line.decode():
                    return line.decode().rstrip("\r")
            if time.monotonic() > deadline:
                pytest.fail(f"the line client never received {text!r}")
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            assert data, f"connection closed while waiting for {text!r}"
            self.buffer += data

    def close(self) -> None:
        self.sock.close()


def test_line_mode_conversation_scrollback_and_reconnect(tmp_path, terminals):
    with runServer(tmp_path) as server:
        tcp, ws = server.tcp, server.ws
        term = client(terminals, str(tcp))
        # No --nick: the user answers the server's greeting.
        term.waitFor(r"Type a nickname to begin")
        term.type("alice")
        term.press("Enter")
        term.waitFor(r"Welcome, alice!")
        assert term.status()["nick"] == "alice" and term.status()["room"] == "#lobby"

        bob = LineUser(tcp, "bob")
        term.waitFor(r"#lobby --> bob has joined")

        # Half a message on the input line while bob talks: his line appears above, the
        # typing stays where it was.
        term.type("half-typed mes")
        term.waitFor(r"^> half-typed mes$")
        bob.say("hello alice, are you there?")
        term.waitFor(r"#lobby <bob> hello alice, are you there\?")
        rows = term.rows()
        assert rows[-1] == "> half-typed mes", term.screen()
        assert STATUS.match(rows[-2]), term.screen()
        assert rows[-3].endswith("#lobby <bob> hello alice, are you there?"), term.screen()
        # The nickname is drawn in a colour of its own (-e keeps the escape sequences).
        colours = term.tmux("capture-pane", "-p", "-e")
        assert re.search(r"<\x1b\[[0-9;]*38;5;\d+m(\x1b\[[0-9;]*m)*bob\x1b\[", colours), colours
        term.type("sage")
        term.press("Enter")
        assert bob.expect("half-typed").endswith("#lobby <alice> half-typed message")
        # The line wire sends no copy of one's own message: the client shows it itself.
        term.waitFor(r"\] #lobby <alice> half-typed message$")
        term.waitFor(r"^>$")  # (capture-pane drops trailing spaces)

        # /me and /msg, both ways.
        bob.say("/me waves")
        term.waitFor(r"\] #lobby \* bob waves$")
        term.type("/me waves back")
        term.press("Enter")
        assert bob.expect("waves back").endswith("#lobby * alice waves back")
        term.waitFor(r"\] #lobby \* alice waves back$")
        bob.say("/msg alice a secret")
        term.waitFor(r"\] \*bob\* a secret$")
        # Tab completes the nickname.
        term.type("/msg b")
        term.press("Tab")
        term.waitFor(r"^> /msg bob$")
        term.type("kept safe")
        term.press("Enter")
        assert bob.expect("kept safe").endswith("*alice* kept safe")
        term.waitFor(r"\] -> \*bob\* kept safe$")

        # Scroll-back: enough traffic to push the start off the screen (and few enough
        # lines to stay within the server's burst of 20 requests).
        bob.say(*(f"traffic line {i:02}" for i in range(12)))
        term.waitFor(r"traffic line 11$")
        first = r"\] chatserv-client: 127\.0\.0\.1"  # the first line of the session
        term.waitFor(first, gone=True)
        term.press("PageUp")
        term.waitFor(r"-- more below: \d+ lines; End returns --")
        term.waitFor(r"traffic line 11$", gone=True)
        term.press("PageUp")
        term.waitFor(first)
        assert term.inputLine() == ">", term.screen()
        bob.say("while you were reading")  # arrives below, without moving the page
        term.waitFor(r"more below: \d+ lines, 1 new")
        term.press("End")
        term.waitFor(r"while you were reading$")
        term.waitFor(r"more below", gone=True)
        term.press("PageUp")
        term.waitFor(r"more below")
        term.type("x")  # typing returns to the newest line too
        term.waitFor(r"more below", gone=True)
        term.press("BSpace")

        term.type("/join dev")
        term.press("Enter")
        term.waitFor(r"#dev --> alice has joined")
        assert term.status()["room"] == "#dev"
        bob.close()

        # The server dies: the client says so and keeps trying.
        server.process.kill()
        server.process.wait()
        term.waitFor(r"connection closed by the server|connection lost")
        term.waitFor(
            r"^ 127\.0\.0\.1:\d+ \| line \| (reconnecting in \d+ s|connecting) \| alice \| #dev"
        )

    # It comes back on the same ports; the client returns with its nickname, to its room.
    listen = ("--tcp", f"tcp:{tcp}:interface=127.0.0.1", "--ws", f"tcp:{ws}:interface=127.0.0.1")
    with runServer(tmp_path, *listen, "--db", "memory"):
        term.waitFor(r"^ 127\.0\.0\.1:\d+ \| line \| connected \| alice \| #dev", timeout=RECONNECT)
        carol = LineUser(tcp, "carol")
        carol.say("/who dev")
        assert carol.expect("#dev users").endswith("#dev users (1): alice")
        carol.close()

        term.type("/quit")
        term.press("Enter")
        term.waitFor(r"\[exited 0\]")


def test_websocket_mode(tmp_path, terminals):
    with runServer(tmp_path) as server:
        term = client(terminals, str(server.ws), "--ws", "--nick", "alice")
        term.waitFor(r"Welcome, alice!")
        term.waitFor(r"^ 127\.0\.0\.1:\d+ \| websocket \| connected \| alice \| #lobby")
        bob = LineUser(server.tcp, "bob")
        term.waitFor(r"#lobby --> bob has joined")

        term.type("half-typed")
        term.waitFor(r"^> half-typed$")
        bob.say("hi from the line side")
        term.waitFor(r"#lobby <bob> hi from the line side")
        assert term.inputLine() == "> half-typed", term.screen()
        term.type(" hello from the websocket")
        term.press("Enter")
        assert bob.expect("hello from").endswith(
            "#lobby <alice> half-typed hello from the websocket"
        )
        term.waitFor(r"\] #lobby <alice> half-typed hello from the websocket$")

        bob.say("/me waves", "/msg alice psst")
        term.waitFor(r"\] #lobby \* bob waves$")
        term.waitFor(r"\] \*bob\* psst$")
        term.type("/me bows")
        term.press("Enter")
        assert bob.expect("bows").endswith("#lobby * alice bows")
        term.type("/msg bob psst back")
        term.press("Enter")
        assert bob.expect("psst back").endswith("*alice* psst back")
        term.waitFor(r"\] -> \*bob\* psst back$")
        # The server echoes our own messages on this wire: each is shown once.
        screen = term.screen()
        assert screen.count("<alice> half-typed hello") == 1, screen
        assert screen.count("* alice bows") == 1, screen
        term.type("//etc is a directory")  # "//" says a line starting with "/"
        term.press("Enter")
        assert bob.expect("directory").endswith("#lobby <alice> /etc is a directory")
        bob.close()
        term.press("Up")  # input history
        term.waitFor(r"^> //etc is a directory$")
        term.press("Up")
        term.waitFor(r"^> /msg bob psst back$")
        term.press("C-u")

        term.type("/join dev")
        term.press("Enter")
        term.waitFor(r"^ 127\.0\.0\.1:\d+ \| websocket \| connected \| alice \| #dev")
        tcp, ws = server.tcp, server.ws
        server.process.kill()
        server.process.wait()
        term.waitFor(r"connection lost")

    listen = ("--tcp", f"tcp:{tcp}:interface=127.0.0.1", "--ws", f"tcp:{ws}:interface=127.0.0.1")
    with runServer(tmp_path, *listen, "--db", "memory"):
        term.waitFor(
            r"^ 127\.0\.0\.1:\d+ \| websocket \| connected \| alice \| #dev", timeout=RECONNECT
        )
        term.press("C-c")
        term.waitFor(r"\[exited 0\]")
