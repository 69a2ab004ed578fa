"""TLS certificates from the hub CA (the HTTPS gateway, issue 11): an agency system's certificate signs messages AND
authenticates the system as a TLS client; a TLS-only client certificate (``issue_from_csr(tls=True)``) cannot sign
messages; the gateway's server certificate (``issue_server_certificate``) verifies for its host names and addresses.
The handshakes are real: Python's ssl (OpenSSL) on both ends of a socket pair, or over localhost."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from trust_fixtures import AGENCY, PASSPHRASE, TestPki, make_pki

from hub import clock
from hub.errors import CertificateUntrusted, ConfigError
from hub.trust import Signer, keys, pki
from hub.trust.lifecycle import expiry_warnings

SYSTEM = "city-220100-portal"


@pytest.fixture(scope="module")
def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    # A PKI of this module's own: the gateway's server certificate it issues must not show up in other modules'
    # expiry checks.
    return make_pki(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tpki: TestPki) -> pki.IssuedCertificate:
    return pki.issue_server_certificate(tpki.dir, PASSPHRASE, ["127.0.0.1", "localhost", "::1"], days=30)


def _client_files(tmp: Path, tpki: TestPki, *, tls: bool, system: str = SYSTEM) -> tuple[Path, Path, x509.Certificate]:
    key = keys.generate_private_key("ec-p256")
    issued = pki.issue_from_csr(tpki.dir, PASSPHRASE, pki.make_csr(key, AGENCY, system), tls=tls)
    assert issued.issuer is not None
    key_path, cert_path = tmp / f"{system}.key", tmp / f"{system}.pem"
    keys.write_private_file(key_path, keys.private_key_pem(key, None))
    keys.write_public_file(cert_path, pki.certificate_pem(issued.certificate, issued.issuer))
    return key_path, cert_path, issued.certificate


def _ca_file(tmp: Path, tpki: TestPki) -> Path:
    """The hub root and the issuing CA(s): what the gateway loads as its cafile."""
    f = tmp / "hub-cas.pem"
    f.write_bytes(tpki.paths.root_cert.read_bytes() + tpki.paths.issuing_cert.read_bytes())
    return f


def _server_context(tpki: TestPki, tmp: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tpki.paths.gateway_cert, tpki.paths.gateway_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=_ca_file(tmp, tpki))
    return ctx


def _client_context(tpki: TestPki, key: Path | None = None, cert: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tpki.paths.root_cert))  # the hub root only: issuing CA from server
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # what Python 3.13 clients do by default
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def _handshake_pair(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str = "localhost"
) -> tuple[dict | None, BaseException | None, BaseException | None]:  # type: ignore[type-arg]
    """Handshake both ends of a socket pair (the server in a thread); the peer certificate the server saw, and the
    exception either side raised."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    seen: dict[str, object] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                seen["peer"] = s.getpeercert()
                s.sendall(b"ok")
        except BaseException as exc:
            seen["error"] = exc

    t = threading.Thread(target=serve)
    t.start()
    client_error: BaseException | None = None
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_hostname) as c:
            assert c.recv(2) == b"ok"
    except (ssl.SSLError, OSError, AssertionError) as exc:
        client_error = exc
    finally:
        b.close()
        t.join(10)
    return seen.get("peer"), seen.get("error"), client_error  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------- profiles


def test_a_system_certificate_carries_document_signing_and_client_auth(tpki: TestPki, tmp_path: Path) -> None:
    _, _, cert = _client_files(tmp_path, tpki, tls=False)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [pki.DOCUMENT_SIGNING, pki.CLIENT_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment


def test_a_system_certificate_still_signs_messages_the_hub_accepts(tpki: TestPki, tmp_path: Path) -> None:
    key_path, cert_path, _ = _client_files(tmp_path, tpki, tls=False, system="city-220100-gis")
    signer = Signer.load(key_path, cert_path)
    verified = tpki.verifier().verify(signer.sign(tpki.envelope(AGENCY, "city-220100-gis")))
    assert verified.signer.system == "city-220100-gis"


def test_a_tls_only_certificate_cannot_sign_messages(tpki: TestPki, tmp_path: Path) -> None:
    key_path, cert_path, cert = _client_files(tmp_path, tpki, tls=True)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [pki.CLIENT_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.content_commitment
    signed = Signer.load(key_path, cert_path).sign(tpki.envelope(AGENCY, SYSTEM))
    with pytest.raises(CertificateUntrusted) as caught:
        tpki.verifier().verify(signed)
    assert caught.value.code == "CERT_USAGE"


def test_renewal_keeps_the_profile(tpki: TestPki, tmp_path: Path) -> None:
    _, _, tls_cert = _client_files(tmp_path, tpki, tls=True, system="city-220100-tls")
    renewed = pki.renew(tpki.dir, PASSPHRASE, tls_cert)
    assert renewed.kind == "tls"
    assert list(renewed.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        pki.CLIENT_AUTH
    ]
    _, _, sys_cert = _client_files(tmp_path, tpki, tls=False, system="city-220100-sys")
    renewed = pki.renew(tpki.dir, PASSPHRASE, sys_cert)
    assert renewed.kind == "agency"
    assert pki.CLIENT_AUTH in renewed.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value


def test_the_server_certificate_names_the_gateway_and_its_hosts(tpki: TestPki, server: pki.IssuedCertificate) -> None:
    cert = server.certificate
    assert server.kind == "server" and server.agency is None
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == pki.GATEWAY_NAME
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [pki.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert stat.S_IMODE(tpki.paths.gateway_key.stat().st_mode) == 0o600
    assert b"ENCRYPTED" not in tpki.paths.gateway_key.read_bytes()
    chain = pki.load_certificates(tpki.paths.gateway_cert)
    assert chain[0] == cert and chain[1] == tpki.issuing
    loaded = serialization.load_pem_private_key(tpki.paths.gateway_key.read_bytes(), None)
    assert loaded.public_key() == cert.public_key()


@pytest.mark.parametrize("host", ["", "bad host", "-x.example", "a..b"])
def test_server_hosts_are_checked(tpki: TestPki, tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError):
        pki.issue_server_certificate(tpki.dir, PASSPHRASE, [host], out_dir=tmp_path / "gw")
    assert not (tmp_path / "gw").exists()


def test_the_gateway_server_certificate_is_watched_for_expiry(tpki: TestPki, server: pki.IssuedCertificate) -> None:
    found = [w for w in expiry_warnings(tpki.dir, days=60) if w.what == "server"]
    assert [w.serial for w in found] == [server.serial]
    assert "hub pki issue-server" in found[0].text()
    assert not [w for w in expiry_warnings(tpki.dir, days=7) if w.what == "server"]


# ------------------------------------------------------------------------------------------- real handshakes


@pytest.mark.parametrize("tls_only", [False, True], ids=["system-certificate", "tls-only-certificate"])
def test_mutual_tls_with_a_system_certificate(
    tpki: TestPki, server: pki.IssuedCertificate, tmp_path: Path, tls_only: bool
) -> None:
    key_path, cert_path, _ = _client_files(tmp_path, tpki, tls=tls_only)
    peer, server_error, client_error = _handshake_pair(
        _server_context(tpki, tmp_path), _client_context(tpki, key_path, cert_path)
    )
    assert server_error is None and client_error is None, (server_error, client_error)
    assert peer is not None
    subject = {k: v for rdn in peer["subject"] for k, v in rdn}
    assert subject["commonName"] == SYSTEM


def test_a_client_without_a_certificate_is_refused_when_required(
    tpki: TestPki, server: pki.IssuedCertificate, tmp_path: Path
) -> None:
    peer, server_error, _ = _handshake_pair(_server_context(tpki, tmp_path), _client_context(tpki))
    assert peer is None and isinstance(server_error, ssl.SSLError)


def test_a_foreign_client_certificate_is_refused(tpki: TestPki, server: pki.IssuedCertificate, tmp_path: Path) -> None:
    other = pki.init_ca(tmp_path / "other-pki", "other-passphrase")
    key = keys.generate_private_key("ec-p256")
    foreign = pki.issue_from_csr(other.paths.root, "other-passphrase", pki.make_csr(key, AGENCY, SYSTEM))
    keys.write_private_file(tmp_path / "f.key", keys.private_key_pem(key, None))
    keys.write_public_file(tmp_path / "f.pem", pki.certificate_pem(foreign.certificate, other.issuing.certificate))
    peer, server_error, _ = _handshake_pair(
        _server_context(tpki, tmp_path), _client_context(tpki, tmp_path / "f.key", tmp_path / "f.pem")
    )
    assert peer is None and isinstance(server_error, ssl.SSLError)


def test_a_document_signing_only_certificate_is_no_tls_client(
    tpki: TestPki, server: pki.IssuedCertificate, tmp_path: Path
) -> None:
    """The certificates issued before the gateway (documentSigning only) do not authenticate over TLS: OpenSSL
    checks the client purpose. Such a system renews (``hub pki renew``) or gets ``hub pki issue --tls``."""
    key = keys.generate_private_key("ec-p256")
    now = clock.now()
    old = pki.end_entity_builder(
        pki.subject_for(AGENCY, SYSTEM),
        key.public_key(),
        tpki.issuing,
        not_before=now - dt.timedelta(minutes=5),
        not_after=now + dt.timedelta(days=5),
    ).sign(tpki.issuing_key, hashes.SHA384())
    keys.write_private_file(tmp_path / "o.key", keys.private_key_pem(key, None))
    keys.write_public_file(tmp_path / "o.pem", pki.certificate_pem(old, tpki.issuing))
    peer, server_error, _ = _handshake_pair(
        _server_context(tpki, tmp_path), _client_context(tpki, tmp_path / "o.key", tmp_path / "o.pem")
    )
    assert peer is None and isinstance(server_error, ssl.SSLError)
    # The remedy docs/gateway.md gives: hub pki renew re-certifies the same key with clientAuth added, and that
    # certificate gets in (it still signs: documentSigning is kept).
    renewed = pki.renew(tpki.dir, PASSPHRASE, old)
    assert renewed.kind == "agency" and renewed.certificate.public_key() == key.public_key()
    eku = list(renewed.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [pki.DOCUMENT_SIGNING, pki.CLIENT_AUTH]
    keys.write_public_file(tmp_path / "r.pem", pki.certificate_pem(renewed.certificate, tpki.issuing))
    peer, server_error, client_error = _handshake_pair(
        _server_context(tpki, tmp_path), _client_context(tpki, tmp_path / "o.key", tmp_path / "r.pem")
    )
    assert server_error is None and client_error is None and peer is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_clients_verify_the_gateway_against_the_hub_root_over_localhost(
    tpki: TestPki, server: pki.IssuedCertificate, tmp_path: Path, host: str
) -> None:
    key_path, cert_path, _ = _client_files(tmp_path, tpki, tls=False)
    server_ctx = _server_context(tpki, tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                result["peer"] = s.getpeercert()
                s.sendall(b"ok")
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=serve)
    t.start()
    try:
        client_ctx = _client_context(tpki, key_path, cert_path)
        assert client_ctx.check_hostname and client_ctx.verify_mode == ssl.CERT_REQUIRED
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname=host) as c,
        ):
            assert c.recv(2) == b"ok"
            seen = c.getpeercert()
            assert seen is not None
            assert {k: v for rdn in seen["subject"] for k, v in rdn}["commonName"] == pki.GATEWAY_NAME
    finally:
        t.join(10)
        listener.close()
    assert "error" not in result and result["peer"]


def test_a_host_not_in_the_certificate_fails_the_client_check(
    tpki: TestPki, server: pki.IssuedCertificate, tmp_path: Path
) -> None:
    key_path, cert_path, _ = _client_files(tmp_path, tpki, tls=False)
    _, _, client_error = _handshake_pair(
        _server_context(tpki, tmp_path),
        _client_context(tpki, key_path, cert_path),
        server_hostname="gateway.example.gov.cn",
    )
    assert isinstance(client_error, ssl.SSLCertVerificationError)


def test_server_hosts_are_normalised_and_not_repeated(tpki: TestPki, tmp_path: Path) -> None:
    issued = pki.issue_server_certificate(
        tpki.dir, PASSPHRASE, ["Gateway.Example.GOV.cn.", "[::1]"], out_dir=tmp_path / "gw"
    )
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gateway.example.gov.cn"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["::1"]
    assert pki.load_certificates(tmp_path / "gw" / "server.pem")[0] == issued.certificate
    with pytest.raises(ConfigError, match="twice"):
        pki.issue_server_certificate(tpki.dir, PASSPHRASE, ["localhost", "LOCALHOST"], out_dir=tmp_path / "gw2")
    with pytest.raises(ConfigError, match="at least one"):
        pki.issue_server_certificate(tpki.dir, PASSPHRASE, [], out_dir=tmp_path / "gw3")
