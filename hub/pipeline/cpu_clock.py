"""The clock of a message's CPU budget: the thread's CPU time without the collector's full passes.

``Processor.examine`` charges a message the CPU time its thread spent between two of its steps
(``Settings.message_budget_ms``). A full collection (generation 2) that happens to start inside that window walks
every object the process holds — in a worker that is only what batches allocated (``settle_memory`` froze the rest),
in a process that hosts the pipeline beside much else (``adapters.sdk.testing.TestHub`` in a test run, a tool) it
is the whole heap: one pass over 3 M objects took 700 ms of CPU on the project's VM, and on CI an ordinary message
(327 ms by the end of its signature check) that happened to allocate the object that triggered it was refused with
MSG_COST_EXCEEDED and parked. What a full pass costs depends on the process, not on the message, so it is not
charged to the message. The young generations' passes stay charged: they walk at most what was allocated since the
last one, which a message's own allocations drive.

``gc.callbacks`` run in the thread whose allocation triggered the collection, with the GIL held, and one collection
runs at a time in the process; each thread's tally is kept under its ident. A clock reading costs a dictionary
look-up beside the system call (about 0.5 µs more than the bare call on the project's VM; through a
``threading.local`` it was 1.8 µs more, five readings a message), and collections are rare (the
worker's thresholds: one young pass per 10,000 allocations), so the tally costs nothing measurable on the message
path. A thread ident reused by a later thread inherits the old tally: harmless, since the budget compares two
readings of one thread.
"""

from __future__ import annotations

import gc
from threading import get_ident
from time import thread_time
from typing import Any

#: Thread ident → CPU seconds it spent in full collections.
_tally: dict[int, float] = {}
_started = 0.0


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    global _started
    if info.get("generation") != 2:
        return
    if phase == "start":
        _started = thread_time()
        return
    ident = get_ident()
    _tally[ident] = _tally.get(ident, 0.0) + (thread_time() - _started)


def install() -> None:
    """Start tallying full collections (idempotent; the processor calls it when it has a budget)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)


def full_collections_s() -> float:
    """CPU seconds this thread has spent in full collections since ``install``."""
    return _tally.get(get_ident(), 0.0)


def message_cpu_time() -> float:
    """This thread's CPU seconds, less what it spent in full collections since ``install``."""
    return thread_time() - _tally.get(get_ident(), 0.0)
