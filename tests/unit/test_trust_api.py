"""The public surface of hub.trust (other parts of the hub are written against it) and the shape of the
signatures the hub makes (XML-SECURITY.md §4)."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect

import pytest
from lxml import etree
from trust_fixtures import DS, TestPki, session_pki

import hub.trust
from hub.envelope import parse, to_bytes
from hub.errors import SignatureInvalid
from hub.trust import Signer, SignerIdentity, TrustStore, Verified, Verifier, check_signer_binding
from hub.trust.signature import c14n


@pytest.fixture(scope="session")
def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return session_pki(tmp_path_factory)


def test_public_names() -> None:
    for name in ("TrustStore", "Signer", "Verifier", "Verified", "SignerIdentity", "check_signer_binding"):
        assert name in hub.trust.__all__
    assert [f.name for f in dataclasses.fields(SignerIdentity)] == [
        "agency",
        "system",
        "serial",
        "fingerprint",
        "not_after",
    ]
    assert {"root", "signer", "digest"} <= {f.name for f in dataclasses.fields(Verified)}
    assert next(iter(inspect.signature(TrustStore.load).parameters)) == "pki_dir"
    assert inspect.signature(Signer.load).parameters["passphrase"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.signature(Verifier).parameters["now"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(check_signer_binding).parameters) == ["verified", "envelope"]


def test_the_pure_parts_do_not_import_the_store() -> None:
    import ast
    from pathlib import Path

    for name in ("__init__", "keys", "profile", "pki", "crl", "truststore", "signature", "reference"):
        tree = ast.parse((Path(hub.trust.__file__).parent / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }
        assert not any(
            m and (m.startswith(("hub.store", "hub.transport", "hub.pipeline", "asyncpg"))) for m in imported
        ), name


def test_signature_shape(tpki: TestPki) -> None:
    root = tpki.envelope()
    signer = tpki.agents["p256"].signer
    assert signer.sign(root) is root
    sig = root[-1]
    assert sig.tag == f"{{{DS}}}Signature"
    ns = {"ds": DS}
    assert [
        el.get("Algorithm") for el in sig.iterfind("ds:SignedInfo/ds:Reference/ds:Transforms/ds:Transform", ns)
    ] == ["http://www.w3.org/2000/09/xmldsig#enveloped-signature", "http://www.w3.org/2001/10/xml-exc-c14n#"]
    assert sig.find("ds:SignedInfo/ds:Reference", ns).get("URI") == ""  # type: ignore[union-attr]
    assert sig.find("ds:SignedInfo/ds:CanonicalizationMethod", ns).get("Algorithm") == (  # type: ignore[union-attr]
        "http://www.w3.org/2001/10/xml-exc-c14n#"
    )
    assert sig.find("ds:SignedInfo/ds:SignatureMethod", ns).get("Algorithm") == (  # type: ignore[union-attr]
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    )
    assert sig.find("ds:SignedInfo/ds:Reference/ds:DigestMethod", ns).get("Algorithm") == (  # type: ignore[union-attr]
        "http://www.w3.org/2001/04/xmlenc#sha256"
    )
    assert len(sig.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", ns)) == 2
    assert sig.find("ds:KeyInfo/ds:KeyValue", ns) is None and sig.find("ds:Object", ns) is None
    with pytest.raises(SignatureInvalid, match="already signed"):
        signer.sign(root)


def test_sign_verify_round_trip_and_digest(tpki: TestPki) -> None:
    unsigned = tpki.envelope()
    expected_digest = hashlib.sha256(c14n(unsigned)).hexdigest()
    data = tpki.signed("p256", unsigned)
    verified = tpki.verifier().verify(parse(data))
    assert verified.digest == expected_digest
    assert c14n(verified.root) == c14n(tpki.envelope())
    assert verified.signer.fingerprint == hub.trust.pki.fingerprint(tpki.agents["p256"].cert)
    assert str(verified.signer) == f"{verified.signer.agency}/{verified.signer.system}"


def test_signing_a_tree_that_round_trips_through_bytes_keeps_verifying(tpki: TestPki) -> None:
    """Namespace declarations on the root (ds already declared) and pretty-printing before signing."""
    root = tpki.envelope()
    wrapped = etree.fromstring(
        to_bytes(root).replace(b"<env:Envelope ", b'<env:Envelope xmlns:ds="http://www.w3.org/2000/09/xmldsig#" ')
    )
    etree.indent(wrapped)
    data = to_bytes(tpki.agents["rsa3072"].signer.sign(wrapped))
    assert tpki.verifier().verify(parse(data)).signer.system == "city-220100-archive"
