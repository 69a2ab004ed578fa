"""Deliveries that expired before their recipient took them: the sender is told, with a signed hub.error.

Every delivery is published with an AMQP ``expiration`` — the time left until its envelope's ``Expires``
(``hub.pipeline.outgoing.expiration_of``). When a recipient system stays offline past that, RabbitMQ dead-letters
the delivery from the system's queue into ``ns.dead`` (where ``hub dead list`` shows it to an operator, who may
replay it) and, through the same fanout exchange, a copy into ``ns.expired``. The hub's workers read ``ns.expired``:

- a copy that is not an expired hub delivery (a letter a system parked, a message the hub dead-lettered) is only
  acknowledged — ``ns.dead`` keeps the letter itself;
- an expired delivery is verified as the hub's own signed delivery (the hub acts only on what was signed; a copy
  that does not verify is acknowledged and logged, nothing is sent), its delivery to that recipient is recorded as
  ``failed`` with ``DELIVERY_EXPIRED`` (evidence), and the original sender gets a hub-signed ``hub.error``
  ``DELIVERY_EXPIRED`` (报文在有效期内未被收件方接收) naming the recipient, recorded as sent.

Nothing is lost: the delivery waits in ``ns.dead`` for an operator, the sender knows, the store says which recipient
never got it. A copy handled twice (a worker crashed before its acknowledgement) answers twice; the answers carry
the same original message id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hub.errors import HubError
from hub.transport.names import EXPIRED_FOR_HEADER, Names, check_system_id
from hub.transport.topology import Incoming

__all__ = ["DeliveryExpired", "ExpiredDelivery", "expired_delivery"]

log = logging.getLogger("hub.pipeline.expired")


class DeliveryExpired(HubError):
    default_code = "DELIVERY_EXPIRED"


@dataclass(frozen=True, slots=True)
class ExpiredDelivery:
    """One expired delivery read from ``ns.expired``: the recipient system whose queue it expired in."""

    recipient_system: str
    message: Incoming


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def expired_delivery(names: Names, m: Incoming, hub_user: str | None = None) -> ExpiredDelivery | None:
    """The expired hub delivery ``m`` is, or None for any other dead letter (pure: headers only): one the broker
    dead-lettered from a system's queue (``x-death``), or — with ``hub_user`` — one the hub parked with
    ``x-hub-expired-for`` under its own user_id."""
    if _text(m.headers.get("x-hub-kind")) != "delivery":
        return None
    if hub_user is not None and m.user_id == hub_user and m.headers.get(EXPIRED_FOR_HEADER):
        system = _text(m.headers.get(EXPIRED_FOR_HEADER))
        try:
            return ExpiredDelivery(check_system_id(system), m)
        except ValueError:
            return None
    deaths = m.headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else None
    if death is None or _text(death.get("reason")) != "expired":
        return None
    recipient = names.system_of_queue(_text(death.get("queue")))
    if recipient is None:
        return None
    return ExpiredDelivery(recipient, m)
