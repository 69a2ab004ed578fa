"""Hostile input against the hub's intake: XML-SECURITY.md §7 items 2–9.

Every case is rejected with a specific code, in under 1 s and under 100 MB of extra memory, and opens no file
and no connection:

* every external reference points at a loopback TCP listener, a loopback HTTP server (which would answer with
  the canary's content) or a canary file watched with inotify; after each case the listeners must have seen
  no connection, the canary no open, and neither the error, the logs nor the tree may contain the canary's
  secret (positive controls below prove each probe can see what it looks for);
* heavy inputs run in a child process each, which reports the growth of its peak resident set over the parse
  (lxml allocates in C, invisible to tracemalloc), beside tracemalloc's Python-side peak;
* DOCTYPE cases run twice: through ``parse`` and with the byte gate switched off, to show that the hardened
  parser alone also refuses them without reading anything (its resolver refuses every external load).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostile.heavy import CASES as HEAVY_CASES
from hostile.probes import Canary, Listener
from lxml import etree

from hub.envelope import intake, parse, to_bytes
from hub.errors import SchemaViolation, UnsafeXml
from hub.settings import PROJECT_ROOT
from hub.validation import SchemaRegistry

MiB = 1024 * 1024
LIMIT_SECONDS = 1.0
LIMIT_BYTES = 100 * MiB
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XI = "http://www.w3.org/2001/XInclude"
ENV = "urn:forestry-hub:envelope:1"
DS = "http://www.w3.org/2000/09/xmldsig#"


# ----------------------------------------------------------------------------------------------- probes


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Canary]:
    c = Canary(tmp_path_factory.mktemp("canary"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def schema_canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Canary]:
    """A schema that would make any envelope valid, if a location hint were ever followed."""
    c = Canary(tmp_path_factory.mktemp("xsd"), "evil.xsd")
    secret = c.secret
    c.body = (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:forestry-hub:envelope:1">'
        f'<xs:element name="Envelope"><xs:annotation><xs:documentation>{secret}</xs:documentation>'
        "</xs:annotation></xs:element></xs:schema>"
    ).encode()
    c.path.write_bytes(c.body)
    c.touched()
    yield c
    c.close()


@pytest.fixture(scope="module")
def tcp(canary: Canary) -> Iterator[Listener]:
    listener = Listener(canary, http=False)
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def web(canary: Canary) -> Iterator[Listener]:
    listener = Listener(canary, http=True)
    yield listener
    listener.close()


@dataclass
class Refs:
    """Where hostile documents point, and the check that nothing went there."""

    canary: Canary
    schema_canary: Canary
    tcp: Listener
    web: Listener
    caplog: pytest.LogCaptureFixture
    tcp_before: int
    web_before: int

    @property
    def secrets(self) -> tuple[str, str]:
        return self.canary.secret, self.schema_canary.secret

    def assert_untouched(self, *texts: str) -> None:
        assert self.canary.touched() == [], "the canary file was opened or read"
        assert self.schema_canary.touched() == [], "the canary schema was opened or read"
        assert self.tcp.connections() == self.tcp_before, "a connection reached the TCP listener"
        assert self.web.connections() == self.web_before, "a connection reached the HTTP listener"
        for secret in self.secrets:
            assert secret not in self.caplog.text, "the canary's content reached the logs"
            for text in texts:
                assert secret not in text, "the canary's content reached an output"


@pytest.fixture
def refs(canary: Canary, schema_canary: Canary, tcp: Listener, web: Listener, caplog: pytest.LogCaptureFixture) -> Refs:
    caplog.set_level(logging.DEBUG)
    canary.touched()
    schema_canary.touched()
    return Refs(canary, schema_canary, tcp, web, caplog, tcp.connections(), web.connections())


@pytest.fixture
def no_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch the byte gate off: what does the hardened parser alone do with the same bytes?"""
    monkeypatch.setattr(intake, "_byte_gate", lambda *args: (True, -1))  # vouches for nothing: the tree is checked


def reject(data: bytes, code: str, refs: Refs, **kwargs: int) -> UnsafeXml:
    """``parse`` refuses ``data`` with ``code``, fast, lean, without touching the canary or the listeners."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(UnsafeXml) as info:
            parse(data, **kwargs)
        elapsed = time.perf_counter() - t0
        py_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    exc = info.value
    assert exc.code == code, exc.describe()
    assert elapsed < LIMIT_SECONDS, f"{elapsed:.3f} s"
    assert py_peak < LIMIT_BYTES
    assert "\n" not in exc.describe()
    refs.assert_untouched(str(exc), exc.detail, exc.describe(), repr(exc))
    return exc


# ------------------------------------------------------------------------------------ probe controls


def test_canary_probe_sees_an_open(canary: Canary) -> None:
    canary.touched()
    canary.path.read_bytes()
    assert canary.touched(), "inotify did not report an open of the canary file"


def test_tcp_probe_sees_a_connection(tcp: Listener) -> None:
    before = tcp.connections()
    with socket.create_connection(("127.0.0.1", tcp.port), timeout=2):
        pass
    assert tcp.connections() == before + 1


def test_http_probe_serves_the_canary_and_counts(web: Listener, canary: Canary) -> None:
    before = web.connections()
    with urllib.request.urlopen(f"{web.url}/x.dtd", timeout=2) as response:
        assert canary.secret.encode() in response.read()
    assert web.connections() == before + 1
    assert canary.touched() == [], "the listener serves from memory; only code under test may open the file"


def test_log_probe_sees_a_leak(refs: Refs) -> None:
    logging.getLogger("hub.test").warning("leaked %s", refs.canary.secret)
    with pytest.raises(AssertionError, match="logs"):
        refs.assert_untouched()


# --------------------------------------------------------------------------- §7.2 any DOCTYPE is rejected


def doctype_cases(r: Refs) -> dict[str, bytes]:
    file_url, file_path = r.canary.url, str(r.canary.path)
    http, tcp = r.web.url, r.tcp.url
    sample = _valid_sample_bytes()
    head, rest = sample.split(b"?>", 1)
    cases = {
        "internal-subset-without-entities": "<!DOCTYPE r [<!ELEMENT r (#PCDATA)>]><r>x</r>",
        "bare-doctype": "<!DOCTYPE r><r/>",
        "external-dtd-http": f'<!DOCTYPE r SYSTEM "{http}/ext.dtd"><r>&leak;</r>',
        "external-dtd-public-http": f'<!DOCTYPE r PUBLIC "-//HUB//X" "{http}/ext.dtd"><r/>',
        "external-dtd-tcp": f'<!DOCTYPE r SYSTEM "{tcp}/ext.dtd"><r/>',
        "external-dtd-file-url": f'<!DOCTYPE r SYSTEM "{file_url}"><r>&leak;</r>',
        "external-dtd-file-path": f'<!DOCTYPE r SYSTEM "{file_path}"><r leak=""/>',
        "internal-general-entity": '<!DOCTYPE r [<!ENTITY e "hello">]><r>&e;</r>',
        "external-general-entity-file": f'<!DOCTYPE r [<!ENTITY e SYSTEM "{file_url}">]><r>&e;</r>',
        "external-general-entity-http": f'<!DOCTYPE r [<!ENTITY e SYSTEM "{http}/e.txt">]><r>&e;</r>',
        "external-entity-in-attribute": f'<!DOCTYPE r [<!ENTITY e SYSTEM "{file_url}">]><r a="&e;"/>',
        "parameter-entity-file": f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{file_url}"> %p;]><r>&leak;</r>',
        "parameter-entity-http": f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{http}/p.dtd"> %p;]><r>&leak;</r>',
        "parameter-entity-out-of-band": (
            f'<!DOCTYPE r [<!ENTITY % file SYSTEM "{file_url}"><!ENTITY % dtd SYSTEM "{http}/oob.dtd">'
            "%dtd; %send;]><r/>"
        ),
        "default-attribute-only": '<!DOCTYPE r [<!ATTLIST r classification CDATA "公开">]><r/>',
        "id-attribute-only": '<!DOCTYPE r [<!ATTLIST x key ID #IMPLIED>]><r><x key="a"/><x key="a"/></r>',
        "doctype-after-declaration-and-bom": "\ufeff"
        + f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE r SYSTEM "{file_url}">\n<r/>',
    }
    out = {k: v.encode() for k, v in cases.items()}
    # A real envelope whose DTD would inject a default attribute and an external entity.
    out["envelope-with-internal-subset"] = (
        head
        + b"?>\n"
        + f'<!DOCTYPE env:Envelope [<!ENTITY x SYSTEM "{file_url}"><!ATTLIST env:Envelope Id ID "e1">]>'.encode()
        + rest
    )
    return out


DOCTYPE_CASES = [
    "internal-subset-without-entities",
    "bare-doctype",
    "external-dtd-http",
    "external-dtd-public-http",
    "external-dtd-tcp",
    "external-dtd-file-url",
    "external-dtd-file-path",
    "internal-general-entity",
    "external-general-entity-file",
    "external-general-entity-http",
    "external-entity-in-attribute",
    "parameter-entity-file",
    "parameter-entity-http",
    "parameter-entity-out-of-band",
    "default-attribute-only",
    "id-attribute-only",
    "doctype-after-declaration-and-bom",
    "envelope-with-internal-subset",
]


@pytest.mark.parametrize("case", DOCTYPE_CASES)
def test_doctype_is_rejected(case: str, refs: Refs) -> None:
    exc = reject(doctype_cases(refs)[case], "ENV_DOCTYPE", refs)
    assert exc.line is not None and exc.line >= 1


@pytest.mark.parametrize("case", DOCTYPE_CASES)
def test_doctype_is_rejected_by_the_parser_alone(case: str, refs: Refs, no_gate: None) -> None:
    reject(doctype_cases(refs)[case], "ENV_DOCTYPE", refs)


def test_doctype_cases_cover_every_kind(refs: Refs) -> None:
    assert set(doctype_cases(refs)) == set(DOCTYPE_CASES)


def test_markup_declaration_outside_a_doctype_is_rejected(refs: Refs) -> None:
    reject(b'<r><!ENTITY e "x"></r>', "ENV_DOCTYPE", refs)
    reject(b"<r/>\n<!DOCTYPE r>", "ENV_DOCTYPE", refs)


# ------------------------------------------------------------------------ §7.3 entity bombs, §7.5, §7.6


@dataclass(frozen=True)
class Heavy:
    case: str
    max_bytes: int
    bypass: bool
    code: str

    @property
    def id(self) -> str:
        cap = "default-cap" if self.max_bytes == intake.DEFAULT_MAX_BYTES else f"cap-{self.max_bytes // MiB}MiB"
        return f"{self.case}-{cap}{'-parser-alone' if self.bypass else ''}"


RAISED = 64 * MiB
DEFAULT = intake.DEFAULT_MAX_BYTES
HEAVY = [
    # §7.3 entity bombs: refused by the gate, and by the parser alone (amplification and loop limits).
    *(
        Heavy(c, DEFAULT, bypass, "ENV_DOCTYPE")
        for c in ("bomb-exponential", "bomb-quadratic", "bomb-recursive", "bomb-attribute", "bomb-parameter")
        for bypass in (False, True)
    ),
    # §7.5 size: just over the cap before parsing; node-size and attribute limits with a raised cap too.
    Heavy("over-cap", DEFAULT, False, "ENV_TOO_LARGE"),
    Heavy("text-10mb", DEFAULT, False, "ENV_TOO_LARGE"),
    Heavy("text-10mb", RAISED, False, "ENV_LIMIT"),
    Heavy("attribute-10mb", DEFAULT, False, "ENV_TOO_LARGE"),
    Heavy("attribute-10mb", RAISED, False, "ENV_LIMIT"),
    Heavy("attributes-100k", DEFAULT, False, "ENV_LIMIT"),
    Heavy("attributes-100k", RAISED, False, "ENV_LIMIT"),
    Heavy("name-11mb", RAISED, False, "ENV_LIMIT"),
    Heavy("elements-1m", DEFAULT, False, "ENV_LIMIT"),
    Heavy("elements-1m", RAISED, False, "ENV_LIMIT"),
    Heavy("attribute-flood", DEFAULT, False, "ENV_LIMIT"),
    Heavy("namespace-flood", DEFAULT, False, "ENV_LIMIT"),
    # §7.6 depth: libxml2's limit of 256 levels, no recursion in Python, no crash.
    Heavy("nested-30k", DEFAULT, False, "ENV_TOO_DEEP"),
    Heavy("nested-30k", RAISED, False, "ENV_TOO_DEEP"),
    Heavy("unclosed-30k", DEFAULT, False, "ENV_TOO_DEEP"),
]


def _run_child(h: Heavy) -> dict[str, object]:
    script = Path(__file__).resolve().parent.parent / "hostile" / "heavy.py"
    proc = subprocess.run(
        [sys.executable, str(script), h.case, str(h.max_bytes), "1" if h.bypass else "0"],
        capture_output=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert proc.stderr == b"", proc.stderr.decode(errors="replace")[-2000:]
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module")
def heavy_results() -> dict[str, dict[str, object]]:
    """Every heavy case in its own child process, two at a time (each child measures only its own parse)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip((h.id for h in HEAVY), pool.map(_run_child, HEAVY), strict=True))


def test_heavy_cases_exist() -> None:
    assert {h.case for h in HEAVY} == set(HEAVY_CASES)


@pytest.mark.parametrize("h", HEAVY, ids=lambda h: h.id)
def test_heavy_input_is_rejected_fast_and_lean(h: Heavy, heavy_results: dict[str, dict[str, object]]) -> None:
    r = heavy_results[h.id]
    assert r["code"] == h.code, r
    assert isinstance(r["elapsed"], float) and r["elapsed"] < LIMIT_SECONDS, r
    assert isinstance(r["rss_extra"], int) and r["rss_extra"] < LIMIT_BYTES, r
    assert isinstance(r["py_peak"], int) and r["py_peak"] < LIMIT_BYTES, r


def test_heavy_measurement_can_fail() -> None:
    """Control: the child's memory figure does see C allocations (lxml building a 120 MB tree)."""
    r = _run_child(Heavy("elements-1m", RAISED, True, "ACCEPTED"))
    assert r["code"] == "ACCEPTED"
    assert isinstance(r["rss_extra"], int) and r["rss_extra"] > LIMIT_BYTES, r
    assert isinstance(r["py_peak"], int) and r["py_peak"] < MiB, "tracemalloc alone would have missed it"


def test_just_over_the_cap_is_rejected_before_parsing(refs: Refs, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _valid_sample_bytes()

    def no_parsing() -> etree.XMLParser:
        raise AssertionError("the parser was reached")

    monkeypatch.setattr(intake, "parser", no_parsing)
    exc = reject(data, "ENV_TOO_LARGE", refs, max_bytes=len(data) - 1)
    assert str(len(data)) in exc.detail


def test_exactly_at_the_cap_is_parsed() -> None:
    data = _valid_sample_bytes()
    assert parse(data, max_bytes=len(data)).tag == f"{{{ENV}}}Envelope"


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: b"<r>" + b"x" * (10 * MiB + 1) + b"</r>", "ENV_LIMIT"),
        (lambda: b'<r a="' + b"x" * (10 * MiB + 1) + b'"/>', "ENV_LIMIT"),
        (lambda: b"<r " + b" ".join(b'a%x=""' % i for i in range(100_000)) + b"/>", "ENV_LIMIT"),
        (lambda: b"<a>" * 30_000 + b"</a>" * 30_000, "ENV_TOO_DEEP"),
        (lambda: b"<a>" * 30_000, "ENV_TOO_DEEP"),
    ],
    ids=["text-10mb", "attribute-10mb", "attributes-100k", "nested-30k", "unclosed-30k"],
)
def test_parser_limits_hold_with_a_raised_cap_in_process(make: Callable[[], bytes], code: str, refs: Refs) -> None:
    reject(make(), code, refs, max_bytes=RAISED)


def test_depth_needs_no_python_recursion(refs: Refs) -> None:
    """The depth limit is libxml2's: parsing 30k levels works even with almost no Python stack left."""
    data = b"<a>" * 30_000 + b"</a>" * 30_000
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back  # type: ignore[assignment]
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 40)
    try:
        with pytest.raises(UnsafeXml) as info:
            parse(data)
    finally:
        sys.setrecursionlimit(old)
    assert info.value.code == "ENV_TOO_DEEP"


def test_depth_limit_boundary() -> None:
    assert parse(b"<a>" * 255 + b"</a>" * 255) is not None
    with pytest.raises(UnsafeXml) as info:
        parse(b"<a>" * 257 + b"</a>" * 257)
    assert info.value.code == "ENV_TOO_DEEP"


# ----------------------------------------------------------------------------------- §7.7 encodings


def _utf7_shifted(text: str) -> bytes:
    """``text`` as one UTF-7 shift sequence: no ``<``, ``!`` or quote is left for a byte filter to see."""
    return b"+" + base64.b64encode(text.encode("utf-16-be")).rstrip(b"=") + b"-"


def encoding_cases(r: Refs) -> dict[str, bytes]:
    hidden = f'<!DOCTYPE r SYSTEM "{r.canary.url}"><r>&leak;</r>'
    decl16 = '<?xml version="1.0" encoding="UTF-16"?>'
    doc = "<r>林业局</r>"
    return {
        "invalid-utf8-lone-continuation": b"<r>\x80</r>",
        "invalid-utf8-overlong-slash": b"<r>\xc0\xaf</r>",
        "invalid-utf8-overlong-3-byte": b"<r>\xe0\x80\xaf</r>",
        "invalid-utf8-surrogate": b"<r>\xed\xa0\x80</r>",
        "invalid-utf8-above-u10ffff": b"<r>\xf4\x90\x80\x80</r>",
        "invalid-utf8-f5-lead": b"<r>\xf5\x80\x80\x80</r>",
        "invalid-utf8-truncated": b"<r>\xe4\xb8</r>",
        "invalid-utf8-at-end": b"<r/>\xe4",
        "invalid-utf8-in-attribute": b"<r a='\xff'/>",
        "invalid-utf8-in-comment": b"<r><!--\xfe--></r>",
        "invalid-utf8-in-pi": b"<r><?p \xc0\x80?></r>",
        "invalid-utf8-in-name": b"<r\xc1/>",
        "utf16-le-with-bom": b"\xff\xfe" + (decl16 + doc).encode("utf-16-le"),
        "utf16-be-with-bom": b"\xfe\xff" + (decl16 + doc).encode("utf-16-be"),
        "utf16-le-without-bom": (decl16 + doc).encode("utf-16-le"),
        "utf16-be-without-bom": (decl16 + doc).encode("utf-16-be"),
        "utf16-without-bom-or-declaration": doc.encode("utf-16-le"),
        "utf16-hiding-a-doctype": ("\ufeff" + hidden).encode("utf-16-le"),
        "utf32-with-bom": doc.encode("utf-32"),
        "utf32-without-bom": doc.encode("utf-32-be"),
        "utf7-with-bom": b"+/v8" + doc.encode("utf-7"),
        "utf7-declared-hiding-a-doctype": b'<?xml version="1.0" encoding="UTF-7"?>' + _utf7_shifted(hidden),
        "utf8-bom-declaring-utf16": b"\xef\xbb\xbf" + decl16.encode() + doc.encode(),
        "utf16-bom-declaring-utf8": ('\ufeff<?xml version="1.0" encoding="UTF-8"?>' + doc).encode("utf-16-le"),
        "utf8-declaring-utf16": decl16.encode() + doc.encode(),
        "declared-iso-8859-1": '<?xml version="1.0" encoding="ISO-8859-1"?><r>é</r>'.encode("latin-1"),
        "declared-iso-8859-1-ascii-only": b"<?xml version='1.0' encoding='ISO-8859-1'?><r>x</r>",
        "declared-gbk": '<?xml version="1.0" encoding="GBK"?><r>林业局</r>'.encode("gbk"),
        "declared-gb18030": '<?xml version="1.0" encoding="GB18030"?><r>林业局</r>'.encode("gb18030"),
        "declared-utf-8-with-space": b'<?xml version="1.0" encoding="UTF-8 "?><r/>',
        "undeclared-gbk-bytes": "<r>林业局</r>".encode("gbk"),
        "ebcdic": "<?xml version='1.0' encoding='IBM037'?><r/>".encode("cp037"),
    }


ENCODING_CASES = [
    "invalid-utf8-lone-continuation",
    "invalid-utf8-overlong-slash",
    "invalid-utf8-overlong-3-byte",
    "invalid-utf8-surrogate",
    "invalid-utf8-above-u10ffff",
    "invalid-utf8-f5-lead",
    "invalid-utf8-truncated",
    "invalid-utf8-at-end",
    "invalid-utf8-in-attribute",
    "invalid-utf8-in-comment",
    "invalid-utf8-in-pi",
    "invalid-utf8-in-name",
    "utf16-le-with-bom",
    "utf16-be-with-bom",
    "utf16-le-without-bom",
    "utf16-be-without-bom",
    "utf16-without-bom-or-declaration",
    "utf16-hiding-a-doctype",
    "utf32-with-bom",
    "utf32-without-bom",
    "utf7-with-bom",
    "utf7-declared-hiding-a-doctype",
    "utf8-bom-declaring-utf16",
    "utf16-bom-declaring-utf8",
    "utf8-declaring-utf16",
    "declared-iso-8859-1",
    "declared-iso-8859-1-ascii-only",
    "declared-gbk",
    "declared-gb18030",
    "declared-utf-8-with-space",
    "undeclared-gbk-bytes",
    "ebcdic",
]


@pytest.mark.parametrize("case", ENCODING_CASES)
def test_encoding_other_than_utf8_is_rejected(case: str, refs: Refs) -> None:
    reject(encoding_cases(refs)[case], "ENV_ENCODING", refs)


@pytest.mark.parametrize("case", ENCODING_CASES)
def test_the_byte_gate_alone_refuses_every_non_utf8_encoding(case: str, refs: Refs) -> None:
    """The encoding defence is the byte gate (BOMs and signatures, NUL bytes, the declaration), before any parse:
    the parser is not pinned to UTF-8 any more — that pin cost a third of a parse on every message (lxml builds an
    encoding handler per parse) and guarded nothing the gate lets through. Every encoding case (except the
    UTF-8-only ones, which are not refusals of the encoding) is refused by the gate itself."""
    data = encoding_cases(refs)[case]
    try:
        intake._byte_gate(data, intake.DEFAULT_MAX_BYTES, intake.MAX_MARKUP, intake.MAX_ATTRIBUTES)
    except UnsafeXml as exc:
        assert exc.code == "ENV_ENCODING", exc.describe()
        refs.assert_untouched(exc.describe())
        return
    # Let through by the gate: bytes that declare nothing but UTF-8. Invalid UTF-8 among them is refused by the
    # parser (libxml2 checks every sequence); valid UTF-8 is read as exactly the text it is.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(UnsafeXml) as info:
            parse(data)
        assert info.value.code == "ENV_ENCODING", info.value.describe()
        refs.assert_untouched(info.value.describe())
        return
    root = parse(data)
    inner = re.search(r"<r>(.*)</r>", text)
    assert root.tag == "r" and root.text == (inner.group(1) if inner else None)
    refs.assert_untouched(etree.tostring(root, encoding="unicode"))


def test_encoding_cases_are_all_listed(refs: Refs) -> None:
    cases = encoding_cases(refs)
    assert set(cases) == set(ENCODING_CASES)
    assert b"DOCTYPE" not in cases["utf7-declared-hiding-a-doctype"], "the UTF-7 case must hide its markup"
    assert b"D\x00O\x00C\x00T\x00Y\x00P\x00E" in cases["utf16-hiding-a-doctype"]


def test_invalid_utf8_reports_offset_and_line(refs: Refs) -> None:
    exc = reject(b"<r>\n<a>ok</a>\n<b>\xff</b></r>", "ENV_ENCODING", refs)
    assert exc.line == 3
    assert "offset 17" in exc.detail


def test_utf8_bom_and_utf8_declarations_are_accepted() -> None:
    for data in (
        b"\xef\xbb\xbf<r>\xe6\x9e\x97</r>",
        b'<?xml version="1.0" encoding="UTF-8"?><r/>',
        b"<?xml version='1.0' encoding='utf-8'?><r/>",
        b'<?xml version="1.0" encoding="utf8"?><r/>',
        b'<?xml version="1.0"?><r/>',
        b"\xef\xbb\xbf<?xml version='1.0' encoding='UTF-8'?><r/>",
    ):
        assert parse(data).tag == "r"


# ---------------------------------------------- §7.8 XInclude, xml-stylesheet and schema hints are inert


def _valid_sample_path() -> Path:
    preferred = PROJECT_ROOT / "schemas/services/document.receipt/1/samples/valid/handled.xml"
    if preferred.is_file():
        return preferred
    return sorted((PROJECT_ROOT / "schemas/services").glob("*/*/samples/valid/*.xml"))[0]


def _valid_sample_bytes() -> bytes:
    return _valid_sample_path().read_bytes()


def _invalid_sample_bytes() -> bytes:
    folder = _valid_sample_path().parent.parent / "invalid"
    return sorted(p for p in folder.glob("SCHEMA_*.xml") if "UNKNOWN" not in p.name)[0].read_bytes()


def _with_root_attributes(data: bytes, attrs: str) -> bytes:
    start = data.index(b"<env:Envelope") + len(b"<env:Envelope")
    return data[:start] + b" " + attrs.encode() + data[start:]


def _summary(registry: SchemaRegistry, data: bytes) -> list[tuple[str, int | None, str | None]]:
    return [(v.code, v.line, v.path) for v in registry.violations(parse(data))]


def hint_cases(r: Refs) -> dict[str, str]:
    evil = r.schema_canary.url
    return {
        "schemaLocation-file": f'xmlns:xsi="{XSI}" xsi:schemaLocation="{ENV} {evil}"',
        "schemaLocation-http": f'xmlns:xsi="{XSI}" xsi:schemaLocation="{ENV} {r.web.url}/envelope.xsd"',
        "schemaLocation-tcp": f'xmlns:xsi="{XSI}" xsi:schemaLocation="{ENV} {r.tcp.url}/envelope.xsd"',
        "noNamespaceSchemaLocation-file": f'xmlns:xsi="{XSI}" xsi:noNamespaceSchemaLocation="{evil}"',
        "noNamespaceSchemaLocation-http": f'xmlns:xsi="{XSI}" xsi:noNamespaceSchemaLocation="{r.web.url}/x.xsd"',
    }


HINT_CASES = [
    "schemaLocation-file",
    "schemaLocation-http",
    "schemaLocation-tcp",
    "noNamespaceSchemaLocation-file",
    "noNamespaceSchemaLocation-http",
]


@pytest.mark.parametrize("case", HINT_CASES)
@pytest.mark.parametrize("sample", ["valid", "invalid"])
def test_schema_location_hints_change_nothing(case: str, sample: str, refs: Refs, registry: SchemaRegistry) -> None:
    data = _valid_sample_bytes() if sample == "valid" else _invalid_sample_bytes()
    before = _summary(registry, data)
    hinted = _with_root_attributes(data, hint_cases(refs)[case])
    assert hinted != data
    after = _summary(registry, hinted)
    assert after == before
    assert (after == []) is (sample == "valid")
    if sample == "valid":
        registry.validate(parse(hinted))
    refs.assert_untouched(repr(after))


def test_hint_cases_are_all_listed(refs: Refs) -> None:
    assert set(hint_cases(refs)) == set(HINT_CASES)


@pytest.mark.parametrize("where", ["file-url", "file-path", "http", "tcp"])
def test_xml_stylesheet_pi_is_refused_and_never_acted_on(where: str, refs: Refs, registry: SchemaRegistry) -> None:
    """A processing instruction is refused (ENV_PI: exclusive C14N keeps PIs, so a standard verifier would digest
    what the hub's tree drops), and the stylesheet it names is never fetched or opened."""
    href = {
        "file-url": refs.canary.url,
        "file-path": str(refs.canary.path),
        "http": f"{refs.web.url}/s.xsl",
        "tcp": f"{refs.tcp.url}/s.xsl",
    }[where]
    data = _valid_sample_bytes()
    head, rest = data.split(b"?>", 1)
    styled = head + b"?>\n" + f'<?xml-stylesheet type="text/xsl" href="{href}"?>'.encode() + rest
    with pytest.raises(UnsafeXml) as info:
        parse(styled)
    assert info.value.code == "ENV_PI" and info.value.line == 2
    refs.assert_untouched(str(info.value), repr(info.value))
    assert _summary(registry, data) == []  # the same message without the PI is valid


@pytest.mark.parametrize("parse_mode", ["xml", "text"])
def test_xinclude_is_never_processed(parse_mode: str, refs: Refs, registry: SchemaRegistry) -> None:
    """An xi:include stays an element (the closed XSD rejects it), whatever it points at."""
    data = _valid_sample_bytes()
    body_end = data.index(b"</env:Body>")
    targets = {
        "canary": refs.canary.url,
        "canary-path": str(refs.canary.path),
        "http": f"{refs.web.url}/inc.xml",
        "tcp": f"{refs.tcp.url}/inc.xml",
        "nowhere": "urn:nowhere",
    }
    summaries = {}
    for name, href in targets.items():
        inc = (
            f'<xi:include xmlns:xi="{XI}" href="{href}" parse="{parse_mode}"><xi:fallback>x</xi:fallback></xi:include>'
        )
        included = data[:body_end] + inc.encode() + data[body_end:]
        root = parse(included)
        assert root.find(f".//{{{XI}}}include") is not None, "the xi:include element must stay as it is"
        summaries[name] = _summary(registry, included)
        with pytest.raises(SchemaViolation) as info:
            registry.validate(root)
        refs.assert_untouched(etree.tostring(root, encoding="unicode"), str(info.value), repr(summaries[name]))
    assert all(s == summaries["nowhere"] for s in summaries.values()), summaries
    assert {code for code, _, _ in summaries["nowhere"]} <= {"SCHEMA_ELEMENT", "SCHEMA_VIOLATION"}
    assert summaries["nowhere"], "the closed schema must reject the foreign element"


# ----------------------------------------------------------------------- §7.9 duplicate identifiers

ID_NAMES = {
    "Id": "Id",
    "ID": "ID",
    "id": "id",
    "xml:id": "{http://www.w3.org/XML/1998/namespace}id",
    "x:Id": "{urn:example:x}Id",
}


def _body_children(root: etree._Element) -> list[etree._Element]:
    body = root.find(f"{{{ENV}}}Body")
    assert body is not None and len(body) == 1
    kids = [c for c in body[0] if isinstance(c.tag, str)]
    assert len(kids) >= 2
    return kids


@pytest.mark.parametrize("first", list(ID_NAMES))
@pytest.mark.parametrize("second", list(ID_NAMES))
def test_duplicate_identifiers_are_rejected(first: str, second: str, registry: SchemaRegistry) -> None:
    root = parse(_valid_sample_bytes())
    a, b = _body_children(root)[:2]
    a.set(ID_NAMES[first], "dup-1")
    b.set(ID_NAMES[second], "dup-1")
    data = to_bytes(root)
    with pytest.raises(SchemaViolation) as info:
        registry.validate(parse(data))
    exc = info.value
    assert exc.code == "ENV_DUPLICATE_ID", exc.describe()
    assert "dup-1" in exc.detail
    first = parse(data).xpath("//*[@*='dup-1']")
    assert exc.line == first[0].sourceline


@pytest.mark.parametrize("first", list(ID_NAMES))
@pytest.mark.parametrize("second", list(ID_NAMES))
def test_distinct_identifiers_are_no_duplicate(first: str, second: str, registry: SchemaRegistry) -> None:
    """Control: the same attributes with different values fail the closed XSD, but not as duplicates."""
    root = parse(_valid_sample_bytes())
    a, b = _body_children(root)[:2]
    a.set(ID_NAMES[first], "one")
    b.set(ID_NAMES[second], "two")
    codes = [v.code for v in registry.violations(parse(to_bytes(root)))]
    assert codes and "ENV_DUPLICATE_ID" not in codes


def _signature(sig_id: str, ref_id: str) -> str:
    return (
        f'<ds:Signature xmlns:ds="{DS}" Id="{sig_id}"><ds:SignedInfo>'
        '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
        '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"/>'
        f'<ds:Reference URI="" Id="{ref_id}"><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
        "<ds:DigestValue>AAAA</ds:DigestValue></ds:Reference></ds:SignedInfo>"
        "<ds:SignatureValue>AAAA</ds:SignatureValue></ds:Signature>"
    )


def _signed(sig_id: str, ref_id: str) -> bytes:
    data = _valid_sample_bytes()
    end = data.rindex(b"</env:Envelope>")
    return data[:end] + _signature(sig_id, ref_id).encode() + b"\n" + data[end:]


def test_distinct_identifiers_inside_the_signature_are_valid(registry: SchemaRegistry) -> None:
    env = registry.validate(parse(_signed("sig-1", "ref-1")))
    assert env.root is not None


def test_duplicate_identifiers_inside_the_signature_are_rejected(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaViolation) as info:
        registry.validate(parse(_signed("same", "same")))
    assert info.value.code == "ENV_DUPLICATE_ID", info.value.describe()


def test_identifier_repeated_between_body_and_signature_is_rejected(registry: SchemaRegistry) -> None:
    root = parse(_signed("sig-1", "ref-1"))
    _body_children(root)[0].set("{http://www.w3.org/XML/1998/namespace}id", "sig-1")
    with pytest.raises(SchemaViolation) as info:
        registry.validate(parse(to_bytes(root)))
    assert info.value.code == "ENV_DUPLICATE_ID", info.value.describe()


def test_duplicate_identifier_is_reported_among_other_problems(registry: SchemaRegistry) -> None:
    """Whatever else is wrong with the message, the duplicate is in the report."""
    root = parse(_invalid_sample_bytes())
    kids = _body_children(root)
    kids[-1].set("Id", "dup-2")
    kids[-2].set("ID", "dup-2")
    codes = [v.code for v in registry.violations(parse(to_bytes(root)))]
    assert "ENV_DUPLICATE_ID" in codes and len(codes) >= 2
