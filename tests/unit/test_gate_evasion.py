"""The classification gate against evasion, through the real processor (``tests.hostile.costly.make_kit``): invisible
and blank characters inside a marking, look-alike stars and variant level characters, a marking in the header's
BusinessRef or in a text attachment, content marked above its own label — and the false positive of a paragraph
ending 保守国家秘密 followed by one beginning with ★ (held for a person: fail closed)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from lxml import etree

from hub.envelope import Party, Recipient, build
from hub.pipeline.processor import Accepted
from hub.routing import GateResult, Target, find_markings, gate
from hub.routing.gate import MAX_MARKINGS, MAX_SCAN_CHARS, _normalise
from tests.hostile.costly import RECIPIENT, SENDER, Kit, make_kit, sample_body

NS = "urn:forestry-hub:document.official:1"
SECURE = ("city-220100-secure", "11220100013544550M")  # internal zone, accreditation 秘密


@pytest.fixture(scope="module")
def kit() -> Kit:
    return make_kit()


def send(
    kit: Kit,
    *,
    paragraph: str | None = None,
    classification: str = "公开",
    period: str | None = None,
    business_ref: str | None = None,
    to: tuple[str, str] = RECIPIENT,
    attachment: tuple[str, str, bytes] | None = None,
) -> Accepted:
    body = sample_body("document.official")
    if paragraph is not None:
        body.find(f"{{{NS}}}MainText/{{{NS}}}Paragraph").text = paragraph
    if attachment is not None:
        name, media, data = attachment
        atts = etree.Element(f"{{{NS}}}Attachments")
        a = etree.SubElement(atts, f"{{{NS}}}Attachment")
        etree.SubElement(a, f"{{{NS}}}FileName").text = name
        etree.SubElement(a, f"{{{NS}}}MediaType").text = media
        etree.SubElement(a, f"{{{NS}}}Sha256").text = hashlib.sha256(data).hexdigest()
        etree.SubElement(a, f"{{{NS}}}Size").text = str(len(data))
        etree.SubElement(a, f"{{{NS}}}Content").text = base64.b64encode(data).decode()
        body.find(f"{{{NS}}}Printing").addprevious(atts)
    root = build(
        service="document.official",
        sender=Party(SENDER[1], SENDER[0]),
        recipients=[Recipient.to(to[1], to[0])],
        body=body,
        classification=classification,
        period=period,
        business_ref=business_ref,
    )
    result = kit.processor.examine(kit.signed(root))
    assert isinstance(result, Accepted), getattr(result, "error", result)
    return result


def delivered(r: Accepted) -> object:
    return [(d.system, d.zone) for d in r.deliveries] if not r.quarantined else "QUARANTINED"


# ---------------------------------------------------------------------- the reviewer's cases, end to end


def test_baseline_star_marking_is_quarantined(kit: Kit) -> None:
    assert send(kit, paragraph="机密★10年 关于某林场火场调查的情况").quarantined


@pytest.mark.parametrize("sep", ["\ufe00", "\ufe0f", "\U000e0100", "\U000e0020", "\u2800", "\u180b"])
def test_invisible_or_blank_character_inside_a_marking(kit: Kit, sep: str) -> None:
    text = f"机{sep}密★10年 关于某林场火场调查的情况"
    r = send(kit, paragraph=text)
    assert r.quarantined, f"{text!r} delivered to {delivered(r)}"
    assert "机密★10年" in [m.text for m in r.markings]


def test_variant_jue_form(kit: Kit) -> None:
    r = send(kit, paragraph="絶密★長期 关于某林场火场调查的情况")  # 絶 U+7D76, the common variant of 絕/绝
    assert r.quarantined, f"delivered to {delivered(r)}"
    assert [m.label for m in r.markings] == ["绝密"]


@pytest.mark.parametrize("star", ["⭐", "✦", "✪", "⋆", "∗", "✱"])
def test_star_lookalikes(kit: Kit, star: str) -> None:
    r = send(kit, paragraph=f"附件：机密{star}10年 火场图")
    assert r.quarantined, f"{star} delivered to {delivered(r)}"


def test_marking_in_business_ref(kit: Kit) -> None:
    r = send(kit, business_ref="机密★10年 吉林发〔2026〕12号")
    assert r.quarantined, f"BusinessRef marking delivered to {delivered(r)}"
    assert [(m.text, m.where) for m in r.markings] == [("机密★10年", "(header)/BusinessRef")]


def test_marking_in_text_attachment(kit: Kit) -> None:
    data = "机密★10年\n关于某林场火场调查的情况\n".encode()
    r = send(kit, attachment=("火场调查.txt", "text/plain", data))
    assert r.quarantined, f"text/plain attachment delivered to {delivered(r)}"
    assert [m.where for m in r.markings] == ["/OfficialDocument/Attachments/Attachment/Content"]


def test_marking_in_csv_attachment(kit: Kit) -> None:
    r = send(kit, attachment=("统计.csv", "text/csv", "密级,单位\n秘密★1年,桦甸\n".encode()))
    assert r.quarantined


def test_text_attachment_that_is_not_utf8_is_quarantined(kit: Kit) -> None:
    r = send(kit, attachment=("火场调查.txt", "text/plain", "机密★10年 关于……".encode("gb18030")))
    assert r.quarantined and "UTF-8" in r.markings[0].text


def test_ordinary_text_attachment_is_delivered(kit: Kit) -> None:
    r = send(kit, attachment=("统计.csv", "text/csv", "单位,检查点数\n双阳区林业站,9\n保守国家秘密,0\n".encode()))
    assert not r.quarantined and r.deliveries


def test_higher_marking_under_confidential_label(kit: Kit) -> None:
    r = send(kit, classification="秘密", period="1年", paragraph="绝密★长期 关于……", to=SECURE)
    assert r.quarantined, f"绝密 content under a 秘密 label delivered to {delivered(r)}"
    assert [m.label for m in r.markings] == ["绝密"]


def test_own_marking_under_confidential_label_is_delivered(kit: Kit) -> None:
    r = send(kit, classification="秘密", period="1年", paragraph="秘密★1年 关于……", to=SECURE)
    assert not r.quarantined and [d.system for d in r.deliveries] == [SECURE[0]]


def test_a_star_bullet_after_a_paragraph_ending_in_state_secrets_is_held_for_a_person(kit: Kit) -> None:
    """Fail closed: read across paragraphs, 保守国家秘密 + ★重点任务 is 秘密★. A line or element boundary as a wall
    (tried) let 机密\n★10年, 机密\x85★10年 and <b>机密</b><b>★</b> through to the extranet."""
    body = sample_body("document.official")
    paras = body.find(f"{{{NS}}}MainText")
    paras[0].text = "各单位要严格遵守保密纪律，保守国家秘密"
    paras[1].text = "★重点任务：压实防火责任。"
    root = build(
        service="document.official",
        sender=Party(SENDER[1], SENDER[0]),
        recipients=[Recipient.to(RECIPIENT[1], RECIPIENT[0])],
        body=body,
    )
    r = kit.processor.examine(kit.signed(root))
    assert isinstance(r, Accepted)
    assert r.quarantined and [m.text for m in r.markings] == ["秘密★"]


@pytest.mark.parametrize("text", ["〖机密〗\n关于……", "「机密」\n关于……", "机密：10年\n关于……"])
def test_bracket_heading_forms(kit: Kit, text: str) -> None:
    r = send(kit, paragraph=text)
    assert r.quarantined, f"{text!r} delivered to {delivered(r)}"


# ---------------------------------------------------------------------- the rule, directly


def doc(inner: str) -> etree._Element:
    return etree.fromstring(f'<d:Document xmlns:d="{NS}">{inner}</d:Document>')


@pytest.mark.parametrize(
    "sep",
    [
        "\u00ad",  # soft hyphen
        "\u061c",  # Arabic letter mark
        "\u2063",  # invisible separator
        "\u2066",  # left-to-right isolate
        "\ufff0",  # unassigned, Default_Ignorable
        "\U0001bca1",  # shorthand format continuing overlap
        "\U0001d173",  # musical symbol begin beam
        "\U000e0001",  # language tag
        "\U000e01ef",  # variation selector 256
        "\U000e0fff",  # unassigned, Default_Ignorable
        "\u0301",  # combining acute (Mn)
        "\u20dd",  # combining enclosing circle (Me)
        "\U0001e8d0",  # Mende Kikakui combining number (Mn, beyond the BMP)
    ],
)
def test_ignorable_characters_are_removed(sep: str) -> None:
    assert [m.text for m in find_markings(doc(f"<d:P>机{sep}密★{sep}10年</d:P>"))] == ["机密★10年"]


@pytest.mark.parametrize("blank", ["\u115f", "\u1160", "\u2800", "\u3164", "\uffa0"])
def test_blank_characters_are_whitespace(blank: str) -> None:
    # inside the star form they vanish like a space; after a heading they end it like a space
    assert "秘密★" in [m.text for m in find_markings(doc(f"<d:P>秘{blank}密{blank}★</d:P>"))]
    assert [m.text for m in find_markings(doc(f"<d:P>机密{blank}关于某林场的调查报告</d:P>"))] == ["机密"]


def test_normalisation_keeps_plain_text_and_strips_beyond_the_bmp() -> None:
    assert _normalise("关于做好春季森林防火工作的通知") == "关于做好春季森林防火工作的通知"
    assert _normalise("机\U000e0100密\U0001d7cf") == "机密1"  # tag/selector removed, 𝟏 is 1


def test_every_listed_star_is_a_separator() -> None:
    from hub.routing.gate import _STARS

    stars = [c for c in _STARS if c != "-"] + [chr(c) for c in range(0x1F7AF, 0x1F7D5)]
    for star in stars:
        assert find_markings(doc(f"<d:P>秘密{star}</d:P>")), f"U+{ord(star):04X}"
        assert find_markings(doc(f"<d:P>秘密 {star} 1年\n正文</d:P>")), f"U+{ord(star):04X}"


def test_no_line_break_or_element_boundary_hides_a_star_marking() -> None:
    for text in (
        "<d:P>本文件机密\n★10年</d:P>",
        "<d:P>本文件机密\x85★10年</d:P>",  # NEL: many viewers show nothing
        "<d:P>本文件机密\u2028★10年</d:P>",
        "<d:P>本文件机密\u2029★10年</d:P>",
        "<d:P>本文件机密</d:P><d:P>★10年</d:P>",
    ):
        assert "机密★10年" in [m.text for m in find_markings(doc(text))], text
    # (and so, fail closed, a ★ bullet after a line ending 保守国家秘密 is held for a person)
    assert [m.text for m in find_markings(doc("<d:P>各单位要保守国家秘密\n★重点任务：压实防火责任。</d:P>"))] == [
        "秘密★"
    ]
    # a level word split over elements or lines is still whole (the existing rule)
    assert [m.text for m in find_markings(doc("<d:P>机</d:P><d:P>密★3年</d:P>"))] == ["机密★3年"]
    assert [m.text for m in find_markings(doc("<d:P>机\n密★3年</d:P>"))] == ["机密★3年"]
    # the heading rule reads a level word alone on its line as well
    assert "机密" in [m.text for m in find_markings(doc("<d:P>机密\n★10年</d:P>"))]


def test_marking_above_the_label_is_found_past_many_own_markings() -> None:
    """Under 秘密, a body of 秘密★ markings (not stops) must not use up the report before a 绝密 one."""
    many = "".join(f"<d:P{i}>秘密★1年</d:P{i}>" for i in range(MAX_MARKINGS * 2))
    found = find_markings(doc(many + "<d:Q>绝密★长期</d:Q>"), label=2)
    assert [(m.text, m.label) for m in found] == [("绝密★长期", "绝密")]
    assert find_markings(doc(many + "<d:Q>机密★</d:Q>"), label=3) == ()


INTERNAL_SECRET = Target("prov-220000-secure", "11220000013544357T", "to", "internal", 3)


def gated(classification: str, inner: str, period: str | None = "10年", business_ref: str | None = None) -> GateResult:
    from hub.envelope import Envelope
    from hub.trust.signature import c14n

    root = build(
        service="document.official",
        sender=Party("11220000013544357T", "prov-220000-oa"),
        recipients=[Recipient.to_group("city-bureaus")],
        body=doc(inner),
        classification=classification,
        period=period,
        business_ref=business_ref,
    )
    env = Envelope.from_tree(root)
    result = gate(env, root, [INTERNAL_SECRET], 3)
    assert gate(env, root, [INTERNAL_SECRET], 3, signed_bytes=c14n(root)) == result
    return result


def test_secret_label_with_top_secret_content_is_quarantined() -> None:
    r = gated("机密", "<d:P>绝密★长期</d:P>")
    assert r.quarantine and r.allowed == (INTERNAL_SECRET,)
    r = gated("机密", "<d:P>机密★10年</d:P><d:Q>秘密★</d:Q>")
    assert not r.quarantine


def test_business_ref_marking_with_and_without_signed_bytes() -> None:
    r = gated("公开", "<d:P>正文</d:P>", period=None, business_ref="秘密★ 吉林发〔2026〕1号")
    assert [m.where for m in r.markings] == ["(header)/BusinessRef"]


def test_text_attachment_without_mi_in_the_bytes_is_still_read() -> None:
    content = base64.b64encode("秘密★1年".encode()).decode()
    inner = f"<d:A><d:MediaType>text/plain</d:MediaType><d:Content>{content}</d:Content></d:A>"
    assert gated("公开", inner, period=None).quarantine
    pdf = f"<d:A><d:MediaType>application/pdf</d:MediaType><d:Content>{content}</d:Content></d:A>"
    assert not gated("公开", pdf, period=None).quarantine


def test_text_attachment_past_the_budget_is_quarantined_for_a_person() -> None:
    prose = "各单位要保守国家秘密，涉密事项按规定办理。\n" * (MAX_SCAN_CHARS // 20)
    content = base64.b64encode(prose.encode()).decode()
    found = find_markings(doc(f"<d:A><d:MediaType>text/plain</d:MediaType><d:Content>{content}</d:Content></d:A>"))
    assert len(found) == 1 and "人工审查" in found[0].text
