"""Envelopes: safe intake of untrusted bytes, the typed model, and the builder senders use."""

from hub.envelope.intake import DEFAULT_MAX_BYTES, parse
from hub.envelope.model import (
    CLASSIFICATIONS,
    DS_NS,
    ENV_NS,
    URGENCIES,
    Envelope,
    Party,
    Recipient,
    build,
    qn,
    service_namespace,
    to_bytes,
)

__all__ = [
    "CLASSIFICATIONS",
    "DEFAULT_MAX_BYTES",
    "DS_NS",
    "ENV_NS",
    "URGENCIES",
    "Envelope",
    "Party",
    "Recipient",
    "build",
    "parse",
    "qn",
    "service_namespace",
    "to_bytes",
]
