"""Generate ``adapters/sdk/messages/`` from ``schemas/services/*/*/schema.xsd``: one module per service version.

    python -m adapters.sdk._codegen                 # rewrite adapters/sdk/messages/*.py
    python -m adapters.sdk._codegen --out DIR       # write them elsewhere (the drift test compares the two)

The XSDs are read with lxml directly: they use a small, closed subset of XML Schema (one global element, sequences
and choices of elements, named and anonymous complex and simple types, restrictions of built-in types with facets and
enumerations, documentation in Chinese and English), and anything outside it stops the generator rather than being
guessed. Every element becomes a dataclass field (snake_case of its name) documented with its xs:documentation;
complex content a nested dataclass, repeated elements lists, optional ones ``X | None = None``, the alternatives of a
choice optional fields, enumerations ``Literal[...]``. The output is formatted with ``ruff format`` (the project's
configuration) so that the committed files are exactly what the generator writes.
"""

from __future__ import annotations

import argparse
import keyword
import re
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

__all__ = ["generate", "main", "render"]

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
OUT = Path(__file__).resolve().parent / "messages"

XS_NS = "http://www.w3.org/2001/XMLSchema"
XS = f"{{{XS_NS}}}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
ENV_NS = "urn:forestry-hub:envelope:1"
LINE = 120

#: Built-in XSD types → (codec kind, Python annotation).
BUILTINS = {
    "string": ("str", "str"),
    "normalizedString": ("str", "str"),
    "token": ("str", "str"),
    "int": ("int", "int"),
    "integer": ("int", "int"),
    "long": ("int", "int"),
    "short": ("int", "int"),
    "positiveInteger": ("int", "int"),
    "nonNegativeInteger": ("int", "int"),
    "decimal": ("decimal", "Decimal"),
    "boolean": ("bool", "bool"),
    "date": ("date", "datetime.date"),
    "dateTime": ("datetime", "datetime.datetime"),
    "base64Binary": ("bytes", "bytes"),
}


class SchemaUnsupported(Exception):
    """The XSD uses a construct the generator does not translate."""


# ---------------------------------------------------------------------------------------------- the model


@dataclass
class Docs:
    zh: str
    en: str


@dataclass
class Simple:
    kind: str
    annotation: str  # "str", "int", ... or a Literal alias name or an inline Literal[...]


@dataclass
class Alias:
    name: str
    values: list[tuple[str, Docs]]
    docs: Docs


@dataclass
class Field:
    name: str
    xml: str
    docs: Docs
    kind: str
    annotation: str
    part: str | None
    min_occurs: int
    many: bool


@dataclass
class Klass:
    name: str
    docs: Docs
    fields: list[Field]


@dataclass
class Module:
    service: str
    version: int
    namespace: str
    element: str
    class_name: str
    docs: Docs
    xsd: Path
    classes: list[Klass] = field(default_factory=list)
    aliases: dict[str, Alias] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- reading XSDs


def _docs(node: etree._Element) -> Docs | None:
    found = {
        d.get(XML_LANG): " ".join((d.text or "").split()) for d in node.iterfind(f"{XS}annotation/{XS}documentation")
    }
    if not found:
        return None
    return Docs(found.get("zh", ""), found.get("en", ""))


def snake(name: str) -> str:
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()
    return s + "_" if keyword.iskeyword(s) or s in {"dataclasses", "datetime", "Decimal"} else s


def camel(service: str, version: int) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[._\-]", service)) + f"V{version}"


class _Reader:
    def __init__(self, xsd: Path, schemas: Path) -> None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True)
        self.xsd = xsd
        self.root = etree.parse(str(xsd), parser).getroot()
        self.ns = self.root.get("targetNamespace") or ""
        env = etree.parse(str(schemas / "envelope" / "1" / "envelope.xsd"), parser).getroot()
        self.types: dict[tuple[str, str], etree._Element] = {}
        for ns, tree in ((ENV_NS, env), (self.ns, self.root)):
            for t in tree:
                if t.tag in (f"{XS}simpleType", f"{XS}complexType"):
                    self.types[(ns, t.get("name") or "")] = t
        self.module: Module

    def where(self, node: etree._Element) -> str:
        return f"{self.xsd}:{node.sourceline}"

    def qname(self, node: etree._Element, value: str) -> tuple[str, str]:
        prefix, _, local = value.rpartition(":")
        ns = node.nsmap.get(prefix or None)
        if ns is None:
            raise SchemaUnsupported(f"{self.where(node)}: unknown prefix in {value!r}")
        return ns, local

    def read(self, service: str, version: int) -> Module:
        elements = self.root.findall(f"{XS}element")
        if len(elements) != 1:
            raise SchemaUnsupported(f"{self.xsd}: expected exactly one global element")
        body = elements[0]
        docs = self.require_docs(body)
        name = camel(service, version)
        self.module = Module(service, version, self.ns, body.get("name") or "", name, docs, self.xsd)
        ct = body.find(f"{XS}complexType")
        if ct is None:
            raise SchemaUnsupported(f"{self.where(body)}: the body element has no anonymous complex type")
        self.complex(ct, name, docs)
        names = [k.name for k in self.module.classes] + list(self.module.aliases)
        if len(set(names)) != len(names):
            raise SchemaUnsupported(f"{self.xsd}: generated names collide: {sorted(names)}")
        return self.module

    def require_docs(self, node: etree._Element, fallback: etree._Element | None = None) -> Docs:
        docs = _docs(node) or (_docs(fallback) if fallback is not None else None)
        if docs is None or not docs.zh:
            raise SchemaUnsupported(f"{self.where(node)}: no Chinese documentation (xs:documentation xml:lang='zh')")
        return docs

    def complex(self, ct: etree._Element, name: str, docs: Docs) -> str:
        for k in self.module.classes:
            if k.name == name:
                return name
        if ct.get("mixed") == "true" or ct.find(f"{XS}attribute") is not None:
            raise SchemaUnsupported(f"{self.where(ct)}: mixed content and attributes are not supported")
        content = [c for c in ct if c.tag != f"{XS}annotation"]
        if len(content) != 1 or content[0].tag != f"{XS}sequence":
            raise SchemaUnsupported(f"{self.where(ct)}: a complex type is one xs:sequence")
        fields = list(self.particles(content[0], name, optional=False))
        seen = [f.xml for f in fields]
        if len(set(seen)) != len(seen):
            raise SchemaUnsupported(f"{self.where(ct)}: an element name occurs twice in one type")
        self.module.classes.append(Klass(name, docs, fields))
        return name

    def particles(self, group: etree._Element, owner: str, *, optional: bool) -> Iterator[Field]:
        if group.get("minOccurs", "1") != "1" or group.get("maxOccurs", "1") != "1":
            raise SchemaUnsupported(f"{self.where(group)}: repeated or optional groups are not supported")
        for p in group:
            if p.tag == f"{XS}annotation":
                continue
            if p.tag == f"{XS}element":
                yield self.element(p, owner, optional=optional)
            elif p.tag == f"{XS}choice":
                yield from self.particles(p, owner, optional=True)
            elif p.tag == f"{XS}sequence" and not optional:
                yield from self.particles(p, owner, optional=False)
            else:
                raise SchemaUnsupported(f"{self.where(p)}: {etree.QName(p).localname} is not supported here")

    def element(self, el: etree._Element, owner: str, *, optional: bool) -> Field:
        xml = el.get("name")
        if not xml or el.get("ref"):
            raise SchemaUnsupported(f"{self.where(el)}: element references are not supported")
        for attr in ("nillable", "default", "fixed", "substitutionGroup"):
            if el.get(attr) is not None:
                raise SchemaUnsupported(f"{self.where(el)}: {attr} is not supported")
        min_occurs = 0 if optional else int(el.get("minOccurs", "1"))
        max_occurs = el.get("maxOccurs", "1")
        many = max_occurs == "unbounded" or int(max_occurs) > 1
        type_name = el.get("type")
        type_node: etree._Element | None
        if type_name:
            ns, local = self.qname(el, type_name)
            type_node = None if ns == XS_NS else self.types.get((ns, local))
            if ns != XS_NS and type_node is None:
                raise SchemaUnsupported(f"{self.where(el)}: type {type_name} not found")
        else:
            type_node = el.find(f"{XS}complexType")
            if type_node is None:
                type_node = el.find(f"{XS}simpleType")
            if type_node is None:
                raise SchemaUnsupported(f"{self.where(el)}: element {xml} has no type")
            ns, local = self.ns, ""
        docs = self.require_docs(el, type_node)
        part = None
        if type_node is not None and type_node.tag == f"{XS}complexType":
            cname = local or xml
            taken = {k.name for k in self.module.classes} | {self.module.class_name}
            if not local and (cname in taken or (ns, cname) in self.types):
                cname = owner + xml
            part = self.complex(type_node, cname, self.require_docs(type_node, el) if local else docs)
            kind, annotation = "part", part
        elif type_node is None:
            if local not in BUILTINS:
                raise SchemaUnsupported(f"{self.where(el)}: built-in type xs:{local} is not supported")
            kind, annotation = BUILTINS[local]
        else:
            simple = self.simple(type_node, local or None)
            kind, annotation = simple.kind, simple.annotation
        return Field(snake(xml), xml, docs, kind, annotation, part, min_occurs, many)

    def simple(self, st: etree._Element, name: str | None) -> Simple:
        restriction = st.find(f"{XS}restriction")
        if restriction is None:
            raise SchemaUnsupported(f"{self.where(st)}: only restrictions are supported (no lists or unions)")
        base_ns, base = self.qname(restriction, restriction.get("base") or "")
        enum = restriction.findall(f"{XS}enumeration")
        if base_ns == XS_NS:
            if base not in BUILTINS:
                raise SchemaUnsupported(f"{self.where(st)}: built-in type xs:{base} is not supported")
            kind, annotation = BUILTINS[base]
        else:
            base_node = self.types.get((base_ns, base))
            if base_node is None or base_node.tag != f"{XS}simpleType":
                raise SchemaUnsupported(f"{self.where(st)}: base type {base} not found")
            inner = self.simple(base_node, base)
            kind, annotation = inner.kind, inner.annotation
        if enum:
            if kind != "str":
                raise SchemaUnsupported(f"{self.where(st)}: enumerations are supported on strings only")
            values = [(e.get("value") or "", _docs(e) or Docs("", "")) for e in enum]
            literal = "Literal[" + ", ".join(_py_str(v) for v, _ in values) + "]"
            if name is None:
                return Simple(kind, literal)
            self.module.aliases.setdefault(name, Alias(name, values, self.require_docs(st)))
            return Simple(kind, name)
        return Simple(kind, annotation)


# ---------------------------------------------------------------------------------------------- writing Python


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


#: Punctuation that never starts a line (Chinese line-breaking rules, 避头点).
_NO_LINE_START = frozenset("，。；：、？！）》」』”’,.;:)")


def _chunks(text: str, width: int) -> list[str]:
    """Split ``text`` into pieces of at most ``width`` display columns, after a space where one is near."""
    pieces: list[str] = []
    while _width(text) > width:
        cut, used, last_space = 0, 0, -1
        for i, c in enumerate(text):
            w = _width(c)
            if used + w > width:
                break
            used += w
            cut = i + 1
            if c == " ":
                last_space = i + 1
        if last_space > cut // 2:
            cut = last_space
        while cut > 1 and text[cut] in _NO_LINE_START:
            cut -= 1  # keep closing punctuation with the character before it
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def _py_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _py_strs(text: str, indent: int, lead: int) -> str:
    """A string literal, as an implicit concatenation in parentheses when it does not fit on one line after ``lead``
    columns (the dictionary key) and a comma."""
    one = _py_str(text)
    if indent + lead + _width(one) + 1 <= LINE:
        return one
    pieces = _chunks(text, LINE - indent - 8)
    pad = " " * (indent + 4)
    return "(\n" + "".join(f"{pad}{_py_str(p)}\n" for p in pieces) + " " * indent + ")"


def _docstring(paragraphs: list[str | list[str]], indent: int) -> list[str]:
    """Docstring lines: paragraphs separated by blank lines; a list paragraph is one line per item."""
    pad = " " * indent
    lines: list[str] = []
    for para in paragraphs:
        if not para:
            continue
        if lines:
            lines.append("")
        for item in [para] if isinstance(para, str) else para:
            escaped = item.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
            wrapped = _chunks(escaped, LINE - indent - 8)
            hang = "  " if isinstance(para, list) else ""
            lines.extend([wrapped[0].rstrip()] + [hang + w.rstrip() for w in wrapped[1:]])
    if lines and lines[-1].endswith('"'):
        lines[-1] += " "
    if len(lines) == 1:
        return [f'{pad}"""{lines[0]}"""']
    out = [f'{pad}"""{lines[0]}']
    out.extend(f"{pad}{line}" if line else "" for line in lines[1:])
    out.append(f'{pad}"""')
    return out


_DOC = '"doc": '
_DOC_EN = '"doc_en": '


def _field_lines(f: Field) -> list[str]:
    annotation = f.annotation
    if f.many:
        annotation = f"list[{annotation}]"
        default = "default_factory=list, " if f.min_occurs == 0 else ""
    elif f.min_occurs == 0:
        annotation = f"{annotation} | None"
        default = "default=None, "
    else:
        default = ""
    meta = [f'"xml": {_py_str(f.xml)}', f'"kind": {_py_str(f.kind)}']
    if f.many:
        meta.append('"many": True')
    if f.part:
        meta.append(f'"part": {f.part}')
    meta.append(f'"doc": {_py_strs(f.docs.zh, 12, len(_DOC))}')
    meta.append(f'"doc_en": {_py_strs(f.docs.en, 12, len(_DOC_EN))}')
    body = ",\n".join(" " * 12 + m for m in meta)
    lines = [f"    {f.name}: {annotation} = dataclasses.field(", f"        {default}metadata={{", body + ","]
    lines += ["        },", "    )"]
    lines.extend(_docstring([f.docs.zh, f.docs.en], 4))
    return lines


def _alias_lines(a: Alias) -> list[str]:
    values = ", ".join(_py_str(v) for v, _ in a.values)
    lines = [f"{a.name}: TypeAlias = Literal[{values}]"]
    items = [f"- {v}: {d.zh}" + (f" ({d.en})" if d.en else "") for v, d in a.values]
    lines.extend(_docstring([a.docs.zh, a.docs.en, items], 0))
    return lines


def module_name(service: str, version: int) -> str:
    return re.sub(r"[.\-]", "_", service) + f"_v{version}"


def _render_module(m: Module, schemas: Path) -> str:
    rel = m.xsd.relative_to(schemas.parent).as_posix()
    out = _docstring(
        [
            f"{m.service} 第{m.version}版 — {m.docs.zh}",
            m.docs.en,
            f"Generated by `python -m adapters.sdk._codegen` from {rel}; do not edit.",
        ],
        0,
    )
    annotations = " ".join(f.annotation for k in m.classes for f in k.fields)
    out += ["", "from __future__ import annotations", ""]
    out.append("import dataclasses")
    if "datetime." in annotations:
        out.append("import datetime")
    if "Decimal" in annotations:
        out.append("from decimal import Decimal")
    typing = ["ClassVar"]
    if m.aliases or "Literal[" in annotations:
        typing.append("Literal")
    if m.aliases:
        typing.append("TypeAlias")
    out.append(f"from typing import {', '.join(typing)}")
    bases = "Message, Part" if len(m.classes) > 1 else "Message"
    out += ["", f"from adapters.sdk._message import {bases}", ""]
    exported = sorted([*m.aliases, *(k.name for k in m.classes)])
    out.append("__all__ = [" + ", ".join(_py_str(n) for n in exported) + "]")
    for a in m.aliases.values():
        out += ["", *_alias_lines(a)]
    for k in m.classes:
        top = k.name == m.class_name
        out += ["", "", "@dataclasses.dataclass(kw_only=True)", f"class {k.name}({'Message' if top else 'Part'}):"]
        out += _docstring([k.docs.zh, k.docs.en], 4)
        if top:
            out += [
                "",
                f"    SERVICE: ClassVar[str] = {_py_str(m.service)}",
                f"    VERSION: ClassVar[int] = {m.version}",
                f"    NAMESPACE: ClassVar[str] = {_py_str(m.namespace)}",
                f"    ELEMENT: ClassVar[str] = {_py_str(m.element)}",
            ]
        for f in k.fields:
            out += ["", *_field_lines(f)]
    return "\n".join(out) + "\n"


def _render_init(modules: list[Module]) -> str:
    latest: dict[str, Module] = {}
    for m in modules:
        if m.service not in latest or latest[m.service].version < m.version:
            latest[m.service] = m
    out = _docstring(
        [
            "Typed messages: one dataclass per service version of schemas/services/, and a lookup.",
            "``DocumentOfficialV1`` is document.official version 1; ``DocumentOfficial`` names the newest version. "
            "Nested types live in the service's module (e.g. ``adapters.sdk.messages.document_official_v1``).",
            "Generated by `python -m adapters.sdk._codegen`; do not edit.",
        ],
        0,
    )
    out += ["", "from __future__ import annotations", "", "from lxml import etree", ""]
    out += ["from adapters.sdk._errors import MessageInvalid", "from adapters.sdk._message import Message"]
    for m in modules:
        out.append(f"from adapters.sdk.messages.{module_name(m.service, m.version)} import {m.class_name}")
    names = ["ALL", "Message", "message_class", "message_from_element"]
    names += [m.class_name for m in modules] + [latest[s].class_name[: -len(f"V{latest[s].version}")] for s in latest]
    out += ["", "__all__ = [" + ", ".join(_py_str(n) for n in sorted(names)) + "]", ""]
    for s in sorted(latest):
        m = latest[s]
        out.append(f"{m.class_name[: -len(f'V{m.version}')]} = {m.class_name}")
    out += ["", "#: Every message class, one per service version.", "ALL: tuple[type[Message], ...] = ("]
    out += [f"    {m.class_name}," for m in modules]
    out += [")", "_BY_ID = {(c.SERVICE, c.VERSION): c for c in ALL}", "_BY_NS = {c.NAMESPACE: c for c in ALL}"]
    out += [
        "",
        "",
        "def message_class(service: str, version: int) -> type[Message]:",
        '    """The class of ``service`` version ``version``; ``MessageInvalid`` (SCHEMA_UNKNOWN_SERVICE or',
        '    SCHEMA_UNKNOWN_VERSION, as the hub answers) when there is none."""',
        "    cls = _BY_ID.get((service, version))",
        "    if cls is not None:",
        "        return cls",
        "    known = sorted(v for s, v in _BY_ID if s == service)",
        "    if not known:",
        '        raise MessageInvalid(f"unknown service {service!r}", code="SCHEMA_UNKNOWN_SERVICE")',
        "    raise MessageInvalid(",
        '        f"service {service!r} has no version {version}; supported: {known}", code="SCHEMA_UNKNOWN_VERSION"',
        "    )",
        "",
        "",
        "def message_from_element(el: etree._Element) -> Message:",
        '    """Read a body element into its class, chosen by the element\'s namespace."""',
        '    cls = _BY_NS.get(etree.QName(el).namespace or "")',
        "    if cls is None:",
        '        raise MessageInvalid(f"no message class for {el.tag}", code="SCHEMA_UNKNOWN_SERVICE")',
        "    return cls.from_element(el)",
    ]
    return "\n".join(out) + "\n"


def render(schemas: Path = SCHEMAS) -> dict[str, str]:
    """File name → unformatted source of every module of ``adapters.sdk.messages``."""
    modules = []
    for xsd in sorted(schemas.glob("services/*/*/schema.xsd")):
        service, version = xsd.parent.parent.name, int(xsd.parent.name)
        modules.append(_Reader(xsd, schemas).read(service, version))
    files = {f"{module_name(m.service, m.version)}.py": _render_module(m, schemas) for m in modules}
    files["__init__.py"] = _render_init(modules)
    return files


def generate(out: Path = OUT, schemas: Path = SCHEMAS) -> list[Path]:
    """Write the modules into ``out`` (removing generated modules of services that no longer exist), formatted."""
    out.mkdir(parents=True, exist_ok=True)
    files = render(schemas)
    for old in out.glob("*.py"):
        if old.name not in files:
            old.unlink()
    paths = []
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--quiet", "--config", str(ROOT / "pyproject.toml"), str(out)],
        check=True,
    )
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adapters.sdk._codegen", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (default: adapters/sdk/messages)")
    ap.add_argument("--schemas", type=Path, default=SCHEMAS, help="the schemas folder (default: the project's)")
    args = ap.parse_args(argv)
    paths = generate(args.out, args.schemas)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
