"""The classification gate (信息审核: "classified material must never go online"). Pure, fail closed.

``gate()`` runs in the pipeline after the router, on the *signed* content only:

* the message's 密级 must not exceed the hub's own ceiling — otherwise every target is blocked;
* for each target, the level must not exceed the target's ceiling, itself clamped to its zone's maximum
  (internet 公开, extranet 内部, internal = accreditation) — otherwise that target is blocked
  (``GATE_CLASSIFICATION``, with a reason naming the zone and the ceiling);
* a message labelled 公开 or 内部 whose body carries a classification marking is to be quarantined
  (``.quarantine``) until a person releases or rejects it; ``.allowed`` then lists the targets it may reach on
  release.

Marking rule (what counts as a 密级 marking in a body, GB/T 9704-2012 §7.2.2 "密级和保密期限"): every text node,
tail and attribute value of the body is normalised (NFKC, zero-width and soft-hyphen characters removed) and

1. the star form anywhere: ``秘密★``, ``机密★10年``, ``绝密★长期`` (also ☆ and * as the separator, and with
   whitespace between the characters) — the star is the official separator between level and period, and
   ordinary prose does not contain it; the star form is also searched in the whole body text joined across
   elements, so splitting a marking over elements (``<b>机</b>密★``) does not hide it;
2. a bare ``绝密``, ``机密`` or ``秘密`` in a heading position: a line (or the whole value) that begins with the
   level word, optionally bracketed (【机密】) and optionally followed by a period (``机密 10年``), and then ends
   or continues after whitespace — the place where GB/T 9704 prints the marking.

Traditional and variant forms (絕密, 機密, 祕密, 長期, 個月) count as well.

Words inside running text are *not* markings: 保守国家秘密 ("keep state secrets"), 国家秘密, 商业秘密,
涉密、机密性 and the like appear in ordinary documents and must not stop them.

``egress_allowed()`` is the second, independent check at the moment of publishing to a lower zone: it re-reads
the classification from the outgoing bytes themselves and trusts nothing else.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from lxml import etree

from hub.directory.load import line_of
from hub.directory.model import ZONE_MAX, ZONE_NAMES
from hub.envelope.model import CLASSIFICATIONS, ENV_NS, Envelope, qn
from hub.errors import ClassificationBlocked
from hub.routing.router import Target

__all__ = ["Blocked", "GateResult", "Marking", "egress_allowed", "find_markings", "gate"]

_T_BODY = qn("Body")

# Zero-width characters, soft hyphen and similar invisible code points that could split a marking.
_INVISIBLE = dict.fromkeys(
    [
        *(0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0),
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2070),
    ]
)
_WS = re.compile(r"\s+")
# Simplified and traditional/variant forms (絕密, 機密, 祕密) of the three level words.
_LEVEL = r"([绝絕]密|[机機]密|[秘祕]密)"
_PERIOD = r"(?:长期|長期|[0-9]{1,3}(?:年|个月|個月))"
_SIMPLIFIED = str.maketrans({"絕": "绝", "機": "机", "祕": "秘"})
# Applied to text with all whitespace removed.
_STAR = re.compile(_LEVEL + r"[★☆✩✭✮✯*]" + f"({_PERIOD})?")
# Applied to one stripped line.
_HEADING = re.compile(
    r"[\[(【〔]?\s*([绝絕]\s*密|[机機]\s*密|[秘祕]\s*密)\s*[\])】〕]?" + r"(?:\s*[★☆*]?\s*(" + _PERIOD + r"))?(?=\s|$)"
)


@dataclass(frozen=True, slots=True)
class Marking:
    """A classification marking found in a body: its text, its level, and where (element path or @attribute)."""

    text: str
    level: int
    where: str
    line: int | None = None

    @property
    def label(self) -> str:
        return CLASSIFICATIONS[self.level]


@dataclass(frozen=True, slots=True)
class Blocked:
    """A target the message may not reach."""

    target: Target
    reason: str
    code: str = "GATE_CLASSIFICATION"

    @property
    def error(self) -> ClassificationBlocked:
        return ClassificationBlocked(self.reason, code=self.code)


@dataclass(frozen=True, slots=True)
class GateResult:
    """``level`` is the message's level (``len(CLASSIFICATIONS)`` — above every level — when it is unreadable)."""

    level: int
    allowed: tuple[Target, ...]
    blocked: tuple[Blocked, ...]
    markings: tuple[Marking, ...]

    @property
    def quarantine(self) -> bool:
        """True when markings were found: hold the whole message for a person to release or reject."""
        return bool(self.markings)


_INVISIBLE_CHARS = re.compile("[" + "".join(chr(c) for c in _INVISIBLE) + "]")


def _ranges(codes: list[int]) -> str:
    """A regular-expression character class body for sorted code points (runs as ranges)."""
    parts: list[str] = []
    start = prev = codes[0]
    for c in [*codes[1:], -1]:
        if c == prev + 1:
            prev = c
            continue
        parts.append(re.escape(chr(start)) + ("-" + re.escape(chr(prev)) if prev > start else ""))
        start = prev = c
    return "".join(parts)


class _Compatibility:
    """NFKC one character at a time, invisible characters deleted. Per character is what NFKC does outside
    combining sequences, and no marking character (the level words, the stars, digits, 年/月/长期) composes from
    one. A regular expression finds the characters that change (the 2,972 of the BMP, made on first use in 10 ms,
    and any character beyond it); only they reach Python: on Chinese text, whose full-width punctuation always needs
    NFKC, this is 20 times faster than ``unicodedata.normalize`` (680 ns a character there)."""

    _pattern: ClassVar[re.Pattern[str] | None] = None
    _table: ClassVar[dict[str, str]] = {}

    @classmethod
    def apply(cls, text: str) -> str:
        if cls._pattern is None:
            table = {chr(c): "" for c in _INVISIBLE}
            for c in range(0x10000):
                if 0xD800 <= c <= 0xDFFF or c in _INVISIBLE:
                    continue
                ch = chr(c)
                mapped = unicodedata.normalize("NFKC", ch)
                if mapped != ch:
                    table[ch] = mapped
            cls._table = table
            cls._pattern = re.compile(f"[{_ranges(sorted(map(ord, table)))}\U00010000-\U0010ffff]")
        return cls._pattern.sub(cls._replace, text)

    @classmethod
    def _replace(cls, m: re.Match[str]) -> str:
        ch = m.group()
        mapped = cls._table.get(ch)
        if mapped is None:  # beyond the BMP: rare, computed each time (nothing unbounded is cached)
            mapped = unicodedata.normalize("NFKC", ch)
        return mapped


def _normalise(text: str) -> str:
    """NFKC without the invisible characters. Text that is NFKC already and holds none of them (a C-speed check
    each) is returned as it is."""
    if unicodedata.is_normalized("NFKC", text) and _INVISIBLE_CHARS.search(text) is None:
        return text
    return _Compatibility.apply(text)


def _level_word(word: str) -> int:
    return CLASSIFICATIONS.index(_WS.sub("", word).translate(_SIMPLIFIED))


#: Markings reported per message. One is enough to quarantine it; a few more show the security officer where to
#: look. A body dense with markings (an insider's 4 MiB of 秘密★) would otherwise make one Marking per occurrence:
#: 167,000 of them, 0.7 s of the gate and as many rows in the quarantine record.
MAX_MARKINGS = 20
#: Characters of text holding 密 that the gate reads per message (NFKC-normalised — Chinese punctuation is
#: full-width, so most Chinese text needs it — and searched line by line: about 0.15 µs a character). Past it the
#: message is quarantined as not reviewable automatically (fail closed): 64 K characters is some thirty pages of
#: running text that mentions 密 in every paragraph.
MAX_SCAN_CHARS = 64 * 1024
#: The marking that stands for "too much to review automatically".
_UNREVIEWED = "（含“密”字的文本超过自动审查上限，须人工审查）"


def _scan_value(value: str, where: str, line: int | None, out: dict[tuple[str, str], Marking]) -> None:
    if "密" not in value:  # every marking contains 密; NFKC does not create it from anything else
        return
    text = _normalise(value)
    compact = _WS.sub("", text)
    for i, m in enumerate(_STAR.finditer(compact)):
        if (m.group(0), where) not in out:
            out[m.group(0), where] = Marking(m.group(0), _level_word(m.group(1)), where, line)
        if len(out) >= MAX_MARKINGS or i >= MAX_MARKINGS:  # the first ones of a value say enough
            return
    hits = 0
    for raw_line in text.splitlines():
        if "密" not in raw_line:
            continue
        stripped = raw_line.strip()
        h = _HEADING.match(stripped)
        if h is not None:
            found = _WS.sub("", h.group(0))
            if (found, where) not in out:
                out[found, where] = Marking(found, _level_word(h.group(1)), where, line)
            hits += 1
            if len(out) >= MAX_MARKINGS or hits >= MAX_MARKINGS:
                return


def _path(el: etree._Element, body: etree._Element) -> str:
    parts = []
    node: etree._Element | None = el
    while node is not None and node is not body:
        tag = node.tag
        parts.append(etree.QName(tag).localname if isinstance(tag, str) else "?")
        node = node.getparent()
    return "/" + "/".join(reversed(parts))


_MI_UTF8 = "密".encode()


def find_markings(body: etree._Element, *, holds_mi: bool = False) -> tuple[Marking, ...]:
    """The classification markings in a body element (text, tails, attribute values), by the rule above, in
    document order: every one when there are at most ``MAX_MARKINGS``, else the first ``MAX_MARKINGS``."""
    # Every marking contains 密 (NFKC creates it from nothing else): most bodies are cleared by this one test over
    # their serialisation (text and attribute values alike; 密 is never escaped in Unicode output).
    # ``holds_mi``: the caller found 密 in the canonical bytes already (serialising 4 MiB again costs 10 ms).
    if not holds_mi and "密" not in etree.tostring(body, encoding="unicode", with_tail=False):
        return ()
    elements = list(body.iter(etree.Element))  # elements only: comments and PIs are never read
    found: dict[tuple[str, str], Marking] = {}
    budget = MAX_SCAN_CHARS
    for el in elements:
        text, tail = el.text, el.tail if el is not body else None
        attrs = [(k, v) for k, v in el.attrib.items() if "密" in v]
        if not (text and "密" in text) and not (tail and "密" in tail) and not attrs:
            continue
        budget -= len(text or "") + len(tail or "") + sum(len(v) for _, v in attrs)
        if budget < 0:
            where = _path(el, body) if el is not body else "/"
            level = CLASSIFICATIONS.index("秘密")
            found.setdefault((_UNREVIEWED, where), Marking(_UNREVIEWED, level, where, line_of(el)))
            break
        where = _path(el, body) if el is not body else "/"
        if text:
            _scan_value(text, where, line_of(el), found)
        if tail:
            _scan_value(tail, where + "#tail", line_of(el), found)
        for name, value in attrs:
            _scan_value(str(value), f"{where}/@{etree.QName(name).localname}", line_of(el), found)
        if len(found) >= MAX_MARKINGS:
            break
    if not found and budget >= 0:
        # A marking split over elements (<b>机</b>密★) is whole again in the joined text, in document order.
        joined = "".join(t for t in body.itertext(etree.Element) if isinstance(t, str))
        compact = _WS.sub("", _normalise(joined))
        for m in _STAR.finditer(compact):
            found.setdefault(
                (m.group(0), "(text across elements)"),
                Marking(m.group(0), _level_word(m.group(1)), "(text across elements)"),
            )
            if len(found) >= MAX_MARKINGS:
                break
    return tuple(found.values())


def _body_of(envelope: Envelope, signed_root: etree._Element | None) -> etree._Element | None:
    if signed_root is not None:
        body = signed_root.find(_T_BODY)
        return body if body is not None else signed_root  # no Body: scan everything (fail closed)
    return envelope.body


def gate(
    envelope: Envelope,
    signed_root: etree._Element | None,
    targets: Sequence[Target] | Iterable[Target],
    hub_ceiling: int,
    *,
    signed_bytes: bytes | None = None,
) -> GateResult:
    """Split ``targets`` into allowed and blocked by classification, and look for markings (see module doc).

    ``signed_bytes``, when given, are the exclusive-C14N bytes of ``signed_root`` (``Verified.canonical``): C14N
    writes every character as UTF-8, never as a character reference, so when 密 — which every marking contains,
    NFKC included — is not among them, no text or attribute of the body can hold a marking and the body is not
    serialised again to look."""
    targets = tuple(targets)
    label = envelope.classification
    if label not in CLASSIFICATIONS:
        reason = f"the classification {label[:20]!r} is not one of {', '.join(CLASSIFICATIONS)}; refused (fail closed)"
        return GateResult(len(CLASSIFICATIONS), (), tuple(Blocked(t, reason) for t in targets), ())
    level = CLASSIFICATIONS.index(label)
    if level > hub_ceiling:
        reason = (
            f"the message is {label}; the hub itself may carry at most {CLASSIFICATIONS[hub_ceiling]}, "
            "so it is delivered nowhere"
        )
        return GateResult(level, (), tuple(Blocked(t, reason) for t in targets), ())
    allowed: list[Target] = []
    blocked: list[Blocked] = []
    for t in targets:
        zone_max = ZONE_MAX.get(t.zone)
        if zone_max is None:
            blocked.append(Blocked(t, f"system {t.system} is in an unknown zone {t.zone!r}; refused (fail closed)"))
            continue
        ceiling = min(t.ceiling, zone_max)
        if level > ceiling:
            blocked.append(
                Blocked(
                    t,
                    f"the message is {label}; system {t.system} is in the {t.zone} zone ({ZONE_NAMES[t.zone]}) "
                    f"with ceiling {CLASSIFICATIONS[ceiling]}",
                )
            )
        else:
            allowed.append(t)
    markings: tuple[Marking, ...] = ()
    if level <= 1 and (signed_bytes is None or _MI_UTF8 in signed_bytes):
        # 公开 or 内部: look for classified content under a low label
        body = _body_of(envelope, signed_root)
        if body is not None:
            markings = find_markings(body, holds_mi=signed_bytes is not None)
    return GateResult(level, tuple(allowed), tuple(blocked), markings)


# ---------------------------------------------------------------------- egress


#: The header of an envelope the hub serialised is well inside this many bytes (200 recipients ≈ 20 KiB).
_HEADER_LIMIT = 64 * 1024
_BODY_WORD = re.compile(rb"Body[\s/>]")
_CLASS_WORD = b"Classification"
_NAME_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_LABELS = {c.encode("utf-8"): i for i, c in enumerate(CLASSIFICATIONS)}
_ENV_NS_BYTES = ENV_NS.encode("ascii")


def _refuse(reason: str) -> ClassificationBlocked:
    return ClassificationBlocked(f"egress refused: {reason}", code="GATE_CLASSIFICATION")


def _tag_open(data: bytes | bytearray, i: int) -> int:
    """If the name at ``i`` is the local name of a tag (``<name``, ``<p:name``, ``</name``, ``</p:name``), the
    index of its ``<``, negated for an end tag; else -1 ... (never 0 for an end tag, which cannot start a file)."""
    j = i
    if j > 0 and data[j - 1] == 0x3A:  # ':' after a prefix
        k = j - 1
        while k > 0 and data[k - 1] in _NAME_BYTES:
            k -= 1
        if k == j - 1:
            return -1
        j = k
    if j > 0 and data[j - 1] == 0x3C:  # '<'
        return j - 1
    if j > 1 and data[j - 1] == 0x2F and data[j - 2] == 0x3C:  # '</'
        return -(j - 2) - 2
    return -1


def _header_end(data: bytes | bytearray) -> int:
    limit = min(len(data), _HEADER_LIMIT)
    pos = 0
    while True:
        m = _BODY_WORD.search(data, pos, limit)
        if m is None:
            raise _refuse("no envelope body within the first 64 KiB")
        lt = _tag_open(data, m.start())
        if lt >= 0:
            return lt
        pos = m.start() + 4


def egress_allowed(destination_zone: str, destination_ceiling: int, outgoing_bytes: bytes) -> None:
    """Raise ``ClassificationBlocked`` unless the classification written in ``outgoing_bytes`` fits the destination.

    Independent of the gate: it reads the level from the bytes about to be published (nothing else), clamps the
    destination ceiling to its zone's maximum, and fails closed when anything is unexpected — unknown zone, no
    envelope body start within the first 64 KiB, a header outside the envelope namespace, not exactly one
    Classification start tag in the header, an element that is not exactly ``<q:Classification …>LABEL</q:…>``,
    a label that is not exactly one of the five (whitespace, character references, comments, CDATA or look-alike
    characters included). No parse: literal searches over the header of bytes the hub serialised itself (a few
    microseconds per call)."""
    zone_max = ZONE_MAX.get(destination_zone)
    if zone_max is None:
        raise _refuse(f"unknown destination zone {str(destination_zone)[:20]!r}")
    if isinstance(destination_ceiling, bool) or not isinstance(destination_ceiling, int) or destination_ceiling < 0:
        raise _refuse(f"invalid destination ceiling {destination_ceiling!r}")
    ceiling = min(zone_max, destination_ceiling)
    if not isinstance(outgoing_bytes, (bytes, bytearray)):
        raise _refuse("the outgoing message is not bytes")
    data = outgoing_bytes
    end = _header_end(data)
    if data.find(_ENV_NS_BYTES, 0, end) < 0:
        raise _refuse("the header is not in the envelope namespace")
    opens: list[tuple[int, int]] = []  # (index of '<', index of the local name)
    pos = data.find(_CLASS_WORD, 0, end)
    while pos >= 0:
        lt = _tag_open(data, pos)
        if lt >= 0:
            opens.append((lt, pos))
        pos = data.find(_CLASS_WORD, pos + len(_CLASS_WORD), end)
    if len(opens) != 1:
        raise _refuse("the header does not carry exactly one Classification start tag")
    lt, name_at = opens[0]
    after = name_at + len(_CLASS_WORD)
    gt = data.find(b">", after, end)
    if gt < 0 or data[after] not in b" \t\r\n>" or data.find(b"<", after, gt) >= 0 or data[gt - 1] == 0x2F:
        raise _refuse("the Classification start tag cannot be read")
    close = data.find(b"<", gt + 1, end)
    qname = bytes(data[lt + 1 : after])
    if close < 0 or not data.startswith(b"</" + qname + b">", close):
        raise _refuse("the Classification element cannot be read")
    level = _LABELS.get(bytes(data[gt + 1 : close]))
    if level is None:
        raise _refuse("the classification label is not one of the five levels")
    if level > ceiling:
        raise ClassificationBlocked(
            f"egress refused: the message is {CLASSIFICATIONS[level]}; the destination in the {destination_zone} "
            f"zone ({ZONE_NAMES[destination_zone]}) has ceiling {CLASSIFICATIONS[ceiling]}",
            code="GATE_CLASSIFICATION",
        )
