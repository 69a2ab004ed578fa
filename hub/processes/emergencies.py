"""应急预警流程 The emergencies process (issue 14): an emergency.alert broadcast by region and level, every recipient's
acknowledgement (emergency.ack) followed, resends, the parent unit told and an alarm raised when one is late;
updates and the closing follow the same path.

    alert    (a bureau → its recipients)   the hub records the broadcast and who was told (the deliveries); the plan
             (routes/emergency-plan.toml: by the county of Place/DivisionCode and the level) names who must be told;
             those the sender left out get the alert from the hub — a ``hub.notice`` of kind ``emergency-resend``
             titled 【预案补发】 (message id ``copy/<alert>``) in the emergency lane (特急), RefersTo the alert —
             and must acknowledge it like the others. The limit is the strictest of the level's, the alert's
             AckWithinMinutes and the route's ``Acknowledge within=``.
    update   (emergency.update, AlertMessageId) the same path for each update (for those left out:
             ``emergency-resend``, for the closing ``emergency-closed``): recorded, broadcast to everyone told of
             the alert and to the plan of the update's level, acknowledged within the limit. Only the alert's
             sender agency or an agency above it may update it (otherwise an alarm, nothing sent). A closing
             (Kind ``closing``) ends the resends of the incident's earlier broadcasts; the closing itself must be
             acknowledged.
    ack      (emergency.ack) the acknowledging agency's, when its Agency/AgencyCode is the signed sender's and the
             broadcast it names reached that agency (otherwise an alarm, no change).
    late     (timer at the limit, then once per limit for ``rounds`` rounds) for the recipients that have not
             acknowledged: the alert again (``emergency-resend`` to each, emergency lane), the recipient's parent unit
             told (``emergency-escalation`` listing its late subordinates) and an alarm for the people on duty
             (``EMERGENCY_ACK_LATE``). Each round's messages have fixed ids (a round fired again after a crash is a
             duplicate, never a second delivery).

``hub emergencies status ID`` (the alert's message id or the incident number) prints who has and has not acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tomllib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree

from hub.envelope.model import Recipient, service_namespace
from hub.errors import ConfigError
from hub.processes.engine import CN_TZ, FedMessage, Timer, Tx

if TYPE_CHECKING:
    import asyncpg

    from hub.directory import Directory
    from hub.pipeline.context import Context
    from hub.settings import Settings

__all__ = [
    "EmergenciesProcess",
    "Plan",
    "PlanTarget",
    "ack_limit",
    "load_plan",
    "make",
    "plan_targets",
    "register",
]

log = logging.getLogger("hub.processes")

NAME = "emergencies"
ALERT, UPDATE, ACK = "emergency.alert", "emergency.update", "emergency.ack"
A_NS = service_namespace(ALERT, 1)
U_NS = service_namespace(UPDATE, 1)
K_NS = service_namespace(ACK, 1)
LEVEL_ZH = {"I": "Ⅰ级", "II": "Ⅱ级", "III": "Ⅲ级", "IV": "Ⅳ级"}
KIND_ZH = {"alert": "预警首报", "update": "续报", "closing": "结束报告"}
#: Who cleared a late round's alarm when the incident's closing ended it (process_alarms.cleared_by, on the ops page).
CLOSED_BY = "流程：事件已结束 process: incident closed"
RESPONSE_ZH = {"received": "已收到", "responding": "已启动应急响应", "forwarded": "已转发下级单位"}
REASON_ZH = {
    "county": "事发县",
    "neighbours": "相邻县",
    "city": "所属市（州）",
    "province-duty": "省应急值守",
    "nation": "国家林草局",
    "told": "已收到首报",
}


# ---------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class LevelRule:
    name: str
    ack_within: timedelta
    to: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Party:
    name: str
    agency: str
    system: str


@dataclass(frozen=True, slots=True)
class Plan:
    levels: dict[str, LevelRule]
    parties: dict[str, Party] = field(default_factory=dict)
    neighbours: dict[str, tuple[str, ...]] = field(default_factory=dict)
    duty: dict[str, str] = field(default_factory=dict)
    escalate_to: str | None = None
    rounds: int = 3


@dataclass(frozen=True, slots=True)
class PlanTarget:
    agency: str
    system: str
    reason: str


PLAN_FILE = "emergency-plan.toml"


def load_plan(path: Path) -> Plan:
    """Read routes/emergency-plan.toml; a ConfigError (EMERGENCY_PLAN_INVALID) names what is wrong."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{path}: {why}", code="EMERGENCY_PLAN_INVALID")

    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not an error; another encoding (GBK) is, named.
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise bad("不是 UTF-8 编码（请另存为 UTF-8） is not UTF-8 text (save it as UTF-8)") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise bad(f"cannot be read ({exc})") from None
    try:
        parties = {
            k: Party(str(v.get("name", k)), str(v["agency"]), str(v["system"]))
            for k, v in dict(data.get("parties", {})).items()
        }
        levels = {}
        for code in ("I", "II", "III", "IV"):
            v = data["levels"][code]
            minutes = int(v["ack_within_minutes"])
            if not 1 <= minutes <= 1440:
                raise bad(f"levels.{code}.ack_within_minutes must be 1 to 1440")
            to = tuple(str(t) for t in v["to"])
            for t in to:
                if t not in ("county", "neighbours", "city") and t not in parties:
                    raise bad(f"levels.{code}.to names {t!r}: neither county, neighbours, city nor a [parties] entry")
            levels[code] = LevelRule(str(v.get("name", code)), timedelta(minutes=minutes), to)
        duty = {str(k): str(v) for k, v in dict(data.get("duty", {})).items()}
        escalate_to = duty.pop("escalate_to", None)
        if escalate_to is not None and escalate_to not in parties:
            raise bad(f"duty.escalate_to names {escalate_to!r}, which is not a [parties] entry")
        neighbours = {str(k): tuple(str(x) for x in v) for k, v in dict(data.get("neighbours", {})).items()}
        rounds = int(data.get("rounds", 3))
        if not 1 <= rounds <= 20:
            raise bad("rounds must be 1 to 20")
    except KeyError as exc:
        raise bad(f"{exc.args[0]} is missing") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise bad(f"has a value of the wrong kind ({exc})") from None
    return Plan(levels, parties, neighbours, duty, escalate_to, rounds)


def duty_system(plan: Plan, directory: Directory, agency: str) -> str | None:
    """The system of ``agency`` that receives alerts: the plan's [duty] entry, else its first system that accepts
    emergency.alert, else its first system."""
    if agency in plan.duty:
        return plan.duty[agency]
    if not directory.has_agency(agency):
        return None
    systems = directory.systems_of(agency)
    for s in systems:
        if directory.accepts(s, ALERT):
            return s.id
    return systems[0].id if systems else None


def _bureau_at(directory: Directory, division: str) -> str | None:
    for a in directory.agencies():
        if a.division == division and a.kind == "bureau":
            return a.code
    return None


def plan_targets(plan: Plan, directory: Directory, level: str, division: str | None, sender: str) -> list[PlanTarget]:
    """Who the plan requires for an incident of ``level`` in ``division`` (a county's GB/T 2260 code), without the
    sender's own agency; each agency once, in the plan's order."""
    rule = plan.levels.get(level)
    if rule is None:
        return []
    county = _bureau_at(directory, division) if division else None
    county_agency = directory.agency(county) if county else None
    city = None
    if county_agency is not None:
        city = county_agency.parent if county_agency.level == "county" else county_agency.code
    found: dict[str, PlanTarget] = {}

    def add(agency: str | None, reason: str, system: str | None = None) -> None:
        if agency is None or agency == sender or agency in found:
            return
        system = system or duty_system(plan, directory, agency)
        if system is not None:
            found[agency] = PlanTarget(agency, system, reason)

    for t in rule.to:
        if t == "county":
            if county_agency is not None and county_agency.level == "county":
                add(county, "county")
        elif t == "city":
            add(city, "city")
        elif t == "neighbours":
            if county_agency is None or county_agency.level != "county":
                continue
            if division in plan.neighbours:
                for d in plan.neighbours[division]:
                    add(_bureau_at(directory, d), "neighbours")
            else:
                for a in directory.agencies():
                    if a.level == "county" and a.kind == "bureau" and a.parent == city and a.code != county:
                        add(a.code, "neighbours")
        else:
            p = plan.parties[t]
            add(p.agency, t, p.system)
    return list(found.values())


def ack_limit(
    level_limit: timedelta | None, alert_minutes: int | None, route_within: timedelta | None
) -> tuple[timedelta, str]:
    """The acknowledgement limit: the strictest of those given, with where it comes from (Chinese label)."""
    options: list[tuple[timedelta, str]] = []
    if alert_minutes:
        options.append((timedelta(minutes=alert_minutes), "预警要求 AckWithinMinutes"))
    if level_limit is not None:
        options.append((level_limit, "预案分级时限 plan level"))
    if route_within is not None:
        options.append((route_within, "路由 Acknowledge within"))
    if not options:
        return timedelta(minutes=30), "缺省 default"
    return min(options, key=lambda o: o[0])


def escalation_groups(
    plan: Plan, directory: Directory, late: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[str]]:
    """(parent agency, its system) → the late agencies under it; an agency without a parent goes to the plan's
    ``escalate_to`` party."""
    out: dict[tuple[str, str], list[str]] = {}
    for agency, _system in late:
        parent = directory.agency(agency).parent if directory.has_agency(agency) else None
        target: tuple[str, str] | None = None
        if parent is not None:
            system = duty_system(plan, directory, parent)
            if system is not None:
                target = (parent, system)
        if target is None and plan.escalate_to is not None:
            p = plan.parties[plan.escalate_to]
            if p.agency != agency:
                target = (p.agency, p.system)
        if target is not None:
            out.setdefault(target, []).append(agency)
    return out


def cn(t: datetime | None) -> str:
    return t.astimezone(CN_TZ).strftime("%Y-%m-%d %H:%M") if t is not None else "—"


def _t(el: etree._Element, ns: str, path: str) -> str | None:
    found = el.find("/".join(f"{{{ns}}}{p}" for p in path.split("/")))
    return found.text.strip() if found is not None and found.text is not None else None


def _name(directory: Directory, agency: str) -> str:
    try:
        return str(directory.agency(agency).name)
    except Exception:
        return agency


# ---------------------------------------------------------------------------------------------- the process


class EmergenciesProcess:
    name = NAME
    services = frozenset({ALERT, UPDATE, ACK})

    def __init__(
        self, plan: Plan, route_within: dict[str, timedelta | None] | None = None, plan_problem: str | None = None
    ) -> None:
        self.plan = plan
        #: Why the plan file could not be used (then the plan is empty: only the sender's recipients are followed).
        self.plan_problem = plan_problem
        #: service → the route's Acknowledge within= (the first route of the service).
        self.route_within = route_within or {}

    def follow(self, context: Context) -> None:
        """The engine took a new directory and the routes loaded against it: their acknowledgement limits. (The plan's
        targets are read from ``tx.directory`` at each step.)"""
        self.route_within = route_within_of(context.router)

    async def on_message(self, tx: Tx, msg: FedMessage) -> None:
        if msg.version != 1:
            return
        if msg.service == ACK:
            await self._on_ack(tx, msg)
        elif msg.service == ALERT:
            await self._on_alert(tx, msg)
        elif msg.service == UPDATE:
            await self._on_update(tx, msg)

    # ------------------------------------------------------------------ alert / update: one path

    async def _on_alert(self, tx: Tx, msg: FedMessage) -> None:
        if await tx.conn.fetchval(
            "SELECT 1 FROM emergency_broadcasts WHERE message_id = $1", uuid.UUID(msg.message_id)
        ):
            return
        env = await tx.envelope(msg)
        assert env.body is not None
        b = env.body
        minutes = _t(b, A_NS, "AckWithinMinutes")
        await self._broadcast(
            tx,
            msg,
            kind="alert",
            alert_id=msg.message_id,
            incident=_t(b, A_NS, "IncidentNumber") or "",
            level=_t(b, A_NS, "Level") or "IV",
            title=_t(b, A_NS, "Title") or "",
            division=_t(b, A_NS, "Place/DivisionCode"),
            alert_minutes=int(minutes) if minutes else None,
            also=[],
        )

    async def _on_update(self, tx: Tx, msg: FedMessage) -> None:
        if await tx.conn.fetchval(
            "SELECT 1 FROM emergency_broadcasts WHERE message_id = $1", uuid.UUID(msg.message_id)
        ):
            return
        env = await tx.envelope(msg)
        assert env.body is not None
        b = env.body
        alert_id = _t(b, U_NS, "AlertMessageId") or ""
        alert = await tx.conn.fetchrow(
            "SELECT sender_agency, incident, title, division FROM emergency_broadcasts"
            " WHERE message_id = $1 AND kind = 'alert'",
            uuid.UUID(alert_id),
        )
        if alert is None:  # an alert the hub did not follow (sent before it followed emergencies): nothing to add
            return
        if msg.sender_agency != alert["sender_agency"] and not tx.directory.is_below(
            alert["sender_agency"], msg.sender_agency
        ):
            await tx.alarm(
                "EMERGENCY_UPDATE_MISMATCH",
                msg.message_id,
                "应急续报并非由原预警发出单位或其上级报送",
                f"update {msg.message_id} from {msg.sender_system} refers to alert {alert_id} of agency "
                f"{alert['sender_agency']}; not followed",
            )
            return
        kind = "closing" if _t(b, U_NS, "Kind") == "closing" else "update"
        told = await tx.conn.fetch(
            "SELECT DISTINCT r.agency_code, r.system FROM emergency_recipients r JOIN emergency_broadcasts e"
            " ON e.message_id = r.message_id WHERE e.alert_id = $1",
            uuid.UUID(alert_id),
        )
        if kind == "closing":
            # The incident is closed: no more resends of its earlier broadcasts (the closing itself is followed), and
            # their late-acknowledgement alarms end with them: nobody is asked to acknowledge them any more (who did
            # not stays in emergency_recipients; the alarm's history keeps when and why it was cleared).
            closed = await tx.conn.fetch(
                "UPDATE emergency_broadcasts SET closed_at = $2 WHERE alert_id = $1 AND closed_at IS NULL"
                " RETURNING message_id::text AS message_id",
                uuid.UUID(alert_id),
                tx.now,
            )
            for r in closed:
                await tx.cancel("ack-due", r["message_id"])
                await tx.clear_alarm("EMERGENCY_ACK_LATE", r["message_id"], by=CLOSED_BY)
        await self._broadcast(
            tx,
            msg,
            kind=kind,
            alert_id=alert_id,
            incident=_t(b, U_NS, "IncidentNumber") or alert["incident"],
            level=_t(b, U_NS, "Level") or "IV",
            title=alert["title"],
            division=_t(b, U_NS, "Place/DivisionCode") or alert["division"],
            alert_minutes=None,
            also=[PlanTarget(r["agency_code"], r["system"], "told") for r in told],
        )

    async def _broadcast(
        self,
        tx: Tx,
        msg: FedMessage,
        *,
        kind: str,
        alert_id: str,
        incident: str,
        level: str,
        title: str,
        division: str | None,
        alert_minutes: int | None,
        also: Sequence[PlanTarget],
    ) -> None:
        directory = tx.directory
        if self.plan_problem is not None:
            await tx.alarm(
                "EMERGENCY_PLAN_INVALID",
                "routes/emergency-plan.toml",
                "应急预警分发预案无法使用，仅跟踪发文单位主送的接收单位",
                f"the broadcast plan cannot be used ({self.plan_problem}); {kind} {msg.message_id} is followed for "
                "the recipients its sender named only",
            )
        rule = self.plan.levels.get(level)
        limit, source = ack_limit(rule.ack_within if rule else None, alert_minutes, self.route_within.get(msg.service))
        # From when the hub received it (its recipients had it then), not from when the engine read it: an engine that
        # was stopped or behind must not move the deadline back by its delay; one already past fires on this pass.
        due = msg.received_at + limit
        delivered = {
            d.recipient_agency: d.recipient_system
            for d in await tx.deliveries(msg.message_id)
            if d.recipient_agency != msg.sender_agency
        }
        wanted = [*plan_targets(self.plan, directory, level, division, msg.sender_agency), *also]
        missing: dict[str, PlanTarget] = {}
        for t in wanted:
            if t.agency not in delivered and t.agency != msg.sender_agency:
                missing.setdefault(t.agency, t)
        mid = uuid.UUID(msg.message_id)
        await tx.conn.execute(
            "INSERT INTO emergency_broadcasts (message_id, kind, alert_id, incident, level, title, division,"
            " sender_agency, sender_system, received_at, ack_within_s, ack_due, limit_source)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            mid,
            kind,
            uuid.UUID(alert_id),
            incident,
            level,
            title,
            division,
            msg.sender_agency,
            msg.sender_system,
            msg.received_at,
            int(limit.total_seconds()),
            due,
            source,
        )
        reasons = {t.agency: t.reason for t in wanted}
        rows = [(mid, a, _name(directory, a), s, "sender", reasons.get(a)) for a, s in sorted(delivered.items())] + [
            (mid, t.agency, _name(directory, t.agency), t.system, "plan", t.reason) for t in missing.values()
        ]
        await tx.conn.executemany(
            "INSERT INTO emergency_recipients (message_id, agency_code, agency_name, system, via, reason)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            rows,
        )
        lv = LEVEL_ZH.get(level, level)
        if missing:
            copy_id = await tx.notice(
                [Recipient.to(t.agency, t.system) for t in missing.values()],
                # hub.notice's kinds (schemas/services/hub.notice/1): the forward is an emergency-resend (the closing's
                # an emergency-closed); its id (copy/…) and title (【预案补发】) tell it from a late round's resend.
                kind="emergency-closed" if kind == "closing" else "emergency-resend",
                title=f"【预案补发】【{lv}突发事件{KIND_ZH[kind]}】{title}"[:200],
                text=(
                    f"{_name(directory, msg.sender_agency)}报送突发事件{KIND_ZH[kind]}（事件编号 {incident}，"
                    f"{lv}，报文 {msg.message_id}）。按应急预警分发预案，贵单位须接收并签收：请于 {cn(due)} 前通过 emergency.ack "  # noqa: E501
                    f"签收（AlertMessageId 填 {msg.message_id}）。The hub forwards this emergency {kind} under the "
                    "broadcast plan; acknowledge it with emergency.ack before the deadline (UTC+8)."
                ),
                key=f"copy/{msg.message_id}",
                refers_to=msg.message_id,
                case_ref=incident,
                deadline=due,
                urgency="特急",
                lane="emergency",
            )
            await tx.conn.execute(
                "UPDATE emergency_broadcasts SET copy_id = $2 WHERE message_id = $1", mid, uuid.UUID(copy_id)
            )
        if rows:
            await tx.schedule("ack-due", msg.message_id, due, {"round": 1})

    # ------------------------------------------------------------------ acknowledgements

    async def _on_ack(self, tx: Tx, msg: FedMessage) -> None:
        env = await tx.envelope(msg)
        assert env.body is not None
        agency = _t(env.body, K_NS, "Agency/AgencyCode")
        about = _t(env.body, K_NS, "AlertMessageId") or ""
        response = _t(env.body, K_NS, "Response")
        if agency != msg.sender_agency:
            await tx.alarm(
                "EMERGENCY_ACK_MISMATCH",
                msg.message_id,
                "应急签收的签收单位与签名发送方不一致",
                f"acknowledgement {msg.message_id} from {msg.sender_system} names agency {agency}, not the signed "
                f"sender's agency {msg.sender_agency}; nothing recorded",
            )
            return
        row = await tx.conn.fetchrow(
            "UPDATE emergency_recipients SET acked_at = $3, ack_id = $4, response = $5"
            " WHERE message_id = $1 AND agency_code = $2 AND acked_at IS NULL RETURNING message_id",
            uuid.UUID(about),
            agency,
            msg.received_at,
            uuid.UUID(msg.message_id),
            response,
        )
        if row is None:
            known = await tx.conn.fetchval(
                "SELECT 1 FROM emergency_recipients WHERE message_id = $1 AND agency_code = $2",
                uuid.UUID(about),
                agency,
            )
            if not known:
                await tx.alarm(
                    "EMERGENCY_ACK_UNKNOWN",
                    msg.message_id,
                    "应急签收所指的预警未经枢纽送达该单位",
                    f"acknowledgement {msg.message_id} from {msg.sender_system} refers to {about}, which the hub did "
                    f"not deliver to agency {agency} as an alert or update it follows; nothing recorded",
                )
            return  # (a second acknowledgement by the same agency changes nothing)
        left = await tx.conn.fetchval(
            "SELECT count(*) FROM emergency_recipients WHERE message_id = $1 AND acked_at IS NULL", uuid.UUID(about)
        )
        if left == 0:
            await tx.cancel("ack-due", about)
            await tx.clear_alarm("EMERGENCY_ACK_LATE", about)

    # ------------------------------------------------------------------ late acknowledgements

    async def on_timer(self, tx: Tx, timer: Timer) -> None:
        if timer.kind != "ack-due":
            return
        mid = uuid.UUID(timer.key)
        b = await tx.conn.fetchrow(
            "SELECT kind, incident, level, title, sender_agency, ack_within_s, ack_due, closed_at"
            " FROM emergency_broadcasts WHERE message_id = $1",
            mid,
        )
        if b is None or b["closed_at"] is not None:
            return
        late = await tx.conn.fetch(
            "SELECT agency_code, agency_name, system FROM emergency_recipients"
            " WHERE message_id = $1 AND acked_at IS NULL ORDER BY agency_code",
            mid,
        )
        if not late:
            return
        rnd = int(timer.data.get("round", 1))
        lv = LEVEL_ZH.get(b["level"], b["level"])
        what = KIND_ZH.get(b["kind"], b["kind"])
        outstanding = [(r["agency_code"], r["system"], r["agency_name"], "未签收") for r in late]
        await tx.notice(
            [Recipient.to(r["agency_code"], r["system"]) for r in late],
            kind="emergency-resend",
            title=f"【重发·第{rnd}次】【{lv}突发事件{what}】{b['title']}"[:200],
            text=(
                f"突发事件{what}（事件编号 {b['incident']}，报文 {timer.key}）应于 {cn(b['ack_due'])} 前签收，"
                f"贵单位尚未签收。请立即通过 emergency.ack 签收（AlertMessageId 填 {timer.key}）。The emergency {b['kind']} was "  # noqa: E501
                "not acknowledged in time; acknowledge it now."
            ),
            key=f"resend/{timer.key}/{rnd}",
            refers_to=timer.key,
            case_ref=b["incident"],
            deadline=b["ack_due"],
            outstanding=outstanding,
            urgency="特急",
            lane="emergency",
        )
        groups = escalation_groups(self.plan, tx.directory, [(r["agency_code"], r["system"]) for r in late])
        names = {r["agency_code"]: r["agency_name"] for r in late}
        for (parent, system), under in sorted(groups.items()):
            await tx.notice(
                [Recipient.to(parent, system)],
                kind="emergency-escalation",
                title=f"【督促签收】下级单位未签收{lv}突发事件{what}：{b['title']}"[:200],
                text=(
                    f"{'、'.join(names[a] for a in under)}未在 {cn(b['ack_due'])} 前签收突发事件{what}（事件编号 "
                    f"{b['incident']}，报文 {timer.key}），枢纽已重发第 {rnd} 次。请督促其立即签收。"
                    "Subordinate units have not acknowledged the emergency message; the hub resent it. Please make them acknowledge it."  # noqa: E501
                ),
                key=f"escalate/{timer.key}/{rnd}/{parent}",
                refers_to=timer.key,
                case_ref=b["incident"],
                deadline=b["ack_due"],
                outstanding=[o for o in outstanding if o[0] in under],
                urgency="特急",
                lane="emergency",
            )
            await tx.conn.execute(
                "UPDATE emergency_recipients SET escalated_to = $3, escalated_at = COALESCE(escalated_at, $4)"
                " WHERE message_id = $1 AND agency_code = ANY($2::text[])",
                mid,
                under,
                parent,
                tx.now,
            )
        await tx.conn.execute(
            "UPDATE emergency_recipients SET resends = resends + 1, last_resent_at = $2"
            " WHERE message_id = $1 AND acked_at IS NULL",
            mid,
            tx.now,
        )
        await tx.conn.execute("UPDATE emergency_broadcasts SET rounds = $2 WHERE message_id = $1", mid, rnd)
        await tx.alarm(
            "EMERGENCY_ACK_LATE",
            timer.key,
            f"{lv}突发事件{what}超时未签收（事件 {b['incident']}）",
            f"{len(late)} recipient(s) did not acknowledge {b['kind']} {timer.key} by {cn(b['ack_due'])} (UTC+8): "
            f"{', '.join(r['system'] for r in late)}; round {rnd} resent and escalated to their parent units",
        )
        if rnd < self.plan.rounds:
            await tx.schedule(
                "ack-due", timer.key, tx.now + timedelta(seconds=int(b["ack_within_s"])), {"round": rnd + 1}
            )


async def _followed(tx: Tx, message_id: str) -> bool:
    return bool(
        await tx.conn.fetchval("SELECT 1 FROM emergency_broadcasts WHERE message_id = $1", uuid.UUID(message_id))
    )


def config_files(settings: Settings) -> list[Path]:
    """The files ``make`` reads (hub.processes.runner.ProcessFiles follows them)."""
    return [Path(settings.routes_dir) / PLAN_FILE]


def config_problem(settings: Settings) -> str | None:
    """Why ``make`` could not use the broadcast plan as it is now (None: it can)."""
    try:
        load_plan(Path(settings.routes_dir) / PLAN_FILE)
    except ConfigError as exc:
        return f"EMERGENCY_PLAN_INVALID {exc}"
    return None


def make(context: Context, settings: Settings) -> EmergenciesProcess:
    """The process with the installation's plan. A plan file that cannot be used does not stop the engine (the other
    processes must run): it is logged, and every alert raises the alarm EMERGENCY_PLAN_INVALID while the recipients
    the sender named are still followed."""
    problem = None
    try:
        plan = load_plan(settings.routes_dir / PLAN_FILE)
    except ConfigError as exc:
        log.error("应急预警分发预案无法使用 the emergency broadcast plan cannot be used: %s", exc)
        plan, problem = Plan(levels={}), str(exc)
    return EmergenciesProcess(plan, route_within_of(context.router), problem)


def route_within_of(router: Any) -> dict[str, timedelta | None]:
    """service → the ``Acknowledge within=`` of its first route (routes/emergency.routes.xml): alerts and updates."""
    within: dict[str, timedelta | None] = {}
    for service in (ALERT, UPDATE):
        routes = router.routes.for_service(service, 1)
        within[service] = routes[0].policy.ack_within if routes else None
    return within


# ---------------------------------------------------------------------------------------------- status


async def read_status(conn: asyncpg.Connection, ref: str) -> list[dict[str, Any]] | None:
    """The broadcasts of an incident (by the alert's message id, any of its updates' ids, or the incident number),
    each with its recipients; None when the hub follows no such alert."""
    try:
        mid: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        mid = None
    alert = await conn.fetchval(
        "SELECT alert_id FROM emergency_broadcasts WHERE message_id = $1 OR (incident = $2 AND $1::uuid IS NULL)"
        " ORDER BY received_at DESC LIMIT 1",
        mid,
        ref,
    )
    if alert is None:
        return None
    rows = await conn.fetch(
        "SELECT message_id::text AS message_id, kind, incident, level, title, sender_agency, sender_system,"
        " received_at, ack_within_s, ack_due, limit_source, rounds, closed_at FROM emergency_broadcasts"
        " WHERE alert_id = $1 ORDER BY received_at, message_id",
        alert,
    )
    out = []
    for r in rows:
        people = await conn.fetch(
            "SELECT agency_code, agency_name, system, via, reason, acked_at, response, resends, escalated_to"
            " FROM emergency_recipients WHERE message_id = $1::uuid ORDER BY acked_at IS NOT NULL, agency_code",
            r["message_id"],
        )
        out.append({**dict(r), "recipients": [dict(p) for p in people]})
    return out


def render_status(broadcasts: Iterable[dict[str, Any]]) -> list[str]:
    """The lines of ``hub emergencies status`` (Chinese first)."""
    lines: list[str] = []
    for b in broadcasts:
        people = b["recipients"]
        done = [p for p in people if p["acked_at"] is not None]
        lv = LEVEL_ZH.get(b["level"], b["level"])
        lines += [
            f"{KIND_ZH.get(b['kind'], b['kind'])} {b['kind']}：{b['title']}（{lv}，事件编号 {b['incident']}）",
            f"  报文 message: {b['message_id']}   发出 sender: {b['sender_system']} ({b['sender_agency']})",
            f"  签收时限 acknowledge by: {cn(b['ack_due'])}（{b['ack_within_s'] // 60} 分钟，{b['limit_source']}）"
            + (f"   已重发 {b['rounds']} 轮 rounds resent" if b["rounds"] else ""),
            f"  签收情况 acknowledged: {len(done)}/{len(people)}"
            + ("   （事件已结束，不再催办 closed）" if b["closed_at"] is not None else ""),
        ]
        for p in people:
            via = "预案增补" if p["via"] == "plan" else "发文单位主送"
            why = REASON_ZH.get(p["reason"] or "", p["reason"] or "")
            who = f"{p['agency_name']} ({p['agency_code']}, {p['system']}) [{via}{'·' + why if why else ''}]"
            if p["acked_at"] is not None:
                what = f"✔ 已签收 {RESPONSE_ZH.get(p['response'], p['response'])} {cn(p['acked_at'])}"
            else:
                what = "✘ 未签收 not acknowledged"
                if p["resends"]:
                    what += f"（已重发 {p['resends']} 次 resent {p['resends']}×"
                    what += f"，已通报上级 {p['escalated_to']}）" if p["escalated_to"] else "）"
            lines.append(f"    {who}: {what}")
    return lines


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from hub.store.db import connection

    async def read() -> list[dict[str, Any]] | None:
        async with connection(settings.pg_dsn) as conn:
            return await read_status(conn, args.id)

    found = asyncio.run(read())
    if found is None:
        print(
            f"EMERGENCY_NOT_FOUND 枢纽没有该应急预警的记录 no emergency alert followed by the hub has id or number {args.id}"  # noqa: E501
        )
        return 1
    print("\n".join(render_status(found)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("emergencies", help="emergency alerts followed by the hub (应急预警)")
    ps = p.add_subparsers(dest="emergencies_command", metavar="ACTION", required=True)
    q = ps.add_parser("status", help="an alert, its updates and who has and has not acknowledged (签收情况)")
    q.add_argument("id", help="the alert's (or an update's) message id, or the incident number")
    q.set_defaults(handler=cmd_status)
