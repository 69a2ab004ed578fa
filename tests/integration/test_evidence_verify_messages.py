"""``verify_messages`` (``hub evidence verify`` step 2, and the ops page's /evidence/verify): what the store holds
against the evidence records made when it happened — a deleted message, a state or quarantine entry changed by
hand, an operator action rewritten, deleted or added — without false alarms on a store the hub's own code wrote,
and in memory that does not grow with the store.

Each test runs in a database of its own (``evverify_<random>``), dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from evidence_kit import AGENCY, message_record, own_database

from hub.store import evidence, messages
from hub.store.audit import Actor, record_operator_action
from hub.store.db import create_pool
from hub.store.records import DeliveryRecord, DeliveryUpdate, Problem, ReceiptRecord, Rejection

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def dsn() -> AsyncIterator[str]:
    async with own_database("evverify") as d:
        yield d


@pytest_asyncio.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(dsn)
    try:
        yield c
    finally:
        await c.close()


record = message_record


@dataclass
class Store:
    accepted: str
    refused: str  # signed and valid, refused (state rejected)
    released: str  # quarantined, then released
    quarantine_rejected: str  # quarantined, then rejected (decision still staged)
    held: str  # quarantined, pending
    action: int  # an operator action on its own
    release_action: int  # the operator action recorded with the release


async def healthy_store(conn: asyncpg.Connection) -> Store:
    """A store written by the hub's own code paths only: every kind of message, every quarantine outcome, deliveries
    and document tracking, receipts, refused intake and operator actions; part chained, part still staged."""
    from hub.store import operators

    accepted = record(
        deliveries=(
            DeliveryRecord(AGENCY, "city-2201-oa", "to"),
            DeliveryRecord(AGENCY, "county-2202-oa", "cc"),
            DeliveryRecord(AGENCY, "county-2203-oa", "cc", "blocked", "CLASSIFICATION_CEILING"),
        )
    )
    refused = record(state="rejected", deliveries=())
    released, rejected, held = (record(state="quarantined") for _ in range(3))
    refusal = Rejection(b"<not-signed/>", "SIGNATURE_INVALID", "bad signature", claimed_message_id=str(uuid.uuid4()))
    await messages.record_batch(conn, [accepted, refused, released, rejected, held], [refusal])
    await messages.record_batch(conn, [accepted])  # a duplicate writes nothing
    await evidence.chain_pending(conn, wait=True)

    receipt = ReceiptRecord(str(uuid.uuid4()), accepted.message_id, "hub.receipt", "prov-oa")
    await messages.record_sent(conn, [accepted.message_id], [receipt])
    error = ReceiptRecord(str(uuid.uuid4()), refused.message_id, "hub.error", "prov-oa", "SERVICE_NOT_ALLOWED")
    await messages.record_sent(conn, [], [error])
    await messages.update_delivery_states(
        conn,
        [
            DeliveryUpdate(accepted.message_id, "city-2201-oa", "received"),
            DeliveryUpdate(accepted.message_id, "city-2201-oa", "handled"),
            DeliveryUpdate(accepted.message_id, "county-2202-oa", "failed", error_code="DELIVERY_EXPIRED"),
        ],
    )
    # hub.pipeline.release: decide with the operator's action, then deliver and answer
    await messages.quarantine_release(
        conn, released.message_id, "li.wei", "已核实，可公开", actor=Actor("li.wei", "security", "cli")
    )
    await messages.record_sent(
        conn,
        [released.message_id],
        [ReceiptRecord(str(uuid.uuid4()), released.message_id, "hub.receipt", "prov-oa")],
    )
    action = await record_operator_action(
        conn,
        operator="wang.fang",
        role="duty",
        action="dead.replay",
        via="web",
        reason="收件系统已恢复",
        target="17",
        outcome="refused",
        detail={"dead_id": 17, "code": "DEAD_NOT_FOUND"},
    )
    await operators.add_operator(
        conn,
        "zhao.min",
        role="auditor",
        display_name="赵敏",
        password="a-long-password-1",
        by="li.wei",
        by_role="admin",
        via="cli",
    )
    await evidence.chain_pending(conn, wait=True)
    # still staged when verified: a quarantine rejection with its operator action, a login
    await messages.quarantine_reject(
        conn, rejected.message_id, "wang.fang", "含涉密标记", actor=Actor("wang.fang", "security", "web")
    )
    await messages.record_sent(
        conn,
        [],
        [ReceiptRecord(str(uuid.uuid4()), rejected.message_id, "hub.error", "prov-oa", "GATE_REJECTED")],
    )
    await operators.login(conn, "zhao.min", "a-long-password-1", via="web")
    release_action = await conn.fetchval(
        "SELECT id FROM operator_actions WHERE action = 'quarantine.release' AND message_id = $1",
        uuid.UUID(released.message_id),
    )
    return Store(
        accepted.message_id,
        refused.message_id,
        released.message_id,
        rejected.message_id,
        held.message_id,
        action,
        release_action,
    )


async def tampered(conn: asyncpg.Connection, *statements: tuple[Any, ...]) -> list[Problem]:
    """What ``verify_messages`` reports with ``statements`` applied, in a transaction rolled back afterwards (also
    the path where the caller already holds a transaction)."""

    class Undo(Exception):
        pass

    found: list[Problem] = []
    try:
        async with conn.transaction():
            for sql, *args in statements:
                await conn.execute(sql, *args)
            found = await evidence.verify_messages(conn)
            raise Undo
    except Undo:
        pass
    assert await evidence.verify_messages(conn) == [], "the tampering was not undone"
    return found


def _uuid(text: str) -> uuid.UUID:
    return uuid.UUID(text)


# -- no false alarms ---------------------------------------------------------------------------------------------------


async def test_a_healthy_store_verifies_clean(dsn: str, conn: asyncpg.Connection) -> None:
    store = await healthy_store(conn)
    staged = await conn.fetch("SELECT kind FROM evidence_pending")
    assert {"quarantine_rejected", "operator_action"} <= {r["kind"] for r in staged}  # verified while still staged
    states = dict(await conn.fetch("SELECT state, count(*) FROM messages GROUP BY state"))
    assert states == {"accepted": 1, "rejected": 1, "released": 1, "quarantine_rejected": 1, "quarantined": 1}
    assert await conn.fetchval("SELECT count(*) FROM operator_actions") >= 5
    assert store.release_action is not None

    assert await evidence.verify_messages(conn) == []
    async with conn.transaction():  # inside the caller's transaction
        assert await evidence.verify_messages(conn) == []
    pool = await create_pool(dsn, min_size=1, max_size=2)  # what the ops page passes
    try:
        assert await evidence.verify_messages(pool) == []
    finally:
        await pool.close()
    assert await evidence.verify_chain(conn) == []  # chains what was staged
    assert await conn.fetchval("SELECT count(*) FROM evidence_pending") == 0
    assert await evidence.verify_messages(conn) == []


# -- a message deleted -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chained", [True, False], ids=["chained", "staged"])
async def test_a_deleted_message_is_reported(conn: asyncpg.Connection, chained: bool) -> None:
    gone, kept = record(), record()
    await messages.record_batch(conn, [gone, kept])
    if chained:
        await evidence.chain_pending(conn, wait=True)
    seq = await conn.fetchval(
        "SELECT seq FROM evidence WHERE kind = 'received' AND message_id = $1", _uuid(gone.message_id)
    )
    assert (seq is not None) is chained
    problems = await tampered(
        conn,
        ("DELETE FROM deliveries WHERE message_id = $1", _uuid(gone.message_id)),
        ("DELETE FROM messages WHERE message_id = $1", _uuid(gone.message_id)),
    )
    assert [(p.kind, p.seq) for p in problems] == [("removed", seq)]
    assert gone.message_id in problems[0].message and "已被删除" in problems[0].message
    assert "no longer exists" in problems[0].message


# -- a message's state changed by hand ---------------------------------------------------------------------------------

STATE_EDITS = {
    # the reviewer's case: a held message released by UPDATE, no reviewer, no 'released' record
    "held-released-by-hand": (
        "held",
        [
            ("UPDATE messages SET state = 'released' WHERE message_id = $1",),
            (
                "UPDATE quarantine SET status = 'released', reviewer = 'nobody', reason = 'x', decided_at = now()"
                " WHERE message_id = $1",
            ),
        ],
        {"state", "quarantine status"},
    ),
    "held-state-only": ("held", [("UPDATE messages SET state = 'released' WHERE message_id = $1",)], {"state"}),
    "rejected-in-quarantine-then-released": (
        "quarantine_rejected",
        [("UPDATE messages SET state = 'released' WHERE message_id = $1",)],
        {"state"},
    ),
    "release-undone": ("released", [("UPDATE messages SET state = 'quarantined' WHERE message_id = $1",)], {"state"}),
    "accepted-to-quarantine-rejected": (
        "accepted",
        [("UPDATE messages SET state = 'quarantine_rejected' WHERE message_id = $1",)],
        {"state"},
    ),
    "refused-made-accepted": (
        "refused",
        [("UPDATE messages SET state = 'accepted' WHERE message_id = $1",)],
        {"state"},
    ),
    "quarantine-entry-decided-by-hand": (
        "held",
        [
            (
                "UPDATE quarantine SET status = 'rejected', reviewer = 'nobody', reason = 'x', decided_at = now()"
                " WHERE message_id = $1",
            )
        ],
        {"quarantine status"},
    ),
    "quarantine-entry-deleted": ("held", [("DELETE FROM quarantine WHERE message_id = $1",)], {"quarantine status"}),
    "reviewer-rewritten": (
        "released",
        [("UPDATE quarantine SET reviewer = 'zhang.san' WHERE message_id = $1",)],
        {"quarantine reviewer"},
    ),
    "reason-rewritten": (
        "released",
        [("UPDATE quarantine SET reason = 'routine' WHERE message_id = $1",)],
        {"quarantine reason (SHA-256)"},
    ),
}


@pytest.mark.parametrize("case", list(STATE_EDITS))
async def test_a_state_changed_by_hand_is_reported(conn: asyncpg.Connection, case: str) -> None:
    store = await healthy_store(conn)
    which, edits, fields = STATE_EDITS[case]
    mid = getattr(store, which)
    problems = await tampered(conn, *[(sql, _uuid(mid)) for (sql,) in edits])
    assert problems and {p.kind for p in problems} == {"altered"}, problems
    assert all(mid in p.message for p in problems), problems
    named = {f for p in problems for f in fields if f"its {f} no longer matches" in p.message}
    assert named == fields and len(problems) == len(fields), problems


# -- deliveries changed by hand ----------------------------------------------------------------------------------------

_ONE = "UPDATE deliveries SET state = $3 WHERE message_id = $1 AND recipient_system = $2"

#: (message, recipient, the state written by hand, the state its evidence supports, the record that put it there)
DELIVERY_EDITS = {
    # a recipient's 办结 undone: its report (a delivery_state record) says handled
    "handled-undone": ("accepted", "city-2201-oa", "delivered", "handled", "delivery_state"),
    # a copy the 密级 gate blocked at intake claimed as delivered
    "blocked-marked-delivered": ("accepted", "county-2203-oa", "delivered", "blocked", "blocked"),
    # feedback claimed for a copy that was only delivered (its later failed report does not move it back)
    "feedback-claimed": ("accepted", "county-2202-oa", "feedback", "delivered", "delivered"),
    # a held message's copy claimed as delivered while it waits for review
    "held-marked-delivered": ("held", "city-2201-oa", "delivered", "pending", "quarantined"),
    # a copy blocked by the rejection in quarantine (decision still staged) put back to pending
    "quarantine-block-undone": ("quarantine_rejected", "city-2201-oa", "pending", "blocked", "quarantine_rejected"),
    # a released message's copy made pending again
    "release-delivery-undone": ("released", "city-2201-oa", "pending", "delivered", "delivered"),
}


@pytest.mark.parametrize("case", list(DELIVERY_EDITS))
async def test_a_delivery_state_changed_by_hand_is_reported(conn: asyncpg.Connection, case: str) -> None:
    store = await healthy_store(conn)
    which, system, written, supported, kind = DELIVERY_EDITS[case]
    mid = getattr(store, which)
    # the record that put the delivery in its state: the last of its kind about this message (None when staged)
    seq = await conn.fetchval("SELECT max(seq) FROM evidence WHERE message_id = $1 AND kind = $2", _uuid(mid), kind)
    problems = await tampered(conn, (_ONE, _uuid(mid), system, written))
    assert [(p.kind, p.seq) for p in problems] == [("altered", seq)], problems
    assert problems[0].message.startswith(f"报文 {mid} 对 {system} 的投递状态被改动 the delivery of message {mid} to")
    assert "its state no longer matches" in problems[0].message
    assert f"(recorded {supported!r}, now {written!r})" in problems[0].message


async def test_a_delivery_deleted_or_added_by_hand_is_reported(conn: asyncpg.Connection) -> None:
    store = await healthy_store(conn)
    mid = _uuid(store.accepted)
    delivered = await conn.fetchval("SELECT seq FROM evidence WHERE message_id = $1 AND kind = 'delivered'", mid)
    assert delivered is not None
    problems = await tampered(
        conn, ("DELETE FROM deliveries WHERE message_id = $1 AND recipient_system = 'county-2202-oa'", mid)
    )
    assert [(p.kind, p.seq) for p in problems] == [("removed", delivered)], problems
    assert "对 county-2202-oa 的投递记录已被删除" in problems[0].message and "no longer exists" in problems[0].message

    problems = await tampered(
        conn,
        (
            "INSERT INTO deliveries (message_id, recipient_system, recipient_agency, role, state, recorded_at,"
            " delivered_at) VALUES ($1, 'county-2299-oa', $2, 'cc', 'delivered', now(), now())",
            mid,
            AGENCY,
        ),
    )
    received = await conn.fetchval("SELECT seq FROM evidence WHERE message_id = $1 AND kind = 'received'", mid)
    assert [(p.kind, p.seq) for p in problems] == [("inserted", received)], problems
    assert "county-2299-oa" in problems[0].message and "added by hand" in problems[0].message


async def test_delivery_histories_the_hub_writes_verify_clean(conn: asyncpg.Connection) -> None:
    """The orders the hub really writes deliveries in, replayed without a false alarm: a copy that failed and was then
    delivered on a retry, reports out of order and repeated in one batch, a report about no delivery, a held message
    whose copy failed before the rejection in quarantine (it stays failed, the pending one is blocked)."""
    a = record(
        deliveries=(DeliveryRecord(AGENCY, "city-2201-oa", "to"), DeliveryRecord(AGENCY, "county-2202-oa", "cc"))
    )
    q = record(
        state="quarantined",
        deliveries=(DeliveryRecord(AGENCY, "city-2201-oa", "to"), DeliveryRecord(AGENCY, "county-2202-oa", "cc")),
    )
    await messages.record_batch(conn, [a, q])
    await messages.update_delivery_states(
        conn,
        [
            DeliveryUpdate(a.message_id, "county-2202-oa", "failed", error_code="DELIVERY_EXPIRED"),
            DeliveryUpdate(q.message_id, "county-2202-oa", "failed", error_code="DELIVERY_EXPIRED"),
            DeliveryUpdate(a.message_id, "county-2299-oa", "received"),  # no such delivery: skipped, no record
        ],
    )
    await evidence.chain_pending(conn, wait=True)
    await messages.record_sent(conn, [a.message_id])  # the retry: failed and pending ones delivered
    await messages.update_delivery_states(
        conn,
        [
            DeliveryUpdate(a.message_id, "city-2201-oa", "read"),
            DeliveryUpdate(a.message_id, "city-2201-oa", "received"),  # late, and in the same batch
            DeliveryUpdate(a.message_id, "county-2202-oa", "handled"),
            DeliveryUpdate(a.message_id, "county-2202-oa", "failed"),  # after it was handled: does not move it
        ],
    )
    await messages.quarantine_reject(conn, q.message_id, "wang.fang", "含涉密标记")
    stored = {
        (str(r["message_id"]), r["recipient_system"]): r["state"]
        for r in await conn.fetch("SELECT message_id, recipient_system, state FROM deliveries")
    }
    assert stored == {
        (a.message_id, "city-2201-oa"): "read",
        (a.message_id, "county-2202-oa"): "handled",
        (q.message_id, "city-2201-oa"): "blocked",
        (q.message_id, "county-2202-oa"): "failed",
    }
    assert await evidence.verify_messages(conn) == []
    await evidence.chain_pending(conn, wait=True)
    assert await evidence.verify_messages(conn) == []
    problems = await tampered(conn, (_ONE, _uuid(q.message_id), "county-2202-oa", "blocked"))
    assert [p.kind for p in problems] == ["altered"] and "(recorded 'failed', now 'blocked')" in problems[0].message


async def test_every_report_after_every_state_replays_as_the_store_applies_it(conn: asyncpg.Connection) -> None:
    """The replay copies the store's rules (the rank order, never out of blocked, pending or failed → delivered):
    every state a delivery can be in, then every state that can be reported, then a delivery confirmed — written by
    hub.store.messages, replayed without a false alarm. A change to either side's rules fails here."""
    from hub.store.records import DELIVERY_RANK

    reportable = [s for s in DELIVERY_RANK if s not in ("pending", "blocked")]
    cases = []
    for first in [*reportable, "pending", "blocked"]:
        for then in reportable:
            blocked = first == "blocked"
            delivery = DeliveryRecord(AGENCY, "city-2201-oa", "to", *(("blocked", "CLASSIFICATION_CEILING") * blocked))
            cases.append((record(deliveries=(delivery,)), first, then))
    await messages.record_batch(conn, [rec for rec, _, _ in cases])
    for rounds in (
        [DeliveryUpdate(rec.message_id, "city-2201-oa", first) for rec, first, _ in cases if first in reportable],
        [DeliveryUpdate(rec.message_id, "city-2201-oa", then) for rec, _, then in cases],
    ):
        await messages.update_delivery_states(conn, rounds)
    await messages.record_sent(conn, [rec.message_id for rec, _, _ in cases[: len(cases) // 2]])
    states = {r["state"] for r in await conn.fetch("SELECT state FROM deliveries")}
    assert states == set(DELIVERY_RANK) - {"pending"}  # every state reached (a pending one went on)
    assert await evidence.verify_messages(conn) == []
    await evidence.chain_pending(conn, wait=True)
    assert await evidence.verify_messages(conn) == []


# -- operator actions --------------------------------------------------------------------------------------------------


async def test_an_operator_actions_reason_and_operator_rewritten_are_reported(conn: asyncpg.Connection) -> None:
    aid = await record_operator_action(
        conn, operator="alice", role="admin", action="quarantine.release", via="cli", reason="approved by 张三 per 42"
    )
    problems = await tampered(
        conn, ("UPDATE operator_actions SET reason = 'routine', operator = 'bob' WHERE id = $1", aid)
    )
    assert [p.kind for p in problems] == ["altered", "altered"], problems
    text = " / ".join(p.message for p in problems)
    assert f"operator action {aid}" in text and "its operator no longer" in text and "its reason (SHA-256)" in text
    assert "'alice'" in text and "'bob'" in text


OPERATOR_EDITS = {
    "action": ("UPDATE operator_actions SET action = 'login' WHERE id = $1", "action"),
    "outcome": ("UPDATE operator_actions SET outcome = 'done' WHERE id = $1", "outcome"),  # it was refused
    "role": ("UPDATE operator_actions SET role = 'admin' WHERE id = $1", "role"),
    "via": ("UPDATE operator_actions SET via = 'cli' WHERE id = $1", "via"),
    "target": ("UPDATE operator_actions SET target = NULL WHERE id = $1", "target"),
    "message": (f"UPDATE operator_actions SET message_id = '{uuid.uuid4()}' WHERE id = $1", "message_id"),
}


@pytest.mark.parametrize("case", list(OPERATOR_EDITS))
async def test_an_operator_action_field_rewritten_is_reported(conn: asyncpg.Connection, case: str) -> None:
    store = await healthy_store(conn)
    sql, field = OPERATOR_EDITS[case]
    problems = await tampered(conn, (sql, store.action))
    assert [p.kind for p in problems] == ["altered"], problems
    assert f"operator action {store.action}" in problems[0].message
    assert f"its {field} no longer matches" in problems[0].message


async def test_an_operator_action_deleted_or_added_by_hand_is_reported(conn: asyncpg.Connection) -> None:
    store = await healthy_store(conn)
    seq = await conn.fetchval(
        "SELECT seq FROM evidence WHERE kind = 'operator_action' AND detail LIKE $1", f'%"action_id":{store.action},%'
    )
    assert seq is not None
    problems = await tampered(conn, ("DELETE FROM operator_actions WHERE id = $1", store.action))
    assert [(p.kind, p.seq) for p in problems] == [("removed", seq)], problems
    assert f"operator action {store.action}" in problems[0].message and "已被删除" in problems[0].message

    forged = (
        "INSERT INTO operator_actions (id, at, operator, role, action, via, reason)"
        " VALUES ($1, now(), 'li.wei', 'security', 'quarantine.release', 'web', '已核实')"
    )
    problems = await tampered(conn, (forged, 9_999_999))
    assert [(p.kind, p.seq) for p in problems] == [("removed", None)], problems
    assert "operator action 9999999" in problems[0].message and "no operator_action evidence" in problems[0].message


# -- bounded memory ----------------------------------------------------------------------------------------------------


async def test_verify_messages_memory_does_not_grow_with_the_store(conn: asyncpg.Connection) -> None:
    """The reviewer's measure: verify_messages streams (the whole evidence×messages join was fetched at once)."""
    import tracemalloc

    for _ in range(40):
        await messages.record_batch(conn, [record(raw=b"x" * 3000) for _ in range(250)])  # 10,000 messages
    await evidence.chain_pending(conn, wait=True)
    tracemalloc.start()
    try:
        assert await evidence.verify_messages(conn) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_message = peak / 10_000
    print(f"verify_messages peak {peak / 1e6:.2f} MB = {per_message:.0f} B per message")
    assert per_message < 100, f"{per_message:.0f} bytes of Python memory per stored message"
