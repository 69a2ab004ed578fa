"""The gateway's OpenAPI 3.1 document, served at ``/openapi.json`` (pure: a Python dict).

Every status the server gives is listed with its body and headers: a signed answer of the hub is ``application/xml``
(``hub.receipt`` / ``hub.error``), a refusal by the gateway itself is JSON ``{code, title, detail}``; both carry
``X-Hub-Code`` when they refuse.
"""

from __future__ import annotations

from typing import Any

from hub.gateway.config import MAX_POLL_S
from hub.gateway.status import GATEWAY_STATUS
from hub.transport.names import LATER_DELAYS_S

__all__ = [
    "MAX_ACK_BODY",
    "MAX_ACK_TAGS",
    "MAX_POLL_ITEMS",
    "MAX_SENT_PAGE",
    "MAX_SENT_SERVICES",
    "MAX_SENT_WINDOW_DAYS",
    "document",
]

#: Limits of the endpoints, stated here and enforced by hub.gateway.app: deliveries one poll hands out, tags one
#: acknowledgement takes, and its JSON body.
MAX_POLL_ITEMS = 64
MAX_ACK_TAGS = 256
MAX_ACK_BODY = 64 * 1024
#: GET /v1/messages: messages a page lists at most (50 unless asked), and the longest window (since … until) in days.
MAX_SENT_PAGE = 200
MAX_SENT_WINDOW_DAYS = 31
#: GET /v1/messages?service=: services one listing names at most.
MAX_SENT_SERVICES = 16

_REF = "#/components"


def _xml(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


def _error_json() -> dict[str, Any]:
    return {"schema": {"$ref": f"{_REF}/schemas/Error"}}


def _headers(*names: str) -> dict[str, Any]:
    return {n: {"$ref": f"{_REF}/headers/{n}"} for n in names}


def _refusal(description: str, *, xml: bool = False, retry: bool = False) -> dict[str, Any]:
    """A refusal: JSON from the gateway, and (``xml``) the hub's signed hub.error."""
    content: dict[str, Any] = {"application/json": _error_json()}
    if xml:
        content["application/xml"] = {"schema": {"type": "string"}}
    headers = ["X-Hub-Code"] + (["Retry-After"] if retry else [])
    if xml:
        headers.append("X-Hub-Message-Id")
    return {"description": description, "content": content, "headers": _headers(*headers)}


def _sent_message(**more: dict[str, Any]) -> dict[str, Any]:
    """A message the system sent, as GET /v1/messages lists it (``more``: what GET /v1/messages/{id} adds)."""
    properties: dict[str, Any] = {
        "message_id": {"type": "string", "format": "uuid"},
        "service": {"type": "string", "description": "name/version"},
        "urgency": {"type": "string"},
        "classification": {"type": "string"},
        "state": {"enum": ["accepted", "rejected", "quarantined", "released", "quarantine_rejected"]},
        "error_code": {"type": ["string", "null"]},
        "received_at": {"type": "string", "format": "date-time"},
        "deliveries": {"type": "array", "items": {"$ref": f"{_REF}/schemas/Delivery"}},
        **more,
    }
    return {"type": "object", "required": list(properties), "additionalProperties": False, "properties": properties}


def _common() -> dict[str, Any]:
    """What every /v1 operation can answer before its handler runs."""
    return {
        "401": {"$ref": f"{_REF}/responses/NoCertificate"},
        "403": {"$ref": f"{_REF}/responses/Forbidden"},
        "429": {"$ref": f"{_REF}/responses/RateLimited"},
        "503": {"$ref": f"{_REF}/responses/Unavailable"},
        "500": {"$ref": f"{_REF}/responses/Internal"},
    }


def document(max_message_bytes: int = 4 * 1024 * 1024) -> dict[str, Any]:
    """The OpenAPI document (``max_message_bytes``: the body limit, ``Settings.max_message_bytes``)."""
    answer_headers = _headers("X-Hub-Message-Id")
    submit_responses: dict[str, Any] = {
        "202": {
            "description": "accepted (or quarantined for review): the hub's signed hub.receipt",
            "headers": {**answer_headers, **_headers("X-Hub-Outcome")},
            "content": {"application/xml": _xml("hub.receipt, signed by the hub")},
        },
        "400": _refusal("invalid: not well-formed, not schema-valid, badly signed or expired (hub.error)", xml=True),
        "401": {"$ref": f"{_REF}/responses/NoCertificate"},
        "403": _refusal(
            "refused: by a route or the classification gate, or the certificate (revoked, not this directory's "
            "system, not the signed sender: CERT_SIGNER_MISMATCH, not registered for it: CERT_NOT_REGISTERED)",
            xml=True,
        ),
        "408": _refusal("the request body did not arrive in time (GATEWAY_READ_TIMEOUT)"),
        "409": {
            "description": "duplicate: the hub already holds this message id (signed hub.receipt, outcome duplicate; "
            "JSON MSG_DUPLICATE when the hub answered that copy before and has no new answer for it); or, JSON "
            "GATEWAY_LINK_CONFLICT, the system reads its queue over RabbitMQ: a system takes part one way",
            "headers": {**answer_headers, **_headers("X-Hub-Outcome", "X-Hub-Code")},
            "content": {"application/xml": _xml("hub.receipt, signed by the hub"), "application/json": _error_json()},
        },
        "413": _refusal(
            f"over the size limit of {max_message_bytes} bytes (checked on Content-Length before reading) or a "
            "parsing limit (ENV_TOO_LARGE, ENV_LIMIT)",
            xml=True,
        ),
        "415": _refusal("the body is not application/xml (GATEWAY_MEDIA_TYPE)"),
        "417": _refusal("an Expect header other than 100-continue (GATEWAY_BAD_REQUEST)"),
        "429": {"$ref": f"{_REF}/responses/RateLimited"},
        "500": _refusal(
            "the hub failed to examine the message (INTERNAL, signed hub.error), or the gateway failed (INTERNAL, "
            "JSON: a fault of its own, logged with its traceback; asking again meets it again)",
            xml=True,
        ),
        "503": _refusal(
            "the broker or the database is unavailable, the hub's CRLs are stale (CERT_CRL_UNAVAILABLE), or no "
            "answer within the gateway's answer timeout "
            "(GATEWAY_TIMEOUT: ask GET /v1/messages/{id} later), or no examiner process of the gateway could "
            "finish it (GATEWAY_UNAVAILABLE: send it again)",
            xml=True,
            retry=True,
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "林业政务交换枢纽 HTTPS gateway",
            "version": "1",
            "description": "Systems that cannot speak AMQP exchange the same signed XML envelopes over HTTPS with "
            "client certificates of the hub CA. The hub examines what they submit with its one processor.",
        },
        "servers": [{"url": "/"}],
        "security": [{"mutualTLS": []}],
        "paths": {
            "/v1/messages": {
                "post": {
                    "operationId": "submitMessage",
                    "summary": "Submit a signed envelope; the answer is the hub's signed receipt or error",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/xml": {"schema": {"type": "string", "maxLength": max_message_bytes}},
                            "text/xml": {"schema": {"type": "string", "maxLength": max_message_bytes}},
                        },
                    },
                    "responses": submit_responses,
                },
                "get": {
                    "operationId": "sentMessages",
                    "summary": "The messages this system sent in a window, oldest first, with each recipient's "
                    "delivery (发文跟踪: who has signed for, read, handled each)",
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "description": "received by the hub at or after this time (with its offset; a + in a URL "
                            "is %2B); default a day before now",
                            "schema": {"type": "string", "format": "date-time"},
                        },
                        {
                            "name": "until",
                            "in": "query",
                            "required": False,
                            "description": f"received before this time; default now. At most {MAX_SENT_WINDOW_DAYS} "
                            "days after since",
                            "schema": {"type": "string", "format": "date-time"},
                        },
                        {
                            "name": "delivery",
                            "in": "query",
                            "required": False,
                            "description": "only messages with a delivery in one of these states, separated by "
                            "commas: pending,failed,delivered lists those not yet signed for (签收) by every recipient",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "service",
                            "in": "query",
                            "required": False,
                            "description": "only messages of these services (names, any version), separated by "
                            f"commas, at most {MAX_SENT_SERVICES}: document.official lists the 公文 without the "
                            "receipts the system sent",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": "messages a page lists at most",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SENT_PAGE, "default": 50},
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "description": "the next value of the page before (with the same since, until, "
                            "delivery and service)",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "a page of the window's messages",
                            "content": {"application/json": {"schema": {"$ref": f"{_REF}/schemas/SentMessages"}}},
                        },
                        "400": _refusal(
                            "since or until not a date and time with its offset, since not before until, a window "
                            f"over {MAX_SENT_WINDOW_DAYS} days, an unknown delivery state or service, limit not a "
                            "whole number "
                            f"from 1 to {MAX_SENT_PAGE}, or after not a next value (GATEWAY_BAD_REQUEST)"
                        ),
                        **_common(),
                    },
                },
            },
            "/v1/messages/{id}": {
                "get": {
                    "operationId": "messageState",
                    "summary": "The state of a message this system sent (deliveries per recipient, answers)",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "the message's state",
                            "content": {"application/json": {"schema": {"$ref": f"{_REF}/schemas/MessageState"}}},
                        },
                        "404": {"$ref": f"{_REF}/responses/NotFound"},
                        **_common(),
                    },
                }
            },
            "/v1/inbox": {
                "get": {
                    "operationId": "pollInbox",
                    "summary": "Long-poll this system's queue for its next delivery",
                    "parameters": [
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "description": (
                                "the longest to wait for a delivery, in seconds (default 0); the gateway may answer "
                                "204 sooner. Deliveries that were already waiting when the gateway started reading "
                                "this system's queue (its first poll, or the first after two minutes without one) are "
                                "handed out even with 0: the poll then waits up to 2 s for the first of them"
                            ),
                            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_POLL_S, "default": 0},
                        },
                        {
                            "name": "max",
                            "in": "query",
                            "required": False,
                            "description": (
                                "up to this many deliveries at once, as multipart/mixed (each part one delivery with "
                                "its own X-Hub-Delivery-Tag, X-Hub-Message-Id and X-Hub-Kind); the first is waited "
                                "for, the rest are what is there. Without it: one delivery, the body itself"
                            ),
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_POLL_ITEMS},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "the next delivery (hub-signed XML; or an answer of the hub nobody waited "
                            "for); acknowledge it with POST /v1/inbox/{tag}/ack within the visibility timeout, or it "
                            "comes back",
                            "headers": _headers("X-Hub-Delivery-Tag", "X-Hub-Message-Id", "X-Hub-Kind"),
                            "content": {
                                "application/xml": _xml("the delivered envelope, signed by the hub"),
                                "multipart/mixed": _xml("with max: the deliveries, one a part (application/xml)"),
                            },
                        },
                        "204": {"description": "nothing arrived within the wait"},
                        "400": _refusal(
                            f"wait is not a whole number from 0 to {MAX_POLL_S}, or max not one from 1 to "
                            f"{MAX_POLL_ITEMS} (GATEWAY_BAD_REQUEST)"
                        ),
                        "409": _refusal(
                            "the system reads its queue over RabbitMQ (a consumer logged in as its own broker user): "
                            "a system takes part one way (GATEWAY_LINK_CONFLICT)"
                        ),
                        **_common(),
                    },
                }
            },
            "/v1/inbox/ack": {
                "post": {
                    "operationId": "ackDeliveries",
                    "summary": "Acknowledge several deliveries handed out by GET /v1/inbox in one request",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": f"{_REF}/schemas/Tags"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "which tags were acknowledged, which are unknown (acknowledged "
                            "already, or gone back after their visibility timeout), and which another gateway issued "
                            "(elsewhere: not acknowledged; only that gateway can, so a load balancer must keep a "
                            "client on one gateway)",
                            "content": {"application/json": {"schema": {"$ref": f"{_REF}/schemas/Acknowledged"}}},
                        },
                        "400": _refusal(f"not 1 to {MAX_ACK_TAGS} tags (GATEWAY_BAD_REQUEST)"),
                        "408": _refusal("the request body did not arrive in time (GATEWAY_READ_TIMEOUT)"),
                        "413": _refusal(f"over {MAX_ACK_BODY} bytes (ENV_TOO_LARGE)"),
                        "415": _refusal("the body is not application/json (GATEWAY_MEDIA_TYPE)"),
                        **_common(),
                    },
                }
            },
            "/v1/inbox/{tag}/ack": {
                "post": {
                    "operationId": "ackDelivery",
                    "summary": "Acknowledge a delivery handed out by GET /v1/inbox",
                    "parameters": [
                        {"name": "tag", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "204": {"description": "acknowledged: the hub will not deliver it again"},
                        "404": {"$ref": f"{_REF}/responses/NotFound"},
                        "421": {"$ref": f"{_REF}/responses/TagElsewhere"},
                        **_common(),
                    },
                }
            },
            "/v1/inbox/{tag}/release": {
                "post": {
                    "operationId": "releaseDelivery",
                    "summary": "Put a delivery handed out by GET /v1/inbox back at once (the next poll hands it out), "
                    "or with after=S back into this system's queue after S seconds",
                    "parameters": [
                        {"name": "tag", "in": "path", "required": True, "schema": {"type": "string"}},
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "description": (
                                "hand it out again only after this many seconds, rounded up to the next of "
                                + ", ".join(str(d) for d in LATER_DELAYS_S)
                                + ": it waits in the hub's broker meanwhile (acknowledged here: it no longer counts "
                                "against what this system has in hand, and a restart does not cut the wait short)"
                            ),
                            "schema": {"type": "integer", "minimum": 1, "maximum": LATER_DELAYS_S[-1]},
                        },
                    ],
                    "responses": {
                        "204": {
                            "description": "put back: the next poll (of this system) hands it out again; with after, "
                            "once that time has passed"
                        },
                        "400": _refusal(
                            f"after is not a whole number from 1 to {LATER_DELAYS_S[-1]} (GATEWAY_BAD_REQUEST)"
                        ),
                        "404": {"$ref": f"{_REF}/responses/NotFound"},
                        "421": {"$ref": f"{_REF}/responses/TagElsewhere"},
                        **_common(),
                    },
                }
            },
            "/v1/inbox/{tag}/refuse": {
                "post": {
                    "operationId": "refuseDelivery",
                    "summary": "Refuse a delivery the system will never take: the hub parks it in its dead-letter "
                    "queue with this system's code and reason, where its operators see it, and acknowledges it",
                    "parameters": [
                        {"name": "tag", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": f"{_REF}/schemas/Refusal"}}},
                    },
                    "responses": {
                        "204": {"description": "parked with the reason and acknowledged: it is not delivered again"},
                        "400": _refusal("not a refusal object of the schema (GATEWAY_BAD_REQUEST)"),
                        "404": {"$ref": f"{_REF}/responses/NotFound"},
                        "421": {"$ref": f"{_REF}/responses/TagElsewhere"},
                        "408": _refusal("the request body did not arrive in time (GATEWAY_READ_TIMEOUT)"),
                        "413": _refusal("over 8192 bytes (ENV_TOO_LARGE)"),
                        "415": _refusal("the body is not application/json (GATEWAY_MEDIA_TYPE)"),
                        **_common(),
                    },
                }
            },
            "/v1/crl": {
                "get": {
                    "operationId": "currentCrls",
                    "summary": "The hub CA's current certificate revocation lists (the root's and every issuing "
                    "CA's, also after an issuing-CA rollover): an agency's adapter keeps its crl/ folder fresh with "
                    "them, checking each signature itself",
                    "responses": {
                        "200": {
                            "description": "the CRLs the gateway's trust store holds, ordered by file name; each with "
                            "the certificate of the CA that signed it (an issuing CA's chains to the hub root)",
                            "headers": {
                                "Cache-Control": {"description": "no-store", "schema": {"type": "string"}},
                            },
                            "content": {"application/json": {"schema": {"$ref": f"{_REF}/schemas/Crls"}}},
                        },
                        **_common(),
                    },
                }
            },
            "/ready": {
                "get": {
                    "operationId": "ready",
                    "summary": "Whether this gateway can serve now (for the load balancer; no client certificate)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "ready: every check passed",
                            "content": {"application/json": {"schema": {"$ref": f"{_REF}/schemas/Readiness"}}},
                        },
                        "503": {
                            "description": "not ready (GATEWAY_NOT_READY): the failing checks name why",
                            "headers": _headers("X-Hub-Code"),
                            "content": {"application/json": {"schema": {"$ref": f"{_REF}/schemas/Readiness"}}},
                        },
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {"description": "the OpenAPI document", "content": {"application/json": {}}},
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "mutualTLS": {
                    "type": "mutualTLS",
                    "description": "a certificate of the system issued by the hub CA with the clientAuth usage",
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "title", "detail"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {
                            "type": "string",
                            "description": "a stable code of hub.errors.CODES, e.g. "
                            + ", ".join(sorted(GATEWAY_STATUS)),
                        },
                        "title": {"type": "string", "description": "the code's Chinese title"},
                        "detail": {"type": "string", "description": "one English sentence"},
                    },
                },
                "Readiness": {
                    "type": "object",
                    "required": ["ready", "checks"],
                    "additionalProperties": False,
                    "properties": {
                        "ready": {"type": "boolean"},
                        "code": {"type": "string", "enum": ["GATEWAY_NOT_READY"]},
                        "title": {"type": "string"},
                        "checks": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "ok"],
                                "additionalProperties": False,
                                "properties": {
                                    "name": {
                                        "type": "string",
                                        "enum": ["broker", "store", "examination", "revocation", "stopping"],
                                    },
                                    "ok": {"type": "boolean"},
                                    "code": {"type": "string", "pattern": "^GATEWAY_READY_[A-Z]+$"},
                                    "title": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "Crls": {
                    "type": "object",
                    "required": ["crls"],
                    "additionalProperties": False,
                    "properties": {"crls": {"type": "array", "items": {"$ref": f"{_REF}/schemas/Crl"}}},
                },
                "Crl": {
                    "type": "object",
                    "required": [
                        "name",
                        "issuer",
                        "issuer_sha256",
                        "number",
                        "this_update",
                        "next_update",
                        "der_base64",
                        "issuer_der_base64",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "name": {
                            "type": "string",
                            "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*\\.crl$",
                            "description": "the file name in the hub's pki/crl/ (root-ca.crl, issuing-ca.crl, "
                            "issuing-ca-<serial>.crl for an earlier issuing CA)",
                        },
                        "issuer": {"type": "string", "description": "the common name of the CA that signed it"},
                        "issuer_sha256": {
                            "type": "string",
                            "pattern": "^[0-9a-f]{64}$",
                            "description": "SHA-256 of that CA's certificate (DER)",
                        },
                        "number": {"type": "integer", "minimum": 0, "description": "the CRL number"},
                        "this_update": {"type": "string", "format": "date-time"},
                        "next_update": {
                            "type": "string",
                            "format": "date-time",
                            "description": "after this the CRL is stale: verifiers refuse with CERT_CRL_UNAVAILABLE",
                        },
                        "der_base64": {
                            "type": "string",
                            "contentEncoding": "base64",
                            "description": "the CRL, DER, base64",
                        },
                        "issuer_der_base64": {
                            "type": "string",
                            "contentEncoding": "base64",
                            "description": "the certificate of the CA that signed it, DER, base64",
                        },
                    },
                },
                "Tags": {
                    "type": "object",
                    "required": ["tags"],
                    "additionalProperties": False,
                    "properties": {
                        "tags": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_ACK_TAGS,
                            "items": {"type": "string", "minLength": 1, "maxLength": 200},
                        }
                    },
                },
                "Acknowledged": {
                    "type": "object",
                    "required": ["acknowledged", "unknown", "elsewhere"],
                    "additionalProperties": False,
                    "properties": {
                        "acknowledged": {"type": "array", "items": {"type": "string"}},
                        "unknown": {"type": "array", "items": {"type": "string"}},
                        "elsewhere": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Refusal": {
                    "type": "object",
                    "required": ["code", "reason"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {
                            "type": "string",
                            "pattern": "^[A-Z][A-Z0-9_]{1,63}$",
                            "description": "the system's stable code for the refusal, e.g. SIG_INVALID",
                        },
                        "reason": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 1000,
                            "pattern": "\\S",
                            "description": "why, in a sentence an operator can act on",
                        },
                    },
                },
                "Delivery": {
                    "type": "object",
                    "required": ["recipient_system", "recipient_agency", "role", "state", "error_code", "times"],
                    "additionalProperties": False,
                    "properties": {
                        "recipient_system": {"type": "string"},
                        "recipient_agency": {"type": "string"},
                        "role": {"enum": ["to", "cc"]},
                        "state": {
                            "enum": [
                                "pending",
                                "delivered",
                                "blocked",
                                "received",
                                "read",
                                "handled",
                                "feedback",
                                "failed",
                            ]
                        },
                        "error_code": {"type": ["string", "null"]},
                        "times": {
                            "type": "object",
                            "description": "when the delivery reached each state",
                            "additionalProperties": {"type": "string", "format": "date-time"},
                        },
                    },
                },
                "Receipt": {
                    "type": "object",
                    "required": ["receipt_id", "kind", "recipient_system", "code", "at"],
                    "additionalProperties": False,
                    "properties": {
                        "receipt_id": {"type": "string", "format": "uuid"},
                        "kind": {"enum": ["hub.receipt", "hub.error"]},
                        "recipient_system": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                        "at": {"type": "string", "format": "date-time"},
                    },
                },
                "SentMessages": {
                    "type": "object",
                    "required": ["since", "until", "messages", "next"],
                    "additionalProperties": False,
                    "properties": {
                        "since": {"type": "string", "format": "date-time"},
                        "until": {"type": "string", "format": "date-time"},
                        "messages": {"type": "array", "items": {"$ref": f"{_REF}/schemas/SentMessage"}},
                        "next": {
                            "type": ["string", "null"],
                            "description": "pass as after for the next page; null: the window has no more",
                        },
                    },
                },
                "SentMessage": _sent_message(),
                "MessageState": _sent_message(receipts={"type": "array", "items": {"$ref": f"{_REF}/schemas/Receipt"}}),
            },
            "headers": {
                "X-Hub-Code": {"description": "the refusal's stable code", "schema": {"type": "string"}},
                "X-Hub-Outcome": {
                    "description": "the receipt's outcome",
                    "schema": {"enum": ["accepted", "quarantined", "duplicate"]},
                },
                "X-Hub-Message-Id": {"description": "the message id", "schema": {"type": "string"}},
                "X-Hub-Delivery-Tag": {
                    "description": "opaque token for POST /v1/inbox/{tag}/ack, naming the gateway that issued it "
                    "(an 8-hex-digit instance id, a dot, a random part): only that gateway can settle it",
                    "schema": {"type": "string"},
                },
                "X-Hub-Kind": {
                    "description": "delivery, or receipt/error (an answer of the hub nobody waited for)",
                    "schema": {"type": "string"},
                },
                "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "string"}},
            },
            "responses": {
                "NoCertificate": {
                    "description": "no client certificate (GATEWAY_NO_CERTIFICATE)",
                    "headers": _headers("X-Hub-Code"),
                    "content": {"application/json": _error_json()},
                },
                "Forbidden": {
                    "description": "the certificate is revoked (CERT_REVOKED), expired or not yet valid "
                    "(CERT_EXPIRED), not for TLS clients, not an agency system of the directory "
                    "(GATEWAY_UNKNOWN_SYSTEM), not one the directory registers for the system (CERT_NOT_REGISTERED), "
                    "or presented from an address the directory does not list for the system (GATEWAY_ADDRESS_REFUSED)",
                    "headers": _headers("X-Hub-Code"),
                    "content": {"application/json": _error_json()},
                },
                "NotFound": {
                    "description": "unknown, or not this system's (GATEWAY_NOT_FOUND)",
                    "headers": _headers("X-Hub-Code"),
                    "content": {"application/json": _error_json()},
                },
                "TagElsewhere": {
                    "description": "the tag was issued by another gateway, which alone holds the delivery "
                    "(GATEWAY_TAG_ELSEWHERE): a load balancer must keep a client on one gateway (source affinity)",
                    "headers": _headers("X-Hub-Code"),
                    "content": {"application/json": _error_json()},
                },
                "RateLimited": {
                    "description": "over the system's rate or concurrent-request cap (GATEWAY_RATE_LIMITED, "
                    "GATEWAY_CONCURRENCY)",
                    "headers": _headers("X-Hub-Code", "Retry-After"),
                    "content": {"application/json": _error_json()},
                },
                "Internal": {
                    "description": "the gateway failed (INTERNAL): a fault of its own, logged with its traceback, "
                    "for the hub's operators to fix; asking again meets it again",
                    "headers": _headers("X-Hub-Code"),
                    "content": {"application/json": _error_json()},
                },
                "Unavailable": {
                    "description": "the broker or the database is unavailable (DELIVERY_*, STORE_*), or the hub's "
                    "CRLs are stale so no client certificate can be checked (CERT_CRL_UNAVAILABLE)",
                    "headers": _headers("X-Hub-Code", "Retry-After"),
                    "content": {"application/json": _error_json()},
                },
            },
        },
    }
