"""What one message can cost: ``Processor.examine`` on the worst message of each dimension of the cost model, beside
the typical 2 KB notice, in the same process.

The messages come from ``tests/hostile/costly.py``: each fills one dimension (namespace declarations, attributes,
markup items, names, errors, markings, …) up to the bound the intake enforces, at the message size limit, and is
signed by a real system where it must get past the signature (an insider's worst case). The processor is the one
``hub run`` uses, built in memory (throw-away CA, the demo directory and routes), without the per-message CPU
budget, so that the figures show what the bounds alone allow. Times are CPU time of this process
(``time.process_time``), the best of ``--rounds`` runs per message (the VM's noise only ever adds).

Last line::

    hostile_worst_ms=<n> typical_ms=<n> hostile_ratio=<worst / typical>

Goal: ``hostile_worst_ms ≤ 50``. Usage: ``python bench/hostile.py [--rounds N] [--max-bytes N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hostile.costly import CASES, MAX_BYTES, build_all, make_kit  # noqa: E402


def cpu_ms(fn, data: bytes, rounds: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, result = float("inf"), None
    for _ in range(rounds):
        t = time.process_time()
        result = fn(data)
        best = min(best, time.process_time() - t)
    return best * 1000, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    args = ap.parse_args()
    kit = make_kit()
    examine = kit.processor.examine
    typical = kit.typical()
    for _ in range(200):  # warm: caches of the verifier, schema lookups
        examine(typical)
    samples = []
    for _ in range(args.rounds):
        t = time.process_time()
        for _ in range(200):
            examine(typical)
        samples.append((time.process_time() - t) / 200 * 1000)
    typical_ms = min(samples)
    print(f"typical 2 KB notice: {typical_ms:.3f} ms (median {statistics.median(samples):.3f})")
    print(f"{'case':24} {'bytes':>9} {'<':>7} {'outcome':28} {'ms':>7}  what")
    worst = ("", 0.0)
    for name, data in build_all(kit, args.max_bytes).items():
        ms, result = cpu_ms(examine, data, args.rounds)
        error = getattr(result, "error", None)
        outcome = f"refused {error.code}" if error is not None else type(result).__name__.lower()
        if getattr(result, "quarantined", False):
            outcome = "accepted, quarantined"
        print(f"{name:24} {len(data):>9} {data.count(b'<'):>7} {outcome:28} {ms:7.1f}  {CASES[name][0]}")
        if ms > worst[1]:
            worst = (name, ms)
    print(f"worst: {worst[0]}")
    print(f"hostile_worst_ms={worst[1]:.1f} typical_ms={typical_ms:.3f} hostile_ratio={worst[1] / typical_ms:.0f}")


if __name__ == "__main__":
    main()
