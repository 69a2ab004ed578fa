"""The real ``Store`` of the pipeline (``hub.store.abc``): PostgreSQL through an asyncpg pool, one connection held
for both statements of a batch and kept for the next one (taking one from the pool and giving it back costs
40 µs a statement here, two statements a batch). A batch that holds a ``delivery.refusal`` reads one more
(``delivered_from``, on the same connection)."""

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

    async def delivered_from(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
        """The original senders of the (message id, recipient system) deliveries the hub made (``delivery.refusal``:
        ``hub.store.messages.delivered_from``); only batches with refusals ask."""
        return await messages.delivered_from(self.conn, pairs)


class PgStore:
    """``Store`` on an asyncpg pool. Between batches it keeps at most ``MAX_SPARE`` connection out of the pool for
    the next batch; every other one goes back to the pool.

    Keeping one per batch that was ever in flight starved the pool: after four concurrent emergency batches the
    worker's pool (four connections) sat empty in the spare list, a fifth batch and the background jobs waited on
    ``pool.acquire()`` for ever while the connections they needed lay idle here, and the normal lane (which waits
    for the emergency batches) stopped with them."""

    #: Connections kept between batches: the normal lane runs one batch at a time per worker.
    MAX_SPARE = 1

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self._spare: list[Any] = []
        #: This store's batches waiting in ``pool.acquire()``: a connection given back then goes to the pool.
        self._waiting = 0

    async def _connection(self) -> Any:
        """A spare connection (unless the server has closed it since), else one from the pool."""
        while self._spare:
            conn = self._spare.pop()
            if not conn.is_closed():
                return conn
            await self.pool.release(conn)
        self._waiting += 1
        try:
            async with translated("connecting"):
                return await self.pool.acquire()
        finally:
            self._waiting -= 1

    async def _give_back(self, conn: Any, *, healthy: bool) -> None:
        """Keep a connection for the next batch when none is kept and no batch of this store waits for the pool;
        otherwise, and when it saw a failure (the pool replaces a broken one), it goes back to the pool."""
        if healthy and not conn.is_closed() and len(self._spare) < self.MAX_SPARE and not self._waiting:
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
