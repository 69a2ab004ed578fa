"""Keys, certificates and evidence over years (issue 13) on the real RabbitMQ and PostgreSQL, with the pipeline
worker running in this process and the hub clock (``hub.clock``) injected:

- two years of traffic: the hub key rotated twice (while messages are in flight) and the issuing CA rolled over
  once; afterwards every checkpoint and every receipt verifies, a certificate of the old issuing CA is accepted
  until it expires and refused after, the old CA stops publishing CRLs once nothing it issued is valid, and a record
  altered by hand is still reported (which record);
- a hub (worker) and the CLI refuse a store that belongs to another installation;
- ``hub pki issue`` against a missing database or one without the CA's rows says what to do (never INTERNAL);
- ``hub verify`` knows the hub by its certificates, current and earlier, not by the name "hub"."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness import PROVINCE, Hub, document

from hub import clock
from hub.commands import trust_admin as admin
from hub.envelope import Envelope, Recipient, parse
from hub.errors import HubError
from hub.pipeline.client import credential_paths, read_reply
from hub.pipeline.processor import CN_TZ
from hub.settings import Settings
from hub.trust import Signer, TrustStore, Verifier, lifecycle, pki

pytestmark = pytest.mark.integration

G = "county-bureaus:220100"  # 农安's peers 榆树 and 德惠 (the county bureaus under 长春)
PEERS = ("county-220182-oa", "county-220183-oa")
OLD_CA_SENDER = "county-220122-oa"  # keeps its first certificate (old issuing CA) until it expires
RENEWED_SENDER = "city-220100-oa"  # renewed under the new issuing CA


class FakeClock:
    def __init__(self) -> None:
        self.t = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.t

    def day(self, start: dt.datetime, n: float) -> None:
        self.t = start + dt.timedelta(days=n)


class Run:
    """The hub under a fake clock, with what every sender received kept as bytes (and when)."""

    def __init__(self, hub: Hub, fake: FakeClock) -> None:
        self.hub = hub
        self.fake = fake
        self.pki_dir = hub.settings.state_dir / "pki"
        self.receipts: list[tuple[bytes, dt.datetime]] = []
        self.delivered = 0

    def verifier(self) -> Verifier:
        return Verifier(TrustStore.load(self.pki_dir), now=clock.now)

    async def crls(self) -> None:
        """Publish CRLs at the (fake) now, and let the worker and the inbox see them at once."""
        await admin.publish_crls(self.hub.settings, self.pki_dir)
        assert self.hub.worker is not None
        self.hub.worker.trust_store.refresh()
        self.hub.inbox_verifier = self.verifier()

    async def send(self, sender: str, *, burst: int = 1, during: Any = None) -> list[Any]:
        """Send ``burst`` messages to the county bureaus; run ``during`` while they are in flight; return the hub's
        replies (verified as hub-signed at the fake now), keeping each reply's bytes."""
        h = self.hub
        created = clock.now().astimezone(CN_TZ)
        ids = []
        for _ in range(burst):
            root = document(sender, [Recipient.to_group(G)], created=created, expires=created + dt.timedelta(days=3))
            ids.append((await h.send(sender, root)).message_id)
        if during is not None:
            await during()
        box = h.inbox(sender)
        wanted, got = set(ids), {}
        deadline = time.monotonic() + 30
        while wanted - set(got) and time.monotonic() < deadline:
            batch = await box.take()
            if not batch:
                await asyncio.sleep(0.05)
                continue
            for m in batch:
                if m.correlation_id in wanted:
                    got[m.correlation_id] = read_reply(box.open(m.body))
                    self.receipts.append((m.body, clock.now()))
            await h.transport.ack(batch)
        assert set(got) == wanted, f"replies missing for {wanted - set(got)}"
        accepted = sum(1 for r in got.values() if r.kind == "receipt")
        for peer in PEERS:
            if accepted:
                self.delivered += len(await h.drain(peer, expect=accepted, timeout=20))
        return [got[i] for i in ids]

    async def checkpoint(self) -> None:
        assert self.hub.worker is not None
        await self.hub.worker._housekeep()  # what worker 0 runs every minute: checkpoint (+ CRLs when due)

    async def wait_for_hub_key(self, fingerprint: str) -> None:
        deadline = time.monotonic() + 15
        while self.hub.worker.signer.identity.fingerprint != fingerprint:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the worker did not switch to the rotated hub key"
            await asyncio.sleep(0.1)

    def renew_signer(self, system: str, issued: pki.IssuedCertificate) -> None:
        key_path, cert_path = credential_paths(self.hub.settings, system)
        assert issued.issuer is not None
        cert_path.write_bytes(pki.certificate_pem(issued.certificate, issued.issuer))
        self.hub.signers[system] = Signer.load(key_path, cert_path)


def _serial_of(signer: Signer) -> str:
    return signer.identity.serial_hex


async def test_two_years_of_rotations_and_a_rollover_keep_every_piece_of_evidence_verifiable(
    fresh_settings: Settings,
) -> None:
    fake = FakeClock()
    start = fake.t
    with clock.override(fake):
        h = Hub(fresh_settings)
        await h.setup()
        try:
            await h.start_worker()
            run = Run(h, fake)
            run.hub.inbox_verifier = run.verifier()
            first_hub = h.worker.signer.identity  # type: ignore[union-attr]
            sent_first = ""
            old_ca = pki.load_certificates(pki.PkiPaths(run.pki_dir).issuing_cert)[0]

            # day 0 and day 150: traffic, checkpoints
            for day in (0, 150):
                fake.day(start, day)
                await run.crls()
                replies = await run.send(OLD_CA_SENDER, burst=2) + await run.send(RENEWED_SENDER)
                assert {r.kind for r in replies} == {"receipt"}
                sent_first = sent_first or replies[0].about
                await run.checkpoint()

            # day 200: the hub key is rotated while ten messages are in flight; none is lost, every reply verifies
            fake.day(start, 200)
            await run.crls()
            rotated: list[lifecycle.RotationResult] = []

            async def rotate() -> None:
                rotated.append(await admin.rotate_hub(h.settings, run.pki_dir))
                await run.wait_for_hub_key(rotated[-1].new.fingerprint)

            replies = await run.send(OLD_CA_SENDER, burst=10, during=rotate)
            assert [r.kind for r in replies] == ["receipt"] * 10
            assert replies[-1].envelope is not None
            await run.checkpoint()
            replies = await run.send(RENEWED_SENDER)
            assert replies[0].kind == "receipt"

            # day 250: a new issuing CA; the city system is renewed under it, 农安 keeps its old-CA certificate
            fake.day(start, 250)
            rolled = await admin.rollover_issuing(h.settings, run.pki_dir)
            await run.crls()
            city_serial = _serial_of(h.signers[RENEWED_SENDER])
            renewed = await admin.renew(h.settings, run.pki_dir, city_serial)
            assert renewed.issuer is not None and renewed.issuer.serial_number == rolled.new.certificate.serial_number
            run.renew_signer(RENEWED_SENDER, renewed)
            old_cert = h.signers[OLD_CA_SENDER].certificates[0]
            assert old_cert.issuer == old_ca.subject and old_ca.serial_number != rolled.new.certificate.serial_number
            for sender in (OLD_CA_SENDER, RENEWED_SENDER):
                assert [r.kind for r in await run.send(sender)] == ["receipt"]
            await run.checkpoint()

            # day 360: the old CA's certificate is still accepted days before it expires
            fake.day(start, 360)
            await run.crls()
            assert [r.kind for r in await run.send(OLD_CA_SENDER)] == ["receipt"]

            # day 370: … and refused once it has expired; renewed under the new CA it is accepted again
            fake.day(start, 370)
            await run.crls()
            # (published by the test's admin user, not the system's own: the refusal of a message whose signature
            # cannot be trusted is recorded, and answered only to a broker-authenticated sender)
            created = clock.now().astimezone(CN_TZ)
            refused = await h.send(
                OLD_CA_SENDER,
                document(
                    OLD_CA_SENDER, [Recipient.to_group(G)], created=created, expires=created + dt.timedelta(days=3)
                ),
            )
            deadline = time.monotonic() + 20
            rows: list[Any] = []
            while not rows and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                rows = await h.pool.fetch("SELECT error_code, error_reason FROM intake_rejections")
            assert [r["error_code"] for r in rows] == ["CERT_EXPIRED"], rows
            assert "expired on" in rows[0]["error_reason"]
            assert (
                await h.pool.fetchval(
                    "SELECT count(*) FROM messages WHERE message_id = $1", uuid.UUID(refused.message_id)
                )
                == 0
            )
            renewed_county = await admin.renew(h.settings, run.pki_dir, _serial_of(h.signers[OLD_CA_SENDER]))
            run.renew_signer(OLD_CA_SENDER, renewed_county)
            assert [r.kind for r in await run.send(OLD_CA_SENDER)] == ["receipt"]
            await run.checkpoint()

            # day 400: the second rotation; the hub's certificate now comes from the new issuing CA
            fake.day(start, 400)
            await run.crls()
            await rotate()
            assert rotated[-1].new.certificate.issuer == rolled.new.certificate.subject
            assert [r.kind for r in await run.send(RENEWED_SENDER, burst=3)] == ["receipt"] * 3
            await run.checkpoint()

            # day 600: the old issuing CA has nothing valid left (the hub's second certificate expired on day 565):
            # its key is retired, its last CRL stays; the new CA goes on
            fake.day(start, 600)
            await run.crls()
            old_key = lifecycle.archived_issuing_key(run.pki_dir, pki.serial_hex(old_ca.serial_number))
            assert not old_key.exists() and old_key.with_name(old_key.name + ".retired").exists()
            yearly = await admin.renew(h.settings, run.pki_dir, _serial_of(h.signers[RENEWED_SENDER]))  # its year is up
            run.renew_signer(RENEWED_SENDER, yearly)

            # day 730: two years on, traffic and a checkpoint; ten days later the hub's own certificate expires within 30
            fake.day(start, 730)
            await run.crls()
            for sender in (OLD_CA_SENDER, RENEWED_SENDER):
                assert [r.kind for r in await run.send(sender)] == ["receipt"]
            await run.checkpoint()
            assert lifecycle.expiry_warnings(run.pki_dir) == []  # 35 days left
            warnings = lifecycle.expiry_warnings(run.pki_dir, now=start + dt.timedelta(days=740))
            assert [w.what for w in warnings] == ["hub"] and "hub pki rotate" in warnings[0].text()

            # every checkpoint verifies with the certificate recorded with it: three hub certificates signed them
            async with h.pool.acquire() as conn:
                signers = [
                    r["signer"]
                    for r in await conn.fetch(
                        "SELECT detail::json->>'signer' AS signer FROM evidence WHERE kind = 'checkpoint' ORDER BY seq"
                    )
                ]
                receipts_stored = await conn.fetchval("SELECT count(*) FROM receipts")
            assert len(signers) >= 6
            assert {first_hub.fingerprint, *(r.new.fingerprint for r in rotated)} == set(signers)
            done = await h.cli("evidence", "verify")
            assert done.returncode == 0, done.stdout + done.stderr
            assert "证据链完整" in done.stdout

            # every receipt the senders got verifies, as of when it was made, whichever hub certificate signed it
            assert receipts_stored == len(run.receipts)
            store = TrustStore.load(run.pki_dir)
            signed_by = set()
            for data, at in run.receipts:
                verified = Verifier(store, now=lambda at=at: at).verify(parse(data))
                assert verified.signer.system == "hub"
                signed_by.add(verified.signer.fingerprint)
            assert signed_by == set(signers)
            # … and from the command line, as an auditor checks an archived receipt: `hub verify --at signed`
            # (this subprocess runs on the real clock, when the last receipt's certificate is not valid yet)
            for i, (data, _) in enumerate((run.receipts[0], run.receipts[-1])):
                f = h.settings.state_dir / f"receipt-{i}.xml"
                f.write_bytes(data)
                done = await h.cli("verify", "--at", "signed", str(f))
                assert done.returncode == 0 and "verified as of" in done.stdout, done.stdout + done.stderr
            done = await h.cli("verify", str(f))
            assert done.returncode == 1 and "CERT_EXPIRED" in done.stdout, done.stdout
            assert run.delivered == 2 * len(run.receipts)  # every accepted message reached both peers

            # a record altered by hand is still found, and named
            async with h.pool.acquire() as conn:
                seq = await conn.fetchval("SELECT min(seq) FROM evidence WHERE kind = 'received'")
                await conn.execute("ALTER TABLE evidence DISABLE TRIGGER evidence_append_only")  # as an intruder would
                await conn.execute(
                    "UPDATE evidence SET detail = replace(detail, '\"t\":', '\"t \":') WHERE seq = $1", seq
                )
            done = await h.cli("evidence", "verify")
            assert done.returncode == 1
            assert f"record {seq} does not match its hash" in done.stdout
            assert "checkpoint" not in done.stdout.replace(f"record {seq}", "")  # no false alarm about signatures

            # a message changed by hand is named with the field that changed
            target = uuid.UUID(sent_first)
            async with h.pool.acquire() as conn:
                await conn.execute("UPDATE messages SET urgency = '特急' WHERE message_id = $1", target)
                await conn.execute(
                    "UPDATE messages SET raw = overlay(raw placing '\x20'::bytea from 50) WHERE message_id = $1", target
                )
            done = await h.cli("evidence", "verify")
            assert done.returncode == 1
            named = [ln for ln in done.stdout.splitlines() if str(target) in ln]
            assert len(named) == 2, done.stdout
            assert any("its urgency no longer matches" in ln for ln in named)
            assert any("its raw (the signed bytes) no longer matches" in ln for ln in named)
        finally:
            await h.close()


async def test_a_store_of_another_installation_is_refused(fresh_settings: Settings, tmp_path: Path) -> None:
    h = Hub(fresh_settings)
    await h.setup()
    try:
        other = fresh_settings.with_(state_dir=tmp_path / "other")
        pki.init_ca(other.state_dir / "pki", other.ca_passphrase)  # a second installation's CA, same database
        from hub.pipeline.worker import Worker

        foreign = Worker(other, 0)
        with pytest.raises(HubError) as refused:
            try:
                await foreign.start()
            finally:
                await foreign.stop()
        assert refused.value.code == "STORE_FOREIGN_INSTALLATION"
        assert "belongs to another hub installation" in refused.value.detail

        # hub run as an operator starts it: refused once, before any worker starts, with the reason
        done = await Hub(other).cli("run", "--workers", "1", timeout=60)
        assert done.returncode == 2 and "STORE_FOREIGN_INSTALLATION" in done.stderr, done.stderr[-2000:]
        assert "worker 0 started" not in done.stderr

        # the CLI too, before anything is written or verified; another namespace is another installation as well
        for settings in (other, fresh_settings.with_(namespace=fresh_settings.namespace + "-x")):
            done = await Hub(settings).cli("evidence", "verify")
            assert done.returncode == 2 and "STORE_FOREIGN_INSTALLATION" in done.stderr, done.stderr

        # hub pki init refuses to put a second CA into a claimed store
        third = fresh_settings.with_(state_dir=tmp_path / "third")
        with pytest.raises(HubError) as again:
            await admin.init(third, third.state_dir / "pki")
        assert again.value.code == "STORE_FOREIGN_INSTALLATION"
        assert not (third.state_dir / "pki").exists()

        # the hub itself still starts against its own store
        await h.start_worker()
    finally:
        await h.close()


def test_pki_issue_without_the_database_or_its_register_says_what_to_do(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    h = Hub(fresh_settings)
    asyncio.run(admin.init(fresh_settings, fresh_settings.state_dir / "pki", agency=PROVINCE))
    done = h.hub_cli("keygen", "--system", "city-220100-oa", "--agency", "11220100013544550M", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    csr = str(tmp_path / "city-220100-oa.csr")
    missing = fresh_settings.pg_dsn.rsplit("/", 1)[0] + f"/hub_missing_{uuid.uuid4().hex[:6]}"
    done = Hub(fresh_settings.with_(pg_dsn=missing)).hub_cli("pki", "issue", "--csr", csr)
    assert done.returncode == 2
    assert "STORE_NO_DATABASE" in done.stderr and "createdb" in done.stderr and "INTERNAL" not in done.stderr
    from conftest import _admin

    name = f"hub_test_empty_{uuid.uuid4().hex[:6]}"  # exists, migrated, but holds no register of this CA
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        empty = fresh_settings.pg_dsn.rsplit("/", 1)[0] + "/" + name
        done = Hub(fresh_settings.with_(pg_dsn=empty)).hub_cli("pki", "issue", "--csr", csr)
        assert done.returncode == 2
        assert "STORE_NO_CA" in done.stderr and "HUB_PG_DSN" in done.stderr and "INTERNAL" not in done.stderr
        assert not list(tmp_path.glob("*.pem"))
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_hub_verify_knows_the_hub_by_its_certificates(fresh_settings: Settings, tmp_path: Path) -> None:
    s = fresh_settings
    pki_dir = s.state_dir / "pki"
    await admin.init(s, pki_dir, agency=PROVINCE)
    h = Hub(s)

    async def relayed_by(signer: Signer) -> Any:
        # a delivery: sender 长春 OA, signed by the hub (as the hub signs what it delivers)
        root = document("city-220100-oa", [Recipient.to_group(G)])
        signer.sign(root)
        f = tmp_path / f"{uuid.uuid4().hex}.xml"
        from hub.envelope import to_bytes

        f.write_bytes(to_bytes(root))
        return await h.cli("verify", str(f))

    paths = pki.PkiPaths(pki_dir)
    first = Signer.load(paths.hub_key, paths.hub_cert, passphrase=s.ca_passphrase.encode())
    assert (await relayed_by(first)).returncode == 0
    await admin.rotate_hub(s, pki_dir)
    second = Signer.load(paths.hub_key, paths.hub_cert, passphrase=s.ca_passphrase.encode())
    for signer in (first, second):  # the earlier certificate is still the hub's
        done = await relayed_by(signer)
        assert done.returncode == 0 and "delivered by the hub on behalf of" in done.stdout, done.stdout
    done = await h.cli("pki", "renew", second.identity.serial_hex)  # the hub's certificate is rotated, not renewed
    assert done.returncode == 2 and "hub pki rotate" in done.stderr, done.stderr
    listed = {ln.split()[0]: ln for ln in (await h.cli("pki", "list")).stdout.splitlines()[1:]}
    assert " current " in listed[second.identity.serial_hex] and " superseded " in listed[first.identity.serial_hex]

    # a certificate named "hub" that is not one of the hub's certificates is held to the signer binding
    from cryptography.hazmat.primitives import hashes, serialization

    from hub.trust import keys

    key = keys.generate_private_key("ec-p256")
    issuing, issuing_key = pki.load_ca(pki_dir, s.ca_passphrase)
    now = dt.datetime.now(dt.UTC)
    impostor = pki.end_entity_builder(
        pki.subject_for(PROVINCE, "hub"),
        key.public_key(),
        issuing,
        not_before=now - dt.timedelta(minutes=5),
        not_after=now + dt.timedelta(days=30),
    ).sign(issuing_key, hashes.SHA384())
    kp, cp = tmp_path / "i.key", tmp_path / "i.pem"
    pem = serialization.Encoding.PEM
    kp.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cp.write_bytes(pki.certificate_pem(impostor, issuing))
    done = await relayed_by(Signer.load(kp, cp))
    assert done.returncode == 1 and "CERT_SIGNER_MISMATCH" in done.stdout, done.stdout

    # hub receive's inbox: the same rule (the hub's certificates, current and earlier, not the name)
    from types import SimpleNamespace

    from hub.envelope import to_bytes
    from hub.pipeline.client import Inbox
    from hub.validation import SchemaRegistry

    inbox = Inbox(
        s,
        SimpleNamespace(
            names=SimpleNamespace(system_queue=lambda system: system, system_queues=lambda system: (system,))
        ),
        "county-220182-oa",
        verifier=Verifier(TrustStore.load(pki_dir)),
        registry=SchemaRegistry(s.schemas_dir),
    )
    from hub.pipeline.client import enroll, load_signer
    from hub.pipeline.replies import countersigned_document

    await enroll(s, "city-220100-oa", "11220100013544550M")
    sender = load_signer(s, "city-220100-oa")

    def delivery(hub_signer: Signer) -> bytes:
        # what the hub delivers: the sender's signed content, the hub's signature, the sender's own
        signed = to_bytes(sender.sign(document("city-220100-oa", [Recipient.to_group(G)])))
        verified = Verifier(TrustStore.load(pki_dir)).verify(parse(signed))
        return countersigned_document(verified.canonical, verified.signature, hub_signer.signature_for_canonical)

    for signer in (first, second):
        assert inbox.open(delivery(signer)).sender.system == "city-220100-oa"
    with pytest.raises(HubError) as refused:
        inbox.open(delivery(Signer.load(kp, cp)))
    assert refused.value.code == "CERT_SIGNER_MISMATCH"
    # `hub verify` names both signers of such a delivery
    f = tmp_path / "delivery.xml"
    f.write_bytes(delivery(second))
    done = await h.cli("verify", str(f))
    assert done.returncode == 0 and "delivered by the hub" in done.stdout, done.stdout + done.stderr
    assert "signed by 11220100013544550M/city-220100-oa" in done.stdout, done.stdout


async def test_hub_run_workers_follow_a_rotated_key_without_a_restart_or_a_lost_message(
    fresh_settings: Settings,
) -> None:
    """``hub run --workers 2`` as an operator runs it; ``hub pki rotate`` from the command line while messages flow:
    every message is delivered (hub-signed, verifying), both worker processes switch to the new key, and what is
    sent afterwards is signed with it."""
    import signal

    h = Hub(fresh_settings)
    await h.setup()
    proc = None
    try:
        paths = pki.PkiPaths(h.settings.state_dir / "pki")
        old_fp = pki.fingerprint(pki.load_certificates(paths.hub_cert)[0])
        signed = []
        for _ in range(300):
            data = h.sign(OLD_CA_SENDER, document(OLD_CA_SENDER, [Recipient.to_group(G)]))
            signed.append((Envelope.from_tree(parse(data)), data))
        seen: dict[str, dict[str, str]] = {p: {} for p in PEERS}  # message id → signer fingerprint

        async def collect() -> None:
            for peer in PEERS:
                box = h.inbox(peer)
                while batch := await box.take(max_messages=200):
                    for m in batch:
                        opened = box.open_delivery(m.body)
                        seen[peer][opened.envelope.message_id] = opened.hub.fingerprint
                    await h.transport.ack(batch)

        proc = h.run_hub(workers=2)
        await h.publish(signed[:150])
        deadline = time.monotonic() + 60
        while len(seen[PEERS[0]]) < 20 and time.monotonic() < deadline:  # the workers run, with the first key
            await collect()
            await asyncio.sleep(0.1)
        done = await h.cli("pki", "rotate")
        assert done.returncode == 0 and "hub key rotated" in done.stdout, done.stdout + done.stderr
        new_fp = pki.fingerprint(pki.load_certificates(paths.hub_cert)[0])
        await h.publish(signed[150:])

        sent = {env.message_id for env, _ in signed}
        deadline = time.monotonic() + 120
        while any(set(seen[p]) != sent for p in PEERS) and time.monotonic() < deadline:
            await collect()
            await asyncio.sleep(0.1)
        for peer in PEERS:
            assert set(seen[peer]) == sent, f"{peer} is missing {len(sent - set(seen[peer]))} messages"
        # signed with the first key (and, for what came after the switch, the second): all of them verify
        assert old_fp in set(seen[PEERS[0]].values()) <= {old_fp, new_fp}

        # both worker processes switched (each logs it), and a message sent now is signed with the new key
        deadline = time.monotonic() + 20
        log_text = ""
        while time.monotonic() < deadline:
            log_text = h.log_path.read_text(errors="replace")
            if "worker 0 now signs" in log_text and "worker 1 now signs" in log_text:
                break
            await asyncio.sleep(0.2)
        assert "worker 0 now signs" in log_text and "worker 1 now signs" in log_text, log_text[-2000:]
        later = await h.send(OLD_CA_SENDER, document(OLD_CA_SENDER, [Recipient.to_group(G)]))
        deadline = time.monotonic() + 20
        while later.message_id not in seen[PEERS[0]] and time.monotonic() < deadline:
            await collect()
            await asyncio.sleep(0.1)
        assert seen[PEERS[0]][later.message_id] == new_fp
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        await h.close()
