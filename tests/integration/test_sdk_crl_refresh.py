"""An SDK adapter keeps the hub CA's CRLs in its home fresh from the gateway's ``GET /v1/crl`` (adapters/sdk/_crl.py),
against the real hub (RabbitMQ, PostgreSQL, the worker) and a real gateway over mutual TLS.

Covered: an adapter whose enrolment CRLs went stale — every delivery refused ``CERT_CRL_UNAVAILABLE``, as the
agency's own trust shows for the delivery waiting for it — fetches fresh ones at its start and then opens and handles
that delivery; the refusal's wording on the agency side says what the agency does, not the hub's ``hub pki crl``; a
CRL the gateway's answer carries is written only when it verifies with the hub root or an issuing CA the root issued
and is not older than the one at hand (a CRL signed by a foreign key under the root's or the issuing CA's name, an
issuing CA of another root, a name with a path, a CRL older than the one on disk are never written); a fetch that
fails is one WARNING with until when the CRLs at hand last, and never stops the adapter; the setting's bounds; and
``hub adapter check`` (``adapters.sdk._check.check``) warns about a CRL going stale within 12 h, fails on a stale
one with the hint, and says that the gateway's ``GET /v1/crl`` answers."""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from gateway_client import Gateway, enrolment_home, over_https, running_gateway
from harness import SYSTEMS, Hub, sample_body
from harness import until as until_async

from adapters.sdk import Adapter, AdapterSettings, ConfigurationError, Context, to
from adapters.sdk._crl import CrlRefresher, accept_crls
from hub.settings import Settings
from hub.trust import keys, pki

pytestmark = pytest.mark.integration

NONGAN = "county-220122-oa"  # 农安: sends
DEHUI = "county-220183-oa"  # 德惠: receives, with stale CRLs at first


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "sdkcrl") as settings:
        yield settings


@pytest.fixture(scope="module")
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()
    try:
        async with running_gateway(hub, {}, visibility_timeout_s=30, answer_timeout_s=20, link_check_s=0) as g:
            yield g
    finally:
        await hub.close()


def _cas(gw: Gateway) -> tuple[x509.Certificate, Any, x509.Certificate, Any]:
    """(root, its key, the current issuing CA, its key) of the installation."""
    root, root_key = pki.load_ca(gw.pki_dir, gw.hub.settings.ca_passphrase, which="root")
    issuing, issuing_key = pki.load_ca(gw.pki_dir, gw.hub.settings.ca_passphrase, which="issuing")
    return root, root_key, issuing, issuing_key


def _make_stale(gw: Gateway, crl_dir: Path, *, hours_left: float = -24) -> None:
    """Replace the home's CRLs with ones of the same CAs whose nextUpdate is ``hours_left`` from now (in the past by
    default): older than the hub's, so a fetch replaces them."""
    root, root_key, issuing, issuing_key = _cas(gw)
    now = dt.datetime.now(dt.UTC)
    for name, ca, key in (("root-ca.crl", root, root_key), ("issuing-ca.crl", issuing, issuing_key)):
        # thisUpdate 30 h before now, nextUpdate hours_left from now
        crl = pki.build_crl(ca, key, (), number=1, now=now - dt.timedelta(hours=30), hours=int(30 + hours_left))
        (crl_dir / name).write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def _entry(name: str, crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> dict[str, Any]:
    return {
        "name": name,
        "der_base64": base64.b64encode(crl.public_bytes(serialization.Encoding.DER)).decode(),
        "issuer_der_base64": base64.b64encode(issuer.public_bytes(serialization.Encoding.DER)).decode(),
    }


# ------------------------------------------------------------------------------------------ the adapter's start


async def test_stale_crls_are_refreshed_at_start_and_the_refused_delivery_opens(gw: Gateway, tmp_path: Path) -> None:
    from adapters.sdk._crl import HintedTrust, refresh_hint
    from adapters.sdk._trust import AgencyTrust
    from hub.errors import HubError

    home = enrolment_home(gw, DEHUI, tmp_path)
    _make_stale(gw, home / "crl")
    settings = AdapterSettings(system=DEHUI, home=home, gateway_url=gw.url, gateway_wait=2, request_timeout=20)
    dehui = Adapter(DEHUI, settings)
    seen: list[Context] = []

    @dehui.handles("document.official", version=1)
    async def on_document(doc: Any, ctx: Context) -> None:
        seen.append(ctx)

    # The delivery as it waits for 德惠: its own trust, with the CRLs of its home, refuses it (fail closed) …
    body, tag = await _waiting_delivery(gw, tmp_path)
    stale = AgencyTrust.from_files(settings.root_cert_path, settings.crl_dir, max_bytes=settings.max_message_bytes)
    with pytest.raises(HubError) as refused:
        stale.open(body)
    assert refused.value.code == "CERT_CRL_UNAVAILABLE" and "hub pki crl" in refused.value.detail  # the hub's words
    # … and the SDK's wording tells the agency what it does instead (the hub's own message is unchanged)
    with pytest.raises(HubError) as hinted:
        HintedTrust.around(stale, refresh_hint(settings)).open(body)
    assert hinted.value.code == "CERT_CRL_UNAVAILABLE" and "hub pki crl" not in hinted.value.detail
    assert "GET /v1/crl" in hinted.value.detail and "自动" in hinted.value.detail
    await _release(gw, tag)

    # The adapter fetches fresh CRLs at start, before its first delivery, and handles the same delivery.
    async with dehui:
        await until_async(_async(lambda: seen), "the delivery at 德惠's handler", timeout=20)
        await until_async(_async(lambda: gw.state.mailbox.held(DEHUI) == 0), "its acknowledgement")
    assert len(seen) == 1 and seen[0].sender.system == NONGAN
    now = dt.datetime.now(dt.UTC)
    for name in ("root-ca.crl", "issuing-ca.crl"):
        crl = x509.load_pem_x509_crl((home / "crl" / name).read_bytes())
        hub_crl = x509.load_pem_x509_crl((gw.pki_dir / "crl" / name).read_bytes())
        assert crl == hub_crl and crl.next_update_utc is not None and crl.next_update_utc > now
    assert not list((home / "crl").glob("*.tmp")) and not list((home / "crl").glob(".*"))


async def test_a_gateway_that_does_not_answer_does_not_hold_the_start_while_the_crls_are_fresh(
    gw: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An adapter on RabbitMQ whose ``tracking_url`` names a gateway that takes the connection and never answers:
    with the fresh CRLs of its enrolment, ``start`` returns before the fetch has given up (it held the start for
    ``request_timeout`` before), the adapter runs, and the failed fetch is still said, once, in the background."""
    import asyncio

    from adapters.sdk.testing import enrolled_home

    portal = "prov-220000-portal"  # used by no other test of this module
    home = await enrolled_home(gw.hub.settings, portal, SYSTEMS[portal], tmp_path / "portal")
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # takes the connection, never answers the TLS handshake

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    settings = AdapterSettings(system=portal, home=home, tracking_url=url, request_timeout=3)
    adapter = Adapter(portal, settings)
    try:
        with caplog.at_level(logging.WARNING, logger="adapters.sdk"):
            async with adapter:
                assert adapter._running
                assert not [r for r in caplog.records if "SDK_CRL_REFRESH" in r.getMessage()]  # not given up yet
                await until_async(_async(lambda: held), "the background fetch's connection", timeout=10)
                await until_async(
                    _async(lambda: [r for r in caplog.records if "SDK_CRL_REFRESH" in r.getMessage()]),
                    "the failed fetch said",
                    timeout=20,
                )
        said = [r.getMessage() for r in caplog.records if "SDK_CRL_REFRESH" in r.getMessage()]
        assert len(said) == 1 and "keeps the CRLs it has until" in said[0], said
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


def _credentials(gw: Gateway, system: str) -> tuple[Path, Path]:
    from hub.pipeline.client import credential_paths

    return credential_paths(gw.hub.settings, system)


def _async(check: Any) -> Any:
    async def checked() -> Any:
        return check()

    return checked


async def test_a_failed_fetch_is_one_warning_and_the_adapter_keeps_its_crls(
    gw: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    home = enrolment_home(gw, NONGAN, tmp_path)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{s.getsockname()[1]}"
    settings = AdapterSettings(system=NONGAN, home=home, tracking_url=closed, amqp_url="", request_timeout=5)
    refresher = CrlRefresher.of(settings)
    assert refresher is not None and refresher.every_s == 3600
    before = {p.name: p.read_bytes() for p in (home / "crl").iterdir()}
    with caplog.at_level(logging.WARNING, logger="adapters.sdk"):
        assert await refresher.refresh() is None
    warnings = [r for r in caplog.records if "SDK_CRL_REFRESH" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    said = warnings[0].getMessage()
    assert "吊销列表更新失败" in said and "not reached" in said and "keeps the CRLs it has until" in said
    assert "next attempt in 3600 s" in said
    assert {p.name: p.read_bytes() for p in (home / "crl").iterdir()} == before
    # without a gateway URL nothing is fetched (the hub's operators distribute the CRLs)
    assert CrlRefresher.of(AdapterSettings(system=NONGAN, home=home)) is None


async def test_the_running_refresher_fetches_when_a_stale_crl_refuses_a_delivery(gw: Gateway, tmp_path: Path) -> None:
    """Between periods, a delivery refused ``CERT_CRL_UNAVAILABLE`` asks the running refresher for a fetch now
    (``HintedTrust`` → ``CrlRefresher.kick``); ``stop`` ends it."""
    from adapters.sdk._trust import AgencyTrust
    from hub.errors import HubError

    home = enrolment_home(gw, DEHUI, tmp_path)
    settings = AdapterSettings(system=DEHUI, home=home, gateway_url=gw.url, crl_refresh_s=86400)
    trust = AgencyTrust.from_files(settings.root_cert_path, settings.crl_dir, max_bytes=settings.max_message_bytes)
    refresher = CrlRefresher.of(settings, trust)
    assert refresher is not None and refresher.store is trust.verifier.store
    hinted = refresher.hinted(trust)
    assert refresher.hinted(hinted).inner is trust  # never wrapped twice
    _make_stale(gw, settings.crl_dir)
    body, tag = await _waiting_delivery(gw, tmp_path)
    refresher.start()
    try:
        with pytest.raises(HubError) as refused:
            hinted.open(body)
        assert refused.value.code == "CERT_CRL_UNAVAILABLE"

        def fresh() -> bool:
            crl = x509.load_pem_x509_crl((home / "crl" / "root-ca.crl").read_bytes())
            return crl.next_update_utc is not None and crl.next_update_utc > dt.datetime.now(dt.UTC)

        await until_async(_async(fresh), "the CRLs fetched at once, not a day later", timeout=15)
        assert hinted.open(body).originator is not None  # the trust store re-read the CRLs: it opens now
    finally:
        await refresher.stop()
        await _release(gw, tag)
    assert refresher._task is None


async def _waiting_delivery(gw: Gateway, tmp_path: Path) -> tuple[bytes, str]:
    """A document from 农安 to 德惠, as the gateway hands it to 德惠's poll: (its body, its delivery tag)."""
    nongan = over_https(gw, NONGAN, tmp_path)
    async with nongan:
        receipt = await nongan.send(
            sample_body("document.official"), service="document.official", version=1, to=[to(SYSTEMS[DEHUI], DEHUI)]
        )
    assert receipt.accepted
    key, cert = _credentials(gw, DEHUI)
    gw.certs[DEHUI] = (cert, key)
    async with gw.session(DEHUI).get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == receipt.message_id
        return await r.read(), r.headers["X-Hub-Delivery-Tag"]


async def _release(gw: Gateway, tag: str) -> None:
    async with gw.session(DEHUI).post(f"/v1/inbox/{tag}/release") as r:
        assert r.status == 204


async def test_the_refresh_period_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in (59, 86401, 0):
        with pytest.raises(ConfigurationError) as caught:
            AdapterSettings(system=NONGAN, home=tmp_path, crl_refresh_s=bad)
        assert "crl_refresh_s must be 60 to 86400 seconds" in caught.value.detail
    monkeypatch.setenv("HUB_ADAPTER_CRL_REFRESH_S", "600")
    assert AdapterSettings.from_mapping({"system": NONGAN, "home": str(tmp_path)}).crl_refresh_s == 600


# ------------------------------------------------------------------------------------------ what is written


def test_only_crls_that_verify_and_are_not_older_are_written(gw: Gateway, tmp_path: Path) -> None:
    root, root_key, issuing, issuing_key = _cas(gw)
    now = dt.datetime.now(dt.UTC)
    ten_days = dt.timedelta(days=10)
    crl_dir = tmp_path / "crl"
    crl_dir.mkdir()
    held = pki.build_crl(root, root_key, (), number=5, now=now - dt.timedelta(hours=1))
    (crl_dir / "root-ca.crl").write_bytes(held.public_bytes(serialization.Encoding.PEM))

    # a foreign key under the root's name and under the issuing CA's, and an issuing CA of another root
    foreign_key = keys.generate_private_key("ec-p384")
    fake_root = pki.ca_certificate(
        root.subject, foreign_key.public_key(), None, foreign_key, days=30, path_length=1, now=now
    )
    fake_issuing = pki.ca_certificate(
        issuing.subject, foreign_key.public_key(), fake_root, foreign_key, days=30, path_length=0, now=now
    )
    forged_root_crl = pki.build_crl(fake_root, foreign_key, (), number=99, now=now)
    forged_issuing_crl = pki.build_crl(fake_issuing, foreign_key, (), number=99, now=now)
    older = pki.build_crl(root, root_key, (), number=4, now=now - dt.timedelta(hours=3))
    retired_key = keys.generate_private_key("ec-p256")  # an issuing CA of the root whose certificate expired
    retired = pki.ca_certificate(
        pki.ca_name("Retired CA"), retired_key.public_key(), root, root_key, days=1, path_length=0, now=now - ten_days
    )
    retired_crl = pki.build_crl(retired, retired_key, (), number=3, now=now)
    fresh_issuing = pki.build_crl(issuing, issuing_key, (), number=7, now=now)
    answer = {
        "crls": [
            _entry("root-ca.crl", forged_root_crl, root),  # the root's name, not its key
            _entry("issuing-ca.crl", forged_issuing_crl, issuing),  # the real CA's certificate, not its key
            _entry("issuing-ca-2.crl", forged_issuing_crl, fake_issuing),  # a CA the hub root did not issue
            _entry("../escape.crl", fresh_issuing, issuing),  # a path
            _entry("root-ca.crl", older, root),  # verifies, but older than the one at hand
            _entry("issuing-ca.crl", fresh_issuing, issuing),  # verifies, new: the only one written
            _entry("issuing-ca-99.crl", retired_crl, retired),  # of no use any more: left alone, no warning
        ]
    }
    update = accept_crls(answer, root, crl_dir)
    assert update.written == ("issuing-ca.crl",) and update.unchanged == ("root-ca.crl", "issuing-ca-99.crl")
    why = dict(update.refused)
    assert len(update.refused) == 4, update.refused
    assert "does not verify" in why["root-ca.crl"] and "does not verify" in why["issuing-ca.crl"]
    assert "not issued by the hub root" in why["issuing-ca-2.crl"] and "file name" in why["../escape.crl"]
    assert x509.load_pem_x509_crl((crl_dir / "root-ca.crl").read_bytes()) == held  # untouched
    assert x509.load_pem_x509_crl((crl_dir / "issuing-ca.crl").read_bytes()) == fresh_issuing
    assert sorted(p.name for p in crl_dir.iterdir()) == ["issuing-ca.crl", "root-ca.crl"]
    assert not (tmp_path / "escape.crl").exists()
    # the same answer again changes nothing; one that is no list is an error, not an empty update
    again = accept_crls({"crls": [_entry("issuing-ca.crl", fresh_issuing, issuing)]}, root, crl_dir)
    assert (again.written, again.unchanged) == ((), ("issuing-ca.crl",))
    with pytest.raises(ValueError):
        accept_crls({"crl": []}, root, crl_dir)


# ------------------------------------------------------------------------------------------ hub adapter check


async def test_the_self_check_reports_crls_going_stale_and_the_gateways_crls(gw: Gateway, tmp_path: Path) -> None:
    from adapters.sdk._check import check

    adapter = over_https(gw, NONGAN, tmp_path)
    settings = adapter.settings
    assert settings is not None
    found = await check(settings)
    assert [(f.step, f.ok, f.warning) for f in found] == [
        ("入网目录 enrolment directory", True, False),
        ("证书 certificate", True, False),
        ("HTTPS 网关 gateway", True, False),
        ("已处理记录 store", True, False),
    ], [f.line() for f in found]
    assert "2 CRL(s) in crl/, fresh until" in found[1].text
    assert "GET /v1/crl answers 2 CRL(s) that verify against hub-root.pem" in found[2].text

    # going stale within 12 h: a warning naming the file, when, and what happens about it
    _make_stale(gw, settings.crl_dir, hours_left=4)
    found = await check(settings)
    soon = [f for f in found if f.code == "SDK_CRL_STALE_SOON"]
    assert [f.step for f in soon] == ["吊销列表 CRLs", "吊销列表 CRLs"] and all(f.ok and f.warning for f in soon)
    assert "issuing-ca.crl" in soon[0].text and "root-ca.crl" in soon[1].text and "即将过期" in soon[0].text
    assert "GET /v1/crl" in soon[0].text and soon[0].line().startswith("! 吊销列表 CRLs:")
    assert "2 newer than crl/'s" in next(f for f in found if f.step == "HTTPS 网关 gateway").text

    # stale: the certificate's CRLs fail with the hint, and the gateway (the remedy) is still looked at
    _make_stale(gw, settings.crl_dir)
    found = await check(settings)
    failed = [f for f in found if not f.ok]
    assert [(f.step, f.code) for f in failed] == [("吊销列表 CRLs", "CERT_CRL_UNAVAILABLE")], [f.line() for f in found]
    assert "stale since" in failed[0].text and "fetches fresh ones from the hub's gateway" in failed[0].text
    assert [f.step for f in found][-2:] == ["HTTPS 网关 gateway", "已处理记录 store"]

    # an adapter without a gateway URL is told to ask the hub's operators
    offline = AdapterSettings(system=NONGAN, home=settings.home)
    found = await check(offline)
    failed = [f for f in found if f.code == "CERT_CRL_UNAVAILABLE"]
    assert failed and "ask the hub's operators for the current CRLs (pki/crl/*.crl)" in failed[0].text
