"""Which of ``hub run``'s processes run, on any machine (migration 026), for the ops overview.

Each pipeline worker, process engine and gateway examination (an examiner process, or the gateway process when it
examines itself; role ``gateway``) has a row while it runs (``ProcessRecord``, started by ``hub.metrics.heartbeat``
beside the process's heartbeat gauge when given the process's pool, or by the examiner): written at start,
refreshed every ``BEAT_S`` with the directory version the process works with (``hub.metrics.directory_taken``),
removed when it stops. A row not refreshed for ``STALE_S`` is a process that died; a process starting on the same
host with the same role and index removes such rows (it replaces them), and rows unseen for a day are pruned.

The heartbeat gauges say the same, but only to the metrics files of their own host; the ops page may run on a
machine of its own (docs/operations.md), where it saw no engine and no directory version at all. The HTTPS gateways
have rows of their own (``hub.store.gateway_activity``: with their polls, refusals and readiness).

Writing is off every message's path (a task of its own, one upsert every ``BEAT_S``); a store that does not take it
is said in the log at most once a minute, and the process goes on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.aio import cancelling

__all__ = ["BEAT_S", "STALE_S", "ProcessRecord", "Recorded", "on_record"]

log = logging.getLogger("hub.store.process_instances")

#: How often a process refreshes its row; one not refreshed for ``STALE_S`` died.
BEAT_S = 10.0
STALE_S = 3 * BEAT_S
#: A write the store does not answer within this is given up (tried again at the next beat).
WRITE_TIMEOUT_S = 5.0

_JOIN = """
WITH gone AS (
    DELETE FROM process_instances
    WHERE host = $2 AND role = $5 AND idx = $6 AND instance <> $1
      AND ($9 OR seen_at < now() - make_interval(secs => $7))
)
INSERT INTO process_instances (instance, host, pid, started_at, seen_at, role, idx, directory_version)
VALUES ($1, $2, $3, $4, now(), $5, $6, $8)
ON CONFLICT (instance) DO UPDATE SET seen_at = now(), directory_version = excluded.directory_version
"""
_PRUNE = "DELETE FROM process_instances WHERE seen_at < now() - interval '1 day'"
_LEAVE = "DELETE FROM process_instances WHERE instance = $1"


class ProcessRecord:
    """One process's row: ``run`` keeps it fresh until cancelled, then removes it."""

    def __init__(self, role: str, index: str) -> None:
        self.role, self.index = role, index
        self.instance = uuid.uuid4()
        self.host = socket.gethostname()
        self.started_at = dt.datetime.now(dt.UTC)
        self._said = -60.0
        self._joined = False

    async def write(self, pool: Any, directory_version: int | None) -> None:
        """Write or refresh the row. The first write replaces the rows of this host, role and index (the process
        this one replaces: the supervisor starts worker N again only once worker N died), later ones only such rows
        gone stale (two processes of one role and index on one host — tests — do not remove each other's)."""
        async with asyncio.timeout(WRITE_TIMEOUT_S), pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _JOIN,
                self.instance,
                self.host,
                os.getpid(),
                self.started_at,
                self.role,
                self.index,
                STALE_S,
                directory_version,
                not self._joined,
            )
            if self.index == "0" and self.role == "worker":  # one pruner a hub instance is plenty
                await conn.execute(_PRUNE)
        self._joined = True

    async def run(self, pool: Any, version: Callable[[], int | None]) -> None:
        try:
            while True:
                try:
                    await self.write(pool, version())
                except Exception as exc:  # TimeoutError too
                    if cancelling():  # stopped while writing: the error is what the cancellation became
                        raise asyncio.CancelledError from None
                    if time.monotonic() - self._said >= 60.0:
                        self._said = time.monotonic()
                        log.warning(
                            "could not write %s %s's row for the ops page (tried again in %g s): %s",
                            self.role,
                            self.index,
                            BEAT_S,
                            exc.__class__.__name__,
                        )
                await asyncio.sleep(BEAT_S)
        finally:
            try:  # stopped (cancelled): the row goes, so the page does not take a clean stop for a death
                async with asyncio.timeout(2.0):
                    await pool.execute(_LEAVE, self.instance)
            except Exception as exc:  # a timeout too; the row goes stale, then the next such process replaces it
                log.info("could not remove %s %s's row: %s", self.role, self.index, exc.__class__.__name__)


@dataclass(frozen=True, slots=True)
class Recorded:
    """A process as the store knows it."""

    role: str
    index: str
    host: str
    pid: int
    started_at: dt.datetime
    seen_s: float
    directory_version: int | None

    @property
    def alive(self) -> bool:
        return self.seen_s <= STALE_S

    def as_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "index": self.index,
            "host": self.host,
            "pid": self.pid,
            "seen_s": round(self.seen_s, 1),
            "alive": self.alive,
        }


async def on_record(executor: Any, *, within_s: float = 86400.0) -> list[Recorded]:
    """The processes seen within ``within_s`` (a dead one stays listed that long), by role, index, host and pid."""
    rows = await executor.fetch(
        """
        SELECT role, idx, host, pid, started_at, extract(epoch FROM now() - seen_at)::float8 AS seen_s,
               directory_version
        FROM process_instances WHERE seen_at >= now() - make_interval(secs => $1) ORDER BY role, idx, host, pid
        """,
        within_s,
    )
    return [
        Recorded(
            r["role"], r["idx"], r["host"], r["pid"], r["started_at"], max(0.0, r["seen_s"]), r["directory_version"]
        )
        for r in rows
    ]
