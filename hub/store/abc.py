"""What the pipeline needs of the store, as Protocols (as aio-pika's ``abc.py`` does for its channel and queue):
``hub.store.batch.PgStore`` is the real one (PostgreSQL), ``hub.store.memory.MemoryStore`` the in-memory double
of the tests and of the SDK's test hub. ``tests/integration/test_contracts.py`` runs the same contract against
both."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from hub.store.records import MessageRecord, ReceiptRecord, RecordOutcome, Rejection

__all__ = ["Store", "StoreBatch"]


class StoreBatch(Protocol):
    """The store's side of one batch (the real one holds one PostgreSQL connection for both statements)."""

    async def record(
        self, records: Sequence[MessageRecord], rejections: Sequence[Rejection] = ()
    ) -> list[RecordOutcome]:
        """Record new messages, their deliveries, quarantine entries, refused intake and evidence, atomically;
        one outcome per record, in order (``hub.store.messages.record_batch``)."""
        ...

    async def record_sent(self, delivered: Iterable[str] = (), receipts: Sequence[ReceiptRecord] = ()) -> None:
        """After the broker confirmed: the deliveries of ``delivered`` messages are delivered, ``receipts`` sent."""
        ...

    async def delivered_from(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
        """For (message id, recipient system) pairs: the message's original sender (agency, system) where the hub
        delivered (or is delivering) that message to that system — what a ``delivery.refusal`` must be vouched for
        by (``hub.store.messages.delivered_from``, ``hub.pipeline.decide.vouch_refusal``)."""
        ...


class Store(Protocol):
    def batch(self) -> AbstractAsyncContextManager[StoreBatch]:
        """A batch's session; leaving it with an exception gives its resources back as possibly broken."""
        ...

    async def close(self) -> None: ...
