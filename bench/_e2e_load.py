"""The load side of bench/e2e.py: messages signed before any clock starts, a publisher that offers them either as
a backlog or at a fixed rate, and a measuring consumer that only notes when each message id arrives.

Signing is the sender's cost, not the hub's, so every message is built and signed up front, in a process pool (an
ECDSA P-256 signature plus two exclusive C14Ns is ~1 ms of Python per message).
"""

from __future__ import annotations

import asyncio
import copy
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.settings import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "schemas/services/document.official/1/samples/valid/typical-notice.xml"


# ---------------------------------------------------------------------------------------------------- signing


def _sign_chunk(state_dir: str, sender: tuple[str, str], recipient: tuple[str, str], n: int) -> list[tuple[str, bytes]]:
    """In a pool process: ``n`` distinct document.official envelopes from ``sender`` to exactly one recipient
    system, signed with the sender's key. Returns (message id, bytes)."""
    from lxml import etree

    from hub.envelope import Party, Recipient, build, parse, to_bytes
    from hub.pipeline.client import load_signer
    from hub.settings import Settings

    settings = Settings.from_env(state_dir=Path(state_dir))
    signer = load_signer(settings, sender[0])
    body = parse(SAMPLE.read_bytes())[1][0]
    ns = etree.QName(body).namespace
    for el in body.iter(f"{{{ns}}}Urgency"):
        el.text = "平件"  # the normal lane; the header says the same
    out: list[tuple[str, bytes]] = []
    for _ in range(n):
        root = build(
            service="document.official",
            sender=Party(sender[1], sender[0]),
            recipients=[Recipient.to(recipient[1], recipient[0])],
            body=copy.deepcopy(body),
            classification="公开",
            urgency="平件",
        )
        signer.sign(root)
        mid = root[0][0].text
        assert mid is not None
        out.append((mid, to_bytes(root)))
    return out


def presign(state_dir: Path, sender: tuple[str, str], recipient: tuple[str, str], n: int) -> list[tuple[str, bytes]]:
    """``n`` signed messages, spread over one process per core."""
    procs = max(1, min(os.cpu_count() or 1, 4))
    chunk = max(1, -(-n // (procs * 4)))
    sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
    with ProcessPoolExecutor(procs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_sign_chunk, str(state_dir), sender, recipient, k) for k in sizes]
        out: list[tuple[str, bytes]] = []
        for f in futures:
            out += f.result()
    return out


# ---------------------------------------------------------------------------------------------------- sink


@dataclass
class Arrivals:
    """Arrival time (perf_counter) per message id on one queue; wakes waiters when a target count is reached."""

    times: dict[str, float] = field(default_factory=dict)
    wanted: frozenset[str] = frozenset()
    target: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: Arrivals outside the expected set (late copies from an earlier phase) and second copies of an expected id.
    strays: int = 0
    duplicates: int = 0

    def expect(self, ids: Sequence[str]) -> None:
        self.times = {}
        self.wanted = frozenset(ids)
        self.target = len(self.wanted)
        self.done = asyncio.Event()

    def note(self, key: str | None, at: float) -> None:
        if key not in self.wanted:
            self.strays += 1
            return
        if key in self.times:
            self.duplicates += 1
            return
        self.times[key] = at
        if len(self.times) >= self.target:
            self.done.set()


class Sink:
    """The measuring consumer: one connection, no acks (the instrument, not the system under test), message id
    and arrival time only. Watches the recipient's queue, the sender's queue (receipts and errors from the hub)
    and the relay's output queue."""

    def __init__(self) -> None:
        self.delivered = Arrivals()
        self.receipts = Arrivals()
        self.raw = Arrivals()
        self.errors: list[str] = []
        self.unexpected = 0
        #: One delivery and one receipt as they arrived, checked after the run (hub-signed, valid).
        self.sample_delivery: bytes | None = None
        self.sample_receipt: bytes | None = None
        self._conn: Any = None

    async def start(self, url: str, *, recipient_queue: str, sender_queue: str, raw_queue: str) -> None:
        import aio_pika

        self._conn = await aio_pika.connect(url, client_properties={"connection_name": "bench-sink"})
        channel = await (await self._conn.channel(publisher_confirms=False)).get_underlay_channel()
        clock = time.perf_counter

        async def on_delivery(dm: Any) -> None:
            self.delivered.note(dm.header.properties.message_id, clock())
            if self.sample_delivery is None:
                self.sample_delivery = dm.body

        async def on_reply(dm: Any) -> None:
            props = dm.header.properties
            kind = (props.headers or {}).get("x-hub-kind")
            if kind == "receipt":
                self.receipts.note(props.correlation_id, clock())
                if self.sample_receipt is None:
                    self.sample_receipt = dm.body
            elif kind == "error":
                self.errors.append(_error_code(dm.body))
            else:
                self.unexpected += 1

        async def on_raw(dm: Any) -> None:
            self.raw.note(dm.header.properties.message_id, clock())

        await channel.basic_consume(recipient_queue, on_delivery, no_ack=True)
        await channel.basic_consume(sender_queue, on_reply, no_ack=True)
        await channel.basic_consume(raw_queue, on_raw, no_ack=True)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def _error_code(body: bytes) -> str:
    start = body.find(b":Code>")
    if start < 0:
        return "?"
    end = body.find(b"<", start)
    return body[start + 6 : end].decode(errors="replace")


# ---------------------------------------------------------------------------------------------------- publisher


@dataclass(frozen=True, slots=True)
class Target:
    """Where the bench offers messages: the hub's inbound exchange (lane normal) or the relay's input queue."""

    exchange: str
    routing_key: str


async def offer_backlog(
    transport: Any, target: Target, msgs: Sequence[tuple[str, bytes]], *, chunk: int = 256, in_flight: int = 4
) -> float:
    """Publish every message as fast as the broker confirms them (``in_flight`` batches outstanding). Returns the
    perf_counter time of the first publish."""
    from hub.transport import Outgoing

    sem = asyncio.Semaphore(in_flight)
    start = time.perf_counter()

    async def one(part: Sequence[tuple[str, bytes]]) -> None:
        async with sem:
            await transport.publish_many(
                [Outgoing(target.exchange, target.routing_key, body, {}, 0, mid) for mid, body in part]
            )

    await asyncio.gather(*(one(msgs[i : i + chunk]) for i in range(0, len(msgs), chunk)))
    return start


async def offer_paced(
    transport: Any, target: Target, msgs: Sequence[tuple[str, bytes]], rate: float
) -> dict[str, float]:
    """Publish at ``rate`` messages/s on an absolute schedule (message i at start + i/rate, so a late tick catches
    up instead of drifting). Returns the publish time per message id."""
    from hub.transport import Outgoing

    sent: dict[str, float] = {}
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    i = 0
    n = len(msgs)
    try:
        while i < n:
            now = time.perf_counter()
            due = min(n, int((now - start) * rate) + 1)
            if due > i:
                part = msgs[i:due]
                for mid, _ in part:
                    sent[mid] = now
                items = [Outgoing(target.exchange, target.routing_key, body, {}, 0, mid) for mid, body in part]
                tasks.append(asyncio.create_task(transport.publish_many(items)))
                i = due
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
    finally:
        # Interrupted (Ctrl-C) or a failed publish: settle the rest, so no task outlives the connection.
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return sent
