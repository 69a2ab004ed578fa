"""The HTTPS gateway against the real hub (RabbitMQ, PostgreSQL, the in-process worker): a real HTTPS client with
client certificates of the hub CA submits signed envelopes, gets the hub's signed answers, long-polls, acknowledges;
refusals without a certificate, with a revoked one, with one of another system than the signed sender, over the size
limit; the visibility timeout and a client that goes away mid-poll; a system that reads its queue over RabbitMQ too,
and a gateway that cannot ask RabbitMQ's management API about it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from directory_edits import with_system
from gateway_certs import client_certificate, client_ssl_context, revoke
from gateway_client import XML, Gateway, post, running_gateway
from harness import SYSTEMS, Hub, document
from store_faults import StoreDownOnce

from hub.envelope import Recipient
from hub.gateway import STATE, GatewaySettings, start_gateway
from hub.settings import Settings

pytestmark = pytest.mark.integration

SENDER = "county-220122-oa"  # 农安
RECIPIENT = "county-220183-oa"  # 德惠
OTHER = "county-220182-oa"  # 榆树
DEHUI = SYSTEMS[RECIPIENT]
VISIBILITY_S = 1.5
LINK_CHECK_S = 0.5


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    # An installation of this module's own: a database, a state directory (PKI) and a namespace.
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "gw") as settings:
        yield settings


@pytest.fixture(scope="module")
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()
    clients = {s: SYSTEMS[s] for s in (SENDER, RECIPIENT, OTHER)}
    try:
        async with running_gateway(
            hub, clients, visibility_timeout_s=VISIBILITY_S, answer_timeout_s=20, link_check_s=LINK_CHECK_S
        ) as g:
            yield g
    finally:
        await hub.close()


def signed(gw: Gateway, sender: str, recipients: list[Recipient], **kw: Any) -> bytes:
    return gw.hub.sign(sender, document(sender, recipients, **kw))


async def test_submit_poll_ack_and_state(gw: Gateway) -> None:
    sender, recipient = gw.session(SENDER), gw.session(RECIPIENT)
    data = signed(gw, SENDER, [Recipient.to(DEHUI)])
    status, headers, body = await post(sender, data)
    assert status == 202, body
    assert headers["X-Hub-Outcome"] == "accepted" and headers["Content-Type"] == "application/xml"
    receipt = gw.hub.inbox(SENDER).open(body)  # the hub's signature verifies
    assert receipt.sender.system == "hub" and receipt.ref_to == headers["X-Hub-Message-Id"]
    mid = headers["X-Hub-Message-Id"]

    async with recipient.get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200
        tag, delivered = r.headers["X-Hub-Delivery-Tag"], await r.read()
        assert r.headers["X-Hub-Message-Id"] == mid and r.headers["X-Hub-Kind"] == "delivery"
    opened = gw.hub.inbox(RECIPIENT).open_delivery(delivered)  # the hub's and the sender's signatures
    assert opened.envelope.message_id == mid and opened.originator.system == SENDER
    async with recipient.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 204
    async with recipient.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 404 and (await r.json())["code"] == "GATEWAY_NOT_FOUND"
    async with recipient.get("/v1/inbox", params={"wait": "0"}) as r:
        assert r.status == 204

    async with sender.get(f"/v1/messages/{mid}") as r:
        assert r.status == 200
        state = await r.json()
    assert state["state"] == "accepted" and state["service"] == "document.official/1"
    assert [(d["recipient_system"], d["state"]) for d in state["deliveries"]] == [(RECIPIENT, "delivered")]
    assert [x["kind"] for x in state["receipts"]] == ["hub.receipt"]
    for who, what in ((recipient, mid), (sender, str(uuid.uuid4())), (sender, "not-a-uuid")):
        async with who.get(f"/v1/messages/{what}") as r:
            assert r.status == 404 and (await r.json())["code"] == "GATEWAY_NOT_FOUND"

    # the same message again: the hub's signed "duplicate" receipt
    status, headers, body = await post(sender, data)
    assert status == 409 and headers["X-Hub-Outcome"] == "duplicate" and headers["X-Hub-Code"] == "MSG_DUPLICATE"
    assert gw.hub.inbox(SENDER).open(body).sender.system == "hub"


async def test_the_messages_a_system_sent_page_by_page_with_their_deliveries(gw: Gateway) -> None:
    """GET /v1/messages: the window's messages of the calling system only, oldest first, a page at a time with a
    cursor, each with its deliveries; ``delivery=`` keeps those with a delivery in the states listed (发文跟踪: who has
    not signed for it yet), ``service=`` those of the services named; every bad parameter is a 400
    GATEWAY_BAD_REQUEST that says what is wrong."""
    import datetime as dt

    from hub.store.messages import update_delivery_states
    from hub.store.records import DeliveryUpdate

    other, recipient = gw.session(OTHER), gw.session(RECIPIENT)
    since = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
    sent = []
    for _ in range(3):
        status, headers, body = await post(other, signed(gw, OTHER, [Recipient.to(DEHUI)]))
        assert status == 202, body
        sent.append(headers["X-Hub-Message-Id"])
    window = {"since": since.isoformat()}
    received = set()
    for _ in sent:  # the recipient takes them (the module's later tests read its inbox)
        async with recipient.get("/v1/inbox", params={"wait": "10"}) as r:
            assert r.status == 200
            received.add(r.headers["X-Hub-Message-Id"])
            tag = r.headers["X-Hub-Delivery-Tag"]
        async with recipient.post(f"/v1/inbox/{tag}/ack") as r:
            assert r.status == 204
    assert received == set(sent)

    pages: list[dict[str, Any]] = []
    params: dict[str, str] = {**window, "limit": "2"}
    while True:
        async with other.get("/v1/messages", params=params) as r:
            assert r.status == 200, await r.text()
            pages.append(await r.json())
        if pages[-1]["next"] is None:
            break
        params = {**window, "limit": "2", "after": pages[-1]["next"]}
    assert [len(p["messages"]) for p in pages] == [2, 1]
    listed = [m for p in pages for m in p["messages"]]
    assert [m["message_id"] for m in listed] == sent  # oldest first, each once
    assert all(m["state"] == "accepted" and m["service"] == "document.official/1" for m in listed)
    assert {(d["recipient_system"], d["state"]) for m in listed for d in m["deliveries"]} == {(RECIPIENT, "delivered")}
    assert dt.datetime.fromisoformat(pages[0]["since"]) == since

    # the recipient signs for (签收) the first one: only the other two are still not signed for
    await update_delivery_states(gw.hub.pool, [DeliveryUpdate(sent[0], RECIPIENT, "received")])
    async with other.get("/v1/messages", params={**window, "delivery": "pending,failed,delivered"}) as r:
        assert [m["message_id"] for m in (await r.json())["messages"]] == sent[1:]
    async with other.get("/v1/messages", params={**window, "delivery": "received"}) as r:
        only = (await r.json())["messages"]
    assert [m["message_id"] for m in only] == sent[:1] and "received" in only[0]["deliveries"][0]["times"]
    # by service: the 公文 are document.official; none of them is an info.report
    async with other.get("/v1/messages", params={**window, "service": "document.official, info.report"}) as r:
        assert [m["message_id"] for m in (await r.json())["messages"]] == sent
    async with other.get("/v1/messages", params={**window, "service": "info.report"}) as r:
        assert r.status == 200 and (await r.json())["messages"] == []
    # another system's view of the same window holds none of them
    async with recipient.get("/v1/messages", params=window) as r:
        assert r.status == 200 and not {m["message_id"] for m in (await r.json())["messages"]} & set(sent)

    # what is wrong, said
    for bad, says in (
        ({"since": "2026-12-06T08:00:00"}, "with its offset"),
        ({"since": "0001-01-01T00:00:00+14:00", "until": "0001-01-02T00:00:00+14:00"}, "outside 0001–9999 in UTC"),
        ({"since": "2026-12-06T08:00:00 08:00"}, "%2B"),  # a + sent unencoded arrives as a space
        ({"since": "2026-10-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, "at most 31 days"),
        ({"since": "2026-12-06T00:00:00Z", "until": "2026-12-05T00:00:00Z"}, "before until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "²"}, "limit"),
        ({"delivery": "signed"}, "'signed' is not one"),
        ({"delivery": ","}, "delivery lists"),
        ({"after": "not-a-cursor"}, "next value"),
        ({"service": "document.officail"}, "'document.officail' is not a service of this hub"),
        ({"service": ","}, "service lists 1 to 16"),
        ({"service": ",".join(["document.official"] * 17)}, "service lists 1 to 16"),
    ):
        async with other.get("/v1/messages", params=bad) as r:
            body = await r.json()
            assert r.status == 400 and body["code"] == "GATEWAY_BAD_REQUEST" and says in body["detail"], (bad, body)


async def test_a_resent_quarantined_submission_is_told_it_is_held_again(gw: Gateway) -> None:
    """The first answer (202 quarantined) lost on the way, the client sends the same bytes again: a hub-signed
    quarantined receipt again, not the JSON 409 MSG_DUPLICATE the SDK turned into a refusal of a message the hub still
    holds (an operator may release it). Nothing is delivered either time."""
    root = document(SENDER, [Recipient.to(DEHUI)])
    ns = "urn:forestry-hub:document.official:1"
    paragraph = root.find(f".//{{{ns}}}Paragraph")
    assert paragraph is not None
    paragraph.text = "秘密★5年 附件所列火场坐标不得外传。"
    data = gw.hub.sign(SENDER, root)
    sender = gw.session(SENDER)
    first = await post(sender, data)
    again = await post(sender, data)
    for status, headers, body in (first, again):
        assert (status, headers.get("X-Hub-Outcome")) == (202, "quarantined"), (status, headers, body[:200])
        assert headers["Content-Type"].startswith("application/xml")
        receipt = gw.hub.inbox(SENDER).open(body)
        assert receipt.sender.system == "hub" and receipt.service == "hub.receipt"
    assert await gw.hub.drain(RECIPIENT, timeout=1) == []


async def test_refused_by_the_hub_with_its_signed_error(gw: Gateway) -> None:
    sender = gw.session(SENDER)
    unknown = signed(gw, SENDER, [Recipient.to("11220300013700183Y", "city-220300-nope")])
    status, headers, body = await post(sender, unknown)
    assert (status, headers["X-Hub-Code"]) == (403, "ROUTE_UNKNOWN_RECIPIENT")
    error = gw.hub.inbox(SENDER).open(body)
    assert error.sender.system == "hub" and error.service == "hub.error"

    # signed by 农安, presented with 榆树's certificate: the processor's CERT_SIGNER_MISMATCH, answered to 榆树
    status, headers, body = await post(gw.session(OTHER), signed(gw, SENDER, [Recipient.to(DEHUI)]))
    assert (status, headers["X-Hub-Code"]) == (403, "CERT_SIGNER_MISMATCH"), body

    # not XML at all still goes to the hub, which refuses it with its code
    status, headers, body = await post(sender, b"this is not an envelope")
    assert (status, headers["X-Hub-Code"]) == (400, "ENV_MALFORMED"), body


async def test_refused_by_the_gateway(gw: Gateway, settings: Settings, tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    def refusals(system: str, code: str) -> float:  # hub_gateway_refusals_total: what the ops overview lists
        return REGISTRY.get_sample_value("hub_gateway_refusals_total", {"system": system, "code": code}) or 0.0

    from hub.store import gateway_activity

    async def stored() -> dict[tuple[str, str], int]:  # what every gateway wrote: the ops overview's 网关拒绝 rows
        return {(r.system, r.code): r.hour for r in await gateway_activity.refusals(gw.hub.pool, limit=1000)}

    ghost = "county-220199-ghost"
    stored_before = await stored()
    counted = [("-", "GATEWAY_NO_CERTIFICATE"), (SENDER, "GATEWAY_BAD_REQUEST"), (ghost, "GATEWAY_UNKNOWN_SYSTEM")]
    counted += [(SENDER, "CERT_REVOKED"), (SENDER, "GATEWAY_METHOD"), (SENDER, "GATEWAY_MEDIA_TYPE")]
    before = {k: refusals(*k) for k in counted}
    data = signed(gw, SENDER, [Recipient.to(DEHUI)])
    # no client certificate: 401 as JSON, nothing published
    async with gw.session(None).post("/v1/messages", data=data, headers=XML) as r:
        assert r.status == 401 and r.headers["X-Hub-Code"] == "GATEWAY_NO_CERTIFICATE"
        body = await r.json()
        assert set(body) == {"code", "title", "detail"} and body["title"] == "未提供客户端证书"
    # not XML
    async with gw.session(SENDER).post("/v1/messages", data=data, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 415
    async with gw.session(SENDER).get("/v1/inbox", params={"wait": "31"}) as r:
        assert r.status == 400 and (await r.json())["code"] == "GATEWAY_BAD_REQUEST"
    async with gw.session(SENDER).head("/v1/inbox") as r:  # a HEAD poll would hand out a delivery unseen
        assert r.status == 405 and r.headers["X-Hub-Code"] == "GATEWAY_METHOD" and r.headers["Allow"] == "GET"
    # the document is public
    async with gw.session(None).get("/openapi.json") as r:
        assert r.status == 200 and (await r.json())["openapi"] == "3.1.0"

    # a certificate of a system that is not in the directory
    pki_dir = settings.state_dir / "pki"
    c, k, _ = client_certificate(pki_dir, settings.ca_passphrase, SYSTEMS[SENDER], ghost, tmp_path)
    gw.certs["ghost"] = (c, k)
    async with gw.session("ghost").get("/v1/inbox") as r:
        assert r.status == 403 and (await r.json())["code"] == "GATEWAY_UNKNOWN_SYSTEM"

    # a revoked certificate
    c, k, serial = client_certificate(pki_dir, settings.ca_passphrase, SYSTEMS[SENDER], SENDER, tmp_path)
    gw.certs["revoked"] = (c, k)
    revoke(pki_dir, settings.ca_passphrase, serial)
    gw.state.identifier.store.refresh()
    async with gw.session("revoked").post("/v1/messages", data=data, headers=XML) as r:
        assert r.status == 403 and (await r.json())["code"] == "CERT_REVOKED"
    async with gw.session(SENDER).get("/v1/inbox") as r:  # the system's other certificate still works
        assert r.status == 204
    # each refusal counted by the system its certificate was issued to (even a revoked one, or one the directory
    # does not know), for the people on duty: the ops overview's 网关拒绝 rows
    assert {k: refusals(*k) - before[k] for k in counted} == {
        ("-", "GATEWAY_NO_CERTIFICATE"): 1,
        (SENDER, "GATEWAY_BAD_REQUEST"): 1,
        (ghost, "GATEWAY_UNKNOWN_SYSTEM"): 1,
        (SENDER, "CERT_REVOKED"): 1,
        (SENDER, "GATEWAY_METHOD"): 1,
        (SENDER, "GATEWAY_MEDIA_TYPE"): 1,
    }

    # and written to the store by the gateway's own task within a few seconds, for the ops page on any machine
    async def written() -> dict[tuple[str, str], int] | None:
        now = await stored()
        delta = {k: now.get(k, 0) - stored_before.get(k, 0) for k in counted}
        return delta if all(delta.values()) else None

    from harness import until

    assert await until(written, "the gateway's refusals in the store", timeout=20) == dict.fromkeys(counted, 1)


async def test_too_large_is_refused_before_the_body_is_read(gw: Gateway, settings: Settings) -> None:
    cert, key = gw.certs[SENDER]
    ctx = client_ssl_context(gw.pki_dir, cert, key)
    port = gw.runner.addresses[0][1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    size = settings.max_message_bytes + 1
    writer.write(
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/xml\r\nContent-Length: {size}"
        "\r\n\r\n".encode()
    )
    await writer.drain()
    started = time.monotonic()
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        rest = await reader.read()  # the server closes the connection: the body is never read
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"ENV_TOO_LARGE" in rest and time.monotonic() - started < 2
    writer.close()

    # a client that asks first (Expect: 100-continue, as curl does) is told 413 instead of "continue"
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    for length, expected in ((size, b"HTTP/1.1 413"), (10, b"HTTP/1.1 100 Continue")):
        writer.write(
            f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/xml\r\n"
            f"Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(expected), head
        if expected.endswith(b"413"):
            await reader.read()
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.close()


async def test_visibility_timeout_and_a_client_gone_mid_poll(gw: Gateway) -> None:
    sender, recipient = gw.session(SENDER), gw.session(RECIPIENT)
    status, headers, _ = await post(sender, signed(gw, SENDER, [Recipient.to(DEHUI)]))
    assert status == 202
    mid = headers["X-Hub-Message-Id"]
    async with recipient.get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == mid
        first = r.headers["X-Hub-Delivery-Tag"]
    # not acknowledged: after the visibility timeout it comes back, under a new tag
    async with recipient.get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == mid
        second = r.headers["X-Hub-Delivery-Tag"]
    assert second != first
    async with recipient.post(f"/v1/inbox/{first}/ack") as r:
        assert r.status == 404  # the first hand-out went back
    async with recipient.post(f"/v1/inbox/{second}/ack") as r:
        assert r.status == 204

    # a poll whose client goes away holds nothing: the next message goes to the next poll at once
    cert, key = gw.certs[RECIPIENT]
    port = gw.runner.addresses[0][1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ssl_context(gw.pki_dir, cert, key))
    writer.write(b"GET /v1/inbox?wait=20 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    await asyncio.sleep(0.3)
    status, headers, _ = await post(sender, signed(gw, SENDER, [Recipient.to(DEHUI)]))
    assert status == 202
    started = time.monotonic()
    async with recipient.get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == headers["X-Hub-Message-Id"]
        tag = r.headers["X-Hub-Delivery-Tag"]
    assert time.monotonic() - started < VISIBILITY_S
    async with recipient.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 204


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until_serving(gw: Gateway, url: str, proc: Any, timeout: float = 30.0) -> None:
    ctx = client_ssl_context(gw.pki_dir)
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the process exited"
            try:
                async with s.get(f"{url}/openapi.json") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"nothing served at {url} within {timeout} s")


def _gateway_samples(settings: Settings, name: str, port: int | None = None, **labels: str) -> list[float]:
    """The values of ``name`` with ``labels`` in what the ops page of this machine exposes (monitoring.metrics), or
    with ``port`` in the files of the gateway started on its own on that port alone (not this test process's)."""
    from hub.metrics_files import gateway_metrics_dir
    from monitoring.metrics import _merged, collect

    families = collect(settings) if port is None else _merged(gateway_metrics_dir(settings, port), "*.db")
    return [
        s.value
        for fam in families
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


async def test_hub_gateway_and_hub_run_gateway_commands(gw: Gateway, settings: Settings, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    # `hub gateway`: serves until SIGTERM, then exits 0; SIGHUP (systemctl reload) reads a renewed server
    # certificate at once (the periodic look is off here: HUB_GATEWAY_CERT_CHECK_S=0)
    from gateway_certs import presented_serial

    from hub.commands import trust_admin as admin

    port = _free_port()
    log = tmp_path / "gateway.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "gateway", "--port", str(port)],
            env={**settings.to_env(), "HUB_GATEWAY_CERT_CHECK_S": "0"},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        await asyncio.sleep(1.0)  # starting (its examiners): a reload signal now must not end it
        proc.send_signal(signal.SIGHUP)
        await _until_serving(gw, f"https://127.0.0.1:{port}", proc)
        ctx = client_ssl_context(gw.pki_dir, *gw.certs[SENDER])
        before = await presented_serial("127.0.0.1", port, ctx)
        issued = await admin.issue_server(
            settings,
            settings.state_dir / "pki",
            ["127.0.0.1", "localhost"],
            out_dir=settings.state_dir / "pki" / "gateway",
        )
        await asyncio.sleep(0.5)
        assert await presented_serial("127.0.0.1", port, ctx) == before  # no look without the signal
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while await presented_serial("127.0.0.1", port, ctx) != issued.certificate.serial_number:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        assert f"server certificate {issued.serial}" in log.read_text()
        # Its metrics reach the ops page of this machine (they stayed in the process, where nothing served them):
        # its heartbeat, and the requests it answered
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            async with http.get(f"https://127.0.0.1:{port}/openapi.json") as r:
                assert r.status == 200
        beats = _gateway_samples(settings, "hub_process_heartbeat_timestamp_seconds", pid=str(proc.pid))
        assert beats and all(v > 0 for v in beats), beats
        deadline = time.monotonic() + 10
        while not _gateway_samples(
            settings, "hub_gateway_requests_total", port, endpoint="/openapi.json", status="200"
        ):
            assert time.monotonic() < deadline, "the standalone gateway's request count is not in the ops metrics"
            await asyncio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()
    # stopped: its live-only gauges are gone from its directory (stopped_standalone), its counters stay there; the
    # ops page no longer reads the directory of a gateway that does not run
    assert not _gateway_samples(settings, "hub_process_heartbeat_timestamp_seconds", port, pid=str(proc.pid))
    assert not _gateway_samples(settings, "hub_process_heartbeat_timestamp_seconds", pid=str(proc.pid))
    assert _gateway_samples(settings, "hub_gateway_requests_total", port, endpoint="/openapi.json", status="200")

    # `hub run --gateway`: the workers and the gateway under one supervisor; a submission over it is answered
    city = "city-220100-oa"
    c, k, _ = client_certificate(gw.pki_dir, settings.ca_passphrase, SYSTEMS[city], city, tmp_path)
    gw.certs[city] = (c, k)
    port = _free_port()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            # with one examiner process (hub.gateway.examiners) under the gateway, which stops it on SIGTERM
            [
                *(sys.executable, "-m", "hub.cli", "run", "--workers", "1"),
                *("--gateway", "--gateway-port", str(port), "--gateway-examiners", "1"),
            ],
            env=settings.to_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        url = f"https://127.0.0.1:{port}"
        await asyncio.sleep(1.0)  # its processes starting: a reload passed on to them now must not end any
        proc.send_signal(signal.SIGHUP)
        await _until_serving(gw, url, proc)
        # systemctl reload forestry-hub: the supervisor passes SIGHUP on; the gateway reads its certificate (nothing
        # changed), the workers ignore it, nothing stops
        said = log.read_text().count("are as they were: nothing to read")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while log.read_text().count("are as they were: nothing to read") <= said:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        ctx = client_ssl_context(gw.pki_dir, c, k)
        async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(ssl=ctx)) as s:
            status, _headers, body = await post(s, signed(gw, city, [Recipient.to(DEHUI)]))
        assert status == 202, body
        assert "exited with" not in log.read_text()  # no worker or gateway restarted by the supervisor
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0, log.read_text()
    assert "gateway examiner 0 running" in log.read_text()


async def test_slow_clients_and_limits(gw: Gateway, settings: Settings) -> None:
    """A second gateway on the same hub with short timeouts and tight limits."""
    config = GatewaySettings.for_state(
        settings.state_dir, port=0, header_timeout_s=1.0, body_timeout_s=1.0, default_rate=2.0, default_concurrency=1
    )
    runner = await start_gateway(settings, config)
    try:
        port = runner.addresses[0][1]
        cert, key = gw.certs[SENDER]
        ctx = client_ssl_context(gw.pki_dir, cert, key)

        from prometheus_client import REGISTRY

        def timeouts() -> float:
            labels = {"system": "-", "code": "TLS_HANDSHAKE_TIMEOUT"}
            return REGISTRY.get_sample_value("hub_gateway_refusals_total", labels) or 0.0

        before = timeouts()
        # closed after the header timeout: a TLS handshake that never comes or never ends (a slow loris before TLS;
        # not asyncio's default of 60 s), and headers that never end
        for tls, start in (
            (None, b""),  # nothing at all
            (None, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),  # half a ClientHello
            (ctx, b"GET /v1/inbox HTTP/1.1\r\nHost: 127.0"),  # half the headers
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
            writer.write(start)
            await writer.drain()
            started = time.monotonic()
            async with asyncio.timeout(5):
                assert await reader.read() == b""
            assert time.monotonic() - started < 3
            writer.close()
        assert timeouts() - before == 2  # the two handshakes never finished: refusals the people on duty see

        # a body that never arrives: 408 after the body timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/xml\r\n"
            b"Content-Length: 1000\r\n\r\n<env:Envelope"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"GATEWAY_READ_TIMEOUT" in head, head
        writer.close()

        # the rate (2 a second, a burst of 2) and the cap (1 at once), per system
        async with aiohttp.ClientSession(f"https://127.0.0.1:{port}", connector=aiohttp.TCPConnector(ssl=ctx)) as s:
            poll = asyncio.create_task(s.get("/v1/inbox", params={"wait": "2"}))
            await asyncio.sleep(0.3)
            async with s.get("/v1/inbox") as r:
                assert r.status == 429 and r.headers["X-Hub-Code"] == "GATEWAY_CONCURRENCY"
                assert r.headers["Retry-After"] == "1"
            async with s.get("/v1/inbox") as r:
                assert r.status == 429 and r.headers["X-Hub-Code"] == "GATEWAY_RATE_LIMITED"
                assert int(r.headers["Retry-After"]) >= 1 and (await r.json())["title"] == "请求频率超过该系统的上限"
            (await poll).release()
    finally:
        await runner.cleanup()


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in KB (VmRSS: now, VmHWM: the peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


async def test_a_compressed_body_is_held_to_the_size_limit(gw: Gateway, settings: Settings) -> None:
    """A submission sent gzip-compressed (Content-Encoding) is decompressed as it is read and held to the message size
    limit decompressed: 100 MB of zeros in about 100 KB (a "zip bomb") is 413 ENV_TOO_LARGE, not 100 MB in memory."""
    import gzip

    bomb = gzip.compress(b"\0" * (100 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < settings.max_message_bytes  # under the limit as sent: Content-Length does not stop it
    # the gateway runs in this process: its peak resident set (VmHWM), reset to the current one first (clear_refs 5),
    # so the assertion sees this request's peak, not whatever the test run peaked at before
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    async with gw.session(SENDER).post(
        "/v1/messages", data=bomb, headers={"Content-Type": "application/xml", "Content-Encoding": "gzip"}
    ) as r:
        assert r.status == 413 and r.headers["X-Hub-Code"] == "ENV_TOO_LARGE", (r.status, await r.text())
    grown_kb = _status_kb("VmHWM") - before
    assert grown_kb < 64 * 1024, f"the gateway's process grew {grown_kb} KB for a compressed body"


async def test_a_stopping_gateway_drains_before_it_closes(gw: Gateway, settings: Settings) -> None:
    """With ``drain_s``, a gateway told to stop answers GET /ready 503 GATEWAY_READY_STOPPING (on new connections and
    kept-alive ones) while it still serves every request, and only then closes its port: a load balancer takes it out
    of rotation before any client meets a closed port (a rolling restart)."""
    config = GatewaySettings.for_state(settings.state_dir, port=0, drain_s=1.5)
    runner = await start_gateway(settings, config)
    port = runner.addresses[0][1]
    cert, key = gw.certs[SENDER]
    ctx = client_ssl_context(gw.pki_dir, cert, key)
    stopping: asyncio.Task[None] | None = None
    async with aiohttp.ClientSession(f"https://127.0.0.1:{port}", connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        try:
            async with s.get("/ready") as r:
                assert r.status == 200
            started = time.monotonic()
            stopping = asyncio.create_task(runner.cleanup())
            await asyncio.sleep(0.2)
            async with s.get("/ready") as r:  # the kept-alive connection
                assert r.status == 503 and r.headers["X-Hub-Code"] == "GATEWAY_NOT_READY"
                body = await r.json()
            assert [c["code"] for c in body["checks"] if not c["ok"]] == ["GATEWAY_READY_STOPPING"]
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as fresh:  # a new connection
                async with fresh.get(f"https://127.0.0.1:{port}/ready") as r:
                    assert r.status == 503
                async with fresh.get(f"https://127.0.0.1:{port}/v1/inbox", params={"wait": "0"}) as r:
                    assert r.status == 204  # still served while draining
            assert not stopping.done()
            await stopping
            assert time.monotonic() - started >= 1.5
        finally:
            if stopping is None:
                await runner.cleanup()
    with pytest.raises(OSError):  # the port is closed once drained
        await asyncio.open_connection("127.0.0.1", port)


async def test_an_expired_certificate_is_answered_and_a_foreign_one_fails_the_handshake(
    gw: Gateway, settings: Settings, tmp_path: Path
) -> None:
    """An expired certificate of the hub CA is answered 403 CERT_EXPIRED as JSON, naming the date (the handshake,
    which checked dates before, gave the client "empty reply from server" and the people on duty nothing); one of
    another CA fails the handshake, which the gateway now counts (TLS_CERT_UNTRUSTED) for the ops overview."""
    from prometheus_client import REGISTRY

    from hub.store import gateway_activity
    from hub.trust import pki

    def counted(system: str, code: str) -> float:
        return REGISTRY.get_sample_value("hub_gateway_refusals_total", {"system": system, "code": code}) or 0.0

    async def stored() -> dict[tuple[str, str], int]:
        return {(r.system, r.code): r.hour for r in await gateway_activity.refusals(gw.hub.pool, limit=1000)}

    keys = [(SENDER, "CERT_EXPIRED"), ("-", "TLS_CERT_UNTRUSTED")]
    before, stored_before = {k: counted(*k) for k in keys}, await stored()

    c, k, _ = client_certificate(gw.pki_dir, settings.ca_passphrase, SYSTEMS[SENDER], SENDER, tmp_path, days=-2)
    gw.certs["expired"] = (c, k)
    expired_on = x509.load_pem_x509_certificates(c.read_bytes())[0].not_valid_after_utc
    for path in ("/v1/inbox", "/v1/messages/" + str(uuid.uuid4())):
        async with gw.session("expired").get(path) as r:
            assert r.status == 403 and r.headers["X-Hub-Code"] == "CERT_EXPIRED"
            body = await r.json()
    assert body["title"] == "证书已过期或尚未生效"
    assert f"expired on {expired_on:%Y-%m-%d %H:%M} UTC" in body["detail"]
    # nothing was taken from the system's queue for it: its current certificate polls as before
    async with gw.session(SENDER).get("/v1/inbox", params={"wait": "0"}) as r:
        assert r.status == 204

    # a CA of its own, not the hub's: nothing it says can be trusted, so the handshake fails
    foreign = tmp_path / "foreign"
    pki.init_ca(foreign, "foreign-passphrase", hub_agency=SYSTEMS[SENDER])
    c, k, _ = client_certificate(foreign, "foreign-passphrase", SYSTEMS[SENDER], SENDER, tmp_path)
    gw.certs["foreign"] = (c, k)
    with pytest.raises(aiohttp.ClientError):
        async with gw.session("foreign").get("/v1/inbox") as r:
            await r.read()

    from harness import until

    async def both() -> dict[tuple[str, str], float] | None:
        delta = {k: counted(*k) - before[k] for k in keys}
        return delta if all(delta.values()) else None

    # the expired certificate's two requests under its system; the foreign handshakes under "-" (no system is
    # known; aiohttp tries a connection that was reset once more, so one request may be two handshakes)
    got = await until(both, "the refusals counted", timeout=10)
    assert got is not None and got[keys[0]] == 2 and 1 <= got[keys[1]] <= 2, got

    async def written() -> dict[tuple[str, str], int] | None:
        # what is counted now, all of it in the store: the second handshake of a retried connection may be counted
        # after a flush wrote the first, and after ``got`` was read
        now, counts = await stored(), {k: counted(*k) - before[k] for k in keys}
        delta = {k: now.get(k, 0) - stored_before.get(k, 0) for k in keys}
        return delta if delta == counts else None

    got = await until(written, "the refusals in the store, as counted", timeout=20)
    assert got[keys[0]] == 2 and 1 <= got[keys[1]] <= 2, got
    # with the address they came from (the one clue to who a failed handshake was)
    peers = {(r.system, r.code): r.peers for r in await gateway_activity.refusals(gw.hub.pool, limit=1000)}
    assert peers[keys[0]] == ("127.0.0.1",) and peers[keys[1]] == ("127.0.0.1",), peers


async def test_behind_a_balancer_the_refusals_name_the_client(gw: Gateway, settings: Settings, tmp_path: Path) -> None:
    """With ``proxy_from`` naming the load balancer, the PROXY header it sends before the client's bytes (HAProxy
    ``send-proxy-v2``) names the client: a refusal behind it is stored with the client's address, not the
    balancer's; the balancer's connection without a header is closed and counted (TLS_PROXY_HEADER)."""
    import socket
    import ssl
    import struct

    from harness import until

    from hub.gateway.proxy_header import V2_SIGNATURE
    from hub.store import gateway_activity

    config = GatewaySettings.for_state(settings.state_dir, port=0, proxy_from=("127.0.0.1",))
    runner = await start_gateway(settings, config)
    port = runner.addresses[0][1]
    c, k, _ = client_certificate(gw.pki_dir, settings.ca_passphrase, SYSTEMS[SENDER], SENDER, tmp_path, days=-2)
    ctx = client_ssl_context(gw.pki_dir, c, k)
    client = bytes([198, 51, 100, 23])  # 198.51.100.23, the bureau's machine behind the balancer
    header = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 12) + client + bytes([10, 0, 0, 21]) + bytes(4)

    def through_the_balancer(header: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(header)
            try:
                with ctx.wrap_socket(raw, server_hostname="localhost") as conn:
                    conn.sendall(b"GET /v1/inbox HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    return conn.recv(200)
            except (ssl.SSLError, OSError):
                return b""

    try:
        assert (await asyncio.to_thread(through_the_balancer, header)).startswith(b"HTTP/1.1 403")  # expired
        assert await asyncio.to_thread(through_the_balancer, b"") == b""  # no header from the balancer: closed

        async def stored() -> dict[tuple[str, str], tuple[str, ...]] | None:
            rows = {(r.system, r.code): r.peers for r in await gateway_activity.refusals(gw.hub.pool, limit=1000)}
            proxy = rows.get(("-", "TLS_PROXY_HEADER"))
            return rows if "198.51.100.23" in rows.get((SENDER, "CERT_EXPIRED"), ()) and proxy else None

        rows = await until(stored, "the refusals with the client's address", timeout=20)
        assert rows is not None and rows[("-", "TLS_PROXY_HEADER")] == ("127.0.0.1",)
    finally:
        await runner.cleanup()


async def test_a_system_is_served_only_from_its_gateway_addresses(gw: Gateway) -> None:
    """The directory's ``gateway-addresses`` (migration 029): a system's certificate presented from an address the
    directory does not list for it is refused 403 GATEWAY_ADDRESS_REFUSED, naming the address, and counted under the
    system with the address for the people on duty; from a listed network it is served as before."""

    from harness import until

    from hub.store import gateway_activity

    identifier = gw.state.identifier
    listed = identifier.directory

    try:
        identifier.directory = with_system(listed, SENDER, gateway_addresses=("192.0.2.0/24",))
        async with gw.session(SENDER).get("/v1/inbox", params={"wait": "0"}) as r:
            assert r.status == 403 and r.headers["X-Hub-Code"] == "GATEWAY_ADDRESS_REFUSED"
            body = await r.json()
        assert "came from 127.0.0.1" in body["detail"] and body["title"].startswith("该系统不允许从此地址接入网关")
        identifier.directory = with_system(listed, SENDER, gateway_addresses=("10.0.0.0/8", "127.0.0.0/8"))
        async with gw.session(SENDER).get("/v1/inbox", params={"wait": "0"}) as r:
            assert r.status == 204
    finally:
        identifier.directory = listed

    async def stored() -> tuple[str, ...] | None:
        rows = {(r.system, r.code): r.peers for r in await gateway_activity.refusals(gw.hub.pool, limit=1000)}
        return rows.get((SENDER, "GATEWAY_ADDRESS_REFUSED"))

    assert await until(stored, "the refusal under the system", timeout=20) == ("127.0.0.1",)


async def test_a_client_certificate_the_directory_does_not_register_is_refused(gw: Gateway) -> None:
    """The directory's ``cert-sha256``: a system whose certificates it registers presents another valid certificate
    of its own over TLS — 403 CERT_NOT_REGISTERED naming the certificate, counted under the system for the people on
    duty; registered beside the signing certificate, the same client is served."""

    from cryptography import x509
    from harness import until

    from hub.store import gateway_activity
    from hub.trust.pki import fingerprint

    identifier = gw.state.identifier
    listed = identifier.directory
    tls_cert = x509.load_pem_x509_certificates(gw.certs[SENDER][0].read_bytes())[0]
    signing = gw.hub.signers[SENDER].identity.fingerprint

    try:
        identifier.directory = with_system(listed, SENDER, cert_sha256=(signing,))
        async with gw.session(SENDER).get("/v1/inbox", params={"wait": "0"}) as r:
            assert r.status == 403 and r.headers["X-Hub-Code"] == "CERT_NOT_REGISTERED"
            body = await r.json()
        assert fingerprint(tls_cert)[:16] in body["detail"] and body["title"].startswith(
            "证书不是目录为该系统登记的证书"
        )
        identifier.directory = with_system(listed, SENDER, cert_sha256=(signing, fingerprint(tls_cert)))
        async with gw.session(SENDER).get("/v1/inbox", params={"wait": "0"}) as r:
            assert r.status == 204
    finally:
        identifier.directory = listed

    async def stored() -> bool:
        rows = {(r.system, r.code) for r in await gateway_activity.refusals(gw.hub.pool, limit=1000)}
        return (SENDER, "CERT_NOT_REGISTERED") in rows

    assert await until(stored, "the refusal under the system", timeout=20)


async def test_each_systems_requests_are_counted_in_the_store(gw: Gateway) -> None:
    """Every identified request is counted by minute under its system and written by the gateway's activity task
    (hub.store.gateway_activity, migration 027): the ops overview's "近 1 小时经网关请求" for each system, on any
    machine — when a bureau says it cannot send, whether anything of it arrived at all."""
    from harness import until

    from hub.store import gateway_activity

    async def hour() -> int:
        got = (await gateway_activity.requests(gw.hub.pool)).get(OTHER)
        return got.hour if got is not None else 0

    before = await hour()
    other = gw.session(OTHER)
    for _ in range(3):
        async with other.get(f"/v1/messages/{uuid.uuid4()}") as r:  # identified, answered 404: a request all the same
            assert r.status == 404
    async with gw.session(None).get("/v1/inbox") as r:  # no certificate: no system to count it under
        assert r.status == 401

    async def counted() -> int | None:
        n = await hour() - before
        return n if n >= 3 else None

    assert await until(counted, "the requests in the store", timeout=10) == 3


async def test_ready_for_the_load_balancer(gw: Gateway, settings: Settings) -> None:
    """GET /ready with no client certificate: 200 while every part works; a store that no longer answers (a closed
    pool: PostgreSQL's own error) and a broker connection that is down (a closed connection) make it 503
    GATEWAY_NOT_READY naming them, without counting a refusal of anybody; back to 200 once they are back."""
    from prometheus_client import REGISTRY

    from hub.gateway import readiness
    from hub.store.db import create_pool
    from hub.transport import Transport

    def refused() -> float:
        return (
            REGISTRY.get_sample_value("hub_gateway_refusals_total", {"system": "-", "code": "GATEWAY_NOT_READY"}) or 0.0
        )

    anonymous = gw.session(None)
    async with anonymous.get("/ready") as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        body = await r.json()
    assert body["ready"] is True and {c["name"] for c in body["checks"] if c["ok"]} == {
        "broker",
        "store",
        "examination",
        "revocation",
        "stopping",
    }
    async with anonymous.head("/ready") as r:  # what some load balancers send
        assert r.status == 200

    ready = gw.state.readiness
    assert ready is not None
    real_pool, real_transport = ready.pool, ready.transport
    closed_pool = await create_pool(settings.pg_dsn, min_size=1, max_size=1)
    await closed_pool.close()
    closed = await Transport.connect(settings, client_name="hub-test-closed")
    await closed.close()
    before = refused()
    ready.pool, ready.transport = closed_pool, closed
    try:
        await asyncio.sleep(readiness.CACHE_S)
        async with anonymous.get("/ready") as r:
            assert r.status == 503 and r.headers["X-Hub-Code"] == "GATEWAY_NOT_READY"
            body = await r.json()
    finally:
        ready.pool, ready.transport = real_pool, real_transport
    assert body["ready"] is False and body["title"] == "本网关暂不能受理请求（负载均衡应转往其他网关）"
    assert [(c["name"], c["code"]) for c in body["checks"] if not c["ok"]] == [
        ("broker", "GATEWAY_READY_BROKER"),
        ("store", "GATEWAY_READY_STORE"),
    ]
    assert refused() == before  # not a refusal of anybody: no 网关拒绝 row for a load balancer's checks
    await asyncio.sleep(readiness.CACHE_S)
    async with anonymous.get("/ready") as r:
        assert r.status == 200


async def test_no_answer_in_time_and_the_late_answer_in_the_inbox(
    gw: Gateway, settings: Settings, tmp_path: Path
) -> None:
    prov = "prov-220000-oa"  # a system no other gateway of this module consumes for
    c, k, _ = client_certificate(gw.pki_dir, settings.ca_passphrase, SYSTEMS[prov], prov, tmp_path)
    # The path through the inbound queue (in_process=False): the gateway publishes and waits for a worker's answer.
    config = GatewaySettings.for_state(settings.state_dir, port=0, answer_timeout_s=1.0, in_process=False)
    runner = await start_gateway(settings, config)
    ctx = client_ssl_context(gw.pki_dir, c, k)
    try:
        async with aiohttp.ClientSession(
            f"https://127.0.0.1:{runner.addresses[0][1]}", connector=aiohttp.TCPConnector(ssl=ctx)
        ) as s:
            await gw.hub.stop_worker()  # the hub is slow: nothing answers within the gateway's answer timeout
            try:
                status, headers, _ = await post(s, signed(gw, prov, [Recipient.to(SYSTEMS["city-220100-oa"])]))
            finally:
                await gw.hub.start_worker()
            assert (status, headers["X-Hub-Code"]) == (503, "GATEWAY_TIMEOUT") and headers["Retry-After"] == "5"
            mid = headers["X-Hub-Message-Id"]
            # the answer comes later; nobody waits for it any more: it is an inbox item
            async with s.get("/v1/inbox", params={"wait": "15"}) as r:
                assert r.status == 200 and r.headers["X-Hub-Kind"] == "receipt"
                receipt = gw.hub.inbox(prov).open(await r.read())
                tag = r.headers["X-Hub-Delivery-Tag"]
            assert receipt.ref_to == mid
            async with s.post(f"/v1/inbox/{tag}/ack") as r:
                assert r.status == 204
            async with s.get(f"/v1/messages/{mid}") as r:
                assert r.status == 200 and (await r.json())["state"] == "accepted"
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------------------- the in-process path


async def _deliveries_of(recipient: aiohttp.ClientSession, mid: str) -> int:
    """Empty the recipient's inbox (acknowledging everything, earlier tests' deliveries too) and count the
    deliveries of ``mid``: the first poll waits for one, the last finds the inbox empty."""
    seen = 0
    while True:
        async with recipient.get("/v1/inbox", params={"wait": "1" if seen else "10"}) as r:
            if r.status == 204:
                return seen
            assert r.status == 200
            if r.headers["X-Hub-Message-Id"] == mid and r.headers["X-Hub-Kind"] == "delivery":
                seen += 1
            tag = r.headers["X-Hub-Delivery-Tag"]
        async with recipient.post(f"/v1/inbox/{tag}/ack") as r:
            assert r.status == 204


async def test_examined_in_the_gateway_process(gw: Gateway) -> None:
    """The default path examines, records and delivers in the gateway process (hub.gateway.direct): answered with
    no pipeline worker running, recorded with its delivery delivered, the delivery in the recipient's inbox."""
    sender, recipient = gw.session(SENDER), gw.session(RECIPIENT)
    await gw.hub.stop_worker()
    try:
        status, headers, body = await post(sender, signed(gw, SENDER, [Recipient.to(DEHUI)]))
    finally:
        await gw.hub.start_worker()
    assert status == 202, body
    mid = headers["X-Hub-Message-Id"]
    assert gw.hub.inbox(SENDER).open(body).ref_to == mid
    async with sender.get(f"/v1/messages/{mid}") as r:
        state = await r.json()
    assert state["state"] == "accepted" and [d["state"] for d in state["deliveries"]] == ["delivered"]
    assert await _deliveries_of(recipient, mid) == 1


async def test_store_outage_goes_to_the_retry_queue_and_a_worker_answers(gw: Gateway) -> None:
    """PostgreSQL unavailable for the gateway's batch: the message goes to the retry queue as a worker's would
    (Worker._retry), a pipeline worker finishes it, and the request gets that worker's signed answer."""
    direct = gw.state.direct
    real = direct.worker.store
    direct.worker.store = down = StoreDownOnce(real)
    try:
        status, headers, body = await post(gw.session(SENDER), signed(gw, SENDER, [Recipient.to(DEHUI)]))
    finally:
        direct.worker.store = real
    assert down.failures == 0
    assert status == 202 and headers["X-Hub-Outcome"] == "accepted", body
    mid = headers["X-Hub-Message-Id"]
    assert gw.hub.inbox(SENDER).open(body).ref_to == mid
    recipient = gw.session(RECIPIENT)
    assert await _deliveries_of(recipient, mid) == 1


class _BrokerDown:
    """The gateway's connection with the broker refusing every publish (the retry copy too)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def publish_many(self, items: Any) -> None:
        from hub.errors import BrokerUnavailable

        if items:
            self.refused += 1
            raise BrokerUnavailable("RabbitMQ is unavailable (a test)")


async def test_broker_outage_is_503_and_the_resend_finishes_the_message(gw: Gateway) -> None:
    """Recorded, then the broker took nothing (neither the delivery nor the retry copy): 503 with Retry-After, the
    message recorded with its delivery still to do; the client's resend delivers it once and is answered accepted;
    a further copy is a duplicate (409)."""
    sender, recipient = gw.session(SENDER), gw.session(RECIPIENT)
    data = signed(gw, SENDER, [Recipient.to(DEHUI)])
    capturing = gw.state.direct.transport
    real = capturing.real
    capturing.real = down = _BrokerDown(real)
    try:
        status, headers, body = await post(sender, data)
    finally:
        capturing.real = real
    assert down.refused == 2  # the delivery with the receipt, then the retry copy
    assert (status, headers["X-Hub-Code"], headers["Retry-After"]) == (503, "DELIVERY_BROKER", "5"), body
    mid = headers["X-Hub-Message-Id"]
    async with sender.get(f"/v1/messages/{mid}") as r:
        state = await r.json()
    assert state["state"] == "accepted" and [d["state"] for d in state["deliveries"]] != ["delivered"]

    status, headers, body = await post(sender, data)  # the resend
    assert status == 202 and headers["X-Hub-Outcome"] == "accepted", body
    async with sender.get(f"/v1/messages/{mid}") as r:
        assert [d["state"] for d in (await r.json())["deliveries"]] == ["delivered"]
    assert await _deliveries_of(recipient, mid) == 1  # delivered once

    status, headers, _ = await post(sender, data)
    assert status == 409 and headers["X-Hub-Outcome"] == "duplicate"


async def test_concurrent_copies_are_examined_one_after_the_other(gw: Gateway) -> None:
    """Three copies of one message at once: one is accepted, the others are duplicates, one delivery."""
    sender, recipient = gw.session(SENDER), gw.session(RECIPIENT)
    data = signed(gw, SENDER, [Recipient.to(DEHUI)])
    answers = await asyncio.gather(*(post(sender, data) for _ in range(3)))
    assert sorted(status for status, _, _ in answers) == [202, 409, 409]
    mid = answers[0][1]["X-Hub-Message-Id"]
    assert await _deliveries_of(recipient, mid) == 1


async def test_an_urgent_submission_is_examined_on_the_emergency_lane(gw: Gateway) -> None:
    """A 特急 message goes to the in-process emergency lane (Worker.handle_urgent, its own AMQP connection)."""
    sender, recipient = gw.session(SENDER), gw.session(RECIPIENT)
    lane = gw.state.direct._lanes["emergency"]
    real, batches = lane._handle, []

    async def spy(batch: list[Any]) -> None:
        batches.append(len(batch))
        await real(batch)

    lane._handle = spy
    try:
        status, headers, body = await post(sender, signed(gw, SENDER, [Recipient.to(DEHUI)], urgency="特急"))
    finally:
        lane._handle = real
    assert status == 202 and headers["X-Hub-Outcome"] == "accepted", body
    assert batches == [1]
    assert await _deliveries_of(recipient, headers["X-Hub-Message-Id"]) == 1


async def test_a_system_takes_part_one_way(gw: Gateway, settings: Settings) -> None:
    """A system that polls over HTTPS and then starts an AMQP consumer of its own: the gateway gives its queue up
    (everything it held, the delivery handed out too, goes to the AMQP consumer), refuses the system's polls and
    submissions with 409 GATEWAY_LINK_CONFLICT while that consumer runs, and reads the queue again once it stops."""
    from harness import until

    from hub.pipeline.client import connect_as
    from hub.transport.users import provision

    await provision(settings, [(RECIPIENT, None)])
    sender, recipient = gw.session(SENDER), gw.session(RECIPIENT)
    sent = []
    for _ in range(2):
        status, headers, body = await post(sender, signed(gw, SENDER, [Recipient.to(DEHUI)]))
        assert status == 202, body
        sent.append(headers["X-Hub-Message-Id"])
    async with recipient.get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200
        tag = r.headers["X-Hub-Delivery-Tag"]
    mailbox = gw.state.mailbox

    async def holding_both() -> bool:
        return mailbox.held(RECIPIENT) == 2

    await until(holding_both, "the gateway holding both deliveries")

    own = await connect_as(settings, RECIPIENT)  # the system's own broker user
    got: list[str] = []

    async def take(batch: list[Any]) -> None:
        got.extend(m.message_id for m in batch)
        await own.ack(batch)

    consumer = await own.consume(own.names.system_queue(RECIPIENT), take, prefetch=10)
    try:

        async def all_taken() -> bool:
            return sorted(got) == sorted(sent)

        await until(all_taken, "the deliveries going to the AMQP consumer")
        assert mailbox.held(RECIPIENT) == 0 and not mailbox.reading(RECIPIENT)
        async with recipient.post(f"/v1/inbox/{tag}/ack") as r:
            assert r.status == 404  # it went back to the queue with the other one
        async with recipient.get("/v1/inbox", params={"wait": "0"}) as r:
            refusal = await r.json()
            assert (r.status, r.headers["X-Hub-Code"]) == (409, "GATEWAY_LINK_CONFLICT"), refusal
        assert refusal["title"] == "该系统已通过 AMQP 接收其队列，不能同时经 HTTPS 网关接入"
        assert RECIPIENT in refusal["detail"] and "one way" in refusal["detail"]
        status, headers, body = await post(recipient, signed(gw, RECIPIENT, [Recipient.to(SYSTEMS[SENDER])]))
        assert (status, headers["X-Hub-Code"]) == (409, "GATEWAY_LINK_CONFLICT"), body
    finally:
        await consumer.stop()
        await own.close()

    async def polls() -> bool:
        async with recipient.get("/v1/inbox", params={"wait": "0"}) as r:
            return r.status == 204

    await until(polls, "the gateway reading the queue again once the AMQP consumer stopped")
    status, headers, _ = await post(sender, signed(gw, SENDER, [Recipient.to(DEHUI)]))
    assert status == 202
    async with recipient.get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == headers["X-Hub-Message-Id"]
        tag = r.headers["X-Hub-Delivery-Tag"]
    async with recipient.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 204
    assert mailbox.reading(RECIPIENT)


async def test_without_the_management_api_the_gateway_serves(
    gw: Gateway, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The one-link check is a guard against a misconfiguration, not a boundary: a gateway whose RabbitMQ management
    API cannot be reached serves polls and submissions, and says so in one WARNING (not one a look)."""
    import dataclasses
    import logging

    unreachable = dataclasses.replace(settings, amqp_management_url="http://guest:guest@127.0.0.1:9/")
    config = GatewaySettings.for_state(settings.state_dir, port=0, link_check_s=0.2, answer_timeout_s=20)
    runner = await start_gateway(unreachable, config)
    cert, key = gw.certs[OTHER]
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        with caplog.at_level(logging.WARNING, logger="hub.gateway"):
            async with aiohttp.ClientSession(
                url, connector=aiohttp.TCPConnector(ssl=client_ssl_context(gw.pki_dir, cert, key))
            ) as other:
                async with other.get("/v1/inbox", params={"wait": "0"}) as r:
                    assert r.status == 204
                await asyncio.sleep(0.8)  # the watch looks four times meanwhile
                status, headers, body = await post(other, signed(gw, OTHER, [Recipient.to(DEHUI)]))
                assert status == 202, body
                mid = headers["X-Hub-Message-Id"]
                async with other.get("/v1/inbox", params={"wait": "0"}) as r:
                    assert r.status == 204
        warned = [r.getMessage() for r in caplog.records if "management API" in r.getMessage()]
        assert len(warned) == 1 and "unreachable" in warned[0], warned
    finally:
        await runner.cleanup()
    recipient = gw.session(RECIPIENT)  # the message submitted above was delivered: 德惠 takes it over HTTPS
    async with recipient.get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == mid
        tag = r.headers["X-Hub-Delivery-Tag"]
    async with recipient.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 204


async def test_a_system_that_stops_polling_is_let_go(
    gw: Gateway, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An HTTPS system that stops polling: after ``idle_s`` the gateway stops reading its queue and puts back the
    delivery it held, which then waits ready in RabbitMQ (where it can expire, and the ops page counts it) with no
    consumer on the queue (the ops page: disconnected); the system's next poll, one that does not wait at all,
    reads the queue again and gets it."""
    import logging

    from harness import until

    from hub.transport.users import consumers_by_queue

    city = "city-220100-oa"  # 长春市: no other gateway of this module reads its queue now
    c, k, _ = client_certificate(gw.pki_dir, settings.ca_passphrase, SYSTEMS[city], city, tmp_path)
    config = GatewaySettings.for_state(settings.state_dir, port=0, idle_s=1, link_check_s=0, answer_timeout_s=20)
    runner = await start_gateway(settings, config)
    mailbox = runner.app[STATE].mailbox
    queue = gw.hub.transport.names.system_queue(city)
    sender = gw.session(SENDER)
    try:
        async with aiohttp.ClientSession(
            f"https://127.0.0.1:{runner.addresses[0][1]}",
            connector=aiohttp.TCPConnector(ssl=client_ssl_context(gw.pki_dir, c, k)),
        ) as s:
            while True:  # what earlier tests left for 长春市
                async with s.get("/v1/inbox", params={"wait": "1"}) as r:
                    if r.status == 204:
                        break
                    tag = r.headers["X-Hub-Delivery-Tag"]
                async with s.post(f"/v1/inbox/{tag}/ack") as r:
                    assert r.status == 204
            sent = []
            for _ in range(2):
                status, headers, body = await post(sender, signed(gw, SENDER, [Recipient.to(SYSTEMS[city], city)]))
                assert status == 202, body
                sent.append(headers["X-Hub-Message-Id"])
            async with s.get("/v1/inbox", params={"wait": "10"}) as r:
                assert r.status == 200
                first, tag = r.headers["X-Hub-Message-Id"], r.headers["X-Hub-Delivery-Tag"]
            async with s.post(f"/v1/inbox/{tag}/ack") as r:
                assert r.status == 204

            # 长春市 stops polling, holding nothing; the gateway holds the other delivery until it lets go
            with caplog.at_level(logging.INFO, logger="hub.gateway"):

                async def let_go() -> bool:  # the INFO line comes once the put-back is done
                    said = any(f"system {city} has not polled" in r.getMessage() for r in caplog.records)
                    return said and not mailbox.reading(city)

                await until(let_go, "the gateway letting go of a system that stopped polling", timeout=10)
            assert mailbox.held(city) == 0

            async def ready_again() -> bool:  # put back (a nack): ready in the broker, not held in the gateway
                return await gw.hub.transport.queue_depth(queue) == 1

            await until(ready_again, "the held delivery ready in RabbitMQ again")

            async def no_consumer() -> bool:
                return not (await consumers_by_queue(settings)).get(queue)

            await until(no_consumer, "RabbitMQ listing no consumer on the queue")

            # the people on duty: no consumer, but it polled a moment ago — 间歇轮询 (polls from time to time), with
            # the delivery counted as waiting; past the grace (0 here) the same system is 未连接
            from aiohttp import web
            from aiohttp.test_utils import TestClient, TestServer

            import monitoring.metrics as mm

            polled_at = time.time()
            for grace, state in ((settings.poll_grace_s, "polling"), (0, "disconnected")):
                app = web.Application()
                app[mm.SETTINGS] = settings.with_(poll_grace_s=grace)
                mm.setup(app)
                async with TestClient(TestServer(app)):

                    async def shown(app: web.Application = app, state: str = state) -> dict[str, Any] | None:
                        row = {a["system"]: a for a in (await mm.overview(app))["adapters"]}.get(city, {})
                        return row if row.get("state") == state and row.get("ready") == 1 else None

                    row = await until(shown, f"the ops overview showing {city} {state}, one waiting", timeout=30)
                assert row["consumers"] == 0 and row["link"] is None
                assert 0 <= row["last_poll_s"] < 60 and row["last_poll"] is not None
            from prometheus_client import REGISTRY

            last = REGISTRY.get_sample_value("hub_gateway_last_poll_timestamp_seconds", {"system": city})
            assert last is not None and polled_at - 60 < last <= polled_at

            # its next poll, not waiting at all, reads the queue again and gets the delivery
            async with s.get("/v1/inbox", params={"wait": "0"}) as r:
                assert r.status == 200
                assert {first, r.headers["X-Hub-Message-Id"]} == set(sent)
                tag = r.headers["X-Hub-Delivery-Tag"]
            async with s.post(f"/v1/inbox/{tag}/ack") as r:
                assert r.status == 204
            assert mailbox.reading(city)
    finally:
        await runner.cleanup()


async def test_each_gateway_is_on_record_while_it_runs(gw: Gateway, settings: Settings) -> None:
    """``gateway_instances`` (hub.store.gateway_activity), which the ops overview's gateway row reads on any machine:
    a gateway writes its row as it starts, replacing a dead gateway's row of its host (one that stopped refreshing
    it), leaves a dead gateway of another host listed (the page: 降级), and removes its own row when it stops."""
    import os
    import socket

    from harness import until

    from hub.store import gateway_activity

    pool = gw.hub.pool
    dead_here, dead_there = uuid.uuid4(), uuid.uuid4()
    stale = (
        "INSERT INTO gateway_instances VALUES ($1, $2, 4242, now() - interval '1 hour', now() - interval '5 minutes')"
    )
    await pool.execute(stale, dead_here, socket.gethostname())
    await pool.execute(stale, dead_there, "gw-b.example")
    config = GatewaySettings.for_state(settings.state_dir, port=0, link_check_s=0)
    runner = await start_gateway(settings, config)
    try:
        me = runner.app[STATE].activity.instance

        async def mine() -> set[Any] | None:
            ids = {r["instance"] for r in await pool.fetch("SELECT instance FROM gateway_instances")}
            return ids if me in ids else None

        ids = await until(mine, "the gateway's row in gateway_instances", timeout=10)
        assert dead_here not in ids and dead_there in ids  # the dead one of this host went
        found = await gateway_activity.instances(pool, within_s=86400)
        assert [(i.host, i.alive) for i in found if i.pid == 4242] == [("gw-b.example", False)]
        assert any(i.pid == os.getpid() and i.host == socket.gethostname() and i.alive for i in found)

        # its broker connection lost: its row says not ready and why, at once (not at the next beat); then ready again
        from hub.transport import Transport

        async def not_ready() -> list[str]:
            row = await pool.fetchrow("SELECT not_ready FROM gateway_instances WHERE instance = $1", me)
            return list(row["not_ready"]) if row is not None else ["(no row)"]

        async def says_not_ready() -> list[str] | None:
            return await not_ready() or None

        async def says_ready() -> bool:
            return not await not_ready()

        readiness = runner.app[STATE].readiness
        assert readiness is not None and await not_ready() == []
        closed = await Transport.connect(settings, client_name="hub-test-closed")
        await closed.close()
        real, readiness.transport = readiness.transport, closed
        try:  # within a flush or two (2 s each), not the row's next beat (10 s)
            assert await until(says_not_ready, "the gateway's row not ready", timeout=5) == ["GATEWAY_READY_BROKER"]
        finally:
            readiness.transport = real
        assert await until(says_ready, "the gateway's row ready again", timeout=5)
    finally:
        await runner.cleanup()
        await pool.execute("DELETE FROM gateway_instances WHERE instance = $1", dead_there)
    # stopped cleanly: its row is gone (the gw fixture's own gateway still has its row)
    left = {r["instance"] for r in await pool.fetch("SELECT instance FROM gateway_instances")}
    assert runner.app[STATE].activity.instance not in left
