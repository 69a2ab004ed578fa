"""What the pipeline needs of a transport, as Protocols (as aio-pika's ``abc.py``): ``hub.transport.amqp.Transport``
is the real one (RabbitMQ), ``hub.transport.memory.MemoryTransport`` its in-memory twin.
``tests/integration/test_contracts.py`` runs the same contract against both."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from hub.transport.names import Names
from hub.transport.topology import Handler, Incoming, Outgoing

__all__ = ["AbstractConsumer", "AbstractTransport"]


class AbstractConsumer(Protocol):
    async def stop(self, *, drain: bool = True) -> None:
        """Stop taking messages; with ``drain``, let the batches in hand finish first."""
        ...


class AbstractTransport(Protocol):
    #: The names of every exchange and queue of this installation.
    names: Names
    #: The login the transport publishes as (RabbitMQ checks ``user_id`` against it).
    user: str

    async def declare_topology(self, system_ids: Iterable[str] = ()) -> None: ...

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        """Publish all items, confirmed by the broker, or raise ``DeliveryError``."""
        ...

    async def consume(
        self,
        queue_name: str | Sequence[str],
        handler: Handler,
        *,
        prefetch: int,
        max_batch: int = 64,
        linger: float = 0.002,
        concurrency: int = 4,
        priority: int | None = None,
        share: Callable[[str], int] | None = None,
    ) -> AbstractConsumer: ...

    async def fetch(self, queue_name: str, *, max_messages: int = 100) -> list[Incoming]: ...

    async def ack(self, batch: Iterable[Incoming]) -> None: ...

    async def nack(self, batch: Iterable[Incoming], *, requeue: bool = True) -> None: ...

    async def queue_depth(self, queue: str) -> int: ...

    async def close(self) -> None: ...
