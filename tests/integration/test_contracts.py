"""One contract, two implementations (issue 18): the pipeline's store (``hub.store.abc.Store``) and transport
(``hub.transport.abc.AbstractTransport``) behave the same in memory (``MemoryStore``, ``MemoryTransport``) and for
real (PostgreSQL through ``PgStore``, RabbitMQ through ``Transport``). Every test here runs against both, so a
test that passes on the twins says something about the real services — and the twins cannot drift silently."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest

from hub.errors import DeliveryError
from hub.settings import Settings
from hub.store.abc import Store
from hub.store.records import DeliveryRecord, MessageRecord, ReceiptRecord, Rejection
from hub.transport.abc import AbstractTransport
from hub.transport.names import Names
from hub.transport.topology import Incoming, Outgoing

pytestmark = pytest.mark.integration

CN = timezone(timedelta(hours=8))
SENDER = ("11220122013550216R", "county-220122-oa")
TO = [("11220100013544550M", "city-220100-oa"), ("11220183013553609R", "county-220183-oa")]


# ------------------------------------------------------------------------------------------------ the store


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest, pg_dsn: str) -> AsyncIterator[Store]:
    if request.param == "memory":
        from hub.store.memory import MemoryStore

        yield MemoryStore()
        return
    from hub.store.batch import PgStore
    from hub.store.db import create_pool

    pool = await create_pool(pg_dsn, min_size=1, max_size=2)
    s = PgStore(pool)
    try:
        yield s
    finally:
        await s.close()
        await pool.close()


def _record(state: str = "accepted", message_id: str | None = None) -> MessageRecord:
    now = datetime.now(CN)
    return MessageRecord(
        message_id=message_id or str(uuid.uuid4()),
        conversation_id=None,
        sender_agency=SENDER[0],
        sender_system=SENDER[1],
        service="document.official",
        version=1,
        classification=0,
        classification_label="公开",
        urgency="平件",
        created=now,
        expires=now + timedelta(days=1),
        raw=f"<contract {uuid.uuid4()}/>".encode(),
        deliveries=tuple(DeliveryRecord(a, s) for a, s in TO) if state != "rejected" else (),
        state=state,  # type: ignore[arg-type]
        markings=("秘密★",) if state == "quarantined" else (),
        error_code="ROUTE_NOT_ALLOWED" if state == "rejected" else None,
        error_reason="not allowed" if state == "rejected" else None,
    )


def _receipt(message_id: str, kind: str = "hub.receipt") -> ReceiptRecord:
    return ReceiptRecord(str(uuid.uuid4()), message_id, kind, SENDER[1])


async def test_a_new_message_then_its_copies(store: Store) -> None:
    rec = _record()
    async with store.batch() as b:
        first, twin = await b.record([rec, rec])
    assert (first.duplicate, first.state, first.needs_receipt, first.in_batch) == (False, "accepted", True, False)
    assert sorted(first.to_deliver) == sorted(s for _, s in TO)
    assert twin.duplicate and twin.in_batch  # a second copy in the same batch carries no work
    # Redelivered before anything was sent (a crash between record and publish): all of it is still to do.
    async with store.batch() as b:
        (again,) = await b.record([rec])
    assert (again.duplicate, again.state, again.needs_receipt) == (True, "accepted", True)
    assert sorted(again.to_deliver) == sorted(s for _, s in TO)
    async with store.batch() as b:
        await b.record_sent([rec.message_id], [_receipt(rec.message_id)])
    async with store.batch() as b:
        (done,) = await b.record([rec])
    assert (done.duplicate, done.state, done.to_deliver, done.needs_receipt) == (True, "accepted", (), False)


async def test_recording_what_was_sent_twice_is_harmless(store: Store) -> None:
    rec = _record()
    receipt = _receipt(rec.message_id)
    async with store.batch() as b:
        await b.record([rec])
        await b.record_sent([rec.message_id], [receipt])
        await b.record_sent([rec.message_id], [receipt])
        (again,) = await b.record([rec])
    assert (again.to_deliver, again.needs_receipt) == ((), False)


async def test_a_quarantined_message_delivers_nothing_until_released(store: Store) -> None:
    rec = _record("quarantined")
    async with store.batch() as b:
        (new,) = await b.record([rec])
        (dup,) = await b.record([rec])
    assert (new.duplicate, new.state, new.to_deliver, new.needs_receipt) == (False, "quarantined", (), True)
    assert (dup.duplicate, dup.state, dup.to_deliver, dup.needs_receipt) == (True, "quarantined", (), True)
    async with store.batch() as b:
        await b.record_sent([], [_receipt(rec.message_id)])
        (answered,) = await b.record([rec])
    assert answered.needs_receipt is False


async def test_a_refused_message_occupies_its_id_and_refused_intake_does_not(store: Store) -> None:
    rec = _record("rejected")
    refused = Rejection(raw=b"<x/>", error_code="SIG_VALUE", error_reason="bad", amqp_user="someone")
    async with store.batch() as b:
        (new,) = await b.record([rec], [refused])
        (dup,) = await b.record([rec])
    assert (new.duplicate, new.state, new.to_deliver) == (False, "rejected", ())
    assert (dup.duplicate, dup.state, dup.needs_receipt) == (True, "rejected", True)
    async with store.batch() as b:
        await b.record_sent([], [_receipt(rec.message_id, "hub.error")])
        (answered,) = await b.record([rec])
    assert answered.needs_receipt is False


async def test_outcomes_come_back_in_the_order_given(store: Store) -> None:
    recs = [_record() for _ in range(20)]
    async with store.batch() as b:
        outcomes = await b.record(recs)
    assert [o.message_id for o in outcomes] == [r.message_id for r in recs]


async def test_more_batches_than_connections_never_starve_the_pool(pg_dsn: str) -> None:
    """Five batches at once on a pool of two connections, three rounds, then the pool itself (as the worker's
    background jobs use it): every one gets a connection. The store once kept every connection a batch had used,
    so the pool sat empty in its spare list and the third batch waited on ``pool.acquire()`` for ever (the hang of
    the adapter crash tests: four emergency batches at once in a worker with four connections)."""
    from hub.store.batch import PgStore
    from hub.store.db import create_pool

    pool = await create_pool(pg_dsn, min_size=1, max_size=2)
    store = PgStore(pool)
    try:

        async def one() -> None:
            async with store.batch() as b:
                await b.record([_record()])
                await asyncio.sleep(0.05)  # the batches overlap

        for _ in range(3):
            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(5))), 10)
        assert len(store._spare) <= PgStore.MAX_SPARE
        async with asyncio.timeout(5):  # a background job's own connection
            async with pool.acquire() as conn:
                assert await conn.fetchval("select 1") == 1
    finally:
        await store.close()
        await pool.close()


# ------------------------------------------------------------------------------------------------ the transport


@pytest.fixture(params=["memory", "rabbitmq"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[AbstractTransport]:
    settings = Settings.from_env(namespace=f"hubtest-{uuid.uuid4().hex[:8]}")
    systems = [s for _, s in TO]
    if request.param == "memory":
        from hub.transport.memory import MemoryTransport

        t: AbstractTransport = MemoryTransport(Names(settings.namespace))
        await t.declare_topology(systems)
        yield t
        await t.close()
        return
    from hub.transport import Transport
    from hub.transport.users import teardown_namespace

    real = await Transport.connect(settings, client_name="contract-test")
    try:
        await real.declare_topology(systems)
        yield real
    finally:
        await real.close()
        await teardown_namespace(settings)


def _to(names: Names, system: str, body: bytes, priority: int = 0) -> Outgoing:
    return Outgoing(names.deliver_exchange, system, body, {"x-hub-kind": "delivery"}, priority, str(uuid.uuid4()))


async def _take(t: AbstractTransport, queue: str, n: int, timeout: float = 5.0) -> list[Incoming]:
    got: list[Incoming] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < n and asyncio.get_running_loop().time() < deadline:
        batch = await t.fetch(queue, max_messages=n - len(got))
        got += batch
        if not batch:
            await asyncio.sleep(0.02)
    return got


async def test_published_messages_reach_the_systems_queue_once(transport: AbstractTransport) -> None:
    names = transport.names
    queue = names.system_queue(TO[0][1])
    await transport.publish_many([_to(names, TO[0][1], b"<m>%d</m>" % i) for i in range(5)])
    got = await _take(transport, queue, 5)
    assert sorted(m.body for m in got) == sorted(b"<m>%d</m>" % i for i in range(5))
    await transport.ack(got)
    assert await _take(transport, queue, 1, timeout=0.3) == []


async def test_a_system_queue_hands_out_the_most_urgent_first(transport: AbstractTransport) -> None:
    names = transport.names
    system = TO[1][1]
    await transport.publish_many([_to(names, system, b"<low/>", 0), _to(names, system, b"<flash/>", 9)])
    await asyncio.sleep(0.2)  # both queued before the first is taken
    got = await _take(transport, names.system_queue(system), 2)
    assert [m.body for m in got] == [b"<flash/>", b"<low/>"]
    await transport.ack(got)


async def test_an_unroutable_publish_is_an_error_never_silent(transport: AbstractTransport) -> None:
    names = transport.names
    with pytest.raises(DeliveryError) as info:
        await transport.publish_many([_to(names, "no-such-system", b"<lost/>")])
    assert info.value.code == "DELIVERY_UNROUTABLE"


async def test_unsettled_messages_come_back_redelivered(transport: AbstractTransport) -> None:
    names = transport.names
    queue = names.system_queue(TO[0][1])
    await transport.publish_many([_to(names, TO[0][1], b"<again/>")])
    (first,) = await _take(transport, queue, 1)
    assert first.redelivered is False
    await transport.nack([first], requeue=True)
    (second,) = await _take(transport, queue, 1)
    assert (second.body, second.redelivered) == (b"<again/>", True)
    await transport.ack([second])


async def test_a_consumer_gets_batches_and_settles_them(transport: AbstractTransport) -> None:
    names = transport.names
    queue = names.system_queue(TO[1][1])
    seen: list[bytes] = []
    done = asyncio.Event()

    async def handler(batch: list[Incoming]) -> None:
        seen.extend(m.body for m in batch)
        await transport.ack(batch)
        if len(seen) >= 10:
            done.set()

    consumer = await transport.consume(queue, handler, prefetch=10, max_batch=4)
    try:
        await transport.publish_many([_to(names, TO[1][1], b"<c>%d</c>" % i) for i in range(10)])
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await consumer.stop()
    assert sorted(seen) == sorted(b"<c>%d</c>" % i for i in range(10))
    assert await transport.queue_depth(queue) == 0
