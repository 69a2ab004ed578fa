"""Pure mapping: the OA's JSON push (contract in README.md) → a ``document.official`` body element.

Every refusal is an ``OAError`` with a stable code, a Chinese title and an English reason (never the payload)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

from lxml import etree

NS = "urn:forestry-hub:document.official:1"
#: Namespace of the deterministic message ids: uuid5(NAMESPACE, "gov-220000-oa:" + document_id).
NAMESPACE = uuid.UUID("6f1d3c2e-9a57-5b8e-8c2a-22000000a0a0")
URGENCIES = ("平件", "加急", "特急")
KINDS = (
    "决议",
    "决定",
    "命令",
    "公报",
    "公告",
    "通告",
    "意见",
    "通知",
    "通报",
    "报告",
    "请示",
    "批复",
    "议案",
    "函",
    "纪要",
)
#: Length limits of the schema (characters), checked here so the OA learns which field is too long.
LIMITS = {
    "document_id": 128,
    "issuer_mark": 200,
    "document_number": 60,
    "title": 500,
    "paragraph": 20000,
    "agency_name": 200,
    "file_name": 200,
}
AGENCY_CODE = re.compile(r"^[0-9A-Z]{18}$")
GROUPS = ("local-bureaus", "city-bureaus", "county-bureaus")


class OAError(Exception):
    def __init__(self, status: int, code: str, title: str, reason: str) -> None:
        super().__init__(code)
        self.status, self.code, self.title, self.reason = status, code, title, reason

    def json(self) -> dict[str, str]:
        return {"code": self.code, "title": self.title, "reason": self.reason}


def bad(field: str, what: str, zh: str) -> OAError:
    return OAError(400, "OA_BAD_FIELD", f"字段 {field} 不合规：{zh}", f"field {field}: {what}")


#: What XML 1.0 admits in text (its ``Char`` production): nothing else can be sent in a document.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def not_xml(field: str, char: str) -> OAError:
    point = f"U+{ord(char):04X}"
    return OAError(
        400,
        "OA_BAD_FIELD",
        f"字段 {field} 含有 XML 不允许的控制字符 {point}（如 Word 的手动换行符），请删除或改为普通换行",
        f"field {field} holds {point}, a control character XML does not allow (e.g. Word's manual line break); "
        "remove it or use a plain line break",
    )


def _xml_text(field: str, value: str) -> str:
    found = _NOT_XML_CHAR.search(value)
    if found is not None:
        raise not_xml(field, found.group())
    return value


def too_long(field: str, limit: int) -> OAError:
    return OAError(
        400,
        "OA_FIELD_TOO_LONG",
        f"字段 {field} 超过 {limit} 个字符",
        f"field {field} is longer than {limit} characters",
    )


@dataclass(frozen=True)
class Push:
    document_id: str
    message_id: str
    agencies: tuple[str, ...]
    groups: tuple[str, ...]
    urgency: str
    document_number: str
    body: etree._Element


def message_id(document_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "gov-220000-oa:" + document_id))


def _text(obj: dict[str, Any], name: str, limit_key: str | None = None, *, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        if required:
            raise bad(name, "is required", "必填")
        return None
    if not isinstance(value, str):
        raise bad(name, "must be a string", "须为字符串")
    limit = LIMITS.get(limit_key or name)
    if limit is not None and len(value) > limit:
        raise too_long(name, limit)
    return _xml_text(name, value)


def _agencies(doc: dict[str, Any], name: str, *, required: bool) -> list[tuple[str, str]]:
    items = doc.get(name)
    if items is None and not required:
        return []
    if not isinstance(items, list) or (required and not items) or len(items) > 200:
        raise bad(name, "must be a list of {name, agency_code}", "须为 {name, agency_code} 的列表")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise bad(name, "must be a list of {name, agency_code}", "须为 {name, agency_code} 的列表")
        n = _text(item, "name", "agency_name")
        code = _text(item, "agency_code")
        assert n is not None and code is not None
        if not AGENCY_CODE.match(code):
            raise bad(
                f"{name}.agency_code", "is not an 18-character unified social credit code", "不是18位统一社会信用代码"
            )
        out.append((n, code))
    return out


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, f"{{{NS}}}{tag}")
    if text is not None:
        try:
            el.text = text
        except ValueError:  # a value no check above saw (lxml: "All strings must be XML compatible")
            found = _NOT_XML_CHAR.search(text)
            raise not_xml(f"document ({tag})", found.group() if found else "\x00") from None
    return el


def parse_push(data: Any) -> Push:
    """The OA's JSON (already decoded) → a ``Push``. Raises ``OAError`` (400) for anything not the contract's."""
    if not isinstance(data, dict):
        raise OAError(400, "OA_BAD_JSON", "请求体须为 JSON 对象", "the body must be a JSON object")
    document_id = _text(data, "document_id")
    assert document_id is not None
    to = data.get("to")
    if not isinstance(to, dict):
        raise bad("to", "must be an object {agencies: [...], groups: [...]}", "须为 {agencies, groups} 对象")
    agencies = to.get("agencies", [])
    groups = to.get("groups", [])
    if not isinstance(agencies, list) or not all(isinstance(a, str) for a in agencies):
        raise bad("to.agencies", "must be a list of agency codes", "须为机构代码列表")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise bad("to.groups", "must be a list of group names", "须为分组名列表")
    if not agencies and not groups:
        raise bad("to", "names no recipient", "未指定收文单位")
    for a in agencies:
        if not AGENCY_CODE.match(a):
            raise OAError(
                422,
                "OA_UNKNOWN_RECIPIENT",
                f"收文单位 {a[:40]} 不是有效的机构代码",
                "a recipient is not an agency code",
            )
    for g in groups:
        if g not in GROUPS:
            raise OAError(422, "OA_UNKNOWN_RECIPIENT", f"未知的收文分组 {g[:40]}", "unknown recipient group")
    urgency = data.get("urgency", "平件")
    if urgency not in URGENCIES:
        raise bad("urgency", "must be 平件, 加急 or 特急", "须为平件、加急或特急")
    doc = data.get("document")
    if not isinstance(doc, dict):
        raise bad("document", "must be an object", "须为对象")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise bad("document.kind", "is not a GB/T 9704 document kind", "不是 GB/T 9704 公文种类")
    issuer_mark = _text(doc, "issuer_mark")
    number = _text(doc, "document_number")
    title = _text(doc, "title")
    paragraphs = doc.get("paragraphs")
    if not isinstance(paragraphs, list) or not paragraphs or not all(isinstance(p, str) and p for p in paragraphs):
        raise bad("document.paragraphs", "must be a non-empty list of strings", "须为非空字符串列表")
    for i, p in enumerate(paragraphs, 1):
        if len(p) > LIMITS["paragraph"]:
            raise too_long("document.paragraphs", LIMITS["paragraph"])
        _xml_text(f"document.paragraphs[{i}]", p)
    main = _agencies(doc, "main_recipients", required=False)
    issuers = _agencies(doc, "issuing_agencies", required=True)
    date = _text(doc, "document_date")
    assert date is not None
    if not re.match(r"^\d{4}-\d{2}-\d{2}$", date):
        raise bad("document.document_date", "must be YYYY-MM-DD", "须为 YYYY-MM-DD")
    attachments = doc.get("attachments", [])
    if not isinstance(attachments, list) or len(attachments) > 20:
        raise bad("document.attachments", "must be a list of at most 20 files", "须为至多20个文件的列表")

    root = etree.Element(f"{{{NS}}}OfficialDocument", nsmap={"d": NS})
    _sub(root, "Kind", kind)
    _sub(root, "Urgency", urgency) if urgency != "平件" else None
    _sub(root, "IssuerMark", issuer_mark)
    _sub(root, "DocumentNumber", number)
    _sub(root, "Title", title)
    if main:
        m = _sub(root, "MainRecipients")
        for n, code in main:
            r = _sub(m, "Recipient")
            _sub(r, "Name", n)
            _sub(r, "AgencyCode", code)
    text = _sub(root, "MainText")
    for p in paragraphs:
        _sub(text, "Paragraph", p)
    files = []
    for i, a in enumerate(attachments, 1):
        if not isinstance(a, dict):
            raise bad("document.attachments", "each must be an object", "每项须为对象")
        name = _text(a, "file_name")
        media = _text(a, "media_type")
        content = a.get("content_base64")
        try:
            raw = base64.b64decode(content if isinstance(content, str) else "", validate=True)
        except (binascii.Error, ValueError):
            raise bad(f"document.attachments[{i}].content_base64", "is not base64", "不是 Base64") from None
        if not raw or len(raw) > 2359296:
            raise too_long(f"document.attachments[{i}].content_base64", 2359296)
        files.append((name, media, raw))
    if files:
        notes = _sub(root, "AttachmentNotes")
        for i, (name, _, _) in enumerate(files, 1):
            note = _sub(notes, "AttachmentNote")
            _sub(note, "Number", str(i))
            _sub(note, "Name", (name or "").rsplit(".", 1)[0])
    iss = _sub(root, "IssuingAgencies")
    for n, code in issuers:
        a_el = _sub(iss, "Agency")
        _sub(a_el, "Name", n)
        _sub(a_el, "AgencyCode", code)
    _sub(root, "DocumentDate", date)
    if files:
        att = _sub(root, "Attachments")
        for name, media, raw in files:
            f = _sub(att, "Attachment")
            _sub(f, "FileName", name)
            _sub(f, "MediaType", media)
            _sub(f, "Sha256", hashlib.sha256(raw).hexdigest())
            _sub(f, "Size", str(len(raw)))
            _sub(f, "Content", base64.b64encode(raw).decode("ascii"))
    return Push(
        document_id=document_id,
        message_id=message_id(document_id),
        agencies=tuple(agencies),
        groups=tuple(groups),
        urgency=str(urgency),
        document_number=number or "",
        body=root,
    )


def hub_refusal(code: str) -> OAError:
    """A refusal of the hub (its stable code) → the OA's answer."""
    if "RECIPIENT" in code or "UNKNOWN" in code or "ROUTE" in code or "NO_ROUTE" in code:
        return OAError(
            422, "OA_UNKNOWN_RECIPIENT", f"枢纽拒绝：收文单位未知或无此路由（{code}）", f"the hub refused: {code}"
        )
    return OAError(422, "OA_HUB_REFUSED", f"枢纽拒收该公文（{code}）", f"the hub refused the document: {code}")
