"""XML-SECURITY.md §7 items 10-14 on the signature itself: tampering, comment injection, wrapping (XSW 1-8,
relocation, ds:Object smuggling, two signatures/references/SignedInfos), the algorithm and transform allow-lists
and key information, for the narrow verifier and the signxml reference, with differential checks between them
and against signxml on its own. (xmlsec1 runs the same vectors in tests/integration/test_trust_xmlsec1.py.)"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
from pathlib import Path

import pytest
from cryptography import x509
from lxml import etree
from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLVerifier
from trust_fixtures import (
    DS,
    TestPki,
    Vector,
    faithful_parse,
    session_pki,
    vectors,
    xslt_marker,
)

from hub.envelope import parse
from hub.errors import HubError, TrustError
from hub.trust import Verifier
from hub.trust.reference import SignxmlVerifier
from hub.trust.signature import c14n


@pytest.fixture(scope="session")
def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return session_pki(tmp_path_factory)


@pytest.fixture(scope="session")
def vector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vectors")


@pytest.fixture(scope="session")
def all_vectors(tpki: TestPki, vector_dir: Path) -> list[Vector]:
    return vectors(tpki, vector_dir)


def outcome(verifier: Verifier, root: etree._Element) -> tuple[str | None, object]:
    try:
        return None, verifier.verify(root)
    except TrustError as exc:
        return exc.code, exc


def test_the_vectors_cover_section_7_items_10_to_14(all_vectors: list[Vector]) -> None:
    names = {v.name for v in all_vectors}
    for required in (
        "tamper-text",
        "tamper-attribute",
        "tamper-order",
        "tamper-added-element",
        "tamper-added-pi",
        "comment-leading-in-classification",
        "comment-middle-in-classification",
        *(n for n in names if n.startswith("xsw")),
        "relocated-signature-in-header",
        "object-smuggling",
        "two-signatures",
        "two-references",
        "two-signedinfos",
        "alg-rsa-sha1",
        "alg-sha1-digest",
        "alg-hmac",
        "alg-hmac-outputlength-0",
        "alg-dsa-sha256",
        "alg-ecdsa-p192-key",
        "alg-rsa-2048-key",
        "alg-c14n-withcomments",
        "transform-xslt-writing-a-file",
        "transform-xpath",
        "transform-xpath-filter2",
        "transform-base64",
        "keyinfo-retrievalmethod",
        "reference-external-uri",
        "reference-xpointer",
        "keyinfo-keyvalue-mismatched",
    ):
        assert required in names
    assert len([n for n in names if n.startswith("xsw")]) == 8


def test_narrow_verifier_gives_the_expected_code_for_every_vector(tpki: TestPki, all_vectors: list[Vector]) -> None:
    verifier = tpki.verifier()
    wrong = []
    for v in all_vectors:
        got, _ = outcome(verifier, faithful_parse(v.data))
        if got != v.code:
            wrong.append(f"{v.name}: expected {v.code}, got {got}")
        try:
            got_intake, _ = outcome(verifier, parse(v.data))
        except HubError as exc:
            got_intake = f"intake {exc.code}"
        if got_intake != v.intake_code:
            wrong.append(f"{v.name} (via hub.envelope.parse): expected {v.intake_code}, got {got_intake}")
    assert not wrong, "\n".join(wrong)


def test_signxml_reference_agrees_with_the_narrow_verifier_on_every_vector(
    tpki: TestPki,
    all_vectors: list[Vector],
) -> None:
    store = tpki.store()
    narrow, reference = Verifier(store), SignxmlVerifier(store)
    disagreements = []
    for v in all_vectors:
        for parse_fn in (faithful_parse, parse):
            try:
                parse_fn(v.data)
            except HubError:
                continue  # refused by the intake before any verifier sees it (e.g. ENV_PI)
            n_code, n = outcome(narrow, parse_fn(v.data))
            r_code, r = outcome(reference, parse_fn(v.data))
            if n_code != r_code:
                disagreements.append(f"{v.name} ({parse_fn.__name__}): narrow {n_code}, signxml {r_code}")
            elif n_code is None:
                # Both accepted: the same signer, the same digest, the same signed content.
                assert n.signer == r.signer, v.name  # type: ignore[attr-defined]
                assert n.digest == r.digest, v.name  # type: ignore[attr-defined]
                assert c14n(n.root) == c14n(r.root), v.name  # type: ignore[attr-defined]
    assert not disagreements, "\n".join(disagreements)


def _raw_signxml_accepts(data: bytes) -> bool:
    """signxml alone, configured per XML-SECURITY §2.1 (location, allow-lists, the leaf pinned)."""
    root = faithful_parse(data)
    leaf = None
    for el in root.iter(f"{{{DS}}}X509Certificate"):
        cert = x509.load_der_x509_certificate(base64.b64decode("".join((el.text or "").split())))
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                continue
        except x509.ExtensionNotFound:
            pass
        leaf = cert
        break
    config = SignatureConfiguration(
        location="./",
        expect_references=1,
        signature_methods=frozenset(
            {SignatureMethod.ECDSA_SHA256, SignatureMethod.ECDSA_SHA384, SignatureMethod.RSA_SHA256}
        ),
        digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
    )
    try:
        XMLVerifier().verify(data, x509_cert=leaf, expect_config=config)
    except Exception:
        return False
    return True


def test_signxml_alone_agrees_on_cryptographic_vectors_and_the_profile_closes_its_gaps(
    all_vectors: list[Vector],
) -> None:
    wrong = []
    for v in all_vectors:
        accepted = _raw_signxml_accepts(v.data)
        if accepted != v.raw_signxml:
            wrong.append(f"{v.name}: signxml alone {'accepts' if accepted else 'refuses'}, recorded {v.raw_signxml}")
        if v.crypto and accepted != (v.code is None):
            wrong.append(f"{v.name}: signxml alone disagrees with the hub on a cryptographic vector")
    assert not wrong, "\n".join(wrong)
    # The gaps XML-SECURITY §9 describes are real, and the hub's profile closes each of them.
    gaps = {v.name for v in all_vectors if v.raw_signxml and v.code is not None}
    assert {
        "object-smuggling",
        "transform-xpath",
        "transform-xslt-writing-a-file",
        "alg-c14n-withcomments",
        "relocated-signature-first-child",
        "alg-ecdsa-p192-key",
        "alg-rsa-2048-key",
    } <= gaps


def test_errors_name_the_offending_algorithm_or_transform(tpki: TestPki, all_vectors: list[Vector]) -> None:
    verifier = tpki.verifier()
    expected = {
        "alg-rsa-sha1": "rsa-sha1",
        "alg-sha1-digest": "sha1",
        "alg-hmac": "hmac-sha256",
        "alg-hmac-outputlength-0": "hmac-sha256",
        "alg-dsa-sha256": "dsa-sha256",
        "alg-ecdsa-p192-key": "secp192r1",
        "alg-ecdsa-p521-key": "secp521r1",
        "alg-rsa-2048-key": "rsa-2048",
        "alg-c14n-withcomments": "WithComments",
        "alg-c14n-inclusive": "inclusive",
        "transform-exc-c14n-withcomments": "WithComments",
        "transform-xslt-writing-a-file": "XSLT",
        "transform-xpath": "XPath",
        "transform-xpath-filter2": "XPath Filter 2.0",
        "transform-base64": "base64",
        "transform-with-parameters": "InclusiveNamespaces",
        "keyinfo-retrievalmethod": "ds:RetrievalMethod",
        "reference-external-uri": "http://127.0.0.1:9/envelope.xml",
        "reference-xpointer": "#xpointer(/)",
        "object-smuggling": "ds:Object",
        "keyinfo-keyname": "ds:KeyName",
    }
    by_name = {v.name: v for v in all_vectors}
    for name, fragment in expected.items():
        code, exc = outcome(verifier, faithful_parse(by_name[name].data))
        assert code is not None and fragment in str(exc), f"{name}: {exc}"


def test_comment_injection_never_truncates_the_signed_value(tpki: TestPki, all_vectors: list[Vector]) -> None:
    store = tpki.store()
    checked = 0
    for v in all_vectors:
        if v.expect_text is None:
            continue
        tag, full = v.expect_text
        for verifier in (Verifier(store), SignxmlVerifier(store)):
            for root in (faithful_parse(v.data), parse(v.data)):
                verified = verifier.verify(root)
                el = verified.root.find(f".//{tag}")
                assert el is not None and el.text == full, v.name  # .text, the naive read, is the full value
                assert next(verified.root.iter(etree.Comment), None) is None
                checked += 1
    assert checked == 8


def test_a_pi_added_after_signing_is_refused_at_intake(tpki: TestPki, all_vectors: list[Vector]) -> None:
    """Exclusive C14N keeps PIs: a standard verifier digests one, so the hub must not accept it either (it would
    keep as evidence bytes that xmlsec1 refuses). The intake refuses it; a tree that kept it fails the digest."""
    v = next(v for v in all_vectors if v.name == "tamper-added-pi")
    with pytest.raises(HubError) as info:
        parse(v.data)
    assert info.value.code == "ENV_PI"
    with pytest.raises(TrustError) as bad:
        tpki.verifier().verify(faithful_parse(v.data))
    assert bad.value.code == "SIG_DIGEST"


def test_verified_root_is_exactly_what_was_signed(tpki: TestPki) -> None:
    data = tpki.signed("p256")
    verified = tpki.verifier().verify(parse(data))
    assert verified.root.find(f"{{{DS}}}Signature") is None
    assert verified.root.xpath("//*[namespace-uri()=$ds]", ds=DS) == []
    assert hashlib.sha256(c14n(verified.root)).hexdigest() == verified.digest
    signed = faithful_parse(data)
    digest_value = signed.find(f"{{{DS}}}Signature/{{{DS}}}SignedInfo/{{{DS}}}Reference/{{{DS}}}DigestValue")
    assert base64.b64decode(digest_value.text).hex() == verified.digest  # type: ignore[union-attr,arg-type]


def test_a_rejected_tree_is_left_as_it_was(tpki: TestPki, all_vectors: list[Vector]) -> None:
    verifier = tpki.verifier()
    for name in ("tamper-text", "tamper-whitespace-after-signature", "tamper-signature-value", "object-smuggling"):
        v = next(v for v in all_vectors if v.name == name)
        root = faithful_parse(v.data)
        before = etree.tostring(root)
        with pytest.raises(TrustError):
            verifier.verify(root)
        assert etree.tostring(root) == before, name


def test_no_transform_executes_and_no_connection_is_opened(
    tpki: TestPki,
    all_vectors: list[Vector],
    vector_dir: Path,
) -> None:
    """XSLT that would write a file, and URIs pointing at a loopback listener: nothing runs, nothing connects."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.05)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        store = tpki.store()
        hostile = [
            v.data.replace(b"127.0.0.1:9", f"127.0.0.1:{port}".encode())
            for v in all_vectors
            if v.name.startswith(("transform-", "reference-", "keyinfo-retrieval"))
        ]
        for data in hostile:
            for verifier in (Verifier(store), SignxmlVerifier(store)):
                with pytest.raises(TrustError):
                    verifier.verify(faithful_parse(data))
            _raw_signxml_accepts(data)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert accepted == []
    assert not xslt_marker(vector_dir).exists()
    assert len(hostile) >= 9


def test_a_signature_method_that_does_not_fit_the_key_is_refused(tpki: TestPki) -> None:
    """The key's type is asked once per certificate set (cached with it): the method must still fit every time."""
    from hub.envelope import to_bytes
    from hub.trust.keys import ECDSA_SHA256, RSA_SHA256
    from hub.trust.signature import sign_with

    verifier = tpki.verifier()
    for name, method in (("p256", RSA_SHA256), ("rsa3072", ECDSA_SHA256)):
        a = tpki.agents[name]
        tree = tpki.envelope(*_identity(a.cert))
        data = to_bytes(sign_with(tree, a.key, a.chain, method=method))
        code, exc = outcome(verifier, parse(data))
        assert code == "SIG_ALGORITHM" and "does not fit" in str(exc), (name, code)
        code, _ = outcome(verifier, parse(tpki.signed(name)))  # the same key with its own method verifies
        assert code is None, name


def _identity(cert: x509.Certificate) -> tuple[str, str]:
    from hub.trust import pki

    return pki.agency_and_system(cert.subject)
