"""Pure parts of the emergencies process and the emergency-lane entitlement check: the broadcast plan by region and
level, the acknowledgement limit, escalation to parent units, and ``Processor.examine(lane=…)`` refusing an
ordinary message in the emergency lane (LANE_NOT_ENTITLED) while letting entitled ones through."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from hub.directory import load_directory
from hub.errors import CODES, ConfigError
from hub.pipeline.processor import Accepted, Rejected
from hub.processes.emergencies import ack_limit, escalation_groups, load_plan, plan_targets
from hub.settings import PROJECT_ROOT
from hub.transport.names import lane_for
from tests.hostile import costly

PLAN = load_plan(PROJECT_ROOT / "routes" / "emergency-plan.toml")
DIRECTORY = load_directory(PROJECT_ROOT / "routes" / "directory.xml")
NONGAN, DEHUI, CHANGCHUN = "11220122013550216R", "11220183013553609R", "11220100013544550M"
DUNHUA, PROVINCE, NATION = "11222403014102856B", "11220000013544357T", "11100000000019136N"


def test_every_level_reaches_the_neighbours_and_the_city_and_levels_i_ii_the_province_and_the_nation() -> None:
    iv = plan_targets(PLAN, DIRECTORY, "IV", "220122", NONGAN)
    assert [(t.agency, t.system, t.reason) for t in iv] == [
        (DEHUI, "county-220183-oa", "neighbours"),
        (CHANGCHUN, "city-220100-oa", "city"),
    ]
    ii = {t.agency: (t.system, t.reason) for t in plan_targets(PLAN, DIRECTORY, "II", "222403", DUNHUA)}
    assert ii[PROVINCE] == ("prov-220000-duty", "province-duty") and ii[NATION] == ("nation-100000-oa", "nation")
    assert DUNHUA not in ii  # never the sender itself
    # Reported by the city about a county: the county itself is required too.
    by_city = {t.agency for t in plan_targets(PLAN, DIRECTORY, "IV", "220122", CHANGCHUN)}
    assert by_city == {NONGAN, DEHUI}


def test_the_strictest_acknowledgement_limit_applies() -> None:
    assert ack_limit(timedelta(minutes=30), 15, timedelta(minutes=30))[0] == timedelta(minutes=15)
    assert ack_limit(timedelta(minutes=10), None, timedelta(minutes=30)) == (
        timedelta(minutes=10),
        "预案分级时限 plan level",
    )
    assert ack_limit(None, None, timedelta(minutes=20))[0] == timedelta(minutes=20)


def test_late_recipients_are_escalated_to_their_parent_unit() -> None:
    groups = escalation_groups(PLAN, DIRECTORY, [(DEHUI, "county-220183-oa"), (NONGAN, "county-220122-oa")])
    assert groups == {(CHANGCHUN, "city-220100-oa"): [DEHUI, NONGAN]}
    # The provincial government has no parent in the directory: the plan's escalate_to (the province's duty desk).
    assert escalation_groups(PLAN, DIRECTORY, [("112200000135440012", "gov-220000-oa")]) == {
        (PROVINCE, "prov-220000-duty"): ["112200000135440012"]
    }


def test_a_plan_saved_in_another_encoding_is_refused_and_a_byte_order_mark_is_not(tmp_path: Path) -> None:
    """A plan saved in GBK raised UnicodeDecodeError out of load_plan and make: the whole process engine died at start
    and was restarted every second (emergencies, documents, approvals, meetings all stopped)."""
    from types import SimpleNamespace

    from hub.processes.emergencies import make

    shipped = (PROJECT_ROOT / "routes" / "emergency-plan.toml").read_text(encoding="utf-8")
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "emergency-plan.toml").write_bytes(shipped.encode("gbk"))
    with pytest.raises(ConfigError) as err:
        load_plan(routes / "emergency-plan.toml")
    assert err.value.code == "EMERGENCY_PLAN_INVALID" and "UTF-8" in str(err.value)
    context = SimpleNamespace(router=SimpleNamespace(routes=SimpleNamespace(for_service=lambda s, v: [])))
    process = make(context, SimpleNamespace(routes_dir=routes))  # type: ignore[arg-type]
    assert process.plan_problem is not None and "UTF-8" in process.plan_problem
    (routes / "emergency-plan.toml").write_bytes(b"\xef\xbb\xbf" + shipped.encode("utf-8"))
    assert load_plan(routes / "emergency-plan.toml") == PLAN


def test_a_broken_plan_is_refused_with_its_code(tmp_path: Path) -> None:
    bad = tmp_path / "plan.toml"
    bad.write_text((PROJECT_ROOT / "routes" / "emergency-plan.toml").read_text().replace('"nation"]', '"moon"]'))
    with pytest.raises(ConfigError) as err:
        load_plan(bad)
    assert err.value.code == "EMERGENCY_PLAN_INVALID" and "moon" in str(err.value)
    assert CODES["EMERGENCY_PLAN_INVALID"]
    # It does not stop the engine: the process runs with an empty plan and says why.
    from types import SimpleNamespace

    from hub.processes.emergencies import make

    (tmp_path / "emergency-plan.toml").write_text(bad.read_text())
    router = SimpleNamespace(routes=SimpleNamespace(for_service=lambda service, version: ()))
    proc = make(SimpleNamespace(router=router), SimpleNamespace(routes_dir=tmp_path))  # type: ignore[arg-type]
    assert proc.plan.levels == {} and proc.plan_problem is not None and "moon" in proc.plan_problem


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> costly.Kit:
    return costly.make_kit(tmp_path_factory.mktemp("lane"))


def test_the_emergency_lane_refuses_what_is_not_entitled(kit: costly.Kit) -> None:
    ordinary = kit.typical()  # a 平件 document.official
    p = kit.processor
    verify, to_system = p.verifier.verify, p.user_to_system
    checked: list[int] = []
    p.verifier.verify = lambda root: (checked.append(1), verify(root))[1]  # type: ignore[method-assign]
    p.user_to_system = lambda user: costly.SENDER[0] if user == "hub.county-220122-oa" else None
    try:
        refused = p.examine(ordinary, amqp_user="hub.county-220122-oa", lane="emergency")
        assert isinstance(refused, Rejected) and refused.error.code == "LANE_NOT_ENTITLED"
        assert checked == []  # refused before the signature check: a flood costs the lane less
        assert CODES["LANE_NOT_ENTITLED"] == "该报文无权使用应急通道，请改走普通通道"
        assert not refused.sender_confirmed  # the same message resent in the normal lane is a first copy
        # The broker-authenticated publisher is told.
        assert refused.reply_to is not None and refused.reply_to.system == costly.SENDER[0]
    finally:
        p.verifier.verify, p.user_to_system = verify, to_system  # type: ignore[method-assign]
    assert isinstance(kit.processor.examine(ordinary, lane="normal"), Accepted)
    # 特急 and emergency.* are entitled (the rule every client follows: lane_for).
    urgent = kit.signed(kit.envelope(urgency="特急"))
    assert lane_for("document.official", "特急") == "emergency"
    assert isinstance(kit.processor.examine(urgent, lane="emergency"), Accepted)
    alert = kit.signed(kit.envelope(service="emergency.alert"))
    assert isinstance(kit.processor.examine(alert, lane="emergency"), Accepted)
