"""One system's flood does not stand in front of the others' messages (issue 16, hostile traffic), on the real broker
and store: every system publishes into its own inbound lane (``ns.submit``, ``<lane>.<its id>``, a RabbitMQ topic
permission), the worker reads the lanes in turn, and a system whose messages the hub refuses is read at its refusal
rate — its flood waits, kept, in its own queue."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hub.envelope import Envelope, Recipient, parse
from hub.pipeline.client import connect_as, outgoing
from hub.transport.users import provision
from tests.integration.harness import SYSTEMS, Hub, document

pytestmark = pytest.mark.asyncio

FLOODER = "county-220183-oa"  # 德惠: a compromised system
SENDER = "county-220122-oa"  # 农安
CITY = "city-220100-oa"  # 长春
CITY_AGENCY = SYSTEMS[CITY]
FLOOD = 1500


def _tampered(hub: Hub) -> tuple[Envelope, bytes]:
    """A document 德惠 signed, its title altered after signing: the hub refuses it (SIG_DIGEST) after a full
    verification, with a signed error to 德惠."""
    data = hub.sign(FLOODER, document(FLOODER, [Recipient.to(CITY_AGENCY, CITY)]))
    env = Envelope.from_tree(parse(data))
    at = data.index(b"<d:Title>") + len(b"<d:Title>")
    return env, data[:at] + "改".encode() + data[at:]


async def test_a_flood_waits_in_its_own_lane_while_another_system_is_served(fresh_settings: Any) -> None:
    hub = Hub(fresh_settings)
    await hub.setup()
    try:
        await hub.start_worker()
        assert hub.worker is not None
        names = hub.transport.names
        await provision(hub.settings, [(FLOODER, None), (SENDER, None)])
        flood = [_tampered(hub) for _ in range(FLOOD)]
        valid = []
        for _ in range(5):
            data = hub.sign(SENDER, document(SENDER, [Recipient.to(CITY_AGENCY, CITY)]))
            valid.append((Envelope.from_tree(parse(data)), data))

        bad = await connect_as(hub.settings, FLOODER)
        good = await connect_as(hub.settings, SENDER)
        try:
            await bad.publish_many([outgoing(bad, env, data, as_system=True) for env, data in flood])
            flood_lane = names.system_inbound_queue("normal", FLOODER)
            assert (await hub.transport.queue_depth(flood_lane)) > FLOOD - 300  # the worker holds a prefetch window
            started = time.monotonic()
            await good.publish_many([outgoing(good, env, data, as_system=True) for env, data in valid])
            got = await hub.drain(CITY, expect=5, timeout=30)
            served_s = time.monotonic() - started
        finally:
            await bad.close()
            await good.close()

        assert sorted(e.message_id for _, e in got) == sorted(env.message_id for env, _ in valid)
        # When 农安's documents were delivered, most of the flood still waited in 德惠's own lane: they did not wait
        # behind it (with one queue for everybody they came after all of it).
        waiting = await hub.transport.queue_depth(flood_lane)
        assert waiting > FLOOD // 2, (waiting, served_s)
        # The flood is read, at 德惠's refusal rate, and each message is answered: nothing is lost.
        first = [env.message_id for env, _ in flood[:20]]
        replies = await hub.inbox(FLOODER).replies_for(first, timeout=30)
        assert len(replies) == 20 and {r.kind for r in replies.values()} == {"error"}, replies
        assert {r.outcome for r in replies.values()} == {"SIG_DIGEST"}
        assert hub.worker.standing.share(names.user(FLOODER)) <= 8  # in debt or close to it
        assert hub.worker.standing.share(names.user(SENDER)) >= 8 + 5 - 1  # earned by what was accepted
    finally:
        await hub.close()


async def test_a_copy_put_into_another_systems_lane_by_a_cc_header_is_dropped_unexamined(
    fresh_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """RabbitMQ routes a message by the keys of its ``CC`` and ``BCC`` headers as well, and no topic permission checks
    them: 农安 publishes into its own lane with ``CC: normal.<德惠>``, so a copy lands in 德惠's own lane (a way to
    stand in front of 德惠's messages). The worker drops that copy unexamined; the message is taken from 农安's own
    lane, delivered once and examined once (before, the copy in 德惠's lane was examined too: a second decision)."""
    import asyncio
    import logging

    hub = Hub(fresh_settings)
    await hub.setup()
    try:
        await hub.start_worker()
        names = hub.transport.names
        await provision(hub.settings, [(FLOODER, None), (SENDER, None)])
        data = hub.sign(SENDER, document(SENDER, [Recipient.to(CITY_AGENCY, CITY)]))
        env = Envelope.from_tree(parse(data))
        good = await connect_as(hub.settings, SENDER)
        with caplog.at_level(logging.INFO, logger="hub"):
            try:
                out = outgoing(good, env, data, as_system=True)
                out.headers = {"CC": [names.inbound_key("normal", FLOODER)]}
                await good.publish_many([out])
            finally:
                await good.close()
            got = await hub.drain(CITY, expect=1, timeout=30)
            assert [e.message_id for _, e in got] == [env.message_id]
            await asyncio.sleep(2.0)  # the copy in 德惠's lane is read by now
        assert await hub.transport.queue_depth(names.system_inbound_queue("normal", FLOODER)) == 0
        assert await hub.drain(CITY, timeout=1) == []
        decided = [
            r for r in caplog.records if r.name == "hub.decision" and getattr(r, "message_id", "") == env.message_id
        ]
        assert len(decided) == 1, [r.getMessage()[:200] for r in decided]
        dropped = [r.getMessage() for r in caplog.records if "copies in other systems' inbound lanes" in r.getMessage()]
        assert len(dropped) == 1 and names.user(SENDER) in dropped[0]
    finally:
        await hub.close()
