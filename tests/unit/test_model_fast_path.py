"""Envelope.from_header stores the fields through the slots: the result is the same frozen Envelope the
dataclass constructor makes, field by field, for every valid sample."""

from __future__ import annotations

import dataclasses

import pytest

from hub.envelope import parse
from hub.envelope.model import ENVELOPE_FIELDS, Envelope, Party, Recipient, qn
from hub.settings import PROJECT_ROOT

SAMPLES = sorted(PROJECT_ROOT.glob("schemas/services/*/1/samples/valid/*.xml"))


def test_the_field_order_is_the_dataclass_order() -> None:
    assert tuple(f.name for f in dataclasses.fields(Envelope)) == ENVELOPE_FIELDS


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: f"{p.parts[-5]}/{p.name}")
def test_from_header_equals_the_constructor(path) -> None:  # type: ignore[no-untyped-def]
    root = parse(path.read_bytes())
    env = Envelope.from_tree(root)
    again = dataclasses.replace(env)  # through the generated __init__
    for name in ENVELOPE_FIELDS:
        assert getattr(env, name) is getattr(again, name) or getattr(env, name) == getattr(again, name), name
    assert env == again
    header = root[0]
    assert env.message_id == header[0].text and env.conversation_id == header[1].text
    assert env.root is root and (env.body is None or env.body.getparent() is root[1])
    # the tuples are made with tuple.__new__: still the named types, fields in place
    assert type(env.sender) is Party and env.sender == Party(header.find(qn("Sender")).get("agency"), env.sender.system)
    for r, el in zip(env.recipients, header.find(qn("Recipients")), strict=True):
        assert type(r) is Recipient and r.role == el.get("role")
        if el.tag == qn("Group"):
            assert (r.agency, r.system, r.group) == (None, None, el.get("name"))
        else:
            assert (r.agency, r.system, r.group) == (el.get("code"), el.get("system"), None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.message_id = "x"  # type: ignore[misc]


def test_a_timestamp_with_the_spaces_xsd_collapses_reads_as_its_value(registry) -> None:  # type: ignore[no-untyped-def]
    """xs:dateTime collapses whitespace: the schema admits ``<Expires>2026-…+08:00 </Expires>`` and the model reads the
    value without the space (it raised ValueError, refused as INTERNAL, found by tests/hostile/test_mutations.py)."""
    data = (PROJECT_ROOT / "schemas/services/document.official/1/samples/valid/typical-notice.xml").read_bytes()
    root = parse(data)
    plain = Envelope.from_tree(root)
    expires = root[0].find(qn("Expires"))
    assert expires is not None and expires.text is not None
    expires.text = f" {expires.text} "
    registry.validate(root)  # the schema admits it
    assert Envelope.from_tree(root).expires == plain.expires
