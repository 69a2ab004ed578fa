"""The router: envelope → ``Decision`` (who receives it, under which policy). Pure, no I/O, default deny.

Order of the checks, each a final answer to the sender:

1. a route exists for the service and version, else ``NoRoute(ROUTE_NO_ROUTE)``;
2. the sending system is in the directory, belongs to the signed sender agency, and some route admits it as a
   sender, else ``NotAllowed(ROUTE_NOT_ALLOWED)``;
3. every recipient address expands (``Directory.expand``: unknown → ``ROUTE_UNKNOWN_RECIPIENT``) and every system
   it expands to is admitted by a route's To, else ``NotAllowed(ROUTE_NOT_ALLOWED)`` naming the system — the
   whole message is refused rather than delivered to part of its addressees;
4. Expires − Created does not exceed the ``max-ttl`` of any route used, else ``NotAllowed(ROUTE_TTL_EXCEEDED)``.

Routes are tried in table order; the first whose From admits the sender and whose To admits the recipient system
decides that delivery (``Target.route``). The sending system never receives its own message through an agency or
group address (only when it names itself explicitly). A system reached twice gets one delivery; ``to`` wins over
``cc``. ``Decision.policy`` is the policy of the route that decided the first target: its priority for the
envelope's urgency, and its retry policy (``Router.retry_for``: the worker's retry step applies it).

Everything that depends only on the service, the sender and the recipient addresses is cached per router (the
whole plan per addressing, and the route chosen per sender and recipient system), so a steady stream of messages
costs a dictionary lookup and the TTL check each.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from hub.directory.model import Directory, System
from hub.envelope.model import Envelope, Recipient
from hub.errors import HubError, NoRoute, NotAllowed
from hub.policy import DEFAULT_RETRY, Retry
from hub.routing.routes import Route, RoutePolicy, RouteTable, format_duration

__all__ = ["Decision", "Router", "Target"]

_CACHE_LIMIT = 200_000
#: Plans hold tuples of targets (about 100 bytes each): fewer of them.
_PLAN_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Target:
    """One delivery: the recipient system, its agency, the role (主送 to / 抄送 cc), its zone and ceiling."""

    system: str
    agency: str
    role: Literal["to", "cc"]
    zone: str
    ceiling: int
    #: The route that allowed this delivery.
    route: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    targets: tuple[Target, ...]
    #: The route of the first target, and its policy.
    route: Route
    policy: RoutePolicy
    #: From the policy, for the envelope's urgency.
    priority: int


class Router:
    """Build once per process from a checked directory and route table; ``decide`` is thread-safe in CPython
    (the caches only ever gain entries whose values are deterministic)."""

    def __init__(self, directory: Directory, routes: RouteTable) -> None:
        self.directory = directory
        self.routes = routes
        self._senders: dict[tuple[str, int, str], tuple[Route, ...]] = {}
        self._choice: dict[tuple[str, int, str, str], Route | None] = {}
        #: (service, version, sender agency, sender system, recipients) → (targets, routes used): everything but
        #: the TTL check and the urgency depends on these only, so repeated addressing costs one lookup.
        self._plans: dict[
            tuple[str, int, str, str, tuple[Recipient, ...]], tuple[tuple[Target, ...], tuple[Route, ...]]
        ] = {}

    def _sender_routes(self, service: str, version: int, sender: System) -> tuple[Route, ...]:
        key = (service, version, sender.id)
        hit = self._senders.get(key)
        if hit is None:
            hit = tuple(r for r in self.routes.for_service(service, version) if r.admits_sender(self.directory, sender))
            if len(self._senders) > _CACHE_LIMIT:
                self._senders.clear()
            self._senders[key] = hit
        return hit

    def _route_for(
        self, candidates: tuple[Route, ...], service: str, version: int, sender: System, target: System
    ) -> Route | None:
        key = (service, version, sender.id, target.id)
        try:
            return self._choice[key]
        except KeyError:
            pass
        found = next((r for r in candidates if r.admits_recipient(self.directory, sender, target)), None)
        if len(self._choice) > _CACHE_LIMIT:
            self._choice.clear()
        self._choice[key] = found
        return found

    def decide(self, envelope: Envelope) -> Decision:
        service, version = envelope.service, envelope.version
        key = (service, version, envelope.sender.agency, envelope.sender.system, envelope.recipients)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(envelope)
            if len(self._plans) > _PLAN_LIMIT:
                self._plans.clear()
            self._plans[key] = plan
        targets, routes = plan
        ttl = envelope.expires - envelope.created
        for route in routes:
            if ttl > route.policy.max_ttl:
                raise NotAllowed(
                    f"the message is valid for {format_duration(ttl)}; route {route.name} allows at most "
                    f"{format_duration(route.policy.max_ttl)} for {service}",
                    code="ROUTE_TTL_EXCEEDED",
                )
        first = routes[0]
        policy = first.policy
        return Decision(targets=targets, route=first, policy=policy, priority=policy.priority(envelope.urgency))

    def retry_for(self, envelope: Envelope | None) -> Retry:
        """The retry policy of a message the router accepted (``envelope``: its signed envelope): that of the route
        that decided it (``Decision.route``), as ``routes/*.xml`` declares it. ``DEFAULT_RETRY`` for None (a
        message refused before routing, or never read) and for an envelope the router refuses. One cache lookup
        for a message already decided."""
        if envelope is None:
            return DEFAULT_RETRY
        try:
            return self.decide(envelope).policy.retry
        except HubError:
            return DEFAULT_RETRY

    def _plan(self, envelope: Envelope) -> tuple[tuple[Target, ...], tuple[Route, ...]]:
        """Targets and the routes they use (the route of the first target first); raises on any refusal."""
        directory = self.directory
        service, version = envelope.service, envelope.version
        if not self.routes.for_service(service, version):
            raise NoRoute(f"no route is defined for service {service}/{version}", code="ROUTE_NO_ROUTE")
        party = envelope.sender
        if not directory.has_system(party.system):
            raise NotAllowed(f"the sending system {party.system} is not in the directory", code="ROUTE_NOT_ALLOWED")
        sender = directory.system(party.system)
        if sender.agency != party.agency:
            raise NotAllowed(
                f"system {sender.id} belongs to agency {sender.agency}, not to the sender agency {party.agency}",
                code="ROUTE_NOT_ALLOWED",
            )
        candidates = self._sender_routes(service, version, sender)
        if not candidates:
            raise NotAllowed(f"system {sender.id} may not send {service}/{version}", code="ROUTE_NOT_ALLOWED")

        targets: dict[str, Target] = {}
        for rcpt in envelope.recipients:
            explicit = rcpt.system is not None
            for system in directory.expand(rcpt, service):
                if system.id == sender.id and not explicit:
                    continue
                route = self._route_for(candidates, service, version, sender, system)
                if route is None:
                    raise NotAllowed(
                        f"system {sender.id} may not send {service}/{version} to {system.id} (addressed as {rcpt})",
                        code="ROUTE_NOT_ALLOWED",
                    )
                existing = targets.get(system.id)
                if existing is None:
                    targets[system.id] = Target(
                        system.id, system.agency, rcpt.role, system.zone, system.ceiling, route.name
                    )
                elif existing.role == "cc" and rcpt.role == "to":
                    targets[system.id] = replace(existing, role="to", route=route.name)
        if not targets:
            raise NoRoute("no recipient system remains once the sender itself is left out", code="ROUTE_NO_ROUTE")
        used: dict[str, Route] = {}
        for t in targets.values():
            if t.route not in used:
                used[t.route] = next(r for r in candidates if r.name == t.route)
        return tuple(targets.values()), tuple(used.values())
