"""What a handler is given beside the typed message (``Context``), and what ``send`` and ``request`` return."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lxml import etree

    from hub.envelope import Envelope, Party, Recipient
    from hub.trust import SignerIdentity

__all__ = ["Context", "Receipt", "Reply"]


@dataclass(frozen=True, slots=True)
class Context:
    """The verified facts of one delivery. Everything here comes from the signed envelope or from the
    signature checks; nothing from unsigned AMQP properties."""

    message_id: str
    conversation_id: str
    service: str
    version: int
    #: The signed sender (agency code, system id); its certificate is ``originator``.
    sender: Party
    recipients: tuple[Recipient, ...]
    #: 密级 (公开 / 内部 / 秘密 / 机密 / 绝密) and 保密期限.
    classification: str
    period: str | None
    #: 紧急程度 (特急 / 加急 / 平件).
    urgency: str
    created: datetime
    expires: datetime
    ref_to: str | None
    request_hash: str | None
    #: 发文字号 or approval case number.
    business_ref: str | None
    #: Hex SHA-256 of the signed content: what the originator's and the hub's signatures cover.
    digest: str
    #: The originating system's certificate (agency, system, serial, fingerprint): who signed the content. None
    #: only for the hub's own messages.
    originator: SignerIdentity | None
    #: The hub certificate that signed the delivery.
    hub: SignerIdentity
    #: The signed envelope (both signatures removed) and its body element, for adapters that map XML themselves.
    envelope: Envelope = field(repr=False)
    body: etree._Element | None = field(repr=False)
    #: The delivery exactly as received (both signatures in it): keep it as evidence.
    raw: bytes = field(repr=False)
    #: True when the broker handed this delivery over before (after a crash or a Retry).
    redelivered: bool = False
    #: How often a handler of this adapter process asked for Retry on it.
    attempt: int = 0
    #: The originator's validated certificate itself (cryptography ``x509.Certificate``): to show or keep as
    #: evidence of who signed the content — verifiable without trusting the hub.
    originator_certificate: Any = field(default=None, repr=False)
    #: The store's connection inside this batch's transaction (sqlite3.Connection, or asyncpg.Connection with a
    #: PostgreSQL store): what a handler writes here is committed together with the record of ``message_id``.
    db: Any = field(default=None, repr=False)

    @property
    def service_id(self) -> str:
        return f"{self.service}/{self.version}"


@dataclass(frozen=True, slots=True)
class Receipt:
    """The hub's signed hub.receipt for a message this adapter sent (verified: signed by the hub)."""

    message_id: str
    #: accepted (已受理) / duplicate (重复: the hub had it already) / quarantined (已隔离: held for a person).
    outcome: str
    #: (agency code, system id, role) of every system the hub delivers to.
    recipients: tuple[tuple[str, str, str], ...]
    #: SHA-256 of the bytes exactly as the hub received them.
    received_digest: str
    received_at: datetime | None
    #: The receipt's own message id and the verified receipt envelope.
    receipt_id: str
    envelope: Envelope = field(repr=False)
    raw: bytes = field(repr=False, default=b"")

    @property
    def accepted(self) -> bool:
        return self.outcome in ("accepted", "duplicate")


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to ``request``: the typed reply message, its context, and the hub's receipt for the request."""

    message: Any
    context: Context
    receipt: Receipt
