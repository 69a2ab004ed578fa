"""Dead letters: drain the ``ns.dead`` queue into the store, and replay one where it was going (``hub dead …`` and
the ops page).

``collect`` takes what waits in ``ns.dead`` in batches, stores each batch (``hub.store.dead_letters.insert``, one
statement, committed) and only then acknowledges it: a crash between the two leaves the batch unacknowledged, the
broker hands it out again, and the rows' ``dedup_key`` (a digest of the body, headers and properties, unique among
pending rows) makes the second insert a no-op. Nothing is lost, nothing is stored twice.

Three things park a message there, and a dead letter says which by its headers (none of them signed):

- the hub, after a message's last retry (``hub.transport.topology.dead_letter_of``: ``x-hub-error-code``,
  ``x-hub-error-reason``, ``x-hub-original-queue``): an inbound message → replayed into its inbound lane;
- an agency system that refused a delivery (``hub.pipeline.client.park_refused``: ``x-refused-by``, ``-code``,
  ``-reason``, published as the system's own AMQP user) → replayed to that system's queue;
- RabbitMQ, for a message nacked without requeue from an inbound lane or a system queue (``x-death``) → the same.

``replay`` acts on the hub's authority, so it trusts no header: an inbound message goes back to the inbound exchange
and through the whole examination again (signature, dedup by message id, routing, the gate), re-published as the
hub's user with the original publisher only where RabbitMQ authenticated it; a delivery goes to a system's queue only
after its bytes verify as hub-signed, the store shows that the hub delivered that message (or answer) to that very
system, and the egress check passes for that system. The target system of a refusal is the AMQP user RabbitMQ
authenticated (a system cannot have another system's deliveries replayed to it). The row is locked, marked replayed
and the operator's action recorded (``hub.store.audit``, ``dead.replay``), and only then the message published
(confirmed), all in one transaction: nothing is published that could not be recorded, and a failed publish leaves
the letter pending and unrecorded. Refused attempts are recorded too (outcome ``refused``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from hub import clock
from hub.errors import HubError
from hub.settings import Settings
from hub.store import dead_letters
from hub.store.dead_letters import DeadLetter, NewDeadLetter
from hub.transport.names import ATTEMPT_HEADER, LANES, ORIGIN_USER_HEADER, RETRY_HEADER, Names, lane_of_key
from hub.transport.topology import Incoming, Outgoing, carried_headers

__all__ = ["ReplayResult", "collect", "describe_source", "letter_of", "list_letters", "replay", "show"]

#: Header a replayed copy carries: the dead letter's id (so its next death, if any, is a new row and says so).
REPLAY_HEADER: Final[str] = "x-hub-replay-of"
#: Headers that describe a death, dropped from a replayed copy (it starts over).
_DEATH_HEADERS: Final[frozenset[str]] = frozenset(
    {
        "x-death",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-first-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-last-death-exchange",
        "x-hub-error-code",
        "x-hub-error-reason",
        "x-hub-original-queue",
        "x-refused-by",
        "x-refused-code",
        "x-refused-reason",
        RETRY_HEADER,
        ATTEMPT_HEADER,
        ORIGIN_USER_HEADER,
        REPLAY_HEADER,
    }
)
_BATCH: Final[int] = 100
_TEXT_CAP: Final[int] = 1000


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did: where the message went (exchange, routing key, queue), the signed message id it carries
    where verified, and the id of the operator action recorded."""

    dead_id: int
    kind: str
    exchange: str
    routing_key: str
    queue: str
    message_id: str | None
    action_id: int


# -- reading a dead letter -------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Header values as JSON values (bytes as text, times as ISO 8601), for storage and the dedup key. NUL characters
    are dropped (PostgreSQL's text and jsonb refuse them: one such header must not block the queue's collection)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").replace("\x00", "")
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value).replace("\x00", "")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.replace("\x00", "")[:_TEXT_CAP]


def _claimed_id(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value.replace("\x00", "")[:200] or None


def _kind_of_queue(names: Names, queue: str | None) -> str:
    if queue and names.inbound_lane_of_queue(queue):
        return "inbound"
    if queue and names.system_of_queue(queue):
        return "delivery"
    return "other"


def letter_of(names: Names, msg: Incoming, *, seen: datetime) -> NewDeadLetter:
    """What to store of one message taken from ``ns.dead`` (pure)."""
    headers = _plain(dict(msg.headers or {}))
    canonical = json.dumps(
        [headers, msg.message_id, msg.routing_key, msg.exchange, msg.user_id, msg.correlation_id, msg.priority],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    key = hashlib.sha256(hashlib.sha256(msg.body).digest() + canonical).digest()
    deaths = headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    refused_by = _text(headers.get("x-refused-by"))
    reason: str | None
    source: str | None
    exchange: str | None
    routing_key: str | None
    code: str | None
    detail: str | None
    if refused_by:
        source = names.system_queue(refused_by) if names.system_of_queue(f"{names.namespace}.q.{refused_by}") else None
        kind, reason = "delivery", "refused"
        code, detail = _text(headers.get("x-refused-code")), _text(headers.get("x-refused-reason"))
        exchange, routing_key = names.deliver_exchange, msg.routing_key
    elif headers.get("x-hub-error-code") is not None:
        source = _text(headers.get("x-hub-original-queue"))
        kind, reason = _kind_of_queue(names, source), "hub"
        code, detail = _text(headers.get("x-hub-error-code")), _text(headers.get("x-hub-error-reason"))
        exchange = (
            names.inbound_exchange if kind == "inbound" else (names.deliver_exchange if kind == "delivery" else None)
        )
        routing_key = msg.routing_key
    elif death:
        source = _text(death.get("queue"))
        kind, reason = _kind_of_queue(names, source), _text(death.get("reason"))
        code, detail = None, None
        exchange = _text(death.get("exchange"))
        keys = death.get("routing-keys")
        routing_key = _text(keys[0]) if isinstance(keys, list) and keys else msg.routing_key
    else:
        source, kind, reason, code, detail = None, "other", None, None, None
        exchange, routing_key = None, msg.routing_key
    return NewDeadLetter(
        dedup_key=key,
        first_seen=seen,
        kind=kind,
        source_queue=source,
        source_exchange=exchange,
        routing_key=routing_key,
        reason=reason,
        code=code[:100] if code else None,
        detail=detail,
        refused_by=refused_by[:100] if refused_by else None,
        publisher=_text(msg.user_id),
        claimed_message_id=_claimed_id(msg.message_id),
        headers_json=json.dumps(headers, ensure_ascii=False, sort_keys=True),
        priority=max(0, min(int(msg.priority or 0), 9)),
        correlation_id=_text(msg.correlation_id),
        body=msg.body,
        body_sha256=hashlib.sha256(msg.body).digest(),
    )


def describe_source(letter: DeadLetter) -> str:
    """One line: where it died and why (for the CLI and the page)."""
    where = letter.source_queue or letter.routing_key or "?"
    why = letter.code or letter.reason or "?"
    by = f" 拒收方 refused by {letter.refused_by}" if letter.refused_by else ""
    return f"{letter.kind} {where} {why}{by}"


# -- collect ---------------------------------------------------------------------------------------------------------


async def collect(settings: Settings, pool: Any, transport: Any = None) -> int:
    """Drain ``ns.dead`` into the store; returns how many new dead letters were stored. Each batch is inserted and
    committed before it is acknowledged. A queue that does not exist yet (no hub ever started) holds nothing."""
    from hub.transport import Transport

    own = transport is None
    if transport is None:
        transport = await Transport.connect(settings, client_name="hub-dead")
    names: Names = transport.names
    stored = 0
    try:
        while True:
            try:
                batch = await transport.fetch(names.dead_letter_queue, max_messages=_BATCH)
            except HubError as exc:
                if exc.code == "AMQP_NOT_FOUND":
                    return stored
                raise
            if not batch:
                return stored
            seen = clock.now()
            try:
                stored += await dead_letters.insert(pool, [letter_of(names, m, seen=seen) for m in batch])
            except BaseException:
                await transport.nack(batch, requeue=True)
                raise
            await transport.ack(batch)
    finally:
        if own:
            await transport.close()


# -- reading (for the page and the CLI) -------------------------------------------------------------------------------


async def list_letters(
    pool: Any, *, include_done: bool = False, before_id: int | None = None, limit: int = 50
) -> list[DeadLetter]:
    """Stored dead letters newest first (pending ones unless ``include_done``), without bodies; ``before_id`` (the
    last id of the page before) pages on. Call ``collect`` first to see what is waiting in the queue."""
    return await dead_letters.list_dead(
        pool, state=None if include_done else "pending", before_id=before_id, limit=limit
    )


async def show(pool: Any, dead_id: int) -> DeadLetter:
    """One dead letter with its body; ``DEAD_NOT_FOUND`` when there is none."""
    found = await dead_letters.get(pool, dead_id)
    if found is None:
        raise HubError(f"there is no dead letter {dead_id}", code="DEAD_NOT_FOUND")
    return found


# -- replay ----------------------------------------------------------------------------------------------------------


def _refuse(dead_id: int, why: str) -> HubError:
    return HubError(f"dead letter {dead_id} cannot be replayed: {why}", code="DEAD_NOT_REPLAYABLE")


def _copy_headers(letter: DeadLetter) -> dict[str, Any]:
    try:
        stored = json.loads(letter.headers_json)
    except ValueError:
        stored = {}
    # Not the death history, nor a CC or BCC a system set when it parked the letter (a replay to ns.deliver would be
    # routed by their keys too: a copy in another system's queue).
    kept = {k: v for k, v in stored.items() if k not in _DEATH_HEADERS} if isinstance(stored, dict) else {}
    headers = carried_headers(kept)
    headers[REPLAY_HEADER] = letter.id
    return headers


def _lane(names: Names, letter: DeadLetter) -> str:
    """The shared lane a replay goes to: the letter's lane (a system's own lane ``normal.<system>`` → ``normal``)."""
    for lane in (lane_of_key(letter.routing_key or ""), names.inbound_lane_of_queue(letter.source_queue or "")):
        if lane in LANES:
            return lane
    return "normal"


def _inbound(names: Names, letter: DeadLetter, hub_user: str) -> Outgoing:
    """Back into the inbound lane, as the hub's user: the hub examines it again from scratch. The original
    publisher travels in ``x-hub-origin-user`` only where RabbitMQ authenticated it (the dead letter's user_id is
    that system's user, or the hub's own with the origin it recorded).

    A letter that says the hub parked it (``x-hub-error-code``) without the hub's user_id was written by someone
    else — a system may publish to the dead-letter exchange — with no user_id: replayed, it would be examined with
    no publisher to hold it to (``Incoming.publisher`` None), so a system could have another's signed message
    accepted that way. Refused (the hub parks with its own user: ``dead_letter_of(…, hub_user=…)``)."""
    if letter.reason == "hub" and not letter.publisher:
        raise _refuse(
            letter.id,
            "it says the hub parked it (x-hub-error-code) but was published without the hub's RabbitMQ user "
            "(no user_id): nobody RabbitMQ authenticated stands behind it; its sender sends the message again",
        )
    headers = _copy_headers(letter)
    origin: str | None = None
    if letter.publisher and names.system_of_user(letter.publisher):
        origin = letter.publisher
    elif letter.publisher == hub_user:
        try:
            stored = json.loads(letter.headers_json)
        except ValueError:
            stored = {}
        value = stored.get(ORIGIN_USER_HEADER) if isinstance(stored, dict) else None
        origin = value if isinstance(value, str) and names.system_of_user(value) else None
    if origin:
        headers[ORIGIN_USER_HEADER] = origin
    assert letter.body is not None
    return Outgoing(
        exchange=names.inbound_exchange,
        routing_key=_lane(names, letter),
        body=letter.body,
        headers=headers,
        priority=letter.priority,
        message_id=letter.claimed_message_id or "",
        user_id=hub_user,
        correlation_id=letter.correlation_id,
    )


def _target_system(names: Names, letter: DeadLetter, hub_user: str) -> str | None:
    """The system a dead delivery goes back to. A refusal: the system RabbitMQ authenticated as its publisher (the
    hub's own user — an operator's ``hub receive`` — may name the system). Otherwise the queue it died in."""
    if letter.refused_by:
        if letter.publisher == hub_user:
            return letter.refused_by if names.system_of_queue(f"{names.namespace}.q.{letter.refused_by}") else None
        system = names.system_of_user(letter.publisher)
        return system if system == letter.refused_by else None
    return names.system_of_queue(letter.source_queue or "")


async def _delivery(settings: Settings, pool: Any, names: Names, letter: DeadLetter, hub_user: str) -> Outgoing:
    """Back to the system's queue, once the bytes verify as the hub's and the store shows they were sent there."""
    from hub.pipeline.client import open_hub_signed
    from hub.pipeline.context import load_context
    from hub.routing import egress_allowed
    from hub.transport.names import priority_for

    system = _target_system(names, letter, hub_user)
    if system is None:
        raise _refuse(letter.id, "the system it was going to is not known from what RabbitMQ authenticated")
    assert letter.body is not None
    ctx = await load_context(settings, pool)
    try:
        opened = open_hub_signed(settings, ctx.verifier, ctx.registry, letter.body)
    except HubError as exc:
        raise _refuse(letter.id, f"its bytes do not verify as signed by the hub ({exc.code})") from None
    env = opened.envelope
    service = env.service
    async with pool.acquire() as conn:
        if service in ("hub.receipt", "hub.error"):
            sent = await conn.fetchval(
                "SELECT count(*) FROM receipts WHERE receipt_id = $1 AND recipient_system = $2",
                uuid.UUID(env.message_id),
                system,
            )
            role = None
        else:
            role = await conn.fetchval(
                "SELECT role FROM deliveries WHERE message_id = $1 AND recipient_system = $2 AND state <> 'blocked'",
                uuid.UUID(env.message_id),
                system,
            )
            sent = role is not None
    if not sent:
        raise _refuse(letter.id, f"the store has no record of message {env.message_id} going to {system}")
    target = ctx.directory.system(system)
    body = letter.body
    try:
        egress_allowed(target.zone, ctx.directory.ceiling(target), body)
    except HubError as exc:
        raise _refuse(letter.id, f"the egress check refuses it for {system} ({exc.code})") from None
    headers = _copy_headers(letter)
    if service == "hub.receipt":
        headers.setdefault("x-hub-kind", "receipt")
    elif service == "hub.error":
        headers.setdefault("x-hub-kind", "error")
    else:
        headers.update({"x-hub-kind": "delivery", "x-hub-service": env.service_id, "x-hub-role": role})

    def egress(data: bytes) -> None:
        egress_allowed(target.zone, ctx.directory.ceiling(target), data)

    return Outgoing(
        exchange=names.deliver_exchange,
        routing_key=system,
        body=body,
        headers=headers,
        priority=priority_for(env.urgency),
        message_id=env.message_id,
        egress=egress,
        correlation_id=letter.correlation_id or env.conversation_id,
    )


async def replay(
    settings: Settings,
    pool: Any,
    dead_id: int,
    *,
    operator: str,
    role: str,
    via: str,
    reason: str,
    transport: Any = None,
) -> ReplayResult:
    """Republish dead letter ``dead_id`` to where it was going, mark it replayed and record the operator's action
    (``dead.replay``): marked and recorded in one transaction with the row locked, published before it commits (a
    reason the store refuses publishes nothing). ``DEAD_NOT_FOUND``,
    ``DEAD_ALREADY_REPLAYED`` (also when another operator replays it at the same moment) or ``DEAD_NOT_REPLAYABLE``
    otherwise — each refusal recorded with outcome ``refused``. ``ValueError`` without an operator or a reason."""
    from hub.store.audit import record_operator_action
    from hub.transport import Transport

    if not operator.strip() or not reason.strip():
        raise ValueError("a replay needs the operator and a reason")
    via_ = "web" if via == "web" else "cli"
    own = transport is None
    if transport is None:
        transport = await Transport.connect(settings, client_name="hub-dead")
    names: Names = transport.names
    target = str(dead_id)
    try:
        try:
            letter = await dead_letters.get(pool, dead_id)
            if letter is None:
                raise HubError(f"there is no dead letter {dead_id}", code="DEAD_NOT_FOUND")
            if letter.state != "pending":
                raise HubError(
                    f"dead letter {dead_id} was already {letter.state} by {letter.replayed_by}",
                    code="DEAD_ALREADY_REPLAYED",
                )
            if letter.kind == "inbound":
                out = _inbound(names, letter, transport.user)
                verified_id = letter.message_id
            elif letter.kind == "delivery":
                out = await _delivery(settings, pool, names, letter, transport.user)
                verified_id = out.message_id
            else:
                raise _refuse(dead_id, "where it was going is unknown (no dead-letter headers the hub reads)")
            # Marked and recorded first, published last, in the transaction: what cannot be recorded (the store
            # refuses the reason, say) is never published, and a publish that fails undoes the mark and the record.
            async with pool.acquire() as conn, conn.transaction():
                await dead_letters.lock(conn, dead_id)
                at = clock.now()
                await dead_letters.mark_replayed(
                    conn, dead_id, operator=operator, reason=reason, at=at, message_id=verified_id
                )
                action_id = await record_operator_action(
                    conn,
                    operator=operator,
                    role=role,
                    action="dead.replay",
                    via=via_,  # type: ignore[arg-type]
                    reason=reason,
                    target=target,
                    message_id=verified_id,
                    detail={
                        "dead_id": dead_id,
                        "kind": letter.kind,
                        "to": out.routing_key,
                        "claimed_message_id": letter.claimed_message_id,
                    },
                )
                await transport.publish_many([out])
        except HubError as exc:
            if exc.code.startswith("DEAD_"):
                await record_operator_action(
                    pool,
                    operator=operator,
                    role=role,
                    action="dead.replay",
                    via=via_,  # type: ignore[arg-type]
                    reason=reason,
                    target=target,
                    outcome="refused",
                    detail={"dead_id": dead_id, "code": exc.code},
                )
            raise
    finally:
        if own:
            await transport.close()
    if out.exchange == names.inbound_exchange:
        queue = names.inbound_queue(out.routing_key)
    elif out.routing_key.endswith(".urgent"):  # a quorum installation's urgent lane (Names.delivery_key)
        queue = names.urgent_queue(out.routing_key.removesuffix(".urgent"))
    else:
        queue = names.system_queue(out.routing_key)
    return ReplayResult(dead_id, letter.kind, out.exchange, out.routing_key, queue, verified_id, action_id)
