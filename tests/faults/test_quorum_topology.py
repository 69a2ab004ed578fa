"""``HUB_QUEUE_TYPE=quorum`` (issue 16, item 2): the topology as data (pure, milliseconds). Every queue is a quorum
queue, urgency becomes an urgent lane per system instead of priorities, dead-lettering is at least once; the
classic topology (the default) keeps exactly the arguments it always had."""

from __future__ import annotations

import pytest

from hub.errors import ConfigError
from hub.settings import Settings
from hub.transport.names import URGENT_PRIORITY, Names
from hub.transport.topology import topology

SYSTEMS = ("city-220100-oa", "county-220122-oa")


def test_the_setting_reads_the_environment_and_refuses_other_types() -> None:
    assert Settings.from_env({}).queue_type == "classic"
    assert Settings.from_env({"HUB_QUEUE_TYPE": "quorum"}).queue_type == "quorum"
    with pytest.raises(ConfigError, match="HUB_QUEUE_TYPE must be one of classic, quorum"):
        Settings.from_env({"HUB_QUEUE_TYPE": "stream"})
    assert Settings.from_env({"HUB_QUEUE_TYPE": "quorum"}).to_env({})["HUB_QUEUE_TYPE"] == "quorum"


def test_classic_is_what_it_always_was() -> None:
    names = Names("hub")
    assert names == Names("hub", "classic") and repr(names) == "Names('hub')"
    topo = topology(names, SYSTEMS)
    args = {q.name: dict(q.arguments) for q in topo.queues}
    assert args["hub.in.normal"] == {"x-queue-type": "classic", "x-dead-letter-exchange": "hub.dead"}
    assert args["hub.in.emergency"] == {"x-queue-type": "classic", "x-dead-letter-exchange": "hub.dead"}
    assert args["hub.retry.5s"] == {
        "x-queue-type": "classic",
        "x-message-ttl": 5000,
        "x-dead-letter-exchange": "hub.in",
    }
    assert args["hub.dead"] == args["hub.quarantine"] == {"x-queue-type": "classic"}
    assert args["hub.q.city-220100-oa"] == {
        "x-queue-type": "classic",
        "x-dead-letter-exchange": "hub.dead",
        "x-max-priority": 9,
    }
    assert not any(name.endswith(".urgent") for name in args)
    assert names.system_queues("city-220100-oa") == ("hub.q.city-220100-oa",)
    assert names.delivery_key("city-220100-oa", 9) == "city-220100-oa"


def test_quorum_queues_everywhere_with_an_urgent_lane_per_system() -> None:
    names = Names("hub", "quorum")
    topo = topology(names, (*SYSTEMS, SYSTEMS[0]))
    for q in topo.queues:
        assert q.arguments["x-queue-type"] == "quorum", q
        assert "x-max-priority" not in q.arguments, q
        if "x-dead-letter-exchange" in q.arguments:  # a node failure while dead-lettering loses nothing
            assert q.arguments["x-dead-letter-strategy"] == "at-least-once", q
            assert q.arguments["x-overflow"] == "reject-publish", q
    names_of = [q.name for q in topo.queues]
    assert len(names_of) == len(set(names_of))
    for system in SYSTEMS:
        urgent, normal = names.system_queues(system)
        assert (urgent, normal) == (f"hub.q.{system}.urgent", f"hub.q.{system}")
        bound = {(b.queue, b.routing_key) for b in topo.bindings if b.exchange == "hub.deliver"}
        assert (urgent, f"{system}.urgent") in bound and (normal, system) in bound
        assert names.system_of_queue(urgent) == names.system_of_queue(normal) == system
    # 特急 (9) takes the urgent lane; 加急 (5) and 平件 (0) the other one
    assert names.delivery_key(SYSTEMS[0], URGENT_PRIORITY) == f"{SYSTEMS[0]}.urgent"
    assert names.delivery_key(SYSTEMS[0], 9) == f"{SYSTEMS[0]}.urgent"
    assert names.delivery_key(SYSTEMS[0], URGENT_PRIORITY - 1) == SYSTEMS[0]
    # the retry queues still bring a message back into its lane after the TTL
    retry = topo.queue("hub.retry.30s")
    assert retry is not None and retry.ttl_ms == 30_000 and retry.dead_letter_exchange == "hub.in"


def test_the_urgent_lane_is_for_te_ji_as_the_inbound_emergency_lane() -> None:
    from hub.policy import URGENCY_PRIORITY

    names = Names("hub", "quorum")
    lanes = {u: names.delivery_key("city-220100-oa", p) for u, p in URGENCY_PRIORITY.items()}
    assert lanes == {"特急": "city-220100-oa.urgent", "加急": "city-220100-oa", "平件": "city-220100-oa"}
