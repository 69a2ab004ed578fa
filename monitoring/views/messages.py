"""Message search (``/messages``) and a message's trace (``/messages/{id}``).

Search: message id, sender, recipient, service, 密级, time range and state → ``hub.store.ops.search_messages``
(keyset pages, newest first: the "next page" link carries the last row's ``(received_at, message_id)``). A filter
that cannot be one (not a UUID, an unknown state or 密级, a time that is not one) is a sentence on the form with
the code ``OPS_BAD_FILTER`` (HTTP 400), never a 500.

Trace: ``hub.store.ops.trace`` — each step with its time: received and verified (the signer's certificate serial
and fingerprint from the register, and the hub certificate that countersigned the deliveries), recorded,
quarantined / released / rejected, every delivery with the time of each tracking state (delivered, 签收, 阅读, 办结,
反馈, failed, blocked), the receipts and errors sent back, dead letters about it and intake rejections claiming its
id, then the message's evidence records. With ``message.xml`` the recorded bytes are shown pretty-printed: parsed
with the hub's safe parser (``hub.envelope.parse``: no DTD, no entities, budgets), re-serialised with indentation,
and rendered as text by the autoescaping template (never marked safe), so a title ``<script>…`` is just text.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from hub.envelope.model import CLASSIFICATIONS
from hub.store.ops import Claims, Trace, TraceMessage
from hub.store.records import DELIVERY_STATES, MESSAGE_STATES, DeliveryStatus
from monitoring.app import POOL, SETTINGS
from monitoring.auth import operator_of, refuse, render, require
from monitoring.views import printable, whole_number

__all__ = ["CN_TZ", "Filters", "parse_filters", "pretty_xml", "setup"]

CN_TZ = dt.timezone(dt.timedelta(hours=8))
PAGE_SIZE = 50
MAX_PAGE = 200
DOC_NS = "urn:forestry-hub:document.official:1"

#: Message states with their labels (中文, English).
STATE_LABELS: dict[str, tuple[str, str]] = {
    "accepted": ("已受理", "accepted"),
    "rejected": ("已拒收", "rejected"),
    "quarantined": ("隔离待审", "quarantined"),
    "released": ("已放行", "released"),
    "quarantine_rejected": ("隔离驳回", "rejected from quarantine"),
}
#: 密级 and 紧急程度 in English (the data is Chinese; the labels follow the language switch).
CLASSIFICATION_EN: dict[str, str] = {
    "公开": "public",
    "内部": "internal",
    "秘密": "secret",
    "机密": "confidential",
    "绝密": "top secret",
}
URGENCY_EN: dict[str, str] = {"平件": "normal", "加急": "urgent", "特急": "most urgent"}
#: Delivery tracking states (中文, English), in their forward order.
DELIVERY_LABELS: dict[str, tuple[str, str]] = {
    "pending": ("待投递", "pending"),
    "delivered": ("已投递", "delivered"),
    "received": ("已签收", "received (签收)"),
    "read": ("已阅读", "read"),
    "handled": ("已办结", "handled (办结)"),
    "feedback": ("已反馈", "feedback"),
    "failed": ("投递失败", "failed"),
    "blocked": ("被闸门拦截", "blocked by the gate"),
}


class BadFilter(Exception):
    def __init__(self, field: str, zh: str, en: str) -> None:
        super().__init__(en)
        self.field, self.zh, self.en = field, zh, en


class Filters(dict[str, Any]):
    """The search's keyword arguments for ``search_messages`` (and what the form shows back)."""


def _utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC (as the store is asked); ``OverflowError`` when that falls outside the years 1–9999 (a
    time such as 0001-01-01T00:00 Beijing time, which PostgreSQL's driver cannot send either)."""
    return value.astimezone(dt.UTC)


def _time(field: str, text: str) -> dt.datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
        # the form's times are Beijing time
        return _utc(value if value.tzinfo is not None else value.replace(tzinfo=CN_TZ))
    except (ValueError, OverflowError):
        raise BadFilter(field, f"“{field}”不是有效的时间", f"{field!r} is not a date and time") from None


def parse_filters(query: Any) -> tuple[Filters, tuple[dt.datetime, str] | None]:
    """The search filters and the keyset cursor from a query string; ``BadFilter`` names what is wrong."""
    f = Filters()
    mid = str(query.get("id", "") or query.get("message_id", "")).strip()  # message_id: an alias
    if mid:
        try:
            f["message_id"] = str(uuid.UUID(mid))
        except ValueError:
            raise BadFilter("id", "报文标识不是合法的 UUID", "the message id is not a UUID") from None
    for key in ("sender", "recipient", "service"):
        value = str(query.get(key, "")).strip()
        if key == "service":
            value = value.split("/", 1)[0]  # document.official/1 → the service name
        if len(value) > 200:
            raise BadFilter(key, f"“{key}”过长", f"{key!r} is too long")
        if not printable(value):  # a NUL (which PostgreSQL's text refuses) or another control character
            raise BadFilter(key, f"“{key}”含有控制字符", f"{key!r} holds a control character")
        if value:
            f[key] = value
    c = str(query.get("classification", "")).strip()
    if c:
        level = whole_number(c, digits=1)
        if level is not None and level < len(CLASSIFICATIONS):
            f["classification"] = level
        elif c in CLASSIFICATIONS:
            f["classification"] = CLASSIFICATIONS.index(c)
        else:
            raise BadFilter("classification", "未知的密级", "unknown classification (密级)")
    state = str(query.get("state", "")).strip()
    if state:
        if state not in MESSAGE_STATES:
            raise BadFilter("state", "未知的报文状态", f"unknown state; one of {', '.join(MESSAGE_STATES)}")
        f["state"] = state
    since, until = _time("since", str(query.get("since", ""))), _time("until", str(query.get("until", "")))
    if since is not None:
        f["since"] = since
    if until is not None:
        f["until"] = until
    if since is not None and until is not None and since > until:
        raise BadFilter("until", "结束时间早于开始时间", "the end of the time range is before its start")
    size = str(query.get("limit", "")).strip()
    if size:
        rows = whole_number(size, digits=3)
        if rows is None or not 1 <= rows <= MAX_PAGE:
            raise BadFilter("limit", f"每页条数须为 1–{MAX_PAGE}", f"rows a page must be 1–{MAX_PAGE}")
        f["limit"] = rows
    cursor = None
    before = str(query.get("before", "")).strip()
    if before:
        at, _, bid = before.rpartition(",")
        try:
            when = dt.datetime.fromisoformat(at)
            cursor = (_utc(when if when.tzinfo else when.replace(tzinfo=dt.UTC)), str(uuid.UUID(bid)))
        except (ValueError, OverflowError):
            raise BadFilter("before", "翻页位置无效", "the page cursor is not valid") from None
    return f, cursor


def _query_of(query: Any) -> dict[str, str]:
    keys = ("id", "sender", "recipient", "service", "classification", "state", "since", "until", "limit")
    form = {k: str(query.get(k, "")) for k in keys}
    form["id"] = form["id"] or str(query.get("message_id", ""))
    return form


@require("view")
async def messages_page(request: web.Request) -> web.StreamResponse:
    from urllib.parse import urlencode

    from hub.store.ops import search_messages

    form = _query_of(request.query)
    rows: list[Any] = []
    notice = None
    next_link = None
    status = 200
    try:
        filters, cursor = parse_filters(request.query)
    except BadFilter as exc:
        notice = {"code": "OPS_BAD_FILTER", "field": exc.field, "zh": exc.zh, "en": exc.en}
        status = 400
    else:
        limit = filters.pop("limit", PAGE_SIZE)
        rows = await search_messages(request.app[POOL], before=cursor, limit=limit, **filters)
        if len(rows) == limit:
            last = rows[-1]
            params = {k: v for k, v in form.items() if v}
            params["before"] = f"{last.received_at.isoformat()},{last.message_id}"
            next_link = "/messages?" + urlencode(params)
    return render(
        request,
        "messages.html",
        {
            "form": form,
            "rows": rows,
            "notice": notice,
            "next_link": next_link,
            "states": STATE_LABELS,
            "classifications": list(enumerate(CLASSIFICATIONS)),
            "paged": "before" in request.query,
            "first_link": "/messages?" + urlencode({k: v for k, v in form.items() if v}),
            "cn_tz": CN_TZ,
            "page_size": form.get("limit") or PAGE_SIZE,
            "class_en": CLASSIFICATION_EN,
            "urgency_en": URGENCY_EN,
        },
        status=status,
    )


# -- the trace ---------------------------------------------------------------------------------------------------------


def pretty_xml(raw: bytes, *, max_bytes: int) -> str:
    """The recorded bytes parsed with the hub's safe parser and re-serialised with indentation (text, for the
    autoescaping template). Bytes the safe parser refuses are not shown."""
    from lxml import etree

    from hub.envelope import parse

    root = parse(raw, max_bytes=max_bytes)
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode")


def title_of(raw: bytes, *, max_bytes: int) -> str | None:
    """The document's title (公文标题) from the recorded bytes, if it has one."""
    from hub.envelope import parse

    try:
        root = parse(raw, max_bytes=max_bytes)
    except Exception:
        return None
    for el in root.iter(f"{{{DOC_NS}}}Title"):
        return (el.text or "").strip() or None
    return None


async def _certificates(pool: Any, message: TraceMessage, deliveries: Sequence[DeliveryStatus]) -> dict[str, Any]:
    """The signer's certificate (by fingerprint, else serial) and the hub certificate current when it delivered."""
    from hub.store.certificates import CertificateRepository

    repo = CertificateRepository(pool)
    signer = await repo.by_fingerprint(message.signer_fingerprint) if message.signer_fingerprint else None
    serial = message.signer_serial
    if signer is None and serial:
        signer = await repo.get(serial)
        if signer is None and serial.isdigit():  # an int serial is stored as its decimal text
            signer = await repo.get(format(int(serial), "x"))
    delivered = [d.times["delivered"] for d in deliveries if "delivered" in d.times]
    countersigned = None
    if delivered:
        first = min(delivered)
        hub_certs = [c for c in await repo.certificates(kind="hub") if c.not_before <= first and c.issued_at <= first]
        countersigned = hub_certs[-1] if hub_certs else None
    return {"signer": signer, "hub": countersigned}


def _step(at: dt.datetime | None, kind: str, zh: str, en: str, **extra: Any) -> dict[str, Any]:
    return {"at": at, "kind": kind, "zh": zh, "en": en, **extra}


def build_steps(found: Trace | Claims, certs: dict[str, Any]) -> list[dict[str, Any]]:
    """The trace's timeline: every step with its time, oldest first."""
    steps: list[dict[str, Any]] = []
    if isinstance(found, Trace):
        m = found.message
        steps.append(_step(m.received_at, "received", "已接收", "received", who=f"{m.sender_agency}/{m.sender_system}"))
        signer = certs.get("signer")
        serial = signer.serial if signer is not None else m.signer_serial
        if serial:
            steps.append(_step(m.received_at, "verified", "签名已验证", "signature verified", text=serial))
        if m.state == "rejected":
            steps.append(_step(m.received_at, "rejected", "已拒收", "refused", code=m.error_code, text=m.error_reason))
        else:
            steps.append(_step(m.received_at, "recorded", "已记录", "recorded"))
        q = found.quarantine
        if q is not None:
            steps.append(_step(q.created_at, "quarantined", "已隔离", "quarantined", text="、".join(q.markings)))
            if q.status in ("released", "rejected"):
                zh, en = ("已放行", "released") if q.status == "released" else ("已驳回", "rejected from quarantine")
                steps.append(_step(q.decided_at, q.status, zh, en, who=q.reviewer, text=q.reason))
        for d in found.deliveries:
            for state, at in sorted(d.times.items(), key=lambda kv: kv[1]):
                zh, en = (
                    ("投递已登记", "delivery recorded")
                    if state == "pending"
                    else DELIVERY_LABELS.get(state, (state, state))
                )
                code = d.error_code if state in ("blocked", "failed") else None
                steps.append(_step(at, f"delivery-{state}", zh, en, who=d.recipient_system, code=code))
        for r in found.receipts:
            receipt = r.kind == "hub.receipt"
            zh, en = ("回执已发送", "receipt sent") if receipt else ("错误回执已发送", "error sent")
            steps.append(_step(r.at, "receipt" if receipt else "error", zh, en, who=r.recipient_system, code=r.code))
    for dl in found.dead_letters:
        steps.append(
            _step(
                dl.first_seen,
                "dead",
                "进入死信队列",
                "dead-lettered",
                code=dl.code,
                text=dl.detail,
                who=dl.refused_by,
                link=f"/dead/{dl.id}",
            )
        )
    for rej in found.rejections:
        steps.append(
            _step(
                rej.received_at,
                "intake-rejected",
                "验证前拒收（声称此标识）",
                "refused before verification (claimed this id)",
                code=rej.error_code,
                text=rej.error_reason,
                who=rej.claimed_sender,
            )
        )
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    steps.sort(key=lambda s: s["at"] or epoch)
    return steps


@require("view")
async def trace_page(request: web.Request) -> web.StreamResponse:
    from hub.store.ops import claims, trace

    raw_id = request.match_info["message_id"]
    try:
        mid = str(uuid.UUID(raw_id))
    except ValueError:
        raise refuse(400, "OPS_BAD_FILTER", "报文标识不是合法的 UUID", "the message id is not a UUID") from None
    settings, pool = request.app[SETTINGS], request.app[POOL]
    found: Trace | Claims | None = await trace(pool, mid)
    if found is None:
        found = await claims(pool, mid)  # no recorded message: refused intakes and dead letters claiming the id
        if not found.rejections and not found.dead_letters:
            raise refuse(404, "OPS_MESSAGE_NOT_FOUND", "枢纽没有该报文的记录", "the hub has no record of this message")
    context: dict[str, Any] = {"m": None, "title": None, "deliveries": [], "evidence": [], "xml": None}
    context["certs"] = {"signer": None, "hub": None}
    context["xml_problem"] = None
    context["extra"] = {}
    if isinstance(found, Trace):
        m = found.message
        context["m"] = m
        context["deliveries"] = list(found.deliveries)
        if "message.xml" in _perms(request):
            try:
                context["xml"] = pretty_xml(found.raw, max_bytes=settings.max_message_bytes)
            except Exception as exc:  # the safe parser refused the bytes: say so, show nothing
                context["xml_problem"] = str(getattr(exc, "code", type(exc).__name__))
        # A title is content: of a 秘密 or higher message only those who may read the XML see it (the others see
        # that it is withheld). So of a message the gate holds (or held and rejected): labelled 公开 or 内部, its
        # content carries a classification marking, and its title may be the classified content itself; once
        # released, it is what its label says.
        if (m.classification < 2 and not _held(found)) or "message.xml" in _perms(request):
            context["title"] = title_of(found.raw, max_bytes=settings.max_message_bytes)
        else:
            context["title_withheld"] = True
        context["certs"] = await _certificates(pool, m, found.deliveries)
        context["extra"] = {
            "conversation_id": m.conversation_id,
            "ref_to": m.ref_to,
            "signer_serial": m.signer_serial,
            "signer_fingerprint": m.signer_fingerprint,
            "sha256": m.raw_sha256,
        }
        context["evidence"] = [
            {
                "seq": e.seq,
                "at": e.event_at,
                "kind": e.kind,
                "actor": e.actor,
                "detail": json.dumps(e.detail, ensure_ascii=False, sort_keys=True),
            }
            for e in found.evidence
        ]
    return render(
        request,
        "trace.html",
        {
            **context,
            "mid": mid,
            "steps": build_steps(found, context["certs"]),
            "delivery_labels": DELIVERY_LABELS,
            "delivery_order": [s for s in DELIVERY_STATES if s != "pending"],
            "states": STATE_LABELS,
            "cn_tz": CN_TZ,
            "class_en": CLASSIFICATION_EN,
            "urgency_en": URGENCY_EN,
        },
    )


def _held(found: Trace) -> bool:
    """Whether the classification gate holds the message, or held it and the security officer rejected it."""
    q = found.quarantine
    return found.message.state in ("quarantined", "quarantine_rejected") or (q is not None and q.status != "released")


def _perms(request: web.Request) -> frozenset[str]:
    from monitoring import roles

    return roles.permissions_of(operator_of(request).role)


def setup(app: web.Application) -> None:
    app.router.add_get("/messages", messages_page)
    app.router.add_get("/messages/{message_id}", trace_page)
