"""bench/cluster.py refuses a run too short to prove anything (the sender done before node 1 is down), before it
starts a broker: exit 2 and a sentence naming the least count."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cluster.py"), *args], capture_output=True, text=True, timeout=60
    )


def test_too_few_messages_for_the_rate_are_refused_with_the_least_count() -> None:
    for args, least in (
        (("--messages", "200"), 1200),
        (("--messages", "1199"), 1200),
        (("--messages", "100", "--rate", "20"), 160),
    ):
        done = _run(*args)
        assert done.returncode == 2, done.stderr
        assert f"--messages {args[1]} is too few" in done.stderr and f"at least {least} " in done.stderr


def test_a_rate_or_down_time_of_zero_is_refused() -> None:
    for args in (("--rate", "0"), ("--down", "0")):
        done = _run(*args)
        assert done.returncode == 2 and "must be above 0" in done.stderr
