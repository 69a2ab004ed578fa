"""The approval database adapter against the real RabbitMQ, hub and PostgreSQL, with the simulated desk
(``adapters/approval_db/simulator.py``): the adapter runs as ``hub adapter run approval_db`` in its own process."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.approval_db import mapping
from adapters.approval_db.adapter import DECIDER, DECIDER_AGENCY, SYSTEM, Config, OutboxSender
from adapters.approval_db.demo import decision_of, demo, status_of, until, write_config
from adapters.approval_db.simulator import AGENCY, ApprovalSystem, application
from adapters.sdk import ConfigurationError, Reject, to
from adapters.sdk.messages import ApprovalApplication
from adapters.sdk.testing import AdapterProcess, TestHub

pytestmark = pytest.mark.integration

N = 500  # each way in the crash test


@dataclass
class Setup:
    hub: TestHub
    desk: ApprovalSystem
    decider: Any
    proc: AdapterProcess


@asynccontextmanager
async def running(tmp_path: Path, **config: Any) -> AsyncIterator[Setup]:
    async with TestHub(real=True) as hub:
        desk = await ApprovalSystem(hub.settings.pg_dsn).create()
        proc: AdapterProcess | None = None
        try:
            home = await hub.enrol_home(SYSTEM)
            config.setdefault("poll_interval", 1)
            path = write_config(tmp_path, home, desk.dsn, **config)
            decider = await hub.client(DECIDER)
            proc = AdapterProcess("approval_db", path, env=hub.settings.to_env(), log=tmp_path / "adapter.log")
            yield Setup(hub, desk, decider, proc)
        finally:
            if proc is not None:
                await proc.stop()
            await desk.drop()


def cases(prefix: str, n: int) -> list[str]:
    return [f"LCXK-222403-{prefix}-{i:06d}" for i in range(n)]


def applications_at(hub: TestHub) -> Counter[str]:
    """Case number → how often the decider received its application."""
    return Counter(d.message.case_number for d in hub.delivered(DECIDER) if isinstance(d.message, ApprovalApplication))


async def send_back(
    decider: Any, case_numbers: list[str], wait: Callable[[int], Awaitable[None]] | None = None
) -> None:
    """The decider answers: a status for even, a decision for odd positions (``wait(n)`` before the n-th hundred)."""
    for n, start in enumerate(range(0, len(case_numbers), 100)):
        if wait is not None:
            await wait(n)
        chunk = case_numbers[start : start + 100]
        await asyncio.gather(
            *(
                decider.send(
                    status_of(c) if i % 2 == 0 else decision_of(c, i + 1),
                    to=to(AGENCY, SYSTEM),
                    business_ref=c,
                )
                for i, c in enumerate(chunk, start=start)
            )
        )


async def written_back(desk: ApprovalSystem) -> int:
    got = await desk.received()
    return sum(rows for rows, _ in got.values())


async def test_demo_part_returns_no_problems(tmp_path: Path) -> None:
    async with TestHub(real=True) as hub:
        assert await demo(hub, tmp_path, print) == []


async def test_sigkill_mid_stream_both_ways_every_message_once(tmp_path: Path) -> None:
    """500 applications in the outbox and 500 statuses/decisions queued for the desk; the adapter is SIGKILLed
    mid-stream and started again: the decider has every application once, the desk every status and decision once."""
    async with running(tmp_path, batch_size=200) as s:  # a kill inside a batch: sent, not yet marked
        out_cases = cases("OUT", N)
        ids = await s.desk.submit_many([application(c) for c in out_cases])
        in_cases = cases("IN", N)
        await s.proc.start()
        killed_at: tuple[int, int] | None = None

        async def paced(n: int) -> None:  # each hundred waits for the outbox to get ahead, until the kill
            while killed_at is None and len(applications_at(s.hub)) < (n + 1) * N // 10:
                await asyncio.sleep(0.02)

        # while the outbox is being sent, paced so that the answers cannot all be written back before the kill
        answering = asyncio.create_task(send_back(s.decider, in_cases, paced))
        deadline = time.monotonic() + 60
        while True:
            sent, back = len(applications_at(s.hub)), await written_back(s.desk)
            if sent >= N // 5 and back >= N // 5:
                break
            assert time.monotonic() < deadline, f"too little before the kill: {sent} out, {back} back"
            await asyncio.sleep(0.01)
        s.proc.kill()
        killed = killed_at = (len(applications_at(s.hub)), await written_back(s.desk))
        assert max(killed) < N, f"one side finished before the kill ({killed}): it was not tested"

        await s.proc.start()
        await answering

        async def done() -> bool:
            states = await s.desk.outbox_states()
            return states.get("sent") == N and len(applications_at(s.hub)) >= N and await written_back(s.desk) >= N

        await until(done, 60, "every application sent and every answer written back")
        await until(lambda: _drained(s.hub), 20, "the queues drained")

        received = applications_at(s.hub)
        assert set(received) == set(out_cases) and len(received) == N
        assert max(received.values()) == 1, f"applications delivered twice: {received.most_common(3)}"
        assert {d.context.message_id for d in s.hub.delivered(DECIDER)} == set(ids)
        got = await s.desk.received()
        assert sum(rows for rows, _ in got.values()) == N and all(rows == ids_ for rows, ids_ in got.values())
        back_cases = {r["case_number"] for r in await s.desk.statuses()} | {
            r["case_number"] for r in await s.desk.decisions()
        }
        assert back_cases == set(in_cases)
        outcomes = Counter(r["hub_outcome"] for r in await s.desk.outbox())
        print(f"killed at {killed} (out, back); hub outcomes {dict(outcomes)}")
        assert outcomes["accepted"] + outcomes["duplicate"] == N
        assert await s.hub.dead_letters() == []


async def _drained(hub: TestHub) -> bool:
    return await hub.depth(SYSTEM) == 0 and await hub.depth(DECIDER) == 0


async def test_the_desks_database_down_for_a_while_then_back_nothing_lost(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.proc.start()
        out_cases = cases("DOWN", 100)
        await s.desk.submit_many([application(c) for c in out_cases])
        await s.desk.down()  # the outbox is mid-way, the answers below find no database
        in_cases = cases("BACK", 60)
        await send_back(s.decider, in_cases)
        log = s.proc.log
        await until(lambda: _logged(log, "unreachable"), 20, "the adapter noticed the database is down")
        await s.desk.up()

        async def done() -> bool:
            return (await s.desk.outbox_states()).get("sent") == 100 and await written_back(s.desk) >= 60

        await until(done, 60, "everything sent and written back after the database came back")
        await until(lambda: _drained(s.hub), 20, "the queues drained")
        received = applications_at(s.hub)
        assert set(received) == set(out_cases) and max(received.values()) == 1
        got = await s.desk.received()
        assert sum(rows for rows, _ in got.values()) == 60 and all(rows == ids for rows, ids in got.values())
        assert await s.hub.dead_letters() == []


async def _logged(log: Path, text: str) -> bool:
    return text in log.read_text(encoding="utf-8", errors="replace")


async def test_bad_rows_fail_with_a_code_and_a_reason_and_nothing_leaves(tmp_path: Path) -> None:
    recipients = {DECIDER: "11220000013544357T", "prov-220000-oa": "11220000013544357T"}
    # a long poll: the row submitted after start-up below can only leave this quickly through NOTIFY
    async with running(tmp_path, recipients=recipients, poll_interval=60) as s:
        desk = s.desk
        too_long = await desk.submit(application("LCXK-222403-BAD-000001", applicant_name="林" * 201))
        unknown = await desk.submit(application("LCXK-222403-BAD-000002"), recipient="prov-220000-nosuch")
        no_route = await desk.submit(application("LCXK-222403-BAD-000003"), recipient="prov-220000-oa")
        bad_code = await desk.submit(application("LCXK-222403-BAD-000004", applicant_credit_code="91220101MA17Q8RN3X"))
        no_id = await desk.submit(application("LCXK-222403-BAD-000005", applicant_kind="natural-person"))
        good = await desk.submit(application("LCXK-222403-GOOD-000001"))
        await s.proc.start()

        async def settled() -> list[dict[str, Any]]:
            rows = await desk.outbox()
            return rows if all(r["state"] != "pending" for r in rows) else []

        rows = {r["message_id"]: r for r in await until(settled, 30, "every outbox row settled")}
        expected = {
            too_long: "APPROVAL_FIELD_TOO_LONG",
            unknown: "APPROVAL_UNKNOWN_RECIPIENT",
            no_route: "APPROVAL_UNKNOWN_RECIPIENT",
            bad_code: "APPROVAL_SCHEMA_INVALID",
            no_id: "APPROVAL_FIELD_MISSING",
        }
        for mid, code in expected.items():
            row = rows[mid]
            assert (row["state"], row["status_code"]) == ("failed", code), row
            zh, en = row["status_reason"].split(" — ", 1)
            assert any("\u4e00" <= ch <= "\u9fff" for ch in zh), zh  # Chinese for the desk's staff
            assert "nothing was sent" in en or "refused" in en, en  # and English
        assert "201" in rows[too_long]["status_reason"] and "applicant_name" in rows[too_long]["status_reason"]
        assert rows[good]["state"] == "sent" and rows[good]["hub_outcome"] == "accepted"
        await until(lambda: _drained(s.hub), 20, "the queues drained")
        assert [d.context.message_id for d in s.hub.delivered(DECIDER)] == [good]
        assert s.hub.delivered("prov-220000-oa") == []

        started = time.monotonic()
        later = await desk.submit(application("LCXK-222403-GOOD-000002"))
        await until(lambda: _state_is(desk, later, "sent"), 20, "a row inserted while running sent on NOTIFY")
        print(f"NOTIFY to sent: {time.monotonic() - started:.2f} s (poll interval 60 s)")

        @s.decider.handles(ApprovalApplication)  # the decider now refuses what it gets
        async def refuse(msg: ApprovalApplication, ctx: Any) -> None:
            raise Reject("CASE_OUT_OF_SCOPE", "该事项不属于省级审批权限 (not a provincial licensing item)")

        refused = await desk.submit(application("LCXK-222403-GOOD-000003"))

        async def refusal_recorded() -> bool:
            return any(r["message_id"] == refused and r["state"] == "failed" for r in await desk.outbox())

        await until(refusal_recorded, 20, "the decider's refusal recorded on the outbox row")
        [row] = [r for r in await desk.outbox() if r["message_id"] == refused]
        assert row["status_code"] == "APPROVAL_REFUSED_BY_RECIPIENT" and "CASE_OUT_OF_SCOPE" in row["status_reason"]


async def test_one_bad_row_never_holds_back_its_batch(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A summary pasted from Word with its manual line break (U+000B, which XML cannot carry) and a row the adapter
    fails on unexpectedly are each marked failed with a code; the rows around them in the same batch leave."""
    desk = await ApprovalSystem(pg_dsn).create()
    try:
        async with TestHub() as hub:
            sender = await hub.client(SYSTEM)
            await hub.client(DECIDER)
            good1 = await desk.submit(application("LCXK-222403-CTL-000001"))
            ctl = await desk.submit(application("LCXK-222403-CTL-000002", summary="第一行\x0b第二行（从Word粘贴）"))
            bug = await desk.submit(application("LCXK-222403-CTL-000003"))
            good2 = await desk.submit(application("LCXK-222403-CTL-000004"))
            real = mapping.application_message

            def buggy(app: dict[str, Any], materials: Any) -> Any:
                if app["case_number"] == "LCXK-222403-CTL-000003":
                    raise KeyError("a bug")
                return real(app, materials)

            monkeypatch.setattr(mapping, "application_message", buggy)
            config = Config(dsn=desk.dsn, poll_interval=0.2, retry_initial=0.2, recipients={DECIDER: DECIDER_AGENCY})
            box = OutboxSender(sender, config)
            await box.start()
            try:

                async def settled() -> list[dict[str, Any]]:
                    rows = await desk.outbox()
                    return rows if all(r["state"] != "pending" for r in rows) else []

                rows = {r["message_id"]: r for r in await until(settled, 20, "every outbox row settled")}
            finally:
                await box.stop()
        assert rows[ctl]["state"] == "failed" and rows[ctl]["status_code"] == "APPROVAL_SCHEMA_INVALID", rows[ctl]
        reason = rows[ctl]["status_reason"]
        assert "SDK_INVALID_FIELD" in reason and "Summary" in reason and "U+000B" in reason, reason
        assert rows[bug]["state"] == "failed" and rows[bug]["status_code"] == "APPROVAL_INTERNAL", rows[bug]
        assert "KeyError" in rows[bug]["status_reason"]
        assert rows[good1]["state"] == rows[good2]["state"] == "sent"
        assert sorted(d.context.message_id for d in hub.delivered(DECIDER)) == sorted([good1, good2])
    finally:
        await desk.drop()


async def _state_is(desk: ApprovalSystem, mid: str, state: str) -> bool:
    return any(r["message_id"] == mid and r["state"] == state for r in await desk.outbox())


async def test_a_database_without_the_contracts_tables_stops_the_start(tmp_path: Path) -> None:
    async with TestHub(real=True) as hub:
        desk = await ApprovalSystem(hub.settings.pg_dsn).create(schema=False)
        try:
            path = write_config(tmp_path, await hub.enrol_home(SYSTEM), desk.dsn)
            proc = AdapterProcess("approval_db", path, env=hub.settings.to_env(), log=tmp_path / "adapter.log")
            with pytest.raises(ConfigurationError) as caught:
                await proc.start()
            assert "APPROVAL_DB_SCHEMA" in str(caught.value) or "APPROVAL_DB_SCHEMA" in proc.log.read_text()
            assert proc.proc is not None and proc.proc.returncode not in (0, None)
        finally:
            await desk.drop()


async def test_the_hub_silent_for_a_while_rows_wait_then_leave_once(tmp_path: Path) -> None:
    """No hub worker (receipts do not come): rows stay pending with APPROVAL_HUB_UNAVAILABLE and are resent under
    their own message ids; once the hub is back the decider has each application once."""
    from hub.pipeline.worker import Worker

    async with running(tmp_path, send_timeout=1, retry_initial=0.5, retry_max=1) as s:
        assert s.hub._worker is not None
        await s.hub._worker.stop()
        s.hub._worker = None
        out_cases = cases("HUB", 20)
        await s.desk.submit_many([application(c) for c in out_cases])
        await s.proc.start()

        async def waiting() -> bool:
            rows = await s.desk.outbox()
            return all(
                r["state"] == "pending" and r["status_code"] == "APPROVAL_HUB_UNAVAILABLE" for r in rows
            ) and all(r["attempts"] >= 1 for r in rows)

        await until(waiting, 30, "every row put off with APPROVAL_HUB_UNAVAILABLE")
        s.hub._worker = Worker(s.hub.settings, 0)
        await s.hub._worker.start()

        async def done() -> bool:
            return (await s.desk.outbox_states()).get("sent") == 20 and len(applications_at(s.hub)) >= 20

        await until(done, 60, "every row sent once the hub is back")
        await until(lambda: _drained(s.hub), 20, "the queues drained")
        received = applications_at(s.hub)
        assert set(received) == set(out_cases) and max(received.values()) == 1
        rows = await s.desk.outbox()
        assert all(r["status_code"] is None for r in rows)
        print("hub outcomes after the silence:", dict(Counter(r["hub_outcome"] for r in rows)))


NOTICES = 400  # the burst of hub notices in the notice test


async def test_hub_notices_land_in_the_desks_database_once_and_feedback_is_linked(tmp_path: Path) -> None:
    """The approvals process's approval-feedback about an application the desk sent, and a burst of other hub
    notices, reach the desk's hub_notices table — one row per notice, committed with its sdk_handled record — across
    a SIGKILL of the adapter mid-stream; the feedback is linked to the application's row by case number, the others
    (another desk's case numbers, other kinds) are not."""
    from hub.envelope import Recipient
    from hub.pipeline.context import load_context
    from hub.processes.approvals import ApprovalsProcess, calendar_path
    from hub.processes.approvals_calendar import load_calendar
    from hub.processes.engine import FedMessage, ProcessEngine, Timer, Tx
    from hub.store.db import create_pool

    class Burst:
        """Answers the desk's application with NOTICES hub notices to the desk, none about one of its cases."""

        name = "burst"
        services = frozenset({"approval.application"})

        async def on_message(self, tx: Tx, msg: FedMessage) -> None:
            if msg.sender_system != SYSTEM:
                return
            for i in range(NOTICES):
                await tx.notice(
                    [Recipient.to(msg.sender_agency, msg.sender_system)],
                    kind="approval-feedback" if i % 2 else "document-reminder",
                    title=f"测试通知 {i}",
                    text="请及时办理。 Please handle it.",
                    key=f"burst/{msg.message_id}/{i}",
                    case_ref=f"LCXK-222403-OTHER-{i:06d}",
                    outstanding=[(AGENCY, SYSTEM, None, "已送达")] if i % 2 == 0 else (),
                    urgency="平件",
                )

        async def on_timer(self, tx: Tx, timer: Timer) -> None:
            return None

    async with running(tmp_path) as s:
        await s.proc.start()
        case = "LCXK-222403-NOTE-000001"
        mid = await s.desk.submit(application(case))
        await until(lambda: _state_is(s.desk, mid, "sent"), 30, "the application sent")
        await until(lambda: _async(applications_at(s.hub)[case] == 1), 30, "the application at the decider")

        pool = await create_pool(s.hub.settings.pg_dsn, min_size=1, max_size=4)
        try:
            context = await load_context(s.hub.settings, pool)
            approvals = ApprovalsProcess(load_calendar(calendar_path(s.hub.settings)))
            engine = ProcessEngine(pool, context, [approvals, Burst()], transport=s.hub._admin_transport)

            async def engine_passes() -> None:
                published = 0
                while published < NOTICES + 1:
                    published += (await engine.run_once())["published"]
                    await asyncio.sleep(0.05)

            passes = asyncio.create_task(engine_passes())  # the notices arrive while the adapter records them
            try:
                deadline = time.monotonic() + 60
                while len(await s.desk.notices()) < NOTICES // 10:
                    assert time.monotonic() < deadline, "too few notices recorded before the kill"
                    await asyncio.sleep(0.01)
                s.proc.kill()
                killed = len(await s.desk.notices())
                assert killed < NOTICES + 1, f"every notice recorded before the kill ({killed}): it was not tested"
                await passes
            finally:
                passes.cancel()
            await s.proc.start()

            async def all_recorded() -> bool:
                return len(await s.desk.notices()) >= NOTICES + 1

            await until(all_recorded, 60, "every hub notice recorded after the restart")
            await until(lambda: _drained(s.hub), 20, "the queues drained")
            async with pool.acquire() as conn:
                sent = {
                    str(r["message_id"])
                    for r in await conn.fetch(
                        "SELECT m.message_id FROM messages m JOIN deliveries d USING (message_id)"
                        " WHERE m.service = 'hub.notice' AND d.recipient_system = $1",
                        SYSTEM,
                    )
                }
        finally:
            await pool.close()

        rows = await s.desk.notices()
        ids = [r["message_id"] for r in rows]
        assert len(ids) == len(set(ids)) == NOTICES + 1, f"{len(ids)} rows, {len(set(ids))} ids (killed at {killed})"
        assert set(ids) == sent  # exactly what the hub delivered to the desk
        handled = await s.desk.fetch(
            "SELECT message_id, outcome FROM sdk_handled WHERE service = 'hub.notice/1' AND message_id = ANY($1::text[])",
            ids,
        )
        assert {h["message_id"] for h in handled} == set(ids) and {h["outcome"] for h in handled} == {"handled"}

        [feedback] = await s.desk.notices(case)  # the approvals process's notice about the desk's own application
        assert feedback["kind"] == "approval-feedback" and feedback["case_ref"] == case
        assert feedback["refers_to"] == mid and case in feedback["title"]
        assert feedback["deadline"] is not None and feedback["deadline"] > feedback["at"]
        others = [r for r in rows if r["message_id"] != feedback["message_id"]]
        assert all(r["case_number"] is None for r in others)
        assert Counter(r["kind"] for r in others) == {
            "approval-feedback": NOTICES // 2,
            "document-reminder": NOTICES // 2,
        }
        with_parties = [r for r in others if r["outstanding"] is not None]
        assert len(with_parties) == NOTICES // 2
        [progress] = await s.desk.fetch("SELECT latest_notice FROM application_progress WHERE case_number = $1", case)
        assert progress["latest_notice"] == feedback["title"]
        print(f"killed at {killed} of {NOTICES + 1} notices")
        assert await s.hub.dead_letters() == []


async def _async(value: Any) -> Any:
    return value
