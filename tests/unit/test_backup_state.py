"""What ``hub backup`` takes from the state dir: the state, not what a running installation writes beside it."""

from __future__ import annotations

from pathlib import Path

from hub.backup import _state_files


def test_a_backup_skips_logs_pid_files_and_live_metrics(tmp_path: Path) -> None:
    for name in ("pki/root-ca.pem", "systems/a/key.pem", "metrics/counter_4711.db", "hub.pid", "ops.log", "ops.pid"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    taken = [p.relative_to(tmp_path).as_posix() for p in _state_files(tmp_path, skip=tmp_path / "systems/a/key.pem")]
    assert taken == ["pki/root-ca.pem"]
