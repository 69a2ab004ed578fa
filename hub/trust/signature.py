"""Enveloped XML signatures: ``Signer`` (the hub's profile, XML-SECURITY.md §4) and ``Verifier`` (the checks of
§5, in that order), both narrow implementations of the one profile the hub allows.

Why not signxml on the hot path: signxml serialises and re-parses the document once per reference and the
signature once more, which costs about eight times the bare signature check on a 2 KB envelope. The hub allows
exactly one shape of signature (``hub.trust.profile``), so verification reduces to: exclusive C14N of
``SignedInfo``, one signature check with the cached public key, exclusive C14N of the envelope without its
signature, one SHA-256. ``hub.trust.reference.SignxmlVerifier`` runs the same checks with signxml doing the
cryptography, and differential tests show that both, and xmlsec1, agree on every test vector.

Verification order (§5): (1) the profile, before any cryptography; (2) the certificate path to the hub root
only, with KeyUsage digitalSignature and the document-signing EKU; (3) the key policy; (4) revocation from the
hub's own CRLs, failing closed when one is missing or stale; (5) ``SignatureValue`` over ``SignedInfo``, then the
digest of the envelope; (6) the caller acts only on ``Verified.root``: the envelope without its signature, which
canonicalises to exactly the signed bytes (comments cannot split its text). Steps 2-4 are cached per
certificate set and re-checked against the clock on every message; a CRL reload empties the cache.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import hmac
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    VerificationError,
)
from lxml import etree

from hub.envelope.intake import parser as intake_parser
from hub.envelope.model import Envelope
from hub.errors import CertificateRevoked, CertificateUntrusted, ConfigError, SignatureInvalid
from hub.trust import keys
from hub.trust.crl import RevocationProblem, check_revocation
from hub.trust.keys import PrivateKey, PublicKey
from hub.trust.pki import DOCUMENT_SIGNING, agency_and_system, fingerprint, issued_by, load_certificates, serial_hex
from hub.trust.profile import (
    ALLOWED_SIGNATURE_METHODS,
    DS,
    ENVELOPED,
    EXC_C14N,
    SHA256,
    SignatureParts,
    check_profile,
    name_of,
)
from hub.trust.truststore import TrustStore

__all__ = [
    "Signer",
    "SignerIdentity",
    "Verified",
    "Verifier",
    "c14n",
    "check_signer_binding",
    "identity_of",
]

_T_SIGNATURE = f"{{{DS}}}Signature"


def c14n(el: etree._Element) -> bytes:
    """Exclusive XML Canonicalization 1.0 without comments of one element (in its namespace context)."""
    return etree.tostring(el, method="c14n", exclusive=True, with_comments=False)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class SignerIdentity:
    """Who signed: the agency code and system id from the certificate subject, and the certificate itself."""

    agency: str
    system: str
    serial: int
    fingerprint: str
    not_after: dt.datetime

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.serial)

    def __str__(self) -> str:
        return f"{self.agency}/{self.system}"


def identity_of(cert: x509.Certificate) -> SignerIdentity:
    agency, system = agency_and_system(cert.subject)
    return SignerIdentity(agency, system, cert.serial_number, fingerprint(cert), cert.not_valid_after_utc)


@dataclass(frozen=True, slots=True)
class Verified:
    """The outcome of a successful verification.

    ``root`` is the only tree to act on from now on: the envelope with its signature removed, i.e. exactly what
    was signed. ``digest`` is the hex SHA-256 of its canonical form (the reference digest; it goes into
    ``hub.receipt``). ``method`` is the SignatureMethod URI. ``canonical`` is that canonical form itself: the
    exact bytes the digest covers (the hub forwards them, re-signed, as the delivery). ``signature`` is the removed
    ``ds:Signature`` element in its exclusive-C14N serialisation, made once here: the hub carries it verbatim in the
    delivery beside its own (``hub.pipeline.replies.countersigned_document``), so that recipients can check who
    signed. Exclusive C14N of that element does not depend on where it sits in an envelope (the envelope's root
    renders only its own namespace, the signature only the XML-DSig one), so these bytes are also what any
    verifier canonicalises it to inside the delivery.
    """

    root: etree._Element
    signer: SignerIdentity
    digest: str
    method: str
    canonical: bytes = b""
    signature: bytes = b""


def check_signer_binding(verified: Verified, envelope: Envelope) -> None:
    """The certificate's agency and system must be the signed ``env:Sender`` (§5.10)."""
    sender = envelope.sender
    if (verified.signer.agency, verified.signer.system) != (sender.agency, sender.system):
        raise CertificateUntrusted(
            f"the message is signed with the certificate of {verified.signer} (serial "
            f"{verified.signer.serial_hex}) but its sender is {sender.agency}/{sender.system}",
            code="CERT_SIGNER_MISMATCH",
        )


# ============================================================================================== signing


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _signature_template(method: str, certificates: Sequence[x509.Certificate]) -> etree._Element:
    ds = f"{{{DS}}}"
    sig = etree.Element(ds + "Signature", nsmap={"ds": DS})
    si = etree.SubElement(sig, ds + "SignedInfo")
    etree.SubElement(si, ds + "CanonicalizationMethod", Algorithm=EXC_C14N)
    etree.SubElement(si, ds + "SignatureMethod", Algorithm=method)
    ref = etree.SubElement(si, ds + "Reference", URI="")
    transforms = etree.SubElement(ref, ds + "Transforms")
    etree.SubElement(transforms, ds + "Transform", Algorithm=ENVELOPED)
    etree.SubElement(transforms, ds + "Transform", Algorithm=EXC_C14N)
    etree.SubElement(ref, ds + "DigestMethod", Algorithm=SHA256)
    etree.SubElement(ref, ds + "DigestValue")
    etree.SubElement(sig, ds + "SignatureValue")
    x509_data = etree.SubElement(etree.SubElement(sig, ds + "KeyInfo"), ds + "X509Data")
    for cert in certificates:
        etree.SubElement(x509_data, ds + "X509Certificate").text = _b64(cert.public_bytes(serialization.Encoding.DER))
    return sig


_DIGEST_MARK = "D1G3ST"
_VALUE_MARK = "S1GVALUE"


def _canonical_parts(template: etree._Element) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """Cut a signature template at its DigestValue and SignatureValue: SignedInfo's exclusive C14N around the
    digest, and the Signature's serialisation around the digest and the value (base64 needs no escaping)."""
    sig = copy.deepcopy(template)
    sig[0][2][2].text = _DIGEST_MARK
    sig[1].text = _VALUE_MARK
    si_prefix, si_suffix = c14n(sig[0]).split(_DIGEST_MARK.encode("ascii"))
    serialised = etree.tostring(sig, encoding="UTF-8")
    sig_prefix, rest = serialised.split(_DIGEST_MARK.encode("ascii"))
    sig_middle, sig_suffix = rest.split(_VALUE_MARK.encode("ascii"))
    return si_prefix, si_suffix, sig_prefix, sig_middle, sig_suffix


def _raw_signer(key: PrivateKey, method: str) -> Callable[[bytes], bytes]:
    """``data → SignatureValue`` bytes for one key and method (raw ``r || s`` for ECDSA, PKCS#1 v1.5 for RSA),
    with the key's type, curve and algorithm objects looked up once: a hub signs twice per message."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sign, algorithm, size = key.sign, keys.ecdsa_for_method(method), keys.ecdsa_size(key)
        der_to_raw = keys.der_to_raw

        def ecdsa(data: bytes) -> bytes:
            return der_to_raw(sign(data, algorithm), key, size)

        return ecdsa
    rsa_sign, pkcs1, sha256 = key.sign, padding.PKCS1v15(), hashes.SHA256()
    return lambda data: rsa_sign(data, pkcs1, sha256)


class Signer:
    """Signs envelopes with one key and certificate chain, loaded once.

    ``sign(root)`` appends one enveloped ``ds:Signature`` as the last child of the envelope root: ``URI=""``,
    enveloped-signature + exclusive C14N, SHA-256, the method that fits the key (ECDSA P-256 → ecdsa-sha256,
    P-384 → ecdsa-sha384, RSA → rsa-sha256), ``X509Data`` with the leaf and the CA certificates given.
    """

    def __init__(self, key: PrivateKey, certificates: Sequence[x509.Certificate]) -> None:
        keys.check_key_policy(key)
        own = keys.spki(key.public_key())
        leaf = next((c for c in certificates if keys.spki(c.public_key()) == own), None)  # type: ignore[arg-type]
        if leaf is None:
            raise ConfigError("none of the certificates belongs to the signing key")
        try:
            self.identity = identity_of(leaf)
        except ValueError as exc:
            raise ConfigError(f"the signing certificate does not name an agency and system: {exc}") from None
        self.certificates = (leaf, *(c for c in certificates if c is not leaf))
        self.method = keys.signature_method_for(key)
        self._key = key
        self._sign = _raw_signer(key, self.method)
        self._template = _signature_template(self.method, self.certificates)
        self._canonical_parts: tuple[bytes, bytes, bytes, bytes, bytes] | None = None

    @classmethod
    def load(cls, key_path: Path, cert_path: Path, *, passphrase: bytes | None = None) -> Signer:
        """Load the private key (decrypting it once) and the certificate file (leaf, then its CA)."""
        return cls(keys.load_private_key(Path(key_path), passphrase), load_certificates(Path(cert_path)))

    def sign(self, root: etree._Element) -> etree._Element:
        if root.find(_T_SIGNATURE) is not None:
            raise SignatureInvalid("the envelope is already signed", code="SIG_PROFILE")
        digest = hashlib.sha256(c14n(root)).digest()
        sig = copy.deepcopy(self._template)
        sig[0][2][2].text = _b64(digest)
        root.append(sig)
        sig[1].text = _b64(self._sign(c14n(sig[0])))
        return root

    def signature_for_canonical(self, canonical: bytes) -> bytes:
        """The serialised enveloped ``ds:Signature`` for a document given as its exclusive-C14N bytes (built by
        the caller directly in canonical form). Insert it as the last child of the root, with no whitespace
        around it: removing it then leaves exactly ``canonical``, which is what verifiers digest.

        SignedInfo's canonical form and the Signature's serialisation are cut into fixed parts once per signer, so
        this costs one SHA-256 of the document and one signature."""
        return self.signature_for_digest(hashlib.sha256(canonical).digest())

    def signature_for_digest(self, digest: bytes) -> bytes:
        """``signature_for_canonical`` when the SHA-256 of the canonical bytes is already known (the hub
        re-signing content whose digest its verifier just computed under the same profile)."""
        parts = self._canonical_parts
        if parts is None:
            parts = self._canonical_parts = _canonical_parts(self._template)
        si_prefix, si_suffix, sig_prefix, sig_middle, sig_suffix = parts
        b64 = _b64(digest).encode("ascii")
        value = _b64(self._sign(si_prefix + b64 + si_suffix)).encode("ascii")
        return sig_prefix + b64 + sig_middle + value + sig_suffix

    def sign_bytes(self, data: bytes) -> bytes:
        """A detached signature over ``data`` with the same key and method (evidence checkpoints): raw r||s for
        ECDSA, PKCS#1 v1.5 for RSA, as in XML-DSig ``SignatureValue``."""
        return self._sign(data)


def sign_with(
    root: etree._Element,
    key: PrivateKey,
    certificates: Sequence[x509.Certificate],
    *,
    method: str | None = None,
) -> etree._Element:
    """Sign without the key policy (tests use it to make signatures the verifier must refuse)."""
    method = method or (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
        if isinstance(key, ec.EllipticCurvePrivateKey)
        else "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    )
    digest = hashlib.sha256(c14n(root)).digest()
    sig = _signature_template(method, certificates)
    sig[0][2][2].text = _b64(digest)
    root.append(sig)
    data = c14n(sig[0])
    if isinstance(key, ec.EllipticCurvePrivateKey):
        value = keys.der_to_raw(key.sign(data, ec.ECDSA(keys.hash_for_method(method))), key)
    else:
        value = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    sig[1].text = _b64(value)
    return root


# ============================================================================================== verification


def _require_ku(policy: object, cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is None or not ku.digital_signature:
        raise ValueError("KeyUsage does not allow digitalSignature")


def _require_eku(policy: object, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    if eku is None or DOCUMENT_SIGNING not in eku:
        raise ValueError("ExtendedKeyUsage lacks id-kp-documentSigning (1.3.6.1.5.5.7.3.36)")


_EE_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _require_ku)  # type: ignore[arg-type]
    .require_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_eku)  # type: ignore[arg-type]
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _revocation_error(p: RevocationProblem, leaf: x509.Certificate) -> CertificateRevoked:
    """The verifier's words for a revocation problem of a chain whose end entity is ``leaf``."""
    cert, issuer = p.subject, p.issuer
    if p.code == "CERT_REVOKED":
        what = "certificate" if cert == leaf else "issuing CA"
        return CertificateRevoked(
            f"{what} {_cn(cert)} (serial {serial_hex(cert.serial_number)}) was revoked on "
            f"{p.when:%Y-%m-%d %H:%M} UTC ({p.reason})",
            code="CERT_REVOKED",
        )
    if p.crl is None:
        return CertificateRevoked(
            f"no CRL of {_cn(issuer)} is available; revocation of {_cn(cert)} cannot be checked",
            code="CERT_CRL_UNAVAILABLE",
        )
    return CertificateRevoked(
        f"the CRL of {_cn(issuer)} went stale at {p.crl.next_update:%Y-%m-%d %H:%M} UTC; revocation "
        "cannot be checked until a fresh CRL is published (hub pki crl)",
        code="CERT_CRL_UNAVAILABLE",
    )


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else cert.subject.rfc4514_string()
    return str(value)[:80]


@dataclass(frozen=True, slots=True)
class _TrustedLeaf:
    """A certificate set whose path, key policy and revocation status were checked (cached)."""

    certificate: x509.Certificate
    public_key: PublicKey
    identity: SignerIdentity
    valid_from: dt.datetime
    valid_until: dt.datetime
    crl_until: dt.datetime
    crl_name: str
    #: The allow-listed SignatureMethods that fit the key (``keys.method_fits_key``), asked once.
    methods: frozenset[str] = frozenset()
    #: Bytes of each of r and s for an ECDSA key; 0 for RSA.
    ecdsa_size: int = 0


class Verifier:
    """Verifies envelopes against one ``TrustStore``. Thread-safe; one per process is enough.

    ``now`` is the trusted clock (UTC-aware datetimes); tests inject one. With ``complete_chain`` (the hub's
    intake, ``hub verify``) a signature must carry its signer's issuing CA in ``ds:X509Data`` even though this store
    has it: the hub forwards the originator's signature, and its recipients hold only the hub root.
    """

    cache_size = 4096

    def __init__(
        self, store: TrustStore, *, now: Callable[[], dt.datetime] | None = None, complete_chain: bool = False
    ) -> None:
        self.store = store
        self.complete_chain = complete_chain
        self._now = now or _utcnow
        self._cache: dict[bytes, _TrustedLeaf] = {}
        self._generation = store.generation
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ public

    def verify(self, root: etree._Element) -> Verified:
        """Verify an envelope tree (parsed by ``hub.envelope.parse`` and schema-valid); raise a ``TrustError``.

        On success the signature has been removed from ``root`` and ``Verified.root`` is the tree to use. On
        failure ``root`` is left as it was.
        """
        parts = check_profile(root)  # 1: structure and algorithms, before any cryptography
        leaf = self.trusted(parts, self.now())  # 2-4: path, key policy, revocation (cached)
        signed_root, digest, canonical = self._check_signature(root, parts, leaf)  # 5
        return Verified(signed_root, leaf.identity, digest, parts.method, canonical, c14n(parts.signature))

    def now(self) -> dt.datetime:
        """The trusted clock, after picking up changed CRL or CA files (at most once per refresh interval)."""
        self.store.refresh_if_due()
        if self._generation != self.store.generation:
            with self._lock:
                self._cache.clear()
                self._generation = self.store.generation
        return self._now()

    def trusted(self, parts: SignatureParts, now: dt.datetime) -> _TrustedLeaf:
        """Steps 2-4 for one profile-checked signature: its certificate set's path to the root, key policy and
        revocation (cached per certificate set, the clock re-checked), and that its method fits the key."""
        leaf = self._trusted_leaf(parts, now)
        if parts.method not in leaf.methods:
            raise SignatureInvalid(
                f"signature method {name_of(parts.method)} does not fit the certificate's "
                f"{keys.describe_key(leaf.public_key)} key",
                code="SIG_ALGORITHM",
            )
        return leaf

    # ------------------------------------------------------------------------------------------ 5: crypto

    @staticmethod
    def check_value(parts: SignatureParts, leaf: _TrustedLeaf, *, whose: str = "") -> None:
        """``SignatureValue`` over the exclusive C14N of ``SignedInfo`` with the trusted leaf's key (SIG_VALUE)."""
        key = leaf.public_key
        signed_info = c14n(parts.signed_info)
        try:
            if leaf.ecdsa_size:  # the key's type, asked once per certificate set
                ec_key = cast("ec.EllipticCurvePublicKey", key)
                der = keys.raw_to_der(parts.signature_value, ec_key, leaf.ecdsa_size)
                ec_key.verify(der, signed_info, keys.ecdsa_for_method(parts.method))
            else:
                cast("rsa.RSAPublicKey", key).verify(
                    parts.signature_value, signed_info, padding.PKCS1v15(), hashes.SHA256()
                )
        except InvalidSignature:
            raise SignatureInvalid(
                f"the SignatureValue{whose} does not verify with the certificate's key (SignedInfo was altered or "
                "signed with another key)",
                code="SIG_VALUE",
            ) from None

    def _check_signature(
        self, root: etree._Element, parts: SignatureParts, leaf: _TrustedLeaf
    ) -> tuple[etree._Element, str, bytes]:
        """SignatureValue over SignedInfo first (W3C best practice 1), then the digest of the envelope. Returns the
        tree to act on, the hex digest and the canonical bytes it covers."""
        self.check_value(parts, leaf)
        sig = parts.signature
        index = root.index(sig)
        prev = sig.getprevious()
        saved = prev.tail if prev is not None else root.text
        tail = sig.tail
        root.remove(sig)  # the enveloped-signature transform; lxml takes the tail along, the XPath model keeps it
        if tail:
            if prev is not None:
                prev.tail = (prev.tail or "") + tail
            else:
                root.text = (root.text or "") + tail
        signed = c14n(root)
        digest = hashlib.sha256(signed).digest()
        if not hmac.compare_digest(digest, parts.digest_value):
            if prev is not None:
                prev.tail = saved
            else:
                root.text = saved
            root.insert(index, sig)
            raise SignatureInvalid(
                "the envelope's digest does not match the signed DigestValue: it was altered after signing",
                code="SIG_DIGEST",
            )
        if next(root.iter(etree.Comment), None) is not None:
            # A tree that kept comments (not parsed by hub.envelope.parse): rebuild it from the signed bytes so
            # that no comment can split a text value.
            root = etree.fromstring(signed, intake_parser())
        return root, digest.hex(), signed

    # ------------------------------------------------------------------------------------------ 2-4: trust

    def _trusted_leaf(self, parts: SignatureParts, now: dt.datetime) -> _TrustedLeaf:
        cache_key = hashlib.sha256("\n".join(parts.certificate_texts).encode()).digest()
        leaf = self._cache.get(cache_key)
        if leaf is None:
            leaf = self._validate(parts.decode_certificates(), now)
            with self._lock:
                if len(self._cache) >= self.cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[cache_key] = leaf
        if now < leaf.valid_from or now > leaf.valid_until:
            raise CertificateUntrusted(
                f"the certificate chain of {leaf.identity} is valid from {leaf.valid_from:%Y-%m-%d %H:%M} to "
                f"{leaf.valid_until:%Y-%m-%d %H:%M} UTC, not now",
                code="CERT_EXPIRED",
            )
        if now >= leaf.crl_until:
            raise CertificateRevoked(
                f"the CRL of {leaf.crl_name} went stale at {leaf.crl_until:%Y-%m-%d %H:%M} UTC; revocation cannot be "
                "checked until a fresh CRL is published (hub pki crl)",
                code="CERT_CRL_UNAVAILABLE",
            )
        return leaf

    def _validate(self, ders: tuple[bytes, ...], now: dt.datetime) -> _TrustedLeaf:
        certs: list[x509.Certificate] = []
        for der in ders:
            try:
                cert = x509.load_der_x509_certificate(der)
                # cryptography parses fields when they are first read: read every one the checks below use now, so
                # a corrupted certificate is refused here with its code, not later as an internal error.
                _ = (cert.version, cert.issuer, cert.subject, cert.extensions, cert.public_key())
                _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number)
            except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension) as exc:
                raise SignatureInvalid(
                    f"a ds:X509Certificate is not a well-formed DER X.509 certificate ({type(exc).__name__})",
                    code="SIG_PROFILE",
                ) from None
            certs.append(cert)
        leaves = [c for c in certs if not _is_ca(c)]
        if not leaves:
            raise CertificateUntrusted(
                "ds:X509Data holds only CA certificates; a CA certificate cannot sign messages", code="CERT_USAGE"
            )
        if len(leaves) > 1:
            raise SignatureInvalid("ds:X509Data holds more than one end-entity certificate", code="SIG_PROFILE")
        leaf = leaves[0]
        known = {fingerprint(c) for c in certs}
        intermediates = [c for c in certs if c is not leaf] + [
            c for c in self.store.issuing if fingerprint(c) not in known
        ]
        verifier = (
            PolicyBuilder()
            .store(self.store.anchor)
            .time(now)
            .max_chain_depth(2)
            .extension_policies(ee_policy=_EE_POLICY, ca_policy=_CA_POLICY)
            .build_client_verifier()
        )
        try:
            chain = verifier.verify(leaf, intermediates).chain
        except VerificationError as exc:
            raise self._diagnose(leaf, certs, now, str(exc)) from None
        if self.complete_chain and any(fingerprint(ca) not in known for ca in chain[1:-1]):
            missing = next(ca for ca in chain[1:-1] if fingerprint(ca) not in known)
            raise CertificateUntrusted(
                f"ds:X509Data carries the signer's certificate {_cn(leaf)} without its issuing CA {_cn(missing)}: "
                "recipients hold only the hub root and could not check who signed; put the issuing CA's certificate "
                "after the signer's (xmlsec1: --privkey-pem KEY,LEAF.pem,ISSUING-CA.pem)",
                code="CERT_UNTRUSTED",
            )
        public = keys.check_key_policy(leaf.public_key())  # 3: the chain verifier accepts P-192, RSA-2048, …
        try:
            identity = identity_of(leaf)
        except ValueError as exc:
            raise CertificateUntrusted(
                f"the certificate does not name an agency and system: {exc}", code="CERT_USAGE"
            ) from None

        # 4: revocation, top-down, so a revoked CA is reported as such.
        status = check_revocation(
            self.store.crl_for, [(chain[i], chain[i + 1]) for i in reversed(range(len(chain) - 1))], now
        )
        if isinstance(status, RevocationProblem):
            raise _revocation_error(status, leaf)
        crl_until, crl_name = status.until, _cn(status.by)
        return _TrustedLeaf(
            leaf,
            public,
            identity,
            max(c.not_valid_before_utc for c in chain),
            min(c.not_valid_after_utc for c in chain),
            crl_until,
            crl_name,
            frozenset(m for m in ALLOWED_SIGNATURE_METHODS if keys.method_fits_key(m, public)),
            keys.ecdsa_size(public) if isinstance(public, ec.EllipticCurvePublicKey) else 0,
        )

    def _diagnose(self, leaf: x509.Certificate, certs: list[x509.Certificate], now: dt.datetime, why: str) -> Exception:
        """Turn a failed path validation into the most specific code, without trusting anything new."""
        root = self.store.root
        issuer: x509.Certificate | None = None
        for ca in (*self.store.issuing, root):
            if issued_by(leaf, ca):
                issuer = ca
                break
        if issuer is None:
            for ca in certs:
                if ca is not leaf and _is_ca(ca) and issued_by(leaf, ca) and issued_by(ca, root):
                    issuer = ca
                    break
        if issuer is None:
            if leaf.issuer != root.subject and not any(_is_ca(c) for c in certs):
                issuer_names = leaf.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
                named = str(issuer_names[0].value)[:80] if issuer_names else leaf.issuer.rfc4514_string()[:160]
                return CertificateUntrusted(
                    f"certificate {leaf.subject.rfc4514_string()[:160]} cannot be linked to the hub root: ds:X509Data "
                    f"does not carry the certificate of its issuer {named} (the issuing CA's certificate must follow "
                    "the signer's), or it was not issued by the hub CA",
                    code="CERT_UNTRUSTED",
                )
            return CertificateUntrusted(
                f"certificate {leaf.subject.rfc4514_string()[:160]} was not issued by the hub CA",
                code="CERT_UNTRUSTED",
            )
        for cert, what in ((leaf, "certificate"), (issuer, "issuing CA certificate")):
            if now < cert.not_valid_before_utc:
                return CertificateUntrusted(
                    f"the {what} {_cn(cert)} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                    code="CERT_EXPIRED",
                )
            if now > cert.not_valid_after_utc:
                return CertificateUntrusted(
                    f"the {what} {_cn(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
                    code="CERT_EXPIRED",
                )
        ku: x509.KeyUsage | None = None
        eku: x509.ExtendedKeyUsage | None = None
        try:
            ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            pass
        try:
            eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            pass
        try:
            _require_ku(None, leaf, ku)
            _require_eku(None, leaf, eku)
        except ValueError as exc:
            return CertificateUntrusted(f"the certificate {_cn(leaf)} may not sign documents: {exc}", code="CERT_USAGE")
        try:
            keys.check_key_policy(leaf.public_key())
        except SignatureInvalid as exc:
            return exc
        return CertificateUntrusted(
            f"the certificate {_cn(leaf)} does not chain to the hub root: {why[:200]}", code="CERT_UNTRUSTED"
        )
