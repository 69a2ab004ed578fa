"""Which dead letters are expired hub deliveries (hub/pipeline/expired.py) and the expiration a delivery carries
(hub/pipeline/outgoing.py ``expiration_of``): pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.pipeline.expired import expired_delivery
from hub.pipeline.outgoing import MAX_EXPIRATION_MS, expiration_of
from hub.transport.names import Names
from hub.transport.topology import Incoming

N = Names("t")


def _letter(headers: dict[str, object]) -> Incoming:
    return Incoming(
        body=b"<x/>",
        routing_key="city-220100-oa",
        exchange="t.deliver",
        headers=headers,
        message_id="m-1",
        user_id=None,
        priority=0,
        redelivered=False,
        queue=N.expired_queue,
        delivery_tag=1,
    )


def _death(reason: str = "expired", queue: str = "t.q.city-220100-oa") -> list[dict[str, object]]:
    return [{"count": 1, "reason": reason, "queue": queue, "exchange": "t.deliver"}]


def test_only_an_expired_delivery_from_a_system_queue_is_one() -> None:
    found = expired_delivery(N, _letter({"x-hub-kind": "delivery", "x-death": _death()}))
    assert found is not None and found.recipient_system == "city-220100-oa"
    # bytes, as some clients decode them
    found = expired_delivery(N, _letter({"x-hub-kind": b"delivery", "x-death": _death(queue=b"t.q.sys-b")}))  # type: ignore[arg-type]
    assert found is not None and found.recipient_system == "sys-b"
    for headers in (
        {"x-hub-kind": "delivery", "x-death": _death(reason="rejected")},  # a system refused it: not expiry
        {"x-hub-kind": "receipt", "x-death": _death()},  # the hub's answers are not followed up
        {"x-hub-kind": "delivery", "x-death": _death(queue="t.in.normal")},  # not a system's queue
        {"x-hub-kind": "delivery", "x-death": _death(queue="u.q.city-220100-oa")},  # another namespace
        {"x-hub-kind": "delivery"},  # parked by the hub or a system, never expired
        {"x-hub-kind": "delivery", "x-death": "garbage"},
        {},
    ):
        assert expired_delivery(N, _letter(headers)) is None, headers


def test_a_delivery_expires_when_its_envelope_does() -> None:
    now = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
    assert expiration_of(now + timedelta(seconds=90), now) == "90000"
    assert expiration_of(now + timedelta(milliseconds=1), now) == "1"
    assert expiration_of(now - timedelta(seconds=5), now) == "1"  # already due: at once, never 0 or negative
    assert expiration_of(now + timedelta(milliseconds=MAX_EXPIRATION_MS), now) == str(MAX_EXPIRATION_MS)
    assert expiration_of(now + timedelta(days=60), now) is None  # more than RabbitMQ takes: it waits
