"""``StoreConnection``: a second connection to the adapter's SQLite store, for the work that follows a commit (an
outbox that delivers the rows a handler wrote through ``ctx.db``): its statements run on one thread of its own, never
on the event loop and never in its default executor.

Why its own thread. The SDK's handled-store connection holds the database's write lock for the whole of a batch, so
a statement here that writes waits for that batch (up to its busy timeout). Run with ``asyncio.to_thread``, every
row an outbox round finished (64 at a time) took a thread of the default executor — six of them on two cores — and
each waited there, one for the write lock, the rest for the connection's lock: while a batch ran, anything else the
adapter handed to that executor (``loop.getaddrinfo`` for the next HTTPS connection, an endpoint's query, a file on
a network share) queued behind them. On one thread of its own, the same statements run in the same order (they
were serialized by the connection's lock anyway) and the default executor stays free."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class StoreConnection:
    """``db = StoreConnection(path, schema, name=...)``; ``await db.open()`` (connects and runs ``schema``, e.g. a
    ``CREATE TABLE IF NOT EXISTS``), then ``await db.sql(statement, args)`` (the rows it returns) as often as needed,
    and ``await db.close()``. A statement that writes waits for the batch that holds the store (up to
    ``busy_timeout_s``); ``name`` names the thread."""

    def __init__(self, path: str, schema: str, *, name: str, busy_timeout_s: float = 30.0) -> None:
        self.path, self.schema, self.busy_timeout_s = path, schema, busy_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None
        # Closing a connection while another thread executes on it crashed the process with SIGSEGV on SIGTERM: a
        # statement a cancelled round started finishes first (one thread makes this belt and braces).
        self._lock = threading.Lock()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        def go() -> None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout_s
            )
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute(self.schema)
            self._conn = conn

        await self._run(go)

    async def sql(self, statement: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return await self._run(self._execute, statement, args)  # type: ignore[no-any-return]

    def _execute(self, statement: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            if self._conn is None:
                raise RuntimeError("the adapter's store is closed (the adapter is stopping)")
            return self._conn.execute(statement, args).fetchall()

    async def close(self) -> None:
        def go() -> None:
            with self._lock:
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()

        try:
            await self._run(go)
        finally:
            self._executor.shutdown(wait=False)
