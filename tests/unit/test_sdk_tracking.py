"""The pure parts of the SDK's document tracking (adapters/sdk/_tracking.py): the gateway's JSON read into typed
values, what it refuses to read, and the limits it shares with the gateway. Against a real gateway:
tests/integration/test_sdk_gateway.py (test_document_tracking_*)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from adapters.sdk import NOT_SIGNED_FOR, SdkError
from adapters.sdk._tracking import MAX_PAGE, MAX_SERVICES, MAX_WINDOW_DAYS, _sent, _services, _states
from hub.gateway.openapi import MAX_SENT_PAGE, MAX_SENT_SERVICES, MAX_SENT_WINDOW_DAYS
from hub.store.records import DELIVERY_RANK, DELIVERY_STATE_ZH, DELIVERY_STATES, MESSAGE_STATE_ZH, MESSAGE_STATES


def _message(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "message_id": "6f1c1b7e-2f7a-4f7e-9c1e-3b1b2f0c9a01",
        "service": "document.official/1",
        "urgency": "特急",
        "classification": "公开",
        "state": "accepted",
        "error_code": None,
        "received_at": "2026-12-06T08:00:00.250000+00:00",
        "deliveries": [
            {
                "recipient_system": "city-220100-oa",
                "recipient_agency": "11220100013544550M",
                "role": "to",
                "state": "handled",
                "error_code": None,
                "times": {"delivered": "2026-12-06T08:00:01+00:00", "handled": "2026-12-06T09:30:00+08:00"},
            },
            {
                "recipient_system": "county-220122-oa",
                "recipient_agency": "11220122013550216R",
                "role": "cc",
                "state": "delivered",
                "error_code": None,
                "times": {"delivered": "2026-12-06T08:00:01+00:00"},
            },
            {
                "recipient_system": "prov-220000-secure",
                "recipient_agency": "11220000013544357T",
                "role": "cc",
                "state": "blocked",
                "error_code": "GATE_ZONE",
                "times": {},
            },
        ],
        "receipts": [
            {
                "receipt_id": "0b7d2e1a-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
                "kind": "hub.receipt",
                "recipient_system": None,
                "code": None,
                "at": "2026-12-06T08:00:00.400000+00:00",
            }
        ],
    }
    item.update(changes)
    return item


def test_a_sent_message_is_read_into_typed_values() -> None:
    m = _sent(_message(), answers=True)
    assert m.received_at == dt.datetime(2026, 12, 6, 8, 0, 0, 250000, tzinfo=dt.UTC)
    handled, waiting, blocked = m.deliveries
    assert handled.signed_for and handled.label == "已办结 handled"
    assert handled.times["handled"] == dt.datetime(2026, 12, 6, 1, 30, tzinfo=dt.UTC)  # +08:00 kept as an instant
    assert not waiting.signed_for and waiting.label == "已送达未签收 delivered"
    assert not blocked.signed_for and blocked.error_code == "GATE_ZONE"
    # blocked by the gate: nobody is waiting for it, so it is not among the copies not yet signed for
    assert m.not_signed_for == (waiting,)
    assert m.answers is not None and m.answers[0].system is None and m.answers[0].kind == "hub.receipt"
    assert _sent(_message(), answers=False).answers is None  # the list does not carry the answers


@pytest.mark.parametrize(
    "broken",
    [
        {"received_at": "yesterday"},
        {"received_at": "2026-12-06T08:00:00"},  # no offset
        {"deliveries": [{"recipient_system": "x"}]},
        {"deliveries": None},
        {"message_id": None, "deliveries": [{"times": []}]},
    ],
)
def test_an_answer_that_is_not_what_the_gateway_documents_is_a_clear_error(broken: dict[str, Any]) -> None:
    with pytest.raises(SdkError) as caught:
        _sent(_message(**broken), answers=True)
    assert caught.value.code == "SDK_GATEWAY_ANSWER" and "gateway" in caught.value.detail


def test_delivery_states_are_checked_before_anything_is_read() -> None:
    assert _states(NOT_SIGNED_FOR) == ["pending", "failed", "delivered"]
    assert _states("received, read") == ["received", "read"]
    assert _states(None) == []
    for bad in (["signed"], [], "pending,,nope"):
        with pytest.raises(ValueError, match="delivery lists states among"):
            _states(bad)


def test_service_names_are_checked_before_anything_is_read() -> None:
    from hub.settings import PROJECT_ROOT

    assert _services(None) == []
    assert _services("document.official, info.report") == ["document.official", "info.report"]
    for name in (p.name for p in (PROJECT_ROOT / "schemas" / "services").iterdir()):
        assert _services([name]) == [name]  # every service of the hub is a name the SDK passes on
    for bad in ([], ["document.official/1"], ["Document.Official"], ["x"], ["document.official"] * 17):
        with pytest.raises(ValueError, match="service lists 1 to 16"):
            _services(bad)


def test_the_sdk_and_the_gateway_share_their_limits_and_labels() -> None:
    assert (MAX_PAGE, MAX_WINDOW_DAYS, MAX_SERVICES) == (MAX_SENT_PAGE, MAX_SENT_WINDOW_DAYS, MAX_SENT_SERVICES)
    assert set(DELIVERY_STATE_ZH) == set(DELIVERY_STATES) == set(DELIVERY_RANK)
    assert set(MESSAGE_STATE_ZH) == set(MESSAGE_STATES)
    assert set(NOT_SIGNED_FOR) <= set(DELIVERY_STATES)


async def test_a_long_window_is_asked_for_in_contiguous_parts_each_a_page_at_a_time() -> None:
    """What ``sent_messages`` asks the gateway (its answers played here; the real gateway refuses a part over 31
    days, which tests/integration/test_sdk_gateway.py shows): parts of at most 30 days that meet end to end, each
    followed through its ``next``; without ``until`` the last part is left open for the gateway's clock to end."""
    from adapters.sdk._tracking import Tracking

    asked: list[dict[str, str]] = []

    async def answer(path: str, params: dict[str, str] | None, what: str) -> dict[str, Any]:
        assert path == "/v1/messages" and params is not None
        asked.append(dict(params))
        first_page = "after" not in params
        return {"messages": [_message()] if first_page else [], "next": "cursor-1" if first_page else None}

    tracking = Tracking(None, "https://gw:8443")  # type: ignore[arg-type]
    tracking._get = answer  # type: ignore[method-assign]
    until = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    since = until - dt.timedelta(days=65)
    got = [
        m
        async for m in tracking.sent_messages(
            since=since, until=until, delivery=NOT_SIGNED_FOR, service=["document.official"], page=7
        )
    ]
    assert len(got) == 3  # one message on the first page of each part
    parts = [(p["since"], p.get("until")) for p in asked if "after" not in p]
    assert parts == [
        ("2026-10-02T00:00:00Z", "2026-11-01T00:00:00Z"),
        ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
        ("2026-12-01T00:00:00Z", "2026-12-06T00:00:00Z"),
    ]
    assert [p.get("after") for p in asked] == [None, "cursor-1"] * 3
    assert all(p["limit"] == "7" and p["delivery"] == "pending,failed,delivered" for p in asked)
    assert all(p["service"] == "document.official" for p in asked)

    asked.clear()
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    assert len([m async for m in tracking.sent_messages(since=recent)]) == 1
    assert [("until" in p) for p in asked] == [False, False]  # open: the gateway's now ends it
    assert asked[0]["since"].endswith("Z") and "+" not in asked[0]["since"]


def test_without_until_the_open_last_part_starts_a_day_before_now() -> None:
    """A gateway whose clock is behind the client's refuses an open part that starts after its own now: a window of
    30 days without ``until`` once left an open part a few microseconds long (HubRefused midway through the list)."""
    from adapters.sdk._tracking import _OPEN_TAIL, _PART, _parts

    now = dt.datetime(2026, 12, 7, 8, 0, tzinfo=dt.UTC)
    for days in (30.00001, 31, 59, 60, 61, 90):  # 30 days and a second: the case that failed
        since = now - dt.timedelta(days=days)
        parts = list(_parts(since, now, open_end=True))
        assert parts[0][0] == since and parts[-1] == (now - _OPEN_TAIL, None), days
        assert all(a[1] == b[0] for a, b in itertools.pairwise(parts)), "contiguous"
        assert all(stop is not None and stop - start <= _PART for start, stop in parts[:-1])
    for short in (now - dt.timedelta(hours=3), now - _PART):  # within one part: open from since
        assert list(_parts(short, now, open_end=True)) == [(short, None)]
    bounded = list(_parts(now - dt.timedelta(days=61), now, open_end=False))
    assert bounded[-1][1] == now and len(bounded) == 3


@pytest.mark.parametrize(
    ("status", "kind", "final"),
    [
        (200, "application/json", True),
        (400, "application/json", True),
        (404, "application/json", True),
        (500, "application/json", True),  # the gateway's own INTERNAL: a fault that asking again meets again
        (500, "text/html", False),  # something between (a reverse proxy) failed: asked again
        (429, "application/json", False),
        (503, "application/json", False),
        (502, "text/html", False),
    ],
)
def test_which_answers_to_a_read_are_asked_again(status: int, kind: str, final: bool) -> None:
    from adapters.sdk._tracking import _read_settled

    assert _read_settled(status, kind) is final


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (None, dt.datetime(1, 1, 1, 12, tzinfo=dt.UTC)),
        (dt.datetime(1, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))), None),
        (None, dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC)),
    ],
)
def test_a_window_outside_the_years_2_to_9998_is_a_value_error(
    since: dt.datetime | None, until: dt.datetime | None
) -> None:
    from adapters.sdk._tracking import Tracking

    tracking = Tracking(None, "https://gw:8443")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between the years 2 and 9998"):
        tracking.sent_messages(since=since, until=until)


def test_the_gateways_cursor_refuses_an_instant_the_store_cannot_take() -> None:
    """A forged ``after`` of year 1 east of UTC was taken, and PostgreSQL's client then failed: a 500, not a 400."""
    import base64

    from hub.gateway.app import Refused, _position

    def cursor(at: str) -> str:
        return base64.urlsafe_b64encode(f"{at}/00000000-0000-4000-8000-000000000000".encode()).decode().rstrip("=")

    assert _position(cursor("2026-12-06T08:00:00+08:00"))[0] == dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    for bad in ("0001-01-01T00:00:00+08:00", "2026-12-06T08:00:00", "yesterday"):
        with pytest.raises(Refused) as caught:
            _position(cursor(bad))
        assert caught.value.status == 400 and caught.value.code == "GATEWAY_BAD_REQUEST", bad
