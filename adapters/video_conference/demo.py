"""The video-conference adapter's part of ``make demo`` (and of its own integration test):

1. 珲春市林业局 (``county-222404-oa``, the booker) books a video conference with branch venues at 延边州林业局 and
   敦化市林业局; the simulated platform has the meeting, the booker gets the platform's ``meeting.notice`` (the
   reply to its booking, with the meeting number and dial-in), each branch venue's system gets its notice;
2. 敦化市林业局 confirms attendance (``meeting.confirm``): the platform records it;
3. a second booking of the same room and terminal in an overlapping slot is refused by the platform
   (``VC_SLOT_TAKEN``); the booker gets a signed ``delivery.refusal`` with the platform's reason;
4. the platform goes down while a booking arrives: the adapter's ``Retry`` puts the delivery off in RabbitMQ (it
   waits in ``ns.later.<d>s``, acknowledged, not held by the adapter: ``TestHub.put_off``); once the platform is
   back the booking is made once and the booker gets its ``meeting.notice``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from adapters.video_conference.simulator import VideoPlatform

SYSTEM = "prov-220000-video"
PROVINCE = "11220000013544357T"  # 吉林省林业和草原局 (the platform's agency)
BOOKER = "county-222404-oa"
BOOKER_AGENCY = ("珲春市林业局", "112224040141039416")
BRANCHES = {
    "city-222400-oa": ("延边朝鲜族自治州林业局", "112224000140973218"),
    "county-222403-oa": ("敦化市林业局", "11222403014102856B"),
}
CST = timezone(timedelta(hours=8))


def config_text(home: Path, platform: VideoPlatform, **extra: Any) -> str:
    """The adapter's TOML for a test or the demo."""
    values: dict[str, Any] = {
        "platform_url": platform.url,
        "token": platform.token,
        "request_timeout": 5.0,
        "retry_initial": 0.2,
        "max_retry_delay": 2.0,
        "notice_poll_interval": 0.1,
        **extra,
    }
    lines = [f'system = "{SYSTEM}"', f'home = "{home}"', "retry_limit = 100000", "", "[adapter]"]
    for key, value in values.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str | Path) else f"{key} = {value}")
    return "\n".join(lines) + "\n"


def booking(
    title: str,
    start: datetime,
    *,
    minutes: int = 60,
    room: str = "珲春市林业局二楼视频会议室",
    terminal: str | None = "043388401",
    branches: dict[str, tuple[str, str]] | None = None,
    notes: str | None = None,
) -> Any:
    """A meeting.booking from the booker (main venue at the booker, branch venues at ``branches``)."""
    from adapters.sdk.messages import MeetingBookingV1
    from adapters.sdk.messages import meeting_booking_v1 as b

    venues = [
        b.Venue(
            role="main",
            agency_name=BOOKER_AGENCY[0],
            agency_code=BOOKER_AGENCY[1],
            room=room,
            terminal_number=terminal,
        )
    ]
    for name, code in (BRANCHES if branches is None else branches).values():
        venues.append(
            b.Venue(role="branch", agency_name=name, agency_code=code, room=f"{name}视频会议室", terminal_number=None)
        )
    return MeetingBookingV1(
        title=title,
        start=start,
        duration_minutes=minutes,
        organizer=b.AgencyRef(name=BOOKER_AGENCY[0], agency_code=BOOKER_AGENCY[1]),
        venues=b.Venues(venue=venues),
        recording=False,
        contact=b.Contact(name="金明哲", phone="0440-7512345"),
        notes=notes,
    )


def confirm(number: str, notice_id: str, agency: tuple[str, str]) -> Any:
    from adapters.sdk.messages import MeetingConfirmV1
    from adapters.sdk.messages import meeting_confirm_v1 as c

    return MeetingConfirmV1(
        meeting_number=number,
        notice_message_id=notice_id,
        agency=c.AgencyRef(name=agency[0], agency_code=agency[1]),
        attendance="attend",
        attendees=c.Attendees(attendee=[c.Attendee(name="朴成浩", position="副局长")]),
        contact=c.Contact(name="李静", phone="0433-6222345"),
        confirmed_at=datetime.now(CST).replace(microsecond=0),
    )


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


def answers_to(hub: Any, system: str, ref: str) -> list[Any]:
    """The video system's answers to a booking (its meeting.notice or delivery.refusal), not the hub's process notices
    about it (hub.notice meeting-refused, which the meetings process sends when the hub's register refuses it)."""
    return [d for d in hub.delivered(system) if d.context.ref_to == ref and d.context.service != "hub.notice"]


async def demo(hub: Any, work: Path, out: Callable[[str], None]) -> list[str]:
    from adapters.sdk import to
    from adapters.sdk.testing import AdapterProcess
    from hub.processes.demo_kit import until as until_probe

    problems: list[str] = []
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    platform = await VideoPlatform().start()
    proc: AdapterProcess | None = None
    try:
        home = await hub.enrol_home(SYSTEM)
        cfg = work / "video_conference.toml"
        cfg.write_text(config_text(home, platform), encoding="utf-8")
        booker = await hub.client(BOOKER)
        branch_clients = {s: await hub.client(s) for s in BRANCHES}
        proc = AdapterProcess("video_conference", cfg, env={}, log=work / "video_conference.log")
        await proc.start()
        # a slot of its own each run (the demo's hub may have run before, and the hub's meetings register holds the
        # branch venues' rooms of every earlier booking): a working hour between 08:00 and 16:00 of one of the next
        # 600 days
        tag = uuid.uuid4().int
        start = (datetime.now(CST) + timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)
        start += timedelta(days=tag % 600, hours=(tag >> 32) % 9)
        title = "延边州冬春季森林草原防火工作视频调度会"

        # 1. booked on the platform; the booker and the branch venues get meeting.notice
        r1 = await booker.send(booking(title, start, minutes=90), to=to(PROVINCE, SYSTEM), urgency="加急")
        try:
            [reply] = await until(lambda: answers_to(hub, BOOKER, r1.message_id), 60, "the booker's meeting.notice")
            m = platform.by_key(r1.message_id)
            ok = (
                reply.context.service == "meeting.notice"
                and m is not None
                and reply.message.meeting_number == m.number
                and reply.message.booking_message_id == r1.message_id
            )
            notices = await until(
                lambda: (
                    (
                        got := {
                            s: d
                            for s in BRANCHES
                            for d in hub.delivered(s)
                            if d.context.service == "meeting.notice" and d.message.booking_message_id == r1.message_id
                        }
                    )
                    and len(got) == len(BRANCHES)
                    and got
                ),
                60,
                "the branch venues' meeting.notice",
            )
            if not ok:
                problems.append("video_conference: the booker's answer is not the platform's meeting.notice")
            else:
                out(
                    f"  ✔ 珲春市林业局预约的视频会议已在视频会议系统登记（会议号 {reply.message.meeting_number}），"
                    f"预约方收到会议通知，{len(notices)} 个分会场收到会议通知 the meeting was booked on the platform; "
                    "the booker and both branch venues got meeting.notice"
                )
            # 2. a branch venue confirms attendance: the platform records it
            dunhua = BRANCHES["county-222403-oa"]
            n = notices["county-222403-oa"]
            await branch_clients["county-222403-oa"].send(
                confirm(n.message.meeting_number, n.context.message_id, dunhua), to=to(PROVINCE, SYSTEM)
            )
            assert m is not None
            await until(lambda: dunhua[1] in m.attendance, 60, "the attendance on the platform")
            out(
                "  ✔ 敦化市林业局的参会回执（meeting.confirm）已记入视频会议系统 "
                "Dunhua's attendance confirmation reached the platform"
            )
        except TimeoutError as exc:
            problems.append(f"video_conference: not within 60 s: {exc}")

        # 3. the same room and terminal, overlapping: refused by the platform with its reason
        r2 = await booker.send(
            booking("珲春市林业局防火值班调度视频会", start + timedelta(minutes=30), minutes=60),
            to=to(PROVINCE, SYSTEM),
        )
        try:
            [ans] = await until(lambda: answers_to(hub, BOOKER, r2.message_id), 60, "the answer to the 2nd booking")
            code = getattr(ans.message, "code", "")
            reason = getattr(ans.message, "reason", "")
            if ans.context.service != "delivery.refusal" or code != "VC_SLOT_TAKEN" or platform.by_key(r2.message_id):
                problems.append(f"video_conference: the conflicting booking got {ans.context.service} {code}")
            else:
                out(
                    "  ✔ 时段冲突的预约被视频会议系统拒绝，预约方收到拒收原因 the conflicting booking was refused: "
                    f"{code} {reason[:80]}"
                )
        except TimeoutError as exc:
            problems.append(f"video_conference: not within 60 s: {exc}")
        # 4. the platform down while a booking arrives: put off in RabbitMQ, not held; booked once when it is back
        await platform.take_down()
        down = time.monotonic()
        r3 = await booker.send(
            booking("珲春市林业局森林防火值班调度视频会", start + timedelta(days=1), terminal=None, branches={}),
            to=to(PROVINCE, SYSTEM),
        )
        try:
            waiting = await until_probe(hub.put_off, "the booking put off in RabbitMQ while the platform is down", 30)
            await platform.bring_up()
            was_down = time.monotonic() - down
            [ans] = await until(lambda: answers_to(hub, BOOKER, r3.message_id), 60, "the answer once it was back")
            booked = [m for m in platform.meetings.values() if m.booking_key == r3.message_id]
            if ans.context.service != "meeting.notice" or len(booked) != 1:
                problems.append(
                    f"video_conference: after the platform was back the booking got {ans.context.service}, "
                    f"{len(booked)} meeting(s) on the platform"
                )
            else:
                queues = ", ".join(sorted(waiting))
                out(
                    f"  ✔ 视频会议系统停机 {was_down:.1f} 秒：适配器把这时到达的预约退回枢纽延期重投，"
                    f"预约在 RabbitMQ 的延迟队列（{queues}）中等待，不占适配器的预取窗口；"
                    f"平台恢复后登记一次（会议号 {booked[0].number}），预约方收到会议通知 "
                    f"the platform down for {was_down:.1f} s: the booking waited in RabbitMQ ({queues}), "
                    "put off by the adapter's Retry, not held by it; booked once when the platform was back"
                )
        except TimeoutError as exc:
            problems.append(f"video_conference: {exc}")
        finally:
            await platform.bring_up()
    except Exception as exc:
        problems.append(f"video_conference: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        if proc is not None:
            code = await proc.stop()
            if code != 0 and not problems:
                problems.append(f"video_conference: the adapter exited {code} on SIGTERM")
        await platform.stop()
    return problems
