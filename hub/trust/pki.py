"""The provincial CA: a two-level hierarchy (root → issuing CA → agency and hub certificates), CSRs, renewal,
revocation lists. Pure file and cryptography work; the register of certificates and revocations lives in
PostgreSQL (``hub.store.certificates``) and ``hub.commands.trust_admin`` keeps the two in step.

Layout of a PKI directory (``Settings.state_dir / "pki"`` by default, mode 0700)::

    root-ca.pem        the trust anchor; the only certificate verification trusts
    root-ca.key        its private key, PKCS#8 encrypted with Settings.ca_passphrase, 0600
    issuing-ca.pem     the online CA that signs agency certificates (several, concatenated, during a rollover)
    issuing-ca.key     its private key, encrypted, 0600
    crl/root-ca.crl    CRL of the root (revoked issuing CAs), short next-update
    crl/issuing-ca.crl CRL of the issuing CA (revoked agency certificates), short next-update
    hub/hub.pem        the hub's own signing certificate (system "hub") followed by the issuing CA
    hub/hub.key        its private key, encrypted with the same passphrase, 0600
    gateway/server.pem the HTTPS gateway's TLS server certificate followed by the issuing CA (``hub pki issue-server``)
    gateway/server.key its private key, unencrypted PKCS#8 (the TLS server loads it unattended), 0600

Certificate profile. Subject of an end-entity certificate: ``organizationIdentifier`` (2.5.4.97) = the
agency's unified social credit code (GB 32100, check character verified), ``CN`` = the system id (the
``system`` attribute of ``env:Sender``), optionally ``O`` = the agency's name. Extensions: BasicConstraints
CA:FALSE (critical), KeyUsage digitalSignature + contentCommitment (critical), ExtendedKeyUsage
id-kp-documentSigning 1.3.6.1.5.5.7.3.36 (RFC 9336) and — on agency system certificates — id-kp-clientAuth, so the
certificate a system signs with also authenticates it to the HTTPS gateway (mutual TLS); SubjectKeyIdentifier,
AuthorityKeyIdentifier. The hub's own signing certificate carries documentSigning only. Key policy:
``hub.trust.keys.check_key_policy``.

TLS certificates (the gateway, ``hub.gateway``): a TLS-only client certificate for a system (kind ``tls``: the same
subject, KeyUsage digitalSignature, EKU clientAuth only — it cannot sign messages, the verifier requires
documentSigning) and the gateway's server certificate (kind ``server``: subject CN "Forestry Exchange Hub Gateway",
SAN DNS names and IP addresses, EKU serverAuth), whose key and chain live in ``gateway/`` of the PKI directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub import clock
from hub.envelope import agency_code
from hub.errors import ConfigError
from hub.trust import keys
from hub.trust.keys import PrivateKey

__all__ = [
    "CLIENT_AUTH",
    "DEFAULT_HUB_AGENCY",
    "DOCUMENT_SIGNING",
    "GATEWAY_NAME",
    "HUB_SYSTEM",
    "REASONS",
    "SERVER_AUTH",
    "SYSTEM_USAGES",
    "TLS_USAGES",
    "CaInit",
    "IssuedCertificate",
    "PkiPaths",
    "RevokedEntry",
    "agency_and_system",
    "build_crl",
    "ca_certificate",
    "ca_name",
    "certificate_pem",
    "chain_for_signing",
    "check_leaf_days",
    "end_entity_builder",
    "fingerprint",
    "init_ca",
    "is_initialised",
    "issue_from_csr",
    "issue_hub_certificate",
    "issue_server_certificate",
    "issued_by",
    "load_ca",
    "load_certificates",
    "load_csr",
    "make_csr",
    "parse_serial",
    "passphrase_bytes",
    "publish_crl",
    "renew",
    "serial_hex",
    "subject_for",
    "validate_csr",
]

DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
#: The extended key usages of an agency system's certificate: it signs messages and authenticates the system to the
#: HTTPS gateway. (The hub's own certificate: documentSigning only.)
SYSTEM_USAGES: tuple[x509.ObjectIdentifier, ...] = (DOCUMENT_SIGNING, CLIENT_AUTH)
#: A TLS-only client certificate (``hub pki issue --tls``): authenticates, never signs a message.
TLS_USAGES: tuple[x509.ObjectIdentifier, ...] = (CLIENT_AUTH,)
#: The CN of the gateway's TLS server certificate.
GATEWAY_NAME = "Forestry Exchange Hub Gateway"
#: The system id of the hub's own signing identity.
HUB_SYSTEM = "hub"
#: The provincial forestry department (the code used in the shipped samples); ``hub pki init --agency`` overrides.
DEFAULT_HUB_AGENCY = "11220000013544357T"
_SYSTEM_ID = re.compile(r"^[a-z0-9][a-z0-9\-]{1,62}$")

ROOT_DAYS = 3650
ISSUING_DAYS = 1825
LEAF_DAYS = 365
#: The longest validity of an end-entity certificate (agency, TLS, hub, gateway server), in days.
MAX_LEAF_DAYS = 825
#: Default interval between a CRL's thisUpdate and nextUpdate: short, so a revocation is never hidden for long
#: and a hub that stops publishing fails closed within a day.
CRL_HOURS = 24
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock differences between the CA and the verifiers

#: Revocation reasons accepted by ``hub pki revoke --reason`` → RFC 5280 reason codes.
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "ca-compromise": x509.ReasonFlags.ca_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}


@dataclass(frozen=True, slots=True)
class PkiPaths:
    root: Path

    @property
    def root_cert(self) -> Path:
        return self.root / "root-ca.pem"

    @property
    def root_key(self) -> Path:
        return self.root / "root-ca.key"

    @property
    def issuing_cert(self) -> Path:
        return self.root / "issuing-ca.pem"

    @property
    def issuing_key(self) -> Path:
        return self.root / "issuing-ca.key"

    @property
    def crl_dir(self) -> Path:
        return self.root / "crl"

    @property
    def root_crl(self) -> Path:
        return self.crl_dir / "root-ca.crl"

    @property
    def issuing_crl(self) -> Path:
        return self.crl_dir / "issuing-ca.crl"

    @property
    def hub_cert(self) -> Path:
        return self.root / "hub" / "hub.pem"

    @property
    def hub_key(self) -> Path:
        return self.root / "hub" / "hub.key"

    @property
    def gateway_dir(self) -> Path:
        return self.root / "gateway"

    @property
    def gateway_cert(self) -> Path:
        """The gateway's TLS server certificate followed by the issuing CA (``issue_server_certificate``)."""
        return self.gateway_dir / "server.pem"

    @property
    def gateway_key(self) -> Path:
        """Its private key, unencrypted PKCS#8, 0600."""
        return self.gateway_dir / "server.key"

    @property
    def ca_bundle(self) -> list[Path]:
        """What a TLS peer trusts: the root and the issuing CA(s) (``ssl`` ``cafile``: load both)."""
        return [self.root_cert, self.issuing_cert]


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate the CA made, with what the register records about it."""

    certificate: x509.Certificate
    kind: str  # root | issuing | hub | agency | tls | server
    issuer: x509.Certificate | None  # None for the self-signed root
    agency: str | None = None
    system: str | None = None

    @property
    def serial(self) -> str:
        return serial_hex(self.certificate.serial_number)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)

    @property
    def key_algorithm(self) -> str:
        return keys.describe_key(self.certificate.public_key())


@dataclass(frozen=True, slots=True)
class CaInit:
    paths: PkiPaths
    root: IssuedCertificate
    issuing: IssuedCertificate
    hub: IssuedCertificate
    crls: tuple[x509.CertificateRevocationList, ...]


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    serial: int
    reason: str  # a key of REASONS
    revoked_at: dt.datetime


# --------------------------------------------------------------------------------------------- small helpers


def _now() -> dt.datetime:
    return clock.now()


def serial_hex(serial: int) -> str:
    """How the hub writes serial numbers: lower-case hex, no separators (``hub pki list`` / ``revoke``)."""
    return format(serial, "x")


def parse_serial(text: str) -> int:
    """Parse a serial as printed by ``hub pki list`` (hex; ``0x`` prefix and ``:`` separators tolerated)."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or not re.fullmatch(r"[0-9a-f]{1,40}", cleaned):
        raise ConfigError(f"{text!r} is not a certificate serial number (hex, as printed by `hub pki list`)")
    return int(cleaned, 16)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def load_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read certificates from {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{path} does not hold PEM certificates") from None
    return certs


def check_leaf_days(days: int) -> None:
    """Refuse a validity period an end-entity certificate may not have (``--days`` of issue, issue-server, renew,
    rotate): 0 or less would issue a certificate that is dead on arrival."""
    if not 1 <= days <= MAX_LEAF_DAYS:
        raise ConfigError(f"a certificate is valid for 1 to {MAX_LEAF_DAYS} days")


def _sign_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _check_agency_system(agency: str, system: str) -> None:
    if not agency_code.is_valid(agency):
        raise ConfigError(f"{agency!r} is not a valid unified social credit code (18 characters, check character)")
    if not _SYSTEM_ID.fullmatch(system):
        raise ConfigError(f"{system!r} is not a valid system id (lower-case letters, digits and '-', 2-63 chars)")


def subject_for(agency: str, system: str, organization: str | None = None) -> x509.Name:
    """The subject of an end-entity certificate (see the module docstring)."""
    _check_agency_system(agency, system)
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "CN")]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization[:64]))
    attrs += [
        x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, agency),
        x509.NameAttribute(NameOID.COMMON_NAME, system),
    ]
    return x509.Name(attrs)


def agency_and_system(name: x509.Name) -> tuple[str, str]:
    """The agency code and system id named by a certificate or CSR subject; exactly one of each."""
    org_ids = name.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(org_ids) != 1 or len(cns) != 1:
        raise ValueError("the subject must carry exactly one organizationIdentifier (agency code) and one CN (system)")
    agency, system = org_ids[0].value, cns[0].value
    if not isinstance(agency, str) or not isinstance(system, str):
        raise ValueError("the subject's organizationIdentifier and CN must be text")
    return agency, system


def _ski(key: keys.PublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key)


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Forestry Exchange Hub"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(
    subject: x509.Name,
    public_key: keys.PublicKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: PrivateKey,
    *,
    days: int,
    path_length: int,
    now: dt.datetime,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(public_key), critical=False)
    )
    if issuer_cert is not None:
        b = b.add_extension(_aki(issuer_cert), critical=False)
    return b.sign(issuer_key, _sign_hash(issuer_key))


def end_entity_builder(
    subject: x509.Name,
    public_key: keys.PublicKey,
    issuer: x509.Certificate,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    usages: Sequence[x509.ObjectIdentifier] = (DOCUMENT_SIGNING,),
) -> x509.CertificateBuilder:
    """The builder of an end-entity certificate: document signing (the default; ``usages=SYSTEM_USAGES`` for an
    agency system, which also authenticates to the gateway), or ``usages=TLS_USAGES`` for a TLS-only client
    certificate (KeyUsage digitalSignature alone: no contentCommitment without documentSigning). Tests derive
    deviant certificates from it."""
    signs = DOCUMENT_SIGNING in usages
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=signs,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(issuer), critical=False)
    )


# --------------------------------------------------------------------------------------------- the CA


def is_initialised(pki_dir: Path) -> bool:
    p = PkiPaths(Path(pki_dir))
    return p.root_cert.exists() or p.issuing_key.exists()


def init_ca(
    pki_dir: Path,
    passphrase: str | bytes,
    *,
    hub_agency: str = DEFAULT_HUB_AGENCY,
    now: dt.datetime | None = None,
    crl_hours: int = CRL_HOURS,
) -> CaInit:
    """Create the root, the issuing CA, their first (empty) CRLs and the hub's own signing certificate.

    Refuses to overwrite an existing CA. The three private keys are written encrypted with ``passphrase``.
    """
    pw = _passphrase(passphrase)
    paths = PkiPaths(Path(pki_dir))
    if is_initialised(paths.root):
        raise ConfigError(f"a CA already exists in {paths.root}; refusing to overwrite it")
    _check_agency_system(hub_agency, HUB_SYSTEM)
    now = now or _now()
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.root.chmod(0o700)

    root_key = keys.generate_private_key("ec-p384")
    root = _ca_certificate(
        _ca_name("Forestry Exchange Hub Root CA"),
        root_key.public_key(),
        None,
        root_key,
        days=ROOT_DAYS,
        path_length=1,
        now=now,
    )
    issuing_key = keys.generate_private_key("ec-p384")
    issuing = _ca_certificate(
        _ca_name("Forestry Exchange Hub Issuing CA 1"),
        issuing_key.public_key(),
        root,
        root_key,
        days=ISSUING_DAYS,
        path_length=0,
        now=now,
    )
    keys.write_private_file(paths.root_key, keys.private_key_pem(root_key, pw))
    keys.write_private_file(paths.issuing_key, keys.private_key_pem(issuing_key, pw))
    keys.write_public_file(paths.root_cert, certificate_pem(root))
    keys.write_public_file(paths.issuing_cert, certificate_pem(issuing))
    crls = (
        publish_crl(paths.root_crl, root, root_key, (), number=1, now=now, hours=crl_hours),
        publish_crl(paths.issuing_crl, issuing, issuing_key, (), number=1, now=now, hours=crl_hours),
    )
    hub = issue_hub_certificate(paths.root, passphrase, hub_agency, now=now, ca=(issuing, issuing_key))
    return CaInit(
        paths,
        IssuedCertificate(root, "root", None),
        IssuedCertificate(issuing, "issuing", root),
        hub,
        crls,
    )


def _passphrase(passphrase: str | bytes) -> bytes:
    pw = passphrase.encode() if isinstance(passphrase, str) else passphrase
    if not pw:
        raise ConfigError("the CA passphrase (HUB_CA_PASSPHRASE) must not be empty")
    return pw


def load_ca(pki_dir: Path, passphrase: str | bytes, *, which: str = "issuing") -> tuple[x509.Certificate, PrivateKey]:
    """The certificate and decrypted key of the ``issuing`` (default) or ``root`` CA."""
    paths = PkiPaths(Path(pki_dir))
    cert_path, key_path = (
        (paths.root_cert, paths.root_key) if which == "root" else (paths.issuing_cert, paths.issuing_key)
    )
    if not cert_path.exists():
        raise ConfigError(f"no CA in {paths.root}; run `hub pki init` first")
    key = keys.load_private_key(key_path, _passphrase(passphrase))
    certs = load_certificates(cert_path)
    own = keys.spki(key.public_key())
    for cert in certs:
        if keys.spki(cert.public_key()) == own:
            return cert, key
    raise ConfigError(f"{key_path} does not belong to any certificate in {cert_path}")


def issue_hub_certificate(
    pki_dir: Path,
    passphrase: str | bytes,
    agency: str,
    *,
    algorithm: str = "ec-p256",
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
    ca: tuple[x509.Certificate, PrivateKey] | None = None,
) -> IssuedCertificate:
    """(Re)issue the hub's own signing identity (system ``hub``) with a new key, written to ``hub/``."""
    check_leaf_days(days)
    paths = PkiPaths(Path(pki_dir))
    issuing, issuing_key = ca or load_ca(paths.root, passphrase)
    now = now or _now()
    if issuing.not_valid_after_utc <= now:
        raise ConfigError(
            f"the issuing CA {serial_hex(issuing.serial_number)} has expired: run `hub pki rollover-issuing` first"
        )
    key = keys.generate_private_key(algorithm)
    cert = end_entity_builder(
        subject_for(agency, HUB_SYSTEM, "Forestry Exchange Hub"),
        key.public_key(),
        issuing,
        not_before=now - _BACKDATE,
        not_after=min(now + dt.timedelta(days=days), issuing.not_valid_after_utc),
    ).sign(issuing_key, _sign_hash(issuing_key))
    keys.write_private_file(paths.hub_key, keys.private_key_pem(key, _passphrase(passphrase)))
    keys.write_public_file(paths.hub_cert, certificate_pem(cert, issuing))
    paths.hub_key.parent.chmod(0o700)
    return IssuedCertificate(cert, "hub", issuing, agency, HUB_SYSTEM)


def validate_csr(csr: x509.CertificateSigningRequest) -> tuple[str, str, str | None]:
    """Check a CSR (proof of possession, key policy, subject); return (agency, system, organization)."""
    if not csr.is_signature_valid:
        raise ConfigError("the CSR's signature does not verify (it was not made with the key it carries)")
    keys.check_key_policy(csr.public_key())
    try:
        agency, system = agency_and_system(csr.subject)
    except ValueError as exc:
        raise ConfigError(f"CSR subject: {exc}") from None
    _check_agency_system(agency, system)
    orgs = csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    org = orgs[0].value if orgs and isinstance(orgs[0].value, str) else None
    return agency, system, org


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError:
        try:
            return x509.load_der_x509_csr(data)
        except ValueError:
            raise ConfigError("the file is not a PEM or DER certificate signing request") from None


def issue_from_csr(
    pki_dir: Path,
    passphrase: str | bytes,
    csr: x509.CertificateSigningRequest | bytes,
    *,
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
    ca: tuple[x509.Certificate, PrivateKey] | None = None,
    tls: bool = False,
) -> IssuedCertificate:
    """Issue an agency system's certificate from its CSR (the key never leaves the agency): document signing and
    TLS client authentication (kind ``agency``), or with ``tls`` a TLS-only client certificate for the gateway
    (kind ``tls``, clientAuth only: it cannot sign messages)."""
    if isinstance(csr, bytes):
        csr = load_csr(csr)
    agency, system, org = validate_csr(csr)
    if system == HUB_SYSTEM:
        raise ConfigError("system id 'hub' is reserved for the hub's own certificate")
    check_leaf_days(days)
    issuing, issuing_key = ca or load_ca(pki_dir, passphrase)
    now = now or _now()
    public = keys.check_key_policy(csr.public_key())
    cert = end_entity_builder(
        subject_for(agency, system, org),
        public,
        issuing,
        not_before=now - _BACKDATE,
        not_after=min(now + dt.timedelta(days=days), issuing.not_valid_after_utc),
        usages=TLS_USAGES if tls else SYSTEM_USAGES,
    ).sign(issuing_key, _sign_hash(issuing_key))
    return IssuedCertificate(cert, "tls" if tls else "agency", issuing, agency, system)


def renew(
    pki_dir: Path,
    passphrase: str | bytes,
    old: x509.Certificate,
    *,
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
) -> IssuedCertificate:
    """A new certificate for the same subject and key, valid from now (the old one stays valid until it
    expires or is revoked as ``superseded``). A key change needs a new CSR instead. An agency certificate renews
    with the current system profile (documentSigning + clientAuth), a TLS-only one stays TLS-only."""
    check_leaf_days(days)
    public = keys.check_key_policy(old.public_key())
    agency, system = agency_and_system(old.subject)
    issuing, issuing_key = load_ca(pki_dir, passphrase)
    now = now or _now()
    kind = "hub" if system == HUB_SYSTEM else "tls" if _is_tls_only(old) else "agency"
    usages = {"hub": (DOCUMENT_SIGNING,), "tls": TLS_USAGES, "agency": SYSTEM_USAGES}[kind]
    cert = end_entity_builder(
        old.subject,
        public,
        issuing,
        not_before=now - _BACKDATE,
        not_after=min(now + dt.timedelta(days=days), issuing.not_valid_after_utc),
        usages=usages,
    ).sign(issuing_key, _sign_hash(issuing_key))
    return IssuedCertificate(cert, kind, issuing, agency, system)


def _is_tls_only(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return DOCUMENT_SIGNING not in eku and CLIENT_AUTH in eku


# --------------------------------------------------------------------------------------------- the gateway's TLS


def _subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        text = host.strip().lower().removeprefix("[").removesuffix("]")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
            continue
        except ValueError:
            pass
        labels = text.rstrip(".").split(".")
        if not text or not all(re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label) for label in labels):
            raise ConfigError(f"{host!r} is neither an IP address nor a DNS host name (letters, digits, '-', '.')")
        names.append(x509.DNSName(".".join(labels)))
    if not names:
        raise ConfigError("the gateway's server certificate needs at least one host name or IP address (--host)")
    if len(set(names)) != len(names):
        raise ConfigError("a host name or address is listed twice")
    return names


def issue_server_certificate(
    pki_dir: Path,
    passphrase: str | bytes,
    hosts: Sequence[str],
    *,
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
    algorithm: str = "ec-p256",
    out_dir: Path | None = None,
) -> IssuedCertificate:
    """Issue the HTTPS gateway's TLS server certificate with a new key: subject CN ``GATEWAY_NAME`` (O the hub),
    SubjectAltName = ``hosts`` (DNS names and IP addresses; clients check the host they connect to against it),
    KeyUsage digitalSignature, EKU serverAuth. Writes ``server.pem`` (certificate + issuing CA) and ``server.key``
    (unencrypted PKCS#8, 0600) to ``out_dir`` (default ``<pki_dir>/gateway``)."""
    check_leaf_days(days)
    sans = _subject_alt_names(hosts)
    paths = PkiPaths(Path(pki_dir))
    issuing, issuing_key = load_ca(paths.root, passphrase)
    key = keys.generate_private_key(algorithm)
    now = now or _now()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Forestry Exchange Hub"),
            x509.NameAttribute(NameOID.COMMON_NAME, GATEWAY_NAME),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuing.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=days), issuing.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not isinstance(key, ec.EllipticCurvePrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(_ski(key.public_key()), critical=False)
        .add_extension(_aki(issuing), critical=False)
    ).sign(issuing_key, _sign_hash(issuing_key))
    target = Path(out_dir) if out_dir is not None else paths.gateway_dir
    if not target.exists():
        target.mkdir(parents=True)
        target.chmod(0o700)
    keys.write_private_file(target / "server.key", keys.private_key_pem(key, None))
    keys.write_public_file(target / "server.pem", certificate_pem(cert, issuing))
    return IssuedCertificate(cert, "server", issuing)


# --------------------------------------------------------------------------------------------- CRLs


def build_crl(
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    revoked: Iterable[RevokedEntry],
    *,
    number: int,
    now: dt.datetime | None = None,
    hours: int = CRL_HOURS,
) -> x509.CertificateRevocationList:
    now = now or _now()
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - _BACKDATE)
        .next_update(now + dt.timedelta(hours=hours))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_aki(issuer), critical=False)
    )
    for entry in revoked:
        rb = x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
        flag = REASONS.get(entry.reason, x509.ReasonFlags.unspecified)
        if flag is not x509.ReasonFlags.unspecified:
            rb = rb.add_extension(x509.CRLReason(flag), critical=False)
        b = b.add_revoked_certificate(rb.build())
    return b.sign(issuer_key, _sign_hash(issuer_key))


def publish_crl(
    path: Path,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    revoked: Iterable[RevokedEntry],
    *,
    number: int,
    now: dt.datetime | None = None,
    hours: int = CRL_HOURS,
) -> x509.CertificateRevocationList:
    """Build a CRL and write it atomically where verifiers load it."""
    crl = build_crl(issuer, issuer_key, revoked, number=number, now=now, hours=hours)
    keys.write_public_file(Path(path), crl.public_bytes(serialization.Encoding.PEM))
    return crl


# --------------------------------------------------------------------------------------------- agency side


def make_csr(
    key: PrivateKey, agency: str, system: str, organization: str | None = None
) -> x509.CertificateSigningRequest:
    """The CSR an agency system sends to the CA (its private key stays with the agency)."""
    keys.check_key_policy(key)
    hash_alg: hashes.SHA256 | hashes.SHA384 = (
        _sign_hash(key) if isinstance(key, ec.EllipticCurvePrivateKey) else hashes.SHA256()
    )
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject_for(agency, system, organization))
        .sign(key, hash_alg)
    )


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` issued ``cert``: its subject is the certificate's issuer and its key verifies the signature."""
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def chain_for_signing(cert: x509.Certificate, ca_certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The leaf followed by the CA that issued it (what goes into X509Data and into ``--out`` files)."""
    for ca in ca_certs:
        if issued_by(cert, ca):
            return [cert, ca]
    return [cert]


#: Public names for the CA building blocks used by ``hub.trust.lifecycle`` (issuing-CA rollover).
ca_certificate = _ca_certificate
ca_name = _ca_name
passphrase_bytes = _passphrase
