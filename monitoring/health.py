"""The health checks behind ``/ready`` and the ops overview (issue 15): RabbitMQ, PostgreSQL, a fresh CRL for every
active issuing CA, and the pipeline workers. Each check is a ``Check``: ``ok``, and when not, a stable ``code`` and a
sentence in Chinese then English (``中文 · English``), plus what it saw (``detail``) for the page.

- ``rabbitmq`` — the management API answers (``hub.transport.users.queue_stats``; its queue list also feeds the
  page and the workers' check). Code ``READY_AMQP``.
- ``postgresql`` — the store answers (the issuing CAs of the certificate register, read through
  ``hub.store.certificates``). Code ``READY_POSTGRESQL``.
- ``crl`` — every issuing CA that is neither revoked nor expired has a recorded CRL whose nextUpdate is in the
  future (verification fails closed on a stale CRL). Codes ``READY_CRL_STALE``, ``READY_CRL_MISSING``,
  ``READY_NO_CA``.
- ``workers`` — at least one pipeline worker runs: a fresh heartbeat (``hub.metrics``: refreshed every 2 s by the
  worker's loop; fresh = under ``STALE_AFTER_S``) or a consumer on the inbound normal lane. ``state`` is ``ok``,
  ``degraded`` (fewer fresh heartbeats than ``hub run`` started workers: a worker died and is being replaced —
  the hub still serves, so still ready) or ``down``. Code ``READY_WORKERS``.

Beside the checks (not part of readiness), ``directory_state``: whether every live process has taken the stored
directory (``hub directory load``), from their ``hub_directory_version``.

No SQL here (``hub.store``), no ``prometheus_client`` (the heartbeats and directory versions come in as ``Heartbeat``
and ``DirectoryTaken`` values from ``monitoring.metrics``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.errors import HubError
from hub.metrics import HEARTBEAT_EVERY_S, SUPERVISOR_FILE, metrics_dir
from hub.settings import Settings
from hub.transport.users import QueueStats

__all__ = [
    "STALE_AFTER_S",
    "Check",
    "DirectoryTaken",
    "Heartbeat",
    "TrustStatus",
    "check_crls",
    "check_postgresql",
    "check_rabbitmq",
    "check_workers",
    "directory_state",
    "trust_status",
]

#: A heartbeat older than this is stale (five missed beats).
STALE_AFTER_S = 5 * HEARTBEAT_EVERY_S
#: Every check gives up after this long (an unreachable service must not hang /ready).
CHECK_TIMEOUT_S = 3.0
#: Certificates expiring within this many days are listed on the page.
EXPIRING_DAYS = 30


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    code: str | None = None
    message: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "code": self.code, "message": self.message, "detail": self.detail}


def _fail(name: str, code: str, zh: str, en: str, **detail: Any) -> Check:
    return Check(name, False, code, f"{zh} · {en}", detail)


def _iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds") if t is not None else None


# ------------------------------------------------------------------------------------------------ RabbitMQ


async def check_rabbitmq(settings: Settings) -> tuple[Check, list[QueueStats] | None]:
    """The management API's view of the namespace's queues, or why it could not be read."""
    from hub.transport.users import queue_stats

    try:
        queues = await queue_stats(settings, timeout=CHECK_TIMEOUT_S)
    except Exception as exc:
        reason = f"{exc.code}: {exc.detail}" if isinstance(exc, HubError) else type(exc).__name__
        return (
            _fail(
                "rabbitmq",
                "READY_AMQP",
                "无法读取 RabbitMQ 管理接口",
                f"the RabbitMQ management API cannot be read ({reason})",
            ),
            None,
        )
    return Check("rabbitmq", True, detail={"queues": len(queues)}), queues


# ------------------------------------------------------------------------------------------------ PostgreSQL + CRLs


@dataclass(slots=True)
class TrustStatus:
    """What the register says: issuing CAs with their latest CRL, and certificates expiring soon."""

    cas: list[dict[str, Any]]
    expiring: list[dict[str, Any]]


async def trust_status(pool: Any, *, with_expiring: bool = True) -> TrustStatus:
    """The active issuing CAs and their latest CRLs (and, with ``with_expiring``, every valid certificate that
    expires within ``EXPIRING_DAYS``). Raises ``StoreUnavailable`` when PostgreSQL is unreachable."""
    from hub.store.certificates import CertificateRepository

    repo = CertificateRepository(pool)
    now = dt.datetime.now(dt.UTC)
    rows = await repo.certificates() if with_expiring else await repo.certificates(kind="issuing")
    cas = []
    for c in rows:
        if c.kind != "issuing" or c.state(now) != "valid":
            continue
        crl = await repo.latest_crl(c.serial)
        cas.append(
            {
                "serial": c.serial,
                "subject": c.subject,
                "crl_number": crl.number if crl else None,
                "this_update": _iso(crl.this_update) if crl else None,
                "next_update": _iso(crl.next_update) if crl else None,
                "hours_left": round((crl.next_update - now).total_seconds() / 3600, 1) if crl else None,
                "fresh": crl is not None and crl.next_update > now,
            }
        )
    expiring = [
        {
            "serial": c.serial,
            "kind": c.kind,
            "subject": c.subject,
            "agency": c.agency,
            "system": c.system,
            "not_after": _iso(c.not_after),
            "days_left": c.days_left(now),
        }
        for c in rows
        if c.state(now) == "valid" and c.days_left(now) <= EXPIRING_DAYS
    ]
    expiring.sort(key=lambda e: e["not_after"] or "")
    return TrustStatus(cas, expiring)


def check_postgresql(error: Exception | None) -> Check:
    if error is None:
        return Check("postgresql", True)
    reason = f"{error.code}: {error.detail}" if isinstance(error, HubError) else type(error).__name__
    return _fail("postgresql", "READY_POSTGRESQL", "PostgreSQL 不可用", f"PostgreSQL is unavailable ({reason})")


def check_crls(status: TrustStatus | None) -> Check:
    """Every active issuing CA has a fresh CRL (``status`` None: the register could not be read)."""
    if status is None:
        return _fail("crl", "READY_CRL_UNKNOWN", "无法读取证书登记簿", "the certificate register cannot be read")
    detail: dict[str, Any] = {"cas": status.cas}
    if not status.cas:
        return _fail(
            "crl", "READY_NO_CA", "没有有效的签发 CA", "no valid issuing CA in the register (hub pki init)", **detail
        )
    missing = [ca for ca in status.cas if ca["next_update"] is None]
    if missing:
        names = ", ".join(f"{ca['subject']} ({ca['serial']})" for ca in missing)
        return _fail("crl", "READY_CRL_MISSING", "签发 CA 没有撤销列表", f"no CRL was published for {names}", **detail)
    stale = [ca for ca in status.cas if not ca["fresh"]]
    if stale:
        names = ", ".join(f"{ca['subject']} ({ca['serial']}, nextUpdate {ca['next_update']})" for ca in stale)
        return _fail(
            "crl",
            "READY_CRL_STALE",
            "证书撤销列表已过期，签名验证将全部失败",
            f"the CRL is past its nextUpdate, every verification fails closed: {names} (hub pki crl)",
            **detail,
        )
    return Check("crl", True, detail=detail)


async def store_checks(pool: Any, *, with_expiring: bool) -> tuple[Check, Check, TrustStatus | None]:
    """The PostgreSQL and CRL checks from one read of the register."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            status = await trust_status(pool, with_expiring=with_expiring)
    except TimeoutError:
        from hub.errors import StoreUnavailable

        err = StoreUnavailable(f"no answer within {CHECK_TIMEOUT_S:g} s")
        return check_postgresql(err), check_crls(None), None
    except Exception as exc:
        return check_postgresql(exc), check_crls(None), None
    return check_postgresql(None), check_crls(status), status


# ------------------------------------------------------------------------------------------------ workers


@dataclass(frozen=True, slots=True)
class Heartbeat:
    role: str  # worker | gateway
    index: str
    pid: str | None
    at: float  # wall-clock seconds


def supervisor_info(settings: Settings) -> dict[str, Any] | None:
    """What ``hub run`` wrote when it started (its pid and number of workers), or None."""
    try:
        info = json.loads((metrics_dir(settings) / SUPERVISOR_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def pid_alive(pid: Any) -> bool:
    """Does process ``pid`` of this host exist (``_alive``)?"""
    return _alive(pid)


def _alive(pid: Any) -> bool:
    """Does process ``pid`` exist? (Signal 0 checks without sending; EPERM means it exists but runs as another user,
    as hub run may beside a ``hub ops`` of its own account.)"""
    import os

    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True
    except (OSError, ValueError, TypeError):
        return False
    return True


def processes(beats: Sequence[Heartbeat], role: str, now: float | None = None) -> list[dict[str, Any]]:
    """The heartbeats of one role, each with its age and whether it is fresh."""
    now = time.time() if now is None else now
    out = [
        {"index": b.index, "pid": b.pid, "age_s": round(now - b.at, 1), "fresh": now - b.at < STALE_AFTER_S}
        for b in beats
        if b.role == role and b.at > 0  # 0: stopped (an in-process worker or gateway that was stopped)
    ]
    return sorted(out, key=lambda p: (p["index"], p["pid"] or ""))


@dataclass(frozen=True, slots=True)
class DirectoryTaken:
    """A process's ``hub_directory_version``: the stored directory version it examines and routes with."""

    role: str  # worker | gateway | processes
    index: str
    pid: str | None
    version: int
    #: None: a process of this host (its metrics file); else the host of a process's row in the store
    #: (``hub.store.process_instances``: alive by its row, wherever it runs).
    host: str | None = None


#: Seconds beyond two looks (``HUB_DIRECTORY_REFRESH_S`` each) within which a process may still be on the version
#: before a load: it takes a new one at its next look, and a look may come just before the load.
DIRECTORY_GRACE_S = 5.0


def directory_state(
    stored: int | None,
    loaded_at: dt.datetime | None,
    taken: Sequence[DirectoryTaken],
    refresh_s: float,
    *,
    own_pid: int | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Has every live process taken the stored directory (``hub directory load``)? For the overview: ``stored``
    (its version, None when none is stored or the store cannot say), ``loaded_at``, ``processes`` (each live one's
    role, index, pid, version and whether it is ``current``), ``behind`` (how many are not) and ``state``:

    - ``ok``: every process works with the stored version;
    - ``following``: some do not yet, within two looks of the load (each looks every ``refresh_s``);
    - ``behind``: some still do not after that — the process logs why (``could not take the new directory``);
    - ``absent``: no process reports one (no ``hub run`` anywhere); ``unknown``: the store cannot say.

    Only hub run's processes count: a sample of this host with a pid that is alive and is not this process (whose own
    registry holds what an in-process worker, in a test, left behind), or a live row of another host's process."""
    now = dt.datetime.now(dt.UTC) if now is None else now
    live = sorted(
        (
            t
            for t in taken
            if t.host is not None
            or (t.pid is not None and _alive(t.pid) and (own_pid is None or t.pid != str(own_pid)))
        ),
        key=lambda t: (t.role, t.index, t.host or "", t.pid or ""),
    )
    procs = [
        {
            "role": t.role,
            "index": t.index,
            "pid": t.pid,
            "host": t.host,
            "version": t.version,
            "current": stored is None or t.version >= stored,
        }
        for t in live
    ]
    behind = sum(1 for p in procs if not p["current"])
    if stored is None:
        state = "unknown"
    elif not procs:
        state = "absent"
    elif not behind:
        state = "ok"
    elif loaded_at is not None and (now - loaded_at).total_seconds() <= 2 * refresh_s + DIRECTORY_GRACE_S:
        state = "following"
    else:
        state = "behind"
    return {
        "state": state,
        "stored": stored,
        "loaded_at": _iso(loaded_at),
        "refresh_s": refresh_s,
        "behind": behind,
        "processes": procs,
    }


def check_workers(
    settings: Settings, beats: Sequence[Heartbeat], queues: Sequence[QueueStats] | None, now: float | None = None
) -> Check:
    from hub.transport.names import Names

    procs = processes(beats, "worker", now)
    fresh = [p for p in procs if p["fresh"]]
    info = supervisor_info(settings)
    expected = None
    if info is not None and _alive(info.get("pid")):
        expected = int(info.get("workers", 0)) or None
    consumers = None
    if queues is not None:
        normal = Names(settings.namespace).inbound_queue("normal")  # every worker reads it beside the systems' lanes
        consumers = sum(q.consumers for q in queues if q.name == normal)
    detail: dict[str, Any] = {"expected": expected, "processes": procs, "consumers": consumers}
    if not fresh and not consumers:
        detail["state"] = "down"
        return _fail(
            "workers",
            "READY_WORKERS",
            "没有运行中的流水线工作进程",
            "no pipeline worker is running (no fresh heartbeat, no consumer on the inbound queue; start `hub run`)",
            **detail,
        )
    # hub run's workers beat with their pid (multiprocess mode); a pid-less beat is a worker inside this process
    # (tests), which hub run's expected count does not include.
    running = len([p for p in fresh if p["pid"] is not None])
    detail["state"] = "degraded" if expected is not None and running < expected else "ok"
    if detail["state"] == "degraded":
        detail["message"] = (
            f"{running}/{expected} 个工作进程在运行（其余正在重启） · "
            f"{running} of {expected} workers running (the others are being restarted)"
        )
    return Check("workers", True, detail=detail)
