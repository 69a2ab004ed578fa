"""Certificate revocation lists as verifiers use them: loaded from the PKI directory (never from a URL or from
the message), matched to the CA that signed them, and checked for freshness on every use (fail closed).

A CRL whose signature does not verify with any known CA, that cannot be parsed, or that has no nextUpdate is
ignored; a certificate whose issuer then has no CRL is refused with ``CERT_CRL_UNAVAILABLE``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from hub.trust.pki import fingerprint

__all__ = [
    "LoadedCrl",
    "RevocationCleared",
    "RevocationProblem",
    "check_revocation",
    "crl_of",
    "load_crls",
    "read_crls",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedCrl:
    issuer_fingerprint: str
    issuer_name: str
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    #: serial → (reason, revocation date)
    revoked: dict[int, tuple[str, dt.datetime]] = field(default_factory=dict)
    path: Path | None = None

    def is_fresh(self, now: dt.datetime) -> bool:
        return now < self.next_update


@dataclass(frozen=True, slots=True)
class RevocationProblem:
    """Why a certificate of a chain cannot be taken as not revoked now: ``code`` is ``CERT_CRL_UNAVAILABLE`` (its
    issuer's CRL is missing — ``crl`` None — or stale — ``crl`` the stale one) or ``CERT_REVOKED`` (``crl`` lists
    ``subject``, with ``reason`` and ``when``). Each caller words it for its own readers."""

    code: str
    subject: x509.Certificate
    issuer: x509.Certificate
    crl: LoadedCrl | None
    reason: str = ""
    when: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class RevocationCleared:
    """Every certificate looked up is in none of the CRLs, all fresh: the verdict holds ``until`` the soonest of
    their nextUpdate times, that of the CRL ``by`` signed."""

    until: dt.datetime
    by: x509.Certificate


def check_revocation(
    crl_for: Callable[[x509.Certificate], LoadedCrl | None],
    pairs: Iterable[tuple[x509.Certificate, x509.Certificate]],
    now: dt.datetime,
) -> RevocationProblem | RevocationCleared:
    """The one revocation rule of the verifier, the gateway's client identification and the SDK's self-check: each
    ``(certificate, its issuer)`` against the issuer's CRL (``crl_for``, e.g. ``TrustStore.crl_for``), which must be
    there and fresh (fail closed), the first problem returned. Give the pairs top-down — the issuing CA against the
    root first — so that a revoked CA is reported as such, not as its leaf."""
    cleared: RevocationCleared | None = None
    for subject, issuer in pairs:
        crl = crl_for(issuer)
        if crl is None or not crl.is_fresh(now):
            return RevocationProblem("CERT_CRL_UNAVAILABLE", subject, issuer, crl)
        hit = crl.revoked.get(subject.serial_number)
        if hit is not None:
            return RevocationProblem("CERT_REVOKED", subject, issuer, crl, hit[0], hit[1])
        if cleared is None or crl.next_update < cleared.until:
            cleared = RevocationCleared(crl.next_update, issuer)
    if cleared is None:
        raise ValueError("check_revocation needs at least one (certificate, issuer) pair")
    return cleared


def _reason(entry: x509.RevokedCertificate) -> str:
    try:
        flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return "unspecified"
    return flag.name.replace("_", "-")


def _number(crl: x509.CertificateRevocationList) -> int:
    try:
        ext = crl.extensions.get_extension_for_oid(ExtensionOID.CRL_NUMBER).value
    except x509.ExtensionNotFound:
        return 0
    return int(getattr(ext, "crl_number", 0))


def load_crls(crl_dir: Path, issuers: list[x509.Certificate]) -> dict[str, LoadedCrl]:
    """Every valid CRL in ``crl_dir`` keyed by the fingerprint of the CA that signed it (newest number wins)."""
    found: dict[str, LoadedCrl] = {}
    for crl, path in read_crls(crl_dir):
        issuer = next(
            (ca for ca in issuers if ca.subject == crl.issuer and _signed_by(crl, ca)),
            None,
        )
        if issuer is None:
            log.warning("ignoring CRL %s: no hub CA signed it", path.name)
            continue
        _keep(found, crl, path, issuer)
    return found


def read_crls(crl_dir: Path) -> list[tuple[x509.CertificateRevocationList, Path]]:
    """The CRLs of ``crl_dir`` that parse and have a nextUpdate, not yet matched to a CA (their signature unchecked)."""
    out: list[tuple[x509.CertificateRevocationList, Path]] = []
    if not crl_dir.is_dir():
        return out
    for path in sorted(crl_dir.glob("*.crl")):
        try:
            data = path.read_bytes()
            crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
        except (OSError, ValueError) as exc:
            log.warning("ignoring CRL %s: cannot read or parse it (%s)", path.name, type(exc).__name__)
            continue
        if crl.next_update_utc is None:
            log.warning("ignoring CRL %s: it has no nextUpdate", path.name)
            continue
        out.append((crl, path))
    return out


def crl_of(crls: list[tuple[x509.CertificateRevocationList, Path]], issuer: x509.Certificate) -> LoadedCrl | None:
    """The newest of ``crls`` that ``issuer`` signed (None when none did): for a CA certificate learnt from a
    validated chain rather than from a file."""
    found: dict[str, LoadedCrl] = {}
    for crl, path in crls:
        if crl.issuer == issuer.subject and _signed_by(crl, issuer):
            _keep(found, crl, path, issuer)
    return found.get(fingerprint(issuer))


def _keep(
    found: dict[str, LoadedCrl], crl: x509.CertificateRevocationList, path: Path, issuer: x509.Certificate
) -> None:
    try:
        revoked = {e.serial_number: (_reason(e), e.revocation_date_utc) for e in crl}
    except ValueError:
        log.warning("ignoring CRL %s: malformed entries", path.name)
        return
    assert crl.next_update_utc is not None  # read_crls dropped the others
    loaded = LoadedCrl(
        fingerprint(issuer),
        issuer.subject.rfc4514_string(),
        _number(crl),
        crl.last_update_utc,
        crl.next_update_utc,
        revoked,
        path,
    )
    previous = found.get(loaded.issuer_fingerprint)
    if previous is None or (loaded.number, loaded.this_update) > (previous.number, previous.this_update):
        found[loaded.issuer_fingerprint] = loaded


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
