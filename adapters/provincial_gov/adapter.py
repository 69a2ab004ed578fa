"""省政府办公厅公文交换系统适配器 The provincial government OA's adapter (system ``gov-220000-oa``).

    hub adapter run provincial_gov --config settings.toml

- OA → hub: ``POST /v1/documents`` (JSON, bearer token, TLS) → a signed ``document.official`` under the message id
  uuid5(NAMESPACE, document_id); the OA gets 200 only after the hub's signed receipt (a re-push is a hub duplicate).
- hub → OA: ``document.official``, ``document.receipt`` (签收/办结…) and ``info.report`` are written to an outbox in
  the SDK's store (committed with the handled-id record) and POSTed to the OA's callback URL after commit, with
  ``X-Hub-Message-Id``; retried with back-off until the OA answers 2xx. The OA deduplicates by that header.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import sqlite3
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from lxml import etree

from adapters.provincial_gov.mapping import OAError, hub_refusal, parse_push
from adapters.sdk import (
    Adapter,
    ConfigurationError,
    Context,
    HubRefused,
    HubUnavailable,
    MessageInvalid,
    RequestTimeout,
    SdkError,
    StoreConnection,
    group,
    to,
)
from adapters.sdk.messages import DocumentOfficialV1, DocumentReceiptV1, InfoReportV1

SYSTEM = "gov-220000-oa"
log = logging.getLogger("adapters.provincial_gov")
adapter = Adapter(SYSTEM)
_state: dict[str, Any] = {}

_OUTBOX = """
CREATE TABLE IF NOT EXISTS oa_callback_outbox (
    message_id TEXT PRIMARY KEY,
    service    TEXT NOT NULL,
    sender     TEXT NOT NULL,
    body       BLOB NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending',
    attempts   INTEGER NOT NULL DEFAULT 0
)
"""


@dataclass(frozen=True)
class Config:
    listen_host: str
    listen_port: int
    token: str
    callback_url: str
    callback_token: str
    cert_file: str = ""
    key_file: str = ""
    allow_plain_http: bool = False
    max_body: int = 4 * 1024 * 1024
    send_timeout: float = 30.0
    retry_initial: float = 0.2
    max_retry_delay: float = 60.0
    poll_interval: float = 0.2
    ca_file: str = ""

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> Config:
        def fail(what: str) -> ConfigurationError:
            return ConfigurationError(f"provincial_gov [adapter]: {what}", code="OA_CONFIG")

        def secret(name: str) -> str:
            value = str(extra.get(name, ""))
            path = str(extra.get(name + "_file", ""))
            if path:
                try:
                    value = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise fail(f"{name}_file cannot be read ({type(exc).__name__})") from None
            if not value:
                raise fail(f"{name} or {name}_file is required")
            return value

        host = str(extra.get("listen_host", "127.0.0.1"))
        try:
            port = int(extra.get("listen_port", 8443))
        except (TypeError, ValueError):
            raise fail("listen_port must be an integer") from None
        if not 0 < port < 65536:
            raise fail(f"listen_port must be a port number (1–65535), not {port}")
        url = str(extra.get("callback_url", ""))
        if not url.startswith(("http://", "https://")):
            raise fail("callback_url must be the OA's http(s):// callback URL")
        if url.startswith("http://"):  # the callback carries the token and the documents: plain only on loopback
            cb_host = (urlsplit(url).hostname or "").strip("[]")
            try:
                cb_loopback = ipaddress.ip_address(cb_host).is_loopback
            except ValueError:
                cb_loopback = cb_host == "localhost"
            if not cb_loopback:
                raise fail("callback_url must be https:// (plain http:// only to a loopback address)")
        cert, key = str(extra.get("cert_file", "")), str(extra.get("key_file", ""))
        plain = bool(extra.get("allow_plain_http", False))
        if cert or key:
            for p in (cert, key):
                if not p or not Path(p).is_file():
                    raise fail("cert_file and key_file must both name existing PEM files")
        elif not plain:
            raise fail("cert_file and key_file are required (or allow_plain_http = true on a loopback address)")
        else:
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host == "localhost"
            if not loopback:
                raise fail("allow_plain_http is allowed only with a loopback listen_host")
        ca = str(extra.get("ca_file", ""))
        if ca and not Path(ca).is_file():
            raise fail(f"ca_file {ca} does not exist")
        nums: dict[str, Any] = {}
        for name in ("send_timeout", "retry_initial", "max_retry_delay", "poll_interval"):
            if name in extra:
                try:
                    nums[name] = float(extra[name])
                except (TypeError, ValueError):
                    raise fail(f"{name} must be a number of seconds") from None
                if not math.isfinite(nums[name]) or nums[name] <= 0:  # TOML has nan and inf
                    raise fail(f"{name} must be a positive number of seconds")
        if "max_body" in extra:
            try:
                nums["max_body"] = int(extra["max_body"])
            except (TypeError, ValueError):
                raise fail("max_body must be a number of bytes") from None
            if nums["max_body"] <= 0:
                raise fail("max_body must be positive")
        return cls(
            listen_host=host,
            listen_port=port,
            token=secret("token"),
            callback_url=url,
            callback_token=secret("callback_token"),
            cert_file=cert,
            key_file=key,
            allow_plain_http=plain,
            ca_file=ca,
            **nums,
        )


def config() -> Config:
    c = _state.get("config")
    if c is None:
        if adapter.settings is None:
            raise ConfigurationError("provincial_gov: no settings", code="OA_CONFIG")
        c = _state["config"] = Config.from_extra(dict(adapter.settings.extra))
    return c  # type: ignore[no-any-return]


def _store_path() -> str:
    s = adapter.settings
    if s is None:
        raise ConfigurationError("provincial_gov: no settings", code="OA_CONFIG")
    kind, target = s.store_target()
    if kind != "sqlite" or target == ":memory:":
        raise ConfigurationError("provincial_gov keeps its callback outbox in a SQLite store file", code="OA_CONFIG")
    return target


# ------------------------------------------------------------------------------------------ OA → hub (HTTP)


def _error(e: OAError) -> web.Response:
    return web.json_response(e.json(), status=e.status)


async def push_document(request: web.Request) -> web.Response:
    c = config()
    auth = request.headers.get("Authorization", "")
    if not hmac.compare_digest(auth.encode(), f"Bearer {c.token}".encode()):
        return _error(OAError(401, "OA_UNAUTHORIZED", "令牌无效或缺失", "missing or wrong bearer token"))
    if request.content_length is None or request.content_length > c.max_body:
        return _error(
            OAError(413, "OA_TOO_LARGE", f"请求体缺少长度或超过 {c.max_body} 字节", "body length missing or too large")
        )
    raw = await request.read()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: arrays nested a thousand deep
        return _error(OAError(400, "OA_BAD_JSON", "请求体不是合法的 UTF-8 JSON", "the body is not valid UTF-8 JSON"))
    try:
        push = parse_push(data)
    except OAError as e:
        return _error(e)
    recipients = [to(a) for a in push.agencies] + [group(g) for g in push.groups]
    fields = {"system": SYSTEM, "message_id": push.message_id, "service": "document.official/1"}
    try:
        receipt = await adapter.send(
            push.body,
            service="document.official",
            version=1,
            to=recipients,
            urgency=push.urgency,
            business_ref=push.document_number or None,
            message_id=push.message_id,
            timeout=c.send_timeout,
        )
    except MessageInvalid as exc:
        log.info("push refused: fails the schema (%s)", exc.code, extra=fields)
        return _error(
            OAError(
                400, "OA_INVALID", "公文不符合交换格式（XSD）", f"the document breaks the schema: {exc.detail}"[:500]
            )
        )
    except HubRefused as exc:
        log.info("push refused by the hub: %s", exc.code, extra=fields)
        return _error(hub_refusal(exc.code))
    except (RequestTimeout, HubUnavailable) as exc:
        log.warning("hub not answering (%s)", exc.code, extra=fields)
        return _error(
            OAError(
                503, "OA_HUB_UNAVAILABLE", "交换枢纽暂不可用，请稍后重试", "the hub did not answer; push again later"
            )
        )
    except SdkError as exc:
        log.warning("push failed: %s", exc.code, extra=fields)
        if exc.code and ("RECIPIENT" in exc.code or "UNKNOWN" in exc.code):
            return _error(hub_refusal(exc.code))
        # Not known to be a refusal of this document: the OA must push it again, not give up on it.
        return _error(
            OAError(
                503,
                "OA_HUB_UNAVAILABLE",
                f"暂时无法送交枢纽（{exc.code}），请稍后重试",
                f"could not hand the document to the hub ({exc.code}); push again later",
            )
        )
    log.info("pushed to the hub: %s", receipt.outcome, extra=fields)
    return web.json_response(
        {
            "message_id": push.message_id,
            "document_id": push.document_id,
            "outcome": receipt.outcome,
            "receipt_id": receipt.receipt_id,
            "recipients": [list(r) for r in receipt.recipients],
        },
        status=200,
    )


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"system": SYSTEM, "ok": True})


def build_app(c: Config) -> web.Application:
    app = web.Application(client_max_size=c.max_body)
    app.router.add_post("/v1/documents", push_document)
    app.router.add_get("/v1/health", _health)
    return app


# ------------------------------------------------------------------------------------------ hub → OA (outbox)


def _queue(msg_xml: bytes, ctx: Context) -> None:
    db: sqlite3.Connection = ctx.db
    db.execute(_OUTBOX)
    db.execute(
        "INSERT OR IGNORE INTO oa_callback_outbox (message_id, service, sender, body) VALUES (?, ?, ?, ?)",
        (ctx.message_id, ctx.service_id, ctx.sender.system, msg_xml),
    )
    box: CallbackOutbox | None = _state.get("outbox")
    if box is not None:
        box.poke()


def _body(msg: Any, ctx: Context) -> bytes:
    el = ctx.body if ctx.body is not None else msg.to_element()
    return etree.tostring(el, xml_declaration=True, encoding="UTF-8")


@adapter.handles(DocumentOfficialV1)
async def on_document(msg: DocumentOfficialV1, ctx: Context) -> None:
    _queue(_body(msg, ctx), ctx)


@adapter.handles(DocumentReceiptV1)
async def on_receipt(msg: DocumentReceiptV1, ctx: Context) -> None:
    _queue(_body(msg, ctx), ctx)


@adapter.handles(InfoReportV1)
async def on_report(msg: InfoReportV1, ctx: Context) -> None:
    _queue(_body(msg, ctx), ctx)


class CallbackOutbox:
    """Delivers committed outbox rows to the OA's callback URL, oldest first, until it answers 2xx."""

    def __init__(self, path: str, c: Config) -> None:
        self.path, self.c = path, c
        self.db = StoreConnection(path, _OUTBOX, name="oa-callback-outbox-db")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.delay = c.retry_initial

    async def open(self) -> None:
        await self.db.open()
        ssl_ctx: ssl.SSLContext | bool = True
        if self.c.ca_file:
            ssl_ctx = ssl.create_default_context(cafile=self.c.ca_file)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10),
            connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=16),
            headers={"Authorization": f"Bearer {self.c.callback_token}"},
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="oa-callback-outbox")

    def poke(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._session is not None:
            await self._session.close()
        await self.db.close()

    async def _run(self) -> None:
        while True:
            try:
                rows = await self.db.sql(
                    "SELECT message_id, service, sender, body FROM oa_callback_outbox"
                    " WHERE state = 'pending' ORDER BY rowid LIMIT 64",
                )
                if rows:
                    results = await asyncio.gather(*(self._deliver(*r) for r in rows))
                    if all(results):
                        self.delay = self.c.retry_initial
                        continue
                    await asyncio.sleep(self.delay)
                    self.delay = min(self.delay * 2, self.c.max_retry_delay)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("callback outbox round failed", extra={"system": SYSTEM})
                await asyncio.sleep(self.delay)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.c.poll_interval)

    async def _deliver(self, mid: str, service: str, sender: str, body: bytes) -> bool:
        assert self._session is not None
        headers = {
            "X-Hub-Message-Id": mid,
            "X-Hub-Service": service,
            "X-Hub-Sender": sender,
            "Content-Type": "application/xml; charset=utf-8",
        }
        fields = {"system": SYSTEM, "message_id": mid, "service": service}
        try:
            async with self._session.post(self.c.callback_url, data=body, headers=headers) as resp:
                ok = 200 <= resp.status < 300
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("OA callback unreachable (%s)", type(exc).__name__, extra=fields)
            ok, status = False, 0
        if ok:
            await self.db.sql("UPDATE oa_callback_outbox SET state = 'delivered' WHERE message_id = ?", (mid,))
        else:
            await self.db.sql("UPDATE oa_callback_outbox SET attempts = attempts + 1 WHERE message_id = ?", (mid,))
            if status:
                log.warning("OA callback answered HTTP %s, retrying", status, extra=fields)
        return ok


# ------------------------------------------------------------------------------------------ start / stop


@adapter.on_startup
async def open_oa_side() -> None:
    c = config()
    box = CallbackOutbox(_store_path(), c)
    await box.open()
    _state["outbox"] = box
    ssl_ctx = None
    if c.cert_file:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(c.cert_file, c.key_file)
    runner = web.AppRunner(build_app(c), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, c.listen_host, c.listen_port, ssl_context=ssl_ctx)
    await site.start()
    _state["runner"] = runner
    log.info(
        "provincial OA side open",
        extra={"system": SYSTEM, "listen": f"{c.listen_host}:{c.listen_port}", "tls": bool(ssl_ctx)},
    )


@adapter.on_shutdown
async def close_oa_side() -> None:
    runner: web.AppRunner | None = _state.pop("runner", None)
    if runner is not None:
        await runner.cleanup()
    box: CallbackOutbox | None = _state.pop("outbox", None)
    if box is not None:
        await box.stop()
