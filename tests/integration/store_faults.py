"""Stand-ins for a pipeline worker's store (``Worker.store``) that fail or hold its batches: the gateway's tests put
them in front of the real store of the worker that examines their submissions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["StoreDownOnce", "StoreGate", "StoreGateThenDown"]


class StoreDownOnce:
    """The store whose next batch finds PostgreSQL unavailable."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.failures = 1

    def batch(self) -> Any:
        from hub.errors import StoreUnavailable

        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("PostgreSQL is unavailable (a test)")
        return self.real.batch()

    async def close(self) -> None:
        await self.real.close()


class StoreGate:
    """The store whose batches wait at the gate until ``release`` is set (never, if it is not)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def batch(self) -> Any:
        @contextlib.asynccontextmanager
        async def held() -> AsyncIterator[Any]:
            self.entered.set()
            await self.release.wait()
            async with self.real.batch() as batch:
                yield batch

        return held()

    async def close(self) -> None:
        await self.real.close()


class StoreGateThenDown(StoreGate):
    """The store whose next batch waits at the gate until ``release`` is set, then finds PostgreSQL unavailable."""

    def batch(self) -> Any:
        from hub.errors import StoreUnavailable

        @contextlib.asynccontextmanager
        async def held() -> AsyncIterator[Any]:
            self.entered.set()
            await self.release.wait()
            raise StoreUnavailable("PostgreSQL is unavailable (a test)")
            yield None

        return held()
