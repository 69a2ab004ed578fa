"""``hub directory load`` takes effect without a restart (hub.pipeline.follow), on the real RabbitMQ and PostgreSQL.

A running hub — a pipeline worker and the HTTPS gateway, examining in its own process or in an examiner process of
its own — is given a directory that adds
an agency with a system (九台区林业局, under 长春). Within a few of the followers' looks (1 s in this test):

- the gateway identifies the new system's client certificate (it did that before) and its examination now knows the
  system too: the new system's submission over HTTPS is accepted (202) and delivered, and a message to it from
  长春 is routed into its queue, which the worker declared — before, both were refused until a restart;
- the pipeline worker reads the new system's own inbound lane: a message the system publishes there is examined,
  delivered and answered.

A directory whose routes cannot be loaded against it leaves the workers on what they have, with a warning."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from gateway_certs import client_certificate
from gateway_client import Gateway, post, running_gateway
from harness import DIRECTORY_XML, SYSTEMS, Hub, document, sample_body, until
from lxml import etree

from hub.demo_scenario import JIUTAI, JIUTAI_CODE, with_jiutai
from hub.envelope import Envelope, Party, Recipient, build, parse
from hub.pipeline.client import enroll, load_signer
from hub.settings import Settings
from hub.transport import Outgoing, priority_for

pytestmark = pytest.mark.integration

CITY = "city-220100-oa"  # 长春市林业局
CITY_AGENCY = SYSTEMS[CITY]
APPROVAL_DB = "prov-220000-approval"  # named by routes/approvals.routes.xml
NEW, NEW_AGENCY = JIUTAI, JIUTAI_CODE  # 九台区林业局 and its system, added while the hub runs (as in make demo)


@pytest.fixture(scope="module", params=[0, 1], ids=["examined-in-the-gateway", "in-an-examiner-process"])
def examiners(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory, examiners: int) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, f"follow{examiners}") as settings:
        # an examiner process gets it through its environment (Settings.to_env), as HUB_DIRECTORY_REFRESH_S=1
        yield settings.with_(directory_refresh_s=1)


@pytest.fixture(scope="module")
async def gw(settings: Settings, examiners: int) -> AsyncIterator[Gateway]:
    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()
    try:
        async with running_gateway(
            hub, {CITY: CITY_AGENCY}, directory_refresh_s=1.0, answer_timeout_s=20, examiners=examiners
        ) as g:
            yield g
    finally:
        await hub.close()


def _with_new_agency(tmp: Path) -> Path:
    """routes/directory.xml with 九台区林业局 added (``hub.demo_scenario.with_jiutai``)."""
    path = tmp / "directory.xml"
    path.write_text(with_jiutai(DIRECTORY_XML.read_text(encoding="utf-8")), encoding="utf-8")
    return path


def _to_new(gw: Gateway) -> bytes:
    """A notice from 长春 down to 九台 (route document-down: to a subordinate)."""
    return gw.hub.sign(CITY, document(CITY, [Recipient("to", NEW_AGENCY, NEW)]))


def _from_new(gw: Gateway) -> tuple[Envelope, bytes]:
    """A report from 九台 up to 长春 (route document-up)."""
    root = build(
        service="document.official",
        sender=Party(NEW_AGENCY, NEW),
        recipients=[Recipient("to", CITY_AGENCY, CITY)],
        body=sample_body("document.official"),
        classification="公开",
        urgency="平件",
    )
    data = gw.hub.sign(NEW, root)
    return Envelope.from_tree(parse(data)), data


async def _through_own_lane(gw: Gateway) -> Envelope:
    """A report from 九台 to 长春 published into 九台's own inbound lane (by the hub's user, as its system would)."""
    env, data = _from_new(gw)
    names = gw.hub.transport.names
    await gw.hub.transport.publish_many(
        [
            Outgoing(
                exchange=names.submit_exchange,
                routing_key=names.inbound_key("normal", NEW),
                body=data,
                headers={},
                priority=priority_for(env.urgency),
                message_id=env.message_id,
            )
        ]
    )
    return env


async def _in_inbox(gw: Gateway, system: str, kind: str, message_id: str, timeout: float = 15.0) -> bytes:
    """Long-poll ``system``'s inbox at the gateway, acknowledging what comes, until the delivery of ``message_id``
    (``kind`` "delivery") or the hub's answer to it ("receipt") arrives: its body."""
    session = gw.session(system)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get("/v1/inbox", params={"wait": "2"}) as r:
            if r.status == 204:
                continue
            assert r.status == 200, await r.text()
            tag, body, headers = r.headers["X-Hub-Delivery-Tag"], await r.read(), dict(r.headers)
        async with session.post(f"/v1/inbox/{tag}/ack") as r:
            assert r.status == 204
        if headers["X-Hub-Kind"] != kind:
            continue
        if kind == "delivery" and headers["X-Hub-Message-Id"] == message_id:
            return body
        if kind != "delivery" and gw.hub.inbox(system).open(body).ref_to == message_id:  # the hub's signature too
            return body
    raise AssertionError(f"no {kind} about {message_id} in {system}'s inbox within {timeout:.0f} s")


async def test_a_system_added_while_the_hub_runs_takes_part_without_a_restart(gw: Gateway, tmp_path: Path) -> None:
    hub = gw.hub
    city = gw.session(CITY)

    # Before: the directory has no 九台; a notice to it is refused with the hub's signed error.
    status, _, body = await post(city, _to_new(gw))
    assert status in (400, 403), (status, body[:300])

    # The operator adds the agency and its system and enrols it (its signing and TLS certificates).
    done = await hub.cli("directory", "load", str(_with_new_agency(tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    await enroll(hub.settings, NEW, NEW_AGENCY)
    hub.signers[NEW] = load_signer(hub.settings, NEW)
    gw.certs[NEW] = client_certificate(
        gw.pki_dir, hub.settings.ca_passphrase, NEW_AGENCY, NEW, hub.settings.state_dir / "tls"
    )[:2]
    jiutai = gw.session(NEW)

    # 长春 → 九台 over HTTPS: accepted once the gateway's examination took the new directory, into 九台's queue.
    async def accepted_to_new() -> bool:
        status, _, _ = await post(city, _to_new(gw))
        return status == 202

    await until(accepted_to_new, "a notice to the new system accepted over HTTPS")
    got = await hub.drain(NEW, expect=1, timeout=10)
    assert [env.sender.system for _, env in got] == [CITY]

    # 九台 → 长春 over HTTPS with its own client certificate: identified, examined, delivered. The client
    # identification reads the directory in a loop of its own (each converges within its interval): until it has,
    # the gateway answers 403 GATEWAY_UNKNOWN_SYSTEM before anything is examined or recorded, so resending is safe.
    env, data = _from_new(gw)

    async def identified() -> tuple[int, dict[str, str], bytes] | None:
        got = await post(jiutai, data)
        return None if got[1].get("X-Hub-Code") == "GATEWAY_UNKNOWN_SYSTEM" else got

    status, _, body = await until(identified, "the new system identified by its client certificate")
    assert status == 202, (status, body[:300])
    assert await _in_inbox(gw, CITY, "delivery", env.message_id)

    # 九台 → 长春 through its own inbound lane on RabbitMQ: the pipeline worker reads it now, and answers.
    env = await _through_own_lane(gw)
    assert await _in_inbox(gw, CITY, "delivery", env.message_id)
    # its receipt: in its inbox at the gateway (which holds 九台's queue since its HTTPS submission)
    receipt = await _in_inbox(gw, NEW, "receipt", env.message_id)
    assert b"accepted" in receipt
    examination = getattr(gw.state.direct, "worker", None)  # in the gateway process (no examiner processes)
    if examination is not None:  # both took the same version (each in its own loop)

        async def same() -> bool:
            return examination.directory_version == hub.worker.directory_version

        await until(same, "the gateway's examination and the worker on the same directory version")


async def test_a_system_taken_out_and_added_again_is_read_by_one_consumer(gw: Gateway, tmp_path: Path) -> None:
    hub = gw.hub
    worker = hub.worker
    await enroll(hub.settings, NEW, NEW_AGENCY)  # kept if the first test enrolled it
    hub.signers[NEW] = load_signer(hub.settings, NEW)
    consumers = 0
    # 九台 in (as the first test left it, or now), out (the usual directory), in again
    for step, path in enumerate((_with_new_agency(tmp_path), DIRECTORY_XML, _with_new_agency(tmp_path))):
        done = await hub.cli("directory", "load", str(path))
        assert done.returncode == 0, done.stdout + done.stderr
        stored = await hub.pool.fetchval("SELECT max(version) FROM directory_versions")

        async def followed(version: int = stored) -> bool:
            return worker.directory_version == version

        await until(followed, f"the worker took directory version {stored}")
        if step == 0:
            consumers = len(worker._consumers)
            await gw.state.mailbox.open(NEW)  # the gateway reads 九台's queue (as after its HTTPS submission)
            assert gw.state.mailbox.reading(NEW)
        if step == 1:  # taken out: the gateway stops reading its queue once it identifies the new version

            async def let_go() -> bool:
                return not gw.state.mailbox.reading(NEW)

            await until(let_go, "the gateway letting 九台's queue go")
    assert len(worker._consumers) == consumers  # its lanes were read already: no second consumer of them
    # and it still takes part: a report from 九台 through its own lane, delivered to 长春
    env = await _through_own_lane(gw)
    assert await _in_inbox(gw, CITY, "delivery", env.message_id)


async def test_a_directory_the_routes_cannot_take_leaves_the_workers_on_what_they_have(
    gw: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from hub.directory import load_directory
    from hub.pipeline.follow import follow_directory
    from hub.store.directory import DirectoryRepository

    worker = gw.hub.worker
    before = worker.directory_version
    # A valid directory without the provincial approval database, which the approval routes name: stored (as a
    # hand-made or older tool could), but the routes cannot be loaded against it.
    tree = etree.fromstring(DIRECTORY_XML.read_bytes())
    gone = tree.find(f".//{{*}}System[@id='{APPROVAL_DB}']")
    gone.getparent().remove(gone)
    path = tmp_path / "directory.xml"
    path.write_bytes(etree.tostring(tree, encoding="utf-8", xml_declaration=True))
    await DirectoryRepository(gw.hub.pool).save(load_directory(path))
    with caplog.at_level("WARNING", logger="hub.pipeline"):
        assert await follow_directory(worker) is False
    assert worker.directory_version == before
    assert worker.directory.system(APPROVAL_DB).id == APPROVAL_DB
    assert worker.processor.directory is worker.directory
    assert "could not take the new directory" in caplog.text
    assert "ROUTES_UNKNOWN_REF" in caplog.text
    # The gateway's identification does not take it either: it took it alone (the approval database's mailbox
    # dropped, a system added with it let in by its certificate and refused by the examination). Looks every
    # second, a version identified at its second look: after three, still the directory before.
    with caplog.at_level("WARNING", logger="hub.gateway"):
        await asyncio.sleep(3.5)
    assert gw.state.identifier.directory.system(APPROVAL_DB).id == APPROVAL_DB
    assert "could not read the directory again" in caplog.text
