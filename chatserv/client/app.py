"""chatserv-client: the full-screen terminal UI and the command line.

The screen, top to bottom: the messages (scroll-back), a status bar (server, wire,
connection state, nickname, room) and the input line. Server output only ever goes into
the message area, so it cannot break into what the user is typing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import (
    Float,
    FloatContainer,
    HSplit,
    Layout,
    UIContent,
    UIControl,
    Window,
)
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.layout.processors import BeforeInput

from chatserv.client import lines as ln
from chatserv.client.completion import ChatCompleter
from chatserv.client.connection import Connector, Request, Target, tlsContext
from chatserv.client.display import STYLE, MessageLog
from chatserv.client.state import ChatState

# (websocket, tls) -> port: the server's defaults, and docs/tls.md's ports for TLS.
DEFAULT_PORTS = {
    (False, False): 10001,
    (False, True): 10443,
    (True, False): 8765,
    (True, True): 8766,
}
QUIT_GRACE = 2.0  # seconds to wait for the server's goodbye before closing anyway

# Short lines: each is shown as one message, and wraps badly if long.
HELP = """\
Enter sends; Up/Down: history; Tab: complete; PgUp/PgDn: scroll; Ctrl-C: quit
What you type goes to the server as typed: /help lists its commands."""


class MessageControl(UIControl):
    """Draws the rows L{MessageLog} picks for the window's current size."""

    def __init__(self, log: MessageLog) -> None:
        self.log = log

    def create_content(self, width: int, height: int) -> UIContent:
        rows = self.log.visible(width, height)
        return UIContent(get_line=lambda i: rows[i], line_count=len(rows), show_cursor=False)

    def is_focusable(self) -> bool:
        return False


class ChatClient:
    def __init__(self, target: Target, nick: str | None = None) -> None:
        self.target = target
        self.state = ChatState(nick)
        self.log = MessageLog()
        self.status = "starting"
        self.connector = Connector(
            target,
            onLines=self._received,
            onStatus=self._setStatus,
            onNote=self.note,
            greeting=self.state.connected,
            reconnect=lambda: self.state.reconnect,
            me=lambda: self.state.nick,
            disconnected=self.state.disconnected,
        )
        self.input = Buffer(
            multiline=False,
            history=InMemoryHistory(),
            completer=ChatCompleter(self.state.nicknames),
            complete_while_typing=False,
            accept_handler=self._accept,
        )
        # New typing brings the newest messages back into view.
        self.input.on_text_changed += lambda _: self.log.toBottom()
        inputWindow = Window(
            BufferControl(self.input, input_processors=[BeforeInput("> ", style="class:prompt")]),
            height=1,
        )
        body = HSplit(
            [
                Window(MessageControl(self.log)),
                Window(FormattedTextControl(self._statusBar), height=1, style="class:status"),
                inputWindow,
            ]
        )
        root = FloatContainer(
            body, floats=[Float(xcursor=True, ycursor=True, content=CompletionsMenu(8))]
        )
        self.app: Application[None] = Application(
            layout=Layout(root, focused_element=inputWindow),
            key_bindings=self._keys(),
            style=STYLE,
            full_screen=True,
            mouse_support=False,
        )

    # -- what is shown -----------------------------------------------------------------

    def note(self, text: str, error: bool = False) -> None:
        self.show([ln.clientLine(text, error)])

    def show(self, lines: list[ln.Line]) -> None:
        for line in lines:
            self.log.add(line)
        self.app.invalidate()

    def _setStatus(self, status: str) -> None:
        self.status = status
        if status == "disconnected" and not self.state.quitting:
            self.note("not reconnecting: the server ended the session; Ctrl-C quits")
        self.app.invalidate()

    def _statusBar(self) -> StyleAndTextTuples:
        state = self.state
        bad = self.status != "connected"
        parts = [
            self.target.address,
            self.target.wire + (" (unverified)" if self.target.insecure else ""),
            self.status,
            # While reconnecting: who and where the client will be again.
            state.nick or state.wantedNick or "(no nickname)",
            f"#{room}" if (room := state.room or state.rejoin) else "(no room)",
        ]
        text = " " + " | ".join(parts) + " "
        if self.log.scrolled:
            text += "| scrolled up "
        return [("class:status.bad" if bad else "class:status", text)]

    def _received(self, lines: list[ln.Line]) -> list[Request]:
        self.show(self.state.toShow(lines))
        replies: list[Request] = []
        for line in lines:
            replies += self.state.observe(line)
            if line.kind == ln.ERROR and 'request type "line"' in line.body:
                self.note("this server predates JSON line requests: drop --ws to chat", True)
        return replies

    # -- what the user does ------------------------------------------------------------

    def _accept(self, buffer: Buffer) -> bool:
        """Send what was typed (several lines if several were pasted); returns True to
        keep the text when it could not be sent."""
        typed = [t for t in buffer.text.splitlines() if t.strip()]
        if not typed:
            return False
        if not self.connector.connected:
            if any(t.strip().lower().split(" ")[0] == "/quit" for t in typed):
                self.app.exit()
                return False
            self.note("not connected: nothing was sent (it is still on the input line)", True)
            return True
        for text in typed:
            self.state.typed(text)
            echo = None if self.target.websocket else self.state.echo(text)
            self.connector.send(text)
            if echo is not None:
                self.show([echo])
            if self.state.quitting:
                self._leaveSoon()
                break
        return False

    def quit(self) -> None:
        """Ctrl-C: leave politely (the room sees "quit", not "connection lost")."""
        if self.state.quitting or not self.connector.connected:
            self.app.exit()
            return
        self.state.quitting = True
        self.connector.send("/quit")
        self._leaveSoon()

    def _leaveSoon(self) -> None:
        """Exit when the server has closed the connection, or after QUIT_GRACE anyway."""

        async def leave() -> None:
            try:
                await asyncio.wait_for(self.connector.closed.wait(), QUIT_GRACE)
            except TimeoutError:
                pass
            if self.app.is_running:
                self.app.exit()

        self.app.create_background_task(leave())

    def _keys(self) -> KeyBindings:
        keys = KeyBindings()
        empty = Condition(lambda: not self.input.text)

        @keys.add("pageup")
        def _(event: KeyPressEvent) -> None:
            self.log.pageUp()

        @keys.add("pagedown")
        def _(event: KeyPressEvent) -> None:
            self.log.pageDown()

        @keys.add("end")
        def _(event: KeyPressEvent) -> None:
            self.log.toBottom()
            self.input.cursor_position = len(self.input.text)

        @keys.add("c-c")
        def _(event: KeyPressEvent) -> None:
            self.quit()

        @keys.add("c-d", filter=empty)
        def _(event: KeyPressEvent) -> None:
            self.quit()

        return keys

    # -- running -----------------------------------------------------------------------

    async def run(self) -> None:
        self.note(f"chatserv-client: {self.target.address} over {self.target.wire}")
        for line in HELP.splitlines():
            self.note(line)
        if self.target.insecure:
            self.note(
                "warning: --insecure: the server's certificate is not checked; anyone on the "
                "way can read and change this conversation",
                True,
            )
        if self.state.wantedNick is None:
            self.note("type a nickname and Enter, as the server's greeting asks")
        connecting = asyncio.ensure_future(self.connector.run())
        connecting.add_done_callback(self._connectorEnded)
        try:
            await self.app.run_async()
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            await self.connector.stop()

    def _connectorEnded(self, task: asyncio.Task) -> None:
        """A bug in the connection loop must not leave a screen that looks connected."""
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            self._setStatus("client error")
            self.note(f"chatserv-client failed: {type(error).__name__}: {error}", True)


def parseArgs(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chatserv-client",
        description="A terminal client for chatserv: the line protocol by default, or the\n"
        "websocket JSON protocol (--ws). Reconnects by itself when the connection drops.",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("host", help="the server's name or address")
    parser.add_argument(
        "port",
        nargs="?",
        type=int,
        help="default: 10001 (line), 10443 (line --tls), 8765 (--ws), 8766 (--ws --tls)",
    )
    parser.add_argument("--tls", action="store_true", help="connect with TLS (wss:// for --ws)")
    parser.add_argument(
        "--ws", action="store_true", help="use the websocket (ws://HOST:PORT/ws), JSON mode"
    )
    parser.add_argument("--nick", help="choose this nickname on connecting")
    parser.add_argument(
        "--ca", metavar="FILE", help="trust the certificate(s) in this PEM file (with --tls)"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="do not check the certificate (with --tls)"
    )
    args = parser.parse_intermixed_args(argv)
    if (args.ca or args.insecure) and not args.tls:
        parser.error("--ca and --insecure only apply with --tls")
    if args.ca and args.insecure:
        parser.error("--ca and --insecure exclude each other")
    if args.port is None:
        args.port = DEFAULT_PORTS[args.ws, args.tls]
    elif not 0 < args.port < 65536:
        parser.error(f"port {args.port} is not between 1 and 65535")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parseArgs(argv)
    target = Target(args.host, args.port, args.ws, args.tls, args.ca, args.insecure)
    try:
        tlsContext(target)  # a bad --ca file is a mistake to report now, not to retry
    except (OSError, ssl.SSLError) as e:
        sys.exit(f"chatserv-client: --ca {args.ca}: {e}")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        sys.exit("chatserv-client: needs a terminal (for scripts, nc or a websocket library)")
    try:
        asyncio.run(ChatClient(target, args.nick).run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
