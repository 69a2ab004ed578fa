"""local_bureau (county-222424-oa, 汪清县林业局): the bureau's REST push, the duty desk's webhook and its
acknowledgement, against the real hub and the simulated bureau. Pure tests are unmarked; real ones integration."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.local_bureau.demo import AGENCY, SENDER, SENDER_AGENCY, SYSTEM, config_text, demo, free_port, sample_alert
from adapters.local_bureau.mapping import BureauError, message_id, parse_ack, parse_push
from adapters.local_bureau.simulator import CountyBureau, push, receipt_push
from adapters.sdk import to
from adapters.sdk.testing import AdapterProcess, TestHub

CITY = "city-222400-oa"  # 延边州林业局, the bureau's superior
CITY_AGENCY = "112224000140973218"


# ------------------------------------------------------------------------------------------ pure


def test_push_mapping_deterministic_id_and_refusals() -> None:
    p = parse_push(receipt_push("R-1", str(uuid.uuid4()), SENDER_AGENCY, SENDER, "received"), SYSTEM)
    assert p.message_id == message_id(SYSTEM, "document.receipt", "R-1")
    assert p.recipients == ((SENDER_AGENCY, SENDER),)
    base = receipt_push("R-2", str(uuid.uuid4()), SENDER_AGENCY, SENDER, "read")
    cases: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
        (lambda d: d.__setitem__("id", "x" * 129), "LB_FIELD_TOO_LONG"),
        (lambda d: d.__setitem__("to", {"agencies": ["not-a-code"]}), "LB_UNKNOWN_RECIPIENT"),
        (lambda d: d.__setitem__("to", {"groups": ["everyone"]}), "LB_UNKNOWN_RECIPIENT"),
        (lambda d: d.__setitem__("service", "approval.decision"), "LB_BAD_SERVICE"),
        (lambda d: d.__setitem__("body_xml", "<not xml"), "LB_BAD_XML"),
        (lambda d: d.__setitem__("body_xml", "<x xmlns='urn:other'/>"), "LB_BAD_XML"),
        (lambda d: d.pop("id"), "LB_BAD_FIELD"),
    ]
    for mutate, code in cases:
        d = dict(base)
        mutate(d)
        with pytest.raises(BureauError) as e:
            parse_push(d, SYSTEM)
        assert e.value.code == code and e.value.title and e.value.reason
    with pytest.raises(BureauError) as e:
        parse_push([1], SYSTEM)
    assert e.value.code == "LB_BAD_JSON"


def test_ack_mapping() -> None:
    a = parse_ack({"response": "responding", "duty_officer": "李明", "phone": "0433-8222119"})
    assert a.response == "responding" and a.acknowledged_at.tzinfo is not None and a.note is None
    for bad, code in (
        ({"duty_officer": "李明", "phone": "0433"}, None),
        ({"response": "maybe", "duty_officer": "李明", "phone": "0433"}, "LB_BAD_FIELD"),
        ({"duty_officer": "李" * 201, "phone": "0433"}, "LB_FIELD_TOO_LONG"),
        ({"duty_officer": "李明", "phone": "电话"}, "LB_BAD_FIELD"),
        ({"phone": "0433"}, "LB_BAD_FIELD"),
        ({"duty_officer": "李明", "phone": "0433", "note": "已出动\x0b队伍"}, "LB_BAD_FIELD"),  # Word's line break
    ):
        if code is None:
            parse_ack(bad)
            continue
        with pytest.raises(BureauError) as e:
            parse_ack(bad)
        assert e.value.code == code


def test_config_refusals() -> None:
    from adapters.local_bureau.adapter import Config
    from adapters.sdk import ConfigurationError

    base = {
        "token": "t",
        "desk_token": "d",
        "desk_webhook_token": "w",
        "inbox_token": "i",
        "inbox_url": "http://127.0.0.1:1/in",
        "desk_webhook_url": "http://127.0.0.1:1/desk",
        "allow_plain_http": True,
    }
    assert Config.from_extra(base).agency_code == AGENCY
    for bad in (
        {**base, "listen_host": "0.0.0.0"},
        {**base, "allow_plain_http": False},
        {**base, "desk_token": ""},
        {**base, "desk_webhook_url": "ftp://x"},
        {**base, "agency_code": "nope"},
        {**base, "cert_file": "/nonexistent.pem", "key_file": "/nonexistent.key"},
        {**base, "max_body": 0},
        {**base, "max_body": "4 MB"},
        {**base, "listen_port": 70000},
    ):
        with pytest.raises(ConfigurationError) as e:
            Config.from_extra(bad)
        assert e.value.code == "LB_CONFIG"


# ------------------------------------------------------------------------------------------ the desk, in memory

UPDATE_SAMPLE = Path(__file__).resolve().parents[2] / "schemas/services/emergency.update/1/samples/valid/closing.xml"
DESK_HEADERS = {"Authorization": "Bearer d", "Content-Type": "application/json"}
DUTY = "prov-220000-duty"  # the provincial duty platform: where an ack of the hub's forward goes
PROVINCE = "11220000013544357T"


def _update_body(alert_id: str) -> Any:
    from lxml import etree

    env = etree.parse(str(UPDATE_SAMPLE)).getroot()
    body = env.find("{urn:forestry-hub:envelope:1}Body")[0]
    body.find("{urn:forestry-hub:emergency.update:1}AlertMessageId").text = alert_id
    return body


@contextlib.asynccontextmanager
async def _desk_side(hub: TestHub, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, Any, Any]]:
    """The bureau's adapter on the hub in memory, its outbox open (not delivering: the desk is not listening) and
    its HTTP side under a test client: (the module, the outbox, the client)."""
    from aiohttp.test_utils import TestClient, TestServer

    from adapters.local_bureau import adapter as lb
    from adapters.sdk.messages import EmergencyAlertV1, EmergencyUpdateV1, HubNoticeV1

    bureau = await hub.client(SYSTEM)
    bureau.handles(EmergencyAlertV1)(lb.on_alert)
    bureau.handles(EmergencyUpdateV1)(lb.on_update)
    bureau.handles(HubNoticeV1)(lb.on_notice)
    monkeypatch.setattr(lb, "adapter", bureau)
    c = lb.Config(
        listen_host="127.0.0.1",
        listen_port=1,
        token="t",
        inbox_url="http://127.0.0.1:9/in",
        inbox_token="i",
        desk_webhook_url="http://127.0.0.1:9/desk",
        desk_token="d",
        desk_webhook_token="w",
        allow_plain_http=True,
        poll_interval=5,
        retry_initial=5,
    )
    monkeypatch.setitem(lb._state, "config", c)
    box = lb.Outbox(str(hub.base / f"{SYSTEM}.sqlite3"), c)
    await box.open()
    monkeypatch.setitem(lb._state, "outbox", box)
    try:
        async with TestClient(TestServer(lb.build_app(c))) as client:
            yield lb, box, client
    finally:
        await box.stop()


def _outbox(box: Any, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """A query on the outbox, from a connection of the test's own (the adapter's runs on its own thread)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(box.path)) as conn:
        return conn.execute(sql, args).fetchall()


def _desk_payload(box: Any, mid: str) -> dict[str, Any]:
    import json

    rows = _outbox(box, "SELECT body FROM lb_outbox WHERE message_id = ? AND target = 'desk'", (mid,))
    return json.loads(rows[0][0]) if rows else {}


async def test_the_desk_acknowledges_an_update_and_a_bad_note_is_a_coded_400(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each update (the closing too) is acknowledged by its own id through its ack_path; a note with Word's manual
    line break (U+000B) is a JSON 400, not a 500 the desk would retry forever."""
    import json

    from adapters.sdk.messages import EmergencyAckV1

    async with TestHub() as hub, _desk_side(hub, monkeypatch) as (_, box, client):
        sender = await hub.client(SENDER)
        alert = await sender.send(
            sample_alert(), service="emergency.alert", version=1, to=to(AGENCY, SYSTEM), urgency="特急"
        )
        upd = await sender.send(
            _update_body(alert.message_id), service="emergency.update", version=1, to=to(AGENCY, SYSTEM), urgency="特急"
        )
        await hub.wait_until(lambda: _desk_payload(box, upd.message_id), 10, "the update at the desk's outbox")
        path = _desk_payload(box, upd.message_id)["ack_path"]
        assert path == f"/v1/alerts/{upd.message_id}/ack"
        ack = {"duty_officer": "李明", "phone": "0433-8222119"}
        r = await client.post(path, data=json.dumps(ack, ensure_ascii=False).encode(), headers=DESK_HEADERS)
        assert r.status == 200, await r.text()
        await hub.wait_until(
            lambda: any(isinstance(d.message, EmergencyAckV1) for d in hub.delivered(SENDER)), 10, "the ack"
        )
        [got] = [d for d in hub.delivered(SENDER) if isinstance(d.message, EmergencyAckV1)]
        assert got.message.alert_message_id == upd.message_id and got.context.ref_to == upd.message_id
        r = await client.post(
            f"/v1/alerts/{alert.message_id}/ack",
            data=json.dumps({**ack, "note": "已出动\x0b队伍"}, ensure_ascii=False).encode(),
            headers=DESK_HEADERS,
        )
        assert (r.status, r.content_type) == (400, "application/json"), await r.text()
        answer = await r.json()
        assert answer["code"] == "LB_BAD_FIELD" and "note" in answer["reason"] and "U+000B" in answer["reason"]


async def test_the_hubs_emergency_notice_reaches_the_desk_acknowledged_by_refers_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An alert the sender left the bureau out of comes from the hub as a hub.notice (emergency-resend, RefersTo the
    alert): it reaches the duty desk with an ack_path keyed on RefersTo, and the acknowledgement names that alert. Any
    other notice (a reminder) goes to the inbox; a "notice" not signed by the hub goes nowhere."""
    import json
    import sqlite3
    from types import SimpleNamespace

    from adapters.sdk.messages import EmergencyAckV1, HubNoticeV1

    alert_id = str(uuid.uuid4())
    at = datetime.now(UTC)
    resend = HubNoticeV1(
        kind="emergency-resend",
        title="【预案补发】【一般突发事件预警】汪清县林场火情",
        text="请于期限前通过 emergency.ack 签收。",
        refers_to=alert_id,
        case_ref="SLHZ-222403-2026-0007",
        deadline=at + timedelta(minutes=15),
        at=at,
    )
    reminder = HubNoticeV1(kind="document-reminder", title="公文反馈催办", text="请反馈。", at=at)
    async with TestHub() as hub, _desk_side(hub, monkeypatch) as (lb, box, client):
        await hub.client(DUTY)
        db = sqlite3.connect(box.path, isolation_level=None)
        try:
            for mid, notice, sender in (
                ("n-resend", resend, "hub"),
                ("n-reminder", reminder, "hub"),
                ("n-forged", resend, "county-222403-oa"),
            ):
                ctx = SimpleNamespace(
                    sender=SimpleNamespace(agency="hub-agency", system=sender),
                    originator=None,
                    message_id=mid,
                    service="hub.notice",
                    urgency="特急",
                    body=notice.to_element(),
                    db=db,
                )
                await lb.on_notice(notice, ctx)
        finally:
            db.close()
        payload = _desk_payload(box, "n-resend")
        assert payload["kind"] == "emergency-resend" and payload["refers_to"] == alert_id
        assert payload["ack_path"] == f"/v1/alerts/{alert_id}/ack" and payload["incident_number"] == resend.case_ref
        assert _outbox(box, "SELECT target FROM lb_outbox WHERE message_id = 'n-reminder'") == [("inbox",)]
        assert _outbox(box, "SELECT 1 FROM lb_outbox WHERE message_id = 'n-forged'") == []
        ack = {"duty_officer": "李明", "phone": "0433-8222119", "response": "responding"}
        r = await client.post(
            payload["ack_path"], data=json.dumps(ack, ensure_ascii=False).encode(), headers=DESK_HEADERS
        )
        assert r.status == 200, await r.text()
        await hub.wait_until(lambda: hub.delivered(DUTY), 10, "the ack at the provincial duty platform")
        [got] = hub.delivered(DUTY)
        assert isinstance(got.message, EmergencyAckV1) and got.message.alert_message_id == alert_id
        assert got.message.incident_number == resend.case_ref and got.message.agency.agency_code == AGENCY


# ------------------------------------------------------------------------------------------ helpers


async def until(predicate: Callable[[], Any], timeout: float, what: str, proc: AdapterProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if proc is not None and not proc.alive:
            raise AssertionError(f"the adapter exited while waiting for {what}: {proc.log.read_text()[-2000:]}")
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.02)


def _tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("汪清县林业局适配器测试 CA"))
        .issuer_name(name("汪清县林业局适配器测试 CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("local-bureau-adapter.test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, cert_file, key_file


async def _setup(
    hub: TestHub, tmp_path: Path, bureau: CountyBureau, **extra: Any
) -> tuple[AdapterProcess, str, str, str]:
    home = await hub.enrol_home(SYSTEM)
    port, token, desk_token = free_port(), uuid.uuid4().hex, uuid.uuid4().hex
    cfg = tmp_path / "settings.toml"
    cfg.write_text(config_text(home, bureau, port=port, token=token, desk_token=desk_token, **extra), encoding="utf-8")
    scheme = "https" if "cert_file" in extra else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    bureau.auto_ack, bureau.adapter_desk_token = url, desk_token
    return AdapterProcess("local_bureau", cfg, env={}, log=tmp_path / "adapter.log"), url, token, desk_token


# ------------------------------------------------------------------------------------------ integration


@pytest.mark.integration
async def test_demo_part_has_no_problems(tmp_path: Path) -> None:
    async with TestHub(real=True) as hub:
        assert await demo(hub, tmp_path, print) == []


async def _pg_ids(dsn: str) -> tuple[set[str], set[str]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        ids = {str(r["message_id"]) for r in await conn.fetch("SELECT message_id FROM messages")}
        delivered = {str(r["message_id"]) for r in await conn.fetch("SELECT message_id FROM deliveries")}
    finally:
        await conn.close()
    return ids, delivered


@pytest.mark.integration
async def test_bad_input_refused_over_tls_and_nothing_sent(tmp_path: Path) -> None:
    ca, cert, key = _tls(tmp_path)
    bureau = CountyBureau()
    await bureau.start()
    async with TestHub(real=True) as hub:
        proc, url, token, desk_token = await _setup(
            hub, tmp_path, bureau, cert_file=str(cert), key_file=str(key), max_body=262144
        )
        await hub.client(CITY)
        await proc.start()
        try:
            ctx = ssl.create_default_context(cafile=str(ca))
            doc = str(uuid.uuid4())
            good = receipt_push("B-9", doc, CITY_AGENCY, CITY, "received")
            async with aiohttp.ClientSession() as s:
                status, answer = await push(url, "wrong", good, ssl_ctx=ctx, session=s)
                assert (status, answer["code"]) == (401, "LB_UNAUTHORIZED")
                for raw in (b"{not json", b"[" * 5000 + b"]" * 5000):  # the second: json.loads' RecursionError
                    status, answer = await push(url, token, None, raw=raw, ssl_ctx=ctx, session=s)
                    assert (status, answer["code"]) == (400, "LB_BAD_JSON") and answer["title"] and answer["reason"]
                long = receipt_push("B-1", doc, CITY_AGENCY, CITY, "received")
                long["body_xml"] = long["body_xml"].replace("汪清县林业局办公室", "长" * 300)
                status, answer = await push(url, token, long, ssl_ctx=ctx, session=s)
                assert (status, answer["code"]) == (400, "LB_FIELD_TOO_LONG"), answer
                unknown = receipt_push("B-2", doc, "91220000MA0000000C", CITY, "received")
                status, answer = await push(url, token, unknown, ssl_ctx=ctx, session=s)
                assert status == 422 and answer["code"] == "LB_UNKNOWN_RECIPIENT", answer
                status, answer = await push(url, token, None, raw=b'{"x":"' + b"a" * 300_000 + b'"}', ssl_ctx=ctx)
                assert (status, answer["code"]) == (413, "LB_TOO_LARGE")
                # an acknowledgement for an alert never delivered here
                from adapters.local_bureau.simulator import ack

                status, answer = await ack(
                    url,
                    desk_token,
                    str(uuid.uuid4()),
                    {"duty_officer": "李明", "phone": "0433"},
                    ssl_ctx=ctx,
                    session=s,
                )
                assert (status, answer["code"]) == (404, "LB_UNKNOWN_ALERT")
                # a good one goes through; its re-push is a hub duplicate under the same id
                status, answer = await push(url, token, good, ssl_ctx=ctx, session=s)
                assert status == 200 and answer["outcome"] == "accepted", answer
                status, again = await push(url, token, good, ssl_ctx=ctx, session=s)
                assert status == 200 and again["outcome"] == "duplicate" and again["message_id"] == answer["message_id"]
            ids, delivered = await _pg_ids(hub.settings.pg_dsn)
            mid = lambda e: message_id(SYSTEM, "document.receipt", e)  # noqa: E731
            assert mid("B-9") in delivered
            assert mid("B-1") not in ids  # refused before leaving
            assert mid("B-2") not in delivered  # refused by the hub: delivered to no one
        finally:
            await proc.stop()
            await bureau.stop()


N = 500
EXTRA = 20


@pytest.mark.integration
async def test_sigkill_mid_stream_each_way_exactly_once_and_desk_down(tmp_path: Path) -> None:
    bureau = CountyBureau()
    await bureau.start()
    async with TestHub(real=True) as hub:
        proc, url, token, _ = await _setup(hub, tmp_path, bureau)
        county = await hub.client(SENDER)
        await hub.client(CITY)
        await proc.start()
        try:
            # hub → desk: 500 alerts (each acknowledged by the desk → emergency.ack); bureau → hub: 500 receipts
            alerts = asyncio.ensure_future(
                asyncio.gather(
                    *(
                        county.send(
                            sample_alert(f"火情测试第{i}号"),
                            service="emergency.alert",
                            version=1,
                            to=to(AGENCY, SYSTEM),
                            urgency="特急",
                        )
                        for i in range(N)
                    )
                )
            )
            pushed: dict[str, str] = {}

            # At most 50 pushes in flight at once (an OA pushes from a pool, not 500 sockets at a time).
            limit = asyncio.Semaphore(50)

            async def pusher(i: int, s: aiohttp.ClientSession) -> None:
                async with limit:
                    await _push_one(i, s)

            async def _push_one(i: int, s: aiohttp.ClientSession) -> None:
                doc = receipt_push(f"K-{i}", str(uuid.uuid5(uuid.NAMESPACE_URL, str(i))), CITY_AGENCY, CITY, "read")
                while True:
                    status, answer = await push(url, token, doc, session=s)
                    if status == 200:
                        pushed[f"K-{i}"] = answer["outcome"]
                        return
                    await asyncio.sleep(0.1)

            async with aiohttp.ClientSession() as s:
                tasks = [asyncio.create_task(pusher(i, s)) for i in range(N)]
                await until(
                    lambda: len(bureau.desk) >= N // 5 and len(pushed) >= N // 25, 60, "a fifth of the alerts", proc
                )
                at_kill = (len(bureau.desk), len(bureau.acked), len(pushed))
                proc.kill()
                alert_ids = {r.message_id for r in await alerts}
                await proc.start()
                # the bureau's desk down for a while (more alerts arrive meanwhile), then back: nothing lost
                bureau.down()
                more = await asyncio.gather(
                    *(
                        county.send(
                            sample_alert(f"停机期间火情第{i}号"),
                            service="emergency.alert",
                            version=1,
                            to=to(AGENCY, SYSTEM),
                            urgency="特急",
                        )
                        for i in range(EXTRA)
                    )
                )
                alert_ids |= {r.message_id for r in more}
                await until(lambda: bureau.refused_while_down >= 3, 90, "refused deliveries (desk down)", proc)
                bureau.up()
                await asyncio.wait_for(asyncio.gather(*tasks), 120)
            await until(lambda: alert_ids <= set(bureau.desk), 120, "every alert at the desk", proc)
            assert len(bureau.desk) == N + EXTRA and set(bureau.desk) == alert_ids
            await until(lambda: alert_ids <= set(bureau.acked), 120, "every alert acknowledged", proc)
            want = {message_id(SYSTEM, "document.receipt", f"K-{i}") for i in range(N)}

            def at_county() -> tuple[list[str], list[str]]:
                acks = [d.context.ref_to or "" for d in hub.delivered(SENDER) if d.context.service == "emergency.ack"]
                receipts = [d.context.message_id for d in hub.delivered(CITY) if d.context.message_id in want]
                return acks, receipts

            await until(
                lambda: set(at_county()[0]) >= alert_ids and set(at_county()[1]) >= want,
                120,
                "acks at 敦化, receipts at 延边州",
            )
            acks, receipts = at_county()
            assert len(acks) == N + EXTRA and set(acks) == alert_ids  # one emergency.ack per alert
            assert len(receipts) == N and set(receipts) == want  # each push delivered once
            print(
                f"\ndesk received {len(bureau.desk)} alerts (webhook duplicates {bureau.desk_duplicates}); acks at the "
                f"sender {len(acks)} (hub duplicates {sum(1 for v in bureau.acked.values() if v == 'duplicate')}); "
                f"pushes {len(pushed)} (hub duplicates {sum(1 for v in pushed.values() if v == 'duplicate')}); "
                f"receipts at the city {len(receipts)}; at the kill: desk {at_kill[0]}, acked {at_kill[1]}, pushed "
                f"{at_kill[2]}; refused while down {bureau.refused_while_down}"
            )
        finally:
            await proc.stop()
            await bureau.stop()


@pytest.mark.integration
async def test_document_in_and_its_receipts_out(tmp_path: Path) -> None:
    from adapters.sdk.messages import DocumentOfficialV1
    from adapters.sdk.messages import document_official_v1 as d

    bureau = CountyBureau()
    await bureau.start()
    async with TestHub(real=True) as hub:
        proc, url, token, _ = await _setup(hub, tmp_path, bureau)
        city = await hub.client(CITY)
        await proc.start()
        try:
            doc = DocumentOfficialV1(
                kind="通知",
                issuer_mark="延边朝鲜族自治州林业局文件",
                document_number="延州林发〔2026〕9号",
                title="关于做好冬季森林防火巡护工作的通知",
                main_recipients=None,
                main_text=d.MainText(paragraph=["请各县（市）局加强巡护。"]),
                issuing_agencies=d.IssuingAgencies(
                    agency=[d.AgencyRef(name="延边朝鲜族自治州林业局", agency_code=CITY_AGENCY)]
                ),
                document_date=datetime(2026, 12, 4).date(),
            )
            r = await city.send(doc, to=to(AGENCY, SYSTEM))
            await until(lambda: r.message_id in bureau.inbox, 30, "the document in the bureau's inbox", proc)
            assert bureau.inbox[r.message_id].service.startswith("document.official")
            for i, status in enumerate(("received", "read", "handled")):  # 签收 / 阅读 / 办结
                code, answer = await push(url, token, receipt_push(f"R-{i}", r.message_id, CITY_AGENCY, CITY, status))
                assert code == 200 and answer["outcome"] == "accepted", answer
            got = await hub.received(CITY, 3, timeout=30)
            assert sorted(g.context.ref_to or "" for g in got) == [r.message_id] * 3
            assert len(bureau.inbox) == 1 and bureau.duplicates == 0
        finally:
            await proc.stop()
            await bureau.stop()
