"""RabbitMQ: the only package that imports aio-pika (and talks to the management API).

Public surface::

    names      Names(namespace), LANES, PRIORITY, RETRY_DELAYS_S, lane_for(), priority_for(), retry_delay()
    topology   topology(names, systems) (pure description), Outgoing, Incoming, Handler, retry_of(), dead_letter_of()
    amqp       Transport.connect(settings) → declare_topology / publish_many / consume / fetch / ack / nack / close;
               Consumer; CONNECTION_ERRORS; translate()
    users      provision(), remove(), amqp_url_for(), read_password(), teardown_namespace(), close_connections()
    memory     MemoryTransport, MemoryBroker (in-memory twin for unit tests; never proof of delivery)
    _aiormq_fast  the speed layer: every replacement of aiormq/pamqp internals, used while ``Settings.amqp_fast``
               (``HUB_AMQP_FAST``) is on; its process-wide frame reader is installed by ``hub run``'s workers only

``hub.transport.names`` and ``hub.transport.topology`` are pure and importable without a broker; importing this
package itself imports aio-pika.
"""

from hub.transport.amqp import CONNECTION_ERRORS, Consumer, Transport, ack, nack, translate
from hub.transport.memory import MemoryBroker, MemoryTransport
from hub.transport.names import (
    LANES,
    MAX_PRIORITY,
    PRIORITY,
    RETRY_DELAYS_S,
    Lane,
    Names,
    lane_for,
    priority_for,
    retry_delay,
)
from hub.transport.topology import Handler, Incoming, Outgoing, Topology, dead_letter_of, retry_of, topology

__all__ = [
    "CONNECTION_ERRORS",
    "LANES",
    "MAX_PRIORITY",
    "PRIORITY",
    "RETRY_DELAYS_S",
    "Consumer",
    "Handler",
    "Incoming",
    "Lane",
    "MemoryBroker",
    "MemoryTransport",
    "Names",
    "Outgoing",
    "Topology",
    "Transport",
    "ack",
    "dead_letter_of",
    "lane_for",
    "nack",
    "priority_for",
    "retry_delay",
    "retry_of",
    "topology",
    "translate",
]
