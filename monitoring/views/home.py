"""The frame's own pages: ``/login`` and ``/logout``, the overview (``/``: the charts are drawn by
``static/ops.js`` from ``GET /api/overview``, polled every 2 s), the administrator's ``/operators`` (add, unlock,
disable, change a role — never on one's own account) and the auditor's ``/audit`` (the operators' actions), and
``/lang`` (the language switch: a cookie, Chinese by default).

The login form carries a CSRF token of its own (a double-submit cookie, there being no session yet). A refused login
says the same thing whatever went wrong, so that it does not tell whether a name exists.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from hub import clock
from hub.store import operators as store
from monitoring import roles
from monitoring.app import POOL, SECURE
from monitoring.auth import (
    LANG_COOKIE,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    PageError,
    act,
    check_csrf,
    current_session,
    form_with_csrf,
    operator_of,
    render,
    require,
    session_cookie,
)
from monitoring.views import NOTICES, form_reason, printable, whole_number

__all__ = ["safe_next", "setup"]


def safe_next(target: str | None) -> str:
    """A local path to go back to after the login (anything else: ``/``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if len(target) > 2000 or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return "/"
    if target.startswith(("/login", "/logout")):
        return "/"
    return target


def see_other(location: str) -> web.Response:
    """A 303 redirect as a response (cookies can be set on it)."""
    return web.Response(status=303, headers={"Location": location})


def _field(form: Any, name: str, limit: int = 500) -> str:
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


# ============================================================================================== login


def _login_page(
    request: web.Request, *, error: bool = False, name: str = "", status: int = 200, next_path: str | None = None
) -> web.Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    zh, en = store.MESSAGES["OPS_LOGIN_FAILED"]
    response = render(
        request,
        "login.html",
        {
            "login_csrf": token,
            "next": safe_next(next_path if next_path is not None else request.query.get("next")),
            "error": {"code": "OPS_LOGIN_FAILED", "zh": zh, "en": en} if error else None,
            "name": name,
        },
        status=status,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=request.app[SECURE], path="/login"
    )
    return response


async def login_get(request: web.Request) -> web.StreamResponse:
    if await current_session(request) is not None:
        raise web.HTTPFound(safe_next(request.query.get("next")))
    return _login_page(request)


async def login_post(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    given = form.get("csrf")
    if not isinstance(given, str) or not check_csrf(request.cookies.get(LOGIN_CSRF_COOKIE), given):
        raise PageError(403, "OPS_CSRF")
    name = _field(form, "name", 64)
    password = form.get("password", "")
    if not isinstance(password, str) or len(password) > 1024:
        password = ""
    try:
        op = await store.login(request.app[POOL], name, password, via="web")
    except store.OperatorError:
        return _login_page(request, error=True, name=name, status=401, next_path=_field(form, "next", 2000))
    # A session this browser still holds (another operator's, or an earlier one) ends here: a login never leaves
    # the cookie's previous session alive behind the new one.
    previous = await current_session(request)
    if previous is not None:
        await store.close_session(
            request.app[POOL],
            request.cookies.get(SESSION_COOKIE, ""),
            role=previous.role,
            operator=previous.operator,
            via="web",
        )
    token, _ = await store.open_session(request.app[POOL], op.name)
    response = see_other(safe_next(_field(form, "next", 2000)))
    session_cookie(response, token, secure=request.app[SECURE])
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@require("view")
async def logout(request: web.Request) -> web.StreamResponse:
    await form_with_csrf(request)
    op = operator_of(request)
    await store.close_session(
        request.app[POOL], request.cookies.get(SESSION_COOKIE, ""), role=op.role, operator=op.name, via="web"
    )
    response = see_other("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def language(request: web.Request) -> web.StreamResponse:
    lang = "en" if request.query.get("to") == "en" else "zh"
    response = see_other(safe_next(request.query.get("next")))
    response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="Strict", secure=request.app[SECURE], path="/")
    return response


# ============================================================================================== overview


@require("view")
async def overview(request: web.Request) -> web.StreamResponse:
    has_api = any(r.get_info().get("path") == "/api/overview" for r in request.app.router.resources())
    return render(request, "overview.html", {"has_api": has_api})


# ============================================================================================== operators

#: What the auditor reads beside each action's code.
ACTIONS: dict[str, tuple[str, str]] = {
    "login": ("登录", "logged in"),
    "login.failed": ("登录失败", "login failed"),
    "login.locked": ("账号锁定", "account locked"),
    "logout": ("退出", "logged out"),
    "quarantine.release": ("隔离放行", "quarantine released"),
    "quarantine.reject": ("隔离驳回", "quarantine rejected"),
    "quarantine.decide": ("隔离审核（决定不明）", "quarantine decision (unknown)"),
    "dead.replay": ("死信重放", "dead letter replayed"),
    "cert.revoke": ("吊销证书", "certificate revoked"),
    "csr.approve": ("批准证书请求", "CSR approved"),
    "operator.add": ("新增操作员", "operator added"),
    "operator.unlock": ("解锁账号", "account unlocked"),
    "operator.disable": ("停用账号", "account disabled"),
    "operator.role": ("更改角色", "role changed"),
    "alarm.clear": ("解除流程告警", "process alarm cleared"),
}

#: The changes ``/operators/{name}/{what}`` makes: what → (action, the reason recorded when none is given).
CHANGES: dict[str, tuple[str, str]] = {
    "unlock": ("operator.unlock", "解锁账号"),
    "disable": ("operator.disable", "停用账号"),
    "role": ("operator.role", "更改角色"),
}

DONE: dict[str, tuple[str, str]] = {
    "add": ("已添加操作员", "operator added"),
    "unlock": ("已解锁", "unlocked"),
    "disable": ("已停用", "disabled"),
    "role": ("已更改角色", "role changed"),
}


@require("operators.manage")
async def operators_page(request: web.Request) -> web.StreamResponse:
    # What the redirect after a change names (an operator's name), shown only in that shape: a link cannot put
    # text into the notice.
    name = request.query.get("name", "")
    done = DONE.get(request.query.get("done", "")) if store.is_operator_name(name) else None
    return render(
        request,
        "operators.html",
        {
            "operators": await store.list_operators(request.app[POOL]),
            "now": clock.now(),
            "done": done,
            "done_name": name if done is not None else "",
            "role_names": store.ROLE_NAMES,
            "lock_minutes": store.LOCK_MINUTES,
            "lock_after": store.LOCK_AFTER,
        },
    )


def _refusal(exc: store.OperatorError) -> PageError:
    status = {"OPS_SELF_ACTION": 403, "OPS_NO_OPERATOR": 404, "OPS_EXISTS": 409}.get(exc.code, 400)
    return PageError(status, exc.code, exc.zh, exc.en)


async def _reason(request: web.Request, form: Any, default_zh: str, *, action: str, target: str) -> str:
    """The form's reason (``default_zh`` when blank); one the record cannot take as it is (a control character,
    longer than the form allows) is refused (400 ``OPS_BAD_REASON``) and the refusal recorded."""
    reason, refusal = form_reason(form)
    if refusal == "OPS_BAD_REASON":
        await act(request, action, reason=reason, target=target[:64], outcome="refused", detail={"code": refusal})
        raise PageError(400, refusal, *NOTICES[refusal])
    return reason or default_zh


@require("operators.manage")
async def operator_add(request: web.Request) -> web.StreamResponse:
    form = await form_with_csrf(request)
    op = operator_of(request)
    name = _field(form, "name", 64)
    password = form.get("password", "")
    reason = await _reason(request, form, "新增操作员", action="operator.add", target=name)
    try:
        await store.add_operator(
            request.app[POOL],
            name,
            role=_field(form, "role", 16),
            display_name=_field(form, "display_name", 64) or name,
            password=password if isinstance(password, str) else "",
            by=op.name,
            by_role=op.role,
            via="web",
            reason=reason,
        )
    except store.OperatorError as exc:
        raise _refusal(exc) from None
    raise web.HTTPSeeOther("/operators?" + urlencode({"done": "add", "name": name}))


@require("operators.manage")
async def operator_change(request: web.Request) -> web.StreamResponse:
    form = await form_with_csrf(request)
    op = operator_of(request)
    name, what = request.match_info["name"], request.match_info["what"]
    if what not in CHANGES:
        raise web.HTTPNotFound()
    action, default_reason = CHANGES[what]
    reason = await _reason(request, form, default_reason, action=action, target=name)
    pool = request.app[POOL]
    # A name that cannot be an operator's is refused by the store as OPS_NO_OPERATOR (recorded), never looked up.
    try:
        if what == "unlock":
            await store.unlock(pool, name, by=op.name, by_role=op.role, via="web", reason=reason)
        elif what == "disable":
            await store.disable(pool, name, by=op.name, by_role=op.role, via="web", reason=reason)
        else:
            await store.set_role(
                pool, name, _field(form, "role", 16), by=op.name, by_role=op.role, via="web", reason=reason
            )
    except store.OperatorError as exc:
        raise _refusal(exc) from None
    raise web.HTTPSeeOther("/operators?" + urlencode({"done": what, "name": name}))


# ============================================================================================== audit

AUDIT_BAD_OPERATOR: tuple[str, str] = (
    "筛选条件“操作员”含有控制字符，不是操作员名称。",
    "The operator filter holds a control character: it is no operator's name.",
)


@require("audit.view")
async def audit_page(request: web.Request) -> web.StreamResponse:
    from hub.store.audit import operator_actions

    who = request.query.get("operator", "").strip()[:64] or None
    # Any name the record holds (an operator's, or the name a failed login typed) is printable text; anything else
    # is no name to look for.
    if who is not None and not printable(who):
        raise PageError(400, "OPS_BAD_FILTER", *AUDIT_BAD_OPERATOR)
    before_raw = request.query.get("before", "")
    before = whole_number(before_raw)
    limit = 100
    actions = await operator_actions(request.app[POOL], operator=who, before_id=before, limit=limit)
    names = [o.name for o in await store.list_operators(request.app[POOL])]
    return render(
        request,
        "audit.html",
        {
            "actions": actions,
            "who": who or "",
            "names": names,
            "next_before": actions[-1].id if len(actions) == limit else None,
            "role_labels": dict(roles.ROLES),
            "action_labels": ACTIONS,
        },
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/login", login_get)
    app.router.add_post("/login", login_post)
    app.router.add_post("/logout", logout)
    app.router.add_get("/lang", language)
    app.router.add_get("/", overview)
    app.router.add_get("/operators", operators_page)
    app.router.add_post("/operators/add", operator_add)
    app.router.add_post("/operators/{name}/{what}", operator_change)
    app.router.add_get("/audit", audit_page)
