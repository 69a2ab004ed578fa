"""The approvals process's part of ``make demo``: an approval case supervised (督办).

1. 敦化市林业局's approval desk (``county-222403-approval``) submits a tree-felling licence application to the
   provincial approval system for 敦化市林业局, 3 working days' statutory limit; the hub opens the case, computes its
   statutory deadline from the holiday calendar and tells the desk (``approval-feedback``);
2. the approval system reports it accepted (``approval.status``), to 延边州林业局 only: the hub forwards the status
   to the desk, which the approval system left out;
3. an engine pass at a time after the deadline: the case is overdue — the hub sends ``approval.supervision`` (Level
   supervise) to 敦化市林业局 and to 延边州林业局 (its supervising unit), and tells the desk;

(The demo's public portal is the HTTPS-only system of the gateway's step: the gateway holds its queue for its HTTPS
polls, so this part uses the county desk as the applicant's channel; the process treats both alike.)
4. the approval system decides: the case is closed (``hub approvals status`` shows the supervision in its history).

``hub`` is ``adapters.sdk.testing.TestHub`` joined to a running hub (or ``real=True``). The builders (``application``,
``status``, ``decision``) are the integration tests' too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from hub.processes.demo_kit import pass_now as _pass
from hub.processes.demo_kit import until as _until
from hub.processes.engine import CN_TZ

PORTAL, APPROVAL, PROVINCE = "prov-220000-portal", "prov-220000-approval", "11220000013544357T"
CHANGCHUN = ("长春市林业局", "11220100013544550M")
CHANGCHUN_OA, PROVINCE_OA = "city-220100-oa", "prov-220000-oa"
#: The demo's applicant channel, accepting agency, its office system and its supervising unit's.
DESK, DUNHUA = "county-222403-approval", ("敦化市林业局", "11222403014102856B")
DUNHUA_OA, YANBIAN_OA, YANBIAN = "county-222403-oa", "city-222400-oa", "112224000140973218"
ITEM = ("000131001000", "林木采伐许可证核发")


def application(
    case: str,
    submitted: datetime,
    *,
    limit: int | None,
    declared: date,
    accepting: tuple[str, str] = CHANGCHUN,
    item: tuple[str, str] = ITEM,
) -> Any:
    from adapters.sdk.messages.approval_application_v1 import (
        AgencyRef,
        Applicant,
        ApprovalApplicationV1,
        Contact,
        Material,
        Materials,
    )

    return ApprovalApplicationV1(
        case_number=case,
        item_code=item[0],
        item_name=item[1],
        accepting_agency=AgencyRef(name=accepting[0], agency_code=accepting[1]),
        applicant=Applicant(
            kind="legal-person",
            name="长春净月潭林业有限公司",
            credit_code="91220101MA17Q8RN3R",
            contact=Contact(name="赵振华", phone="13904318826"),
        ),
        materials=Materials(material=[Material(name="林木采伐申请书", form="copy", copies=1)]),
        submitted_at=submitted,
        time_limit_working_days=limit,
        statutory_deadline=declared,
    )


def status(case: str, what: str, at: datetime, *, agency: tuple[str, str] = CHANGCHUN, note: str | None = None) -> Any:
    from adapters.sdk.messages.approval_status_v1 import AgencyRef, ApprovalStatusV1

    return ApprovalStatusV1(
        case_number=case,
        status=what,  # type: ignore[arg-type]
        at=at,
        handling_agency=AgencyRef(name=agency[0], agency_code=agency[1]),
        handler="陈晓燕",
        note=note,
    )


def decision(
    case: str, at: datetime, *, outcome: str = "approved", agency: tuple[str, str] = CHANGCHUN, serial: int = 1
) -> Any:
    from adapters.sdk.messages.approval_decision_v1 import AgencyRef, ApprovalDecisionV1

    return ApprovalDecisionV1(
        case_number=case,
        decision_number=f"长林采许〔{at.year}〕{serial}号",
        outcome=outcome,  # type: ignore[arg-type]
        deciding_agency=AgencyRef(name=agency[0], agency_code=agency[1]),
        decided_at=at,
    )


def _of(hub: Any, system: str, service: str, case: str) -> list[Any]:
    found = []
    for d in hub.delivered(system):
        if d.context.service != service:
            continue
        m = d.message
        if getattr(m, "case_number", None) == case or getattr(m, "case_ref", None) == case:
            found.append(d)
    return found


async def _case(hub: Any, case: str) -> Any:
    from hub.store.db import connection

    async with connection(hub.settings.pg_dsn) as conn:
        return await conn.fetchrow("SELECT * FROM approval_cases WHERE case_number = $1", case)


async def demo(hub: Any, say: Callable[[str], None]) -> list[str]:
    from adapters.sdk import to
    from hub.processes.approvals import calendar_path, end_of
    from hub.processes.approvals_calendar import load_calendar
    from hub.processes.runner import pass_at

    problems: list[str] = []
    say("网上审批与督办：受理 → 法定期限（工作日）→ 超期督办 → 办结 Approvals: an approval case supervised")
    try:
        portal, system = await hub.client(DESK), await hub.client(APPROVAL)
        await hub.client(DUNHUA_OA)
        await hub.client(YANBIAN_OA)
        cal = load_calendar(calendar_path(hub.settings))
        case = f"LCXK-222403-{datetime.now(CN_TZ).year}-{uuid.uuid4().int % 900000 + 100000}"
        submitted = datetime.now(CN_TZ).replace(microsecond=0)
        deadline = cal.add(submitted.date(), 3)
        assert deadline is not None
        sent = await portal.send(
            application(case, submitted, limit=3, declared=deadline, accepting=DUNHUA),
            to=to(PROVINCE, APPROVAL),
            business_ref=case,
        )

        async def opened() -> Any:
            await _pass(hub)
            return await _case(hub, case)

        c = await _until(opened, "the case opened")
        if c["deadline"] != deadline:
            problems.append(f"approvals: the hub's deadline {c['deadline']} is not {deadline}")
        await _until(lambda: _settled(_of(hub, DESK, "hub.notice", case)), "the desk's feedback")
        say(
            f"  ✔ 敦化市林业局审批窗口提交「{ITEM[1]}」申请（案件 {case}，法定时限 3 个工作日），枢纽登记案件，按节假日"
            f"日历算得法定办结期限 {deadline}，并告知申请渠道 case opened, deadline {deadline}, the desk told"
        )

        # Accepted, reported to 延边州林业局 only: the hub forwards it to the desk.
        await system.send(
            status(case, "accepted", datetime.now(CN_TZ).replace(microsecond=0), agency=DUNHUA),
            to=to(YANBIAN, YANBIAN_OA),
            ref_to=sent.message_id,
            business_ref=case,
        )

        async def forwarded() -> Any:
            await _pass(hub)
            return len(_of(hub, DESK, "hub.notice", case)) >= 2

        await _until(forwarded, "the status forwarded to the desk")
        say(
            "  ✔ 审批系统报送“已受理”（未抄送审批窗口），枢纽将进度反馈给申请人所用的窗口"
            " the status forwarded to the applicant's channel"
        )

        # After the deadline: supervised.
        await pass_at(hub.settings, ["approvals"], end_of(deadline) + timedelta(minutes=1))
        sup = await _until(
            lambda: _settled(_of(hub, DUNHUA_OA, "approval.supervision", case)), "the supervision to 敦化市林业局"
        )
        level = sup[0].message.level
        if level != "supervise":
            problems.append(f"approvals: the supervision's level is {level}, not supervise")
        if sup[0].context.sender.system != "hub":
            problems.append("approvals: the supervision was not sent by the hub")
        await _until(
            lambda: _settled(_of(hub, YANBIAN_OA, "approval.supervision", case)), "the supervision to 延边州林业局"
        )
        overdue_told = await _until(
            lambda: _settled([d for d in _of(hub, DESK, "hub.notice", case) if "超过法定办结期限" in d.message.title]),
            "the desk told of the overdue case",
        )
        say(
            f"  ✔ 期限 {deadline} 届满未办结：枢纽向敦化市林业局（责任单位）及延边州林业局（督办单位）发出"
            f"审批督办（approval.supervision，督办），并告知申请窗口 supervised: {sup[0].message.requirement[:60]}…"
        )

        # Decided: the case is closed, its timers disarmed.
        await system.send(
            decision(case, datetime.now(CN_TZ).replace(microsecond=0) + timedelta(seconds=1), agency=DUNHUA),
            to=to(DUNHUA[1], DESK),
            ref_to=sent.message_id,
            business_ref=case,
        )

        async def closed() -> Any:
            await _pass(hub)
            row = await _case(hub, case)
            return row is not None and row["state"] == "approved"

        await _until(closed, "the decision followed")
        say(f"  ✔ 审批系统作出准予许可决定，案件办结 decided; `hub approvals status {case}` 显示督办经过 shows it")
        if not overdue_told:
            problems.append("approvals: the applicant's channel was not told")
    except Exception as exc:
        problems.append(f"approvals: {type(exc).__name__}: {str(exc)[:300]}")
    return problems


async def _settled(found: list[Any]) -> list[Any]:
    return found
