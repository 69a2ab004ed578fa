"""TLS certificates for the gateway's tests, made here with ``cryptography`` and signed by the test hub's issuing CA
(``hub.trust.pki.load_ca``): a server certificate (serverAuth, SAN 127.0.0.1 and localhost) and client certificates
with a system's subject (``hub.trust.pki.subject_for``: agency code + system id) and the clientAuth usage.

Stand-ins until the CA issues TLS certificates itself (``hub pki issue --tls``, the gateway's server certificate):
the functions keep the shapes those will have (PEM files: certificate followed by the issuing CA; the key apart).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.trust import pki

__all__ = ["client_certificate", "client_ssl_context", "revoke", "say_a_line", "server_certificate"]


def _write(out: Path, name: str, cert: x509.Certificate, issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey):
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{name}.pem", out / f"{name}.key"
    cert_path.write_bytes(pki.certificate_pem(cert, issuer))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _builder(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate, days: int):
    now = dt.datetime.now(dt.UTC)
    if days < 0:  # an expired certificate: valid for a day, ``-days`` days ago
        now += dt.timedelta(days=days - 1)
        days = 1
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )


def server_certificate(
    pki_dir: Path,
    passphrase: str,
    out: Path,
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
    *,
    days: int = 90,
) -> tuple[Path, Path]:
    """The gateway's server certificate (serverAuth, SAN ``hosts``), issued by the hub's issuing CA:
    (``server.pem`` with the issuing CA, ``server.key``) in ``out``. ``days``: more than the ops overview's 30 days
    of warning (``gateway_activity.CERTIFICATE_WARN_DAYS``) by default."""
    issuer, issuer_key = pki.load_ca(pki_dir, passphrase)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Forestry Exchange Hub"),
            x509.NameAttribute(NameOID.COMMON_NAME, "gateway"),
        ]
    )
    cert = (
        _builder(subject, key, issuer, days)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(issuer_key, hashes.SHA384())
    )
    return _write(out, "server", cert, issuer, key)


def client_certificate(
    pki_dir: Path, passphrase: str, agency: str, system: str, out: Path, *, days: int = 30, client_auth: bool = True
) -> tuple[Path, Path, int]:
    """A TLS client certificate of ``system`` (subject: agency code + system id; clientAuth): (cert, key, serial).
    ``days`` < 0: one that expired that many days ago."""
    issuer, issuer_key = pki.load_ca(pki_dir, passphrase)
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [pki.DOCUMENT_SIGNING]
    cert = (
        _builder(pki.subject_for(agency, system), key, issuer, days)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(issuer_key, hashes.SHA384())
    )
    cert_path, key_path = _write(out, f"{system}-{cert.serial_number:x}", cert, issuer, key)
    return cert_path, key_path, cert.serial_number


def client_ssl_context(pki_dir: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A client context that trusts the hub root only and presents ``cert``/``key`` (none: no certificate)."""
    ctx = ssl.create_default_context(cafile=str(pki.PkiPaths(pki_dir).root_cert))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def revoke(pki_dir: Path, passphrase: str, serial: int, reason: str = "key-compromise") -> None:
    """Publish a new CRL of the issuing CA that adds ``serial`` to what its current CRL revokes (a certificate made
    here is not in the CA's register, so ``hub pki revoke`` does not know it)."""
    paths = pki.PkiPaths(pki_dir)
    issuer, issuer_key = pki.load_ca(pki_dir, passphrase)
    current = x509.load_pem_x509_crl(paths.issuing_crl.read_bytes())
    entries = [pki.RevokedEntry(r.serial_number, "unspecified", r.revocation_date_utc) for r in current]
    entries.append(pki.RevokedEntry(serial, reason, dt.datetime.now(dt.UTC)))
    number = current.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    pki.publish_crl(paths.issuing_crl, issuer, issuer_key, entries, number=number)


def say_a_line(port: int, ctx: ssl.SSLContext | None, header: bytes = b"") -> bytes | BaseException:
    """Connect to 127.0.0.1:``port``, send ``header`` (a load balancer's PROXY header), then TLS with ``ctx`` (or
    plain), say a request line, read the answer; the exception instead if any. Blocking, as curl or a JDK client is:
    it sends its alert when it refuses the server's certificate (asyncio's own client closes without one)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(header)
            conn = ctx.wrap_socket(raw, server_hostname="localhost") if ctx is not None else raw
            with conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                return conn.recv(100)
    except (ssl.SSLError, OSError) as exc:
        return exc


async def presented_serial(host: str, port: int, ctx: ssl.SSLContext) -> int:
    """The serial of the certificate the TLS server at ``host``:``port`` presents to a new connection."""
    import asyncio

    _reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        # Closed at once, without waiting for the server's close_notify: a close() left the socket to the garbage
        # collector of a later test when the loop moved on (a ResourceWarning there).
        writer.transport.abort()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
