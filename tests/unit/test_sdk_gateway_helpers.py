"""The pure parts of the SDK's transport over the HTTPS gateway (``adapters.sdk._gateway``): what it reads of the
gateway's refusals and Retry-After, and what it sends as a refusal. The transport itself is proven against the real
gateway in tests/integration/test_sdk_gateway.py and by the SDK's behaviour suite in its https mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.sdk import AdapterSettings, ConfigurationError
from adapters.sdk._gateway import _CODE, _detail, _reason, _seconds, client_ssl_context
from hub.transport.topology import Outgoing


def test_the_detail_of_a_json_refusal_or_the_start_of_anything_else() -> None:
    body = json.dumps({"code": "ENV_TOO_LARGE", "title": "报文过大", "detail": "the message is over 100 bytes"})
    assert _detail(body.encode()) == "the message is over 100 bytes"
    assert _detail(b"<html>502 Bad Gateway</html>" + b"x" * 500).startswith("<html>502 Bad Gateway")
    assert len(_detail(b"x" * 500)) == 200
    assert _detail(b"[1, 2]") == ""


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("5", 5.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("soon", None),
        (None, None),
        ("nan", None),  # float() takes these: a wait of nan or forever is no wait at all
        ("inf", None),
        ("86400", 3600.0),  # at most an hour: the request's own timeout decides beyond that
    ],
)
def test_retry_after(raw: str | None, seconds: float | None) -> None:
    assert _seconds(raw) == seconds


def test_a_refusal_carries_a_reason_the_gateway_takes() -> None:
    def parked(headers: dict[str, str]) -> Outgoing:
        return Outgoing("hub.dead", "", b"<x/>", headers, 0, "m")

    assert _reason(parked({"x-refused-reason": "  签名不符  "})) == "签名不符"
    assert _reason(parked({})) == "refused by the adapter's checks"  # never blank: the gateway refuses blank
    assert len(_reason(parked({"x-refused-reason": "长" * 5000}))) == 1000
    assert _CODE.fullmatch("SIG_DIGEST") and _CODE.fullmatch("SDK_RETRIES_EXHAUSTED")
    assert not _CODE.fullmatch("sig_digest") and not _CODE.fullmatch("X")


def test_an_enrolment_directory_without_its_files_is_named(tmp_path: Path) -> None:
    settings = AdapterSettings(system="county-220182-oa", home=tmp_path, gateway_url="https://127.0.0.1:8443")
    with pytest.raises(ConfigurationError) as caught:
        client_ssl_context(settings)
    assert caught.value.code == "SDK_NOT_ENROLLED" and "key.pem" in caught.value.detail
