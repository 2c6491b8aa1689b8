"""A node's connections to Redis: one for commands, one subscribed to the bus's channel.

Both reconnect by themselves (txredisapi's factories, with backoff). The link knows
whether both are up: while either is down, L{RedisLink.up} is false and callers do not
send (a command sent then would wait for a connection, and pile up). The first loss is
logged once, as is the recovery, with how long it lasted; C{onUp} callbacks run on
every recovery (the directory claims its nicknames again then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.logger import Logger

from chatserv.cluster.address import ClusterConfigError, RedisAddress

log = Logger()

CONNECT_TIMEOUT = 5.0  # seconds to open a connection to Redis
REPLY_TIMEOUT = 5.0  # seconds a command waits for its reply


class _Commands(txredisapi.RedisProtocol):
    def connectionMade(self):
        d = super().connectionMade()
        d.addCallback(lambda _: self._linkUp())
        return d

    def _linkUp(self):  # (not _ready: txredisapi uses that name)
        if self.connected:  # (not if AUTH or SELECT failed)
            self.factory.link._connected("commands", self)

    def connectionLost(self, why):
        super().connectionLost(why)
        self.factory.link._lost("commands", why)


class _Subscriber(txredisapi.SubscriberProtocol):
    def connectionMade(self):
        d = super().connectionMade()
        d.addCallback(lambda _: self._subscribe())
        return d

    def _subscribe(self):
        if not self.connected:  # (AUTH or SELECT failed)
            return None
        link = self.factory.link
        d = self.subscribe(list(link.channels))
        d.addCallback(lambda _: link._connected("subscriber", self))
        d.addErrback(lambda f: self.transport.loseConnection())
        return d

    def messageReceived(self, pattern, channel, message):
        self.factory.link._message(channel, message)

    def connectionLost(self, why):
        super().connectionLost(why)
        self.factory.link._lost("subscriber", why)


def clientTLS(host: str, ca: str = "", cert: str = "", key: str = "") -> Any:
    """TLS client options for Redis at C{host}: its certificate checked against the CAs in
    the PEM file C{ca} (or, without one, the system's roots), and this node's own
    certificate and key (PEM files) shown if given. Reads the files now: at start-up.

    @raise ClusterConfigError: a file that cannot be read or is not what it should be.
    """
    from OpenSSL.crypto import FILETYPE_PEM
    from twisted.internet import ssl

    def read(path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise ClusterConfigError(f"cannot read {path}: {e.strerror}") from None

    def certificates(path: str) -> list:
        end = b"-----END CERTIFICATE-----"
        found = [ssl.Certificate.loadPEM(block + end) for block in read(path).split(end)[:-1]]
        if not found:
            raise ClusterConfigError(f"{path} holds no PEM certificate")
        return found

    try:
        trust = ssl.trustRootFromCertificates(certificates(ca)) if ca else None
        mine, chain = None, []
        if cert:  # the node's certificate, then any intermediates that signed it
            first, *chain = certificates(cert)
            mine = ssl.PrivateCertificate.fromCertificateAndKeyPair(
                first, ssl.KeyPair.load(read(key), FILETYPE_PEM)
            )
    except ClusterConfigError:
        raise
    except Exception as e:  # OpenSSL's errors for a file that is not PEM, or a wrong key
        raise ClusterConfigError(f"the cluster's TLS files cannot be used: {e}") from None
    extra = {"extraCertChain": [c.original for c in chain]} if chain else {}
    return ssl.optionsForClientTLS(
        host, trustRoot=trust, clientCertificate=mine, extraCertificateOptions=extra
    )


class RedisLink:
    """The two connections to C{address}; messages on C{channels} go to C{onMessage}."""

    def __init__(
        self,
        address: RedisAddress,
        channels: tuple[str, ...],
        onMessage: Callable[[str, Any], None],
        clock: Any,
        tls: Any = None,
    ) -> None:
        """C{tls}: the TLS client options of a C{rediss://} address (L{clientTLS})."""
        self.address = address
        self._tls = tls
        self.channels = channels
        self._onMessage = onMessage
        self._clock = clock
        self._up: set[str] = set()
        self._downSince: float | None = None
        self._everUp = False
        self._toldWaiting = False
        self.onUp: list[Callable[[], object]] = []
        self.commands: Any = None  # txredisapi's handler: commands as methods
        self._factories: list[Any] = []
        self._ready: defer.Deferred[None] = defer.Deferred()

    @property
    def up(self) -> bool:
        return len(self._up) == 2

    def start(self) -> defer.Deferred[None]:
        """Connect; the Deferred fires once both connections are up the first time."""
        from twisted.internet import reactor
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
        from twisted.internet.ssl import optionsForClientTLS

        a = self.address
        commands = txredisapi.RedisFactory(
            str(a), a.db, 1, isLazy=True, charset=None, password=a.password,
            replyTimeout=REPLY_TIMEOUT, convertNumbers=False,
        )  # fmt: skip
        commands.protocol = _Commands
        subscriber = txredisapi.SubscriberFactory(isLazy=True)
        subscriber.protocol = _Subscriber
        subscriber.charset = None  # messages as bytes
        subscriber.password = a.password
        subscriber.dbid = a.db
        for factory in (commands, subscriber):
            factory.link = self
            endpoint = HostnameEndpoint(reactor, a.host, a.port, timeout=CONNECT_TIMEOUT)
            if a.tls:  # Redis's certificate is checked (by default, against the system's roots)
                endpoint = wrapClientTLS(self._tls or optionsForClientTLS(a.host), endpoint)
            factory.startConnecting(endpoint)
            self._factories.append(factory)
        self.commands = commands.handler
        return self._ready

    def stop(self) -> defer.Deferred[Any]:
        stops = []
        for factory in self._factories:
            stops.append(factory.disconnect())
        self._factories = []
        return defer.gatherResults(stops, consumeErrors=True)

    # -- from the connections -----------------------------------------------------------------

    def _connected(self, which: str, protocol: Any) -> None:
        self._up.add(which)
        if not self.up:
            return
        if not self._everUp:
            self._everUp = True
            log.info("cluster: connected to Redis at {address}", address=str(self.address))
            self._ready.callback(None)
        elif self._downSince is not None:
            log.warn(
                "cluster: Redis at {address} is reachable again after {seconds:.1f} s",
                address=str(self.address),
                seconds=self._clock.seconds() - self._downSince,
            )
        self._downSince = None
        for callback in list(self.onUp):
            callback()

    def _lost(self, which: str, why: Any) -> None:
        wasUp = self.up
        self._up.discard(which)
        reason = why.getErrorMessage() if hasattr(why, "getErrorMessage") else why
        if wasUp and self._factories:
            self._downSince = self._clock.seconds()
            log.error(
                "cluster: lost Redis at {address} ({why}); serving local users only,"
                " messages to other nodes are dropped until it is back",
                address=str(self.address),
                why=reason,
            )
        elif not self._everUp and not self._toldWaiting and self._factories:
            # Connected, then dropped before it was ever up: a TLS certificate refused,
            # a wrong password. Said once; the factories keep trying.
            self._toldWaiting = True
            log.error(
                "cluster: Redis at {address} cannot be used yet ({why}); trying again",
                address=str(self.address),
                why=reason,
            )

    def _message(self, channel: Any, message: Any) -> None:
        self._onMessage(channel, message)
