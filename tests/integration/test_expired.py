"""Deliveries that expire before their recipient takes them (hub/pipeline/expired.py), on the real RabbitMQ and
PostgreSQL with the real worker: the broker dead-letters the delivery at its envelope's Expires, the sender gets a
hub-signed hub.error DELIVERY_EXPIRED, the store records the delivery failed with that code, the letter waits in
the dead-letter queue for an operator, and a delivery that has not expired still waits in the recipient's queue."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from harness import Hub, document, hours, now

from hub.envelope import Envelope, Recipient, parse
from hub.transport import Outgoing

pytestmark = pytest.mark.integration

SENDER, RECIPIENT, RECIPIENT_AGENCY = "county-220122-oa", "city-220100-oa", "11220100013544550M"


async def test_a_delivery_that_expires_in_an_offline_recipients_queue_comes_back_to_its_sender(fresh_settings) -> None:
    hub = Hub(fresh_settings)
    await hub.setup()
    await hub.start_worker()
    try:
        names = hub.transport.names
        short = hub.sign(
            SENDER, document(SENDER, [Recipient.to(RECIPIENT_AGENCY)], expires=now() + timedelta(seconds=3))
        )
        long = hub.sign(SENDER, document(SENDER, [Recipient.to(RECIPIENT_AGENCY)], expires=now() + hours(2)))
        s_env, l_env = Envelope.from_tree(parse(short)), Envelope.from_tree(parse(long))
        await hub.publish([(s_env, short), (l_env, long)])
        receipts = await hub.inbox(SENDER).replies_for([s_env.message_id, l_env.message_id], timeout=30)
        assert {r.outcome for r in receipts.values()} == {"accepted"}
        # Another dead letter (not an expired delivery) also reaches ns.expired: it is only acknowledged.
        await hub.transport.publish_many(
            [Outgoing(names.dead_letter_exchange, "x", b"<not-a-delivery/>", {"x-hub-kind": "other"}, 0, "other")]
        )

        # The city reads nothing: at its Expires the short delivery leaves the city's queue, and 农安 is told.
        error = await hub.reply(SENDER, s_env.message_id, timeout=30)
        assert (error.kind, error.outcome) == ("error", "DELIVERY_EXPIRED"), error
        assert await hub.depth(RECIPIENT) == 1  # the other one still waits
        l_rows = await hub.pool.fetch("SELECT error_code FROM deliveries WHERE message_id = $1::uuid", l_env.message_id)
        assert [r["error_code"] for r in l_rows] == [None, None]
        # 长春市林业局 has two systems: both deliveries expired, each recorded failed, each answered once
        rows = await hub.pool.fetch(
            "SELECT recipient_system, error_code, failed_at FROM deliveries WHERE message_id = $1::uuid",
            s_env.message_id,
        )
        assert len(rows) == 2 and RECIPIENT in {r["recipient_system"] for r in rows}
        assert all(r["error_code"] == "DELIVERY_EXPIRED" and r["failed_at"] is not None for r in rows)
        sent = await hub.pool.fetchval(
            "SELECT count(*) FROM receipts WHERE message_id = $1::uuid AND code = 'DELIVERY_EXPIRED'",
            s_env.message_id,
        )
        assert sent == 2
        # the letters themselves wait for an operator in the dead-letter queue (with the other letter)
        assert await hub.transport.queue_depth(names.dead_letter_queue) == 3
        for _ in range(100):
            if await hub.transport.queue_depth(names.expired_queue) == 0:
                break
            await asyncio.sleep(0.05)
        assert await hub.transport.queue_depth(names.expired_queue) == 0

        got = await hub.drain(RECIPIENT, expect=1)
        assert [e.message_id for _, e in got] == [l_env.message_id]
    finally:
        await hub.close()
