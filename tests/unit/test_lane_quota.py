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


def test_refusals_spend_the_quota_accepted_messages_do_not() -> None:
    now = [0.0]
    q = LaneQuota(rate_per_s=2.0, burst=5.0, clock=lambda: now[0])
    assert all(q.allows("a") for _ in range(1000))  # nothing refused yet: any number of genuine alerts
    for _ in range(5):
        assert q.allows("a")
        q.charge("a")
    assert not q.allows("a") and not q.allows("a")  # five refusals: its next messages are moved
    assert q.allows("b")  # another publisher keeps its own place
    now[0] = 0.5  # one token back
    assert q.allows("a")
    q.charge("a")
    assert not q.allows("a")
    assert q.moved == {"a": 3}
    for _ in range(100):  # a long flood: the debt stops at -burst ...
        q.charge("a")
    now[0] = 0.5 + 2.9  # ... so (burst + 1) / rate = 3 s later it is back in the lane
    assert not q.allows("a")
    now[0] = 0.5 + 3.0
    assert q.allows("a")


def test_a_quota_needs_a_rate_and_a_burst() -> None:
    for rate, burst in ((0.0, 5.0), (1.0, 0.5)):
        with pytest.raises(ValueError):
            LaneQuota(rate_per_s=rate, burst=burst)


def test_the_moved_copy_keeps_its_lane_and_publisher_and_only_the_hub_can_claim_a_lane() -> None:
    names = Names("ns")
    m = _incoming()
    out = moved_lane_of(names, m, hub_user=HUB)
    # into the publisher's own normal lane (a flood moved there waits behind nobody else's messages)
    assert (out.exchange, out.routing_key, out.user_id, out.body) == (
        names.submit_exchange,
        "normal.county-220183-oa",
        HUB,
        m.body,
    )
    # the hub's own message (no system publisher) goes to the shared lane
    own = moved_lane_of(names, _incoming("emergency", HUB), hub_user=HUB)
    assert (own.exchange, own.routing_key) == (names.inbound_exchange, "normal")
    assert out.headers[LANE_HEADER] == "emergency" and out.headers[ORIGIN_USER_HEADER] == "ns.county-220183-oa"
    # read back as the hub's copy: the lane it was sent in, its publisher
    back = _incoming("normal.county-220183-oa", HUB, **out.headers)
    assert back.lane(HUB) == "emergency" and back.publisher(HUB) == "ns.county-220183-oa"
    # a system that sets the header itself gains nothing: its own copies are read by their routing key
    forged = _incoming("normal", "ns.county-220183-oa", **{LANE_HEADER: "emergency"})
    assert forged.lane(HUB) == "normal"
    assert _incoming("normal", HUB, **{LANE_HEADER: "elsewhere"}).lane(HUB) == "normal"
    # a retry of the moved copy stays in the normal lane and still remembers the lane it was sent in
    again = retry_of(names, back, hub_user=HUB)
    assert again is not None and again.routing_key == "normal" and again.headers[LANE_HEADER] == "emergency"
