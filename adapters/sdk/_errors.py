"""Every exception the SDK raises, in one tree (as httpx draws its own)::

    SdkError                      .code (stable, upper-case), .detail (a sentence an operator understands)
    ├── MessageInvalid            a message you built breaks its XSD (SCHEMA_*), before anything is signed
    ├── ConfigurationError        settings, the enrolment directory, keys or certificates (SDK_CONFIG, …)
    ├── HubUnavailable            the broker could not be reached or refused a publish (transient: try again)
    ├── RequestTimeout            no receipt or reply within the timeout (SDK_TIMEOUT)
    ├── HubRefused                the hub's signed hub.error (its stable code: ROUTE_NOT_ALLOWED, SIG_*, …)
    └── Refused                   the recipient's signed delivery.refusal (the code its handler gave)

Handlers raise ``Retry(delay)`` (transient: the delivery comes back later) or ``Reject(code, reason)``
(permanent: the sender gets a signed refusal); both are signals, not errors. Lower-layer exceptions (hub errors,
aio-pika, sqlite3, asyncpg) are translated at the edge; none reaches an adapter's code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ConfigurationError",
    "HubRefused",
    "HubUnavailable",
    "MessageInvalid",
    "Refused",
    "Reject",
    "RequestTimeout",
    "Retry",
    "SdkError",
]

_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")


class SdkError(Exception):
    """Base of every SDK error: ``code`` is stable (scripts match on it), ``detail`` is for people."""

    default_code = "SDK_ERROR"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class MessageInvalid(SdkError):
    """A message the hub would refuse, found before it is signed (nothing was sent): ``code`` is the hub's
    (SCHEMA_VALUE, SCHEMA_ELEMENT, SCHEMA_AGENCY_CODE, …), ``path`` where, ``violations`` every problem found
    (``hub.validation.Violation`` objects; may be empty)."""

    default_code = "SCHEMA_VIOLATION"

    def __init__(
        self, detail: str, *, code: str | None = None, path: str | None = None, violations: Sequence[Any] = ()
    ) -> None:
        super().__init__(detail, code=code)
        self.path = path
        self.violations = tuple(violations)


class ConfigurationError(SdkError):
    default_code = "SDK_CONFIG"


class HubUnavailable(SdkError):
    default_code = "SDK_HUB_UNAVAILABLE"


class RequestTimeout(SdkError):
    default_code = "SDK_TIMEOUT"


class HubRefused(SdkError):
    """The hub refused a message: its signed hub.error, with the hub's stable code, Chinese title and reason."""

    def __init__(self, *, code: str, title: str, reason: str, message_id: str, error: Any = None) -> None:
        super().__init__(f"{title} — {reason}" if title else reason, code=code)
        self.title = title
        self.reason = reason
        self.message_id = message_id
        #: The verified hub.error (``adapters.sdk.Delivery``), kept as evidence.
        self.error = error


class Refused(SdkError):
    """A recipient system refused a delivered message (its signed delivery.refusal)."""

    def __init__(self, *, code: str, reason: str, message_id: str, by: Any, refusal: Any = None) -> None:
        super().__init__(f"refused by {by}: {reason}", code=code)
        self.reason = reason
        self.message_id = message_id
        #: The refusing system (``Party``).
        self.by = by
        self.refusal = refusal


class Retry(Exception):
    """Raised by a handler: a transient failure; the delivery is handed to the handler again after ``delay``
    seconds (its side effects in ``ctx.db`` are rolled back). After ``AdapterSettings.retry_limit`` attempts the
    delivery is dead-lettered with the last reason, where an operator sees it."""

    def __init__(self, delay: float = 5.0, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay:g} s")
        self.delay = max(0.0, float(delay))
        self.reason = _carried(reason)


class Reject(Exception):
    """Raised by a handler: a permanent refusal. The sender gets a signed ``delivery.refusal`` with ``code`` and
    ``reason`` (through the hub); the delivery is recorded as refused and never handed over again."""

    def __init__(self, code: str, reason: str) -> None:
        if not _CODE.match(code):
            raise ValueError(f"a refusal code is upper-case letters, digits and _ (got {code!r})")
        if not reason.strip():
            raise ValueError("a refusal needs a reason the sender can read")
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = _carried(reason)


def _carried(reason: str) -> str:
    """The reason as every way it travels can carry it (``hub.pipeline.client.refusal_text``)."""
    from hub.pipeline.client import refusal_text

    return refusal_text(str(reason))
