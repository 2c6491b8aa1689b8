"""Settings, the TOML config file, and listener descriptions.

Everything here is plain data and validation; nothing listens or touches the reactor.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from chatserv.addresses import TrustedProxies
from chatserv.errors import BadName
from chatserv.hostmasks import MODES
from chatserv.names import MAX_ROOM_NAME_LENGTH, checkNick, checkRoom
from chatserv.wires import KINDS, WIRES

# What runs when no listener is given at all (chatserv.wires): tcp 10001 and ws 8765.
DEFAULT_LISTENERS = {w.kind: w.default for w in WIRES if w.default is not None}
# Twisted's default listen backlog (50) overflows under a burst of connects.
DEFAULT_BACKLOG = 1024


class ConfigError(ValueError):
    """The configuration is unusable; the message lists every problem found."""


@dataclass(frozen=True)
class Settings:
    """The service's rules and limits. Each field is a key of the config file."""

    default_room: str = "lobby"
    motd: str = ""
    # -- sizes
    max_line_length: int = 2048  # bytes in one line or text frame; longer ones are refused
    ws_max_message_size: int = 65536  # a websocket message over this closes it (code 1009)
    max_message_length: int = 1024  # characters in one message (say, /me, /msg)
    max_room_name_length: int = 32  # characters, at most 50 (IRC's CHANNELLEN)
    max_rooms: int = 1000
    # -- connections
    max_connections: int = 10000  # in total, over every listener
    max_connections_per_ip: int = 100
    max_output_buffer: int = 262144  # bytes queued for a client that stopped reading
    accept_batch: int = 1000  # connections a listener accepts in one reactor turn
    # -- websocket frames of every kind (data, continuation, ping, pong, close)
    ws_frame_rate: float = 50.0  # frames a second, sustained; past it the websocket is closed
    ws_frame_burst: int = 200  # frames at once
    ws_max_fragments: int = 64  # frames in one message
    # -- flood control, per connection
    rate_limit: float = 5.0  # requests a second, sustained
    rate_burst: int = 20  # requests at once
    flood_max_dropped: int = 50  # dropped requests (forgiven at 1/s) before a disconnect
    # -- flood control, per address, over all of its connections
    ip_rate_limit: float = 20.0  # requests a second, sustained
    ip_rate_burst: int = 100  # requests at once
    ip_connect_rate: float = 2.0  # new connections a second, sustained
    ip_connect_burst: int = 100  # new connections at once
    # -- log lines that clients cause (connects, refusals, limits hit), of each kind
    log_rate_limit: float = 20.0  # lines a second, sustained; the rest are counted
    log_burst: int = 200  # lines at once
    # -- time limits, in seconds
    nick_timeout: float = 60.0  # to choose a nickname after connecting
    ping_interval: float = 60.0  # idle time before a connection is checked for life
    ping_timeout: float = 30.0  # time a check may take before the connection is closed
    tls_handshake_timeout: float = 30.0  # to complete a TLS handshake
    http_timeout: float = 30.0  # for a web/websocket connection to send its next request
    close_grace: float = 2.0  # after the server closes a TCP line client, until it resets it
    ws_allowed_origins: tuple[str, ...] = ("*",)
    web_client: bool = True  # serve the browser client on the websocket port
    # -- storage
    db: str = "chatserv.db"  # a SQLite file, a postgresql:// URL, or "memory"
    flush_interval: float = 0.1  # seconds a room message may wait before it is committed
    batch_size: int = 1000  # messages committed at once, at most
    db_timeout: float = 5.0  # seconds a request waits for the database before it is refused
    db_check_interval: float = 10.0  # seconds between checks of the SQLite file; 0: none
    sqlite_exclusive: bool = True  # hold the SQLite file alone (no -shm file mapped)
    # -- history
    history_on_join: int = 50  # messages replayed to someone joining a room
    max_history_request: int = 500  # the most /history N returns
    retention_max_messages: int = 100000  # kept per room; 0: no limit
    retention_days: float = 0.0  # messages older than this are deleted; 0: kept forever
    retention_interval: float = 3600.0  # seconds between two prunes
    max_offline_messages: int = 100  # private messages kept for one offline account
    # -- accounts
    admins: tuple[str, ...] = ()  # registered nicknames with admin rights
    min_password_length: int = 8
    max_login_failures: int = 5  # per address and nickname, before logins must wait
    max_login_failures_per_ip: int = 20  # per address, over every nickname
    login_failure_decay: float = 60.0  # seconds after which one failed login is forgotten
    max_registrations_per_ip: int = 3  # accounts made from one address, before it must wait
    registration_decay: float = 600.0  # seconds after which one registration is forgotten
    max_password_queue: int = 64  # password checks and hashes waiting for a thread
    # -- reverse proxies (chatserv.addresses)
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks believed about clients
    proxy_protocol: tuple[str, ...] = ()  # listener kinds whose trusted peers send PROXY
    proxy_header_timeout: float = 10.0  # seconds for a trusted proxy to send its header
    # -- IRC (chatserv.protocols.irc)
    irc_server_name: str = "irc.chatserv"  # the server's name in IRC replies
    irc_network: str = "chatserv"  # NETWORK= in ISUPPORT: what clients call the network
    irc_hostmask: str = "cloak"  # the host in nick!user@host: "cloak" or "address"
    irc_cloak_key: str = ""  # keys the cloaks; empty: the database's (made once)
    irc_motd_file: str = ""  # the MOTD IRC clients are shown; empty: [chat] motd
    irc_rate_burst: int = 60  # requests at once (an IRC client joining ten channels sends ~40)
    # -- a cluster of nodes (chatserv.cluster)
    cluster: str = ""  # redis://HOST:PORT/DB joins one; empty: a single node
    cluster_node_name: str = ""  # unique per node; empty: HOSTNAME-PORT of the first listener
    cluster_presence_timeout: float = 15.0  # a dead node's users are gone after this long
    cluster_password: str = ""  # Redis's password, if not in the URL
    # rediss:// only: the CA that signed Redis's certificate (empty: the system's roots),
    # and a certificate and key of this node's, for a Redis that asks clients for one.
    cluster_tls_ca: str = ""
    cluster_tls_cert: str = ""
    cluster_tls_key: str = ""


# Where each setting lives in the config file: section -> key -> Settings field.
_SECTIONS: dict[str, dict[str, str]] = {
    "chat": {"default_room": "default_room", "motd": "motd"},
    "limits": {
        name: name
        for name in (
            "max_line_length",
            "ws_max_message_size",
            "max_message_length",
            "max_room_name_length",
            "max_rooms",
            "max_connections",
            "max_connections_per_ip",
            "max_output_buffer",
            "accept_batch",
            "ws_frame_rate",
            "ws_frame_burst",
            "ws_max_fragments",
            "rate_limit",
            "rate_burst",
            "flood_max_dropped",
            "ip_rate_limit",
            "ip_rate_burst",
            "ip_connect_rate",
            "ip_connect_burst",
            "log_rate_limit",
            "log_burst",
        )
    },
    "timeouts": {
        name: name
        for name in (
            "nick_timeout",
            "ping_interval",
            "ping_timeout",
            "tls_handshake_timeout",
            "http_timeout",
            "close_grace",
        )
    },
    "websocket": {"allowed_origins": "ws_allowed_origins", "web_client": "web_client"},
    "storage": {
        name: name
        for name in (
            "db",
            "flush_interval",
            "batch_size",
            "db_timeout",
            "db_check_interval",
            "sqlite_exclusive",
        )
    },
    "history": {
        name: name
        for name in (
            "history_on_join",
            "max_history_request",
            "retention_max_messages",
            "retention_days",
            "retention_interval",
            "max_offline_messages",
        )
    },
    "accounts": {
        name: name
        for name in (
            "admins",
            "min_password_length",
            "max_login_failures",
            "max_login_failures_per_ip",
            "login_failure_decay",
            "max_registrations_per_ip",
            "registration_decay",
            "max_password_queue",
        )
    },
    "irc": {
        "server_name": "irc_server_name",
        "network": "irc_network",
        "hostmask": "irc_hostmask",
        "cloak_key": "irc_cloak_key",
        "motd_file": "irc_motd_file",
        "rate_burst": "irc_rate_burst",
    },
    "cluster": {
        "redis": "cluster",
        "node_name": "cluster_node_name",
        "presence_timeout": "cluster_presence_timeout",
        "password": "cluster_password",
        "tls_ca": "cluster_tls_ca",
        "tls_cert": "cluster_tls_cert",
        "tls_key": "cluster_tls_key",
    },
    "proxy": {
        "trusted": "trusted_proxies",
        "protocol": "proxy_protocol",
        "header_timeout": "proxy_header_timeout",
    },
}
_TYPES = {f.name: f.type for f in fields(Settings)}


LISTENER_KINDS = KINDS


# Settings naming files, which a config file gives relative to itself.
_FILE_SETTINGS = frozenset({"cluster_tls_ca", "cluster_tls_cert", "cluster_tls_key"})


@dataclass
class Config:
    """What a config file (or the command line) asks for."""

    # Endpoint descriptions by listener kind (every kind of chatserv.wires).
    listeners: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    tlsCert: str | None = None  # paths as given, relative ones resolved against the file
    tlsKey: str | None = None
    metrics: str | None = None  # endpoint of the Prometheus listener
    manhole: dict[str, str] = field(default_factory=dict)  # port, authorized_keys, ...
    settings: dict[str, Any] = field(default_factory=dict)


def normaliseEndpoint(value: str | int, interface: str | None = None) -> str:
    """Turn a bare port into a server endpoint description; check any description.

    A bare port listens on C{interface} if given (administrative listeners default to
    127.0.0.1), else on all interfaces. Raises L{ConfigError} with a one-line reason.
    """
    text = str(value).strip()
    if text.isascii() and text.isdigit():
        port = int(text)
        if port > 65535:
            raise ConfigError(f"port {port} is out of range (0-65535)")
        where = f":interface={interface}" if interface else ""
        return f"tcp:{port}{where}:backlog={DEFAULT_BACKLOG}"
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
        elif section == "tls":
            _readTLS(table, config, Path(path).parent, problems)
        elif section == "metrics":
            _readAdmin(table, ("port",), Path(path).parent, problems, "metrics", config)
        elif section == "manhole":
            keys = ("port", "authorized_keys", "passwords", "host_key")
            _readAdmin(table, keys, Path(path).parent, problems, "manhole", config)
        elif section in _SECTIONS:
            for key, value in table.items():
                name = _SECTIONS[section].get(key)
                if name is None:
                    problems.append(f"unknown setting {section}.{key}")
                else:
                    if name in _FILE_SETTINGS and isinstance(value, str) and value:
                        value = str(Path(path).parent / value)  # (an absolute one stays)
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


def _readTLS(table: dict[str, Any], config: Config, base: Path, problems: list[str]) -> None:
    for key, value in table.items():
        if key not in ("cert", "key"):
            problems.append(f"unknown setting tls.{key}")
        elif not isinstance(value, str):
            problems.append(f"tls.{key} must be a file name")
        else:
            resolved = str(base / value)  # an absolute value stays as it is
            if key == "cert":
                config.tlsCert = resolved
            else:
                config.tlsKey = resolved


def _readAdmin(table, keys, base: Path, problems: list[str], section: str, config) -> None:
    """[metrics] and [manhole]: a port (localhost by default) and files."""
    for key, value in table.items():
        if key not in keys:
            problems.append(f"unknown setting {section}.{key}")
        elif key == "port":
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                problems.append(f"{section}.port takes a port number or an endpoint string")
                continue
            try:
                endpoint = normaliseEndpoint(value, interface="127.0.0.1")
            except ConfigError as e:
                problems.append(f"{section}.port: {e}")
                continue
            if section == "metrics":
                config.metrics = endpoint
            else:
                config.manhole["port"] = endpoint
        elif not isinstance(value, str):
            problems.append(f"{section}.{key} must be a file name")
        else:
            config.manhole[key] = str(base / value)


def _readListen(table: dict[str, Any], config: Config, problems: list[str]) -> None:
    for key, value in table.items():
        if key not in LISTENER_KINDS:
            problems.append(f"unknown setting listen.{key}")
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                problems.append(f"listen.{key} takes port numbers or endpoint strings")
                continue
            try:
                config.listeners[key].append(normaliseEndpoint(item))
            except ConfigError as e:
                problems.append(f"listen.{key}: {e}")


def _put(target: dict[str, Any], name: str, value: Any, where: str, problems: list) -> None:
    kind = _TYPES[name]
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        problems.append(f"{where} must be a whole number")
    elif kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        problems.append(f"{where} must be a number")
    elif kind == "bool" and not isinstance(value, bool):
        problems.append(f"{where} must be true or false")
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
        checkRoom(settings.default_room, settings.max_room_name_length)
    except BadName as e:
        raise ConfigError(f"default_room: {e}") from None
    for admin in settings.admins:
        try:
            checkNick(admin)
        except BadName as e:
            raise ConfigError(f"admins: {e}") from None
    problems = _proxyProblems(settings) + _ircProblems(settings) + _clusterProblems(settings)
    problems += [
        f"{name} must be at least {least}"
        for name, least in _AT_LEAST.items()
        if getattr(settings, name) < least
    ]
    if settings.max_room_name_length > MAX_ROOM_NAME_LENGTH:
        problems.append(f"max_room_name_length must be at most {MAX_ROOM_NAME_LENGTH}")
    if settings.ws_max_message_size < settings.max_line_length:
        problems.append("ws_max_message_size must be at least max_line_length")
    if settings.max_login_failures_per_ip < settings.max_login_failures:
        problems.append("max_login_failures_per_ip must be at least max_login_failures")
    if problems:
        raise ConfigError("; ".join(problems))
    return settings


def _clusterProblems(settings: Settings) -> list[str]:
    if not settings.cluster:
        return []
    from chatserv.cluster.address import ClusterConfigError, parseRedisURL

    problems = []
    try:
        parseRedisURL(settings.cluster)
    except ClusterConfigError as e:
        problems.append(str(e))
    if not settings.db.startswith(("postgresql://", "postgres://")):
        problems.append(
            "--cluster needs a PostgreSQL --db, the one store every node shares"
            f" (not {'memory' if settings.db == 'memory' else 'SQLite'})"
        )
    name = settings.cluster_node_name
    if name and (not name.isascii() or not name.replace("-", "").replace(".", "").isalnum()):
        problems.append("cluster.node_name must be letters, digits, dots and dashes")
    if settings.cluster_presence_timeout < 3:
        problems.append("cluster.presence_timeout must be at least 3 (seconds)")
    files = {
        "tls_ca": settings.cluster_tls_ca,
        "tls_cert": settings.cluster_tls_cert,
        "tls_key": settings.cluster_tls_key,
    }
    if any(files.values()) and not settings.cluster.startswith("rediss://"):
        problems.append("cluster.tls_ca, tls_cert and tls_key need a rediss:// (TLS) URL")
    if bool(files["tls_cert"]) != bool(files["tls_key"]):
        problems.append("cluster.tls_cert and cluster.tls_key go together: give both or neither")
    for key, path in files.items():
        if path and not os.path.isfile(path):
            problems.append(f"cluster.{key}: no such file {path!r}")
    return problems


def _ircProblems(settings: Settings) -> list[str]:
    problems = []
    if settings.irc_hostmask not in MODES:
        problems.append(f"irc.hostmask must be one of {', '.join(MODES)}")
    named = (("server_name", settings.irc_server_name), ("network", settings.irc_network))
    for key, value in named:
        # Both are words in IRC replies; a server name with a dot is never taken for a nick.
        if not value or not value.isascii() or any(c in value for c in " ,:!@*?\x00\r\n"):
            problems.append(f"irc.{key} must be one word of letters, digits, dots or dashes")
    if "." not in settings.irc_server_name:
        problems.append(
            "irc.server_name needs a dot (irc.example.org): IRC tells servers from nicknames by it"
        )
    return problems


def _proxyProblems(settings: Settings) -> list[str]:
    problems = []
    try:
        TrustedProxies(settings.trusted_proxies)
    except ValueError as e:
        problems.append(f"trusted_proxies: {e}")
    unknown = [kind for kind in settings.proxy_protocol if kind not in LISTENER_KINDS]
    if unknown:
        problems.append(
            f"proxy_protocol: unknown listener kind {unknown[0]!r} "
            f"(one of {', '.join(LISTENER_KINDS)})"
        )
    if settings.proxy_protocol and not settings.trusted_proxies:
        problems.append("proxy_protocol needs trusted_proxies: the proxies it is read from")
    return problems


# The smallest sane value of each numeric setting.
_AT_LEAST = {
    "max_line_length": 64,
    "ws_max_message_size": 64,
    "max_message_length": 1,
    "max_room_name_length": 1,
    "max_rooms": 1,
    "max_connections": 1,
    "max_connections_per_ip": 1,
    "max_output_buffer": 1024,
    "accept_batch": 1,
    "ws_frame_rate": 1,
    "ws_frame_burst": 1,
    "ws_max_fragments": 1,
    "rate_limit": 0.1,
    "rate_burst": 1,
    "flood_max_dropped": 1,
    "ip_rate_limit": 0.1,
    "ip_rate_burst": 1,
    "ip_connect_rate": 0.1,
    "ip_connect_burst": 1,
    "log_rate_limit": 0.1,
    "log_burst": 1,
    "nick_timeout": 1,
    "ping_interval": 1,
    "ping_timeout": 1,
    "tls_handshake_timeout": 1,
    "http_timeout": 1,
    "close_grace": 0.1,
    "flush_interval": 0.001,
    "batch_size": 1,
    "db_timeout": 0.1,
    "db_check_interval": 0,
    "history_on_join": 0,
    "max_history_request": 1,
    "retention_max_messages": 0,
    "retention_days": 0,
    "retention_interval": 1,
    "max_offline_messages": 0,
    "min_password_length": 1,
    "max_login_failures": 1,
    "max_login_failures_per_ip": 1,
    "login_failure_decay": 1,
    "max_registrations_per_ip": 1,
    "registration_decay": 1,
    "max_password_queue": 1,
    "proxy_header_timeout": 1,
    "irc_rate_burst": 1,
}
