"""The bounds of the cost model (issue 17): each refusal has its code, the worst messages of ``bench/hostile.py``
are built within the bounds, a message over its CPU budget is refused between two steps, and the largest
schema-valid message of any service fits the markup budget."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from hub.envelope import intake, parse
from hub.errors import HubError, SchemaViolation, SignatureInvalid, UnsafeXml
from hub.pipeline import cpu_clock
from hub.pipeline.processor import Rejected
from hub.validation.registry import MAX_VIOLATIONS
from tests.hostile import costly

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> costly.Kit:
    return costly.make_kit(tmp_path_factory.mktemp("cost"))


def _code(kit: costly.Kit, data: bytes) -> str | None:
    result = kit.processor.examine(data)
    return result.error.code if isinstance(result, Rejected) else None


def test_every_costly_case_stays_within_the_bounds_but_the_report_attack(kit: costly.Kit) -> None:
    cases = costly.build_all(kit)
    assert set(cases) == set(costly.CASES)
    for name, data in cases.items():
        assert len(data) <= intake.DEFAULT_MAX_BYTES, name
        if name in ("namespaces_60k", "long_names", "long_namespace_uri"):
            continue  # built to be refused by a bound
        assert data.count(b"<") <= intake.MAX_MARKUP, name
        assert data.count(b"xmlns") <= intake.MAX_NAMESPACES, name


def test_the_worst_messages_get_the_expected_answers(kit: costly.Kit) -> None:
    cases = costly.build_all(kit)
    expected = {
        "namespaces_on_root": None,  # accepted: the unused declarations are not signed and cost little now
        "namespaces_60k": "ENV_LIMIT",
        "namespaces_nested": "SIG_PROFILE",
        "elements_flat": "SIG_PROFILE",
        "elements_in_body": "SCHEMA_ELEMENT",
        "certificates": "SIG_PROFILE",
        "long_names": "ENV_LIMIT",
        "long_namespace_uri": "ENV_NAMESPACES",
        "largest_data_response": None,
        "attachment": None,
        "garbage_signature": "SIG_VALUE",
    }
    for name, code in expected.items():
        assert _code(kit, cases[name]) == code, name
    quarantined = kit.processor.examine(cases["markings"])
    assert not isinstance(quarantined, Rejected) and 1 <= len(quarantined.markings) <= 20


def test_the_report_attack_is_refused_by_hub_verify(kit: costly.Kit, tmp_path: Path) -> None:
    """The 60,000-declaration envelope of the report (8 s of ``hub verify`` before): refused with a code."""
    f = tmp_path / "ns60k.xml"
    f.write_bytes(costly.namespaces_60k(kit, costly.MAX_BYTES))
    r = subprocess.run(
        [sys.executable, "-m", "hub.cli", "verify", "--pki", str(kit.pki_dir), str(f)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 1 and r.stdout.startswith("ENV_LIMIT: "), r.stdout + r.stderr


def test_namespace_names_are_bounded_in_large_messages() -> None:
    uri = "urn:x:" + "u" * intake.MAX_NAMESPACE_URI
    pad = "<p>" + "x" * (64 * 1024) + "</p>"
    with pytest.raises(UnsafeXml) as info:
        parse(f'<r xmlns:a="{uri}">{pad}<a:b/></r>'.encode())
    assert info.value.code == "ENV_NAMESPACES" and "namespace name" in info.value.detail
    assert parse(f'<r xmlns:a="{uri[: intake.MAX_NAMESPACE_URI]}">{pad}</r>'.encode()).tag == "r"
    # A small message cannot make a long name expensive (it is copied into at most a few hundred errors).
    assert parse(f'<r xmlns:a="{uri}"/>'.encode()).tag == "r"


def test_long_element_names_are_refused_in_large_messages() -> None:
    pad = b"<p>" + b"x" * (1024 * 1024) + b"</p>"
    name = b"n" * (intake.MAX_NAME + 1)
    with pytest.raises(UnsafeXml) as info:
        parse(b"<r>" + pad + b"<" + name + b"/></r>")
    assert info.value.code == "ENV_LIMIT" and "element name" in info.value.detail
    # just under the limit, and after many short tags (the scan's fallback to the regular expression)
    many = b"<a/>" * (intake._HOPS + 10)
    assert parse(b"<r>" + pad + b"<" + name[:-1] + b"/></r>").tag == "r"
    with pytest.raises(UnsafeXml):
        parse(b"<r>" + pad + many + b"<" + name + b"/></r>")


def test_namespace_scan_falls_back_past_many_x_bytes() -> None:
    decls = b"".join(b' xmlns:n%d="u:%d"' % (i, i) for i in range(intake.MAX_NAMESPACES + 1))
    with pytest.raises(UnsafeXml) as info:
        parse(b"<r>" + b"x" * (intake._HOPS + 100) + b"<a" + decls + b"/></r>")
    assert info.value.code == "ENV_NAMESPACES"


def test_schema_reports_are_capped(kit: costly.Kit) -> None:
    with pytest.raises(SchemaViolation) as info:
        kit.registry.validate(parse(costly.schema_errors(kit, costly.MAX_BYTES)))
    found = info.value.violations  # type: ignore[attr-defined]
    assert len(found) == MAX_VIOLATIONS + 1
    assert "more problems not listed" in found[-1].message


def test_the_profile_stops_one_child_past_what_it_allows(kit: costly.Kit) -> None:
    root = parse(costly.certificates(kit, costly.MAX_BYTES))
    with pytest.raises(SignatureInvalid) as info:
        kit.processor.verifier.verify(root)
    assert "more than 3 certificates" in info.value.detail


def test_a_key_value_is_refused_even_when_it_matches(kit: costly.Kit) -> None:
    data = kit.typical()
    ds = "http://www.w3.org/2000/09/xmldsig#"
    root = parse(data)
    key_info = root.find(f"{{{ds}}}Signature/{{{ds}}}KeyInfo")
    assert key_info is not None
    etree.SubElement(key_info, f"{{{ds}}}KeyValue")  # KeyInfo is outside what was signed
    with pytest.raises(SignatureInvalid) as info:
        kit.processor.verifier.verify(root)
    assert info.value.code == "SIG_PROFILE" and "KeyValue" in info.value.detail


def test_a_message_over_its_cpu_budget_is_refused_between_two_steps(kit: costly.Kit) -> None:
    p = kit.processor
    clock = iter(range(0, 1000, 1))  # every reading one "second" later: over any budget at the first check
    p.cost_budget_s, p.cpu_clock = 0.5, lambda: float(next(clock))
    try:
        result = p.examine(kit.typical())
    finally:
        p.cost_budget_s = None
    assert isinstance(result, Rejected)
    assert result.error.code == "MSG_COST_EXCEEDED" and "parsing" in result.error.detail
    assert not result.sender_confirmed  # it must not occupy the message id
    assert not isinstance(p.examine(kit.typical()), Rejected)  # without the budget the same message passes


def test_within_its_budget_a_message_passes(kit: costly.Kit) -> None:
    p = kit.processor
    p.cost_budget_s = 5.0
    try:
        assert not isinstance(p.examine(kit.typical()), Rejected)
    finally:
        p.cost_budget_s = None


def test_a_full_collection_inside_an_examination_is_not_charged_to_the_message(kit: costly.Kit) -> None:
    """A full pass of the collector over a large heap (a test process hosting the hub: 327 ms once on CI) that
    starts inside an ordinary message's examination does not get that message refused; with the bare thread clock
    the same examination is refused, so the case does what it says."""
    p = kit.processor
    cpu_clock.install()
    heap = [[i] for i in range(1_500_000)]  # lists are tracked by the collector: a full pass walks each
    validate = p.registry.validate

    def validate_then_collect(root: etree._Element) -> Any:
        envelope = validate(root)
        gc.collect()  # a full collection, as the allocation that tips generation 2 over its threshold starts one
        return envelope

    before = time.thread_time()
    gc.collect()
    full_pass = time.thread_time() - before
    budget = full_pass / 2  # an ordinary message costs a few ms; the pass alone is over this budget
    assert budget > 0.02, f"the heap is too small to tell: a full pass took {full_pass * 1000:.0f} ms"
    p.registry.validate = validate_then_collect  # type: ignore[method-assign]
    try:
        p.cost_budget_s, p.cpu_clock = budget, cpu_clock.message_cpu_time
        assert not isinstance(p.examine(kit.typical()), Rejected)
        p.cpu_clock = time.thread_time
        refused = p.examine(kit.typical())
        assert isinstance(refused, Rejected) and refused.error.code == "MSG_COST_EXCEEDED"
    finally:
        p.registry.validate = validate  # type: ignore[method-assign]
        p.cost_budget_s, p.cpu_clock = None, cpu_clock.message_cpu_time
        del heap


def test_the_message_clock_leaves_out_full_collections_only() -> None:
    cpu_clock.install()
    cpu_clock.install()  # idempotent
    assert gc.callbacks.count(cpu_clock._on_collection) == 1
    heap = [[i] for i in range(300_000)]
    before, tallied = cpu_clock.message_cpu_time(), cpu_clock.full_collections_s()
    gc.collect(0)
    gc.collect(1)
    assert cpu_clock.full_collections_s() == tallied  # young passes stay charged
    gc.collect()
    assert cpu_clock.full_collections_s() > tallied
    assert cpu_clock.message_cpu_time() - before < cpu_clock.full_collections_s() - tallied
    del heap


def test_the_largest_valid_data_response_fits_the_budgets(kit: costly.Kit) -> None:
    """A full page of the largest body any schema admits (data.response: 500 rows × 50 cells) is accepted."""
    data = costly.largest_data_response(kit, costly.MAX_BYTES)
    # ... with room for an envelope of 200 recipients (the envelope's maximum: one tag each), and its attributes
    assert data.count(b"<") + 200 < intake.MAX_MARKUP
    assert data.count(b'="') + 3 * 200 < intake.MAX_ATTRIBUTES
    assert _code(kit, data) is None


def test_error_codes_are_registered() -> None:
    from hub.errors import CODES

    for code in ("ENV_PI", "ENV_NAMESPACES", "MSG_COST_EXCEEDED"):
        assert code in CODES
    assert issubclass(SchemaViolation, HubError)
