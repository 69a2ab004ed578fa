"""The emergency lane's quota per publisher: one system flooding the lane with what it may not send there cannot
hold up the others' alerts.

The emergency lane is one queue in arrival order. A system that floods it with ordinary messages (refused there,
``LANE_NOT_ENTITLED``) or with anything else the hub refuses puts every other system's alert behind its flood, and
each refusal costs the hub parsing, validation, a record and a signed error: a flood faster than that grows the queue
without bound (``bench/emergency.py --flood-rate 800`` measured a 13 s alert before this quota).

So each worker keeps, per publisher (the AMQP user RabbitMQ authenticated, ``Incoming.publisher``), a token bucket of
*refusals* in the emergency lane: every message of that publisher the lane refused spends a token; tokens come back
at ``rate`` a second up to ``burst``. While a publisher has no token left, what it sends to the lane is moved
**unread** to the normal lane (``hub.transport.topology.moved_lane_of``: one publish, no parsing), marked with the
lane it was sent in, and examined there later under the emergency lane's rules — an ordinary message is still
refused ``LANE_NOT_ENTITLED``, an entitled one still accepted. Nothing is lost or decided differently; the flooder
only loses its place in the lane. Moving costs a publish (tens of µs in a batch) instead of an examination (about a
millisecond), so the lane drains at the broker's speed and other publishers' alerts are read at once.

Only refusals count: a system sending many genuine alerts at once (a county's whole alarm roll-out) keeps its place.
The debt is bounded (at most ``burst`` below zero), so a flooder is back in the lane at most ``2 × burst / rate``
seconds after its flood stops. The hub's own messages (the process engine's) are never moved. The figures are per
worker process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["EMERGENCY_BURST", "EMERGENCY_RATE_PER_S", "LaneQuota"]

#: Refusals a second one publisher may cost the emergency lane, per worker process, once its burst is spent.
EMERGENCY_RATE_PER_S = 20.0
#: Refusals one publisher may cost the emergency lane at once before the rate applies.
EMERGENCY_BURST = 100.0


class LaneQuota:
    """Token buckets of refusals per publisher (pure; the clock is injectable). ``allows(publisher)`` says whether
    the publisher's next emergency-lane message is read in the lane (it has a token left); ``charge(publisher)``
    spends one for a message the lane refused."""

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

    def _tokens(self, publisher: str, now: float) -> float:
        tokens, at = self._buckets.get(publisher, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def allows(self, publisher: str) -> bool:
        """True when ``publisher`` has a token left (nothing is spent); False counts one message moved."""
        if publisher not in self._buckets:
            return True
        if self._tokens(publisher, self.clock()) >= 1.0:
            return True
        self.moved[publisher] = self.moved.get(publisher, 0) + 1
        return False

    def charge(self, publisher: str) -> None:
        """The lane refused a message of ``publisher``: spend a token (down to ``-burst`` at most)."""
        now = self.clock()
        tokens = max(-self.burst, self._tokens(publisher, now) - 1.0)
        if publisher not in self._buckets and len(self._buckets) >= self.MAX_PUBLISHERS:
            self._buckets.clear()  # forget everyone's debt rather than grow without bound
        self._buckets[publisher] = (tokens, now)
