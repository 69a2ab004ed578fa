"""The bench scripts still run: each one's smoke mode ends with the last line bench/README.md documents.

The issues' speed figures come from these scripts (issue 11's ``gateway_ratio``, the core's ``e2e_ratio`` floor …),
and until now no CI step ran them, so a change could break one unnoticed until the next session measured with it.
Each case runs a script as a developer would (its own installation, database and namespace on the real RabbitMQ and
PostgreSQL where it needs them) and checks its exit status and the format of its last line, and that it measured
something. No figure is compared with a goal: speed is measured by running the scripts, never by timed assertions.

Left out, each for a reason: ``sdk.py`` needs FastStream (the ``[bench]`` extra, a baseline only, not in the lock
file), ``cluster.py`` starts three RabbitMQ nodes (about two minutes), and ``soak.py``, ``emergency.py`` and
``hostile_burst.py`` run fixed phases of half a minute or more. ``e2e.py --quick`` has a test of its own, in a
module of its own, so that the two pytest workers share the load (``--dist loadfile``).

The arguments are the smallest that still run every phase of a script: the suite is CPU-bound on two cores, and the
figures of a smoke run mean nothing (``trust.py`` ran its full measurement here, 21 s; ``gateway.py --quick`` 24 s)."""

from __future__ import annotations

import pytest

from tests.integration.benchrun import NUMBER, check_last_line, run_bench

pytestmark = pytest.mark.integration


#: script, smoke arguments, the documented last line (bench/README.md), the fields that must be above zero.
CASES = [
    (
        "examine.py",
        ["--messages", "60", "--rounds", "1"],
        rf"examine_us=(?P<examine_us>{NUMBER}) floor_us=(?P<floor_us>{NUMBER}) examine_ratio={NUMBER}",
        ("examine_us", "floor_us"),
    ),
    (
        "intake.py",
        ["--quick"],
        rf"intake_ratio={NUMBER} hub_per_s=(?P<hub_per_s>{NUMBER}) bare_per_s=(?P<bare_per_s>{NUMBER})",
        ("hub_per_s", "bare_per_s"),
    ),
    (
        "trust.py",
        ["--quick"],
        rf"verify_per_s=(?P<verify_per_s>{NUMBER}) sign_per_s=(?P<sign_per_s>{NUMBER}) floor_ratio={NUMBER}",
        ("verify_per_s", "sign_per_s"),
    ),
    (
        "hostile.py",
        ["--rounds", "1"],
        rf"hostile_worst_ms=(?P<worst>{NUMBER}) typical_ms=(?P<typical>{NUMBER}) hostile_ratio={NUMBER}",
        ("worst", "typical"),
    ),
    (
        "search.py",
        ["--rows", "2000", "--searches", "20", "--traces", "20"],
        rf"search_p95_ms=(?P<search>{NUMBER}) trace_p95_ms=(?P<trace>{NUMBER}) rows=(?P<rows>[0-9]+)",
        ("search", "trace", "rows"),
    ),
    (
        "gateway.py",
        ["--seconds", "1", "--flat", "200", "--rounds", "1"],  # less than --quick: the script runs, not a figure
        rf"gateway_ratio=(?P<ratio>{NUMBER}) gateway_per_s=(?P<hub>{NUMBER}) bare_per_s=(?P<bare>{NUMBER}) "
        rf"p99_ms=(?P<p99>{NUMBER})",
        ("ratio", "hub", "bare", "p99"),
    ),
    (
        "sdk_https.py",
        ["--quick"],
        rf"sdk_https_per_s=(?P<https>{NUMBER}) sdk_amqp_per_s=(?P<amqp>{NUMBER}) https_ratio=(?P<ratio>{NUMBER})",
        ("https", "amqp", "ratio"),
    ),
]


@pytest.mark.parametrize(("script", "args", "pattern", "positive"), CASES, ids=[c[0] for c in CASES])
def test_the_bench_script_runs_and_ends_with_its_documented_line(
    script: str, args: list[str], pattern: str, positive: tuple[str, ...]
):
    out = check_last_line(run_bench(script, args), pattern, positive)
    if script == "gateway.py":
        # every phase of both paths answered every request (the script now fails when one was not answered 202)
        phases = [line for line in out.splitlines() if " in " in line and "errors:" in line]
        assert len(phases) == 4, out  # at the rate and flat out, each path
        assert all(line.rstrip().endswith("errors: none") for line in phases), out
