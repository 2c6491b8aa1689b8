"""chatserv-makecert: a self-signed certificate and key for trying TLS locally.

    chatserv-makecert [--host NAME]... [--days 30] [--out DIR]

writes DIR/chatserv.crt and DIR/chatserv.key (the key readable by its owner only), for
C{twistd -n chatserv --tls 10443 --tls-cert chatserv.crt --tls-key chatserv.key}. Clients
trust it by being given the certificate file (C{openssl s_client -CAfile chatserv.crt},
C{ssl.create_default_context(cafile="chatserv.crt")}). It is not for production: use a
certificate from a real certificate authority there.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_NAME = "chatserv.crt"
KEY_NAME = "chatserv.key"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 30


class MakeCertError(Exception):
    """Nothing was written; the message says why."""


def subjectAltNames(hosts: list[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses for the subjectAltName extension, in the order given."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip()
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
            continue
        except ValueError:
            pass
        try:
            ascii_ = host.encode("idna").decode("ascii")  # accepts *.example.test too
        except UnicodeError:
            ascii_ = ""
        if not ascii_ or ascii_.startswith(".") or " " in ascii_ or "/" in ascii_:
            raise MakeCertError(f"not a host name or IP address: {host!r}")
        names.append(x509.DNSName(ascii_.lower()))
    return names


def makeCertificate(
    hosts: list[str], days: int = DEFAULT_DAYS, keyType: str = "ec"
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]:
    """A new key and a self-signed server certificate for C{hosts}, valid for C{days}."""
    if not hosts:
        raise MakeCertError("give at least one --host")
    if days < 1:
        raise MakeCertError("--days must be at least 1")
    names = subjectAltNames(hosts)
    if keyType == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    common = hosts[0].strip()[:64]
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chatserv test certificate"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=keyType == "rsa",
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _writeFile(path: Path, data: bytes, mode: int) -> None:
    """Write C{data} to C{path} with C{mode}, replacing it in one step (a server
    reloading its certificate never reads half a file)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def writeCertificate(
    out: str | Path,
    hosts: list[str],
    days: int = DEFAULT_DAYS,
    keyType: str = "ec",
    force: bool = False,
) -> tuple[Path, Path, x509.Certificate]:
    """Make a certificate and key and write them to C{out}/chatserv.crt and .key.

    Refuses (L{MakeCertError}, nothing written) to overwrite either file unless C{force}.
    The key file is mode 0600, the certificate 0644.
    """
    directory = Path(out)
    if not directory.is_dir():
        raise MakeCertError(f"{directory} is not a directory")
    certPath, keyPath = directory / CERT_NAME, directory / KEY_NAME
    existing = [str(p) for p in (certPath, keyPath) if p.exists()]
    if existing and not force:
        raise MakeCertError(f"refusing to overwrite {' and '.join(existing)}; use --force")
    certificate, key = makeCertificate(hosts, days, keyType)
    keyBytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        _writeFile(keyPath, keyBytes, 0o600)
        _writeFile(certPath, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as e:
        raise MakeCertError(f"cannot write to {directory}: {e.strerror}") from None
    return certPath, keyPath, certificate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chatserv-makecert",
        description=(
            "Write a self-signed certificate (chatserv.crt) and its key (chatserv.key) for "
            "trying chatserv's TLS listeners locally. Not for production."
        ),
    )
    parser.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="NAME",
        help="a DNS name or IP address clients will connect to; repeatable; given, it "
        f"replaces the defaults [default: {', '.join(DEFAULT_HOSTS)}]",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help=f"how long it is valid [default: {DEFAULT_DAYS}]",
    )
    parser.add_argument(
        "--out", default=".", metavar="DIR", help="where to write the files [default: .]"
    )
    parser.add_argument(
        "--key-type",
        choices=["ec", "rsa"],
        default="ec",
        help="ECDSA P-256 or RSA 2048 [default: ec]",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace chatserv.crt and chatserv.key if present"
    )
    args = parser.parse_args(argv)
    hosts = args.hosts or list(DEFAULT_HOSTS)
    try:
        certPath, keyPath, certificate = writeCertificate(
            args.out, hosts, args.days, args.key_type, args.force
        )
    except MakeCertError as e:
        print(f"chatserv-makecert: error: {e}", file=sys.stderr)
        return 1
    until = certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    print(f"wrote {certPath} (self-signed for {', '.join(hosts)}; valid until {until})")
    print(f"wrote {keyPath} (private key; keep it secret)")
    print("run the server with it:")
    print(
        f"    twistd -n chatserv --tcp 10001 --tls 10443 --wss 8766 "
        f"--tls-cert {certPath} --tls-key {keyPath}"
    )
    print("and connect, trusting this certificate:")
    print(f"    openssl s_client -quiet -connect localhost:10443 -CAfile {certPath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
