"""The read side of the ops page (issue 15): message search, a message's whole trace, the overview's counts and
the evidence chain's status. Reads only; every query is bounded (a page of rows, one message) and index-backed
(migrations 001 and 016), so a store of millions of messages answers each in milliseconds (``bench/search.py``).

Search order is newest first by ``(received_at, message_id)``; a page continues from the last row of the page
before (``before=(row.received_at, row.message_id)``, keyset: no OFFSET). The recipient filter is a semi-join on
``deliveries`` (its primary key per message, or ``deliveries_recipient`` for a rare recipient).

What this module returns is plain dataclasses; claims read from unverified bytes (an intake rejection's claimed
message id, a dead letter's AMQP message-id) are returned as claims and never decide anything.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from hub.store.db import acquired, translated
from hub.store.messages import delivery_state
from hub.store.records import MESSAGE_STATES, DeliveryStatus

__all__ = [
    "MAX_LIMIT",
    "EvidenceStatus",
    "MessageRow",
    "Trace",
    "TraceEvidence",
    "TraceMessage",
    "TraceQuarantine",
    "TraceReceipt",
    "TraceRejection",
    "claims",
    "evidence_status",
    "overview_counts",
    "search_messages",
    "trace",
]

#: The most rows one search returns.
MAX_LIMIT: Final[int] = 200

CLASSIFICATION_LABELS: Final[dict[int, str]] = {0: "公开", 1: "内部", 2: "秘密", 3: "机密", 4: "绝密"}


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One line of the search result (the store keeps no title apart from the signed bytes: the trace has them).
    ``recipients`` counts the message's deliveries."""

    message_id: str
    received_at: datetime
    sender_agency: str
    sender_system: str
    service: str
    version: int
    classification: int
    classification_label: str
    urgency: str
    state: str
    error_code: str | None
    recipients: int

    @property
    def cursor(self) -> tuple[datetime, str]:
        """The ``before`` argument that continues a search after this row."""
        return (self.received_at, self.message_id)


@dataclass(frozen=True, slots=True)
class TraceMessage:
    """The recorded message (everything but the bytes, which are ``Trace.raw``)."""

    message_id: str
    conversation_id: str | None
    ref_to: str | None
    received_at: datetime
    created: datetime
    expires: datetime
    sender_agency: str
    sender_system: str
    service: str
    version: int
    classification: int
    classification_label: str
    urgency: str
    state: str
    error_code: str | None
    error_reason: str | None
    business_ref: str | None
    raw_sha256: str
    raw_size: int
    signer_serial: str | None
    signer_fingerprint: str | None


@dataclass(frozen=True, slots=True)
class TraceReceipt:
    receipt_id: str
    kind: str
    recipient_system: str | None
    code: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class TraceEvidence:
    """An evidence record about the message. ``pending`` records are staged (``evidence_pending``) and not yet in the
    hash chain: ``seq`` is None and ``at`` the staging time. ``event_at`` is when it happened (the detail's ``t``
    where recorded, else ``at``); ``detail`` the parsed detail object."""

    seq: int | None
    at: datetime
    event_at: datetime
    kind: str
    actor: str
    detail: dict[str, Any]
    pending: bool = False


@dataclass(frozen=True, slots=True)
class TraceQuarantine:
    status: str
    markings: tuple[str, ...]
    created_at: datetime
    reviewer: str | None
    reason: str | None
    decided_at: datetime | None


@dataclass(frozen=True, slots=True)
class TraceRejection:
    """A refused intake whose unverified bytes *claimed* this message id (shown as a claim: the signature did not
    hold, so nothing about it is the message's)."""

    id: int
    received_at: datetime
    claimed_sender: str | None
    service: str | None
    amqp_user: str | None
    raw_size: int
    raw_sha256: str
    error_code: str
    error_reason: str


@dataclass(frozen=True, slots=True)
class Trace:
    """Everything the store knows about one message, each list in time order: the message and its signed bytes as
    received, its deliveries (the time each state was reached), the answers the hub sent, its evidence records
    (chained in seq order, then staged ones), the quarantine decision, dead letters about it (``dead_letters``:
    ``hub.store.dead_letters.DeadLetter``: its exact bytes, the id a replay verified, or its id claimed) and refused
    intakes claiming its id."""

    message: TraceMessage
    raw: bytes
    deliveries: tuple[DeliveryStatus, ...]
    receipts: tuple[TraceReceipt, ...]
    evidence: tuple[TraceEvidence, ...]
    quarantine: TraceQuarantine | None
    dead_letters: tuple[Any, ...] = ()
    rejections: tuple[TraceRejection, ...] = ()


@dataclass(frozen=True, slots=True)
class Claims:
    """What claims an id that no recorded message has: refused intakes and dead letters (``claims``)."""

    rejections: tuple[TraceRejection, ...] = ()
    dead_letters: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class EvidenceStatus:
    """The chain head, how many records are staged and not yet chained, and the last signed checkpoint."""

    head_seq: int
    head_hash: bytes
    pending: int
    checkpoints: int
    last_checkpoint_seq: int | None = None
    last_checkpoint_at: datetime | None = None
    last_checkpoint_signer: str | None = None
    last_checkpoint_covers: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- helpers ---------------------------------------------------------------------------------------------------------


def _uuid_or_none(value: str | uuid.UUID | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        return None


@asynccontextmanager
async def _snapshot(executor: Any) -> AsyncIterator[Any]:
    """A read-only repeatable-read transaction: the trace's queries see one moment of the store."""
    async with acquired(executor) as conn:
        if conn.is_in_transaction():
            yield conn
            return
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn


# -- search ----------------------------------------------------------------------------------------------------------

_ROW_COLUMNS = (
    "m.message_id, m.received_at, m.sender_agency, m.sender_system, m.service, m.version, m.classification,"
    " m.classification_label, m.urgency, m.state, m.error_code,"
    " (SELECT count(*) FROM deliveries c WHERE c.message_id = m.message_id) AS recipients"
)


def _row(r: Any) -> MessageRow:
    return MessageRow(
        message_id=str(r["message_id"]),
        received_at=r["received_at"],
        sender_agency=r["sender_agency"],
        sender_system=r["sender_system"],
        service=r["service"],
        version=r["version"],
        classification=r["classification"],
        classification_label=r["classification_label"],
        urgency=r["urgency"],
        state=r["state"],
        error_code=r["error_code"],
        recipients=int(r["recipients"]),
    )


class _Where:
    """Conditions and their parameters, numbered as they are added."""

    def __init__(self) -> None:
        self.conds: list[str] = []
        self.args: list[Any] = []

    def add(self, template: str, *values: Any) -> None:
        """``template`` uses ``{0}``, ``{1}``… for the values' placeholders."""
        marks = []
        for v in values:
            self.args.append(v)
            marks.append(f"${len(self.args)}")
        self.conds.append(template.format(*marks))

    def sql(self) -> str:
        return " AND ".join(self.conds) if self.conds else "true"


async def search_messages(
    executor: Any,
    *,
    message_id: str | None = None,
    sender: str | None = None,
    recipient: str | None = None,
    service: str | None = None,
    classification: int | None = None,
    state: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> list[MessageRow]:
    """Messages matching every filter given, newest first (``received_at`` then id, descending), at most ``limit``
    (capped at ``MAX_LIMIT``). ``sender``/``recipient`` are system ids, ``service`` a service name (``document.
    official``), ``classification`` 0–4, ``state`` a message state; ``since`` inclusive, ``until`` exclusive.
    ``before`` is the cursor of the previous page's last row (``MessageRow.cursor``). A ``message_id`` that is not
    a UUID matches nothing. Raises ``ValueError`` for a classification or state that does not exist."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    if classification is not None and classification not in CLASSIFICATION_LABELS:
        raise ValueError(f"classification must be 0–4, not {classification!r}")
    if state is not None and state not in MESSAGE_STATES:
        raise ValueError(f"state must be one of {', '.join(MESSAGE_STATES)}, not {state!r}")
    w = _Where()
    if message_id:
        mid = _uuid_or_none(message_id)
        if mid is None:
            return []
        w.add("m.message_id = {0}", mid)
    if sender:
        w.add("m.sender_system = {0}", sender)
    if service:
        w.add("m.service = {0}", service)
    if classification is not None:
        # Literals (both are checked above): the planner sees the value, and the partial indexes (messages_classified,
        # messages_state_rare) apply when their condition is implied.
        level = int(classification)
        w.conds.append(f"m.classification = {level}" + (" AND m.classification >= 2" if level >= 2 else ""))
    if state is not None:
        w.conds.append(f"m.state = '{state}'" + (" AND m.state <> 'accepted'" if state != "accepted" else ""))
    if since is not None:
        w.add("m.received_at >= {0}", since)
    if until is not None:
        w.add("m.received_at < {0}", until)
    if before is not None:
        at, last = before
        last_id = _uuid_or_none(last)
        if last_id is None:
            raise ValueError("the cursor's message id is not a UUID")
        w.add("m.received_at <= {0} AND (m.received_at < {0} OR m.message_id < {1})", at, last_id)
    if recipient:
        # A semi-join: PostgreSQL either walks the messages newest first probing each one's delivery by primary key
        # (a busy recipient), or reads a rare recipient's deliveries (deliveries_recipient) and sorts those.
        w.add(
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.message_id AND d.recipient_system = {0})",
            recipient,
        )
    sql = (
        f"SELECT {_ROW_COLUMNS} FROM messages m WHERE {w.sql()}"  # noqa: S608 - conditions are constants
        f" ORDER BY m.received_at DESC, m.message_id DESC LIMIT {limit}"
    )
    async with translated("searching messages"), acquired(executor) as conn:
        rows = await conn.fetch(sql, *w.args)
    return [_row(r) for r in rows]


# -- trace -----------------------------------------------------------------------------------------------------------

_TRACE_MESSAGE = """
SELECT message_id, conversation_id, ref_to, received_at, created, expires, sender_agency, sender_system, service,
       version, classification, classification_label, urgency, state, error_code, error_reason, business_ref,
       raw, raw_sha256, signer_serial, signer_fingerprint
FROM messages WHERE message_id = $1
"""
_TRACE_RECEIPTS = "SELECT receipt_id, kind, recipient_system, code, at FROM receipts WHERE message_id = $1 ORDER BY at"
_TRACE_EVIDENCE = """
SELECT seq, at, kind, actor, detail, false AS pending FROM evidence WHERE message_id = $1
UNION ALL
SELECT NULL, at, kind, actor, detail, true FROM evidence_pending WHERE message_id = $1
ORDER BY pending, seq, at
"""
_TRACE_QUARANTINE = (
    "SELECT status, markings, created_at, reviewer, reason, decided_at FROM quarantine WHERE message_id = $1"
)
_TRACE_REJECTIONS = """
SELECT id, received_at, claimed_sender, service, amqp_user, raw_size, raw_sha256, error_code, error_reason
FROM intake_rejections WHERE claimed_message_id = $1 ORDER BY received_at, id LIMIT 100
"""


def _evidence(r: Any) -> TraceEvidence:
    try:
        detail = json.loads(r["detail"])
    except ValueError:
        detail = {}
    if not isinstance(detail, dict):
        detail = {"value": detail}
    event_at = r["at"]
    t = detail.get("t")
    if isinstance(t, str):
        try:
            event_at = datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            pass
    return TraceEvidence(r["seq"], r["at"], event_at, r["kind"], r["actor"], detail, bool(r["pending"]))


def _rejection(r: Any) -> TraceRejection:
    return TraceRejection(
        id=r["id"],
        received_at=r["received_at"],
        claimed_sender=r["claimed_sender"],
        service=r["service"],
        amqp_user=r["amqp_user"],
        raw_size=r["raw_size"],
        raw_sha256=bytes(r["raw_sha256"]).hex(),
        error_code=r["error_code"],
        error_reason=r["error_reason"],
    )


async def trace(executor: Any, message_id: str | uuid.UUID) -> Trace | None:
    """The whole history of one recorded message (see ``Trace``), or None when no message has this id (then
    ``claims`` says whether refused intakes or dead letters claim it)."""
    from hub.store import dead_letters

    mid = _uuid_or_none(message_id)
    if mid is None:
        return None
    async with translated("tracing a message"), _snapshot(executor) as conn:
        m = await conn.fetchrow(_TRACE_MESSAGE, mid)
        if m is None:
            return None
        deliveries = await delivery_state(conn, str(mid))
        receipts = await conn.fetch(_TRACE_RECEIPTS, mid)
        evidence = await conn.fetch(_TRACE_EVIDENCE, mid)
        q = await conn.fetchrow(_TRACE_QUARANTINE, mid)
        rejections = await conn.fetch(_TRACE_REJECTIONS, str(mid))
        dead = await dead_letters.about(conn, mid)
    raw = bytes(m["raw"])
    message = TraceMessage(
        message_id=str(m["message_id"]),
        conversation_id=None if m["conversation_id"] is None else str(m["conversation_id"]),
        ref_to=None if m["ref_to"] is None else str(m["ref_to"]),
        received_at=m["received_at"],
        created=m["created"],
        expires=m["expires"],
        sender_agency=m["sender_agency"],
        sender_system=m["sender_system"],
        service=m["service"],
        version=m["version"],
        classification=m["classification"],
        classification_label=m["classification_label"],
        urgency=m["urgency"],
        state=m["state"],
        error_code=m["error_code"],
        error_reason=m["error_reason"],
        business_ref=m["business_ref"],
        raw_sha256=bytes(m["raw_sha256"]).hex(),
        raw_size=len(raw),
        signer_serial=m["signer_serial"],
        signer_fingerprint=m["signer_fingerprint"],
    )
    return Trace(
        message=message,
        raw=raw,
        deliveries=tuple(deliveries),
        receipts=tuple(
            TraceReceipt(str(r["receipt_id"]), r["kind"], r["recipient_system"], r["code"], r["at"]) for r in receipts
        ),
        evidence=tuple(_evidence(r) for r in evidence),
        quarantine=None
        if q is None
        else TraceQuarantine(
            q["status"], tuple(q["markings"]), q["created_at"], q["reviewer"], q["reason"], q["decided_at"]
        ),
        dead_letters=tuple(dead),
        rejections=tuple(_rejection(r) for r in rejections),
    )


async def claims(executor: Any, message_id: str) -> Claims:
    """Refused intakes and dead letters that claim ``message_id`` (any text: a claim need not be a UUID)."""
    from hub.store import dead_letters

    text = str(message_id).strip()[:200]
    mid = _uuid_or_none(text)
    async with translated("reading claims"), _snapshot(executor) as conn:
        rejections = await conn.fetch(_TRACE_REJECTIONS, str(mid) if mid is not None else text)
        dead = await dead_letters.about(conn, mid, claimed=str(mid) if mid is not None else text)
    return Claims(tuple(_rejection(r) for r in rejections), tuple(dead))


# -- overview --------------------------------------------------------------------------------------------------------

_OVERVIEW = """
SELECT
  (SELECT coalesce(json_object_agg(code, n), '{}'::json)::text FROM (
       SELECT code, sum(n)::bigint AS n FROM (
           SELECT error_code AS code, count(*) AS n FROM intake_rejections WHERE received_at >= $1 GROUP BY 1
           UNION ALL
           SELECT coalesce(error_code, 'REJECTED'), count(*) FROM messages
           WHERE state = 'rejected' AND received_at >= $1 GROUP BY 1) u
       GROUP BY code) r) AS rejections,
  (SELECT coalesce(json_object_agg(state, n), '{}'::json)::text FROM (
       SELECT state, count(*) AS n FROM messages WHERE received_at >= $1 GROUP BY state) s) AS states,
  (SELECT count(*) FROM quarantine WHERE status = 'pending') AS quarantine_pending,
  (SELECT count(*) FROM dead_letters WHERE state = 'pending') AS dead_letters_pending
"""


async def overview_counts(executor: Any, *, since: datetime) -> dict[str, Any]:
    """Counts for the overview since ``since``: ``rejections`` (code → n: refused intakes and rejected messages),
    ``messages`` (state → n, received in the window), ``received`` (their total), and right now
    ``quarantine_pending`` and ``dead_letters_pending``. Index-backed: the window walks ``received_at``."""
    async with translated("counting for the overview"), acquired(executor) as conn:
        r = await conn.fetchrow(_OVERVIEW, since)
    states = {k: int(v) for k, v in json.loads(r["states"]).items()}
    return {
        "since": since,
        "rejections": {k: int(v) for k, v in json.loads(r["rejections"]).items()},
        "messages": states,
        "received": sum(states.values()),
        "quarantine_pending": int(r["quarantine_pending"]),
        "dead_letters_pending": int(r["dead_letters_pending"]),
    }


# -- evidence chain status -------------------------------------------------------------------------------------------

_EVIDENCE_STATUS = """
SELECT h.seq, h.hash,
       (SELECT count(*) FROM evidence_pending) AS pending,
       (SELECT count(*) FROM evidence WHERE kind = 'checkpoint') AS checkpoints,
       c.seq AS c_seq, c.at AS c_at, c.detail AS c_detail
FROM evidence_head h
LEFT JOIN LATERAL (SELECT seq, at, detail FROM evidence WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1) c
    ON true
"""


async def evidence_status(executor: Any) -> EvidenceStatus:
    """The head of the chain, the staged records not chained yet (counted, not chained first), and the last
    signed checkpoint (its seq, time, signer fingerprint and the seq it seals)."""
    async with translated("reading the evidence chain's status"), acquired(executor) as conn:
        r = await conn.fetchrow(_EVIDENCE_STATUS)
    signer: str | None = None
    covers: int | None = None
    if r["c_detail"] is not None:
        try:
            detail = json.loads(r["c_detail"])
        except ValueError:
            detail = {}
        signer = detail.get("signer") if isinstance(detail.get("signer"), str) else None
        covered = detail.get("seq", detail.get("covers"))
        covers = covered if isinstance(covered, int) else (r["c_seq"] - 1)
    return EvidenceStatus(
        head_seq=int(r["seq"]),
        head_hash=bytes(r["hash"]),
        pending=int(r["pending"]),
        checkpoints=int(r["checkpoints"]),
        last_checkpoint_seq=r["c_seq"],
        last_checkpoint_at=r["c_at"],
        last_checkpoint_signer=signer,
        last_checkpoint_covers=covers,
    )
