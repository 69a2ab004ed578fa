"""The overview's directory row in a real Chromium, against ``hub run`` as an operator starts it: after
``hub directory load`` the people on duty see whether every process of the hub took the new version — on it (正常),
being taken within two looks (注意, the process still on the old one named), or not taken after that (异常, with
where to look)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from harness import DIRECTORY_XML, Hub

from hub.directory import load_directory
from hub.store.directory import DirectoryRepository

pytestmark = [pytest.mark.browser, pytest.mark.integration]


async def test_the_overview_says_whether_every_process_took_the_directory(ops: Any, page: Any) -> None:
    # hub run with one worker that looks at the directory only every 10 minutes: after the load below it stays on
    # the version before for the whole test (the ops page itself counts two looks of its own HUB_DIRECTORY_REFRESH_S)
    runner = Hub(ops.settings.with_(directory_refresh_s=600))
    proc = runner.run_hub(workers=1)
    repository = DirectoryRepository(ops.pool)
    try:
        first = (await repository.current()).version
        await ops.login(page, "duty")
        row = page.locator("#health tr", has_text="目录")
        await page.locator("#health tr", has_text="1 个进程均已采用").wait_for(timeout=60_000)
        assert f"第 {first} 版" in await row.locator(".badge").inner_text()
        assert "good" in (await row.locator(".badge").get_attribute("class") or "")

        second = await repository.save(load_directory(DIRECTORY_XML))
        following = page.locator("#health tr", has_text=f"采用中 第 {second} 版")
        await following.wait_for(timeout=15_000)
        text = await following.inner_text()
        assert "仍在旧版本：工作进程 0" in text and f"第 {first} 版" in text and "每 30 秒查看一次" in text

        # the same after more than two looks: not taken, and where to look
        async with ops.pool.acquire() as conn:
            await conn.execute(
                "UPDATE directory_versions SET loaded_at = now() - interval '10 minutes' WHERE version = $1", second
            )
        behind = page.locator("#health tr", has_text=f"未采用 第 {second} 版")
        await behind.wait_for(timeout=15_000)
        text = await behind.inner_text()
        assert "两次查看后仍在旧版本：工作进程 0" in text and "could not take the new directory" in text
        badge = behind.locator(".badge")
        assert "bad" in (await badge.get_attribute("class") or "")
        await ops.screenshot(page, "ops-directory-not-taken")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 60)
        except Exception:
            proc.kill()
            proc.wait()
