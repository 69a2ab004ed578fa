"""PostgreSQL access: the pool and the migration runner. ``hub.store`` is the only package that imports
asyncpg; connection errors are translated into ``StoreUnavailable`` here.

Migrations are plain numbered SQL files in ``hub/store/migrations`` (``NNN_name.sql``), applied in order, each
in its own transaction, and recorded in ``schema_migrations``. An applied file that changed on disk is a
ConfigError: migrations are append-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from yarl import URL

from hub.errors import ConfigError, StoreUnavailable

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

#: What "the database is unavailable" means (retried by the pipeline).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, str]]:
    """(number, name, sql) for every migration file, in order; malformed names are a ConfigError."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ConfigError(f"migration file {path.name!r} must be named NNN_lowercase_name.sql")
        found.append((int(m.group(1)), path.name, path.read_text(encoding="utf-8")))
    numbers = [n for n, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"two migration files share a number in {directory}")
    return found


def _no_database(dsn: str) -> ConfigError:
    """What an operator reads when the database named by HUB_PG_DSN does not exist (not an outage: nothing to retry)."""
    name = dsn.rsplit("/", 1)[-1].split("?", 1)[0] or "?"
    return ConfigError(
        f"the database {name!r} does not exist on this PostgreSQL server: create it (createdb {name}) and run "
        "`hub db migrate`, or set HUB_PG_DSN to the installation's database",
        code="STORE_NO_DATABASE",
    )


def where(dsn: str) -> str:
    """``host:port/database`` of a DSN for an operator's message: never its user, password or query."""
    try:
        url = URL(dsn)
    except ValueError:
        return "?"
    host = url.host or "localhost"
    return f"{host}:{url.port or 5432}/{url.path.lstrip('/') or '?'}"


def _unreachable(dsn: str, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(
        f"cannot connect to PostgreSQL at {where(dsn)} ({type(exc).__name__}): is the server running and HUB_PG_DSN "
        "right?"
    )


async def connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn)
    except asyncpg.exceptions.InvalidCatalogNameError:
        raise _no_database(dsn) from None
    except CONNECTION_ERRORS as exc:
        raise _unreachable(dsn, exc) from None


async def _keep(conn: asyncpg.Connection) -> None:
    """The hub leaves no session state on a pooled connection (no LISTEN, no session advisory locks, no temporary
    tables, no SET; every transaction is a context manager), so the default reset query — one more round trip on
    every release — is skipped."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, generic_plans: bool = False) -> asyncpg.Pool:
    """A connection pool. ``generic_plans`` is for the pipeline workers, whose connections run the same few
    statements on every batch: PostgreSQL then plans each prepared statement once (``plan_cache_mode =
    force_generic_plan``) instead of re-planning it whenever it estimates a custom plan cheaper. In an e2e bench
    run pg_stat_statements showed ``record_sent`` re-planned on 3,584 of 4,828 calls, 0.29 ms of planning each,
    with no faster execution to show for it; every statement there looks rows up by primary key.

    JIT compilation is off on every pool: the hub's statements are short, and PostgreSQL compiles whenever a plan's
    estimated cost passes ``jit_above_cost`` — which estimates made on stale statistics do. In bench/gateway.py the
    documents process's window scan (2 ms) was compiled on every call, 15 ms of PostgreSQL CPU each time."""
    settings = {"jit": "off"}
    if generic_plans:
        settings["plan_cache_mode"] = "force_generic_plan"
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, reset=_keep, server_settings=settings
        )
    except asyncpg.exceptions.InvalidCatalogNameError:
        raise _no_database(dsn) from None
    except CONNECTION_ERRORS as exc:
        raise _unreachable(dsn, exc) from None
    assert pool is not None
    return pool


#: What ``fetch_planned_now`` sets, in the transaction, for its one statement.
PLANNED_NOW = "SET LOCAL plan_cache_mode = force_custom_plan"


async def fetch_planned_now(conn: asyncpg.Connection, query: str, *args: object) -> list[asyncpg.Record]:
    """``conn.fetch`` with a plan made for these values and the tables' present size (inside a transaction).

    PostgreSQL keeps a prepared statement's generic plan, costed with the statistics of the moment it was made,
    while the tables grow: the pipeline workers' pools ask for that (``generic_plans``), the others get one after
    five executions. A statement that reads a window of a growing table — the last records of the evidence chain —
    made on a new installation's few rows runs as a scan of the whole table for every call (or, joined, for every row
    of the window): tests/integration/test_plan_shapes.py. For such a statement, planning each call keeps its cost
    that of its window: 0.01–0.12 ms of planning for the process engine's four (EXPLAIN ANALYZE at 3,000 messages),
    a few times a second. ``plan_cache_mode = force_custom_plan`` for this statement only, the connection's own mode
    back after it. On an error the transaction (or savepoint) is rolled back, and the setting with it."""
    await conn.execute(PLANNED_NOW)
    rows: list[asyncpg.Record] = await conn.fetch(query, *args)
    await conn.execute("SET LOCAL plan_cache_mode = DEFAULT")
    return rows


@asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration; return the names applied now."""
    files = migration_files(directory)
    applied_now: list[str] = []
    async with connection(dsn) as conn:
        # One migrator at a time, even with several hub processes starting together.
        await conn.execute("SELECT pg_advisory_lock(727274)")
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " number integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = await conn.fetch("SELECT number, name, sha256 FROM schema_migrations")
            done = {r["number"]: r for r in rows}
            for number, name, sql in files:
                digest = hashlib.sha256(sql.encode()).hexdigest()
                if number in done:
                    if done[number]["sha256"] != digest:
                        raise ConfigError(f"migration {name} was changed after it was applied; add a new one instead")
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (number, name, sha256) VALUES ($1, $2, $3)",
                        number,
                        name,
                        digest,
                    )
                applied_now.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(727274)")
    return applied_now


#: ``create_migrated_database`` copies databases from ``hub_template_<digest of the migration files>``.
TEMPLATE_PREFIX = "hub_template_"
#: A template of another set of migrations (another branch, an earlier commit) is dropped once it is this old.
TEMPLATE_KEPT_S = 24 * 3600


def with_database(dsn: str, name: str) -> str:
    """``dsn`` naming the database ``name`` instead (its host, user and query kept)."""
    url = URL(dsn)
    return str(url.with_path("/" + name).with_query(url.query))


async def create_migrated_database(admin_dsn: str, name: str, directory: Path = MIGRATIONS_DIR) -> str:
    """``CREATE DATABASE name`` as a copy of a database on which every migration was applied; returns its DSN.

    For installations made by the hundred, ``TestHub`` and the test suite: a copy costs PostgreSQL about 0.05 s of
    CPU, running the migrations about 0.3 s. The template, ``hub_template_<digest>``, is made on first use (one
    maker at a time; another process that needs it waits for it) with ``migrate``, so the copy is what ``hub db
    migrate`` makes, down to ``schema_migrations``; it then refuses connections, which a copy needs. Templates of
    other sets of migrations are dropped a day after they were made (a copy that finds its template dropped makes it
    again). The hub's own installations (``hub db migrate``, the demo) do not use this: a template is for
    throw-away databases on a developer's or a CI machine's server."""
    files = migration_files(directory)
    digest = hashlib.sha256("".join(f"{n}\0{sql}\0" for _, n, sql in files).encode()).hexdigest()[:20]
    template = TEMPLATE_PREFIX + digest
    async with connection(admin_dsn) as conn:
        for attempt in range(3):
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", template):
                await conn.execute("SELECT pg_advisory_lock(727275)")
                try:
                    if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", template):
                        await _make_template(conn, admin_dsn, template, directory)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(727275)")
            try:
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                break
            except asyncpg.exceptions.InvalidCatalogNameError:  # dropped since (another checkout's old template)
                if attempt == 2:
                    raise
    return with_database(admin_dsn, name)


async def _make_template(conn: asyncpg.Connection, admin_dsn: str, template: str, directory: Path) -> None:
    import time
    import uuid

    # Built under another name and renamed when complete: a copy never starts from a half-migrated template, and a
    # maker connected to another admin database (whose advisory lock is not this one) loses the rename, not the data.
    building = f"{template}_{uuid.uuid4().hex[:8]}"
    await conn.execute(f'CREATE DATABASE "{building}"')
    try:
        await migrate(with_database(admin_dsn, building), directory)
        await conn.execute(f"COMMENT ON DATABASE \"{building}\" IS 'hub template made {int(time.time())}'")
        await conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{template}"')
    except asyncpg.exceptions.DuplicateDatabaseError:
        await conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
        return
    except BaseException:
        await conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
        raise
    await conn.execute(f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS false')
    rows = await conn.fetch(
        "SELECT d.datname, shobj_description(d.oid, 'pg_database') AS note FROM pg_database d"
        " WHERE starts_with(d.datname, $1) AND d.datname <> $2 AND NOT d.datallowconn",
        TEMPLATE_PREFIX,
        template,
    )
    for row in rows:
        made = re.fullmatch(r"hub template made (\d+)", row["note"] or "")
        if made is None or time.time() - int(made.group(1)) < TEMPLATE_KEPT_S:
            continue
        with contextlib.suppress(asyncpg.exceptions.PostgresError):  # being copied right now: the next time
            await conn.execute(f'DROP DATABASE "{row["datname"]}"')


#: Failures that a retry can cure: the connection errors above, plus a deadlock or serialization victim, a
#: statement cancelled by a timeout, and a server shutting down. All become ``StoreUnavailable`` (transient).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: disk full, out of memory, too many connections
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.OperatorInterventionError,
)


@asynccontextmanager
async def translated(doing: str) -> AsyncIterator[None]:
    """Translate transient database failures inside the block into ``StoreUnavailable`` (``doing`` names the
    operation in the message). Other asyncpg errors are bugs or broken invariants and propagate unchanged."""
    try:
        yield
    except asyncpg.exceptions.DiskFullError:
        raise StoreUnavailable(
            f"PostgreSQL's disk is full while {doing}: free space on the database server; the hub defers messages "
            "and retries"
        ) from None
    except TRANSIENT_ERRORS as exc:
        raise StoreUnavailable(f"PostgreSQL is unavailable while {doing} ({type(exc).__name__})") from None


@asynccontextmanager
async def acquired(executor: asyncpg.Connection | asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection from ``executor``: the connection itself, or one acquired from the pool for the block."""
    if isinstance(executor, asyncpg.Pool):
        async with executor.acquire() as conn:
            yield conn
    else:
        yield executor


@asynccontextmanager
async def transaction(executor: asyncpg.Connection | asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on ``executor``: a connection (nested in the caller's transaction as a savepoint if one is
    open) or a pool (a connection is acquired for the duration)."""
    if isinstance(executor, asyncpg.Pool):
        async with executor.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with executor.transaction():
            yield executor
