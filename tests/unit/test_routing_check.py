"""``hub routes check``: every problem of a route file, with file and line, in the documented format."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from hub.cli import main
from hub.directory import Directory, load_directory
from hub.envelope.agency_code import complete
from hub.policy import URGENCY_PRIORITY
from hub.routing.routes import DEFAULT_POLICY, check_routes, known_services, parse_duration
from hub.settings import PROJECT_ROOT

DIRECTORY = PROJECT_ROOT / "routes" / "directory.xml"
PROV = "11220000013544357T"
LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<code>[A-Z_]+): (?P<title>\S.*?) — (?P<message>.+)$")


@pytest.fixture(scope="module")
def directory() -> Directory:
    return load_directory(DIRECTORY)


def write(tmp_path: Path, name: str, routes: str, defaults: str = "") -> tuple[Path, str]:
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Routes xmlns="urn:forestry-hub:routes:1">\n'
        f"{defaults}"
        f"{routes}"
        "</Routes>\n"
    )
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path, text


def line_of(text: str, needle: str) -> int:
    assert text.count(needle) == 1, needle
    return text[: text.index(">", text.index(needle))].count("\n") + 1


GOOD = """  <Route name="doc-down" service="document.official" version="1">
    <From><Level value="province"/></From>
    <To><Subordinate/></To>
  </Route>
"""


def problems(paths: list[Path], directory: Directory | None) -> list[tuple[str, int, str]]:
    table, found = check_routes(paths, directory, services=known_services(PROJECT_ROOT / "schemas"))
    assert (table is None) == bool(found)
    return [(Path(p.file).name, p.line, p.code) for p in found]


def test_good_file_loads_with_defaults(tmp_path: Path, directory: Directory) -> None:
    path, _ = write(tmp_path, "a.xml", GOOD)
    table, found = check_routes([path], directory)
    assert found == [] and table is not None
    route = table.route("doc-down")
    assert route.policy == DEFAULT_POLICY
    assert route.version == 1 and route.file == str(path)


def test_defaults_and_route_policy_merge(tmp_path: Path, directory: Directory) -> None:
    route = GOOD.replace(
        "  </Route>",
        '    <Policy max-ttl="2h"><Urgency level="特急" priority="9"/></Policy>\n  </Route>',
    )
    defaults = '  <Defaults max-ttl="1d"><Retry attempts="3" backoff="10 60"/><Urgency level="平件" priority="4"/></Defaults>\n'
    path, _ = write(tmp_path, "a.xml", route, defaults)
    table, found = check_routes([path], directory)
    assert found == [] and table is not None
    p = table.route("doc-down").policy
    assert p.max_ttl == parse_duration("2h")
    assert p.retry.attempts == 3 and p.retry.backoff == (10, 60)
    assert p.priority("平件") == 4 and p.priority("特急") == 9
    assert p.priority("加急") == DEFAULT_POLICY.priority("加急") == URGENCY_PRIORITY["加急"]


def test_every_reference_problem_is_reported_with_its_line(tmp_path: Path, directory: Directory) -> None:
    bad_code = PROV[:17] + "U"
    ghost = complete("11229900013544999")
    routes = f"""  <Route name="refs" service="document.official" version="1">
    <From>
      <Agency code="{bad_code}"/>
      <Agency code="{ghost}"/>
      <System id="prov-220000-nope"/>
    </From>
    <To>
      <Group name="no-such-group"/>
      <Group name="county-bureaus:229900"/>
      <Agency code="{PROV}" system="city-220100-oa"/>
    </To>
  </Route>
"""
    path, text = write(tmp_path, "refs.xml", routes)
    found = problems([path], directory)
    expected = [
        ("refs.xml", line_of(text, f'<Agency code="{bad_code}"'), "SCHEMA_AGENCY_CODE"),
        ("refs.xml", line_of(text, f'<Agency code="{ghost}"'), "ROUTES_UNKNOWN_REF"),
        ("refs.xml", line_of(text, '<System id="prov-220000-nope"'), "ROUTES_UNKNOWN_REF"),
        ("refs.xml", line_of(text, '<Group name="no-such-group"'), "ROUTES_UNKNOWN_REF"),
        ("refs.xml", line_of(text, '<Group name="county-bureaus:229900"'), "ROUTES_UNKNOWN_REF"),
        ("refs.xml", line_of(text, 'system="city-220100-oa"'), "ROUTES_UNKNOWN_REF"),
    ]
    for item in expected:
        assert item in found
    # nothing the To names exists, so the route is also reported as reaching no system
    assert ("refs.xml", line_of(text, '<Route name="refs"'), "ROUTES_UNREACHABLE") in found


def test_policy_problems(tmp_path: Path, directory: Directory) -> None:
    routes = """  <Route name="pol" service="document.official" version="1">
    <From><Level value="province"/></From>
    <To><Subordinate/></To>
    <Policy max-ttl="1h">
      <Retry attempts="2" backoff="1 2 5"/>
      <Urgency level="特急" priority="9"/>
      <Urgency level="特急" priority="8"/>
    </Policy>
  </Route>
"""
    path, text = write(tmp_path, "pol.xml", routes)
    assert sorted(problems([path], directory)) == [
        ("pol.xml", line_of(text, "<Retry "), "ROUTES_POLICY"),
        ("pol.xml", line_of(text, '<Urgency level="特急" priority="8"'), "ROUTES_POLICY"),
    ]


def test_a_route_never_promises_what_the_hub_does_not_do(
    tmp_path: Path, directory: Directory, capsys: pytest.CaptureFixture[str]
) -> None:
    """An acknowledgement time on a route the emergencies process does not follow and a back-off delay without a
    retry queue are refused where they are set, each with its line, ROUTES_NOT_ENACTED and a sentence saying what
    the hub does instead. A lane per urgency is enacted (the emergency-lane entitlement) and accepted."""
    routes = """  <Route name="promise" service="document.official" version="1">
    <From><Level value="province"/></From>
    <To><Subordinate/></To>
    <Policy max-ttl="1h">
      <Retry attempts="4" backoff="1 7 45"/>
      <Urgency level="特急" priority="9" lane="emergency"/>
      <Acknowledge within="30m"/>
    </Policy>
  </Route>
"""
    path, text = write(tmp_path, "promise.xml", routes)
    assert sorted(problems([path], directory)) == [
        ("promise.xml", line_of(text, "<Retry "), "ROUTES_NOT_ENACTED"),
        ("promise.xml", line_of(text, "<Acknowledge "), "ROUTES_NOT_ENACTED"),
    ]
    assert main(["routes", "check", str(path), "--directory", str(DIRECTORY)]) == 1
    out = capsys.readouterr().out
    assert "backoff 7 45 s has no retry queue" in out
    assert "tracks recipients' acknowledgements of emergency.* messages only" in out
    for line in out.splitlines():
        m = LINE.match(line)
        assert m and m["code"] == "ROUTES_NOT_ENACTED" and m["title"] == "路由声明了枢纽不执行的策略", line


def test_an_emergency_route_enacts_its_acknowledgement_time_and_lane(tmp_path: Path, directory: Directory) -> None:
    """Acknowledge on an emergency.* route (or in its file's Defaults) is the limit the emergencies process applies;
    Urgency lane="emergency" entitles that urgency to the emergency lane; lane="normal" grants nothing."""

    routes = """  <Route name="alert" service="emergency.alert" version="1">
    <From><Level value="county"/></From>
    <To><Level value="city"/></To>
    <Policy>
      <Urgency level="加急" priority="8" lane="emergency"/>
      <Urgency level="平件" priority="7" lane="normal"/>
      <Acknowledge within="20m"/>
    </Policy>
  </Route>
"""
    path, _ = write(tmp_path, "alert.xml", routes)
    table, found = check_routes([path], directory)
    assert found == [] and table is not None
    policy = table.route("alert").policy
    assert policy.ack_within == timedelta(minutes=20)
    assert policy.grants_emergency_lane("加急") and not policy.grants_emergency_lane("平件")
    assert not policy.grants_emergency_lane("特急")  # (特急 is entitled by lane_for, not by this route)


def test_hub_services_only_from_the_hub(tmp_path: Path, directory: Directory) -> None:
    routes = """  <Route name="everything" service="*">
    <From><Any/></From>
    <To><Any/></To>
  </Route>
  <Route name="hub-ok" service="hub.*">
    <From><Hub/></From>
    <To><Any/></To>
  </Route>
"""
    path, text = write(tmp_path, "hub.xml", routes)
    assert problems([path], directory) == [("hub.xml", line_of(text, '<Route name="everything"'), "ROUTES_POLICY")]


def test_unreachable_route_and_unknown_service(tmp_path: Path, directory: Directory) -> None:
    routes = """  <Route name="nobody-listens" service="approval.application" version="1">
    <From><Level value="county"/></From>
    <To><Group name="city-bureaus"/></To>
  </Route>
  <Route name="no-schema" service="document.memo">
    <From><Level value="province"/></From>
    <To><Subordinate/></To>
  </Route>
  <Route name="no-version" service="document.official" version="7">
    <From><Level value="province"/></From>
    <To><Subordinate/></To>
  </Route>
"""
    path, text = write(tmp_path, "r.xml", routes)
    found = problems([path], directory)
    assert ("r.xml", line_of(text, '<Route name="nobody-listens"'), "ROUTES_UNREACHABLE") in found
    assert ("r.xml", line_of(text, '<Route name="no-schema"'), "ROUTES_UNKNOWN_REF") in found
    assert ("r.xml", line_of(text, '<Route name="no-version"'), "ROUTES_UNKNOWN_REF") in found


def test_duplicate_names_across_files_and_schema_errors(tmp_path: Path, directory: Directory) -> None:
    a, _ = write(tmp_path, "a.xml", GOOD)
    b_routes = (
        GOOD
        + """  <Route name="bad-shape" service="document.official">
    <From><Subordinate/></From>
    <To><Any/></To>
  </Route>
"""
    )
    b, b_text = write(tmp_path, "b.xml", b_routes)
    found = problems([a, b], directory)
    # b.xml is not schema-valid (Subordinate is To-only), so its routes are not read: only the schema error
    assert found == [("b.xml", line_of(b_text, "<From><Subordinate/>"), "CONFIG_SCHEMA")]
    c, c_text = write(tmp_path, "c.xml", GOOD)
    assert problems([a, c], directory) == [("c.xml", line_of(c_text, '<Route name="doc-down"'), "ROUTES_DUPLICATE")]


def test_without_directory_only_the_files_are_checked(tmp_path: Path) -> None:
    path, _ = write(tmp_path, "a.xml", GOOD.replace("<Subordinate/>", '<Group name="no-such-group"/>'))
    assert problems([path], None) == []


def test_cli_check_prints_every_problem_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, a_text = write(tmp_path, "a.xml", GOOD.replace("<Subordinate/>", '<Group name="no-such-group"/>'))
    b, b_text = write(
        tmp_path,
        "b.xml",
        GOOD.replace('name="doc-down"', 'name="doc-two"').replace(
            '<Level value="province"/>', '<Level value="village"/>'
        ),
    )
    rc = main(["routes", "check", str(a), str(b), "--directory", str(DIRECTORY)])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    parsed = [LINE.match(line) for line in out]
    assert all(parsed), out
    got = [(m["file"], int(m["line"]), m["code"]) for m in parsed if m]
    assert got == sorted(got, key=lambda g: (g[0], g[1]))  # file and line order
    assert (str(a), line_of(a_text, '<Group name="no-such-group"'), "ROUTES_UNKNOWN_REF") in got
    assert (str(a), line_of(a_text, '<Route name="doc-down"'), "ROUTES_UNREACHABLE") in got
    assert (str(b), line_of(b_text, '<Level value="village"'), "CONFIG_SCHEMA") in got
    titles = {m["code"]: m["title"] for m in parsed if m}
    assert titles["ROUTES_UNKNOWN_REF"] == "路由引用了目录中不存在的机构、系统或群组"


def test_cli_check_reports_directory_problems_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = write(tmp_path, "a.xml", GOOD)
    bad_dir = tmp_path / "directory.xml"
    bad_dir.write_text(
        DIRECTORY.read_text(encoding="utf-8").replace('hub-system="hub"', 'hub-system="hub-x"'), encoding="utf-8"
    )
    assert main(["routes", "check", str(a), "--directory", str(bad_dir)]) == 1
    out = capsys.readouterr().out
    assert f"{bad_dir}:" in out and "DIR_UNKNOWN_REF" in out


def test_cli_check_on_the_demo_routes_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "check"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
