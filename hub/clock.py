"""The hub's clock: one function that every part of the hub which stamps or judges time by the calendar asks
(certificates issued and checked, CRLs, evidence timestamps, message freshness), so that a test can run years in
seconds. Monotonic timers (timeouts, intervals) never use it.

    from hub import clock
    clock.now()                  # timezone-aware UTC
    with clock.override(f): ...  # tests: a fixed or moving clock (any callable returning an aware datetime)
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator

__all__ = ["now", "override"]

_source: Callable[[], dt.datetime] | None = None


def now() -> dt.datetime:
    """The current time, UTC-aware (the real clock unless a test set another)."""
    if _source is None:
        return dt.datetime.now(dt.UTC)
    return _source().astimezone(dt.UTC)


@contextlib.contextmanager
def override(source: Callable[[], dt.datetime]) -> Iterator[None]:
    """Use ``source`` as the clock inside the block (tests only)."""
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous
