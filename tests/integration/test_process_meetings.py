"""The meetings process (hub/processes/meetings.py) against the real PostgreSQL and RabbitMQ with the real pipeline:
meeting.booking → meeting.notice → meeting.confirm followed, reminders to the venues that have not confirmed (by a
moved clock, once, with two engines, and across a SIGKILL of the engine's process), a room or terminal already
booked for an overlapping slot refused by PostgreSQL's exclusion constraint (also when two transactions race), the
platform's refusal releasing the slots, and ``hub meetings status``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.video_conference.demo import BOOKER, BOOKER_AGENCY, BRANCHES, booking, confirm
from adapters.video_conference.mapping import notice as notice_for
from hub.envelope import Envelope, Party, Recipient, build, parse
from hub.envelope.model import NOTICE_NS
from hub.processes.engine import ProcessEngine, process_id
from hub.processes.meetings import MeetingsProcess, reserve
from tests.integration.harness import Hub

pytestmark = pytest.mark.asyncio

VIDEO, PROVINCE = "prov-220000-video", "11220000013544357T"
YANBIAN, DUNHUA = "city-222400-oa", "county-222403-oa"
EXTRA = {
    VIDEO: PROVINCE,
    BOOKER: BOOKER_AGENCY[1],
    YANBIAN: BRANCHES[YANBIAN][1],
    DUNHUA: BRANCHES[DUNHUA][1],
}


async def _hub(settings: Any) -> Hub:
    from hub.pipeline.client import enroll, load_signer

    hub = Hub(settings)
    await hub.setup()
    for system, agency in EXTRA.items():
        await enroll(settings, system, agency)
        hub.signers[system] = load_signer(settings, system)
    await hub.start_worker()
    return hub


async def _send(
    hub: Hub,
    system: str,
    body: Any,
    service: str,
    to: list[Recipient],
    *,
    ref_to: str | None = None,
    message_id: str | None = None,
) -> Envelope:
    root = build(
        service=service,
        sender=Party(EXTRA[system], system),
        recipients=to,
        body=body,
        urgency="加急",
        ref_to=ref_to,
        message_id=message_id,
    )
    data = hub.sign(system, root)
    env = Envelope.from_tree(parse(data))
    await hub.publish([(env, data)])
    reply = await hub.reply(system, env.message_id)
    assert reply.outcome == "accepted", (service, reply)
    return env


async def _book(hub: Hub, title: str, start: datetime, **kw: Any) -> Envelope:
    return await _send(
        hub, BOOKER, booking(title, start, **kw).to_element(), "meeting.booking", [Recipient.to(PROVINCE, VIDEO)]
    )


async def _notices(hub: Hub, booking_env: Envelope, start: datetime, number: str) -> dict[str, Envelope]:
    """What the video-conference adapter sends for a booked meeting: the booker's notice (its reply) and one per
    branch venue (to the agency's system)."""
    msg = booking(booking_env.body.findtext("{*}Title") if booking_env.body is not None else "", start)
    answer = {"meeting_number": number, "dial_in": [{"protocol": "sip", "address": f"sip:{number}@vc.lcj.jl.gov.cn"}]}
    body = notice_for(answer, msg, booking_env.message_id)
    out = {}
    out[BOOKER] = await _send(
        hub,
        VIDEO,
        body.to_element(),
        "meeting.notice",
        [Recipient.to(BOOKER_AGENCY[1], BOOKER)],
        ref_to=booking_env.message_id,
    )
    for system in (YANBIAN, DUNHUA):
        out[system] = await _send(
            hub, VIDEO, body.to_element(), "meeting.notice", [Recipient.to(EXTRA[system], system)]
        )
    return out


async def _engine(hub: Hub, now: list[datetime]) -> ProcessEngine:
    from hub.pipeline.context import load_context

    context = await load_context(hub.settings, hub.pool)
    return ProcessEngine(hub.pool, context, [MeetingsProcess()], transport=hub.transport, clock=lambda: now[0])


async def _state(hub: Hub, booking_id: str) -> str | None:
    async with hub.pool.acquire() as conn:
        return await conn.fetchval("SELECT state FROM meetings WHERE booking_id = $1::uuid", booking_id)  # type: ignore[no-any-return]


async def _fed(engine: ProcessEngine, hub: Hub, booking_id: str) -> str:
    """Run engine passes until the booking is decided (the pipeline's evidence chain may lag a moment)."""
    for _ in range(200):
        await engine.run_once()
        state = await _state(hub, booking_id)
        if state is not None:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"booking {booking_id} never reached the process")


async def _notices_of(
    hub: Hub, system: str, kind: str, *, expect: int | None = None, timeout: float = 10.0
) -> list[Any]:
    """The hub.notices of ``kind`` in a system's queue (everything else there is taken and dropped): until
    ``expect`` of them arrived, or for ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: list[Any] = []
    while loop.time() < deadline and (expect is None or len(found) < expect):
        for _, env in await hub.drain(system, timeout=0.5):
            if env.service == "hub.notice" and env.body is not None:
                if env.body.findtext(f"{{{NOTICE_NS}}}Kind") == kind:
                    found.append(env)
    return found


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


# ---------------------------------------------------------------------------------------------------------------------


async def test_booking_notice_confirm_reminders_conflicts_and_status(fresh_settings: Any) -> None:
    hub = await _hub(fresh_settings)
    try:
        t0 = datetime.now(UTC)
        start = (t0 + timedelta(days=2)).replace(microsecond=0)
        now = [t0]
        a, b = await _engine(hub, now), await _engine(hub, now)

        first = await _book(hub, "延边州防火工作视频调度会", start, minutes=90)
        assert await _fed(a, hub, first.message_id) == "booked"
        async with hub.pool.acquire() as conn:
            held = await conn.fetch(
                "SELECT resource FROM meeting_slots WHERE booking_id = $1::uuid AND held", first.message_id
            )
        assert sorted(r["resource"] for r in held) == sorted(
            [f"room:{BOOKER_AGENCY[1]}/珲春市林业局二楼视频会议室", "terminal:043388401"]
            + [f"room:{code}/{name}视频会议室" for name, code in BRANCHES.values()]
        )

        # The same room, 30 minutes later (overlapping): refused by the constraint, the booker and the video system
        # told why. Another room but the same terminal: refused. The same room right after the end: booked.
        same_room = await _book(
            hub, "珲春市林业局防火值班调度会", start + timedelta(minutes=30), terminal="043388499", branches={}
        )
        same_terminal = await _book(
            hub, "珲春市林业局工作例会", start + timedelta(minutes=80), room="珲春市林业局一楼会议室", branches={}
        )
        after = await _book(hub, "珲春市林业局会后碰头会", start + timedelta(minutes=90), branches={})
        assert await _fed(a, hub, same_room.message_id) == "refused"
        assert await _fed(a, hub, same_terminal.message_id) == "refused"
        assert await _fed(a, hub, after.message_id) == "booked"
        await a.run_once()
        refused = await _notices_of(hub, BOOKER, "meeting-refused", expect=2)
        assert sorted(n.ref_to for n in refused) == sorted([same_room.message_id, same_terminal.message_id])
        texts = {n.ref_to: n.body.findtext(f"{{{NOTICE_NS}}}Text") for n in refused}
        assert texts[same_room.message_id].startswith("MEETING_SLOT_TAKEN")
        assert "会议室「珲春市林业局二楼视频会议室」" in texts[same_room.message_id]
        assert first.message_id in texts[same_room.message_id]
        assert "视频终端 043388401" in texts[same_terminal.message_id]
        assert all(n.sender.system == "hub" for n in refused)
        to_video = await _notices_of(hub, VIDEO, "meeting-refused", expect=2)
        assert sorted(n.ref_to for n in to_video) == sorted([same_room.message_id, same_terminal.message_id])

        # The video system's notices: who was told; the reminders are armed (ConfirmBy = start - 2 h, start - 1 h).
        notices = await _notices(hub, first, start, "880123")

        async def told() -> bool:
            await a.run_once()
            return await _participants_told(hub, first.message_id, 2)

        await _until(told, "the notices followed")

        # 敦化 confirms; 延边州 sends a confirmation in 敦化's name: an alarm, nothing recorded.
        await _send(
            hub,
            DUNHUA,
            confirm("880123", notices[DUNHUA].message_id, BRANCHES[DUNHUA]).to_element(),
            "meeting.confirm",
            [Recipient.to(PROVINCE, VIDEO)],
        )
        forged = await _send(
            hub,
            YANBIAN,
            confirm("880123", notices[YANBIAN].message_id, BRANCHES[DUNHUA]).to_element(),
            "meeting.confirm",
            [Recipient.to(PROVINCE, VIDEO)],
        )
        stray = await _send(
            hub,
            YANBIAN,
            confirm("880123", str(uuid.uuid4()), BRANCHES[YANBIAN]).to_element(),
            "meeting.confirm",
            [Recipient.to(PROVINCE, VIDEO)],
        )

        async def confirmed() -> bool:
            await a.run_once()
            async with hub.pool.acquire() as conn:
                n = await conn.fetchval("SELECT count(*) FROM process_alarms WHERE process = 'meetings'")
            return n == 2

        await _until(confirmed, "the confirmations followed")
        async with hub.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT agency_code, attendance, system FROM meeting_participants WHERE booking_id = $1::uuid ORDER BY agency_code",
                first.message_id,
            )
            alarms = await conn.fetch("SELECT code, ref FROM process_alarms ORDER BY code")
        assert {r["agency_code"]: r["attendance"] for r in rows} == {
            BRANCHES[DUNHUA][1]: "attend",
            BRANCHES[YANBIAN][1]: None,
        }
        assert [(r["code"], r["ref"]) for r in alarms] == [
            ("MEETING_CONFIRM_MISMATCH", forged.message_id),
            ("MEETING_CONFIRM_UNKNOWN", stray.message_id),
        ]

        # Before the deadline nothing fires; past ConfirmBy, two engines together send one reminder, to 延边州 only.
        assert (await a.run_once())["fired"] == 0
        now[0] = start - timedelta(hours=2) + timedelta(minutes=1)
        r1, r2 = await asyncio.gather(a.run_once(), b.run_once())
        assert r1["fired"] + r2["fired"] == 1, (r1, r2)
        reminders = await _notices_of(hub, YANBIAN, "meeting-reminder", expect=1)
        assert len(reminders) == 1
        rem = reminders[0]
        assert rem.message_id == process_id("meetings", f"remind/{first.message_id}/confirm-by")
        assert rem.ref_to == first.message_id and rem.sender.system == "hub"
        outstanding = rem.body.findall(f"{{{NOTICE_NS}}}Outstanding/{{{NOTICE_NS}}}Party")
        assert [p.findtext(f"{{{NOTICE_NS}}}System") for p in outstanding] == [YANBIAN]
        assert await _notices_of(hub, DUNHUA, "meeting-reminder", timeout=1.0) == []
        r1, r2 = await asyncio.gather(a.run_once(), b.run_once())
        assert r1["fired"] + r2["fired"] == 0

        # An hour before the start: the second round, once.
        now[0] = start - timedelta(minutes=59)
        r1, r2 = await asyncio.gather(a.run_once(), b.run_once())
        assert r1["fired"] + r2["fired"] == 1
        second = await _notices_of(hub, YANBIAN, "meeting-reminder", expect=1)
        assert [n.message_id for n in second] == [process_id("meetings", f"remind/{first.message_id}/before-start")]

        out = await hub.cli("meetings", "status", first.message_id)
        assert out.returncode == 0, out.stderr
        assert "880123" in out.stdout and "1/2 已回执" in out.stdout
        assert "敦化市林业局" in out.stdout and "✔ 已回执 参会 attend" in out.stdout
        assert "✘ 未回执 not confirmed（已催办 2 次" in out.stdout
        by_number = await hub.cli("meetings", "status", "880123")
        assert by_number.returncode == 0 and first.message_id in by_number.stdout
        out = await hub.cli("meetings", "status", same_room.message_id)
        assert out.returncode == 0 and "枢纽已拒绝" in out.stdout and "MEETING_SLOT_TAKEN" in out.stdout
        missing = await hub.cli("meetings", "status", str(uuid.uuid4()))
        assert missing.returncode == 1 and "MEETING_NOT_FOUND" in missing.stdout
    finally:
        await hub.close()


async def _participants_told(hub: Hub, booking_id: str, n: int) -> bool:
    async with hub.pool.acquire() as conn:
        got = await conn.fetchval(
            "SELECT count(*) FROM meeting_participants WHERE booking_id = $1::uuid AND notice_id IS NOT NULL",
            booking_id,
        )
    return got == n


async def test_a_confirmation_of_a_notice_the_hub_delivered_to_that_agency_is_no_alarm(fresh_settings: Any) -> None:
    hub = await _hub(fresh_settings)
    try:
        t0 = datetime.now(UTC)
        start = (t0 + timedelta(days=2)).replace(microsecond=0)
        now = [t0]
        engine = await _engine(hub, now)
        first = await _book(hub, "延边州防火工作视频调度会", start, minutes=90)
        assert await _fed(engine, hub, first.message_id) == "booked"
        notices = await _notices(hub, first, start, "880123")

        async def told() -> bool:
            await engine.run_once()
            return await _participants_told(hub, first.message_id, 2)

        await _until(told, "the notices followed")
        # The video system notifies 敦化 again (a second notice of the same meeting).
        again = await _send(
            hub,
            VIDEO,
            notice_for(
                {
                    "meeting_number": "880123",
                    "dial_in": [{"protocol": "sip", "address": "sip:880123@vc.lcj.jl.gov.cn"}],
                },
                booking("延边州防火工作视频调度会", start),
                first.message_id,
            ).to_element(),
            "meeting.notice",
            [Recipient.to(BRANCHES[DUNHUA][1], DUNHUA)],
        )
        to_video = [Recipient.to(PROVINCE, VIDEO)]
        # The booker confirms to the notice the hub delivered to it (its reply: it need not confirm, nothing to
        # record); 敦化 confirms to the second notice (recorded); 延边州 confirms to 敦化's notice in its own name and
        # to a notice that never was (alarms, as before).
        own = await _send(
            hub,
            BOOKER,
            confirm("880123", notices[BOOKER].message_id, BOOKER_AGENCY).to_element(),
            "meeting.confirm",
            to_video,
        )
        second = await _send(
            hub, DUNHUA, confirm("880123", again.message_id, BRANCHES[DUNHUA]).to_element(), "meeting.confirm", to_video
        )
        not_its = await _send(
            hub,
            YANBIAN,
            confirm("880123", notices[DUNHUA].message_id, BRANCHES[YANBIAN]).to_element(),
            "meeting.confirm",
            to_video,
        )
        stray = await _send(
            hub,
            YANBIAN,
            confirm("880123", str(uuid.uuid4()), BRANCHES[YANBIAN]).to_element(),
            "meeting.confirm",
            to_video,
        )

        async def followed() -> Any:  # the feed is in order: the stray one's alarm comes last
            await engine.run_once()
            async with hub.pool.acquire() as conn:
                return await conn.fetchval("SELECT 1 FROM process_alarms WHERE ref = $1", stray.message_id)

        await _until(followed, "the confirmations followed")
        async with hub.pool.acquire() as conn:
            alarms = await conn.fetch("SELECT code, ref FROM process_alarms WHERE process = 'meetings' ORDER BY ref")
            rows = await conn.fetch(
                "SELECT agency_code, attendance, confirm_id::text AS confirm_id FROM meeting_participants"
                " WHERE booking_id = $1::uuid",
                first.message_id,
            )
        assert sorted((r["code"], r["ref"]) for r in alarms) == sorted(
            [("MEETING_CONFIRM_UNKNOWN", not_its.message_id), ("MEETING_CONFIRM_UNKNOWN", stray.message_id)]
        )
        assert {r["agency_code"]: (r["attendance"], r["confirm_id"]) for r in rows} == {
            BRANCHES[DUNHUA][1]: ("attend", second.message_id),
            BRANCHES[YANBIAN][1]: (None, None),
        }
        assert own.message_id not in {r["confirm_id"] for r in rows}
    finally:
        await hub.close()


async def test_the_platform_refusal_releases_the_slot_and_a_notice_of_a_refused_booking_is_voided(
    fresh_settings: Any,
) -> None:
    from adapters.sdk.messages import DeliveryRefusal

    hub = await _hub(fresh_settings)
    try:
        now = [datetime.now(UTC)]
        engine = await _engine(hub, now)
        start = (now[0] + timedelta(days=3)).replace(microsecond=0)
        first = await _book(hub, "防火视频会（平台拒绝）", start)
        assert await _fed(engine, hub, first.message_id) == "booked"
        refusal = DeliveryRefusal(
            original_message_id=first.message_id,
            received_digest="0" * 64,
            code="VC_FIELD_TOO_LONG",
            reason="视频会议系统拒绝：会议名称过长",
            refused_at=datetime.now(UTC).replace(microsecond=0),
        )
        await _send(
            hub,
            VIDEO,
            refusal.to_element(),
            "delivery.refusal",
            [Recipient.to(BOOKER_AGENCY[1], BOOKER)],
            ref_to=first.message_id,
        )

        async def released() -> bool:
            await engine.run_once()
            return await _state(hub, first.message_id) == "platform_refused"

        await _until(released, "the platform's refusal followed")
        again = await _book(hub, "防火视频会（重新预约）", start)
        assert await _fed(engine, hub, again.message_id) == "booked"

        # A conflicting booking the platform still answered with notices: the venues are told it does not hold.
        clash = await _book(hub, "冲突的会议", start + timedelta(minutes=10))
        assert await _fed(engine, hub, clash.message_id) == "refused"
        await _notices(hub, clash, start + timedelta(minutes=10), "880999")

        async def voided() -> list[Any]:
            await engine.run_once()
            return await _notices_of(hub, DUNHUA, "meeting-refused", timeout=0.5)

        [void] = await _until(voided, "the voiding notice")
        assert void.body.findtext(f"{{{NOTICE_NS}}}Title").startswith("视频会议未成立")

        # 延边州 books naming 珲春 as the organizer: an alarm; followed as 延边州's booking, 珲春 must confirm too.
        body = booking(
            "代珲春市林业局预约的会议", start + timedelta(days=1), room="延边州林业局视频会议室", terminal=None
        )
        other = await _send(hub, YANBIAN, body.to_element(), "meeting.booking", [Recipient.to(PROVINCE, VIDEO)])
        assert await _fed(engine, hub, other.message_id) == "booked"
        async with hub.pool.acquire() as conn:
            alarms = await conn.fetch("SELECT code, ref FROM process_alarms")
            confirmers = await conn.fetch(
                "SELECT agency_code FROM meeting_participants WHERE booking_id = $1::uuid ORDER BY agency_code",
                other.message_id,
            )
        assert [(r["code"], r["ref"]) for r in alarms] == [("MEETING_ORGANIZER_MISMATCH", other.message_id)]
        assert sorted(r["agency_code"] for r in confirmers) == sorted([BOOKER_AGENCY[1], BRANCHES[DUNHUA][1]])
    finally:
        await hub.close()


async def test_two_transactions_racing_for_one_room_are_decided_by_the_constraint(fresh_settings: Any) -> None:
    from hub.store.db import create_pool

    pool = await create_pool(fresh_settings.pg_dsn, min_size=2, max_size=4)
    start = datetime(2027, 3, 1, 1, 0, tzinfo=UTC)
    end = start + timedelta(hours=1)

    async def meeting() -> str:
        bid = str(uuid.uuid4())
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO meetings (booking_id, booker_agency, booker_system, organizer_agency, organizer_name, title,"
                " start_at, end_at, state, received_at, decided_at) VALUES ($1::uuid, 'x', 'x', 'x', '某单位', 't', $2,"
                " $3, 'booked', now(), now())",
                bid,
                start,
                end,
            )
        return bid

    try:
        # One holds its slot in an open transaction; the other waits on it (the constraint's lock), and is refused
        # when the first commits.
        first, second = await meeting(), await meeting()
        taken = [("room:X/一号会议室", "会议室「一号会议室」")]
        async with pool.acquire() as c1, pool.acquire() as c2:
            tx1 = c1.transaction()
            await tx1.start()
            assert await reserve(c1, first, taken, start, end) == []
            pid2 = c2.get_server_pid()

            async def in_tx() -> Any:
                async with c2.transaction():
                    return await reserve(c2, second, taken, start + timedelta(minutes=30), end + timedelta(minutes=30))

            racing = asyncio.create_task(in_tx())

            async def waiting() -> bool:
                async with pool.acquire() as c3:
                    return bool(
                        await c3.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid2)
                    )

            await _until(waiting, "the second transaction waiting on the first's slot", 20)
            assert not racing.done()
            await tx1.commit()
            conflicts = await racing
        assert [(c.label, c.booking_id) for c in conflicts] == [("会议室「一号会议室」", first)]

        # Twenty races started together: each time exactly one of the two holds the terminal.
        for i in range(20):
            x, y = await meeting(), await meeting()
            res = [(f"terminal:0431{i:04d}", "视频终端")]

            async def take(bid: str, res: list[tuple[str, str]] = res) -> list[Any]:
                async with pool.acquire() as conn, conn.transaction():
                    return await reserve(conn, bid, res, start, end)

            got = await asyncio.gather(take(x), take(y))
            assert sorted(len(g) for g in got) == [0, 1], got
        async with pool.acquire() as conn:
            assert (
                await conn.fetchval("SELECT count(*) FROM meeting_slots WHERE resource LIKE 'terminal:%' AND held")
                == 20
            )
    finally:
        await pool.close()


async def test_reminders_fire_once_after_a_sigkill_and_with_two_engine_processes(
    fresh_settings: Any, tmp_path: Path
) -> None:
    hub = await _hub(fresh_settings)
    procs: list[subprocess.Popen[bytes]] = []
    clock = tmp_path / "clock"
    t0 = datetime.now(UTC)
    clock.write_text(t0.isoformat())
    start = (t0 + timedelta(days=1)).replace(microsecond=0)

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

    try:
        first = await _book(hub, "全州森林草原防火视频会", start)
        killed = engine_process()
        await _until(lambda: _has_state(hub, first.message_id), "the engine process followed the booking")
        await _notices(hub, first, start, "880777")
        await _until(lambda: _armed(hub, first.message_id), "the reminders armed")

        # The deadline passes; the engine is SIGKILLed the moment its firing of the reminder is committed (the
        # reminder decided, its publication under way or not yet begun); two engines start in its place.
        reminder = process_id("meetings", f"remind/{first.message_id}/confirm-by")
        clock.write_text((start - timedelta(hours=2) + timedelta(minutes=1)).isoformat())

        async def decided() -> bool:
            async with hub.pool.acquire() as conn:
                return bool(await conn.fetchval("SELECT 1 FROM process_outbox WHERE message_id = $1::uuid", reminder))

        await _until(decided, "the reminder decided by the first engine", interval=0.005)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        engine_process(), engine_process()
        for system in (YANBIAN, DUNHUA):
            got = await _notices_of(hub, system, "meeting-reminder", expect=1, timeout=60)
            assert [n.message_id for n in got] == [reminder]

        # 敦化 confirms; at the last round only 延边州 is reminded, once, with both engines running.
        notice_id = await _notice_id(hub, first.message_id, BRANCHES[DUNHUA][1])
        await _send(
            hub,
            DUNHUA,
            confirm("880777", notice_id, BRANCHES[DUNHUA]).to_element(),
            "meeting.confirm",
            [Recipient.to(PROVINCE, VIDEO)],
        )
        await _until(lambda: _confirmed(hub, first.message_id), "the confirmation followed")
        clock.write_text((start - timedelta(minutes=59)).isoformat())
        got = await _notices_of(hub, YANBIAN, "meeting-reminder", expect=1, timeout=60)
        assert [n.message_id for n in got] == [process_id("meetings", f"remind/{first.message_id}/before-start")]
        await asyncio.sleep(2.0)  # both engines keep passing: nothing more arrives
        assert await _notices_of(hub, YANBIAN, "meeting-reminder", timeout=1.0) == []
        assert await _notices_of(hub, DUNHUA, "meeting-reminder", timeout=1.0) == []
        async with hub.pool.acquire() as conn:
            counts = await conn.fetch(
                "SELECT agency_code, reminders FROM meeting_participants WHERE booking_id = $1::uuid ORDER BY agency_code",
                first.message_id,
            )
            outbox = await conn.fetchval("SELECT count(*) FROM process_outbox WHERE process = 'meetings'")
        assert {r["agency_code"]: r["reminders"] for r in counts} == {BRANCHES[DUNHUA][1]: 1, BRANCHES[YANBIAN][1]: 2}
        assert outbox == 2
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


async def _has_state(hub: Hub, booking_id: str) -> bool:
    return await _state(hub, booking_id) is not None


async def _armed(hub: Hub, booking_id: str) -> bool:
    async with hub.pool.acquire() as conn:
        return bool(await conn.fetchval("SELECT reminders_armed FROM meetings WHERE booking_id = $1::uuid", booking_id))


async def _confirmed(hub: Hub, booking_id: str) -> bool:
    async with hub.pool.acquire() as conn:
        n = await conn.fetchval(
            "SELECT count(*) FROM meeting_participants WHERE booking_id = $1::uuid AND confirmed_at IS NOT NULL",
            booking_id,
        )
    return bool(n)


async def _notice_id(hub: Hub, booking_id: str, agency: str) -> str:
    async with hub.pool.acquire() as conn:
        return str(
            await conn.fetchval(
                "SELECT notice_id FROM meeting_participants WHERE booking_id = $1::uuid AND agency_code = $2",
                booking_id,
                agency,
            )
        )


async def test_the_demo_part_runs_on_a_real_hub() -> None:
    from adapters.sdk.testing import TestHub
    from hub.processes.meetings_demo import demo

    lines: list[str] = []
    async with TestHub(real=True) as hub:
        problems = await demo(hub, lines.append)
    assert problems == [], (problems, lines)
    assert any("MEETING_SLOT_TAKEN" in line for line in lines), lines
