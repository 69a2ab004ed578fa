"""The topology as data, and what travels through it. Pure: no aio-pika here.

``topology(names, system_ids)`` describes every exchange, queue and binding of ARCHITECTURE.md; the AMQP
transport declares exactly this and the in-memory twin routes by exactly this, so the two cannot drift apart.

Why these choices:

- **Classic queues with x-max-priority, not quorum queues.** On a single broker node a quorum queue replicates to
  nobody: it costs a Raft log and extra fsyncs for no added safety, and (on RabbitMQ 3.x) it has no message
  priorities, which the 特急 ordering of system queues needs. Durable classic queues with persistent messages and
  publisher confirms survive a broker restart on one node. With a cluster, switch the inbound lanes to quorum
  queues (``x-queue-type: quorum``) and keep the emergency lane separate instead of using priorities.
- **Two inbound lanes** rather than one priority queue: the hub consumes both with separate consumers, so an
  emergency is taken from its own queue even while thousands of normal messages sit unacknowledged in the
  normal lane's prefetch window (priorities only reorder messages *waiting in the queue*, not those already
  prefetched by a busy consumer).
- **An inbound lane per system as well** (``ns.in.<lane>.<system>``, fed by the topic exchange ``ns.submit`` where a
  system may only use ``<lane>.<its id>``): one FIFO queue for everybody lets one system's flood (10,000 hostile
  messages, each costing a signature check) stand in front of every other system's messages; with a queue each, the
  workers take from all of them in turn and a flooder only waits behind itself. The shared lanes stay for the
  hub's own copies (retries, moves, replays, the process engine), which are never a flood of one system.
- **Retry by dead-lettering**: a message to retry is published to the retry exchange with the lane as routing key
  and ``hub-retry: <d>s``; it waits in ``ns.retry.<d>s`` until its TTL and is dead-lettered back to the inbound
  exchange with its original routing key, i.e. into the lane it came from.
- **A recipient's delay by dead-lettering too** (``ns.later`` → ``ns.later.<d>s`` → ``ns.later.due``, then a hub
  worker delivers it again): a delivery its adapter cannot take yet is published there and acknowledged, instead of
  being held unacknowledged for the delay, where it filled the prefetch window (64 held retries stopped everything
  else, 特急 included, for up to five minutes). ``ns.later`` is a topic exchange because RabbitMQ checks topic
  permissions only on those; the way back goes through the hub (by the publisher RabbitMQ authenticated), not a
  binding, because RabbitMQ routes a dead-lettered message by every key it was published with, ``CC`` and ``BCC``
  headers included, which no permission checks: a binding back by key let a system put copies into any queue.
- **Inbound lanes and system queues dead-letter into ``ns.dead``**, so a message nacked without requeue is parked
  where an operator sees it, never dropped.
- **Quorum queues on a cluster** (``HUB_QUEUE_TYPE=quorum``, ``Names(ns, queue_type="quorum")``): every queue is
  declared ``x-queue-type: quorum`` (replicated by Raft over the cluster's nodes: a queue survives the loss of a
  minority of them). There are no message priorities, so each system gets two queues, ``ns.q.<system>.urgent``
  (routing key ``<system>.urgent``: deliveries at ``URGENT_PRIORITY`` or above) and ``ns.q.<system>``, and a reader
  takes the urgent one first (``Names.system_queues``) — as the inbound side has its two lanes. Queues that
  dead-letter do it **at least once** (``x-dead-letter-strategy: at-least-once``, which needs ``x-overflow:
  reject-publish``): a message expiring from a retry queue back into its lane, or nacked into ``ns.dead``, is
  removed only once the target queue confirmed it; with the default at-most-once a node failure at that moment
  could drop it. The classic topology is unchanged by all of this (the same arguments, byte for byte).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hub.policy import DEFAULT_RETRY, Retry
from hub.transport.names import (
    ATTEMPT_HEADER,
    EXPIRED_FOR_HEADER,
    LANE_HEADER,
    LANES,
    LATER_DELAYS_S,
    MAX_PRIORITY,
    ORIGIN_USER_HEADER,
    RETRY_DELAYS_S,
    RETRY_HEADER,
    URGENT_SUFFIX,
    Names,
    check_system_id,
    lane_of_key,
    own_lane_user,
    retry_delay,
)

__all__ = [
    "ROUTING_HEADERS",
    "BindingSpec",
    "ExchangeSpec",
    "Handler",
    "Incoming",
    "Outgoing",
    "QueueSpec",
    "Topology",
    "carried_headers",
    "dead_letter_of",
    "moved_lane_of",
    "retry_of",
    "topology",
]

ExchangeType = Literal["direct", "topic", "headers", "fanout"]


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    type: ExchangeType


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    #: Queue arguments (``x-max-priority``, ``x-message-ttl``, ``x-dead-letter-exchange``, ``x-queue-type``).
    arguments: Mapping[str, Any]
    #: What the queue is for, where the in-memory twin needs to know (not declared to the broker): ``"later"`` for
    #: the recipients' own delays (``ns.later.<d>s``), which it keeps in real time while it scales the hub's retries.
    role: str = ""

    @property
    def max_priority(self) -> int:
        return int(self.arguments.get("x-max-priority", 0))

    @property
    def ttl_ms(self) -> int | None:
        ttl = self.arguments.get("x-message-ttl")
        return None if ttl is None else int(ttl)

    @property
    def dead_letter_exchange(self) -> str | None:
        dlx = self.arguments.get("x-dead-letter-exchange")
        return None if dlx is None else str(dlx)


@dataclass(frozen=True, slots=True)
class BindingSpec:
    queue: str
    exchange: str
    routing_key: str = ""
    #: Binding arguments (used by the headers exchange of the retry queues).
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    bindings: tuple[BindingSpec, ...]

    def queue(self, name: str) -> QueueSpec | None:
        for q in self.queues:
            if q.name == name:
                return q
        return None


def topology(names: Names, system_ids: Iterable[str] = ()) -> Topology:
    """The whole topology for ``names`` with one queue per system in ``system_ids`` (duplicates ignored; two with
    quorum queues: ``_quorum_topology``)."""
    if names.quorum:
        return _quorum_topology(names, system_ids)
    classic = {"x-queue-type": "classic"}
    dead = {"x-dead-letter-exchange": names.dead_letter_exchange}
    exchanges = (
        ExchangeSpec(names.inbound_exchange, "direct"),
        ExchangeSpec(names.deliver_exchange, "direct"),
        ExchangeSpec(names.retry_exchange, "headers"),
        ExchangeSpec(names.dead_letter_exchange, "fanout"),
        ExchangeSpec(names.quarantine_exchange, "fanout"),
        ExchangeSpec(names.submit_exchange, "topic"),
        ExchangeSpec(names.later_exchange, "topic"),
        ExchangeSpec(names.later_due_exchange, "fanout"),
    )
    queues: list[QueueSpec] = []
    bindings: list[BindingSpec] = []
    for lane in LANES:
        q = names.inbound_queue(lane)
        queues.append(QueueSpec(q, {**classic, **dead}))
        bindings.append(BindingSpec(q, names.inbound_exchange, lane))
    for delay in RETRY_DELAYS_S:
        q = names.retry_queue(delay)
        # No x-dead-letter-routing-key: an expired message keeps the routing key it was published with (its lane).
        queues.append(
            QueueSpec(q, {**classic, "x-message-ttl": delay * 1000, "x-dead-letter-exchange": names.inbound_exchange})
        )
        bindings.append(BindingSpec(q, names.retry_exchange, "", {"x-match": "all", RETRY_HEADER: f"{delay}s"}))
    _later(names, classic, classic, queues, bindings)
    queues.append(QueueSpec(names.dead_letter_queue, dict(classic)))
    bindings.append(BindingSpec(names.dead_letter_queue, names.dead_letter_exchange))
    queues.append(QueueSpec(names.expired_queue, dict(classic)))
    bindings.append(BindingSpec(names.expired_queue, names.dead_letter_exchange))
    queues.append(QueueSpec(names.quarantine_queue, dict(classic)))
    bindings.append(BindingSpec(names.quarantine_queue, names.quarantine_exchange))
    seen: set[str] = set()
    for system in system_ids:
        if system in seen:
            continue
        seen.add(system)
        q = names.system_queue(check_system_id(system))
        queues.append(QueueSpec(q, {**classic, **dead, "x-max-priority": MAX_PRIORITY}))
        bindings.append(BindingSpec(q, names.deliver_exchange, system))
        _system_inbound(names, system, {**classic, **dead}, queues, bindings)
    return Topology(exchanges, tuple(queues), tuple(bindings))


def _quorum_topology(names: Names, system_ids: Iterable[str]) -> Topology:
    """``topology`` with quorum queues: the same exchanges and queues, no priorities, an urgent lane per system, and
    at-least-once dead-lettering wherever a queue dead-letters."""
    quorum = {"x-queue-type": "quorum"}
    at_least_once = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    dead = {"x-dead-letter-exchange": names.dead_letter_exchange, **at_least_once}
    exchanges = (
        ExchangeSpec(names.inbound_exchange, "direct"),
        ExchangeSpec(names.deliver_exchange, "direct"),
        ExchangeSpec(names.retry_exchange, "headers"),
        ExchangeSpec(names.dead_letter_exchange, "fanout"),
        ExchangeSpec(names.quarantine_exchange, "fanout"),
        ExchangeSpec(names.submit_exchange, "topic"),
        ExchangeSpec(names.later_exchange, "topic"),
        ExchangeSpec(names.later_due_exchange, "fanout"),
    )
    queues: list[QueueSpec] = []
    bindings: list[BindingSpec] = []
    for lane in LANES:
        q = names.inbound_queue(lane)
        queues.append(QueueSpec(q, {**quorum, **dead}))
        bindings.append(BindingSpec(q, names.inbound_exchange, lane))
    for delay in RETRY_DELAYS_S:
        q = names.retry_queue(delay)
        args = {**quorum, "x-message-ttl": delay * 1000, "x-dead-letter-exchange": names.inbound_exchange}
        queues.append(QueueSpec(q, {**args, **at_least_once}))
        bindings.append(BindingSpec(q, names.retry_exchange, "", {"x-match": "all", RETRY_HEADER: f"{delay}s"}))
    _later(names, {**quorum, **at_least_once}, quorum, queues, bindings)
    queues.append(QueueSpec(names.dead_letter_queue, dict(quorum)))
    bindings.append(BindingSpec(names.dead_letter_queue, names.dead_letter_exchange))
    queues.append(QueueSpec(names.expired_queue, dict(quorum)))
    bindings.append(BindingSpec(names.expired_queue, names.dead_letter_exchange))
    queues.append(QueueSpec(names.quarantine_queue, dict(quorum)))
    bindings.append(BindingSpec(names.quarantine_queue, names.quarantine_exchange))
    seen: set[str] = set()
    for system in system_ids:
        if system in seen:
            continue
        seen.add(system)
        check_system_id(system)
        for q, key in ((names.urgent_queue(system), system + URGENT_SUFFIX), (names.system_queue(system), system)):
            queues.append(QueueSpec(q, {**quorum, **dead}))
            bindings.append(BindingSpec(q, names.deliver_exchange, key))
        _system_inbound(names, system, {**quorum, **dead}, queues, bindings)
    return Topology(exchanges, tuple(queues), tuple(bindings))


def _later(
    names: Names,
    waiting: dict[str, Any],
    due: dict[str, Any],
    queues: list[QueueSpec],
    bindings: list[BindingSpec],
) -> None:
    """The queues a recipient's delivery waits in (``ns.later.<d>s``, bound to ``ns.later`` with ``#.<d>s``), each
    dead-lettering into ``ns.later-due`` (fanout: whatever keys the message names, ``CC`` included, it reaches only
    ``ns.later.due``), where the hub's workers read it and deliver it again to the system that put it off."""
    for delay in LATER_DELAYS_S:
        q = names.later_queue(delay)
        args = {**waiting, "x-message-ttl": delay * 1000, "x-dead-letter-exchange": names.later_due_exchange}
        queues.append(QueueSpec(q, args, role="later"))
        bindings.append(BindingSpec(q, names.later_exchange, f"#.{delay}s"))
    queues.append(QueueSpec(names.later_due_queue, dict(due)))
    bindings.append(BindingSpec(names.later_due_queue, names.later_due_exchange))


def _system_inbound(
    names: Names, system: str, arguments: dict[str, Any], queues: list[QueueSpec], bindings: list[BindingSpec]
) -> None:
    """A system's own inbound lanes ``ns.in.<lane>.<system>``, bound to the submit exchange with ``<lane>.<system>``
    (the only keys its user may publish with there)."""
    for lane in LANES:
        q = names.system_inbound_queue(lane, system)
        queues.append(QueueSpec(q, dict(arguments)))
        bindings.append(BindingSpec(q, names.submit_exchange, names.inbound_key(lane, system)))


@dataclass(slots=True)
class Outgoing:
    """One message to publish. ``egress``, when given, is called with ``body`` right before publishing and may
    raise to stop it (the classification gate's independent check at the moment a message leaves)."""

    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, Any]
    priority: int
    message_id: str
    user_id: str | None = None
    egress: Callable[[bytes], None] | None = None
    correlation_id: str | None = None
    #: AMQP per-message TTL in milliseconds (a decimal string), or None: the broker dead-letters the message when it
    #: has waited that long in a queue (a delivery whose envelope expired before its recipient took it).
    expiration: str | None = None


@dataclass(slots=True, eq=False)
class Incoming:
    """One received message, the same shape from RabbitMQ and from the in-memory twin.

    Settle it through the transport or consumer it came from (``ack``/``nack`` take whole batches). ``user_id``
    is the AMQP user_id property: RabbitMQ refuses a publish whose user_id differs from the publishing user, so
    when present it names the authenticated publisher. ``redelivered`` is True after a crash or requeue.
    """

    body: bytes
    routing_key: str
    exchange: str
    headers: Mapping[str, Any]
    message_id: str | None
    user_id: str | None
    priority: int
    redelivered: bool
    queue: str
    delivery_tag: int
    correlation_id: str | None = None
    #: True once acked, nacked or rejected (settling twice is a no-op).
    settled: bool = False
    #: The transport-specific owner that settles this message (a channel tracker or the in-memory queue).
    owner: Any = field(default=None, repr=False)
    #: Set by a batch handler that takes the message over: it settles it itself later (the adapter SDK nacks a
    #: delivery waiting for its ``Retry`` delay once the delay is over), so the consumer leaves it unsettled when the
    #: handler returns or raises, instead of nacking it with requeue at once. It stays unacknowledged meanwhile (it
    #: counts against the consumer's prefetch); on a lost channel the broker redelivers it and the late settle is a
    #: no-op.
    held: bool = False

    @property
    def attempt(self) -> int:
        """How many times the hub already retried this message (from ``x-hub-attempt``; 0 when absent)."""
        raw = self.headers.get(ATTEMPT_HEADER, 0)
        try:
            return max(0, int(raw))
        except (TypeError, ValueError):
            return 0

    def publisher(self, hub_user: str) -> str | None:
        """The AMQP user that originally published this message, as authenticated by RabbitMQ: ``user_id``, or for
        a copy the hub re-published itself (``user_id == hub_user``, e.g. a retry) the ``x-hub-origin-user`` it
        recorded. Without user_id: the system whose own inbound lane key (``<lane>.<system>`` on the submit exchange)
        it was published with, which only that system's user may write (``hub.transport.names.own_lane_user``) — so
        leaving user_id out does not let a system publish what another signed, nor the hub's own receipts. None
        otherwise (the shared lanes, written by the hub and its operator)."""
        user = self.user_id
        if user is None:
            return own_lane_user(self.exchange, self.routing_key)
        if user == hub_user:
            origin = self.headers.get(ORIGIN_USER_HEADER)
            return str(origin) if origin else None
        return user

    def lane(self, hub_user: str) -> str:
        """The inbound lane this message was published in: its routing key's lane (``normal``, ``normal.<system>``
        → ``normal``), or for a copy the hub moved from the emergency lane to the normal one (``moved_lane_of``) the
        lane recorded in ``x-hub-lane``."""
        if self.user_id is not None and self.user_id == hub_user:
            claimed = self.headers.get(LANE_HEADER)
            if claimed in LANES:
                return str(claimed)
        return lane_of_key(self.routing_key)


#: A batch handler: it must settle every message of the batch (ack, nack, or publish-then-ack). Messages it leaves
#: unsettled when it raises are nacked with requeue and come back with ``redelivered=True``.
Handler = Callable[[list[Incoming]], Awaitable[None]]


def retry_of(names: Names, msg: Incoming, *, hub_user: str, retry: Retry | None = None) -> Outgoing | None:
    """The Outgoing that puts ``msg`` back into its lane after the next back-off delay of ``retry`` (the policy of
    the route that decided the message, ``Router.retry_for``; ``hub.policy.DEFAULT_RETRY`` when None: a message no
    route decided), or None when its attempts are used up (then use ``dead_letter_of``). Publish it, and ack ``msg``
    once the publish is confirmed. Every delay of a checked route has a retry queue (``hub routes check``).

    The hub cannot re-publish with the original publisher's ``user_id`` (RabbitMQ only accepts the publishing
    user's own), so the copy carries ``user_id=hub_user`` (the hub's AMQP user, ``Transport.user``) and the original
    in ``x-hub-origin-user``; ``Incoming.publisher(hub_user)`` reads it back. Systems cannot forge that pair: a
    system may not publish with the hub's user_id."""
    attempt = msg.attempt + 1
    delay = retry_delay(attempt, DEFAULT_RETRY if retry is None else retry)
    if delay is None:
        return None
    if delay not in RETRY_DELAYS_S:  # an unchecked policy: the next longer delay that has a queue
        delay = min((d for d in RETRY_DELAYS_S if d >= delay), default=RETRY_DELAYS_S[-1])
    lane = lane_of_key(msg.routing_key)  # a system's own lane comes back in the shared one: the copy is the hub's
    lane = lane if lane in LANES else "normal"
    headers = dict(msg.headers)
    headers[RETRY_HEADER] = f"{delay}s"
    headers[ATTEMPT_HEADER] = attempt
    return _hub_copy(msg, hub_user, names.retry_exchange, lane, headers)


#: Headers by whose keys RabbitMQ routes a message besides its routing key (sender-selected distribution), on publish
#: and again when it dead-letters it; no topic permission checks them. Never on a copy the hub publishes: a system
#: that set them would have the hub put copies where it chose (another system's queue or lane).
ROUTING_HEADERS: tuple[str, ...] = ("CC", "BCC")


def carried_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers of a system's message that a copy the hub publishes keeps: not ``ROUTING_HEADERS``, not the hub's
    own ``x-hub-expired-for`` mark (set by ``Worker.handle_later`` after this, never carried over)."""
    return {k: v for k, v in headers.items() if k not in ROUTING_HEADERS and k != EXPIRED_FOR_HEADER}


def _hub_copy(msg: Incoming, hub_user: str, exchange: str, routing_key: str, headers: dict[str, Any]) -> Outgoing:
    """``msg`` re-published by the hub (``user_id=hub_user``) with ``headers`` (never a ``CC`` or ``BCC`` its publisher
    set: ``ROUTING_HEADERS``), its original publisher kept in ``x-hub-origin-user`` (``Incoming.publisher`` reads it
    back)."""
    headers = carried_headers(headers)
    origin = msg.publisher(hub_user)
    if origin is None:
        headers.pop(ORIGIN_USER_HEADER, None)
    else:
        headers[ORIGIN_USER_HEADER] = origin
    return Outgoing(
        exchange=exchange,
        routing_key=routing_key,
        body=msg.body,
        headers=headers,
        priority=msg.priority,
        message_id=msg.message_id or "",
        user_id=hub_user,
        correlation_id=msg.correlation_id,
    )


def moved_lane_of(names: Names, msg: Incoming, *, hub_user: str, to_lane: str = "normal") -> Outgoing:
    """The Outgoing that moves ``msg`` unread from its lane to ``to_lane``, remembering the lane it was sent in
    (``x-hub-lane``, read back by ``Incoming.lane``) and its publisher (``x-hub-origin-user``), as ``retry_of`` does:
    the copy is examined later under the rules of its own lane. A system's message goes into that system's own lane
    (the submit exchange, ``<to_lane>.<system>``: a flood moved there still waits behind nobody else's messages and
    is read at the system's share), anything else into the shared lane. Publish it, and ack ``msg`` once the
    publish is confirmed."""
    headers = dict(msg.headers)
    headers[LANE_HEADER] = msg.lane(hub_user)
    system = names.system_of_user(msg.publisher(hub_user))
    if system is not None:
        return _hub_copy(msg, hub_user, names.submit_exchange, names.inbound_key(to_lane, system), headers)
    return _hub_copy(msg, hub_user, names.inbound_exchange, to_lane, headers)


def dead_letter_of(names: Names, msg: Incoming, code: str, reason: str, *, hub_user: str | None = None) -> Outgoing:
    """The Outgoing that parks ``msg`` in the dead-letter queue with the error code and one-line reason. With
    ``hub_user`` (the hub's AMQP user, ``Transport.user``) the copy carries it as ``user_id`` and the original
    publisher in ``x-hub-origin-user``, as ``retry_of`` does, so a replay (``hub dead replay``) still knows who
    RabbitMQ authenticated as the publisher."""
    headers = carried_headers(msg.headers)
    headers.pop(RETRY_HEADER, None)
    headers["x-hub-error-code"] = code
    headers["x-hub-error-reason"] = reason[:500]
    headers["x-hub-original-queue"] = msg.queue
    user_id = None
    if hub_user is not None:
        user_id = hub_user
        origin = msg.publisher(hub_user)
        if origin is None:
            headers.pop(ORIGIN_USER_HEADER, None)
        else:
            headers[ORIGIN_USER_HEADER] = origin
    return Outgoing(
        exchange=names.dead_letter_exchange,
        routing_key=msg.routing_key,
        body=msg.body,
        headers=headers,
        priority=msg.priority,
        message_id=msg.message_id or "",
        user_id=user_id,
        correlation_id=msg.correlation_id,
    )
