"""Every valid sample is a message the demo hub would deliver: the router (routes/directory.xml and
routes/*.routes.xml, loaded as the hub loads them) finds a route for its sender and every recipient, and the
classification gate blocks no target and holds nothing for review. The scaffold and the adapter guide start from
these samples, so none of them may be a message the hub refuses.

hub.receipt and hub.error are left out: only the hub sends them (their routes admit no other sender), and the
samples name the hub as sender of replies to messages that are not themselves samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.directory import Directory, load_directory
from hub.envelope import Envelope, parse
from hub.routing import Router, load_routes, route_files
from hub.routing.gate import gate
from hub.routing.routes import HUB_SERVICES, known_services
from hub.settings import PROJECT_ROOT
from hub.validation import SchemaRegistry

ROUTES = PROJECT_ROOT / "routes"
SERVICES = PROJECT_ROOT / "schemas" / "services"
VALID = sorted(p for p in SERVICES.glob("*/*/samples/valid/*.xml") if p.parts[-5] not in HUB_SERVICES)


def _id(p: Path) -> str:
    return f"{p.parts[-5]}/{p.parts[-4]}/{p.name}"


@pytest.fixture(scope="module")
def directory() -> Directory:
    return load_directory(ROUTES / "directory.xml")


@pytest.fixture(scope="module")
def router(directory: Directory) -> Router:
    return Router(
        directory, load_routes(route_files(ROUTES), directory, services=known_services(PROJECT_ROOT / "schemas"))
    )


def test_every_service_but_the_hubs_own_has_a_sample() -> None:
    services = {p.parts[-5] for p in VALID}
    assert services == set(known_services(PROJECT_ROOT / "schemas")) - set(HUB_SERVICES)


@pytest.mark.parametrize("path", VALID, ids=_id)
def test_valid_sample_is_routable(path: Path, router: Router, directory: Directory, registry: SchemaRegistry) -> None:
    root = parse(path.read_bytes())
    env: Envelope = registry.validate(root)
    decision = router.decide(env)  # raises NoRoute / NotAllowed with the code the sender would get
    assert decision.targets, f"{_id(path)}: no recipient system"
    addressed = {r.system for r in env.recipients if r.system is not None}
    assert addressed <= {t.system for t in decision.targets}, f"{_id(path)}: a named system is not a target"
    result = gate(env, root, decision.targets, directory.hub_ceiling)
    assert not result.blocked, f"{_id(path)}: blocked by classification: {[b.reason for b in result.blocked]}"
    assert not result.quarantine, f"{_id(path)}: held for review: {result.markings}"
