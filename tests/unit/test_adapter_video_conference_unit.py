"""The video-conference adapter's pure parts: the mapping to and from the platform's API, the settings, and the
simulated platform's contract (over loopback HTTP, no hub)."""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.sdk import ConfigurationError
from adapters.sdk.messages import MeetingBookingV1
from adapters.video_conference import mapping as m
from adapters.video_conference.adapter import Config
from adapters.video_conference.demo import BOOKER_AGENCY, BRANCHES, CST, booking, confirm
from adapters.video_conference.simulator import VideoPlatform

START = datetime(2027, 3, 2, 9, 0, tzinfo=CST)
ANSWER: dict[str, Any] = {
    "meeting_number": "880266",
    "dial_in": [{"protocol": "sip", "address": "sip:880266@vc.lyj.jl.gov.cn"}],
}
SAMPLE = Path(__file__).parents[2] / "schemas/services/meeting.booking/1/samples/valid/fire-prevention-conference.xml"


def _xml_roundtrip(msg: Any) -> Any:
    return type(msg).from_element(msg.to_element())


def test_booking_request_carries_every_field() -> None:
    req = m.booking_request(booking("视频会", START, notes="双流"))
    assert req["title"] == "视频会" and req["start"] == "2027-03-02T09:00:00+08:00"
    assert req["duration_minutes"] == 60 and req["recording"] is False and req["notes"] == "双流"
    assert req["organizer"] == {"name": BOOKER_AGENCY[0], "agency_code": BOOKER_AGENCY[1]}
    assert [v["role"] for v in req["venues"]] == ["main", "branch", "branch"]
    assert req["venues"][0]["terminal_number"] == "043388401" and "terminal_number" not in req["venues"][1]


def test_the_schema_sample_maps() -> None:
    from lxml import etree

    body = etree.parse(str(SAMPLE)).find(".//{urn:forestry-hub:meeting.booking:1}MeetingBooking")
    msg = MeetingBookingV1.from_element(body)
    assert len(m.booking_request(msg)["venues"]) == 4
    assert m.participants(msg, "11220000013544357T") == [
        "11220100013544550M",
        "112202000136132524",
        "112224000140973218",
    ]


def test_participants_are_the_other_venues_once() -> None:
    msg = booking("会", START)
    assert m.participants(msg, BOOKER_AGENCY[1]) == [code for _, code in BRANCHES.values()]
    assert m.participants(msg, "112224000140973218") == [BOOKER_AGENCY[1], "11222403014102856B"]


def test_notice_ids_are_deterministic() -> None:
    a = m.notice_id("0b6e1c2a-3f55-4f55-9f3c-2b8e2f4d0a11", "11222403014102856B")
    assert a == m.notice_id("0b6e1c2a-3f55-4f55-9f3c-2b8e2f4d0a11", "11222403014102856B")
    assert a != m.notice_id("0b6e1c2a-3f55-4f55-9f3c-2b8e2f4d0a11", "112224000140973218")


def test_notice_from_the_platform_answer_is_schema_valid() -> None:
    msg = booking("延边州防火视频调度会", START, minutes=90, notes="请提前30分钟调试设备")
    notice = m.notice(ANSWER, msg, "0b6e1c2a-3f55-4f55-9f3c-2b8e2f4d0a11")
    back = _xml_roundtrip(notice)
    assert back.meeting_number == "880266" and back.booking_message_id == "0b6e1c2a-3f55-4f55-9f3c-2b8e2f4d0a11"
    assert back.start == START and back.duration_minutes == 90 and back.requirements == "请提前30分钟调试设备"
    assert back.host.agency_code == BOOKER_AGENCY[1] and len(back.venues.venue) == 3
    assert back.participants.startswith("主会场：珲春市林业局；分会场：")
    assert back.confirm_by <= START


@pytest.mark.parametrize(
    "answer",
    [
        None,
        [],
        {},
        {"meeting_number": "88A266", "dial_in": ANSWER["dial_in"]},
        {"meeting_number": "880266", "dial_in": []},
        {"meeting_number": "880266", "dial_in": [{"protocol": "webrtc", "address": "x@y"}]},
        {"meeting_number": "880266", "dial_in": [{"protocol": "sip", "address": "sip:8 80@vc"}]},
        {"meeting_number": "880266", "dial_in": ANSWER["dial_in"] * 6},
    ],
)
def test_an_answer_outside_the_contract_is_refused_before_anything_is_built(answer: Any) -> None:
    with pytest.raises(m.BadPlatformAnswer):
        m.notice(answer, booking("会", START), "0b6e1c2a-3f55-4f55-9f3c-2b8e2f4d0a11")


def test_refusals_keep_the_platform_code_and_chinese_reason() -> None:
    code, reason = m.refusal(
        409, {"code": "VC_SLOT_TAKEN", "title": "会场已被占用", "reason": "终端 043388401 已被占用"}
    )
    assert code == "VC_SLOT_TAKEN" and reason.startswith("视频会议系统拒绝：会场已被占用") and "043388401" in reason
    assert m.refusal(418, "teapot")[0] == "VC_REFUSED"
    assert m.refusal(400, {"code": "lower"})[0] == "VC_REFUSED"
    assert len(m.refusal(409, {"code": "VC_X", "title": "t", "reason": "长" * 5000})[1]) <= 1000


def test_attendance_request() -> None:
    msg = confirm("880266", "0b6e1c2a-3f55-4f55-9f3c-2b8e2f4d0a11", BRANCHES["county-222403-oa"])
    req = m.attendance_request(_xml_roundtrip(msg))
    assert req["agency_code"] == "11222403014102856B" and req["attendance"] == "attend"
    assert req["notice_message_id"] == "0b6e1c2a-3f55-4f55-9f3c-2b8e2f4d0a11"
    assert req["attendees"] == [{"name": "朴成浩", "position": "副局长"}]


def test_settings_are_checked_with_a_clear_code(tmp_path: Path) -> None:
    c = Config.from_extra({"platform_url": "https://vc.example/", "token": "t", "max_retry_delay": 30})
    assert c.platform_url == "https://vc.example" and c.max_retry_delay == 30.0
    token = tmp_path / "token"
    token.write_text("secret\n")
    assert Config.from_extra({"platform_url": "http://127.0.0.1:1", "token_file": str(token)}).token == "secret"
    for bad in (
        {},
        {"platform_url": "ftp://x", "token": "t"},
        {"platform_url": "https://x"},
        {"platform_url": "https://x", "token_file": str(tmp_path / "missing")},
        {"platform_url": "https://x", "token": "t", "request_timeout": "soon"},
        {"platform_url": "https://x", "token": "t", "retry_initial": 0},
        {"platform_url": "https://x", "token": "t", "retry_initial": float("nan")},  # TOML has nan and inf
        {"platform_url": "https://x", "token": "t", "request_timeout": float("inf")},
        {"platform_url": "https://x", "token": "t", "ca_file": str(tmp_path / "nope.pem")},
    ):
        with pytest.raises(ConfigurationError) as e:
            Config.from_extra(bad)
        assert e.value.code == "VC_CONFIG"


def test_the_example_settings_load() -> None:
    data = tomllib.loads((Path(__file__).parents[2] / "adapters/video_conference/settings.example.toml").read_text())
    assert data["system"] == "prov-220000-video" and data["retry_limit"] >= 10000
    extra = {k: v for k, v in data["adapter"].items() if k != "token_file"}
    assert Config.from_extra({**extra, "token": "t"}).platform_url.startswith("https://")


# ---------------------------------------------------------------------------------------------- the simulator


def _body(title: str, start: datetime, room: str = "二楼会议室", terminal: str | None = None) -> dict[str, Any]:
    v: dict[str, Any] = {
        "role": "main",
        "agency_name": "珲春市林业局",
        "agency_code": "112224040141039416",
        "room": room,
    }
    if terminal:
        v["terminal_number"] = terminal
    return {"title": title, "start": start.isoformat(), "duration_minutes": 60, "venues": [v]}


async def test_the_simulated_platform_follows_the_contract() -> None:
    p = await VideoPlatform().start()
    auth = {"Authorization": f"Bearer {p.token}"}
    try:
        async with aiohttp.ClientSession(base_url=p.url) as s:

            async def post(path: str, body: Any, key: str, headers: dict[str, str] = auth) -> tuple[int, Any, str]:
                async with s.post(path, json=body, headers={**headers, "Idempotency-Key": key}) as r:
                    return r.status, await r.json(), r.headers.get("Idempotent-Replayed", "")

            assert (await post("/api/v1/meetings", _body("会", START), "k0", {}))[0] == 401
            st, first, _ = await post("/api/v1/meetings", _body("会一", START, terminal="043388401"), "k1")
            assert st == 201 and first["status"] == "booked" and first["dial_in"]
            st, again, replayed = await post("/api/v1/meetings", _body("会一", START, terminal="043388401"), "k1")
            assert (st, again, replayed) == (201, first, "true") and p.replays == 1 and len(p.meetings) == 1
            # the same terminal in another room, overlapping: refused; back to back: fine
            st, err, _ = await post(
                "/api/v1/meetings", _body("会二", START + timedelta(minutes=59), "三楼", "043388401"), "k2"
            )
            assert st == 409 and err["code"] == "VC_SLOT_TAKEN" and err["conflicts"][0]["meeting_number"]
            assert "终端 043388401" in err["reason"]
            st, _, _ = await post("/api/v1/meetings", _body("会三", START + timedelta(minutes=60), "二楼会议室"), "k3")
            assert st == 201
            st, err, _ = await post("/api/v1/meetings", _body("长" * 101, START + timedelta(days=1)), "k4")
            assert (st, err["code"], err["field"]) == (422, "VC_FIELD_TOO_LONG", "title")
            number = first["meeting_number"]
            async with s.get(f"/api/v1/meetings/{number}", headers=auth) as r:
                assert r.status == 200 and (await r.json())["title"] == "会一"
            async with s.get("/api/v1/terminals", headers=auth) as r:
                assert any(x["resource"] == "terminal:043388401" for x in (await r.json())["resources"])
            # change into a taken slot: refused; cancel frees the slot
            async with s.patch(
                f"/api/v1/meetings/{number}",
                json={"start": (START + timedelta(minutes=60)).isoformat()},
                headers={**auth, "Idempotency-Key": "k5"},
            ) as r:
                assert r.status == 409
            async with s.delete(f"/api/v1/meetings/{number}", headers={**auth, "Idempotency-Key": "k6"}) as r:
                assert r.status == 200 and (await r.json())["status"] == "cancelled"
            st, _, _ = await post(
                "/api/v1/meetings", _body("会二", START + timedelta(minutes=30), "三楼", "043388401"), "k7"
            )
            assert st == 201
            st, _, _ = await post(
                f"/api/v1/meetings/{number}/attendance", {"agency_code": "x", "attendance": "attend"}, "k8"
            )
            assert st == 404
            async with s.post("/api/v1/meetings", data=b"{not json", headers={**auth, "Idempotency-Key": "k9"}) as r:
                assert r.status == 400 and (await r.json())["code"] == "VC_BAD_JSON"
            async with s.post("/api/v1/meetings", json={}, headers=auth) as r:
                assert r.status == 400 and (await r.json())["code"] == "VC_NO_IDEMPOTENCY_KEY"
        # down and up again on the same port
        await p.take_down()
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientConnectionError):
                await s.get(p.url + "/api/v1/health")
        await p.bring_up()
        async with aiohttp.ClientSession() as s, s.get(p.url + "/api/v1/health") as r:
            assert r.status == 200
    finally:
        await p.stop()
