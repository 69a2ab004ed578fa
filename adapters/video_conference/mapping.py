"""Pure mapping between the hub's meeting messages and the video-conference platform's REST API (README.md).

No I/O here: the adapter calls these with what it received and what the platform answered.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from adapters.sdk.messages import MeetingBookingV1, MeetingConfirmV1, MeetingNoticeV1
from adapters.sdk.messages import meeting_notice_v1 as n

#: Namespace of the message ids this adapter makes (a participant's notice is uuid5(NOTICE_NS, booking id:agency)).
NOTICE_NS = uuid.UUID("6f0c2a4e-6d1b-5a52-9e3b-7c1de0a8b220")
_MEETING_NUMBER = re.compile(r"^[0-9]{6,12}$")
_ADDRESS = re.compile(r"^[0-9A-Za-z.@:_+\-]{3,200}$")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")


class BadPlatformAnswer(ValueError):
    """The platform answered something that is not what the contract says (not JSON, a field missing or out of
    the schema's range). Nothing is sent on it; the delivery is retried (the key makes the retry safe)."""


def booking_request(msg: MeetingBookingV1) -> dict[str, Any]:
    """The JSON body of ``POST /api/v1/meetings`` for a meeting.booking."""
    return {
        "title": msg.title,
        "start": msg.start.isoformat(),
        "duration_minutes": msg.duration_minutes,
        "organizer": {"name": msg.organizer.name, "agency_code": msg.organizer.agency_code},
        "venues": [
            {
                "role": v.role,
                "agency_name": v.agency_name,
                "agency_code": v.agency_code,
                "room": v.room,
                **({"terminal_number": v.terminal_number} if v.terminal_number else {}),
            }
            for v in msg.venues.venue
        ],
        "recording": msg.recording,
        "contact": {"name": msg.contact.name, "phone": msg.contact.phone},
        **({"notes": msg.notes} if msg.notes else {}),
    }


def participants(msg: MeetingBookingV1, booker_agency: str) -> list[str]:
    """The agencies that get a meeting.notice beside the booker (who gets it as the reply): every venue's agency,
    once, in the booking's order."""
    seen: list[str] = []
    for v in msg.venues.venue:
        if v.agency_code != booker_agency and v.agency_code not in seen:
            seen.append(v.agency_code)
    return seen


def notice_id(booking_message_id: str, agency: str) -> str:
    """The message id of the notice to ``agency`` for a booking: the same after any crash (a hub duplicate)."""
    return str(uuid.uuid5(NOTICE_NS, f"meeting.notice:{booking_message_id}:{agency}"))


def notice(answer: Any, msg: MeetingBookingV1, booking_message_id: str) -> MeetingNoticeV1:
    """The meeting.notice for a booking the platform confirmed (its 201/200 answer). ``BadPlatformAnswer`` when the
    answer is not what the contract says."""
    if not isinstance(answer, dict):
        raise BadPlatformAnswer("the platform's answer is not a JSON object")
    number = str(answer.get("meeting_number", ""))
    if not _MEETING_NUMBER.match(number):
        raise BadPlatformAnswer("meeting_number is missing or not 6–12 digits")
    access = []
    for a in answer.get("dial_in") or []:
        if not isinstance(a, dict) or a.get("protocol") not in ("sip", "h323", "pstn"):
            raise BadPlatformAnswer("a dial_in entry has no protocol sip/h323/pstn")
        address = str(a.get("address", ""))
        if not _ADDRESS.match(address):
            raise BadPlatformAnswer("a dial_in address is not 3–200 of letters, digits and .@:_+-")
        access.append(n.Access(protocol=a["protocol"], address=address))
    if not access or len(access) > 5:
        raise BadPlatformAnswer("dial_in must hold 1–5 entries")
    start: datetime = msg.start
    confirm_by = max(start - timedelta(hours=2), min(start, datetime.now(start.tzinfo)))
    main = [v.agency_name for v in msg.venues.venue if v.role == "main"]
    branch = [v.agency_name for v in msg.venues.venue if v.role != "main"]
    who = f"主会场：{'、'.join(main) or msg.organizer.name}"
    if branch:
        who += f"；分会场：{'、'.join(dict.fromkeys(branch))}"
    return MeetingNoticeV1(
        meeting_number=number,
        booking_message_id=booking_message_id,
        title=msg.title,
        start=start,
        duration_minutes=msg.duration_minutes,
        host=n.AgencyRef(name=msg.organizer.name, agency_code=msg.organizer.agency_code),
        venues=n.Venues(
            venue=[
                n.Venue(
                    role=v.role,
                    agency_name=v.agency_name,
                    agency_code=v.agency_code,
                    room=v.room,
                    terminal_number=v.terminal_number,
                )
                for v in msg.venues.venue
            ]
        ),
        dial_in=n.DialIn(access=access),
        participants=_clip(who + "（各会场参会人员由本单位确定）", 2000),
        requirements=_clip(msg.notes, 2000) if msg.notes else None,
        confirm_by=confirm_by,
        contact=n.Contact(name=msg.contact.name, phone=msg.contact.phone),
    )


def refusal(status: int, answer: Any) -> tuple[str, str]:
    """(code, reason) for ``Reject`` from the platform's 4xx answer: its own code and its Chinese title and reason
    (the booker reads them), or a generic VC_REFUSED with the HTTP status when the body is not the contract's."""
    if isinstance(answer, dict) and isinstance(answer.get("code"), str) and _CODE.match(answer["code"]):
        title = str(answer.get("title") or "视频会议系统拒绝了预约")
        reason = str(answer.get("reason") or "")
        return answer["code"], _clip(f"视频会议系统拒绝：{title}。{reason}".rstrip("。"), 1000)
    return "VC_REFUSED", f"视频会议系统拒绝了请求（HTTP {status}） — the platform refused the request (HTTP {status})"


def attendance_request(msg: MeetingConfirmV1) -> dict[str, Any]:
    """The JSON body of ``POST /api/v1/meetings/{number}/attendance`` for a meeting.confirm (参会回执)."""
    body: dict[str, Any] = {
        "agency_code": msg.agency.agency_code,
        "agency_name": msg.agency.name,
        "attendance": msg.attendance,
        "notice_message_id": msg.notice_message_id,
        "contact": {"name": msg.contact.name, "phone": msg.contact.phone},
        "confirmed_at": msg.confirmed_at.isoformat(),
    }
    if msg.attendees is not None:
        body["attendees"] = [{"name": a.name, "position": a.position} for a in msg.attendees.attendee]
    for key in ("room", "terminal_number", "reason"):
        value = getattr(msg, key)
        if value:
            body[key] = value
    return body


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
