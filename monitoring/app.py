"""The ops page's aiohttp application (issue 15): ``create_app(settings)`` wires the frame — the PostgreSQL pool,
Jinja templates with autoescape, the static files, the security headers, the error pages — then the pages of
``monitoring.views.home`` and of every module in ``VIEW_MODULES`` that exists (each adds its routes with
``setup(app)``; a page that has not landed yet is skipped, as ``hub.cli`` does for commands).

Every response carries a strict Content-Security-Policy (no inline script or style, nothing from another origin:
every asset is served from ``monitoring/static``), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
no-referrer`` and, for pages, ``Cache-Control: no-store``. An error never shows a traceback: ``error.html`` with a
stable code and a sentence in Chinese and English (JSON under ``/api/``), and the exception goes to the log.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from hub.errors import DeliveryError
from hub.settings import Settings
from monitoring.auth import MESSAGES, PageError, current_session, lang_of, render

__all__ = ["POOL", "SECURE", "SETTINGS", "STATIC_DIR", "TEMPLATES_DIR", "VIEW_MODULES", "create_app"]

log = logging.getLogger("monitoring")

SETTINGS: Final = web.AppKey("settings", Settings)
POOL: Final[web.AppKey[Any]] = web.AppKey("pool")
SECURE: Final = web.AppKey("secure_cookies", bool)

TEMPLATES_DIR: Final[Path] = Path(__file__).parent / "templates"
STATIC_DIR: Final[Path] = Path(__file__).parent / "static"

VIEW_MODULES: Final[tuple[str, ...]] = (
    "monitoring.views.messages",
    "monitoring.views.quarantine",
    "monitoring.views.dead",
    "monitoring.views.certificates",
    "monitoring.views.directory",
    "monitoring.views.evidence",
    "monitoring.views.processes",
    "monitoring.metrics",
)

CSP: Final[str] = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"


def _error_response(request: web.Request, status: int, code: str, zh: str, en: str) -> web.Response:
    if request.path.startswith("/api/") or request.path in ("/metrics", "/health", "/ready"):
        return web.json_response({"code": code, "zh": zh, "en": en}, status=status)
    try:
        return render(request, "error.html", {"code": code, "zh": zh, "en": en, "status": status}, status=status)
    except Exception:  # the error page itself failed: plain text, still no traceback
        log.exception("cannot render the error page")
        return web.Response(text=f"{code}: {zh} · {en}\n", status=status, content_type="text/plain")


async def _who(request: web.Request) -> None:
    """Read the session for an error page of a route that did not (the nav bar then shows the operator's pages)."""
    if request.path.startswith(("/api/", "/static/")):
        return
    try:
        await current_session(request)
    except Exception:  # the database is down: the page shows no nav bar
        log.debug("no session for the error page", exc_info=True)


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure as a page with a code (see the module's docstring)."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except PageError as exc:
        return _error_response(request, exc.status, exc.code, exc.zh, exc.en)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "OPS_NOT_FOUND", 405: "OPS_METHOD"}.get(exc.status, "OPS_BAD_REQUEST")
        zh, en = MESSAGES[code]
        await _who(request)
        return _error_response(request, exc.status, code, zh, en)
    except DeliveryError as exc:
        log.warning("ops page: %s on %s", exc.describe(), request.path)
        return _error_response(request, 503, "OPS_STORE", *MESSAGES["OPS_STORE"])
    except Exception:
        log.exception("ops page: internal error on %s %s", request.method, request.path)
        return _error_response(request, 500, "OPS_INTERNAL", *MESSAGES["OPS_INTERNAL"])


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h["Content-Security-Policy"] = CSP
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["X-Frame-Options"] = "DENY"
    h["Content-Language"] = "en" if lang_of(request) == "en" else "zh-CN"
    if request.secure:
        h["Strict-Transport-Security"] = "max-age=31536000"
    if not request.path.startswith("/static/"):
        h["Cache-Control"] = "no-store"


async def _pool(app: web.Application) -> AsyncIterator[None]:
    """The pool opens no connection at start-up (``min_size=0``): the page starts while PostgreSQL is down, its
    pages answer 503 ``OPS_STORE`` until it is back, and ``/ready`` says why."""
    from hub.store.db import create_pool

    app[POOL] = await create_pool(app[SETTINGS].pg_dsn, min_size=0, max_size=8)
    try:
        yield
    finally:
        await app[POOL].close()


def create_app(settings: Settings, *, secure_cookies: bool = True) -> web.Application:
    """The ops page's application (``monitoring.server.start_ops`` serves it)."""
    from monitoring.views import home

    app = web.Application(middlewares=[errors], client_max_size=256 * 1024)
    app[SETTINGS] = settings
    app[SECURE] = secure_cookies
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(["html", "xml"], default_for_string=True, default=True),
        default_helpers=True,
    )
    app.cleanup_ctx.append(_pool)
    app.on_response_prepare.append(_headers)
    app.router.add_static("/static/", STATIC_DIR, name="static")
    home.setup(app)
    for name in VIEW_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that page has not landed yet
            raise
        module.setup(app)
    return app
