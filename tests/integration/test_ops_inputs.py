"""What the ops page does with input it cannot act on as it is — a NUL or another control character, a time outside
the years the store can hold, an over-long reason, a name that cannot be an operator's, a crafted "done" link —
against a real hub (RabbitMQ, PostgreSQL, the in-process worker): the page's own refusal with its stable code and
sentence (recorded when it is an operator action), never a 500 ``OPS_INTERNAL``, and nothing acted on that could not
be recorded (a dead letter is not republished without its record). Also: the title of a message the classification
gate holds is shown only to the roles that may read classified titles."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from harness import SYSTEMS, Hub, document
from test_ops_views import NS, RECIPIENT, ROLES, SENDER, Ops, dead_letter_of, quarantined_message

from hub.envelope import Recipient
from hub.settings import Settings

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple 9"
TOO_LONG = "理" * 501


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "opsinputs") as settings:
        yield settings


@pytest.fixture(scope="module")
async def ops(settings: Settings) -> AsyncIterator[Ops]:
    from hub.store import operators
    from monitoring.app import create_app

    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()
    client = TestClient(TestServer(create_app(settings, secure_cookies=False)))
    await client.start_server()
    o = Ops(hub, client)
    try:
        for role in ROLES:
            await operators.add_operator(
                hub.pool,
                f"t-{role}",
                role=role,
                display_name=f"测试 {role}",
                password=PASSWORD,
                by="test-setup",
                by_role="admin",
                via="cli",
            )
            o.tokens[role] = await operators.open_session(hub.pool, f"t-{role}")
        yield o
    finally:
        await client.close()
        await hub.close()


async def newest_actions(ops: Ops, after: int) -> list[Any]:
    """The operator actions recorded after id ``after``, oldest first."""
    from hub.store.audit import operator_actions

    return [a for a in reversed(await operator_actions(ops.hub.pool, limit=100)) if a.id > after]


async def last_action_id(ops: Ops) -> int:
    from hub.store.audit import operator_actions

    return max((a.id for a in await operator_actions(ops.hub.pool, limit=1)), default=0)


# -- search filters ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"sender": "a\x00b"}, "sender"),
        ({"recipient": "\x00"}, "recipient"),
        ({"service": "x\x00"}, "service"),
        ({"since": "0001-01-01T00:00"}, "since"),  # Beijing time: before the year 1 in UTC
        ({"until": "9999-12-31T23:00-10:00"}, "until"),  # after the year 9999 in UTC
        ({"before": f"0001-01-01T00:00:00+14:00,{uuid.uuid4()}"}, "before"),
    ],
)
async def test_a_nul_or_a_time_out_of_range_in_a_filter_is_a_sentence_on_the_form(
    ops: Ops, query: dict[str, str], field: str
) -> None:
    status, text, _ = await ops.get("duty", "/messages?" + urlencode(query))
    assert status == 400 and "OPS_INTERNAL" not in text, status
    assert f'id="notice" data-field="{field}"' in text and "OPS_BAD_FILTER" in text
    assert 'id="search"' in text


# -- names: the login form, the auditor's filter, the administrator's account paths ---------------------------------


async def test_a_login_name_with_a_nul_is_an_ordinary_login_failure(ops: Ops) -> None:
    before = await last_action_id(ops)
    async with ops.client.get("/login") as r:
        csrf = r.cookies["ops_login_csrf"].value
    try:
        form = {"csrf": csrf, "name": "t-duty\x00", "password": PASSWORD, "next": "/"}
        async with ops.client.post("/login", data=form, allow_redirects=False) as r:
            status, text = r.status, await r.text()
    finally:
        ops.client.session.cookie_jar.clear()
    assert status == 401 and "OPS_LOGIN_FAILED" in text and "OPS_INTERNAL" not in text, status
    # recorded as the failure of a name nobody has, the NUL shown as U+FFFD (the record cannot hold it)
    mine = await newest_actions(ops, before)
    assert [(a.action, a.operator, a.outcome, a.detail) for a in mine] == [
        ("login.failed", "t-duty\ufffd", "refused", {"known": False})
    ]


async def test_the_audit_filter_with_a_control_character_is_a_bad_filter(ops: Ops) -> None:
    status, text, _ = await ops.get("auditor", "/audit?operator=%00")
    assert status == 400 and "OPS_BAD_FILTER" in text and "OPS_INTERNAL" not in text, status
    status, text, _ = await ops.get("auditor", "/audit?operator=t-duty")
    assert status == 200 and 'id="actions"' in text


async def test_an_account_change_on_a_name_no_operator_can_have_is_no_operator(ops: Ops) -> None:
    before = await last_action_id(ops)
    for what in ("unlock", "disable", "role"):
        status, text, _ = await ops.post("admin", f"/operators/t-duty%00/{what}", {"reason": "核实", "role": "duty"})
        assert status == 404 and "OPS_NO_OPERATOR" in text and "OPS_INTERNAL" not in text, (what, status)
    mine = await newest_actions(ops, before)
    assert [(a.action, a.outcome, a.target, a.detail["code"]) for a in mine] == [
        ("operator.unlock", "refused", "t-duty", "OPS_NO_OPERATOR"),
        ("operator.disable", "refused", "t-duty", "OPS_NO_OPERATOR"),
        ("operator.role", "refused", "t-duty", "OPS_NO_OPERATOR"),
    ]
    from hub.store.operators import get_operator

    found = await get_operator(ops.hub.pool, "t-duty")
    assert found is not None and not found.disabled


async def test_a_display_name_with_a_nul_is_refused_with_its_sentence(ops: Ops) -> None:
    form = {"name": "t-newcomer", "display_name": "新\x00人", "role": "duty", "password": PASSWORD, "reason": "入职"}
    status, text, _ = await ops.post("admin", "/operators/add", form)
    assert status == 400 and "OPS_BAD_DISPLAY_NAME" in text and "OPS_INTERNAL" not in text, status


# -- reasons: every form that takes one --------------------------------------------------------------------------


async def test_a_dead_replay_with_a_nul_in_its_reason_publishes_nothing(ops: Ops) -> None:
    """The reason is checked before anything is published: refused (recorded), the letter still pending, and no
    copy of it went back to the inbound lane (which would have refused it again: a second dead letter)."""
    import hashlib

    from hub.store.dead_letters import get, list_dead

    body = f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "{uuid.uuid4()}">]><x>&a;</x>'.encode()
    dead_id = await dead_letter_of(ops, body)
    before = await last_action_id(ops)
    for reason in ("重试\x00", "重试\x07", TOO_LONG):
        status, text, _ = await ops.post("duty", f"/dead/{dead_id}/replay", {"reason": reason})
        assert status == 400 and "OPS_BAD_REASON" in text and "OPS_INTERNAL" not in text, (reason[:8], status)
        assert 'id="replay"' in text  # the letter's page again, with its form
    await asyncio.sleep(3)  # what a republished copy needs to come back as a new dead letter
    await ops.get("duty", "/dead")  # collects the dead-letter queue
    digest = hashlib.sha256(body).hexdigest()
    copies = [d for d in await list_dead(ops.hub.pool, state=None, limit=500) if d.body_sha256 == digest]
    letter = await get(ops.hub.pool, dead_id)
    assert len(copies) == 1 and letter is not None and letter.state == "pending"
    mine = await newest_actions(ops, before)
    assert [(a.action, a.outcome, a.target, a.detail["code"]) for a in mine] == [
        ("dead.replay", "refused", str(dead_id), "OPS_BAD_REASON")
    ] * 3
    assert mine[0].reason == "重试" and len(mine[2].reason) <= 2000


async def test_a_replay_the_store_cannot_record_is_not_published(ops: Ops) -> None:
    """``hub.pipeline.dead.replay`` itself (what ``hub dead replay`` runs): a reason PostgreSQL refuses fails the
    record, and then nothing was published — the letter stays pending and no copy comes back."""
    import hashlib

    import asyncpg

    from hub.pipeline.dead import replay
    from hub.store.dead_letters import get, list_dead

    body = f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY b "{uuid.uuid4()}">]><x>&b;</x>'.encode()
    dead_id = await dead_letter_of(ops, body)
    with pytest.raises(asyncpg.CharacterNotInRepertoireError):  # PostgreSQL's text refuses the NUL
        await replay(
            ops.hub.settings, ops.hub.pool, dead_id, operator="t-duty", role="duty", via="cli", reason="重试\x00"
        )
    await asyncio.sleep(3)
    await ops.get("duty", "/dead")
    digest = hashlib.sha256(body).hexdigest()
    copies = [d for d in await list_dead(ops.hub.pool, state=None, limit=500) if d.body_sha256 == digest]
    letter = await get(ops.hub.pool, dead_id)
    assert len(copies) == 1 and letter is not None and letter.state == "pending"
    # and a reason it can record replays it as before
    result = await replay(
        ops.hub.settings, ops.hub.pool, dead_id, operator="t-duty", role="duty", via="cli", reason="重试"
    )
    letter = await get(ops.hub.pool, dead_id)
    assert result.dead_id == dead_id and letter is not None and letter.state == "replayed"


async def test_every_form_that_takes_a_reason_refuses_one_it_cannot_record(ops: Ops) -> None:
    """Quarantine release and reject, certificate revocation, CSR approval, clearing a process alarm, the account
    changes: a reason with a control character or longer than the form allows is refused with OPS_BAD_REASON (400,
    its sentence) and the refusal recorded; nothing else is done."""
    from monitoring.views.certificates import requests_dir

    requests_dir(ops.hub.settings).mkdir(parents=True, exist_ok=True)
    csr = requests_dir(ops.hub.settings) / "inputs-review.csr"
    csr.write_bytes(b"not looked at: the reason is refused first")
    mid = str(uuid.uuid4())
    forms = (
        ("security", "/quarantine/decide", {"message_id": mid, "decision": "release"}, "quarantine.release"),
        ("security", "/quarantine/decide", {"message_id": mid, "decision": "reject"}, "quarantine.reject"),
        ("security", "/certificates/revoke", {"serial": "01ab", "reason_code": "superseded"}, "cert.revoke"),
        ("security", "/certificates/approve", {"name": csr.name}, "csr.approve"),
        ("duty", "/processes/alarms/987654/clear", {}, "alarm.clear"),
        ("admin", "/operators/t-duty/unlock", {}, "operator.unlock"),
        ("admin", "/operators/t-duty/disable", {}, "operator.disable"),
        ("admin", "/operators/t-duty/role", {"role": "auditor"}, "operator.role"),
        (
            "admin",
            "/operators/add",
            {"name": "t-other", "display_name": "另一位", "role": "duty", "password": PASSWORD},
            "operator.add",
        ),
    )
    try:
        for reason in ("ok\x00", "换\x1b[31m行", TOO_LONG):
            before = await last_action_id(ops)
            for role, path, form, _ in forms:
                status, text, _ = await ops.post(role, path, {**form, "reason": reason})
                assert status == 400 and "OPS_BAD_REASON" in text, (path, reason[:8], status)
                assert "理由不得包含控制字符" in text and "OPS_INTERNAL" not in text, path
            mine = await newest_actions(ops, before)
            assert [(a.action, a.outcome, a.detail["code"]) for a in mine] == [
                (action, "refused", "OPS_BAD_REASON") for _, _, _, action in forms
            ], reason[:8]
    finally:
        csr.unlink(missing_ok=True)
    from hub.store.operators import get_operator

    duty = await get_operator(ops.hub.pool, "t-duty")
    assert duty is not None and duty.role == "duty" and not duty.disabled
    assert await get_operator(ops.hub.pool, "t-other") is None
    # the auditor reads the clearing of an alarm by its label, like the other actions
    status, text, _ = await ops.get("auditor", "/audit?operator=t-duty")
    assert status == 200 and "解除流程告警" in text and "<code>alarm.clear</code>" in text


async def test_a_quarantine_release_with_a_nul_in_its_reason_leaves_it_pending(ops: Ops) -> None:
    from hub.store.messages import quarantine_show

    mid = await quarantined_message(ops)
    form = {"message_id": mid, "decision": "release", "reason": "ok\x00"}
    status, text, _ = await ops.post("security", "/quarantine/decide", form)
    assert status == 400 and "OPS_BAD_REASON" in text and "OPS_INTERNAL" not in text, status
    assert (await quarantine_show(ops.hub.pool, mid)).status == "pending"


# -- the title of a quarantined message --------------------------------------------------------------------------


async def test_the_title_of_a_quarantined_message_is_withheld_like_a_classified_one(ops: Ops) -> None:
    """Labelled 公开 but held because its content carries 秘密★: its title may be the classified content. While it
    is held (and after a rejection) only the roles that read classified titles see it; once released, everyone."""
    titles: dict[str, str] = {}
    for decision in ("release", "reject"):
        root = document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT])])
        title, para = root.find(f".//{{{NS}}}Title"), root.find(f".//{{{NS}}}Paragraph")
        assert title is not None and para is not None
        title.text = f"秘密★ 某林区火场兵力部署（{decision}）"
        para.text = "秘密★5年 附件所列火场坐标不得外传。"
        env = await ops.hub.send(SENDER, root)
        assert (await ops.hub.reply(SENDER, env.message_id)).outcome == "quarantined"
        titles[decision] = env.message_id

    async def shown(mid: str) -> dict[str, bool]:
        out = {}
        for role in ROLES:
            status, text, _ = await ops.get(role, f"/messages/{mid}")
            assert status == 200, role
            out[role] = "火场兵力部署" in text
            assert ("仅向可查看原文的角色显示" in text) == (not out[role]), role
        return out

    held = {"security": True, "duty": True, "auditor": False, "admin": False}
    for mid in titles.values():
        assert await shown(mid) == held
    for decision, mid in titles.items():
        status, _, _ = await ops.post(
            "security", "/quarantine/decide", {"message_id": mid, "decision": decision, "reason": "经审核"}
        )
        assert status == 303, decision
    assert await shown(titles["release"]) == dict.fromkeys(ROLES, True)  # released: what its label says
    assert await shown(titles["reject"]) == held


# -- "done" notices ------------------------------------------------------------------------------------------------


async def test_a_crafted_link_cannot_put_text_into_a_done_notice(ops: Ops) -> None:
    for role, path in (
        ("duty", "/processes?done=cleared&target=请立即拨打 400-000-0000 核实"),
        ("admin", "/operators?done=disable&name=请立即拨打 400-000-0000"),
        ("admin", "/operators?done=add&name=t-duty%0A请立即拨打"),
    ):
        status, text, _ = await ops.get(role, path)
        assert status == 200 and "请立即拨打" not in text, path
    # what the pages' own redirects name is still shown
    status, text, _ = await ops.get("duty", "/processes?done=cleared&target=42")
    assert status == 200 and 'id="done"' in text and "#42" in text
    status, text, _ = await ops.get("admin", "/operators?done=disable&name=t-duty")
    assert status == 200 and "已停用" in text and "<strong>t-duty</strong>" in text
