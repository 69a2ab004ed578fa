"""The gateway's mailbox on the in-memory transport: answers resolve waiting submissions, everything else is an inbox
item handed out with a token, acknowledged, put back at once or after the visibility timeout."""

from __future__ import annotations

import asyncio
from typing import Any

from hub.gateway.mailbox import Mailbox
from hub.transport import MemoryTransport, Names, Outgoing

SYSTEM = "county-220122-oa"


async def _memory(namespace: str, *others: str) -> tuple[Names, MemoryTransport]:
    """The in-memory broker of one test, with ``SYSTEM``'s queues (and ``others``')."""
    names = Names(namespace)
    transport = MemoryTransport(names)
    await transport.declare_topology([SYSTEM, *others])
    return names, transport


def _to(names: Names, body: bytes, headers: dict[str, object], message_id: str) -> Outgoing:
    return Outgoing(names.deliver_exchange, SYSTEM, body, headers, 0, message_id)


async def test_answers_and_the_inbox() -> None:
    names, transport = await _memory("mailbox-test")
    box = Mailbox(transport, prefetch=8, visibility_timeout=0.2)
    try:
        waiting = box.expect(SYSTEM, "m-1")
        await box.open(SYSTEM)
        await transport.publish_many(
            [
                _to(names, b"<receipt/>", {"x-hub-kind": "receipt", "x-hub-ref": "m-1"}, "r-1"),
                _to(names, b"<late-error/>", {"x-hub-kind": "error", "x-hub-ref": "m-0"}, "e-0"),  # nobody waits
                _to(names, b"<delivery/>", {"x-hub-kind": "delivery"}, "d-1"),
            ]
        )
        answer = await asyncio.wait_for(waiting, 2)
        assert (answer.kind, answer.body, answer.message_id) == ("receipt", b"<receipt/>", "r-1")

        first = await box.next_item(SYSTEM, 1)
        second = await box.next_item(SYSTEM, 1)
        assert first is not None and second is not None
        assert {first.body, second.body} == {b"<late-error/>", b"<delivery/>"}
        assert await box.ack(SYSTEM, first.token)
        assert not await box.ack(SYSTEM, first.token)  # settled once
        assert not await box.ack("county-220182-oa", second.token)  # another system's token is unknown

        # not acknowledged: back after the visibility timeout, under a new token
        again = await box.next_item(SYSTEM, 2)
        assert again is not None and again.body == second.body and again.token != second.token
        assert not await box.ack(SYSTEM, second.token)
        # put back at once (a poll whose response could not be written)
        box.release(SYSTEM, again.token)
        third = await box.next_item(SYSTEM, 1)
        assert third is not None and third.body == second.body
        assert await box.ack(SYSTEM, third.token)
        assert await box.next_item(SYSTEM, 0) is None
        assert box.held(SYSTEM) == 0

        # a waiter that gave up is forgotten: its answer becomes an inbox item
        gone = box.expect(SYSTEM, "m-2")
        box.forget(SYSTEM, "m-2", gone)
        await transport.publish_many([_to(names, b"<r2/>", {"x-hub-kind": "receipt", "x-hub-ref": "m-2"}, "r-2")])
        item = await box.next_item(SYSTEM, 1)
        assert item is not None and item.body == b"<r2/>" and not gone.done()
        # closing puts what is held back into the queue
    finally:
        await box.close()
        await transport.close()
    assert transport.broker.queues[names.system_queue(SYSTEM)].ready


async def test_several_items_at_once_the_first_waited_for() -> None:
    names, transport = await _memory("mailbox-test-many")
    box = Mailbox(transport, prefetch=8, visibility_timeout=5)
    try:
        await box.open(SYSTEM)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await box.next_items(SYSTEM, 0.2, 4) == []  # nothing within the wait
        assert loop.time() - started >= 0.19
        await transport.publish_many([_to(names, f"<d{i}/>".encode(), {}, f"d-{i}") for i in range(3)])
        await asyncio.sleep(0.05)
        two = await box.next_items(SYSTEM, 1, 2)
        assert [i.body for i in two] == [b"<d0/>", b"<d1/>"] and len({i.token for i in two}) == 2
        started = loop.time()
        rest = await box.next_items(SYSTEM, 1, 4)  # one is there: no waiting for more
        assert [i.body for i in rest] == [b"<d2/>"] and loop.time() - started < 0.5
        assert box.held(SYSTEM) == 3
        for item in two + rest:
            assert await box.ack(SYSTEM, item.token)
        assert box.held(SYSTEM) == 0
    finally:
        await box.close()
        await transport.close()


async def test_a_system_taken_out_of_the_directory_is_let_go() -> None:
    """``drop``: the gateway stops reading the queue of a system no longer in the directory and puts back what it
    held (handed out or waiting); a later ``open`` (the system added again) reads it again."""
    names, transport = await _memory("mailbox-test-drop")
    box = Mailbox(transport, prefetch=8, visibility_timeout=30)
    queue = transport.broker.queues[names.system_queue(SYSTEM)]
    try:
        await box.open(SYSTEM)
        await transport.publish_many([_to(names, f"<d{i}/>".encode(), {}, f"d-{i}") for i in range(2)])
        [handed] = await box.next_items(SYSTEM, 2, 1)
        await asyncio.sleep(0.05)
        assert box.held(SYSTEM) == 2 and box.reading(SYSTEM)
        await box.drop(SYSTEM)
        await asyncio.sleep(0.05)
        assert box.held(SYSTEM) == 0 and not box.reading(SYSTEM)
        assert sorted(m.message_id or "" for _, _, m in queue.ready) == ["d-0", "d-1"]
        assert not await box.ack(SYSTEM, handed.token)
        await box.drop(SYSTEM)  # not read: nothing to do
        await box.open(SYSTEM)  # added again
        again = await box.next_items(SYSTEM, 2, 2)
        assert sorted(i.message_id for i in again) == ["d-0", "d-1"]
    finally:
        await box.close()
        await transport.close()


class _Clock:
    """The mailbox's clock, moved by the test (the sweep itself runs on the event loop's time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_idle_system_is_let_go_and_read_again_at_its_next_poll(caplog: Any) -> None:
    """A system that neither polls nor submits for ``idle_s`` is let go (what was held goes back to the queue, where
    it can expire); not while a poll is in progress or a submission waits for its answer; its next poll, even one
    that does not wait, gets what the queue holds."""
    import logging

    names, transport = await _memory("mailbox-test-idle", "county-220182-oa")
    clock = _Clock()
    box = Mailbox(transport, prefetch=8, visibility_timeout=0.2, clock=clock, idle_s=60)  # sweeps every 0.05 s
    queue = transport.broker.queues[names.system_queue(SYSTEM)]
    try:
        await transport.publish_many([_to(names, f"<d{i}/>".encode(), {}, f"d-{i}") for i in range(2)])
        first = await box.next_item(SYSTEM, 1)
        assert first is not None and await box.ack(SYSTEM, first.token)

        async def held_one() -> None:
            while box.held(SYSTEM) != 1:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(held_one(), 2)  # the second, delivered to the gateway and held for the next poll

        # a long poll in progress: not idle, however far the clock moves
        polling = asyncio.ensure_future(box.next_items("county-220182-oa", 0.3, 1))  # another system's poll
        mine = asyncio.ensure_future(box.next_items(SYSTEM, 0.3, 2))
        await asyncio.sleep(0.02)
        got = await mine
        assert [i.body for i in got] == [b"<d1/>"]
        box.release(SYSTEM, got[0].token)  # put back at once; the gateway reads the queue, so it comes back here
        await asyncio.wait_for(held_one(), 2)
        await polling
        clock.now += 59
        await asyncio.sleep(0.2)
        assert box.reading(SYSTEM)  # 59 s since its last poll

        # a submission being examined (hub.gateway.app wraps it), then one waiting for its answer: not idle
        with box.in_use(SYSTEM):
            clock.now += 120
            await asyncio.sleep(0.2)
            assert box.reading(SYSTEM)
        waiting = box.expect(SYSTEM, "m-1")
        clock.now += 120
        await asyncio.sleep(0.2)
        assert box.reading(SYSTEM) and box.held(SYSTEM) == 1
        box.forget(SYSTEM, "m-1", waiting)

        with caplog.at_level(logging.INFO, logger="hub.gateway"):
            clock.now += 61
            await asyncio.sleep(0.2)
            assert not box.reading(SYSTEM)
            assert box.held(SYSTEM) == 0
            assert [m.message_id for _, _, m in queue.ready] == ["d-1"]  # back in the broker, where it can expire
        assert any("has not polled or submitted for 60 s" in r.getMessage() for r in caplog.records)

        # the next poll, not waiting at all, reads the queue again and gets what it holds
        again = await box.next_items(SYSTEM, 0, 4)
        assert [i.body for i in again] == [b"<d1/>"] and box.reading(SYSTEM)
        assert await box.ack(SYSTEM, again[0].token)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await box.next_items(SYSTEM, 0, 4) == []  # nothing ready: no grace to wait for
        assert loop.time() - started < 0.5
    finally:
        await box.close()
        await transport.close()


async def test_nothing_handed_out_is_let_go() -> None:
    """An item handed out and not yet acknowledged keeps the system read (its visibility timeout decides)."""
    names, transport = await _memory("mailbox-test-idle-out")
    clock = _Clock()
    box = Mailbox(transport, prefetch=8, visibility_timeout=0.2, clock=clock, idle_s=60)
    try:
        await transport.publish_many([_to(names, b"<d/>", {}, "d-0")])
        item = await box.next_item(SYSTEM, 1)
        assert item is not None
        clock.now += 0.1  # within the visibility timeout, on the mailbox's clock
        await asyncio.sleep(0.2)
        assert box.reading(SYSTEM)
        box.idle_s = 0.05  # idle by its clock, but the item is out
        await asyncio.sleep(0.2)
        assert box.reading(SYSTEM) and box.held(SYSTEM) == 1
        assert await box.ack(SYSTEM, item.token)
        clock.now += 1
        await asyncio.sleep(0.2)
        assert not box.reading(SYSTEM)
    finally:
        await box.close()
        await transport.close()


def test_idle_setting(monkeypatch: Any, tmp_path: Any) -> None:
    from pathlib import Path

    from hub.gateway import GatewaySettings

    monkeypatch.delenv("HUB_GATEWAY_IDLE_S", raising=False)
    assert GatewaySettings.for_state(Path(str(tmp_path))).idle_s == 120.0  # four times the longest long poll
    monkeypatch.setenv("HUB_GATEWAY_IDLE_S", "0")
    assert GatewaySettings.for_state(Path(str(tmp_path))).idle_s == 0.0  # never let go
    monkeypatch.setenv("HUB_GATEWAY_IDLE_S", "600")
    assert GatewaySettings.for_state(Path(str(tmp_path))).idle_s == 600.0
    assert GatewaySettings.for_state(Path(str(tmp_path)), idle_s=5).idle_s == 5  # an override wins


async def test_one_let_go_at_a_time() -> None:
    """A let-go whose consumers take long to stop (a broker in trouble) is not started again at every sweep."""
    _, transport = await _memory("mailbox-test-idle-once")
    clock = _Clock()
    box = Mailbox(transport, prefetch=8, visibility_timeout=0.2, clock=clock, idle_s=60)  # sweeps every 0.05 s
    release = asyncio.Event()
    calls = 0
    real = box._stop_reading

    async def slow(system: str, only_if: Any = None) -> int | None:
        nonlocal calls
        calls += 1
        await release.wait()
        return await real(system, only_if)

    box._stop_reading = slow  # type: ignore[method-assign]
    try:
        assert await box.next_items(SYSTEM, 0, 1) == []
        clock.now += 61
        await asyncio.sleep(0.5)  # ten sweeps
        assert calls == 1 and box.reading(SYSTEM)
        release.set()
        await asyncio.sleep(0.2)
        assert not box.reading(SYSTEM) and calls == 1
    finally:
        release.set()
        await box.close()
        await transport.close()


async def test_a_cancelled_stop_still_puts_back() -> None:
    """Letting a system go (here: taken out of the directory) runs to its end when its caller is cancelled: the queue
    is never left unsubscribed with its deliveries still held in the gateway."""
    names, transport = await _memory("mailbox-test-stop-cancelled")
    box = Mailbox(transport, prefetch=8, visibility_timeout=30)
    queue = transport.broker.queues[names.system_queue(SYSTEM)]
    try:
        await transport.publish_many([_to(names, f"<d{i}/>".encode(), {}, f"d-{i}") for i in range(2)])
        item = await box.next_item(SYSTEM, 1)
        assert item is not None
        while box.held(SYSTEM) != 2:
            await asyncio.sleep(0.01)
        dropping = asyncio.ensure_future(box.drop(SYSTEM))
        await asyncio.sleep(0)  # inside the stop: unsubscribed, not yet put back
        dropping.cancel()
        await asyncio.sleep(0.2)
        assert not box.reading(SYSTEM) and box.held(SYSTEM) == 0
        assert sorted(m.message_id for _, _, m in queue.ready) == ["d-0", "d-1"]
    finally:
        await box.close()
        await transport.close()
