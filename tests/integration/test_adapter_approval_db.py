"""The approval database adapter against the real RabbitMQ, hub and PostgreSQL, with the simulated desk."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.approval_db.demo import demo
from adapters.sdk.testing import TestHub

pytestmark = pytest.mark.integration


async def test_demo_part_returns_no_problems(tmp_path: Path) -> None:
    async with TestHub(real=True) as hub:
        assert await demo(hub, tmp_path, print) == []
