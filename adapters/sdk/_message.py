"""Typed messages: the base classes of the dataclasses generated into ``adapters.sdk.messages``.

A generated class is a keyword-only dataclass whose fields are the child elements of its XSD type, in schema order.
Each field's metadata says how it maps to XML (``xml``: the element's local name, ``kind``: the value codec,
``many``: a repeated element, ``part``: the class of a complex child) and carries the XSD's documentation (``doc``
in Chinese, ``doc_en`` in English). ``Part`` reads and writes that content; ``Message`` is a part that is the body
of a service version: it knows its service, version and namespace, and validates itself against the very XSD the
hub uses (``hub.validation.SchemaRegistry`` over ``schemas/``, compiled once per process).

Values: xs:string → str, integers → int, xs:decimal → Decimal, xs:boolean → bool, xs:date → datetime.date,
xs:dateTime → timezone-aware datetime.datetime (written with seconds, and milliseconds or microseconds when
present), xs:base64Binary → bytes. ``to_element`` writes what it is given without checking it, save a value XML
cannot carry at all (a control character such as Word's U+000B: ``MessageInvalid`` ``SDK_INVALID_FIELD``, naming the
field); ``validate`` is the check (a missing required field, a naive datetime or a too-long string are XSD
violations, reported with the hub's code).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import functools
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, NamedTuple, Self

from lxml import etree

from adapters.sdk._errors import MessageInvalid
from hub.envelope import Party, Recipient, build
from hub.envelope.xsdvalue import xsd_date, xsd_datetime, xsd_integer
from hub.settings import PROJECT_ROOT
from hub.validation import SchemaRegistry

__all__ = ["Message", "Part", "not_xml_text", "schema_registry"]

#: The sender and recipient of the throw-away envelope a message is validated in (a valid GB 32100 code).
_PROBE_AGENCY = "11220000013544357T"
_PROBE_SYSTEM = "sdk-validate"


#: What XML 1.0 admits in text (its ``Char`` production); anything else cannot be written, let alone sent.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def not_xml_text(where: str, text: str) -> MessageInvalid:
    """``MessageInvalid`` (``SDK_INVALID_FIELD``) for a value XML cannot carry: a control character such as U+000B
    (Word's manual line break, pasted with the text), U+0000, or a lone surrogate. Names the field and the character,
    never the value."""
    found = _NOT_XML_CHAR.search(text)
    char = f"U+{ord(found.group()):04X}" if found else "a character"
    return MessageInvalid(
        f"字段 {where} 含有 XML 不允许的字符 {char}（如从 Word 粘贴的手动换行符），报文无法生成 — "
        f"field {where} holds {char}, a character XML does not allow (e.g. Word's manual line break pasted with "
        "the text); the message cannot be built",
        code="SDK_INVALID_FIELD",
        path=where,
    )


def _path_of(el: etree._Element) -> str:
    names = [etree.QName(el).localname]
    names += [etree.QName(a).localname for a in el.iterancestors()]
    return "/".join(reversed(names))


class _Spec(NamedTuple):
    name: str
    tag: str
    kind: str
    many: bool
    part: type[Part] | None


def _datetime_text(value: datetime.datetime) -> str:
    if value.microsecond == 0:
        spec = "seconds"
    elif value.microsecond % 1000 == 0:
        spec = "milliseconds"
    else:
        spec = "microseconds"
    return value.isoformat(timespec=spec)


def _decimal_text(value: Decimal | int | float) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _bool_value(text: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"{text!r} is not a boolean")


_WRITE: dict[str, Callable[[Any], str]] = {
    "str": str,
    "int": str,
    "decimal": _decimal_text,
    "bool": lambda v: "true" if v else "false",
    "date": lambda v: v.isoformat(),
    "datetime": _datetime_text,
    "bytes": lambda v: base64.b64encode(v).decode("ascii"),
}
_READ: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": xsd_integer,  # leading zeros and all
    "decimal": lambda t: Decimal(t.strip()),
    "bool": lambda t: _bool_value(t.strip()),
    "date": xsd_date,  # what a schema admits, 24:00:00 and a date with its timezone too (hub.envelope.xsdvalue)
    "datetime": xsd_datetime,
    "bytes": lambda t: base64.b64decode("".join(t.split()), validate=True),
}


class Part:
    """Complex XML content as a dataclass: each field one child element (or a list of them), in schema order."""

    _SPECS: ClassVar[tuple[_Spec, ...]]
    _BY_TAG: ClassVar[tuple[str, dict[str, _Spec]]]

    @classmethod
    def _specs(cls) -> tuple[_Spec, ...]:
        specs = cls.__dict__.get("_SPECS")
        if specs is None:
            specs = tuple(
                _Spec(f.name, m["xml"], m["kind"], m.get("many", False), m.get("part"))
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                for m in (f.metadata,)
            )
            cls._SPECS = specs
        return specs

    def _write(self, parent: etree._Element, ns: str) -> None:
        for spec in self._specs():
            value = getattr(self, spec.name)
            if value is None:
                continue
            tag = f"{{{ns}}}{spec.tag}"
            for item in value if spec.many else (value,):
                child = etree.SubElement(parent, tag)
                if spec.part is not None:
                    item._write(child, ns)
                    continue
                text = _WRITE[spec.kind](item)
                try:
                    child.text = text
                except ValueError:  # lxml: "All strings must be XML compatible" (a control character, a NUL …)
                    raise not_xml_text(_path_of(child), text) from None

    @classmethod
    def _read(cls, el: etree._Element, ns: str) -> Self:
        specs = cls._specs()
        cached = cls.__dict__.get("_BY_TAG")
        if cached is None or cached[0] != ns:  # built once per class (a namespace per service version)
            cached = cls._BY_TAG = (ns, {f"{{{ns}}}{s.tag}": s for s in specs})
        by_tag = cached[1]
        values: dict[str, Any] = {s.name: [] for s in specs if s.many}
        for child in el:
            if not isinstance(child.tag, str):
                continue  # comments and processing instructions carry no content
            spec = by_tag.get(child.tag)
            if spec is None:
                raise MessageInvalid(
                    f"line {child.sourceline}: unexpected element {child.tag} in {el.tag}", code="SCHEMA_ELEMENT"
                )
            if spec.part is not None:
                value: Any = spec.part._read(child, ns)
            else:
                try:
                    value = _READ[spec.kind](child.text or "")
                except (ValueError, InvalidOperation, TypeError) as exc:
                    raise MessageInvalid(
                        f"line {child.sourceline}: {child.tag} is not a valid {spec.kind}: {exc}", code="SCHEMA_VALUE"
                    ) from None
            if spec.many:
                values[spec.name].append(value)
            elif spec.name in values:
                raise MessageInvalid(f"line {child.sourceline}: {child.tag} occurs twice", code="SCHEMA_ELEMENT")
            else:
                values[spec.name] = value
        try:
            return cls(**values)
        except TypeError as exc:  # a required child is missing
            raise MessageInvalid(f"{el.tag}: {exc}", code="SCHEMA_ELEMENT") from None


class Message(Part):
    """The body of one service version: ``to_element`` / ``from_element`` and ``validate`` against the hub's XSD."""

    #: The service name, e.g. ``document.official``.
    SERVICE: ClassVar[str]
    #: The service version.
    VERSION: ClassVar[int]
    #: The body's namespace, ``urn:forestry-hub:<service>:<version>``.
    NAMESPACE: ClassVar[str]
    #: The body element's local name, e.g. ``OfficialDocument``.
    ELEMENT: ClassVar[str]

    def to_element(self, *, prefix: str | None = None) -> etree._Element:
        """The body's root element, namespaced, children in schema order (no validation: see ``validate``).

        ``prefix``: the namespace prefix to write (default: the body's namespace is the default namespace)."""
        root = etree.Element(f"{{{self.NAMESPACE}}}{self.ELEMENT}", nsmap={prefix: self.NAMESPACE})
        self._write(root, self.NAMESPACE)
        return root

    @classmethod
    def from_element(cls, el: etree._Element) -> Self:
        """Read a body element (normally one the hub or ``validate`` has validated); raises ``MessageInvalid`` when
        the element is not this message or a value cannot be read."""
        expected = f"{{{cls.NAMESPACE}}}{cls.ELEMENT}"
        if el.tag != expected:
            raise MessageInvalid(f"expected {expected}, got {el.tag}", code="SCHEMA_BODY_MISMATCH")
        return cls._read(el, cls.NAMESPACE)

    def validate(self) -> None:
        """Check the message against the hub's XSD for its service and version (and the agency codes' check
        characters, as the hub does); raises ``MessageInvalid`` with the hub's code for the first problem."""
        root = build(
            service=self.SERVICE,
            version=self.VERSION,
            sender=Party(_PROBE_AGENCY, _PROBE_SYSTEM),
            recipients=[Recipient.to(_PROBE_AGENCY, _PROBE_SYSTEM)],
            body=self.to_element(),
        )
        found = schema_registry().violations(root)
        if found:
            first = found[0]
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            detail = f"{self.SERVICE}/{self.VERSION}: {first.message}{more}"
            raise MessageInvalid(detail, code=first.code, violations=found)


@functools.cache
def schema_registry() -> SchemaRegistry:
    """The hub's schema registry over the project's ``schemas/`` directory, compiled once per process."""
    return SchemaRegistry(PROJECT_ROOT / "schemas")
