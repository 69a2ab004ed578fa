"""Shared fixtures. Unit tests need none of the services; integration tests get a fresh PostgreSQL database
and a unique RabbitMQ namespace per test session (created here, dropped afterwards)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.settings import PROJECT_ROOT, Settings

#: Test files that run for minutes (the demo plays its whole scenario three times): collected first, and with
#: ``--no-loadscope-reorder`` (the Makefile) handed to workers first, so that none of them starts when the others are
#: nearly done and ends the run alone (pytest-xdist's own order is by the number of tests in a file). On 2026-12-08
#: test_sdk_retry_timing (about three minutes, mostly waiting for Retry delays) was not listed, started 661 s into the
#: main pass and ran its last 44 s alone. Listed second, the ten longest files after it, it started beside the demo
#: and the faults test, three files that mostly wait: once the fast-off pass ended the cores were 43–70 % busy for a
#: minute and a half. Fourth, it starts when the first of those ends.
LONG_FIRST = (
    "tests/integration/test_demo.py",
    "tests/faults/test_faults.py",
    "tests/integration/test_bench_smoke_e2e.py",
    "tests/integration/test_sdk_retry_timing.py",
    "tests/integration/test_gateway_openapi.py",
    "tests/integration/test_bench_smoke.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONG_FIRST.index(path) if path in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: every file keeps its own order, and the rest theirs


ADMIN_DSN = os.environ.get("HUB_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


#: A test that runs longer than this fails with every thread's stack on stderr, instead of holding ``make test`` (and
#: CI) until its overall limit; the slowest tests take about a minute (HUB_TEST_TIMEOUT_S to change it).
TEST_TIMEOUT_S = int(os.environ.get("HUB_TEST_TIMEOUT_S", "420"))


@pytest.fixture(autouse=True)
def _test_timeout(request: pytest.FixtureRequest) -> Iterator[None]:
    """``TEST_TIMEOUT_S``, or a test's own ``@pytest.mark.time_limit(seconds)`` when that is longer (the demo's test,
    three whole demo runs each bounded by its own subprocess timeout)."""
    import faulthandler
    import signal

    marker = request.node.get_closest_marker("time_limit")
    limit = max(TEST_TIMEOUT_S, int(marker.args[0])) if marker is not None else TEST_TIMEOUT_S

    def expired(signum: int, frame: object) -> None:
        import sys

        faulthandler.dump_traceback(all_threads=True)
        loop = asyncio._get_running_loop()  # the test's own loop, when it hangs in an await
        if loop is not None:
            for task in asyncio.all_tasks(loop):
                print(f"--- asyncio task {task.get_name()}: {task.get_coro()!r}", file=sys.stderr)
                task.print_stack(limit=12, file=sys.stderr)
        raise TimeoutError(f"the test ran longer than {limit} s (HUB_TEST_TIMEOUT_S, or its time_limit mark)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """A command run in-process (``hub.cli.main([...])``) calls ``hub.logs.setup``, which points the root logger at
    the ``sys.stderr`` of that moment — pytest's capture of that test, closed afterwards. Put the root logger back
    after every test, so a later test's worker does not fail flushing a closed stream."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _no_adapter_process_left() -> Iterator[None]:
    """An adapter test that fails before its own stop leaves ``hub adapter run`` running: kill it after the test, so
    it neither consumes a later test's queue nor surfaces as an unraisable ResourceWarning in whichever test the
    garbage collector happens to run in."""
    yield
    from adapters.sdk.testing import AdapterProcess

    AdapterProcess.kill_leftovers()


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def registry():
    from hub.validation import SchemaRegistry

    return SchemaRegistry(PROJECT_ROOT / "schemas")


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session (a copy of a migrated template)."""
    from hub.store.db import create_migrated_database

    name = f"hub_test_{uuid.uuid4().hex[:10]}"
    dsn = asyncio.run(create_migrated_database(ADMIN_DSN, name))
    try:
        yield dsn
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fresh_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of an installation all of its own: a fresh migrated database, a unique RabbitMQ namespace and state
    directory (for tests that run ``hub run`` processes next to the session's in-process worker)."""
    from hub.store.db import create_migrated_database

    name = f"hub_test_{uuid.uuid4().hex[:10]}"
    dsn = asyncio.run(create_migrated_database(ADMIN_DSN, name))
    try:
        yield Settings.from_env(
            pg_dsn=dsn, namespace=f"hubtest-{uuid.uuid4().hex[:8]}", state_dir=tmp_path_factory.mktemp("state")
        )
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def test_namespace() -> str:
    """A unique prefix for every RabbitMQ exchange, queue and user made by this test session."""
    return f"hubtest-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def own_installation(base: Settings, tmp_path_factory: pytest.TempPathFactory, tag: str) -> Iterator[Settings]:
    """An installation of a test module's own, beside ``base``: a new (empty) database ``hub_test_<tag>_<random>``,
    a state directory and the namespace ``<base namespace>.<tag>``; the database is dropped afterwards."""
    name = f"hub_test_{tag}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield base.with_(
            state_dir=tmp_path_factory.mktemp(tag),
            pg_dsn=ADMIN_DSN.rsplit("/", 1)[0] + "/" + name,
            namespace=f"{base.namespace}.{tag}",
        )
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def integration_settings(pg_dsn: str, test_namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings.from_env(pg_dsn=pg_dsn, namespace=test_namespace, state_dir=tmp_path_factory.mktemp("state"))


@pytest.fixture(
    params=[
        "memory",
        pytest.param("real", marks=pytest.mark.integration),
        pytest.param("https", marks=pytest.mark.integration),
    ]
)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which hub ``TestHub`` builds: in memory, on the real services (``HUB_TEST_REAL=1``), or on the real services
    with every adapter over the HTTPS gateway (``HUB_TEST_HTTPS=1``)."""
    if request.param in ("real", "https"):
        monkeypatch.setenv("HUB_TEST_REAL", "1")
    else:
        monkeypatch.delenv("HUB_TEST_REAL", raising=False)
    if request.param == "https":
        monkeypatch.setenv("HUB_TEST_HTTPS", "1")
    else:
        monkeypatch.delenv("HUB_TEST_HTTPS", raising=False)
    return str(request.param)
