"""The emergency lane's quota per publisher (hub/pipeline/lanes.py) and the copy that moves a message to the normal
lane (hub/transport/topology.py ``moved_lane_of``): pure, with a moved clock."""

from __future__ import annotations

import pytest

from hub.pipeline.lanes import LaneQuota
from hub.transport.names import LANE_HEADER, ORIGIN_USER_HEADER, Names
from hub.transport.topology import Incoming, moved_lane_of, retry_of

HUB = "hub-admin"


def _incoming(
    routing_key: str = "emergency", user_id: str | None = "ns.county-220183-oa", **headers: object
) -> Incoming:
    return Incoming(
        body=b"<Envelope/>",
        routing_key=routing_key,
        exchange="ns.in",
        headers=dict(headers),
        message_id="m-1",
        user_id=user_id,
        priority=9,
        redelivered=False,
        queue=f"ns.in.{routing_key}",
        delivery_tag=1,
    )


def test_a_burst_then_the_rate_each_publisher_on_its_own() -> None:
    now = [0.0]
    q = LaneQuota(rate_per_s=2.0, burst=5.0, clock=lambda: now[0])
    assert [q.take("a") for _ in range(7)] == [True] * 5 + [False] * 2
    assert q.take("b")  # another publisher has its own bucket
    now[0] = 1.0  # two tokens back
    assert [q.take("a") for _ in range(3)] == [True, True, False]
    assert q.moved == {"a": 3}
    now[0] = 100.0  # never more than the burst
    assert sum(q.take("a") for _ in range(10)) == 5


def test_a_quota_needs_a_rate_and_a_burst() -> None:
    for rate, burst in ((0.0, 5.0), (1.0, 0.5)):
        with pytest.raises(ValueError):
            LaneQuota(rate_per_s=rate, burst=burst)


def test_the_moved_copy_keeps_its_lane_and_publisher_and_only_the_hub_can_claim_a_lane() -> None:
    names = Names("ns")
    m = _incoming()
    out = moved_lane_of(names, m, hub_user=HUB)
    assert (out.exchange, out.routing_key, out.user_id, out.body) == (names.inbound_exchange, "normal", HUB, m.body)
    assert out.headers[LANE_HEADER] == "emergency" and out.headers[ORIGIN_USER_HEADER] == "ns.county-220183-oa"
    # read back as the hub's copy: the lane it was sent in, its publisher
    back = _incoming("normal", HUB, **out.headers)
    assert back.lane(HUB) == "emergency" and back.publisher(HUB) == "ns.county-220183-oa"
    # a system that sets the header itself gains nothing: its own copies are read by their routing key
    forged = _incoming("normal", "ns.county-220183-oa", **{LANE_HEADER: "emergency"})
    assert forged.lane(HUB) == "normal"
    assert _incoming("normal", HUB, **{LANE_HEADER: "elsewhere"}).lane(HUB) == "normal"
    # a retry of the moved copy stays in the normal lane and still remembers the lane it was sent in
    again = retry_of(names, back, hub_user=HUB)
    assert again is not None and again.routing_key == "normal" and again.headers[LANE_HEADER] == "emergency"
