"""Typed messages (adapters.sdk.messages): generated from the XSDs, exact on every valid sample, validated by the
hub's own registry, documented in Chinese, and never drifting from the schemas."""

from __future__ import annotations

import dataclasses
import datetime
import filecmp
import typing
from pathlib import Path

import pytest
from lxml import etree

from adapters.sdk import _codegen
from adapters.sdk._errors import MessageInvalid, SdkError
from adapters.sdk._message import Message, Part
from adapters.sdk.messages import (
    ALL,
    ApprovalApplication,
    ApprovalApplicationV1,
    DeliveryRefusal,
    DeliveryRefusalV1,
    DocumentReceipt,
    message_class,
    message_from_element,
)
from adapters.sdk.messages.approval_application_v1 import Applicant
from hub.envelope import ENV_NS, parse
from hub.settings import PROJECT_ROOT
from hub.validation import SchemaRegistry

SERVICES = PROJECT_ROOT / "schemas" / "services"
VALID = sorted(SERVICES.glob("*/*/samples/valid/*.xml"))


def _id(p: Path) -> str:
    return f"{p.parts[-5]}/{p.parts[-4]}/{p.name}"


def _body(path: Path) -> tuple[type[Message], etree._Element]:
    root = parse(path.read_bytes())
    svc = root.find(f"{{{ENV_NS}}}Header/{{{ENV_NS}}}Service")
    assert svc is not None
    body = root.find(f"{{{ENV_NS}}}Body")
    assert body is not None
    return message_class(svc.get("name") or "", int(svc.get("version") or 0)), body[0]


def _c14n(el: etree._Element) -> bytes:
    return etree.tostring(el, method="c14n", exclusive=True)


def _without_indentation(el: etree._Element) -> etree._Element:
    """A copy without whitespace-only text between elements (the samples are indented; values are kept)."""
    copy = etree.fromstring(etree.tostring(el))
    for e in copy.iter():
        if len(e) and e.text is not None and not e.text.strip():
            e.text = None
        if e.tail is not None and not e.tail.strip():
            e.tail = None
    return copy


def _sample_message(cls: type[Message]) -> Message:
    for path in VALID:
        sample_cls, body = _body(path)
        if sample_cls is cls:
            return cls.from_element(body)
    raise AssertionError(f"no valid sample for {cls.SERVICE}/{cls.VERSION}")


# ------------------------------------------------------------------------------------------ the samples


@pytest.mark.parametrize("path", VALID, ids=_id)
def test_valid_sample_round_trips_exactly(path: Path) -> None:
    cls, body = _body(path)
    msg = cls.from_element(body)
    assert isinstance(msg, cls)
    assert _c14n(msg.to_element(prefix=body.prefix)) == _c14n(_without_indentation(body))
    # The default form (no prefix) is the same XML: same names, same values.
    again = cls.from_element(msg.to_element())
    assert again == msg


@pytest.mark.parametrize("path", VALID, ids=_id)
def test_valid_sample_validates(path: Path) -> None:
    cls, body = _body(path)
    cls.from_element(body).validate()
    assert type(message_from_element(body)) is cls


def test_every_service_version_has_a_class(registry: SchemaRegistry) -> None:
    known = {(s.name, s.version) for s in registry.all()}
    assert {(c.SERVICE, c.VERSION) for c in ALL} == known
    for s in registry.all():
        cls = message_class(s.name, s.version)
        assert cls.NAMESPACE == s.namespace
        assert cls.ELEMENT == s.body_element
        doc = "".join((cls.__doc__ or "").split())  # the docstring is wrapped
        assert "".join(s.doc_zh.split()) in doc
        assert "".join(s.doc_en.split()) in doc
    assert ApprovalApplication is ApprovalApplicationV1


def test_unknown_service_and_version_are_refused_with_the_hubs_codes() -> None:
    with pytest.raises(MessageInvalid) as info:
        message_class("document.unknown", 1)
    assert info.value.code == "SCHEMA_UNKNOWN_SERVICE"
    with pytest.raises(MessageInvalid) as info:
        message_class("document.official", 9)
    assert info.value.code == "SCHEMA_UNKNOWN_VERSION"
    assert isinstance(info.value, SdkError)


def test_a_body_of_another_service_is_refused() -> None:
    receipt = _sample_message(DocumentReceipt)
    with pytest.raises(MessageInvalid) as info:
        ApprovalApplicationV1.from_element(receipt.to_element())
    assert info.value.code == "SCHEMA_BODY_MISMATCH"


# ------------------------------------------------------------------------------------------ validation


def test_too_long_string_is_schema_value() -> None:
    msg = _sample_message(ApprovalApplicationV1)
    assert isinstance(msg, ApprovalApplicationV1)
    broken = dataclasses.replace(msg, item_name="林" * 201)  # env:ShortText: 1 to 200 characters
    with pytest.raises(MessageInvalid) as info:
        broken.validate()
    assert info.value.code == "SCHEMA_VALUE"
    assert "ItemName" in info.value.detail
    assert info.value.violations


def test_bad_enumeration_is_schema_value() -> None:
    msg = _sample_message(ApprovalApplicationV1)
    assert isinstance(msg, ApprovalApplicationV1)
    applicant = dataclasses.replace(msg.applicant, kind="company")  # type: ignore[arg-type]
    with pytest.raises(MessageInvalid) as info:
        dataclasses.replace(msg, applicant=applicant).validate()
    assert info.value.code == "SCHEMA_VALUE"


def test_both_alternatives_of_a_choice_is_schema_element() -> None:
    msg = _sample_message(ApprovalApplicationV1)
    assert isinstance(msg, ApprovalApplicationV1)
    applicant = dataclasses.replace(msg.applicant, identity_number="22010119800101001X")
    with pytest.raises(MessageInvalid) as info:
        dataclasses.replace(msg, applicant=applicant).validate()
    assert info.value.code == "SCHEMA_ELEMENT"


def test_wrong_check_character_is_schema_agency_code() -> None:
    msg = _sample_message(ApprovalApplicationV1)
    assert isinstance(msg, ApprovalApplicationV1)
    agency = dataclasses.replace(msg.accepting_agency, agency_code="11220100013544550A")
    with pytest.raises(MessageInvalid) as info:
        dataclasses.replace(msg, accepting_agency=agency).validate()
    assert info.value.code == "SCHEMA_AGENCY_CODE"


@pytest.mark.parametrize("char", ["\x0b", "\x00", "\ufffe", "\ud800"])
def test_a_character_xml_cannot_carry_is_message_invalid_naming_the_field(char: str) -> None:
    """Word's manual line break (U+000B), pasted with the text, and the like: lxml refuses them with a plain
    ValueError; the SDK says which field, with its stable code, Chinese first."""
    msg = _sample_message(ApprovalApplicationV1)
    assert isinstance(msg, ApprovalApplicationV1)
    applicant = dataclasses.replace(msg.applicant, name=f"林业{char}合作社")
    for broken, where in (
        (dataclasses.replace(msg, summary=f"第一行{char}第二行"), "ApprovalApplication/Summary"),
        (dataclasses.replace(msg, applicant=applicant), "ApprovalApplication/Applicant/Name"),
    ):
        for call in (broken.to_element, broken.validate):
            with pytest.raises(MessageInvalid) as info:
                call()
            assert info.value.code == "SDK_INVALID_FIELD" and info.value.path == where
            assert where in info.value.detail and f"U+{ord(char):04X}" in info.value.detail
            assert "\u4e00" <= info.value.detail[0] <= "\u9fff", info.value.detail  # Chinese, then English


def test_naive_timestamp_is_refused() -> None:
    msg = _sample_message(ApprovalApplicationV1)
    assert isinstance(msg, ApprovalApplicationV1)
    with pytest.raises(MessageInvalid) as info:
        dataclasses.replace(msg, submitted_at=datetime.datetime(2026, 11, 20, 14, 22)).validate()
    assert info.value.code == "SCHEMA_VALUE"


def test_a_message_built_in_python_validates_and_round_trips() -> None:
    msg = _sample_message(ApprovalApplicationV1)
    assert isinstance(msg, ApprovalApplicationV1)
    person = Applicant(
        kind="natural-person",
        name="张三",
        identity_number="22010119800101001X",
        contact=msg.applicant.contact,
    )
    built = dataclasses.replace(
        msg,
        applicant=person,
        summary=None,
        location=None,
        submitted_at=datetime.datetime(2026, 11, 20, 14, 22, 5, 120000, tzinfo=datetime.UTC),
    )
    built.validate()
    el = built.to_element()
    assert el.nsmap == {None: "urn:forestry-hub:approval.application:1"}
    assert el.findtext("{urn:forestry-hub:approval.application:1}SubmittedAt") == "2026-11-20T14:22:05.120+00:00"
    assert ApprovalApplicationV1.from_element(el) == built


# ------------------------------------------------------------------------------------------ documentation


def _parts(cls: type[Part]) -> set[type[Part]]:
    found = {cls}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        part = f.metadata.get("part")
        if part is not None:
            found |= _parts(part)
    return found


@pytest.mark.parametrize("cls", ALL, ids=lambda c: f"{c.SERVICE}/{c.VERSION}")
def test_every_field_carries_chinese_and_english_documentation(cls: type[Message]) -> None:
    hints_checked = 0
    for part in _parts(cls):
        assert part.__doc__ and part.__doc__.strip(), part
        hints = typing.get_type_hints(part)
        for f in dataclasses.fields(part):  # type: ignore[arg-type]
            assert f.metadata["doc"], f"{part.__name__}.{f.name} has no Chinese documentation"
            assert any("\u4e00" <= ch <= "\u9fff" for ch in f.metadata["doc"]), f"{part.__name__}.{f.name}"
            assert f.metadata["doc_en"], f"{part.__name__}.{f.name} has no English documentation"
            assert f.name in hints
            hints_checked += 1
    assert hints_checked


# ------------------------------------------------------------------------------------------ drift


def test_generated_modules_match_the_schemas(tmp_path: Path) -> None:
    """Regenerating from schemas/ gives the committed files byte for byte: run `python -m adapters.sdk._codegen`
    after changing an XSD."""
    _codegen.generate(tmp_path)
    committed = Path(_codegen.__file__).parent / "messages"
    names = sorted(p.name for p in tmp_path.glob("*.py"))
    assert names == sorted(p.name for p in committed.glob("*.py"))
    _match, mismatch, errors = filecmp.cmpfiles(tmp_path, committed, names, shallow=False)
    assert not mismatch and not errors, (
        f"stale generated files: {mismatch + errors}; run python -m adapters.sdk._codegen"
    )


# ------------------------------------------------------------------------------------------ delivery.refusal


def _refusal(**changes: object) -> DeliveryRefusalV1:
    values: dict[str, object] = {
        "original_message_id": "c314d7a4-1d94-5074-be1e-8bf63dc42080",
        "received_digest": "b191f2858bbafc7fe62f18fc3fe07704819530cc7883592199ea7245817f6cfd",
        "code": "CASE_UNKNOWN",
        "reason": "本系统中没有该审批案件。",
        "refused_at": datetime.datetime(2026, 11, 19, 9, 31, 10, tzinfo=datetime.timezone(datetime.timedelta(hours=8))),
    }
    values.update(changes)
    return DeliveryRefusalV1(**values)  # type: ignore[arg-type]


def test_a_refusal_built_by_hand_validates() -> None:
    refusal = _refusal()
    refusal.validate()
    assert message_class("delivery.refusal", 1) is DeliveryRefusalV1 is DeliveryRefusal
    el = refusal.to_element()
    assert el.tag == "{urn:forestry-hub:delivery.refusal:1}DeliveryRefusal"
    assert [etree.QName(c).localname for c in el] == [
        "OriginalMessageId",
        "ReceivedDigest",
        "Code",
        "Reason",
        "RefusedAt",
    ]
    assert el.findtext("{urn:forestry-hub:delivery.refusal:1}RefusedAt") == "2026-11-19T09:31:10+08:00"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"code": "case_unknown"}, "SCHEMA_VALUE"),
        ({"code": "C" * 65}, "SCHEMA_VALUE"),
        ({"reason": "长" * 1001}, "SCHEMA_VALUE"),
        ({"reason": ""}, "SCHEMA_VALUE"),
        ({"received_digest": "AB" * 32}, "SCHEMA_VALUE"),
        ({"original_message_id": None}, "SCHEMA_ELEMENT"),
    ],
    ids=["lower-case-code", "code-too-long", "reason-too-long", "empty-reason", "upper-case-digest", "missing-id"],
)
def test_a_broken_refusal_is_refused_with_a_specific_code(changes: dict[str, object], code: str) -> None:
    with pytest.raises(MessageInvalid) as info:
        _refusal(**changes).validate()
    assert info.value.code == code
