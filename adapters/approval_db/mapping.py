"""Pure mapping between the approval database's rows and the hub's typed messages (no I/O; unit-tested).

- ``application_message(app, materials)``: an ``applications`` row and its ``application_materials`` rows → the
  ``approval.application`` message, or ``OutboxFailure`` (a stable code, a Chinese and an English reason) when a
  value cannot go into the schema (too long, missing, malformed). The full XSD check follows in ``adapter.send``.
- ``refusal_of_invalid`` / ``refusal_of_hub``: what an ``MessageInvalid`` or a ``HubRefused`` becomes in the
  outbox row's status columns.
- ``status_params`` / ``decision_params`` / ``notice_params``: an inbound message → the parameters of its INSERT.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.sdk.messages import ApprovalApplication, ApprovalDecision, ApprovalStatus, HubNotice
from adapters.sdk.messages.approval_application_v1 import (
    AgencyRef,
    Applicant,
    Attachment,
    Contact,
    Location,
    Material,
    Materials,
)

#: Stable codes written to ``hub_outbox.status_code`` (README.md lists them with their meaning).
FIELD_TOO_LONG = "APPROVAL_FIELD_TOO_LONG"
FIELD_MISSING = "APPROVAL_FIELD_MISSING"
BAD_VALUE = "APPROVAL_BAD_VALUE"
UNKNOWN_RECIPIENT = "APPROVAL_UNKNOWN_RECIPIENT"
SCHEMA_INVALID = "APPROVAL_SCHEMA_INVALID"
HUB_REFUSED = "APPROVAL_HUB_REFUSED"
REFUSED_BY_RECIPIENT = "APPROVAL_REFUSED_BY_RECIPIENT"
HUB_UNAVAILABLE = "APPROVAL_HUB_UNAVAILABLE"
NO_APPLICATION = "APPROVAL_NO_APPLICATION"
INTERNAL = "APPROVAL_INTERNAL"

#: The hub's routing refusals that mean "this recipient cannot be addressed".
_ROUTE_CODES = frozenset({"ROUTE_NOT_ALLOWED", "ROUTE_NO_ROUTE", "ROUTE_UNKNOWN_RECIPIENT"})

#: Column → (Chinese label, the schema's longest value). From schemas/services/approval.application/1/schema.xsd.
LIMITS: dict[str, tuple[str, int]] = {
    "case_number": ("审批案件编号", 40),
    "item_code": ("许可事项编码", 40),
    "item_name": ("许可事项名称", 200),
    "accepting_agency_name": ("受理机关名称", 200),
    "applicant_name": ("申请人名称", 200),
    "applicant_address": ("申请人地址", 500),
    "contact_name": ("联系人", 200),
    "contact_phone": ("联系电话", 30),
    "summary": ("申请事项概要", 4000),
    "location_description": ("地点描述", 500),
}
MATERIAL_LIMITS: dict[str, tuple[str, int]] = {"name": ("材料名称", 200), "file_name": ("材料文件名", 200)}
MAX_MATERIALS = 50

_CASE = re.compile(r"[0-9A-Z][0-9A-Z\-]{5,39}")
_ITEM = re.compile(r"[0-9A-Z]{8,40}")
_REQUIRED = (
    "case_number",
    "item_code",
    "item_name",
    "accepting_agency_name",
    "accepting_agency_code",
    "applicant_kind",
    "applicant_name",
    "contact_name",
    "contact_phone",
    "submitted_at",
    "statutory_deadline",
)


class OutboxFailure(Exception):
    """A row that cannot be sent as it is: marked ``failed`` with ``code`` and ``reason()``."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(f"{code}: {en}")
        self.code, self.zh, self.en = code, zh, en

    def reason(self) -> str:
        return f"{self.zh} — {self.en}"[:2000]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _check_length(column: str, label: str, limit: int, value: str | None) -> None:
    if value is not None and len(value) > limit:
        raise OutboxFailure(
            FIELD_TOO_LONG,
            f"字段“{label}”（{column}）长度 {len(value)} 超过交换规范上限 {limit} 个字符，申请未发送",
            f"column {column} has {len(value)} characters, the schema allows {limit}; nothing was sent",
        )


def application_message(app: Mapping[str, Any], materials: Sequence[Mapping[str, Any]]) -> ApprovalApplication:
    """The ``approval.application`` message of an application row; ``OutboxFailure`` when it cannot be one."""
    for column in _REQUIRED:
        if app.get(column) is None or (isinstance(app.get(column), str) and not str(app[column]).strip()):
            raise OutboxFailure(
                FIELD_MISSING,
                f"必填字段 {column} 为空，申请未发送",
                f"required column {column} is empty; nothing was sent",
            )
    for column, (label, limit) in LIMITS.items():
        _check_length(column, label, limit, _text(app.get(column)))
    case = str(app["case_number"]).strip()
    if not _CASE.fullmatch(case):
        raise OutboxFailure(
            BAD_VALUE,
            "审批案件编号须为6至40位大写字母、数字或连字符，申请未发送",
            "case_number must be 6 to 40 upper-case letters, digits or hyphens; nothing was sent",
        )
    if not _ITEM.fullmatch(str(app["item_code"]).strip()):
        raise OutboxFailure(
            BAD_VALUE,
            "许可事项编码须为8至40位大写字母或数字，申请未发送",
            "item_code must be 8 to 40 upper-case letters or digits; nothing was sent",
        )
    kind = str(app["applicant_kind"])
    credit, identity = _text(app.get("applicant_credit_code")), _text(app.get("applicant_identity_number"))
    if kind == "natural-person":
        credit = None
        if identity is None:
            raise OutboxFailure(
                FIELD_MISSING,
                "自然人申请须填写居民身份证号码（applicant_identity_number），申请未发送",
                "a natural person's application needs applicant_identity_number; nothing was sent",
            )
    else:
        identity = None
        if credit is None:
            raise OutboxFailure(
                FIELD_MISSING,
                "法人或非法人组织申请须填写统一社会信用代码（applicant_credit_code），申请未发送",
                "an organisation's application needs applicant_credit_code; nothing was sent",
            )
    if not materials:
        raise OutboxFailure(
            FIELD_MISSING,
            "申请没有材料清单（application_materials），申请未发送",
            "the application lists no materials (application_materials); nothing was sent",
        )
    if len(materials) > MAX_MATERIALS:
        raise OutboxFailure(
            FIELD_TOO_LONG,
            f"申请材料 {len(materials)} 份，超过交换规范上限 {MAX_MATERIALS} 份，申请未发送",
            f"{len(materials)} materials, the schema allows {MAX_MATERIALS}; nothing was sent",
        )
    location = None
    division, where = _text(app.get("location_division_code")), _text(app.get("location_description"))
    if division is not None or where is not None:
        if division is None or where is None:
            raise OutboxFailure(
                FIELD_MISSING,
                "申请事项所在地须同时填写行政区划代码与地点描述，申请未发送",
                "a location needs both location_division_code and location_description; nothing was sent",
            )
        location = Location(division_code=division, description=where)
    return ApprovalApplication(
        case_number=case,
        item_code=str(app["item_code"]).strip(),
        item_name=str(app["item_name"]).strip(),
        accepting_agency=AgencyRef(
            name=str(app["accepting_agency_name"]).strip(), agency_code=str(app["accepting_agency_code"]).strip()
        ),
        applicant=Applicant(
            kind=kind,  # type: ignore[arg-type]  # the table's CHECK holds it to the three kinds
            name=str(app["applicant_name"]).strip(),
            credit_code=credit,
            identity_number=identity,
            address=_text(app.get("applicant_address")),
            contact=Contact(name=str(app["contact_name"]).strip(), phone=str(app["contact_phone"]).strip()),
        ),
        summary=_text(app.get("summary")),
        location=location,
        materials=Materials(material=[_material(m) for m in materials]),
        submitted_at=app["submitted_at"],
        time_limit_working_days=app.get("time_limit_working_days"),
        statutory_deadline=app["statutory_deadline"],
        promised_deadline=app.get("promised_deadline"),
    )


def _material(row: Mapping[str, Any]) -> Material:
    for column, (label, limit) in MATERIAL_LIMITS.items():
        _check_length(f"application_materials.{column}", label, limit, _text(row.get(column)))
    name = _text(row.get("name"))
    if name is None:
        raise OutboxFailure(
            FIELD_MISSING,
            "申请材料名称为空，申请未发送",
            "a material has no name; nothing was sent",
        )
    attachment = None
    content = row.get("content")
    if content is not None:
        data = bytes(content)
        file_name, media_type = _text(row.get("file_name")), _text(row.get("media_type"))
        if file_name is None or media_type is None:
            raise OutboxFailure(
                FIELD_MISSING,
                f"电子材料“{name}”缺少文件名或媒体类型，申请未发送",
                "an electronic material needs file_name and media_type; nothing was sent",
            )
        attachment = Attachment(
            file_name=file_name,
            media_type=media_type,  # type: ignore[arg-type]  # the XSD checks the media type
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            content=data,
        )
    return Material(
        name=name,
        form=str(row["form"]),  # type: ignore[arg-type]  # the table's CHECK holds it to the three forms
        copies=row.get("copies"),
        attachment=attachment,
    )


def unknown_recipient(system: str) -> OutboxFailure:
    return OutboxFailure(
        UNKNOWN_RECIPIENT,
        f"收件系统 {system} 不在本适配器可发送的审批系统清单中，申请未发送",
        f"recipient system {system!r} is not one this adapter may address (settings [adapter.recipients]); "
        "nothing was sent",
    )


def refusal_of_invalid(code: str, detail: str, path: str | None = None) -> OutboxFailure:
    """A message that failed the XSD before anything left (``MessageInvalid``)."""
    where = f"（{path}）" if path else ""
    ours = FIELD_TOO_LONG if "length" in detail.lower() else SCHEMA_INVALID
    zh = "字段超过交换规范允许的长度" if ours == FIELD_TOO_LONG else "申请内容不符合交换规范"
    return OutboxFailure(ours, f"{zh}{where}，申请未发送（{code}）", f"{code}: {detail}; nothing was sent"[:1500])


def internal_failure(error: str) -> OutboxFailure:
    """A row the adapter failed on in a way nothing foresaw (a bug): marked failed so it cannot block its batch."""
    return OutboxFailure(
        INTERNAL,
        f"适配器处理该行时发生意外错误（{error}），未获枢纽回执，按未发送处理，请联系运维查看适配器日志",
        f"the adapter failed on this row unexpectedly ({error}; see the adapter's log); no receipt from the hub, "
        "treated as not sent",
    )


def refusal_of_hub(code: str, detail: str) -> OutboxFailure:
    """A message the hub refused (its signed hub.error)."""
    if code in _ROUTE_CODES:
        return OutboxFailure(
            UNKNOWN_RECIPIENT,
            f"交换枢纽拒收：收件方不可达或路由不允许（{code}）",
            f"the hub refused the recipient ({code}): {detail}"[:1500],
        )
    return OutboxFailure(
        HUB_REFUSED, f"交换枢纽拒收（{code}）", f"the hub refused the message ({code}): {detail}"[:1500]
    )


def refusal_by_recipient(code: str, reason: str, system: str) -> OutboxFailure:
    return OutboxFailure(
        REFUSED_BY_RECIPIENT,
        f"收件系统 {system} 拒收该申请（{code}）：{reason}"[:800],
        f"the recipient {system} refused the application ({code})",
    )


def transient(code: str, detail: str) -> OutboxFailure:
    return OutboxFailure(
        HUB_UNAVAILABLE,
        f"暂时无法送达交换枢纽，稍后自动重发（{code}）",
        f"the hub could not be reached ({code}): {detail}; will be resent"[:1500],
    )


def status_params(msg: ApprovalStatus) -> tuple[Any, ...]:
    """(case_number, status, status_at, handling_agency_name, handling_agency_code, handler, note,
    supplement_materials, supplement_due, statutory_deadline)."""
    materials = list(msg.supplement_materials.material) if msg.supplement_materials is not None else None
    return (
        msg.case_number,
        msg.status,
        msg.at,
        msg.handling_agency.name,
        msg.handling_agency.agency_code,
        msg.handler,
        msg.note,
        materials,
        msg.supplement_due,
        msg.statutory_deadline,
    )


def decision_params(msg: ApprovalDecision) -> tuple[Any, ...]:
    """(case_number, decision_number, outcome, deciding_agency_name, deciding_agency_code, decided_at, reasons,
    licence_number, valid_from, valid_until, conditions, remedy)."""
    reasons = list(msg.reasons.reason) if msg.reasons is not None else None
    return (
        msg.case_number,
        msg.decision_number,
        msg.outcome,
        msg.deciding_agency.name,
        msg.deciding_agency.agency_code,
        msg.decided_at,
        reasons,
        msg.licence_number,
        msg.valid_from,
        msg.valid_until,
        msg.conditions,
        msg.remedy,
    )


def decision_documents(msg: ApprovalDecision) -> list[tuple[int, str, str, str, int, bytes]]:
    """(position, file_name, media_type, sha256, size, content) of the decision's documents."""
    if msg.documents is None:
        return []
    return [
        (i, a.file_name, str(a.media_type), a.sha256, a.size, a.content)
        for i, a in enumerate(msg.documents.attachment, start=1)
    ]


#: hub.notice kinds about an approval case: their CaseRef is a case number, linked to the desk's own application.
APPROVAL_NOTICE_PREFIX = "approval-"


def notice_params(msg: HubNotice) -> tuple[Any, ...]:
    """(kind, title, text, refers_to, case_ref, deadline, at, outstanding JSON or None, the case number to look up
    among the desk's applications or None)."""
    outstanding = None
    if msg.outstanding is not None:
        outstanding = json.dumps(
            [
                {"agency_code": p.agency_code, "system": p.system, "name": p.name, "state": p.state}
                for p in msg.outstanding.party
            ],
            ensure_ascii=False,
        )
    case = msg.case_ref if msg.case_ref and msg.kind.startswith(APPROVAL_NOTICE_PREFIX) else None
    return (msg.kind, msg.title, msg.text, msg.refers_to, msg.case_ref, msg.deadline, msg.at, outstanding, case)
