"""网上审批与监督 The approvals process (issue 14): a case state machine driven by approval.application /
approval.status / approval.decision, statutory deadlines in working days (approvals_calendar.py, the editable holiday
calendar routes/calendar/cn-holidays.toml), suspension stopping the clock, supervision (督办) of at-risk and overdue
cases, status feedback to the applicant's portal, and figures per approval item.

    application  (portal or county desk → the approval system)  opens the case: its clock starts on the day it was
                 submitted (not counted); its limit is TimeLimitWorkingDays, or the working days up to the declared
                 StatutoryDeadline when the application gives none. The hub computes the deadline itself (a declared
                 deadline that differs is an alarm: the calendar or the approval system's may be wrong). The
                 applicant's portal (the application's signed sender) gets an ``approval-feedback`` notice.
    status       (only from the system the application was delivered to)  moves the case along ``ALLOWED``;
                 ``suspended`` (中止) and ``supplement-required`` (补正) stop the clock from their day (the days after
                 it do not count) until the next status or the decision (its day does not count either); the
                 deadline moves by the working days stopped. A status or decision the applicant's portal was not
                 sent is forwarded to it as an ``approval-feedback`` notice.
    decision     ends the case (approved / rejected; DecidingAgency must be the accepting agency): working days used,
                 late or not.
    timers       at-risk: from the start of the day ``AT_RISK_DAYS`` working days before the deadline (预警提醒,
                 Level reminder); overdue: after the deadline day (督办, Level supervise) and, still open
                 ``ESCALATE_AFTER`` working days later, escalated (挂牌督办, Level escalate). Each is an
                 approval.supervision sent by the hub to the responsible unit (the accepting agency's office system)
                 and its supervising unit (the nearest parent agency with a system accepting approval.supervision;
                 escalated: the next one too), a ``hub.notice`` to the approval system, and for overdue cases the
                 applicant's portal is told. One supervision per (case, level, deadline): its message id is fixed
                 by them, and ``approval_supervisions`` keeps it from being decided twice.

Messages and timers act only on what was signed: a status or decision from another system than the case's approval
system, for an unknown case, out of order (``ALLOWED``) or naming another deciding agency is an alarm, not a change.
``hub approvals status CASE``, ``hub approvals figures``, ``hub approvals calendar``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree

from hub.envelope.model import Recipient, service_namespace
from hub.envelope.xsdvalue import xsd_date, xsd_datetime
from hub.processes.approvals_calendar import Calendar, CalendarError, Pause, load_calendar
from hub.processes.engine import CN_TZ, FedMessage, Timer, Tx, process_id

if TYPE_CHECKING:
    import asyncpg

    from hub.pipeline.context import Context
    from hub.settings import Settings

__all__ = [
    "ALLOWED",
    "ApprovalsProcess",
    "make",
    "next_state",
    "register",
    "supervision_body",
    "supervision_recipients",
]

log = logging.getLogger("hub.processes.approvals")

NAME = "approvals"
APPLICATION, STATUS, DECISION, SUPERVISION = (
    "approval.application",
    "approval.status",
    "approval.decision",
    "approval.supervision",
)
A_NS = service_namespace(APPLICATION, 1)
S_NS = service_namespace(STATUS, 1)
D_NS = service_namespace(DECISION, 1)
V_NS = service_namespace(SUPERVISION, 1)

#: A case is at risk when this many working days (or fewer) are left, the deadline day included.
AT_RISK_DAYS = 3
#: An overdue case still open this many working days after its deadline is escalated (挂牌督办).
ESCALATE_AFTER = 5
#: The responsible unit replies to a supervision within this many working days (ReplyBy, 17:00 Beijing time).
REPLY_WITHIN = 2
CALENDAR_FILE = Path("calendar") / "cn-holidays.toml"
#: The longest limit the hub follows (approval.application's TimeLimitWorkingDays is at most 365).
MAX_LIMIT = 365

#: approval.status Status → the case's state.
STATUS_STATE = {
    "accepted": "accepted",
    "not-accepted": "not_accepted",
    "supplement-required": "supplement",
    "under-review": "under_review",
    "suspended": "suspended",
}
PAUSED = {"suspended": "suspended", "supplement": "supplement"}
TERMINAL = frozenset({"not_accepted", "approved", "rejected"})
#: The state machine: which state a status may move a case to from each open state (a decision ends any open case).
ALLOWED: dict[str, frozenset[str]] = {
    "submitted": frozenset({"accepted", "not_accepted", "supplement", "under_review"}),
    "supplement": frozenset({"accepted", "not_accepted", "supplement", "under_review"}),
    "accepted": frozenset({"supplement", "under_review", "suspended"}),
    "under_review": frozenset({"supplement", "under_review", "suspended"}),
    "suspended": frozenset({"under_review", "suspended"}),
}
STATE_ZH = {
    "submitted": "已提交 submitted",
    "accepted": "已受理 accepted",
    "supplement": "补正中（计时中止） supplement required, clock stopped",
    "under_review": "审查中 under review",
    "suspended": "中止审查（计时中止） suspended, clock stopped",
    "not_accepted": "不予受理 not accepted",
    "approved": "准予许可 approved",
    "rejected": "不予许可 rejected",
}
LEVEL_ZH = {"reminder": "预警提醒 reminder", "supervise": "督办 supervised", "escalate": "挂牌督办 escalated"}
#: timer kind → supervision level
TIMER_LEVEL = {"at-risk": "reminder", "overdue": "supervise", "escalate": "escalate"}
EVENT_ZH = {
    "application": "申请 application",
    "status": "进度 status",
    "decision": "决定 decision",
    "refused": "未采纳 not applied",
    **{k: v for k, v in LEVEL_ZH.items()},
}


# ---------------------------------------------------------------------------------------------- pure logic


def next_state(current: str, status: str) -> str | None:
    """The state a case in ``current`` moves to on an approval.status ``status``; None when not allowed."""
    new = STATUS_STATE.get(status)
    if new is None or new not in ALLOWED.get(current, frozenset()):
        return None
    return new


def day_of(t: datetime) -> date:
    """The Beijing-time calendar day of an instant."""
    return t.astimezone(CN_TZ).date()


def start_of(d: date) -> datetime:
    return datetime.combine(d, time(0, 0), CN_TZ)


def end_of(d: date) -> datetime:
    """The instant a deadline day ends (Beijing time): a case is overdue from then."""
    return start_of(d + timedelta(days=1))


def timer_plan(cal: Calendar, start: date, deadline: date) -> list[tuple[str, datetime]]:
    """(timer kind, due) of a running case: at-risk (when it starts after the case's first working day) and
    overdue."""
    plan = []
    risk = cal.back(deadline, AT_RISK_DAYS)
    if risk > (cal.add(start, 1) or start):  # at risk from its first working day: no reminder round
        plan.append(("at-risk", start_of(risk)))
    plan.append(("overdue", end_of(deadline)))
    return plan


def days_overdue(deadline: date, today: date) -> int:
    return max(1, min(3650, (today - deadline).days))


def days_remaining(cal: Calendar, today: date, deadline: date) -> int:
    """Working days left, today and the deadline day included."""
    return max(0, min(365, cal.count(today - timedelta(days=1), deadline)))


def _t(el: etree._Element, ns: str, path: str) -> str | None:
    found = el.find("/".join(f"{{{ns}}}{p}" for p in path.split("/")))
    return found.text.strip() if found is not None and found.text is not None else None


def _date(text: str | None) -> date | None:
    return xsd_date(text) if text else None


def _ts(text: str | None) -> datetime | None:
    return xsd_datetime(text) if text else None


def _supervision_system(directory: Any, agency: str) -> str | None:
    if not directory.has_agency(agency):
        return None
    for s in directory.systems_of(agency):
        if s.accepts_service(SUPERVISION):
            return str(s.id)
    return None


def supervision_recipients(directory: Any, accepting_agency: str, level: str) -> list[Recipient]:
    """The responsible unit (to) and its supervising units (cc): the nearest parent agency with a system accepting
    approval.supervision, and for an escalated case the next one above it too."""
    out: list[Recipient] = []
    own = _supervision_system(directory, accepting_agency)
    if own is not None:
        out.append(Recipient.to(accepting_agency, own))
    wanted = 2 if level == "escalate" else 1
    ancestors = directory.ancestors(accepting_agency) if directory.has_agency(accepting_agency) else ()
    for code in ancestors:
        system = _supervision_system(directory, code)
        if system is not None:
            out.append(Recipient.cc(code, system) if own is not None else Recipient.to(code, system))
            wanted -= 1
            if wanted == 0:
                break
    return out


def requirement_text(level: str, deadline: date, today: date, left: int, reply_by: datetime) -> str:
    by = reply_by.astimezone(CN_TZ).strftime("%Y年%m月%d日%H:%M")
    if level == "reminder":
        return (
            f"该案件距法定办结期限（{deadline:%Y年%m月%d日}）仅剩{left}个工作日，请抓紧办理，确保按期办结；"
            f"确有法定中止情形的，请及时在审批系统中报送中止状态。"
        )
    overdue = days_overdue(deadline, today)
    if level == "supervise":
        return (
            f"该案件已超过法定办结期限（{deadline:%Y年%m月%d日}）{overdue}天，请立即办结，"
            f"并于{by}前书面反馈超期原因和办理情况。"
        )
    return (
        f"该案件超过法定办结期限（{deadline:%Y年%m月%d日}）已{overdue}天仍未办结，现予挂牌督办：请上级机关督促"
        f"责任单位立即办结，并于{by}前报告办理结果和责任追究情况。"
    )


def supervision_body(
    *,
    case_number: str,
    item_name: str,
    level: str,
    deadline: date,
    today: date,
    left: int,
    responsible_name: str,
    responsible_code: str,
    handler: str | None,
    reply_by: datetime,
) -> etree._Element:
    """The body of the hub's approval.supervision."""

    def q(local: str) -> str:
        return f"{{{V_NS}}}{local}"

    root = etree.Element(q("ApprovalSupervision"), nsmap={"a": V_NS})
    etree.SubElement(root, q("CaseNumber")).text = case_number
    etree.SubElement(root, q("ItemName")).text = item_name[:200]
    etree.SubElement(root, q("Level")).text = level
    etree.SubElement(root, q("StatutoryDeadline")).text = deadline.isoformat()
    if level == "reminder":
        etree.SubElement(root, q("DaysRemaining")).text = str(left)
    else:
        etree.SubElement(root, q("DaysOverdue")).text = str(days_overdue(deadline, today))
    unit = etree.SubElement(root, q("ResponsibleUnit"))
    etree.SubElement(unit, q("Name")).text = responsible_name[:200]
    etree.SubElement(unit, q("AgencyCode")).text = responsible_code
    if handler:
        etree.SubElement(root, q("ResponsiblePerson")).text = handler[:200]
    etree.SubElement(root, q("Requirement")).text = requirement_text(level, deadline, today, left, reply_by)
    etree.SubElement(root, q("ReplyBy")).text = reply_by.astimezone(CN_TZ).isoformat(timespec="seconds")
    return root


# ---------------------------------------------------------------------------------------------- the process


@dataclass(frozen=True, slots=True)
class Application:
    case_number: str
    item_code: str
    item_name: str
    accepting_code: str
    accepting_name: str
    applicant_name: str
    submitted_at: datetime
    limit_days: int | None
    declared: date
    promised: date | None


def parse_application(body: etree._Element) -> Application:
    submitted = _ts(_t(body, A_NS, "SubmittedAt"))
    declared = _date(_t(body, A_NS, "StatutoryDeadline"))
    assert submitted is not None and declared is not None  # required by the schema
    limit = _t(body, A_NS, "TimeLimitWorkingDays")
    return Application(
        case_number=_t(body, A_NS, "CaseNumber") or "",
        item_code=_t(body, A_NS, "ItemCode") or "",
        item_name=_t(body, A_NS, "ItemName") or "",
        accepting_code=_t(body, A_NS, "AcceptingAgency/AgencyCode") or "",
        accepting_name=_t(body, A_NS, "AcceptingAgency/Name") or "",
        applicant_name=_t(body, A_NS, "Applicant/Name") or "",
        submitted_at=submitted,
        limit_days=int(limit) if limit else None,
        declared=declared,
        promised=_date(_t(body, A_NS, "PromisedDeadline")),
    )


class ApprovalsProcess:
    name = NAME
    services = frozenset({APPLICATION, STATUS, DECISION})

    def __init__(self, calendar: Calendar, calendar_problem: str | None = None) -> None:
        self.calendar = calendar
        #: Why the calendar file could not be used (the process then counts weekdays only, and says so).
        self.calendar_problem = calendar_problem
        #: A usable calendar: whether a step found no APPROVAL_CALENDAR_INVALID left open (by an earlier process made
        #: from a bad file, before the engine took the corrected one, or by an earlier run of the engine).
        self._calendar_alarm_clear = False

    async def _calendar_alarm(self, tx: Tx) -> None:
        if self.calendar_problem is not None:
            await tx.alarm(
                "APPROVAL_CALENDAR_INVALID",
                "calendar",
                "节假日日历无法使用，审批期限暂按周一至周五计算",
                f"{self.calendar_problem}；改正该文件前审批期限只按周一至周五计算，改正后运行中的引擎在 "
                "HUB_DIRECTORY_REFRESH_S 内改用新日历，无需重启。Statutory deadlines count Monday to Friday only "
                "until the file is corrected; a running engine takes the corrected file within "
                "HUB_DIRECTORY_REFRESH_S, no restart",
            )
        elif not self._calendar_alarm_clear:
            # Once per process: a step that cleared it does not count (its transaction may yet be rolled back), the
            # next one, finding nothing open, does.
            self._calendar_alarm_clear = not await tx.clear_alarm("APPROVAL_CALENDAR_INVALID", "calendar")

    async def on_message(self, tx: Tx, msg: FedMessage) -> None:
        if msg.version != 1:
            return
        await self._calendar_alarm(tx)
        if msg.service == APPLICATION:
            await self._on_application(tx, msg)
        elif msg.service == STATUS:
            await self._on_status(tx, msg)
        elif msg.service == DECISION:
            await self._on_decision(tx, msg)

    # ------------------------------------------------------------------ helpers

    async def _event(
        self,
        tx: Tx,
        case: str,
        kind: str,
        at: datetime,
        *,
        msg: str | None = None,
        state: str | None = None,
        note: str | None = None,
    ) -> None:
        await tx.conn.execute(
            "INSERT INTO approval_events (case_number, message_id, kind, state, at, note) VALUES ($1, $2, $3, $4, $5,"
            " $6)",
            case,
            uuid.UUID(msg) if msg else None,
            kind,
            state,
            at,
            note[:2000] if note else None,
        )

    async def _gap_alarm(self, tx: Tx, case: str, start: date, deadline: date) -> None:
        """APPROVAL_CALENDAR_GAP when the case's period (from its start to its deadline, as computed now) runs into a
        year the calendar does not list: checked wherever the deadline is computed. Cleared there once the period is
        covered again (the year added to the calendar, or the deadline moved back into a listed year)."""
        cal = self.calendar
        if cal.covers(start) and cal.covers(deadline):
            await tx.clear_alarm("APPROVAL_CALENDAR_GAP", case)
        else:
            await tx.alarm(
                "APPROVAL_CALENDAR_GAP",
                case,
                "节假日日历未覆盖该案件的办理期间",
                f"case {case} runs from {start} to {deadline}: a year the holiday calendar does not list "
                "counts by weekdays only; add it to routes/calendar/cn-holidays.toml",
            )

    async def _pauses(self, tx: Tx, case: str) -> list[Pause]:
        rows = await tx.conn.fetch("SELECT since, until FROM approval_pauses WHERE case_number = $1", case)
        return [(r["since"], r["until"]) for r in rows]

    async def _arm(self, tx: Tx, case: str, start: date, deadline: date | None) -> None:
        """Re-arm the case's timers for its (new) deadline; disarm them while the clock is stopped or it is closed."""
        if deadline is None:
            for kind in TIMER_LEVEL:
                await tx.cancel(kind, case)
            return
        planned = dict(timer_plan(self.calendar, start, deadline))
        for kind in TIMER_LEVEL:
            if kind in planned:
                await tx.schedule(kind, case, planned[kind], {"deadline": deadline.isoformat()})
            else:
                await tx.cancel(kind, case)

    async def _feedback(self, tx: Tx, case: Any, *, key: str, title: str, text: str, refers_to: str) -> None:
        """A hub.notice (approval-feedback) to the applicant's portal or desk."""
        await tx.notice(
            [Recipient.to(case["portal_agency"], case["portal_system"])],
            kind="approval-feedback",
            title=title,
            text=text,
            key=key,
            refers_to=refers_to,
            case_ref=case["case_number"],
            deadline=end_of(case["deadline"]) if case["deadline"] else None,
            urgency="平件",
        )

    async def _forward_if_missed(self, tx: Tx, case: Any, msg: FedMessage, what: str) -> None:
        """The applicant's portal gets every status and decision: the hub tells it when the approval system did not."""
        if any(d.recipient_system == case["portal_system"] for d in await tx.deliveries(msg.message_id)):
            return
        await self._feedback(
            tx,
            case,
            key=f"feedback/{msg.message_id}",
            title=f"审批进度：{case['item_name']}（{case['case_number']}）",
            text=f"您的申请（案件编号 {case['case_number']}，{case['item_name']}）{what}。"
            f" Status of application {case['case_number']}: {what}.",
            refers_to=msg.message_id,
        )

    async def _case(self, tx: Tx, case_number: str) -> Any:
        return await tx.conn.fetchrow("SELECT * FROM approval_cases WHERE case_number = $1 FOR UPDATE", case_number)

    async def _checked(self, tx: Tx, msg: FedMessage, case_number: str, what: str) -> Any:
        """The case a status or decision is about, when its signed sender may report on it; else an alarm."""
        case = await self._case(tx, case_number)
        if case is None:
            await tx.alarm(
                "APPROVAL_CASE_UNKNOWN",
                msg.message_id,
                "审批进度或决定所指的案件未经枢纽受理登记",
                f"{what} {msg.message_id} from {msg.sender_system} is about case {case_number}, whose application the "
                "hub has not followed; nothing recorded",
            )
            return None
        if msg.sender_system != case["approval_system"]:
            await tx.alarm(
                "APPROVAL_SENDER_MISMATCH",
                msg.message_id,
                "审批进度或决定并非由受理该申请的审批系统发出",
                f"{what} {msg.message_id} about case {case_number} is signed by {msg.sender_system}, not by "
                f"{case['approval_system']}, which received the application; nothing recorded",
            )
            return None
        return case

    # ------------------------------------------------------------------ application

    async def _on_application(self, tx: Tx, msg: FedMessage) -> None:
        env = await tx.envelope(msg)
        assert env.body is not None
        a = parse_application(env.body)
        old = await tx.conn.fetchrow(
            "SELECT application_id::text AS id FROM approval_cases WHERE case_number = $1", a.case_number
        )
        if old is not None:
            await tx.alarm(
                "APPROVAL_CASE_DUPLICATE",
                msg.message_id,
                "同一案件编号的申请重复提交",
                f"application {msg.message_id} from {msg.sender_system} has case number {a.case_number}, already "
                f"opened by application {old['id']}; the case is left as it is",
            )
            return
        delivered = await tx.deliveries(msg.message_id)
        if not delivered:
            return  # refused or quarantined whole: no approval system has it
        approval_system = delivered[0].recipient_system
        cal = self.calendar
        start = day_of(a.submitted_at)
        if a.limit_days is not None:
            limit = a.limit_days
        elif (a.declared - start).days > 2 * 366:
            limit = MAX_LIMIT  # a declared deadline years away is a mistake: the mismatch alarm below says so
        else:
            limit = cal.count(start, a.declared)
        deadline = cal.add(start, limit)
        assert deadline is not None
        await tx.conn.execute(
            "INSERT INTO approval_cases (case_number, application_id, item_code, item_name, accepting_agency,"
            " accepting_name, applicant_name, portal_agency, portal_system, approval_system, submitted_at, start_date,"
            " limit_days, declared_deadline, promised_deadline, deadline, state, received_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'submitted', $17, $18)",
            a.case_number,
            uuid.UUID(msg.message_id),
            a.item_code,
            a.item_name,
            a.accepting_code,
            a.accepting_name,
            a.applicant_name,
            msg.sender_agency,
            msg.sender_system,
            approval_system,
            a.submitted_at,
            start,
            limit,
            a.declared,
            a.promised,
            deadline,
            msg.received_at,
            tx.now,
        )
        await self._event(
            tx,
            a.case_number,
            "application",
            a.submitted_at,
            msg=msg.message_id,
            state="submitted",
            note=f"法定时限 {limit} 个工作日，法定办结期限 {deadline}",
        )
        if deadline != a.declared:
            await tx.alarm(
                "APPROVAL_DEADLINE_MISMATCH",
                a.case_number,
                "申请所报法定办结期限与枢纽按工作日历计算的不一致",
                f"case {a.case_number}: declared statutory deadline {a.declared}, the hub counts {limit} working days "
                f"from {start} to {deadline}; the hub supervises by {deadline} (check routes/calendar/cn-holidays.toml "
                "and the approval system's calendar)",
            )
        await self._gap_alarm(tx, a.case_number, start, deadline)
        await self._arm(tx, a.case_number, start, deadline)
        case = await tx.conn.fetchrow("SELECT * FROM approval_cases WHERE case_number = $1", a.case_number)
        await self._feedback(
            tx,
            case,
            key=f"opened/{a.case_number}",
            title=f"申请已送达审批系统：{a.item_name}（{a.case_number}）",
            text=f"您的申请（案件编号 {a.case_number}，{a.item_name}）已送达{a.accepting_name}的审批系统。法定办理时限"
            f" {limit} 个工作日，法定办结期限 {deadline:%Y年%m月%d日}（中止、补正期间不计入）。"
            f" Your application reached the approval system; statutory deadline {deadline}.",
            refers_to=msg.message_id,
        )

    # ------------------------------------------------------------------ status

    async def _on_status(self, tx: Tx, msg: FedMessage) -> None:
        env = await tx.envelope(msg)
        assert env.body is not None
        b = env.body
        case_number = _t(b, S_NS, "CaseNumber") or ""
        status = _t(b, S_NS, "Status") or ""
        at = _ts(_t(b, S_NS, "At")) or msg.created
        case = await self._checked(tx, msg, case_number, "status")
        if case is None:
            return
        new = next_state(case["state"], status)
        if new is None:
            await self._event(tx, case_number, "refused", at, msg=msg.message_id, state=case["state"], note=status)
            await tx.alarm(
                "APPROVAL_TRANSITION_INVALID",
                msg.message_id,
                "审批进度与案件当前状态不符，未采纳",
                f"status {status} ({msg.message_id}) for case {case_number} in state {case['state']} is not a "
                "transition the hub follows; nothing changed",
            )
            return
        day = day_of(at)
        await self._move_pause(tx, case, new, day)
        pauses = await self._pauses(tx, case_number)
        deadline = None if new in PAUSED else self.calendar.add(case["start_date"], case["limit_days"], pauses)
        if new in TERMINAL:
            deadline = case["deadline"]
        await tx.conn.execute(
            "UPDATE approval_cases SET state = $2, handler = COALESCE($3, handler), reported_deadline ="
            " COALESCE($4, reported_deadline), deadline = $5, decided_on = $6, updated_at = $7 WHERE case_number = $1",
            case_number,
            new,
            _t(b, S_NS, "Handler"),
            _date(_t(b, S_NS, "StatutoryDeadline")),
            deadline,
            day if new in TERMINAL else None,
            tx.now,
        )
        await self._event(tx, case_number, "status", at, msg=msg.message_id, state=new, note=_t(b, S_NS, "Note"))
        if new in TERMINAL:
            await self._arm(tx, case_number, case["start_date"], None)
            await tx.clear_alarm("APPROVAL_OVERDUE", case_number)
        else:
            if deadline is not None:  # also when unchanged: the calendar may have been corrected since
                await self._gap_alarm(tx, case_number, case["start_date"], deadline)
            if deadline != case["deadline"]:
                await self._arm(tx, case_number, case["start_date"], deadline)
        updated = await tx.conn.fetchrow("SELECT * FROM approval_cases WHERE case_number = $1", case_number)
        what = STATE_ZH[new].split(" ")[0]
        if new in PAUSED:
            what += "，办理时限暂停计算"
        elif deadline is not None:
            what += f"，法定办结期限 {deadline:%Y年%m月%d日}"
        await self._forward_if_missed(tx, updated, msg, what)

    async def _move_pause(self, tx: Tx, case: Any, new: str, day: date) -> None:
        """Close the open pause when the case leaves it (its day stops the clock too); open one when it enters one."""
        old = case["state"]
        if old == new:
            return
        if old in PAUSED:
            await tx.conn.execute(
                "UPDATE approval_pauses SET until = GREATEST($2, since) WHERE case_number = $1 AND until IS NULL",
                case["case_number"],
                day,
            )
        if new in PAUSED:
            await tx.conn.execute(
                "INSERT INTO approval_pauses (case_number, since, reason) VALUES ($1, $2, $3)"
                " ON CONFLICT (case_number, since, reason) DO UPDATE SET until = NULL",
                case["case_number"],
                day,
                PAUSED[new],
            )

    # ------------------------------------------------------------------ decision

    async def _on_decision(self, tx: Tx, msg: FedMessage) -> None:
        env = await tx.envelope(msg)
        assert env.body is not None
        b = env.body
        case_number = _t(b, D_NS, "CaseNumber") or ""
        case = await self._checked(tx, msg, case_number, "decision")
        if case is None:
            return
        decided_at = _ts(_t(b, D_NS, "DecidedAt")) or msg.created
        outcome = _t(b, D_NS, "Outcome") or ""
        deciding = _t(b, D_NS, "DecidingAgency/AgencyCode")
        if case["state"] in TERMINAL or deciding != case["accepting_agency"]:
            why = (
                f"the case is already closed ({case['state']})"
                if case["state"] in TERMINAL
                else f"the deciding agency {deciding} is not the accepting agency {case['accepting_agency']}"
            )
            await self._event(
                tx, case_number, "refused", decided_at, msg=msg.message_id, state=case["state"], note=outcome
            )
            await tx.alarm(
                "APPROVAL_TRANSITION_INVALID",
                msg.message_id,
                "审批决定与案件当前状态或受理机关不符，未采纳",
                f"decision {msg.message_id} for case {case_number}: {why}; nothing changed",
            )
            return
        day = day_of(decided_at)
        await self._move_pause(tx, case, "decided", day)
        pauses = await self._pauses(tx, case_number)
        deadline = self.calendar.add(case["start_date"], case["limit_days"], pauses)
        assert deadline is not None  # every pause is closed now
        await self._gap_alarm(tx, case_number, case["start_date"], deadline)
        used = self.calendar.count(case["start_date"], day, pauses)
        state = "approved" if outcome == "approved" else "rejected"
        await tx.conn.execute(
            "UPDATE approval_cases SET state = $2, deadline = $3, decided_on = $4, decision_number = $5,"
            " working_days = $6, late = $7, updated_at = $8 WHERE case_number = $1",
            case_number,
            state,
            deadline,
            day,
            _t(b, D_NS, "DecisionNumber"),
            used,
            day > deadline,
            tx.now,
        )
        await self._event(
            tx,
            case_number,
            "decision",
            decided_at,
            msg=msg.message_id,
            state=state,
            note=f"{_t(b, D_NS, 'DecisionNumber')}；用时 {used} 个工作日" + ("，超期" if day > deadline else ""),
        )
        await self._arm(tx, case_number, case["start_date"], None)
        await tx.clear_alarm("APPROVAL_OVERDUE", case_number)
        updated = await tx.conn.fetchrow("SELECT * FROM approval_cases WHERE case_number = $1", case_number)
        await self._forward_if_missed(
            tx, updated, msg, f"已作出{STATE_ZH[state].split(' ')[0]}决定（{_t(b, D_NS, 'DecisionNumber')}）"
        )

    # ------------------------------------------------------------------ supervision

    async def on_timer(self, tx: Tx, timer: Timer) -> None:
        level = TIMER_LEVEL.get(timer.kind)
        if level is None:
            return
        await self._calendar_alarm(tx)
        case = await self._case(tx, timer.key)
        if case is None or case["state"] in TERMINAL or case["deadline"] is None:
            return
        deadline: date = case["deadline"]
        if deadline.isoformat() != timer.data.get("deadline"):
            return  # armed for a deadline the case no longer has
        if level == "reminder" and tx.now >= end_of(deadline):
            return  # already overdue: the overdue supervision says so
        today = day_of(tx.now)
        left = days_remaining(self.calendar, today, deadline)
        key = f"supervision/{case['case_number']}/{level}/{deadline.isoformat()}"
        recipients = supervision_recipients(tx.directory, case["accepting_agency"], level)
        if not recipients:
            await tx.alarm(
                "APPROVAL_NO_SUPERVISOR",
                case["case_number"],
                "找不到接收督办的责任单位或督办单位",
                f"case {case['case_number']}: no system of agency {case['accepting_agency']} or of its parents "
                "accepts approval.supervision; the supervision was not sent",
            )
            return
        if level == "supervise":
            # Armed here, also when this supervision was sent before (a case suspended after its deadline, then
            # resumed, keeps that deadline; its timers were disarmed while it was stopped): escalated once,
            # ESCALATE_AFTER working days after the deadline on which the clock ran (the paused days do not count).
            escalated = await tx.conn.fetchval(
                "SELECT 1 FROM approval_supervisions WHERE case_number = $1 AND level = 'escalate' AND deadline = $2",
                case["case_number"],
                deadline,
            )
            if not escalated:
                pauses = await self._pauses(tx, case["case_number"])
                await tx.schedule(
                    "escalate",
                    case["case_number"],
                    end_of(self.calendar.add(deadline, ESCALATE_AFTER, pauses) or deadline),
                    {"deadline": deadline.isoformat()},
                )
        inserted = await tx.conn.fetchval(
            "INSERT INTO approval_supervisions (case_number, level, deadline, message_id, sent_at, recipients)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1",
            case["case_number"],
            level,
            deadline,
            uuid.UUID(process_id(NAME, key)),
            tx.now,
            [r.system or r.agency or "" for r in recipients],
        )
        if inserted is None:
            return
        reply_by = (
            datetime.combine(deadline, time(17, 0), CN_TZ)
            if level == "reminder"
            else datetime.combine(self.calendar.add(today, REPLY_WITHIN) or today, time(17, 0), CN_TZ)
        )
        body = supervision_body(
            case_number=case["case_number"],
            item_name=case["item_name"],
            level=level,
            deadline=deadline,
            today=today,
            left=left,
            responsible_name=case["accepting_name"],
            responsible_code=case["accepting_agency"],
            handler=case["handler"],
            reply_by=reply_by,
        )
        app_id = str(case["application_id"])
        await tx.send(
            SUPERVISION,
            recipients,
            body,
            key=key,
            urgency="平件" if level == "reminder" else "加急",
            business_ref=case["case_number"],
            conversation_id=app_id,
        )
        requirement = requirement_text(level, deadline, today, left, reply_by)
        await self._event(tx, case["case_number"], level, tx.now, msg=process_id(NAME, key), note=requirement)
        # The case's handlers work in the approval system: it is told too (every system accepts a hub.notice).
        await tx.notice(
            [Recipient.to(tx.directory.system(case["approval_system"]).agency, case["approval_system"])],
            kind="approval-at-risk" if level == "reminder" else "approval-overdue",
            title=f"审批{LEVEL_ZH[level].split(' ')[0]}：{case['item_name']}（{case['case_number']}）",
            text=f"{case['accepting_name']}：{requirement}",
            key=f"notice/{case['case_number']}/{level}/{deadline.isoformat()}",
            refers_to=app_id,
            case_ref=case["case_number"],
            deadline=end_of(deadline),
            urgency="平件" if level == "reminder" else "加急",
        )
        if level == "reminder":
            return
        await tx.conn.execute(
            "UPDATE approval_cases SET overdue_at = COALESCE(overdue_at, $2), updated_at = $2 WHERE case_number = $1",
            case["case_number"],
            tx.now,
        )
        await tx.alarm(
            "APPROVAL_OVERDUE",
            case["case_number"],
            "审批案件超过法定办结期限",
            f"case {case['case_number']} ({case['item_code']}) of {case['accepting_agency']} passed its statutory "
            f"deadline {deadline}; {LEVEL_ZH[level]} sent",
        )
        if level == "supervise":
            await self._feedback(
                tx,
                case,
                key=f"overdue/{case['case_number']}/{deadline.isoformat()}",
                title=f"您的申请已超过法定办结期限：{case['item_name']}（{case['case_number']}）",
                text=f"您的申请（案件编号 {case['case_number']}）已超过法定办结期限 {deadline:%Y年%m月%d日}，"
                f"枢纽已向{case['accepting_name']}及其上级机关发出督办。 The application is past its statutory "
                "deadline; the hub has sent a supervision notice to the accepting agency and its supervisor.",
                refers_to=app_id,
            )


def calendar_path(settings: Settings) -> Path:
    return Path(settings.routes_dir) / CALENDAR_FILE


def config_files(settings: Settings) -> list[Path]:
    """The files ``make`` reads (hub.processes.runner.ProcessFiles follows them)."""
    return [calendar_path(settings)]


def config_problem(settings: Settings) -> str | None:
    """Why ``make`` could not use the holiday calendar as it is now (None: it can)."""
    try:
        load_calendar(calendar_path(settings))
    except CalendarError as exc:
        return f"APPROVAL_CALENDAR_INVALID {exc}"
    return None


def make(context: Context, settings: Settings) -> ApprovalsProcess:
    """The process with the installation's calendar. A calendar file that cannot be used does not stop the engine
    (the other processes — emergencies among them — must run): deadlines count weekdays only, an error is logged and
    every approvals step raises the alarm APPROVAL_CALENDAR_INVALID until the file is corrected."""
    try:
        return ApprovalsProcess(load_calendar(calendar_path(settings)))
    except CalendarError as exc:
        log.error(
            "审批流程：节假日日历无法使用，暂按周一至周五计算"
            " the holiday calendar cannot be used, counting weekdays only: %s",
            exc,
        )
        return ApprovalsProcess(Calendar(), str(exc))


# ---------------------------------------------------------------------------------------------- status and figures


def _cn_day(d: date | None) -> str:
    return d.strftime("%Y-%m-%d") if d else "—"


def _cn_time(t: datetime | None) -> str:
    return t.astimezone(CN_TZ).strftime("%Y-%m-%d %H:%M") if t else "—"


async def read_status(conn: asyncpg.Connection, case_number: str) -> dict[str, Any] | None:
    case = await conn.fetchrow("SELECT * FROM approval_cases WHERE case_number = $1", case_number)
    if case is None:
        return None
    pauses = await conn.fetch(
        "SELECT since, until, reason FROM approval_pauses WHERE case_number = $1 ORDER BY since", case_number
    )
    events = await conn.fetch(
        "SELECT kind, state, at, note FROM approval_events WHERE case_number = $1 ORDER BY id", case_number
    )
    sups = await conn.fetch(
        "SELECT level, deadline, sent_at, recipients FROM approval_supervisions WHERE case_number = $1"
        " ORDER BY sent_at",
        case_number,
    )
    return {
        "case": dict(case),
        "pauses": [dict(p) for p in pauses],
        "events": [dict(e) for e in events],
        "supervisions": [dict(s) for s in sups],
    }


def render_status(s: dict[str, Any], cal: Calendar, now: datetime) -> list[str]:
    c = s["case"]
    today = day_of(now)
    pauses: list[Pause] = [(p["since"], p["until"]) for p in s["pauses"]]
    stopped = sum(cal.count(p["since"], p["until"] or today) for p in s["pauses"])
    lines = [
        f"审批案件 Approval case：{c['case_number']}",
        f"  许可事项 item: {c['item_name']} ({c['item_code']})",
        f"  受理机关 accepting agency: {c['accepting_name']} ({c['accepting_agency']})",
        f"  申请人 applicant: {c['applicant_name']}   申请渠道 via: {c['portal_system']}   审批系统 approval system: "
        f"{c['approval_system']}",
        f"  提交时间 submitted: {_cn_time(c['submitted_at'])}（北京时间 UTC+8）",
        f"  状态 state: {STATE_ZH.get(c['state'], c['state'])}",
        f"  法定时限 limit: {c['limit_days']} 个工作日 working days；计时中止 stopped: {stopped} 个工作日 working days",
    ]
    deadline = c["deadline"]
    # A case paused after its deadline is still overdue: the deadline had passed before the clock stopped.
    passed = None
    if deadline is None and c["state"] in PAUSED:
        passed = cal.add(c["start_date"], c["limit_days"], pauses)
    if deadline:
        shown = _cn_day(deadline)
    elif passed is not None:
        shown = f"{_cn_day(passed)}（计时中止前已到期 reached before the clock stopped）"
    else:
        shown = "计时中止，待恢复后重算 clock stopped"
    lines.append(
        f"  法定办结期限 deadline: {shown}"
        f"（枢纽按工作日历计算 hub）；申请所报 declared: {_cn_day(c['declared_deadline'])}；审批系统最新报送 reported: "
        f"{_cn_day(c['reported_deadline'])}"
        + (f"；承诺期限 promised: {_cn_day(c['promised_deadline'])}" if c["promised_deadline"] else "")
    )
    if c["state"] in ("approved", "rejected"):
        late = "超期办结 decided late" if c["late"] else "按期办结 decided in time"
        lines.append(
            f"  办结 decided: {_cn_day(c['decided_on'])} {c['decision_number'] or ''}，"
            f"用时 {c['working_days']} 个工作日 working days，{late}"
        )
    elif c["state"] not in TERMINAL and deadline is not None:
        if today > deadline:
            lines.append(f"  ✘ 已超期 overdue: {(today - deadline).days} 天 days")
        else:
            used = cal.count(c["start_date"], today - timedelta(days=1), pauses)  # days before today
            left = days_remaining(cal, today, deadline)
            mark = "⚠ 临期 at risk" if left <= AT_RISK_DAYS else "在期限内 in time"
            lines.append(
                f"  已用 used: {used} 个工作日（截至昨日 to yesterday）；剩余 left: {left} 个工作日 working days，"
                f"含今日 today included（{mark}）"
            )
    elif passed is not None and today > passed:
        lines.append(f"  ✘ 已超期 overdue: {(today - passed).days} 天 days（计时中止中 clock stopped）")
    for p in s["pauses"]:
        reason = "中止审查 suspended" if p["reason"] == "suspended" else "补正材料 supplement"
        lines.append(
            f"  计时中止 clock stopped: {reason} {_cn_day(p['since'])} → "
            f"{_cn_day(p['until']) if p['until'] else '至今 still'}"
        )
    if s["supervisions"]:
        lines.append("  督办 supervision:")
        for v in s["supervisions"]:
            lines.append(
                f"    {LEVEL_ZH.get(v['level'], v['level'])} {_cn_time(v['sent_at'])}"
                f"（期限 {_cn_day(v['deadline'])}）→ "
                f"{', '.join(v['recipients'])}"
            )
    else:
        lines.append("  督办 supervision: 无 none")
    lines.append("  经过 history:")
    for e in s["events"]:
        state = f" {STATE_ZH.get(e['state'], e['state']).split(' ')[0]}" if e["state"] else ""
        note = f" — {e['note'][:120]}" if e["note"] else ""
        lines.append(f"    {_cn_time(e['at'])} {EVENT_ZH.get(e['kind'], e['kind'])}{state}{note}")
    return lines


FIGURES_SQL = """
SELECT item_code, max(item_name) AS item_name, count(*) AS cases,
       count(*) FILTER (WHERE state IN ('approved', 'rejected')) AS decided,
       count(*) FILTER (WHERE state NOT IN ('approved', 'rejected', 'not_accepted')) AS open,
       count(*) FILTER (WHERE state IN ('suspended', 'supplement')) AS paused,
       count(*) FILTER (WHERE late OR (state NOT IN ('approved', 'rejected', 'not_accepted')
                                       AND overdue_at IS NOT NULL)) AS overdue,
       array_agg(working_days) FILTER (WHERE working_days IS NOT NULL) AS days
FROM approval_cases
WHERE ($1::date IS NULL OR start_date >= $1) AND ($2::text IS NULL OR item_code = $2)
GROUP BY item_code ORDER BY item_code
"""


async def read_figures(
    conn: asyncpg.Connection, since: date | None = None, item: str | None = None
) -> list[dict[str, Any]]:
    """Per approval item: cases, decided, open, paused, overdue (decided late, or open and found past its deadline by
    the engine's clock), the median working days of the decided ones, and the overdue rate (overdue / cases)."""
    out = []
    for r in await conn.fetch(FIGURES_SQL, since, item):
        days = list(r["days"] or [])
        out.append(
            {
                **{k: r[k] for k in ("item_code", "item_name", "cases", "decided", "open", "paused", "overdue")},
                "median_days": statistics.median(days) if days else None,
                "overdue_rate": r["overdue"] / r["cases"] if r["cases"] else 0.0,
            }
        )
    return out


def render_figures(rows: list[dict[str, Any]], today: date) -> list[str]:
    lines = [f"审批事项办理统计 Approval figures per item（截至 {today:%Y-%m-%d}，北京时间）"]
    if not rows:
        lines.append("  没有审批案件 no approval cases")
        return lines
    lines.append(
        "  事项编码 item | 事项名称 name | 案件数 cases | 已办结 decided | 在办 open | 计时中止 paused | "
        "办理用时中位数（工作日） median working days | 超期 overdue | 超期率 overdue rate"
    )
    total = {"cases": 0, "overdue": 0}
    for r in rows:
        median = "—" if r["median_days"] is None else f"{r['median_days']:g}"
        lines.append(
            f"  {r['item_code']} | {r['item_name']} | {r['cases']} | {r['decided']} | {r['open']} | {r['paused']} | "
            f"{median} | {r['overdue']} | {r['overdue_rate']:.1%}"
        )
        total["cases"] += r["cases"]
        total["overdue"] += r["overdue"]
    rate = total["overdue"] / total["cases"] if total["cases"] else 0.0
    lines.append(f"  合计 total: {total['cases']} 件 cases，超期 {total['overdue']} 件 overdue，超期率 {rate:.1%}")
    return lines


def _calendar_or_exit(settings: Settings) -> Calendar | None:
    try:
        return load_calendar(calendar_path(settings))
    except CalendarError as exc:
        print(f"APPROVAL_CALENDAR_INVALID 节假日日历无法使用 the holiday calendar cannot be used: {exc}")
        return None


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from hub import clock
    from hub.store.db import connection

    cal = _calendar_or_exit(settings)
    if cal is None:
        return 2

    async def read() -> dict[str, Any] | None:
        async with connection(settings.pg_dsn) as conn:
            return await read_status(conn, args.case)

    s = asyncio.run(read())
    if s is None:
        print(
            f"APPROVAL_NOT_FOUND 枢纽没有该审批案件的记录 no approval case followed by the hub has number {args.case}"
        )
        return 1
    print("\n".join(render_status(s, cal, clock.now())))
    return 0


def cmd_figures(args: argparse.Namespace, settings: Settings) -> int:
    from hub import clock
    from hub.store.db import connection

    since = None
    if args.since:
        try:
            since = date.fromisoformat(args.since)
        except ValueError:
            print(f"APPROVAL_BAD_DATE 日期格式应为 YYYY-MM-DD the date must be YYYY-MM-DD, not {args.since!r}")
            return 2
    today = day_of(clock.now())

    async def read() -> list[dict[str, Any]]:
        async with connection(settings.pg_dsn) as conn:
            return await read_figures(conn, since, args.item)

    print("\n".join(render_figures(asyncio.run(read()), today)))
    return 0


def cmd_calendar(args: argparse.Namespace, settings: Settings) -> int:
    cal = _calendar_or_exit(settings)
    if cal is None:
        return 2
    print(f"节假日日历 holiday calendar: {calendar_path(settings)}")
    for year, (status, source) in sorted(cal.years.items()):
        zh = "正式 official" if status == "official" else f"暂定 {status}"
        h = sum(1 for d in cal.holidays if d.year == year)
        w = sum(1 for d in cal.workdays if d.year == year)
        n = cal.count(date(year - 1, 12, 31), date(year, 12, 31))
        print(
            f"  {year}：{zh}，放假 {h} 天 holidays，调休上班 {w} 天 adjusted working days，全年工作日 {n} 天；{source}"
        )
    problems = cal.problems()
    for p in problems:
        print(f"  ⚠ {p}")
    return 1 if problems else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("approvals", help="approval cases followed and supervised by the hub (网上审批与督办)")
    ps = p.add_subparsers(dest="approvals_command", metavar="ACTION", required=True)
    q = ps.add_parser("status", help="one case: state, statutory deadline, pauses, supervision (审批案件办理情况)")
    q.add_argument("case", help="the case number, e.g. LCXK-220100-2026-000318")
    q.set_defaults(handler=cmd_status)
    q = ps.add_parser("figures", help="per approval item: cases, median working days, overdue rate (审批统计)")
    q.add_argument("--since", help="only cases started on or after this day (YYYY-MM-DD)")
    q.add_argument("--item", help="only this item code")
    q.set_defaults(handler=cmd_figures)
    q = ps.add_parser("calendar", help="the holiday calendar's years and what to check (exit 1) (节假日日历)")
    q.set_defaults(handler=cmd_calendar)
