"""One way in per system (``hub.gateway.links``): the guard reads the broker's consumers, refuses a system whose own
user consumes its queue, shares one listing between the questions asked together, and lets requests through (with a
WARNING) when the management API cannot be asked; the mailbox gives a system's queue up to its AMQP consumer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping

import pytest

from hub.errors import BrokerUnavailable, title_of
from hub.gateway.links import CONFLICT, DOWN_S, LinkConflict, LinkGuard
from hub.gateway.mailbox import Mailbox
from hub.gateway.status import status_for_code
from hub.transport import MemoryTransport, Names, Outgoing

SYSTEM = "county-220122-oa"
OTHER = "county-220182-oa"


class _Broker:
    """The management API's consumer listing, counted."""

    def __init__(self, listing: Mapping[str, Collection[str]] | None = None) -> None:
        self.listing: Mapping[str, Collection[str]] = listing or {}
        self.asked = 0
        self.down = False
        self.delay = 0.0

    async def __call__(self) -> Mapping[str, Collection[str]]:
        self.asked += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise BrokerUnavailable("the RabbitMQ management API is unreachable (ClientConnectorError)")
        return self.listing


async def test_only_the_systems_own_user_is_a_conflict() -> None:
    names = Names("links")
    queue = names.system_queue(SYSTEM)
    # the hub's user (the gateway, a second gateway) and another system's user are not the system on AMQP
    broker = _Broker({queue: {"guest", names.user(OTHER)}})
    guard = LinkGuard(names, broker, fresh_s=0.0)
    await guard.check(SYSTEM)
    assert await guard.on_amqp([SYSTEM, OTHER]) == {}

    broker.listing = {queue: {"guest", names.user(SYSTEM)}}
    with pytest.raises(LinkConflict) as refused:
        await guard.check(SYSTEM)
    assert refused.value.code == CONFLICT == "GATEWAY_LINK_CONFLICT"
    assert names.user(SYSTEM) in refused.value.detail and "one way" in refused.value.detail
    assert await guard.on_amqp([SYSTEM, OTHER]) == {SYSTEM: [queue]}
    assert status_for_code(CONFLICT) == 409 and "AMQP" in title_of(CONFLICT)


async def test_one_listing_serves_the_questions_asked_together() -> None:
    names = Names("links")
    now = [0.0]
    broker = _Broker()
    broker.delay = 0.05
    guard = LinkGuard(names, broker, fresh_s=2.0, clock=lambda: now[0])
    await asyncio.gather(*(guard.check(f"county-2201{i:02d}-oa") for i in range(10)))
    assert broker.asked == 1  # the others waited for the listing on its way
    await guard.check(SYSTEM)
    assert broker.asked == 1  # still fresh
    now[0] = 2.5
    await guard.check(SYSTEM)
    assert broker.asked == 2
    guard.forget()
    await guard.check(SYSTEM)
    assert broker.asked == 3


async def test_without_the_management_api_requests_go_through_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fail open: a request is let through when the API fails; for ``DOWN_S`` after a failure no request waits for
    the API again (a hanging API would hold each system's first request for its timeout); one WARNING a minute."""
    names = Names("links")
    now = [0.0]
    broker = _Broker({names.system_queue(SYSTEM): {names.user(SYSTEM)}})
    broker.down = True
    guard = LinkGuard(names, broker, fresh_s=0.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="hub.gateway"):
        await guard.check(SYSTEM)
        await guard.check(OTHER)
        assert broker.asked == 1  # the second was let through without asking
        now[0] = DOWN_S + 1
        await guard.check(SYSTEM)
        assert broker.asked == 2
        now[0] = 61.0
        await guard.check(SYSTEM)
        assert broker.asked == 3
    warned = [r for r in caplog.records if "management API" in r.getMessage()]
    assert len(warned) == 2  # at most one a minute
    assert "unreachable" in warned[0].getMessage()  # the reason is named
    broker.down = False
    await guard.check(SYSTEM)  # still within DOWN_S of the last failure: through
    now[0] = 61.0 + DOWN_S + 1
    with pytest.raises(LinkConflict):
        await guard.check(SYSTEM)


async def test_a_cancelled_asker_does_not_strand_the_others() -> None:
    broker = _Broker()
    broker.delay = 0.2
    guard = LinkGuard(Names("links"), broker, fresh_s=0.0)
    first = asyncio.create_task(guard.check(SYSTEM))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(guard.check(OTHER))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.wait_for(second, 1)  # answered (without a listing: let through), not left waiting
    assert first.cancelled()


async def test_the_mailbox_refuses_then_gives_way() -> None:
    names = Names("links-mailbox")
    transport = MemoryTransport(names)
    await transport.declare_topology([SYSTEM])
    queue = names.system_queue(SYSTEM)
    broker = _Broker({queue: {names.user(SYSTEM)}})
    guard = LinkGuard(names, broker, fresh_s=0.0)
    box = Mailbox(transport, prefetch=8, visibility_timeout=30, guard=guard, link_check_s=0.05)
    try:
        with pytest.raises(LinkConflict):
            await box.open(SYSTEM)  # on AMQP: the gateway does not consume its queue
        with pytest.raises(LinkConflict):
            await box.next_items(SYSTEM, 0, 1)
        await transport.publish_many(
            [Outgoing(names.deliver_exchange, SYSTEM, f"<d{i}/>".encode(), {}, 0, f"d-{i}") for i in range(3)]
        )
        await asyncio.sleep(0.05)
        assert len(transport.broker.queues[queue].ready) == 3 and box.held(SYSTEM) == 0  # nobody here took them

        broker.listing = {}  # its AMQP consumer stopped
        await box.open(SYSTEM)
        handed = await box.next_items(SYSTEM, 2, 1)
        assert len(handed) == 1
        await asyncio.sleep(0.05)
        assert box.held(SYSTEM) == 3  # one handed out, two waiting

        broker.listing = {queue: {names.user(SYSTEM)}}  # an AMQP consumer of the system appears
        for _ in range(100):
            if box.held(SYSTEM) == 0:
                break
            await asyncio.sleep(0.02)
        assert box.held(SYSTEM) == 0
        assert not await box.ack(SYSTEM, handed[0].token)  # it went back with the others
        with pytest.raises(LinkConflict):
            await box.next_items(SYSTEM, 0, 1)
        # a delivery the stopped consumer still hands over (one in flight when it was cancelled) is not held: the
        # consumer puts it back
        [late] = await transport.fetch(queue, max_messages=1)
        await asyncio.wait_for(box._handle(box._box(SYSTEM), [late]), 1)
        assert box.held(SYSTEM) == 0 and not box.reading(SYSTEM)
        await transport.nack([late], requeue=True)
    finally:
        await box.close()
        await transport.close()
    # everything the gateway held is in the queue again, for the system's AMQP consumer
    assert sorted(m.message_id or "" for _, _, m in transport.broker.queues[queue].ready) == ["d-0", "d-1", "d-2"]


def test_the_check_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    from hub.gateway.config import GatewaySettings

    monkeypatch.delenv("HUB_GATEWAY_LINK_CHECK_S", raising=False)
    assert GatewaySettings.for_state(Path(str(tmp_path))).link_check_s == 10.0
    monkeypatch.setenv("HUB_GATEWAY_LINK_CHECK_S", "0")
    assert GatewaySettings.for_state(Path(str(tmp_path))).link_check_s == 0.0  # off: the gateway builds no guard
    monkeypatch.setenv("HUB_GATEWAY_LINK_CHECK_S", "30")
    assert GatewaySettings.for_state(Path(str(tmp_path)), link_check_s=5).link_check_s == 5  # an override wins
