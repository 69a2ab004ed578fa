"""TLS certificates through the commands, against the real PostgreSQL register: ``hub pki issue --tls`` (kind
``tls``), ``hub pki issue-server`` (kind ``server``, the gateway's files), both listed by ``hub pki list`` and
revocable with ``hub pki revoke``; the register accepts the new kinds (migration 014)."""

from __future__ import annotations

import asyncio
import re
import ssl
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from test_trust_cli import run

from hub.settings import Settings
from hub.store.certificates import CertificateRepository
from hub.store.db import connection
from hub.trust import TrustStore, pki

pytestmark = pytest.mark.integration

AGENCY = "11220100013544550M"
SYSTEM = "city-220100-portal"


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from conftest import ADMIN_DSN, _admin

    name = f"hub_test_tls_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield integration_settings.with_(
            ca_passphrase="tls-test-passphrase",
            state_dir=tmp_path_factory.mktemp("tls"),
            pg_dsn=ADMIN_DSN.rsplit("/", 1)[0] + "/" + name,
        )
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _serial(out: str) -> str:
    found = re.search(r"issued (?:.*?\) )?([0-9a-f]+) for", out)
    assert found is not None, out
    return found.group(1)


def test_tls_and_server_certificates_are_registered_listed_and_revocable(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki_dir = Path(settings.state_dir) / "pki"
    assert run(settings, "pki", "init") == 0
    assert run(settings, "keygen", "--system", SYSTEM, "--agency", AGENCY, "--out", str(tmp_path)) == 0
    capsys.readouterr()
    csr = tmp_path / f"{SYSTEM}.csr"

    # the system's certificate (signs + clientAuth) and a TLS-only one for the same subject and key
    assert run(settings, "pki", "issue", "--csr", str(csr), "--out", str(tmp_path / "sys.pem")) == 0
    sys_serial = _serial(capsys.readouterr().out)
    assert run(settings, "pki", "issue", "--tls", "--csr", str(csr), "--out", str(tmp_path / "tls.pem")) == 0
    out = capsys.readouterr().out
    assert "TLS client certificate" in out
    tls_serial = _serial(out)
    tls_cert = pki.load_certificates(tmp_path / "tls.pem")[0]
    assert list(tls_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [pki.CLIENT_AUTH]

    # the gateway's server certificate, default directory PKI/gateway
    assert run(settings, "pki", "issue-server", "--host", "127.0.0.1", "--host", "localhost") == 0
    out = capsys.readouterr().out
    server_serial = re.search(r"server certificate ([0-9a-f]+) for 127\.0\.0\.1, localhost", out).group(1)  # type: ignore[union-attr]
    assert "within HUB_GATEWAY_CERT_CHECK_S (30 s; systemctl reload: at once), no restart" in out
    paths = pki.PkiPaths(pki_dir)
    assert stat.S_IMODE(paths.gateway_key.stat().st_mode) == 0o600
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths.gateway_cert, paths.gateway_key)  # what the gateway loads
    # elsewhere too, with --out-dir
    assert run(settings, "pki", "issue-server", "--host", "gw.example.gov.cn", "--out-dir", str(tmp_path / "gw")) == 0
    assert (tmp_path / "gw" / "server.pem").is_file() and (tmp_path / "gw" / "server.key").is_file()
    elsewhere = pki.serial_hex(pki.load_certificates(tmp_path / "gw" / "server.pem")[0].serial_number)
    assert run(settings, "pki", "issue-server", "--host", "bad host") == 2
    assert "neither an IP address nor a DNS host name" in capsys.readouterr().out

    # listed with their kinds
    assert run(settings, "pki", "list") == 0
    listing = capsys.readouterr().out
    assert re.search(rf"^{tls_serial}\s+tls\s+{AGENCY}/{SYSTEM}\s.*\svalid\s", listing, re.M)
    assert re.search(rf"^{sys_serial}\s+agency\s+{AGENCY}/{SYSTEM}\s", listing, re.M)
    assert re.search(rf"^{server_serial}\s+server\s+CN={pki.GATEWAY_NAME}\s", listing, re.M)

    # revocable: the issuing CA's CRL names them
    assert run(settings, "pki", "revoke", tls_serial, "--reason", "key-compromise") == 0
    assert capsys.readouterr().out.startswith(f"revoked {tls_serial} ({AGENCY}/{SYSTEM})")
    # again, with another reason: said to be revoked already, the first record (its reason) kept
    assert run(settings, "pki", "revoke", tls_serial, "--reason", "superseded") == 0
    again = capsys.readouterr().out
    assert f"{tls_serial} ({AGENCY}/{SYSTEM}) was revoked already" in again and "reason key-compromise" in again
    assert "not superseded" in again and not again.startswith("revoked ")
    # the one the gateway serves (pki/gateway) is not revoked before issue-server replaces it; another one is
    assert run(settings, "pki", "revoke", server_serial, "--reason", "superseded") == 2
    assert "PKI_REVOKE_CURRENT" in capsys.readouterr().out  # the test run() prints refusals there
    assert run(settings, "pki", "revoke", elsewhere, "--reason", "superseded") == 0
    server_serial = elsewhere
    capsys.readouterr()
    store = TrustStore.load(pki_dir)
    crl = store.crl_for(store.issuing[0])
    assert crl is not None

    async def check() -> None:
        async with connection(settings.pg_dsn) as conn:
            repo = CertificateRepository(conn)
            tls_row, server_row = await repo.get(tls_serial), await repo.get(server_serial)
            assert tls_row is not None and tls_row.kind == "tls" and tls_row.system == SYSTEM
            assert tls_row.revocation_reason == "key-compromise"
            assert server_row is not None and server_row.kind == "server" and server_row.agency is None
            assert server_row.revoked_at is not None
            revoked = {r.serial for r in await repo.revoked_under(tls_row.issuer_serial or "")}
            assert {tls_serial, server_serial} <= revoked

    asyncio.run(check())

    # a TLS certificate renews as a TLS certificate; the server certificate does not renew
    assert run(settings, "pki", "issue", "--tls", "--csr", str(csr), "--out", str(tmp_path / "tls2.pem")) == 0
    tls2 = _serial(capsys.readouterr().out)
    assert run(settings, "pki", "renew", tls2, "--out", str(tmp_path / "tls3.pem")) == 0
    renewed = pki.load_certificates(tmp_path / "tls3.pem")[0]
    assert list(renewed.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [pki.CLIENT_AUTH]
    capsys.readouterr()
    assert run(settings, "pki", "renew", server_serial) == 2
    assert "issue-server" in capsys.readouterr().out
