"""Pure logic of the meetings process (hub/processes/meetings.py): what a booking takes, who must confirm, when the
reminders are due, the refusal's wording and the status lines. The register itself is PostgreSQL's exclusion
constraint: see tests/integration/test_process_meetings.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from lxml import etree

from hub.envelope import parse
from hub.processes.meetings import (
    Booking,
    Conflict,
    Venue,
    must_confirm,
    normalize_room,
    parse_booking,
    refusal_text,
    reminder_plan,
    render_status,
    resources,
)
from hub.settings import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "schemas/services/meeting.booking/1/samples/valid/fire-prevention-conference.xml"
PROVINCE, CHANGCHUN, JILIN, YANBIAN = (
    "11220000013544357T",
    "11220100013544550M",
    "112202000136132524",
    "112224000140973218",
)


def _sample() -> etree._Element:
    return copy.deepcopy(parse(SAMPLE.read_bytes())[1][0])


def test_the_sample_booking_is_read() -> None:
    b = parse_booking(_sample())
    assert b.title == "全省冬春季森林草原防火工作电视电话会议"
    assert b.start == datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    assert b.end - b.start == timedelta(minutes=90)
    assert (b.organizer_name, b.organizer_code) == ("吉林省林业和草原局", PROVINCE)
    assert [(v.role, v.agency_code, v.terminal) for v in b.venues] == [
        ("main", PROVINCE, "043188001"),
        ("branch", CHANGCHUN, "043188101"),
        ("branch", JILIN, None),
        ("branch", YANBIAN, "043388201"),
    ]


def test_a_booking_takes_each_room_of_its_agency_and_each_terminal_once() -> None:
    got = dict(resources(parse_booking(_sample())))
    assert sorted(got) == sorted(
        [
            f"room:{PROVINCE}/省林草局五楼视频会议室",
            "terminal:043188001",
            f"room:{CHANGCHUN}/长春市林业局三楼视频会议室",
            "terminal:043188101",
            f"room:{JILIN}/吉林市林业局视频会议室",
            f"room:{YANBIAN}/延边州林业局二楼会议室",
            "terminal:043388201",
        ]
    )
    assert got["terminal:043188001"] == "视频终端 043188001（吉林省林业和草原局）"
    assert got[f"room:{JILIN}/吉林市林业局视频会议室"] == "会议室「吉林市林业局视频会议室」（吉林市林业局）"
    # The same room listed twice, or the same terminal at two venues, is taken once (a booking cannot clash with itself).
    v = Venue("branch", "某局", CHANGCHUN, "一号会议室", "0431001")
    twice = Booking("t", datetime(2027, 1, 1, tzinfo=UTC), 30, "某局", CHANGCHUN, (v, v))
    assert len(resources(twice)) == 2


def test_room_names_compare_without_width_spaces_or_case() -> None:
    assert (
        normalize_room("二楼 视频会议室")
        == normalize_room("二楼视频会议室")
        == normalize_room(" 二楼\u3000视频会议室 ")
    )
    assert normalize_room("３号会议室") == normalize_room("3号会议室")
    assert normalize_room("Room A") == normalize_room("rooma")
    assert normalize_room("二楼视频会议室") != normalize_room("三楼视频会议室")
    # ... but a room is its agency's: the same name at two agencies is two rooms.
    a = Venue("main", "甲", CHANGCHUN, "视频会议室", None)
    b = Venue("main", "乙", JILIN, "视频会议室", None)
    assert (
        resources(Booking("t", datetime(2027, 1, 1, tzinfo=UTC), 30, "甲", CHANGCHUN, (a,)))[0][0]
        != resources(Booking("t", datetime(2027, 1, 1, tzinfo=UTC), 30, "乙", JILIN, (b,)))[0][0]
    )


def test_every_venue_but_the_booker_and_the_organizer_must_confirm() -> None:
    b = parse_booking(_sample())
    assert [v.agency_code for v in must_confirm(b, PROVINCE)] == [CHANGCHUN, JILIN, YANBIAN]
    # booked by 长春 for the province: neither confirms
    assert [v.agency_code for v in must_confirm(b, CHANGCHUN)] == [JILIN, YANBIAN]


def test_reminder_rounds() -> None:
    start = datetime(2027, 3, 1, 1, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert reminder_plan(start, start - 2 * hour) == [("confirm-by", start - 2 * hour), ("before-start", start - hour)]
    # a deadline at or after the last round is left out (no two reminders at once)
    assert reminder_plan(start, start - hour) == [("before-start", start - hour)]
    assert reminder_plan(start, start - 30 * timedelta(minutes=1)) == [("before-start", start - hour)]
    assert reminder_plan(start, None) == [("before-start", start - hour)]
    assert reminder_plan(start, start - 2 * hour, before=timedelta(minutes=15)) == [
        ("confirm-by", start - 2 * hour),
        ("before-start", start - timedelta(minutes=15)),
    ]


def test_the_refusal_names_the_code_each_taken_resource_and_when() -> None:
    s = datetime(2027, 3, 1, 1, 0, tzinfo=UTC)
    text = refusal_text(
        "防火调度会",
        [
            Conflict("会议室「二楼视频会议室」（珲春市林业局）", s, s + timedelta(minutes=90), "b-1", "珲春市林业局"),
            Conflict("视频终端 043388401（珲春市林业局）", s, s + timedelta(minutes=90), "b-1", "珲春市林业局"),
        ],
    )
    assert text.startswith("MEETING_SLOT_TAKEN 会议「防火调度会」预约未成立：")
    assert (
        "会议室「二楼视频会议室」（珲春市林业局）在 2027-03-01 09:00–10:30 已被珲春市林业局预约的另一会议占用（预约报文 b-1）"
        in text
    )
    assert "视频终端 043388401" in text and "The booking is refused" in text


def test_status_lines_say_who_has_and_has_not_confirmed() -> None:
    s = datetime(2027, 3, 1, 1, 0, tzinfo=UTC)
    status = {
        "booking_id": "b-1",
        "booker_agency": PROVINCE,
        "booker_system": "prov-220000-oa",
        "organizer_name": "吉林省林业和草原局",
        "title": "防火会",
        "start_at": s,
        "end_at": s + timedelta(hours=1),
        "state": "booked",
        "code": None,
        "detail": None,
        "meeting_number": "880266",
        "confirm_by": s - timedelta(hours=2),
        "slots": [{"label": "视频终端 043188001（吉林省林业和草原局）", "held": True}],
        "participants": [
            _p(CHANGCHUN, "长春市林业局", "city-220100-oa", confirmed=s - timedelta(hours=3), attendance="attend"),
            _p(JILIN, "吉林市林业局", "city-220200-oa", reminders=1),
            _p(YANBIAN, "延边州林业局", None),
        ],
    }
    lines = render_status(status)
    text = "\n".join(lines)
    assert lines[0] == "会议 Meeting：防火会"
    assert "会议号 number: 880266" in text and "2027-03-01 09:00–10:00" in text
    assert "回执截止 confirm by: 2027-03-01 07:00" in text
    assert "状态 state: 已预约 booked" in text
    assert "1/3 已回执 confirmed" in text
    assert "长春市林业局 (11220100013544550M, city-220100-oa): ✔ 已回执 参会 attend 2027-03-01 06:00" in text
    assert (
        "吉林市林业局 (112202000136132524, city-220200-oa): ✘ 未回执 not confirmed（已催办 1 次 reminded 1×）" in text
    )
    assert "延边州林业局 (112224000140973218): ✘ 未收到会议通知 no notice delivered" in text
    refused = "\n".join(render_status({**status, "state": "refused", "detail": "MEETING_SLOT_TAKEN …", "slots": []}))
    assert "状态 state: 枢纽已拒绝 refused by the hub" in refused and "原因 reason: MEETING_SLOT_TAKEN …" in refused


def _p(
    code: str,
    name: str,
    system: str | None,
    *,
    confirmed: datetime | None = None,
    attendance: str | None = None,
    reminders: int = 0,
) -> dict[str, object]:
    return {
        "agency_code": code,
        "agency_name": name,
        "role": "branch",
        "system": system,
        "notified_at": None,
        "attendance": attendance,
        "confirmed_at": confirmed,
        "reminders": reminders,
    }
