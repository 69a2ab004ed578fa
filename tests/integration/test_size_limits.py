"""Messages over the size limit are refused twice over (issue 16): by the broker above twice the hub's limit (the
node's ``max_message_size``, set by scripts/ensure-services.sh: the publish fails, nothing is stored) and by the hub
between the two (a signed ENV_TOO_LARGE to the broker-authenticated publisher, nothing recorded)."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest

from hub.transport.users import amqp_url_for, provision
from tests.integration.harness import Hub

pytestmark = pytest.mark.asyncio

SYSTEM = "county-220122-oa"
BROKER_LIMIT = 8 * 1024 * 1024


async def test_over_the_hub_limit_is_a_signed_refusal_over_twice_it_the_broker_refuses(fresh_settings: Any) -> None:
    hub = Hub(fresh_settings)
    await hub.setup()
    try:
        await hub.start_worker()
        await provision(hub.settings, [(SYSTEM, None)])
        names = hub.transport.names
        connection = await aio_pika.connect(amqp_url_for(hub.settings, SYSTEM))
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(names.submit_exchange, ensure=False)
            user = names.user(SYSTEM)
            own_lane = names.inbound_key("normal", SYSTEM)

            # Between the hub's limit and the broker's: stored by the broker, refused by the hub with its code.
            body = b"<" + b"x" * (hub.settings.max_message_bytes + 10)
            await exchange.publish(aio_pika.Message(body, user_id=user, message_id="too-big"), routing_key=own_lane)
            got = await hub.drain(SYSTEM, expect=1, timeout=30)
            assert len(got) == 1
            _, answer = got[0]
            assert answer.service == "hub.error" and answer.sender.system == "hub"
            assert answer.body.findtext("{urn:forestry-hub:hub.error:1}Code") == "ENV_TOO_LARGE"

            # Over twice the hub's limit: the broker refuses the publish itself (the channel is closed with 406).
            huge = b"<" + b"x" * BROKER_LIMIT
            with pytest.raises(aio_pika.exceptions.AMQPError) as refused:
                await exchange.publish(aio_pika.Message(huge, user_id=user, message_id="huge"), routing_key=own_lane)
            assert "larger than configured max size" in str(refused.value) or "406" in str(refused.value)
        finally:
            await connection.close()
        await asyncio.sleep(0.5)
        assert await hub.depth(SYSTEM) == 0  # no second answer: the huge one never reached the hub
        async with hub.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM messages") == 0
    finally:
        await hub.close()
