"""The classification gate (信息审核: "classified material must never go online"). Pure, fail closed.

``gate()`` runs in the pipeline after the router, on the *signed* content only:

* the message's 密级 must not exceed the hub's own ceiling — otherwise every target is blocked;
* for each target, the level must not exceed the target's ceiling, itself clamped to its zone's maximum
  (internet 公开, extranet 内部, internal = accreditation) — otherwise that target is blocked
  (``GATE_CLASSIFICATION``, with a reason naming the zone and the ceiling);
* a message below 绝密 whose content carries a classification marking *above its own label* (any marking under
  公开 or 内部; 机密 or 绝密 under 秘密; 绝密 under 机密) is to be quarantined (``.quarantine``) until a person
  releases or rejects it — the same decision as for a public message with a marking: the label may be wrong, or the
  marking a quotation, and only a person can tell; ``.allowed`` then lists the targets it may reach on release (by
  its label). A message's own marking (秘密★1年 in a 秘密 message) or a lower one is not a stop.

What is read: every text node, tail and attribute value of the body, the decoded content of its text attachments
(a ``MediaType`` of ``text/…`` beside a base64 ``Content``: UTF-8 text by the services' schemas; content that is not
base64 of UTF-8 is quarantined as unreadable — fail closed), and the header's free text delivered to every recipient
(``BusinessRef``, the only free-text field of the envelope header; the others are identifiers, codes, timestamps and
enumerations).

Marking rule (what counts as a 密级 marking, GB/T 9704-2012 §7.2.2 "密级和保密期限"): each value is normalised (NFKC
per character; every Default_Ignorable_Code_Point, format character (Cf) and combining mark (Mn, Me) removed —
zero-width characters, soft hyphen, variation selectors, tag characters, bidi controls — beyond the BMP as well; the
blank characters U+2800 and the Hangul fillers U+115F, U+1160, U+3164, U+FFA0 read as spaces) and

1. the star form anywhere: ``秘密★``, ``机密★10年``, ``绝密★长期`` — the separator being ★ or any star- or
   asterisk-shaped symbol (☆ ✩ ⭐ ✦ ✪ ⋆ ∗ ✱ *, …: ``_STARS``), with whitespace between the characters allowed —
   the star is the official separator between level and period, and ordinary prose does not contain it. All
   whitespace is ignored, line breaks (NEL, U+2028 … too) included, and the star form is also searched in the whole
   body text joined across elements, so neither a line break nor an element boundary hides it (``机密\n★10年``,
   ``<b>机</b>密★``, ``<b>机密</b><b>★</b>``). Fail closed: a paragraph ending 保守国家秘密 followed by one beginning
   with a ★ bullet reads as 秘密★ and the message is held for a person;
2. a bare ``绝密``, ``机密`` or ``秘密`` in a heading position: a line (or the whole value) that begins with the
   level word, optionally bracketed (【机密】 〔机密〕 〖机密〗 「机密」 『机密』 [机密] (机密)) and optionally
   followed by a period (``机密 10年``, ``机密★10年``, ``机密：10年``), and then ends or continues after whitespace —
   the place where GB/T 9704 prints the marking.

Traditional and variant forms (絕密, 絶密, 機密, 祕密, 長期, 個月) count as well.

Words inside running text are *not* markings: 保守国家秘密 ("keep state secrets"), 国家秘密, 商业秘密,
涉密、机密性 and the like appear in ordinary documents and must not stop them.

``egress_allowed()`` is the second, independent check at the moment of publishing to a lower zone: it re-reads
the classification from the outgoing bytes themselves and trusts nothing else.
"""

from __future__ import annotations

import binascii
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
_T_HEADER = qn("Header")
#: Free text of the header that is delivered to every recipient (the only ``ShortText`` of the envelope schema; every
#: other header field is an identifier, a code, a timestamp or an enumeration).
_T_HEADER_TEXT = (qn("BusinessRef"),)

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties), listed: invisible, so they could split a marking.
# Every format character (Cf) and combining mark (Mn, Me) is removed as well (``_dropped``): a mark between 机 and 密
# hides the marking from a pattern and hardly from a reader.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),  # Mongolian free variation selectors and vowel separator
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),  # tag characters, variation selectors supplement
)
#: Blank characters that are not ``\s``: read as a space (Hangul fillers, the blank braille pattern).
_BLANKS = (0x115F, 0x1160, 0x2800, 0x3164, 0xFFA0)
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})


def _dropped(c: int) -> bool:
    return unicodedata.category(chr(c)) in _DROPPED_CATEGORIES or any(lo <= c <= hi for lo, hi in _IGNORABLE_RANGES)


def _clean(text: str) -> str:
    """``text`` without ignorable characters, blanks as spaces (applied to what NFKC makes of one character)."""
    return "".join(" " if ord(ch) in _BLANKS else "" if _dropped(ord(ch)) else ch for ch in text)


_WS = re.compile(r"\s+")
# Simplified and traditional/variant forms (絕密, 絶密, 機密, 祕密) of the three level words, by level.
_FIRST = {2: "秘祕", 3: "机機", 4: "绝絕絶"}
_PERIOD = r"(?:长期|長期|[0-9]{1,3}(?:年|个月|個月))"
_SIMPLIFIED = str.maketrans({"絕": "绝", "絶": "绝", "機": "机", "祕": "秘"})
#: The star separator and its look-alikes: every star- or asterisk-shaped symbol (Unicode names with STAR or ASTERISK,
#: symbol blocks; compound signs such as STAR EQUALS, STAR AND CRESCENT or NIGHT WITH STARS left out). Full-width and
#: small asterisks are ``*`` after NFKC.
_STARS = (
    "*\u066d\u204e\u2051\u2217\u229b\u22c6\u235f\u2605\u2606\u269d\u2721\u2722\u2723\u2724\u2725\u2726\u2727"
    "\u2729\u272a\u272b\u272c\u272d\u272e\u272f\u2730\u2731\u2732\u2733\u2734\u2735\u2736\u2737\u2738\u2739"
    "\u273a\u273b\u273c\u273d\u2742\u2743\u2749\u274a\u274b\u29c6\u2b50\u2b51\u2b52\u2be8\u2be9\u2bea\u2beb"
    "\ua673\U00010af0\U0001f31f\U0001f320\U0001f52f"
    "\U0001f7af-\U0001f7d4"
)
_STAR_CLASS = "[" + _STARS.replace("*", r"\*") + "]"
_OPEN = "[\\[(【〔〖「『〈《]"
_CLOSE = "[\\])】〕〗」』〉》]"


def _level_words(label: int, gap: str) -> str:
    """The level words above ``label``, ``gap`` allowed between their two characters."""
    return "(" + "|".join(f"[{_FIRST[lv]}]{gap}密" for lv in sorted(_FIRST, reverse=True) if lv > label) + ")"


def _star_rule(label: int) -> re.Pattern[str]:
    # Applied to the compact text (no whitespace at all: across lines and elements).
    return re.compile(_level_words(label, "") + _STAR_CLASS + f"({_PERIOD})?")


def _heading_rule(label: int) -> re.Pattern[str]:
    # Applied to one stripped line.
    return re.compile(
        f"{_OPEN}?\\s*" + _level_words(label, "\\s*") + f"\\s*{_CLOSE}?"
        f"(?:\\s*(?:{_STAR_CLASS}|:)?\\s*({_PERIOD}))?(?=\\s|$)"
    )


#: The rules for each label that is scanned (公开 … 机密): markings of a level above the label.
_RULES = {label: (_star_rule(label), _heading_rule(label)) for label in range(len(CLASSIFICATIONS) - 1)}


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
    """NFKC one character at a time, ignorable characters (and what NFKC makes of one) deleted, blanks made spaces.
    Per character is what NFKC does outside combining sequences, and no marking character (the level words, the
    stars, digits, 年/月/长期) composes from one. A regular expression finds the characters that change (about 5,000
    of the BMP, made on first use in 50 ms, and any character beyond it); only they reach Python: on Chinese text,
    whose full-width punctuation always needs NFKC, this is 20 times faster than ``unicodedata.normalize`` (680 ns a
    character there)."""

    _pattern: ClassVar[re.Pattern[str] | None] = None
    #: Text that needs more than NFKC: an ignorable character, a blank, or any character beyond the BMP.
    _special: ClassVar[re.Pattern[str] | None] = None
    _table: ClassVar[dict[str, str]] = {}

    @classmethod
    def special(cls) -> re.Pattern[str]:
        if cls._special is None:
            cls._build()
        assert cls._special is not None
        return cls._special

    @classmethod
    def _build(cls) -> None:
        table: dict[str, str] = {}
        special: list[int] = []
        for c in range(0x10000):
            if 0xD800 <= c <= 0xDFFF:
                continue
            ch = chr(c)
            if c in _BLANKS or _dropped(c):
                special.append(c)
                table[ch] = " " if c in _BLANKS else ""
                continue
            mapped = unicodedata.normalize("NFKC", ch)
            if mapped != ch:
                table[ch] = _clean(mapped)
        cls._table = table
        cls._pattern = re.compile(f"[{_ranges(sorted(map(ord, table)))}\U00010000-\U0010ffff]")
        cls._special = re.compile(f"[{_ranges(special)}\U00010000-\U0010ffff]")

    @classmethod
    def apply(cls, text: str) -> str:
        if cls._pattern is None:
            cls._build()
        assert cls._pattern is not None
        return cls._pattern.sub(cls._replace, text)

    @classmethod
    def _replace(cls, m: re.Match[str]) -> str:
        ch = m.group()
        mapped = cls._table.get(ch)
        if mapped is None:  # beyond the BMP: rare, computed each time (nothing unbounded is cached)
            mapped = "" if _dropped(ord(ch)) else _clean(unicodedata.normalize("NFKC", ch))
        return mapped


def _normalise(text: str) -> str:
    """NFKC without the ignorable characters, blanks as spaces. Text that is NFKC already and holds none of them nor
    any character beyond the BMP (a C-speed check each) is returned as it is."""
    if unicodedata.is_normalized("NFKC", text) and _Compatibility.special().search(text) is None:
        return text
    return _Compatibility.apply(text)


def _compact(text: str) -> str:
    """Normalised text without any whitespace, line breaks included: the star rule reads across lines and elements
    (fail closed). A line break as a boundary let ``机密\n★10年``, ``机密\x85★10年`` (NEL, shown as nothing by many
    viewers) and ``<b>机密</b><b>★</b>`` through; its price is that a paragraph ending 保守国家秘密 before one starting
    with ★ is held for a person."""
    return _WS.sub("", text)


def _level_word(word: str) -> int:
    return CLASSIFICATIONS.index(_WS.sub("", word).translate(_SIMPLIFIED))


#: Markings reported per message. One is enough to quarantine it; a few more show the security officer where to
#: look. A body dense with markings (an insider's 4 MiB of 秘密★) would otherwise make one Marking per occurrence:
#: 167,000 of them, 0.7 s of the gate and as many rows in the quarantine record.
MAX_MARKINGS = 20
#: Characters of text holding 密 that the gate reads per message (NFKC-normalised — Chinese punctuation is
#: full-width, so most Chinese text needs it — and searched line by line: about 0.15 µs a character), the decoded
#: text attachments holding 密 included. Past it the message is quarantined as not reviewable automatically (fail
#: closed): 64 K characters is some thirty pages of running text that mentions 密 in every paragraph.
MAX_SCAN_CHARS = 64 * 1024
#: The marking that stands for "too much to review automatically".
_UNREVIEWED = "（含“密”字的文本超过自动审查上限，须人工审查）"
#: The marking that stands for "a text attachment that cannot be read" (not base64 of UTF-8 text).
_UNREADABLE = "（文本附件不能按 UTF-8 解码，须人工审查）"


def _unreviewed_level(label: int) -> int:
    """The level given to a fail-closed marking: above the label, 秘密 at least."""
    return max(CLASSIFICATIONS.index("秘密"), label + 1)


def _scan_value(value: str, where: str, line: int | None, out: dict[tuple[str, str], Marking], label: int) -> None:
    if "密" not in value:  # every marking contains 密; NFKC does not create it from anything else
        return
    star, heading = _RULES[label]
    text = _normalise(value)
    for i, m in enumerate(star.finditer(_compact(text))):
        found = m.group(0)
        if (found, where) not in out:
            out[found, where] = Marking(found, _level_word(m.group(1)), where, line)
        if len(out) >= MAX_MARKINGS or i >= MAX_MARKINGS:  # the first ones of a value say enough
            return
    hits = 0
    for raw_line in text.splitlines():
        if "密" not in raw_line:
            continue
        h = heading.match(raw_line.strip())
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
#: Every text attachment's media type holds it (text/plain, text/csv): the pre-filter for reading attachments.
_TEXT_MEDIA_UTF8 = b"text/"


def _text_attachments(body: etree._Element) -> list[etree._Element]:
    """The ``Content`` elements of the body's attachments whose ``MediaType`` is text (text/plain, text/csv): base64
    of UTF-8 text (the services' schemas), which a recipient reads as text."""
    contents: list[etree._Element] = []
    for media in body.iter("{*}MediaType"):
        if (media.text or "").strip().startswith("text/"):
            parent = media.getparent()
            if parent is not None:
                contents.extend(parent.iterchildren("{*}Content"))
    return contents


def _decoded(content: etree._Element) -> str | None:
    """The text of a text attachment, or None when it is not base64 of UTF-8."""
    try:
        return binascii.a2b_base64(content.text or "").decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError; so is non-ASCII base64 text
        return None


def find_markings(
    body: etree._Element,
    *,
    holds_mi: bool = False,
    label: int = 0,
    header: Sequence[etree._Element] = (),
    text: bool = True,
    attachments: bool = True,
) -> tuple[Marking, ...]:
    """The classification markings of a level above ``label`` in a body element (text, tails, attribute values, text
    attachments decoded) and in the given ``header`` fields, by the rule above, in document order: every one when
    there are at most ``MAX_MARKINGS``, else the first ``MAX_MARKINGS``.

    ``holds_mi``: the caller found 密 in the canonical bytes already (serialising 4 MiB again costs 10 ms);
    ``text=False``: the caller found no 密 in them (no text or attribute can hold a marking: only attachments are
    read); ``attachments=False``: the caller found no text media type in them."""
    star, _ = _RULES[label]
    found: dict[tuple[str, str], Marking] = {}
    budget = MAX_SCAN_CHARS
    for field in header:
        if field.text:
            _scan_value(field.text, f"(header)/{etree.QName(field).localname}", line_of(field), found, label)
    # Every marking contains 密 (NFKC creates it from nothing else): most bodies are cleared by this one test over
    # their serialisation (text and attribute values alike; 密 is never escaped in Unicode output).
    if text and not holds_mi and "密" not in etree.tostring(body, encoding="unicode", with_tail=False):
        text = False
    if text:
        for el in body.iter(etree.Element):  # elements only: comments and PIs are never read
            value, tail = el.text, el.tail if el is not body else None
            attrs = [(k, v) for k, v in el.attrib.items() if "密" in v]
            if not (value and "密" in value) and not (tail and "密" in tail) and not attrs:
                continue
            budget -= len(value or "") + len(tail or "") + sum(len(v) for _, v in attrs)
            where = _path(el, body) if el is not body else "/"
            if budget < 0:
                unreviewed = Marking(_UNREVIEWED, _unreviewed_level(label), where, line_of(el))
                found.setdefault((_UNREVIEWED, where), unreviewed)
                break
            if value:
                _scan_value(value, where, line_of(el), found, label)
            if tail:
                _scan_value(tail, where + "#tail", line_of(el), found, label)
            for name, v in attrs:
                _scan_value(str(v), f"{where}/@{etree.QName(name).localname}", line_of(el), found, label)
            if len(found) >= MAX_MARKINGS:
                break
    if attachments and budget >= 0 and len(found) < MAX_MARKINGS:
        for content in _text_attachments(body):
            where = _path(content, body)
            decoded = _decoded(content)
            if decoded is None:
                found.setdefault((_UNREADABLE, where), Marking(_UNREADABLE, _unreviewed_level(label), where))
            elif "密" in decoded:
                budget -= len(decoded)
                if budget < 0:
                    found.setdefault((_UNREVIEWED, where), Marking(_UNREVIEWED, _unreviewed_level(label), where))
                    break
                _scan_value(decoded, where, line_of(content), found, label)
            if len(found) >= MAX_MARKINGS:
                break
    if text and not found and budget >= 0:
        # A marking split over elements (<b>机</b>密★, <b>机密</b><b>★</b>) is whole again in the joined text, in
        # document order (``_compact`` drops the line breaks joining them).
        joined = "\n".join(t for t in body.itertext(etree.Element) if isinstance(t, str))
        for m in star.finditer(_compact(_normalise(joined))):
            marking = m.group(0)
            found.setdefault(
                (marking, "(text across elements)"),
                Marking(marking, _level_word(m.group(1)), "(text across elements)"),
            )
            if len(found) >= MAX_MARKINGS:
                break
    return tuple(found.values())


def _body_of(envelope: Envelope, signed_root: etree._Element | None) -> etree._Element | None:
    if signed_root is not None:
        body = signed_root.find(_T_BODY)
        return body if body is not None else signed_root  # no Body: scan everything (fail closed)
    return envelope.body


def _header_fields(envelope: Envelope, signed_root: etree._Element | None) -> list[etree._Element]:
    """The header's free-text fields delivered to every recipient (BusinessRef), from the signed tree."""
    if signed_root is not None:
        header = signed_root.find(_T_HEADER)
        if header is None:
            return []
        return [el for tag in _T_HEADER_TEXT for el in header.iterchildren(tag)]
    if envelope.business_ref:
        field = etree.Element(_T_HEADER_TEXT[0])
        field.text = envelope.business_ref
        return [field]
    return []


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
    if level < len(CLASSIFICATIONS) - 1:
        # Below 绝密: look for content marked above its label (any marking under 公开 or 内部).
        mi = signed_bytes is None or _MI_UTF8 in signed_bytes
        # a text attachment's content is base64: 密 is not in the bytes, its media type is (read anyway when mi)
        media = mi or (signed_bytes is not None and _TEXT_MEDIA_UTF8 in signed_bytes)
        if mi or media:
            body = _body_of(envelope, signed_root)
            if body is not None:
                markings = find_markings(
                    body,
                    holds_mi=signed_bytes is not None,
                    label=level,
                    header=_header_fields(envelope, signed_root) if mi else (),
                    text=mi,
                    attachments=media,
                )
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
