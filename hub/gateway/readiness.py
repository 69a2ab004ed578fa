"""``GET /ready``: whether this gateway can serve now, for the load balancer in front of the gateways.

docs/operations.md puts two gateways behind a load balancer. A TCP check only says a gateway's port is open: a
gateway whose broker connection is down, whose store does not answer, whose examiners are all dead or whose CRLs
went stale keeps its port open and answers every client 503 (or ``CERT_CRL_UNAVAILABLE``) while the other gateway
could serve them. ``GET /ready`` needs no client certificate (HAProxy: ``option httpchk GET /ready`` with
``check-ssl verify required ca-file hub-root.pem``) and answers 200 ``{"ready": true, "checks": […]}``, or 503
``GATEWAY_NOT_READY`` with the failing checks' codes and Chinese titles:

- ``broker`` — the gateway's RabbitMQ connection is up (``GATEWAY_READY_BROKER``);
- ``store`` — PostgreSQL answers ``SELECT 1`` within ``STORE_TIMEOUT_S`` (``GATEWAY_READY_STORE``);
- ``examination`` — with examiner processes, at least one runs (``GATEWAY_READY_EXAMINERS``);
- ``revocation`` — the hub root's and the current issuing CA's CRLs are fresh: without them every client
  certificate is refused (``GATEWAY_READY_CRL``);
- ``stopping`` — the gateway is stopping (``GATEWAY_READY_STOPPING``).

The verdict is kept ``CACHE_S``: anyone may ask, and a flood of asks costs one ``SELECT 1`` a second. It says
nothing of hosts, versions or systems. The gateway does not count a 503 here as a refusal (it refuses nobody).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from hub.errors import title_of

__all__ = ["CACHE_S", "STORE_TIMEOUT_S", "Readiness", "Verdict"]

#: How long a verdict is kept.
CACHE_S = 1.0
#: How long PostgreSQL may take to answer ``SELECT 1``.
STORE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Verdict:
    ready: bool
    checks: tuple[dict[str, Any], ...]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ready": self.ready, "checks": list(self.checks)}
        if not self.ready:
            out["code"] = "GATEWAY_NOT_READY"
            out["title"] = title_of("GATEWAY_NOT_READY")
        return out


def _check(name: str, ok: bool, code: str) -> dict[str, Any]:
    return {"name": name, "ok": True} if ok else {"name": name, "ok": False, "code": code, "title": title_of(code)}


class Readiness:
    """The gateway's readiness from its own parts (``hub.gateway.app.GatewayState``'s)."""

    def __init__(self, transport: Any, pool: Any, store: Any, examination: Any) -> None:
        self.transport = transport
        self.pool = pool
        self.store = store  # the trust store the client identification uses
        self.examination = examination  # ExaminerPool, Direct or None
        self.stopping = False
        self._kept: tuple[float, Verdict] | None = None
        self._asking: asyncio.Task[Verdict] | None = None

    async def verdict(self) -> Verdict:
        now = time.monotonic()
        if self._kept is not None and now - self._kept[0] < CACHE_S and not self.stopping:
            return self._kept[1]
        if self._asking is None or self._asking.done():  # concurrent asks share one look
            self._asking = asyncio.get_running_loop().create_task(self._look())
        verdict = await asyncio.shield(self._asking)
        self._kept = (time.monotonic(), verdict)
        return verdict

    async def _look(self) -> Verdict:
        checks = (
            _check("broker", bool(getattr(self.transport, "connected", True)), "GATEWAY_READY_BROKER"),
            _check("store", await self._store_answers(), "GATEWAY_READY_STORE"),
            _check("examination", self._examining(), "GATEWAY_READY_EXAMINERS"),
            _check("revocation", self._crls_fresh(), "GATEWAY_READY_CRL"),
            _check("stopping", not self.stopping, "GATEWAY_READY_STOPPING"),
        )
        return Verdict(all(c["ok"] for c in checks), checks)

    async def _store_answers(self) -> bool:
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                return await self.pool.fetchval("SELECT 1") == 1  # type: ignore[no-any-return]
        except Exception:  # the store's own errors, a timeout, a closed pool: not ready, whatever it was
            return False

    def _examining(self) -> bool:
        running = getattr(self.examination, "running", None)
        return running is None or running > 0

    def _crls_fresh(self) -> bool:
        store = self.store
        now = dt.datetime.now(dt.UTC)
        try:
            store.refresh_if_due()
            crls = [store.crl_for(ca) for ca in (store.root, *store.issuing[:1])]
        except Exception:  # an unreadable PKI directory: no client certificate can be checked either
            return False
        return all(crl is not None and crl.is_fresh(now) for crl in crls)
