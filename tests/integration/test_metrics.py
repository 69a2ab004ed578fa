"""``/metrics`` and ``/ready`` against a real ``hub run`` (issue 15): two worker processes under the supervisor,
their counters in the installation's metrics directory, read by the ops app's ``monitoring.metrics`` in this
process. The accepted counter equals the messages sent and the rejections by code equal the bad ones sent; a worker
killed with SIGKILL keeps its counts (the multiprocess files stay), ``/ready`` shows the worker state while the
supervisor replaces it; ``/ready`` is 503 with its code when the CRL is stale or PostgreSQL unreachable, 200 when
all is fine."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from harness import SYSTEMS, Hub, document

from hub.envelope import Envelope, Recipient, parse
from hub.settings import Settings
from monitoring import metrics as mm

pytestmark = pytest.mark.integration

N = 120
BAD = 5
SENDER = "county-220122-oa"
RECIPIENT = "city-220100-oa"


def _workers_of(pid: int) -> list[int]:
    """The worker processes under a ``hub run`` supervisor (spawned: ``spawn_main`` in their command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.append(int(entry))
    return found


def _counter(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{([^}}]*)\}})? (\S+)", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    return 0.0


def _app(settings: Settings) -> web.Application:
    app = web.Application()
    app[mm.SETTINGS] = settings
    mm.setup(app)
    return app


async def _until(what: str, probe: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        await asyncio.sleep(0.1)


async def test_metrics_and_readiness_of_hub_run(fresh_settings: Settings) -> None:
    fresh_settings = fresh_settings.with_(directory_refresh_s=1)  # the workers look at the directory every second
    hub = Hub(fresh_settings)
    await hub.setup()
    proc = hub.run_hub(workers=2)
    try:
        async with TestClient(TestServer(_app(fresh_settings))) as ops:

            async def ready() -> tuple[int, dict[str, Any]]:
                r = await ops.get("/ready")
                return r.status, await r.json()

            async def scrape() -> str:
                r = await ops.get("/metrics")
                assert r.status == 200
                return await r.text()

            async def all_ready() -> bool:
                # both workers of hub run beat (with their pids: not an in-process worker of an earlier test)
                status, body = await ready()
                w = next(c for c in body["checks"] if c["name"] == "workers")["detail"]
                beating = [p for p in w["processes"] if p["fresh"] and p["pid"] is not None]
                return status == 200 and w["expected"] == 2 and len(beating) == 2

            await _until("hub run became ready", all_ready)
            # The ops app adds this process's own registry to hub run's counters (an in-process worker of an earlier
            # test in the session counted there): what hub run counted is the change from this first scrape.
            base = await scrape()

            def sent(text: str, name: str, **labels: str) -> float:
                return _counter(text, name, **labels) - _counter(base, name, **labels)

            status, body = await ready()
            checks = {c["name"]: c for c in body["checks"]}
            assert checks["workers"]["detail"]["expected"] == 2
            assert checks["crl"]["ok"] and checks["crl"]["detail"]["cas"][0]["fresh"]

            # N good messages and BAD bytes that are no message at all.
            payloads = []
            for _ in range(N):
                data = hub.sign(SENDER, document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT], RECIPIENT)]))
                payloads.append((Envelope.from_tree(parse(data)), data))
            await hub.publish(payloads)
            await hub.publish([(None, b"<broken %d" % i) for i in range(BAD)])

            async def counted() -> str | None:
                text = await scrape()
                done = sent(text, "hub_messages_total", outcome="accepted") >= N
                return text if done and sent(text, "hub_messages_total", outcome="rejected") >= BAD else None

            text = await _until("the workers counted every message", counted)
            assert len(await hub.drain(RECIPIENT, expect=N, timeout=30)) == N
            text = await scrape()
            assert sent(text, "hub_messages_total", outcome="accepted") == N
            assert sent(text, "hub_messages_total", outcome="rejected") == BAD
            assert sent(text, "hub_messages_total", outcome="duplicate") == 0
            assert sent(text, "hub_rejections_total", code="ENV_MALFORMED") == BAD
            assert sent(text, "hub_deliveries_total") == N
            assert sent(text, "hub_message_latency_seconds_count") == N + BAD
            assert text.count("# TYPE hub_messages_total counter") == 1
            beats = re.findall(r'hub_process_heartbeat_timestamp_seconds\{[^}]*pid="(\d+)"[^}]*\}', text)
            workers = _workers_of(proc.pid)
            assert sorted(map(int, beats)) == sorted(workers) and len(workers) == 2

            # SIGKILL one worker: its counts stay; /ready shows the worker missing, then its replacement. The
            # supervisor is paused meanwhile (SIGSTOP), so the window before its replacement cannot be missed: the dead
            # worker's heartbeat goes stale.
            killed = workers[0]
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                os.kill(killed, signal.SIGKILL)

                async def degraded() -> dict[str, Any] | None:
                    _, body = await ready()
                    w = next(c for c in body["checks"] if c["name"] == "workers")
                    fresh = {p["pid"] for p in w["detail"]["processes"] if p["fresh"]}
                    return w if str(killed) not in fresh and w["detail"]["state"] == "degraded" else None

                w = await _until("/ready reported the killed worker", degraded, timeout=30)
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            assert w["ok"] and "1 of 2 workers running" in w["detail"]["message"]
            assert sent(await scrape(), "hub_messages_total", outcome="accepted") == N

            async def replaced() -> dict[str, Any] | None:
                status, body = await ready()
                w = next(c for c in body["checks"] if c["name"] == "workers")
                # hub run's workers only (with a pid): an in-process worker of an earlier test may beat here too
                fresh = {p["pid"] for p in w["detail"]["processes"] if p["fresh"] and p["pid"] is not None}
                return w if status == 200 and len(fresh) == 2 and str(killed) not in fresh else None

            w = await _until("the supervisor's replacement worker beat", replaced, timeout=60)
            assert w["detail"]["state"] == "ok"
            text = await scrape()
            assert sent(text, "hub_messages_total", outcome="accepted") == N
            assert sent(text, "hub_rejections_total", code="ENV_MALFORMED") == BAD

            # Each live worker (the replacement too) shows the directory version it works with; after a directory
            # is stored (as hub directory load stores it), every one shows the new version within a few looks.
            def versions(text: str) -> dict[str, float]:
                pattern = r"hub_directory_version\{([^}]*)\} (\S+)"
                found = {}
                for labels, value in re.findall(pattern, text):
                    pid = re.search(r'pid="(\d+)"', labels)
                    if pid and 'role="worker"' in labels:
                        found[pid.group(1)] = float(value)
                return found

            from harness import DIRECTORY_XML

            from hub.directory import load_directory
            from hub.store.directory import DirectoryRepository

            live = {str(p) for p in _workers_of(proc.pid)}
            repository = DirectoryRepository(hub.pool)
            first = (await repository.current()).version
            assert {p: v for p, v in versions(await scrape()).items() if p in live} == dict.fromkeys(live, first)
            # The overview says the same to the people on duty: the stored version, and every live worker on it.
            app = ops.server.app
            view = (await mm.overview(app))["directory"]
            assert (view["state"], view["stored"], view["behind"]) == ("ok", first, 0), view
            assert {p["pid"] for p in view["processes"]} == live
            second = await repository.save(load_directory(DIRECTORY_XML))
            assert second > first

            async def all_took_it() -> bool:
                shown = versions(await scrape())
                return all(shown.get(p) == second for p in live)

            await _until("every worker showed the new directory version", all_took_it, timeout=30)
            view = (await mm.overview(app))["directory"]
            assert (view["state"], view["stored"], view["behind"]) == ("ok", second, 0), view
            assert {(p["pid"], p["version"], p["current"]) for p in view["processes"]} == {
                (p, second, True) for p in live
            }

            # A stale CRL: 503 with its code and the CA named.
            async with hub.pool.acquire() as conn:
                await conn.execute("UPDATE trust_crls SET next_update = now() - interval '1 hour'")
            status, body = await ready()
            crl = next(c for c in body["checks"] if c["name"] == "crl")
            assert status == 503 and body["ready"] is False
            assert crl["code"] == "READY_CRL_STALE" and "nextUpdate" in crl["message"] and " · " in crl["message"]
            assert all(c["ok"] for c in body["checks"] if c["name"] != "crl")
            async with hub.pool.acquire() as conn:
                await conn.execute("UPDATE trust_crls SET next_update = now() + interval '1 day'")
            assert (await ready())[0] == 200

        # PostgreSQL unreachable (the settings point at a closed port): 503 with its code.
        wrong = fresh_settings.with_(pg_dsn="postgresql://postgres@127.0.0.1:9/postgres")
        async with TestClient(TestServer(_app(wrong))) as ops:
            r = await ops.get("/ready")
            body = await r.json()
            pg = next(c for c in body["checks"] if c["name"] == "postgresql")
            assert r.status == 503 and pg["code"] == "READY_POSTGRESQL" and "PostgreSQL" in pg["message"]
            assert next(c for c in body["checks"] if c["name"] == "rabbitmq")["ok"]
            assert (await ops.get("/health")).status == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        proc = None
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        await hub.close()


async def test_the_gateway_under_hub_run_in_the_overview(fresh_settings: Settings, tmp_path: Path) -> None:
    """``hub run --gateway``: the gateway process counts its requests in the same directory; the overview shows it
    up with its requests, the worker, the queues with their consumers, and the CRL."""
    import socket
    import subprocess
    import sys

    import aiohttp
    from gateway_certs import client_certificate, client_ssl_context, server_certificate

    hub = Hub(fresh_settings)
    await hub.setup()
    pki_dir = fresh_settings.state_dir / "pki"
    server_certificate(pki_dir, fresh_settings.ca_passphrase, pki_dir / "gateway")
    cert, key, _ = client_certificate(pki_dir, fresh_settings.ca_passphrase, SYSTEMS[SENDER], SENDER, tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = tmp_path / "hub.log"
    with open(log, "wb") as err:
        proc: Any = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "run", "--workers", "1", "--gateway", "--gateway-port", str(port)],
            env=fresh_settings.to_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    app = _app(fresh_settings)
    try:
        async with TestClient(TestServer(app)) as ops:

            async def up() -> dict[str, Any] | None:
                assert proc.poll() is None, log.read_text()
                data = await mm.overview(app)
                return data if data["ready"] and data["gateway"]["state"] == "up" else None

            await _until("hub run --gateway became ready with its gateway", up)
            base = await (await ops.get("/metrics")).text()
            url = f"https://127.0.0.1:{port}"
            ctx = client_ssl_context(pki_dir, cert, key)
            async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(ssl=ctx)) as s:
                for _ in range(3):
                    data = hub.sign(SENDER, document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT], RECIPIENT)]))
                    async with s.post("/v1/messages", data=data, headers={"Content-Type": "application/xml"}) as r:
                        assert r.status == 202, await r.text()
                polled_at = time.time()
                async with s.get("/v1/inbox", params={"wait": "0"}) as r:  # its inbox: nothing sent to it
                    assert r.status == 204, await r.text()
                async with s.get("/v1/messages") as r:  # its 发文跟踪: a listing, not a fourth submission
                    assert r.status == 200, await r.text()

            def sent(text: str, name: str, **labels: str) -> float:
                return _counter(text, name, **labels) - _counter(base, name, **labels)

            async def counted() -> str | None:  # the worker counts after its ack, just after the receipt went out
                text = await (await ops.get("/metrics")).text()
                return text if sent(text, "hub_messages_total", outcome="accepted") >= 3 else None

            text = await _until("the worker counted the three submissions", counted, timeout=30)
            assert sent(text, "hub_gateway_requests_total", endpoint="/v1/messages", status="202") == 3
            assert sent(text, "hub_gateway_requests_total", endpoint="GET /v1/messages", status="200") == 1
            assert sent(text, "hub_gateway_request_seconds_count", endpoint="/v1/messages") == 3  # submissions only
            assert sent(text, "hub_messages_total", outcome="accepted") == 3
            # the poll, from the gateway process's file: when the sender last polled (the ops page's 间歇轮询)
            last_poll = _counter(text, "hub_gateway_last_poll_timestamp_seconds", system=SENDER)
            assert polled_at - 1 <= last_poll <= time.time()

            async def workers_ok() -> dict[str, Any] | None:
                # a worker's heartbeat is refreshed every 2 s by a task of its own: on a loaded machine the first
                # overview may see it a beat late (degraded, "being restarted"); it must settle on ok
                view = await mm.overview(app)
                return view if view["workers"]["state"] == "ok" else None

            try:
                view = await _until("the overview shows the worker ok", workers_ok, timeout=30)
            except AssertionError:
                raise AssertionError(f"workers: {(await mm.overview(app))['workers']}") from None
            assert view["gateway"]["state"] == "up" and view["gateway"]["requests"].get("202", 0) >= 3
            assert view["gateway"]["p50_ms"] is not None
            assert view["workers"]["state"] == "ok" and view["workers"]["expected"] == 1
            assert [p["fresh"] for p in view["workers"]["processes"] if p["pid"]] == [True]

            async def consumers_seen() -> dict[str, Any] | None:  # the management API's figures lag by seconds
                view = await mm.overview(app)
                queues = {q["name"]: q for q in view["queues"]}
                normal = queues.get(f"{fresh_settings.namespace}.in.normal", {})
                adapters = {a["system"]: a for a in view["adapters"]}
                # the gateway's mailbox consumes its client's queue: that system shows as connected, read by the
                # gateway (the queue's statistics and the consumers' listing are two requests, each lagging its own
                # way: both must have caught up)
                sender = adapters.get(SENDER, {})
                connected = sender.get("state") == "connected" and sender.get("link") == "gateway"
                polled = sender.get("last_poll_s") is not None  # the gateway writes its polls every 2 s
                return view if normal.get("consumers") == 1 and connected and polled else None

            view = await _until("the overview showed the consumers", consumers_seen, timeout=30)
            assert next(q for q in view["queues"] if q["name"].endswith(".in.normal"))["role"] == "inbound"
            assert any(a["state"] == "disconnected" for a in view["adapters"])  # nobody reads the other systems
            sender = next(a for a in view["adapters"] if a["system"] == SENDER)
            assert sender["link"] == "gateway"  # read by the gateway's mailbox (the hub's user), not over AMQP
            assert sender["last_poll_s"] is not None and 0 <= sender["last_poll_s"] < 120
            assert all(a["link"] is None for a in view["adapters"] if a["state"] == "disconnected")
            assert view["certificates"]["crls"] and all(c["fresh"] for c in view["certificates"]["crls"])
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0, log.read_text()
        proc = None
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        await hub.close()


async def test_an_ops_page_on_a_machine_of_its_own_sees_hub_runs_processes(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    """docs/operations.md runs the ops page on a machine of its own, where no ``hub run`` writes metrics files: the
    overview reads the workers' and the process engine's rows in the store (hub.store.process_instances) and shows
    the engine running, where it runs, and every process on the stored directory version. Here the ops app has a
    state directory of its own (no metrics files), as on its own machine. A clean stop removes the rows."""
    import socket

    from hub.store.directory import DirectoryRepository

    hub = Hub(fresh_settings)
    await hub.setup()
    proc: Any = hub.run_hub(workers=1, processes=True)
    elsewhere = fresh_settings.with_(state_dir=tmp_path / "ops-host")
    elsewhere.state_dir.mkdir()
    app = _app(elsewhere)
    here = socket.gethostname()
    try:
        stored = (await DirectoryRepository(hub.pool).current()).version
        async with TestClient(TestServer(app)):

            async def seen() -> dict[str, Any] | None:
                assert proc.poll() is None, hub.log_path.read_text()
                data = await mm.overview(app)
                roles = {p["role"] for p in data["directory"]["processes"]}
                return data if data["processes"]["state"] == "up" and roles == {"worker", "processes"} else None

            data = await _until("the overview saw hub run's processes in the store", seen, timeout=60)
            engines = data["processes"]["instances"]
            assert [(e["host"], e["alive"]) for e in engines] == [(here, True)]
            directory = data["directory"]
            assert (directory["state"], directory["stored"], directory["behind"]) == ("ok", stored, 0), directory
            assert {(p["role"], p["index"], p["host"], p["version"]) for p in directory["processes"]} == {
                ("worker", "0", here, stored),
                ("processes", "0", here, stored),
            }
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=90) == 0
            proc = None
            # stopped cleanly: the rows went with the processes, and the page says nothing runs rather than "down"
            assert await hub.pool.fetchval("SELECT count(*) FROM process_instances") == 0
            data = await mm.overview(app)
            assert data["processes"]["state"] == "absent" and data["directory"]["state"] == "absent"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        await hub.close()
