"""The demo's operators on the ops page: a small HTTPS client that logs in as one of the demo accounts and uses the
page as a browser would (its forms and their CSRF tokens, its session cookie), so the scenario's operator steps go
through the same handlers, role checks and records as a person at the page."""

from __future__ import annotations

import json
import re
import ssl
from pathlib import Path
from typing import Any

import aiohttp

_CSRF = re.compile(r'name="csrf"\s+value="([^"]+)"')


class OpsPage:
    """``async with OpsPage(url, root_ca) as page: await page.login(name, password)``; then ``get`` and ``post``."""

    def __init__(self, url: str, root_ca: Path) -> None:
        self.url = url.rstrip("/")
        self._tls = ssl.create_default_context(cafile=str(root_ca))
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OpsPage:
        # unsafe=True: the page is at 127.0.0.1, and aiohttp's jar otherwise keeps no cookies for an IP address.
        self.http = aiohttp.ClientSession(
            self.url, connector=aiohttp.TCPConnector(ssl=self._tls), cookie_jar=aiohttp.CookieJar(unsafe=True)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()

    async def get(self, path: str, **params: str) -> tuple[int, str]:
        assert self.http is not None
        async with self.http.get(path, params=params, allow_redirects=False) as r:
            return r.status, await r.text()

    async def csrf(self, path: str) -> str:
        """The CSRF token of the form on the page at ``path``."""
        status, text = await self.get(path)
        found = _CSRF.search(text)
        if status != 200 or found is None:
            raise RuntimeError(f"GET {path}: {status}, no form with a CSRF token")
        return found.group(1)

    async def post(self, path: str, form: dict[str, str], *, form_page: str) -> tuple[int, str, str]:
        """POST ``form`` with the CSRF token of the page at ``form_page``; (status, Location, body)."""
        assert self.http is not None
        data = {**form, "csrf": await self.csrf(form_page)}
        async with self.http.post(path, data=data, allow_redirects=False) as r:
            return r.status, r.headers.get("Location", ""), await r.text()

    async def login(self, name: str, password: str) -> None:
        status, _, _ = await self.post("/login", {"name": name, "password": password}, form_page="/login")
        if status != 303:
            raise RuntimeError(f"{name} could not log in to the ops page ({status})")

    async def json(self, path: str) -> tuple[int, Any]:
        status, text = await self.get(path)
        return status, json.loads(text)
