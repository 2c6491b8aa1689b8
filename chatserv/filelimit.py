"""Raise the open-file limit so that C{max_connections} connections can be held.

Every connection is a file descriptor, and many systems start a process with a soft limit
of 1024. Raising the soft limit up to the hard limit needs no privilege, so the server
does it at start-up and says so in the log; when even the hard limit is too low, it warns
(raise C{LimitNOFILE} in the systemd unit, or C{ulimit -Hn}).
"""

from __future__ import annotations

import resource
from collections.abc import Callable

from twisted.application.service import Service
from twisted.logger import Logger

_log = Logger()

# Descriptors beyond the connections: listeners, the log file, the database, the epoll
# instance, thread-pool pipes.
SPARE_DESCRIPTORS = 64


def raiseFileLimit(
    wanted: int,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards C{wanted}; return it (before, after)."""
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft, soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return soft, target
    return soft, soft


class FileLimitService(Service):
    """Raises the open-file limit when the server starts."""

    name = "file-limit"

    def __init__(self, maxConnections: int, raiser=raiseFileLimit) -> None:
        self.maxConnections = maxConnections
        self._raise = raiser

    def startService(self) -> None:
        super().startService()
        wanted = self.maxConnections + SPARE_DESCRIPTORS
        try:
            before, after = self._raise(wanted)
        except (OSError, ValueError) as e:
            _log.warn("could not raise the open-file limit: {error}", error=e)
            return
        if after != before:
            _log.info(
                "raised the open-file limit from {before} to {after} "
                "(max_connections is {connections})",
                before=before,
                after=after,
                connections=self.maxConnections,
            )
        if after < wanted:
            _log.warn(
                "the open-file limit is {limit}: fewer than max_connections ({connections}) "
                "connections can be held; raise the hard limit (LimitNOFILE in the systemd "
                "unit, or ulimit -Hn)",
                limit=after,
                connections=self.maxConnections,
            )
