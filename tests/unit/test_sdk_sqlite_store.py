"""The SDK's embedded SQLite store: a batch's transaction holds the write lock from its start, so another
connection to the same file (an adapter's outbox thread, committing on its own) waits for the batch instead of making
SQLite refuse the batch's first write with "database is locked" — which sent the whole batch back for a retry with
back-off (video_conference: about fifty such retries in a run of 500 bookings, minutes of delay on a loaded machine)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from adapters.sdk._store import SqliteHandledStore


async def test_another_connection_committing_mid_batch_waits_and_the_batch_is_not_refused(tmp_path: Path):
    path = str(tmp_path / "store.db")
    store = SqliteHandledStore(path)
    await store.open()
    store.conn.execute("CREATE TABLE effects (booking TEXT)")
    # The outbox: its own connection, used from a thread, each statement committing by itself.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    other.execute("CREATE TABLE outbox (id TEXT, state TEXT)")
    other.execute("INSERT INTO outbox VALUES ('n1', 'pending')")
    try:
        async with store.transaction() as tx:
            assert tx.db.execute("SELECT count(*) FROM effects").fetchone() == (0,)  # the handler reads first
            marking = asyncio.create_task(asyncio.to_thread(other.execute, "UPDATE outbox SET state = 'sent'"))
            await asyncio.sleep(0.3)
            assert not marking.done(), "the other connection wrote inside the batch's transaction"
            tx.db.execute("INSERT INTO effects VALUES ('b1')")  # refused with "database is locked" before
            tx.record("b1", "meeting.booking/1", "112200000000000000/county-222404-oa", "replied")
        await asyncio.wait_for(marking, 10)  # and once the batch committed, the outbox's write goes through
        assert store.conn.execute("SELECT booking FROM effects").fetchall() == [("b1",)]
        assert store.conn.execute("SELECT state FROM outbox").fetchall() == [("sent",)]
        assert await store.seen(["b1", "b2"]) == {"b1"}
    finally:
        other.close()
        await store.close()
