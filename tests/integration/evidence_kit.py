"""What the evidence tests share: a migrated PostgreSQL database of their own, and a message record as the pipeline
writes it (``test_evidence_anchors``, ``test_evidence_trust``, ``test_evidence_verify_messages``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from conftest import ADMIN_DSN, _admin

from hub.store.db import create_migrated_database
from hub.store.records import DeliveryRecord, MessageRecord

AGENCY = "11220000MB0000000X"


@asynccontextmanager
async def own_database(prefix: str) -> AsyncIterator[str]:
    """The DSN of a fresh, migrated database ``<prefix>_<random>`` (a copy of a migrated template), dropped
    afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    dsn = await create_migrated_database(ADMIN_DSN, name)
    try:
        yield dsn
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def message_record(
    *, state: str = "accepted", raw: bytes | None = None, deliveries: tuple[DeliveryRecord, ...] | None = None
) -> MessageRecord:
    """A 内部 document.official from prov-oa to city-2201-oa, recorded now (a quarantined one with a marking, a
    rejected one with its error)."""
    mid = str(uuid.uuid4())
    now = datetime.now(UTC)
    return MessageRecord(
        message_id=mid,
        conversation_id=str(uuid.uuid4()),
        sender_agency=AGENCY,
        sender_system="prov-oa",
        service="document.official",
        version=1,
        classification=1,
        classification_label="内部",
        urgency="平件",
        created=now,
        expires=now + timedelta(days=1),
        raw=raw if raw is not None else f"<Envelope id='{mid}'>签名</Envelope>".encode(),
        deliveries=deliveries if deliveries is not None else (DeliveryRecord(AGENCY, "city-2201-oa", "to"),),
        signer_serial=1234,
        signer_fingerprint="ab" * 32,
        state=state,  # type: ignore[arg-type]
        markings=("机密★",) if state == "quarantined" else (),
        error_code="SERVICE_NOT_ALLOWED" if state == "rejected" else None,
        error_reason="not allowed" if state == "rejected" else None,
    )
