"""The ops page's pages: one module a page (or a few close ones), each with ``setup(app)`` adding its routes.
``home`` (login, logout, the overview, operators, the auditor's page) is the frame's; the data pages are listed in
``monitoring.app.VIEW_MODULES``."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["NOTICES", "REASON_MAX", "form_reason", "notice", "printable", "reason_refusal", "whole_number"]

#: The longest reason (or note) a form takes: what the forms' ``maxlength`` allows.
REASON_MAX: Final[int] = 500

#: The pages' own refusals shared by several pages: code → (中文, English).
NOTICES: dict[str, tuple[str, str]] = {
    "OPS_REASON_REQUIRED": ("必须填写理由", "a reason is required"),
    "OPS_BAD_REASON": (
        f"理由不得包含控制字符，且不超过 {REASON_MAX} 个字符",
        f"a reason holds no control characters and is at most {REASON_MAX} characters",
    ),
}


def notice(code: str, detail: str = "", own: Mapping[str, tuple[str, str]] | None = None) -> dict[str, str]:
    """A notice for a page: the page's ``own`` sentences or the shared ones for ``code``; else the hub's title of
    the code (``hub.errors.title_of``) with ``detail`` in English."""
    from hub.errors import title_of

    zh, en = (own or {}).get(code) or NOTICES.get(code) or (title_of(code), detail)
    return {"code": code, "zh": zh, "en": detail or en}


def whole_number(text: str, *, digits: int = 18) -> int | None:
    """``text`` as a non-negative integer when it is 1–``digits`` ASCII digits, else None (``str.isdigit`` alone
    admits ``²`` or ``١``, which ``int`` refuses or reads, and any length, which PostgreSQL's bigint refuses)."""
    if not text or len(text) > digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def printable(text: str) -> bool:
    """Whether ``text`` holds no control character but ordinary whitespace (tab, line breaks), and no lone
    surrogate: what a record can hold and a page can show as it is (PostgreSQL's text refuses NUL)."""
    return not any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r" for c in text)


def reason_refusal(reason: str) -> str | None:
    """The code a form refuses a reason (or note) with — ``OPS_REASON_REQUIRED`` when blank, ``OPS_BAD_REASON``
    with a control character or longer than ``REASON_MAX`` — or None when it can be acted on and recorded. Every
    form that takes a reason checks it with this before it acts (nothing is done that could not be recorded)."""
    if not reason.strip():
        return "OPS_REASON_REQUIRED"
    if len(reason) > REASON_MAX or not printable(reason):
        return "OPS_BAD_REASON"
    return None


def form_reason(form: Mapping[str, Any], field: str = "reason") -> tuple[str, str | None]:
    """The form's reason (``field``, stripped; a file or nothing: empty) and ``reason_refusal``'s code for it."""
    value = form.get(field, "")
    reason = value.strip() if isinstance(value, str) else ""
    return reason, reason_refusal(reason)
