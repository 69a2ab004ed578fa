"""The SDK's errors. Every error carries a stable ``.code`` (the hub's codes where the hub has one, e.g. SCHEMA_VALUE)
and a human-readable ``.detail``::

    SdkError
    └── MessageInvalid    a typed message breaks its service's XSD (code SCHEMA_*, as the hub would answer)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["MessageInvalid", "SdkError"]


class SdkError(Exception):
    """Base of every SDK error: a stable ``code`` and a sentence (``detail``)."""

    code: str = "SDK_ERROR"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class MessageInvalid(SdkError):
    """A message that the hub would refuse: ``code`` is the hub's (SCHEMA_VALUE, SCHEMA_ELEMENT, SCHEMA_AGENCY_CODE,
    ...), ``violations`` every problem found (``hub.validation.Violation`` objects; may be empty)."""

    code = "SCHEMA_VIOLATION"

    def __init__(self, detail: str, *, code: str | None = None, violations: Sequence[Any] = ()) -> None:
        super().__init__(detail, code=code)
        self.violations = tuple(violations)
