"""TLS clients and certificates for tests/test_tls.py."""

from __future__ import annotations

import datetime
import socket
import ssl
from pathlib import Path

from clients import TIMEOUT, LineClient, WSClient, connectLine, connectWS
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chatserv import makecert


def makeCert(directory: Path, *extra: str) -> tuple[Path, Path]:
    """Run chatserv-makecert into C{directory}; return (certificate, key) paths."""
    argv = ["--host", "localhost", "--host", "127.0.0.1", "--out", str(directory), *extra]
    assert makecert.main(argv) == 0
    return directory / makecert.CERT_NAME, directory / makecert.KEY_NAME


def certificateIn(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _trust(cafile: Path):
    from twisted.internet.ssl import Certificate

    return Certificate.loadPEM(cafile.read_bytes())


async def connectTLSLine(port: int, cafile: Path, hostname: str = "localhost") -> LineClient:
    """A line client over TLS that verifies the server against C{cafile}."""
    from twisted.internet.ssl import optionsForClientTLS

    return await connectLine(port, tls=optionsForClientTLS(hostname, trustRoot=_trust(cafile)))


async def connectWSS(port: int, cafile: Path, json_: bool = False) -> WSClient:
    """A websocket client over TLS (wss://) that verifies the server against C{cafile}."""
    from twisted.internet.ssl import optionsForClientTLS

    tls = optionsForClientTLS("localhost", trustRoot=_trust(cafile))
    return await connectWS(port, json_=json_, tls=tls)


def peerCertificate(client) -> x509.Certificate:
    """The certificate the server presented to a Twisted TLS client."""
    return client.transport.getPeerCertificate().to_cryptography()


def pythonHandshake(
    port: int,
    cafile: Path,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> dict:
    """Connect with Python's ssl module (blocking: run it in a thread), read the first
    bytes, hang up. Returns what was negotiated; raises ssl.SSLError if refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            first = tls.recv(4096)
            return {
                "version": tls.version(),
                "cipher": tls.cipher()[0],
                "compression": tls.compression(),
                "certificate": x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)),
                "first": first.decode("utf-8", "replace"),
            }


def clientHello() -> bytes:
    """The first flight of a real TLS client (a ClientHello record)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _issue(subject: str, key, issuerName: x509.Name, issuerKey, ca: bool, host: str | None):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuerName or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if host:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False
        )
    return builder.sign(issuerKey, hashes.SHA256())


def makeChain(directory: Path) -> tuple[Path, Path, Path]:
    """A root CA, an intermediate it signed, and a server certificate for localhost that
    the intermediate signed. Writes root.crt, server-chain.crt (server certificate then
    intermediate) and server.key; returns their paths."""
    rootKey, midKey, leafKey = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _issue("test root", rootKey, None, rootKey, True, None)
    mid = _issue("test intermediate", midKey, root.subject, rootKey, True, None)
    leaf = _issue("localhost", leafKey, mid.subject, midKey, False, "localhost")
    rootPath = directory / "root.crt"
    chainPath = directory / "server-chain.crt"
    keyPath = directory / "server.key"
    rootPath.write_bytes(_pem(root))
    chainPath.write_bytes(_pem(leaf) + _pem(mid))
    keyPath.write_bytes(
        leafKey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return rootPath, chainPath, keyPath
