"""TLS for the line and websocket listeners: certificate loading, endpoints, SIGHUP reload.

One L{TLSCredentials} (a certificate file and a key file) serves every TLS listener. It
is the listeners' connection creator, so L{TLSCredentials.reload} changes the
certificate for every connection accepted afterwards, while connections already
established keep the certificate and session they have. L{TLSReloadService} calls
C{reload} on SIGHUP.

The policy (docs/tls.md): TLS 1.2 and 1.3 only; for TLS 1.2, ECDHE key exchange with
AES-GCM or ChaCha20-Poly1305 only (L{TLS12_CIPHERS}); for TLS 1.3, OpenSSL's default
suites (all AEAD); no TLS compression, no renegotiation, no session tickets, server
cipher preference. A connection whose handshake is not done within
L{HANDSHAKE_TIMEOUT} seconds is dropped.
"""

from __future__ import annotations

import datetime
import re
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from OpenSSL import SSL
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import (
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from zope.interface import implementer

from chatserv.config import DEFAULT_BACKLOG

_log = Logger()

MINIMUM_TLS_VERSION = TLSVersion.TLSv1_2
# Seconds a client has to complete the TLS handshake. Until then the application has
# not seen a byte from it, so a polite close cannot work (Twisted's TLS loseConnection
# waits for the handshake to finish): it is aborted instead.
HANDSHAKE_TIMEOUT = 30.0

# TLS 1.2 suites, in order of preference: forward secrecy (ECDHE) and AEAD ciphers only,
# Mozilla's "intermediate" list without the DHE suites. TLS 1.3 suites are not set by
# this string; they are OpenSSL's defaults (TLS_AES_256_GCM_SHA384,
# TLS_CHACHA20_POLY1305_SHA256, TLS_AES_128_GCM_SHA256).
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
_ACCEPTABLE_CIPHERS = AcceptableCiphers.fromOpenSSLCipherString(TLS12_CIPHERS)

_KEY_BLOCK = re.compile(
    rb"-----BEGIN ((?:[A-Z0-9]+ )?PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL
)
_SIGNING_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


class TLSConfigError(ValueError):
    """The certificate or key cannot be used; the message is one line saying why."""


@dataclass(frozen=True)
class _Loaded:
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    options: CertificateOptions


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TLSConfigError(f"TLS {what} file {path} does not exist") from None
    except IsADirectoryError:
        raise TLSConfigError(f"TLS {what} file {path} is a directory") from None
    except OSError as e:
        raise TLSConfigError(f"cannot read TLS {what} file {path}: {e.strerror}") from None


def _publicBytes(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def describe(certificate: x509.Certificate) -> str:
    """A one-line summary for logs: subject, serial, expiry."""
    return (
        f"{certificate.subject.rfc4514_string() or '(no subject)'}, "
        f"serial {certificate.serial_number:x}, "
        f"valid until {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )


def _load(certPath: str, keyPath: str) -> _Loaded:
    certData = _read(certPath, "certificate")
    try:
        certificates = x509.load_pem_x509_certificates(certData)
    except ValueError:
        raise TLSConfigError(
            f"TLS certificate file {certPath} is not a PEM certificate "
            "(expected -----BEGIN CERTIFICATE----- blocks)"
        ) from None
    certificate, chain = certificates[0], tuple(certificates[1:])

    keyData = certData if keyPath == certPath else _read(keyPath, "key")
    block = _KEY_BLOCK.search(keyData)
    if block is None:
        raise TLSConfigError(
            f"TLS key file {keyPath} has no PEM private key "
            "(expected a -----BEGIN PRIVATE KEY----- block)"
        )
    try:
        key = serialization.load_pem_private_key(block.group(0), password=None)
    except TypeError:  # encrypted
        raise TLSConfigError(
            f"TLS key file {keyPath} is encrypted; chatserv needs an unencrypted key "
            "(decrypt it with: openssl pkey -in KEY -out KEY.plain)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSConfigError(f"TLS key file {keyPath} is not a valid PEM private key") from None
    if not isinstance(key, _SIGNING_KEYS):
        raise TLSConfigError(
            f"TLS key file {keyPath} holds a key type TLS servers cannot use "
            "(use an RSA, ECDSA or Ed25519 key)"
        )
    if _publicBytes(key.public_key()) != _publicBytes(certificate.public_key()):
        raise TLSConfigError(
            f"TLS key {keyPath} does not match the certificate in {certPath} "
            "(the first certificate in the file must be the server's)"
        )

    options = CertificateOptions(
        privateKey=key,
        certificate=certificate,
        extraCertChain=list(chain) or None,
        raiseMinimumTo=MINIMUM_TLS_VERSION,
        acceptableCiphers=_ACCEPTABLE_CIPHERS,
    )
    try:
        # Build the (cached, shared) context now, so problems show at start-up rather
        # than at the first connect, and while it can still be changed: no client-
        # initiated TLS 1.2 renegotiation (a CPU cost a client could make us pay).
        options.getContext().set_options(getattr(SSL, "OP_NO_RENEGOTIATION", 0))
    except SSL.Error as e:
        raise TLSConfigError(
            f"TLS certificate {certPath} and key {keyPath} cannot be used: {e}"
        ) from None

    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc < now:
        _log.warn(
            "TLS certificate {path} expired on {date:%Y-%m-%d}; clients will refuse it",
            path=certPath,
            date=certificate.not_valid_after_utc,
        )
    elif certificate.not_valid_before_utc > now:
        _log.warn(
            "TLS certificate {path} is not valid before {date:%Y-%m-%d %H:%M} UTC",
            path=certPath,
            date=certificate.not_valid_before_utc,
        )
    return _Loaded(certificate, chain, options)


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class TLSCredentials:
    """A server certificate (with its chain) and key, read from PEM files; reloadable.

    C{certPath} holds the server certificate first, then any intermediate certificates
    (the chain sent to clients). C{keyPath} holds the unencrypted private key; if it is
    C{None}, the key is read from C{certPath} (one combined PEM file).

    Use one instance as the connection creator of every TLS listener (L{tlsEndpoint},
    or C{TLSMemoryBIOFactory(credentials, False, factory)}). Each new connection uses
    the certificate loaded last; L{reload} swaps in a new one without touching
    established connections (each keeps the OpenSSL context it was created from).

    @raise TLSConfigError: if the files are missing, unreadable, not PEM, or the key
        does not match the certificate.
    """

    def __init__(self, certPath: str | Path, keyPath: str | Path | None = None) -> None:
        self.certPath = str(certPath)
        self.keyPath = str(keyPath) if keyPath is not None else self.certPath
        self._current = _load(self.certPath, self.keyPath)

    @property
    def certificate(self) -> x509.Certificate:
        """The server certificate new connections get."""
        return self._current.certificate

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """The intermediate certificates sent after it."""
        return self._current.chain

    def reload(self) -> bool:
        """Read the files again. On success new connections get the new certificate.

        On failure, log one error and keep serving the certificate loaded before.
        Returns whether the new files were taken.
        """
        try:
            loaded = _load(self.certPath, self.keyPath)
        except TLSConfigError as e:
            return self._refused(e)
        return self._took(loaded)

    def reloadInThread(self, reactor) -> defer.Deferred[bool]:
        """L{reload}, with the files read in the reactor's thread pool (for SIGHUP)."""
        d = deferToThreadPool(reactor, reactor.getThreadPool(), _load, self.certPath, self.keyPath)
        return d.addCallbacks(self._took, self._refusedFailure)

    def _took(self, loaded: _Loaded) -> bool:
        self._current = loaded
        _log.info(
            "TLS certificate reloaded from {path}: {summary}",
            path=self.certPath,
            summary=describe(loaded.certificate),
        )
        return True

    def _refusedFailure(self, failure) -> bool:
        failure.trap(TLSConfigError)  # anything else is a bug: let it be logged as one
        return self._refused(failure.value)

    def _refused(self, error: Exception) -> bool:
        _log.error(
            "TLS certificate not reloaded, still using the previous one: {error}", error=error
        )
        return False

    # -- IOpenSSLServerConnectionCreator: called for each accepted connection ----------

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        return self._current.options.serverConnectionForTLS(tlsProtocol)

    # -- IOpenSSLContextFactory, for APIs that still want a context --------------------

    def getContext(self) -> SSL.Context:
        return self._current.options.getContext()


class _TimedTLSProtocol(BufferingTLSTransport):
    """Server-side TLS that aborts a connection whose handshake does not finish in time."""

    _handshakeTimer = None

    def makeConnection(self, transport) -> None:
        timeout = self.factory.handshakeTimeout
        if timeout is not None:
            self._handshakeTimer = self.factory.clock.callLater(timeout, self._tooSlow)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self._handshakeTimer is not None:
            handle = self.getHandle()
            # The client's Finished message is the last of the handshake.
            if handle is not None and handle.get_peer_finished() is not None:
                self._stopTimer()

    def connectionLost(self, reason) -> None:
        # TLSMemoryBIOProtocol keeps the TLS error that ended the connection as _reason
        # (and passes it on to the application in place of the transport's reason).
        failure = self._reason or reason
        if self._handshakeTimer is not None and failure.check(SSL.Error):
            # Otherwise the log would only say "connection lost" of a refused handshake.
            self._log(
                "TLS handshake with {peer} failed: {why}",
                peer=_peerText(self.getPeer()),
                why=_sslReason(failure.value),
            )
        self._stopTimer()
        super().connectionLost(reason)

    def _log(self, format: str, **kwargs: object) -> None:
        service = getattr(self.factory.wrappedFactory, "service", None)  # a chat listener's
        if service is not None:
            service.logLimit.info(_log, format, **kwargs)
        else:
            _log.info(format, **kwargs)

    def _stopTimer(self) -> None:
        if self._handshakeTimer is not None:
            if self._handshakeTimer.active():
                self._handshakeTimer.cancel()
            self._handshakeTimer = None

    def _tooSlow(self) -> None:
        self._handshakeTimer = None
        peer = self.getPeer()
        self._log(
            "closing TLS connection from {host}:{port}: no handshake in {timeout:g} s",
            host=getattr(peer, "host", peer),
            port=getattr(peer, "port", ""),
            timeout=self.factory.handshakeTimeout,
        )
        self.abortConnection()


def _peerText(peer) -> str:
    return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"


def _sslReason(error: SSL.Error) -> str:
    """OpenSSL's reasons (C{"wrong version number"}), not its tuple of tuples."""
    entries = error.args[0] if error.args and isinstance(error.args[0], list) else []
    reasons = [e[2] for e in entries if isinstance(e, tuple) and len(e) == 3 and e[2]]
    return "; ".join(reasons) or str(error) or "unknown reason"


class _TimedTLSFactory(TLSMemoryBIOFactory):
    protocol = _TimedTLSProtocol

    def __init__(self, credentials, wrappedFactory, clock, handshakeTimeout) -> None:
        super().__init__(credentials, False, wrappedFactory, clock)
        self.clock = clock
        self.handshakeTimeout = handshakeTimeout


@implementer(IStreamServerEndpoint)
class TLSWrappedEndpoint:
    """A plain stream endpoint (TCP, UNIX) whose connections are wrapped in TLS.

    What C{reactor.listenSSL} does, with L{TLSCredentials} as the (reloadable)
    connection creator and a handshake timeout.
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        credentials: TLSCredentials,
        clock,
        handshakeTimeout: float | None = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self.credentials = credentials
        self.clock = clock
        self.handshakeTimeout = handshakeTimeout

    def listen(self, protocolFactory):
        factory = _TimedTLSFactory(
            self.credentials, protocolFactory, self.clock, self.handshakeTimeout
        )
        return self.endpoint.listen(factory)


def tlsEndpoint(
    reactor,
    portOrDescription: str | int,
    credentials: TLSCredentials | None,
    handshakeTimeout: float | None = HANDSHAKE_TIMEOUT,
) -> IStreamServerEndpoint:
    """The endpoint of one TLS listener.

      - A bare port (C{10443}): TLS with C{credentials} on all interfaces, listen backlog
        1024.
      - A plain transport description (C{tcp:10443:interface=127.0.0.1}, C{tcp6:...},
        C{unix:...}): that endpoint, with TLS using C{credentials} on top.
      - Anything else (C{ssl:10443:privateKey=key.pem:certKey=cert.pem}, or an endpoint
        plugin that does its own TLS): passed to C{serverFromString} unchanged. Such a
        listener uses the certificate named in the description, read once: a SIGHUP
        reload of C{credentials} does not apply to it, nor does C{handshakeTimeout}.

    In the first two cases, new connections use whatever certificate C{credentials}
    holds at the time, and one that has not finished its handshake after
    C{handshakeTimeout} seconds (C{None}: no limit) is aborted.

    @raise TLSConfigError: for a bad description, a port out of range, or a bare port or
        plain transport when C{credentials} is C{None}.
    """
    from twisted.internet.endpoints import (
        TCP4ServerEndpoint,
        TCP6ServerEndpoint,
        UNIXServerEndpoint,
        serverFromString,
    )

    text = str(portOrDescription).strip()
    if text.isascii() and text.isdigit():
        port = int(text)
        if port > 65535:
            raise TLSConfigError(f"port {port} is out of range (0-65535)")
        endpoint = TCP4ServerEndpoint(reactor, port, backlog=DEFAULT_BACKLOG)
    else:
        try:
            endpoint = serverFromString(reactor, text)
        except Exception as e:  # serverFromString raises several types for bad input
            raise TLSConfigError(f"bad endpoint {text!r}: {e}") from None
        if not isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint, UNIXServerEndpoint)):
            return endpoint  # brings its own TLS (ssl:, plugins)
    # A plain transport: without TLS on top, "tcp:10443" given as a TLS listener would
    # serve plain text.
    if credentials is None:
        raise TLSConfigError(f"TLS listener {text} needs a certificate and key")
    return TLSWrappedEndpoint(endpoint, credentials, reactor, handshakeTimeout)


def installReloadOnSIGHUP(
    reactor, credentials: Iterable[TLSCredentials]
) -> Callable[[], None] | None:
    """On SIGHUP, reload every one of C{credentials} on the reactor thread.

    A handler installed before (if it is a Python function) is still called. Returns a
    function that puts the previous handler back, or C{None} where there is no SIGHUP
    or this is not the main thread (signals cannot be handled there).
    """
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None:
        return None
    unique = list({id(c): c for c in credentials}.values())
    previous = signal.getsignal(sighup)

    def reloadAll() -> None:
        for c in unique:
            c.reloadInThread(reactor)  # the files are read off the reactor thread

    def onSIGHUP(signum, frame) -> None:
        reactor.callFromThread(reloadAll)  # safe from a signal handler; runs in the loop
        if callable(previous):
            previous(signum, frame)

    try:
        signal.signal(sighup, onSIGHUP)
    except ValueError:  # not the main thread
        _log.warn("cannot handle SIGHUP outside the main thread; TLS reload is off")
        return None

    def restore() -> None:
        if signal.getsignal(sighup) is onSIGHUP:
            signal.signal(sighup, previous if previous is not None else signal.SIG_DFL)

    return restore


class TLSReloadService(Service):
    """Reloads TLS certificates on SIGHUP while running (C{kill -HUP PID})."""

    name = "tls-reload"

    def __init__(self, reactor, credentials: Iterable[TLSCredentials]) -> None:
        self._reactor = reactor
        self._credentials = list(credentials)
        self._restore: Callable[[], None] | None = None

    def startService(self) -> None:
        super().startService()
        if self._credentials:
            self._restore = installReloadOnSIGHUP(self._reactor, self._credentials)

    def stopService(self):
        if self._restore is not None:
            self._restore()
            self._restore = None
        return super().stopService()
