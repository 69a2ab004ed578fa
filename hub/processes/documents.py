"""The documents process (issue 14): official documents followed per recipient to 办结, with feedback deadlines.

Who has signed for a document is in ``deliveries``: the pipeline records each recipient's delivery, and this process
applies the recipients' ``document.receipt`` messages to it (delivered → 签收 received → 阅读 read → 办结 handled →
反馈 feedback) with ``hub.store.messages.update_delivery_states``, after two checks on what was signed:

- the receipt's ``RecipientAgencyCode`` is the signed sender's agency (else alarm ``DOC_RECEIPT_AGENCY_MISMATCH``);
- the hub addressed that document to that system of that agency and did not block it (else alarm
  ``DOC_RECEIPT_NOT_DELIVERED``). A delivery not yet marked delivered (the recipient answered before the worker
  recorded the broker's confirm) is marked delivered by the receipt.

A receipt that fails either changes nothing. The time recorded is the receipt's ``At``, kept between the document's
delivery and the hub's receipt of the report (a recipient cannot date its 办结 before it had the document, nor
after it told the hub).

Feedback deadlines: a document's ``FeedbackDue`` (反馈期限, an optional element at the end of document.official/1),
else the default for its urgency in ``routes/documents-deadlines.toml`` (none by default). A document with one
gets a ``document_deadlines`` row and two timers: ``remind`` (a day before, or halfway when nearer) sends a hub.notice
``document-reminder`` to each main addressee (role ``to``) not yet 办结; ``overdue`` (at the deadline) sends a
hub.notice ``document-overdue`` to the sender listing who is late, and raises ``DOC_OVERDUE`` for the people on duty.
When every main addressee has reported 办结 (or 反馈) the timers are disarmed and the alarm cleared. Copy recipients
(``cc``, 抄送) are shown but never reminded: they are informed, not asked to act.

Cost: the bench pushes ~1,800 document.official a second through a hub that runs this engine. A document without a
deadline costs a set lookup: the process asks PostgreSQL once per 2,000 chained records which documents carry the
bytes ``FeedbackDue`` (``position`` on the stored raw, in the server) and parses only those — the raw bytes and the
evidence chain below its head never change, so that answer is cached in memory safely across rollbacks.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import tomllib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree

from hub.envelope import Recipient
from hub.envelope.xsdvalue import xsd_datetime
from hub.processes.engine import CN_TZ, FED_KINDS, FedMessage, Timer, Tx
from hub.store.db import fetch_planned_now
from hub.store.records import DELIVERY_ROLE_ZH, DELIVERY_STATE_ZH

if TYPE_CHECKING:
    import asyncpg

    from hub.pipeline.context import Context
    from hub.settings import Settings

__all__ = [
    "DEADLINES_FILE",
    "DocumentsProcess",
    "Policy",
    "load_policy",
    "make",
    "register",
    "remind_time",
]

OFFICIAL, RECEIPT = "document.official", "document.receipt"
DOC_NS = "urn:forestry-hub:document.official:1"
RECEIPT_NS = "urn:forestry-hub:document.receipt:1"
log = logging.getLogger("hub.processes.documents")
DEADLINES_FILE = "documents-deadlines.toml"
#: The receipt statuses and the delivery states they report.
RECEIPT_STATES = {"received": "received", "read": "read", "handled": "handled", "feedback": "feedback"}
DONE = frozenset({"handled", "feedback"})
#: States of a main addressee that a reminder can still help (blocked/failed: the document never reached it).
REMINDABLE = frozenset({"pending", "delivered", "received", "read"})
STATE_ZH = DELIVERY_STATE_ZH
ROLE_ZH = DELIVERY_ROLE_ZH
#: Records scanned per query for documents that carry a FeedbackDue.
SCAN_WINDOW = 2000


class PolicyError(ValueError):
    """routes/documents-deadlines.toml cannot be used."""


_DURATION = re.compile(r"\s*([1-9][0-9]{0,4})\s*([mhd])\s*")


def parse_duration(text: str) -> timedelta:
    """``30m``, ``12h``, ``3d`` → a timedelta."""
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise PolicyError(f"{text!r} is not a duration such as 30m, 12h or 3d")
    n, unit = int(m.group(1)), m.group(2)
    return {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}[unit]


@dataclass(frozen=True)
class Policy:
    """Default feedback deadlines by urgency (none unless configured) and the reminder's lead."""

    default_feedback: dict[str, timedelta] = field(default_factory=dict)
    remind_before: timedelta = timedelta(days=1)


def load_policy(path: Path) -> Policy:
    """The policy in ``path``; the built-in one (no defaults, remind a day before) when the file does not exist."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark is not an error
    except FileNotFoundError:
        return Policy()
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: 不是 UTF-8 编码（请另存为 UTF-8） is not UTF-8 text (save it as UTF-8)") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    feedback, reminder = data.get("default_feedback") or {}, data.get("reminder") or {}
    for table, value in (("default_feedback", feedback), ("reminder", reminder)):
        if not isinstance(value, dict):
            raise PolicyError(
                f"{path}: [{table}] 应为表（[{table}] 下逐行写）must be a table ([{table}], one key a line)"
            )
    defaults: dict[str, timedelta] = {}
    for urgency, text in feedback.items():
        if urgency not in ("特急", "加急", "平件"):
            raise PolicyError(f"{path}: [default_feedback] {urgency!r} is not an urgency (特急, 加急, 平件)")
        defaults[urgency] = parse_duration(text)
    before = parse_duration(reminder.get("before", "1d"))
    return Policy(defaults, before)


def remind_time(received: datetime, due: datetime, before: timedelta) -> datetime:
    """When the reminder goes out: ``before`` the deadline, or halfway from receipt to deadline when that is
    nearer (a document due in 6 hours is reminded after 3)."""
    at = due - before
    if at <= received:
        at = received + (due - received) / 2
    return at


def late_parties(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The main addressees not yet 办结 (what the reminder and the overdue report are about)."""
    return [r for r in rows if r["role"] == "to" and r["state"] not in DONE]


def all_done(rows: list[dict[str, Any]]) -> bool:
    mains = [r for r in rows if r["role"] == "to"]
    return bool(mains) and all(r["state"] in DONE for r in mains)


def clamp(at: datetime, earliest: datetime | None, latest: datetime) -> datetime:
    """The reported time, kept within [the delivery, the hub's receipt of the report]."""
    if earliest is not None and at < earliest:
        at = earliest
    return min(at, latest)


def _text(el: etree._Element, ns: str, local: str) -> str | None:
    found = el.find(f"{{{ns}}}{local}")
    return None if found is None or found.text is None else found.text.strip()


def _ts(text: str | None) -> datetime | None:
    if not text:
        return None
    t = xsd_datetime(text)  # 24:00:00 too
    return t if t.tzinfo is not None else t.replace(tzinfo=CN_TZ)


#: The chained documents of a window of the evidence chain that carry FeedbackDue. The window's message ids are
#: collected first (one array), then looked up by primary key: no join, so no plan can be quadratic. The join form
#: (``evidence e JOIN messages m``) was, under a plan PostgreSQL cached while the tables were small (a new
#: installation): a nested loop scanning every document's raw for each row of the window — 0.5–5.7 s a call
#: (bench/gateway.py; tests/integration/test_plan_shapes.py). ``LIMIT 1``: the one-row head table, bloated by its
#: updates, was estimated at a thousand rows, the scan's cost with it (JIT-compiled on every call where JIT is on).
#:
#: Only the primary key can serve the messages side: the service is tested inside the ``CASE`` (no index matches it),
#: and the statement is planned for its own values on every call (``window_scan``). With ``m.service = …`` as a
#: plain condition, a plan made while ``messages`` was small (the generic plan the engine's pool takes after five
#: executions) took every document of the service from ``messages_service`` and decompressed and searched each one's
#: raw, whatever the window: O(table) a call, 9–57 ms at 10,000 messages, most of PostgreSQL's CPU in
#: bench/gateway.py when it happened.
_SCAN = """
SELECT h.hi, ARRAY(
    SELECT m.message_id::text FROM messages m
    WHERE m.message_id = ANY(ARRAY(
            SELECT e.message_id FROM evidence e
            WHERE e.seq >= $1::bigint AND e.seq <= h.hi AND e.kind = ANY($2::text[]) AND e.message_id IS NOT NULL))
      AND CASE WHEN m.service = 'document.official' THEN position('FeedbackDue'::bytea IN m.raw) > 0 ELSE false END
) AS ids
FROM (SELECT LEAST($1::bigint + $3::bigint - 1, seq) AS hi FROM evidence_head LIMIT 1) AS h
"""


async def window_scan(conn: Any, lo: int) -> Any:
    """The window of the evidence chain from ``lo``: its last sequence number (``hi``) and the ids of the documents
    in it that carry FeedbackDue (``ids``). Inside a transaction; planned for its own values on every call
    (``hub.store.db.fetch_planned_now``)."""
    rows = await fetch_planned_now(conn, _SCAN, lo, list(FED_KINDS), SCAN_WINDOW)
    return rows[0] if rows else None


_DELIVERIES = """
SELECT recipient_system, recipient_agency, role, state, delivered_at, received_at, read_at, handled_at, feedback_at
FROM deliveries WHERE message_id = $1 ORDER BY role DESC, recipient_system
"""


class DocumentsProcess:
    name = "documents"
    services = frozenset({OFFICIAL, RECEIPT})

    def __init__(self, policy: Policy, directory: Any = None) -> None:
        self.policy = policy
        self.directory = directory
        # Which chained documents carry FeedbackDue: (lo, hi, ids). Derived from rows that never change.
        self._window: tuple[int, int, frozenset[str]] = (0, -1, frozenset())
        self.scans = 0

    def follow(self, context: Context) -> None:
        """The engine took a new directory (``ProcessEngine.follow_directory``): the agencies' names come from it."""
        self.directory = context.directory

    # ------------------------------------------------------------------ the feed

    async def on_message(self, tx: Tx, msg: FedMessage) -> None:
        if msg.service == OFFICIAL:
            if msg.urgency in self.policy.default_feedback or await self._carries_due(tx, msg):
                await self._follow(tx, msg)
        elif msg.service == RECEIPT:
            await self._receipt(tx, msg)

    async def _carries_due(self, tx: Tx, msg: FedMessage) -> bool:
        lo, hi, ids = self._window
        if not lo <= msg.seq <= hi:
            row = await window_scan(tx.conn, msg.seq)
            hi = row["hi"] if row is not None and row["hi"] is not None else msg.seq
            ids = frozenset(row["ids"] if row is not None else ())
            self._window = (msg.seq, max(hi, msg.seq), ids)
            self.scans += 1
        return msg.message_id in ids

    async def _follow(self, tx: Tx, msg: FedMessage) -> None:
        env = await tx.envelope(msg)
        body = env.body
        due_text = _text(body, DOC_NS, "FeedbackDue")
        title = _text(body, DOC_NS, "Title") or "（无标题）"
        number = _text(body, DOC_NS, "DocumentNumber")
        source = "document"
        due = _ts(due_text)
        if due is None:
            default = self.policy.default_feedback.get(msg.urgency)
            if default is None:
                return  # "FeedbackDue" was only in the text
            due, source = msg.received_at + default, "urgency"
        if due <= msg.created:
            await tx.alarm(
                "DOC_FEEDBACK_DUE_INVALID",
                msg.message_id,
                "公文的反馈期限早于发文时间，未跟踪期限",
                f"document {msg.message_id} from {msg.sender_system} is due {due.isoformat()}, before it was"
                f" created ({msg.created.isoformat()}): no deadline followed",
            )
            return
        remind_at = remind_time(msg.received_at, due, self.policy.remind_before)
        inserted = await tx.conn.fetchval(
            "INSERT INTO document_deadlines (message_id, sender_agency, sender_system, title, document_number,"
            " feedback_due, due_source, remind_at, tracked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (message_id) DO NOTHING RETURNING true",
            uuid.UUID(msg.message_id),
            msg.sender_agency,
            msg.sender_system,
            title[:500],
            number,
            due,
            source,
            remind_at,
            tx.now,
        )
        if inserted:
            await tx.schedule("remind", msg.message_id, remind_at)
            await tx.schedule("overdue", msg.message_id, due)

    async def _receipt(self, tx: Tx, msg: FedMessage) -> None:
        from hub.store.messages import update_delivery_states
        from hub.store.records import DeliveryUpdate

        env = await tx.envelope(msg)
        body = env.body
        doc = _text(body, RECEIPT_NS, "DocumentMessageId") or ""
        agency = _text(body, RECEIPT_NS, "RecipientAgencyCode")
        status = _text(body, RECEIPT_NS, "Status") or ""
        at = _ts(_text(body, RECEIPT_NS, "At")) or msg.received_at
        who = f"{msg.sender_system} ({msg.sender_agency})"
        if agency != msg.sender_agency:
            await tx.alarm(
                "DOC_RECEIPT_AGENCY_MISMATCH",
                msg.message_id,
                "公文回执的回执单位与签名发送方不一致，未采纳",
                f"receipt {msg.message_id} signed by {who} reports for agency {agency} on document {doc}: not applied",
            )
            return
        row = await tx.conn.fetchrow(
            "SELECT d.recipient_agency, d.delivered_at, d.state, m.service FROM deliveries d"
            " JOIN messages m ON m.message_id = d.message_id WHERE d.message_id = $1 AND d.recipient_system = $2",
            uuid.UUID(doc),
            msg.sender_system,
        )
        if (
            row is None
            or row["service"] != OFFICIAL
            or row["recipient_agency"] != msg.sender_agency
            or row["state"] == "blocked"
        ):
            await tx.alarm(
                "DOC_RECEIPT_NOT_DELIVERED",
                msg.message_id,
                "公文回执所指的公文未经枢纽送达该单位，未采纳",
                f"receipt {msg.message_id} from {who} is about document {doc}, which the hub did not deliver to"
                " that system: not applied",
            )
            return
        state = RECEIPT_STATES[status]
        at = clamp(at, row["delivered_at"], msg.received_at)
        updates = [DeliveryUpdate(doc, msg.sender_system, state, at=at, actor=msg.sender_system)]  # type: ignore[arg-type]
        if row["delivered_at"] is None:
            # The recipient answered before the worker recorded the broker's confirm (or after a failed attempt the
            # broker had in fact taken): the receipt proves the delivery.
            updates.insert(0, DeliveryUpdate(doc, msg.sender_system, "delivered", at=at, actor=msg.sender_system))
        await update_delivery_states(tx.conn, updates)
        if state in DONE:
            await self._maybe_complete(tx, doc)

    async def _maybe_complete(self, tx: Tx, doc: str) -> None:
        tracked = await tx.conn.fetchval(
            "SELECT completed_at IS NULL FROM document_deadlines WHERE message_id = $1 FOR UPDATE", uuid.UUID(doc)
        )
        if not tracked:
            return
        rows = [dict(r) for r in await tx.conn.fetch(_DELIVERIES, uuid.UUID(doc))]
        if not all_done(rows):
            return
        await tx.conn.execute(
            "UPDATE document_deadlines SET completed_at = $2 WHERE message_id = $1", uuid.UUID(doc), tx.now
        )
        await tx.cancel("remind", doc)
        await tx.cancel("overdue", doc)
        await tx.clear_alarm("DOC_OVERDUE", doc)

    # ------------------------------------------------------------------ deadlines

    async def on_timer(self, tx: Tx, timer: Timer) -> None:
        doc = timer.key
        d = await tx.conn.fetchrow("SELECT * FROM document_deadlines WHERE message_id = $1 FOR UPDATE", uuid.UUID(doc))
        if d is None or d["completed_at"] is not None:
            return
        rows = [dict(r) for r in await tx.conn.fetch(_DELIVERIES, uuid.UUID(doc))]
        late = late_parties(rows)
        if not late:
            if all_done(rows):
                await tx.conn.execute(
                    "UPDATE document_deadlines SET completed_at = $2 WHERE message_id = $1", uuid.UUID(doc), tx.now
                )
            return
        if timer.kind == "remind":
            await self._remind(tx, d, late)
        elif timer.kind == "overdue":
            await self._overdue(tx, d, late)

    def _name(self, agency: str) -> str | None:
        if self.directory is None or not self.directory.has_agency(agency):
            return None
        return str(self.directory.agency(agency).name)

    async def _remind(self, tx: Tx, d: Any, late: list[dict[str, Any]]) -> None:
        doc = str(d["message_id"])
        due = d["feedback_due"]
        for r in late:
            if r["state"] not in REMINDABLE:
                continue
            system = r["recipient_system"]
            if await tx.conn.fetchval(
                "SELECT 1 FROM document_notices WHERE message_id = $1 AND kind = 'reminder' AND recipient_system = $2",
                d["message_id"],
                system,
            ):
                continue
            notice_id = await tx.notice(
                [Recipient.to(r["recipient_agency"], system)],
                kind="document-reminder",
                title=f"公文办理催办：{d['title']}"[:200],
                text=(
                    f"《{d['title']}》（{d['document_number'] or '无文号'}）的反馈期限为"
                    f"{due.astimezone(CN_TZ):%Y年%m月%d日 %H:%M}（北京时间），贵单位尚未报告办结"
                    f"（当前：{STATE_ZH.get(r['state'], r['state']).split(' ')[0]}），请及时办理并回执。"
                    " The feedback deadline of this document is near and your agency has not reported it handled."
                ),
                key=f"remind/{doc}/{system}",
                refers_to=doc,
                case_ref=d["document_number"],
                deadline=due,
                outstanding=[(r["recipient_agency"], system, self._name(r["recipient_agency"]), r["state"])],
            )
            await tx.conn.execute(
                "INSERT INTO document_notices (message_id, kind, recipient_system, notice_id, state_then, sent_at)"
                " VALUES ($1, 'reminder', $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                d["message_id"],
                system,
                uuid.UUID(notice_id),
                r["state"],
                tx.now,
            )
        await tx.conn.execute(
            "UPDATE document_deadlines SET reminded_at = coalesce(reminded_at, $2) WHERE message_id = $1",
            d["message_id"],
            tx.now,
        )

    async def _overdue(self, tx: Tx, d: Any, late: list[dict[str, Any]]) -> None:
        doc = str(d["message_id"])
        due = d["feedback_due"]
        names = [self._name(r["recipient_agency"]) or r["recipient_system"] for r in late]
        notice_id = await tx.notice(
            [Recipient.to(d["sender_agency"], d["sender_system"])],
            kind="document-overdue",
            title=f"公文逾期未办结：{d['title']}"[:200],
            text=(
                f"《{d['title']}》（{d['document_number'] or '无文号'}）已过反馈期限"
                f"{due.astimezone(CN_TZ):%Y年%m月%d日 %H:%M}（北京时间），{len(late)} 个主送单位尚未报告办结："
                f"{'、'.join(names)}。 The feedback deadline has passed; {len(late)} main addressee(s) have not"
                " reported the document handled."
            ),
            key=f"overdue/{doc}",
            refers_to=doc,
            case_ref=d["document_number"],
            deadline=due,
            outstanding=[
                (r["recipient_agency"], r["recipient_system"], self._name(r["recipient_agency"]), r["state"])
                for r in late
            ],
        )
        await tx.conn.execute(
            "INSERT INTO document_notices (message_id, kind, recipient_system, notice_id, state_then, sent_at)"
            " VALUES ($1, 'overdue', $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            d["message_id"],
            d["sender_system"],
            uuid.UUID(notice_id),
            ",".join(sorted({r["state"] for r in late})),
            tx.now,
        )
        await tx.conn.execute(
            "UPDATE document_deadlines SET overdue_at = coalesce(overdue_at, $2) WHERE message_id = $1",
            d["message_id"],
            tx.now,
        )
        await tx.alarm(
            "DOC_OVERDUE",
            doc,
            "公文超过反馈期限仍有收文单位未办结",
            f"document {doc} ({d['document_number'] or 'no number'}) from {d['sender_system']} is past its"
            f" feedback deadline; not handled by: {', '.join(r['recipient_system'] for r in late)}",
        )


def deadlines_path(settings: Settings) -> Path:
    return Path(settings.routes_dir) / DEADLINES_FILE


def config_files(settings: Settings) -> list[Path]:
    """The files ``make`` reads (hub.processes.runner.ProcessFiles follows them)."""
    return [deadlines_path(settings)]


def config_problem(settings: Settings) -> str | None:
    """Why ``make`` could not use the deadlines file as it is now (None: it can)."""
    try:
        load_policy(deadlines_path(settings))
    except PolicyError as exc:
        return f"DOC_DEADLINES_INVALID {exc}"
    return None


def make(context: Context, settings: Settings) -> DocumentsProcess:
    """The process with the installation's deadlines file. A file that cannot be used is logged (DOC_DEADLINES_INVALID)
    and the built-in policy applies — documents' own FeedbackDue are still followed, and the other processes run."""
    path = deadlines_path(settings)
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        log.error("DOC_DEADLINES_INVALID 公文反馈期限配置文件无法使用，按内置默认（无紧急程度默认期限）运行: %s", exc)
        policy = Policy()
    return DocumentsProcess(policy, context.directory)


# ---------------------------------------------------------------------------------------------- status and overdue


def _cn_time(t: datetime | None) -> str:
    return t.astimezone(CN_TZ).strftime("%m-%d %H:%M") if t else "—"


def _cn_full(t: datetime | None) -> str:
    return t.astimezone(CN_TZ).strftime("%Y-%m-%d %H:%M") if t else "—"


async def read_status(conn: asyncpg.Connection, message_id: uuid.UUID) -> dict[str, Any] | None:
    """A document's header, deadline, recipients (with their states and times) and what the hub sent about it;
    None when the hub has no document with that id."""
    m = await conn.fetchrow(
        "SELECT message_id::text AS message_id, service, sender_agency, sender_system, urgency, created,"
        " received_at, business_ref, state, raw FROM messages WHERE message_id = $1",
        message_id,
    )
    if m is None or m["service"] != OFFICIAL:
        return None
    title = number = None
    due_in_body = None
    try:
        from hub.envelope import Envelope
        from hub.envelope.intake import parse

        raw = bytes(m["raw"])
        body = Envelope.from_tree(parse(raw, max_bytes=max(len(raw), 1))).body
        title, number = _text(body, DOC_NS, "Title"), _text(body, DOC_NS, "DocumentNumber")
        due_in_body = _ts(_text(body, DOC_NS, "FeedbackDue"))
    except Exception:  # noqa: S110 - a refused message's raw may not parse; the header fields still tell
        pass
    deadline = await conn.fetchrow("SELECT * FROM document_deadlines WHERE message_id = $1", message_id)
    rows = [dict(r) for r in await conn.fetch(_DELIVERIES, message_id)]
    notices = [
        dict(r)
        for r in await conn.fetch(
            "SELECT kind, recipient_system, sent_at, state_then FROM document_notices WHERE message_id = $1"
            " ORDER BY sent_at, recipient_system",
            message_id,
        )
    ]
    out = {k: m[k] for k in m.keys() if k != "raw"}
    out.update(
        title=title,
        number=number or m["business_ref"],
        due_in_body=due_in_body,
        deadline=dict(deadline) if deadline else None,
        recipients=rows,
        notices=notices,
    )
    return out


def render_status(s: dict[str, Any], now: datetime, names: dict[str, str] | None = None) -> list[str]:
    """The lines of ``hub documents status`` (Chinese first)."""
    names = names or {}
    rows = s["recipients"]
    lines = [
        f"公文 Document：{s['title'] or '（标题不可读 title unreadable）'}",
        f"  报文标识 id: {s['message_id']}   文号 number: {s['number'] or '—'}   紧急程度 urgency: {s['urgency']}",
        f"  发文 from: {names.get(s['sender_agency'], s['sender_agency'])}（{s['sender_system']}）"
        f"   枢纽收文 received: {_cn_full(s['received_at'])}（北京时间 UTC+8）",
    ]
    if s["state"] not in ("accepted", "released"):
        lines.append(f"  ✘ 枢纽未投递该公文 not delivered by the hub: {s['state']}")
    d = s["deadline"]
    if d is not None:
        source = "公文标注 from the document" if d["due_source"] == "document" else "按紧急程度默认 urgency default"
        lines.append(f"  反馈期限 feedback due: {_cn_full(d['feedback_due'])}（{source}）")
        if d["completed_at"] is not None:
            lines.append(f"  ✔ 主送单位均已办结 every main addressee handled it（{_cn_full(d['completed_at'])}）")
        elif d["feedback_due"] < now:
            lines.append(f"  ✘ 已逾期 overdue since {_cn_full(d['feedback_due'])}")
        else:
            lines.append(f"  催办提醒 reminder at: {_cn_full(d['remind_at'])}")
    elif s["due_in_body"] is not None:
        lines.append(f"  反馈期限 feedback due: {_cn_full(s['due_in_body'])}（流程尚未登记 not yet followed）")
    else:
        lines.append("  反馈期限 feedback due: 无 none（不催办 no reminders）")
    reminded = {n["recipient_system"]: n for n in s["notices"] if n["kind"] == "reminder"}
    lines.append(
        "  收文单位 recipient | 角色 role | 状态 state | 送达 delivered | 签收 signed | 阅读 read | 办结 handled |"
        " 反馈 feedback | 催办 reminded"
    )
    due = d["feedback_due"] if d is not None else None
    for r in rows:
        who = names.get(r["recipient_agency"], r["recipient_agency"])
        done_at = r["handled_at"] or r["feedback_at"]
        late = "（逾期办结 late）" if due is not None and r["role"] == "to" and done_at and done_at > due else ""
        rem = _cn_time(reminded[r["recipient_system"]]["sent_at"]) if r["recipient_system"] in reminded else "—"
        lines.append(
            f"  {who}（{r['recipient_system']}） | {ROLE_ZH.get(r['role'], r['role'])} |"
            f" {STATE_ZH.get(r['state'], r['state'])}{late} | {_cn_time(r['delivered_at'])}"
            f" | {_cn_time(r['received_at'])} | {_cn_time(r['read_at'])} | {_cn_time(r['handled_at'])}"
            f" | {_cn_time(r['feedback_at'])} | {rem}"
        )

    def reached(r: dict[str, Any], states: set[str]) -> bool:
        return r["state"] in states

    signed = {"received", "read", "handled", "feedback"}
    total = len(rows)
    not_signed = [r["recipient_system"] for r in rows if not reached(r, signed)]
    not_read = [r["recipient_system"] for r in rows if not reached(r, {"read", "handled", "feedback"})]
    not_done = [r["recipient_system"] for r in late_parties(rows)]
    lines.append(
        f"  已签收 signed for: {total - len(not_signed)}/{total}"
        + (f"；未签收 not signed: {', '.join(not_signed)}" if not_signed else "")
    )
    lines.append(
        f"  已阅读 read: {total - len(not_read)}/{total}"
        + (f"；未阅读 not read: {', '.join(not_read)}" if not_read else "")
    )
    mains = sum(1 for r in rows if r["role"] == "to")
    lines.append(
        f"  主送已办结 handled (to): {mains - len(not_done)}/{mains}"
        + (f"；未办结 not handled: {', '.join(not_done)}" if not_done else "")
    )
    overdue = [n for n in s["notices"] if n["kind"] == "overdue"]
    if overdue:
        lines.append(f"  逾期报告 overdue report to the sender: {_cn_full(overdue[0]['sent_at'])}")
    return lines


async def read_overdue(conn: asyncpg.Connection, now: datetime, within: timedelta) -> list[dict[str, Any]]:
    """Followed documents not completed whose deadline is before ``now + within``, with their late addressees."""
    rows = await conn.fetch(
        "SELECT message_id, sender_system, title, document_number, feedback_due, overdue_at, reminded_at"
        " FROM document_deadlines WHERE completed_at IS NULL AND feedback_due <= $1 ORDER BY feedback_due LIMIT 500",
        now + within,
    )
    out = []
    for r in rows:
        late = late_parties([dict(x) for x in await conn.fetch(_DELIVERIES, r["message_id"])])
        if late:
            out.append({**dict(r), "late": late})
    return out


def render_overdue(rows: list[dict[str, Any]], now: datetime) -> list[str]:
    if not rows:
        return ["没有逾期或临期未办结的公文 no document is overdue or due soon with addressees not done"]
    lines = [f"逾期及临期未办结公文 Documents overdue or due soon（截至 {_cn_full(now)}，北京时间）"]
    for r in rows:
        mark = "✘ 已逾期 overdue" if r["feedback_due"] < now else "⚠ 临期 due soon"
        lines.append(
            f"  {mark} {_cn_full(r['feedback_due'])} {r['title']}（{r['document_number'] or '无文号'}）"
            f" 发文 from {r['sender_system']}，id {r['message_id']}"
        )
        for x in r["late"]:
            lines.append(f"      未办结 not handled: {x['recipient_system']} {STATE_ZH.get(x['state'], x['state'])}")
    return lines


async def _names(conn: asyncpg.Connection) -> dict[str, str]:
    try:
        rows = await conn.fetch("SELECT code, name FROM directory_agencies")
    except Exception:  # a hub whose directory was never loaded into PostgreSQL: codes instead of names
        return {}
    return {r["code"]: r["name"] for r in rows}


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from hub import clock
    from hub.store.db import connection

    try:
        message_id = uuid.UUID(args.id)
    except ValueError:
        print(f"DOC_BAD_ID 公文报文标识应为 UUID the document id must be a UUID, not {args.id[:80]!r}")
        return 2

    async def read() -> tuple[dict[str, Any] | None, dict[str, str]]:
        async with connection(settings.pg_dsn) as conn:
            return await read_status(conn, message_id), await _names(conn)

    s, names = asyncio.run(read())
    if s is None:
        print(f"DOC_NOT_FOUND 枢纽没有该公文的记录 the hub has no official document with id {message_id}")
        return 1
    print("\n".join(render_status(s, clock.now(), names)))
    return 0


def cmd_overdue(args: argparse.Namespace, settings: Settings) -> int:
    from hub import clock
    from hub.store.db import connection

    try:
        within = parse_duration(args.within) if args.within else timedelta(0)
    except PolicyError as exc:
        print(f"DOC_DEADLINES_INVALID 时长写法应为 30m、12h、3d: {exc}")
        return 2
    now = clock.now()

    async def read() -> list[dict[str, Any]]:
        async with connection(settings.pg_dsn) as conn:
            return await read_overdue(conn, now, within)

    rows = asyncio.run(read())
    print("\n".join(render_overdue(rows, now)))
    return 1 if any(r["feedback_due"] < now for r in rows) else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("documents", help="official documents followed to 办结 and their feedback deadlines (公文跟踪)")
    ps = p.add_subparsers(dest="documents_command", metavar="ACTION", required=True)
    q = ps.add_parser("status", help="who has and has not signed for, read and handled a document (公文办理情况)")
    q.add_argument("id", help="the document's message id")
    q.set_defaults(handler=cmd_status)
    q = ps.add_parser(
        "overdue", help="documents past their feedback deadline with addressees not done (exit 1 when any) (逾期公文)"
    )
    q.add_argument("--within", help="also those due within this time, e.g. 12h or 2d")
    q.set_defaults(handler=cmd_overdue)
