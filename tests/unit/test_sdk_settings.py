"""The SDK's settings refuse, at start and with a sentence (``SDK_CONFIG``), values with which an adapter could not
work: every send timing out at once, every delivery refused as too large, reconnecting without a pause."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.sdk import AdapterSettings, ConfigurationError


def _settings(**values: Any) -> AdapterSettings:
    return AdapterSettings(system="county-220182-oa", home=Path("/nonexistent"), **values)


def test_the_defaults_and_sensible_values_are_taken() -> None:
    assert _settings().retry_limit == 5
    s = _settings(request_timeout=0.5, max_message_bytes=1024, reconnect_initial=1, reconnect_max=1, retry_limit=0)
    assert (s.request_timeout, s.retry_limit) == (0.5, 0)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"request_timeout": 0}, "request_timeout"),
        ({"request_timeout": -1.0}, "request_timeout"),
        ({"max_message_bytes": 0}, "max_message_bytes"),
        ({"reconnect_initial": 0}, "reconnect_initial"),
        ({"reconnect_initial": 60, "reconnect_max": 30}, "reconnect_max"),
        ({"retry_limit": -1}, "retry_limit"),
        ({"prefetch": 0}, "prefetch"),
        ({"gateway_url": "http://gateway.jl-forestry.gov.cn:8443"}, "gateway_url"),
        ({"gateway_url": "gateway.jl-forestry.gov.cn:8443"}, "gateway_url"),
        ({"gateway_url": "https://gateway.jl-forestry.gov.cn:8443/v1/messages"}, "gateway_url"),
        ({"gateway_url": "https://:8443"}, "gateway_url"),
        ({"gateway_polls": 0}, "gateway_polls"),
        ({"gateway_wait": 0}, "gateway_wait"),
        ({"gateway_wait": 31}, "gateway_wait"),
        ({"gateway_url": "https://gw:8443", "gateway_proxy": "socks5://proxy:1080"}, "gateway_proxy"),
        ({"gateway_url": "https://gw:8443", "gateway_proxy": "proxy:3128"}, "gateway_proxy"),
        ({"gateway_url": "https://gw:8443", "gateway_proxy": "http://proxy:3128/path"}, "gateway_proxy"),
        ({"gateway_proxy": "http://proxy:3128"}, "gateway_proxy"),  # a proxy for no gateway
        ({"tracking_url": "http://gateway.jl-forestry.gov.cn:8443"}, "tracking_url"),
        ({"tracking_url": "https://gateway.jl-forestry.gov.cn:8443/v1/messages"}, "tracking_url"),
        ({"gateway_url": "https://gw:8443", "tracking_url": "https://gw:8443"}, "tracking_url"),  # over the gateway
    ],
)
def test_values_an_adapter_cannot_work_with_are_refused(values: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _settings(**values)
    assert caught.value.code == "SDK_CONFIG" and named in str(caught.value)


def test_a_file_with_such_a_value_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('system = "county-220182-oa"\nhome = "home"\nrequest_timeout = 0\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="request_timeout"):
        AdapterSettings.from_file(path)


def test_the_https_gateway_is_taken_as_https_host_and_port() -> None:
    s = _settings(gateway_url="https://gateway.jl-forestry.gov.cn:8443/", gateway_polls=4, gateway_wait=30)
    assert (s.gateway_url, s.gateway_polls, s.gateway_wait) == ("https://gateway.jl-forestry.gov.cn:8443/", 4, 30)
    assert _settings().gateway_url == ""  # RabbitMQ, from broker.json, unless a gateway is named


def test_an_adapter_on_rabbitmq_names_the_gateway_it_reads_tracking_from() -> None:
    s = _settings(tracking_url="https://gateway.jl-forestry.gov.cn:8443", gateway_proxy="http://proxy:3128")
    assert (s.gateway_url, s.tracking_url) == ("", "https://gateway.jl-forestry.gov.cn:8443")  # still RabbitMQ


def test_the_gateway_can_be_named_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_ADAPTER_GATEWAY_URL", "https://127.0.0.1:8443")
    monkeypatch.setenv("HUB_ADAPTER_GATEWAY_WAIT", "5")
    monkeypatch.setenv("HUB_ADAPTER_GATEWAY_PROXY", "http://proxy.example.gov.cn:3128")
    s = AdapterSettings.from_mapping({"system": "county-220182-oa", "home": "/nonexistent"})
    assert (s.gateway_url, s.gateway_wait) == ("https://127.0.0.1:8443", 5)
    assert s.gateway_proxy == "http://proxy.example.gov.cn:3128"


def test_the_gateway_documents_settings_are_settings_the_sdk_takes() -> None:
    """docs/gateway.md shows an adapter's settings for the gateway in both languages: each block is taken as written."""
    import re
    import tomllib

    from hub.settings import PROJECT_ROOT

    text = (PROJECT_ROOT / "docs" / "gateway.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    for block in blocks:
        s = AdapterSettings.from_mapping(tomllib.loads(block))
        assert s.gateway_url.startswith("https://") and 1 <= s.gateway_wait <= 30
