"""Safe intake: untrusted bytes → one lxml tree, or an ``UnsafeXml`` with a specific code.

Order (XML-SECURITY.md §3):

1. A byte gate: empty, size cap, UTF-8 only (no UTF-16/32/7 or EBCDIC signature, no NUL, an XML declaration
   may only say UTF-8), no markup declaration (``<!DOCTYPE``, ``<!ENTITY``, …), and count limits on markup and
   attributes. Everything here is a C-speed scan of the bytes (``find``/``count``); nothing decodes the whole
   message on the fast path.
2. Exactly one parse with a hardened lxml parser: the encoding is pinned to UTF-8 (libxml2 never switches to
   what a BOM or declaration claims, so no parser differential), no DTD loading, no entity substitution, no
   network, ``huge_tree=False`` (depth 256, 10 MB per node), no recovery, comments dropped (nothing downstream
   can read text hidden in them; exclusive C14N without comments drops them too). libxml2
   rejects every invalid UTF-8 sequence in every position, so the gate need not decode; when the parse fails
   the bytes are decoded once to say exactly where the encoding is wrong.
3. Checks after the parse: no processing instruction anywhere (exclusive C14N keeps PIs, so a standard verifier
   would digest what the hub's tree no longer holds: refused, ``ENV_PI``), at most ``MAX_NAMESPACES`` namespace
   declarations (``ENV_NAMESPACES``: C14N cost grows with the square of the namespaces in scope), no DOCTYPE
   survived. Duplicate identifiers are looked for by ``check_ids``, which the
   schema registry calls when a message fails XSD validation (the hub's XSDs admit identifier attributes only
   inside ``ds:Signature``, typed ``xs:ID``, whose uniqueness the XSD validator enforces).

The parser also carries a resolver that refuses every external load. That matters: even with
``load_dtd=False`` and ``no_network=True``, libxml2 2.14 *opens local files* named by an external DTD subset
(``<!DOCTYPE r SYSTEM "file:…">``) or an external parameter entity (verified with inotify); only network
URLs are refused by ``no_network``. The byte gate stops those documents first, the resolver makes sure the
parser alone would not read a file either.

XInclude is never processed and ``xsi:schemaLocation`` hints are never read: validation uses the hub's own
schema registry only. Parsers are per thread (lxml advises against sharing one between threads).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any, cast

from lxml import etree

from hub.errors import UnsafeXml

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_ATTRIBUTES",
    "MAX_DEPTH",
    "MAX_MARKUP",
    "MAX_NAMESPACES",
    "check_ids",
    "parse",
    "parser",
]

#: Size cap of one message (the hub's default; ``Settings.max_message_bytes`` overrides it).
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
#: Upper bound on markup items (``<`` characters: start and end tags, comments, CDATA). Every step after the
#: parse costs about 0.2–0.5 µs per node (XSD, C14N, the profile's walks), so this bounds what one message can
#: cost (the README's cost model); it also bounds memory (a tree node costs libxml2 about 120 bytes). The largest
#: schema-valid message of any service needs about 52,000: a full data.response page (500 rows × 50 cells, 51,000
#: tags) in an envelope of 200 recipients (``tests/unit/test_cost_model.py`` builds it).
MAX_MARKUP = 64_000
#: Upper bound on attributes and namespace declarations in the whole message (about 0.7 µs each through parse
#: and validation, and 230 bytes of tree; each one the XSD refuses is an entry in libxml2's error log, 4 µs). No
#: service body has attributes; an envelope has three per recipient (at most 200) and a dozen more.
MAX_ATTRIBUTES = 2_048
#: Upper bound on namespace declarations (``xmlns``, ``xmlns:p``) in the whole message. Canonicalising an element
#: copies every namespace in scope (lxml) and libxml2's C14N searches them per namespace: the cost grows with the
#: square of the declarations in scope (60,000 unused declarations on the root cost 8 s before this bound). A
#: valid envelope declares three or four (env, ds, the body's namespace); declare each once, near the root.
MAX_NAMESPACES = 256
#: Upper bound on the length of one namespace name (URI) in messages over 64 KiB. libxml2 copies it into every
#: error message about an element of that namespace; the hub's own are under 60 characters.
MAX_NAMESPACE_URI = 1024
#: Element names longer than this are refused in messages over ``_NAME_CHECK_BYTES``: libxml2 reads a long name
#: character by character (up to 10 ns a byte against 1 for text), so 4 MiB of 50,000-character names cost 48 ms
#: to parse. No schema of the hub has a name over 40 characters.
MAX_NAME = 1024
_NAME_CHECK_BYTES = 1024 * 1024
#: libxml2's element nesting limit without ``huge_tree`` (not configurable here; documented for messages).
MAX_DEPTH = 256

_local = threading.local()

_UTF8_BOM = b"\xef\xbb\xbf"
#: Byte signatures of encodings other than UTF-8 (XML 1.0 Appendix F), checked when a message does not start
#: with ``<``. UTF-32 before UTF-16: the UTF-32-LE BOM starts with the UTF-16-LE one.
_SIGNATURES = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
    (b"+/v", "UTF-7"),
    (b"\x4c\x6f\xa7\x94", "EBCDIC"),
    (b"\x00", "UTF-16 or UTF-32"),
)
_XML_WS = b" \t\r\n"
#: The declarations almost every message starts with (checked without a regular expression): the usual one, and
#: the one lxml writes (``tostring(…, encoding="UTF-8", xml_declaration=True)``: the hub's own and most senders').
_USUAL_DECLARATIONS = (b'<?xml version="1.0" encoding="UTF-8"?>', b"<?xml version='1.0' encoding='UTF-8'?>")
#: The encoding pseudo-attribute inside an XML declaration.
_DECL_ENCODING = re.compile(rb"\sencoding\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
#: ``<!`` that does not open a comment or a CDATA section: a DOCTYPE or another markup declaration.
_MARKUP_DECL = re.compile(rb"<!(?!--|\[CDATA\[)")
#: Attributes that XML-DSig implementations (signxml, xmlsec1) treat as identifiers: ``Id``, ``ID``, ``id``
#: in any namespace (``xml:id`` and ``x:Id`` included).
_ID_ATTRS = etree.XPath("//@*[local-name()='Id' or local-name()='ID' or local-name()='id']")

_XML_NS = "{http://www.w3.org/XML/1998/namespace}"

_E = etree.ErrorTypes
_ENTITY_ERRORS = frozenset(
    {
        _E.ERR_UNDECLARED_ENTITY,
        _E.WAR_UNDECLARED_ENTITY,
        _E.ERR_UNPARSED_ENTITY,
        _E.ERR_ENTITY_IS_EXTERNAL,
        _E.ERR_ENTITY_IS_PARAMETER,
        _E.ERR_ENTITY_LOOP,
        _E.ERR_ENTITY_PE_INTERNAL,
        _E.ERR_ENTITY_BOUNDARY,
        _E.ERR_ENTITY_PROCESSING,
        _E.ERR_EXT_ENTITY_STANDALONE,
        _E.ERR_ENTITYREF_IN_PROLOG,
        _E.ERR_ENTITYREF_IN_EPILOG,
        _E.ERR_ENTITYREF_IN_DTD,
        _E.ERR_PEREF_IN_PROLOG,
        _E.ERR_PEREF_IN_EPILOG,
        _E.ERR_PEREF_IN_INT_SUBSET,
        _E.ERR_NO_DTD,
        _E.ERR_DOCTYPE_NOT_FINISHED,
    }
)
_ENCODING_ERRORS = frozenset(
    {
        _E.ERR_INVALID_ENCODING,
        _E.ERR_UNSUPPORTED_ENCODING,
        _E.ERR_UNKNOWN_ENCODING,
        _E.ERR_ENCODING_NAME,
    }
)
_CHAR_ERRORS = frozenset(
    {_E.ERR_INVALID_CHAR, _E.ERR_INVALID_CHARREF, _E.ERR_INVALID_DEC_CHARREF, _E.ERR_INVALID_HEX_CHARREF}
)
_IO_ERRORS = range(1500, 1600)  # XML_IO_*: only an attempted external load can raise them on in-memory input
_POSITION = re.compile(r",? line \d+, column (\d+)\s*$")


class _RefuseExternal(etree.Resolver):
    """Refuse every external DTD, entity or XInclude load: the parser must never open a file or a socket."""

    def resolve(self, system_url: str, public_id: str, context: object = None) -> Any:
        raise UnsafeXml(
            "the message refers to an external DTD or entity; external references are not allowed", code="ENV_DOCTYPE"
        )


def parser() -> etree.XMLParser:
    """This thread's hardened parser (created once per thread).

    Use it on bytes only (``etree.fromstring``): its resolver refuses every load, including the document
    itself when given a file name or URL.
    """
    p: etree.XMLParser | None = getattr(_local, "parser", None)
    if p is None:
        p = etree.XMLParser(
            # No encoding= pin: lxml builds an encoding handler per parse for it (a third of a 2 KB parse). The byte
            # gate refuses every BOM/signature but UTF-8's, NUL bytes and any declaration naming another encoding,
            # and libxml2 checks every UTF-8 sequence (tests/unit/test_intake_hostile.py pins both).
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            attribute_defaults=False,
            huge_tree=False,
            recover=False,  # never "repair" hostile input; decompress stays at its default, False
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
            strip_cdata=True,
        )
        p.resolvers.add(_RefuseExternal())
        _local.parser = p
    return p


class _NamespaceCounter:
    """Parser target that counts namespace declarations and stops the parse at the first one over the limit."""

    __slots__ = ("count", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def start_ns(self, prefix: str | None, uri: str) -> None:
        self.count += 1
        if self.count > self.limit:
            raise _TooManyNamespaces

    def close(self) -> int:
        return self.count


class _TooManyNamespaces(Exception):
    pass


#: What looks like a namespace declaration in the bytes (it may also be text: only an upper bound).
_XMLNS = re.compile(rb"xmlns(?::[^\s=<>]*)?\s*=\s*(?:\"([^\"<]*)\"|'([^'<]*)')")
_LONG_NAME = re.compile(rb"<[^\s<>/!?]{%d}" % (MAX_NAME + 1))


#: How many occurrences of a needle's first byte are visited one by one (``bytes.find``: memchr, far faster than a
#: regular expression's scan over text, above all over UTF-8 Chinese, whose bytes are never ASCII) before a scan
#: falls back to the regular expression over the rest.
_HOPS = 4096
#: From this size on, namespace names are measured (``_check_namespaces``).
_URI_CHECK_BYTES = 64 * 1024
#: From this size on, ``_matches_at`` jumps to a needle's first byte instead of the needle.
_FIND_FIRST_BYTES = 256 * 1024


def _matches_at(data: bytes, first: bytes, prefix: bytes, pattern: re.Pattern[bytes]) -> Iterator[re.Match[bytes]]:
    """The matches of ``pattern`` (which starts with ``prefix``), found by ``bytes.find`` jumps: to each
    ``prefix`` in a small or ASCII message (one jump per occurrence), to each ``first`` byte (memchr) in a large
    one with other bytes, where a multi-byte ``find`` crawls (UTF-8 Chinese: 1 ns a byte); past ``_HOPS`` jumps
    the pattern scans the rest itself."""
    needle = prefix if len(data) <= _FIND_FIRST_BYTES or data.isascii() else first
    find, match = data.find, pattern.match
    pos = find(needle)
    hops = 0
    while pos >= 0:
        if data.startswith(prefix, pos):
            m = match(data, pos)
            if m is not None:
                yield m
                pos = m.end() - 1
        hops += 1
        if hops > _HOPS:
            yield from pattern.finditer(data, pos + 1)
            return
        pos = find(needle, pos + 1)


def _long_name(data: bytes) -> int:
    """Where an element name longer than ``MAX_NAME`` starts (-1: none). Only a gap of more than ``MAX_NAME``
    bytes between two ``<`` can hold one: the ``<`` are visited by memchr jumps, the regular expression tried only
    at the start of such a gap; past ``_HOPS`` jumps it scans the rest itself."""
    find, match = data.find, _LONG_NAME.match
    pos = find(b"<")
    hops = 0
    while pos >= 0:
        nxt = find(b"<", pos + 1)
        if (nxt if nxt >= 0 else len(data)) - pos > MAX_NAME + 1 and match(data, pos) is not None:
            return pos
        hops += 1
        if hops > _HOPS and nxt >= 0:
            m = _LONG_NAME.search(data, nxt)
            return m.start() if m is not None else -1
        pos = nxt
    return -1


def _check_namespaces(data: bytes, limit: int) -> None:
    """At most ``limit`` namespace declarations; in messages over ``_URI_CHECK_BYTES``, none with a name over
    ``MAX_NAMESPACE_URI`` characters (a long name costs only where it is copied into many error messages, which
    needs a large message). Small messages are settled by one ``count`` of ``xmlns`` (C speed, 3 µs for a signed
    4.5 KB notice); in large ones what looks like a declaration is found by ``_matches_at`` (``find`` jumps) and its
    name measured. When there are more than ``limit`` candidates, the declarations are counted exactly by a
    SAX-style parse that stops at the first one over the limit (so its cost is bounded too), since ``xmlns`` may
    also occur in text."""
    if len(data) <= _URI_CHECK_BYTES:
        if data.count(b"xmlns") <= limit:
            return
    else:
        seen = 0
        for m in _matches_at(data, b"x", b"xmlns", _XMLNS):
            uri = m.group(1) if m.group(1) is not None else m.group(2)
            if len(uri) > MAX_NAMESPACE_URI:
                raise UnsafeXml(
                    f"a namespace name is {len(uri)} characters long; the limit is {MAX_NAMESPACE_URI}",
                    code="ENV_NAMESPACES",
                    line=_line_at(data, m.start()),
                )
            seen += 1
            if seen > limit:
                break
        if seen <= limit:
            return
    sax = etree.XMLParser(
        target=_NamespaceCounter(limit),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        recover=False,
        remove_comments=True,
        remove_pis=True,
    )
    sax.resolvers.add(_RefuseExternal())  # as the main parser: never a file or a socket, even without the gate
    try:
        etree.fromstring(data, sax)
    except _TooManyNamespaces:
        raise UnsafeXml(
            f"the message declares more than {limit} XML namespaces (xmlns attributes); declare each namespace "
            "once, on the envelope or the body element",
            code="ENV_NAMESPACES",
        ) from None
    except etree.XMLSyntaxError as exc:
        raise _translate(exc, data) from None


#: A processing instruction, or a comment or CDATA section in which ``<?`` is only text. Applied to well-formed
#: documents only (every comment and CDATA section is closed), so the scan is linear.
_PI_SCAN = re.compile(rb"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?", re.DOTALL)


def _check_pis(data: bytes, start: int) -> None:
    """No processing instruction anywhere (the XML declaration is not one). Exclusive C14N keeps PIs, so a
    standard verifier digests them, while the hub's parser drops them: accepting one would store bytes that
    ``xmlsec1 --verify`` refuses. Called only when ``<?`` occurs after the declaration; ``start`` is the offset
    just after it (a scan from inside a comment would misread it)."""
    for m in _PI_SCAN.finditer(data, start):
        if m.end() - m.start() == 2:
            raise UnsafeXml(
                "processing instructions (<?…?>) are not allowed in hub messages",
                code="ENV_PI",
                line=_line_at(data, m.start()),
            )


def _line_at(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


def _check_start(data: bytes) -> int:
    """The message does not start with ``<``: a UTF-8 BOM is skipped, other encodings' signatures refused.

    Returns the offset of the first character after an optional UTF-8 BOM.
    """
    if data.startswith(_UTF8_BOM):
        if len(data) == 3:
            raise UnsafeXml("the message holds only a byte order mark", code="ENV_EMPTY")
        return 3
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            raise UnsafeXml(f"the message is encoded as {name}; only UTF-8 is accepted", code="ENV_ENCODING")
    return 0


def _check_declaration(data: bytes, start: int) -> None:
    """An XML declaration may name only UTF-8 (a UTF-8 BOM with ``encoding="UTF-16"`` is refused too)."""
    end = data.find(b"?>", start, start + 1024)  # a declaration is short; never scan the whole message
    decl = data[start : end if end >= 0 else start + 1024]
    m = _DECL_ENCODING.search(decl)
    if m is None:
        return
    raw = m.group(1) if m.group(1) is not None else m.group(2)
    if raw.upper() not in (b"UTF-8", b"UTF8"):
        shown = raw[:40].decode("ascii", "replace")
        raise UnsafeXml(f"the XML declaration says encoding {shown!r}; only UTF-8 is accepted", code="ENV_ENCODING")


def _occurs_more_than(data: bytes, char: bytes, limit: int) -> int:
    """How often ``char`` occurs when that is more than ``limit`` (else 0), at close to memory speed.

    ``bytes.count`` of one byte runs a plain loop (about 1 ms per MB here), while ``find`` of one byte is a
    ``memchr`` (about 20 µs per MB): text-heavy messages (attachments) are settled by a few ``find`` jumps, and
    only markup-dense ones pay for the full count, which their parse costs many times over anyway.
    """
    find = data.find
    pos = -1
    for _ in range(min(limit, 1024) + 1):
        pos = find(char, pos + 1)
        if pos < 0:
            return 0
    count = data.count(char)
    return count if count > limit else 0


def _byte_gate(data: bytes, max_bytes: int, max_markup: int, max_attributes: int) -> tuple[bool, int]:
    """Refuse what must never reach the parser; every step is a C-speed scan, the usual message skips most.

    Returns whether the bytes hold a ``!`` at all (without one — UTF-8, so no other byte can stand for it — no
    ``<!DOCTYPE`` can be in the document, and the tree check after parsing is skipped), and the offset just after
    the XML declaration when a ``<?`` follows it (-1: none, so the document holds no processing instruction)."""
    size = len(data)
    if size == 0:
        raise UnsafeXml("the message is empty", code="ENV_EMPTY")
    if size > max_bytes:
        raise UnsafeXml(f"the message is {size} bytes; the limit is {max_bytes} bytes", code="ENV_TOO_LARGE")
    start = 0 if data[0] == 0x3C else _check_start(data)  # 0x3C '<': the usual first byte skips the signatures
    nul = data.find(b"\x00")
    if nul >= 0:
        raise UnsafeXml(
            "the message contains NUL bytes (UTF-16 or UTF-32?); only UTF-8 is accepted",
            code="ENV_ENCODING",
            line=_line_at(data, nul),
        )
    after_declaration = start
    if data.startswith(b"<?xml", start) and data[start + 5 : start + 6] in (b" ", b"\t", b"\r", b"\n"):
        # An XML declaration, not a PI such as <?xml-stylesheet?>
        if not data.startswith(_USUAL_DECLARATIONS, start):
            _check_declaration(data, start)
        end = data.find(b"?>", start)
        after_declaration = end + 2 if end >= 0 else start + 5
    exclamation = data.find(b"!") >= 0
    if exclamation:  # memchr; most messages have no "!" at all, so no "<!"
        # A DOCTYPE can only appear in the prolog, but any markup declaration anywhere is refused outright: no
        # valid envelope needs one, and refusing before parsing means no DTD is ever read.
        m = _MARKUP_DECL.search(data)
        if m is not None:
            raise UnsafeXml(
                "DOCTYPE and entity declarations are not allowed in hub messages",
                code="ENV_DOCTYPE",
                line=_line_at(data, m.start()),
            )
    # Every markup item takes at least 3 bytes and every attribute 4, so small messages cannot exceed the limits.
    if size > 3 * max_markup:
        markup = _occurs_more_than(data, b"<", max_markup)
        if markup:
            raise UnsafeXml(
                f"the message has {markup} markup items (tags, comments, CDATA sections); the limit is {max_markup}",
                code="ENV_LIMIT",
            )
    if size > 4 * max_attributes and _occurs_more_than(data, b"=", max_attributes):
        # Text may contain "=" freely. Every attribute's "=" is followed by a quote or white space, so this
        # sum of multi-byte counts (C speed, no allocation) is still an upper bound on the attributes.
        attributes = sum(data.count(b"=" + follow) for follow in (b'"', b"'", b" ", b"\t", b"\n", b"\r"))
        if attributes > max_attributes:
            raise UnsafeXml(
                f"the message has about {attributes} attributes and namespace declarations; "
                f"the limit is {max_attributes}",
                code="ENV_LIMIT",
            )
    if size > _NAME_CHECK_BYTES:
        long_name = _long_name(data)
        if long_name >= 0:
            raise UnsafeXml(
                f"an element name is longer than {MAX_NAME} characters",
                code="ENV_LIMIT",
                line=_line_at(data, long_name),
            )
    # Where a scan for processing instructions must start (-1: no "<?" after the declaration, so none is there).
    # (memchr for "?" first: a two-byte find runs at a quarter of its speed over UTF-8 Chinese)
    has_pi = data.find(b"?", after_declaration) >= 0 and data.find(b"<?", after_declaration) >= 0
    return exclamation, after_declaration if has_pi else -1


def _translate(exc: etree.XMLSyntaxError, data: bytes) -> UnsafeXml:
    """A libxml2 error as an ``UnsafeXml`` with the most specific code; libxml2 text only for plain syntax."""
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            return UnsafeXml(
                f"invalid UTF-8 byte sequence at byte offset {bad.start}; only UTF-8 is accepted",
                code="ENV_ENCODING",
                line=_line_at(data, bad.start),
            )
    code: int = getattr(exc, "code", 0)
    msg = " ".join(str(exc.msg or "").split())
    low = msg.lower()
    line = exc.lineno or None
    if code in _ENTITY_ERRORS or code in _IO_ERRORS or "entity" in low:
        return UnsafeXml("entity references are not allowed in hub messages", code="ENV_DOCTYPE", line=line)
    if code == _E.ERR_RESOURCE_LIMIT or "huge" in low or "limit" in low:
        if "depth" in low:
            return UnsafeXml(
                f"elements are nested too deeply (the limit is {MAX_DEPTH} levels)", code="ENV_TOO_DEEP", line=line
            )
        return UnsafeXml(
            "a text node, attribute value or name exceeds the parser's size limit", code="ENV_LIMIT", line=line
        )
    if code in _ENCODING_ERRORS:
        return UnsafeXml("the message is not valid UTF-8 text", code="ENV_ENCODING", line=line)
    if not data.strip(_XML_WS + _UTF8_BOM):
        return UnsafeXml("the message holds only white space", code="ENV_EMPTY")
    if code in _CHAR_ERRORS:
        return UnsafeXml(
            "the message contains a character that XML does not allow (a control character or U+FFFE/U+FFFF)",
            code="ENV_MALFORMED",
            line=line,
        )
    # libxml2's wording names only elements and positions of the input itself (no DTD or entity is ever
    # loaded, so no file content can appear in it); keep it short and on one line.
    m = _POSITION.search(msg)
    if m is not None:
        msg = f"{msg[: m.start()]} (column {m.group(1)})"
    return UnsafeXml(f"not well-formed XML: {msg[:200]}", code="ENV_MALFORMED", line=line)


def parse(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_markup: int = MAX_MARKUP,
    max_attributes: int = MAX_ATTRIBUTES,
    max_namespaces: int = MAX_NAMESPACES,
) -> etree._Element:
    """Parse untrusted bytes into a tree, or raise ``UnsafeXml`` with a specific code.

    ``max_bytes`` is the size cap; ``max_markup``, ``max_attributes`` and ``max_namespaces`` bound the size of the
    tree and what canonicalising it costs (configuration files may be larger than messages). Nesting is limited
    to ``MAX_DEPTH`` levels. Processing instructions are refused (``ENV_PI``), comments dropped.
    """
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("parse() takes bytes; decoding is part of the intake gate")
        data = bytes(data)
    exclamation, pi = _byte_gate(data, max_bytes, max_markup, max_attributes)
    _check_namespaces(data, max_namespaces)
    try:
        root = etree.fromstring(data, parser())
    except etree.XMLSyntaxError as exc:
        raise _translate(exc, data) from None
    if pi >= 0:
        _check_pis(data, pi)
    if exclamation:  # the gate refused every "<!" but comments and CDATA; check the tree as well
        docinfo = root.getroottree().docinfo
        if docinfo.internalDTD is not None or docinfo.externalDTD is not None:
            raise UnsafeXml("DOCTYPE declarations are not allowed in hub messages", code="ENV_DOCTYPE")
    return root


def check_ids(root: etree._Element) -> None:
    """Reject identifiers that repeat, under the same or different ID attribute names (XSW defence).

    signxml looks a ``#id`` reference up under ``Id``, ``ID``, ``id`` and ``xml:id`` (by local name, so
    ``x:Id`` too) and checks uniqueness only within one name; the hub refuses any repeat across all of them.
    The error carries the line of the first occurrence.
    """
    ids = cast("list[Any]", _ID_ATTRS(root))  # attribute results (_ElementUnicodeResult)
    if len(ids) < 2:
        return
    seen: dict[str, tuple[str, int | None]] = {}
    for attr in ids:
        name = _attr_name(attr.attrname)
        value = str(attr)
        parent = attr.getparent()
        line = parent.sourceline if parent is not None else None
        first = seen.get(value)
        if first is not None:
            raise UnsafeXml(
                f"identifier {value[:64]!r} appears more than once (attribute {first[0]} on line {first[1] or '?'} "
                f"and {name} on line {line or '?'})",
                code="ENV_DUPLICATE_ID",
                line=first[1],
            )
        seen[value] = (name, line)


def _attr_name(clark: str) -> str:
    """``xml:id`` for the XML namespace, ``{ns}Id`` for others, the plain name otherwise."""
    if clark.startswith(_XML_NS):
        return "xml:" + clark[len(_XML_NS) :]
    return clark
