"""Pure: the national reporting folders' file formats ↔ the hub's messages. No I/O, no clock (times are given).

Outbox file (what 国家林草局's reporting system writes, see README.md): one ``Submission`` element in the namespace
``urn:forestry-hub:national-forestry:1``, a small header (recipients, 紧急程度, 密级, 文号, the message answered)
and, under ``Body``, the body element of one of the services the nation sends through its folders (``KINDS``)::

    <Submission xmlns="urn:forestry-hub:national-forestry:1">
      <To agency="11220000013544357T" system="prov-220000-oa"/>
      <Urgency>平件</Urgency>
      <Body><i:InfoReport xmlns:i="urn:forestry-hub:info.report:1">…</i:InfoReport></Body>
    </Submission>

Inbox file: the hub-signed delivery exactly as received (both signatures kept), named after its message id.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree

NS = "urn:forestry-hub:national-forestry:1"
_Q = f"{{{NS}}}"

#: uuid5 namespace of the adapter's message ids (a file's id = uuid5(this, system + file name + content hash)).
ID_NAMESPACE = uuid.UUID("6a0c2f4e-8b1d-5c37-9e55-3f1d2a7b9c10")

#: The kinds of file the nation may put in its outbox: service → (version, 中文名, English name).
KINDS: dict[str, tuple[int, str, str]] = {
    "info.report": (1, "统计报表、统计通报", "statistics report or bulletin"),
    "document.official": (1, "公文（通知、统计通知、批复……）", "official document (notice, statistics notice …)"),
    "document.receipt": (1, "公文回执（签收、办结、反馈）", "document receipt"),
}
#: Categories of info.report the nation sends down (its route: info-statistics-down).
INFO_CATEGORIES = ("statistics",)
URGENCIES = ("特急", "加急", "平件")
CLASSIFICATIONS = ("公开", "内部")

_BODY_NS = re.compile(r"^urn:forestry-hub:([a-z]+(?:\.[a-z]+)+):([1-9][0-9]*)$")
_SAFE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# ---------------------------------------------------------------------------------------------- refusals


@dataclass(frozen=True, slots=True)
class FileRefused(Exception):
    """Why an outbox file goes to ``failed/``: a stable code, the reason in Chinese and in English, and the hub's
    own code when the hub (or the SDK's schema check) refused it."""

    code: str
    title: str
    reason: str
    detail_code: str = ""

    def __str__(self) -> str:
        return f"{self.code}: {self.title} — {self.reason}"


#: Every code a reason file can carry: code → 中文标题 (the README lists them with the English reasons).
CODES: dict[str, str] = {
    "NF_TOO_LARGE": "文件超过大小上限",
    "NF_NOT_XML": "文件不是格式正确的 XML",
    "NF_BAD_FORMAT": "文件不符合报送文件格式",
    "NF_UNKNOWN_KIND": "报送文件的报文类型不在允许范围内",
    "NF_SCHEMA": "报文内容不符合报文模式（如字段超长、取值不合法）",
    "NF_UNKNOWN_RECIPIENT": "收件机构、系统或群组不存在",
    "NF_NOT_ALLOWED": "路由不允许向该收件方报送此类报文",
    "NF_HUB_REFUSED": "交换枢纽拒收",
}


def refused(code: str, reason: str, detail_code: str = "", title: str = "") -> FileRefused:
    return FileRefused(code, title or CODES[code], reason, detail_code)


#: The hub's codes for a recipient that does not exist / a route that does not allow it.
_HUB_UNKNOWN = {"ROUTE_UNKNOWN_RECIPIENT", "DIR_UNKNOWN_REF", "ROUTE_NO_RECIPIENT"}


#: Hub refusals that are not about the file (the hub's broker or database, this system's own certificate or key,
#: clocks, rates): the file stays in the outbox and is tried again later, never failed for them.
_HUB_TRANSIENT_PREFIXES = ("DELIVERY_", "STORE_", "CERT_", "SIG_", "GATEWAY_", "AMQP_")
_HUB_TRANSIENT = {"INTERNAL", "CONFIG", "IO_READ", "MSG_FUTURE", "MSG_EXPIRED"}


def hub_transient(code: str) -> bool:
    """Whether a hub refusal is about the moment or this system, not the file (then: retry, never ``failed/``)."""
    return code in _HUB_TRANSIENT or code.startswith(_HUB_TRANSIENT_PREFIXES)


def hub_refusal(code: str, title: str, reason: str) -> FileRefused:
    """The hub's signed refusal (``HubRefused``) as a reason file's content."""
    if code in _HUB_UNKNOWN:
        return refused("NF_UNKNOWN_RECIPIENT", f"hub {code}: {reason}", code)
    if code.startswith("ROUTE_") or code.startswith("GATE_"):
        return refused("NF_NOT_ALLOWED", f"hub {code}: {reason}", code, f"{CODES['NF_NOT_ALLOWED']}（{title}）")
    return refused("NF_HUB_REFUSED", f"hub {code}: {reason}", code, f"{CODES['NF_HUB_REFUSED']}：{title}")


def invalid(code: str, detail: str) -> FileRefused:
    """The SDK's ``MessageInvalid`` (the hub's XSDs, checked before anything leaves) as a reason."""
    return refused("NF_SCHEMA", f"{code}: {detail}", code)


def reason_text(r: FileRefused, *, file: str, sha256: str, message_id: str | None, at: datetime) -> str:
    """The ``<name>.reason.txt`` beside a failed file: ``key: value`` lines, the stable code first."""
    file = file.replace("\r", " ").replace("\n", " ")
    r = FileRefused(r.code, r.title, " ".join(r.reason.split()), r.detail_code)  # one line each
    lines = [
        f"code: {r.code}",
        f"原因: {r.title}",
        f"reason: {r.reason}",
        f"file: {file}",
        f"sha256: {sha256}",
    ]
    if r.detail_code:
        lines.append(f"detail_code: {r.detail_code}")
    if message_id:
        lines.append(f"message_id: {message_id}")
    lines.append(f"at: {at.isoformat(timespec='seconds')}")
    return "\n".join(lines) + "\n"


def parse_reason(text: str) -> dict[str, str]:
    """A reason file back into its fields (for the national system and the tests)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out.setdefault(key, value)
    return out


# ---------------------------------------------------------------------------------------------- outbox files


@dataclass(frozen=True, slots=True)
class Submission:
    """One outbox file, read: what to send and to whom."""

    service: str
    version: int
    body: Any  # lxml element
    to: tuple[tuple[str, str | None], ...] = ()
    cc: tuple[tuple[str, str | None], ...] = ()
    groups: tuple[str, ...] = ()
    urgency: str = "平件"
    classification: str = "公开"
    business_ref: str | None = None
    reply_to: str | None = None
    title: str = field(default="")


def is_candidate(name: str) -> bool:
    """Whether a directory entry of the outbox is a complete file to take: ``*.xml``, not a dot-file, not a
    temporary name (``*.tmp``, ``*.part``, ``~…``)."""
    return (
        name.endswith(".xml")
        and not name.startswith((".", "~"))
        and not name.endswith((".tmp.xml", ".part.xml"))
        and "/" not in name
    )


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def message_id_for(system: str, name: str, data: bytes) -> str:
    """The deterministic message id of an outbox file: the same file (name and bytes) always gets the same id, so
    a resend after a crash is a duplicate to the hub, never a second message."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{system}\n{name}\n{content_hash(data)}"))


def inbox_name(service: str, message_id: str) -> str:
    """The inbox file of a delivery: derived from its message id only (a redelivery rewrites the same file)."""
    if not _SAFE_ID.match(message_id):  # the envelope's XSD guarantees a UUID; never trust a path from outside
        message_id = str(uuid.uuid5(ID_NAMESPACE, message_id))
    return f"{service}_{message_id}.xml"


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True
    )


def well_formed(data: bytes) -> bool:
    try:
        etree.fromstring(data, _parser())
    except etree.XMLSyntaxError:
        return False
    return True


def _party(el: Any) -> tuple[str, str | None]:
    agency = (el.get("agency") or "").strip()
    system = (el.get("system") or "").strip() or None
    if not agency:
        raise refused("NF_BAD_FORMAT", f"<{etree.QName(el).localname}> without agency=")
    return agency, system


def parse_submission(data: bytes, *, max_bytes: int) -> Submission:
    """An outbox file's bytes → ``Submission``; ``FileRefused`` for anything that must go to ``failed/``. The
    body's own schema is checked by the SDK when the message is built (``MessageInvalid`` → ``invalid``)."""
    if len(data) > max_bytes:
        raise refused("NF_TOO_LARGE", f"{len(data)} bytes, the limit is {max_bytes}")
    if not data.strip():
        raise refused("NF_NOT_XML", "the file is empty")
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:
        raise refused("NF_BAD_FORMAT", "a DOCTYPE or ENTITY declaration is not allowed")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise refused("NF_NOT_XML", f"not well-formed XML: {exc.msg} (line {exc.lineno})") from None
    if root.tag != _Q + "Submission":
        raise refused("NF_BAD_FORMAT", f"the root element is {root.tag}, not {{{NS}}}Submission")
    to: list[tuple[str, str | None]] = []
    cc: list[tuple[str, str | None]] = []
    groups: list[str] = []
    urgency, classification = "平件", "公开"
    business_ref: str | None = None
    reply_to: str | None = None
    body: Any = None
    for el in root:
        if not isinstance(el.tag, str):
            continue
        tag = etree.QName(el)
        if tag.namespace != NS:
            raise refused("NF_BAD_FORMAT", f"unexpected element {el.tag} in the header")
        name, text = tag.localname, (el.text or "").strip()
        if name == "To":
            to.append(_party(el))
        elif name == "Cc":
            cc.append(_party(el))
        elif name == "Group":
            if not (el.get("name") or "").strip():
                raise refused("NF_BAD_FORMAT", "<Group> without name=")
            groups.append((el.get("name") or "").strip())
        elif name == "Urgency":
            if text not in URGENCIES:
                raise refused("NF_BAD_FORMAT", f"Urgency {text!r} is not one of {', '.join(URGENCIES)}")
            urgency = text
        elif name == "Classification":
            if text not in CLASSIFICATIONS:
                raise refused(
                    "NF_BAD_FORMAT",
                    f"Classification {text!r}: the reporting folders carry only {'/'.join(CLASSIFICATIONS)}",
                )
            classification = text
        elif name == "BusinessRef":
            business_ref = text or None
        elif name == "ReplyTo":
            if not _SAFE_ID.match(text):
                raise refused("NF_BAD_FORMAT", f"ReplyTo {text[:60]!r} is not a message id (UUID)")
            reply_to = text
        elif name == "Body":
            children = [c for c in el if isinstance(c.tag, str)]
            if len(children) != 1:
                raise refused("NF_BAD_FORMAT", f"<Body> holds {len(children)} elements, not one")
            body = children[0]
        else:
            raise refused("NF_BAD_FORMAT", f"unknown header element <{name}>")
    if body is None:
        raise refused("NF_BAD_FORMAT", "no <Body>")
    if not (to or groups):
        raise refused("NF_BAD_FORMAT", "no recipient (<To agency=… system=…/> or <Group name=…/>)")
    m = _BODY_NS.match(etree.QName(body).namespace or "")
    if m is None:
        raise refused("NF_UNKNOWN_KIND", f"the body element {body.tag} is not a message of the hub")
    service, version = m.group(1), int(m.group(2))
    kind = KINDS.get(service)
    if kind is None or kind[0] != version:
        allowed = ", ".join(f"{s}/{v[0]}" for s, v in KINDS.items())
        raise refused("NF_UNKNOWN_KIND", f"{service}/{version} is not sent through the folders (allowed: {allowed})")
    title = ""
    if service == "info.report":
        category = (body.findtext("{urn:forestry-hub:info.report:1}Category") or "").strip()
        if category not in INFO_CATEGORIES:
            raise refused(
                "NF_UNKNOWN_KIND",
                f"info.report with Category {category!r}: the nation sends only statistics (统计报表、统计通报)",
            )
    for t in body.iter("{*}Title"):
        title = (t.text or "").strip()
        break
    body = _detached(body)
    return Submission(
        service=service,
        version=version,
        body=body,
        to=tuple(to),
        cc=tuple(cc),
        groups=tuple(groups),
        urgency=urgency,
        classification=classification,
        business_ref=business_ref,
        reply_to=reply_to,
        title=title,
    )


def _detached(el: Any) -> Any:
    """A copy of the body element as its own document (namespaces of the wrapper not carried along)."""
    return etree.fromstring(etree.tostring(el), _parser())


def submission_xml(
    body: bytes | str,
    *,
    to: tuple[tuple[str, str | None], ...] = (),
    groups: tuple[str, ...] = (),
    urgency: str = "平件",
    classification: str = "公开",
    business_ref: str | None = None,
    reply_to: str | None = None,
) -> bytes:
    """An outbox file around ``body`` (the national system's side of the contract; used by the simulator)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if text.startswith("<?xml"):
        text = text.split("?>", 1)[1].lstrip()
    head = [f'  <To agency="{escape(a)}"' + (f' system="{escape(s)}"' if s else "") + "/>" for a, s in to]
    head += [f'  <Group name="{escape(g)}"/>' for g in groups]
    head.append(f"  <Urgency>{escape(urgency)}</Urgency>")
    head.append(f"  <Classification>{escape(classification)}</Classification>")
    if business_ref:
        head.append(f"  <BusinessRef>{escape(business_ref)}</BusinessRef>")
    if reply_to:
        head.append(f"  <ReplyTo>{escape(reply_to)}</ReplyTo>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Submission xmlns="{NS}">\n' + "\n".join(head) + f"\n  <Body>\n{text}\n  </Body>\n</Submission>\n"
    ).encode("utf-8")


NATION = "11100000000019136N"


def statistics_report(
    *,
    title: str,
    paragraphs: list[str],
    issue: str,
    reported_at: datetime,
    contact: str = "王磊",
    phone: str = "010-84238800",
) -> str:
    """An info.report body of category statistics (统计报表) from the national administration."""
    paras = "".join(f"<i:Paragraph>{escape(p)}</i:Paragraph>" for p in paragraphs)
    return (
        '<i:InfoReport xmlns:i="urn:forestry-hub:info.report:1">'
        "<i:Category>statistics</i:Category>"
        f"<i:IssueNumber>{escape(issue)}</i:IssueNumber>"
        f"<i:Title>{escape(title)}</i:Title>"
        f"<i:Content>{paras}</i:Content>"
        f"<i:ReportingUnit><i:Name>国家林业和草原局</i:Name><i:AgencyCode>{NATION}</i:AgencyCode></i:ReportingUnit>"
        f"<i:Contact><i:Name>{escape(contact)}</i:Name><i:Phone>{escape(phone)}</i:Phone></i:Contact>"
        f"<i:ReportedAt>{reported_at.isoformat(timespec='seconds')}</i:ReportedAt>"
        "</i:InfoReport>"
    )


def statistics_notice(*, number: str, title: str, paragraphs: list[str], dated: datetime) -> str:
    """A document.official body, 通知, asking the provincial departments for statistics (统计通知)."""
    paras = "".join(f"<d:Paragraph>{escape(p)}</d:Paragraph>" for p in paragraphs)
    return (
        '<d:OfficialDocument xmlns:d="urn:forestry-hub:document.official:1">'
        "<d:Kind>通知</d:Kind>"
        "<d:IssuerMark>国家林业和草原局文件</d:IssuerMark>"
        f"<d:DocumentNumber>{escape(number)}</d:DocumentNumber>"
        f"<d:Title>{escape(title)}</d:Title>"
        "<d:MainRecipients><d:Recipient><d:Name>各省、自治区、直辖市林业和草原主管部门</d:Name></d:Recipient>"
        "</d:MainRecipients>"
        f"<d:MainText>{paras}</d:MainText>"
        f"<d:IssuingAgencies><d:Agency><d:Name>国家林业和草原局</d:Name><d:AgencyCode>{NATION}</d:AgencyCode>"
        "</d:Agency></d:IssuingAgencies>"
        f"<d:DocumentDate>{dated.date().isoformat()}</d:DocumentDate>"
        "</d:OfficialDocument>"
    )
