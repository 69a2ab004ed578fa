"""The quarantine page (``/quarantine``): messages the classification gate held (a public or internal message whose
content carries a marking such as ``秘密★``), pending and decided, and the security officer's decision on one.

Everyone with ``view`` sees the list; releasing or rejecting needs ``quarantine.decide`` (the security officer) and
a reason. A decision runs exactly what ``hub quarantine release|reject`` runs (``hub.pipeline.release``: the store
marks the decision with the reviewer and reason in the evidence chain, then the hub re-verifies the recorded bytes
and delivers them, or sends the sender a signed ``hub.error`` GATE_REJECTED), and the action is recorded with
``act`` (outcome ``refused`` when the store refused it, e.g. already decided; ``failed`` when delivery failed).
"""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from hub.errors import HubError
from monitoring.app import POOL, SETTINGS
from monitoring.auth import act, form_with_csrf, operator_of, render, require
from monitoring.views import form_reason, notice
from monitoring.views.messages import CN_TZ

__all__ = ["setup"]

log = logging.getLogger(__name__)

#: The page's own refusals: code → (中文, English).
NOTICES: dict[str, tuple[str, str]] = {
    "OPS_BAD_ID": ("报文标识不是合法的 UUID", "the message id is not a UUID"),
    "OPS_BAD_DECISION": ("未知的审核决定", "unknown decision"),
}
DONE: dict[str, tuple[str, str]] = {
    "released": ("已放行并投递", "released and delivered"),
    "rejected": ("已驳回，已向发送方发出签名的错误回执", "rejected; the sender was sent a signed hub.error"),
}


def _uuid_or_empty(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return ""


def _notice(code: str, detail: str = "") -> dict[str, str]:
    return notice(code, detail, NOTICES)


async def _page(
    request: web.Request, *, notice: dict[str, str] | None = None, status: int = 200, form: dict[str, str] | None = None
) -> web.Response:
    pool = request.app[POOL]
    from hub.store.messages import quarantine_list

    show = request.query.get("show", "pending")
    items = await quarantine_list(pool, None if show == "all" else "pending", limit=500)
    done = request.query.get("done", "")
    return render(
        request,
        "quarantine.html",
        {
            "items": items,
            "show": "all" if show == "all" else "pending",
            "notice": notice,
            "done": DONE.get(done),
            "done_id": _uuid_or_empty(request.query.get("id", "")) if done in DONE else "",
            "form": form or {},
            "cn_tz": CN_TZ,
        },
        status=status,
    )


@require("view")
async def quarantine_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@require("quarantine.decide")
async def quarantine_decide(request: web.Request) -> web.StreamResponse:
    form = await form_with_csrf(request)
    message_id = str(form.get("message_id", "")).strip()
    decision = str(form.get("decision", ""))
    reason, refusal = form_reason(form)
    action = f"quarantine.{decision}" if decision in ("release", "reject") else "quarantine.decide"
    try:
        message_id = str(uuid.UUID(message_id))
    except ValueError:
        await act(
            request, action, reason=reason, target=message_id[:64], outcome="refused", detail={"code": "OPS_BAD_ID"}
        )
        return await _page(request, notice=_notice("OPS_BAD_ID"), status=400)
    for code in ("OPS_BAD_DECISION" if action == "quarantine.decide" else None, refusal):
        if code is not None:
            await act(
                request,
                action,
                reason=reason,
                target=message_id,
                outcome="refused",
                detail={"code": code},
            )
            return await _page(request, notice=_notice(code), status=400, form={"message_id": message_id})
    settings, pool = request.app[SETTINGS], request.app[POOL]
    operator = operator_of(request)
    from hub.pipeline.release import reject, release
    from hub.store.audit import Actor

    # The decision and its record commit together (the store records the action in the decision's transaction).
    actor = Actor(operator.name, operator.role, "web")
    try:
        if decision == "release":
            await release(settings, pool, message_id, operator.name, reason, actor=actor)
        else:
            await reject(settings, pool, message_id, operator.name, reason, actor=actor)
    except HubError as exc:
        # Refused by the store (not in the quarantine, already decided): nothing changed. A transport or
        # verification failure after the store's decision is "failed" (the decision stands; the CLI can retry).
        decided = exc.code in ("QUARANTINE_NOT_FOUND", "QUARANTINE_DECIDED")
        await act(
            request,
            action,
            reason=reason,
            target=message_id,
            message_id=message_id if exc.code != "QUARANTINE_NOT_FOUND" else None,
            outcome="refused" if decided else "failed",
            detail={"code": exc.code},
        )
        log.warning("quarantine %s of %s: %s", decision, message_id, exc.code)
        return await _page(request, notice=_notice(exc.code, exc.detail), status=409 if decided else 502)
    done = "released" if decision == "release" else "rejected"
    raise web.HTTPSeeOther(f"/quarantine?done={done}&id={message_id}")


def setup(app: web.Application) -> None:
    app.router.add_get("/quarantine", quarantine_page)
    app.router.add_post("/quarantine/decide", quarantine_decide)
