"""The documents process (hub/processes/documents.py) against the real RabbitMQ and PostgreSQL with the real pipeline:
receipts move each recipient's delivery (签收 → 阅读 → 办结), receipts that disagree with the signature or with what
the hub delivered change nothing and raise alarms, a feedback deadline reminds the main addressees not yet 办结 and
reports the late ones to the sender — once, with two engines, and across a SIGKILL of the engine's process — and a
document without a deadline is not even parsed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from hub.envelope import Recipient
from hub.envelope.model import NOTICE_NS
from hub.processes.documents import DOC_NS, RECEIPT_NS, DocumentsProcess, Policy
from hub.processes.engine import CN_TZ, ProcessEngine, Tx, process_id
from tests.integration.harness import SYSTEMS, Hub, document, sample_body

pytestmark = pytest.mark.asyncio

CITY, NONGAN, YUSHU, DEHUI = "city-220100-oa", "county-220122-oa", "county-220182-oa", "county-220183-oa"
PROVINCE_OA = "prov-220000-oa"


def with_due(due: datetime | None, title: str = "关于报送森林防火检查情况的通知") -> etree._Element:
    body = sample_body("document.official", "with-feedback-due.xml")
    el = body.find(f"{{{DOC_NS}}}FeedbackDue")
    assert el is not None
    if due is None:
        body.remove(el)
    else:
        el.text = due.astimezone(CN_TZ).replace(microsecond=0).isoformat()
    body.find(f"{{{DOC_NS}}}Title").text = title  # type: ignore[union-attr]
    return body


def receipt_body(doc: str, agency: str, status: str, at: datetime | None = None) -> etree._Element:
    def q(local: str) -> str:
        return f"{{{RECEIPT_NS}}}{local}"

    root = etree.Element(q("DocumentReceipt"), nsmap={"r": RECEIPT_NS})
    etree.SubElement(root, q("DocumentMessageId")).text = doc
    etree.SubElement(root, q("RecipientAgencyCode")).text = agency
    etree.SubElement(root, q("Status")).text = status
    etree.SubElement(root, q("At")).text = (at or datetime.now(CN_TZ)).replace(microsecond=0).isoformat()
    return root


async def send_document(hub: Hub, due: datetime | None, *, title: str = "关于报送森林防火检查情况的通知") -> str:
    env = await hub.send(
        CITY,
        document(
            CITY,
            [
                Recipient.to(SYSTEMS[NONGAN], NONGAN),
                Recipient.to(SYSTEMS[YUSHU], YUSHU),
                Recipient.cc(SYSTEMS[DEHUI], DEHUI),
            ],
            urgency="加急",
            body=with_due(due, title),
        ),
    )
    assert (await hub.reply(CITY, env.message_id)).outcome == "accepted"
    return str(env.message_id)


async def send_receipt(
    hub: Hub, system: str, doc: str, status: str, *, agency: str | None = None, to: str = CITY
) -> str:
    env = await hub.send(
        system,
        document(
            system,
            [Recipient.to(SYSTEMS[to], to)],
            service="document.receipt",
            body=receipt_body(doc, agency or SYSTEMS[system], status),
        ),
    )
    assert (await hub.reply(system, env.message_id)).outcome == "accepted"
    return str(env.message_id)


async def delivered(hub: Hub, doc: str, n: int) -> None:
    for _ in range(200):
        async with hub.pool.acquire() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE message_id = $1::uuid AND delivered_at IS NOT NULL", doc
            )
        if count >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{doc} not delivered to {n} recipients")


async def states(hub: Hub, doc: str) -> dict[str, str]:
    async with hub.pool.acquire() as conn:
        rows = await conn.fetch("SELECT recipient_system, state FROM deliveries WHERE message_id = $1::uuid", doc)
    return {r["recipient_system"]: r["state"] for r in rows}


async def alarms(hub: Hub) -> list[tuple[str, str]]:
    async with hub.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT code, ref FROM process_alarms WHERE process = 'documents' AND cleared_at IS NULL ORDER BY code"
        )
    return [(r["code"], r["ref"]) for r in rows]


async def engine(hub: Hub, now: list[datetime], process: DocumentsProcess | None = None) -> ProcessEngine:
    from hub.pipeline.context import load_context

    context = await load_context(hub.settings, hub.pool)
    proc = process or DocumentsProcess(Policy(), context.directory)
    return ProcessEngine(hub.pool, context, [proc], transport=hub.transport, clock=lambda: now[0])


def notices_of(got: list[tuple[Any, Any]], kind: str, doc: str) -> list[Any]:
    return [
        env
        for _, env in got
        if env.service == "hub.notice"
        and env.body.findtext(f"{{{NOTICE_NS}}}Kind") == kind
        and env.body.findtext(f"{{{NOTICE_NS}}}RefersTo") == doc
    ]


async def test_followed_to_handled_reminded_and_reported_once_with_two_engines(fresh_settings: Any) -> None:
    hub = Hub(fresh_settings)
    await hub.setup()
    try:
        await hub.start_worker()
        t0 = datetime.now(UTC)
        due = t0 + timedelta(days=2)
        doc = await send_document(hub, due)
        await delivered(hub, doc, 3)
        for s in (NONGAN, YUSHU, DEHUI):
            await hub.drain(s, expect=1)
        now = [t0]
        a, b = await engine(hub, now), await engine(hub, now)
        first, second = await asyncio.gather(a.run_once(), b.run_once())
        assert first["fed"] + second["fed"] == 1
        async with hub.pool.acquire() as conn:
            d = await conn.fetchrow("SELECT * FROM document_deadlines WHERE message_id = $1::uuid", doc)
        assert d is not None and d["due_source"] == "document"
        assert d["feedback_due"] == due.replace(microsecond=0)
        assert d["remind_at"] == d["feedback_due"] - timedelta(days=1)

        # 农安 签收 → 阅读 → 办结; 榆树 签收 only; 德惠 (cc) 签收.
        for status in ("received", "read", "handled"):
            await send_receipt(hub, NONGAN, doc, status)
        await send_receipt(hub, YUSHU, doc, "received")
        await send_receipt(hub, DEHUI, doc, "received")
        # The receipts are addressed to the sender: 长春 takes its five now, so that what it finds later in its queue
        # is only what the process sends it (CI once caught the overdue report arriving after the receipts' batch).
        receipts = await hub.drain(CITY, expect=5)
        assert sorted(env.service for _, env in receipts) == ["document.receipt"] * 5
        await a.run_once()
        assert await states(hub, doc) == {NONGAN: "handled", YUSHU: "received", DEHUI: "received"}
        async with hub.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT received_at, read_at, handled_at, delivered_at FROM deliveries"
                " WHERE message_id = $1::uuid AND recipient_system = $2",
                doc,
                NONGAN,
            )
        assert row["delivered_at"] <= row["received_at"] <= row["read_at"] <= row["handled_at"]

        # Not yet the reminder's time: nothing fires.
        now[0] = d["remind_at"] - timedelta(minutes=1)
        assert (await a.run_once())["fired"] == 0
        # The reminder's time, two engines at once: one fires it; only 榆树 (main, not done) is reminded, once.
        now[0] = d["remind_at"] + timedelta(minutes=1)
        first, second = await asyncio.gather(a.run_once(), b.run_once())
        assert first["fired"] + second["fired"] == 1, (first, second)
        assert first["published"] + second["published"] == 1
        first, second = await asyncio.gather(a.run_once(), b.run_once())
        assert first["fired"] + second["fired"] == 0
        got = await hub.drain(YUSHU, expect=1)
        reminders = notices_of(got, "document-reminder", doc)
        assert len(reminders) == 1 and reminders[0].sender.system == "hub"
        assert reminders[0].message_id == process_id("documents", f"remind/{doc}/{YUSHU}")
        assert [p.findtext(f"{{{NOTICE_NS}}}System") for p in reminders[0].body.iter(f"{{{NOTICE_NS}}}Party")] == [
            YUSHU
        ]
        assert await hub.drain(NONGAN, timeout=1.0) == [] and await hub.drain(DEHUI, timeout=0.5) == []

        # Past the deadline: the sender gets the overdue report naming 榆树, once; an alarm for the people on duty.
        now[0] = d["feedback_due"] + timedelta(minutes=1)
        first, second = await asyncio.gather(a.run_once(), b.run_once())
        assert first["fired"] + second["fired"] == 1
        got = await hub.drain(CITY, expect=1)
        overdue = notices_of(got, "document-overdue", doc)
        assert len(got) == 1 and len(overdue) == 1, [env.service for _, env in got]
        assert [p.findtext(f"{{{NOTICE_NS}}}System") for p in overdue[0].body.iter(f"{{{NOTICE_NS}}}Party")] == [YUSHU]
        assert ("DOC_OVERDUE", doc) in await alarms(hub)
        # By the real clock the deadline is two days ahead: listed as due soon, with 榆树 not done.
        soon = await hub.cli("documents", "overdue", "--within", "3d")
        assert soon.returncode == 0, soon.stdout + soon.stderr
        assert "⚠ 临期 due soon" in soon.stdout and f"未办结 not handled: {YUSHU}" in soon.stdout
        assert NONGAN not in soon.stdout

        # 榆树 reports it handled: completed, timers gone, the alarm cleared; the status command says so.
        await send_receipt(hub, YUSHU, doc, "handled")
        await a.run_once()
        async with hub.pool.acquire() as conn:
            assert await conn.fetchval(
                "SELECT completed_at IS NOT NULL FROM document_deadlines WHERE message_id = $1::uuid", doc
            )
            sent = await conn.fetch("SELECT kind, recipient_system FROM document_notices ORDER BY kind")
            unfired = await conn.fetchval("SELECT count(*) FROM process_timers WHERE fired_at IS NULL")
        assert [(r["kind"], r["recipient_system"]) for r in sent] == [("overdue", CITY), ("reminder", YUSHU)]
        assert unfired == 0
        assert ("DOC_OVERDUE", doc) not in await alarms(hub)

        done = await hub.cli("documents", "status", doc)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "主送已办结 handled (to): 2/2" in done.stdout
        assert "已签收 signed for: 3/3" in done.stdout
        assert "农安县" in done.stdout and "已办结" in done.stdout
        missing = await hub.cli("documents", "status", "6dd35113-0996-5c4c-8425-2e7509850a5b")
        assert missing.returncode == 1 and missing.stdout.startswith("DOC_NOT_FOUND")
        bad = await hub.cli("documents", "status", "not-an-id")
        assert bad.returncode == 2 and bad.stdout.startswith("DOC_BAD_ID")
    finally:
        await hub.close()


async def test_receipts_that_disagree_change_nothing(fresh_settings: Any) -> None:
    hub = Hub(fresh_settings)
    await hub.setup()
    try:
        await hub.start_worker()
        doc = await send_document(hub, datetime.now(UTC) + timedelta(days=2))
        await delivered(hub, doc, 3)
        now = [datetime.now(UTC)]
        e = await engine(hub, now)
        await e.run_once()
        before = await states(hub, doc)
        # 德惠 signs a receipt claiming to be 农安 (body agency ≠ signed sender's agency).
        mismatch = await send_receipt(hub, DEHUI, doc, "handled", agency=SYSTEMS[NONGAN])
        # The provincial OA reports on a document the hub never delivered to it.
        stranger = await send_receipt(hub, PROVINCE_OA, doc, "handled")
        await e.run_once()
        assert await states(hub, doc) == before
        assert sorted(await alarms(hub)) == sorted(
            [("DOC_RECEIPT_AGENCY_MISMATCH", mismatch), ("DOC_RECEIPT_NOT_DELIVERED", stranger)]
        )

        # A receipt that overtakes the worker's record of the broker's confirm (the delivery still pending) is a
        # proof of delivery: applied, and the delivery marked delivered. A blocked delivery's receipt is not.
        async with hub.pool.acquire() as conn:
            await conn.execute(
                "UPDATE deliveries SET state = 'pending', delivered_at = NULL WHERE message_id = $1::uuid"
                " AND recipient_system = $2",
                doc,
                YUSHU,
            )
            await conn.execute(
                "UPDATE deliveries SET state = 'blocked', delivered_at = NULL WHERE message_id = $1::uuid"
                " AND recipient_system = $2",
                doc,
                NONGAN,
            )
        await send_receipt(hub, YUSHU, doc, "read")
        blocked = await send_receipt(hub, NONGAN, doc, "handled")
        await e.run_once()
        assert (await states(hub, doc))[YUSHU] == "read" and (await states(hub, doc))[NONGAN] == "blocked"
        async with hub.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT delivered_at, read_at FROM deliveries WHERE message_id = $1::uuid AND recipient_system = $2",
                doc,
                YUSHU,
            )
        assert row["delivered_at"] is not None and row["delivered_at"] <= row["read_at"]
        assert ("DOC_RECEIPT_NOT_DELIVERED", blocked) in await alarms(hub)
    finally:
        await hub.close()


async def test_documents_without_a_deadline_are_not_parsed(fresh_settings: Any, monkeypatch: Any) -> None:
    hub = Hub(fresh_settings)
    await hub.setup()
    try:
        await hub.start_worker()
        plain = [await send_document(hub, None, title=f"无反馈期限的通知{i}") for i in range(20)]
        # "FeedbackDue" in a paragraph of a document that has no such element: parsed, not followed.
        body = with_due(None, "正文提到 FeedbackDue 的通知")
        body.find(f"{{{DOC_NS}}}MainText")[0].text = "本通知无 FeedbackDue 要素。"  # type: ignore[index]
        env = await hub.send(CITY, document(CITY, [Recipient.to(SYSTEMS[NONGAN], NONGAN)], urgency="加急", body=body))
        await hub.reply(CITY, env.message_id)
        dated = await send_document(hub, datetime.now(UTC) + timedelta(days=3))
        parsed: list[str] = []
        real = Tx.envelope

        async def counting(self: Tx, msg: Any) -> Any:
            parsed.append(msg.message_id)
            return await real(self, msg)

        monkeypatch.setattr(Tx, "envelope", counting)
        now = [datetime.now(UTC)]
        proc = DocumentsProcess(Policy(), None)
        e = await engine(hub, now, proc)
        assert (await e.run_once())["fed"] == 22
        assert sorted(parsed) == sorted([env.message_id, dated]) and not set(plain) & set(parsed)
        assert proc.scans == 1  # one server-side scan for the lot
        async with hub.pool.acquire() as conn:
            followed = await conn.fetch("SELECT message_id::text AS id FROM document_deadlines")
        assert [r["id"] for r in followed] == [dated]
        # With a default for 加急 every such document is followed, from the hub's receipt time.
        proc2 = DocumentsProcess(Policy({"加急": timedelta(days=5)}), None)
        e2 = await engine(hub, now, proc2)
        late = await send_document(hub, None, title="按紧急程度默认期限的通知")
        assert (await e2.run_once())["fed"] == 1
        async with hub.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT d.due_source, d.feedback_due - m.received_at AS span FROM document_deadlines d"
                " JOIN messages m USING (message_id) WHERE d.message_id = $1::uuid",
                late,
            )
        assert row["due_source"] == "urgency" and row["span"] == timedelta(days=5)
    finally:
        await hub.close()


def _engine_process(hub: Hub, clock_file: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "processes", "run", "--clock-file", str(clock_file)],
            env=hub.env(),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


async def _until(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_sigkill_of_the_engine_and_two_engine_processes_send_each_notice_once(fresh_settings: Any) -> None:
    hub = Hub(fresh_settings)
    await hub.setup()
    procs: list[subprocess.Popen[bytes]] = []
    clock_file = fresh_settings.state_dir / "clock"
    log = fresh_settings.state_dir / "engines.log"
    try:
        await hub.start_worker()
        t0 = datetime.now(UTC)
        clock_file.write_text(t0.isoformat())
        procs.append(_engine_process(hub, clock_file, log))
        doc = await send_document(hub, t0 + timedelta(days=2))
        await delivered(hub, doc, 3)

        async def followed() -> Any:
            async with hub.pool.acquire() as conn:
                return await conn.fetchrow("SELECT * FROM document_deadlines WHERE message_id = $1::uuid", doc)

        d = await _until(followed, "the first engine to follow the document")
        for system in (NONGAN, YUSHU, DEHUI):
            await hub.drain(system, expect=1)
        await send_receipt(hub, NONGAN, doc, "handled")
        await _until(lambda: _state_is(hub, doc, NONGAN, "handled"), "the receipt applied")
        os.kill(procs[0].pid, signal.SIGKILL)  # mid-way: the document followed, its deadlines not yet due
        procs[0].wait()

        # Two engines (a restart, and a second instance), the clock past the reminder's time.
        clock_file.write_text((d["remind_at"] + timedelta(minutes=1)).isoformat())
        procs.append(_engine_process(hub, clock_file, log))
        procs.append(_engine_process(hub, clock_file, log))
        assert len(await wait_notices(hub, YUSHU, "document-reminder", doc)) == 1
        os.kill(procs[1].pid, signal.SIGKILL)  # one of the two killed; the other goes on, another one starts
        procs[1].wait()
        procs.append(_engine_process(hub, clock_file, log))

        clock_file.write_text((d["feedback_due"] + timedelta(minutes=1)).isoformat())
        assert len(await wait_notices(hub, CITY, "document-overdue", doc)) == 1
        await asyncio.sleep(3.0)  # every engine has passed several times by the moved clock
        assert notices_of(await hub.drain(YUSHU, timeout=1.0), "document-reminder", doc) == []
        assert notices_of(await hub.drain(CITY, timeout=1.0), "document-overdue", doc) == []
        async with hub.pool.acquire() as conn:
            sent = await conn.fetch("SELECT kind, recipient_system FROM document_notices ORDER BY kind")
            fired = await conn.fetch("SELECT kind, fired_at FROM process_timers WHERE process = 'documents'")
            dup = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE service = 'hub.notice' AND ref_to = $1::uuid", doc
            )
        assert [(r["kind"], r["recipient_system"]) for r in sent] == [("overdue", CITY), ("reminder", YUSHU)]
        assert all(r["fired_at"] is not None for r in fired) and len(fired) == 2
        assert dup == 2  # one reminder, one overdue report recorded by the pipeline
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        await hub.close()


async def wait_notices(hub: Hub, system: str, kind: str, doc: str, timeout: float = 60.0) -> list[Any]:
    """Drain ``system``'s queue until a notice of ``kind`` about ``doc`` arrived (then what else came with it)."""
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while not found and time.monotonic() < deadline:
        found += notices_of(await hub.drain(system, timeout=1.0), kind, doc)
    found += notices_of(await hub.drain(system, timeout=0.5), kind, doc)
    return found


async def _state_is(hub: Hub, doc: str, system: str, state: str) -> bool:
    return (await states(hub, doc)).get(system) == state


async def test_the_demo_part_runs_on_a_real_hub() -> None:
    from adapters.sdk.testing import TestHub
    from hub.processes.documents_demo import demo

    lines: list[str] = []
    async with TestHub(real=True) as hub:
        problems = await demo(hub, lines.append)
    assert problems == [], "\n".join(lines + problems)
    assert any("催办" in line for line in lines)
