"""The websocket port as a small web server: the browser client, and the websocket.

A twisted.web site listens on every C{ws} and C{wss} endpoint. A request that asks for a
websocket upgrade, on any path (the browser client uses C{/ws}, older clients C{/}), is
handed to Autobahn's L{WebSocketResource}, which turns the connection into a
L{WebSocketChatProtocol}; from then on twisted.web is out of the way and frames go
straight to the chat protocol. Any other request is for the browser client's files, plain
HTML, CSS and JavaScript shipped in C{chatserv/webclient/}.

Connection limits apply when a connection is accepted, before anyone knows what it will
ask for; a connection that becomes a websocket keeps the slot it was admitted with.

C{http_timeout} bounds each whole request: from the connect, or from the end of the
previous response, to the last byte of the request (a websocket handshake completes while
its request is handled, so it is bounded too). Twisted's own timeout only measures idle
time, which a client sending a byte every few seconds never reaches.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.logger import Logger
from twisted.web import pages, resource, static
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from chatserv.addresses import forwardedFor
from chatserv.protocols import AdmissionMixin, admit, peerText, released
from chatserv.protocols.ws import WebSocketChatFactory
from chatserv.service import ChatService

_log = Logger()
_access = Logger(namespace="chatserv.web.access")  # one line per request

WEB_CLIENT = Path(__file__).resolve().parent.parent / "webclient"

# The client is self-contained: nothing from other origins, no inline script or style, so
# text that slipped through as markup still could not run.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    b"Content-Security-Policy": CONTENT_SECURITY_POLICY.encode("ascii"),
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    # Revalidate every time (a 304 when unchanged): an upgraded server is seen at once.
    b"Cache-Control": b"no-cache",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# Path segments that no file of the client's has. They are turned away before the file
# system sees them: a NUL makes os.stat raise (a 500), a segment that is not UTF-8 makes
# twisted.web log a traceback, and an overlong one is refused by the kernel anyway.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_NAME_MAX = 255  # bytes in a file name (Linux and the BSDs)


def isWebSocketRequest(request: Request) -> bool:
    """Does the request ask to become a websocket (C{Upgrade: websocket})?"""
    upgrade = request.getHeader(b"upgrade")
    return upgrade is not None and b"websocket" in upgrade.lower()


class ClientFiles(static.File):
    """The browser client's files: no directory listings, strict headers on every file."""

    contentTypes = {**static.File.contentTypes, **_TYPES}
    childNotFound = pages.notFound()

    def __init__(self, path: str | Path = WEB_CLIENT, *args) -> None:
        super().__init__(str(path), *args)  # (createSimilarFile passes more arguments)

    def directoryListing(self) -> resource.IResource:
        return pages.forbidden()

    def getChild(self, path: bytes, request: Request) -> resource.IResource:
        try:
            name = path.decode("utf-8")
        except UnicodeDecodeError:
            return self.childNotFound
        if len(path) > _NAME_MAX or _CONTROLS.search(name):
            return self.childNotFound
        return super().getChild(path, request)

    def render(self, request: Request) -> bytes | int:
        for name, value in _HEADERS.items():
            request.setHeader(name, value)
        ranges = request.getHeader(b"range")
        if ranges is not None and b"," in ranges:
            # Several ranges (twisted.web would send each, overlapping or not, in one
            # multipart body: thousands of "0-" make a small request a huge answer).
            # A server may ignore Range; these files are small, so the whole file it is.
            request.requestHeaders.removeHeader(b"range")
        return super().render(request)


class WebRoot(resource.Resource):
    """Websocket upgrades on any path go to the chat; everything else is a file."""

    def __init__(self, websocket: resource.IResource, files: resource.IResource | None) -> None:
        super().__init__()
        self._websocket = websocket
        self._files = files

    def getChildWithDefault(self, name: bytes, request: Request) -> resource.IResource:
        if isWebSocketRequest(request):
            return self._websocket
        if self._files is None:
            return pages.notFound(message="This port speaks websocket only.")
        return self._files.getChildWithDefault(name, request)


class _SiteWebSocketFactory(WebSocketChatFactory):
    """The chat websocket behind the site: the connection was admitted by the site."""

    _inherited: str | None = None
    _client: IAddress | None = None

    @contextmanager
    def inheriting(self, request: Request) -> Iterator[None]:
        """While Autobahn builds the protocol for C{request}'s channel, pass it the
        channel's slot and the client's address (a proxy's client's, if proxied)."""
        channel = request.channel
        self._inherited = channel.__dict__.pop("admittedFrom", None)
        self._client = request.getClientAddress() if channel.proxied else None
        try:
            yield
        finally:
            self._client = None
            if self._inherited is not None:  # no protocol was built: the channel keeps it
                channel.admittedFrom = self._inherited
                self._inherited = None

    def buildProtocol(self, addr):
        protocol = WebSocketServerFactory.buildProtocol(self, addr)  # admitted already
        protocol.clientAddress = self._client
        if self._inherited is not None:
            protocol.admittedFrom, self._inherited = self._inherited, None
        return protocol


class _ChatWebSocketResource(WebSocketResource):
    def render(self, request: Request):
        channel = request.channel
        if channel.proxied:
            # Admitted now that the client is known; a slot taken by an earlier upgrade
            # on this connection that failed is given back first.
            released(channel)
            host = request.getClientAddress().host
            why = admit(channel.factory, host)
            if why is not None:
                request.setResponseCode(503)
                request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
                return (why + "\n").encode("utf-8")
            channel.admittedFrom = host
        if channel.transport is not None:
            # The HTTP channel is the transport's producer (for back-pressure); the chat
            # protocol, which takes the connection over, registers itself instead.
            channel.transport.unregisterProducer()
        with self._factory.inheriting(request):
            return super().render(request)


class _Request(Request):
    """A request whose client is, behind a trusted proxy, the one the proxy names."""

    def process(self) -> None:
        if self.channel.proxied:
            self.client = self.channel.site.clientOf(self)
        super().process()


class _Channel(HTTPChannel):
    """An HTTP connection on the site, with a deadline for each whole request."""

    _deadline: IDelayedCall | None = None
    proxied = False  # from a trusted proxy: each request says whose it is

    def connectionMade(self) -> None:
        super().connectionMade()
        peer = str(getattr(self.transport.getPeer(), "host", ""))
        self.proxied = peer in self.factory.service.trustedProxies
        self._startDeadline()

    def allContentReceived(self) -> None:
        # The request is in. Handling it may hand the connection to a websocket, which
        # happens before this returns; the channel would then never hear of it again.
        self._stopDeadline()
        super().allContentReceived()

    def requestDone(self, request) -> None:
        # Started before Twisted parses a pipelined request already received (which may
        # complete it and stop the deadline again), and even when the connection is to
        # close: a peer that does not read the response is then timed out and aborted too.
        self._startDeadline()
        super().requestDone(request)

    def timeoutConnection(self) -> None:
        # Either timeout may fire first (the idle one or the deadline; they often tie).
        # Time out once: a second call would orphan the first abort timer, never cancelled.
        self._stopDeadline()
        self.setTimeout(None)
        if self._abortingCall is None:
            self.factory.service.logLimit.info(
                _log,
                "closing {peer}: no complete HTTP request in {timeout:g} s",
                peer=peerText(self.factory.kind, self.transport.getPeer()),
                timeout=self.factory.timeOut,
            )
            # What HTTPChannel.timeoutConnection does, without its own line per client
            # (which no log limit would cover).
            if self.abortTimeout is not None:
                self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
            self.loseConnection()

    def connectionLost(self, reason) -> None:
        self._stopDeadline()
        released(self)  # a no-op once a websocket has taken the slot over
        super().connectionLost(reason)

    def _startDeadline(self) -> None:
        self._stopDeadline()
        # The site's setting: the channel's own timeOut is None while a request is handled.
        if self.factory.timeOut is not None:
            self._deadline = self.callLater(self.factory.timeOut, self._tooSlow)

    def _stopDeadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _tooSlow(self) -> None:
        self._deadline = None
        self.timeoutConnection()


class ChatSite(AdmissionMixin, Site):
    """The site on a websocket port; C{websocket} is the chat's websocket factory."""

    protocol = _Channel
    noisy = False
    admitsProxiedLater = True  # by each websocket request's forwarded client address
    requestFactory = _Request

    def __init__(self, service: ChatService, reactor=None, kind: str = "ws") -> None:
        self.service = service
        self.kind = kind
        self.websocket = _SiteWebSocketFactory(service, reactor=reactor, kind=kind)
        files = ClientFiles() if service.settings.web_client else None
        root = WebRoot(_ChatWebSocketResource(self.websocket), files)
        super().__init__(root, timeout=service.settings.http_timeout, reactor=reactor)

    def refusal(self, reason: str) -> bytes:
        return self.websocket.refusal(reason)

    def clientOf(self, request: Request) -> IAddress:
        """Who sent C{request} through a trusted proxy, by its X-Forwarded-For or
        Forwarded header (the proxy itself if they name no one it does not trust)."""
        peer = request.client
        headers = request.requestHeaders
        hops = forwardedFor(
            [v.decode("latin-1") for v in headers.getRawHeaders(b"x-forwarded-for", [])],
            [v.decode("latin-1") for v in headers.getRawHeaders(b"forwarded", [])],
        )
        host = self.service.trustedProxies.client(str(getattr(peer, "host", "")), hops)
        if host == getattr(peer, "host", None):
            return peer
        return (IPv6Address if ":" in host else IPv4Address)("TCP", host, 0)

    def getResourceFor(self, request: Request) -> resource.IResource:
        # A safety net under ClientFiles.getChild: whatever a path holds, looking it up
        # must not fail, or every such request is a 500 and a traceback in the log.
        try:
            return super().getResourceFor(request)
        except Exception as e:
            self.service.logLimit.warn(
                _log,
                "{peer}: answered 404 to a path that could not be looked up: {path!r}: {error!r}",
                peer=peerText(self.kind, request.getClientAddress()),
                path=request.path[:80],
                error=e,
            )
            return pages.notFound()

    def log(self, request: Request) -> None:
        # The access log line of each request, within log_rate_limit like every line a
        # client can cause (twisted.web writes one per request, unbounded).
        if self._logFile is not None:
            self.service.logLimit.info(
                _access, "{request}", request=self._logFormatter(self._logDateTime, request)
            )

    def webAddress(self, address) -> str | None:
        """Where a browser finds the client on the listening C{address} (None: not served)."""
        host, port = getattr(address, "host", None), getattr(address, "port", None)
        if not self.service.settings.web_client or host is None:
            return None  # not served, or not TCP (a UNIX socket)
        if host in ("0.0.0.0", "::"):
            host = "localhost"  # every interface: this one, at least
        elif ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.kind == 'wss' else 'http'}://{host}:{port}/"
