"""The directory in PostgreSQL (tables of ``003_directory.sql``).

``save`` replaces the stored directory as a whole, in one transaction (foreign keys are deferred to its end, so
the order of deletes and inserts does not matter), and records the load in ``directory_versions`` together with
the file it came from. ``load`` reads the current directory back into an equal ``Directory``. Concurrent saves are
serialised by a transaction-scoped advisory lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from hub.directory.model import Agency, Directory, Group, GroupMember, System
from hub.errors import ConfigError, StoreUnavailable
from hub.store.db import CONNECTION_ERRORS

__all__ = ["DirectoryRepository", "DirectoryVersion"]

_LOCK = 727_276


@dataclass(frozen=True, slots=True)
class DirectoryVersion:
    version: int
    loaded_at: datetime
    source_name: str | None
    source_sha256: str | None
    agency_count: int
    system_count: int
    group_count: int


def _snapshot(conn: asyncpg.Connection) -> Any:
    """A consistent read of all tables: a read-only repeatable-read transaction, or a savepoint when the caller
    already runs one (whose isolation then applies)."""
    if conn.is_in_transaction():
        return conn.transaction()
    return conn.transaction(isolation="repeatable_read", readonly=True)


class DirectoryRepository:
    """Store and read back the directory. ``db`` is an asyncpg ``Connection`` or ``Pool``."""

    def __init__(self, db: asyncpg.Connection | asyncpg.Pool) -> None:
        self._db = db

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            if isinstance(self._db, asyncpg.Pool):
                async with self._db.acquire() as conn:
                    yield conn
            else:
                yield self._db
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}") from None
        except asyncpg.exceptions.UndefinedTableError:
            raise ConfigError("the database has no directory tables yet: run `hub db migrate` first") from None
        except asyncpg.PostgresError as exc:
            # A constraint the checks in hub.directory.load should have caught first; name it, never echo data.
            what = getattr(exc, "constraint_name", None) or type(exc).__name__
            raise ConfigError(f"the directory could not be stored or read ({what})") from None

    async def save(self, directory: Directory, *, source_xml: str | None = None) -> int:
        """Replace the stored directory with ``directory``; returns the new version number."""
        agencies = list(directory.agencies())
        systems = list(directory.systems())
        groups = list(directory.groups())
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            await conn.execute("DELETE FROM directory_group_members")
            await conn.execute("DELETE FROM directory_groups")
            await conn.execute("DELETE FROM directory_systems")
            await conn.execute("DELETE FROM directory_agencies")
            await conn.executemany(
                "INSERT INTO directory_agencies (code, name, name_en, division, level, kind, zone, parent, position,"
                " line) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                [
                    (a.code, a.name, a.name_en, a.division, a.level, a.kind, a.zone, a.parent, i, a.line)
                    for i, a in enumerate(agencies)
                ],
            )
            await conn.executemany(
                "INSERT INTO directory_systems (id, agency, name, name_en, zone, ceiling, accreditation, accepts,"
                " cert_sha256, amqp_user, rate, concurrency, position, line, gateway_addresses)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                [
                    (
                        s.id,
                        s.agency,
                        s.name,
                        s.name_en,
                        s.zone,
                        s.ceiling,
                        s.accreditation,
                        list(s.accepts),
                        list(s.cert_sha256),
                        s.amqp_user,
                        s.rate,
                        s.concurrency,
                        i,
                        s.line,
                        list(s.gateway_addresses),
                    )
                    for i, s in enumerate(systems)
                ],
            )
            await conn.executemany(
                "INSERT INTO directory_groups (name, title, title_en, position, line) VALUES ($1, $2, $3, $4, $5)",
                [(g.name, g.title, g.title_en, i, g.line) for i, g in enumerate(groups)],
            )
            await conn.executemany(
                "INSERT INTO directory_group_members (group_name, position, agency, system, member_group, line)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                [(g.name, i, m.agency, m.system, m.group, m.line) for g in groups for i, m in enumerate(g.members)],
            )
            version: int = await conn.fetchval(
                "INSERT INTO directory_versions (source_name, source_sha256, source_xml, hub_system, hub_zone,"
                " hub_ceiling, agency_count, system_count, group_count)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING version",
                str(directory.source) if directory.source is not None else None,
                directory.sha256,
                source_xml,
                directory.hub_system,
                directory.hub_zone,
                directory.hub_ceiling,
                len(agencies),
                len(systems),
                len(groups),
            )
        return version

    async def current(self) -> DirectoryVersion | None:
        """The latest load, or None when no directory was ever stored."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT version, loaded_at, source_name, source_sha256, agency_count, system_count, group_count"
                " FROM directory_versions ORDER BY version DESC LIMIT 1"
            )
        return DirectoryVersion(**dict(row)) if row is not None else None

    async def load(self) -> Directory:
        """The stored directory; ConfigError when none was loaded yet."""
        async with self._conn() as conn, _snapshot(conn):
            meta = await conn.fetchrow(
                "SELECT version, hub_system, hub_zone, hub_ceiling, source_name, source_sha256"
                " FROM directory_versions ORDER BY version DESC LIMIT 1"
            )
            if meta is None:
                raise ConfigError("no directory has been loaded; run `hub directory load FILE`")
            agency_rows = await conn.fetch(
                "SELECT code, name, name_en, division, level, kind, zone, parent, line"
                " FROM directory_agencies ORDER BY position"
            )
            system_rows = await conn.fetch(
                "SELECT id, agency, name, name_en, zone, ceiling, accreditation, accepts, cert_sha256, amqp_user, rate,"
                " concurrency, gateway_addresses, line FROM directory_systems ORDER BY position"
            )
            group_rows = await conn.fetch("SELECT name, title, title_en, line FROM directory_groups ORDER BY position")
            member_rows = await conn.fetch(
                "SELECT group_name, agency, system, member_group, line FROM directory_group_members"
                " ORDER BY group_name, position"
            )
        members: dict[str, list[GroupMember]] = {}
        for m in member_rows:
            members.setdefault(m["group_name"], []).append(
                GroupMember(agency=m["agency"], system=m["system"], group=m["member_group"], line=m["line"])
            )
        return Directory(
            (Agency(**dict(r)) for r in agency_rows),
            (System(**{**dict(r), **_tuples(r, "accepts", "gateway_addresses", "cert_sha256")}) for r in system_rows),
            (
                Group(r["name"], r["title"], tuple(members.get(r["name"], ())), r["title_en"], line=r["line"])
                for r in group_rows
            ),
            hub_system=meta["hub_system"],
            hub_zone=meta["hub_zone"],
            hub_ceiling=meta["hub_ceiling"],
            source=Path(meta["source_name"]) if meta["source_name"] else None,
            sha256=meta["source_sha256"],
        )


def _tuples(row: Any, *names: str) -> dict[str, tuple[str, ...]]:
    """The text[] columns ``names`` of ``row`` as the model's tuples."""
    return {name: tuple(row[name]) for name in names}
