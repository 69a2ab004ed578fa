"""The process engine: what follows messages after delivery (issue 14). Off the message path.

The pipeline records every accepted message in PostgreSQL and stages a ``received`` record (``released`` for a
quarantined message an operator let through) in the evidence chain. The chain gives those records a gapless ``seq``
in commit order, so the engine reads them with a cursor per process (``process_cursor``) and hands each message of
a followed service to each process exactly once — no message-path cost, nothing missed, nothing handed over twice:

    feed     evidence seq > cursor  →  Process.on_message(tx, msg)  →  cursor := seq   (one transaction a process)
    timers   process_timers due     →  Process.on_timer(tx, timer)  →  fired_at := now (one transaction)
    outbox   process_outbox unpublished → the inbound exchange (confirmed) → published_at := now

Everything a process decides (its own state, new timers, messages to send, alarms) is written through the ``Tx`` it
is given, inside the transaction that moves the cursor or fires the timer. A crash (SIGKILL) before the commit rolls
all of it back and the same message or timer is handed over again; after it, nothing is handed over again. Engines
on several hub instances share the work safely: a process's cursor row is taken ``FOR UPDATE SKIP LOCKED`` (one
engine reads a process's feed at a time), timers ``FOR UPDATE SKIP LOCKED`` (each due timer to one engine), outbox
rows likewise.

What a process sends is a hub-signed envelope (sender: the directory's ``hub-system``) put into the inbound exchange:
the pipeline examines, routes (routes with ``<From><Hub/></From>``), records and delivers it like any message, so
it is in the evidence chain, on the ops page and tracked per recipient. Its message id is derived from the process
and a key the process chooses (``Tx.send(key=…)``): a timer that fires again after a crash sends the same id, which
the pipeline answers as a duplicate — never a second delivery.

Time: processes judge deadlines by ``Tx.now``, the engine's clock (``clock``, default ``hub.clock.now``); a test
moves it (``ProcessEngine(clock=…)``, or ``hub processes run --clock-file F`` for an engine in another process).
Envelopes are dated by the real clock (the pipeline refuses messages dated in the future).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lxml import etree

from hub import clock as hub_clock
from hub.envelope.model import NOTICE_NS, NOTICE_SERVICE, Envelope, Party, Recipient, build, to_bytes
from hub.store.db import fetch_planned_now

if TYPE_CHECKING:
    import asyncpg

    from hub.pipeline.context import Context
    from hub.transport.abc import AbstractTransport

__all__ = [
    "CN_TZ",
    "Delivery",
    "FedMessage",
    "Process",
    "ProcessEngine",
    "Timer",
    "Tx",
    "file_clock",
    "process_id",
]

log = logging.getLogger("hub.processes")

CN_TZ = timezone(timedelta(hours=8))
#: The namespace of the ids of what processes send: uuid5(PROCESS_NS, "<process>/<key>").
PROCESS_NS = uuid.UUID("5b0c6e8e-2f55-4a39-9a43-6f1f3c0e7d21")
#: Evidence kinds that mean "the pipeline recorded this message for delivery".
FED_KINDS = ("received", "released")


def process_id(process: str, key: str) -> str:
    """The message id a process's send with ``key`` gets (the same on every engine, before and after a crash)."""
    return str(uuid.uuid5(PROCESS_NS, f"{process}/{key}"))


def file_clock(path: Path) -> Callable[[], datetime]:
    """A clock for tests that drive an engine in another process: the time written in ``path`` (ISO 8601 with a
    zone), read on every call; the real time while the file does not exist."""

    def now() -> datetime:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return datetime.now(UTC)
        return datetime.fromisoformat(text).astimezone(UTC)

    return now


@dataclass(frozen=True, slots=True)
class Delivery:
    """One recipient of a recorded message (a ``deliveries`` row)."""

    recipient_system: str
    recipient_agency: str
    role: str
    state: str
    delivered_at: datetime | None
    received_at: datetime | None
    read_at: datetime | None
    handled_at: datetime | None
    feedback_at: datetime | None


@dataclass(slots=True)
class FedMessage:
    """A message the pipeline accepted, as the feed hands it to a process (its header fields; the signed bytes are
    read only when a process asks: ``await tx.envelope(msg)``)."""

    seq: int
    message_id: str
    service: str
    version: int
    sender_agency: str
    sender_system: str
    urgency: str
    classification: str
    created: datetime
    received_at: datetime
    conversation_id: str | None
    ref_to: str | None
    business_ref: str | None
    _envelope: Envelope | None = field(default=None, repr=False)

    @property
    def sender(self) -> Party:
        return Party(self.sender_agency, self.sender_system)

    @classmethod
    def of_row(cls, row: Any, seq: int | None = None) -> FedMessage:
        """From a ``messages`` row with the feed's columns (``_FEED``: ``classification_label`` as
        ``classification``); ``seq`` the evidence record's (the row's own ``seq`` unless given)."""
        return cls(
            seq=row["seq"] if seq is None else seq,
            message_id=row["message_id"],
            service=row["service"],
            version=row["version"],
            sender_agency=row["sender_agency"],
            sender_system=row["sender_system"],
            urgency=row["urgency"],
            classification=row["classification_label"],
            created=row["created"],
            received_at=row["received_at"],
            conversation_id=row["conversation_id"],
            ref_to=row["ref_to"],
            business_ref=row["business_ref"],
        )


@dataclass(frozen=True, slots=True)
class Timer:
    id: int
    process: str
    kind: str
    key: str
    due_at: datetime
    data: dict[str, Any]


class Process(Protocol):
    """What a process implements. ``services``: the services whose accepted messages it is handed.

    A step's effects are what it writes through its ``Tx`` (rolled back with the step when it fails); a step may be
    run again after a rollback (a crash, or another step of the same lot failing), so it keeps nothing in memory
    that matters. The directory is ``tx.directory``; a process that keeps something of the directory or the routes
    may define ``follow(context)``, called when the engine takes a new directory
    (``ProcessEngine.follow_directory``)."""

    name: str
    services: frozenset[str]

    async def on_message(self, tx: Tx, msg: FedMessage) -> None: ...

    async def on_timer(self, tx: Tx, timer: Timer) -> None: ...


class Tx:
    """What one process may do inside the engine's transaction: its own tables through ``conn`` (same transaction),
    timers, sends, alarms. ``now`` is the engine's clock at the start of the step."""

    def __init__(self, engine: ProcessEngine, conn: asyncpg.Connection, process: str, now: datetime) -> None:
        self.engine = engine
        self.conn = conn
        self.process = process
        self.now = now
        self.sent: list[str] = []

    @property
    def directory(self) -> Any:
        return self.engine.context.directory

    # ------------------------------------------------------------------ reading

    async def envelope(self, msg: FedMessage) -> Envelope:
        """The message's signed envelope (parsed safely from the bytes the pipeline recorded; cached on ``msg``).
        The pipeline verified these bytes before it recorded them."""
        if msg._envelope is None:
            from hub.envelope.intake import parse

            raw = await self.conn.fetchval("SELECT raw FROM messages WHERE message_id = $1", uuid.UUID(msg.message_id))
            if raw is None:
                raise LookupError(f"message {msg.message_id} is not in the store")
            root = parse(bytes(raw), max_bytes=max(self.engine.max_bytes, len(raw)))
            msg._envelope = Envelope.from_tree(root)
        return msg._envelope

    async def deliveries(self, message_id: str) -> list[Delivery]:
        """The recipients of a recorded message, with their tracking states."""
        rows = await self.conn.fetch(
            "SELECT recipient_system, recipient_agency, role, state, delivered_at, received_at, read_at, handled_at,"
            " feedback_at FROM deliveries WHERE message_id = $1 ORDER BY recipient_system",
            uuid.UUID(message_id),
        )
        return [Delivery(**dict(r)) for r in rows]

    # ------------------------------------------------------------------ timers

    async def schedule(self, kind: str, key: str, due_at: datetime, data: dict[str, Any] | None = None) -> None:
        """Arm (or re-arm at a new time) the timer ``(kind, key)`` of this process."""
        await self.conn.execute(
            "INSERT INTO process_timers (process, kind, key, due_at, data) VALUES ($1, $2, $3, $4, $5::jsonb)"
            " ON CONFLICT (process, kind, key) DO UPDATE SET due_at = EXCLUDED.due_at, data = EXCLUDED.data,"
            " fired_at = NULL",
            self.process,
            kind,
            key,
            due_at,
            json.dumps(data or {}, ensure_ascii=False),
        )

    async def cancel(self, kind: str, key: str) -> bool:
        """Disarm a timer that has not fired; True when there was one."""
        status = await self.conn.execute(
            "DELETE FROM process_timers WHERE process = $1 AND kind = $2 AND key = $3 AND fired_at IS NULL",
            self.process,
            kind,
            key,
        )
        return status != "DELETE 0"

    # ------------------------------------------------------------------ sending

    async def send(
        self,
        service: str,
        recipients: Sequence[Recipient],
        body: etree._Element,
        *,
        key: str,
        urgency: str = "平件",
        classification: str = "公开",
        ttl: timedelta = timedelta(days=7),
        ref_to: str | None = None,
        conversation_id: str | None = None,
        business_ref: str | None = None,
        lane: str | None = None,
        version: int = 1,
    ) -> str:
        """Queue a hub-signed message (made, validated and signed now; published after the commit). ``key`` names
        it within this process: the same key is the same message id (a repeat is a duplicate, not a second
        delivery). Returns its message id."""
        from hub.transport import lane_for

        message_id = process_id(self.process, key)
        ident = self.engine.context.signer.identity
        created = datetime.now(CN_TZ)
        root = build(
            service=service,
            version=version,
            sender=Party(ident.agency, ident.system),
            recipients=recipients,
            body=body,
            classification=classification,
            urgency=urgency,
            created=created,
            expires=created + ttl,
            message_id=message_id,
            conversation_id=conversation_id,
            ref_to=ref_to,
            business_ref=business_ref,
        )
        self.engine.context.registry.validate(root)  # a process's mistake shows here, not as the pipeline's refusal
        self.engine.context.signer.sign(root)
        data = to_bytes(root)
        await self.conn.execute(
            "INSERT INTO process_outbox (message_id, process, service, lane, body, created_at)"
            " VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (message_id) DO NOTHING",
            uuid.UUID(message_id),
            self.process,
            service,
            lane or lane_for(service, urgency),
            data,
        )
        self.sent.append(message_id)
        return message_id

    async def notice(
        self,
        recipients: Sequence[Recipient],
        *,
        kind: str,
        title: str,
        text: str,
        key: str,
        refers_to: str | None = None,
        case_ref: str | None = None,
        deadline: datetime | None = None,
        outstanding: Iterable[tuple[str, str, str | None, str | None]] = (),
        urgency: str = "加急",
        lane: str | None = None,
        conversation_id: str | None = None,
    ) -> str:
        """Send a ``hub.notice`` (schemas/services/hub.notice/1): ``outstanding`` lists (agency code, system id,
        name or None, state or None) of those who have not yet acted."""
        body = notice_body(
            kind=kind,
            title=title,
            text=text,
            refers_to=refers_to,
            case_ref=case_ref,
            deadline=deadline,
            outstanding=outstanding,
            at=datetime.now(CN_TZ),
        )
        return await self.send(
            NOTICE_SERVICE,
            recipients,
            body,
            key=key,
            urgency=urgency,
            ref_to=refers_to,
            conversation_id=conversation_id or refers_to,
            lane=lane,
        )

    # ------------------------------------------------------------------ alarms

    async def alarm(self, code: str, ref: str, title: str, detail: str) -> None:
        """Raise (or refresh) the open alarm ``(code, ref)`` of this process for the people on duty."""
        await self.conn.execute(
            "INSERT INTO process_alarms (process, code, ref, title, detail, raised_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $6)"
            " ON CONFLICT (process, code, ref) WHERE cleared_at IS NULL"
            " DO UPDATE SET title = EXCLUDED.title, detail = EXCLUDED.detail, updated_at = EXCLUDED.updated_at",
            self.process,
            code,
            ref,
            title,
            detail,
            self.now,
        )

    async def clear_alarm(self, code: str, ref: str, by: str = "process") -> bool:
        status = await self.conn.execute(
            "UPDATE process_alarms SET cleared_at = $4, cleared_by = $5"
            " WHERE process = $1 AND code = $2 AND ref = $3 AND cleared_at IS NULL",
            self.process,
            code,
            ref,
            self.now,
            by,
        )
        return status != "UPDATE 0"


def notice_body(
    *,
    kind: str,
    title: str,
    text: str,
    at: datetime,
    refers_to: str | None = None,
    case_ref: str | None = None,
    deadline: datetime | None = None,
    outstanding: Iterable[tuple[str, str, str | None, str | None]] = (),
) -> etree._Element:
    """The body element of a hub.notice."""

    def q(local: str) -> str:
        return f"{{{NOTICE_NS}}}{local}"

    root = etree.Element(q("HubNotice"), nsmap={"n": NOTICE_NS})
    etree.SubElement(root, q("Kind")).text = kind
    etree.SubElement(root, q("Title")).text = title[:200]
    etree.SubElement(root, q("Text")).text = text[:2000]
    if refers_to:
        etree.SubElement(root, q("RefersTo")).text = refers_to
    if case_ref:
        etree.SubElement(root, q("CaseRef")).text = case_ref[:200]
    if deadline is not None:
        etree.SubElement(root, q("Deadline")).text = _iso(deadline)
    parties = list(outstanding)[:500]
    if parties:
        out = etree.SubElement(root, q("Outstanding"))
        for agency, system, name, state in parties:
            p = etree.SubElement(out, q("Party"))
            etree.SubElement(p, q("AgencyCode")).text = agency
            etree.SubElement(p, q("System")).text = system
            if name:
                etree.SubElement(p, q("Name")).text = name[:200]
            if state:
                etree.SubElement(p, q("State")).text = state[:200]
    etree.SubElement(root, q("At")).text = _iso(at)
    return root


def _iso(t: datetime) -> str:
    return t.astimezone(CN_TZ).isoformat(timespec="seconds")


def _transient(exc: BaseException) -> bool:
    """A failure of the database or the broker (not of the step's logic): the step must run again, not be skipped."""
    import asyncpg

    from hub.errors import HubError

    if isinstance(exc, HubError):
        return bool(getattr(exc, "transient", False))
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.exceptions.QueryCanceledError
        | asyncpg.exceptions.InsufficientResourcesError
        | asyncpg.exceptions.DeadlockDetectedError
        | asyncpg.exceptions.SerializationError
        | asyncpg.InterfaceError
        | ConnectionError
        | TimeoutError,
    )


#: The next chained messages of a process's services: a window at the end of the evidence chain, read with a plan made
#: for it (``fetch_planned_now``). Under a plan cached on a new installation's few rows it was a nested loop of two
#: whole-table scans (tests/integration/test_plan_shapes.py: 188,490 rows handled for a window of 30 at 3,000
#: messages).
_FEED = """
SELECT e.seq, m.message_id::text AS message_id, m.service, m.version, m.sender_agency, m.sender_system, m.urgency,
       m.classification_label, m.created, m.received_at, m.conversation_id::text AS conversation_id,
       m.ref_to::text AS ref_to, m.business_ref
FROM evidence e JOIN messages m ON m.message_id = e.message_id
WHERE e.seq > $1 AND e.seq <= $2 AND e.kind = ANY($3::text[]) AND m.service = ANY($4::text[])
ORDER BY e.seq
LIMIT $5
"""

#: The due timers and the unpublished outbox rows: the few rows of a partial index, beside a history that only grows
#: (fired timers, published messages). Under a generic plan made while the tables were small, each engine pass (every
#: half second) read the whole history: 20,020 rows handled at 20,000 fired timers, the same at 20,000 published
#: messages (tests/integration/test_plan_shapes.py). Planned for the present on each pass (``fetch_planned_now``):
#: about 20 rows.
_DUE_TIMERS = """
SELECT id, process, kind, key, due_at, data FROM process_timers
WHERE fired_at IS NULL AND due_at <= $1 AND process = ANY($3::text[])
ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
"""
_UNPUBLISHED = """
SELECT message_id::text AS message_id, lane, body, service FROM process_outbox
WHERE published_at IS NULL ORDER BY lane <> 'emergency', created_at LIMIT $1 FOR UPDATE SKIP LOCKED
"""


#: The alarm of an edit the running hub could not take (``ProcessEngine._config_alarm``), by what was edited.
CONFIG_NOT_TAKEN = "CONFIG_NOT_TAKEN"
_CONFIG_TITLE = {
    "directory-routes": "新载入的目录或修改后的路由文件无法使用，枢纽沿用原目录和路由",
    "process-files": "修改后的流程配置文件无法使用，流程沿用原配置",
}


class ProcessEngine:
    """Runs the processes: feed, timers, outbox. ``run_once`` does one pass of each (tests call it with a moved
    clock); ``run`` loops until stopped."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        context: Context,
        processes: Sequence[Process],
        *,
        transport: AbstractTransport | None = None,
        clock: Callable[[], datetime] | None = None,
        max_bytes: int | None = None,
        directory_version: int | None = None,
    ) -> None:
        self.pool = pool
        self.context = context
        #: The stored directory's version ``context`` was loaded from (``hub.pipeline.follow.directory_version``, read
        #: before it); None: unknown, the first look in ``run`` loads the stored one again.
        self.directory_version = directory_version
        #: The routes files' fingerprint when they were loaded (``hub.pipeline.follow.routes_fingerprint``; None: the
        #: routes files are compared only when the directory changes).
        self.routes_fingerprint: str | None = None
        #: The processes' own files and their fingerprint when the processes were made
        #: (``hub.processes.runner.ProcessFiles``; None: not followed).
        self.files: Any = None
        self.files_fingerprint: str | None = None
        #: The refs of this engine's open CONFIG_NOT_TAKEN alarms (``_config_alarm``).
        self._config_alarms: set[str] = set()
        self.processes = list(processes)
        self.transport = transport
        self.clock = clock or hub_clock.now
        self.max_bytes = max_bytes or context.settings.max_message_bytes
        self._by_name = {p.name: p for p in self.processes}
        self.wake = asyncio.Event()
        #: Messages a process is handed at most per window (``run_once`` reads on while a window comes back full).
        self.feed_limit = 500

    # ------------------------------------------------------------------ one pass

    async def run_once(self) -> dict[str, int]:
        """One pass: the feed (until it is read), due timers (until none is due), the outbox. Returns counts."""
        fed = fired = 0
        while True:  # a window that came back full: more waited behind it; else the feed is read to its head
            n, more = await self.feed_once(self.feed_limit)
            fed += n
            if not more:
                break
        while (n := await self.timers_once()) > 0:
            fired += n
        published = await self.publish_once() if self.transport is not None else 0
        return {"fed": fed, "fired": fired, "published": published}

    async def feed_once(self, limit: int = 500) -> tuple[int, bool]:
        """Hand the next chained messages of each process's services to it: how many were handed over (0: nothing
        new, or other engines hold the feed of every process right now), and whether a process's window came back
        full (more of its messages wait behind it). ``run_once`` reads on only then: what the workers chain meanwhile
        waits for the next pass (``run``: ``interval`` later) instead of a pass each for a few messages, which under
        a steady load kept the engine going round with windows of a batch or two — its queries and PostgreSQL's work
        on them a second process's worth of CPU beside the workers on the message path."""
        from hub.store.evidence import chain_pending

        if not self.processes:
            return 0, False
        # What is staged but not yet chained is not in the feed yet (wait for a chainer at work: its records too).
        await chain_pending(self.pool, wait=True)
        handed, more = 0, False
        for p in self.processes:
            n = await self._feed(p, limit)
            handed += n
            more = more or n >= limit
        if handed:
            self.wake.set()
        return handed, more

    async def _feed(self, p: Process, limit: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO process_cursor (process) VALUES ($1) ON CONFLICT DO NOTHING", p.name)
            cursor = await conn.fetchval(
                "SELECT seq FROM process_cursor WHERE process = $1 FOR UPDATE SKIP LOCKED", p.name
            )
            if cursor is None:  # another engine reads this process's feed right now
                return 0
            head = await conn.fetchval("SELECT seq FROM evidence_head")
            if head is None or head <= cursor:
                return 0
            rows = await fetch_planned_now(conn, _FEED, cursor, head, list(FED_KINDS), sorted(p.services), limit)
            now = self.clock()
            steps = []
            for row in rows:
                msg = FedMessage.of_row(row)
                steps.append((p, msg.message_id, p.on_message, msg))
            await self._steps(conn, now, steps)
            last = rows[-1]["seq"] if len(rows) == limit else head
            await conn.execute("UPDATE process_cursor SET seq = $2 WHERE process = $1", p.name, last)
        return len(rows)

    async def timers_once(self, limit: int = 50) -> int:
        """Fire the timers that are due by the engine's clock; returns how many fired."""
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await fetch_planned_now(conn, _DUE_TIMERS, now, limit, list(self._by_name))
            steps = []
            for row in rows:
                timer = Timer(
                    row["id"], row["process"], row["kind"], row["key"], row["due_at"], json.loads(row["data"])
                )
                p = self._by_name.get(timer.process)
                if p is None:
                    log.warning("timer %s of unknown process %s left as it is", timer.kind, timer.process)
                    continue
                # Marked fired first: a handler that re-arms the same timer (schedule) sets fired_at back to NULL.
                await conn.execute("UPDATE process_timers SET fired_at = $2 WHERE id = $1", timer.id, now)
                steps.append((p, f"{timer.kind}/{timer.key}", p.on_timer, timer))
            await self._steps(conn, now, steps)
        if rows:
            self.wake.set()
        return len(rows)

    async def _steps(self, conn: asyncpg.Connection, now: datetime, steps: list[tuple[Process, str, Any, Any]]) -> None:
        """Run the steps in one savepoint (one round trip for the lot: the feed is usually thousands of messages
        a second no process does anything with). When one fails, the lot is rolled back and each step runs again
        in a savepoint of its own: the failing one (a bug — the message was valid) is logged and raised as an alarm
        for the people on duty, and the others go on."""
        if not steps:
            return
        try:
            async with conn.transaction():
                for p, _ref, fn, arg in steps:
                    await fn(Tx(self, conn, p.name, now), arg)
            return
        except Exception:  # noqa: S110 - each step again, alone: the failure is reported there
            pass
        for p, ref, fn, arg in steps:
            try:
                async with conn.transaction():
                    await fn(Tx(self, conn, p.name, now), arg)
            except Exception as exc:
                if _transient(exc):  # the store or the broker away: roll the lot back, the next pass retries it
                    raise
                log.exception("process %s failed on %s (%s)", p.name, ref, type(exc).__name__)
                await Tx(self, conn, p.name, now).alarm(
                    "PROCESS_FAILED",
                    ref,
                    "流程处理失败，需人工核查",
                    f"process {p.name} could not handle {ref}: {type(exc).__name__}",
                )

    async def publish_once(self, limit: int = 200) -> int:
        """Publish what processes queued (confirmed by the broker), the emergency lane's first, each lane oldest
        first (a late round's resends do not wait behind the reminders queued before them); returns how many."""
        from hub.transport import Outgoing, priority_for

        assert self.transport is not None
        names = self.transport.names
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await fetch_planned_now(conn, _UNPUBLISHED, limit)
            if not rows:
                return 0
            items = [
                Outgoing(
                    exchange=names.inbound_exchange,
                    routing_key=r["lane"],
                    body=bytes(r["body"]),
                    headers={},
                    priority=priority_for("特急" if r["lane"] == "emergency" else "加急"),
                    message_id=r["message_id"],
                )
                for r in rows
            ]
            await self.transport.publish_many(items)
            await conn.execute(
                "UPDATE process_outbox SET published_at = now() WHERE message_id = ANY($1::uuid[])",
                [uuid.UUID(r["message_id"]) for r in rows],
            )
        return len(rows)

    # ------------------------------------------------------------------ the loop

    def follow_hub_key(self) -> bool:
        """Sign with a hub key rotated by ``hub pki rotate`` without a restart, as the workers do
        (hub.trust.lifecycle.follow_hub_key). True when it switched."""
        from types import SimpleNamespace

        from hub.trust.lifecycle import follow_hub_key

        holder = self.__dict__.setdefault(
            "_key_holder",
            SimpleNamespace(
                settings=self.context.settings,
                pki_dir=self.context.pki_dir,
                context=self.context,
                signer=self.context.signer,
                processor=SimpleNamespace(signer=None),
                index=-1,  # not worker 0: the workers log the expiry warnings
                label="the process engine",
            ),
        )
        return follow_hub_key(holder)

    async def follow_directory(self) -> bool:
        """Take a directory stored by ``hub directory load`` (or routes files edited) since this engine loaded its own,
        as the workers do (``hub.pipeline.follow``): the directory and the routes loaded against it replace the
        context's, and each process that keeps something of them (``follow(context)``: names, the routes'
        acknowledgement limits) is told. Between two passes, so a pass sees one directory. True when it switched;
        never raises (a directory the routes cannot be loaded against is logged and the engine keeps what it has)."""
        from hub.pipeline.follow import describe, newer_directory

        try:
            view = await newer_directory(
                self.pool, self.context.settings, self.directory_version, self.routes_fingerprint
            )
            if view is None:
                await self._config_alarm("directory-routes", None)
                return False
            before = {s.id for s in self.context.directory.systems()}
            self.context.directory, self.context.router = view.directory, view.router
            for p in self.processes:
                follow = getattr(p, "follow", None)
                if follow is not None:
                    follow(self.context)
        except Exception as exc:  # the loop must not die of it
            log.warning(
                "the process engine could not take the new directory or routes files (%s: %s); it keeps version %s "
                "and the routes it has",
                type(exc).__name__,
                str(exc)[:300],
                self.directory_version,
            )
            await self._config_alarm(
                "directory-routes",
                f"the stored directory or the routes files cannot be used ({type(exc).__name__}: {str(exc)[:400]}); "
                f"the hub keeps directory version {self.directory_version} and the routes it has — correct them "
                "(hub directory check / hub routes check)",
            )
            return False
        await self._config_alarm("directory-routes", None)
        self.directory_version, self.routes_fingerprint = view.version, view.routes
        from hub.metrics import directory_taken

        directory_taken("processes", 0, view.version)
        log.info("the process engine now works with %s", describe(view, before))
        return True

    async def follow_process_files(self) -> bool:
        """Make the processes again from their own files (the broadcast plan, the documents' deadlines, the holiday
        calendar) when they changed since they were made — between two passes, without a restart. Files a process
        could not use as they are now are not taken: the processes keep what they had (they would fall back to the
        built-in defaults, as at a start with such a file) and each look says why. True when it switched."""
        files = self.files
        if files is None:
            return False
        try:
            fingerprint = files.fingerprint()
            if fingerprint == self.files_fingerprint:  # unchanged, or put back as they were
                await self._config_alarm("process-files", None)
                return False
            problems = files.problems()
            processes = [] if problems else list(files.make(self.context))
        except Exception as exc:  # the loop must not die of it
            problems = [f"{type(exc).__name__}: {str(exc)[:300]}"]
        if problems:
            why = "; ".join(problems)[:600]
            log.warning(
                "the process engine could not take its processes' files as changed (%s); it keeps the ones it has", why
            )
            await self._config_alarm(
                "process-files",
                f"the processes' files as edited cannot be used ({why}); the processes keep what they had — correct "
                "the file (hub approvals calendar checks the calendar)",
            )
            return False
        await self._config_alarm("process-files", None)
        self.processes = processes
        self._by_name = {p.name: p for p in processes}
        self.files_fingerprint = fingerprint
        log.info(
            "the process engine now works with its processes' files as changed (%s)",
            ", ".join(p.name for p in processes),
        )
        return True

    async def _config_alarm(self, ref: str, detail: str | None) -> None:
        """Raise (``detail``) or clear (None) the alarm CONFIG_NOT_TAKEN ``ref`` for the people on duty (the /processes
        page): an edit of the directory, the routes or the processes' files that the running hub could not take. A
        failure to write it is logged: the follower must go on."""
        if detail is None and ref not in self._config_alarms:
            return
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                tx = Tx(self, conn, "engine", self.clock())
                if detail is None:
                    await tx.clear_alarm(CONFIG_NOT_TAKEN, ref)
                else:
                    await tx.alarm(CONFIG_NOT_TAKEN, ref, _CONFIG_TITLE[ref], detail)
        except Exception as exc:
            log.warning("could not record the alarm %s %s (%s: %s)", CONFIG_NOT_TAKEN, ref, type(exc).__name__, exc)
            return
        if detail is None:
            self._config_alarms.discard(ref)
        else:
            self._config_alarms.add(ref)

    async def run(self, stop: asyncio.Event, *, interval: float = 0.5, key_every_s: float = 2.0) -> None:
        """Pass after pass until ``stop`` is set; a failed pass (the store or the broker away) is logged and tried
        again after a pause that doubles up to 30 s. Every ``key_every_s`` the hub key is checked for a rotation
        (two ``stat`` calls; every 2 s as in the workers, hub/trust/USAGE.md: it was once a minute, so the engine
        signed with a key an operator had just revoked after a compromise for up to a minute),
        every ``Settings.directory_refresh_s`` the stored directory and the routes files (``follow_directory``) and
        the processes' own files (``follow_process_files``)."""
        import time

        pause = interval
        key_checked = directory_checked = time.monotonic()
        # An alarm an earlier run of the engine left open is cleared by the first look that finds nothing wrong.
        self._config_alarms.update(_CONFIG_TITLE)
        directory_every_s = max(1, self.context.settings.directory_refresh_s)
        while not stop.is_set():
            if time.monotonic() - key_checked >= key_every_s:
                key_checked = time.monotonic()
                self.follow_hub_key()
            if time.monotonic() - directory_checked >= directory_every_s:
                directory_checked = time.monotonic()
                await self.follow_directory()
                await self.follow_process_files()
            try:
                await self.run_once()
                pause = interval
            except Exception as exc:
                log.warning("process pass failed (%s: %s); trying again in %.1f s", type(exc).__name__, exc, pause)
                pause = min(pause * 2, 30.0)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
