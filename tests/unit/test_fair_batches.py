"""How a consumer of several queues (every system's own inbound lane) forms its batches: in turn, each queue within
its share, so a queue with thousands of messages waiting never stands in front of another queue's one message."""

from __future__ import annotations

from typing import Any

import pytest

from hub.pipeline.lanes import Standing
from hub.transport.amqp import Consumer
from hub.transport.topology import Incoming


def _msg(queue: str, k: int) -> Incoming:
    return Incoming(
        body=b"<x/>",
        routing_key="normal",
        exchange="t.submit",
        headers={},
        message_id=f"{queue}-{k}",
        user_id=None,
        priority=0,
        redelivered=False,
        queue=queue,
        delivery_tag=k,
    )


def _consumer(queues: list[str], share: Any = None, max_batch: int = 64) -> Consumer:
    async def handler(batch: list[Incoming]) -> None:  # never run: only _take is exercised
        raise AssertionError

    return Consumer(object(), queues, handler, max_batch=max_batch, linger=0.002, concurrency=1, share=share)  # type: ignore[arg-type]


def _fill(c: Consumer, queue: str, n: int) -> None:
    c._buffers[queue] += [_msg(queue, k) for k in range(n)]
    c._buffered += n


def _count(batch: list[Incoming]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in batch:
        out[m.queue] = out.get(m.queue, 0) + 1
    return out


def test_one_message_of_a_quiet_queue_is_in_the_next_batch_despite_a_flood():
    c = _consumer(["flood", "quiet"])
    _fill(c, "flood", 1000)
    _fill(c, "quiet", 1)
    batch = c._take()
    assert len(batch) == 64 and _count(batch) == {"flood": 63, "quiet": 1}
    assert c._buffered == 1000 - 63
    # alone again, the flood fills whole batches (nothing is held back when nobody else waits)
    assert _count(c._take()) == {"flood": 64}


def test_queues_share_a_batch_evenly_and_in_order_within_each_queue():
    c = _consumer(["a", "b", "c"], max_batch=9)
    for q in "abc":
        _fill(c, q, 10)
    batch = c._take()
    assert _count(batch) == {"a": 3, "b": 3, "c": 3}
    assert [m.delivery_tag for m in batch if m.queue == "a"] == [0, 1, 2]  # FIFO within a queue
    assert [m.delivery_tag for m in c._take() if m.queue == "a"] == [3, 4, 5]


def test_an_odd_batch_size_favours_a_different_queue_each_time():
    c = _consumer(["a", "b"], max_batch=3)
    _fill(c, "a", 30)
    _fill(c, "b", 30)
    firsts = [max(_count(c._take()).items(), key=lambda kv: kv[1])[0] for _ in range(4)]
    assert set(firsts) == {"a", "b"}


def test_standing_starts_small_grows_with_acceptance_and_a_flooder_is_read_at_the_refusal_rate():
    now = [0.0]
    st = Standing(64, start=8, rate_per_s=20.0, debt=10.0, clock=lambda: now[0])
    assert st.share("t.new") == 8  # first contact: a small batch, whoever it is
    for _ in range(4):  # a bulk sender whose messages are accepted reaches whole batches after a few
        st.count("t.good", accepted=st.share("t.good"), refused=0)
    assert st.share("t.good") == 64
    st.count("t.good", accepted=0, refused=1)  # one bad message costs one
    assert st.share("t.good") == 63
    st.count("t.bad", accepted=0, refused=8)
    st.count("t.bad", accepted=0, refused=50)
    assert st.share("t.bad") == 0  # in debt, down to -10 at most
    now[0] = 0.5  # 10 credits back: the debt paid
    assert st.share("t.bad") == 0
    now[0] = 0.55
    assert st.share("t.bad") == 1
    now[0] = 100.0  # time alone restores the start, no more
    assert st.share("t.bad") == 8
    with pytest.raises(ValueError):
        Standing(64, start=0)


def test_a_publisher_in_debt_is_held_back_while_the_others_go_on():
    now = [0.0]
    st = Standing(64, start=8, rate_per_s=20.0, debt=10.0, clock=lambda: now[0])
    c = _consumer(["bad", "good"], share=lambda q: st.share(f"t.{q}"))
    _fill(c, "bad", 500)
    _fill(c, "good", 100)
    assert _count(c._take()) == {"bad": 8, "good": 8}
    st.count("t.bad", accepted=0, refused=8)
    st.count("t.good", accepted=8, refused=0)
    assert _count(c._take()) == {"good": 16}  # the flood waits; the other goes on, in bigger batches
    now[0] = 0.05  # one credit back
    assert _count(c._take()) == {"bad": 1, "good": 16}


async def test_a_consumer_whose_queues_are_all_held_looks_again_later():
    import asyncio

    tokens = [0]
    seen: list[int] = []

    async def handler(batch: list[Incoming]) -> None:
        seen.append(len(batch))
        for m in batch:
            m.settled = True

    c = Consumer(object(), ["held"], handler, max_batch=8, linger=0.001, concurrency=1, share=lambda q: tokens[0])  # type: ignore[arg-type]
    _fill(c, "held", 20)
    c._due = True
    c._flush()
    assert c._hold is not None and not c._running  # nothing taken; a look later is scheduled
    tokens[0] = 4
    await asyncio.sleep(0.1)
    assert seen and all(n <= 4 for n in seen) and sum(seen) == 20


async def test_while_a_queue_is_held_another_queues_message_starts_its_batch_after_the_linger(
    monkeypatch: pytest.MonkeyPatch,
):
    """The hold is made 5 s long, so that only the linger can have started the other queue's batch within the 2 s
    waited for it (a wall-clock bound of 12 ms failed on a loaded machine)."""
    import asyncio
    import time

    from hub.transport import amqp

    monkeypatch.setattr(amqp, "HOLD_S", 5.0)
    started: list[float] = []

    async def handler(batch: list[Incoming]) -> None:
        started.append(time.perf_counter())
        for m in batch:
            m.settled = True

    c = Consumer(
        object(),
        ["held", "other"],
        handler,
        max_batch=64,
        linger=0.002,
        concurrency=1,
        share=lambda q: 0 if q == "held" else 64,
    )  # type: ignore[arg-type]
    _fill(c, "held", 5)  # fewer than a batch: no flush on arrival, the linger, then the hold
    c._due = True
    c._flush()
    assert c._hold is not None and c._timer is None
    sent = time.perf_counter()
    _fill(c, "other", 1)
    c._timer = asyncio.get_running_loop().call_later(c._linger, c._expire)  # as _accept schedules it
    while not started and time.perf_counter() - sent < 2.0:
        await asyncio.sleep(0.005)
    assert started and started[0] - sent < 2.0  # after the linger, not after the hold
