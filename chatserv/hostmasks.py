"""The host part of IRC's C{nick!user@host}: a cloak of the address, or the address.

An IRC prefix goes to everyone in a room, so by default it does not carry the address
(which would tell every stranger where someone is): it carries a cloak, a keyed hash of
the address that stays the same for one address (bans by mask and "is that the same
person?" still work) and that nobody without the key can turn back into it.
"""

from __future__ import annotations

import hashlib
import hmac
import os

MODES = ("cloak", "address")


class Hostmasks:
    """Makes the host shown for an address, cached per address."""

    def __init__(self, mode: str = "cloak", key: str = "") -> None:
        if mode not in MODES:
            raise ValueError(f"hostmask must be one of {', '.join(MODES)}")
        self.mode = mode
        # Without a configured key, a random one: cloaks then change at each restart.
        self._key = key.encode("utf-8") if key else os.urandom(32)
        self._cache: dict[str, str] = {}

    def __call__(self, address: str) -> str:
        host = self._cache.get(address)
        if host is None:
            if len(self._cache) > 65536:  # addresses come and go: bound what is kept
                self._cache.clear()
            host = self._cache[address] = self._make(address)
        return host

    def _make(self, address: str) -> str:
        if self.mode == "address":
            # An IPv6 address starting with ":" would end an IRC parameter early.
            return "0" + address if address.startswith(":") else (address or "unknown")
        digest = hmac.new(self._key, address.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{digest[:8]}.{digest[8:16]}.cloak"
