"""Who is calling: the TLS client certificate → an agency system of the directory, or a refusal (pure).

The TLS handshake already checked the chain to the hub root (the server's ``ssl.SSLContext`` trusts the root and the
issuing CAs only), but not the dates (``tls.NO_CHECK_TIME``). Here, per request: a certificate at all (else 401
``GATEWAY_NO_CERTIFICATE``), its validity period and its CAs' (else 403 ``CERT_EXPIRED``, naming the date: a client
whose certificate lapsed reads why, the people on duty see which system), revocation against the hub's CRLs (the
``TrustStore`` the verifier uses: the same ``LoadedCrl`` data, fail closed: 503 ``CERT_CRL_UNAVAILABLE`` — the hub's
state, not the client's — / 403 ``CERT_REVOKED``), the clientAuth usage, and the subject's (agency, system) —
``hub.trust.pki.agency_and_system`` — being an agency system of the directory (``GATEWAY_UNKNOWN_SYSTEM``), and,
where the directory registers the system's certificates (``cert-sha256``), one of them (``CERT_NOT_REGISTERED``). That
the system equals the signed sender of what it submits is the processor's check (``CERT_SIGNER_MISMATCH``), as for
AMQP users.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from hub.errors import HubError
from hub.trust.crl import RevocationProblem, check_revocation
from hub.trust.pki import agency_and_system, fingerprint, issued_by, serial_hex

if TYPE_CHECKING:
    from hub.directory import Directory
    from hub.trust import TrustStore

__all__ = ["CRL_RETRY_AFTER_S", "ClientIdentity", "Identifier", "Refused"]

#: Retry-After of a request that could not be identified because the hub's CRLs are stale.
CRL_RETRY_AFTER_S = 60


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The agency system a request comes from, as its certificate names it."""

    agency: str
    system: str
    serial: str
    fingerprint: str
    #: the directory's ``gateway-addresses`` of the system when it was identified: the networks it is served from
    #: (none: anywhere)
    addresses: tuple[str, ...] = ()


class Refused(Exception):
    """A request refused before it reaches the hub: HTTP ``status``, a stable ``code`` (``hub.errors.CODES``) and one
    English sentence; ``system``: the system a refused client certificate was issued to (by the hub CA: the TLS
    handshake checked the chain), for the people on duty — never the identity of the request."""

    def __init__(
        self, status: int, code: str, detail: str, *, retry_after: int | None = None, system: str | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.system = system
        #: the refused client certificate's serial (hex), with ``system``
        self.serial: str | None = None


@dataclass(frozen=True, slots=True)
class _Parsed:
    cert: x509.Certificate
    agency: str
    system: str
    fingerprint: str
    client_auth: bool
    not_before: dt.datetime
    not_after: dt.datetime


def _parse(der: bytes) -> _Parsed:
    try:
        cert = x509.load_der_x509_certificate(der)
        agency, system = agency_and_system(cert.subject)
    except ValueError as exc:
        raise Refused(403, "CERT_USAGE", f"the client certificate does not name an agency system: {exc}") from None
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client_auth = ExtendedKeyUsageOID.CLIENT_AUTH in eku
    except x509.ExtensionNotFound:
        client_auth = False
    return _Parsed(
        cert, agency, system, fingerprint(cert), client_auth, cert.not_valid_before_utc, cert.not_valid_after_utc
    )


def _check_dates(cert: x509.Certificate | _Parsed, now: dt.datetime, what: str) -> None:
    """403 ``CERT_EXPIRED`` unless ``now`` is within the validity period of ``cert`` (``what`` names it)."""
    if isinstance(cert, _Parsed):
        start, end = cert.not_before, cert.not_after
    else:
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > end:
        raise Refused(
            403, "CERT_EXPIRED", f"{what} expired on {end:%Y-%m-%d %H:%M} UTC; ask the hub's operators for a new one"
        )
    if now < start:
        raise Refused(
            403,
            "CERT_EXPIRED",
            f"{what} is not valid before {start:%Y-%m-%d %H:%M} UTC; check the client's clock or wait until then",
        )


class Identifier:
    """Identifies clients by their certificate; parsed certificates are cached (by their DER bytes)."""

    def __init__(self, store: TrustStore, directory: Directory, *, cache_size: int = 1024) -> None:
        self.store = store
        self.directory = directory
        self._cache: OrderedDict[bytes, _Parsed] = OrderedDict()
        self._cache_size = cache_size
        self._issuers: dict[bytes, tuple[int, x509.Certificate | None]] = {}
        #: Certificates found not revoked: (trust store generation, until when the CRLs that said so are fresh and the
        #: CA certificates valid).
        #: A reload of the store (a new CRL, ``hub pki revoke``) bumps the generation and every verdict is redone.
        self._cleared: dict[bytes, tuple[int, dt.datetime]] = {}

    def identify(self, der: bytes | None, now: dt.datetime | None = None) -> ClientIdentity:
        """The caller of a request whose TLS peer certificate is ``der`` (None: none was presented), or ``Refused``."""
        if not der:
            raise Refused(
                401,
                "GATEWAY_NO_CERTIFICATE",
                "the request came without a client certificate; present the system's certificate issued by the hub CA",
            )
        parsed = self._cache.get(der)
        if parsed is None:
            parsed = _parse(der)
            self._cache[der] = parsed
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(der)
        try:
            if not parsed.client_auth:
                raise Refused(403, "CERT_USAGE", "the client certificate does not allow TLS client authentication")
            at = now or dt.datetime.now(dt.UTC)
            _check_dates(parsed, at, "the client certificate")
            self._check_revocation(der, parsed.cert, at)
            try:
                system = self.directory.system(parsed.system)
            except HubError:
                system = None
            if system is None or system.agency != parsed.agency:
                raise Refused(
                    403,
                    "GATEWAY_UNKNOWN_SYSTEM",
                    f"the certificate names {parsed.agency}/{parsed.system}: not an agency system of the directory",
                )
            if not system.registers(parsed.fingerprint):
                raise Refused(
                    403,
                    "CERT_NOT_REGISTERED",
                    f"client certificate {serial_hex(parsed.cert.serial_number)} (sha256 {parsed.fingerprint}) is "
                    f"not one the directory registers for system {system.id} (cert-sha256): the hub's operators add "
                    "its fingerprint to the directory, or the system presents a registered certificate",
                )
        except Refused as exc:
            exc.system = parsed.system  # whom the people on duty should call (the ops overview, the log)
            exc.serial = serial_hex(parsed.cert.serial_number)  # which of its certificates (the log)
            raise
        return ClientIdentity(
            parsed.agency,
            parsed.system,
            serial_hex(parsed.cert.serial_number),
            parsed.fingerprint,
            tuple(system.gateway_addresses),
        )

    def _issuer_of(self, der: bytes, cert: x509.Certificate) -> x509.Certificate | None:
        """The issuing CA that signed ``cert`` (a signature check, cached per certificate and trust store load)."""
        store = self.store
        cached = self._issuers.get(der)
        if cached is not None and cached[0] == store.generation:
            return cached[1]
        issuer = next((ca for ca in store.issuing if issued_by(cert, ca)), None)
        self._issuers[der] = (store.generation, issuer)
        if len(self._issuers) > self._cache_size:
            self._issuers.pop(next(iter(self._issuers)))
        return issuer

    def _check_revocation(self, der: bytes, cert: x509.Certificate, now: dt.datetime) -> None:
        """The leaf against its issuing CA's CRL, the issuing CA against the root's: the verifier's data and rules.
        A certificate found not revoked is not looked up again until the store reloads, those CRLs go stale or a CA
        certificate expires. Also the CAs' dates (the handshake does not check them)."""
        store = self.store
        store.refresh_if_due()
        cleared = self._cleared.get(der)
        if cleared is not None and cleared[0] == store.generation and now < cleared[1]:
            return
        issuer = self._issuer_of(der, cert)
        if issuer is None:
            raise Refused(403, "CERT_UNTRUSTED", "the client certificate was not issued by a current hub issuing CA")
        _check_dates(issuer, now, "the hub issuing CA certificate that issued the client certificate")
        _check_dates(store.root, now, "the hub root certificate")
        # The verdict is kept until the CRLs go stale or a CA certificate expires, whichever comes first.
        until = min(issuer.not_valid_after_utc, store.root.not_valid_after_utc)
        status = check_revocation(store.crl_for, ((issuer, store.root), (cert, issuer)), now)
        if isinstance(status, RevocationProblem):
            if status.code == "CERT_CRL_UNAVAILABLE":
                # The hub's own state, not the client's certificate: 503 with Retry-After, so clients (and the SDK's
                # start) try again instead of taking it for a refusal of their certificate.
                raise Refused(
                    503,
                    "CERT_CRL_UNAVAILABLE",
                    "no fresh CRL of the hub CA is available, so no certificate can be checked for revocation until "
                    "the hub's operators publish one (hub pki crl); try again later",
                    retry_after=CRL_RETRY_AFTER_S,
                )
            serial = serial_hex(status.subject.serial_number)
            what = (
                f"certificate {serial}"
                if status.subject is cert
                else f"the hub issuing CA that issued the client certificate (serial {serial})"
            )
            raise Refused(
                403, "CERT_REVOKED", f"{what} was revoked on {status.when:%Y-%m-%d %H:%M} UTC ({status.reason})"
            )
        until = min(until, status.until)
        self._cleared[der] = (store.generation, until)
        if len(self._cleared) > self._cache_size:
            self._cleared.pop(next(iter(self._cleared)))
