"""Per-system RabbitMQ users against the real broker: each may publish only into its own inbound lanes (the submit
exchange with its own routing keys; and park a refused delivery in the dead-letter exchange) and read only its own
queue. Everything lives under ``<test_namespace>.us`` and is deleted at the end of the module."""

from __future__ import annotations

import stat
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from hub.errors import ConfigError
from hub.settings import Settings
from hub.transport import Outgoing, Transport
from hub.transport.users import amqp_url_for, password_path, provision, read_password, remove, teardown_namespace

pytestmark = pytest.mark.integration

A, B = "county-a-oa", "county-b-oa"


@pytest.fixture(scope="module")
def settings(integration_settings: Settings) -> Settings:
    return integration_settings.with_(namespace=f"{integration_settings.namespace}.us")


@pytest_asyncio.fixture(scope="module")
async def hub(settings: Settings) -> AsyncIterator[Transport]:
    transport = await Transport.connect(settings, client_name=f"{settings.namespace}-hub")
    await transport.declare_topology([A, B])
    await provision(settings, [(A, None), (B, None)])
    try:
        yield transport
    finally:
        await transport.close()
        await teardown_namespace(settings)


@pytest_asyncio.fixture
async def as_a(settings: Settings, hub: Transport) -> AsyncIterator[Transport]:
    transport = await Transport.connect(settings, url=amqp_url_for(settings, A), client_name=f"{settings.namespace}-a")
    try:
        yield transport
    finally:
        await transport.close()


def _inbound(t: Transport, mid: str, user_id: str | None = None, system: str = A) -> Outgoing:
    """Into ``system``'s own normal lane, as the SDK publishes."""
    return Outgoing(
        t.names.submit_exchange, t.names.inbound_key("normal", system), b"<env/>", {}, 0, mid, user_id=user_id
    )


async def _refused(coro) -> str:
    with pytest.raises(ConfigError) as err:
        await coro
    return err.value.code


async def test_passwords_are_generated_once_and_private(settings: Settings, hub: Transport):
    path = password_path(settings, A)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = read_password(settings, A)
    assert len(before) >= 40
    await provision(settings, [(A, None)])  # idempotent: same password, applied again
    assert read_password(settings, A) == before
    assert read_password(settings, A) != read_password(settings, B)


async def test_system_may_publish_to_its_own_lanes_and_dead_letter_only(hub: Transport, as_a: Transport):
    n = hub.names
    me = n.user(A)
    own_lane = n.system_inbound_queue("normal", A)
    await as_a.publish_many([_inbound(as_a, "from-a", user_id=me)])
    [got] = await hub.fetch(own_lane)
    await hub.ack([got])
    assert got.message_id == "from-a" and got.user_id == me and n.system_of_user(got.user_id) == A

    # another system's lane on the submit exchange: the topic permission refuses the routing key
    assert await _refused(as_a.publish_many([_inbound(as_a, "into-b", user_id=me, system=B)])) == (
        "AMQP_ACCESS_REFUSED"
    )
    # the shared lanes (the hub's own copies) and a bare lane key
    shared = Outgoing(n.inbound_exchange, "normal", b"<env/>", {}, 0, "shared", user_id=me)
    assert await _refused(as_a.publish_many([shared])) == "AMQP_ACCESS_REFUSED"
    bare = Outgoing(n.submit_exchange, "normal", b"<env/>", {}, 0, "bare", user_id=me)
    assert await _refused(as_a.publish_many([bare])) == "AMQP_ACCESS_REFUSED"
    assert await hub.queue_depth(n.system_inbound_queue("normal", B)) == 0

    # the delivery exchange, straight into another system's queue
    assert await _refused(as_a.publish_many([Outgoing(n.deliver_exchange, B, b"<x/>", {}, 0, "x")])) == (
        "AMQP_ACCESS_REFUSED"
    )
    # the default exchange, even to its own queue
    assert await _refused(as_a.publish_many([Outgoing("", n.system_queue(A), b"<x/>", {}, 0, "y")])) == (
        "AMQP_ACCESS_REFUSED"
    )
    # claiming to be another system: RabbitMQ checks user_id against the login
    assert await _refused(as_a.publish_many([_inbound(as_a, "z", user_id=n.user(B))])) == "AMQP_PRECONDITION"
    # nothing of those arrived anywhere
    assert await hub.queue_depth(n.system_queue(B)) == 0
    assert await hub.queue_depth(n.system_queue(A)) == 0
    assert await hub.queue_depth(n.inbound_queue("normal")) == 0
    assert await hub.queue_depth(own_lane) == 0
    # and the same transport still publishes into its lane afterwards (its channel re-opened)
    await as_a.publish_many([_inbound(as_a, "still-ok", user_id=me)])
    [again] = await hub.fetch(own_lane)
    await hub.ack([again])
    assert again.message_id == "still-ok"

    # the dead-letter exchange: a refused delivery parked with its reason, under its own user_id only
    refused = {"x-refused-by": A, "x-refused-code": "SIG_DIGEST", "x-refused-reason": "altered"}
    await as_a.publish_many([Outgoing(n.dead_letter_exchange, "", b"<bad/>", refused, 0, "parked", user_id=me)])
    [parked] = await hub.fetch(n.dead_letter_queue)
    await hub.ack([parked])
    assert parked.message_id == "parked" and parked.user_id == me and parked.headers["x-refused-by"] == A
    dead_as_b = Outgoing(n.dead_letter_exchange, "", b"<bad/>", refused, 0, "p2", user_id=n.user(B))
    assert await _refused(as_a.publish_many([dead_as_b])) == "AMQP_PRECONDITION"
    assert await hub.queue_depth(n.dead_letter_queue) == 0


async def test_system_may_put_off_deliveries_only_with_its_own_keys_and_under_its_own_name(
    hub: Transport, as_a: Transport
) -> None:
    """``ns.later`` (a recipient's Retry without holding the delivery): a system may publish there only with its own
    ``later_key``s and only with its own ``user_id``; after the delay the broker hands the copy to the hub's queue
    ``ns.later.due`` — one copy, whatever other keys a ``CC`` or ``BCC`` header names (RabbitMQ does not check those
    against the topic permission, and routes a dead-lettered message by every one of them: with bindings back into
    the systems' queues, a CC of another system's key put a copy into that system's queue) — with the user_id by
    which the hub delivers it again (``Worker.handle_later``)."""
    import asyncio
    import time

    n = hub.names
    me = n.user(A)
    into_b = n.later_key(n.system_queue(B), 1)
    mine = Outgoing(
        n.later_exchange,
        n.later_key(n.system_queue(A), 1),
        b"<put-off/>",
        {"k": "v", "CC": [into_b], "BCC": [into_b]},
        5,
        "later-a",
        user_id=me,
    )
    started = time.monotonic()
    await as_a.publish_many([mine])
    assert await hub.queue_depth(n.later_due_queue) == 0  # waiting in ns.later.1s
    for _ in range(100):
        got = await hub.fetch(n.later_due_queue)
        if got:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the put-off delivery never came out of ns.later.1s")
    await asyncio.sleep(0.5)
    got += await hub.fetch(n.later_due_queue)
    await hub.ack(got)
    assert time.monotonic() - started >= 0.9
    assert [(m.message_id, m.body, m.priority, m.headers.get("k"), m.user_id) for m in got] == [
        ("later-a", b"<put-off/>", 5, "v", me)
    ]
    for key in (into_b, f"{A}.8s", f"{A}.1s.x", "#.1s", f"{A}.urgent.1s", f"{A}X1s"):
        refused = Outgoing(n.later_exchange, key, b"<x/>", {}, 0, "later-x", user_id=me)
        assert await _refused(as_a.publish_many([refused])) == "AMQP_ACCESS_REFUSED", key
    as_b = Outgoing(n.later_exchange, n.later_key(n.system_queue(A), 1), b"<x/>", {}, 0, "x", user_id=n.user(B))
    assert await _refused(as_a.publish_many([as_b])) == "AMQP_PRECONDITION"  # another system's name
    await asyncio.sleep(1.5)
    for q in (n.system_queue(A), n.system_queue(B), n.later_due_queue):
        assert await hub.queue_depth(q) == 0, q


async def test_a_refused_put_off_does_not_fail_the_publishes_beside_it(hub: Transport, as_a: Transport) -> None:
    """A put-off the broker refuses (here another system's key; after an upgrade, a user not granted ``ns.later``
    yet) goes on a channel of its own (``Transport.publish_aside``): the refusal closes that channel only, and the
    twenty submissions published beside it arrive. On the one shared channel all twenty-one failed
    ``AMQP_ACCESS_REFUSED``."""
    import asyncio

    n = hub.names
    me = n.user(A)
    refused = Outgoing(n.later_exchange, n.later_key(n.system_queue(B), 1), b"<x/>", {}, 0, "aside-x")
    beside = [_inbound(as_a, f"beside-{i}") for i in range(20)]
    outcomes = await asyncio.gather(
        as_a.publish_aside([refused]), *(as_a.publish_many([o]) for o in beside), return_exceptions=True
    )
    assert isinstance(outcomes[0], ConfigError) and outcomes[0].code == "AMQP_ACCESS_REFUSED"
    assert outcomes[1:] == [None] * 20, outcomes[1:]
    got = await hub.fetch(n.system_inbound_queue("normal", A))
    await hub.ack(got)
    assert sorted(m.message_id for m in got) == sorted(o.message_id for o in beside)
    # and the aside channel opens again for the next put-off
    mine = Outgoing(n.later_exchange, n.later_key(n.system_queue(A), 1), b"<x/>", {}, 0, "aside-ok", user_id=me)
    await as_a.publish_aside([mine])
    for _ in range(100):
        if got := await hub.fetch(n.later_due_queue):
            break
        await asyncio.sleep(0.1)
    await hub.ack(got)
    assert [m.message_id for m in got] == ["aside-ok"]


async def test_system_reads_only_its_own_queue(hub: Transport, as_a: Transport):
    n = hub.names
    await hub.publish_many(
        [
            Outgoing(n.deliver_exchange, A, b"<for-a/>", {}, 0, "to-a"),
            Outgoing(n.deliver_exchange, B, b"<for-b/>", {}, 0, "to-b"),
        ]
    )
    mine = await as_a.fetch(n.system_queue(A))
    assert [m.message_id for m in mine] == ["to-a"]
    await as_a.ack(mine)

    async def handler(batch):  # never called
        raise AssertionError("consumed another system's queue")

    assert await _refused(as_a.fetch(n.system_queue(B))) == "AMQP_ACCESS_REFUSED"
    assert await _refused(as_a.consume(n.system_queue(B), handler, prefetch=1)) == "AMQP_ACCESS_REFUSED"
    assert await _refused(as_a.fetch(n.inbound_queue("normal"))) == "AMQP_ACCESS_REFUSED"
    assert await _refused(as_a.fetch(n.system_inbound_queue("normal", A))) == "AMQP_ACCESS_REFUSED"  # write-only
    assert await hub.queue_depth(n.system_queue(B)) == 1  # untouched
    await hub.ack(await hub.fetch(n.system_queue(B)))


async def test_system_cannot_configure_anything(hub: Transport, as_a: Transport):
    assert await _refused(as_a.declare_topology([A])) == "AMQP_ACCESS_REFUSED"


async def test_removed_user_cannot_connect(settings: Settings, hub: Transport):
    system = f"gone-{uuid.uuid4().hex[:6]}"
    await provision(settings, [(system, "given-password-for-test")])
    assert read_password(settings, system) == "given-password-for-test"
    ok = await Transport.connect(settings, url=amqp_url_for(settings, system))
    await ok.close()
    await remove(settings, [system], forget_passwords=True)
    assert not password_path(settings, system).exists()
    with pytest.raises(ConfigError) as err:
        await Transport.connect(
            settings, url=f"amqp://{hub.names.user(system)}:given-password-for-test@127.0.0.1:5672/"
        )
    assert err.value.code == "AMQP_ACCESS_REFUSED"
    await remove(settings, [system])  # removing again is fine
