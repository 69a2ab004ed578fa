"""Names, the topology description and the in-memory twin: pure, no broker."""

from __future__ import annotations

import asyncio
import itertools
import re

import pytest

from hub.errors import BrokerUnavailable, ConfigError
from hub.policy import DEFAULT_RETRY, URGENCY_PRIORITY, Retry
from hub.transport.memory import MemoryBroker, MemoryTransport
from hub.transport.names import (
    LANES,
    MAX_PRIORITY,
    PRIORITY,
    RETRY_DELAYS_S,
    RETRY_HEADER,
    Names,
    lane_for,
    lane_of_key,
    priority_for,
    retry_delay,
)
from hub.transport.topology import Incoming, Outgoing, dead_letter_of, retry_of, topology
from hub.transport.users import permissions_for, topic_permissions_for


def test_every_name_carries_the_namespace():
    n = Names("hubtest-1")
    made = [
        n.inbound_exchange,
        *n.inbound_queues,
        n.deliver_exchange,
        n.system_queue("county-220104-approval"),
        n.retry_exchange,
        *(n.retry_queue(d) for d in RETRY_DELAYS_S),
        n.dead_letter_exchange,
        n.dead_letter_queue,
        n.quarantine_exchange,
        n.quarantine_queue,
        n.user("county-220104-approval"),
    ]
    assert all(name.startswith("hubtest-1.") for name in made)
    assert n.system_queue("county-220104-approval") == "hubtest-1.q.county-220104-approval"
    assert n.inbound_queue("emergency") == "hubtest-1.in.emergency"
    assert n.retry_queue(5) == "hubtest-1.retry.5s"
    assert n.user("prov-oa") == "hubtest-1.prov-oa"
    assert n == Names("hubtest-1") and hash(n) == hash(Names("hubtest-1"))


@pytest.mark.parametrize("bad", ["", "Hub", "a b", "a/b", "-x", "a" * 64])
def test_bad_namespace_is_refused(bad):
    with pytest.raises(ValueError):
        Names(bad)


@pytest.mark.parametrize("bad", ["", "x", "Upper", "a.b", "a_b", "../etc", "a" * 64, "é"])
def test_bad_system_ids_never_become_names(bad):
    n = Names("hub")
    with pytest.raises(ValueError):
        n.system_queue(bad)
    with pytest.raises(ValueError):
        n.user(bad)


def test_unknown_lane_and_delay_are_refused():
    n = Names("hub")
    with pytest.raises(ValueError):
        n.inbound_queue("urgent")
    with pytest.raises(ValueError):
        n.retry_queue(7)


def test_names_are_immutable():
    n = Names("hub")
    with pytest.raises(AttributeError):
        n.inbound_exchange = "x"  # type: ignore[misc]


def test_inverse_lookups():
    n = Names("hub")
    assert n.system_of_queue("hub.q.city-2201-oa") == "city-2201-oa"
    assert n.system_of_queue("hub.in.normal") is None
    assert n.system_of_queue("other.q.city-2201-oa") is None
    assert n.system_of_user("hub.city-2201-oa") == "city-2201-oa"
    assert n.system_of_user("guest") is None
    assert n.system_of_user(None) is None


def test_lane_priority_and_backoff():
    assert lane_for("emergency.alert", "平件") == "emergency"
    assert lane_for("document.official", "特急") == "emergency"
    assert lane_for("document.official", "加急") == "normal"
    assert priority_for("特急") > priority_for("加急") > priority_for("平件") == priority_for("??") == 0
    assert priority_for("特急") <= MAX_PRIORITY
    # the defaults (a message no route decided): DEFAULT_RETRY's attempts, each delay one with a retry queue
    assert [retry_delay(a) for a in range(1, DEFAULT_RETRY.attempts + 1)] == [*DEFAULT_RETRY.backoff, None]
    assert set(DEFAULT_RETRY.backoff) <= set(RETRY_DELAYS_S)
    # a route's policy: its backoff in order, the last delay repeating, dead after its attempts
    route = Retry(attempts=5, backoff=(1, 2))
    assert [retry_delay(a, route) for a in range(1, 6)] == [1, 2, 2, 2, None]
    with pytest.raises(ValueError):
        retry_delay(0)


def test_one_priority_table_for_routes_and_transport():
    from hub.routing.routes import DEFAULT_POLICY

    assert PRIORITY is URGENCY_PRIORITY
    assert {u: DEFAULT_POLICY.priority(u) for u in URGENCY_PRIORITY} == URGENCY_PRIORITY
    assert {u: priority_for(u) for u in URGENCY_PRIORITY} == URGENCY_PRIORITY


def test_permissions_are_anchored_and_escaped():
    n = Names("hub.prod")
    perms = permissions_for(n, "city-2201-oa")
    assert perms["configure"] == "^$"
    assert re.fullmatch(perms["write"], "hub.prod.submit")
    assert not re.fullmatch(perms["write"], "hubXprod.submit")  # the dot is escaped
    assert not re.fullmatch(perms["write"], "hub.prod.in")  # the shared lanes are the hub's own
    assert not re.fullmatch(perms["write"], "hub.prod.deliver")
    assert not re.fullmatch(perms["write"], "")  # the default exchange
    assert re.fullmatch(perms["write"], "hub.prod.dead")  # parking a refused delivery with its reason
    assert not re.fullmatch(perms["write"], "hub.prod.deadX")
    assert not re.fullmatch(perms["write"], "hub.prod.submit|hub.prod.dead")
    assert re.fullmatch(perms["read"], "hub.prod.q.city-2201-oa")
    assert not re.fullmatch(perms["read"], "hub.prod.q.city-2201-oa2")
    assert not re.fullmatch(perms["read"], "hub.prod.q.city-2202-oa")
    assert not re.fullmatch(perms["read"], "hub.prod.in.normal.city-2201-oa")  # its inbound lane: write-only
    # On the submit exchange only its own two keys: a flood of one system lands in its own queues
    topic = topic_permissions_for(n, "city-2201-oa")
    assert topic["exchange"] == "hub.prod.submit" and topic["read"] == "^$"
    assert re.fullmatch(topic["write"], "normal.city-2201-oa") and re.fullmatch(
        topic["write"], "emergency.city-2201-oa"
    )
    for other in ("normal", "emergency", "normal.city-2202-oa", "normalXcity-2201-oa", "normal.city-2201-oa.x", "#"):
        assert not re.fullmatch(topic["write"], other), other


def test_put_off_names_keys_and_permissions():
    from hub.transport.memory import topic_matches
    from hub.transport.names import LATER_DELAYS_S, later_delay
    from hub.transport.users import later_topic_permissions_for

    assert [later_delay(x) for x in (0, 0.5, 1, 1.01, 4, 45, 46, 300, 301, 10_000)] == [
        1,
        1,
        1,
        2,
        5,
        45,
        60,
        300,
        300,
        300,
    ]
    assert all(b <= max(a + 1, 1.7 * a) for a, b in itertools.pairwise(LATER_DELAYS_S))  # about half as long again
    for quorum in (False, True):
        n = Names("hub.prod", queue_type="quorum" if quorum else "classic")
        assert n.later_exchange == "hub.prod.later" and n.later_due_exchange == "hub.prod.later-due"
        assert n.later_queue(5) == "hub.prod.later.5s" and n.later_due_queue == "hub.prod.later.due"
        for queue in n.system_queues("city-2201-oa"):  # the urgent lane too: the key says whose and how long
            assert n.later_key(queue, 30) == "city-2201-oa.30s"
        with pytest.raises(ValueError):
            n.later_queue(8)
        with pytest.raises(ValueError):
            n.later_key(n.inbound_queue("normal"), 5)
        topo = topology(n, ["city-2201-oa"])
        later = [q for q in topo.queues if q.role == "later"]
        assert [q.name for q in later] == [n.later_queue(d) for d in LATER_DELAYS_S]
        assert all(q.dead_letter_exchange == n.later_due_exchange for q in later)
        assert all("x-dead-letter-routing-key" not in q.arguments for q in later)
        assert [q.ttl_ms for q in later] == [d * 1000 for d in LATER_DELAYS_S]
        kinds = {ex.name: ex.type for ex in topo.exchanges}
        assert kinds[n.later_exchange] == "topic" and kinds[n.later_due_exchange] == "fanout"
        # the key a put-off delivery is published with reaches its delay's queue; from there, whatever keys it
        # names (a CC header too), only the hub's queue: no binding leads from ns.later back to a system's queue
        key = n.later_key(n.system_queue("city-2201-oa"), 5)
        into = [b.queue for b in topo.bindings if b.exchange == n.later_exchange and topic_matches(b.routing_key, key)]
        assert into == [n.later_queue(5)], key
        assert [b.queue for b in topo.bindings if b.exchange == n.later_due_exchange] == [n.later_due_queue]
        system_queues = set(n.system_queues("city-2201-oa"))
        assert not [b for b in topo.bindings if b.queue in system_queues and b.exchange != n.deliver_exchange]
    topic = later_topic_permissions_for(Names("hub.prod"), "city-2201-oa")
    assert topic["exchange"] == "hub.prod.later" and topic["read"] == "^$"
    for ok in ("city-2201-oa.1s", "city-2201-oa.300s"):
        assert re.fullmatch(topic["write"], ok), ok
    for bad in (
        "city-2202-oa.1s",
        "city-2201-oa.8s",
        "city-2201-oa",
        "city-2201-oa.urgent.5s",
        "city-2201-oaX1s",
        "#.1s",
        "city-2201-oa.1s.x",
    ):
        assert not re.fullmatch(topic["write"], bad), bad
    assert re.fullmatch(permissions_for(Names("hub.prod"), "city-2201-oa")["write"], "hub.prod.later")


def test_memory_topic_matching_is_rabbitmqs():
    from hub.transport.memory import topic_matches

    assert topic_matches("a.*", "a.b") and not topic_matches("a.*", "a.b.c") and not topic_matches("a.*", "a")
    assert topic_matches("#.5s", "x.5s") and topic_matches("#.5s", "x.urgent.5s") and topic_matches("#.5s", "5s")
    assert not topic_matches("#.5s", "x.15s") and not topic_matches("#.5s", "x.5s.y")
    assert topic_matches("#", "") and topic_matches("#", "a.b") and topic_matches("normal.sys", "normal.sys")
    assert not topic_matches("normal.sys", "normal.sysX")


def test_each_system_has_its_own_inbound_lanes():
    n = Names("t")
    assert n.submit_exchange == "t.submit"
    assert n.inbound_key("normal", "sys-a") == "normal.sys-a"
    assert n.system_inbound_queue("emergency", "sys-a") == "t.in.emergency.sys-a"
    assert n.system_inbound_queues("sys-a") == ("t.in.emergency.sys-a", "t.in.normal.sys-a")
    assert [n.inbound_lane_of_queue(q) for q in ("t.in.normal", "t.in.emergency.sys-a", "t.q.sys-a", "t.in.x")] == [
        "normal",
        "emergency",
        None,
        None,
    ]
    assert n.system_of_inbound_queue("t.in.normal.sys-a") == "sys-a"
    assert n.system_of_inbound_queue("t.in.normal") is None and n.system_of_inbound_queue("t.in.normal.A_b") is None
    assert [lane_of_key(k) for k in ("normal", "emergency.sys-a", "odd")] == ["normal", "emergency", "odd"]
    with pytest.raises(ValueError):
        n.inbound_key("urgent", "sys-a")
    with pytest.raises(ValueError):
        n.inbound_key("normal", "sys.a")  # no dots: a key cannot reach into another system's lane
    topo = topology(n, ["sys-a"])
    own = {(b.queue, b.exchange, b.routing_key) for b in topo.bindings if b.exchange == n.submit_exchange}
    assert own == {
        ("t.in.emergency.sys-a", "t.submit", "emergency.sys-a"),
        ("t.in.normal.sys-a", "t.submit", "normal.sys-a"),
    }
    assert {ex.name: ex.type for ex in topo.exchanges}[n.submit_exchange] == "topic"
    q = topo.queue("t.in.normal.sys-a")
    assert q is not None and q.dead_letter_exchange == n.dead_letter_exchange
    # a message from a system's own lane: its lane; retried, it comes back in the shared lane as the hub's copy
    own_msg = _incoming(routing_key="normal.sys-a", queue="t.in.normal.sys-a", priority=0)
    assert own_msg.lane("guest") == "normal"
    again = retry_of(n, own_msg, hub_user="guest")
    assert again is not None and again.routing_key == "normal" and again.headers["x-hub-origin-user"] == "t.sys-a"


def test_topology_shape():
    from hub.transport.names import LATER_DELAYS_S

    n = Names("t")
    topo = topology(n, ["sys-a", "sys-b", "sys-a"])
    names = {q.name for q in topo.queues}
    assert names == {
        *n.inbound_queues,
        *(n.retry_queue(d) for d in RETRY_DELAYS_S),
        *(n.later_queue(d) for d in LATER_DELAYS_S),
        n.later_due_queue,
        n.dead_letter_queue,
        n.expired_queue,
        n.quarantine_queue,
        n.system_queue("sys-a"),
        n.system_queue("sys-b"),
        *n.system_inbound_queues("sys-a"),
        *n.system_inbound_queues("sys-b"),
    }
    # every dead letter reaches the operators' queue and, a copy, the queue the hub answers expired deliveries from
    assert {b.queue for b in topo.bindings if b.exchange == n.dead_letter_exchange} == {
        n.dead_letter_queue,
        n.expired_queue,
    }
    sys_q = topo.queue(n.system_queue("sys-a"))
    assert sys_q is not None and sys_q.max_priority == MAX_PRIORITY
    assert sys_q.dead_letter_exchange == n.dead_letter_exchange
    for d in RETRY_DELAYS_S:
        rq = topo.queue(n.retry_queue(d))
        assert rq is not None and rq.ttl_ms == d * 1000 and rq.dead_letter_exchange == n.inbound_exchange
        assert "x-dead-letter-routing-key" not in rq.arguments  # keeps the lane as routing key
    for lane in LANES:
        assert any(b.exchange == n.inbound_exchange and b.routing_key == lane for b in topo.bindings)
    assert all(q.arguments.get("x-queue-type") == "classic" for q in topo.queues)


def _incoming(**kw) -> Incoming:
    base = dict(
        body=b"<x/>",
        routing_key="emergency",
        exchange="t.in",
        headers={},
        message_id="m-1",
        user_id="t.sys-a",
        priority=9,
        redelivered=False,
        queue="t.in.emergency",
        delivery_tag=1,
    )
    base.update(kw)
    return Incoming(**base)


def test_retry_keeps_lane_counts_attempts_and_carries_the_publisher():
    n = Names("t")
    msg = _incoming()
    first = retry_of(n, msg, hub_user="guest")
    assert first is not None
    assert first.exchange == n.retry_exchange and first.routing_key == "emergency"
    assert first.headers["x-hub-attempt"] == 1
    assert first.user_id == "guest" and first.headers["x-hub-origin-user"] == "t.sys-a"
    again = _incoming(headers=first.headers, user_id="guest")
    assert again.publisher("guest") == "t.sys-a"
    # a system cannot claim another origin: only copies carrying the hub's own user_id are read that way
    forged = _incoming(headers={"x-hub-origin-user": "t.sys-b"}, user_id="t.sys-a")
    assert forged.publisher("guest") == "t.sys-a"
    assert first.headers[RETRY_HEADER] == f"{DEFAULT_RETRY.backoff[0]}s"  # no route: the defaults
    last = _incoming(headers={"x-hub-attempt": DEFAULT_RETRY.attempts - 1})
    assert retry_of(n, last, hub_user="guest") is None
    dead = dead_letter_of(n, last, "DELIVERY_STORE", "database down")
    assert dead.exchange == n.dead_letter_exchange and dead.headers["x-hub-error-code"] == "DELIVERY_STORE"
    # Parked by the hub (its own user_id): the publisher RabbitMQ authenticated travels with it, for a replay.
    parked = dead_letter_of(n, _incoming(user_id="t.sys-a"), "DELIVERY_STORE", "database down", hub_user="guest")
    assert parked.user_id == "guest" and parked.headers["x-hub-origin-user"] == "t.sys-a"
    assert _incoming(headers=parked.headers, user_id="guest").publisher("guest") == "t.sys-a"


def test_retry_follows_the_route_policy_onto_declared_retry_queues():
    """A route's back-off chooses the retry queue of each retry; after its attempts the message is dead-lettered."""
    n = Names("t")
    queues = {q.name for q in topology(n).queues}
    emergency = Retry(attempts=20, backoff=(1, 2, 5, 10, 30, 60))
    headers: dict[str, object] = {}
    delays = []
    for _ in range(30):
        out = retry_of(n, _incoming(headers=headers, user_id="guest"), hub_user="guest", retry=emergency)
        if out is None:
            break
        delays.append(int(str(out.headers[RETRY_HEADER])[:-1]))
        assert n.retry_queue(delays[-1]) in queues
        headers = dict(out.headers)
    assert delays == [1, 2, 5, 10, 30, *[60] * 14]  # 19 retries: 20 attempts with the first delivery
    # a delay without a queue (an unchecked policy) goes to the next longer one that has a queue, never nowhere
    odd = retry_of(n, _incoming(), hub_user="guest", retry=Retry(attempts=3, backoff=(7,)))
    assert odd is not None and odd.headers[RETRY_HEADER] == "10s"


def _out(n: Names, system: str, mid: str, priority: int = 0, **kw) -> Outgoing:
    return Outgoing(n.deliver_exchange, system, f"<m id='{mid}'/>".encode(), {}, priority, mid, **kw)


async def test_memory_twin_routes_prioritises_and_refuses_like_the_broker():
    n = Names("t")
    hub = MemoryTransport(n, user="guest")
    await hub.declare_topology(["sys-a"])
    await hub.declare_topology(["sys-a"])  # idempotent
    await hub.publish_many([_out(n, "sys-a", "slow", 0), _out(n, "sys-a", "flash", 9), _out(n, "sys-a", "mid", 5)])
    got = await hub.fetch(n.system_queue("sys-a"))
    assert [m.message_id for m in got] == ["flash", "mid", "slow"]
    await hub.nack(got[2:], requeue=True)
    await hub.ack(got[:2])
    again = await hub.fetch(n.system_queue("sys-a"))
    assert [(m.message_id, m.redelivered) for m in again] == [("slow", True)]
    await hub.nack(again, requeue=False)
    dead = await hub.fetch(n.dead_letter_queue)
    assert [m.message_id for m in dead] == ["slow"]

    with pytest.raises(BrokerUnavailable) as unroutable:
        await hub.publish_many([_out(n, "sys-a", "ok"), _out(n, "nobody", "lost")])
    assert unroutable.value.code == "DELIVERY_UNROUTABLE"
    assert await hub.queue_depth(n.system_queue("sys-a")) == 0  # all-or-nothing in the twin
    with pytest.raises(ConfigError) as forged:
        await hub.publish_many([_out(n, "sys-a", "x", user_id="t.sys-b")])
    assert forged.value.code == "AMQP_PRECONDITION"

    def refuse(body: bytes) -> None:
        raise ConfigError("egress refused")

    with pytest.raises(ConfigError, match="egress refused"):
        await hub.publish_many([_out(n, "sys-a", "a"), _out(n, "sys-a", "b", egress=refuse)])
    assert await hub.queue_depth(n.system_queue("sys-a")) == 0


async def test_memory_twin_consumer_batches_and_retry_comes_back_to_the_lane():
    n = Names("t")
    broker = MemoryBroker(ttl_scale=0.0)
    hub = MemoryTransport(n, broker, user="guest")
    system = MemoryTransport(n, broker, user="t.sys-a")
    await hub.declare_topology(["sys-a"])
    seen: list[list[str | None]] = []
    done = asyncio.Event()

    async def handler(batch: list[Incoming]) -> None:
        seen.append([m.message_id for m in batch])
        retry = [retry_of(n, m, hub_user="guest") for m in batch if m.attempt == 0]
        await hub.publish_many([r for r in retry if r is not None])
        await hub.ack(batch)
        if sum(map(len, seen)) == 20:
            done.set()

    items = [Outgoing(n.inbound_exchange, "normal", b"<x/>", {}, 0, f"m{i}", user_id="t.sys-a") for i in range(10)]
    await system.publish_many(items)
    consumer = await hub.consume(n.inbound_queue("normal"), handler, prefetch=4, max_batch=3)
    await asyncio.wait_for(done.wait(), 5)
    await consumer.stop()
    assert max(map(len, seen)) <= 3
    flat = [mid for batch in seen for mid in batch]
    assert sorted(flat) == sorted([f"m{i}" for i in range(10)] * 2)
    assert consumer.errors == []


def test_the_public_surface_is_pinned():
    """The pipeline, the CLI and the SDK build on these names: changing them is an API change."""
    import hub.transport

    assert set(hub.transport.__all__) == {
        "CONNECTION_ERRORS", "LANES", "MAX_PRIORITY", "PRIORITY", "RETRY_DELAYS_S", "Consumer", "Handler",
        "Incoming", "Lane", "MemoryBroker", "MemoryTransport", "Names", "Outgoing", "Topology", "Transport", "ack",
        "dead_letter_of", "lane_for", "nack", "priority_for", "retry_delay", "retry_of", "topology", "translate",
    }  # fmt: skip
    assert all(hasattr(hub.transport, name) for name in hub.transport.__all__)


def test_without_user_id_the_own_lane_key_names_the_publisher():
    """A message published without user_id on the submit exchange with a system's own lane key was published by that
    system's user (its topic permission): that is its publisher; a retried copy carries it on."""
    n = Names("t")
    for lane in ("normal", "emergency"):
        msg = _incoming(user_id=None, exchange=n.submit_exchange, routing_key=n.inbound_key(lane, "sys-a"))
        assert msg.publisher("guest") == "t.sys-a"
        copy = retry_of(n, msg, hub_user="guest")
        assert copy is not None and copy.headers["x-hub-origin-user"] == "t.sys-a"
    # the shared lanes (the hub's and its operator's), other exchanges and keys that name no system: nobody
    for exchange, key in (
        (n.inbound_exchange, "normal"),
        (n.inbound_exchange, "normal.sys-a"),
        (n.submit_exchange, "normal"),
        (n.submit_exchange, "bulk.sys-a"),
        (n.submit_exchange, "normal.Sys_A"),
        (n.dead_letter_exchange, "normal.sys-a"),
    ):
        assert _incoming(user_id=None, exchange=exchange, routing_key=key).publisher("guest") is None, (exchange, key)
    # user_id, when set, is what RabbitMQ vouches for
    assert (
        _incoming(user_id="t.sys-b", exchange=n.submit_exchange, routing_key="normal.sys-a").publisher("x") == "t.sys-b"
    )
