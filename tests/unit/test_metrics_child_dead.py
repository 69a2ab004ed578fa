"""hub.metrics.child_dead: a gateway examiner that is gone takes its live-only series (its directory version) with
it in multiprocess mode, so an examiner restarted after a crash does not leave an old version on /metrics for ever
(an alert on ``max(hub_directory_version) - min(hub_directory_version)`` would never clear)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.metrics import MULTIPROC_ENV, child_dead


def test_a_dead_childs_live_only_series_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    code = "import os; from hub.metrics import directory_taken; directory_taken('gateway', 0, 7); print(os.getpid())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.strip())
    written = [p.name for p in tmp_path.iterdir()]
    assert f"gauge_liveall_{pid}.db" in written, written

    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    child_dead(pid)
    assert f"gauge_liveall_{pid}.db" not in [p.name for p in tmp_path.iterdir()]


def test_without_multiprocess_mode_nothing_is_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = tmp_path / "gauge_liveall_4242.db"
    kept.write_bytes(b"")
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    child_dead(4242)  # one process's own registry: nothing to remove, no error
    assert kept.exists()
