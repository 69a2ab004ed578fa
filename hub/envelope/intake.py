"""Safe intake: untrusted bytes → one lxml tree, or an ``UnsafeXml`` with a specific code.

Order (XML-SECURITY.md §3): a byte gate first (empty, size cap, UTF-8 only, no NUL, no DOCTYPE/ENTITY), then
exactly one parse with a hardened lxml parser (no DTD loading, no entity resolution, no network, no huge
trees; comments and processing instructions are dropped so that nothing downstream can read text hidden in
them and ``xml-stylesheet`` PIs are never seen), then checks on the tree (no DOCTYPE survived, no duplicate
identifiers). XInclude is never processed and ``xsi:schemaLocation`` hints are never read: validation uses the
hub's own schema registry only.

Parsers are per thread (lxml advises against sharing one between threads).
"""

from __future__ import annotations

import re
import threading

from lxml import etree

from hub.errors import UnsafeXml

__all__ = ["parse", "DEFAULT_MAX_BYTES", "parser"]

DEFAULT_MAX_BYTES = 4 * 1024 * 1024

_local = threading.local()

# The XML declaration, if any: only UTF-8 is accepted.
_XML_DECL = re.compile(rb"\A<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._\-]+)[\"']")
# Attributes that XML-DSig implementations (signxml, xmlsec1) treat as identifiers.
_ID_ATTRS = etree.XPath("//@*[local-name()='Id' or local-name()='ID' or local-name()='id']")
_BOMS = (
    (b"\xef\xbb\xbf", None),
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
    (b"+/v", "UTF-7"),
)


def parser() -> etree.XMLParser:
    """This thread's hardened parser."""
    p: etree.XMLParser | None = getattr(_local, "parser", None)
    if p is None:
        p = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            attribute_defaults=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
            strip_cdata=True,
        )
        _local.parser = p
    return p


def _byte_gate(data: bytes, max_bytes: int) -> bytes:
    if not data:
        raise UnsafeXml("the message is empty", code="ENV_EMPTY")
    if len(data) > max_bytes:
        raise UnsafeXml(
            f"the message is {len(data)} bytes; the limit is {max_bytes} bytes", code="ENV_TOO_LARGE"
        )
    for bom, name in _BOMS:
        if data.startswith(bom):
            if name is not None:
                raise UnsafeXml(f"the message is encoded as {name}; only UTF-8 is accepted", code="ENV_ENCODING")
            data = data[3:]  # a UTF-8 BOM is harmless; the declaration, if any, must still say UTF-8
            break
    if b"\x00" in data:
        raise UnsafeXml("the message contains NUL bytes (UTF-16/32?); only UTF-8 is accepted", code="ENV_ENCODING")
    m = _XML_DECL.match(data)
    if m is not None and m.group(1).upper() not in (b"UTF-8", b"UTF8"):
        raise UnsafeXml(
            f"the XML declaration says encoding {m.group(1).decode('ascii')!r}; only UTF-8 is accepted",
            code="ENV_ENCODING",
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnsafeXml(
            f"invalid UTF-8 byte sequence at byte offset {exc.start}", code="ENV_ENCODING", line=line
        ) from None
    # A DOCTYPE can only appear in the prolog, but an entity declaration or DOCTYPE anywhere is refused
    # outright: no valid envelope needs one, and refusing before parsing means no DTD is ever read.
    for marker in (b"<!DOCTYPE", b"<!ENTITY"):
        pos = data.find(marker)
        if pos >= 0:
            raise UnsafeXml(
                "DOCTYPE and entity declarations are not allowed in hub messages",
                code="ENV_DOCTYPE",
                line=data.count(b"\n", 0, pos) + 1,
            )
    return data


def _translate(exc: etree.XMLSyntaxError) -> UnsafeXml:
    msg = str(exc.msg or "")
    low = msg.lower()
    line = exc.lineno or None
    if "depth" in low:
        return UnsafeXml("elements are nested too deeply (limit 256 levels)", code="ENV_TOO_DEEP", line=line)
    if "huge" in low or "limit" in low or "too long" in low or "too large" in low or "amplification" in low:
        return UnsafeXml("a text node, attribute or name exceeds the parser's size limit", code="ENV_LIMIT", line=line)
    if "entity" in low:
        return UnsafeXml("entity references are not allowed in hub messages", code="ENV_DOCTYPE", line=line)
    if "encoding" in low or "utf-8" in low or "char" in low and "invalid" in low:
        return UnsafeXml("the message is not valid UTF-8 text", code="ENV_ENCODING", line=line)
    # libxml2's own wording names only elements and positions of the input; keep it short.
    return UnsafeXml(f"not well-formed XML: {msg[:160]}", code="ENV_MALFORMED", line=line)


def parse(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._Element:
    """Parse untrusted bytes into a tree, or raise ``UnsafeXml`` with a specific code."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse() takes bytes; decoding is part of the intake gate")
    data = _byte_gate(bytes(data), max_bytes)
    try:
        root = etree.fromstring(data, parser())
    except etree.XMLSyntaxError as exc:
        raise _translate(exc) from None
    if root is None:  # pragma: no cover - lxml raises instead, kept as a guard
        raise UnsafeXml("the message has no root element", code="ENV_MALFORMED")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise UnsafeXml("DOCTYPE declarations are not allowed in hub messages", code="ENV_DOCTYPE")
    # Duplicate identifiers are looked for when a message fails schema validation (check_ids, called by the
    # registry): the hub's schemas admit identifier attributes only on ds:Signature parts, typed xs:ID,
    # and signatures must reference the whole envelope (URI=""), so a valid envelope cannot carry them.
    return root


def check_ids(root: etree._Element) -> None:
    """Reject identifiers that repeat, under the same or different ID attribute names (XSW defence)."""
    ids = _ID_ATTRS(root)
    if len(ids) < 2:
        return
    seen: dict[str, str] = {}
    for attr in ids:
        value = str(attr)
        if value in seen:
            parent = attr.getparent()
            raise UnsafeXml(
                f"identifier {value[:64]!r} appears more than once (attributes {seen[value]} and {attr.attrname})",
                code="ENV_DUPLICATE_ID",
                line=parent.sourceline if parent is not None else None,
            )
        seen[value] = attr.attrname
