"""Where a cluster's Redis is: C{redis://[:PASSWORD@]HOST[:PORT][/DB]}. (No Redis client
is imported here: the config checks it without one.)"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


class ClusterConfigError(ValueError):
    """A cluster setting that cannot work (said in one line)."""


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    db: int
    password: str | None = None
    tls: bool = False

    def __str__(self) -> str:  # never with the password
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


def parseRedisURL(url: str, password: str | None = None) -> RedisAddress:
    """C{redis://[:PASSWORD@]HOST[:PORT][/DB]} (or C{rediss://} for TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ClusterConfigError(
            f"--cluster needs redis://HOST:PORT/DB, not {url.split('@')[-1]!r}"
        )
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise ClusterConfigError(f"the Redis database number must be a whole number, not {path!r}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ClusterConfigError("the Redis port must be a number from 1 to 65535") from None
    secret = unquote(parts.password) if parts.password else password
    return RedisAddress(parts.hostname, port, int(path), secret or None, parts.scheme == "rediss")
