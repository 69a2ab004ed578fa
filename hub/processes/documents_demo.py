"""The documents process's part of ``make demo``: a document followed to 办结, with one late recipient reminded.

1. 长春市林业局 (``city-220100-oa``) sends a 加急 notice to 农安县 and 榆树市 (主送) and 德惠市 (抄送), with a feedback
   deadline (FeedbackDue, 反馈期限) two days ahead; the hub follows it;
2. 农安县 signs for it, reads it and reports it handled (document.receipt 签收 → 已阅 → 办结); 榆树市 only signs for it;
   德惠市 (copy) signs for it;
3. an engine pass at the reminder's time (a day before the deadline): the hub reminds 榆树市 (hub.notice
   ``document-reminder``) — not 农安县 (done), not 德惠市 (a copy is not asked to act);
4. 榆树市 reports it handled: every main addressee is done, the deadline is closed (no overdue report).

``hub`` is ``adapters.sdk.testing.TestHub`` joined to a running hub (or ``real=True``). The builders (``official``,
``receipt``) are the integration tests' too.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from hub.processes.demo_kit import pass_now as _pass
from hub.processes.demo_kit import until as _until
from hub.processes.engine import CN_TZ

SENDER = ("city-220100-oa", "11220100013544550M")  # 长春市林业局
NONGAN = ("county-220122-oa", "11220122013550216R")  # 农安县林业局
YUSHU = ("county-220182-oa", "11220182013552847D")  # 榆树市林业局
DEHUI = ("county-220183-oa", "11220183013553609R")  # 德惠市林业局
SAMPLE = "schemas/services/document.official/1/samples/valid/with-feedback-due.xml"


def official(title: str, due: datetime | None, *, urgency: str = "加急") -> Any:
    """A document.official (the with-feedback-due sample) with ``title``, ``FeedbackDue`` and urgency in its body
    (send it with the same ``urgency``: the body repeats the header's)."""
    from adapters.sdk.messages import DocumentOfficialV1
    from hub.envelope import parse
    from hub.settings import PROJECT_ROOT

    root = parse((PROJECT_ROOT / SAMPLE).read_bytes())
    doc = DocumentOfficialV1.from_element(copy.deepcopy(root[1][0]))
    return dataclasses.replace(
        doc,
        title=title,
        urgency=None if urgency == "平件" else urgency,  # type: ignore[arg-type]
        feedback_due=None if due is None else due.astimezone(CN_TZ).replace(microsecond=0),
    )


def receipt(document_id: str, agency: str, status: str, at: datetime | None = None, *, handler: str = "王立新") -> Any:
    """A document.receipt about ``document_id`` reported by ``agency``."""
    from adapters.sdk.messages.document_receipt_v1 import DocumentReceiptV1

    return DocumentReceiptV1(
        document_message_id=document_id,
        recipient_agency_code=agency,
        status=status,  # type: ignore[arg-type]
        at=(at or datetime.now(CN_TZ)).replace(microsecond=0),
        handler=handler,
        feedback="已按要求完成检查并报送。" if status == "feedback" else None,
    )


def notices(hub: Any, system: str, kind: str, refers_to: str) -> list[Any]:
    return [
        d
        for d in hub.delivered(system)
        if d.context.service == "hub.notice" and d.message.kind == kind and d.message.refers_to == refers_to
    ]


async def _row(hub: Any, sql: str, *args: Any) -> Any:
    from hub.store.db import connection

    async with connection(hub.settings.pg_dsn) as conn:
        return await conn.fetchrow(sql, *args)


async def _states(hub: Any, doc: str) -> dict[str, str]:
    from hub.store.db import connection

    async with connection(hub.settings.pg_dsn) as conn:
        rows = await conn.fetch("SELECT recipient_system, state FROM deliveries WHERE message_id = $1::uuid", doc)
    return {r["recipient_system"]: r["state"] for r in rows}


async def demo(hub: Any, say: Callable[[str], None]) -> list[str]:
    from adapters.sdk import to
    from hub.envelope import Recipient
    from hub.processes.runner import pass_at

    problems: list[str] = []
    say(
        "公文跟踪：送达 → 签收 → 阅读 → 办结，期限前催办未办结单位"
        " Documents: followed to 办结, a late recipient reminded"
    )
    try:
        sender = await hub.client(SENDER[0])
        nongan, yushu, dehui = [await hub.client(s) for s in (NONGAN[0], YUSHU[0], DEHUI[0])]
        now = datetime.now(CN_TZ).replace(microsecond=0)
        due = now + timedelta(days=2)
        title = f"长春市林业局关于报送森林防火检查情况的通知（演示 {now:%H%M%S}）"
        sent = await sender.send(
            official(title, due),
            to=[to(NONGAN[1], NONGAN[0]), to(YUSHU[1], YUSHU[0])],
            cc=[Recipient.cc(DEHUI[1], DEHUI[0])],
            urgency="加急",
        )
        doc = sent.message_id

        async def followed() -> Any:
            await _pass(hub)
            return await _row(hub, "SELECT * FROM document_deadlines WHERE message_id = $1::uuid", doc)

        d = await _until(followed, "the document followed")
        say(
            f"  ✔ 长春市林业局发出加急通知（主送农安县、榆树市，抄送德惠市），反馈期限 {due:%m月%d日 %H:%M}；"
            f"枢纽登记期限，将于 {d['remind_at'].astimezone(CN_TZ):%m月%d日 %H:%M} 催办 deadline followed"
        )
        for system, _agency in (NONGAN, YUSHU, DEHUI):
            await hub.wait_until(
                lambda s=system: any(x.context.message_id == doc for x in hub.delivered(s)), 30, f"{system} gets it"
            )
        for status in ("received", "read", "handled"):
            await nongan.send(receipt(doc, NONGAN[1], status), to=to(SENDER[1], SENDER[0]), ref_to=doc)
        await yushu.send(receipt(doc, YUSHU[1], "received"), to=to(SENDER[1], SENDER[0]), ref_to=doc)
        await dehui.send(receipt(doc, DEHUI[1], "received"), to=to(SENDER[1], SENDER[0]), ref_to=doc)

        async def applied() -> Any:
            await _pass(hub)
            s = await _states(hub, doc)
            return s == {NONGAN[0]: "handled", YUSHU[0]: "received", DEHUI[0]: "received"} and s

        await _until(applied, "the receipts applied")
        say("  ✔ 农安县签收、阅读并办结；榆树市、德惠市（抄送）仅签收：回执记入各收文单位的办理状态 receipts applied")

        await pass_at(hub.settings, ["documents"], d["remind_at"] + timedelta(minutes=1))
        got = await _until(lambda: _ready(notices(hub, YUSHU[0], "document-reminder", doc)), "the reminder to 榆树市")
        if got[0].context.sender.system != "hub":
            problems.append("documents: the reminder was not sent by the hub")
        await _pass(hub)
        await asyncio.sleep(1.0)  # what else the pass sent has had time to arrive
        for system in (NONGAN[0], DEHUI[0]):
            if notices(hub, system, "document-reminder", doc):
                problems.append(f"documents: {system} was reminded, but it is done or only a copy recipient")
        say(f"  ✔ 期限前一天：枢纽仅向未办结的榆树市发出催办提醒 reminded: 「{got[0].message.title[:40]}…」")

        await yushu.send(receipt(doc, YUSHU[1], "handled"), to=to(SENDER[1], SENDER[0]), ref_to=doc)

        async def completed() -> Any:
            await _pass(hub)
            row = await _row(hub, "SELECT completed_at FROM document_deadlines WHERE message_id = $1::uuid", doc)
            return row is not None and row["completed_at"] is not None

        await _until(completed, "the document completed")
        timers = await _row(
            hub,
            "SELECT count(*) AS n FROM process_timers WHERE process = 'documents' AND key = $1 AND fired_at IS NULL",
            doc,
        )
        if timers["n"] != 0:
            problems.append(f"documents: {timers['n']} timer(s) still armed after every addressee handled it")
        say(f"  ✔ 榆树市报告办结：主送单位全部办结，期限关闭，不再报逾期 done; `hub documents status {doc}`")
    except Exception as exc:
        problems.append(f"documents: {type(exc).__name__}: {str(exc)[:300]}")
    return problems


async def _ready(found: list[Any]) -> list[Any]:
    return found
