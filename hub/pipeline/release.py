"""An operator's decision on a quarantined message (``hub quarantine release|reject``).

Release: the store marks it released (evidence: who, why), then the hub re-verifies the bytes it recorded, signs
the delivery, publishes it to every recipient still pending (the egress check runs again at that moment),
records the deliveries, and sends the sender a hub.receipt. Reject: the store marks it rejected (deliveries
blocked with GATE_REJECTED) and the sender gets a signed hub.error with the reviewer's reason.
"""

from __future__ import annotations

from typing import Any

from hub.envelope import Party, parse
from hub.envelope.model import Envelope
from hub.errors import ClassificationBlocked
from hub.pipeline.processor import CN_TZ, Delivery
from hub.settings import Settings
from hub.store.records import ReceiptRecord


async def _setup(settings: Settings, pool: Any) -> tuple[Any, Any, Any]:
    from hub.pipeline.context import load_context
    from hub.transport import Transport

    ctx = await load_context(settings, pool)
    transport = await Transport.connect(settings, client_name="hub-quarantine")
    return ctx, ctx.processor(amqp_admin_user=transport.user), transport


async def release(settings: Settings, pool: Any, message_id: str, reviewer: str, reason: str) -> int:
    """Release and deliver; returns the number of systems delivered to."""
    from datetime import datetime

    from hub.routing import egress_allowed
    from hub.store.messages import quarantine_release, record_sent
    from hub.transport import Outgoing

    item = await quarantine_release(pool, message_id, reviewer, reason)
    ctx, processor, transport = await _setup(settings, pool)
    try:
        assert item.raw is not None
        root = parse(item.raw, max_bytes=settings.max_message_bytes)
        ctx.registry.validate(root)
        verified = ctx.verifier.verify(root)
        env = Envelope.from_tree(verified.root)
        body = processor.sign_delivery(verified.root)
        pending = [d for d in item.deliveries if d.state in ("pending", "failed")]
        targets: list[Delivery] = []
        out = []
        for d in pending:
            system = ctx.directory.system(d.recipient_system)
            zone, ceiling = system.zone, ctx.directory.ceiling(system)
            targets.append(Delivery(system.id, system.agency, d.role, zone, ceiling))

            def egress(b: bytes, zone: str = zone, ceiling: int = ceiling) -> None:
                egress_allowed(zone, ceiling, b)

            out.append(
                Outgoing(
                    exchange=transport.names.deliver_exchange,
                    routing_key=system.id,
                    body=body,
                    headers={"x-hub-kind": "delivery", "x-hub-service": env.service_id, "x-hub-role": d.role},
                    priority=_priority(env),
                    message_id=env.message_id,
                    egress=egress,
                    correlation_id=env.conversation_id,
                )
            )
        import hashlib

        rid, rbytes = processor.receipt_for(
            env, hashlib.sha256(item.raw).hexdigest(), item.received_at, targets, "accepted", None
        )
        out.append(_reply(transport, env.sender.system, rid, rbytes, env, "receipt"))
        await transport.publish_many(out)
        await record_sent(
            pool,
            [env.message_id] if targets else [],
            [ReceiptRecord(rid, env.message_id, "hub.receipt", env.sender.system, at=datetime.now(CN_TZ))],
        )
        return len(targets)
    finally:
        await transport.close()


async def reject(settings: Settings, pool: Any, message_id: str, reviewer: str, reason: str) -> None:
    import hashlib

    from hub.store.messages import quarantine_reject, record_sent

    item = await quarantine_reject(pool, message_id, reviewer, reason)
    ctx, processor, transport = await _setup(settings, pool)
    try:
        assert item.raw is not None
        root = parse(item.raw, max_bytes=settings.max_message_bytes)
        ctx.registry.validate(root)
        env = Envelope.from_tree(ctx.verifier.verify(root).root)
        err = ClassificationBlocked(
            f"a security officer rejected the quarantined message: {reason}", code="GATE_REJECTED"
        )
        eid, ebytes = processor.error(
            err, env, Party(item.sender_agency, item.sender_system), hashlib.sha256(item.raw).hexdigest()
        )
        await transport.publish_many([_reply(transport, item.sender_system, eid, ebytes, env, "error")])
        await record_sent(
            pool, [], [ReceiptRecord(eid, env.message_id, "hub.error", item.sender_system, code="GATE_REJECTED")]
        )
    finally:
        await transport.close()


def _priority(env: Envelope) -> int:
    from hub.transport import priority_for

    return priority_for(env.urgency)


def _reply(transport: Any, system: str, message_id: str, body: bytes, about: Envelope, kind: str) -> Any:
    from hub.transport import Outgoing

    return Outgoing(
        exchange=transport.names.deliver_exchange,
        routing_key=system,
        body=body,
        headers={"x-hub-kind": kind, "x-hub-ref": about.message_id},
        priority=_priority(about),
        message_id=message_id,
        correlation_id=about.message_id,
    )
