"""``GET /v1/crl`` (hub/gateway/app.py ``crl_list``): the hub CA's current CRLs for any client the gateway admits,
from a real gateway over mutual TLS on the real hub (PostgreSQL, RabbitMQ).

Covered: the answer lists every CRL the gateway's trust store holds — the root's and the issuing CA's — ordered by
file name, each verifying with the certificate it carries (the root, or an issuing CA the root issued), and the same
bytes as the hub's pki/crl/ files; the SDK's own check of an answer (``adapters.sdk._crl.accept_crls``) takes it; a
client without a certificate is refused as on every /v1 route (401 ``GATEWAY_NO_CERTIFICATE``); after ``hub pki
rollover-issuing`` (``trust_admin.rollover_issuing``) the new issuing CA's CRL is in the answer beside the earlier
CA's; and while the current issuing CA's CRL is stale the answer is 503 ``CERT_CRL_UNAVAILABLE`` with Retry-After,
fresh again once the CRLs are published."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography import x509
from gateway_client import Gateway, running_gateway
from harness import SYSTEMS, Hub
from harness import until as until_async

from hub.settings import Settings

pytestmark = pytest.mark.integration

CLIENT = "county-220122-oa"  # 农安


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "gwcrl") as settings:
        yield settings


@pytest.fixture(scope="module")
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    hub = Hub(settings)
    await hub.setup()
    try:
        async with running_gateway(hub, {CLIENT: SYSTEMS[CLIENT]}, link_check_s=0) as g:
            yield g
    finally:
        await hub.close()


async def _crls(gw: Gateway) -> tuple[int, dict[str, str], Any]:
    async with gw.session(CLIENT).get("/v1/crl") as r:
        return r.status, dict(r.headers), await r.json()


def _check_entry(entry: dict[str, Any], root: x509.Certificate) -> tuple[x509.CertificateRevocationList, Any]:
    """The entry's CRL verifies with the certificate it carries, which is the root or was issued by it."""
    from hub.trust.pki import fingerprint, issued_by

    crl = x509.load_der_x509_crl(base64.b64decode(entry["der_base64"], validate=True))
    ca = x509.load_der_x509_certificate(base64.b64decode(entry["issuer_der_base64"], validate=True))
    assert ca == root or issued_by(ca, root), entry["name"]
    assert crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert entry["issuer_sha256"] == fingerprint(ca)
    assert entry["issuer"] == ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert dt.datetime.fromisoformat(entry["this_update"]) == crl.last_update_utc
    assert dt.datetime.fromisoformat(entry["next_update"]) == crl.next_update_utc
    return crl, ca


async def test_the_current_crls_for_an_identified_client(gw: Gateway, tmp_path: Any) -> None:
    from adapters.sdk._crl import accept_crls
    from hub.trust.pki import PkiPaths, load_certificates

    paths = PkiPaths(gw.pki_dir)
    root = load_certificates(paths.root_cert)[0]
    status, headers, body = await _crls(gw)
    assert status == 200 and headers["Content-Type"].startswith("application/json"), body
    assert headers["Cache-Control"] == "no-store"
    names = [e["name"] for e in body["crls"]]
    assert names == sorted(names) == ["issuing-ca.crl", "root-ca.crl"]
    for entry in body["crls"]:
        crl, _ = _check_entry(entry, root)
        on_disk = x509.load_pem_x509_crl((paths.crl_dir / entry["name"]).read_bytes())
        assert crl == on_disk  # what the hub published, byte for byte
        assert dt.datetime.fromisoformat(entry["next_update"]) > dt.datetime.now(dt.UTC)
    # the SDK's check of the answer: everything verifies, all of it new to an empty folder
    update = accept_crls(body, root, tmp_path / "crl", write=False)
    assert (update.written, update.refused) == (("issuing-ca.crl", "root-ca.crl"), ())


async def test_without_a_client_certificate_it_is_refused_as_every_v1_route(gw: Gateway) -> None:
    async with gw.session(None).get("/v1/crl") as r:
        assert r.status == 401 and r.headers["X-Hub-Code"] == "GATEWAY_NO_CERTIFICATE"
        refusal = await r.json()
    assert refusal["code"] == "GATEWAY_NO_CERTIFICATE" and refusal["title"]  # the Chinese title, English detail
    async with gw.session(CLIENT).post("/v1/crl") as r:
        assert r.status == 405 and r.headers["X-Hub-Code"] == "GATEWAY_METHOD"


async def test_after_a_rollover_the_new_issuing_cas_crl_is_served_and_a_stale_one_is_503(gw: Gateway) -> None:
    """Last in this module: it changes the installation's issuing CA."""
    from hub.commands import trust_admin as admin
    from hub.trust import pki

    settings = gw.hub.settings
    paths = pki.PkiPaths(gw.pki_dir)
    root = pki.load_certificates(paths.root_cert)[0]
    rolled = await admin.rollover_issuing(settings, gw.pki_dir)
    new_ca = rolled.new.certificate
    old_name = f"issuing-ca-{pki.serial_hex(rolled.old.serial_number)}.crl"

    async def served() -> Any:
        status, _, body = await _crls(gw)
        names = {e["name"]: e for e in body.get("crls", [])} if status == 200 else {}
        return names if old_name in names else None

    # the gateway's trust store re-reads the PKI directory within its refresh interval
    entries = await until_async(served, "the new issuing CA's CRL at GET /v1/crl", timeout=20)
    assert sorted(entries) == [old_name, "issuing-ca.crl", "root-ca.crl"]
    _, ca = _check_entry(entries["issuing-ca.crl"], root)
    assert ca == new_ca and "Issuing CA 2" in entries["issuing-ca.crl"]["issuer"]
    _, old_ca = _check_entry(entries[old_name], root)
    assert old_ca == rolled.old  # the earlier CA's, still published while its certificates are valid

    # The new CA's CRL goes stale (CLIENT's certificate is the earlier CA's, so it is still identified): the answer
    # is the 503 every route gives while the hub's CRLs are stale, not a list with a stale CRL in it.
    key = pki.load_ca(gw.pki_dir, settings.ca_passphrase, which="issuing")[1]
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    pki.publish_crl(paths.issuing_crl, new_ca, key, (), number=1, now=past, hours=1)

    async def refused() -> Any:
        status, headers, body = await _crls(gw)
        return (headers, body) if status == 503 else None

    headers, body = await until_async(refused, "503 for the stale CRL", timeout=20)
    assert headers["X-Hub-Code"] == body["code"] == "CERT_CRL_UNAVAILABLE" and int(headers["Retry-After"]) > 0
    assert "hub pki crl" in body["detail"] and body["title"]

    await admin.publish_crls(settings, gw.pki_dir)
    assert await until_async(served, "the CRLs served again once published", timeout=20)
