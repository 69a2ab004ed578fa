"""What the adapter has handled, kept across restarts: the local store that makes "never handed over twice" true.

A batch of deliveries is handled inside one store transaction: each handler runs in a savepoint of it (so a
handler that raises ``Retry`` leaves nothing behind), the ids it handled are recorded, the transaction commits,
and only then are the deliveries acknowledged to the broker. A handler that writes its own effects through
``ctx.db`` — the same transaction — therefore has them committed exactly when the id is recorded: a SIGKILL
anywhere leaves either both or neither, and a redelivered message whose id is recorded is acknowledged without
reaching the handler again (the transactional-inbox pattern). Effects outside the store (an HTTP call) should be
idempotent by ``ctx.message_id``.

Two stores: SQLite (the embedded default: WAL, one connection, batches take turns on it) and PostgreSQL (where
the agency has one: a pool, batches in parallel; ``ctx.db`` is an asyncpg connection). The PostgreSQL pool comes
from ``hub.store.db`` (the one asyncpg importer).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from adapters.sdk._errors import ConfigurationError, HubUnavailable

__all__ = ["HandledStore", "PgHandledStore", "SqliteHandledStore", "Tx", "open_store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sdk_handled (
    message_id  TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    sender      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    handled_at  TEXT NOT NULL
)
"""


class Tx(Protocol):
    """One batch's transaction."""

    #: The store's own connection inside the transaction (sqlite3.Connection or asyncpg.Connection): handlers
    #: write their effects here to have them committed with the record of the message id.
    db: Any

    def savepoint(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    def record(self, message_id: str, service: str, sender: str, outcome: str) -> None: ...


class HandledStore(Protocol):
    kind: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def seen(self, ids: Sequence[str]) -> set[str]: ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...

    async def count(self) -> int: ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# ----------------------------------------------------------------------------------------------- SQLite


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.db = conn
        self._rows: list[tuple[str, str, str, str, str]] = []
        self._n = 0

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        self._n += 1
        name = f"sdk_sp{self._n}"
        self.db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.db.execute(f"ROLLBACK TO {name}")
            self.db.execute(f"RELEASE {name}")
            raise
        self.db.execute(f"RELEASE {name}")

    def record(self, message_id: str, service: str, sender: str, outcome: str) -> None:
        self._rows.append((message_id, service, sender, outcome, _now()))


class SqliteHandledStore:
    """The embedded default. One connection used from the event loop (each statement is short); the write-ahead
    log with ``synchronous=NORMAL`` survives the process being killed (only a power loss can take the last
    commits, as for any WAL database)."""

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open the store {self.path}: {exc}", code="SDK_STORE") from None
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ConfigurationError("the store is not open", code="SDK_STORE")
        return self._conn

    async def seen(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        query = f"SELECT message_id FROM sdk_handled WHERE message_id IN ({marks})"  # noqa: S608 — only "?" marks
        rows = self.conn.execute(query, list(ids))
        return {r[0] for r in rows}

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:  # one writer: batches take turns
            conn = self.conn
            # IMMEDIATE: the write lock from the start. A deferred BEGIN reads first (a handler's SELECT) and asks
            # for the lock at its first write; if another connection to the file (an adapter's outbox thread) has
            # committed in between, SQLite refuses at once with "database is locked" (its snapshot is stale, so the
            # busy timeout does not apply) and the whole batch goes back for a retry with back-off.
            conn.execute("BEGIN IMMEDIATE")
            tx = _SqliteTx(conn)
            try:
                yield tx
                conn.executemany("INSERT OR IGNORE INTO sdk_handled VALUES (?, ?, ?, ?, ?)", tx._rows)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    async def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM sdk_handled").fetchone()[0])


# ----------------------------------------------------------------------------------------------- PostgreSQL


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self.db = conn
        self._rows: list[tuple[str, str, str, str]] = []

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        async with self.db.transaction():  # nested: a savepoint
            yield

    def record(self, message_id: str, service: str, sender: str, outcome: str) -> None:
        self._rows.append((message_id, service, sender, outcome))


class PgHandledStore:
    kind = "postgresql"

    def __init__(self, dsn: str, *, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: Any = None

    async def open(self) -> None:
        from hub.errors import HubError
        from hub.store.db import create_pool

        try:
            self._pool = await create_pool(self.dsn, min_size=1, max_size=self.pool_size)
            async with self._pool.acquire() as conn:
                await conn.execute(
                    _SCHEMA.replace(
                        "TEXT NOT NULL,\n    handled_at  TEXT", "TEXT NOT NULL,\n    handled_at  TIMESTAMPTZ"
                    )
                )
        except HubError as exc:
            raise HubUnavailable(f"the adapter's PostgreSQL store: {exc.detail}", code="SDK_STORE") from None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def seen(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = await self._pool.fetch(
            "SELECT message_id FROM sdk_handled WHERE message_id = ANY($1::text[])", list(ids)
        )
        return {r[0] for r in rows}

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._pool.acquire() as conn, conn.transaction():
            tx = _PgTx(conn)
            yield tx
            if tx._rows:
                await conn.executemany(
                    "INSERT INTO sdk_handled VALUES ($1, $2, $3, $4, now()) ON CONFLICT DO NOTHING", tx._rows
                )

    async def count(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM sdk_handled"))


def open_store(kind: str, target: str) -> HandledStore:
    if kind == "sqlite":
        return SqliteHandledStore(target)
    return PgHandledStore(target)
