"""Running a bench script as a developer would, for the smoke tests (test_bench_smoke*.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from hub.settings import PROJECT_ROOT

#: A figure as the scripts print it.
NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"


def run_bench(script: str, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python bench/<script> <args>`` from the project root, with none of the test run's ``HUB_*`` settings (a
    bench builds its own installation; ``HUB_BENCH_*`` say where its services are)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") or k.startswith("HUB_BENCH_")}
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / script), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check_last_line(done: subprocess.CompletedProcess[str], pattern: str, positive: tuple[str, ...]) -> str:
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
    assert done.returncode == 0, f"exit {done.returncode}:\n{tail}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output:\n{tail}"
    found = re.fullmatch(pattern, lines[-1])
    assert found, f"the last line is not the documented one:\n{lines[-1]}"
    for name in positive:
        assert float(found.group(name)) > 0, f"{name} is not above zero: {lines[-1]}"
    return done.stdout
