"""The meetings process's part of ``make demo``: a conflicting meeting refused.

1. 珲春市林业局 (``county-222404-oa``) books a video conference with branch venues at 延边州林业局 and 敦化市林业局;
   the hub holds its room and terminal; the video-conference system answers with meeting notices;
2. 敦化市林业局 confirms attendance (``meeting.confirm``);
3. a second booking of the same room and terminal, overlapping, is refused by PostgreSQL's exclusion constraint: the
   booker and the video-conference system get the hub's ``meeting-refused`` notice (``MEETING_SLOT_TAKEN``, the
   taken room and terminal and when);
4. an engine pass past the confirmation deadline reminds 延边州林业局, which has not confirmed (``meeting-reminder``),
   and not 敦化市林业局.

The video-conference system is played by a client of the demo's hub (its adapter has its own part, with the
simulated platform). ``hub`` is ``adapters.sdk.testing.TestHub`` joined to a running hub (or ``real=True``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from hub.processes.demo_kit import notices as _notices
from hub.processes.demo_kit import pass_now as _pass
from hub.processes.demo_kit import until as _until
from hub.processes.engine import CN_TZ

VIDEO, PROVINCE = "prov-220000-video", "11220000013544357T"
BOOKER = "county-222404-oa"
YANBIAN, DUNHUA = "city-222400-oa", "county-222403-oa"


async def _state(hub: Any, booking_id: str) -> str | None:
    from hub.store.db import connection

    async with connection(hub.settings.pg_dsn) as conn:
        return await conn.fetchval("SELECT state FROM meetings WHERE booking_id = $1::uuid", booking_id)  # type: ignore[no-any-return]


async def _free_morning(hub: Any, earliest: Any) -> datetime:
    """09:00 of ``earliest``, or of the day after the last slot the hub's register holds, whichever is later."""
    from hub.store.db import connection

    async with connection(hub.settings.pg_dsn) as conn:
        last = await conn.fetchval("SELECT max(upper(slot)) FROM meeting_slots WHERE held")
    day = earliest
    if last is not None:
        day = max(day, last.astimezone(CN_TZ).date() + timedelta(days=1))
    return datetime(day.year, day.month, day.day, 9, 0, tzinfo=CN_TZ)


async def _timers_at(hub: Any, at: datetime) -> None:
    """Fire the meetings process's timers due by ``at`` (a later time) and publish what they send. Only this
    process's: the other processes' deadlines in the demo's hub are left to their own time."""
    from hub.processes.engine import ProcessEngine
    from hub.processes.meetings import MeetingsProcess
    from hub.processes.runner import open_engine

    engine, close = await open_engine(hub.settings)
    try:
        later = ProcessEngine(
            engine.pool, engine.context, [MeetingsProcess()], transport=engine.transport, clock=lambda: at
        )
        await (
            later.timers_once()
        )  # (not run_once: its feed would move the shared cursor past other processes' messages)
        await later.publish_once()
    finally:
        await close()


async def demo(hub: Any, say: Callable[[str], None]) -> list[str]:
    from adapters.sdk import to
    from adapters.video_conference.demo import BOOKER_AGENCY, BRANCHES, booking, confirm
    from adapters.video_conference.mapping import notice

    problems: list[str] = []
    say("视频会议流程：预约 → 通知 → 回执 → 会前催办；时段冲突的预约被拒 Meetings: a conflicting booking refused")
    try:
        booker, video = await hub.client(BOOKER), await hub.client(VIDEO)
        venues = {s: await hub.client(s) for s in (YANBIAN, DUNHUA)}
        # A room and terminal of its own each run (the demo's hub may have run before, and the adapter's demo books
        # 珲春's usual room), on the first morning after everything the hub holds (the branch venues' rooms are
        # shared with earlier runs and the adapter's demo): the day after tomorrow at 09:00, or later.
        tag = uuid.uuid4().int
        room, terminal = f"珲春市林业局{100 + tag % 900}号视频会议室", f"04407{tag % 100000:05d}"
        start = await _free_morning(hub, (datetime.now(CN_TZ) + timedelta(days=2)).date())
        title = "延边州冬春季森林草原防火视频调度会"
        first = booking(title, start, minutes=90, room=room, terminal=terminal)
        r1 = await booker.send(first, to=to(PROVINCE, VIDEO), urgency="加急")

        async def decided(mid: str) -> str | None:
            await _pass(hub)
            return await _state(hub, mid)

        if await _until(lambda: decided(r1.message_id), "the first booking followed") != "booked":
            problems.append("meetings: the first booking was not booked")
        say(
            f"  ✔ 珲春市林业局预约「{title}」（{start:%Y-%m-%d %H:%M}，90 分钟，{room}，终端 {terminal}）："
            "枢纽登记其会议室和终端 the hub holds the booking's room and terminal"
        )

        # The video-conference system's notices (its adapter's answer), and 敦化's confirmation.
        number = "880" + str(uuid.uuid4().int % 1000).zfill(3)
        answer: dict[str, Any] = {
            "meeting_number": number,
            "dial_in": [{"protocol": "sip", "address": f"sip:{number}@vc.lcj.jl.gov.cn"}],
        }
        body = notice(answer, first, r1.message_id)
        await video.send(body, to=to(BOOKER_AGENCY[1], BOOKER), ref_to=r1.message_id, urgency="加急")
        sent = {s: await video.send(body, to=to(BRANCHES[s][1], s), urgency="加急") for s in (YANBIAN, DUNHUA)}
        await hub.received(DUNHUA, 1, timeout=60)
        await venues[DUNHUA].send(confirm(number, sent[DUNHUA].message_id, BRANCHES[DUNHUA]), to=to(PROVINCE, VIDEO))
        say("  ✔ 视频会议系统向两个分会场发出会议通知，敦化市林业局报送参会回执 notices sent; 敦化 confirmed")

        # The same room and terminal, 30 minutes later: refused by the exclusion constraint.
        r2 = await booker.send(
            booking(
                "珲春市林业局防火值班调度会",
                start + timedelta(minutes=30),
                minutes=60,
                room=room,
                terminal=terminal,
                branches={},
            ),
            to=to(PROVINCE, VIDEO),
        )
        if await _until(lambda: decided(r2.message_id), "the second booking followed") != "refused":
            problems.append("meetings: the conflicting booking was not refused")
        await _pass(hub)
        got = await _until(
            lambda: _settled(lambda: _notices(hub, BOOKER, "meeting-refused", r2.message_id)),
            "the booker's meeting-refused notice",
        )
        text = got[0].message.text
        if not text.startswith("MEETING_SLOT_TAKEN") or r1.message_id not in text:
            problems.append(f"meetings: the refusal does not say why: {text[:120]}")
        if not await _until(
            lambda: _settled(lambda: _notices(hub, VIDEO, "meeting-refused", r2.message_id)),
            "the video system's meeting-refused notice",
        ):
            problems.append("meetings: the video-conference system was not told of the refusal")
        say(f"  ✔ 时段冲突的预约被枢纽拒绝（数据库排他约束），预约方与视频会议系统收到拒绝原因 refused: {text[:90]}…")

        # Past the confirmation deadline: 延边州 (no confirmation) is reminded, 敦化 is not.
        async def reminded() -> list[Any]:
            await _timers_at(hub, start - timedelta(hours=2) + timedelta(minutes=1))
            return _notices(hub, YANBIAN, "meeting-reminder", r1.message_id)

        await _until(reminded, "the reminder to 延边州")
        if _notices(hub, DUNHUA, "meeting-reminder", r1.message_id):
            problems.append("meetings: 敦化 confirmed and was reminded all the same")
        zh = "  ✔ 回执截止后，未回执的延边州林业局收到会前催办，已回执的敦化市林业局未被催办"
        say(f"{zh} the venue that did not confirm was reminded, the one that did was not")
    except Exception as exc:
        problems.append(f"meetings: {type(exc).__name__}: {str(exc)[:300]}")
    return problems


async def _settled(get: Callable[[], list[Any]]) -> list[Any]:
    return get()
