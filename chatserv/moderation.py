"""Bans and mutes in force, and the durations admins write them with."""

from __future__ import annotations

import dataclasses
import re

from chatserv.errors import UsageError
from chatserv.store import Sanction

# Where a command takes a duration, a word that starts with a digit is one, or a mistake
# to refuse ("1x"): never the start of a reason, which would make it a ban until lifted.
DURATION = re.compile(r"\d\S*", re.ASCII)  # ASCII: "²" is a digit to \d, not to int()
_FORM = re.compile(r"(\d{1,9})([a-z]*)", re.IGNORECASE | re.ASCII)
_SIZES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NAMES = {
    "s": ("sec", "secs", "second", "seconds"),
    "m": ("min", "mins", "minute", "minutes"),
    "h": ("hr", "hrs", "hour", "hours"),
    "d": ("day", "days"),
    "w": ("week", "weeks"),
}
_UNIT = {"": 60, **_SIZES, **{name: _SIZES[u] for u, names in _NAMES.items() for name in names}}
# What may follow a bare number as a word of its own: "/ban terry 10 minutes".
UNIT_WORDS = frozenset(name for name in _UNIT if name)


def parseDuration(text: str) -> float:
    """Seconds in C{"30s"}, C{"10m"}, C{"2h"}, C{"7d"}, C{"1w"} (or C{"10min"},
    C{"2hours"}, ...); a bare number is minutes."""
    match = _FORM.fullmatch(text.strip())
    if match is None or int(match[1]) == 0 or match[2].lower() not in _UNIT:
        raise UsageError(f'"{text[:20]}" is not a duration; write e.g. 30s, 10m, 2h, 7d or 1w')
    return float(int(match[1]) * _UNIT[match[2].lower()])


def describeDuration(seconds: float) -> str:
    """C{"2 hours"}, C{"90 seconds"}: the largest unit that divides it, roughly."""
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    count = max(1, round(seconds))
    return f"{count} second{'s' if count != 1 else ''}"


def describeSanction(sanction: Sanction, now: float) -> str:
    """E.g. C{"for 9 more minutes (spamming)"}, C{"until lifted"}."""
    span = (
        "until lifted"
        if sanction.until is None
        else f"for {describeDuration(sanction.until - now)}"
    )
    return f"{span} ({sanction.reason})" if sanction.reason else span


class Sanctions:
    """The bans and mutes in force, by kind and nick key; bans also by address."""

    def __init__(self, sanctions: list[Sanction] = ()) -> None:
        self._byKey: dict[tuple[str, str], Sanction] = {}
        self._bannedHosts: dict[str, Sanction] = {}
        for sanction in sanctions:
            self.add(sanction)

    def add(self, sanction: Sanction) -> None:
        self.remove(sanction.kind, sanction.key)
        self._byKey[sanction.kind, sanction.key] = sanction
        if sanction.kind == "ban" and sanction.host:
            self._bannedHosts[sanction.host] = sanction

    def remove(self, kind: str, key: str) -> Sanction | None:
        sanction = self._byKey.pop((kind, key), None)
        if sanction is not None and sanction.host:
            if self._bannedHosts.get(sanction.host) is sanction:
                del self._bannedHosts[sanction.host]
        return sanction

    def rename(self, key: str, newKey: str, newNick: str) -> None:
        """The bans and mutes of C{key} are now C{newKey}'s (an account was renamed)."""
        for kind in ("ban", "mute"):
            self.remove(kind, newKey)  # expired ones: a rename to a name in force is refused
            sanction = self.remove(kind, key)
            if sanction is not None:
                self.add(dataclasses.replace(sanction, key=newKey, nick=newNick))

    def active(self, kind: str, key: str | None, now: float) -> Sanction | None:
        """The ban or mute of nick C{key} in force at C{now}; expired ones are dropped."""
        if key is None:
            return None
        sanction = self._byKey.get((kind, key))
        if sanction is not None and sanction.until is not None and sanction.until <= now:
            self.remove(kind, key)
            return None
        return sanction

    def bannedHost(self, host: str, now: float) -> Sanction | None:
        sanction = self._bannedHosts.get(host)
        if sanction is None:
            return None
        return self.active("ban", sanction.key, now)

    def __iter__(self):
        return iter(list(self._byKey.values()))
