"""An adapter's outbox waits for the SDK's batch on a thread of its own (``adapters.sdk.StoreConnection``), not in the event
loop's default executor.

The SDK's handled-store connection holds the store's write lock for the whole of a batch. The outboxes of the local
bureau and provincial OA adapters deliver up to 64 committed rows at a time and then mark each one in the same
store; each mark waits for that lock. They used to wait with ``asyncio.to_thread``: every mark took one of the
default executor's threads (six on two cores), so while a batch ran, anything else handed to that executor (an
endpoint's query, ``loop.getaddrinfo`` for the next HTTPS connection) queued behind them. Here the write lock is
held (as a batch would) while an outbox finishes 64 deliveries: the default executor must still answer at once,
nothing may be marked before the lock is let go, and everything is marked after."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

ROWS = 64


def _seed(store: Path, schema: str, insert: str) -> None:
    """The outbox table, with ``ROWS`` committed rows waiting (what handlers wrote through ``ctx.db``)."""
    with contextlib.closing(sqlite3.connect(store, isolation_level=None)) as conn:
        conn.execute(schema)
        conn.executemany(insert, [(f"m{i}", b"<x/>") for i in range(ROWS)])


def _local_bureau(store: Path, url: str) -> tuple[Any, str]:
    from adapters.local_bureau.adapter import _OUTBOX, Config, Outbox

    c = Config(
        listen_host="127.0.0.1",
        listen_port=0,
        token="t",
        inbox_url=url,
        inbox_token="i",
        desk_webhook_url=url,
        desk_token="d",
        desk_webhook_token="w",
        retry_initial=0.05,
        poll_interval=0.05,
    )
    _seed(
        store,
        _OUTBOX,
        "INSERT INTO lb_outbox (message_id, target, service, sender_agency, sender_system, body)"
        " VALUES (?, 'inbox', 'info.report', '11220000013544357T', 'prov-220000-oa', ?)",
    )
    return Outbox(str(store), c), "lb_outbox"


def _provincial_gov(store: Path, url: str) -> tuple[Any, str]:
    from adapters.provincial_gov.adapter import _OUTBOX, CallbackOutbox, Config

    c = Config(
        listen_host="127.0.0.1",
        listen_port=0,
        token="t",
        callback_url=url,
        callback_token="c",
        retry_initial=0.05,
        poll_interval=0.05,
    )
    _seed(
        store,
        _OUTBOX,
        "INSERT INTO oa_callback_outbox (message_id, service, sender, body) VALUES (?, 'info.report', 'x', ?)",
    )
    return CallbackOutbox(str(store), c), "oa_callback_outbox"


async def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("make", [_local_bureau, _provincial_gov], ids=["local_bureau", "provincial_gov"])
async def test_an_outbox_waiting_for_a_batch_leaves_the_default_executor_free(
    tmp_path: Path, make: Callable[[Path, str], tuple[Any, str]]
) -> None:
    received: list[str] = []

    async def endpoint(request: web.Request) -> web.Response:
        await request.read()
        received.append(request.headers["X-Hub-Message-Id"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/in", endpoint)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    store = tmp_path / "store.sqlite"
    box, table = make(store, f"http://127.0.0.1:{port}/in")

    def states() -> dict[str, int]:
        with contextlib.closing(sqlite3.connect(store)) as conn:
            return dict(conn.execute(f"SELECT state, count(*) FROM {table} GROUP BY state").fetchall())

    batch = sqlite3.connect(store, isolation_level=None)  # the SDK's connection, in the middle of a batch
    try:
        await box.open()
        batch.execute("BEGIN IMMEDIATE")
        box.poke()
        await _until(lambda: len(set(received)) == ROWS, "every row delivered to the endpoint")
        await asyncio.sleep(0.3)  # every delivery is now waiting to mark its row
        # the default executor answers while they wait (before the change: not until the write lock was let go)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), timeout=5) == "free"
        assert states() == {"pending": ROWS}  # nothing marked under the batch's lock
        batch.execute("COMMIT")
        await _until(lambda: states() == {"delivered": ROWS}, "every row marked delivered once the lock is free")
        assert sorted(set(received)) == sorted(f"m{i}" for i in range(ROWS))
    finally:
        if batch.in_transaction:
            batch.execute("ROLLBACK")
        batch.close()
        await box.stop()
        await runner.cleanup()
