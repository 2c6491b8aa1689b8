"""The browser client (chatserv/webclient/) in headless Chromium, against a real server.

Two browser pages and a netcat-style line client share a room: messages, /me, private
messages, rooms, history, colours, a topic, and hostile text shown as text, all checked in
the DOM. Then each room's view of its own, a quit from several rooms at once (set up on
the SSH console), one colour per person, reconnection after the server dies and comes
back on the same ports (nobody shown as present meanwhile), and the phone layout.
Screenshots go to $CHATSERV_SCREENSHOTS (default build/screenshots/).

Chromium is Debian's package (/usr/bin/chromium, or $CHATSERV_CHROMIUM), driven by
Playwright. Without it these tests are skipped, saying so, except under CI=true, where
they fail.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from playwright.sync_api import Browser, Locator, expect, sync_playwright
from servers import runServer
from test_manhole import _open, makeKey

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("CHATSERV_CHROMIUM", "/usr/bin/chromium"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 667}
TIMEOUT = 5.0  # seconds, for the line client; Playwright's expect waits 5 s by default
PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


SCREENSHOTS = Path(os.environ.get("CHATSERV_SCREENSHOTS") or ROOT / "build" / "screenshots")
_taken: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def screenshotReport(request):
    """Say where the screenshots went, past pytest's output capture."""
    yield
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    if _taken and reporter is not None:
        with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
            names = ", ".join(path.name for path in _taken)
            reporter.write_line(f"\nbrowser screenshots in {SCREENSHOTS}/: {names}")


def screenshot(chat: Chat, name: str) -> Path:
    """Save what the page shows now as NAME in the screenshot directory."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    chat.page.screenshot(path=path)
    _taken.append(path)
    return path


class Chat:
    """One browser tab of the web client, and anything that went wrong in it."""

    def __init__(self, browser: Browser, port: int, viewport=DESKTOP, **options) -> None:
        self.context = browser.new_context(viewport=viewport, **options)
        self.page = self.context.new_page()
        self.problems: list[str] = []  # script errors, CSP refusals
        self.page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        self.page.on("console", self._console)
        self.page.goto(f"http://127.0.0.1:{port}/")

    def _console(self, message) -> None:
        # A refused websocket while the server is down is expected, and Chromium logs it.
        if message.type == "error" and "WebSocket connection to" not in message.text:
            self.problems.append(f"console: {message.text}")

    def connect(self, nick: str, password: str = "") -> None:
        self.page.fill("#nick", nick)
        self.page.fill("#password", password)
        self.page.click("#connect-button")

    def join(self, nick: str, password: str = "") -> None:
        """Connect as NICK and wait for the chat screen."""
        self.connect(nick, password)
        expect(self.status).to_have_text("connected")
        expect(self.page.locator("#my-nick")).to_have_text(nick)

    def type(self, text: str) -> None:
        """Type a line into the message box and press Enter."""
        self.page.fill("#input", text)
        self.page.press("#input", "Enter")
        expect(self.page.locator("#input")).to_have_value("")  # it was sent

    @property
    def status(self) -> Locator:
        return self.page.locator("#status")

    def lines(
        self, kind: str | None = None, sender: str | None = None, room: str | None = None
    ) -> Locator:
        """The lines of one kind (message, action, msg, notice, ...) in the view on screen,
        or in ROOM's view, shown or not."""
        view = "#views > ol:not([hidden])" if room is None else f'#views > ol[data-room="{room}"]'
        selector = f"{view} > li"
        if kind is not None:
            selector += f'[data-kind="{kind}"]'
        if sender is not None:
            selector += f'[data-from="{sender}"]'
        return self.page.locator(selector)

    def saying(
        self, sender: str, text: str, kind: str = "message", room: str | None = None
    ) -> Locator:
        """SENDER's lines whose text is exactly TEXT (in the view on screen, or ROOM's)."""
        return self.lines(kind, sender, room).filter(
            has=self.page.locator(".text", has_text=re.compile("^" + re.escape(text) + "$"))
        )

    def said(self, sender: str, text: str, kind: str = "message") -> Locator:
        """Wait for SENDER's line whose text is exactly TEXT on screen; return it."""
        line = self.saying(sender, text, kind)
        expect(line).to_have_count(1)
        return line

    def room(self, name: str) -> Locator:
        return self.page.locator(f'#room-list [data-room="{name}"]')

    def user(self, nick: str) -> Locator:
        return self.page.locator(f'#user-list [data-nick="{nick}"]')

    def close(self) -> None:
        self.context.close()


class LineClient:
    """A netcat user: a plain TCP socket speaking the line protocol."""

    def __init__(self, port: int, nick: str) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.file = self.socket.makefile("rb")
        self.received: list[str] = []
        self.send(nick)
        self.expect(f"Welcome, {nick}!")

    def send(self, line: str) -> None:
        self.socket.sendall(line.encode("utf-8") + b"\n")

    def expect(self, text: str) -> str:
        """Read lines until one contains TEXT; return it."""
        start = len(self.received)
        while True:
            try:
                raw = self.file.readline()
            except TimeoutError:
                raw = b""
            if not raw:
                raise AssertionError(f"never received {text!r}; got {self.received[start:]!r}")
            self.received.append(raw.decode("utf-8").rstrip("\r\n"))
            if text in self.received[-1]:
                return self.received[-1]

    def close(self) -> None:
        self.file.close()
        self.socket.close()


def assertNoHorizontalScroll(chat: Chat) -> None:
    width = chat.page.viewport_size["width"]
    assert chat.page.evaluate("document.documentElement.scrollWidth") <= width
    assert chat.page.evaluate("document.body.scrollWidth") <= width


def test_conversation(browser, tmp_path):
    """alice and bob in browsers and carol on netcat talk, move rooms, and stay safe."""
    config = tmp_path / "chatserv.toml"
    config.write_text('[accounts]\nadmins = ["alice"]\n')
    listen = ("--tcp", "tcp:0:interface=127.0.0.1", "--ws", "tcp:0:interface=127.0.0.1")
    # A name in [accounts] admins is reserved until its account exists: the operator makes
    # it (on the console, create_account; here straight into the database, made by a
    # first start, as that would have).
    db = tmp_path / "chat.db"
    with runServer(tmp_path, *listen, "--db", str(db)):
        pass
    with sqlite3.connect(db) as connection:
        connection.execute(
            "INSERT INTO accounts (nick_key, nick, password_hash, color, admin, created)"
            " VALUES ('alice', 'alice', ?, NULL, 0, ?)",
            (PasswordHasher().hash("wonderland-42"), time.time()),
        )
    connection.close()  # the server holds its database alone: nobody may have it open
    with runServer(tmp_path, *listen, "--db", str(db), "-c", str(config)) as server:
        alice = Chat(browser, server.ws)
        alice.join("alice", "wonderland-42")
        expect(alice.page.locator("#room-name")).to_have_text("#lobby")
        expect(alice.user("alice")).to_be_visible()

        # A colour set with a typed command shows on alice's messages, here and elsewhere.
        alice.type("/color #ff8800")
        expect(alice.lines("notice").last).to_have_text(re.compile("your colour is now #ff8800"))
        alice.type("hello, is anyone here?")
        nick = alice.said("alice", "hello, is anyone here?").locator(".nick")
        expect(nick).to_have_css("color", "rgb(255, 136, 0)")

        carol = LineClient(server.tcp, "carol")
        expect(alice.user("carol")).to_be_visible()
        expect(alice.lines("join").last).to_have_text(re.compile("carol joined #lobby"))
        carol.send("hi alice, I'm on netcat")
        alice.said("carol", "hi alice, I'm on netcat")

        # bob comes late: the room's history is replayed under a divider, colour and all.
        bob = Chat(browser, server.ws)
        bob.join("bob")
        expect(bob.lines("history-start")).to_have_count(1)
        expect(bob.lines("history-end")).to_have_count(1)
        old = bob.said("alice", "hello, is anyone here?")
        expect(old).to_have_class(re.compile(r"\bhistory\b"))
        expect(old.locator(".nick")).to_have_css("color", "rgb(255, 136, 0)")
        expect(bob.said("carol", "hi alice, I'm on netcat")).to_have_class(re.compile("history"))
        expect(bob.user("alice").locator(".nick")).to_have_css("color", "rgb(255, 136, 0)")
        expect(alice.room("lobby").locator(".count")).to_have_text("3")

        # Everyone sees everyone.
        bob.type("hey both")
        alice.said("bob", "hey both")
        carol.expect("<bob> hey both")
        carol.send("/me waves from the terminal")
        expect(bob.said("carol", "waves from the terminal", "action")).to_have_text(
            re.compile(r"\* carol waves from the terminal$")
        )
        alice.type("/me makes tea")
        expect(bob.said("alice", "makes tea", "action")).to_have_text(
            re.compile(r"\* alice makes tea$")
        )
        carol.expect("* alice makes tea")

        # A private message: click a user, type; reply by clicking the sender.
        bob.user("alice").click()
        expect(bob.page.locator("#pm-target")).to_be_visible()
        bob.type("lunch at noon?")
        received = alice.said("bob", "lunch at noon?", "msg")
        expect(received).to_have_attribute("data-direction", "in")
        expect(bob.said("bob", "lunch at noon?", "msg")).to_have_attribute("data-direction", "out")
        received.locator(".pm-label").click()
        expect(alice.page.locator("#pm-nick")).to_have_text("bob")
        alice.type("sure, the usual place")
        expect(bob.said("alice", "sure, the usual place", "msg")).to_have_attribute(
            "data-direction", "in"
        )
        alice.page.click("#pm-cancel")
        carol.send("/msg alice are you two plotting?")
        carol.expect("-> *alice* are you two plotting?")
        alice.said("carol", "are you two plotting?", "msg")
        assert not any("lunch" in line for line in carol.received)  # private stays private

        # Rooms: bob makes one; the counts follow on both pages.
        bob.page.fill("#join-room", "dev")
        bob.page.press("#join-room", "Enter")
        expect(bob.page.locator("#room-name")).to_have_text("#dev")
        expect(bob.room("dev")).to_have_attribute("aria-current", "true")
        expect(bob.room("dev").locator(".count")).to_have_text("1")
        expect(bob.room("lobby").locator(".count")).to_have_text("2")
        expect(alice.room("lobby").locator(".count")).to_have_text("2")
        expect(alice.user("bob")).to_have_count(0)
        bob.type("the build is green")
        alice.type("/rooms")  # typed commands answer in the log, and refresh the list
        expect(alice.lines("rooms").last).to_have_text(re.compile(r"#dev \(1\), #lobby \(2\)"))
        alice.room("dev").click()
        expect(alice.page.locator("#room-name")).to_have_text("#dev")
        expect(alice.said("bob", "the build is green")).to_have_class(re.compile("history"))
        expect(alice.room("dev").locator(".count")).to_have_text("2")
        expect(alice.room("lobby").locator(".count")).to_have_text("1")
        expect(bob.room("dev").locator(".count")).to_have_text("2")
        expect(bob.user("alice")).to_be_visible()

        # alice logged in (an admin by the config; said in the lobby's view, where she was)
        # and sets the room's topic.
        expect(alice.lines("login", room="lobby").last).to_have_text(
            re.compile("logged in as alice.*admin")
        )
        alice.type("/topic Builds, deploys and tea")
        for chat in alice, bob:
            expect(chat.page.locator("#room-topic")).to_have_text("Builds, deploys and tea")
        bob.type("nice topic")
        alice.said("bob", "nice topic")

        # Hostile text is shown as text: no element made from it, no script run.
        carol.send("/join dev")
        expect(alice.user("carol")).to_be_visible()
        carol.send(PAYLOAD)
        for chat in alice, bob:
            line = chat.said("carol", PAYLOAD)
            assert line.locator(".text").evaluate("node => node.textContent") == PAYLOAD
            assert chat.page.locator("#views img, #views b, #views script").count() == 0
            assert chat.page.evaluate("typeof window.__pwned") == "undefined"
        alice.type("/nosuchcommand")
        expect(alice.lines("error").last).to_have_text(
            re.compile('unknown command "/nosuchcommand"')
        )
        screenshot(alice, "desktop.png")
        alice.page.press("#input", "ArrowUp")  # recalls what was typed last
        expect(alice.page.locator("#input")).to_have_value("/nosuchcommand")

        # A paste longer than the server's limit is not cut: refused, and given back.
        long = "0123456789" * 150
        alice.page.fill("#input", long)
        alice.page.press("#input", "Enter")
        expect(alice.lines("error").last).to_have_text(
            re.compile(r"message too long \(the limit is 1024 characters\); your text is back")
        )
        expect(alice.page.locator("#input")).to_have_value(long)
        alice.page.fill("#input", "")

        # Back in the lobby, bob is not shown its history again: the server knows he saw
        # all of it (it replays only what a connection missed while away).
        replays = bob.lines("history", room="lobby").count()
        bob.room("lobby").click()
        expect(bob.page.locator("#room-name")).to_have_text("#lobby")
        bob.type("back in the lobby")  # answered after the join: any replay came first
        bob.said("bob", "back in the lobby")
        expect(bob.lines("history")).to_have_count(replays)
        expect(bob.lines("history-start")).to_have_count(1)  # the one from his first join
        bob.said("bob", "hey both")  # still exactly one

        # alice goes back too: the lobby's view as she left it, then what bob said there
        # meanwhile; nothing of #dev's.
        alice.room("lobby").click()
        expect(alice.page.locator("#room-name")).to_have_text("#lobby")
        expect(alice.said("bob", "back in the lobby")).to_have_class(re.compile("history"))
        expect(alice.said("bob", "lunch at noon?", "msg")).to_have_attribute("data-direction", "in")
        alice.said("alice", "makes tea", "action")
        expect(alice.saying("bob", "the build is green")).to_have_count(0)
        expect(alice.saying("carol", PAYLOAD)).to_have_count(0)
        screenshot(alice, "readme-desktop.png")

        # Kicked: the page says why and does not come back by itself.
        alice.type("/kick bob enough for today")
        expect(bob.status).to_have_attribute("data-state", "stopped")
        expect(bob.status).to_have_text("disconnected: you were kicked by alice: enough for today")
        expect(bob.page.locator("#reconnect")).to_have_text("Reconnect")

        assert alice.problems == [] and bob.problems == []
        carol.close()


def goTo(chat: Chat, room: str) -> None:
    """Go to ROOM with the room form, and wait until its view is the one shown."""
    chat.page.fill("#join-room", room)
    chat.page.press("#join-room", "Enter")
    expect(chat.page.locator("#room-name")).to_have_text(f"#{room}")
    expect(chat.page.locator(f'#views > ol[data-room="{room}"]')).to_be_visible()


def test_room_views(browser, tmp_path):
    """Each room has a view of its own: its lines and its history, none of another room's."""
    with runServer(tmp_path) as server:
        carol = LineClient(server.tcp, "carol")
        carol.send("before anyone came")
        dave = LineClient(server.tcp, "dave")
        dave.send("/join dev")
        dave.expect("#dev users (1): dave")
        dave.send("dev history")
        dave.send("/join lobby")  # #dev is kept, and its history, while nobody is in it
        dave.expect("#lobby users")

        alice = Chat(browser, server.ws)
        alice.join("alice")
        expect(alice.said("carol", "before anyone came")).to_have_class(re.compile(r"\bhistory\b"))
        carol.send("lobby one")
        alice.said("carol", "lobby one")

        # In #dev, the view shows #dev: its history and its talk, nothing of the lobby's.
        goTo(alice, "dev")
        expect(alice.said("dave", "dev history")).to_have_class(re.compile(r"\bhistory\b"))
        for text in "before anyone came", "lobby one":
            expect(alice.saying("carol", text)).to_have_count(0)
        expect(alice.lines("history-start")).to_have_text("earlier in #dev")
        expect(alice.lines("join", room="dev")).to_have_text([re.compile("You joined #dev$")])
        carol.send("lobby two, while alice is away")
        dave.send("/join dev")
        dave.send("dev one")
        alice.said("dave", "dev one")
        expect(alice.saying("carol", "lobby two, while alice is away")).to_have_count(0)
        expect(alice.lines("message")).to_have_count(2)  # dev history, dev one

        # Back in the lobby: what it showed before, then what was said meanwhile (the
        # server replays it), each once; #dev's lines stay in #dev's view, hidden.
        alice.room("lobby").click()
        expect(alice.page.locator("#room-name")).to_have_text("#lobby")
        missed = alice.said("carol", "lobby two, while alice is away")
        expect(missed).to_have_class(re.compile(r"\bhistory\b"))
        expect(alice.said("carol", "lobby one")).not_to_have_class(re.compile("history"))
        alice.said("carol", "before anyone came")
        for text in "dev history", "dev one":
            expect(alice.saying("dave", text)).to_have_count(0)
            expect(alice.saying("dave", text, room="dev")).to_have_count(1)
        expect(alice.page.locator('#views > ol[data-room="dev"]')).to_be_hidden()
        expect(alice.page.locator("#views > ol:visible")).to_have_count(1)

        # A history asked for again is not shown twice in the view that has it.
        alice.type("/history 10")
        expect(alice.lines("history").last).to_have_text(
            re.compile("The last messages of #lobby are shown above.")
        )
        expect(alice.saying("carol", "before anyone came")).to_have_count(1)

        # Private messages and notices belong to no room: the view on screen shows them.
        goTo(alice, "dev")
        expect(alice.saying("dave", "dev one")).to_have_count(1)  # kept, not replayed again
        expect(alice.saying("carol", "lobby one")).to_have_count(0)
        carol.send("/msg alice are you in #dev now?")
        alice.said("carol", "are you in #dev now?", "msg")
        expect(alice.saying("carol", "are you in #dev now?", "msg", room="lobby")).to_have_count(0)
        alice.type("/time")
        expect(alice.lines("time")).to_have_count(1)
        screenshot(alice, "rooms-desktop.png")
        assert alice.problems == []
        carol.close()
        dave.close()


def manholePort(server) -> int:
    """The port the server's SSH console listens on, once it says so."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = re.search(r"manhole \(SSH\) listening on [\d.]+:(\d+)", "".join(server.output))
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no manhole port in {''.join(server.output)!r}")


def test_quit_from_several_rooms(browser, tmp_path):
    """dora, in two rooms at once, disconnects: each page drops her from its room's people
    and says so in that room's view, not in another's."""
    key, public = makeKey(tmp_path, "admin")
    (tmp_path / "authorized_keys").write_bytes(public + b"\n")
    listen = ("--tcp", "tcp:0:interface=127.0.0.1", "--ws", "tcp:0:interface=127.0.0.1")
    console = ("--manhole", "tcp:0:interface=127.0.0.1", "--manhole-keys", "authorized_keys")
    with runServer(tmp_path, *listen, "--db", "memory", *console) as server:
        alice = Chat(browser, server.ws)
        alice.join("alice")
        goTo(alice, "dev")
        alice.room("lobby").click()  # alice has a view of #dev too, and is in the lobby
        expect(alice.page.locator("#room-name")).to_have_text("#lobby")
        bob = Chat(browser, server.ws)
        bob.join("bob")
        goTo(bob, "dev")  # and bob has a view of the lobby, and is in #dev
        dora = LineClient(server.tcp, "dora")
        expect(alice.user("dora")).to_be_visible()
        expect(alice.room("lobby").locator(".count")).to_have_text("2")

        # A line client has one room; on the console the service puts dora in a second
        # one, as an IRC user would be.
        port = manholePort(server)
        admin = _open(port, "admin", key, None, True)
        try:
            admin._greeting()  # the blocking forms: this test has no reactor of its own
            admin._run('chat.join(chat.findUser("dora"), "dev")')
        finally:
            admin.close()
        dora.expect("#dev users (2): bob, dora")
        expect(bob.user("dora")).to_be_visible()
        expect(bob.room("dev").locator(".count")).to_have_text("2")

        dora.close()
        for chat, here, other in (alice, "lobby", "dev"), (bob, "dev", "lobby"):
            expect(chat.user("dora")).to_have_count(0)
            expect(chat.lines("quit", room=here)).to_have_text(
                [re.compile(r"dora has quit \(connection lost\)$")]
            )
            expect(chat.lines("quit", room=other)).to_have_count(0)
            expect(chat.room(here).locator(".count")).to_have_text("1")
        assert alice.problems == [] and bob.problems == []


def test_one_colour_per_person(browser, tmp_path):
    """A nickname has one colour wherever it shows, in every view, and follows its changes."""
    with runServer(tmp_path) as server:
        alice = Chat(browser, server.ws)
        alice.join("alice")
        carol = LineClient(server.tcp, "carol")
        expect(alice.user("carol")).to_be_visible()
        carol.send("hello, no colour yet")
        alice.said("carol", "hello, no colour yet")
        alice.user("carol").click()
        alice.type("hi carol")  # "you → carol": her name in alice's own line
        carol.expect("*alice* hi carol")
        alice.page.click("#pm-cancel")

        def carols():
            """Every carol on alice's page: lines in every view, and the people list."""
            return alice.page.locator(".nick", has_text=re.compile("^carol$"))

        def expectAll(names: Locator, color: str, count: int) -> None:
            expect(names).to_have_count(count)
            for name in names.all():
                expect(name).to_have_css("color", color)

        # Without a colour of her own, carol's name has the hue of her name, everywhere.
        hue = alice.user("carol").locator(".nick").evaluate("node => getComputedStyle(node).color")
        expectAll(carols(), hue, 3)  # her line, alice's private message, the people list

        # A private message tells alice carol's new colour: her name changes everywhere,
        # old lines and the people list included.
        green = "rgb(0, 170, 136)"
        carol.send("/color #00aa88")
        carol.expect("your colour is now #00aa88")
        carol.send("/msg alice psst")
        alice.said("carol", "psst", "msg")
        expectAll(carols(), green, 4)
        carol.send("/me waves")
        alice.said("carol", "waves", "action")
        expectAll(carols(), green, 5)

        # In another room's view, and back in the first one's (hidden meanwhile), too.
        goTo(alice, "dev")
        carol.send("/join dev")
        expect(alice.user("carol")).to_be_visible()
        carol.send("/color #aa0055")
        carol.send("in dev, in red")
        alice.said("carol", "in dev, in red")
        red = "rgb(170, 0, 85)"
        expectAll(carols(), red, 6)  # 4 in the lobby's view, 1 in #dev's, the people list
        alice.room("lobby").click()
        expect(alice.page.locator("#room-name")).to_have_text("#lobby")
        expect(alice.said("carol", "hello, no colour yet").locator(".nick")).to_have_css(
            "color", red
        )

        # The same person under a new name keeps the colour; the old name's lines stay.
        carol.send("/join lobby")
        expect(alice.user("carol")).to_be_visible()
        carol.send("/nick carla")
        expect(alice.user("carla").locator(".nick")).to_have_css("color", red)
        carol.send("still me")
        expect(alice.said("carla", "still me").locator(".nick")).to_have_css("color", red)

        # Someone who never set one: the same hue in the list, in lines, in every view.
        dave = LineClient(server.tcp, "dave")
        dave.send("hi all")
        line = alice.said("dave", "hi all").locator(".nick")
        expect(line).to_have_class(re.compile(r"\bauto-color\b"))
        hue = line.evaluate("node => getComputedStyle(node).color")
        expect(alice.user("dave").locator(".nick")).to_have_css("color", hue)
        assert alice.problems == []
        carol.close()
        dave.close()


def test_reconnect(browser, tmp_path):
    """The page comes back when the server does, with its login and its room."""
    db = tmp_path / "chat.db"  # the account outlives the server

    def start(tcp: int = 0, ws: int = 0):
        listen = f"tcp:{tcp}:interface=127.0.0.1", f"tcp:{ws}:interface=127.0.0.1"
        return runServer(tmp_path, "--tcp", listen[0], "--ws", listen[1], "--db", str(db))

    with start() as first:
        ports = first.tcp, first.ws
        dora = Chat(browser, first.ws)
        dora.join("dora")
        dora.type("/register looking-glass-7")
        expect(dora.lines("login").last).to_have_text(re.compile("registered dora"))
        dora.type("said in the lobby")
        goTo(dora, "dev")
        carol = LineClient(first.tcp, "carol")
        carol.send("/join dev")
        expect(dora.user("carol")).to_be_visible()
        expect(dora.room("dev").locator(".count")).to_have_text("2")
        dora.type("said in dev")
        dora.said("dora", "said in dev")
        # What the page sends and receives from here on: the next connection's.
        sent, received = [], []

        def watch(socket) -> None:
            socket.on("framesent", lambda frame: sent.append(frame))
            socket.on("framereceived", lambda frame: received.append(frame))

        dora.page.on("websocket", watch)
        time.sleep(0.5)  # committed (flush_interval 0.1 s): the next server knows the ids

        first.process.kill()  # no goodbye: the connection just drops
        first.process.wait()
        carol.close()
        expect(dora.status).to_have_attribute("data-state", "waiting")
        expect(dora.status).to_have_text(re.compile(r"^disconnected — reconnecting in \d+ s$"))
        expect(dora.page.locator("#reconnect")).to_be_visible()
        # Nobody is shown as present on a server that is gone, and no room has a count;
        # the room on screen stays listed, its lines stay, ending with the break.
        expect(dora.page.locator("#user-list li")).to_have_count(0)
        expect(dora.page.locator("#user-count")).to_have_text("")
        expect(dora.page.locator("#people-offline")).to_be_visible()
        expect(dora.page.locator("#room-list li")).to_have_count(1)
        expect(dora.room("dev").locator(".count")).to_have_text("")
        expect(dora.lines().last).to_have_text(re.compile("Connection lost; reconnecting…"))
        dora.said("dora", "said in dev")
        screenshot(dora, "disconnected.png")

    with start(*ports) as second:
        # The password typed in /register is used to log in again (the nickname is
        # registered, so a plain nick would be refused), and dora goes back to #dev.
        expect(dora.status).to_have_text("connected", timeout=15_000)
        expect(dora.lines("login").last.locator(".text")).to_have_text("you are logged in as dora")
        expect(dora.page.locator("#room-name")).to_have_text("#dev")
        carol = LineClient(second.tcp, "carol")
        carol.send("/who dev")
        carol.expect("#dev users (1): dora")
        carol.close()
        # Everything is this server's again: who is here, the counts. Each room's view has
        # its lines once, though the server replayed them to the new connection.
        expect(dora.page.locator("#people-offline")).to_be_hidden()
        expect(dora.page.locator("#user-list li")).to_have_count(1)
        expect(dora.user("dora")).to_be_visible()
        expect(dora.room("dev").locator(".count")).to_have_text("1")
        expect(dora.room("lobby").locator(".count")).to_have_text("0")
        expect(dora.said("dora", "said in dev")).not_to_have_class(re.compile("history"))
        expect(dora.saying("dora", "said in the lobby", room="lobby")).to_have_count(1)
        expect(dora.saying("dora", "said in the lobby")).to_have_count(0)
        # It said what it had seen, so the server replayed nothing: nothing new was said.
        requests = [json.loads(frame) for frame in sent]
        login = next(r for r in requests if r["type"] == "login")
        join = next(r for r in requests if r["type"] == "join")
        assert isinstance(login.get("since"), int), login.get("since")  # of the lobby
        assert join["room"] == "dev" and isinstance(join.get("since"), int), join
        events = [json.loads(frame)["type"] for frame in received]
        assert "who" in events and "history-start" not in events, events
    # Leaving the block stopped the server gracefully: "server shutting down" also
    # means "come back".
    expect(dora.status).to_have_attribute("data-state", "waiting")

    with start(*ports):
        expect(dora.status).to_have_text("connected", timeout=15_000)
        expect(dora.page.locator("#room-name")).to_have_text("#dev")
        # After /quit it stays away, until asked.
        dora.type("/quit bye")
        expect(dora.status).to_have_attribute("data-state", "stopped")
        expect(dora.status).to_have_text("disconnected — Goodbye.")
        dora.page.click("#reconnect")
        expect(dora.status).to_have_text("connected")
        expect(dora.page.locator("#room-name")).to_have_text("#dev")
    assert dora.problems == []


def test_phone(browser, tmp_path):
    """On a 375×667 screen: no sideways scrolling, the input in view, panels that slide."""
    with runServer(tmp_path) as server:
        carol = LineClient(server.tcp, "carol")
        # (Reduced motion: the panels appear at once, so screenshots never catch them
        # sliding.)
        options = {"is_mobile": True, "has_touch": True, "reduced_motion": "reduce"}
        phone = Chat(browser, server.ws, viewport=PHONE, **options)
        assertNoHorizontalScroll(phone)

        # Refused nicknames are explained on the form, in the server's words.
        phone.connect("carol")
        expect(phone.page.locator("#connect-error")).to_have_text(
            'the nickname "carol" is taken; choose another'
        )
        phone.connect("9lives")
        expect(phone.page.locator("#connect-error")).to_have_text(re.compile("^invalid nickname"))
        screenshot(phone, "phone-connect.png")
        phone.join("phoebe")

        # Long words and links wrap instead of widening the page.
        carol.send("hello phoebe! " + "a" * 300)
        carol.send("https://example.com/" + "very-long-path/" * 20)
        carol.send("/me waves")
        phone.said("carol", "waves", "action")
        assertNoHorizontalScroll(phone)
        box = phone.page.locator("#input").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"]
        expect(phone.page.locator("#input")).to_be_in_viewport()
        expect(phone.page.locator("#users-panel")).to_be_hidden()
        screenshot(phone, "phone.png")

        # The people panel slides in; tapping someone starts a private message.
        phone.page.click("#toggle-users")
        expect(phone.user("carol")).to_be_visible()
        screenshot(phone, "phone-people.png")
        phone.user("carol").click()
        expect(phone.page.locator("#users-panel")).to_be_hidden()
        phone.type("hi from my phone")
        carol.expect("*phoebe* hi from my phone")

        # Tapping beside an open panel closes it.
        phone.page.click("#toggle-rooms")
        expect(phone.page.locator("#rooms-panel")).to_be_visible()
        phone.page.mouse.click(PHONE["width"] - 20, PHONE["height"] // 2)
        expect(phone.page.locator("#rooms-panel")).to_be_hidden()
        phone.page.click("#toggle-rooms")
        phone.page.fill("#join-room", "dev")
        phone.page.press("#join-room", "Enter")
        expect(phone.page.locator("#room-name")).to_have_text("#dev")
        expect(phone.page.locator("#rooms-panel")).to_be_hidden()
        expect(phone.saying("carol", "waves", "action")).to_have_count(0)  # the lobby's
        assertNoHorizontalScroll(phone)
        phone.page.click("#toggle-rooms")
        expect(phone.room("lobby")).to_be_visible()
        screenshot(phone, "phone-rooms.png")
        phone.page.mouse.click(PHONE["width"] - 20, PHONE["height"] // 2)
        expect(phone.page.locator("#rooms-panel")).to_be_hidden()
        assert phone.problems == []
        carol.close()
