"""The demo's processes (issue 14): each process of ``hub/processes`` plays its part against the demo's running hub
through its own ``demo()`` (``hub/processes/<name>_demo.py``: ``async def demo(hub, say) -> list[str]``, the problems
it saw), in a ``TestHub(installation=…)`` that joins the running hub. The running hub's own engine follows on the real
clock; a part that must pass a deadline runs one engine pass at a later time (the engine's exactly-once holds across
both). The same ``demo()`` runs in the process's own integration test on a fresh hub."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from hub.settings import Settings

#: (step key, module under hub/processes, title) in the order the demo plays them.
PROCESS_STEPS: tuple[tuple[str, str, str], ...] = (
    ("s", "documents", "公文跟踪：签收、阅读、办结与催办 a document followed to 办结, a late recipient reminded"),
    ("t", "approvals", "网上审批与督办 an approval case under supervision"),
    ("u", "emergencies", "应急预警强制签收与升级 an unacknowledged alert escalated"),
    ("v", "meetings", "视频会议预约与冲突 a conflicting meeting refused"),
)

STEP_TIMEOUT = 180.0

DemoFn = Callable[[Any, Callable[[str], None]], Awaitable[list[str]]]


def demo_of(name: str) -> DemoFn:
    module = importlib.import_module(f"hub.processes.{name}_demo")
    return module.demo  # type: ignore[no-any-return]


async def play(
    settings: Settings, name: str, lines: list[str], *, drain: Callable[[], Awaitable[int]] | None = None
) -> list[str]:
    """Run process ``name``'s part against the running hub of ``settings``; its lines go to ``lines``, its problems
    are returned (empty when it behaved)."""
    from adapters.sdk.testing import TestHub

    fn = demo_of(name)
    if drain is not None:  # what earlier steps left in the queues would reach this part's clients
        await drain()
    async with TestHub(installation=settings) as hub:
        try:
            return list(await asyncio.wait_for(fn(hub, lambda line: lines.append(line.strip())), STEP_TIMEOUT))
        except TimeoutError:
            return [f"{name}: not finished within {STEP_TIMEOUT:g} s"]
