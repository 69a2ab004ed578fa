"""RabbitMQ through aio-pika: the only module of the hub that speaks AMQP.

``Transport`` holds one robust connection (``aio_pika.connect_robust``: it reconnects and re-opens its channels
by itself) and one publishing channel with publisher confirms. Consumers get a channel each, with a bounded
prefetch, and hand messages to their handler in batches so the pipeline can batch its inserts, signatures and
confirms.

Errors: ``CONNECTION_ERRORS`` is the one definition of "the broker is unavailable"; they leave this module as
``BrokerUnavailable`` (transient, retried). A refusal by the broker's access control is ``ConfigError`` with
code ``AMQP_ACCESS_REFUSED`` (a permission does not come back by retrying), a missing queue or exchange
``AMQP_NOT_FOUND``, a re-declaration with other arguments ``AMQP_PRECONDITION``. A nacked publish is
``BrokerUnavailable`` (``DELIVERY_NACKED``), an unroutable one ``BrokerUnavailable`` (``DELIVERY_UNROUTABLE``):
every publish is ``mandatory``, so nothing is ever dropped silently.

Publishing: ``publish_many`` publishes a batch and returns once the broker confirmed all of it. Consuming: a
consumer channel's deliveries are buffered into batches (``Consumer``).

How fast: with ``Settings.amqp_fast`` (``HUB_AMQP_FAST``, on by default) a batch's frames are written to the socket
in one go with one future for all its confirms, and a consumer channel's deliveries reach the consumer in line with
its frame queue bounded by the prefetch alone; ``hub run``'s workers also read frames with the hub's reader. All of
that replaces aiormq/pamqp internals and lives in ``hub.transport._aiormq_fast`` (see its docstring); this module
calls it at three places only (``publish_many``, ``Consumer._subscribe``, and the workers' start-up installs the
reader). With the switch off, or where the installed aiormq lacks what a fast path needs (one WARNING names the
path), aiormq's own code runs: ``Exchange``-level semantics through ``Channel.basic_publish`` and aiormq's
consumer callback, the same behaviour at about 0.3 ms more CPU per published message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

import aio_pika
import aiormq
import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aio_pika.connection import make_url
from aiormq import spec
from aiormq.abc import DeliveredMessage
from yarl import URL

from hub.errors import BrokerUnavailable, ConfigError, HubError
from hub.settings import Settings
from hub.transport import _aiormq_fast as fast_paths
from hub.transport.names import Names
from hub.transport.topology import Handler, Incoming, Outgoing, topology

__all__ = [
    "CONNECTION_ERRORS",
    "Consumer",
    "Transport",
    "ack",
    "nack",
    "translate",
]

log = logging.getLogger("hub.transport")
#: Numbers each subscription of a consumer in this process (its consumer tags ``hub.<n>.<queue index>``).
_SUBSCRIPTIONS = itertools.count(1)

#: What "the broker is unavailable" means. ``OSError`` covers refused/reset sockets and timeouts
#: (``TimeoutError`` is an OSError); aiormq's connection errors are ``ConnectionError``s; a channel that closed
#: under us (connection lost mid-operation) raises ``ChannelInvalidStateError`` or a plain ``ChannelClosed``.
#: Access refusals, missing entities and precondition failures are also ``ChannelClosed``: ``translate`` checks
#: them first, because they are configuration errors, not outages.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    amqp_errors.AMQPConnectionError,
    amqp_errors.ChannelInvalidStateError,
    amqp_errors.ChannelClosed,
    asyncio.TimeoutError,
)

_AUTH_ERRORS = (amqp_errors.AuthenticationError, amqp_errors.ProbableAuthenticationError)
#: Everything ``_edge`` translates.
_BROKER_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, amqp_errors.DeliveryError, *_AUTH_ERRORS)
#: Errors ignored while tearing down (the broker cleans up after a lost channel itself).
_QUIET: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, amqp_errors.AMQPError)
#: Every message the hub publishes is an XML document.
CONTENT_TYPE = "application/xml"


def translate(exc: BaseException, doing: str) -> HubError | None:
    """The HubError for an exception raised by aio-pika/aiormq while ``doing`` (a short English phrase), or None
    when ``exc`` is not a broker error (the caller re-raises it unchanged)."""
    if isinstance(exc, HubError):
        return exc
    name = type(exc).__name__
    if isinstance(exc, (amqp_errors.ChannelAccessRefused, *_AUTH_ERRORS)):
        return ConfigError(f"RabbitMQ refused access while {doing} ({name})", code="AMQP_ACCESS_REFUSED")
    if isinstance(exc, amqp_errors.ConnectionNotAllowed):
        return ConfigError(f"RabbitMQ refused the virtual host while {doing}", code="AMQP_ACCESS_REFUSED")
    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
        return ConfigError(f"a queue or exchange does not exist while {doing}", code="AMQP_NOT_FOUND")
    if isinstance(exc, amqp_errors.ChannelPreconditionFailed):
        return ConfigError(f"RabbitMQ refused {doing}: a precondition failed", code="AMQP_PRECONDITION")
    if isinstance(exc, amqp_errors.PublishError):
        return BrokerUnavailable(f"a message could not be routed while {doing}", code="DELIVERY_UNROUTABLE")
    if isinstance(exc, amqp_errors.DeliveryError):
        return BrokerUnavailable(f"RabbitMQ did not accept a message while {doing}", code="DELIVERY_NACKED")
    if isinstance(exc, (*CONNECTION_ERRORS, asyncio.CancelledError)):
        return BrokerUnavailable(f"RabbitMQ is unavailable while {doing} ({name})")
    return None


@contextlib.asynccontextmanager
async def _edge(doing: str) -> AsyncIterator[None]:
    """Translate broker exceptions raised inside the block (``doing`` names the operation for the message)."""
    try:
        yield
    except HubError:
        raise
    except _BROKER_ERRORS as exc:
        raise cast(HubError, translate(exc, doing)) from None


# -- settling ------------------------------------------------------------------------------------------------------


class _Tracker:
    """Unacknowledged delivery tags of one channel incarnation, in delivery order. A delivery tag is only valid on
    the channel it came from: after a reconnect the tracker of the old channel is dead and its messages will be
    redelivered by the broker, so settling them is a no-op."""

    __slots__ = ("channel", "unacked")

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self.unacked: dict[int, None] = {}


def _groups(batch: Iterable[Incoming]) -> dict[_Tracker, list[int]]:
    groups: dict[_Tracker, list[int]] = {}
    for msg in batch:
        if msg.settled:
            continue
        msg.settled = True
        owner = msg.owner
        if not isinstance(owner, _Tracker):
            raise TypeError("this message did not come from an AMQP transport")
        groups.setdefault(owner, []).append(msg.delivery_tag)
    return groups


def _covers_oldest(tracker: _Tracker, tags: list[int]) -> bool:
    """True when ``tags`` are exactly the oldest unsettled deliveries of the channel, so one ``multiple=True``
    frame up to the newest of them settles these and nothing else (other batches in flight stay untouched)."""
    k = len(tags)
    if k < 2 or k > len(tracker.unacked):
        return False
    kth = next(itertools.islice(tracker.unacked, k - 1, None))
    return kth == tags[-1]


async def _settle(batch: Iterable[Incoming], *, requeue: bool | None) -> None:
    """Ack (``requeue is None``) or nack a batch, one frame per channel where possible."""
    for tracker, tags in _groups(batch).items():
        tags.sort()
        channel = tracker.channel
        multiple = _covers_oldest(tracker, tags)
        for tag in tags:
            tracker.unacked.pop(tag, None)
        if channel.is_closed:
            # The broker requeued them when the channel closed; they come back with redelivered=True.
            log.warning("settling %d message(s) on a closed channel: they will be redelivered", len(tags))
            continue
        try:
            if multiple:
                if requeue is None:
                    await channel.basic_ack(tags[-1], multiple=True)
                else:
                    await channel.basic_nack(tags[-1], multiple=True, requeue=requeue)
                continue
            for i, tag in enumerate(tags):
                wait = i == len(tags) - 1
                if requeue is None:
                    await channel.basic_ack(tag, wait=wait)
                else:
                    await channel.basic_nack(tag, requeue=requeue, wait=wait)
        except CONNECTION_ERRORS:
            log.warning("channel closed while settling %d message(s): they will be redelivered", len(tags))


async def ack(batch: Iterable[Incoming]) -> None:
    """Acknowledge a batch (one ``multiple=True`` frame when the batch is the channel's oldest unacked)."""
    await _settle(batch, requeue=None)


async def nack(batch: Iterable[Incoming], *, requeue: bool = True) -> None:
    """Negatively acknowledge a batch: back to the queue (``requeue=True``) or to the dead-letter queue."""
    await _settle(batch, requeue=requeue)


def _incoming(dm: DeliveredMessage, queue: str, tracker: _Tracker) -> Incoming:
    props = dm.header.properties
    delivery = dm.delivery
    tag = cast(int, delivery.delivery_tag)  # type: ignore[union-attr]
    tracker.unacked[tag] = None
    return Incoming(
        body=dm.body,
        routing_key=delivery.routing_key or "",  # type: ignore[union-attr]
        exchange=delivery.exchange or "",  # type: ignore[union-attr]
        headers=props.headers or {},
        message_id=props.message_id,
        user_id=props.user_id,
        priority=props.priority or 0,
        redelivered=bool(delivery.redelivered),  # type: ignore[union-attr]
        queue=queue,
        delivery_tag=tag,
        correlation_id=props.correlation_id,
        owner=tracker,
    )


# -- consumer ------------------------------------------------------------------------------------------------------


#: How often a consumer whose buffered queues are all held back (``share`` 0) looks whether one may go on.
HOLD_S = 0.02


class Consumer:
    """Delivers the messages of one or more queues to ``handler`` in batches of up to ``max_batch``, waiting at most
    ``linger`` seconds after the first message of a batch for more to arrive; up to ``concurrency`` batches run at
    once (the prefetch, per queue, bounds what is in flight). Survives reconnects: the robust channel re-opens with
    its prefetch and the consumer subscribes again; messages of the lost channel are redelivered by the broker.

    With several queues (every system's own inbound lane, ``Names.system_inbound_queue``) a batch takes from them
    **in turn**, one message each round, starting with a different queue each batch: a queue with 10,000 waiting
    messages does not stand in front of one with a single message, which goes into the next batch. ``share(queue)``,
    when given, caps how many messages of that queue one batch may take, also when no other queue waits; 0 holds the
    queue's messages back (they stay unacknowledged, in order) and the consumer looks again every ``HOLD_S`` (the
    pipeline gives a publisher as many as its refusal tokens: ``hub.pipeline.lanes``).

    ``priority`` is RabbitMQ's consumer priority (``x-priority``): the broker gives every message to the highest
    priority consumer that can take one (its prefetch window not full), round-robin among equals."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        queue: str | Sequence[str],
        handler: Handler,
        *,
        max_batch: int,
        linger: float,
        concurrency: int,
        priority: int | None = None,
        fast: bool = True,
        share: Callable[[str], int] | None = None,
    ) -> None:
        if max_batch < 1 or concurrency < 1 or linger < 0:
            raise ValueError("max_batch and concurrency must be ≥ 1 and linger ≥ 0")
        self.queues: tuple[str, ...] = (queue,) if isinstance(queue, str) else tuple(dict.fromkeys(queue))
        if not self.queues:
            raise ValueError("a consumer needs at least one queue")
        self.queue = self.queues[0] if len(self.queues) == 1 else f"{self.queues[0]} (+{len(self.queues) - 1})"
        self._channel = channel
        self._handler = handler
        self._max_batch = max_batch
        self._linger = linger
        self._concurrency = concurrency
        self._share = share
        self._arguments: dict[str, Any] | None = {"x-priority": priority} if priority is not None else None
        #: Whether the fast paths may be used on this consumer's channel (``Settings.amqp_fast``).
        self.fast = fast
        #: Whether deliveries reach ``_accept`` from aiormq's reader directly (fast path ``in-line delivery``).
        self.in_line = False
        #: Whether the channel's frame queue is bounded by the prefetch alone (fast path ``frame-queue bound``).
        self.unbounded = False
        #: Received, not yet handed to a batch: per queue in arrival order (``_take`` picks from them in turn).
        self._buffers: dict[str, list[Incoming]] = {q: [] for q in self.queues}
        self._buffered = 0
        self._turn = 0
        self._timer: asyncio.TimerHandle | None = None
        self._hold: asyncio.TimerHandle | None = None
        self._due = False
        self._running: set[asyncio.Task[None]] = set()
        self._tracker: _Tracker | None = None
        self._tags: dict[str, str] = {}  # consumer tag → queue
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def _subscribe(self) -> None:
        channel = await self._channel.get_underlay_channel()
        self._tracker = _Tracker(channel)
        if self.fast:
            self.in_line = fast_paths.deliver_in_line(channel, self._accept)
            self.unbounded = fast_paths.unbounded_frames(channel)
        # Each queue's consumer tag is chosen here and filed before its basic.consume: the broker delivers right after
        # each ConsumeOk (in line, before this coroutine resumes), so a tag learnt from the reply was too late for
        # the first deliveries of every queue but the first, which were filed under queues[0] — at every start and
        # reconnect, past a held-back queue's share of nothing (hub.pipeline.lanes).
        self._tags = {}
        round_ = next(_SUBSCRIPTIONS)
        for i, queue in enumerate(self.queues):
            tag = f"hub.{round_}.{i}"
            self._tags[tag] = queue
            await channel.basic_consume(queue, self._on_message, arguments=self._arguments, consumer_tag=tag)

    async def _on_reopen(self, *_: Any) -> None:
        if self._stopping:
            return
        try:
            await self._subscribe()
        except _QUIET:
            log.warning("could not resubscribe to %s after a reconnect; the robust channel will retry", self.queue)

    async def start(self) -> None:
        async with _edge(f"consuming {self.queue}"):
            await self._subscribe()
        self._channel.reopen_callbacks.add(self._on_reopen)

    # The aiormq consumer callback, where deliveries are not handed over in line (fast path ``in-line delivery``).
    async def _on_message(self, dm: DeliveredMessage) -> None:
        self._accept(dm)

    def _accept(self, dm: DeliveredMessage) -> None:
        """Take one delivery (in order): buffer it, start a batch when one is full or its linger is over."""
        tracker = self._tracker
        if tracker is None or tracker.channel is not dm.channel:
            tracker = self._tracker = _Tracker(dm.channel)
        if len(self.queues) == 1:
            queue = self.queues[0]
        else:
            queue = self._tags.get(cast(str, dm.delivery.consumer_tag), self.queues[0])  # type: ignore[union-attr]
        self._buffers[queue].append(_incoming(dm, queue, tracker))
        self._buffered += 1
        self._idle.clear()
        if self._buffered >= self._max_batch:
            self._flush()
        elif self._timer is None and not self._due:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._due = True
        self._flush()

    def _look_again(self) -> None:
        """The hold timer: held-back queues may have a share again. A timer of its own, so that a message of another
        queue arriving meanwhile still starts its batch after ``linger``, not after ``HOLD_S``."""
        self._hold = None
        self._due = True
        self._flush()

    def _take(self) -> list[Incoming]:
        """The next batch: up to ``max_batch`` messages, from the buffered queues in turn (each within its share)."""
        buffers = self._buffers
        if len(buffers) == 1 and self._share is None:
            (only,) = buffers.values()
            first = only[: self._max_batch]
            del only[: self._max_batch]
            self._buffered -= len(first)
            return first
        waiting = [q for q in self.queues if buffers[q]]
        if len(waiting) > 1:  # a different queue goes first each batch
            self._turn = (self._turn + 1) % len(waiting)
            waiting = waiting[self._turn :] + waiting[: self._turn]
        caps = {q: min(len(buffers[q]), self._share(q) if self._share else self._max_batch) for q in waiting}
        taken = dict.fromkeys(waiting, 0)
        room = self._max_batch
        while room and waiting:
            for q in list(waiting):
                if taken[q] >= caps[q]:
                    waiting.remove(q)
                    continue
                taken[q] += 1
                room -= 1
                if not room:
                    break
        batch: list[Incoming] = []
        for q, n in taken.items():
            if n:
                batch += buffers[q][:n]
                del buffers[q][:n]
        self._buffered -= len(batch)
        return batch

    def _flush(self) -> None:
        while self._buffered and len(self._running) < self._concurrency:
            if self._buffered < self._max_batch and not self._due and not self._stopping:
                break
            batch = self._take()
            if not batch:  # every buffered queue is held back (share 0): look again shortly
                self._due = False
                if self._hold is None:
                    self._hold = asyncio.get_running_loop().call_later(HOLD_S, self._look_again)
                return
            self._due = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            self._idle.clear()
        if self._buffered and self._timer is None and not self._due:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._expire)

    async def _run(self, batch: list[Incoming]) -> None:
        try:
            await self._handler(batch)
        except Exception:
            log.exception(
                "handler failed for a batch of %d from %s; unsettled messages are requeued", len(batch), self.queue
            )
        finally:
            # What the handler left unsettled goes back at once — except what it took over (``Incoming.held``: the
            # adapter SDK nacks a delivery waiting for its Retry delay itself, later). A held delivery stays
            # unacknowledged on this channel, within the prefetch; a lost channel's broker redelivers it anyway.
            unsettled = [m for m in batch if not m.settled and not m.held]
            if unsettled:
                await nack(unsettled, requeue=True)
            task = asyncio.current_task()
            if task is not None:
                self._running.discard(cast("asyncio.Task[None]", task))
            self._flush()
            if not self._running and not self._buffered:
                self._idle.set()

    async def stop(self, *, drain: bool = True) -> None:
        """Stop receiving. With ``drain`` the messages already received are handled and settled first (graceful
        shutdown); without, they are requeued. Returns when no handler runs any more. Idempotent."""
        if self._stopping:
            await self.wait_idle()
            return
        self._stopping = True
        self._channel.reopen_callbacks.discard(self._on_reopen)
        tracker = self._tracker
        if tracker is not None and not tracker.channel.is_closed:
            for tag in self._tags:
                with contextlib.suppress(*_QUIET):
                    await tracker.channel.basic_cancel(tag)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if drain:
            self._due = True
            self._flush()
        while drain and self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
            self._due = True
            self._flush()
        # Not drained (or held back by their share): back to the queue, in order, for the next reader.
        pending = [m for q in self.queues for m in self._buffers[q]]
        for q in self.queues:
            self._buffers[q] = []
        self._buffered = 0
        for timer in (self._timer, self._hold):
            if timer is not None:
                timer.cancel()
        self._timer = self._hold = None
        await nack(pending, requeue=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._idle.set()
        with contextlib.suppress(*_QUIET):
            await self._channel.close()

    async def wait_idle(self) -> None:
        """Wait until no batch is buffered or running (useful in tests and for graceful shutdown)."""
        await self._idle.wait()

    async def ack(self, batch: Iterable[Incoming]) -> None:
        await ack(batch)

    async def nack(self, batch: Iterable[Incoming], *, requeue: bool = True) -> None:
        await nack(batch, requeue=requeue)


# -- transport -----------------------------------------------------------------------------------------------------


async def _declare_queue(name: str, arguments: dict[str, Any], channel: Any) -> None:
    await channel.queue_declare(name, durable=True, arguments=arguments)


async def _bind(queue: str, exchange: str, routing_key: str, arguments: dict[str, Any] | None, channel: Any) -> None:
    await channel.queue_bind(queue, exchange, routing_key=routing_key, arguments=arguments)


class Transport:
    """One robust connection to RabbitMQ, one confirming publish channel, consumers on their own channels.

    Build it with ``await Transport.connect(settings)`` (the hub) or ``await Transport.connect(settings,
    url=amqp_url_for(settings, system))`` (an agency system's client). Safe to share between tasks of one event
    loop; not between processes.
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractRobustChannel,
        *,
        names: Names,
        user: str,
        publish_timeout: float,
        fast: bool = True,
    ) -> None:
        self.names = names
        #: ``Settings.amqp_fast``: publish with ``_aiormq_fast.publish_batch`` and give consumers the fast paths
        #: (where the installed aiormq offers what they need).
        self.fast = fast
        #: The AMQP user this transport is logged in as (what RabbitMQ enforces as ``user_id``).
        self.user = user
        self._connection = connection
        self._channel = channel
        self._publish_timeout = publish_timeout
        self._inflight: dict[str, int] = {}
        self._inflight_changed = asyncio.Condition()
        self._get_channel: AbstractRobustChannel | None = None
        #: ``publish_aside``'s channel (opened at first use).
        self._aside_channel: AbstractRobustChannel | None = None
        self._get_tracker: _Tracker | None = None
        self._consumers: set[Consumer] = set()

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        *,
        url: str | None = None,
        client_name: str = "hub",
        publish_timeout: float = 30.0,
        reconnect_interval: float = 1.0,
    ) -> Transport:
        """Connect (robustly: later connection losses are healed in the background) and open the publish channel.
        A broker that cannot be reached now is ``BrokerUnavailable``; wrong credentials ``AMQP_ACCESS_REFUSED``."""
        target = url or settings.amqp_url
        async with _edge("connecting to RabbitMQ"):
            # aio_pika.connect_robust, unrolled: when the first connect fails (wrong password, broker down) its
            # half-made connection must be closed here, or its __del__ later schedules a close() that nothing awaits.
            connection = aio_pika.RobustConnection(
                make_url(target, reconnect_interval=reconnect_interval),
                client_properties={"connection_name": client_name},
                reconnect_interval=reconnect_interval,
            )
            try:
                await connection.connect()
            except BaseException:
                with contextlib.suppress(*_QUIET):
                    await connection.close()
                raise
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
            except BaseException:
                await connection.close()
                raise
        return cls(
            connection,
            cast(AbstractRobustChannel, channel),
            names=Names(settings.namespace, settings.queue_type),
            user=URL(target).user or "guest",
            publish_timeout=publish_timeout,
            fast=settings.amqp_fast,
        )

    @property
    def connected(self) -> bool:
        """The broker connection is up now (False while the robust connection reconnects, and once closed)."""
        return not self._connection.is_closed and self._connection.connected.is_set()

    async def close(self) -> None:
        """Stop every consumer (draining what it already received), then close the connection."""
        for consumer in list(self._consumers):
            await consumer.stop(drain=True)
        self._consumers.clear()
        with contextlib.suppress(*_QUIET):
            await self._connection.close()

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- topology ------------------------------------------------------------------------------------------------

    async def declare_topology(self, system_ids: Iterable[str] = ()) -> None:
        """Declare every exchange, queue and binding (idempotent: declaring again with the same arguments is a
        no-op; a queue that exists with *other* arguments is ``AMQP_PRECONDITION``)."""
        topo = topology(self.names, system_ids)
        async with _edge("declaring the topology"):
            channel = await self._channel.get_underlay_channel()
            for ex in topo.exchanges:
                await channel.exchange_declare(ex.name, exchange_type=ex.type, durable=True)
            # Each declaration is a round trip: one after the other, the demo directory's 50 systems took 1.1 s and
            # a directory of a thousand would take twenty. The queues, then their bindings, go over a few channels
            # at once (each channel's in order; every reply awaited, so a mismatch still raises AMQP_PRECONDITION).
            await self._on_channels([functools.partial(_declare_queue, q.name, dict(q.arguments)) for q in topo.queues])
            await self._on_channels(
                [
                    functools.partial(_bind, b.queue, b.exchange, b.routing_key, dict(b.arguments) or None)
                    for b in topo.bindings
                ]
            )

    async def _on_channels(self, ops: Sequence[Callable[[Any], Awaitable[Any]]], width: int = 16) -> None:
        """Run ``ops`` (each given an aiormq channel) over up to ``width`` channels of their own at once, each
        channel's share in order; the channels are closed afterwards. The first failure is raised."""
        if not ops:
            return
        channels = [await self._connection.channel(publisher_confirms=False) for _ in range(min(width, len(ops)))]
        try:
            underlays = [await c.get_underlay_channel() for c in channels]

            async def share(i: int) -> None:
                for op in ops[i :: len(underlays)]:
                    await op(underlays[i])

            await asyncio.gather(*(share(i) for i in range(len(underlays))))
        finally:
            for c in channels:
                with contextlib.suppress(*_QUIET):
                    await c.close()

    async def queue_depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (not counting unacknowledged ones)."""
        async with _edge(f"inspecting {queue}"):
            channel = await self._connection.channel(publisher_confirms=False)
            try:
                ok = await (await channel.get_underlay_channel()).queue_declare(queue, passive=True)
            finally:
                with contextlib.suppress(*_QUIET):
                    await channel.close()
        return int(ok.message_count or 0)

    async def delete_queue(self, queue: str) -> None:
        """Delete a queue regardless of its content (tests and operators' clean-up)."""
        async with _edge(f"deleting {queue}"):
            channel = await self._channel.get_underlay_channel()
            await channel.queue_delete(queue, if_unused=False, if_empty=False)

    # -- publishing ----------------------------------------------------------------------------------------------

    async def publish_aside(self, items: Sequence[Outgoing]) -> None:
        """``publish_many`` on a publish channel of its own (opened at first use): for publishes the broker may
        refuse while others are in flight — a system's put-off into ``ns.later`` before its user was granted it —
        whose refusal closes that channel alone. On the shared one it failed every publish in flight with it."""
        if self._aside_channel is None:
            async with _edge("opening a publish channel"):
                channel = await self._connection.channel(publisher_confirms=True, on_return_raises=False)
            if self._aside_channel is None:
                self._aside_channel = cast(AbstractRobustChannel, channel)
            else:
                with contextlib.suppress(*_QUIET):
                    await channel.close()
        await self.publish_many(items, channel=self._aside_channel)

    async def publish_many(self, items: Sequence[Outgoing], *, channel: AbstractRobustChannel | None = None) -> None:
        """Publish every item (persistent, mandatory) and return once the broker confirmed *all* of them.

        Before anything is published, each item's ``egress`` check (if any) is called with its body; if one
        raises, nothing of the batch is published and the exception propagates unchanged. A nacked or unroutable
        item, a lost connection or no confirm within the publish timeout raises ``BrokerUnavailable`` (some items
        may then have been delivered: the caller retries the batch, and receivers deduplicate by message id). A
        permission refusal raises ``ConfigError`` (``AMQP_ACCESS_REFUSED``)."""
        if not items:
            return
        for item in items:
            if item.egress is not None:
                item.egress(item.body)
        # aiormq matches a returned (unroutable) message to its publish by message_id; two batches in flight with
        # the same message_id could swap their outcome, so batches sharing an id take turns (a batch may hold the
        # same id many times: a fan-out to several recipients).
        ids = {item.message_id for item in items}
        async with self._inflight_changed:
            await self._inflight_changed.wait_for(lambda: self._inflight.keys().isdisjoint(ids))
            for mid in ids:
                self._inflight[mid] = self._inflight.get(mid, 0) + 1
        try:
            async with _edge("publishing"), asyncio.timeout(self._publish_timeout):
                underlay = await self._underlay(channel or self._channel)
                if self.fast and fast_paths.can_publish_batch(underlay):
                    results = await fast_paths.publish_batch(underlay, items, content_type=CONTENT_TYPE)
                else:
                    plain = cast(aiormq.Channel, underlay)
                    results = await asyncio.gather(
                        *(
                            plain.basic_publish(
                                item.body,
                                exchange=item.exchange,
                                routing_key=item.routing_key,
                                properties=_properties(item),
                                mandatory=True,
                                wait=False,
                            )
                            for item in items
                        ),
                        return_exceptions=True,
                    )
                _raise_for(results, items)
        finally:
            async with self._inflight_changed:
                for mid in ids:
                    left = self._inflight[mid] - 1
                    if left:
                        self._inflight[mid] = left
                    else:
                        del self._inflight[mid]
                self._inflight_changed.notify_all()

    @staticmethod
    async def _underlay(robust: AbstractRobustChannel) -> aiormq.abc.AbstractChannel:
        """The open aiormq channel under a robust channel. Right after the broker closed it (an access refusal, a
        missing exchange) the robust channel re-opens it in the background: wait for that rather than fail the next
        operation too (callers bound the wait with a timeout)."""
        while True:
            await robust.ready()
            channel = await robust.get_underlay_channel()
            if not channel.is_closed:
                return channel
            await asyncio.sleep(0.005)

    # -- consuming -----------------------------------------------------------------------------------------------

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
    ) -> Consumer:
        """Start consuming ``queue_name`` (one queue, or several read in turn) on a channel of its own with
        ``prefetch`` unacknowledged messages at most per queue; ``handler(batch)`` is awaited with lists of
        ``Incoming`` (see ``Consumer``, also for ``priority`` and ``share``)."""
        if prefetch < 1:
            raise ValueError("prefetch must be ≥ 1 (an unbounded prefetch defeats the emergency lane)")
        async with _edge(f"consuming {queue_name}"):
            channel = cast(AbstractRobustChannel, await self._connection.channel(publisher_confirms=False))
            await channel.set_qos(prefetch_count=prefetch)
        consumer = Consumer(
            channel,
            queue_name,
            handler,
            max_batch=max_batch,
            linger=linger,
            concurrency=concurrency,
            priority=priority,
            fast=self.fast,
            share=share,
        )
        try:
            await consumer.start()
        except BaseException:
            with contextlib.suppress(*_QUIET):
                await channel.close()
            raise
        self._consumers.add(consumer)
        return consumer

    async def fetch(self, queue_name: str, *, max_messages: int = 100) -> list[Incoming]:
        """Take up to ``max_messages`` waiting messages from ``queue_name`` without waiting for more (``hub
        receive``). They stay unacknowledged until ``ack``/``nack``; if the transport closes first, the broker
        puts them back."""
        async with _edge(f"reading {queue_name}"), asyncio.timeout(self._publish_timeout):
            if self._get_channel is None:
                self._get_channel = cast(
                    AbstractRobustChannel, await self._connection.channel(publisher_confirms=False)
                )
            channel = await self._underlay(self._get_channel)
            if self._get_tracker is None or self._get_tracker.channel is not channel:
                self._get_tracker = _Tracker(channel)
            out: list[Incoming] = []
            while len(out) < max_messages:
                dm = await channel.basic_get(queue_name, no_ack=False)
                if isinstance(dm.delivery, spec.Basic.GetEmpty):
                    break
                out.append(_incoming(dm, queue_name, self._get_tracker))
        return out

    async def ack(self, batch: Iterable[Incoming]) -> None:
        """Acknowledge messages from any consumer or ``fetch`` of this transport."""
        await ack(batch)

    async def nack(self, batch: Iterable[Incoming], *, requeue: bool = True) -> None:
        """Requeue (``requeue=True``) or dead-letter messages."""
        await nack(batch, requeue=requeue)


def _properties(item: Outgoing) -> spec.Basic.Properties:
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        priority=item.priority,
        message_id=item.message_id,
        user_id=item.user_id,
        correlation_id=item.correlation_id,
        expiration=item.expiration,
        headers=dict(item.headers) if item.headers else None,
    )


def _raise_for(results: Sequence[Any], items: Sequence[Outgoing]) -> None:
    """Raise for a failed confirm: a refusal first (it is a configuration error), else the first failure."""
    failures = [(r, item) for r, item in zip(results, items, strict=True) if not isinstance(r, spec.Basic.Ack)]
    if not failures:
        return
    for result, _item in failures:
        if isinstance(
            result,
            (
                amqp_errors.ChannelAccessRefused,
                amqp_errors.ChannelPreconditionFailed,
                amqp_errors.ChannelNotFoundEntity,
            ),
        ):
            raise cast(HubError, translate(result, "publishing"))
    result, item = failures[0]
    if isinstance(result, DeliveredMessage):
        # Named from the returned message itself: a return is matched to the LAST publish with its message id, and
        # a fan-out repeats one id, so ``item`` may be a copy that did reach its queue.
        raise BrokerUnavailable(
            f"no queue is bound for routing key {result.routing_key or item.routing_key!r} on exchange "
            f"{result.exchange or item.exchange!r}",
            code="DELIVERY_UNROUTABLE",
        )
    if isinstance(result, BaseException):
        # A confirm future cancelled by a closing channel arrives as CancelledError: an outage, not our cancel.
        error = translate(result, "publishing")
        if error is None:
            raise result
        raise error from None
    raise BrokerUnavailable(f"unexpected confirm {type(result).__name__} while publishing", code="DELIVERY_NACKED")
