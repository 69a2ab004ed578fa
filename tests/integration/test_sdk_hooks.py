"""The SDK's seams for an adapter's agency-side part: start-up and shut-down hooks (in memory and on the real
services), ``AdapterProcess`` (``hub adapter run`` in a process of its own) and ``TestHub(installation=…)``, which
joins a hub that is already running instead of making one."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from adapters.sdk import Adapter, ConfigurationError, to
from adapters.sdk.testing import AdapterProcess, TestHub
from hub.envelope import parse
from hub.settings import PROJECT_ROOT

PROVINCE = "11220000013544357T"
REPORT = PROJECT_ROOT / "schemas/services/info.report/1/samples/valid/work-progress.xml"


def report() -> Any:
    return copy.deepcopy(parse(REPORT.read_bytes())[1][0])


async def test_hooks_run_after_start_can_send_and_shut_down_before_the_consumer_stops(mode: str) -> None:
    county = Adapter("county-222403-oa")
    events: list[str] = []

    @county.on_startup
    async def open_side() -> None:
        receipt = await county.send(report(), service="info.report", version=1, to=to(PROVINCE, "prov-220000-oa"))
        events.append(f"start:{receipt.outcome}")

    @county.on_shutdown
    async def close_side() -> None:
        events.append("stop:running" if county._running else "stop:stopped")

    async with TestHub(county) as hub:
        assert events == ["start:accepted"]
        [got] = await hub.received("prov-220000-oa")
        assert got.context.sender.system == "county-222403-oa"
    assert events == ["start:accepted", "stop:running"]


async def test_a_failing_start_up_hook_stops_the_adapter_and_raises_its_error(mode: str) -> None:
    county = Adapter("county-222403-oa")
    closed: list[bool] = []

    @county.on_startup
    async def open_side() -> None:
        raise RuntimeError("the bureau's listener could not bind its port")

    @county.on_shutdown
    async def close_side() -> None:
        closed.append(True)

    with pytest.raises(RuntimeError, match="could not bind"):
        async with TestHub(county):
            pass
    assert closed == [True] and not county._running


def test_a_hook_must_be_async() -> None:
    county = Adapter("county-222403-oa")
    with pytest.raises(ConfigurationError, match="must be async"):
        county.on_startup(lambda: None)  # type: ignore[arg-type]


ADAPTER_MODULE = """
from adapters.sdk import Adapter, Context

adapter = Adapter("prov-220000-oa")
started = []


@adapter.on_startup
async def open_side() -> None:
    # the agency-side part reads its own settings ([adapter] in the TOML)
    started.append(adapter.settings.extra["greeting"])


@adapter.handles("info.report", version=1)
async def on_report(msg, ctx: Context) -> None:
    ctx.db.execute("CREATE TABLE IF NOT EXISTS got (message_id TEXT PRIMARY KEY, greeting TEXT)")
    ctx.db.execute("INSERT INTO got VALUES (?, ?)", (ctx.message_id, started[0]))
"""


@pytest.mark.integration
async def test_adapter_process_runs_hub_adapter_run_until_sigterm_and_a_joined_hub_sees_its_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    (tmp_path / "pkg_hooks_probe").mkdir()
    (tmp_path / "pkg_hooks_probe" / "__init__.py").write_text("")
    (tmp_path / "pkg_hooks_probe" / "adapter.py").write_text(ADAPTER_MODULE)
    async with TestHub(real=True) as hub:
        home = await hub.enrol_home("prov-220000-oa")
        config = tmp_path / "settings.toml"
        config.write_text(f'system = "prov-220000-oa"\nhome = "{home}"\n\n[adapter]\ngreeting = "您好"\n')
        env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(PROJECT_ROOT)])}
        proc = await AdapterProcess("pkg_hooks_probe", config, env=env, log=tmp_path / "adapter.log").start()
        try:
            assert proc.alive
            # A second TestHub joins the running installation (as make demo's adapter stage does): its client's
            # message reaches the adapter process through the first hub's worker.
            async with TestHub(installation=hub.settings) as joined:
                assert joined.settings.namespace == hub.settings.namespace
                county = await joined.client("county-222403-oa")
                sent = await county.send(report(), service="info.report", version=1, to=to(PROVINCE, "prov-220000-oa"))
                db = home / "handled.sqlite3"

                def got() -> list[tuple[str, str]]:
                    if not db.exists():
                        return []
                    conn = sqlite3.connect(db, timeout=5)
                    try:
                        return conn.execute("SELECT message_id, greeting FROM got").fetchall()
                    except sqlite3.OperationalError:
                        return []
                    finally:
                        conn.close()

                await joined.wait_until(lambda: got(), timeout=20, what="the adapter process handled the report")
                assert got() == [(sent.message_id, "您好")]
            # Leaving the joined hub keeps the installation: the first hub still answers.
            again = await (await hub.client("county-222403-oa")).send(
                report(), service="info.report", version=1, to=to(PROVINCE, "prov-220000-oa")
            )
            assert again.outcome == "accepted"
        finally:
            code = await proc.stop()
        assert code == 0 and not proc.alive
        assert "stopped" in (tmp_path / "adapter.log").read_text()
