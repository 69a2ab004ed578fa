"""The gateway's side of each system's queue ``<ns>.q.<system>``: answers for waiting submissions, and an inbox.

For every system seen, one AMQP consumer on its queue (the gateway's own connection, logged in as the hub's user;
prefetch ``prefetch``). A delivery is

- an **answer** (``x-hub-kind`` receipt or error) whose ``x-hub-ref`` names a message a ``POST /v1/messages`` is
  waiting for: it resolves that wait (oldest waiter first) and is acknowledged;
- else an **inbox item**, held unacknowledged: ``next_item`` hands it to one long poll with an opaque token, ``ack``
  acknowledges it; an item handed out and not acknowledged within ``visibility_timeout`` seconds is nacked (requeued:
  the broker delivers it again, to this or another gateway), ``release`` puts an item back at once (a poll whose
  response could not be written, or a client that asks for it: ``POST /v1/inbox/{tag}/release``), ``put_off`` has
  it back after a delay without holding it (``POST /v1/inbox/{tag}/release?after=<s>``: a copy waits in the broker's
  ``ns.later``, ``hub.transport.names``), and ``refuse``
  parks it in the dead-letter queue with the system's reason (``POST /v1/inbox/{tag}/refuse``: a delivery the
  system will never take, as ``hub.pipeline.client.park_refused`` parks it for an AMQP system), then acknowledges it.

The consumer's handler keeps each batch open until every item of it is settled (``Consumer`` requeues what a handler
leaves unsettled), so the consumer runs as many batches at once as its prefetch allows. On ``close`` every item still
held goes back to the queue.

A system is read while it takes part: one that has not polled, submitted or settled an item for ``idle_s`` (and has
nothing handed out and no submission waiting) is let go — its consumers stopped, what was held for it put back — so
its deliveries wait in the broker, where they expire as any delivery does and the ops page counts them, and the ops
page no longer shows it connected through the gateway for as long as the gateway runs (it shows when the system
last polled: ``hub.metrics.polled``, ``monitoring.metrics.adapter_state``). Its next poll
reads the queue again; a poll that opens the queue waits up to ``OPEN_GRACE_S`` for the first delivery when the queue
holds some (the consumer's first deliveries take a moment), whatever its ``wait``.

A system takes part one way (``hub.gateway.links``): with a ``guard``, a system whose own broker user consumes its
queue is refused (``GATEWAY_LINK_CONFLICT``) instead of consumed, and a system consumed here that starts an AMQP
consumer beside it is given up (``give_way``: every item held for it goes back to the queue) within ``link_check_s``.

Tags name the gateway that issued them: ``<instance>.<token>``, the instance 8 hex digits drawn once per mailbox (per
gateway process), the token random (``TAG_PATTERN``). A tag is held only in the memory of the gateway that handed the
delivery out, so several gateways need a load balancer that keeps a client on one of them (source affinity); a tag
another gateway issued is recognised (``issued_elsewhere``) and answered 421 ``GATEWAY_TAG_ELSEWHERE`` by
``hub.gateway.app``, not taken for one acknowledged already.

Known limit: the prefetch window is shared by answers and inbox items. A system that submits but never drains its
inbox fills the window with unacknowledged deliveries; the answers to its next submissions then stay in the queue
behind them, the submissions end in 503 ``GATEWAY_TIMEOUT``, and the answers arrive as inbox items once it polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from hub.aio import stopped
from hub.errors import HubError
from hub.gateway.links import CONFLICT

if TYPE_CHECKING:
    from hub.gateway.links import LinkGuard
    from hub.transport.abc import AbstractConsumer, AbstractTransport
    from hub.transport.topology import Incoming

__all__ = ["Answer", "InboxItem", "Mailbox"]

log = logging.getLogger("hub.gateway")

ANSWER_KINDS = frozenset({"receipt", "error"})
_T = TypeVar("_T")
#: A poll that finds the queue just opened with deliveries ready waits this long at most for the first of them.
OPEN_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class Answer:
    """The hub's signed answer about one message: ``kind`` receipt or error, its bytes, its AMQP message id."""

    kind: str
    body: bytes
    message_id: str | None


@dataclass(eq=False, slots=True)
class InboxItem:
    msg: Incoming
    settled: asyncio.Future[None]
    token: str = ""
    deadline: float = 0.0

    @property
    def body(self) -> bytes:
        return self.msg.body

    @property
    def message_id(self) -> str:
        return self.msg.message_id or ""


@dataclass(eq=False, slots=True)
class _Box:
    system: str
    ready: asyncio.Queue[InboxItem] = field(default_factory=asyncio.Queue)
    out: dict[str, InboxItem] = field(default_factory=dict)
    waiters: dict[str, deque[asyncio.Future[Answer]]] = field(default_factory=dict)
    consumer: AbstractConsumer | None = None
    #: The system's other queues (with quorum queues, its urgent lane): consumed into the same box.
    more: list[AbstractConsumer] = field(default_factory=list)
    #: No longer read here (``Mailbox.give_way``, ``Mailbox.drop``, idle): deliveries still arriving are left to the
    #: consumer to put back, until ``open`` reads the queue again.
    given_up: bool = False
    #: The clock's reading at the system's last poll, submission or settled item (``Mailbox.idle_s``).
    active: float = 0.0
    #: Its requests in progress (``Mailbox.in_use``: a long poll, a submission waiting for the examination): a system
    #: with one is not idle, however long it takes.
    requests: int = 0
    #: When the queue was last opened here, and how many deliveries were ready in it then (``OPEN_GRACE_S``).
    opened_at: float = 0.0
    backlog: int = 0
    #: A let-go for being idle is on its way (one at a time, however long the consumers take to stop).
    leaving: bool = False


#: A delivery tag: the issuing gateway's instance id, a dot, a random token (``secrets.token_urlsafe(18)``).
TAG_PATTERN = r"^[0-9a-f]{8}\.[A-Za-z0-9_-]{24}$"
_TAG = re.compile(TAG_PATTERN)


class Mailbox:
    def __init__(
        self,
        transport: AbstractTransport,
        *,
        prefetch: int = 64,
        visibility_timeout: float = 60.0,
        clock: Any = time.monotonic,
        guard: LinkGuard | None = None,
        link_check_s: float = 10.0,
        idle_s: float = 0.0,
    ) -> None:
        self.transport = transport
        #: Names this gateway in the tags it issues (``TAG_PATTERN``): fixed for the mailbox's life.
        self.instance = secrets.token_hex(4)
        self.prefetch = prefetch
        self.visibility_timeout = visibility_timeout
        self.clock = clock
        #: One way in per system (``hub.gateway.links``): asked before a system's queue is consumed, and every
        #: ``link_check_s`` seconds for the systems consumed (None: no check, as on the in-memory transport).
        self.guard = guard
        self.link_check_s = link_check_s
        #: A system read here that has not polled, submitted or settled an item for this long is let go (0: never).
        self.idle_s = idle_s
        self._polls_stopped: asyncio.Future[None] | None = None
        self._boxes: dict[str, _Box] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False

    # -- consumers ---------------------------------------------------------------------------------------------

    async def open(self, system: str) -> None:
        """Start consuming the system's queue (once; later calls return at once). Raises ``LinkConflict``
        (``GATEWAY_LINK_CONFLICT``) instead when the system reads its queue over RabbitMQ (``hub.gateway.links``)."""
        box = self._box(system)
        box.active = self.clock()
        if box.consumer is not None:
            return
        lock = self._opening.setdefault(system, asyncio.Lock())
        async with lock:
            box = self._box(system)
            if box.consumer is not None:
                return
            if self.guard is not None:
                await self.guard.check(system)
            box.given_up = False
            # Every queue of the system: one with classic queues; with quorum queues its urgent lane first.
            *urgent, queue = self.transport.names.system_queues(system)
            box.backlog = await self._ready(system)
            box.opened_at = self.clock()

            async def handle(batch: list[Incoming]) -> None:
                await self._handle(box, batch)

            for lane in urgent:
                box.more.append(
                    await self.transport.consume(
                        lane,
                        handle,
                        prefetch=self.prefetch,
                        max_batch=self.prefetch,
                        linger=0.0,
                        concurrency=self.prefetch,
                    )
                )
            box.consumer = await self.transport.consume(
                queue, handle, prefetch=self.prefetch, max_batch=self.prefetch, linger=0.0, concurrency=self.prefetch
            )
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        if self.guard is not None and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_links(self.guard))

    def _box(self, system: str) -> _Box:
        box = self._boxes.get(system)
        if box is None:
            box = self._boxes[system] = _Box(system)
        return box

    async def _ready(self, system: str) -> int:
        """Deliveries ready in the system's queues (0 when the broker cannot say: a poll then does not wait for
        them)."""
        try:
            return sum([await self.transport.queue_depth(q) for q in self.transport.names.system_queues(system)])
        except HubError as exc:
            log.debug("could not count the deliveries ready for %s (%s)", system, exc.code)
            return 0

    async def _handle(self, box: _Box, batch: list[Incoming]) -> None:
        if self._closing or box.given_up:
            return  # the consumer requeues the batch
        loop = asyncio.get_running_loop()
        answered: list[Incoming] = []
        held: list[InboxItem] = []
        for m in batch:
            if self._resolve(box, m):
                answered.append(m)
                continue
            item = InboxItem(m, loop.create_future())
            held.append(item)
            box.ready.put_nowait(item)
        if answered:
            await self.transport.ack(answered)
        if held:
            # Keep the batch open until each item is acknowledged or put back (the consumer requeues the rest).
            await asyncio.gather(*(it.settled for it in held), return_exceptions=True)

    def _resolve(self, box: _Box, m: Incoming) -> bool:
        headers = m.headers or {}
        if headers.get("x-hub-kind") not in ANSWER_KINDS:
            return False
        ref = headers.get("x-hub-ref") or m.correlation_id
        if isinstance(ref, bytes):
            ref = ref.decode("utf-8", "replace")
        waiting = box.waiters.get(str(ref)) if ref else None
        while waiting:
            fut = waiting.popleft()
            if not fut.done():
                if not waiting:
                    box.waiters.pop(str(ref), None)
                fut.set_result(Answer(str(headers["x-hub-kind"]), m.body, m.message_id))
                return True
        if waiting is not None:
            box.waiters.pop(str(ref), None)
        return False

    # -- answers -----------------------------------------------------------------------------------------------

    def expect(self, system: str, message_id: str) -> asyncio.Future[Answer]:
        """A future for the hub's answer about ``message_id`` on the system's queue; register it before publishing
        (and ``forget`` it when giving up)."""
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._box(system).waiters.setdefault(message_id, deque()).append(fut)
        return fut

    def forget(self, system: str, message_id: str, fut: asyncio.Future[Answer]) -> None:
        box = self._boxes.get(system)
        if box is None:
            return
        waiting = box.waiters.get(message_id)
        if waiting is None:
            return
        with contextlib.suppress(ValueError):
            waiting.remove(fut)
        if not waiting:
            box.waiters.pop(message_id, None)

    # -- inbox -------------------------------------------------------------------------------------------------

    @property
    def polls_stopped(self) -> asyncio.Future[None]:
        """Done once the gateway stops (``stop_polls``)."""
        if self._polls_stopped is None:
            self._polls_stopped = asyncio.get_running_loop().create_future()
        return self._polls_stopped

    def stop_polls(self) -> None:
        """The gateway stops: polls waiting now, and any that come, end at once with what they have."""
        if not self.polls_stopped.done():
            self.polls_stopped.set_result(None)

    async def next_item(self, system: str, wait: float) -> InboxItem | None:
        """The next inbox item of the system, handed out with a fresh token, or None after ``wait`` seconds."""
        items = await self.next_items(system, wait, 1)
        return items[0] if items else None

    async def next_items(self, system: str, wait: float, limit: int) -> list[InboxItem]:
        """Up to ``limit`` inbox items of the system, each handed out with a fresh token: waits up to ``wait`` seconds
        for the first, then takes what else is there now (none after the wait: an empty list)."""
        with self.in_use(system):
            await self.open(system)
            box = self._box(system)
            deadline = self.clock() + wait
            if box.backlog and box.opened_at + OPEN_GRACE_S > deadline:
                # Just opened with deliveries ready: they reach this process a moment after the subscription.
                deadline = box.opened_at + OPEN_GRACE_S
            out: list[InboxItem] = []
            while len(out) < limit:
                try:
                    item = box.ready.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - self.clock()
                    if out or left <= 0 or self.polls_stopped.done():
                        break
                    # Wait for the next item, the end of the wait, or the gateway's stop (``stop_polls``: a poll
                    # waiting then is answered 204 at once, not cut without an answer when the server closes).
                    getter = asyncio.ensure_future(box.ready.get())
                    try:
                        await asyncio.wait(
                            (getter, self.polls_stopped), timeout=left, return_when=asyncio.FIRST_COMPLETED
                        )
                    except BaseException:  # the client went away: an item taken meanwhile is not lost with it
                        if getter.done() and not getter.cancelled():
                            box.ready.put_nowait(getter.result())
                        else:
                            getter.cancel()
                        raise
                    if not getter.done():
                        getter.cancel()  # the queue keeps what it has (``Queue.get`` hands a cancelled wake-up on)
                        break
                    item = getter.result()
                if item.settled.done() or item.msg.settled:
                    continue  # put back or lost with its channel: the broker delivers it again
                item.token = f"{self.instance}.{secrets.token_urlsafe(18)}"
                item.deadline = self.clock() + self.visibility_timeout
                box.out[item.token] = item
                out.append(item)
            if out:
                box.backlog = 0  # what was ready at the opening has started to arrive
            return out

    @contextlib.contextmanager
    def in_use(self, system: str) -> Iterator[None]:
        """Around each request of ``system`` (its polls here, its submissions in ``hub.gateway.app``): while one is in
        progress the system is not idle, and its end counts as activity. Entered before anything is awaited, so that
        a queue opened for the request is not let go before the request uses it."""
        box = self._box(system)
        box.requests += 1
        try:
            yield
        finally:
            box.requests -= 1
            box.active = self.clock()

    def issued_elsewhere(self, token: str) -> bool:
        """Whether ``token`` has the shape of a tag another gateway issued (another instance id): that gateway holds
        the delivery, and only it can settle it."""
        return _TAG.fullmatch(token) is not None and not token.startswith(f"{self.instance}.")

    def _take(self, system: str, token: str) -> InboxItem | None:
        """The item handed out to ``system`` under ``token``, no longer out (None: unknown or already settled)."""
        box = self._boxes.get(system)
        if box is None:
            return None
        box.active = self.clock()
        return box.out.pop(token, None)

    async def _acknowledge(self, item: InboxItem) -> None:
        try:
            await self.transport.ack([item.msg])
        finally:
            if not item.settled.done():
                item.settled.set_result(None)

    async def ack(self, system: str, token: str) -> bool:
        """Acknowledge an item handed out to ``system``; False when the token is unknown (or already settled). Once
        taken, the item is settled in a task of its own: a client that leaves mid-request does not cut it short."""
        item = self._take(system, token)
        if item is None:
            return False
        await asyncio.shield(self._spawn(self._acknowledge(item)))
        return True

    def release(self, system: str, token: str) -> bool:
        """Put a handed-out item back at once (nack with requeue; in the background); False when the token is
        unknown (or already settled)."""
        item = self._take(system, token)
        if item is None:
            return False
        self._requeue(item)
        return True

    async def put_off(self, system: str, token: str, after: float) -> bool | None:
        """Put a handed-out item off for ``after`` seconds (``hub.pipeline.client.put_off``: a copy waits in the
        broker's ``ns.later`` and comes back into the system's queue; the item is acknowledged), so that it takes no
        room in the prefetch window meanwhile and survives a gateway restart with its delay. None when the token is
        unknown; False when the broker did not take the copy (the item is put back at once: nothing is lost)."""
        from hub.pipeline.client import put_off

        item = self._take(system, token)
        if item is None:
            return None

        async def later() -> bool:
            try:
                await put_off(self.transport, item.msg, after, for_system=system)
            except (HubError, ValueError) as exc:
                log.warning(
                    "could not put inbox item %s of %s off (%s); put back at once",
                    item.message_id,
                    system,
                    getattr(exc, "code", type(exc).__name__),
                )
                self._requeue(item)
                return False
            except BaseException:
                self._requeue(item)
                raise
            if not item.settled.done():
                item.settled.set_result(None)
            return True

        # In a task of its own: a client that leaves mid-request (the handler cancelled) does not cut it short.
        return await asyncio.shield(self._spawn(later()))

    async def refuse(self, system: str, token: str, code: str, reason: str) -> bool | None:
        """Park a handed-out item in the dead-letter queue with ``system``'s code and reason, then acknowledge it.
        None when the token is unknown; False when the broker did not take the parked copy (the item is put back
        at once: nothing is acknowledged away)."""
        from hub.pipeline.client import park_refused

        item = self._take(system, token)
        if item is None:
            return None

        async def park() -> bool:
            # Taken from the handed-out items, the item must end acknowledged or put back: whatever happens
            # (a failure other than the broker's, a bug), it goes back unless its parked copy is safe.
            try:
                refused = await park_refused(self.transport, system, [(item.msg, code, reason)])
            except BaseException:
                self._requeue(item)
                raise
            if refused:
                self._requeue(item)
                return False
            log.warning(
                "inbox item refused by its system and dead-lettered: %s",
                code,
                extra={"message_id": item.message_id, "system": system, "code": code, "reason": reason[:300]},
            )
            await self._acknowledge(item)
            return True

        # In a task of its own: a client that leaves mid-request (the handler cancelled) does not cut it short.
        return await asyncio.shield(self._spawn(park()))

    def _requeue(self, item: InboxItem) -> None:
        async def nack() -> None:
            try:
                await self.transport.nack([item.msg], requeue=True)
            except HubError as exc:
                log.warning("could not put an inbox item back (%s); the broker redelivers it", exc.code)
            finally:
                if not item.settled.done():
                    item.settled.set_result(None)

        self._spawn(nack())

    def _spawn(self, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run ``work`` in the background; ``close`` waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _sweep(self) -> None:
        """Requeue items handed out longer than the visibility timeout."""
        period = max(0.05, min(1.0, self.visibility_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = self.clock()
            for box in list(self._boxes.values()):
                for token, item in list(box.out.items()):
                    if item.deadline <= now:
                        box.out.pop(token, None)
                        log.info("inbox item %s of %s not acknowledged in time; requeued", item.message_id, box.system)
                        self._requeue(item)
            if self.idle_s > 0:
                for box in [b for b in self._boxes.values() if not b.leaving and self._idle(b, now)]:
                    # In the background: a let-go slow to finish does not hold up the visibility timeouts.
                    box.leaving = True
                    self._spawn(self._let_go_idle(box))

    def _idle(self, box: _Box, now: float) -> bool:
        """Read here, and nothing of the system's in progress for ``idle_s``: no request, nothing handed out, no
        submission waiting for its answer."""
        return (
            box.consumer is not None
            and box.requests == 0
            and not box.out
            and not any(box.waiters.values())
            and now - box.active >= self.idle_s
        )

    async def _let_go_idle(self, box: _Box) -> None:
        system = box.system
        try:
            put_back = await self._stop_reading(system, only_if=lambda b: self._idle(b, self.clock()))
        except Exception as exc:  # a bug here must not go unseen; the system stays read
            log.exception("letting go of idle system %s failed (%s)", system, type(exc).__name__)
            return
        finally:
            box.leaving = False
        if put_back is not None:
            log.info(
                "system %s has not polled or submitted for %.0f s: the gateway stopped reading its queue and put back "
                "the %d deliveries it held; its next poll reads the queue again",
                system,
                self.idle_s,
                put_back,
                extra={"system": system},
            )

    async def _watch_links(self, guard: LinkGuard) -> None:
        """Give way to a system's AMQP link as soon as one appears beside the gateway's (``hub.gateway.links``)."""
        while True:
            await asyncio.sleep(self.link_check_s)
            systems = [s for s, b in self._boxes.items() if b.consumer is not None]
            if not systems:
                continue
            try:
                for system, queues in (await guard.on_amqp(systems)).items():
                    await self.give_way(system, queues)
            except Exception as exc:  # a bug here must not end the watch
                log.exception("the one-link-per-system watch failed (%s)", type(exc).__name__)

    async def give_way(self, system: str, queues: list[str]) -> None:
        """Stop consuming the system's queues and put every item held for it back (handed out or not: an
        acknowledgement that comes later finds no item), so that its AMQP consumer gets them. Its next poll or
        submission asks the guard again (``open``)."""
        put_back = await self._stop_reading(system)
        if put_back is None:
            return
        log.warning(
            "system %s reads %s over RabbitMQ too: the gateway no longer reads it and put back the %d deliveries it "
            "held; the system's polls and submissions are refused (%s) while its AMQP consumer runs",
            system,
            ", ".join(queues),
            put_back,
            CONFLICT,
            extra={"system": system, "code": CONFLICT},
        )

    async def drop(self, system: str) -> None:
        """A system taken out of the directory (its requests are refused from now on): stop reading its queue and put
        what was held for it back, where the broker keeps it (and an operator sees it) instead of this process."""
        put_back = await self._stop_reading(system)
        if put_back is not None:
            log.info(
                "system %s is no longer in the directory: the gateway stopped reading its queue and put back the %d "
                "deliveries it held",
                system,
                put_back,
                extra={"system": system},
            )

    async def _stop_reading(self, system: str, only_if: Callable[[_Box], bool] | None = None) -> int | None:
        """Stop the system's consumers and put every item held for it back; how many (None: not read here, or
        ``only_if`` — asked under the lock that ``open`` takes, with nothing awaited before the stop — said no). Runs to
        its end in a task of its own (``close`` waits for it) when its caller is cancelled — the watch, the sweep or
        the directory's refresh stopping — so a queue is never left unsubscribed with its items still held here."""
        return await asyncio.shield(self._spawn(self._stop_reading_now(system, only_if)))

    async def _stop_reading_now(self, system: str, only_if: Callable[[_Box], bool] | None) -> int | None:
        async with self._opening.setdefault(system, asyncio.Lock()):
            box = self._boxes.get(system)
            if box is None or box.consumer is None or (only_if is not None and not only_if(box)):
                return None
            stops = self._unsubscribe(box)
            await asyncio.sleep(0)
            put_back = self._put_back(box)
            await asyncio.gather(*stops, return_exceptions=True)
        return put_back

    @staticmethod
    def _unsubscribe(box: _Box) -> list[asyncio.Task[None]]:
        """Cancel the box's subscriptions (each stop waits for its open batches, which ``_put_back`` settles); from
        now on what the consumers still hand over is theirs to put back (``given_up``)."""
        consumers = ([box.consumer] if box.consumer is not None else []) + box.more
        box.consumer, box.more, box.given_up = None, [], True
        loop = asyncio.get_running_loop()
        return [loop.create_task(c.stop(drain=False)) for c in consumers]

    def _put_back(self, box: _Box) -> int:
        """Put every item of the box, handed out or waiting, back in the queue; how many."""
        items = list(box.out.values())
        box.out.clear()
        while not box.ready.empty():
            items.append(box.ready.get_nowait())
        for item in items:
            if not item.settled.done():
                self._requeue(item)
        return len(items)

    def reading(self, system: str) -> bool:
        """Whether the gateway consumes the system's queue now (tests)."""
        box = self._boxes.get(system)
        return box is not None and box.consumer is not None

    def held(self, system: str) -> int:
        """Items of ``system`` waiting or handed out (tests, metrics)."""
        box = self._boxes.get(system)
        return 0 if box is None else box.ready.qsize() + len(box.out)

    async def close(self) -> None:
        """Stop the consumers and put every held item back (the transport is the caller's to close)."""
        self._closing = True
        try:
            await stopped(self._sweeper, self._watcher)  # re-cancelled until they end (hub.aio)
        finally:  # a close that was itself cancelled still puts every held item back
            # Cancel the subscriptions first (each stop waits for its open batches, which the put-back below settles).
            stops = [t for box in self._boxes.values() for t in self._unsubscribe(box)]
            await asyncio.sleep(0)
            for box in self._boxes.values():
                for fut in (f for waiting in box.waiters.values() for f in waiting):
                    fut.cancel()
                box.waiters.clear()
                self._put_back(box)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.gather(*stops, return_exceptions=True)
