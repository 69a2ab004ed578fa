"""Evidence anchors (hub.store.anchors): a chain rewritten with its checkpoints left out, or cut back, is told from
the real one by the checkpoints written down outside the database (review of the store, 2026-12-07: before them,
`hub evidence verify` reported such a chain intact). Each test has a PostgreSQL database of its own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from evidence_kit import message_record, own_database

from hub.store import anchors, evidence, messages
from hub.store.records import MessageRecord

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def conn() -> AsyncIterator[asyncpg.Connection]:
    async with own_database("evanchor") as dsn:
        c = await asyncpg.connect(dsn)
        try:
            yield c
        finally:
            await c.close()


@pytest.fixture(autouse=True)
def _fresh_process_memory() -> None:
    anchors._anchored.clear()  # each test is "a process" of its own


_record = message_record


def _signer() -> tuple[Callable[[bytes], bytes], Callable[..., bool], str]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    fp = "cafe" * 16

    def sign(payload: bytes) -> bytes:
        return key.sign(payload, ec.ECDSA(hashes.SHA256()))

    def verify(payload: bytes, signature: bytes, signer: str) -> bool:
        try:
            key.public_key().verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except Exception:
            return False
        return signer == fp

    return sign, verify, fp


async def _rewrite_chain(conn: asyncpg.Connection, edit: Callable[[list[dict[str, Any]]], None]) -> None:
    """What an intruder with the database and no hub key does: edit the records, leave out every checkpoint (it
    cannot sign new ones), recompute every hash, move the head."""
    rows = await conn.fetch("SELECT seq, at, kind, message_id, actor, detail FROM evidence ORDER BY seq")
    entries = [dict(r) for r in rows]
    edit(entries)
    out, prev, seq = [], evidence.GENESIS, 0
    for e in entries:
        if e["kind"] == "checkpoint":
            continue
        seq += 1
        mid = None if e["message_id"] is None else str(e["message_id"])
        h = evidence.entry_hash(seq, e["at"], e["kind"], mid, e["actor"], e["detail"], prev)
        out.append((seq, e["at"], e["kind"], e["message_id"], e["actor"], e["detail"], prev, h))
        prev = h
    await conn.execute("ALTER TABLE evidence DISABLE TRIGGER evidence_append_only")
    await conn.execute("ALTER TABLE evidence DISABLE TRIGGER evidence_no_truncate")
    await conn.execute("DELETE FROM evidence")
    await conn.executemany(
        "INSERT INTO evidence (seq, at, kind, message_id, actor, detail, prev_hash, hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        out,
    )
    await conn.execute("UPDATE evidence_head SET seq = $1, hash = $2", seq, prev)
    await conn.execute("ALTER TABLE evidence ENABLE TRIGGER evidence_append_only")
    await conn.execute("ALTER TABLE evidence ENABLE TRIGGER evidence_no_truncate")


async def _sealed_twice(conn: asyncpg.Connection, state: Path) -> tuple[MessageRecord, Callable[..., bool]]:
    sign, verify, fp = _signer()
    first = _record()
    await messages.record_batch(conn, [first])
    assert await anchors.anchor_checkpoint(conn, state, await evidence.checkpoint(conn, sign, fp))
    await messages.record_batch(conn, [_record()])
    assert await anchors.anchor_checkpoint(conn, state, await evidence.checkpoint(conn, sign, fp))
    return first, verify


async def test_a_chain_rewritten_without_its_checkpoints_is_caught_by_the_anchors(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    first, verify = await _sealed_twice(conn, tmp_path)
    path = anchors.anchors_path(tmp_path)
    assert len(anchors.read_anchors(path)[0]) == 2
    assert await evidence.verify_chain(conn, verify) == [] and await anchors.verify_anchors(conn, path) == []

    def edit(entries: list[dict[str, Any]]) -> None:  # whom the first message went to, in its sealed record
        for e in entries:
            if e["kind"] == "received" and str(e["message_id"]) == first.message_id:
                d = json.loads(e["detail"])
                d["to"] = ["county-9999-oa"]
                e["detail"] = evidence.canonical_detail(d)

    await _rewrite_chain(conn, edit)
    # what the chain alone shows: intact (the hole the anchors close); the deliveries as stored no longer match
    # whom the rewritten record says the message went to
    assert await evidence.verify_chain(conn, verify) == []
    reported = await evidence.verify_messages(conn)
    found = {p.kind: p.message for p in reported}
    assert len(reported) == 2 and sorted(found) == ["inserted", "removed"], reported
    assert "对 city-2201-oa 的投递" in found["inserted"] and "对 county-9999-oa 的投递" in found["removed"], found
    problems = await anchors.verify_anchors(conn, path)
    assert problems and {p.kind for p in problems} <= {"altered", "removed"}, problems
    assert "锚定" in problems[0].message


async def test_a_chain_cut_back_before_an_anchored_checkpoint_is_reported(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await _sealed_twice(conn, tmp_path)
    last = int(await conn.fetchval("SELECT max(seq) FROM evidence"))
    await conn.execute("ALTER TABLE evidence DISABLE TRIGGER evidence_append_only")
    await conn.execute("DELETE FROM evidence WHERE seq = $1", last)
    row = await conn.fetchrow("SELECT seq, hash FROM evidence ORDER BY seq DESC LIMIT 1")
    await conn.execute("UPDATE evidence_head SET seq = $1, hash = $2", row["seq"], row["hash"])
    await conn.execute("ALTER TABLE evidence ENABLE TRIGGER evidence_append_only")
    problems = await anchors.verify_anchors(conn, anchors.anchors_path(tmp_path))
    assert [(p.kind, p.seq) for p in problems] == [("removed", last)], problems


async def test_anchors_are_written_once_and_an_edited_line_is_reported(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    sign, _, fp = _signer()
    await messages.record_batch(conn, [_record()])
    seq = await evidence.checkpoint(conn, sign, fp)
    assert await anchors.anchor_checkpoint(conn, tmp_path, seq)
    # the periodic call returns the same checkpoint while nothing new was chained: no second line
    assert await evidence.checkpoint(conn, sign, fp) == seq
    assert not await anchors.anchor_checkpoint(conn, tmp_path, seq)
    path = anchors.anchors_path(tmp_path)
    assert len(path.read_text().splitlines()) == 1 and oct(path.stat().st_mode & 0o777) == "0o600"
    # another process (its own memory) anchoring the same checkpoint again: read once, still clean
    anchors._anchored.clear()
    assert await anchors.anchor_checkpoint(conn, tmp_path, seq)
    assert await anchors.verify_anchors(conn, path) == []
    with path.open("a") as f:
        f.write(f"{seq} {'0' * 64} not-a-time extra\n")
    problems = await anchors.verify_anchors(conn, path)
    assert [p.kind for p in problems] == ["anchor"] and "line 3" in problems[0].message


async def test_the_cli_anchors_its_checkpoints_and_verify_checks_them(fresh_settings: Any) -> None:
    """``hub evidence checkpoint`` anchors what it made; ``hub evidence verify`` counts the anchors and fails (exit 1)
    once the anchored checkpoint is gone from the chain."""

    from harness import Hub, document

    from hub.envelope import Recipient

    h = Hub(fresh_settings)
    await h.setup()
    try:
        await h.start_worker()
        await h.send("county-220122-oa", document("county-220122-oa", [Recipient.to("11220183013553609R")]))
        await h.drain("county-220183-oa", expect=1, timeout=30)
        done = await h.cli("evidence", "checkpoint")
        assert done.returncode == 0, done.stderr
        path = anchors.anchors_path(fresh_settings.state_dir)
        anchored, bad = anchors.read_anchors(path)
        assert anchored and not bad
        done = await h.cli("evidence", "verify")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{len(anchored)} anchored outside the database" in done.stdout
        await h.stop_worker()  # nothing chains or checkpoints while the intruder works
        anchored, _ = anchors.read_anchors(path)
        last = max(a.seq for a in anchored)
        async with h.pool.acquire() as c:
            await c.execute("ALTER TABLE evidence DISABLE TRIGGER evidence_append_only")
            await c.execute("DELETE FROM evidence WHERE seq >= $1", last)
            row = await c.fetchrow("SELECT seq, hash FROM evidence ORDER BY seq DESC LIMIT 1")
            await c.execute("UPDATE evidence_head SET seq = $1, hash = $2", row["seq"], row["hash"])
            await c.execute("ALTER TABLE evidence ENABLE TRIGGER evidence_append_only")
        done = await h.cli("evidence", "verify")
        assert done.returncode == 1 and "锚定的检查点不在证据链中" in done.stdout, done.stdout + done.stderr
    finally:
        await h.close()


async def test_a_write_cut_short_is_not_taken_for_an_edit(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A full disk can leave the start of a line without its newline: it was joined onto by the next append and read
    as "edited" on every later verify. The next anchor now starts a line of its own and the fragment is skipped."""
    sign, _, fp = _signer()
    await messages.record_batch(conn, [_record()])
    first = await evidence.checkpoint(conn, sign, fp)
    assert await anchors.anchor_checkpoint(conn, tmp_path, first)
    path = anchors.anchors_path(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole + whole[:30])  # the next write cut short after 30 bytes
    await messages.record_batch(conn, [_record()])
    second = await evidence.checkpoint(conn, sign, fp)
    assert await anchors.anchor_checkpoint(conn, tmp_path, second)
    found, bad = anchors.read_anchors(path)
    assert [a.seq for a in found] == [first, second] and bad == []
    assert await anchors.verify_anchors(conn, path) == []
