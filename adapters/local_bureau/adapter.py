"""县级林业局办公系统适配器 The county bureau's adapter (default system ``county-222424-oa``, 汪清县林业局).

    hub adapter run local_bureau --config settings.toml

- bureau → hub: ``POST /v1/messages`` (JSON, bearer token, TLS): document.official, document.receipt (签收/阅读/
  办结), info.report, emergency.alert/update, under the message id uuid5(NAMESPACE, "system:service:id"); 200 only
  after the hub's signed receipt (a re-push is a hub duplicate), a coded 4xx otherwise (nothing sent).
- hub → bureau: documents, receipts, reports and acknowledgements go to the bureau's ``inbox_url`` (XML, header
  ``X-Hub-Message-Id``); emergency.alert/update go to the duty desk's ``desk_webhook_url`` (JSON). Both from an
  outbox in the SDK's store committed with the handled-id record, retried until 2xx; receivers dedup by id.
- duty desk → hub: ``POST /v1/alerts/{alert_message_id}/ack`` → an ``emergency.ack`` to the alert's sender (one per
  alert: its message id is uuid5 of the alert's id).
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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from lxml import etree

from adapters.local_bureau.mapping import (
    AGENCY_CODE,
    BureauError,
    ack_message_id,
    alert_fields,
    alert_for_desk,
    hub_refusal,
    notice_for_desk,
    parse_ack,
    parse_push,
    schema_refusal,
)
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
from adapters.sdk.messages import (
    DocumentOfficialV1,
    DocumentReceiptV1,
    EmergencyAckV1,
    EmergencyAlertV1,
    EmergencyUpdateV1,
    HubNoticeV1,
    InfoReportV1,
)
from adapters.sdk.messages import emergency_ack_v1 as ack_v1

SYSTEM = "county-222424-oa"
#: The hub's own system id (hub.trust.pki.HUB_SYSTEM; an adapter imports only the SDK): the signer of hub.notice.
HUB_SYSTEM = "hub"
log = logging.getLogger("adapters.local_bureau")
adapter = Adapter(SYSTEM)
_state: dict[str, Any] = {}

_OUTBOX = """
CREATE TABLE IF NOT EXISTS lb_outbox (
    message_id    TEXT PRIMARY KEY,
    target        TEXT NOT NULL,
    service       TEXT NOT NULL,
    sender_agency TEXT NOT NULL,
    sender_system TEXT NOT NULL,
    incident      TEXT,
    body          BLOB NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',
    attempts      INTEGER NOT NULL DEFAULT 0
)
"""


@dataclass(frozen=True)
class Config:
    listen_host: str
    listen_port: int
    token: str
    inbox_url: str
    inbox_token: str
    desk_webhook_url: str
    desk_token: str
    desk_webhook_token: str
    agency_name: str = "汪清县林业局"
    agency_code: str = "11222424014107528Y"
    #: Where the acknowledgement of an alert the hub forwarded (a ``hub.notice``; its sender unknown here) goes: the
    #: provincial duty platform (any recipient the emergency-ack route allows; the hub counts it all the same).
    notice_ack_agency: str = "11220000013544357T"
    notice_ack_system: str = "prov-220000-duty"
    cert_file: str = ""
    key_file: str = ""
    allow_plain_http: bool = False
    ca_file: str = ""
    max_body: int = 4 * 1024 * 1024
    send_timeout: float = 30.0
    retry_initial: float = 0.2
    max_retry_delay: float = 60.0
    poll_interval: float = 0.2

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> Config:
        def fail(what: str) -> ConfigurationError:
            return ConfigurationError(f"local_bureau [adapter]: {what}", code="LB_CONFIG")

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

        def url(name: str) -> str:
            u = str(extra.get(name, ""))
            if not u.startswith(("http://", "https://")):
                raise fail(f"{name} must be an http(s):// URL")
            return u

        host = str(extra.get("listen_host", "127.0.0.1"))
        try:
            port = int(extra.get("listen_port", 8443))
        except (TypeError, ValueError):
            raise fail("listen_port must be an integer") from None
        if not 0 < port < 65536:
            raise fail(f"listen_port must be a port number (1–65535), not {port}")
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
        code = str(extra.get("agency_code", cls.agency_code))
        if not AGENCY_CODE.match(code):
            raise fail("agency_code must be the bureau's 18-character unified social credit code")
        ack_agency = str(extra.get("notice_ack_agency", cls.notice_ack_agency))
        if not AGENCY_CODE.match(ack_agency):
            raise fail("notice_ack_agency must be an 18-character unified social credit code")
        ack_system = str(extra.get("notice_ack_system", cls.notice_ack_system))
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
            # ≤ 0 would answer every push 413 LB_TOO_LARGE: the bureau could send nothing
            try:
                nums["max_body"] = int(extra["max_body"])
            except (TypeError, ValueError):
                raise fail("max_body must be a number of bytes") from None
            if nums["max_body"] <= 0:
                raise fail("max_body must be a positive number of bytes")
        return cls(
            listen_host=host,
            listen_port=port,
            token=secret("token"),
            inbox_url=url("inbox_url"),
            inbox_token=secret("inbox_token"),
            desk_webhook_url=url("desk_webhook_url"),
            desk_token=secret("desk_token"),
            desk_webhook_token=secret("desk_webhook_token"),
            agency_name=str(extra.get("agency_name", cls.agency_name)),
            agency_code=code,
            notice_ack_agency=ack_agency,
            notice_ack_system=ack_system,
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
            raise ConfigurationError("local_bureau: no settings", code="LB_CONFIG")
        c = _state["config"] = Config.from_extra(dict(adapter.settings.extra))
    return c  # type: ignore[no-any-return]


def _store_path() -> str:
    s = adapter.settings
    if s is None:
        raise ConfigurationError("local_bureau: no settings", code="LB_CONFIG")
    kind, target = s.store_target()
    if kind != "sqlite" or target == ":memory:":
        raise ConfigurationError("local_bureau keeps its outbox in a SQLite store file", code="LB_CONFIG")
    return target


# ------------------------------------------------------------------------------------------ bureau → hub (HTTP)


def _error(e: BureauError) -> web.Response:
    return web.json_response(e.json(), status=e.status)


def _check(request: web.Request, token: str, max_body: int) -> BureauError | None:
    auth = request.headers.get("Authorization", "")
    if not hmac.compare_digest(auth.encode(), f"Bearer {token}".encode()):
        return BureauError(401, "LB_UNAUTHORIZED", "令牌无效或缺失", "missing or wrong bearer token")
    if request.content_length is None or request.content_length > max_body:
        return BureauError(
            413, "LB_TOO_LARGE", f"请求体缺少长度或超过 {max_body} 字节", "body length missing or too large"
        )
    return None


async def _json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: arrays nested a thousand deep
        raise BureauError(
            400, "LB_BAD_JSON", "请求体不是合法的 UTF-8 JSON", "the body is not valid UTF-8 JSON"
        ) from None


async def _send(fields: dict[str, Any], *args: Any, **kw: Any) -> Any:
    """adapter.send with every failure turned into the contract's coded refusal (``BureauError``)."""
    try:
        return await adapter.send(*args, timeout=config().send_timeout, **kw)
    except MessageInvalid as exc:
        log.info("refused: fails the schema (%s)", exc.code, extra=fields)
        raise schema_refusal(exc.code, exc.detail) from None
    except HubRefused as exc:
        log.info("refused by the hub: %s", exc.code, extra=fields)
        raise hub_refusal(exc.code) from None
    except (RequestTimeout, HubUnavailable) as exc:
        log.warning("hub not answering (%s)", exc.code, extra=fields)
        raise BureauError(
            503, "LB_HUB_UNAVAILABLE", "交换枢纽暂不可用，请稍后重试", "the hub did not answer; push again later"
        ) from None
    except SdkError as exc:
        log.warning("send failed: %s", exc.code, extra=fields)
        raise hub_refusal(exc.code) from None


async def push_message(request: web.Request) -> web.Response:
    c = config()
    try:
        err = _check(request, c.token, c.max_body)
        if err is not None:
            raise err
        push = parse_push(await _json(request), SYSTEM)
        recipients = [to(a, s) if s else to(a) for a, s in push.recipients] + [group(g) for g in push.groups]
        fields = {"system": SYSTEM, "message_id": push.message_id, "service": push.service}
        receipt = await _send(
            fields,
            push.body,
            service=push.service,
            version=1,
            to=recipients,
            urgency=push.urgency,
            ref_to=push.ref_to,
            business_ref=push.business_ref,
            message_id=push.message_id,
        )
    except BureauError as e:
        return _error(e)
    log.info("pushed to the hub: %s", receipt.outcome, extra=fields)
    return web.json_response(
        {
            "id": push.external_id,
            "message_id": push.message_id,
            "outcome": receipt.outcome,
            "receipt_id": receipt.receipt_id,
            "recipients": [list(r) for r in receipt.recipients],
        }
    )


async def ack_alert(request: web.Request) -> web.Response:
    c = config()
    try:
        err = _check(request, c.desk_token, 64 * 1024)
        if err is not None:
            raise err
        try:
            alert_id = str(uuid.UUID(request.match_info["alert_id"]))
        except ValueError:
            raise BureauError(404, "LB_UNKNOWN_ALERT", "没有这条预警", "no such alert") from None
        box: Outbox = _state["outbox"]
        # An alert, an update or a closing (each acknowledged by its own id: AlertMessageId = the update's), sent to
        # the desk by their sender, or forwarded to it by the hub (a hub.notice whose RefersTo names it).
        rows = await box.db.sql(
            "SELECT sender_agency, sender_system, incident FROM lb_outbox"
            " WHERE message_id = ? AND service IN ('emergency.alert', 'emergency.update')",
            (alert_id,),
        )
        if not rows:
            rows = await box.db.sql(
                "SELECT ?, ?, incident FROM lb_outbox WHERE target = 'desk' AND service = 'hub.notice'"
                " AND json_extract(CAST(body AS TEXT), '$.refers_to') = ?"
                " AND json_extract(CAST(body AS TEXT), '$.ack_path') IS NOT NULL ORDER BY rowid LIMIT 1",
                (c.notice_ack_agency, c.notice_ack_system, alert_id),
            )
        if not rows:
            raise BureauError(
                404, "LB_UNKNOWN_ALERT", "没有这条预警（未送达本局值班台）", "no such alert delivered here"
            )
        sender_agency, sender_system, incident = rows[0]
        ack = parse_ack(await _json(request))
        mid = ack_message_id(SYSTEM, alert_id)
        msg = EmergencyAckV1(
            alert_message_id=alert_id,
            incident_number=incident,
            agency=ack_v1.AgencyRef(name=c.agency_name, agency_code=c.agency_code),
            response=ack.response,  # type: ignore[arg-type]
            duty_officer=ack.duty_officer,
            phone=ack.phone,
            acknowledged_at=ack.acknowledged_at,
            note=ack.note,
        )
        fields = {"system": SYSTEM, "message_id": mid, "service": "emergency.ack"}
        receipt = await _send(
            fields,
            msg,
            to=to(sender_agency, sender_system),
            urgency="特急",
            ref_to=alert_id,
            conversation_id=alert_id,
            business_ref=incident,
            message_id=mid,
        )
    except BureauError as e:
        return _error(e)
    log.info("acknowledgement sent: %s", receipt.outcome, extra=fields)
    return web.json_response(
        {"alert_message_id": alert_id, "message_id": mid, "outcome": receipt.outcome, "receipt_id": receipt.receipt_id}
    )


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"system": SYSTEM, "ok": True})


def build_app(c: Config) -> web.Application:
    app = web.Application(client_max_size=c.max_body)
    app.router.add_post("/v1/messages", push_message)
    app.router.add_post("/v1/alerts/{alert_id}/ack", ack_alert)
    app.router.add_get("/v1/health", _health)
    return app


# ------------------------------------------------------------------------------------------ hub → bureau (outbox)


def _xml(msg: Any, ctx: Context) -> bytes:
    el = ctx.body if ctx.body is not None else msg.to_element()
    return etree.tostring(el, xml_declaration=True, encoding="UTF-8")


def _queue(ctx: Context, target: str, body: bytes, incident: str | None = None) -> None:
    db: sqlite3.Connection = ctx.db
    db.execute(_OUTBOX)
    db.execute(
        "INSERT OR IGNORE INTO lb_outbox (message_id, target, service, sender_agency, sender_system, incident, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (ctx.message_id, target, ctx.service, ctx.sender.agency, ctx.sender.system, incident, body),
    )
    box: Outbox | None = _state.get("outbox")
    if box is not None:
        box.poke()


async def _to_desk(msg: Any, ctx: Context) -> None:
    el = ctx.body if ctx.body is not None else msg.to_element()
    fields = alert_fields(el)
    payload = alert_for_desk(
        ctx.message_id,
        ctx.service,
        (ctx.sender.agency, ctx.sender.system),
        {**fields, "urgency": ctx.urgency, "ref_to": ctx.ref_to},
        etree.tostring(el, encoding="unicode"),
    )
    _queue(ctx, "desk", json.dumps(payload, ensure_ascii=False).encode("utf-8"), fields.get("incident_number"))


@adapter.handles(EmergencyAlertV1)
async def on_alert(msg: EmergencyAlertV1, ctx: Context) -> None:
    await _to_desk(msg, ctx)


@adapter.handles(EmergencyUpdateV1)
async def on_update(msg: EmergencyUpdateV1, ctx: Context) -> None:
    await _to_desk(msg, ctx)


@adapter.handles(HubNoticeV1)
async def on_notice(msg: HubNoticeV1, ctx: Context) -> None:
    """The hub's process notices. An emergency one (an alert, update or closing the hub forwards because the sender
    left the bureau out, or resends because it was not acknowledged in time) goes to the duty desk with an ack_path
    keyed on its RefersTo (the id the acknowledgement must name); any other (催办 reminders …) to the inbox."""
    if ctx.sender.system != HUB_SYSTEM or (ctx.originator is not None and ctx.originator.system != HUB_SYSTEM):
        log.warning(
            "hub.notice not signed by the hub: dropped",
            extra={"system": SYSTEM, "message_id": ctx.message_id, "sender": str(ctx.sender)},
        )
        return  # (the hub takes no refusals: nothing goes back to it)
    el = ctx.body if ctx.body is not None else msg.to_element()
    if msg.kind.startswith("emergency-") and msg.refers_to:
        payload = notice_for_desk(
            ctx.message_id,
            (ctx.sender.agency, ctx.sender.system),
            msg,
            ctx.urgency,
            etree.tostring(el, encoding="unicode"),
        )
        _queue(ctx, "desk", json.dumps(payload, ensure_ascii=False).encode("utf-8"), msg.case_ref)
    else:
        _queue(ctx, "inbox", _xml(msg, ctx))


@adapter.handles(DocumentOfficialV1)
async def on_document(msg: DocumentOfficialV1, ctx: Context) -> None:
    _queue(ctx, "inbox", _xml(msg, ctx))


@adapter.handles(DocumentReceiptV1)
async def on_receipt(msg: DocumentReceiptV1, ctx: Context) -> None:
    _queue(ctx, "inbox", _xml(msg, ctx))


@adapter.handles(InfoReportV1)
async def on_report(msg: InfoReportV1, ctx: Context) -> None:
    _queue(ctx, "inbox", _xml(msg, ctx))


@adapter.handles(EmergencyAckV1)
async def on_ack(msg: EmergencyAckV1, ctx: Context) -> None:
    _queue(ctx, "inbox", _xml(msg, ctx))


class Outbox:
    """Delivers committed outbox rows (to the bureau's inbox or the duty desk's webhook) until they answer 2xx."""

    def __init__(self, path: str, c: Config) -> None:
        self.path, self.c = path, c
        self.db = StoreConnection(path, _OUTBOX, name="local-bureau-outbox-db")
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
            timeout=aiohttp.ClientTimeout(total=10), connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=16)
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="local-bureau-outbox")

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
                    "SELECT message_id, target, service, sender_agency, sender_system, body FROM lb_outbox"
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
                log.exception("outbox round failed", extra={"system": SYSTEM})
                await asyncio.sleep(self.delay)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.c.poll_interval)

    async def _deliver(self, mid: str, target: str, service: str, agency: str, system: str, body: bytes) -> bool:
        assert self._session is not None
        desk = target == "desk"
        url = self.c.desk_webhook_url if desk else self.c.inbox_url
        headers = {
            "Authorization": f"Bearer {self.c.desk_webhook_token if desk else self.c.inbox_token}",
            "X-Hub-Message-Id": mid,
            "X-Hub-Service": service,
            "X-Hub-Sender": f"{agency}/{system}",
            "Content-Type": "application/json; charset=utf-8" if desk else "application/xml; charset=utf-8",
        }
        fields = {"system": SYSTEM, "message_id": mid, "service": service}
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                ok, status = 200 <= resp.status < 300, resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("%s unreachable (%s)", target, type(exc).__name__, extra=fields)
            ok, status = False, 0
        if ok:
            await self.db.sql("UPDATE lb_outbox SET state = 'delivered' WHERE message_id = ?", (mid,))
        else:
            await self.db.sql("UPDATE lb_outbox SET attempts = attempts + 1 WHERE message_id = ?", (mid,))
            if status:
                log.warning("%s answered HTTP %s, retrying", target, status, extra=fields)
        return ok


# ------------------------------------------------------------------------------------------ start / stop


@adapter.on_startup
async def open_bureau_side() -> None:
    c = config()
    box = Outbox(_store_path(), c)
    await box.open()
    _state["outbox"] = box
    ssl_ctx = None
    if c.cert_file:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(c.cert_file, c.key_file)
    runner = web.AppRunner(build_app(c), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, c.listen_host, c.listen_port, ssl_context=ssl_ctx).start()
    _state["runner"] = runner
    log.info(
        "county bureau side open",
        extra={"system": SYSTEM, "listen": f"{c.listen_host}:{c.listen_port}", "tls": bool(ssl_ctx)},
    )


@adapter.on_shutdown
async def close_bureau_side() -> None:
    runner: web.AppRunner | None = _state.pop("runner", None)
    if runner is not None:
        await runner.cleanup()
    box: Outbox | None = _state.pop("outbox", None)
    if box is not None:
        await box.stop()
