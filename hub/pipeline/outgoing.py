"""The two kinds of message the hub publishes to a system's queue, made in one place for the worker and for an
operator's release of a quarantined message."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.envelope import Envelope
from hub.routing import egress_allowed
from hub.transport import Names, Outgoing, priority_for

#: RabbitMQ takes a per-message TTL of at most 2^32 - 1 ms (about 49.7 days); a delivery that may wait longer gets
#: none (it waits; the sender's envelope still says when it expires).
MAX_EXPIRATION_MS = 2**32 - 1


def expiration_of(expires: datetime, now: datetime | None = None) -> str | None:
    """The AMQP ``expiration`` of a delivery whose envelope expires at ``expires``: the milliseconds left (at least
    1), or None when that is more than the broker takes. An expired delivery is dead-lettered by the broker and the
    hub answers its sender with a signed ``DELIVERY_EXPIRED`` (``hub.pipeline.expired``)."""
    left = (expires - (now or datetime.now(UTC))).total_seconds() * 1000
    if left > MAX_EXPIRATION_MS:
        return None
    return str(max(1, int(left)))


def delivery(
    names: Names,
    env: Envelope,
    body: bytes,
    *,
    system: str,
    role: str,
    zone: str,
    ceiling: int,
    priority: int | None = None,
) -> Outgoing:
    """A hub-signed delivery to ``system``, at the route's ``priority`` for its urgency (default: the transport's
    standard mapping). The classification gate's independent egress check runs on ``body`` at the moment of
    publishing (it re-reads the level from the bytes themselves)."""

    def egress(data: bytes) -> None:
        egress_allowed(zone, ceiling, data)

    level = priority_for(env.urgency) if priority is None else min(max(priority, 0), 9)
    return Outgoing(
        exchange=names.deliver_exchange,
        routing_key=names.delivery_key(system, level),
        body=body,
        headers={"x-hub-kind": "delivery", "x-hub-service": env.service_id, "x-hub-role": role},
        priority=level,
        message_id=env.message_id,
        egress=egress,
        correlation_id=env.conversation_id,
        expiration=expiration_of(env.expires),
    )


def reply(
    names: Names,
    system: str,
    message_id: str,
    body: bytes,
    *,
    kind: str,
    about: Envelope | None,
    claimed_id: str | None = None,
) -> Outgoing:
    """A hub.receipt or hub.error to ``system``. Its correlation id is the signed message id it answers; for a
    message whose signature could not be trusted, the AMQP message-id property its publisher set (only so that the
    publisher can match the answer: the hub routes nothing by it — the answer goes to the broker-authenticated
    publisher)."""
    ref = about.message_id if about is not None else (claimed_id or "")
    level = priority_for(about.urgency) if about is not None else 0
    return Outgoing(
        exchange=names.deliver_exchange,
        routing_key=names.delivery_key(system, level),
        body=body,
        headers={"x-hub-kind": kind, "x-hub-ref": ref, "x-hub-ref-verified": about is not None},
        priority=level,
        message_id=message_id,
        correlation_id=ref or None,
    )
