"""An operator's decision on a quarantined message (``hub quarantine release|reject``).

Release: the hub re-verifies the bytes it recorded and checks the sender's certificate against the directory's
registered ones (a refusal changes nothing), the store marks it released (evidence: who, why), then the hub signs
the delivery, publishes it to every recipient still pending (the egress check runs again at that moment), records
the deliveries, and sends the sender a hub.receipt. Reject: the store marks it rejected (deliveries
blocked with GATE_REJECTED) and the sender gets a signed hub.error with the reviewer's reason.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from hub.envelope import Party, parse
from hub.envelope.model import Envelope
from hub.errors import ClassificationBlocked
from hub.pipeline import outgoing
from hub.pipeline.processor import CN_TZ, Delivery
from hub.settings import Settings
from hub.store.audit import Actor
from hub.store.records import QuarantineItem, ReceiptRecord


async def _setup(settings: Settings, pool: Any) -> tuple[Any, Any, Any]:
    from hub.pipeline.context import load_context
    from hub.transport import Transport

    ctx = await load_context(settings, pool)
    transport = await Transport.connect(settings, client_name="hub-quarantine")
    return ctx, ctx.processor(amqp_admin_user=transport.user), transport


def _reverify(ctx: Any, settings: Settings, item: QuarantineItem) -> tuple[Any, Envelope]:
    """The recorded bytes, parsed, validated and verified again: act only on what was signed."""
    assert item.raw is not None
    root = parse(item.raw, max_bytes=settings.max_message_bytes)
    ctx.registry.validate(root)
    verified = ctx.verifier.verify(root)
    return verified, Envelope.from_tree(verified.root)


async def release(
    settings: Settings, pool: Any, message_id: str, reviewer: str, reason: str, *, actor: Actor | None = None
) -> int:
    """Release and deliver; returns the number of systems delivered to. ``actor``: the operator's action, recorded
    with the decision."""
    from hub.store.messages import quarantine_release, record_sent

    ctx, processor, transport = await _setup(settings, pool)
    try:
        checked: list[tuple[Any, Envelope]] = []

        def check(pending: QuarantineItem) -> None:
            # Before the store decides: the bytes verify, and the sender's certificate is one the directory
            # registers now (it may have been taken out since) — else nothing changes, the message stays pending.
            verified, env = _reverify(ctx, settings, pending)
            processor.check_registered(verified.signer, env)
            checked.append((verified, env))

        item = await quarantine_release(pool, message_id, reviewer, reason, actor=actor, check=check)
        verified, env = checked[-1]
        body = processor.sign_delivery(verified.canonical, verified.signature)
        targets: list[Delivery] = []
        for d in item.deliveries:
            if d.state in ("pending", "failed"):
                system = ctx.directory.system(d.recipient_system)
                targets.append(Delivery(system.id, system.agency, d.role, system.zone, ctx.directory.ceiling(system)))
        out = [
            outgoing.delivery(transport.names, env, body, system=t.system, role=t.role, zone=t.zone, ceiling=t.ceiling)
            for t in targets
        ]
        assert item.raw is not None
        rid, rbytes = processor.receipt_for(
            env, hashlib.sha256(item.raw).hexdigest(), item.received_at, targets, "accepted", None
        )
        out.append(outgoing.reply(transport.names, env.sender.system, rid, rbytes, kind="receipt", about=env))
        await transport.publish_many(out)
        await record_sent(
            pool,
            [env.message_id] if targets else [],
            [ReceiptRecord(rid, env.message_id, "hub.receipt", env.sender.system, at=datetime.now(CN_TZ))],
        )
        return len(targets)
    finally:
        await transport.close()


async def reject(
    settings: Settings, pool: Any, message_id: str, reviewer: str, reason: str, *, actor: Actor | None = None
) -> None:
    from hub.store.messages import quarantine_reject, record_sent

    item = await quarantine_reject(pool, message_id, reviewer, reason, actor=actor)
    ctx, processor, transport = await _setup(settings, pool)
    try:
        _, env = _reverify(ctx, settings, item)
        err = ClassificationBlocked(
            f"a security officer rejected the quarantined message: {reason}", code="GATE_REJECTED"
        )
        assert item.raw is not None
        eid, ebytes = processor.error(
            err, env, Party(item.sender_agency, item.sender_system), hashlib.sha256(item.raw).hexdigest()
        )
        await transport.publish_many(
            [outgoing.reply(transport.names, item.sender_system, eid, ebytes, kind="error", about=env)]
        )
        await record_sent(
            pool, [], [ReceiptRecord(eid, env.message_id, "hub.error", item.sender_system, code="GATE_REJECTED")]
        )
    finally:
        await transport.close()
