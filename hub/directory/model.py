"""The directory model: agencies, their systems, named and computed groups, and network-zone ceilings.

Pure and immutable. A ``Directory`` is built once per process (from the directory file by
``hub.directory.load`` or from PostgreSQL by ``hub.store.directory``) and then only read; every index the hot path
needs (systems by agency, ancestors, group members, expansions per service) is computed once and cached.

Zones and ceilings (MESSAGE-STANDARD.md, 三网): a system in the internet zone (互联网) may receive 公开 only, one in
the extranet (政务外网) up to 内部, one in the internal network (政务内网) up to its accreditation. Levels are the
indices of ``hub.envelope.CLASSIFICATIONS`` (0 公开 … 4 绝密).

Groups a sender may address:

* named groups, listed in the directory file with explicit members (agencies, one system of an agency, or other
  groups);
* computed groups over the parent tree, which contain forestry bureaus (kind ``bureau``) only:
  ``city-bureaus`` (every city-level bureau), ``county-bureaus`` (every county-level bureau), ``local-bureaus``
  (both), each optionally anchored at a division code — ``county-bureaus:220100`` is every county bureau below
  the bureau whose division is 220100 in the parent tree, ``city-bureaus:220000`` every city bureau below the
  provincial department.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hub.envelope.model import CLASSIFICATIONS, ERROR_SERVICE, NOTICE_SERVICE, RECEIPT_SERVICE, Recipient
from hub.errors import NoRoute

__all__ = [
    "COMPUTED_GROUPS",
    "HUB_SERVICES",
    "KINDS",
    "LEVELS",
    "LEVEL_NAMES",
    "ZONES",
    "ZONE_MAX",
    "ZONE_NAMES",
    "Agency",
    "Directory",
    "Group",
    "GroupMember",
    "System",
    "level_of",
    "patterns_overlap",
    "service_matches",
    "split_group_address",
]

#: Network zones, from the most to the least protected.
ZONES: tuple[str, ...] = ("internal", "extranet", "internet")
ZONE_NAMES: dict[str, str] = {"internal": "政务内网", "extranet": "政务外网", "internet": "互联网"}
#: The highest classification level each zone may ever carry (internal: further limited by accreditation).
ZONE_MAX: dict[str, int] = {"internal": len(CLASSIFICATIONS) - 1, "extranet": 1, "internet": 0}

#: Tiers of the administrative tree, top down (enterprise stands beside it).
LEVELS: tuple[str, ...] = ("nation", "province", "city", "county", "enterprise")
LEVEL_NAMES: dict[str, str] = {
    "nation": "国家",
    "province": "省级",
    "city": "市级",
    "county": "县级",
    "enterprise": "企业",
}
KINDS: tuple[str, ...] = ("bureau", "government", "enterprise")

#: The hub's own messages: every system except the hub accepts them, whatever its ``accepts`` list says (a sender
#: must always be able to receive the receipt or the error for what it sent, and every system the process notices of
#: hub/processes: reminders, overdue reports, emergency resends and escalations).
HUB_SERVICES: tuple[str, ...] = (RECEIPT_SERVICE, ERROR_SERVICE, NOTICE_SERVICE)
#: A recipient system's signed refusal of a delivery (``delivery.refusal``, sent by the adapter SDK when a handler
#: rejects a message): it goes back to the message's sender, whatever that system accepts otherwise — for the same
#: reason as the hub's replies. Not to the hub, which sends nothing that could be refused.
REFUSAL_SERVICE = "delivery.refusal"

#: Computed group name → the bureau levels it contains.
COMPUTED_GROUPS: dict[str, frozenset[str]] = {
    "city-bureaus": frozenset({"city"}),
    "county-bureaus": frozenset({"county"}),
    "local-bureaus": frozenset({"city", "county"}),
}


def level_of(classification: str) -> int:
    """The level of a 密级 label (0 公开 … 4 绝密); ValueError when unknown."""
    return CLASSIFICATIONS.index(classification)


def service_matches(pattern: str, service: str) -> bool:
    """``*`` matches every service, ``document.*`` every ``document.…`` service, anything else itself only.

    ``service`` may carry a version (``document.official/1``); patterns name services, not versions."""
    service = service.split("/", 1)[0]
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return service.startswith(pattern[:-1])
    return pattern == service


def patterns_overlap(a: str, b: str) -> bool:
    """True when some service name matches both patterns (used by ``hub routes check``)."""
    if a == "*" or b == "*":
        return True
    a_prefix, b_prefix = a.endswith(".*"), b.endswith(".*")
    if a_prefix and b_prefix:
        return a[:-1].startswith(b[:-1]) or b[:-1].startswith(a[:-1])
    if a_prefix:
        return b.startswith(a[:-1])
    if b_prefix:
        return a.startswith(b[:-1])
    return a == b


def split_group_address(address: str) -> tuple[str, str | None]:
    """``county-bureaus:220100`` → (``county-bureaus``, ``220100``); ``fire-command`` → (``fire-command``, None)."""
    name, sep, division = address.partition(":")
    return name, (division if sep else None)


@dataclass(frozen=True, slots=True)
class Agency:
    """An agency (机构): unified social credit code, names, division (GB/T 2260), tier, kind, parent, zone."""

    code: str
    name: str
    name_en: str
    division: str
    level: str
    kind: str
    zone: str
    parent: str | None = None
    #: Line in the directory file (0 when read from the database).
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class System:
    """A connected system (接入系统) of one agency, in one network zone.

    ``ceiling`` is the highest level it may receive: the zone's maximum, lowered by ``accreditation`` when set.
    ``accepts`` are service patterns; a system addressed through its agency or a group receives only the services
    it accepts. ``rate`` (requests per second) and ``concurrency`` (requests at once) are the HTTPS gateway's limits
    for the system; None: the gateway's defaults. ``gateway_addresses``: the networks (CIDR text) it may call the
    gateway from; empty: anywhere. ``cert_sha256``: the fingerprints of the only certificates it may sign with or
    present to the gateway (``registers``); empty: any valid certificate the hub CA issued to it."""

    id: str
    agency: str
    name: str
    zone: str
    ceiling: int
    accepts: tuple[str, ...] = ()
    name_en: str = ""
    accreditation: int | None = None
    cert_sha256: tuple[str, ...] = ()
    amqp_user: str = ""
    rate: int | None = None
    concurrency: int | None = None
    gateway_addresses: tuple[str, ...] = ()
    line: int = field(default=0, compare=False)

    def registers(self, fingerprint: str) -> bool:
        """Whether the directory lets the system use the certificate of ``fingerprint`` (SHA-256 of its DER, hex):
        any, unless ``cert-sha256`` lists its certificates."""
        return not self.cert_sha256 or fingerprint in self.cert_sha256

    def accepts_service(self, service: str) -> bool:
        return any(service_matches(p, service) for p in self.accepts)

    @property
    def ceiling_label(self) -> str:
        return CLASSIFICATIONS[self.ceiling]


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One entry of a named group: an agency (optionally one of its systems) or another group address."""

    agency: str | None = None
    system: str | None = None
    group: str | None = None
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Group:
    """A named group (命名群组)."""

    name: str
    title: str
    members: tuple[GroupMember, ...]
    title_en: str = ""
    line: int = field(default=0, compare=False)


#: Members of a resolved group: agencies (all their systems) and single systems.
_Resolved = tuple[frozenset[str], frozenset[str]]


class Directory:
    """The hub's directory: read-only after construction, cheap to query on the message path.

    Construct it from already checked data (``hub.directory.load.load_directory`` checks a file; the store reads
    back what a check accepted). The constructor builds the indexes and refuses nothing beyond what it needs to
    stay consistent (unknown references are simply absent from the indexes)."""

    def __init__(
        self,
        agencies: Iterable[Agency],
        systems: Iterable[System],
        groups: Iterable[Group] = (),
        *,
        hub_system: str,
        hub_zone: str,
        hub_ceiling: int,
        source: Path | None = None,
        sha256: str | None = None,
    ) -> None:
        self._agencies: dict[str, Agency] = {a.code: a for a in agencies}
        self._systems: dict[str, System] = {s.id: s for s in systems}
        self._groups: dict[str, Group] = {g.name: g for g in groups}
        self.hub_system = hub_system
        self.hub_zone = hub_zone
        self.hub_ceiling = hub_ceiling
        self.source = source
        self.sha256 = sha256
        by_agency: dict[str, list[System]] = {}
        for s in self._systems.values():
            by_agency.setdefault(s.agency, []).append(s)
        self._by_agency: dict[str, tuple[System, ...]] = {k: tuple(v) for k, v in by_agency.items()}
        children: dict[str, list[str]] = {}
        for a in self._agencies.values():
            if a.parent is not None:
                children.setdefault(a.parent, []).append(a.code)
        self._children = {k: tuple(v) for k, v in children.items()}
        self._ancestors: dict[str, tuple[str, ...]] = {code: self._chain(code) for code in self._agencies}
        self._ancestor_sets = {code: frozenset(chain) for code, chain in self._ancestors.items()}
        # Anchors of computed groups: the bureau that carries a division code (the first one in file order).
        self._bureau_by_division: dict[str, str] = {}
        for a in self._agencies.values():
            if a.kind == "bureau":
                self._bureau_by_division.setdefault(a.division, a.code)
        self._resolved: dict[str, _Resolved] = {}
        self._expanded: dict[tuple[str | None, str | None, str | None, str], tuple[System, ...]] = {}

    # ------------------------------------------------------------------ construction helpers

    def _chain(self, code: str) -> tuple[str, ...]:
        """Ancestors of ``code``, nearest first (stops at an unknown parent or a cycle)."""
        chain: list[str] = []
        seen = {code}
        parent = self._agencies[code].parent
        while parent is not None and parent in self._agencies and parent not in seen:
            chain.append(parent)
            seen.add(parent)
            parent = self._agencies[parent].parent
        return tuple(chain)

    # ------------------------------------------------------------------ lookups

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Directory):
            return NotImplemented
        return (
            self._agencies == other._agencies
            and self._systems == other._systems
            and self._groups == other._groups
            and (self.hub_system, self.hub_zone, self.hub_ceiling)
            == (other.hub_system, other.hub_zone, other.hub_ceiling)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Directory({len(self._agencies)} agencies, {len(self._systems)} systems, "
            f"{len(self._groups)} groups, hub={self.hub_system!r})"
        )

    def agencies(self) -> Iterator[Agency]:
        return iter(self._agencies.values())

    def systems(self) -> Iterator[System]:
        return iter(self._systems.values())

    def groups(self) -> Iterator[Group]:
        return iter(self._groups.values())

    def has_agency(self, code: str) -> bool:
        return code in self._agencies

    def has_system(self, system_id: str) -> bool:
        return system_id in self._systems

    def agency(self, code: str) -> Agency:
        """The agency with this code, or NoRoute(ROUTE_UNKNOWN_RECIPIENT)."""
        try:
            return self._agencies[code]
        except KeyError:
            raise NoRoute(f"agency {code} is not in the directory", code="ROUTE_UNKNOWN_RECIPIENT") from None

    def system(self, system_id: str) -> System:
        """The system with this id, or NoRoute(ROUTE_UNKNOWN_RECIPIENT)."""
        try:
            return self._systems[system_id]
        except KeyError:
            raise NoRoute(f"system {system_id} is not in the directory", code="ROUTE_UNKNOWN_RECIPIENT") from None

    def group(self, name: str) -> Group:
        try:
            return self._groups[name]
        except KeyError:
            raise NoRoute(f"group {name} is not in the directory", code="ROUTE_UNKNOWN_RECIPIENT") from None

    def systems_of(self, agency_code: str) -> tuple[System, ...]:
        """Every system of an agency, in file order (empty for an unknown agency)."""
        return self._by_agency.get(agency_code, ())

    @property
    def hub(self) -> System:
        return self.system(self.hub_system)

    def ceiling(self, system: System | str) -> int:
        """The highest classification level ``system`` may receive."""
        s = self.system(system) if isinstance(system, str) else system
        return s.ceiling

    def children(self, code: str) -> tuple[str, ...]:
        return self._children.get(code, ())

    def ancestors(self, code: str) -> tuple[str, ...]:
        """The parent chain of an agency, nearest first."""
        return self._ancestors.get(code, ())

    def is_below(self, code: str, ancestor: str) -> bool:
        """True when ``ancestor`` is a (proper) ancestor of ``code`` in the parent tree."""
        s = self._ancestor_sets.get(code)
        return s is not None and ancestor in s

    def _division_key(self, code: str) -> tuple[str, str]:
        a = self._agencies.get(code)
        return (a.division if a is not None else "", code)

    def accepts(self, system: System, service: str) -> bool:
        """Does ``system`` receive ``service``: its own ``accepts`` patterns, plus the hub's replies and recipients'
        refusals for every system but the hub."""
        name = service.split("/", 1)[0]
        if name in HUB_SERVICES or name == REFUSAL_SERVICE:
            return system.id != self.hub_system
        return system.accepts_service(service)

    # ------------------------------------------------------------------ groups

    def is_group(self, address: str) -> bool:
        """True when ``address`` names a named group or a computed group with a known anchor."""
        try:
            self.resolve_group(address)
        except NoRoute:
            return False
        return True

    def resolve_group(self, address: str) -> _Resolved:
        """(agency codes, system ids) that a group address stands for; NoRoute when the group is unknown."""
        hit = self._resolved.get(address)
        if hit is None:
            hit = self._resolve(address, ())
            self._resolved[address] = hit
        return hit

    def _resolve(self, address: str, stack: tuple[str, ...]) -> _Resolved:
        name, division = split_group_address(address)
        levels = COMPUTED_GROUPS.get(name)
        if levels is not None:
            anchor: str | None = None
            if division is not None:
                anchor = self._bureau_by_division.get(division)
                if anchor is None:
                    raise NoRoute(
                        f"group {address} is unknown: no forestry bureau has division {division}",
                        code="ROUTE_UNKNOWN_RECIPIENT",
                    )
            members = [
                a.code
                for a in self._agencies.values()
                if a.kind == "bureau" and a.level in levels and (anchor is None or self.is_below(a.code, anchor))
            ]
            members.sort(key=self._division_key)
            return frozenset(members), frozenset()
        group = self._groups.get(name) if division is None else None
        if group is None:
            raise NoRoute(f"group {address} is not in the directory", code="ROUTE_UNKNOWN_RECIPIENT")
        if address in stack:  # a cycle (refused when loading; guarded here as well)
            return frozenset(), frozenset()
        agencies: set[str] = set()
        systems: set[str] = set()
        for m in group.members:
            if m.group is not None:
                sub_a, sub_s = self._resolve(m.group, (*stack, address))
                agencies |= sub_a
                systems |= sub_s
            elif m.system is not None:
                systems.add(m.system)
            elif m.agency is not None:
                agencies.add(m.agency)
        return frozenset(agencies), frozenset(systems)

    def in_group(self, address: str, system: System) -> bool:
        """True when ``system`` belongs to the group (as a member system or through its member agency)."""
        agencies, systems = self.resolve_group(address)
        return system.agency in agencies or system.id in systems

    # ------------------------------------------------------------------ addressing

    def expand(self, recipient: Recipient, service: str) -> list[System]:
        """The systems a recipient address stands for, for one service (``name`` or ``name/version``).

        * agency + system: that system (it must belong to the agency and accept the service);
        * agency: its systems that accept the service;
        * group: the accepting systems of its member agencies, plus member systems that accept the service.

        Unknown agency, system or group → NoRoute(ROUTE_UNKNOWN_RECIPIENT); nothing accepts the service →
        NoRoute(ROUTE_NO_ROUTE)."""
        name = service.split("/", 1)[0]
        key = (recipient.agency, recipient.system, recipient.group, name)
        hit = self._expanded.get(key)
        if hit is None:
            hit = self._expand(recipient, name)
            self._expanded[key] = hit
        return list(hit)

    def _expand(self, recipient: Recipient, service: str) -> tuple[System, ...]:
        if recipient.group is not None:
            agencies, systems = self.resolve_group(recipient.group)
            found: dict[str, System] = {}
            # Deterministic order: member agencies by division, then the member systems.
            for code in sorted(agencies, key=self._division_key):
                for s in self._by_agency.get(code, ()):
                    if self.accepts(s, service):
                        found.setdefault(s.id, s)
            for sid in sorted(systems):
                s2 = self._systems.get(sid)
                if s2 is not None and self.accepts(s2, service):
                    found.setdefault(s2.id, s2)
            if not found:
                raise NoRoute(f"no system of group {recipient.group} accepts service {service}", code="ROUTE_NO_ROUTE")
            return tuple(found.values())
        assert recipient.agency is not None
        agency = self.agency(recipient.agency)
        if recipient.system is not None:
            named = self._systems.get(recipient.system)
            if named is None or named.agency != agency.code:
                raise NoRoute(
                    f"system {recipient.system} is not a system of agency {agency.code} ({agency.name})",
                    code="ROUTE_UNKNOWN_RECIPIENT",
                )
            if not self.accepts(named, service):
                raise NoRoute(f"system {named.id} does not accept service {service}", code="ROUTE_NO_ROUTE")
            return (named,)
        accepting = tuple(s for s in self._by_agency.get(agency.code, ()) if self.accepts(s, service))
        if not accepting:
            raise NoRoute(
                f"agency {agency.code} ({agency.name}) has no system that accepts service {service}",
                code="ROUTE_NO_ROUTE",
            )
        return accepting
