"""The emergencies process (hub/processes/emergencies.py) and the emergency-lane check against the real PostgreSQL
and RabbitMQ with the real pipeline: an alert broadcast by the plan (the hub forwards it to the neighbouring county
the sender left out), acknowledgements followed (a forged one alarmed), a late recipient resent to, its parent unit
told and an alarm raised — once, with two engines at the moved clock and across a SIGKILL of the engine's process —
the closing following the same path, ``hub emergencies status``, and an ordinary message in the emergency lane
refused (LANE_NOT_ENTITLED) and then accepted in the normal lane."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.envelope import Envelope, Party, Recipient, build, parse
from hub.envelope.model import NOTICE_NS
from hub.processes.emergencies import CLOSED_BY, EmergenciesProcess, load_plan
from hub.processes.emergencies_demo import (
    CITY,
    CITY_AGENCY,
    NEIGHBOUR,
    NEIGHBOUR_AGENCY,
    SENDER,
    SENDER_AGENCY,
    ack,
    alert,
    incident_number,
    update,
)
from hub.processes.engine import ProcessEngine, process_id
from hub.settings import PROJECT_ROOT
from tests.integration.harness import Hub, document

pytestmark = pytest.mark.asyncio

AGENCY = {SENDER: SENDER_AGENCY, CITY: CITY_AGENCY, NEIGHBOUR: NEIGHBOUR_AGENCY}


async def _hub(settings: Any) -> Hub:
    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()
    return hub


async def _send(hub: Hub, system: str, body: Any, service: str, to: list[Recipient]) -> Envelope:
    root = build(
        service=service,
        sender=Party(AGENCY[system], system),
        recipients=to,
        body=body,
        urgency="特急",
        ttl=timedelta(hours=24),
    )
    data = hub.sign(system, root)
    env = Envelope.from_tree(parse(data))
    await hub.publish([(env, data)])
    reply = await hub.reply(system, env.message_id)
    assert reply.outcome == "accepted", (service, reply)
    return env


async def _engine(hub: Hub, now: list[datetime]) -> ProcessEngine:
    from hub.pipeline.context import load_context
    from hub.processes.emergencies import make

    context = await load_context(hub.settings, hub.pool)
    return ProcessEngine(
        hub.pool, context, [make(context, hub.settings)], transport=hub.transport, clock=lambda: now[0]
    )


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


async def _fed(engine: ProcessEngine, predicate: Any, what: str) -> None:
    async def step() -> Any:
        await engine.run_once()
        return await predicate()

    await _until(step, what, interval=0.05)


async def _val(hub: Hub, sql: str, *args: Any) -> Any:
    async with hub.pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


async def _notices_of(hub: Hub, system: str, *, expect: int | None = None, timeout: float = 10.0) -> list[Any]:
    """The hub.notices in a system's queue as (kind, refers_to, message id) (anything else is taken and dropped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: list[Any] = []
    while loop.time() < deadline and (expect is None or len(found) < expect):
        for _, env in await hub.drain(system, timeout=0.5):
            if env.service == "hub.notice" and env.body is not None:
                found.append(
                    (
                        env.body.findtext(f"{{{NOTICE_NS}}}Kind"),
                        env.body.findtext(f"{{{NOTICE_NS}}}RefersTo"),
                        env.message_id,
                    )
                )
    return found


async def _acked(hub: Hub, mid: str, agency: str) -> bool:
    return bool(
        await _val(
            hub,
            "SELECT acked_at IS NOT NULL FROM emergency_recipients WHERE message_id = $1::uuid AND agency_code = $2",
            mid,
            agency,
        )
    )


# ---------------------------------------------------------------------------------------------------------------------


async def test_alert_broadcast_acknowledged_escalated_closed_and_status(fresh_settings: Any) -> None:
    hub = await _hub(fresh_settings)
    try:
        t0 = datetime.now(UTC)
        now = [t0]
        engine = await _engine(hub, now)
        incident = incident_number()
        # 农安 reports a Ⅳ级 fire in 农安县 to 长春 only; no AckWithinMinutes: the limit is the plan's/route's 30 min.
        a = await _send(
            hub,
            SENDER,
            alert(incident, ack_minutes=None).to_element(),
            "emergency.alert",
            [Recipient.to(CITY_AGENCY, CITY)],
        )
        await _fed(
            engine,
            lambda: _val(hub, "SELECT 1 FROM emergency_broadcasts WHERE message_id = $1::uuid", a.message_id),
            "the alert followed",
        )
        row = await hub.pool.fetchrow(
            "SELECT ack_within_s, ack_due, received_at, copy_id::text AS copy_id FROM emergency_broadcasts"
            " WHERE message_id = $1::uuid",
            a.message_id,
        )
        assert row["ack_within_s"] == 30 * 60 and row["ack_due"] == row["received_at"] + timedelta(minutes=30)
        assert t0 <= row["received_at"] < t0 + timedelta(minutes=1)
        assert row["copy_id"] == process_id("emergencies", f"copy/{a.message_id}")
        via = dict(
            await hub.pool.fetch(
                "SELECT agency_code, via FROM emergency_recipients WHERE message_id = $1::uuid", a.message_id
            )
        )
        assert via == {CITY_AGENCY: "sender", NEIGHBOUR_AGENCY: "plan"}
        # The neighbouring 德惠 (required by the plan, left out by the sender) gets the hub's copy in the emergency lane.
        got = await _notices_of(hub, NEIGHBOUR, expect=1)
        assert got == [("emergency-resend", a.message_id, row["copy_id"])]

        # 长春 acknowledges. 德惠 "acknowledges" naming 长春's agency: an alarm, nothing recorded.
        await _send(
            hub,
            CITY,
            ack(a.message_id, incident, CITY_AGENCY).to_element(),
            "emergency.ack",
            [Recipient.to(SENDER_AGENCY, SENDER)],
        )
        forged = await _send(
            hub,
            NEIGHBOUR,
            ack(a.message_id, incident, CITY_AGENCY).to_element(),
            "emergency.ack",
            [Recipient.to(SENDER_AGENCY, SENDER)],
        )
        await _fed(
            engine,
            lambda: _val(
                hub,
                "SELECT 1 FROM process_alarms WHERE code = 'EMERGENCY_ACK_MISMATCH' AND ref = $1",
                forged.message_id,
            ),
            "the forged ack alarmed",
        )
        assert await _acked(hub, a.message_id, CITY_AGENCY) and not await _acked(hub, a.message_id, NEIGHBOUR_AGENCY)

        # 29 minutes: nothing is late yet.
        now[0] = t0 + timedelta(minutes=29)
        assert (await engine.run_once())["fired"] == 0

        # 31 minutes: two engines at the moved clock at once; 德惠 is resent to and 长春 (its parent) told, once.
        now[0] = t0 + timedelta(minutes=31)
        other = await _engine(hub, now)
        await asyncio.gather(engine.run_once(), other.run_once())
        await engine.run_once()
        resend = process_id("emergencies", f"resend/{a.message_id}/1")
        escalation = process_id("emergencies", f"escalate/{a.message_id}/1/{CITY_AGENCY}")
        assert await _notices_of(hub, NEIGHBOUR, expect=1) == [("emergency-resend", a.message_id, resend)]
        city_got = await _notices_of(hub, CITY, expect=1)
        assert city_got == [("emergency-escalation", a.message_id, escalation)]
        assert await _val(hub, "SELECT count(*) FROM process_outbox WHERE process = 'emergencies'") == 3
        alarm = await hub.pool.fetchrow(
            "SELECT title, detail FROM process_alarms WHERE code = 'EMERGENCY_ACK_LATE' AND ref = $1 AND cleared_at IS NULL",
            a.message_id,
        )
        assert alarm is not None and "超时未签收" in alarm["title"] and NEIGHBOUR in alarm["detail"]

        # What an operator reads.
        out = await hub.cli("emergencies", "status", incident)
        assert out.returncode == 0, out.stderr
        assert "签收情况 acknowledged: 1/2" in out.stdout
        assert "德惠市林业局" in out.stdout and "✘ 未签收" in out.stdout and "已通报上级 " + CITY_AGENCY in out.stdout
        assert "长春市林业局" in out.stdout and "✔ 已签收" in out.stdout
        missing = await hub.cli("emergencies", "status", "SLHZ-000000-0000-0000")
        assert missing.returncode == 1 and "EMERGENCY_NOT_FOUND" in missing.stdout

        # 德惠 acknowledges: the next round is disarmed, the alarm cleared.
        await _send(
            hub,
            NEIGHBOUR,
            ack(a.message_id, incident, NEIGHBOUR_AGENCY).to_element(),
            "emergency.ack",
            [Recipient.to(SENDER_AGENCY, SENDER)],
        )
        await _fed(engine, lambda: _acked(hub, a.message_id, NEIGHBOUR_AGENCY), "德惠's ack followed")
        assert (
            await _val(hub, "SELECT count(*) FROM process_timers WHERE process = 'emergencies' AND fired_at IS NULL")
            == 0
        )
        assert (
            await _val(
                hub, "SELECT count(*) FROM process_alarms WHERE code = 'EMERGENCY_ACK_LATE' AND cleared_at IS NULL"
            )
            == 0
        )

        # The closing follows the same path: sent to 长春 only, the hub forwards it to 德惠 (told of the alert). The
        # engine's clock back to the hub's: the closing's limit counts from its receipt (31 minutes on, it would be late
        # on the pass that reads it).
        now[0] = datetime.now(UTC)
        c = await _send(
            hub,
            SENDER,
            update(a.message_id, incident).to_element(),
            "emergency.update",
            [Recipient.to(CITY_AGENCY, CITY)],
        )
        await _fed(
            engine,
            lambda: _val(hub, "SELECT kind FROM emergency_broadcasts WHERE message_id = $1::uuid", c.message_id),
            "the closing followed",
        )
        assert await _notices_of(hub, NEIGHBOUR, expect=1) == [
            ("emergency-closed", c.message_id, process_id("emergencies", f"copy/{c.message_id}"))
        ]
        assert (
            await _val(hub, "SELECT kind FROM emergency_broadcasts WHERE message_id = $1::uuid", c.message_id)
            == "closing"
        )
        assert await _val(
            hub, "SELECT closed_at IS NOT NULL FROM emergency_broadcasts WHERE message_id = $1::uuid", a.message_id
        )
    finally:
        await hub.close()


async def test_the_deadline_counts_from_the_hubs_receipt_when_the_engine_reads_the_alert_late(
    fresh_settings: Any,
) -> None:
    """The engine (stopped, restarting or behind) first reads an alert two hours after the hub received it: the
    limit (30 min) counts from the receipt, so the alert is already late and the first pass resends it (it used to
    count from the engine's reading: due 2 h 30 min after the receipt, nobody told for all that time)."""
    hub = await _hub(fresh_settings)
    try:
        t0 = datetime.now(UTC)
        now = [t0 + timedelta(hours=2)]
        engine = await _engine(hub, now)
        a = await _send(
            hub,
            SENDER,
            alert(incident_number(), ack_minutes=None).to_element(),
            "emergency.alert",
            [Recipient.to(CITY_AGENCY, CITY)],
        )
        await _fed(
            engine,
            lambda: _val(hub, "SELECT rounds = 1 FROM emergency_broadcasts WHERE message_id = $1::uuid", a.message_id),
            "the late alert resent on the pass that read it",
        )
        row = await hub.pool.fetchrow(
            "SELECT received_at, ack_due FROM emergency_broadcasts WHERE message_id = $1::uuid", a.message_id
        )
        assert row["ack_due"] == row["received_at"] + timedelta(minutes=30) and row["received_at"] < t0 + timedelta(
            minutes=1
        )
        assert await _val(
            hub,
            "SELECT 1 FROM process_alarms WHERE code = 'EMERGENCY_ACK_LATE' AND ref = $1 AND cleared_at IS NULL",
            a.message_id,
        )
        resend = process_id("emergencies", f"resend/{a.message_id}/1")
        assert ("emergency-resend", a.message_id, resend) in await _notices_of(hub, CITY, expect=1)
    finally:
        await hub.close()


async def test_the_closing_ends_the_late_rounds_alarm_and_timers(fresh_settings: Any) -> None:
    """A late round raised EMERGENCY_ACK_LATE; the sender then closes the incident. The alert's resends stop and its
    alarm is cleared by the closing (it stayed open for good: nobody acknowledges an alert of a closed incident),
    with who cleared it saying why; which recipients never acknowledged stays in emergency_recipients."""
    hub = await _hub(fresh_settings)
    try:
        t0 = datetime.now(UTC)
        now = [t0]
        engine = await _engine(hub, now)
        incident = incident_number()
        a = await _send(
            hub,
            SENDER,
            alert(incident, ack_minutes=None).to_element(),
            "emergency.alert",
            [Recipient.to(CITY_AGENCY, CITY)],
        )
        await _fed(
            engine,
            lambda: _val(hub, "SELECT 1 FROM emergency_broadcasts WHERE message_id = $1::uuid", a.message_id),
            "the alert followed",
        )
        now[0] = t0 + timedelta(minutes=31)
        assert (await engine.run_once())["fired"] == 1
        late = (
            "SELECT count(*) FROM process_alarms WHERE code = 'EMERGENCY_ACK_LATE' AND ref = $1 AND cleared_at IS NULL"
        )
        assert await _val(hub, late, a.message_id) == 1
        assert await _val(hub, "SELECT count(*) FROM process_timers WHERE key = $1 AND fired_at IS NULL", a.message_id)
        c = await _send(
            hub,
            SENDER,
            update(a.message_id, incident).to_element(),
            "emergency.update",
            [Recipient.to(CITY_AGENCY, CITY)],
        )
        await _fed(
            engine,
            lambda: _val(hub, "SELECT 1 FROM emergency_broadcasts WHERE message_id = $1::uuid", c.message_id),
            "the closing followed",
        )
        assert await _val(hub, late, a.message_id) == 0
        assert (
            await _val(
                hub,
                "SELECT cleared_by FROM process_alarms WHERE code = 'EMERGENCY_ACK_LATE' AND ref = $1",
                a.message_id,
            )
            == CLOSED_BY
        )
        assert (
            await _val(hub, "SELECT count(*) FROM process_timers WHERE key = $1 AND fired_at IS NULL", a.message_id)
            == 0
        )
        assert (
            await _val(
                hub,
                "SELECT count(*) FROM emergency_recipients WHERE message_id = $1::uuid AND acked_at IS NULL",
                a.message_id,
            )
            == 2
        )
        # Hours later: no round of the alert, and no alarm of it again (the closing's own acknowledgements are
        # followed as before: its late round may alarm, about the closing).
        now[0] = t0 + timedelta(hours=6)
        await engine.run_once()
        assert await _val(hub, late, a.message_id) == 0
        assert await _val(hub, "SELECT rounds FROM emergency_broadcasts WHERE message_id = $1::uuid", a.message_id) == 1
    finally:
        await hub.close()


async def test_an_ordinary_message_in_the_emergency_lane_is_refused_and_accepted_in_the_normal_lane(
    fresh_settings: Any,
) -> None:
    hub = await _hub(fresh_settings)
    try:
        import dataclasses

        from hub.pipeline.client import connect_as, outgoing
        from hub.transport.users import provision

        root = document("county-220122-oa", [Recipient.to("11220183013553609R")])  # 平件 document.official
        data = hub.sign("county-220122-oa", root)
        env = Envelope.from_tree(parse(data))
        # Published by the system's own RabbitMQ user (as its client would), into the emergency lane.
        await provision(hub.settings, [("county-220122-oa", None)])
        own = await connect_as(hub.settings, "county-220122-oa")
        try:
            await own.publish_many(
                [
                    dataclasses.replace(
                        outgoing(own, env, data, as_system=True),
                        routing_key=own.names.inbound_key("emergency", "county-220122-oa"),
                    )
                ]
            )
        finally:
            await own.close()
        refused = await hub.reply("county-220122-oa", env.message_id)
        assert (refused.kind, refused.outcome) == ("error", "LANE_NOT_ENTITLED"), refused
        assert await hub.depth("county-220183-oa") == 0
        await hub.publish([(env, data)], lane="normal")  # the same message, where it belongs: a first copy
        accepted = await hub.reply("county-220122-oa", env.message_id)
        assert (accepted.kind, accepted.outcome) == ("receipt", "accepted"), accepted
        got = await hub.drain("county-220183-oa", expect=1)
        assert [e.message_id for _, e in got] == [env.message_id]
    finally:
        await hub.close()


async def test_a_system_flooding_the_emergency_lane_loses_its_place_not_its_messages(fresh_settings: Any) -> None:
    """德惠 floods the emergency lane with 100 ordinary documents (its own RabbitMQ user), then 农安 sends an alert.
    Once the lane has refused 德惠 its quota (here 10, then 1 a second; up to a prefetch window more are read before
    the refusals are counted), its further messages are moved unread to the normal lane and examined there under the
    emergency lane's rules: every one is still refused LANE_NOT_ENTITLED to 德惠 (nothing lost, nothing decided
    differently), and 农安's alert is accepted and delivered."""
    import dataclasses

    from hub.pipeline.client import connect_as, outgoing
    from hub.pipeline.lanes import LaneQuota
    from hub.transport.users import provision

    hub = await _hub(fresh_settings)
    try:
        assert hub.worker is not None
        hub.worker.lane_quota = LaneQuota(rate_per_s=1.0, burst=10.0)
        flood = []
        for _ in range(100):
            root = document(NEIGHBOUR, [Recipient.to(SENDER_AGENCY)])
            data = hub.sign(NEIGHBOUR, root)
            flood.append((Envelope.from_tree(parse(data)), data))
        await provision(hub.settings, [(NEIGHBOUR, None)])
        own = await connect_as(hub.settings, NEIGHBOUR)
        try:
            await own.publish_many(
                [
                    dataclasses.replace(
                        outgoing(own, env, data, as_system=True),
                        routing_key=own.names.inbound_key("emergency", NEIGHBOUR),
                    )
                    for env, data in flood
                ]
            )
        finally:
            await own.close()
        a = await _send(
            hub, SENDER, alert(incident_number()).to_element(), "emergency.alert", [Recipient.to(CITY_AGENCY, CITY)]
        )
        got = await hub.drain(CITY, expect=1)
        assert [e.message_id for _, e in got] == [a.message_id]
        replies = await hub.inbox(NEIGHBOUR).replies_for([env.message_id for env, _ in flood], timeout=60)
        assert len(replies) == 100
        assert {(r.kind, r.outcome) for r in replies.values()} == {("error", "LANE_NOT_ENTITLED")}
        moved = hub.worker.lane_quota.moved.get(hub.transport.names.user(NEIGHBOUR), 0)
        # 100 less the 10 refusals of the quota, what was read before they were counted (a prefetch window of 32)
        # and a few seconds' tokens
        assert 40 <= moved <= 90, hub.worker.lane_quota.moved
        assert hub.worker.lane_quota.moved.keys() == {
            hub.transport.names.user(NEIGHBOUR)
        }  # 农安's alert kept its place
        assert await hub.depth(SENDER) == 0  # nothing of the flood was delivered
    finally:
        await hub.close()


async def test_resends_fire_once_after_a_sigkill_and_with_two_engine_processes(
    fresh_settings: Any, tmp_path: Path
) -> None:
    hub = await _hub(fresh_settings)
    procs: list[subprocess.Popen[bytes]] = []
    clock = tmp_path / "clock"
    t0 = datetime.now(UTC)
    clock.write_text(t0.isoformat())

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
        incident = incident_number()
        killed = engine_process()
        a = await _send(
            hub,
            SENDER,
            alert(incident, ack_minutes=10).to_element(),
            "emergency.alert",
            [Recipient.to(CITY_AGENCY, CITY)],
        )
        await _until(
            lambda: _val(hub, "SELECT 1 FROM emergency_broadcasts WHERE message_id = $1::uuid", a.message_id),
            "the engine process followed the alert",
        )
        assert (await _notices_of(hub, NEIGHBOUR, expect=1))[0][0] == "emergency-resend"
        await _send(
            hub,
            CITY,
            ack(a.message_id, incident, CITY_AGENCY).to_element(),
            "emergency.ack",
            [Recipient.to(SENDER_AGENCY, SENDER)],
        )
        await _until(lambda: _acked(hub, a.message_id, CITY_AGENCY), "长春's ack followed by the engine process")

        # The limit (10 min, the alert's own) passes; the engine is SIGKILLed the moment its first round commits;
        # two engines start in its place: 德惠 and 长春 each get that round once.
        resend = process_id("emergencies", f"resend/{a.message_id}/1")
        clock.write_text((t0 + timedelta(minutes=11)).isoformat())
        await _until(
            lambda: _val(hub, "SELECT 1 FROM process_outbox WHERE message_id = $1::uuid", resend),
            "round 1 decided",
            interval=0.005,
        )
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        engine_process(), engine_process()
        assert await _notices_of(hub, NEIGHBOUR, expect=1, timeout=60) == [("emergency-resend", a.message_id, resend)]
        escalation = process_id("emergencies", f"escalate/{a.message_id}/1/{CITY_AGENCY}")
        assert [n for n in await _notices_of(hub, CITY, expect=1, timeout=60)] == [
            ("emergency-escalation", a.message_id, escalation)
        ]

        # Round 2 one limit later, by the two engines: once. Then 德惠 acknowledges and round 3 never comes.
        clock.write_text((t0 + timedelta(minutes=22)).isoformat())
        resend2 = process_id("emergencies", f"resend/{a.message_id}/2")
        assert await _notices_of(hub, NEIGHBOUR, expect=1, timeout=60) == [("emergency-resend", a.message_id, resend2)]
        await _send(
            hub,
            NEIGHBOUR,
            ack(a.message_id, incident, NEIGHBOUR_AGENCY).to_element(),
            "emergency.ack",
            [Recipient.to(SENDER_AGENCY, SENDER)],
        )
        await _until(lambda: _acked(hub, a.message_id, NEIGHBOUR_AGENCY), "德惠's ack followed by the engines")
        clock.write_text((t0 + timedelta(minutes=60)).isoformat())
        await asyncio.sleep(2.0)  # both engines keep passing: nothing more arrives
        assert await _notices_of(hub, NEIGHBOUR, timeout=1.0) == []
        assert [n[0] for n in await _notices_of(hub, CITY, timeout=1.0)] == ["emergency-escalation"]  # round 2's
        assert await _val(hub, "SELECT count(*) FROM process_outbox WHERE process = 'emergencies'") == 5
        assert (
            await _val(
                hub,
                "SELECT resends FROM emergency_recipients WHERE message_id = $1::uuid AND agency_code = $2",
                a.message_id,
                NEIGHBOUR_AGENCY,
            )
            == 2
        )
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


async def test_the_plan_file_of_the_checkout_loads() -> None:
    plan = load_plan(PROJECT_ROOT / "routes" / "emergency-plan.toml")
    assert EmergenciesProcess(plan).services == frozenset({"emergency.alert", "emergency.update", "emergency.ack"})


async def test_the_demo_part_runs_on_a_real_hub() -> None:
    from adapters.sdk.testing import TestHub
    from hub.processes.emergencies_demo import demo

    lines: list[str] = []
    async with TestHub(real=True) as hub:
        problems = await demo(hub, lines.append)
    assert problems == [], (problems, lines)
    assert any("重发" in line for line in lines), lines
