"""``hub.store.db.create_migrated_database``: the databases ``TestHub`` and the suite make by the hundred are copies
of a migrated template, made once per set of migrations. Each test here uses a set of migrations of its own (so a
template of its own, dropped at the end), never the hub's, whose template the other workers are copying."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from conftest import ADMIN_DSN

from hub.store.db import TEMPLATE_KEPT_S, TEMPLATE_PREFIX, create_migrated_database, migrate, with_database

pytestmark = pytest.mark.integration


async def _templates(admin: asyncpg.Connection) -> dict[str, bool]:
    rows = await admin.fetch(
        "SELECT datname, datallowconn FROM pg_database WHERE starts_with(datname, $1)", TEMPLATE_PREFIX
    )
    return {r["datname"]: r["datallowconn"] for r in rows}


@contextlib.asynccontextmanager
async def _admin() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        yield conn
    finally:
        await conn.close()


async def _drop(admin: asyncpg.Connection, names: list[str]) -> None:
    for name in names:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_copies_are_migrated_independent_and_made_from_one_template(tmp_path: Path) -> None:
    mig = tmp_path / "migrations"
    mig.mkdir()
    (mig / "001_first.sql").write_text("CREATE TABLE notes (id int PRIMARY KEY, text text NOT NULL);")
    (mig / "002_second.sql").write_text("ALTER TABLE notes ADD COLUMN urgent boolean NOT NULL DEFAULT false;")
    names = [f"hub_test_copy_{uuid.uuid4().hex[:8]}" for _ in range(4)]
    async with _admin() as admin:
        before = await _templates(admin)
        made: list[str] = []
        try:
            # four at once, as pytest workers starting together: one template, every copy complete
            dsns = await asyncio.gather(*(create_migrated_database(ADMIN_DSN, n, mig) for n in names))
            made = [t for t in await _templates(admin) if t not in before]
            assert len(made) == 1 and not (await _templates(admin))[made[0]]  # one, and it refuses connections
            with pytest.raises(asyncpg.exceptions.PostgresError, match="not currently accepting connections"):
                await asyncpg.connect(with_database(ADMIN_DSN, made[0]))
            for dsn in dsns:
                conn = await asyncpg.connect(dsn)
                try:
                    rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY number")
                    assert [r["name"] for r in rows] == ["001_first.sql", "002_second.sql"]
                    assert await migrate(dsn, mig) == []  # what `hub db migrate` would find: nothing left to apply
                    assert await conn.fetchval("SELECT count(*) FROM notes") == 0  # nothing of the others' rows
                    await conn.execute("INSERT INTO notes VALUES (1, $1)", dsn)
                finally:
                    await conn.close()
        finally:
            await _drop(admin, names + made)


async def test_a_new_set_of_migrations_gets_its_own_template_and_a_day_old_one_is_dropped(tmp_path: Path) -> None:
    mig = tmp_path / "migrations"
    mig.mkdir()
    (mig / "001_first.sql").write_text("CREATE TABLE notes (id int PRIMARY KEY);")
    names = [f"hub_test_copy_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    async with _admin() as admin:
        before = await _templates(admin)
        made: list[str] = []
        try:
            await create_migrated_database(ADMIN_DSN, names[0], mig)
            first = [t for t in await _templates(admin) if t not in before]
            made += first
            # a migration added (another branch, a later commit): a second template, the first one kept for a day
            (mig / "002_second.sql").write_text("CREATE TABLE more (id int);")
            await create_migrated_database(ADMIN_DSN, names[1], mig)
            now = await _templates(admin)
            made += [t for t in now if t not in before and t not in made]
            assert len(made) == 2 and first[0] in now
            # a day later (its note says when it was made), the next template made drops it
            old = int(time.time()) - TEMPLATE_KEPT_S - 60
            await admin.execute(f"COMMENT ON DATABASE \"{first[0]}\" IS 'hub template made {old}'")
            (mig / "003_third.sql").write_text("CREATE TABLE most (id int);")
            dsn = await create_migrated_database(ADMIN_DSN, names[2], mig)
            now = await _templates(admin)
            made += [t for t in now if t not in before and t not in made]
            assert first[0] not in now and len([t for t in made if t in now]) == 2
            assert all(t in now for t in before)  # the hub's own template (this day's) is left alone
            conn = await asyncpg.connect(dsn)
            try:
                assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 3
            finally:
                await conn.close()
            # a copy whose template was dropped meanwhile makes it again
            await _drop(admin, [made[-1]])
            again = f"hub_test_copy_{uuid.uuid4().hex[:8]}"
            names.append(again)
            await create_migrated_database(ADMIN_DSN, again, mig)
            assert made[-1] in await _templates(admin)
        finally:
            await _drop(admin, names + made)


def test_a_copys_dsn_keeps_the_host_user_and_query() -> None:
    dsn = "postgresql://hub:secret@db.example:6432/hub?sslmode=require"
    assert with_database(dsn, "hub_test_x") == "postgresql://hub:secret@db.example:6432/hub_test_x?sslmode=require"
