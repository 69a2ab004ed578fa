"""The pipeline's decisions, pure: what a batch records, and — once the store has said what it already holds — what
each message is answered. The worker only does the I/O around them (``hub.pipeline.worker``); the same functions
run the in-memory pipeline of the tests and of the SDK's ``TestHub``.

    examine (Processor)  →  records_of  →  store.record  →  plan_of  →  Processor.render  →  outgoing_of
                                           (I/O)                                              →  publish (I/O)

``plan_of`` is the answer state machine (new, duplicate, a copy resumed after a crash, quarantined, released,
refused), a function of the examination's result and the store's ``RecordOutcome`` alone; ``Processor.render``
makes the signed bytes a plan asks for; ``outgoing_of`` turns them into what is published and what is recorded
as sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hub.envelope.model import service_namespace
from hub.errors import NotAllowed
from hub.pipeline import outgoing
from hub.pipeline.plan import Plan
from hub.pipeline.processor import Accepted, Rejected
from hub.store.records import DeliveryRecord, MessageRecord, ReceiptRecord, RecordOutcome, Rejection

if TYPE_CHECKING:
    from hub.pipeline.processor import Rendered
    from hub.transport.names import Names
    from hub.transport.topology import Incoming, Outgoing

__all__ = [
    "Plan",
    "message_record",
    "outgoing_of",
    "plan_of",
    "records_of",
    "refusal_key",
    "rejected_record",
    "rejection",
    "vouch_refusal",
]

#: A refusal that says nothing about the message itself: answered and, besides, parked for an operator.
PARKED_AS_WELL = frozenset({"MSG_COST_EXCEEDED"})


NOTHING = Plan()


def plan_of(result: Accepted | Rejected, outcome: RecordOutcome | None, *, resume: bool) -> Plan:
    """The answer state machine. ``outcome`` is what the store said (None for a refusal that was not recorded as a
    message); ``resume`` is True for a copy the hub held before (redelivered after a crash, put back by a retry)."""
    if outcome is not None and outcome.in_batch:
        return NOTHING  # a second copy in the same batch: the first carries the work
    if isinstance(result, Rejected):
        if outcome is not None and outcome.duplicate and not outcome.needs_receipt:
            return NOTHING  # a replay of a refused message already answered
        if result.reply_to is None:
            return Plan(park=True)  # nobody to answer: parked
        return Plan(error=True, record_receipt=True, park=result.error.code in PARKED_AS_WELL)
    assert outcome is not None, "an accepted message is always recorded"
    if not outcome.duplicate:
        if result.quarantined:  # held for a person; delivered only when released
            return Plan(receipt="quarantined", record_receipt=True, blocked_error=bool(result.blocked))
        return Plan(
            deliver=tuple(result.deliveries),
            receipt="accepted",
            record_receipt=True,
            blocked_error=bool(result.blocked),
        )
    if outcome.state not in ("accepted", "released"):
        # Held for a person: say so again, as an accepted message's copy is answered "duplicate" — a resend means the
        # sender may have missed the first answer (an HTTP response lost on the way: the SDK resends, and a JSON
        # MSG_DUPLICATE made it a refusal of a message the hub still holds). Recorded only if it never got one.
        if outcome.state == "quarantined":
            return Plan(receipt="quarantined", record_receipt=outcome.needs_receipt)
        return NOTHING  # refused before (its answer was the signed error)
    # Accepted (or released by an operator) before. Finish what is missing only for a copy the hub itself held
    # before: a fresh second copy from the sender may meet the first one still in flight in another worker
    # (recorded, not yet published); that worker finishes its own work, and this copy is answered "duplicate".
    pending = set(outcome.to_deliver) if resume else set()
    deliver = tuple(d for d in result.deliveries if d.system in pending)
    if not deliver and not (outcome.needs_receipt and resume):
        return Plan(receipt="duplicate")  # fully handled before: delivered once
    # The sender was told about blocked recipients the first time.
    return Plan(deliver=deliver, receipt="accepted" if outcome.needs_receipt else None, record_receipt=True)


def outgoing_of(
    plan: Plan, result: Accepted | Rejected, rendered: Rendered, msg: Incoming, names: Names, *, hub_user: str | None
) -> tuple[list[Outgoing], bool, list[ReceiptRecord]]:
    """What to publish for one message, whether its deliveries go out (to be marked delivered once confirmed), and
    the answers to record as sent."""
    out: list[Outgoing] = []
    receipts: list[ReceiptRecord] = []
    if isinstance(result, Accepted):
        env = result.envelope
        sender = env.sender.system
        for d in plan.deliver:
            out.append(
                outgoing.delivery(
                    names,
                    env,
                    rendered.delivery,
                    system=d.system,
                    role=d.role,
                    zone=d.zone,
                    ceiling=d.ceiling,
                    priority=result.priority,
                )
            )
        if plan.receipt is not None:
            out.append(outgoing.reply(names, sender, rendered.receipt_id, rendered.receipt, kind="receipt", about=env))
            if plan.record_receipt:
                receipts.append(ReceiptRecord(rendered.receipt_id, env.message_id, "hub.receipt", sender))
        if plan.blocked_error and rendered.error:
            out.append(outgoing.reply(names, sender, rendered.error_id, rendered.error, kind="error", about=env))
            code = result.blocked[0][1].code
            receipts.append(ReceiptRecord(rendered.error_id, env.message_id, "hub.error", sender, code=code))
        return out, bool(plan.deliver), receipts
    if plan.error and rendered.error and result.reply_to is not None:
        to = result.reply_to.system
        out.append(
            outgoing.reply(
                names,
                to,
                rendered.error_id,
                rendered.error,
                kind="error",
                about=result.envelope,
                claimed_id=msg.message_id,
            )
        )
        receipts.append(ReceiptRecord(rendered.error_id, result.message_id, "hub.error", to, code=result.error.code))
    if plan.park:
        from hub.transport.topology import dead_letter_of

        out.append(
            dead_letter_of(names, msg, code=result.error.code, reason=result.error.detail[:500], hub_user=hub_user)
        )
    return out, False, receipts


# ------------------------------------------------------------------------------------------------ records


def _envelope_fields(env: Any) -> dict[str, Any]:
    """The columns of a messages row that come from the (signed) envelope."""
    return dict(
        message_id=env.message_id,
        conversation_id=env.conversation_id,
        sender_agency=env.sender.agency,
        sender_system=env.sender.system,
        service=env.service,
        version=env.version,
        classification=env.level,
        classification_label=env.classification,
        urgency=env.urgency,
        created=env.created,
        expires=env.expires,
        ref_to=env.ref_to,
        business_ref=env.business_ref,
    )


def message_record(acc: Accepted) -> MessageRecord:
    deliveries = [DeliveryRecord(d.agency, d.system, d.role) for d in acc.deliveries]  # type: ignore[arg-type]
    deliveries += [
        DeliveryRecord(d.agency, d.system, d.role, "blocked", err.code)  # type: ignore[arg-type]
        for d, err in acc.blocked
    ]
    return MessageRecord(
        **_envelope_fields(acc.envelope),
        raw=acc.data,
        deliveries=tuple(deliveries),
        digest=acc.received_digest,
        signer_serial=acc.signer_serial,
        signer_fingerprint=acc.signer_fingerprint,
        state="quarantined" if acc.quarantined else "accepted",
        markings=tuple(m.text for m in acc.markings),
        received_at=acc.received_at,
        detail={"lane": acc.lane, "signed_digest": acc.digest},
    )


def rejected_record(rej: Rejected) -> MessageRecord:
    assert rej.envelope is not None
    return MessageRecord(
        **_envelope_fields(rej.envelope),
        raw=rej.data,
        digest=rej.digest,
        signer_serial=rej.signer_serial,
        state="rejected",
        error_code=rej.error.code,
        error_reason=rej.error.detail[:1000],
        received_at=rej.received_at,
    )


def rejection(rej: Rejected, amqp_user: str | None) -> Rejection:
    # What the refused message claims (read before its signature failed, or signed but not by its publisher): for
    # an operator to find it by on the ops page, never for anything else.
    claim = rej.envelope if rej.envelope is not None else rej.claimed
    return Rejection(
        raw=rej.data,
        error_code=rej.error.code,
        error_reason=rej.error.detail[:1000],
        amqp_user=amqp_user,
        claimed_message_id=claim.message_id if claim is not None else None,
        service=claim.service if claim is not None else None,
        claimed_sender=rej.reply_to.system if rej.reply_to is not None else None,
        digest=rej.digest,
        received_at=rej.received_at,
    )


def records_of(
    results: Sequence[tuple[Accepted | Rejected, str | None]],
) -> tuple[list[MessageRecord], list[int], list[Rejection]]:
    """What a batch records: a messages row for each accepted message and for each refusal whose sender is
    confirmed (signed by its sender, published by its sender: it occupies its message id, so a replay is
    recognised), refused intake for the others (a refusal before that never occupies an id: a forger could
    otherwise block the genuine message). ``results`` pairs each result with its AMQP user; the second list says
    which result each record belongs to (their outcomes come back in that order)."""
    records: list[MessageRecord] = []
    owners: list[int] = []
    rejections: list[Rejection] = []
    for i, (r, amqp_user) in enumerate(results):
        if isinstance(r, Accepted):
            records.append(message_record(r))
            owners.append(i)
        elif r.envelope is not None and r.sender_confirmed:
            records.append(rejected_record(r))
            owners.append(i)
        else:
            rejections.append(rejection(r, amqp_user))
    return records, owners, rejections


# ------------------------------------------------------------------------------------------------ refusals
#
# ``delivery.refusal`` is routed From every level To <Any/> and every system accepts it (routes/refusals.routes.xml,
# hub.directory.model.Directory.accepts): what keeps it from being an open channel around default deny is this check,
# made by the worker for the refusals of a batch only (one store query for all of them, ``StoreBatch.delivered_from``).
# A refusal is accepted only when the store shows that the hub delivered (or is delivering: the delivery row is there,
# not blocked, for a message accepted or released) its OriginalMessageId to the refusal's signed sender, and when it
# goes to that message's original sender system and nowhere else.


def refusal_key(acc: Accepted) -> tuple[str, str] | None:
    """(OriginalMessageId, the refusing system) of an accepted ``delivery.refusal`` — what the store must vouch for —
    read from the signed body; None when the body does not name a message id (the schema makes that impossible)."""
    env = acc.envelope
    body = env.body
    if body is None:
        return None
    text = body.findtext(f"{{{service_namespace(env.service, env.version)}}}OriginalMessageId")
    if not text:
        return None
    try:
        original = str(uuid.UUID(text.strip()))
    except ValueError:
        return None
    return original, env.sender.system


def vouch_refusal(acc: Accepted, delivered_from: Mapping[tuple[str, str], tuple[str, str]]) -> Rejected | None:
    """None when the accepted refusal ``acc`` may go on; else the refusal's own refusal, ``REFUSAL_UNRELATED``, to
    its signed sender. ``delivered_from`` maps (message id, recipient system) to the message's original sender
    (agency, system) for every delivery the store vouches for (``StoreBatch.delivered_from``)."""
    env = acc.envelope
    key = refusal_key(acc)
    problem: str | None = None
    if key is None:
        problem = "it does not name the refused message (OriginalMessageId)"
    elif env.ref_to is not None and env.ref_to.lower() != key[0]:
        problem = f"its RefToMessageId {env.ref_to} is not its OriginalMessageId {key[0]}"
    else:
        origin = delivered_from.get(key)
        if origin is None:
            problem = f"the hub never delivered message {key[0]} to {key[1]}"
        else:
            systems = {d.system for d in acc.deliveries} | {d.system for d, _ in acc.blocked}
            extra = sorted(systems - {origin[1]})
            if extra or not systems:
                problem = (
                    f"it goes to {', '.join(extra) or 'nobody'}, but a refusal goes only to the refused message's "
                    f"original sender, {origin[0]}/{origin[1]}"
                )
    if problem is None:
        return None
    err = NotAllowed(
        f"refusal {env.message_id} refused: {problem}; a system refuses only a message the hub delivered to it, "
        "back to that message's sender",
        code="REFUSAL_UNRELATED",
    )
    return Rejected(
        err,
        acc.data,
        acc.received_digest,
        acc.received_at,
        envelope=env,
        reply_to=env.sender,
        signer_serial=acc.signer_serial,
        sender_confirmed=True,
    )
