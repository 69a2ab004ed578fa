"""The typed envelope: read from a validated (and, in the hub, verified) tree, or built by a sender.

``Envelope.from_tree`` expects a tree that passed schema validation; it does no checking of its own beyond
what typing needs. Build envelopes with ``build()``: it produces an unsigned tree that validates against
``schemas/envelope/1`` when the body is valid for its service.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Literal, NamedTuple

from lxml import etree

from hub.envelope.xsdvalue import xsd_datetime, xsd_integer
from hub.errors import SchemaViolation

__all__ = [
    "CLASSIFICATIONS",
    "DS_NS",
    "ENV_NS",
    "ERROR_NS",
    "ERROR_SERVICE",
    "NOTICE_NS",
    "NOTICE_SERVICE",
    "RECEIPT_NS",
    "RECEIPT_SERVICE",
    "URGENCIES",
    "Envelope",
    "Party",
    "Recipient",
    "build",
    "qn",
    "service_namespace",
    "to_bytes",
]

ENV_NS = "urn:forestry-hub:envelope:1"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"

#: 密级 in ascending order; the index is the level used by the classification gate.
CLASSIFICATIONS: tuple[str, ...] = ("公开", "内部", "秘密", "机密", "绝密")
#: 紧急程度 in descending priority.
URGENCIES: tuple[str, ...] = ("特急", "加急", "平件")

CLASSIFICATION_EN = {
    "公开": "public",
    "内部": "internal",
    "秘密": "confidential",
    "机密": "secret",
    "绝密": "top secret",
}
URGENCY_EN = {"特急": "flash", "加急": "urgent", "平件": "normal"}


def qn(local: str) -> str:
    """Clark name of an envelope element."""
    return f"{{{ENV_NS}}}{local}"


def service_namespace(name: str, version: int | str) -> str:
    """The body namespace of a service version, e.g. ``urn:forestry-hub:document.official:1``."""
    return f"urn:forestry-hub:{name}:{version}"


#: The hub's own replies, which only the hub sends: their services and body namespaces, spelled once.
RECEIPT_SERVICE = "hub.receipt"
ERROR_SERVICE = "hub.error"
RECEIPT_NS = service_namespace(RECEIPT_SERVICE, 1)
ERROR_NS = service_namespace(ERROR_SERVICE, 1)
#: The hub's process notices (hub/processes: reminders, overdue reports, escalations), also sent only by the hub.
NOTICE_SERVICE = "hub.notice"
NOTICE_NS = service_namespace(NOTICE_SERVICE, 1)


class Party(NamedTuple):
    """A sending or receiving system: agency code and system id. (Tuples: the hot path builds one per message.)"""

    agency: str
    system: str

    def __str__(self) -> str:
        return f"{self.agency}/{self.system}"


class Recipient(NamedTuple):
    """One addressee: an agency (optionally one of its systems) or a group; role ``to`` (主送) or ``cc`` (抄送).

    Make them with ``to``/``cc``/``to_group``/``cc_group``; ``check()`` tells a malformed one (``build`` calls it).
    Recipients read from a validated envelope are well-formed by the schema."""

    role: Literal["to", "cc"]
    agency: str | None = None
    system: str | None = None
    group: str | None = None

    def check(self) -> Recipient:
        if self.role not in ("to", "cc"):
            raise ValueError(f"a recipient's role is to or cc, not {self.role!r}")
        if (self.agency is None) is (self.group is None):
            raise ValueError("a recipient is either an agency or a group")
        if self.group is not None and self.system is not None:
            raise ValueError("a group recipient has no system")
        return self

    @classmethod
    def to(cls, agency: str, system: str | None = None) -> Recipient:
        return cls("to", agency, system)

    @classmethod
    def cc(cls, agency: str, system: str | None = None) -> Recipient:
        return cls("cc", agency, system)

    @classmethod
    def to_group(cls, name: str) -> Recipient:
        return cls("to", group=name)

    @classmethod
    def cc_group(cls, name: str) -> Recipient:
        return cls("cc", group=name)

    def __str__(self) -> str:
        target = (
            self.group
            if self.group is not None
            else (self.agency if self.system is None else f"{self.agency}/{self.system}")
        )
        return f"{self.role}:{target}"


def _ts(el: etree._Element, name: str) -> datetime:
    text = el.text
    assert text is not None
    # XSD guarantees a timezone. xsd_datetime: fromisoformat first (the schema's collapsed whitespace stripped), then
    # 24:00:00; a value whose instant Python cannot hold is the sender's SCHEMA_VALUE.
    try:
        return xsd_datetime(text)
    except ValueError as exc:
        raise SchemaViolation(
            f"{name}: {exc}", code="SCHEMA_VALUE", line=el.sourceline, path=f"/env:Envelope/env:Header/env:{name}"
        ) from None


@dataclass(frozen=True, slots=True)
class Envelope:
    message_id: str
    conversation_id: str
    sender: Party
    recipients: tuple[Recipient, ...]
    service: str
    version: int
    created: datetime
    expires: datetime
    urgency: str
    classification: str
    period: str | None = None
    ref_to: str | None = None
    request_hash: str | None = None
    business_ref: str | None = None
    #: The body's single child element (in the service namespace).
    body: etree._Element | None = field(default=None, compare=False, repr=False)
    #: The envelope root this model was read from.
    root: etree._Element | None = field(default=None, compare=False, repr=False)

    @property
    def service_id(self) -> str:
        """``name/version``, e.g. ``document.official/1``."""
        return f"{self.service}/{self.version}"

    @property
    def level(self) -> int:
        """Classification level: 0 公开 … 4 绝密."""
        return CLASSIFICATIONS.index(self.classification)

    @classmethod
    def from_tree(cls, root: etree._Element) -> Envelope:
        """Read the model from a schema-valid envelope tree."""
        if root.tag != _T_ENVELOPE or len(root) < 2:
            raise SchemaViolation(f"the root element is {root.tag!r}, not an envelope", code="SCHEMA_ELEMENT")
        return cls.from_header(root, list(root[0]))

    @classmethod
    def from_header(cls, root: etree._Element, kids: list[etree._Element]) -> Envelope:
        """The hot path: read the model from a schema-valid envelope whose header children are ``kids``.

        The XSD fixes the header's order (MessageId, ConversationId, [RefToMessageId], [RequestHash], Sender,
        Recipients, Service, Created, Expires, Urgency, Classification, [BusinessRef]), so fields are read by
        position: one proxy per element, no searching. lxml creates a Python object for every element touched, so
        touching each once is what makes this cheap (≈10 µs for a typical header)."""
        i = 2
        ref_to = request_hash = None
        tag = kids[i].tag
        if tag == _T_REF_TO:
            ref_to = kids[i].text
            i += 1
            tag = kids[i].tag
        if tag == _T_REQUEST_HASH:
            request_hash = kids[i].text
            i += 1
        sender, recipients_el, svc, created, expires, urgency, cls_el = kids[i : i + 7]
        if cls_el.tag != _T_CLASSIFICATION or svc.tag != _T_SERVICE:
            raise SchemaViolation("the header is not in schema order", code="SCHEMA_ELEMENT")
        business_ref = kids[i + 7].text if len(kids) > i + 7 else None
        # Tuples made with tuple.__new__: a NamedTuple's own __new__ (keyword arguments, defaults) costs twice as much.
        recipients = tuple(
            _tuple(Recipient, (r.get("role"), None, None, r.get("name")))
            if r.tag == _T_GROUP
            else _tuple(Recipient, (r.get("role"), r.get("code"), r.get("system"), None))
            for r in recipients_el
        )
        body_el = root[1]
        get = sender.get
        return cls(
            kids[0].text or "",
            kids[1].text or "",
            _tuple(Party, (get("agency") or "", get("system") or "")),
            recipients,
            svc.get("name") or "",
            xsd_integer(svc.get("version") or "0"),
            _ts(created, "Created"),
            _ts(expires, "Expires"),
            urgency.text or "",
            cls_el.text or "",
            cls_el.get("period"),
            ref_to,
            request_hash,
            business_ref,
            body_el[0] if len(body_el) else None,
            root,
        )


#: Envelope's fields in declaration order (from_header's arguments follow it; test_model checks the two agree).
ENVELOPE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Envelope))
_tuple = tuple.__new__


_T_ENVELOPE = qn("Envelope")
_T_RECIPIENTS = qn("Recipients")
_T_GROUP = qn("Group")
_T_SENDER = qn("Sender")
_T_SERVICE = qn("Service")
_T_CLASSIFICATION = qn("Classification")
_T_MESSAGE_ID = qn("MessageId")
_T_CONVERSATION_ID = qn("ConversationId")
_T_REF_TO = qn("RefToMessageId")
_T_REQUEST_HASH = qn("RequestHash")
_T_CREATED = qn("Created")
_T_EXPIRES = qn("Expires")
_T_URGENCY = qn("Urgency")
_T_BUSINESS_REF = qn("BusinessRef")


def _iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return dt.isoformat(timespec="seconds")


def build(
    *,
    service: str,
    version: int = 1,
    sender: Party,
    recipients: Iterable[Recipient],
    body: etree._Element,
    classification: str = "公开",
    period: str | None = None,
    urgency: str = "平件",
    ttl: timedelta = timedelta(days=7),
    created: datetime | None = None,
    expires: datetime | None = None,
    message_id: str | None = None,
    conversation_id: str | None = None,
    ref_to: str | None = None,
    request_hash: str | None = None,
    business_ref: str | None = None,
) -> etree._Element:
    """Build an unsigned envelope tree. ``body`` must be the single body element in the service namespace."""
    if classification not in CLASSIFICATIONS:
        raise ValueError(f"unknown classification {classification!r}; one of {', '.join(CLASSIFICATIONS)}")
    if urgency not in URGENCIES:
        raise ValueError(f"unknown urgency {urgency!r}; one of {', '.join(URGENCIES)}")
    recipients = tuple(r.check() for r in recipients)
    if not recipients:
        raise ValueError("an envelope needs at least one recipient")
    created = created or datetime.now(timezone(timedelta(hours=8)))
    expires = expires or created + ttl
    message_id = message_id or str(uuid.uuid4())

    E = etree.Element
    S = etree.SubElement
    root = E(qn("Envelope"), nsmap={"env": ENV_NS})
    header = S(root, qn("Header"))
    S(header, qn("MessageId")).text = message_id
    S(header, qn("ConversationId")).text = conversation_id or message_id
    if ref_to:
        S(header, qn("RefToMessageId")).text = ref_to
    if request_hash:
        S(header, qn("RequestHash")).text = request_hash
    S(header, qn("Sender"), agency=sender.agency, system=sender.system)
    rs = S(header, qn("Recipients"))
    for r in recipients:
        if r.group is not None:
            S(rs, qn("Group"), role=r.role, name=r.group)
        else:
            attrs = {"role": r.role, "code": r.agency or ""}
            if r.system:
                attrs["system"] = r.system
            S(rs, qn("Agency"), attrs)
    S(header, qn("Service"), name=service, version=str(version))
    S(header, qn("Created")).text = _iso(created)
    S(header, qn("Expires")).text = _iso(expires)
    S(header, qn("Urgency")).text = urgency
    c = S(header, qn("Classification"))
    c.text = classification
    if period:
        c.set("period", period)
    if business_ref:
        S(header, qn("BusinessRef")).text = business_ref
    S(root, qn("Body")).append(body)
    return root


def to_bytes(root: etree._Element) -> bytes:
    """Serialise an envelope as UTF-8 with an XML declaration."""
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)
