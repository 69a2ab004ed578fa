"""CA administration: keeps the PKI directory (what verifiers load) and the PostgreSQL register
(``hub.store.certificates``) in step. Used by ``hub pki …`` and by ``make demo``; not on the message path.

Every operation connects to PostgreSQL before it changes a file, so an unreachable database
(``StoreUnavailable``, code ``DELIVERY_STORE``) leaves the CA as it was. The CA passphrase comes from
``Settings.ca_passphrase`` and is never logged or printed.

The hub process should call ``refresh_crls_if_due`` periodically (e.g. hourly): CRLs have a short nextUpdate
(``Settings.crl_hours``) and verification fails closed once one is past it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hub.errors import ConfigError
from hub.settings import Settings
from hub.store.certificates import CertificateRecord, CertificateRepository, CertificateRow
from hub.store.db import connection, migrate
from hub.trust import pki
from hub.trust.crl import load_crls

__all__ = [
    "PublishedCrl",
    "default_pki_dir",
    "init",
    "issue",
    "list_certificates",
    "publish_crls",
    "record_of",
    "refresh_crls_if_due",
    "renew",
    "revoke",
]

log = logging.getLogger(__name__)
_LOCK = 727_003  # advisory lock serialising CRL publication (numbers must increase)


@dataclass(frozen=True, slots=True)
class PublishedCrl:
    ca: str
    path: Path
    number: int
    next_update: dt.datetime
    revoked: int


def default_pki_dir(settings: Settings) -> Path:
    return Path(settings.state_dir) / "pki"


def record_of(issued: pki.IssuedCertificate, *, renews: str | None = None) -> CertificateRecord:
    cert = issued.certificate
    return CertificateRecord(
        serial=issued.serial,
        fingerprint=issued.fingerprint,
        kind=issued.kind,
        issuer_serial=pki.serial_hex(issued.issuer.serial_number) if issued.issuer is not None else None,
        agency=issued.agency,
        system=issued.system,
        subject=cert.subject.rfc4514_string(),
        key_algorithm=issued.key_algorithm,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        der=cert.public_bytes(serialization.Encoding.DER),
        renews=renews,
    )


async def init(settings: Settings, pki_dir: Path, *, agency: str = pki.DEFAULT_HUB_AGENCY) -> pki.CaInit:
    """Create the CA and the hub's signing identity, and register them."""
    if pki.is_initialised(pki_dir):
        raise ConfigError(f"a CA already exists in {pki_dir}; refusing to overwrite it")
    await migrate(settings.pg_dsn)  # reachability and schema first: no files without a register
    created = pki.init_ca(pki_dir, settings.ca_passphrase, hub_agency=agency, crl_hours=settings.crl_hours)
    async with connection(settings.pg_dsn) as conn:
        repo = CertificateRepository(conn)
        async with conn.transaction():
            for issued in (created.root, created.issuing, created.hub):
                await repo.add(record_of(issued))
            for crl, ca in zip(created.crls, (created.root, created.issuing), strict=True):
                await repo.record_crl(
                    ca.serial,
                    1,
                    crl.last_update_utc,
                    crl.next_update_utc or crl.last_update_utc,
                    0,
                    crl.public_bytes(serialization.Encoding.DER),
                )
    log.info("hub CA created in %s (root %s)", pki_dir, created.root.fingerprint[:16])
    return created


async def issue(settings: Settings, pki_dir: Path, csr: bytes, *, days: int = pki.LEAF_DAYS) -> pki.IssuedCertificate:
    """Issue an agency certificate from a CSR and register it."""
    await migrate(settings.pg_dsn)
    async with connection(settings.pg_dsn) as conn:
        issued = pki.issue_from_csr(pki_dir, settings.ca_passphrase, csr, days=days)
        await CertificateRepository(conn).add(record_of(issued))
    log.info("issued certificate %s for %s/%s", issued.serial, issued.agency, issued.system)
    return issued


async def renew(settings: Settings, pki_dir: Path, serial: str, *, days: int = pki.LEAF_DAYS) -> pki.IssuedCertificate:
    """Re-certify the key of a registered agency (or hub) certificate with a new validity period."""
    key = pki.serial_hex(pki.parse_serial(serial))
    await migrate(settings.pg_dsn)
    async with connection(settings.pg_dsn) as conn:
        repo = CertificateRepository(conn)
        row = await repo.get(key)
        if row is None:
            raise ConfigError(f"no certificate with serial {key} in the register (see `hub pki list`)")
        if row.kind not in ("agency", "hub"):
            raise ConfigError(f"certificate {key} is a {row.kind} CA certificate; only agency certificates renew")
        if row.revoked_at is not None:
            raise ConfigError(f"certificate {key} is revoked; the agency must send a new CSR")
        issued = pki.renew(pki_dir, settings.ca_passphrase, x509.load_der_x509_certificate(row.der), days=days)
        await repo.add(record_of(issued, renews=key))
    return issued


async def revoke(settings: Settings, pki_dir: Path, serial: str, reason: str) -> tuple[CertificateRow, PublishedCrl]:
    """Revoke a certificate and republish the CRL of the CA that issued it (effective at the verifiers'
    next refresh, a few seconds)."""
    if reason not in pki.REASONS:
        raise ConfigError(f"unknown revocation reason {reason!r}; one of {', '.join(pki.REASONS)}")
    key = pki.serial_hex(pki.parse_serial(serial))
    await migrate(settings.pg_dsn)
    async with connection(settings.pg_dsn) as conn:
        repo = CertificateRepository(conn)
        row = await repo.revoke(key, reason)
        which = "root" if row.kind == "issuing" else "issuing"
    published = await publish_crls(settings, pki_dir, only=which)
    return row, published[0]


async def publish_crls(
    settings: Settings, pki_dir: Path, *, hours: int | None = None, only: str | None = None
) -> list[PublishedCrl]:
    """Publish fresh CRLs of the root and the issuing CA from the register (``only``: "root" or "issuing")."""
    hours = hours or settings.crl_hours
    paths = pki.PkiPaths(Path(pki_dir))
    await migrate(settings.pg_dsn)
    out: list[PublishedCrl] = []
    async with connection(settings.pg_dsn) as conn:
        repo = CertificateRepository(conn)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            for which, path in (("root", paths.root_crl), ("issuing", paths.issuing_crl)):
                if only is not None and which != only:
                    continue
                ca_cert, ca_key = pki.load_ca(paths.root, settings.ca_passphrase, which=which)
                ca_serial = pki.serial_hex(ca_cert.serial_number)
                if await repo.get(ca_serial) is None:
                    raise ConfigError(
                        f"the {which} CA {ca_serial} is not in the register; was `hub pki init` run here?"
                    )
                revoked = [
                    pki.RevokedEntry(int(r.serial, 16), r.reason, r.revoked_at)
                    for r in await repo.revoked_under(ca_serial)
                ]
                number = await repo.next_crl_number(ca_serial)
                crl = pki.publish_crl(path, ca_cert, ca_key, revoked, number=number, hours=hours)
                next_update = crl.next_update_utc or crl.last_update_utc
                await repo.record_crl(
                    ca_serial,
                    number,
                    crl.last_update_utc,
                    next_update,
                    len(revoked),
                    crl.public_bytes(serialization.Encoding.DER),
                )
                out.append(PublishedCrl(which, path, number, next_update, len(revoked)))
    return out


async def refresh_crls_if_due(settings: Settings, pki_dir: Path, *, now: dt.datetime | None = None) -> bool:
    """Republish the CRLs when one is missing or past half its lifetime; True when it published."""
    paths = pki.PkiPaths(Path(pki_dir))
    now = now or dt.datetime.now(dt.UTC)
    cas = [*pki.load_certificates(paths.root_cert), *pki.load_certificates(paths.issuing_cert)]
    current = load_crls(paths.crl_dir, cas)
    due = len(current) < 2 or any(now >= c.this_update + (c.next_update - c.this_update) / 2 for c in current.values())
    if due:
        await publish_crls(settings, pki_dir)
    return due


async def list_certificates(settings: Settings, *, agency: str | None = None) -> list[CertificateRow]:
    await migrate(settings.pg_dsn)
    async with connection(settings.pg_dsn) as conn:
        return await CertificateRepository(conn).certificates(agency=agency)
