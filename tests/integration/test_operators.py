"""Operators and sessions on the real PostgreSQL (hub.store.operators) and ``hub operators``: Argon2id hashes, one
refusal for every failed login, the lockout after five wrong passwords (an administrator unlocks, or 30 minutes
pass), no one acting on their own account, sessions stored by their token's SHA-256 and ending when idle 30 minutes
or 12 hours after the login, and every action recorded for the auditor."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta

import pytest

from hub import clock
from hub.settings import Settings
from hub.store import operators as store
from hub.store.audit import operator_actions

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-2026"


@pytest.fixture(scope="module")
async def pool(pg_dsn: str) -> AsyncIterator[object]:
    from hub.store.db import create_pool

    p = await create_pool(pg_dsn, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def add(pool: object, role: str = "duty", *, by: str = "root") -> str:
    name = unique(role)
    await store.add_operator(
        pool, name, role=role, display_name=f"测试 {role}", password=PASSWORD, by=by, by_role="console", via="cli"
    )
    return name


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.at = datetime.now().astimezone()

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


@pytest.fixture
def moving() -> Iterator[Clock]:
    c = Clock()
    with clock.override(c):
        yield c


async def test_add_stores_an_argon2id_hash_and_login_checks_it(pool: object) -> None:
    name = await add(pool)
    async with pool.acquire() as conn:  # type: ignore[attr-defined]
        stored = await conn.fetchval("SELECT password_hash FROM operators WHERE name = $1", name)
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    op = await store.login(pool, name, PASSWORD)
    assert (op.name, op.role, op.failed_logins) == (name, "duty", 0) and op.last_login_at is not None
    actions = await operator_actions(pool, operator=name)
    assert [(a.action, a.outcome, a.via) for a in actions] == [("login", "done", "web")]
    added = await operator_actions(pool, operator="root")
    assert any(a.action == "operator.add" and a.target == name and a.via == "cli" for a in added)


async def test_refusals_do_not_tell_whether_the_name_exists(pool: object) -> None:
    name = await add(pool)
    with pytest.raises(store.OperatorError) as wrong:
        await store.login(pool, name, "not-the-password")
    with pytest.raises(store.OperatorError) as unknown:
        await store.login(pool, unique("nobody"), PASSWORD)
    assert wrong.value.code == unknown.value.code == "OPS_LOGIN_FAILED"
    assert (wrong.value.zh, wrong.value.en) == (unknown.value.zh, unknown.value.en)


async def test_rules_of_a_new_account(pool: object) -> None:
    by = unique("root")
    for name, role, password, code in (
        ("Bad Name", "duty", PASSWORD, "OPS_BAD_NAME"),
        (unique("x"), "root", PASSWORD, "OPS_BAD_ROLE"),
        (unique("x"), "duty", "short", "OPS_WEAK_PASSWORD"),
        ("nul\x00name", "duty", PASSWORD, "OPS_BAD_NAME"),
    ):
        with pytest.raises(store.OperatorError) as e:
            await store.add_operator(
                pool, name, role=role, display_name="x", password=password, by=by, by_role="console", via="cli"
            )
        assert e.value.code == code
    name = await add(pool, by=by)
    with pytest.raises(store.OperatorError) as e:
        await store.add_operator(
            pool, name, role="duty", display_name="x", password=PASSWORD, by=by, by_role="console", via="cli"
        )
    assert e.value.code == "OPS_EXISTS"
    with pytest.raises(store.OperatorError) as e:
        await store.set_role(pool, name, "root", by=by, by_role="console", via="cli")
    assert e.value.code == "OPS_BAD_ROLE"
    # Every refusal is recorded for the auditor (the password never is).
    got = [
        (a.action, a.outcome, a.detail.get("code"), a.target)
        for a in reversed(await operator_actions(pool, operator=by))
    ]
    assert got == [
        ("operator.add", "refused", "OPS_BAD_NAME", "Bad Name"),
        ("operator.add", "refused", "OPS_BAD_ROLE", got[1][3]),
        ("operator.add", "refused", "OPS_WEAK_PASSWORD", got[2][3]),
        ("operator.add", "refused", "OPS_BAD_NAME", "nulname"),
        ("operator.add", "done", None, name),
        ("operator.add", "refused", "OPS_EXISTS", name),
        ("operator.role", "refused", "OPS_BAD_ROLE", name),
    ]
    assert not any(
        PASSWORD in str(a.detail) or "short" in str(a.detail) for a in await operator_actions(pool, operator=by)
    )


async def test_five_wrong_passwords_lock_until_an_admin_unlocks(pool: object, moving: Clock) -> None:
    name, admin = await add(pool), await add(pool, "admin")
    for _ in range(store.LOCK_AFTER):
        with pytest.raises(store.OperatorError):
            await store.login(pool, name, "wrong-password")
    op = await store.get_operator(pool, name)
    assert op is not None and op.locked() and op.locked_until == moving.at + timedelta(minutes=store.LOCK_MINUTES)
    with pytest.raises(store.OperatorError) as e:  # the sixth attempt, with the right password
        await store.login(pool, name, PASSWORD)
    assert e.value.code == "OPS_LOGIN_FAILED"
    actions = [(a.action, a.outcome) for a in reversed(await operator_actions(pool, operator=name))]
    assert actions == [("login.failed", "refused")] * 5 + [("login.locked", "done"), ("login.failed", "refused")]
    locked = next(a for a in await operator_actions(pool, operator=name) if a.action == "login.locked")
    assert locked.target == name

    # The operator may not unlock themself; another administrator may.
    with pytest.raises(store.OperatorError) as e:
        await store.unlock(pool, name, by=name, by_role="duty", via="web")
    assert e.value.code == "OPS_SELF_ACTION"
    await store.unlock(pool, name, by=admin, by_role="admin", via="web", reason="确认为本人误输")
    assert (await store.login(pool, name, PASSWORD)).name == name
    done = [a for a in await operator_actions(pool, operator=admin) if a.action == "operator.unlock"]
    assert [(a.target, a.outcome, a.reason) for a in done] == [(name, "done", "确认为本人误输")]
    refused = [a for a in await operator_actions(pool, operator=name) if a.action == "operator.unlock"]
    assert [(a.outcome, a.detail["code"]) for a in refused] == [("refused", "OPS_SELF_ACTION")]


async def test_concurrent_wrong_passwords_lose_no_count(pool: object) -> None:
    name = await add(pool)

    async def attempt() -> str:
        try:
            await store.login(pool, name, "wrong-password")
        except store.OperatorError as exc:
            return exc.code
        return "in"

    assert await asyncio.gather(*(attempt() for _ in range(store.LOCK_AFTER))) == ["OPS_LOGIN_FAILED"] * 5
    op = await store.get_operator(pool, name)
    assert op is not None and op.locked()
    actions = [a.action for a in await operator_actions(pool, operator=name)]
    assert actions.count("login.locked") == 1 and actions.count("login.failed") == store.LOCK_AFTER


async def test_a_lock_lapses_after_thirty_minutes(pool: object, moving: Clock) -> None:
    name = await add(pool)
    for _ in range(store.LOCK_AFTER):
        with pytest.raises(store.OperatorError):
            await store.login(pool, name, "wrong-password")
    moving.advance(minutes=store.LOCK_MINUTES - 1)
    with pytest.raises(store.OperatorError):
        await store.login(pool, name, PASSWORD)
    moving.advance(minutes=2)
    assert (await store.login(pool, name, PASSWORD)).failed_logins == 0
    # After a lapsed lock the count starts again: one wrong password does not lock.
    moving.advance(minutes=1)
    with pytest.raises(store.OperatorError):
        await store.login(pool, name, "wrong-password")
    assert (await store.login(pool, name, PASSWORD)).name == name


async def test_no_one_acts_on_their_own_account(pool: object) -> None:
    admin, other = await add(pool, "admin"), await add(pool)
    for call in (
        store.disable(pool, admin, by=admin, by_role="admin", via="web"),
        store.unlock(pool, admin, by=admin, by_role="admin", via="web"),
        store.set_role(pool, admin, "security", by=admin, by_role="admin", via="web"),
    ):
        with pytest.raises(store.OperatorError) as e:
            await call
        assert e.value.code == "OPS_SELF_ACTION"
    with pytest.raises(store.OperatorError) as e:
        await store.add_operator(
            pool, admin, role="duty", display_name="x", password=PASSWORD, by=admin, by_role="admin", via="web"
        )
    assert e.value.code == "OPS_SELF_ACTION"
    me = await store.get_operator(pool, admin)
    assert me is not None and me.role == "admin" and not me.disabled
    refused = [(a.action, a.outcome) for a in await operator_actions(pool, operator=admin)]
    assert refused.count(("operator.disable", "refused")) == 1 and refused.count(("operator.role", "refused")) == 1
    with pytest.raises(store.OperatorError) as e:
        await store.disable(pool, unique("ghost"), by=admin, by_role="admin", via="web")
    assert e.value.code == "OPS_NO_OPERATOR"
    assert (await store.set_role(pool, other, "security", by=admin, by_role="admin", via="web")).role == "security"


async def test_sessions_by_digest_with_idle_and_absolute_expiry(pool: object, moving: Clock) -> None:
    name = await add(pool)
    token, csrf = await store.open_session(pool, name)
    async with pool.acquire() as conn:  # type: ignore[attr-defined]
        rows = await conn.fetch("SELECT token_sha256 FROM operator_sessions WHERE operator = $1", name)
    assert [bytes(r["token_sha256"]) for r in rows] == [hashlib.sha256(token.encode()).digest()]
    s = await store.session(pool, token)
    assert s is not None and (s.operator, s.role, s.csrf) == (name, "duty", csrf)
    assert await store.session(pool, token + "x") is None

    # Idle: 29 minutes between requests keep it alive, 31 end it.
    for _ in range(3):
        moving.advance(minutes=29)
        assert await store.session(pool, token) is not None
    moving.advance(minutes=31)
    assert await store.session(pool, token) is None

    # Absolute: 12 hours after the login even with a request every 20 minutes.
    token, _ = await store.open_session(pool, name)
    for _ in range(int(store.ABSOLUTE_HOURS * 3) - 1):
        moving.advance(minutes=20)
        assert await store.session(pool, token) is not None
    moving.advance(minutes=21)
    assert await store.session(pool, token) is None


async def test_reading_a_session_untouched_does_not_keep_it_alive(pool: object, moving: Clock) -> None:
    """What a page polls reads the session with ``touch=False``: it answers while the session lives, but only the
    operator's own requests push the idle expiry on."""
    name = await add(pool)
    token, _ = await store.open_session(pool, name)
    for _ in range(14):  # a poll every 2 minutes for 28 minutes
        moving.advance(minutes=2)
        s = await store.session(pool, token, touch=False)
        assert s is not None and s.operator == name
    moving.advance(minutes=3)  # 31 minutes after the last request of the operator's own
    assert await store.session(pool, token, touch=False) is None
    assert await store.session(pool, token) is None
    # a request of the operator's own does push it on
    token, _ = await store.open_session(pool, name)
    moving.advance(minutes=20)
    assert await store.session(pool, token) is not None
    moving.advance(minutes=20)
    assert await store.session(pool, token, touch=False) is not None


async def test_role_changes_apply_and_disabling_ends_sessions(pool: object) -> None:
    admin, name = await add(pool, "admin"), await add(pool)
    token, _ = await store.open_session(pool, name)
    await store.set_role(pool, name, "auditor", by=admin, by_role="admin", via="web", reason="调岗")
    s = await store.session(pool, token)
    assert s is not None and s.role == "auditor"
    await store.disable(pool, name, by=admin, by_role="admin", via="web", reason="离职")
    assert await store.session(pool, token) is None
    with pytest.raises(store.OperatorError) as e:
        await store.login(pool, name, PASSWORD)
    assert e.value.code == "OPS_LOGIN_FAILED"
    await store.close_session(pool, token, role="auditor", operator=name)  # a stale logout does no harm


async def test_logout_ends_the_session(pool: object) -> None:
    name = await add(pool)
    token, _ = await store.open_session(pool, name)
    await store.close_session(pool, token, role="duty", operator=name)
    assert await store.session(pool, token) is None
    assert (await operator_actions(pool, operator=name, limit=1))[0].action == "logout"


def test_the_operators_command(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import main

    monkeypatch.setenv("HUB_PG_DSN", pg_dsn)
    first, second = unique("chief"), unique("deputy")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["operators", "add", first, "--role", "admin", "--display-name", "王主任", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["operators", "add", second, "--role", "admin", "--password-stdin", "--by", first]) == 0
    assert main(["operators", "list"]) == 0
    out = capsys.readouterr().out
    assert first in out and "王主任" in out and second in out
    assert main(["operators", "disable", first, "--by", first, "--reason", "test"]) == 1
    assert "OPS_SELF_ACTION" in capsys.readouterr().err
    assert main(["operators", "role", first, "--role", "security", "--by", second, "--reason", "调岗"]) == 0
    assert main(["operators", "unlock", unique("ghost"), "--by", second]) == 1
    assert "OPS_NO_OPERATOR" in capsys.readouterr().err

    async def actions() -> list[tuple[str, str, str, str, str | None]]:
        from hub.store.db import create_pool

        p = await create_pool(pg_dsn, min_size=1, max_size=1)
        try:
            return [(a.action, a.role, a.via, a.outcome, a.target) for a in await operator_actions(p, operator=second)]
        finally:
            await p.close()

    got = asyncio.run(actions())
    # the second administrator acts with the role the store gives it (admin), via the CLI
    assert ("operator.role", "admin", "cli", "done", first) in got
    assert ("operator.unlock", "admin", "cli", "refused", got[0][4]) == got[0]


async def test_hub_ops_serves_the_page_over_https(fresh_settings: Settings) -> None:
    """``hub pki issue-server --out-dir <state>/pki/ops`` then ``hub ops``: the login page over TLS with the hub
    root as the only anchor, the security headers, and a clean stop on SIGTERM. Without the certificate ``hub ops``
    names the command that issues it."""
    import ssl
    import subprocess
    import sys

    import aiohttp

    from hub.commands import trust_admin as admin
    from hub.trust.pki import PkiPaths

    settings = fresh_settings
    pki_dir = settings.state_dir / "pki"
    env = settings.to_env()
    hub = [sys.executable, "-m", "hub.cli"]
    missing = subprocess.run([*hub, "ops", "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "hub pki issue-server --host 127.0.0.1 --out-dir" in missing.stderr
    await admin.init(settings, pki_dir, agency="11220000013544357T")
    issued = subprocess.run(
        [*hub, "pki", "issue-server", "--host", "127.0.0.1", "--out-dir", str(pki_dir / "ops")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert issued.returncode == 0, issued.stderr
    proc = await asyncio.create_subprocess_exec(
        *hub, "ops", "--port", "0", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        url = line.split(": ", 1)[1].strip()
        assert url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(PkiPaths(pki_dir).root_cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            async with http.get(url + "login") as r:
                body = await r.text()
                assert r.status == 200 and "操作员登录" in body
                assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
                assert r.headers.get("Strict-Transport-Security") == "max-age=31536000", dict(r.headers)
                cookie = r.cookies["ops_login_csrf"]
                assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
            async with http.get(url, allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"].startswith("/login?next=")
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
