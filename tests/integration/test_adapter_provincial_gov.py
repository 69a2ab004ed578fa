"""provincial_gov (gov-220000-oa): the OA's REST push and its callback, against the real hub and the simulated OA.

Pure tests of the mapping are unmarked; the real ones are ``pytest.mark.integration``."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.provincial_gov.demo import CITY, CITY_AGENCY, GOV, SYSTEM, config_text, demo, free_port
from adapters.provincial_gov.mapping import OAError, message_id, parse_push
from adapters.provincial_gov.simulator import ProvincialOA, notice, push
from adapters.sdk import to
from adapters.sdk.testing import AdapterProcess, TestHub

PROV_OA = "prov-220000-oa"


# ------------------------------------------------------------------------------------------ pure


def test_mapping_builds_the_document_and_a_deterministic_id() -> None:
    p = parse_push(notice("OA-1"))
    assert p.message_id == message_id("OA-1") == parse_push(notice("OA-1")).message_id
    assert p.groups == ("local-bureaus",) and p.urgency == "加急"
    tags = [el.tag.split("}")[1] for el in p.body]
    assert tags[:5] == ["Kind", "Urgency", "IssuerMark", "DocumentNumber", "Title"]
    assert "Attachments" in tags


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda d: d["document"].__setitem__("title", "长" * 501), "OA_FIELD_TOO_LONG"),
        (lambda d: d["document"].__setitem__("document_number", "号" * 61), "OA_FIELD_TOO_LONG"),
        (lambda d: d.__setitem__("to", {"agencies": ["not-a-code"]}), "OA_UNKNOWN_RECIPIENT"),
        (lambda d: d.__setitem__("to", {"groups": ["everyone"]}), "OA_UNKNOWN_RECIPIENT"),
        (lambda d: d["document"].__setitem__("kind", "便条"), "OA_BAD_FIELD"),
        (lambda d: d["document"].pop("title"), "OA_BAD_FIELD"),
    ],
)
def test_mapping_refusals(mutate: Callable[[dict[str, Any]], Any], code: str) -> None:
    d = notice("OA-2")
    mutate(d)
    with pytest.raises(OAError) as e:
        parse_push(d)
    assert e.value.code == code and e.value.title and e.value.reason


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["document"]["paragraphs"].__setitem__(1, "第一行\x0b续行"), "document.paragraphs[2]"),
        (lambda d: d["document"].__setitem__("title", "关于\x0b森林防火的通知"), "title"),
        (lambda d: d["document"]["attachments"][0].__setitem__("file_name", "要点\x0b.txt"), "file_name"),
        (lambda d: d["document"].__setitem__("document_number", "吉政发\x00〔2026〕21号"), "document_number"),
    ],
)
def test_a_control_character_is_a_bad_field_naming_it(mutate: Callable[[dict[str, Any]], Any], field: str) -> None:
    """Word's manual line break (U+000B), pasted with the text, cannot be carried by XML: a coded 400, not a crash."""
    d = notice("OA-3")
    mutate(d)
    with pytest.raises(OAError) as e:
        parse_push(d)
    assert (e.value.status, e.value.code) == (400, "OA_BAD_FIELD")
    assert field in e.value.title and field in e.value.reason and "U+00" in e.value.reason


async def test_a_control_character_in_a_push_is_answered_400_json_not_500() -> None:
    """Over HTTP: a 5xx would make the OA push the same body again forever (the contract: retry any 5xx)."""
    import json

    from aiohttp.test_utils import TestClient, TestServer

    from adapters.provincial_gov import adapter as pg

    c = pg.Config(
        listen_host="127.0.0.1",
        listen_port=1,
        token="t",
        callback_url="http://127.0.0.1:1/cb",
        callback_token="x",
        allow_plain_http=True,
    )
    d = notice("OA-CTRL-1")
    d["document"]["paragraphs"] = ["第一段\x0b续行"]
    pg._state["config"] = c
    try:
        async with TestClient(TestServer(pg.build_app(c))) as client:
            r = await client.post(
                "/v1/documents",
                data=json.dumps(d, ensure_ascii=False).encode(),
                headers={"Authorization": "Bearer t", "Content-Type": "application/json"},
            )
            assert (r.status, r.content_type) == (400, "application/json"), await r.text()
            answer = await r.json()
    finally:
        pg._state.pop("config", None)
    assert answer["code"] == "OA_BAD_FIELD" and "document.paragraphs[1]" in answer["reason"], answer


def test_config_refuses_plain_http_off_loopback_and_missing_tokens() -> None:
    from adapters.provincial_gov.adapter import Config
    from adapters.sdk import ConfigurationError

    base = {"token": "t", "callback_url": "http://127.0.0.1:1/cb", "callback_token": "c", "allow_plain_http": True}
    assert Config.from_extra(base).listen_host == "127.0.0.1"
    for bad in (
        {**base, "listen_host": "0.0.0.0"},
        {**base, "allow_plain_http": False},
        {**base, "token": ""},
        {**base, "callback_url": "ftp://x"},
        {**base, "cert_file": "/nonexistent.pem", "key_file": "/nonexistent.key"},
        {**base, "max_body": 0},
        {**base, "listen_port": 0},
    ):
        with pytest.raises(ConfigurationError) as e:
            Config.from_extra(bad)
        assert e.value.code == "OA_CONFIG"


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
        .subject_name(name("省政府公文适配器测试 CA"))
        .issuer_name(name("省政府公文适配器测试 CA"))
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
        .subject_name(name("gov-oa-adapter.test"))
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


async def _setup(hub: TestHub, tmp_path: Path, oa: ProvincialOA, **extra: Any) -> tuple[AdapterProcess, str, str]:
    home = await hub.enrol_home(SYSTEM)
    port, token = free_port(), uuid.uuid4().hex
    cfg = tmp_path / "settings.toml"
    cfg.write_text(config_text(home, oa, port=port, token=token, **extra), encoding="utf-8")
    scheme = "https" if "cert_file" in extra else "http"
    return (
        AdapterProcess("provincial_gov", cfg, env={}, log=tmp_path / "adapter.log"),
        f"{scheme}://127.0.0.1:{port}",
        token,
    )


def _to_gov_document(i: int) -> Any:
    from adapters.sdk.messages import DocumentOfficialV1
    from adapters.sdk.messages import document_official_v1 as d

    return DocumentOfficialV1(
        kind="报告",
        issuer_mark="吉林省林业和草原局文件",
        document_number=f"吉林报〔2026〕{i + 1}号",
        title=f"吉林省林业和草原局关于森林防火工作情况的报告（第{i}期）",
        main_recipients=None,
        main_text=d.MainText(paragraph=["现将有关情况报告如下。"]),
        issuing_agencies=d.IssuingAgencies(
            agency=[d.AgencyRef(name="吉林省林业和草原局", agency_code="11220000013544357T")]
        ),
        document_date=datetime(2026, 12, 4).date(),
    )


# ------------------------------------------------------------------------------------------ integration


@pytest.mark.integration
async def test_demo_part_has_no_problems(tmp_path: Path) -> None:
    async with TestHub(real=True) as hub:
        assert await demo(hub, tmp_path, print) == []


@pytest.mark.integration
async def test_bad_input_refused_over_tls_and_nothing_sent(tmp_path: Path) -> None:
    ca, cert, key = _tls(tmp_path)
    oa = ProvincialOA()
    await oa.start()
    async with TestHub(real=True) as hub:
        proc, url, token = await _setup(hub, tmp_path, oa, cert_file=str(cert), key_file=str(key), max_body=262144)
        await proc.start()
        try:
            ctx = ssl.create_default_context(cafile=str(ca))
            async with aiohttp.ClientSession() as s:
                status, answer = await push(url, "wrong", notice("X-0"), ssl_ctx=ctx, session=s)
                assert (status, answer["code"]) == (401, "OA_UNAUTHORIZED")
                for raw in (b"{not json", b"[" * 5000 + b"]" * 5000):  # the second: json.loads' RecursionError
                    status, answer = await push(url, token, None, raw=raw, ssl_ctx=ctx, session=s)
                    assert (status, answer["code"]) == (400, "OA_BAD_JSON") and answer["title"] and answer["reason"]
                long = notice("X-1")
                long["document"]["title"] = "长" * 600
                status, answer = await push(url, token, long, ssl_ctx=ctx, session=s)
                assert (status, answer["code"]) == (400, "OA_FIELD_TOO_LONG")
                unknown = notice("X-2", groups=[], agencies=["91220000MA0000000C"])
                status, answer = await push(url, token, unknown, ssl_ctx=ctx, session=s)
                assert status == 422 and answer["code"] == "OA_UNKNOWN_RECIPIENT", answer
                big = b'{"x":"' + b"a" * 300_000 + b'"}'
                status, answer = await push(url, token, None, raw=big, ssl_ctx=ctx, session=s)
                assert (status, answer["code"]) == (413, "OA_TOO_LARGE")
                # a good one goes through; the refused ones never left
                status, answer = await push(url, token, notice("X-3"), ssl_ctx=ctx, session=s)
                assert status == 200 and answer["outcome"] == "accepted", answer
                status, again = await push(url, token, notice("X-3"), ssl_ctx=ctx, session=s)
                assert status == 200 and again["outcome"] == "duplicate" and again["message_id"] == answer["message_id"]
            import asyncpg

            conn = await asyncpg.connect(hub.settings.pg_dsn)
            try:
                ids = {str(r["message_id"]) for r in await conn.fetch("SELECT message_id FROM messages")}
                delivered = {str(r["message_id"]) for r in await conn.fetch("SELECT message_id FROM deliveries")}
            finally:
                await conn.close()
            assert message_id("X-3") in ids
            # refused before leaving: never at the hub; refused by the hub (unknown recipient): delivered to no one
            assert not ids & {message_id(f"X-{i}") for i in (0, 1)}
            assert not delivered & {message_id(f"X-{i}") for i in (0, 1, 2)}
            assert message_id("X-3") in delivered
        finally:
            await proc.stop()
            await oa.stop()


N = 500
#: Documents sent while the OA is down: its callbacks are then certainly refused (the first N may all have reached
#: the OA by the time it goes down).
EXTRA = 20


@pytest.mark.integration
async def test_sigkill_mid_stream_each_way_exactly_once_and_oa_down(tmp_path: Path) -> None:
    oa = ProvincialOA()
    await oa.start()
    async with TestHub(real=True) as hub:
        proc, url, token = await _setup(hub, tmp_path, oa)
        prov = await hub.client(PROV_OA)
        await proc.start()
        try:
            # hub → OA: 500 documents to the government; OA → hub: 500 pushes to one city
            sent = await asyncio.gather(*(prov.send(_to_gov_document(i), to=to(GOV, SYSTEM)) for i in range(N)))
            out_ids = {r.message_id for r in sent}
            pushed: dict[str, str] = {}

            # At most 50 pushes in flight at once (an OA pushes from a pool, not 500 sockets at a time).
            limit = asyncio.Semaphore(50)

            async def pusher(i: int, s: aiohttp.ClientSession) -> None:
                async with limit:
                    await _push_one(i, s)

            async def _push_one(i: int, s: aiohttp.ClientSession) -> None:
                doc = notice(f"K-{i}", groups=[], agencies=[CITY_AGENCY])
                while True:
                    try:
                        status, answer = await push(url, token, doc, session=s)
                    except (aiohttp.ClientError, OSError, TimeoutError):
                        status, answer = 0, None
                    if status == 200:
                        pushed[f"K-{i}"] = answer["outcome"]
                        return
                    await asyncio.sleep(0.1)

            async with aiohttp.ClientSession() as s:
                tasks = [asyncio.create_task(pusher(i, s)) for i in range(N)]
                await until(lambda: len(oa.received) >= N // 5 and len(pushed) >= N // 5, 60, "a fifth", proc)
                proc.kill()
                await proc.start()
                # the OA goes down for a while, then comes back
                oa.down()
                more = await asyncio.gather(
                    *(prov.send(_to_gov_document(N + i), to=to(GOV, SYSTEM)) for i in range(EXTRA))
                )
                out_ids |= {r.message_id for r in more}
                await until(lambda: oa.refused_while_down >= 3, 90, "refused callbacks (OA down)", proc)
                oa.up()
                await asyncio.wait_for(asyncio.gather(*tasks), 120)
            await until(lambda: out_ids <= set(oa.received), 120, "every document at the OA", proc)
            assert len(oa.received) == N + EXTRA and set(oa.received) == out_ids
            assert all(oa.received[m].service.startswith("document.official") for m in out_ids)
            city = await hub.client(CITY)
            want = {message_id(f"K-{i}") for i in range(N)}
            await until(lambda: want <= {d.context.message_id for d in hub.delivered(CITY)}, 120, "pushes at the city")
            got = [d.context.message_id for d in hub.delivered(CITY) if d.context.message_id in want]
            assert len(got) == N and len(set(got)) == N  # each push delivered once, re-pushes were hub duplicates
            print(
                f"\nOA received {len(oa.received)} (callback duplicates {oa.duplicates}); pushes {len(pushed)}, "
                f"hub duplicates {sum(1 for v in pushed.values() if v == 'duplicate')}; city deliveries "
                f"{len(got)} for {len(set(got))} ids"
            )
            del city
        finally:
            await proc.stop()
            await oa.stop()
