"""XML-SECURITY.md §7 item 15 (certificates: foreign CA, expired, not yet valid, usage, EKU, revoked leaf and
intermediate, stale and missing CRLs) and item 16 (signer binding), plus the chain cache and CRL refresh."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from trust_fixtures import AGENCY, OTHER_AGENCY, SYSTEM, TestPki, session_pki

from hub.envelope import Envelope, parse, to_bytes
from hub.errors import CertificateRevoked, CertificateUntrusted, SignatureInvalid, TrustError
from hub.trust import Signer, TrustStore, Verifier, check_signer_binding, pki
from hub.trust.reference import SignxmlVerifier


@pytest.fixture(scope="session")
def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return session_pki(tmp_path_factory)


def code_of(verifier: Verifier, data: bytes) -> str | None:
    try:
        verifier.verify(parse(data))
    except TrustError as exc:
        return exc.code
    return None


@pytest.mark.parametrize(
    ("agent", "code"),
    [
        ("foreign", "CERT_UNTRUSTED"),  # foreign CA with the hub's own subject DNs, its CA cert sent along
        ("foreign_leaf_only", "CERT_UNTRUSTED"),
        ("expired", "CERT_EXPIRED"),
        ("not_yet_valid", "CERT_EXPIRED"),
        ("no_digital_signature", "CERT_USAGE"),
        ("no_key_usage", "CERT_USAGE"),
        ("wrong_eku", "CERT_USAGE"),
        ("no_eku", "CERT_USAGE"),
        ("revoked", "CERT_REVOKED"),
        ("under_revoked_ca", "CERT_REVOKED"),
        ("p192", "SIG_KEY_POLICY"),
        ("rsa2048", "SIG_KEY_POLICY"),
    ],
)
def test_untrusted_certificates_are_rejected(tpki: TestPki, agent: str, code: str) -> None:
    data = tpki.signed(agent)
    store = tpki.store()
    assert code_of(Verifier(store), data) == code
    assert code_of(SignxmlVerifier(store), data) == code
    # positive control after every negative: the same store still accepts a good signature
    assert code_of(Verifier(store), tpki.signed("p256")) is None


def test_error_families_and_messages(tpki: TestPki) -> None:
    v = tpki.verifier()
    with pytest.raises(CertificateUntrusted, match="not issued by the hub CA"):
        v.verify(parse(tpki.signed("foreign")))
    with pytest.raises(CertificateRevoked, match=r"revoked on .* \(key-compromise\)"):
        v.verify(parse(tpki.signed("revoked")))
    with pytest.raises(CertificateRevoked, match=r"issuing CA .* \(ca-compromise\)"):
        v.verify(parse(tpki.signed("under_revoked_ca")))
    with pytest.raises(CertificateUntrusted, match="expired on"):
        v.verify(parse(tpki.signed("expired")))
    with pytest.raises(CertificateUntrusted, match="documentSigning"):
        v.verify(parse(tpki.signed("wrong_eku")))
    with pytest.raises(SignatureInvalid, match="ec-secp192r1"):
        v.verify(parse(tpki.signed("p192")))


def test_every_allowed_algorithm_verifies(tpki: TestPki) -> None:
    v = tpki.verifier()
    for agent, method in (("p256", "ecdsa-sha256"), ("p384", "ecdsa-sha384"), ("rsa3072", "rsa-sha256")):
        verified = v.verify(parse(tpki.signed(agent)))
        assert verified.method.endswith(method)
        assert verified.signer.serial == tpki.agents[agent].serial


def _stale_clock(store: TrustStore) -> dt.datetime:
    crl = store.crl_for(store.issuing[0])
    assert crl is not None
    return crl.next_update + dt.timedelta(minutes=1)


def test_a_stale_crl_fails_closed(tpki: TestPki) -> None:
    store = tpki.store()
    later = _stale_clock(store)
    data = tpki.signed("p256")
    assert code_of(Verifier(store), data) is None
    # The same verifier (chain cached) and a fresh one both refuse once the CRL is past nextUpdate.
    v = Verifier(store, now=lambda: later)
    assert code_of(v, data) == "CERT_CRL_UNAVAILABLE"
    clock = [dt.datetime.now(dt.UTC)]
    cached = Verifier(store, now=lambda: clock[0])
    assert code_of(cached, data) is None
    clock[0] = later
    assert code_of(cached, data) == "CERT_CRL_UNAVAILABLE"
    assert code_of(SignxmlVerifier(store, now=lambda: later), data) == "CERT_CRL_UNAVAILABLE"


@pytest.mark.parametrize("crl", ["issuing-ca.crl", "root-ca.crl"])
def test_a_missing_crl_fails_closed(tpki: TestPki, tmp_path: Path, crl: str) -> None:
    d = tpki.copy_to(tmp_path / "pki")
    (d / "crl" / crl).unlink()
    assert code_of(Verifier(TrustStore.load(d)), tpki.signed("p256")) == "CERT_CRL_UNAVAILABLE"


def test_a_crl_signed_by_another_ca_is_ignored(tpki: TestPki, tmp_path: Path) -> None:
    d = tpki.copy_to(tmp_path / "pki")
    foreign = pki.init_ca(tmp_path / "foreign", "x")
    shutil.copy(foreign.paths.issuing_crl, d / "crl" / "issuing-ca.crl")  # same issuer DN, wrong key
    assert code_of(Verifier(TrustStore.load(d)), tpki.signed("p256")) == "CERT_CRL_UNAVAILABLE"


def test_revocation_takes_effect_on_refresh_and_clears_the_cache(tpki: TestPki, tmp_path: Path) -> None:
    d = tpki.copy_to(tmp_path / "pki")
    store = TrustStore.load(d, refresh_interval=0)
    verifier = Verifier(store)
    data = tpki.signed("p384")
    assert code_of(verifier, data) is None
    assert store.refresh() is False  # nothing changed: no reload
    serial = tpki.agents["p384"].serial
    entries = [*tpki.revoked, pki.RevokedEntry(serial, "superseded", dt.datetime.now(dt.UTC))]
    pki.publish_crl(d / "crl" / "issuing-ca.crl", tpki.issuing, tpki.issuing_key, entries, number=99)
    os.utime(d / "crl" / "issuing-ca.crl", ns=(1, 1))  # a different mtime even within one clock tick
    generation = store.generation
    assert code_of(verifier, data) == "CERT_REVOKED"  # refresh_if_due (interval 0) noticed the new file
    assert store.generation == generation + 1


def test_chains_are_validated_once_per_certificate_set(tpki: TestPki, monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = tpki.verifier()
    calls = []
    original = verifier._validate

    def counting(ders, now):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(ders, now)

    monkeypatch.setattr(verifier, "_validate", counting)
    for _ in range(5):
        verifier.verify(parse(tpki.signed("p256")))
    verifier.verify(parse(tpki.signed("p384")))
    assert len(calls) == 2


def test_cached_chains_still_expire(tpki: TestPki) -> None:
    clock = [dt.datetime.now(dt.UTC)]
    verifier = Verifier(tpki.store(), now=lambda: clock[0])
    data = tpki.signed("p256")
    assert code_of(verifier, data) is None
    clock[0] = tpki.agents["p256"].cert.not_valid_after_utc + dt.timedelta(seconds=1)
    assert code_of(verifier, data) == "CERT_EXPIRED"


def test_signer_binding(tpki: TestPki) -> None:
    verifier = tpki.verifier()
    # agency B's certificate ("other") signing a message whose signed sender is agency A
    verified = verifier.verify(parse(tpki.signed("other", tpki.envelope(AGENCY, SYSTEM))))
    with pytest.raises(CertificateUntrusted) as exc:
        check_signer_binding(verified, Envelope.from_tree(verified.root))
    assert exc.value.code == "CERT_SIGNER_MISMATCH"
    assert OTHER_AGENCY in str(exc.value) and AGENCY in str(exc.value)
    # same agency, another system of it: also refused
    other_system = tpki.envelope(AGENCY, "city-220100-gis")
    verified = verifier.verify(parse(tpki.signed("p256", other_system)))
    with pytest.raises(CertificateUntrusted):
        check_signer_binding(verified, Envelope.from_tree(verified.root))
    # positive control
    verified = verifier.verify(parse(tpki.signed("p256")))
    check_signer_binding(verified, Envelope.from_tree(verified.root))
    assert (verified.signer.agency, verified.signer.system) == (AGENCY, SYSTEM)


def test_the_hubs_intake_asks_for_the_issuing_ca_in_x509data(tpki: TestPki) -> None:
    """A signature carrying the signer's certificate alone (what ``xmlsec1 --privkey-pem KEY,CHAIN.pem`` makes: it
    reads one certificate a file) verified at the hub, whose store has the issuing CA, and was forwarded to recipients
    who hold only the root and refused it. The hub's intake (``complete_chain``) refuses it now, naming the missing
    CA; a verifier holding the root alone says what is missing instead of "not issued by the hub CA"."""
    a = tpki.agents["p256"]
    leaf_only = to_bytes(Signer(a.key, [a.cert]).sign(tpki.envelope()))  # type: ignore[arg-type]
    assert code_of(Verifier(tpki.store()), leaf_only) is None  # the store supplies the CA: it verified
    with pytest.raises(CertificateUntrusted) as caught:
        Verifier(tpki.store(), complete_chain=True).verify(parse(leaf_only))
    assert caught.value.code == "CERT_UNTRUSTED" and "without its issuing CA" in caught.value.detail
    assert code_of(Verifier(tpki.store(), complete_chain=True), tpki.signed("p256")) is None  # the full chain: fine
    root_only = TrustStore.from_files(tpki.paths.root_cert, tpki.paths.crl_dir)
    with pytest.raises(CertificateUntrusted) as caught:
        Verifier(root_only).verify(parse(leaf_only))
    assert "does not carry the certificate of its issuer" in caught.value.detail
