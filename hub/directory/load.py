"""Loading the directory file: safe parse → XSD → semantic checks → ``Directory``, or every problem at once.

Configuration files are read like messages (XML-SECURITY.md): one hardened parse through ``hub.envelope.intake``
(UTF-8 only, no DOCTYPE or entities, no network, size and depth limits), then validation against a schema
compiled from a local file (``schemas/config/*.xsd``) whose parser refuses every import. Only a schema-valid file
gets the semantic checks, because they rely on the shape the schema guarantees; the schema errors themselves are
all reported (lxml's error log holds every one).

Semantic checks (each reported with file and line, all of them, not just the first):

* agency codes: check character (GB 32100), duplicates, unknown parent, cycles in the parent chain, a parent
  that is not on a higher tier, a division code that does not fit the tier or the parent's division;
* systems: duplicate ids, RabbitMQ users or certificate fingerprints; an internal-zone system without an
  accreditation; an accreditation above the zone's maximum (internet 公开, extranet 内部) (the gateway limits
  ``rate`` and ``concurrency`` need no check beyond the schema's ranges);
* the hub: its system exists, sits in ``hub-zone``, has ``hub-ceiling`` as its ceiling, accepts nothing, and the
  ceiling fits the zone;
* groups: duplicate names, names of computed groups, unknown member agencies, systems and groups, cycles.

Lines are lxml's ``sourceline`` of the element concerned: for a start tag written over several lines, the line on
which it ends (libxml2's convention, the same as ``hub validate``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lxml import etree

from hub.directory.model import (
    COMPUTED_GROUPS,
    LEVELS,
    ZONE_MAX,
    ZONE_NAMES,
    Agency,
    Directory,
    Group,
    GroupMember,
    System,
    level_of,
    split_group_address,
)
from hub.envelope import agency_code, intake
from hub.envelope.model import CLASSIFICATIONS
from hub.errors import ConfigError, HubError, title_of
from hub.settings import PROJECT_ROOT

__all__ = [
    "CONFIG_MAX_BYTES",
    "DIRECTORY_NS",
    "ConfigProblems",
    "Problem",
    "check_directory",
    "compile_schema",
    "load_directory",
    "read_config",
]

DIRECTORY_NS = "urn:forestry-hub:directory:1"
CONFIG_SCHEMAS = PROJECT_ROOT / "schemas" / "config"
#: Configuration files are operator-supplied but still read through the message intake gate; a directory of
#: tens of thousands of agencies stays far below this.
CONFIG_MAX_BYTES = 32 * 1024 * 1024
#: Elements and attributes a configuration file may hold (a province's directory has a few tens of thousands).
CONFIG_MAX_MARKUP = 2_000_000

_CLARK = re.compile(r"\{[^}]*\}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a configuration file: ``FILE:LINE: CODE: message``."""

    file: str
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.code}: {self.message}"

    def describe(self) -> str:
        """With the Chinese title, the format of ``hub validate``: ``FILE:LINE: CODE: 标题 — message``."""
        return f"{self.file}:{self.line}: {self.code}: {title_of(self.code)} — {self.message}"


class ConfigProblems(ConfigError):
    """A configuration file has problems; ``.problems`` lists every one (``str()`` does too, one per line)."""

    def __init__(self, problems: Iterable[Problem], *, what: str = "configuration") -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        if not self.problems:
            raise ValueError("ConfigProblems needs at least one problem")
        first = self.problems[0]
        detail = f"the {what} has {len(self.problems)} problem(s):\n" + "\n".join(str(p) for p in self.problems)
        super().__init__(detail, code="CONFIG", line=first.line)


class _RefuseImports(etree.Resolver):
    """Configuration schemas are self-contained: any import, include or DTD reference is refused."""

    def resolve(self, system_url, public_id, context):  # type: ignore[no-untyped-def,override]
        raise ConfigError(f"configuration schemas may not import anything (asked for {system_url!r})")


@lru_cache(maxsize=8)
def compile_schema(path: Path) -> etree.XMLSchema:
    """Compile a local configuration XSD once per process (hardened parser, no imports, no network)."""
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    parser.resolvers.add(_RefuseImports())
    try:
        doc = etree.fromstring(path.read_bytes(), parser)
        return etree.XMLSchema(doc)
    except OSError:
        raise ConfigError(f"configuration schema {path} cannot be read") from None
    except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise ConfigError(f"configuration schema {path} does not compile: {exc}") from None


def line_of(el: etree._Element) -> int:
    """The element's line in its file (0 when unknown); lxml-stubs types ``sourceline`` loosely."""
    line: Any = el.sourceline
    return line if isinstance(line, int) else 0


def _schema_message(message: str) -> str:
    return _CLARK.sub("", message).strip()


def read_config(path: Path | str, schema_path: Path) -> tuple[etree._Element | None, list[Problem]]:
    """Read one configuration file: (root, []) when it is safe and schema-valid, else (None, problems)."""
    path = Path(path)
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [Problem(name, 0, "IO_READ", exc.strerror or "cannot read the file")]
    try:
        root = intake.parse(
            data, max_bytes=CONFIG_MAX_BYTES, max_markup=CONFIG_MAX_MARKUP, max_attributes=CONFIG_MAX_MARKUP
        )
    except HubError as exc:
        return None, [Problem(name, exc.line or 0, "CONFIG_MALFORMED", exc.detail)]
    schema = compile_schema(schema_path)
    if schema.validate(root):
        return root, []
    errors: Iterable[Any] = schema.error_log  # type: ignore[assignment]
    return None, [Problem(name, e.line, "CONFIG_SCHEMA", _schema_message(e.message)) for e in errors]


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# ---------------------------------------------------------------------- the directory


def _q(local: str) -> str:
    return f"{{{DIRECTORY_NS}}}{local}"


_T_AGENCY, _T_SYSTEM, _T_GROUP = _q("Agency"), _q("System"), _q("Group")
_TIER = {level: i for i, level in enumerate(LEVELS)}


class _Checker:
    """Collects problems of one directory file; builds the model as it goes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.problems: list[Problem] = []

    def add(self, line: int | None, code: str, message: str) -> None:
        self.problems.append(Problem(self.name, line or 0, code, message))

    def code_ok(self, code: str, line: int | None, what: str) -> bool:
        if agency_code.is_valid(code):
            return True
        expected = agency_code.check_character(code[:17])
        self.add(
            line,
            "SCHEMA_AGENCY_CODE",
            f"{what} {code} has check character {code[17]!r}; GB 32100 gives {expected!r}",
        )
        return False


def _division_fits(agency: Agency) -> str | None:
    """Why the division code does not fit the agency's tier (GB/T 2260 structure), or None."""
    d, level = agency.division, agency.level
    if agency.kind == "enterprise" or level == "enterprise":
        return None
    if level == "nation":
        return None if d == "100000" else "a national agency has division 100000"
    if level == "province":
        return None if d.endswith("0000") else "a provincial agency has a division ending in 0000"
    if level == "city":
        return None if d.endswith("00") and not d.endswith("0000") else "a city-level division ends in 00, not 0000"
    return None if not d.endswith("00") else "a county-level division does not end in 00"


def check_directory(path: Path | str) -> tuple[Directory | None, list[Problem]]:
    """Check a directory file: (Directory, []) when it is sound, else (None, every problem found)."""
    path = Path(path)
    root, problems = read_config(path, CONFIG_SCHEMAS / "directory.xsd")
    if root is None:
        return None, problems
    c = _Checker(str(path))
    agencies: dict[str, Agency] = {}
    systems: dict[str, System] = {}
    groups: dict[str, Group] = {}
    amqp_users: dict[str, System] = {}
    fingerprints: dict[str, System] = {}

    # -- agencies and their systems
    for el in root.iterchildren(_T_AGENCY):
        line = line_of(el)
        code = el.get("code", "")
        c.code_ok(code, line, "agency code")
        parent = el.get("parent")
        if parent is not None:
            c.code_ok(parent, line, "parent code")
        agency = Agency(
            code=code,
            name=el.get("name", ""),
            name_en=el.get("name-en", ""),
            division=el.get("division", ""),
            level=el.get("level", ""),
            kind=el.get("kind", ""),
            zone=el.get("zone", ""),
            parent=parent,
            line=line or 0,
        )
        if code in agencies:
            c.add(line, "DIR_DUPLICATE", f"agency {code} is already listed at line {agencies[code].line}")
        else:
            agencies[code] = agency
        why = _division_fits(agency)
        if why is not None:
            c.add(line, "DIR_INCONSISTENT", f"agency {code} ({agency.name}) is {agency.level}-level: {why}")
        for sel in el.iterchildren(_T_SYSTEM):
            system = _read_system(c, sel, agency)
            if system.id in systems:
                c.add(
                    line_of(sel),
                    "DIR_DUPLICATE",
                    f"system {system.id} is already listed at line {systems[system.id].line}",
                )
                continue
            systems[system.id] = system
            other = amqp_users.setdefault(system.amqp_user, system)
            if other is not system:
                c.add(
                    line_of(sel),
                    "DIR_DUPLICATE",
                    f"RabbitMQ user {system.amqp_user} of system {system.id} is already used by {other.id}",
                )
            for pin in system.cert_sha256:
                other = fingerprints.setdefault(pin, system)
                if other is not system:
                    c.add(
                        line_of(sel),
                        "DIR_DUPLICATE",
                        f"certificate {pin[:16]}… of system {system.id} is already registered for {other.id}",
                    )

    # -- the parent tree
    bureaus_by_division: dict[str, Agency] = {}
    for agency in agencies.values():
        if agency.kind == "bureau" and agency.level != "enterprise":
            first = bureaus_by_division.setdefault(agency.division, agency)
            if first is not agency:
                c.add(
                    agency.line,
                    "DIR_INCONSISTENT",
                    f"bureaus {first.code} (line {first.line}) and {agency.code} share division {agency.division}; "
                    "computed groups anchored there would be ambiguous",
                )
        if agency.parent is None:
            continue
        up = agencies.get(agency.parent)
        if up is None:
            c.add(
                agency.line,
                "DIR_UNKNOWN_REF",
                f"agency {agency.code} names parent {agency.parent}, which is not listed",
            )
            continue
        if agency.level != "enterprise" and _TIER[up.level] >= _TIER[agency.level]:
            c.add(
                agency.line,
                "DIR_INCONSISTENT",
                f"agency {agency.code} is {agency.level}-level but its parent {up.code} is {up.level}-level",
            )
        elif up.level == "enterprise":
            c.add(agency.line, "DIR_INCONSISTENT", f"agency {agency.code} has an enterprise ({up.code}) as its parent")
        elif (agency.level, up.level) in (("city", "province"), ("county", "province"), ("county", "city")):
            digits = 4 if up.level == "city" else 2
            if agency.division[:digits] != up.division[:digits] and agency.kind == up.kind == "bureau":
                c.add(
                    agency.line,
                    "DIR_INCONSISTENT",
                    f"division {agency.division} of agency {agency.code} is not within its parent's division "
                    f"{up.division}",
                )
    _check_cycles(c, agencies)

    # -- the hub
    hub_id = root.get("hub-system", "")
    hub_zone = root.get("hub-zone", "")
    hub_ceiling = level_of(root.get("hub-ceiling", "公开"))
    line = line_of(root)
    if hub_ceiling > ZONE_MAX[hub_zone]:
        c.add(
            line,
            "DIR_CEILING",
            f"hub-ceiling {CLASSIFICATIONS[hub_ceiling]} exceeds the {hub_zone} zone's maximum "
            f"{CLASSIFICATIONS[ZONE_MAX[hub_zone]]}",
        )
    hub = systems.get(hub_id)
    if hub is None:
        c.add(line, "DIR_UNKNOWN_REF", f"hub-system {hub_id} is not a system of any agency")
    else:
        if hub.zone != hub_zone:
            c.add(
                hub.line, "DIR_INCONSISTENT", f"the hub system {hub_id} is in zone {hub.zone}, not hub-zone {hub_zone}"
            )
        if hub.ceiling != hub_ceiling:
            c.add(
                hub.line,
                "DIR_INCONSISTENT",
                f"the hub system {hub_id} has ceiling {hub.ceiling_label}, not hub-ceiling "
                f"{CLASSIFICATIONS[hub_ceiling]}",
            )
        if hub.accepts:
            c.add(hub.line, "DIR_INCONSISTENT", f"the hub system {hub_id} must not accept services (it routes them)")
        if hub.cert_sha256:
            c.add(
                hub.line,
                "DIR_INCONSISTENT",
                f"the hub system {hub_id} must not have cert-sha256: the hub's own certificates are its CA's "
                "(hub pki rotate changes them; verifiers know every one of them)",
            )

    # -- named groups
    group_elements = list(root.iterchildren(_T_GROUP))
    for el in group_elements:
        name = el.get("name", "")
        members = []
        for child in el:
            if child.tag == _T_AGENCY:
                members.append(GroupMember(agency=child.get("code"), system=child.get("system"), line=line_of(child)))
            else:
                members.append(GroupMember(group=child.get("name"), line=line_of(child)))
        group = Group(name, el.get("title", ""), tuple(members), el.get("title-en", ""), line=line_of(el))
        if name in COMPUTED_GROUPS:
            c.add(group.line, "DIR_INCONSISTENT", f"group name {name} is reserved for a computed group")
        elif name in groups:
            c.add(group.line, "DIR_DUPLICATE", f"group {name} is already defined at line {groups[name].line}")
        else:
            groups[name] = group
    for group in groups.values():
        for m in group.members:
            if m.agency is not None:
                if not c.code_ok(m.agency, m.line, "member code"):
                    continue
                if m.agency not in agencies:
                    c.add(m.line, "DIR_UNKNOWN_REF", f"group {group.name} lists agency {m.agency}, which is not listed")
                elif m.system is not None:
                    s = systems.get(m.system)
                    if s is None or s.agency != m.agency:
                        c.add(
                            m.line,
                            "DIR_UNKNOWN_REF",
                            f"group {group.name} lists system {m.system}, which is not a system of agency {m.agency}",
                        )
            elif m.group is not None:
                gname, division = split_group_address(m.group)
                if gname in COMPUTED_GROUPS:
                    if division is not None and division not in bureaus_by_division:
                        c.add(
                            m.line,
                            "DIR_UNKNOWN_REF",
                            f"group {group.name} includes {m.group}, but no bureau has division {division}",
                        )
                elif division is not None or gname not in groups:
                    c.add(
                        m.line, "DIR_UNKNOWN_REF", f"group {group.name} includes group {m.group}, which is not defined"
                    )
    _check_group_cycles(c, groups)

    if c.problems:
        return None, sorted(c.problems, key=lambda p: p.line)
    directory = Directory(
        agencies.values(),
        systems.values(),
        groups.values(),
        hub_system=hub_id,
        hub_zone=hub_zone,
        hub_ceiling=hub_ceiling,
        source=path,
        sha256=_file_digest(path),
    )
    return directory, []


def _read_system(c: _Checker, el: etree._Element, agency: Agency) -> System:
    line = line_of(el)
    sid = el.get("id", "")
    zone = el.get("zone") or agency.zone
    accreditation_label = el.get("accreditation")
    accreditation = level_of(accreditation_label) if accreditation_label is not None else None
    zone_max = ZONE_MAX[zone]
    if zone == "internal" and accreditation is None:
        c.add(
            line,
            "DIR_INCONSISTENT",
            f"system {sid} is in the internal zone (政务内网) and needs an accreditation (its ceiling)",
        )
    if accreditation is not None and accreditation > zone_max:
        c.add(
            line,
            "DIR_CEILING",
            f"system {sid} is accredited to {CLASSIFICATIONS[accreditation]}, above the {zone} zone's "
            f"({ZONE_NAMES[zone]}) maximum {CLASSIFICATIONS[zone_max]}",
        )
    ceiling = min(zone_max, accreditation if accreditation is not None else zone_max)
    if zone == "internal" and accreditation is None:
        ceiling = 0  # fail closed until fixed (the file is refused anyway)
    return System(
        id=sid,
        agency=agency.code,
        name=el.get("name", ""),
        name_en=el.get("name-en", ""),
        zone=zone,
        ceiling=ceiling,
        accreditation=accreditation,
        accepts=tuple((el.get("accepts") or "").split()),
        cert_sha256=tuple(dict.fromkeys(fingerprint_of(item) for item in (el.get("cert-sha256") or "").split())),
        amqp_user=el.get("amqp-user") or sid,
        rate=_optional_int(el.get("rate")),
        concurrency=_optional_int(el.get("concurrency")),
        gateway_addresses=_addresses(c, line, sid, el.get("gateway-addresses")),
        line=line,
    )


def fingerprint_of(text: str) -> str:
    """A certificate's SHA-256 fingerprint as the hub writes it (64 lower-case hex digits) from the directory's
    spelling: also as ``openssl x509 -fingerprint -sha256`` prints it (upper case, bytes separated by colons)."""
    return text.replace(":", "").lower()


def _addresses(c: _Checker, line: int, sid: str, text: str | None) -> tuple[str, ...]:
    """``gateway-addresses``: each an IPv4 or IPv6 address or network (the schema checks only its characters)."""
    import ipaddress

    found = []
    for item in (text or "").split():
        try:
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            c.add(line, "DIR_ADDRESS", f"system {sid}: gateway-addresses {item!r} is not an address or network")
    return tuple(found)


def _optional_int(text: str | None) -> int | None:
    """An optional integer attribute (its range is the schema's: ``Rate``, ``Concurrency``)."""
    return int(text) if text is not None else None


def _check_cycles(c: _Checker, agencies: dict[str, Agency]) -> None:
    """Report each cycle in the parent chain once, at the line of its first agency in file order."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in agencies:
        path: list[str] = []
        code: str | None = start
        while code is not None and code in agencies and state.get(code) is None:
            state[code] = 1
            path.append(code)
            code = agencies[code].parent
        if code is not None and state.get(code) == 1:
            cycle = path[path.index(code) :]
            first = min(cycle, key=lambda k: agencies[k].line)
            c.add(
                agencies[first].line,
                "DIR_CYCLE",
                "the parent chain is a cycle: " + " → ".join([*cycle, code]),
            )
        for k in path:
            state[k] = 2


def _check_group_cycles(c: _Checker, groups: dict[str, Group]) -> None:
    edges = {
        name: [m.group for m in g.members if m.group is not None and m.group in groups] for name, g in groups.items()
    }
    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for nxt in edges[name]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :]
                c.add(groups[nxt].line, "DIR_CYCLE", "groups include each other: " + " → ".join([*cycle, nxt]))
            elif state.get(nxt) is None:
                visit(nxt, stack)
        stack.pop()
        state[name] = 2

    for name in groups:
        if state.get(name) is None:
            visit(name, [])


def load_directory(path: Path | str) -> Directory:
    """Load a directory file, or raise ``ConfigProblems`` (a ConfigError) listing every problem."""
    directory, problems = check_directory(path)
    if directory is None:
        raise ConfigProblems(problems, what=f"directory file {path}")
    return directory
