"""The one table from the hub's answers and stable error codes to HTTP statuses (pure).

A signed ``hub.receipt``: accepted or quarantined → 202, duplicate → 409. A signed ``hub.error`` or a refusal by the
gateway itself: by the code's family, the specific codes first::

    ENV_LIMIT, ENV_TOO_LARGE                        413   the message is over a size or resource limit
    MSG_DUPLICATE                                   409
    ENV_* SCHEMA_* SIG_* MSG_*                      400   invalid (not well-formed, not schema-valid, badly signed,
                                                          expired or dated in the future)
    ROUTE_* GATE_* CERT_* LANE_*                    403   refused by a route, the classification gate, the PKI or
                                                          the emergency lane's entitlement
    DELIVERY_* STORE_* AMQP_*                       503   the broker or the database is unavailable
    GATEWAY_*                                       see GATEWAY_STATUS
    anything else (INTERNAL, CONFIG …)              500
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "FAMILY_STATUS",
    "GATEWAY_STATUS",
    "RECEIPT_STATUS",
    "SPECIFIC_STATUS",
    "status_for_code",
    "status_for_receipt",
]

#: Codes whose status is not their family's.
SPECIFIC_STATUS: Final[dict[str, int]] = {
    "ENV_LIMIT": 413,
    "ENV_TOO_LARGE": 413,
    "MSG_DUPLICATE": 409,
}

#: The gateway's own refusals.
GATEWAY_STATUS: Final[dict[str, int]] = {
    "GATEWAY_NO_CERTIFICATE": 401,
    "GATEWAY_UNKNOWN_SYSTEM": 403,
    "GATEWAY_ADDRESS_REFUSED": 403,
    "GATEWAY_RATE_LIMITED": 429,
    "GATEWAY_CONCURRENCY": 429,
    "GATEWAY_TIMEOUT": 503,
    "GATEWAY_READ_TIMEOUT": 408,
    "GATEWAY_MEDIA_TYPE": 415,
    "GATEWAY_BAD_REQUEST": 400,
    "GATEWAY_NOT_FOUND": 404,
    "GATEWAY_TAG_ELSEWHERE": 421,
    "GATEWAY_METHOD": 405,
    "GATEWAY_UNAVAILABLE": 503,
    "GATEWAY_LINK_CONFLICT": 409,
    "GATEWAY_NOT_READY": 503,
    "GATEWAY_READY_BROKER": 503,
    "GATEWAY_READY_STORE": 503,
    "GATEWAY_READY_EXAMINERS": 503,
    "GATEWAY_READY_CRL": 503,
    "GATEWAY_READY_STOPPING": 503,
}

#: By the code's prefix (the part before the first ``_``).
FAMILY_STATUS: Final[dict[str, int]] = {
    "ENV": 400,
    "SCHEMA": 400,
    "SIG": 400,
    "MSG": 400,
    "ROUTE": 403,
    "GATE": 403,
    "CERT": 403,
    "LANE": 403,
    "DELIVERY": 503,
    "STORE": 503,
    "AMQP": 503,
}

#: A hub.receipt's outcome.
RECEIPT_STATUS: Final[dict[str, int]] = {"accepted": 202, "quarantined": 202, "duplicate": 409}


def status_for_code(code: str) -> int:
    """The HTTP status of a signed ``hub.error`` or a gateway refusal with this code."""
    if code in SPECIFIC_STATUS:
        return SPECIFIC_STATUS[code]
    if code in GATEWAY_STATUS:
        return GATEWAY_STATUS[code]
    return FAMILY_STATUS.get(code.split("_", 1)[0], 500)


def status_for_receipt(outcome: str) -> int:
    """The HTTP status of a signed ``hub.receipt`` with this outcome (an unknown outcome: 202)."""
    return RECEIPT_STATUS.get(outcome, 202)
