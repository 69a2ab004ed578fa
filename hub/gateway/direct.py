"""Submissions examined in the gateway process itself, by the pipeline's own batch code (issue 11, the speed-up).

Before, ``POST /v1/messages`` published the body to the inbound exchange and waited for a worker's answer on the
system's queue: two broker round trips, the 4.4 KB body through the broker twice and a worker's batching per
request. Now the gateway runs ``hub.pipeline.worker.Worker.handle`` — the one processor, the same batch code the
workers run, not a second implementation — on micro-batches of the requests in hand:

    each request → an ``Incoming`` built from the HTTP body: routing key = the lane the header names, user_id =
                   ``Names.user(<certificate's system>)`` (so the processor checks that system against the signed
                   sender exactly as RabbitMQ's user_id: ``CERT_SIGNER_MISMATCH``), owner = its ``Submission``
    per lane, one batch at a time (up to 64; batches grow with the load while one is in I/O), the emergency lane
                   beside it on a connection of its own, through ``Worker.handle_urgent`` (normal batches pause)
    Worker.handle: examine → record (PostgreSQL: messages, deliveries, evidence) → sign → publish deliveries with
                   confirms → record_sent → "ack"

``Worker.handle`` publishes and settles through the transport it is given; here that is ``_Capturing``, which

- publishes everything for real (deliveries, parked copies, a second answer such as the blocked recipients' error),
  except the first hub.receipt / hub.error addressed to a waiting submission's system about its message: that one
  is kept — and becomes the HTTP response — only once the rest of the publish is confirmed;
- on ``ack`` resolves each submission: its answer (record committed, deliveries confirmed, answer recorded as sent);
- on ``nack`` (the broker took nothing, not even the retry copy) resolves it as failed: 503 with ``Retry-After``.

Transient failures keep the workers' semantics (``Worker._retry``, unchanged): the message goes to the retry queue
with back-off (later dead-lettered) and a pipeline worker finishes it; the submission then waits for that worker's
answer on the system's queue (the mailbox), as every submission did before, up to ``answer_timeout_s`` (503
``GATEWAY_TIMEOUT`` after it, the answer then an inbox item). Nothing the hub could not deliver is dropped.

A resend must be able to finish what an earlier attempt left (the gateway died after the record, or answered 503
after the record when the broker went away): every copy submitted over HTTPS is examined as one the hub may have held
before (``Incoming.redelivered``), so a copy of a message recorded with deliveries still to do completes them and is
answered ``accepted``; a copy of a message fully handled is answered ``duplicate`` (409) as before. Two copies of
the same message from the same system are never in flight here at once: the second waits for the first to finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from hub.errors import HubError
from hub.gateway.mailbox import Answer
from hub.pipeline.worker import Worker
from hub.transport.names import ORIGIN_USER_HEADER
from hub.transport.topology import Incoming, Outgoing

if TYPE_CHECKING:
    from hub.gateway.mailbox import Mailbox
    from hub.settings import Settings
    from hub.transport.abc import AbstractTransport

__all__ = ["Direct", "GatewayWorker", "Outcome", "Submission", "gone", "later", "to_inbox"]

log = logging.getLogger("hub.gateway")

#: The largest batch (the workers' too).
MAX_BATCH = 64
ANSWER_KINDS = frozenset({"receipt", "error"})


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a submission ended in the gateway's batch.

    ``answer``: the hub's signed answer (``answer``); ``deferred``: put on the retry queue, ``pending`` is the
    mailbox's future for a worker's answer; ``failed``: nothing could be handed over (``error``: 503, resend);
    ``none``: handled, with no answer for this submitter (a copy of a message answered before)."""

    kind: Literal["answer", "deferred", "failed", "parked", "none"]
    answer: Answer | None = None
    pending: asyncio.Future[Answer] | None = None
    error: HubError | None = None
    #: With ``answer``: the published form of the answer (where it goes if the client is no longer there for it).
    reply: Outgoing | None = None


@dataclass(eq=False, slots=True)
class Submission:
    system: str
    message_id: str
    msg: Incoming
    outcome: asyncio.Future[Outcome]
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    #: The captured answer, once the publish that held it was confirmed.
    reply: Outgoing | None = None
    #: Set by ``GatewayWorker._retry``: the transient failure, and the mailbox's future for the retried copy's answer.
    error: HubError | None = None
    pending: asyncio.Future[Answer] | None = None
    #: Parked in the dead-letter queue by the batch itself (a refusal with nobody to answer, over the CPU budget).
    parked: HubError | None = None

    @property
    def waiting(self) -> bool:
        """Whether the HTTP request still waits (its client did not go away)."""
        return not self.outcome.done()


class _Capturing:
    """The transport ``Worker.handle`` publishes and settles through in the gateway (see the module docstring)."""

    def __init__(self, real: AbstractTransport, direct: Direct) -> None:
        self.real = real
        self.names = real.names
        self.user = real.user
        self._direct = direct

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        keep: list[Outgoing] = []
        taken: list[tuple[Submission, Outgoing]] = []
        claimed: set[int] = set()
        parked: list[tuple[Submission, Outgoing]] = []
        for item in items:
            sub = self._direct.answerable(item)
            if sub is not None and id(sub) not in claimed:
                claimed.add(id(sub))
                taken.append((sub, item))
                continue
            keep.append(item)
            sub = self._direct.parked(item)
            if sub is not None:
                parked.append((sub, item))
        await self.real.publish_many(keep)  # raises: nothing is captured (Worker._retry takes over)
        for sub, item in taken:
            sub.reply = item
        for sub, item in parked:
            headers = item.headers
            sub.parked = HubError(str(headers.get("x-hub-error-reason", "")), code=str(headers["x-hub-error-code"]))

    async def ack(self, batch: Iterable[Incoming]) -> None:
        for m in batch:
            if not m.settled:
                m.settled = True
                self._direct.settle(m.owner)

    async def nack(self, batch: Iterable[Incoming], *, requeue: bool = True) -> None:
        for m in batch:
            if not m.settled:
                m.settled = True
                self._direct.fail(m.owner, None)


class GatewayWorker(Worker):
    """The pipeline worker's batch code in the gateway process: the context, store and hub key of a worker, no
    consumers (``open`` instead of ``start``). ``_retry`` first registers each submission's wait for the retried
    copy's answer, then does what every worker does."""

    #: How its log lines name it (a rotated hub key, a new directory version).
    label = "the gateway's examination"
    metrics_role = "gateway"
    metrics_index = 0  # as the gateway's heartbeat (its index -1 only keeps worker 0's housekeeping away)

    def __init__(self, settings: Settings, mailbox: Mailbox) -> None:
        super().__init__(settings, index=-1)  # not 0: worker 0's housekeeping stays with hub run's workers
        self.mailbox = mailbox
        #: Set by ``Direct``: takes submissions moved off the emergency lane into the gateway's own normal lane.
        self.to_normal_lane: Callable[[list[Incoming]], None] | None = None

    async def _move_to_normal_lane(self, move: list[Incoming]) -> None:
        """What a publisher sent over its emergency-lane quota is examined in the gateway's own normal lane, its
        client still waiting for the answer. Through the broker (as a worker moves it) a ``hub run`` worker would
        examine it, its answer would go to the inbox, and the client would be told its message was a duplicate."""
        if self.to_normal_lane is None:
            await super()._move_to_normal_lane(move)
            return
        self.to_normal_lane(move)
        self._moved(move)

    async def open(self, pool: Any, transport: _Capturing, urgent_transport: _Capturing) -> None:
        """Load what ``Worker.start`` loads (schemas, directory, routes, trust store, the hub key), on ``pool``;
        follow a rotated hub key as every worker does."""
        from hub.metrics import directory_taken
        from hub.pipeline.context import load_context
        from hub.pipeline.follow import starting_view
        from hub.pipeline.worker import HUB_KEY_EVERY_S
        from hub.store.batch import PgStore

        # before the directory: see Worker.start
        self.directory_version, self.routes_fingerprint = await starting_view(pool, self.settings)
        directory_taken(self.metrics_role, self.metrics_index, self.directory_version)
        ctx = self.context = await load_context(self.settings, pool)
        self.pool = pool
        self.trust_store = ctx.trust_store
        self.signer = ctx.signer
        self.directory = ctx.directory
        self.store = PgStore(pool)
        self.transport = transport  # type: ignore[assignment]
        self.urgent_transport = urgent_transport  # type: ignore[assignment]
        self.names = transport.names
        self.processor = ctx.processor(amqp_admin_user=transport.user, user_to_system=self.names.system_of_user)
        # Staged evidence is chained by hub run's workers (every worker tries, one at a time does it): the gateway
        # needs them anyway (the retry queue, the inbox), and chaining there keeps it off the requests' process.
        self._background.append(asyncio.create_task(self._every(HUB_KEY_EVERY_S, self._hub_key, "the hub key")))
        # The examination follows ``hub directory load`` as the gateway's client identification does
        # (hub.pipeline.follow): a system added there is examined, and routed to, without a restart.
        self._background.append(
            asyncio.create_task(
                self._every(self.settings.directory_refresh_s, self._directory, "following the directory")
            )
        )

    async def read_lanes_of(self, systems: Sequence[str]) -> None:
        """Nothing to read: the gateway's examination is handed its submissions, it consumes no lane."""

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        if hasattr(self, "store"):
            await self.store.close()

    async def _retry(
        self,
        batch: list[Incoming],
        exc: HubError,
        transport: AbstractTransport | None = None,
        items: Sequence[Any] = (),
    ) -> None:
        waiting = []
        for m in batch:
            sub = m.owner
            if isinstance(sub, Submission):
                sub.error = exc
                if sub.pending is None and sub.waiting:  # nobody to wait for: the answer goes to the inbox
                    waiting.append(sub)
        if waiting:  # before the retry copy exists: its answer cannot come first
            await self.expect_answers(waiting)
        await super()._retry(batch, exc, transport, items)

    async def expect_answers(self, subs: list[Submission]) -> None:
        """Register each submission's wait for its retried copy's answer (``sub.pending``) with the mailbox that
        will see it: this process's own; an examiner process asks the gateway's (``hub.gateway.examiner``)."""
        for sub in subs:
            sub.pending = self.mailbox.expect(sub.system, sub.message_id)


class _Lane:
    """Up to ``concurrency`` batches at a time (``GatewaySettings.batches``, default one, as the workers run):
    requests arriving while they run wait for the next one (up to ``MAX_BATCH`` each), so batches grow with the
    load and their fixed costs amortise."""

    def __init__(
        self, name: str, handle: Callable[[list[Incoming]], Awaitable[None]], direct: Direct, concurrency: int
    ) -> None:
        self.name = name
        self._handle = handle
        self._direct = direct
        self._concurrency = max(1, concurrency)
        self._buffer: list[Submission] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: When each batch being handled now began (``time.monotonic``), by the batch.
        self.running: dict[int, float] = {}

    def add(self, sub: Submission) -> None:
        self._buffer.append(sub)
        if len(self._tasks) < self._concurrency:
            task = asyncio.get_running_loop().create_task(self._drain())
            self._tasks.add(task)

    async def _drain(self) -> None:
        try:
            await self._drain_buffer()
        finally:  # at once, not in a done callback: a request added after the loop ended must start a new task
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]

    async def _drain_buffer(self) -> None:
        while self._buffer:
            batch = self._buffer[:MAX_BATCH]
            del self._buffer[:MAX_BATCH]
            msgs = [s.msg for s in batch]  # a submission moved to the normal lane has a new msg by the end
            self.running[id(msgs)] = time.monotonic()
            try:
                await self._handle(msgs)
            except Exception as exc:  # Worker.handle settles what it can; the rest is told to resend
                log.exception("gateway batch of %d failed (%s)", len(batch), type(exc).__name__)
            finally:
                del self.running[id(msgs)]
                for s, m in zip(batch, msgs, strict=True):
                    if not m.settled:
                        m.settled = True
                        self._direct.fail(s, None)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class Direct:
    """The gateway's in-process path: ``await direct.submit(system, body, message_id, lane, priority)``."""

    def __init__(
        self,
        settings: Settings,
        transport: AbstractTransport,
        urgent: AbstractTransport,
        mailbox: Mailbox,
        *,
        concurrency: int = 1,
        worker: GatewayWorker | None = None,
    ) -> None:
        self.settings = settings
        self.mailbox = mailbox
        self.worker = worker if worker is not None else GatewayWorker(settings, mailbox)
        self.transport = _Capturing(transport, self)
        self.urgent_transport = _Capturing(urgent, self)
        self.names = transport.names
        #: The submission in flight per (system, message id); a second copy waits for the first (``_queued``).
        self._active: dict[tuple[str, str], Submission] = {}
        self._queued: dict[tuple[str, str], Submission] = {}
        self._lanes = {
            "normal": _Lane("normal", self.worker.handle, self, concurrency),
            "emergency": _Lane("emergency", self.worker.handle_urgent, self, 1),
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self.worker.to_normal_lane = self._to_normal_lane

    async def open(self, pool: Any) -> None:
        await self.worker.open(pool, self.transport, self.urgent_transport)

    def oldest_batch_s(self) -> float:
        """How long the oldest batch being handled now has been at it (0 when none is): an examiner reports it, so
        that the gateway sees a batch stuck (on a database that hangs rather than fails) even after it answered the
        batch's clients 503 and cancelled their submissions."""
        started = [t for lane in self._lanes.values() for t in lane.running.values()]
        return time.monotonic() - min(started) if started else 0.0

    async def close(self) -> None:
        """Finish the batches in hand, then stop the worker's jobs (the connections are the caller's)."""
        for _ in range(2):  # the emergency lane may move submissions into the normal lane while it drains
            for name in ("emergency", "normal"):
                await self._lanes[name].drain()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.worker.close()

    # -- the request's side ------------------------------------------------------------------------------------

    async def submit(self, system: str, data: bytes, message_id: str, lane: str, priority: int) -> Outcome:
        names = self.names
        key = (system, message_id)
        msg = Incoming(
            body=data,
            routing_key=lane,
            exchange=names.inbound_exchange,
            headers={},
            message_id=message_id,
            user_id=names.user(system),  # the certificate's system, as RabbitMQ's user_id would name it
            priority=priority,
            redelivered=True,  # a resend may finish what an earlier attempt left (module docstring)
            queue=names.inbound_queue(lane),
            delivery_tag=0,
        )
        sub = Submission(system, message_id, msg, asyncio.get_running_loop().create_future())
        msg.owner = sub
        before = self._queued.get(key)
        self._queued[key] = sub
        added = False
        try:
            if before is not None:
                await before.finished.wait()
            self._active[key] = sub
            self._lanes[lane if lane in self._lanes else "normal"].add(sub)
            added = True
            return await sub.outcome
        except asyncio.CancelledError:
            if sub.outcome.done() and not sub.outcome.cancelled():  # settled in the pass the client went away in
                gone(sub.outcome.result(), sub.system, sub.message_id, self.mailbox, self._hand_over)
            raise
        finally:
            if not added:  # cancelled while waiting for the copy before it: copies after it still wait for that one
                if before is None or before.finished.is_set():
                    self._finish(sub)
                else:
                    self._later(self._finish_after(before, sub))

    # -- the batch's side ----------------------------------------------------------------------------------------

    def _to_normal_lane(self, move: list[Incoming]) -> None:
        """Submissions the emergency lane moved (over their publisher's quota) go into the normal lane here, each as
        the copy a worker would read from the broker (``moved_lane_of``: the hub's, remembering the lane it was sent
        in and its publisher, so it is examined under the rules of its own lane)."""
        from hub.transport.topology import moved_lane_of

        hub_user = self.urgent_transport.user
        for m in move:
            sub = m.owner
            m.settled = True  # nothing to settle with the broker: the copy below is the submission now
            if not isinstance(sub, Submission):  # pragma: no cover - every message here is a submission
                continue
            out = moved_lane_of(self.names, m, hub_user=hub_user)
            copy = Incoming(
                body=out.body,
                routing_key="normal",
                exchange=out.exchange,
                headers=out.headers,
                message_id=out.message_id,
                user_id=out.user_id,
                priority=out.priority,
                redelivered=True,
                queue=self.names.inbound_queue("normal"),
                delivery_tag=0,
                correlation_id=out.correlation_id,
            )
            copy.owner = sub
            sub.msg = copy
            self._lanes["normal"].add(sub)

    def answerable(self, item: Outgoing) -> Submission | None:
        """The waiting submission an answer published by the batch belongs to: a hub.receipt or hub.error to the
        submitting system (routing key) about its message (``x-hub-ref``), none captured yet."""
        if item.exchange != self.names.deliver_exchange:
            return None
        headers = item.headers
        if headers.get("x-hub-kind") not in ANSWER_KINDS:
            return None
        sub = self._active.get((item.routing_key, str(headers.get("x-hub-ref") or "")))
        if sub is None or sub.reply is not None or not sub.waiting or sub.msg.settled:
            return None
        return sub

    def parked(self, item: Outgoing) -> Submission | None:
        """The submission a dead-letter copy published by the batch (``dead_letter_of``) parks."""
        if item.exchange != self.names.dead_letter_exchange or "x-hub-error-code" not in item.headers:
            return None
        for sub in (self._active.get((system, item.message_id)) for system in self._systems_of(item)):
            if sub is not None and sub.msg.queue == item.headers.get("x-hub-original-queue"):
                return sub
        return None

    def _systems_of(self, item: Outgoing) -> list[str]:
        origin = self.names.system_of_user(str(item.headers.get(ORIGIN_USER_HEADER) or ""))
        return [origin] if origin else []

    def settle(self, sub: Any) -> None:
        """The batch acknowledged the submission: answered, deferred to the retry queue, or nothing to answer."""
        if not isinstance(sub, Submission):
            return
        if sub.pending is not None and sub.parked is not None:  # no retry left: dead-lettered for an operator
            self.mailbox.forget(sub.system, sub.message_id, sub.pending)
            outcome = Outcome("parked", error=sub.parked)
        elif sub.pending is not None:
            outcome = Outcome("deferred", pending=sub.pending, error=sub.error)
        elif sub.reply is not None:
            r = sub.reply
            outcome = Outcome("answer", answer=Answer(str(r.headers["x-hub-kind"]), r.body, r.message_id), reply=r)
        elif sub.parked is not None:
            outcome = Outcome("parked", error=sub.parked)
        else:
            outcome = Outcome("none")
        if not sub.outcome.done():
            sub.outcome.set_result(outcome)
        else:  # the client went away while its submission was examined
            gone(outcome, sub.system, sub.message_id, self.mailbox, self._hand_over)
        self._finish(sub)

    def fail(self, sub: Any, error: HubError | None) -> None:
        """Nothing of the submission could be handed over (the broker is gone): the client is told to resend."""
        if not isinstance(sub, Submission):
            return
        if sub.pending is not None:
            self.mailbox.forget(sub.system, sub.message_id, sub.pending)
        err = error or sub.error or HubError("the hub could not finish the message", code="DELIVERY_BROKER")
        if not sub.outcome.done():
            sub.outcome.set_result(Outcome("failed", error=err))
        self._finish(sub)

    def _finish(self, sub: Submission) -> None:
        key = (sub.system, sub.message_id)
        if self._active.get(key) is sub:
            del self._active[key]
        if self._queued.get(key) is sub:
            del self._queued[key]
        sub.finished.set()

    async def _finish_after(self, before: Submission, sub: Submission) -> None:
        await before.finished.wait()
        self._finish(sub)

    def _hand_over(self, reply: Outgoing) -> None:
        later(self._tasks, to_inbox(self.transport.real, reply))

    def _later(self, job: Any) -> None:
        later(self._tasks, job)


def gone(
    outcome: Outcome, system: str, message_id: str, mailbox: Mailbox, hand_over: Callable[[Outgoing], None]
) -> None:
    """The client of a submission went away after its ``outcome`` came (``Direct``, ``ExaminerPool``): its answer goes
    to its inbox — the one made (``hand_over``), or a worker's for the retried copy (the wait registered for it is
    forgotten, so the mailbox does not take that answer for a client nobody is)."""
    if outcome.kind == "answer" and outcome.reply is not None:
        hand_over(outcome.reply)
    elif outcome.pending is not None:
        mailbox.forget(system, message_id, outcome.pending)


async def to_inbox(transport: AbstractTransport, reply: Outgoing) -> None:
    """Publish an answer whose client went away: it goes to the system's inbox (a warning when it cannot)."""
    try:
        await transport.publish_many([reply])
    except HubError as exc:
        log.warning("an answer whose client went away could not go to its inbox (%s)", exc.code)


def later(tasks: set[asyncio.Task[Any]], job: Any) -> None:
    """Run ``job`` as a task kept in ``tasks`` until it ends (its owner's ``close`` waits for them)."""
    task = asyncio.get_running_loop().create_task(job)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
