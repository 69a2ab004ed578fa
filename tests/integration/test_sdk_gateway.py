"""The adapter SDK over the HTTPS gateway (``AdapterSettings.gateway_url``, ``adapters.sdk._gateway``): the same
``Adapter`` and handlers as over RabbitMQ, against the real hub (RabbitMQ, PostgreSQL, the worker) and a real
``hub gateway`` application over mutual TLS, each adapter presenting the certificate it signs with from an enrolment
directory laid out as ``hub adapter enrol --accept`` lays it out.

Covered: a send's hub-signed receipt arrives in the HTTP response and settles it; a delivery reaches the handler
verified (the hub's and the originator's signatures) and is acknowledged; a request's refusal comes back through the
requester's inbox; a handler's short ``Retry`` puts the delivery back at once (``POST /v1/inbox/{tag}/release``), not
after the visibility timeout, and a longer one puts it off in the broker (``release?after=``); a delivery that fails the adapter's checks is parked in the hub's dead-letter queue with its
code and reason (``POST /v1/inbox/{tag}/refuse``), never acknowledged away; the hub's signed refusal is
``HubRefused``; a gateway whose certificate does not chain to the home's hub root is refused at start; the gateway
stopped and started again while the adapter runs; a gateway taking one request a second (sends and acknowledgements
answered 429 and sent again); an adapter over HTTPS whose system reads its queue over RabbitMQ (409
``GATEWAY_LINK_CONFLICT``). With a plain HTTPS client: several deliveries in one poll (``GET /v1/inbox?max=K``,
multipart/mixed) and one acknowledgement for them (``POST /v1/inbox/ack``), and the new endpoints' refusals (400,
404, 415)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from gateway_client import Gateway, over_https, running_gateway
from harness import PROVINCE, SYSTEMS, Hub, sample_body
from harness import until as until_async

from adapters.sdk import Adapter, AdapterSettings, ConfigurationError, Context, HubRefused, Refused, Reject, Retry, to
from hub.demo_scenario.proxy import ConnectProxy
from hub.gateway import STATE
from hub.pipeline.client import credential_paths, enroll
from hub.settings import Settings

pytestmark = pytest.mark.integration

NONGAN = "county-220122-oa"  # 农安: sends over HTTPS
DEHUI = "county-220183-oa"  # 德惠: receives over HTTPS
CITY = "city-220100-oa"  # 长春: asks the province's database over HTTPS
DATA = "prov-220000-data"  # the province's database: answers over HTTPS
PORTAL = "prov-220000-portal"  # the portal: on RabbitMQ in the tracking test, used by no other test of this module
APPROVAL = "prov-220000-approval"  # the provincial approval system: nobody reads its queue here
VISIBILITY_S = 30.0  # long: a delivery that comes back sooner was put back by the adapter


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "sdkgw") as settings:
        yield settings


@pytest.fixture(scope="module")
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    hub = Hub(settings)
    await hub.setup()
    await enroll(settings, DATA, PROVINCE)
    await hub.start_worker()
    try:
        async with running_gateway(hub, {}, visibility_timeout_s=VISIBILITY_S, answer_timeout_s=20) as g:
            yield g
    finally:
        await hub.close()


def https_as(gw: Gateway, system: str) -> Any:
    """A plain HTTPS session presenting the certificate ``system`` signs with (it carries clientAuth too)."""
    key, cert = credential_paths(gw.hub.settings, system)
    gw.certs[system] = (cert, key)
    return gw.session(system)


async def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """``harness.until`` for a check that is a plain function or a coroutine function."""

    async def checked() -> Any:
        got = check()
        return await got if inspect.isawaitable(got) else got

    return await until_async(checked, what, timeout=timeout)


async def send_document(sender: Adapter, recipient: str = DEHUI) -> Any:
    """The typical notice from ``sender`` to ``recipient`` (德惠 by default); the hub's receipt."""
    return await sender.send(
        sample_body("document.official"), service="document.official", version=1, to=[to(SYSTEMS[recipient], recipient)]
    )


async def test_send_receive_and_acknowledge_over_https(gw: Gateway, tmp_path: Path) -> None:
    dehui, nongan = over_https(gw, DEHUI, tmp_path), over_https(gw, NONGAN, tmp_path)
    seen: list[Context] = []

    @dehui.handles("document.official", version=1)
    async def on_document(doc: Any, ctx: Context) -> None:
        seen.append(ctx)

    async with dehui, nongan:
        receipt = await send_document(nongan)  # the hub's signed receipt came in the response, verified
        assert receipt.accepted and receipt.recipients == ((SYSTEMS[DEHUI], DEHUI, "to"),)
        await until(lambda: seen, "the delivery at 德惠's handler")
        ctx = seen[0]
        assert ctx.message_id == receipt.message_id
        assert ctx.sender.system == NONGAN and ctx.originator is not None and ctx.originator.system == NONGAN
        assert ctx.hub.system == "hub"
        # Acknowledged: the gateway holds nothing more of 德惠's, and the store recorded the id.
        await until(lambda: gw.state.mailbox.held(DEHUI) == 0, "the acknowledgement")
        assert await dehui._wiring.store.seen([receipt.message_id]) == {receipt.message_id}
    assert len(seen) == 1


async def test_a_requests_refusal_comes_back_through_the_inbox(gw: Gateway, tmp_path: Path) -> None:
    data, city = over_https(gw, DATA, tmp_path), over_https(gw, CITY, tmp_path)

    @data.handles("data.query", version=1)
    async def on_query(msg: Any, ctx: Context) -> None:
        raise Reject("DATASET_CLOSED", "该数据集本周维护，暂停查询 (dataset closed for maintenance)")

    async with data, city:
        with pytest.raises(Refused) as caught:
            await city.request(
                sample_body("data.query"), service="data.query", version=1, to=[to(PROVINCE, DATA)], timeout=20
            )
    assert caught.value.code == "DATASET_CLOSED" and caught.value.by.system == DATA
    assert "维护" in caught.value.reason


async def test_retry_puts_the_delivery_back_at_once(gw: Gateway, tmp_path: Path) -> None:
    dehui, nongan = over_https(gw, DEHUI, tmp_path), over_https(gw, NONGAN, tmp_path)
    calls: list[tuple[str, float]] = []

    @dehui.handles("document.official", version=1)
    async def on_document(doc: Any, ctx: Context) -> None:
        calls.append((ctx.message_id, time.monotonic()))
        if len(calls) == 1:
            raise Retry(0.2)

    async with dehui, nongan:
        receipt = await send_document(nongan)
        await until(lambda: len(calls) == 2, "the delivery handed to the handler again", timeout=10)
        await until(lambda: gw.state.mailbox.held(DEHUI) == 0, "the acknowledgement")
    assert [mid for mid, _ in calls] == [receipt.message_id] * 2
    assert calls[1][1] - calls[0][1] < VISIBILITY_S / 3  # released, not timed out


async def test_a_delivery_that_fails_the_adapters_checks_is_parked_with_its_reason(gw: Gateway, tmp_path: Path) -> None:
    nongan = over_https(gw, NONGAN, tmp_path)
    async with nongan:
        receipt = await send_document(nongan)
    # What the hub delivered to 德惠, taken from its inbox by a plain HTTPS client and put into its queue again altered
    # by one signed character, as if changed on the way.
    http = https_as(gw, DEHUI)
    async with http.get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == receipt.message_id
        tag, delivered = r.headers["X-Hub-Delivery-Tag"], await r.read()
    async with http.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 204
    tampered = delivered.replace("吉林省林业和草原局文件".encode(), "吉林省林业和草原局函件".encode(), 1)
    assert tampered != delivered
    t = gw.hub.transport
    from hub.transport.topology import Outgoing

    await t.publish_many([Outgoing(t.names.deliver_exchange, DEHUI, tampered, {}, 0, receipt.message_id)])

    dehui = over_https(gw, DEHUI, tmp_path)
    seen: list[Context] = []

    @dehui.handles("document.official", version=1)
    async def on_document(doc: Any, ctx: Context) -> None:
        seen.append(ctx)

    parked: list[Any] = []

    async def dead_lettered() -> bool:
        for m in await t.fetch(t.names.dead_letter_queue, max_messages=100):
            await t.ack([m])
            if m.message_id == receipt.message_id:
                parked.append(m)
        return bool(parked)

    async with dehui:
        await until(dead_lettered, "the refused delivery in the hub's dead-letter queue")
        await until(lambda: gw.state.mailbox.held(DEHUI) == 0, "the refused delivery settled at the gateway")
    assert not seen  # nothing that failed the checks reached the handler
    m = parked[0]
    assert m.body == tampered
    assert m.headers["x-refused-by"] == DEHUI
    assert str(m.headers["x-refused-code"]).startswith("SIG_"), m.headers
    assert m.headers["x-refused-reason"]


async def test_the_hubs_signed_refusal_is_hub_refused(gw: Gateway, tmp_path: Path) -> None:
    nongan = over_https(gw, NONGAN, tmp_path)
    async with nongan:
        with pytest.raises(HubRefused) as caught:  # no route lets 农安 report to the province's database
            await nongan.send(sample_body("info.report"), service="info.report", version=1, to=[to(PROVINCE, DATA)])
    assert caught.value.code == "ROUTE_NO_ROUTE" and caught.value.title
    assert caught.value.error is not None  # the hub's signed hub.error, verified, kept as evidence


async def test_a_gateway_not_of_the_homes_hub_is_refused_at_start(gw: Gateway, tmp_path: Path) -> None:
    adapter = over_https(gw, NONGAN, tmp_path)
    assert adapter.settings is not None
    adapter.settings.root_cert_path.write_bytes(_foreign_root())  # the gateway's certificate does not chain to it
    with pytest.raises(ConfigurationError) as caught:
        await adapter.start()
    assert caught.value.code == "SDK_GATEWAY_CERTIFICATE"
    assert "hub-root.pem" in caught.value.detail


async def test_an_adapter_whose_certificate_expired_is_told_so_at_start(gw: Gateway, tmp_path: Path) -> None:
    """The gateway answers an expired certificate 403 CERT_EXPIRED with its date (the handshake no longer checks
    dates, which gave "empty reply from server"): the adapter's start fails with that code and the gateway's words."""
    from gateway_certs import client_certificate

    adapter = over_https(gw, NONGAN, tmp_path)
    assert adapter.settings is not None
    s = gw.hub.settings
    cert, key, _ = client_certificate(s.state_dir / "pki", s.ca_passphrase, SYSTEMS[NONGAN], NONGAN, tmp_path, days=-3)
    adapter.settings.cert_path.write_bytes(cert.read_bytes())
    adapter.settings.key_path.write_bytes(key.read_bytes())
    with pytest.raises(ConfigurationError) as caught:
        await adapter.start()
    assert caught.value.code == "CERT_EXPIRED", caught.value
    assert "expired on" in caught.value.detail and NONGAN in caught.value.detail


async def test_an_adapter_whose_certificate_expires_soon_says_so_at_start(
    gw: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten days left on the system's certificate: the adapter starts and says in its log when it expires
    (adapters.sdk._trust.warn_if_expiring), so the agency renews it before the hub refuses it."""
    import logging

    from gateway_certs import client_certificate

    adapter = over_https(gw, NONGAN, tmp_path)
    assert adapter.settings is not None
    s = gw.hub.settings
    cert, key, _ = client_certificate(s.state_dir / "pki", s.ca_passphrase, SYSTEMS[NONGAN], NONGAN, tmp_path, days=10)
    adapter.settings.cert_path.write_bytes(cert.read_bytes())
    adapter.settings.key_path.write_bytes(key.read_bytes())
    with caplog.at_level(logging.WARNING, logger="adapters.sdk"):
        async with adapter:
            pass
    # the SDK's own lines: the hub in this process says in its log when its test certificates (30 days) near their end
    said = [
        r.getMessage() for r in caplog.records if r.name.startswith("adapters.sdk") and "expires on" in r.getMessage()
    ]
    assert len(said) == 1 and NONGAN in said[0] and "(in 9 days)" in said[0], said  # 9 days and 23 hours left


def _foreign_root() -> bytes:
    """A self-signed CA certificate of nobody's hub."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not the hub")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


async def test_release_and_refuse_endpoints_refuse_what_they_cannot_take(gw: Gateway) -> None:
    http = https_as(gw, DEHUI)
    async with http.post("/v1/inbox/no-such-tag/release") as r:
        assert r.status == 404 and (await r.json())["code"] == "GATEWAY_NOT_FOUND"
    async with http.post("/v1/inbox/no-such-tag/release", params={"after": "30"}) as r:
        assert r.status == 404 and (await r.json())["code"] == "GATEWAY_NOT_FOUND"
    refusal = {"code": "SIG_INVALID", "reason": "签名不符 the signature does not verify"}
    async with http.post("/v1/inbox/no-such-tag/refuse", json=refusal) as r:
        assert r.status == 404 and (await r.json())["code"] == "GATEWAY_NOT_FOUND"
    async with http.post("/v1/inbox/no-such-tag/refuse", data=b"code=X", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 415 and (await r.json())["code"] == "GATEWAY_MEDIA_TYPE"
    for bad in ({"code": "lower", "reason": "x"}, {"code": "SIG_INVALID", "reason": "  "}, {"code": "SIG_INVALID"}):
        async with http.post("/v1/inbox/no-such-tag/refuse", json=bad) as r:
            assert r.status == 400 and (await r.json())["code"] == "GATEWAY_BAD_REQUEST", bad
    async with http.post("/v1/inbox/t/refuse", data=b"{", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400


YUSHU = "county-220182-oa"  # 榆树: used by no other test of this module (so no other gateway reads its queue)
CHANGCHUN = "city-220100-oa"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_adapter_rides_out_a_gateway_restart(gw: Gateway, tmp_path: Path) -> None:
    """The gateway goes away while the adapter runs: its polls back off, a send in that time is ``HubUnavailable``
    after ``request_timeout``; a delivery that arrives meanwhile waits in the system's queue and reaches the handler
    once the gateway is back on the same address. Nothing is lost."""
    from harness import document

    from adapters.sdk import HubUnavailable
    from hub.envelope import Recipient
    from hub.gateway import GatewaySettings, start_gateway

    s = gw.hub.settings
    config = GatewaySettings.for_state(s.state_dir, port=_free_port(), visibility_timeout_s=VISIBILITY_S)
    runner = await start_gateway(s, config)
    url = f"https://127.0.0.1:{config.port}"
    yushu = over_https(
        gw, YUSHU, tmp_path, url=url, gateway_wait=1, request_timeout=2, reconnect_initial=0.1, reconnect_max=0.5
    )
    seen: list[Context] = []

    @yushu.handles("document.official", version=1)
    async def on_document(doc: Any, ctx: Context) -> None:
        seen.append(ctx)

    try:
        async with yushu:
            await runner.cleanup()  # the gateway goes away
            env = await gw.hub.send(CHANGCHUN, document(CHANGCHUN, [Recipient.to(SYSTEMS[YUSHU])]))
            with pytest.raises(HubUnavailable) as caught:
                await send_document(yushu, CHANGCHUN)
            assert "within 2 s" in caught.value.detail and caught.value.code == "SDK_HUB_UNAVAILABLE"
            assert not seen
            runner = await start_gateway(s, config)  # back, on the same address
            await until(lambda: [c for c in seen if c.message_id == env.message_id], "the delivery after the restart")
            await until(lambda: runner.app[STATE].mailbox.held(YUSHU) == 0, "its acknowledgement")
    finally:
        await runner.cleanup()


async def test_over_the_rate_the_adapter_sends_again_after_retry_after(gw: Gateway, tmp_path: Path) -> None:
    """A gateway that takes one request a second from the system: three sends at once are answered 429 with
    Retry-After, sent again, and all accepted (each once: the hub holds three messages, not more)."""

    from hub.gateway import GatewaySettings, start_gateway

    s = gw.hub.settings
    config = GatewaySettings.for_state(s.state_dir, port=_free_port(), default_rate=1.0)
    runner = await start_gateway(s, config)
    url = f"https://127.0.0.1:{config.port}"
    yushu = over_https(gw, YUSHU, tmp_path, url=url, gateway_wait=10, gateway_polls=1)  # a poll is a request too
    seen: list[str] = []

    @yushu.handles("document.official", version=1)
    async def on_document(doc: Any, ctx: Context) -> None:
        seen.append(ctx.message_id)

    try:
        async with yushu:
            started = time.monotonic()
            receipts = await asyncio.gather(*(send_document(yushu, CHANGCHUN) for _ in range(3)))
            took = time.monotonic() - started
            # Three deliveries the other way: each is a poll and an acknowledgement at one request a second, so
            # acknowledgements are answered 429 too, and sent again (not left to the visibility timeout: 60 s).
            from harness import document

            from hub.envelope import Recipient

            sent = [
                (await gw.hub.send(CHANGCHUN, document(CHANGCHUN, [Recipient.to(SYSTEMS[YUSHU])]))).message_id
                for _ in range(3)
            ]
            await until(lambda: set(sent) <= set(seen), "the three deliveries at 榆树's handler", timeout=30)
            await until(lambda: runner.app[STATE].mailbox.held(YUSHU) == 0, "their acknowledgements", timeout=30)
    finally:
        await runner.cleanup()
    assert sorted(seen) == sorted(sent)  # each handled once: no acknowledgement was lost
    assert all(r.accepted for r in receipts) and len({r.message_id for r in receipts}) == 3
    assert took >= 1.0  # the 1 request a second held some of them back
    rows = await gw.hub.pool.fetch(
        "SELECT state FROM messages WHERE message_id = ANY($1::uuid[])", [r.message_id for r in receipts]
    )
    assert [r["state"] for r in rows] == ["accepted"] * 3


async def test_several_deliveries_in_one_poll_and_one_acknowledgement(gw: Gateway) -> None:
    """GET /v1/inbox?max=K hands out up to K deliveries as multipart/mixed, each part with its own tag; POST
    /v1/inbox/ack acknowledges them in one request and names the tags it did not know."""
    import aiohttp
    from harness import document

    from hub.envelope import Recipient

    sent = {(await gw.hub.send(NONGAN, document(NONGAN, [Recipient.to(SYSTEMS[DEHUI])]))).message_id for _ in range(3)}
    http = https_as(gw, DEHUI)
    got: dict[str, str] = {}
    deadline = time.monotonic() + 15
    while len(got) < 3 and time.monotonic() < deadline:
        async with http.get("/v1/inbox", params={"wait": "5", "max": "10"}) as r:
            if r.status == 204:
                continue
            assert r.status == 200 and r.content_type == "multipart/mixed", r.status
            reader = aiohttp.MultipartReader.from_response(r)
            while (part := await reader.next()) is not None:
                assert isinstance(part, aiohttp.BodyPartReader)
                body = bytes(await part.read(decode=False))
                assert part.headers["Content-Type"] == "application/xml"
                opened = gw.hub.inbox(DEHUI).open_delivery(body)  # both signatures verify, part by part
                assert opened.envelope.message_id == part.headers["X-Hub-Message-Id"]
                got[part.headers["X-Hub-Message-Id"]] = part.headers["X-Hub-Delivery-Tag"]
    assert set(got) == sent
    async with http.post("/v1/inbox/ack", json={"tags": [*got.values(), "no-such-tag"]}) as r:
        assert r.status == 200
        answer = await r.json()
    assert sorted(answer["acknowledged"]) == sorted(got.values()) and answer["unknown"] == ["no-such-tag"]
    assert gw.state.mailbox.held(DEHUI) == 0
    for bad in ({"tags": []}, {"tags": "x"}, {"tag": ["x"]}, {"tags": [""]}):
        async with http.post("/v1/inbox/ack", json=bad) as r:
            assert r.status == 400 and (await r.json())["code"] == "GATEWAY_BAD_REQUEST", bad
    deep = b"[" * 5000 + b"]" * 5000  # json.loads raises RecursionError, not ValueError: was a 500
    async with http.post("/v1/inbox/ack", data=deep, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and (await r.json())["code"] == "GATEWAY_BAD_REQUEST"
    # digits that are not decimal ASCII ("²".isdigit() is True, int("²") fails): a 400, not a 500
    for params in ({"wait": "0", "max": "65"}, {"wait": "²"}, {"wait": "0", "max": "①"}, {"wait": "٣"}):
        async with http.get("/v1/inbox", params=params) as r:
            assert r.status == 400 and (await r.json())["code"] == "GATEWAY_BAD_REQUEST", params


async def test_a_delivery_put_off_with_after_comes_back_after_it_not_held(gw: Gateway) -> None:
    """POST /v1/inbox/{tag}/release?after=2: the delivery is no longer in the system's hands (the gateway holds
    nothing for it), no poll hands it out before its 2 s, and the poll after them does, with a new tag; bad values
    of ``after`` are 400 and leave the delivery in hand."""
    from harness import document

    from hub.envelope import Recipient

    mid = (await gw.hub.send(NONGAN, document(NONGAN, [Recipient.to(SYSTEMS[DEHUI])]))).message_id
    http = https_as(gw, DEHUI)

    async def next_delivery(wait: str) -> tuple[str, str] | None:
        async with http.get("/v1/inbox", params={"wait": wait}) as r:
            if r.status == 204:
                return None
            assert r.status == 200, r.status
            await r.read()
            return r.headers["X-Hub-Message-Id"], r.headers["X-Hub-Delivery-Tag"]

    got = await next_delivery("10")
    assert got is not None and got[0] == mid
    tag = got[1]
    for bad in ("0", "301", "abc", "-1", "1.5", "²"):
        async with http.post(f"/v1/inbox/{tag}/release", params={"after": bad}) as r:
            assert r.status == 400 and (await r.json())["code"] == "GATEWAY_BAD_REQUEST", bad
    assert gw.state.mailbox.held(DEHUI) == 1  # still in hand after the refusals
    put_off_at = time.monotonic()
    async with http.post(f"/v1/inbox/{tag}/release", params={"after": "2"}) as r:
        assert r.status == 204, await r.text()
    assert gw.state.mailbox.held(DEHUI) == 0
    async with http.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 404  # settled: its tag is spent
    again = None
    while again is None and time.monotonic() - put_off_at < 15:
        again = await next_delivery("1")
    assert again is not None and again[0] == mid and again[1] != tag
    assert time.monotonic() - put_off_at >= 1.8, "handed out again before its 2 s"
    async with http.post(f"/v1/inbox/{again[1]}/ack") as r:
        assert r.status == 204


PROV_OA = "prov-220000-oa"  # the provincial OA: on AMQP in the test below, used by no other test of this module


async def test_an_adapter_over_https_whose_system_is_on_amqp_is_refused(
    gw: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One link per system (hub.gateway.links): the provincial OA reads its queue over RabbitMQ as its own broker
    user; its adapter over HTTPS is then refused — a send is ``HubRefused`` with ``GATEWAY_LINK_CONFLICT`` and each
    poll logs an ERROR naming it — and the gateway does not read the queue."""
    import logging

    from hub.pipeline.client import connect_as
    from hub.transport.users import consumers_by_queue, provision

    s = gw.hub.settings
    await provision(s, [(PROV_OA, None)])
    own = await connect_as(s, PROV_OA)
    queue = own.names.system_queue(PROV_OA)

    async def untouched(batch: list[Any]) -> None:
        await own.nack(batch, requeue=True)

    consumer = await own.consume(queue, untouched, prefetch=1)
    try:

        async def listed() -> bool:
            return own.names.user(PROV_OA) in (await consumers_by_queue(s)).get(queue, ())

        await until(listed, "RabbitMQ listing the OA's own consumer")
        gw.state.mailbox.guard.forget()  # the next question reads the broker's listing again
        oa = over_https(gw, PROV_OA, tmp_path, gateway_wait=1, reconnect_initial=0.1, reconnect_max=0.3)
        with caplog.at_level(logging.ERROR, logger="adapters.sdk"):
            async with oa:
                with pytest.raises(HubRefused) as refused:
                    await send_document(oa, DEHUI)
                assert refused.value.code == "GATEWAY_LINK_CONFLICT" and refused.value.error is None
                assert "one way" in refused.value.detail
                await until(
                    lambda: [r for r in caplog.records if "GATEWAY_LINK_CONFLICT" in r.getMessage()],
                    "the adapter's ERROR about its polls",
                )
        assert gw.state.mailbox.held(PROV_OA) == 0
        assert not gw.state.mailbox.reading(PROV_OA)
    finally:
        await consumer.stop()
        await own.close()


async def test_an_adapter_behind_the_agencys_proxy(gw: Gateway, tmp_path: Path) -> None:
    """``gateway_proxy``: an agency whose machines reach the outside only through its HTTP proxy. The adapter asks the
    proxy to CONNECT to the gateway and speaks its own mutual TLS inside the tunnel (the proxy sees only encrypted
    bytes); a proxy that wants a login, or forbids the gateway, stops the start with SDK_GATEWAY_PROXY and what to
    do — never the proxy's password."""
    from yarl import URL

    gateway = URL(gw.url)
    async with ConnectProxy(login=("nongan", "s3cret")) as proxy:
        with_login = str(URL(proxy.url).with_user("nongan").with_password("s3cret"))
        dehui = over_https(gw, DEHUI, tmp_path)
        nongan = over_https(gw, NONGAN, tmp_path, gateway_proxy=with_login)
        seen: list[Context] = []

        @dehui.handles("document.official", version=1)
        async def on_document(doc: Any, ctx: Context) -> None:
            seen.append(ctx)

        async with dehui, nongan:
            receipt = await send_document(nongan)
            assert receipt.accepted
            await until(lambda: seen, "the delivery sent through the proxy")
        assert seen[0].message_id == receipt.message_id
        assert proxy.targets and set(proxy.targets) == {f"CONNECT {gateway.host}:{gateway.port}"}

        # without the login: 407, told how to give one
        nologin = over_https(gw, NONGAN, tmp_path / "nologin", gateway_proxy=proxy.url)
        with pytest.raises(ConfigurationError) as caught:
            await nologin.start()
        assert caught.value.code == "SDK_GATEWAY_PROXY" and "asks for a login" in caught.value.detail

    async with ConnectProxy(forbid=True) as proxy:
        forbidden = over_https(gw, NONGAN, tmp_path / "forbidden", gateway_proxy=proxy.url)
        with pytest.raises(ConfigurationError) as caught:
            await forbidden.start()
        assert caught.value.code == "SDK_GATEWAY_PROXY" and "allow CONNECT" in caught.value.detail
        assert "s3cret" not in caught.value.detail

    # a proxy given as anything but http://host:port is refused before anything starts, without echoing it
    with pytest.raises(ConfigurationError, match="gateway_proxy: give the agency's proxy") as bad:
        over_https(gw, NONGAN, tmp_path / "bad", gateway_proxy="socks5://u:s3cret@127.0.0.1:1080")
    assert "s3cret" not in str(bad.value)


async def test_the_self_check_says_what_is_wrong_and_what_to_do(gw: Gateway, tmp_path: Path) -> None:
    """``hub adapter check`` (adapters/sdk/_check.py) over HTTPS: every step passes for an enrolled system; a key
    others can read is a warning; a gateway not reached, a proxy that forbids it and an expired certificate each fail
    at their step with the code and what to do, and nothing after a failed step is tried."""
    import os
    import socket

    from gateway_certs import client_certificate

    from adapters.sdk._check import check

    adapter = over_https(gw, NONGAN, tmp_path)
    settings = adapter.settings
    assert settings is not None
    found = await check(settings)
    assert [(f.step, f.ok, f.warning) for f in found] == [
        ("入网目录 enrolment directory", True, False),
        ("证书 certificate", True, False),
        ("HTTPS 网关 gateway", True, False),
        ("已处理记录 store", True, False),
    ], [f.line() for f in found]
    assert f"it takes {NONGAN}'s certificate" in found[2].text and "valid until" in found[1].text

    os.chmod(settings.key_path, 0o644)
    found = await check(settings)
    assert found[0].ok and found[0].warning and found[0].code == "SDK_KEY_PERMISSIONS"
    assert found[0].line().startswith("! 入网目录")
    os.chmod(settings.key_path, 0o600)

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{s.getsockname()[1]}"
    found = await check(over_https(gw, NONGAN, tmp_path / "closed", url=closed).settings)  # type: ignore[arg-type]
    assert (found[-2].ok, found[-2].code) == (False, "SDK_GATEWAY_UNREACHABLE") and "网关不通" in found[-2].text

    async with ConnectProxy(forbid=True) as proxy:
        forbidden = over_https(gw, NONGAN, tmp_path / "forbidden", gateway_proxy=proxy.url).settings
        found = await check(forbidden)  # type: ignore[arg-type]
    assert (found[2].ok, found[2].code) == (False, "SDK_GATEWAY_PROXY") and "allow CONNECT" in found[2].text

    c, k, _ = client_certificate(gw.pki_dir, gw.hub.settings.ca_passphrase, SYSTEMS[NONGAN], NONGAN, tmp_path, days=-2)
    expired = over_https(gw, NONGAN, tmp_path / "expired").settings
    assert expired is not None
    expired.cert_path.write_bytes(c.read_bytes())
    expired.key_path.write_bytes(k.read_bytes())
    found = await check(expired)
    assert [f.step for f in found] == ["入网目录 enrolment directory", "证书 certificate"]  # nothing after it
    assert (found[1].ok, found[1].code) == (False, "CERT_EXPIRED") and "证书已过期" in found[1].text
    assert found[1].line().startswith("✘ 证书 certificate:")


async def test_document_tracking_through_the_adapter_over_https(gw: Gateway, tmp_path: Path) -> None:
    """发文跟踪 in the SDK (adapters.sdk._tracking): an adapter over the gateway reads what its system sent and where
    each recipient's copy stands — one message with the hub's answers (``message_state``), the list a page at a time
    (``sent_messages``; a page of one follows every ``next``), only what is not yet signed for, a window longer than
    the gateway's 31 days read in parts, and arguments refused before anything is read."""
    import datetime as dt
    import uuid

    from adapters.sdk import NOT_SIGNED_FOR
    from hub.store.messages import update_delivery_states
    from hub.store.records import DeliveryUpdate

    nongan = over_https(gw, NONGAN, tmp_path)
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    async with nongan:
        first, second = await send_document(nongan), await send_document(nongan)
        await update_delivery_states(gw.hub.pool, [DeliveryUpdate(first.message_id, DEHUI, "received")])

        state = await nongan.message_state(first.message_id)
        assert state is not None and state.message_id == first.message_id and state.state == "accepted"
        assert state.service == "document.official/1" and state.received_at >= before
        [copy] = state.deliveries
        assert (copy.system, copy.agency, copy.role, copy.state) == (DEHUI, SYSTEMS[DEHUI], "to", "received")
        assert copy.signed_for and copy.label == "已签收 signed for" and copy.times["received"] >= before
        assert state.answers is not None and [(a.kind, a.system) for a in state.answers] == [("hub.receipt", NONGAN)]
        assert state.answers[0].receipt_id == first.receipt_id and not state.not_signed_for
        assert await nongan.message_state(str(uuid.uuid4())) is None  # nobody's: None, not an error

        since = state.received_at  # not before: the module's earlier tests sent from 农安 a moment ago
        listed = [m async for m in nongan.sent_messages(since=since, page=1)]
        assert [m.message_id for m in listed] == [first.message_id, second.message_id]
        assert all(m.answers is None for m in listed)

        waiting = [m async for m in nongan.sent_messages(since=since, delivery=NOT_SIGNED_FOR)]
        assert [m.message_id for m in waiting] == [second.message_id]
        assert [(d.system, d.state, d.label) for d in waiting[0].not_signed_for] == [
            (DEHUI, "delivered", "已送达未签收 delivered")
        ]

        # by service: the 公文 alone (both are); a name the hub does not know is the gateway's refusal
        documents = [m.message_id async for m in nongan.sent_messages(since=since, service=["document.official"])]
        assert documents == [first.message_id, second.message_id]
        assert [m async for m in nongan.sent_messages(since=since, service="info.report")] == []
        with pytest.raises(HubRefused) as unknown:
            [m async for m in nongan.sent_messages(since=since, service=["document.officail"])]
        assert unknown.value.code == "GATEWAY_BAD_REQUEST" and "document.officail" in unknown.value.reason

        # 40 days: the gateway takes at most 31 a request, so this passes only when read in parts
        now = dt.datetime.now(dt.UTC)
        long = [m.message_id async for m in nongan.sent_messages(since=now - dt.timedelta(days=40), until=now)]
        assert long[-2:] == [first.message_id, second.message_id] and len(long) == len(set(long))

        for bad in (
            {"delivery": ["signed"]},
            {"page": 0},
            {"page": 201},
            {"since": dt.datetime(2026, 12, 1)},
            {"since": now, "until": now - dt.timedelta(hours=1)},
            {"service": ["Document Official"]},
            {"service": []},
        ):
            with pytest.raises(ValueError):
                nongan.sent_messages(**bad)  # type: ignore[arg-type]


async def test_document_tracking_of_an_adapter_on_rabbitmq(gw: Gateway, tmp_path: Path) -> None:
    """An adapter on RabbitMQ reads its 发文跟踪 from the gateway named by ``tracking_url``, with its enrolment key and
    certificate, keeping its AMQP link; ``hub adapter sent`` shows the same to the agency's administrator without the
    adapter; without tracking_url the adapter says what to set (SDK_TRACKING_UNSET)."""
    import os
    import subprocess
    import sys

    from adapters.sdk import Tracking
    from adapters.sdk.testing import enrolled_home
    from hub.settings import PROJECT_ROOT

    portal_home = await enrolled_home(gw.hub.settings, PORTAL, PROVINCE, tmp_path / "portal")
    tunables = {"request_timeout": 20.0, "reconnect_initial": 0.2}
    on_amqp = Adapter(PORTAL, AdapterSettings(system=PORTAL, home=portal_home, **tunables))  # type: ignore[arg-type]
    tracked = Adapter(
        PORTAL,
        AdapterSettings(system=PORTAL, home=portal_home, tracking_url=gw.url, **tunables),  # type: ignore[arg-type]
    )
    async with on_amqp:
        receipt = await on_amqp.send(
            sample_body("approval.application"), service="approval.application", version=1, to=[to(PROVINCE, APPROVAL)]
        )
        with pytest.raises(ConfigurationError) as unset:
            await on_amqp.message_state(receipt.message_id)
        assert unset.value.code == "SDK_TRACKING_UNSET" and "tracking_url" in unset.value.detail
    assert not gw.state.mailbox.reading(PORTAL)  # the send went over RabbitMQ

    async with tracked:
        state = await tracked.message_state(receipt.message_id)
        assert state is not None and [(d.system, d.state) for d in state.deliveries] == [(APPROVAL, "delivered")]
        assert [m.message_id async for m in tracked.sent_messages()] == [receipt.message_id]
    assert not gw.state.mailbox.reading(PORTAL)  # reading the tracking did not make the gateway take its queue

    from adapters.sdk._check import check

    found = await check(tracked.settings)  # type: ignore[arg-type]
    assert [(f.step, f.ok) for f in found][-3:] == [
        ("消息中间件 broker", True),
        ("发文跟踪 tracking", True),
        ("已处理记录 store", True),
    ], [f.line() for f in found]

    async with Tracking.open(tracked.settings) as tracking:  # type: ignore[arg-type]
        assert [m.message_id async for m in tracking.sent_messages(delivery=["delivered"])] == [receipt.message_id]

    config = tmp_path / "portal.toml"
    config.write_text(f'system = "{PORTAL}"\nhome = "{portal_home}"\ntracking_url = "{gw.url}"\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}

    def sent(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hub.cli", "adapter", "sent", "--config", str(config), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    def in_thread(*args: str) -> Any:
        return asyncio.to_thread(sent, *args)

    listing = await in_thread("--pending", "--service", "approval.application")
    assert listing.returncode == 0, listing.stderr
    assert receipt.message_id in listing.stdout and f"主送 to  {APPROVAL}" in listing.stdout
    assert "已送达未签收 delivered" in listing.stdout and "共 1 件，其中 1 件尚有收件方未签收" in listing.stdout
    one = await in_thread("--id", receipt.message_id)
    assert one.returncode == 0 and "枢纽回执 receipt" in one.stdout and "已受理 accepted" in one.stdout, one.stderr
    other = await in_thread("--service", "document.official")
    assert other.returncode == 0 and "共 0 件" in other.stdout, other.stderr
    bad = await in_thread("--service", "not a service")
    assert bad.returncode == 1 and "ADAPTER_TRACKING" in bad.stderr and "INTERNAL" not in bad.stderr
    for refused in (
        ("--days", "2", "--since", "2026-12-01T00:00:00+08:00"),  # the two exclude each other
        ("--until", "0001-01-01T12:00:00Z"),  # no window of a day fits before it
        ("--since", "0001-01-02T00:00:00Z", "--until", "0001-01-03T00:00:00Z"),  # outside the years 2 to 9998
        ("--id", " "),
    ):
        answer = await in_thread(*refused)
        assert answer.returncode == 1 and "ADAPTER_TRACKING" in answer.stderr, (refused, answer.stderr)
        assert "INTERNAL" not in answer.stderr and "Traceback" not in answer.stderr, answer.stderr
    missing = await in_thread("--id", "00000000-0000-4000-8000-000000000001")
    assert missing.returncode == 1 and "没有本系统发出的报文" in missing.stdout
    config.write_text(f'system = "{PORTAL}"\nhome = "{portal_home}"\n', encoding="utf-8")
    unset_cli = await in_thread()
    assert unset_cli.returncode == 2 and "ADAPTER_TRACKING" in unset_cli.stderr
    assert "SDK_TRACKING_UNSET" in unset_cli.stderr
    # A gateway that does not answer: the command gives up after --timeout (the settings' request_timeout is 30 s)
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config.write_text(
        f'system = "{PORTAL}"\nhome = "{portal_home}"\ntracking_url = "https://127.0.0.1:{port}"\n', encoding="utf-8"
    )
    asked = time.monotonic()
    down = await in_thread("--timeout", "2")
    assert time.monotonic() - asked < 25, "--timeout was not what bounded the wait"
    assert down.returncode == 1 and "ADAPTER_TRACKING" in down.stderr and "INTERNAL" not in down.stderr, down.stderr

    # Something that is not a TLS server where the gateway should be: configuration (exit 2), not a refusal
    async def not_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    plain = await asyncio.start_server(not_tls, "127.0.0.1", 0)
    async with plain:
        port = plain.sockets[0].getsockname()[1]
        config.write_text(
            f'system = "{PORTAL}"\nhome = "{portal_home}"\ntracking_url = "https://127.0.0.1:{port}"\n',
            encoding="utf-8",
        )
        wrong = await in_thread("--timeout", "2")
    assert wrong.returncode == 2 and "ADAPTER_TRACKING" in wrong.stderr and "SDK_GATEWAY_TLS" in wrong.stderr, (
        wrong.stderr
    )
