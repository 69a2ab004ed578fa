"""The ops page's pages: one module a page (or a few close ones), each with ``setup(app)`` adding its routes.
``home`` (login, logout, the overview, operators, the auditor's page) is the frame's; the data pages are listed in
``monitoring.app.VIEW_MODULES``."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["NOTICES", "notice", "whole_number"]

#: The pages' own refusals shared by several pages: code → (中文, English).
NOTICES: dict[str, tuple[str, str]] = {
    "OPS_REASON_REQUIRED": ("必须填写理由", "a reason is required"),
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
