"""The ops page in a real headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright's async API).

One installation for the whole browser session: its own PostgreSQL database, state directory (the hub CA) and
RabbitMQ namespace, the demo directory, enrolled systems and an in-process worker (``tests/integration/harness.py``
``Hub``); the ops page's server certificate issued by the hub CA as ``hub pki issue-server`` does; the ops app served
over TLS in the tests' event loop; one operator of each role. Chromium trusts exactly that server key
(``--ignore-certificate-errors-spki-list``), so the page is a secure context as in production.

Fixtures (names stable: other browser test modules use them):
- ``ops`` → ``Ops``: ``.url``, ``.hub`` (the harness Hub), ``.settings``, ``.pool``, ``.operators`` (role → (name,
  password)), ``await .login(page, role)`` (the page, logged in on the overview), ``await .screenshot(page, name)``.
- ``browser`` (session) and ``page`` (a fresh context, so fresh cookies, per test).
- ``screenshot``: ``await screenshot(page, name)`` writes ``var/screenshots/<name>.png``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from harness import Hub

from hub.settings import PROJECT_ROOT, Settings

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = PROJECT_ROOT / "var" / "screenshots"

#: One operator of each role: role → (name, display name, password).
OPERATORS: dict[str, tuple[str, str, str]] = {
    "admin": ("admin", "王管理", "admin-Passw0rd-2026"),
    "security": ("security", "李保密", "security-Passw0rd-2026"),
    "auditor": ("auditor", "赵审计", "auditor-Passw0rd-2026"),
    "duty": ("duty", "张值班", "duty-Passw0rd-2026"),
}


async def screenshot(page: Any, name: str) -> Path:
    """A full-page PNG of ``page`` in ``var/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@dataclass
class Ops:
    url: str
    hub: Hub
    settings: Settings
    runner: Any
    operators: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def pool(self) -> Any:
        return self.hub.pool

    async def login(self, page: Any, role: str, *, password: str | None = None, goto: bool = True) -> Any:
        """Log ``page`` in as the operator of ``role`` through the login form (``goto=False``: the login form the page
        is on, e.g. after a redirect); returns the page, on the overview or the page the login came from."""
        name, good = self.operators[role]
        if goto:
            await page.goto(f"{self.url}/login")
        await page.fill("#name", name)
        await page.fill("#password", password or good)
        async with page.expect_navigation():
            await page.click("button[type=submit]")
        return page

    async def screenshot(self, page: Any, name: str) -> Path:
        return await screenshot(page, name)


@pytest.fixture(scope="session")
def ops_settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """An installation of the browser tests' own: a database, a state directory and a namespace."""
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "ops") as settings:
        yield settings


def _spki_pin(cert_pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the first certificate in ``cert_pem`` (Chromium's pin format)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


@pytest.fixture(scope="session")
async def ops(ops_settings: Settings) -> AsyncIterator[Ops]:
    from hub.commands import trust_admin as admin
    from hub.store import operators as store
    from monitoring.server import default_cert_paths, start_ops

    settings = ops_settings
    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()
    cert, _ = default_cert_paths(settings)
    await admin.issue_server(settings, settings.state_dir / "pki", ["127.0.0.1", "localhost"], out_dir=cert.parent)
    runner = await start_ops(settings, host="127.0.0.1", port=0)
    port = runner.addresses[0][1]
    o = Ops(f"https://127.0.0.1:{port}", hub, settings, runner)
    for role, (name, display, password) in OPERATORS.items():
        await store.add_operator(
            hub.pool, name, role=role, display_name=display, password=password, by="tests", by_role="-", via="cli"
        )
        o.operators[role] = (name, password)
    try:
        yield o
    finally:
        await runner.cleanup()
        await hub.close()


@pytest.fixture(scope="session")
async def browser(ops: Ops) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    from hub.trust.pki import PkiPaths
    from monitoring.server import default_cert_paths

    pin = _spki_pin(default_cert_paths(ops.settings)[0])
    # page.request (Playwright's own HTTP client, in its Node driver) trusts the hub root as well
    previous = os.environ.get("NODE_EXTRA_CA_CERTS")
    os.environ["NODE_EXTRA_CA_CERTS"] = str(PkiPaths(ops.settings.state_dir / "pki").root_cert)
    try:
        pw = await async_playwright().start()
    finally:
        if previous is None:
            del os.environ["NODE_EXTRA_CA_CERTS"]
        else:
            os.environ["NODE_EXTRA_CA_CERTS"] = previous
    try:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", f"--ignore-certificate-errors-spki-list={pin}"]
        )
        try:
            yield b
        finally:
            await b.close()
    finally:
        await pw.stop()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A page in a fresh browser context (no cookies), Chinese by default."""
    context = await browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 900})
    p = await context.new_page()
    try:
        yield p
    finally:
        await context.close()


@pytest.fixture(name="screenshot")
def screenshot_fixture() -> Callable[[Any, str], Awaitable[Path]]:
    return screenshot
