"""Ops-page search benchmark (issue 15): the page's message search and trace on a store of 1,000,000 messages.

A fresh PostgreSQL database ``hub_bench_search_<tag>`` (made through the admin database, ``HUB_BENCH_ADMIN_DSN`` to
change it; dropped at the end, also after a failure or Ctrl-C) is migrated with the hub's own migrations and filled
in SQL (``generate_series``, two connections in parallel, secondary indexes built after the load as a restore would):

* messages over the last 365 days, inserted in time order as the hub writes them: 60 sender systems (a few busy
  city and province systems, many quiet county ones), the services of ``schemas/services`` (documents and reports
  common, approvals and meetings rarer, emergencies rare), 密级 60 % 公开 / 35 % 内部 / 4 % 秘密 / 0.8 % 机密 / 0.2 %
  绝密, urgency mostly 平件, state 97 % accepted, 1.5 % rejected, 1.5 % quarantined (most released later, some
  rejected, a few still pending); signed bytes of ~1.6 KB each (distinct per message, compressed by lz4 as stored);
* 1–10 recipients per message (mostly 1–3; busy systems receive more) → deliveries in their tracking states;
* a receipt per message, evidence records per message (received, delivered, a tracking step for some), quarantine
  rows, refused intakes (some claiming a real message's id), dead letters.

Then ``ANALYZE`` and the timing, through ``hub.store.ops`` on an asyncpg pool as the ops page uses it: ``--searches``
searches (default 400) over a realistic mix of filter combinations (none, message id, sender, recipient, service,
密级, state, time windows, and pairs of these; one in four continues to the next page with the cursor), and
``--traces`` traces (default 300) of random messages. Per kind of search its p50/p95 are printed, and beside them the
baseline: a primary-key lookup of one message row on the same pool. Then the message path's price of the 016 indexes:
``record_batch`` of 64-message batches into the filled store with and without them (each in a transaction rolled
back). The last line::

    search_p95_ms=<n> trace_p95_ms=<n> rows=<messages in the store>

Goal: both under 100. Usage::

    .venv/bin/python bench/search.py                 # 1,000,000 messages (about 3 minutes on 2 cores)
    .venv/bin/python bench/search.py --rows 100000   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from hub.store import ops  # noqa: E402
from hub.store.db import create_pool, migrate  # noqa: E402

ADMIN_DSN = os.environ.get("HUB_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SYSTEMS = 60
SERVICES = sorted(p.name for p in (ROOT / "schemas" / "services").iterdir() if p.is_dir())
#: Relative weights: documents and reports are most of the traffic, emergencies a trickle.
WEIGHTS = {
    "document.official": 30,
    "document.receipt": 20,
    "info.report": 15,
    "data.query": 6,
    "data.response": 6,
    "meeting.notice": 4,
    "meeting.booking": 2,
    "meeting.confirm": 2,
    "approval.application": 3,
    "approval.decision": 2,
    "approval.status": 2,
    "approval.supervision": 1,
    "delivery.refusal": 1,
    "emergency.alert": 1,
    "emergency.update": 1,
    "emergency.ack": 1,
    "hub.receipt": 1,
    "hub.error": 1,
}
LABELS = ["公开", "内部", "秘密", "机密", "绝密"]
BODY = (
    "<q:Body><d:OfficialDocument><d:Title>关于做好森林防火工作的通知</d:Title><d:Text>"
    + "各县（市、区）林业主管部门：为切实做好冬春季森林防火工作，现将有关事项通知如下。" * 14
    + "</d:Text></d:OfficialDocument></q:Body><ds:Signature>"
    + "MIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBBQUAMBExDzANBgNVBAMMBnVudXNlZDAeFw0x" * 4
    + "</ds:Signature>"
)


def system(k: int) -> str:
    return f"sys-{k:02d}-oa"


# -- the fill --------------------------------------------------------------------------------------------------------

# Pseudo-random but deterministic per message number i: u(i, salt) in [0, 1).
U = "((hashint8(({i}) * 1000003 + {salt})::bigint & 2147483647)::float8 / 2147483648.0)"


def u(i: str, salt: int) -> str:
    return U.format(i=i, salt=salt)


def _service_case(i: str) -> str:
    total = sum(WEIGHTS.get(s, 1) for s in SERVICES)
    acc = 0.0
    parts = []
    for s in SERVICES:
        acc += WEIGHTS.get(s, 1) / total
        parts.append(f"WHEN {u(i, 2)} < {acc:.6f} THEN '{s}'")
    return "CASE " + " ".join(parts) + f" ELSE '{SERVICES[-1]}' END"


def _fill_sql(n: int, start: datetime) -> dict[str, str]:
    step_us = int(365 * 86400 * 1_000_000 / n)
    mid = "md5('m' || i)::uuid"
    recv = f"('{start.isoformat()}'::timestamptz + (i::bigint * {step_us}) * interval '1 microsecond')"
    # senders: a power law over 60 systems (system 0 busiest)
    sender = f"'sys-' || lpad(floor(power({u('i', 1)}, 2.2) * {SYSTEMS})::int::text, 2, '0') || '-oa'"
    cls = (
        f"CASE WHEN {u('i', 3)} < 0.60 THEN 0 WHEN {u('i', 3)} < 0.95 THEN 1 WHEN {u('i', 3)} < 0.99 THEN 2"
        f" WHEN {u('i', 3)} < 0.998 THEN 3 ELSE 4 END"
    )
    state = (
        f"CASE WHEN {u('i', 4)} < 0.970 THEN 'accepted' WHEN {u('i', 4)} < 0.985 THEN 'rejected'"
        f" WHEN {u('i', 4)} < 0.997 THEN 'released' WHEN {u('i', 4)} < 0.9995 THEN 'quarantine_rejected'"
        f" ELSE 'quarantined' END"
    )
    n_rcpt = f"(1 + floor(power({u('i', 5)}, 3) * 10))::int"
    base = f"floor(power({u('i', 6)}, 1.6) * {SYSTEMS})::int"
    messages = f"""
    INSERT INTO messages (message_id, conversation_id, ref_to, sender_agency, sender_system, service, version,
        classification, classification_label, urgency, created, expires, received_at, raw, raw_sha256, signer_serial,
        signer_fingerprint, state, error_code, error_reason, business_ref)
    SELECT {mid}, md5('c' || i)::uuid, NULL, '11220000MB0000000X', {sender}, svc, 1, cls,
           (ARRAY['公开','内部','秘密','机密','绝密'])[cls + 1],
           CASE WHEN {u("i", 7)} < 0.9 THEN '平件' WHEN {u("i", 7)} < 0.98 THEN '急件' ELSE '特急' END,
           r - interval '2 seconds', r + interval '3 days', r,
           convert_to('<q:Envelope xmlns:q="urn:forestry-hub:envelope:1" id="' || {mid} || '"><q:Header>'
                      || svc || '</q:Header>' || $2 || '</q:Envelope>', 'UTF8'),
           decode(md5('a' || i) || md5('b' || i), 'hex'), (1000 + i % 60)::text, repeat('ab', 32), st,
           CASE WHEN st = 'rejected' THEN 'ROUTE_NOT_ALLOWED' END,
           CASE WHEN st = 'rejected' THEN 'the sender may not send this service to that recipient' END, NULL
    FROM (SELECT i, {recv} AS r, {_service_case("i")} AS svc, {cls} AS cls, {state} AS st
          FROM generate_series($1::bigint, $3::bigint) i) g
    """
    deliveries = f"""
    INSERT INTO deliveries (message_id, recipient_system, recipient_agency, role, state, error_code, recorded_at,
        delivered_at, received_at, read_at, handled_at)
    SELECT {mid}, 'sys-' || lpad((({base} + k * 7) % {SYSTEMS})::text, 2, '0') || '-oa', '11220000MB0000000X',
           CASE WHEN k = 0 THEN 'to' ELSE 'cc' END, ds, NULL, r + interval '40 milliseconds',
           r + interval '90 milliseconds',
           CASE WHEN ds IN ('received', 'read', 'handled') THEN r + interval '20 minutes' END,
           CASE WHEN ds IN ('read', 'handled') THEN r + interval '2 hours' END,
           CASE WHEN ds = 'handled' THEN r + interval '2 days' END
    FROM (SELECT i, {recv} AS r, {state} AS st, {n_rcpt} AS n,
                 CASE WHEN {u("i", 8)} < 0.5 THEN 'delivered' WHEN {u("i", 8)} < 0.75 THEN 'received'
                      WHEN {u("i", 8)} < 0.9 THEN 'read' ELSE 'handled' END AS ds
          FROM generate_series($1::bigint, $2::bigint) i) g,
         generate_series(0, g.n - 1) k
    WHERE g.st IN ('accepted', 'released')
    """
    receipts = f"""
    INSERT INTO receipts (receipt_id, message_id, kind, recipient_system, code, at)
    SELECT md5('r' || i)::uuid, {mid}, CASE WHEN st = 'rejected' THEN 'hub.error' ELSE 'hub.receipt' END,
           {sender}, CASE WHEN st = 'rejected' THEN 'ROUTE_NOT_ALLOWED' END, r + interval '95 milliseconds'
    FROM (SELECT i, {recv} AS r, {state} AS st FROM generate_series($1::bigint, $2::bigint) i) g
    """
    evidence = f"""
    INSERT INTO evidence (seq, at, kind, message_id, actor, detail, prev_hash, hash)
    SELECT (i - 1) * 3 + e, r + e * interval '50 milliseconds',
           CASE e WHEN 1 THEN CASE WHEN st = 'rejected' THEN 'rejected' ELSE 'received' END
                  WHEN 2 THEN 'delivered' ELSE 'delivery_state' END,
           {mid}, CASE e WHEN 1 THEN '11220000MB0000000X/' || {sender} ELSE 'hub' END,
           '{{"sha256":"' || md5('a' || i) || md5('b' || i) || '","t":"' || r || '","to":["sys-01-oa"]}}',
           decode(repeat('00', 32), 'hex'), decode(md5('h' || i || e) || md5('g' || i || e), 'hex')
    FROM (SELECT i, {recv} AS r, {state} AS st FROM generate_series($1::bigint, $2::bigint) i) g,
         generate_series(1, 3) e
    WHERE e = 1 OR (e = 2 AND g.st IN ('accepted', 'released')) OR (e = 3 AND {u("i", 9)} < 0.3)
    """
    quarantine = f"""
    INSERT INTO quarantine (message_id, markings, status, reviewer, reason, created_at, decided_at)
    SELECT {mid}, ARRAY['秘密'], CASE st WHEN 'released' THEN 'released' WHEN 'quarantine_rejected' THEN 'rejected'
           ELSE 'pending' END, CASE WHEN st <> 'quarantined' THEN 'security1' END,
           CASE WHEN st <> 'quarantined' THEN 'reviewed' END, r, CASE WHEN st <> 'quarantined' THEN r + interval '1 hour' END
    FROM (SELECT i, {recv} AS r, {state} AS st FROM generate_series($1::bigint, $2::bigint) i) g
    WHERE st IN ('released', 'quarantine_rejected', 'quarantined')
    """
    rejections = f"""
    INSERT INTO intake_rejections (received_at, claimed_message_id, claimed_sender, service, amqp_user, raw, raw_size,
        raw_sha256, error_code, error_reason)
    SELECT {recv}, CASE WHEN i % 3 = 0 THEN ({mid})::text END, {sender}, 'document.official', 'ns.' || {sender},
           convert_to('<forged/>', 'UTF8'), 9, decode(md5('x' || i) || md5('y' || i), 'hex'),
           (ARRAY['SIG_VALUE','CERT_REVOKED','SCHEMA_VIOLATION','ENV_MALFORMED'])[1 + i % 4], 'refused'
    FROM generate_series($1::bigint, $2::bigint) i WHERE i % 100 = 7
    """
    return {
        "messages": messages,
        "deliveries": deliveries,
        "receipts": receipts,
        "evidence": evidence,
        "quarantine": quarantine,
        "intake_rejections": rejections,
    }


async def _secondary_indexes(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i"
        " WHERE i.schemaname = current_schema() AND i.tablename IN"
        " ('messages', 'deliveries', 'receipts', 'evidence', 'quarantine', 'intake_rejections')"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
    )
    return [(r["indexname"], r["indexdef"]) for r in rows]


async def fill(dsn: str, n: int) -> float:
    """Fill the store with ``n`` messages and everything about them; returns the seconds it took."""
    started = time.perf_counter()
    start = (datetime.now(UTC) - timedelta(days=365)).replace(microsecond=0)
    sqls = _fill_sql(n, start)
    conns = [await asyncpg.connect(dsn) for _ in range(2)]
    try:
        c0 = conns[0]
        await c0.execute("ALTER TABLE evidence DISABLE TRIGGER USER")
        indexes = await _secondary_indexes(c0)
        for name, _ in indexes:
            await c0.execute(f'DROP INDEX "{name}"')
        # the foreign keys too (a check per row while loading; re-added below with one validating join each)
        fks = await c0.fetch(
            "SELECT conrelid::regclass::text AS tab, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
            " WHERE contype = 'f' AND conrelid IN ('deliveries'::regclass, 'quarantine'::regclass)"
        )
        for fk in fks:
            await c0.execute(f'ALTER TABLE {fk["tab"]} DROP CONSTRAINT "{fk["conname"]}"')
        for c in conns:
            await c.execute("SET synchronous_commit = off; SET maintenance_work_mem = '512MB'")
        half = n // 2
        ranges = [(1, half), (half + 1, n)]
        for table, sql in sqls.items():
            t0 = time.perf_counter()
            if table == "messages":
                await asyncio.gather(*(c.execute(sql, lo, BODY, hi) for c, (lo, hi) in zip(conns, ranges, strict=True)))
            else:
                await asyncio.gather(*(c.execute(sql, lo, hi) for c, (lo, hi) in zip(conns, ranges, strict=True)))
            count = await c0.fetchval(f"SELECT count(*) FROM {table}")
            print(f"  {table:<18} {count:>10,} rows  {time.perf_counter() - t0:6.1f} s")
        await c0.execute("UPDATE evidence_head SET seq = (SELECT max(seq) FROM evidence) WHERE id")
        t0 = time.perf_counter()
        # the secondary indexes, two at a time (one per core)
        pending = list(indexes)

        async def build(c: asyncpg.Connection) -> None:
            while pending:
                _, ddl = pending.pop()
                await c.execute(ddl)

        await asyncio.gather(*(build(c) for c in conns))
        print(f"  {len(indexes)} secondary indexes built in {time.perf_counter() - t0:.1f} s")
        await c0.execute("ALTER TABLE evidence ENABLE TRIGGER USER")
        t0 = time.perf_counter()
        for fk in fks:
            await c0.execute(f'ALTER TABLE {fk["tab"]} ADD CONSTRAINT "{fk["conname"]}" {fk["def"]}')
        print(f"  {len(fks)} foreign keys checked in {time.perf_counter() - t0:.1f} s")
        await _dead_letters(c0, n)
        t0 = time.perf_counter()
        await asyncio.gather(
            conns[0].execute("VACUUM (ANALYZE) messages"), conns[1].execute("VACUUM (ANALYZE) deliveries")
        )
        await c0.execute("VACUUM (ANALYZE)")
        print(f"  VACUUM ANALYZE {time.perf_counter() - t0:.1f} s")
    finally:
        for c in conns:
            await c.close()
    return time.perf_counter() - started


async def _dead_letters(conn: asyncpg.Connection, n: int) -> None:
    await conn.execute(
        """
        INSERT INTO dead_letters (dedup_key, first_seen, kind, source_queue, routing_key, reason, code, detail,
            claimed_message_id, message_id, body, body_size, body_sha256, state, replayed_by, replayed_at,
            replay_reason)
        SELECT decode(md5('k' || i) || md5('l' || i), 'hex'), now() - i * interval '1 hour', 'inbound',
               'bench.in.normal', 'normal', 'hub', 'DELIVERY_STORE', 'PostgreSQL is unavailable',
               (md5('m' || (i * 997 % $1 + 1))::uuid)::text, md5('m' || (i * 997 % $1 + 1))::uuid,
               '\\x3c782f3e'::bytea, 4, decode(md5('k' || i) || md5('l' || i), 'hex'),
               CASE WHEN i % 2 = 0 THEN 'replayed' ELSE 'pending' END,
               CASE WHEN i % 2 = 0 THEN 'duty1' END, CASE WHEN i % 2 = 0 THEN now() END,
               CASE WHEN i % 2 = 0 THEN 'database back' END
        FROM generate_series(1, 500) i
        """,
        n,
    )


# -- the timing ------------------------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))]


def _mid(i: int) -> str:
    import hashlib

    return str(uuid.UUID(hashlib.md5(f"m{i}".encode()).hexdigest()))


def search_cases(rnd: random.Random, n: int, end: datetime) -> list[tuple[str, dict[str, Any]]]:
    """(kind, filters) in the mix an operator uses: mostly a single filter, often a pair, sometimes a time window."""

    def window(days: float) -> dict[str, Any]:
        until = end - timedelta(days=rnd.uniform(0, 365 - days))
        return {"since": until - timedelta(days=days), "until": until}

    def a_system() -> str:
        return system(min(SYSTEMS - 1, int(rnd.random() ** 1.5 * SYSTEMS)))

    makers: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("none", lambda: {}),
        ("message_id", lambda: {"message_id": _mid(rnd.randint(1, n))}),
        ("sender", lambda: {"sender": a_system()}),
        ("recipient", lambda: {"recipient": a_system()}),
        ("service", lambda: {"service": rnd.choice(SERVICES)}),
        ("classification", lambda: {"classification": rnd.choice([0, 1, 2, 3, 4])}),
        ("state", lambda: {"state": rnd.choice(["rejected", "quarantined", "released", "quarantine_rejected"])}),
        ("day", lambda: window(1)),
        ("sender+week", lambda: {"sender": a_system(), **window(7)}),
        ("recipient+service", lambda: {"recipient": a_system(), "service": rnd.choice(SERVICES)}),
        ("service+classification", lambda: {"service": rnd.choice(SERVICES), "classification": rnd.choice([1, 2, 3])}),
        ("sender+state", lambda: {"sender": a_system(), "state": rnd.choice(["accepted", "rejected"])}),
        ("recipient+month", lambda: {"recipient": a_system(), **window(30)}),
        ("classification+day", lambda: {"classification": rnd.choice([0, 2, 4]), **window(1)}),
    ]
    return [(kind, make()) for kind, make in makers]


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = await fn()
    return (time.perf_counter() - t0) * 1000, out


async def measure(dsn: str, n: int, searches: int, traces: int) -> tuple[float, float]:
    rnd = random.Random(15)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    end = datetime.now(UTC)
    try:
        # warm-up: every kind once, some traces (a page in use has its statements prepared and its pages cached)
        for _, f in search_cases(rnd, n, end):
            await ops.search_messages(pool, **f)
        for _ in range(20):
            await ops.trace(pool, _mid(rnd.randint(1, n)))

        by_kind: dict[str, list[float]] = {}
        all_search: list[float] = []
        slowest: list[tuple[float, str, dict[str, Any]]] = []
        rows_seen = 0
        while len(all_search) < searches:
            for kind, f in search_cases(rnd, n, end):
                ms, rows = await timed(lambda f=f: ops.search_messages(pool, **f))  # type: ignore[misc]
                slowest.append((ms, kind, f))
                by_kind.setdefault(kind, []).append(ms)
                all_search.append(ms)
                rows_seen += len(rows)
                if rows and rnd.random() < 0.25:  # the next page
                    ms, rows = await timed(
                        lambda f=f, rows=rows: ops.search_messages(pool, before=rows[-1].cursor, **f)  # type: ignore[misc]
                    )
                    by_kind.setdefault(f"{kind} (next page)", []).append(ms)
                    slowest.append((ms, f"{kind} (next page)", f))
                    all_search.append(ms)
        trace_ms: list[float] = []
        evidence_n = 0
        for _ in range(traces):
            ms, t = await timed(lambda: ops.trace(pool, _mid(rnd.randint(1, n))))
            assert t is not None
            evidence_n += len(t.evidence)
            trace_ms.append(ms)
        base_ms: list[float] = []
        for _ in range(traces):
            mid = uuid.UUID(_mid(rnd.randint(1, n)))
            ms, _ = await timed(
                lambda mid=mid: pool.fetchrow("SELECT message_id, state FROM messages WHERE message_id = $1", mid)  # type: ignore[misc]
            )
            base_ms.append(ms)
        print()
        print(f"{'检索 search (ms)':34}{'n':>6}{'p50':>9}{'p95':>9}{'max':>9}")
        for kind, values in sorted(by_kind.items(), key=lambda kv: kv[0].replace(" (next page)", "~")):
            print(
                f"{'  ' + kind:34}{len(values):>6}{statistics.median(values):>9.2f}{pct(values, 95):>9.2f}{max(values):>9.2f}"
            )
        print(
            f"{'  all searches':34}{len(all_search):>6}{statistics.median(all_search):>9.2f}"
            f"{pct(all_search, 95):>9.2f}{max(all_search):>9.2f}   ({rows_seen:,} rows returned)"
        )
        for ms, kind, f in sorted(slowest, key=lambda x: x[0], reverse=True)[:3]:
            shown = {k: (v.strftime("%Y-%m-%d") if isinstance(v, datetime) else v) for k, v in f.items()}
            print(f"    slowest: {ms:.1f} ms {kind} {shown}")
        print(
            f"{'追踪 trace (ms)':34}{len(trace_ms):>6}{statistics.median(trace_ms):>9.2f}"
            f"{pct(trace_ms, 95):>9.2f}{max(trace_ms):>9.2f}   ({evidence_n / len(trace_ms):.1f} evidence records each)"
        )
        print(
            f"{'基线 baseline: primary-key lookup':34}{len(base_ms):>6}{statistics.median(base_ms):>9.2f}"
            f"{pct(base_ms, 95):>9.2f}{max(base_ms):>9.2f}"
        )
        return pct(all_search, 95), pct(trace_ms, 95)
    finally:
        await pool.close()


async def index_cost(dsn: str, batches: int = 30) -> None:
    """The message path's price of 016's search indexes: record_batch of 64-message batches into the filled store,
    with them and without them (each run in a transaction that is rolled back), interleaved."""
    from hub.store.messages import record_batch
    from hub.store.records import DeliveryRecord, MessageRecord

    def batch() -> list[MessageRecord]:
        now = datetime.now(UTC)
        out = []
        for _ in range(64):
            mid = str(uuid.uuid4())
            out.append(
                MessageRecord(
                    message_id=mid, conversation_id=mid, sender_agency="11220000MB0000000X", sender_system=system(3),
                    service="document.official", version=1, classification=1, classification_label="内部",
                    urgency="平件", created=now, expires=now + timedelta(days=1), raw=(mid + BODY).encode(),
                    deliveries=(DeliveryRecord("11220000MB0000000X", system(7)),),
                )
            )  # fmt: skip
        return out

    conn = await asyncpg.connect(dsn)
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for r in range(batches * 2):
            with_indexes = r % 2 == 0
            tr = conn.transaction()
            await tr.start()
            try:
                if not with_indexes:
                    await conn.execute("DROP INDEX messages_service, messages_state_rare, messages_classified")
                b = batch()
                t0 = time.perf_counter()
                await record_batch(conn, b)
                times[with_indexes].append((time.perf_counter() - t0) * 1000 / len(b))
            finally:
                await tr.rollback()
    finally:
        await conn.close()
    w, wo = statistics.median(times[True][2:]), statistics.median(times[False][2:])
    print(
        f"写入代价 message path: record_batch of 64 into the filled store, per message: {w:.3f} ms with 016's indexes,"
        f" {wo:.3f} ms without ({(w - wo) * 1000:+.0f} µs, {100 * (w - wo) / wo:+.0f} %)"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="messages in the store (default 1,000,000)")
    parser.add_argument("--searches", type=int, default=400)
    parser.add_argument("--traces", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    db = f"hub_bench_search_{tag}"
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + "/" + db
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        version = await admin.fetchval("SHOW server_version")
        await admin.execute(f'CREATE DATABASE "{db}"')
    finally:
        await admin.close()
    print(
        f"bench/search.py: {args.rows:,} messages; PostgreSQL {version}; {os.cpu_count()} cores;"
        f" Python {platform.python_version()}, {platform.machine()}; database {db}"
    )
    try:
        await migrate(dsn)
        print("填充 fill:")
        seconds = await fill(dsn, args.rows)
        async with asyncpg.create_pool(dsn, min_size=1, max_size=1) as p:
            size = await p.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
            rows = await p.fetchval("SELECT count(*) FROM messages")
        print(f"  filled in {seconds:.0f} s; database {size}")
        search_p95, trace_p95 = await measure(dsn, rows, args.searches, args.traces)
        await index_cost(dsn)
    finally:
        if not args.keep:
            admin = await asyncpg.connect(ADMIN_DSN)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            finally:
                await admin.close()
    print(f"search_p95_ms={search_p95:.1f} trace_p95_ms={trace_p95:.1f} rows={rows}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
