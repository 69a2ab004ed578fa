"""The ops page's pages: one module a page (or a few close ones), each with ``setup(app)`` adding its routes.
``home`` (login, logout, the overview, operators, the auditor's page) is the frame's; the data pages are listed in
``monitoring.app.VIEW_MODULES``."""

from __future__ import annotations

__all__ = ["whole_number"]


def whole_number(text: str, *, digits: int = 18) -> int | None:
    """``text`` as a non-negative integer when it is 1–``digits`` ASCII digits, else None (``str.isdigit`` alone
    admits ``²`` or ``١``, which ``int`` refuses or reads, and any length, which PostgreSQL's bigint refuses)."""
    if not text or len(text) > digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)
