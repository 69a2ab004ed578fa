"""视频会议流程 The meetings process (issue 14): meeting.booking → meeting.notice → meeting.confirm, reminders before
the start, and the hub's register of rooms and terminals.

    booking   (any system → the video-conference system)   the hub records the meeting and takes its rooms and
              terminals in ``meeting_slots``; PostgreSQL's exclusion constraint ``meeting_slot_taken`` (btree_gist:
              same resource, overlapping ``[start, end)``) refuses a slot already held — not a check in Python that
              two engines could race past. Refused: a ``hub.notice`` of kind ``meeting-refused`` (text starting with
              the code ``MEETING_SLOT_TAKEN`` and naming each taken room or terminal and when) to the booker and to
              the video-conference system, whose adapter then never keeps the meeting on its platform
              (adapters/video_conference: it refuses the booking if it has not handled it yet, cancels it if it has).
    notice    (the video-conference system → each venue)     who was told (the deliveries of the notice), the meeting
              number and the confirmation deadline; reminders armed at the deadline (``ConfirmBy``) and an hour
              before the start. A notice for a booking the hub refused: its recipients get ``meeting-refused`` too.
    confirm   (a venue → the video-conference system)        the venue's attendance, only when its Agency is the
              signed sender's and the hub delivered that notice to that agency (otherwise an alarm, no change).
    refusal   (delivery.refusal from the video-conference system about a booking) the platform did not book it: its
              slots are released and its reminders cancelled.
    reminder  (timer)  a ``hub.notice`` of kind ``meeting-reminder`` to every venue that has not confirmed, once
              per round (its message id is fixed by the round: a timer fired again after a crash is a duplicate).

``hub meetings status ID`` (the booking's message id or the meeting number) prints who has and has not confirmed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from lxml import etree

from hub.envelope.model import Recipient, service_namespace
from hub.envelope.xsdvalue import xsd_datetime, xsd_integer
from hub.processes.engine import CN_TZ, FedMessage, Timer, Tx

if TYPE_CHECKING:
    import asyncpg

    from hub.pipeline.context import Context
    from hub.settings import Settings

__all__ = [
    "Booking",
    "MeetingsProcess",
    "Venue",
    "make",
    "must_confirm",
    "parse_booking",
    "register",
    "reminder_plan",
    "reserve",
    "resources",
]

NAME = "meetings"
#: The video-conference system (routes/meetings.routes.xml: bookings and confirmations go to it, notices come from it).
VIDEO_SYSTEM = "prov-220000-video"
BOOKING, NOTICE, CONFIRM, REFUSAL = "meeting.booking", "meeting.notice", "meeting.confirm", "delivery.refusal"
#: The last reminder round: this long before the start (the first is the notice's ConfirmBy).
REMIND_BEFORE = timedelta(hours=1)
ROUNDS = ("confirm-by", "before-start")

B_NS = service_namespace(BOOKING, 1)
N_NS = service_namespace(NOTICE, 1)
C_NS = service_namespace(CONFIRM, 1)
R_NS = service_namespace(REFUSAL, 1)

STATE_ZH = {
    "booked": "已预约 booked",
    "refused": "枢纽已拒绝 refused by the hub",
    "platform_refused": "视频会议系统已拒绝 refused by the platform",
}
ROLE_ZH = {"main": "主会场", "branch": "分会场", "invited": "受邀单位"}
ATTENDANCE_ZH = {"attend": "参会 attend", "decline": "不参会 decline"}


# ---------------------------------------------------------------------------------------------- pure logic


@dataclass(frozen=True, slots=True)
class Venue:
    role: str
    agency_name: str
    agency_code: str
    room: str
    terminal: str | None


@dataclass(frozen=True, slots=True)
class Booking:
    title: str
    start: datetime
    minutes: int
    organizer_name: str
    organizer_code: str
    venues: tuple[Venue, ...]

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.minutes)


def _t(el: etree._Element, ns: str, path: str) -> str | None:
    found = el.find("/".join(f"{{{ns}}}{p}" for p in path.split("/")))
    return found.text.strip() if found is not None and found.text is not None else None


def _ts(text: str | None) -> datetime | None:
    return xsd_datetime(text) if text else None


def parse_booking(body: etree._Element) -> Booking:
    """The parts of a (schema-valid) meeting.booking body the hub follows."""
    venues = tuple(
        Venue(
            role=_t(v, B_NS, "Role") or "branch",
            agency_name=_t(v, B_NS, "AgencyName") or "",
            agency_code=_t(v, B_NS, "AgencyCode") or "",
            room=_t(v, B_NS, "Room") or "",
            terminal=_t(v, B_NS, "TerminalNumber"),
        )
        for v in body.iterfind(f"{{{B_NS}}}Venues/{{{B_NS}}}Venue")
    )
    start = _ts(_t(body, B_NS, "Start"))
    assert start is not None  # required by the schema
    return Booking(
        title=_t(body, B_NS, "Title") or "",
        start=start,
        minutes=xsd_integer(_t(body, B_NS, "DurationMinutes") or "0"),
        organizer_name=_t(body, B_NS, "Organizer/Name") or "",
        organizer_code=_t(body, B_NS, "Organizer/AgencyCode") or "",
        venues=venues,
    )


def normalize_room(room: str) -> str:
    """A room's name as the register compares it: NFKC (全角/半角 alike), without spaces, case folded — "二楼 视频
    会议室" and "二楼视频会议室" are one room."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", room)).casefold()


def resources(booking: Booking) -> list[tuple[str, str]]:
    """(resource, Chinese label) of every room and terminal the booking takes, each once: a room is its agency's
    (``room:<agency>/<name>``), a terminal is its number (``terminal:<number>``) — the platform's overlap rule."""
    out: dict[str, str] = {}
    for v in booking.venues:
        out.setdefault(f"room:{v.agency_code}/{normalize_room(v.room)}", f"会议室「{v.room}」（{v.agency_name}）")
        if v.terminal:
            out.setdefault(f"terminal:{v.terminal}", f"视频终端 {v.terminal}（{v.agency_name}）")
    return list(out.items())


def must_confirm(booking: Booking, booker_agency: str) -> list[Venue]:
    """The venues whose agency must confirm attendance: every venue's agency once, but the booker's and the
    organizer's (they called the meeting)."""
    seen: dict[str, Venue] = {}
    for v in booking.venues:
        if v.agency_code not in (booker_agency, booking.organizer_code):
            seen.setdefault(v.agency_code, v)
    return list(seen.values())


def reminder_plan(
    start: datetime, confirm_by: datetime | None, before: timedelta = REMIND_BEFORE
) -> list[tuple[str, datetime]]:
    """The reminder rounds (name, due) of a meeting: at the confirmation deadline and ``before`` the start, each
    strictly before the start and after the previous round (a deadline at or after the last round is left out)."""
    rounds: list[tuple[str, datetime]] = []
    last = start - before
    if confirm_by is not None and confirm_by < last:
        rounds.append(("confirm-by", confirm_by))
    if last < start:
        rounds.append(("before-start", last))
    return rounds


def cn(t: datetime | None) -> str:
    return t.astimezone(CN_TZ).strftime("%Y-%m-%d %H:%M") if t is not None else "—"


def span(start: datetime, end: datetime) -> str:
    s, e = start.astimezone(CN_TZ), end.astimezone(CN_TZ)
    return f"{cn(s)}–{e.strftime('%H:%M') if s.date() == e.date() else cn(e)}"


@dataclass(frozen=True, slots=True)
class Conflict:
    label: str
    start: datetime
    end: datetime
    booking_id: str
    organizer: str


def refusal_text(title: str, conflicts: Sequence[Conflict]) -> str:
    """The reason a booking is refused, Chinese first (the booker reads it), each taken room or terminal once."""
    parts = [
        f"{c.label}在 {span(c.start, c.end)} 已被{c.organizer}预约的另一会议占用（预约报文 {c.booking_id}）"
        for c in conflicts
    ]
    return (
        f"MEETING_SLOT_TAKEN 会议「{title}」预约未成立：" + "；".join(parts) + "。请更换时段、会议室或终端后重新预约。"
        " The booking is refused: a room or terminal is already booked for an overlapping slot."
    )


# ---------------------------------------------------------------------------------------------- the register


async def reserve(
    conn: asyncpg.Connection, booking_id: str, taken: Sequence[tuple[str, str]], start: datetime, end: datetime
) -> list[Conflict]:
    """Take the booking's rooms and terminals for ``[start, end)``, all or none: [] when held, else what holds them.
    PostgreSQL decides (the exclusion constraint ``meeting_slot_taken``): a concurrent transaction taking an
    overlapping slot of the same resource waits for this one and is refused once it commits."""
    import asyncpg

    for attempt in range(10):
        try:
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO meeting_slots (booking_id, resource, label, slot)"
                    " VALUES ($1, $2, $3, tstzrange($4, $5))",
                    [(uuid.UUID(booking_id), r, label, start, end) for r, label in taken],
                )
            return []
        except asyncpg.exceptions.ExclusionViolationError:
            break
        except asyncpg.exceptions.DeadlockDetectedError:
            # Two transactions inserting conflicting slots at once can each wait for the other (PostgreSQL checks an
            # exclusion constraint after the insert): the one chosen as the victim rolls its savepoint back, which
            # lets the other go on, and tries again — now waiting for the other's outcome like any later booking.
            if attempt == 9:
                raise
    rows = await conn.fetch(
        "SELECT s.label, lower(s.slot) AS s, upper(s.slot) AS e, s.booking_id::text AS b,"
        " CASE WHEN m.organizer_agency = m.booker_agency THEN m.organizer_name ELSE m.booker_agency END AS by_whom"
        " FROM meeting_slots s JOIN meetings m ON m.booking_id = s.booking_id"
        " WHERE s.held AND s.resource = ANY($1::text[]) AND s.slot && tstzrange($2, $3) AND s.booking_id <> $4"
        " ORDER BY lower(s.slot), s.label",
        [r for r, _ in taken],
        start,
        end,
        uuid.UUID(booking_id),
    )
    found = [Conflict(r["label"], r["s"], r["e"], r["b"], r["by_whom"]) for r in rows]
    # The holder committed after the failed insert's snapshot (READ COMMITTED: a fresh snapshot per statement sees it).
    return found or [Conflict("会议室或视频终端", start, end, "—", "另一单位")]


# ---------------------------------------------------------------------------------------------- the process


class MeetingsProcess:
    name = NAME
    services = frozenset({BOOKING, NOTICE, CONFIRM, REFUSAL})

    def __init__(self, video_system: str = VIDEO_SYSTEM, remind_before: timedelta = REMIND_BEFORE) -> None:
        self.video_system = video_system
        self.remind_before = remind_before

    async def on_message(self, tx: Tx, msg: FedMessage) -> None:
        if msg.service == REFUSAL:
            # Only the video-conference system's refusals of a booking matter; decided from the header alone.
            if msg.sender_system == self.video_system and msg.ref_to:
                await self._on_refusal(tx, msg)
            return
        if msg.version != 1:
            return
        if msg.service == BOOKING:
            await self._on_booking(tx, msg)
        elif msg.service == NOTICE:
            await self._on_notice(tx, msg)
        elif msg.service == CONFIRM:
            await self._on_confirm(tx, msg)

    # ------------------------------------------------------------------ booking

    async def _video_recipient(self, tx: Tx) -> Recipient:
        return Recipient.to(tx.directory.system(self.video_system).agency, self.video_system)

    async def _on_booking(self, tx: Tx, msg: FedMessage) -> None:
        env = await tx.envelope(msg)
        assert env.body is not None
        b = parse_booking(env.body)
        bid = uuid.UUID(msg.message_id)
        if await tx.conn.fetchval("SELECT 1 FROM meetings WHERE booking_id = $1", bid):
            return
        await tx.conn.execute(
            "INSERT INTO meetings (booking_id, booker_agency, booker_system, organizer_agency, organizer_name, title,"
            " start_at, end_at, state, received_at, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'booked', $9,"
            " $10)",
            bid,
            msg.sender_agency,
            msg.sender_system,
            b.organizer_code,
            b.organizer_name,
            b.title,
            b.start,
            b.end,
            msg.received_at,
            tx.now,
        )
        if b.organizer_code != msg.sender_agency:
            # The body names another organizer than the signed sender's agency: for the people on duty. It grants
            # nothing: the rooms and terminals are held for the signed booker's request, and the named organizer is
            # not spared the confirmation.
            await tx.alarm(
                "MEETING_ORGANIZER_MISMATCH",
                msg.message_id,
                "会议预约的主办单位与签名发送方不一致",
                f"booking {msg.message_id} from {msg.sender_system} names organizer {b.organizer_code}, not the signed "
                f"sender's agency {msg.sender_agency}; followed as the sender's booking",
            )
            confirmers = must_confirm(replace(b, organizer_code=msg.sender_agency), msg.sender_agency)
        else:
            confirmers = must_confirm(b, msg.sender_agency)
        await tx.conn.executemany(
            "INSERT INTO meeting_participants (booking_id, agency_code, agency_name, role) VALUES ($1, $2, $3, $4)",
            [(bid, v.agency_code, v.agency_name, v.role) for v in confirmers],
        )
        conflicts = await reserve(tx.conn, msg.message_id, resources(b), b.start, b.end)
        if conflicts:
            await self._refuse(tx, msg, b, "MEETING_SLOT_TAKEN", refusal_text(b.title, conflicts))

    async def _refuse(self, tx: Tx, msg: FedMessage, b: Booking, code: str, text: str) -> None:
        await tx.conn.execute(
            "UPDATE meetings SET state = 'refused', code = $2, detail = $3, decided_at = $4 WHERE booking_id = $1",
            uuid.UUID(msg.message_id),
            code,
            text,
            tx.now,
        )
        await tx.notice(
            [Recipient.to(msg.sender_agency, msg.sender_system), await self._video_recipient(tx)],
            kind="meeting-refused",
            title=f"视频会议预约被拒：{b.title}",
            text=text,
            key=f"refused/{msg.message_id}",
            refers_to=msg.message_id,
            case_ref=code,
            conversation_id=msg.conversation_id,
        )

    # ------------------------------------------------------------------ notice

    async def _on_notice(self, tx: Tx, msg: FedMessage) -> None:
        env = await tx.envelope(msg)
        assert env.body is not None
        booking_id = _t(env.body, N_NS, "BookingMessageId")
        if not booking_id:
            return
        m = await tx.conn.fetchrow(
            "SELECT state, booker_agency, title, start_at, reminders_armed, code FROM meetings WHERE booking_id = $1",
            uuid.UUID(booking_id),
        )
        if m is None:  # not booked through the hub while it followed meetings
            return
        told = [d for d in await tx.deliveries(msg.message_id) if d.recipient_agency != m["booker_agency"]]
        if m["state"] != "booked":
            if told:
                await tx.notice(
                    [Recipient.to(d.recipient_agency, d.recipient_system) for d in told],
                    kind="meeting-refused",
                    title=f"视频会议未成立，请勿参会：{m['title']}",
                    text=f"{m['code'] or 'MEETING_SLOT_TAKEN'} 会议「{m['title']}」的预约已被拒绝，该会议通知（报文 "
                    f"{msg.message_id}）作废。The booking of this meeting was refused; disregard the notice.",
                    key=f"void/{booking_id}/{msg.message_id}",
                    refers_to=msg.message_id,
                    case_ref=m["code"],
                )
            return
        number = _t(env.body, N_NS, "MeetingNumber")
        confirm_by = _ts(_t(env.body, N_NS, "ConfirmBy"))
        await tx.conn.execute(
            "UPDATE meetings SET meeting_number = COALESCE(meeting_number, $2), confirm_by = COALESCE(confirm_by, $3)"
            " WHERE booking_id = $1",
            uuid.UUID(booking_id),
            number,
            confirm_by,
        )
        for d in told:  # (the booker's own notice is its reply: the booker does not confirm)
            try:
                name = tx.directory.agency(d.recipient_agency).name
            except Exception:
                name = d.recipient_agency
            await tx.conn.execute(
                "INSERT INTO meeting_participants (booking_id, agency_code, agency_name, role, system, notice_id,"
                " notified_at) VALUES ($1, $2, $3, 'invited', $4, $5, $6) ON CONFLICT (booking_id, agency_code) DO"
                " UPDATE SET system = COALESCE(meeting_participants.system, EXCLUDED.system),"
                " notice_id = COALESCE(meeting_participants.notice_id, EXCLUDED.notice_id),"
                " notified_at = COALESCE(meeting_participants.notified_at, EXCLUDED.notified_at)",
                uuid.UUID(booking_id),
                d.recipient_agency,
                name,
                d.recipient_system,
                uuid.UUID(msg.message_id),
                d.delivered_at or msg.received_at,
            )
        if not m["reminders_armed"]:
            for rnd, due in reminder_plan(m["start_at"], confirm_by, self.remind_before):
                await tx.schedule("remind", f"{booking_id}/{rnd}", due, {"round": rnd})
            await tx.conn.execute(
                "UPDATE meetings SET reminders_armed = true WHERE booking_id = $1", uuid.UUID(booking_id)
            )

    # ------------------------------------------------------------------ confirm

    async def _on_confirm(self, tx: Tx, msg: FedMessage) -> None:
        env = await tx.envelope(msg)
        assert env.body is not None
        agency = _t(env.body, C_NS, "Agency/AgencyCode")
        notice_id = _t(env.body, C_NS, "NoticeMessageId") or ""
        attendance = _t(env.body, C_NS, "Attendance")
        if agency != msg.sender_agency:
            await tx.alarm(
                "MEETING_CONFIRM_MISMATCH",
                msg.message_id,
                "参会回执的回执单位与签名发送方不一致",
                f"confirmation {msg.message_id} from {msg.sender_system} names agency {agency}, not the signed "
                f"sender's agency {msg.sender_agency}; nothing recorded",
            )
            return
        booking = await tx.conn.fetchval(
            "UPDATE meeting_participants SET attendance = $3, confirmed_at = $4, confirm_id = $5"
            " WHERE notice_id = $1 AND agency_code = $2 RETURNING booking_id::text",
            uuid.UUID(notice_id),
            agency,
            attendance,
            msg.received_at,
            uuid.UUID(msg.message_id),
        )
        if booking is None and agency is not None:
            bid = await self._delivered_notice_meeting(tx, notice_id, agency)
            if bid is not None:
                # The hub delivered that notice to that agency for a meeting it follows, yet no venue row has it: the
                # booker's own notice (its reply: the booker does not confirm, nothing to record), or another notice
                # of the meeting to a venue that must confirm (recorded on its row).
                await tx.conn.execute(
                    "UPDATE meeting_participants SET attendance = $3, confirmed_at = $4, confirm_id = $5"
                    " WHERE booking_id = $1 AND agency_code = $2",
                    bid,
                    agency,
                    attendance,
                    msg.received_at,
                    uuid.UUID(msg.message_id),
                )
                return
        if booking is None:
            await tx.alarm(
                "MEETING_CONFIRM_UNKNOWN",
                msg.message_id,
                "参会回执所指的会议通知未经枢纽送达该单位",
                f"confirmation {msg.message_id} from {msg.sender_system} refers to notice {notice_id}, which the hub "
                f"did not deliver to agency {agency} for a meeting it follows; nothing recorded",
            )

    async def _delivered_notice_meeting(self, tx: Tx, notice_id: str, agency: str) -> uuid.UUID | None:
        """The meeting (booking id) that ``notice_id`` is about, when it is a meeting.notice of the video-conference
        system that the hub delivered to ``agency`` (its deliveries) and the hub follows that meeting; else None."""
        try:
            nid = uuid.UUID(notice_id)
        except ValueError:
            return None
        row = await tx.conn.fetchrow(
            "SELECT m.message_id::text AS message_id, m.service, m.version, m.sender_agency, m.sender_system,"
            " m.urgency, m.classification_label, m.created, m.received_at, m.conversation_id::text AS conversation_id,"
            " m.ref_to::text AS ref_to, m.business_ref FROM messages m WHERE m.message_id = $1 AND m.service = $2"
            " AND m.sender_system = $3 AND EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.message_id"
            " AND d.recipient_agency = $4)",
            nid,
            NOTICE,
            self.video_system,
            agency,
        )
        if row is None:
            return None
        notice = FedMessage.of_row(row, seq=0)  # not fed: read for its body only
        env = await tx.envelope(notice)
        booking_id = _t(env.body, N_NS, "BookingMessageId") if env.body is not None else None
        try:
            bid = uuid.UUID(booking_id or "")
        except ValueError:
            return None
        return bid if await tx.conn.fetchval("SELECT 1 FROM meetings WHERE booking_id = $1", bid) else None

    # ------------------------------------------------------------------ the platform's refusal

    async def _on_refusal(self, tx: Tx, msg: FedMessage) -> None:
        assert msg.ref_to is not None
        bid = uuid.UUID(msg.ref_to)
        state = await tx.conn.fetchval("SELECT state FROM meetings WHERE booking_id = $1", bid)
        if state != "booked":
            return
        env = await tx.envelope(msg)
        assert env.body is not None
        if _t(env.body, R_NS, "OriginalMessageId") != msg.ref_to:
            return
        code = _t(env.body, R_NS, "Code") or "VC_REFUSED"
        reason = _t(env.body, R_NS, "Reason") or ""
        await tx.conn.execute(
            "UPDATE meetings SET state = 'platform_refused', code = $2, detail = $3, decided_at = $4"
            " WHERE booking_id = $1",
            bid,
            code,
            reason[:2000],
            tx.now,
        )
        await tx.conn.execute("UPDATE meeting_slots SET held = false WHERE booking_id = $1", bid)
        for rnd in ROUNDS:
            await tx.cancel("remind", f"{msg.ref_to}/{rnd}")

    # ------------------------------------------------------------------ reminders

    async def on_timer(self, tx: Tx, timer: Timer) -> None:
        if timer.kind != "remind":
            return
        booking_id, rnd = timer.key.rsplit("/", 1)
        m = await tx.conn.fetchrow(
            "SELECT title, start_at, meeting_number, confirm_by FROM meetings"
            " WHERE booking_id = $1 AND state = 'booked'",
            uuid.UUID(booking_id),
        )
        if m is None or tx.now >= m["start_at"]:
            return
        rows = await tx.conn.fetch(
            "SELECT agency_code, agency_name, system FROM meeting_participants"
            " WHERE booking_id = $1 AND system IS NOT NULL AND confirmed_at IS NULL ORDER BY agency_code",
            uuid.UUID(booking_id),
        )
        if not rows:
            return
        number = m["meeting_number"] or "—"
        by = f"，请于 {cn(m['confirm_by'])} 前" if m["confirm_by"] and m["confirm_by"] > tx.now else "，请尽快"
        await tx.notice(
            [Recipient.to(r["agency_code"], r["system"]) for r in rows],
            kind="meeting-reminder",
            title=f"视频会议参会回执催办：{m['title']}",
            text=(
                f"会议「{m['title']}」（会议号 {number}）将于 {cn(m['start_at'])} 开始，贵单位尚未报送参会回执"
                f"{by}通过视频会议系统报送（meeting.confirm）。The meeting starts at {cn(m['start_at'])} (UTC+8); "
                "your attendance confirmation is still missing."
            ),
            key=f"remind/{booking_id}/{rnd}",
            refers_to=booking_id,
            case_ref=number,
            deadline=m["start_at"],
            outstanding=[(r["agency_code"], r["system"], r["agency_name"], "未回执") for r in rows],
        )
        await tx.conn.execute(
            "UPDATE meeting_participants SET reminders = reminders + 1, last_reminded_at = $3"
            " WHERE booking_id = $1 AND agency_code = ANY($2::text[])",
            uuid.UUID(booking_id),
            [r["agency_code"] for r in rows],
            tx.now,
        )


def make(context: Context, settings: Settings) -> MeetingsProcess:
    return MeetingsProcess()


# ---------------------------------------------------------------------------------------------- status


async def read_status(conn: asyncpg.Connection, ref: str) -> dict[str, Any] | None:
    """A meeting by its booking's message id or its meeting number (the latest booking with that number)."""
    try:
        bid: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        bid = None
    m = await conn.fetchrow(
        "SELECT booking_id::text AS booking_id, booker_agency, booker_system, organizer_name, title, start_at, end_at,"
        " state, code, detail, meeting_number, confirm_by FROM meetings"
        " WHERE booking_id = $1 OR (meeting_number = $2 AND $1::uuid IS NULL) ORDER BY received_at DESC LIMIT 1",
        bid,
        ref,
    )
    if m is None:
        return None
    bid = uuid.UUID(m["booking_id"])
    slots = await conn.fetch("SELECT label, held FROM meeting_slots WHERE booking_id = $1 ORDER BY resource", bid)
    people = await conn.fetch(
        "SELECT agency_code, agency_name, role, system, notified_at, attendance, confirmed_at, reminders"
        " FROM meeting_participants WHERE booking_id = $1 ORDER BY role DESC, agency_code",
        bid,
    )
    return {**dict(m), "slots": [dict(s) for s in slots], "participants": [dict(p) for p in people]}


def render_status(s: dict[str, Any]) -> list[str]:
    """The lines of ``hub meetings status`` (Chinese first)."""
    lines = [
        f"会议 Meeting：{s['title']}",
        f"  预约报文 booking: {s['booking_id']}   会议号 number: {s['meeting_number'] or '—'}",
        f"  时间 time: {span(s['start_at'], s['end_at'])}（北京时间 UTC+8）",
        f"  回执截止 confirm by: {cn(s['confirm_by'])}",
        f"  主办 organizer: {s['organizer_name']}   预约方 booker: {s['booker_system']} ({s['booker_agency']})",
        f"  状态 state: {STATE_ZH.get(s['state'], s['state'])}",
    ]
    if s["state"] != "booked" and s["detail"]:
        lines.append(f"  原因 reason: {s['detail']}")
    held = [x["label"] for x in s["slots"] if x["held"]]
    if held:
        lines.append(f"  占用 holds: {'、'.join(held)}")
    people = s["participants"]
    done = [p for p in people if p["confirmed_at"] is not None]
    lines.append(f"  参会回执 confirmations: {len(done)}/{len(people)} 已回执 confirmed")
    for p in people:
        who = f"{p['agency_name']} ({p['agency_code']}{', ' + p['system'] if p['system'] else ''})"
        role = ROLE_ZH.get(p["role"], p["role"])
        if p["confirmed_at"] is not None:
            what = f"✔ 已回执 {ATTENDANCE_ZH.get(p['attendance'], p['attendance'])} {cn(p['confirmed_at'])}"
        elif p["system"] is None:
            what = "✘ 未收到会议通知 no notice delivered"
        else:
            what = "✘ 未回执 not confirmed"
        if p["reminders"] and p["confirmed_at"] is None:
            what += f"（已催办 {p['reminders']} 次 reminded {p['reminders']}×）"
        lines.append(f"    {role} {who}: {what}")
    return lines


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from hub.store.db import connection

    async def read() -> dict[str, Any] | None:
        async with connection(settings.pg_dsn) as conn:
            return await read_status(conn, args.id)

    s = asyncio.run(read())
    if s is None:
        print(
            f"MEETING_NOT_FOUND 枢纽没有该会议预约的记录 no meeting booked through the hub has id or number {args.id}"
        )
        return 1
    print("\n".join(render_status(s)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("meetings", help="video-conference meetings followed by the hub (视频会议)")
    ps = p.add_subparsers(dest="meetings_command", metavar="ACTION", required=True)
    q = ps.add_parser("status", help="a meeting and who has and has not confirmed attendance (参会回执情况)")
    q.add_argument("id", help="the booking's message id or the meeting number")
    q.set_defaults(handler=cmd_status)
