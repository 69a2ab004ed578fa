"""The demo's agency adapters (issue 12): each of the five adapters under ``adapters/`` plays its part against the
demo's running hub, with its simulated external system, through its own ``demo()``
(``adapters/<name>/demo.py``: ``async def demo(hub, work, out) -> list[str]``, the problems it saw).

Each runs in a ``TestHub(installation=…)`` of its own that joins the running hub: the adapter is enrolled into an
enrolment directory of its own and runs as ``hub adapter run`` in its own process; the other systems of its part
are the joined hub's clients. The same ``demo()`` runs in the adapter's own integration test on a fresh hub."""

from __future__ import annotations

import asyncio
import importlib
import shutil
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from hub.settings import Settings

#: (step key, package under adapters/, title) in the order the demo plays them.
ADAPTER_STEPS: tuple[tuple[str, str, str], ...] = (
    ("n", "provincial_gov", "省政府公文交换系统适配器 the provincial government's OA (HTTPS push and callback)"),
    ("o", "national_forestry", "国家林草局报送适配器 the national administration's reporting folders"),
    ("p", "local_bureau", "县局业务系统适配器 a county bureau's system and its duty desk"),
    ("q", "video_conference", "视频会议平台适配器 the video-conference platform's API"),
    ("r", "approval_db", "审批数据库适配器 the approval system's database (outbox and write-back)"),
)

#: How long one adapter's part may take before the demo calls it stuck.
STEP_TIMEOUT = 240.0

DemoFn = Callable[[Any, Path, Callable[[str], None]], Awaitable[list[str]]]


def demo_of(name: str) -> DemoFn:
    module = importlib.import_module(f"adapters.{name}.demo")
    return module.demo  # type: ignore[no-any-return]


def _plain(line: str) -> str:
    """A line as the step prints it: the adapter's own check mark and indentation taken off."""
    return line.strip().removeprefix("✔").removeprefix("✓").strip()


async def play(
    settings: Settings, name: str, lines: list[str], *, drain: Callable[[], Awaitable[int]] | None = None
) -> list[str]:
    """Run adapter ``name``'s part against the running hub of ``settings``; its lines go to ``lines``, its problems
    are returned (empty when it behaved)."""
    from adapters.sdk.testing import TestHub

    fn = demo_of(name)
    if drain is not None:  # what earlier steps left in the queues would reach this adapter's clients
        await drain()
    work = settings.state_dir / "adapters" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    async with TestHub(installation=settings) as hub:
        try:
            return list(await asyncio.wait_for(fn(hub, work, lambda line: lines.append(_plain(line))), STEP_TIMEOUT))
        except TimeoutError:
            return [f"{name}: not finished within {STEP_TIMEOUT:g} s"]


def systems_to_drain(directory: Any, keep: Iterable[str]) -> list[str]:
    kept = set(keep)
    return [s.id for s in directory.systems() if s.id not in kept and s.id != "hub"]
