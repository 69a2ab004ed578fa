"""The message path end to end on the real RabbitMQ and PostgreSQL (issue 4 acceptance): group fan-out with
hub-signed deliveries and receipts, dedup, signed errors with distinct codes, the classification gate, and the
quarantine → release path. The pipeline runs in this process (the same Worker that ``hub run`` starts)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from harness import PROVINCE, Hub, document, hours, now
from lxml import etree
from trust_fixtures import xmlsec1_verify_with

from hub.envelope import Envelope, Recipient, parse
from hub.store.evidence import chain_pending
from hub.trust.pki import PkiPaths

pytestmark = pytest.mark.integration

DS_SIGNATURE = "{http://www.w3.org/2000/09/xmldsig#}Signature"
G = "county-bureaus:220100"  # the county bureaus under 长春
PEERS = ("county-220182-oa", "county-220183-oa")  # 榆树, 德惠 (the sender 农安 is left out of its own group)


@pytest.fixture(scope="session")
async def hub(integration_settings) -> Hub:  # type: ignore[no-untyped-def]
    h = Hub(integration_settings)
    await h.setup()
    await h.start_worker()
    yield h
    await h.close()


async def test_group_fan_out_is_hub_signed_receipted_and_recorded(hub: Hub, tmp_path: Path) -> None:
    env = await hub.send("county-220122-oa", document("county-220122-oa", [Recipient.to_group(G)]))
    reply = await hub.reply("county-220122-oa", env.message_id)
    assert (reply.kind, reply.outcome) == ("receipt", "accepted")
    assert reply.envelope.sender.system == "hub"
    assert reply.envelope.ref_to == env.message_id
    for system in PEERS:
        got = await hub.drain(system, expect=1)
        assert [e.message_id for _, e in got] == [env.message_id]
        incoming, delivered = got[0]
        assert delivered.sender.system == "county-220122-oa"
        assert incoming.priority == 2  # the route's priority for 平件 (routes/documents.routes.xml), not a constant
        # hub-signed, and verifiable by the reference C implementation trusting only the hub root
        f = tmp_path / f"{system}.xml"
        f.write_bytes(incoming.body)
        paths = PkiPaths(hub.settings.state_dir / "pki")
        xmlsec1 = shutil.which("xmlsec1")
        assert xmlsec1
        done = subprocess.run(
            [xmlsec1, "--verify", "--trusted-pem", str(paths.root_cert), "--enabled-reference-uris", "empty", str(f)],
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        # and the originator's signature beside the hub's: delete the hub's (the first ds:Signature) and xmlsec1
        # verifies the sender's own over what it signed
        opened = hub.inbox(system).open_delivery(incoming.body)
        assert opened.originator is not None and opened.originator.system == "county-220122-oa"
        assert opened.hub.system == "hub"
        root = etree.fromstring(incoming.body)
        first, _ = root.findall(DS_SIGNATURE)
        root.remove(first)
        f.write_bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
        done = subprocess.run(
            [xmlsec1, "--verify", "--trusted-pem", str(paths.root_cert), "--enabled-reference-uris", "empty", str(f)],
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        ok, out = xmlsec1_verify_with(paths, etree.tostring(root), tmp_path)
        assert ok, out
        # without it, xmlsec1 refuses the hub's signature: it covers the originator's
        root = etree.fromstring(incoming.body)
        root.remove(root.findall(DS_SIGNATURE)[1])
        ok, out = xmlsec1_verify_with(paths, etree.tostring(root), tmp_path)
        assert not ok
    async with hub.pool.acquire() as conn:
        await chain_pending(conn, wait=True)
        msg = await conn.fetchrow("SELECT state, raw FROM messages WHERE message_id = $1", uuid.UUID(env.message_id))
        assert msg["state"] == "accepted"
        deliveries = await conn.fetch(
            "SELECT recipient_system, state FROM deliveries WHERE message_id = $1 ORDER BY 1", uuid.UUID(env.message_id)
        )
        assert [(d["recipient_system"], d["state"]) for d in deliveries] == [(s, "delivered") for s in PEERS]
        records = {
            r["kind"]: json.loads(r["detail"])
            for r in await conn.fetch(
                "SELECT kind, detail FROM evidence WHERE message_id = $1", uuid.UUID(env.message_id)
            )
        }
        assert set(records) == {"received", "delivered"}
        assert records["delivered"]["to"] == sorted(PEERS)
        assert [(r["type"], r["to"]) for r in records["delivered"]["receipts"]] == [("hub.receipt", "county-220122-oa")]
    # the signed bytes exactly as received are kept
    assert parse(bytes(msg["raw"])).find("{http://www.w3.org/2000/09/xmldsig#}Signature") is not None


async def test_the_same_message_twice_is_delivered_once(hub: Hub) -> None:
    root = document("county-220122-oa", [Recipient.to("11220183013553609R")])
    data = hub.sign("county-220122-oa", root)
    from hub.envelope import Envelope

    env = Envelope.from_tree(parse(data))
    await hub.publish([(env, data)])
    first = await hub.reply("county-220122-oa", env.message_id)
    await hub.publish([(env, data)])
    second = await hub.reply("county-220122-oa", env.message_id)
    assert (first.outcome, second.outcome) == ("accepted", "duplicate")
    got = await hub.drain("county-220183-oa", expect=1, timeout=3)
    assert [e.message_id for _, e in got] == [env.message_id]


async def test_each_decision_is_one_structured_line_with_where_the_batch_time_went(hub: Hub, caplog) -> None:  # type: ignore[no-untyped-def]
    root = document("county-220122-oa", [Recipient.to("11220183013553609R")])
    data = hub.sign("county-220122-oa", root)
    from hub.envelope import Envelope

    env = Envelope.from_tree(parse(data))

    def lines() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if r.name == "hub.decision" and getattr(r, "message_id", "") == env.message_id
        ]

    with caplog.at_level(logging.INFO, logger="hub.decision"):
        await hub.publish([(env, data)])
        assert (await hub.reply("county-220122-oa", env.message_id)).outcome == "accepted"
        for _ in range(100):  # the line is written after the ack, which follows the receipt
            if lines():
                break
            await asyncio.sleep(0.02)
    assert len(lines()) == 1
    line = lines()[0]
    assert (line.getMessage(), line.decision, line.service, line.classification) == (
        "accepted",
        "accepted",
        env.service_id,
        env.classification,
    )
    assert line.recipients == ["county-220183-oa"]
    stages = line.stages_ms
    assert list(stages) == ["examine", "record", "answer", "publish", "record_sent", "ack"]
    assert all(v >= 0 for v in stages.values())
    assert abs(sum(stages.values()) - line.batch_ms) < 0.1  # the stages account for the whole batch
    await hub.drain("county-220183-oa", expect=1, timeout=3)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("expired", "MSG_EXPIRED"),
        ("future", "MSG_FUTURE"),
        ("unknown-recipient", "ROUTE_UNKNOWN_RECIPIENT"),
        ("not-allowed", "ROUTE_NOT_ALLOWED"),
    ],
)
async def test_refusals_come_back_as_signed_errors_with_distinct_codes(hub: Hub, case: str, code: str) -> None:
    sender = "county-220122-oa"
    if case == "expired":
        root = document(sender, [Recipient.to_group(G)], created=now() - hours(48), expires=now() - hours(1))
    elif case == "future":
        root = document(sender, [Recipient.to_group(G)], created=now() + hours(2), expires=now() + hours(50))
    elif case == "unknown-recipient":
        root = document(sender, [Recipient.to("11220300013700183Y", "city-220300-nope")])
    else:  # a county bureau may not send an official document to the national administration
        root = document(sender, [Recipient.to("11100000000019136N")])
    env = await hub.send(sender, root)
    reply = await hub.reply(sender, env.message_id)
    assert (reply.kind, reply.outcome) == ("error", code)
    assert reply.envelope.sender.system == "hub"  # verified as hub-signed by the inbox
    async with hub.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT state, error_code FROM messages WHERE message_id = $1", uuid.UUID(env.message_id)
        )
    assert (row["state"], row["error_code"]) == ("rejected", code)


async def test_a_secret_message_never_reaches_the_extranet(hub: Hub) -> None:
    # 机密 from the department's classified system to 长春: its extranet OA (ceiling 内部) and its classified system
    # (accredited to 秘密 only) are both refused, so nothing is delivered anywhere and the sender gets the error.
    before = await hub.depth("city-220100-oa")
    root = document("prov-220000-secure", [Recipient.to("11220100013544550M")], classification="机密")
    env = await hub.send("prov-220000-secure", root)
    reply = await hub.reply("prov-220000-secure", env.message_id)
    assert (reply.kind, reply.outcome) == ("error", "GATE_CLASSIFICATION"), reply.line()
    assert await hub.depth("city-220100-oa") == before
    for system in ("city-220100-oa", "city-220100-secure"):
        got = await hub.drain(system, timeout=1)
        assert env.message_id not in {e.message_id for _, e in got}
    async with hub.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT state, error_code FROM messages WHERE message_id = $1", uuid.UUID(env.message_id)
        )
    assert (row["state"], row["error_code"]) == ("rejected", "GATE_CLASSIFICATION")


async def test_a_confidential_message_reaches_only_the_accredited_system(hub: Hub) -> None:
    # 秘密 to 长春: delivered to its classified system (accredited to 秘密), never to its extranet OA; the sender
    # gets a receipt for the delivery and a signed error naming the blocked system.
    before = await hub.depth("city-220100-oa")
    root = document("prov-220000-secure", [Recipient.to("11220100013544550M")], classification="秘密")
    env = await hub.send("prov-220000-secure", root)
    reply = await hub.reply("prov-220000-secure", env.message_id)
    assert (reply.kind, reply.outcome) == ("error", "GATE_CLASSIFICATION"), reply.line()
    assert "city-220100-oa" in reply.detail
    got = await hub.drain("city-220100-secure", expect=1)
    assert [e.message_id for _, e in got] == [env.message_id]
    assert await hub.depth("city-220100-oa") == before
    async with hub.pool.acquire() as conn:
        states = dict(
            await conn.fetch(
                "SELECT recipient_system, state FROM deliveries WHERE message_id = $1", uuid.UUID(env.message_id)
            )
        )
    assert states == {"city-220100-secure": "delivered", "city-220100-oa": "blocked"}


async def test_a_public_message_with_a_secret_marking_is_quarantined_then_released(hub: Hub) -> None:
    root = document("county-220122-oa", [Recipient.to("11220182013552847D")])
    ns = "urn:forestry-hub:document.official:1"
    para = root.find(f".//{{{ns}}}Paragraph")
    assert para is not None
    para.text = "秘密★5年 附件所列火场坐标不得外传。"
    env = await hub.send("county-220122-oa", root)
    reply = await hub.reply("county-220122-oa", env.message_id)
    assert (reply.kind, reply.outcome) == ("receipt", "quarantined")
    assert await hub.drain("county-220182-oa", timeout=1) == []
    listed = await hub.cli("quarantine", "list")
    assert listed.returncode == 0 and env.message_id in listed.stdout, listed.stderr
    released = await hub.cli(
        "quarantine", "release", env.message_id, "--reason", "经审核系已公开的演练坐标", "--reviewer", "保密员张三"
    )
    assert released.returncode == 0, released.stderr
    got = await hub.drain("county-220182-oa", expect=1)
    assert [e.message_id for _, e in got] == [env.message_id]
    # the released delivery carries the sender's signature beside the hub's, like any other
    released_body = got[0][0].body
    assert len(etree.fromstring(released_body).findall(DS_SIGNATURE)) == 2
    opened = hub.inbox("county-220182-oa").open_delivery(released_body)
    assert opened.originator is not None and opened.originator.system == "county-220122-oa"
    async with hub.pool.acquire() as conn:
        await chain_pending(conn, wait=True)
        status = await conn.fetchval("SELECT status FROM quarantine WHERE message_id = $1", uuid.UUID(env.message_id))
        actors = [
            r["actor"]
            for r in await conn.fetch(
                "SELECT actor FROM evidence WHERE message_id = $1 AND kind = 'released'", uuid.UUID(env.message_id)
            )
        ]
    assert status == "released" and actors == ["保密员张三"]


async def test_hostile_bytes_are_parked_in_the_dead_letter_queue_and_recorded(hub: Hub) -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    await hub.publish([(None, bomb)])
    names = hub.transport.names
    deadline = 50
    for _ in range(deadline):
        batch = await hub.transport.fetch(names.dead_letter_queue, max_messages=10)
        mine = [m for m in batch if m.body == bomb]
        await hub.transport.ack(batch)
        if mine:
            assert mine[0].headers["x-hub-error-code"] == "ENV_DOCTYPE"
            break
        import asyncio

        await asyncio.sleep(0.1)
    else:
        pytest.fail("the hostile message was not dead-lettered")
    async with hub.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM intake_rejections WHERE error_code = 'ENV_DOCTYPE'") >= 1


async def test_evidence_chain_verifies(hub: Hub) -> None:
    done = await hub.cli("evidence", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "证据链完整" in done.stdout


async def test_hub_cli_refuses_to_block_the_event_loop_the_hub_runs_on(hub: Hub) -> None:
    """The blocking form stopped this process's pipeline mid-transaction while ``hub evidence verify`` waited for the
    evidence head its chainer held: under load, 1 of 25 runs hung until the timeout (measured). Refused, not hung."""
    with pytest.raises(RuntimeError, match=r"await hub\.cli"):
        hub.hub_cli("evidence", "verify")


async def test_a_message_that_trips_a_bug_is_isolated_and_retried_not_lost(hub: Hub) -> None:
    """A fault while answering one message (a bug, or the egress check refusing what the gate allowed) must not
    hold up the others in its batch, nor loop, nor lose it: it is isolated, retried with back-off, delivered."""
    from hub.envelope import Envelope

    sender = "county-220122-oa"
    roots = [document(sender, [Recipient.to("11220183013553609R")]) for _ in range(3)]
    payloads = []
    for root in roots:
        data = hub.sign(sender, root)
        payloads.append((Envelope.from_tree(parse(data)), data))
    bad = payloads[1][0].message_id
    processor = hub.worker.processor
    original = processor.render
    tripped = []

    def render(plan, result):  # type: ignore[no-untyped-def]
        if result.envelope.message_id == bad and len(tripped) < 2:  # in the batch, then alone: then it is retried
            tripped.append(bad)
            raise RuntimeError("injected fault")
        return original(plan, result)

    processor.render = render
    try:
        await hub.publish(payloads)
        got = await hub.drain("county-220183-oa", expect=3, timeout=20)
    finally:
        processor.render = original
    ids = [e.message_id for _, e in got]
    assert tripped == [bad, bad]
    assert sorted(set(ids)) == sorted(env.message_id for env, _ in payloads)
    assert ids[-1] == bad  # the good ones were not held up; the bad one came back after its back-off


async def test_a_certificate_the_directory_does_not_register_is_refused(hub: Hub) -> None:
    """The directory's ``cert-sha256`` over RabbitMQ: 农安 signs with a valid certificate of its own that the
    directory does not list for it — a signed CERT_NOT_REGISTERED error to 农安, nothing delivered, and the id left
    free: once the directory lists the certificate the same message is delivered as a first copy."""
    from directory_edits import with_system

    from hub.envelope import Envelope

    sender = "county-220122-oa"
    data = hub.sign(sender, document(sender, [Recipient.to("11220183013553609R")]))
    env = Envelope.from_tree(parse(data))
    own = hub.signers[sender].identity.fingerprint
    processor = hub.worker.processor
    listed = processor.directory

    try:
        processor.directory = with_system(listed, sender, cert_sha256=("0" * 64,))
        await hub.publish([(env, data)])
        reply = await hub.reply(sender, env.message_id)
        assert (reply.kind, reply.outcome) == ("error", "CERT_NOT_REGISTERED")
        assert "cert-sha256" in reply.detail and own[:16] in reply.detail
        assert await hub.drain("county-220183-oa", timeout=1.5) == []
        processor.directory = with_system(listed, sender, cert_sha256=("0" * 64, own))
        await hub.publish([(env, data)])
        got = await hub.drain("county-220183-oa", expect=1, timeout=20)
    finally:
        processor.directory = listed
    assert [e.message_id for _, e in got] == [env.message_id]


async def test_a_system_cannot_publish_what_another_system_signed(hub: Hub) -> None:
    """XML-SECURITY §7 item 16: the AMQP user (authenticated by RabbitMQ) must be the signed sender. 榆树's own
    RabbitMQ user publishes a message genuinely signed by 农安: refused with CERT_SIGNER_MISMATCH, and the answer
    goes to the publisher that the broker vouches for, not to the signed sender."""
    from hub.envelope import Envelope
    from hub.pipeline.client import connect_as, outgoing
    from hub.transport.users import provision

    await provision(hub.settings, [("county-220182-oa", None)])
    data = hub.sign("county-220122-oa", document("county-220122-oa", [Recipient.to("11220183013553609R")]))
    env = Envelope.from_tree(parse(data))
    other = await connect_as(hub.settings, "county-220182-oa")
    try:
        assert other.user.endswith("county-220182-oa")
        await other.publish_many([outgoing(other, env, data, as_system=True)])
    finally:
        await other.close()
    reply = await hub.reply("county-220182-oa", env.message_id)
    assert (reply.kind, reply.outcome) == ("error", "CERT_SIGNER_MISMATCH")
    assert await hub.drain("county-220183-oa", timeout=1) == []
    answers = await hub.drain("county-220122-oa", timeout=1)  # the signed sender hears nothing about it
    assert env.message_id not in {e.ref_to for _, e in answers}
    # the replay did not occupy the message id: the genuine sender's own copy still goes through
    await hub.publish([(env, data)])
    reply = await hub.reply("county-220122-oa", env.message_id)
    assert (reply.kind, reply.outcome) == ("receipt", "accepted")
    got = await hub.drain("county-220183-oa", expect=1)
    assert [e.message_id for _, e in got] == [env.message_id]


async def test_leaving_out_user_id_does_not_hide_who_published(hub: Hub) -> None:
    """RabbitMQ checks user_id only when a publisher sets it. A system that leaves it out still publishes with its own
    lane's routing key (``normal.<system>``, enforced by its topic permission), and that key names it: 榆树's user
    publishing, without user_id, a message 农安 signed is refused CERT_SIGNER_MISMATCH to 榆树 (it was accepted as
    农安's before), and so is a hub.receipt 榆树 got from the hub and publishes back (it was examined as the hub's own
    message)."""
    import dataclasses

    from hub.envelope import Envelope
    from hub.pipeline.client import connect_as, outgoing
    from hub.transport.users import provision

    await provision(hub.settings, [("county-220182-oa", None)])
    data = hub.sign("county-220122-oa", document("county-220122-oa", [Recipient.to("11220183013553609R")]))
    env = Envelope.from_tree(parse(data))
    own = await hub.send("county-220182-oa", document("county-220182-oa", [Recipient.to("11220183013553609R")]))
    receipt = [m for m, e in await hub.drain("county-220182-oa", expect=1) if e.ref_to == own.message_id]
    assert len(receipt) == 1
    receipt_env = Envelope.from_tree(parse(receipt[0].body))
    assert receipt_env.service == "hub.receipt"
    other = await connect_as(hub.settings, "county-220182-oa")
    try:
        items = [
            outgoing(other, env, data, as_system=True),
            outgoing(other, receipt_env, receipt[0].body, as_system=True),
        ]
        assert items[0].routing_key == "normal.county-220182-oa"
        await other.publish_many([dataclasses.replace(item, user_id=None) for item in items])
    finally:
        await other.close()
    for about in (env.message_id, receipt_env.message_id):
        reply = await hub.reply("county-220182-oa", about)
        assert (reply.kind, reply.outcome) == ("error", "CERT_SIGNER_MISMATCH"), about
    delivered = await hub.drain("county-220183-oa", timeout=1)  # 榆树's own notice, not 农安's
    assert env.message_id not in {e.message_id for _, e in delivered}
    answers = await hub.drain("county-220122-oa", timeout=1)
    assert env.message_id not in {e.ref_to for _, e in answers}
    # nothing was delivered in 农安's name, and its id is still free for the genuine copy
    await hub.publish([(env, data)])
    reply = await hub.reply("county-220122-oa", env.message_id)
    assert (reply.kind, reply.outcome) == ("receipt", "accepted")
    got = await hub.drain("county-220183-oa", expect=1)
    assert [e.message_id for _, e in got] == [env.message_id]


async def test_hub_send_and_hub_receive_from_the_command_line(hub: Hub, tmp_path: Path) -> None:
    """The operator's client: ``hub send`` signs an unsigned envelope file as the system, publishes it and prints the
    hub's receipt; ``hub receive`` prints and saves what was delivered (hub signature verified) and acknowledges."""
    from hub.envelope import to_bytes

    draft = document("county-220122-oa", [Recipient.to("11220182013552847D")])
    f = tmp_path / "letter.xml"
    f.write_bytes(to_bytes(draft))
    message_id = draft.findtext("{urn:forestry-hub:envelope:1}Header/{urn:forestry-hub:envelope:1}MessageId")
    sent = await hub.cli("send", "--system", "county-220122-oa", "--wait", "20", str(f))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert f"{message_id}: 已受理 accepted" in sent.stdout
    out = tmp_path / "inbox"
    got = await hub.cli("receive", "--system", "county-220182-oa", "--out", str(out), "--wait", "5")
    assert got.returncode == 0, got.stdout + got.stderr
    assert message_id in got.stdout and "document.official/1" in got.stdout
    saved = out / f"{message_id}.xml"
    assert saved.exists()
    checked = await hub.cli("verify", str(saved))
    assert checked.returncode == 0 and "hub" in checked.stdout, checked.stdout + checked.stderr
    # an invalid envelope is refused before anything leaves, with the schema's line and code
    broken = tmp_path / "broken.xml"
    broken.write_bytes(
        f.read_bytes().replace(b"<env:Urgency>", b"<env:Urgent>").replace(b"</env:Urgency>", b"</env:Urgent>")
    )
    refused = await hub.cli("send", "--system", "county-220122-oa", str(broken))
    assert refused.returncode == 1 and "SCHEMA_ELEMENT" in refused.stdout, refused.stdout + refused.stderr
    # an unreadable file is a clear one-line problem, not a traceback
    bad = await hub.cli("send", "--system", "county-220122-oa", str(tmp_path / "missing.xml"))
    assert bad.returncode == 1 and "IO_READ" in bad.stdout and "Traceback" not in bad.stderr


async def test_hub_receive_wait_is_a_time_with_nothing_arriving(hub: Hub) -> None:
    """``--wait 2``: "stop when nothing arrives for this long". A document every 0.7 s for about 4 s: never 2 s
    without one, so receive prints every one (it stopped 2 s after it started, with what had come by then)."""
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "receive", "--system", "county-220182-oa", "--wait", "2"],
        env=hub.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ids = []
        started = time.monotonic()
        for _ in range(6):
            env = await hub.send("county-220122-oa", document("county-220122-oa", [Recipient.to("11220182013552847D")]))
            ids.append(env.message_id)
            await asyncio.sleep(0.7)
        out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert [i for i in ids if i in out] == ids, (time.monotonic() - started, out)


async def test_hub_receive_dead_letters_a_tampered_delivery_with_its_reason(hub: Hub) -> None:
    """``hub receive`` never acks away a delivery it refused: it parks it in ``ns.dead`` with the reason in headers,
    as the system's own AMQP user, then acks the original; the genuine delivery next to it is received."""
    from hub.pipeline.replies import countersigned_document
    from hub.transport import Outgoing
    from hub.transport.users import provision
    from hub.trust import Signer

    system = "prov-220000-portal"
    await provision(hub.settings, [(system, None)])  # hub receive then logs in as the system's own user
    paths = PkiPaths(hub.settings.state_dir / "pki")
    hub_signer = Signer.load(paths.hub_key, paths.hub_cert, passphrase=hub.settings.ca_passphrase.encode())

    def delivery() -> bytes:
        signed = hub.sign("county-220122-oa", document("county-220122-oa", [Recipient.to(PROVINCE)]))
        verified = hub.inbox_verifier.verify(parse(signed))
        return countersigned_document(verified.canonical, verified.signature, hub_signer.signature_for_canonical)

    good = delivery()
    bad = delivery().replace("<env:Classification>公开".encode(), "<env:Classification>内部".encode(), 1)
    assert bad.count("内部".encode()) == 1
    names = hub.transport.names
    await hub.transport.publish_many(
        [Outgoing(names.deliver_exchange, system, body, {}, 0, mid) for mid, body in (("bad", bad), ("good", good))]
    )
    got = await hub.cli("receive", "--system", system, "--wait", "3")
    assert got.returncode == 1, got.stdout + got.stderr
    assert "bad: 拒收 refused: SIG_DIGEST" in got.stdout, got.stdout
    assert "document.official/1" in got.stdout  # the genuine one
    assert await hub.depth(system) == 0  # both settled: nothing requeued
    parked = []
    for _ in range(50):
        batch = await hub.transport.fetch(names.dead_letter_queue, max_messages=50)
        await hub.transport.ack(batch)
        parked += [m for m in batch if m.body == bad]
        if parked:
            break
        await asyncio.sleep(0.1)
    assert len(parked) == 1, "the refused delivery is not in the dead-letter queue"
    m = parked[0]
    assert m.headers["x-refused-by"] == system
    assert m.headers["x-refused-code"] == "SIG_DIGEST"
    assert "hub signed" in m.headers["x-refused-reason"]
    assert m.user_id == names.user(system) and m.message_id == "bad"


async def test_a_delivery_replayed_into_the_hub_is_refused(hub: Hub) -> None:
    """A recipient cannot launder a hub-signed delivery back through the inbound exchange: a delivery carries two
    signatures (the hub's and the originator's) and the hub's intake takes exactly one (SIG_PROFILE); even with one,
    the signer must be the signed sender, and the hub's certificate is not the sender's."""
    env = await hub.send("county-220122-oa", document("county-220122-oa", [Recipient.to("11220183013553609R")]))
    got = await hub.drain("county-220183-oa", expect=1)
    delivery = got[0][0].body
    await hub.publish([(None, delivery)])
    names = hub.transport.names
    for _ in range(100):
        batch = await hub.transport.fetch(names.dead_letter_queue, max_messages=50)
        await hub.transport.ack(batch)
        mine = [m for m in batch if m.body == delivery]
        if mine:
            assert mine[0].headers["x-hub-error-code"] == "SIG_PROFILE"
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the replayed delivery was not refused")
    assert await hub.drain("county-220183-oa", timeout=1) == []  # not delivered a second time
    # The refused intake records what the bytes claim (read before the signature failed), for an operator to find
    # it by its id on the ops page; it occupies nothing.
    import hashlib

    row = await hub.pool.fetchrow(
        "SELECT claimed_message_id, service FROM intake_rejections WHERE raw_sha256 = $1",
        hashlib.sha256(delivery).digest(),
    )
    assert (str(row["claimed_message_id"]), row["service"]) == (env.message_id, env.service)


async def test_a_second_copy_racing_the_first_is_delivered_once(hub: Hub) -> None:
    """Two copies of one message in flight at once (here the first is held between record and publish while the
    second arrives on the other lane's consumer): the second is answered "duplicate" and delivers nothing; the
    first finishes its own work. Delivered exactly once."""
    from hub.envelope import Envelope

    # 特急: entitled to the emergency lane the second copy takes (an ordinary one is refused there: LANE_NOT_ENTITLED).
    data = hub.sign(
        "county-220122-oa", document("county-220122-oa", [Recipient.to("11220183013553609R")], urgency="特急")
    )
    env = Envelope.from_tree(parse(data))
    transport = hub.worker.transport
    original = transport.publish_many
    held = asyncio.Event()
    release = asyncio.Event()

    async def slow_publish(items):  # type: ignore[no-untyped-def]
        if any(i.message_id == env.message_id for i in items) and not held.is_set():
            held.set()
            await release.wait()
        return await original(items)

    transport.publish_many = slow_publish
    try:
        await hub.publish([(env, data)], lane="normal")  # normal lane (its client would take the emergency one)
        await asyncio.wait_for(held.wait(), 10)
        await hub.publish([(env, data)], lane="emergency")
        second = await hub.reply("county-220122-oa", env.message_id)
        assert (second.kind, second.outcome) == ("receipt", "duplicate")
        release.set()
        got = await hub.drain("county-220183-oa", expect=2, timeout=3)
    finally:
        transport.publish_many = original
        release.set()
    assert [e.message_id for _, e in got] == [env.message_id]


async def test_a_database_outage_defers_the_batch_to_the_retry_queue_and_nothing_is_lost(hub: Hub) -> None:
    """Transient failures (PostgreSQL unavailable) put the batch on the back-off queues; it comes back after the
    first delay of its route's <Retry> (documents.routes.xml: 5 s, not the transport's shortest queue) and is
    delivered then — with x-hub-attempt telling it is a retry."""
    import hub.store.messages as messages
    from hub.envelope import Envelope
    from hub.errors import StoreUnavailable

    data = hub.sign("county-220122-oa", document("county-220122-oa", [Recipient.to("11220183013553609R")]))
    env = Envelope.from_tree(parse(data))
    original = messages.record_batch
    failures: list[str] = []

    async def down(executor, records, rejections=()):  # type: ignore[no-untyped-def]
        if any(r.message_id == env.message_id for r in records) and not failures:
            failures.append(env.message_id)
            raise StoreUnavailable("PostgreSQL is unavailable while recording a batch (injected)")
        return await original(executor, records, rejections)

    messages.record_batch = down  # the worker imports it at call time
    try:
        started = asyncio.get_running_loop().time()
        await hub.publish([(env, data)])
        reply = await hub.reply("county-220122-oa", env.message_id, timeout=20)
        waited = asyncio.get_running_loop().time() - started
    finally:
        messages.record_batch = original
    assert failures == [env.message_id]
    assert (reply.kind, reply.outcome) == ("receipt", "accepted")
    got = await hub.drain("county-220183-oa", expect=1)
    assert [e.message_id for _, e in got] == [env.message_id]
    assert waited >= 4.5  # it sat out its route's first back-off delay (5 s) in the retry queue, not a hot requeue


async def test_the_route_attempts_decide_when_a_message_is_dead_lettered(hub: Hub) -> None:
    """documents.routes.xml: <Retry attempts="8" backoff="5 30 120 600 1800 3600"/>. While PostgreSQL is down, a
    document on its 7th attempt waits in the retry queue of the route's last delay (3600 s); one on its 8th is
    dead-lettered with the outage's code (the transport's own defaults would have given up after 6)."""
    import dataclasses

    import hub.store.messages as messages
    from hub.envelope import Envelope
    from hub.errors import StoreUnavailable
    from hub.pipeline.client import outgoing

    sent = []
    for attempt in (6, 7):
        data = hub.sign("county-220122-oa", document("county-220122-oa", [Recipient.to("11220183013553609R")]))
        env = Envelope.from_tree(parse(data))
        item = outgoing(hub.transport, env, data, as_system=False)
        sent.append((env.message_id, dataclasses.replace(item, headers={"x-hub-attempt": attempt})))
    ids = {mid for mid, _ in sent}
    original = messages.record_batch

    async def down(executor, records, rejections=()):  # type: ignore[no-untyped-def]
        if any(r.message_id in ids for r in records):
            raise StoreUnavailable("PostgreSQL is unavailable while recording a batch (injected)")
        return await original(executor, records, rejections)

    names = hub.transport.names
    messages.record_batch = down  # the worker imports it at call time
    try:
        await hub.transport.publish_many([o for _, o in sent])
        dead = []
        for _ in range(100):
            batch = await hub.transport.fetch(names.dead_letter_queue, max_messages=10)
            dead += [m for m in batch if m.message_id in ids]
            await hub.transport.ack(batch)
            if dead and await hub.transport.queue_depth(names.retry_queue(3600)) == 1:
                break
            await asyncio.sleep(0.1)
    finally:
        messages.record_batch = original
    assert [(m.message_id, m.headers["x-hub-error-code"]) for m in dead] == [(sent[1][0], "DELIVERY_STORE")]
    [waiting] = await hub.transport.fetch(names.retry_queue(3600), max_messages=10)
    assert waiting.message_id == sent[0][0] and waiting.headers["x-hub-attempt"] == 7
    await hub.transport.ack([waiting])


async def test_a_lost_database_connection_is_replaced_and_nothing_is_lost(hub: Hub) -> None:
    """The worker keeps a PostgreSQL connection between batches; when the server drops it (restart, failover,
    an operator's pg_terminate_backend), the next batch fails as an outage, is retried, and goes through on a
    fresh connection from the pool."""
    first = await hub.send("county-220122-oa", document("county-220122-oa", [Recipient.to("11220183013553609R")]))
    assert (await hub.reply("county-220122-oa", first.message_id)).outcome == "accepted"
    await hub.drain("county-220183-oa", expect=1)
    async with hub.pool.acquire() as conn:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert killed >= 1  # the worker's held connection among them
    second = await hub.send("county-220122-oa", document("county-220122-oa", [Recipient.to("11220183013553609R")]))
    reply = await hub.reply("county-220122-oa", second.message_id, timeout=20)
    assert (reply.kind, reply.outcome) == ("receipt", "accepted")
    got = await hub.drain("county-220183-oa", expect=1)
    assert [e.message_id for _, e in got] == [second.message_id]


async def test_the_workers_statements_are_planned_once(hub: Hub) -> None:
    """The worker's connections use generic plans for its prepared statements (PostgreSQL re-planned record_sent
    on most calls otherwise); other pools keep PostgreSQL's default."""
    assert hub.worker is not None
    async with hub.worker.pool.acquire() as conn:
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    async with hub.pool.acquire() as conn:
        assert await conn.fetchval("SHOW plan_cache_mode") == "auto"


async def test_a_message_over_its_cpu_budget_is_refused_parked_and_the_batch_goes_on(hub: Hub) -> None:
    """The per-message CPU budget (issue 17): a message found over it between two steps is answered with a signed
    MSG_COST_EXCEEDED, parked in the dead-letter queue for an operator, and does not occupy its message id; the
    message after it in the same batch is delivered."""
    p = hub.worker.processor
    costly = hub.sign("county-220122-oa", document("county-220122-oa", [Recipient.to("11220183013553609R")]))
    fine = hub.sign("county-220122-oa", document("county-220122-oa", [Recipient.to("11220183013553609R")]))
    costly_env, fine_env = (Envelope.from_tree(parse(d)) for d in (costly, fine))
    real_clock, real_budget = p.cpu_clock, p.cost_budget_s
    # The costly one: 100 s of "CPU" by the end of its signature verification (the sender is then known; the
    # publisher here is the hub's own test user, not the sender's, so only the signed sender can be answered).
    readings = iter([0.0, 0.0, 0.0, 100.0])

    def clock() -> float:
        return next(readings, 0.0)

    p.cpu_clock, p.cost_budget_s = clock, 0.25
    try:
        await hub.publish([(costly_env, costly), (fine_env, fine)])
        reply = await hub.reply("county-220122-oa", costly_env.message_id)
        assert (reply.kind, reply.outcome) == ("error", "MSG_COST_EXCEEDED")
        ok = await hub.reply("county-220122-oa", fine_env.message_id)
        assert (ok.kind, ok.outcome) == ("receipt", "accepted")
    finally:
        p.cpu_clock, p.cost_budget_s = real_clock, real_budget
    got = await hub.drain("county-220183-oa", expect=1, timeout=5)
    assert [e.message_id for _, e in got] == [fine_env.message_id]
    names = hub.transport.names
    for _ in range(50):
        batch = await hub.transport.fetch(names.dead_letter_queue, max_messages=50)
        mine = [m for m in batch if m.body == costly]
        await hub.transport.ack(batch)
        if mine:
            assert mine[0].headers["x-hub-error-code"] == "MSG_COST_EXCEEDED"
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the over-budget message was not parked in the dead-letter queue")
    # It does not occupy its id: sent again (the hub less busy), it is a first copy and delivered.
    await hub.publish([(costly_env, costly)])
    again = await hub.reply("county-220122-oa", costly_env.message_id)
    assert (again.kind, again.outcome) == ("receipt", "accepted")
    got = await hub.drain("county-220183-oa", expect=1)  # delivered, and not left for a later test of this hub
    assert [e.message_id for _, e in got] == [costly_env.message_id]
