"""The emergencies process's part of ``make demo``: an unacknowledged alert escalated.

1. 农安县林业局 (``county-220122-oa``) reports a Ⅳ级 forest fire in 农安县 to 长春市林业局 only, to be acknowledged
   within 15 minutes; the plan (routes/emergency-plan.toml) also requires the neighbouring 德惠市林业局, so the hub
   forwards the alert to it (``hub.notice`` kind ``emergency-resend`` titled 【预案补发】, emergency lane);
2. 长春市林业局 acknowledges (``emergency.ack``); 德惠市林业局 does not;
3. an engine pass of the emergencies process 16 minutes later: 德惠 gets the alert again (``emergency-resend``), its
   parent unit 长春市林业局 is told (``emergency-escalation``) and the alarm ``EMERGENCY_ACK_LATE`` is raised;
4. ``hub emergencies status`` shows who has and has not acknowledged.

``hub`` is ``adapters.sdk.testing.TestHub`` joined to a running hub (or ``real=True``). The builders here
(``alert``, ``ack``, ``update``) are shared with the tests and bench/emergency.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hub.processes.demo_kit import notices as _notices
from hub.processes.demo_kit import pass_now as _pass
from hub.processes.demo_kit import until as _until
from hub.processes.engine import CN_TZ

SENDER, SENDER_AGENCY = "county-220122-oa", "11220122013550216R"  # 农安县林业局
CITY, CITY_AGENCY = "city-220100-oa", "11220100013544550M"  # 长春市林业局
NEIGHBOUR, NEIGHBOUR_AGENCY = "county-220183-oa", "11220183013553609R"  # 德惠市林业局
NAMES = {SENDER_AGENCY: "农安县林业局", CITY_AGENCY: "长春市林业局", NEIGHBOUR_AGENCY: "德惠市林业局"}


def incident_number() -> str:
    return f"SLHZ-220122-{datetime.now(CN_TZ):%Y}-{uuid.uuid4().int % 10**8:08d}"


def alert(
    incident: str,
    *,
    level: str = "IV",
    division: str = "220122",
    reporter_agency: str = SENDER_AGENCY,
    ack_minutes: int | None = 15,
    title: str = "农安县青山口乡西岗子林地森林火情",
) -> Any:
    from adapters.sdk.messages import emergency_alert_v1 as a

    now = datetime.now(CN_TZ).replace(microsecond=0)
    return a.EmergencyAlertV1(
        incident_number=incident,
        type="forest-fire",
        level=level,  # type: ignore[arg-type]
        title=title,
        occurred_at=now - timedelta(minutes=20),
        place=a.Place(
            description="农安县青山口乡西岗子村林地",
            division_code=division,
            latitude=Decimal("44.4312"),
            longitude=Decimal("125.1845"),
        ),
        situation="瞭望塔发现烟点，地表火，过火面积约1公顷，火势可控。",
        reporter=a.Reporter(
            name="王建国",
            agency_name=NAMES.get(reporter_agency, "林业局"),
            agency_code=reporter_agency,
            phone="0431-83221119",
        ),
        ack_within_minutes=ack_minutes,
    )


def ack(alert_id: str, incident: str, agency: str, name: str | None = None) -> Any:
    from adapters.sdk.messages import emergency_ack_v1 as k

    return k.EmergencyAckV1(
        alert_message_id=alert_id,
        incident_number=incident,
        agency=k.AgencyRef(name=name or NAMES.get(agency, "林业局"), agency_code=agency),
        response="received",
        duty_officer="值班员",
        phone="0431-88888888",
        acknowledged_at=datetime.now(CN_TZ).replace(microsecond=0),
    )


def update(alert_id: str, incident: str, *, kind: str = "closing", level: str = "IV", seq: int = 1) -> Any:
    from adapters.sdk.messages import emergency_update_v1 as u

    return u.EmergencyUpdateV1(
        alert_message_id=alert_id,
        incident_number=incident,
        sequence_number=seq,
        kind=kind,  # type: ignore[arg-type]
        status="resolved" if kind == "closing" else "controlled",
        level=level,  # type: ignore[arg-type]
        situation="明火已扑灭，转入清理看守。",
        reported_at=datetime.now(CN_TZ).replace(microsecond=0),
        reporter=u.Reporter(
            name="王建国", agency_name="农安县林业局", agency_code=SENDER_AGENCY, phone="0431-83221119"
        ),
    )


async def _acked(hub: Any, alert_id: str, agency: str) -> bool:
    from hub.store.db import connection

    async with connection(hub.settings.pg_dsn) as conn:
        return bool(
            await conn.fetchval(
                "SELECT acked_at IS NOT NULL FROM emergency_recipients"
                " WHERE message_id = $1::uuid AND agency_code = $2",
                alert_id,
                agency,
            )
        )


async def demo(hub: Any, say: Callable[[str], None]) -> list[str]:
    from adapters.sdk import to
    from hub.processes.emergencies import read_status, render_status
    from hub.processes.runner import pass_at
    from hub.store.db import connection

    problems: list[str] = []
    say("应急预警流程：按预案分发 → 强制签收 → 超时重发并通报上级 Emergencies: an unacknowledged alert escalated")
    try:
        sender, city, neighbour = await hub.client(SENDER), await hub.client(CITY), await hub.client(NEIGHBOUR)
        incident = incident_number()
        r = await sender.send(alert(incident, ack_minutes=15), to=to(CITY_AGENCY, CITY), urgency="特急")
        alert_id = r.message_id

        async def forwarded() -> list[Any]:
            await _pass(hub)
            return _notices(hub, NEIGHBOUR, "emergency-resend", alert_id)

        await hub.received(CITY, 1, timeout=60)
        await _until(forwarded, "the hub's copy of the alert to 德惠")
        say(
            f"  ✔ 农安县林业局报送Ⅳ级森林火情（事件 {incident}），只主送长春市林业局；按预案枢纽补发相邻的德惠市林业局 "
            "the plan adds the neighbouring county: the hub forwarded the alert to 德惠"
        )
        await city.send(ack(alert_id, incident, CITY_AGENCY), to=to(SENDER_AGENCY, SENDER), urgency="特急")

        async def city_acked() -> bool:
            await _pass(hub)
            return await _acked(hub, alert_id, CITY_AGENCY)

        await _until(city_acked, "长春's acknowledgement followed")
        say("  ✔ 长春市林业局签收（emergency.ack）；德惠市林业局未签收 长春 acknowledged, 德惠 did not")

        later = datetime.now(CN_TZ) + timedelta(minutes=16)
        await pass_at(hub.settings, ["emergencies"], later)
        from hub.processes.engine import process_id

        resend_id = process_id("emergencies", f"resend/{alert_id}/1")
        await _until(
            lambda: _settled(
                [d for d in _notices(hub, NEIGHBOUR, "emergency-resend", alert_id) if d.context.message_id == resend_id]
            ),
            "the resend to 德惠",
        )
        await _until(lambda: _settled(_notices(hub, CITY, "emergency-escalation", alert_id)), "the escalation to 长春")
        if _notices(hub, CITY, "emergency-resend", alert_id):
            problems.append("emergencies: 长春 acknowledged and got the alert again all the same")
        async with connection(hub.settings.pg_dsn) as conn:
            alarm = await conn.fetchval(
                "SELECT title FROM process_alarms WHERE process = 'emergencies' AND code = 'EMERGENCY_ACK_LATE'"
                " AND ref = $1 AND cleared_at IS NULL",
                alert_id,
            )
            status = await read_status(conn, alert_id)
        if not alarm:
            problems.append("emergencies: no EMERGENCY_ACK_LATE alarm for the late acknowledgement")
        say(
            "  ✔ 15 分钟签收时限过后：向德惠市林业局重发预警（应急通道），通报其上级长春市林业局，并产生运维告警 "
            f"「{alarm}」 resent, escalated to the parent unit, alarm raised"
        )
        for line in render_status(status or []):
            say("    " + line)
        await neighbour.send(ack(alert_id, incident, NEIGHBOUR_AGENCY), to=to(SENDER_AGENCY, SENDER), urgency="特急")
    except Exception as exc:
        problems.append(f"emergencies: {type(exc).__name__}: {str(exc)[:300]}")
    return problems


async def _settled(got: list[Any]) -> list[Any]:
    return got
