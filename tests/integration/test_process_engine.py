"""The process engine (hub/processes/engine.py) against the real PostgreSQL and RabbitMQ with the real pipeline: the
feed hands each accepted message over once, timers fire once by the engine's clock (moved, not slept through) even
with two engines, and what a process sends is a hub-signed message that the pipeline examines and delivers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hub.envelope import Recipient
from hub.envelope.model import NOTICE_NS
from hub.processes.engine import FedMessage, ProcessEngine, Timer, Tx, process_id
from tests.integration.harness import SYSTEMS, Hub, document

pytestmark = pytest.mark.asyncio

SENDER, RECIPIENT = "city-220100-oa", "county-220122-oa"


class Toy:
    """Follows official documents: a reminder a day after each, to its recipients, and an alarm."""

    name = "toy"
    services = frozenset({"document.official"})

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_message(self, tx: Tx, msg: FedMessage) -> None:
        self.seen.append(msg.message_id)
        env = await tx.envelope(msg)
        assert env.message_id == msg.message_id and env.sender.system == SENDER
        await tx.schedule("remind", msg.message_id, msg.created + timedelta(days=1), {"title": "测试"})

    async def on_timer(self, tx: Tx, timer: Timer) -> None:
        targets = [d for d in await tx.deliveries(timer.key) if d.state == "delivered"]
        await tx.notice(
            [Recipient.to(d.recipient_agency, d.recipient_system) for d in targets],
            kind="document-reminder",
            title=f"公文反馈催办：{timer.data['title']}",
            text="反馈期限将至，请及时办理。",
            key=f"remind/{timer.key}",
            refers_to=timer.key,
            outstanding=[(d.recipient_agency, d.recipient_system, None, "已送达") for d in targets],
        )
        await tx.alarm("TOY_LATE", timer.key, "测试告警", "a reminder went out")


async def _engine(hub: Hub, toy: Toy, now: list[datetime]) -> ProcessEngine:
    from hub.pipeline.context import load_context

    context = await load_context(hub.settings, hub.pool)
    return ProcessEngine(hub.pool, context, [toy], transport=hub.transport, clock=lambda: now[0])


async def test_feed_timer_and_send_each_happen_once(fresh_settings: Any) -> None:
    hub = Hub(fresh_settings)
    await hub.setup()
    try:
        await hub.start_worker()
        env = await hub.send(SENDER, document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT], RECIPIENT)]))
        assert (await hub.reply(SENDER, env.message_id)).outcome == "accepted"
        assert len(await hub.drain(RECIPIENT, expect=1)) == 1

        now = [datetime.now(UTC)]
        toy_a, toy_b = Toy(), Toy()
        a, b = await _engine(hub, toy_a, now), await _engine(hub, toy_b, now)
        first, second = await asyncio.gather(a.run_once(), b.run_once())
        assert first["fed"] + second["fed"] == 1, (first, second)
        assert toy_a.seen + toy_b.seen == [env.message_id]  # handed over once, to one of the two engines
        assert (await a.run_once())["fed"] == 0 and (await b.run_once())["fed"] == 0

        # Not due yet: nothing fires. A day and a minute later: exactly one of the two engines fires it.
        assert (await a.run_once())["fired"] == 0
        now[0] += timedelta(days=1, minutes=1)
        first, second = await asyncio.gather(a.run_once(), b.run_once())
        assert first["fired"] + second["fired"] == 1, (first, second)
        assert first["published"] + second["published"] == 1
        assert (await a.run_once())["fired"] == 0

        # The notice went through the pipeline: hub-signed, delivered to the recipient, answered to the hub.
        got = await hub.drain(RECIPIENT, expect=1)
        assert len(got) == 1
        _, notice = got[0]
        assert notice.service == "hub.notice" and notice.sender.system == "hub"
        assert notice.message_id == process_id("toy", f"remind/{env.message_id}")
        assert notice.body.findtext(f"{{{NOTICE_NS}}}Kind") == "document-reminder"
        assert notice.body.findtext(f"{{{NOTICE_NS}}}RefersTo") == env.message_id
        async with hub.pool.acquire() as conn:
            assert await conn.fetchval("SELECT state FROM messages WHERE message_id = $1::uuid", notice.message_id) == (
                "accepted"
            )
            alarms = await conn.fetch("SELECT code, ref FROM process_alarms WHERE cleared_at IS NULL")
            assert [(r["code"], r["ref"]) for r in alarms] == [("TOY_LATE", env.message_id)]
            # Published again (as after a crash between the publish and its commit): the pipeline's duplicate.
            await conn.execute("UPDATE process_outbox SET published_at = NULL")
        assert (await a.run_once())["published"] == 1
        await asyncio.sleep(1.0)
        assert await hub.drain(RECIPIENT, timeout=1.0) == []
    finally:
        await hub.close()


async def test_a_failing_step_raises_an_alarm_and_the_feed_goes_on(fresh_settings: Any) -> None:
    class Broken(Toy):
        name = "broken"

        async def on_message(self, tx: Tx, msg: FedMessage) -> None:
            self.seen.append(msg.message_id)
            await tx.schedule("never", msg.message_id, tx.now)  # rolled back with the failed step
            raise RuntimeError("a bug")

    hub = Hub(fresh_settings)
    await hub.setup()
    try:
        await hub.start_worker()
        ids = []
        for _ in range(2):
            env = await hub.send(SENDER, document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT], RECIPIENT)]))
            ids.append(env.message_id)
        for mid in ids:
            await hub.reply(SENDER, mid)
        now = [datetime.now(UTC)]
        broken = Broken()
        engine = await _engine(hub, broken, now)
        engine.processes = [broken]
        engine._by_name = {"broken": broken}
        assert (await engine.run_once())["fed"] == 2
        # Each was tried (the lot, then each alone after the lot failed: a step's effects are its transaction's).
        assert set(broken.seen) == set(ids)
        async with hub.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM process_timers") == 0
            codes = await conn.fetch("SELECT code, ref FROM process_alarms ORDER BY ref")
        assert sorted((r["code"], r["ref"]) for r in codes) == sorted(("PROCESS_FAILED", m) for m in ids)
    finally:
        await hub.close()


async def test_sdk_adapters_take_hub_notices_with_or_without_a_handler() -> None:
    """An adapter with a hub.notice handler gets the typed notice; one without records it as handled (outcome
    ``notice``) — no refusal to the hub, nothing dead-lettered."""
    from adapters.sdk import Adapter
    from adapters.sdk.messages import HubNoticeV1
    from adapters.sdk.testing import TestHub
    from hub.pipeline.context import load_context
    from hub.store.db import create_pool

    class ToCounty(Toy):
        async def on_timer(self, tx: Tx, timer: Timer) -> None:
            recipients = [Recipient.to(SYSTEMS[s], s) for s in ("county-220122-oa", "county-220182-oa")]
            await tx.notice(recipients, kind="document-reminder", title="催办", text="请办理。", key=timer.key)

    listening, silent = Adapter("county-220122-oa"), Adapter("county-220182-oa")
    got: list[Any] = []

    @listening.handles(HubNoticeV1)
    async def on_notice(notice: HubNoticeV1, ctx: Any) -> None:
        got.append(notice)

    @silent.handles("document.official")
    async def on_document(message: Any, ctx: Any) -> None:
        return None

    async with TestHub(listening, silent, real=True) as hub:
        sender = await hub.client(SENDER)
        await sender.send(_typical(), to=[Recipient.to(SYSTEMS["county-220182-oa"], "county-220182-oa")])
        pool = await create_pool(hub.settings.pg_dsn, min_size=1, max_size=2)
        try:
            now = [datetime.now(UTC)]
            context = await load_context(hub.settings, pool)
            engine = ProcessEngine(pool, context, [ToCounty()], transport=hub._admin_transport, clock=lambda: now[0])
            for _ in range(100):
                if (await engine.run_once())["fed"]:
                    break
                await asyncio.sleep(0.05)
            now[0] += timedelta(days=2)
            assert (await engine.run_once())["published"] == 1
        finally:
            await pool.close()
        await hub.wait_until(lambda: len(got) == 1, 20, "the notice handled by the listening adapter")
        assert got[0].kind == "document-reminder" and got[0].title == "催办"
        store = silent._wiring.store
        notice_id: list[Any] = []
        for _ in range(400):  # the silent adapter takes its copy on its own time (the listening one's says nothing)
            notice_id = [r for r in await _handled(store) if r[1] == "hub.notice/1"]
            if notice_id:
                break
            await asyncio.sleep(0.05)
        assert len(notice_id) == 1 and notice_id[0][2] == "notice", notice_id
        assert await hub.dead_letters() == []


def _typical() -> Any:
    from adapters.sdk.messages import DocumentOfficialV1
    from tests.integration.harness import sample_body

    return DocumentOfficialV1.from_element(sample_body("document.official"))


async def _handled(store: Any) -> list[tuple[str, str, str]]:
    """(message id, service, outcome) of what an adapter's SQLite store recorded."""
    rows = store.conn.execute("SELECT message_id, service, outcome FROM sdk_handled").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


async def test_the_engine_signs_with_a_rotated_hub_key_without_a_restart(fresh_settings: Any) -> None:
    from hub.trust import pki

    hub = Hub(fresh_settings)
    await hub.setup()
    try:
        await hub.start_worker()
        env = await hub.send(SENDER, document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT], RECIPIENT)]))
        await hub.reply(SENDER, env.message_id)
        # The recipient takes the document now: what it finds later is only the engine's notice (a drain that
        # stopped at the document's batch had read the document as the notice).
        assert [e.message_id for _, e in await hub.drain(RECIPIENT, expect=1)] == [env.message_id]
        now = [datetime.now(UTC)]
        engine = await _engine(hub, Toy(), now)
        assert engine.follow_hub_key() is False  # nothing rotated yet
        done = await hub.cli("pki", "rotate")
        assert done.returncode == 0, done.stdout + done.stderr
        paths = pki.PkiPaths(hub.settings.state_dir / "pki")
        new_fp = pki.fingerprint(pki.load_certificates(paths.hub_cert)[0])
        assert engine.context.signer.identity.fingerprint != new_fp
        assert engine.follow_hub_key() is True
        assert engine.context.signer.identity.fingerprint == new_fp

        await engine.run_once()
        now[0] += timedelta(days=2)
        assert (await engine.run_once())["published"] == 1
        got = await hub.drain(RECIPIENT, expect=1)  # examined and delivered: the new key verifies
        assert [e.service for _, e in got] == ["hub.notice"]
        notice = got[0][1]
        async with hub.pool.acquire() as conn:
            fingerprint = await conn.fetchval(
                "SELECT signer_fingerprint FROM messages WHERE message_id = $1::uuid", notice.message_id
            )
        assert fingerprint == new_fp
    finally:
        await hub.close()


async def test_an_engine_with_some_processes_leaves_the_others_feed_alone(fresh_settings: Any) -> None:
    class Other(Toy):
        name = "other"

    hub = Hub(fresh_settings)
    await hub.setup()
    try:
        await hub.start_worker()
        env = await hub.send(SENDER, document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT], RECIPIENT)]))
        await hub.reply(SENDER, env.message_id)
        now = [datetime.now(UTC)]
        toy, other = Toy(), Other()
        only_toy = await _engine(hub, toy, now)
        assert (await only_toy.run_once())["fed"] == 1 and toy.seen == [env.message_id]
        both = await _engine(hub, toy, now)
        both.processes = [toy, other]
        both._by_name = {"toy": toy, "other": other}
        assert (await both.run_once())["fed"] == 1  # only other's: toy had it already
        assert other.seen == [env.message_id] and toy.seen == [env.message_id]
    finally:
        await hub.close()


async def test_a_pass_reads_the_feed_to_its_head_and_on_only_behind_a_full_window(fresh_settings: Any) -> None:
    """A pass hands over what was chained when it looked, reading window after window while one comes back full; what
    the workers chain meanwhile waits for the next pass (``run``: half a second later) instead of a pass each for a
    few messages, which under a steady load kept the engine and PostgreSQL busy beside the message path."""

    class Sending(Toy):
        name = "sending"

        def __init__(self, hub: Hub) -> None:
            super().__init__()
            self.hub = hub

        async def on_message(self, tx: Tx, msg: FedMessage) -> None:
            self.seen.append(msg.message_id)
            if len(self.seen) == 3:  # a message accepted while the pass reads its last window
                env = await self.hub.send(SENDER, document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT], RECIPIENT)]))
                assert (await self.hub.reply(SENDER, env.message_id)).outcome == "accepted"

    hub = Hub(fresh_settings)
    await hub.setup()
    try:
        await hub.start_worker()
        ids = []
        for _ in range(3):
            env = await hub.send(SENDER, document(SENDER, [Recipient.to(SYSTEMS[RECIPIENT], RECIPIENT)]))
            assert (await hub.reply(SENDER, env.message_id)).outcome == "accepted"
            ids.append(env.message_id)
        sending = Sending(hub)
        engine = await _engine(hub, sending, [datetime.now(UTC)])
        engine.processes, engine._by_name = [sending], {"sending": sending}
        engine.feed_limit = 2  # three chained: a full window of two, then the third
        assert (await engine.run_once())["fed"] == 3
        assert sending.seen == ids
        # the one accepted during the pass: the next pass's
        assert (await engine.run_once())["fed"] == 1 and len(sending.seen) == 4
        assert (await engine.run_once())["fed"] == 0
    finally:
        await hub.close()
