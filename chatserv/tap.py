"""twistd plugin: options and the service tree.

C{twistd -n chatserv --tcp 10001 --ws 8765} builds, via L{makeService}, a MultiService
holding the L{ChatService} and one listener per endpoint.
"""

from __future__ import annotations

import faulthandler
import os
import socket
import sys

from twisted.application.service import MultiService
from twisted.python import usage

from chatserv import __version__
from chatserv.config import (
    DEFAULT_LISTENERS,
    Config,
    ConfigError,
    loadConfig,
    makeSettings,
    normaliseEndpoint,
)
from chatserv.listening import listener
from chatserv.wires import KINDS, WIRES, Wire


def _wholeNumber(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a chat server. Line clients (nc, telnet) connect to --tcp, websocket clients "
        "and browsers (http://HOST:PORT/) to --ws; all share the same rooms. With no "
        "listener given on the command line or in the config file, it listens on "
        + " and ".join(f"{kind} {port}" for kind, port in DEFAULT_LISTENERS.items())
        + ". "
        "ENDPOINT is a port number or a Twisted server endpoint description, e.g. "
        "tcp:10001:interface=127.0.0.1. Command-line options override the config file."
    )
    optParameters = [
        ["config", "c", None, "Read settings from this TOML file (sample: etc/chatserv.toml)."],
        ["default-room", None, None, "The room users land in [default: lobby]."],
        [
            "db",
            None,
            None,
            "Where accounts, rooms, bans and history are kept: a SQLite file (created on "
            "first start), a postgresql://USER:PASSWORD@HOST/DB URL, or 'memory' (nothing "
            "kept) [default: chatserv.db].",
        ],
        [
            "cluster",
            None,
            None,
            "Join the cluster whose nodes share rooms through the Redis server at "
            "redis://HOST:PORT/DB (needs a PostgreSQL --db).",
        ],
        ["node-name", None, None, "This node's name in the cluster [default: HOST-PORT]."],
        ["tls-cert", None, None, "PEM certificate (then its chain) for --tls and --wss."],
        ["tls-key", None, None, "PEM private key for --tls-cert [default: in the cert file]."],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on ENDPOINT (a bare port listens on 127.0.0.1).",
        ],
        [
            "manhole",
            None,
            None,
            "Serve an SSH admin console on ENDPOINT (a bare port listens on 127.0.0.1); "
            "needs --manhole-keys or --manhole-passwords.",
        ],
        ["manhole-keys", None, None, "authorized_keys file of keys that may log in."],
        [
            "manhole-passwords",
            None,
            None,
            "File of 'user:argon2-hash' lines (make one with chatserv-manhole-passwd).",
        ],
        [
            "manhole-host-key",
            None,
            None,
            "SSH host key file, created on first start [default: chatserv_host_key].",
        ],
        [
            "max-line-length",
            None,
            None,
            "Longest line or text frame accepted, in bytes [default: 2048].",
            _wholeNumber,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        for kind in KINDS:
            self[kind] = []

    def parseOptions(self, options=None) -> None:
        # One line instead of twistd's full usage dump; --help still prints the usage.
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"chatserv: error: {e} (see: twistd chatserv --help)") from None

    def opt_version(self) -> None:
        """Print the chatserv version and exit."""
        print(f"chatserv {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        from chatserv.tls import TLSConfigError, TLSCredentials

        try:
            config = loadConfig(self["config"]) if self["config"] else Config()
            # A kind given on the command line replaces the config file's list of it.
            listeners = {
                kind: [normaliseEndpoint(e) for e in self[kind]] or config.listeners[kind]
                for kind in KINDS
            }
            if not any(listeners.values()):
                for kind, port in DEFAULT_LISTENERS.items():
                    listeners[kind] = [normaliseEndpoint(port)]
            overrides = dict(config.settings)
            if self["default-room"] is not None:
                overrides["default_room"] = self["default-room"]
            if self["db"] is not None:
                overrides["db"] = self["db"]
            if self["max-line-length"] is not None:
                overrides["max_line_length"] = self["max-line-length"]
            if self["cluster"] is not None:
                overrides["cluster"] = self["cluster"]
            if self["node-name"] is not None:
                overrides["cluster_node_name"] = self["node-name"]
            self["settings"] = makeSettings(overrides)
            # Full ssl: descriptions carry their own certificate; everything else uses ours.
            cert = self["tls-cert"] or config.tlsCert
            key = self["tls-key"] or config.tlsKey
            encrypted = [d for w in WIRES if w.tls for d in listeners[w.kind]]
            self["credentials"] = None
            if any(not d.startswith("ssl:") for d in encrypted):
                if cert is None:
                    raise ConfigError("--tls and --wss need a certificate: --tls-cert FILE")
                self["credentials"] = TLSCredentials(cert, key)
        except (ConfigError, TLSConfigError) as e:
            # One line, no usage dump: the value is wrong, not the way options are written.
            raise SystemExit(f"chatserv: error: {e}") from None
        self.update(listeners)
        try:
            self["metrics"] = (
                normaliseEndpoint(self["metrics"], interface="127.0.0.1")
                if self["metrics"] is not None
                else config.metrics
            )
        except ConfigError as e:
            raise SystemExit(f"chatserv: error: --metrics: {e}") from None
        # The manhole: command-line values override the config file's [manhole] table.
        manhole = dict(config.manhole)
        for option, key in (
            ("manhole", "port"),
            ("manhole-keys", "authorized_keys"),
            ("manhole-passwords", "passwords"),
            ("manhole-host-key", "host_key"),
        ):
            if self[option] is not None:
                manhole[key] = self[option]
        if manhole and "port" not in manhole:
            raise SystemExit("chatserv: error: manhole settings given but no --manhole port")
        self["manhole"] = manhole or None


def makeService(options: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from chatserv.filelimit import FileLimitService
    from chatserv.service import ChatService
    from chatserv.tls import TLSReloadService, tlsEndpoint

    if not faulthandler.is_enabled():
        # A fatal signal (SIGSEGV, SIGBUS: see sqlite_exclusive) is then one "Fatal Python
        # error" on standard error with each thread's stack, not a silent death.
        faulthandler.enable(sys.__stderr__, all_threads=True)
    top = MultiService()
    settings = options["settings"]
    FileLimitService(settings.max_connections).setServiceParent(top)  # before any listener
    from chatserv.store import StoreError, openStore

    try:
        store = openStore(
            settings.db,
            reactor,
            settings.flush_interval,
            settings.batch_size,
            settings.sqlite_exclusive,
            settings.db_check_interval,
        )
        cluster = _clusterNode(settings, options, reactor)
        chat = ChatService(
            settings,
            clock=reactor,
            store=store,
            bus=cluster.bus if cluster is not None else None,
            directory=cluster.directory if cluster is not None else None,
        )
        if cluster is not None:
            cluster.setServiceParent(top)  # stops after the chat, which releases names
            cluster.link.onUp.append(chat.busResumed)
            cluster.link.onUp.append(chat.presence.askEveryone)
    except StoreError as e:
        raise SystemExit(f"chatserv: error: {e}") from None
    # First child: stops last, after the listeners, so it can say goodbye to everyone.
    chat.setServiceParent(top)
    credentials = options.get("credentials")

    def plain(description):
        return serverFromString(reactor, description)

    def encrypted(description):
        return tlsEndpoint(reactor, description, credentials, settings.tls_handshake_timeout)

    for wire in WIRES:
        if options[wire.kind]:
            factory = wire.factory(chat, reactor, wire.kind)  # one per wire, for its listeners
            for description in options[wire.kind]:
                listening = (encrypted if wire.tls else plain)(description)
                if wire.kind in settings.proxy_protocol:
                    listening = _readingProxyHeaders(listening, chat, wire, description)
                served = listener(listening, description, factory, wire.what, settings.accept_batch)
                served.setServiceParent(top)
    if credentials is not None:
        TLSReloadService(reactor, [credentials]).setServiceParent(top)
    if options.get("manhole"):
        from chatserv.manhole import DEFAULT_HOST_KEY, ManholeConfigError, makeManholeService

        manhole = options["manhole"]
        try:
            console = makeManholeService(
                reactor,
                chat,
                manhole["port"],
                manhole.get("authorized_keys"),
                manhole.get("passwords"),
                manhole.get("host_key", DEFAULT_HOST_KEY),
            )
        except ManholeConfigError as e:
            raise SystemExit(f"chatserv: error: {e}") from None
        console.setServiceParent(top)
    if options.get("metrics"):
        from chatserv.metrics import makeMetricsService

        description = options["metrics"]
        makeMetricsService(reactor, chat, plain(description), description).setServiceParent(top)
    return top


def _clusterNode(settings, options: Options, reactor):
    """This node's part of a cluster (C{--cluster}), or None for a single node."""
    if not settings.cluster:
        return None
    try:
        from chatserv.cluster.node import ClusterNode
    except ImportError as e:
        raise SystemExit(
            f"chatserv: error: --cluster needs txredisapi ({e}): pip install 'chatserv[cluster]'"
        ) from None
    name = settings.cluster_node_name
    if not name:
        # Stable across restarts (a restarted node takes its names back at once), and
        # different for two nodes on one machine.
        first = next((d for kind in KINDS for d in options[kind]), "")
        port = next((part for part in first.split(":") if part.isdigit()), "0")
        if port == "0":  # a port the system chooses: the process tells nodes apart
            port = f"pid{os.getpid()}"
        name = f"{socket.gethostname().split('.')[0]}-{port}"
    from chatserv.cluster.address import ClusterConfigError

    try:
        return ClusterNode(settings, name, reactor)
    except ClusterConfigError as e:
        raise SystemExit(f"chatserv: error: {e}") from None


def _readingProxyHeaders(endpoint, chat, wire: Wire, description: str):
    """C{endpoint}, with PROXY headers read from trusted proxies, before any TLS."""
    from chatserv.protocols.proxy import ProxyProtocolEndpoint
    from chatserv.tls import TLSWrappedEndpoint

    if isinstance(endpoint, TLSWrappedEndpoint):
        return TLSWrappedEndpoint(
            ProxyProtocolEndpoint(endpoint.endpoint, chat, wire.kind),
            endpoint.credentials,
            endpoint.clock,
            endpoint.handshakeTimeout,
        )
    if wire.tls:  # an ssl: description does its own TLS, under the header
        raise SystemExit(
            f"chatserv: error: proxy_protocol: cannot read PROXY headers on {wire.kind} "
            f"{description}; give a port or a tcp: description (TLS is then chatserv's)"
        )
    return ProxyProtocolEndpoint(endpoint, chat, wire.kind)


def _listenOption(wire: Wire):
    def opt(self: Options, endpoint: str) -> None:
        self[wire.kind].append(endpoint)

    opt.__doc__ = wire.help
    return opt


for _wire in WIRES:  # --tcp, --ws, --tls, --wss: one option per wire
    setattr(Options, f"opt_{_wire.kind}", _listenOption(_wire))
