"""The gateway at its edges (a review of 2026-12-07, each case reproduced against the real gateway, RabbitMQ and
PostgreSQL before it was fixed): a refusal of a delivery that the client cut short or that failed midway never
strands the delivery; a reason the broker cannot carry is a 400; an envelope whose id the gateway's bounded search
cannot read is answered under the id the hub reads (not as a duplicate); parameters too long for ``int`` and cursors
outside the store's years are 400s, not 500s; ``Expect: 100-continue`` is refused for a client the gateway would
refuse, before the body is sent."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gateway_certs import client_ssl_context, presented_serial
from gateway_client import Gateway, post, running_gateway
from harness import SYSTEMS, Hub, document
from harness import until as until_async

from hub.envelope import Recipient
from hub.settings import Settings

pytestmark = pytest.mark.integration

SENDER = "county-220122-oa"  # 农安
RECIPIENT = "county-220183-oa"  # 德惠
DEHUI = SYSTEMS[RECIPIENT]


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "gwedge") as settings:
        yield settings


@pytest.fixture(scope="module")
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()
    clients = {s: SYSTEMS[s] for s in (SENDER, RECIPIENT)}
    try:
        async with running_gateway(
            hub, clients, visibility_timeout_s=2, answer_timeout_s=10, link_check_s=0, cert_check_s=0.3
        ) as g:
            yield g
    finally:
        await hub.close()


async def until(check: Any, what: str, timeout: float = 15.0) -> Any:
    return await until_async(check, what, timeout=timeout, interval=0.1)


async def _delivered(gw: Gateway) -> tuple[str, str]:
    """A document from 农安 to 德惠, handed out to 德惠's poll: (its message id, its delivery tag)."""
    status, headers, _ = await post(gw.session(SENDER), gw.hub.sign(SENDER, document(SENDER, [Recipient.to(DEHUI)])))
    assert status == 202, headers
    mid = headers["X-Hub-Message-Id"]
    async with gw.session(RECIPIENT).get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == mid
        return mid, r.headers["X-Hub-Delivery-Tag"]


async def _dead_lettered(gw: Gateway, mid: str) -> list[Any]:
    t = gw.hub.transport
    found = []
    for m in await t.fetch(t.names.dead_letter_queue, max_messages=100):
        await t.ack([m])
        if m.message_id == mid:
            found.append(m)
    return found


async def _queued(gw: Gateway) -> int:
    t = gw.hub.transport
    return sum([await t.queue_depth(q) for q in t.names.system_queues(RECIPIENT)])


async def test_a_refusal_the_client_cut_short_still_parks_and_acknowledges(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's connection drops while the parked copy is being published (a broker slow to confirm): the
    refusal completes all the same — the copy in the dead-letter queue, the delivery acknowledged, nothing handed
    out or queued. Before, the handler's cancellation left the delivery unacknowledged and out of the visibility
    timeout's reach, and the system's polls and the gateway's stop then waited for it forever."""
    mid, tag = await _delivered(gw)
    transport = gw.state.transport
    real = transport.publish_many

    async def slow(items: Any) -> None:
        await asyncio.sleep(1.0)
        await real(items)

    monkeypatch.setattr(transport, "publish_many", slow)
    cert, key = gw.certs[RECIPIENT]
    port = gw.runner.addresses[0][1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ssl_context(gw.pki_dir, cert, key))
    body = b'{"code": "SIG_DIGEST", "reason": "the digest does not match"}'
    writer.write(
        f"POST /v1/inbox/{tag}/refuse HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()  # gone while the copy is being parked
    parked = await until(lambda: _dead_lettered(gw, mid), "the refused delivery in the dead-letter queue")
    assert parked[0].headers["x-refused-code"] == "SIG_DIGEST" and parked[0].headers["x-refused-by"] == RECIPIENT
    monkeypatch.setattr(transport, "publish_many", real)

    async def settled() -> bool:
        return gw.state.mailbox.held(RECIPIENT) == 0 and await _queued(gw) == 0

    await until(settled, "the delivery acknowledged, not handed out and not queued")
    await asyncio.sleep(2.5)  # past the visibility timeout: it does not come back
    async with gw.session(RECIPIENT).get("/v1/inbox", params={"wait": "1"}) as r:
        assert r.status == 204


async def test_a_refusal_that_fails_midway_puts_the_delivery_back(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure that is not the broker's (a bug) while parking: the client gets the gateway's 500, and the delivery
    is put back at once and comes again on the next poll — never left held."""
    import hub.pipeline.client

    mid, tag = await _delivered(gw)

    async def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("a bug while parking")

    monkeypatch.setattr(hub.pipeline.client, "park_refused", broken)
    async with gw.session(RECIPIENT).post(
        f"/v1/inbox/{tag}/refuse", json={"code": "SIG_DIGEST", "reason": "the digest does not match"}
    ) as r:
        assert r.status == 500 and (await r.json())["code"] == "INTERNAL"
    monkeypatch.undo()
    async with gw.session(RECIPIENT).get("/v1/inbox", params={"wait": "5"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == mid  # at once, not after the visibility timeout
        again = r.headers["X-Hub-Delivery-Tag"]
    async with gw.session(RECIPIENT).post(f"/v1/inbox/{again}/ack") as r:
        assert r.status == 204
    assert await _dead_lettered(gw, mid) == []


async def test_a_reason_the_broker_cannot_carry_is_refused_and_the_delivery_stays(gw: Gateway) -> None:
    """JSON can carry a lone surrogate; the broker's headers cannot: 400, and the delivery is still the client's to
    acknowledge (before: a 500, and the delivery stranded)."""
    _mid, tag = await _delivered(gw)
    body = '{"code": "SIG_DIGEST", "reason": "bad \\ud800 digest"}'
    recipient = gw.session(RECIPIENT)
    async with recipient.post(f"/v1/inbox/{tag}/refuse", data=body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and (await r.json())["code"] == "GATEWAY_BAD_REQUEST"
    async with recipient.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 204


def _comment_first(data: bytes, size: int = 5000) -> bytes:
    """A comment of ``size`` bytes right after the root's start tag (the hub's parser drops comments; not signed)."""
    end = data.index(b">", data.index(b"<env:Envelope")) + 1
    return data[:end] + b"<!--" + b"x" * size + b"-->" + data[end:]


def _cdata_id(data: bytes) -> bytes:
    start = data.index(b"<env:MessageId>") + len(b"<env:MessageId>")
    end = data.index(b"</env:MessageId>")
    return data[:start] + b"<![CDATA[" + data[start:end] + b"]]>" + data[end:]


def _decoy_first(data: bytes) -> bytes:
    """A comment before the header holding another id where the search looks first."""
    end = data.index(b">", data.index(b"<env:Envelope")) + 1
    return data[:end] + f"<!-- <env:MessageId>{uuid.uuid4()}</env:MessageId> -->".encode() + data[end:]


@pytest.mark.parametrize(
    "disguise", [_comment_first, _cdata_id, _decoy_first], ids=["long-comment-first", "cdata-id", "decoy-comment"]
)
async def test_an_id_the_search_cannot_read_is_answered_under_the_hubs_id(gw: Gateway, disguise: Any) -> None:
    """The gateway reads the id to wait for with a bounded search; where that fails on an envelope the hub reads
    (a long comment before the header, the id in CDATA, another id in a comment before it), the hub's own parse
    reads it. Before, the gateway waited
    under an id of its own, missed the hub's answer, and answered 409 MSG_DUPLICATE — a refusal lost as a duplicate."""
    from hub.envelope import Envelope, parse

    sender = gw.session(SENDER)
    good = gw.hub.sign(SENDER, document(SENDER, [Recipient.to(DEHUI)]))
    mid = Envelope.from_tree(parse(good)).message_id
    status, headers, _ = await post(sender, disguise(good))
    assert (status, headers["X-Hub-Message-Id"], headers.get("X-Hub-Outcome")) == (202, mid, "accepted"), headers
    unknown = gw.hub.sign(SENDER, document(SENDER, [Recipient.to("11220300013700183Y", "city-220300-nope")]))
    status, headers, _ = await post(sender, disguise(unknown))
    assert status == 403 and headers["X-Hub-Code"] == "ROUTE_UNKNOWN_RECIPIENT", headers
    assert headers["X-Hub-Message-Id"] == Envelope.from_tree(parse(unknown)).message_id
    async with gw.session(RECIPIENT).get("/v1/inbox", params={"wait": "5"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == mid
        tag = r.headers["X-Hub-Delivery-Tag"]
    async with gw.session(RECIPIENT).post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 204


async def test_numbers_too_long_and_cursors_outside_the_years_are_400(gw: Gateway) -> None:
    sender = gw.session(SENDER)
    digits = "1" * 5000  # int() refuses past 4,300 digits
    for path, params in (
        ("/v1/inbox", {"wait": digits}),
        ("/v1/inbox", {"wait": "1", "max": digits}),
        ("/v1/messages", {"limit": digits}),
    ):
        async with sender.get(path, params=params) as r:
            assert r.status == 400 and (await r.json())["code"] == "GATEWAY_BAD_REQUEST", (path, list(params))
    for at in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        cursor = base64.urlsafe_b64encode(f"{at}/{uuid.uuid4()}".encode()).decode().rstrip("=")
        async with sender.get("/v1/messages", params={"after": cursor}) as r:
            assert r.status == 400 and (await r.json())["code"] == "GATEWAY_BAD_REQUEST", at


async def _expect_answer(gw: Gateway, cert_key: tuple[Any, Any] | None) -> tuple[bytes, bytes]:
    """The status line a ``POST /v1/messages`` with ``Expect: 100-continue`` of 4 MB gets before its body."""
    port = gw.runner.addresses[0][1]
    ssl = client_ssl_context(gw.pki_dir, *cert_key) if cert_key else client_ssl_context(gw.pki_dir)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl)
    try:
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/xml\r\n"
            b"Expect: 100-continue\r\nContent-Length: 4000000\r\n\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n")[0]
            rest = b"" if line.startswith(b"HTTP/1.1 100") else await reader.read(2000)  # 100: it waits for the body
        return line, rest
    finally:
        writer.close()


async def test_expect_100_continue_is_refused_for_a_client_the_gateway_refuses(gw: Gateway) -> None:
    """aiohttp answers ``Expect`` before the middlewares: the gateway told a client without a certificate, or over
    its concurrency, "100 Continue" and let it upload 4 MB before the 401/429. Now the refusal comes first, as JSON
    with its code; a client the gateway takes still gets 100 Continue."""
    line, rest = await _expect_answer(gw, None)
    assert line.startswith(b"HTTP/1.1 401") and b"GATEWAY_" in rest, (line, rest)
    limits = gw.state.limits
    _rate, cap = limits.lookup(SENDER)

    activity = gw.state.activity
    counted: list[str] = []  # what the ops page counts: every identified request, whatever its answer
    real_requested = activity.requested
    activity.requested = lambda system: (counted.append(system), real_requested(system))[1]  # type: ignore[method-assign]
    limits._active[SENDER] = cap  # the system's slots all taken by requests in progress
    try:
        line, rest = await _expect_answer(gw, gw.certs[SENDER])
        assert line.startswith(b"HTTP/1.1 429") and b"GATEWAY_CONCURRENCY" in rest, (line, rest)
    finally:
        del limits._active[SENDER]
        activity.requested = real_requested  # type: ignore[method-assign]
    assert counted == [SENDER]  # refused before its body: still a request of the system, counted once
    line, _ = await _expect_answer(gw, gw.certs[SENDER])
    assert line.startswith(b"HTTP/1.1 100"), line


async def test_a_long_poll_is_answered_when_the_gateway_stops(gw: Gateway, settings: Settings) -> None:
    """A poll waiting when the gateway stops: answered 204 with Connection: close at once, so the client polls
    another gateway. Before, aiohttp cut it without an answer after two shutdown timeouts (10 s): the SDK logged the
    gateway unreachable, curl and Java an empty reply."""
    import aiohttp

    from hub.gateway import GatewaySettings, start_gateway

    runner = await start_gateway(settings, GatewaySettings.for_state(settings.state_dir, port=0, link_check_s=0))
    cert, key = gw.certs[SENDER]
    port = runner.addresses[0][1]
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(gw.pki_dir, cert, key))
    async with aiohttp.ClientSession(f"https://127.0.0.1:{port}", connector=connector) as session:

        async def poll() -> tuple[int, str]:
            async with session.get("/v1/inbox", params={"wait": "30"}) as r:
                return r.status, r.headers.get("Connection", "")

        waiting = asyncio.create_task(poll())
        await asyncio.sleep(1.0)
        await runner.cleanup()
        status, connection = await asyncio.wait_for(waiting, 20)
    assert (status, connection.lower()) == (204, "close")


async def test_the_pages_refusal_totals_count_every_group(gw: Gateway) -> None:
    """Stale CRLs refuse every system: 60 (system, code) groups. The page listed the first 50 and added those up
    (its total and its "N more" undercounted); ``refusal_totals`` counts all of them."""
    from hub.store import gateway_activity

    pool = gw.hub.pool
    before_groups, before_total = await gateway_activity.refusal_totals(pool)
    await pool.executemany(
        "INSERT INTO gateway_refusals (minute, system, code, count) VALUES (date_trunc('minute', now()), $1, $2, $3)",
        [(f"county-2299{i:02d}-oa", "CERT_CRL_UNAVAILABLE", 3) for i in range(60)],
    )
    try:
        assert len(await gateway_activity.refusals(pool)) == 50
        groups, total = await gateway_activity.refusal_totals(pool)
        assert (groups - before_groups, total - before_total) == (60, 180)
    finally:
        await pool.execute("DELETE FROM gateway_refusals WHERE system LIKE 'county-2299%'")


async def test_a_renewed_server_certificate_is_presented_without_a_restart(gw: Gateway, settings: Settings) -> None:
    """``hub pki issue-server`` run again while the gateway serves (before the old certificate expires): new
    connections get the new certificate within ``cert_check_s`` (HUB_GATEWAY_CERT_CHECK_S; SIGHUP looks at once),
    a connection already open keeps serving, and nothing was restarted."""
    from urllib.parse import urlsplit

    from hub.commands import trust_admin as admin

    url = urlsplit(gw.url)
    client_ctx = client_ssl_context(gw.pki_dir, *gw.certs[SENDER])

    async def presented() -> int:
        return await presented_serial(str(url.hostname), int(url.port or 0), client_ctx)

    before = await presented()
    listener = gw.runner.listener
    session = gw.session(SENDER)  # open before the renewal, kept alive across it
    async with session.get("/v1/inbox", params={"wait": "0"}) as r:
        assert r.status in (200, 204)
    issued = await admin.issue_server(
        settings, settings.state_dir / "pki", ["127.0.0.1", "localhost"], out_dir=settings.state_dir / "pki" / "gateway"
    )
    assert issued.certificate.serial_number != before

    async def renewed() -> bool:
        return await presented() == issued.certificate.serial_number

    assert await until(renewed, "the renewed server certificate on a new connection", timeout=10)

    # what the ops overview reads: the gateway's row in the store names the certificate it presents now
    from hub.store import gateway_activity
    from hub.trust.pki import serial_hex

    async def on_record() -> bool:
        rows = await gateway_activity.instances(gw.hub.pool)
        return any(
            i.certificate_serial == serial_hex(issued.certificate.serial_number)
            and i.certificate_not_after == issued.certificate.not_valid_after_utc
            for i in rows
        )

    assert await until(on_record, "the presented certificate in the gateway's row", timeout=15)
    async with session.get("/v1/inbox", params={"wait": "0"}) as r:
        assert r.status in (200, 204)
    assert gw.runner.listener is listener  # the same server, never restarted


async def test_a_stop_that_is_itself_cancelled_still_closes_what_the_gateway_holds(
    gw: Gateway, settings: Settings
) -> None:
    """``runner.cleanup()`` cancelled while it stops the background tasks (``hub.aio.stopped``): the cancellation goes
    on to the caller, but only after the port, the mailbox (every held item back) and the connections are closed —
    the first form of ``stopped`` raised at once and left all three open (a review's reproduction)."""
    from hub.gateway import STATE, GatewaySettings, start_gateway

    runner = await start_gateway(settings, GatewaySettings.for_state(settings.state_dir, port=0, link_check_s=0))
    state = runner.app[STATE]
    assert runner.listener is not None
    sockets = runner.listener.sockets
    stopping = asyncio.get_running_loop().create_task(runner.cleanup())
    await asyncio.sleep(0)  # inside the stop of the certificate watch
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert all(s.fileno() == -1 for s in sockets), "the port was left open"
    assert state.mailbox._closing and state.pool.is_closing()
