"""A pipeline worker's garbage collector: start-up objects frozen, young collections less often than CPython's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from hub.settings import PROJECT_ROOT

CHILD = textwrap.dedent(
    """
    import gc
    from hub.pipeline.worker import GC_THRESHOLDS, settle_memory
    loaded = [[i] for i in range(5000)]  # stands for the schemas, directory and keys a worker loads
    before = gc.get_freeze_count()
    settle_memory()
    assert gc.get_freeze_count() - before >= 5000, "start-up objects are moved out of the collector's view"
    assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] > 700
    cycle = []
    cycle.append(cycle)  # garbage in a cycle is still collected
    del cycle
    assert gc.collect(0) >= 1
    print("ok")
    """
)


def test_a_worker_freezes_what_it_loaded_and_collects_young_objects_less_often() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, cwd=PROJECT_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "ok"
