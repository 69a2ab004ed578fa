"""The ops page's access rules without services: the roles table (三员分立 plus duty), the permission check and its
redirects, CSRF comparison, cookie flags, the security headers, safe redirects after login, and autoescaping."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from hub.settings import Settings
from monitoring import auth, roles
from monitoring.views.home import safe_next


def test_the_roles_table_is_the_plans() -> None:
    assert set(roles.ROLES) == {"admin", "security", "auditor", "duty"}
    assert roles.ROLES["admin"][0] == "系统管理员" and roles.ROLES["security"][0] == "安全保密管理员"
    assert roles.ROLES["auditor"][0] == "安全审计员" and roles.ROLES["duty"][0] == "值班员"
    expected = {
        "view": {"admin", "security", "auditor", "duty"},
        "message.xml": {"security", "duty"},
        "quarantine.decide": {"security"},
        "dead.replay": {"duty", "admin"},
        "alarm.clear": {"duty", "admin"},
        "cert.revoke": {"security"},
        "csr.approve": {"security"},
        "operators.manage": {"admin"},
        "audit.view": {"auditor"},
    }
    assert {p: set(r) for p, r in roles.PERMISSIONS.items()} == expected
    # 三员分立: the administrator, the security officer and the auditor share no power but viewing
    powers = {r: roles.permissions_of(r) - {"view"} for r in ("admin", "security", "auditor")}
    assert not (powers["admin"] & powers["security"]) and not (powers["admin"] & powers["auditor"])
    assert not (powers["security"] & powers["auditor"])
    assert roles.allowed("duty", "dead.replay") and not roles.allowed("duty", "quarantine.decide")
    assert not roles.allowed("admin", "no.such.permission") and not roles.allowed("root", "view")
    assert roles.roles_with("dead.replay") == ["admin", "duty"]


def test_csrf_comparison() -> None:
    assert auth.check_csrf("abc", "abc")
    assert not auth.check_csrf("abc", "abd") and not auth.check_csrf("abc", "ab")
    assert not auth.check_csrf("", "") and not auth.check_csrf(None, None) and not auth.check_csrf("abc", None)
    assert not auth.check_csrf(None, "abc")


@pytest.mark.parametrize("secure", [True, False])
def test_session_cookie_flags(secure: bool) -> None:
    response = web.Response()
    auth.session_cookie(response, "tok", secure=secure)
    morsel = response.cookies[auth.SESSION_COOKIE]
    assert morsel.value == "tok" and morsel["httponly"] is True and morsel["samesite"] == "Strict"
    assert morsel["path"] == "/" and bool(morsel["secure"]) is secure
    assert not morsel.get("max-age") and not morsel.get("expires")  # a browser-session cookie: the store decides
    header = response.cookies.output()
    assert "HttpOnly" in header and "SameSite=Strict" in header and ("Secure" in header) is secure


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/messages?sender=x", "/messages?sender=x"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/login?next=/x", "/"),
        ("/logout", "/"),
        ("/x\r\nSet-Cookie: a=b", "/"),
        ("/x y", "/"),
        ("/" + "a" * 3000, "/"),
    ],
)
def test_safe_next(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def _request(path: str, role: str | None, method: str = "GET") -> web.Request:
    request = make_mocked_request(method, path)
    session = None if role is None else SimpleNamespace(operator="op", display_name="操作员", role=role, csrf="c")
    request[auth.SESSION] = session
    if session is not None:
        request[auth.OPERATOR] = auth.Operator("op", "操作员", role)
    return request


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def test_require_redirects_refuses_and_admits() -> None:
    guarded = auth.require("audit.view")(_ok)
    with pytest.raises(web.HTTPFound) as redirect:
        await guarded(_request("/audit?operator=x", None))
    assert redirect.value.location == "/login?next=%2Faudit%3Foperator%3Dx"

    api = await auth.require("view")(_ok)(_request("/api/overview", None))
    assert api.status == 401 and isinstance(api, web.Response) and b"OPS_NO_SESSION" in (api.body or b"")

    with pytest.raises(auth.PageError) as refused:
        await guarded(_request("/audit", "duty"))
    assert refused.value.status == 403 and refused.value.code == "OPS_FORBIDDEN"
    assert "安全审计员" in refused.value.zh and "Auditor" in refused.value.en

    admitted = await guarded(_request("/audit", "auditor"))
    assert isinstance(admitted, web.Response) and admitted.text == "ok"

    with pytest.raises(ValueError, match="unknown permission"):
        auth.require("everything")


async def test_security_headers_on_every_response() -> None:
    from monitoring.app import _headers

    for path in ("/", "/static/ops.js", "/login"):
        response = web.Response()
        await _headers(_request(path, None), response)
        h = response.headers
        assert h["Content-Security-Policy"].startswith("default-src 'self'; frame-ancestors 'none'")
        assert "unsafe-inline" not in h["Content-Security-Policy"]
        assert h["X-Content-Type-Options"] == "nosniff" and h["Referrer-Policy"] == "no-referrer"
        assert (h.get("Cache-Control") == "no-store") is (not path.startswith("/static/"))


def test_the_app_wires_the_frame_and_autoescapes() -> None:
    import aiohttp_jinja2

    from monitoring.app import SETTINGS, VIEW_MODULES, create_app

    app = create_app(Settings(), secure_cookies=True)
    assert app[SETTINGS] == Settings()
    paths = {r.get_info().get("path") or r.get_info().get("formatter") for r in app.router.resources()}
    assert {"/login", "/logout", "/", "/operators", "/audit", "/lang"} <= paths
    assert VIEW_MODULES[-1] == "monitoring.metrics" and len(VIEW_MODULES) == 8
    env = aiohttp_jinja2.get_env(app)
    ctx: dict[str, Any] = {
        "t": lambda zh, en: zh,
        "lang": "zh",
        "operator": None,
        "nav": [],
        "csrf": "",
        "path_qs": "/",
        "role_label": "",
        "code": "OPS_X",
        "zh": "<script>alert(1)</script>",
        "en": "x",
        "status": 400,
    }
    html = env.get_template("error.html").render(ctx)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "<script" not in html.replace("&lt;script", "")  # the page itself has no inline script
    for name in ("base.html", "login.html", "overview.html", "operators.html", "audit.html", "error.html"):
        source = env.loader.get_source(env, name)[0]  # type: ignore[union-attr]
        assert " on" + "click=" not in source and "<style" not in source and "http://" not in source
        assert "<script>" not in source  # scripts are files in static/, loaded with src=


async def test_the_page_serves_while_postgresql_is_down() -> None:
    """The pool connects on demand: the login page is served, and what needs the database says 503 OPS_STORE."""
    from aiohttp.test_utils import TestClient, TestServer

    from monitoring.app import create_app

    app = create_app(Settings(pg_dsn="postgresql://postgres@127.0.0.1:1/none"), secure_cookies=False)
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/login")
        assert r.status == 200 and "操作员登录" in await r.text()
        client.session.cookie_jar.update_cookies({auth.SESSION_COOKIE: "some-token"})
        r = await client.get("/operators", allow_redirects=False)
        body = await r.text()
        assert r.status == 503 and "OPS_STORE" in body and "Traceback" not in body


def test_whole_number_takes_ascii_digits_only() -> None:
    from monitoring.views import whole_number

    assert whole_number("42") == 42 and whole_number("0") == 0 and whole_number("9" * 18) == int("9" * 18)
    for bad in ("", "²", "١٢", "１２", "-1", " 1", "1e3", "9" * 19):
        assert whole_number(bad) is None, bad
    assert whole_number("12", digits=1) is None


#: The routes anyone may reach: the login, the language switch, the static files and the machine interfaces.
PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/lang"), ("GET", "/metrics"), ("GET", "/health")}
PUBLIC |= {("GET", "/ready"), ("HEAD", "/ready"), ("HEAD", "/health"), ("HEAD", "/metrics"), ("HEAD", "/login")}
PUBLIC |= {("HEAD", "/lang")}


def _routes() -> list[tuple[str, str, Any]]:
    from monitoring.app import create_app

    app = create_app(Settings(pg_dsn="postgresql://postgres@127.0.0.1:1/none"), secure_cookies=False)
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix", "")
        if path.startswith("/static"):
            continue
        out.append((route.method, path, route.handler))
    return out


async def test_every_route_but_the_public_ones_needs_a_session() -> None:
    """Walks the router: a page or action added without ``@require`` is caught here (redirected to the login, or
    401 under /api/, before the handler runs or the database is asked)."""
    from aiohttp.test_utils import TestClient, TestServer

    from monitoring.app import create_app

    routes = [(m, p) for m, p, _ in _routes() if (m, p) not in PUBLIC and m != "HEAD"]
    assert ("POST", "/dead/{dead_id}/replay") in routes and ("GET", "/api/overview") in routes
    app = create_app(Settings(pg_dsn="postgresql://postgres@127.0.0.1:1/none"), secure_cookies=False)
    async with TestClient(TestServer(app)) as client:
        for method, path in routes:
            url = path.replace("{dead_id}", "1").replace("{message_id}", "x").replace("{name}", "x")
            url = url.replace("{what}", "unlock").replace("{alarm_id}", "1")
            async with client.request(method, url, allow_redirects=False, data={"csrf": "x"}) as r:
                if path.startswith("/api/"):
                    assert r.status == 401, (method, path, r.status)
                else:
                    assert r.status == 302 and r.headers["Location"].startswith("/login?next="), (method, path)


def test_every_post_handler_checks_the_csrf_token_first() -> None:
    """Each POST handler's first statement reads the form through ``form_with_csrf`` (the login has its own
    double-submit token)."""
    import ast
    import inspect
    import textwrap

    posts = [(p, h) for m, p, h in _routes() if m == "POST" and p != "/login"]
    assert len(posts) >= 7
    for path, handler in posts:
        fn = inspect.unwrap(handler)
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        first = body[1] if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body[0]
        assert "form_with_csrf(request)" in ast.unparse(first), (path, ast.unparse(first))
        assert handler is not fn, f"{path} is not wrapped by @require"
