"""The hub's metrics: what the workers and the gateway count, measured for Prometheus (``/metrics``) and the ops
overview. The only module of ``hub`` that imports ``prometheus_client`` (``monitoring/metrics.py`` reads them).

Two modes, chosen when ``prometheus_client`` is first imported in a process:

- **multiprocess** (``hub run``): the supervisor empties ``<state_dir>/metrics/``, points
  ``PROMETHEUS_MULTIPROC_DIR`` at it (``prepare_multiprocess``) before it spawns the workers (and the gateway under
  ``hub run --gateway``), which inherit it; each process writes its values to memory-mapped files there, the ops
  app aggregates them (``MultiProcessCollector``), and a dead process's counters stay counted. The supervisor
  calls ``process_dead`` for a worker that died, which removes its heartbeat (a live-only gauge).
- **multiprocess, a gateway on its own** (``hub gateway``): the same, in ``<state_dir>/metrics-gateways/<port>/``
  (``hub.metrics_files.prepare_standalone``, before this module is imported), for the gateway and its examiners;
  the ops app of the machine merges these with ``hub run``'s.
- **one process** (a worker run in-process: tests, the SDK's test hub): the default registry of that process.

The message path stays cheap: a batch is counted once (``count_batch``: one increment per outcome, per rejection
code present, one for the deliveries and one for the batch size), never per message, but for the latency histogram,
which takes each message's observation (the batch's time) through its public ``observe`` — about 2 µs each in
multiprocess mode. The heartbeat (``heartbeat``) is a task of its own in the process's loop, every
``HEARTBEAT_EVERY_S``: a fresh heartbeat says the loop is running, not only that the process exists.

Metrics (all ``hub_*``):

- ``hub_messages_total{outcome}`` — messages examined and finished, by outcome: accepted, rejected, quarantined,
  duplicate (a redelivered or resent copy); ``hub_messages_deferred_total`` — put on the retry queues or
  dead-lettered by a transient failure (counted again when they come back).
- ``hub_rejections_total{code}`` — rejected messages by error code.
- ``hub_deliveries_total`` — deliveries published to recipient systems.
- ``hub_message_latency_seconds`` — per message, from its batch's arrival in the worker to the batch's ack (after
  record, deliver and receipt); ``hub_batch_size`` — messages per batch.
- ``hub_gateway_requests_total{endpoint,status}``, ``hub_gateway_request_seconds{endpoint}`` — the gateway.
- ``hub_gateway_refusals_total{system,code}`` — requests the gateway itself refused (its JSON answers: no, revoked or
  unknown certificate, a limit, a bad request, the hub unavailable), by the system whose certificate came with the
  request (``-`` without one) and code; what the examination rejects is in ``hub_rejections_total`` and the store.
- ``hub_gateway_last_poll_timestamp_seconds{system}`` — wall-clock time a system last polled its inbox through the
  gateway (set as each poll starts and ends; ``max`` over the gateway's processes, a restarted gateway's included).
  E.g. alert on ``time() - hub_gateway_last_poll_timestamp_seconds > 3600`` for a system that should poll every few
  minutes. (The ops overview reads both from the store instead, ``hub.store.gateway_activity``, where every gateway
  writes them whatever machine it runs on.)
- ``hub_process_heartbeat_timestamp_seconds{role,index}`` — wall-clock time of each process's last heartbeat
  (``liveall``: one series per live process, with its ``pid``; 0 once it stopped).
- ``hub_directory_version{role,index}`` — the stored directory version each process examines and routes with
  (``hub.pipeline.follow``; ``liveall``, with its ``pid``): after ``hub directory load`` every live process should
  show the new version within ``HUB_DIRECTORY_REFRESH_S``; one that stays behind could not take it (its log says why).
  E.g. alert on ``max(hub_directory_version) - min(hub_directory_version) > 0`` for a few minutes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from hub.aio import stopped
from hub.metrics_files import MULTIPROC_ENV
from hub.settings import Settings

__all__ = [
    "BATCH_SIZE",
    "DEFERRED",
    "DELIVERIES",
    "GATEWAY_LATENCY",
    "GATEWAY_POLLED",
    "GATEWAY_REFUSALS",
    "GATEWAY_REQUESTS",
    "HEARTBEAT",
    "HEARTBEAT_EVERY_S",
    "LANE_MOVED",
    "LATENCY",
    "MESSAGES",
    "MULTIPROC_ENV",
    "OUTCOMES",
    "REJECTIONS",
    "count_batch",
    "count_refusal",
    "count_request",
    "heartbeat",
    "metrics_dir",
    "polled",
    "prepare_multiprocess",
    "process_dead",
    "stopped_standalone",
]

#: How often each process refreshes its heartbeat; the ops app calls one older than 5 × this stale.
HEARTBEAT_EVERY_S = 2.0
#: The file beside the metrics in which the supervisor says how many workers it runs (read by ``/ready``).
SUPERVISOR_FILE = "supervisor.json"

OUTCOMES = ("accepted", "rejected", "quarantined", "duplicate")

MESSAGES = Counter("hub_messages", "Messages examined and finished by the pipeline, by outcome", ["outcome"])
DEFERRED = Counter("hub_messages_deferred", "Messages put on the retry queues or dead-lettered by a transient failure")
LANE_MOVED = Counter(
    "hub_emergency_lane_moved",
    "Emergency-lane messages of a publisher over its quota, moved unread to the normal lane (hub.pipeline.lanes)",
)
REJECTIONS = Counter("hub_rejections", "Rejected messages by error code", ["code"])
DELIVERIES = Counter("hub_deliveries", "Deliveries published to recipient systems")
#: Seconds; fine at the low end, where a healthy hub's batches are (tens of milliseconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY = Histogram(
    "hub_message_latency_seconds",
    "Per message: from its batch's arrival in the worker to the batch's ack (record, deliver, receipt)",
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram("hub_batch_size", "Messages per pipeline batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128))
GATEWAY_REQUESTS = Counter(
    "hub_gateway_requests", "Gateway requests by endpoint and HTTP status", ["endpoint", "status"]
)
GATEWAY_LATENCY = Histogram(
    "hub_gateway_request_seconds",
    "Gateway request time by endpoint (a submission includes the hub's examination and answer)",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
GATEWAY_REFUSALS = Counter(
    "hub_gateway_refusals",
    "Requests the gateway refused itself (JSON answers, before any examination), by the certificate's system and code",
    ["system", "code"],
)
GATEWAY_POLLED = Gauge(
    "hub_gateway_last_poll_timestamp_seconds",
    "Wall-clock time the system last polled its inbox through the HTTPS gateway (each poll's start and end)",
    ["system"],
    multiprocess_mode="max",
)
HEARTBEAT = Gauge(
    "hub_process_heartbeat_timestamp_seconds",
    "Wall-clock time of the process's last heartbeat (its event loop is running)",
    ["role", "index"],
    multiprocess_mode="liveall",
)
DIRECTORY_VERSION = Gauge(
    "hub_directory_version",
    "The stored directory version the process examines and routes with (it follows hub directory load)",
    ["role", "index"],
    multiprocess_mode="liveall",
)

_OUTCOME = {o: MESSAGES.labels(o) for o in OUTCOMES}
#: (role, index) → the directory version that process works with, for its row in the store (``heartbeat``).
_TAKEN: dict[tuple[str, str], int] = {}


def directory_taken(role: str, index: int | str, version: int | None) -> None:
    """This process now works with directory ``version`` (at start, and each time it follows a new one)."""
    if version is not None:
        DIRECTORY_VERSION.labels(role, str(index)).set(version)
        _TAKEN[(role, str(index))] = version


def metrics_dir(settings: Settings) -> Path:
    """Where ``hub run``'s processes write their metrics: ``<state_dir>/metrics``."""
    return settings.state_dir / "metrics"


def stopped_standalone(path: Path) -> None:
    """``hub gateway`` ended: remove its live-only gauges (heartbeat, directory version) from ``path``; its counters
    stay in the directory until its next start, but the ops page reads only running gateways' directories
    (``hub.metrics_files.running_gateway_dirs``)."""
    from prometheus_client import multiprocess

    if path.is_dir():
        multiprocess.mark_process_dead(os.getpid(), str(path))


def prepare_multiprocess(settings: Settings, workers: int) -> Path:
    """The supervisor, before it spawns any process: an empty metrics directory (the counters of an earlier
    ``hub run`` are not this run's), ``PROMETHEUS_MULTIPROC_DIR`` pointing at it (the spawned processes inherit it
    and so write there), and the number of workers for ``/ready``."""
    import json

    path = metrics_dir(settings)
    if path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    (path / SUPERVISOR_FILE).write_text(
        json.dumps({"pid": os.getpid(), "workers": workers, "started": time.time()}), encoding="utf-8"
    )
    return path


def child_dead(pid: int) -> None:
    """A process this one spawned (a gateway examiner) is gone: in multiprocess mode, remove its live-only gauges
    (its ``hub_directory_version``), as the supervisor does for its workers (``process_dead``)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)


def process_dead(settings: Settings, pid: int) -> None:
    """A process of ``hub run`` is gone: remove its live-only gauges (its heartbeat); its counters stay."""
    from prometheus_client import multiprocess

    path = metrics_dir(settings)
    if path.is_dir():
        multiprocess.mark_process_dead(pid, str(path))


def count_batch(outcomes: Mapping[str, int], codes: Mapping[str, int], deliveries: int, n: int, seconds: float) -> None:
    """A finished batch of ``n`` messages (acknowledged ``seconds`` after it arrived)."""
    for outcome, k in outcomes.items():
        if k:
            _OUTCOME[outcome].inc(k)
    for code, k in codes.items():
        REJECTIONS.labels(code).inc(k)
    if deliveries:
        DELIVERIES.inc(deliveries)
    for _ in range(n):  # its messages share the batch's latency
        LATENCY.observe(seconds)
    BATCH_SIZE.observe(n)


def count_request(endpoint: str, status: int, seconds: float | None) -> None:
    """One gateway request, and how long it took when it was served (None: a refusal of the gateway's own)."""
    GATEWAY_REQUESTS.labels(endpoint, str(status)).inc()
    if seconds is not None:
        GATEWAY_LATENCY.labels(endpoint).observe(seconds)


def count_refusal(system: str | None, code: str) -> None:
    """The gateway refused a request of ``system`` (None: no certificate named one) with ``code``."""
    GATEWAY_REFUSALS.labels(system or "-", code).inc()


def polled(system: str) -> None:
    """``system`` is polling its inbox through the gateway now (an identified client: its certificate's system)."""
    GATEWAY_POLLED.labels(system).set(time.time())


async def heartbeat(role: str, index: int, every_s: float = HEARTBEAT_EVERY_S, *, pool: Any = None) -> None:
    """Refresh this process's heartbeat until cancelled (run it as a task in the process's loop); cancelled (the
    worker or gateway stopped), it is set to 0: stopped, not merely late. With ``pool`` (the process's PostgreSQL
    pool) the process also keeps its row in the store, with the directory version it works with, for an ops page on
    another machine (``hub.store.process_instances``): a task of its own, so a slow store never delays the beat."""
    beat = HEARTBEAT.labels(role, str(index))
    record: asyncio.Task[None] | None = None
    if pool is not None:
        from hub.store.process_instances import ProcessRecord

        key = (role, str(index))
        record = asyncio.create_task(ProcessRecord(role, str(index)).run(pool, lambda: _TAKEN.get(key)))
    try:
        while True:
            beat.set(time.time())
            await asyncio.sleep(every_s)
    finally:
        beat.set(0)
        if record is not None:
            await stopped(record)  # its row removed before the pool closes (re-cancelled until it ends: hub.aio)
