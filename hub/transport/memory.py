"""An in-memory twin of ``Transport`` for fast unit tests of pure pipeline logic.

Same interface (``declare_topology``, ``publish_many``, ``consume``, ``fetch``, ``ack``, ``nack``,
``queue_depth``, ``delete_queue``, ``close``), same topology (it routes by ``hub.transport.topology``), the same
refusals (unroutable → ``DELIVERY_UNROUTABLE``, unknown exchange → ``AMQP_NOT_FOUND``, a ``user_id`` that is not
the transport's user → ``AMQP_PRECONDITION``), priorities, dead-lettering on ``nack(requeue=False)`` and TTL
expiry of the retry queues (scaled by ``ttl_scale``; 0 = at once).

It is never proof of delivery: persistence, confirms, permissions and reconnection exist only in the real
broker and are tested against it (tests/integration/test_transport.py). Differences worth knowing: a publish
batch is all-or-nothing here (on RabbitMQ the items before a failure may have been delivered), and there is no
linger: a consumer takes whatever is ready, up to ``max_batch`` and the prefetch.

Several ``MemoryTransport``s sharing one ``MemoryBroker`` see the same queues (the hub and a system's client).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.errors import BrokerUnavailable, ConfigError
from hub.settings import Settings
from hub.transport.names import Names
from hub.transport.topology import BindingSpec, ExchangeSpec, Handler, Incoming, Outgoing, QueueSpec, topology

__all__ = ["MemoryBroker", "MemoryConsumer", "MemoryTransport"]

log = logging.getLogger("hub.transport.memory")


@dataclass(slots=True)
class _Stored:
    body: bytes
    routing_key: str
    exchange: str
    headers: Mapping[str, Any]
    message_id: str | None
    user_id: str | None
    priority: int
    correlation_id: str | None
    redelivered: bool = False


@dataclass(eq=False)
class _Queue:
    spec: QueueSpec
    broker: MemoryBroker
    ready: list[tuple[int, int, _Stored]] = field(default_factory=list)  # heap of (-priority, seq, message)
    unacked: dict[int, tuple[int, _Stored]] = field(default_factory=dict)  # delivery tag → (seq, message)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Messages a TTL queue holds for their TTL (counted in its depth, as RabbitMQ counts them).
    waiting: int = 0

    def put(self, msg: _Stored, seq: int | None = None) -> None:
        ttl = self.spec.ttl_ms
        if ttl is not None:
            # A queue with a TTL (a retry queue) holds the message for the TTL, then dead-letters it.
            delay = ttl / 1000 * (self.broker.later_scale if self.spec.role == "later" else self.broker.ttl_scale)
            self.waiting += 1
            asyncio.get_running_loop().call_later(delay, self._expire, msg)
            return
        priority = min(msg.priority, self.spec.max_priority) if self.spec.max_priority else 0
        heapq.heappush(self.ready, (-priority, next(self.broker.seq) if seq is None else seq, msg))
        self.changed.set()

    def _expire(self, msg: _Stored) -> None:
        self.waiting -= 1
        self.broker.dead_letter(self.spec, msg)

    def take(self, limit: int) -> list[tuple[int, int, _Stored]]:
        out: list[tuple[int, int, _Stored]] = []
        while self.ready and len(out) < limit:
            _, seq, msg = heapq.heappop(self.ready)
            tag = next(self.broker.tags)
            self.unacked[tag] = (seq, msg)
            out.append((tag, seq, msg))
        return out

    def settle(self, tag: int, requeue: bool | None) -> None:
        entry = self.unacked.pop(tag, None)
        if entry is None:
            return
        seq, msg = entry
        if requeue is True:
            msg.redelivered = True
            self.put(msg, seq)
        elif requeue is False:
            self.broker.dead_letter(self.spec, msg)
        self.changed.set()  # capacity freed for prefetch-bounded consumers


def topic_matches(pattern: str, routing_key: str) -> bool:
    """RabbitMQ's topic matching: dot-separated words, ``*`` one word, ``#`` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split("."))


class MemoryBroker:
    """The shared state: exchanges, bindings and queues."""

    def __init__(self, *, ttl_scale: float = 0.0, later_scale: float | None = None) -> None:
        self.ttl_scale = ttl_scale
        #: The scale of the recipients' own delays (``ns.later.<d>s``; ``ttl_scale`` when None): ``TestHub`` keeps
        #: them in real time, so that a handler's ``Retry(2)`` waits two seconds there as over RabbitMQ.
        self.later_scale = ttl_scale if later_scale is None else later_scale
        self.exchanges: dict[str, ExchangeSpec] = {}
        self.bindings: list[BindingSpec] = []
        self.queues: dict[str, _Queue] = {}
        self.seq = itertools.count()
        self.tags = itertools.count(1)

    def declare(
        self, exchanges: Iterable[ExchangeSpec], queues: Iterable[QueueSpec], bindings: Iterable[BindingSpec]
    ) -> None:
        for ex in exchanges:
            self.exchanges.setdefault(ex.name, ex)
        for q in queues:
            existing = self.queues.get(q.name)
            if existing is None:
                self.queues[q.name] = _Queue(q, self)
            elif dict(existing.spec.arguments) != dict(q.arguments):
                raise ConfigError(f"queue {q.name} exists with other arguments", code="AMQP_PRECONDITION")
        for b in bindings:
            if b not in self.bindings:
                self.bindings.append(b)

    def route(self, exchange: str, routing_key: str, headers: Mapping[str, Any]) -> list[_Queue]:
        ex = self.exchanges.get(exchange)
        if ex is None:
            raise ConfigError(f"exchange {exchange!r} does not exist", code="AMQP_NOT_FOUND")
        out = []
        for b in self.bindings:
            if b.exchange != exchange or b.queue not in self.queues:
                continue
            if ex.type == "direct" and b.routing_key != routing_key:
                continue
            if ex.type == "topic" and not topic_matches(b.routing_key, routing_key):
                continue
            if ex.type == "headers" and any(
                headers.get(k) != v for k, v in b.arguments.items() if not k.startswith("x-match")
            ):
                continue
            out.append(self.queues[b.queue])
        return out

    def dead_letter(self, spec: QueueSpec, msg: _Stored) -> None:
        dlx = spec.dead_letter_exchange
        if dlx is None or dlx not in self.exchanges:
            return  # RabbitMQ drops it too when no dead-letter exchange is configured
        for q in self.route(dlx, msg.routing_key, msg.headers):
            q.put(dataclasses.replace(msg))


class MemoryConsumer:
    """Takes ready messages (up to ``max_batch``, within ``prefetch`` unsettled) and runs the handler."""

    def __init__(
        self, queue: _Queue, name: str, handler: Handler, *, prefetch: int, max_batch: int, concurrency: int
    ) -> None:
        self.queue = name
        self._q = queue
        self._handler = handler
        self._prefetch = prefetch
        self._max_batch = max_batch
        self._slots = asyncio.Semaphore(concurrency)
        self._mine: set[int] = set()
        #: Taken over by the handler (``Incoming.held``), not yet settled: they count against the prefetch, as on
        #: RabbitMQ, until the handler settles them.
        self._held: set[int] = set()
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False
        #: Exceptions raised by the handler (the batch was requeued each time).
        self.errors: list[Exception] = []
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while not self._stopping:
            if self._held:  # forget the held deliveries settled since
                self._held = {tag for tag in self._held if tag in self._q.unacked}
            room = self._prefetch - len(self._mine) - len(self._held)
            if room <= 0 or not self._q.ready:
                # Wait for a publish (more ready) or a settle (more room); no await between check and clear.
                self._q.changed.clear()
                await self._q.changed.wait()
                continue
            await self._slots.acquire()
            taken = self._q.take(min(self._max_batch, room))
            if not taken:
                self._slots.release()
                continue
            batch = [_incoming(self._q, self.queue, tag, msg) for tag, _, msg in taken]
            self._mine.update(tag for tag, _, _ in taken)
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[Incoming]) -> None:
        try:
            await self._handler(batch)
        except Exception as exc:
            # As the AMQP consumer: log, and unsettled messages go back to the queue. Kept for tests to assert on.
            self.errors.append(exc)
            log.exception("handler failed for a batch of %d from %s", len(batch), self.queue)
        finally:
            # What the handler took over (``Incoming.held``) it settles itself, later; until then it is in ``_held``.
            unsettled = [m for m in batch if not m.settled and not m.held]
            _settle(unsettled, True)
            self._held.update(m.delivery_tag for m in batch if m.held and not m.settled)
            self._mine.difference_update(m.delivery_tag for m in batch)
            self._slots.release()
            self._q.changed.set()

    async def stop(self, *, drain: bool = True) -> None:
        self._stopping = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def wait_idle(self) -> None:
        while self._running or (self._q.ready and not self._stopping):
            await asyncio.sleep(0)

    async def ack(self, batch: Iterable[Incoming]) -> None:
        _settle(batch, None)

    async def nack(self, batch: Iterable[Incoming], *, requeue: bool = True) -> None:
        _settle(batch, requeue)


class _Consumers:
    """Several queues' consumers as one (``MemoryTransport.consume`` of more than one queue)."""

    def __init__(self, consumers: list[MemoryConsumer]) -> None:
        self.consumers = consumers
        self.queue = consumers[0].queue

    @property
    def errors(self) -> list[Exception]:
        return [e for c in self.consumers for e in c.errors]

    async def stop(self, *, drain: bool = True) -> None:
        for c in self.consumers:
            await c.stop(drain=drain)

    async def wait_idle(self) -> None:
        for c in self.consumers:
            await c.wait_idle()

    async def ack(self, batch: Iterable[Incoming]) -> None:
        _settle(batch, None)

    async def nack(self, batch: Iterable[Incoming], *, requeue: bool = True) -> None:
        _settle(batch, requeue)


def _incoming(q: _Queue, name: str, tag: int, msg: _Stored) -> Incoming:
    return Incoming(
        body=msg.body,
        routing_key=msg.routing_key,
        exchange=msg.exchange,
        headers=dict(msg.headers),
        message_id=msg.message_id,
        user_id=msg.user_id,
        priority=msg.priority,
        redelivered=msg.redelivered,
        queue=name,
        delivery_tag=tag,
        correlation_id=msg.correlation_id,
        owner=q,
    )


def _settle(batch: Iterable[Incoming], requeue: bool | None) -> None:
    for msg in batch:
        if msg.settled:
            continue
        msg.settled = True
        if not isinstance(msg.owner, _Queue):
            raise TypeError("this message did not come from a MemoryTransport")
        msg.owner.settle(msg.delivery_tag, requeue)


class MemoryTransport:
    """The in-memory ``Transport``. ``user`` plays the AMQP login (checked against ``Outgoing.user_id``)."""

    def __init__(self, names: Names, broker: MemoryBroker | None = None, *, user: str = "hub") -> None:
        self.names = names
        self.user = user
        self.broker = broker or MemoryBroker()
        self._consumers: list[MemoryConsumer] = []

    @classmethod
    async def connect(
        cls, settings: Settings, *, broker: MemoryBroker | None = None, user: str = "hub"
    ) -> MemoryTransport:
        return cls(Names(settings.namespace, settings.queue_type), broker, user=user)

    async def close(self) -> None:
        for c in self._consumers:
            await c.stop()
        self._consumers.clear()

    async def declare_topology(self, system_ids: Iterable[str] = ()) -> None:
        topo = topology(self.names, system_ids)
        self.broker.declare(topo.exchanges, topo.queues, topo.bindings)

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        for item in items:
            if item.egress is not None:
                item.egress(item.body)
        routed: list[tuple[Outgoing, list[_Queue]]] = []
        for item in items:
            if item.user_id is not None and item.user_id != self.user:
                raise ConfigError("user_id differs from the publishing user", code="AMQP_PRECONDITION")
            queues = self.broker.route(item.exchange, item.routing_key, item.headers)
            if not queues:
                raise BrokerUnavailable(
                    f"no queue is bound for routing key {item.routing_key!r} on exchange {item.exchange!r}",
                    code="DELIVERY_UNROUTABLE",
                )
            routed.append((item, queues))
        for item, queues in routed:
            for q in queues:
                q.put(
                    _Stored(
                        body=item.body,
                        routing_key=item.routing_key,
                        exchange=item.exchange,
                        headers=dict(item.headers),
                        message_id=item.message_id,
                        user_id=item.user_id,
                        priority=item.priority,
                        correlation_id=item.correlation_id,
                    )
                )
        await asyncio.sleep(0)

    def _queue(self, name: str) -> _Queue:
        q = self.broker.queues.get(name)
        if q is None:
            raise ConfigError(f"queue {name!r} does not exist", code="AMQP_NOT_FOUND")
        return q

    async def consume(
        self,
        queue_name: str | Sequence[str],
        handler: Handler,
        *,
        prefetch: int,
        max_batch: int = 64,
        linger: float = 0.002,
        concurrency: int = 4,
        priority: int | None = None,
        share: Callable[[str], int] | None = None,
    ) -> MemoryConsumer | _Consumers:
        """As ``Transport.consume``; ``priority`` (RabbitMQ's consumer priority) has no effect here: every
        consumer of a queue takes what is ready in turn. Several queues get a consumer each (taking turns is what
        the event loop does; ``share`` caps each queue's batches)."""
        if prefetch < 1:
            raise ValueError("prefetch must be ≥ 1")
        queues = (queue_name,) if isinstance(queue_name, str) else tuple(dict.fromkeys(queue_name))
        consumers = [
            MemoryConsumer(
                self._queue(q),
                q,
                handler,
                prefetch=prefetch,
                max_batch=max(1, min(max_batch, share(q))) if share else max_batch,
                concurrency=concurrency,
            )
            for q in queues
        ]
        self._consumers.extend(consumers)
        return consumers[0] if len(consumers) == 1 else _Consumers(consumers)

    async def fetch(self, queue_name: str, *, max_messages: int = 100) -> list[Incoming]:
        q = self._queue(queue_name)
        return [_incoming(q, queue_name, tag, msg) for tag, _, msg in q.take(max_messages)]

    async def ack(self, batch: Iterable[Incoming]) -> None:
        _settle(batch, None)

    async def nack(self, batch: Iterable[Incoming], *, requeue: bool = True) -> None:
        _settle(batch, requeue)

    async def queue_depth(self, queue: str) -> int:
        q = self._queue(queue)
        return len(q.ready) + q.waiting

    async def delete_queue(self, queue: str) -> None:
        self.broker.queues.pop(queue, None)
