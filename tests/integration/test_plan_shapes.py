"""Statements that must stay linear under any plan PostgreSQL may cache for them.

A new installation starts with empty tables. PostgreSQL caches a generic plan for a prepared statement (the pipeline
workers ask for that, ``plan_cache_mode = force_generic_plan``; other connections get one after five executions)
costed with the statistics of that moment, and keeps it while the tables grow. A statement with a join can then run
as a nested loop that scans a whole table for every row of the other side. Two did, in bench/gateway.py runs:

- the documents process's FeedbackDue window scan (``hub.processes.documents._SCAN``): every document's raw read for
  every row of the window, 0.5 s a call;
- the evidence chainer's claim of staged records (``hub.store.evidence._CLAIM``): its ``LIMIT`` subquery run again
  for every record deleted, 30 ms a call (2 s for 500 records after an ANALYZE of the empty table).

Each test builds that situation on a database of its own — statistics taken while the tables were (nearly) empty, a
generic plan cached, then the tables grown — and counts the rows the cached plan handles (EXPLAIN ANALYZE of the
prepared statement). Both statements now have no join and handle each row a few times at most; the join forms they
replace handle hundreds of times more rows here (checked when these tests were written).

A third test covers what made the window scan expensive even with a good plan: the one-row ``evidence_head``,
bloated by its updates, estimated at a thousand rows, which put the scan's estimated cost past ``jit_above_cost`` —
PostgreSQL JIT-compiled it on every call. The scan now reads the head with ``LIMIT 1``, the hub's pools run with JIT
off, and the hub's own maintenance (where autovacuum is off) vacuums the head tables too."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from hub.processes.documents import _SCAN, SCAN_WINDOW, window_scan
from hub.processes.engine import _DUE_TIMERS, _FEED, _UNPUBLISHED, FED_KINDS
from hub.settings import Settings
from hub.store.db import PLANNED_NOW, fetch_planned_now
from hub.store.evidence import _CLAIM

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]

_MESSAGE_COLUMNS = [
    "message_id", "sender_agency", "sender_system", "service", "version", "classification",
    "classification_label", "urgency", "created", "expires", "received_at", "raw", "raw_sha256", "state",
]  # fmt: skip


@pytest.fixture
def empty_dsn(fresh_settings: Settings) -> str:
    """A fresh, migrated database of this test's own (its tables empty)."""
    return fresh_settings.pg_dsn


@pytest.fixture
async def conn(empty_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(empty_dsn, server_settings={"plan_cache_mode": "force_generic_plan"})
    try:
        yield c
    finally:
        await c.close()


class _Filler:
    """Messages as the pipeline records them (a third carry FeedbackDue), three evidence records each, chained and
    staged."""

    def __init__(self) -> None:
        self.seq = 0
        self.now = datetime.now(UTC)

    async def add(self, conn: asyncpg.Connection, n: int) -> None:
        messages, chained, staged = [], [], []
        for i in range(n):
            mid = uuid.uuid4()
            due = "<FeedbackDue>2026-12-10T00:00:00+08:00</FeedbackDue>" if i % 3 == 0 else ""
            signature = base64.b64encode(os.urandom(2400)).decode()
            raw = f"<Envelope><Title>关于报送森林防火检查情况的通知 {i}</Title>{due}<Sig>{signature}</Sig></Envelope>"
            body = raw.encode()
            now = self.now
            messages.append(
                (mid, "220122", "county-220122-oa", "document.official", 1, 0, "公开", "平件", now, now, now, body,
                 hashlib.sha256(body).digest(), "accepted")
            )  # fmt: skip
            for kind in ("received", "delivered", "receipt_sent"):
                self.seq += 1
                chained.append((self.seq, now, kind, mid, "hub", "{}", b"\0" * 32, b"\1" * 32))
                staged.append((now, kind, mid, "hub", "{}"))
        await conn.copy_records_to_table("messages", records=messages, columns=_MESSAGE_COLUMNS)
        await conn.copy_records_to_table(
            "evidence",
            records=chained,
            columns=["seq", "at", "kind", "message_id", "actor", "detail", "prev_hash", "hash"],
        )
        await conn.copy_records_to_table(
            "evidence_pending", records=staged, columns=["at", "kind", "message_id", "actor", "detail"]
        )
        await conn.execute(
            "INSERT INTO evidence_head (seq, hash) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq",
            self.seq,
            b"\1" * 32,
        )


def _work(plan: dict[str, Any]) -> int:
    """Rows the plan's nodes handled, over all their loops: those they returned and those their filters and join
    filters removed."""
    seen = (
        plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0) + plan.get("Rows Removed by Join Filter", 0)
    )
    return int(seen * plan.get("Actual Loops", 1)) + sum(_work(child) for child in plan.get("Plans", []))


async def _cached_plan_run(conn: asyncpg.Connection, name: str, args: str) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the statement prepared (and planned, generically) before the tables grew."""
    (text,) = await conn.fetchrow(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({args})")
    return json.loads(text)[0]["Plan"]  # type: ignore[no-any-return]


async def _planned_now(conn: asyncpg.Connection, name: str, args: str, *, explain: bool = False) -> Any:
    """``EXECUTE name(args)`` (or its EXPLAIN ANALYZE plan) as ``hub.store.db.fetch_planned_now`` runs a statement:
    in a transaction, under ``PLANNED_NOW``. The fixture's connection asks for generic plans, as the engine's pool
    does after five executions: without the setting, the first execution caches one made on the small tables."""
    async with conn.transaction():
        await conn.execute(PLANNED_NOW)
        if explain:
            return await _cached_plan_run(conn, name, args)
        return await conn.execute(f"EXECUTE {name}({args})")


async def test_feedback_due_scan_stays_linear_under_a_plan_cached_on_small_tables(conn: asyncpg.Connection) -> None:
    fill = _Filler()
    await fill.add(conn, 5)
    await conn.execute("ANALYZE")
    await conn.execute(f"PREPARE scan(bigint, text[], bigint) AS {_SCAN}")
    await _planned_now(conn, "scan", f"1, ARRAY{list(FED_KINDS)!r}, {SCAN_WINDOW}")
    await fill.add(conn, 1000)  # 3,015 evidence records; no ANALYZE
    lo = fill.seq - 3 * 600
    plan = await _planned_now(conn, "scan", f"{lo}, ARRAY{list(FED_KINDS)!r}, {SCAN_WINDOW}", explain=True)

    # The window holds 600 messages' records, 200 of them with FeedbackDue; the answer is right ...
    async with conn.transaction():
        row = await window_scan(conn, lo)
    assert row is not None and row["hi"] == fill.seq
    raws = await conn.fetch(
        "SELECT m.message_id::text AS id FROM evidence e JOIN messages m USING (message_id)"
        " WHERE e.seq >= $1 AND e.kind = 'received' AND position('FeedbackDue'::bytea IN m.raw) > 0",
        lo,
    )
    assert sorted(row["ids"]) == sorted(r["id"] for r in raws) and len(raws) == 200
    # ... and the plan handled each row a few times at most (4,021 rows here; the join form: 728,316).
    assert _work(plan) <= 10 * (1005 + 3015), plan
    # The connection's own plan mode is back for the rest of the transaction.
    async with conn.transaction():
        await window_scan(conn, lo)
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"


@pytest.mark.parametrize(("first", "analyzed"), [(5, True), (200, False)])
async def test_feedback_due_scan_reads_its_window_not_the_table(
    conn: asyncpg.Connection, first: int, analyzed: bool
) -> None:
    """A window of 30 documents (as the engine reads at a steady load) in a table of 3,000: the scan handles about
    the window's rows, not the table's. Before, with the service tested as a plain condition, a plan made while the
    table was small — analyzed with 5 rows, or never analyzed at 200 — took every document of the service from the
    ``messages_service`` index and searched each one's raw (3,093–12,023 rows handled here; in bench/gateway.py 9–57
    ms a call at 10,000 messages, most of PostgreSQL's CPU). Both situations happened on new installations."""
    fill = _Filler()
    await fill.add(conn, first)
    if analyzed:
        await conn.execute("ANALYZE")
    await conn.execute(f"PREPARE scan(bigint, text[], bigint) AS {_SCAN}")
    await _planned_now(conn, "scan", f"1, ARRAY{list(FED_KINDS)!r}, {SCAN_WINDOW}")
    await fill.add(conn, 3000)  # no ANALYZE
    lo = fill.seq - 3 * 30 + 1
    plan = await _planned_now(conn, "scan", f"{lo}, ARRAY{list(FED_KINDS)!r}, {SCAN_WINDOW}", explain=True)
    async with conn.transaction():
        row = await window_scan(conn, lo)
    assert row is not None and len(row["ids"]) == 10  # a third of the 30 carry FeedbackDue
    assert _work(plan) <= 20 * 30, plan


@pytest.mark.parametrize(("first", "analyzed"), [(5, True), (50, True)])
async def test_the_process_feed_reads_its_window_not_the_table(
    conn: asyncpg.Connection, first: int, analyzed: bool
) -> None:
    """The engine's feed (``hub.processes.engine._FEED``) of a window of 30 messages at 3,000, its statement made
    while the tables were small: about the window's rows handled. Under the generic plan such a statement gets after
    five executions (and at once on a pool that asks for generic plans) it was a nested loop of two whole-table scans
    (188,490 rows handled, statistics of 5 rows) or one scan of all the evidence (9,270, statistics of 50)."""
    fill = _Filler()
    await fill.add(conn, first)
    if analyzed:
        await conn.execute("ANALYZE")
    kinds, services = list(FED_KINDS), ["document.official", "document.receipt"]
    await conn.execute(f"PREPARE feed(bigint, bigint, text[], text[], int) AS {_FEED}")
    await _planned_now(conn, "feed", f"0, {fill.seq}, ARRAY{kinds!r}, ARRAY{services!r}, 500")
    await fill.add(conn, 3000)  # no ANALYZE
    lo = fill.seq - 3 * 30
    plan = await _planned_now(conn, "feed", f"{lo}, {fill.seq}, ARRAY{kinds!r}, ARRAY{services!r}, 500", explain=True)
    async with conn.transaction():
        rows = await fetch_planned_now(conn, _FEED, lo, fill.seq, kinds, services, 500)
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"  # the connection's own, after
    assert len(rows) == 30 and [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    assert _work(plan) <= 20 * 30, plan


async def test_the_engines_timers_and_outbox_read_what_is_due_not_the_history(conn: asyncpg.Connection) -> None:
    """Each engine pass (every half second) reads the due timers and the unpublished outbox rows: a few rows of a
    partial index beside a history that only grows. Statements first run while the tables held 5 rows: about those
    rows handled, not the 3,000 fired timers and published messages (with a generic plan,
    3,020 and 3,020)."""

    async def add(n: int, done: bool, start: int) -> None:
        await conn.execute(
            "INSERT INTO process_timers (process, kind, key, due_at, fired_at)"
            " SELECT 'documents', 'remind', 'm' || i, now() - interval '1 day', CASE WHEN $3 THEN now() END"
            " FROM generate_series($1::int, $2::int) AS i",
            start,
            start + n - 1,
            done,
        )
        await conn.execute(
            "INSERT INTO process_outbox (message_id, process, service, lane, body, created_at, published_at)"
            " SELECT gen_random_uuid(), 'documents', 'hub.notice', 'normal', '<Envelope/>'::bytea, now(),"
            " CASE WHEN $2 THEN now() END FROM generate_series(1, $1::int)",
            n,
            done,
        )

    await add(5, False, 0)
    await conn.execute("ANALYZE")
    await conn.execute(f"PREPARE due(timestamptz, int, text[]) AS {_DUE_TIMERS}")
    await conn.execute(f"PREPARE unpublished(int) AS {_UNPUBLISHED}")
    await _planned_now(conn, "due", "now(), 50, ARRAY['documents']")
    await _planned_now(conn, "unpublished", "50")
    await add(3000, True, 5)  # fired and published: the history
    for name, args in (("due", "now(), 50, ARRAY['documents']"), ("unpublished", "50")):
        plan = await _planned_now(conn, name, args, explain=True)
        assert _work(plan) <= 50, (name, plan)
    async with conn.transaction():
        assert len(await fetch_planned_now(conn, _DUE_TIMERS, datetime.now(UTC), 50, ["documents"])) == 5
        assert len(await fetch_planned_now(conn, _UNPUBLISHED, 50)) == 5


async def test_the_outbox_publishes_the_emergency_lane_first_from_its_index(conn: asyncpg.Connection) -> None:
    """A pass publishes at most 200 outbox rows. Oldest first, a late round's emergency resend queued after 1,000
    document reminders went out five passes (2.5 s) later; now the emergency lane's rows come first, each lane oldest
    first. Planned while the table was empty and read beside 20,000 published rows: the unpublished rows are read
    (the partial index), not the history."""
    await conn.execute("ANALYZE")
    await conn.execute(f"PREPARE unpublished(int) AS {_UNPUBLISHED}")
    await _planned_now(conn, "unpublished", "200")
    await conn.execute(
        "INSERT INTO process_outbox (message_id, process, service, lane, body, created_at, published_at)"
        " SELECT gen_random_uuid(), 'documents', 'hub.notice', 'normal', '<Envelope/>'::bytea, now(), now()"
        " FROM generate_series(1, 20000)"
    )
    await conn.execute(
        "INSERT INTO process_outbox (message_id, process, service, lane, body, created_at)"
        " SELECT gen_random_uuid(), 'documents', 'hub.notice', 'normal', '<Envelope/>'::bytea,"
        " now() - interval '1 hour' + i * interval '1 ms' FROM generate_series(1, 1000) AS i"
    )
    urgent = [uuid.uuid4(), uuid.uuid4()]
    for i, mid in enumerate(urgent):
        await conn.execute(
            "INSERT INTO process_outbox (message_id, process, service, lane, body, created_at)"
            " VALUES ($1, 'emergencies', 'hub.notice', 'emergency', '<Envelope/>'::bytea, now() + $2 * interval '1 ms')",
            mid,
            i,
        )
    async with conn.transaction():
        rows = await fetch_planned_now(conn, _UNPUBLISHED, 200)
    assert [r["message_id"] for r in rows[:2]] == [str(m) for m in urgent]
    assert {r["lane"] for r in rows[2:]} == {"normal"} and len(rows) == 200
    plan = await _planned_now(conn, "unpublished", "200", explain=True)
    assert _work(plan) <= 4 * 1002, plan


async def test_the_chainers_claim_stays_linear_under_a_plan_cached_on_an_empty_queue(conn: asyncpg.Connection) -> None:
    await conn.execute("ANALYZE")  # the staging queue, empty, as it is at most ANALYZEs
    await conn.execute(f"PREPARE claim(integer) AS {_CLAIM}")
    async with conn.transaction():
        await conn.execute("EXECUTE claim(1)")
    fill = _Filler()
    await fill.add(conn, 500)  # 1,500 staged records
    first = await conn.fetchval("SELECT min(id) FROM evidence_pending")

    async with conn.transaction():
        plan = await _cached_plan_run(conn, "claim", "700")
        assert plan["Actual Rows"] == 700
        # The claim takes the 700 oldest records, and the plan handled each row a few times at most.
        assert await conn.fetchval("SELECT min(id) FROM evidence_pending") == first + 700
        assert await conn.fetchval("SELECT count(*) FROM evidence_pending") == 800
        # 5,101 rows here; the join form: 3,225,550 (the LIMIT subquery's output again for each of the 1,500 records).
        assert _work(plan) <= 10 * 1500, plan


async def _stats_flushed(conn: asyncpg.Connection, table: str, *, dead_over: int) -> None:
    """Wait (up to 10 s) until the statistics views count more than ``dead_over`` dead rows of ``table``."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    for _ in range(200):
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        dead = await conn.fetchval("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = $1", table)
        if dead is not None and dead > dead_over:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the statistics never counted {table}'s dead rows (last: {dead})")


async def test_the_window_scan_is_costed_as_one_head_row_and_maintenance_vacuums_the_head(
    conn: asyncpg.Connection, empty_dsn: str
) -> None:
    """evidence_head has one row, updated by every chain job. While a snapshot is open its dead versions cannot be
    pruned; the table grows to pages PostgreSQL then estimates at hundreds of rows each — and the window scan's cost
    with them, past ``jit_above_cost`` (bench/gateway.py: compiled on every call, 15 ms of PostgreSQL CPU each)."""
    from hub.store.db import create_pool
    from hub.store.maintenance import maintain

    fill = _Filler()
    await fill.add(conn, 50)
    await conn.execute("ANALYZE")
    other = await asyncpg.connect(empty_dsn)
    try:
        async with other.transaction(isolation="repeatable_read"):
            await other.fetchval("SELECT count(*) FROM evidence")  # a snapshot held open
            for n in range(3000):
                await conn.execute("UPDATE evidence_head SET seq = $1 WHERE id", fill.seq + n)
    finally:
        await other.close()
    assert await conn.fetchval("SELECT pg_relation_size('evidence_head') / 8192") > 10
    # maintain() decides from pg_stat_user_tables, which a backend's counts reach only when it flushes them (at most
    # once a second when idle): without this wait the updates were sometimes not counted yet and nothing was due.
    await _stats_flushed(conn, "evidence_head", dead_over=100)

    await conn.execute(f"PREPARE head_scan(bigint, text[], bigint) AS {_SCAN}")
    (text,) = await conn.fetchrow(f"EXPLAIN (FORMAT JSON) EXECUTE head_scan(1, ARRAY{list(FED_KINDS)!r}, 2000)")
    plan = json.loads(text)[0]["Plan"]
    assert plan["Plan Rows"] == 1, plan
    assert plan["Total Cost"] < float(await conn.fetchval("SHOW jit_above_cost")), plan

    # Where autovacuum is off, the hub's own maintenance vacuums the head (and the processes' cursors) as well.
    assert "VACUUM (ANALYZE) evidence_head" in await maintain(conn, force=True)
    assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'evidence_head'::regclass") == 1

    # And no pool of the hub's compiles a statement.
    pool = await create_pool(empty_dsn, min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SHOW jit") == "off"
    finally:
        await pool.close()
