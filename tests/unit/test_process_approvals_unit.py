"""The approvals process's pure logic: the working-day calendar (the shipped file and the arithmetic: holidays,
adjusted working days, pauses), the state machine, the timer plan, who is supervised, and the supervision body
(valid against approval.supervision's schema)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from hub.directory.load import load_directory
from hub.processes.approvals import (
    ALLOWED,
    AT_RISK_DAYS,
    TERMINAL,
    days_remaining,
    end_of,
    next_state,
    start_of,
    supervision_body,
    supervision_recipients,
    timer_plan,
)
from hub.processes.approvals_calendar import Calendar, CalendarError, calendar_of, load_calendar
from hub.processes.engine import CN_TZ

ROOT = Path(__file__).resolve().parents[2]
CAL_FILE = ROOT / "routes" / "calendar" / "cn-holidays.toml"


@pytest.fixture(scope="module")
def cal() -> Calendar:
    return load_calendar(CAL_FILE)


def d(text: str) -> date:
    return date.fromisoformat(text)


# ------------------------------------------------------------------------------------------- the shipped calendar


def test_the_2026_notice_is_in_the_file(cal: Calendar) -> None:
    # 春节 2月15日（周日）至23日（周一）放假, 2月14日（周六）、2月28日（周六）上班
    assert not any(cal.is_working(d("2026-02-15") + timedelta(days=i)) for i in range(9))
    assert cal.is_working(d("2026-02-14")) and cal.is_working(d("2026-02-28"))
    assert cal.is_working(d("2026-02-24"))  # 正月初八 back at work
    # 国庆 10月1日至7日, 9月20日（周日）、10月10日（周六）上班; 元旦 1月4日（周日）上班; 劳动节 5月9日（周六）上班
    assert not cal.is_working(d("2026-10-07")) and cal.is_working(d("2026-10-08"))
    for worked in ("2026-09-20", "2026-10-10", "2026-01-04", "2026-05-09"):
        assert cal.is_working(d(worked)) and d(worked).weekday() >= 5
    assert not cal.is_working(d("2026-06-19"))  # 端午 (a Friday)
    assert not cal.is_working(d("2026-12-05"))  # an ordinary Saturday
    # 2026 has 248 working days (365 - 104 weekend days - 19 weekday holidays + 6 adjusted working days).
    assert cal.count(d("2025-12-31"), d("2026-12-31")) == 248
    assert cal.years[2026][0] == "official"


def test_2027_is_marked_provisional_and_the_file_is_otherwise_clean(cal: Calendar) -> None:
    assert cal.years[2027][0] == "provisional"
    assert "必须" in CAL_FILE.read_text(encoding="utf-8") and "State Council" in CAL_FILE.read_text(encoding="utf-8")
    assert [p for p in cal.problems() if "2027" not in p] == []
    assert any("2027" in p and "暂定" in p for p in cal.problems())
    # every adjusted working day of the file is a weekend day, every holiday is listed once
    assert all(w.weekday() >= 5 for w in cal.workdays)
    assert not cal.is_working(d("2027-02-06"))  # 春节 (正月初一)
    assert cal.covers(d("2027-06-01")) and not cal.covers(d("2028-01-03"))


def test_a_bad_file_says_what_to_correct(tmp_path: Path) -> None:
    bad = tmp_path / "cal.toml"
    bad.write_text('[2026]\nholidays = ["2026-02-30"]\n', encoding="utf-8")
    with pytest.raises(CalendarError, match="不是日期"):
        load_calendar(bad)
    bad.write_text('[2026]\nholidays = ["2027-01-01"]\n', encoding="utf-8")
    with pytest.raises(CalendarError, match="不属于 2026"):
        load_calendar(bad)
    bad.write_text("[2026\n", encoding="utf-8")
    with pytest.raises(CalendarError, match="TOML"):
        load_calendar(bad)
    with pytest.raises(CalendarError, match="不存在"):
        load_calendar(tmp_path / "missing.toml")
    bad.write_text('[2026]\nholidays = ["2026-03-02"]\nworkdays = ["2026-03-02", "2026-03-03"]\n', encoding="utf-8")
    problems = load_calendar(bad).problems()
    assert any("2026-03-02" in p and "同时" in p for p in problems)
    assert any("2026-03-03" in p and "无需" in p for p in problems)


# ------------------------------------------------------------------------------------------- the arithmetic


def test_the_sample_application_deadline(cal: Calendar) -> None:
    # The application sample: submitted Friday 2026-11-20, 20 working days, StatutoryDeadline 2026-12-18.
    assert cal.add(d("2026-11-20"), 20) == d("2026-12-18")
    assert cal.count(d("2026-11-20"), d("2026-12-18")) == 20


def test_holidays_and_adjusted_working_days_move_the_deadline(cal: Calendar) -> None:
    # From Thursday 2026-02-12: Fri 13, Sat 14 (worked), then the festival (15–23) does not count, Tue 24 …
    assert cal.add(d("2026-02-12"), 2) == d("2026-02-14")
    assert cal.add(d("2026-02-12"), 3) == d("2026-02-24")
    # Over the National Day: from Wed 2026-09-30, the 1st working day is Thu 10-08.
    assert cal.add(d("2026-09-30"), 1) == d("2026-10-08")
    assert cal.add(d("2026-09-30"), 3) == d("2026-10-10")  # Sat 10-10 is worked
    # The start day itself does not count, a 0-day limit ends on it.
    assert cal.add(d("2026-12-07"), 0) == d("2026-12-07")
    assert cal.add(d("2026-12-07"), 1) == d("2026-12-08")


def test_a_pause_stops_the_clock_on_the_days_after_it_began_up_to_its_end() -> None:
    cal = calendar_of(years=[2026])
    start = d("2026-12-04")  # a Friday
    assert cal.add(start, 10) == d("2026-12-18")
    # Suspended on Wed 12-09 (counts), resumed on Mon 12-14: Thu 10, Fri 11, Mon 14 do not count (3 days).
    pauses = [(d("2026-12-09"), d("2026-12-14"))]
    assert cal.add(start, 10, pauses) == d("2026-12-23")
    assert cal.count(start, d("2026-12-23"), pauses) == 10
    # A pause still open: no deadline while it lasts, unless the limit was reached before it began.
    assert cal.add(start, 10, [(d("2026-12-09"), None)]) is None
    assert cal.add(start, 2, [(d("2026-12-09"), None)]) == d("2026-12-08")
    # A pause entirely on a weekend costs nothing; two pauses add up.
    assert cal.add(start, 10, [(d("2026-12-05"), d("2026-12-06"))]) == d("2026-12-18")
    two = [(d("2026-12-07"), d("2026-12-08")), (d("2026-12-15"), d("2026-12-16"))]
    assert cal.add(start, 10, two) == d("2026-12-22")


def test_back_counts_the_deadline_day_as_the_first(cal: Calendar) -> None:
    assert cal.back(d("2026-12-18"), 3) == d("2026-12-16")
    # A deadline on Monday 2026-10-12 after the National Day: Mon 12, Sat 10 (worked), Fri 9.
    assert cal.back(d("2026-10-12"), 3) == d("2026-10-09")
    assert days_remaining(cal, d("2026-12-16"), d("2026-12-18")) == 3
    assert days_remaining(cal, d("2026-12-18"), d("2026-12-18")) == 1
    assert days_remaining(cal, d("2026-12-19"), d("2026-12-18")) == 0


def test_timer_plan(cal: Calendar) -> None:
    plan = dict(timer_plan(cal, d("2026-11-20"), d("2026-12-18")))
    assert plan["at-risk"] == datetime(2026, 12, 16, 0, 0, tzinfo=CN_TZ)
    assert plan["overdue"] == datetime(2026, 12, 19, 0, 0, tzinfo=CN_TZ)
    assert end_of(d("2026-12-18")) == start_of(d("2026-12-19"))
    # A limit shorter than the at-risk window: no at-risk round, only the overdue one.
    assert [
        k for k, _ in timer_plan(cal, d("2026-12-07"), cal.add(d("2026-12-07"), AT_RISK_DAYS) or d("2026-12-07"))
    ] == ["overdue"]


# ------------------------------------------------------------------------------------------- the state machine


def test_the_state_machine() -> None:
    assert next_state("submitted", "accepted") == "accepted"
    assert next_state("submitted", "supplement-required") == "supplement"
    assert next_state("supplement", "accepted") == "accepted"
    assert next_state("accepted", "suspended") == "suspended"
    assert next_state("suspended", "under-review") == "under_review"
    assert next_state("under_review", "under-review") == "under_review"
    # not allowed: back to "accepted" once under review, not-accepted after acceptance, anything after the end
    assert next_state("under_review", "accepted") is None
    assert next_state("accepted", "not-accepted") is None
    assert next_state("suspended", "accepted") is None
    for end in TERMINAL:
        assert next_state(end, "under-review") is None
    assert next_state("submitted", "no-such-status") is None
    assert set(ALLOWED) & TERMINAL == set()


# ------------------------------------------------------------------------------------------- supervision


@pytest.fixture(scope="module")
def directory() -> object:
    return load_directory(ROOT / "routes" / "directory.xml")


def test_who_is_supervised(directory: object) -> None:
    # A city bureau's case: the bureau (to) and the provincial department's OA (cc).
    city = supervision_recipients(directory, "11220100013544550M", "supervise")
    assert [(r.role, r.system) for r in city] == [("to", "city-220100-oa"), ("cc", "prov-220000-oa")]
    # A county bureau's: the county (to), the city (cc); escalated: the province too.
    county = supervision_recipients(directory, "11222403014102856B", "supervise")
    assert [(r.role, r.system) for r in county] == [("to", "county-222403-oa"), ("cc", "city-222400-oa")]
    esc = supervision_recipients(directory, "11222403014102856B", "escalate")
    assert [r.system for r in esc] == ["county-222403-oa", "city-222400-oa", "prov-220000-oa"]
    # The provincial department's own case: its OA; no parent accepts supervision.
    assert [r.system for r in supervision_recipients(directory, "11220000013544357T", "escalate")] == ["prov-220000-oa"]
    assert supervision_recipients(directory, "91220101MA17Q8RN3R", "supervise") == []


def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(ROOT / "schemas/services/approval.supervision/1/schema.xsd")))


@pytest.mark.parametrize("level", ["reminder", "supervise", "escalate"])
def test_the_supervision_body_is_valid(level: str) -> None:
    body = supervision_body(
        case_number="LCXK-220100-2026-000318",
        item_name="林木采伐许可证核发",
        level=level,
        deadline=d("2026-12-18"),
        today=d("2026-12-22") if level != "reminder" else d("2026-12-16"),
        left=3,
        responsible_name="长春市林业局",
        responsible_code="11220100013544550M",
        handler="陈晓燕",
        reply_by=datetime(2026, 12, 24, 17, 0, tzinfo=CN_TZ),
    )
    schema = _schema()
    assert schema.validate(body), schema.error_log
    text = body.findtext("{*}Requirement") or ""
    if level == "reminder":
        assert body.findtext("{*}DaysRemaining") == "3" and "仅剩3个工作日" in text
    else:
        assert body.findtext("{*}DaysOverdue") == "4" and "4天" in text and "2026年12月24日17:00" in text


def test_a_calendar_file_that_cannot_be_used_does_not_stop_the_engine(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from hub.processes.approvals import make

    (tmp_path / "calendar").mkdir()
    (tmp_path / "calendar" / "cn-holidays.toml").write_text('[2026]\nholidays = ["2026-13-01"]\n', encoding="utf-8")
    proc = make(None, SimpleNamespace(routes_dir=tmp_path))  # type: ignore[arg-type]
    assert proc.calendar_problem is not None and "2026-13-01" in proc.calendar_problem
    assert proc.calendar.add(d("2026-09-30"), 1) == d("2026-10-01")  # weekdays only: the National Day counts
    good = make(None, SimpleNamespace(routes_dir=ROOT / "routes"))  # type: ignore[arg-type]
    assert good.calendar_problem is None and good.calendar.add(d("2026-09-30"), 1) == d("2026-10-08")


def test_the_status_lines_add_up(cal: Calendar) -> None:
    from hub.processes.approvals import render_figures, render_status

    case = {
        "case_number": "LCXK-220100-2026-100001",
        "item_name": "林木采伐许可证核发",
        "item_code": "000131001000",
        "accepting_name": "长春市林业局",
        "accepting_agency": "11220100013544550M",
        "applicant_name": "长春净月潭林业有限公司",
        "portal_system": "prov-220000-portal",
        "approval_system": "prov-220000-approval",
        "submitted_at": datetime(2026, 12, 7, 9, tzinfo=CN_TZ),
        "state": "under_review",
        "limit_days": 10,
        "deadline": d("2026-12-24"),
        "declared_deadline": d("2026-12-21"),
        "reported_deadline": None,
        "promised_deadline": None,
        "start_date": d("2026-12-07"),
        "late": None,
        "decided_on": None,
        "decision_number": None,
        "working_days": None,
    }
    s = {
        "case": case,
        "pauses": [{"since": d("2026-12-09"), "until": d("2026-12-14"), "reason": "suspended"}],
        "events": [],
        "supervisions": [],
    }
    lines = render_status(s, cal, datetime(2026, 12, 22, 10, tzinfo=CN_TZ))
    # 10 working days = 7 used before today (Dec 8, 9, 15–18, 21) + 3 left (22, 23, 24); 3 stopped (10, 11, 14)
    assert any("已用 used: 7 个工作日" in x and "剩余 left: 3 个工作日" in x and "临期" in x for x in lines), lines
    assert any("计时中止 stopped: 3 个工作日" in x for x in lines), lines
    late = render_status(s, cal, datetime(2026, 12, 28, 10, tzinfo=CN_TZ))
    assert any("✘ 已超期 overdue: 4 天" in x for x in late), late
    assert any("督办 supervision: 无 none" in x for x in late)
    figures = render_figures(
        [
            {
                "item_code": "000131001000",
                "item_name": "林木采伐许可证核发",
                "cases": 3,
                "decided": 2,
                "open": 1,
                "paused": 0,
                "overdue": 1,
                "median_days": 7.5,
                "overdue_rate": 1 / 3,
            }
        ],
        d("2026-12-28"),
    )
    assert figures[2] == "  000131001000 | 林木采伐许可证核发 | 3 | 2 | 1 | 0 | 7.5 | 1 | 33.3%"


def test_the_at_risk_rule_counts_working_days_from_the_start(cal: Calendar) -> None:
    # A limit of AT_RISK_DAYS is at risk from its first working day: no reminder round, whatever the weekday it was
    # submitted on (Friday 12-04: the first working day is Monday 12-07, three calendar days later).
    for start in (d("2026-12-04"), d("2026-12-05"), d("2026-12-07")):
        deadline = cal.add(start, AT_RISK_DAYS)
        assert deadline is not None
        assert [k for k, _ in timer_plan(cal, start, deadline)] == ["overdue"], start
    # One working day more: reminded on the second working day (Friday 12-04 → Tuesday 12-08).
    plan = dict(timer_plan(cal, d("2026-12-04"), cal.add(d("2026-12-04"), AT_RISK_DAYS + 1) or d("2026-12-04")))
    assert plan["at-risk"] == start_of(d("2026-12-08"))


def test_a_case_paused_after_its_deadline_is_shown_overdue(cal: Calendar) -> None:
    from hub.processes.approvals import render_status

    case = {
        "case_number": "LCXK-220100-2026-100002",
        "item_name": "林木采伐许可证核发",
        "item_code": "000131001000",
        "accepting_name": "长春市林业局",
        "accepting_agency": "11220100013544550M",
        "applicant_name": "长春净月潭林业有限公司",
        "portal_system": "prov-220000-portal",
        "approval_system": "prov-220000-approval",
        "submitted_at": datetime(2026, 12, 7, 9, tzinfo=CN_TZ),
        "state": "suspended",
        "limit_days": 3,
        "deadline": None,  # no deadline while the clock is stopped
        "declared_deadline": d("2026-12-10"),
        "reported_deadline": None,
        "promised_deadline": None,
        "start_date": d("2026-12-07"),
        "late": None,
        "decided_on": None,
        "decision_number": None,
        "working_days": None,
    }
    after = {"since": d("2026-12-11"), "until": None, "reason": "suspended"}
    s = {"case": case, "pauses": [after], "events": [], "supervisions": []}
    lines = render_status(s, cal, datetime(2026, 12, 14, 10, tzinfo=CN_TZ))
    # deadline Thursday 12-10, suspended Friday 12-11: overdue since, although the clock is stopped
    assert any("2026-12-10（计时中止前已到期" in x for x in lines), lines
    assert any("✘ 已超期 overdue: 4 天 days（计时中止中 clock stopped）" in x for x in lines), lines
    # Suspended before its deadline: no deadline, not overdue.
    s["pauses"] = [{"since": d("2026-12-09"), "until": None, "reason": "suspended"}]
    lines = render_status(s, cal, datetime(2026, 12, 14, 10, tzinfo=CN_TZ))
    assert any("计时中止，待恢复后重算 clock stopped" in x for x in lines), lines
    assert not any("已超期" in x for x in lines), lines
