"""Two gateways on one hub, as behind a load balancer (a review of 2026-12-07): a delivery tag lives in the gateway
that handed the delivery out, so a tag brought to the other gateway is answered 421 ``GATEWAY_TAG_ELSEWHERE`` —
not 404, which reads as "acknowledged already" while the delivery comes again after the visibility timeout — and
the same tag brought to its own gateway acknowledges the delivery for good."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from gateway_client import Gateway, post, running_gateway
from harness import SYSTEMS, Hub, document

from hub.envelope import Recipient
from hub.settings import Settings

pytestmark = pytest.mark.integration

SENDER = "county-220122-oa"  # 农安
RECIPIENT = "county-220183-oa"  # 德惠
DEHUI = SYSTEMS[RECIPIENT]
VISIBILITY_S = 2


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "gwpair") as settings:
        yield settings


@pytest.fixture(scope="module")
async def pair(settings: Settings) -> AsyncIterator[tuple[Gateway, Gateway]]:
    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()
    clients = {s: SYSTEMS[s] for s in (SENDER, RECIPIENT)}
    config: dict[str, Any] = {"visibility_timeout_s": VISIBILITY_S, "answer_timeout_s": 20, "link_check_s": 0}
    try:
        async with running_gateway(hub, clients, **config) as a, running_gateway(hub, clients, **config) as b:
            yield a, b
    finally:
        await hub.close()


async def test_a_tag_is_settled_only_by_the_gateway_that_issued_it(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    recipient_a, recipient_b = a.session(RECIPIENT), b.session(RECIPIENT)
    status, headers, _ = await post(a.session(SENDER), a.hub.sign(SENDER, document(SENDER, [Recipient.to(DEHUI)])))
    assert status == 202
    mid = headers["X-Hub-Message-Id"]
    async with recipient_a.get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == mid
        tag = r.headers["X-Hub-Delivery-Tag"]

    # Brought to the other gateway (another connection the balancer sent there): not "unknown", but elsewhere.
    for verb, body in (("ack", None), ("release", None), ("refuse", {"code": "SIG_DIGEST", "reason": "test"})):
        async with recipient_b.post(f"/v1/inbox/{tag}/{verb}", json=body) as r:
            assert r.status == 421, (verb, r.status, await r.text())
            assert r.headers["X-Hub-Code"] == "GATEWAY_TAG_ELSEWHERE"
            answer = await r.json()
            assert answer["code"] == "GATEWAY_TAG_ELSEWHERE" and "affinity" in answer["detail"]
    async with recipient_b.post("/v1/inbox/ack", json={"tags": [tag, "no-such-tag"]}) as r:
        assert r.status == 200
        assert await r.json() == {"acknowledged": [], "unknown": ["no-such-tag"], "elsewhere": [tag]}

    # Brought to its own gateway: acknowledged (none of the above settled or put it back) ...
    async with recipient_a.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 204, await r.text()
    async with recipient_a.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 404 and r.headers["X-Hub-Code"] == "GATEWAY_NOT_FOUND"

    # ... for good: past the visibility timeout neither gateway hands it out again.
    async with recipient_a.get("/v1/inbox", params={"wait": str(VISIBILITY_S + 2)}) as r:
        assert r.status == 204, r.headers.get("X-Hub-Message-Id")
    async with recipient_b.get("/v1/inbox", params={"wait": "2"}) as r:
        assert r.status == 204, r.headers.get("X-Hub-Message-Id")

    # The tag named the gateway that issued it.
    assert tag.startswith(f"{a.state.mailbox.instance}.") and a.state.mailbox.instance != b.state.mailbox.instance
