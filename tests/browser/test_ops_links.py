"""The overview's adapter rows in a real Chromium say how each connected system takes part (``adapters[].link``,
``monitoring.metrics.link_of``): over AMQP (a consumer logged in as the system's own broker user), over the HTTPS
gateway (the gateway's mailbox reads the queue as the hub's user), or both at once — a warning, since the gateway
then gives the queue up (``hub.gateway.links``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.integration]

AMQP = "county-220182-oa"  # 榆树: its adapter on RabbitMQ
GATEWAY = "county-220183-oa"  # 德惠: read by the gateway
BOTH = "county-220122-oa"  # 农安: both at once


async def test_the_overview_names_each_adapters_link(ops: Any, page: Any) -> None:
    from hub.pipeline.client import connect_as
    from hub.transport.users import provision

    settings, hub = ops.settings, ops.hub
    await provision(settings, [(AMQP, None), (BOTH, None)])
    own = {s: await connect_as(settings, s) for s in (AMQP, BOTH)}

    async def read(transport: Any, system: str) -> Any:
        async def untouched(batch: list[Any]) -> None:  # nobody sends to them here: a delivery would go back
            await transport.nack(batch, requeue=True)

        return await transport.consume(transport.names.system_queue(system), untouched, prefetch=1)

    consumers = [
        await read(own[AMQP], AMQP),
        await read(own[BOTH], BOTH),
        # what the gateway's mailbox does: the hub's user reads the system's queue
        await read(hub.transport, GATEWAY),
        await read(hub.transport, BOTH),
    ]
    try:
        await ops.login(page, "duty")
        rows = page.locator("#health tr")
        amqp = rows.filter(has_text=f"适配器 {AMQP}").filter(has_text="经 AMQP")
        gateway = rows.filter(has_text=f"适配器 {GATEWAY}").filter(has_text="经 HTTPS 网关")
        both = rows.filter(has_text=f"适配器 {BOTH}").filter(has_text="链路冲突")
        for row in (amqp, gateway, both):  # the management API lists new consumers after a moment
            await row.wait_for(timeout=30_000)
        assert "good" in (await amqp.locator(".badge").get_attribute("class") or "")
        assert "good" in (await gateway.locator(".badge").get_attribute("class") or "")
        assert "warn" in (await both.locator(".badge").get_attribute("class") or "")
        assert "AMQP 与 HTTPS 网关同时读取，网关将让出队列" in await both.inner_text()
        await ops.screenshot(page, "ops-adapter-links")
    finally:
        for c in consumers:
            await c.stop()
        for t in own.values():
            await t.close()


POLLING = "prov-220000-portal"  # polls through the gateway every few minutes: nobody on its queue between polls
GONE = "city-220100-oa"  # polled through the gateway three hours ago, then never again


async def test_a_system_between_two_polls_is_not_called_disconnected(ops: Any, page: Any) -> None:
    """The gateway lets an idle system's queue go between its polls (hub.gateway.mailbox), so the overview shows a
    system with nobody on its queue 间歇轮询 (a good badge, when it last polled) while its last poll is within
    ``HUB_POLL_GRACE_S`` (``monitoring.metrics.adapter_state``); past it, the system is listed 未连接 with its last
    poll. The poll times are what the gateways write to the store (``gateway_polls``, hub.store.gateway_activity:
    tests/integration/test_gateway.py has a real gateway write them); here they are set in it directly."""
    set_poll = (
        "INSERT INTO gateway_polls (system, last_poll_at) VALUES ($1, now() - make_interval(secs => $2)) "
        "ON CONFLICT (system) DO UPDATE SET last_poll_at = excluded.last_poll_at"
    )
    await ops.pool.execute(set_poll, POLLING, 40.0)
    await ops.pool.execute(set_poll, GONE, 3 * 3600.0)
    # its requests through the gateways (gateway_requests, as a gateway's activity task writes them): 5 a while ago
    # and 2 in this minute
    add = (
        "INSERT INTO gateway_requests (minute, system, count) VALUES (date_trunc('minute', now()) - $2::interval, $1,"
        " $3) ON CONFLICT (minute, system) DO UPDATE SET count = excluded.count"
    )
    await ops.pool.execute(add, POLLING, dt.timedelta(minutes=20), 5)
    await ops.pool.execute(add, POLLING, dt.timedelta(0), 2)
    try:
        await ops.login(page, "duty")
        rows = page.locator("#health tr")
        polling = rows.filter(has_text=f"适配器 {POLLING}").filter(has_text="间歇轮询 · 经 HTTPS 网关")
        await polling.wait_for(timeout=30_000)
        assert "good" in (await polling.locator(".badge").get_attribute("class") or "")
        text = await polling.inner_text()
        assert "秒前，两次轮询之间网关不占用其队列" in text and "待取 0" in text
        assert "近 1 小时经网关请求 7（近 2 分钟 2）" in text
        summary = rows.filter(has_text="未连接：")
        await summary.wait_for(timeout=30_000)
        listed = await summary.inner_text()
        assert f"{GONE}（上次轮询 3 小时前）" in listed  # the first system queue by name: never cut off the list
        assert POLLING not in listed
        assert await rows.filter(has_text=f"适配器 {GONE}").count() == 0  # no row of its own: it is not connected
        await ops.screenshot(page, "ops-adapter-polling")
    finally:
        await ops.pool.execute("DELETE FROM gateway_polls WHERE system = ANY($1::text[])", [POLLING, GONE])
        await ops.pool.execute("DELETE FROM gateway_requests WHERE system = $1", POLLING)


async def test_the_gateways_refusals_name_the_system_and_the_reason(ops: Any, page: Any) -> None:
    """When a bureau calls to say 发不进来, the overview lists the gateways' own refusals of the last hour by the system whose certificate
    came with them, with the code's Chinese title, the last two minutes' as a warning (what a gateway notes and
    writes: ``hub.store.gateway_activity.GatewayActivity``, flushed here into the page's store); the gateway's row
    counts the hour's."""
    from hub.store.gateway_activity import GatewayActivity

    activity = GatewayActivity()
    for _ in range(3):
        activity.refused(GATEWAY, "CERT_REVOKED", "10.20.0.5")
    activity.refused(None, "GATEWAY_NO_CERTIFICATE")
    # failed TLS handshakes (hub.gateway.tls): no system; a foreign certificate warns, plain HTTP (scanners) does not;
    # the addresses they came from are the clue to who it is (eight named, then "more")
    for i in range(10):
        activity.refused(None, "TLS_CERT_UNTRUSTED", f"10.30.0.{i}")
    activity.refused(None, "TLS_PLAIN_HTTP", "[2001:db8::1]")
    await activity.flush(ops.pool)
    second = GatewayActivity()  # a second gateway: its addresses join the same system's and code's
    second.refused(GATEWAY, "CERT_REVOKED", "10.20.0.6")
    await second.flush(ops.pool)
    try:
        await ops.login(page, "duty")
        rows = page.locator("#health tr")
        revoked = rows.filter(has_text=f"网关拒绝 {GATEWAY}").filter(has_text="CERT_REVOKED")
        await revoked.wait_for(timeout=30_000)
        assert "warn" in (await revoked.locator(".badge").get_attribute("class") or "")
        text = await revoked.inner_text()
        assert "证书已吊销：近 2 分钟 4 次，近 1 小时 4 次，最近一次 " in text
        assert text.endswith("，来自 10.20.0.5、10.20.0.6"), text
        anonymous = rows.filter(has_text="网关拒绝 无证书的客户端").filter(has_text="未提供客户端证书")
        await anonymous.wait_for(timeout=30_000)
        handshakes = rows.filter(has_text="网关拒绝 TLS 握手（系统未识别）")
        foreign = handshakes.filter(has_text="TLS_CERT_UNTRUSTED")
        text = await foreign.inner_text()
        assert "客户端证书不是枢纽 CA 签发的" in text and "近 1 小时 10 次" in text
        named = ", ".join(f"10.30.0.{i}" for i in range(8)).replace(", ", "、")
        assert text.endswith(f"，来自 {named} 等更多地址"), text
        assert "warn" in (await foreign.locator(".badge").get_attribute("class") or "")
        plain = handshakes.filter(has_text="TLS_PLAIN_HTTP")
        assert "明文 HTTP" in await plain.inner_text() and "来自 [2001:db8::1]" in await plain.inner_text()
        assert "warn" not in (await plain.locator(".badge").get_attribute("class") or "")
        assert "近 1 小时网关拒绝 16" in await rows.filter(has_text="HTTPS 网关").first.inner_text()
        await ops.screenshot(page, "ops-gateway-refusals")
    finally:
        await ops.pool.execute("DELETE FROM gateway_refusals")
        await activity.leave(ops.pool)  # the flush put a gateway's row on record too, as a gateway's does
        await second.leave(ops.pool)


async def test_the_gateway_row_names_the_gateways_on_other_machines(ops: Any, page: Any) -> None:
    """Gateways behind a load balancer run on machines of their own (docs/operations.md): the gateway row reads each
    one's row of ``gateway_instances`` (hub.store.gateway_activity; a real gateway writes its own in
    tests/integration/test_gateway.py), naming the live ones, and a gateway that stopped refreshing its row makes the
    row 降级 with its host and when it was last seen; so does one that is up but not ready, named with why."""
    import uuid

    add = (
        "INSERT INTO gateway_instances VALUES ($1, $2, $3, now() - interval '1 hour', now() - make_interval(secs => $4),"
        " $5)"
    )
    rows_added = [uuid.uuid4(), uuid.uuid4(), uuid.uuid4()]
    await ops.pool.execute(add, rows_added[0], "gw-a.example", 101, 1.0, [])
    await ops.pool.execute(add, rows_added[1], "gw-b.example", 102, 300.0, [])
    # up, but its GET /ready fails (hub.gateway.readiness): the load balancer sends it nobody
    await ops.pool.execute(add, rows_added[2], "gw-c.example", 103, 2.0, ["GATEWAY_READY_CRL"])
    try:
        await ops.login(page, "duty")
        row = page.locator("#health tr").filter(has_text="HTTPS 网关").filter(has_text="gw-a.example")
        await row.wait_for(timeout=30_000)
        assert "warn" in (await row.locator(".badge").get_attribute("class") or "")
        text = await row.inner_text()
        assert "降级" in text and "网关进程 2：gw-a.example (pid 101), gw-c.example (pid 103)" in text
        assert "无响应：gw-b.example (pid 102，5 分钟前最后一次刷新)" in text
        assert "未就绪：gw-c.example (pid 103，枢纽 CA 的吊销列表缺失或过期，无法核验客户端证书)" in text
        await ops.screenshot(page, "ops-gateway-instances")
    finally:
        await ops.pool.execute("DELETE FROM gateway_instances WHERE instance = ANY($1::uuid[])", rows_added)


async def test_the_process_engine_row_names_where_it_runs(ops: Any, page: Any) -> None:
    """The ops page on a machine of its own (docs/operations.md) sees the process engine — which escalates emergency
    alerts nobody signed for — by its row in the store (hub.store.process_instances, any machine): running, and
    where; the directory row names another machine's processes with their host, the workers row its workers."""
    import uuid

    add = (
        "INSERT INTO process_instances (instance, role, idx, host, pid, started_at, seen_at, directory_version)"
        " VALUES ($1, $2, '0', 'hub-b.example', $3, now() - interval '1 hour', now(), $4)"
    )
    stored = await ops.pool.fetchval("SELECT max(version) FROM directory_versions")
    added = [uuid.uuid4(), uuid.uuid4()]
    await ops.pool.execute(add, added[0], "processes", 4711, stored)
    await ops.pool.execute(add, added[1], "worker", 4712, (stored or 1) - 1)  # a version behind
    try:
        await ops.login(page, "duty")
        rows = page.locator("#health tr")
        engine = rows.filter(has_text="流程引擎").filter(has_text="hub-b.example")
        await engine.wait_for(timeout=30_000)
        text = await engine.inner_text()
        assert "运行" in text and "运行于 " in text and "hub-b.example (pid 4711)" in text
        directory = rows.filter(has_text="目录").filter(has_text="hub-b.example")
        await directory.wait_for(timeout=30_000)
        assert "工作进程 0（hub-b.example pid 4712，第 " in await directory.inner_text()
        workers = rows.filter(has_text="工作进程").filter(has_text="其他主机：hub-b.example 1")
        await workers.wait_for(timeout=30_000)
        await ops.screenshot(page, "ops-engine-elsewhere")
    finally:
        await ops.pool.execute("DELETE FROM process_instances WHERE instance = ANY($1::uuid[])", added)
