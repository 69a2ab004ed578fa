"""The ops pages in a real Chromium: find a message and open its trace; a title ``<script>alert(1)</script>`` shows
as text and no dialog fires; release a quarantined message as the security officer and be refused as the duty
operator; revoke a certificate and see the next message from that system refused; a screenshot of every page
(``var/screenshots/ops-<page>.png``)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from harness import SYSTEMS, document

from hub.envelope import Envelope, Recipient, parse

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SENDER = "county-220122-oa"  # 农安
RECIPIENT = "county-220182-oa"  # 榆树
REVOKED = "prov-220000-secure"  # no other browser test sends from it
NS = "urn:forestry-hub:document.official:1"
SCRIPT = "<script>alert(1)</script>"


async def send(ops: Any, root: Any, system: str = SENDER) -> tuple[Envelope, bytes]:
    data = ops.hub.sign(system, root)
    env = Envelope.from_tree(parse(data))
    await ops.hub.publish([(env, data)])
    return env, data


async def purge(ops: Any, system: str) -> None:
    queue = ops.hub.transport.names.system_queue(system)
    while batch := await ops.hub.transport.fetch(queue, max_messages=100):
        await ops.hub.transport.ack(batch)


def dialogs_of(page: Any) -> list[str]:
    seen: list[str] = []

    async def on_dialog(dialog: Any) -> None:
        seen.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    return seen


async def test_find_a_message_and_open_its_trace(ops: Any, page: Any) -> None:
    root = document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT])])
    title = root.find(f".//{{{NS}}}Title")
    assert title is not None
    title.text = SCRIPT
    env, _ = await send(ops, root)
    reply = await ops.hub.reply(SENDER, env.message_id)
    assert reply.outcome == "accepted"
    await ops.hub.drain(RECIPIENT, expect=1)
    dialogs = dialogs_of(page)
    await ops.login(page, "duty")
    await page.goto(ops.url + "/messages")
    await page.fill("input[name=sender]", SENDER)
    await page.select_option("select[name=state]", "accepted")
    async with page.expect_navigation():
        await page.click("#search button[type=submit]")
    row = page.locator(f'#results tr[data-id="{env.message_id}"]')
    assert await row.count() == 1
    await ops.screenshot(page, "ops-messages")
    async with page.expect_navigation():
        await row.locator("a").first.click()
    assert page.url == f"{ops.url}/messages/{env.message_id}"
    # the title and the XML are text, not markup: the literal tag shows, no script ran
    assert SCRIPT in await page.locator("#title").inner_text()
    assert SCRIPT.replace("<", "&lt;").replace(">", "&gt;") in await page.locator("pre.xml").inner_text()
    assert await page.locator("main script").count() == 0
    steps = await page.locator("#steps").inner_text()
    assert "已接收" in steps and "已投递" in steps and RECIPIENT in steps
    assert env.message_id in await page.locator("#evidence").inner_text() or await page.locator("#evidence tr").count()
    await ops.screenshot(page, "ops-trace")
    # the English switch: every label has its English text
    await page.goto(f"{ops.url}/lang?to=en&next=/messages/{env.message_id}")
    assert (await page.locator("h1").inner_text()).startswith("Message trace")
    assert "received" in await page.locator("#steps").inner_text()
    await ops.screenshot(page, "ops-trace-en")
    await page.goto(f"{ops.url}/lang?to=zh&next=/messages")
    # a bad filter is a sentence on the form, not an error page
    await page.goto(ops.url + "/messages?id=not-a-uuid")
    assert "OPS_BAD_FILTER" in await page.locator("#notice").inner_text()
    assert dialogs == []


async def test_release_as_security_officer_refused_as_duty(ops: Any, page: Any, browser: Any) -> None:
    root = document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT])])
    para = root.find(f".//{{{NS}}}Paragraph")
    assert para is not None
    para.text = "秘密★5年 附件所列火场坐标不得外传。"
    env, _ = await send(ops, root)
    reply = await ops.hub.reply(SENDER, env.message_id)
    assert reply.outcome == "quarantined"

    # the duty operator sees it, has no decision form, and a decision posted anyway is refused
    await ops.login(page, "duty")
    await page.goto(ops.url + "/quarantine")
    assert await page.locator(f'#quarantine tr[data-id="{env.message_id}"]').count() == 1
    assert await page.locator("form.decide").count() == 0
    assert "仅限安全保密管理员" in await page.locator("#decide-hint").inner_text()
    refused = await page.request.post(
        ops.url + "/quarantine/decide",
        form={"message_id": env.message_id, "decision": "release", "reason": "值班员想放行"},
    )
    assert refused.status == 403 and "OPS_FORBIDDEN" in await refused.text()
    await ops.screenshot(page, "ops-quarantine-duty")

    context = await browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900})
    try:
        sec = await context.new_page()
        await ops.login(sec, "security")
        await sec.goto(ops.url + "/quarantine")
        row = sec.locator(f'#quarantine tr[data-id="{env.message_id}"]')
        await row.locator("input[name=reason]").fill("经审核系已公开的演练坐标")
        await ops.screenshot(sec, "ops-quarantine")
        async with sec.expect_navigation():
            await row.locator("button.release").click()
        assert "已放行" in await sec.locator("#done").inner_text()
        got = await ops.hub.drain(RECIPIENT, expect=1)
        assert env.message_id in [e.message_id for _, e in got]
        await sec.goto(f"{ops.url}/messages/{env.message_id}")
        assert "已放行" in await sec.locator("#steps").inner_text()
    finally:
        await context.close()


async def test_revoke_and_the_next_message_is_refused(ops: Any, page: Any) -> None:
    await ops.login(page, "security")
    await page.goto(ops.url + "/certificates")
    row = page.locator(f'#certificates tr.cert-valid[data-system="{REVOKED}"]')
    assert await row.count() == 1
    serial = await row.get_attribute("data-serial")
    await row.locator("select[name=reason_code]").select_option("key-compromise")
    await row.locator("input[name=reason]").fill("密钥疑似泄露")
    async with page.expect_navigation():
        await row.locator("button[type=submit]").click()
    assert serial in await page.locator("#done").inner_text()
    assert await page.locator(f'#certificates tr.cert-revoked[data-serial="{serial}"]').count() == 1
    await ops.screenshot(page, "ops-certificates")

    # The workers reload the CRL within seconds; from then on a message signed with that certificate is refused
    # before its claims are trusted: recorded as refused intake (CERT_REVOKED) and parked as a dead letter.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        env, data = await send(ops, document(REVOKED, [Recipient.to(SYSTEMS[RECIPIENT])]), REVOKED)
        replies = await ops.hub.inbox(REVOKED).replies_for([env.message_id], timeout=4)
        if env.message_id not in replies:
            break
        assert replies[env.message_id].outcome != "CERT_REVOKED"
        assert loop.time() < deadline, "the revoked certificate was still accepted after 30 s"
    async with ops.pool.acquire() as conn:
        code = await conn.fetchval(
            "SELECT error_code FROM intake_rejections WHERE raw_sha256 = $1", hashlib.sha256(data).digest()
        )
    assert code == "CERT_REVOKED"
    await purge(ops, RECIPIENT)
    # the operator finds it by the id it claimed: refused before verification, CERT_REVOKED
    await page.goto(f"{ops.url}/messages/{env.message_id}")
    steps = await page.locator("#steps").inner_text()
    assert "验证前拒收" in steps and "CERT_REVOKED" in steps
    await ops.screenshot(page, "ops-trace-refused")
    # and among the dead letters (the list collects the dead-letter queue first), with its code
    row = page.locator(f'#dead tr:has-text("{env.message_id}")')
    for _ in range(50):
        await page.goto(ops.url + "/dead")
        if await row.count():
            break
        await asyncio.sleep(0.1)  # parked by the worker right after it recorded the refusal
    assert "CERT_REVOKED" in await row.first.inner_text()
    await ops.screenshot(page, "ops-dead")
    async with page.expect_navigation():
        await row.first.locator("a").first.click()
    assert "CERT_REVOKED" in await page.locator("#letter").inner_text()
    await ops.screenshot(page, "ops-dead-letter")


async def test_directory_and_evidence_pages(ops: Any, page: Any) -> None:
    await ops.login(page, "auditor")
    await page.goto(ops.url + "/directory")
    assert await page.locator('#systems tr[data-system="county-220122-oa"]').count() == 1
    # where the portal may call the gateway from (gateway-addresses); a system without: 不限
    portal = await page.locator('#systems tr[data-system="prov-220000-portal"]').inner_text()
    assert "10.22.0.0/16 127.0.0.1/32" in portal
    assert "不限" in await page.locator('#systems tr[data-system="county-220122-oa"]').inner_text()
    assert await page.locator("#problems-none").count() == 1
    await ops.screenshot(page, "ops-directory")
    await page.goto(ops.url + "/evidence")
    async with page.expect_navigation():
        await page.click("#verify")
    verdict = await page.locator("#verdict").inner_text()
    problems = await page.locator("#problems").inner_text() if await page.locator("#problems").count() else ""
    assert "完好" in verdict, problems  # the problems' seq, kind and text when not (seen once in CI, not reproduced)
    await ops.screenshot(page, "ops-evidence")
