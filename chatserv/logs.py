"""Log formats for twistd's C{--logger} option.

C{twistd -n --logger chatserv.logs.json chatserv ...} writes one JSON object a line
(twisted.logger's JSON event format) to standard output, for log shippers and journald.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json() -> ILogObserver:
    """Newline-delimited JSON on stdout (no record separator: one event a line)."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
