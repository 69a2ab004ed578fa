"""The ops page's operators and sessions (issue 15): accounts with a role, Argon2id passwords, lockout, and
server-side sessions stored by the SHA-256 of their token.

- ``add_operator``, ``unlock``, ``disable``, ``set_role``: account changes, by an administrator and never on their
  own account (``OPS_SELF_ACTION``); each is recorded with ``hub.store.audit.record_operator_action`` in the
  transaction of the change (refusals too, with the outcome ``refused``).
- ``login``: checks a password. Five wrong passwords in a row lock the account for ``LOCK_MINUTES`` or until an
  administrator unlocks it; a locked or disabled account is refused even with the right password. Every refusal
  has the same code and sentence (``OPS_LOGIN_FAILED``), so that a refusal does not tell whether the name exists;
  the name of an unknown operator is hashed against a dummy hash for the same cost. Logins, failures and lockouts
  are recorded (``login``, ``login.failed``, ``login.locked``).
- ``open_session`` / ``session`` / ``close_session``: a session lives ``IDLE_MINUTES`` after its last request and
  at most ``ABSOLUTE_HOURS`` after the login; the operator's current role is read with it (a role change applies
  at the next request; disabling ends every session).

Times come from ``hub.clock`` (tests move it). Password hashing runs in a thread (it takes tens of milliseconds).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hub import clock
from hub.store.audit import record_operator_action
from hub.store.db import acquired, transaction, translated

__all__ = [
    "ABSOLUTE_HOURS",
    "IDLE_MINUTES",
    "LOCK_AFTER",
    "LOCK_MINUTES",
    "ROLE_NAMES",
    "Operator",
    "OperatorError",
    "Session",
    "add_operator",
    "close_session",
    "disable",
    "get_operator",
    "is_operator_name",
    "list_operators",
    "login",
    "open_session",
    "session",
    "set_role",
    "unlock",
]

LOCK_AFTER: Final[int] = 5
LOCK_MINUTES: Final[int] = 30
IDLE_MINUTES: Final[int] = 30
ABSOLUTE_HOURS: Final[int] = 12
MIN_PASSWORD: Final[int] = 10
ROLE_NAMES: Final[tuple[str, ...]] = ("admin", "security", "auditor", "duty")
_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")

Via = Literal["web", "cli"]

_hasher = PasswordHasher()  # Argon2id, RFC 9106 low-memory profile (argon2-cffi's defaults)
_DUMMY_HASH: str | None = None

#: code → (中文, English): the sentences an operator reads.
MESSAGES: Final[dict[str, tuple[str, str]]] = {
    "OPS_LOGIN_FAILED": (
        "登录失败：名称或口令错误，或账号已锁定、已停用。连续 5 次口令错误将锁定账号 30 分钟（系统管理员可提前解锁）。",
        "Login failed: wrong name or password, or the account is locked or disabled. Five wrong passwords in a row"
        " lock the account for 30 minutes (an administrator can unlock it sooner).",
    ),
    "OPS_SELF_ACTION": ("任何人不能对自己的账号执行此操作。", "No one may act on their own account."),
    "OPS_NO_OPERATOR": ("没有该操作员。", "There is no such operator."),
    "OPS_EXISTS": ("该名称的操作员已存在。", "An operator with that name already exists."),
    "OPS_BAD_NAME": (
        "操作员名称须为 2–32 个小写字母、数字或 . _ -，以字母开头。",
        "An operator name is 2–32 lowercase letters, digits or . _ -, starting with a letter.",
    ),
    "OPS_BAD_ROLE": (
        "角色须为 admin、security、auditor 或 duty 之一。",
        "The role must be one of admin, security, auditor, duty.",
    ),
    "OPS_WEAK_PASSWORD": (
        f"口令至少 {MIN_PASSWORD} 个字符，且不得与名称相同。",
        f"A password has at least {MIN_PASSWORD} characters and differs from the name.",
    ),
    "OPS_BAD_DISPLAY_NAME": (
        "显示名称不能为空，不超过 64 个字符，且不含控制字符。",
        "A display name is 1–64 characters, none of them a control character.",
    ),
    "OPS_DISABLED": ("该账号已停用。", "That account is disabled."),
}


class OperatorError(Exception):
    """A refused account operation: ``code`` (stable), ``zh`` and ``en`` (the sentences)."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.zh, self.en = MESSAGES[code]
        super().__init__(f"{code}: {self.zh} — {self.en}")


@dataclass(frozen=True)
class Operator:
    name: str
    display_name: str
    role: str
    failed_logins: int
    locked_until: datetime | None
    disabled: bool
    created_by: str
    created_at: datetime
    last_login_at: datetime | None

    def locked(self, now: datetime | None = None) -> bool:
        return self.locked_until is not None and self.locked_until > (now or clock.now())


@dataclass(frozen=True)
class Session:
    operator: str
    display_name: str
    role: str
    csrf: str
    created_at: datetime
    idle_expires_at: datetime
    absolute_expires_at: datetime


_COLUMNS = "name, display_name, role, failed_logins, locked_until, disabled, created_by, created_at, last_login_at"


def _operator(r: Any) -> Operator:
    return Operator(
        r["name"],
        r["display_name"],
        r["role"],
        r["failed_logins"],
        r["locked_until"],
        r["disabled"],
        r["created_by"],
        r["created_at"],
        r["last_login_at"],
    )


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(encoded: str, password: str) -> bool:
    try:
        return _hasher.verify(encoded, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = await hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


def is_operator_name(name: str) -> bool:
    """Whether ``name`` has the shape of an operator's name (``_NAME``; no other name can be an account)."""
    return _NAME.fullmatch(name) is not None


def _control(text: str) -> bool:
    """Whether ``text`` holds a control character (NUL, which PostgreSQL's text refuses, among them) or a lone
    surrogate."""
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


def check_new(name: str, role: str, display_name: str, password: str) -> None:
    """The rules of a new account (raises ``OperatorError``)."""
    if not is_operator_name(name):
        raise OperatorError("OPS_BAD_NAME")
    if role not in ROLE_NAMES:
        raise OperatorError("OPS_BAD_ROLE")
    if not display_name.strip() or len(display_name) > 64 or _control(display_name):
        raise OperatorError("OPS_BAD_DISPLAY_NAME")
    if len(password) < MIN_PASSWORD or password == name:
        raise OperatorError("OPS_WEAK_PASSWORD")


# ============================================================================================== reading


async def get_operator(executor: Any, name: str) -> Operator | None:
    async with translated("reading an operator"), acquired(executor) as conn:
        r = await conn.fetchrow(f"SELECT {_COLUMNS} FROM operators WHERE name = $1", name)  # noqa: S608
    return None if r is None else _operator(r)


async def list_operators(executor: Any) -> list[Operator]:
    async with translated("listing operators"), acquired(executor) as conn:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM operators ORDER BY name")  # noqa: S608
    return [_operator(r) for r in rows]


# ============================================================================================== account changes


async def add_operator(
    executor: Any,
    name: str,
    *,
    role: str,
    display_name: str,
    password: str,
    by: str,
    by_role: str,
    via: Via,
    reason: str = "new operator",
) -> Operator:
    """Create an account (``operator.add``). ``by`` may not be ``name`` (no one creates their own account). A
    refusal (``OPS_SELF_ACTION``, a bad name, role, display name or password, ``OPS_EXISTS``) is recorded too."""
    try:
        if by == name:
            raise OperatorError("OPS_SELF_ACTION")
        check_new(name, role, display_name, password)
    except OperatorError as exc:
        raise await _refused(
            executor,
            exc.code,
            action="operator.add",
            target=name,
            by=by,
            by_role=by_role,
            via=via,
            reason=reason,
            detail={"role": role},
        ) from None
    encoded = await hash_password(password)
    now = clock.now()
    async with translated("adding an operator"), transaction(executor) as conn:
        r = await conn.fetchrow(
            f"INSERT INTO operators (name, display_name, role, password_hash, created_by, created_at)"  # noqa: S608
            f" VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING {_COLUMNS}",
            name,
            display_name.strip(),
            role,
            encoded,
            by,
            now,
        )
        if r is not None:
            await record_operator_action(
                conn,
                operator=by,
                role=by_role,
                action="operator.add",
                via=via,
                reason=reason,
                target=name,
                detail={"role": role},
            )
            return _operator(r)
    raise await _refused(
        executor,
        "OPS_EXISTS",
        action="operator.add",
        target=name,
        by=by,
        by_role=by_role,
        via=via,
        reason=reason,
        detail={"role": role},
    )


async def _refused(
    executor: Any,
    code: str,
    *,
    action: str,
    target: str,
    by: str,
    by_role: str,
    via: Via,
    reason: str,
    detail: dict[str, Any] | None = None,
) -> OperatorError:
    """Record a refused account change (it changed nothing: a transaction of its own) and return its error."""
    await record_operator_action(
        executor,
        operator=by,
        role=by_role,
        action=action,
        via=via,
        reason=_printable(reason, 2000).strip() or "-",
        target=_printable(target, 64),
        outcome="refused",
        detail={"code": code, **{k: _printable(str(v), 64) for k, v in (detail or {}).items()}},
    )
    return OperatorError(code)


def _printable(text: str, limit: int) -> str:
    """What a refused request asked for, as the record can hold it (no NUL, which PostgreSQL's text refuses)."""
    return text.replace("\x00", "")[:limit]


async def _change(
    executor: Any,
    name: str,
    *,
    action: str,
    sql: str,
    args: tuple[Any, ...],
    by: str,
    by_role: str,
    via: Via,
    reason: str,
    detail: dict[str, Any] | None = None,
) -> Operator:
    """One account change by another operator, recorded with the change (or as refused)."""
    refusal: str | None = None
    async with translated("changing an operator"), transaction(executor) as conn:
        if by == name:
            refusal = "OPS_SELF_ACTION"
        elif not is_operator_name(name):  # no such account (and nothing to ask the store: it may hold a NUL)
            refusal = "OPS_NO_OPERATOR"
        else:
            r = await conn.fetchrow(sql, name, *args)
            if r is None:
                refusal = "OPS_NO_OPERATOR"
            else:
                await record_operator_action(
                    conn,
                    operator=by,
                    role=by_role,
                    action=action,
                    via=via,
                    reason=reason,
                    target=name,
                    detail=detail,
                )
                return _operator(r)
    assert refusal is not None
    raise await _refused(
        executor, refusal, action=action, target=name, by=by, by_role=by_role, via=via, reason=reason, detail=detail
    )


async def unlock(executor: Any, name: str, *, by: str, by_role: str, via: Via, reason: str = "unlock") -> Operator:
    """Clear the lock and the count of failures (``operator.unlock``)."""
    return await _change(
        executor,
        name,
        action="operator.unlock",
        sql=f"UPDATE operators SET locked_until = NULL, failed_logins = 0 WHERE name = $1 RETURNING {_COLUMNS}",  # noqa: S608
        args=(),
        by=by,
        by_role=by_role,
        via=via,
        reason=reason,
    )


async def disable(executor: Any, name: str, *, by: str, by_role: str, via: Via, reason: str = "disable") -> Operator:
    """Disable the account and end its sessions (``operator.disable``)."""
    return await _change(
        executor,
        name,
        action="operator.disable",
        sql=(
            "WITH gone AS (DELETE FROM operator_sessions WHERE operator = $1)"  # noqa: S608
            f" UPDATE operators SET disabled = true WHERE name = $1 RETURNING {_COLUMNS}"
        ),
        args=(),
        by=by,
        by_role=by_role,
        via=via,
        reason=reason,
    )


async def set_role(
    executor: Any, name: str, role: str, *, by: str, by_role: str, via: Via, reason: str = "role change"
) -> Operator:
    """Give the account another role (``operator.role``); its sessions get it at their next request. An unknown
    role is refused (``OPS_BAD_ROLE``, recorded)."""
    if role not in ROLE_NAMES:
        raise await _refused(
            executor,
            "OPS_BAD_ROLE",
            action="operator.role",
            target=name,
            by=by,
            by_role=by_role,
            via=via,
            reason=reason,
            detail={"role": role},
        )
    return await _change(
        executor,
        name,
        action="operator.role",
        sql=f"UPDATE operators SET role = $2 WHERE name = $1 RETURNING {_COLUMNS}",  # noqa: S608
        args=(role,),
        by=by,
        by_role=by_role,
        via=via,
        reason=reason,
        detail={"role": role},
    )


# ============================================================================================== login and sessions


async def login(executor: Any, name: str, password: str, *, via: Via = "web") -> Operator:
    """The operator whose password this is, recorded as ``login``; otherwise ``OperatorError("OPS_LOGIN_FAILED")``
    (recorded as ``login.failed``, and ``login.locked`` when this failure locks the account)."""
    name = name.strip()[:64]
    now = clock.now()
    r = None
    if is_operator_name(name):  # any other name is no account (and may hold a NUL, which the store refuses)
        async with translated("reading an operator"), acquired(executor) as conn:
            r = await conn.fetchrow(f"SELECT {_COLUMNS}, password_hash FROM operators WHERE name = $1", name)  # noqa: S608
    encoded = r["password_hash"] if r is not None else await _dummy_hash()  # the same cost either way
    good = await asyncio.to_thread(_verify, encoded, password)
    if r is None:
        if name:
            # as typed, a control character shown as U+FFFD (the record cannot hold a NUL, and the auditor sees
            # that the name was not what it looks like)
            await record_operator_action(
                executor,
                operator="".join("\ufffd" if _control(c) else c for c in name),
                role="-",
                action="login.failed",
                via=via,
                reason="unknown operator name",
                outcome="refused",
                detail={"known": False},
            )
        raise OperatorError("OPS_LOGIN_FAILED")
    # Decide on the row as it is now, locked against concurrent attempts (the count of failures never loses one).
    async with translated("recording a login"), transaction(executor) as conn:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM operators WHERE name = $1 FOR UPDATE", name)  # noqa: S608
        op = _operator(row) if row is not None else _operator(r)
        if row is None or op.disabled or op.locked(now):
            why = "disabled" if row is None or op.disabled else "locked"
            await record_operator_action(
                conn,
                operator=name,
                role=op.role,
                action="login.failed",
                via=via,
                reason=f"account {why}",
                outcome="refused",
                detail={"known": True, why: True},
            )
        elif good:
            row = await conn.fetchrow(
                "UPDATE operators SET failed_logins = 0, locked_until = NULL, last_login_at = $2"  # noqa: S608
                f" WHERE name = $1 RETURNING {_COLUMNS}",
                name,
                now,
            )
            await record_operator_action(conn, operator=name, role=op.role, action="login", via=via, reason="login")
            return _operator(row)
        else:
            # A lapsed lock starts a new count.
            failures = 1 if op.locked_until is not None else op.failed_logins + 1
            lock = now + timedelta(minutes=LOCK_MINUTES) if failures >= LOCK_AFTER else None
            await conn.execute(
                "UPDATE operators SET failed_logins = $2, locked_until = $3 WHERE name = $1",
                name,
                0 if lock is not None else failures,
                lock,
            )
            await record_operator_action(
                conn,
                operator=name,
                role=op.role,
                action="login.failed",
                via=via,
                reason="wrong password",
                outcome="refused",
                detail={"known": True, "failures": failures},
            )
            if lock is not None:
                await record_operator_action(
                    conn,
                    operator=name,
                    role=op.role,
                    action="login.locked",
                    via=via,
                    reason=f"{LOCK_AFTER} wrong passwords in a row",
                    target=name,
                    detail={"until": lock.isoformat()},
                )
    raise OperatorError("OPS_LOGIN_FAILED")


async def open_session(executor: Any, operator: str) -> tuple[str, str]:
    """A new session of ``operator``: (token for the cookie, CSRF token). Only the token's SHA-256 is stored."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = clock.now()
    async with translated("opening a session"), acquired(executor) as conn:
        await conn.execute("DELETE FROM operator_sessions WHERE absolute_expires_at < $1 OR idle_expires_at < $1", now)
        await conn.execute(
            "INSERT INTO operator_sessions (token_sha256, operator, csrf, created_at, last_seen_at, idle_expires_at,"
            " absolute_expires_at) VALUES ($1, $2, $3, $4, $4, $5, $6)",
            token_digest(token),
            operator,
            csrf,
            now,
            now + timedelta(minutes=IDLE_MINUTES),
            now + timedelta(hours=ABSOLUTE_HOURS),
        )
    return token, csrf


_SESSION_LIVE = (
    "s.token_sha256 = $1 AND o.name = s.operator AND NOT o.disabled AND s.idle_expires_at > $2"
    " AND s.absolute_expires_at > $2"
)
_SESSION_FIELDS = "s.operator, o.display_name, o.role, s.csrf, s.created_at, s.idle_expires_at, s.absolute_expires_at"
_SESSION_TOUCH = (
    "UPDATE operator_sessions s SET last_seen_at = $2,"  # noqa: S608 - constants
    " idle_expires_at = LEAST($2 + make_interval(mins => $3), s.absolute_expires_at)"
    f" FROM operators o WHERE {_SESSION_LIVE} RETURNING {_SESSION_FIELDS}"
)
_SESSION_READ = f"SELECT {_SESSION_FIELDS} FROM operator_sessions s, operators o WHERE {_SESSION_LIVE}"  # noqa: S608


async def session(executor: Any, token: str, *, touch: bool = True) -> Session | None:
    """The live session of ``token`` (its idle expiry pushed on), or None: unknown, expired, or the account
    disabled or gone. ``touch=False`` reads it without pushing the idle expiry on (a page's background polling is
    not the operator's activity: it must not keep an unattended session alive)."""
    if not token or len(token) > 128:
        return None
    now = clock.now()
    async with translated("reading a session"), acquired(executor) as conn:
        if touch:
            r = await conn.fetchrow(_SESSION_TOUCH, token_digest(token), now, IDLE_MINUTES)
        else:
            r = await conn.fetchrow(_SESSION_READ, token_digest(token), now)
    if r is None:
        return None
    return Session(
        r["operator"],
        r["display_name"],
        r["role"],
        r["csrf"],
        r["created_at"],
        r["idle_expires_at"],
        r["absolute_expires_at"],
    )


async def close_session(executor: Any, token: str, *, role: str, operator: str, via: Via = "web") -> None:
    """End the session (``logout``)."""
    async with translated("closing a session"), transaction(executor) as conn:
        await conn.execute("DELETE FROM operator_sessions WHERE token_sha256 = $1", token_digest(token))
        await record_operator_action(conn, operator=operator, role=role, action="logout", via=via, reason="logout")
