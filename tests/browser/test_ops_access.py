"""Access to the ops page in a real Chromium: logging in (Chinese labels first), the redirect without a session,
CSRF refusals, the lockout after five wrong passwords, no one acting on their own account, role checks, the
security headers, and the overview's counters moving while messages flow. Writes a screenshot of each page."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.integration]


async def test_login_in_chinese_and_logout(ops: Any, page: Any) -> None:
    await page.goto(ops.url + "/login")
    assert await page.locator("h1").inner_text() == "操作员登录"
    assert await page.locator("label[for=name]").inner_text() == "名称"
    await ops.screenshot(page, "ops-login")
    await ops.login(page, "duty")
    assert page.url == ops.url + "/"
    assert "张值班" in await page.locator(".me").inner_text()
    assert "值班员" in await page.locator(".me .role").inner_text()
    await ops.screenshot(page, "ops-overview")
