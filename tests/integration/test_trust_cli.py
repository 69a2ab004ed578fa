"""The CA commands against the real PostgreSQL: ``hub pki init/issue/renew/revoke/crl/list``, ``hub keygen``,
``hub sign``, ``hub verify``, the certificate register (hub.store.certificates), and a clear DELIVERY_STORE when
the database is unreachable."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.commands.pki import register
from hub.envelope import parse
from hub.errors import HubError, StoreUnavailable
from hub.settings import PROJECT_ROOT, Settings
from hub.store.certificates import CertificateRepository
from hub.store.db import connection
from hub.trust import TrustStore, Verifier, pki

pytestmark = pytest.mark.integration

AGENCY = "11220100013544550M"
SYSTEM = "city-220100-oa"
SAMPLE = next(
    p
    for p in (
        PROJECT_ROOT / "schemas/services/document.official/1/samples/valid/typical-notice.xml",
        PROJECT_ROOT / "schemas/services/document.receipt/1/samples/valid/handled.xml",
    )
    if p.exists()
)


def run(settings: Settings, *argv: str) -> int:
    """Run one of the trust commands as hub.cli does (HubError → exit 2 with CODE on stderr)."""
    parser = argparse.ArgumentParser(prog="hub")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    try:
        return args.handler(args, settings)
    except HubError as exc:
        print(f"hub: {exc.describe()}")
        return 2


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    # A database and a state directory (and so a PKI) of this module's own: one installation per store (issue 13).
    import uuid

    from conftest import ADMIN_DSN, _admin

    name = f"hub_test_cli_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield integration_settings.with_(
            ca_passphrase="cli-test-passphrase",
            state_dir=tmp_path_factory.mktemp("trust"),
            pg_dsn=ADMIN_DSN.rsplit("/", 1)[0] + "/" + name,
        )
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _unsigned(tmp: Path, agency: str, system: str) -> Path:
    data = SAMPLE.read_bytes()
    data = re.sub(
        rb'<env:Sender agency="[^"]*" system="[^"]*"/>',
        f'<env:Sender agency="{agency}" system="{system}"/>'.encode(),
        data,
        count=1,
    )
    f = tmp / "unsigned.xml"
    f.write_bytes(data)
    return f


def test_the_whole_ca_workflow(settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki_dir = Path(settings.state_dir) / "pki"
    assert run(settings, "pki", "init") == 0
    assert "hub CA created" in capsys.readouterr().out
    assert run(settings, "pki", "init") == 2  # never overwrites a CA
    assert "already exists" in capsys.readouterr().out

    # agency side: key + CSR; the key stays, mode 0600
    agent = tmp_path / "agent"
    assert run(settings, "keygen", "--system", SYSTEM, "--agency", AGENCY, "--out", str(agent)) == 0
    key, csr = agent / f"{SYSTEM}.key", agent / f"{SYSTEM}.csr"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and csr.read_bytes().startswith(b"-----BEGIN CERTIFICATE REQUEST")
    assert run(settings, "keygen", "--system", SYSTEM, "--agency", AGENCY, "--out", str(agent)) == 2  # no overwrite
    capsys.readouterr()

    # the CA issues from the CSR
    cert = agent / f"{SYSTEM}.pem"
    assert run(settings, "pki", "issue", "--csr", str(csr), "--out", str(cert)) == 0
    serial = re.search(r"issued ([0-9a-f]+) for", capsys.readouterr().out).group(1)  # type: ignore[union-attr]
    assert len(pki.load_certificates(cert)) == 2

    # sign and verify
    signed = tmp_path / "signed.xml"
    assert (
        run(
            settings,
            "sign",
            "--key",
            str(key),
            "--cert",
            str(cert),
            str(_unsigned(tmp_path, AGENCY, SYSTEM)),
            str(signed),
        )
        == 0
    )
    assert run(settings, "verify", str(signed)) == 0
    assert f"ok: signed by {AGENCY}/{SYSTEM} (certificate {serial}" in capsys.readouterr().out

    # list shows it with days to expiry
    assert run(settings, "pki", "list") == 0
    listing = capsys.readouterr().out
    line = next(ln for ln in listing.splitlines() if ln.startswith(serial))
    assert "agency" in line and "valid" in line and re.search(r"\s36[45]$", line)
    assert re.search(r"^[0-9a-f]+\s+root\s", listing, re.M) and re.search(r"\shub\s+\S+/hub\s", listing)

    # renew: same key, new serial, still verifies
    renewed = agent / "renewed.pem"
    assert run(settings, "pki", "renew", serial, "--out", str(renewed)) == 0
    capsys.readouterr()

    # revoke: the CRL is republished and verification refuses at once (a new TrustStore, as a restart would)
    assert run(settings, "pki", "revoke", serial, "--reason", "key-compromise") == 0
    out = capsys.readouterr().out
    assert f"revoked {serial}" in out and "published CRL #2 of the issuing CA (1 revoked)" in out
    assert run(settings, "verify", str(signed)) == 1
    assert capsys.readouterr().out.startswith("CERT_REVOKED: ")
    assert run(settings, "pki", "renew", serial) == 2  # a revoked certificate does not renew

    # signing with the renewed certificate (same key) works again
    signed2 = tmp_path / "signed2.xml"
    assert (
        run(
            settings,
            "sign",
            "--key",
            str(key),
            "--cert",
            str(renewed),
            str(_unsigned(tmp_path, AGENCY, SYSTEM)),
            str(signed2),
        )
        == 0
    )
    assert run(settings, "verify", str(signed2)) == 0
    capsys.readouterr()

    # crl: both CRLs republished with increasing numbers, fresh for HUB_CRL_HOURS
    assert run(settings, "pki", "crl", "--hours", "6") == 0
    out = capsys.readouterr().out
    assert "root     CRL #2: 0 revoked" in out and "issuing  CRL #3: 1 revoked" in out
    store = TrustStore.load(pki_dir)
    crl = store.crl_for(store.issuing[0])
    assert crl is not None and crl.next_update - crl.this_update <= dt.timedelta(hours=6, minutes=5)

    # the register
    async def check_register() -> None:
        async with connection(settings.pg_dsn) as conn:
            repo = CertificateRepository(conn)
            row = await repo.get(serial)
            assert row is not None and row.state(dt.datetime.now(dt.UTC)) == "revoked"
            assert row.revocation_reason == "key-compromise" and row.kind == "agency" and row.agency == AGENCY
            renewed_rows = [r for r in await repo.certificates(agency=AGENCY) if r.renews == serial]
            assert len(renewed_rows) == 1
            assert [r.serial for r in await repo.revoked_under(row.issuer_serial or "")] == [serial]
            assert await repo.next_crl_number(row.issuer_serial or "") == 4

    asyncio.run(check_register())

    # the periodic re-publication the hub process runs: nothing to do while fresh, publishes past half-life
    from hub.commands import trust_admin as admin

    assert asyncio.run(admin.refresh_crls_if_due(settings, pki_dir)) is False
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=4)
    assert asyncio.run(admin.refresh_crls_if_due(settings, pki_dir, now=later)) is True
    assert TrustStore.load(pki_dir).crl_for(store.issuing[0]).number == 4  # type: ignore[union-attr]

    # the hub's own identity signs, and its signature verifies against the same store
    from hub.trust import Signer

    hub_signer = Signer.load(
        pki_dir / "hub" / "hub.key", pki_dir / "hub" / "hub.pem", passphrase=settings.ca_passphrase.encode()
    )
    root = parse(_unsigned(tmp_path, hub_signer.identity.agency, "hub").read_bytes())
    assert Verifier(store).verify(
        parse(__import__("hub.envelope").envelope.to_bytes(hub_signer.sign(root)))
    ).signer == (hub_signer.identity)


def test_a_certificate_the_directory_does_not_register_is_pointed_out(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hub pki issue`` and ``renew`` print the new certificate's fingerprint; where the loaded directory registers
    the system's certificates (cert-sha256) and not this one, they say on stderr that it will be refused
    (CERT_NOT_REGISTERED) and give the attribute to write."""
    from cryptography import x509
    from directory_edits import with_system

    from hub.directory import load_directory
    from hub.store.directory import DirectoryRepository

    system, agency = "city-220200-oa", "112202000136132524"
    if not pki.is_initialised(Path(settings.state_dir) / "pki"):
        assert run(settings, "pki", "init") == 0
    agent = tmp_path / "agent"
    assert run(settings, "keygen", "--system", system, "--agency", agency, "--out", str(agent)) == 0
    capsys.readouterr()
    cert = agent / f"{system}.pem"
    assert run(settings, "pki", "issue", "--csr", str(agent / f"{system}.csr"), "--out", str(cert)) == 0
    first = pki.fingerprint(pki.load_certificates(cert)[0])
    got = capsys.readouterr()
    assert f"sha256 {first}" in got.out and "CERT_NOT_REGISTERED" not in got.out + got.err
    serial = pki.serial_hex(pki.load_certificates(cert)[0].serial_number)

    pinned = with_system(load_directory(PROJECT_ROOT / "routes" / "directory.xml"), system, cert_sha256=(first,))

    async def load() -> None:
        async with connection(settings.pg_dsn) as conn:
            await DirectoryRepository(conn).save(pinned)

    asyncio.run(load())
    renewed = agent / "renewed.pem"
    assert run(settings, "pki", "renew", serial, "--out", str(renewed)) == 0
    second = pki.fingerprint(pki.load_certificates(renewed)[0])
    got = capsys.readouterr()
    assert f"sha256 {second}" in got.out
    assert "CERT_NOT_REGISTERED" in got.err and f'cert-sha256="{first} {second}"' in got.err
    # where the operator finds every fingerprint: hub pki list --sha256
    assert run(settings, "pki", "list", "--sha256") == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].endswith("SHA256")
    assert any(line.endswith(second) for line in listing.splitlines())
    # without --out the PEM goes to stdout: the fingerprint (and the note) to stderr
    other = tmp_path / "other"
    assert run(settings, "keygen", "--system", system, "--agency", agency, "--out", str(other)) == 0
    capsys.readouterr()
    assert run(settings, "pki", "issue", "--csr", str(other / f"{system}.csr"), "--out", "-") == 0
    got = capsys.readouterr()
    pem = x509.load_pem_x509_certificates(got.out.encode())[0]
    assert got.out.startswith("-----BEGIN CERTIFICATE") and f"sha256 {pki.fingerprint(pem)}" in got.err
    assert "CERT_NOT_REGISTERED" in got.err


def test_commands_that_need_the_database_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    down = Settings.from_env(pg_dsn="postgresql://postgres@127.0.0.1:1/nowhere", state_dir=tmp_path)
    for argv in (("pki", "init"), ("pki", "list"), ("pki", "crl"), ("pki", "revoke", "ab", "--reason", "superseded")):
        assert run(down, *argv) == 2
        assert "DELIVERY_STORE" in capsys.readouterr().out
    assert not (tmp_path / "pki").exists()  # nothing written when the register is unreachable


def test_repository_translates_a_lost_connection(settings: Settings) -> None:
    async def go() -> None:
        async with connection(settings.pg_dsn) as conn:
            repo = CertificateRepository(conn)
            await conn.close()
            with pytest.raises(StoreUnavailable) as exc:
                await repo.certificates()
            assert exc.value.code == "DELIVERY_STORE"

    asyncio.run(go())
