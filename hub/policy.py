"""What a route may promise about delivery, in one place: the priority of each 紧急程度, the retry delays that have
a retry queue, and the retry policy of messages no route decided. Pure and small: the route table
(``hub.routing.routes``) and the transport (``hub.transport.names``, ``topology``) both read it, so a route file
and the runtime cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_RETRY", "RETRY_DELAYS_S", "URGENCY_PRIORITY", "Retry"]

#: AMQP priority per 紧急程度 (urgency): the default of every route (a route's ``<Urgency priority>`` overrides it)
#: and the priority of the hub's own replies.
URGENCY_PRIORITY: Final[dict[str, int]] = {"特急": 9, "加急": 5, "平件": 0}

#: The back-off delays, in seconds, that have a retry queue (``ns.retry.<d>s``). One queue per delay (rather than a
#: per-message TTL on a single queue) because RabbitMQ only expires messages at the head of a queue: with one TTL
#: per queue the head is always the first to expire, so no message waits behind a longer one. A route's
#: ``<Retry backoff>`` may use these delays only (``hub routes check`` refuses any other).
RETRY_DELAYS_S: Final[tuple[int, ...]] = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass(frozen=True, slots=True)
class Retry:
    """Delivery attempts in total, and the seconds to wait before each retry (the last value repeats)."""

    attempts: int
    backoff: tuple[int, ...]

    def delay(self, retry: int) -> int:
        """Seconds to wait before retry number ``retry`` (1 = the first retry)."""
        return self.backoff[min(max(retry, 1), len(self.backoff)) - 1]

    def next_delay(self, retry: int) -> int | None:
        """The back-off before retry number ``retry`` (1-based), or None when the attempts are used up (the first
        delivery is attempt 1, so ``attempts`` allows ``attempts - 1`` retries) and the message belongs in the
        dead-letter queue."""
        if retry < 1:
            raise ValueError("retry is 1-based")
        return self.delay(retry) if retry < self.attempts else None


#: The retry policy of a route file without ``<Retry>`` and of a message that no route decided (refused before
#: routing, or not readable at all).
DEFAULT_RETRY: Final[Retry] = Retry(attempts=6, backoff=(5, 30, 120, 600, 1800))
