"""Who may seal the evidence chain, and what `hub backup` says about the database (review of the store, 2026-12-07).

Each test runs on a PostgreSQL database of its own (``evtrust_<random>``), dropped afterwards."""

from __future__ import annotations

import argparse
import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from evidence_kit import message_record, own_database

from hub.store import evidence, messages

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def dsn() -> AsyncIterator[str]:
    async with own_database("evtrust") as d:
        yield d


_record = message_record


async def _reseal(conn: asyncpg.Connection, sign: Callable[[bytes], bytes], signer: str) -> None:
    """What an intruder with the database and some certified key does: append a checkpoint record signed with that
    key over the current head, hashes recomputed, the append-only triggers switched off for the moment."""
    head_seq, head_hash = await evidence.head(conn)
    detail = evidence.canonical_detail(
        {
            "covers": head_seq,
            "head": head_hash.hex(),
            "signer": signer,
            "signature": base64.b64encode(sign(evidence.checkpoint_payload(head_seq, head_hash))).decode(),
        }
    )
    at = datetime.now(UTC)
    seq = head_seq + 1
    h = evidence.entry_hash(seq, at, "checkpoint", None, "hub", detail, head_hash)
    await conn.execute("ALTER TABLE evidence DISABLE TRIGGER evidence_append_only")
    await conn.execute(
        "INSERT INTO evidence (seq, at, kind, message_id, actor, detail, prev_hash, hash)"
        " VALUES ($1, $2, 'checkpoint', NULL, 'hub', $3, $4, $5)",
        seq,
        at,
        detail,
        head_hash,
        h,
    )
    await conn.execute("UPDATE evidence_head SET seq = $1, hash = $2", seq, h)
    await conn.execute("ALTER TABLE evidence ENABLE TRIGGER evidence_append_only")


async def test_a_certificate_marked_hub_in_the_register_cannot_sign_checkpoints(dsn: str, tmp_path: Path) -> None:
    """The checkpoint verifier took every certificate the database's register calls kind 'hub'. An agency system's
    key (certified by the hub CA for that system) signed a checkpoint that verified once its register row said
    'hub'; it is refused now: the certificate itself must be the hub's signing certificate (CN hub)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from hub.commands import trust_admin as admin
    from hub.settings import Settings
    from hub.trust import keys, pki

    settings = Settings.from_env(pg_dsn=dsn, namespace=f"evtrust-{uuid.uuid4().hex[:6]}", state_dir=tmp_path / "st")
    pki_dir = settings.state_dir / "pki"
    await admin.init(settings, pki_dir)
    agency_key = ec.generate_private_key(ec.SECP256R1())
    csr = pki.make_csr(agency_key, pki.DEFAULT_HUB_AGENCY, "city-2201-oa").public_bytes(serialization.Encoding.PEM)
    issued = await admin.issue(settings, pki_dir, csr)

    def agency_sign(payload: bytes) -> bytes:
        return keys.der_to_raw(agency_key.sign(payload, ec.ECDSA(hashes.SHA256())), agency_key)

    c = await asyncpg.connect(dsn)
    try:
        await messages.record_batch(c, [_record()])
        await evidence.chain_pending(c, wait=True)
        await _reseal(c, agency_sign, issued.fingerprint)
        unknown = await evidence.verify_chain(c, await admin.installation_checkpoint_verifier(settings, pki_dir))
        assert [p.kind for p in unknown] == ["checkpoint"] and "证书未知" in unknown[0].message
        await c.execute("UPDATE trust_certificates SET kind = 'hub' WHERE serial = $1", issued.serial)
        problems = await evidence.verify_chain(c, await admin.installation_checkpoint_verifier(settings, pki_dir))
    finally:
        await c.close()
    assert [p.kind for p in problems] == ["checkpoint"], problems
    assert "证书不是枢纽签名证书" in problems[0].message and "'city-2201-oa'" in problems[0].message


async def test_the_hubs_own_checkpoints_still_verify(dsn: str, tmp_path: Path) -> None:
    """The control: checkpoints the hub signs with its own key (as the workers do) verify with the same verifier."""
    from hub.commands import trust_admin as admin
    from hub.settings import Settings
    from hub.trust import Signer
    from hub.trust.pki import PkiPaths

    settings = Settings.from_env(pg_dsn=dsn, namespace=f"evtrust-{uuid.uuid4().hex[:6]}", state_dir=tmp_path / "st")
    pki_dir = settings.state_dir / "pki"
    await admin.init(settings, pki_dir)
    paths = PkiPaths(pki_dir)
    signer = Signer.load(paths.hub_key, paths.hub_cert, passphrase=settings.ca_passphrase.encode())
    c = await asyncpg.connect(dsn)
    try:
        await messages.record_batch(c, [_record()])
        assert await evidence.checkpoint(c, signer.sign_bytes, signer.identity.fingerprint) is not None
        assert await evidence.verify_chain(c, await admin.installation_checkpoint_verifier(settings, pki_dir)) == []
    finally:
        await c.close()


async def test_hub_backup_does_not_print_the_database_password(
    dsn: str, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    """``_libpq`` keeps a ``?password=`` DSN parameter off pg_dump's command line; the summary line then printed it
    (the manifest's ``database`` was everything after the DSN's last '/', its query included)."""
    from hub import backup
    from hub.commands import trust_admin as admin
    from hub.settings import Settings

    secret_dsn = dsn + "?password=S3cret-Db-Pw"  # trust auth here ignores it; an md5/scram server needs it
    settings = Settings.from_env(
        pg_dsn=secret_dsn, namespace=f"evtrust-{uuid.uuid4().hex[:6]}", state_dir=tmp_path / "st"
    )
    await admin.init(settings, settings.state_dir / "pki")
    monkeypatch.setenv("HUB_BACKUP_PASSPHRASE", "a-long-backup-passphrase")
    args = argparse.Namespace(out=str(tmp_path / "hub.fxb"), passphrase_env="HUB_BACKUP_PASSPHRASE")
    assert await asyncio.to_thread(backup.cmd_backup, args, settings) == 0
    out = capsys.readouterr()
    assert "S3cret-Db-Pw" not in out.out + out.err, out.out
    assert dsn.rsplit("/", 1)[-1] in out.out  # the database is still named


def test_restore_creates_its_database_with_the_dsns_parameters() -> None:
    """Creating the restore's database went through ``…/postgres`` without the DSN's query: a password or sslmode
    given there was dropped, and the connection failed on any server that asks for them."""
    from hub.backup import _admin_dsn, _database_name

    dsn = "postgresql://hub@db.example:5432/hub_restored?password=S3cret&sslmode=require"
    assert _admin_dsn(dsn) == "postgresql://hub@db.example:5432/postgres?password=S3cret&sslmode=require"
    assert _database_name(dsn) == "hub_restored"
    assert _admin_dsn("postgresql://postgres@127.0.0.1/hub") == "postgresql://postgres@127.0.0.1/postgres"
