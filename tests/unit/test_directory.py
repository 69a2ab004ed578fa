"""The directory: loading the demo file, every kind of bad file (reported with the right line, all at once),
group expansion, addressing errors and zone ceilings."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.directory import ConfigProblems, Directory, check_directory, load_directory
from hub.directory.model import ZONE_MAX
from hub.envelope import Recipient
from hub.envelope.agency_code import complete, is_valid
from hub.errors import ConfigError, NoRoute
from hub.settings import PROJECT_ROOT

DEMO = PROJECT_ROOT / "routes" / "directory.xml"
DEMO_TEXT = DEMO.read_text(encoding="utf-8")

NFGA = "11100000000019136N"
GOV = "112200000135440012"
PROV = "11220000013544357T"
CHANGCHUN = "11220100013544550M"
JILIN_CITY = "112202000136132524"
YANBIAN = "112224000140973218"
NONGAN = "11220122013550216R"
DUNHUA = "11222403014102856B"
JLSG = "912200001239209873"
CITY_DIVISIONS = ("220100", "220200", "220300", "220400", "220500", "220600", "220700", "220800", "222400")


@pytest.fixture(scope="module")
def directory() -> Directory:
    return load_directory(DEMO)


def line_of(text: str, needle: str, *, last: bool = False) -> int:
    """The line lxml reports for the element whose start tag contains ``needle``: libxml2's sourceline is the
    line on which the start tag ends."""
    if not last:
        assert text.count(needle) == 1, f"{needle!r} must occur exactly once"
    at = text.rindex(needle) if last else text.index(needle)
    return text[: text.index(">", at)].count("\n") + 1


def mutate(tmp_path: Path, *replacements: tuple[str, str]) -> tuple[Path, str]:
    text = DEMO_TEXT
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} must occur exactly once in the demo directory"
        text = text.replace(old, new)
    path = tmp_path / "directory.xml"
    path.write_text(text, encoding="utf-8")
    return path, text


def problems_of(path: Path) -> list[tuple[int, str]]:
    directory, problems = check_directory(path)
    assert directory is None
    assert all(p.file == str(path) for p in problems)
    return [(p.line, p.code) for p in problems]


# ---------------------------------------------------------------------- the demo directory


def test_demo_directory_loads_with_every_city_bureau(directory: Directory) -> None:
    cities = [a for a in directory.agencies() if a.level == "city" and a.kind == "bureau"]
    assert sorted(a.division for a in cities) == sorted(CITY_DIVISIONS)
    assert all(a.parent == PROV for a in cities)
    assert directory.agency(PROV).name == "吉林省林业和草原局"
    assert directory.agency(NFGA).division == "100000"
    assert directory.agency(GOV).kind == "government"
    assert all(is_valid(a.code) for a in directory.agencies())
    # every city code is built the documented way: '11' + division + 9 characters + check character
    assert all(a.code == complete(a.code[:17]) and a.code[2:8] == a.division for a in cities)
    assert directory.system("city-220100-oa").agency == CHANGCHUN
    assert directory.hub_system == "hub" and directory.hub_zone == "internal" and directory.hub_ceiling == 3
    assert directory.hub.agency == PROV


def test_demo_systems_and_ceilings(directory: Directory) -> None:
    assert directory.ceiling("prov-220000-secure") == 3  # internal, accredited 机密
    assert directory.ceiling("prov-220000-oa") == 1  # extranet: 内部
    assert directory.ceiling("prov-220000-portal") == 0  # internet: 公开
    assert directory.ceiling("city-220100-secure") == 2  # internal, accredited 秘密
    for s in directory.systems():
        assert s.ceiling <= ZONE_MAX[s.zone]
    ids = {s.id for s in directory.systems_of(PROV)}
    assert {"prov-220000-oa", "prov-220000-secure", "prov-220000-approval", "prov-220000-video", "hub"} <= ids


def test_directory_equality_ignores_lines(directory: Directory) -> None:
    again = load_directory(DEMO)
    assert again == directory
    assert again.sha256 is not None and len(again.sha256) == 64


# ---------------------------------------------------------------------- group expansion


def ids(systems: list) -> list[str]:  # type: ignore[type-arg]
    return [s.id for s in systems]


def test_county_bureaus_under_a_city(directory: Directory) -> None:
    got = ids(directory.expand(Recipient.to_group("county-bureaus:220100"), "document.official/1"))
    assert got == ["county-220122-oa", "county-220182-oa", "county-220183-oa"]
    got = ids(directory.expand(Recipient.to_group("county-bureaus:222400"), "emergency.alert"))
    assert got == ["county-222403-oa", "county-222404-oa", "county-222424-oa"]


def test_city_bureaus_expand_to_accepting_systems_only(directory: Directory) -> None:
    alerts = directory.expand(Recipient.to_group("city-bureaus"), "emergency.alert")
    assert ids(alerts) == [f"city-{d}-oa" for d in CITY_DIVISIONS]
    documents = ids(directory.expand(Recipient.to_group("city-bureaus:220000"), "document.official"))
    # the secure systems accept official documents too
    assert "city-220100-secure" in documents and "city-222400-secure" in documents
    assert len(documents) == 9 + 3
    meeting = ids(directory.expand(Recipient.to_group("city-bureaus"), "meeting.notice"))
    assert not any(i.endswith("-secure") for i in meeting)


def test_local_bureaus_and_anchor_below_the_province(directory: Directory) -> None:
    everything = ids(directory.expand(Recipient.to_group("local-bureaus"), "emergency.alert"))
    assert len(everything) == 9 + 8
    assert "ent-220000-jlsg-oa" not in everything  # enterprises are not bureaus
    assert "prov-220000-oa" not in everything
    under_yanbian = ids(directory.expand(Recipient.to_group("local-bureaus:222400"), "emergency.alert"))
    assert under_yanbian == ["county-222403-oa", "county-222404-oa", "county-222424-oa"]


def test_named_group_with_nested_computed_group_and_single_systems(directory: Directory) -> None:
    got = ids(directory.expand(Recipient.to_group("fire-command"), "emergency.alert"))
    assert "gov-220000-oa" in got and "prov-220000-duty" in got and "ent-220000-jlsg-oa" in got
    assert "prov-220000-oa" not in got  # the department is a member through its duty platform only
    assert "county-222424-oa" in got and "city-220100-oa" in got
    assert len(got) == len(set(got))


def test_agency_address_means_its_accepting_systems(directory: Directory) -> None:
    assert ids(directory.expand(Recipient.to(PROV), "data.query")) == ["prov-220000-approval", "prov-220000-data"]
    assert ids(directory.expand(Recipient.to(PROV, "prov-220000-secure"), "document.official")) == [
        "prov-220000-secure"
    ]


def test_hub_replies_reach_every_system_but_the_hub(directory: Directory) -> None:
    assert ids(directory.expand(Recipient.to(PROV, "prov-220000-portal"), "hub.receipt/1")) == ["prov-220000-portal"]
    assert "hub" not in ids(directory.expand(Recipient.to(PROV), "hub.error"))
    with pytest.raises(NoRoute):
        directory.expand(Recipient.to(PROV, "hub"), "hub.error")


@pytest.mark.parametrize(
    ("recipient", "code", "named"),
    [
        (Recipient.to_group("no-such-group"), "ROUTE_UNKNOWN_RECIPIENT", "no-such-group"),
        (Recipient.to_group("county-bureaus:220900"), "ROUTE_UNKNOWN_RECIPIENT", "220900"),
        (Recipient.to_group("fire-command:220100"), "ROUTE_UNKNOWN_RECIPIENT", "fire-command:220100"),
        (Recipient.to(complete("11229900013544999")), "ROUTE_UNKNOWN_RECIPIENT", "11229900013544999"),
        (Recipient.to(PROV, "city-220100-oa"), "ROUTE_UNKNOWN_RECIPIENT", "city-220100-oa"),
        (Recipient.to(PROV, "prov-220000-nope"), "ROUTE_UNKNOWN_RECIPIENT", "prov-220000-nope"),
        (Recipient.to(PROV, "prov-220000-video"), "ROUTE_NO_ROUTE", "prov-220000-video"),
        (Recipient.to(GOV), "ROUTE_NO_ROUTE", GOV),
        (Recipient.to_group("changbai-key-counties"), "ROUTE_NO_ROUTE", "changbai-key-counties"),
    ],
)
def test_expand_errors_name_what_is_wrong(directory: Directory, recipient: Recipient, code: str, named: str) -> None:
    service = "approval.application" if code == "ROUTE_NO_ROUTE" else "document.official"
    with pytest.raises(NoRoute) as info:
        directory.expand(recipient, service)
    assert info.value.code == code
    assert named in info.value.detail


def test_unknown_lookups_are_no_route(directory: Directory) -> None:
    with pytest.raises(NoRoute) as info:
        directory.system("city-229900-oa")
    assert info.value.code == "ROUTE_UNKNOWN_RECIPIENT"
    with pytest.raises(NoRoute):
        directory.agency(complete("11229900013544999"))


def test_tree_queries(directory: Directory) -> None:
    assert directory.ancestors(NONGAN) == (CHANGCHUN, PROV, NFGA)
    assert directory.is_below(DUNHUA, YANBIAN) and directory.is_below(DUNHUA, PROV)
    assert not directory.is_below(DUNHUA, CHANGCHUN)
    assert set(directory.children(CHANGCHUN)) == {NONGAN, "11220182013552847D", "11220183013553609R"}


# ---------------------------------------------------------------------- bad files, each with its line


CHANGCHUN_TAG = f'<Agency code="{CHANGCHUN}" name="长春市林业局"'


def test_bad_check_character(tmp_path: Path) -> None:
    bad = CHANGCHUN[:17] + "N"
    path, text = mutate(tmp_path, (CHANGCHUN_TAG, f'<Agency code="{bad}" name="长春市林业局"'))
    found = problems_of(path)
    assert (line_of(text, f'<Agency code="{bad}"'), "SCHEMA_AGENCY_CODE") in found
    # the counties that name the old code as parent are reported too (every problem, not just the first)
    assert sum(1 for _, code in found if code == "DIR_UNKNOWN_REF") == 3


def test_unknown_parent(tmp_path: Path) -> None:
    ghost = complete("11229900013544999")
    path, text = mutate(
        tmp_path,
        (
            f'division="220122" level="county" kind="bureau" parent="{CHANGCHUN}"',
            f'division="220122" level="county" kind="bureau" parent="{ghost}"',
        ),
    )
    assert problems_of(path) == [(line_of(text, f'<Agency code="{NONGAN}" name='), "DIR_UNKNOWN_REF")]


def test_duplicate_agency_code(tmp_path: Path) -> None:
    siping = "11220300013700183Y"
    path, text = mutate(tmp_path, ('<Agency code="11220400013785926N"', f'<Agency code="{siping}" '))
    assert (line_of(text, f'<Agency code="{siping}" ', last=True), "DIR_DUPLICATE") in problems_of(path)


def test_duplicate_system_id(tmp_path: Path) -> None:
    path, text = mutate(tmp_path, ('<System id="city-220400-oa"', '<System id="city-220300-oa" '))
    assert (line_of(text, '<System id="city-220300-oa" ', last=True), "DIR_DUPLICATE") in problems_of(path)


def test_group_member_unknown(tmp_path: Path) -> None:
    ghost = complete("11229900013544999")
    path, text = mutate(tmp_path, ('    <Agency code="11220282013619735U"/>', f'    <Agency code="{ghost}"/>'))
    assert problems_of(path) == [(line_of(text, f'<Agency code="{ghost}"/>'), "DIR_UNKNOWN_REF")]


def test_group_member_unknown_system_and_group(tmp_path: Path) -> None:
    path, text = mutate(
        tmp_path,
        (f'<Agency code="{GOV}" system="gov-220000-oa"/>', f'<Agency code="{GOV}" system="prov-220000-oa"/>'),
        ('<Group name="local-bureaus"/>', '<Group name="county-bureaus:229900"/>'),
    )
    assert sorted(problems_of(path)) == [
        (line_of(text, 'system="prov-220000-oa"/>'), "DIR_UNKNOWN_REF"),
        (line_of(text, '<Group name="county-bureaus:229900"/>'), "DIR_UNKNOWN_REF"),
    ]


def test_cycle_in_parent_chain(tmp_path: Path) -> None:
    path, text = mutate(
        tmp_path,
        (
            'division="100000" level="nation" kind="bureau" zone="extranet"',
            f'division="100000" level="nation" kind="bureau" zone="extranet" parent="{PROV}"',
        ),
    )
    found = problems_of(path)
    assert (line_of(text, f'<Agency code="{NFGA}" name='), "DIR_CYCLE") in found
    # a nation-level agency under a provincial one is also out of order
    assert (line_of(text, f'<Agency code="{NFGA}" name='), "DIR_INCONSISTENT") in found


def test_ceiling_above_zone_maximum(tmp_path: Path) -> None:
    path, text = mutate(
        tmp_path,
        (
            'name-en="Public portal (Jilin government services, forestry section)" zone="internet"',
            'name-en="Public portal (Jilin government services, forestry section)" zone="internet" accreditation="内部"',
        ),
        ('<System id="city-220300-oa"', '<System id="city-220300-oa" accreditation="秘密"'),
    )
    found = problems_of(path)
    assert (line_of(text, '<System id="prov-220000-portal"'), "DIR_CEILING") in found
    assert (line_of(text, '<System id="city-220300-oa"'), "DIR_CEILING") in found
    assert len(found) == 2


def test_internal_system_needs_accreditation(tmp_path: Path) -> None:
    path, text = mutate(
        tmp_path,
        (
            'zone="internal" accreditation="秘密" accepts="document.official document.receipt"/>\n  </Agency>\n\n'
            '  <Agency code="112202000136132524"',
            'zone="internal" accepts="document.official document.receipt"/>\n  </Agency>\n\n'
            '  <Agency code="112202000136132524"',
        ),
    )
    assert problems_of(path) == [(line_of(text, '<System id="city-220100-secure"'), "DIR_INCONSISTENT")]


def test_hub_ceiling_must_match_the_hub_system_and_zone(tmp_path: Path) -> None:
    path, text = mutate(tmp_path, ('hub-ceiling="机密"', 'hub-ceiling="绝密"'))
    assert problems_of(path) == [(line_of(text, '<System id="hub"'), "DIR_INCONSISTENT")]
    path, text = mutate(tmp_path, ('hub-zone="internal" hub-ceiling="机密"', 'hub-zone="extranet" hub-ceiling="机密"'))
    found = problems_of(path)
    assert (line_of(text, "<Directory "), "DIR_CEILING") in found
    path, text = mutate(tmp_path, ('hub-system="hub"', 'hub-system="hub-two"'))
    assert problems_of(path) == [(line_of(text, "<Directory "), "DIR_UNKNOWN_REF")]


def test_division_must_fit_the_tier(tmp_path: Path) -> None:
    path, text = mutate(
        tmp_path,
        ('division="220300" level="city"', 'division="220301" level="city"'),
        ('division="222424" level="county"', 'division="220424" level="county"'),
    )
    assert sorted(problems_of(path)) == [
        (line_of(text, '<Agency code="11220300013700183Y" name='), "DIR_INCONSISTENT"),
        (line_of(text, '<Agency code="11222424014107528Y" name='), "DIR_INCONSISTENT"),
    ]


def test_group_cycle_and_reserved_name(tmp_path: Path) -> None:
    extra = (
        '  <Group name="ring-a" title="甲">\n    <Group name="ring-b"/>\n  </Group>\n'
        '  <Group name="ring-b" title="乙">\n    <Group name="ring-a"/>\n  </Group>\n'
        '  <Group name="city-bureaus" title="重名">\n    <Agency code="11220000013544357T"/>\n  </Group>\n'
        "</Directory>"
    )
    path, text = mutate(tmp_path, ("</Directory>", extra))
    found = problems_of(path)
    assert (line_of(text, '<Group name="ring-a" title'), "DIR_CYCLE") in found
    assert (line_of(text, '<Group name="city-bureaus" title'), "DIR_INCONSISTENT") in found


def test_schema_errors_are_all_reported_with_lines(tmp_path: Path) -> None:
    path, text = mutate(
        tmp_path,
        ('division="220400" level="city"', 'division="220400" level="town"'),
        ('<System id="city-220500-oa"', '<System id="City_220500"'),
    )
    found = problems_of(path)
    assert (line_of(text, '<Agency code="11220400013785926N" name='), "CONFIG_SCHEMA") in found
    assert (line_of(text, '<System id="City_220500"'), "CONFIG_SCHEMA") in found


def test_unsafe_or_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "d.xml"
    path.write_text('<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY x "y">]>\n<Directory/>', encoding="utf-8")
    assert problems_of(path) == [(2, "CONFIG_MALFORMED")]
    path.write_text('<Directory xmlns="urn:forestry-hub:directory:1">\n<Agency>\n</Directory>', encoding="utf-8")
    [(line, code)] = problems_of(path)
    assert code == "CONFIG_MALFORMED" and line == 3
    assert problems_of(tmp_path / "missing.xml") == [(0, "IO_READ")]


def test_load_raises_config_error_listing_every_problem(tmp_path: Path) -> None:
    ghost = complete("11229900013544999")
    path, _ = mutate(
        tmp_path,
        ('<System id="city-220400-oa"', '<System id="city-220300-oa" '),
        ('    <Agency code="11220282013619735U"/>', f'    <Agency code="{ghost}"/>'),
    )
    with pytest.raises(ConfigError) as info:
        load_directory(path)
    err = info.value
    assert isinstance(err, ConfigProblems)
    assert err.code == "CONFIG"
    codes = {p.code for p in err.problems}
    assert {"DIR_DUPLICATE", "DIR_UNKNOWN_REF"} <= codes
    for p in err.problems:
        assert f"{path}:{p.line}: {p.code}:" in str(err)


# ---------------------------------------------------------------------- the gateway's limits


def test_gateway_limits_are_read_and_optional(directory: Directory) -> None:
    portal = directory.system("prov-220000-portal")
    assert (portal.rate, portal.concurrency) == (50, 16)
    assert (directory.system("prov-220000-approval").rate, directory.system("prov-220000-approval").concurrency) == (
        200,
        32,
    )
    data = directory.system("prov-220000-data")
    assert (data.rate, data.concurrency) == (20, None)
    oa = directory.system("city-220100-oa")
    assert (oa.rate, oa.concurrency) == (None, None)


@pytest.mark.parametrize(
    ("attrs", "ok"),
    [
        ('rate="1" concurrency="1"', True),
        ('rate="100000" concurrency="1000"', True),
        ('rate="0"', False),
        ('rate="100001"', False),
        ('rate="-5"', False),
        ('rate="2.5"', False),
        ('rate="fast"', False),
        ('rate="007"', False),
        ('concurrency="0"', False),
        ('concurrency="1001"', False),
    ],
)
def test_gateway_limits_are_checked_by_the_schema(tmp_path: Path, attrs: str, ok: bool) -> None:
    path, text = mutate(tmp_path, ('<System id="city-220100-oa"', f'<System id="city-220100-oa" {attrs}'))
    directory, problems = check_directory(path)
    if ok:
        assert directory is not None and not problems
        oa = directory.system("city-220100-oa")
        values = dict(a.split("=") for a in attrs.split())
        assert oa.rate == int(values["rate"].strip('"')) and oa.concurrency == int(values["concurrency"].strip('"'))
    else:
        assert set(problems_of(path)) == {(line_of(text, '<System id="city-220100-oa"'), "CONFIG_SCHEMA")}


def test_gateway_limits_are_part_of_a_system_and_listed(directory: Directory) -> None:
    from dataclasses import replace

    from hub.commands.directory import render

    portal = directory.system("prov-220000-portal")
    assert replace(portal, rate=51) != portal
    listing = render(directory)
    line = next(ln for ln in listing.splitlines() if "prov-220000-portal" in ln)
    assert line.endswith("[网关 gateway 50/s ×16]")
    assert "gateway" not in next(ln for ln in listing.splitlines() if "city-220100-oa " in ln)


def test_gateway_addresses_are_addresses_or_networks(tmp_path: Path) -> None:
    """``gateway-addresses``: where the system may call the HTTPS gateway from, normalised to networks; an item that
    is not an address or network is DIR_ADDRESS at the system's line, characters no address has are the schema's."""
    old = 'zone="extranet" accepts="data.query" rate="20"/>'
    path, _ = mutate(tmp_path, (old, old.replace("/>", ' gateway-addresses="10.20.0.0/16 192.0.2.7 2001:db8::/32"/>')))
    directory, problems = check_directory(path)
    assert directory is not None and not problems
    assert directory.system("prov-220000-data").gateway_addresses == ("10.20.0.0/16", "192.0.2.7/32", "2001:db8::/32")
    assert directory.system("prov-220000-approval").gateway_addresses == ()  # absent: from anywhere

    path, text = mutate(tmp_path, (old, old.replace("/>", ' gateway-addresses="10.20.0.300/16 192.0.2.7"/>')))
    assert problems_of(path) == [(line_of(text, '<System id="prov-220000-data"'), "DIR_ADDRESS")]
    path, _ = mutate(tmp_path, (old, old.replace("/>", ' gateway-addresses="gateway.example.cn"/>')))
    found = problems_of(path)
    assert found and {code for _, code in found} == {"CONFIG_SCHEMA"}, found
