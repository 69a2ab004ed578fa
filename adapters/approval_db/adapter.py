"""审批数据库适配器 The approval system's database adapter (system ``county-222403-approval``).

    hub adapter run approval_db --config settings.toml

The approval desk's own PostgreSQL database is the whole interface (the contract is README.md, the tables
schema.sql):

- **outbound**: the approval system inserts an application and a ``hub_outbox`` row in one transaction; a trigger
  NOTIFYs ``hub_outbox``, the adapter (LISTEN, plus a poll every ``poll_interval`` s for what a missed notification
  left) sends the row as ``approval.application`` under the row's own ``message_id`` and marks it ``sent`` with the
  hub's receipt — at least once: a crash after the send and before the mark resends it, and the hub answers
  ``duplicate``. A row that cannot be a valid message, or that the hub refuses, is marked ``failed`` with a stable
  code and a Chinese and English reason; nothing of it left. A transient failure (hub unreachable) leaves it
  ``pending`` with a later ``next_attempt_at``.
- **inbound**: ``approval.status`` and ``approval.decision`` are inserted into ``approval_status_history`` and
  ``approval_decisions`` through ``ctx.db`` — the SDK's PostgreSQL store in the same database, so the rows and the
  record of the message id (``sdk_handled``) commit in one transaction. The hub's ``hub.notice`` messages addressed
  to the desk (the approvals process's ``approval-feedback`` about the desk's applicants' cases, and any other kind)
  go into ``hub_notices`` the same way; an ``approval-*`` notice whose case number is one of the desk's
  ``applications`` is linked to it (``case_number``).

Only one adapter instance sends an outbox at a time (a PostgreSQL advisory lock); a second one waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from adapters.approval_db import mapping
from adapters.approval_db.mapping import OutboxFailure
from adapters.sdk import Adapter, ConfigurationError, Context, HubRefused, MessageInvalid, Reject, SdkError, to
from adapters.sdk.messages import ApprovalDecision, ApprovalStatus, DeliveryRefusal, HubNotice

SYSTEM = "county-222403-approval"
#: The provincial approval system (行政审批系统) that decides the desk's applications.
DECIDER = "prov-220000-approval"
DECIDER_AGENCY = "11220000013544357T"
#: The NOTIFY channel of schema.sql's trigger.
CHANNEL = "hub_outbox"
#: The tables the adapter reads or writes (checked at start-up).
TABLES = (
    "applications",
    "application_materials",
    "hub_outbox",
    "approval_status_history",
    "approval_decisions",
    "approval_decision_documents",
    "hub_notices",
)

log = logging.getLogger("adapters.approval_db")

adapter = Adapter(SYSTEM)

#: The hub's own system id (the directory's hub-system; hub.trust.pki.HUB_SYSTEM — an adapter imports only the SDK).
HUB_SYSTEM = "hub"


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Config:
    """The ``[adapter]`` section of the settings file (see settings.example.toml)."""

    dsn: str
    poll_interval: float = 5.0
    batch_size: int = 200
    max_in_flight: int = 64
    send_timeout: float = 30.0
    retry_initial: float = 2.0
    retry_max: float = 300.0
    recipients: dict[str, str] = field(default_factory=lambda: {DECIDER: DECIDER_AGENCY})

    @classmethod
    def from_settings(cls, settings: Any) -> Config:
        if settings is None:
            raise ConfigurationError("approval_db: no settings (hub adapter run approval_db --config FILE)")
        kind, dsn = settings.store_target()
        if kind != "postgresql":
            raise ConfigurationError(
                'approval_db: store must be the approval database\'s DSN (store = "postgresql://…"): the status '
                "and decision rows commit with the handled message ids in that database",
                code="APPROVAL_CONFIG",
            )
        extra = dict(settings.extra or {})
        known = {"poll_interval", "batch_size", "max_in_flight", "send_timeout", "retry_initial", "retry_max"}
        unknown = set(extra) - known - {"recipients"}
        if unknown:
            raise ConfigurationError(
                f"approval_db: unknown [adapter] settings {sorted(unknown)}", code="APPROVAL_CONFIG"
            )
        values: dict[str, Any] = {}
        for name in known & set(extra):
            try:
                number = float(extra[name])
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"approval_db: [adapter] {name} must be a number", code="APPROVAL_CONFIG"
                ) from None
            if not math.isfinite(number) or number <= 0:  # TOML has nan and inf
                raise ConfigurationError(
                    f"approval_db: [adapter] {name} must be a positive number", code="APPROVAL_CONFIG"
                )
            values[name] = int(number) if name in ("batch_size", "max_in_flight") else number
        recipients = extra.get("recipients", {DECIDER: DECIDER_AGENCY})
        if (
            not isinstance(recipients, dict)
            or not recipients
            or not all(isinstance(k, str) and isinstance(v, str) and len(v) == 18 for k, v in recipients.items())
        ):
            raise ConfigurationError(
                "approval_db: [adapter.recipients] maps each system id the outbox may name to its 18-character "
                "agency code",
                code="APPROVAL_CONFIG",
            )
        return cls(dsn=dsn, recipients=dict(recipients), **values)


# ---------------------------------------------------------------------------------------------- inbound

_INSERT_STATUS = """
INSERT INTO approval_status_history
    (case_number, status, status_at, handling_agency_name, handling_agency_code, handler, note,
     supplement_materials, supplement_due, statutory_deadline, message_id, ref_to, sender_system)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
"""
_INSERT_DECISION = """
INSERT INTO approval_decisions
    (case_number, decision_number, outcome, deciding_agency_name, deciding_agency_code, decided_at, reasons,
     licence_number, valid_from, valid_until, conditions, remedy, message_id, ref_to, sender_system)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
"""
_INSERT_NOTICE = """
INSERT INTO hub_notices
    (kind, title, text, refers_to, case_ref, deadline, at, outstanding, case_number, urgency, message_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, (SELECT case_number FROM applications WHERE case_number = $9), $10, $11)
"""
_INSERT_DOCUMENT = """
INSERT INTO approval_decision_documents (message_id, position, file_name, media_type, sha256, size, content)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""


#: A handler's database connection failing (not a constraint or a bug: those are errors of their own).
_CONNECTION_LOST = (
    OSError,
    ConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


@adapter.handles(ApprovalStatus)
async def on_status(msg: ApprovalStatus, ctx: Context) -> None:
    """办理进度 → one approval_status_history row, committed with the message id."""
    await ctx.db.execute(_INSERT_STATUS, *mapping.status_params(msg), ctx.message_id, ctx.ref_to, ctx.sender.system)


@adapter.handles(ApprovalDecision)
async def on_decision(msg: ApprovalDecision, ctx: Context) -> None:
    """审批决定 → one approval_decisions row (and its documents), committed with the message id."""
    await ctx.db.execute(_INSERT_DECISION, *mapping.decision_params(msg), ctx.message_id, ctx.ref_to, ctx.sender.system)
    documents = mapping.decision_documents(msg)
    if documents:
        await ctx.db.executemany(_INSERT_DOCUMENT, [(ctx.message_id, *d) for d in documents])


@adapter.handles(HubNotice)
async def on_notice(msg: HubNotice, ctx: Context) -> None:
    """枢纽通知 → one hub_notices row (linked to the desk's application for an approval-* notice about one of its
    cases), committed with the message id. Only the hub's own notices are recorded: the signed sender and the
    certificate that signed the content must both be the hub's."""
    if ctx.sender.system != HUB_SYSTEM or (ctx.originator is not None and ctx.originator.system != HUB_SYSTEM):
        raise Reject(
            "APPROVAL_NOTICE_NOT_FROM_HUB",
            f"枢纽通知并非由交换枢纽签发（发送方 {ctx.sender.system}），未记录 — a hub.notice not signed by the hub; "
            "not recorded",
        )
    await ctx.db.execute(_INSERT_NOTICE, *mapping.notice_params(msg), ctx.urgency, ctx.message_id)


@adapter.handles(DeliveryRefusal)
async def on_refusal(msg: DeliveryRefusal, ctx: Context) -> None:
    """The recipient refused an application we sent: its outbox row becomes ``failed`` with the reason."""
    failure = mapping.refusal_by_recipient(msg.code, msg.reason, ctx.sender.system)
    await ctx.db.execute(
        "UPDATE hub_outbox SET state = 'failed', status_code = $2, status_reason = $3 WHERE message_id::text = $1",
        msg.original_message_id,
        failure.code,
        failure.reason(),
    )


# ---------------------------------------------------------------------------------------------- outbound

_DUE = """
SELECT id, message_id, case_number, recipient_system, urgency, attempts
FROM hub_outbox
WHERE state = 'pending' AND next_attempt_at <= now()
ORDER BY id
LIMIT $1
"""
_MARK_SENT = """
UPDATE hub_outbox SET state = 'sent', sent_at = now(), hub_outcome = $2, hub_receipt_id = $3,
       status_code = NULL, status_reason = $4, attempts = attempts + 1
WHERE id = $1 AND state = 'pending'
"""
_MARK_FAILED = """
UPDATE hub_outbox SET state = 'failed', status_code = $2, status_reason = $3, attempts = attempts + 1
WHERE id = $1 AND state = 'pending'
"""
_MARK_LATER = """
UPDATE hub_outbox SET status_code = $2, status_reason = $3, attempts = attempts + 1,
       next_attempt_at = now() + make_interval(secs => $4)
WHERE id = $1 AND state = 'pending'
"""
_QUARANTINED = "交换枢纽已受理并隔离待审 — accepted by the hub and quarantined for review"

#: What the database driver raises when the database is down, restarting or refusing connections.
_DB_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ConnectionError)


@dataclass
class _Outcome:
    kind: str  # sent / failed / later
    args: tuple[Any, ...]


class OutboxSender:
    """The LISTEN/poll loop over ``hub_outbox``."""

    def __init__(self, sender: Adapter, config: Config) -> None:
        self.adapter = sender
        self.config = config
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Counters for the log and the tests: rows sent, failed, put off.
        self.counts: dict[str, int] = defaultdict(int)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="approval-db-outbox")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.config.send_timeout + 5)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        except Exception:  # noqa: S110 — the loop logs its own failures
            pass

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        if self._stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _run(self) -> None:
        delay = self.config.retry_initial
        while not self._stopping.is_set():
            conn: Any = None
            try:
                conn = await asyncpg.connect(self.config.dsn, timeout=10)
                await conn.add_listener(CHANNEL, self._notified)
                if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", f"hub_outbox:{SYSTEM}"):
                    log.warning(
                        "outbox: another adapter instance holds the outbox lock; waiting",
                        extra={"system": SYSTEM},
                    )
                    await conn.close()
                    conn = None
                    await self._pause(self.config.poll_interval)
                    continue
                log.info("outbox: listening on %s", CHANNEL, extra={"system": SYSTEM})
                delay = self.config.retry_initial
                while not self._stopping.is_set():
                    self._wake.clear()
                    if not await self._drain(conn):
                        await self._pause(self.config.poll_interval)
            except _DB_DOWN as exc:
                log.warning(
                    "outbox: the approval database is unreachable (%s); retrying in %.1f s",
                    type(exc).__name__,
                    delay,
                    extra={"system": SYSTEM},
                )
                self._wake.clear()
                await self._pause(delay)
                delay = min(delay * 2, self.config.retry_max)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox: unexpected failure; retrying in %.1f s", delay, extra={"system": SYSTEM})
                await self._pause(delay)
                delay = min(delay * 2, self.config.retry_max)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()

    async def _drain(self, conn: Any) -> bool:
        """Send one batch of due rows; True when a full batch was taken (more may be due)."""
        rows = await conn.fetch(_DUE, self.config.batch_size)
        if not rows:
            return False
        cases = list({r["case_number"] for r in rows})
        apps = {
            a["case_number"]: dict(a)
            for a in await conn.fetch("SELECT * FROM applications WHERE case_number = ANY($1::text[])", cases)
        }
        materials: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in await conn.fetch(
            "SELECT * FROM application_materials WHERE case_number = ANY($1::text[]) ORDER BY case_number, position",
            cases,
        ):
            materials[m["case_number"]].append(dict(m))
        gate = asyncio.Semaphore(self.config.max_in_flight)
        outcomes = await asyncio.gather(
            *(self._one(r, apps.get(r["case_number"]), materials[r["case_number"]], gate) for r in rows)
        )
        sent = [(r["id"], *o.args) for r, o in zip(rows, outcomes, strict=True) if o.kind == "sent"]
        failed = [(r["id"], *o.args) for r, o in zip(rows, outcomes, strict=True) if o.kind == "failed"]
        later = [(r["id"], *o.args) for r, o in zip(rows, outcomes, strict=True) if o.kind == "later"]
        async with conn.transaction():
            if sent:
                await conn.executemany(_MARK_SENT, sent)
            if failed:
                await conn.executemany(_MARK_FAILED, failed)
            if later:
                await conn.executemany(_MARK_LATER, later)
        for kind, items in (("sent", sent), ("failed", failed), ("later", later)):
            self.counts[kind] += len(items)
        log.info(
            "outbox: %d sent, %d failed, %d put off",
            len(sent),
            len(failed),
            len(later),
            extra={"system": SYSTEM},
        )
        return len(rows) == self.config.batch_size

    async def _one(
        self, row: Any, app: dict[str, Any] | None, materials: list[dict[str, Any]], gate: asyncio.Semaphore
    ) -> _Outcome:
        """One row's outcome. Never raises (but for cancellation): a row that fails in a way nothing foresaw is
        marked ``failed`` (``APPROVAL_INTERNAL``) and logged, so that it can never hold back the rest of its batch
        (``gather`` would fail them all and the same batch be taken again, forever)."""
        try:
            return await self._try_one(row, app, materials, gate)
        except Exception as exc:
            log.exception(
                "outbox row %s failed unexpectedly",
                row["id"],
                extra={"system": SYSTEM, "message_id": str(row["message_id"]), "code": mapping.INTERNAL},
            )
            return _Outcome("failed", (mapping.INTERNAL, mapping.internal_failure(type(exc).__name__).reason()))

    async def _try_one(
        self, row: Any, app: dict[str, Any] | None, materials: list[dict[str, Any]], gate: asyncio.Semaphore
    ) -> _Outcome:
        def failed(f: OutboxFailure) -> _Outcome:
            log.warning(
                "outbox row %s failed: %s",
                row["id"],
                f.code,
                extra={"system": SYSTEM, "message_id": str(row["message_id"])},
            )
            return _Outcome("failed", (f.code, f.reason()))

        if app is None:
            return failed(
                OutboxFailure(
                    mapping.NO_APPLICATION,
                    "外发表引用的申请不存在，申请未发送",
                    "the outbox row names no application; nothing was sent",
                )
            )
        system = str(row["recipient_system"])
        agency = self.config.recipients.get(system)
        if agency is None:
            return failed(mapping.unknown_recipient(system))
        try:
            message = mapping.application_message(app, materials)
        except OutboxFailure as f:
            return failed(f)
        async with gate:
            try:
                receipt = await self.adapter.send(
                    message,
                    to=to(agency, system),
                    message_id=str(row["message_id"]),
                    urgency=str(row["urgency"]),
                    business_ref=message.case_number,
                    timeout=self.config.send_timeout,
                )
            except MessageInvalid as exc:
                return failed(mapping.refusal_of_invalid(exc.code, exc.detail, exc.path))
            except HubRefused as exc:
                return failed(mapping.refusal_of_hub(exc.code, exc.detail))
            except SdkError as exc:
                t = mapping.transient(exc.code, exc.detail)
                wait = min(self.config.retry_initial * 2 ** min(int(row["attempts"]), 12), self.config.retry_max)
                return _Outcome("later", (t.code, t.reason(), float(wait)))
        note = _QUARANTINED if receipt.outcome == "quarantined" else None
        return _Outcome("sent", (receipt.outcome, receipt.receipt_id, note))


# ---------------------------------------------------------------------------------------------- lifetime

_sender: OutboxSender | None = None


async def check_schema(dsn: str) -> None:
    """The contract's tables must exist (schema.sql): a clear start-up failure otherwise."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except _DB_DOWN as exc:
        raise ConfigurationError(
            f"approval_db: cannot reach the approval database ({type(exc).__name__})", code="APPROVAL_DB_UNREACHABLE"
        ) from None
    try:
        missing = [t for t in TABLES if await conn.fetchval("SELECT to_regclass($1)", t) is None]
    finally:
        await conn.close()
    if missing:
        raise ConfigurationError(
            f"approval_db: the approval database lacks {', '.join(missing)} (apply adapters/approval_db/schema.sql)",
            code="APPROVAL_DB_SCHEMA",
        )


@adapter.on_startup
async def open_outbox() -> None:
    global _sender
    config = Config.from_settings(adapter.settings)
    await check_schema(config.dsn)
    _sender = OutboxSender(adapter, config)
    await _sender.start()


@adapter.on_shutdown
async def close_outbox() -> None:
    global _sender
    if _sender is not None:
        await _sender.stop()
        _sender = None
