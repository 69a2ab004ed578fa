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
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.sdk import to
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

pytestmark = pytest.mark.integration

N = 500
BRANCH = "county-222403-oa"


async def until(predicate: Callable[[], Any], timeout: float, what: str, proc: AdapterProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if proc is not None and not proc.alive:
            raise AssertionError(f"the adapter exited while waiting for {what}: {proc.log.read_text()[-2000:]}")
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.02)


async def _setup(hub: TestHub, tmp_path: Path, platform: VideoPlatform) -> AdapterProcess:
    home = await hub.enrol_home(SYSTEM)
    cfg = tmp_path / "settings.toml"
    cfg.write_text(config_text(home, platform), encoding="utf-8")
    return AdapterProcess("video_conference", cfg, env={}, log=tmp_path / "adapter.log")


def _start(days: int = 3) -> datetime:
    return (datetime.now(CST) + timedelta(days=days)).replace(hour=9, minute=0, second=0, microsecond=0)


def _answers(hub: TestHub, system: str, service: str) -> list[Any]:
    return [d for d in hub.delivered(system) if d.context.service == service]


async def test_demo_part_has_no_problems(tmp_path: Path) -> None:
    async with TestHub(real=True) as hub:
        lines: list[str] = []
        assert await demo(hub, tmp_path, lines.append) == []
        assert len(lines) == 3


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
            await until(lambda: len(_answers(hub, BOOKER, "meeting.notice")) >= N, 60, "every reply", proc)
            await until(lambda: len(_answers(hub, BRANCH, "meeting.notice")) >= N, 60, "every branch notice", proc)
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
    platform = await VideoPlatform().start()
    try:
        async with TestHub(real=True) as hub:
            proc = await _setup(hub, tmp_path, platform)
            booker = await hub.client(BOOKER)
            dunhua = await hub.client(BRANCH)
            await proc.start()
            start = _start(7)
            # 1. the platform answers with something that is not JSON: nothing is sent on it, the delivery waits
            platform.mode = "garbage"
            r1 = await booker.send(booking("答复异常时预约的会议", start), to=to(PROVINCE, SYSTEM))
            await until(lambda: platform.calls.get("book", 0) >= 3, 30, "retries on a broken answer", proc)
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
