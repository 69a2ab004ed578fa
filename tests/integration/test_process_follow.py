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
import contextlib
import shutil
from collections.abc import AsyncIterator
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
from hub.processes.engine import ProcessEngine, process_id
from hub.processes.runner import open_engine
from hub.settings import PROJECT_ROOT

pytestmark = pytest.mark.asyncio

APPROVAL_DB = "prov-220000-approval"  # named by routes/approvals.routes.xml
YUSHU, YUSHU_AGENCY = "county-220182-oa", "11220182013552847D"  # 榆树市林业局: another county of 长春
DEHUI, DEHUI_AGENCY = "county-220183-oa", "11220183013553609R"  # 德惠市林业局: 农安's neighbour in the shipped plan


@contextlib.asynccontextmanager
async def _running(settings: Any) -> AsyncIterator[tuple[Hub, ProcessEngine]]:
    """A hub with a pipeline worker, and the process engine as ``hub run`` starts it (``open_engine``) looping."""
    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()
    engine, close = await open_engine(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop, interval=0.2))
    try:
        yield hub, engine
    finally:
        stop.set()
        await running
        await close()
        await hub.close()


async def _alert(hub: Hub, division: str, title: str) -> Envelope:
    """农安 reports a fire in ``division`` to 长春 only (level IV: the plan adds the county, its neighbours, the city)."""
    root = build(
        service="emergency.alert",
        sender=Party(SENDER_AGENCY, SENDER),
        recipients=[Recipient.to(CITY_AGENCY, CITY)],
        body=alert(incident_number(), division=division, title=title).to_element(),
        urgency="特急",
        ttl=timedelta(hours=24),
    )
    data = hub.sign(SENDER, root)
    env = Envelope.from_tree(parse(data))
    await hub.publish([(env, data)])
    assert (await hub.reply(SENDER, env.message_id)).outcome == "accepted"
    return env


async def _followed(hub: Hub, env: Envelope) -> dict[str, tuple[str, str]]:
    """The alert's recipients as the engine recorded them: agency → (system, via sender|plan)."""

    async def recorded() -> dict[str, tuple[str, str]] | None:
        async with hub.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT agency_code, system, via FROM emergency_recipients WHERE message_id = $1::uuid",
                env.message_id,
            )
        return {r["agency_code"]: (r["system"], r["via"]) for r in rows} or None

    return dict(await until(recorded, "the alert followed by the engine", timeout=20))


async def test_the_engine_takes_a_directory_loaded_while_it_runs(fresh_settings: Any, tmp_path: Path) -> None:
    async with _running(fresh_settings.with_(directory_refresh_s=1)) as (hub, engine):
        assert hub.worker is not None
        first = engine.directory_version
        assert first is not None and first == hub.worker.directory_version
        documents = next(p for p in engine.processes if isinstance(p, DocumentsProcess))
        assert documents._name(JIUTAI_CODE) is None

        # The operator adds 九台区林业局 and its system while the hub and the engine run.
        path = tmp_path / "directory.xml"
        path.write_text(with_jiutai(DIRECTORY_XML.read_text(encoding="utf-8")), encoding="utf-8")
        done = await hub.cli("directory", "load", str(path))
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
        env = await _alert(hub, "220113", "九台区上河湾镇林地森林火情")
        recipients = await _followed(hub, env)
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
        # … and the people on duty see it on the /processes page, until a directory the routes can take is stored.
        assert await _config_alarms(hub) == [
            ("directory-routes", "新载入的目录或修改后的路由文件无法使用，枢纽沿用原目录和路由")
        ]
        assert await engine.follow_directory() is False  # still the same problem: one alarm, refreshed
        assert len(await _config_alarms(hub)) == 1
        await DirectoryRepository(hub.pool).save(load_directory(DIRECTORY_XML))
        assert await engine.follow_directory() is True
        assert await _config_alarms(hub) == []
    finally:
        await close()
        await hub.close()


async def _config_alarms(hub: Hub) -> list[tuple[str, str]]:
    """The open CONFIG_NOT_TAKEN alarms: (ref, title)."""
    async with hub.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT ref, title FROM process_alarms WHERE code = 'CONFIG_NOT_TAKEN' AND cleared_at IS NULL ORDER BY ref"
        )
    return [(r["ref"], r["title"]) for r in rows]


async def test_the_processes_files_edited_while_the_engine_runs_are_followed(
    fresh_settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The broadcast plan edited while the engine runs (the processes' own files: hub.processes.runner.ProcessFiles):
    the next alert is forwarded as the edited plan says; a plan saved broken is not taken — the engine keeps the plan
    it has instead of falling back to none (as a start with that file would), and says why."""
    routes = tmp_path / "routes"
    shutil.copytree(PROJECT_ROOT / "routes", routes)
    plan = routes / "emergency-plan.toml"
    async with _running(fresh_settings.with_(routes_dir=routes, directory_refresh_s=1)) as (hub, engine):
        # As shipped, 农安's neighbour is 德惠: an alert in 农安 is forwarded to 德惠, not to 榆树.
        first = await _followed(hub, await _alert(hub, "220122", "农安县青山口乡西岗子林地森林火情"))
        assert first[DEHUI_AGENCY] == (DEHUI, "plan") and YUSHU_AGENCY not in first

        # The operator makes 榆树 农安's neighbour instead; the engine takes the plan at its next look.
        made = engine.files_fingerprint
        text = plan.read_text(encoding="utf-8")
        assert '"220122" = ["220183"]' in text
        plan.write_text(text.replace('"220122" = ["220183"]', '"220122" = ["220182"]'), encoding="utf-8")

        async def remade() -> bool:
            return engine.files_fingerprint != made

        await until(remade, "the engine made its processes again from the edited plan", timeout=20)
        second = await _followed(hub, await _alert(hub, "220122", "农安县合隆镇林地森林火情"))
        assert second[YUSHU_AGENCY] == (YUSHU, "plan") and DEHUI_AGENCY not in second

        # Saved broken: not taken, the next alert is still forwarded by the last good plan, no plan alarm.
        kept = engine.files_fingerprint
        plan.write_text(text.replace("[levels.IV]", "[levels.IV"), encoding="utf-8")
        with caplog.at_level("WARNING", logger="hub.processes"):
            assert await engine.follow_process_files() is False
        assert "could not take its processes' files as changed" in caplog.text
        assert "EMERGENCY_PLAN_INVALID" in caplog.text
        assert engine.files_fingerprint == kept
        assert [ref for ref, _ in await _config_alarms(hub)] == ["process-files"]  # on the /processes page
        third = await _followed(hub, await _alert(hub, "220122", "农安县烧锅镇林地森林火情"))
        assert third[YUSHU_AGENCY] == (YUSHU, "plan") and DEHUI_AGENCY not in third
        async with hub.pool.acquire() as conn:
            alarms = await conn.fetchval("SELECT count(*) FROM process_alarms WHERE code = 'EMERGENCY_PLAN_INVALID'")
        assert alarms == 0

        # Corrected (put back as the engine last took it): the alarm is cleared at the next look.
        plan.write_text(text.replace('"220122" = ["220183"]', '"220122" = ["220182"]'), encoding="utf-8")

        async def cleared() -> bool:
            return await _config_alarms(hub) == []

        await until(cleared, "the CONFIG_NOT_TAKEN alarm cleared by the running engine", timeout=20)
