"""The gateway's aiohttp application: endpoints, the identity-and-limits middleware, the resources' lifetime.

``create_app(settings, gateway)`` builds the ``web.Application``; its ``cleanup_ctx`` connects PostgreSQL (the
directory, message states), RabbitMQ (the gateway's own connection as the hub's AMQP user: publishing to ``<ns>.in``
and the mailbox consumers) and loads the trust store; ``start_gateway`` serves it over TLS (``tls.server_ssl_context``)
and returns the running ``web.AppRunner``.

Submissions go through the hub's one processor. By default (``GatewaySettings.in_process``) the gateway runs the
pipeline's own batch code on them in this process (``hub.gateway.direct``: examined as an AMQP submission by the
certificate's system, ``CERT_SIGNER_MISMATCH`` when it is not the signed sender; recorded, delivered with confirms,
the hub's signed answer returned in the response). With ``in_process=False`` — and for a submission the in-process
path hands to the retry queue — the body goes to the inbound exchange, on the lane the envelope names, as the hub's
AMQP user with ``x-hub-origin-user = Names.user(<certificate's system>)`` (``Incoming.publisher`` trusts that header
only on the hub user's own publishes), a worker examines it exactly as an AMQP submission by that system and answers
on the system's queue, where the mailbox hands the answer to the waiting request.

With ``GatewaySettings.examiners = N`` that batch code runs in N examiner processes beside this one
(``hub.gateway.examiners``): this process keeps TLS, HTTP, identities, limits and the inbox, and the examination
uses more than one core.

Every request is counted by endpoint and status, with its time (``hub.metrics``: ``hub_gateway_requests_total``,
``hub_gateway_request_seconds``), and the process keeps a heartbeat while the application runs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import functools
import html
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from hub.aio import cancelling, stopped
from hub.envelope.xsdvalue import xsd_datetime
from hub.errors import HubError, title_of
from hub.gateway.config import MAX_POLL_S, GatewaySettings
from hub.gateway.direct import Direct
from hub.gateway.examiners import ExaminerPool
from hub.gateway.identity import ClientIdentity, Identifier, Refused
from hub.gateway.limits import Limits, limits_of
from hub.gateway.links import LinkGuard
from hub.gateway.mailbox import Answer, InboxItem, Mailbox
from hub.gateway.openapi import MAX_ACK_BODY, MAX_ACK_TAGS, MAX_POLL_ITEMS, MAX_SENT_PAGE, MAX_SENT_WINDOW_DAYS
from hub.gateway.proxy_header import Networks, networks, trusted
from hub.gateway.readiness import Readiness
from hub.gateway.status import status_for_code, status_for_receipt
from hub.gateway.tls import ServerCredentials, TlsServer, peer_of, serve_tls
from hub.metrics import count_refusal, count_request, heartbeat, polled
from hub.routing import load_routes, route_files
from hub.settings import Settings
from hub.store.gateway_activity import FLUSH_S as ACTIVITY_FLUSH_S
from hub.store.gateway_activity import GatewayActivity
from hub.store.records import DELIVERY_RANK
from hub.transport.names import LATER_DELAYS_S
from hub.trust.pki import serial_hex

__all__ = [
    "GATEWAY_SETTINGS",
    "IDENTITY",
    "SETTINGS",
    "STATE",
    "GatewayState",
    "create_app",
    "start_gateway",
]

log = logging.getLogger("hub.gateway")

#: The hub's settings, the gateway's settings, the connected resources (set by the cleanup context).
SETTINGS = web.AppKey("settings", Settings)
GATEWAY_SETTINGS = web.AppKey("gateway_settings", GatewaySettings)
#: The calling system of a request (set by the middleware).
IDENTITY = web.RequestKey("identity", ClientIdentity)

XML = "application/xml"
_XML_TYPES = frozenset({"application/xml", "text/xml"})
#: A message id the hub can answer about: the envelope XSD's UUID form (anything else gets a fresh one).
_MESSAGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: What the gateway reads of a submission without parsing it (the lane and the id to wait for; the hub parses,
#: validates and verifies it, and re-derives everything from the signed envelope): the header's first fields.
_HEADER_FIELD = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(MessageId|Service|Urgency)\b([^>]*)>([^<]{0,64})<", re.ASCII)
_SERVICE_NAME = re.compile(rb'\bname="([a-z][a-z0-9.]{0,63})"')
#: The outcome or code of the hub's own canonical answers (hub.pipeline.replies and Processor.error write them).
_RECEIPT_OUTCOME = re.compile(rb"<Outcome>(accepted|duplicate|quarantined)</Outcome>")
_ERROR_CODE = re.compile(rb"<Code>([A-Z][A-Z0-9_]{1,63})</Code>")
_HEADER_SCAN = 4096
#: POST /v1/inbox/{tag}/refuse: the system's code (shaped as the hub's own) and reason, in at most this much JSON.
_REFUSAL_CODE = re.compile(r"[A-Z][A-Z0-9_]{1,63}")
MAX_REFUSAL_REASON = 1000
MAX_REFUSAL_BODY = 8192
#: Paths served without a client certificate.
_PUBLIC = frozenset({"/openapi.json", "/ready"})


@dataclass(slots=True)
class GatewayState:
    """What the handlers use, connected once per application."""

    transport: Any
    pool: Any
    mailbox: Mailbox
    identifier: Identifier
    limits: Limits
    #: The in-process path (``GatewaySettings.in_process``; with examiners, their pool), else None: submissions go
    #: through the inbound queue.
    direct: Direct | ExaminerPool | None = None
    #: Polls and refusals for the ops overview, written to the store by a task of the gateway (``_record_activity``).
    activity: GatewayActivity = field(default_factory=GatewayActivity)
    #: ``GET /ready`` for the load balancer (``hub.gateway.readiness``).
    readiness: Readiness | None = None
    #: The server the gateway listens on (``start_gateway``): the clients' addresses behind a load balancer.
    listener: TlsServer | None = None
    #: ``GET /v1/crl``'s list, as built for the trust store's generation it was read at (``_crl_entries``).
    crl_entries: tuple[int, list[dict[str, Any]]] | None = None


STATE = web.AppKey("gateway_state", GatewayState)


# ------------------------------------------------------------------------------------------------ responses


def error_response(status: int, code: str, detail: str, *, retry_after: int | None = None) -> web.Response:
    """A JSON refusal ``{code, title, detail}`` with ``X-Hub-Code`` (and ``Retry-After``)."""
    headers = {"X-Hub-Code": code}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = json.dumps({"code": code, "title": title_of(code), "detail": detail}, ensure_ascii=False)
    resp = web.Response(status=status, text=body, content_type="application/json", headers=headers)
    if status in (408, 413, 417):
        resp.force_close()  # the rest of the body was not read
    return resp


def _answer_of(answer: Answer, max_bytes: int) -> tuple[str, str] | None:
    """("receipt", outcome) or ("error", code) of the hub's own answer. Its canonical form is read directly (one
    search, the hub wrote it); anything else is parsed as the client would."""
    found = (_RECEIPT_OUTCOME if answer.kind == "receipt" else _ERROR_CODE).search(answer.body)
    if found is not None and answer.kind in ("receipt", "error"):
        return answer.kind, found.group(1).decode("ascii")
    from hub.envelope import Envelope, parse
    from hub.pipeline.client import read_reply

    try:
        reply = read_reply(Envelope.from_tree(parse(answer.body, max_bytes=max_bytes)))
    except (HubError, ValueError, IndexError):
        return None
    return (reply.kind, reply.outcome) if reply is not None else None


def _answer_response(answer: Answer, message_id: str, max_bytes: int) -> web.Response:
    """The hub's signed answer, verbatim, with the status its outcome or code maps to."""
    headers = {"X-Hub-Message-Id": message_id}
    reply = _answer_of(answer, max_bytes)
    if reply is None:  # pragma: no cover - the hub's own answers always parse
        status = 202 if answer.kind == "receipt" else 500
    elif reply[0] == "receipt":
        status = status_for_receipt(reply[1])
        headers["X-Hub-Outcome"] = reply[1]
        if reply[1] == "duplicate":
            headers["X-Hub-Code"] = "MSG_DUPLICATE"
    else:
        status = status_for_code(reply[1])
        headers["X-Hub-Code"] = reply[1]
    return web.Response(status=status, body=answer.body, content_type=XML, headers=headers)


# ------------------------------------------------------------------------------------------------ middleware


#: A path served for two methods: the second gets a label of its own, so that ``/v1/messages`` stays the
#: submissions' (the ops page's submission latency and every dashboard read it as such), not mixed with listings.
_SHARED_PATHS = {("GET", "/v1/messages"): "GET /v1/messages"}


@web.middleware
async def _measured(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    """Count the request by endpoint (its route's pattern; ``other`` when none matched) and status, with its time.
    A client that went away before its answer counts as 499. The gateway's own refusals (its JSON answers with a
    code) are counted and logged by system too (``_refused``), but for 404: an answer that a message, delivery tag or
    path is not there (the SDK asks for a message nobody sent to learn that its certificate is taken), not a refusal
    of the system."""
    started = time.perf_counter()
    resource = request.match_info.route.resource
    endpoint = resource.canonical if resource is not None else "other"
    endpoint = _SHARED_PATHS.get((request.method, endpoint), endpoint)
    status = 499
    refused = False
    try:
        resp = await handler(request)
        status = resp.status
        refused = status >= 400 and resp.content_type == "application/json"  # the gateway's own, not the hub's answer
        if refused and status != 404 and endpoint != "/ready":
            code = resp.headers.get("X-Hub-Code")
            if code is not None:
                _refused(request, endpoint, code, status)
        return resp
    except web.HTTPException as exc:
        status = exc.status
        refused = True
        raise
    finally:
        # Timed only when the request was served: the page's p99 of submissions is the hub's answers', not lowered
        # by the instant refusals a client hammering at 429 collects.
        count_request(endpoint, status, None if refused else time.perf_counter() - started)


#: One log line per system and code at most this often; the lines between are counted in the next one.
REFUSAL_LOG_EVERY_S = 60.0
#: (system, code) → (when its last line was written, refusals since then).
_refusal_log: dict[tuple[str, str], tuple[float, int]] = {}
#: The system a refused client certificate was issued to (``Refused.system``), for ``_refused``.
_REFUSED_AS = web.RequestKey("refused_as", str)
#: That certificate's serial (hex).
_REFUSED_CERT = web.RequestKey("refused_cert", str)


def _refused(request: web.Request, endpoint: str, code: str, status: int) -> None:
    """A refusal of the gateway's own, for the people on duty (``_note_refusal``): the system is the caller's, or the
    one a refused certificate was issued to."""
    identity = request.get(IDENTITY)
    system = identity.system if identity is not None else request.get(_REFUSED_AS)
    who = f"system {system}" if system else "a client without a certificate"
    if system and request.get(IDENTITY) is None and request.get(_REFUSED_CERT):
        who += f" (certificate {request[_REFUSED_CERT]})"
    _note_refusal(request.app, system, code, f"a request of {who} to {endpoint}: {status}", _client_address(request))


def _client_address(request: web.Request) -> str | None:
    """The client's address: through a load balancer, the one its PROXY header named (``tls.TlsServer.peer``)."""
    state = request.app.get(STATE)
    if state is not None and state.listener is not None:
        return state.listener.peer(request.transport)
    return peer_of(request.transport.get_extra_info("peername")) if request.transport is not None else None


@functools.lru_cache(maxsize=1024)
def _networks_of(addresses: tuple[str, ...]) -> Networks:
    return networks(addresses)


def _check_address(request: web.Request, identity: ClientIdentity) -> None:
    """A system the directory gives ``gateway-addresses`` is served from those networks only: its certificate from
    anywhere else (copied off the agency's machine, say) is refused 403 ``GATEWAY_ADDRESS_REFUSED``."""
    if not identity.addresses:
        return
    system = identity.system
    peer = _client_address(request)
    if peer is None or not trusted(peer.strip("[]"), _networks_of(identity.addresses)):
        raise Refused(
            403,
            "GATEWAY_ADDRESS_REFUSED",
            f"system {system}'s certificate came from {peer or 'an unknown address'}, which the directory does not "
            "list for it (gateway-addresses): the hub's operators add the network, or the system calls from one listed",
            system=system,
        )


def _handshake_refused(app: web.Application, code: str, what: str, peer: str | None) -> None:
    """A TLS handshake that failed (``tls.serve_tls``): no system is known, the certificate did not verify."""
    _note_refusal(app, None, code, f"a TLS handshake ({what}):", peer)


def _note_refusal(app: web.Application, system: str | None, code: str, what: str, peer: str | None) -> None:
    """Noted for the store (the ops overview's 网关拒绝 rows, ``hub.store.gateway_activity``), counted for Prometheus
    (``hub_gateway_refusals_total{system,code}``) and logged — one WARNING line at most every
    ``REFUSAL_LOG_EVERY_S`` per system and code (a client retrying with a revoked certificate every second would
    bury everything else)."""
    count_refusal(system, code)
    state = app.get(STATE)
    if state is not None:
        state.activity.refused(system, code, peer)
    key = (system or "-", code)
    now = time.monotonic()
    last, since = _refusal_log.get(key, (-REFUSAL_LOG_EVERY_S, 0))
    if now - last < REFUSAL_LOG_EVERY_S:
        _refusal_log[key] = (last, since + 1)
        return
    if len(_refusal_log) > 4096:  # bounded: systems of the CA's certificates × codes, but never a leak
        _refusal_log.clear()
    _refusal_log[key] = (now, 0)
    more = f" ({since} more since the last such line)" if since else ""
    log.warning("gateway refused %s %s %s from %s%s", what, code, title_of(code), peer or "an unknown address", more)


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    """Every refusal as JSON; for /v1: the client certificate's system, then its rate and concurrency limits."""
    try:
        if request.path in _PUBLIC:
            return await handler(request)
        state = request.app[STATE]
        identity = request.get(IDENTITY)
        if identity is None:  # not yet: Expect: 100-continue identified it (and counted it) already otherwise
            identity = _identified(request)
            state.activity.requested(identity.system)  # for the ops page: what of each system arrived (any gateway)
        with state.limits.admit(identity.system):
            return await handler(request)
    except Refused as exc:
        if exc.system is not None:
            request[_REFUSED_AS] = exc.system
        if exc.serial is not None:
            request[_REFUSED_CERT] = exc.serial
        return error_response(exc.status, exc.code, exc.detail, retry_after=exc.retry_after)
    except web.HTTPException as exc:
        if exc.status == 405:
            resp = error_response(405, "GATEWAY_METHOD", f"{request.method} is not allowed on {request.path}")
            if "Allow" in exc.headers:
                resp.headers["Allow"] = exc.headers["Allow"]
            return resp
        if exc.status == 404:
            return error_response(404, "GATEWAY_NOT_FOUND", f"nothing is served at {request.path}")
        return error_response(exc.status, "GATEWAY_BAD_REQUEST", exc.reason)
    except HubError as exc:
        status = status_for_code(exc.code)
        # ``_measured`` notes it as a refusal, one line a minute per system and code: a line per request here
        # flooded the log in a broker's or database's outage, when it must stay readable.
        log.debug("gateway request failed: %s", exc.describe())
        return error_response(status, exc.code, exc.detail, retry_after=5 if status == 503 else None)
    except (ConnectionError, asyncio.CancelledError):
        raise  # the client went away
    except Exception as exc:  # a bug: one JSON 500 with a stable code, the traceback in the log only
        log.exception("gateway request failed (%s)", type(exc).__name__)
        return error_response(500, "INTERNAL", f"the gateway failed ({type(exc).__name__})")


def _identified(request: web.Request) -> ClientIdentity:
    """The system of the client certificate, served from this address (``Refused`` otherwise); kept on the request."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    identity = request.app[STATE].identifier.identify(der)
    _check_address(request, identity)
    request[IDENTITY] = identity
    return identity


# ------------------------------------------------------------------------------------------------ handlers


async def _read_body(request: web.Request, max_bytes: int, timeout: float) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise Refused(413, "ENV_TOO_LARGE", f"the message is larger than {max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise Refused(408, "GATEWAY_READ_TIMEOUT", f"the request body did not arrive within {timeout:g} s") from None
    return b"".join(chunks)


#: A body larger than this that the search cannot read is parsed in a thread (``_route``): the parse of a 4 MB body
#: takes about 18 ms, which the gateway's event loop — every client's TLS and HTTP — must not wait for.
_INLINE_PARSE = 16 * 1024


async def _route(data: bytes) -> tuple[str, str, int]:
    """``_route_of``, with the hub's parse of a large body (when it is needed at all) off the event loop."""
    quick = _route_by_search(data)
    if quick is not None:
        return quick
    if len(data) > _INLINE_PARSE:
        slow = await asyncio.to_thread(_route_by_parse, data)  # lxml lets go of the GIL while it parses
    else:
        slow = _route_by_parse(data)
    return slow or (str(uuid.uuid4()), "normal", 0)


def _route_of(data: bytes) -> tuple[str, str, int]:
    """(message id, lane, priority) as the envelope's header names them, read by a bounded search without parsing
    (``_route_by_search``; the lane only orders the hub's work: the processor re-derives everything from the signed
    envelope); where the search cannot read the id, or a comment comes before what it read, the hub's own parse
    (``_route_by_parse``); failing that too, the normal lane under a fresh id (the processor refuses the body with
    its code and a signed error, which names that id)."""
    return _route_by_search(data) or _route_by_parse(data) or (str(uuid.uuid4()), "normal", 0)


def _route_by_search(data: bytes) -> tuple[str, str, int] | None:
    """``_route_of`` by the bounded search alone; None where it cannot be trusted (no id, a comment before it)."""
    from hub.transport.names import lane_for, priority_for

    fields: dict[bytes, tuple[bytes, bytes]] = {}
    read_to = 0
    for m in _HEADER_FIELD.finditer(data, 0, _HEADER_SCAN):  # the header comes first: its first occurrences
        fields.setdefault(m.group(1), (m.group(2), m.group(3)))
        read_to = m.end()
        if len(fields) == 3:
            break
    if data.find(b"<!--", 0, read_to) >= 0:  # what was read may be a comment's text, not the header's
        return None

    def text(field: bytes, part: int) -> str:
        raw = fields.get(field, (b"", b""))[part].decode("utf-8", "replace")
        return html.unescape(raw).strip() if "&" in raw else raw.strip()  # character references (&#29305;)

    mid = text(b"MessageId", 1)
    if not _MESSAGE_ID.fullmatch(mid):
        return None
    name = _SERVICE_NAME.search(text(b"Service", 0).encode("utf-8"))
    service = name.group(1).decode("ascii") if name else ""
    urgency = text(b"Urgency", 1)
    return mid, lane_for(service, urgency), priority_for(urgency)


def _route_by_parse(data: bytes) -> tuple[str, str, int] | None:
    """``_route_of`` the slow way, for the rare envelope the search cannot read but the hub can (its id in a CDATA
    section, a comment of more than ``_HEADER_SCAN`` bytes before the header): the hub's own hardened parse and header
    model, so the id waited for is the one the hub's answer names (a fresh id would wait in vain, and the submission
    be answered as a duplicate). None when that fails too: the processor refuses the body under the fresh id."""
    from hub.envelope import Envelope, parse
    from hub.transport.names import lane_for, priority_for

    try:
        env = Envelope.from_tree(parse(data, max_bytes=max(1, len(data))))
    except Exception:  # anything the parse or the model refuses: the processor says what, signed
        return None
    if not _MESSAGE_ID.fullmatch(env.message_id):
        return None
    return env.message_id, lane_for(env.service, env.urgency), priority_for(env.urgency)


async def submit(request: web.Request) -> web.StreamResponse:
    """POST /v1/messages: one signed envelope in, the hub's signed receipt or error out."""
    identity = request[IDENTITY]
    state = request.app[STATE]
    settings, gw = request.app[SETTINGS], request.app[GATEWAY_SETTINGS]
    if request.content_type not in _XML_TYPES:
        raise Refused(415, "GATEWAY_MEDIA_TYPE", f"send the envelope as {XML}, not {request.content_type}")
    max_bytes = settings.max_message_bytes
    if request.content_length is not None and request.content_length > max_bytes:
        raise Refused(413, "ENV_TOO_LARGE", f"the message ({request.content_length} bytes) is over {max_bytes} bytes")
    data = await _read_body(request, max_bytes, gw.body_timeout_s)
    with state.mailbox.in_use(identity.system):  # a system with a submission in progress is not idle (the mailbox)
        return await _submit(state, identity.system, data, gw, max_bytes)


async def _submit(state: Any, system: str, data: bytes, gw: GatewaySettings, max_bytes: int) -> web.StreamResponse:
    """A submission's body, read: examined in process (``direct``) or published for a worker, and answered."""
    from hub.transport.names import ORIGIN_USER_HEADER
    from hub.transport.topology import Outgoing

    message_id, lane, priority = await _route(data)
    mailbox, transport = state.mailbox, state.transport
    await mailbox.open(system)
    if state.direct is not None:
        resp, batch_logged = await _submit_direct(state.direct, system, data, message_id, lane, priority, gw, max_bytes)
        # The batch's decision line (this process) already says what the hub decided: this line only at DEBUG then.
        _log_submission(message_id, system, lane, resp, level=logging.DEBUG if batch_logged else logging.INFO)
        return resp
    answer = mailbox.expect(system, message_id)
    try:
        await transport.publish_many(
            [
                Outgoing(
                    exchange=transport.names.inbound_exchange,
                    routing_key=lane,
                    body=data,
                    headers={ORIGIN_USER_HEADER: transport.names.user(system)},
                    priority=priority,
                    message_id=message_id,
                    user_id=transport.user,
                )
            ]
        )
        got = await _wait_answer(answer, message_id, system, gw.answer_timeout_s)
        if isinstance(got, web.Response):
            return got
    finally:
        mailbox.forget(system, message_id, answer)
    resp = _answer_response(got, message_id, max_bytes)
    _log_submission(message_id, system, lane, resp)
    return resp


def _log_submission(message_id: str, system: str, lane: str, resp: web.Response, *, level: int = logging.INFO) -> None:
    if not log.isEnabledFor(level):
        return
    log.log(
        level,
        "gateway submission",
        extra={
            "message_id": message_id,
            "sender": system,
            "lane": lane,
            "status": resp.status,
            "code": resp.headers.get("X-Hub-Code") or resp.headers.get("X-Hub-Outcome"),
        },
    )


async def _wait_answer(
    answer: asyncio.Future[Answer], message_id: str, system: str, timeout: float
) -> Answer | web.Response:
    """The hub's answer from the system's queue, or the 503 ``GATEWAY_TIMEOUT`` response after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            return await answer
    except TimeoutError:
        return _not_answered(message_id, system, timeout)


def _not_answered(message_id: str, system: str, timeout: float) -> web.Response:
    """503 ``GATEWAY_TIMEOUT``: no answer within ``timeout`` (it goes to the inbox when it comes)."""
    resp = error_response(
        503,
        "GATEWAY_TIMEOUT",
        f"the hub did not answer about {message_id} within {timeout:g} s; its answer comes to "
        "GET /v1/inbox, its state is at GET /v1/messages/{id}",
        retry_after=5,
    )
    resp.headers["X-Hub-Message-Id"] = message_id
    log.warning("gateway submission not answered in time", extra={"message_id": message_id, "sender": system})
    return resp


async def _submit_direct(
    direct: Direct | ExaminerPool,
    system: str,
    data: bytes,
    message_id: str,
    lane: str,
    priority: int,
    gw: GatewaySettings,
    max_bytes: int,
) -> tuple[web.Response, bool]:
    """The in-process path (``hub.gateway.direct``): the hub's answer once the record is committed and the
    deliveries are confirmed; deferred to the retry queue: a worker's answer through the mailbox; nothing handed
    over: 503, resend. The second value: whether the answer came from this process's batch (its decision line)."""
    started = time.monotonic()
    try:  # bounded: an examiner or a database that hangs (rather than fails) must not hold the client for ever
        async with asyncio.timeout(gw.answer_timeout_s):
            outcome = await direct.submit(system, data, message_id, lane, priority)
    except TimeoutError:  # the submission was cancelled as for a client gone: its answer, once made, to the inbox
        return _not_answered(message_id, system, gw.answer_timeout_s), False
    if outcome.kind == "answer":
        assert outcome.answer is not None
        return _answer_response(outcome.answer, message_id, max_bytes), True
    if outcome.kind == "deferred":
        assert outcome.pending is not None
        try:
            left = max(0.0, gw.answer_timeout_s - (time.monotonic() - started))
            got = await _wait_answer(outcome.pending, message_id, system, left)
        finally:
            direct.mailbox.forget(system, message_id, outcome.pending)
        return (got if isinstance(got, web.Response) else _answer_response(got, message_id, max_bytes)), False
    if outcome.kind == "failed":
        err = outcome.error
        code = err.code if err is not None else "DELIVERY_BROKER"
        resp = error_response(
            503,
            code,
            f"the hub could not finish {message_id} now ({err.detail if err is not None else 'unavailable'}); "
            "send it again: a resend finishes what was begun, nothing is delivered twice under another id",
            retry_after=5,
        )
    elif outcome.kind == "parked" and outcome.error is not None:
        err = outcome.error
        resp = error_response(status_for_code(err.code), err.code, err.detail or title_of(err.code))
    else:
        resp = error_response(
            409,
            "MSG_DUPLICATE",
            f"the hub holds {message_id} already and answered it before; its state is at GET /v1/messages/{{id}}",
        )
    resp.headers["X-Hub-Message-Id"] = message_id
    return resp, outcome.kind == "none"


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` on POST /v1/messages: what would be refused — the certificate, the address, the
    system's rate and concurrency, a body over the limit — is refused before the client sends the body. aiohttp runs
    this before the middlewares, so a refusal here is counted and noted as ``_measured`` would."""
    try:
        system = _identified(request).system
        request.app[STATE].activity.requested(system)  # an identified request, whatever its answer (as _guard's)
        request.app[STATE].limits.check(system)
    except Refused as exc:
        if exc.system is not None:
            request[_REFUSED_AS] = exc.system
        if exc.serial is not None:
            request[_REFUSED_CERT] = exc.serial
        return _expect_refused(request, exc.status, exc.code, exc.detail, exc.retry_after)
    max_bytes = request.app[SETTINGS].max_message_bytes
    if request.content_length is not None and request.content_length > max_bytes:
        detail = f"the message ({request.content_length} bytes) is over {max_bytes} bytes"
        return _expect_refused(request, 413, "ENV_TOO_LARGE", detail, None)
    if request.headers.get("Expect", "").lower() != "100-continue":
        detail = "the only expectation understood is 100-continue"
        return _expect_refused(request, 417, "GATEWAY_BAD_REQUEST", detail, None)
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
    return None


def _expect_refused(request: web.Request, status: int, code: str, detail: str, retry_after: int | None) -> web.Response:
    resp = error_response(status, code, detail, retry_after=retry_after)
    if status != 404:
        _refused(request, "/v1/messages", code, status)
    count_request("/v1/messages", status, None)  # a refusal: counted, not timed (``_measured``)
    return resp


def _small_number(raw: str) -> bool:
    """Digits only, and few enough for ``int`` (past 4,300 it refuses them: a 500 once, not the 400 it should be)."""
    return raw.isascii() and raw.isdigit() and len(raw) <= 9


async def poll(request: web.Request) -> web.StreamResponse:
    """GET /v1/inbox?wait=N[&max=K]: the system's next delivery (or answer nobody waited for), or 204 after the wait.
    With ``max`` (1 to ``MAX_POLL_ITEMS``): up to that many at once, as ``multipart/mixed`` — each part one delivery
    with its own ``X-Hub-Delivery-Tag``, ``X-Hub-Message-Id`` and ``X-Hub-Kind`` — the first waited for, the rest
    what is there."""
    identity = request[IDENTITY]
    raw = request.query.get("wait", "0")
    if not _small_number(raw) or int(raw) > MAX_POLL_S:
        raise Refused(400, "GATEWAY_BAD_REQUEST", f"wait must be a whole number of seconds from 0 to {MAX_POLL_S}")
    many = request.query.get("max")
    if many is not None and (not _small_number(many) or not 1 <= int(many) <= MAX_POLL_ITEMS):
        raise Refused(400, "GATEWAY_BAD_REQUEST", f"max must be a whole number from 1 to {MAX_POLL_ITEMS}")
    mailbox = request.app[STATE].mailbox
    # A long poll may end early (the document promises at most ``wait`` seconds): ``poll_limit_s`` caps it.
    wait = min(float(raw), request.app[GATEWAY_SETTINGS].poll_limit_s)
    # The ops overview's 间歇轮询: when the poll began and when it ended, whatever its end.
    activity = request.app[STATE].activity
    _polled(activity, identity.system)
    try:
        items = await mailbox.next_items(identity.system, wait, int(many) if many is not None else 1)
    finally:
        _polled(activity, identity.system)
    if not items:
        empty = web.Response(status=204)
        if mailbox.polls_stopped.done():  # the gateway stops: the client's next poll goes to another one
            empty.force_close()
        return empty
    try:
        if request.transport is None or request.transport.is_closing():
            raise ConnectionResetError("the client went away")
        resp: web.Response
        if many is None:
            resp = web.Response(status=200, body=items[0].body, content_type=XML, headers=_item_headers(items[0]))
        else:
            with aiohttp.MultipartWriter("mixed") as parts:
                for item in items:
                    parts.append(item.body, {"Content-Type": XML, **_item_headers(item)})
            resp = web.Response(status=200, body=parts)
        await resp.prepare(request)
        await resp.write_eof()
    except BaseException:
        for item in items:  # the response could not be written: the items go back at once
            mailbox.release(identity.system, item.token)
        raise
    return resp


def _polled(activity: GatewayActivity, system: str) -> None:
    """``system`` is polling now: for the store (the ops overview, hub.store.gateway_activity) and Prometheus."""
    activity.polled(system)
    polled(system)


def _item_headers(item: InboxItem) -> dict[str, str]:
    return {
        "X-Hub-Delivery-Tag": item.token,
        "X-Hub-Message-Id": item.message_id,
        "X-Hub-Kind": str((item.msg.headers or {}).get("x-hub-kind", "delivery")),
    }


async def _json_body(request: web.Request, max_bytes: int, what: str) -> Any:
    """The request's JSON (None when it is not JSON): 415 for another media type, 413 over ``max_bytes`` (checked on
    Content-Length before reading, then while reading), 408 when it does not arrive in time."""
    if request.content_type != "application/json":
        raise Refused(415, "GATEWAY_MEDIA_TYPE", f"send {what} as application/json, not {request.content_type}")
    if request.content_length is not None and request.content_length > max_bytes:
        raise Refused(413, "ENV_TOO_LARGE", f"{what}: at most {max_bytes} bytes of JSON")
    raw = await _read_body(request, max_bytes, request.app[GATEWAY_SETTINGS].body_timeout_s)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: arrays nested a thousand deep (2 KB of '[')
        return None


async def ack_many(request: web.Request) -> web.StreamResponse:
    """POST /v1/inbox/ack ``{"tags": [...]}``: acknowledge several deliveries in one request; answers which tags were
    acknowledged, which are unknown (acknowledged already, or gone back after their visibility timeout) and which
    another gateway issued (``elsewhere``: not settled here; send them to that gateway)."""
    identity = request[IDENTITY]
    given = await _json_body(request, MAX_ACK_BODY, "the tags")
    tags = given.get("tags") if isinstance(given, dict) and set(given) == {"tags"} else None
    if (
        not isinstance(tags, list)
        or not 1 <= len(tags) <= MAX_ACK_TAGS
        or not all(isinstance(t, str) and 0 < len(t) <= 200 for t in tags)
    ):
        raise Refused(
            400, "GATEWAY_BAD_REQUEST", f'send {{"tags": [...]}}: 1 to {MAX_ACK_TAGS} tags from X-Hub-Delivery-Tag'
        )
    mailbox = request.app[STATE].mailbox
    done: list[str] = []
    unknown: list[str] = []
    elsewhere: list[str] = []  # issued by another gateway, which alone can settle them (``_not_here``)
    for tag in dict.fromkeys(tags):  # each tag once, in order
        if mailbox.issued_elsewhere(tag):
            elsewhere.append(tag)
        else:
            (done if await mailbox.ack(identity.system, tag) else unknown).append(tag)
    return web.json_response({"acknowledged": done, "unknown": unknown, "elsewhere": elsewhere})


#: Why a tag of another gateway is refused (421 ``GATEWAY_TAG_ELSEWHERE``), not taken for one acknowledged already.
ELSEWHERE_DETAIL = (
    "this delivery tag was issued by another gateway, or by this one before it restarted: not acknowledged here. "
    "After a restart the delivery went back to the queue and comes again; behind a load balancer that moved the "
    "client to another gateway, the balancer must keep a client on one gateway (source affinity: HAProxy "
    "'balance source', nginx 'hash $remote_addr consistent'). Unacknowledged, the delivery comes again after the "
    "visibility timeout"
)


def _not_here(mailbox: Mailbox, tag: str) -> None:
    """Refuse a tag another gateway issued: 421 ``GATEWAY_TAG_ELSEWHERE`` (a 404 would read as acknowledged)."""
    if mailbox.issued_elsewhere(tag):
        raise Refused(421, "GATEWAY_TAG_ELSEWHERE", ELSEWHERE_DETAIL)


async def ack(request: web.Request) -> web.StreamResponse:
    """POST /v1/inbox/{tag}/ack."""
    identity = request[IDENTITY]
    mailbox, tag = request.app[STATE].mailbox, request.match_info["tag"]
    _not_here(mailbox, tag)
    if not await mailbox.ack(identity.system, tag):
        raise Refused(404, "GATEWAY_NOT_FOUND", "no unacknowledged delivery with this tag (it may have gone back)")
    return web.Response(status=204)


async def release(request: web.Request) -> web.StreamResponse:
    """POST /v1/inbox/{tag}/release[?after=S]: put a delivery handed out back at once (the client cannot take it now;
    the next poll hands it out again, instead of after the visibility timeout) — or with ``after`` (1 to
    ``LATER_DELAYS_S[-1]`` seconds, rounded up to the next of ``LATER_DELAYS_S``) back into the queue after that
    long, waiting in the broker meanwhile (``Mailbox.put_off``)."""
    identity = request[IDENTITY]
    mailbox, tag = request.app[STATE].mailbox, request.match_info["tag"]
    raw = request.query.get("after")
    if raw is not None and (not _small_number(raw) or not 1 <= int(raw) <= LATER_DELAYS_S[-1]):
        raise Refused(
            400, "GATEWAY_BAD_REQUEST", f"after must be a whole number of seconds from 1 to {LATER_DELAYS_S[-1]}"
        )
    _not_here(mailbox, tag)
    if raw is None:
        if not mailbox.release(identity.system, tag):
            raise Refused(404, "GATEWAY_NOT_FOUND", "no unacknowledged delivery with this tag (it may have gone back)")
        return web.Response(status=204)
    done = await mailbox.put_off(identity.system, tag, int(raw))
    if done is None:
        raise Refused(404, "GATEWAY_NOT_FOUND", "no unacknowledged delivery with this tag (it may have gone back)")
    if not done:
        raise Refused(
            503,
            "DELIVERY_BROKER",
            "the broker did not take the delivery to hold; it was put back at once and comes again",
            retry_after=5,
        )
    return web.Response(status=204)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def refuse(request: web.Request) -> web.StreamResponse:
    """POST /v1/inbox/{tag}/refuse ``{"code": "...", "reason": "..."}``: a delivery the system will never take (it
    failed the system's own checks) is parked in the hub's dead-letter queue with the system, code and reason, where
    the hub's operators see it, and acknowledged — never acknowledged away."""
    identity = request[IDENTITY]
    given = await _json_body(request, MAX_REFUSAL_BODY, "the refusal")
    code = given.get("code") if isinstance(given, dict) else None
    reason = given.get("reason") if isinstance(given, dict) else None
    if (
        not isinstance(given, dict)
        or set(given) != {"code", "reason"}
        or not isinstance(code, str)
        or not _REFUSAL_CODE.fullmatch(code)
        or not isinstance(reason, str)
        or not 0 < len(reason) <= MAX_REFUSAL_REASON
        or not reason.strip()
        or not _utf8(reason)  # JSON can carry a lone surrogate ("\ud800"); the broker's headers cannot
    ):
        raise Refused(
            400,
            "GATEWAY_BAD_REQUEST",
            'send {"code": "<A_CODE>", "reason": "<why, 1 to 1000 characters>"}: a code of capital letters, digits '
            "and underscores, and a reason an operator can act on",
        )
    mailbox, tag = request.app[STATE].mailbox, request.match_info["tag"]
    _not_here(mailbox, tag)
    done = await mailbox.refuse(identity.system, tag, code, reason.strip())
    if done is None:
        raise Refused(404, "GATEWAY_NOT_FOUND", "no unacknowledged delivery with this tag (it may have gone back)")
    if not done:
        raise Refused(
            503,
            "DELIVERY_BROKER",
            "the broker did not take the parked copy; the delivery was put back and comes again",
            retry_after=5,
        )
    return web.Response(status=204)


async def message_state(request: web.Request) -> web.StreamResponse:
    """GET /v1/messages/{id}: the state of a message the calling system sent."""
    from hub.store.messages import sent_message_status

    identity = request[IDENTITY]
    found = await sent_message_status(request.app[STATE].pool, request.match_info["id"], identity.system)
    if found is None:
        raise Refused(404, "GATEWAY_NOT_FOUND", "no message with this id was sent by this system")
    return web.json_response(found, dumps=lambda o: json.dumps(o, ensure_ascii=False))


#: What a delivery can be in, in the order it moves (hub.store.records.DELIVERY_RANK), for GET /v1/messages?delivery=.
_DELIVERY_STATES = tuple(sorted(DELIVERY_RANK, key=DELIVERY_RANK.__getitem__))


def _instant(request: web.Request, name: str, default: dt.datetime) -> dt.datetime:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        at = xsd_datetime(raw)  # a time the store can take (not year 1 east of UTC, say)
        why = "" if at.tzinfo is not None else "no offset"
    except ValueError as exc:
        why = str(exc)[:120]
    if why:
        hint = "; a + in a URL must be sent as %2B" if " " in raw.strip() else ""
        raise Refused(
            400,
            "GATEWAY_BAD_REQUEST",
            f"{name} must be a date and time with its offset, e.g. 2026-12-06T08:00:00+08:00 or "
            f"2026-12-06T00:00:00Z ({why}{hint})",
        )
    return at


def _cursor(position: tuple[dt.datetime, str]) -> str:
    at, mid = position
    return base64.urlsafe_b64encode(f"{at.isoformat()}/{mid}".encode()).decode().rstrip("=")


def _position(raw: str) -> tuple[dt.datetime, str]:
    """The position a ``next`` cursor of GET /v1/messages stands for; 400 for anything else."""
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        at, mid = text.split("/")
        when = xsd_datetime(at)  # what the store can take (a forged year 1 east of UTC is refused here, not a 500)
        if when.tzinfo is None:
            raise ValueError("no offset")
        return when, str(uuid.UUID(mid))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise Refused(
            400, "GATEWAY_BAD_REQUEST", "after must be the next value of the page before, as it was given"
        ) from None


def _services(request: web.Request) -> list[str]:
    """GET /v1/messages?service=: service names the hub's schemas know, separated by commas; 400 for anything else."""
    from hub.gateway.openapi import MAX_SENT_SERVICES

    names = [s.strip() for s in request.query["service"].split(",") if s.strip()]
    known = _known_services(request.app[SETTINGS].schemas_dir)
    unknown = [n for n in names if n not in known]
    if unknown or not 1 <= len(names) <= MAX_SENT_SERVICES:
        raise Refused(
            400,
            "GATEWAY_BAD_REQUEST",
            f"service lists 1 to {MAX_SENT_SERVICES} service names separated by commas, e.g. document.official"
            + (f" ({unknown[0][:40]!r} is not a service of this hub)" if unknown else ""),
        )
    return names


@functools.cache
def _known_services(schemas_dir: Path) -> frozenset[str]:
    """The service names of the hub's schemas, read once: the folders ``hub.validation.SchemaRegistry`` compiles
    (``services/<name>/<version>/schema.xsd``; the gateway process holds no registry of its own)."""
    return frozenset(xsd.parent.parent.name for xsd in schemas_dir.glob("services/*/*/schema.xsd"))


async def sent_list(request: web.Request) -> web.StreamResponse:
    """GET /v1/messages: the messages the calling system sent that the hub received in a window (``since``, default
    a day ago, to ``until``, default now; at most ``MAX_SENT_WINDOW_DAYS``), oldest first, each with its deliveries
    (the state per recipient and when it reached each: 签收, 阅读, 办结 …); ``delivery=`` keeps those with a delivery
    in one of the states listed (``pending,failed,delivered``: not yet signed for by every recipient), ``service=``
    those of the services named (``document.official``: the 公文 without the receipts the system sent); ``limit`` a
    page (50, at most ``MAX_SENT_PAGE``), ``after`` the ``next`` of the page before."""
    from hub.store.messages import sent_messages

    identity = request[IDENTITY]
    q = request.query
    now = dt.datetime.now(dt.UTC)
    since = _instant(request, "since", now - dt.timedelta(days=1))
    until = _instant(request, "until", now)
    if not since < until:
        raise Refused(400, "GATEWAY_BAD_REQUEST", "since must be before until")
    if until - since > dt.timedelta(days=MAX_SENT_WINDOW_DAYS):
        raise Refused(
            400,
            "GATEWAY_BAD_REQUEST",
            f"the window since … until is at most {MAX_SENT_WINDOW_DAYS} days: ask for it in parts",
        )
    raw_limit = q.get("limit", "50")
    if not _small_number(raw_limit) or not 1 <= int(raw_limit) <= MAX_SENT_PAGE:
        raise Refused(400, "GATEWAY_BAD_REQUEST", f"limit must be a whole number from 1 to {MAX_SENT_PAGE}")
    states: list[str] | None = None
    if "delivery" in q:
        states = [s.strip() for s in q["delivery"].split(",") if s.strip()]
        unknown = [s for s in states if s not in _DELIVERY_STATES]
        if unknown or not states:
            raise Refused(
                400,
                "GATEWAY_BAD_REQUEST",
                f"delivery lists states among {', '.join(_DELIVERY_STATES)}, separated by commas"
                + (f" ({unknown[0][:40]!r} is not one)" if unknown else ""),
            )
    services = _services(request) if "service" in q else None
    after = _position(q["after"]) if "after" in q else None
    page, position = await sent_messages(
        request.app[STATE].pool,
        identity.system,
        since,
        until,
        delivery_states=states,
        services=services,
        after=after,
        limit=int(raw_limit),
    )
    body = {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "messages": page,
        "next": None if position is None else _cursor(position),
    }
    return web.json_response(body, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _crl_entries(store: Any) -> list[dict[str, Any]]:
    """The CRLs the trust store holds — the root's and every issuing CA's of ``issuing-ca.pem`` (the current one and
    the earlier ones after ``hub pki rollover-issuing``) — read from their files and each matched to the CA whose key
    verifies it (``hub.trust.crl.crl_of``: the store's own rule, newest number wins), ordered by file name. Each
    carries its issuer's certificate, with which an agency that holds only the hub root authenticates an issuing CA's
    CRL (the certificate must chain to the root: ``adapters.sdk._crl``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    from hub.trust.crl import crl_of, read_crls
    from hub.trust.pki import fingerprint

    read = read_crls(store.crl_dir)
    by_path = {path: crl for crl, path in read}
    entries: dict[str, dict[str, Any]] = {}
    for ca in (store.root, *store.issuing):
        loaded = crl_of(read, ca)
        if loaded is None or loaded.path is None or loaded.path.name in entries:
            continue
        names = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        entries[loaded.path.name] = {
            "name": loaded.path.name,
            "issuer": str(names[0].value) if names else ca.subject.rfc4514_string(),
            "issuer_sha256": fingerprint(ca),
            "number": loaded.number,
            "this_update": loaded.this_update.isoformat(),
            "next_update": loaded.next_update.isoformat(),
            "der_base64": base64.b64encode(by_path[loaded.path].public_bytes(serialization.Encoding.DER)).decode(),
            "issuer_der_base64": base64.b64encode(ca.public_bytes(serialization.Encoding.DER)).decode(),
        }
    return [entries[name] for name in sorted(entries)]


async def crl_list(request: web.Request) -> web.StreamResponse:
    """GET /v1/crl: the hub's current CRLs (``_crl_entries``) for an identified client — an agency's adapter keeps its
    ``crl/`` folder fresh with them (``adapters.sdk._crl``). While the root's or the current issuing CA's CRL is
    missing or stale the answer is 503 ``CERT_CRL_UNAVAILABLE``, as for every other request: stale for everyone."""
    from hub.gateway.identity import CRL_RETRY_AFTER_S

    state = request.app[STATE]
    store = state.identifier.store
    store.refresh_if_due()
    now = dt.datetime.now(dt.UTC)
    current = [store.crl_for(ca) for ca in (store.root, *store.issuing[:1])]
    if any(crl is None or not crl.is_fresh(now) for crl in current):
        raise Refused(
            503,
            "CERT_CRL_UNAVAILABLE",
            "the hub has no fresh CRL of its root or current issuing CA to hand out until its operators publish one "
            "(hub pki crl); the adapter keeps the CRLs it has; try again later",
            retry_after=CRL_RETRY_AFTER_S,
        )
    cached = state.crl_entries
    if cached is None or cached[0] != store.generation:
        generation = store.generation  # before the files are read: a change meanwhile is read again next time
        cached = (generation, _crl_entries(store))
        state.crl_entries = cached
    return web.json_response({"crls": cached[1]}, headers={"Cache-Control": "no-store"})


async def openapi(request: web.Request) -> web.StreamResponse:
    from hub.gateway.openapi import document

    return web.json_response(document(request.app[SETTINGS].max_message_bytes))


# ------------------------------------------------------------------------------------------------ lifetime


#: How long one write of the gateway's activity may take before it is tried again (what it held is kept).
ACTIVITY_FLUSH_TIMEOUT_S = 10.0


async def _record_activity(activity: GatewayActivity, pool: Any, readiness: Readiness | None = None) -> None:
    """Write the polls and refusals the gateway saw every ``FLUSH_S``, and this gateway's row of the running gateways
    with its readiness (hub.store.gateway_activity); while the store cannot take them they are kept, and said in the
    log once a minute."""
    said = -60.0
    while True:
        if readiness is not None:
            with contextlib.suppress(Exception):  # the row says what it can; the store's own state shows by its age
                verdict = await readiness.verdict()
                activity.not_ready = tuple(c["code"] for c in verdict.checks if not c["ok"])
        if not activity.due:
            await asyncio.sleep(ACTIVITY_FLUSH_S)
            continue
        try:
            async with asyncio.timeout(ACTIVITY_FLUSH_TIMEOUT_S):  # a store that does not answer: try again later
                await activity.flush(pool)
        except (HubError, TimeoutError) as exc:
            if cancelling():  # the gateway stops: what is kept is flushed by its stop
                raise asyncio.CancelledError from None
            if time.monotonic() - said >= 60.0:
                said = time.monotonic()
                late = f"no answer within {ACTIVITY_FLUSH_TIMEOUT_S:g} s"
                why = exc.describe() if isinstance(exc, HubError) else late
                log.warning("could not write the gateway's activity for the ops page (kept): %s", why)
        except Exception:
            log.exception("could not write the gateway's activity for the ops page")
        await asyncio.sleep(ACTIVITY_FLUSH_S)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    """Connect PostgreSQL and RabbitMQ, load the directory and the trust store; on exit put every held inbox item
    back and close the connections."""
    from hub.pipeline.follow import directory_version
    from hub.store.db import create_pool
    from hub.store.directory import DirectoryRepository
    from hub.transport import Transport
    from hub.transport.users import consumers_by_queue
    from hub.trust import TrustStore
    from hub.trust.lifecycle import check_installation

    settings, gw = app[SETTINGS], app[GATEWAY_SETTINGS]
    pki_dir = settings.state_dir / "pki"
    pool = await create_pool(settings.pg_dsn, min_size=1, max_size=4)
    try:
        await check_installation(settings, pool, pki_dir)
        repository = DirectoryRepository(pool)
        identified = await directory_version(pool)  # before the directory itself (hub.pipeline.follow)
        directory = await repository.load()
        identifier = Identifier(TrustStore.load(pki_dir), directory)
        transport = await Transport.connect(settings, client_name="hub-gateway")
        try:
            await transport.declare_topology(s.id for s in directory.systems())
            guard = LinkGuard(transport.names, partial(consumers_by_queue, settings)) if gw.link_check_s > 0 else None
            mailbox = Mailbox(
                transport,
                prefetch=gw.prefetch,
                visibility_timeout=gw.visibility_timeout_s,
                guard=guard,
                link_check_s=gw.link_check_s,
                idle_s=gw.idle_s,
            )

            def lookup(system_id: str) -> tuple[float, int]:
                system = identifier.directory.system(system_id)
                return limits_of(system, gw.default_rate, gw.default_concurrency)

            direct: Direct | ExaminerPool | None = None
            urgent: Transport | None = None
            work_pool: Any = None
            if gw.in_process and gw.examiners > 0:
                # The examination in processes of their own (hub.gateway.examiners); this one keeps the clients.
                direct = ExaminerPool(settings, gw, mailbox, transport, count=gw.examiners)
                await direct.start()
            elif gw.in_process:
                # The worker's own resources: its pool (generic plans, as hub run's workers) and the emergency
                # lane's connection (an alert's publish never queues behind normal traffic on a shared socket).
                try:
                    work_pool = await create_pool(settings.pg_dsn, min_size=1, max_size=4, generic_plans=True)
                    urgent = await Transport.connect(settings, client_name="hub-gateway-emergency")
                    direct = Direct(settings, transport, urgent, mailbox, concurrency=gw.batches)
                    await direct.open(work_pool)
                except BaseException:
                    await _close_direct(direct, urgent, work_pool)
                    raise
            app[STATE] = GatewayState(transport, pool, mailbox, identifier, Limits(lookup), direct)
            app[STATE].readiness = Readiness(transport, pool, identifier.store, direct)

            async def refresh() -> None:
                # A new directory version is identified by one look later than it is first seen: by then the
                # examination (this process's, every examiner's: each looks every Settings.directory_refresh_s,
                # the same interval by default, HUB_DIRECTORY_REFRESH_S) has taken it, so a system just added is
                # never let in by its certificate and then refused by an examination that does not know it yet.
                nonlocal identified
                seen: int | None = None
                while True:
                    await asyncio.sleep(max(gw.directory_refresh_s, settings.directory_refresh_s))
                    try:
                        current = await repository.current()
                        version = None if current is None else current.version
                        if version == identified:
                            continue
                        if version != seen:
                            seen = version  # next look
                            continue
                        directory = await repository.load()
                        # Only a version the routes load against, as the examination takes it (hub.pipeline.follow):
                        # one it refuses must not change who this gateway lets in (raises ConfigProblems: looked at
                        # again next time, logged below).
                        load_routes(route_files(settings.routes_dir), directory)
                        known = {s.id for s in identifier.directory.systems()}
                        now_in = {s.id for s in directory.systems()}
                        if now_in - known:  # new systems: their queues first
                            await transport.declare_topology(s.id for s in directory.systems())
                        identifier.directory, identified = directory, version
                        log.info("the gateway identifies the systems of directory version %s", version)
                        for gone in sorted(known - now_in):  # refused from now on: nothing held for them here
                            await mailbox.drop(gone)
                    except HubError as exc:
                        if cancelling():  # a stop cut the look short: the error is what the cancellation became
                            raise asyncio.CancelledError from None
                        log.warning("could not read the directory again: %s", exc.describe())
                    except OSError as exc:  # a routes file that cannot be read: what it has stays
                        log.warning("could not read the routes files again: %s", exc)

            refresher = asyncio.get_running_loop().create_task(refresh(), name="gateway directory refresh")
            # Examined in this process: its row in the store too, with the directory version it examines with
            # (hub.store.process_instances; examiner processes keep their own).
            beating = asyncio.get_running_loop().create_task(
                heartbeat("gateway", 0, pool=pool if isinstance(direct, Direct) else None)
            )
            activity = app[STATE].activity
            recording = asyncio.get_running_loop().create_task(_record_activity(activity, pool, app[STATE].readiness))
            try:
                yield
            finally:
                try:
                    await stopped(refresher, beating, recording)  # re-cancelled until they end (hub.aio)
                finally:  # a stop that was itself cancelled still closes what it holds, then goes on being cancelled
                    await _close_direct(direct, urgent, work_pool)
                    await mailbox.close()
                    with contextlib.suppress(Exception):  # what the last seconds saw, if the store takes it at once
                        async with asyncio.timeout(2.0):
                            if activity.pending:
                                await activity.flush(pool)
                            await activity.leave(pool)
        finally:
            await transport.close()
    finally:
        await pool.close()


async def _close_direct(direct: Direct | ExaminerPool | None, urgent: Any, pool: Any) -> None:
    """Finish the in-process batches in hand, then close the emergency connection and the worker's pool."""
    try:
        if direct is not None:
            await direct.close()
    finally:
        if urgent is not None:
            await urgent.close()
        if pool is not None:
            await pool.close()


async def ready(request: web.Request) -> web.Response:
    """``GET /ready``: 200 when this gateway can serve, else 503 ``GATEWAY_NOT_READY`` naming what fails
    (``hub.gateway.readiness``); no client certificate needed."""
    readiness = request.app[STATE].readiness
    assert readiness is not None
    verdict = await readiness.verdict()
    headers = {"Cache-Control": "no-store"}
    if not verdict.ready:
        headers["X-Hub-Code"] = "GATEWAY_NOT_READY"
    body = json.dumps(verdict.as_json(), ensure_ascii=False)
    return web.Response(
        status=200 if verdict.ready else 503, text=body, content_type="application/json", headers=headers
    )


async def _stopping(app: web.Application) -> None:
    """The runner is stopping (before it closes the open connections): ``GET /ready`` answers 503 from now on, so a
    load balancer checking over a kept-alive connection sends the next clients to another gateway."""
    state = app.get(STATE)
    if state is not None and state.readiness is not None:
        state.readiness.stopping = True
    if state is not None:  # long polls end now with 204 and Connection: close, not cut without an answer later
        state.mailbox.stop_polls()


async def _drain(app: web.Application) -> None:
    """Before the gateway closes: ``GET /ready`` says stopping for ``drain_s`` while everything is still served."""
    drain_s = app[GATEWAY_SETTINGS].drain_s
    state = app.get(STATE)
    if drain_s <= 0 or state is None or state.readiness is None or state.readiness.stopping:
        return
    state.readiness.stopping = True
    log.info("gateway draining: GET /ready answers 503 for %g s before the gateway closes its port", drain_s)
    await asyncio.sleep(drain_s)


def create_app(settings: Settings, gateway: GatewaySettings) -> web.Application:
    """The gateway application (serve it with ``start_gateway``, or any aiohttp runner with TLS)."""
    app = web.Application(middlewares=[_measured, _guard], client_max_size=settings.max_message_bytes + 1)
    app[SETTINGS] = settings
    app[GATEWAY_SETTINGS] = gateway
    app.cleanup_ctx.append(_resources)
    app.router.add_post("/v1/messages", submit, expect_handler=_expect)
    # No implicit HEAD: a HEAD poll would hand out a delivery whose tag the client never sees.
    app.router.add_get("/v1/messages", sent_list, allow_head=False)
    app.router.add_get("/v1/messages/{id}", message_state, allow_head=False)
    app.router.add_get("/v1/inbox", poll, allow_head=False)
    app.router.add_post("/v1/inbox/ack", ack_many)
    app.router.add_post("/v1/inbox/{tag}/ack", ack)
    app.router.add_post("/v1/inbox/{tag}/release", release)
    app.router.add_post("/v1/inbox/{tag}/refuse", refuse)
    app.router.add_get("/v1/crl", crl_list, allow_head=False)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
    app.router.add_get("/ready", ready)  # HEAD too: what some load balancers send
    app.on_shutdown.append(_stopping)
    return app


class GatewayRunner(web.AppRunner):
    """The gateway's ``AppRunner``, listening on a server of its own (``tls.serve_tls``) instead of a ``TCPSite``:
    aiohttp's sites leave the TLS handshake to asyncio — its default timeout (60 s: a peer that connects and never
    finishes its handshake held a connection four times as long as one that never finishes its headers), and a
    failure nobody hears of. Here the handshake has ``header_timeout_s`` too, and a failed one is a refusal with the
    client's address. ``addresses`` and ``cleanup`` as ``AppRunner``'s (the listener closes first, as a site's stop
    does) — after ``GatewaySettings.drain_s`` of ``GET /ready`` answering 503 while the gateway still serves."""

    listener: TlsServer | None = None
    credentials: ServerCredentials | None = None
    _watching: asyncio.Task[None] | None = None

    @property
    def addresses(self) -> list[Any]:
        return [sock.getsockname() for sock in self.listener.sockets] if self.listener is not None else []

    def reload_certificate(self, *, asked: bool = True) -> bool:
        """New connections get the server certificate, key and hub CA certificates as they are on disk now, if they
        changed and load (``tls.ServerCredentials``): SIGHUP to ``hub gateway`` (``asked``: the log says what came of
        it), and every ``GatewaySettings.cert_check_s``."""
        credentials, listener = self.credentials, self.listener
        if credentials is None or listener is None or not credentials.reload_if_changed(asked=asked):
            return False
        listener.use(credentials.context)
        self._note_certificate()
        return True

    def _note_certificate(self) -> None:
        """The certificate new connections get, for this gateway's row in the store (the ops overview)."""
        state = self.app.get(STATE)
        cert = self.credentials.presented if self.credentials is not None else None
        if state is not None and cert is not None:
            state.activity.certificate = (serial_hex(cert.serial_number), cert.not_valid_after_utc)

    def watch_certificate(self, every_s: float) -> None:
        async def watch() -> None:
            while True:
                await asyncio.sleep(every_s)
                try:
                    self.reload_certificate(asked=False)
                except Exception:  # the next look tries again; the certificate in use stays
                    log.exception("could not look at the gateway's server certificate")

        if every_s > 0:
            self._watching = asyncio.get_running_loop().create_task(watch())

    async def cleanup(self) -> None:
        try:
            await stopped(self._watching)
            await _drain(self.app)
        finally:  # cancelled meanwhile: no drain, but the port and what the application holds are still closed
            if self.listener is not None:
                self.listener.close()
                await self.listener.handshakes_ended()
            await super().cleanup()


async def start_gateway(
    settings: Settings, gateway: GatewaySettings, *, shutdown_timeout: float = 5.0
) -> GatewayRunner:
    """Serve the gateway over TLS on ``gateway.host``/``gateway.port`` (0: any free port; ``runner.addresses`` says
    which); ``await runner.cleanup()`` stops it (long polls are cut after ``shutdown_timeout``; what they held goes
    back to the queues)."""
    balancers = networks(gateway.proxy_from)  # ConfigError naming a bad one, before anything starts
    credentials = ServerCredentials(
        settings.state_dir / "pki", gateway.cert_file, gateway.key_file, key_password=settings.ca_passphrase
    )
    app = create_app(settings, gateway)
    runner = GatewayRunner(
        app,
        handler_cancellation=True,  # a client that goes away mid-poll cancels its handler: its item goes back
        keepalive_timeout=gateway.header_timeout_s,
        lingering_time=0,  # a body the gateway refused unread (413, 401 …) is not read either: the connection closes
        shutdown_timeout=shutdown_timeout,
        access_log=None,
    )
    await runner.setup()
    try:
        assert runner.server is not None
        runner.listener = await serve_tls(
            runner.server,
            credentials.context,
            gateway.host,
            gateway.port,
            handshake_timeout=gateway.header_timeout_s,
            refused=partial(_handshake_refused, app),
            max_handshakes=gateway.max_handshakes,
            balancers=balancers,
        )
        runner.credentials = credentials
        runner._note_certificate()
        runner.watch_certificate(gateway.cert_check_s)
        state = app.get(STATE)
        if state is not None:
            state.listener = runner.listener
    except BaseException:
        await runner.cleanup()
        raise
    return runner
