"""The in-memory double of the pipeline's ``Store`` (``hub.store.abc``): the same outcomes as PostgreSQL's
``record_batch``/``record_sent`` for new messages, duplicates, copies within a batch, half-done messages after a
crash (still-pending recipients, an unanswered sender) — for fast tests of the pipeline's decisions and for the
SDK's test hub. It keeps no evidence chain and no transactions across processes: never proof that recording works
(tests/integration/test_store.py and the contract tests run the real one)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from hub.store.records import MessageRecord, ReceiptRecord, RecordOutcome, Rejection

__all__ = ["MemoryStore", "StoredMessage"]


@dataclass(slots=True)
class StoredMessage:
    record: MessageRecord
    state: str
    #: Recipient systems whose delivery is still pending (first role listed wins, as in PostgreSQL).
    pending: dict[str, None] = field(default_factory=dict)
    answered: bool = False


class MemoryStore:
    """``Store`` in a dict. ``messages`` by message id, ``rejections`` (refused intake) and ``receipts`` in order."""

    def __init__(self) -> None:
        self.messages: dict[str, StoredMessage] = {}
        self.rejections: list[Rejection] = []
        self.receipts: dict[str, ReceiptRecord] = {}

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[MemoryStore]:
        yield self

    async def close(self) -> None:
        return None

    async def record(
        self, records: Sequence[MessageRecord], rejections: Sequence[Rejection] = ()
    ) -> list[RecordOutcome]:
        outcomes: list[RecordOutcome] = []
        in_batch: set[str] = set()
        for rec in records:
            mid = rec.message_id.lower()
            if mid in in_batch:
                outcomes.append(RecordOutcome(rec.message_id, True, rec.state, in_batch=True))
                continue
            in_batch.add(mid)
            held = self.messages.get(mid)
            if held is None:
                pending = dict.fromkeys(d.recipient_system for d in rec.deliveries if d.state == "pending")
                self.messages[mid] = StoredMessage(rec, rec.state, pending)
                to_deliver = tuple(pending) if rec.state == "accepted" else ()
                outcomes.append(RecordOutcome(rec.message_id, False, rec.state, to_deliver, True))
            else:
                deliverable = held.state in ("accepted", "released")
                outcomes.append(
                    RecordOutcome(
                        rec.message_id,
                        True,
                        held.state,
                        tuple(sorted(held.pending)) if deliverable else (),
                        not held.answered,
                    )
                )
        self.rejections.extend(rejections)
        return outcomes

    async def delivered_from(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
        """As PostgreSQL's (``hub.store.messages.delivered_from``): for each (message id, recipient system) with a
        delivery that is not blocked, of a message accepted or released, that message's (sender agency, system)."""
        found: dict[tuple[str, str], tuple[str, str]] = {}
        for mid, system in pairs:
            key = (mid.lower(), system)
            held = self.messages.get(key[0])
            if held is None or held.state not in ("accepted", "released"):
                continue
            rec = held.record
            if any(d.recipient_system == system and d.state != "blocked" for d in rec.deliveries):
                found[key] = (rec.sender_agency, rec.sender_system)
        return found

    async def record_sent(self, delivered: Iterable[str] = (), receipts: Sequence[ReceiptRecord] = ()) -> None:
        for mid in delivered:
            held = self.messages.get(mid.lower())
            if held is not None:
                held.pending.clear()
        for r in receipts:
            self.receipts.setdefault(r.receipt_id, r)
            if r.message_id is not None:
                held = self.messages.get(r.message_id.lower())
                if held is not None:
                    held.answered = True
