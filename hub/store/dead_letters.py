"""Dead letters (migration 016): what reached the ``ns.dead`` queue, kept for an operator to see and replay.

``insert`` is idempotent on ``dedup_key`` among pending rows (``hub.pipeline.dead.collect`` inserts, commits, then
acks: a crash between the two redelivers the same broker message, which finds its row and adds nothing). ``lock``
takes a row for a replay in the caller's transaction and refuses an unknown id (``DEAD_NOT_FOUND``) or a row no
longer pending (``DEAD_ALREADY_REPLAYED``); ``mark_replayed`` records who replayed it, when and why.

Nothing in a dead letter's headers or AMQP properties is signed: ``claimed_message_id``, ``reason``, ``code`` and
``detail`` are for display. ``message_id`` is set only when the body is byte for byte a recorded message (same id
*and* same SHA-256 as the ``messages`` row, which holds only bytes whose signature held).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from hub.errors import HubError
from hub.store.db import acquired, translated

__all__ = ["DeadLetter", "NewDeadLetter", "about", "get", "insert", "list_dead", "lock", "mark_replayed"]


@dataclass(frozen=True, slots=True)
class NewDeadLetter:
    """A dead letter as drained from the queue (``hub.pipeline.dead`` reads the headers into these fields)."""

    dedup_key: bytes
    first_seen: datetime
    kind: str  # inbound | delivery | other
    source_queue: str | None
    source_exchange: str | None
    routing_key: str | None
    reason: str | None
    code: str | None
    detail: str | None
    refused_by: str | None
    publisher: str | None
    claimed_message_id: str | None
    headers_json: str
    priority: int
    correlation_id: str | None
    body: bytes
    body_sha256: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A stored dead letter. ``body`` only from ``get`` / ``lock``. ``message_id`` is the recorded message whose
    exact bytes these are (None when unknown); ``claimed_message_id`` the AMQP message-id, unverified."""

    id: int
    first_seen: datetime
    kind: str
    source_queue: str | None
    source_exchange: str | None
    routing_key: str | None
    reason: str | None
    code: str | None
    detail: str | None
    refused_by: str | None
    publisher: str | None
    claimed_message_id: str | None
    message_id: str | None
    priority: int
    correlation_id: str | None
    body_size: int
    body_sha256: str
    state: str
    replayed_by: str | None
    replayed_at: datetime | None
    replay_reason: str | None
    headers_json: str = "{}"
    body: bytes | None = None


_COLUMNS: Final[str] = (
    "id, first_seen, kind, source_queue, source_exchange, routing_key, reason, code, detail, refused_by, publisher,"
    " claimed_message_id, message_id, priority, correlation_id, body_size, body_sha256, state, replayed_by,"
    " replayed_at, replay_reason, headers::text AS headers_json"
)


def _letter(r: Any) -> DeadLetter:
    return DeadLetter(
        id=r["id"],
        first_seen=r["first_seen"],
        kind=r["kind"],
        source_queue=r["source_queue"],
        source_exchange=r["source_exchange"],
        routing_key=r["routing_key"],
        reason=r["reason"],
        code=r["code"],
        detail=r["detail"],
        refused_by=r["refused_by"],
        publisher=r["publisher"],
        claimed_message_id=r["claimed_message_id"],
        message_id=None if r["message_id"] is None else str(r["message_id"]),
        priority=r["priority"],
        correlation_id=r["correlation_id"],
        body_size=r["body_size"],
        body_sha256=bytes(r["body_sha256"]).hex(),
        state=r["state"],
        replayed_by=r["replayed_by"],
        replayed_at=r["replayed_at"],
        replay_reason=r["replay_reason"],
        headers_json=r["headers_json"],
        body=bytes(r["body"]) if "body" in r.keys() else None,
    )


_INSERT = """
INSERT INTO dead_letters (dedup_key, first_seen, kind, source_queue, source_exchange, routing_key, reason, code,
                          detail, refused_by, publisher, claimed_message_id, message_id, headers, priority,
                          correlation_id, body, body_size, body_sha256)
SELECT u.k, u.seen, u.kind, u.q, u.x, u.rk, u.reason, u.code, u.detail, u.refused_by, u.publisher, u.claimed,
       (SELECT m.message_id FROM messages m
        WHERE u.claimed ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
          AND m.message_id = u.claimed::uuid AND m.raw_sha256 = u.sha),
       u.headers::jsonb, u.prio, u.corr, u.body, length(u.body), u.sha
FROM unnest($1::bytea[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::smallint[],
            $15::text[], $16::bytea[], $17::bytea[])
     AS u(k, seen, kind, q, x, rk, reason, code, detail, refused_by, publisher, claimed, headers, prio, corr, body,
          sha)
ON CONFLICT (dedup_key) WHERE state = 'pending' DO NOTHING
RETURNING id
"""


async def insert(executor: Any, letters: Sequence[NewDeadLetter]) -> int:
    """Store dead letters (one statement); a letter whose ``dedup_key`` a pending row already has is skipped.
    Returns how many rows were new."""
    if not letters:
        return 0
    cols: list[list[Any]] = [[] for _ in range(17)]
    for d in letters:
        for i, v in enumerate(
            (
                d.dedup_key,
                d.first_seen,
                d.kind,
                d.source_queue,
                d.source_exchange,
                d.routing_key,
                d.reason,
                d.code,
                d.detail,
                d.refused_by,
                d.publisher,
                d.claimed_message_id,
                d.headers_json,
                d.priority,
                d.correlation_id,
                d.body,
                d.body_sha256,
            )
        ):
            cols[i].append(v)
    async with translated("recording dead letters"), acquired(executor) as conn:
        rows = await conn.fetch(_INSERT, *cols)
    return len(rows)


async def list_dead(
    executor: Any, *, state: str | None = "pending", before_id: int | None = None, limit: int = 50
) -> list[DeadLetter]:
    """Dead letters newest first (pending by default; ``state=None`` for all), ``before_id`` pages on; no bodies."""
    limit = max(1, min(int(limit), 500))
    async with translated("listing dead letters"), acquired(executor) as conn:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM dead_letters"  # noqa: S608 - constant columns
            " WHERE ($1::text IS NULL OR state = $1) AND ($2::bigint IS NULL OR id < $2)"
            f" ORDER BY id DESC LIMIT {limit}",
            state,
            before_id,
        )
    return [_letter(r) for r in rows]


async def count_pending(executor: Any) -> int:
    async with translated("counting dead letters"), acquired(executor) as conn:
        return int(await conn.fetchval("SELECT count(*) FROM dead_letters WHERE state = 'pending'"))


async def get(executor: Any, dead_id: int) -> DeadLetter | None:
    """One dead letter with its body, or None."""
    async with translated("reading a dead letter"), acquired(executor) as conn:
        r = await conn.fetchrow(
            f"SELECT {_COLUMNS}, body FROM dead_letters WHERE id = $1",  # noqa: S608 - constant columns
            int(dead_id),
        )
    return None if r is None else _letter(r)


async def lock(conn: Any, dead_id: int) -> DeadLetter:
    """The pending dead letter ``dead_id`` with its body, locked (``FOR UPDATE``) in ``conn``'s transaction.
    ``DEAD_NOT_FOUND`` when there is none, ``DEAD_ALREADY_REPLAYED`` when it is no longer pending."""
    r = await conn.fetchrow(
        f"SELECT {_COLUMNS}, body FROM dead_letters WHERE id = $1 FOR UPDATE",  # noqa: S608 - constant columns
        int(dead_id),
    )
    if r is None:
        raise HubError(f"there is no dead letter {dead_id}", code="DEAD_NOT_FOUND")
    letter = _letter(r)
    if letter.state != "pending":
        raise HubError(
            f"dead letter {dead_id} was already {letter.state} by {letter.replayed_by} at "
            f"{letter.replayed_at:%Y-%m-%d %H:%M:%S}",
            code="DEAD_ALREADY_REPLAYED",
        )
    return letter


async def mark_replayed(
    conn: Any, dead_id: int, *, operator: str, reason: str, at: datetime, message_id: str | None = None
) -> None:
    """Mark a locked pending dead letter replayed (in the caller's transaction). ``message_id``: the signed id the
    replay verified, when the row had none (a delivery's bytes are the hub's wrapping, never a ``messages`` row)."""
    await conn.execute(
        "UPDATE dead_letters SET state = 'replayed', replayed_by = $2, replayed_at = $3, replay_reason = $4,"
        " message_id = coalesce(message_id, $5::uuid) WHERE id = $1 AND state = 'pending'",
        int(dead_id),
        operator,
        at,
        reason,
        None if message_id is None else uuid.UUID(message_id),
    )


async def about(conn: Any, message_id: uuid.UUID | None, *, claimed: str | None = None) -> list[DeadLetter]:
    """Dead letters about a message: those known to carry it (``message_id``: its exact recorded bytes, or the id a
    replay verified) and those claiming its id (oldest first, at most 100; no bodies)."""
    claim = claimed if claimed is not None else (None if message_id is None else str(message_id))
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM dead_letters"  # noqa: S608 - constant columns
        " WHERE ($1::uuid IS NOT NULL AND message_id = $1) OR ($2::text IS NOT NULL AND claimed_message_id = $2)"
        " ORDER BY id LIMIT 100",
        message_id,
        claim,
    )
    return [_letter(r) for r in rows]
