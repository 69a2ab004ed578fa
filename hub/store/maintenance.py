"""Table upkeep where PostgreSQL's autovacuum does not run.

The hub's message path uses prepared statements whose plans PostgreSQL caches per connection. A plan made while a
table is small (a new installation) — a sequential scan of ``deliveries`` to find a batch's rows, say — stays in
the cache until the table's statistics change; autovacuum's ANALYZE changes them within a minute or so. Where
autovacuum is switched off (some shared or tuned servers; the machine the benches run on) nothing ever does, so the
plan keeps scanning a table that grows by hundreds of rows a second (bench/e2e.py measured ``record_sent`` going
from 0.3 ms to over 2 ms a call), and rows deleted from ``evidence_pending`` are never reclaimed.

``maintain`` does what autovacuum would for the hub's busy tables, with autovacuum's own thresholds
(``autovacuum_analyze_threshold`` + ``_scale_factor`` × rows; the same for VACUUM), and only when autovacuum is
off. Worker 0 calls it every few seconds; a check is one catalogue query. ANALYZE invalidates the cached plans
that depend on the table, so every connection re-plans with the new statistics.

Like autovacuum, it does a table again no sooner than ``autovacuum_naptime`` (a minute) after it last did it —
with one exception: a table that has more than doubled since its last ANALYZE is analyzed at once, so a new
installation's plans follow its tables from a few rows to many (log₂ of the growth ANALYZEs, not one every few
seconds). Doing all the busy tables every 5 s at 300 messages/s cost PostgreSQL CPU the message path needed,
re-planned every statement in every worker, and put latency spikes of 40–140 ms beside each round
(bench/e2e.py --keep). ``evidence_pending`` keeps its empty tail pages (``vacuum_truncate`` off, migration 011):
truncating it takes an ACCESS EXCLUSIVE lock on the table every batch inserts into.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from hub.store.db import acquired, translated

log = logging.getLogger("hub.store")

#: The tables the message path writes all the time.
BUSY_TABLES: Final[tuple[str, ...]] = (
    "messages",
    "deliveries",
    "receipts",
    "evidence_pending",
    "evidence",
    "intake_rejections",
    # one-row tables updated on every chain job and every process's feed: without VACUUM their dead rows pile up
    # and PostgreSQL estimates them at thousands of rows
    "evidence_head",
    "process_cursor",
    # the process engine's own queues, read on every pass through partial indexes (due timers, unpublished outbox
    # rows, open deadlines): each row is updated once when it fires, is published or is done, so their dead rows
    # pile up as fast as the hub sends notices
    "process_timers",
    "process_outbox",
    "document_deadlines",
)

#: Below this many rows a table's plans do not matter: a small queue table (evidence_pending) that doubles between
#: two chain jobs is not "grown".
_GROWN_SLACK: Final = 1000

_STATE = """
SELECT c.relname AS name,
       greatest(c.reltuples, 0)::bigint AS rows,
       coalesce(s.n_mod_since_analyze, 0) AS changed,
       coalesce(s.n_dead_tup, 0) AS dead,
       coalesce(s.n_live_tup, 0) AS live,
       now() - greatest(s.last_analyze, s.last_autoanalyze) AS since_analyze,
       now() - greatest(s.last_vacuum, s.last_autovacuum) AS since_vacuum,
       current_setting('autovacuum_naptime')::interval AS naptime,
       current_setting('autovacuum')::boolean AS autovacuum,
       current_setting('autovacuum_analyze_threshold')::int AS a_base,
       current_setting('autovacuum_analyze_scale_factor')::float8 AS a_scale,
       current_setting('autovacuum_vacuum_threshold')::int AS v_base,
       current_setting('autovacuum_vacuum_scale_factor')::float8 AS v_scale
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relname = ANY($1::text[]) AND c.relnamespace = current_schema()::regnamespace
"""


async def maintain(executor: Any, tables: tuple[str, ...] = BUSY_TABLES, *, force: bool = False) -> list[str]:
    """VACUUM or ANALYZE those of ``tables`` that autovacuum would now, if autovacuum is off (or ``force``).
    Returns what was done (e.g. ``["ANALYZE deliveries"]``); nothing when autovacuum is on."""
    done: list[str] = []
    async with translated("maintaining tables"), acquired(executor) as conn:
        rows = await conn.fetch(_STATE, list(tables))
        if not rows or (rows[0]["autovacuum"] and not force):
            return []
        for r in rows:
            vacuum, analyze = _due(r, force=force)
            if vacuum:
                command = f'VACUUM (ANALYZE) "{r["name"]}"'
            elif analyze:
                command = f'ANALYZE "{r["name"]}"'
            else:
                continue
            await conn.execute(command)  # outside any transaction: VACUUM cannot run in one
            done.append(command.replace('"', ""))
    if done:
        log.info("autovacuum is off; did its work: %s", ", ".join(done))
    return done


def _due(r: Any, *, force: bool) -> tuple[bool, bool]:
    """(VACUUM due, ANALYZE due) for one row of ``_STATE``: over autovacuum's threshold, and not done within the
    naptime — unless never done, grown more than twofold (and by over ``_GROWN_SLACK`` rows) since its last ANALYZE,
    or ``force``."""

    def rested(since: Any) -> bool:
        return force or since is None or since >= r["naptime"]

    vacuum = r["dead"] > r["v_base"] + r["v_scale"] * r["rows"] and rested(r["since_vacuum"])
    grown = r["live"] > 2 * r["rows"] + _GROWN_SLACK
    analyze = r["changed"] > r["a_base"] + r["a_scale"] * r["rows"] and (grown or rested(r["since_analyze"]))
    return vacuum, analyze
