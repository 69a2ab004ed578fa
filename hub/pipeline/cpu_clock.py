"""The clock of a message's CPU budget: the thread's CPU time without the collector's full passes.

``Processor.examine`` charges a message the CPU time its thread spent between two of its steps
(``Settings.message_budget_ms``). A full collection (generation 2) that happens to start inside that window walks
every object the process holds — in a worker that is only what batches allocated (``settle_memory`` froze the rest),
in a process that hosts the pipeline beside much else (``adapters.sdk.testing.TestHub`` in a test run, a tool) it
is the whole heap: one pass over a million objects took 300 ms of CPU, and an ordinary message that happened to
allocate the object that triggered it was refused with MSG_COST_EXCEEDED and parked. What a full pass costs depends
on the process, not on the message, so it is not charged to the message. The young generations' passes stay
charged: they walk at most what was allocated since the last one, which a message's own allocations drive.

``gc.callbacks`` run in the thread whose allocation triggered the collection, with the GIL held, so each thread's
tally is its own (``threading.local``). Collections are rare (the worker's thresholds: one young pass per 10,000
allocations), so the callback costs nothing measurable on the message path.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

_tally = threading.local()


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if info.get("generation") != 2:
        return
    now = time.thread_time()
    if phase == "start":
        _tally.started = now
        return
    started = getattr(_tally, "started", None)
    if started is not None:
        _tally.full_passes = getattr(_tally, "full_passes", 0.0) + (now - started)
        _tally.started = None


def install() -> None:
    """Start tallying full collections (idempotent; the processor calls it when it has a budget)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)


def full_collections_s() -> float:
    """CPU seconds this thread has spent in full collections since ``install``."""
    return float(getattr(_tally, "full_passes", 0.0))


def message_cpu_time() -> float:
    """This thread's CPU seconds, less what it spent in full collections since ``install``."""
    return time.thread_time() - getattr(_tally, "full_passes", 0.0)
