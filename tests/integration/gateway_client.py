"""A gateway under test as its clients see it: the served URL, each system's client certificate, HTTPS sessions
that present it, and ``post`` of a signed envelope."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from gateway_certs import client_ssl_context

from hub.gateway import STATE

__all__ = ["XML", "Gateway", "post"]

XML = {"Content-Type": "application/xml"}


@dataclass
class Gateway:
    hub: Any
    runner: Any
    url: str
    pki_dir: Path
    certs: dict[str, tuple[Path, Path]]
    sessions: list[aiohttp.ClientSession]

    def session(self, system: str | None) -> aiohttp.ClientSession:
        """An HTTPS session presenting ``system``'s client certificate (None: no certificate); closed by the
        fixture."""
        cert, key = self.certs[system] if system is not None else (None, None)
        ctx = client_ssl_context(self.pki_dir, cert, key)
        s = aiohttp.ClientSession(self.url, connector=aiohttp.TCPConnector(ssl=ctx))
        self.sessions.append(s)
        return s

    @property
    def state(self) -> Any:
        return self.runner.app[STATE]


async def post(session: aiohttp.ClientSession, data: bytes) -> tuple[int, dict[str, str], bytes]:
    async with session.post("/v1/messages", data=data, headers=XML) as r:
        return r.status, dict(r.headers), await r.read()
