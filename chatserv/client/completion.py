"""Tab completion: /commands at the start of the line, nicknames elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

# The server's commands and their usage (docs/protocol.md, "The command language"). A
# test checks this against the server's table, so the two cannot drift apart.
COMMANDS: dict[str, str] = {
    "nick": "/nick NICK",
    "join": "/join ROOM",
    "rooms": "/rooms",
    "who": "/who [ROOM]",
    "msg": "/msg NICK TEXT",
    "me": "/me TEXT",
    "say": "/say TEXT",
    "time": "/time",
    "help": "/help [COMMAND]",
    "history": "/history [N]",
    "quit": "/quit [REASON]",
    "register": "/register PASSWORD",
    "login": "/login NICK PASSWORD",
    "passwd": "/passwd OLD NEW",
    "color": "/color [#RRGGBB]",
    "topic": "/topic [#ROOM] [TEXT]",
    "kick": "/kick NICK [REASON]",
    "ban": "/ban NICK [DURATION] [--address] [REASON]",
    "unban": "/unban NICK",
    "mute": "/mute NICK [DURATION]",
    "unmute": "/unmute NICK",
    "broadcast": "/broadcast TEXT",
    "rbroadcast": "/rbroadcast ROOM TEXT",
    "promote": "/promote NICK",
    "demote": "/demote NICK",
    "resetpassword": "/resetpassword NICK PASSWORD",
    "deleteaccount": "/deleteaccount NICK",
    "renameaccount": "/renameaccount NICK NEWNICK",
}


class ChatCompleter(Completer):
    """C{nicknames} is asked at each Tab, so it always reflects the room as it is now."""

    def __init__(self, nicknames: Callable[[], list[str]]) -> None:
        self.nicknames = nicknames

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        before = document.text_before_cursor
        word = before.split(" ")[-1]
        if before.startswith("/") and " " not in before:
            for name, usage in COMMANDS.items():
                if name.startswith(word[1:].lower()):
                    yield Completion(f"/{name} ", -len(word), display_meta=usage)
            return
        if not word:
            return
        # "alice: " when addressing someone at the start of a line, IRC-style.
        suffix = ": " if before == word else " "
        for nick in self.nicknames():
            if nick.lower().startswith(word.lower()):
                yield Completion(nick + suffix, -len(word), display=nick)
