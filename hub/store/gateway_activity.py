"""What the HTTPS gateways saw, for the people on duty (migration 023): each system's last poll, and the requests a
gateway refused itself, by minute, system and code.

A gateway notes them in memory as they happen (``GatewayActivity.polled`` / ``refused``: a dictionary write, nothing
awaited) and a task of its own writes them every ``FLUSH_S`` (``flush``: one statement each, only what changed).
The ops overview reads them from the store (``last_polls``, ``refusals``), so it shows every gateway's activity
whatever machine each runs on, and a system's last poll survives a restart of ``hub run``.

A flush that fails (PostgreSQL down) keeps what it had for the next one; past ``MAX_PENDING`` refusal rows new
ones are given up (counted and said in the log), so a client hammering the gateway while the store is down
cannot grow the gateway's memory. Refusal rows older than ``KEEP_DAYS`` are removed by a flush at most once an hour.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hub.errors import title_of
from hub.store.db import translated

__all__ = ["FLUSH_S", "GatewayActivity", "Refusals", "last_polls", "refusals"]

log = logging.getLogger("hub.store.gateway_activity")

#: How often a gateway writes what it saw.
FLUSH_S = 2.0
#: Refusal rows (minute, system, code) kept in memory at most while the store cannot take them.
MAX_PENDING = 10_000
#: How long refusal rows are kept.
KEEP_DAYS = 30
#: How often a flush removes the rows past ``KEEP_DAYS``.
PRUNE_EVERY_S = 3600.0

_POLLS = """
INSERT INTO gateway_polls (system, last_poll_at)
SELECT * FROM unnest($1::text[], $2::timestamptz[])
ON CONFLICT (system) DO UPDATE SET last_poll_at = greatest(gateway_polls.last_poll_at, excluded.last_poll_at)
"""
_REFUSALS = """
INSERT INTO gateway_refusals (minute, system, code, count)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::integer[])
ON CONFLICT (minute, system, code) DO UPDATE SET count = gateway_refusals.count + excluded.count
"""
_PRUNE = "DELETE FROM gateway_refusals WHERE minute < now() - make_interval(days => $1)"

_Key = tuple[dt.datetime, str, str]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class GatewayActivity:
    """One gateway process's notes, written to the store by ``flush``."""

    def __init__(self) -> None:
        self._polls: dict[str, dt.datetime] = {}
        self._refusals: Counter[_Key] = Counter()
        self._pruned = -PRUNE_EVERY_S
        #: Refusals given up while the store could not take them (said in the log once they are).
        self.lost = 0

    def polled(self, system: str) -> None:
        """``system`` (identified by its certificate) is polling its inbox now."""
        self._polls[system] = _now()

    def refused(self, system: str | None, code: str) -> None:
        """A request of ``system`` (None: no certificate named one) refused with ``code``."""
        key = (_now().replace(second=0, microsecond=0), system or "-", code)
        if key not in self._refusals and len(self._refusals) >= MAX_PENDING:
            self.lost += 1  # the store has not taken the earlier ones: this one is given up
            return
        self._refusals[key] += 1

    @property
    def pending(self) -> bool:
        return bool(self._polls or self._refusals)

    async def flush(self, pool: Any) -> None:
        """Write what was noted since the last flush; on failure it is kept for the next (StoreUnavailable)."""
        polls, self._polls = self._polls, {}
        counted, self._refusals = self._refusals, Counter()
        try:
            async with translated("writing the gateway's activity"), pool.acquire() as conn, conn.transaction():
                if polls:
                    await conn.execute(_POLLS, list(polls), list(polls.values()))
                if counted:
                    keys = list(counted)
                    await conn.execute(
                        _REFUSALS,
                        [k[0] for k in keys],
                        [k[1] for k in keys],
                        [k[2] for k in keys],
                        [counted[k] for k in keys],
                    )
                if time.monotonic() - self._pruned >= PRUNE_EVERY_S:
                    await conn.execute(_PRUNE, KEEP_DAYS)
                    self._pruned = time.monotonic()
        except BaseException:
            for system, at in polls.items():  # newer notes made meanwhile win
                if system not in self._polls:
                    self._polls[system] = at
            self._refusals.update(counted)
            excess = len(self._refusals) - MAX_PENDING
            if excess > 0:  # the oldest minutes go first
                for key in sorted(self._refusals)[:excess]:
                    self.lost += self._refusals.pop(key)
            raise
        if self.lost:
            log.warning(
                "%d gateway refusal(s) were not counted on the ops page: the store could not take them", self.lost
            )
            self.lost = 0


async def last_polls(executor: Any) -> dict[str, dt.datetime]:
    """System → when it last polled through any gateway."""
    rows = await executor.fetch("SELECT system, last_poll_at FROM gateway_polls")
    return {r["system"]: r["last_poll_at"] for r in rows}


@dataclass(frozen=True, slots=True)
class Refusals:
    """One system's refusals with one code: in the last two minutes (this one and the one before), the last hour."""

    system: str
    code: str
    recent: int
    hour: int
    last: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "code": self.code,
            "title": title_of(self.code),
            "recent": self.recent,
            "hour": self.hour,
            "last": self.last.isoformat(timespec="seconds"),
        }


async def refusals(executor: Any, *, limit: int = 50) -> list[Refusals]:
    """The gateways' refusals of the last hour by system and code, the recent ones first."""
    rows = await executor.fetch(
        """
        SELECT system, code,
               coalesce(sum(count) FILTER (WHERE minute >= date_trunc('minute', now()) - interval '1 minute'), 0)
                   AS recent,
               sum(count) AS hour, max(minute) AS last
        FROM gateway_refusals
        WHERE minute >= now() - interval '1 hour'
        GROUP BY system, code
        ORDER BY recent DESC, hour DESC, system, code
        LIMIT $1
        """,
        limit,
    )
    return [Refusals(r["system"], r["code"], int(r["recent"]), int(r["hour"]), r["last"]) for r in rows]
