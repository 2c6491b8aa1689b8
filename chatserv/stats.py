"""Counters kept by the running server, read by the console's stats() and by /metrics.

Plain integer attributes, incremented on the hot paths: reading them costs the scrape,
not every message.
"""

from __future__ import annotations


class Counters:
    __slots__ = (
        "requests",  # lines or frames accepted for processing
        "messages",  # room and private messages sent by users
        "deliveries",  # events delivered to a connection (one per recipient)
        "bytes_out",  # bytes written to connections
        "errors",  # error replies
        "rate_limited",  # requests dropped by flood control
        "floods",  # connections ended for flooding
        "slow_readers",  # connections dropped for not reading
        "refused_connections",  # connections refused by the connection limits
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def asDict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
