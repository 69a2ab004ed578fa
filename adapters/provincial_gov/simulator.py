"""The simulated provincial OA (省政府办公厅公文交换系统), following the contract in README.md.

- ``callback``: ``POST /oa/callback`` (bearer ``callback_token``) records each message by ``X-Hub-Message-Id``;
  a message id seen before is answered 200 again and counted in ``duplicates`` (the contract's dedup).
- ``down()`` / ``up()``: the callback answers 503 while down (the OA "down for a while").
- ``push(doc)``: the OA's side of ``POST /v1/documents`` against the adapter (returns status and JSON answer).
"""

from __future__ import annotations

import asyncio
import hmac
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
class ProvincialOA:
    host: str = "127.0.0.1"
    port: int = 0
    callback_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    received: dict[str, Received] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    duplicates: int = 0
    refused_while_down: int = 0
    is_down: bool = False
    _runner: web.AppRunner | None = None

    @property
    def callback_url(self) -> str:
        return f"http://{self.host}:{self.port}/oa/callback"

    async def start(self) -> None:
        if not self.port:
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/oa/callback", self._callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def down(self) -> None:
        self.is_down = True

    def up(self) -> None:
        self.is_down = False

    async def _callback(self, request: web.Request) -> web.Response:
        if self.is_down:
            self.refused_while_down += 1
            return web.json_response({"code": "OA_DOWN", "title": "系统维护中", "reason": "maintenance"}, status=503)
        if not hmac.compare_digest(
            request.headers.get("Authorization", "").encode(), f"Bearer {self.callback_token}".encode()
        ):
            return web.json_response(
                {"code": "OA_UNAUTHORIZED", "title": "令牌无效", "reason": "bad token"}, status=401
            )
        mid = request.headers.get("X-Hub-Message-Id", "")
        if not mid:
            return web.json_response({"code": "OA_NO_ID", "title": "缺少报文标识", "reason": "no id"}, status=400)
        body = await request.read()
        if mid in self.received:
            self.duplicates += 1
        else:
            self.received[mid] = Received(
                mid, request.headers.get("X-Hub-Service", ""), request.headers.get("X-Hub-Sender", ""), body
            )
            self.order.append(mid)
        return web.json_response({"message_id": mid, "status": "received"})

    def of_service(self, prefix: str) -> list[Received]:
        return [r for r in self.received.values() if r.service.startswith(prefix)]


async def push(
    url: str,
    token: str,
    payload: Any,
    *,
    raw: bytes | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
    session: aiohttp.ClientSession | None = None,
) -> tuple[int, Any]:
    """The OA pushes a document: ``POST {url}/v1/documents``. Returns (HTTP status, decoded JSON answer)."""
    import json

    data = raw if raw is not None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=utf-8"}
    own = session is None
    s = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        async with s.post(url.rstrip("/") + "/v1/documents", data=data, headers=headers, ssl=ssl_ctx or True) as resp:
            return resp.status, await resp.json(content_type=None)
    finally:
        if own:
            await s.close()


def notice(document_id: str, *, groups: list[str] | None = None, agencies: list[str] | None = None) -> dict[str, Any]:
    """A typical notice of the provincial government (吉政发) in the contract's JSON."""
    return {
        "document_id": document_id,
        "to": {"agencies": agencies or [], "groups": ["local-bureaus"] if groups is None else groups},
        "urgency": "加急",
        "document": {
            "kind": "通知",
            "issuer_mark": "吉林省人民政府文件",
            "document_number": "吉政发〔2026〕21号",
            "title": "吉林省人民政府关于做好2026年冬春森林草原防火工作的通知",
            "main_recipients": [{"name": "各市（州）、县（市）林业主管部门", "agency_code": "11220000013544357T"}],
            "paragraphs": ["请各地严格落实森林草原防火责任制，加强巡护和火源管理。", "具体要求见附件。"],
            "issuing_agencies": [{"name": "吉林省人民政府", "agency_code": "112200000135440012"}],
            "document_date": "2026-12-04",
            "attachments": [
                {
                    "file_name": "防火工作要点.txt",
                    "media_type": "text/plain",
                    "content_base64": "5LiA44CB5Yqg5by65beh5oqk44CC",
                }
            ],
        },
    }


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)
