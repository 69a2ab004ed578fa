"""The real ``Store`` of the pipeline (``hub.store.abc``): PostgreSQL through an asyncpg pool, one connection held
for both statements of a batch and kept for the next one (taking one from the pool and giving it back costs
40 µs a statement here, two statements a batch)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from hub.store import messages
from hub.store.db import translated
from hub.store.records import MessageRecord, ReceiptRecord, RecordOutcome, Rejection

__all__ = ["PgStore"]


class _PgBatch:
    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def record(
        self, records: Sequence[MessageRecord], rejections: Sequence[Rejection] = ()
    ) -> list[RecordOutcome]:
        return await messages.record_batch(self.conn, records, rejections)  # looked up per call (tests inject)

    async def record_sent(self, delivered: Iterable[str] = (), receipts: Sequence[ReceiptRecord] = ()) -> None:
        await messages.record_sent(self.conn, delivered, receipts)


class PgStore:
    """``Store`` on an asyncpg pool. Connections the batches hold between them: one per batch in flight."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self._spare: list[Any] = []

    async def _connection(self) -> Any:
        """A spare connection (unless the server has closed it since), else one from the pool."""
        while self._spare:
            conn = self._spare.pop()
            if not conn.is_closed():
                return conn
            await self.pool.release(conn)
        async with translated("connecting"):
            return await self.pool.acquire()

    async def _give_back(self, conn: Any, *, healthy: bool) -> None:
        """Keep a connection for the next batch; one that saw a failure goes back to the pool, which replaces it
        when it is broken."""
        if healthy and not conn.is_closed():
            self._spare.append(conn)
        else:
            await self.pool.release(conn)

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[_PgBatch]:
        conn = await self._connection()
        try:
            yield _PgBatch(conn)
        except BaseException:
            await self._give_back(conn, healthy=False)
            raise
        await self._give_back(conn, healthy=True)

    async def close(self) -> None:
        while self._spare:
            await self.pool.release(self._spare.pop())
