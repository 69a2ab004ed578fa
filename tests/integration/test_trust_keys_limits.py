"""Key lifecycle, backup and evidence limits (review) on the real PostgreSQL and RabbitMQ, through ``hub.cli``:

- ``hub pki rotate --days 0/-1`` and ``renew --days 0`` are refused (1 to 825 days) and the running worker keeps
  signing with its key; ``hub pki revoke`` of the hub's current certificate or the current issuing CA is refused
  (PKI_REVOKE_CURRENT: rotate first), the old certificate is revoked after a rotation;
- ``hub backup`` / ``restore`` never put the database password on pg_dump's command line, and the restored state
  directory and its secret folders are 0700;
- ``hub evidence verify`` notices the end of the log cut off with its checkpoint and the head moved back."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import ADMIN_DSN, _admin
from harness import Hub, document

from hub.envelope import Recipient
from hub.settings import Settings
from hub.trust import pki

pytestmark = pytest.mark.integration

G = "county-bureaus:220100"
PEERS = ("county-220182-oa", "county-220183-oa")
SENDER = "county-220122-oa"
PASS = "a-long-backup-passphrase"


async def traffic(h: Hub, n: int) -> None:
    for _ in range(n):
        await h.send(SENDER, document(SENDER, [Recipient.to_group(G)]))
    for peer in PEERS:
        assert len(await h.drain(peer, expect=n, timeout=30)) == n


async def cli(h: Hub, *argv: str) -> subprocess.CompletedProcess[str]:
    return await h.cli(*argv)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_no_dead_certificate_no_revoking_what_the_hub_uses(fresh_settings: Settings, tmp_path: Path) -> None:
    h = Hub(fresh_settings)
    await h.setup()
    paths = pki.PkiPaths(fresh_settings.state_dir / "pki")
    try:
        await h.start_worker()
        assert h.worker is not None
        await traffic(h, 2)
        signing = h.worker.signer.identity.fingerprint
        hub_files = (paths.hub_cert.read_bytes(), paths.hub_key.read_bytes())

        for days in ("0", "-1", "826"):
            done = await cli(h, "pki", "rotate", "--days", days)
            assert done.returncode == 2, (days, done.stdout, done.stderr)
            assert done.stderr.startswith("hub: CONFIG: 配置错误 — a certificate is valid for 1 to 825 days"), (
                done.stderr
            )
        assert (paths.hub_cert.read_bytes(), paths.hub_key.read_bytes()) == hub_files
        async with h.pool.acquire() as conn:
            agency = await conn.fetchval("SELECT serial FROM trust_certificates WHERE kind = 'agency' LIMIT 1")
            hubs = await conn.fetchval("SELECT count(*) FROM trust_certificates WHERE kind = 'hub'")
        assert hubs == 1  # nothing registered either
        for days in ("0", "99999"):
            done = await cli(h, "pki", "renew", agency, "--days", days, "--out", str(tmp_path / f"r{days}.pem"))
            assert done.returncode == 2 and "a certificate is valid for 1 to 825 days" in done.stderr, done.stderr
            assert not (tmp_path / f"r{days}.pem").exists()

        current = pki.serial_hex(pki.load_certificates(paths.hub_cert)[0].serial_number)
        issuing = pki.serial_hex(pki.load_certificates(paths.issuing_cert)[0].serial_number)
        for serial, then in ((current, "先运行 hub pki rotate"), (issuing, "先运行 hub pki rollover-issuing")):
            done = await cli(h, "pki", "revoke", serial, "--reason", "key-compromise")
            assert done.returncode == 2, done.stdout
            assert done.stderr.startswith("hub: PKI_REVOKE_CURRENT: 不能吊销枢纽正在使用的证书 — "), done.stderr
            assert then in done.stderr and "first" in done.stderr
        async with h.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM trust_revocations") == 0

        await asyncio.sleep(2.5)  # the worker looks at the key files every 2 s
        assert h.worker.signer.identity.fingerprint == signing
        await traffic(h, 1)  # still delivered: signed with a valid, unrevoked certificate
        assert (await cli(h, "evidence", "checkpoint")).returncode == 0
        done = await cli(h, "evidence", "verify")
        assert done.returncode == 0, done.stdout

        # The documented order: rotate, then revoke the old one.
        assert (await cli(h, "pki", "rotate")).returncode == 0
        deadline = time.monotonic() + 10
        while h.worker.signer.identity.fingerprint == signing and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert h.worker.signer.identity.fingerprint != signing
        done = await cli(h, "pki", "revoke", current, "--reason", "key-compromise")
        assert done.returncode == 0, done.stderr
        await traffic(h, 1)
        assert (await cli(h, "evidence", "checkpoint")).returncode == 0
        done = await cli(h, "evidence", "verify")
        assert done.returncode == 0, done.stdout
    finally:
        await h.close()


async def test_backup_hides_the_password_restore_keeps_secrets_private_verify_sees_a_cut_off_end(
    fresh_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_BACKUP_PASSPHRASE", PASS)
    h = Hub(fresh_settings)
    await h.setup()
    restored_db = f"hub_test_restored_{uuid.uuid4().hex[:8]}"
    restored = fresh_settings.with_(
        pg_dsn=ADMIN_DSN.rsplit("/", 1)[0] + "/" + restored_db, state_dir=tmp_path / "restored-state"
    )
    try:
        await h.start_worker()
        await traffic(h, 5)
        assert (await cli(h, "evidence", "checkpoint")).returncode == 0
        await traffic(h, 3)
        await h.stop_worker()
        assert (await cli(h, "evidence", "verify")).returncode == 0

        # pg_dump sees the DSN without its password; the password travels in its environment
        shim = tmp_path / "bin"
        shim.mkdir()
        log = tmp_path / "argv.log"
        real = subprocess.run(["sh", "-c", "command -v pg_dump"], capture_output=True, text=True).stdout.strip()
        (shim / "pg_dump").write_text(
            f'#!/bin/sh\necho "argv: $*" >> {log}\necho "env: $PGPASSWORD" >> {log}\nexec {real} "$@"\n'
        )
        (shim / "pg_dump").chmod(0o755)
        secret = "S3cret-DB-pass"
        with_password = fresh_settings.with_(pg_dsn=fresh_settings.pg_dsn.replace("postgres@", f"postgres:{secret}@"))
        assert secret in with_password.pg_dsn
        env = {**with_password.to_env(), "PATH": f"{shim}:{os.environ['PATH']}", "HUB_BACKUP_PASSPHRASE": PASS}
        backup = tmp_path / "hub.backup"
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "hub.cli", "backup", "--out", str(backup)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        argv, child_env = log.read_text().splitlines()
        assert secret not in argv and "--dbname=postgresql://postgres@" in argv
        assert child_env == f"env: {secret}"

        # restore: the state directory and the folders with secrets are 0700, as the original
        original = fresh_settings.state_dir
        done = await Hub(restored).cli("restore", str(backup))
        assert done.returncode == 0, done.stderr
        assert mode(restored.state_dir) == 0o700
        secret_dirs = {p.parent for p in original.rglob("*") if p.is_file() and mode(p) & 0o077 == 0}
        secret_dirs |= {original / d for d in ("pki", "pki/hub", "systems", "amqp-users") if (original / d).is_dir()}
        assert original / "pki" / "hub" in secret_dirs
        for d in secret_dirs:
            assert mode(restored.state_dir / d.relative_to(original)) == 0o700, d
        done = await Hub(restored).cli("evidence", "verify")
        assert done.returncode == 0, done.stdout

        # the end of the log cut off, its checkpoint included, and the head moved back
        async with h.pool.acquire() as conn:
            cp = await conn.fetchval("SELECT max(seq) FROM evidence WHERE kind = 'checkpoint'")
            keep = cp - 3
            row = await conn.fetchrow("SELECT seq, hash FROM evidence WHERE seq = $1", keep)
            lost = {
                str(r["message_id"])
                for r in await conn.fetch("SELECT message_id FROM evidence WHERE seq > $1 AND kind = 'received'", keep)
            }
            await conn.execute("ALTER TABLE evidence DISABLE TRIGGER USER")
            await conn.execute("DELETE FROM evidence WHERE seq > $1", keep)
            await conn.execute("ALTER TABLE evidence ENABLE TRIGGER USER")
            await conn.execute("UPDATE evidence_head SET seq = $1, hash = $2", row["seq"], row["hash"])
        assert len(lost) >= 3  # the messages after the checkpoint at least
        done = await cli(h, "evidence", "verify")
        assert done.returncode == 1, done.stdout
        lines = done.stdout.splitlines()
        missing = [ln for ln in lines if "has no evidence record of its receipt" in ln]
        assert {ln.split()[3] for ln in missing} == lost, lines
        assert all(ln.startswith("chain: removed: 报文 ") for ln in missing)
        assert "证据链被篡改" in done.stderr
    finally:
        await h.close()
        await _admin(f'DROP DATABASE IF EXISTS "{restored_db}" WITH (FORCE)')


async def test_the_gateways_current_server_certificate_is_not_revoked_before_it_is_replaced(
    fresh_settings: Settings,
) -> None:
    """``hub pki list`` shows every server certificate "valid": revoking the one the gateway serves (easy to pick by
    mistake) was accepted, and /ready and ``hub pki expiry`` still said OK while clients failed their handshakes.
    Refused PKI_REVOKE_CURRENT now, as for the hub's signing certificate; after ``issue-server`` the old one goes."""
    h = Hub(fresh_settings)
    await h.setup()
    paths = pki.PkiPaths(fresh_settings.state_dir / "pki")
    try:
        assert (await cli(h, "pki", "issue-server", "--host", "127.0.0.1")).returncode == 0
        serving = pki.serial_hex(pki.load_certificates(paths.gateway_cert)[0].serial_number)
        done = await cli(h, "pki", "revoke", serving, "--reason", "superseded")
        assert done.returncode == 2, done.stdout
        assert done.stderr.startswith("hub: PKI_REVOKE_CURRENT: 不能吊销枢纽正在使用的证书 — "), done.stderr
        assert "hub pki issue-server" in done.stderr and "gateway's current server certificate" in done.stderr
        assert (await cli(h, "pki", "issue-server", "--host", "127.0.0.1")).returncode == 0
        assert pki.serial_hex(pki.load_certificates(paths.gateway_cert)[0].serial_number) != serving
        done = await cli(h, "pki", "revoke", serving, "--reason", "superseded")
        assert done.returncode == 0, done.stderr
        # hub pki list marks the one served "current" and shows the revocation's reason whole (it cut it at 13)
        listed = await cli(h, "pki", "list")
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:] if line.strip()}
        now_serving = pki.serial_hex(pki.load_certificates(paths.gateway_cert)[0].serial_number)
        assert " current " in rows[now_serving] and " server " in rows[now_serving]
        assert "revoked (superseded)" in rows[serving]
    finally:
        await h.close()
