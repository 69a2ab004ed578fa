"""An SDK adapter killed mid-stream (SIGKILL, no goodbye) and started again, on the real RabbitMQ and PostgreSQL:
1,000 reports reach its handler, every one of them, none twice — the handler's writes and the record of the
message id commit together, and a redelivered id that is recorded is acknowledged without reaching the handler."""

from __future__ import annotations

import asyncio
import copy
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.sdk import to
from adapters.sdk.testing import TestHub
from hub.envelope import parse
from hub.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration

N = 1000
SCRIPT = Path(__file__).with_name("sdk_crash_adapter.py")
SAMPLE = PROJECT_ROOT / "schemas/services/info.report/1/samples/valid/work-progress.xml"


def _counts(db: Path) -> tuple[int, int]:
    """(rows, distinct message ids) in the adapter's reports table."""
    if not db.exists():
        return 0, 0
    conn = sqlite3.connect(db, timeout=5)
    try:
        return conn.execute("SELECT count(*), count(DISTINCT message_id) FROM reports").fetchone()
    except sqlite3.OperationalError:  # the table does not exist yet
        return 0, 0
    finally:
        conn.close()


def _start(home: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(home / "adapter.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), str(home)], env=env, stdout=subprocess.DEVNULL, stderr=log
        )


async def test_sigkill_mid_stream_then_restart_every_delivery_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_TEST_REAL", "1")
    async with TestHub() as hub:
        home = await hub.enrol_home("prov-220000-oa")
        env = {**hub.settings.to_env(), "PYTHONPATH": str(PROJECT_ROOT)}
        db = home / "handled.sqlite3"
        county = await hub.client("county-222403-oa")
        body = parse(SAMPLE.read_bytes())[1][0]
        sent: list[str] = []
        for start in range(0, N, 100):
            receipts = await asyncio.gather(
                *(
                    county.send(
                        copy.deepcopy(body),
                        service="info.report",
                        version=1,
                        to=[to("11220000013544357T", "prov-220000-oa")],
                    )
                    for _ in range(start, min(N, start + 100))
                )
            )
            sent += [r.message_id for r in receipts if r.outcome == "accepted"]
        assert len(sent) == N

        adapter = _start(home, env)
        try:
            deadline = time.monotonic() + 60
            while _counts(db)[0] < N // 3:
                assert adapter.poll() is None, (home / "adapter.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "the adapter handled too little"
                await asyncio.sleep(0.01)
            adapter.send_signal(signal.SIGKILL)
            adapter.wait(10)
            killed_at = _counts(db)[0]
            assert killed_at < N, "the adapter finished before it was killed: nothing was tested"

            adapter = _start(home, env)
            deadline = time.monotonic() + 90
            while _counts(db)[1] < N:
                assert adapter.poll() is None, (home / "adapter.log").read_text()[-2000:]
                assert time.monotonic() < deadline, f"only {_counts(db)} of {N} after the restart"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # anything handed over twice would show up now
            while await hub.depth("prov-220000-oa"):
                await asyncio.sleep(0.05)
        finally:
            adapter.send_signal(signal.SIGTERM)
            adapter.wait(20)
        rows, distinct = _counts(db)
        assert (rows, distinct) == (N, N), f"{rows} rows for {distinct} messages: killed at {killed_at}"
        conn = sqlite3.connect(db)
        handled = {r[0] for r in conn.execute("SELECT message_id FROM sdk_handled")}
        reports = {r[0] for r in conn.execute("SELECT message_id FROM reports")}
        conn.close()
        assert reports == set(sent) == handled
        assert adapter.returncode == 0  # SIGTERM: a graceful stop
