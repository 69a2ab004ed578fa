"""The approval database's part of the demo: an application leaves the desk's database outbox, reaches the
provincial approval system (a client of the hub here, answering with approval.status and approval.decision), and
the status and the decision end up in the desk's database — and so does the hub's approval-feedback notice about the
application (the approvals process's), linked to the application's row.

``await demo(hub, work, out)`` against a ``TestHub(real=True)`` (the adapter's test) or ``TestHub(installation=…)``
(``make demo``): returns the problems it saw, empty when the part played as it should."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.approval_db.adapter import DECIDER, SYSTEM
from adapters.approval_db.simulator import AGENCY, ApprovalSystem, application
from adapters.sdk import to
from adapters.sdk.messages import ApprovalApplication, ApprovalDecision, ApprovalStatus
from adapters.sdk.messages.approval_decision_v1 import AgencyRef as DecisionAgency
from adapters.sdk.messages.approval_decision_v1 import Reasons
from adapters.sdk.messages.approval_status_v1 import AgencyRef as StatusAgency
from adapters.sdk.testing import AdapterProcess


def write_config(work: Path, home: Path, dsn: str, *, recipients: dict[str, str] | None = None, **extra: float) -> Path:
    """A settings file for ``hub adapter run approval_db`` in ``work``."""
    recipients = recipients or {DECIDER: "11220000013544357T"}
    lines = [
        f'system = "{SYSTEM}"',
        f'home = "{home}"',
        f'store = "{dsn}"',
        "max_batch = 64",
        "prefetch = 256",
        "concurrency = 2",
        "retry_limit = 30",
        "[adapter]",
        *(f"{k} = {v}" for k, v in extra.items()),
        "[adapter.recipients]",
        *(f'"{system}" = "{agency}"' for system, agency in recipients.items()),
    ]
    path = work / "approval_db.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something true; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.05)


def status_of(case_number: str, status: str = "accepted") -> ApprovalStatus:
    return ApprovalStatus(
        case_number=case_number,
        status=status,  # type: ignore[arg-type]
        at=datetime.now(UTC).replace(microsecond=0),
        handling_agency=StatusAgency(name="吉林省林业和草原局", agency_code="11220000013544357T"),
        handler="李秀梅",
        note="申请材料齐全，予以受理。",
    )


def decision_of(case_number: str, serial: int = 1) -> ApprovalDecision:
    now = datetime.now(UTC)
    return ApprovalDecision(
        case_number=case_number,
        decision_number=f"吉林草许准〔{now.year}〕{serial}号",
        outcome="approved",
        deciding_agency=DecisionAgency(name="吉林省林业和草原局", agency_code="11220000013544357T"),
        decided_at=now.replace(microsecond=0),
        reasons=Reasons(reason=["申请材料齐全，符合《中华人民共和国森林法》第五十六条及采伐限额管理规定。"]),
        licence_number=f"吉采字222403-{now.year}-{serial:04d}",
        valid_from=now.date(),
        valid_until=(now + timedelta(days=120)).date(),
    )


async def demo(hub: Any, work: Path, out: Callable[[str], None]) -> list[str]:
    problems: list[str] = []
    desk = ApprovalSystem(hub.settings.pg_dsn)
    proc: AdapterProcess | None = None
    created = False
    try:
        await desk.create()
        created = True
        home = await hub.enrol_home(SYSTEM)
        config = write_config(work, home, desk.dsn, poll_interval=2)
        decider = await hub.client(DECIDER)
        proc = AdapterProcess("approval_db", config, env=hub.settings.to_env(), log=work / "approval_db.log")
        await proc.start()

        case = f"LCXK-222403-{datetime.now(UTC).year}-{uuid.uuid4().hex[:6].upper()}"
        mid = await desk.submit(application(case))

        def arrived() -> list[Any]:
            return [
                d
                for d in hub.delivered(DECIDER)
                if isinstance(d.message, ApprovalApplication) and d.message.case_number == case
            ]

        async def got() -> list[Any]:
            return arrived()

        [delivery] = (await until(got, 60, f"application {case} at {DECIDER}"))[:1]
        [row] = [r for r in await desk.outbox() if r["message_id"] == mid]
        if row["state"] != "sent":
            await until(lambda: _state_is(desk, mid, "sent"), 30, f"outbox row of {case} marked sent")
        if delivery.context.message_id != mid:
            problems.append(f"approval_db: the application arrived as {delivery.context.message_id}, not {mid}")
        out(
            f"  ✔ 敦化市审批窗口数据库外发表中的行政许可申请 {case} 送达省行政审批系统"
            " the Dunhua desk's application left its database outbox and reached the provincial approval system"
        )

        for message in (status_of(case), decision_of(case)):
            await decider.send(
                message,
                to=to(AGENCY, SYSTEM),
                ref_to=mid,
                conversation_id=delivery.context.conversation_id,
                business_ref=case,
            )

        async def written_back() -> bool:
            return bool(await desk.statuses(case)) and bool(await desk.decisions(case))

        await until(written_back, 60, f"status and decision of {case} in the desk's database")
        [decision] = await desk.decisions(case)
        [status] = await desk.statuses(case)
        if decision["outcome"] != "approved" or decision["ref_to"] != mid or status["status"] != "accepted":
            problems.append(f"approval_db: the written-back rows of {case} are not what the decider sent")
        out(
            f"  ✔ 省行政审批系统的受理状态与准予许可决定（{decision['decision_number']}）写回审批数据库"
            " the status and the decision came back into the desk's database"
        )

        notice = await _feedback_recorded(hub, desk, case)
        if notice["refers_to"] != mid or notice["kind"] != "approval-feedback":
            problems.append(f"approval_db: the hub notice linked to {case} is not the feedback about its application")
        out(
            f"  ✔ 枢纽审批流程的进度反馈「{notice['title']}」记入审批数据库并关联到该申请"
            " the hub's approval-feedback notice is in the desk's database, linked to the application"
        )
    except Exception as exc:  # a problem of the part, reported as one line
        problems.append(f"approval_db: {type(exc).__name__}: {exc}"[:400])
    finally:
        if proc is not None:
            code = await proc.stop()
            if code != 0 and not problems:
                problems.append(f"approval_db: the adapter exited {code} on SIGTERM")
        if created:
            try:
                await desk.drop()
            except Exception as exc:
                problems.append(f"approval_db: could not drop the demo database: {exc}"[:300])
    return problems


async def _feedback_recorded(hub: Any, desk: ApprovalSystem, case: str) -> dict[str, Any]:
    """The approvals process's approval-feedback about ``case`` in the desk's hub_notices. An engine with only the
    approvals process reads the feed beside the running hub's own engine (if any): the engine's exactly-once holds
    across both, so the notice is sent once whichever engine takes the application."""
    from hub.pipeline.context import load_context
    from hub.processes.approvals import make as make_approvals
    from hub.processes.engine import ProcessEngine
    from hub.store.db import create_pool
    from hub.transport import Transport

    pool = await create_pool(hub.settings.pg_dsn, min_size=1, max_size=2)
    transport = None
    try:
        transport = await Transport.connect(hub.settings, client_name="approval-db-demo")
        context = await load_context(hub.settings, pool)
        engine = ProcessEngine(pool, context, [make_approvals(context, hub.settings)], transport=transport)

        async def recorded() -> list[dict[str, Any]]:
            await engine.run_once()
            return await desk.notices(case)

        [notice, *_] = await until(recorded, 60, f"the hub's feedback about {case} in the desk's database")
        return notice
    finally:
        if transport is not None:
            await transport.close()
        await pool.close()


async def _state_is(desk: ApprovalSystem, mid: str, state: str) -> bool:
    return any(r["message_id"] == mid and r["state"] == state for r in await desk.outbox())
