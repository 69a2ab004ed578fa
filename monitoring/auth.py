"""Who is asking, and may they: sessions, permissions, CSRF, the record of actions, and rendering (issue 15).

- ``@require("perm")`` wraps a handler: no session → 302 to ``/login?next=…`` (``/api/…``: 401 JSON); a session
  whose role lacks the permission → 403 ``OPS_FORBIDDEN`` naming the roles that hold it. It sets
  ``request[OPERATOR]`` (``Operator``; ``operator_of(request)``) and ``request[SESSION]`` (typed request keys).
- ``form_with_csrf(request)``: the POST form, after checking its ``csrf`` field against the session's token in
  constant time (missing or wrong → 403 ``OPS_CSRF``). Every POST handler calls it first.
- ``act(request, action, …)``: ``hub.store.audit.record_operator_action`` with the request's operator, via web.
- ``render(request, template, context)``: the template (autoescaped) with ``operator``, ``csrf``, ``lang``,
  ``t(zh, en)``, ``perms``, ``nav`` and ``roles`` in its context.
- ``PageError`` / ``refuse(status, code, zh, en)``: an error page (``error.html``: the code and a sentence in both
  languages; JSON under ``/api/``), raised anywhere in a handler and drawn by ``monitoring.app``'s middleware.

The session cookie (``SESSION_COOKIE``) holds a random token whose SHA-256 is stored (``hub.store.operators``);
it is HttpOnly, SameSite=Strict, and Secure when the page is served over TLS.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from monitoring import roles

__all__ = [
    "LANG_COOKIE",
    "OPERATOR",
    "SESSION",
    "SESSION_COOKIE",
    "Operator",
    "PageError",
    "act",
    "check_csrf",
    "current_session",
    "form_with_csrf",
    "lang_of",
    "operator_of",
    "refuse",
    "render",
    "require",
    "session_cookie",
]

SESSION_COOKIE: Final[str] = "ops_session"
LOGIN_CSRF_COOKIE: Final[str] = "ops_login_csrf"
LANG_COOKIE: Final[str] = "lang"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The frame's own codes → (中文, English).
MESSAGES: Final[dict[str, tuple[str, str]]] = {
    "OPS_CSRF": (
        "表单缺少有效的防伪令牌（CSRF），请求已拒绝。请重新打开页面再提交。",
        "The form carries no valid anti-forgery (CSRF) token; the request was refused. Reopen the page, submit again.",
    ),
    "OPS_FORBIDDEN": ("您的角色无权执行此操作或查看此页面。", "Your role may not view this page or take this action."),
    "OPS_NO_SESSION": ("未登录或会话已过期，请重新登录。", "Not logged in, or the session expired: log in again."),
    "OPS_NOT_FOUND": ("没有这个页面。", "There is no such page."),
    "OPS_METHOD": ("该页面不支持此请求方法。", "This page does not accept that request method."),
    "OPS_BAD_REQUEST": ("请求不合规。", "The request is malformed."),
    "OPS_STORE": ("数据库暂时不可用，请稍后重试。", "The database is unavailable for now; try again shortly."),
    "OPS_INTERNAL": ("运维页面内部错误，已记录日志。", "Internal error of the ops page; it was logged."),
}


#: What a refusal for a missing reason records as its reason (the record requires one).
NO_REASON: Final[str] = "（未填写理由 · no reason given）"
#: The most of a reason ``act`` records (a refused form may have sent more than the forms allow).
RECORDED_REASON_MAX: Final[int] = 2000


@dataclass(frozen=True)
class Operator:
    name: str
    display_name: str
    role: str


#: The operator ``@require`` admitted, and the request's session (``hub.store.operators.Session`` or None), set once
#: per request by ``current_session``.
OPERATOR: Final = web.RequestKey("operator", Operator)
SESSION: Final[web.RequestKey[Any]] = web.RequestKey("session", object)


class PageError(Exception):
    """An error page: HTTP ``status``, a stable ``code``, a sentence in Chinese and in English."""

    def __init__(self, status: int, code: str, zh: str | None = None, en: str | None = None) -> None:
        known = MESSAGES.get(code, (code, code))
        self.status, self.code = status, code
        self.zh, self.en = zh or known[0], en or known[1]
        super().__init__(f"{code}: {self.en}")


def refuse(status: int, code: str, zh: str | None = None, en: str | None = None) -> PageError:
    """``raise refuse(403, "OPS_…", "中文", "English")``."""
    return PageError(status, code, zh, en)


def lang_of(request: web.Request) -> str:
    """``en`` when the language cookie says so; Chinese otherwise."""
    return "en" if request.cookies.get(LANG_COOKIE) == "en" else "zh"


def session_cookie(response: web.StreamResponse, token: str, *, secure: bool) -> None:
    """Set the session cookie: HttpOnly, SameSite=Strict, Secure over TLS; a browser-session cookie (the store
    decides the expiry)."""
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict", secure=secure, path="/")


def check_csrf(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; an empty or missing token never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


async def current_session(request: web.Request) -> Any:
    """The request's live session (``hub.store.operators.Session``) or None; read once per request. Requests under
    ``/api/`` do not push the session's idle expiry on."""
    if SESSION in request:
        return request[SESSION]
    from hub.store import operators
    from monitoring.app import POOL

    token = request.cookies.get(SESSION_COOKIE, "")
    # A JSON endpoint is what an open page polls (the overview, every 2 s): it does not count as activity, or an
    # unattended browser would never reach the idle expiry.
    touch = not request.path.startswith("/api/")
    found = await operators.session(request.app[POOL], token, touch=touch) if token else None
    request[SESSION] = found
    if found is not None:
        request[OPERATOR] = Operator(found.operator, found.display_name, found.role)
    return found


def operator_of(request: web.Request) -> Operator:
    """The operator ``@require`` admitted."""
    return request[OPERATOR]


def _needs(permission: str) -> tuple[str, str]:
    holders = roles.roles_with(permission)
    return (
        "需要角色：" + "、".join(roles.ROLES[r][0] for r in holders),
        "needs the role: " + ", ".join(roles.ROLES[r][1] for r in holders),
    )


def require(permission: str) -> Callable[[Handler], Handler]:
    """Only an operator whose role holds ``permission`` gets through (see the module's docstring)."""
    if permission not in roles.PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            found = await current_session(request)
            if found is None:
                if request.path.startswith("/api/"):
                    zh, en = MESSAGES["OPS_NO_SESSION"]
                    return web.json_response({"code": "OPS_NO_SESSION", "zh": zh, "en": en}, status=401)
                target = request.path_qs if request.method == "GET" else "/"
                raise web.HTTPFound(f"/login?{_query({'next': target})}")
            if not roles.allowed(found.role, permission):
                zh, en = _needs(permission)
                raise PageError(
                    403,
                    "OPS_FORBIDDEN",
                    f"{MESSAGES['OPS_FORBIDDEN'][0]}{zh}。",
                    f"{MESSAGES['OPS_FORBIDDEN'][1]} It {en}.",
                )
            return await handler(request)

        return guarded

    return wrap


def _query(params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


async def form_with_csrf(request: web.Request) -> MultiDictProxy[str | bytes | Any]:
    """The POST form once its ``csrf`` field matches the session's token (else 403 ``OPS_CSRF``)."""
    form = await request.post()
    found = await current_session(request)
    given = form.get("csrf")
    if found is None or not isinstance(given, str) or not check_csrf(found.csrf, given):
        raise PageError(403, "OPS_CSRF")
    return form


async def act(
    request: web.Request,
    action: str,
    *,
    reason: str,
    target: str | None = None,
    message_id: str | None = None,
    outcome: str = "done",
    detail: dict[str, Any] | None = None,
    conn: Any = None,
) -> int:
    """Record what the request's operator did (``hub.store.audit.record_operator_action``, via web); ``conn``: the
    transaction of the change. A refusal is recorded whatever the form held: a blank reason is recorded as
    ``NO_REASON``, NUL characters (which PostgreSQL's text refuses) are dropped from the reason and target, and a
    reason is recorded up to ``RECORDED_REASON_MAX`` characters (the forms take 500: only a refused one is cut)."""
    from hub.store.audit import record_operator_action
    from monitoring.app import POOL

    op = operator_of(request)
    return await record_operator_action(
        conn if conn is not None else request.app[POOL],
        operator=op.name,
        role=op.role,
        action=action,
        via="web",
        reason=reason.replace("\x00", "").strip()[:RECORDED_REASON_MAX] or NO_REASON,
        target=None if target is None else target.replace("\x00", "")[:128],
        message_id=message_id,
        outcome=outcome,  # type: ignore[arg-type]
        detail=detail,
    )


#: The nav bar: (path, 中文, English, permission), shown when the page exists and the role may view it.
NAV: Final[tuple[tuple[str, str, str, str], ...]] = (
    ("/", "概览", "Overview", "view"),
    ("/messages", "检索", "Search", "view"),
    ("/quarantine", "隔离审核", "Quarantine", "view"),
    ("/dead", "死信", "Dead letters", "view"),
    ("/processes", "流程告警", "Process alarms", "view"),
    ("/certificates", "证书", "Certificates", "view"),
    ("/directory", "目录与路由", "Directory & routes", "view"),
    ("/evidence", "证据链", "Evidence chain", "view"),
    ("/operators", "操作员", "Operators", "operators.manage"),
    ("/audit", "操作审计", "Audit", "audit.view"),
)


def _routed(app: web.Application) -> frozenset[str]:
    paths = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if isinstance(path, str):
            paths.add(path)
    return frozenset(paths)


def render(
    request: web.Request, template: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> web.Response:
    """The template rendered with the frame's context (see the module's docstring)."""
    lang = lang_of(request)
    found = request.get(SESSION)
    op = request.get(OPERATOR)
    perms = roles.permissions_of(op.role) if op is not None else frozenset()
    routed = _routed(request.app)
    nav = [
        {
            "path": p,
            "label": en if lang == "en" else zh,
            "active": request.path == p or (p != "/" and request.path.startswith(p + "/")),
        }
        for p, zh, en, perm in NAV
        if perm in perms and p in routed
    ]

    def t(zh: str, en: str) -> str:
        return en if lang == "en" else zh

    full: dict[str, Any] = {
        "operator": op,
        "role_label": t(*roles.ROLES[op.role]) if op is not None and op.role in roles.ROLES else "",
        "csrf": found.csrf if found is not None else "",
        "lang": lang,
        "t": t,
        "perms": perms,
        "nav": nav,
        "roles": roles.ROLES,
        "path_qs": request.path_qs,
    }
    full.update(context or {})
    return aiohttp_jinja2.render_template(template, request, full, status=status)
