"""What the hub accepts, a standard verifier accepts (issue 17): every valid sample of every service, signed, and
then changed after signing in every way the tests know (namespace declarations, comments, CDATA, character
references, quoting, white space in tags, processing instructions, declarations and BOMs, the costly messages of
``tests/hostile/costly.py``) — whenever the hub's intake, validation and verifier accept the bytes, ``xmlsec1
--verify`` (Debian's reference C implementation, trusting only the hub root) accepts those very bytes, which are
what the hub stores as evidence of what it received."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from trust_fixtures import xmlsec1_verify_with

from hub.envelope import parse
from hub.errors import HubError
from hub.settings import PROJECT_ROOT
from hub.trust.pki import PkiPaths
from tests.hostile import costly

SERVICES = PROJECT_ROOT / "schemas" / "services"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> costly.Kit:
    return costly.make_kit(tmp_path_factory.mktemp("differential"))


def _signed_samples(kit: costly.Kit) -> dict[str, bytes]:
    out = {}
    for path in sorted(SERVICES.glob("*/*/samples/valid/*.xml")):
        root = parse(path.read_bytes())
        sig = root.find("{http://www.w3.org/2000/09/xmldsig#}Signature")
        if sig is not None:
            root.remove(sig)
        out[f"{path.parts[-5]}/{path.stem}"] = kit.signed(root)
    return out


def _first_text(data: bytes) -> tuple[int, int]:
    """Where the first non-empty text of the Body starts and ends."""
    body = data.index(b"<env:Body>")
    m = re.compile(rb">([^<\s][^<]*)<").search(data, body)
    assert m is not None
    return m.start(1), m.end(1)


def _comment_in_text(data: bytes) -> bytes:
    a, b = _first_text(data)
    mid = a + len(data[a:b].decode()[:1].encode())
    return data[:mid] + b"<!-- c -->" + data[mid:]


def _cdata(data: bytes) -> bytes:
    a, b = _first_text(data)
    if b"]]>" in data[a:b] or b"&" in data[a:b]:
        return data
    return data[:a] + b"<![CDATA[" + data[a:b] + b"]]>" + data[b:]


def _charref(data: bytes) -> bytes:
    a, b = _first_text(data)
    first = data[a:b].decode()[:1]
    return data[:a] + f"&#x{ord(first):X};".encode() + data[a + len(first.encode()) :]


MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    "as-signed": lambda d: d,
    "unused-namespaces-on-root": lambda d: d.replace(
        b"<env:Envelope", b"<env:Envelope" + b"".join(b' xmlns:u%d="urn:u:%d"' % (i, i) for i in range(100)), 1
    ),
    "comment-between-elements": lambda d: d.replace(b"<env:Body>", b"<env:Body><!-- note -->", 1),
    "comment-in-text": _comment_in_text,
    "cdata": _cdata,
    "character-reference": _charref,
    "space-in-tags": lambda d: d.replace(b"<env:Header>", b"<env:Header >", 1).replace(b"</env:Body>", b"</env:Body >"),
    "pi-in-body": lambda d: d.replace(b"<env:Body>", b"<env:Body><?hub note?>", 1),
    "pi-after-root": lambda d: d + b"<?trailer?>",
    "no-declaration": lambda d: d.split(b"?>", 1)[1].lstrip() if d.startswith(b"<?xml") else d,
    "bom": lambda d: b"\xef\xbb\xbf" + d,
    "crlf": lambda d: d.replace(b"\n", b"\r\n"),
    "empty-element-expanded": lambda d: re.sub(rb"<(env:Agency[^>]*)/>", rb"<\1></env:Agency>", d),
}

ACCEPTED_COSTLY = ("namespaces_on_root", "markings", "secret_prose", "attachment", "largest_data_response")


def _hub_accepts(kit: costly.Kit, data: bytes) -> bool:
    try:
        root = parse(data)
        kit.registry.validate(root)
        kit.processor.verifier.verify(root)
    except HubError:
        return False
    return True


def _xmlsec1_accepts(kit: costly.Kit, data: bytes, tmp: Path) -> tuple[bool, str]:
    return xmlsec1_verify_with(PkiPaths(kit.pki_dir), data, tmp)


def test_whatever_the_hub_accepts_xmlsec1_accepts(kit: costly.Kit, tmp_path: Path) -> None:
    cases: dict[str, bytes] = {}
    for name, data in _signed_samples(kit).items():
        for mutation, change in MUTATIONS.items():
            cases[f"{name}+{mutation}"] = change(data)
    for name in ACCEPTED_COSTLY:
        cases[f"costly/{name}"] = costly.CASES[name][1](kit, costly.MAX_BYTES)
    accepted = refused = 0
    disagreements = []
    for name, data in cases.items():
        if not _hub_accepts(kit, data):
            refused += 1
            continue
        accepted += 1
        ok, out = _xmlsec1_accepts(kit, data, tmp_path)
        if not ok:
            disagreements.append(f"{name}: the hub accepts, xmlsec1 refuses: {out}")
    assert not disagreements, "\n".join(disagreements)
    # The comparison must mean something: most variants are accepted, and PIs are among the refused.
    assert accepted > len(cases) // 2, (accepted, refused)
    assert refused >= 2 * len(list(SERVICES.glob("*/*/samples/valid/*.xml")))  # both PI mutations, every sample


def test_processing_instructions_are_what_made_the_two_disagree(kit: costly.Kit, tmp_path: Path) -> None:
    """The positive control: the bytes the hub used to accept (a PI added after signing; the parser dropped it)
    are refused by xmlsec1, which digests PIs — and are now refused by the hub too, with ENV_PI."""
    data = MUTATIONS["pi-in-body"](kit.typical())
    ok, _ = _xmlsec1_accepts(kit, data, tmp_path)
    assert not ok
    with pytest.raises(HubError) as info:
        parse(data)
    assert info.value.code == "ENV_PI"
