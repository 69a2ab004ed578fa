"""``hub backup`` / ``hub restore`` on the real PostgreSQL and RabbitMQ (issue 13): a backup taken while messages
flow restores onto an empty database and state directory; the restored hub's ``hub evidence verify`` passes and it
delivers the messages that were queued while no hub ran. The file is encrypted: a wrong passphrase or a changed byte
restores nothing, and restore refuses a database or state directory that is not empty."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from conftest import ADMIN_DSN, _admin
from harness import Hub, document

from hub.backup import MAGIC
from hub.envelope import Recipient
from hub.settings import Settings

pytestmark = pytest.mark.integration

G = "county-bureaus:220100"
PEERS = ("county-220182-oa", "county-220183-oa")
SENDER = "county-220122-oa"
PASS = "a-long-backup-passphrase"


async def test_a_backup_under_load_restores_to_a_hub_that_verifies_and_delivers_what_was_queued(
    fresh_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_BACKUP_PASSPHRASE", PASS)
    h = Hub(fresh_settings)
    await h.setup()
    restored_db = f"hub_test_restored_{uuid.uuid4().hex[:8]}"
    restored = fresh_settings.with_(
        pg_dsn=ADMIN_DSN.rsplit("/", 1)[0] + "/" + restored_db, state_dir=tmp_path / "restored-state"
    )
    worker = None
    try:
        await h.start_worker()
        # traffic before the backup, sealed by a checkpoint
        sent = [(await h.send(SENDER, document(SENDER, [Recipient.to_group(G)]))).message_id for _ in range(20)]
        for peer in PEERS:
            assert len(await h.drain(peer, expect=20, timeout=30)) == 20
        done = await h.cli("evidence", "checkpoint")
        assert done.returncode == 0, done.stderr

        # the backup runs while messages keep flowing
        backup = tmp_path / "hub.backup"
        flowing = True

        async def load() -> int:
            n = 0
            while flowing:
                await h.send(SENDER, document(SENDER, [Recipient.to_group(G)]))
                n += 1
                await asyncio.sleep(0.01)
            return n

        loader = asyncio.create_task(load())
        await asyncio.sleep(0.3)
        done = await h.cli("backup", "--out", str(backup))
        flowing = False
        during = await loader
        assert done.returncode == 0, done.stderr
        assert during > 5  # it really was taken under load
        data = backup.read_bytes()
        assert data.startswith(MAGIC) and b"BEGIN" not in data and b"evidence" not in data  # encrypted
        for peer in PEERS:  # every copy delivered during the backup taken now: what is queued later is the rest
            assert len(await h.drain(peer, expect=during, timeout=30)) == during, peer
        await h.stop_worker()

        # no hub runs: these wait in RabbitMQ
        queued = [(await h.send(SENDER, document(SENDER, [Recipient.to_group(G)]))).message_id for _ in range(15)]

        # wrong passphrase, changed byte: nothing restored
        bad = tmp_path / "bad.backup"
        bad.write_bytes(data[:-40] + bytes([data[-40] ^ 1]) + data[-39:])
        for env_pass, f in (("not-the-passphrase", backup), (PASS, bad)):
            monkeypatch.setenv("RESTORE_PASS", env_pass)
            done = await Hub(restored).cli("restore", str(f), "--passphrase-env", "RESTORE_PASS")
            assert done.returncode == 2 and "BACKUP_FAILED" in done.stderr and "does not decrypt" in done.stderr
            assert not restored.state_dir.exists()

        # restore onto an empty database (created) and an empty state directory
        done = await Hub(restored).cli("restore", str(backup))
        assert done.returncode == 0, done.stderr
        assert (restored.state_dir / "pki" / "hub" / "hub.key").stat().st_mode & 0o077 == 0
        done = await Hub(restored).cli("evidence", "verify")
        assert done.returncode == 0 and "证据链完整" in done.stdout, done.stdout + done.stderr
        # … and not twice
        done = await Hub(restored).cli("restore", str(backup))
        assert done.returncode == 2 and "not empty" in done.stderr

        restored_home = await worker_state_dir(restored)
        assert restored_home == str(restored.state_dir)  # the store now names where its installation lives

        # the restored hub serves traffic: what was queued is delivered and answered
        from hub.pipeline.worker import Worker

        worker = Worker(restored, 0)
        await worker.start()
        for peer in PEERS:
            got = await h.drain(peer, expect=15, timeout=30)
            assert sorted(e.message_id for _, e in got) == sorted(queued)
        async with worker.pool.acquire() as conn:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                n = await conn.fetchval(
                    "SELECT count(*) FROM messages WHERE message_id = ANY($1::uuid[]) AND state = 'accepted'",
                    [uuid.UUID(m) for m in queued + sent],
                )
                if n == len(queued) + len(sent):
                    break
                await asyncio.sleep(0.1)
            assert n == len(queued) + len(sent)  # the messages before the backup are in the restored store
        done = await Hub(restored).cli("evidence", "checkpoint")
        assert done.returncode == 0, done.stderr
        done = await Hub(restored).cli("evidence", "verify")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        if worker is not None:
            await worker.stop()
        await h.close()
        await _admin(f'DROP DATABASE IF EXISTS "{restored_db}" WITH (FORCE)')


async def worker_state_dir(settings: Settings) -> str:
    from hub.store.db import connection

    async with connection(settings.pg_dsn) as conn:
        return str(await conn.fetchval("SELECT state_dir FROM hub_installation"))
