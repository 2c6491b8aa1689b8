"""Log formats for twistd's C{--logger} option.

C{twistd -n --logger chatserv.logs.json chatserv ...} writes one JSON object a line
(twisted.logger's JSON event format) to standard output, for log shippers and journald.
Each object also carries C{text}, the line as the text log would show it, and C{level},
the level's name (C{"info"}), so that a shipper needs no Twisted to read them.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, formatEvent, jsonFileLogObserver
from zope.interface import provider


def json() -> ILogObserver:
    """Newline-delimited JSON on stdout (no record separator: one event a line)."""
    write = jsonFileLogObserver(sys.stdout, recordSeparator="")

    @provider(ILogObserver)
    def observe(event: dict) -> None:
        level = event.get("log_level")
        write({**event, "text": formatEvent(event), "level": getattr(level, "name", None)})

    return observe
