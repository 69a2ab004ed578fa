"""The classification gate: every zone × every level, the hub's own ceiling, markings in the signed body (and the
false positives that must not trigger), and the independent egress check that fails closed."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from lxml import etree

from hub.envelope import CLASSIFICATIONS, Envelope, Party, Recipient, build, service_namespace, to_bytes
from hub.errors import ClassificationBlocked
from hub.routing import Target, egress_allowed, find_markings, gate
from hub.trust.signature import c14n

PROV = "11220000013544357T"
CST = timezone(timedelta(hours=8))
NS = service_namespace("document.official", 1)

INTERNAL_SECRET = Target("prov-220000-secure", PROV, "to", "internal", 3)
INTERNAL_CONFIDENTIAL = Target("city-220100-secure", "11220100013544550M", "to", "internal", 2)
EXTRANET = Target("city-220100-oa", "11220100013544550M", "to", "extranet", 1)
INTERNET = Target("prov-220000-portal", PROV, "cc", "internet", 0)
TARGETS = (INTERNAL_SECRET, INTERNAL_CONFIDENTIAL, EXTRANET, INTERNET)
HUB_CEILING = 3  # 机密


def make(
    classification: str = "公开", body_xml: str | None = None, period: str | None = None
) -> tuple[Envelope, etree._Element]:
    if body_xml is None:
        body = etree.Element(f"{{{NS}}}Document")
        etree.SubElement(body, f"{{{NS}}}Title").text = "关于做好春季森林防火工作的通知"
    else:
        body = etree.fromstring(body_xml)
    root = build(
        service="document.official",
        sender=Party(PROV, "prov-220000-oa"),
        recipients=[Recipient.to_group("city-bureaus")],
        body=body,
        classification=classification,
        period=period,
        created=datetime(2026, 3, 1, 9, 0, tzinfo=CST),
    )
    return Envelope.from_tree(root), root


def body(inner: str, attrs: str = "") -> str:
    return f'<d:Document xmlns:d="{NS}"{attrs}>{inner}</d:Document>'


# ---------------------------------------------------------------------- levels against zones


@pytest.mark.parametrize("level", range(5), ids=list(CLASSIFICATIONS))
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.zone}-{t.ceiling}")
def test_each_zone_against_each_level(level: int, target: Target) -> None:
    env, root = make(CLASSIFICATIONS[level], period="10年" if level >= 2 else None)
    result = gate(env, root, [target], HUB_CEILING)
    zone_max = {"internal": 4, "extranet": 1, "internet": 0}[target.zone]
    expected = level <= min(target.ceiling, zone_max) and level <= HUB_CEILING
    assert result.level == level
    assert (result.allowed == (target,)) is expected
    assert (len(result.blocked) == 1) is not expected
    if not expected:
        b = result.blocked[0]
        assert b.target == target and b.code == "GATE_CLASSIFICATION"
        assert isinstance(b.error, ClassificationBlocked) and b.error.code == "GATE_CLASSIFICATION"
        if level <= HUB_CEILING:
            assert target.zone in b.reason and CLASSIFICATIONS[min(target.ceiling, zone_max)] in b.reason


def test_a_mixed_recipient_list_is_split() -> None:
    env, root = make("秘密", period="1年")
    result = gate(env, root, TARGETS, HUB_CEILING)
    assert result.allowed == (INTERNAL_SECRET, INTERNAL_CONFIDENTIAL)
    assert [b.target for b in result.blocked] == [EXTRANET, INTERNET]
    assert "extranet zone (政务外网) with ceiling 内部" in result.blocked[0].reason
    assert "internet zone (互联网) with ceiling 公开" in result.blocked[1].reason
    assert not result.quarantine


def test_zone_maximum_clamps_a_wrong_ceiling() -> None:
    lying = Target("prov-220000-portal", PROV, "to", "internet", 3)
    env, root = make("内部")
    result = gate(env, root, [lying], HUB_CEILING)
    assert result.allowed == () and result.blocked[0].target == lying
    unknown_zone = Target("x-1", PROV, "to", "moon", 4)
    assert gate(env, root, [unknown_zone], HUB_CEILING).allowed == ()


def test_above_the_hub_ceiling_everything_is_blocked() -> None:
    env, root = make("绝密", period="长期")
    result = gate(env, root, TARGETS, HUB_CEILING)
    assert result.allowed == ()
    assert len(result.blocked) == len(TARGETS)
    assert all("hub itself" in b.reason for b in result.blocked)
    env, root = make("机密", period="10年")
    assert gate(env, root, [INTERNAL_SECRET], 2).allowed == ()
    assert gate(env, root, [INTERNAL_SECRET], 3).allowed == (INTERNAL_SECRET,)


def test_unknown_classification_fails_closed() -> None:
    env, root = make("公开")
    forged = Envelope(
        **{f: getattr(env, f) for f in env.__dataclass_fields__ if f != "classification"}, classification="公开 "
    )
    result = gate(forged, root, TARGETS, HUB_CEILING)
    assert result.allowed == () and len(result.blocked) == len(TARGETS)


# ---------------------------------------------------------------------- markings


@pytest.mark.parametrize(
    ("inner", "attrs", "marking", "level"),
    [
        ("<d:Marking>秘密★</d:Marking>", "", "秘密★", 2),
        ("<d:Marking>机密★10年</d:Marking>", "", "机密★10年", 3),
        ("<d:Marking>绝密★长期</d:Marking>", "", "绝密★长期", 4),
        ("<d:Marking>绝密</d:Marking>", "", "绝密", 4),
        ("<d:Marking>机密</d:Marking>", "", "机密", 3),
        ("<d:Text>【机密】\n关于某林场的调查报告</d:Text>", "", "【机密】", 3),
        ("<d:Text>机密 6个月\n关于……</d:Text>", "", "机密6个月", 3),
        ("<d:Text>正文</d:Text>", ' note="秘密★1年"', "秘密★1年", 2),
        ('<d:Attachment name="附件：机密★5年 火场图.pdf"/>', "", "机密★5年", 3),
        ("<d:Text>机 密 ★ 10 年</d:Text>", "", "机密★10年", 3),
        ("<d:Text>机\u200b密\u00ad★2年</d:Text>", "", "机密★2年", 3),
        ("<d:Text>秘密＊</d:Text>", "", "秘密*", 2),
        ("<d:Text>機密★10年</d:Text>", "", "機密★10年", 3),
        ("<d:Text>絕密</d:Text>", "", "絕密", 4),
        ("<d:Text>见附件。</d:Text>秘密★<d:Sig/>", "", "秘密★", 2),
        ("<d:Text>机</d:Text><d:Text>密★</d:Text>", "", "机密★", 3),
        ("<d:Text>机&#x5BC6;★3年</d:Text>", ' n="&#31192;&#23494;"', "机密★3年", 3),
    ],
)
def test_markings_in_public_messages_quarantine(inner: str, attrs: str, marking: str, level: int) -> None:
    env, root = make("公开", body(inner, attrs))
    result = gate(env, root, [EXTRANET, INTERNET], HUB_CEILING)
    # The pipeline passes the canonical signed bytes as a pre-filter (no 密 in them: nothing to scan); with or
    # without them the gate finds the same markings — character references included (C14N writes UTF-8).
    canonical = c14n(root)
    assert "密".encode() in canonical
    assert gate(env, root, [EXTRANET, INTERNET], HUB_CEILING, signed_bytes=canonical) == result
    assert result.quarantine
    assert marking in [m.text for m in result.markings]
    assert level in [m.level for m in result.markings]
    # the classification itself is fine for both targets: they are what a release would reach
    assert result.allowed == (EXTRANET, INTERNET)


def test_internal_label_is_scanned_too() -> None:
    env, root = make("内部", body("<d:Marking>秘密★</d:Marking>"))
    assert gate(env, root, [EXTRANET], HUB_CEILING).quarantine


def test_marking_location_is_reported() -> None:
    found = find_markings(etree.fromstring(body('<d:Head><d:Marking level="x">秘密★</d:Marking></d:Head>')))
    assert [(m.text, m.where, m.label) for m in found] == [("秘密★", "/Head/Marking", "秘密")]
    found = find_markings(etree.fromstring(body('<d:Head x="机密★"/>')))
    assert [m.where for m in found] == ["/Head/@x"]


@pytest.mark.parametrize(
    "text",
    [
        "各单位要严格遵守保密纪律，保守国家秘密。",
        "保守国家秘密是每个公民的义务",
        "本文件不涉及国家秘密和商业秘密。",
        "国家秘密",
        "加强涉密人员管理，确保机密性和完整性。",
        "机密文件管理办法（修订）",
        "绝密级、机密级、秘密级文件的管理要求见附件",
        "本件为机密。",
        "秘密通道已封闭，请绕行。",
        "★★★ 五星级林场评选 ★★★",
        "密级：公开",
    ],
)
def test_ordinary_text_is_not_a_marking(text: str) -> None:
    env, root = make("公开", body(f"<d:Text>{text}</d:Text>", f' title="{text}"'))
    result = gate(env, root, [EXTRANET], HUB_CEILING)
    assert result.markings == () and not result.quarantine
    assert result.allowed == (EXTRANET,)
    assert gate(env, root, [EXTRANET], HUB_CEILING, signed_bytes=c14n(root)) == result


def test_without_mi_in_the_signed_bytes_the_body_is_not_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    gate_module = importlib.import_module("hub.routing.gate")  # the package exports gate(), shadowing the module
    env, root = make("公开")
    calls: list[object] = []
    monkeypatch.setattr(gate_module, "find_markings", lambda body, **kwargs: calls.append(body) or ())
    assert not gate(env, root, [EXTRANET], HUB_CEILING, signed_bytes=c14n(root)).quarantine
    assert calls == []
    gate(env, root, [EXTRANET], HUB_CEILING)  # without the bytes it scans
    assert len(calls) == 1


def test_classified_messages_may_carry_their_own_marking() -> None:
    """A 秘密 message carries 秘密★1年 (or a lower marking): not a stop; only a marking above the label is."""
    env, root = make("秘密", body("<d:Marking>秘密★1年</d:Marking>"), period="1年")
    result = gate(env, root, [INTERNAL_SECRET], HUB_CEILING)
    assert not result.quarantine and result.allowed == (INTERNAL_SECRET,)


def test_an_ordinary_business_ref_is_not_a_marking() -> None:
    env, root = make("公开")
    header = root[0]
    etree.SubElement(header, "{urn:forestry-hub:envelope:1}BusinessRef").text = "吉林发〔2026〕1号"
    assert not gate(env, root, [EXTRANET], HUB_CEILING).quarantine


# ---------------------------------------------------------------------- egress


def serialised(classification: str, *, period: str | None = None, body_xml: str | None = None) -> bytes:
    _, root = make(classification, body_xml, period)
    return to_bytes(root)


@pytest.mark.parametrize("level", range(5), ids=list(CLASSIFICATIONS))
@pytest.mark.parametrize(
    ("zone", "ceiling"),
    [("internal", 3), ("internal", 2), ("extranet", 1), ("internet", 0), ("extranet", 4), ("internet", 2)],
)
def test_egress_each_zone_against_each_level(level: int, zone: str, ceiling: int) -> None:
    data = serialised(CLASSIFICATIONS[level], period="10年" if level >= 2 else None)
    allowed = level <= min(ceiling, {"internal": 4, "extranet": 1, "internet": 0}[zone])
    if allowed:
        egress_allowed(zone, ceiling, data)
    else:
        with pytest.raises(ClassificationBlocked) as info:
            egress_allowed(zone, ceiling, data)
        assert info.value.code == "GATE_CLASSIFICATION"
        assert CLASSIFICATIONS[level] in info.value.detail


def test_egress_reads_any_prefix_or_the_default_namespace() -> None:
    data = serialised("机密", period="10年")
    other = data.replace(b"env:", b"e1:").replace(b"xmlns:env=", b"xmlns:e1=")
    default = data.replace(b"env:", b"").replace(b"xmlns:env=", b"xmlns=")
    for variant in (other, default):
        with pytest.raises(ClassificationBlocked):
            egress_allowed("extranet", 1, variant)
        egress_allowed("internal", 3, variant)


def test_egress_ignores_classification_words_in_the_body() -> None:
    data = serialised("机密", period="10年", body_xml=body("<d:Classification>公开</d:Classification>"))
    with pytest.raises(ClassificationBlocked):
        egress_allowed("internet", 0, data)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda b: b.replace("<env:Classification>公开<".encode(), "<env:Classification> 公开<".encode()),
            id="whitespace",
        ),
        pytest.param(
            lambda b: b.replace("<env:Classification>公开<".encode(), b"<env:Classification>&#20844;&#24320;<"),
            id="character-reference",
        ),
        pytest.param(
            lambda b: b.replace("<env:Classification>公开<".encode(), "<env:Classification>公<!-- -->开<".encode()),
            id="comment",
        ),
        pytest.param(
            lambda b: b.replace("<env:Classification>公开<".encode(), "<env:Classification><![CDATA[公开]]><".encode()),
            id="cdata",
        ),
        pytest.param(lambda b: b.replace("公开".encode(), "公閞".encode(), 1), id="look-alike"),
        pytest.param(
            lambda b: b.replace(
                b"<env:Urgency>", "<env:Classification>公开</env:Classification><env:Urgency>".encode()
            ),
            id="two-classifications",
        ),
        pytest.param(
            lambda b: b.replace("<env:Classification>公开</env:Classification>".encode(), b"<env:Classification/>"),
            id="empty",
        ),
        pytest.param(lambda b: b.replace("<env:Classification>公开</env:Classification>".encode(), b""), id="missing"),
        pytest.param(lambda b: b.replace(b"</env:Classification>", b"</env:Classificatio>"), id="bad-end-tag"),
        pytest.param(
            lambda b: b.replace(b"urn:forestry-hub:envelope:1", b"urn:evil:envelope:1"), id="foreign-namespace"
        ),
        pytest.param(
            lambda b: b.replace(b"<env:Body>", b"<env:Bodx>").replace(b"</env:Body>", b"</env:Bodx>"), id="no-body"
        ),
        pytest.param(lambda b: b.replace(b"<env:Urgency>", b"<env:Urgency>" + b" " * 70_000), id="header-too-long"),
        pytest.param(lambda b: b[:200], id="truncated"),
        pytest.param(lambda b: b"", id="empty-bytes"),
        pytest.param(lambda b: b.decode("utf-8").encode("utf-16"), id="utf-16"),
    ],
)
def test_egress_fails_closed_on_anything_unexpected(tamper) -> None:  # type: ignore[no-untyped-def]
    data = serialised("公开")
    egress_allowed("internet", 0, data)  # the untouched message passes
    with pytest.raises(ClassificationBlocked) as info:
        egress_allowed("internet", 0, tamper(data))
    assert info.value.code == "GATE_CLASSIFICATION"


@pytest.mark.parametrize(
    ("zone", "ceiling", "data"),
    [
        ("moon", 4, None),
        ("internal", -1, None),
        ("internal", True, None),
        ("internal", "3", None),
        ("internal", 3, "not bytes"),
    ],
)
def test_egress_fails_closed_on_bad_arguments(zone, ceiling, data) -> None:  # type: ignore[no-untyped-def]
    payload = serialised("公开") if data is None else data
    with pytest.raises(ClassificationBlocked):
        egress_allowed(zone, ceiling, payload)


def test_egress_is_fast() -> None:
    data = serialised("内部", body_xml=body("<d:Text>" + "林" * 2000 + "</d:Text>"))
    start = time.perf_counter()
    for _ in range(5000):
        egress_allowed("extranet", 1, data)
    per_call = (time.perf_counter() - start) / 5000
    assert per_call < 200e-6, f"{per_call * 1e6:.1f} µs per call"


def test_a_body_dense_with_markings_reports_the_first_few_quickly() -> None:
    """An insider's body full of markings is quarantined with at most MAX_MARKINGS of them (each occurrence used
    to make its own Marking: 167,000 for 4 MiB, 0.7 s)."""
    from hub.routing.gate import MAX_MARKINGS

    line = "秘密★10年 机密★ 绝密★长期 【秘密】 "
    paragraphs = "".join(f"<d:P{i % 3}>{line * 50}</d:P{i % 3}>" for i in range(30))
    found = find_markings(etree.fromstring(f'<d:Doc xmlns:d="urn:x">{paragraphs}</d:Doc>'))
    assert 1 <= len(found) <= MAX_MARKINGS
    assert {m.text for m in found} >= {"秘密★10年"}


def test_too_much_text_mentioning_mi_is_quarantined_for_a_person() -> None:
    """Past MAX_SCAN_CHARS of text holding 密, the gate stops reading and quarantines (fail closed)."""
    from hub.routing.gate import MAX_SCAN_CHARS

    prose = "各单位要保守国家秘密，涉密事项按规定办理。"  # running text: no marking
    small = etree.fromstring(f'<d:Doc xmlns:d="urn:x"><d:P>{prose * 10}</d:P></d:Doc>')
    assert find_markings(small) == ()
    n = MAX_SCAN_CHARS // len(prose) + 1
    big = etree.fromstring(f'<d:Doc xmlns:d="urn:x">{f"<d:P>{prose * 100}</d:P>" * (n // 100 + 1)}</d:Doc>')
    found = find_markings(big)
    assert len(found) == 1 and "人工审查" in found[0].text and found[0].label == "秘密"


def test_normalisation_per_character_matches_nfkc_on_marking_text() -> None:
    import unicodedata

    from hub.routing.gate import _normalise

    for text in ("秘密★１０年", "机\u200b密★", "㊙密", "各单位，涉密事项（一）：", "絕密☆長期", "plain ascii", "𝟏𝟎年"):
        assert _normalise(text) == unicodedata.normalize("NFKC", text).replace("\u200b", "")
