"""Deliveries carry the hub's signature and the originating system's (hub.trust.delivery): the format the hub makes
(hub.pipeline.replies.countersigned_document over ``Verified.signature``) verifies, the originator's signature is
context-free under exclusive C14N whatever prefixes the sender used, and every tampering, swap or layout change is
refused with its own code. Throw-away CA of tests/trust_fixtures.py."""

from __future__ import annotations

import base64
import copy
import hashlib
import shutil
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from trust_fixtures import (
    AGENCY,
    DS,
    OTHER_AGENCY,
    OTHER_SYSTEM,
    PASSPHRASE,
    SYSTEM,
    XMLSEC1,
    TestPki,
    session_pki,
    xmlsec1_sign,
    xmlsec1_verify,
)

from hub.envelope import parse, to_bytes
from hub.errors import ConfigError, TrustError
from hub.pipeline.replies import canonical_receipt, countersigned_document, signed_document
from hub.trust import Signer, TrustStore, Verifier, keys, pki
from hub.trust.delivery import verify_delivery
from hub.trust.signature import SignerIdentity, c14n

T_SIG = f"{{{DS}}}Signature"


@pytest.fixture(scope="module")
def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return session_pki(tmp_path_factory)


@pytest.fixture(scope="module")
def hub(tpki: TestPki) -> Signer:
    return Signer.load(tpki.paths.hub_key, tpki.paths.hub_cert, passphrase=PASSPHRASE.encode())


@pytest.fixture(scope="module")
def verifier(tpki: TestPki) -> Verifier:
    return tpki.verifier()


def _is_hub(hub: Signer):  # type: ignore[no-untyped-def]
    return lambda who: who.fingerprint == hub.identity.fingerprint


def _split(data: bytes) -> tuple[bytes, bytes]:
    """A sender's signed message without verifying it: its canonical content and its signature's C14N."""
    root = etree.fromstring(data)
    sig = root[-1]
    origin = c14n(sig)
    root.remove(sig)
    return c14n(root), origin


def _another(tpki: TestPki) -> etree._Element:
    """The sample envelope with a message id of its own (another message)."""
    root = tpki.envelope()
    mid = root.find(".//{urn:forestry-hub:envelope:1}MessageId")
    assert mid is not None
    mid.text = str(uuid.uuid4())
    return root


def _delivery(tpki: TestPki, hub: Signer, agent: str = "p256", root: etree._Element | None = None) -> bytes:
    verified = tpki.verifier().verify(parse(tpki.signed(agent, root)))
    return countersigned_document(verified.canonical, verified.signature, hub.signature_for_canonical)


def _open(data: bytes, verifier: Verifier, hub: Signer):  # type: ignore[no-untyped-def]
    return verify_delivery(parse(data), verifier, is_hub=_is_hub(hub))


def _code(data: bytes, verifier: Verifier, hub: Signer) -> str:
    with pytest.raises(TrustError) as err:
        _open(data, verifier, hub)
    return err.value.code


def _sigs(data: bytes) -> tuple[etree._Element, etree._Element, etree._Element]:
    root = etree.fromstring(data)
    return root, root[-2], root[-1]


# ---------------------------------------------------------------------------------------------- the format


def test_a_delivery_verifies_both_signatures(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    data = tpki.signed("p256")
    verified = tpki.verifier().verify(parse(data))
    delivery = countersigned_document(verified.canonical, verified.signature, hub.signature_for_canonical)
    opened = _open(delivery, verifier, hub)
    assert opened.hub.fingerprint == hub.identity.fingerprint
    assert opened.originator is not None
    assert opened.originator.fingerprint == tpki.agents["p256"].signer.identity.fingerprint
    assert (opened.originator.agency, opened.originator.system) == (AGENCY, SYSTEM)
    # digest and canonical: the originator's, as the hub's intake computed them (a reply's RequestHash)
    assert opened.digest == verified.digest == hashlib.sha256(opened.canonical).hexdigest()
    assert opened.canonical == verified.canonical == c14n(opened.root)
    assert opened.root.find(f".//{T_SIG}") is None
    assert opened.envelope.sender.system == SYSTEM
    assert opened.originator_certificate == tpki.agents["p256"].cert
    assert opened.hub_certificate is not None and pki.fingerprint(opened.hub_certificate) == hub.identity.fingerprint
    # layout: the hub's signature, then the originator's, right before the root's end tag, nothing around them
    _root, first, second = _sigs(delivery)
    assert first.tag == second.tag == T_SIG
    assert first.tail is None and second.tail is None
    assert c14n(second) == verified.signature
    assert delivery.endswith(verified.signature + b"</env:Envelope>")


@pytest.mark.parametrize("agent", ["p384", "rsa3072"])
def test_every_algorithm_of_the_originator(tpki: TestPki, hub: Signer, verifier: Verifier, agent: str) -> None:
    opened = _open(_delivery(tpki, hub, agent), verifier, hub)
    assert opened.originator is not None
    assert opened.originator.fingerprint == tpki.agents[agent].signer.identity.fingerprint


def _custom_signed(tpki: TestPki, style: str, root_default: bool) -> bytes:
    """A sender's message signed in the hub profile with unusual but legal namespace choices."""
    a = tpki.agents["p256"]
    text = to_bytes(tpki.envelope())
    if root_default:
        text = text.replace(b"xmlns:env=", b"xmlns=").replace(b"<env:", b"<").replace(b"</env:", b"</")
    if style == "ds-on-root":
        text = text.replace(b"Envelope xmlns", f'Envelope xmlns:ds="{DS}" xmlns'.encode(), 1)
    root = etree.fromstring(text)
    nsmap = {"ds-on-root": None, "ds": {"ds": DS}, "default": {None: DS}, "env": {"env": DS}, "sig": {"sig": DS}}[style]
    digest = hashlib.sha256(c14n(root)).digest()
    S = etree.SubElement
    q = f"{{{DS}}}"
    sig = S(root, q + "Signature", nsmap=nsmap) if nsmap else S(root, q + "Signature")
    si = S(sig, q + "SignedInfo")
    S(si, q + "CanonicalizationMethod", Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")
    S(si, q + "SignatureMethod", Algorithm=keys.ECDSA_SHA256)
    ref = S(si, q + "Reference", URI="")
    tr = S(ref, q + "Transforms")
    S(tr, q + "Transform", Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature")
    S(tr, q + "Transform", Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")
    S(ref, q + "DigestMethod", Algorithm="http://www.w3.org/2001/04/xmlenc#sha256")
    S(ref, q + "DigestValue").text = base64.b64encode(digest).decode()
    value = S(sig, q + "SignatureValue")
    x509_data = S(S(sig, q + "KeyInfo"), q + "X509Data")
    for cert in a.chain:
        S(x509_data, q + "X509Certificate").text = base64.b64encode(cert.public_bytes(Encoding.DER)).decode()
    assert isinstance(a.key, ec.EllipticCurvePrivateKey)
    raw = keys.der_to_raw(a.key.sign(c14n(si), ec.ECDSA(hashes.SHA256())), a.key)
    value.text = base64.b64encode(raw).decode()
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@pytest.mark.parametrize("root_default", [False, True], ids=["env-prefix", "env-default"])
@pytest.mark.parametrize("style", ["ds", "default", "env", "sig", "ds-on-root"])
def test_the_originators_signature_is_context_free_under_exclusive_c14n(
    tpki: TestPki, hub: Signer, verifier: Verifier, tmp_path: Path, style: str, root_default: bool
) -> None:
    """Whatever prefixes the sender chose (ds:, a default namespace, ``env`` rebound to XML-DSig, xmlns:ds declared
    on the envelope root), the exclusive C14N of its signature element alone (``Verified.signature``) is what it
    canonicalises to inside the delivery: the delivery without the hub's signature canonicalises to exactly what
    the hub signed, and xmlsec1 agrees on both signatures."""
    data = _custom_signed(tpki, style, root_default)
    verified = tpki.verifier().verify(parse(data))
    assert verified.signature == c14n(etree.fromstring(data)[-1])
    delivery = countersigned_document(verified.canonical, verified.signature, hub.signature_for_canonical)
    root = etree.fromstring(delivery)
    root.remove(root[-2])  # the hub's signature; what is left is what it covers
    cut = verified.canonical.rfind(b"</")
    assert c14n(root) == verified.canonical[:cut] + verified.signature + verified.canonical[cut:]
    # and in the original document's context too
    original = etree.fromstring(data)
    assert c14n(original[-1]) == verified.signature
    assert c14n(original) == verified.canonical[:cut] + verified.signature + verified.canonical[cut:]
    opened = _open(delivery, verifier, hub)
    assert opened.canonical == verified.canonical
    if XMLSEC1:
        ok, out = xmlsec1_verify(tpki, delivery, tmp_path)
        assert ok, out
        ok, out = xmlsec1_verify(tpki, etree.tostring(root), tmp_path)
        assert ok, out


def test_an_xmlsec1_signed_message_is_delivered_verifiably(
    tpki: TestPki, hub: Signer, verifier: Verifier, tmp_path: Path
) -> None:
    """A signature made by another stack (xmlsec1's template: default namespace, a newline after it) travels as its
    exclusive-C14N form and still verifies, with xmlsec1 and here."""
    if not XMLSEC1:
        pytest.skip("xmlsec1 is not installed")
    data = xmlsec1_sign(tpki.agents["p256"], tpki.envelope(), tmp_path, keys.ECDSA_SHA256)
    verified = tpki.verifier().verify(parse(data))
    delivery = countersigned_document(verified.canonical, verified.signature, hub.signature_for_canonical)
    assert _open(delivery, verifier, hub).digest == verified.digest
    ok, out = xmlsec1_verify(tpki, delivery, tmp_path)
    assert ok, out
    root = etree.fromstring(delivery)
    root.remove(root[-2])
    ok, out = xmlsec1_verify(tpki, etree.tostring(root), tmp_path)
    assert ok, out


def test_the_readme_commands_check_both_signatures(tpki: TestPki, hub: Signer, tmp_path: Path) -> None:
    """README "End-to-end proof": xmlsec1 on the delivery (the hub's signature), then the perl line that deletes the
    hub's signature and xmlsec1 on the rest (the sender's, whose certificate --print-debug shows); tampering fails."""
    import subprocess

    # xmlsec1 and perl are part of the machine (scripts/ensure-services.sh installs xmlsec1): never skipped
    assert XMLSEC1 and shutil.which("perl"), "xmlsec1 and perl are needed (make services)"
    (tmp_path / "delivery.xml").write_bytes(_delivery(tpki, hub))
    shutil.copy(tpki.paths.root_cert, tmp_path / "root-ca.pem")
    verify = [XMLSEC1, "--verify", "--trusted-pem", "root-ca.pem", "--enabled-reference-uris", "empty"]
    strip = "perl -0pe 's{<ds:Signature\\b.*?</ds:Signature>}{}s' delivery.xml > sender.xml"

    def run(cmd: list[str] | str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=tmp_path, shell=isinstance(cmd, str), capture_output=True, text=True, timeout=30)

    assert run([*verify, "delivery.xml"]).returncode == 0
    assert run(strip).returncode == 0
    done = run([*verify[:2], "--print-debug", *verify[2:], "sender.xml"])
    assert done.returncode == 0, done.stderr
    assert f"organizationIdentifier={AGENCY}/CN={SYSTEM}" in done.stdout + done.stderr
    sender = (tmp_path / "sender.xml").read_bytes()
    (tmp_path / "sender.xml").write_bytes(sender.replace("公开".encode(), "内部".encode(), 1))
    assert run([*verify, "sender.xml"]).returncode != 0


def test_the_hubs_own_replies_carry_one_signature(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    import datetime as dt

    from hub.envelope import Party

    now = dt.datetime.now(dt.UTC)
    me = Party(hub.identity.agency, hub.identity.system)
    receipt = canonical_receipt(
        message_id="00000000-0000-4000-8000-000000000001",
        conversation_id="00000000-0000-4000-8000-000000000002",
        ref_to="00000000-0000-4000-8000-000000000002",
        request_hash="0" * 64,
        sender=me,
        to=Party(AGENCY, SYSTEM),
        created=now,
        expires=now + dt.timedelta(days=1),
        urgency="平件",
        outcome="accepted",
        received_at=now,
        recipients=[],
    )
    data = signed_document(receipt, hub.signature_for_canonical(receipt))
    opened = _open(data, verifier, hub)
    assert opened.originator is None and opened.hub.fingerprint == hub.identity.fingerprint
    assert opened.canonical == receipt
    # a second signature on the hub's own message is refused
    _, origin = _split(tpki.signed("p256"))
    assert _code(countersigned_document(receipt, origin, hub.signature_for_canonical), verifier, hub) == "SIG_PROFILE"
    # a receipt naming someone else as its sender, signed by the hub
    forged = receipt.replace(f'system="{hub.identity.system}"'.encode(), b'system="county-220122-oa"', 1)
    assert forged != receipt
    assert _code(signed_document(forged, hub.signature_for_canonical(forged)), verifier, hub) == "CERT_SIGNER_MISMATCH"


# ---------------------------------------------------------------------------------------------- refusals


def test_tampered_content_is_refused(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    delivery = _delivery(tpki, hub)
    assert "公开".encode() in delivery
    assert _code(delivery.replace("公开".encode(), "内部".encode(), 1), verifier, hub) == "SIG_DIGEST"


def test_a_tampered_hub_signature_is_refused(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    root, hub_sig, _ = _sigs(_delivery(tpki, hub))
    value = hub_sig.find(f"{{{DS}}}SignatureValue")
    assert value is not None and value.text
    raw = bytearray(base64.b64decode(value.text))
    raw[5] ^= 1
    value.text = base64.b64encode(bytes(raw)).decode()
    assert _code(etree.tostring(root), verifier, hub) == "SIG_VALUE"
    root, hub_sig, _ = _sigs(_delivery(tpki, hub))
    dv = hub_sig.find(f".//{{{DS}}}DigestValue")
    assert dv is not None
    dv.text = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    assert _code(etree.tostring(root), verifier, hub) == "SIG_VALUE"


def test_a_tampered_originator_signature_is_refused(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    """The hub's signature covers the originator's: changing it breaks the hub's digest."""
    root, _, origin = _sigs(_delivery(tpki, hub))
    value = origin.find(f"{{{DS}}}SignatureValue")
    assert value is not None and value.text
    raw = bytearray(base64.b64decode(value.text))
    raw[3] ^= 1
    value.text = base64.b64encode(bytes(raw)).decode()
    assert _code(etree.tostring(root), verifier, hub) == "SIG_DIGEST"


def test_signatures_swapped_from_another_message_are_refused(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    a = _delivery(tpki, hub)
    b = _delivery(tpki, hub, root=_another(tpki))
    _ra, hub_a, origin_a = _sigs(a)
    _, hub_b, origin_b = _sigs(b)
    for replace in ((origin_a, origin_b), (hub_a, hub_b)):
        root, h, o = _sigs(a)
        target = h if replace[0] is hub_a else o
        root.replace(target, copy.deepcopy(replace[1]))
        assert _code(etree.tostring(root), verifier, hub) == "SIG_DIGEST"
    root, h, o = _sigs(a)
    root.replace(h, copy.deepcopy(hub_b))
    root.replace(o, copy.deepcopy(origin_b))
    assert _code(etree.tostring(root), verifier, hub) == "SIG_DIGEST"


def test_a_mismatched_pair_countersigned_by_the_hub_is_refused(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    """Only the hub's key can make these (a faulty or compromised hub): the originator's signature belongs to
    another message, or its value was changed before the hub signed."""
    canonical, _ = _split(tpki.signed("p256"))
    _, other = _split(tpki.signed("p256", _another(tpki)))
    data = countersigned_document(canonical, other, hub.signature_for_canonical)
    assert _code(data, verifier, hub) == "SIG_ORIGIN_INVALID"
    canonical, origin = _split(tpki.signed("p256"))
    sig = etree.fromstring(origin)
    value = sig.find(f"{{{DS}}}SignatureValue")
    assert value is not None and value.text
    raw = bytearray(base64.b64decode(value.text))
    raw[7] ^= 1
    value.text = base64.b64encode(bytes(raw)).decode()
    data = countersigned_document(canonical, c14n(sig), hub.signature_for_canonical)
    assert _code(data, verifier, hub) == "SIG_ORIGIN_INVALID"


def test_a_delivery_without_the_originators_signature_is_refused(
    tpki: TestPki, hub: Signer, verifier: Verifier
) -> None:
    verified = tpki.verifier().verify(parse(tpki.signed("p256")))
    # the format of earlier releases: the hub's signature alone
    legacy = signed_document(verified.canonical, hub.signature_for_canonical(verified.canonical))
    assert _code(legacy, verifier, hub) == "SIG_ORIGIN_MISSING"
    # the originator's stripped from a delivery
    root, _, origin = _sigs(_delivery(tpki, hub))
    root.remove(origin)
    assert _code(etree.tostring(root), verifier, hub) == "SIG_ORIGIN_MISSING"


def test_the_first_signature_must_be_the_hubs(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    canonical, origin = _split(tpki.signed("p256"))
    other = tpki.agents["other"].signer
    assert _code(countersigned_document(canonical, origin, other.signature_for_canonical), verifier, hub) == (
        "CERT_SIGNER_MISMATCH"
    )
    # the order reversed: the originator's first, then the hub's
    root, h, _o = _sigs(_delivery(tpki, hub))
    root.remove(h)
    root.append(h)
    assert _code(etree.tostring(root), verifier, hub) == "CERT_SIGNER_MISMATCH"


def test_the_originator_must_be_the_signed_sender(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    # signed by another agency's system although the envelope names AGENCY/SYSTEM (the hub's intake refuses this;
    # a delivery made of it anyway is refused here)
    canonical, origin = _split(tpki.signed("other", tpki.envelope(AGENCY, SYSTEM)))
    data = countersigned_document(canonical, origin, hub.signature_for_canonical)
    assert _code(data, verifier, hub) == "CERT_SIGNER_MISMATCH"


@pytest.mark.parametrize(
    ("agent", "code"),
    [
        ("revoked", "CERT_REVOKED"),
        ("foreign", "CERT_UNTRUSTED"),
        ("expired", "CERT_EXPIRED"),
        ("under_revoked_ca", "CERT_REVOKED"),
        ("wrong_eku", "CERT_USAGE"),
    ],
)
def test_the_originators_certificate_is_checked(
    tpki: TestPki, hub: Signer, verifier: Verifier, agent: str, code: str
) -> None:
    canonical, origin = _split(tpki.signed(agent))
    assert _code(countersigned_document(canonical, origin, hub.signature_for_canonical), verifier, hub) == code


def test_the_originators_signature_passes_the_profile(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    canonical, origin = _split(tpki.signed("p256"))
    sig = etree.fromstring(origin)
    transforms = sig.find(f".//{{{DS}}}Transforms")
    assert transforms is not None
    etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116")
    data = countersigned_document(canonical, c14n(sig), hub.signature_for_canonical)
    assert _code(data, verifier, hub) == "SIG_TRANSFORM"


def test_layouts_other_than_the_hubs_are_refused(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    delivery = _delivery(tpki, hub)
    # nothing between or after the two signatures
    root, h, o = _sigs(delivery)
    h.tail = "\n"
    assert _code(etree.tostring(root), verifier, hub) == "SIG_PROFILE"
    root, h, o = _sigs(delivery)
    o.tail = "\n"
    assert _code(etree.tostring(root), verifier, hub) == "SIG_PROFILE"
    # a third signature
    root, h, o = _sigs(delivery)
    root.insert(root.index(h), copy.deepcopy(o))
    assert _code(etree.tostring(root), verifier, hub) == "SIG_PROFILE"
    # a signature elsewhere in the document
    root, h, o = _sigs(delivery)
    root[1].append(copy.deepcopy(o))
    assert _code(etree.tostring(root), verifier, hub) == "SIG_PROFILE"
    # not last
    root, h, o = _sigs(delivery)
    root.remove(o)
    root.remove(h)
    root.insert(1, h)
    assert _code(etree.tostring(root), verifier, hub) == "SIG_PROFILE"
    # none
    root, h, o = _sigs(delivery)
    root.remove(o)
    root.remove(h)
    assert _code(etree.tostring(root), verifier, hub) == "SIG_MISSING"


def test_a_refused_delivery_leaves_the_tree_as_it_was(tpki: TestPki, hub: Signer, verifier: Verifier) -> None:
    tampered = _delivery(tpki, hub).replace("公开".encode(), "内部".encode(), 1)
    root = parse(tampered)
    before = etree.tostring(root)
    with pytest.raises(TrustError):
        verify_delivery(root, verifier, is_hub=_is_hub(hub))
    assert etree.tostring(root) == before


# ---------------------------------------------------------------------------------------------- the agency side


@pytest.fixture
def agency_store(tpki: TestPki, tmp_path: Path) -> tuple[Path, Path]:
    """What an agency holds: the hub root and a folder of the CRLs the hub publishes. No PKI directory."""
    root = tmp_path / "hub-root.pem"
    shutil.copy(tpki.paths.root_cert, root)
    crls = tmp_path / "crls"
    shutil.copytree(tpki.paths.crl_dir, crls)
    return root, crls


def _agency_is_hub(who: SignerIdentity) -> bool:
    return who.system == pki.HUB_SYSTEM


def test_an_agency_verifies_with_the_root_and_crls_only(
    tpki: TestPki, hub: Signer, agency_store: tuple[Path, Path]
) -> None:
    store = TrustStore.from_files(*agency_store)
    assert store.paths is None and store.issuing == ()
    v = Verifier(store)
    opened = verify_delivery(parse(_delivery(tpki, hub)), v, is_hub=_agency_is_hub)
    assert opened.hub.system == pki.HUB_SYSTEM and opened.originator is not None
    # revocation of the leaf (issuing CA's CRL, authenticated with the CA that came in the chain) and of a CA
    # (the root's CRL)
    for agent, code in (
        ("revoked", "CERT_REVOKED"),
        ("under_revoked_ca", "CERT_REVOKED"),
        ("foreign", "CERT_UNTRUSTED"),
    ):
        canonical, origin = _split(tpki.signed(agent))
        data = countersigned_document(canonical, origin, hub.signature_for_canonical)
        with pytest.raises(TrustError) as err:
            verify_delivery(parse(data), v, is_hub=_agency_is_hub)
        assert err.value.code == code, agent


def test_an_agency_store_fails_closed_without_the_issuing_cas_crl(
    tpki: TestPki, hub: Signer, agency_store: tuple[Path, Path]
) -> None:
    root, crls = agency_store
    (crls / tpki.paths.issuing_crl.name).unlink()
    v = Verifier(TrustStore.from_files(root, crls))
    with pytest.raises(TrustError) as err:
        verify_delivery(parse(_delivery(tpki, hub)), v, is_hub=_agency_is_hub)
    assert err.value.code == "CERT_CRL_UNAVAILABLE"


def test_an_agency_store_picks_up_a_new_crl(tpki: TestPki, hub: Signer, agency_store: tuple[Path, Path]) -> None:
    root, crls = agency_store
    store = TrustStore.from_files(root, crls, refresh_interval=0)
    v = Verifier(store)
    verify_delivery(parse(_delivery(tpki, hub)), v, is_hub=_agency_is_hub)
    import datetime as dt

    revoked = [
        *tpki.revoked,
        pki.RevokedEntry(tpki.agents["p256"].serial, "key-compromise", dt.datetime.now(dt.UTC)),
    ]
    target = crls / tpki.paths.issuing_crl.name
    pki.publish_crl(target, tpki.issuing, tpki.issuing_key, revoked, number=len(revoked) + 50)
    with pytest.raises(TrustError) as err:
        verify_delivery(parse(_delivery(tpki, hub)), v, is_hub=_agency_is_hub)
    assert err.value.code == "CERT_REVOKED"


def test_an_agency_store_needs_its_files(tmp_path: Path, tpki: TestPki) -> None:
    with pytest.raises(ConfigError):
        TrustStore.from_files(tmp_path / "missing.pem", tmp_path)
    with pytest.raises(ConfigError):
        TrustStore.from_files(tpki.paths.root_cert, tmp_path / "no-crls")
    two = tmp_path / "two.pem"
    two.write_bytes(tpki.paths.root_cert.read_bytes() + tpki.paths.issuing_cert.read_bytes())
    with pytest.raises(ConfigError):
        TrustStore.from_files(two, tpki.paths.crl_dir)


def test_the_ca_never_issues_a_system_certificate_named_hub(tpki: TestPki) -> None:
    """What makes ``identity.system == HUB_SYSTEM`` a sound is_hub on the agency side."""
    k = keys.generate_private_key()
    with pytest.raises(ConfigError):
        pki.issue_from_csr(tpki.dir, PASSPHRASE, pki.make_csr(k, OTHER_AGENCY, pki.HUB_SYSTEM))
    assert OTHER_SYSTEM != pki.HUB_SYSTEM
