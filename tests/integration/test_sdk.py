"""The adapter SDK's behaviours, each run twice by the same test code (the switch ``TestHub`` offers every adapter):
on the test hub in memory — the real worker (processor, answer logic) on the in-memory broker and store doubles —
and against the real RabbitMQ and PostgreSQL (``HUB_TEST_REAL=1``: a fresh database and namespace, the adapters
enrolled into enrolment directories of their own, connecting with their own broker users). The crash test
(SIGKILL mid-stream) is in tests/integration/test_sdk_crash.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

import adapters.sdk
import adapters.sdk.testing
from adapters.sdk import Adapter, AdapterSettings, Context, HubRefused, MessageInvalid, Reject, Retry, to
from adapters.sdk.testing import TestHub
from hub.envelope import parse
from hub.settings import PROJECT_ROOT

SAMPLES = PROJECT_ROOT / "schemas" / "services"
PROVINCE = "11220000013544357T"
CITY = "11220100013544550M"
COUNTY_222403 = "county-222403-oa"  # 敦化市林业局 OA: reports up to the province (info.report sample's sender)


def body(service: str, name: str | None = None) -> etree._Element:
    folder = SAMPLES / service / "1" / "samples" / "valid"
    path = folder / name if name else sorted(folder.glob("*.xml"))[0]
    return copy.deepcopy(parse(path.read_bytes())[1][0])


def report() -> etree._Element:
    return body("info.report", "work-progress.xml")


async def send_report(client: Adapter, **kw: Any) -> Any:
    return await client.send(report(), service="info.report", version=1, to=[to(PROVINCE, "prov-220000-oa")], **kw)


def test_the_public_surface_is_pinned() -> None:
    assert sorted(adapters.sdk.__all__) == [
        "Adapter",
        "AdapterSettings",
        "ConfigurationError",
        "Context",
        "DeliveryState",
        "HubAnswer",
        "HubRefused",
        "HubUnavailable",
        "Message",
        "MessageInvalid",
        "NOT_SIGNED_FOR",
        "Receipt",
        "Refused",
        "Reject",
        "Reply",
        "RequestTimeout",
        "Retry",
        "SdkError",
        "SentMessage",
        "StoreConnection",
        "Tracking",
        "group",
        "to",
    ]
    assert adapters.sdk.testing.__all__ == ["AdapterProcess", "Delivered", "TestHub"]
    for name in adapters.sdk.__all__:
        assert getattr(adapters.sdk, name) is not None


def province() -> tuple[Adapter, list[Context]]:
    adapter = Adapter("prov-220000-oa")
    seen: list[Context] = []

    @adapter.handles("info.report", version=1)
    async def on_report(msg: Any, ctx: Context) -> None:
        seen.append(ctx)

    return adapter, seen


async def test_a_report_reaches_the_handler_verified_and_the_sender_gets_the_hubs_receipt(mode: str) -> None:
    adapter, seen = province()
    async with TestHub(adapter) as hub:
        county = await hub.client(COUNTY_222403)
        receipt = await send_report(county, urgency="加急")
        await hub.wait_until(lambda: seen)
    assert receipt.outcome == "accepted" and receipt.accepted
    assert receipt.recipients == ((PROVINCE, "prov-220000-oa", "to"),)
    assert len(receipt.received_digest) == 64
    ctx = seen[0]
    assert ctx.message_id == receipt.message_id
    assert (ctx.sender.system, ctx.urgency, ctx.classification) == (COUNTY_222403, "加急", "公开")
    assert ctx.service_id == "info.report/1"
    assert ctx.hub.system == "hub"
    # End-to-end proof: the county's own signature travelled with the delivery and was verified too.
    assert ctx.originator is not None and ctx.originator.system == COUNTY_222403
    assert ctx.originator_certificate is not None
    assert ctx.originator.serial == ctx.originator_certificate.serial_number
    assert len(ctx.digest) == 64 and ctx.raw.startswith(b"<?xml")


async def test_the_hubs_refusal_is_a_typed_exception_with_its_stable_code(mode: str) -> None:
    async with TestHub() as hub:
        county = await hub.client(COUNTY_222403)
        with pytest.raises(HubRefused) as caught:
            await county.send(report(), service="info.report", version=1, to=[to(CITY, "city-220100-oa")])
    assert caught.value.code == "ROUTE_NOT_ALLOWED"
    assert caught.value.title  # the hub's Chinese title
    assert "city-220100-oa" in caught.value.reason


async def test_a_message_that_breaks_its_xsd_never_leaves(mode: str) -> None:
    bad = report()
    title = next(el for el in bad.iter() if etree.QName(el).localname == "Title")
    title.text = "长" * 5000
    async with TestHub() as hub:
        county = await hub.client(COUNTY_222403)
        with pytest.raises(MessageInvalid) as caught:
            await county.send(bad, service="info.report", version=1, to=[to(PROVINCE, "prov-220000-oa")])
        assert caught.value.code.startswith("SCHEMA_")
        assert not county._pending  # nothing is waiting for an answer: nothing was published


async def test_what_was_handled_is_never_handed_over_again_after_a_restart(mode: str) -> None:
    adapter, seen = province()
    async with TestHub(adapter) as hub:
        county = await hub.client(COUNTY_222403)
        await send_report(county)
        await hub.wait_until(lambda: len(seen) == 1)
        first = seen[0]
        await hub.restart(adapter)
        # The broker hands the same delivery over again (as after a crash before the acknowledgement).
        await hub.inject("prov-220000-oa", first.raw, message_id=first.message_id)
        await send_report(county)  # and a new one after it
        await hub.wait_until(lambda: len(seen) == 2)
        await _eventually(hub, lambda: _settled(hub, adapter))
    assert [c.message_id for c in seen].count(first.message_id) == 1


async def _settled(hub: TestHub, adapter: Adapter) -> bool:
    """Nothing waits in the adapter's queue and its store has recorded both deliveries."""
    return await hub.depth(adapter.system) == 0 and await adapter._wiring.store.count() == 2


async def test_retry_rolls_back_the_handlers_writes_and_hands_the_delivery_over_again(mode: str) -> None:
    adapter = Adapter("prov-220000-oa")
    calls: list[int] = []

    @adapter.handles("info.report", version=1)
    async def on_report(msg: Any, ctx: Context) -> None:
        ctx.db.execute("CREATE TABLE IF NOT EXISTS reports (id TEXT, attempt INTEGER)")
        ctx.db.execute("INSERT INTO reports VALUES (?, ?)", (ctx.message_id, ctx.attempt))
        calls.append(ctx.attempt)
        if len(calls) < 3:
            raise Retry(0.01, "the OA system is busy")

    async with TestHub(adapter) as hub:
        county = await hub.client(COUNTY_222403)
        await send_report(county)
        await hub.wait_until(lambda: len(calls) == 3)
        await _eventually(hub, lambda: _handled(adapter, 1))
        rows = adapter._wiring.store.conn.execute("SELECT attempt FROM reports").fetchall()
    assert calls == [0, 1, 2]
    assert rows == [(2,)]  # only the successful attempt's write was committed


async def test_a_cancelled_error_raised_in_a_handler_is_a_failure_not_the_end_of_the_adapter(mode: str) -> None:
    """A handler whose own call was cancelled lets ``CancelledError`` out (``asyncio.CancelledError`` is no
    ``Exception``): it is retried like any failure, and the adapter keeps handling what comes after. Before, it ended
    the batch loop for good (over the gateway), the deliveries in hand waiting in vain."""
    import asyncio

    adapter = Adapter(
        "prov-220000-oa", AdapterSettings(system="prov-220000-oa", home=Path("/nonexistent"), concurrency=1)
    )
    calls: list[str] = []

    @adapter.handles("info.report", version=1)
    async def on_report(msg: Any, ctx: Context) -> None:
        calls.append(ctx.message_id)
        if len(calls) == 1:
            raise asyncio.CancelledError  # as a cancelled call inside the handler lets it out

    async with TestHub(adapter) as hub:
        county = await hub.client(COUNTY_222403)
        first = await send_report(county)
        await hub.wait_until(lambda: len(calls) == 2)  # the same delivery, retried
        second = await send_report(county)
        await hub.wait_until(lambda: len(calls) == 3)
        await _eventually(hub, lambda: _handled(adapter, 2))
    assert calls == [first.message_id, first.message_id, second.message_id]


async def test_retries_run_out_into_the_dead_letter_queue_with_the_reason(mode: str) -> None:
    adapter = Adapter(
        "prov-220000-oa", AdapterSettings(system="prov-220000-oa", home=Path("/nonexistent"), retry_limit=2)
    )
    calls: list[int] = []

    @adapter.handles("info.report", version=1)
    async def on_report(msg: Any, ctx: Context) -> None:
        calls.append(ctx.attempt)
        raise RuntimeError("a bug in the adapter")

    async with TestHub(adapter) as hub:
        county = await hub.client(COUNTY_222403)
        receipt = await send_report(county)
        await hub.wait_until(lambda: len(calls) == 3, timeout=20)
        dead: list[Any] = []

        async def collect() -> bool:
            dead.extend(await hub.dead_letters())
            return bool(dead)

        await _eventually(hub, collect)
    assert calls == [0, 1, 2]
    assert dead[0].headers["x-refused-code"] == "SDK_RETRIES_EXHAUSTED"
    assert "RuntimeError" in dead[0].headers["x-refused-reason"]
    assert dead[0].headers["x-refused-by"] == "prov-220000-oa"
    assert dead[0].message_id == receipt.message_id


async def test_document_tracking_reads_the_test_hubs_gateway_never_the_production_one(mode: str) -> None:
    """Under ``TestHub`` an adapter's 发文跟踪 (``message_state``, ``sent_messages``) reads the test hub's own gateway
    (``https=True``): the ``tracking_url`` of its production settings is never asked, nor the agency's proxy named
    beside it. Without a gateway (in memory, on RabbitMQ) it says so (SDK_TRACKING_UNSET) instead."""
    from adapters.sdk import ConfigurationError

    production = AdapterSettings(
        system=COUNTY_222403,
        home=Path("/nonexistent"),
        tracking_url="https://gateway.jl-forestry.gov.cn:8443",
        gateway_proxy="http://proxy.jl-forestry.gov.cn:3128",
    )
    county = Adapter(COUNTY_222403, production)
    async with TestHub(county):
        receipt = await send_report(county)
        if mode != "https":
            with pytest.raises(ConfigurationError) as caught:
                await county.message_state(receipt.message_id)
            assert caught.value.code == "SDK_TRACKING_UNSET"  # not SDK_NOT_ENROLLED: production was not tried
            hint = "TestHub(https=True)" if mode == "memory" else "tracking_url"  # the test hub cleared it
            assert hint in caught.value.detail, caught.value.detail
            return
        state = await county.message_state(receipt.message_id)
        assert state is not None and [d.system for d in state.deliveries] == ["prov-220000-oa"]
        assert [m.message_id async for m in county.sent_messages()] == [receipt.message_id]


async def _handled(adapter: Adapter, n: int) -> bool:
    return await adapter._wiring.store.count() == n


async def _eventually(hub: TestHub, check: Any, timeout: float = 15.0) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _publish_to(hub: TestHub, system: str, data: bytes) -> None:
    await hub.inject(system, data)


async def _dead_codes(hub: TestHub, n: int) -> list[str]:
    dead: list[Any] = []

    async def collect() -> bool:
        dead.extend(await hub.dead_letters())
        return len(dead) >= n

    await _eventually(hub, collect)
    return [m.headers["x-refused-code"] for m in dead]


async def test_a_tampered_delivery_is_dead_lettered_with_its_reason_and_never_reaches_a_handler(mode: str) -> None:
    adapter, seen = province()
    async with TestHub(adapter) as hub:
        county = await hub.client(COUNTY_222403)
        # A genuine delivery, captured by a recording client: the province's OA system's twin.
        await send_report(county)
        await hub.wait_until(lambda: seen)
        genuine = seen[0].raw
        tampered = genuine.replace("秋季造林".encode(), "春季造林".encode(), 1)
        assert tampered != genuine
        await _publish_to(hub, "prov-220000-oa", tampered)
        codes = await _dead_codes(hub, 1)
    assert len(seen) == 1
    assert codes[0] in ("SIG_DIGEST", "SIG_VALUE")


async def test_a_delivery_signed_by_a_system_or_a_foreign_ca_never_reaches_a_handler(mode: str, tmp_path: Path) -> None:
    """Deliveries in the right two-signature layout whose outer signature is not the hub's: a system countersigning
    its own message, the "hub" of another CA; and a message with only the sender's signature (never relayed)."""
    from hub.pipeline.replies import countersigned_document
    from hub.trust import Signer, pki
    from hub.trust.signature import c14n

    adapter, seen = province()
    async with TestHub(adapter) as hub:
        county = await hub.client(COUNTY_222403)
        county_signer = county._wiring.signer
        _, own, _, _ = county.build(
            report(), service="info.report", version=1, recipients=[to(PROVINCE, "prov-220000-oa")]
        )
        root = parse(own)
        origin = c14n(root[-1])
        root.remove(root[-1])
        content = c14n(root)
        foreign = pki.init_ca(tmp_path / "foreign", "foreign-pass")
        foreign_hub = Signer.load(foreign.paths.hub_key, foreign.paths.hub_cert, passphrase=b"foreign-pass")
        await _publish_to(hub, "prov-220000-oa", own)  # the sender's signature only
        for outer in (county_signer, foreign_hub):
            await _publish_to(
                hub, "prov-220000-oa", countersigned_document(content, origin, outer.signature_for_canonical)
            )
        codes = await _dead_codes(hub, 3)
    assert not seen
    # In the order they were delivered: never relayed; relayed by a system; relayed by another CA's "hub".
    assert codes[:2] == ["SIG_ORIGIN_MISSING", "CERT_SIGNER_MISMATCH"], codes
    assert codes[2].startswith("CERT_") and codes[2] != "CERT_SIGNER_MISMATCH", codes


async def test_reject_sends_the_sender_a_signed_refusal_and_no_handler_is_a_refusal_too(mode: str) -> None:
    data = Adapter("prov-220000-data")

    @data.handles("data.query", version=1)
    async def on_query(msg: Any, ctx: Context) -> None:
        raise Reject("DATASET_CLOSED", "该数据集本周维护，暂停查询 (dataset closed for maintenance)")

    from adapters.sdk import Refused

    async with TestHub(data) as hub:
        city = await hub.client("city-220100-oa")
        with pytest.raises(Refused) as caught:
            await city.request(
                body("data.query"), service="data.query", version=1, to=[to(PROVINCE, "prov-220000-data")], timeout=10
            )
    assert caught.value.code == "DATASET_CLOSED"
    assert caught.value.by.system == "prov-220000-data"
    assert "维护" in caught.value.reason


async def test_a_postgresql_store_shares_the_handlers_transaction(mode: str, pg_dsn: str) -> None:
    """Where the agency has PostgreSQL: ``ctx.db`` is an asyncpg connection inside the batch's transaction; a
    Retry rolls the handler's writes back, and the handled id is recorded with the successful attempt's."""
    import asyncpg

    table = f"reports_{mode}"
    settings = AdapterSettings(system="prov-220000-oa", home=Path("/nonexistent"), store=pg_dsn)
    adapter = Adapter("prov-220000-oa", settings)
    calls: list[str] = []

    @adapter.handles("info.report", version=1)
    async def on_report(msg: Any, ctx: Context) -> None:
        await ctx.db.execute(f"CREATE TABLE IF NOT EXISTS {table} (id TEXT, attempt INTEGER)")
        await ctx.db.execute(f"INSERT INTO {table} VALUES ($1, $2)", ctx.message_id, ctx.attempt)
        calls.append(ctx.message_id)
        if len(calls) == 1:
            raise Retry(0.01)

    async with TestHub(adapter) as hub:
        county = await hub.client(COUNTY_222403)
        receipt = await send_report(county)
        await _eventually(hub, lambda: _pg_handled(pg_dsn, receipt.message_id))
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(f"SELECT attempt FROM {table} WHERE id = $1", receipt.message_id)
    finally:
        await conn.close()
    assert [r["attempt"] for r in rows] == [1]
    assert calls == [receipt.message_id] * 2


async def _pg_handled(dsn: str, message_id: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM sdk_handled WHERE message_id = $1", message_id))
    finally:
        await conn.close()


async def test_each_mode_runs_the_adapter_over_its_own_link(mode: str) -> None:
    """The switch is real: in memory the in-memory broker, ``real`` RabbitMQ, ``https`` the hub's HTTPS gateway."""
    adapter, seen = province()
    async with TestHub(adapter) as hub:
        link = type(adapter._wiring.transport).__name__
        county = await hub.client(COUNTY_222403)
        await send_report(county)
        await hub.wait_until(lambda: seen)
        assert (hub.gateway_url != "") == (mode == "https")
    assert link == {"memory": "MemoryTransport", "real": "Transport", "https": "GatewayTransport"}[mode]


async def test_a_control_character_in_a_message_or_its_envelope_is_message_invalid() -> None:
    """``build`` (and so ``send``): a value XML cannot carry (Word's U+000B) is MessageInvalid SDK_INVALID_FIELD,
    never lxml's plain ValueError, whether it is in the body or the envelope."""
    import dataclasses

    from adapters.sdk.messages import InfoReportV1

    async with TestHub() as hub:
        county = await hub.client(COUNTY_222403)
        msg = InfoReportV1.from_element(report())
        recipients = [to(PROVINCE, "prov-220000-oa")]
        with pytest.raises(MessageInvalid) as info:
            county.build(dataclasses.replace(msg, title="秋季造林\x0b进展"), recipients=recipients)
        assert info.value.code == "SDK_INVALID_FIELD" and "Title" in info.value.detail and "U+000B" in info.value.detail
        with pytest.raises(MessageInvalid) as info:
            county.build(msg, recipients=recipients, business_ref="林资\x0b统字")
        assert info.value.code == "SDK_INVALID_FIELD" and "business_ref" in info.value.detail
        county.build(msg, recipients=recipients)  # the same message without it builds
