"""The emergency lane's quota per publisher: one system flooding the lane cannot hold up the others' alerts.

The emergency lane is one queue in arrival order. A system that floods it — with ordinary messages the hub refuses
there (``LANE_NOT_ENTITLED``) or with alerts — puts every other system's alert behind its flood, and refusing
costs the hub parsing, validation, a record and a signed error each: a flood faster than that grows the queue
without bound (``bench/emergency.py --flood-rate 800`` measured a 13 s alert before this quota).

So each worker gives every publisher (the AMQP user RabbitMQ authenticated, ``Incoming.publisher``) a token bucket
in the emergency lane: ``rate`` messages a second, bursts up to ``burst``. What a publisher sends over it is moved
**unread** to the normal lane (``hub.transport.topology.moved_lane_of``: one publish, no parsing), marked with the
lane it was sent in, and examined there later under the emergency lane's rules — an ordinary message is still
refused ``LANE_NOT_ENTITLED``, an entitled one still accepted. Nothing is lost or decided differently; the flooder
only loses its place in the lane. Moving costs a publish (tens of µs in a batch) instead of an examination (about a
millisecond), so the lane drains at the broker's speed and other publishers' alerts are read at once.

The hub's own messages (the process engine's escalations, published with the hub's user and no origin) are not
counted. The figures are per worker process: with N workers a publisher may have N × ``rate`` a second examined in
the lane. An agency sends a handful of alerts a day; the defaults leave room for a county's whole alarm roll-out.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["EMERGENCY_BURST", "EMERGENCY_RATE_PER_S", "LaneQuota"]

#: Messages a second one publisher may have examined in the emergency lane, per worker process.
EMERGENCY_RATE_PER_S = 20.0
#: The burst one publisher may send at once before the rate applies.
EMERGENCY_BURST = 100.0


class LaneQuota:
    """Token buckets per publisher (pure; the clock is injectable). ``take(publisher)`` is True while the publisher
    is within its quota (and spends one token), False when it is over it."""

    #: Buckets kept at most (publishers are the directory's systems; the cap only bounds memory for odd user ids).
    MAX_PUBLISHERS = 10_000

    def __init__(
        self,
        rate_per_s: float = EMERGENCY_RATE_PER_S,
        burst: float = EMERGENCY_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a lane quota needs a positive rate and a burst of at least one message")
        self.rate, self.burst, self.clock = rate_per_s, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # publisher → (tokens, at)
        #: Messages moved out of the lane per publisher since the start (for the log line and tests).
        self.moved: dict[str, int] = {}

    def take(self, publisher: str) -> bool:
        now = self.clock()
        tokens, at = self._buckets.get(publisher, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._store(publisher, tokens - 1.0, now)
            return True
        self._store(publisher, tokens, now)
        self.moved[publisher] = self.moved.get(publisher, 0) + 1
        return False

    def _store(self, publisher: str, tokens: float, now: float) -> None:
        if publisher not in self._buckets and len(self._buckets) >= self.MAX_PUBLISHERS:
            self._buckets.clear()  # forget everyone's debt rather than grow without bound
        self._buckets[publisher] = (tokens, now)
