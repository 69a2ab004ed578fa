"""A recipient's ``delivery.refusal`` is not an open channel (routes/refusals.routes.xml routes it From every level
To <Any/>, and every system accepts it): the worker lets one go on only when the store shows that the hub delivered
its OriginalMessageId to the refusing system, and only to that message's original sender
(``hub.pipeline.decide.vouch_refusal``, ``hub.store.messages.delivered_from``). Anything else is refused
``REFUSAL_UNRELATED`` with a hub-signed hub.error to the refusal's sender, recorded as rejected, delivered nowhere.

On the real RabbitMQ and PostgreSQL with the real worker (both lanes), and through the SDK's ``TestHub`` (in memory,
on the real services, over the HTTPS gateway — whose batches run the same ``Worker.handle``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from harness import SYSTEMS, Hub, document, sample_body
from lxml import etree

from hub.envelope import Envelope, Party, Recipient, build
from hub.settings import Settings

SENDER, GOT_IT, NEVER_GOT_IT = "county-220122-oa", "county-220183-oa", "county-220182-oa"  # 农安, 德惠, 榆树
PORTAL, PROVINCE = "prov-220000-portal", "11220000013544357T"
R_NS = "urn:forestry-hub:delivery.refusal:1"


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "refusal") as settings:
        yield settings


@pytest.fixture(scope="module")
async def hub(settings: Settings) -> AsyncIterator[Hub]:
    h = Hub(settings)
    await h.setup()
    await h.start_worker()
    try:
        yield h
    finally:
        await h.close()


def refusal(
    refuser: str,
    original: str,
    to: Recipient,
    *,
    urgency: str = "平件",
    ref_to: str | None = "same",
    reason: str = "本系统无法办理该文件，请核实后重发。",
) -> etree._Element:
    body = sample_body("delivery.refusal")
    body.find(f"{{{R_NS}}}OriginalMessageId").text = original
    body.find(f"{{{R_NS}}}Reason").text = reason
    return build(
        service="delivery.refusal",
        sender=Party(SYSTEMS[refuser], refuser),
        recipients=[to],
        body=body,
        urgency=urgency,
        ref_to=original if ref_to == "same" else ref_to,
    )


async def delivered(hub: Hub, urgency: str = "平件") -> Envelope:
    """A document 农安 sends 德惠, taken from 德惠's queue (农安's receipt read)."""
    env = await hub.send(SENDER, document(SENDER, [Recipient.to(SYSTEMS[GOT_IT], GOT_IT)], urgency=urgency))
    assert (await hub.reply(SENDER, env.message_id)).outcome == "accepted"
    got = await hub.drain(GOT_IT, expect=1)
    assert [e.message_id for _, e in got] == [env.message_id]
    return env


async def refused_unrelated(hub: Hub, refuser: str, root: etree._Element) -> Envelope:
    """Send ``root`` as ``refuser``: it is answered REFUSAL_UNRELATED (hub-signed), recorded rejected, with the
    hub.error recorded as sent."""
    env = await hub.send(refuser, root)
    error = await hub.reply(refuser, env.message_id)
    assert (error.kind, error.outcome) == ("error", "REFUSAL_UNRELATED"), error
    assert error.envelope.sender.system == "hub" and error.envelope.ref_to == env.message_id
    row = await hub.pool.fetchrow("SELECT state, error_code FROM messages WHERE message_id = $1::uuid", env.message_id)
    assert (row["state"], row["error_code"]) == ("rejected", "REFUSAL_UNRELATED")
    assert not await hub.pool.fetchval("SELECT count(*) FROM deliveries WHERE message_id = $1::uuid", env.message_id)
    sent = await hub.pool.fetchval(
        "SELECT count(*) FROM receipts WHERE message_id = $1::uuid AND kind = 'hub.error' AND code = $2",
        env.message_id,
        "REFUSAL_UNRELATED",
    )
    assert sent == 1
    return env


@pytest.mark.integration
@pytest.mark.parametrize("urgency", ["平件", "特急"], ids=["normal-lane", "emergency-lane"])
async def test_a_refusal_of_a_delivered_message_reaches_its_original_sender(hub: Hub, urgency: str) -> None:
    original = await delivered(hub, urgency)
    env = await hub.send(
        GOT_IT, refusal(GOT_IT, original.message_id, Recipient.to(SYSTEMS[SENDER], SENDER), urgency=urgency)
    )
    receipt = await hub.reply(GOT_IT, env.message_id)
    assert (receipt.kind, receipt.outcome) == ("receipt", "accepted"), receipt
    got = await hub.drain(SENDER, expect=1)
    assert [(e.service, e.sender.system) for _, e in got] == [("delivery.refusal", GOT_IT)]
    assert got[0][1].body.findtext(f"{{{R_NS}}}OriginalMessageId") == original.message_id


@pytest.mark.integration
async def test_a_refusal_by_a_system_the_message_was_never_delivered_to_is_refused(hub: Hub) -> None:
    original = await delivered(hub)
    # 榆树 is 农安's peer too, but the document went to 德惠 only
    await refused_unrelated(
        hub, NEVER_GOT_IT, refusal(NEVER_GOT_IT, original.message_id, Recipient.to(SYSTEMS[SENDER], SENDER))
    )
    # the reviewer's case: a county "refusing" a message that never existed, to the provincial portal, with free text
    await refused_unrelated(
        hub,
        NEVER_GOT_IT,
        refusal(
            NEVER_GOT_IT,
            str(uuid.uuid4()),
            Recipient.to(PROVINCE, PORTAL),
            reason="任意正文：越级直接报送，绕过 document-up 路由" * 10,
        ),
    )
    assert await hub.depth(SENDER) == 0 and await hub.depth(PORTAL) == 0


@pytest.mark.integration
async def test_a_refusal_addressed_to_anyone_but_the_original_sender_is_refused(hub: Hub) -> None:
    original = await delivered(hub)
    # 德惠 did get it, but a refusal goes back to 农安 only: not to the provincial portal, not cc'd to anyone, not
    # about another message than its RefToMessageId names
    await refused_unrelated(hub, GOT_IT, refusal(GOT_IT, original.message_id, Recipient.to(PROVINCE, PORTAL)))
    both = refusal(GOT_IT, original.message_id, Recipient.to(SYSTEMS[SENDER], SENDER))
    both_env = Envelope.from_tree(both)
    cc = build(
        service="delivery.refusal",
        sender=both_env.sender,
        recipients=[Recipient.to(SYSTEMS[SENDER], SENDER), Recipient.cc(PROVINCE, PORTAL)],
        body=both_env.body,
        ref_to=original.message_id,
    )
    await refused_unrelated(hub, GOT_IT, cc)
    other = await delivered(hub)
    await refused_unrelated(
        hub,
        GOT_IT,
        refusal(GOT_IT, original.message_id, Recipient.to(SYSTEMS[SENDER], SENDER), ref_to=other.message_id),
    )
    assert await hub.depth(SENDER) == 0 and await hub.depth(PORTAL) == 0


# ------------------------------------------------------------------------------------------------ the SDK's TestHub


async def test_the_test_hub_refuses_unrelated_refusals_as_the_hub_does(mode: str) -> None:
    from adapters.sdk import Adapter, Context, HubRefused, to
    from adapters.sdk.testing import TestHub

    province = Adapter("prov-220000-oa")
    seen: list[Context] = []

    @province.handles("info.report", version=1)
    async def on_report(msg: Any, ctx: Context) -> None:
        seen.append(ctx)

    def body(original: str) -> etree._Element:
        el = sample_body("delivery.refusal")
        el.find(f"{{{R_NS}}}OriginalMessageId").text = original
        return el

    async with TestHub(province) as hub:
        county = await hub.client("county-222403-oa")
        receipt = await county.send(
            sample_body("info.report", "work-progress.xml"),
            service="info.report",
            version=1,
            to=[to(PROVINCE, "prov-220000-oa")],
        )
        await hub.wait_until(lambda: seen)
        report = receipt.message_id
        county_agency = seen[0].sender.agency
        # the portal never got the report
        portal = await hub.client(PORTAL)
        with pytest.raises(HubRefused) as caught:
            await portal.send(
                body(report), service="delivery.refusal", version=1, to=[to(county_agency, "county-222403-oa")]
            )
        assert caught.value.code == "REFUSAL_UNRELATED"
        # the province got it, but refuses it to someone else than its sender
        with pytest.raises(HubRefused) as caught:
            await province.send(
                body(report), service="delivery.refusal", version=1, to=[to(PROVINCE, PORTAL)], ref_to=report
            )
        assert caught.value.code == "REFUSAL_UNRELATED"
        # the province refuses it to its sender: accepted
        receipt = await province.send(
            body(report),
            service="delivery.refusal",
            version=1,
            to=[to(county_agency, "county-222403-oa")],
            ref_to=report,
        )
        assert receipt.accepted
