"""hub.store.ops (the ops page's read side) on the real PostgreSQL: every search filter alone and combined, keyset
paging, the trace's contents in order (staged evidence flagged, then chained in seq order), claims, the overview's
counts and the evidence chain's status. Messages are recorded with the store's own functions in a database of the
module's own, so the expected results are known exactly."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio

from hub.store import dead_letters, evidence, messages, ops
from hub.store.db import migrate
from hub.store.records import DeliveryRecord, MessageRecord, ReceiptRecord, Rejection

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
AGENCY = "11220000MB0000000X"
SENDERS = ("county-a-oa", "county-b-oa", "city-c-oa")
RECIPIENTS = ("prov-oa", "city-x-oa", "city-y-oa", "county-z-oa")
SERVICES = ("document.official", "info.report", "emergency.alert")
LABELS = {0: "公开", 1: "内部", 2: "秘密", 3: "机密", 4: "绝密"}


@pytest_asyncio.fixture(scope="module")
async def dsn(pg_dsn: str) -> AsyncIterator[str]:
    base, name = pg_dsn.rsplit("/", 1)
    own = f"{name}_ops"
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


@pytest_asyncio.fixture(scope="module")
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert p is not None
    try:
        yield p
    finally:
        await p.close()


def _record(i: int, rnd: random.Random) -> MessageRecord:
    mid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
    classification = rnd.choice((0, 0, 1, 1, 2, 3, 4))
    state = rnd.choice(("accepted", "accepted", "accepted", "quarantined", "rejected"))
    to = rnd.sample(RECIPIENTS, rnd.randint(1, 3)) if state != "rejected" else []
    # Several messages share a received_at (as a batch does): the cursor's id part must break the tie.
    at = NOW - timedelta(minutes=10 * (i // 2))
    return MessageRecord(
        message_id=mid,
        conversation_id=str(uuid.uuid4()),
        sender_agency=AGENCY,
        sender_system=rnd.choice(SENDERS),
        service=rnd.choice(SERVICES),
        version=1,
        classification=classification,
        classification_label=LABELS[classification],
        urgency="平件",
        created=at - timedelta(seconds=5),
        expires=at + timedelta(days=3),
        raw=f"<Envelope id='{mid}'>签名 {i}</Envelope>".encode(),
        deliveries=tuple(DeliveryRecord(AGENCY, s, "to") for s in to),
        state=state,  # type: ignore[arg-type]
        error_code="MSG_EXPIRED" if state == "rejected" else None,
        error_reason="expired" if state == "rejected" else None,
        markings=("秘密",) if state == "quarantined" else (),
        received_at=at,
    )


@pytest_asyncio.fixture(scope="module")
async def stored(pool: asyncpg.Pool) -> list[MessageRecord]:
    rnd = random.Random(15)
    recs = [_record(i, rnd) for i in range(60)]
    await messages.record_batch(pool, recs)
    return recs


def _expected(recs: list[MessageRecord], **f: object) -> list[str]:
    def ok(r: MessageRecord) -> bool:
        assert r.received_at is not None
        return (
            (f.get("sender") is None or r.sender_system == f["sender"])
            and (f.get("service") is None or r.service == f["service"])
            and (f.get("classification") is None or r.classification == f["classification"])
            and (f.get("state") is None or r.state == f["state"])
            and (f.get("recipient") is None or any(d.recipient_system == f["recipient"] for d in r.deliveries))
            and (f.get("since") is None or r.received_at >= f["since"])  # type: ignore[operator]
            and (f.get("until") is None or r.received_at < f["until"])  # type: ignore[operator]
        )

    chosen = [r for r in recs if ok(r)]
    chosen.sort(key=lambda r: (r.received_at, uuid.UUID(r.message_id)), reverse=True)
    return [r.message_id for r in chosen]


FILTERS: list[dict[str, object]] = [
    {},
    {"sender": "county-a-oa"},
    {"recipient": "city-x-oa"},
    {"recipient": "county-z-oa", "service": "info.report"},
    {"service": "emergency.alert"},
    {"classification": 0},
    {"classification": 3},
    {"state": "accepted"},
    {"state": "quarantined"},
    {"state": "rejected", "sender": "city-c-oa"},
    {"since": NOW - timedelta(hours=2), "until": NOW - timedelta(minutes=30)},
    {"classification": 4, "recipient": "prov-oa", "since": NOW - timedelta(hours=4)},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(sorted(f)) or "none")
async def test_each_filter_returns_exactly_the_matches_newest_first(pool, stored, filters):
    want = _expected(stored, **filters)
    got = await ops.search_messages(pool, limit=200, **filters)  # type: ignore[arg-type]
    assert [r.message_id for r in got] == want
    assert want  # every filter here matches something: an empty answer could not prove the filter right


async def test_a_filter_that_matches_nothing_finds_nothing(pool, stored):
    assert await ops.search_messages(pool, sender="county-nobody-oa") == []
    assert await ops.search_messages(pool, recipient="county-nobody-oa", service="emergency.alert") == []


@pytest.mark.parametrize("filters", [{}, {"recipient": "prov-oa"}, {"state": "accepted"}, {"classification": 1}])
async def test_keyset_paging_visits_every_row_once_in_order(pool, stored, filters):
    want = _expected(stored, **filters)
    assert len(want) > 3
    seen: list[str] = []
    before = None
    while True:
        page = await ops.search_messages(pool, before=before, limit=3, **filters)  # type: ignore[arg-type]
        if not page:
            break
        assert len(page) <= 3
        seen += [r.message_id for r in page]
        before = page[-1].cursor
    assert seen == want


async def test_search_by_message_id_and_row_contents(pool, stored):
    r = next(x for x in stored if x.state == "accepted")
    [row] = await ops.search_messages(pool, message_id=r.message_id.upper())
    assert row.message_id == r.message_id and row.sender_system == r.sender_system
    assert (row.service, row.version, row.classification) == (r.service, 1, r.classification)
    assert row.classification_label == LABELS[r.classification] and row.state == "accepted"
    assert row.recipients == len(r.deliveries) and row.received_at == r.received_at
    assert await ops.search_messages(pool, message_id="not-an-id") == []
    assert await ops.search_messages(pool, message_id=str(uuid.uuid4())) == []


async def test_bad_filters_are_refused_and_the_limit_is_bounded(pool, stored):
    with pytest.raises(ValueError):
        await ops.search_messages(pool, classification=7)
    with pytest.raises(ValueError):
        await ops.search_messages(pool, state="lost")
    assert len(await ops.search_messages(pool, limit=10_000)) == min(len(stored), ops.MAX_LIMIT)
    assert len(await ops.search_messages(pool, limit=0)) == 1


async def test_trace_has_every_step_in_order(pool, stored):
    r = next(x for x in stored if x.state == "accepted" and len(x.deliveries) >= 2)
    first = r.deliveries[0].recipient_system
    await messages.record_sent(
        pool, [r.message_id], [ReceiptRecord(str(uuid.uuid4()), r.message_id, "hub.receipt", r.sender_system)]
    )
    await messages.update_delivery_state(pool, r.message_id, first, "received")
    await evidence.chain_pending(pool)  # everything so far is chained …
    await messages.update_delivery_state(pool, r.message_id, first, "read")  # … and this stays staged
    forged = b"<Envelope>forged copy</Envelope>"
    await messages.record_rejection(
        pool, Rejection(forged, "SIG_VALUE", "the signature does not verify", claimed_message_id=r.message_id)
    )

    t = await ops.trace(pool, r.message_id)
    assert t is not None
    assert t.raw == r.raw and t.message.raw_sha256 == hashlib.sha256(r.raw).hexdigest()
    assert t.message.sender_system == r.sender_system and t.message.state == "accepted"
    assert {d.recipient_system for d in t.deliveries} == {d.recipient_system for d in r.deliveries}
    d = next(d for d in t.deliveries if d.recipient_system == first)
    assert d.state == "read" and list(d.times) == ["pending", "delivered", "received", "read"]
    assert d.times["pending"] <= d.times["delivered"] <= d.times["received"]
    assert [x.kind for x in t.receipts] == ["hub.receipt"]
    kinds = [(e.kind, e.pending) for e in t.evidence]
    assert kinds[0] == ("received", False) and ("delivered", False) in kinds
    assert kinds[-1] == ("delivery_state", True) and t.evidence[-1].seq is None
    assert t.evidence[-1].detail["reported"] == "read"
    chained = [e.seq for e in t.evidence if not e.pending]
    assert chained == sorted(chained) and all(s is not None for s in chained)
    assert t.quarantine is None
    [rej] = t.rejections
    assert rej.error_code == "SIG_VALUE" and rej.raw_sha256 == hashlib.sha256(forged).hexdigest()
    assert await ops.trace(pool, str(uuid.uuid4())) is None
    assert await ops.trace(pool, "nonsense") is None


async def test_trace_of_a_quarantined_message_and_its_dead_letter(pool, stored):
    r = next(x for x in stored if x.state == "quarantined")
    await messages.quarantine_release(pool, r.message_id, "security1", "checked: no secrets")
    key = hashlib.sha256(b"test-dl" + r.raw).digest()
    new = dead_letters.NewDeadLetter(
        dedup_key=key,
        first_seen=NOW,
        kind="inbound",
        source_queue="ns.in.normal",
        source_exchange="ns.in",
        routing_key="normal",
        reason="hub",
        code="DELIVERY_STORE",
        detail="PostgreSQL is unavailable",
        refused_by=None,
        publisher=None,
        claimed_message_id=r.message_id,
        headers_json="{}",
        priority=0,
        correlation_id=None,
        body=r.raw,
        body_sha256=hashlib.sha256(r.raw).digest(),
    )
    assert await dead_letters.insert(pool, [new]) == 1
    t = await ops.trace(pool, r.message_id)
    assert t is not None and t.quarantine is not None
    assert t.quarantine.status == "released" and t.quarantine.reviewer == "security1"
    assert t.quarantine.markings == ("秘密",)
    [dl] = t.dead_letters
    assert dl.message_id == r.message_id and dl.code == "DELIVERY_STORE"  # the bytes are the recorded message's
    kinds = [e.kind for e in t.evidence]
    assert kinds.index("quarantined") < kinds.index("released")


async def test_claims_of_an_unrecorded_id(pool, stored):
    ghost = str(uuid.uuid4())
    await messages.record_rejection(
        pool, Rejection(b"<x/>", "CERT_REVOKED", "revoked", claimed_message_id=ghost, claimed_sender="county-a-oa")
    )
    assert await ops.trace(pool, ghost) is None
    c = await ops.claims(pool, ghost)
    assert [x.error_code for x in c.rejections] == ["CERT_REVOKED"] and c.rejections[0].claimed_sender == "county-a-oa"


async def test_overview_counts_the_window(pool, stored):
    since = NOW - timedelta(hours=1)
    got = await ops.overview_counts(pool, since=since)
    window = [r for r in stored if r.received_at is not None and r.received_at >= since]
    # quarantined ones may have been released by another test of this module
    assert got["received"] == len(window)
    assert got["messages"].get("rejected", 0) == sum(r.state == "rejected" for r in window)
    assert got["rejections"].get("MSG_EXPIRED", 0) == sum(r.state == "rejected" for r in window)
    total_pending = await pool.fetchval("SELECT count(*) FROM quarantine WHERE status = 'pending'")
    assert got["quarantine_pending"] == total_pending
    assert got["dead_letters_pending"] == await pool.fetchval(
        "SELECT count(*) FROM dead_letters WHERE state = 'pending'"
    )


async def test_evidence_status_counts_staged_records_without_chaining_them(pool, stored):
    await evidence.chain_pending(pool)
    r = stored[0]
    await messages.update_delivery_states(pool, [])  # nothing
    if r.deliveries:
        await messages.update_delivery_state(pool, r.message_id, r.deliveries[0].recipient_system, "handled")
    st = await ops.evidence_status(pool)
    head_seq, head_hash = await pool.fetchrow("SELECT seq, hash FROM evidence_head")
    assert st.head_seq == head_seq and st.head_hash == bytes(head_hash)
    assert st.pending == await pool.fetchval("SELECT count(*) FROM evidence_pending")
    assert st.checkpoints == 0 and st.last_checkpoint_seq is None

    def sign(payload: bytes) -> bytes:
        return b"sig"

    seq = await evidence.checkpoint(pool, sign, "ab" * 32)
    st = await ops.evidence_status(pool)
    assert st.pending == 0 and st.checkpoints == 1 and st.last_checkpoint_seq == seq == st.head_seq
    assert st.last_checkpoint_signer == "ab" * 32 and st.last_checkpoint_covers == seq - 1
