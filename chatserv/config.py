"""Settings, the TOML config file, and listener descriptions.

Everything here is plain data and validation; nothing listens or touches the reactor.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from chatserv.errors import BadName
from chatserv.names import checkRoom

DEFAULT_TCP = "10001"
DEFAULT_WS = "8765"
# Twisted's default listen backlog (50) overflows under a burst of connects.
DEFAULT_BACKLOG = 1024


class ConfigError(ValueError):
    """The configuration is unusable; the message lists every problem found."""


@dataclass(frozen=True)
class Settings:
    """The service's rules and limits. Each field is a key of the config file."""

    default_room: str = "lobby"
    motd: str = ""
    max_line_length: int = 2048  # bytes in one line or text frame; longer ones are refused
    ws_max_message_size: int = 65536  # a websocket message over this closes it (code 1009)
    ws_allowed_origins: tuple[str, ...] = ("*",)


# Where each setting lives in the config file: section -> key -> Settings field.
_SECTIONS: dict[str, dict[str, str]] = {
    "chat": {"default_room": "default_room", "motd": "motd"},
    "limits": {
        "max_line_length": "max_line_length",
        "ws_max_message_size": "ws_max_message_size",
    },
    "websocket": {"allowed_origins": "ws_allowed_origins"},
}
_TYPES = {f.name: f.type for f in fields(Settings)}


@dataclass
class Config:
    """What a config file (or the command line) asks for."""

    tcp: list[str] = field(default_factory=list)
    ws: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def normaliseEndpoint(value: str | int) -> str:
    """Turn a bare port into a server endpoint description; check any description.

    Raises L{ConfigError} with a one-line reason.
    """
    text = str(value).strip()
    if text.isdigit():
        port = int(text)
        if port > 65535:
            raise ConfigError(f"port {port} is out of range (0-65535)")
        return f"tcp:{port}:backlog={DEFAULT_BACKLOG}"
    # Parse against a reactor that cannot listen: checks syntax and endpoint type only.
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        serverFromString(MemoryReactor(), text)
    except Exception as e:  # serverFromString raises several types for bad input
        raise ConfigError(f"bad endpoint {text!r}: {e}") from None
    return text


def loadConfig(path: str | Path) -> Config:
    """Read and check a TOML config file. Raises L{ConfigError} listing every problem."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    problems: list[str] = []
    config = Config()
    for section, table in data.items():
        if not isinstance(table, dict):
            problems.append(f"[{section}] must be a table")
        elif section == "listen":
            _readListen(table, config, problems)
        elif section in _SECTIONS:
            for key, value in table.items():
                name = _SECTIONS[section].get(key)
                if name is None:
                    problems.append(f"unknown setting {section}.{key}")
                else:
                    _put(config.settings, name, value, f"{section}.{key}", problems)
        else:
            problems.append(f"unknown section [{section}]")
    try:
        makeSettings(config.settings)
    except ConfigError as e:
        problems.append(str(e))
    if problems:
        raise ConfigError(f"config file {path}: " + "; ".join(problems))
    return config


def _readListen(table: dict[str, Any], config: Config, problems: list[str]) -> None:
    for key, value in table.items():
        if key not in ("tcp", "ws"):
            problems.append(f"unknown setting listen.{key}")
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                problems.append(f"listen.{key} takes port numbers or endpoint strings")
                continue
            try:
                getattr(config, key).append(normaliseEndpoint(item))
            except ConfigError as e:
                problems.append(f"listen.{key}: {e}")


def _put(target: dict[str, Any], name: str, value: Any, where: str, problems: list) -> None:
    kind = _TYPES[name]
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        problems.append(f"{where} must be a whole number")
    elif kind == "str" and not isinstance(value, str):
        problems.append(f"{where} must be a string")
    elif kind.startswith("tuple") and not (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        problems.append(f"{where} must be a list of strings")
    else:
        target[name] = tuple(value) if isinstance(value, list) else value


def makeSettings(overrides: dict[str, Any]) -> Settings:
    """Build L{Settings} from defaults and C{overrides}; check values that types don't."""
    settings = replace(Settings(), **overrides)
    try:
        checkRoom(settings.default_room)
    except BadName as e:
        raise ConfigError(f"default_room: {e}") from None
    if settings.max_line_length < 64:
        raise ConfigError("max_line_length must be at least 64 bytes")
    if settings.ws_max_message_size < settings.max_line_length:
        raise ConfigError("ws_max_message_size must be at least max_line_length")
    return settings
