"""One pipeline worker process: consume the inbound lanes in batches, run the pure steps, record, deliver,
answer, acknowledge — in that order, so that a message is acknowledged only after its record, its deliveries and
its receipt are confirmed (ARCHITECTURE.md).

Per batch (up to 64 messages; one normal-lane batch at a time per worker, so batches grow with the load, and the
emergency lane beside it):

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
from typing import Any

from hub.errors import DeliveryError, HubError
from hub.logs import flush as flush_logs
from hub.logs import log_decisions
from hub.pipeline import outgoing
from hub.pipeline.processor import Accepted, Processor, Rejected
from hub.settings import Settings
from hub.store.records import MessageRecord, ReceiptRecord, RecordOutcome, Rejection
from hub.transport.topology import Incoming, Outgoing

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

    def __init__(self, settings: Settings, index: int = 0) -> None:
        self.settings = settings
        self.index = index
        self.stopping = asyncio.Event()
        self.processor: Processor
        self.transport: Any = None
        #: The emergency lane's own AMQP connection (consume, publish, confirms): a socket of its own, so that an
        #: alert's delivery and its confirms never queue behind megabytes of normal traffic on a shared one.
        self.urgent_transport: Any = None
        self.pool: Any = None
        self._consumers: list[Any] = []
        self._background: list[asyncio.Task[None]] = []
        self._last_crl = 0.0
        #: Connections the batches hold between them (one per batch in flight, normally one per lane): taking one
        #: from the pool and giving it back costs 40 µs a statement here, two statements a batch.
        self._spare_connections: list[Any] = []
        #: Emergency batches in this process right now; while there is one, normal batches pause their examination
        #: between two messages (an emergency never waits behind a normal batch's CPU work, README cost model).
        self._urgent = 0
        self._urgent_idle = asyncio.Event()
        self._urgent_idle.set()

    # ------------------------------------------------------------------ start-up

    async def start(self) -> None:
        from hub.pipeline.context import load_context
        from hub.store.db import create_pool
        from hub.transport import Transport

        s = self.settings
        self.pool = await create_pool(s.pg_dsn, min_size=1, max_size=4, generic_plans=True)
        ctx = await load_context(s, self.pool)
        self.context = ctx
        self.trust_store = ctx.trust_store
        self.signer = ctx.signer
        self.directory = directory = ctx.directory
        self.transport = await Transport.connect(s, client_name=f"hub-worker-{self.index}")
        names = self.names = self.transport.names
        self.processor = ctx.processor(amqp_admin_user=self.transport.user, user_to_system=names.system_of_user)
        await self.transport.declare_topology(sys.id for sys in directory.systems())
        self.urgent_transport = await Transport.connect(s, client_name=f"hub-worker-{self.index}-emergency")
        # The emergency lane has its own connection and prefetch: a backlog of normal traffic cannot delay it.
        # One normal batch at a time per worker: while it is in I/O the next batch fills up, so batches grow with
        # the load and per-batch costs (two PostgreSQL statements, one confirm round trip, one ack) amortise. With
        # three concurrent batches the e2e bench measured smaller batches, more CPU per message and a p99 of
        # 400 ms at 300 msg/s; with one, 161 ms (bench/e2e.py --quick).
        self._consumers.append(
            await self.urgent_transport.consume(
                names.inbound_queue("emergency"), self.handle_urgent, prefetch=32, max_batch=16
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
                names.inbound_queue("normal"),
                self.handle,
                prefetch=s.prefetch,
                max_batch=64,
                concurrency=1,
                priority=-self.index,
            )
        )
        from hub.store.evidence import CHAIN_EVERY_S

        jobs = [(CHAIN_EVERY_S, self._chain, "chaining evidence"), (HUB_KEY_EVERY_S, self._hub_key, "the hub key")]
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
        for t in self._background:
            t.cancel()
        if self.urgent_transport is not None:
            await self.urgent_transport.close()
        if self.transport is not None:
            await self.transport.close()
        if self.pool is not None:
            while self._spare_connections:
                await self.pool.release(self._spare_connections.pop())
            await self.pool.close()

    async def _connection(self) -> Any:
        """A PostgreSQL connection for one batch: a spare one (unless the server has closed it since), else one
        from the pool."""
        while self._spare_connections:
            conn = self._spare_connections.pop()
            if not conn.is_closed():
                return conn
            await self.pool.release(conn)
        from hub.store.db import translated

        async with translated("connecting"):
            return await self.pool.acquire()

    async def _give_back(self, conn: Any, *, healthy: bool) -> None:
        """Keep a connection for the next batch; one that saw a failure goes back to the pool, which replaces it
        when it is broken."""
        if healthy and not conn.is_closed():
            self._spare_connections.append(conn)
        else:
            await self.pool.release(conn)

    async def _every(self, seconds: float, job: Any, what: str) -> None:
        """Run ``job()`` every ``seconds`` until cancelled; a failure is logged and tried again next time."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except HubError as exc:
                log.warning("%s failed: %s", what, exc.describe())

    async def _chain(self) -> None:
        """Move staged evidence into the hash chain (every worker tries; one at a time does it)."""
        from hub.store.evidence import chain_pending

        await chain_pending(self.pool)

    async def _hub_key(self) -> None:
        """Switch to a key rotated by ``hub pki rotate`` without a restart; expiry warnings (hub.trust.lifecycle)."""
        from hub.trust.lifecycle import follow_hub_key

        follow_hub_key(self)

    async def _maintain(self) -> None:
        from hub.store.maintenance import maintain

        await maintain(self.pool)

    async def _housekeep(self) -> None:
        """Seal the evidence chain with a signed checkpoint; republish CRLs that are due."""
        from hub.store.evidence import checkpoint
        from hub.trust.admin import refresh_crls_if_due

        await checkpoint(self.pool, self.signer.sign_bytes, self.signer.identity.fingerprint)
        if time.monotonic() - self._last_crl > CRL_CHECK_EVERY_S:
            await refresh_crls_if_due(self.settings, self.pki_dir)
            self._last_crl = time.monotonic()

    # ------------------------------------------------------------------ the batch

    async def handle_urgent(self, batch: list[Incoming]) -> None:
        """An emergency-lane batch: normal batches in this process pause their examination until it is done."""
        self._urgent += 1
        self._urgent_idle.clear()
        try:
            await self.handle(batch, urgent=True)
        finally:
            self._urgent -= 1
            if not self._urgent:
                self._urgent_idle.set()

    async def handle(self, batch: list[Incoming], *, resume: bool = False, urgent: bool = False) -> None:
        started = time.perf_counter()
        self.trust_store.refresh_if_due()
        transport = self.urgent_transport if urgent else self.transport
        hub_user = transport.user
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
                    examine(m.body, amqp_user=m.publisher(hub_user), lane=m.routing_key),
                    resume=resume or m.redelivered or m.attempt > 0,
                )
            )
        marks = [clock()]  # the end of each stage, for the decision lines' stages_ms
        try:
            conn = await self._connection()
            try:
                await self._record(items, conn)
                marks.append(clock())
                outgoing, delivered, receipts = self._answers(items)
                marks.append(clock())
                await transport.publish_many(outgoing)
                marks.append(clock())
                await self._record_sent(delivered, receipts, conn)
                marks.append(clock())
            except BaseException:
                await self._give_back(conn, healthy=False)
                raise
            await self._give_back(conn, healthy=True)
        except DeliveryError as exc:
            await self._retry(batch, exc, transport)
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
            await self._retry(batch, HubError(f"internal error ({type(exc).__name__})", code="INTERNAL"), transport)
            return
        await transport.ack(batch)
        marks.append(clock())
        elapsed_ms = (marks[-1] - started) * 1000
        # Where the batch's time went (ms): a slow batch names its stage (PostgreSQL, the broker, the CPU).
        begins = [started, *marks[:-1]]  # each stage begins where the one before it ended
        stages = {name: round((b - a) * 1000, 2) for name, a, b in zip(_STAGES, begins, marks, strict=True)}
        log_decisions(decisions, [self._decision(it, elapsed_ms, stages) for it in items])
        flush_logs()

    async def _record(self, items: Sequence[_Item], conn: Any) -> None:
        from hub.store.messages import record_batch

        records: list[MessageRecord] = []
        owners: list[_Item] = []
        rejections: list[Rejection] = []
        for it in items:
            r = it.result
            if isinstance(r, Accepted):
                records.append(_message_record(r))
                owners.append(it)
            elif r.envelope is not None and r.sender_confirmed:
                # Signed by its sender, published by its sender, but refused: it occupies its message id (a replay
                # is recognised). A refusal before that (bad signature, someone else's message) never does.
                records.append(_rejected_record(r))
                owners.append(it)
            else:
                rejections.append(_rejection(r, it.msg))
        outcomes = await record_batch(conn, records, rejections)
        for it, outcome in zip(owners, outcomes, strict=True):
            it.outcome = outcome

    def _answers(self, items: Sequence[_Item]) -> tuple[list[Outgoing], list[str], list[ReceiptRecord]]:
        out: list[Outgoing] = []
        delivered: list[str] = []
        receipts: list[ReceiptRecord] = []
        p = self.processor
        for it in items:
            r, o = it.result, it.outcome
            if o is not None and o.in_batch:
                continue  # a second copy in the same batch: the first carries the work
            if isinstance(r, Accepted):
                assert o is not None
                sender = r.envelope.sender.system
                if o.duplicate:
                    if o.state == "released":
                        r.markings = []  # an operator released it: deliver what is still pending
                    elif o.state != "accepted":
                        # Quarantined, or refused before: answer again only if the sender never got an answer.
                        if o.needs_receipt and o.state == "quarantined":
                            r.deliveries = []
                            p.finish(r)
                            out.append(self._reply(sender, r.receipt_id, r.receipt_bytes, r, "receipt"))
                            receipts.append(ReceiptRecord(r.receipt_id, r.envelope.message_id, "hub.receipt", sender))
                        continue
                    # Finish what is missing only for a copy the hub itself held before — redelivered by RabbitMQ
                    # after a worker died, or put back by a retry. A fresh second copy from the sender may meet the
                    # first one still in flight in another worker (recorded, not yet published): that worker
                    # finishes its own work, and this copy is only answered "duplicate" — delivered once.
                    resume = it.resume
                    pending = set(o.to_deliver) if resume else set()
                    r.deliveries = [d for d in r.deliveries if d.system in pending]
                    r.blocked = []  # the sender was told about blocked recipients the first time
                    if not r.deliveries and not (o.needs_receipt and resume):
                        # Fully handled before: delivered once; tell the sender it was a duplicate.
                        r.receipt_id, r.receipt_bytes = p.receipt(r, "duplicate")
                        out.append(self._reply(sender, r.receipt_id, r.receipt_bytes, r, "receipt"))
                        continue
                elif r.quarantined:
                    r.deliveries = []  # held for a person; delivered only when released
                p.finish(r)
                for d in r.deliveries:
                    out.append(self._delivery(r, d))
                if r.deliveries:
                    delivered.append(r.envelope.message_id)
                if not o.duplicate or o.needs_receipt:  # (a duplicate gets here only when resuming)
                    out.append(self._reply(sender, r.receipt_id, r.receipt_bytes, r, "receipt"))
                    receipts.append(ReceiptRecord(r.receipt_id, r.envelope.message_id, "hub.receipt", sender))
                if r.error_bytes:
                    out.append(self._reply(sender, r.error_id, r.error_bytes, r, "error"))
                    receipts.append(
                        ReceiptRecord(r.error_id, r.envelope.message_id, "hub.error", sender, code=r.blocked[0][1].code)
                    )
            else:
                if o is not None and o.duplicate and not o.needs_receipt:
                    continue  # a replay of a refused message already answered
                p.error_for(r)
                if r.error_bytes and r.reply_to is not None:
                    out.append(self._reply(r.reply_to.system, r.error_id, r.error_bytes, r, "error", it.msg.message_id))
                    receipts.append(
                        ReceiptRecord(r.error_id, r.message_id, "hub.error", r.reply_to.system, code=r.error.code)
                    )
                    if r.error.code == "MSG_COST_EXCEEDED":
                        out.append(self._dead_letter(it.msg, r.error))  # parked for an operator as well
                else:
                    out.append(self._dead_letter(it.msg, r.error))
        return out, delivered, receipts

    async def _record_sent(self, delivered: list[str], receipts: list[ReceiptRecord], conn: Any) -> None:
        from hub.store.messages import record_sent

        await record_sent(conn, delivered, receipts)

    # ------------------------------------------------------------------ outgoing messages

    def _delivery(self, acc: Accepted, d: Any) -> Outgoing:
        return outgoing.delivery(
            self.names,
            acc.envelope,
            acc.delivery_bytes,
            system=d.system,
            role=d.role,
            zone=d.zone,
            ceiling=d.ceiling,
            priority=acc.priority,
        )

    def _reply(
        self,
        system: str,
        message_id: str,
        body: bytes,
        about: Accepted | Rejected,
        kind: str,
        claimed_id: str | None = None,
    ) -> Outgoing:
        return outgoing.reply(
            self.names, system, message_id, body, kind=kind, about=about.envelope, claimed_id=claimed_id
        )

    def _dead_letter(self, msg: Incoming, error: HubError) -> Outgoing:
        from hub.transport.topology import dead_letter_of

        return dead_letter_of(self.names, msg, code=error.code, reason=error.detail[:500])

    async def _retry(self, batch: list[Incoming], exc: HubError, transport: Any = None) -> None:
        from hub.transport.topology import dead_letter_of, retry_of

        transport = transport or self.transport
        log.warning("batch of %d deferred: %s", len(batch), exc.describe())
        again: list[Outgoing] = []
        for m in batch:
            o = retry_of(self.names, m, hub_user=transport.user)
            again.append(o if o is not None else dead_letter_of(self.names, m, code=exc.code, reason=exc.detail[:500]))
        try:
            await transport.publish_many(again)
        except DeliveryError:
            # The broker itself is gone: leave the batch unacknowledged; RabbitMQ redelivers it.
            await transport.nack(batch, requeue=True)
            return
        await transport.ack(batch)

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


def _message_record(acc: Accepted) -> MessageRecord:
    from hub.store.records import DeliveryRecord

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


def _rejected_record(rej: Rejected) -> MessageRecord:
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


def _rejection(rej: Rejected, msg: Incoming) -> Rejection:
    return Rejection(
        raw=rej.data,
        error_code=rej.error.code,
        error_reason=rej.error.detail[:1000],
        amqp_user=msg.user_id,
        claimed_sender=rej.reply_to.system if rej.reply_to is not None else None,
        digest=rej.digest,
        received_at=rej.received_at,
    )


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
