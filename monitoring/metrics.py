"""The ops app's machine interfaces and the overview's data (issue 15); ``setup(app)`` adds the routes.

- ``GET /metrics`` — Prometheus text format, no login: the counters and histograms of ``hub run``'s processes
  (``MultiProcessCollector`` over ``<state_dir>/metrics``, which the supervisor fills; dead processes' counters
  included) merged with this process's own registry (a worker or gateway running in this process, and the
  process's own CPU and memory).
- ``GET /health`` — 200 ``{"status": "alive"}`` whenever the app serves.
- ``GET /ready`` — 200 when RabbitMQ, PostgreSQL, the CRLs and the workers are fine (``monitoring.health``), else
  503; ``{"ready": bool, "checks": [Check, …]}`` either way.
- ``GET /api/overview`` — login with ``view``; what the overview page draws, polled every 2 s. Shape::

    {
      "at": "2026-12-04T10:15:02+00:00",            # when this answer was made (UTC)
      "ready": true,                                 # as /ready
      "window_s": 60.0,                              # the span the "recent" figures cover (shorter just after start)
      "messages": {
        "total":  {"accepted": 0, "rejected": 0, "quarantined": 0, "duplicate": 0},   # since hub run started
        "recent": {"accepted": 0, "rejected": 0, "quarantined": 0, "duplicate": 0},   # within window_s
        "per_minute": 0.0,                           # all outcomes, over the window
        "deferred": 0                                # put on retry queues / dead-lettered by an outage (total)
      },
      "rejections": {"total": {"CODE": 0}, "recent": {"CODE": 0}},
      "deliveries": {"total": 0, "recent": 0},
      "latency_ms": {"p50": 12.3, "p99": 48.0,        # over the window (null when nothing passed in it)
                     "total_p50": 12.0, "total_p99": 51.0, "count": 0},
      "batches": {"count": 0, "mean_size": 7.5},     # since start (mean_size null before the first batch)
      "gateway": {"state": "up" | "degraded" | "down" | "absent",   # ``gateway_state``: this host's heartbeats and
                  "instances": [{"host": "gw-a", "pid": 4711, "started_at": "…", "seen_s": 3.2, "alive": true,
                                 "ready": true, "not_ready": [{"code": "GATEWAY_READY_CRL", "title": "…"}]}],
                                                    # every gateway's row (hub.store.gateway_activity), any machine;
                                                    # not_ready: its failing GET /ready checks
                  "requests": {"200": 0, "422": 0},     # by status, all endpoints, since start
                  "recent_requests": {"200": 0},
                  "p50_ms": 20.1, "p99_ms": 80.0,      # submissions (POST /v1/messages) over the window
                  "refusals": [{"system": "county-220183-oa" | "-", "code": "CERT_REVOKED", "title": "证书已吊销",
                                "recent": 3, "hour": 12, "last": "…"}],   # every gateway's own refusals of the
                                # last hour (hub.store.gateway_activity; recent: this minute and the one before)
                  "requests_hour": 240},   # every gateway's identified requests of the last hour
      "queues": [{"name": "hub.in.normal",
                  "role": "inbound" | "system" | "retry" | "later" | "dead" | "quarantine" | "other",
                  "system": null | "city-220100-oa", "ready": 0, "unacked": 0, "consumers": 2}],  # [] if no RabbitMQ
      "workers": {"state": "ok" | "degraded" | "down", "expected": 2 | null, "consumers": 2 | null,
                  "elsewhere": [{"host": "hub-b", "workers": 4}],   # other machines' live workers (their rows)
                  "processes": [{"index": "0", "pid": "4711" | null, "age_s": 0.4, "fresh": true}]},
      "processes": {"state": "up" | "down" | "absent",  # ``engine_state``: this host's heartbeat and every engine's
                    "alarms": 0 | null,                  # row (hub.store.process_instances), any machine; open process
                    "instances": [{"role": "processes", "index": "0", "host": "hub-a", "pid": 4711, "seen_s": 2.1,
                                   "alive": true}]},    # alarms (the /processes page; null: no store)
      "directory": {"state": "ok" | "following" | "behind" | "absent" | "unknown",   # monitoring.health
                    "stored": 7 | null, "loaded_at": "…" | null,   # hub directory load's latest version, and when
                    "refresh_s": 30, "behind": 0,                  # how often each process looks; how many lag
                    "processes": [{"role": "worker" | "gateway" | "processes", "index": "0", "pid": "4711",
                                   "host": null | "hub-b", "version": 7, "current": true}]},  # hub run's live
                                   # processes: this host's (its metrics files; host null) and, from their rows in
                                   # the store, every other machine's
      "adapters": [{"system": "city-220100-oa", "queue": "hub.q.city-220100-oa", "consumers": 1,
                    "ready": 0, "unacked": 0,
                    "state": "connected" | "polling" | "disconnected",   # ``adapter_state``
                    "link": "amqp" | "gateway" | "both" | null,   # who reads the queue (``link_of``)
                    "last_poll": "…" | null, "last_poll_s": 12.5 | null,   # its last poll through any gateway
                    "gateway_requests": {"recent": 2, "hour": 40, "last": "…"} | null}],   # its requests through
                                                    # any gateway in the last hour (null: none)
      "certificates": {
        "expiring": [{"serial", "kind", "subject", "agency", "system", "not_after", "days_left"}],  # ≤ 30 days
        "crls": [{"serial", "subject", "crl_number", "this_update", "next_update", "hours_left", "fresh"}]
      },
      "checks": [{"name": "rabbitmq" | "postgresql" | "crl" | "workers", "ok": true, "code": null | "READY_…",
                  "message": null | "中文 · English", "detail": {…}}]
    }

  ``total`` counts run from the start of ``hub run`` (its metrics directory is emptied then), plus what runs in
  this process. The page draws its charts from successive answers (e.g. the difference of ``total`` between polls).

The store is read through the app's pool (``monitoring.app.POOL``) when it has one, else through a small pool of
its own opened on first use (so ``/ready`` answers 503 with its reason while PostgreSQL is down, and recovers). The
certificate list is read at most every ``TRUST_CACHE_S`` for the overview; ``/ready`` reads the CRLs each time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import time
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from hub.metrics import MULTIPROC_ENV, OUTCOMES, metrics_dir
from hub.metrics_files import gateways_metrics_root, running_gateway_dirs
from hub.settings import Settings
from hub.transport.names import Names
from hub.transport.users import QueueStats
from monitoring import health
from monitoring.app import POOL, SETTINGS
from monitoring.auth import require

__all__ = ["collect", "histogram_quantile", "overview", "readiness", "setup"]

#: The "recent" figures of the overview cover this span (the newest kept snapshot at least this old).
WINDOW_S = 60.0
TRUST_CACHE_S = 30.0

# ------------------------------------------------------------------------------------------------ collecting


def _size(f: Path) -> int:
    try:
        return f.stat().st_size
    except OSError:  # gone meanwhile (a process that ended)
        return 0


def _merged(path: Path, pattern: str, tries: int = 5) -> list[Metric]:
    """The metrics in the files of ``path`` matching ``pattern``. A process that is starting creates its file empty
    and sizes it a moment later; read as it is, such a file made /ready and /metrics answer 500 (struct.error): files
    shorter than their header are not read yet. A file removed between the listing and the reading (a restart of
    ``hub run`` or of a gateway emptying its directory) made them answer 500 too: the directory is listed again."""
    for attempt in range(tries):
        if not path.is_dir():
            return []
        files = [str(f) for f in sorted(path.glob(pattern)) if _size(f) >= 8]
        try:
            return list(MultiProcessCollector.merge(files, accumulate=True))
        except FileNotFoundError:
            if attempt == tries - 1:
                raise
    return []  # pragma: no cover - the loop returns or raises


def collect(settings: Settings) -> list[Metric]:
    """Every metric family: ``hub run``'s processes (the metrics directory) merged with this process's registry.
    Samples with the same name and labels are added up (counters, histograms) or the larger kept (gauges)."""
    families: list[Metric] = []
    # hub run's processes, and the gateways started on their own (`hub gateway`) on this machine, a directory each
    # (hub.metrics_files.prepare_standalone).
    path = metrics_dir(settings)
    families += _merged(path, "*.db")
    for gateway in running_gateway_dirs(gateways_metrics_root(settings)):
        families += _merged(gateway, "*.db")
    own = os.environ.get(MULTIPROC_ENV)
    if own is None or os.path.realpath(own) != os.path.realpath(path):  # else this process is in that directory
        families += REGISTRY.collect()
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for fam in families:
        into = merged.get(fam.name)
        if into is None:
            into = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            values[fam.name] = {}
        seen = values[fam.name]
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in seen:
                seen[key] = max(seen[key], s.value) if fam.type == "gauge" else seen[key] + s.value
            else:
                seen[key] = s.value
    for name, fam in merged.items():
        for (sample, labels), value in values[name].items():
            fam.add_sample(sample, dict(labels), value)
    return list(merged.values())


class _Merged:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterable[Metric]:
        return collect(self.settings)


def exposition(settings: Settings) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(settings))  # type: ignore[arg-type]
    return generate_latest(registry)


# ------------------------------------------------------------------------------------------------ figures


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's estimate of the ``q`` quantile from cumulative buckets ``[(upper bound, count), …]`` sorted by
    bound, the last one ``+Inf``: linear interpolation inside the bucket that holds the rank; the highest finite
    bound when the rank falls into ``+Inf``; None when there are no observations."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


@dataclass(slots=True)
class Snapshot:
    """The counters the overview differences over time."""

    at: float
    messages: dict[str, float] = field(default_factory=dict)
    rejections: dict[str, float] = field(default_factory=dict)
    deliveries: float = 0.0
    deferred: float = 0.0
    latency: dict[float, float] = field(default_factory=dict)  # cumulative bucket counts by bound (s)
    batches: float = 0.0
    batch_sum: float = 0.0
    requests: dict[str, float] = field(default_factory=dict)  # by status
    submit: dict[float, float] = field(default_factory=dict)  # cumulative buckets of POST /v1/messages


def snapshot(families: Iterable[Metric], at: float) -> Snapshot:
    snap = Snapshot(at)
    for fam in families:
        for s in fam.samples:
            if s.name == "hub_messages_total":
                snap.messages[s.labels["outcome"]] = s.value
            elif s.name == "hub_rejections_total":
                snap.rejections[s.labels["code"]] = s.value
            elif s.name == "hub_deliveries_total":
                snap.deliveries = s.value
            elif s.name == "hub_messages_deferred_total":
                snap.deferred = s.value
            elif s.name == "hub_message_latency_seconds_bucket":
                snap.latency[float(s.labels["le"])] = s.value
            elif s.name == "hub_batch_size_count":
                snap.batches = s.value
            elif s.name == "hub_batch_size_sum":
                snap.batch_sum = s.value
            elif s.name == "hub_gateway_requests_total" and s.labels.get("endpoint") != "/ready":
                # the load balancer's probes are not the systems' requests
                status = s.labels["status"]
                snap.requests[status] = snap.requests.get(status, 0.0) + s.value
            elif s.name == "hub_gateway_request_seconds_bucket" and s.labels.get("endpoint") == "/v1/messages":
                snap.submit[float(s.labels["le"])] = s.value
    return snap


def _minus(now: dict[Any, float], then: dict[Any, float]) -> dict[Any, float]:
    return {k: v - then.get(k, 0.0) for k, v in now.items()}


def _reset(now: Snapshot, then: Snapshot) -> bool:
    """The counters went back (``hub run`` restarted and emptied its directory): the window starts afresh."""
    return sum(now.messages.values()) < sum(then.messages.values()) or any(
        v < then.latency.get(k, 0.0) for k, v in now.latency.items()
    )


def _gateway_reset(now: Snapshot, then: Snapshot) -> bool:
    """The gateways' counters went back (a gateway started on its own restarted and emptied its directory, whatever
    ``hub run`` did): their recent figures start afresh, or they would come out negative."""
    return any(now.requests.get(k, 0.0) < v for k, v in then.requests.items()) or any(
        now.submit.get(k, 0.0) < v for k, v in then.submit.items()
    )


def _quantiles(buckets: dict[float, float]) -> tuple[float | None, float | None]:
    ordered = sorted(buckets.items())
    p50, p99 = histogram_quantile(0.5, ordered), histogram_quantile(0.99, ordered)
    return (round(p50 * 1000, 1) if p50 is not None else None, round(p99 * 1000, 1) if p99 is not None else None)


def _ints(d: dict[Any, float]) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(d.items()) if v}


def figures(now: Snapshot, then: Snapshot | None) -> dict[str, Any]:
    """The counting part of the overview: totals, and the recent figures against ``then`` (None: since start)."""
    if then is None or _reset(now, then):
        then = Snapshot(now.at)
        window = 0.0
    else:
        window = now.at - then.at
    recent = _minus(now.messages, then.messages)
    p50, p99 = _quantiles(_minus(now.latency, then.latency))
    t50, t99 = _quantiles(now.latency)
    gateway_then = Snapshot(now.at) if _gateway_reset(now, then) else then
    g50, g99 = _quantiles(_minus(now.submit, gateway_then.submit))
    return {
        "window_s": round(window, 1),
        "messages": {
            "total": {o: int(now.messages.get(o, 0)) for o in OUTCOMES},
            "recent": {o: int(recent.get(o, 0)) for o in OUTCOMES},
            "per_minute": round(sum(recent.values()) * 60 / window, 1) if window > 0 else None,
            "deferred": int(now.deferred),
        },
        "rejections": {"total": _ints(now.rejections), "recent": _ints(_minus(now.rejections, then.rejections))},
        "deliveries": {"total": int(now.deliveries), "recent": int(now.deliveries - then.deliveries)},
        "latency_ms": {
            "p50": p50,
            "p99": p99,
            "total_p50": t50,
            "total_p99": t99,
            "count": int(max(now.latency.values(), default=0)),
        },
        "batches": {
            "count": int(now.batches),
            "mean_size": round(now.batch_sum / now.batches, 1) if now.batches else None,
        },
        "gateway": {
            "requests": _ints(now.requests),
            "recent_requests": _ints(_minus(now.requests, gateway_then.requests)),
            "p50_ms": g50,
            "p99_ms": g99,
        },
    }


def heartbeats(families: Iterable[Metric]) -> list[health.Heartbeat]:
    return [
        health.Heartbeat(s.labels.get("role", "?"), s.labels.get("index", "?"), s.labels.get("pid"), s.value)
        for fam in families
        for s in fam.samples
        if s.name == "hub_process_heartbeat_timestamp_seconds"
    ]


def adapter_state(consumers: int, last_poll_s: float | None, grace_s: float) -> str:
    """``connected`` while somebody reads the system's queue; ``polling`` while nobody does but the system polled
    through the gateway within ``grace_s`` (the gateway lets an idle system's queue go between its polls:
    ``hub.gateway.mailbox``); else ``disconnected``."""
    if consumers:
        return "connected"
    if last_poll_s is not None and last_poll_s <= grace_s:
        return "polling"
    return "disconnected"


def directory_taken(families: Iterable[Metric]) -> list[health.DirectoryTaken]:
    """Each process's ``hub_directory_version`` sample (``health.directory_state`` keeps the live ones)."""
    return [
        health.DirectoryTaken(s.labels.get("role", "?"), s.labels.get("index", "?"), s.labels.get("pid"), int(s.value))
        for fam in families
        for s in fam.samples
        if s.name == "hub_directory_version"
    ]


async def _stored_directory(app: web.Application) -> tuple[int | None, dt.datetime | None]:
    """The latest stored directory's version and when it was loaded; (None, None) when none is, or the store cannot
    say (its own check on the page says why)."""
    from hub.store.directory import DirectoryRepository

    try:
        pool = await _pool(app)
        async with asyncio.timeout(health.CHECK_TIMEOUT_S):
            current = await DirectoryRepository(pool).current()
    except Exception:
        return None, None
    return (None, None) if current is None else (current.version, current.loaded_at)


def queue_rows(settings: Settings, queues: Sequence[QueueStats]) -> list[dict[str, Any]]:
    names = Names(settings.namespace)
    inbound = set(names.inbound_queues)
    system_prefix = names.prefix + "q."
    rows = []
    for q in queues:
        system = None
        if q.name in inbound:
            role = "inbound"
        elif names.system_of_inbound_queue(q.name):  # a system's own inbound lane (ns.in.<lane>.<system>)
            role, system = "inbound", names.system_of_inbound_queue(q.name)
        elif q.name.startswith(system_prefix):
            role, system = "system", q.name[len(system_prefix) :]
        elif q.name == names.dead_letter_queue:
            role = "dead"
        elif q.name == names.quarantine_queue:
            role = "quarantine"
        elif q.name.startswith(names.prefix + "retry."):
            role = "retry"
        elif q.name.startswith(names.prefix + "later."):  # deliveries their recipients put off (Retry, after=)
            role = "later"
        else:
            role = "other"
        rows.append(
            {
                "name": q.name,
                "role": role,
                "system": system,
                "ready": q.ready,
                "unacked": q.unacked,
                "consumers": q.consumers,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ state per app


@dataclass
class _State:
    history: deque[Snapshot] = field(default_factory=lambda: deque(maxlen=400))
    trust: health.TrustStatus | None = None
    trust_at: float = -math.inf
    own_pool: Any = None
    pool_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


STATE = web.AppKey("metrics_state", _State)


async def _pool(app: web.Application) -> Any:
    """The frame's pool, else one of this module's own (opened on first use; StoreUnavailable while PG is down)."""
    pool = app.get(POOL)
    if pool is not None:
        return pool
    state = app[STATE]
    async with state.pool_lock:
        if state.own_pool is None:
            from hub.store.db import create_pool

            async with asyncio.timeout(health.CHECK_TIMEOUT_S):
                state.own_pool = await create_pool(app[SETTINGS].pg_dsn, min_size=0, max_size=2)
        return state.own_pool


async def _gateway_activity(
    app: web.Application,
) -> tuple[dict[str, dt.datetime], list[dict[str, Any]], list[Any], dict[str, Any], tuple[int, int]]:
    """What the gateways wrote (``hub.store.gateway_activity``, whatever machines they run on): each system's last
    poll, the last hour's refusals by system and code (the first 50 groups, and how many groups and refusals there
    are in all), and the gateways seen within a day; nothing when PostgreSQL cannot say (its own check on the page
    says why)."""
    from hub.store import gateway_activity

    try:
        pool = await _pool(app)
        async with asyncio.timeout(health.CHECK_TIMEOUT_S):
            polls = await gateway_activity.last_polls(pool)
            refused = await gateway_activity.refusals(pool)
            groups, total = await gateway_activity.refusal_totals(pool)
            running = await gateway_activity.instances(pool, within_s=86400.0)
            arrived = await gateway_activity.requests(pool)
    except Exception:
        return {}, [], [], {}, (0, 0)
    return polls, [r.as_json() for r in refused], running, arrived, (groups, total)


async def _recorded(app: web.Application) -> list[Any]:
    """``hub run``'s workers and process engines as the store knows them (``hub.store.process_instances``: any
    machine), seen within a day; nothing when PostgreSQL cannot say (its own check on the page says why)."""
    from hub.store import process_instances

    try:
        pool = await _pool(app)
        async with asyncio.timeout(health.CHECK_TIMEOUT_S):
            return await process_instances.on_record(pool)
    except Exception:
        return []


def _live(recorded: Sequence[Any]) -> list[Any]:
    """The rows of processes that run: refreshed lately and, for a process of this host, its pid alive (a killed
    process's row stays fresh up to ``STALE_S``; this host can tell at once)."""
    import socket

    here = socket.gethostname()
    return [r for r in recorded if r.alive and (r.host != here or health.pid_alive(str(r.pid)))]


def workers_elsewhere(recorded: Sequence[Any]) -> list[dict[str, Any]]:
    """How many live pipeline workers each other machine has, by their rows in the store: the workers row of an ops
    page on a machine of its own (this host's come from its metrics files)."""
    import socket
    from collections import Counter

    here = socket.gethostname()
    hosts = Counter(r.host for r in _live(recorded) if r.role == "worker" and r.host != here)
    return [{"host": h, "workers": n} for h, n in sorted(hosts.items())]


def engine_state(local: Sequence[dict[str, Any]], recorded: Sequence[Any]) -> str:
    """The process engine row's state: ``up`` when an engine is alive (a fresh heartbeat on this host, or a row of
    ``process_instances`` refreshed lately: any machine); ``down`` when one was known (a heartbeat, or a row seen
    within a day) and none is alive; ``absent`` when none ever ran."""
    rows = [r for r in recorded if r.role == "processes"]
    if any(p["fresh"] for p in local) or _live(rows):
        return "up"
    return "down" if local or rows else "absent"


def directory_from_rows(taken: Sequence[health.DirectoryTaken], recorded: Sequence[Any]) -> list[health.DirectoryTaken]:
    """This host's processes' directory versions (``taken``, from the metrics files) and those of every other live
    process the store knows (``recorded``; a process of this host is counted once, and never this process: an
    in-process worker of a test)."""
    import socket

    here, pids = socket.gethostname(), {t.pid for t in taken} | {str(os.getpid())}
    more = [
        health.DirectoryTaken(r.role, r.index, str(r.pid), r.directory_version, host=r.host)
        for r in _live(recorded)
        if r.directory_version is not None and not (r.host == here and str(r.pid) in pids)
    ]
    return [*taken, *more]


def gateway_state(local: Sequence[dict[str, Any]], running: Sequence[Any]) -> str:
    """The gateway row's state: ``up`` when a gateway serves (a row of ``gateway_instances`` refreshed lately and
    ready — any machine — or a fresh heartbeat on this host of a gateway without such a row) and every other one
    does too; ``degraded`` when one serves and another died (its row not refreshed, no gateway started since on its
    host) or is up but not ready (its ``GET /ready`` checks fail: the load balancer sends it nobody), or presents a
    server certificate that expires within ``CERTIFICATE_WARN_DAYS`` (a renewal on disk that did not load leaves the
    old one in use); ``down`` when none serves; ``absent`` when no gateway is known at all."""
    on_record = {i.pid for i in running if i.alive}
    serving = any(i.ready for i in running) or any(
        p["fresh"] and (p["pid"] is None or int(p["pid"]) not in on_record) for p in local
    )
    if serving:
        return "degraded" if any(not i.ready or i.certificate_expiring for i in running) else "up"
    return "down" if local or running else "absent"


async def _open_alarms(app: web.Application) -> int | None:
    """How many process alarms are open (the ``/processes`` page); None when PostgreSQL cannot say."""
    try:
        pool = await _pool(app)
        async with asyncio.timeout(health.CHECK_TIMEOUT_S):
            return int(await pool.fetchval("SELECT count(*) FROM process_alarms WHERE cleared_at IS NULL"))
    except Exception:  # the store's own check on the page says why
        return None


async def _store_checks(app: web.Application, *, overview: bool) -> tuple[health.Check, health.Check]:
    from hub.errors import StoreUnavailable

    state = app[STATE]
    try:
        pool = await _pool(app)
    except TimeoutError:
        err = StoreUnavailable(f"no connection within {health.CHECK_TIMEOUT_S:g} s")
        return health.check_postgresql(err), health.check_crls(None)
    except Exception as exc:
        return health.check_postgresql(exc), health.check_crls(None)
    # The overview lists expiring certificates, read at most every TRUST_CACHE_S; /ready reads the CRLs each time.
    wants_list = overview and time.monotonic() - state.trust_at > TRUST_CACHE_S
    pg, crl, status = await health.store_checks(pool, with_expiring=wants_list)
    if status is not None and wants_list:
        state.trust, state.trust_at = status, time.monotonic()
    elif status is not None and state.trust is not None:
        state.trust = health.TrustStatus(status.cas, state.trust.expiring)
    elif status is not None:
        state.trust = status
    return pg, crl


async def readiness(app: web.Application, *, overview: bool = False) -> tuple[bool, list[health.Check], Any]:
    """(ready, checks, (families, queues)) — the four checks of ``monitoring.health``, run together."""
    settings = app[SETTINGS]
    (amqp, queues), (pg, crl) = await asyncio.gather(
        health.check_rabbitmq(settings), _store_checks(app, overview=overview)
    )
    families = collect(settings)
    workers = health.check_workers(settings, heartbeats(families), queues)
    checks = [amqp, pg, crl, workers]
    return all(c.ok for c in checks), checks, (families, queues)


def link_of(names: Names, system: str, users: Collection[str]) -> str | None:
    """How a system takes part, by the broker users consuming its queue: ``amqp`` (its own user: an adapter on
    RabbitMQ), ``gateway`` (another user: the HTTPS gateway's mailbox, which logs in as the hub), ``both`` (the
    gateway gives the queue up within ``GatewaySettings.link_check_s``: ``hub.gateway.links``), None (nobody)."""
    own = names.user(system) in users
    other = any(u != names.user(system) for u in users)
    if own and other:
        return "both"
    return "amqp" if own else "gateway" if other else None


async def _consumers(settings: Settings, queues: Any) -> dict[str, frozenset[str]]:
    """Queue → its consumers' users; empty when RabbitMQ could not be read (the checks say why)."""
    from hub.transport.users import consumers_by_queue

    if not queues:
        return {}
    try:
        return await consumers_by_queue(settings, timeout=health.CHECK_TIMEOUT_S)
    except Exception:  # the rabbitmq check already reads the same API and reports what fails
        return {}


async def overview(app: web.Application) -> dict[str, Any]:
    """The JSON of ``/api/overview`` (shape in the module's docstring)."""
    settings = app[SETTINGS]
    state = app[STATE]
    ready, checks, (families, queues) = await readiness(app, overview=True)
    users = await _consumers(settings, queues)
    names = Names(settings.namespace)
    now = time.time()
    snap = snapshot(families, time.monotonic())
    then = None
    for old in state.history:  # oldest first: the newest at least WINDOW_S old, else the oldest
        if snap.at - old.at >= WINDOW_S or then is None:
            then = old
        else:
            break
    if not state.history or snap.at - state.history[-1].at >= 1.0:
        state.history.append(snap)
    while len(state.history) > 2 and snap.at - state.history[1].at > WINDOW_S * 2:
        state.history.popleft()
    out: dict[str, Any] = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "ready": ready}
    out.update(figures(snap, then))
    beats = heartbeats(families)
    gateway = health.processes(beats, "gateway", now)
    polls, refused, running, arrived, (refusal_groups, refused_hour) = await _gateway_activity(app)
    out["gateway"]["state"] = gateway_state(gateway, running)
    out["gateway"]["instances"] = [i.as_json() for i in running]
    out["gateway"]["refusals"] = refused  # the first 50 groups
    out["gateway"]["refusal_groups"] = refusal_groups  # all of them, and all their refusals: the page's totals
    out["gateway"]["refused_hour"] = refused_hour
    out["gateway"]["requests_hour"] = sum(r.hour for r in arrived.values())  # every gateway's, any machine
    rows = queue_rows(settings, queues or [])
    out["queues"] = rows
    workers = next(c for c in checks if c.name == "workers")
    out["workers"] = {k: workers.detail.get(k) for k in ("state", "expected", "consumers", "processes")}
    recorded = await _recorded(app)
    out["workers"]["elsewhere"] = workers_elsewhere(recorded)
    out["adapters"] = []
    for r in rows:
        if r["role"] != "system":
            continue
        seen = polls.get(r["system"])
        ago = None if seen is None else max(0.0, round(now - seen.timestamp(), 1))
        out["adapters"].append(
            {
                "system": r["system"],
                "queue": r["name"],
                "consumers": r["consumers"],
                "ready": r["ready"],
                "unacked": r["unacked"],
                "state": adapter_state(r["consumers"], ago, settings.poll_grace_s),
                "link": link_of(names, r["system"], users.get(r["name"], ())) if r["consumers"] else None,
                "last_poll": None if seen is None else seen.astimezone(dt.UTC).isoformat(timespec="seconds"),
                "last_poll_s": ago,
                "gateway_requests": arrived[r["system"]].as_json() if r["system"] in arrived else None,
            }
        )
    engine = health.processes(beats, "processes", now)
    out["processes"] = {
        "state": engine_state(engine, recorded),
        "alarms": await _open_alarms(app),
        "instances": [r.as_json() for r in recorded if r.role == "processes"],
    }
    stored, loaded_at = await _stored_directory(app)
    out["directory"] = health.directory_state(
        stored,
        loaded_at,
        directory_from_rows(directory_taken(families), recorded),
        settings.directory_refresh_s,
        own_pid=os.getpid(),
    )
    trust = state.trust
    out["certificates"] = {"expiring": trust.expiring if trust else [], "crls": trust.cas if trust else []}
    out["checks"] = [c.as_json() for c in checks]
    return out


# ------------------------------------------------------------------------------------------------ handlers


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    body = await asyncio.get_running_loop().run_in_executor(None, exposition, request.app[SETTINGS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health_handler(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "alive"})


async def ready_handler(request: web.Request) -> web.StreamResponse:
    ready, checks, _ = await readiness(request.app)
    return web.json_response(
        {"ready": ready, "checks": [c.as_json() for c in checks]},
        status=200 if ready else 503,
        dumps=_dumps,
    )


async def overview_handler(request: web.Request) -> web.StreamResponse:
    return web.json_response(await overview(request.app), dumps=_dumps)


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False)


async def _close(app: web.Application) -> None:
    state = app[STATE]
    if state.own_pool is not None:
        await state.own_pool.close()
        state.own_pool = None


def setup(app: web.Application) -> None:
    """Add ``/metrics``, ``/health``, ``/ready`` (no login) and ``/api/overview`` (``view``)."""
    app[STATE] = _State()
    app.on_cleanup.append(_close)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/health", health_handler)
    app.router.add_get("/ready", ready_handler)
    app.router.add_get("/api/overview", require("view")(overview_handler))
