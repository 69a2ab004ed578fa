"""The real worker's decisions without a broker or a database (issue 18): ``Worker`` on the in-memory transport
(``MemoryTransport``) and the store double (``MemoryStore``), with the processor ``hub run`` uses. 100 messages —
new ones, copies of them, quarantined, expired, and bytes that are no message at all — each get exactly the answer
the real hub gives: delivered once and hub-signed, a receipt (accepted, duplicate, quarantined), a signed error, or
parked in the dead-letter queue. The same worker code runs on RabbitMQ and PostgreSQL in
tests/integration/test_pipeline.py; the twins' contract is tests/integration/test_contracts.py."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from hub.envelope import Envelope, Party, Recipient, build, parse
from hub.pipeline.client import read_reply
from hub.pipeline.processor import CN_TZ
from hub.transport.memory import MemoryTransport
from hub.transport.topology import Incoming, Outgoing
from hub.trust.delivery import verify_delivery
from tests.hostile import costly

SENDER, RECIPIENT = costly.SENDER, costly.RECIPIENT


def _expired(kit: costly.Kit) -> bytes:
    created = datetime.now(CN_TZ) - timedelta(days=3)
    root = build(
        service="document.official",
        sender=Party(SENDER[1], SENDER[0]),
        recipients=[Recipient.to(RECIPIENT[1], RECIPIENT[0])],
        body=costly.sample_body("document.official"),
        created=created,
        expires=created + timedelta(days=1),
    )
    return kit.signed(root)


def _marked(kit: costly.Kit) -> bytes:
    body = costly.sample_body("document.official")
    ns = etree.QName(body).namespace
    next(body.iter(f"{{{ns}}}Paragraph")).text = "秘密★10年 本文件涉及森林防火部署。"
    return kit.signed(kit.envelope(body=copy.deepcopy(body)))


async def _drain(t: MemoryTransport, queue: str, expect: int, timeout: float = 20.0) -> list[Incoming]:
    got: list[Incoming] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < expect and loop.time() < deadline:
        batch = await t.fetch(queue, max_messages=500)
        got += batch
        await t.ack(batch)
        if not batch:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    late = await t.fetch(queue, max_messages=500)  # nothing more may come
    await t.ack(late)
    return got + late


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> costly.Kit:
    return costly.make_kit(tmp_path_factory.mktemp("memory-pipeline"))


async def test_a_hundred_messages_through_the_real_worker_in_memory(kit: costly.Kit, tmp_path: Path) -> None:
    p = kit.processor
    worker, names, broker, store = kit.memory_worker("mem")
    await worker.start()
    client = MemoryTransport(names, broker, user="client")
    try:
        fresh = [kit.typical() for _ in range(70)]
        copies = fresh[:10]
        marked = [_marked(kit) for _ in range(5)]
        expired = [_expired(kit) for _ in range(5)]
        junk = [b"<not-a-message>%d</not-a-message>" % i for i in range(5)] + [b"<broken %d" % i for i in range(5)]
        ids = {Envelope.from_tree(parse(d)).message_id for d in fresh}

        def inbound(data: bytes) -> Outgoing:
            return Outgoing(names.inbound_exchange, "normal", data, {}, 0, str(uuid.uuid4()))

        await client.publish_many([inbound(d) for d in [*fresh, *marked, *expired, *junk]])
        await asyncio.sleep(0.3)  # the first copies are recorded before their second copies arrive
        await client.publish_many([inbound(d) for d in copies])

        delivered = await _drain(client, names.system_queue(RECIPIENT[0]), 70)
        replies = await _drain(client, names.system_queue(SENDER[0]), 90)
        parked = await _drain(client, names.dead_letter_queue, 10)
    finally:
        await worker.stop()
        await client.close()

    # Delivered once each, with the hub's signature over the sender's signed content and the sender's own beside it.
    delivered_ids = Counter(Envelope.from_tree(parse(m.body)).message_id for m in delivered)
    assert set(delivered_ids) == ids and set(delivered_ids.values()) == {1}

    def is_hub(identity) -> bool:  # type: ignore[no-untyped-def]
        return bool(identity.fingerprint == p.signer.identity.fingerprint)

    opened = verify_delivery(parse(delivered[0].body), p.verifier, is_hub=is_hub)
    assert opened.hub.system == p.signer.identity.system
    assert opened.originator is not None and opened.originator.system == opened.envelope.sender.system

    answers = Counter()
    for m in replies:
        reply = read_reply(verify_delivery(parse(m.body), p.verifier, is_hub=is_hub).envelope)
        assert reply is not None
        answers[(reply.kind, reply.outcome)] += 1
    assert answers == {
        ("receipt", "accepted"): 70,
        ("receipt", "duplicate"): 10,
        ("receipt", "quarantined"): 5,
        ("error", "MSG_EXPIRED"): 5,
    }
    assert Counter(m.headers["x-hub-error-code"] for m in parked) == {"ENV_NOT_ENVELOPE": 5, "ENV_MALFORMED": 5}

    # What the store double holds: 70 accepted with nothing pending and answered, 5 quarantined, 5 refused (their
    # ids occupied: a replay is recognised), 10 refused intake that occupies no id.
    states = Counter(m.state for m in store.messages.values())
    assert states == {"accepted": 70, "quarantined": 5, "rejected": 5}
    assert all(not m.pending and m.answered for m in store.messages.values() if m.state == "accepted")
    assert len(store.rejections) == 10
