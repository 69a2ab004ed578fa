"""The process engine follows ``hub directory load`` without a restart (``ProcessEngine.follow_directory``), on the real
RabbitMQ and PostgreSQL with the real pipeline.

Before, the engine read the directory once, at start: after an operator added 九台区林业局 (division 220113, under
长春) while the hub ran, the pipeline delivered to it (``hub.pipeline.follow``) but the emergencies process still
worked from the old directory — an alert for a fire in 九台 found no county bureau there and no neighbours, so the hub
forwarded it to nobody the broadcast plan requires, and 九台 was never asked to acknowledge it — and the documents
process named the new agency by its code only. Now the engine, started as ``hub run`` starts it (``open_engine``),
looks at the stored directory every ``HUB_DIRECTORY_REFRESH_S`` (1 s here) and takes the new version between two
passes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import DIRECTORY_XML, Hub, until
from lxml import etree

from hub.demo_scenario import JIUTAI, JIUTAI_CODE, with_jiutai
from hub.envelope import Envelope, Party, Recipient, build, parse
from hub.envelope.model import NOTICE_NS
from hub.processes.documents import DocumentsProcess
from hub.processes.emergencies_demo import CITY, CITY_AGENCY, SENDER, SENDER_AGENCY, alert, incident_number
from hub.processes.engine import process_id
from hub.processes.runner import open_engine

pytestmark = pytest.mark.asyncio

APPROVAL_DB = "prov-220000-approval"  # named by routes/approvals.routes.xml
YUSHU_AGENCY = "11220182013552847D"  # 榆树市林业局: another county of 长春 (neighbours without a [neighbours] entry)


async def test_the_engine_takes_a_directory_loaded_while_it_runs(fresh_settings: Any, tmp_path: Path) -> None:
    settings = fresh_settings.with_(directory_refresh_s=1)
    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()
    engine, close = await open_engine(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop, interval=0.2))
    try:
        assert hub.worker is not None
        first = engine.directory_version
        assert first is not None and first == hub.worker.directory_version
        documents = next(p for p in engine.processes if isinstance(p, DocumentsProcess))
        assert documents._name(JIUTAI_CODE) is None

        # The operator adds 九台区林业局 and its system while the hub and the engine run.
        path = tmp_path / "directory.xml"
        path.write_text(with_jiutai(DIRECTORY_XML.read_text(encoding="utf-8")), encoding="utf-8")
        done = await asyncio.to_thread(hub.hub_cli, "directory", "load", str(path))
        assert done.returncode == 0, done.stdout + done.stderr

        async def both_followed() -> bool:
            w = hub.worker
            return w is not None and engine.directory_version != first and w.directory_version != first

        await until(both_followed, "the engine and the worker took the new directory", timeout=20)
        assert engine.directory_version == hub.worker.directory_version
        assert JIUTAI in {s.id for s in engine.context.directory.systems()}
        assert documents._name(JIUTAI_CODE) == "九台区林业局"

        # 农安 reports a fire in 九台 (220113) to 长春 only. The plan (level IV: county, neighbours, city) requires the
        # county bureau of 220113 — 九台, known only from the new directory — and 长春's other counties.
        incident = incident_number()
        root = build(
            service="emergency.alert",
            sender=Party(SENDER_AGENCY, SENDER),
            recipients=[Recipient.to(CITY_AGENCY, CITY)],
            body=alert(incident, division="220113", title="九台区上河湾镇林地森林火情").to_element(),
            urgency="特急",
            ttl=timedelta(hours=24),
        )
        data = hub.sign(SENDER, root)
        env = Envelope.from_tree(parse(data))
        await hub.publish([(env, data)])
        assert (await hub.reply(SENDER, env.message_id)).outcome == "accepted"

        async def followed() -> dict[str, tuple[str, str]] | None:
            async with hub.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT agency_code, system, via FROM emergency_recipients WHERE message_id = $1::uuid",
                    env.message_id,
                )
            return {r["agency_code"]: (r["system"], r["via"]) for r in rows} or None

        recipients = await until(followed, "the alert followed by the engine", timeout=20)
        assert recipients[CITY_AGENCY] == (CITY, "sender")
        assert recipients[JIUTAI_CODE] == (JIUTAI, "plan")
        assert recipients[YUSHU_AGENCY][1] == "plan"
        async with hub.pool.acquire() as conn:
            name = await conn.fetchval(
                "SELECT agency_name FROM emergency_recipients WHERE message_id = $1::uuid AND agency_code = $2",
                env.message_id,
                JIUTAI_CODE,
            )
        assert name == "九台区林业局"

        # The hub's copy reaches 九台's queue (the worker routes the engine's notice to the new system).
        got = await hub.drain(JIUTAI, expect=1, timeout=20)
        notices = [
            (e.body.findtext(f"{{{NOTICE_NS}}}Kind"), e.body.findtext(f"{{{NOTICE_NS}}}RefersTo"), e.message_id)
            for _, e in got
            if e.service == "hub.notice"
        ]
        assert notices == [("emergency-resend", env.message_id, process_id("emergencies", f"copy/{env.message_id}"))], (
            notices
        )
        async with hub.pool.acquire() as conn:
            refused = await conn.fetchval("SELECT count(*) FROM process_alarms WHERE code = 'PROCESS_SEND_REFUSED'")
        assert refused == 0
    finally:
        stop.set()
        await running
        await close()
        await hub.close()


async def test_a_directory_the_routes_cannot_take_leaves_the_engine_on_its_own(
    fresh_settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored directory the routes files cannot be loaded against (it drops a system a route names) is not taken:
    the engine keeps its directory and version, and says why."""
    from hub.directory import load_directory
    from hub.store.directory import DirectoryRepository

    hub = Hub(fresh_settings)
    await hub.setup()
    engine, close = await open_engine(fresh_settings, connect=False)
    try:
        first = engine.directory_version
        before = engine.context.directory
        assert first is not None
        assert await engine.follow_directory() is False  # nothing new

        tree = etree.fromstring(DIRECTORY_XML.read_bytes())
        gone = tree.find(f".//{{*}}System[@id='{APPROVAL_DB}']")
        gone.getparent().remove(gone)
        path = tmp_path / "directory.xml"
        path.write_bytes(etree.tostring(tree, encoding="utf-8", xml_declaration=True))
        await DirectoryRepository(hub.pool).save(load_directory(path))
        with caplog.at_level("WARNING", logger="hub.processes"):
            assert await engine.follow_directory() is False
        assert engine.directory_version == first and engine.context.directory is before
        assert "the process engine could not take the new directory" in caplog.text
        assert "ROUTES_UNKNOWN_REF" in caplog.text
    finally:
        await close()
        await hub.close()
