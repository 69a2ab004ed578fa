"""The CA in files: init (layout, modes, encrypted keys), issuing from CSRs with the key policy, renewal, CRLs,
the agency-side key and CSR, and the hub's own signing identity."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from trust_fixtures import AGENCY, PASSPHRASE, SYSTEM, TestPki, rsa_key, session_pki

from hub.envelope import parse
from hub.errors import ConfigError, SignatureInvalid
from hub.trust import Signer, keys, pki
from hub.trust.crl import load_crls


@pytest.fixture(scope="session")
def tpki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return session_pki(tmp_path_factory)


def test_init_writes_the_layout_with_private_modes_and_encrypted_keys(tpki: TestPki) -> None:
    p = tpki.paths
    for key_file in (p.root_key, p.issuing_key, p.hub_key):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        data = key_file.read_bytes()
        assert b"BEGIN ENCRYPTED PRIVATE KEY" in data
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(data, password=None)
    assert stat.S_IMODE(p.root.stat().st_mode) == 0o700
    with pytest.raises(ConfigError, match="wrong passphrase"):
        pki.load_ca(p.root, "not-the-passphrase")
    with pytest.raises(ConfigError, match="already exists"):
        pki.init_ca(p.root, PASSPHRASE)
    for public in (p.root_cert, p.issuing_cert, p.root_crl, p.issuing_crl):
        assert public.is_file()


def test_ca_certificates_form_a_two_level_hierarchy(tpki: TestPki) -> None:
    root, issuing = tpki.root, tpki.issuing
    assert root.issuer == root.subject
    issuing.verify_directly_issued_by(root)
    bc = issuing.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    ku = issuing.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature


def test_issue_from_csr_carries_agency_system_and_the_signing_profile(tpki: TestPki) -> None:
    key = keys.generate_private_key("ec-p384")
    csr = pki.make_csr(key, AGENCY, "county-220104-approval", "长春市林业局")
    issued = pki.issue_from_csr(tpki.dir, PASSPHRASE, csr.public_bytes(serialization.Encoding.PEM))
    cert = issued.certificate
    assert pki.agency_and_system(cert.subject) == (AGENCY, "county-220104-approval")
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].oid.dotted_string == "2.5.4.97"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "长春市林业局"
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        pki.DOCUMENT_SIGNING,
        pki.CLIENT_AUTH,
    ]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(tpki.issuing)
    assert issued.kind == "agency" and issued.key_algorithm == "ec-p384"
    assert 364 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 366


@pytest.mark.parametrize(
    "make",
    [
        lambda: ec.generate_private_key(ec.SECP192R1()),
        lambda: ec.generate_private_key(ec.SECP521R1()),
        lambda: rsa_key(2048),
    ],
    ids=["p192", "p521", "rsa2048"],
)
def test_the_key_policy_is_enforced_at_issue(tpki: TestPki, make) -> None:  # type: ignore[no-untyped-def]
    key = make()
    csr = (
        x509.CertificateSigningRequestBuilder().subject_name(pki.subject_for(AGENCY, SYSTEM)).sign(key, hashes.SHA256())
    )
    with pytest.raises(SignatureInvalid) as exc:
        pki.issue_from_csr(tpki.dir, PASSPHRASE, csr)
    assert exc.value.code == "SIG_KEY_POLICY"
    with pytest.raises(SignatureInvalid):
        pki.make_csr(key, AGENCY, SYSTEM)


def test_bad_csrs_are_refused(tpki: TestPki) -> None:
    key = keys.generate_private_key()
    with pytest.raises(ConfigError, match="check character"):
        pki.make_csr(key, AGENCY[:-1] + ("0" if AGENCY[-1] != "0" else "1"), SYSTEM)
    with pytest.raises(ConfigError, match="system id"):
        pki.make_csr(key, AGENCY, "Not A System")
    with pytest.raises(ConfigError, match="reserved"):
        pki.issue_from_csr(tpki.dir, PASSPHRASE, pki.make_csr(key, AGENCY, "hub"))
    no_org_id = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SYSTEM)]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(ConfigError, match="organizationIdentifier"):
        pki.issue_from_csr(tpki.dir, PASSPHRASE, no_org_id)
    with pytest.raises(ConfigError, match="not a PEM or DER"):
        pki.issue_from_csr(tpki.dir, PASSPHRASE, b"hello")


def test_renew_keeps_subject_and_key_with_a_new_serial(tpki: TestPki) -> None:
    old = tpki.agents["p256"].cert
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    new = pki.renew(tpki.dir, PASSPHRASE, old, now=later).certificate
    assert new.serial_number != old.serial_number
    assert new.subject == old.subject
    assert new.public_key() == old.public_key()
    assert new.not_valid_after_utc > old.not_valid_after_utc


def test_crls_list_revocations_with_reasons_and_a_short_next_update(tpki: TestPki) -> None:
    crls = load_crls(tpki.paths.crl_dir, [tpki.root, tpki.issuing])
    leaf_crl = crls[pki.fingerprint(tpki.issuing)]
    root_crl = crls[pki.fingerprint(tpki.root)]
    assert leaf_crl.revoked[tpki.agents["revoked"].serial][0] == "key-compromise"
    assert len(root_crl.revoked) == 1 and next(iter(root_crl.revoked.values()))[0] == "ca-compromise"
    assert dt.timedelta(hours=23) < leaf_crl.next_update - leaf_crl.this_update <= dt.timedelta(hours=25)


def test_serial_parsing() -> None:
    assert pki.parse_serial("0x1A:2b") == 0x1A2B
    assert pki.serial_hex(0x1A2B) == "1a2b"
    with pytest.raises(ConfigError):
        pki.parse_serial("xyz")


def test_agency_keygen_and_csr_never_need_the_ca(tmp_path: Path) -> None:
    for algorithm in keys.ALGORITHMS:
        key = keys.generate_private_key(algorithm) if algorithm != "rsa-3072" else rsa_key(3072)
        csr = pki.make_csr(key, AGENCY, SYSTEM)
        assert csr.is_signature_valid
        assert pki.validate_csr(csr)[:2] == (AGENCY, SYSTEM)
    with pytest.raises(ConfigError):
        keys.generate_private_key("ed25519")
    key_path = tmp_path / "a.key"
    keys.write_private_file(key_path, keys.private_key_pem(keys.generate_private_key(), b"secret"))
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert isinstance(keys.load_private_key(key_path, b"secret"), ec.EllipticCurvePrivateKey)
    with pytest.raises(ConfigError, match="passphrase is required"):
        keys.load_private_key(key_path)


def test_the_hub_signs_with_its_own_identity(tpki: TestPki) -> None:
    p = tpki.paths
    signer = Signer.load(p.hub_key, p.hub_cert, passphrase=PASSPHRASE.encode())
    assert signer.identity.system == pki.HUB_SYSTEM and signer.identity.agency == pki.DEFAULT_HUB_AGENCY
    assert len(signer.certificates) == 2  # the leaf and the issuing CA go into X509Data
    root = tpki.envelope(signer.identity.agency, signer.identity.system)
    verified = tpki.verifier().verify(parse(__import__("hub.envelope").envelope.to_bytes(signer.sign(root))))
    assert verified.signer == signer.identity
    with pytest.raises(ConfigError):
        Signer.load(p.hub_key, p.hub_cert, passphrase=b"wrong")
    with pytest.raises(ConfigError, match="belongs to the signing key"):
        Signer.load(p.hub_key, p.root_cert, passphrase=PASSPHRASE.encode())
