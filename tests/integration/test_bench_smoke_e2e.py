"""``bench/e2e.py --quick`` still runs end to end (see test_bench_smoke.py for why the bench scripts are run in CI).

Its own checks are part of what it prints and of its exit status: every message accepted and delivered exactly once,
the evidence records written, a sampled delivery and receipt verified as hub-signed. It runs in a module of its own
so that the two pytest workers share the bench scripts' time (``--dist loadfile``)."""

from __future__ import annotations

import pytest

from tests.integration.benchrun import NUMBER, check_last_line, run_bench

pytestmark = pytest.mark.integration

E2E = (
    rf"e2e_ratio=(?P<ratio>{NUMBER}) hub_per_s=(?P<hub>{NUMBER}) raw_per_s=(?P<raw>{NUMBER}) p99_ms=(?P<p99>{NUMBER}) "
    rf"e2e_ratio_fast_off=(?P<fast_off>{NUMBER}) e2e_ratio_ops=(?P<ops>{NUMBER}) ops_delta_pct=[+-]?{NUMBER}"
)


def test_the_end_to_end_bench_runs_and_checks_what_it_delivered():
    # Every phase, each as small as it goes (``--quick`` alone sent about 10,000 messages through the hub: 54 s of a
    # CPU-bound suite; this, about 1,100 in 14 s). The figures of a smoke run mean nothing; the checks still do.
    args = ["--quick", "--messages", "200", "--rounds", "1", "--seconds", "1", "--warmup", "20"]
    args += ["--ops-messages", "200", "--ops-rounds", "2"]
    out = check_last_line(run_bench("e2e.py", args), E2E, ("ratio", "hub", "raw", "p99", "fast_off", "ops"))
    assert "完整性 integrity" in out, out
    assert "0 duplicate arrivals" in out, out
