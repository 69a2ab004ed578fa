"""The adapter SDK: everything an agency's adapter imports, from this one package.

    from adapters.sdk import Adapter, AdapterSettings, Context, Reject, Retry, to
    from adapters.sdk.messages import DocumentOfficial, DocumentReceipt
    from adapters.sdk.testing import TestHub

``tests/unit/test_sdk_surface.py`` pins the public names below; everything in a module whose name starts with an
underscore is private and may change. The exception tree is drawn in ``adapters.sdk._errors``.
"""

from adapters.sdk._adapter import Adapter, group, to
from adapters.sdk._context import Context, Receipt, Reply
from adapters.sdk._errors import (
    ConfigurationError,
    HubRefused,
    HubUnavailable,
    MessageInvalid,
    Refused,
    Reject,
    RequestTimeout,
    Retry,
    SdkError,
)
from adapters.sdk._message import Message
from adapters.sdk._settings import AdapterSettings

__all__ = [
    "Adapter",
    "AdapterSettings",
    "ConfigurationError",
    "Context",
    "HubRefused",
    "HubUnavailable",
    "Message",
    "MessageInvalid",
    "Receipt",
    "Refused",
    "Reject",
    "Reply",
    "RequestTimeout",
    "Retry",
    "SdkError",
    "group",
    "to",
]
