"""hub.store against the real PostgreSQL: recording, deduplication, tracking, quarantine and the evidence chain.

The module uses a database of its own (created from the session's migrated one) so that the tampering tests and
the chain assertions are independent of other test modules writing evidence."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from hub.errors import HubError, StoreUnavailable
from hub.store import evidence, messages
from hub.store.db import migrate
from hub.store.records import DeliveryRecord, DeliveryUpdate, MessageRecord, ReceiptRecord, Rejection

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
AGENCY = "11220000MB0000000X"


@pytest_asyncio.fixture(scope="module")
async def dsn(pg_dsn: str) -> AsyncIterator[str]:
    base, name = pg_dsn.rsplit("/", 1)
    own = f"{name}_store"
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{own}"')
    finally:
        await admin.close()
    try:
        await migrate(f"{base}/{own}")
        yield f"{base}/{own}"
    finally:
        admin = await asyncpg.connect(f"{base}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{own}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest_asyncio.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(dsn)
    try:
        yield c
    finally:
        await c.close()


def record(
    mid: str | None = None,
    *,
    to: tuple[str, ...] = ("city-2201-oa", "city-2202-oa"),
    blocked: tuple[str, ...] = (),
    state: str = "accepted",
    markings: tuple[str, ...] = (),
    raw: bytes | None = None,
) -> MessageRecord:
    mid = mid or str(uuid.uuid4())
    deliveries = tuple(DeliveryRecord(AGENCY, s, "to") for s in to) + tuple(
        DeliveryRecord(AGENCY, s, "cc", "blocked", "GATE_CLASSIFICATION") for s in blocked
    )
    return MessageRecord(
        message_id=mid,
        conversation_id=str(uuid.uuid4()),
        sender_agency=AGENCY,
        sender_system="prov-oa",
        service="document.official",
        version=1,
        classification=1,
        classification_label="内部",
        urgency="平件",
        created=NOW,
        expires=NOW + timedelta(days=1),
        raw=raw if raw is not None else f"<Envelope id='{mid}'>\r\n  签名 </Envelope>".encode(),
        deliveries=deliveries,
        signer_serial=123456789012345678901234567890,
        signer_fingerprint="ab" * 32,
        state=state,  # type: ignore[arg-type]
        markings=markings,
    )


async def count(conn, sql: str, *args) -> int:
    return int(await conn.fetchval(sql, *args))


def test_ids_travel_as_canonical_texts_in_primary_key_order() -> None:
    ids = [uuid.uuid4() for _ in range(300)]
    given = [str(u).upper() if i % 3 == 0 else (u if i % 3 == 1 else str(u)) for i, u in enumerate(ids)]
    texts = [messages._id_text(g) for g in given]
    assert texts == [str(u) for u in ids]
    assert sorted(texts) == [str(u) for u in sorted(ids, key=lambda u: u.bytes)]  # PostgreSQL's uuid order
    for bad in ("not-a-uuid", "", "c314d7a4-1d94-5074-be1e-8bf63dc4208"):
        with pytest.raises(ValueError):
            messages._id_text(bad)


async def test_record_batch_dedups_in_the_batch_and_across_batches(conn):
    a, b = record(), record()
    seq_before, _ = await evidence.head(conn)
    out = await messages.record_batch(conn, [a, b, a])
    assert [(o.duplicate, o.in_batch) for o in out] == [(False, False), (False, False), (True, True)]
    assert out[0].to_deliver == ("city-2201-oa", "city-2202-oa") and out[0].needs_receipt
    assert out[2].to_deliver == () and not out[2].needs_receipt
    assert (
        await count(
            conn, "SELECT count(*) FROM messages WHERE message_id = ANY($1::uuid[])", [a.message_id, b.message_id]
        )
        == 2
    )
    assert await count(conn, "SELECT count(*) FROM deliveries WHERE message_id = $1", uuid.UUID(a.message_id)) == 2
    seq_after, _ = await evidence.head(conn)
    assert seq_after - seq_before == 2  # one "received" per new message, nothing for the duplicate

    again = await messages.record_batch(conn, [record(a.message_id.upper()), record()])
    assert again[0].duplicate and not again[0].in_batch and again[0].state == "accepted"
    # recorded but never delivered nor answered (a crash before the deliveries): the duplicate says what is left
    assert again[0].to_deliver == ("city-2201-oa", "city-2202-oa") and again[0].needs_receipt
    assert not again[1].duplicate
    assert (await evidence.head(conn))[0] - seq_after == 1

    await messages.record_sent(
        conn, [a.message_id], [ReceiptRecord(str(uuid.uuid4()), a.message_id, "hub.receipt", "prov-oa")]
    )
    done = await messages.record_batch(conn, [a])
    assert done[0].duplicate and done[0].to_deliver == () and not done[0].needs_receipt


async def test_the_signed_bytes_are_stored_exactly(conn):
    raw = b"<?xml version='1.0'?>\r\n<Envelope>\x00\xff\xfe \xe5\xaf\x86</Envelope>  \n"
    rec = record(raw=raw)
    await messages.record_batch(conn, [rec])
    row = await conn.fetchrow(
        "SELECT raw, raw_sha256, signer_serial, state FROM messages WHERE message_id = $1", uuid.UUID(rec.message_id)
    )
    assert bytes(row["raw"]) == raw
    assert bytes(row["raw_sha256"]) == hashlib.sha256(raw).digest()
    assert row["signer_serial"] == "123456789012345678901234567890" and row["state"] == "accepted"


async def test_blocked_recipients_are_recorded_with_evidence(conn):
    rec = record(to=("city-2201-oa",), blocked=("portal-www",))
    out = await messages.record_batch(conn, [rec])
    assert out[0].to_deliver == ("city-2201-oa",)
    states = {d.recipient_system: d for d in await messages.delivery_state(conn, rec.message_id)}
    assert states["portal-www"].state == "blocked" and states["portal-www"].error_code == "GATE_CLASSIFICATION"
    assert "blocked" in states["portal-www"].times
    await evidence.chain_pending(conn, wait=True)
    kinds = await conn.fetch(
        "SELECT kind, detail FROM evidence WHERE message_id = $1 ORDER BY seq", uuid.UUID(rec.message_id)
    )
    assert [k["kind"] for k in kinds] == ["received", "blocked"]
    assert "portal-www" in kinds[1]["detail"] and "GATE_CLASSIFICATION" in kinds[1]["detail"]
    assert "<Envelope" not in "".join(k["detail"] for k in kinds)  # never the payload


async def test_refused_intake_is_capped_and_never_claims_the_id(conn):
    claimed = str(uuid.uuid4())
    hostile = b"<!DOCTYPE x [<!ENTITY a 'b'>]>" + b"A" * (200 * 1024)
    await messages.record_rejection(
        conn,
        Rejection(hostile, "ENV_DOCTYPE", "the message has a DOCTYPE", claimed_message_id=claimed, amqp_user="hub.x"),
    )
    row = await conn.fetchrow("SELECT * FROM intake_rejections WHERE claimed_message_id = $1", claimed)
    assert len(row["raw"]) == messages.REJECTED_RAW_CAP and row["raw_size"] == len(hostile)
    assert bytes(row["raw_sha256"]) == hashlib.sha256(hostile).digest()
    await evidence.chain_pending(conn, wait=True)
    ev = await conn.fetchrow("SELECT kind, actor, message_id FROM evidence ORDER BY seq DESC LIMIT 1")
    assert (ev["kind"], ev["actor"], ev["message_id"]) == ("rejected", "hub.x", None)
    # the real, signed message with that id is still new
    out = await messages.record_batch(conn, [record(claimed)])
    assert not out[0].duplicate


async def test_a_verified_but_refused_message_is_recorded_as_rejected(conn):
    rec = dataclasses_replace(record(to=()), state="rejected", error_code="MSG_EXPIRED", error_reason="expired")
    out = await messages.record_batch(conn, [rec])
    assert out[0].state == "rejected" and out[0].to_deliver == () and out[0].needs_receipt
    await evidence.chain_pending(conn, wait=True)
    assert (
        await conn.fetchval("SELECT kind FROM evidence WHERE message_id = $1", uuid.UUID(rec.message_id)) == "rejected"
    )
    again = await messages.record_batch(conn, [rec])
    assert again[0].duplicate and again[0].to_deliver == ()


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


async def test_document_tracking_moves_forward_and_keeps_every_time(conn):
    rec = record(to=("city-2201-oa",))
    await messages.record_batch(conn, [rec])
    await messages.mark_delivered(conn, [rec.message_id])
    t_read = NOW + timedelta(minutes=5)
    t_received = NOW + timedelta(minutes=1)
    # read arrives before 签收 (received): the state does not move back, both times are kept
    updated = await messages.update_delivery_states(
        conn,
        [
            DeliveryUpdate(rec.message_id, "city-2201-oa", "read", t_read),
            DeliveryUpdate(rec.message_id, "city-2201-oa", "received", t_received),
            DeliveryUpdate(rec.message_id, "nobody", "read"),
        ],
    )
    assert len(updated) == 1
    [status] = await messages.delivery_state(conn, rec.message_id)
    assert status.state == "read"
    assert status.times["received"] == t_received and status.times["read"] == t_read
    assert {"pending", "delivered"} <= status.times.keys()
    handled = await messages.update_delivery_state(conn, rec.message_id, "city-2201-oa", "handled", actor="clerk-7")
    assert handled is not None and handled.state == "handled"
    await evidence.chain_pending(conn, wait=True)
    actor = await conn.fetchval(
        "SELECT actor FROM evidence WHERE message_id = $1 AND kind = 'delivery_state' ORDER BY seq DESC LIMIT 1",
        uuid.UUID(rec.message_id),
    )
    assert actor == "clerk-7"
    assert await messages.update_delivery_state(conn, rec.message_id, "nobody", "read") is None
    with pytest.raises(ValueError):
        await messages.update_delivery_state(conn, rec.message_id, "city-2201-oa", "blocked")


async def test_quarantine_release_and_reject(conn):
    held = record(state="quarantined", markings=("秘密★",))
    other = record(state="quarantined", markings=("机密★10年", "绝密"))
    out = await messages.record_batch(conn, [held, other])
    assert all(o.state == "quarantined" and o.to_deliver == () for o in out)
    pending = {q.message_id for q in await messages.quarantine_list(conn)}
    assert {held.message_id, other.message_id} <= pending
    shown = await messages.quarantine_show(conn, held.message_id)
    assert shown.raw == held.raw and shown.markings == ("秘密★",) and shown.status == "pending"

    released = await messages.quarantine_release(conn, held.message_id, "reviewer-li", "no real classified content")
    assert released.status == "released" and released.reviewer == "reviewer-li"
    assert [d.state for d in released.deliveries] == ["pending", "pending"]
    assert (await messages.record_batch(conn, [held]))[0].to_deliver == ("city-2201-oa", "city-2202-oa")
    with pytest.raises(HubError) as decided:
        await messages.quarantine_reject(conn, held.message_id, "reviewer-wang", "changed my mind")
    assert decided.value.code == "QUARANTINE_DECIDED"

    rejected = await messages.quarantine_reject(conn, other.message_id, "reviewer-wang", "contains 机密 content")
    assert rejected.status == "rejected"
    assert {(d.state, d.error_code) for d in rejected.deliveries} == {("blocked", "GATE_REJECTED")}
    states = dict(
        await conn.fetch(
            "SELECT message_id::text, state FROM messages WHERE message_id = ANY($1::uuid[])",
            [held.message_id, other.message_id],
        )
    )
    assert states == {held.message_id: "released", other.message_id: "quarantine_rejected"}
    await evidence.chain_pending(conn, wait=True)
    ev = await conn.fetch(
        "SELECT kind, actor, detail FROM evidence WHERE message_id = ANY($1::uuid[]) AND actor LIKE 'reviewer-%'",
        [held.message_id, other.message_id],
    )
    assert {(e["kind"], e["actor"]) for e in ev} == {
        ("released", "reviewer-li"),
        ("quarantine_rejected", "reviewer-wang"),
    }
    assert all("content" not in e["detail"] for e in ev)  # the free-text reason is only in the quarantine table
    assert {held.message_id, other.message_id}.isdisjoint(q.message_id for q in await messages.quarantine_list(conn))
    with pytest.raises(HubError) as missing:
        await messages.quarantine_show(conn, str(uuid.uuid4()))
    assert missing.value.code == "QUARANTINE_NOT_FOUND"


async def test_receipts_are_recorded_once(conn):
    rec = record()
    await messages.record_batch(conn, [rec])
    receipt = ReceiptRecord(str(uuid.uuid4()), rec.message_id, "hub.receipt", "prov-oa")
    blocked = ReceiptRecord(str(uuid.uuid4()), rec.message_id, "hub.error", "prov-oa", "GATE_CLASSIFICATION")
    before = (await evidence.head(conn))[0]
    await messages.record_sent(conn, [rec.message_id], [receipt, blocked])
    await messages.record_sent(conn, [rec.message_id], [receipt, blocked])  # a retried batch changes nothing
    assert (await evidence.head(conn))[0] - before == 1  # one "delivered" record carrying both answers, once
    row = await conn.fetchrow(
        "SELECT kind, detail FROM evidence WHERE message_id = $1 AND kind <> 'received'", uuid.UUID(rec.message_id)
    )
    detail = json.loads(row["detail"])
    assert row["kind"] == "delivered" and detail["to"] == ["city-2201-oa", "city-2202-oa"]
    assert detail["receipts"] == [
        {"receipt_id": receipt.receipt_id, "to": "prov-oa", "type": "hub.receipt"},
        {"code": "GATE_CLASSIFICATION", "receipt_id": blocked.receipt_id, "to": "prov-oa", "type": "hub.error"},
    ]
    assert row["detail"] == evidence.canonical_detail(detail)  # written in canonical form, as Python writes it

    # Answers sent without deliveries (an error for a refused message, a quarantined message's receipt) keep a
    # record of their own.
    held = record(to=())
    await messages.record_batch(conn, [held])
    error = ReceiptRecord(str(uuid.uuid4()), None, "hub.error", "prov-oa", "SIG_VALUE")
    held_receipt = ReceiptRecord(str(uuid.uuid4()), held.message_id, "hub.receipt", "prov-oa")
    before = (await evidence.head(conn))[0]
    await messages.record_sent(conn, [held.message_id], [error, held_receipt])
    assert await count(conn, "SELECT count(*) FROM receipts WHERE receipt_id = $1", uuid.UUID(error.receipt_id)) == 1
    await evidence.chain_pending(conn, wait=True)
    rows = await conn.fetch("SELECT kind, message_id, detail FROM evidence WHERE seq > $1 ORDER BY seq", before)
    assert [(r["kind"], r["message_id"] and str(r["message_id"])) for r in rows] == [
        ("receipt_sent", None),
        ("receipt_sent", held.message_id),
    ]
    assert json.loads(rows[0]["detail"])["code"] == "SIG_VALUE"
    assert all(r["detail"] == evidence.canonical_detail(json.loads(r["detail"])) for r in rows)


async def test_concurrent_batches_keep_the_chain_gapless_and_linear(dsn):
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=4)
    try:
        shared = [record() for _ in range(5)]  # every worker also records these: dedup under concurrency

        async def worker() -> None:
            for _ in range(10):
                await messages.record_batch(pool, [*(record() for _ in range(8)), *shared])

        await asyncio.gather(*(worker() for _ in range(4)))
        async with pool.acquire() as c:
            await evidence.chain_pending(c, wait=True)
            assert await c.fetchval("SELECT max(seq) = count(*) FROM evidence")
            assert (
                await count(
                    c,
                    "SELECT count(*) FROM messages WHERE message_id = ANY($1::uuid[])",
                    [r.message_id for r in shared],
                )
                == 5
            )
            assert await evidence.verify_chain(c) == []
    finally:
        await pool.close()


async def _tampered(conn, *statements) -> list:
    """Tamper inside a transaction that is rolled back: the problems verify_chain sees, then the chain is intact.
    Each statement is SQL text or a ``(sql, *args)`` tuple."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("ALTER TABLE evidence DISABLE TRIGGER evidence_append_only")
        for statement in statements:
            sql, *args = (statement,) if isinstance(statement, str) else statement
            await conn.execute(sql, *args)
        return await evidence.verify_chain(conn)
    finally:
        await tx.rollback()


async def test_verify_passes_then_finds_edits_deletions_and_swaps(conn):
    await messages.record_batch(conn, [record() for _ in range(6)])
    assert await evidence.verify_chain(conn) == []
    await evidence.chain_pending(conn, wait=True)
    last = int(await conn.fetchval("SELECT max(seq) FROM evidence"))
    k = last - 3

    edited = await _tampered(
        conn, f"UPDATE evidence SET detail = replace(detail, 'city-2202-oa', 'city-9999-oa') WHERE seq = {k}"
    )
    assert [(p.kind, p.seq) for p in edited] == [("altered", k)]

    removed = await _tampered(conn, f"DELETE FROM evidence WHERE seq = {k}")
    assert [(p.kind, p.seq) for p in removed] == [("removed", k)]

    swapped = await _tampered(
        conn,
        f"UPDATE evidence SET seq = 1000000000 WHERE seq = {k}",
        f"UPDATE evidence SET seq = {k} WHERE seq = {k + 2}",
        f"UPDATE evidence SET seq = {k + 2} WHERE seq = 1000000000",
    )
    assert [(p.kind, p.seq) for p in swapped] == [("reordered", k), ("reordered", k + 2)]

    tail = await _tampered(conn, f"DELETE FROM evidence WHERE seq >= {last - 1}")
    assert [(p.kind, p.seq) for p in tail] == [("removed", last - 1)]

    assert await evidence.verify_chain(conn) == []  # all of it was rolled back


async def test_the_evidence_table_refuses_updates_and_deletes(conn):
    await messages.record_batch(conn, [record()])
    with pytest.raises(asyncpg.exceptions.RaiseError):
        await conn.execute("UPDATE evidence SET actor = 'x' WHERE seq = 1")
    with pytest.raises(asyncpg.exceptions.RaiseError):
        await conn.execute("DELETE FROM evidence WHERE seq = 1")


async def test_checkpoints_are_signed_and_checked(conn):
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    fingerprint = "cafe" * 16

    def sign(payload: bytes) -> bytes:
        return key.sign(payload, ec.ECDSA(hashes.SHA256()))

    def verifier(public):
        def verify(payload: bytes, signature: bytes, signer: str) -> bool:
            if signer != fingerprint:
                return False
            try:
                public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                return False
            return True

        return verify

    await messages.record_batch(conn, [record()])
    seq = await evidence.checkpoint(conn, sign, fingerprint)
    assert seq is not None and seq == (await evidence.head(conn))[0]
    assert await evidence.checkpoint(conn, sign, fingerprint) == seq  # nothing new to seal: no second checkpoint
    assert await evidence.verify_chain(conn, verifier(key.public_key())) == []
    wrong_key = await evidence.verify_chain(conn, verifier(other.public_key()))
    assert [(p.kind, p.seq) for p in wrong_key] == [("checkpoint", seq)]

    # rewriting the record a checkpoint sealed, even with a recomputed hash, breaks the seal
    sealed = seq - 1
    await evidence.chain_pending(conn, wait=True)
    row = await conn.fetchrow("SELECT * FROM evidence WHERE seq = $1", sealed)
    forged_detail = row["detail"].replace("平件", "特急")
    forged_hash = evidence.entry_hash(
        sealed,
        row["at"],
        row["kind"],
        str(row["message_id"]) if row["message_id"] else None,
        row["actor"],
        forged_detail,
        bytes(row["prev_hash"]),
    )
    problems = await _tampered(
        conn, ("UPDATE evidence SET detail = $2, hash = $3 WHERE seq = $1", sealed, forged_detail, forged_hash)
    )
    assert ("altered", sealed) in [(p.kind, p.seq) for p in problems]


async def test_a_lost_connection_is_store_unavailable(dsn):
    c = await asyncpg.connect(dsn)
    await c.close()
    with pytest.raises(StoreUnavailable):
        await messages.record_batch(c, [record()])


async def test_record_batch_of_256_is_fast(conn, capsys):
    batch = [record(raw=b"x" * 2048) for _ in range(256)]
    started = time.perf_counter()
    out = await messages.record_batch(conn, batch)
    elapsed = time.perf_counter() - started
    assert not any(o.duplicate for o in out)
    with capsys.disabled():
        print(f"\nrecord_batch of 256 messages (2 KB, 2 deliveries each): {elapsed * 1000:.1f} ms")
    assert elapsed < 5  # generous: the figure is what matters, printed above


async def test_raw_bytes_are_compressed_with_lz4(conn):  # type: ignore[no-untyped-def]
    """Migration 005: the signed bytes (the largest column) use lz4, about half pglz's cost per row."""
    rows = await conn.fetch(
        "SELECT attrelid::regclass::text AS t, attcompression::text AS attcompression FROM pg_attribute"
        " WHERE attname = 'raw' AND attrelid IN ('messages'::regclass, 'intake_rejections'::regclass)"
    )
    assert {r["t"]: r["attcompression"] for r in rows} == {"messages": "l", "intake_rejections": "l"}


async def test_analyze_keeps_small_statistics_and_none_of_the_wide_columns(conn):  # type: ignore[no-untyped-def]
    """Migration 009: the maintenance ANALYZE samples 3,000 rows and skips the signed bytes, digests and JSON."""
    await messages.record_batch(conn, [record() for _ in range(20)])
    await conn.execute("ANALYZE messages; ANALYZE evidence")
    targets = {
        (r["t"], r["name"]): r["target"]
        for r in await conn.fetch(
            "SELECT attrelid::regclass::text AS t, attname AS name, attstattarget AS target FROM pg_attribute"
            " WHERE attrelid IN ('messages'::regclass, 'evidence'::regclass) AND attnum > 0 AND NOT attisdropped"
        )
    }
    assert targets[("messages", "received_at")] == 10 and targets[("messages", "raw")] == 0
    assert targets[("evidence", "kind")] == 10 and targets[("evidence", "detail")] == 0
    stats = {
        (r["tablename"], r["attname"])
        for r in await conn.fetch("SELECT tablename, attname FROM pg_stats WHERE tablename IN ('messages', 'evidence')")
    }
    assert ("messages", "received_at") in stats and ("messages", "state") in stats
    assert ("messages", "raw") not in stats and ("evidence", "detail") not in stats


async def test_a_signed_message_is_stored_compressed_in_its_row(conn):  # type: ignore[no-untyped-def]
    """Migration 007: a typical signed message (4–5 KB, about 3 KB compressed) stays in its row, not in the TOAST
    table; exactly as received."""
    import base64
    import random

    toast = await conn.fetchval("SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = 'messages'")
    before = await count(conn, f"SELECT count(*) FROM {toast}")  # toast: a catalog name
    rng = random.Random(7)
    certificate = base64.b64encode(rng.randbytes(2400)).decode()  # hardly compressible, like a certificate chain
    raw = ("<env:Envelope>" + "<d:Paragraph>森林草原防火工作通知</d:Paragraph>" * 40 + certificate).encode()
    rec = record(raw=raw)
    await messages.record_batch(conn, [rec])
    size = await conn.fetchval(
        "SELECT pg_column_size(raw) FROM messages WHERE message_id = $1", uuid.UUID(rec.message_id)
    )
    assert 2100 < size < len(raw)  # compressed, and above the 2 KB TOAST target
    assert await count(conn, f"SELECT count(*) FROM {toast}") == before  # yet not moved out of line
    stored = await conn.fetchval("SELECT raw FROM messages WHERE message_id = $1", uuid.UUID(rec.message_id))
    assert bytes(stored) == raw


async def test_one_batch_records_new_held_refused_and_skips_duplicates(conn):
    """record_batch is one statement: everything that depends on a message being new is filtered by the ids the
    insert returned — a duplicate in the batch gets no second deliveries, quarantine entry or evidence."""
    old = record()
    await messages.record_batch(conn, [old])
    new, held = record(), record(state="quarantined", markings=("秘密★", "机密★10年"))
    refused = Rejection(b"<x/>", "SIG_VALUE", "the signature does not verify", amqp_user="hub.y")
    before = await count(conn, "SELECT count(*) FROM evidence_pending") + await count(
        conn, "SELECT count(*) FROM evidence"
    )
    out = await messages.record_batch(conn, [new, old, held], [refused])
    assert [o.duplicate for o in out] == [False, True, False]
    ids = [uuid.UUID(r.message_id) for r in (new, old, held)]
    per_message = {
        r["message_id"]: r["n"]
        for r in await conn.fetch(
            "SELECT message_id, count(*) AS n FROM deliveries WHERE message_id = ANY($1) GROUP BY message_id", ids
        )
    }
    assert per_message == {ids[0]: 2, ids[1]: 2, ids[2]: 2}  # the duplicate's two rows are from the first time
    assert await conn.fetchval("SELECT markings FROM quarantine WHERE message_id = $1", ids[2]) == [
        "秘密★",
        "机密★10年",
    ]
    assert await count(conn, "SELECT count(*) FROM quarantine WHERE message_id = ANY($1)", ids) == 1
    after = await count(conn, "SELECT count(*) FROM evidence_pending") + await count(
        conn, "SELECT count(*) FROM evidence"
    )
    assert after - before == 3  # received (new), quarantined (held), rejected (refused): nothing for the duplicate
    await evidence.chain_pending(conn, wait=True)
    kinds = [r["kind"] for r in await conn.fetch("SELECT kind FROM evidence ORDER BY seq DESC LIMIT 3")]
    assert sorted(kinds) == ["quarantined", "received", "rejected"]


async def test_delivery_updates_never_touch_an_index_on_state(conn):
    """Migration 006: no index of deliveries holds a column that tracking updates (so those updates are HOT and
    no plan can walk every pending entry ever written), and pages keep room for the updated rows."""
    indexed = await conn.fetch(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = 'deliveries'::regclass"
    )
    assert {r["attname"] for r in indexed} == {"message_id", "recipient_system", "recorded_at"}
    assert "fillfactor=70" in (
        await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'deliveries'::regclass")
    )


async def test_maintenance_analyzes_what_changed_where_autovacuum_is_off(conn):
    from hub.store.maintenance import BUSY_TABLES, maintain

    async def write() -> None:
        await messages.record_batch(conn, [record() for _ in range(120)])  # 120 messages, 240 deliveries, evidence
        await conn.execute("SELECT pg_stat_force_next_flush()")  # table statistics are reported lazily

    await maintain(conn, force=True)  # settle whatever earlier tests left
    assert await maintain(conn, force=True) == []  # nothing changed since
    await write()
    done = await maintain(conn, force=True)
    assert "ANALYZE deliveries" in done or "VACUUM (ANALYZE) deliveries" in done
    assert all(d.split()[-1] in BUSY_TABLES for d in done)
    stats = await conn.fetchrow(
        "SELECT n_mod_since_analyze, last_analyze FROM pg_stat_user_tables WHERE relname = 'deliveries'"
    )
    assert stats["n_mod_since_analyze"] == 0 and stats["last_analyze"] is not None
    assert await maintain(conn, force=True) == []
    # Without force it defers to autovacuum where autovacuum runs; where it does not, it waits out autovacuum's
    # naptime after its own ANALYZE, as autovacuum would (the table has not more than doubled: 240 rows more).
    await write()
    assert not [d for d in await maintain(conn) if d.endswith(" deliveries")]
    assert (await conn.fetchrow(_DELIVERIES_STATS))["n_mod_since_analyze"] > 0
    # evidence_pending, the queue table, keeps its tail pages (no ACCESS EXCLUSIVE lock from VACUUM's truncation).
    options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'evidence_pending'::regclass")
    assert "vacuum_truncate=false" in options


async def test_maintenance_vacuums_the_process_engines_queues_where_autovacuum_is_off(conn):
    """The engine's timers and outbox are updated once per row (fired, published): with autovacuum off their dead
    rows piled up for ever, since maintenance looked only at the message path's tables."""
    from hub.store.maintenance import maintain

    await maintain(conn, force=True)  # settle whatever earlier tests left
    tag = uuid.uuid4().hex[:8]
    await conn.execute(
        "INSERT INTO process_timers (process, kind, key, due_at) SELECT 'test', $1, g::text, now() "
        "FROM generate_series(1, 300) g",
        tag,
    )
    await conn.execute(
        "INSERT INTO process_outbox (message_id, process, service, lane, body, created_at) "
        "SELECT gen_random_uuid(), 'test', 'hub.notice', 'normal', '\\x00', now() FROM generate_series(1, 300)"
    )
    await conn.execute("UPDATE process_timers SET fired_at = now() WHERE kind = $1", tag)
    await conn.execute("UPDATE process_outbox SET published_at = now() WHERE process = 'test' AND published_at IS NULL")
    await conn.execute("SELECT pg_stat_force_next_flush()")
    done = await maintain(conn, force=True)
    assert "VACUUM (ANALYZE) process_timers" in done and "VACUUM (ANALYZE) process_outbox" in done, done
    dead = await conn.fetch(
        "SELECT relname, n_dead_tup FROM pg_stat_user_tables WHERE relname IN ('process_timers', 'process_outbox')"
    )
    assert {r["relname"]: r["n_dead_tup"] for r in dead} == {"process_timers": 0, "process_outbox": 0}


_DELIVERIES_STATS = "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'deliveries'"


def _table_state(**over: object) -> dict[str, object]:
    state: dict[str, object] = {
        "name": "deliveries",
        "rows": 10_000,
        "live": 11_000,
        "changed": 0,
        "dead": 0,
        "since_analyze": timedelta(seconds=5),
        "since_vacuum": timedelta(seconds=5),
        "naptime": timedelta(minutes=1),
        "a_base": 50,
        "a_scale": 0.1,
        "v_base": 50,
        "v_scale": 0.2,
    }
    return state | over


def test_maintenance_waits_out_the_naptime_unless_a_table_more_than_doubled():
    from hub.store.maintenance import _due

    changed = {"changed": 2_000, "dead": 3_000}  # over both thresholds (1,050 and 2,050)
    assert _due(_table_state(), force=False) == (False, False)  # under the thresholds
    assert _due(_table_state(**changed), force=False) == (False, False)  # done 5 s ago
    assert _due(_table_state(**changed), force=True) == (True, True)
    rested = {"since_analyze": timedelta(minutes=1), "since_vacuum": timedelta(minutes=2)}
    assert _due(_table_state(**changed, **rested), force=False) == (True, True)
    never = {"since_analyze": None, "since_vacuum": None}
    assert _due(_table_state(**changed, **never), force=False) == (True, True)
    grown = {"live": 21_001, "changed": 11_001}
    assert _due(_table_state(**grown), force=False) == (False, True)
    assert _due(_table_state(**(grown | {"live": 20_999})), force=False) == (False, False)
    # a small queue table that doubles between two chain jobs is not "grown"
    queue = {"name": "evidence_pending", "rows": 50, "live": 400, "changed": 900}
    assert _due(_table_state(**queue), force=False) == (False, False)


async def test_a_quarantine_decision_and_the_operators_action_commit_together(conn):
    """With an actor, the decision records the operator's action in its own transaction: recorded with it, and when
    the record cannot be written the decision is not taken either."""
    from hub.store.audit import Actor

    held, other = record(state="quarantined", markings=("秘密★",)), record(state="quarantined", markings=("秘密★",))
    await messages.record_batch(conn, [held, other])
    released = await messages.quarantine_release(
        conn, held.message_id, "li.security", "仅引用密级标志", actor=Actor("li.security", "security", "web")
    )
    assert released.status == "released"
    action = await conn.fetchrow(
        "SELECT operator, role, action, via, outcome, reason FROM operator_actions WHERE message_id = $1",
        uuid.UUID(held.message_id),
    )
    assert tuple(action) == ("li.security", "security", "quarantine.release", "web", "done", "仅引用密级标志")

    with pytest.raises(ValueError):  # an actor without a name cannot be recorded …
        await messages.quarantine_reject(conn, other.message_id, "x", "reason", actor=Actor(" ", "security", "web"))
    assert (await messages.quarantine_show(conn, other.message_id)).status == "pending"  # … so nothing was decided
