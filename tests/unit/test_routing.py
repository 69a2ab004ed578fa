"""The router on the demo directory and routes: default deny, allow/deny along the tree, de-duplication, the
sender left out of its own group, TTL against the route, policies (priority, emergency lane, acknowledgement)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from lxml import etree

from hub.directory import Directory, load_directory
from hub.envelope import Envelope, Party, Recipient, build, service_namespace
from hub.errors import NoRoute, NotAllowed
from hub.routing import Router, load_routes, route_files
from hub.routing.routes import known_services
from hub.settings import PROJECT_ROOT

ROUTES = PROJECT_ROOT / "routes"
NFGA = "11100000000019136N"
GOV = "112200000135440012"
PROV = "11220000013544357T"
CHANGCHUN = "11220100013544550M"
JILIN_CITY = "112202000136132524"
NONGAN = "11220122013550216R"
YUSHU = "11220182013552847D"
DUNHUA = "11222403014102856B"
CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 28, 9, 30, tzinfo=CST)


@pytest.fixture(scope="module")
def directory() -> Directory:
    return load_directory(ROUTES / "directory.xml")


@pytest.fixture(scope="module")
def router(directory: Directory) -> Router:
    return Router(
        directory, load_routes(route_files(ROUTES), directory, services=known_services(PROJECT_ROOT / "schemas"))
    )


def envelope(
    service: str,
    sender: tuple[str, str],
    recipients: list[Recipient],
    *,
    ttl: timedelta = timedelta(days=7),
    urgency: str = "平件",
    classification: str = "公开",
) -> Envelope:
    body = etree.Element(f"{{{service_namespace(service, 1)}}}Body")
    body.text = "正文"
    root = build(
        service=service,
        sender=Party(*sender),
        recipients=recipients,
        body=body,
        created=NOW,
        expires=NOW + ttl,
        urgency=urgency,
        classification=classification,
    )
    return Envelope.from_tree(root)


PROV_OA = (PROV, "prov-220000-oa")
CHANGCHUN_OA = (CHANGCHUN, "city-220100-oa")
NONGAN_OA = (NONGAN, "county-220122-oa")


def test_demo_routes_pass_every_check(directory: Directory) -> None:
    table = load_routes(route_files(ROUTES), directory, services=known_services(PROJECT_ROOT / "schemas"))
    names = [r.name for r in table]
    assert len(names) == len(set(names)) >= 15
    for required in (
        "document-down",
        "document-up",
        "info-report-up",
        "emergency-alert",
        "data-query",
        "meeting-notice",
        "approval-decision",
        "hub-replies",
    ):
        assert required in names


def test_document_down_to_county_bureaus_of_a_city(router: Router) -> None:
    d = router.decide(envelope("document.official", PROV_OA, [Recipient.to_group("county-bureaus:220100")]))
    assert [t.system for t in d.targets] == ["county-220122-oa", "county-220182-oa", "county-220183-oa"]
    assert {t.route for t in d.targets} == {"document-down"}
    t = d.targets[0]
    assert (t.agency, t.role, t.zone, t.ceiling) == (NONGAN, "to", "extranet", 1)
    assert d.route.name == "document-down"


def test_city_may_send_down_only_to_its_own_counties(router: Router) -> None:
    d = router.decide(envelope("document.official", CHANGCHUN_OA, [Recipient.to(NONGAN)]))
    assert [t.system for t in d.targets] == ["county-220122-oa"]
    with pytest.raises(NotAllowed) as info:
        router.decide(envelope("document.official", CHANGCHUN_OA, [Recipient.to(DUNHUA)]))
    assert info.value.code == "ROUTE_NOT_ALLOWED"
    assert "county-222403-oa" in info.value.detail


def test_county_writes_to_its_peers_but_never_skips_a_level(router: Router) -> None:
    # 函 between county bureaus (平行文): the group expands to the peers, without the sender itself.
    d = router.decide(envelope("document.official", NONGAN_OA, [Recipient.to_group("county-bureaus:220100")]))
    assert [t.system for t in d.targets] == ["county-220182-oa", "county-220183-oa"]
    assert {t.route for t in d.targets} == {"document-between-counties"}
    # 不越级行文: a county writes up to its own city bureau, not to the province or another city.
    up = router.decide(envelope("document.official", NONGAN_OA, [Recipient.to(CHANGCHUN)]))
    assert [t.system for t in up.targets] == ["city-220100-oa", "city-220100-secure"]
    for skipped in (PROV, JILIN_CITY):
        with pytest.raises(NotAllowed) as info:
            router.decide(envelope("document.official", NONGAN_OA, [Recipient.to(skipped)]))
        assert info.value.code == "ROUTE_NOT_ALLOWED"


def test_reports_go_up_the_tree(router: Router) -> None:
    d = router.decide(envelope("info.report", NONGAN_OA, [Recipient.to(CHANGCHUN), Recipient.cc(PROV)]))
    assert [(t.system, t.role) for t in d.targets] == [
        ("city-220100-oa", "to"),
        ("prov-220000-oa", "cc"),
        ("prov-220000-secure", "cc"),
    ]
    with pytest.raises(NotAllowed):
        router.decide(envelope("info.report", NONGAN_OA, [Recipient.to(JILIN_CITY)]))


def test_unknown_service_has_no_route(router: Router) -> None:
    with pytest.raises(NoRoute) as info:
        router.decide(envelope("document.memo", PROV_OA, [Recipient.to(CHANGCHUN)]))
    assert info.value.code == "ROUTE_NO_ROUTE"


def test_only_the_hub_sends_hub_replies(router: Router, directory: Directory) -> None:
    with pytest.raises(NotAllowed) as info:
        router.decide(envelope("hub.error", PROV_OA, [Recipient.to(CHANGCHUN, "city-220100-oa")]))
    assert info.value.code == "ROUTE_NOT_ALLOWED"
    d = router.decide(envelope("hub.receipt", (PROV, "hub"), [Recipient.to(CHANGCHUN, "city-220100-oa")]))
    assert [t.system for t in d.targets] == ["city-220100-oa"]


def test_sender_must_be_a_known_system_of_the_signed_agency(router: Router) -> None:
    with pytest.raises(NotAllowed) as info:
        router.decide(envelope("document.official", (PROV, "prov-220000-ghost"), [Recipient.to(CHANGCHUN)]))
    assert info.value.code == "ROUTE_NOT_ALLOWED" and "prov-220000-ghost" in info.value.detail
    with pytest.raises(NotAllowed):
        router.decide(envelope("document.official", (CHANGCHUN, "prov-220000-oa"), [Recipient.to(NONGAN)]))


def test_unknown_recipient(router: Router) -> None:
    with pytest.raises(NoRoute) as info:
        router.decide(envelope("document.official", PROV_OA, [Recipient.to_group("county-bureaus:229900")]))
    assert info.value.code == "ROUTE_UNKNOWN_RECIPIENT"


def test_a_system_addressed_twice_gets_one_delivery_and_to_wins(router: Router) -> None:
    d = router.decide(
        envelope(
            "document.official",
            PROV_OA,
            [Recipient.cc_group("county-bureaus:220100"), Recipient.to(NONGAN), Recipient.cc(NONGAN)],
        )
    )
    systems = [t.system for t in d.targets]
    assert systems == ["county-220122-oa", "county-220182-oa", "county-220183-oa"]
    roles = {t.system: t.role for t in d.targets}
    assert roles == {"county-220122-oa": "to", "county-220182-oa": "cc", "county-220183-oa": "cc"}


def test_sender_is_left_out_of_its_own_group(router: Router) -> None:
    d = router.decide(
        envelope("emergency.alert", CHANGCHUN_OA, [Recipient.to_group("local-bureaus")], ttl=timedelta(hours=6))
    )
    systems = [t.system for t in d.targets]
    assert "city-220100-oa" not in systems
    assert len(systems) == 9 + 8 - 1


def test_everyone_addressed_must_be_allowed_or_nothing_is_sent(router: Router) -> None:
    with pytest.raises(NotAllowed) as info:
        router.decide(
            envelope(
                "document.official", CHANGCHUN_OA, [Recipient.to(NONGAN), Recipient.cc(DUNHUA), Recipient.cc(YUSHU)]
            )
        )
    assert "county-222403-oa" in info.value.detail


def test_ttl_beyond_the_route_maximum_is_refused(router: Router) -> None:
    ok = router.decide(envelope("document.official", PROV_OA, [Recipient.to(CHANGCHUN)], ttl=timedelta(days=30)))
    assert ok.policy.max_ttl == timedelta(days=30)
    with pytest.raises(NotAllowed) as info:
        router.decide(
            envelope("document.official", PROV_OA, [Recipient.to(CHANGCHUN)], ttl=timedelta(days=30, seconds=1))
        )
    assert info.value.code == "ROUTE_TTL_EXCEEDED"
    with pytest.raises(NotAllowed) as info:
        router.decide(envelope("emergency.alert", CHANGCHUN_OA, [Recipient.to(PROV)], ttl=timedelta(hours=73)))
    assert info.value.code == "ROUTE_TTL_EXCEEDED" and "3d" in info.value.detail
    with pytest.raises(NotAllowed):
        router.decide(
            envelope("data.query", NONGAN_OA, [Recipient.to(PROV, "prov-220000-data")], ttl=timedelta(hours=2))
        )


def test_emergency_alert_policy(router: Router) -> None:
    d = router.decide(
        envelope(
            "emergency.alert",
            (DUNHUA, "county-222403-oa"),
            [Recipient.to(PROV), Recipient.cc_group("fire-command")],
            ttl=timedelta(hours=6),
            urgency="特急",
        )
    )
    assert d.priority == 9
    assert d.policy.retry.attempts == 20 and d.policy.retry.delay(1) == 1 and d.policy.retry.delay(99) == 60
    systems = [t.system for t in d.targets]
    assert "prov-220000-duty" in systems and "gov-220000-oa" in systems
    normal = router.decide(
        envelope("emergency.alert", (DUNHUA, "county-222403-oa"), [Recipient.to(PROV)], ttl=timedelta(hours=6))
    )
    assert normal.priority == 7


def test_document_policy_by_urgency(router: Router) -> None:
    flash = router.decide(envelope("document.official", PROV_OA, [Recipient.to(CHANGCHUN)], urgency="特急"))
    normal = router.decide(envelope("document.official", PROV_OA, [Recipient.to(CHANGCHUN)]))
    assert (flash.priority, normal.priority) == (9, 2)


def test_meeting_notice_from_the_video_system_to_everyone(router: Router) -> None:
    d = router.decide(
        envelope(
            "meeting.notice",
            (PROV, "prov-220000-video"),
            [Recipient.to_group("local-bureaus"), Recipient.to(GOV), Recipient.to(NFGA)],
        )
    )
    assert len(d.targets) == 9 + 8 + 2
    with pytest.raises(NotAllowed):
        router.decide(envelope("meeting.notice", PROV_OA, [Recipient.to(CHANGCHUN)]))


def test_approvals_and_data_queries(router: Router) -> None:
    d = router.decide(
        envelope(
            "approval.decision",
            (PROV, "prov-220000-approval"),
            [Recipient.to(PROV, "prov-220000-portal"), Recipient.cc(DUNHUA)],
        )
    )
    assert [t.system for t in d.targets] == ["prov-220000-portal", "county-222403-approval"]
    assert d.targets[0].zone == "internet" and d.targets[0].ceiling == 0
    q = router.decide(
        envelope("data.query", NONGAN_OA, [Recipient.to(PROV, "prov-220000-data")], ttl=timedelta(minutes=10))
    )
    assert [t.system for t in q.targets] == ["prov-220000-data"]
    with pytest.raises(NotAllowed):
        router.decide(envelope("approval.application", NONGAN_OA, [Recipient.to(PROV)]))


def test_directory_and_routing_stay_pure() -> None:
    """Imports point downward: the directory model, the router and the gate pull in no broker or database code."""
    import subprocess
    import sys

    code = (
        "import sys, hub.directory, hub.routing\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('asyncpg', 'aio_pika', 'aiormq', 'aiohttp')"
        " or m.startswith(('hub.store', 'hub.transport', 'hub.pipeline'))]\n"
        "print(' '.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == ""


def test_retry_policy_is_the_route_that_decided_the_message(router: Router) -> None:
    """The worker's retry step asks the router: the route's <Retry> for an accepted message, the defaults for a
    message refused before routing (None) or one the router refuses."""
    from hub.policy import DEFAULT_RETRY, Retry

    alert = envelope("emergency.alert", (DUNHUA, "county-222403-oa"), [Recipient.to(PROV)], ttl=timedelta(hours=6))
    assert router.retry_for(alert) == Retry(attempts=20, backoff=(1, 2, 5, 10, 30, 60))
    doc = envelope("document.official", PROV_OA, [Recipient.to(CHANGCHUN)])
    assert router.retry_for(doc) == Retry(attempts=8, backoff=(5, 30, 120, 600, 1800, 3600))
    assert router.retry_for(None) == DEFAULT_RETRY
    too_long = envelope("emergency.alert", (DUNHUA, "county-222403-oa"), [Recipient.to(PROV)], ttl=timedelta(days=9))
    assert router.retry_for(too_long) == DEFAULT_RETRY
