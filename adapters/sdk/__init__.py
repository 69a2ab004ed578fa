"""The adapter SDK: everything an agency's adapter imports, from this one package.

    from adapters.sdk import Adapter, AdapterSettings, Context, Reject, Retry, to
    from adapters.sdk.messages import DocumentOfficial, DocumentReceipt
    from adapters.sdk.testing import TestHub

``tests/integration/test_sdk.py`` (test_the_public_surface_is_pinned) pins the public names below; everything in a
module whose name starts with an underscore is private and may change. The exception tree is drawn in
``adapters.sdk._errors``; document tracking (``Adapter.sent_messages``, ``Tracking``) in ``adapters.sdk._tracking``.
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
from adapters.sdk._store_connection import StoreConnection
from adapters.sdk._tracking import NOT_SIGNED_FOR, DeliveryState, HubAnswer, SentMessage, Tracking

__all__ = [
    "NOT_SIGNED_FOR",
    "Adapter",
    "AdapterSettings",
    "ConfigurationError",
    "Context",
    "DeliveryState",
    "HubAnswer",
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
    "SentMessage",
    "StoreConnection",
    "Tracking",
    "group",
    "to",
]
