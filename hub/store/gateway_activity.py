"""What the HTTPS gateways saw, for the people on duty (migrations 023–025, 027, 028): each system's last poll, its
requests and those a gateway refused itself, by minute, system (and code, with the addresses they came from), and
which gateways run.

A gateway notes them in memory as they happen (``GatewayActivity.polled`` / ``refused``: a dictionary write, nothing
awaited) and a task of its own writes them every ``FLUSH_S`` (``flush``: one statement each, only what changed).
The ops overview reads them from the store (``last_polls``, ``refusals``), so it shows every gateway's activity
whatever machine each runs on, and a system's last poll survives a restart of ``hub run``.

A flush that fails (PostgreSQL down) keeps what it had for the next one; past ``MAX_PENDING`` refusal rows new
ones are given up (counted and said in the log), so a client hammering the gateway while the store is down
cannot grow the gateway's memory. Refusal rows older than ``KEEP_DAYS`` are removed by a flush at most once an hour.

Each gateway process has a row in ``gateway_instances`` (``GatewayActivity.instance``): written by the first flush,
its ``seen_at`` refreshed every ``BEAT_S`` (``due`` says when a flush is needed for it alone), removed by ``leave``
when the gateway stops. A row not refreshed for ``STALE_S`` is a gateway that died; a gateway starting on the same
host removes such rows of that host (it replaces them), and rows unseen for a day go with the hourly pruning.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hub.errors import title_of
from hub.store.db import translated

__all__ = [
    "BEAT_S",
    "FLUSH_S",
    "STALE_S",
    "GatewayActivity",
    "Instance",
    "Refusals",
    "instances",
    "last_polls",
    "refusals",
    "requests",
]

log = logging.getLogger("hub.store.gateway_activity")

#: How often a gateway writes what it saw.
FLUSH_S = 2.0
#: Refusal rows (minute, system, code) kept in memory at most while the store cannot take them.
MAX_PENDING = 10_000
#: Distinct client addresses shown for one system and code; one more is kept for each refusal row (minute, system,
#: code), so that the page can say there were more without keeping them all.
MAX_PEERS = 8
#: How long refusal rows are kept.
KEEP_DAYS = 30
#: How often a flush removes the rows past ``KEEP_DAYS``.
PRUNE_EVERY_S = 3600.0
#: The ops overview warns this many days before the server certificate a gateway presents expires.
CERTIFICATE_WARN_DAYS = 30
#: How often a gateway refreshes its ``gateway_instances`` row; one not refreshed for ``STALE_S`` is a dead gateway.
BEAT_S = 10.0
STALE_S = 3 * BEAT_S

_POLLS = """
INSERT INTO gateway_polls (system, last_poll_at)
SELECT * FROM unnest($1::text[], $2::timestamptz[])
ON CONFLICT (system) DO UPDATE SET last_poll_at = greatest(gateway_polls.last_poll_at, excluded.last_poll_at)
"""
#: The addresses travel as one space-separated text a row (unnest cannot take arrays of different lengths).
_REFUSALS = """
INSERT INTO gateway_refusals (minute, system, code, count, peers)
SELECT m, s, c, n, string_to_array(p, ' ')
FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::integer[], $5::text[]) AS u(m, s, c, n, p)
ON CONFLICT (minute, system, code) DO UPDATE SET
    count = gateway_refusals.count + excluded.count,
    peers = CASE
        WHEN cardinality(gateway_refusals.peers) >= $6 THEN gateway_refusals.peers
        ELSE ARRAY(SELECT DISTINCT unnest(gateway_refusals.peers || excluded.peers) ORDER BY 1 LIMIT $6)
    END
"""
_REQUESTS = """
INSERT INTO gateway_requests (minute, system, count)
SELECT to_timestamp(m * 60), s, c FROM unnest($1::bigint[], $2::text[], $3::integer[]) AS u(m, s, c)
ON CONFLICT (minute, system) DO UPDATE SET count = gateway_requests.count + excluded.count
"""
_PRUNE = "DELETE FROM gateway_refusals WHERE minute < now() - make_interval(days => $1)"
_PRUNE_REQUESTS = "DELETE FROM gateway_requests WHERE minute < now() - make_interval(days => $1)"
_PRUNE_INSTANCES = "DELETE FROM gateway_instances WHERE seen_at < now() - interval '1 day'"
_JOIN = """
WITH gone AS (
    DELETE FROM gateway_instances WHERE host = $2 AND instance <> $1 AND seen_at < now() - make_interval(secs => $5)
)
INSERT INTO gateway_instances (instance, host, pid, started_at, seen_at, not_ready, certificate_serial,
                               certificate_not_after)
VALUES ($1, $2, $3, $4, now(), $6, $7, $8)
ON CONFLICT (instance) DO UPDATE SET seen_at = now(), not_ready = excluded.not_ready,
    certificate_serial = excluded.certificate_serial, certificate_not_after = excluded.certificate_not_after
"""
_LEAVE = "DELETE FROM gateway_instances WHERE instance = $1"

_Key = tuple[dt.datetime, str, str]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class GatewayActivity:
    """One gateway process's notes, written to the store by ``flush``."""

    def __init__(self) -> None:
        self._polls: dict[str, dt.datetime] = {}
        self._refusals: Counter[_Key] = Counter()
        self._peers: dict[_Key, set[str]] = {}
        #: (minute since the epoch, system) → requests: an int minute, so counting costs a dict update and no datetime
        self._requests: Counter[tuple[int, str]] = Counter()
        self._pruned = -PRUNE_EVERY_S
        #: Refusals given up while the store could not take them (said in the log once they are).
        self.lost = 0
        #: This gateway process's row in ``gateway_instances``.
        self.instance = uuid.uuid4()
        self.host = socket.gethostname()
        self.started_at = _now()
        self._beat = -BEAT_S
        #: The codes of this gateway's failing ``GET /ready`` checks (``hub.gateway.readiness``), set by the gateway
        #: before each flush; a change is written at once, not at the next beat.
        self.not_ready: tuple[str, ...] = ()
        self._written_not_ready: tuple[str, ...] | None = None
        #: The server certificate this gateway presents to new connections (serial, end), set by the gateway at its
        #: start and at each reload (``GatewayRunner.reload_certificate``); a change is written at once.
        self.certificate: tuple[str, dt.datetime] | None = None
        self._written_certificate: tuple[str, dt.datetime] | None = None

    @property
    def due(self) -> bool:
        """A flush has something to write: notes, or this gateway's row to refresh."""
        return (
            self.pending
            or time.monotonic() - self._beat >= BEAT_S
            or self.not_ready != self._written_not_ready
            or self.certificate != self._written_certificate
        )

    def polled(self, system: str) -> None:
        """``system`` (identified by its certificate) is polling its inbox now."""
        self._polls[system] = _now()

    def refused(self, system: str | None, code: str, peer: str | None = None) -> None:
        """A request of ``system`` (None: no certificate named one) refused with ``code``; ``peer``: the client's
        address."""
        key = (_now().replace(second=0, microsecond=0), system or "-", code)
        if key not in self._refusals and len(self._refusals) >= MAX_PENDING:
            self.lost += 1  # the store has not taken the earlier ones: this one is given up
            return
        self._refusals[key] += 1
        if peer:
            peers = self._peers.setdefault(key, set())
            if len(peers) <= MAX_PEERS:
                peers.add(peer.replace(" ", ""))

    def requested(self, system: str) -> None:
        """A request of ``system`` (identified by its certificate) arrived."""
        key = (int(time.time()) // 60, system)
        if key not in self._requests and len(self._requests) >= MAX_PENDING:
            return  # the store has not taken the earlier minutes: this one is not counted
        self._requests[key] += 1

    @property
    def pending(self) -> bool:
        return bool(self._polls or self._refusals or self._requests)

    async def flush(self, pool: Any) -> None:
        """Write what was noted since the last flush; on failure it is kept for the next (StoreUnavailable)."""
        polls, self._polls = self._polls, {}
        counted, self._refusals = self._refusals, Counter()
        peers, self._peers = self._peers, {}
        arrived, self._requests = self._requests, Counter()
        try:
            async with translated("writing the gateway's activity"), pool.acquire() as conn, conn.transaction():
                # this gateway's row (written again if it went meanwhile), replacing the dead ones of this host
                not_ready, certificate = self.not_ready, self.certificate
                serial, not_after = certificate if certificate is not None else (None, None)
                await conn.execute(
                    _JOIN,
                    self.instance,
                    self.host,
                    os.getpid(),
                    self.started_at,
                    STALE_S,
                    list(not_ready),
                    serial,
                    not_after,
                )
                # rows in one order in every gateway, so two gateways writing the same rows at once never deadlock
                if polls:
                    systems = sorted(polls)
                    await conn.execute(_POLLS, systems, [polls[s] for s in systems])
                if counted:
                    keys = sorted(counted)
                    await conn.execute(
                        _REFUSALS,
                        [k[0] for k in keys],
                        [k[1] for k in keys],
                        [k[2] for k in keys],
                        [counted[k] for k in keys],
                        [" ".join(sorted(peers.get(k, ()))) for k in keys],
                        MAX_PEERS + 1,
                    )
                if arrived:
                    keys_r = sorted(arrived)
                    await conn.execute(
                        _REQUESTS, [k[0] for k in keys_r], [k[1] for k in keys_r], [arrived[k] for k in keys_r]
                    )
                if time.monotonic() - self._pruned >= PRUNE_EVERY_S:
                    await conn.execute(_PRUNE, KEEP_DAYS)
                    await conn.execute(_PRUNE_REQUESTS, KEEP_DAYS)
                    await conn.execute(_PRUNE_INSTANCES)
                    self._pruned = time.monotonic()
            self._beat = time.monotonic()
            self._written_not_ready = not_ready
            self._written_certificate = certificate
        except BaseException:
            for system, at in polls.items():  # newer notes made meanwhile win
                if system not in self._polls:
                    self._polls[system] = at
            self._refusals.update(counted)
            for key, seen in peers.items():
                kept = self._peers.setdefault(key, set())
                kept.update(sorted(seen)[: max(0, MAX_PEERS + 1 - len(kept))])
            self._requests.update(arrived)
            for minute in sorted(self._requests)[: max(0, len(self._requests) - MAX_PENDING)]:
                del self._requests[minute]  # the oldest minutes go first
            excess = len(self._refusals) - MAX_PENDING
            if excess > 0:  # the oldest minutes go first
                for key in sorted(self._refusals)[:excess]:
                    self.lost += self._refusals.pop(key)
                    self._peers.pop(key, None)
            raise
        if self.lost:
            log.warning(
                "%d gateway refusal(s) were not counted on the ops page: the store could not take them", self.lost
            )
            self.lost = 0

    async def leave(self, pool: Any) -> None:
        """This gateway stops: its row goes (a gateway that dies leaves it, and the page says so)."""
        async with translated("removing the gateway's row"):
            await pool.execute(_LEAVE, self.instance)


@dataclass(frozen=True, slots=True)
class Instance:
    """A gateway process as the store knows it."""

    host: str
    pid: int
    started_at: dt.datetime
    seen_s: float  # seconds since it last refreshed its row
    #: The codes of its failing ``GET /ready`` checks when it last refreshed its row (empty: ready).
    not_ready: tuple[str, ...] = ()
    #: The server certificate it presents to new connections: serial and end (None: not known).
    certificate_serial: str | None = None
    certificate_not_after: dt.datetime | None = None

    @property
    def alive(self) -> bool:
        return self.seen_s <= STALE_S

    def certificate_days(self, now: dt.datetime | None = None) -> int | None:
        """Whole days until the certificate it presents expires (negative: expired), or None."""
        if self.certificate_not_after is None:
            return None
        return math.floor((self.certificate_not_after - (now or _now())).total_seconds() / 86400)

    @property
    def certificate_expiring(self) -> bool:
        """Alive and presenting a certificate that expires within ``CERTIFICATE_WARN_DAYS`` (or has)."""
        days = self.certificate_days()
        return self.alive and days is not None and days < CERTIFICATE_WARN_DAYS

    @property
    def ready(self) -> bool:
        return self.alive and not self.not_ready

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "seen_s": round(self.seen_s, 1),
            "alive": self.alive,
            "ready": self.ready,
            "not_ready": [{"code": c, "title": title_of(c)} for c in self.not_ready],
            "certificate": None
            if self.certificate_not_after is None
            else {
                "serial": self.certificate_serial,
                "not_after": self.certificate_not_after.isoformat(timespec="seconds"),
                "days": self.certificate_days(),
                "expiring": self.certificate_expiring,
            },
        }


async def instances(executor: Any, *, within_s: float = 600.0) -> list[Instance]:
    """The gateways seen within ``within_s`` (a dead one stays listed that long), by host and pid."""
    rows = await executor.fetch(
        """
        SELECT host, pid, started_at, extract(epoch FROM now() - seen_at)::float8 AS seen_s, not_ready,
               certificate_serial, certificate_not_after
        FROM gateway_instances WHERE seen_at >= now() - make_interval(secs => $1) ORDER BY host, pid
        """,
        within_s,
    )
    return [
        Instance(
            r["host"],
            r["pid"],
            r["started_at"],
            max(0.0, r["seen_s"]),
            tuple(r["not_ready"]),
            r["certificate_serial"],
            r["certificate_not_after"],
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Requests:
    """A system's requests through the gateways: in the last two minutes (this one and the one before), the last
    hour, and the latest minute with one."""

    recent: int
    hour: int
    last: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {"recent": self.recent, "hour": self.hour, "last": self.last.isoformat(timespec="seconds")}


async def requests(executor: Any) -> dict[str, Requests]:
    """System → its requests through any gateway in the last hour."""
    rows = await executor.fetch(
        """
        SELECT system,
               coalesce(sum(count) FILTER (WHERE minute >= date_trunc('minute', now()) - interval '1 minute'), 0)
                   AS recent,
               sum(count) AS hour, max(minute) AS last
        FROM gateway_requests
        WHERE minute >= now() - interval '1 hour'
        GROUP BY system
        """
    )
    return {r["system"]: Requests(r["recent"], r["hour"], r["last"]) for r in rows}


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
    #: The clients' addresses in the last hour, at most ``MAX_PEERS`` of them (sorted); ``more_peers``: there were more.
    peers: tuple[str, ...] = ()
    more_peers: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "code": self.code,
            "title": title_of(self.code),
            "recent": self.recent,
            "hour": self.hour,
            "last": self.last.isoformat(timespec="seconds"),
            "peers": list(self.peers),
            "more_peers": self.more_peers,
        }


async def refusal_totals(executor: Any) -> tuple[int, int]:
    """(the (system, code) groups, the refusals) of the last hour, all of them: ``refusals`` lists at most ``limit``
    groups, so a page adding those up undercounted when many systems were refused (stale CRLs refuse everybody)."""
    row = await executor.fetchrow(
        """
        SELECT count(DISTINCT (system, code)) AS groups, coalesce(sum(count), 0) AS total
        FROM gateway_refusals
        WHERE minute >= now() - interval '1 hour'
        """
    )
    return int(row["groups"]), int(row["total"])


async def refusals(executor: Any, *, limit: int = 50) -> list[Refusals]:
    """The gateways' refusals of the last hour by system and code, the recent ones first."""
    rows = await executor.fetch(
        """
        SELECT system, code,
               coalesce(sum(count) FILTER (WHERE minute >= date_trunc('minute', now()) - interval '1 minute'), 0)
                   AS recent,
               sum(count) AS hour, max(minute) AS last,
               string_agg(array_to_string(peers, ' '), ' ') AS peers
        FROM gateway_refusals
        WHERE minute >= now() - interval '1 hour'
        GROUP BY system, code
        ORDER BY recent DESC, hour DESC, system, code
        LIMIT $1
        """,
        limit,
    )
    found = []
    for r in rows:
        peers = sorted(set((r["peers"] or "").split()))
        kept, more = tuple(peers[:MAX_PEERS]), len(peers) > MAX_PEERS
        found.append(Refusals(r["system"], r["code"], int(r["recent"]), int(r["hour"]), r["last"], kept, more))
    return found
