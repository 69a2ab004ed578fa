"""The transport's returns and consumer tags on the real RabbitMQ (review of hub/transport, 2026-12-07): a returned
message without an id, the routing key an unroutable fan-out is named by, and which queue a delivery of a multi-queue
consumer came from while it was still subscribing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from hub.errors import BrokerUnavailable
from hub.settings import Settings
from hub.transport import Incoming, Outgoing, Transport
from hub.transport.users import teardown_namespace

pytestmark = pytest.mark.integration

SYSTEMS = ["sys-a", "sys-b"]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env(namespace=f"trt-{uuid.uuid4().hex[:8]}")


@pytest_asyncio.fixture(scope="module")
async def hub(settings: Settings) -> AsyncIterator[Transport]:
    transport = await Transport.connect(settings, client_name=f"{settings.namespace}-hub")
    await transport.declare_topology(SYSTEMS)
    try:
        yield transport
    finally:
        await transport.close()
        await teardown_namespace(settings)


@pytest.fixture(params=["batch", "per-message"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, hub: Transport) -> Iterator[str]:
    """Both publish paths: the fast batch (hub.transport._aiormq_fast) and aiormq's own."""
    monkeypatch.setattr(hub, "fast", request.param == "batch")
    yield str(request.param)


async def test_an_unroutable_publish_without_message_id_is_not_lost_silently(hub: Transport, path: str) -> None:
    """The hub publishes message_id "" for copies of deliveries that had none (retry_of, dead_letter_of, dead replay).
    On the fast path such a copy, when unroutable, came back without an id: aiormq dropped the return, the broker
    acked, and the publish reported success — the message gone. It is DELIVERY_UNROUTABLE now, as on aiormq's path."""
    n = hub.names
    with pytest.raises(BrokerUnavailable) as err:
        await hub.publish_many([Outgoing(n.deliver_exchange, "no-such-system", b"<x/>", {}, 0, "")])
    assert err.value.code == "DELIVERY_UNROUTABLE"


async def test_an_unroutable_copy_of_a_fanout_is_named_by_its_own_routing_key(hub: Transport, path: str) -> None:
    """A fan-out repeats one message id and a return is matched to the last publish with it: the error named the
    routing key of the copy that did reach its queue, pointing the operator at a healthy system."""
    n = hub.names
    mid = str(uuid.uuid4())
    with pytest.raises(BrokerUnavailable) as err:
        await hub.publish_many(
            [
                Outgoing(n.deliver_exchange, "no-such-system", b"<x/>", {}, 0, mid),
                Outgoing(n.deliver_exchange, "sys-b", b"<x/>", {}, 0, mid),
            ]
        )
    got = await hub.fetch(n.system_queue("sys-b"))
    await hub.ack(got)
    assert "'no-such-system'" in err.value.detail and "'sys-b'" not in err.value.detail, err.value.detail


async def test_a_multi_queue_consumer_files_each_delivery_under_its_own_queue(hub: Transport) -> None:
    """Consumer(queues=[A, B]) learnt B's consumer tag from the broker's reply, after B's first deliveries had been
    handed over (in line, right after ConsumeOk): they were filed under A — the wrong Incoming.queue (and
    x-hub-original-queue), and A's share instead of B's."""
    n = hub.names
    qa, qb = n.system_queue("sys-a"), n.system_queue("sys-b")
    await hub.publish_many(
        [Outgoing(n.deliver_exchange, "sys-b", b"<b/>", {}, 0, str(uuid.uuid4())) for _ in range(50)]
    )
    got: list[Incoming] = []
    done = asyncio.Event()

    async def handler(batch: list[Incoming]) -> None:
        got.extend(batch)
        await hub.ack(batch)
        if len(got) >= 50:
            done.set()

    consumer = await hub.consume([qa, qb], handler, prefetch=64, max_batch=16, linger=0.01)
    try:
        await asyncio.wait_for(done.wait(), 20)
    finally:
        await consumer.stop()
    wrong = [m for m in got if m.queue != qb]
    assert not wrong, f"{len(wrong)} of {len(got)} deliveries of {qb} were filed under {wrong[0].queue}"


async def test_a_held_back_queue_is_held_back_from_its_first_delivery(hub: Transport) -> None:
    """A queue whose share is 0 (a system in debt: hub.pipeline.lanes) gives nothing to a batch — also what arrived
    while the consumer was subscribing, which went into the first queue's buffer and was handled at its share."""
    n = hub.names
    qa, qb = n.system_queue("sys-a"), n.system_queue("sys-b")
    await hub.publish_many(
        [Outgoing(n.deliver_exchange, "sys-b", b"<b/>", {}, 0, str(uuid.uuid4())) for _ in range(50)]
    )
    got: list[Incoming] = []

    async def handler(batch: list[Incoming]) -> None:
        got.extend(batch)
        await hub.ack(batch)

    consumer = await hub.consume(
        [qa, qb], handler, prefetch=64, max_batch=16, linger=0.01, share=lambda q: 0 if q == qb else 16
    )
    try:
        await asyncio.sleep(1.0)
    finally:
        await consumer.stop(drain=False)
        left = await hub.fetch(qb, max_messages=100)
        await hub.ack(left)
    assert len(left) == 50 and not got, f"{len(got)} messages of the held-back queue were handled"
