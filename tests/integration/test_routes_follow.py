"""Routes files edited while the hub runs take effect without a restart (hub.pipeline.follow), on the real RabbitMQ and
PostgreSQL with the real pipeline.

Before, a worker read ``routes/*.xml`` once, at start (and again only when ``hub directory load`` stored a new
directory): an operator who added a route had to restart ``hub run``. Now every worker compares the routes files'
fingerprint (names and contents) at each look (``HUB_DIRECTORY_REFRESH_S``, 1 s here) and loads them again when it
changed. A file that cannot be loaded (saved half-way) leaves the worker on the routes it has, with a warning, until
it is corrected."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from harness import SYSTEMS, Hub, document, until

from hub.envelope import Recipient
from hub.pipeline.follow import follow_directory, routes_fingerprint
from hub.settings import PROJECT_ROOT

pytestmark = pytest.mark.asyncio

NONGAN, DEHUI = "county-220122-oa", "county-220183-oa"  # 农安县林业局, 德惠市林业局: two counties of 长春

PEER_ROUTE = """<?xml version="1.0" encoding="UTF-8"?>
<Routes xmlns="urn:forestry-hub:routes:1">
  <Route name="info-report-peer" service="info.report" version="1" title="信息报送：农安县林业局向德惠市林业局通报">
    <From><Agency code="{nongan}"/></From>
    <To><Agency code="{dehui}"/></To>
  </Route>
</Routes>
"""


def _report(hub: Hub) -> Any:
    return document(NONGAN, [Recipient.to(SYSTEMS[DEHUI], DEHUI)], service="info.report")


async def test_a_route_added_while_the_hub_runs_is_followed_and_a_broken_file_is_not(
    fresh_settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    routes = tmp_path / "routes"
    shutil.copytree(PROJECT_ROOT / "routes", routes)
    hub = Hub(fresh_settings.with_(routes_dir=routes, directory_refresh_s=1))
    await hub.setup()
    await hub.start_worker()
    try:
        worker = hub.worker
        assert worker is not None
        first = worker.routes_fingerprint
        assert first == routes_fingerprint(routes)

        # No route lets one county report to another: refused with the hub's signed error.
        env = await hub.send(NONGAN, _report(hub))
        refused = await hub.reply(NONGAN, env.message_id)
        assert (refused.kind, refused.outcome) == ("error", "ROUTE_NOT_ALLOWED"), refused
        code = refused.outcome

        # The operator adds a routes file; the worker takes it at its next look, with the same directory version.
        version = worker.directory_version
        (routes / "peer.routes.xml").write_text(
            PEER_ROUTE.format(nongan=SYSTEMS[NONGAN], dehui=SYSTEMS[DEHUI]), encoding="utf-8"
        )

        async def taken() -> bool:
            return worker.routes_fingerprint != first

        await until(taken, "the worker took the edited routes files", timeout=20)
        assert worker.directory_version == version
        env = await hub.send(NONGAN, _report(hub))
        assert (await hub.reply(NONGAN, env.message_id)).outcome == "accepted"
        got = await hub.drain(DEHUI, expect=1)
        assert [e.message_id for _, e in got] == [env.message_id]

        # A routes file saved half-way: not taken (a warning each look); the route added before still holds.
        kept = worker.routes_fingerprint
        (routes / "zz-half.routes.xml").write_text('<Routes xmlns="urn:forestry-hub:routes:1">\n  <Route name="x"')
        with caplog.at_level("WARNING", logger="hub.pipeline"):
            assert await follow_directory(worker) is False
        assert "could not take the new directory or routes files" in caplog.text
        assert worker.routes_fingerprint == kept
        env = await hub.send(NONGAN, _report(hub))
        assert (await hub.reply(NONGAN, env.message_id)).outcome == "accepted"
        assert [e.message_id for _, e in await hub.drain(DEHUI, expect=1)] == [env.message_id]

        # Corrected (removed) and the peer route taken out again: one county's report to another is refused again.
        (routes / "zz-half.routes.xml").unlink()
        (routes / "peer.routes.xml").unlink()

        async def back() -> bool:
            return worker.routes_fingerprint == first

        await until(back, "the worker took the routes files as they were", timeout=20)
        env = await hub.send(NONGAN, _report(hub))
        again = await hub.reply(NONGAN, env.message_id)
        assert (again.kind, again.outcome) == ("error", code)
    finally:
        await hub.close()
