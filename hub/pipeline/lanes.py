"""Per-publisher fairness in the inbound lanes: one system flooding the hub — with garbage, with what it may not
send, or with anything else the hub refuses — cannot hold up the other systems' messages.

**The normal lanes** (``Standing``): every system publishes into its own inbound queue (``hub.transport.names``: the
submit exchange, a RabbitMQ topic permission per system) and the workers read all of them in turn
(``hub.transport.amqp.Consumer``), so nobody's message waits behind another system's flood. What a flood still
costs is CPU: each refusal is a signature check, a record and a signed error. So a batch takes from a system's queue
only its *standing*: a few messages at first contact, more with every message the hub accepts (a bulk sender is at
whole batches after a few), fewer with every refusal; in debt it is read at ``REFUSAL_RATE_PER_S`` per worker and
its flood waits, kept, in its own queue. ``bench/hostile_burst.py`` measures it.

**The emergency lane** (``LaneQuota``): its quota per publisher.

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

__all__ = [
    "EMERGENCY_BURST",
    "EMERGENCY_RATE_PER_S",
    "REFUSAL_DEBT",
    "REFUSAL_RATE_PER_S",
    "START_SHARE",
    "LaneQuota",
    "Standing",
]

#: Refusals a second one publisher may cost the emergency lane, per worker process, once its burst is spent.
EMERGENCY_RATE_PER_S = 20.0
#: Refusals one publisher may cost the emergency lane at once before the rate applies.
EMERGENCY_BURST = 100.0

#: The normal lanes: each system has its own inbound lane and the workers read them in turn
#: (``hub.transport.amqp.Consumer``), so another system's message never waits *behind* a flood. But a flood of
#: messages that each cost a signature check, a record and a signed refusal still takes every core of the machine,
#: and then everybody's messages wait for CPU (``bench/hostile_burst.py``: a valid message's p99 at 12× a quiet run
#: with the lanes alone, 20× at 100 refusals/s per worker). So each worker keeps a ``Standing`` per publisher: how
#: many of its messages one batch may take. It starts small, grows with every message of the publisher the hub
#: accepts (a bulk sender reaches whole batches after a few), shrinks with every refusal, and below its start it
#: comes back with time only, at ``REFUSAL_RATE_PER_S``: a flooder is read at that rate, its flood waits — kept, not
#: refused — in its own queue.
#: Messages of a publisher a batch takes at first contact (and what time alone restores).
START_SHARE = 8.0
#: Refusals a second a publisher in debt may cost the normal lanes, per worker process.
REFUSAL_RATE_PER_S = 20.0
#: How far below zero refusals drive a publisher's share (its debt: ``debt / rate`` seconds without a read).
REFUSAL_DEBT = 10.0


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


class Standing:
    """Per publisher, how many of its messages one normal-lane batch may take (``share``; pure, the clock is
    injectable): ``START_SHARE`` at first contact, +1 for each message the hub accepted (up to ``most``), −1 for each
    it refused (down to ``-debt``); below the start it comes back at ``rate_per_s`` and no further."""

    MAX_PUBLISHERS = LaneQuota.MAX_PUBLISHERS

    def __init__(
        self,
        most: int,
        *,
        start: float = START_SHARE,
        rate_per_s: float = REFUSAL_RATE_PER_S,
        debt: float = REFUSAL_DEBT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if most < 1 or not 1 <= start <= most or rate_per_s <= 0 or debt < 0:
            raise ValueError("a standing needs 1 ≤ start ≤ most, a positive rate and a debt ≥ 0")
        self.most, self.start, self.rate, self.debt, self.clock = most, start, rate_per_s, debt, clock
        self._credit: dict[str, tuple[float, float]] = {}  # publisher → (credit, at)

    def _now(self, publisher: str, now: float) -> float:
        credit, at = self._credit.get(publisher, (self.start, now))
        if credit < self.start:
            credit = min(self.start, credit + (now - at) * self.rate)
        return credit

    def share(self, publisher: str) -> int:
        """Messages of ``publisher`` the next batch may take (0: none yet)."""
        return max(0, int(self._now(publisher, self.clock())))

    def count(self, publisher: str, accepted: int, refused: int) -> None:
        """What the hub decided on ``publisher``'s messages in a batch."""
        now = self.clock()
        credit = self._now(publisher, now) + accepted - refused
        if publisher not in self._credit and len(self._credit) >= self.MAX_PUBLISHERS:
            self._credit.clear()  # forget everyone's standing rather than grow without bound
        self._credit[publisher] = (max(-self.debt, min(float(self.most), credit)), now)
