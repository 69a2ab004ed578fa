"""The gateway with examiner processes (hub.gateway.examiners, issue 11): the examination of submissions runs in
processes of their own beside the gateway, which keeps TLS, HTTP, the limits and the inbox. Against the real hub
(RabbitMQ, PostgreSQL) and a real HTTPS client with client certificates:

- submit → the recipient's inbox → ack, a refusal, a duplicate, all examined in an examiner *subprocess*;
- an examiner killed with SIGKILL: 503 ``GATEWAY_UNAVAILABLE`` while none runs, started again, the resend accepted;
- over the real socket pair with the examiner in this process (so a test can reach its store): a store outage's
  retry copy answered by a pipeline worker through the gateway's mailbox (the ``expect`` round trip), a client that
  went away (its answer goes to its inbox), an examiner that stops with a submission in hand (503, nothing lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gateway_client import Gateway, post, running_gateway
from harness import SYSTEMS, Hub, document
from store_faults import StoreDownOnce, StoreGate

from hub.envelope import Recipient
from hub.gateway import GatewaySettings
from hub.settings import Settings

pytestmark = pytest.mark.integration

SENDER = "county-220122-oa"  # 农安
RECIPIENT = "county-220183-oa"  # 德惠
OTHER = "county-220182-oa"  # 榆树
DEHUI = SYSTEMS[RECIPIENT]


@pytest.fixture(scope="module")
def settings(integration_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import own_installation

    with own_installation(integration_settings, tmp_path_factory, "gx") as settings:
        yield settings


@pytest.fixture(scope="module")
async def hub(settings: Settings) -> AsyncIterator[Hub]:
    hub = Hub(settings)
    await hub.setup()
    await hub.start_worker()  # a pipeline worker for the retry queue
    try:
        yield hub
    finally:
        await hub.close()


@pytest.fixture(scope="module")
async def gw(hub: Hub, settings: Settings) -> AsyncIterator[Gateway]:
    clients = {s: SYSTEMS[s] for s in (SENDER, RECIPIENT, OTHER)}
    async with running_gateway(hub, clients, answer_timeout_s=20, examiners=1) as g:
        yield g


def signed(hub: Hub, sender: str, recipients: list[Recipient], **kw: Any) -> bytes:
    return hub.sign(sender, document(sender, recipients, **kw))


async def test_submit_poll_ack_examined_in_an_examiner_process(gw: Gateway) -> None:
    pool = gw.state.direct
    [pid] = pool.pids()
    assert pid != os.getpid() and Path(f"/proc/{pid}").exists()  # a process of its own
    sender, recipient = gw.session(SENDER), gw.session(RECIPIENT)
    data = signed(gw.hub, SENDER, [Recipient.to(DEHUI)])
    status, headers, body = await post(sender, data)
    assert status == 202 and headers["X-Hub-Outcome"] == "accepted", body
    mid = headers["X-Hub-Message-Id"]
    assert gw.hub.inbox(SENDER).open(body).ref_to == mid  # the hub's signed receipt

    async with recipient.get("/v1/inbox", params={"wait": "10"}) as r:
        assert r.status == 200 and r.headers["X-Hub-Message-Id"] == mid
        tag, delivered = r.headers["X-Hub-Delivery-Tag"], await r.read()
    assert gw.hub.inbox(RECIPIENT).open_delivery(delivered).originator.system == SENDER
    async with recipient.post(f"/v1/inbox/{tag}/ack") as r:
        assert r.status == 204

    # the same message again: a duplicate, answered by the examiner with the hub's signed receipt
    status, headers, body = await post(sender, data)
    assert (status, headers["X-Hub-Outcome"]) == (409, "duplicate")
    # signed by 农安, presented with 榆树's certificate: the processor's CERT_SIGNER_MISMATCH, signed
    status, headers, body = await post(gw.session(OTHER), signed(gw.hub, SENDER, [Recipient.to(DEHUI)]))
    assert (status, headers["X-Hub-Code"]) == (403, "CERT_SIGNER_MISMATCH"), body
    assert gw.hub.inbox(OTHER).open(body).service == "hub.error"
    # three copies at once meet in one examiner: one accepted, two duplicates, one delivery
    again = signed(gw.hub, SENDER, [Recipient.to(DEHUI)])
    answers = await asyncio.gather(*(post(sender, again) for _ in range(3)))
    assert sorted(a[0] for a in answers) == [202, 409, 409]


async def test_the_examiner_is_on_record_with_its_directory_version(gw: Gateway) -> None:
    """Each examiner keeps its row in the store (hub.store.process_instances) with the directory version it examines
    with, so the ops page's directory row sees a gateway's examination on any machine."""
    from harness import until

    from hub.store.directory import DirectoryRepository

    [pid] = gw.state.direct.pids()
    stored = (await DirectoryRepository(gw.hub.pool).current()).version

    async def row() -> Any:
        return await gw.hub.pool.fetchrow(
            "SELECT role, idx, host, directory_version FROM process_instances WHERE pid = $1", pid
        )

    found = await until(row, "the examiner's row in process_instances", timeout=15)
    assert (found["role"], found["idx"], found["host"], found["directory_version"]) == (
        "gateway",
        "0",
        socket.gethostname(),
        stored,
    )


async def test_a_killed_examiner_is_started_again(gw: Gateway) -> None:
    pool = gw.state.direct
    [pid] = pool.pids()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pool.running and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert pool.running == 0
    sender = gw.session(SENDER)
    data = signed(gw.hub, SENDER, [Recipient.to(DEHUI)])
    status, headers, body = await post(sender, data)
    assert (status, headers["X-Hub-Code"], headers["Retry-After"]) == (503, "GATEWAY_UNAVAILABLE", "5"), body
    assert json.loads(body)["title"] == "网关的审验进程暂不可用，请稍后重发"

    deadline = time.monotonic() + 60
    while not pool.running and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert pool.running == 1 and pool.pids() != [pid]
    status, headers, body = await post(sender, data)  # the resend
    assert status == 202 and headers["X-Hub-Outcome"] == "accepted", body


# ------------------------------------------------------------------------------------------------ in this process


#: The sender of the tests below: a system whose queue only their mailbox reads (the gateway above reads the others').
CITY = "city-220100-oa"  # 长春市


class _InTask:
    """An examiner run as a task of this process over the real socket pair (``hub.gateway.examiner.serve``)."""

    def __init__(self, task: asyncio.Task[None], sock: socket.socket) -> None:
        self.task = task
        self.sock = sock
        self.pid = None

    async def wait(self) -> int | None:
        with contextlib.suppress(BaseException):
            await self.task
        return 0

    def kill(self) -> None:
        """As a crash: its socket ends at once, whatever it was doing."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.task.cancel()


@dataclass
class Local:
    pool: Any
    mailbox: Any
    transport: Any
    opened: list[Any]
    handles: list[_InTask]

    @property
    def direct(self) -> Any:
        return self.opened[-1]


@pytest.fixture
async def local(hub: Hub, settings: Settings) -> AsyncIterator[Local]:
    from hub.gateway.examiner import serve
    from hub.gateway.examiners import ExaminerPool
    from hub.gateway.mailbox import Mailbox
    from hub.transport import Transport

    config = GatewaySettings.for_state(settings.state_dir, port=0)
    transport = await Transport.connect(settings, client_name="test-gateway-front")
    mailbox = Mailbox(transport, visibility_timeout=30)
    opened: list[Any] = []
    handles: list[_InTask] = []

    async def spawn(index: int, child: socket.socket) -> _InTask:
        sock = child.dup()  # the pool closes its copy of the examiner's end
        task = asyncio.get_running_loop().create_task(serve(sock, settings, config, opened=opened.append))
        handle = _InTask(task, sock)
        handles.append(handle)
        return handle

    pool = ExaminerPool(settings, config, mailbox, transport, count=1, spawn=spawn)
    await pool.start()
    await mailbox.open(CITY)
    try:
        yield Local(pool, mailbox, transport, opened, handles)
    finally:
        await pool.close()
        await mailbox.close()
        await transport.close()


async def _delivered(hub: Hub, mid: str) -> list[tuple[str, str]]:
    from hub.store.messages import sent_message_status

    deadline = time.monotonic() + 10  # the answer can arrive before the delivery's confirm is recorded
    while True:
        found = await sent_message_status(hub.pool, mid, CITY)
        assert found is not None, f"{mid} is not recorded"
        states = [(d["recipient_system"], d["state"]) for d in found["deliveries"]]
        if all(state != "pending" for _, state in states) or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.05)


def _mid(data: bytes) -> str:
    from hub.envelope import Envelope, parse

    return Envelope.from_tree(parse(data)).message_id


async def test_a_retried_copy_is_answered_through_the_gateways_mailbox(local: Local, hub: Hub) -> None:
    """The examiner's store fails: before the retry copy is published the examiner has the gateway expect its
    answer; a pipeline worker answers on the system's queue, the gateway's mailbox resolves the wait."""
    worker = local.direct.worker
    real = worker.store
    worker.store = down = StoreDownOnce(real)
    data = signed(hub, CITY, [Recipient.to(DEHUI)])
    mid = _mid(data)
    try:
        outcome = await local.pool.submit(CITY, data, mid, "normal", 0)
    finally:
        worker.store = real
    assert down.failures == 0 and outcome.kind == "deferred" and outcome.error.code == "DELIVERY_STORE"
    async with asyncio.timeout(30):
        answer = await outcome.pending  # the gateway's own mailbox future
    local.mailbox.forget(CITY, mid, outcome.pending)
    assert answer.kind == "receipt" and hub.inbox(CITY).open(answer.body).ref_to == mid
    assert await _delivered(hub, mid) == [(RECIPIENT, "delivered")]


async def test_a_client_gone_and_an_examiner_stopped_lose_nothing(local: Local, hub: Hub) -> None:
    # the client goes away while its submission is examined: the answer goes to its inbox
    worker = local.direct.worker
    real = worker.store
    worker.store = gate = StoreGate(real)
    data = signed(hub, CITY, [Recipient.to(DEHUI)])
    mid = _mid(data)
    waiting = asyncio.get_running_loop().create_task(local.pool.submit(CITY, data, mid, "normal", 0))
    async with asyncio.timeout(10):
        await gate.entered.wait()
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.2)  # the cancel reaches the examiner while its batch waits
    gate.release.set()
    worker.store = real
    item = await local.mailbox.next_item(CITY, 20)
    assert item is not None and item.message_id != mid
    assert hub.inbox(CITY).open(item.body).ref_to == mid  # the hub's receipt, in the inbox
    assert await local.mailbox.ack(CITY, item.token)

    # the examiner stops with a submission in hand: 503 GATEWAY_UNAVAILABLE (resend), and it is started again
    worker.store = stuck = StoreGate(real)
    data = signed(hub, CITY, [Recipient.to(DEHUI)])
    held = asyncio.get_running_loop().create_task(local.pool.submit(CITY, data, _mid(data), "normal", 0))
    async with asyncio.timeout(10):
        await stuck.entered.wait()
    local.handles[-1].kill()
    async with asyncio.timeout(10):
        outcome = await held
    assert outcome.kind == "failed" and outcome.error.code == "GATEWAY_UNAVAILABLE"
    stuck.release.set()  # what the stopped examiner held may finish now: the resend then finds it recorded
    async with asyncio.timeout(20):
        await local.handles[0].wait()
    worker.store = real
    deadline = time.monotonic() + 30
    while not local.pool.running and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert local.pool.running == 1 and len(local.handles) == 2
    outcome = await local.pool.submit(CITY, data, _mid(data), "normal", 0)  # the resend
    assert outcome.kind == "answer" and outcome.answer.kind == "receipt"
    assert hub.inbox(CITY).open(outcome.answer.body).ref_to == _mid(data)
    assert await _delivered(hub, mid) == await _delivered(hub, _mid(data)) == [(RECIPIENT, "delivered")]


async def test_an_examiner_that_dies_while_starting_again_is_restarted_once(hub: Hub, settings: Settings) -> None:
    """Killed; its first restart dies before it is ready; the second comes up. One restart loop does this: the
    restart that died does not start a loop of its own (which would run two examiners in one slot)."""
    from hub.gateway.examiner import serve
    from hub.gateway.examiners import ExaminerPool
    from hub.gateway.mailbox import Mailbox
    from hub.transport import Transport

    config = GatewaySettings.for_state(settings.state_dir, port=0)
    transport = await Transport.connect(settings, client_name="test-gateway-front")
    mailbox = Mailbox(transport)
    handles: list[_InTask] = []

    async def spawn(index: int, child: socket.socket) -> _InTask:
        sock = child.dup()
        if len(handles) == 1:  # the first restart: dies before it is ready

            async def dying() -> None:
                sock.close()

            handle = _InTask(asyncio.get_running_loop().create_task(dying()), sock)
        else:
            handle = _InTask(asyncio.get_running_loop().create_task(serve(sock, settings, config)), sock)
        handles.append(handle)
        return handle

    pool = ExaminerPool(settings, config, mailbox, transport, count=1, spawn=spawn)
    await pool.start()
    try:
        handles[0].kill()
        deadline = time.monotonic() + 30
        while not (len(handles) == 3 and pool.running) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert pool.running == 1 and len(handles) == 3
        await asyncio.sleep(3)  # time for a second loop's restart, had there been one
        assert len(handles) == 3
        data = signed(hub, CITY, [Recipient.to(DEHUI)])
        outcome = await pool.submit(CITY, data, _mid(data), "normal", 0)
        assert outcome.kind == "answer" and outcome.answer.kind == "receipt"
    finally:
        await pool.close()
        await mailbox.close()
        await transport.close()
