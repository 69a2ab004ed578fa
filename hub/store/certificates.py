"""The register of the hub CA (tables of ``002_trust.sql``): certificates, revocations, published CRLs.

Plain records in and out; the CA logic lives in ``hub.trust.pki`` and ``hub.commands.trust_admin`` keeps files and
register in step. Works on an asyncpg connection or pool. Connection failures become ``StoreUnavailable``
(code ``DELIVERY_STORE``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from hub.errors import ConfigError, StoreUnavailable
from hub.store.db import CONNECTION_ERRORS

__all__ = [
    "REVOKE_CURRENT",
    "CertificateRecord",
    "CertificateRepository",
    "CertificateRow",
    "CrlRow",
    "RevocationRow",
]

#: Refusal to revoke a certificate the hub is using now (its signing certificate, the issuing CA); in
#: ``hub.errors.CODES``.
REVOKE_CURRENT = "PKI_REVOKE_CURRENT"


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    serial: str  # lower-case hex
    fingerprint: str
    kind: str  # root | issuing | hub | agency | tls | server
    issuer_serial: str | None
    agency: str | None
    system: str | None
    subject: str
    key_algorithm: str
    not_before: dt.datetime
    not_after: dt.datetime
    der: bytes
    renews: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateRow(CertificateRecord):
    """A stored certificate: what was recorded, plus when it was issued and whether it was revoked."""

    issued_at: dt.datetime
    revoked_at: dt.datetime | None
    revocation_reason: str | None

    def state(self, now: dt.datetime) -> str:
        """``revoked``, ``expired``, ``not-yet-valid`` or ``valid``."""
        if self.revoked_at is not None:
            return "revoked"
        if now > self.not_after:
            return "expired"
        if now < self.not_before:
            return "not-yet-valid"
        return "valid"

    def days_left(self, now: dt.datetime) -> int:
        return (self.not_after - now).days


@dataclass(frozen=True, slots=True)
class RevocationRow:
    serial: str
    reason: str
    revoked_at: dt.datetime


@dataclass(frozen=True, slots=True)
class CrlRow:
    issuer_serial: str
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    revoked_count: int


_SELECT = (
    "SELECT c.serial, c.fingerprint, c.kind, c.issuer_serial, c.agency, c.system, c.subject, c.key_algorithm,"
    " c.not_before, c.not_after, c.der, c.renews, c.issued_at, r.revoked_at, r.reason AS revocation_reason"
    " FROM trust_certificates c LEFT JOIN trust_revocations r USING (serial)"
)


def _row(r: asyncpg.Record) -> CertificateRow:
    values: dict[str, Any] = dict(r)
    values["der"] = bytes(values["der"])
    return CertificateRow(**values)


class CertificateRepository:
    """Certificates and their states. ``db`` is an asyncpg ``Connection`` or ``Pool``."""

    def __init__(self, db: asyncpg.Connection | asyncpg.Pool) -> None:
        self._db = db

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            yield
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}") from None

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._guard():
            return list(await self._db.fetch(sql, *args))

    async def _execute(self, sql: str, *args: Any) -> None:
        async with self._guard():
            await self._db.execute(sql, *args)

    # ------------------------------------------------------------------------------------------ certificates

    async def add(self, rec: CertificateRecord) -> None:
        """Record an issued certificate (idempotent for the same serial and fingerprint)."""
        async with self._guard():
            existing = await self._db.fetchval(
                "SELECT fingerprint FROM trust_certificates WHERE serial = $1", rec.serial
            )
            if existing is not None:
                if existing != rec.fingerprint:
                    raise ConfigError(f"serial {rec.serial} is already registered for another certificate")
                return
            await self._db.execute(
                "INSERT INTO trust_certificates (serial, fingerprint, kind, issuer_serial, agency, system, subject,"
                " key_algorithm, not_before, not_after, der, renews)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                rec.serial,
                rec.fingerprint,
                rec.kind,
                rec.issuer_serial,
                rec.agency,
                rec.system,
                rec.subject,
                rec.key_algorithm,
                rec.not_before,
                rec.not_after,
                rec.der,
                rec.renews,
            )

    async def get(self, serial: str) -> CertificateRow | None:
        rows = await self._fetch(_SELECT + " WHERE c.serial = $1", serial)
        return _row(rows[0]) if rows else None

    async def by_fingerprint(self, fingerprint: str) -> CertificateRow | None:
        rows = await self._fetch(_SELECT + " WHERE c.fingerprint = $1", fingerprint)
        return _row(rows[0]) if rows else None

    async def certificates(self, *, agency: str | None = None, kind: str | None = None) -> list[CertificateRow]:
        rows = await self._fetch(
            _SELECT + " WHERE ($1::text IS NULL OR c.agency = $1) AND ($2::text IS NULL OR c.kind = $2)"
            " ORDER BY CASE c.kind WHEN 'root' THEN 0 WHEN 'issuing' THEN 1 WHEN 'hub' THEN 2 ELSE 3 END,"
            " c.issued_at, c.serial",
            agency,
            kind,
        )
        return [_row(r) for r in rows]

    # ------------------------------------------------------------------------------------------ revocation

    async def revoke(
        self, serial: str, reason: str, revoked_at: dt.datetime | None = None, *, in_use: frozenset[str] = frozenset()
    ) -> CertificateRow:
        """Record a revocation; revoking twice keeps the first record. Unknown serials are a ConfigError.
        ``in_use``: the serials of the hub's current signing certificate, issuing CA and gateway server certificate
        (the files of the PKI directory), refused with ``PKI_REVOKE_CURRENT``: the workers would go on signing with
        a revoked certificate, every delivery would be refused and the next evidence checkpoint would not verify."""
        row = await self.get(serial)
        if row is None:
            raise ConfigError(f"no certificate with serial {serial} in the register (see `hub pki list`)")
        if row.kind == "root":
            raise ConfigError("the root certificate cannot be revoked; replace the whole PKI instead")
        if serial in in_use and row.revoked_at is None:
            if row.kind == "issuing":
                raise ConfigError(
                    f"证书 {serial} 是当前的签发 CA：先运行 hub pki rollover-issuing 和 hub pki rotate，再吊销它 — "
                    f"certificate {serial} is the current issuing CA: run hub pki rollover-issuing and hub pki rotate "
                    "first, then revoke it",
                    code=REVOKE_CURRENT,
                )
            if row.kind == "server":
                raise ConfigError(
                    f"证书 {serial} 是网关当前使用的服务器证书：先运行 hub pki issue-server 换发新证书"
                    f"（网关 30 秒内换用），再吊销它 — certificate {serial} is the gateway's current server "
                    "certificate: run hub pki issue-server first (the gateway takes the new one within 30 s), then "
                    "revoke it",
                    code=REVOKE_CURRENT,
                )
            raise ConfigError(
                f"证书 {serial} 是枢纽当前的签名证书：先运行 hub pki rotate 换用新密钥，再吊销这张旧证书 — "
                f"certificate {serial} is the hub's current signing certificate: run hub pki rotate first, then revoke "
                "it (the old one)",
                code=REVOKE_CURRENT,
            )
        if row.revoked_at is None:
            await self._execute(
                "INSERT INTO trust_revocations (serial, reason, revoked_at) VALUES ($1, $2, COALESCE($3, now()))"
                " ON CONFLICT (serial) DO NOTHING",
                serial,
                reason,
                revoked_at,
            )
            row = await self.get(serial)
            assert row is not None
        return row

    async def revoked_under(self, issuer_serial: str) -> list[RevocationRow]:
        """Every revocation of a certificate the given CA issued (what its CRL lists)."""
        rows = await self._fetch(
            "SELECT r.serial, r.reason, r.revoked_at FROM trust_revocations r"
            " JOIN trust_certificates c USING (serial) WHERE c.issuer_serial = $1 ORDER BY r.revoked_at, r.serial",
            issuer_serial,
        )
        return [RevocationRow(r["serial"], r["reason"], r["revoked_at"]) for r in rows]

    # ------------------------------------------------------------------------------------------ CRLs

    async def next_crl_number(self, issuer_serial: str) -> int:
        async with self._guard():
            value = await self._db.fetchval(
                "SELECT COALESCE(max(number), 0) + 1 FROM trust_crls WHERE issuer_serial = $1", issuer_serial
            )
        return int(value)

    async def record_crl(
        self,
        issuer_serial: str,
        number: int,
        this_update: dt.datetime,
        next_update: dt.datetime,
        revoked_count: int,
        der: bytes,
    ) -> None:
        await self._execute(
            "INSERT INTO trust_crls (issuer_serial, number, this_update, next_update, revoked_count, der)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (issuer_serial, number) DO NOTHING",
            issuer_serial,
            number,
            this_update,
            next_update,
            revoked_count,
            der,
        )

    async def latest_crl(self, issuer_serial: str) -> CrlRow | None:
        rows = await self._fetch(
            "SELECT issuer_serial, number, this_update, next_update, revoked_count FROM trust_crls"
            " WHERE issuer_serial = $1 ORDER BY number DESC LIMIT 1",
            issuer_serial,
        )
        if not rows:
            return None
        r = rows[0]
        return CrlRow(r["issuer_serial"], r["number"], r["this_update"], r["next_update"], r["revoked_count"])
