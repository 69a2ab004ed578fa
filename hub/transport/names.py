"""Every RabbitMQ name the hub uses, made by one helper: ``Names(namespace)``.

Nothing else in the hub spells an exchange, queue or user name; the namespace (``Settings.namespace``, default
``hub``) prefixes all of them, so a test run or a second installation on the same broker never touches the
first one's objects, and one prefix finds everything to clean up.

The layout (``ns`` = namespace)::

    exchanges                         queues
    ns.submit    topic   ── emergency.<system> ──► ns.in.emergency.<system>   each system's own two inbound lanes;
                         ── normal.<system>    ──► ns.in.normal.<system>      agency systems publish here only,
                                                                          with their own system id as the key
    ns.in        direct  ── emergency ──► ns.in.emergency      the shared inbound lanes: the hub's own copies
                         ── normal    ──► ns.in.normal         (retries, moved, replayed, the process engine)
    ns.deliver   direct  ── <system>  ──► ns.q.<system>        one per system (priority queue)
    ns.retry-by-delay headers ─ hub-retry=5s ► ns.retry.5s   TTL 5 s, then dead-lettered back to ns.in
    ns.dead      fanout  ───────────────► ns.dead              dead letters (nacked without requeue)
    ns.later     topic   ── <system>.<d>s ─► ns.later.<d>s   TTL d s, then dead-lettered into
    ns.later-due fanout  ───────────────► ns.later.due         the hub delivers it again (to the system that put it off)
    ns.quarantine fanout ───────────────► ns.quarantine        quarantined messages awaiting a person

``ns.later`` is where a recipient puts a delivery it cannot take yet (the adapter SDK's ``Retry(delay)``, the
gateway's ``release?after=``): published with ``later_key`` it waits in ``ns.later.<d>s`` for ``d`` seconds
(``LATER_DELAYS_S``; a delay is rounded up to the next of them, ``later_delay``), is then dead-lettered into
``ns.later.due``, and a hub worker delivers it again to the system RabbitMQ names as its publisher (its ``user_id``;
for the gateway's copies the ``x-hub-origin-user`` beside the hub's own user_id), with its TTL worked out again from
the signed envelope (``hub.pipeline.worker``) — acknowledged meanwhile, so it does not fill the recipient's prefetch
window, and kept by the broker, so an adapter restart does not cut the delay short. Never by its routing key or a
header a system sets: a ``CC`` header would have taken a copy into another system's queue.

Users: ``ns.<system>`` for each agency system (see ``hub.transport.users``). A system may publish to ``ns.submit``
only with the routing keys ``normal.<its id>`` and ``emergency.<its id>`` (RabbitMQ topic permissions), so what it
sends lands in its own inbound queues and nowhere else: the workers read every system's queue in turn
(``hub.transport.amqp.Consumer``), and a system flooding the hub — with garbage or with anything else — fills only
its own queues; the others' messages are not behind its flood (issue 16: a burst of 10,000 hostile messages).

With ``HUB_QUEUE_TYPE=quorum`` (``Names(namespace, queue_type="quorum")``) every queue is a quorum queue, and since
RabbitMQ 3.x quorum queues have no message priorities, each system gets a second, urgent lane::

    ns.deliver   direct  ── <system>.urgent ──► ns.q.<system>.urgent   deliveries at priority ≥ URGENT_PRIORITY
                         ── <system>        ──► ns.q.<system>          everything else

``delivery_key(system, priority)`` is the routing key a publisher uses, ``system_queues(system)`` the queues a reader
consumes (urgent first). With classic queues both give what they always did (``system``, ``(ns.q.<system>,)``).

This module is pure (no aio-pika): the SDK, the pipeline and the in-memory twin import it freely.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from hub.policy import DEFAULT_RETRY, RETRY_DELAYS_S, URGENCY_PRIORITY, Retry

__all__ = [
    "ATTEMPT_HEADER",
    "EXPIRED_FOR_HEADER",
    "LANES",
    "LANE_HEADER",
    "LATER_DELAYS_S",
    "MAX_PRIORITY",
    "ORIGIN_USER_HEADER",
    "PRIORITY",
    "QUEUE_TYPES",
    "RETRY_DELAYS_S",
    "RETRY_HEADER",
    "URGENT_PRIORITY",
    "URGENT_SUFFIX",
    "Lane",
    "Names",
    "check_system_id",
    "lane_for",
    "lane_of_key",
    "later_delay",
    "priority_for",
    "retry_delay",
]

Lane = Literal["emergency", "normal"]

#: The inbound lanes, most urgent first. The lane is the routing key a sender publishes with; it only orders the
#: hub's work (the hub re-derives priority from the signed urgency and service, never from the lane).
LANES: Final[tuple[Lane, ...]] = ("emergency", "normal")

#: AMQP priority per 紧急程度 (urgency): the one table, ``hub.policy.URGENCY_PRIORITY`` (routes default to it).
#: System queues are declared with ``x-max-priority = MAX_PRIORITY`` so a 特急 delivery overtakes a backlog of 平件
#: waiting in the same queue.
PRIORITY: Final[dict[str, int]] = URGENCY_PRIORITY
MAX_PRIORITY: Final[int] = 9

#: Queue types (``Settings.queue_type``, ``HUB_QUEUE_TYPE``).
QUEUE_TYPES: Final[tuple[str, ...]] = ("classic", "quorum")
#: With quorum queues, deliveries at this priority or above (特急 9 and what routes raise to it; 加急 is 5) take the
#: system's urgent lane ``ns.q.<system>.urgent``, as 特急 takes the inbound emergency lane; readers take that lane
#: first. 加急 and 平件 share the other lane in arrival order (the one ordering quorum queues lose).
URGENT_PRIORITY: Final[int] = 6
#: The urgent lane's suffix, on the queue and on the routing key (system ids have no dots: no system id collides).
URGENT_SUFFIX: Final[str] = ".urgent"

# RETRY_DELAYS_S (the delays that have a retry queue) is defined with the routes' retry policy in hub/policy.py.

#: Header that the retry exchange (a headers exchange) matches on, value ``"<delay>s"``. Not ``x-…``: RabbitMQ's
#: headers exchange ignores headers and binding arguments that begin with ``x-`` (under ``x-match: all``), so a
#: binding on ``x-hub-retry`` matched every message and each retry went to every retry queue at once.
RETRY_HEADER: Final[str] = "hub-retry"
#: Header carrying how many times the hub already retried a message (set by the hub, not trusted for anything but
#: choosing the next delay).
ATTEMPT_HEADER: Final[str] = "x-hub-attempt"
#: Header with the original publisher's AMQP user on a copy the hub re-published (trusted only when the copy's
#: user_id is the hub's own user, which no agency system can set).
ORIGIN_USER_HEADER: Final[str] = "x-hub-origin-user"

#: On a delivery the hub parked because its envelope expired while its recipient had put it off (``ns.later``,
#: ``hub.pipeline.worker.Worker.handle_later``): the recipient system. Trusted only beside the hub's own user_id, and
#: never carried over from a message a system sent (``hub.transport.topology.dead_letter_of`` drops it).
EXPIRED_FOR_HEADER: Final[str] = "x-hub-expired-for"

#: Header with the lane a message was published in, on a copy the hub moved out of the emergency lane into the normal
#: one (a publisher over its emergency-lane quota, ``hub.pipeline.lanes``): the copy is examined under the rules of
#: the lane it was sent in. Trusted only on the hub's own copies, like ``x-hub-origin-user``.
LANE_HEADER: Final[str] = "x-hub-lane"

#: The delays, in seconds, that have a queue on the recipient's side (``ns.later.<d>s``): what a recipient asks for
#: is rounded up to the next of them (``later_delay``), so it waits at most about half as long again as it asked
#: (never less). The adapter SDK caps ``Retry(delay)`` at the last one.
LATER_DELAYS_S: Final[tuple[int, ...]] = (1, 2, 3, 5, 7, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300)

_NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
#: The envelope XSD's SystemId pattern.
_SYSTEM = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


#: The submit exchange's name after the namespace (``Names.submit_exchange``).
SUBMIT_SUFFIX: Final[str] = ".submit"


def own_lane_user(exchange: str, routing_key: str) -> str | None:
    """The AMQP user that alone may publish with this routing key on this exchange, or None: on a namespace's submit
    exchange, ``<lane>.<system>`` is the system's own inbound lane, which RabbitMQ's topic permission lets only that
    system's user write (``hub.transport.users.topic_permissions_for``; the hub's operator aside). For a message
    published without ``user_id`` the key is then still the broker's word for who published it."""
    if not exchange.endswith(SUBMIT_SUFFIX):
        return None
    lane, dot, system = routing_key.partition(".")
    namespace = exchange[: -len(SUBMIT_SUFFIX)]
    if not dot or lane not in LANES or not _SYSTEM.match(system) or not _NAMESPACE.match(namespace):
        return None
    return f"{namespace}.{system}"


def later_delay(seconds: float) -> int:
    """The ``LATER_DELAYS_S`` delay a wait of ``seconds`` takes: the smallest one that is at least as long (never
    earlier than asked), the longest one for anything longer."""
    for delay in LATER_DELAYS_S:
        if seconds <= delay:
            return delay
    return LATER_DELAYS_S[-1]


def lane_for(service: str, urgency: str) -> Lane:
    """The inbound lane a sender should use: ``emergency`` for ``emergency.*`` services and 特急 messages."""
    return "emergency" if urgency == "特急" or service.startswith("emergency.") else "normal"


def lane_of_key(routing_key: str) -> str:
    """The lane of an inbound routing key: ``normal`` for ``normal`` and ``normal.<system>``; the key itself when it
    names no lane (the caller decides what an unknown key means)."""
    lane, _, _ = routing_key.partition(".")
    return lane if lane in LANES else routing_key


def priority_for(urgency: str) -> int:
    """AMQP priority of a delivery with this 紧急程度 (0 for anything unknown)."""
    return PRIORITY.get(urgency, 0)


def retry_delay(attempt: int, retry: Retry = DEFAULT_RETRY) -> int | None:
    """The back-off before retry number ``attempt`` (1-based) under ``retry`` (a route's policy; the default for a
    message no route decided), or None when the retries are used up and the message belongs in the dead-letter
    queue."""
    return retry.next_delay(attempt)


class Names:
    """All names under one namespace. Cheap, immutable, hashable; build it once from ``Settings.namespace``."""

    __slots__ = (
        "dead_letter_exchange",
        "dead_letter_queue",
        "deliver_exchange",
        "expired_queue",
        "inbound_exchange",
        "later_due_exchange",
        "later_due_queue",
        "later_exchange",
        "namespace",
        "quarantine_exchange",
        "quarantine_queue",
        "queue_type",
        "retry_exchange",
        "submit_exchange",
    )

    namespace: str
    #: The shared inbound lanes' exchange (direct): the hub's own copies of messages.
    inbound_exchange: str
    #: The exchange agency systems publish to (topic; each only with ``<lane>.<its id>``, ``inbound_key``).
    submit_exchange: str
    deliver_exchange: str
    retry_exchange: str
    dead_letter_exchange: str
    dead_letter_queue: str
    #: A copy of every dead letter (bound to the dead-letter exchange beside ``dead_letter_queue``): the hub reads
    #: the deliveries that expired in a system's queue from it and answers their senders (``hub.pipeline.expired``).
    expired_queue: str
    quarantine_exchange: str
    quarantine_queue: str
    #: Where a recipient puts a delivery to have it back later (topic; each system only with ``later_key``s of its
    #: own), and where ``ns.later.<d>s`` dead-letters it once the delay is over (fanout → ``later_due_queue``, read by
    #: the hub's workers).
    later_exchange: str
    later_due_exchange: str
    later_due_queue: str
    #: ``classic`` or ``quorum`` (``Settings.queue_type``).
    queue_type: str

    def __init__(self, namespace: str, queue_type: str = "classic") -> None:
        if not _NAMESPACE.match(namespace):
            raise ValueError(f"namespace {namespace!r} must match {_NAMESPACE.pattern}")
        if queue_type not in QUEUE_TYPES:
            raise ValueError(f"queue type {queue_type!r} must be one of {', '.join(QUEUE_TYPES)}")
        ns = namespace
        for name, value in (
            ("queue_type", queue_type),
            ("namespace", ns),
            ("inbound_exchange", f"{ns}.in"),
            ("submit_exchange", f"{ns}{SUBMIT_SUFFIX}"),
            ("deliver_exchange", f"{ns}.deliver"),
            # Not ``ns.retry``: that exchange of earlier versions keeps bindings on ``x-hub-retry`` that match every
            # message (see RETRY_HEADER); a new name leaves them where nothing publishes any more.
            ("retry_exchange", f"{ns}.retry-by-delay"),
            ("dead_letter_exchange", f"{ns}.dead"),
            ("dead_letter_queue", f"{ns}.dead"),
            ("expired_queue", f"{ns}.expired"),
            ("quarantine_exchange", f"{ns}.quarantine"),
            ("quarantine_queue", f"{ns}.quarantine"),
            ("later_exchange", f"{ns}.later"),
            ("later_due_exchange", f"{ns}.later-due"),
            ("later_due_queue", f"{ns}.later.due"),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Names is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Names) and (other.namespace, other.queue_type) == (self.namespace, self.queue_type)

    def __hash__(self) -> int:
        return hash(("Names", self.namespace, self.queue_type))

    def __repr__(self) -> str:
        if self.queue_type == "classic":
            return f"Names({self.namespace!r})"
        return f"Names({self.namespace!r}, queue_type={self.queue_type!r})"

    @property
    def quorum(self) -> bool:
        return self.queue_type == "quorum"

    # -- per lane / system / delay ------------------------------------------------------------------------------

    def inbound_queue(self, lane: str) -> str:
        """``ns.in.<lane>``; the routing key on the inbound exchange is the lane itself."""
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}; lanes are {', '.join(LANES)}")
        return f"{self.namespace}.in.{lane}"

    def system_inbound_queue(self, lane: str, system_id: str) -> str:
        """``ns.in.<lane>.<system>``: one system's own inbound lane (routing key ``inbound_key(lane, system)`` on
        ``submit_exchange``)."""
        return f"{self.inbound_queue(lane)}.{check_system_id(system_id)}"

    def inbound_key(self, lane: str, system_id: str) -> str:
        """The routing key a system publishes with on ``submit_exchange``: ``<lane>.<system>``."""
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}; lanes are {', '.join(LANES)}")
        return f"{lane}.{check_system_id(system_id)}"

    def system_inbound_queues(self, system_id: str) -> tuple[str, ...]:
        """A system's own inbound lanes, emergency first."""
        return tuple(self.system_inbound_queue(lane, system_id) for lane in LANES)

    def _inbound_parts(self, queue: str) -> tuple[str, str | None] | None:
        """(lane, system or None) of an inbound queue, shared (``ns.in.<lane>``) or a system's
        (``ns.in.<lane>.<system>``); None for any other queue."""
        head = f"{self.namespace}.in."
        if not queue.startswith(head):
            return None
        lane, dot, system = queue[len(head) :].partition(".")
        if lane not in LANES or (dot and not _SYSTEM.match(system)):
            return None
        return lane, (system if dot else None)

    def inbound_lane_of_queue(self, queue: str) -> str | None:
        """The lane of an inbound queue, shared or a system's; None for any other queue."""
        parts = self._inbound_parts(queue)
        return parts[0] if parts else None

    def system_of_inbound_queue(self, queue: str) -> str | None:
        """The system whose own inbound lane ``queue`` is, or None (a shared lane or another queue)."""
        parts = self._inbound_parts(queue)
        return parts[1] if parts else None

    def system_queue(self, system_id: str) -> str:
        """``ns.q.<system>``: what one agency system receives (routing key on the delivery exchange: the id)."""
        return f"{self.namespace}.q.{check_system_id(system_id)}"

    def urgent_queue(self, system_id: str) -> str:
        """``ns.q.<system>.urgent``: a system's urgent lane (quorum queues only; classic queues use priorities)."""
        return self.system_queue(system_id) + URGENT_SUFFIX

    def system_queues(self, system_id: str) -> tuple[str, ...]:
        """Every queue a system reads, the urgent lane first: ``(ns.q.<system>,)`` with classic queues,
        ``(ns.q.<system>.urgent, ns.q.<system>)`` with quorum queues."""
        if self.quorum:
            return (self.urgent_queue(system_id), self.system_queue(system_id))
        return (self.system_queue(system_id),)

    def delivery_key(self, system_id: str, priority: int = 0) -> str:
        """The routing key on ``ns.deliver`` of a message to ``system_id`` at ``priority``: the system id, or with
        quorum queues ``<system>.urgent`` from ``URGENT_PRIORITY`` up."""
        if not self.quorum:  # classic: exactly what publishers always used, at no cost on the message path
            return system_id
        return check_system_id(system_id) + URGENT_SUFFIX if priority >= URGENT_PRIORITY else system_id

    def retry_queue(self, delay_s: int) -> str:
        """``ns.retry.<delay>s``; ``delay_s`` must be one of ``RETRY_DELAYS_S``."""
        if delay_s not in RETRY_DELAYS_S:
            raise ValueError(f"no retry queue for {delay_s} s; delays are {RETRY_DELAYS_S}")
        return f"{self.namespace}.retry.{delay_s}s"

    def later_queue(self, delay_s: int) -> str:
        """``ns.later.<delay>s``; ``delay_s`` must be one of ``LATER_DELAYS_S``."""
        if delay_s not in LATER_DELAYS_S:
            raise ValueError(f"no later queue for {delay_s} s; delays are {LATER_DELAYS_S}")
        return f"{self.namespace}.later.{delay_s}s"

    def later_key(self, queue: str, delay_s: int) -> str:
        """The routing key on ``later_exchange`` of a delivery taken from ``queue`` (a system's queue or, with quorum
        queues, its urgent lane) to wait ``delay_s`` (one of ``LATER_DELAYS_S``): ``<system>.<d>s``, the only keys
        the system's user may publish there with. It chooses the delay; where the delivery goes afterwards the hub
        decides from its publisher. ValueError for any other queue."""
        self.later_queue(delay_s)
        system = self.system_of_queue(queue)
        if system is None:
            raise ValueError(f"{queue!r} is not a system's queue")
        return f"{system}.{delay_s}s"

    def user(self, system_id: str) -> str:
        """The RabbitMQ user of one agency system: ``ns.<system>``."""
        return f"{self.namespace}.{check_system_id(system_id)}"

    @property
    def inbound_queues(self) -> tuple[str, ...]:
        """Both shared inbound lanes, emergency first (each system's own: ``system_inbound_queues``)."""
        return tuple(self.inbound_queue(lane) for lane in LANES)

    @property
    def prefix(self) -> str:
        """What every exchange, queue and user name of this namespace starts with."""
        return self.namespace + "."

    def system_of_queue(self, queue: str) -> str | None:
        """The system id whose queue this is, or None (the inverse of ``system_queue`` and ``urgent_queue``)."""
        head = f"{self.namespace}.q."
        if not queue.startswith(head):
            return None
        rest = queue[len(head) :]
        if self.quorum and rest.endswith(URGENT_SUFFIX):
            rest = rest[: -len(URGENT_SUFFIX)]
        return rest if _SYSTEM.match(rest) else None

    def system_of_user(self, user: str | None) -> str | None:
        """The system id of an AMQP user name made by ``user()``, or None: the pipeline compares it with the
        signed sender (RabbitMQ guarantees that a message's ``user_id`` property equals the publishing user)."""
        if user and user.startswith(self.prefix) and _SYSTEM.match(user[len(self.prefix) :]):
            return user[len(self.prefix) :]
        return None


def check_system_id(system_id: str) -> str:
    """Return ``system_id`` if it is a valid system id (the envelope's SystemId pattern); else ValueError. Names
    end up in permission regexes and URLs, so nothing else is accepted."""
    if not _SYSTEM.match(system_id):
        raise ValueError(f"system id {system_id!r} must match {_SYSTEM.pattern}")
    return system_id
