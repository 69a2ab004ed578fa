"""The schema registry: compiles ``schemas/`` once and validates an envelope and its body by service.

Layout of ``schemas/``::

    envelope/1/envelope.xsd              the envelope (imports xmldsig/)
    xmldsig/xmldsig-core-schema.xsd      W3C XML-Signature schema, vendored (never fetched)
    services/<name>/<version>/schema.xsd one per message type version; targetNamespace
                                         urn:forestry-hub:<name>:<version>
    services/<name>/<version>/samples/valid/*.xml
    services/<name>/<version>/samples/invalid/<EXPECTED_CODE>__<what>.xml

For each service version the registry compiles one schema set: envelope + xmldsig + that service only. The
envelope's Body admits one *strict* element of another namespace, so with one service in the set a body of
any other type is rejected by the XSD itself; the registry also checks that the body's namespace is the one
the header declares. Instance hints (``xsi:schemaLocation``) are never read; schema files are loaded only
from the registry's own directory, through a resolver that refuses anything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from lxml import etree

from hub.envelope import agency_code
from hub.envelope.intake import check_ids
from hub.envelope.model import ENV_NS, Envelope, qn, service_namespace
from hub.envelope.xsdvalue import xsd_integer
from hub.errors import ConfigError, SchemaViolation, UnsafeXml

__all__ = ["SchemaRegistry", "ServiceSchema", "Violation"]

_VALUE_KINDS = (
    "ENUMERATION",
    "PATTERN",
    "LENGTH",
    "INCLUSIVE",
    "EXCLUSIVE",
    "DIGITS",
    "DATATYPE",
    "ATTRIBUTE_3",
    "CVC_VALUE",
    "FACET",
    "CVC_TYPE_3_1_2",
    "ELT_4",
)
_ATTR_KINDS = ("COMPLEX_TYPE_3", "COMPLEX_TYPE_4", "ATTRIBUTE", "CVC_AU", "CVC_TYPE_3_1_1")
_ELEM_KINDS = ("ELEMENT_CONTENT", "CVC_ELT", "COMPLEX_TYPE_2", "NOROOT")

_CLARK = re.compile(r"\{([^}]*)\}")
#: Problems reported per message: a message can make one XSD error per element or attribute (thousands); the
#: first ones say what is wrong, and each costs a regular expression and an object.
MAX_VIOLATIONS = 100
_XS = "{http://www.w3.org/2001/XMLSchema}"
_T_ENVELOPE = qn("Envelope")
_T_SERVICE = qn("Service")


def _agency_codes_valid(env: Envelope, service: ServiceSchema) -> bool:
    """The fast path's check: every agency code of the header and the body has a correct check character
    (``agency_code.is_valid`` is cached; a code the XSD left empty is the XSD's business, as in the full report)."""
    valid = agency_code.is_valid
    if not valid(env.sender.agency):
        return False
    for r in env.recipients:
        if r.agency is not None and not valid(r.agency):
            return False
    if service.agency_code_tags and env.body is not None:
        for el in env.body.iter(*service.agency_code_tags):
            text = el.text
            if text is not None and not valid(text):
                return False
    return True


@dataclass(frozen=True, slots=True)
class Violation:
    """One problem found in a message: where (line, element path), what (stable code), and a sentence."""

    code: str
    message: str
    line: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        return f"{self.line or 0}: {self.code}: {self.message}"


def _classify(type_name: str) -> str:
    if any(k in type_name for k in _VALUE_KINDS):
        return "SCHEMA_VALUE"
    if any(k in type_name for k in _ATTR_KINDS):
        return "SCHEMA_ATTRIBUTE"
    if any(k in type_name for k in _ELEM_KINDS):
        return "SCHEMA_ELEMENT"
    return "SCHEMA_VIOLATION"


def _short_names(text: str, service_ns: str | None) -> str:
    def repl(m: re.Match[str]) -> str:
        ns = m.group(1)
        if ns == ENV_NS:
            return "env:"
        if service_ns is not None and ns == service_ns:
            return "body:"
        if ns == "http://www.w3.org/2000/09/xmldsig#":
            return "ds:"
        return m.group(0)

    return _CLARK.sub(repl, text).strip()


def _agency_code_tags(schema_root: etree._Element, ns: str, xsd: Path) -> tuple[str, ...]:
    """Body elements declared with type env:AgencyCode; attributes of that type are refused (use elements)."""
    tags = []
    for decl in schema_root.iter(f"{_XS}element", f"{_XS}attribute"):
        qname = decl.get("type")
        if not qname or ":" not in qname:
            continue
        prefix, local = qname.split(":", 1)
        if local != "AgencyCode" or decl.nsmap.get(prefix) != ENV_NS:
            continue
        if decl.tag == f"{_XS}attribute":
            raise ConfigError(f"{xsd}:{decl.sourceline}: agency codes in bodies are elements, not attributes")
        tags.append(f"{{{ns}}}{decl.get('name')}")
    return tuple(sorted(set(tags)))


class _LocalOnly(etree.Resolver):
    """Resolve schema imports only to files inside the schemas directory; refuse anything else."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root.resolve()

    def resolve(self, system_url, public_id, context):  # type: ignore[no-untyped-def]
        url = system_url or ""
        path = Path(url[7:] if url.startswith("file://") else url)
        if "://" in url and not url.startswith("file://"):
            raise ConfigError(f"schema import {url!r} is not a local file")
        resolved = path.resolve()
        if self.root not in resolved.parents:
            raise ConfigError(f"schema import {url!r} is outside {self.root}")
        return self.resolve_filename(str(resolved), context)


@dataclass(frozen=True, slots=True)
class ServiceSchema:
    name: str
    version: int
    namespace: str
    path: Path
    schema: etree.XMLSchema
    #: The global element of the body (local name), from the XSD.
    body_element: str
    #: The Chinese and English documentation of the body element.
    doc_zh: str
    doc_en: str
    #: Clark names of body elements typed env:AgencyCode (their check character is verified in code).
    agency_code_tags: tuple[str, ...] = ()

    @property
    def service_id(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def clark_prefix(self) -> str:
        return "{" + self.namespace + "}"

    def samples(self, kind: str) -> Iterator[Path]:
        yield from sorted((self.path.parent / "samples" / kind).glob("*.xml"))


def _version(text: str) -> int | None:
    """The Service version attribute as a number, before the XSD has looked at it: ASCII digits only ('²' is a digit
    to ``str.isdigit``), leading zeros and all (``int()`` refuses over 4,300 digits); None for anything else."""
    if not (text.isascii() and text.isdigit()):
        return None
    try:
        return xsd_integer(text)
    except ValueError:
        return None


class SchemaRegistry:
    """Compiled schemas of every known service version. Build once per process; safe to share read-only."""

    def __init__(self, schemas_dir: Path) -> None:
        self.dir = Path(schemas_dir).resolve()
        self._parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True)
        self._parser.resolvers.add(_LocalOnly(self.dir))
        envelope_xsd = self.dir / "envelope" / "1" / "envelope.xsd"
        if not envelope_xsd.is_file():
            raise ConfigError(f"envelope schema not found at {envelope_xsd}")
        self._envelope_xsd = envelope_xsd
        self.envelope_schema = self._compile([(ENV_NS, envelope_xsd)])
        self.services: dict[str, dict[int, ServiceSchema]] = {}
        for xsd in sorted(self.dir.glob("services/*/*/schema.xsd")):
            name, version_dir = xsd.parent.parent.name, xsd.parent.name
            if not (version_dir.isascii() and version_dir.isdigit()):
                raise ConfigError(f"{xsd}: version folder must be a number, got {version_dir!r}")
            version = int(version_dir)
            ns = service_namespace(name, version)
            tree = etree.parse(str(xsd), self._parser)
            target = tree.getroot().get("targetNamespace")
            if target != ns:
                raise ConfigError(f"{xsd}: targetNamespace must be {ns!r}, found {target!r}")
            elements = tree.getroot().findall("{http://www.w3.org/2001/XMLSchema}element")
            if len(elements) != 1:
                raise ConfigError(f"{xsd}: a service schema declares exactly one global element (the body)")
            docs = {
                d.get("{http://www.w3.org/XML/1998/namespace}lang"): " ".join((d.text or "").split())
                for d in elements[0].iterfind(
                    "{http://www.w3.org/2001/XMLSchema}annotation/{http://www.w3.org/2001/XMLSchema}documentation"
                )
            }
            schema = self._compile([(ENV_NS, envelope_xsd), (ns, xsd)])
            self.services.setdefault(name, {})[version] = ServiceSchema(
                name,
                version,
                ns,
                xsd,
                schema,
                elements[0].get("name") or "",
                docs.get("zh", ""),
                docs.get("en", ""),
                _agency_code_tags(tree.getroot(), ns, xsd),
            )
        if not self.services:
            raise ConfigError(f"no service schemas found under {self.dir / 'services'}")

    def _compile(self, imports: list[tuple[str, Path]]) -> etree.XMLSchema:
        xs = "http://www.w3.org/2001/XMLSchema"
        wrapper = etree.Element(f"{{{xs}}}schema", nsmap={"xs": xs})
        for ns, path in imports:
            etree.SubElement(wrapper, f"{{{xs}}}import", namespace=ns, schemaLocation=path.as_uri())
        try:
            doc = etree.fromstring(etree.tostring(wrapper), self._parser, base_url=str(self.dir) + "/")
            return etree.XMLSchema(doc)
        except etree.XMLSchemaParseError as exc:
            raise ConfigError(f"schema {imports[-1][1]} does not compile: {exc}") from None

    # ------------------------------------------------------------------ lookups

    def service(self, name: str, version: int) -> ServiceSchema:
        versions = self.services.get(name)
        if versions is None:
            raise SchemaViolation(
                f"unknown service {name!r}; the hub knows {', '.join(sorted(self.services))}",
                code="SCHEMA_UNKNOWN_SERVICE",
            )
        schema = versions.get(version)
        if schema is None:
            known = ", ".join(str(v) for v in sorted(versions))
            raise SchemaViolation(
                f"service {name!r} has no version {version}; supported: {known}", code="SCHEMA_UNKNOWN_VERSION"
            )
        return schema

    def all(self) -> list[ServiceSchema]:
        return [s for versions in self.services.values() for s in versions.values()]

    # ------------------------------------------------------------------ validation

    def violations(
        self, root: etree._Element, _validated: tuple[ServiceSchema, etree._ListErrorLog] | None = None
    ) -> list[Violation]:
        """Every problem in a parsed envelope (empty when valid), the first ``MAX_VIOLATIONS`` of them.

        ``_validated``: the service schema the fast path already ran on this tree, and its error log (validating
        twice would pay twice for an error log that can hold thousands of entries)."""
        if root.tag != qn("Envelope"):
            return [
                Violation(
                    "ENV_NOT_ENVELOPE",
                    f"the root element is {_short_names(root.tag, None)}; expected env:Envelope in namespace {ENV_NS}",
                    root.sourceline,
                    "/",
                )
            ]
        svc_el = root.find(f"{qn('Header')}/{qn('Service')}")
        service: ServiceSchema | None = None
        if svc_el is not None:
            name, version = svc_el.get("name") or "", svc_el.get("version") or ""
            try:
                number = _version(version)
                service = self.service(name, number) if number is not None else None
            except SchemaViolation as exc:
                return [Violation(exc.code, exc.detail, svc_el.sourceline, "/env:Envelope/env:Header/env:Service")]
        schema = service.schema if service is not None else self.envelope_schema
        ns = service.namespace if service is not None else None
        if _validated is not None and _validated[0] is service:
            log = _validated[1]
            valid = len(log) == 0
        else:
            valid = bool(schema.validate(root))
            log = schema.error_log
        unlisted = 0
        if valid:
            found: list[Violation] = []
        else:
            found = [
                Violation(_classify(e.type_name), _short_names(e.message[:2000], ns), e.line or None, e.path or None)
                for e in islice(log, MAX_VIOLATIONS)
            ]
            if len(log) > MAX_VIOLATIONS:
                unlisted = len(log) - MAX_VIOLATIONS
        found = self._ordered(found, root, service, ns)
        if unlisted:
            found.append(
                Violation("SCHEMA_VIOLATION", f"{unlisted} more problems not listed (the first {MAX_VIOLATIONS} are)")
            )
        return found

    def _ordered(
        self, found: list[Violation], root: etree._Element, service: ServiceSchema | None, ns: str | None
    ) -> list[Violation]:
        """The XSD's problems with the most useful explanations first (body mismatch, duplicate identifiers), or
        the agency codes' check characters when the XSD found nothing."""
        if service is None:
            return found
        body = root.find(qn("Body"))
        if body is not None and len(body) == 1 and etree.QName(body[0]).namespace != ns:
            # The most useful explanation comes first: the XSD's own complaint about the same element follows.
            found.insert(
                0,
                Violation(
                    "SCHEMA_BODY_MISMATCH",
                    f"the header declares {service.service_id} but the body is "
                    f"{_short_names(body[0].tag, ns)}; expected an element of {ns}",
                    body[0].sourceline,
                    "/env:Envelope/env:Body",
                ),
            )
            return found
        if not found:
            try:
                env = Envelope.from_tree(root)
            except SchemaViolation as exc:  # a value the XSD admits and Python cannot hold (hub.envelope.xsdvalue)
                return [Violation(exc.code, exc.detail, exc.line, exc.path)]
            found.extend(self._agency_code_violations(env, service))
        else:
            try:
                check_ids(root)
            except UnsafeXml as exc:
                found.insert(0, Violation(exc.code, exc.detail, exc.line, None))
        # Duplicate identifiers explain the XSD's complaints about them: report them first.
        found.sort(key=lambda v: (v.code != "ENV_DUPLICATE_ID", v.line or 0))
        return found

    @staticmethod
    def _agency_code_violations(env: Envelope, service: ServiceSchema) -> list[Violation]:
        """Every agency code with a wrong check character, with its line (the full report)."""
        bad: list[Violation] = []

        def check(code: str | None, line: int | None) -> None:
            if code is not None and not agency_code.is_valid(code):
                expected = (
                    agency_code.check_character(code[:17]) if all(c in agency_code.ALPHABET for c in code) else "?"
                )
                bad.append(
                    Violation(
                        "SCHEMA_AGENCY_CODE",
                        f"unified social credit code {code} has a wrong check character (expected {expected})",
                        line,
                    )
                )

        header = env.root[0] if env.root is not None else None
        if not agency_code.is_valid(env.sender.agency) or any(
            r.agency is not None and not agency_code.is_valid(r.agency) for r in env.recipients
        ):
            sender_el = header.find(qn("Sender")) if header is not None else None
            check(env.sender.agency, sender_el.sourceline if sender_el is not None else None)
            rs = header.find(qn("Recipients")) if header is not None else None
            for el in rs if rs is not None else ():
                check(el.get("code"), el.sourceline)
        if service.agency_code_tags and env.body is not None:
            for el in env.body.iter(*service.agency_code_tags):
                check(el.text, el.sourceline)
        return bad

    def validate(self, root: etree._Element) -> Envelope:
        """Validate a parsed envelope and return its model, or raise ``SchemaViolation`` for the first problem.

        The exception carries every problem in ``.violations``. The fast path (a valid message) runs the
        compiled XSD once, reads the model, and checks agency-code check characters; only an invalid message
        pays for the full report.
        """
        if root.tag == _T_ENVELOPE and len(root) >= 2:
            kids = list(root[0])
            # Before validation the order is only probable: the Service element is the 5th to 7th child.
            svc_el = None
            for el in kids[4:7]:
                if el.tag == _T_SERVICE:
                    svc_el = el
                    break
            if svc_el is not None:
                versions = self.services.get(svc_el.get("name") or "")
                version = svc_el.get("version") or ""
                number = _version(version)
                service = versions.get(number) if versions and number is not None else None
                if service is not None:
                    if not service.schema.validate(root):
                        self._raise(self.violations(root, (service, service.schema.error_log)))
                    body = root[1]
                    if len(body) == 1 and body[0].tag.startswith(service.clark_prefix):
                        env = Envelope.from_header(root, kids)
                        if _agency_codes_valid(env, service):
                            return env
        self._raise(self.violations(root))
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _raise(found: list[Violation]) -> None:
        if not found:  # pragma: no cover - fast path and full report disagree: fail closed
            found = [Violation("SCHEMA_VIOLATION", "the message did not validate")]
        first = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        exc = SchemaViolation(first.message + more, code=first.code, line=first.line, path=first.path)
        exc.violations = found  # type: ignore[attr-defined]
        raise exc
