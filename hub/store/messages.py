"""Messages, deliveries, receipts, quarantine and refused intake: the repositories of 001_core.sql.

Every function takes an asyncpg connection or pool, runs in one transaction, writes its evidence records in the
same transaction (so a message is never recorded without its evidence, nor evidence without its message), and
batches its multi-row work (``unnest`` arrays; ``record_batch`` and ``record_sent`` are one statement each).
Rows are written in message-id order so that two workers recording overlapping batches cannot deadlock on the
primary-key index.

Deduplication: ``messages.message_id`` is the signed message id; ``INSERT … ON CONFLICT DO NOTHING RETURNING``
tells in the same statement which ids were new. A duplicate gets nothing written, and its ``RecordOutcome``
says what is still missing (pending deliveries, the receipt) so a worker can finish a message another worker
recorded before crashing.

Transient database failures become ``StoreUnavailable``; an unknown or already-decided quarantine id is a
``HubError`` with code ``QUARANTINE_NOT_FOUND`` / ``QUARANTINE_DECIDED``.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from hub.errors import HubError
from hub.store.audit import Actor
from hub.store.db import acquired, fetch_planned_now, transaction, translated
from hub.store.evidence import append, canonical_detail, format_at
from hub.store.records import (
    DELIVERY_RANK,
    DeliveryStatus,
    DeliveryUpdate,
    EvidenceEntry,
    MessageRecord,
    QuarantineItem,
    ReceiptRecord,
    RecordOutcome,
    Rejection,
)

__all__ = [
    "REJECTED_RAW_CAP",
    "delivered_from",
    "delivery_state",
    "mark_delivered",
    "quarantine_list",
    "quarantine_reject",
    "quarantine_release",
    "quarantine_show",
    "record_batch",
    "record_rejection",
    "record_sent",
    "sent_message_status",
    "sent_messages",
    "update_delivery_state",
    "update_delivery_states",
]

#: How much of a refused (possibly hostile, possibly huge) message is kept; its digest and size cover all of it.
REJECTED_RAW_CAP: Final[int] = 64 * 1024
#: Untrusted claims (ids, sender names read from refused bytes) are cut to this length.
_CLAIM_CAP: Final[int] = 200

#: Quarantine markings travel as one JSON array per message (unnest cannot carry an array of arrays).
_fields_json: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

_EVIDENCE_KIND = {"accepted": "received", "quarantined": "quarantined", "rejected": "rejected"}
_STATE_COLUMN: Final[dict[str, str]] = {
    "delivered": "delivered_at",
    "blocked": "blocked_at",
    "received": "received_at",
    "read": "read_at",
    "handled": "handled_at",
    "feedback": "feedback_at",
    "failed": "failed_at",
}
_TIME_COLUMNS = ("recorded_at", *_STATE_COLUMN.values())


def _now() -> datetime:
    return datetime.now(UTC)


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


#: A message id as the envelope XSD admits it and ``str(uuid4())`` writes it: lower-case 8-4-4-4-12 hex.
_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _id_text(value: str | uuid.UUID) -> str:
    """The canonical text of an id. A canonical text is taken as it is (the hot path: no ``uuid.UUID`` per id;
    asyncpg encodes the text in C); anything else is parsed, raising ``ValueError`` when it is not a UUID.
    Canonical texts sort in the ids' byte order, which is PostgreSQL's order of uuid keys."""
    if type(value) is str and _CANONICAL_ID.fullmatch(value):
        return value
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(value))


def _id_text_or_none(value: str | uuid.UUID | None) -> str | None:
    if value is None or value == "":
        return None
    return _id_text(value)


def _claim(value: str | None) -> str | None:
    return None if value is None else value[:_CLAIM_CAP]


def _digest(raw: bytes, given: str) -> bytes:
    return bytes.fromhex(given) if given else hashlib.sha256(raw).digest()


# -- recording -------------------------------------------------------------------------------------------------------

_RECORD_BATCH = """
WITH ins AS (
    INSERT INTO messages (message_id, conversation_id, ref_to, sender_agency, sender_system, service, version,
                          classification, classification_label, urgency, created, expires, received_at, raw,
                          raw_sha256, signer_serial, signer_fingerprint, state, error_code, error_reason, business_ref)
    SELECT * FROM unnest($1::hub_message_row[])
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
), dlv AS (
    INSERT INTO deliveries (message_id, recipient_system, recipient_agency, role, state, error_code, recorded_at,
                            blocked_at)
    SELECT u.message_id, u.recipient_system, u.recipient_agency, u.role, u.state, u.error_code, $2,
           CASE WHEN u.state = 'blocked' THEN $2::timestamptz END
    FROM unnest($3::hub_delivery_row[]) AS u
    WHERE u.message_id IN (SELECT message_id FROM ins)
), held AS (
    INSERT INTO quarantine (message_id, markings, created_at)
    SELECT q.m, ARRAY(SELECT json_array_elements_text(q.k::json)), $2
    FROM unnest($4::uuid[], $5::text[]) AS q(m, k)
    WHERE q.m IN (SELECT message_id FROM ins)
), refused AS (
    INSERT INTO intake_rejections (received_at, claimed_message_id, claimed_sender, service, amqp_user, raw, raw_size,
                                   raw_sha256, error_code, error_reason)
    SELECT * FROM unnest($6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bytea[],
                         $12::int[], $13::bytea[], $14::text[], $15::text[])
), staged AS (
    -- evidence of the new messages (and of every refusal, which has no message id), in the order given
    INSERT INTO evidence_pending (at, kind, message_id, actor, detail)
    SELECT $2, e.kind, e.message_id, e.actor, e.detail
    FROM unnest($16::hub_evidence_row[]) WITH ORDINALITY AS e(kind, message_id, actor, detail, n)
    WHERE e.message_id IS NULL OR e.message_id IN (SELECT message_id FROM ins)
    ORDER BY e.n
)
SELECT message_id FROM ins
"""

_EXISTING = """
SELECT m.message_id, m.state,
       coalesce(array_agg(d.recipient_system ORDER BY d.recipient_system)
                FILTER (WHERE d.state = 'pending'), '{}') AS pending,
       EXISTS (SELECT 1 FROM receipts r WHERE r.message_id = m.message_id) AS answered
FROM messages m LEFT JOIN deliveries d ON d.message_id = m.message_id
WHERE m.message_id = ANY($1::uuid[])
GROUP BY m.message_id, m.state
"""


def _message_evidence(rec: MessageRecord, mid: str, digest: bytes) -> list[EvidenceEntry]:
    """The evidence of one newly recorded message: what, from whom, its digest, to whom, what was blocked."""
    actor = f"{rec.sender_agency}/{rec.sender_system}"
    detail: dict[str, Any] = {
        "service": f"{rec.service}/{rec.version}",
        "sha256": digest.hex(),
        "classification": rec.classification,
        "urgency": rec.urgency,
        "to": [d.recipient_system for d in rec.deliveries if d.state == "pending"],
    }
    if rec.markings:
        detail["markings"] = list(rec.markings)
    if rec.error_code:
        detail["code"] = rec.error_code
    detail.update(rec.detail)
    entries = [EvidenceEntry(_EVIDENCE_KIND[rec.state], actor, mid, detail)]
    blocked = [{"system": d.recipient_system, "code": d.error_code} for d in rec.deliveries if d.state == "blocked"]
    if blocked:
        entries.append(EvidenceEntry("blocked", "hub", mid, {"recipients": blocked}))
    return entries


async def record_batch(
    executor: Any, records: Sequence[MessageRecord], rejections: Sequence[Rejection] = ()
) -> list[RecordOutcome]:
    """Record a batch in ONE statement (atomic on its own, one round trip): new messages, their deliveries,
    quarantine entries, refused intake (``rejections``, optional) and all their evidence. Returns one outcome per
    record, in order (see ``RecordOutcome``).

    Everything that depends on a message being new (its deliveries, quarantine entry and evidence) is filtered in
    SQL by the ids the ``INSERT … ON CONFLICT DO NOTHING`` returned, so a duplicate writes nothing. Only when there
    are duplicates does a second statement read what the store already holds about them (a new snapshot, which
    sees a copy another worker committed while this statement waited on its row)."""
    ids = [_id_text(rec.message_id) for rec in records]
    first: dict[str, int] = {}
    for i, u in enumerate(ids):
        first.setdefault(u, i)
    order = sorted(first)  # primary-key order (canonical texts sort as the uuids do): no deadlocks between workers
    now = _now()
    t = format_at(now)
    recs = [records[first[u]] for u in order]
    digests = [_digest(r.raw, r.digest) for r in recs]

    deliveries: list[tuple[str, str, str, str, str, str | None]] = []
    held_ids: list[str] = []
    held_markings: list[str] = []
    staged: list[tuple[EvidenceEntry, str | None]] = []  # with the id that must be new for it to be written
    for u, rec, digest in zip(order, recs, digests, strict=True):
        seen: set[str] = set()
        for d in rec.deliveries:
            if d.recipient_system in seen:
                continue  # one delivery per recipient system: the first role listed wins
            seen.add(d.recipient_system)
            deliveries.append((u, d.recipient_system, d.recipient_agency, d.role, d.state, d.error_code))
        if rec.state == "quarantined":
            held_ids.append(u)
            held_markings.append(_fields_json(list(rec.markings)))
        staged += [(e, u) for e in _message_evidence(rec, u, digest)]
    rdigests = [_digest(r.raw, r.digest) for r in rejections]
    staged += [(_rejection_evidence(r, digest), None) for r, digest in zip(rejections, rdigests, strict=True)]
    # One row per message, in the column order of hub_message_row (migration 008).
    message_rows = [
        (
            u,
            _id_text_or_none(r.conversation_id),
            _id_text_or_none(r.ref_to),
            r.sender_agency,
            r.sender_system,
            r.service,
            r.version,
            r.classification,
            r.classification_label,
            r.urgency,
            r.created,
            r.expires,
            r.received_at or now,
            r.raw,
            digest,
            None if r.signer_serial is None else str(r.signer_serial),
            r.signer_fingerprint,
            r.state,
            r.error_code,
            r.error_reason,
            r.business_ref,
        )
        for u, r, digest in zip(order, recs, digests, strict=True)
    ]

    async with translated("recording a batch"), acquired(executor) as conn:
        rows = await conn.fetch(
            _RECORD_BATCH,
            message_rows,
            now,
            deliveries,
            held_ids,
            held_markings,
            [r.received_at or now for r in rejections],
            [_claim(r.claimed_message_id) for r in rejections],
            [_claim(r.claimed_sender) for r in rejections],
            [_claim(r.service) for r in rejections],
            [_claim(r.amqp_user) for r in rejections],
            [r.raw[:REJECTED_RAW_CAP] for r in rejections],
            [len(r.raw) for r in rejections],
            rdigests,
            [r.error_code for r in rejections],
            [r.error_reason[:1000] for r in rejections],
            [(e.kind, u, e.actor, canonical_detail({**e.detail, "t": t})) for e, u in staged],
        )
        inserted = {str(row["message_id"]) for row in rows}
        existing: dict[str, Any] = {}
        dupes = [u for u in order if u not in inserted]
        if dupes:
            existing = {str(row["message_id"]): row for row in await conn.fetch(_EXISTING, dupes)}

    outcomes: list[RecordOutcome] = []
    for i, (rec, u) in enumerate(zip(records, ids, strict=True)):
        if first[u] != i:
            outcomes.append(RecordOutcome(rec.message_id, True, rec.state, in_batch=True))
        elif u in inserted:
            pending = (
                tuple(dict.fromkeys(d.recipient_system for d in rec.deliveries if d.state == "pending"))
                if rec.state == "accepted"
                else ()
            )
            outcomes.append(RecordOutcome(rec.message_id, False, rec.state, pending, True))
        else:
            row = existing.get(u)
            if row is None:  # pragma: no cover - a conflict without a row cannot happen: the row was committed
                raise HubError(f"message {rec.message_id} conflicted but is not recorded", code="INTERNAL")
            state = row["state"]
            deliverable = state in ("accepted", "released")
            outcomes.append(
                RecordOutcome(
                    rec.message_id,
                    True,
                    state,
                    tuple(row["pending"]) if deliverable else (),
                    not row["answered"],
                )
            )
    return outcomes


def _rejection_evidence(r: Rejection, digest: bytes) -> EvidenceEntry:
    detail: dict[str, Any] = {"code": r.error_code, "sha256": digest.hex(), "size": len(r.raw)}
    if r.claimed_message_id:
        detail["claimed_message_id"] = _claim(r.claimed_message_id)
    if r.claimed_sender:
        detail["claimed_sender"] = _claim(r.claimed_sender)
    return EvidenceEntry("rejected", _claim(r.amqp_user) or "unknown", None, detail)


async def record_rejection(executor: Any, rejection: Rejection) -> None:
    """Record one message refused before its signature was trusted (capped bytes, digest, code), with evidence:
    ``record_batch`` with no messages."""
    await record_batch(executor, (), [rejection])


_DELIVERED_FROM = """
SELECT q.message_id::text AS message_id, q.recipient_system, m.sender_agency, m.sender_system
FROM unnest($1::uuid[], $2::text[]) AS q(message_id, recipient_system)
JOIN deliveries d ON d.message_id = q.message_id AND d.recipient_system = q.recipient_system
JOIN messages m ON m.message_id = q.message_id
WHERE d.state <> 'blocked' AND m.state IN ('accepted', 'released')
"""


async def delivered_from(executor: Any, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
    """For the (message id, recipient system) ``pairs`` the hub delivered — or is delivering: a delivery row that is
    not blocked, of a message accepted or released (a row is written pending and marked delivered once the broker
    confirmed; a recipient may answer in between) — that message's original sender, (agency, system). What
    ``hub.pipeline.decide.vouch_refusal`` asks of a batch's ``delivery.refusal`` messages: ONE statement (primary-key
    look-ups), read only for batches that hold refusals. Ids are canonical (``_id_text``); keys come back so."""
    keys = sorted({(_id_text(m), s) for m, s in pairs})
    if not keys:
        return {}
    async with translated("reading the deliveries refusals name"), acquired(executor) as conn:
        rows = await conn.fetch(_DELIVERED_FROM, [m for m, _ in keys], [s for _, s in keys])
    return {(r["message_id"], r["recipient_system"]): (r["sender_agency"], r["sender_system"]) for r in rows}


_RECORD_SENT = """
WITH d AS (
    UPDATE deliveries SET state = 'delivered', delivered_at = coalesce(delivered_at, $2), error_code = NULL
    WHERE message_id = ANY($1::uuid[]) AND state IN ('pending', 'failed')
    RETURNING message_id, recipient_system
), r AS (
    INSERT INTO receipts (receipt_id, message_id, kind, recipient_system, code, at)
    SELECT x.receipt_id, x.message_id, x.kind, x.recipient_system, x.code, x.at
    FROM unnest($3::hub_receipt_row[]) AS x
    ON CONFLICT (receipt_id) DO NOTHING
    RETURNING receipt_id
), sent AS (
    -- the receipts recorded now: their canonical JSON object (inside a "delivered" record) and their own detail
    SELECT e.receipt_id AS rid, e.message_id AS m, e.evidence_object AS obj, e.evidence_detail AS detail, e.n
    FROM unnest($3::hub_receipt_row[]) WITH ORDINALITY
         AS e(receipt_id, message_id, kind, recipient_system, code, at, evidence_object, evidence_detail, n)
    WHERE e.receipt_id IN (SELECT receipt_id FROM r)
), delivered AS (
    SELECT message_id, string_agg('"' || recipient_system || '"', ',' ORDER BY recipient_system) AS recipients
    FROM d GROUP BY message_id
)
-- One "delivered" record per message, carrying the receipts sent with its deliveries; written exactly as
-- hub.store.evidence would encode it: {"receipts":[{…},…],"t":"…","to":["…",…]} (sorted keys; system ids are
-- [a-z0-9-] only and need no escaping; "receipts" only when there are some). A receipt sent without deliveries
-- (quarantined, refused, a resumed batch) keeps a "receipt_sent" record of its own.
INSERT INTO evidence_pending (at, kind, message_id, actor, detail)
SELECT $2, 'delivered', dl.message_id, 'hub',
       '{' || coalesce('"receipts":[' || (SELECT string_agg(s.obj, ',' ORDER BY s.n) FROM sent s
                                          WHERE s.m = dl.message_id) || '],', '')
       || '"t":"' || $4 || '","to":[' || dl.recipients || ']}'
FROM delivered dl
UNION ALL
SELECT $2, 'receipt_sent', s.m, 'hub', s.detail
FROM sent s
WHERE s.m IS NULL OR s.m NOT IN (SELECT message_id FROM delivered)
"""


async def record_sent(executor: Any, delivered: Iterable[str] = (), receipts: Sequence[ReceiptRecord] = ()) -> None:
    """After the broker confirmed a batch: mark every pending delivery of the ``delivered`` messages delivered and
    record the ``receipts`` sent, with their evidence — ONE statement (atomic on its own, one round trip), one
    evidence record per message (its deliveries and the receipts that went with them). Repeating it is harmless:
    nothing is pending any more and a receipt id is recorded once, so no evidence is written twice."""
    ids = sorted({_id_text(m) for m in delivered})  # primary-key order
    if not ids and not receipts:
        return
    now = _now()
    t = format_at(now)
    rows: list[tuple[Any, ...]] = []  # hub_receipt_row (migration 010)
    for r in receipts:
        rid = _id_text(r.receipt_id)
        detail: dict[str, Any] = {"receipt_id": rid, "type": r.kind}
        if r.code:
            detail["code"] = r.code
        if r.recipient_system:
            detail["to"] = r.recipient_system
        obj = canonical_detail(detail)
        detail["t"] = t
        rows.append(
            (
                rid,
                _id_text_or_none(r.message_id),
                r.kind,
                r.recipient_system,
                r.code,
                r.at or now,
                obj,
                canonical_detail(detail),
            )
        )
    async with translated("recording deliveries"), acquired(executor) as conn:
        await conn.execute(_RECORD_SENT, ids, now, rows, t)


async def mark_delivered(executor: Any, message_ids: Iterable[str]) -> None:
    """Mark every pending (or failed) delivery of these messages delivered (``record_sent`` without receipts)."""
    await record_sent(executor, message_ids, ())


# -- document tracking -----------------------------------------------------------------------------------------------


def _status(row: Any) -> DeliveryStatus:
    times = {"pending": row["recorded_at"]}
    for state, column in _STATE_COLUMN.items():
        if row[column] is not None:
            times[state] = row[column]
    return DeliveryStatus(
        message_id=str(row["message_id"]),
        recipient_agency=row["recipient_agency"],
        recipient_system=row["recipient_system"],
        role=row["role"],
        state=row["state"],
        error_code=row["error_code"],
        times=times,
    )


_DELIVERY_COLUMNS = "message_id, recipient_system, recipient_agency, role, state, error_code, " + ", ".join(
    _TIME_COLUMNS
)


async def delivery_state(executor: Any, message_id: str) -> list[DeliveryStatus]:
    """Every delivery of a message, by recipient system."""
    async with translated("reading deliveries"), transaction(executor) as conn:
        rows = await conn.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE message_id = $1 ORDER BY recipient_system",  # noqa: S608
            _uuid(message_id),
        )
    return [_status(r) for r in rows]


_SENT_MESSAGE = """
SELECT message_id, service, version, urgency, classification_label, state, error_code, received_at
FROM messages WHERE message_id = $1 AND sender_system = $2
"""
_SENT_RECEIPTS = """
SELECT receipt_id, kind, recipient_system, code, at FROM receipts WHERE message_id = $1 ORDER BY at, receipt_id
"""


async def sent_message_status(executor: Any, message_id: str, sender_system: str) -> dict[str, Any] | None:
    """The state of a message ``sender_system`` sent, as JSON-ready values (times in ISO 8601): the message's state
    and error code, each recipient's delivery (state, error code, when it reached each state) and the answers the
    hub sent about it. None for an unknown id, an id that is not a UUID, or another system's message."""
    try:
        u = _uuid(message_id)
    except ValueError:
        return None
    async with translated("reading a message's state"), transaction(executor) as conn:
        row = await conn.fetchrow(_SENT_MESSAGE, u, sender_system)
        if row is None:
            return None
        deliveries = await conn.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE message_id = $1 ORDER BY recipient_system",  # noqa: S608
            u,
        )
        receipts = await conn.fetch(_SENT_RECEIPTS, u)
    return {
        "message_id": str(row["message_id"]),
        "service": f"{row['service']}/{row['version']}",
        "urgency": row["urgency"],
        "classification": row["classification_label"],
        "state": row["state"],
        "error_code": row["error_code"],
        "received_at": row["received_at"].isoformat(),
        "deliveries": [_delivery_json(_status(r)) for r in deliveries],
        "receipts": [
            {
                "receipt_id": str(r["receipt_id"]),
                "kind": r["kind"],
                "recipient_system": r["recipient_system"],
                "code": r["code"],
                "at": r["at"].isoformat(),
            }
            for r in receipts
        ],
    }


def _delivery_json(d: DeliveryStatus) -> dict[str, Any]:
    return {
        "recipient_system": d.recipient_system,
        "recipient_agency": d.recipient_agency,
        "role": d.role,
        "state": d.state,
        "error_code": d.error_code,
        "times": {k: v.isoformat() for k, v in d.times.items()},
    }


# The sender's messages of a window, in (received_at, message_id) order after a cursor; messages_sender
# (sender_system, received_at) serves it. $5: the delivery states asked for (NULL: any message).
_SENT_PAGE = """
SELECT m.message_id, m.service, m.version, m.urgency, m.classification_label, m.state, m.error_code, m.received_at
FROM messages m
WHERE m.sender_system = $1 AND m.received_at >= $2 AND m.received_at < $3
  AND (m.received_at, m.message_id) > ($4, $6::uuid)
  AND ($5::text[] IS NULL
       OR EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.message_id AND d.state = ANY($5::text[])))
  AND ($8::text[] IS NULL OR m.service = ANY($8::text[]))
ORDER BY m.received_at, m.message_id
LIMIT $7
"""
_ZERO_ID = "00000000-0000-0000-0000-000000000000"


async def sent_messages(
    executor: Any,
    sender_system: str,
    since: datetime,
    until: datetime,
    *,
    delivery_states: Sequence[str] | None = None,
    services: Sequence[str] | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
    """The messages ``sender_system`` sent that the hub received in ``[since, until)``, oldest first, each as
    ``sent_message_status`` gives it without the answers (JSON-ready); with ``delivery_states`` only those with a
    delivery in one of them (``("pending", "failed", "delivered")``: not yet signed for by every recipient); with
    ``services`` only those of these services (names, any version: ``("document.official",)``). At most
    ``limit``, after the position ``after`` (the ``(received_at, message_id)`` of the last one of the page before);
    returns the page and the position to continue from, None when the window has no more."""
    start_at, start_id = after if after is not None else (since, _ZERO_ID)
    states = list(delivery_states) if delivery_states is not None else None
    async with translated("reading a system's sent messages"), transaction(executor) as conn:
        rows = await fetch_planned_now(
            conn,
            _SENT_PAGE,
            sender_system,
            since,
            until,
            start_at,
            states,
            start_id,
            limit + 1,
            list(services) if services is not None else None,
        )
        page = rows[:limit]
        deliveries: dict[str, list[dict[str, Any]]] = {str(r["message_id"]): [] for r in page}
        if page:
            for d in await conn.fetch(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE message_id = ANY($1::uuid[])"  # noqa: S608
                " ORDER BY message_id, recipient_system",
                [r["message_id"] for r in page],
            ):
                deliveries[str(d["message_id"])].append(_delivery_json(_status(d)))
    out = [
        {
            "message_id": str(r["message_id"]),
            "service": f"{r['service']}/{r['version']}",
            "urgency": r["urgency"],
            "classification": r["classification_label"],
            "state": r["state"],
            "error_code": r["error_code"],
            "received_at": r["received_at"].isoformat(),
            "deliveries": deliveries[str(r["message_id"])],
        }
        for r in page
    ]
    last = page[-1] if len(rows) > limit else None
    return out, (None if last is None else (last["received_at"], str(last["message_id"])))


_RANK_ARRAY = "ARRAY[" + ", ".join(f"'{s}'" for s, _ in sorted(DELIVERY_RANK.items(), key=lambda kv: kv[1])) + "]"

# One statement for a set of updates with distinct keys: each time column is set when its state is reported (first
# report wins); the state moves only forward in DELIVERY_RANK, never out of 'blocked'.
_UPDATE_STATES = f"""
UPDATE deliveries AS d SET
    state = CASE WHEN d.state <> 'blocked'
                      AND array_position({_RANK_ARRAY}, u.st) > array_position({_RANK_ARRAY}, d.state)
                 THEN u.st ELSE d.state END,
    error_code = coalesce(u.code, d.error_code),
    {
    ", ".join(
        f"{col} = CASE WHEN u.st = '{st}' THEN coalesce(d.{col}, u.at) ELSE d.{col} END"
        for st, col in _STATE_COLUMN.items()
    )
}
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) AS u(m, s, st, at, code)
WHERE d.message_id = u.m AND d.recipient_system = u.s
RETURNING d.{_DELIVERY_COLUMNS.replace(", ", ", d.")}, u.st AS reported
"""  # noqa: S608 - every interpolated name comes from the constants above


async def update_delivery_states(executor: Any, updates: Sequence[DeliveryUpdate]) -> list[DeliveryStatus]:
    """Apply document-tracking steps (签收/read/办结/feedback, or failed/delivered) with evidence, in one
    transaction. Unknown deliveries are skipped. Returns the resulting status of each delivery touched."""
    if not updates:
        return []
    for u in updates:
        if u.state not in _STATE_COLUMN or u.state == "blocked":
            raise ValueError(f"cannot report delivery state {u.state!r}")
    # Several reports for the same delivery in one batch are applied in rounds (UPDATE … FROM touches a row once).
    rounds: list[list[DeliveryUpdate]] = []
    for u in updates:
        ukey = (_uuid(u.message_id), u.recipient_system)
        for r in rounds:
            if all((_uuid(x.message_id), x.recipient_system) != ukey for x in r):
                r.append(u)
                break
        else:
            rounds.append([u])
    now = _now()
    result: dict[tuple[str, str], DeliveryStatus] = {}
    async with translated("updating delivery states"), transaction(executor) as conn:
        entries: list[EvidenceEntry] = []
        for r in rounds:
            r.sort(key=lambda x: (_uuid(x.message_id).bytes, x.recipient_system))
            rows = await conn.fetch(
                _UPDATE_STATES,
                [_uuid(x.message_id) for x in r],
                [x.recipient_system for x in r],
                [x.state for x in r],
                [x.at or now for x in r],
                [x.error_code for x in r],
            )
            actors = {(str(_uuid(x.message_id)), x.recipient_system): x.actor for x in r}
            for row in rows:
                status = _status(row)
                key = (status.message_id, status.recipient_system)
                result[key] = status
                detail: dict[str, Any] = {"system": status.recipient_system, "reported": row["reported"]}
                if status.error_code:
                    detail["code"] = status.error_code
                entries.append(
                    EvidenceEntry(
                        "delivery_state", actors.get(key) or status.recipient_system, status.message_id, detail
                    )
                )
        await append(conn, entries)
    return list(result.values())


async def update_delivery_state(
    executor: Any,
    message_id: str,
    recipient_system: str,
    state: str,
    *,
    at: datetime | None = None,
    actor: str | None = None,
    error_code: str | None = None,
) -> DeliveryStatus | None:
    """``update_delivery_states`` for one; None when there is no such delivery."""
    found = await update_delivery_states(
        executor,
        [DeliveryUpdate(message_id, recipient_system, state, at, actor, error_code)],  # type: ignore[arg-type]
    )
    return found[0] if found else None


# -- quarantine ------------------------------------------------------------------------------------------------------

_QUARANTINE_SELECT = """
SELECT q.message_id, q.status, q.markings, q.reviewer, q.reason, q.decided_at, m.service, m.version,
       m.sender_agency, m.sender_system, m.classification_label, m.received_at{raw}
FROM quarantine q JOIN messages m ON m.message_id = q.message_id
"""


def _item(row: Any, deliveries: Sequence[DeliveryStatus] = ()) -> QuarantineItem:
    return QuarantineItem(
        message_id=str(row["message_id"]),
        status=row["status"],
        markings=tuple(row["markings"]),
        service=f"{row['service']}/{row['version']}",
        sender_agency=row["sender_agency"],
        sender_system=row["sender_system"],
        classification_label=row["classification_label"],
        received_at=row["received_at"],
        reviewer=row["reviewer"],
        reason=row["reason"],
        decided_at=row["decided_at"],
        raw=bytes(row["raw"]) if "raw" in row.keys() else None,
        deliveries=tuple(deliveries),
    )


async def quarantine_list(executor: Any, status: str | None = "pending", *, limit: int = 500) -> list[QuarantineItem]:
    """Quarantined messages (pending by default, oldest first; ``status=None`` for all), without their bytes."""
    query = _QUARANTINE_SELECT.format(raw="")
    async with translated("listing the quarantine"), transaction(executor) as conn:
        if status is None:
            rows = await conn.fetch(query + " ORDER BY q.created_at LIMIT $1", limit)
        else:
            rows = await conn.fetch(query + " WHERE q.status = $1 ORDER BY q.created_at LIMIT $2", status, limit)
    return [_item(r) for r in rows]


async def _load(conn: Any, message_id: uuid.UUID, *, lock: bool) -> QuarantineItem:
    row = await conn.fetchrow(
        _QUARANTINE_SELECT.format(raw=", m.raw") + " WHERE q.message_id = $1" + (" FOR UPDATE OF q" if lock else ""),
        message_id,
    )
    if row is None:
        raise HubError(f"message {message_id} is not in the quarantine", code="QUARANTINE_NOT_FOUND")
    rows = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE message_id = $1 ORDER BY recipient_system",  # noqa: S608
        message_id,
    )
    return _item(row, [_status(r) for r in rows])


async def quarantine_show(executor: Any, message_id: str) -> QuarantineItem:
    """One quarantined message with its bytes (for the reviewer) and its deliveries."""
    async with translated("reading the quarantine"), transaction(executor) as conn:
        return await _load(conn, _uuid(message_id), lock=False)


async def _decide(
    executor: Any,
    message_id: str,
    reviewer: str,
    reason: str,
    *,
    release: bool,
    actor: Actor | None = None,
    check: Callable[[QuarantineItem], None] | None = None,
) -> QuarantineItem:
    if not reviewer.strip() or not reason.strip():
        raise ValueError("a quarantine decision needs a reviewer and a reason")
    u = _uuid(message_id)
    now = _now()
    async with translated("deciding on a quarantined message"), transaction(executor) as conn:
        item = await _load(conn, u, lock=True)
        if item.status != "pending":
            raise HubError(
                f"message {message_id} was already {item.status} by {item.reviewer}", code="QUARANTINE_DECIDED"
            )
        if check is not None:
            check(item)  # its HubError changes nothing: the decision can be taken again once the cause is gone
        await conn.execute(
            "UPDATE quarantine SET status = $2, reviewer = $3, reason = $4, decided_at = $5 WHERE message_id = $1",
            u,
            "released" if release else "rejected",
            reviewer,
            reason,
            now,
        )
        await conn.execute(
            "UPDATE messages SET state = $2 WHERE message_id = $1", u, "released" if release else "quarantine_rejected"
        )
        if not release:
            await conn.execute(
                "UPDATE deliveries SET state = 'blocked', blocked_at = $2, error_code = 'GATE_REJECTED'"
                " WHERE message_id = $1 AND state = 'pending'",
                u,
                now,
            )
        # The reason is free text (it may name people): the evidence carries its digest, the table the text.
        detail = {"reason_sha256": hashlib.sha256(reason.encode("utf-8")).hexdigest(), "markings": list(item.markings)}
        await append(conn, [EvidenceEntry("released" if release else "quarantine_rejected", reviewer, str(u), detail)])
        if actor is not None:
            action = "quarantine.release" if release else "quarantine.reject"
            await actor.record(conn, action, reason=reason, target=str(u), message_id=u)
        return await _load(conn, u, lock=False)


async def quarantine_release(
    executor: Any,
    message_id: str,
    reviewer: str,
    reason: str,
    *,
    actor: Actor | None = None,
    check: Callable[[QuarantineItem], None] | None = None,
) -> QuarantineItem:
    """Release a pending quarantined message (state ``released``). Returns it with its bytes and its pending
    deliveries: the caller delivers them and then calls ``mark_delivered``. With ``actor`` the operator's action is
    recorded in the same transaction. ``check(item)``, before anything changes: its error refuses the release and
    leaves the message pending (the sender's certificate, ``hub.pipeline.release``)."""
    return await _decide(executor, message_id, reviewer, reason, release=True, actor=actor, check=check)


async def quarantine_reject(
    executor: Any, message_id: str, reviewer: str, reason: str, *, actor: Actor | None = None
) -> QuarantineItem:
    """Reject a pending quarantined message (state ``quarantine_rejected``; its deliveries become ``blocked`` with
    ``GATE_REJECTED``). The caller sends the sender a signed ``hub.error`` and records it. With ``actor`` the
    operator's action is recorded in the same transaction."""
    return await _decide(executor, message_id, reviewer, reason, release=False, actor=actor)
