"""Per-system limits (pure): a token bucket for the request rate and a cap on concurrent requests.

The values come from the directory's ``System`` object when it carries the attributes ``rate`` (requests per
second) and ``concurrency`` (requests at once); absent or empty, the gateway's defaults apply. Over a limit the
request is refused with 429 (``GATEWAY_RATE_LIMITED`` / ``GATEWAY_CONCURRENCY``) and a ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hub.gateway.identity import Refused

__all__ = ["Limits", "TokenBucket", "limits_of"]


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up (default: one second's worth)."""

    rate: float
    burst: float = 0.0
    tokens: float = field(default=-1.0)
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if self.burst <= 0:
            self.burst = max(1.0, self.rate)
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is available."""
        if self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 60.0


def limits_of(system: Any, default_rate: float, default_concurrency: int) -> tuple[float, int]:
    """(rate, concurrency) of a directory ``System`` (its ``rate``/``concurrency`` attributes, else the defaults)."""
    rate = getattr(system, "rate", None)
    concurrency = getattr(system, "concurrency", None)
    return (
        float(rate) if rate else float(default_rate),
        int(concurrency) if concurrency else int(default_concurrency),
    )


class Limits:
    """The limits of every system seen; ``lookup(system_id)`` returns its (rate, concurrency)."""

    def __init__(
        self, lookup: Callable[[str], tuple[float, int]], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lookup = lookup
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._active: dict[str, int] = {}

    def check(self, system: str) -> None:
        """``Refused`` (429) when ``admit`` would refuse the system now; nothing is taken (the token and the slot
        are ``admit``'s, when the request comes): for ``Expect: 100-continue``, before the client sends its body."""
        refused = self._over(system, take=False)
        if refused is not None:
            raise refused

    @contextmanager
    def admit(self, system: str) -> Iterator[None]:
        """Hold one of the system's concurrent slots for the block, after taking a token; else ``Refused`` (429)."""
        refused = self._over(system, take=True)
        if refused is not None:
            raise refused
        active = self._active.get(system, 0)
        self._active[system] = active + 1
        try:
            yield
        finally:
            left = self._active[system] - 1
            if left:
                self._active[system] = left
            else:
                del self._active[system]

    def _over(self, system: str, *, take: bool) -> Refused | None:
        """The refusal the system's limits give now; ``take``: the token is taken (a copy of the bucket is asked
        otherwise)."""
        rate, cap = self.lookup(system)
        bucket = self._buckets.get(system)
        if bucket is None or bucket.rate != rate:
            bucket = TokenBucket(rate)
            if take:
                self._buckets[system] = bucket
        elif not take:
            bucket = TokenBucket(rate, bucket.burst, bucket.tokens, bucket.stamp)
        wait = bucket.take(self.clock())
        if wait > 0:
            return Refused(
                429,
                "GATEWAY_RATE_LIMITED",
                f"system {system} is over its rate of {rate:g} requests a second",
                retry_after=max(1, math.ceil(wait)),
            )
        active = self._active.get(system, 0)
        if active >= cap:
            return Refused(
                429,
                "GATEWAY_CONCURRENCY",
                f"system {system} already has {active} requests in progress (at most {cap})",
                retry_after=1,
            )
        return None
