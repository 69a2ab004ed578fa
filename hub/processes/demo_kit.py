"""What the processes' demo parts (``hub/processes/<name>_demo.py``) share: one engine pass at the real time beside
the running hub's own engine, waiting for a condition, the hub's notices a client received."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

__all__ = ["notices", "pass_now", "until"]


async def pass_now(hub: Any) -> None:
    """One engine pass at the real time beside the running hub's own engine (the feed is shared: each message still
    reaches each process once). ``hub``: the demo's ``TestHub``."""
    from hub.processes.runner import open_engine

    engine, close = await open_engine(hub.settings)
    try:
        await engine.run_once()
    finally:
        await close()


async def until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Await ``check()`` every 0.2 s until it returns something true (returned); TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.2)


def notices(hub: Any, system: str, kind: str, refers_to: str) -> list[Any]:
    """The hub.notice deliveries of ``kind`` about ``refers_to`` that ``system``'s test client received."""
    return [
        d
        for d in hub.delivered(system)
        if d.context.service == "hub.notice" and d.message.kind == kind and d.message.refers_to == refers_to
    ]
