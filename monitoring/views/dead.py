"""The dead-letter page (``/dead``, ``/dead/{id}``): what reached the ``<ns>.dead`` queue, and its replay.

The list (``hub.store.dead_letters.list_dead``: pending by default, all with ``?show=all``; newest first, keyset
pages by id) shows where each letter was going, the code and reason it was refused with, who refused it, and the
message it is (a recorded message whose exact bytes these are) or claims to be. A letter's page shows its headers
and, when the body is XML the hub's safe parser accepts, the body pretty-printed as escaped text (``message.xml``
only). Like ``hub dead list``, the list first drains the queue into the table (``hub.pipeline.dead.collect``:
insert, then ack; nothing lost, nothing twice); with RabbitMQ unreachable it says so and shows what is stored.

Replay (``dead.replay``: the duty operator, the administrator) with a required reason (``form_reason``: no control
characters, at most the form's length; checked before anything is published) runs
``hub.pipeline.dead.replay`` — what ``hub dead replay`` runs: it republishes the letter to where it was going,
marks it replayed and records the operator action itself (with the reason, via ``web``), refusals (already
replayed, not replayable) too, which the page shows with their code; a failure to publish is recorded here as
``failed``.
"""

from __future__ import annotations

from aiohttp import web

from hub.errors import HubError, title_of
from monitoring.app import POOL, SETTINGS
from monitoring.auth import act, form_with_csrf, operator_of, refuse, render, require
from monitoring.views import form_reason, notice, whole_number
from monitoring.views.messages import CN_TZ

__all__ = ["setup"]

PAGE_SIZE = 50
NOTICES: dict[str, tuple[str, str]] = {
    "OPS_BAD_ID": ("死信编号不合规", "the dead letter id is not a number"),
}
DONE: dict[str, tuple[str, str]] = {
    "replayed": ("已重放：已重新发布到原去向", "replayed: republished to where it was going"),
}
#: Why it died (``DeadLetter.reason``): the hub refused it, a recipient refused it, or RabbitMQ's death reason.
SOURCE_LABELS: dict[str, tuple[str, str]] = {
    "hub": ("枢纽拒收", "refused by the hub"),
    "refused": ("收件方拒收", "refused by the recipient"),
    "rejected": ("被拒绝（未重新入队）", "rejected without requeue"),
    "expired": ("已过期", "expired"),
    "maxlen": ("队列已满", "queue full"),
    "delivery_limit": ("超过投递次数", "delivery limit"),
}
KIND_LABELS: dict[str, tuple[str, str]] = {
    "inbound": ("入站报文", "inbound message"),
    "delivery": ("投递", "delivery"),
    "other": ("其他", "other"),
}


def _notice(code: str, detail: str = "") -> dict[str, str]:
    return notice(code, detail, NOTICES)


def _dead_id(text: str) -> int:
    found = whole_number(text)
    if found is None:
        raise refuse(400, "OPS_BAD_ID", *NOTICES["OPS_BAD_ID"])
    return found


async def _list(request: web.Request, *, notice: dict[str, str] | None = None, status: int = 200) -> web.Response:
    from hub.pipeline.dead import collect
    from hub.store.dead_letters import list_dead

    try:
        await collect(request.app[SETTINGS], request.app[POOL])
    except HubError as exc:  # the broker is unreachable: show what is stored, and say so
        notice = notice or _notice(exc.code, f"could not collect from the dead-letter queue: {exc.detail}")
    show = "all" if request.query.get("show") == "all" else "pending"
    before = request.query.get("before", "")
    before_id = whole_number(before)
    letters = await list_dead(
        request.app[POOL], state=None if show == "all" else "pending", before_id=before_id, limit=PAGE_SIZE
    )
    next_link = f"/dead?show={show}&before={letters[-1].id}" if len(letters) == PAGE_SIZE else None
    done = request.query.get("done", "")
    target = request.query.get("target", "")
    return render(
        request,
        "dead.html",
        {
            "letters": letters,
            "letter": None,
            "show": show,
            "next_link": next_link,
            "kinds": KIND_LABELS,
            "sources": SOURCE_LABELS,
            "cn_tz": CN_TZ,
            "notice": notice,
            "done": DONE.get(done),
            "done_target": target if done in DONE and whole_number(target) is not None else "",
        },
        status=status,
    )


@require("view")
async def dead_page(request: web.Request) -> web.StreamResponse:
    return await _list(request)


async def _show(
    request: web.Request, dead_id: int, *, notice: dict[str, str] | None = None, status: int = 200
) -> web.Response:
    from hub.store.dead_letters import get

    letter = await get(request.app[POOL], dead_id)
    if letter is None:
        raise refuse(404, "DEAD_NOT_FOUND", title_of("DEAD_NOT_FOUND"), f"there is no dead letter {dead_id}")
    xml = None
    body_problem = None
    op = operator_of(request)
    from monitoring import roles

    if letter.body is not None and roles.allowed(op.role, "message.xml"):
        from monitoring.views.messages import pretty_xml

        try:
            xml = pretty_xml(letter.body, max_bytes=request.app[SETTINGS].max_message_bytes)
        except Exception as exc:  # hostile or broken bytes: the safe parser's code, nothing shown
            body_problem = str(getattr(exc, "code", type(exc).__name__))
    return render(
        request,
        "dead.html",
        {
            "letters": [],
            "letter": letter,
            "kinds": KIND_LABELS,
            "sources": SOURCE_LABELS,
            "cn_tz": CN_TZ,
            "xml": xml,
            "body_problem": body_problem,
            "notice": notice,
            "done": None,
        },
        status=status,
    )


@require("view")
async def dead_letter_page(request: web.Request) -> web.StreamResponse:
    return await _show(request, _dead_id(request.match_info["dead_id"]))


@require("dead.replay")
async def dead_replay(request: web.Request) -> web.StreamResponse:
    form = await form_with_csrf(request)
    dead_id = _dead_id(request.match_info["dead_id"])
    reason, refusal = form_reason(form)
    if refusal is not None:  # checked before anything is published: a replay that could not be recorded is none
        await act(
            request,
            "dead.replay",
            reason=reason,
            target=str(dead_id),
            outcome="refused",
            detail={"code": refusal, "dead_id": dead_id},
        )
        return await _show(request, dead_id, notice=_notice(refusal), status=400)
    from hub.pipeline.dead import replay

    op = operator_of(request)
    try:
        await replay(
            request.app[SETTINGS], request.app[POOL], dead_id, operator=op.name, role=op.role, via="web", reason=reason
        )
    except HubError as exc:
        if not exc.code.startswith("DEAD_"):  # not published: recorded as failed (replay records its refusals)
            await act(
                request, "dead.replay", reason=reason, target=str(dead_id), outcome="failed", detail={"code": exc.code}
            )
            return await _show(request, dead_id, notice=_notice(exc.code, exc.detail), status=502)
        if exc.code == "DEAD_NOT_FOUND":
            return await _list(request, notice=_notice(exc.code, exc.detail), status=404)
        return await _show(request, dead_id, notice=_notice(exc.code, exc.detail), status=409)
    raise web.HTTPSeeOther(f"/dead?done=replayed&target={dead_id}&show=all")


def setup(app: web.Application) -> None:
    app.router.add_get("/dead", dead_page)
    app.router.add_get("/dead/{dead_id}", dead_letter_page)
    app.router.add_post("/dead/{dead_id}/replay", dead_replay)
