"""Routes as data: the route table read from ``routes/*.xml`` (every XML file there except ``directory.xml``).

A route names a service (``document.official``, ``document.*`` or ``*``; optionally one version), who may send it
(``From``), to whom (``To``) and its policy. Selectors (any one may match):

=================  ==========================================================================================
``Any``            any system of any agency
``Hub``            the hub's own system (the directory's ``hub-system``)
``Agency``         the systems of one agency (``code``), or one of them (``code`` + ``system``)
``System``         one system by id
``Group``          the members of a named or computed group (``city-bureaus``, ``county-bureaus:220100``, …)
``Level``          the systems of every agency on a tier (nation, province, city, county, enterprise)
``Subordinate``    (To only) agencies below the sender's agency in the parent tree
``Superior``       (To only) agencies above the sender's agency
``DirectSuperior``   (To only) the sender's parent agency only (公文一般不得越级行文)
``DirectSubordinate`` (To only) agencies whose parent is the sender's agency
``SameAgency``     (To only) the sender's own agency
=================  ==========================================================================================

Policy (``Defaults`` of a file, overridden per route element by element): ``max-ttl`` (the longest Expires minus
Created the hub accepts), ``Retry`` (attempts and back-off seconds: the retry step of the worker applies them,
``Router.retry_for``; each delay must be one that has a retry queue, ``hub.policy.RETRY_DELAYS_S``), ``Urgency``
(the delivery priority 0–9 per 紧急程度; the defaults are ``hub.policy.URGENCY_PRIORITY``).

``Urgency lane="emergency"`` entitles messages of that urgency on the route to the emergency lane beyond the rule
every client follows (``hub.transport.lane_for``: ``emergency.*`` services and 特急); the processor refuses a
message in the emergency lane that neither grants (``LANE_NOT_ENTITLED``, ``Processor.examine``). ``lane="normal"``
is the default and grants nothing. ``Acknowledge within=`` is the time within which recipients must acknowledge a
message the emergencies process follows (``emergency.*``: hub/processes/emergencies.py resends, escalates to the
recipient's parent unit and raises an alarm after it); on a route of any other service the check refuses it
(``ROUTES_NOT_ENACTED``: nothing tracks those acknowledgements), as it refuses a back-off delay that has no retry
queue.

Default deny. Only the hub may send ``hub.receipt`` and ``hub.error``: a route that would let anyone else send
them is refused by the check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from lxml import etree

from hub.directory.load import CONFIG_SCHEMAS, ConfigProblems, Problem, line_of, read_config
from hub.directory.model import (
    COMPUTED_GROUPS,
    HUB_SERVICES,
    REFUSAL_SERVICE,
    Directory,
    System,
    patterns_overlap,
    service_matches,
)
from hub.envelope import agency_code
from hub.envelope.model import URGENCIES
from hub.errors import NoRoute
from hub.policy import DEFAULT_RETRY, RETRY_DELAYS_S, URGENCY_PRIORITY, Retry

__all__ = [
    "DEFAULT_POLICY",
    "HUB_SERVICES",
    "ROUTES_NS",
    "Retry",
    "Route",
    "RoutePolicy",
    "RouteTable",
    "Selector",
    "UrgencyRule",
    "check_routes",
    "format_duration",
    "known_services",
    "load_routes",
    "parse_duration",
    "route_files",
]

ROUTES_NS = "urn:forestry-hub:routes:1"
#: The services whose acknowledgements the hub tracks (``Acknowledge within=``): the emergencies process's.
ACK_TRACKED_PREFIX = "emergency."
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``30d`` → 30 days (units s, m, h, d; the schema guarantees the shape)."""
    return timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])


def format_duration(td: timedelta) -> str:
    """The inverse of ``parse_duration`` (``timedelta(days=30)`` → ``30d``)."""
    s = int(td.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


@dataclass(frozen=True, slots=True)
class UrgencyRule:
    #: The AMQP priority of the deliveries of a message with this urgency.
    priority: int
    #: ``emergency``: the route entitles messages of this urgency to the emergency lane (None/``normal``: only what
    #: ``lane_for`` gives).
    lane: str | None = None


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """What a route demands of a message and of its delivery."""

    max_ttl: timedelta
    retry: Retry
    #: (urgency, rule) for each of 特急, 加急, 平件.
    urgencies: tuple[tuple[str, UrgencyRule], ...]
    #: ``Acknowledge within=``: recipients must acknowledge within this time (emergency.* routes only).
    ack_within: timedelta | None = None

    def rule(self, urgency: str) -> UrgencyRule:
        for name, rule in self.urgencies:
            if name == urgency:
                return rule
        return UrgencyRule(URGENCY_PRIORITY.get(urgency, 0))

    def priority(self, urgency: str) -> int:
        return self.rule(urgency).priority

    def grants_emergency_lane(self, urgency: str) -> bool:
        """Does this policy entitle a message of ``urgency`` to the emergency lane (``Urgency lane="emergency"``)?"""
        for name, rule in self.urgencies:
            if name == urgency:
                return rule.lane == "emergency"
        return False


DEFAULT_POLICY = RoutePolicy(
    max_ttl=timedelta(days=30),
    retry=DEFAULT_RETRY,
    urgencies=tuple((u, UrgencyRule(URGENCY_PRIORITY[u])) for u in URGENCIES),
)


@dataclass(frozen=True, slots=True)
class Selector:
    """One From/To entry. ``kind`` is any, hub, agency, system, group, level, subordinate, superior, same-agency."""

    kind: str
    value: str | None = None
    system: str | None = None
    line: int = field(default=0, compare=False)

    def matches(self, directory: Directory, candidate: System, sender: System | None = None) -> bool:
        """Does ``candidate`` (the sender for From, a recipient system for To) match this selector?"""
        kind = self.kind
        if kind == "any":
            return True
        if kind == "hub":
            return candidate.id == directory.hub_system
        if kind == "system":
            return candidate.id == self.value
        if kind == "agency":
            return candidate.agency == self.value and (self.system is None or candidate.id == self.system)
        if kind == "level":
            return directory.has_agency(candidate.agency) and directory.agency(candidate.agency).level == self.value
        if kind == "group":
            assert self.value is not None
            try:
                return directory.in_group(self.value, candidate)
            except NoRoute:
                return False
        if sender is None:
            return False
        if kind == "subordinate":
            return directory.is_below(candidate.agency, sender.agency)
        if kind == "superior":
            return directory.is_below(sender.agency, candidate.agency)
        if kind == "direct-superior":
            return directory.has_agency(sender.agency) and directory.agency(sender.agency).parent == candidate.agency
        if kind == "direct-subordinate":
            return directory.has_agency(candidate.agency) and directory.agency(candidate.agency).parent == sender.agency
        if kind == "same-agency":
            return candidate.agency == sender.agency
        return False

    def __str__(self) -> str:
        if self.kind == "agency" and self.system:
            return f"agency {self.value}/{self.system}"
        return self.kind if self.value is None else f"{self.kind} {self.value}"


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    service: str
    version: int | None
    senders: tuple[Selector, ...]
    recipients: tuple[Selector, ...]
    policy: RoutePolicy
    title: str = ""
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)

    def applies_to(self, service: str, version: int | None) -> bool:
        return service_matches(self.service, service) and (
            self.version is None or version is None or self.version == version
        )

    def admits_sender(self, directory: Directory, sender: System) -> bool:
        return any(s.matches(directory, sender) for s in self.senders)

    def admits_recipient(self, directory: Directory, sender: System, target: System) -> bool:
        return any(s.matches(directory, target, sender) for s in self.recipients)


class RouteTable:
    """The routes of every route file, in order; lookups by service are cached."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._by_service: dict[tuple[str, int | None], tuple[Route, ...]] = {}

    def __len__(self) -> int:
        return len(self.routes)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.routes)

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise KeyError(name)

    def for_service(self, service: str, version: int | None = None) -> tuple[Route, ...]:
        key = (service, version)
        hit = self._by_service.get(key)
        if hit is None:
            hit = tuple(r for r in self.routes if r.applies_to(service, version))
            if len(self._by_service) > 10_000:  # service names come from messages: keep the cache bounded
                self._by_service.clear()
            self._by_service[key] = hit
        return hit

    @classmethod
    def load(cls, paths: Sequence[Path | str], directory: Directory) -> RouteTable:
        return load_routes(paths, directory)


# ---------------------------------------------------------------------- reading route files


def route_files(routes_dir: Path) -> list[Path]:
    """Every route file of a routes directory: ``*.xml`` except ``directory.xml``, in name order."""
    return sorted(p for p in Path(routes_dir).glob("*.xml") if p.name != "directory.xml")


def _q(local: str) -> str:
    return f"{{{ROUTES_NS}}}{local}"


_KINDS = {
    _q("Any"): "any",
    _q("Hub"): "hub",
    _q("Agency"): "agency",
    _q("System"): "system",
    _q("Group"): "group",
    _q("Level"): "level",
    _q("Subordinate"): "subordinate",
    _q("Superior"): "superior",
    _q("DirectSuperior"): "direct-superior",
    _q("DirectSubordinate"): "direct-subordinate",
    _q("SameAgency"): "same-agency",
}


def _selectors(el: etree._Element) -> tuple[Selector, ...]:
    out = []
    for child in el:
        kind = _KINDS[child.tag]
        value = child.get("code") or child.get("id") or child.get("name") or child.get("value")
        out.append(Selector(kind, value, child.get("system"), line=line_of(child)))
    return tuple(out)


def _policy(
    el: etree._Element | None,
    base: RoutePolicy,
    file: str,
    problems: list[Problem],
    ack_lines: list[int] | None = None,
) -> RoutePolicy:
    """A policy element over ``base``; the lines of its ``Acknowledge`` (if any) are appended to ``ack_lines``."""
    if ack_lines is None:
        ack_lines = []
    if el is None:
        return base
    ttl = el.get("max-ttl")
    max_ttl = parse_duration(ttl) if ttl else base.max_ttl
    retry = base.retry
    retry_el = el.find(_q("Retry"))
    if retry_el is not None:
        attempts = int(retry_el.get("attempts", "1"))
        backoff = tuple(int(x) for x in (retry_el.get("backoff") or "").split())
        unknown = sorted({d for d in backoff if d not in RETRY_DELAYS_S})
        if unknown:
            problems.append(
                Problem(
                    file,
                    line_of(retry_el),
                    "ROUTES_NOT_ENACTED",
                    f"backoff {' '.join(map(str, unknown))} s has no retry queue; the hub retries after "
                    f"{' '.join(map(str, RETRY_DELAYS_S))} s only",
                )
            )
        if len(backoff) > max(attempts - 1, 1):
            problems.append(
                Problem(
                    file,
                    line_of(retry_el),
                    "ROUTES_POLICY",
                    f"backoff lists {len(backoff)} delays but {attempts} attempts allow only {max(attempts - 1, 0)} "
                    "retries",
                )
            )
        retry = Retry(attempts, backoff)
    urgencies = dict(base.urgencies)
    seen: set[str] = set()
    for u in el.iterfind(_q("Urgency")):
        level = u.get("level", "")
        if level in seen:
            problems.append(Problem(file, line_of(u), "ROUTES_POLICY", f"urgency {level} is given twice in one policy"))
        seen.add(level)
        lane = u.get("lane")
        urgencies[level] = UrgencyRule(int(u.get("priority", "0")), lane if lane == "emergency" else None)
    ack_within = base.ack_within
    ack = el.find(_q("Acknowledge"))
    if ack is not None:
        ack_within = parse_duration(ack.get("within", "0s"))
        ack_lines.append(line_of(ack))
    return RoutePolicy(
        max_ttl=max_ttl,
        retry=retry,
        urgencies=tuple((u, urgencies[u]) for u in URGENCIES if u in urgencies),
        ack_within=ack_within,
    )


def _read_file(path: Path, problems: list[Problem]) -> list[Route]:
    root, found = read_config(path, CONFIG_SCHEMAS / "routes.xsd")
    problems.extend(found)
    if root is None:
        return []
    name = str(path)
    default_acks: list[int] = []
    defaults = _policy(root.find(_q("Defaults")), DEFAULT_POLICY, name, problems, default_acks)
    routes = []
    for el in root.iterfind(_q("Route")):
        version = el.get("version")
        acks = list(default_acks)
        service = el.get("service", "")
        route = Route(
            name=el.get("name", ""),
            service=service,
            version=int(version) if version else None,
            senders=_selectors(el.find(_q("From"))),  # type: ignore[arg-type]
            recipients=_selectors(el.find(_q("To"))),  # type: ignore[arg-type]
            policy=_policy(el.find(_q("Policy")), defaults, name, problems, acks),
            title=el.get("title", ""),
            file=name,
            line=line_of(el),
        )
        if acks and not service.startswith(ACK_TRACKED_PREFIX):
            # Only the emergencies process tracks acknowledgements: a route of another service must not promise it.
            within = format_duration(route.policy.ack_within or timedelta(0))
            why = (
                f"route {route.name}: Acknowledge within={within} applies to {service}, but the hub tracks "
                f"recipients' acknowledgements of {ACK_TRACKED_PREFIX}* messages only (the emergencies process); "
                "remove the element or move it to an emergency.* route"
            )
            for line in sorted(set(acks)):
                problems.append(Problem(name, line, "ROUTES_NOT_ENACTED", why))
        routes.append(route)
    return routes


# ---------------------------------------------------------------------- semantic checks


def _selected_systems(directory: Directory, sel: Selector) -> list[System]:
    """Systems a To selector can ever reach (relative selectors: every system)."""
    if sel.kind in ("any", "subordinate", "superior", "direct-superior", "direct-subordinate", "same-agency"):
        return list(directory.systems())
    if sel.kind == "hub":
        return [directory.hub] if directory.has_system(directory.hub_system) else []
    return [s for s in directory.systems() if sel.matches(directory, s)]


def _check_selector(directory: Directory, sel: Selector, route: Route, problems: list[Problem]) -> None:
    def bad(code: str, message: str) -> None:
        problems.append(Problem(route.file, sel.line, code, f"route {route.name}: {message}"))

    if sel.kind == "agency":
        assert sel.value is not None
        if not agency_code.is_valid(sel.value):
            bad(
                "SCHEMA_AGENCY_CODE",
                f"agency code {sel.value} has check character {sel.value[17]!r}; GB 32100 gives "
                f"{agency_code.check_character(sel.value[:17])!r}",
            )
        elif not directory.has_agency(sel.value):
            bad("ROUTES_UNKNOWN_REF", f"agency {sel.value} is not in the directory")
        elif sel.system is not None and (
            not directory.has_system(sel.system) or directory.system(sel.system).agency != sel.value
        ):
            bad("ROUTES_UNKNOWN_REF", f"system {sel.system} is not a system of agency {sel.value}")
    elif sel.kind == "system":
        assert sel.value is not None
        if not directory.has_system(sel.value):
            bad("ROUTES_UNKNOWN_REF", f"system {sel.value} is not in the directory")
    elif sel.kind == "group":
        assert sel.value is not None
        if not directory.is_group(sel.value):
            name = sel.value.partition(":")[0]
            why = "no bureau has that division" if name in COMPUTED_GROUPS else "it is not defined in the directory"
            bad("ROUTES_UNKNOWN_REF", f"group {sel.value} is unknown: {why}")


def _check_route(directory: Directory, route: Route, problems: list[Problem]) -> None:
    for sel in (*route.senders, *route.recipients):
        _check_selector(directory, sel, route, problems)
    if any(patterns_overlap(route.service, s) for s in HUB_SERVICES) and any(
        sel.kind != "hub" for sel in route.senders
    ):
        problems.append(
            Problem(
                route.file,
                route.line,
                "ROUTES_POLICY",
                f"route {route.name}: service {route.service} includes {' and '.join(HUB_SERVICES)}, which only the "
                "hub may send; its From must be <Hub/> alone",
            )
        )
    reachable = False
    for sel in route.recipients:
        for s in _selected_systems(directory, sel):
            accepts = (*s.accepts, *HUB_SERVICES, REFUSAL_SERVICE) if s.id != directory.hub_system else s.accepts
            if any(patterns_overlap(route.service, p) for p in accepts):
                reachable = True
                break
        if reachable:
            break
    if not reachable:
        problems.append(
            Problem(
                route.file,
                route.line,
                "ROUTES_UNREACHABLE",
                f"route {route.name}: no system selected by its To accepts service {route.service}",
            )
        )


def known_services(schemas_dir: Path) -> dict[str, frozenset[int]]:
    """Service name → versions that have a schema (``schemas/services/<name>/<version>/schema.xsd``)."""
    found: dict[str, set[int]] = {}
    for xsd in Path(schemas_dir).glob("services/*/*/schema.xsd"):
        if xsd.parent.name.isascii() and xsd.parent.name.isdigit():
            found.setdefault(xsd.parent.parent.name, set()).add(int(xsd.parent.name))
    return {k: frozenset(v) for k, v in found.items()}


def _check_service(route: Route, services: Mapping[str, frozenset[int]], problems: list[Problem]) -> None:
    names = [n for n in services if service_matches(route.service, n)]
    if not names:
        message = f"route {route.name}: no service schema matches {route.service}"
    elif route.version is not None and not any(route.version in services[n] for n in names):
        message = f"route {route.name}: {route.service} has no schema for version {route.version}"
    else:
        return
    problems.append(Problem(route.file, route.line, "ROUTES_UNKNOWN_REF", message))


def check_routes(
    paths: Sequence[Path | str],
    directory: Directory | None,
    *,
    services: Mapping[str, frozenset[int]] | None = None,
) -> tuple[RouteTable | None, list[Problem]]:
    """Check route files: (RouteTable, []) when sound, else (None, every problem). Without a directory only the
    files themselves (XML, schema, policy) are checked; with ``services`` (``known_services()``), every route must
    name a service (and version) that has a schema."""
    problems: list[Problem] = []
    routes: list[Route] = []
    for p in paths:
        routes.extend(_read_file(Path(p), problems))
    seen: dict[str, Route] = {}
    for r in routes:
        first = seen.setdefault(r.name, r)
        if first is not r:
            problems.append(
                Problem(
                    r.file,
                    r.line,
                    "ROUTES_DUPLICATE",
                    f"route {r.name} is already defined at {first.file}:{first.line}",
                )
            )
    if directory is not None:
        for r in routes:
            _check_route(directory, r, problems)
    if services is not None:
        for r in routes:
            _check_service(r, services, problems)
    if not paths:
        problems.append(Problem("routes", 0, "CONFIG", "no route files were given or found"))
    if problems:
        order = {str(Path(p)): i for i, p in enumerate(paths)}
        return None, sorted(problems, key=lambda p: (order.get(p.file, len(order)), p.line))
    return RouteTable(routes), []


def load_routes(
    paths: Sequence[Path | str], directory: Directory, *, services: Mapping[str, frozenset[int]] | None = None
) -> RouteTable:
    """Load and check route files against a directory, or raise ``ConfigProblems`` listing every problem."""
    table, problems = check_routes(paths, directory, services=services)
    if table is None:
        raise ConfigProblems(problems, what="route table")
    return table
