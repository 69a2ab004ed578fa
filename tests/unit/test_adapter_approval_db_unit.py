"""The approval database adapter's pure parts: rows → messages, refusals → status columns, settings."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from adapters.approval_db import mapping
from adapters.approval_db.adapter import DECIDER, Config
from adapters.approval_db.demo import decision_of, status_of
from adapters.approval_db.mapping import OutboxFailure, application_message
from adapters.approval_db.simulator import MATERIALS, application
from adapters.sdk import AdapterSettings, ConfigurationError
from adapters.sdk.messages import ApprovalApplication, HubNotice
from adapters.sdk.messages.approval_decision_v1 import Attachment, Documents
from adapters.sdk.messages.hub_notice_v1 import Outstanding, Party

CASE = "LCXK-222403-2026-000001"


def failure(app: dict[str, Any], materials: Any = MATERIALS) -> OutboxFailure:
    with pytest.raises(OutboxFailure) as caught:
        application_message(app, materials)
    return caught.value


def test_an_application_row_becomes_a_valid_message() -> None:
    msg = application_message(application(CASE), MATERIALS)
    assert isinstance(msg, ApprovalApplication)
    msg.validate()  # the hub's own XSD
    assert msg.case_number == CASE and msg.applicant.credit_code == "91220101MA17Q8RN3R"
    [electronic, copy] = msg.materials.material
    assert electronic.attachment is not None and electronic.attachment.size == len(MATERIALS[0]["content"])
    assert copy.attachment is None and copy.copies == 1


def test_a_natural_person_sends_the_identity_number_only() -> None:
    app = application(CASE, applicant_kind="natural-person", applicant_identity_number="22240319800101123X")
    msg = application_message(app, MATERIALS)
    msg.validate()
    assert msg.applicant.credit_code is None and msg.applicant.identity_number == "22240319800101123X"


@pytest.mark.parametrize(
    ("column", "value", "limit"),
    [("applicant_name", "林" * 201, 200), ("summary", "x" * 4001, 4000), ("contact_phone", "1" * 31, 30)],
)
def test_a_value_too_long_for_the_schema_fails_with_its_column(column: str, value: str, limit: int) -> None:
    f = failure(application(CASE, **{column: value}))
    assert f.code == "APPROVAL_FIELD_TOO_LONG"
    assert column in f.reason() and str(limit) in f.reason() and "未发送" in f.reason()


def test_a_material_name_too_long_and_too_many_materials() -> None:
    f = failure(application(CASE), [{**MATERIALS[1], "name": "材" * 201}])
    assert f.code == "APPROVAL_FIELD_TOO_LONG" and "application_materials.name" in f.reason()
    assert failure(application(CASE), [MATERIALS[1]] * 51).code == "APPROVAL_FIELD_TOO_LONG"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"item_name": "  "}, "APPROVAL_FIELD_MISSING"),
        ({"applicant_credit_code": None}, "APPROVAL_FIELD_MISSING"),
        ({"applicant_kind": "natural-person"}, "APPROVAL_FIELD_MISSING"),
        ({"location_description": None}, "APPROVAL_FIELD_MISSING"),
        ({"case_number": "lcxk-1"}, "APPROVAL_BAD_VALUE"),
        ({"item_code": "12-34"}, "APPROVAL_BAD_VALUE"),
    ],
)
def test_rows_that_cannot_be_a_message(overrides: dict[str, Any], code: str) -> None:
    f = failure({**application(CASE), **overrides})
    assert f.code == code
    zh, en = f.reason().split(" — ", 1)
    assert "未发送" in zh and "nothing was sent" in en


def test_no_materials_fails() -> None:
    assert failure(application(CASE), []).code == "APPROVAL_FIELD_MISSING"


def test_refusals_map_to_stable_codes() -> None:
    assert mapping.unknown_recipient("prov-x").code == "APPROVAL_UNKNOWN_RECIPIENT"
    assert mapping.refusal_of_hub("ROUTE_NOT_ALLOWED", "no route").code == "APPROVAL_UNKNOWN_RECIPIENT"
    hub = mapping.refusal_of_hub("SIG_DIGEST", "bad")
    assert hub.code == "APPROVAL_HUB_REFUSED" and "SIG_DIGEST" in hub.reason()
    long = mapping.refusal_of_invalid("SCHEMA_VALUE", "value has a length of 300; the maximum is 200", "/a:Name")
    assert long.code == "APPROVAL_FIELD_TOO_LONG" and "/a:Name" in long.reason()
    assert mapping.refusal_of_invalid("SCHEMA_AGENCY_CODE", "check character").code == "APPROVAL_SCHEMA_INVALID"
    assert mapping.transient("SDK_TIMEOUT", "no answer").code == "APPROVAL_HUB_UNAVAILABLE"
    assert len(mapping.refusal_of_hub("X", "y" * 5000).reason()) <= 2000


def test_status_and_decision_parameters() -> None:
    status = status_of(CASE, "supplement-required")
    params = mapping.status_params(status)
    assert params[:2] == (CASE, "supplement-required") and params[4] == "11220000013544357T"
    decision = decision_of(CASE, 7)
    d = mapping.decision_params(decision)
    assert d[:3] == (CASE, decision.decision_number, "approved") and d[6] == [decision.reasons.reason[0]]  # type: ignore[union-attr]
    assert mapping.decision_documents(decision) == []
    decision.documents = Documents(
        attachment=[
            Attachment(file_name="决定书.pdf", media_type="application/pdf", sha256="0" * 64, size=3, content=b"pdf")
        ]
    )
    assert mapping.decision_documents(decision) == [(1, "决定书.pdf", "application/pdf", "0" * 64, 3, b"pdf")]


def settings(store: str = "postgresql://postgres@127.0.0.1/approval", **extra: Any) -> AdapterSettings:
    return AdapterSettings(system="county-222403-approval", home=Path("/nonexistent"), store=store, extra=extra)


def test_config_defaults_and_validation() -> None:
    c = Config.from_settings(settings())
    assert c.recipients == {DECIDER: "11220000013544357T"} and c.poll_interval == 5.0
    c = Config.from_settings(settings(poll_interval=0.5, batch_size=10))
    assert (c.poll_interval, c.batch_size) == (0.5, 10)
    for bad in (
        settings(store=""),
        settings(poll_interval=-1),
        settings(poll_interval=float("nan")),  # TOML's nan and inf are floats: not a usable interval
        settings(poll_interval=float("inf")),
        settings(nonsense=1),
        settings(recipients={"x": "1"}),
    ):
        with pytest.raises(ConfigurationError):
            Config.from_settings(bad)


CN = timezone(timedelta(hours=8))


def test_notice_parameters_link_only_approval_notices_by_case_number() -> None:
    at = datetime(2026, 12, 4, 9, 30, tzinfo=CN)
    feedback = HubNotice(
        kind="approval-feedback",
        title=f"申请已送达审批系统：林木采伐许可证核发（{CASE}）",
        text="您的申请已送达。 Your application reached the approval system.",
        refers_to="0b6f4c1e-6d7c-4a55-9e0c-0a8f3f1d2c3b",
        case_ref=CASE,
        deadline=datetime(2027, 1, 4, 23, 59, 59, tzinfo=CN),
        at=at,
    )
    feedback.validate()  # the hub's own XSD
    params = mapping.notice_params(feedback)
    assert params[:5] == ("approval-feedback", feedback.title, feedback.text, feedback.refers_to, CASE)
    assert params[5:8] == (feedback.deadline, at, None) and params[8] == CASE

    reminder = HubNotice(
        kind="meeting-reminder",
        title="会议提醒：防火调度会",
        text="会议即将开始，请确认参会。",
        case_ref=CASE,  # a meeting number that happens to look like a case number is not linked
        outstanding=Outstanding(
            party=[Party(agency_code="11222403014102856B", system="county-222403-oa", state="未确认")]
        ),
        at=at,
    )
    reminder.validate()
    params = mapping.notice_params(reminder)
    assert params[0] == "meeting-reminder" and params[4] == CASE and params[8] is None
    assert json.loads(params[7]) == [
        {"agency_code": "11222403014102856B", "system": "county-222403-oa", "name": None, "state": "未确认"}
    ]
    no_case = HubNotice(kind="approval-feedback", title="审批进度", text="已受理。", at=at)
    assert mapping.notice_params(no_case)[8] is None


async def test_only_the_hubs_own_notices_are_recorded() -> None:
    from types import SimpleNamespace

    from adapters.approval_db.adapter import on_notice
    from adapters.sdk import Reject

    written: list[tuple[Any, ...]] = []

    class Db:
        async def execute(self, sql: str, *args: Any) -> None:
            written.append(args)

    notice = HubNotice(kind="approval-feedback", title="审批进度", text="已受理。", case_ref=CASE, at=datetime.now(CN))

    def ctx(sender: str, originator: str | None) -> Any:
        return SimpleNamespace(
            sender=SimpleNamespace(system=sender),
            originator=None if originator is None else SimpleNamespace(system=originator),
            urgency="平件",
            message_id="m-1",
            db=Db(),
        )

    for bad in (ctx("prov-220000-portal", "prov-220000-portal"), ctx("hub", "prov-220000-portal")):
        with pytest.raises(Reject) as caught:
            await on_notice(notice, bad)
        assert caught.value.code == "APPROVAL_NOTICE_NOT_FROM_HUB"
    assert written == []
    await on_notice(notice, ctx("hub", "hub"))
    [args] = written
    assert args[0] == "approval-feedback" and args[8] == CASE and args[-2:] == ("平件", "m-1")
