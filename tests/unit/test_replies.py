"""The hub.receipt written directly in canonical form (hub.pipeline.replies) is exactly what lxml's exclusive C14N
makes of the same envelope built with hub.envelope.build, validates against the schemas, and its pre-cut signature
verifies with the hub's verifier; the digest-reusing delivery signature verifies too."""

from __future__ import annotations

import copy
import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree
from trust_fixtures import TestPki, session_pki, xmlsec1_verify

from hub.envelope import Party, Recipient, build, parse, to_bytes
from hub.errors import SignatureInvalid
from hub.pipeline.replies import canonical_receipt, signed_document
from hub.trust.signature import c14n

CN = timezone(timedelta(hours=8))
NS = "urn:forestry-hub:hub.receipt:1"
HUB = Party("11220000013544357T", "hub")
TO = Party("11220122013550216R", "county-220122-oa")


@pytest.fixture(scope="module")
def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return session_pki(tmp_path_factory)


def _reference(values: dict, recipients: list[tuple[str, str, str]], first: datetime | None) -> bytes:
    q = f"{{{NS}}}"
    S = etree.SubElement
    body = etree.Element(q + "HubReceipt", nsmap={None: NS})
    S(body, q + "OriginalMessageId").text = values["ref_to"]
    S(body, q + "ReceivedDigest").text = values["request_hash"]
    S(body, q + "Outcome").text = values["outcome"]
    S(body, q + "ReceivedAt").text = values["received_at"].isoformat(timespec="seconds")
    if first is not None:
        S(body, q + "FirstReceivedAt").text = first.isoformat(timespec="seconds")
    rs = S(body, q + "Recipients")
    for agency, system, role in recipients:
        r = S(rs, q + "Recipient")
        S(r, q + "AgencyCode").text = agency
        S(r, q + "System").text = system
        S(r, q + "Role").text = role
    root = build(
        service="hub.receipt",
        sender=HUB,
        recipients=[Recipient.to(TO.agency, TO.system)],
        body=body,
        urgency=values["urgency"],
        created=values["created"],
        expires=values["expires"],
        message_id=values["message_id"],
        conversation_id=values["conversation_id"],
        ref_to=values["ref_to"],
        request_hash=values["request_hash"],
    )
    return c14n(root)


@pytest.mark.parametrize(
    ("outcome", "recipients", "first"),
    [
        (
            "accepted",
            [("11220182013552847D", "county-220182-oa", "to"), ("11220183013553609R", "county-220183-oa", "cc")],
            None,
        ),
        ("duplicate", [], datetime(2026, 11, 1, 8, 0, tzinfo=CN)),
        ("quarantined", [("11220100013544550M", "city-220100-oa", "to")], None),
    ],
)
def test_canonical_receipt_matches_lxml_and_verifies(
    tpki: TestPki,
    registry,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    outcome: str,
    recipients: list,
    first: datetime | None,
) -> None:
    now = datetime(2026, 11, 28, 9, 30, 5, tzinfo=CN)
    values = dict(
        message_id=str(uuid.uuid4()),
        conversation_id=str(uuid.uuid4()),
        ref_to=str(uuid.uuid4()),
        request_hash=hashlib.sha256(b"x").hexdigest(),
        created=now,
        expires=now + timedelta(days=30),
        urgency="特急",
        outcome=outcome,
        received_at=now - timedelta(seconds=1),
    )
    canonical = canonical_receipt(sender=HUB, to=TO, recipients=recipients, first_received_at=first, **values)
    assert canonical == _reference(values, recipients, first)
    signer = tpki.agents["p256"].signer
    data = signed_document(canonical, signer.signature_for_canonical(canonical))
    root = parse(data)
    env = registry.validate(root)
    assert (env.service, env.ref_to, env.sender) == ("hub.receipt", values["ref_to"], HUB)
    verified = tpki.verifier().verify(root)
    assert verified.digest == hashlib.sha256(canonical).hexdigest()
    ok, out = xmlsec1_verify(tpki, data, tmp_path)  # and the reference C implementation agrees
    assert ok, out
    # one changed byte in the signed part breaks it
    tampered = data.replace(outcome.encode(), b"rejected" if outcome != "rejected" else b"accepted", 1)
    with pytest.raises(SignatureInvalid) as info:
        tpki.verifier().verify(parse(tampered))
    assert info.value.code == "SIG_DIGEST"


def test_canonical_text_and_attribute_escaping_matches_c14n() -> None:
    from hub.pipeline.replies import _attr, _text

    nasty = 'a&b<c>d"e\tf\ng\rh 中'
    el = etree.Element("x", v=nasty)
    el.text = nasty
    assert c14n(el) == f'<x v="{_attr(nasty)}">{_text(nasty)}</x>'.encode()


def test_delivery_signature_with_the_verifiers_digest_verifies(tpki: TestPki) -> None:
    data = tpki.signed("p256")
    verified = tpki.verifier().verify(parse(data))
    hub = tpki.agents["p384"].signer
    root = copy.deepcopy(verified.root)
    hub.sign_digest(root, bytes.fromhex(verified.digest))
    again = tpki.verifier().verify(parse(to_bytes(root)))
    assert again.digest == verified.digest
    assert again.signer.fingerprint == hub.identity.fingerprint
