"""The intake's ordinary behaviour: what it accepts, how it reports what it refuses, its limits, its public
surface, and two properties checked on thousands of mutated messages (the hostile cases of XML-SECURITY.md §7
are in test_intake_hostile.py)."""

from __future__ import annotations

import inspect
import random
import threading
from pathlib import Path

import pytest
from lxml import etree

import hub.envelope
from hub.envelope import intake, parse
from hub.envelope.intake import MAX_NAMESPACES, check_ids
from hub.errors import CODES, UnsafeXml
from hub.settings import PROJECT_ROOT

#: Every sample that is well-formed (invalid samples named ENV_* are meant to fail the intake itself).
SAMPLES = sorted(
    p for p in (PROJECT_ROOT / "schemas" / "services").glob("*/*/samples/*/*.xml") if not p.name.startswith("ENV_")
)
ENV = "urn:forestry-hub:envelope:1"


def code_of(data: bytes, **kwargs: int) -> str:
    with pytest.raises(UnsafeXml) as info:
        parse(data, **kwargs)
    assert info.value.code in CODES
    return info.value.code


# ------------------------------------------------------------------------------------- public surface


def test_public_api_is_pinned() -> None:
    assert set(intake.__all__) == {
        "DEFAULT_MAX_BYTES",
        "MAX_ATTRIBUTES",
        "MAX_DEPTH",
        "MAX_MARKUP",
        "MAX_NAMESPACES",
        "check_ids",
        "parse",
        "parser",
    }
    assert hub.envelope.parse is intake.parse
    sig = inspect.signature(parse)
    assert next(iter(sig.parameters)) == "data"
    for name in ("max_bytes", "max_markup", "max_attributes"):
        assert sig.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["max_bytes"].default == intake.DEFAULT_MAX_BYTES == 4 * 1024 * 1024


def test_only_bytes_are_parsed() -> None:
    data = b"<r>\xe6\x9e\x97</r>"
    for value in (data, bytearray(data), memoryview(data)):
        assert parse(value).text == "林"
    with pytest.raises(TypeError):
        parse(data.decode())  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ what is accepted, and how


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: f"{p.parts[-5]}/{p.parent.name}/{p.name}")
def test_every_sample_parses_to_the_same_tree_as_plain_lxml(path: Path) -> None:
    """The hardening changes nothing for a legitimate message (comments and PIs aside, which it drops)."""
    data = path.read_bytes()
    plain = etree.fromstring(data, etree.XMLParser(remove_comments=True, remove_pis=True))
    assert etree.tostring(parse(data)) == etree.tostring(plain)


def test_comments_are_dropped() -> None:
    root = parse(b"<!-- before --><r><a>1<!-- c --></a></r><!-- after -->")
    assert root.getprevious() is None and root.getnext() is None
    assert [el.tag for el in root.iter()] == ["r", "a"]
    assert root[0].text == "1"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b'<?xml-stylesheet href="x.xsl"?><r/>', 1),
        (b'<?xml version="1.0" encoding="UTF-8"?>\n<?xml-stylesheet href="x.xsl"?><r/>', 2),
        (b"<r>\n<a>1</a><?pi data?></r>", 2),
        (b"<r/>\n\n<?after?>", 3),
        (b"<r><!-- <? --><![CDATA[ <?x?> ]]>\n<?real?></r>", 2),
    ],
)
def test_processing_instructions_are_refused(data: bytes, line: int) -> None:
    """Exclusive C14N keeps PIs (a standard verifier digests them), so a message with one is refused, never
    silently changed: what the hub stores must verify with xmlsec1."""
    with pytest.raises(UnsafeXml) as info:
        parse(data)
    assert (info.value.code, info.value.line) == ("ENV_PI", line)


def test_pi_lookalikes_in_comments_and_cdata_are_text() -> None:
    root = parse(b'<?xml version="1.0"?><r><!-- <?x?> --><![CDATA[<?y?>]]></r>')
    assert root.text == "<?y?>"


def test_namespace_declarations_are_bounded() -> None:
    at_limit = b"<r" + b"".join(b' xmlns:n%d="u:%d"' % (i, i) for i in range(MAX_NAMESPACES)) + b"/>"
    assert len(parse(at_limit).nsmap) == MAX_NAMESPACES
    spread = b"<r>" + b'<a xmlns="u:a"/>' * (MAX_NAMESPACES + 1) + b"</r>"
    for data in (at_limit.replace(b"/>", b' xmlns:x="u"/>'), spread):
        with pytest.raises(UnsafeXml) as info:
            parse(data)
        assert info.value.code == "ENV_NAMESPACES"
    # "xmlns" in text is not a declaration: counted exactly when the bytes hold it more often than the limit.
    assert parse(b"<r>" + b"xmlns:x=&quot;u&quot; " * (MAX_NAMESPACES * 2) + b"</r>").tag == "r"


def test_a_comment_cannot_truncate_a_value() -> None:
    """Comment truncation (Duo 2018): the text around a comment is one value, not the part before it."""
    root = parse(b"<r><c>\xe7\xa7\x98<!---->\xe5\xaf\x86</c></r>")
    assert root[0].text == "秘密"


def test_cdata_becomes_plain_text() -> None:
    root = parse(b"<r><![CDATA[a < b]]> &amp; c</r>")
    assert root.text == "a < b & c"
    assert etree.tostring(root) == b"<r>a &lt; b &amp; c</r>"


def test_character_references_and_predefined_entities_are_fine() -> None:
    assert parse(b"<r>&#x6797;&#26519;&lt;&gt;&amp;&quot;&apos;</r>").text == "林林<>&\"'"


def test_a_stylesheet_pi_at_the_start_is_not_mistaken_for_the_declaration() -> None:
    with pytest.raises(UnsafeXml) as info:  # refused as a PI, not as a declaration naming GBK
        parse(b'<?xml-stylesheet encoding="GBK" href="x"?><r/>')
    assert info.value.code == "ENV_PI"


def test_usual_and_unusual_utf8_declarations() -> None:
    for decl in (
        b'<?xml version="1.0" encoding="UTF-8"?>',
        b"<?xml version='1.0' encoding='UTF-8'?>",
        b'<?xml version="1.0" encoding = "utf-8" standalone="yes"?>',
        b'<?xml version="1.0"\n  encoding="UTF8"?>',
        b'<?xml version="1.0"?>',
    ):
        assert parse(decl + b"\n<r/>").tag == "r"


# ------------------------------------------------------------------------------------ how refusals read


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "ENV_EMPTY"),
        (b"\xef\xbb\xbf", "ENV_EMPTY"),
        (b" \r\n\t ", "ENV_EMPTY"),
        (b"\xef\xbb\xbf  \n", "ENV_EMPTY"),
        (b"hello", "ENV_MALFORMED"),
        (b"<r><a></r>", "ENV_MALFORMED"),
        (b"<r/><r/>", "ENV_MALFORMED"),
        (b"<p:r/>", "ENV_MALFORMED"),
        (b"<r a='1' a='2'/>", "ENV_MALFORMED"),
        (b" <?xml version='1.0'?><r/>", "ENV_MALFORMED"),
        (b"<r>\x01</r>", "ENV_MALFORMED"),
        (b"<r>&#0;</r>", "ENV_MALFORMED"),
        (b"<r>\xef\xbf\xbe</r>", "ENV_MALFORMED"),
        (b"<r>&undefined;</r>", "ENV_DOCTYPE"),
        (b"<r>\x00</r>", "ENV_ENCODING"),
    ],
    ids=[
        "empty",
        "bom-only",
        "white-space-only",
        "bom-and-white-space",
        "text-only",
        "mismatched-tags",
        "two-roots",
        "undeclared-prefix",
        "repeated-attribute",
        "declaration-not-first",
        "control-character",
        "nul-character-reference",
        "u-fffe",
        "undefined-entity",
        "nul-byte",
    ],
)
def test_refusals_have_specific_codes(data: bytes, code: str) -> None:
    assert code_of(data) == code


def test_malformed_report_is_one_line_with_line_and_column() -> None:
    data = b'<?xml version="1.0" encoding="UTF-8"?>\n<r>\n  <a>\n  </b>\n</r>'
    with pytest.raises(UnsafeXml) as info:
        parse(data)
    exc = info.value
    assert exc.code == "ENV_MALFORMED"
    assert exc.line == 4
    assert "\n" not in exc.describe()
    assert "(column" in exc.detail and ", line 4, column" not in exc.detail
    assert exc.describe().startswith("ENV_MALFORMED: 报文不是格式良好的 XML — not well-formed XML: ")


def test_parser_messages_never_span_lines() -> None:
    """libxml2 ends some messages with a newline; a CLI line or a hub.error reason must stay one line."""
    with pytest.raises(UnsafeXml) as info:
        parse(b'<r a="' + b"x" * (10 * 1024 * 1024 + 1) + b'"/>', max_bytes=64 * 1024 * 1024)
    assert info.value.code == "ENV_LIMIT"
    assert "\n" not in info.value.describe()


def test_doctype_error_carries_its_line() -> None:
    with pytest.raises(UnsafeXml) as info:
        parse(b'<?xml version="1.0"?>\n\n<!DOCTYPE r>\n<r/>')
    assert (info.value.code, info.value.line) == ("ENV_DOCTYPE", 3)


def test_nul_error_carries_its_line() -> None:
    with pytest.raises(UnsafeXml) as info:
        parse(b"<r>\n\n<a>\x00</a></r>")
    assert (info.value.code, info.value.line) == ("ENV_ENCODING", 3)


# ------------------------------------------------------------------------------------------------- limits


def _elements(n: int) -> bytes:
    """A root with ``n - 1`` empty children: exactly ``n`` markup items (``<``), padded to beat the size skip."""
    return b"<r>" + b"<a/>" * (n - 2) + b"</r>"


def test_markup_limit_boundary() -> None:
    assert len(parse(_elements(100), max_markup=100)) == 98
    assert code_of(_elements(101), max_markup=100) == "ENV_LIMIT"


def test_attribute_limit_boundary_counts_namespace_declarations() -> None:
    attrs = b" ".join(b'a%d="%d"' % (i, i) for i in range(40))
    nsdecls = b" ".join(b'xmlns:p%d="urn:%d"' % (i, i) for i in range(10))
    data = b"<r " + attrs + b" " + nsdecls + b">" + b"x" * 400 + b"</r>"
    assert len(parse(data, max_attributes=50).attrib) == 40
    assert code_of(data, max_attributes=49) == "ENV_LIMIT"


def test_equals_signs_in_text_are_not_attributes() -> None:
    """Text may hold any number of ``=`` (formulas, base64 padding); only ``=`` before a quote or space counts."""
    data = b'<r a="1">' + b"x=y;a==b;" * 2000 + b"</r>"
    assert parse(data, max_attributes=10).get("a") == "1"


def test_limits_cost_nothing_for_small_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message too small to exceed a limit is not even counted (every item takes at least 3 or 4 bytes)."""
    calls: list[bytes] = []
    real = intake._occurs_more_than

    def spy(data: bytes, char: bytes, limit: int) -> int:
        calls.append(char)
        return real(data, char, limit)

    monkeypatch.setattr(intake, "_occurs_more_than", spy)
    parse(SAMPLES[0].read_bytes())
    assert calls == []
    parse(_elements(100), max_markup=100, max_attributes=10)
    assert calls == [b"<", b"="]


def test_occurrence_counter_settles_sparse_data_without_a_full_count() -> None:
    data = b"<r>" + b"A" * 1_000_000 + b"</r>"
    assert intake._occurs_more_than(data, b"<", 10) == 0
    assert intake._occurs_more_than(data, b"<", 1) == 2
    dense = b"<a/>" * 5000
    assert intake._occurs_more_than(dense, b"<", 4999) == 5000
    assert intake._occurs_more_than(dense, b"<", 5000) == 0


# -------------------------------------------------------------------------------------------- threads


def test_each_thread_has_its_own_parser_and_parses_correctly() -> None:
    data = SAMPLES[0].read_bytes()
    expected = etree.tostring(parse(data))
    # The parsers themselves are kept (not their id(), not by thread ident): a finished thread's parser could
    # otherwise be freed and its id (or the thread's ident) reused by another thread, which made this test fail
    # now and then.
    parsers: list[etree.XMLParser] = []
    failures: list[BaseException] = []

    def work() -> None:
        try:
            parsers.append(intake.parser())
            assert intake.parser() is intake.parser()
            for _ in range(200):
                assert etree.tostring(parse(data)) == expected
        except BaseException as exc:  # reported below; a thread cannot fail the test by itself
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len({id(p) for p in parsers}) == 6


def test_the_parser_refuses_to_load_even_the_document_itself(tmp_path: Path) -> None:
    """``parser()`` is for bytes: its resolver refuses every load, a file name included."""
    path = tmp_path / "m.xml"
    path.write_bytes(b"<r/>")
    with pytest.raises(UnsafeXml) as info:
        etree.parse(str(path), intake.parser())
    assert info.value.code == "ENV_DOCTYPE"


# -------------------------------------------------------------------------------------- properties (fuzz)


def _mutants(seed: int, count: int, alphabet: bytes, *, delete: bool = True) -> list[bytes]:
    rng = random.Random(seed)
    base = [p.read_bytes() for p in SAMPLES if "/valid/" in p.as_posix()][:6]
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            op = rng.randrange(3 if delete else 2)
            byte = rng.choice(alphabet)
            if op == 0:
                data[pos] = byte
            elif op == 1:
                data.insert(pos, byte)
            else:
                del data[pos]
        out.append(bytes(data))
    return out


def test_property_invalid_utf8_is_always_an_encoding_error() -> None:
    """High bytes put into real messages (nothing removed): ENV_ENCODING exactly when the result is not UTF-8."""
    checked = 0
    for data in _mutants(20251128, 1500, bytes(range(0x80, 0x100)), delete=False):
        try:
            data.decode("utf-8")
            valid_utf8 = True
        except UnicodeDecodeError:
            valid_utf8 = False
        try:
            parse(data)
            code = None
        except UnsafeXml as exc:
            code = exc.code
        assert (code == "ENV_ENCODING") is (not valid_utf8), (code, data)
        checked += not valid_utf8
    assert checked > 1000


def test_property_anything_goes_in_only_unsafexml_comes_out() -> None:
    """Any bytes: a tree of UTF-8 text without DOCTYPE, or an UnsafeXml with a registered code; nothing else."""
    alphabet = bytes(range(256)) + b"<>!&;=\"'?/-[]%" * 8
    accepted = 0
    for data in _mutants(7, 2500, alphabet):
        try:
            root = parse(data)
        except UnsafeXml as exc:
            assert exc.code in CODES and exc.code.startswith("ENV_")
            assert "\n" not in exc.describe()
            continue
        accepted += 1
        data.decode("utf-8")
        assert root.getroottree().docinfo.internalDTD is None
        assert next(root.iter(etree.Entity, etree.Comment, etree.PI), None) is None
    assert accepted > 100


# ------------------------------------------------------------------------------------------- check_ids


def test_check_ids_accepts_unique_identifiers() -> None:
    check_ids(parse(b'<r Id="a"><x ID="b"/><y id="c"/><z xml:id="d"/><w xmlns:p="urn:p" p:Id="e"/></r>'))
    check_ids(parse(b"<r/>"))


def test_check_ids_names_both_attributes_and_the_first_line() -> None:
    root = parse(b'<r>\n<x Id="same"/>\n<y xml:id="same"/>\n</r>')
    with pytest.raises(UnsafeXml) as info:
        check_ids(root)
    exc = info.value
    assert exc.code == "ENV_DUPLICATE_ID"
    assert exc.line == 2
    assert "attribute Id on line 2 and xml:id on line 3" in exc.detail


def test_check_ids_ignores_other_attributes_with_equal_values() -> None:
    check_ids(parse(b'<r Id="a"><x name="a" ref="a" uid="a" Ident="a"/></r>'))


def test_check_ids_sees_namespaced_identifiers() -> None:
    with pytest.raises(UnsafeXml) as info:
        check_ids(parse(b'<r xmlns:wsu="urn:wsu" wsu:Id="k"><x Id="k"/></r>'))
    assert "{urn:wsu}Id" in info.value.detail


def test_root_of_a_valid_sample_is_an_envelope() -> None:
    root = parse(next(p for p in SAMPLES if "/valid/" in p.as_posix()).read_bytes())
    assert root.tag == f"{{{ENV}}}Envelope"
