"""``hub gateway``'s metrics directory (``hub.metrics_files.prepare_standalone``): taken under a lock, so that a
second gateway started on the same port never empties the directory of the one running. Each gateway is a process of
its own here (the mode is chosen at prometheus_client's first import, and the lock is held until the process exits)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hub.metrics_files import running_gateway_dirs
from hub.settings import PROJECT_ROOT

_PREPARE = """
import os
import sys
from pathlib import Path
from hub.metrics_files import prepare_standalone
path = Path(sys.argv[1])
why = prepare_standalone(path)
print("taken" if why is None else "not taken: " + why, flush=True)
if why is None:
    (path / f"counter_{os.getpid()}.db").write_bytes(b"x")
    print("wrote", flush=True)
sys.stdin.readline()  # hold the lock until told
"""


def _gateway(path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PREPARE, str(path)],
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip()]
    if lines[0] == "taken":
        lines.append(proc.stdout.readline().strip())
    return proc, lines


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.communicate("\n", timeout=10)  # the lock goes with the process; its pipes closed
    assert proc.returncode == 0


def test_a_second_gateway_on_the_port_leaves_the_running_ones_metrics_alone(tmp_path: Path) -> None:
    path = tmp_path / "state" / "metrics-gateways" / "8443"
    first, said = _gateway(path)
    try:
        assert said == ["taken", "wrote"]
        kept = sorted(p.name for p in path.iterdir())
        second, said2 = _gateway(path)
        _stop(second)
        assert said2[0].startswith("not taken: another gateway on this port holds"), said2
        assert sorted(p.name for p in path.iterdir()) == kept  # not emptied
        assert running_gateway_dirs(path.parent) == [path]  # the ops page reads it
    finally:
        _stop(first)
    # stopped: its directory is left as it was, but it is not this machine's metrics any more
    assert sorted(p.name for p in path.iterdir()) == kept
    assert running_gateway_dirs(path.parent) == []
    # the first one gone, the next start takes the directory and empties it (an earlier run's counters)
    deadline = time.monotonic() + 5
    while True:
        third, said3 = _gateway(path)
        if said3[0] == "taken" or time.monotonic() > deadline:
            break
        _stop(third)
    try:
        assert said3 == ["taken", "wrote"]
        assert not set(kept) & {p.name for p in path.iterdir()}
    finally:
        _stop(third)


def test_a_directory_it_cannot_write_leaves_the_metrics_in_the_process(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    proc, said = _gateway(blocked / "metrics-gateways" / "8443")
    _stop(proc)
    assert said[0].startswith("not taken: "), said
