"""The hub.receipt written directly in canonical form (hub.pipeline.replies) is exactly what lxml's exclusive C14N
makes of the same envelope built with hub.envelope.build, validates against the schemas, and its pre-cut signature
verifies with the hub's verifier; the delivery (the verified canonical form plus a signature made with the
verifier's digest) verifies too."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree
from trust_fixtures import TestPki, session_pki, xmlsec1_verify

from hub.envelope import Party, Recipient, build, parse, to_bytes
from hub.errors import SignatureInvalid
from hub.pipeline.replies import canonical_receipt, countersigned_document, signed_document
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


@pytest.mark.parametrize("prefix", ["env", "e", None])
def test_the_delivery_is_the_verified_canonical_form_plus_the_hub_signature(
    tpki: TestPki, tmp_path: Path, prefix: str | None
) -> None:
    """The delivery is ``Verified.canonical`` (what the sender's signature covers) with the hub's signature as the
    root's last child, signed with the digest the verifier computed: whatever prefix the sender used for the
    envelope namespace, it verifies (hub verifier and xmlsec1), and without the hub's signature it canonicalises
    to exactly the sender's signed bytes."""
    agency, system = (tpki.agents["p256"].signer.identity.agency, tpki.agents["p256"].signer.identity.system)
    text = to_bytes(tpki.envelope(agency, system))
    if prefix != "env":
        text = text.replace(b"xmlns:env=", b"xmlns=" if prefix is None else b"xmlns:e=")
        text = text.replace(b"<env:", b"<" if prefix is None else b"<e:")
        text = text.replace(b"</env:", b"</" if prefix is None else b"</e:")
        assert b"env:" not in text  # the sender's envelope really uses the other prefix
    data = tpki.signed("p256", root=etree.fromstring(text))
    verified = tpki.verifier().verify(parse(data))
    assert hashlib.sha256(verified.canonical).hexdigest() == verified.digest
    hub = tpki.agents["p384"].signer
    delivery = signed_document(verified.canonical, hub.signature_for_digest(bytes.fromhex(verified.digest)))
    assert delivery.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n")
    again = tpki.verifier().verify(parse(delivery))
    assert again.digest == verified.digest
    assert again.canonical == verified.canonical
    assert again.signer.fingerprint == hub.identity.fingerprint
    ok, out = xmlsec1_verify(tpki, delivery, tmp_path)
    assert ok, out
    # the hub's signature is the root's last child, nothing after it
    root = parse(delivery)
    assert root[-1].tag == "{http://www.w3.org/2000/09/xmldsig#}Signature"
    assert root[-1].tail is None


@pytest.mark.parametrize("bad", [b"<a></a>\n", b"<a/>", b"", b"</a>", b"<a></a><!-- c -->"])
def test_signed_document_refuses_what_is_not_canonical(bad: bytes) -> None:
    with pytest.raises(ValueError):
        signed_document(bad, b"<ds:Signature/>")


def test_the_countersigned_delivery_is_the_canonical_form_plus_both_signatures(tpki: TestPki, tmp_path: Path) -> None:
    """``countersigned_document``: the hub's signature covers the canonical content with the originator's
    signature in it; without the hub's signature the document canonicalises to exactly that, without both to the
    originator's signed bytes; xmlsec1 verifies the hub's (the first signature)."""
    data = tpki.signed("p256")
    verified = tpki.verifier().verify(parse(data))
    hub = tpki.agents["p384"].signer
    seen: list[bytes] = []

    def hub_signature_for(covered: bytes) -> bytes:
        seen.append(covered)
        return hub.signature_for_canonical(covered)

    delivery = countersigned_document(verified.canonical, verified.signature, hub_signature_for)
    cut = verified.canonical.rfind(b"</")
    assert seen == [verified.canonical[:cut] + verified.signature + verified.canonical[cut:]]
    root = parse(delivery)
    ds = "{http://www.w3.org/2000/09/xmldsig#}Signature"
    hub_sig, origin_sig = root.findall(ds)
    assert root[-2] is hub_sig and root[-1] is origin_sig
    root.remove(hub_sig)
    assert c14n(root) == seen[0]
    root.remove(origin_sig)
    assert c14n(root) == verified.canonical
    ok, out = xmlsec1_verify(tpki, delivery, tmp_path)
    assert ok, out
    with pytest.raises(ValueError):
        countersigned_document(b"<a/>", verified.signature, hub_signature_for)
