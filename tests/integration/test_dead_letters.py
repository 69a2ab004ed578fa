"""Dead letters on the real RabbitMQ and PostgreSQL (issue 15): a message the hub dead-lettered after its last
retry and a delivery a system refused (``park_refused``, as the system's own AMQP user) are collected from
``ns.dead`` exactly once — also when ``collect`` runs twice or dies between its insert and its ack — and a replay
puts each back where it was going (the recipient gets it), recorded in ``operator_actions`` and the evidence
chain; replaying twice is refused with a stable code. ``hub dead list/show/replay`` run as the operator runs them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from harness import Hub, document

from hub.envelope import Envelope, Recipient, parse
from hub.errors import HubError, StoreUnavailable
from hub.pipeline import dead
from hub.settings import Settings
from hub.store import dead_letters, ops

pytestmark = pytest.mark.integration

SENDER = "county-220122-oa"
RECIPIENT = "county-220183-oa"
RECIPIENT_AGENCY = "11220183013553609R"


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "dead") as settings:
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


class _CrashBeforeAck:
    """A transport whose ack never happens: the process 'dies' after the insert committed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.names = inner.names
        self.user = inner.user

    async def fetch(self, queue: str, *, max_messages: int = 100) -> list[Any]:
        return await self.inner.fetch(queue, max_messages=max_messages)

    async def ack(self, batch: Any) -> None:
        raise RuntimeError("killed between insert and ack")

    async def nack(self, batch: Any, *, requeue: bool = True) -> None:
        raise AssertionError("collect must not nack after a committed insert")


async def _dead_depth(hub: Hub) -> int:
    return await hub.transport.queue_depth(hub.transport.names.dead_letter_queue)


async def _wait_dead(hub: Hub, n: int) -> None:
    for _ in range(300):
        if await _dead_depth(hub) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{n} message(s) never reached the dead-letter queue")


async def _collect_crashing(hub: Hub) -> None:
    """collect with a transport that dies after the insert: the insert is committed, the messages unacked; closing
    the connection hands them back to the queue (what a killed process's connection does)."""
    from hub.transport import Transport

    t = await Transport.connect(hub.settings, client_name="test-dead-crash")
    try:
        with pytest.raises(RuntimeError, match="killed between insert and ack"):
            await dead.collect(hub.settings, hub.pool, _CrashBeforeAck(t))
    finally:
        await t.close()


async def test_a_message_the_hub_dead_lettered_is_collected_once_and_replayed_into_its_lane(hub: Hub) -> None:
    import hub.store.messages as messages
    from hub.pipeline.client import outgoing

    data = hub.sign(SENDER, document(SENDER, [Recipient.to(RECIPIENT_AGENCY)]))
    env = Envelope.from_tree(parse(data))
    # Its 8th attempt (documents.routes.xml allows 8) while PostgreSQL is down: the hub dead-letters it.
    item = dataclasses.replace(outgoing(hub.transport, env, data, as_system=False), headers={"x-hub-attempt": 7})
    original = messages.record_batch

    async def down(executor, records, rejections=()):  # type: ignore[no-untyped-def]
        if any(r.message_id == env.message_id for r in records):
            raise StoreUnavailable("PostgreSQL is unavailable while recording a batch (injected)")
        return await original(executor, records, rejections)

    messages.record_batch = down  # the worker imports it at call time
    try:
        await hub.transport.publish_many([item])
        await _wait_dead(hub, 1)
    finally:
        messages.record_batch = original

    await _collect_crashing(hub)
    rows = await dead_letters.list_dead(hub.pool)
    assert [r.claimed_message_id for r in rows] == [env.message_id]  # committed before the (lost) ack
    await _wait_dead(hub, 1)  # … and the message is back in the queue
    assert await dead.collect(hub.settings, hub.pool) == 0  # the redelivered copy finds its row
    assert await dead.collect(hub.settings, hub.pool) == 0
    assert await _dead_depth(hub) == 0
    [row] = await dead_letters.list_dead(hub.pool, state=None)
    assert (row.kind, row.reason, row.code) == ("inbound", "hub", "DELIVERY_STORE")
    assert row.source_queue == hub.transport.names.inbound_queue("normal") and row.message_id is None
    assert row.state == "pending"

    # hub dead list / show, as an operator runs them
    listed = await hub.cli("dead", "list")
    assert listed.returncode == 0, listed.stderr
    assert str(row.id) in listed.stdout and "DELIVERY_STORE" in listed.stdout and env.message_id in listed.stdout
    shown = await hub.cli("dead", "show", str(row.id))
    assert shown.returncode == 0, shown.stderr
    assert "来源队列 queue" in shown.stdout and "未核验 unverified" in shown.stdout

    replayed = await hub.cli(
        "dead", "replay", str(row.id), "--reason", "数据库已恢复 database back", "--operator", "duty1"
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "已重放 replayed" in replayed.stdout and hub.transport.names.inbound_queue("normal") in replayed.stdout
    reply = await hub.reply(SENDER, env.message_id, timeout=20)
    assert (reply.kind, reply.outcome) == ("receipt", "accepted")
    got = await hub.drain(RECIPIENT, expect=1)
    assert [e.message_id for _, e in got] == [env.message_id]

    stored = await dead_letters.get(hub.pool, row.id)
    assert stored is not None and stored.state == "replayed" and stored.replayed_by == "duty1"
    assert stored.replay_reason == "数据库已恢复 database back"
    action = await hub.pool.fetchrow(
        "SELECT id, operator, role, action, via, target, outcome, reason FROM operator_actions"
        " WHERE action = 'dead.replay' AND target = $1 ORDER BY id",
        str(row.id),
    )
    assert (action["operator"], action["via"], action["outcome"]) == ("duty1", "cli", "done")
    assert action["role"] == "console"  # duty1 has no ops-page account: not recorded under a role it does not hold
    chained = await hub.pool.fetch(
        "SELECT detail FROM evidence WHERE kind = 'operator_action' UNION ALL"
        " SELECT detail FROM evidence_pending WHERE kind = 'operator_action'"
    )
    assert any(json.loads(r["detail"]).get("action_id") == action["id"] for r in chained)

    again = await hub.cli("dead", "replay", str(row.id), "--reason", "once more", "--operator", "duty2")
    assert again.returncode == 2 and "hub: DEAD_ALREADY_REPLAYED" in again.stderr
    refused = await hub.pool.fetchval(
        "SELECT count(*) FROM operator_actions WHERE action = 'dead.replay' AND outcome = 'refused'"
        " AND operator = 'duty2'"
    )
    assert refused == 1
    missing = await hub.cli("dead", "show", "999999")
    assert missing.returncode == 2 and "hub: DEAD_NOT_FOUND" in missing.stderr
    # A blank reason was a ValueError out of dead.replay (INTERNAL); --limit past what the store reads was cut to it
    # without a word. Both are refused by name, before anything is read.
    blank = await hub.cli("dead", "replay", str(row.id), "--reason", " ", "--operator", "duty2")
    assert blank.returncode == 2 and "hub: CONFIG" in blank.stderr and "--reason" in blank.stderr, blank.stderr
    too_many = await hub.cli("dead", "list", "--limit", "1000")
    assert too_many.returncode == 2 and "--limit" in too_many.stderr and "500" in too_many.stderr
    assert await hub.depth(RECIPIENT) == 0  # the refused replay sent nothing


async def test_a_refused_delivery_is_collected_once_and_replayed_to_the_system(hub: Hub) -> None:
    from hub.pipeline.client import connect_as, park_refused
    from hub.transport.users import provision

    await provision(hub.settings, [(RECIPIENT, None)])  # the recipient parks as its own AMQP user
    env = await hub.send(SENDER, document(SENDER, [Recipient.to(RECIPIENT_AGENCY)]))
    assert (await hub.reply(SENDER, env.message_id)).outcome == "accepted"
    own = await connect_as(hub.settings, RECIPIENT)
    try:
        taken: list[Any] = []
        for _ in range(200):
            taken += await own.fetch(own.names.system_queue(RECIPIENT))
            if taken:
                break
            await asyncio.sleep(0.05)
        [m] = taken
        assert m.message_id == env.message_id
        assert await park_refused(own, RECIPIENT, [(m, "ADAPTER_REFUSED", "收件系统拒收 refused in a test")]) == []
        await own.ack([m])
    finally:
        await own.close()
    await _wait_dead(hub, 1)

    await _collect_crashing(hub)
    await _wait_dead(hub, 1)
    assert await dead.collect(hub.settings, hub.pool) == 0
    assert await _dead_depth(hub) == 0
    [row] = [r for r in await dead_letters.list_dead(hub.pool) if r.claimed_message_id == env.message_id]
    assert (row.kind, row.reason, row.refused_by, row.code) == ("delivery", "refused", RECIPIENT, "ADAPTER_REFUSED")
    assert row.publisher == hub.transport.names.user(RECIPIENT)  # authenticated by RabbitMQ

    result = await dead.replay(
        hub.settings, hub.pool, row.id, operator="duty1", role="duty", via="web", reason="收件系统已修复 fixed"
    )
    assert result.queue == hub.transport.names.system_queue(RECIPIENT) and result.message_id == env.message_id
    got = await hub.drain(RECIPIENT, expect=1)
    assert [e.message_id for _, e in got] == [env.message_id]  # verified: the hub's and the sender's signatures
    ((m2, _),) = got
    assert m2.headers["x-hub-kind"] == "delivery" and m2.headers[dead.REPLAY_HEADER] == row.id
    action = await hub.pool.fetchrow(
        "SELECT via, message_id, outcome FROM operator_actions WHERE id = $1", result.action_id
    )
    assert (action["via"], str(action["message_id"]), action["outcome"]) == ("web", env.message_id, "done")
    done = await dead.show(hub.pool, row.id)
    assert (done.state, done.message_id) == ("replayed", env.message_id)  # the id the replay verified
    t = await ops.trace(hub.pool, env.message_id)
    assert t is not None and [d.id for d in t.dead_letters] == [row.id]
    with pytest.raises(HubError) as info:
        await dead.replay(hub.settings, hub.pool, row.id, operator="duty1", role="duty", via="web", reason="again")
    assert info.value.code == "DEAD_ALREADY_REPLAYED"
    with pytest.raises(HubError) as info:
        await dead.replay(hub.settings, hub.pool, 424242, operator="duty1", role="duty", via="web", reason="x")
    assert info.value.code == "DEAD_NOT_FOUND"


def _letter(**kw: Any) -> dead_letters.DeadLetter:
    base = dict(
        id=1, first_seen=datetime.now(UTC), kind="delivery", source_queue=None, source_exchange=None,
        routing_key="b-sys", reason="refused", code="X", detail=None, refused_by="b-sys", publisher=None,
        claimed_message_id=None, message_id=None, priority=0, correlation_id=None, body_size=3, body_sha256="00",
        state="pending", replayed_by=None, replayed_at=None, replay_reason=None,
    )  # fmt: skip
    base.update(kw)
    return dead_letters.DeadLetter(**base)  # type: ignore[arg-type]


def test_a_refusal_goes_back_only_to_the_system_rabbitmq_authenticated() -> None:
    from hub.transport.names import Names

    names = Names("ns")
    # a system cannot have a delivery replayed into another system's queue by naming it in x-refused-by
    assert dead._target_system(names, _letter(publisher="ns.a-sys"), "hub-admin") is None
    assert dead._target_system(names, _letter(publisher=None), "hub-admin") is None
    assert dead._target_system(names, _letter(publisher="ns.b-sys"), "hub-admin") == "b-sys"
    assert dead._target_system(names, _letter(publisher="hub-admin"), "hub-admin") == "b-sys"
    # a delivery RabbitMQ dead-lettered from a system queue goes back to that queue (after verification)
    letter = _letter(refused_by=None, source_queue="ns.q.c-sys")
    assert dead._target_system(names, letter, "hub-admin") == "c-sys"


def test_a_replay_and_the_hubs_copies_never_carry_a_cc_or_bcc() -> None:
    """RabbitMQ routes a message by the keys of its ``CC`` and ``BCC`` headers too, which no permission checks: a
    letter a system parked with ``CC: <another system>``, replayed to ns.deliver with its headers, would put a copy
    into that system's queue; so would the hub's retry or dead-letter copy of a message it was sent with. None of
    them carries those headers."""
    from hub.transport.names import Names
    from hub.transport.topology import Incoming, dead_letter_of, moved_lane_of, retry_of

    cc = {"CC": ["c-sys"], "BCC": ["c-sys"], "x-hub-kind": "delivery"}
    headers = dead._copy_headers(_letter(headers_json=json.dumps(cc)))
    assert "CC" not in headers and "BCC" not in headers and headers["x-hub-kind"] == "delivery"
    names = Names("ns")
    m = Incoming(
        body=b"<x/>", routing_key="normal.a-sys", exchange="ns.submit", headers=cc, message_id="m", user_id="ns.a-sys",
        priority=0, redelivered=False, queue="ns.in.normal.a-sys", delivery_tag=1,
    )  # fmt: skip
    copies = [retry_of(names, m, hub_user="hub"), moved_lane_of(names, m, hub_user="hub")]
    copies.append(dead_letter_of(names, m, code="X", reason="x", hub_user="hub"))
    for copy in copies:
        assert copy is not None and "CC" not in copy.headers and "BCC" not in copy.headers, copy


async def test_what_a_system_writes_into_the_dead_letter_queue_is_stored_but_never_replayed_elsewhere(
    hub: Hub,
) -> None:
    """ns.dead is writable by every system. A forged refusal naming another system, and bytes with no dead-letter
    headers at all (NUL characters included), are stored for the operator to see; replaying either is refused
    (DEAD_NOT_REPLAYABLE, recorded) and nothing reaches any queue."""
    from hub.pipeline.client import connect_as
    from hub.transport import Outgoing
    from hub.transport.users import provision

    await provision(hub.settings, [(SENDER, None)])
    own = await connect_as(hub.settings, SENDER)
    names = own.names
    try:
        await own.publish_many(
            [
                Outgoing(
                    names.dead_letter_exchange,
                    RECIPIENT,
                    b"<Envelope>not for you</Envelope>",
                    {"x-refused-by": RECIPIENT, "x-refused-code": "FORGED", "x-refused-reason": "forged"},
                    0,
                    "forged-1",
                    user_id=own.user,
                ),
                Outgoing(
                    names.dead_letter_exchange, "", b"\x00junk", {"odd": "a\x00b"}, 0, "not\x00-an-id", user_id=own.user
                ),
            ]
        )
    finally:
        await own.close()
    await _wait_dead(hub, 2)
    assert await dead.collect(hub.settings, hub.pool) == 2
    rows = {r.claimed_message_id: r for r in await dead_letters.list_dead(hub.pool)}
    forged, junk = rows["forged-1"], rows["not-an-id"]
    assert (forged.kind, forged.refused_by, forged.publisher) == ("delivery", RECIPIENT, names.user(SENDER))
    assert junk.kind == "other" and json.loads(junk.headers_json) == {"odd": "ab"}
    before = await hub.depth(RECIPIENT)
    for row in (forged, junk):
        with pytest.raises(HubError) as info:
            await dead.replay(hub.settings, hub.pool, row.id, operator="duty1", role="duty", via="web", reason="try")
        assert info.value.code == "DEAD_NOT_REPLAYABLE"
        assert (await dead.show(hub.pool, row.id)).state == "pending"
    assert await hub.depth(RECIPIENT) == before
    refused = await hub.pool.fetch(
        "SELECT target FROM operator_actions WHERE action = 'dead.replay' AND outcome = 'refused'"
        " AND detail->>'code' = 'DEAD_NOT_REPLAYABLE' ORDER BY id"
    )
    assert [r["target"] for r in refused] == [str(forged.id), str(junk.id)]


async def test_a_delivery_rabbitmq_dead_lettered_is_replayed_once_even_by_two_operators_at_once(hub: Hub) -> None:
    """A system that rejects a delivery without requeue: RabbitMQ dead-letters it (x-death: the system's queue).
    Two operators replaying it at the same moment: one replay happens, the other is DEAD_ALREADY_REPLAYED, and the
    recipient gets exactly one copy (verified as the hub's)."""
    env = await hub.send(SENDER, document(SENDER, [Recipient.to(RECIPIENT_AGENCY)]))
    assert (await hub.reply(SENDER, env.message_id)).outcome == "accepted"
    box = hub.inbox(RECIPIENT)
    taken: list[Any] = []
    for _ in range(200):
        taken += await box.take()
        if taken:
            break
        await asyncio.sleep(0.05)
    [m] = taken
    await hub.transport.nack([m], requeue=False)
    await _wait_dead(hub, 1)
    assert await dead.collect(hub.settings, hub.pool) == 1
    [row] = [r for r in await dead_letters.list_dead(hub.pool) if r.claimed_message_id == env.message_id]
    assert (row.kind, row.reason, row.source_queue) == (
        "delivery",
        "rejected",
        hub.transport.names.system_queue(RECIPIENT),
    )

    outcomes = await asyncio.gather(
        *(
            dead.replay(hub.settings, hub.pool, row.id, operator=who, role="duty", via="web", reason="重投 again")
            for who in ("duty1", "duty2")
        ),
        return_exceptions=True,
    )
    done = [o for o in outcomes if isinstance(o, dead.ReplayResult)]
    refused = [o for o in outcomes if isinstance(o, HubError)]
    assert len(done) == 1 and [e.code for e in refused] == ["DEAD_ALREADY_REPLAYED"]
    got = await hub.drain(RECIPIENT, expect=1)
    assert [e.message_id for _, e in got] == [env.message_id]
    assert await hub.depth(RECIPIENT) == 0


async def test_a_letter_claiming_the_hub_parked_it_without_the_hubs_user_is_not_replayed(hub: Hub) -> None:
    """A system may write to ns.dead. One that leaves user_id out and sets the hub's parking headers
    (x-hub-error-code, x-hub-original-queue: the shared inbound lane) made a letter that `hub dead replay` put into
    the inbound lane as the hub's own, with no publisher to hold it to: another system's signed message was then
    accepted as that system's. The hub parks only with its own user: such a letter is refused DEAD_NOT_REPLAYABLE."""
    from hub.pipeline.client import connect_as
    from hub.transport import Outgoing
    from hub.transport.users import provision

    await provision(hub.settings, [(SENDER, None)])
    other = "county-220182-oa"
    data = hub.sign(other, document(other, [Recipient.to(RECIPIENT_AGENCY)]))
    env = Envelope.from_tree(parse(data))
    own = await connect_as(hub.settings, SENDER)
    names = own.names
    try:
        await own.publish_many(
            [
                Outgoing(
                    names.dead_letter_exchange,
                    "normal",
                    data,
                    {"x-hub-error-code": "DELIVERY_STORE", "x-hub-original-queue": names.inbound_queue("normal")},
                    0,
                    env.message_id,
                    user_id=None,
                )
            ]
        )
    finally:
        await own.close()
    await _wait_dead(hub, 1)
    assert await dead.collect(hub.settings, hub.pool) == 1
    [row] = [r for r in await dead_letters.list_dead(hub.pool) if r.claimed_message_id == env.message_id]
    assert (row.kind, row.reason, row.publisher) == ("inbound", "hub", None)
    with pytest.raises(HubError) as info:
        await dead.replay(hub.settings, hub.pool, row.id, operator="duty1", role="duty", via="web", reason="try")
    assert info.value.code == "DEAD_NOT_REPLAYABLE" and "without the hub's RabbitMQ user" in info.value.detail
    assert (await dead.show(hub.pool, row.id)).state == "pending"
