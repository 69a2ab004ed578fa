"""Access to the ops page in a real Chromium: logging in (Chinese labels first) and out, pages without a session
redirecting to the login, forms posted without their CSRF token refused, five wrong passwords locking an account
until an administrator unlocks it, no one acting on their own account, each page checking the role, the language
switch, the security headers and cookie flags, and the overview's counters moving while messages flow. Writes a
screenshot of each of these pages to var/screenshots/."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import unquote

import pytest

from hub.store import operators as store

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "victim-Passw0rd-2026"


async def csrf_of(page: Any) -> str:
    """The session's CSRF token, as the page's forms carry it (the logout form in the nav bar)."""
    return await page.locator("form[action='/logout'] input[name=csrf]").get_attribute("value")


async def post_form(page: Any, action: str, fields: dict[str, str]) -> None:
    """Submit a form the way the browser does (a real navigation), built in the page: the page's CSP does not
    apply to Playwright's evaluate."""
    async with page.expect_navigation():
        await page.evaluate(
            """([action, fields]) => {
                const f = document.createElement("form");
                f.method = "post"; f.action = action;
                for (const [k, v] of Object.entries(fields)) {
                    const i = document.createElement("input"); i.type = "hidden"; i.name = k; i.value = v; f.appendChild(i);
                }
                document.body.appendChild(f); f.submit();
            }""",
            [action, fields],
        )


async def new_operator(ops: Any, role: str = "duty") -> str:
    name = f"op-{uuid.uuid4().hex[:8]}"
    await store.add_operator(
        ops.pool, name, role=role, display_name="测试员", password=PASSWORD, by="tests", by_role="-", via="cli"
    )
    return name


async def test_login_in_chinese_and_logout(ops: Any, page: Any) -> None:
    await page.goto(ops.url + "/login")
    assert await page.locator("h1").inner_text() == "操作员登录"
    assert await page.locator("label[for=name]").inner_text() == "名称"
    assert await page.locator("label[for=password]").inner_text() == "口令"
    assert await page.locator("button[type=submit]").inner_text() == "登录"
    await ops.screenshot(page, "ops-login")
    await ops.login(page, "duty")
    assert page.url == ops.url + "/"
    assert "张值班" in await page.locator(".me").inner_text()
    assert await page.locator(".me .role").inner_text() == "值班员"
    nav = await page.locator("nav.nav a").all_inner_texts()
    assert nav[0] == "概览" and "操作员" not in nav and "操作审计" not in nav  # duty manages nobody, audits nothing
    async with page.expect_navigation():
        await page.click("form[action='/logout'] button")
    assert page.url.startswith(ops.url + "/login")
    await page.goto(ops.url + "/")
    assert unquote(page.url) == ops.url + "/login?next=/"


@pytest.mark.parametrize("path", ["/", "/operators", "/audit", "/messages", "/quarantine", "/certificates"])
async def test_pages_without_a_session_redirect_to_the_login(ops: Any, page: Any, path: str) -> None:
    response = await page.goto(ops.url + path)
    assert response.status == 200 and page.url.startswith(ops.url + "/login?next=")
    assert await page.locator("h1").inner_text() == "操作员登录"
    api = await page.request.get(ops.url + "/api/overview")
    assert api.status == 401 and (await api.json())["code"] == "OPS_NO_SESSION"


async def test_login_comes_back_to_the_page_asked_for(ops: Any, page: Any) -> None:
    await page.goto(ops.url + "/audit?operator=admin")
    await ops.login(page, "auditor", password="wrong-password", goto=False)  # a failure keeps where to go back to
    await ops.login(page, "auditor", goto=False)
    assert page.url == ops.url + "/audit?operator=admin"


async def test_a_form_posted_without_its_csrf_token_is_refused(ops: Any, page: Any) -> None:
    victim = await new_operator(ops)
    await ops.login(page, "admin")
    token = await csrf_of(page)
    assert token
    for form in ({"reason": "no token"}, {"reason": "wrong token", "csrf": token[:-2] + "xx"}, {"csrf": ""}):
        r = await page.request.post(f"{ops.url}/operators/{victim}/disable", form=form, max_redirects=0)
        assert r.status == 403 and "OPS_CSRF" in await r.text()
    r = await page.request.post(ops.url + "/logout", form={}, max_redirects=0)
    assert r.status == 403 and "OPS_CSRF" in await r.text()
    op = await store.get_operator(ops.pool, victim)
    assert op is not None and not op.disabled
    # In the browser: the refusal is a page with the code and a sentence, no traceback.
    await post_form(page, f"/operators/{victim}/disable", {"reason": "forged"})
    assert await page.locator(".problem code").inner_text() == "OPS_CSRF"
    assert "防伪令牌" in await page.locator(".problem").inner_text()
    await ops.screenshot(page, "ops-error-csrf")
    # With the token the same form works (the token was the only thing missing).
    await page.goto(ops.url + "/operators")
    await post_form(page, f"/operators/{victim}/disable", {"reason": "离职", "csrf": token})
    assert page.url.startswith(ops.url + "/operators?done=disable")
    op = await store.get_operator(ops.pool, victim)
    assert op is not None and op.disabled
    # The login form has a token of its own.
    r = await page.request.post(ops.url + "/login", form={"name": "duty", "password": "duty-Passw0rd-2026"})
    assert r.status == 403 and "OPS_CSRF" in await r.text()


async def test_five_wrong_passwords_lock_the_account_until_an_admin_unlocks(ops: Any, browser: Any, page: Any) -> None:
    victim = await new_operator(ops)
    ops.operators["victim"] = (victim, PASSWORD)
    for attempt in range(store.LOCK_AFTER):
        await ops.login(page, "victim", password=f"wrong-{attempt}")
        assert page.url.startswith(ops.url + "/login")
        alert = await page.locator(".error").inner_text()
        assert "OPS_LOGIN_FAILED" in alert and "锁定" in alert
    unknown = await page.context.new_page()
    ops.operators["nobody"] = ("nobody-" + uuid.uuid4().hex[:6], PASSWORD)
    await ops.login(unknown, "nobody")
    assert await unknown.locator(".error").inner_text() == alert  # an unknown name reads the same
    await unknown.close()
    # The sixth attempt, with the right password, is refused.
    await ops.login(page, "victim")
    assert page.url.startswith(ops.url + "/login") and "OPS_LOGIN_FAILED" in await page.locator(".error").inner_text()
    await ops.screenshot(page, "ops-login-refused")

    admin_context = await browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900})
    admin = await ops.login(await admin_context.new_page(), "admin")
    try:
        await admin.goto(ops.url + "/operators")
        row = admin.locator(f"tr[data-name='{victim}']")
        assert "已锁定至" in await row.locator(".state").inner_text()
        await ops.screenshot(admin, "ops-operators-locked")
        await row.locator("form[action$='/unlock'] input[name=reason]").fill("电话核实为本人误输")
        async with admin.expect_navigation():
            await row.locator("form[action$='/unlock'] button").click()
        assert "已解锁" in await admin.locator(".ok").inner_text()
        assert "正常" in await admin.locator(f"tr[data-name='{victim}'] .state").inner_text()
    finally:
        await admin_context.close()
    await ops.login(page, "victim")
    assert page.url == ops.url + "/"
    actions = [(a.action, a.outcome) for a in await store_actions(ops, victim)]
    assert actions.count(("login.failed", "refused")) == 6 and ("login.locked", "done") in actions
    assert actions[0] == ("login", "done")


async def store_actions(ops: Any, name: str) -> list[Any]:
    from hub.store.audit import operator_actions

    return await operator_actions(ops.pool, operator=name)


async def test_no_one_acts_on_their_own_account(ops: Any, page: Any) -> None:
    await ops.login(page, "admin")
    await page.goto(ops.url + "/operators")
    own = page.locator("tr[data-name='admin']")
    assert await own.locator(".actions").inner_text() == "本人账号" and await own.locator("form").count() == 0
    token = await csrf_of(page)
    for what in ("disable", "unlock", "role"):
        r = await page.request.post(
            f"{ops.url}/operators/admin/{what}", form={"csrf": token, "reason": "self", "role": "duty"}
        )
        assert r.status == 403 and "OPS_SELF_ACTION" in await r.text()
    await post_form(page, "/operators/admin/disable", {"csrf": token, "reason": "self"})
    assert await page.locator(".problem code").inner_text() == "OPS_SELF_ACTION"
    await ops.screenshot(page, "ops-error-self-action")
    me = await store.get_operator(ops.pool, "admin")
    assert me is not None and me.role == "admin" and not me.disabled
    refused = [a for a in await store_actions(ops, "admin") if a.outcome == "refused" and a.target == "admin"]
    assert {a.action for a in refused} == {"operator.disable", "operator.unlock", "operator.role"}


async def test_each_page_checks_the_role(ops: Any, page: Any) -> None:
    await ops.login(page, "duty")
    for path, role in (("/operators", "系统管理员"), ("/audit", "安全审计员")):
        response = await page.goto(ops.url + path)
        assert response.status == 403
        assert await page.locator(".problem code").inner_text() == "OPS_FORBIDDEN"
        assert role in await page.locator(".problem").inner_text()
    await ops.screenshot(page, "ops-error-forbidden")
    r = await page.request.post(
        ops.url + "/operators/add", form={"csrf": await csrf_of(page), "name": "sneaky", "role": "admin"}
    )
    assert r.status == 403 and "OPS_FORBIDDEN" in await r.text()
    assert await store.get_operator(ops.pool, "sneaky") is None


async def test_admin_adds_an_operator_and_the_auditor_sees_it(ops: Any, browser: Any, page: Any) -> None:
    name = f"new-{uuid.uuid4().hex[:6]}"
    await ops.login(page, "admin")
    await page.goto(ops.url + "/operators")
    form = page.locator("form[action='/operators/add']")
    await form.locator("input[name=name]").fill(name)
    await form.locator("input[name=display_name]").fill("<b>孙</b>值班")
    await form.locator("select[name=role]").select_option("duty")
    await form.locator("input[name=password]").fill("new-Passw0rd-2026")
    await form.locator("input[name=reason]").fill("新入职值班员")
    async with page.expect_navigation():
        await form.locator("button").click()
    assert "已添加操作员" in await page.locator(".ok").inner_text()
    row = page.locator(f"tr[data-name='{name}']")
    assert "<b>孙</b>值班" in await row.inner_text()  # escaped, shown as text
    assert await page.locator(f"tr[data-name='{name}'] b").count() == 0
    await ops.screenshot(page, "ops-operators")

    auditor_context = await browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900})
    auditor = await ops.login(await auditor_context.new_page(), "auditor")
    try:
        nav = await auditor.locator("nav.nav a").all_inner_texts()
        assert "操作审计" in nav and "操作员" not in nav
        async with auditor.expect_navigation():
            await auditor.click("nav.nav a[href='/audit']")
        everyone = {r.split("\t")[2] for r in await auditor.locator("#actions tbody tr").all_inner_texts()}
        assert {"admin", "auditor", "tests"} <= everyone  # every operator, the CLI setup included
        await auditor.fill("form.filters input[name=operator]", "admin")
        async with auditor.expect_navigation():
            await auditor.click("form.filters button")
        rows = auditor.locator("#actions tbody tr")
        first = await rows.first.inner_text()
        assert "新增操作员" in first and "operator.add" in first and name in first and "新入职值班员" in first
        assert "web" in first
        assert all("admin" in r for r in await rows.all_inner_texts())
        await ops.screenshot(auditor, "ops-audit")
    finally:
        await auditor_context.close()


async def test_language_switch(ops: Any, page: Any) -> None:
    await ops.login(page, "security")
    async with page.expect_navigation():
        await page.click("a.lang")
    assert page.url == ops.url + "/"
    assert await page.locator(".me .role").inner_text() == "Security officer"
    assert (await page.locator("nav.nav a").all_inner_texts())[0] == "Overview"
    assert await page.locator("figure.chart figcaption").first.inner_text() == "Messages per minute"
    await ops.screenshot(page, "ops-overview-en")
    async with page.expect_navigation():
        await page.click("a.lang")
    assert await page.locator(".me .role").inner_text() == "安全保密管理员"


async def test_security_headers_and_cookie_flags(ops: Any, page: Any) -> None:
    await ops.login(page, "duty")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "ops_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    for path in ("/", "/static/ops.js", "/no-such-page"):
        response = await page.goto(ops.url + path)
        h = await response.all_headers()  # .headers leaves out security-related ones
        assert h["content-security-policy"].startswith("default-src 'self'; frame-ancestors 'none'")
        assert h["x-content-type-options"] == "nosniff" and h["referrer-policy"] == "no-referrer"
        if not path.startswith("/static/"):
            assert h["cache-control"] == "no-store"
    assert response.status == 404 and await page.locator(".problem code").inner_text() == "OPS_NOT_FOUND"
    assert (await page.locator("nav.nav a").all_inner_texts())[0] == "概览"  # still logged in on an error page
    assert "Traceback" not in await page.content()
    await ops.screenshot(page, "ops-error-not-found")


async def test_the_overview_counters_move_while_messages_flow(ops: Any, page: Any) -> None:
    from harness import SYSTEMS, document

    from hub.envelope import Recipient

    await ops.login(page, "duty")
    accepted = page.locator("#totals [data-key=accepted] .value")
    await accepted.wait_for()
    before = int(await accepted.inner_text())
    polls = int(await page.locator("#overview").get_attribute("data-polls"))
    sender, recipient, n = "county-220122-oa", "county-220183-oa", 12
    for _ in range(n):
        await ops.hub.send(sender, document(sender, [Recipient.to(SYSTEMS[recipient])]))
    await page.wait_for_function(
        "([want]) => Number(document.querySelector('#totals [data-key=accepted] .value').textContent) >= want",
        arg=[before + n],
        timeout=30_000,
    )
    assert int(await accepted.inner_text()) == before + n
    await page.wait_for_function(
        "([p]) => Number(document.getElementById('overview').dataset.polls) >= p + 3", arg=[polls], timeout=15_000
    )
    assert re.fullmatch(r"\d+", await page.locator("#totals [data-key=deliveries] .value").inner_text())
    assert await page.locator("#health tbody tr").count() >= 4
    assert "正常" in await page.locator("#health tr[data-item=PostgreSQL]").inner_text()
    await ops.screenshot(page, "ops-overview-flowing")
    # leave the shared installation's queues as they were (other browser tests read these systems' queues)
    assert len(await ops.hub.drain(recipient, expect=n)) == n
    assert len(await ops.hub.drain(sender, expect=n)) >= n  # the hub's receipts
