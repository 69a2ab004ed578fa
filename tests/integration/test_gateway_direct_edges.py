"""The gateway's examination (``hub.gateway.direct``, ``hub.gateway.examiners``) at its edges — a review of
2026-12-07, each case reproduced against the real RabbitMQ and PostgreSQL before it was fixed: an examiner that
hangs does not hold its clients for ever and is replaced; a client that went away gets its answer in its inbox even
when its message went to the retry queue, or when its answer was made in the very pass it left; an emergency
message over its publisher's lane quota is examined in the normal lane and answered, not told it is a duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gateway_client import post, running_gateway
from harness import SYSTEMS, Hub, document
from harness import until as until_async
from store_faults import StoreGateThenDown

from hub.envelope import Envelope, Recipient, parse
from hub.settings import Settings

pytestmark = pytest.mark.integration

SENDER = "county-220122-oa"  # 农安
RECIPIENT = "county-220183-oa"  # 德惠
DEHUI = SYSTEMS[RECIPIENT]
CLIENTS = {s: SYSTEMS[s] for s in (SENDER, RECIPIENT)}


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "gwdirect") as settings:
        yield settings


@pytest.fixture(scope="module")
async def hub(settings: Settings) -> AsyncIterator[Hub]:
    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()
    try:
        yield hub
    finally:
        await hub.close()


def _signed(hub: Hub, **kw: Any) -> tuple[bytes, str]:
    data = hub.sign(SENDER, document(SENDER, [Recipient.to(DEHUI)], **kw))
    return data, Envelope.from_tree(parse(data)).message_id


async def _answer_in_inbox(gw: Any, hub: Hub, mid: str) -> None:
    """The hub's receipt about ``mid`` reaches the sender's inbox (and is acknowledged there)."""
    sender = gw.session(SENDER)
    async with sender.get("/v1/inbox", params={"wait": "30"}) as r:
        assert r.status == 200, "the answer did not reach the sender's inbox"
        assert r.headers["X-Hub-Kind"] == "receipt"
        assert hub.inbox(SENDER).open(await r.read()).ref_to == mid
        tag = r.headers["X-Hub-Delivery-Tag"]
    async with sender.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 204


async def _take_delivery(gw: Any, mid: str) -> None:
    recipient = gw.session(RECIPIENT)
    async with recipient.get("/v1/inbox", params={"wait": "30"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == mid
        tag = r.headers["X-Hub-Delivery-Tag"]
    async with recipient.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 204


async def test_a_hung_examiner_answers_its_clients_503_and_is_replaced(hub: Hub) -> None:
    """An examiner stopped (SIGSTOP: as one deadlocked, or waiting on a database that hangs rather than fails):
    before, its client waited until it moved again and /ready said ready. Now the client has 503 GATEWAY_TIMEOUT
    after ``answer_timeout_s``; after twice that without a word the examiner is killed and started again, and the
    resent message is accepted."""
    async with running_gateway(hub, CLIENTS, answer_timeout_s=2, examiners=1, link_check_s=0) as gw:
        pool = gw.state.direct
        [pid] = pool.pids()
        data, mid = _signed(hub)
        os.kill(pid, signal.SIGSTOP)
        try:
            asked = time.monotonic()
            status, headers, _ = await asyncio.wait_for(post(gw.session(SENDER), data), 20)
            assert status == 503 and headers["X-Hub-Code"] == "GATEWAY_TIMEOUT", (status, headers)
            assert time.monotonic() - asked < 15  # not until the examiner moved again (it never does)
            await until_async(lambda: _pid_gone(pid), "the hung examiner killed", timeout=20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

        async def replaced() -> bool:
            return pool.running == 1 and pool.pids() != [pid]

        await until_async(replaced, "the examiner started again", timeout=60)
        status, headers, _ = await post(gw.session(SENDER), data)  # the resend finishes what was begun
        assert status == 202 and headers["X-Hub-Message-Id"] == mid, (status, headers)
        await _take_delivery(gw, mid)


async def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reaped by the pool; a zombie until then
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().split(")")[-1].split()[0] == "Z"


async def test_a_client_gone_before_its_message_went_to_the_retry_queue_gets_the_answer_in_its_inbox(
    hub: Hub,
) -> None:
    """The client leaves while its batch is held; the store then fails and the message goes to the retry queue,
    where a ``hub run`` worker finishes it. Before, a wait registered for the gone client took the worker's receipt
    (and acknowledged it): the sender's inbox stayed empty, and the wait was never removed."""
    async with running_gateway(hub, CLIENTS, answer_timeout_s=20, link_check_s=0) as gw:
        worker = gw.state.direct.worker
        real = worker.store
        worker.store = held = StoreGateThenDown(real)
        data, mid = _signed(hub)
        try:
            request = asyncio.create_task(post(gw.session(SENDER), data))
            await asyncio.wait_for(held.entered.wait(), 10)
            request.cancel()  # the client goes away
            with contextlib.suppress(asyncio.CancelledError):
                await request
            await asyncio.sleep(0.3)
            held.release.set()
            await asyncio.sleep(0.3)
        finally:
            worker.store = real
        await _answer_in_inbox(gw, hub, mid)
        await _take_delivery(gw, mid)
        box = gw.state.mailbox._boxes[SENDER]
        assert not any(box.waiters.values()), box.waiters  # no wait left for a client nobody is


async def test_an_answer_made_in_the_pass_the_client_left_in_goes_to_its_inbox(hub: Hub) -> None:
    """The batch settles the submission, and the client's cancellation lands before the request's task resumes:
    the task sees CancelledError although its outcome holds the answer. Before, that answer was dropped."""
    async with running_gateway(hub, CLIENTS, answer_timeout_s=20, link_check_s=0) as gw:
        direct = gw.state.direct
        await gw.state.mailbox.open(SENDER)
        data, mid = _signed(hub)
        task: asyncio.Task[Any] | None = None
        real_settle = direct.settle

        def settle(sub: Any) -> None:
            real_settle(sub)
            if task is not None:
                task.cancel()  # in the same pass as the batch's acknowledgement

        direct.settle = settle  # type: ignore[method-assign]
        try:
            task = asyncio.create_task(direct.submit(SENDER, data, mid, "normal", 0))
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            direct.settle = real_settle  # type: ignore[method-assign]
        await _answer_in_inbox(gw, hub, mid)
        await _take_delivery(gw, mid)


async def test_an_emergency_message_over_the_lane_quota_is_answered_not_called_a_duplicate(hub: Hub) -> None:
    """A publisher that used up its emergency-lane quota (hub.pipeline.lanes): its next 特急 message is moved to
    the normal lane. Through the broker a ``hub run`` worker examined it and its client was answered 409
    MSG_DUPLICATE, the receipt going to the inbox; now the gateway examines it in its own normal lane and the
    client has the hub's receipt."""
    async with running_gateway(hub, CLIENTS, answer_timeout_s=20, link_check_s=0) as gw:
        direct = gw.state.direct
        user = direct.names.user(SENDER)
        quota = direct.worker.lane_quota
        for _ in range(300):  # as 300 refusals of the lane would: its tokens spent, in debt
            quota.charge(user)
        before = quota.moved.get(user, 0)
        data, mid = _signed(hub, urgency="特急")
        status, headers, _ = await post(gw.session(SENDER), data)
        assert (status, headers["X-Hub-Message-Id"], headers.get("X-Hub-Outcome")) == (202, mid, "accepted"), (
            status,
            headers,
        )
        assert quota.moved.get(user, 0) == before + 1  # it was moved, and counted as moved
        await _take_delivery(gw, mid)


async def test_with_examiners_an_answer_made_in_the_pass_the_client_left_in_goes_to_its_inbox(hub: Hub) -> None:
    """As above, through an examiner process (``hub gateway``'s default): its outcome frame sets the request's
    future, and the client's cancellation lands in the same pass. Before, the answer was dropped."""
    async with running_gateway(hub, CLIENTS, answer_timeout_s=20, examiners=1, link_check_s=0) as gw:
        pool = gw.state.direct
        await gw.state.mailbox.open(SENDER)
        data, mid = _signed(hub)
        task: asyncio.Task[Any] | None = None
        real = pool._outcome

        def outcome(e: Any, frame: Any) -> None:
            real(e, frame)
            if task is not None and frame[2] == "answer":
                task.cancel()

        pool._outcome = outcome  # type: ignore[method-assign]
        try:
            task = asyncio.create_task(pool.submit(SENDER, data, mid, "normal", 0))
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            pool._outcome = real  # type: ignore[method-assign]
        await _answer_in_inbox(gw, hub, mid)
        await _take_delivery(gw, mid)


async def test_an_examiner_whose_batch_is_stuck_on_the_database_is_replaced(hub: Hub) -> None:
    """PostgreSQL hangs rather than fails (a lock held on the messages table): the client has its 503 at
    ``answer_timeout_s`` and its submission is cancelled, but the examiner's batch goes on waiting. The examiner says
    every second how old its oldest batch is; past twice ``answer_timeout_s`` it is killed and started again (before,
    it stayed, counted ready, and every submission it was given waited out the timeout)."""
    import asyncpg

    async with running_gateway(hub, CLIENTS, answer_timeout_s=2, examiners=1, link_check_s=0) as gw:
        pool = gw.state.direct
        [pid] = pool.pids()
        data, mid = _signed(hub)
        conn = await asyncpg.connect(hub.settings.pg_dsn)
        locked = conn.transaction()
        await locked.start()
        await conn.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        try:
            status, headers, _ = await asyncio.wait_for(post(gw.session(SENDER), data), 20)
            assert status == 503 and headers["X-Hub-Code"] == "GATEWAY_TIMEOUT", (status, headers)
            await until_async(lambda: _pid_gone(pid), "the examiner with the stuck batch killed", timeout=30)
        finally:
            await locked.rollback()
            await conn.close()

        async def replaced() -> bool:
            return pool.running == 1 and pool.pids() != [pid]

        await until_async(replaced, "the examiner started again", timeout=60)
        status, headers, _ = await post(gw.session(SENDER), data)  # the killed batch recorded nothing
        assert status == 202 and headers["X-Hub-Message-Id"] == mid, (status, headers)
        await _take_delivery(gw, mid)
