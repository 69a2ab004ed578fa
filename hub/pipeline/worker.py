"""One pipeline worker process: consume the inbound lanes in batches, run the pure steps, record, deliver,
answer, acknowledge — in that order, so that a message is acknowledged only after its record, its deliveries and
its receipt are confirmed (ARCHITECTURE.md).

Per batch (up to 64 messages; one normal-lane batch at a time per worker, so batches grow with the load, and the
emergency lane beside it, on a connection of its own). The decisions are pure (``hub.pipeline.processor`` examines,
``hub.pipeline.decide`` says what to record and what to answer); the worker does the I/O around them, on a
``hub.transport.abc.AbstractTransport`` and a ``hub.store.abc.Store`` (the real ones, or their in-memory twins):

    examine each message (parse, validate, verify, route, gate)          pure, CPU
    record_batch: messages + deliveries + rejections + evidence          ONE PostgreSQL statement
      → for each message: new, or a duplicate (with what is still missing after a crash)
    sign deliveries and receipts (only for what is still to do)          pure, CPU
    publish_many: every delivery, receipt and error                      ONE confirm round trip
    record_sent: deliveries delivered, receipts sent + evidence          ONE PostgreSQL statement
    ack the whole batch                                                  ONE multiple-ack

A crash anywhere before the ack leaves the batch unacknowledged: RabbitMQ redelivers it, ``record_batch`` reports
the messages as duplicates with exactly the deliveries and receipt still missing, and the worker finishes those.
A recipient may therefore see a delivery twice, always with the same message id; nothing is lost.

Transient failures (PostgreSQL or RabbitMQ unavailable) put the batch on the retry queues with back-off; after the
last retry a message is dead-lettered with its reason, where an operator sees it.

Metrics (``hub.metrics``): a finished batch is counted once after its ack (outcomes, rejection codes, deliveries,
its latency for each of its messages, its size); a heartbeat task refreshes the process's gauge beside the batches.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hub.aio import cancelling, stopped
from hub.directory.model import REFUSAL_SERVICE
from hub.errors import DeliveryError, HubError
from hub.logs import flush as flush_logs
from hub.logs import log_decisions
from hub.metrics import DEFERRED, LANE_MOVED, count_batch, directory_taken, heartbeat
from hub.pipeline.decide import outgoing_of, plan_of, records_of, refusal_key, vouch_refusal
from hub.pipeline.lanes import LaneQuota, Standing
from hub.pipeline.processor import Accepted, Processor, Rejected
from hub.settings import Settings
from hub.store.records import ReceiptRecord, RecordOutcome
from hub.transport.topology import Incoming, Outgoing

if TYPE_CHECKING:
    from asyncpg import Pool

    from hub.pipeline.context import Context
    from hub.store.abc import Store, StoreBatch
    from hub.transport.abc import AbstractConsumer, AbstractTransport
    from hub.transport.names import Names

log = logging.getLogger("hub.pipeline")
decisions = logging.getLogger("hub.decision")

#: Evidence checkpoints: how often worker 0 seals the chain with a hub signature.
CHECKPOINT_EVERY_S = 60.0
#: How often worker 0 republishes CRLs that are due (they fail closed when stale).
CRL_CHECK_EVERY_S = 600.0
#: How often worker 0 checks whether the busy tables need the ANALYZE/VACUUM that autovacuum, when it is off,
#: does not do (hub/store/maintenance.py).
MAINTAIN_EVERY_S = 5.0
#: How often every worker looks whether the hub key was rotated (two stat calls).
HUB_KEY_EVERY_S = 2.0


#: How long a normal batch examines messages before it lets the event loop run (reading the emergency lane).
YIELD_EVERY_S = 0.005
#: The largest normal-lane batch.
NORMAL_BATCH = 64

#: The stages of a batch, as the decision lines' ``stages_ms`` names them: examine (parse, validate, verify,
#: route, gate: CPU), record (PostgreSQL), answer (delivery and receipt XML, signatures: CPU), publish (until the
#: broker confirmed), record_sent (PostgreSQL), ack.
_STAGES = ("examine", "record", "answer", "publish", "record_sent", "ack")


@dataclass(slots=True)
class _Item:
    msg: Incoming
    result: Accepted | Rejected
    outcome: RecordOutcome | None = None
    #: The hub held this copy before (redelivered after a crash, a retry, or a batch being re-run message by
    #: message): if the store finds it recorded, finish what is missing instead of answering "duplicate".
    resume: bool = False


class Worker:
    """Everything one worker process needs, loaded once: schemas, directory, routes, keys, connections."""

    #: Its ``role`` label in the metrics (``hub_directory_version``; the heartbeat's too).
    metrics_role = "worker"

    @property
    def metrics_index(self) -> int:
        """Its ``index`` label in the metrics."""
        return self.index

    def __init__(
        self,
        settings: Settings,
        index: int = 0,
        *,
        context: Context | None = None,
        transport: AbstractTransport | None = None,
        urgent_transport: AbstractTransport | None = None,
        store: Store | None = None,
    ) -> None:
        """``hub run`` gives only the settings: ``start`` connects to PostgreSQL and RabbitMQ and loads the context.
        Tests (and the SDK's test hub) give the context, both transports and the store (in-memory twins): the
        worker then runs the same decisions without a broker or a database, and without the background jobs."""
        self.settings = settings
        self.index = index
        self.stopping = asyncio.Event()
        self.processor: Processor
        self.context: Context
        self.names: Names
        self.store: Store
        self.transport: AbstractTransport
        #: The emergency lane's own AMQP connection (consume, publish, confirms): a socket of its own, so that an
        #: alert's delivery and its confirms never queue behind megabytes of normal traffic on a shared one.
        self.urgent_transport: AbstractTransport
        self._given = (context, transport, urgent_transport, store)
        self.pool: Pool | None = None
        self._consumers: list[AbstractConsumer] = []
        self._background: list[asyncio.Task[None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._last_crl = 0.0
        #: Emergency batches in this process right now; while there is one, normal batches pause their examination
        #: between two messages (an emergency never waits behind a normal batch's CPU work, README cost model).
        self._urgent = 0
        self._urgent_idle = asyncio.Event()
        self._urgent_idle.set()
        #: Each publisher's allowance of refusals in the emergency lane; past it, its messages are moved unread to the
        #: normal lane (hub.pipeline.lanes).
        self.lane_quota = LaneQuota()
        #: How many messages of each publisher a normal batch may take (``_share``): a flood of what the hub refuses
        #: is read at a bounded rate, a system whose messages are accepted in whole batches (hub.pipeline.lanes).
        self.standing = Standing(NORMAL_BATCH)
        self._lane_logged_at = float("-inf")
        self._stray_logged_at = float("-inf")
        self._lane_users: dict[str, str] = {}
        #: Every system's own inbound lane (both lanes) → its RabbitMQ user: what else is in it is a copy a ``CC`` or
        #: ``BCC`` header put there (``handle`` drops it: the message is in its publisher's own lane too).
        self._own_lanes: dict[str, str] = {}
        #: The stored directory's version this worker works with (hub.pipeline.follow; None: not followed).
        self.directory_version: int | None = None
        #: The routes files' fingerprint when it loaded them (hub.pipeline.follow.routes_fingerprint).
        self.routes_fingerprint: str | None = None
        #: The systems whose own inbound lanes this worker reads (at start, and those added while it ran).
        self._reading: set[str] = set()

    # ------------------------------------------------------------------ start-up

    async def start(self) -> None:
        from hub.pipeline.context import load_context
        from hub.store.batch import PgStore
        from hub.store.db import create_pool
        from hub.transport import Transport

        s = self.settings
        context, transport, urgent_transport, store = self._given
        if context is None or store is None:
            self.pool = await create_pool(s.pg_dsn, min_size=1, max_size=4, generic_plans=True)
        if self.pool is not None:  # read before the directory itself: a change in between is taken on the next look
            from hub.pipeline.follow import starting_view

            self.directory_version, self.routes_fingerprint = await starting_view(self.pool, s)
            directory_taken(self.metrics_role, self.metrics_index, self.directory_version)
        ctx = context or await load_context(s, self.pool)
        self.context = ctx
        self.trust_store = ctx.trust_store
        self.signer = ctx.signer
        self.directory = directory = ctx.directory
        self.store = store or PgStore(self.pool)
        self.transport = transport or await Transport.connect(s, client_name=f"hub-worker-{self.index}")
        names = self.names = self.transport.names
        self.processor = ctx.processor(amqp_admin_user=self.transport.user, user_to_system=names.system_of_user)
        await self.transport.declare_topology(sys.id for sys in directory.systems())
        self.urgent_transport = urgent_transport or await Transport.connect(
            s, client_name=f"hub-worker-{self.index}-emergency"
        )
        # The emergency lane has its own connection and prefetch: a backlog of normal traffic cannot delay it.
        # One normal batch at a time per worker: while it is in I/O the next batch fills up, so batches grow with
        # the load and per-batch costs (two PostgreSQL statements, one confirm round trip, one ack) amortise. With
        # three concurrent batches the e2e bench measured smaller batches, more CPU per message and a p99 of
        # 400 ms at 300 msg/s; with one, 161 ms (bench/e2e.py --quick).
        await self._read_lanes([sys.id for sys in directory.systems()], shared=True)
        # Deliveries their recipients put off (ns.later, an adapter's Retry, the gateway's release?after=), due again.
        self._consumers.append(
            await self.transport.consume(
                names.later_due_queue, self.handle_later, prefetch=64, max_batch=32, concurrency=1
            )
        )
        if self.pool is not None:
            # Deliveries that expired in a recipient's queue: their senders are told (hub.pipeline.expired).
            self._consumers.append(
                await self.transport.consume(
                    names.expired_queue, self.handle_expired, prefetch=32, max_batch=16, concurrency=1
                )
            )
        self._heartbeat = asyncio.create_task(heartbeat("worker", self.index, pool=self.pool))
        if self.pool is not None:  # the background jobs work on PostgreSQL and the PKI directory
            from hub.store.evidence import CHAIN_EVERY_S

            jobs = [
                (CHAIN_EVERY_S, self._chain, "chaining evidence"),
                (HUB_KEY_EVERY_S, self._hub_key, "the hub key"),
                (s.directory_refresh_s, self._directory, "following the directory"),
            ]
            if self.index == 0:
                jobs += [
                    (CHECKPOINT_EVERY_S, self._housekeep, "housekeeping"),
                    (MAINTAIN_EVERY_S, self._maintain, "table maintenance"),
                ]
            self._background += [asyncio.create_task(self._every(*job)) for job in jobs]
        log.info("worker %d ready", self.index, extra={"systems": len(list(directory.systems()))})

    @property
    def pki_dir(self) -> Path:
        return self.context.pki_dir

    async def stop(self) -> None:
        """Stop consuming, finish the batches in hand, close connections."""
        for c in self._consumers:
            await c.stop(drain=True)
        await stopped(*self._background)  # ended before the connections close (re-cancelled: hub.aio)
        if self._heartbeat is not None:  # ended before stop returns: the heartbeat says "stopped" (0)
            await stopped(self._heartbeat)  # re-cancelled until it ends (hub.aio)
            self._heartbeat = None
        for transport in (getattr(self, "urgent_transport", None), getattr(self, "transport", None)):
            if transport is not None:
                await transport.close()
        if hasattr(self, "store"):
            await self.store.close()
        if self.pool is not None:
            await self.pool.close()

    async def _every(self, seconds: float, job: Any, what: str) -> None:
        """Run ``job()`` every ``seconds`` until cancelled; a failure is logged and tried again next time."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except HubError as exc:
                if cancelling():  # stopped during the job: the error is what its cancellation became
                    raise asyncio.CancelledError from None
                log.warning("%s failed: %s", what, exc.describe())

    async def _chain(self) -> None:
        """Move staged evidence into the hash chain (every worker tries; one at a time does it)."""
        from hub.store.evidence import chain_pending

        await chain_pending(self.pool)

    async def _hub_key(self) -> None:
        """Switch to a key rotated by ``hub pki rotate`` without a restart; expiry warnings (hub.trust.lifecycle)."""
        from hub.trust.lifecycle import follow_hub_key

        follow_hub_key(self)

    async def _directory(self) -> None:
        """Take a directory applied since this worker loaded its own, without a restart (hub.pipeline.follow)."""
        from hub.pipeline.follow import follow_directory

        await follow_directory(self)

    async def read_lanes_of(self, systems: Sequence[str]) -> None:
        """Start reading the inbound lanes of ``systems``, added to the directory while this worker ran (their
        queues are declared): consumers of their own, with the settings of the lanes read at start."""
        await self._read_lanes(systems, shared=False)

    async def _read_lanes(self, systems: Sequence[str], *, shared: bool) -> None:
        """A consumer of the emergency lanes and one of the normal lanes of ``systems`` (``shared``: and the shared
        lanes ``<ns>.in.emergency`` / ``<ns>.in.normal``)."""
        systems = [x for x in systems if x not in self._reading]  # a system removed and added again: read already
        if not systems and not shared:
            return
        self._reading.update(systems)
        names, s = self.names, self.settings
        # Every system has its own inbound lanes (ns.in.<lane>.<system>, hub.transport.names); a consumer reads the
        # shared lane and all of them in turn, so one system's flood never stands in front of another's message.
        #: Each system's own normal lane → its RabbitMQ user (the publisher ``_share`` asks the standing of).
        self._lane_users.update({names.system_inbound_queue("normal", x): names.user(x) for x in systems})
        self._own_lanes.update({q: names.user(x) for x in systems for q in names.system_inbound_queues(x)})
        own = {lane: [names.system_inbound_queue(lane, x) for x in systems] for lane in ("emergency", "normal")}
        first = {lane: [names.inbound_queue(lane)] if shared else [] for lane in ("emergency", "normal")}
        self._consumers.append(
            await self.urgent_transport.consume(
                [*first["emergency"], *own["emergency"]], self.handle_urgent, prefetch=32, max_batch=16
            )
        )
        # Consumer priorities (worker 0 highest): the broker hands normal traffic to the first worker until its
        # prefetch window is full, and only then to the next. At a moderate rate one worker takes it all in batches
        # twice as large as round-robin would give each of two, and a batch's fixed costs (two PostgreSQL
        # statements, a confirm round trip, an ack) are what dominate there: at 300 msg/s the e2e bench measured
        # the hub's CPU at 62 % of a core instead of 85 %. A backlog still fills every worker's window. The
        # emergency lane stays round-robin: an urgent message goes to whichever worker is free.
        self._consumers.append(
            await self.transport.consume(
                [*first["normal"], *own["normal"]],
                self.handle,
                prefetch=s.prefetch,
                max_batch=NORMAL_BATCH,
                concurrency=1,
                priority=-self.index,
                share=self._share,
            )
        )

    async def _maintain(self) -> None:
        from hub.store.maintenance import maintain

        await maintain(self.pool)

    async def _housekeep(self) -> None:
        """Seal the evidence chain with a signed checkpoint; republish CRLs that are due."""
        from hub.commands.trust_admin import refresh_crls_if_due
        from hub.store.anchors import anchor_checkpoint
        from hub.store.evidence import checkpoint

        seq = await checkpoint(self.pool, self.signer.sign_bytes, self.signer.identity.fingerprint)
        try:  # outside the database: what a rewrite of the chain cannot take back (hub.store.anchors)
            await anchor_checkpoint(self.pool, self.settings.state_dir, seq)
        except OSError as exc:
            log.warning(
                "锚定检查点失败 could not anchor evidence checkpoint %s in %s/evidence (%s): the chain stays sealed by "
                "the checkpoint; fix the state directory's disk or permissions",
                seq,
                self.settings.state_dir,
                exc.strerror or type(exc).__name__,
            )
        if time.monotonic() - self._last_crl > CRL_CHECK_EVERY_S:
            await refresh_crls_if_due(self.settings, self.pki_dir)
            self._last_crl = time.monotonic()

    # ------------------------------------------------------------------ the batch

    async def handle_urgent(self, batch: list[Incoming]) -> None:
        """An emergency-lane batch: normal batches in this process pause their examination until it is done. What
        a publisher sent over its quota is moved unread to the normal lane afterwards (``hub.pipeline.lanes``)."""
        keep, move = self._split_by_lane_quota(batch)
        if keep:
            self._urgent += 1
            self._urgent_idle.clear()
            try:
                await self.handle(keep, urgent=True)
            finally:
                self._urgent -= 1
                if not self._urgent:
                    self._urgent_idle.set()
        if move:
            await self._move_to_normal_lane(move)

    def _split_by_lane_quota(self, batch: list[Incoming]) -> tuple[list[Incoming], list[Incoming]]:
        """(read in the lane, moved): a publisher without a token left (its messages the lane refused used them up) has
        its messages moved. The hub's own messages are never moved."""
        hub_user = self.urgent_transport.user
        quota = self.lane_quota
        keep: list[Incoming] = []
        move: list[Incoming] = []
        for m in batch:
            publisher = m.publisher(hub_user)
            if publisher is None and m.user_id is not None and m.user_id == hub_user:
                keep.append(m)  # the hub's own (the process engine's)
            elif quota.allows(publisher or ""):
                keep.append(m)
            else:
                move.append(m)
        return keep, move

    async def _move_to_normal_lane(self, move: list[Incoming]) -> None:
        """Publish ``move`` to the normal lane (``moved_lane_of``) on the normal lane's connection — a flood's moves
        never share a connection, and the broker's flow control, with the alerts' deliveries — then acknowledge
        them; if the broker is away they go back to the emergency lane."""
        from hub.transport.topology import moved_lane_of

        hub_user = self.urgent_transport.user
        try:
            await self.transport.publish_many([moved_lane_of(self.names, m, hub_user=hub_user) for m in move])
        except DeliveryError:
            await self.urgent_transport.nack(move, requeue=True)
            return
        await self.urgent_transport.ack(move)
        self._moved(move)

    def _moved(self, move: list[Incoming]) -> None:
        """Count what was moved off the emergency lane; a flood is one warning every 10 s, with the totals so far."""
        LANE_MOVED.inc(len(move))
        now = time.monotonic()
        if now - self._lane_logged_at >= 10.0:  # a flood is one line every 10 s, with the totals so far
            self._lane_logged_at = now
            moved = sorted(self.lane_quota.moved.items(), key=lambda kv: -kv[1])[:5]
            log.warning(
                "emergency lane: messages over their publisher's quota moved to the normal lane (so far: %s)",
                ", ".join(f"{p or '?'} {n}" for p, n in moved),
                extra={"moved_so_far": dict(moved)},
            )

    def _count_standing(self, items: list[_Item], hub_user: str) -> None:
        counts: dict[str, list[int]] = {}
        for it in items:
            publisher = it.msg.publisher(hub_user)
            if publisher is not None and publisher != hub_user:
                c = counts.setdefault(publisher, [0, 0])
                c[isinstance(it.result, Rejected)] += 1
        for publisher, (accepted, refused) in counts.items():
            self.standing.count(publisher, accepted, refused)

    def _share(self, queue: str) -> int:
        """How many messages of ``queue`` one normal batch takes at most: a whole batch from the shared lane (the
        hub's own copies), from a system's own lane its standing (0 while it is in debt: its messages wait in its
        queue, ``hub.pipeline.lanes``)."""
        user = self._lane_users.get(queue)
        return NORMAL_BATCH if user is None else self.standing.share(user)

    async def handle(self, batch: list[Incoming], *, resume: bool = False, urgent: bool = False) -> None:
        started = time.perf_counter()
        self.trust_store.refresh_if_due()
        transport = self.urgent_transport if urgent else self.transport
        hub_user = transport.user
        own = self._own_lanes
        strays = [m for m in batch if (u := own.get(m.queue)) is not None and m.publisher(hub_user) != u]
        if strays:
            batch = await self._drop_strays(batch, strays, transport, hub_user)
            if not batch:
                return
        examine = self.processor.examine
        clock = time.perf_counter
        items: list[_Item] = []
        yielded = started
        for m in batch:
            if not urgent:
                if self._urgent:
                    await self._urgent_idle.wait()  # an emergency batch first
                    yielded = clock()
                elif clock() - yielded > YIELD_EVERY_S:
                    # Let the loop read the emergency lane's deliveries: its batch then starts, and this one waits.
                    await asyncio.sleep(0)
                    yielded = clock()
            items.append(
                _Item(
                    m,
                    examine(m.body, amqp_user=m.publisher(hub_user), lane=m.lane(hub_user)),
                    resume=resume or m.redelivered or m.attempt > 0,
                )
            )
        # Refusals of a delivery (routed to any system: routes/refusals.routes.xml) go on only when the store vouches
        # for them (``_vouch_refusals``); every other message pays this one comparison.
        refusals = [
            i
            for i, it in enumerate(items)
            if type(it.result) is Accepted and it.result.envelope.service == REFUSAL_SERVICE
        ]
        marks = [clock()]  # the end of each stage, for the decision lines' stages_ms
        try:
            async with self.store.batch() as store:
                if refusals:
                    await self._vouch_refusals(store, items, refusals)
                # What the hub refused costs its publisher: a token of the emergency lane's quota, or standing in the
                # normal lanes, which what it accepted earns (hub.pipeline.lanes).
                if urgent:
                    for it in items:
                        if isinstance(it.result, Rejected):
                            self.lane_quota.charge(it.msg.publisher(hub_user) or "")
                else:
                    self._count_standing(items, hub_user)
                records, owners, rejections = records_of([(it.result, it.msg.user_id) for it in items])
                for i, outcome in zip(owners, await store.record(records, rejections), strict=True):
                    items[i].outcome = outcome
                marks.append(clock())
                outgoing, delivered, receipts, n_deliveries = self._answers(items)
                marks.append(clock())
                await transport.publish_many(outgoing)
                marks.append(clock())
                await store.record_sent(delivered, receipts)
                marks.append(clock())
        except DeliveryError as exc:
            await self._retry(batch, exc, transport, items)
            return
        except Exception as exc:
            # Not an outage: a bug or a broken invariant (e.g. the egress check refusing what the gate allowed).
            # Isolate the message that causes it (one by one: what the batch already recorded comes back as
            # duplicates with the work still to do), then retry it with back-off and finally dead-letter it where
            # an operator sees it. Never a requeue loop, never a lost message.
            if len(batch) > 1:
                log.warning("batch of %d failed (%s); handling its messages one by one", len(batch), type(exc).__name__)
                for m in batch:
                    await self.handle([m], resume=True, urgent=urgent)
                return
            log.exception("message failed (%s); deferring it", type(exc).__name__)
            await self._retry(
                batch, HubError(f"internal error ({type(exc).__name__})", code="INTERNAL"), transport, items
            )
            return
        await transport.ack(batch)
        marks.append(clock())
        elapsed_ms = (marks[-1] - started) * 1000
        # Where the batch's time went (ms): a slow batch names its stage (PostgreSQL, the broker, the CPU).
        begins = [started, *marks[:-1]]  # each stage begins where the one before it ended
        stages = {name: round((b - a) * 1000, 2) for name, a, b in zip(_STAGES, begins, marks, strict=True)}
        lines = [self._decision(it, elapsed_ms, stages) for it in items]
        log_decisions(decisions, lines)
        flush_logs()
        outcomes: dict[str, int] = {}
        codes: dict[str, int] = {}
        for decision, fields in lines:
            outcomes[decision] = outcomes.get(decision, 0) + 1
            if decision == "rejected":
                codes[fields["code"]] = codes.get(fields["code"], 0) + 1
        count_batch(outcomes, codes, n_deliveries, len(items), marks[-1] - started)

    async def _drop_strays(
        self, batch: list[Incoming], strays: list[Incoming], transport: AbstractTransport, hub_user: str
    ) -> list[Incoming]:
        """Acknowledge the copies in one system's own inbound lane that another system published (RabbitMQ routes a
        message by the keys of its ``CC`` and ``BCC`` headers too, which no topic permission checks: a system could
        fill another's lane and stand in front of its messages, hub.transport.names). Never examined, never lost:
        the routing key, which the permission does check, put the message in its publisher's own lane as well, and
        the hub takes it from there. Returns the rest of the batch."""
        await transport.ack(strays)
        now = time.monotonic()
        if now - self._stray_logged_at > 60:
            self._stray_logged_at = now
            log.warning(
                "%d copies in other systems' inbound lanes dropped (a CC or BCC header of their publisher: %s); each "
                "message is taken from its publisher's own lane",
                len(strays),
                ", ".join(sorted({str(m.publisher(hub_user)) for m in strays}))[:300],
            )
        return [m for m in batch if m not in strays]

    @staticmethod
    async def _vouch_refusals(store: StoreBatch, items: list[_Item], refusals: Sequence[int]) -> None:
        """Turn each accepted ``delivery.refusal`` of ``items`` (at the indices ``refusals``) that the store does not
        vouch for into a refusal of its own (``REFUSAL_UNRELATED``, ``hub.pipeline.decide.vouch_refusal``): its
        OriginalMessageId was never delivered to its signed sender, or it goes elsewhere than to that message's
        original sender. ONE store query for all of them; a store failure is the batch's (retried)."""
        keys = {key for i in refusals if (key := refusal_key(cast(Accepted, items[i].result))) is not None}
        found = await store.delivered_from(sorted(keys)) if keys else {}
        for i in refusals:
            refused = vouch_refusal(cast(Accepted, items[i].result), found)
            if refused is not None:
                items[i].result = refused

    def _answers(self, items: Sequence[_Item]) -> tuple[list[Outgoing], list[str], list[ReceiptRecord], int]:
        """What the batch publishes, which messages' deliveries it sends, the answers it records as sent, and how
        many deliveries it publishes: the plan of each message (``hub.pipeline.decide.plan_of``, pure), its signed
        bytes, its outgoing messages."""
        n_deliveries = 0
        out: list[Outgoing] = []
        delivered: list[str] = []
        receipts: list[ReceiptRecord] = []
        render, names = self.processor.render, self.names
        for it in items:
            plan = plan_of(it.result, it.outcome, resume=it.resume)
            if plan.empty:
                continue
            published, delivers, answered = outgoing_of(
                plan, it.result, render(plan, it.result), it.msg, names, hub_user=self.transport.user
            )
            out += published
            receipts += answered
            if delivers:
                delivered.append(cast(Accepted, it.result).envelope.message_id)
                n_deliveries += len(plan.deliver)
        return out, delivered, receipts, n_deliveries

    async def handle_later(self, batch: list[Incoming]) -> None:
        """Deliveries whose recipient put them off (``ns.later.due``): each goes back into the queue of the system
        RabbitMQ names as the one that put it off (``Incoming.publisher``: its own user, or the gateway's
        ``x-hub-origin-user`` beside the hub's user) — never where a routing key or a header it set points — at its
        priority, with its TTL worked out again from the envelope's ``Expires`` (the broker drops a message's TTL
        when it dead-letters it). One whose envelope expired while it waited is not delivered: it is parked in
        ``ns.dead`` (``DELIVERY_EXPIRED``, where an operator can send it again, marked ``x-hub-expired-for``) and its
        sender is told (by the workers' reading of ``ns.expired``, as for one that expires in a queue; once a delivery,
        ``_tell_expired``). It must verify as the hub's own delivery. Only the hub's own headers (``x-hub-*``) go with
        it: a ``CC`` or ``BCC`` the system set would route the hub's copy into other queues too. One that does not
        verify, or that no system put off, or whose system has no queue the hub reads, is parked in ``ns.dead`` with
        the reason. Acknowledged once what it became is confirmed; with the broker away the batch goes back to the
        queue after a pause."""
        from datetime import UTC, datetime

        from hub.pipeline.client import open_hub_signed
        from hub.pipeline.outgoing import expiration_of
        from hub.transport.names import EXPIRED_FOR_HEADER, ORIGIN_USER_HEADER
        from hub.transport.topology import dead_letter_of

        names, hub_user = self.names, self.transport.user
        again: list[Outgoing] = []
        parked: list[Outgoing] = []

        def park(m: Incoming, code: str, why: str, expired_for: str | None = None) -> None:
            letter = dead_letter_of(names, m, code=code, reason=why, hub_user=hub_user)  # (never the system's mark)
            if expired_for is not None:
                letter.headers = {**letter.headers, EXPIRED_FOR_HEADER: expired_for}
            parked.append(letter)

        for m in batch:
            system = names.system_of_user(m.publisher(hub_user))
            if system is not None and system not in self._reading:
                park(m, "DELIVERY_UNROUTABLE", f"put off by {system}, which has no queue the hub reads for")
                continue
            if system is None:
                park(m, "DELIVERY_LATER_UNATTRIBUTED", "put off by no system (no user_id of a system's user)")
                continue
            try:
                env = open_hub_signed(self.settings, self.processor.verifier, self.processor.registry, m.body).envelope
            except HubError as exc:
                park(m, exc.code, f"a delivery {system} put off does not verify as the hub's: {exc.detail}")
                continue
            if env.expires <= datetime.now(UTC):
                why = f"the delivery to {system} expired at {env.expires.isoformat()} while it was put off"
                park(m, "DELIVERY_EXPIRED", why, expired_for=system)
                continue
            priority = min(max(m.priority, 0), 9)  # set by the system: it orders only its own queue
            headers = {
                k: v
                for k, v in m.headers.items()
                if k.startswith("x-hub-") and k not in (ORIGIN_USER_HEADER, EXPIRED_FOR_HEADER)
            }
            out = Outgoing(
                exchange=names.deliver_exchange,
                routing_key=names.delivery_key(system, priority),
                body=m.body,
                headers=headers,
                priority=priority,
                message_id=env.message_id,
                correlation_id=m.correlation_id,
                expiration=expiration_of(env.expires),
            )
            again.append(out)
        try:
            await self.transport.publish_many(again + parked)
        except DeliveryError as exc:  # the broker away: all of it again after a pause (copies are recognised)
            log.warning("put-off deliveries deferred: %s", exc.describe())
            await asyncio.sleep(1.0)
            await self.transport.nack(batch, requeue=True)
            return
        if parked:
            log.warning("%d put-off deliveries parked in the dead-letter queue", len(parked))
        await self.transport.ack(batch)

    async def handle_expired(self, batch: list[Incoming]) -> None:
        """Copies of dead letters (``ns.expired``): for each delivery that expired in a recipient's queue, verified as
        the hub's own, the delivery is recorded failed with ``DELIVERY_EXPIRED`` and its sender gets a signed
        hub.error; every other copy is only acknowledged (``ns.dead`` keeps the letters). If the store or the
        broker is away the batch goes back to the queue; on any other failure it is acknowledged and logged (the
        letters stay in ``ns.dead`` for an operator)."""
        try:
            await self._answer_expired(batch)
        except DeliveryError as exc:
            log.warning("expired deliveries deferred: %s", exc.describe())
            await asyncio.sleep(1.0)  # the store or the broker away: not straight back (a loop at full speed)
            await self.transport.nack(batch, requeue=True)
            return
        except Exception:
            log.exception("expired deliveries could not be answered; the letters stay in the dead-letter queue")
        await self.transport.ack(batch)

    async def _answer_expired(self, batch: list[Incoming]) -> None:
        from hub.pipeline.client import open_hub_signed
        from hub.pipeline.expired import expired_delivery

        pool = self.pool
        assert pool is not None
        processor = self.processor
        expired: list[tuple[Any, str]] = []  # (the delivery's signed envelope, the recipient whose queue it left)
        for m in batch:
            item = expired_delivery(self.names, m, self.transport.user)
            if item is None:
                continue
            try:
                env = open_hub_signed(self.settings, processor.verifier, processor.registry, m.body).envelope
            except HubError as exc:
                log.warning(
                    "an expired delivery in the queue of %s does not verify as the hub's (%s); its sender is not told",
                    item.recipient_system,
                    exc.code,
                )
                continue
            expired.append((env, item.recipient_system))
        await self._tell_expired(expired)

    async def _tell_expired(self, expired: list[tuple[Any, str]]) -> None:
        """Record each (hub-signed delivery envelope, recipient system) failed with ``DELIVERY_EXPIRED`` and send its
        sender a signed hub.error."""
        from hub.pipeline import outgoing
        from hub.pipeline.expired import DeliveryExpired
        from hub.store.db import translated
        from hub.store.messages import record_sent, update_delivery_states
        from hub.store.records import DeliveryUpdate

        pool = self.pool
        assert pool is not None
        processor = self.processor
        if not expired:
            return
        # Once a delivery, and only one its recipient never took: a system can put the same hub-signed delivery off
        # again and again (or one it handled long ago) — each copy would have had the hub tell the sender again.
        async with translated("reading expired deliveries' messages"):
            rows = await pool.fetch(
                "SELECT d.message_id::text AS id, d.recipient_system AS system, d.state, d.error_code,"
                " encode(m.raw_sha256, 'hex') AS digest FROM deliveries d JOIN messages m USING (message_id)"
                " WHERE d.message_id = ANY($1::uuid[])",
                sorted({env.message_id for env, _ in expired}),
            )
        digests = {r["id"]: r["digest"] for r in rows}
        untold = {
            (r["id"], r["system"])
            for r in rows
            if r["error_code"] != "DELIVERY_EXPIRED" and r["state"] in ("pending", "failed", "delivered")
        }
        told: set[tuple[str, str]] = set()
        fresh = []
        for env, system in expired:
            key = (env.message_id.lower(), system)
            if key not in told and (key in untold or key[0] not in digests):  # (not in the store: said below)
                told.add(key)
                fresh.append((env, system))
        expired = fresh
        answers: list[Outgoing] = []
        receipts: list[ReceiptRecord] = []
        updates: list[DeliveryUpdate] = []
        for env, system in expired:
            digest = digests.get(env.message_id.lower())
            if digest is None:  # signed by the hub but not in this store (another installation's): nobody to tell
                log.warning("an expired delivery of %s is not in the store; its sender is not told", env.message_id)
                continue
            err = DeliveryExpired(
                f"the delivery to {system} expired at {env.expires.isoformat()} before that system took it from its "
                "queue; it waits in the hub's dead-letter queue, where an operator can send it again",
                code="DELIVERY_EXPIRED",
            )
            eid, ebytes = processor.error(err, env, env.sender, digest)
            answers.append(outgoing.reply(self.names, env.sender.system, eid, ebytes, kind="error", about=env))
            receipts.append(ReceiptRecord(eid, env.message_id, "hub.error", env.sender.system, code="DELIVERY_EXPIRED"))
            updates.append(DeliveryUpdate(env.message_id, system, "failed", actor="hub", error_code="DELIVERY_EXPIRED"))
        if not answers:
            return
        await update_delivery_states(pool, updates)
        await self.transport.publish_many(answers)
        await record_sent(pool, [], receipts)
        log.warning(
            "%d delivery(ies) expired before the recipient took them; their senders were told (DELIVERY_EXPIRED)",
            len(answers),
            extra={"deliveries": [f"{u.message_id}→{u.recipient_system}" for u in updates][:20]},
        )

    async def _retry(
        self,
        batch: list[Incoming],
        exc: HubError,
        transport: AbstractTransport | None = None,
        items: Sequence[_Item] = (),
    ) -> None:
        from hub.transport.topology import dead_letter_of, retry_of

        transport = transport or self.transport
        log.warning("batch of %d deferred: %s", len(batch), exc.describe())
        again: list[Outgoing] = []
        routed = {id(it.msg): it.result.envelope for it in items if isinstance(it.result, Accepted)}
        for m in batch:
            retry = self.processor.router.retry_for(routed.get(id(m)))  # the route's Retry; refused: the defaults
            o = retry_of(self.names, m, hub_user=transport.user, retry=retry)
            again.append(
                o
                if o is not None
                else dead_letter_of(self.names, m, code=exc.code, reason=exc.detail[:500], hub_user=transport.user)
            )
        try:
            await transport.publish_many(again)
        except DeliveryError:
            # The broker itself is gone: leave the batch unacknowledged; RabbitMQ redelivers it.
            await transport.nack(batch, requeue=True)
            return
        await transport.ack(batch)
        DEFERRED.inc(len(batch))

    # ------------------------------------------------------------------ logs

    @staticmethod
    def _decision(it: _Item, elapsed_ms: float, stages: dict[str, float]) -> tuple[str, dict[str, Any]]:
        """The decision line of one message: (decision, structured fields)."""
        r, o = it.result, it.outcome
        env = r.envelope
        extra: dict[str, Any] = {"batch_ms": round(elapsed_ms, 2), "lane": it.msg.routing_key, "stages_ms": stages}
        if env is not None:
            extra.update(
                message_id=env.message_id,
                conversation_id=env.conversation_id,
                service=env.service_id,
                sender=str(env.sender),
                classification=env.classification,
            )
        if isinstance(r, Accepted):
            decision = (
                "duplicate" if o is not None and o.duplicate else ("quarantined" if r.quarantined else "accepted")
            )
            extra["recipients"] = [d.system for d in r.deliveries]
            if r.blocked:
                extra["blocked"] = [d.system for d, _ in r.blocked]
            return decision, {"decision": decision, **extra}
        extra.update(decision="rejected", code=r.error.code)
        if env is None:
            extra["amqp_user"] = it.msg.user_id
        return "rejected", extra


#: Allocations between two young-generation collections (CPython's default: 700). A batch allocates tens of
#: thousands of short-lived objects that reference counting frees; at 700 the collector ran every ten messages and
#: cost 12 µs a message (2 % of the worker), at 10,000 it costs 2.7 µs, each pass still well under a millisecond.
GC_THRESHOLDS = (10_000, 10, 10)


def settle_memory() -> None:
    """After start-up: everything loaded (schemas, directory, keys, modules) lives as long as the process, so it is
    moved out of the collector's view — a full collection then walks only what batches allocate (one took 30–40 ms
    before, a pause every message in flight waits for) — and young collections run less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _die_with_parent() -> None:
    """Linux: ask the kernel to send SIGTERM when the supervisor dies, however it dies (even SIGKILL), so that no
    worker outlives it and keeps consuming unsupervised. Elsewhere the worker's parent watch covers it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def ignore_hangup() -> None:
    """SIGHUP does not end this process (its default action): ``hub run``'s supervisor passes the reload signal on to
    its children, and only the gateway acts on it (its server certificate, ``hub.gateway.server``); ``systemctl
    kill -s HUP`` reaches every process of the unit."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    import os

    while not stop.is_set():
        if os.getppid() != parent:
            log.error("the supervisor (pid %d) is gone; stopping", parent)
            stop.set()
            return
        await asyncio.sleep(1.0)


def _run(main: Any) -> None:
    """Run the worker's event loop: uvloop's where it is installed (libuv; the same asyncio API, less CPU per
    socket read and callback — the workers spend a quarter of their time in AMQP frames and the loop), else
    asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(main)
        return
    uvloop.run(main)


def worker_main(settings: Settings, index: int, supervisor: int | None = None) -> None:
    """Entry point of a worker process (spawned by the supervisor, whose pid it is given)."""
    import os

    from hub import logs

    _die_with_parent()
    ignore_hangup()
    parent = supervisor if supervisor is not None else os.getppid()
    if os.getppid() != parent:  # the supervisor died while this process was starting
        return
    logs.setup(batched=True)
    if settings.amqp_fast:  # the process-wide frame reader: hub run's workers only (never CLIs or clients)
        from hub.transport._aiormq_fast import install_reader

        install_reader()

    async def main() -> None:
        worker = Worker(settings, index)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await worker.start()
        settle_memory()
        watch = asyncio.create_task(_watch_parent(parent, stop))
        await stop.wait()
        watch.cancel()
        log.info("worker %d stopping", index)
        await worker.stop()

    try:
        _run(main())
    except HubError as exc:
        log.error("worker %d cannot run: %s", index, exc.describe())
        raise SystemExit(2) from None
