"""Pure logic of the documents process: durations and the deadlines file, when the reminder goes out, who is late,
the reported time's bounds, and what ``hub documents status`` / ``overdue`` print."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.processes.documents import (
    DEADLINES_FILE,
    Policy,
    PolicyError,
    all_done,
    clamp,
    late_parties,
    load_policy,
    parse_duration,
    remind_time,
    render_overdue,
    render_status,
)
from hub.settings import PROJECT_ROOT

T0 = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 09:00 in Beijing


def row(system: str, state: str, role: str = "to", agency: str = "11220122013550216R") -> dict[str, object]:
    return {
        "recipient_system": system,
        "recipient_agency": agency,
        "role": role,
        "state": state,
        "delivered_at": T0,
        "received_at": T0 + timedelta(hours=1) if state not in ("pending", "delivered") else None,
        "read_at": None,
        "handled_at": T0 + timedelta(hours=3) if state in ("handled", "feedback") else None,
        "feedback_at": None,
    }


def test_durations() -> None:
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration(" 12h ") == timedelta(hours=12)
    assert parse_duration("3d") == timedelta(days=3)
    for bad in ("0d", "3 weeks", "-1d", "", "1.5d", "3D"):
        with pytest.raises(PolicyError):
            parse_duration(bad)


def test_the_shipped_deadlines_file_sets_no_urgency_default() -> None:
    # The bench's 1,800 加急 documents a second must stay unfollowed unless an operator turns a default on.
    policy = load_policy(PROJECT_ROOT / "routes" / DEADLINES_FILE)
    assert policy == Policy({}, timedelta(days=1))


def test_deadlines_file(tmp_path: Path) -> None:
    assert load_policy(tmp_path / "absent.toml") == Policy()
    f = tmp_path / "d.toml"
    f.write_text('[default_feedback]\n"特急" = "1d"\n"加急" = "72h"\n[reminder]\nbefore = "6h"\n', encoding="utf-8")
    assert load_policy(f) == Policy({"特急": timedelta(days=1), "加急": timedelta(hours=72)}, timedelta(hours=6))
    # (also a value of the wrong kind: a string for a table crashed the engine at start with AttributeError; and a
    # file in GBK)
    for text in (
        '[default_feedback]\n"急件" = "1d"\n',
        '[default_feedback]\n"加急" = "soon"\n',
        "[default_feedback\n",
        'default_feedback = "3d"\n',
        'reminder = "1d"\n',
        "[reminder]\nbefore = 3\n",
    ):
        f.write_text(text, encoding="utf-8")
        with pytest.raises(PolicyError):
            load_policy(f)
    f.write_bytes('[reminder]\nbefore = "6h" # 提醒\n'.encode("gbk"))
    with pytest.raises(PolicyError, match="UTF-8"):
        load_policy(f)
    f.write_bytes(b"\xef\xbb\xbf" + b'[reminder]\nbefore = "6h"\n')
    assert load_policy(f) == Policy({}, timedelta(hours=6))


def test_reminder_a_day_before_or_halfway_when_nearer() -> None:
    assert remind_time(T0, T0 + timedelta(days=3), timedelta(days=1)) == T0 + timedelta(days=2)
    assert remind_time(T0, T0 + timedelta(hours=6), timedelta(days=1)) == T0 + timedelta(hours=3)
    assert remind_time(T0, T0 + timedelta(days=1), timedelta(days=1)) == T0 + timedelta(hours=12)


def test_who_is_late_and_when_all_are_done() -> None:
    rows = [row("a", "handled"), row("b", "received"), row("c", "delivered", role="cc"), row("d", "blocked")]
    assert [r["recipient_system"] for r in late_parties(rows)] == ["b", "d"]  # a copy recipient is never late
    assert not all_done(rows)
    assert all_done([row("a", "handled"), row("b", "feedback"), row("c", "delivered", role="cc")])
    assert not all_done([row("c", "received", role="cc")])  # no main addressee: nothing to complete


def test_reported_time_stays_between_delivery_and_the_report() -> None:
    delivered, reported = T0, T0 + timedelta(hours=5)
    assert clamp(T0 - timedelta(days=1), delivered, reported) == delivered  # backdated before it had the document
    assert clamp(T0 + timedelta(days=1), delivered, reported) == reported  # dated after telling the hub
    assert clamp(T0 + timedelta(hours=2), delivered, reported) == T0 + timedelta(hours=2)


def _status(deadline: dict[str, object] | None) -> dict[str, object]:
    return {
        "message_id": "0b8f2d6e-6c1a-4f7e-9a35-2d7c41e8b902",
        "service": "document.official",
        "sender_agency": "11220100013544550M",
        "sender_system": "city-220100-oa",
        "urgency": "加急",
        "created": T0,
        "received_at": T0,
        "business_ref": None,
        "state": "accepted",
        "title": "关于报送森林防火检查情况的通知",
        "number": "长林发〔2026〕15号",
        "due_in_body": None,
        "deadline": deadline,
        "recipients": [
            row("county-220122-oa", "handled"),
            row("county-220182-oa", "received", agency="11220182013552847D"),
            row("county-220183-oa", "delivered", role="cc", agency="11220183013553609R"),
        ],
        "notices": [{"kind": "reminder", "recipient_system": "county-220182-oa", "sent_at": T0, "state_then": "x"}],
    }


def test_status_lines() -> None:
    due = T0 + timedelta(days=2)
    deadline = {"feedback_due": due, "due_source": "document", "completed_at": None, "remind_at": T0}
    names = {"11220122013550216R": "农安县林业局", "11220100013544550M": "长春市林业局"}
    text = "\n".join(render_status(_status(deadline), T0 + timedelta(days=1), names))
    assert text.startswith("公文 Document：关于报送森林防火检查情况的通知")
    assert "发文 from: 长春市林业局（city-220100-oa）" in text
    assert "反馈期限 feedback due: 2026-12-03 09:00（公文标注 from the document）" in text
    assert "已签收 signed for: 2/3；未签收 not signed: county-220183-oa" in text
    assert "主送已办结 handled (to): 1/2；未办结 not handled: county-220182-oa" in text
    assert "农安县林业局（county-220122-oa） | 主送 to | 已办结 handled" in text
    assert "抄送 cc | 已送达未签收 delivered" in text
    late = "\n".join(render_status(_status(deadline), due + timedelta(minutes=1), names))
    assert "✘ 已逾期 overdue since 2026-12-03 09:00" in late
    assert "逾期办结" not in text
    early = {**deadline, "feedback_due": T0 + timedelta(hours=2)}  # 农安 handled at T0 + 3 h: after it
    assert "已办结 handled（逾期办结 late）" in "\n".join(render_status(_status(early), T0, names))
    none = "\n".join(render_status(_status(None), T0, names))
    assert "反馈期限 feedback due: 无 none（不催办 no reminders）" in none


def test_overdue_lines() -> None:
    assert render_overdue([], T0)[0].startswith("没有逾期")
    lines = render_overdue(
        [
            {
                "message_id": "0b8f2d6e-6c1a-4f7e-9a35-2d7c41e8b902",
                "sender_system": "city-220100-oa",
                "title": "通知",
                "document_number": None,
                "feedback_due": T0,
                "late": [row("county-220182-oa", "read")],
            }
        ],
        T0 + timedelta(hours=1),
    )
    assert "✘ 已逾期 overdue 2026-12-01 09:00 通知（无文号）" in lines[1]
    assert lines[2].strip() == "未办结 not handled: county-220182-oa 已阅读 read"
