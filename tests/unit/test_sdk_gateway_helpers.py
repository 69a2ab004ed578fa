"""The pure parts of the SDK's transport over the HTTPS gateway (``adapters.sdk._gateway``): what it reads of the
gateway's refusals and Retry-After, and what it sends as a refusal. The transport itself is proven against the real
gateway in tests/integration/test_sdk_gateway.py and by the SDK's behaviour suite in its https mode."""

from __future__ import annotations

import datetime as dt
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


def test_a_reason_any_way_it_travels_can_carry() -> None:
    """A lone surrogate (a file name read with surrogateescape) or a control character (a terminal's colours in a
    system's answer) in a reason: each way a refusal travels failed on it — the broker's headers, the gateway's JSON,
    the signed XML refusal — and the delivery came back to be refused again without end."""
    from adapters.sdk import Reject, Retry
    from adapters.sdk.messages import DeliveryRefusal
    from hub.pipeline.client import refusal_text

    assert refusal_text("附件 /srv/in/\udcff.pdf 打不开") == "附件 /srv/in/\ufffd.pdf 打不开"
    assert refusal_text("  \x1b[31m文号重复\x1b[0m\n") == "\ufffd[31m文号重复\ufffd[0m"
    assert refusal_text("x" * 5000) == "x" * 1000
    assert refusal_text("tab\tand\nlines stay; 𠀀 too") == "tab\tand\nlines stay; 𠀀 too"
    for reason in (Reject("DOC_BAD", "对方系统返回：\x1b[31m文号重复").reason, Retry(0, "\udcff").reason):
        reason.encode("utf-8")  # the gateway's JSON and the broker's headers
        json.dumps({"reason": reason}, ensure_ascii=False).encode()
        DeliveryRefusal(
            original_message_id="6f1c1b7e-2f7a-4f7e-9c1e-3b1b2f0c9a01",
            received_digest="ab" * 32,
            code="DOC_BAD",
            reason=reason,
            refused_at=dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC),
        ).to_element()  # lxml refuses what XML does not allow
    assert _reason(Outgoing("dead", "", b"", {"x-refused-reason": "bad \udcff"}, 0, "m")) == "bad \ufffd"


def test_an_error_names_the_proxy_without_its_password() -> None:
    import aiohttp
    from yarl import URL

    from adapters.sdk._gateway import _describe

    info = aiohttp.RequestInfo(URL("http://nongan:s3cret@proxy.example:3128"), "CONNECT", {}, URL("http://x"))  # type: ignore[arg-type]
    proxy = aiohttp.ClientHttpProxyError(info, (), status=502, message="Bad Gateway")
    assert "s3cret" not in _describe(proxy) and "502" in _describe(proxy)
    other = aiohttp.ClientConnectionError("Cannot connect via url='http://nongan:s3cret@proxy.example:3128'")
    assert "s3cret" not in _describe(other) and "proxy.example" in _describe(other)


def test_a_poll_asks_for_no_more_than_the_gateway_hands_out_at_once() -> None:
    from adapters.sdk._gateway import MAX_POLL
    from hub.gateway.openapi import MAX_POLL_ITEMS

    assert MAX_POLL == MAX_POLL_ITEMS


async def _fake_gateway(handler: object) -> tuple[object, str]:
    from aiohttp import web

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_an_unanswered_request_ends_at_request_timeout_and_retry_after_0_still_pauses() -> None:
    """One attempt lasted the session's whole timeout past the deadline (a gateway that takes a request and never
    answers: HubUnavailable after 32 s with request_timeout 2); a Retry-After of 0 (a proxy in front) sent the request
    again without a pause, thousands of times a second; a request on a closed session raised aiohttp's RuntimeError."""
    import asyncio
    import time

    import aiohttp
    from aiohttp import web

    from adapters.sdk._gateway import _settled, _Unavailable, exchange

    asked: list[float] = []
    let_go = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        asked.append(time.monotonic())
        if request.path == "/hang":
            await let_go.wait()
        if request.path == "/slow":  # the hub's receipt, made late
            await asyncio.sleep(1.5)
            return web.Response(status=202, body=b"<receipt/>")
        return web.Response(status=503, headers={"Retry-After": "0"})

    runner, url = await _fake_gateway(handler)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        started = time.monotonic()
        with pytest.raises(_Unavailable):
            await exchange(
                session, "POST", f"{url}/hang", "a submission", _settled, request_timeout=2.0, reconnect=(0.2, 1.0)
            )
        assert time.monotonic() - started < 10  # about request_timeout, not the session's 60 s
        asked.clear()
        with pytest.raises(_Unavailable):
            await exchange(session, "GET", f"{url}/busy", "a read", _settled, request_timeout=1.0, reconnect=(0.2, 1.0))
        assert 2 <= len(asked) <= 8, len(asked)  # paused at least the first back-off each time
        # A submission in flight runs its attempt_s past the deadline: a receipt the hub made is not cut off.
        status, *_ = await exchange(
            session,
            "POST",
            f"{url}/slow",
            "a submission",
            _settled,
            request_timeout=0.5,
            reconnect=(0.2, 1.0),
            attempt_s=5.0,
        )
        assert status == 202
    finally:
        let_go.set()
        await session.close()
        await runner.cleanup()  # type: ignore[attr-defined]
    with pytest.raises(_Unavailable, match="stopping"):
        await exchange(session, "GET", f"{url}/busy", "a read", _settled, request_timeout=1.0, reconnect=(0.2, 1.0))
