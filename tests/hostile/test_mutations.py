"""Property-based hostile tests (issue 16, item 3): valid signed envelopes — every valid sample the demo routes
accept, signed by a real system of the demo directory — mutated at the byte, element, attribute, namespace and
signature level, through the in-memory ``Processor`` (tests/hostile/costly.py ``make_kit``).

For every mutant:

* ``Processor.examine`` returns (never raises) an ``Accepted`` or a ``Rejected``;
* a rejection carries a specific, stable code of steps 1–5 (``ENV_``, ``SCHEMA_``, ``SIG_``, ``CERT_``, ``MSG_``,
  ``ROUTE_``, ``GATE_``), never ``INTERNAL`` nor the schema layer's catch-all ``SCHEMA_VIOLATION``;
* an accepted mutant is the original message: the same canonical signed content (the bytes the digest covers and
  the hub forwards), the same digest, the same ``ds:SignedInfo`` and SignatureValue, the same signing key, the
  same message id (``mutations.equivalence_problems``) — whatever the mutation was;
* a mutation that by construction changes the signed content or the signature (kind ``signed``) is rejected,
  and so is one the hub's signature profile forbids (kind ``profile``: a second signature, a relocated one,
  ``ds:Object``, ``RetrievalMethod``, a KeyValue beside the certificate, foreign KeyInfo content, no KeyInfo).

What may legitimately be accepted, and is (``test_content_equivalent_mutants_are_accepted_as_the_original``):
whitespace outside the root, another attribute order or quoting, a changed XML declaration, an unused namespace
declaration (exclusive C14N renders only visibly used ones), and a corrupted or dropped issuing-CA certificate in
KeyInfo that is not signed (the hub builds the path from its own store). The oracle does not list these: it checks
the equivalence itself.

Deterministic (``derandomize=True``, no example database): the same recipes run in CI every time. The keys and
signatures are fresh per run (a throw-away CA), so a recipe that flips "byte N" hits a different base64 digit from
one run to the next; a hub without bugs passes every run. A failure names the mutation, the sample and the code.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, composite

from hub.errors import CODES
from hub.pipeline.processor import Accepted, Rejected
from tests.hostile import costly
from tests.hostile import mutations as m

SPECIFIC_PREFIXES = ("ENV_", "SCHEMA_", "SIG_", "CERT_", "MSG_", "ROUTE_", "GATE_")
GENERIC = {"INTERNAL", "SCHEMA_VIOLATION"}
SYSTEMS = (costly.SENDER, costly.DATA_SENDER, costly.RECIPIENT)

SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    "print_blob": False,
}


@dataclass(frozen=True)
class Mutant:
    name: str
    data: bytes
    #: "signed": changes what the signature covers or the signature itself; "profile": forbidden by the hub's
    #: signature profile; "unknown": the oracle decides (accepted only if equivalent).
    kind: str


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> costly.Kit:
    return costly.make_kit(tmp_path_factory.mktemp("mutations"))


@pytest.fixture(scope="module")
def baselines(kit: costly.Kit) -> list[m.Baseline]:
    """One accepted, signed envelope per valid sample the demo routes let one of the kit's senders send."""
    out = []
    for folder in sorted(costly.SAMPLES.glob("*/1/samples/valid")):
        service = folder.parts[-4]
        for path in sorted(folder.glob("*.xml")):
            for sender in (costly.SENDER, costly.DATA_SENDER):
                for to in SYSTEMS:
                    if to == sender:
                        continue
                    body = costly.sample_body(service, path.name)
                    data = kit.signed(kit.envelope(service=service, sender=sender, to=to, body=body), sender[0])
                    r = kit.processor.examine(data)
                    if isinstance(r, Accepted):
                        si, sv = m.signature_parts(r.signature)
                        out.append(
                            m.Baseline(
                                f"{service}/{path.name}",
                                data,
                                r.canonical,
                                r.digest,
                                si,
                                sv,
                                r.signer_fingerprint,
                                r.envelope.message_id,
                            )
                        )
                        break
                else:
                    continue
                break
    services = {b.service.split("/")[0] for b in out}
    assert len(services) >= 6, f"too few accepted baselines: {sorted(services)}"
    return out


class Subject:
    """The in-memory hub and its baselines, as one fixture with a short repr (hypothesis prints the arguments of a
    failing example, fixtures included)."""

    def __init__(self, kit: costly.Kit, baselines: list[m.Baseline]) -> None:
        self.kit = kit
        self.baselines = baselines

    def __repr__(self) -> str:
        return f"Subject({len(self.baselines)} baselines)"


@pytest.fixture(scope="module")
def subject(kit: costly.Kit, baselines: list[m.Baseline]) -> Subject:
    return Subject(kit, baselines)


def _where(before: bytes, after: bytes) -> str:
    """Where the mutant first differs from the original, with a little context on both sides."""
    k = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), min(len(before), len(after)))
    return f" [first difference at byte {k}: {before[max(0, k - 24) : k + 24]!r} -> {after[max(0, k - 24) : k + 24]!r}]"


def check(kit: costly.Kit, base: m.Baseline, mutant: Mutant) -> str:
    """Examine one mutant and assert the properties; returns the outcome (``ACCEPTED`` or the code)."""
    what = f"mutation {mutant.name} ({mutant.kind}) of {base.service}{_where(base.data, mutant.data)}"
    try:
        result = kit.processor.examine(mutant.data)
    except Exception as exc:  # pragma: no cover - the property under test
        raise AssertionError(f"{what}: Processor.examine raised {type(exc).__name__}: {exc}") from exc
    if isinstance(result, Rejected):
        code = result.error.code
        assert code in CODES, f"{what}: unregistered code {code!r}"
        assert code not in GENERIC and code.startswith(SPECIFIC_PREFIXES), (
            f"{what}: rejected with a generic code {code}: {result.error.describe()}"
        )
        return code
    assert isinstance(result, Accepted), f"{what}: examine returned {type(result).__name__}"
    assert mutant.kind == "unknown", f"{what} was ACCEPTED although it must be rejected"
    problems = m.equivalence_problems(base, result)
    assert not problems, f"{what} was ACCEPTED but is not the original message: {'; '.join(problems)}"
    return "ACCEPTED"


# ----------------------------------------------------------------------------------------------- strategies

_text = st.sampled_from(["", " ", "x", "0", "公开", "秘密", "机密★1年", "a" * 300, "\u00a0公开", "-1", "9" * 40])
_local = st.sampled_from(["Foo", "Signature", "Body", "Header", "Object", "Transform", "Reference", "Envelope"])
_uri = st.sampled_from(["urn:evil", "", "http://www.w3.org/2000/09/xmldsig#", "urn:forestry-hub:envelope:2"])


@dataclass(frozen=True)
class Recipe:
    """A mutation not yet applied: drawn independently of the message, applied to the chosen baseline."""

    name: str
    apply: Callable[[bytes], bytes | None] = field(repr=False)
    kind: str

    def __repr__(self) -> str:
        return f"Recipe({self.name!r}, {self.kind})"


def _bytes(draw: DrawFn) -> Recipe:
    op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "multi"]))
    pos = draw(st.integers(0, 1 << 20))
    if op == "flip":
        bit = draw(st.integers(0, 7))
        return Recipe(f"flip bit {bit} of byte pos%len with pos={pos}", (lambda d: m.flip(d, pos, bit)), "unknown")
    if op == "insert":
        chunk = draw(
            st.one_of(
                st.sampled_from([b" ", b"\n", b"\t", b"<", b">", b"&", b"\x00", b"\xff", b"<!---->", b"<?x?>", b'"']),
                st.binary(min_size=1, max_size=8),
            )
        )
        return Recipe(f"insert {chunk!r} at pos%(len+1) with pos={pos}", (lambda d: m.insert(d, pos, chunk)), "unknown")
    if op == "delete":
        n = draw(st.integers(1, 64))
        return Recipe(f"delete {n} bytes at pos%len with pos={pos}", (lambda d: m.delete(d, pos, n)), "unknown")
    if op == "truncate":
        return Recipe(f"truncate to pos%len bytes with pos={pos}", (lambda d: m.truncate(d, pos)), "unknown")
    flips = draw(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 7)), min_size=2, max_size=6))

    def multi(d: bytes) -> bytes:
        for p, b in flips:
            d = m.flip(d, p, b)
        return d

    return Recipe(f"flip bits (pos%len, bit) {flips}", multi, "unknown")


def _structural(draw: DrawFn) -> Recipe:
    i = draw(st.integers(0, 400))
    op = draw(
        st.sampled_from(
            [
                "drop-signed",
                "drop-any",
                "duplicate-signed",
                "duplicate-any",
                "reorder",
                "rename",
                "set-attr-signed",
                "set-attr-any",
                "change-attr",
                "drop-attr",
                "attr-order",
                "ns-uri",
                "prefix",
                "ns-decl",
                "text",
                "comment",
                "pi",
                "outer-ws",
            ]
        )
    )
    if op == "drop-signed":
        return Recipe(f"drop signed element #{i}", (lambda d: m.drop_element(d, i, True)), "signed")
    if op == "drop-any":
        return Recipe(f"drop element #{i}", (lambda d: m.drop_element(d, i, False)), "unknown")
    if op == "duplicate-signed":
        return Recipe(f"duplicate signed element #{i}", (lambda d: m.duplicate_element(d, i, True)), "signed")
    if op == "duplicate-any":
        return Recipe(f"duplicate element #{i}", (lambda d: m.duplicate_element(d, i, False)), "unknown")
    if op == "reorder":
        shift = draw(st.integers(0, 10))
        return Recipe(f"move element #{i} by {shift}", (lambda d: m.reorder_element(d, i, shift)), "unknown")
    if op == "rename":
        local = draw(_local)
        return Recipe(f"rename element #{i} to {local}", (lambda d: m.rename_element(d, i, local)), "unknown")
    if op in ("set-attr-signed", "set-attr-any"):
        name = draw(st.sampled_from(["Id", "ID", "id", "{http://www.w3.org/XML/1998/namespace}id", "x", "code"]))
        value = draw(_text)
        signed = op == "set-attr-signed"
        # A new or changed attribute on a signed element always changes the canonical content.
        return Recipe(
            f"set @{name}={value!r} on element #{i}",
            (lambda d: m.set_attribute(d, i, name, value, signed)),
            "signed" if signed else "unknown",
        )
    if op == "change-attr":
        value = draw(_text)
        return Recipe(f"change attribute #{i} to {value!r}", (lambda d: m.change_attribute(d, i, value)), "unknown")
    if op == "drop-attr":
        return Recipe(f"drop attribute #{i}", (lambda d: m.drop_attribute(d, i)), "unknown")
    if op == "attr-order":
        return Recipe("reverse attribute order", (lambda d: m.swap_attribute_order(d)), "unknown")
    if op == "ns-uri":
        uri = draw(_uri)
        return Recipe(f"namespace #{i} URI -> {uri!r}", (lambda d: m.change_namespace_uri(d, i, uri)), "signed")
    if op == "prefix":
        new = draw(st.sampled_from(["e", "x", "ds2", "dsig", "env2"]))
        return Recipe(f"prefix #{i} -> {new}", (lambda d: m.change_prefix(d, i, new)), "signed")
    if op == "ns-decl":
        prefix = draw(st.sampled_from([None, "x", "ds", "env", "xsi"]))
        uri = draw(_uri)
        return Recipe(
            f"declare xmlns:{prefix}={uri!r} on element kind #{i}",
            (lambda d: m.add_namespace_declaration(d, i, prefix, uri)),
            "unknown",
        )
    if op == "text":
        text = draw(_text)
        return Recipe(f"text of signed leaf #{i} -> {text!r}", (lambda d: m.change_text(d, i, text)), "unknown")
    if op in ("comment", "pi"):
        return Recipe(f"{op} in element #{i}", (lambda d: m.insert_comment_or_pi(d, i, op == "pi")), "unknown")
    where = draw(st.sampled_from(["before", "after"]))
    ws = draw(st.sampled_from([b"\n", b" ", b"\t\r\n  "]))
    return Recipe(f"whitespace {ws!r} {where} the root", (lambda d: m.outer_whitespace(d, where, ws)), "unknown")


def _signature(draw: DrawFn) -> Recipe:
    i = draw(st.integers(0, 400))
    op = draw(
        st.sampled_from(
            [
                "digest",
                "sigvalue",
                "cert",
                "sigmethod",
                "digestmethod",
                "c14nmethod",
                "transform-alg",
                "add-transform",
                "drop-transform",
                "ref-uri",
                "drop-ref-uri",
                "add-ref",
                "keyinfo",
                "object",
                "second-signature",
                "move-signature",
            ]
        )
    )
    if op == "digest":
        return Recipe(f"DigestValue bit {i}", (lambda d: m.tweak_value(d, "DigestValue", i)), "signed")
    if op == "sigvalue":
        return Recipe(f"SignatureValue bit {i}", (lambda d: m.tweak_value(d, "SignatureValue", i)), "signed")
    if op == "cert":
        return Recipe(
            f"X509Certificate #{i} bit flipped", (lambda d: m.tweak_value(d, "X509Certificate", i)), "unknown"
        )
    alg = draw(st.sampled_from(m.HOSTILE_ALGORITHMS))
    if op == "sigmethod":
        return Recipe(f"SignatureMethod -> {alg!r}", (lambda d: m.set_algorithm(d, "SignatureMethod", alg)), "signed")
    if op == "digestmethod":
        return Recipe(f"DigestMethod -> {alg!r}", (lambda d: m.set_algorithm(d, "DigestMethod", alg)), "signed")
    if op == "c14nmethod":
        return Recipe(
            f"CanonicalizationMethod -> {alg!r}",
            (lambda d: m.set_algorithm(d, "CanonicalizationMethod", alg)),
            "signed",
        )
    if op == "transform-alg":
        return Recipe(f"last Transform -> {alg!r}", (lambda d: m.set_algorithm(d, "Transform", alg)), "signed")
    if op == "add-transform":
        first = draw(st.booleans())
        return Recipe(f"add Transform {alg!r} first={first}", (lambda d: m.add_transform(d, alg, first)), "signed")
    if op == "drop-transform":
        return Recipe(f"drop Transform #{i % 2}", (lambda d: m.drop_transform(d, i)), "signed")
    if op == "ref-uri":
        uri = draw(st.sampled_from(m.HOSTILE_URIS))
        return Recipe(f"Reference URI -> {uri!r}", (lambda d: m.set_reference_uri(d, uri)), "signed")
    if op == "drop-ref-uri":
        return Recipe("Reference without URI", (lambda d: m.drop_reference_uri(d)), "signed")
    if op == "add-ref":
        return Recipe("a second Reference", (lambda d: m.add_reference(d)), "signed")
    if op == "keyinfo":
        ki = draw(
            st.sampled_from(
                [
                    "drop-keyinfo",
                    "drop-leaf",
                    "drop-chain",
                    "reverse-chain",
                    "duplicate-leaf",
                    "empty-x509data",
                    "retrieval-method",
                    "key-name",
                    "key-value",
                    "foreign",
                    "garbage-cert",
                ]
            )
        )
        kind = (
            "profile"
            if ki in ("retrieval-method", "key-value", "foreign", "garbage-cert", "drop-keyinfo")
            else "unknown"
        )
        return Recipe(f"KeyInfo {ki}", (lambda d: m.key_info(d, ki)), kind)
    if op == "object":
        return Recipe("ds:Object with a copy of the Body", (lambda d: m.add_object(d)), "profile")
    if op == "second-signature":
        return Recipe("a second ds:Signature", (lambda d: m.add_signature(d)), "profile")
    where = draw(st.sampled_from(["first", "header", "body", "wrap"]))
    return Recipe(
        f"ds:Signature moved ({where})",
        (lambda d: m.move_signature(d, where)),
        "profile" if where != "first" else "unknown",
    )


recipes_bytes = composite(_bytes)()
recipes_structure = composite(_structural)()
recipes_signature = composite(_signature)()


# ----------------------------------------------------------------------------------------------- the tests


def _run(subject: Subject, index: int, recipe: Recipe, seen: dict[str, int]) -> None:
    kit, baselines = subject.kit, subject.baselines
    base = baselines[index % len(baselines)]
    name, kind = recipe.name, recipe.kind
    data = recipe.apply(base.data)
    assume(data is not None and data != base.data)
    assert data is not None
    outcome = check(kit, base, Mutant(name, data, kind))
    seen[outcome] = seen.get(outcome, 0) + 1


@settings(max_examples=6000, **SETTINGS)
@given(index=st.integers(0, 63), recipe=recipes_bytes)
def test_byte_mutations(subject: Subject, index: int, recipe: Recipe) -> None:
    _run(subject, index, recipe, BYTES_SEEN)


@settings(max_examples=4000, **SETTINGS)
@given(index=st.integers(0, 63), recipe=recipes_structure)
def test_element_attribute_namespace_mutations(subject: Subject, index: int, recipe: Recipe) -> None:
    _run(subject, index, recipe, STRUCT_SEEN)


@settings(max_examples=4000, **SETTINGS)
@given(index=st.integers(0, 63), recipe=recipes_signature)
def test_signature_mutations(subject: Subject, index: int, recipe: Recipe) -> None:
    _run(subject, index, recipe, SIG_SEEN)


BYTES_SEEN: dict[str, int] = {}
STRUCT_SEEN: dict[str, int] = {}
SIG_SEEN: dict[str, int] = {}


# ----------------------------------------------------------------------------------------------- fixed cases


def test_every_signed_element_dropped_duplicated_or_renamed_is_rejected(
    kit: costly.Kit, baselines: list[m.Baseline]
) -> None:
    """Exhaustive over the typical notice's signed elements (not only what hypothesis happens to draw)."""
    base = next(b for b in baselines if b.service.startswith("document.official/typical"))
    n = len(m._signed_elements(m._tree(base.data)))
    for i in range(n):
        for name, mutant in (
            (f"drop signed element #{i}", m.drop_element(base.data, i, True)),
            (f"duplicate signed element #{i}", m.duplicate_element(base.data, i, True)),
        ):
            if mutant is not None:
                assert check(kit, base, Mutant(name, mutant, "signed")) != "ACCEPTED"
    for i in range(n):
        mutant = m.rename_element(base.data, i, "Renamed")
        if mutant is not None:
            check(kit, base, Mutant(f"rename element #{i}", mutant, "unknown"))


def test_signature_value_and_digest_tweaks_name_the_failure(kit: costly.Kit, baselines: list[m.Baseline]) -> None:
    base = baselines[0]
    for local, expected in (("SignatureValue", {"SIG_VALUE"}), ("DigestValue", {"SIG_VALUE", "SIG_DIGEST"})):
        for pos in range(0, 64, 7):
            code = check(kit, base, Mutant(f"{local} bit {pos}", m.tweak_value(base.data, local, pos) or b"", "signed"))
            assert code in expected, f"{local} bit {pos}: {code}, expected one of {sorted(expected)}"


def test_a_corrupted_certificate_is_refused_with_a_specific_code(kit: costly.Kit, baselines: list[m.Baseline]) -> None:
    """Deterministic companion of the byte and signature properties: one bit of the signer's certificate (DER,
    re-encoded as valid base64), at each of the first 400 byte positions. A certificate that no longer parses, or
    whose issuer, subject or extensions no longer parse, is refused as a profile or trust failure, not as INTERNAL."""
    base = baselines[0]
    root = m._tree(base.data)
    leaf = m._sig_elements(root, "X509Certificate")[0]
    der = base64.b64decode("".join((leaf.text or "").split()))
    failures = []
    for pos in range(min(400, len(der))):
        for bit in (0, 5):
            bad = bytearray(der)
            bad[pos] ^= 1 << bit
            leaf.text = base64.b64encode(bytes(bad)).decode()
            data = m._out(root, base.data)
            result = kit.processor.examine(data)
            if isinstance(result, Accepted):
                failures.append(f"byte {pos} bit {bit}: ACCEPTED")
            elif result.error.code in GENERIC:
                failures.append(f"byte {pos} bit {bit}: {result.error.describe()}")
    assert not failures, f"{len(failures)} certificate corruptions: " + "; ".join(failures[:8])


def test_content_equivalent_mutants_are_accepted_as_the_original(kit: costly.Kit, baselines: list[m.Baseline]) -> None:
    """Liveness of the oracle: these mutants are C14N-equivalent or touch only what is not signed, and the hub
    accepts them as the very same message (the properties above would be vacuous if it refused everything)."""
    for base in baselines:
        d = base.data
        cases = {
            "newline after the root": m.outer_whitespace(d, "after", b"\n"),
            "reversed attribute order": m.swap_attribute_order(d),
            "an unused prefixed namespace on the root": d.replace(
                b"<env:Envelope ", b'<env:Envelope xmlns:x="urn:e" ', 1
            ),
            "an unused default namespace on env:Body": d.replace(b"<env:Body>", b'<env:Body xmlns="urn:evil">', 1),
            "double-quoted XML declaration": d.replace(
                b"<?xml version='1.0' encoding='UTF-8'?>", b'<?xml version="1.0" encoding="utf-8"?>', 1
            ),
            "no XML declaration": d.split(b"?>", 1)[1].lstrip(),
            "KeyInfo without the issuing CA": m.key_info(d, "drop-chain"),
            "a comment in env:Body": d.replace(b"<env:Body>", b"<env:Body><!-- x -->", 1),
        }
        for name, mutant in cases.items():
            assert mutant is not None and mutant != d, f"{name} of {base.service} did not apply"
            assert check(kit, base, Mutant(name, mutant, "unknown")) == "ACCEPTED", f"{name} of {base.service}"


def test_the_mutations_reached_every_outcome() -> None:
    """Run last (file order): the property tests above were not vacuous — each saw rejections, and the byte and
    structural families also saw a variety of codes."""
    for name, seen in (("bytes", BYTES_SEEN), ("structure", STRUCT_SEEN), ("signature", SIG_SEEN)):
        if not seen:
            pytest.skip("run together with the property tests")
        rejected = sum(v for k, v in seen.items() if k != "ACCEPTED")
        assert rejected > 0 and len(seen) >= 3, f"{name}: {seen}"
