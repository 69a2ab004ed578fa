"""The gateway's pure parts: the code → HTTP status table, the per-system limits, the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.errors import CODES
from hub.gateway.identity import Refused
from hub.gateway.limits import Limits, TokenBucket, limits_of
from hub.gateway.status import GATEWAY_STATUS, status_for_code, status_for_receipt


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ENV_TOO_LARGE", 413),
        ("ENV_LIMIT", 413),
        ("ENV_MALFORMED", 400),
        ("SCHEMA_VALUE", 400),
        ("SIG_DIGEST", 400),
        ("MSG_EXPIRED", 400),
        ("MSG_DUPLICATE", 409),
        ("ROUTE_UNKNOWN_RECIPIENT", 403),
        ("GATE_CLASSIFICATION", 403),
        ("CERT_SIGNER_MISMATCH", 403),
        ("CERT_REVOKED", 403),
        ("DELIVERY_BROKER", 503),
        ("STORE_NO_DATABASE", 503),
        ("GATEWAY_NO_CERTIFICATE", 401),
        ("GATEWAY_RATE_LIMITED", 429),
        ("GATEWAY_TIMEOUT", 503),
        ("INTERNAL", 500),
    ],
)
def test_status_for_code(code: str, status: int) -> None:
    assert code in CODES
    assert status_for_code(code) == status


def test_every_gateway_code_is_registered_and_every_code_has_a_status() -> None:
    assert {c for c in CODES if c.startswith("GATEWAY_")} == set(GATEWAY_STATUS)
    assert all(100 <= status_for_code(c) < 600 for c in CODES)


def test_status_for_receipt() -> None:
    assert [status_for_receipt(o) for o in ("accepted", "quarantined", "duplicate")] == [202, 202, 409]


def test_token_bucket_and_concurrency() -> None:
    now = [100.0]
    limits = Limits(lambda system: (2.0, 1), clock=lambda: now[0])
    with limits.admit("a"):
        with pytest.raises(Refused) as busy:
            with limits.admit("a"):
                pass
        assert (busy.value.status, busy.value.code) == (429, "GATEWAY_CONCURRENCY")
    with pytest.raises(Refused) as fast:  # the burst of 2 is used up (the refused request took a token too)
        with limits.admit("a"):
            pass
    assert fast.value.code == "GATEWAY_RATE_LIMITED" and fast.value.retry_after == 1
    with limits.admit("b"):  # per system
        pass
    now[0] += 0.5
    with limits.admit("a"):
        pass
    bucket = TokenBucket(10.0)
    assert sum(bucket.take(0.0) == 0.0 for _ in range(20)) == 10


def test_check_says_what_admit_would_refuse_and_takes_nothing() -> None:
    """``Limits.check`` (``Expect: 100-continue``) refuses what ``admit`` would, without taking a token or a slot."""
    now = [100.0]
    limits = Limits(lambda system: (2.0, 1), clock=lambda: now[0])
    for _ in range(5):
        limits.check("a")  # a system not seen yet, many times: nothing taken
    with limits.admit("a"):
        with pytest.raises(Refused) as busy:
            limits.check("a")
        assert busy.value.code == "GATEWAY_CONCURRENCY"
    limits.check("a")
    with limits.admit("a"):  # the second token of the burst of 2: the checks took none
        pass
    with pytest.raises(Refused) as fast:
        limits.check("a")
    assert fast.value.code == "GATEWAY_RATE_LIMITED" and fast.value.retry_after == 1
    now[0] += 0.5
    limits.check("a")
    limits.check("a")
    with limits.admit("a"):  # the one token earned in half a second, left by the checks
        pass


def test_limits_from_the_directory_system() -> None:
    class Plain:
        pass

    class Tuned:
        rate = 5
        concurrency = 2

    assert limits_of(Plain(), 200, 32) == (200.0, 32)
    assert limits_of(Tuned(), 200, 32) == (5.0, 2)


def test_openapi_document() -> None:
    import json

    from hub.gateway.openapi import document

    doc = document(1000)
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {
        "/v1/messages",
        "/v1/messages/{id}",
        "/v1/inbox",
        "/v1/inbox/ack",
        "/v1/inbox/{tag}/ack",
        "/v1/inbox/{tag}/release",
        "/v1/inbox/{tag}/refuse",
        "/v1/crl",
        "/openapi.json",
        "/ready",
    }
    submit = doc["paths"]["/v1/messages"]["post"]["responses"]
    assert {"202", "400", "401", "403", "409", "413", "415", "429", "503"} <= set(submit)
    refuse = doc["paths"]["/v1/inbox/{tag}/refuse"]["post"]
    assert {"204", "400", "404", "413", "415", "503"} <= set(refuse["responses"])
    refusal = doc["components"]["schemas"]["Refusal"]
    assert refusal["required"] == ["code", "reason"] and refusal["additionalProperties"] is False
    assert refusal["properties"]["reason"]["maxLength"] == 1000
    json.dumps(doc)


def test_the_lane_and_id_of_a_submission() -> None:
    import re

    from lxml import etree

    from hub.envelope import Envelope, parse, to_bytes
    from hub.gateway.app import _route_of
    from hub.settings import PROJECT_ROOT

    sample = PROJECT_ROOT / "schemas/services/document.official/1/samples/valid/typical-notice.xml"
    root = parse(sample.read_bytes())
    env = Envelope.from_tree(root)
    mid, lane, _ = _route_of(to_bytes(root))
    assert (mid, lane) == (env.message_id, "normal")
    root.find(".//{urn:forestry-hub:envelope:1}Urgency").text = "特急"
    mid, lane, priority = _route_of(etree.tostring(root))
    assert (mid, lane) == (env.message_id, "emergency") and priority > 0

    mid, lane, priority = _route_of(b"not xml")
    assert (lane, priority) == ("normal", 0) and re.fullmatch(r"[0-9a-f-]{36}", mid)
    assert _route_of(b"not xml")[0] != mid  # a fresh id each time


def test_hub_run_gateway_without_a_server_certificate_touches_nothing(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import main

    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HUB_PG_DSN", "postgresql://nobody@127.0.0.1:1/none")  # never reached
    assert main(["run", "--gateway", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "CONFIG" in err and str(tmp_path / "pki" / "gateway" / "server.pem") in err


def test_hub_run_gateway_refuses_what_the_gateway_would_refuse_before_it_starts_anything(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key that does not load, a load balancer's address that is not one: refused once, with the reason, before the
    supervisor starts (from inside the gateway process it was restarted every two seconds without end)."""
    from hub.cli import main

    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HUB_PG_DSN", "postgresql://nobody@127.0.0.1:1/none")  # never reached
    folder = tmp_path / "pki" / "gateway"
    folder.mkdir(parents=True)
    (folder / "server.pem").write_text("not a certificate\n")
    (folder / "server.key").write_text("not a key\n")
    (tmp_path / "pki" / "root-ca.pem").write_text("not a root\n")
    assert main(["run", "--gateway", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "CONFIG" in err and "cannot load the hub's root" in err  # was INTERNAL, an SSLError
    monkeypatch.setenv("HUB_GATEWAY_PROXY_FROM", "lb.example")
    assert main(["run", "--gateway", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "CONFIG" in err and "lb.example" in err


def test_a_refusal_of_the_emergency_lane_is_403() -> None:
    """LANE_NOT_ENTITLED (an ordinary message in the emergency lane) is a policy refusal, like a route's: 403, not the
    500 an unknown family gets."""
    from hub.gateway.status import status_for_code

    assert status_for_code("LANE_NOT_ENTITLED") == 403


def test_the_document_describes_every_route_the_application_serves(tmp_path: Path) -> None:
    """Each method and path the aiohttp application routes is in the OpenAPI document, and nothing else is."""
    from hub.gateway import GatewaySettings
    from hub.gateway.app import create_app
    from hub.gateway.openapi import document
    from hub.settings import Settings

    app = create_app(Settings.from_env(state_dir=tmp_path), GatewaySettings.for_state(tmp_path))
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    described = {(m, path) for path, ops in document()["paths"].items() for m in ops}
    assert served == described
