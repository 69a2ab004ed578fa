"""``GET /ready``'s verdict (hub/gateway/readiness.py) from the gateway's parts, each made to fail in turn: the
broker connection, the store (an error, and no answer within the timeout), the examiner processes, the CRLs, a
gateway stopping. Stand-ins for the parts (pure logic); the endpoint over TLS against the real hub is in
tests/integration/test_gateway.py."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest

from hub.errors import CODES
from hub.gateway import readiness as r
from hub.gateway.readiness import Readiness


class _Pool:
    def __init__(self, answer: Any = 1, *, fail: bool = False, hang: bool = False) -> None:
        self.answer, self.fail, self.hang, self.asked = answer, fail, hang, 0

    async def fetchval(self, sql: str) -> Any:
        self.asked += 1
        if self.hang:
            await asyncio.sleep(60)
        if self.fail:
            raise OSError("connection refused")
        return self.answer


class _Crl:
    def __init__(self, fresh: bool) -> None:
        self.fresh = fresh

    def is_fresh(self, now: dt.datetime) -> bool:
        return self.fresh


class _Store:
    def __init__(self, root: bool = True, issuing: bool | None = True) -> None:
        self.root, self.issuing = "root", ("issuing", "older")
        self.crls = {"root": _Crl(root), "issuing": None if issuing is None else _Crl(issuing), "older": _Crl(False)}

    def refresh_if_due(self) -> bool:
        return False

    def crl_for(self, ca: str) -> _Crl | None:
        return self.crls[ca]


class _Unreadable(_Store):
    def refresh_if_due(self) -> bool:
        raise OSError("permission denied: pki/crl")


def _ready(**parts: Any) -> Readiness:
    given = {
        "transport": SimpleNamespace(connected=True),
        "pool": _Pool(),
        "store": _Store(),
        "examination": SimpleNamespace(running=2),
        **parts,
    }
    return Readiness(given["transport"], given["pool"], given["store"], given["examination"])


def _failing(verdict: r.Verdict) -> list[str]:
    return [c["code"] for c in verdict.checks if not c["ok"]]


async def test_ready_when_every_part_is() -> None:
    v = await _ready().verdict()
    assert v.ready and _failing(v) == []
    assert v.as_json() == {
        "ready": True,
        "checks": [{"name": n, "ok": True} for n in ("broker", "store", "examination", "revocation", "stopping")],
    }
    # the examination in the gateway process (Direct: no examiner count) or through the queue (None) is no check
    assert (await _ready(examination=None).verdict()).ready
    # an older issuing CA's CRL may have lapsed: only the current one's and the root's are needed
    assert (await _ready(store=_Store()).verdict()).ready


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ({"transport": SimpleNamespace(connected=False)}, "GATEWAY_READY_BROKER"),
        ({"pool": _Pool(fail=True)}, "GATEWAY_READY_STORE"),
        ({"pool": _Pool(answer=None)}, "GATEWAY_READY_STORE"),
        ({"examination": SimpleNamespace(running=0)}, "GATEWAY_READY_EXAMINERS"),
        ({"store": _Store(root=False)}, "GATEWAY_READY_CRL"),
        ({"store": _Store(issuing=False)}, "GATEWAY_READY_CRL"),
        ({"store": _Store(issuing=None)}, "GATEWAY_READY_CRL"),
        ({"store": _Unreadable()}, "GATEWAY_READY_CRL"),
    ],
)
async def test_each_part_that_fails_is_named(parts: dict[str, Any], code: str) -> None:
    v = await _ready(**parts).verdict()
    assert not v.ready and _failing(v) == [code]
    body = v.as_json()
    assert body["code"] == "GATEWAY_NOT_READY" and body["title"] == CODES["GATEWAY_NOT_READY"]
    failed = next(c for c in body["checks"] if not c["ok"])
    assert failed["title"] == CODES[code]


async def test_a_store_that_does_not_answer_is_not_ready_within_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(r, "STORE_TIMEOUT_S", 0.05)
    async with asyncio.timeout(5):
        v = await _ready(pool=_Pool(hang=True)).verdict()
    assert _failing(v) == ["GATEWAY_READY_STORE"]


async def test_a_verdict_is_kept_a_second_and_concurrent_asks_share_one_look(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _Pool()
    ready = _ready(pool=pool)
    await asyncio.gather(*(ready.verdict() for _ in range(20)))
    assert pool.asked == 1
    await ready.verdict()
    assert pool.asked == 1  # kept
    monkeypatch.setattr(r, "CACHE_S", 0.0)
    await ready.verdict()
    assert pool.asked == 2


async def test_a_stopping_gateway_is_not_ready_at_once() -> None:
    ready = _ready()
    assert (await ready.verdict()).ready
    ready.stopping = True  # hub.gateway.app._stopping, on the runner's shutdown: the kept verdict is not used
    assert _failing(await ready.verdict()) == ["GATEWAY_READY_STOPPING"]
