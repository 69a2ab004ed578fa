"""What the store records and returns: pure dataclasses (no asyncpg), so the pipeline, the CLI and the ops page
build and read them without importing the database driver.

States::

    message      accepted ─────────────────────────────► (delivered per recipient)
                 quarantined ──► released (then delivered) | quarantine_rejected
                 rejected        (signed and valid, but refused: expired, not allowed, …)
    delivery     pending → delivered → received (签收) → read → handled (办结) → feedback
                 blocked (the gate kept it from this recipient) · failed (given up)

A delivery only moves forward (a late "received" after "read" records its timestamp but does not move the state
back); ``blocked`` and ``failed`` are final except that a failed delivery can still be delivered by a retry.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

__all__ = [
    "DELIVERY_RANK",
    "DELIVERY_ROLE_ZH",
    "DELIVERY_STATES",
    "DELIVERY_STATE_ZH",
    "MESSAGE_STATES",
    "MESSAGE_STATE_ZH",
    "DeliveryRecord",
    "DeliveryState",
    "DeliveryStatus",
    "DeliveryUpdate",
    "EvidenceEntry",
    "EvidenceKind",
    "MessageRecord",
    "MessageState",
    "Problem",
    "QuarantineItem",
    "ReceiptRecord",
    "RecordOutcome",
    "Rejection",
]

MessageState = Literal["accepted", "rejected", "quarantined", "released", "quarantine_rejected"]
MESSAGE_STATES: Final[tuple[str, ...]] = ("accepted", "rejected", "quarantined", "released", "quarantine_rejected")
#: What a person reads for each message state (Chinese, then English).
MESSAGE_STATE_ZH: Final[dict[str, str]] = {
    "accepted": "已受理 accepted",
    "rejected": "已拒收 rejected",
    "quarantined": "隔离待审 quarantined",
    "released": "审核放行 released",
    "quarantine_rejected": "审核驳回 quarantine rejected",
}

DeliveryState = Literal["pending", "delivered", "blocked", "received", "read", "handled", "feedback", "failed"]
DELIVERY_STATES: Final[tuple[str, ...]] = (
    "pending",
    "delivered",
    "blocked",
    "received",
    "read",
    "handled",
    "feedback",
    "failed",
)
#: What a person reads for each delivery state (Chinese, then English): the documents process's reports and the
#: adapter SDK's document tracking (``adapters.sdk.DeliveryState.label``).
DELIVERY_STATE_ZH: Final[dict[str, str]] = {
    "pending": "待送达 pending",
    "delivered": "已送达未签收 delivered",
    "blocked": "未送达（拦截） blocked",
    "failed": "送达失败 failed",
    "received": "已签收 signed for",
    "read": "已阅读 read",
    "handled": "已办结 handled",
    "feedback": "已反馈 feedback",
}
#: A recipient's role, as a person reads it: 主送 (to) or 抄送 (cc).
DELIVERY_ROLE_ZH: Final[dict[str, str]] = {"to": "主送 to", "cc": "抄送 cc"}
#: Forward order of the document-tracking states (blocked/failed are handled apart).
DELIVERY_RANK: Final[dict[str, int]] = {
    "pending": 0,
    "failed": 1,
    "delivered": 2,
    "received": 3,
    "read": 4,
    "handled": 5,
    "feedback": 6,
    "blocked": 7,
}

EvidenceKind = Literal[
    "received",
    "rejected",
    "quarantined",
    "blocked",
    "delivered",
    "receipt_sent",
    "released",
    "quarantine_rejected",
    "delivery_state",
    "checkpoint",
]


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One recipient system of a message. ``state`` is ``pending`` (to be delivered) or ``blocked`` (the gate
    refused it for this recipient; ``error_code`` says why)."""

    recipient_agency: str
    recipient_system: str
    role: Literal["to", "cc"] = "to"
    state: Literal["pending", "blocked"] = "pending"
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A verified message as the hub received it. ``raw`` is the signed bytes exactly as received; ``digest`` their
    SHA-256 in hex (computed by the store when empty). ``signer_serial`` is the certificate serial (an int is stored
    as its decimal string). For ``state="quarantined"`` give the ``markings`` found; for ``state="rejected"`` the
    ``error_code``/``error_reason`` and no deliveries (or blocked ones). ``detail`` adds non-personal facts to the
    evidence entry (never payload)."""

    message_id: str
    conversation_id: str | None
    sender_agency: str
    sender_system: str
    service: str
    version: int
    classification: int
    classification_label: str
    urgency: str
    created: datetime
    expires: datetime
    raw: bytes
    deliveries: tuple[DeliveryRecord, ...] = ()
    digest: str = ""
    ref_to: str | None = None
    business_ref: str | None = None
    signer_serial: str | int | None = None
    signer_fingerprint: str | None = None
    state: Literal["accepted", "quarantined", "rejected"] = "accepted"
    error_code: str | None = None
    error_reason: str | None = None
    markings: tuple[str, ...] = ()
    received_at: datetime | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What ``record_batch`` did with one record, and what is left for the caller to do.

    - a new message: ``duplicate=False``; ``to_deliver`` are its pending recipient systems (empty when quarantined
      or rejected); ``needs_receipt`` is True.
    - a message recorded before (another batch, another worker, a crash before the ack): ``duplicate=True``,
      nothing was written; ``state`` is the recorded state, ``to_deliver`` the recipients still pending (only for
      accepted/released messages) and ``needs_receipt`` whether the sender never got an answer. A worker that finds
      a message half-done after a crash finishes exactly what is missing.
    - a second copy within the same batch: ``duplicate=True``, ``in_batch=True``, nothing to do (the first copy
      carries the work)."""

    message_id: str
    duplicate: bool
    state: str
    to_deliver: tuple[str, ...] = ()
    needs_receipt: bool = False
    in_batch: bool = False


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message refused before its signature could be trusted (unsafe XML, schema, signature, certificate): its
    claims are untrusted, so it never occupies a message id (a forger could otherwise block the real message).
    ``raw`` is stored capped with the digest of the whole; ``claimed_*`` are whatever could be read, if anything."""

    raw: bytes
    error_code: str
    error_reason: str
    claimed_message_id: str | None = None
    claimed_sender: str | None = None
    service: str | None = None
    amqp_user: str | None = None
    digest: str = ""
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    """What the hub sent back: a ``hub.receipt`` or ``hub.error`` with its own message id, for ``message_id`` (None
    when the refused message had no trustworthy id), to ``recipient_system``."""

    receipt_id: str
    message_id: str | None
    kind: Literal["hub.receipt", "hub.error"]
    recipient_system: str | None
    code: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """The tracking state of one delivery, with the time each state was first reached."""

    message_id: str
    recipient_agency: str
    recipient_system: str
    role: str
    state: str
    error_code: str | None
    times: Mapping[str, datetime]


@dataclass(frozen=True, slots=True)
class DeliveryUpdate:
    """A document-tracking step reported for one delivery (签收 received, read, 办结 handled, feedback, or failed /
    delivered by the hub). ``actor`` is who reported it (default: the recipient system)."""

    message_id: str
    recipient_system: str
    state: Literal["delivered", "received", "read", "handled", "feedback", "failed"]
    at: datetime | None = None
    actor: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class QuarantineItem:
    """A quarantined message for the operator (``raw`` only from ``quarantine_show``)."""

    message_id: str
    status: Literal["pending", "released", "rejected"]
    markings: tuple[str, ...]
    service: str
    sender_agency: str
    sender_system: str
    classification_label: str
    received_at: datetime
    reviewer: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None
    raw: bytes | None = None
    deliveries: tuple[DeliveryStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class EvidenceEntry:
    """One entry to append to the evidence log. ``detail`` must be JSON-serialisable and hold no payload or
    personal data (ids, codes, digests, counts)."""

    kind: str
    actor: str
    #: A UUID object (as read back from PostgreSQL) or its text.
    message_id: str | uuid.UUID | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing ``verify_chain`` found wrong. ``kind`` is ``altered``, ``removed``, ``reordered``, ``inserted``,
    ``head`` or ``checkpoint``; ``seq`` the record concerned (None for the chain as a whole)."""

    kind: str
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "chain"
        return f"{where}: {self.kind}: {self.message}"
