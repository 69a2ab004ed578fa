"""Stopping background tasks so that a stop always ends.

A loop task (a heartbeat, the gateway's directory refresh, an activity recorder) is stopped by cancelling it and
waiting for it. A cancellation can get lost inside a library call: asyncpg's pool, releasing a connection whose
query the cancellation cut short, raises the error of its reset instead (a connection error, which the loop takes
for a store hiccup and logs), and on Python 3.11 ``asyncio.wait_for`` (aiormq's) returns the result when the inner
call finished as the cancellation landed (CPython gh-86296, fixed in 3.12). The loop then carries on, and a single
``await task`` waits for ever: seen as a gateway whose stop hung in CI (its directory refresh "cancelling" but
looping). The loops check ``cancelling()`` where they catch errors, and ``stopped`` cancels again until the tasks
end, then gives up after a limit, said in the log, so that the rest of the stop runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("hub.aio")

#: How often a task that has not ended is cancelled again: longer than any of the tasks' own clean-up after a
#: cancellation (at most 2 s each here: a row removed from the store), which a second cancellation would cut short.
RECANCEL_S = 5.0
#: How long ``stopped`` waits in all before it goes on without a task that will not end.
STOP_LIMIT_S = 20.0


def cancelling() -> bool:
    """Whether the running task was asked to stop: a loop that caught an error checks this before it goes round
    again (the error may be what its cancellation turned into)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def stopped(
    *tasks: asyncio.Future[Any] | None,
    every_s: float = RECANCEL_S,
    limit_s: float = STOP_LIMIT_S,
) -> None:
    """Cancel ``tasks`` (None ones are skipped) and wait until they have ended, cancelling those still running again
    every ``every_s``; after ``limit_s`` the ones still running are left, named in the log. What a task ended with is
    taken (never "exception was never retrieved"): the error of one that had died before its stop is logged as an
    error. If the caller is cancelled meanwhile, the tasks are still stopped first, then the cancellation goes on
    (CancelledError): callers close what they hold in a ``finally``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    interrupted = False
    cancel_at = loop.time()
    pending = {t for t in tasks if t is not None}
    died = {t for t in pending if t.done()}
    while pending := {t for t in pending if not t.done()}:
        left = deadline - loop.time()
        if left <= 0:
            names = ", ".join(sorted(t.get_name() if isinstance(t, asyncio.Task) else repr(t) for t in pending))
            log.error("%d task(s) did not end within %g s of being cancelled (%s); going on without them",
                      len(pending), limit_s, names)  # fmt: skip
            break
        if loop.time() >= cancel_at:  # not at once after the caller's own cancellation: the interval holds
            for t in pending:
                t.cancel()
            cancel_at = loop.time() + every_s
        try:
            await asyncio.wait(pending, timeout=min(cancel_at - loop.time(), left))
        except asyncio.CancelledError:
            interrupted = True  # the tasks first: a stop that leaves them running leaves their connections too
    for task in tasks:
        if task is None or not task.done() or task.cancelled() or (exc := task.exception()) is None:
            continue
        if task in died:  # before its stop (a bug): said now, or nobody would know that it had stopped working
            log.error("a background task had ended with an error before its stop: %r", exc, exc_info=exc)
        else:  # what its cancellation became on the way out
            log.debug("a stopped task ended with %r", exc)
    if interrupted:
        raise asyncio.CancelledError
