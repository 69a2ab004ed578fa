"""The process alarms page (``/processes``): what the process engine (hub/processes) raised for the people on duty —
an emergency alert nobody acknowledged in time, an approval case past its statutory deadline, a document whose
recipients are late, a process step that failed — newest first, open ones by default (``?show=all`` with cleared).

Clearing an alarm (``alarm.clear``: the duty operator, the administrator) needs a reason; it marks the alarm cleared
by that operator and records the operator action (reason in full, its SHA-256 in the evidence chain) in the same
transaction. Clearing is the people's acknowledgement that they have taken the matter in hand: the process itself
goes on (a late acknowledgement still counts; a deadline still fires).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from monitoring.app import POOL
from monitoring.auth import act, form_with_csrf, operator_of, refuse, render, require
from monitoring.views import form_reason, notice, whole_number
from monitoring.views.messages import CN_TZ

__all__ = ["setup"]

PAGE_SIZE = 100
NOTICES: dict[str, tuple[str, str]] = {
    "OPS_BAD_ID": ("告警编号不合规", "the alarm id is not a number"),
    "ALARM_NOT_FOUND": ("没有该告警", "there is no such alarm"),
    "ALARM_ALREADY_CLEARED": ("该告警已解除", "the alarm was already cleared"),
}
#: process name → (中文, English)
PROCESS_LABELS: dict[str, tuple[str, str]] = {
    "documents": ("公文跟踪", "documents"),
    "approvals": ("网上审批", "approvals"),
    "emergencies": ("应急预警", "emergencies"),
    "meetings": ("视频会议", "meetings"),
    "engine": ("流程引擎", "process engine"),
}


@dataclass(frozen=True)
class Alarm:
    id: int
    process: str
    code: str
    ref: str
    title: str
    detail: str
    raised_at: datetime
    updated_at: datetime
    cleared_at: datetime | None
    cleared_by: str | None


async def _alarms(pool: object, *, show_all: bool) -> list[Alarm]:
    async with pool.acquire() as conn:  # type: ignore[attr-defined]
        rows = await conn.fetch(
            "SELECT id, process, code, ref, title, detail, raised_at, updated_at, cleared_at, cleared_by"
            " FROM process_alarms WHERE $1 OR cleared_at IS NULL ORDER BY raised_at DESC, id DESC LIMIT $2",
            show_all,
            PAGE_SIZE,
        )
    return [Alarm(**dict(r)) for r in rows]


async def _page(request: web.Request, *, note: dict[str, str] | None = None, status: int = 200) -> web.Response:
    show_all = request.query.get("show") == "all"
    alarms = await _alarms(request.app[POOL], show_all=show_all)
    # What the redirect after a clearing names (an alarm's number), shown only in that shape: a link cannot put text
    # into the notice.
    target = request.query.get("target", "")
    done = request.query.get("done") == "cleared" and whole_number(target) is not None
    return render(
        request,
        "processes.html",
        {
            "alarms": alarms,
            "show": "all" if show_all else "open",
            "labels": PROCESS_LABELS,
            "cn_tz": CN_TZ,
            "notice": note,
            "done": done,
            "done_target": target if done else "",
        },
        status=status,
    )


@require("view")
async def processes_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@require("alarm.clear")
async def clear_alarm(request: web.Request) -> web.StreamResponse:
    form = await form_with_csrf(request)
    alarm_id = whole_number(request.match_info["alarm_id"])
    if alarm_id is None:
        raise refuse(400, "OPS_BAD_ID", *NOTICES["OPS_BAD_ID"])
    reason, refusal = form_reason(form)
    target = str(alarm_id)
    if refusal is not None:
        await act(
            request,
            "alarm.clear",
            reason=reason,
            target=target,
            outcome="refused",
            detail={"code": refusal},
        )
        return await _page(request, note=notice(refusal), status=400)
    op = operator_of(request)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT cleared_at, code, ref FROM process_alarms WHERE id = $1 FOR UPDATE", alarm_id)
        if row is None or row["cleared_at"] is not None:
            code = "ALARM_NOT_FOUND" if row is None else "ALARM_ALREADY_CLEARED"
            await act(
                request,
                "alarm.clear",
                reason=reason,
                target=target,
                outcome="refused",
                detail={"code": code},
                conn=conn,
            )
            failed = notice(code, "", NOTICES)
        else:
            await conn.execute(
                "UPDATE process_alarms SET cleared_at = now(), cleared_by = $2 WHERE id = $1", alarm_id, op.name
            )
            await act(
                request,
                "alarm.clear",
                reason=reason,
                target=target,
                detail={"code": row["code"], "ref": row["ref"]},
                conn=conn,
            )
            failed = None
    if failed is not None:
        return await _page(request, note=failed, status=404 if failed["code"] == "ALARM_NOT_FOUND" else 409)
    raise web.HTTPSeeOther(f"/processes?done=cleared&target={alarm_id}")


def setup(app: web.Application) -> None:
    app.router.add_get("/processes", processes_page)
    app.router.add_post("/processes/alarms/{alarm_id}/clear", clear_alarm)
