"""The gateway link's pause after a batch the adapter failed on stays bounded after any number of failures in a
row: ``first * 2 ** (failures - 1)`` raised OverflowError past 1,024 (an int too large for a float), which ended the
batch loop — after about eight and a half hours of a store that stays away (review of this session's changes)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from adapters.sdk._gateway import _Consumer
from hub.transport import Incoming


async def test_the_pause_after_many_failed_batches_stays_at_its_ceiling() -> None:
    released: list[float] = []

    async def fail(batch: list[Incoming]) -> None:
        raise RuntimeError("the handled-store is away")

    transport: Any = SimpleNamespace(reconnect=(0.5, 30.0), polls=0)  # no polls: the batch is put in by hand
    consumer = _Consumer(transport, fail, prefetch=4, max_batch=1, linger=0, concurrency=1)
    consumer.failures = 1_100
    consumer._release_later = lambda batch, pause: released.append(pause)  # type: ignore[method-assign]
    msg: Any = SimpleNamespace(settled=False)
    consumer.ready.put_nowait(msg)
    [loop] = consumer.batches
    try:
        for _ in range(100):
            if released or loop.done():
                break
            await asyncio.sleep(0.01)
        assert not loop.done(), loop.exception() if loop.done() else None
        assert released == [30.0] and consumer.failures == 1_101
    finally:
        loop.cancel()
