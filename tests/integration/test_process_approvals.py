"""The approvals process (hub/processes/approvals.py) against the real PostgreSQL and RabbitMQ with the real pipeline:
a case followed from application to decision with its statutory deadline in working days, suspension stopping the
clock, at-risk and overdue supervision (approval.supervision from the hub) sent once by two engines, feedback to the
applicant's portal, what is not applied (unknown case, invalid transition, another deciding agency), the status and
figures commands; a SIGKILL of the engine's process mid-way (deadlines still fire, once) and two engine processes;
and the demo part."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.envelope import Envelope, Party, Recipient, build, parse
from hub.envelope.model import NOTICE_NS
from hub.processes.approvals import ApprovalsProcess, calendar_path
from hub.processes.approvals_calendar import load_calendar
from hub.processes.approvals_demo import CHANGCHUN, ITEM, application, decision, status
from hub.processes.engine import CN_TZ, ProcessEngine, process_id
from tests.integration.harness import Hub

pytestmark = pytest.mark.asyncio

APPROVAL, PORTAL, PROVINCE = "prov-220000-approval", "prov-220000-portal", "11220000013544357T"
CHANGCHUN_OA, PROVINCE_OA = "city-220100-oa", "prov-220000-oa"
DUNHUA = ("敦化市林业局", "11222403014102856B")
EXTRA = {APPROVAL: PROVINCE, "county-222403-oa": DUNHUA[1], "city-222400-oa": "112224000140973218"}
V = "{urn:forestry-hub:approval.supervision:1}"


async def _hub(settings: Any) -> Hub:
    from hub.pipeline.client import enroll, load_signer

    hub = Hub(settings)
    await hub.setup()
    for system, agency in EXTRA.items():
        await enroll(settings, system, agency)
        hub.signers[system] = load_signer(settings, system)
    await hub.start_worker()
    return hub


async def _send(hub: Hub, system: str, message: Any, to: list[Recipient], *, service: str) -> Envelope:
    agency = EXTRA.get(system, PROVINCE)
    root = build(service=service, sender=Party(agency, system), recipients=to, body=message.to_element())
    data = hub.sign(system, root)
    env = Envelope.from_tree(parse(data))
    await hub.publish([(env, data)])
    reply = await hub.reply(system, env.message_id)
    assert reply.outcome == "accepted", (service, reply)
    return env


async def _apply(hub: Hub, case: str, submitted: datetime, limit: int | None, declared: date, **kw: Any) -> Envelope:
    return await _send(
        hub,
        PORTAL,
        application(case, submitted, limit=limit, declared=declared, **kw),
        [Recipient.to(PROVINCE, APPROVAL)],
        service="approval.application",
    )


async def _status(hub: Hub, case: str, what: str, at: datetime, to: list[Recipient], **kw: Any) -> Envelope:
    return await _send(hub, APPROVAL, status(case, what, at, **kw), to, service="approval.status")


def cn(y: int, m: int, d: int, h: int = 9) -> datetime:
    return datetime(y, m, d, h, 0, tzinfo=CN_TZ)


async def _engine(hub: Hub, now: list[datetime]) -> ProcessEngine:
    from hub.pipeline.context import load_context

    context = await load_context(hub.settings, hub.pool)
    proc = ApprovalsProcess(load_calendar(calendar_path(hub.settings)))
    return ProcessEngine(hub.pool, context, [proc], transport=hub.transport, clock=lambda: now[0])


async def _row(hub: Hub, sql: str, *args: Any) -> Any:
    async with hub.pool.acquire() as conn:
        return await conn.fetchrow(sql, *args)


async def _until(predicate: Any, what: str, timeout: float = 60.0, interval: float = 0.1) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await predicate()
        if got:
            return got
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(interval)


async def _fed(engine: ProcessEngine, hub: Hub, sql: str, *args: Any, what: str) -> Any:
    """Engine passes until ``sql`` returns a row (the pipeline's evidence chain may lag a moment)."""

    async def check() -> Any:
        await engine.run_once()
        return await _row(hub, sql, *args)

    return await _until(check, what)


async def _take(
    hub: Hub, system: str, service: str, *, kind: str | None = None, expect: int | None = None, timeout: float = 10.0
) -> list[Envelope]:
    """Messages of ``service`` (and hub.notice ``kind``) in a system's queue (the rest is taken and dropped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: list[Envelope] = []
    while loop.time() < deadline and (expect is None or len(found) < expect):
        for _, env in await hub.drain(system, timeout=0.5):
            if env.service != service or env.body is None:
                continue
            if kind is None or env.body.findtext(f"{{{NOTICE_NS}}}Kind") == kind:
                found.append(env)
    return found


CASE_SQL = "SELECT * FROM approval_cases WHERE case_number = $1"


# ---------------------------------------------------------------------------------------------------------------------


async def test_a_case_followed_paused_supervised_once_and_decided(fresh_settings: Any) -> None:
    hub = await _hub(fresh_settings)
    try:
        now = [cn(2026, 12, 7, 10)]
        a, b = await _engine(hub, now), await _engine(hub, now)
        case = "LCXK-220100-2026-100001"
        # Monday 2026-12-07, 10 working days: Dec 8–11, 14–18, 21 → 2026-12-21 (the declared deadline agrees).
        await _apply(hub, case, cn(2026, 12, 7), 10, date(2026, 12, 21))
        c = await _fed(a, hub, CASE_SQL, case, what="the case opened")
        assert (c["state"], c["deadline"], c["limit_days"], c["approval_system"], c["portal_system"]) == (
            "submitted",
            date(2026, 12, 21),
            10,
            APPROVAL,
            PORTAL,
        )
        await a.run_once()
        [opened] = await _take(hub, PORTAL, "hub.notice", kind="approval-feedback", expect=1)
        assert opened.message_id == process_id("approvals", f"opened/{case}") and opened.sender.system == "hub"
        assert "2026年12月21日" in (opened.body.findtext(f"{{{NOTICE_NS}}}Text") or "")

        # Accepted (to the portal and 长春); suspended on Wednesday 12-09, told to 长春 only: forwarded to the portal.
        await _status(hub, case, "accepted", cn(2026, 12, 8), [Recipient.to(PROVINCE, PORTAL), Recipient.cc(*_oa())])
        suspended = await _status(hub, case, "suspended", cn(2026, 12, 9, 15), [Recipient.to(*_oa())])

        async def paused() -> Any:
            await a.run_once()
            row = await _row(hub, CASE_SQL, case)
            return row["state"] == "suspended"

        await _until(paused, "the suspension followed")
        c = await _row(hub, CASE_SQL, case)
        assert c["deadline"] is None
        got = await _take(hub, PORTAL, "hub.notice", kind="approval-feedback", expect=1)
        assert [n.message_id for n in got] == [process_id("approvals", f"feedback/{suspended.message_id}")]
        assert "中止审查" in (got[0].body.findtext(f"{{{NOTICE_NS}}}Text") or "")
        # (the accepted status reached the portal itself: nothing forwarded for it)
        assert await _take(hub, PORTAL, "hub.notice", kind="approval-feedback", timeout=1.0) == []

        # The clock stopped: long past the old deadline nothing fires.
        now[0] = cn(2026, 12, 23, 10)
        assert (await a.run_once())["fired"] == 0
        # Resumed on Monday 12-14: Thu 10, Fri 11, Mon 14 do not count → deadline Thursday 2026-12-24.
        now[0] = cn(2026, 12, 14, 10)
        await _status(hub, case, "under-review", cn(2026, 12, 14), [Recipient.to(PROVINCE, PORTAL)])

        async def resumed() -> Any:
            await a.run_once()
            row = await _row(hub, CASE_SQL, case)
            return row["state"] == "under_review"

        await _until(resumed, "the resumption followed")
        assert (await _row(hub, CASE_SQL, case))["deadline"] == date(2026, 12, 24)

        # At risk from Tuesday 12-22 (3 working days left): two engines send one reminder, to 长春 and the province.
        now[0] = cn(
            2026,
            12,
            21,
            23,
        )
        assert (await a.run_once())["fired"] == 0
        now[0] = cn(2026, 12, 22, 8)
        r1, r2 = await asyncio.gather(a.run_once(), b.run_once())
        assert r1["fired"] + r2["fired"] == 1, (r1, r2)
        reminder = process_id("approvals", f"supervision/{case}/reminder/2026-12-24")
        for system in (CHANGCHUN_OA, PROVINCE_OA):
            got = await _take(hub, system, "approval.supervision", expect=1)
            assert [e.message_id for e in got] == [reminder], system
        body = got[0].body
        assert (body.findtext(f"{V}Level"), body.findtext(f"{V}DaysRemaining")) == ("reminder", "3")
        assert body.findtext(f"{V}StatutoryDeadline") == "2026-12-24" and got[0].sender.system == "hub"
        assert [r.system for r in got[0].recipients] == [CHANGCHUN_OA, PROVINCE_OA]
        [risk] = await _take(hub, APPROVAL, "hub.notice", kind="approval-at-risk", expect=1)
        assert "仅剩3个工作日" in (risk.body.findtext(f"{{{NOTICE_NS}}}Text") or "")

        # Overdue after Thursday 12-24: supervised once; the portal told; an alarm for the people on duty.
        now[0] = cn(2026, 12, 25, 0) + timedelta(minutes=1)
        r1, r2 = await asyncio.gather(a.run_once(), b.run_once())
        assert r1["fired"] + r2["fired"] == 1, (r1, r2)
        supervise = process_id("approvals", f"supervision/{case}/supervise/2026-12-24")
        got = await _take(hub, CHANGCHUN_OA, "approval.supervision", expect=1)
        assert [e.message_id for e in got] == [supervise]
        assert (got[0].body.findtext(f"{V}Level"), got[0].body.findtext(f"{V}DaysOverdue")) == ("supervise", "1")
        assert [e.message_id for e in await _take(hub, PROVINCE_OA, "approval.supervision", expect=1)] == [supervise]
        told = await _take(hub, PORTAL, "hub.notice", kind="approval-feedback", expect=1)
        assert [n.message_id for n in told] == [process_id("approvals", f"overdue/{case}/2026-12-24")]
        alarm = await _row(hub, "SELECT code, cleared_at FROM process_alarms WHERE ref = $1", case)
        assert alarm["code"] == "APPROVAL_OVERDUE" and alarm["cleared_at"] is None
        r1, r2 = await asyncio.gather(a.run_once(), b.run_once())
        assert r1["fired"] + r2["fired"] == 0
        assert await _take(hub, CHANGCHUN_OA, "approval.supervision", timeout=1.0) == []

        out = await hub.cli("approvals", "status", case)
        assert out.returncode == 0, out.stderr
        assert "2026-12-24" in out.stdout and "中止审查 suspended 2026-12-09 → 2026-12-14" in out.stdout
        assert "督办 supervised" in out.stdout and "预警提醒 reminder" in out.stdout

        # Decided on Monday 12-28, late: 12 working days used (Dec 8, 9, 15–18, 21–25, 28); the alarm cleared;
        # the escalation disarmed (nothing fires past its time).
        await _send(
            hub,
            APPROVAL,
            decision(case, cn(2026, 12, 28, 16)),
            [Recipient.to(PROVINCE, PORTAL)],
            service="approval.decision",
        )

        async def decided() -> Any:
            await a.run_once()
            row = await _row(hub, CASE_SQL, case)
            return row["state"] == "approved"

        await _until(decided, "the decision followed")
        c = await _row(hub, CASE_SQL, case)
        assert (c["working_days"], c["late"], c["decided_on"]) == (12, True, date(2026, 12, 28))
        alarm = await _row(hub, "SELECT cleared_at FROM process_alarms WHERE ref = $1", case)
        assert alarm["cleared_at"] is not None
        now[0] = cn(2027, 1, 10)
        assert (await a.run_once())["fired"] == 0
        async with hub.pool.acquire() as conn:
            sent = await conn.fetch(
                "SELECT level FROM approval_supervisions WHERE case_number = $1 ORDER BY level", case
            )
        assert [r["level"] for r in sent] == ["reminder", "supervise"]
    finally:
        await hub.close()


def _oa() -> tuple[str, str]:
    return (CHANGCHUN[1], CHANGCHUN_OA)


async def test_what_is_not_applied_and_the_figures(fresh_settings: Any) -> None:
    hub = await _hub(fresh_settings)
    try:
        now = [cn(2026, 12, 7, 10)]
        engine = await _engine(hub, now)
        to_portal = [Recipient.to(PROVINCE, PORTAL)]
        # A county case whose declared deadline does not agree with the hub's calendar count: an alarm, the hub's
        # deadline rules (Friday 12-04 + 5 working days = Friday 12-11; declared 12-10).
        county = "LCXK-222403-2026-000007"
        await _apply(hub, county, cn(2026, 12, 4), 5, date(2026, 12, 10), accepting=DUNHUA)
        c = await _fed(engine, hub, CASE_SQL, county, what="the county case opened")
        assert c["deadline"] == date(2026, 12, 11)
        # A status for a case the hub never opened; not-accepted after acceptance; a decision by another agency.
        unknown = await _status(hub, "LCXK-000000-2026-000001", "accepted", cn(2026, 12, 7), to_portal)
        await _status(hub, county, "accepted", cn(2026, 12, 7), to_portal, agency=DUNHUA)
        wrong = await _status(hub, county, "not-accepted", cn(2026, 12, 7, 11), to_portal, agency=DUNHUA)
        other = await _send(
            hub, APPROVAL, decision(county, cn(2026, 12, 8)), to_portal, service="approval.decision"
        )  # decided by 长春, not the accepting 敦化
        # A second application with the same case number.
        again = await _apply(hub, county, cn(2026, 12, 7), 5, date(2026, 12, 14), accepting=DUNHUA)
        # No limit given and a declared deadline years away: followed with the longest limit (365 working days,
        # into 2028, which the calendar does not list), and said.
        far = "LCXK-220100-2026-999999"
        await _apply(hub, far, cn(2026, 12, 7), None, date(2031, 12, 31))

        async def alarms() -> Any:
            await engine.run_once()
            async with hub.pool.acquire() as conn:
                rows = await conn.fetch("SELECT code, ref FROM process_alarms WHERE process = 'approvals'")
            return rows if len(rows) == 7 else None

        rows = await _until(alarms, "seven alarms")
        assert sorted((r["code"], r["ref"]) for r in rows) == sorted(
            [
                ("APPROVAL_DEADLINE_MISMATCH", county),
                ("APPROVAL_CASE_UNKNOWN", unknown.message_id),
                ("APPROVAL_TRANSITION_INVALID", wrong.message_id),
                ("APPROVAL_TRANSITION_INVALID", other.message_id),
                ("APPROVAL_CASE_DUPLICATE", again.message_id),
                ("APPROVAL_DEADLINE_MISMATCH", far),
                ("APPROVAL_CALENDAR_GAP", far),
            ]
        )
        assert (await _row(hub, CASE_SQL, far))["limit_days"] == 365
        c = await _row(hub, CASE_SQL, county)
        assert c["state"] == "accepted" and c["deadline"] == date(2026, 12, 11)

        # Past the deadline the county case is supervised: 敦化 (to), 延边州 (its supervisor); escalated 5 working
        # days later (12-18): the province too.
        now[0] = cn(2026, 12, 12, 1)
        await engine.run_once()
        got = await _take(hub, "county-222403-oa", "approval.supervision", expect=1)
        assert [r.system for r in got[0].recipients] == ["county-222403-oa", "city-222400-oa"]
        # Suspended and resumed after its deadline: the deadline stays (it had passed), the case is not supervised
        # again, and the escalation still comes — 5 working days after the deadline on which the clock ran: Dec 14,
        # 16, 17, 18, 21 (Tuesday 12-15, the day it resumed, does not count).
        await _status(hub, county, "suspended", cn(2026, 12, 14), to_portal, agency=DUNHUA)
        await _status(hub, county, "under-review", cn(2026, 12, 15), to_portal, agency=DUNHUA)

        async def resumed() -> Any:
            await engine.run_once()
            row = await _row(hub, CASE_SQL, county)
            return row["state"] == "under_review"

        await _until(resumed, "the county case resumed")
        await engine.run_once()
        assert (await _row(hub, CASE_SQL, county))["deadline"] == date(2026, 12, 11)
        assert await _take(hub, "county-222403-oa", "approval.supervision", timeout=1.0) == []
        now[0] = cn(2026, 12, 19, 1)
        await engine.run_once()
        assert await _take(hub, PROVINCE_OA, "approval.supervision", timeout=1.0) == []
        now[0] = cn(2026, 12, 22, 0) + timedelta(minutes=1)
        await engine.run_once()
        got = await _take(hub, PROVINCE_OA, "approval.supervision", expect=1)
        assert got[0].body.findtext(f"{V}Level") == "escalate"
        assert [r.system for r in got[0].recipients] == ["county-222403-oa", "city-222400-oa", PROVINCE_OA]

        # Two 长春 cases of another item, one decided in time; the figures per item.
        for i, (sub, limit) in enumerate([(cn(2026, 12, 14), 20), (cn(2026, 12, 15), 20)]):
            case = f"LCXK-220100-2026-20000{i}"
            await _apply(
                hub,
                case,
                sub,
                limit,
                load_calendar(calendar_path(hub.settings)).add(sub.date(), limit) or date.today(),
                item=("000131002000", "林草种子生产经营许可证核发"),
            )
            await _fed(engine, hub, CASE_SQL, case, what="a case opened")
        await _send(
            hub,
            APPROVAL,
            decision("LCXK-220100-2026-200000", cn(2026, 12, 18), serial=2),
            to_portal,
            service="approval.decision",
        )

        async def decided() -> Any:
            await engine.run_once()
            row = await _row(hub, CASE_SQL, "LCXK-220100-2026-200000")
            return row["state"] == "approved"

        await _until(decided, "the decision followed")
        out = await hub.cli("approvals", "figures")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].startswith("审批事项办理统计")
        seed = [x for x in lines if x.strip().startswith("000131002000")]
        assert seed == ["  000131002000 | 林草种子生产经营许可证核发 | 2 | 1 | 1 | 0 | 4 | 0 | 0.0%"], lines
        felling = [x for x in lines if x.strip().startswith(ITEM[0])]
        assert felling == [f"  {ITEM[0]} | {ITEM[1]} | 2 | 0 | 2 | 0 | — | 1 | 50.0%"], lines
        assert "合计 total: 4 件 cases，超期 1 件 overdue，超期率 25.0%" in out.stdout
        one = await hub.cli("approvals", "figures", "--item", "000131002000", "--since", "2026-12-15")
        assert one.returncode == 0 and "合计 total: 1 件 cases，超期 0 件 overdue" in one.stdout, one.stdout
        missing = await hub.cli("approvals", "status", "LCXK-999999-2026-000009")
        assert missing.returncode == 1 and "APPROVAL_NOT_FOUND" in missing.stdout
        bad = await hub.cli("approvals", "figures", "--since", "12/01/2026")
        assert bad.returncode == 2 and "APPROVAL_BAD_DATE" in bad.stdout
    finally:
        await hub.close()


async def _state_is(engine: ProcessEngine, hub: Hub, case: str, state: str) -> None:
    async def reached() -> Any:
        await engine.run_once()
        return (await _row(hub, CASE_SQL, case))["state"] == state

    await _until(reached, f"the case {state}")


async def _levels(hub: Hub, case: str) -> list[str]:
    async with hub.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT level FROM approval_supervisions WHERE case_number = $1 ORDER BY sent_at, level", case
        )
    return [r["level"] for r in rows]


async def test_the_days_paused_after_the_deadline_do_not_count_toward_the_escalation(fresh_settings: Any) -> None:
    hub = await _hub(fresh_settings)
    try:
        now = [cn(2026, 12, 7, 10)]
        engine = await _engine(hub, now)
        case = "LCXK-220100-2026-400001"
        to_portal = [Recipient.to(PROVINCE, PORTAL)]
        # Monday 12-07, 3 working days → Thursday 12-10; supervised after it (the escalation armed for 12-17).
        await _apply(hub, case, cn(2026, 12, 7), 3, date(2026, 12, 10))
        await _fed(engine, hub, CASE_SQL, case, what="the case opened")
        now[0] = cn(2026, 12, 11, 0) + timedelta(minutes=1)
        await engine.run_once()
        assert await _levels(hub, case) == ["supervise"]
        # Accepted and suspended on Friday 12-11 (one working day after the deadline ran), resumed Monday 12-28:
        # Dec 12–28 do not count, so the 5th working day after the deadline is Monday 2027-01-04 (Dec 11, 29, 30,
        # 31; New Year's Day a holiday).
        now[0] = cn(2026, 12, 11, 10)
        await _status(hub, case, "accepted", cn(2026, 12, 11, 9), to_portal)
        await _state_is(engine, hub, case, "accepted")
        await _status(hub, case, "suspended", cn(2026, 12, 11, 10), to_portal)
        await _state_is(engine, hub, case, "suspended")
        now[0] = cn(2026, 12, 28, 10)
        await _status(hub, case, "under-review", cn(2026, 12, 28, 9), to_portal)
        await _state_is(engine, hub, case, "under_review")
        for _ in range(3):
            await engine.run_once()
        assert (await _row(hub, CASE_SQL, case))["deadline"] == date(2026, 12, 10)
        assert await _levels(hub, case) == ["supervise"]
        due = await _row(
            hub,
            "SELECT due_at FROM process_timers WHERE process = 'approvals' AND kind = 'escalate' AND key = $1",
            case,
        )
        assert due["due_at"] == cn(2027, 1, 5, 0)
        now[0] = cn(2027, 1, 4, 23)
        assert (await engine.run_once())["fired"] == 0
        now[0] = cn(2027, 1, 5, 0) + timedelta(minutes=1)
        await engine.run_once()
        assert await _levels(hub, case) == ["supervise", "escalate"]
    finally:
        await hub.close()


async def test_a_pause_moving_the_deadline_into_a_year_the_calendar_lacks_raises_the_gap_alarm(
    fresh_settings: Any,
) -> None:
    from hub.pipeline.context import load_context
    from hub.processes.approvals_calendar import Calendar

    hub = await _hub(fresh_settings)
    try:
        full = load_calendar(calendar_path(hub.settings))
        only_2026 = Calendar(
            frozenset(d for d in full.holidays if d.year == 2026),
            frozenset(d for d in full.workdays if d.year == 2026),
            {2026: full.years[2026]},
        )
        now = [cn(2026, 12, 14, 10)]
        context = await load_context(hub.settings, hub.pool)
        engine = ProcessEngine(
            hub.pool, context, [ApprovalsProcess(only_2026)], transport=hub.transport, clock=lambda: now[0]
        )
        case = "LCXK-220100-2026-400002"
        to_portal = [Recipient.to(PROVINCE, PORTAL)]
        gap_sql = "SELECT detail FROM process_alarms WHERE code = 'APPROVAL_CALENDAR_GAP' AND ref = $1"
        # Monday 12-14, 10 working days → Monday 12-28: within 2026, no gap.
        await _apply(hub, case, cn(2026, 12, 14), 10, date(2026, 12, 28))
        await _fed(engine, hub, CASE_SQL, case, what="the case opened")
        await _status(hub, case, "accepted", cn(2026, 12, 14, 11), to_portal)
        await _state_is(engine, hub, case, "accepted")
        assert await _row(hub, gap_sql, case) is None
        # Suspended Tuesday 12-15 to Tuesday 12-22: the deadline moves into 2027, which this calendar does not list.
        await _status(hub, case, "suspended", cn(2026, 12, 15, 10), to_portal)
        await _state_is(engine, hub, case, "suspended")
        await _status(hub, case, "under-review", cn(2026, 12, 22, 10), to_portal)
        await _state_is(engine, hub, case, "under_review")
        assert (await _row(hub, CASE_SQL, case))["deadline"].year == 2027
        gap = await _row(hub, gap_sql, case)
        assert gap is not None and "2027" in gap["detail"]
        # The operator adds 2027 to the calendar; the case's next recomputation (suspended and resumed again) finds
        # its period covered: the alarm is cleared, not left for the people on duty to clear by hand.
        engine = ProcessEngine(
            hub.pool, context, [ApprovalsProcess(full)], transport=hub.transport, clock=lambda: now[0]
        )
        await _status(hub, case, "suspended", cn(2026, 12, 23, 10), to_portal)
        await _state_is(engine, hub, case, "suspended")
        await _status(hub, case, "under-review", cn(2026, 12, 24, 10), to_portal)
        await _state_is(engine, hub, case, "under_review")
        assert (await _row(hub, CASE_SQL, case))["deadline"].year == 2027
        cleared = await _row(
            hub, "SELECT cleared_at FROM process_alarms WHERE code = 'APPROVAL_CALENDAR_GAP' AND ref = $1", case
        )
        assert cleared is not None and cleared["cleared_at"] is not None
    finally:
        await hub.close()


async def test_the_calendar_alarm_is_cleared_once_the_corrected_file_is_taken(
    fresh_settings: Any, tmp_path: Path
) -> None:
    import shutil

    from hub.pipeline.context import load_context
    from hub.processes.runner import ProcessFiles, make_processes

    routes = tmp_path / "routes"
    shutil.copytree(fresh_settings.routes_dir, routes)
    cal_file = routes / "calendar" / "cn-holidays.toml"
    good = cal_file.read_text(encoding="utf-8")
    cal_file.write_text(good.replace("[2027]", "[2027 broken"), encoding="utf-8")
    settings = fresh_settings.with_(routes_dir=routes)
    hub = await _hub(settings)
    try:
        now = [cn(2026, 12, 7, 10)]
        context = await load_context(hub.settings, hub.pool)
        files = ProcessFiles(settings)
        fingerprint = files.fingerprint()
        approvals = [p for p in make_processes(context, settings) if p.name == "approvals"]
        engine = ProcessEngine(hub.pool, context, approvals, transport=hub.transport, clock=lambda: now[0])
        engine.files, engine.files_fingerprint = files, fingerprint
        alarm_sql = "SELECT cleared_at, detail FROM process_alarms WHERE code = 'APPROVAL_CALENDAR_INVALID'"
        case = "LCXK-220100-2026-400003"
        await _apply(hub, case, cn(2026, 12, 7), 10, date(2026, 12, 21))
        await _fed(engine, hub, CASE_SQL, case, what="the case opened")
        alarm = await _row(hub, alarm_sql)
        assert alarm is not None and alarm["cleared_at"] is None
        assert "restart" not in alarm["detail"].replace("no restart", "")
        assert alarm["detail"].index("无需重启") < alarm["detail"].index("no restart")  # Chinese first
        # The file corrected: the engine takes it without a restart, and the next approvals step clears the alarm.
        cal_file.write_text(good, encoding="utf-8")
        assert await engine.follow_process_files()
        engine.processes = [p for p in engine.processes if p.name == "approvals"]
        engine._by_name = {p.name: p for p in engine.processes}
        await _status(hub, case, "accepted", cn(2026, 12, 8), [Recipient.to(PROVINCE, PORTAL)])
        await _state_is(engine, hub, case, "accepted")
        alarm = await _row(hub, alarm_sql)
        assert alarm["cleared_at"] is not None
    finally:
        await hub.close()


async def test_deadlines_fire_once_after_a_sigkill_and_with_two_engine_processes(
    fresh_settings: Any, tmp_path: Path
) -> None:
    hub = await _hub(fresh_settings)
    procs: list[subprocess.Popen[bytes]] = []
    clock = tmp_path / "clock"
    clock.write_text(cn(2026, 12, 7, 10).isoformat())

    def engine_process() -> subprocess.Popen[bytes]:
        with open(tmp_path / f"engine-{len(procs)}.log", "ab") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "processes", "run", "--clock-file", str(clock)],
                env=hub.env(),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        procs.append(p)
        return p

    async def case_row() -> Any:
        return await _row(hub, CASE_SQL, case)

    try:
        case = "LCXK-220100-2026-300001"
        # Monday 12-07, 5 working days → Monday 12-14; at risk from Thursday 12-10.
        await _apply(hub, case, cn(2026, 12, 7), 5, date(2026, 12, 14))
        killed = engine_process()
        await _until(case_row, "the engine process opened the case")

        # Past the at-risk time; the engine is SIGKILLed the moment its reminder is decided (committed, its
        # publication under way or not begun); two engines start in its place.
        reminder = process_id("approvals", f"supervision/{case}/reminder/2026-12-14")
        clock.write_text(cn(2026, 12, 10, 8).isoformat())

        async def decided() -> bool:
            async with hub.pool.acquire() as conn:
                return bool(await conn.fetchval("SELECT 1 FROM process_outbox WHERE message_id = $1::uuid", reminder))

        await _until(decided, "the reminder decided by the first engine", interval=0.005)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        engine_process(), engine_process()
        for system in (CHANGCHUN_OA, PROVINCE_OA):
            got = await _take(hub, system, "approval.supervision", expect=1, timeout=60)
            assert [e.message_id for e in got] == [reminder], system

        # Overdue, with both engines running: supervised once.
        clock.write_text((cn(2026, 12, 15, 0) + timedelta(minutes=5)).isoformat())
        supervise = process_id("approvals", f"supervision/{case}/supervise/2026-12-14")
        got = await _take(hub, CHANGCHUN_OA, "approval.supervision", expect=1, timeout=60)
        assert [e.message_id for e in got] == [supervise]
        await asyncio.sleep(2.0)  # both engines keep passing: nothing more arrives
        assert await _take(hub, CHANGCHUN_OA, "approval.supervision", timeout=1.0) == []
        assert [e.message_id for e in await _take(hub, PROVINCE_OA, "approval.supervision", timeout=5.0)] == [supervise]
        async with hub.pool.acquire() as conn:
            levels = await conn.fetch("SELECT level FROM approval_supervisions WHERE case_number = $1", case)
            outbox = await conn.fetchval(
                "SELECT count(*) FROM process_outbox WHERE process = 'approvals' AND service = 'approval.supervision'"
            )
            fired = await conn.fetch(
                "SELECT kind, fired_at IS NOT NULL AS fired FROM process_timers WHERE key = $1 ORDER BY kind", case
            )
        assert sorted(r["level"] for r in levels) == ["reminder", "supervise"]
        assert outbox == 2
        assert {r["kind"]: r["fired"] for r in fired} == {"at-risk": True, "escalate": False, "overdue": True}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        await hub.close()


async def test_the_demo_part_runs_on_a_real_hub() -> None:
    from adapters.sdk.testing import TestHub
    from hub.processes.approvals_demo import demo

    lines: list[str] = []
    async with TestHub(real=True) as hub:
        problems = await demo(hub, lines.append)
    assert problems == [], (problems, lines)
    assert any("督办" in line for line in lines), lines
