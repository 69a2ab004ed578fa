"""What the pipeline does for one message once the store has recorded it: a ``Plan`` (made by
``hub.pipeline.decide.plan_of``, carried out by ``Processor.render`` and the worker). A module of its own so that
the processor and the decisions can both name it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Delivery", "Plan"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One recipient of an accepted message."""

    system: str
    agency: str
    role: str
    zone: str
    ceiling: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do for one message once the store has recorded it (or found it recorded before).

    ``deliver``: the recipients to send a hub-signed delivery now. ``receipt``: the outcome of the hub.receipt to
    send (``accepted``, ``duplicate``, ``quarantined``; None: none), ``record_receipt``: whether it is recorded as
    the sender's answer (a "duplicate" receipt is not: the first answer stands). ``blocked_error``: a hub.error
    naming the recipients the gate kept it from. ``error``: a signed hub.error for a refused message.
    ``park``: its bytes go to the dead-letter queue, where an operator sees them."""

    deliver: tuple[Delivery, ...] = ()
    receipt: str | None = None
    record_receipt: bool = False
    blocked_error: bool = False
    error: bool = False
    park: bool = False

    @property
    def empty(self) -> bool:
        return not (self.deliver or self.receipt or self.blocked_error or self.error or self.park)
