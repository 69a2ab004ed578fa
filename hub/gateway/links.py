"""One way in per system: RabbitMQ or the HTTPS gateway, not both (``LinkGuard``).

Once a system polls or submits over HTTPS, the gateway consumes the system's queue (``hub.gateway.mailbox``). An
AMQP consumer of the same system on the same queue then competes with it: its deliveries are split between the two
links, and the hub's receipts for what it submits over AMQP can be taken by the gateway as inbox items (its sends
wait in vain; the demo's first try at its HTTPS step did exactly that). The broker cannot tell the two apart from a
legitimate second consumer, but the management API names each consumer's user: a consumer logged in as the
system's own user (``Names.user(system)``) is that system on AMQP; the gateway's consumers are the hub's user, and
so are those of a second gateway of the same installation, which may share the queues.

- ``check(system)``, before the gateway starts consuming a system's queues: when the system's own user consumes one
  of them, ``GATEWAY_LINK_CONFLICT`` (409), and the gateway leaves the queue to the AMQP link.
- ``on_amqp(systems)``: which of the systems the gateway consumes for have an AMQP consumer of their own now (the
  mailbox looks every ``GatewaySettings.link_check_s`` and gives way: it stops consuming for them and puts what it
  held back in the queue, so the AMQP link gets everything; their next poll or submission is refused as above).

The guard keeps a broken link from being silent; it is not a security boundary (a system can only read its own
queue either way). So when the management API cannot be asked, it lets the request through, asks again only after
``DOWN_S`` seconds, and says so in a WARNING at most once a minute. A consumer logged in with another user (an
operator's tool with the hub's credentials) is not seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from hub.errors import HubError

if TYPE_CHECKING:
    from hub.transport.names import Names

__all__ = ["CONFLICT", "DOWN_S", "LinkConflict", "LinkGuard"]

log = logging.getLogger("hub.gateway")

CONFLICT = "GATEWAY_LINK_CONFLICT"
#: After the management API failed, the guard lets requests through without asking it for this long (a hanging API
#: would otherwise hold each system's first request for the request's timeout).
DOWN_S = 10.0

#: Queue → the users consuming it (``hub.transport.users.consumers_by_queue``).
Lookup = Callable[[], Awaitable[Mapping[str, Collection[str]]]]


class LinkConflict(HubError):
    """The system takes part over RabbitMQ: the gateway does not read its queue."""


class LinkGuard:
    """See the module docstring. ``lookup`` lists the consumers; one listing serves every question asked within
    ``fresh_s`` seconds (a gateway starting with many systems polling at once asks the broker once), and questions
    asked while a listing is on its way wait for it."""

    def __init__(
        self, names: Names, lookup: Lookup, *, fresh_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.names = names
        self._lookup = lookup
        self.fresh_s = fresh_s
        self._clock = clock
        self._listing: Mapping[str, Collection[str]] | None = None
        self._at = 0.0
        self._pending: asyncio.Future[Mapping[str, Collection[str]] | None] | None = None
        self._warned_at: float | None = None
        self._down_until = 0.0

    async def on_amqp(self, systems: Iterable[str]) -> dict[str, list[str]]:
        """System → its queues that its own broker user consumes now, for those of ``systems`` that have any (empty
        when the broker cannot be asked)."""
        listing = await self._consumers()
        if not listing:
            return {}
        found: dict[str, list[str]] = {}
        for system in systems:
            user = self.names.user(system)
            queues = [q for q in self.names.system_queues(system) if user in listing.get(q, ())]
            if queues:
                found[system] = queues
        return found

    async def check(self, system: str) -> None:
        """Raise ``LinkConflict`` (``GATEWAY_LINK_CONFLICT``) when the system's own broker user consumes its queue."""
        if await self.on_amqp([system]):
            raise LinkConflict(
                f"system {system} already receives over RabbitMQ (a consumer logged in as its own broker user "
                f"{self.names.user(system)} reads its queue); a system takes part one way: stop its AMQP adapter to "
                "use the HTTPS gateway, or keep AMQP and do not poll or submit over HTTPS",
                code=CONFLICT,
            )

    def forget(self) -> None:
        """Ask the broker again at the next question (tests)."""
        self._listing = None
        self._down_until = 0.0

    async def _consumers(self) -> Mapping[str, Collection[str]] | None:
        now = self._clock()
        if self._listing is not None and now - self._at < self.fresh_s:
            return self._listing
        if now < self._down_until:  # the API failed a moment ago: no request waits for it again until then
            return None
        if self._pending is not None:
            return await asyncio.shield(self._pending)
        fut: asyncio.Future[Mapping[str, Collection[str]] | None] = asyncio.get_running_loop().create_future()
        self._pending = fut
        listing: Mapping[str, Collection[str]] | None = None
        failed = ""
        try:
            listing = await self._lookup()
        except HubError as exc:
            failed = f"{exc.code}: {exc.detail}"
        except Exception as exc:  # whatever the API does, the gateway keeps serving
            failed = type(exc).__name__
        finally:  # also when the asker was cancelled: the others waiting for this listing go on without it
            self._pending = None
            if listing is not None:
                self._listing, self._at = listing, self._clock()
            fut.set_result(listing)
        if failed:
            self._down_until = self._clock() + DOWN_S
            self._warn(failed)
        return listing

    def _warn(self, why: Any) -> None:
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= 60.0:
            self._warned_at = now
            log.warning(
                "could not ask RabbitMQ's management API which systems read their queues over AMQP (%s); the gateway "
                "serves without the one-link-per-system check until it can",
                why,
            )
