"""Values a schema admits in forms the code after it may not expect: every text and attribute value of every valid
sample, rewritten the ways XML Schema allows for its kind of value — surrounding whitespace (collapsed by the
schema), leading zeros and a plus sign on numbers, 24:00:00 in a time, a date with its timezone. Each rewrite is
either refused by the schema with a specific code, or read: the envelope's model, and the SDK's typed message of the
service (what every adapter's handler receives), without an exception. Before hub.envelope.xsdvalue, Created at
24:00:00, a version or an xs:int with thousands of leading zeros raised ValueError after the schema had passed (the
examination's INTERNAL, an adapter's SDK_DECODE)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from adapters.sdk.messages import message_class
from hub.envelope import parse
from hub.errors import HubError
from hub.settings import PROJECT_ROOT
from hub.validation import SchemaRegistry

SERVICES = PROJECT_ROOT / "schemas" / "services"
VALID = sorted(SERVICES.glob("*/*/samples/valid/*.xml"))
GENERIC = {"INTERNAL", "SCHEMA_VIOLATION"}

_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_DATETIME = re.compile(r"(\d{4}-\d{2}-\d{2}T)(\d{2}:\d{2}:\d{2})(.*)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _rewrites(value: str) -> Iterator[str]:
    yield f"  {value}\n"
    if _NUMBER.fullmatch(value):
        sign, digits = ("-", value[1:]) if value.startswith("-") else ("", value)
        yield f"{sign}{'0' * 5000}{digits}"
        if not sign:
            yield f"+{digits}"
    m = _DATETIME.fullmatch(value)
    if m is not None:
        yield f"{m[1]}24:00:00{m[3]}"
    if _DATE.fullmatch(value):
        yield f"{value}+08:00"
        yield f"{value}Z"


def _mutants(data: bytes) -> Iterator[tuple[str, bytes]]:
    root = etree.fromstring(data)
    for el in root.iter():
        if el.tag is etree.Comment or el.tag.endswith("}Signature"):
            continue
        if len(el) == 0 and el.text and el.text.strip():
            for new in _rewrites(el.text):
                old, el.text = el.text, new
                yield f"{etree.QName(el).localname} {new[:40]!r}", etree.tostring(root)
                el.text = old
        for name, value in list(el.attrib.items()):
            for new in _rewrites(value):
                el.set(name, new)
                yield f"{etree.QName(el).localname}/@{name} {new[:40]!r}", etree.tostring(root)
                el.set(name, value)


def _id(p: Path) -> str:
    return f"{p.parts[-5]}/{p.parts[-4]}/{p.name}"


@pytest.mark.parametrize("path", VALID, ids=_id)
def test_every_value_the_schema_admits_is_read(path: Path, registry: SchemaRegistry) -> None:
    cls = message_class(path.parts[-5], int(path.parts[-4]))
    read = refused = 0
    problems: list[str] = []
    for what, data in _mutants(path.read_bytes()):
        try:
            env = registry.validate(parse(data))
        except HubError as exc:
            refused += 1
            if exc.code in GENERIC:
                problems.append(f"{what}: refused as {exc.code}: {exc.detail[:200]}")
            continue
        except Exception as exc:  # the finding: anything but a HubError is the hub failing
            problems.append(f"{what}: {type(exc).__name__} from the registry: {exc}"[:300])
            continue
        read += 1
        try:
            cls.from_element(env.body)
        except Exception as exc:  # as above, for the SDK's typed message
            problems.append(f"{what}: {type(exc).__name__} reading the SDK's {cls.__name__}: {exc}"[:300])
    assert not problems, "\n".join(problems)
    assert read and refused, (read, refused)  # both sides were reached
