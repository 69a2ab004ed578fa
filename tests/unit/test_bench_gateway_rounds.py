"""bench/gateway.py's rounds: the median round of each path is what it compares, and the options say how many."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gateway.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gateway_under_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved  # the script puts bench/ first, where sdk.py, trust.py … would shadow other imports
    return module


def _result(bench: ModuleType, per_s: float) -> object:
    return bench.Result("phase", ok=int(per_s), seconds=1.0)


def test_the_median_round_is_compared_not_the_best_or_the_mean(bench: ModuleType):
    rounds = [_result(bench, x) for x in (1150, 800, 1110)]
    assert bench._median_result(rounds).per_s == 1110
    assert bench._median_result(rounds[:1]).per_s == 1150
    # of an even count, the hub's side takes the lower middle round and the baseline the upper one: an even count
    # never flatters the ratio
    even = [_result(bench, x) for x in (900, 1200, 1000, 1100)]
    assert bench._median_result(even).per_s == 1000
    assert bench._median_result(even, upper=True).per_s == 1100
    assert bench._median_result(rounds, upper=True).per_s == 1110  # an odd count: the one median either way


def test_rounds_default_to_three_and_quick_runs_one(bench: ModuleType):
    assert bench.parse_args([]).rounds == 3
    assert bench.parse_args(["--rounds", "5"]).rounds == 5
    quick = bench.parse_args(["--quick"])
    assert (quick.rounds, quick.flat) == (1, 600)


def test_no_round_at_all_is_refused(bench: ModuleType, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as stopped:
        bench.parse_args(["--rounds", "0"])
    assert stopped.value.code == 2
    assert "--rounds must be 1 or more" in capsys.readouterr().err


def test_a_process_that_ends_between_two_readings_does_not_take_its_past_off_the_sum(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
):
    """A PostgreSQL backend (an autovacuum worker) that ended during a phase made the sum of the group's ticks fall:
    "PostgreSQL -0.80 ms CPU a request". Each process of a group now counts from its own first reading."""
    monkeypatch.syspath_prepend(str(BENCH.parent))  # cpu_line uses bench/_e2e_env.py, as when the script runs
    hz = os.sysconf("SC_CLK_TCK")
    before = {"gateway": 10, "PostgreSQL": {101: 5_000, 102: 40}}
    after = {"gateway": 10 + hz, "PostgreSQL": {102: 40 + hz, 103: hz}}  # 101 ended, 103 started
    text, total = bench.cpu_line(before, after, requests=1000)
    assert "PostgreSQL 2.00" in text and "gateway 1.00" in text
    assert total == pytest.approx(3.0)
