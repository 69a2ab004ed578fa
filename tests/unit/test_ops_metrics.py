"""The hub's metrics without services (issue 15): the quantile estimate from histogram buckets, the real worker
counting a batch of mixed messages in memory, the health checks' verdicts, and the shape of ``/api/overview`` that the overview page draws from."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hub import metrics as hm
from hub.settings import Settings
from hub.transport.users import QueueStats
from monitoring import health
from monitoring import metrics as mm


def _samples(metric: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in metric.collect()
        for s in fam.samples
        if not s.name.endswith("_created")
    }


def _delta(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {k: round(v - before.get(k, 0.0), 9) for k, v in after.items() if v != before.get(k, 0.0)}


# ------------------------------------------------------------------------------------------------ quantiles


def test_histogram_quantile_interpolates_as_prometheus_does() -> None:
    inf = float("inf")
    buckets = [(0.01, 10.0), (0.02, 60.0), (0.05, 90.0), (0.1, 100.0), (inf, 100.0)]
    # rank 50 lies in (0.01, 0.02]: 40 of its 50 observations → 0.01 + 0.01 * 40/50
    assert mm.histogram_quantile(0.5, buckets) == pytest.approx(0.018)
    # rank 99 lies in (0.05, 0.1]: 9 of 10 → 0.05 + 0.05 * 0.9
    assert mm.histogram_quantile(0.99, buckets) == pytest.approx(0.095)
    # the first bucket interpolates from 0
    assert mm.histogram_quantile(0.05, buckets) == pytest.approx(0.005)
    # a rank in +Inf: the highest finite bound
    assert mm.histogram_quantile(0.99, [(0.01, 1.0), (inf, 100.0)]) == 0.01
    assert mm.histogram_quantile(0.5, [(0.01, 0.0), (inf, 0.0)]) is None
    assert mm.histogram_quantile(0.5, []) is None


# ------------------------------------------------------------------------------------------------ the worker counts


async def test_the_worker_counts_a_batch_by_outcome_and_code(tmp_path: Path) -> None:
    """The real worker on the in-memory twins: 6 new messages, 2 copies of them, 3 that are no message."""
    import asyncio

    from hub.envelope import Envelope, parse
    from hub.transport.memory import MemoryTransport
    from hub.transport.topology import Outgoing
    from tests.hostile import costly

    kit = costly.make_kit(tmp_path / "kit")
    worker, names, broker, _ = kit.memory_worker("mem")
    before = {
        m: _samples(m) for m in (hm.MESSAGES, hm.REJECTIONS, hm.DELIVERIES, hm.LATENCY, hm.BATCH_SIZE, hm.HEARTBEAT)
    }
    await worker.start()
    client = MemoryTransport(names, broker, user="client")
    try:
        fresh = [kit.typical() for _ in range(6)]
        junk = [b"<broken %d" % i for i in range(3)]

        def inbound(data: bytes) -> Outgoing:
            return Outgoing(names.inbound_exchange, "normal", data, {}, 0, str(uuid.uuid4()))

        await client.publish_many([inbound(d) for d in [*fresh, *junk]])
        deadline = time.monotonic() + 20
        while (
            _samples(hm.MESSAGES) == before[hm.MESSAGES]
            or sum(_delta(before[hm.MESSAGES], _samples(hm.MESSAGES)).values()) < 9
        ):
            assert time.monotonic() < deadline, "the worker did not count the first nine messages"
            await asyncio.sleep(0.02)
        await client.publish_many([inbound(d) for d in fresh[:2]])
        while sum(_delta(before[hm.MESSAGES], _samples(hm.MESSAGES)).values()) < 11:
            assert time.monotonic() < deadline, "the worker did not count the copies"
            await asyncio.sleep(0.02)
        beat = ("hub_process_heartbeat_timestamp_seconds", (("index", "0"), ("role", "worker")))
        assert time.time() - _samples(hm.HEARTBEAT)[beat] < 5  # beating while it runs
    finally:
        await worker.stop()
        await client.close()
    assert _samples(hm.HEARTBEAT)[beat] == 0  # stopped, not merely late
    assert {Envelope.from_tree(parse(d)).message_id for d in fresh}  # the messages were real envelopes
    got = _delta(before[hm.MESSAGES], _samples(hm.MESSAGES))
    assert got == {
        ("hub_messages_total", (("outcome", "accepted"),)): 6,
        ("hub_messages_total", (("outcome", "rejected"),)): 3,
        ("hub_messages_total", (("outcome", "duplicate"),)): 2,
    }
    assert _delta(before[hm.REJECTIONS], _samples(hm.REJECTIONS)) == {
        ("hub_rejections_total", (("code", "ENV_MALFORMED"),)): 3
    }
    assert _delta(before[hm.DELIVERIES], _samples(hm.DELIVERIES)) == {("hub_deliveries_total", ()): 6}
    latency = _delta(before[hm.LATENCY], _samples(hm.LATENCY))
    assert latency[("hub_message_latency_seconds_count", ())] == 11
    sizes = _delta(before[hm.BATCH_SIZE], _samples(hm.BATCH_SIZE))
    assert sizes[("hub_batch_size_sum", ())] == 11


# ------------------------------------------------------------------------------------------------ health


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings.from_env(namespace="ns", state_dir=tmp_path, **kw)


def test_workers_are_up_with_a_fresh_heartbeat_or_a_consumer(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    now = time.time()
    fresh = health.Heartbeat("worker", "0", "11", now - 1)
    stale = health.Heartbeat("worker", "1", "12", now - 60)
    nobody = [QueueStats("ns.in.normal", 5, 0, 0)]

    down = health.check_workers(s, [stale], nobody, now)
    assert not down.ok and down.code == "READY_WORKERS" and down.detail["state"] == "down"
    assert down.message is not None and " · " in down.message  # 中文 · English
    assert [p["fresh"] for p in down.detail["processes"]] == [False]

    assert health.check_workers(s, [fresh, stale], nobody, now).ok
    consuming = health.check_workers(s, [], [QueueStats("ns.in.normal", 0, 3, 2)], now)
    assert consuming.ok and consuming.detail["consumers"] == 2

    # hub run (this process stands in for its supervisor) said two workers; one heartbeat is fresh: degraded.
    hm_dir = hm.metrics_dir(s)
    hm_dir.mkdir()
    (hm_dir / hm.SUPERVISOR_FILE).write_text(json.dumps({"pid": __import__("os").getpid(), "workers": 2}))
    degraded = health.check_workers(s, [fresh, stale], nobody, now)
    assert degraded.ok and degraded.detail["state"] == "degraded" and degraded.detail["expected"] == 2
    # a worker inside this process (no pid label: not one of hub run's) does not stand in for the missing one
    inside = health.Heartbeat("worker", "0", None, now - 1)
    still = health.check_workers(s, [fresh, stale, inside], nobody, now)
    assert still.detail["state"] == "degraded" and "1 of 2 workers running" in still.detail["message"]


def test_the_directory_state_says_whether_every_live_process_took_the_stored_version() -> None:
    import datetime as dt
    import os
    import subprocess

    now = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)
    me = os.getpid()
    child = subprocess.Popen(["sleep", "30"])  # a live pid of "another process"
    try:
        live, other = str(child.pid), str(me)
        dead = str(2**22 + 12345)  # above pid_max's default: no such process

        def state(stored: int | None, seconds_ago: float, *taken: tuple[str, str, str | None, int]) -> dict[str, Any]:
            return health.directory_state(
                stored,
                now - dt.timedelta(seconds=seconds_ago),
                [health.DirectoryTaken(*t) for t in taken],
                30,
                own_pid=me,
                now=now,
            )

        ok = state(7, 300, ("worker", "0", live, 7), ("worker", "1", live, 8))
        assert ok["state"] == "ok" and ok["behind"] == 0 and ok["stored"] == 7
        assert [p["current"] for p in ok["processes"]] == [True, True]
        # a load a few seconds ago that a worker has not looked at yet: following, not a fault
        following = state(8, 10, ("worker", "0", live, 8), ("gateway", "0", live, 7))
        assert following["state"] == "following" and following["behind"] == 1
        assert [(p["role"], p["current"]) for p in following["processes"]] == [("gateway", False), ("worker", True)]
        # past two looks (2 × 30 s) and the grace: behind
        assert state(8, 2 * 30 + health.DIRECTORY_GRACE_S + 1, ("gateway", "0", live, 7))["state"] == "behind"
        assert state(8, 2 * 30 + health.DIRECTORY_GRACE_S - 1, ("gateway", "0", live, 7))["state"] == "following"
        # only hub run's live processes count: not a dead pid, not this process's own registry, not a pid-less sample
        gone = state(8, 600, ("worker", "0", dead, 7), ("worker", "1", other, 7), ("worker", "2", None, 7))
        assert gone["state"] == "absent" and gone["processes"] == [] and gone["behind"] == 0
        assert state(None, 0, ("worker", "0", live, 7))["state"] == "unknown"  # the store cannot say
    finally:
        child.kill()
        child.wait()


def test_a_process_of_another_account_counts_as_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """hub ops may run under an account of its own: signal 0 to hub run's processes then fails with EPERM, which
    says the process exists (ESRCH says it does not)."""
    import datetime as dt
    import os

    now = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)
    taken = [health.DirectoryTaken("worker", "0", "4711", 8)]

    def refuse(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refuse)
    assert health.directory_state(8, now, taken, 30, now=now)["state"] == "ok"

    def gone(pid: int, sig: int) -> None:
        raise ProcessLookupError(3, "No such process")

    monkeypatch.setattr(os, "kill", gone)
    assert health.directory_state(8, now, taken, 30, now=now)["state"] == "absent"


def test_the_crl_check_names_the_stale_or_missing_crl() -> None:
    def ca(fresh: bool | None) -> dict[str, Any]:
        return {
            "serial": "0a",
            "subject": "CN=Issuing",
            "next_update": None if fresh is None else "2026-12-04T00:00:00+00:00",
            "fresh": bool(fresh),
        }

    assert health.check_crls(health.TrustStatus([ca(True)], [])).ok
    stale = health.check_crls(health.TrustStatus([ca(True), ca(False)], []))
    assert not stale.ok and stale.code == "READY_CRL_STALE" and "CN=Issuing (0a" in (stale.message or "")
    assert health.check_crls(health.TrustStatus([ca(None)], [])).code == "READY_CRL_MISSING"
    assert health.check_crls(health.TrustStatus([], [])).code == "READY_NO_CA"
    assert health.check_crls(None).code == "READY_CRL_UNKNOWN"


# ------------------------------------------------------------------------------------------------ the overview


def test_recent_figures_difference_two_snapshots_and_survive_a_restart() -> None:
    then = mm.Snapshot(0.0, messages={"accepted": 100}, latency={0.01: 50, 0.05: 100, float("inf"): 100})
    now = mm.Snapshot(
        60.0,
        messages={"accepted": 160, "rejected": 2},
        rejections={"MSG_EXPIRED": 2},
        latency={0.01: 50, 0.05: 162, float("inf"): 162},
    )
    f = mm.figures(now, then)
    assert f["window_s"] == 60.0
    assert f["messages"]["recent"] == {"accepted": 60, "rejected": 2, "quarantined": 0, "duplicate": 0}
    assert f["messages"]["per_minute"] == 62.0
    assert f["rejections"] == {"total": {"MSG_EXPIRED": 2}, "recent": {"MSG_EXPIRED": 2}}
    assert 10 < f["latency_ms"]["p50"] <= 50  # all 62 recent ones were in (10, 50] ms
    restarted = mm.figures(mm.Snapshot(61.0, messages={"accepted": 3}), now)  # hub run restarted: counters went back
    assert restarted["window_s"] == 0.0 and restarted["messages"]["recent"]["accepted"] == 3


async def test_the_overview_json_has_the_documented_shape(tmp_path: Path) -> None:
    """Every service unreachable (closed ports): still the whole shape, with the failing checks' codes."""
    from aiohttp.test_utils import TestClient, TestServer

    s = _settings(
        tmp_path,
        pg_dsn="postgresql://postgres@127.0.0.1:9/postgres",
        amqp_management_url="http://guest:guest@127.0.0.1:9/",
    )
    app = web.Application()
    app[mm.SETTINGS] = s
    mm.setup(app)
    hm.count_batch({"accepted": 2}, {}, 2, 2, 0.01)
    async with TestClient(TestServer(app)) as client:
        data = await mm.overview(app)
        assert set(data) == {
            "at",
            "ready",
            "window_s",
            "messages",
            "rejections",
            "deliveries",
            "latency_ms",
            "batches",
            "gateway",
            "queues",
            "workers",
            "processes",
            "directory",
            "adapters",
            "certificates",
            "checks",
        }
        assert data["processes"] == {"state": "absent", "alarms": None, "instances": []}  # no engine, no store
        assert data["directory"]["state"] == "unknown" and data["directory"]["stored"] is None  # no store
        assert set(data["messages"]) == {"total", "recent", "per_minute", "deferred"}
        assert set(data["messages"]["total"]) == set(hm.OUTCOMES)
        assert set(data["latency_ms"]) == {"p50", "p99", "total_p50", "total_p99", "count"}
        assert set(data["gateway"]) == {
            "state",
            "requests",
            "recent_requests",
            "p50_ms",
            "p99_ms",
            "refusals",
            "refusal_groups",
            "refused_hour",
            "instances",
            "requests_hour",
        }
        assert set(data["workers"]) == {"state", "expected", "consumers", "processes", "elsewhere"}
        assert set(data["certificates"]) == {"expiring", "crls"}
        assert data["ready"] is False
        codes = {c["name"]: c["code"] for c in data["checks"]}
        # (the workers' verdict depends on heartbeats of in-process workers of earlier tests: not asserted here)
        assert codes.pop("workers", "absent") in (None, "READY_WORKERS")
        assert codes == {"rabbitmq": "READY_AMQP", "postgresql": "READY_POSTGRESQL", "crl": "READY_CRL_UNKNOWN"}
        json.dumps(data)  # plain JSON all through

        ready = await client.get("/ready")
        assert ready.status == 503 and (await ready.json())["ready"] is False
        assert (await client.get("/health")).status == 200
        text = await (await client.get("/metrics")).text()
        assert 'hub_messages_total{outcome="accepted"}' in text
        assert text.count("# TYPE hub_messages_total counter") == 1
        # without a session the overview is refused as JSON (the frame's @require("view"))
        refused = await client.get("/api/overview")
        assert refused.status == 401


async def test_the_gateway_counts_requests_by_endpoint_and_status() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from hub.gateway.app import _measured

    answers = [202, 202, 202, 429]

    async def ok(request: web.Request) -> web.StreamResponse:
        status = answers.pop(0)
        if status == 429:  # the gateway's own refusal: JSON, at once
            return web.json_response({"code": "GATEWAY_RATE_LIMITED"}, status=429)
        return web.Response(status=status, body=b"<receipt/>", content_type="application/xml")

    app = web.Application(middlewares=[_measured])
    app.router.add_post("/v1/messages", ok)
    before = _samples(hm.GATEWAY_REQUESTS)
    latency_before = _samples(hm.GATEWAY_LATENCY)
    async with TestClient(TestServer(app)) as client:
        for expected in (202, 202, 202, 429):
            assert (await client.post("/v1/messages", data=b"<x/>")).status == expected
        assert (await client.get("/nothing")).status == 404
    assert _delta(before, _samples(hm.GATEWAY_REQUESTS)) == {
        ("hub_gateway_requests_total", (("endpoint", "/v1/messages"), ("status", "202"))): 3,
        ("hub_gateway_requests_total", (("endpoint", "/v1/messages"), ("status", "429"))): 1,
        ("hub_gateway_requests_total", (("endpoint", "other"), ("status", "404"))): 1,
    }
    count = ("hub_gateway_request_seconds_count", (("endpoint", "/v1/messages"),))
    # the served ones only: the page's p99 of submissions is not lowered by instant refusals
    assert _delta(latency_before, _samples(hm.GATEWAY_LATENCY))[count] == 3


def test_a_gateway_restarted_on_its_own_starts_its_recent_figures_afresh() -> None:
    """A gateway started on its own (``hub gateway``) empties its metrics directory at each start while ``hub run``'s
    counters go on: its request counts and submit times went back and the recent figures came out negative."""
    then = mm.Snapshot(
        0.0,
        messages={"accepted": 100},
        requests={"200": 20.0, "202": 5.0},
        submit={0.05: 5.0, float("inf"): 5.0},
    )
    now = mm.Snapshot(60.0, messages={"accepted": 130}, requests={"200": 2.0}, submit={0.05: 1.0, float("inf"): 1.0})
    f = mm.figures(now, then)
    assert f["gateway"]["recent_requests"] == {"200": 2}
    assert f["gateway"]["p50_ms"] is not None and 0 < f["gateway"]["p50_ms"] <= 50
    assert f["window_s"] == 60.0 and f["messages"]["recent"]["accepted"] == 30  # hub run's window goes on
    steady = mm.figures(mm.Snapshot(120.0, requests={"200": 9.0}), mm.Snapshot(60.0, requests={"200": 2.0}))
    assert steady["gateway"]["recent_requests"] == {"200": 7}


def test_a_metrics_file_removed_while_it_is_read_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart (of hub run, or of a gateway on its own) removes files between the listing and the reading: the
    ops app's /metrics, /ready and overview answered 500 (FileNotFoundError in prometheus_client)."""
    import monitoring.metrics as ops_metrics

    d = tmp_path / "metrics"
    d.mkdir()
    (d / "counter_1.db").write_bytes(b"\x00" * 16)
    calls: list[list[str]] = []

    def merge(files: list[str], accumulate: bool = True) -> list[object]:
        calls.append(files)
        if len(calls) == 1:
            raise FileNotFoundError(files[0])
        return []

    monkeypatch.setattr(ops_metrics.MultiProcessCollector, "merge", staticmethod(merge))
    assert ops_metrics._merged(d, "*.db") == []
    assert len(calls) == 2  # listed and read again
    calls.clear()

    def always_gone(files: list[str], accumulate: bool = True) -> list[object]:
        calls.append(files)
        raise FileNotFoundError(files[0])

    monkeypatch.setattr(ops_metrics.MultiProcessCollector, "merge", staticmethod(always_gone))
    with pytest.raises(FileNotFoundError):  # a directory that keeps changing is said, not looped over for ever
        ops_metrics._merged(d, "*.db", tries=3)
    assert len(calls) == 3


def test_a_metrics_file_that_a_starting_process_has_just_created_is_not_read_yet(tmp_path: Path) -> None:
    """A process creates its multiprocess file empty and sizes it a moment later; /ready and /metrics read the
    directory meanwhile and answered 500 (struct.error in prometheus_client). Such a file is skipped."""
    from monitoring.metrics import collect

    s = _settings(tmp_path)
    d = hm.metrics_dir(s)
    d.mkdir(parents=True, exist_ok=True)
    (d / "counter_4242.db").write_bytes(b"")
    (d / "gauge_all_4242.db").write_bytes(b"\x00\x00")
    names = {fam.name for fam in collect(s)}  # no struct.error
    assert "hub_messages" in names  # this process's own registry is still read


def test_an_adapters_link_is_named_by_who_reads_its_queue() -> None:
    """The overview's ``adapters[].link``: the system's own broker user is its adapter on RabbitMQ; another user on
    its queue is the HTTPS gateway's mailbox (it logs in as the hub); both at once is what the gateway gives up."""
    from hub.transport.names import Names

    names = Names("hub")
    system = "county-220122-oa"
    own, hub_user = names.user(system), "hub-admin"
    assert mm.link_of(names, system, {own}) == "amqp"
    assert mm.link_of(names, system, {hub_user}) == "gateway"
    assert mm.link_of(names, system, {own, hub_user}) == "both"
    assert mm.link_of(names, system, ()) is None
    assert mm.link_of(names, system, {names.user("county-220182-oa")}) == "gateway"  # not this system's own user


def test_a_system_that_polls_from_time_to_time_is_not_called_disconnected() -> None:
    """``adapters[].state``: the gateway lets an idle system's queue go between its polls (hub.gateway.mailbox), so
    with nobody on its queue a system that polled within ``HUB_POLL_GRACE_S`` is ``polling`` (间歇轮询), not
    ``disconnected``; a consumer on its queue is ``connected`` whatever its last poll."""
    assert mm.adapter_state(1, None, 900) == "connected"
    assert mm.adapter_state(2, 5000.0, 900) == "connected"
    assert mm.adapter_state(0, 30.0, 900) == "polling"
    assert mm.adapter_state(0, 900.0, 900) == "polling"
    assert mm.adapter_state(0, 900.1, 900) == "disconnected"
    assert mm.adapter_state(0, None, 900) == "disconnected"  # never polled through the gateway
    assert mm.adapter_state(0, 0.0, 0) == "polling" and mm.adapter_state(0, 0.5, 0) == "disconnected"
    with pytest.raises(Exception, match="HUB_POLL_GRACE_S must be at least 0"):
        Settings(poll_grace_s=-1)
    assert Settings.from_env({"HUB_POLL_GRACE_S": "60"}).poll_grace_s == 60


async def test_the_gateways_own_refusals_are_counted_by_system_and_logged_sparingly(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_measured`` counts each JSON refusal of the gateway (``error_response``) under the calling system, or the
    system a refused certificate was issued to, or ``-``; the examination's answers (XML) are not the gateway's
    refusals; one WARNING a minute per system and code, the ones between counted in the next line."""
    import logging

    from aiohttp.test_utils import TestClient, TestServer

    from hub.gateway import app as gapp

    system = f"county-{uuid.uuid4().hex[:6]}-oa"

    async def revoked(request: web.Request) -> web.StreamResponse:
        request[gapp._REFUSED_AS] = system  # as _guard does with Refused.system
        return gapp.error_response(403, "CERT_REVOKED", "certificate 01 was revoked")

    async def anonymous(request: web.Request) -> web.StreamResponse:
        return gapp.error_response(401, "GATEWAY_NO_CERTIFICATE", "no certificate")

    async def unknown(request: web.Request) -> web.StreamResponse:  # an answer, not a refusal (the SDK's probe)
        return gapp.error_response(404, "GATEWAY_NOT_FOUND", "no message with this id was sent by this system")

    async def examined(request: web.Request) -> web.StreamResponse:  # the hub's signed error: XML
        return web.Response(status=400, body=b"<e/>", content_type="application/xml", headers={"X-Hub-Code": "XSD"})

    def refusals(who: str, code: str) -> float:
        from prometheus_client import REGISTRY

        return REGISTRY.get_sample_value("hub_gateway_refusals_total", {"system": who, "code": code}) or 0.0

    app = web.Application(middlewares=[gapp._measured])
    app.router.add_post("/v1/messages", revoked)
    app.router.add_get("/v1/inbox", anonymous)
    app.router.add_post("/v1/examined", examined)
    app.router.add_get("/v1/messages/{id}", unknown)
    clock = [1000.0]
    monkeypatch.setattr(gapp.time, "monotonic", lambda: clock[0])
    gapp._refusal_log.clear()
    anonymous_before = refusals("-", "GATEWAY_NO_CERTIFICATE")
    with caplog.at_level(logging.WARNING, logger="hub.gateway"):
        async with TestClient(TestServer(app)) as client:
            for _ in range(3):
                assert (await client.post("/v1/messages")).status == 403
            assert (await client.get("/v1/inbox")).status == 401
            assert (await client.post("/v1/examined")).status == 400
            assert (await client.get("/v1/messages/00000000-0000-4000-8000-000000000000")).status == 404
            clock[0] += gapp.REFUSAL_LOG_EVERY_S
            assert (await client.post("/v1/messages")).status == 403
    assert refusals(system, "CERT_REVOKED") == 4
    assert refusals("-", "GATEWAY_NO_CERTIFICATE") - anonymous_before == 1
    assert refusals("-", "XSD") == 0 and refusals(system, "XSD") == 0
    assert refusals("-", "GATEWAY_NOT_FOUND") == 0
    lines = [r.getMessage() for r in caplog.records if "gateway refused" in r.getMessage()]
    assert lines == [  # with the client's address: which machine still uses the revoked certificate
        f"gateway refused a request of system {system} to /v1/messages: 403 CERT_REVOKED 证书已吊销 from 127.0.0.1",
        "gateway refused a request of a client without a certificate to /v1/inbox: 401 GATEWAY_NO_CERTIFICATE "
        "未提供客户端证书 from 127.0.0.1",
        f"gateway refused a request of system {system} to /v1/messages: 403 CERT_REVOKED 证书已吊销 from 127.0.0.1 "
        "(2 more since the last such line)",
    ]


async def test_a_gateways_activity_waits_for_the_store_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """``GatewayActivity``: a flush the store refuses keeps what it had (newer polls win); past ``MAX_PENDING``
    refusal rows new ones are given up and counted (the written path is tests/integration/test_gateway.py's)."""
    from hub.errors import StoreUnavailable
    from hub.store import gateway_activity as ga

    class Down:
        def acquire(self) -> Any:
            raise StoreUnavailable("PostgreSQL is down")

    monkeypatch.setattr(ga, "MAX_PEERS", 3)
    activity = ga.GatewayActivity()
    activity.polled("county-220183-oa")
    activity.refused("county-220183-oa", "CERT_REVOKED", "10.0.0.7")
    activity.refused("county-220183-oa", "CERT_REVOKED", "10.0.0.7")
    activity.refused(None, "GATEWAY_NO_CERTIFICATE")
    with pytest.raises(StoreUnavailable):
        await activity.flush(Down())
    assert activity.pending
    assert sorted((k[1], k[2], n) for k, n in activity._refusals.items()) == [
        ("-", "GATEWAY_NO_CERTIFICATE", 1),
        ("county-220183-oa", "CERT_REVOKED", 2),
    ]
    assert set(activity._polls) == {"county-220183-oa"}
    # the addresses stay with their row, at most MAX_PEERS + 1 of them (the page says "more" past MAX_PEERS), the
    # kept ones first after a failed flush
    for peer in ("10.0.0.9", "10.0.0.8", "10.0.0.6", "10.0.0.1"):
        activity.refused("county-220183-oa", "CERT_REVOKED", peer)
    assert [sorted(p) for k, p in activity._peers.items() if k[1] == "county-220183-oa"] == [
        ["10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9"]
    ]

    monkeypatch.setattr(ga, "MAX_PENDING", 3)
    activity.refused("city-220100-oa", "GATEWAY_RATE_LIMITED")  # a third row
    activity.refused("city-220100-oa", "GATEWAY_RATE_LIMITED")  # the same row: counted
    activity.refused("city-220200-oa", "GATEWAY_RATE_LIMITED", "10.0.0.2")  # a fourth: given up, its address too
    assert len(activity._refusals) == 3 and activity.lost == 1 and len(activity._peers) == 1


async def test_a_gateways_request_counts_wait_for_the_store_and_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """``GatewayActivity.requested``: each identified request counted by minute and system; a flush the store refuses
    keeps them (added to what came meanwhile); past ``MAX_PENDING`` rows a new minute or system is not counted, and
    a failed flush keeps the newest minutes."""
    from hub.errors import StoreUnavailable
    from hub.store import gateway_activity as ga

    class Down:
        def acquire(self) -> Any:
            raise StoreUnavailable("PostgreSQL is down")

    minute = [100]
    monkeypatch.setattr(ga.time, "time", lambda: minute[0] * 60.0 + 1)
    activity = ga.GatewayActivity()
    for _ in range(3):
        activity.requested("county-220183-oa")
    activity.requested("city-220100-oa")
    assert activity.pending and activity._requests == {(100, "county-220183-oa"): 3, (100, "city-220100-oa"): 1}
    with pytest.raises(StoreUnavailable):
        await activity.flush(Down())
    activity.requested("county-220183-oa")
    assert activity._requests[(100, "county-220183-oa")] == 4

    monkeypatch.setattr(ga, "MAX_PENDING", 3)
    minute[0] = 101
    activity.requested("county-220183-oa")  # a third row
    activity.requested("city-220200-oa")  # a fourth: not counted
    assert len(activity._requests) == 3 and (101, "city-220200-oa") not in activity._requests
    monkeypatch.setattr(ga, "MAX_PENDING", 2)
    with pytest.raises(StoreUnavailable):
        await activity.flush(Down())
    assert set(activity._requests) == {(100, "county-220183-oa"), (101, "county-220183-oa")}  # the oldest went


def test_the_gateway_row_counts_gateways_on_any_machine() -> None:
    """``gateway_state``: this host's heartbeats and the store's ``gateway_instances`` (any machine) together — a
    gateway alive anywhere is up; one alive and one dead unreplaced is degraded; none alive is down; none known at all
    is absent."""
    import datetime as dt

    from hub.store.gateway_activity import STALE_S, Instance

    at = dt.datetime.now(dt.UTC)
    alive, dead = Instance("gw-a", 11, at, 3.0), Instance("gw-b", 12, at, STALE_S + 1)
    fresh, stale = {"fresh": True, "pid": None}, {"fresh": False, "pid": None}
    assert mm.gateway_state([], []) == "absent"
    assert mm.gateway_state([fresh], []) == "up"  # hub run --gateway on this host
    assert mm.gateway_state([], [alive]) == "up"  # a gateway on another machine
    assert mm.gateway_state([], [alive, dead]) == "degraded"
    assert mm.gateway_state([fresh], [dead]) == "degraded"
    assert mm.gateway_state([stale], []) == "down"
    assert mm.gateway_state([], [dead]) == "down"
    assert dead.as_json()["alive"] is False and alive.as_json()["host"] == "gw-a"


def test_a_gateway_up_but_not_ready_makes_the_row_degraded_or_down() -> None:
    """A gateway whose ``GET /ready`` fails (its row's ``not_ready``: hub.gateway.readiness) is alive but serves
    nobody (the load balancer sends it no clients): beside a ready one the row is degraded, alone it is down — and
    this host's heartbeat of that same gateway (its pid on record) does not make it serve."""
    import datetime as dt

    from hub.store.gateway_activity import Instance

    at = dt.datetime.now(dt.UTC)
    ready, sick = Instance("gw-a", 11, at, 3.0), Instance("gw-b", 12, at, 3.0, ("GATEWAY_READY_EXAMINERS",))
    assert sick.alive and not sick.ready and ready.ready
    assert mm.gateway_state([], [ready, sick]) == "degraded"
    assert mm.gateway_state([], [sick]) == "down"
    assert mm.gateway_state([{"fresh": True, "pid": "12"}], [sick]) == "down"  # the same gateway's heartbeat
    assert mm.gateway_state([{"fresh": True, "pid": "99"}], [sick]) == "degraded"  # another one, not on record yet
    assert sick.as_json()["not_ready"] == [{"code": "GATEWAY_READY_EXAMINERS", "title": "网关没有运行中的审验进程"}]
    assert sick.as_json()["ready"] is False and ready.as_json()["not_ready"] == []


def test_a_gateway_presenting_a_certificate_near_its_end_makes_the_row_degraded() -> None:
    """The server certificate a gateway presents (its row's certificate_*, written at its start and each reload):
    within 30 days of its end, or past it, the row is degraded with the days left; a dead gateway's old row does
    not count."""
    import datetime as dt

    from hub.store.gateway_activity import CERTIFICATE_WARN_DAYS, STALE_S, Instance

    at = dt.datetime.now(dt.UTC)
    fine = Instance("gw-a", 11, at, 3.0, (), "aa", at + dt.timedelta(days=200))
    near = Instance("gw-b", 12, at, 3.0, (), "bb", at + dt.timedelta(days=CERTIFICATE_WARN_DAYS - 1, hours=1))
    past = Instance("gw-c", 13, at, 3.0, (), "cc", at - dt.timedelta(days=2))
    gone = Instance("gw-d", 14, at, STALE_S + 1, (), "dd", at - dt.timedelta(days=2))
    unknown = Instance("gw-e", 15, at, 3.0)
    assert mm.gateway_state([], [fine]) == "up" and mm.gateway_state([], [fine, unknown]) == "up"
    assert mm.gateway_state([], [fine, near]) == "degraded" and mm.gateway_state([], [past]) == "degraded"
    assert not gone.certificate_expiring and mm.gateway_state([], [fine, gone]) == "degraded"  # dead, not expiring
    assert near.as_json()["certificate"] == {
        "serial": "bb",
        "not_after": near.certificate_not_after.isoformat(timespec="seconds"),  # type: ignore[union-attr]
        "days": CERTIFICATE_WARN_DAYS - 1,
        "expiring": True,
    }
    assert past.certificate_days() < 0 and fine.as_json()["certificate"]["expiring"] is False
    assert unknown.as_json()["certificate"] is None


async def test_a_store_that_does_not_answer_keeps_the_gateways_activity(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's activity task: a write the store does not answer is given up after its timeout and tried again
    at the next pass, what it held kept; one warning a minute, however many passes fail."""
    import asyncio
    import contextlib
    import logging

    from hub.gateway import app as gapp
    from hub.store.gateway_activity import GatewayActivity

    class Hanging:
        def acquire(self) -> Any:
            return self

        async def __aenter__(self) -> Any:
            await asyncio.Event().wait()  # never answers

        async def __aexit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(gapp, "ACTIVITY_FLUSH_S", 0.01)
    monkeypatch.setattr(gapp, "ACTIVITY_FLUSH_TIMEOUT_S", 0.02)
    activity = GatewayActivity()
    activity.refused("county-220183-oa", "CERT_REVOKED")
    activity.polled("county-220183-oa")
    with caplog.at_level(logging.WARNING, logger="hub.gateway"):
        task = asyncio.get_running_loop().create_task(gapp._record_activity(activity, Hanging()))
        await asyncio.sleep(0.3)  # about ten passes
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert activity.pending and sum(activity._refusals.values()) == 1 and set(activity._polls) == {"county-220183-oa"}
    said = [r.getMessage() for r in caplog.records if "activity for the ops page" in r.getMessage()]
    assert said == ["could not write the gateway's activity for the ops page (kept): no answer within 0.02 s"]


def test_the_engine_and_directory_rows_read_every_machines_processes() -> None:
    """The process engine's and the directory's rows of the overview: this host's metrics files and the store's
    ``process_instances`` (any machine) together. An engine alive anywhere is up; one only known dead is down; none
    known is absent. Directory versions of other machines' live processes are added with their host; a process of
    this host is counted once (its metrics file), a killed one of this host (its row still fresh) not at all, and
    never this process itself (an in-process worker of a test)."""
    import datetime as dt
    import os
    import socket

    from hub.store.process_instances import STALE_S, Recorded
    from monitoring import health

    at, here = dt.datetime.now(dt.UTC), socket.gethostname()
    remote = Recorded("processes", "0", "hub-b", 4711, at, 2.0, 7)
    remote_dead = Recorded("processes", "0", "hub-c", 4712, at, STALE_S + 1, 7)
    assert mm.engine_state([], []) == "absent"
    assert mm.engine_state([], [remote]) == "up"  # the ops page on a machine of its own
    assert mm.engine_state([], [remote_dead]) == "down"
    assert mm.engine_state([{"fresh": False}], []) == "down"
    assert mm.engine_state([{"fresh": True}], [remote_dead]) == "up"
    # a killed engine of this host: its row is fresh for a while, its pid gone
    assert mm.engine_state([], [Recorded("processes", "0", here, 2**22 + 12345, at, 1.0, 7)]) == "down"

    gone = str(2**22 + 54321)  # past any pid_max: no such process here
    local = [health.DirectoryTaken("worker", "0", gone, 7)]
    rows = [
        Recorded("worker", "0", "hub-b", 200, at, 1.0, 6),  # another machine, behind
        Recorded("worker", "1", "hub-b", 201, at, STALE_S + 5, 5),  # dead there: not counted
        Recorded("worker", "0", here, int(gone), at, 1.0, 7),  # the same process as the metrics file's
        Recorded("worker", "0", here, os.getpid(), at, 1.0, 7),  # this process
        Recorded("processes", "0", "hub-b", 202, at, 1.0, None),  # no version taken yet
    ]
    merged = mm.directory_from_rows(local, rows)
    assert [(t.role, t.index, t.pid, t.version, t.host) for t in merged] == [
        ("worker", "0", gone, 7, None),
        ("worker", "0", "200", 6, "hub-b"),
    ]
    view = health.directory_state(7, at - dt.timedelta(hours=1), merged, 30.0)
    # the metrics file's process is not alive here (a made-up pid): only the other machine's row counts
    assert view["state"] == "behind" and [(p["host"], p["pid"], p["current"]) for p in view["processes"]] == [
        ("hub-b", "200", False)
    ]
    # the workers row: other machines' live workers by host (this host's come from its metrics files)
    assert mm.workers_elsewhere(rows) == [{"host": "hub-b", "workers": 1}]
    assert remote.as_json() == {
        "role": "processes",
        "index": "0",
        "host": "hub-b",
        "pid": 4711,
        "seen_s": 2.0,
        "alive": True,
    }


def test_the_pages_request_counts_leave_the_load_balancers_probes_out() -> None:
    """``GET /ready`` every few seconds from a load balancer is not a system's request: the gateway row's 本机请求
    counted it."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.samples import Sample

    from monitoring.metrics import snapshot

    fam = Metric("hub_gateway_requests", "requests", "counter")
    fam.samples = [
        Sample("hub_gateway_requests_total", {"endpoint": "/v1/messages", "status": "202"}, 5.0),
        Sample("hub_gateway_requests_total", {"endpoint": "/v1/inbox", "status": "204"}, 2.0),
        Sample("hub_gateway_requests_total", {"endpoint": "/ready", "status": "200"}, 700.0),
    ]
    assert snapshot([fam], time.time()).requests == {"202": 5.0, "204": 2.0}
