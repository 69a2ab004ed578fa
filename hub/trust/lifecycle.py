"""Keys and certificates over the years (issue 13): the hub's own key rotation, the issuing-CA rollover, the
installation a store belongs to, expiry warnings, and a hub process that follows a rotated key without a restart.

Files (besides those of ``hub.trust.pki``)::

    hub/archive/<serial>.pem       every earlier hub certificate (what older checkpoints and receipts were signed
                                   with; ``hub verify`` and ``hub evidence verify`` know the hub by these)
    issuing-ca.pem                 the current issuing CA first, then the earlier ones (still trusted as
                                   intermediates until they expire)
    issuing-ca-<serial>.key        the key of an earlier issuing CA: kept only to sign its CRLs while certificates
                                   it issued are still valid; renamed ``….key.retired`` once none is
    crl/issuing-ca-<serial>.crl    the CRL of an earlier issuing CA

The register (``trust_certificates``) holds every hub certificate (kind ``hub``, ``renews`` the one before) and
every issuing CA; ``hub_installation`` (migration 013) the installation the store belongs to.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from hub import clock
from hub.errors import ConfigError
from hub.settings import Settings
from hub.trust import keys, pki

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "ExpiryWarning",
    "HubKeyWatch",
    "RolloverResult",
    "RotationResult",
    "archive_hub_certificate",
    "archived_issuing_key",
    "check_installation",
    "expiry_warnings",
    "follow_hub_key",
    "hub_certificates",
    "hub_fingerprints",
    "installation_identity",
    "issuing_crl_path",
]

log = logging.getLogger("hub.trust.lifecycle")

#: Warn this many days before the hub's certificate, an issuing CA or a CRL signer expires.
EXPIRY_WARNING_DAYS = 30
#: How often worker 0 looks at the expiry dates (each warning is logged at most once a day).
EXPIRY_CHECK_EVERY_S = 300.0
FOREIGN = "STORE_FOREIGN_INSTALLATION"


# ============================================================================================ files


def archive_dir(pki_dir: Path) -> Path:
    return pki.PkiPaths(Path(pki_dir)).hub_cert.parent / "archive"


def hub_certificates(pki_dir: Path) -> list[x509.Certificate]:
    """The hub's own certificates in this PKI directory: the current one first, then the earlier ones (newest
    first). Missing files give an empty list."""
    paths = pki.PkiPaths(Path(pki_dir))
    found: list[x509.Certificate] = []
    if paths.hub_cert.is_file():
        found.append(pki.load_certificates(paths.hub_cert)[0])
    archive = archive_dir(pki_dir)
    if archive.is_dir():
        older = [pki.load_certificates(p)[0] for p in sorted(archive.glob("*.pem"))]
        found += sorted(older, key=lambda c: c.not_valid_before_utc, reverse=True)
    seen: set[str] = set()
    unique = []
    for c in found:
        fp = pki.fingerprint(c)
        if fp not in seen:
            seen.add(fp)
            unique.append(c)
    return unique


_fingerprints: dict[Path, tuple[tuple[int, ...], frozenset[str]]] = {}


def hub_fingerprints(pki_dir: Path) -> frozenset[str]:
    """The fingerprints of ``hub_certificates(pki_dir)``, re-read only when ``hub/hub.pem`` or the archive changed
    (cheap enough to ask per message)."""
    paths = pki.PkiPaths(Path(pki_dir))
    stamp: list[int] = []
    for p in (paths.hub_cert, archive_dir(pki_dir)):
        try:
            st = os.stat(p)
            stamp += [st.st_mtime_ns, st.st_size, st.st_ino]
        except OSError:
            stamp += [0, 0, 0]
    key = Path(pki_dir)
    cached = _fingerprints.get(key)
    if cached is not None and cached[0] == tuple(stamp):
        return cached[1]
    fps = frozenset(pki.fingerprint(c) for c in hub_certificates(pki_dir))
    _fingerprints[key] = (tuple(stamp), fps)
    return fps


def archived_issuing_key(pki_dir: Path, serial: str) -> Path:
    return Path(pki_dir) / f"issuing-ca-{serial}.key"


def issuing_crl_path(pki_dir: Path, cert: x509.Certificate, current: bool) -> Path:
    paths = pki.PkiPaths(Path(pki_dir))
    return paths.issuing_crl if current else paths.crl_dir / f"issuing-ca-{pki.serial_hex(cert.serial_number)}.crl"


# ============================================================================================ installation


def installation_identity(settings: Settings, pki_dir: Path | None = None) -> tuple[str | None, str]:
    """(fingerprint of this state directory's root CA or None when it has none, namespace)."""
    paths = pki.PkiPaths(Path(pki_dir) if pki_dir is not None else Path(settings.state_dir) / "pki")
    root = pki.load_certificates(paths.root_cert)[0] if paths.root_cert.is_file() else None
    return (pki.fingerprint(root) if root is not None else None), settings.namespace


def _db_name(settings: Settings) -> str:
    return settings.pg_dsn.rsplit("/", 1)[-1].split("?", 1)[0]


async def check_installation(settings: Settings, conn: Any, pki_dir: Path | None = None) -> None:
    """Refuse (``STORE_FOREIGN_INSTALLATION``) a store that belongs to another installation: another root CA or
    another namespace. A store without the record (made before migration 013) is adopted when its register holds
    this root; a store whose register is empty says ``STORE_NO_CA``. ``conn``: an asyncpg connection or pool."""
    fp, namespace = installation_identity(settings, pki_dir)
    if await conn.fetchval("SELECT to_regclass('hub_installation') IS NULL"):
        return  # a store not migrated this far: the caller migrates first
    row = await conn.fetchrow("SELECT root_fingerprint, namespace, state_dir FROM hub_installation")
    here = f"state dir {settings.state_dir}, namespace {namespace!r}"
    if row is None:
        roots = [
            r["fingerprint"] for r in await conn.fetch("SELECT fingerprint FROM trust_certificates WHERE kind = 'root'")
        ]
        if fp is None:
            return  # nothing to compare yet (no CA here): the command itself says what is missing
        if not roots:
            raise ConfigError(
                f"the database {_db_name(settings)!r} has no register of this CA (no root certificate recorded): "
                f"run `hub pki init` against an empty database first, or set HUB_PG_DSN to the database this "
                f"installation ({here}) was initialised with",
                code="STORE_NO_CA",
            )
        if fp not in roots:
            raise ConfigError(
                f"the database {_db_name(settings)!r} belongs to another hub installation (root CA "
                f"{roots[0][:16]}…); this one ({here}) has root CA {fp[:16]}…: set HUB_PG_DSN to this installation's "
                "own database, or HUB_STATE_DIR to the state directory of that installation",
                code=FOREIGN,
            )
        await record_installation(settings, conn, fp)
        return
    if fp == row["root_fingerprint"] and namespace == row["namespace"]:
        return
    raise ConfigError(
        f"the database {_db_name(settings)!r} belongs to another hub installation (root CA "
        f"{row['root_fingerprint'][:16]}…, namespace {row['namespace']!r}, state dir {row['state_dir']}); this one "
        f"({here}) has root CA {(fp or 'none')[:16]}…: refusing to mix the evidence of two installations. Set "
        "HUB_PG_DSN to this installation's own database, or HUB_STATE_DIR and HUB_NAMESPACE to that installation's",
        code=FOREIGN,
    )


async def record_installation(settings: Settings, conn: Any, root_fingerprint: str) -> None:
    await conn.execute(
        "INSERT INTO hub_installation (root_fingerprint, namespace, state_dir) VALUES ($1, $2, $3)"
        " ON CONFLICT (id) DO NOTHING",
        root_fingerprint,
        settings.namespace,
        str(settings.state_dir),
    )


# ============================================================================================ hub key rotation


@dataclass(frozen=True, slots=True)
class RotationResult:
    old: x509.Certificate
    new: pki.IssuedCertificate


def archive_hub_certificate(pki_dir: Path, cert: x509.Certificate) -> Path:
    target = archive_dir(pki_dir) / f"{pki.serial_hex(cert.serial_number)}.pem"
    target.parent.mkdir(parents=True, exist_ok=True)
    keys.write_public_file(target, pki.certificate_pem(cert))
    return target


class HubKeyWatch:
    """Notices a rotated hub key (the files ``hub/hub.key`` and ``hub/hub.pem`` changed, or hold another
    certificate than the one in use) and loads it; a pair caught half-written does not match and is tried again
    next time."""

    def __init__(self, pki_dir: Path, passphrase: bytes) -> None:
        self.paths = pki.PkiPaths(Path(pki_dir))
        self.passphrase = passphrase
        self._stamp: tuple[tuple[int, int], ...] | None = None
        self._refused: str | None = None  # the fingerprint of a certificate refused as not valid now (logged once)

    def _current(self) -> tuple[tuple[int, int], ...]:
        out = []
        for p in (self.paths.hub_key, self.paths.hub_cert):
            try:
                st = os.stat(p)
            except OSError:
                out.append((0, 0))
                continue
            out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def changed(self, in_use: str) -> Any:
        """The new ``Signer`` when the files hold another certificate than ``in_use`` (a fingerprint), else None.
        Costs two ``stat`` calls while the files are unchanged."""
        from hub.trust import Signer

        stamp = self._current()
        if stamp == self._stamp:
            return None
        try:
            cert = pki.load_certificates(self.paths.hub_cert)[0]
            fp = pki.fingerprint(cert)
            if fp == in_use:
                self._stamp = stamp
                return None
            if not self._valid_now(cert, fp):
                if cert.not_valid_after_utc <= clock.now():
                    self._stamp = stamp  # expired for good: look again only when the files change
                return None
            signer = Signer.load(self.paths.hub_key, self.paths.hub_cert, passphrase=self.passphrase)
        except ConfigError as exc:
            log.warning("the hub key files changed but do not load yet (%s); trying again", exc.detail)
            return None
        self._stamp = stamp
        return signer

    def _valid_now(self, cert: x509.Certificate, fp: str) -> bool:
        """False (and an error logged, once per certificate) when the new hub certificate is expired or not yet
        valid: signing with it would have every delivery refused, so the worker keeps the key it has."""
        now = clock.now()
        if cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            return True
        if self._refused != fp:
            self._refused = fp
            serial = pki.serial_hex(cert.serial_number)
            start, end = f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M}", f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}"
            log.error(
                "新的枢纽证书 %s 当前无效（有效期 %s 至 %s UTC），继续使用当前密钥签名；请重新运行 hub pki rotate · "
                "the new hub certificate %s in %s is not valid now (valid %s to %s UTC): keeping the current key; "
                "run `hub pki rotate` again",
                serial,
                start,
                end,
                serial,
                self.paths.hub_cert,
                start,
                end,
            )
        return False


def follow_hub_key(worker: Any) -> bool:
    """Called periodically in each worker: switch the worker (its processor, its checkpoints) to a rotated hub key.
    True when it switched. Worker 0 also logs expiry warnings (at most once a day each). Never raises: a failure is
    logged and the worker keeps the key it has."""
    try:
        return _follow(worker)
    except Exception as exc:  # a periodic job must not die of it
        log.warning("checking the hub key failed (%s: %s)", type(exc).__name__, str(exc)[:200])
        return False


def _follow(worker: Any) -> bool:
    watch: HubKeyWatch | None = getattr(worker, "_hub_key_watch", None)
    if watch is None:
        watch = HubKeyWatch(worker.pki_dir, worker.settings.ca_passphrase.encode())
        worker._hub_key_watch = watch
    switched = False
    signer = watch.changed(worker.signer.identity.fingerprint)
    if signer is not None:
        old = worker.signer.identity
        worker.signer = signer
        worker.context.signer = signer
        worker.processor.signer = signer
        log.info(
            "%s now signs with hub certificate %s (was %s)",
            getattr(worker, "label", None) or f"worker {getattr(worker, 'index', '?')}",
            signer.identity.serial_hex,
            old.serial_hex,
        )
        switched = True
    if getattr(worker, "index", 0) == 0 and time.monotonic() >= getattr(worker, "_next_expiry_check", 0.0):
        worker._next_expiry_check = time.monotonic() + EXPIRY_CHECK_EVERY_S
        log_expiry_warnings(worker.pki_dir)
    return switched


# ============================================================================================ issuing-CA rollover


@dataclass(frozen=True, slots=True)
class RolloverResult:
    old: x509.Certificate
    new: pki.IssuedCertificate


# ============================================================================================ expiry warnings


@dataclass(frozen=True, slots=True)
class ExpiryWarning:
    what: str  # hub | issuing | root | server
    serial: str
    subject: str
    not_after: dt.datetime
    days_left: int

    def text(self) -> str:
        role = {
            "hub": "the hub's own signing certificate",
            "issuing": "the issuing CA (and CRL signer)",
            "root": "the root CA (trust anchor and CRL signer)",
            "server": "the HTTPS gateway's TLS server certificate",
        }[self.what]
        todo = {
            "hub": "run `hub pki rotate`",
            "issuing": "run `hub pki rollover-issuing`",
            "root": "roll the root over (hub/trust/USAGE.md)",
            "server": "run `hub pki issue-server --host …` with the gateway's host names",
        }[self.what]
        if self.expired:
            return f"证书已过期 {role} {self.serial} expired on {self.not_after:%Y-%m-%d %H:%M} UTC: {todo}"
        return (
            f"证书即将到期 {role} {self.serial} expires on {self.not_after:%Y-%m-%d} "
            f"({self.days_left} days left): {todo}"
        )

    @property
    def expired(self) -> bool:
        return self.days_left < 0  # timedelta.days rounds down: any time past not-after is -1 or less

    def as_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "serial": self.serial,
            "subject": self.subject,
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left,
            "expired": self.expired,
            "text": self.text(),
        }


def expiry_warnings(
    pki_dir: Path, *, now: dt.datetime | None = None, days: int = EXPIRY_WARNING_DAYS
) -> list[ExpiryWarning]:
    """The certificates the hub itself depends on that expire within ``days``: its current signing certificate,
    the root, every issuing CA that still signs CRLs (the current one and earlier ones whose key is kept), and the
    HTTPS gateway's server certificate when there is one (``pki/gateway/server.pem``).
    For ``/ready`` and the ops page (``[w.as_dict() for w in …]``); an empty list is healthy."""
    paths = pki.PkiPaths(Path(pki_dir))
    now = now or clock.now()
    limit = now + dt.timedelta(days=days)
    watched: list[tuple[str, x509.Certificate]] = []
    if paths.root_cert.is_file():
        watched.append(("root", pki.load_certificates(paths.root_cert)[0]))
    if paths.issuing_cert.is_file():
        for i, cert in enumerate(pki.load_certificates(paths.issuing_cert)):
            if i == 0 or archived_issuing_key(paths.root, pki.serial_hex(cert.serial_number)).exists():
                watched.append(("issuing", cert))
    if paths.hub_cert.is_file():
        watched.append(("hub", pki.load_certificates(paths.hub_cert)[0]))
    if paths.gateway_cert.is_file():
        watched.append(("server", pki.load_certificates(paths.gateway_cert)[0]))
    return [
        ExpiryWarning(
            what,
            pki.serial_hex(c.serial_number),
            c.subject.rfc4514_string(),
            c.not_valid_after_utc,
            (c.not_valid_after_utc - now).days,
        )
        for what, c in watched
        if c.not_valid_after_utc <= limit
    ]


_warned: dict[str, dt.date] = {}


def log_expiry_warnings(pki_dir: Path, *, now: dt.datetime | None = None) -> list[ExpiryWarning]:
    """Log each expiry warning at most once a day (what the hub's housekeeping calls)."""
    now = now or clock.now()
    found = expiry_warnings(pki_dir, now=now)
    for w in found:
        if _warned.get(w.serial) != now.date():
            _warned[w.serial] = now.date()
            log.warning(w.text(), extra={"expiry": w.as_dict()})
    return found
