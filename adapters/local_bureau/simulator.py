"""The simulated county bureau (汪清县林业局): its office system's inbox and its duty desk, following README.md.

- ``POST /bureau/inbox`` (bearer ``inbox_token``): documents, receipts, reports, acknowledgements (XML), recorded by
  ``X-Hub-Message-Id``; an id seen before is answered 200 again and counted in ``duplicates``.
- ``POST /desk/webhook`` (bearer ``desk_token``): alerts (JSON), recorded the same way (``desk``,
  ``desk_duplicates``). With ``auto_ack`` the desk acknowledges each new alert: ``POST {adapter}/v1/alerts/{id}/ack``,
  retried until 2xx (the desk's side of the contract).
- ``down()`` / ``up()``: both endpoints answer 503 while down.
- ``push(...)``: the bureau's office system pushing ``POST /v1/messages``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


@dataclass
class Received:
    message_id: str
    service: str
    sender: str
    body: bytes


@dataclass
class CountyBureau:
    host: str = "127.0.0.1"
    port: int = 0
    inbox_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    desk_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    inbox: dict[str, Received] = field(default_factory=dict)
    desk: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    desk_duplicates: int = 0
    refused_while_down: int = 0
    is_down: bool = False
    #: set to the adapter's base URL (and its desk token) to have the desk acknowledge every new alert
    auto_ack: str | None = None
    adapter_desk_token: str = ""
    ssl_ctx: ssl.SSLContext | None = None
    acked: dict[str, str] = field(default_factory=dict)  # alert id → outcome of the ack POST
    _runner: web.AppRunner | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _session: aiohttp.ClientSession | None = None

    @property
    def inbox_url(self) -> str:
        return f"http://{self.host}:{self.port}/bureau/inbox"

    @property
    def desk_url(self) -> str:
        return f"http://{self.host}:{self.port}/desk/webhook"

    async def start(self) -> None:
        if not self.port:
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/bureau/inbox", self._inbox)
        app.router.add_post("/desk/webhook", self._desk)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def down(self) -> None:
        self.is_down = True

    def up(self) -> None:
        self.is_down = False

    def _refuse(self, request: web.Request, token: str) -> web.Response | None:
        if self.is_down:
            self.refused_while_down += 1
            return web.json_response({"code": "LB_DOWN", "title": "系统维护中", "reason": "maintenance"}, status=503)
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
            return web.json_response(
                {"code": "LB_UNAUTHORIZED", "title": "令牌无效", "reason": "bad token"}, status=401
            )
        if not request.headers.get("X-Hub-Message-Id"):
            return web.json_response({"code": "LB_NO_ID", "title": "缺少报文标识", "reason": "no id"}, status=400)
        return None

    async def _inbox(self, request: web.Request) -> web.Response:
        refused = self._refuse(request, self.inbox_token)
        if refused is not None:
            return refused
        mid = request.headers["X-Hub-Message-Id"]
        body = await request.read()
        if mid in self.inbox:
            self.duplicates += 1
        else:
            h = request.headers
            self.inbox[mid] = Received(mid, h.get("X-Hub-Service", ""), h.get("X-Hub-Sender", ""), body)
        return web.json_response({"message_id": mid, "status": "received"})

    async def _desk(self, request: web.Request) -> web.Response:
        refused = self._refuse(request, self.desk_token)
        if refused is not None:
            return refused
        mid = request.headers["X-Hub-Message-Id"]
        alert = json.loads(await request.read())
        if mid in self.desk:
            self.desk_duplicates += 1
        else:
            self.desk[mid] = alert
            if self.auto_ack and alert.get("service") == "emergency.alert":
                t = asyncio.get_running_loop().create_task(self._ack_until_done(mid))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
        return web.json_response({"message_id": mid, "status": "received"})

    async def _ack_until_done(self, alert_id: str) -> None:
        payload = {
            "response": "responding",
            "duty_officer": "李明",
            "phone": "0433-8222119",
            "note": "已收到，正在核实。",
        }
        while True:
            status, answer = await ack(
                str(self.auto_ack),
                self.adapter_desk_token,
                alert_id,
                payload,
                ssl_ctx=self.ssl_ctx,
                session=self._session,
            )
            if status == 200:
                self.acked[alert_id] = answer["outcome"]
                return
            await asyncio.sleep(0.2)


async def _post(
    url: str, token: str, data: bytes, ssl_ctx: ssl.SSLContext | None, session: aiohttp.ClientSession | None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=utf-8"}
    own = session is None
    s = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        async with s.post(url, data=data, headers=headers, ssl=ssl_ctx or True) as resp:
            return resp.status, await resp.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return 0, None
    finally:
        if own:
            await s.close()


async def push(
    url: str,
    token: str,
    payload: Any,
    *,
    raw: bytes | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
    session: aiohttp.ClientSession | None = None,
) -> tuple[int, Any]:
    """The bureau's system pushes: ``POST {url}/v1/messages``. Returns (HTTP status or 0 if unreachable, JSON)."""
    data = raw if raw is not None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return await _post(url.rstrip("/") + "/v1/messages", token, data, ssl_ctx, session)


async def ack(
    url: str,
    token: str,
    alert_id: str,
    payload: Any,
    *,
    ssl_ctx: ssl.SSLContext | None = None,
    session: aiohttp.ClientSession | None = None,
) -> tuple[int, Any]:
    """The duty desk acknowledges: ``POST {url}/v1/alerts/{alert_id}/ack``."""
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return await _post(url.rstrip("/") + f"/v1/alerts/{alert_id}/ack", token, data, ssl_ctx, session)


RECEIPT_NS = "urn:forestry-hub:document.receipt:1"


def receipt_push(ext_id: str, document_message_id: str, to_agency: str, to_system: str, status: str) -> dict[str, Any]:
    """The bureau signs for (签收 received / 阅读 read / 办结 done) a document it got: a document.receipt push."""
    body = (
        f'<r:DocumentReceipt xmlns:r="{RECEIPT_NS}"><r:DocumentMessageId>{document_message_id}</r:DocumentMessageId>'
        f"<r:RecipientAgencyCode>11222424014107528Y</r:RecipientAgencyCode><r:Status>{status}</r:Status>"
        f"<r:At>2026-12-04T21:00:00+08:00</r:At><r:Handler>汪清县林业局办公室</r:Handler></r:DocumentReceipt>"
    )
    return {
        "id": ext_id,
        "service": "document.receipt",
        "to": {"agencies": [{"agency_code": to_agency, "system": to_system}]},
        "ref_to": document_message_id,
        "body_xml": body,
    }


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)
