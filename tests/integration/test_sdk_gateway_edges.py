"""The adapter SDK over the HTTPS gateway at its edges — a review of 2026-12-07, each case reproduced against the
real gateway, RabbitMQ and PostgreSQL before it was fixed: a refusal whose reason no way of carrying it could take
looped without end, the handler run again each time; a copy handed out again while a slow handler still held the
first ran the handler twice; a delivery without a message id that failed the checks was acknowledged away; a
``max_batch`` above the gateway's 64 received nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from gateway_client import Gateway, over_https, running_gateway
from harness import PROVINCE, SYSTEMS, Hub, sample_body
from harness import until as until_async

from adapters.sdk import Context, Reject, Retry, to
from hub.pipeline.client import enroll
from hub.settings import Settings

pytestmark = pytest.mark.integration

NONGAN = "county-220122-oa"
DEHUI = "county-220183-oa"


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "sdkgwedge") as settings:
        yield settings


@pytest.fixture(scope="module")
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    hub = Hub(settings)
    await hub.setup()
    await enroll(settings, "prov-220000-data", PROVINCE)
    await hub.start_worker()
    try:
        async with running_gateway(hub, {}, visibility_timeout_s=2.0, answer_timeout_s=20, link_check_s=0) as g:
            yield g
    finally:
        await hub.close()


async def send_document(gw: Gateway, tmp_path: Path) -> str:
    nongan = over_https(gw, NONGAN, tmp_path / "sender")
    async with nongan:
        receipt = await nongan.send(
            sample_body("document.official"), service="document.official", version=1, to=[to(SYSTEMS[DEHUI], DEHUI)]
        )
    return str(receipt.message_id)


async def dead_lettered(gw: Gateway) -> list[Any]:
    t = gw.hub.transport
    found = []
    for m in await t.fetch(t.names.dead_letter_queue, max_messages=100):
        await t.ack([m])
        found.append(m)
    return found


async def test_a_retry_reason_no_header_can_carry_is_dead_lettered_once(gw: Gateway, tmp_path: Path) -> None:
    """``Retry`` with a file name read with surrogateescape, retries used up: the delivery is parked once with the
    reason as the headers can carry it. Before: ~690 handler calls and tracebacks in 6 s, nothing parked."""
    mid = await send_document(gw, tmp_path)
    dehui = over_https(gw, DEHUI, tmp_path, retry_limit=0)
    calls: list[str] = []

    @dehui.handles("document.official", version=1)
    async def on_document(doc: Any, ctx: Context) -> None:
        calls.append(ctx.message_id)
        raise Retry(0, "附件 /srv/in/\udcff.pdf 打不开")

    parked: list[Any] = []

    async def parked_once() -> bool:
        parked.extend(m for m in await dead_lettered(gw) if m.message_id == mid)
        return bool(parked)

    async with dehui:
        await until_async(parked_once, "the delivery parked in the dead-letter queue")
        await asyncio.sleep(1.0)
    assert calls == [mid]
    assert parked[0].headers["x-refused-code"] == "SDK_RETRIES_EXHAUSTED"
    assert "\ufffd" in str(parked[0].headers["x-refused-reason"])
    assert gw.state.mailbox.held(DEHUI) == 0


async def test_a_rejection_with_a_control_character_is_sent_to_the_sender_once(gw: Gateway, tmp_path: Path) -> None:
    """``Reject`` with a terminal's colour codes from the agency's system: the signed refusal is made (lxml refused
    the control character, and the delivery looped)."""
    mid = await send_document(gw, tmp_path)
    dehui = over_https(gw, DEHUI, tmp_path)
    calls: list[str] = []

    @dehui.handles("document.official", version=1)
    async def on_document(doc: Any, ctx: Context) -> None:
        calls.append(ctx.message_id)
        raise Reject("DOC_DUPLICATE_NUMBER", "对方系统返回：\x1b[31m文号重复\x1b[0m")

    async with dehui:

        async def settled() -> bool:
            return bool(calls) and gw.state.mailbox.held(DEHUI) == 0

        await until_async(settled, "the delivery refused and acknowledged")
        await asyncio.sleep(1.5)
        assert await dehui._wiring.store.seen([mid]) == {mid}
    assert calls == [mid]


async def test_a_copy_handed_out_again_while_the_first_is_handled_waits_for_it(gw: Gateway, tmp_path: Path) -> None:
    """A handler slower than the gateway's visibility timeout (2 s here) with two batch loops: the copy handed out
    again was handled beside the first (two handler calls, two rows of effects); now it waits and is recognised."""
    mid = await send_document(gw, tmp_path)
    dehui = over_https(gw, DEHUI, tmp_path, concurrency=2, max_batch=1, prefetch=4)
    calls: list[str] = []

    @dehui.handles("document.official", version=1)
    async def on_document(doc: Any, ctx: Context) -> None:
        calls.append(ctx.message_id)
        ctx.db.execute("CREATE TABLE IF NOT EXISTS effects (mid TEXT)")
        ctx.db.execute("INSERT INTO effects VALUES (?)", (ctx.message_id,))
        if len(calls) == 1:
            await asyncio.sleep(4)  # the agency's system is slow

    async with dehui:
        await asyncio.sleep(8)
        rows = dehui._wiring.store.conn.execute("SELECT count(*) FROM effects WHERE mid = ?", (mid,)).fetchone()[0]
    assert calls == [mid] and rows == 1


async def test_a_delivery_without_a_message_id_that_fails_the_checks_is_parked(gw: Gateway, tmp_path: Path) -> None:
    from hub.transport.topology import Outgoing

    t = gw.hub.transport
    await dead_lettered(gw)
    await t.publish_many([Outgoing(t.names.deliver_exchange, DEHUI, b"<not-an-envelope/>", {}, 0, "")])
    dehui = over_https(gw, DEHUI, tmp_path)
    parked: list[Any] = []

    async def parked_once() -> bool:
        parked.extend(m for m in await dead_lettered(gw) if m.body == b"<not-an-envelope/>")
        return bool(parked)

    async with dehui:
        await until_async(parked_once, "the delivery without an id parked")
    assert parked[0].headers["x-refused-by"] == DEHUI and parked[0].headers["x-refused-code"]
    assert gw.state.mailbox.held(DEHUI) == 0


async def test_a_batch_larger_than_the_gateway_hands_out_at_once_still_receives(gw: Gateway, tmp_path: Path) -> None:
    mid = await send_document(gw, tmp_path)
    dehui = over_https(gw, DEHUI, tmp_path, max_batch=100, prefetch=200)
    seen: list[str] = []

    @dehui.handles("document.official", version=1)
    async def on_document(doc: Any, ctx: Context) -> None:
        seen.append(ctx.message_id)

    async with dehui:

        async def handled() -> bool:
            return mid in seen

        await until_async(handled, "the delivery handled (polls asked for max=100 and were refused 400)")
