"""Serving the ops page: ``start_ops`` (tests, ``hub ops``, the demo) and ``ops_ssl_context``.

The page is served over HTTPS with a server certificate of the hub CA (``hub pki issue-server --host … --out-dir
<state>/pki/ops``), TLS 1.2 or newer and no client certificate (operators log in with a password). Plain HTTP is
only for a loopback address (``hub ops --plain-http``), and then the session cookie is not marked Secure.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from aiohttp import web

from hub.errors import ConfigError
from hub.settings import Settings

__all__ = ["default_cert_paths", "ops_ssl_context", "start_ops"]


def default_cert_paths(settings: Settings) -> tuple[Path, Path]:
    """``<state>/pki/ops/server.pem`` and ``server.key``."""
    folder = Path(settings.state_dir) / "pki" / "ops"
    return folder / "server.pem", folder / "server.key"


def ops_ssl_context(cert: Path, key: Path, *, key_password: str | None = None) -> ssl.SSLContext:
    """The server context (a missing file or a key that does not load: ``ConfigError`` naming the command)."""
    for f in (cert, key):
        if not Path(f).is_file():
            raise ConfigError(
                f"the ops page needs its server certificate {f}: issue it with "
                f"`hub pki issue-server --host 127.0.0.1 --out-dir {Path(cert).parent}` (or give --cert and --key)"
            )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.load_cert_chain(str(cert), str(key), password=key_password or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load the ops page's server certificate and key: {exc}") from None
    return ctx


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def start_ops(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    cert: Path | None = None,
    key: Path | None = None,
    plain_http: bool = False,
) -> web.AppRunner:
    """Serve the ops page on ``host``:``port`` (0: any free port; ``runner.addresses`` says which) over HTTPS with
    ``cert``/``key`` (default: ``default_cert_paths``); ``await runner.cleanup()`` stops it."""
    from monitoring.app import create_app

    ssl_context: ssl.SSLContext | None = None
    if plain_http:
        if not _loopback(host):
            raise ConfigError("plain HTTP is allowed on a loopback address only (127.0.0.1, ::1, localhost)")
    else:
        default_cert, default_key = default_cert_paths(settings)
        ssl_context = ops_ssl_context(cert or default_cert, key or default_key, key_password=settings.ca_passphrase)
    runner = web.AppRunner(
        create_app(settings, secure_cookies=ssl_context is not None), access_log=None, shutdown_timeout=5.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
