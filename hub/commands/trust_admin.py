"""CA administration: keeps the PKI directory (what verifiers load) and the PostgreSQL register
(``hub.store.certificates``) in step: init, issue, renew, revoke, CRLs, hub-key rotation, issuing-CA rollover, and
the evidence checkpoint verifier of this installation's store. Used by ``hub pki …``, the workers and ``make demo``;
not on the message path. Wiring (files + PostgreSQL), so it lives in ``hub.commands``, not in the pure
``hub.trust`` (which it uses: ``pki``, ``keys``, ``lifecycle``, ``evidence``).

Every operation connects to PostgreSQL before it changes a file, so an unreachable database
(``StoreUnavailable``, code ``DELIVERY_STORE``) leaves the CA as it was. The CA passphrase comes from
``Settings.ca_passphrase`` and is never logged or printed.

The hub process should call ``refresh_crls_if_due`` periodically (e.g. hourly): CRLs have a short nextUpdate
(``Settings.crl_hours``) and verification fails closed once one is past it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hub import clock
from hub.errors import ConfigError
from hub.settings import Settings
from hub.store.audit import Actor
from hub.store.certificates import CertificateRecord, CertificateRepository, CertificateRow
from hub.store.db import connection, migrate
from hub.trust import keys, lifecycle, pki
from hub.trust.crl import load_crls
from hub.trust.evidence import CheckpointVerifier, checkpoint_verifier

__all__ = [
    "PublishedCrl",
    "default_pki_dir",
    "init",
    "installation_checkpoint_verifier",
    "issue",
    "issue_server",
    "list_certificates",
    "publish_crls",
    "record_of",
    "refresh_crls_if_due",
    "renew",
    "revoke",
    "rollover_issuing",
    "rotate_hub",
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
    issuer_serial: str = ""


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
    async with connection(settings.pg_dsn) as conn:
        await _refuse_foreign_store(settings, conn)
    created = pki.init_ca(pki_dir, settings.ca_passphrase, hub_agency=agency, crl_hours=settings.crl_hours)
    async with connection(settings.pg_dsn) as conn:
        repo = CertificateRepository(conn)
        async with conn.transaction():
            await lifecycle.record_installation(settings, conn, created.root.fingerprint)
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


async def _refuse_foreign_store(settings: Settings, conn: Any) -> None:
    """``hub pki init`` only on a store that no installation has claimed and whose register is empty."""
    row = await conn.fetchrow("SELECT root_fingerprint, namespace, state_dir FROM hub_installation")
    roots = await conn.fetchval("SELECT count(*) FROM trust_certificates WHERE kind = 'root'")
    if row is not None or roots:
        owner = (
            f" (root CA {row['root_fingerprint'][:16]}…, namespace {row['namespace']!r}, state dir {row['state_dir']})"
            if row is not None
            else ""
        )
        raise ConfigError(
            f"this database already belongs to a hub installation{owner}: a new CA needs an empty database of its own "
            "(set HUB_PG_DSN to it), or use that installation's state directory (HUB_STATE_DIR)",
            code="STORE_FOREIGN_INSTALLATION",
        )


async def _ready_register(settings: Settings, conn: Any, pki_dir: Path) -> CertificateRepository:
    """The register, once the store is known to belong to this installation and to hold its CA."""
    await lifecycle.check_installation(settings, conn, pki_dir)
    repo = CertificateRepository(conn)
    if pki.is_initialised(pki_dir):
        issuing = pki.load_certificates(pki.PkiPaths(Path(pki_dir)).issuing_cert)[0]
        if await repo.get(pki.serial_hex(issuing.serial_number)) is None:
            raise ConfigError(
                f"the database {settings.pg_dsn.rsplit('/', 1)[-1]!r} has no register entry for this CA's issuing CA "
                f"{pki.serial_hex(issuing.serial_number)}: set HUB_PG_DSN to the database `hub pki init` was run "
                "against (or run `hub pki init` with an empty database and a new state directory)",
                code="STORE_NO_CA",
            )
    return repo


async def issue(
    settings: Settings,
    pki_dir: Path,
    csr: bytes,
    *,
    days: int = pki.LEAF_DAYS,
    now: dt.datetime | None = None,
    tls: bool = False,
) -> pki.IssuedCertificate:
    """Issue an agency certificate from a CSR and register it (``now``: the hub clock): kind ``agency`` (signs and
    authenticates to the gateway), or with ``tls`` kind ``tls`` (a TLS-only client certificate)."""
    await migrate(settings.pg_dsn)
    async with connection(settings.pg_dsn) as conn:
        repo = await _ready_register(settings, conn, pki_dir)
        issued = pki.issue_from_csr(pki_dir, settings.ca_passphrase, csr, days=days, now=now, tls=tls)
        await repo.add(record_of(issued))
    log.info("issued %s certificate %s for %s/%s", issued.kind, issued.serial, issued.agency, issued.system)
    return issued


async def registered_certificates(settings: Settings, system: str | None) -> tuple[str, ...]:
    """The fingerprints the loaded directory registers for ``system`` (``cert-sha256``; empty: none, any certificate
    of the hub CA's serves it, or no directory loaded yet)."""
    if not system:
        return ()
    async with connection(settings.pg_dsn) as conn:
        try:
            pins = await conn.fetchval("SELECT cert_sha256 FROM directory_systems WHERE id = $1", system)
        except asyncpg.UndefinedTableError:
            return ()
    return tuple(pins or ())


def registration_attribute(fingerprint: str, pins: tuple[str, ...]) -> str | None:
    """The ``cert-sha256`` value that registers the certificate of ``fingerprint`` beside the system's ``pins`` (at
    most four: the first listed makes room), or None when nothing is to change (no registration, or listed)."""
    if not pins or fingerprint in pins:
        return None
    return " ".join((*pins[-3:], fingerprint))


def registration_hint(system: str | None, fingerprint: str, pins: tuple[str, ...]) -> str | None:
    """What the operator must do before ``system``, whose certificates the directory registers (``pins``), can use
    the new certificate of ``fingerprint``: None when nothing (no registration, or it is listed). At most four are
    registered: with four, the oldest listed makes room."""
    listed = registration_attribute(fingerprint, pins)
    if listed is None:
        return None
    dropped = pins[: max(0, len(pins) - 3)]
    drop_zh = f"（至多 4 项：删去最早的 {dropped[0][:12]}…）" if dropped else ""
    drop_en = f" (at most four: the first, {dropped[0][:12]}…, makes room)" if dropped else ""
    return (
        f"注意：目录为系统 {system} 登记了证书（cert-sha256），新证书不在其中，"
        "使用前会被拒绝（CERT_NOT_REGISTERED）。\n"
        f'把它加进目录{drop_zh}：cert-sha256="{listed}"，再 hub directory load；旧证书停用后删去旧指纹。\n'
        f"note: the directory registers the certificates of system {system} (cert-sha256) and this one is not "
        f"among them: it is refused (CERT_NOT_REGISTERED) until its fingerprint is added{drop_en} (hub directory load)"
    )


async def issue_server(
    settings: Settings,
    pki_dir: Path,
    hosts: list[str],
    *,
    days: int = pki.LEAF_DAYS,
    out_dir: Path | None = None,
) -> pki.IssuedCertificate:
    """The gateway's TLS server certificate (``pki.issue_server_certificate``), registered as kind ``server``."""
    await migrate(settings.pg_dsn)
    async with connection(settings.pg_dsn) as conn:
        repo = await _ready_register(settings, conn, pki_dir)
        issued = pki.issue_server_certificate(
            pki_dir, settings.ca_passphrase, hosts, days=days, now=clock.now(), out_dir=out_dir
        )
        await repo.add(record_of(issued))
    log.info("issued the gateway's server certificate %s for %s", issued.serial, ", ".join(hosts))
    return issued


async def renew(settings: Settings, pki_dir: Path, serial: str, *, days: int = pki.LEAF_DAYS) -> pki.IssuedCertificate:
    """Re-certify the key of a registered agency (or hub) certificate with a new validity period."""
    key = pki.serial_hex(pki.parse_serial(serial))
    pki.check_leaf_days(days)
    await migrate(settings.pg_dsn)
    async with connection(settings.pg_dsn) as conn:
        repo = await _ready_register(settings, conn, pki_dir)
        row = await repo.get(key)
        if row is None:
            raise ConfigError(f"no certificate with serial {key} in the register (see `hub pki list`)")
        if row.kind == "hub":
            raise ConfigError(
                f"certificate {key} is the hub's own: `hub pki rotate` gives the hub a new key and certificate, keeps "
                "this one known and switches the running workers to the new one"
            )
        if row.kind == "server":
            raise ConfigError(
                f"certificate {key} is the gateway's server certificate: `hub pki issue-server` makes a new one"
            )
        if row.kind not in ("agency", "tls"):
            raise ConfigError(f"certificate {key} is a {row.kind} CA certificate; only agency certificates renew")
        if row.revoked_at is not None:
            raise ConfigError(f"certificate {key} is revoked; the agency must send a new CSR")
        issued = pki.renew(pki_dir, settings.ca_passphrase, x509.load_der_x509_certificate(row.der), days=days)
        await repo.add(record_of(issued, renews=key))
    return issued


async def revoke(
    settings: Settings, pki_dir: Path, serial: str, reason: str, *, actor: Actor | None = None, note: str = ""
) -> tuple[CertificateRow, PublishedCrl, bool]:
    """Revoke a certificate and republish the CRL of the CA that issued it (effective at the verifiers'
    next refresh, a few seconds). ``actor``: the operator's action (``cert.revoke``, with ``note`` as its reason),
    recorded in the revocation's transaction. The third value is False when the certificate was revoked already
    (the first record is kept, with its date and reason; the CRL is published again all the same)."""
    if reason not in pki.REASONS:
        raise ConfigError(f"unknown revocation reason {reason!r}; one of {', '.join(pki.REASONS)}")
    key = pki.serial_hex(pki.parse_serial(serial))
    await migrate(settings.pg_dsn)
    async with connection(settings.pg_dsn) as conn:
        repo = await _ready_register(settings, conn, pki_dir)
        async with conn.transaction():
            before = await repo.get(key)
            row = await repo.revoke(key, reason, in_use=current_serials(pki_dir))
            new = before is not None and before.revoked_at is None
            if actor is not None:
                detail: dict[str, object] = {
                    "reason_code": reason,
                    "kind": row.kind,
                    "agency": row.agency,
                    "system": row.system,
                }
                if not new:
                    detail["already_revoked"] = True
                await actor.record(conn, "cert.revoke", reason=note or reason, target=row.serial, detail=detail)
        which = "root" if row.kind == "issuing" else "issuing"
    published = await publish_crls(settings, pki_dir, only=which)
    mine = [p for p in published if p.issuer_serial == row.issuer_serial]
    return row, (mine or published)[0], new


def current_serials(pki_dir: Path) -> frozenset[str]:
    """The serials of the certificates the hub uses now: its signing certificate (``hub/hub.pem``), the issuing
    CA (the first of ``issuing-ca.pem``) and the gateway's server certificate (``gateway/server.pem``). None may be
    revoked before it is replaced (``hub pki rotate``, ``rollover-issuing``, ``issue-server``)."""
    paths = pki.PkiPaths(Path(pki_dir))
    return frozenset(
        pki.serial_hex(pki.load_certificates(f)[0].serial_number)
        for f in (paths.hub_cert, paths.issuing_cert, paths.gateway_cert)
        if f.is_file()
    )


def crl_signers(pki_dir: Path, passphrase: str) -> list[tuple[str, x509.Certificate, Any, Path]]:
    """(which, CA certificate, its key, CRL path) of every CA that publishes CRLs: the root, the current issuing CA,
    and earlier issuing CAs whose key is still kept (``hub.trust.lifecycle``)."""
    paths = pki.PkiPaths(Path(pki_dir))
    root, root_key = pki.load_ca(paths.root, passphrase, which="root")
    current, current_key = pki.load_ca(paths.root, passphrase, which="issuing")
    out: list[tuple[str, x509.Certificate, Any, Path]] = [
        ("root", root, root_key, paths.root_crl),
        ("issuing", current, current_key, paths.issuing_crl),
    ]
    for cert in pki.load_certificates(paths.issuing_cert):
        if cert.serial_number == current.serial_number:
            continue
        key_path = lifecycle.archived_issuing_key(paths.root, pki.serial_hex(cert.serial_number))
        if key_path.is_file():
            key = keys.load_private_key(key_path, pki.passphrase_bytes(passphrase))
            out.append(("issuing", cert, key, lifecycle.issuing_crl_path(paths.root, cert, current=False)))
    return out


async def publish_crls(
    settings: Settings, pki_dir: Path, *, hours: int | None = None, only: str | None = None
) -> list[PublishedCrl]:
    """Publish fresh CRLs of the root and every issuing CA from the register (``only``: "root" or "issuing").

    An earlier issuing CA (after ``hub pki rollover-issuing``) publishes as long as a certificate it issued is still
    valid; after that its key is retired (renamed ``….key.retired``) and its last CRL stays where it is."""
    hours = hours or settings.crl_hours
    await migrate(settings.pg_dsn)
    now = clock.now()
    out: list[PublishedCrl] = []
    async with connection(settings.pg_dsn) as conn:
        repo = await _ready_register(settings, conn, pki_dir)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            for which, ca_cert, ca_key, path in crl_signers(pki_dir, settings.ca_passphrase):
                if only is not None and which != only:
                    continue
                ca_serial = pki.serial_hex(ca_cert.serial_number)
                if await repo.get(ca_serial) is None:
                    raise ConfigError(
                        f"the {which} CA {ca_serial} is not in the register; was `hub pki init` run here?",
                        code="STORE_NO_CA",
                    )
                if path.name != pki.PkiPaths(Path(pki_dir)).issuing_crl.name and which == "issuing":
                    last = await conn.fetchval(
                        "SELECT max(not_after) FROM trust_certificates c WHERE issuer_serial = $1"
                        " AND NOT EXISTS (SELECT 1 FROM trust_revocations r WHERE r.serial = c.serial)",
                        ca_serial,
                    )
                    if last is None or last <= now or ca_cert.not_valid_after_utc <= now:
                        key_path = lifecycle.archived_issuing_key(Path(pki_dir), ca_serial)
                        os.replace(key_path, key_path.with_name(key_path.name + ".retired"))
                        log.info("issuing CA %s retired: none of its certificates is valid any more", ca_serial)
                        continue
                revoked = [
                    pki.RevokedEntry(int(r.serial, 16), r.reason, r.revoked_at)
                    for r in await repo.revoked_under(ca_serial)
                ]
                number = await repo.next_crl_number(ca_serial)
                crl = pki.publish_crl(path, ca_cert, ca_key, revoked, number=number, hours=hours, now=now)
                next_update = crl.next_update_utc or crl.last_update_utc
                await repo.record_crl(
                    ca_serial,
                    number,
                    crl.last_update_utc,
                    next_update,
                    len(revoked),
                    crl.public_bytes(serialization.Encoding.DER),
                )
                out.append(PublishedCrl(which, path, number, next_update, len(revoked), ca_serial))
    return out


async def refresh_crls_if_due(settings: Settings, pki_dir: Path, *, now: dt.datetime | None = None) -> bool:
    """Republish the CRLs when one is missing or past half its lifetime; True when it published."""
    paths = pki.PkiPaths(Path(pki_dir))
    now = now or clock.now()
    cas = [*pki.load_certificates(paths.root_cert), *pki.load_certificates(paths.issuing_cert)]
    current = load_crls(paths.crl_dir, cas)
    # The CAs that publish: the root, the current issuing CA, and earlier issuing CAs whose key is still kept.
    publishing = cas[:2] + [
        c for c in cas[2:] if lifecycle.archived_issuing_key(paths.root, pki.serial_hex(c.serial_number)).is_file()
    ]
    crls = [current.get(pki.fingerprint(c)) for c in publishing]
    due = any(c is None or now >= c.this_update + (c.next_update - c.this_update) / 2 for c in crls)
    if due:
        await publish_crls(settings, pki_dir)
    return due


async def list_certificates(
    settings: Settings, *, agency: str | None = None, pki_dir: Path | None = None
) -> list[CertificateRow]:
    await migrate(settings.pg_dsn)
    async with connection(settings.pg_dsn) as conn:
        await lifecycle.check_installation(settings, conn, pki_dir)
        return await CertificateRepository(conn).certificates(agency=agency)


# ---------------------------------------------------------------- rotation and rollover (files + the register)


async def rotate_hub(
    settings: Settings, pki_dir: Path, *, days: int = pki.LEAF_DAYS, algorithm: str = "ec-p256"
) -> lifecycle.RotationResult:
    """A new hub key and certificate from the current issuing CA; the previous certificate is kept (archive and
    register) and stays valid until it expires, so deliveries it signed that are still queued verify. Running
    hub workers switch to the new key within seconds (``follow_hub_key``)."""
    pki.check_leaf_days(days)  # before anything changes
    paths = pki.PkiPaths(Path(pki_dir))
    if not paths.hub_cert.is_file():
        raise ConfigError(
            f"no hub certificate at {paths.hub_cert}: check HUB_STATE_DIR (e.g. load /etc/forestry-hub/hub.env) or "
            "--pki; only on a new installation run `hub pki init` (on an existing one it would make a second CA)"
        )
    old = pki.load_certificates(paths.hub_cert)[0]
    agency, _ = pki.agency_and_system(old.subject)
    await migrate(settings.pg_dsn)
    async with connection(settings.pg_dsn) as conn:
        await lifecycle.check_installation(settings, conn, pki_dir)
        repo = CertificateRepository(conn)
        old_serial = pki.serial_hex(old.serial_number)
        if await repo.get(old_serial) is None:
            raise ConfigError(
                f"the current hub certificate {old_serial} is not in the register; was `hub pki init` run against "
                "this database?",
                code="STORE_NO_CA",
            )
        lifecycle.archive_hub_certificate(pki_dir, old)  # first: an earlier certificate is never forgotten
        issued = pki.issue_hub_certificate(
            paths.root, settings.ca_passphrase, agency, algorithm=algorithm, days=days, now=clock.now()
        )
        await repo.add(record_of(issued, renews=old_serial))
    log.info("hub key rotated: certificate %s replaces %s", issued.serial, old_serial)
    return lifecycle.RotationResult(old, issued)


async def rollover_issuing(
    settings: Settings, pki_dir: Path, *, days: int = pki.ISSUING_DAYS
) -> lifecycle.RolloverResult:
    """A new issuing CA under the same root. New certificates come from it; the old one's certificates stay valid
    until they expire (it stays in ``issuing-ca.pem`` as a trusted intermediate) and its CRLs go on being
    published until then (its key is kept as ``issuing-ca-<serial>.key`` for that alone)."""
    paths = pki.PkiPaths(Path(pki_dir))
    await migrate(settings.pg_dsn)
    async with connection(settings.pg_dsn) as conn:
        await lifecycle.check_installation(settings, conn, pki_dir)
        repo = CertificateRepository(conn)
        root, root_key = pki.load_ca(paths.root, settings.ca_passphrase, which="root")
        old, old_key = pki.load_ca(paths.root, settings.ca_passphrase, which="issuing")
        if await repo.get(pki.serial_hex(old.serial_number)) is None:
            raise ConfigError(
                "the current issuing CA is not in the register; was `hub pki init` run against this database?",
                code="STORE_NO_CA",
            )
        now = clock.now()
        existing = pki.load_certificates(paths.issuing_cert)
        new_key = keys.generate_private_key("ec-p384")
        new = pki.ca_certificate(
            pki.ca_name(f"Forestry Exchange Hub Issuing CA {len(existing) + 1}"),
            new_key.public_key(),
            root,
            root_key,
            days=days,
            path_length=0,
            now=now,
        )
        pw = pki.passphrase_bytes(settings.ca_passphrase)
        # In this order, so that every intermediate state is consistent: the old key is kept, the certificate file
        # lists both (the key still matches the old one), then the key becomes the new CA's.
        keys.write_private_file(
            lifecycle.archived_issuing_key(paths.root, pki.serial_hex(old.serial_number)),
            keys.private_key_pem(old_key, pw),
        )
        keys.write_public_file(paths.issuing_cert, pki.certificate_pem(new, *existing))
        keys.write_private_file(paths.issuing_key, keys.private_key_pem(new_key, pw))
        old_crl = paths.issuing_crl
        if old_crl.exists():
            os.replace(old_crl, lifecycle.issuing_crl_path(paths.root, old, current=False))
        issued = pki.IssuedCertificate(new, "issuing", root)
        await repo.add(record_of(issued))
    await publish_crls(settings, pki_dir, only="issuing")
    log.info("issuing CA rolled over: %s replaces %s", issued.serial, pki.serial_hex(old.serial_number))
    return lifecycle.RolloverResult(old, issued)


# ---------------------------------------------------------------- evidence checkpoints


async def installation_checkpoint_verifier(settings: Settings, pki_dir: Path) -> CheckpointVerifier:
    """``checkpoint_verifier`` with the register of this installation's store (refusing another installation's
    store, ``STORE_FOREIGN_INSTALLATION``)."""
    async with connection(settings.pg_dsn) as conn:
        await lifecycle.check_installation(settings, conn, pki_dir)
        rows = await conn.fetch("SELECT der FROM trust_certificates WHERE kind = 'hub'")
        revocations = await conn.fetch("SELECT serial, revoked_at FROM trust_revocations")
    return checkpoint_verifier(
        pki_dir,
        [bytes(r["der"]) for r in rows],
        {int(r["serial"], 16): r["revoked_at"] for r in revocations},
    )
