"""Pure mapping for the county bureau's system (contract in README.md): the bureau's JSON push → a service body,
an alert → the duty desk's JSON, the desk's acknowledgement → an ``emergency.ack`` body.

Every refusal is a ``BureauError`` with a stable code, a Chinese title and an English reason (never the payload)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from lxml import etree

#: Namespace of the deterministic message ids (uuid5 of "<system>:<service>:<the bureau's id>").
NAMESPACE = uuid.UUID("3b0c6a52-2224-5a24-9e11-0c0a1b2c3d4e")
#: What the bureau's system may push through ``POST /v1/messages``.
SERVICES = ("document.official", "document.receipt", "info.report", "emergency.alert", "emergency.update")
URGENCIES = ("平件", "加急", "特急")
GROUPS = ("local-bureaus", "city-bureaus", "county-bureaus", "fire-command", "changbai-key-counties")
AGENCY_CODE = re.compile(r"^[0-9A-Z]{18}$")
SYSTEM_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
EXTERNAL_ID = re.compile(r"^[\w.:/-]{1,128}$")
MAX_RECIPIENTS = 200
CST = timezone(timedelta(hours=8))
#: emergency.ack field limits (schema: env:ShortText 200, Phone, Note 2000) checked here so the desk learns which.
ACK_LIMITS = {"duty_officer": 200, "phone": 30, "note": 2000}
RESPONSES = ("received", "responding", "forwarded")
PHONE = re.compile(r"^\+?[0-9][0-9\-]+$")
#: The hub's emergency notices the desk acknowledges (RefersTo: the alert or update forwarded or resent).
NOTICES_TO_ACK = ("emergency-resend", "emergency-closed")
#: What XML 1.0 admits in text (its ``Char`` production): nothing else can be sent.
NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class BureauError(Exception):
    def __init__(self, status: int, code: str, title: str, reason: str) -> None:
        super().__init__(code)
        self.status, self.code, self.title, self.reason = status, code, title, reason

    def json(self) -> dict[str, str]:
        return {"code": self.code, "title": self.title, "reason": self.reason}


def bad(field: str, what: str, zh: str) -> BureauError:
    return BureauError(400, "LB_BAD_FIELD", f"字段 {field} 不合规：{zh}", f"field {field}: {what}")


def too_long(field: str, limit: int) -> BureauError:
    return BureauError(
        400,
        "LB_FIELD_TOO_LONG",
        f"字段 {field} 超过 {limit} 个字符",
        f"field {field} is longer than {limit} characters",
    )


def unknown_recipient(zh: str, en: str) -> BureauError:
    return BureauError(422, "LB_UNKNOWN_RECIPIENT", zh, en)


def message_id(system: str, service: str, external_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{system}:{service}:{external_id}"))


def ack_message_id(system: str, alert_message_id: str) -> str:
    """One acknowledgement per alert: the desk's re-POST (or a crash before its 2xx) is a hub duplicate."""
    return str(uuid.uuid5(NAMESPACE, f"{system}:emergency.ack:{alert_message_id}"))


@dataclass(frozen=True)
class Push:
    external_id: str
    service: str
    message_id: str
    recipients: tuple[tuple[str, str | None], ...]  # (agency code, system or None)
    groups: tuple[str, ...]
    urgency: str
    ref_to: str | None
    business_ref: str | None
    body: etree._Element


def parse_push(data: Any, system: str) -> Push:
    """The bureau's JSON (decoded) → a ``Push``. Raises ``BureauError`` for anything not the contract's."""
    if not isinstance(data, dict):
        raise BureauError(400, "LB_BAD_JSON", "请求体须为 JSON 对象", "the body must be a JSON object")
    ext = data.get("id")
    if not isinstance(ext, str) or not ext:
        raise bad("id", "is required (the bureau's own id of this message)", "必填（本系统的报文编号）")
    if len(ext) > 128:
        raise too_long("id", 128)
    if not EXTERNAL_ID.match(ext):
        raise bad("id", "may hold letters, digits and . : / _ - only", "只能含字母、数字及 . : / _ -")
    service = data.get("service")
    if service not in SERVICES:
        raise BureauError(400, "LB_BAD_SERVICE", "不支持的业务类型", "service must be one of " + ", ".join(SERVICES))
    to = data.get("to")
    if not isinstance(to, dict):
        raise bad("to", "must be an object {agencies: [...], groups: [...]}", "须为 {agencies, groups} 对象")
    agencies = to.get("agencies", [])
    groups = to.get("groups", [])
    if not isinstance(agencies, list) or not isinstance(groups, list):
        raise bad("to", "agencies and groups must be lists", "agencies 与 groups 须为列表")
    if not agencies and not groups:
        raise bad("to", "names no recipient", "未指定接收单位")
    if len(agencies) + len(groups) > MAX_RECIPIENTS:
        raise bad("to", f"names more than {MAX_RECIPIENTS} recipients", f"接收单位超过 {MAX_RECIPIENTS} 个")
    recipients: list[tuple[str, str | None]] = []
    for a in agencies:
        if isinstance(a, str):
            code, sys_id = a, None
        elif isinstance(a, dict) and isinstance(a.get("agency_code"), str):
            code, sys_id = a["agency_code"], a.get("system")
        else:
            raise bad("to.agencies", "each must be an agency code or {agency_code, system}", "每项须为机构代码")
        if not AGENCY_CODE.match(code):
            raise unknown_recipient(f"接收单位 {code[:40]} 不是有效的机构代码", "a recipient is not an agency code")
        if sys_id is not None and (not isinstance(sys_id, str) or not SYSTEM_ID.match(sys_id)):
            raise unknown_recipient("接收系统标识无效", "a recipient system id is not valid")
        recipients.append((code, sys_id))
    for g in groups:
        if g not in GROUPS:
            raise unknown_recipient(f"未知的接收分组 {str(g)[:40]}", "unknown recipient group")
    urgency = data.get("urgency", "平件")
    if urgency not in URGENCIES:
        raise bad("urgency", "must be 平件, 加急 or 特急", "须为平件、加急或特急")
    ref_to = data.get("ref_to")
    if ref_to is not None:
        try:
            ref_to = str(uuid.UUID(str(ref_to)))
        except ValueError:
            raise bad("ref_to", "must be a message id (UUID)", "须为报文标识（UUID）") from None
    business_ref = data.get("business_ref")
    if business_ref is not None:
        if not isinstance(business_ref, str):
            raise bad("business_ref", "must be a string", "须为字符串")
        if len(business_ref) > 100:
            raise too_long("business_ref", 100)
    xml = data.get("body_xml")
    if not isinstance(xml, str) or not xml.strip():
        raise bad("body_xml", "is required: the service's body element as XML text", "必填：业务报文体 XML")
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)
        body = etree.fromstring(xml.encode("utf-8"), parser)
    except (etree.XMLSyntaxError, ValueError):
        raise BureauError(400, "LB_BAD_XML", "body_xml 不是格式正确的 XML", "body_xml is not well-formed XML") from None
    want = f"urn:forestry-hub:{service}:1"
    if etree.QName(body).namespace != want:
        raise BureauError(
            400, "LB_BAD_XML", f"body_xml 的命名空间须为 {want}", f"body_xml's root element must be in {want}"
        )
    return Push(
        external_id=ext,
        service=service,
        message_id=message_id(system, service, ext),
        recipients=tuple(recipients),
        groups=tuple(groups),
        urgency=str(urgency),
        ref_to=ref_to,
        business_ref=business_ref,
        body=body,
    )


def schema_refusal(code: str, detail: str) -> BureauError:
    """The SDK's ``MessageInvalid`` (nothing left) → the bureau's answer; a length facet is LB_FIELD_TOO_LONG."""
    text = detail[:400]
    if re.search(r"length|too long|maxLength", detail, re.IGNORECASE):
        return BureauError(400, "LB_FIELD_TOO_LONG", "有字段超过交换格式（XSD）允许的长度", text)
    return BureauError(400, "LB_INVALID", f"报文不符合交换格式（XSD，{code}）", text)


def hub_refusal(code: str) -> BureauError:
    if any(k in code for k in ("RECIPIENT", "UNKNOWN", "ROUTE", "ACCEPT", "SYSTEM")):
        return unknown_recipient(f"枢纽拒绝：接收单位未知或无此路由（{code}）", f"the hub refused: {code}")
    return BureauError(422, "LB_HUB_REFUSED", f"枢纽拒收该报文（{code}）", f"the hub refused the message: {code}")


# ------------------------------------------------------------------------------------------ alerts and acks


def alert_for_desk(
    message_id: str, service: str, sender: tuple[str, str], fields: dict[str, Any], body_xml: str
) -> dict[str, Any]:
    """What the duty desk's webhook receives (JSON), for an emergency.alert or emergency.update."""
    return {
        "message_id": message_id,
        "service": service,
        "sender": {"agency_code": sender[0], "system": sender[1]},
        **fields,
        "ack_path": f"/v1/alerts/{message_id}/ack",
        "body_xml": body_xml,
    }


def notice_for_desk(
    message_id: str, sender: tuple[str, str], notice: Any, urgency: str, body_xml: str
) -> dict[str, Any]:
    """What the duty desk receives for the hub's emergency notice (``hub.notice``: a forward of an alert, update or
    closing the sender left the bureau out of, or a resend of one not acknowledged in time): the desk acknowledges
    ``refers_to`` (the alert's or update's id) through ``ack_path``."""
    return {
        "message_id": message_id,
        "service": "hub.notice",
        "sender": {"agency_code": sender[0], "system": sender[1]},
        "kind": notice.kind,
        "incident_number": notice.case_ref,
        "title": notice.title,
        "text": notice.text,
        "deadline": notice.deadline.isoformat() if notice.deadline is not None else None,
        "urgency": urgency,
        "refers_to": notice.refers_to,
        # an escalation asks the bureau to press its late subordinates: nothing for its own desk to acknowledge
        "ack_path": None if notice.kind not in NOTICES_TO_ACK else f"/v1/alerts/{notice.refers_to}/ack",
        "body_xml": body_xml,
    }


def alert_fields(body: etree._Element) -> dict[str, Any]:
    """The desk's summary of an alert body (incident, type, level, title, place, ack limit)."""

    def text(path: str) -> str | None:
        el = body.find(path, namespaces={"e": etree.QName(body).namespace or ""})
        return el.text if el is not None else None

    return {
        "incident_number": text("e:IncidentNumber"),
        "type": text("e:Type"),
        "level": text("e:Level"),
        "title": text("e:Title"),
        "place": text("e:Place/e:Description"),
        "ack_within_minutes": text("e:AckWithinMinutes"),
    }


@dataclass(frozen=True)
class Ack:
    response: str
    duty_officer: str
    phone: str
    note: str | None
    acknowledged_at: datetime


def parse_ack(data: Any, now: datetime | None = None) -> Ack:
    if not isinstance(data, dict):
        raise BureauError(400, "LB_BAD_JSON", "请求体须为 JSON 对象", "the body must be a JSON object")
    response = data.get("response", "received")
    if response not in RESPONSES:
        raise bad("response", "must be received, responding or forwarded", "须为 received、responding 或 forwarded")
    out: dict[str, str | None] = {}
    for name in ("duty_officer", "phone", "note"):
        v = data.get(name)
        if v is None or v == "":
            if name != "note":
                raise bad(name, "is required", "必填")
            out[name] = None
            continue
        if not isinstance(v, str):
            raise bad(name, "must be a string", "须为字符串")
        if len(v) > ACK_LIMITS[name]:
            raise too_long(name, ACK_LIMITS[name])
        found = NOT_XML_CHAR.search(v)
        if found is not None:
            point = f"U+{ord(found.group()):04X}"
            raise bad(
                name,
                f"holds {point}, a control character XML does not allow (e.g. Word's manual line break); remove it",
                f"含有 XML 不允许的控制字符 {point}（如 Word 的手动换行符），请删除",
            )
        out[name] = v
    if not PHONE.match(out["phone"] or ""):
        raise bad("phone", "is not a telephone number", "不是电话号码")
    at = data.get("acknowledged_at")
    if at is None:
        when = (now or datetime.now(CST)).replace(microsecond=0)
    else:
        try:
            when = datetime.fromisoformat(str(at))
        except ValueError:
            raise bad("acknowledged_at", "must be an ISO 8601 time", "须为 ISO 8601 时间") from None
        if when.tzinfo is None:
            raise bad("acknowledged_at", "must carry a time zone", "须带时区")
    return Ack(str(response), out["duty_officer"] or "", out["phone"] or "", out["note"], when)
