"""The video-conference adapter (``adapters/video_conference``) in its own process (``hub adapter run``) against the
real RabbitMQ and hub, with the simulated platform (``adapters.video_conference.simulator``) on the other side:

- the demo part returns no problems;
- SIGKILL mid-stream with 500 bookings in flight (and their 500 replies and 500 branch-venue notices going out),
  then a restart: the platform has every booking exactly once, the booker every answer once, the branch venue
  every notice once;
- the platform down for a while, then back: nothing lost, nothing booked twice;
- what the platform answers that is not the contract (not JSON) is never turned into a message: retried until the
  platform answers properly, then answered once; a field the platform finds too long, a conflicting slot and an
  attendance for an unknown meeting are refused back to the sender with the platform's code and reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import sqlite3
import ssl
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.sdk import ConfigurationError, to
from adapters.sdk.testing import AdapterProcess, TestHub
from adapters.video_conference.demo import (
    BOOKER,
    BRANCHES,
    CST,
    PROVINCE,
    SYSTEM,
    booking,
    config_text,
    confirm,
    demo,
)
from adapters.video_conference.simulator import VideoPlatform
from hub.envelope.agency_code import check_character

pytestmark = pytest.mark.integration

N = 500
BRANCH = "county-222403-oa"


#: A line of the adapter's JSON log above INFO.
_LOUD = re.compile(r'"level": "(?:warning|error|critical)"')


def _brief(line: str) -> str:
    """A JSON log line as its level, message, message id and exception."""
    try:
        rec = json.loads(line)
    except ValueError:
        return line[:300]
    return " ".join(str(rec[k]) for k in ("level", "msg", "message_id", "exc") if k in rec)[:300]


async def until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    proc: AdapterProcess | None = None,
    state: Callable[[], str] | None = None,
) -> Any:
    """Wait for ``predicate``; on a timeout the message says what was there (``state``) and what the adapter logged
    above INFO, so that a failure on a loaded CI machine tells a slow path from a lost message."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if proc is not None and not proc.alive:
            raise AssertionError(f"the adapter exited while waiting for {what}: {proc.log.read_text()[-2000:]}")
        if time.monotonic() >= deadline:
            told = [f"not within {timeout:g} s: {what}"]
            if state is not None:
                told.append(state())
            if proc is not None and proc.log.exists():
                lines = proc.log.read_text(encoding="utf-8", errors="replace").splitlines()
                loud = [line for line in lines if _LOUD.search(line)]
                told.append(f"adapter log: {len(lines)} lines, {len(loud)} above INFO; the last of those:")
                told += [_brief(line) for line in loud[-15:]]
            raise AssertionError("\n".join(told))
        await asyncio.sleep(0.02)


async def _setup(hub: TestHub, tmp_path: Path, platform: VideoPlatform, **extra: Any) -> AdapterProcess:
    home = await hub.enrol_home(SYSTEM)
    cfg = tmp_path / "settings.toml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg.write_text(config_text(home, platform, **extra), encoding="utf-8")
    return AdapterProcess("video_conference", cfg, env={}, log=tmp_path / "adapter.log")


def _tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA of the platform's own and its server certificate for 127.0.0.1: (server context, CA file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("视频会议平台测试 CA"))
        .issuer_name(name("视频会议平台测试 CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("vc.test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp_path / "vc-ca.pem", tmp_path / "vc.pem", tmp_path / "vc.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx, ca_file


def home_of(tmp_path: Path) -> Path:
    return Path(tomllib.loads((tmp_path / "settings.toml").read_text(encoding="utf-8"))["home"])


def _start(days: int = 3) -> datetime:
    return (datetime.now(CST) + timedelta(days=days)).replace(hour=9, minute=0, second=0, microsecond=0)


def _answers(hub: TestHub, system: str, service: str) -> list[Any]:
    return [d for d in hub.delivered(system) if d.context.service == service]


async def test_demo_part_has_no_problems(tmp_path: Path) -> None:
    async with TestHub(real=True) as hub:
        lines: list[str] = []
        assert await demo(hub, tmp_path, lines.append) == []
        assert len(lines) == 4


async def test_sigkill_mid_stream_every_booking_once(tmp_path: Path) -> None:
    platform = await VideoPlatform().start()
    try:
        async with TestHub(real=True) as hub:
            proc = await _setup(hub, tmp_path, platform)
            booker = await hub.client(BOOKER)
            branch = await hub.client(BRANCH)
            await proc.start()
            start = _start()
            one_branch = {BRANCH: BRANCHES[BRANCH]}
            sem = asyncio.Semaphore(64)

            async def book(i: int) -> str:
                msg = booking(
                    f"林区防火视频调度会 第{i}场",
                    start + timedelta(minutes=10 * i),  # every meeting its own slot: none conflicts
                    minutes=10,
                    terminal=None,
                    branches=one_branch,
                )
                async with sem:
                    r = await booker.send(msg, to=to(PROVINCE, SYSTEM))
                assert r.outcome == "accepted"
                return r.message_id

            sending = asyncio.ensure_future(asyncio.gather(*(book(i) for i in range(N))))
            await until(lambda: len(platform.meetings) >= N // 4, 60, "a quarter booked", proc)
            proc.kill()  # mid-stream: bookings, replies and notices in flight
            killed_at = len(platform.meetings)
            ids = await sending
            await proc.start()
            await until(lambda: len(platform.meetings) >= N, 60, "every booking on the platform", proc)

            def state() -> str:
                """What the booker and the branch hold, and which bookings have no reply (a few of them)."""
                replied = {d.context.ref_to for d in _answers(hub, BOOKER, "meeting.notice")}
                missing = [i for i in ids if i not in replied]
                kinds = Counter(d.context.service for d in hub.delivered(BOOKER))
                return (
                    f"booker holds {dict(kinds)}; {len(missing)} bookings without a reply, e.g. {missing[:3]}; "
                    f"branch holds {len(_answers(hub, BRANCH, 'meeting.notice'))} notices; platform: "
                    f"{len(platform.meetings)} meetings, {platform.replays} replays, calls {dict(platform.calls)}"
                )

            await until(lambda: len(_answers(hub, BOOKER, "meeting.notice")) >= N, 60, "every reply", proc, state)
            await until(
                lambda: len(_answers(hub, BRANCH, "meeting.notice")) >= N, 60, "every branch notice", proc, state
            )
            await asyncio.sleep(0.5)  # anything doubled would arrive now (the notices above were polled for)
            # the platform: every booking once (by its Idempotency-Key, the hub message id)
            keys = Counter(m.booking_key for m in platform.meetings.values())
            assert set(keys) == set(ids) and len(platform.meetings) == N and max(keys.values()) == 1
            # the booker: one meeting.notice per booking, bound to it
            replies = _answers(hub, BOOKER, "meeting.notice")
            assert len(replies) == N
            assert {d.context.ref_to for d in replies} == set(ids)
            assert {d.message.booking_message_id for d in replies} == set(ids)
            # the branch venue: one notice per booking
            notices = _answers(hub, BRANCH, "meeting.notice")
            assert len(notices) == N and {d.message.booking_message_id for d in notices} == set(ids)
            assert len({d.context.message_id for d in notices}) == N
            assert not [d for d in hub.delivered(BOOKER) if d.context.service == "delivery.refusal"]
            print(
                f"\nvideo_conference crash: {N} bookings, killed at {killed_at} booked, "
                f"platform replays={platform.replays} book calls={platform.calls.get('book')} "
                f"meetings={len(platform.meetings)} replies={len(replies)} notices={len(notices)}"
            )
            assert await proc.stop() == 0
            del branch
    finally:
        await platform.stop()


async def test_platform_down_then_back_nothing_lost(tmp_path: Path) -> None:
    platform = await VideoPlatform().start()
    try:
        async with TestHub(real=True) as hub:
            # a configuration the adapter cannot work with: it refuses to start, with its code and what is wrong
            bad = await _setup(hub, tmp_path / "bad", platform, platform_url="vc.lyj.jl.gov.cn")
            with pytest.raises(ConfigurationError) as refused:
                await bad.start()
            assert "VC_CONFIG" in str(refused.value) and "platform_url" in str(refused.value)
            proc = await _setup(hub, tmp_path, platform)
            booker = await hub.client(BOOKER)
            await proc.start()
            await platform.take_down()
            start = _start(5)
            ids = [
                (
                    await booker.send(
                        booking(f"停机期间预约的会议 {i}", start + timedelta(hours=i), terminal=None, branches={}),
                        to=to(PROVINCE, SYSTEM),
                    )
                ).message_id
                for i in range(20)
            ]
            await until(lambda: "platform unreachable" in proc.log.read_text(), 30, "retries while down", proc)
            await asyncio.sleep(1.0)  # down for a while
            assert not _answers(hub, BOOKER, "meeting.notice") and not platform.meetings
            await platform.bring_up()
            await until(lambda: len(_answers(hub, BOOKER, "meeting.notice")) >= 20, 60, "every reply", proc)
            assert sorted(m.booking_key for m in platform.meetings.values()) == sorted(ids)
            assert {d.context.ref_to for d in _answers(hub, BOOKER, "meeting.notice")} == set(ids)
            assert len(_answers(hub, BOOKER, "meeting.notice")) == 20
            assert await proc.stop() == 0
    finally:
        await platform.stop()


async def test_bad_answers_and_refusals(tmp_path: Path) -> None:
    """Over HTTPS: the platform's own CA (``ca_file``)."""
    server_ctx, ca_file = _tls(tmp_path)
    platform = await VideoPlatform(ssl_context=server_ctx).start()
    assert platform.url.startswith("https://")
    try:
        async with TestHub(real=True) as hub:
            proc = await _setup(hub, tmp_path, platform, ca_file=str(ca_file))
            booker = await hub.client(BOOKER)
            dunhua = await hub.client(BRANCH)
            await proc.start()
            start = _start(7)
            # 1. the platform answers with something that is not JSON: nothing is sent on it, the delivery waits
            platform.mode = "garbage"
            r1 = await booker.send(booking("答复异常时预约的会议", start), to=to(PROVINCE, SYSTEM))
            await until(lambda: platform.calls.get("book", 0) >= 2, 30, "a retry on a broken answer", proc)
            assert not [d for d in hub.delivered(BOOKER) if d.context.ref_to == r1.message_id]
            platform.mode = "ok"
            [reply] = await until(
                lambda: [d for d in hub.delivered(BOOKER) if d.context.ref_to == r1.message_id], 30, "the reply", proc
            )
            assert reply.context.service == "meeting.notice"
            assert [m.booking_key for m in platform.meetings.values()] == [r1.message_id]  # booked once
            assert platform.replays >= 1  # the retries came with the same key

            # 2. a title the platform finds too long (the hub's schema allows 500, the platform 100)
            r2 = await booker.send(booking("长" * 150, start + timedelta(days=1)), to=to(PROVINCE, SYSTEM))
            # 3. the same room and terminal in an overlapping slot
            r3 = await booker.send(booking("冲突的会议", start + timedelta(minutes=15)), to=to(PROVINCE, SYSTEM))
            # 4. an attendance for a meeting the platform does not know
            r4 = await dunhua.send(
                confirm("999999", reply.context.message_id, BRANCHES[BRANCH]), to=to(PROVINCE, SYSTEM)
            )

            def refusal(system: str, mid: str) -> Any:
                got = [d for d in hub.delivered(system) if d.context.ref_to == mid]
                return got[0] if got else None

            a2 = await until(lambda: refusal(BOOKER, r2.message_id), 30, "refusal of the long title", proc)
            a3 = await until(lambda: refusal(BOOKER, r3.message_id), 30, "refusal of the conflict", proc)
            a4 = await until(lambda: refusal(BRANCH, r4.message_id), 30, "refusal of the attendance", proc)
            assert (a2.context.service, a2.message.code) == ("delivery.refusal", "VC_FIELD_TOO_LONG")
            assert "会议名称超过平台上限" in a2.message.reason
            assert (a3.context.service, a3.message.code) == ("delivery.refusal", "VC_SLOT_TAKEN")
            assert "已被会议" in a3.message.reason and platform.by_key(r1.message_id).number in a3.message.reason  # type: ignore[union-attr]
            assert (a4.context.service, a4.message.code) == ("delivery.refusal", "VC_UNKNOWN_MEETING")
            assert len(platform.meetings) == 1  # nothing half-booked

            # 5. a venue of an agency the hub does not know: booked, the booker answered; that notice is refused by
            # the hub and marked failed in the outbox (the other venues' notices go out)
            stranger = "11229999013500000" + check_character("11229999013500000")
            r5 = await booker.send(
                booking("有未知会场的会议", start + timedelta(days=2), branches={"x": ("某未知单位", stranger)}),
                to=to(PROVINCE, SYSTEM),
            )
            [a5] = await until(
                lambda: [d for d in hub.delivered(BOOKER) if d.context.ref_to == r5.message_id], 30, "the reply", proc
            )
            assert a5.context.service == "meeting.notice"

            def outbox_rows() -> list[tuple[str, str, str]]:
                with sqlite3.connect(home_of(tmp_path) / "handled.sqlite3") as db:
                    rows = db.execute(
                        "SELECT agency, state, detail FROM vc_notice_outbox WHERE booking_id = ?", (r5.message_id,)
                    )
                    return rows.fetchall()

            # The log line comes before the outbox row's commit: wait for the row itself.
            await until(lambda: [r for r in outbox_rows() if r[1] != "pending"], 30, "the notice refused", proc)
            [(agency, state, detail)] = outbox_rows()
            assert (agency, state) == (stranger, "failed") and detail
            assert "notice refused by the hub" in proc.log.read_text()
            # no notice went anywhere for a refused booking
            await asyncio.sleep(0.3)
            refused = {r2.message_id, r3.message_id}
            for system in BRANCHES:
                assert not [
                    d
                    for d in hub.delivered(system)
                    if d.context.service == "meeting.notice" and d.message.booking_message_id in refused
                ]
            assert await proc.stop() == 0
    finally:
        await platform.stop()


async def test_a_booking_the_hub_refused_is_never_kept_on_the_platform(tmp_path: Path) -> None:
    """The hub's register of rooms and terminals (hub/processes/meetings.py, an exclusion constraint) is stricter
    than the platform's (it compares room names after NFKC and space folding): a booking the platform would take
    but the hub refuses is cancelled on the platform once the hub's meeting-refused notice arrives; a refused
    booking still waiting behind the notice (the notice is 加急, the booking 平件: the priority queue hands the notice
    over first) is refused with the hub's code without a call to the platform."""
    from hub.pipeline.context import load_context
    from hub.processes.engine import ProcessEngine
    from hub.processes.meetings import MeetingsProcess
    from hub.store.db import create_pool

    platform = await VideoPlatform().start()
    try:
        async with TestHub(real=True) as hub:
            proc = await _setup(hub, tmp_path, platform)
            booker = await hub.client(BOOKER)
            await proc.start()
            pool = await create_pool(hub.settings.pg_dsn, min_size=1, max_size=2)
            try:
                context = await load_context(hub.settings, pool)
                engine = ProcessEngine(pool, context, [MeetingsProcess()], transport=hub._admin_transport)

                async def decided(mid: str) -> str | None:
                    await engine.run_once()
                    async with pool.acquire() as conn:
                        return await conn.fetchval(  # type: ignore[no-any-return]
                            "SELECT state FROM meetings WHERE booking_id = $1::uuid", mid
                        )

                async def settle(mid: str) -> str:
                    for _ in range(300):
                        if (state := await decided(mid)) is not None:
                            await engine.run_once()  # and publish what it decided
                            return state
                        await asyncio.sleep(0.05)
                    raise AssertionError(f"booking {mid} never followed by the hub")

                start = _start(9)
                r1 = await booker.send(booking("全州防火视频会", start), to=to(PROVINCE, SYSTEM))
                await until(lambda: platform.by_key(r1.message_id), 30, "the first booking on the platform", proc)
                assert await settle(r1.message_id) == "booked"

                # The same room to the hub ("二楼 视频会议室" is "二楼视频会议室"), another to the platform; no terminal.
                same = "珲春市林业局二楼 视频会议室"
                r2 = await booker.send(
                    booking(
                        "同一会议室的另一会议", start + timedelta(minutes=20), room=same, terminal=None, branches={}
                    ),
                    to=to(PROVINCE, SYSTEM),
                )
                await until(lambda: platform.by_key(r2.message_id), 30, "the platform booked the second", proc)
                assert await settle(r2.message_id) == "refused"
                m2 = platform.by_key(r2.message_id)
                assert m2 is not None
                await until(lambda: m2.status == "cancelled", 30, "the second cancelled on the platform", proc)
                assert platform.by_key(r1.message_id).status == "booked"  # type: ignore[union-attr]

                # The adapter down; a third booking of that room, refused by the hub while it waits in the queue.
                assert await proc.stop() == 0
                calls = platform.calls.get("book", 0)
                r3 = await booker.send(
                    booking("又一个冲突的会议", start + timedelta(minutes=40), room=same, terminal=None, branches={}),
                    to=to(PROVINCE, SYSTEM),
                )
                assert await settle(r3.message_id) == "refused"
                await proc.start()
                [a3] = await until(
                    lambda: [
                        d
                        for d in hub.delivered(BOOKER)
                        if d.context.ref_to == r3.message_id and d.context.service == "delivery.refusal"
                    ],
                    30,
                    "the third refused",
                    proc,
                )
                assert a3.message.code == "MEETING_SLOT_TAKEN"
                # ... beside the hub's own notice of it to the booker
                assert [d.message.kind for d in hub.delivered(BOOKER) if d.context.service == "hub.notice"] == [
                    "meeting-refused",
                    "meeting-refused",
                ]
                assert "枢纽拒绝了该会议预约" in a3.message.reason
                assert platform.by_key(r3.message_id) is None and platform.calls.get("book", 0) == calls
                async with pool.acquire() as conn:  # the adapter's refusal changes nothing the hub decided
                    await engine.run_once()
                    assert (
                        await conn.fetchval("SELECT state FROM meetings WHERE booking_id = $1::uuid", r3.message_id)
                        == "refused"
                    )
                assert await proc.stop() == 0
            finally:
                await pool.close()
    finally:
        await platform.stop()


@pytest.mark.parametrize("route", ["timeout", "crash"])
async def test_a_booking_the_hub_refused_after_its_post_is_withdrawn_from_the_platform(
    tmp_path: Path, route: str
) -> None:
    """The platform booked a meeting but the adapter never had its answer: the answer came after request_timeout
    (``timeout``), or the adapter was killed between the platform's 201 and the commit (``crash``). ``vc_bookings``
    has no number, so the hub's meeting-refused notice (加急, handed over first) cancels nothing; the booking, when it
    comes again, asks the platform with the same Idempotency-Key and cancels the meeting it made before it is
    refused with the hub's code. It was left booked on the platform, holding the room."""
    from hub.pipeline.context import load_context
    from hub.processes.engine import ProcessEngine
    from hub.processes.meetings import MeetingsProcess
    from hub.store.db import create_pool

    platform = VideoPlatform()
    late = {"on": False}
    book = platform._book
    proc: AdapterProcess | None = None

    async def late_book(request: Any) -> Any:
        resp = await book(request)
        if late["on"]:
            if route == "crash":
                assert proc is not None
                proc.kill()  # booked on the platform, the adapter dead before it reads the 201
            else:
                await asyncio.sleep(3.0)  # booked, answered after the adapter's request_timeout
        return resp

    platform._book = late_book  # type: ignore[method-assign]
    await platform.start()
    try:
        async with TestHub(real=True) as hub:
            proc = await _setup(hub, tmp_path, platform, request_timeout=1.0)
            booker = await hub.client(BOOKER)
            await proc.start()
            pool = await create_pool(hub.settings.pg_dsn, min_size=1, max_size=2)
            try:
                context = await load_context(hub.settings, pool)
                engine = ProcessEngine(pool, context, [MeetingsProcess()], transport=hub._admin_transport)

                async def settle(mid: str) -> str:
                    for _ in range(300):
                        await engine.run_once()
                        async with pool.acquire() as conn:
                            state = await conn.fetchval("SELECT state FROM meetings WHERE booking_id = $1::uuid", mid)
                        if state is not None:
                            await engine.run_once()  # and publish what it decided
                            return str(state)
                        await asyncio.sleep(0.05)
                    raise AssertionError(f"booking {mid} never followed by the hub")

                def hub_refused(mid: str) -> bool:
                    with sqlite3.connect(home_of(tmp_path) / "handled.sqlite3") as db:
                        try:
                            row = db.execute("SELECT 1 FROM vc_hub_refused WHERE booking_id = ?", (mid,)).fetchone()
                        except sqlite3.OperationalError:  # no such table yet
                            return False
                        return row is not None

                start = _start(9)
                r1 = await booker.send(booking("全州防火视频会", start), to=to(PROVINCE, SYSTEM))
                await until(lambda: platform.by_key(r1.message_id), 30, "the first booking on the platform", proc)
                assert await settle(r1.message_id) == "booked"

                late["on"] = True
                same = "珲春市林业局二楼 视频会议室"  # the first one's room to the hub, another to the platform
                r2 = await booker.send(
                    booking(
                        "同一会议室的另一会议", start + timedelta(minutes=20), room=same, terminal=None, branches={}
                    ),
                    to=to(PROVINCE, SYSTEM),
                )
                await until(lambda: platform.by_key(r2.message_id), 30, "the platform booked the second", proc)
                m2 = platform.by_key(r2.message_id)
                assert m2 is not None and m2.status == "booked"
                assert await settle(r2.message_id) == "refused"  # the hub's notice goes to the video system
                if route == "crash":
                    await until(lambda: not proc.alive, 30, "the adapter killed")
                    late["on"] = False
                    await proc.start()  # the notice first (加急), then the booking again
                await until(lambda: hub_refused(r2.message_id), 30, "the adapter handled the hub's notice", proc)
                late["on"] = False  # the booking's next attempt gets the platform's answer in time
                [a2] = await until(
                    lambda: [
                        d
                        for d in hub.delivered(BOOKER)
                        if d.context.ref_to == r2.message_id and d.context.service == "delivery.refusal"
                    ],
                    60,
                    "the booker told the second is refused",
                    proc,
                )
                assert a2.message.code == "MEETING_SLOT_TAKEN"
                assert m2.status == "cancelled", f"meeting {m2.number} the hub refused is still {m2.status}"
                assert platform.replays >= 1  # asked with the same key: the platform's stored answer, no new meeting
                assert [m.booking_key for m in platform.meetings.values()].count(r2.message_id) == 1
                assert platform.by_key(r1.message_id).status == "booked"  # type: ignore[union-attr]
                assert not [d for d in _answers(hub, BOOKER, "meeting.notice") if d.context.ref_to == r2.message_id]
                assert await proc.stop() == 0
            finally:
                await pool.close()
    finally:
        if proc is not None:
            proc.kill()
        await platform.stop()
