"""The ops pages (monitoring/views: messages, trace, quarantine, dead letters, certificates, directory, evidence)
against a real hub (RabbitMQ, PostgreSQL, the in-process worker) through an aiohttp test client: search filters and
a bad filter, the trace of a real message (escaped), role refusals (a duty operator may not decide on the
quarantine or revoke), CSRF refusals, a release and a revocation that takes effect on the next message, a CSR
approved, the route check, the evidence chain verified."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from harness import SYSTEMS, Hub, document

from hub.envelope import Envelope, Recipient, parse
from hub.settings import Settings

pytestmark = pytest.mark.integration

SENDER = "county-220122-oa"  # 农安
RECIPIENT = "county-220182-oa"  # 榆树
REVOKED_SENDER = "county-220183-oa"  # 德惠: its certificate is revoked by a test
NS = "urn:forestry-hub:document.official:1"
SCRIPT = "<script>alert(1)</script>"
ROLES = ("security", "duty", "admin", "auditor")
CN = dt.timezone(dt.timedelta(hours=8))


@dataclass
class Ops:
    hub: Hub
    client: TestClient
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # role → (session token, csrf)

    def headers(self, role: str) -> dict[str, str]:
        return {"Cookie": f"ops_session={self.tokens[role][0]}"}

    def csrf(self, role: str) -> str:
        return self.tokens[role][1]

    async def get(self, role: str, path: str, **kw: Any) -> tuple[int, str, Any]:
        async with self.client.get(path, headers=self.headers(role), allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r.headers

    async def post(self, role: str, path: str, data: dict[str, Any], *, csrf: bool = True) -> tuple[int, str, Any]:
        form = dict(data)
        if csrf:
            form["csrf"] = self.csrf(role)
        async with self.client.post(path, data=form, headers=self.headers(role), allow_redirects=False) as r:
            return r.status, await r.text(), r.headers


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "opsviews") as settings:
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
                password="correct horse battery staple 9",
                by="test-setup",
                by_role="admin",
                via="cli",
            )
            o.tokens[role] = await operators.open_session(hub.pool, f"t-{role}")
        yield o
    finally:
        await client.close()
        await hub.close()


async def actions(ops: Ops, action: str) -> list[Any]:
    from hub.store.audit import operator_actions

    return [a for a in await operator_actions(ops.hub.pool) if a.action == action]


async def quarantined_message(ops: Ops) -> str:
    """A public message whose body carries a 秘密★ marking: the gate holds it."""
    root = document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT])])
    para = root.find(f".//{{{NS}}}Paragraph")
    assert para is not None
    para.text = "秘密★5年 附件所列火场坐标不得外传。"
    env = await ops.hub.send(SENDER, root)
    reply = await ops.hub.reply(SENDER, env.message_id)
    assert (reply.kind, reply.outcome) == ("receipt", "quarantined")
    return env.message_id


# -- access --------------------------------------------------------------------------------------------------------


async def test_pages_need_a_session(ops: Ops) -> None:
    for path in ("/quarantine", "/certificates", "/directory", "/evidence"):
        async with ops.client.get(path, allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"].startswith("/login?"), path


async def test_every_role_sees_the_pages(ops: Ops) -> None:
    for role in ROLES:
        for path, marker in (
            ("/quarantine", "隔离审核"),
            ("/certificates", "证书登记册"),
            ("/directory", "目录与路由"),
            ("/evidence", "证据链"),
        ):
            status, text, headers = await ops.get(role, path)
            assert status == 200 and marker in text, (role, path, status)
            assert "default-src 'self'" in headers["Content-Security-Policy"]
            assert "<script>" not in text.split("</head>")[-1] or 'src="/static/' in text


async def test_a_crafted_link_cannot_put_text_into_a_done_notice(ops: Ops) -> None:
    for path in (
        "/quarantine?done=released&id=请立即拨打",
        "/certificates?done=approved&target=请立即拨打&file=请立即拨打",
        "/dead?done=replayed&target=请立即拨打",
    ):
        status, text, _ = await ops.get("duty", path)
        assert status == 200 and "请立即拨打" not in text, path


# -- quarantine ----------------------------------------------------------------------------------------------------


async def test_quarantine_decisions_need_the_security_officer_csrf_and_a_reason(ops: Ops) -> None:
    mid = await quarantined_message(ops)
    status, text, _ = await ops.get("duty", "/quarantine")
    assert status == 200 and mid in text and "仅限安全保密管理员" in text
    assert 'action="/quarantine/decide"' not in text  # the duty operator gets no decision form
    form = {"message_id": mid, "decision": "release", "reason": "演练坐标已公开"}
    status, text, _ = await ops.post("duty", "/quarantine/decide", form)
    assert status == 403 and "OPS_FORBIDDEN" in text
    status, text, _ = await ops.post("security", "/quarantine/decide", form, csrf=False)
    assert status == 403 and "OPS_CSRF" in text
    status, text, _ = await ops.post("security", "/quarantine/decide", {**form, "reason": "  "})
    assert status == 400 and "OPS_REASON_REQUIRED" in text
    status, text, _ = await ops.post("security", "/quarantine/decide", {**form, "message_id": "not-a-uuid"})
    assert status == 400 and "OPS_BAD_ID" in text
    nobody = str(uuid.uuid4())
    status, text, _ = await ops.post("security", "/quarantine/decide", {**form, "message_id": nobody})
    assert status == 409 and "QUARANTINE_NOT_FOUND" in text
    assert [a.outcome for a in await actions(ops, "quarantine.release") if a.target == nobody] == ["refused"]
    # nothing of it changed the message
    from hub.store.messages import quarantine_show

    assert (await quarantine_show(ops.hub.pool, mid)).status == "pending"
    status, text, _ = await ops.get("security", "/quarantine")
    assert 'action="/quarantine/decide"' in text and mid in text


async def test_release_delivers_and_is_recorded(ops: Ops) -> None:
    mid = await quarantined_message(ops)
    form = {"message_id": mid, "decision": "release", "reason": "经审核系已公开的演练坐标"}
    status, _, headers = await ops.post("security", "/quarantine/decide", form)
    assert status == 303 and headers["Location"] == f"/quarantine?done=released&id={mid}"
    got = await ops.hub.drain(RECIPIENT, expect=1)
    assert mid in [e.message_id for _, e in got]
    done = [a for a in await actions(ops, "quarantine.release") if a.message_id == mid]
    assert [(a.operator, a.role, a.outcome, a.reason) for a in done] == [
        ("t-security", "security", "done", "经审核系已公开的演练坐标")
    ]
    # deciding again is refused by the store, and recorded as refused
    status, text, _ = await ops.post("security", "/quarantine/decide", {**form, "decision": "reject"})
    assert status == 409 and "QUARANTINE_DECIDED" in text
    refused = [a for a in await actions(ops, "quarantine.reject") if a.message_id == mid]
    assert [a.outcome for a in refused] == ["refused"]
    status, text, _ = await ops.get("duty", "/quarantine?show=all")
    assert mid in text and "经审核系已公开的演练坐标" in text


async def test_release_refuses_a_certificate_the_directory_no_longer_registers(ops: Ops) -> None:
    """Quarantined while the sender's certificate was registered; the directory registers another since (cert-sha256):
    the release delivers nothing and changes nothing, the page says why (CERT_NOT_REGISTERED); registered again, the
    same release goes through."""
    from directory_edits import with_system

    from hub.store.directory import DirectoryRepository

    mid = await quarantined_message(ops)
    repo = DirectoryRepository(ops.hub.pool)
    listed = await repo.load()
    form = {"message_id": mid, "decision": "release", "reason": "经审核系已公开的演练坐标"}
    await repo.save(with_system(listed, SENDER, cert_sha256=("0" * 64,)))
    try:
        status, text, _ = await ops.post("security", "/quarantine/decide", form)
    finally:
        await repo.save(listed)
    assert status == 502 and "CERT_NOT_REGISTERED" in text
    assert await ops.hub.drain(RECIPIENT, timeout=1.5) == []
    failed = [a for a in await actions(ops, "quarantine.release") if a.message_id == mid]
    assert [(a.outcome, a.detail.get("code")) for a in failed] == [("failed", "CERT_NOT_REGISTERED")]
    status, _, _ = await ops.post("security", "/quarantine/decide", form)  # still pending: released now
    assert status == 303
    got = await ops.hub.drain(RECIPIENT, expect=1)
    assert mid in [e.message_id for _, e in got]


async def test_reject_tells_the_sender(ops: Ops) -> None:
    mid = await quarantined_message(ops)
    status, _, _ = await ops.post(
        "security", "/quarantine/decide", {"message_id": mid, "decision": "reject", "reason": "确含涉密坐标"}
    )
    assert status == 303
    answer = await ops.hub.reply(SENDER, mid)
    assert (answer.kind, answer.outcome) == ("error", "GATE_REJECTED")


# -- certificates --------------------------------------------------------------------------------------------------


async def _serial_of(ops: Ops, system: str) -> str:
    from hub.store.certificates import CertificateRepository

    rows = [r for r in await CertificateRepository(ops.hub.pool).certificates() if r.system == system]
    assert rows, system
    return rows[-1].serial


async def test_certificate_register_and_crls(ops: Ops) -> None:
    status, text, _ = await ops.get("auditor", "/certificates")
    assert status == 200
    serial = await _serial_of(ops, SENDER)
    assert f'data-serial="{serial}"' in text and SENDER in text
    assert 'id="crls"' in text and "#1" in text
    assert 'action="/certificates/revoke"' not in text  # only the security officer revokes


async def test_revoke_refusals(ops: Ops) -> None:
    serial = await _serial_of(ops, REVOKED_SENDER)
    form = {"serial": serial, "reason_code": "key-compromise", "reason": "密钥泄露"}
    status, text, _ = await ops.post("duty", "/certificates/revoke", form)
    assert status == 403 and "OPS_FORBIDDEN" in text
    status, text, _ = await ops.post("security", "/certificates/revoke", form, csrf=False)
    assert status == 403 and "OPS_CSRF" in text
    status, text, _ = await ops.post("security", "/certificates/revoke", {**form, "reason_code": "bored"})
    assert status == 400 and "OPS_BAD_REASON_CODE" in text
    status, text, _ = await ops.post("security", "/certificates/revoke", {**form, "serial": "abcdef0123"})
    assert status == 409 and "CONFIG" in text
    hub_serial = await _serial_of(ops, "hub")
    status, text, _ = await ops.post("security", "/certificates/revoke", {**form, "serial": hub_serial})
    assert status == 409 and "OPS_REVOKE_KIND" in text  # the CAs and the hub's own: on the command line
    refused = [a for a in await actions(ops, "cert.revoke") if a.target == hub_serial]
    assert [a.outcome for a in refused] == ["refused"]
    bored = [
        a for a in await actions(ops, "cert.revoke") if a.target == serial and a.detail.get("reason_code") == "bored"
    ]
    assert [(a.outcome, a.detail["code"]) for a in bored] == [("refused", "OPS_BAD_REASON_CODE")]
    from hub.store.certificates import CertificateRepository

    row = await CertificateRepository(ops.hub.pool).get(serial)
    assert row is not None and row.revoked_at is None


async def test_revoke_refuses_the_next_message(ops: Ops) -> None:
    serial = await _serial_of(ops, REVOKED_SENDER)
    status, _, headers = await ops.post(
        "security", "/certificates/revoke", {"serial": serial, "reason_code": "key-compromise", "reason": "密钥泄露"}
    )
    assert status == 303 and serial in headers["Location"]
    status, text, _ = await ops.get("security", "/certificates")
    assert re.search(rf'class="cert-revoked[^"]*" data-serial="{serial}"', text)
    done = [a for a in await actions(ops, "cert.revoke") if a.target == serial and a.outcome == "done"]
    assert [(a.outcome, a.detail["reason_code"]) for a in done] == [("done", "key-compromise")]
    # The workers reload the CRL within their refresh interval (5 s): the next message after that is refused. A
    # message whose signature cannot be trusted gets no answer (its sender is unproven; the test publishes as the
    # broker's admin user): it is recorded as an intake rejection claiming its id.
    refused, mid = await refused_after_revocation(ops, REVOKED_SENDER)
    assert refused["error_code"] == "CERT_REVOKED"
    # its trace: no recorded message, the refused intake that claimed the id
    status, text, _ = await ops.get("duty", f"/messages/{mid}")
    assert status == 200 and "验证前拒收" in text and "CERT_REVOKED" in text
    await purge(ops, RECIPIENT)  # what was delivered before the reload: signed with a now revoked certificate


async def purge(ops: Ops, system: str) -> None:
    queue = ops.hub.transport.names.system_queue(system)
    while batch := await ops.hub.transport.fetch(queue, max_messages=100):
        await ops.hub.transport.ack(batch)


async def refused_after_revocation(ops: Ops, system: str, *, within_s: float = 30) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        data = ops.hub.sign(system, document(system, [Recipient.to(SYSTEMS[RECIPIENT])]))
        env = Envelope.from_tree(parse(data))
        await ops.hub.publish([(env, data)])
        replies = await ops.hub.inbox(system).replies_for([env.message_id], timeout=4)
        if env.message_id not in replies:
            async with ops.hub.pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT error_code FROM intake_rejections WHERE raw_sha256 = $1", hashlib.sha256(data).digest()
                )
            assert row is not None, f"{env.message_id}: neither answered nor recorded as refused"
            return row, env.message_id
        assert replies[env.message_id].outcome == "accepted"  # sent before the workers reloaded the CRL
        assert loop.time() < deadline, f"the revoked certificate was still accepted after {within_s} s"


async def test_approve_a_csr_from_the_requests_folder(ops: Ops) -> None:
    from cryptography.hazmat.primitives import serialization

    from hub.trust import keys, pki
    from monitoring.views.certificates import approved_dir, enrolment_dir, requests_dir

    settings = ops.hub.settings
    system, agency = "county-220281-oa", "11220281013618470R"
    csr = pki.make_csr(keys.generate_private_key("ec-p256"), agency, system)
    requests_dir(settings).mkdir(parents=True, exist_ok=True)
    (requests_dir(settings) / "county-220281.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    status, text, _ = await ops.get("security", "/certificates")
    assert 'data-name="county-220281.csr"' in text and system in text
    status, text, _ = await ops.post("duty", "/certificates/approve", {"name": "county-220281.csr", "reason": "x"})
    assert status == 403 and "OPS_FORBIDDEN" in text
    status, _, headers = await ops.post(
        "security", "/certificates/approve", {"name": "county-220281.csr", "reason": "德惠新系统入网"}
    )
    assert status == 303, headers
    bundles = list(enrolment_dir(settings).glob(f"{system}-*.enrolment.json"))
    assert len(bundles) == 1 and bundles[0].stat().st_mode & 0o777 == 0o600
    # the page it leads to names the new certificate's fingerprint (the directory registers none for the system)
    status, text, _ = await ops.get("security", headers["Location"])
    assert status == 200 and 'id="done-sha256"' in text and 'id="not-registered"' not in text
    assert (approved_dir(settings) / "county-220281.csr").is_file()
    assert not (requests_dir(settings) / "county-220281.csr").exists()
    done = await actions(ops, "csr.approve")
    assert [(a.target, a.outcome) for a in done] == [(f"{agency}/{system}", "done")]
    # a CSR for a system that is not in the directory is refused (and recorded as refused)
    bad = pki.make_csr(keys.generate_private_key("ec-p256"), agency, "county-220281-nope")
    (requests_dir(settings) / "nope.csr").write_bytes(bad.public_bytes(serialization.Encoding.PEM))
    status, text, _ = await ops.post("security", "/certificates/approve", {"name": "nope.csr", "reason": "试一下"})
    assert status == 409 and "ADAPTER_NOT_IN_DIRECTORY" in text
    assert [a.outcome for a in await actions(ops, "csr.approve")] == ["refused", "done"]  # newest first


async def test_upload_a_csr_and_approve_it(ops: Ops) -> None:
    import aiohttp
    from cryptography.hazmat.primitives import serialization

    from hub.trust import keys, pki
    from monitoring.views.certificates import enrolment_dir

    system, agency = "county-220282-oa", "11220282013619735U"  # 桦甸
    csr = pki.make_csr(keys.generate_private_key("ec-p256"), agency, system)

    def form(csrf: str | None) -> aiohttp.FormData:
        data = aiohttp.FormData()
        if csrf is not None:
            data.add_field("csrf", csrf)
        data.add_field("reason", "桦甸新系统上线")
        data.add_field("csr_file", csr.public_bytes(serialization.Encoding.PEM), filename="request.csr")
        return data

    async with ops.client.post(
        "/certificates/approve", data=form(None), headers=ops.headers("security"), allow_redirects=False
    ) as r:
        assert r.status == 403 and "OPS_CSRF" in await r.text()
    async with ops.client.post(
        "/certificates/approve", data=form(ops.csrf("security")), headers=ops.headers("security"), allow_redirects=False
    ) as r:
        assert r.status == 303, await r.text()
    assert len(list(enrolment_dir(ops.hub.settings).glob(f"{system}-*.enrolment.json"))) == 1
    status, text, _ = await ops.get("auditor", "/certificates")
    assert status == 200 and f'data-system="{system}"' in text


async def test_an_approval_whose_bundle_cannot_be_written_is_still_recorded(ops: Ops) -> None:
    """The CA issued the certificate and provisioned the broker user: the approval is recorded even when the
    enrolment bundle cannot be written afterwards (then also as failed), never a bare 500 with no record."""
    import aiohttp
    from cryptography.hazmat.primitives import serialization

    from hub.trust import keys, pki
    from monitoring.views.certificates import enrolment_dir

    system, agency = "county-222404-oa", "112224040141039416"  # 珲春
    csr = pki.make_csr(keys.generate_private_key("ec-p256"), agency, system)
    data = aiohttp.FormData()
    data.add_field("csrf", ops.csrf("security"))
    data.add_field("reason", "珲春新系统上线")
    data.add_field("csr_file", csr.public_bytes(serialization.Encoding.PEM), filename="request.csr")
    folder = enrolment_dir(ops.hub.settings)
    aside = folder.with_name("enrolments.aside")
    if folder.exists():
        folder.rename(aside)
    folder.write_text("not a folder")  # the bundle cannot be written
    try:
        async with ops.client.post(
            "/certificates/approve", data=data, headers=ops.headers("security"), allow_redirects=False
        ) as r:
            status, text = r.status, await r.text()
    finally:
        folder.unlink()
        if aside.exists():
            aside.rename(folder)
    assert status == 500 and "OPS_BUNDLE_NOT_WRITTEN" in text and "Traceback" not in text
    mine = [a for a in await actions(ops, "csr.approve") if a.target == f"{agency}/{system}"]
    assert [(a.outcome, a.detail.get("code")) for a in mine] == [("failed", "OPS_BUNDLE_NOT_WRITTEN"), ("done", None)]
    assert mine[1].detail["request"] == "request.csr" and mine[1].detail["serial"] == mine[0].detail["serial"]


async def test_a_certificate_expiring_within_30_days_is_highlighted(ops: Ops) -> None:
    from cryptography.hazmat.primitives import serialization

    from hub.commands import trust_admin as admin
    from hub.trust import keys, pki

    csr = pki.make_csr(keys.generate_private_key("ec-p256"), SYSTEMS["city-220100-oa"], "city-220100-oa")
    issued = await admin.issue(
        ops.hub.settings, admin.default_pki_dir(ops.hub.settings), csr.public_bytes(serialization.Encoding.PEM), days=10
    )
    status, text, _ = await ops.get("duty", "/certificates")
    assert status == 200
    assert re.search(rf'class="cert-valid expiring" data-serial="{issued.serial}"', text)
    assert "天后到期" in text
    other = await _serial_of(ops, SENDER)
    assert re.search(rf'class="cert-valid" data-serial="{other}"', text)


# -- directory and evidence ----------------------------------------------------------------------------------------


async def test_directory_and_routes(ops: Ops) -> None:
    status, text, _ = await ops.get("auditor", "/directory")
    assert status == 200
    assert 'data-system="county-220122-oa"' in text and "政务外网" in text
    assert 'id="problems-none"' in text  # the shipped route files pass hub routes check
    assert 'id="routes"' in text


async def test_directory_shows_registered_certificates(ops: Ops) -> None:
    """The systems table's 登记证书 column: a system's ``cert-sha256`` shortened (the whole fingerprint in its title),
    不限 for a system without."""
    from directory_edits import with_system

    from hub.store.directory import DirectoryRepository

    repo = DirectoryRepository(ops.hub.pool)
    listed = await repo.load()
    pins = ("ab" * 32, "cd" * 32)
    await repo.save(with_system(listed, "city-220200-oa", cert_sha256=pins))
    try:
        status, text, _ = await ops.get("auditor", "/directory")
    finally:
        await repo.save(listed)
    assert status == 200
    row = re.search(r'<tr data-system="city-220200-oa">.*?</tr>', text, re.S)
    assert row is not None
    cell = re.search(r'<td class="pins">(.*?)</td>', row.group(0), re.S)
    assert cell is not None
    assert f'<code title="sha256 {pins[0]}">{pins[0][:12]}…</code>' in cell.group(1) and pins[1][:12] in cell.group(1)
    other = re.search(r'<tr data-system="city-220100-oa">.*?<td class="pins">(.*?)</td>', text, re.S)
    assert other is not None and "不限" in other.group(1)


async def test_directory_shows_route_problems(ops: Ops, tmp_path: Any) -> None:
    import shutil

    from hub.settings import PROJECT_ROOT
    from monitoring.views.directory import check_route_files

    routes = tmp_path / "routes"
    shutil.copytree(PROJECT_ROOT / "routes", routes)
    broken = routes / "zz-broken.routes.xml"
    first = sorted(p for p in routes.glob("*.xml") if p.name != "directory.xml")[0]
    broken.write_text(first.read_text(encoding="utf-8"), encoding="utf-8")  # every route name again
    _, problems, _ = check_route_files(ops.hub.settings.with_(routes_dir=routes))
    assert problems and {p.code for p in problems} == {"ROUTES_DUPLICATE"}


async def test_evidence_status_and_verify(ops: Ops) -> None:
    status, text, _ = await ops.get("auditor", "/evidence")
    assert status == 200 and 'id="head-seq"' in text
    status, text, _ = await ops.get("auditor", "/evidence/verify")
    assert status == 200 and "完好" in text and 'id="problems"' not in text
    # one verification at a time: asked while one runs, the page says so and reads nothing
    from monitoring.views.evidence import VERIFYING

    async with ops.client.server.app[VERIFYING]:
        status, text, _ = await ops.get("duty", "/evidence/verify")
    assert status == 429 and "OPS_VERIFY_BUSY" in text and 'id="verdict"' not in text
    status, text, _ = await ops.get("duty", "/evidence/verify")
    assert status == 200 and "完好" in text


# -- search and trace ----------------------------------------------------------------------------------------------


async def sent(ops: Ops, *, title: str | None = None, sender: str = SENDER) -> str:
    root = document(sender, [Recipient.to(SYSTEMS[RECIPIENT])])
    if title is not None:
        el = root.find(f".//{{{NS}}}Title")
        assert el is not None
        el.text = title
    env = await ops.hub.send(sender, root)
    assert (await ops.hub.reply(sender, env.message_id)).outcome == "accepted"
    return env.message_id


def row_ids(text: str) -> list[str]:
    return re.findall(r'<tr class="state-[a-z_]+" data-id="([0-9a-f-]{36})"', text)


async def test_search_filters_and_keyset_pages(ops: Ops) -> None:
    from hub import clock

    since = clock.now().astimezone(CN).replace(microsecond=0)
    ids = [await sent(ops) for _ in range(3)]
    await purge(ops, RECIPIENT)
    base = {"sender": SENDER, "since": since.isoformat(), "state": "accepted"}
    status, text, _ = await ops.get("auditor", "/messages?" + urlencode({**base, "limit": "2"}))
    assert status == 200
    first = row_ids(text)
    assert first == ids[::-1][:2]  # newest first
    nxt = re.search(r'<a href="([^"]+)" id="next"', text)
    assert nxt is not None
    status, text, _ = await ops.get("auditor", nxt.group(1).replace("&amp;", "&"))
    assert status == 200 and row_ids(text) == ids[:1]
    # each filter narrows: by id, by recipient, by service and 密级, by a time range that excludes them
    status, text, _ = await ops.get("duty", "/messages?" + urlencode({"id": ids[1]}))
    assert row_ids(text) == [ids[1]]
    status, text, _ = await ops.get("duty", "/messages?" + urlencode({**base, "recipient": RECIPIENT}))
    assert row_ids(text) == ids[::-1]
    q = {**base, "service": "document.official/1", "classification": "0"}
    status, text, _ = await ops.get("duty", "/messages?" + urlencode(q))
    assert row_ids(text) == ids[::-1]
    status, text, _ = await ops.get("duty", "/messages?" + urlencode({**base, "classification": "2"}))
    assert row_ids(text) == [] and 'id="no-results"' in text
    status, text, _ = await ops.get("duty", "/messages?" + urlencode({**base, "until": since.isoformat()}))
    assert row_ids(text) == []
    status, text, _ = await ops.get("duty", "/messages?" + urlencode({**base, "state": "quarantined"}))
    assert row_ids(text) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"id": "not-a-uuid"}, "id"),
        ({"state": "lost"}, "state"),
        ({"classification": "9"}, "classification"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-12-04T10:00", "until": "2026-12-03T10:00"}, "until"),
        ({"before": "garbage"}, "before"),
        ({"limit": "100000"}, "limit"),
    ],
)
async def test_a_bad_filter_is_a_sentence_on_the_form(ops: Ops, query: dict[str, str], field: str) -> None:
    status, text, _ = await ops.get("duty", "/messages?" + urlencode(query))
    assert status == 400
    assert f'id="notice" data-field="{field}"' in text and "OPS_BAD_FILTER" in text
    assert 'id="search"' in text  # the form is still there, with what was typed
    assert "OPS_INTERNAL" not in text


async def test_the_trace_of_a_real_message(ops: Ops) -> None:
    mid = await sent(ops, title=SCRIPT)
    await purge(ops, RECIPIENT)
    status, text, _ = await ops.get("duty", f"/messages/{mid}")
    assert status == 200
    assert SCRIPT not in text  # never as markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the title, as text
    assert "&amp;lt;script&amp;gt;" in text  # the XML (where the tag is already escaped once), escaped again
    assert '<pre class="xml" id="xml">' in text
    steps = text[text.index('id="steps"') : text.index("</ol>")]
    for label in ("已接收", "签名已验证", "已记录", "已投递", "回执已发送"):
        assert label in steps, label
    assert 'data-recipient="county-220182-oa"' in text
    serial = await _serial_of(ops, SENDER)
    signatures = text[text.index('id="signatures"') : text.index("</table>", text.index('id="signatures"'))]
    assert serial in signatures and await _serial_of(ops, "hub") in signatures
    assert 'id="evidence"' in text and "received" in text
    # the auditor sees the trace but not the XML
    status, text, _ = await ops.get("auditor", f"/messages/{mid}")
    assert status == 200 and 'id="xml"' not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # an id nobody has is a 404 page with a code; a malformed one a 400
    status, text, _ = await ops.get("duty", f"/messages/{uuid.uuid4()}")
    assert status == 404 and "OPS_MESSAGE_NOT_FOUND" in text
    status, text, _ = await ops.get("duty", "/messages/not-an-id")
    assert status == 400 and "OPS_BAD_FILTER" in text


async def test_a_rejected_message_in_search_and_trace(ops: Ops) -> None:
    now = dt.datetime.now(CN)
    root = document(
        SENDER,
        [Recipient.to(SYSTEMS[RECIPIENT])],
        created=now - dt.timedelta(hours=48),
        expires=now - dt.timedelta(hours=1),
    )
    env = await ops.hub.send(SENDER, root)
    answer = await ops.hub.reply(SENDER, env.message_id)
    assert (answer.kind, answer.outcome) == ("error", "MSG_EXPIRED")
    status, text, _ = await ops.get("duty", "/messages?" + urlencode({"sender": SENDER, "state": "rejected"}))
    assert status == 200 and env.message_id in row_ids(text) and "MSG_EXPIRED" in text
    status, text, _ = await ops.get("duty", f"/messages/{env.message_id}")
    steps = text[text.index('id="steps"') : text.index("</ol>")]
    assert status == 200 and "已拒收" in steps and "MSG_EXPIRED" in steps and "错误回执已发送" in steps
    assert "已投递" not in steps


# -- dead letters --------------------------------------------------------------------------------------------------


async def dead_letter_of(ops: Ops, body: bytes) -> int:
    """Publish bytes the hub refuses before anything (a DOCTYPE) and wait until the /dead page shows them."""
    await ops.hub.publish([(None, body)])
    digest = hashlib.sha256(body).hexdigest()
    from hub.store.dead_letters import list_dead

    for _ in range(100):
        status, _, _ = await ops.get("duty", "/dead")  # the list collects the queue first, as hub dead list does
        assert status == 200
        found = [d for d in await list_dead(ops.hub.pool, state=None, limit=500) if d.body_sha256 == digest]
        if found:
            return found[0].id
        await asyncio.sleep(0.1)  # the worker parks it within its next batch
    raise AssertionError("the refused bytes never reached the dead letters")


async def test_dead_letters_list_show_and_replay(ops: Ops) -> None:
    body = f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "{uuid.uuid4()}">]><x>&a;</x>'.encode()
    dead_id = await dead_letter_of(ops, body)
    status, text, _ = await ops.get("auditor", "/dead")
    assert status == 200 and f'data-id="{dead_id}"' in text and "ENV_DOCTYPE" in text
    status, text, _ = await ops.get("duty", f"/dead/{dead_id}")
    assert status == 200 and "ENV_DOCTYPE" in text and 'id="replay"' in text
    assert 'id="xml"' not in text  # the safe parser refuses a DOCTYPE: the body is not shown
    status, text, _ = await ops.get("auditor", f"/dead/{dead_id}")
    assert status == 200 and 'id="replay"' not in text
    # refusals: the security officer holds no dead.replay; no CSRF; no reason
    status, text, _ = await ops.post("security", f"/dead/{dead_id}/replay", {"reason": "试试"})
    assert status == 403 and "OPS_FORBIDDEN" in text
    status, text, _ = await ops.post("duty", f"/dead/{dead_id}/replay", {"reason": "试试"}, csrf=False)
    assert status == 403 and "OPS_CSRF" in text
    status, text, _ = await ops.post("duty", f"/dead/{dead_id}/replay", {"reason": " "})
    assert status == 400 and "OPS_REASON_REQUIRED" in text
    # the duty operator replays it: back to the inbound lane (where the hub refuses it again: a new dead letter)
    status, _, headers = await ops.post("duty", f"/dead/{dead_id}/replay", {"reason": "解析器升级后重试"})
    assert status == 303 and headers["Location"].startswith(f"/dead?done=replayed&target={dead_id}")
    done = [a for a in await actions(ops, "dead.replay") if a.target == str(dead_id)]
    assert [(a.operator, a.outcome, a.via, a.detail.get("code")) for a in done] == [
        ("t-duty", "done", "web", None),
        ("t-duty", "refused", "web", "OPS_REASON_REQUIRED"),  # newest first
    ]
    status, text, _ = await ops.post("admin", f"/dead/{dead_id}/replay", {"reason": "再来一次"})
    assert status == 409 and "DEAD_ALREADY_REPLAYED" in text
    status, text, _ = await ops.get("duty", "/dead?show=all")
    assert f'class="dead-replayed" data-id="{dead_id}"' in text
    status, text, _ = await ops.get("duty", "/dead/99999999")
    assert status == 404 and "DEAD_NOT_FOUND" in text
    status, text, _ = await ops.get("duty", "/dead/abc")
    assert status == 400 and "OPS_BAD_ID" in text


async def test_evidence_verify_compares_the_anchors_outside_the_database(ops: Ops) -> None:
    """The page runs what ``hub evidence verify`` runs, the anchors included: a checkpoint anchored in the state
    directory is counted; one the chain no longer holds (the log cut back before it) is a problem (the page said
    完好 before). The anchors file is put back afterwards."""
    from hub.store.anchors import anchor_checkpoint, anchors_path

    path = anchors_path(ops.hub.settings.state_dir)
    before = path.read_bytes() if path.exists() else None
    try:
        from hub.store import anchors
        from hub.store.evidence import checkpoint

        worker = ops.hub.worker
        assert worker is not None and worker.signer is not None
        seq = await checkpoint(ops.hub.pool, worker.signer.sign_bytes, worker.signer.identity.fingerprint)
        assert seq is not None  # what the worker's housekeeping makes every few minutes
        path.unlink(missing_ok=True)
        anchors._anchored.pop(path, None)
        assert await anchor_checkpoint(ops.hub.pool, ops.hub.settings.state_dir, int(seq))
        status, text, _ = await ops.get("auditor", "/evidence/verify")
        assert status == 200 and "完好" in text and "库外锚定的检查点 1 个" in text, text
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:  # a checkpoint far past the head: the chain was cut back before it
            f.write(f"987654321 {'ab' * 32} 2026-12-07T08:00:00.000000Z\n")
        status, text, _ = await ops.get("auditor", "/evidence/verify")
        assert status == 200 and 'id="problems"' in text and "完好" not in text
        assert "锚定的检查点不在证据链中" in text and "987654321" in text
    finally:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)


async def test_evidence_verify_names_a_message_changed_after_it_was_recorded(ops: Ops) -> None:
    """Last in this module: it alters the store on purpose."""
    mid = await sent(ops)
    await purge(ops, RECIPIENT)
    async with ops.hub.pool.acquire() as conn:
        await conn.execute("UPDATE messages SET urgency = '特急' WHERE message_id = $1", uuid.UUID(mid))
    status, text, _ = await ops.get("auditor", "/evidence/verify")
    assert status == 200 and 'id="problems"' in text and "完好" not in text
    assert mid in text and "urgency" in text


async def test_numbers_in_links_that_are_not_ascii_digits_are_refused_not_a_500(ops: Ops) -> None:
    """``str.isdigit`` admits ``²``, which ``int`` refuses, and any length, which bigint refuses: each such number
    in a link is a refusal or is ignored, never OPS_INTERNAL."""
    for path, want in (
        ("/messages?limit=%C2%B2", 400),
        ("/messages?classification=%C2%B2", 400),
        ("/dead/%C2%B2", 400),
        ("/dead/99999999999999999999", 400),
        ("/dead?before=%C2%B2", 200),
    ):
        status, text, _ = await ops.get("duty", path)
        assert status == want and "OPS_INTERNAL" not in text, (path, status)
    for path in ("/audit?before=%C2%B2", "/audit?before=99999999999999999999"):
        status, text, _ = await ops.get("auditor", path)
        assert status == 200 and "OPS_INTERNAL" not in text, (path, status)


async def test_refusals_of_the_forms_are_recorded_too(ops: Ops) -> None:
    """A form the page refuses (no reason, a bad id, decision or reason code, a CSR file that is not there) is an
    operator action refused, recorded for the auditor like the store's refusals (a NUL or a blank reason never
    keeps it from being recorded)."""
    from hub.store.audit import operator_actions
    from monitoring.auth import NO_REASON

    before = max((a.id for a in await operator_actions(ops.hub.pool, limit=1)), default=0)
    mid = str(uuid.uuid4())
    for role, path, form, status in (
        ("security", "/quarantine/decide", {"message_id": "not\x00-a-uuid", "decision": "release", "reason": "r"}, 400),
        ("security", "/quarantine/decide", {"message_id": mid, "decision": "burn", "reason": "r"}, 400),
        ("security", "/quarantine/decide", {"message_id": mid, "decision": "reject", "reason": "  "}, 400),
        ("duty", "/dead/987654/replay", {"reason": ""}, 404),
        ("security", "/certificates/revoke", {"serial": "01ab", "reason_code": "keyCompromise", "reason": ""}, 400),
        ("security", "/certificates/revoke", {"serial": "01ab", "reason_code": "whim", "reason": "r"}, 400),
        ("security", "/certificates/approve", {"name": "../../etc/passwd.csr", "reason": "r"}, 404),
        ("security", "/certificates/approve", {"name": "nowhere.csr", "reason": "r"}, 404),
    ):
        got, text, _ = await ops.post(role, path, form)
        assert got == status and "OPS_INTERNAL" not in text, (path, form, got)
    mine = [a for a in reversed(await operator_actions(ops.hub.pool, limit=50)) if a.id > before]
    assert [(a.action, a.outcome, a.detail["code"]) for a in mine] == [
        ("quarantine.release", "refused", "OPS_BAD_ID"),
        ("quarantine.decide", "refused", "OPS_BAD_DECISION"),
        ("quarantine.reject", "refused", "OPS_REASON_REQUIRED"),
        ("dead.replay", "refused", "OPS_REASON_REQUIRED"),
        ("cert.revoke", "refused", "OPS_REASON_REQUIRED"),
        ("cert.revoke", "refused", "OPS_BAD_REASON_CODE"),
        ("csr.approve", "refused", "OPS_CSR_MISSING"),
        ("csr.approve", "refused", "OPS_CSR_MISSING"),
    ]
    assert mine[0].target == "not-a-uuid" and mine[2].reason == NO_REASON and mine[2].target == mid
    assert {a.via for a in mine} == {"web"} and mine[3].operator != mine[4].operator


async def test_the_overview_polling_does_not_keep_an_idle_session_alive(ops: Ops) -> None:
    """/api/overview (polled every 2 s by an open overview page) is not the operator's activity: 30 minutes after
    the operator's last page the session ends, however often the page polled."""
    from hub import clock
    from hub.store import operators

    token, _ = await operators.open_session(ops.hub.pool, "t-auditor")
    start = dt.datetime.now(dt.UTC)
    cookie = {"Cookie": f"ops_session={token}"}
    for minutes, want in ((1, 200), (20, 200), (29, 200), (31, 401)):
        with clock.override(lambda m=minutes: start + dt.timedelta(minutes=m)):
            async with ops.client.get("/api/overview", headers=cookie, allow_redirects=False) as r:
                assert r.status == want, (minutes, r.status)
    with clock.override(lambda: start + dt.timedelta(minutes=31)):
        async with ops.client.get("/", headers=cookie, allow_redirects=False) as r:
            assert r.status == 302  # the page itself: gone too


async def test_a_login_ends_the_session_the_browser_still_held(ops: Ops) -> None:
    """Logging in over a live session (another operator's at a shared desk) ends that session: its token no longer
    opens anything, and the new one is a fresh token."""
    from hub.store import operators

    old, _ = await operators.open_session(ops.hub.pool, "t-security")
    try:
        async with ops.client.get("/login") as r:
            csrf = r.cookies["ops_login_csrf"].value
        cookies = {"Cookie": f"ops_session={old}; ops_login_csrf={csrf}"}
        form = {"csrf": csrf, "name": "t-duty", "password": "correct horse battery staple 9", "next": "/"}
        async with ops.client.post("/login", data=form, headers=cookies, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            new = r.cookies["ops_session"].value
    finally:
        # The module's client keeps what the login set: the other tests send their role's session explicitly
        # and must not ride t-duty's.
        ops.client.session.cookie_jar.clear()
    assert new != old and await operators.session(ops.hub.pool, old) is None
    s = await operators.session(ops.hub.pool, new)
    assert s is not None and s.operator == "t-duty"


async def test_the_title_of_a_classified_message_is_shown_only_to_who_may_read_it(ops: Ops) -> None:
    """A 秘密 document (refused by the gate toward an internet-zone system, recorded with its bytes): its title is
    content, shown to the roles that may read the XML and withheld from the others."""
    root = document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT])], classification="秘密")
    el = root.find(f".//{{{NS}}}Title")
    assert el is not None
    el.text = "关于重点林区防火部署的请示"
    env = await ops.hub.send(SENDER, root)
    assert (await ops.hub.reply(SENDER, env.message_id)).outcome != "accepted"
    for role, shown in (("security", True), ("duty", True), ("auditor", False), ("admin", False)):
        status, text, _ = await ops.get(role, f"/messages/{env.message_id}")
        assert status == 200 and ("关于重点林区防火部署的请示" in text) == shown, role
        assert ("仅向可查看原文的角色显示" in text) == (not shown), role


async def test_approving_a_csr_says_when_the_directory_registers_other_certificates(ops: Ops) -> None:
    """A system whose certificates the directory registers (cert-sha256): the certificate the page just issued is
    not among them — the page says it will be refused (CERT_NOT_REGISTERED) and gives the attribute to write."""
    from cryptography.hazmat.primitives import serialization
    from directory_edits import with_system

    from hub.store.directory import DirectoryRepository
    from hub.trust import keys, pki
    from monitoring.views.certificates import requests_dir

    settings = ops.hub.settings
    system, agency = "county-222403-oa", "11222403014102856B"
    csr = pki.make_csr(keys.generate_private_key("ec-p256"), agency, system)
    requests_dir(settings).mkdir(parents=True, exist_ok=True)
    (requests_dir(settings) / "county-222403.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    repo = DirectoryRepository(ops.hub.pool)
    listed = await repo.load()
    await repo.save(with_system(listed, system, cert_sha256=("c" * 64,)))
    try:
        status, _, headers = await ops.post(
            "security", "/certificates/approve", {"name": "county-222403.csr", "reason": "换发新证书"}
        )
        assert status == 303, headers
        status, text, _ = await ops.get("security", headers["Location"])
    finally:
        await repo.save(listed)
    fingerprint = re.search(r'id="done-sha256">([0-9a-f]{64})<', text)
    assert fingerprint is not None and 'id="not-registered"' in text and "CERT_NOT_REGISTERED" in text
    assert f"cert-sha256=&#34;{'c' * 64} {fingerprint.group(1)}&#34;" in text or (
        f'cert-sha256="{"c" * 64} {fingerprint.group(1)}"' in text
    )
